"""What every framework adapter shares: the lazily built, process-shared engine, and the usual
LLM parameters mapped onto the engine config. Adapters stay translation only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import SpecGuardConfig
    from .engine.loop import SpecGuard


class EngineOwner:
    """Mixin for pydantic adapter classes with `draft`, `target`, `config`, `device`, `dtype`
    fields and an `_engine` private attribute. `engine=` adopts an existing engine (and its
    config, unless one is given); otherwise the models load on first use, shared process-wide."""

    draft: str | None
    target: str | None
    config: SpecGuardConfig
    device: str
    dtype: str
    _engine: SpecGuard | None

    def __init__(self, *, engine: SpecGuard | None = None, **kwargs: Any) -> None:
        if engine is not None:
            kwargs.setdefault("config", engine.config)
        elif kwargs.get("draft") is None and kwargs.get("target") is None:
            # the bundled pair comes with its own settings (greedy, bounds fitted to it)
            from .assets import DEFAULT_CONFIG
            from .config import SpecGuardConfig

            kwargs.setdefault("config", SpecGuardConfig.from_file(DEFAULT_CONFIG))
        super().__init__(**kwargs)
        self._engine = engine

    @property
    def engine(self) -> SpecGuard:
        if self._engine is None:
            from .registry import get_engine

            self._engine = get_engine(
                self.draft, self.target, self.config, device=self.device, dtype=self.dtype
            )
        return self._engine


def llm_params(
    base: SpecGuardConfig,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> SpecGuardConfig:
    """Map the usual LLM parameters onto the engine config (temperature 0: greedy, k = 1)."""
    overrides: dict[str, Any] = {"max_new_tokens": max_tokens, "seed": seed}
    if temperature is not None:
        overrides["temperature"] = temperature
        if temperature == 0.0:
            overrides["k"] = 1
    return base.merged(**overrides)
