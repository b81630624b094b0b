"""Lazy attributes for package ``__init__`` modules: names map to the module that defines them,
imported on first use, so importing a package stays cheap (no torch, no framework)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .errors import MissingDependencyError


def lazy(package: str, names: dict[str, str], extra: str | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package`: ``names`` maps an attribute to its module
    (relative to the package, or absolute). With `extra`, a missing third-party dependency is an
    `ImportError` naming the extra to install."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(names[name], package)
        except ModuleNotFoundError as err:
            if extra is None or (err.name or "").startswith("specguard_integrations"):
                raise
            raise MissingDependencyError(
                f"{name} needs the [{extra}] extra ({err.name} is not installed):"
                f" pip install 'specguard-integrations[{extra}]'"
            ) from err
        return getattr(module, name)

    return __getattr__
