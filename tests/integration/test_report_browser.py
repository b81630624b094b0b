"""The HTML trace report rendered in a real headless Chromium (installed by scripts/bootstrap.sh
where the machine allows): no console errors, steps and chart present in the rendered DOM and
visible in the screenshot."""

import shutil
import subprocess

import pytest
from PIL import Image

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.testing import tiny_lm
from specguard_integrations.tracing import TraceRun
from specguard_integrations.tracing.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# Debian's chromium is installed by scripts/bootstrap.sh when run as root (as in CI); a
# developer machine without it skips this one test, with this reason.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def run_chromium(tmp_path, *args):
    out = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_report_renders_without_console_errors_and_shows_steps(tmp_path):
    engine = SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, max_step_tokens=5, max_new_tokens=20, seed=3),
    )
    # one run whose steps the draft keeps (tau 0), one the target rewrites (tau above 1)
    kept = engine.generate("hello", config=engine.config.merged(tau=0.0))
    rewritten = engine.generate("hello", config=engine.config.merged(tau=1.01))
    runs = [
        TraceRun(run_id="kept", source="engine", model_name="tiny", steps=kept.steps),
        TraceRun(run_id="rewritten", source="engine", model_name="tiny", steps=rewritten.steps),
    ]
    steps = kept.steps + rewritten.steps
    assert {s.source for s in kept.steps} == {"draft"}
    assert {s.source for s in rewritten.steps} == {"target"}
    page = write_report(runs, tmp_path / "rep")
    url = page.resolve().as_uri()

    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert "CONSOLE" not in dom.stderr, dom.stderr
    assert dom.stdout.count('class="step"') == len(steps)
    assert "<svg" in dom.stdout and 'class="tau"' in dom.stdout

    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1400", url)
    img = Image.open(shot).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (0xD9, 0xF2, 0xDC) in colours  # a draft step's background
    assert (0xF6, 0xD5, 0xF0) in colours  # a target step's background
    assert (0xC0, 0x39, 0x2B) in colours  # the tau line of the chart
