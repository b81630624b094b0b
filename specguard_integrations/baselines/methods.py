"""The methods SpecGuard is compared with, each solving the same task items the same way.

| method | what runs |
|---|---|
| ``target`` / ``draft`` | one model alone, greedy `generate` |
| ``assisted`` | token-level SD: transformers assisted generation, draft as the assistant |
| ``rsd`` | reward-guided SD: a draft step is kept iff a process reward model scores it >= tau |
| ``confidence`` | the SpecGuard loop with grounding off (selection + log-prob signal) |
| ``specguard-greedy`` | SpecGuard, paper greedy variant (k = 1, beta 0.3, tau 0.7) |
| ``specguard`` | SpecGuard, paper defaults (k = 16, T 0.7, top-p 0.8, beta 0.3, tau 0.7) |
| ``config`` | SpecGuard with the run's config (the bundled one unless ``--config``) |
| ``config:PATH`` | SpecGuard with the config file at PATH (e.g. `specguard calibrate` output) |

Every method returns the task runner's `Solved` record (same prompts, same tool loop, same answer
check), so the benchmark reads accuracy, time and step records alike from all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from ..backends.local.model import LocalCausalLM
    from ..config import SpecGuardConfig
    from ..registry import SpecGuard
    from ..tasks.base import Item
    from ..tasks.runner import Solved


class ProcessRewardModel:
    """Any transformers sequence-classification model as a step verifier (RSD's PRM).

    Input: ``context + step`` (truncated from the left to the model's window). Output: the
    probability that the step is correct: ``sigmoid(logit)`` with one label, ``softmax[-1]``
    with two or more (the last label read as "correct").
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "prm", device: str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        cfg = model.config
        self.max_len = int(getattr(cfg, "max_position_embeddings", 0) or 2048)

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu") -> ProcessRewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path).to(device)
        except (OSError, ValueError) as err:
            raise InvalidInputError(
                f"cannot load a sequence-classification PRM from {path!r}: {err}"
            ) from err
        return cls(model, tok, name=str(path).rstrip("/").rsplit("/", 1)[-1], device=device)

    def score(self, context: str, step: str) -> float:
        import torch

        ids = self.tokenizer(context + step, add_special_tokens=True)["input_ids"][-self.max_len :]
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]
        if logits.numel() == 1:
            return 1.0 / (1.0 + math.exp(-float(logits[0])))
        return float(torch.softmax(logits.float(), dim=-1)[-1])


class Method(Protocol):
    name: str

    def solve(self, item: Item) -> Solved: ...


@dataclass
class PlainMethod:
    """One model alone (optionally with an assistant: token-level speculative decoding)."""

    name: str
    lm: LocalCausalLM
    max_new_tokens: int = 160
    assistant: LocalCausalLM | None = None

    def solve(self, item: Item) -> Solved:
        from ..tasks.runner import solve_plain

        return solve_plain(
            self.lm, item, max_new_tokens=self.max_new_tokens, assistant=self.assistant
        )


@dataclass
class LoopMethod:
    """The step loop with a config (SpecGuard, its ablations, or RSD when the engine has a
    verifier)."""

    name: str
    engine: SpecGuard
    config: SpecGuardConfig

    def solve(self, item: Item) -> Solved:
        from ..tasks.runner import solve_specguard

        return solve_specguard(self.engine, item, self.config)


def paper_config(base: SpecGuardConfig, *, greedy: bool) -> SpecGuardConfig:
    """The paper's method settings (k, T, top-p, beta, tau, bounds, rollout) with `base`'s
    budget and step settings (segmenter, markers, step/token limits)."""
    from ..config import SpecGuardConfig

    keep = (
        "max_step_tokens",
        "max_steps",
        "max_new_tokens",
        "segmenter",
        "final_answer_markers",
        "seed",
    )
    budget = {k: getattr(base, k) for k in keep}
    return SpecGuardConfig.greedy(**budget) if greedy else SpecGuardConfig(**budget)


def _target(n: str, p: _Pair) -> Method:
    return PlainMethod(n, p.target, p.config.max_new_tokens)


def _draft(n: str, p: _Pair) -> Method:
    return PlainMethod(n, p.draft, p.config.max_new_tokens)


def _assisted(n: str, p: _Pair) -> Method:
    """Token-level SD; across tokenizers, universal assisted decoding (transformers)."""
    return PlainMethod(n, p.target, p.config.max_new_tokens, assistant=p.draft)


def _rsd(n: str, p: _Pair) -> Method:
    from ..engine.policy import RewardModelJudge
    from ..registry import SpecGuard

    if p.prm is None:
        raise InvalidInputError("the rsd method needs a process reward model (--prm PATH)")
    # the PRM is the judge, whatever the config names
    base = p.config.merged(judge="draft", target_band=(0.0, 1.0))
    rsd = SpecGuard(p.draft, p.target, base, judge=RewardModelJudge(p.prm))
    return LoopMethod(
        n, rsd, p.config.merged(tau=p.prm_threshold, judge="draft", target_band=(0.0, 1.0))
    )


@dataclass
class _Pair:
    draft: LocalCausalLM
    target: LocalCausalLM
    config: SpecGuardConfig
    engine: SpecGuard
    prm: ProcessRewardModel | None
    prm_threshold: float


# name -> builder; ``config:PATH`` is read apart (its name carries the path)
METHODS: dict[str, Callable[[str, _Pair], Method]] = {
    "target": _target,
    "draft": _draft,
    "assisted": _assisted,
    "rsd": _rsd,
    "confidence": lambda n, p: LoopMethod(n, p.engine, p.config.merged(use_grounding=False)),
    "specguard-greedy": lambda n, p: LoopMethod(n, p.engine, paper_config(p.config, greedy=True)),
    "specguard": lambda n, p: LoopMethod(n, p.engine, paper_config(p.config, greedy=False)),
    "config": lambda n, p: LoopMethod(n, p.engine, p.config),
}
METHOD_NAMES = tuple(METHODS)


def build_methods(
    names: list[str] | tuple[str, ...],
    draft: LocalCausalLM,
    target: LocalCausalLM,
    config: SpecGuardConfig,
    *,
    prm: ProcessRewardModel | None = None,
    prm_threshold: float = 0.5,
) -> list[Method]:
    """The named methods over one model pair. `config` is the ``config`` method's settings and
    the budget every loop method shares."""
    from pathlib import Path

    from ..config import SpecGuardConfig
    from ..registry import SpecGuard

    unknown = [n for n in names if n not in METHODS and not n.startswith("config:")]
    if unknown:
        raise InvalidInputError(
            f"unknown methods {unknown}; choose from {list(METHODS)} or config:PATH"
        )
    if not names:
        raise InvalidInputError("no methods given")
    _unconstrained(config, "the bench's config")
    pair = _Pair(draft, target, config, SpecGuard(draft, target, config), prm, prm_threshold)
    out: list[Method] = []
    for name in names:
        if name.startswith("config:"):
            path = Path(name.split(":", 1)[1])
            cfg = SpecGuardConfig.from_file(path)
            _unconstrained(cfg, str(path))
            out.append(LoopMethod(f"config:{path.stem}", pair.engine, cfg))
        else:
            out.append(METHODS[name](name, pair))
    return out


def _unconstrained(cfg: Any, where: str) -> None:
    """The methods compared answer in free text (checked as such, the baselines unconstrained):
    a config that constrains the output would not be compared like for like."""
    if cfg.constraint is not None:
        raise InvalidInputError(
            f"{where} carries a constraint ({next(iter(cfg.constraint))}); the benchmark compares"
            " free-text answers, with unconstrained baselines: remove it from the config"
        )
