"""The package's `SpecGuard`, loaded models shared across the process, and the one place a
draft/target pair is built.

This layer sits above the method (`engine`), the backends and the runtime, and joins them: the
`SpecGuard` here is the engine's with `from_pretrained`, and with the step scheduler plugged into
its local models. LangChain and LlamaIndex objects, the CLI and the server that point at the same
models share one `LocalCausalLM` per (path, device, dtype, loading options), so constructing
adapters stays cheap and weights load once, on first use. `load_pair` owns the bundled default:
no models named means the bundled pair with its own calibrated config.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from .engine import loop
from .errors import InvalidInputError

if TYPE_CHECKING:
    from .backends.local.model import LocalCausalLM
    from .config import SpecGuardConfig
    from .engine.backends import DraftModel, Runtime, TargetModel
    from .engine.policy import Judge


class SpecGuard(loop.SpecGuardEngine):
    """Step-level speculative decoding (`engine.loop.SpecGuardEngine`), with the process's step
    scheduler as its runtime: concurrent generations on the same local models share grouped
    forwards (`runtime/scheduler.py`). Same arguments, and `draft` / `target` may be a
    `LocalCausalLM`; `runtime` replaces the scheduler."""

    def __init__(
        self,
        draft: DraftModel | LocalCausalLM,
        target: TargetModel | LocalCausalLM,
        config: SpecGuardConfig | None = None,
        *,
        judge: Judge | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        from .backends.local.model import LocalCausalLM
        from .backends.local.sessions import LocalDraft
        from .backends.local.target import LocalTarget
        from .runtime.scheduler import SCHEDULER, StepScheduler

        runtime = runtime or SCHEDULER
        for m in (draft, target):
            if isinstance(m, LocalCausalLM) and isinstance(runtime, StepScheduler):
                runtime.attach(m)
        super().__init__(
            LocalDraft(draft) if isinstance(draft, LocalCausalLM) else draft,
            LocalTarget(target) if isinstance(target, LocalCausalLM) else target,
            config,
            judge=judge,
            runtime=runtime,
        )

    @classmethod
    def from_pretrained(
        cls, draft: str, target: str, config: SpecGuardConfig | None = None, **options: Any
    ) -> SpecGuard:
        """Load both models from Hugging Face ids or local directories.

        `options`: ``device``, ``dtype``, and ``draft_kwargs`` / ``target_kwargs`` for
        `from_pretrained` of each model and tokenizer (``revision``, ``trust_remote_code``,
        ``gguf_file``, ``device_map``, ``quantization_config``, ``attn_implementation``, ...);
        see `load_pair`.
        """
        return load_pair(draft, target, config, **options)


_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str, str], LocalCausalLM] = {}


def resolve(name: str | None, role: str) -> str:
    """A model id or path; None (or the bundled alias) means the bundled pair's model."""
    from .assets import BUNDLED_DRAFT, BUNDLED_TARGET, bundled_pair

    if name is None or name in (BUNDLED_DRAFT, BUNDLED_TARGET):
        draft, target = bundled_pair()
        return str(draft if role == "draft" else target)
    return name


def is_bundled(draft: str | None, target: str | None) -> bool:
    from .assets import BUNDLED_DRAFT, BUNDLED_TARGET

    return draft in (None, BUNDLED_DRAFT) and target in (None, BUNDLED_TARGET)


def default_config(draft: str | None, target: str | None) -> SpecGuardConfig:
    """The config a pair runs with when none is given: the bundled pair's calibrated one, or
    the paper's defaults for any other pair."""
    from .config import SpecGuardConfig

    if is_bundled(draft, target):
        from .assets import DEFAULT_CONFIG

        return SpecGuardConfig.from_file(DEFAULT_CONFIG)
    return SpecGuardConfig()


def _key(kwargs: dict[str, Any]) -> str:
    """A cache key for loading options (objects such as quantisation configs by repr)."""
    return json.dumps(kwargs, sort_keys=True, default=repr)


def load_lm(
    name: str, *, device: str | None = "auto", dtype: Any = "auto", **kwargs: Any
) -> LocalCausalLM:
    """The shared `LocalCausalLM` for a model id or path (loaded on first request).

    `kwargs` are `from_pretrained` options (see `LocalCausalLM.from_pretrained`).
    """
    from .backends.local.model import LocalCausalLM

    key = (name, str(device), str(dtype), _key(kwargs))
    with _LOCK:
        lm = _MODELS.get(key)
        if lm is None:
            from .assets import ASSETS

            display = name
            if name.startswith(str(ASSETS)):
                display = "specguard-bundled/" + name.rstrip("/").rsplit("/", 1)[-1]
            elif kwargs.get("gguf_file"):  # a directory of GGUF files: name the one loaded
                display = f"{name.rstrip('/')}/{kwargs['gguf_file']}"
            lm = LocalCausalLM.from_pretrained(
                name, device=device, dtype=dtype, name=display, **kwargs
            )
            _MODELS[key] = lm
        return lm


def load_pair(
    draft: Any = None,
    target: Any = None,
    config: SpecGuardConfig | None = None,
    *,
    device: str | None = "auto",
    dtype: Any = "auto",
    draft_kwargs: dict[str, Any] | None = None,
    target_kwargs: dict[str, Any] | None = None,
) -> SpecGuard:
    """A `SpecGuard` over shared models.

    `draft` / `target`: a model id or directory, an already loaded `LocalCausalLM`, a
    `(model, tokenizer)` pair of transformers objects, any draft/target backend, or None for
    the bundled pair's model. Without `config` the pair's default applies (`default_config`).
    """
    if (draft is None) != (target is None):
        raise InvalidInputError("give both draft and target, or neither (the bundled pair)")
    d = _model(draft, "draft", device, dtype, draft_kwargs or {})
    t = _model(target, "target", device, dtype, target_kwargs or {})
    if config is None:  # loaded objects are not the bundled pair: "" names them
        names = [x if x is None or isinstance(x, str) else "" for x in (draft, target)]
        config = default_config(names[0], names[1])
    return SpecGuard(d, t, config)


def build_pair(
    draft: Any = None,
    target: Any = None,
    *,
    config_file: str | None = None,
    device: str | None = "auto",
    dtype: Any = "auto",
    draft_kwargs: dict[str, Any] | None = None,
    target_kwargs: dict[str, Any] | None = None,
    judge: str | None = None,
) -> SpecGuard:
    """The pair the command line names, for the CLI and the server alike: `load_pair` with the
    config read from `config_file` (None: the pair's default), and `judge` (``--judge``) over
    the config's. A remote target (an `EndpointTarget` the server built from its flags) comes
    in as `target`; the draft then defaults to the bundled one."""
    from .config import SpecGuardConfig

    cfg = SpecGuardConfig.from_file(config_file) if config_file else None
    if target is not None and not isinstance(target, str) and draft is None:
        draft = resolve(None, "draft")
    engine = load_pair(
        draft,
        target,
        cfg,
        device=device,
        dtype=dtype,
        draft_kwargs=draft_kwargs,
        target_kwargs=target_kwargs,
    )
    if judge is not None:  # the draft's judge has no band: a config's band goes with its judge
        band = None if judge == "target" else (0.0, 1.0)
        engine.config = engine.config.merged(judge=judge, target_band=band)
    engine.judge_of(engine.config)  # a judge the target cannot serve is refused at start
    return engine


def _model(spec: Any, role: str, device: str | None, dtype: Any, kwargs: dict[str, Any]) -> Any:
    from .backends.local.model import LocalCausalLM

    if spec is None or isinstance(spec, str):
        return load_lm(resolve(spec, role), device=device, dtype=dtype, **kwargs)
    if kwargs:
        raise InvalidInputError(
            f"{role}_kwargs apply to a model id or path, not to a loaded {role}"
        )
    if isinstance(spec, tuple) and len(spec) == 2:
        model, tokenizer = spec
        return LocalCausalLM(model, tokenizer)
    return spec  # a LocalCausalLM or a backend
