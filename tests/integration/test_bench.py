"""`specguard bench` and `specguard calibrate` on the bundled pair (few items: behaviour, not
figures; the figures come from the command in docs/benchmark.md)."""

import json

import pytest

from specguard_integrations import SpecGuard
from specguard_integrations.assets import DEFAULT_CONFIG, bundled_pair, bundled_prm
from specguard_integrations.baselines import ProcessRewardModel, build_methods
from specguard_integrations.bench.calibrate import calibrate
from specguard_integrations.bench.report import write_report
from specguard_integrations.bench.runner import run_bench
from specguard_integrations.bench.suites import load_suite
from specguard_integrations.cli import main
from specguard_integrations.config import SpecGuardConfig
from specguard_integrations.registry import load_lm


@pytest.fixture(scope="module")
def pair():
    d, t = bundled_pair()
    return load_lm(str(d), device="cpu"), load_lm(str(t), device="cpu")


@pytest.fixture(scope="module")
def cfg():
    return SpecGuardConfig.from_file(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def result(pair, cfg):
    items = load_suite("bundled", limit=2)
    prm = ProcessRewardModel.from_pretrained(str(bundled_prm()))
    names = ["target", "draft", "assisted", "rsd", "confidence", "config"]
    methods = build_methods(names, *pair, cfg, prm=prm, prm_threshold=0.5)
    return items, run_bench(items, methods)


def test_every_method_runs_every_item_once(result):
    items, res = result
    assert [m.name for m in res.methods] == [
        "target",
        "draft",
        "assisted",
        "rsd",
        "confidence",
        "config",
    ]
    for m in res.methods:
        runs = [r for r in res.runs if r.method == m.name]
        assert sorted(r.item for r in runs) == list(range(len(items)))
        assert m.items == len(items) and 0.0 <= m.accuracy <= 1.0
        assert m.median_s <= m.p90_s <= m.total_s and m.peak_memory_mib > 0
    assert res.summary("target").speed_vs_target == pytest.approx(1.0)
    # interleaving: the first method differs between consecutive items
    firsts = [next(r.method for r in res.runs if r.item == i) for i in range(len(items))]
    assert len(set(firsts[:2])) == 2


def test_assisted_generation_is_lossless_against_the_target(result, pair):
    items, res = result
    target = {r.item: r.correct for r in res.runs if r.method == "target"}
    assisted = {r.item: r.correct for r in res.runs if r.method == "assisted"}
    assert assisted == target
    from specguard_integrations.tasks.runner import solve_plain

    d, t = pair
    for it in items[:3]:
        assert solve_plain(t, it, assistant=d).completion == solve_plain(t, it).completion


def test_loop_methods_record_steps_and_rsd_scores_with_the_prm(result):
    _, res = result
    for name in ("rsd", "confidence", "config"):
        m = res.summary(name)
        assert m.target_call_rate is not None and m.draft_tokens is not None
        assert m.accepted_draft_rate == pytest.approx(1 - m.target_call_rate)
    rsd = [s for r in res.runs if r.method == "rsd" for s in r.steps]
    assert rsd and all(s.signals == "reward_model" and 0.0 <= s.fused <= 1.0 for s in rsd)
    assert all((s.fused >= 0.5) == (s.decision == "accept") for s in rsd)
    conf = [s for r in res.runs if r.method == "confidence" for s in r.steps]
    assert all(s.signals == "confidence_only" and s.grounding_norm is None for s in conf)
    fams = {s.family for s in res.signals if s.method == "config"}
    assert {"arithmetic", "tools", "all"} <= fams
    plain = res.summary("target")
    assert plain.target_call_rate == 1.0 and plain.target_tokens == plain.output_tokens


def test_report_files(result, tmp_path):
    _, res = result
    paths = write_report(res, tmp_path)
    assert paths["markdown"].read_text().startswith("| method |")
    data = json.loads(paths["json"].read_text())
    assert {m["name"] for m in data["methods"]} >= {"target", "rsd"}
    assert paths["accuracy_latency"].stat().st_size > 1000
    assert paths["score_distributions"].stat().st_size > 1000


def test_calibrate_hits_a_requested_rate_and_writes_a_usable_config(pair, cfg, tmp_path):
    engine = SpecGuard(*pair, cfg)
    dev = load_suite("bundled:arithmetic,equation", limit=3, offset=400)
    res = calibrate(engine, dev, cfg, target_rate=0.3, shortlist=3)
    lo, hi = res.config.confidence_bounds
    assert lo < hi <= 0.0
    assert res.chosen in res.candidates and len(res.candidates) == 3
    best = min(abs(c.target_call_rate - 0.3) for c in res.candidates)
    assert abs(res.chosen.target_call_rate - 0.3) == best
    path = tmp_path / "cal.json"
    res.config.to_file(path, **res.extras())
    loaded = SpecGuardConfig.from_file(path)
    assert loaded == res.config
    assert json.loads(path.read_text())["calibration"]["dev_items"] == 6
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(engine, dev, cfg)


def test_bench_cli(tmp_path, capsys):
    out = tmp_path / "b"
    code = main(
        [
            "bench",
            "--suite",
            "bundled:arithmetic",
            "--limit",
            "1",
            "--methods",
            "target,config",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "bench.md").is_file() and "config" in capsys.readouterr().out
    assert main(["bench", "--methods", "nope", "--limit", "1"]) == 2


def test_calibrate_cli_writes_a_config_the_bench_accepts(tmp_path):
    out = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                "--suite",
                "bundled:equation",
                "--limit",
                "2",
                "--shortlist",
                "1",
                "--max-target-rate",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cfg = SpecGuardConfig.from_file(out)
    assert cfg.k == 1 and cfg.confidence_bounds[0] < cfg.confidence_bounds[1]
    res = tmp_path / "b"
    assert (
        main(
            [
                "bench",
                "--suite",
                "bundled:equation",
                "--limit",
                "1",
                "--methods",
                f"config:{out}",
                "--out",
                str(res),
            ]
        )
        == 0
    )
    assert "config:cal" in (res / "bench.md").read_text()


def test_calibrate_fits_the_target_verified_judge_labelled_and_not(pair, cfg, tmp_path):
    from specguard_integrations.bench.calibrate import calibrate_unlabelled

    # a config that already has a band: calibration starts from every step verified
    base = cfg.merged(judge="target", target_band=(0.45, 0.55))
    engine = SpecGuard(*pair, base)
    dev = load_suite("bundled:arithmetic,multihop", limit=3, offset=400)
    res = calibrate(engine, dev, base, max_target_rate=0.5, shortlist=3)
    assert res.config.target_band != (0.45, 0.55)
    assert all(c.target_band is None for c in res.candidates[:3])  # measured without one
    t_lo, t_hi = res.config.target_bounds
    assert t_lo < t_hi <= 0.0 and (t_lo, t_hi) != base.target_bounds  # fitted on the steps
    assert res.config.judge == "target" and res.chosen.target_weight is not None
    assert res.config.target_weight == res.chosen.target_weight
    assert {c.target_weight for c in res.candidates} <= {1.0, 0.8, 0.6, 0.4}
    # the chosen config runs as measured: its steps carry the target's score, those in the
    # band where one was fitted (stage 4: measured beside the shortlist, taken when faster)
    banded = [c for c in res.candidates if c.target_band is not None]
    assert len(banded) <= 1 and all(c.target_band != (0.0, 1.0) for c in banded)
    lo, hi = res.config.target_band
    steps = [s for it in dev for s in engine.generate(it.prompt, config=res.config).steps]
    for s in steps:
        g = s.grounding_norm
        r_draft = (
            s.confidence_norm
            if g is None
            else (res.config.beta * s.confidence_norm + (1 - res.config.beta) * g)
        )
        inside = lo - 1e-9 <= r_draft <= hi + 1e-9
        assert (s.target_score is not None) == inside, (r_draft, lo, hi)
        assert (s.signals == "target_verified") == inside
    # label-free: tau by bisection on the measured rate, gamma as given
    free = calibrate_unlabelled(
        engine,
        [it.prompt for it in dev],
        base.merged(target_weight=0.8, target_band=(0.0, 1.0)),
        target_rate=0.4,
    )
    assert free.config.target_weight == 0.8 and free.chosen.target_weight == 0.8
    assert free.config.target_bounds[0] < free.config.target_bounds[1]
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--suite", "bundled:equation", "--limit", "2", "--shortlist", "1"]
    assert main([*argv, "--judge", "target", "--max-target-rate", "0.5", "--out", str(out)]) == 0
    assert SpecGuardConfig.from_file(out).judge == "target"
