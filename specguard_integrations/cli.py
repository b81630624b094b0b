"""The `specguard` command. Only this edge prints; everything it shows comes from engine records.

`specguard --help` imports neither torch nor any framework: subcommands import what they need.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from .types import StepRecord


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specguard", description="SpecGuard step-level speculative decoding."
    )
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run SpecGuard against the target alone and show each step")
    demo.add_argument("--draft", help="draft model id or directory (default: the bundled pair)")
    demo.add_argument("--target", help="target model id or directory")
    demo.add_argument("--config", help="a SpecGuard config JSON file")
    demo.add_argument("--limit", type=int, default=4, help="held-out problems (one per family)")
    demo.add_argument("--device", default="auto")
    trace = sub.add_parser("trace", help="trace files")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    view = trace_sub.add_parser("view", help="write an HTML report (and PNG plots) of a trace file")
    view.add_argument("file", help="a JSONL trace file")
    view.add_argument("--out", help="output folder (default: FILE without .jsonl + _report)")
    ev = sub.add_parser("eval-pair", help="accuracy, well-formed steps and latency of each model")
    ev.add_argument("--draft", help="draft model id or directory (default: the bundled pair)")
    ev.add_argument("--target", help="target model id or directory")
    ev.add_argument("-n", type=int, default=50, help="held-out items per family")
    ev.add_argument("--json", help="also write the report to this JSON file")
    ev.add_argument("--device", default="cpu")
    gen = sub.add_parser("generate", help="generate from one prompt and print the step records")
    gen.add_argument("prompt")
    gen.add_argument("--draft", required=True)
    gen.add_argument("--target", required=True)
    gen.add_argument("--config", help="a SpecGuard config JSON file")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.add_argument("--device", default="auto")
    bench = sub.add_parser("bench", help="SpecGuard against its baselines on the same prompts")
    _suite_args(bench)
    bench.add_argument(
        "--methods",
        default="target,draft,assisted,rsd,confidence,specguard-greedy,specguard,config",
        help="comma-separated: target, draft, assisted, rsd, confidence, specguard-greedy,"
        " specguard, config",
    )
    bench.add_argument("--prm", help="process reward model for rsd (default: the bundled PRM)")
    bench.add_argument("--prm-threshold", type=float, default=0.5)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", default="bench_out", help="folder for bench.md/.json and plots")
    cal = sub.add_parser("calibrate", help="fit bounds, beta and tau on a dev split")
    _suite_args(cal, offset=400)
    goal = cal.add_mutually_exclusive_group(required=True)
    goal.add_argument("--max-target-rate", type=float, help="best accuracy at most this rate")
    goal.add_argument("--target-rate", type=float, help="reach this target-call rate")
    cal.add_argument("--shortlist", type=int, default=6, help="configs run end to end")
    cal.add_argument("--out", required=True, help="config file to write")
    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server running SpecGuard")
    srv.add_argument(
        "--mode",
        choices=("specguard", "plain"),
        default="specguard",
        help="specguard: the step loop; plain: one model alone (--model), e.g. a remote target",
    )
    srv.add_argument("--draft", help="draft model id or directory (default: the bundled pair)")
    srv.add_argument("--target", help="target model id or directory")
    srv.add_argument("--model", help="plain mode: the model (default: the bundled target)")
    srv.add_argument("--target-endpoint", help="base URL of an OpenAI-compatible target server")
    srv.add_argument("--target-model", help="the target's name on --target-endpoint")
    srv.add_argument("--target-api", choices=("completions", "chat"), default="completions")
    srv.add_argument("--config", help="a SpecGuard config JSON file")
    srv.add_argument("--served-model-name", help="model name clients ask for")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1, help="generations run at once")
    srv.add_argument("--max-queue", type=int, default=32, help="requests waiting beyond workers")
    srv.add_argument("--max-body-bytes", type=int, default=1_000_000)
    srv.add_argument("--grace", type=float, default=30.0, help="seconds to finish on shutdown")
    srv.add_argument("--device", default="auto")
    srv.add_argument("--log-level", default="info")
    return p


def _suite_args(p: argparse.ArgumentParser, offset: int = 0) -> None:
    p.add_argument("--suite", default="bundled", help="bundled[:fam,...], gsm8k:PATH, jsonl:PATH")
    p.add_argument("--limit", type=int, default=15, help="items per bundled family / in a file")
    p.add_argument("--offset", type=int, default=offset, help="items skipped first")
    p.add_argument("--prompt-template", default="Question: {question}\n")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--extractor", default="answer_line", help="answer_line, last_number, re:PAT")
    p.add_argument("--draft", help="draft model id or directory (default: the bundled pair)")
    p.add_argument("--target", help="target model id or directory")
    p.add_argument("--config", help="a SpecGuard config JSON file (default: the bundled one)")
    p.add_argument("--device", default="cpu")


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "eval-pair":
            return _eval_pair(args)
        if args.command == "trace":
            return _trace_view(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "calibrate":
            return _calibrate(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"specguard: error: {err}", file=sys.stderr)
        return 2
    return 1


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .config import SpecGuardConfig
    from .engine.lm import LocalCausalLM
    from .engine.loop import SpecGuard

    cfg = SpecGuardConfig.from_file(args.config) if args.config else None
    if args.draft and args.target:
        draft = LocalCausalLM.from_pretrained(args.draft, device=args.device)
        target = LocalCausalLM.from_pretrained(args.target, device=args.device)
    elif args.draft or args.target:
        raise ValueError("give both --draft and --target, or neither")
    else:
        from .assets import DEFAULT_CONFIG
        from .registry import get_engine

        cfg = cfg or SpecGuardConfig.from_file(DEFAULT_CONFIG)
        engine = get_engine(None, None, cfg, device=args.device)
        return engine, cfg
    return SpecGuard(draft, target, cfg), cfg or SpecGuardConfig()


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .engine.lm import LocalCausalLM
    from .tasks import FAMILIES, make_split
    from .tasks.runner import solve_plain, solve_specguard

    console = Console()
    sg, cfg = _load(args)
    target_lm = getattr(sg.target, "lm", None)
    if not isinstance(target_lm, LocalCausalLM):
        raise ValueError("the demo compares against a local target model")
    fams = list(FAMILIES)
    items = [
        make_split(fams[i % len(fams)], "test", 1 + i // len(fams))[-1] for i in range(args.limit)
    ]
    spec, plain = [], []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("solving held-out problems", total=2 * len(items))
        solve_specguard(sg, items[0], cfg)  # warm-up, not timed
        for item in items:
            spec.append(solve_specguard(sg, item, cfg))
            bar.advance(task)
            plain.append(solve_plain(target_lm, item))
            bar.advance(task)
    for s, p in zip(spec, plain, strict=True):
        _show(console, s.item.prompt, s.records)
        mark = "[green]correct[/]" if s.correct else "[red]wrong[/]"
        console.print(
            f"SpecGuard answer {mark} ({s.seconds:.2f}s); target alone "
            f"{'correct' if p.correct else 'wrong'} ({p.seconds:.2f}s)\n"
        )
    steps = [r for s in spec for r in s.records]
    t_spec = sum(s.seconds for s in spec)
    t_plain = sum(p.seconds for p in plain)
    console.print(
        f"[bold]Totals[/] over {len(items)} problems: {len(steps)} steps, target-call rate "
        f"{sum(r.source == 'target' for r in steps) / max(len(steps), 1):.2f}; accuracy "
        f"SpecGuard {sum(s.correct for s in spec)}/{len(items)}, target alone "
        f"{sum(p.correct for p in plain)}/{len(items)}; time SpecGuard {t_spec:.2f}s, target "
        f"alone {t_plain:.2f}s (ratio {t_spec / t_plain if t_plain else float('nan'):.2f})"
    )
    return 0


def _trace_view(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tracing import read_trace
    from .tracing.report import write_report

    src = Path(args.file)
    runs = read_trace(src)
    out = Path(args.out) if args.out else src.with_name(src.stem + "_report")
    page = write_report(runs, out, title=f"SpecGuard trace: {src.name}")
    print(f"{len(runs)} runs, {sum(len(r.steps) for r in runs)} steps -> {page}")
    return 0


def _eval_pair(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .registry import load_lm, resolve
    from .tasks import FAMILIES
    from .tasks.evaluate import evaluate_model

    console = Console()
    if bool(args.draft) != bool(args.target):
        raise ValueError("give both --draft and --target, or neither")
    lms = [
        load_lm(resolve(args.draft, "draft"), device=args.device),
        load_lm(resolve(args.target, "target"), device=args.device),
    ]
    reports = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=2 * args.n * len(FAMILIES))
        for lm in lms:
            reports.append(evaluate_model(lm, n=args.n, progress=lambda: bar.advance(task)))
    table = Table(title=f"held-out, greedy, {args.n} items per family")
    table.add_column("model")
    table.add_column("params")
    for fam in FAMILIES:
        table.add_column(f"{fam} acc")
    table.add_column("mean acc")
    table.add_column("well-formed steps")
    table.add_column("ms/token")
    for r in reports:
        table.add_row(
            r.name,
            f"{r.params / 1e6:.2f}M",
            *[f"{r.accuracy[f]:.0%}" for f in FAMILIES],
            f"{r.mean_accuracy:.1%}",
            f"{r.mean_well_formed:.1%}",
            f"{r.ms_per_token:.2f}",
        )
    console.print(table)
    draft, target = reports
    console.print(
        f"target/draft per-token latency: {target.ms_per_token / draft.ms_per_token:.2f}x; "
        f"accuracy gap: {100 * (target.mean_accuracy - draft.mean_accuracy):.1f} points"
    )
    if args.json:
        payload = [asdict(r) | {"mean_accuracy": r.mean_accuracy} for r in reports]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    return 0


def _show(console: Console, prompt: str, records: list[StepRecord]) -> None:
    from rich.table import Table

    table = Table(title=prompt.strip(), title_justify="left", show_lines=False)
    for col in ("#", "source", "grounding", "confidence", "fused", "decision", "text"):
        table.add_column(col)
    for n, s in enumerate(records):
        colour = "green" if s.source == "draft" else "magenta"
        table.add_row(
            str(n),
            f"[{colour}]{s.source}[/]",
            "-" if s.grounding is None else f"{s.grounding:.3f}",
            f"{s.confidence:.2f}",
            f"{s.fused:.3f}",
            f"{s.decision} (tau {s.threshold})",
            repr(s.text[:60]),
        )
    console.print(table)


def _generate(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    sg, _ = _load(args)
    result = sg.generate(args.prompt)
    if args.json:
        payload = result.model_dump(mode="json") | {"summary": result.summary()}
        print(json.dumps(payload, indent=2))
    else:
        console = Console()
        _show(console, args.prompt, result.steps)
        console.print(result.text)
    return 0


def _suite(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .bench.suites import load_suite

    return load_suite(
        args.suite,
        limit=args.limit,
        offset=args.offset,
        prompt_template=args.prompt_template,
        question_field=args.question_field,
        answer_field=args.answer_field,
        extractor=args.extractor,
    )


def _pair(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .assets import DEFAULT_CONFIG
    from .config import SpecGuardConfig
    from .registry import load_lm, resolve

    if bool(args.draft) != bool(args.target):
        raise ValueError("give both --draft and --target, or neither")
    draft = load_lm(resolve(args.draft, "draft"), device=args.device)
    target = load_lm(resolve(args.target, "target"), device=args.device)
    if args.config:
        cfg = SpecGuardConfig.from_file(args.config)
    elif args.draft:
        cfg = SpecGuardConfig()
    else:
        cfg = SpecGuardConfig.from_file(DEFAULT_CONFIG)
    return draft, target, cfg


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .baselines import ProcessRewardModel, build_methods
    from .bench.report import markdown, write_report
    from .bench.runner import run_bench

    console = Console()
    items = _suite(args)
    draft, target, cfg = _pair(args)
    cfg = cfg.merged(seed=args.seed)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    prm = None
    if "rsd" in names:
        from .assets import bundled_prm

        path = args.prm or (str(bundled_prm()) if not args.draft else None)
        if path is None:
            raise ValueError("the rsd method needs --prm PATH for your own pair")
        prm = ProcessRewardModel.from_pretrained(path, device=args.device)
    import torch

    torch.manual_seed(args.seed)
    methods = build_methods(names, draft, target, cfg, prm=prm, prm_threshold=args.prm_threshold)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(
            f"{len(items)} items x {len(methods)} methods", total=len(items) * len(methods)
        )
        result = run_bench(
            items, methods, progress=lambda _m: bar.advance(task), device=args.device
        )
    result.meta.update(
        suite=args.suite,
        limit=args.limit,
        offset=args.offset,
        seed=args.seed,
        draft=draft.name,
        target=target.name,
        config=cfg.model_dump(mode="json"),
        prm=None if prm is None else prm.name,
        prm_threshold=args.prm_threshold,
        command="specguard " + " ".join(sys.argv[1:]),
    )
    paths = write_report(result, args.out)
    console.print(markdown(result))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .bench.calibrate import calibrate
    from .engine.loop import SpecGuard

    console = Console()
    items = _suite(args)
    draft, target, cfg = _pair(args)
    engine = SpecGuard(draft, target, cfg)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("calibrating", total=len(items) + args.shortlist)
        result = calibrate(
            engine,
            items,
            cfg,
            max_target_rate=args.max_target_rate,
            target_rate=args.target_rate,
            shortlist=args.shortlist,
            progress=lambda what: bar.advance(task),
        )
    result.config.to_file(args.out, **result.extras())
    for c in result.candidates:
        mark = "->" if c is result.chosen else "  "
        console.print(
            f"{mark} beta {c.beta:.2f} tau {c.tau:.3f}: dev accuracy {c.accuracy:.1%}, "
            f"target-call rate {c.target_call_rate:.2f} (predicted {c.predicted_target_rate:.2f})"
        )
    console.print(f"wrote {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .registry import load_lm, resolve
    from .server import PlainServed, ServedModel, SpecGuardServed, serve

    served: ServedModel
    if args.mode == "plain":
        lm = load_lm(resolve(args.model, "target"), device=args.device)
        served = PlainServed(lm, args.served_model_name)
    else:
        from .config import SpecGuardConfig
        from .engine.loop import SpecGuard

        if args.target_endpoint:
            from .engine.remote import EndpointTarget

            if not args.target_model:
                raise ValueError("--target-endpoint needs --target-model")
            cfg = SpecGuardConfig.from_file(args.config) if args.config else SpecGuardConfig()
            target = EndpointTarget(args.target_endpoint, args.target_model, api=args.target_api)
            draft = load_lm(resolve(args.draft, "draft"), device=args.device)
            engine = SpecGuard(draft, target, cfg)
        else:
            engine, cfg = _load(args)
        served = SpecGuardServed(engine, cfg, args.served_model_name or "specguard")
    serve(
        served,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        grace=args.grace,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
