"""The public API's arguments checked once, each error naming the argument that is wrong."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import SpecGuardConfig
from ..constraint import Constraint
from ..errors import InvalidInputError, InvalidTypeError
from ..segmentation import StepSegmenter, make_segmenter
from .backends import check_text


def normalise_stop(stop: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Stop sequences as a tuple: one string is one stop (not one per character)."""
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, str) else stop
    if not isinstance(items, (list, tuple)):
        raise InvalidTypeError(
            f"stop must be a string or a list of strings, got {type(stop).__name__}"
        )
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise InvalidTypeError(f"stop[{i}] must be a string, got {type(s).__name__}: {s!r}")
        if not s:
            raise InvalidInputError(f"stop[{i}] is empty: stop sequences must be non-empty strings")
        check_text(s, f"stop[{i}]")
    return tuple(items)


def resolve_constraint(constraint: Constraint | None, cfg: SpecGuardConfig) -> Constraint | None:
    """The call's constraint, else the config's (`SpecGuardConfig.constraint`), else None;
    `ValueError` naming ``constraint`` for one that does not compile or that no text satisfies
    (`Constraint.compile_error`): refused before anything is generated, on every surface (a
    forced tool call's and a structured output's grammar come this way too)."""
    if constraint is not None and not isinstance(constraint, Constraint):
        raise InvalidTypeError(
            f"constraint must be a Constraint, got {type(constraint).__name__}"
            " (Constraint.json_schema(...), .regex(...) or .lark(...))"
        )
    if constraint is None and cfg.constraint is not None:
        return Constraint.from_spec(cfg.constraint)
    why = constraint.compile_error() if constraint is not None else None
    if constraint is not None and why is not None:
        raise InvalidInputError(
            f"constraint: the {constraint.kind} constraint does not compile: {why}"
        )
    return constraint


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise InvalidInputError(f"timeout must be > 0 seconds, got {timeout}")


def batch_arguments(
    prompts: object, configs: object, max_concurrency: object, stop: Any, timeout: Any
) -> tuple[list[str], list[SpecGuardConfig | None]]:
    """`generate_batch`'s prompts and one config per prompt; `TypeError`/`ValueError` naming
    the argument that is wrong, before anything runs."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise InvalidTypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    texts = [check_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise InvalidTypeError(
            f"max_concurrency must be an int, got {type(max_concurrency).__name__}"
        )
    if max_concurrency < 1:
        raise InvalidInputError(f"max_concurrency must be >= 1, got {max_concurrency}")
    normalise_stop(stop)
    check_timeout(timeout)
    if configs is None or isinstance(configs, SpecGuardConfig):
        return texts, [configs] * len(texts)
    if not isinstance(configs, (list, tuple)):
        raise InvalidTypeError(
            "configs must be a SpecGuardConfig or a list of them (None for the engine's),"
            f" got {type(configs).__name__}"
        )
    if len(configs) != len(texts):
        raise InvalidInputError(f"{len(configs)} configs for {len(texts)} prompts")
    for i, c in enumerate(configs):
        if c is not None and not isinstance(c, SpecGuardConfig):
            raise InvalidTypeError(
                f"configs[{i}] must be a SpecGuardConfig or None, got {type(c).__name__}"
                " (for a few changes: engine.config.merged(k=..., tau=...))"
            )
    return texts, list(configs)


def segmenter_of(config: SpecGuardConfig) -> StepSegmenter:
    """The segmenter a config's fields name."""
    return make_segmenter(
        config.segmenter,
        config.final_answer_markers,
        config.tool_call_format,
        config.parallel_tool_calls,
    )
