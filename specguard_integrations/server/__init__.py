"""`specguard serve`: an OpenAI-compatible HTTP server.

- `schemas`: the typed requests; `openai_format`: bodies, chunks, usage and errors as pure
  functions; `served`: what runs a request (the SpecGuard loop, or one model alone);
  `app`: the routes; `run`: flags, uvicorn and signals.

Importing this package imports neither starlette nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Limits, create_app
    from .run import serve
    from .served import PlainServed, ServedModel, SpecGuardServed

__all__ = ["Limits", "PlainServed", "ServedModel", "SpecGuardServed", "create_app", "serve"]

_LAZY = {
    "Limits": ".app",
    "create_app": ".app",
    "serve": ".run",
    "PlainServed": ".served",
    "ServedModel": ".served",
    "SpecGuardServed": ".served",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
