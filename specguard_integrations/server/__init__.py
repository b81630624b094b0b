"""`specguard serve`: an OpenAI-compatible HTTP server.

- `schemas`: the typed requests; `openai_format`: bodies, chunks, usage and errors as pure
  functions; `served`: what runs a request (the SpecGuard loop, or one model alone);
  `app`: the routes; `run`: flags, uvicorn and signals.

Importing this package imports neither starlette nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .app import create_app
    from .run import serve
    from .served import PlainServed, ServedModel, SpecGuardServed
    from .state import Limits

__all__ = ["Limits", "PlainServed", "ServedModel", "SpecGuardServed", "create_app", "serve"]

_LAZY = {
    "Limits": ".state",
    "create_app": ".app",
    "serve": ".run",
    "PlainServed": ".served",
    "ServedModel": ".served",
    "SpecGuardServed": ".served",
}

__getattr__ = lazy(__name__, _LAZY)
