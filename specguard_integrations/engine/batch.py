"""Many prompts at once (`SpecGuardEngine.generate_batch`): generations on threads, whose
model calls the engine's runtime may group."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from .arguments import batch_arguments

if TYPE_CHECKING:
    from ..config import SpecGuardConfig
    from ..types import GenerationResult


def generate_batch(
    generate: Callable[..., GenerationResult],
    prompts: Sequence[str],
    *,
    configs: SpecGuardConfig | Sequence[SpecGuardConfig | None] | None = None,
    stop: str | list[str] | tuple[str, ...] | None = None,
    max_concurrency: int = 32,
    return_exceptions: bool = False,
    timeout: float | None = None,
) -> list[GenerationResult | Exception]:
    """`SpecGuardEngine.generate_batch` with the engine's `generate` (its docstring says what
    each argument means)."""
    from concurrent.futures import ThreadPoolExecutor

    texts, per = batch_arguments(prompts, configs, max_concurrency, stop, timeout)
    empty = {i for i, t in enumerate(texts) if not t.strip()}

    def one(i: int) -> GenerationResult | Exception:
        if i in empty:
            return InvalidInputError(f"prompts[{i}] is empty")
        try:
            return generate(texts[i], config=per[i], stop=stop, timeout=timeout)
        except Exception as err:  # reported in place, or raised below
            return err

    workers = min(max_concurrency, max(1, len(texts)))
    with ThreadPoolExecutor(workers, thread_name_prefix="specguard-batch") as pool:
        results = list(pool.map(one, range(len(texts))))
    if not return_exceptions:
        for r in results:
            if isinstance(r, Exception):
                raise r
    return results
