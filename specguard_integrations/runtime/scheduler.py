"""The step scheduler: concurrent generations share their models' forwards.

Each generation runs its own step loop (in its own thread: a server worker, a `generate_batch`
thread, a LangChain batch thread). `StepScheduler.attach` plugs a `Batcher` into a local model
as its runner (`backends/local/runner.py`), so every call a generation makes on that model goes
to the batcher and waits there. A batcher runs what is waiting as one grouped call
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
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..backends.local.model import LocalCausalLM
from ..backends.local.sampling import sample_steps_alone
from ..backends.local.state import DecodeJob, ForwardJob

if TYPE_CHECKING:
    from ..backends.local.state import FeedOut
    from ..engine.candidate import Candidate

T = TypeVar("T")

MAX_WAIT = 0.005  # seconds the first waiter gives others to arrive when some are still busy
# one request's k candidates share their prefix in place (grouped decode) from this prefix
# length on; below it copying the short prefix k times is cheaper than the grouped attention's
# own overhead (benchmarks/engine_phases.py: docs/scale-out.md)
SHARE_FROM = 512
# single-sequence forwards of at most this many tokens are grouped (decode steps, scoring a
# step, speculation checks); longer ones (prefills) run alone
GROUPED_TOKENS = 96


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


class StepScheduler:
    """The runtime of a set of local models: one `Activity`, one `Device`, a `Batcher` per
    model. It is the engine's `Runtime` (`generation`, `paused`)."""

    def __init__(self) -> None:
        self.activity = Activity()
        self.device = Device()
        # False: every call runs plain (`specguard serve --no-grouping`, to measure grouping)
        self.allow_grouping = True

    def generation(self) -> contextlib.AbstractContextManager[None]:
        return self.activity.generation()

    def paused(self) -> contextlib.AbstractContextManager[None]:
        return self.activity.paused()

    def attach(self, lm: LocalCausalLM) -> None:
        """Plug a batcher into `lm` as its runner (once)."""
        runner = lm.runner
        if not (isinstance(runner, Batcher) and runner.scheduler is self):
            lm.runner = Batcher(lm, self)


# the process's scheduler: every pair built by `SpecGuard` (registry) shares it
SCHEDULER = StepScheduler()


@dataclass
class _Pending:
    kind: str  # "decode" | "forward"
    job: ForwardJob | DecodeJob
    since: float = field(default_factory=time.perf_counter)
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """Grouped calls on one model for every generation using it (see the module doc): the
    model's runner once attached."""

    def __init__(self, lm: LocalCausalLM, scheduler: StepScheduler) -> None:
        self.lm = lm
        self.scheduler = scheduler
        self.activity = activity = scheduler.activity
        self.pending: list[_Pending] = []
        self.running = False
        self.batches = 0  # grouped calls run, jobs in them, and the most in one (for benchmarks)
        self.jobs = 0
        self.largest = 0
        self._allowed = True
        with activity.lock:
            activity.batchers.append(self)

    @property
    def grouping(self) -> bool:
        """True when this model's calls run grouped: the scheduler and this batcher allow it
        and the model supports it (`grouped.supports_grouping`, checked once); set it False to
        run this model's calls plain."""
        return self.scheduler.allow_grouping and self._allowed and self._supports_grouping

    @grouping.setter
    def grouping(self, allowed: bool) -> None:
        self._allowed = allowed

    @functools.cached_property
    def _supports_grouping(self) -> bool:
        from .grouped import supports_grouping

        return self.call(supports_grouping, self.lm)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.scheduler.device.call(fn, *args)

    def forward(self, job: ForwardJob) -> FeedOut:
        """Run a forward with whatever else is waiting; its `FeedOut`. A long one (a prefill)
        or one over a cache that cannot be grouped runs alone."""
        if len(job.tokens) > GROUPED_TOKENS or not self._groupable(job.cache):
            return self.lm.forward_alone(job.tokens, job.cache, job.layers, job.hidden, job.keep)
        self._submit(_Pending("forward", job))
        if job.error is not None:
            raise job.error
        assert job.out is not None
        return job.out

    def decode(self, job: DecodeJob) -> list[Candidate]:
        """Sample a request's candidates with whatever else is waiting (its rows share the
        prefix in place, with other requests')."""
        if not self._groupable(job.state.cache):
            return sample_steps_alone(
                self.lm, job.state, job.settings, job.generator, keep_cache=job.keep_cache
            )
        self._submit(_Pending("decode", job))
        if job.error is not None:
            raise job.error
        assert job.out is not None
        return list(job.out)

    def _groupable(self, cache: Any) -> bool:
        """A cache of batch one whose every layer keeps all its positions, on a model that
        groups."""
        layers = getattr(cache, "layers", None)
        if not layers or not self.grouping:
            return False
        keys = getattr(layers[0], "keys", None)
        return all(not getattr(la, "is_sliding", False) for la in layers) and (
            keys is None or keys.shape[0] == 1
        )

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
        forwards = _by_size([p.job for p in batch if isinstance(p.job, ForwardJob)])
        decodes: list[Any] = [p.job for p in batch if isinstance(p.job, DecodeJob)]
        runs: list[tuple[Callable[..., None], list[Any]]] = [
            (forward_jobs, jobs) for jobs in forwards
        ] + [(decode_jobs, decodes)]
        for fn, jobs in runs:
            if not jobs:
                continue
            alone = len(jobs) == 1 and (fn is forward_jobs or _copy_is_cheaper(jobs[0]))
            try:
                if alone:
                    self.call(_plain, self.lm, jobs[0])
                else:
                    self.call(_locked, fn, self.lm, jobs)
            except BaseException as err:  # the model call itself failed: every job in it
                for job in jobs:
                    if job.out is None and job.error is None:
                        job.error = err
                if not isinstance(err, Exception):
                    raise


def _locked(fn: Callable[..., None], lm: LocalCausalLM, jobs: list[Any]) -> None:
    with lm.lock:
        fn(lm, jobs)


def _plain(lm: LocalCausalLM, job: ForwardJob | DecodeJob) -> None:
    """One job on the model's own path (no grouping), as it would run with no runtime."""
    if isinstance(job, ForwardJob):
        job.out = lm.forward_alone(job.tokens, job.cache, job.layers, job.hidden, job.keep)
    else:
        job.out = sample_steps_alone(
            lm, job.state, job.settings, job.generator, keep_cache=job.keep_cache
        )


def _copy_is_cheaper(job: DecodeJob) -> bool:
    """A lone decode job whose k candidates are better served by copying the prefix."""
    return bool(job.settings.k == 1 or len(job.state.ids) < SHARE_FROM)


def _by_size(jobs: list[ForwardJob]) -> list[list[ForwardJob]]:
    """Forward jobs in groups of similar length (a group is padded to its longest: at most
    twice the shortest, or 8 tokens more)."""
    out: list[list[ForwardJob]] = []
    for job in sorted(jobs, key=lambda j: len(j.tokens)):
        n = len(job.tokens)
        if out and n <= max(2 * len(out[-1][0].tokens), len(out[-1][0].tokens) + 8):
            out[-1].append(job)
        else:
            out.append([job])
    return out
