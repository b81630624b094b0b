"""The step scheduler: concurrent generations share their models' forwards.

Each generation runs its own step loop (in its own thread: a server worker, a `generate_batch`
thread, a LangChain batch thread). Every model call it makes on a local model goes to that
model's `Batcher` and waits there. A batcher runs what is waiting as one grouped call
(`grouped.py`) when every generation that could add to it is waiting too, or when the oldest
waiter has waited `MAX_WAIT` seconds:

- sampling jobs (step 1 of several requests, a target's greedy fallback steps) run as one
  decoding loop, each job with its own sampler, boundary and budget, leaving as it ends;
- single-sequence forwards (step 3's scoring pass, a target catching up, token-level
  speculation's checks) run as one forward over their own caches.

So generations at the same phase move together, and a job alone runs at once on the model's
own path. Each job's results are its own: sampling stays per-request seeded, signals stay per
row, and a job that fails fails alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .lm import LocalCausalLM

T = TypeVar("T")

# set while a batcher runs a job alone: the job takes the model's own (plain) path, as fast as
# before grouping existed; grouped calls are for two jobs or more, and for k > 1 candidates
PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("specguard_plain", default=False)

MAX_WAIT = 0.005  # seconds the first waiter gives others to arrive when some are still busy
# one request's k candidates share their prefix in place (grouped decode) from this prefix
# length on; below it copying the short prefix k times is cheaper than the grouped attention's
# own overhead (benchmarks/engine_phases.py: docs/scale-out.md)
SHARE_FROM = 512


class Activity:
    """How many generations are running and how many of them are waiting in a batcher; wakes
    a batcher's waiter when its batch becomes ready without a new arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.waiting = 0
        self.batchers: list[Batcher] = []

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        """Count the calling generation as one that may add to a batch."""
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                self.kick()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The generation hands a step to its consumer: it adds nothing until resumed."""
        with self.lock:
            self.active -= 1
            self.kick()
        try:
            yield
        finally:
            with self.lock:
                self.active += 1

    def kick(self) -> None:
        """Wake the oldest waiter of every batcher that is ready (hold `lock`)."""
        for b in self.batchers:
            if b.ready():
                b.pending[0].wake.set()


ACTIVITY = Activity()


class Device:
    """Where model calls and signal computations run: one at a time, in inference mode.
    Concurrent tensor work would split the same cores for no gain; grouping is what lets
    concurrent generations share a call."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` holding the device; its result or error."""
        import torch

        with self._lock, torch.inference_mode():
            return fn(*args)


DEVICE = Device()


@dataclass
class _Pending:
    kind: str  # "decode" | "forward"
    job: Any
    since: float = field(default_factory=time.perf_counter)
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


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
        with activity.lock:
            activity.batchers.append(self)

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

    def ready(self) -> bool:
        """Something waits, nothing runs, and every generation waits or the oldest has waited
        `MAX_WAIT` (hold the activity lock)."""
        if self.running or not self.pending:
            return False
        act = self.activity
        return act.waiting >= act.active or time.perf_counter() - self.pending[0].since >= MAX_WAIT

    def _submit(self, item: _Pending) -> None:
        act = self.activity
        with act.lock:
            self.pending.append(item)
            act.waiting += 1
            act.kick()  # this arrival may complete another batcher's batch too
        try:
            while True:
                with act.lock:
                    if item.done:
                        return
                    lead = self.ready()
                    if lead:
                        batch, self.pending = self.pending, []
                        self.running = True
                    else:
                        item.wake.clear()
                        timeout = self._deadline(item)
                if lead:
                    self._lead(batch)
                else:  # woken when done, when ready, or at the oldest waiter's deadline
                    item.wake.wait(timeout)
        finally:
            with act.lock:
                act.waiting -= 1
                if item in self.pending:  # interrupted while waiting: nobody runs it now
                    self.pending.remove(item)
                    act.kick()

    def _deadline(self, item: _Pending) -> float | None:
        """How long `item`'s thread sleeps: the oldest waiter until MAX_WAIT has passed (then
        it leads); everyone else, and everyone while a batch runs, until woken."""
        if self.running or not self.pending or self.pending[0] is not item:
            return None
        return max(MAX_WAIT - (time.perf_counter() - item.since), 1e-4)

    def _lead(self, batch: list[_Pending]) -> None:
        """Run `batch`, then mark it done and wake its waiters and whoever is ready next."""
        try:
            self._run(batch)
        finally:
            with self.activity.lock:
                self.running = False
                for p in batch:
                    p.done = True
                    p.wake.set()
                self.activity.kick()

    def _run(self, batch: list[_Pending]) -> None:

        from .grouped import decode_jobs, forward_jobs

        self.batches += 1
        self.jobs += len(batch)
        self.largest = max(self.largest, len(batch))
        forwards = _by_size([p.job for p in batch if p.kind == "forward"])
        decodes = [p.job for p in batch if p.kind == "decode"]
        runs = [(forward_jobs, jobs) for jobs in forwards] + [(decode_jobs, decodes)]
        for fn, jobs in runs:
            if not jobs:
                continue
            alone = len(jobs) == 1 and (fn is forward_jobs or _copy_is_cheaper(jobs[0]))
            try:
                if alone:
                    DEVICE.call(_plain, self.lm, jobs[0])
                else:
                    DEVICE.call(_locked, fn, self.lm, jobs)
            except BaseException as err:  # the model call itself failed: every job in it
                for job in jobs:
                    if job.out is None and job.error is None:
                        job.error = err
                if not isinstance(err, Exception):
                    raise


def _locked(fn: Callable[..., None], lm: LocalCausalLM, jobs: list[Any]) -> None:
    with lm.lock:
        fn(lm, jobs)


def _plain(lm: LocalCausalLM, job: Any) -> None:
    """One job on the model's own path (no grouping), as `forward` / `sample_steps` alone."""
    import torch

    from .proposer import sample_steps

    token = PLAIN.set(True)
    try:
        if hasattr(job, "tokens"):
            ids = torch.tensor([job.tokens], device=lm.device)
            job.out = lm.forward(ids, job.cache, job.layers, job.hidden)
        else:
            job.out = sample_steps(
                lm, job.state, job.settings, job.generator, keep_cache=job.keep_cache
            )
    finally:
        PLAIN.reset(token)


def _copy_is_cheaper(job: Any) -> bool:
    """A lone decode job whose k candidates are better served by copying the prefix."""
    return bool(job.settings.k == 1 or len(job.state.ids) < SHARE_FROM)


def _by_size(jobs: list[Any]) -> list[list[Any]]:
    """Forward jobs in groups of similar length (a group is padded to its longest: at most
    twice the shortest, or 8 tokens more)."""
    out: list[list[Any]] = []
    for job in sorted(jobs, key=lambda j: len(j.tokens)):
        n = len(job.tokens)
        if out and n <= max(2 * len(out[-1][0].tokens), len(out[-1][0].tokens) + 8):
            out[-1].append(job)
        else:
            out.append([job])
    return out
