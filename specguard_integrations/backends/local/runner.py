"""How a local model's calls run. The model hands every single-sequence forward and every
candidate-sampling job to its `runner`; with none (the default) each runs at once on the model's
own path. A runtime (`specguard_integrations.runtime`) may plug in a runner that runs concurrent
generations' jobs together; the model never knows which runner it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ...engine.candidate import Candidate
    from .state import DecodeJob, FeedOut, ForwardJob

T = TypeVar("T")


class Runner(Protocol):
    """What runs a local model's calls."""

    def forward(self, job: ForwardJob) -> FeedOut:
        """Run one sequence's forward; its output."""
        ...

    def decode(self, job: DecodeJob) -> list[Candidate]:
        """Sample one request's k candidate steps; the candidates."""
        ...

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` as tensor work on the model's device, in inference mode."""
        ...
