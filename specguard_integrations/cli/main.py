"""The `specguard` command. Only this edge prints; everything it shows comes from engine records.

`specguard --help` imports neither torch nor any framework: subcommands import what they need.
Each subcommand is a function registered with ``set_defaults(func=...)``; reports that need more
than a few lines live in `cli.report`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import SpecGuardError

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuardEngine

Command = Callable[[argparse.Namespace], int]


def _json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (loading options such as '{"gguf_file": "m.gguf"}')."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _pair_args(p: argparse.ArgumentParser, device: str = "auto") -> None:
    p.add_argument("--draft", help="draft model id or directory (default: the bundled pair)")
    p.add_argument("--target", help="target model id or directory (default: the bundled pair)")
    p.add_argument(
        "--draft-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='from_pretrained options of the draft, e.g. \'{"gguf_file": "m.gguf"}\'',
    )
    p.add_argument(
        "--target-kwargs", type=_json_object, default=None, metavar="JSON", help="same, target"
    )
    p.add_argument("--config", help="a SpecGuard config JSON file (default: the pair's own)")
    p.add_argument(
        "--judge",
        choices=("draft", "target"),
        help="step 4's judge over the config's: the draft's fused signals, or the"
        " target-verified judge (the target's log-probabilities of each step)",
    )
    p.add_argument("--device", default=device)
    p.add_argument(
        "--dtype",
        default="auto",
        help="torch dtype of both models: auto (bfloat16 on CUDA, float32 on CPU), float32,"
        " bfloat16, float16",
    )


def _suite_args(p: argparse.ArgumentParser, offset: int = 0) -> None:
    p.add_argument(
        "--suite", default="bundled", help="bundled[:fam,...], words, gsm8k:PATH, jsonl:PATH"
    )
    p.add_argument("--limit", type=int, default=15, help="items per bundled family / in a file")
    p.add_argument("--offset", type=int, default=offset, help="items skipped first")
    p.add_argument("--prompt-template", default="Question: {question}\n")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--extractor", default="answer_line", help="answer_line, last_number, re:PAT")
    _pair_args(p, device="cpu")


def _build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="specguard", description="SpecGuard step-level speculative decoding."
    )
    p.add_argument("--version", action="version", version=f"specguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run SpecGuard against the target alone and show each step")
    _pair_args(demo)
    demo.add_argument("--limit", type=int, default=4, help="held-out problems (families in turn)")
    demo.set_defaults(func=_demo)

    gen = sub.add_parser("generate", help="generate from one prompt and print the step records")
    gen.add_argument("prompt")
    _pair_args(gen)
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(func=_generate)

    ev = sub.add_parser("eval-pair", help="accuracy, well-formed steps and latency of each model")
    _pair_args(ev, device="cpu")
    ev.add_argument("-n", type=int, default=50, help="held-out items per family")
    ev.add_argument("--json", help="also write the report to this JSON file")
    ev.set_defaults(func=_eval_pair)

    trace = sub.add_parser("trace", help="trace files")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    view = trace_sub.add_parser("view", help="write an HTML report (and PNG plots) of a trace file")
    view.add_argument("file", help="a JSONL trace file")
    view.add_argument("--out", help="output folder (default: FILE without .jsonl + _report)")
    view.set_defaults(func=_trace_view)

    _add_study_commands(sub)

    from ..server.run import add_serve_args

    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server running SpecGuard")
    _pair_args(srv)
    add_serve_args(srv)
    srv.set_defaults(func=_serve)
    return p


def _add_study_commands(sub: Any) -> None:
    """bench, calibrate and signals: the commands that run a suite."""
    from ..baselines.methods import METHOD_NAMES

    bench = sub.add_parser("bench", help="SpecGuard against its baselines on the same prompts")
    _suite_args(bench)
    bench.add_argument(
        "--methods",
        default=",".join(METHOD_NAMES),
        help=f"comma-separated: {', '.join(METHOD_NAMES)}, config:PATH",
    )
    bench.add_argument("--prm", help="process reward model for rsd (default: the bundled PRM)")
    bench.add_argument("--prm-threshold", type=float, default=0.5)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", default="bench_out", help="folder for bench.md/.json and plots")
    bench.set_defaults(func=_bench)

    cal = sub.add_parser("calibrate", help="fit bounds, beta and tau (labelled or not)")
    _suite_args(cal, offset=400)
    cal.add_argument(
        "--prompts",
        help="a file of your own prompts (JSONL with a prompt field, or one per line): fit without"
        " labels to --target-rate",
    )
    goal = cal.add_mutually_exclusive_group(required=True)
    goal.add_argument("--max-target-rate", type=float, help="best accuracy at most this rate")
    goal.add_argument("--target-rate", type=float, help="reach this target-call rate")
    cal.add_argument("--shortlist", type=int, default=6, help="configs run end to end")
    cal.add_argument("--out", required=True, help="config file to write")
    cal.set_defaults(func=_calibrate)

    sig = sub.add_parser("signals", help="the signal study: AUROC of every draft-signal variant")
    _suite_args(sig, offset=200)
    sig.add_argument("--k", default="4,16", help="candidate counts for selection accuracy")
    sig.add_argument("--selection-limit", type=int, default=40, help="contexts sampled per k")
    sig.add_argument("--boots", type=int, default=1000, help="bootstrap resamples")
    sig.add_argument("--out", default="signals_out", help="folder for signals.md and .json")
    sig.set_defaults(func=_signals)


def _show_warnings() -> None:
    """The library logs; the command shows its warnings on stderr, once."""
    import logging

    class Stderr(logging.StreamHandler):
        @property
        def stream(self) -> Any:  # whatever stderr is now (tests capture it)
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    log = logging.getLogger("specguard_integrations")
    if not any(type(h).__name__ == "Stderr" for h in log.handlers):
        handler = Stderr()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("specguard: warning: %(message)s"))
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    _show_warnings()
    try:
        return int(args.func(args))
    except (SpecGuardError, ValueError, OSError, ImportError) as err:
        print(f"specguard: error: {err}", file=sys.stderr)
        return 2


def console() -> Console:
    """A console that keeps full rows when piped (rich would cut tables to 80 columns)."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=200)


def load(args: argparse.Namespace) -> tuple[SpecGuardEngine, SpecGuardConfig]:
    """The pair the arguments name (the bundled one by default) and the config it runs with."""
    from ..registry import build_pair

    engine = build_pair(
        args.draft,
        args.target,
        config_file=args.config,
        device=args.device,
        dtype=args.dtype,
        draft_kwargs=args.draft_kwargs,
        target_kwargs=args.target_kwargs,
        judge=args.judge,
    )
    return engine, engine.config


def _demo(args: argparse.Namespace) -> int:
    from .report import demo

    engine, cfg = load(args)
    return demo(console(), engine, cfg, args.limit)


def _generate(args: argparse.Namespace) -> int:
    from .report import show_steps

    engine, _ = load(args)
    result = engine.generate(args.prompt)
    if args.json:
        print(json.dumps(result.model_dump(mode="json") | {"summary": result.summary()}, indent=2))
    else:
        out = console()
        show_steps(out, args.prompt, result.steps)
        out.print(result.text)
    return 0


def _eval_pair(args: argparse.Namespace) -> int:
    from .report import eval_pair

    engine, _ = load(args)
    return eval_pair(console(), engine, args.n, args.json)


def _trace_view(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..tracing import read_trace
    from ..tracing.report import write_report

    src = Path(args.file)
    runs = read_trace(src)
    out = Path(args.out) if args.out else src.with_name(src.stem + "_report")
    page = write_report(runs, out, title=f"SpecGuard trace: {src.name}")
    failed = [r for r in runs if r.error is not None]
    errored = f" ({len(failed)} failed)" if failed else ""
    print(f"{len(runs)} runs{errored}, {sum(len(r.steps) for r in runs)} steps -> {page}")
    for run in failed:
        print(f"  run {run.run_id}: error: {run.error}")
    return 0


SUITE_OPTIONS = (
    "limit",
    "offset",
    "prompt_template",
    "question_field",
    "answer_field",
    "extractor",
)


def _suite(args: argparse.Namespace) -> list[Any]:
    from ..bench.suites import load_suite

    return load_suite(args.suite, **{k: getattr(args, k) for k in SUITE_OPTIONS})


def _bench(args: argparse.Namespace) -> int:
    from .report import bench

    engine, cfg = load(args)
    return bench(console(), args, _suite(args), engine, cfg.merged(seed=args.seed))


def _calibrate(args: argparse.Namespace) -> int:
    from .report import calibrate

    engine, cfg = load(args)
    items = None if args.prompts else _suite(args)
    return calibrate(console(), args, engine, cfg, items)


def _signals(args: argparse.Namespace) -> int:
    from .report import signal_study

    engine, cfg = load(args)
    return signal_study(console(), args, _suite(args), engine, cfg)


def _serve(args: argparse.Namespace) -> int:
    from ..server.run import serve_from_args

    return serve_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
