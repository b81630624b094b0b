"""The signal study: does each draft signal tell a correct step from a wrong one?

Every draft step a run proposes is recorded once (its context, its tokens, the checker's label);
then each signal variant is computed for it from one from-scratch forward of the draft with all
attention maps (the reference formulas of `engine.signals`, not the incremental path), so every
variant sees exactly the same steps. `signal_report` turns the values into AUROCs.

Variants (the paper's form first):

- confidence: ``conf_min`` (the paper, l = min_t log p), ``conf_mean``;
- the target's own score of the step (the target-verified judge, a local target): ``t_min``,
  ``t_mean`` and ``t_q10`` of ``log p_target(s_t | ctx, s_<t)`` in the target's tokenizer;
- grounding: ``g_paper`` (last 3 layers, mean of heads, 0.01 cut, min over the step, prompt and
  accepted steps as context), and one change at a time: aggregation ``g_mean``, ``g_q10``
  (10th percentile), ``g_content`` (min over number/name tokens); depth ``g_last1``, ``g_all``;
  heads ``g_headmax``; target set ``g_prompt`` (the prompt alone); rollout ``g_residual``,
  ``g_nocut``; and per-head values ``head:L.H`` from which ``g_heads`` (the best heads on the dev
  split) is built.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..engine import signals
from ..errors import InvalidInputError
from .signal_rows import Selection, StepRow

if TYPE_CHECKING:
    import torch

    from ..backends.local.model import LocalCausalLM
    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuardEngine
    from ..tasks.base import Item


@dataclass(frozen=True)
class Grounding:
    """One grounding variant: which layers, how heads join, what counts, how tokens reduce."""

    layers: int = 3  # last n layers (0: all)
    heads: str | tuple[int, ...] = "mean"
    aggregate: str = "min"
    target: str = "context"  # or "prompt"
    residual: bool = False
    cut: float = 0.01


GROUNDING: dict[str, Grounding] = {
    "g_paper": Grounding(),
    "g_mean": Grounding(aggregate="mean"),
    "g_q10": Grounding(aggregate="quantile"),
    "g_content": Grounding(aggregate="content_min"),
    "g_last1": Grounding(layers=1),
    "g_all": Grounding(layers=0),
    "g_headmax": Grounding(heads="max"),
    "g_prompt": Grounding(target="prompt"),
    "g_residual": Grounding(residual=True),
    "g_nocut": Grounding(cut=0.0),
}


def draft_model(engine: SpecGuardEngine) -> LocalCausalLM:
    """The pair's draft, which the study reads tensors from: a local Hugging Face model."""
    from ..backends.local.model import LocalCausalLM

    model = engine.draft.local_model
    if not isinstance(model, LocalCausalLM):
        raise InvalidInputError("the signal study needs a local draft model")
    return model


class _Recorder:
    """A judge that is SpecGuard's own (the run is the config's) and remembers each step."""

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self.seen: list[tuple[str, str]] = []

    def judge_step(self, sig: Any, context: str, step: str, config: Any) -> Any:
        self.seen.append((context, step))
        return self.judge.judge(sig, context, step, config)


def record_steps(
    engine: SpecGuardEngine,
    items: list[Item],
    config: SpecGuardConfig,
    dev_share: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> list[StepRow]:
    """Run each item once with `config` and keep every labelled draft step. Items alternate
    between the dev and test splits (by item, so no item is in both)."""
    from ..backends.local.model import LocalCausalLM
    from ..engine.policy import judge_for
    from ..tasks.runner import solve_specguard

    lm = draft_model(engine)
    local = engine.target.local_model
    target = local if isinstance(local, LocalCausalLM) else None
    rows: list[StepRow] = []
    inner = engine.judge or judge_for(config)
    recorder = _Recorder(inner)

    class Judge:
        reads_target = inner.reads_target

        def judge(self, sig: Any, context: str, step: str, cfg: Any) -> Any:
            return recorder.judge_step(sig, context, step, cfg)

    saved, engine.judge = engine.judge, Judge()
    try:
        for n, item in enumerate(items):
            recorder.seen.clear()
            solved = solve_specguard(
                engine, item, config.merged(judge="draft", target_band=(0.0, 1.0))
            )
            split = "dev" if n % round(1 / dev_share) == 0 else "test"
            for i, ((ctx, step), rec) in enumerate(zip(recorder.seen, solved.records, strict=True)):
                verdict = item.check_step(i, rec.draft_text)
                if not verdict.well_formed and item.family == "wordproblem":
                    continue  # no equation to check
                prompt_ids = lm.encode_prompt(item.prompt)
                ctx_ids = prompt_ids + lm.encode_continuation(ctx[len(item.prompt) :])
                step_ids = lm.encode_continuation(step)
                kind = getattr(item, "step_kind", None)
                family = f"{item.family}:{kind(step)}" if kind else item.family
                if step_ids:
                    row = StepRow(
                        family, n, i, ctx_ids, len(prompt_ids), step_ids, step, verdict.ok, split
                    )
                    if target is not None:
                        row.target_ctx = target.encode_prompt(item.prompt)
                        row.target_ctx += target.encode_continuation(ctx[len(item.prompt) :])
                        row.target_step = target.encode_continuation(step)
                    rows.append(row)
            if progress:
                progress("record")
    finally:
        engine.judge = saved
    return rows


def forward_all(lm: LocalCausalLM, ids: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits `(N, V)` and every layer's attention `(H, N, N)` of one from-scratch pass."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config)
    logits, attn = lm.attend(torch.tensor([ids], device=lm.device), cache, lm.num_layers)
    return logits[0].float(), [a[0].float() for a in attn]


def _grounding(
    attn: list[torch.Tensor], v: Grounding, n_ctx: int, prompt_len: int, content: torch.Tensor
) -> float:
    import torch

    layers = attn[-v.layers :] if v.layers else attn
    mats = [
        signals.process_attention(a, cut=v.cut, residual=v.residual, heads=v.heads) for a in layers
    ]
    total = mats[0].shape[0]
    ctx = torch.zeros(total, device=mats[0].device)  # where the attention is
    ctx[: prompt_len if v.target == "prompt" else n_ctx] = 1.0
    g = signals.grounding_from_matrices(mats, ctx)[n_ctx:]  # (T,) G(t) of the step
    return signals.grounding([g], v.aggregate, q=0.1, content=content)


def compute_values(lm: LocalCausalLM, row: StepRow, heads_from: int = 3) -> dict[str, float]:
    """Every variant's value for one step, and ``head:L.H`` for each head of the last
    `heads_from` layers (single-head grounding, the paper's form otherwise)."""
    import torch

    ids = row.ctx_ids + row.step_ids
    logits, attn = forward_all(lm, ids)
    n_ctx = len(row.ctx_ids)
    step = torch.tensor(row.step_ids, device=logits.device)
    lp = signals.token_logprobs(logits[n_ctx - 1 : -1], step)
    values = {"conf_min": signals.confidence(lp), "conf_mean": signals.confidence(lp, "mean")}
    pieces = [lm.decode([t]) for t in row.step_ids]
    content = torch.tensor(signals.content_tokens(pieces), device=attn[-1].device)
    for name, v in GROUNDING.items():
        values[name] = _grounding(attn, v, n_ctx, row.prompt_len, content)
    first = max(0, len(attn) - heads_from)
    for layer in range(first, len(attn)):
        for h in range(attn[layer].shape[0]):
            one = Grounding(layers=1, heads=(h,))
            values[f"head:{layer}.{h}"] = _grounding(
                attn[: layer + 1], one, n_ctx, row.prompt_len, content
            )
    return values


def target_values(engine: SpecGuardEngine, row: StepRow) -> dict[str, float]:
    """``t_min``, ``t_mean`` and ``t_q10`` of the step from one from-scratch pass of the target
    (nothing when the target is not local)."""
    import torch

    from ..backends.local.model import LocalCausalLM
    from ..engine.policy import aggregate

    target = engine.target.local_model
    if not isinstance(target, LocalCausalLM) or not row.target_ctx or not row.target_step:
        return {}
    ids = row.target_ctx + row.target_step
    with torch.inference_mode():
        logits = target.model(torch.tensor([ids], device=target.device)).logits[0].float()
    n = len(row.target_ctx)
    lp = signals.token_logprobs(
        logits[n - 1 : -1], torch.tensor(row.target_step, device=target.device)
    )
    xs = lp.tolist()
    return {
        "t_min": aggregate(xs, "min"),
        "t_mean": aggregate(xs, "mean"),
        "t_q10": aggregate(xs, "quantile", 0.1),
    }


def add_chosen_heads(lm: LocalCausalLM, rows: list[StepRow], heads: tuple[int, ...]) -> None:
    """``g_heads``: the paper's form with only `heads` joined (chosen on the dev split)."""
    import torch

    v = Grounding(heads=heads)
    for row in rows:
        _, attn = forward_all(lm, row.ctx_ids + row.step_ids)
        pieces = [lm.decode([t]) for t in row.step_ids]
        content = torch.tensor(signals.content_tokens(pieces), device=attn[-1].device)
        row.values["g_heads"] = _grounding(attn, v, len(row.ctx_ids), row.prompt_len, content)


# ---------------------------------------------------------------- selection accuracy
def selection_accuracy(
    engine: SpecGuardEngine,
    rows: list[StepRow],
    items: list[Item],
    k: int,
    limit: int,
    seed: int = 0,
) -> list[Selection]:
    """At each of `limit` recorded contexts, sample k draft candidates (the paper's sampling:
    T 0.7, top-p 0.8), label each, and compare the two selectors with a random and the best
    candidate."""
    import torch

    from ..backends.local.sessions import LocalDraftSession
    from ..engine.backends import DecodeSettings, SignalSettings
    from ..segmentation import make_segmenter

    lm = draft_model(engine)
    out: dict[str, list[tuple[bool, bool, float, bool]]] = {}
    rng = random.Random(seed)
    for row in rng.sample(rows, min(limit, len(rows))):
        item = items[row.item]
        seg = make_segmenter(item.segmenter, ("Final Answer:", "Answer:"))
        session = LocalDraftSession(lm, row.ctx_ids, SignalSettings())
        gen = torch.Generator(device=lm.device).manual_seed(seed + row.item * 1000 + row.index)
        cands = session.propose(DecodeSettings(k, 0.7, 0.8, 48, seg), gen)
        labels = [item.check_step(row.index, c.text).ok for c in cands]
        h = labels[session.select(cands)]
        session.cfg = replace(session.cfg, selector="attention")
        a = labels[session.select(cands)]
        out.setdefault(row.family, []).append((h, a, sum(labels) / len(labels), any(labels)))
    return [
        Selection(
            fam,
            k,
            len(v),
            sum(x[0] for x in v) / len(v),
            sum(x[1] for x in v) / len(v),
            sum(x[2] for x in v) / len(v),
            sum(x[3] for x in v) / len(v),
        )
        for fam, v in sorted(out.items())
    ]


# ---------------------------------------------------------------- the whole study
VARIANTS = ("conf_min", "conf_mean", *GROUNDING, "g_heads", "t_min", "t_mean", "t_q10")


@dataclass
class Study:
    """Everything `specguard signals` reports."""

    rows: list[StepRow]
    heads: tuple[int, ...]
    cells: list[Any]
    fusions: list[Any]
    selections: list[Selection]


def run_study(
    engine: SpecGuardEngine,
    items: list[Item],
    config: SpecGuardConfig,
    *,
    ks: tuple[int, ...] = (4, 16),
    selection_limit: int = 40,
    boots: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> Study:
    """Record every draft step of `items` under `config`, compute every variant, choose heads on
    the dev split, and report AUROCs (dev and test), fusions with confidence (fitted on dev,
    scored on test) and selection accuracy at each k."""
    from . import signal_report as report

    lm = draft_model(engine)
    rows = record_steps(engine, items, config, progress=progress)
    if not rows:
        raise InvalidInputError(
            "signals: no labelled draft step was recorded (are the items checkable?)"
        )
    for row in rows:
        row.values = compute_values(lm, row)
        row.values.update(target_values(engine, row))
        if progress:
            progress("values")
    heads = report.choose_heads(rows)
    if heads:
        add_chosen_heads(lm, rows, heads)
    variants = [v for v in VARIANTS if all(v in r.values for r in rows)]
    table = report.cells(rows, variants, "dev", boots) + report.cells(rows, variants, "test", boots)
    fusions = [report.fuse(rows, v, boots) for v in variants if v != "conf_min"]
    selections = [
        s for k in ks for s in selection_accuracy(engine, rows, items, k, selection_limit)
    ]
    return Study(rows, heads, table, fusions, selections)
