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

    from .types import GenerationResult

DEMO_PROMPTS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\n",
    "Question: A train travels 60 km in 1 hour. How far does it go in 3 hours?\n",
    "Question: Solve 2x + 3 = 11 for x.\n",
]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specguard", description="SpecGuard step-level speculative decoding."
    )
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run SpecGuard against the target alone and show each step")
    demo.add_argument("--draft", help="draft model id or directory (default: a tiny in-memory one)")
    demo.add_argument("--target", help="target model id or directory")
    demo.add_argument("--config", help="a SpecGuard config JSON file")
    demo.add_argument("--limit", type=int, default=3, help="number of prompts")
    demo.add_argument("--device", default="auto")
    gen = sub.add_parser("generate", help="generate from one prompt and print the step records")
    gen.add_argument("prompt")
    gen.add_argument("--draft", required=True)
    gen.add_argument("--target", required=True)
    gen.add_argument("--config", help="a SpecGuard config JSON file")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.add_argument("--device", default="auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "generate":
            return _generate(args)
    except (ValueError, FileNotFoundError) as err:
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
        from .testing import tiny_lm

        draft = tiny_lm("llama", seed=1, layers=2, hidden=32, name="tiny-draft (random)")
        target = tiny_lm("llama", seed=2, layers=6, hidden=128, name="tiny-target (random)")
        cfg = cfg or SpecGuardConfig(k=4, max_step_tokens=24, max_new_tokens=96)
    return SpecGuard(draft, target, cfg), cfg or SpecGuardConfig()


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    sg, _ = _load(args)
    prompts = DEMO_PROMPTS[: args.limit]
    results, baseline = [], []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("solving", total=len(prompts) * 2)
        for p in prompts:
            results.append(sg.generate(p))
            bar.advance(task)
            baseline.append(_target_only_time(sg, p, results[-1].output_tokens))
            bar.advance(task)
    for p, r in zip(prompts, results, strict=True):
        _show(console, p, r)
    spec = sum(r.wall_time for r in results)
    base = sum(baseline)
    steps = sum(r.num_steps for r in results)
    target_steps = sum(r.target_steps for r in results)
    console.print(
        f"[bold]Totals[/]: {steps} steps, target-call rate {target_steps / max(steps, 1):.2f}, "
        f"SpecGuard {spec:.2f}s vs target alone {base:.2f}s "
        f"(ratio {spec / base if base else float('nan'):.2f})"
    )
    return 0


def _target_only_time(sg: object, prompt: str, max_new_tokens: int) -> float:
    """Seconds the target alone takes, plain greedy `generate`, for the same number of tokens."""
    import time

    import torch

    lm = getattr(getattr(sg, "target", None), "lm", None)
    if lm is None:
        return 0.0
    ids = torch.tensor([lm.encode_prompt(prompt)], device=lm.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm.model.generate(
            ids,
            max_new_tokens=max(1, max_new_tokens),
            min_new_tokens=max(1, max_new_tokens),
            do_sample=False,
            pad_token_id=0,
        )
    return time.perf_counter() - t0


def _show(console: Console, prompt: str, r: GenerationResult) -> None:
    from rich.table import Table

    table = Table(title=prompt.strip(), title_justify="left", show_lines=False)
    for col in ("#", "source", "grounding", "confidence", "fused", "decision", "text"):
        table.add_column(col)
    for s in r.steps:
        colour = "green" if s.source == "draft" else "magenta"
        table.add_row(
            str(s.step_index),
            f"[{colour}]{s.source}[/]",
            "-" if s.grounding is None else f"{s.grounding:.3f}",
            f"{s.confidence:.2f}",
            f"{s.fused:.3f}",
            f"{s.decision} (tau {s.threshold})",
            repr(s.text[:48]),
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
        _show(console, args.prompt, result)
        console.print(result.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
