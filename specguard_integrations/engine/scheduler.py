"""The step scheduler: concurrent generations share their models' forwards.

Each generation runs its own step loop (in its own thread: a server worker, a `generate_batch`
thread, a LangChain batch thread). Every model call it makes on a local model goes to that
model's `Batcher` and waits there. A batcher runs what is waiting as one grouped call
(`grouped.py`) when every generation that could add to it is waiting too, or when the oldest
waiter has waited `max_wait` seconds:

- sampling jobs (step 1 of several requests, a target's greedy fallback steps) run as one
  decoding loop, each job with its own sampler, boundary and budget, leaving as it ends;
- single-sequence forwards (step 3's scoring pass, a target catching up, token-level
  speculation's checks) run as one forward over their own caches.

So generations at the same phase move together, and one generation alone runs at once. Each
job's results are its own: sampling stays per-request seeded, signals stay per row, and a job
that fails fails alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lm import LocalCausalLM

MAX_WAIT = 0.002  # seconds the first waiter gives others to arrive when some are still busy


class Activity:
    """How many generations are running and how many of them are waiting in a batcher."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        """Count the calling generation as one that may add to a batch."""
        with self.cond:
            self.active += 1
        try:
            yield
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The generation hands a step to its consumer: it adds nothing until resumed."""
        with self.cond:
            self.active -= 1
            self.cond.notify_all()
        try:
            yield
        finally:
            with self.cond:
                self.active += 1


ACTIVITY = Activity()


@dataclass
class _Pending:
    kind: str  # "decode" | "forward"
    job: Any
    since: float = field(default_factory=time.perf_counter)
    done: bool = False


class Batcher:
    """Grouped calls on one model for every generation using it (see the module doc)."""

    def __init__(self, lm: LocalCausalLM, activity: Activity = ACTIVITY) -> None:
        self.lm = lm
        self.activity = activity
        self.pending: list[_Pending] = []
        self.running = False
        self.batches = 0  # grouped calls run, jobs in them, and the most in one (for benchmarks)
        self.jobs = 0
        self.largest = 0

    def decode(self, job: Any) -> Any:
        """Run a `grouped.DecodeJob` with whatever else is waiting; its candidates."""
        self._submit(_Pending("decode", job))
        if job.error is not None:
            raise job.error
        return job.out

    def forward(self, job: Any) -> Any:
        """Run a `grouped.ForwardJob` with whatever else is waiting; its `FeedOut`."""
        self._submit(_Pending("forward", job))
        if job.error is not None:
            raise job.error
        return job.out

    def _submit(self, item: _Pending) -> None:
        act = self.activity
        with act.cond:
            self.pending.append(item)
            act.waiting += 1
            act.cond.notify_all()
            try:
                while not item.done:
                    if self._ready():
                        self._lead()
                        continue
                    act.cond.wait(self._timeout())
            finally:
                act.waiting -= 1
                if item in self.pending:  # interrupted while waiting: nobody runs it now
                    self.pending.remove(item)

    def _ready(self) -> bool:
        if self.running or not self.pending:
            return False
        act = self.activity
        oldest = min(p.since for p in self.pending)
        return act.waiting >= act.active or time.perf_counter() - oldest >= MAX_WAIT

    def _timeout(self) -> float:
        if self.running or not self.pending:
            return 0.05
        oldest = min(p.since for p in self.pending)
        return max(1e-4, MAX_WAIT - (time.perf_counter() - oldest))

    def _lead(self) -> None:
        """Run everything pending (called with the condition held; released while running)."""
        act = self.activity
        batch, self.pending = self.pending, []
        self.running = True
        act.cond.release()
        try:
            self._run(batch)
        finally:
            act.cond.acquire()
            self.running = False
            for p in batch:
                p.done = True
            act.cond.notify_all()

    def _run(self, batch: list[_Pending]) -> None:
        import torch

        from .grouped import decode_jobs, forward_jobs

        self.batches += 1
        self.jobs += len(batch)
        self.largest = max(self.largest, len(batch))
        for kind, fn in (("forward", forward_jobs), ("decode", decode_jobs)):
            jobs = [p.job for p in batch if p.kind == kind]
            if not jobs:
                continue
            try:
                with self.lm.lock, torch.inference_mode():
                    fn(self.lm, jobs)
            except BaseException as err:  # the model call itself failed: every job in it
                for job in jobs:
                    if job.out is None and job.error is None:
                        job.error = err
                if not isinstance(err, Exception):
                    raise
