"""The grounding and confidence variants: the online (incremental, cached) path gives what the
study's from-scratch reference gives, and `specguard signals` runs end to end."""

import json

import pytest
import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.bench.signal_study import (
    VARIANTS,
    Grounding,
    StepRow,
    _grounding,
    compute_values,
    forward_all,
    record_steps,
    target_values,
)
from specguard_integrations.engine import signals
from specguard_integrations.tasks import FAMILIES
from specguard_integrations.testing import tiny_lm

PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?\n"

# (config fields, the study's Grounding of the same variant, confidence aggregate)
CASES = [
    ({"grounding_aggregate": "mean", "confidence_aggregate": "mean"}, Grounding(aggregate="mean")),
    ({"attention_heads": "max", "rollout_layers": 1}, Grounding(layers=1, heads="max")),
    (
        {"attention_heads": (0, 2), "grounding_target": "prompt", "rollout_layers": 99},
        Grounding(layers=0, heads=(0, 2), target="prompt"),
    ),
    (
        {"grounding_aggregate": "quantile", "attention_cut": 0.0, "rollout_residual": True},
        Grounding(aggregate="quantile", cut=0.0, residual=True),
    ),
    ({"grounding_aggregate": "content_min"}, Grounding(aggregate="content_min")),
]


@pytest.mark.parametrize(("fields", "variant"), CASES, ids=[str(c[0]) for c in CASES])
def test_online_variant_equals_the_from_scratch_reference(fields, variant):
    draft, target = tiny_lm("llama", seed=1, layers=3), tiny_lm("llama", seed=2, layers=4)
    cfg = SpecGuardConfig(
        k=2, tau=0.5, max_step_tokens=5, max_new_tokens=30, seed=3, segmenter="newline", **fields
    )
    steps = list(SpecGuard(draft, target, cfg).stream(PROMPT))
    assert len(steps) >= 3
    prompt_ids = draft.encode_prompt(PROMPT)
    ctx_ids = list(prompt_ids)
    for s in steps:
        step_ids = draft.encode_continuation(s.draft_text)
        logits, attn = forward_all(draft, ctx_ids + step_ids)
        n_ctx = len(ctx_ids)
        pieces = [draft.decode([t]) for t in step_ids]
        content = torch.tensor(signals.content_tokens(pieces))
        g_ref = _grounding(attn, variant, n_ctx, len(prompt_ids), content)
        lp = signals.token_logprobs(logits[n_ctx - 1 : -1], torch.tensor(step_ids))
        how = fields.get("confidence_aggregate", "min")
        assert s.grounding == pytest.approx(g_ref, abs=1e-4), s.step_index
        assert s.confidence == pytest.approx(signals.confidence(lp, how), abs=1e-4)
        ctx_ids = ctx_ids + draft.encode_continuation(s.text)


def test_compute_values_names_every_variant_and_head():
    draft = tiny_lm("llama", seed=1, layers=3)
    ids = draft.encode_prompt(PROMPT)
    row = StepRow("arithmetic", 0, 0, ids[:-4], len(ids) - 4, ids[-4:], "x", True)
    values = compute_values(draft, row)
    heads = draft.model.config.num_attention_heads
    assert set(VARIANTS) - {"g_heads", "t_min", "t_mean", "t_q10"} <= set(values)
    assert sum(k.startswith("head:") for k in values) == 3 * heads
    # the paper's form, written out: last 3 layers, mean of heads, 0.01 cut, min over the step
    _, attn = forward_all(draft, row.ctx_ids + row.step_ids)
    mats = [signals.process_attention(a) for a in attn[-3:]]
    ctx = torch.tensor([1.0] * len(row.ctx_ids) + [0.0] * 4)
    g = signals.grounding_from_matrices(mats, ctx)[len(row.ctx_ids) :].min()
    assert values["g_paper"] == pytest.approx(float(g), abs=1e-6)
    assert values["g_paper"] == values["g_all"]  # three layers: all of them
    assert values["conf_mean"] >= values["conf_min"]


def test_signals_command_end_to_end_on_the_bundled_pair(tmp_path):
    from specguard_integrations.cli import main

    out = tmp_path / "study"
    argv = [
        "signals",
        "--limit",
        "2",
        "--k",
        "2,4",
        "--selection-limit",
        "3",
        "--boots",
        "50",
        "--out",
    ]
    rc = main([*argv, str(out)])
    assert rc == 0
    data = json.loads((out / "signals.json").read_text())
    assert data["items"] == 2 * len(FAMILIES) and data["steps"] > 2 * len(FAMILIES)
    splits = {(c["variant"], c["split"]) for c in data["cells"] if c["family"] == "all"}
    assert splits == {(v, s) for v in VARIANTS for s in ("dev", "test")}
    for c in data["cells"]:
        if c["auroc"] is not None:
            assert c["low"] <= c["auroc"] <= c["high"] and 0 <= c["auroc"] <= 1
    assert {f["variant"] for f in data["fusions"]} == set(VARIANTS) - {"conf_min"}
    assert {s["k"] for s in data["selections"]} == {2, 4}
    for s in data["selections"]:
        assert s["random"] <= s["best"] and s["chosen_hidden"] <= s["best"]
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == data["steps"] and {"conf_min", "g_paper"} <= set(steps[0]["values"])
    md = (out / "signals.md").read_text()
    assert "specguard signals" in md and "| g_paper |" in md and "attention medoid" in md


def test_the_study_scores_the_target_as_the_target_verified_judge_does():
    from specguard_integrations.tasks import make_split

    draft, target = tiny_lm("llama", seed=1, layers=3), tiny_lm("llama", seed=2, layers=4)
    cfg = SpecGuardConfig.greedy(
        judge="target", tau=0.0, max_step_tokens=8, max_new_tokens=40, target_aggregate="min"
    )
    engine = SpecGuard(draft, target, cfg)
    item = make_split("arithmetic", "test", 1)[0]
    online = [s.target_score for s in engine.generate(item.prompt).steps]
    rows = record_steps(engine, [item], cfg, dev_share=1.0)
    assert len(rows) >= 3
    for row in rows:  # the labelled steps, scored from scratch by the target
        values = target_values(engine, row)
        assert set(values) == {"t_min", "t_mean", "t_q10"}
        assert values["t_min"] <= values["t_q10"] <= values["t_mean"] <= 0.0
        assert values["t_min"] == pytest.approx(online[row.index], abs=1e-4)
