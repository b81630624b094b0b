"""A self-contained HTML report of trace runs (no scripts, no external assets), and PNG plots.

Per run: its status (finished, failed with its error, or unfinished), the generated text with
draft steps and target steps coloured (a rejected draft step is shown struck through beside the
target's rewrite), an SVG chart of the normalised grounding, normalised confidence and fused score
per step against tau, and the totals.
"""

from __future__ import annotations

import contextlib
import html
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from .records import TraceRun

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px} h2{font-size:17px;margin-top:32px}
.totals{font-size:13px;color:#444} .totals b{color:#000}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:13px;
 border:1px solid #ddd;padding:10px;border-radius:6px;line-height:1.5}
.draft{background:#d9f2dc} .target{background:#f6d5f0}
.rejected{color:#999;text-decoration:line-through}
.legend span{display:inline-block;padding:1px 8px;margin-right:8px;border-radius:4px;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin-top:8px}
td,th{border:1px solid #ddd;padding:3px 6px}
.status{font-size:13px;padding:4px 8px;border-radius:4px;display:inline-block;margin:0}
.status-finished{background:#eef6ee} .status-unfinished{background:#fff4d6}
.status-error{background:#fde2e1;color:#8a1010;font-weight:bold}
section.errored{border-left:4px solid #c62828;padding-left:12px}
"""
_SERIES = (
    ("grounding_norm", "#2b7bba", "g~"),
    ("confidence_norm", "#e08a1e", "l~"),
    ("target_norm", "#7b3fb8", "t~"),
    ("fused", "#222222", "r"),
)


def _chart(run: TraceRun, width: int = 720, height: int = 220) -> str:
    """SVG line chart of g~, l~, t~ (the target-verified judge) and r per step, with the tau
    line and decision markers."""
    steps = run.steps
    pad_l, pad_r, pad_t, pad_b = 40, 16, 12, 28
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    n = max(len(steps) - 1, 1)

    def x(i: int) -> float:
        return pad_l + w * i / n

    def y(v: float) -> float:
        return pad_t + h * (1 - max(0.0, min(1.0, v)))

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="step scores">'
    ]
    for v in (0.0, 0.5, 1.0):
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="4" y="{y(v) + 4:.1f}" font-size="11">{v:.1f}</text>')
    tau = steps[0].threshold if steps else 0.0
    parts.append(
        f'<line class="tau" x1="{pad_l}" x2="{pad_l + w}" y1="{y(tau):.1f}" '
        f'y2="{y(tau):.1f}" stroke="#c0392b" stroke-dasharray="5,4"/>'
    )
    parts.append(
        f'<text x="{pad_l + w - 40}" y="{y(tau) - 4:.1f}" font-size="11" '
        f'fill="#c0392b">tau {tau:.2f}</text>'
    )
    for field, colour, label in _SERIES:
        pts = [
            (x(i), y(getattr(s, field)))
            for i, s in enumerate(steps)
            if getattr(s, field) is not None
        ]
        if pts:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(
                f'<polyline class="series-{label}" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{path}"/>'
            )
    for i, s in enumerate(steps):
        colour = "#2e9d4a" if s.decision == "accept" else "#b03a9d"
        parts.append(
            f'<circle class="step" cx="{x(i):.1f}" cy="{y(s.fused):.1f}" r="4" '
            f'fill="{colour}"><title>step {s.step_index}: r={s.fused:.3f} '
            f"{s.decision}</title></circle>"
        )
        parts.append(f'<text x="{x(i) - 3:.1f}" y="{height - 8}" font-size="10">{i}</text>')
    legend_x = pad_l
    for field, colour, label in _SERIES:
        if all(getattr(s, field) is None for s in steps):
            continue
        parts.append(
            f'<text x="{legend_x}" y="{pad_t + 10}" font-size="11" fill="{colour}">{label}</text>'
        )
        legend_x += 30
    parts.append("</svg>")
    return "".join(parts)


def _text(run: TraceRun) -> str:
    out = []
    for s in run.steps:
        title = (
            f"step {s.step_index}: {s.source}, g={s.grounding}, l={s.confidence:.3f}, "
            + ("" if s.target_score is None else f"t={s.target_score:.3f}, ")
            + f"r={s.fused:.3f} vs tau {s.threshold}"
        )
        if s.source == "target" and s.draft_text:
            out.append(
                f'<span class="rejected" title="rejected draft step">'
                f"{html.escape(s.draft_text)}</span>"
            )
        out.append(
            f'<span class="{s.source}" title="{html.escape(title)}">{html.escape(s.text)}</span>'
        )
    return "".join(out)


def _table(run: TraceRun) -> str:
    rows = [
        "<tr><th>#</th><th>source</th><th>g</th><th>l</th><th>g~</th><th>l~</th>"
        "<th>t</th><th>t~</th><th>r</th><th>decision</th><th>tokens</th></tr>"
    ]
    for s in run.steps:
        g, gn, t, tn = (
            "-" if v is None else f"{v:.3f}"
            for v in (s.grounding, s.grounding_norm, s.target_score, s.target_norm)
        )
        rows.append(
            f"<tr><td>{s.step_index}</td><td>{s.source}</td><td>{g}</td>"
            f"<td>{s.confidence:.3f}</td><td>{gn}</td><td>{s.confidence_norm:.3f}</td>"
            f"<td>{t}</td><td>{tn}</td>"
            f"<td>{s.fused:.3f}</td><td>{s.decision}</td><td>{s.num_tokens}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def run_status(run: TraceRun) -> tuple[str, str]:
    """A run's status and how the report says it: ``finished``, ``error`` (the call raised) or
    ``unfinished`` (no run line: the process stopped mid-run)."""
    if run.error is not None:
        return "error", f"error: {run.error}"
    if run.ended_at is None:
        return "unfinished", "unfinished: no run line (the process stopped mid-run)"
    return "finished", "finished"


def _totals(run: TraceRun) -> str:
    n = len(run.steps)
    target = sum(s.source == "target" for s in run.steps)
    return (
        f'<p class="totals"><b>{n}</b> steps, <b>{n - target}</b> by the draft, '
        f"<b>{target}</b> by the target (target-call rate "
        f"{target / max(n, 1):.2f}); tokens draft "
        f"{sum(s.num_tokens for s in run.steps if s.source == 'draft')}, target "
        f"{sum(s.num_tokens for s in run.steps if s.source == 'target')}</p>"
    )


def _section(run: TraceRun) -> str:
    status, said = run_status(run)
    kind = " errored" if status == "error" else ""
    heading = f"{html.escape(run.model_name or run.source)} · run {html.escape(run.run_id[:36])}"
    if status != "finished":
        heading += f" · {status}"
    return "".join(
        [
            f'<section class="run{kind}" id="run-{html.escape(run.run_id)}">',
            f"<h2>{heading}</h2>",
            f'<p class="status status-{status}">{html.escape(said)}</p>',
            _totals(run),
            f'<div class="text">{_text(run)}</div>',
            _chart(run),
            _table(run),
            "</section>",
        ]
    )


def render_html(runs: list[TraceRun], title: str = "SpecGuard trace") -> str:
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<div class="legend"><span class="draft key">draft step (accepted)</span>'
        '<span class="target key">target step (draft rejected)</span>'
        '<span class="rejected key">rejected draft text</span></div>',
    ]
    body += [_section(run) for run in runs]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )


def write_report(runs: list[TraceRun], out_dir: str | Path, title: str = "SpecGuard trace") -> Path:
    """Write ``report.html`` (and ``scores.png`` when matplotlib is installed) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(render_html(runs, title), encoding="utf-8")
    with contextlib.suppress(ImportError):  # the HTML needs nothing; the PNG needs matplotlib
        write_png(runs, out / "scores.png")
    return page


def write_png(runs: list[TraceRun], path: str | Path) -> Path:
    """Per-step g~, l~ and r against tau for every run (matplotlib, the `plots` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingDependencyError(
            "PNG plots need matplotlib: pip install 'specguard-integrations[plots]'"
        ) from err
    fig, axes = plt.subplots(len(runs) or 1, 1, figsize=(8, 2.6 * max(len(runs), 1)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=False):
        xs = list(range(len(run.steps)))
        for field, colour, label in _SERIES:
            ys = [getattr(s, field) for s in run.steps]
            if any(v is not None for v in ys):
                ax.plot(
                    xs,
                    [v if v is not None else float("nan") for v in ys],
                    color=colour,
                    label=label,
                )
        if run.steps:
            ax.axhline(run.steps[0].threshold, color="#c0392b", linestyle="--", label="tau")
        for i, s in enumerate(run.steps):
            ax.scatter([i], [s.fused], color="#2e9d4a" if s.accepted else "#b03a9d", zorder=3)
        ax.set_ylim(-0.05, 1.05)
        status = run_status(run)[0]
        mark = "" if status == "finished" else f" ({status})"
        colour = "#c62828" if status == "error" else "black"
        ax.set_title(
            f"{run.model_name or run.source} {run.run_id[:12]}{mark}", fontsize=9, color=colour
        )
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
