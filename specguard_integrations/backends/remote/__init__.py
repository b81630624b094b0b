"""A model behind an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama): the HTTP
client (`client.py`; its errors are in `specguard_integrations.errors`), engine profiles
(`profiles.py`) and the endpoint backends (`endpoint.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy

if TYPE_CHECKING:
    from .endpoint import EndpointDraft, EndpointTarget

__all__ = ["EndpointDraft", "EndpointTarget"]

__getattr__ = lazy(
    __name__,
    {
        "EndpointDraft": ".endpoint",
        "EndpointTarget": ".endpoint",
    },
)
