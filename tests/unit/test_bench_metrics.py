"""Benchmark pieces that need no model: metrics, suites, extractors, the report table."""

import json

import pytest

from specguard_integrations.bench.report import markdown
from specguard_integrations.bench.runner import (
    BenchResult,
    MethodSummary,
    Run,
    auroc,
    percentile,
    signal_quality,
)
from specguard_integrations.bench.suites import extract, load_suite, same_answer
from specguard_integrations.types import StepRecord


def test_auroc_matches_pairwise_definition():
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9], [True, True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    scores = [0.3, 0.7, 0.7, 0.2, 0.9, 0.4]
    labels = [True, False, True, False, True, False]
    pairs = [
        (p, q)
        for p, yp in zip(scores, labels, strict=True)
        if yp
        for q, yq in zip(scores, labels, strict=True)
        if not yq
    ]
    brute = sum((p > q) + 0.5 * (p == q) for p, q in pairs) / len(pairs)
    assert auroc(scores, labels) == pytest.approx(brute)
    assert auroc([1.0, 2.0], [True, True]) is None


def test_percentile_nearest_rank():
    xs = list(range(1, 11))
    assert percentile(xs, 0.9) == 9 and percentile(xs, 0.5) == 5 and percentile(xs, 1.0) == 10


def test_extractors_and_answer_comparison():
    assert extract("so 3 + 4 = 7\n\nAnswer: 7\n", "answer_line") == "7"
    assert extract("the total is 1,250 apples", "answer_line") == "1250"
    assert extract("a 3 b 12.5", "last_number") == "12.5"
    assert extract("result=<<42>>", r"re:<<(\d+)>>") == "42"
    with pytest.raises(ValueError, match="extractor"):
        extract("x", "bogus")
    assert same_answer("1,000", "1000") and same_answer("72.0", "72")
    assert not same_answer("71", "72") and not same_answer(None, "1")
    assert same_answer("Paris.", "paris")


def test_gsm8k_and_jsonl_suites(tmp_path):
    g = tmp_path / "gsm.jsonl"
    g.write_text(
        json.dumps({"question": "Tom has 3 and buys 4. How many?", "answer": "3+4=7\n#### 7"})
        + "\n\n"
        + json.dumps({"question": "Q2", "answer": "x\n#### 1,000"})
        + "\n"
    )
    items = load_suite(f"gsm8k:{g}", limit=5)
    assert [i.answer for i in items] == ["7", "1000"]
    assert items[0].prompt == "Question: Tom has 3 and buys 4. How many?\n"
    assert items[0].correct("3 + 4 = 7\n\nAnswer: 7\n") and not items[0].correct("Answer: 8")
    assert not items[0].has_step_labels and items[0].segmenter == "blank_line"
    assert len(load_suite(f"gsm8k:{g}", limit=5, offset=1)) == 1
    j = tmp_path / "qa.jsonl"
    j.write_text(json.dumps({"q": "Capital of France?", "a": "Paris"}) + "\n")
    qa = load_suite(
        f"jsonl:{j}", question_field="q", answer_field="a", prompt_template="Q: {question}\nA:"
    )
    assert qa[0].correct("Answer: Paris\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answer"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        load_suite(f"jsonl:{bad}")
    with pytest.raises(ValueError, match="####"):
        load_suite(f"gsm8k:{j}", question_field="q", answer_field="a")
    with pytest.raises(FileNotFoundError):
        load_suite(f"gsm8k:{tmp_path / 'none.jsonl'}")
    with pytest.raises(ValueError, match="unknown bundled"):
        load_suite("bundled:chess")
    with pytest.raises(ValueError, match="suite"):
        load_suite("csv:x")


def test_bundled_suite_offsets_are_disjoint():
    a = load_suite("bundled:arithmetic", limit=5)
    b = load_suite("bundled:arithmetic", limit=5, offset=5)
    assert not {i.prompt for i in a} & {i.prompt for i in b}


def _rec(i: int, fused: float, g: float | None, source: str = "draft") -> StepRecord:
    return StepRecord(
        step_index=i,
        text="x",
        source=source,
        num_tokens=1,
        decision="accept" if source == "draft" else "reject",
        signals="grounding+confidence",
        grounding=g,
        confidence=-fused,
        grounding_norm=g,
        confidence_norm=fused,
        fused=fused,
        threshold=0.5,
        beta=0.5,
        draft_text="x",
        draft_tokens=1,
        num_candidates=1,
        selected_candidate=0,
        finish="boundary",
    )


def test_signal_quality_and_markdown():
    runs = [
        Run(
            "sg",
            0,
            "arithmetic",
            True,
            0.1,
            3,
            [_rec(0, 0.9, 0.8), _rec(1, 0.2, 0.1, "target")],
            [True, False],
        ),
        Run("sg", 1, "equation", False, 0.2, 2, [_rec(0, 0.8, 0.3)], [False]),
    ]
    sq = signal_quality(runs)
    allrow = next(s for s in sq if s.family == "all")
    assert allrow.steps == 3 and allrow.auroc_fused == 1.0 and allrow.auroc_grounding == 1.0
    assert allrow.auroc_confidence == 0.0  # confidence = -fused in this hand-made set
    summary = MethodSummary(
        "sg",
        2,
        0.5,
        {"arithmetic": 1.0, "equation": 0.0},
        0.3,
        0.15,
        0.2,
        1.0,
        1 / 3,
        2 / 3,
        2,
        1,
        5,
        100.0,
    )
    table = markdown(BenchResult([summary], sq, runs))
    assert "| sg | 50.0% | 100% | 0% |" in table and "AUROC fused" in table


def test_a_constrained_config_is_refused_by_the_bench():
    import pytest

    from specguard_integrations import SpecGuardConfig
    from specguard_integrations.baselines.methods import build_methods

    cfg = SpecGuardConfig(constraint={"regex": "[0-9]+"})
    with pytest.raises(ValueError, match="carries a constraint"):
        build_methods(["target", "config"], None, None, cfg)  # type: ignore[arg-type]
