"""What SpecGuard is compared with: the benchmark's methods (`methods.py`) and plain
token-by-token decoding of one local model (`plain.py`, also what `specguard serve --mode plain`
runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .methods import METHOD_NAMES, Method, ProcessRewardModel, build_methods

__all__ = ["METHOD_NAMES", "Method", "ProcessRewardModel", "build_methods"]

__getattr__ = lazy(__name__, {name: ".methods" for name in __all__})
