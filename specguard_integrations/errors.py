"""Every error the package raises on purpose, under one root: ``except SpecGuardError`` catches
them all. Where Python has a convention for the kind (``ValueError`` for a bad argument,
``TimeoutError``, ``ImportError`` for a missing extra), the class subclasses that too, so code
written against the convention keeps working.

    SpecGuardError
    ├── InvalidInputError (ValueError)       a bad argument, config value, prompt, message, tool,
    │   │                                    constraint, file or HTTP body
    │   └── ConfigError                      settings that fail validation (`.errors()` lists them)
    ├── InvalidTypeError (TypeError)         an argument of the wrong type
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    ├── MissingAssetError (FileNotFoundError) a bundled model or a named file is missing
    ├── StateError (RuntimeError)            a session's methods called out of order
    ├── ModelError (RuntimeError)            a model cannot give what was asked (attention)
    ├── GenerationTimeout (TimeoutError)     a generation ran past its `timeout`
    ├── Cancelled (RuntimeError)             the call was cancelled (its caller left)
    └── EndpointError (RuntimeError)         a remote server's failure or malformed reply
        ├── EndpointUnreachable              no answer after the bounded retries
        │   └── EndpointTimeout (TimeoutError)
        ├── DeadlinePassed (GenerationTimeout) the generation's own deadline, mid-request
        ├── EndpointRejected                 a 4xx (`status`)
        ├── EndpointAborted                  the engine ended a step with finish_reason "abort"
        └── EndpointReplyError               a reply that breaks the contract

This module imports nothing: every layer may raise these.
"""

from __future__ import annotations

from typing import Any


class SpecGuardError(Exception):
    """The root of every error the package raises on purpose."""


class InvalidInputError(SpecGuardError, ValueError):
    """A value the package cannot take: an argument, a config value, a prompt, a message, a
    tool, a constraint, a file's content or an HTTP body. The message names the field."""


class ConfigError(InvalidInputError):
    """Settings that fail validation; `errors()` lists each problem as pydantic reports it."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self._errors = errors or []

    def errors(self) -> list[dict[str, Any]]:
        return list(self._errors)

    @classmethod
    def from_validation(cls, err: Exception, title: str) -> ConfigError:
        """A pydantic `ValidationError` as a `ConfigError` with the same message and errors."""
        raw = err.errors() if callable(getattr(err, "errors", None)) else []  # type: ignore[attr-defined]
        text = str(err)
        # pydantic names the model on its first line; ours names what was being built
        first, _, rest = text.partition("\n")
        message = f"{title}: {first.split(' for ', 1)[0]}\n{rest}" if rest else f"{title}: {text}"
        return cls(message, [dict(e) for e in raw])


class InvalidTypeError(SpecGuardError, TypeError):
    """An argument of the wrong type; the message names it and the type it needs."""


class MissingDependencyError(SpecGuardError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class MissingAssetError(SpecGuardError, FileNotFoundError):
    """A bundled model or a file the caller named does not exist."""


class StateError(SpecGuardError, RuntimeError):
    """A session's methods were called out of order (``score`` twice, ``accept`` with nothing
    scored)."""


class ModelError(SpecGuardError, RuntimeError):
    """A model cannot give what was asked of it (attention probabilities)."""


class GenerationTimeout(SpecGuardError, TimeoutError):
    """A generation ran past its `timeout`; the steps already yielded stand."""


class Cancelled(SpecGuardError, RuntimeError):
    """The call was cancelled while it ran or waited (its caller left, or the server is shutting
    down)."""


class EndpointError(SpecGuardError, RuntimeError):
    """A remote server answered an error, or data that is not an OpenAI-compatible completion."""


class EndpointUnreachable(EndpointError):
    """No answer from the server after the bounded retries: refused or dropped connections,
    timeouts, or 429 / 5xx on every attempt."""


class EndpointTimeout(EndpointUnreachable, TimeoutError):
    """The request's deadline passed (connect, headers and the whole body) on every attempt."""


class DeadlinePassed(EndpointError, GenerationTimeout):
    """The generation's own deadline (its `timeout`) passed while it waited on the server: not
    retried, by the client or by a framework call."""


class EndpointRejected(EndpointError):
    """The server refused the request with a 4xx status (other than 429): the request's fault,
    not retried. `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EndpointAborted(EndpointError):
    """The engine ended a step with ``finish_reason: "abort"`` (vLLM and SGLang, when a
    request is cancelled, preempted or the engine fails): the step is not an answer, and half
    of it is never passed on as one. Not retried."""


class EndpointReplyError(EndpointError):
    """The reply breaks the contract: not JSON, a field missing or of the wrong kind, a number
    that is not finite, a body over the size cap, or a step longer than the budget asked."""


__all__ = [
    "Cancelled",
    "ConfigError",
    "DeadlinePassed",
    "EndpointAborted",
    "EndpointError",
    "EndpointRejected",
    "EndpointReplyError",
    "EndpointTimeout",
    "EndpointUnreachable",
    "GenerationTimeout",
    "InvalidInputError",
    "InvalidTypeError",
    "MissingAssetError",
    "MissingDependencyError",
    "ModelError",
    "SpecGuardError",
    "StateError",
]
