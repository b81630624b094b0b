"""The runtime: concurrent generations share their local models' forwards. A `StepScheduler`
plugs a batcher into each local model as its runner; the models and the method never import
it (docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .scheduler import SCHEDULER, Batcher, StepScheduler

__all__ = ["SCHEDULER", "Batcher", "StepScheduler"]

__getattr__ = lazy(__name__, {name: ".scheduler" for name in __all__})
