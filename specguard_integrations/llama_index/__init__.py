"""LlamaIndex integration: `SpecGuardLLM` and its per-step instrumentation event.

Named so after the framework it serves; read beside LangChain code, the class is
``specguard_integrations.llama_index.SpecGuardLLM`` (a LlamaIndex ``FunctionCallingLLM``), while
``specguard_integrations.langchain.SpecGuardLLM`` is LangChain's text-completion LLM. Import the
module and write ``llama_index.SpecGuardLLM`` in mixed code, or use the alias
``LlamaIndexSpecGuardLLM``.

Importing this package imports nothing heavy; its classes need llama-index-core (the
``[llama-index]`` extra), and a missing one is an error that names the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .llms import SpecGuardLLM, SpecGuardStepEvent
    from .llms import SpecGuardLLM as LlamaIndexSpecGuardLLM
    from .react import REACT_HEADER, react_formatter

__all__ = [
    "REACT_HEADER",
    "LlamaIndexSpecGuardLLM",
    "SpecGuardLLM",
    "SpecGuardStepEvent",
    "react_formatter",
]

_LAZY = {
    "REACT_HEADER": ".react",
    "react_formatter": ".react",
    "SpecGuardLLM": ".llms",
    "SpecGuardStepEvent": ".llms",
    "LlamaIndexSpecGuardLLM": ".llms",
}
__getattr__ = lazy(__name__, _LAZY, extra="llama-index")
