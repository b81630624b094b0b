"""SpecGuard configuration: one validated, immutable object for the whole step loop.

Every field the method needs (paper defaults where the paper gives one) plus the choices the
paper leaves open (see docs/concepts.md, "Where the paper is silent"). The engine reads it and
never mutates it; per-call overrides go through `SpecGuardConfig.merged`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, InvalidInputError, MissingAssetError

TargetMode = Literal["greedy", "sample"]


class SpecGuardConfig(BaseModel):
    """Settings of the SpecGuard step loop.

    Paper defaults: ``k=16, temperature=0.7, top_p=0.8, beta=0.3, tau=0.7``, rollout over the last
    3 layers with a 0.01 attention cut. The "greedy" variant is ``k=1, temperature=0``.
    """

    # counts are strict integers (``k=True`` is not ``k=1``), numbers are finite and never bools
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    # 1. propose
    k: StrictInt = Field(
        16, ge=1, le=256, description="Candidate steps sampled from the draft per step."
    )
    temperature: StrictFloat = Field(
        0.7, ge=0.0, le=10.0, description="Draft sampling temperature; 0 means greedy (needs k=1)."
    )
    top_p: StrictFloat = Field(
        0.8, gt=0.0, le=1.0, description="Nucleus mass kept when sampling draft candidates."
    )
    max_step_tokens: StrictInt = Field(
        256, ge=1, description="Tokens after which a step is cut even without a boundary."
    )
    max_steps: StrictInt = Field(64, ge=1, description="Steps after which generation stops.")
    max_new_tokens: StrictInt = Field(
        1024,
        ge=1,
        description="Generated tokens (target tokenization) after which generation stops.",
    )
    segmenter: str = Field(
        "blank_line",
        description=(
            "Step boundary: 'blank_line' (\\n\\n), 'newline' (\\n), 'step_marker' (a line starting"
            " 'Step n:'), 'react' (Thought/Action/Action Input block), 'tool_call' (a complete"
            " <tool_call>...</tool_call> block or a blank line)."
        ),
    )
    tool_call_format: str = Field(
        "hermes",
        description=(
            "With segmenter 'tool_call': the block a tool call is written in, by vLLM's parser"
            " name: 'hermes' (<tool_call>...</tool_call>), 'llama3_json' (a bare JSON object),"
            " 'mistral' ([TOOL_CALLS][...]), 'deepseek_v3', or any format registered in"
            " specguard_integrations.tools. The chat layer sets it from the model's chat template."
        ),
    )
    parallel_tool_calls: StrictBool = Field(
        False,
        description=(
            "With segmenter 'tool_call' and a format that writes each call in its own block"
            " (hermes): True lets a reply go on after a complete call (more calls, or the end"
            " of the turn), False ends the generation at the first call. The chat surfaces set"
            " it from the request's parallel_tool_calls (on by default, as OpenAI's)."
        ),
    )
    final_answer_markers: tuple[str, ...] = Field(
        ("Final Answer:", "Answer:"),
        description="A step containing one of these ends generation after the marker's line.",
    )
    # 2. select
    selector: Literal["hidden_mean", "attention"] = Field(
        "hidden_mean",
        description=(
            "Consistency-selector embedding: 'hidden_mean' (the draft's mean-pooled last hidden"
            " state, the default) or 'attention' (each candidate's last-layer attention over the"
            " context, one extra forward of the k candidates)."
        ),
    )
    # 3. score
    rollout_layers: StrictInt = Field(
        3,
        ge=1,
        description="Last layers multiplied in attention rollout (more than the model"
        " has: all of them).",
    )
    attention_heads: Literal["mean", "max"] | tuple[StrictInt, ...] = Field(
        "mean",
        description=(
            "How A_l joins the heads: 'mean' (the paper), 'max', or the mean of these head"
            " indices (chosen on a dev set by `specguard signals`)."
        ),
    )
    grounding_aggregate: Literal["min", "mean", "quantile", "content_min"] = Field(
        "min",
        description=(
            "g from G(t) over the step's tokens: 'min' (the paper), 'mean', 'quantile'"
            " (grounding_quantile), or 'content_min' (the min over tokens that carry content:"
            " numbers and capitalised words, read off the tokenizer)."
        ),
    )
    grounding_quantile: StrictFloat = Field(
        0.1, ge=0.0, le=1.0, description="The quantile of G(t) for grounding_aggregate='quantile'."
    )
    grounding_target: Literal["context", "prompt"] = Field(
        "context",
        description="What counts as grounding: the prompt and accepted steps (the paper), or the"
        " prompt alone.",
    )
    confidence_aggregate: Literal["min", "mean"] = Field(
        "min",
        description="l from the step's token log-probabilities: 'min' (the paper) or 'mean'.",
    )
    attention_cut: StrictFloat = Field(
        0.01, ge=0.0, lt=1.0, description="Attention probabilities below this are zeroed."
    )
    rollout_residual: StrictBool = Field(
        False, description="Use 0.5*A + 0.5*I per layer (Abnar & Zuidema). Off in the paper."
    )
    rollout_renormalize: StrictBool = Field(
        False, description="Renormalise attention rows to sum 1 after the cut. Off in the paper."
    )
    exclude_sink_positions: StrictInt = Field(
        0, ge=0, description="First n prompt positions (BOS, template) not counted as context."
    )
    # 4. decide
    beta: StrictFloat = Field(
        0.3, ge=0.0, le=1.0, description="Weight of confidence in the fused score."
    )
    tau: StrictFloat = Field(
        0.7, ge=0.0, description="Accept a draft step when the fused score r >= tau (>1: never)."
    )
    confidence_bounds: tuple[StrictFloat, StrictFloat] = Field(
        (-6.0, 0.0), description="(l_lo, l_hi) for min-max normalising the min token log-prob."
    )
    grounding_bounds: tuple[StrictFloat, StrictFloat] = Field(
        (0.0, 1.0), description="(g_lo, g_hi) for min-max normalising the rollout grounding."
    )
    judge: Literal["draft", "target"] = Field(
        "draft",
        description=(
            "Step 4's judge: 'draft' (SpecGuard's fused draft signals, the paper) or 'target'"
            " (the target-verified judge: the target's own log-probabilities of the step, read"
            " from the catch-up prefill it owes anyway, fused with the draft's score by"
            " target_weight)."
        ),
    )
    target_aggregate: Literal["min", "mean", "quantile"] = Field(
        "mean",
        description="t from the target's token log-probabilities of the step: 'min', 'mean' or"
        " 'quantile' (target_quantile).",
    )
    target_quantile: StrictFloat = Field(
        0.1, ge=0.0, le=1.0, description="The quantile for target_aggregate='quantile'."
    )
    target_bounds: tuple[StrictFloat, StrictFloat] = Field(
        (-3.0, 0.0), description="(t_lo, t_hi) for min-max normalising the target's score."
    )
    target_weight: StrictFloat = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="gamma: r = gamma * t~ + (1 - gamma) * r_draft under judge='target' (1: the"
        " target's score alone).",
    )
    target_band: tuple[StrictFloat, StrictFloat] = Field(
        (0.0, 1.0),
        description="(lo, hi) under judge='target': the target verifies a step whose draft score"
        " r_draft is in [lo, hi]; above hi the step is kept, below lo rejected, on the draft's"
        " word alone (its catch-up deferred, as under judge='draft'). (0, 1): every step.",
    )
    # 5. fall back
    target_mode: TargetMode = Field(
        "greedy", description="Target fallback step: 'greedy', or 'sample' k and select."
    )
    target_k: StrictInt | None = Field(
        None, ge=1, description="Samples for target_mode='sample'; defaults to k."
    )
    target_speculation: StrictInt = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Greedy fallback steps: the draft proposes this many tokens per target forward"
            " (token-level speculative decoding inside the step; same text, fewer target"
            " forwards). 0 writes the step token by token. Needs a shared vocabulary."
        ),
    )
    constraint: dict[str, Any] | None = Field(
        None,
        description="A constraint on the generated text of every call: {'json_schema': {...}},"
        " {'regex': '...'} or {'lark': '...'} (docs/structured-output.md); a call's own"
        " constraint= replaces it.",
    )
    prefix_cache_bytes: StrictInt = Field(
        1 << 30,
        ge=0,
        description=(
            "Bytes each local model may keep of sequences it read (KV cache, and the draft's"
            " rollout mass), across calls: a call feeds only what follows its longest cached"
            " prefix (an agent's system prompt, tools and history are read once). Least"
            " recently used entries go first. 0 switches the cache off."
        ),
    )
    use_grounding: StrictBool = Field(
        True, description="False runs the confidence-only ablation (fused score = normalised l)."
    )
    seed: StrictInt | None = Field(
        0,
        ge=0,
        le=2**64 - 1,
        description="Seed of the sampling generator, 0 to 2**64 - 1 (what torch.Generator"
        " takes); None draws one.",
    )

    def __init__(self, **data: Any) -> None:
        """Validate every field; `ConfigError` (a `ValueError`) names each one that fails."""
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError.from_validation(err, "SpecGuardConfig") from None

    @field_validator("segmenter")
    @classmethod
    def _segmenter(cls, value: str) -> str:
        from .segmentation import SEGMENTERS

        if value not in SEGMENTERS:
            raise InvalidInputError(f"unknown value {value!r}; use one of {', '.join(SEGMENTERS)}")
        return value

    @field_validator("tool_call_format")
    @classmethod
    def _tool_call_format(cls, value: str) -> str:
        from .tools import format_by_name

        format_by_name(value)  # an unknown name raises, naming the registered formats
        return value

    @field_validator("constraint", mode="before")
    @classmethod
    def _constraint_spec(cls, value: Any) -> Any:
        """A `Constraint` object is taken as its spec."""
        from .constraint import Constraint

        return value.spec() if isinstance(value, Constraint) else value

    @model_validator(mode="after")
    def _check(self) -> SpecGuardConfig:
        for name in ("confidence_bounds", "grounding_bounds", "target_bounds"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise InvalidInputError(f"{name}: lower bound {lo} must be below upper bound {hi}")
        if self.constraint is not None:
            _check_constraint(self.constraint)
        lo, hi = self.target_band
        if not 0.0 <= lo <= hi <= 1.0:
            raise InvalidInputError(f"target_band: need 0 <= lo <= hi <= 1, got ({lo}, {hi})")
        if (lo, hi) != (0.0, 1.0) and self.judge != "target":
            raise InvalidInputError(
                "target_band applies to judge='target' only; set judge='target'"
            )
        if self.temperature == 0.0 and self.k > 1:
            raise InvalidInputError(
                f"k={self.k} with temperature=0: greedy candidates are identical; use k=1"
            )
        if any(not m for m in self.final_answer_markers):
            raise InvalidInputError("final_answer_markers: markers must be non-empty strings")
        return self

    @property
    def effective_target_k(self) -> int:
        return 1 if self.target_mode == "greedy" else (self.target_k or self.k)

    def merged(self, **overrides: Any) -> SpecGuardConfig:
        """A validated copy with `overrides` applied (None values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return SpecGuardConfig(**data)

    @classmethod
    def greedy(cls, **overrides: Any) -> SpecGuardConfig:
        """The paper's greedy variant: one greedy draft candidate per step."""
        return cls(**{"k": 1, "temperature": 0.0, **overrides})

    @classmethod
    def from_file(cls, path: str | Path) -> SpecGuardConfig:
        """Load a JSON config (as written by `to_file` or `specguard calibrate`): a JSON object
        of fields, or one whose ``config`` key holds them. `ConfigError` (a `ValueError`) naming
        ``config`` for a file that is not that."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MissingAssetError(f"config: no file {str(path)!r}") from None
        except (ValueError, OSError) as err:  # not JSON, not UTF-8, a directory
            raise ConfigError(f"config: {path} cannot be read as JSON: {err}") from None
        inner = data.get("config", data) if isinstance(data, dict) else data
        if not isinstance(inner, dict):
            where = "its 'config' key holds" if isinstance(data, dict) else "it holds"
            raise ConfigError(
                f"config: {path} must hold a JSON object of settings; {where}"
                f" {type(inner).__name__ if inner is not None else 'null'}",
                [{"loc": ("config",), "msg": "not a JSON object", "type": "dict_type"}],
            )
        return cls(**inner)

    def to_file(self, path: str | Path, **extra: Any) -> None:
        """Write the config as JSON; `extra` keys (e.g. calibration metrics) sit beside it."""
        payload: dict[str, Any] = {"config": self.model_dump(mode="json"), **extra}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _check_constraint(spec: dict[str, Any]) -> None:
    """A constraint spec names one kind, with a value of that kind's type, which the grammar
    library compiles (where it is installed)."""
    import re

    if len(spec) != 1 or next(iter(spec)) not in ("json_schema", "regex", "lark"):
        raise InvalidInputError(
            f"constraint: give exactly one of json_schema, regex or lark, got {sorted(spec)}"
        )
    ((kind, value),) = spec.items()
    if kind == "json_schema" and not isinstance(value, dict):
        raise InvalidInputError("constraint: json_schema must be a JSON object (a dict)")
    if kind != "json_schema" and (not isinstance(value, str) or not value.strip()):
        raise InvalidInputError(f"constraint: {kind} must be a non-empty string")
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as err:
            raise InvalidInputError(f"constraint: regex: {err}") from None
    why = _compile_error(json.dumps(spec, sort_keys=True))  # what the sampler could not compile
    if why is not None:
        raise InvalidInputError(f"constraint: the {kind} does not compile: {why}")


@functools.lru_cache(maxsize=64)
def _compile_error(spec: str) -> str | None:
    """Once per spec: configs are copied (`merged`) on every call."""
    from .constraint import Constraint

    return Constraint.from_spec(json.loads(spec)).compile_error()
