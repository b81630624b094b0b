"""What the `specguard` subcommands show: step tables, the demo, pair evaluation, benchmark and
calibration reports. Only the command line prints; these functions take its console."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console

    from ..backends.local.model import LocalCausalLM
    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuardEngine
    from ..types import StepRecord


def show_steps(console: Console, prompt: str, records: list[StepRecord]) -> None:
    from rich.table import Table

    table = Table(title=prompt.strip(), title_justify="left", show_lines=False)
    verified = any(s.target_score is not None for s in records)
    cols = ("#", "source", "grounding", "confidence", *(("target",) if verified else ()))
    for col in (*cols, "fused", "decision", "text"):
        table.add_column(col)
    for n, s in enumerate(records):
        colour = "green" if s.source == "draft" else "magenta"
        target = (
            () if not verified else ("-" if s.target_score is None else f"{s.target_score:.2f}",)
        )
        table.add_row(
            str(n),
            f"[{colour}]{s.source}[/]",
            "-" if s.grounding is None else f"{s.grounding:.3f}",
            f"{s.confidence:.2f}",
            *target,
            f"{s.fused:.3f}",
            f"{s.decision} (tau {s.threshold})",
            repr(s.text[:60]),
        )
    console.print(table)


def _local(engine: SpecGuardEngine, role: str, need: str) -> LocalCausalLM:
    """The pair's `role` model when it is a Hugging Face model in this process, else
    `ValueError` naming what needs it."""
    from ..backends.local.model import LocalCausalLM

    model = (engine.draft if role == "draft" else engine.target).local_model
    if not isinstance(model, LocalCausalLM):
        raise InvalidInputError(f"{need} needs a local {role} model")
    return model


def _local_target(engine: SpecGuardEngine) -> LocalCausalLM:
    return _local(engine, "target", "this command (it compares against the target alone)")


def demo(console: Console, engine: SpecGuardEngine, cfg: SpecGuardConfig, limit: int) -> int:
    from rich.progress import Progress

    from ..tasks import FAMILIES, make_split
    from ..tasks.runner import solve_plain, solve_specguard

    target = _local_target(engine)
    fams = list(FAMILIES)
    items = [make_split(fams[i % len(fams)], "test", 1 + i // len(fams))[-1] for i in range(limit)]
    spec, plain = [], []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("solving held-out problems", total=2 * len(items))
        solve_specguard(engine, items[0], cfg)  # warm-up, not timed
        for item in items:
            spec.append(solve_specguard(engine, item, cfg))
            bar.advance(task)
            plain.append(solve_plain(target, item))
            bar.advance(task)
    for s, p in zip(spec, plain, strict=True):
        show_steps(console, s.item.prompt, s.records)
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


def eval_pair(console: Console, engine: SpecGuardEngine, n: int, json_path: str | None) -> int:
    import json
    from dataclasses import asdict

    from rich.progress import Progress
    from rich.table import Table

    from ..tasks import FAMILIES
    from ..tasks.evaluate import evaluate_model

    lms = [_local(engine, "draft", "eval-pair"), _local_target(engine)]
    reports = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=2 * n * len(FAMILIES))
        for lm in lms:
            reports.append(evaluate_model(lm, n=n, progress=lambda: bar.advance(task)))
    table = Table(title=f"held-out, greedy, {n} items per family")
    for col in ("model", "params", *[f"{f} acc" for f in FAMILIES]):
        table.add_column(col)
    for col in ("mean acc", "well-formed steps", "ms/token"):
        table.add_column(col)
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
    if json_path:
        payload = [asdict(r) | {"mean_accuracy": r.mean_accuracy} for r in reports]
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    return 0


def bench(
    console: Console,
    args: argparse.Namespace,
    items: list[Any],
    engine: SpecGuardEngine,
    cfg: SpecGuardConfig,
) -> int:
    from rich.progress import Progress

    from ..baselines.methods import ProcessRewardModel, build_methods
    from ..bench.report import markdown, write_report
    from ..bench.runner import run_bench

    draft, target = _local(engine, "draft", "the benchmark"), _local_target(engine)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    prm = None
    if "rsd" in names:
        from ..assets import bundled_prm

        path = args.prm or (str(bundled_prm()) if not args.draft else None)
        if path is None:
            raise InvalidInputError("the rsd method needs --prm PATH for your own pair")
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
        draft=engine.draft.name,
        target=engine.target.name,
        config=cfg.model_dump(mode="json"),
        prm=None if prm is None else prm.name,
        prm_threshold=args.prm_threshold,
        command="specguard " + " ".join(sys.argv[1:]),
    )
    paths = write_report(result, args.out)
    console.print(markdown(result))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def calibrate(
    console: Console,
    args: argparse.Namespace,
    engine: SpecGuardEngine,
    cfg: SpecGuardConfig,
    items: list[Any] | None,
) -> int:
    from rich.progress import Progress

    from ..bench.calibrate import calibrate as fit
    from ..bench.calibrate import calibrate_unlabelled
    from ..bench.suites import read_prompts

    with Progress(console=console, transient=True) as bar:
        if items is None:  # the user's own prompts, no labels
            if args.target_rate is None:
                raise InvalidInputError(
                    "--prompts calibrates to --target-rate (there are no labels)"
                )
            prompts = read_prompts(args.prompts)
            task = bar.add_task("calibrating on your prompts", total=None)
            result = calibrate_unlabelled(
                engine,
                prompts,
                cfg,
                target_rate=args.target_rate,
                progress=lambda _w: bar.advance(task),
            )
        else:
            task = bar.add_task("calibrating", total=len(items) + args.shortlist)
            result = fit(
                engine,
                items,
                cfg,
                max_target_rate=args.max_target_rate,
                target_rate=args.target_rate,
                shortlist=args.shortlist,
                progress=lambda _w: bar.advance(task),
            )
    result.config.to_file(args.out, **result.extras())
    for c in result.candidates:
        mark = "->" if c is result.chosen else "  "
        acc = "n/a (no labels)" if c.accuracy is None else f"{c.accuracy:.1%}"
        gamma = "" if c.target_weight is None else f"gamma {c.target_weight:.2f} "
        console.print(
            f"{mark} {gamma}beta {c.beta:.2f} tau {c.tau:.3f}: dev accuracy {acc}, "
            f"target-call rate {c.target_call_rate:.2f} (predicted {c.predicted_target_rate:.2f})"
        )
    console.print(f"wrote {args.out}")
    return 0


def signal_study(
    console: Console,
    args: argparse.Namespace,
    items: list[Any],
    engine: SpecGuardEngine,
    cfg: SpecGuardConfig,
) -> int:
    from pathlib import Path

    from rich.progress import Progress

    from ..bench.signal_report import as_json, markdown
    from ..bench.signal_study import run_study

    _local(engine, "draft", "the signal study")
    ks = tuple(int(k) for k in args.k.split(",") if k.strip())
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"recording {len(items)} items", total=len(items))
        study = run_study(
            engine,
            items,
            cfg,
            ks=ks,
            selection_limit=args.selection_limit,
            boots=args.boots,
            progress=lambda what: bar.advance(task) if what == "record" else None,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = (
        f"specguard signals --suite {args.suite} --limit {args.limit} --offset {args.offset}"
        f" --k {args.k} --selection-limit {args.selection_limit} --boots {args.boots}"
        + "".join(
            f" --{k} {getattr(args, k)}" for k in ("draft", "target", "config") if getattr(args, k)
        )
        + "".join(
            f" --{k.replace('_', '-')} '{json.dumps(getattr(args, k))}'"
            for k in ("draft_kwargs", "target_kwargs")
            if getattr(args, k)
        )
    )
    text = (
        f"`{command}`: {len(items)} items, {len(study.rows)} labelled draft steps, heads chosen"
        f" on dev: {list(study.heads)}\n\n" + markdown(study.cells, study.fusions, study.selections)
    )
    (out / "signals.md").write_text(text, encoding="utf-8")
    data = as_json(study.cells, study.fusions, study.selections) | {
        "heads": list(study.heads),
        "steps": len(study.rows),
        "items": len(items),
    }
    (out / "signals.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    with (out / "steps.jsonl").open("w", encoding="utf-8") as f:  # every step, to re-analyse
        for row in study.rows:
            keep = {k: v for k, v in row.values.items() if not k.startswith("head:")}
            f.write(
                json.dumps(
                    {
                        "family": row.family,
                        "item": row.item,
                        "index": row.index,
                        "split": row.split,
                        "label": row.label,
                        "text": row.text,
                        "values": keep,
                    }
                )
                + "\n"
            )
    console.print(text)
    console.print(f"written to {out}/signals.md, signals.json and steps.jsonl")
    return 0
