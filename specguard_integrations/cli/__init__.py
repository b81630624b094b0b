"""The `specguard` command: argument parsing (`main.py`) and the report-style subcommands
(`report.py`). `specguard --help` imports neither torch nor any framework."""

from .main import main

__all__ = ["main"]
