"""The command line as a new user meets it: version, generate on the bundled pair by default,
and tables that keep their rows when piped."""

from __future__ import annotations

import json

import pytest

from specguard_integrations import __version__
from specguard_integrations.cli.main import console, main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"specguard {__version__}"


def test_generate_runs_the_bundled_pair_without_model_flags(capsys):
    assert main(["generate", "Question: What is 3 + 4?\n", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"].strip()
    assert out["steps"] and {"source", "grounding", "confidence"} <= set(out["steps"][0])


def test_demo_help_says_what_limit_counts(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "held-out problems" in capsys.readouterr().out


def test_a_piped_console_keeps_wide_rows():
    assert console().width == 200  # pytest captures stdout: not a terminal
