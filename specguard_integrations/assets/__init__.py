"""The bundled offline draft/target pair (trained by `scripts/train_pair.py`)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DRAFT_DIR = ASSETS / "draft"
TARGET_DIR = ASSETS / "target"
DEFAULT_CONFIG = ASSETS / "specguard.json"  # the SpecGuard config used with the bundled pair
BUNDLED_DRAFT = "specguard-bundled/draft"
BUNDLED_TARGET = "specguard-bundled/target"


def bundled_pair() -> tuple[Path, Path]:
    """Directories of the bundled draft and target, loadable with `from_pretrained`."""
    for d in (DRAFT_DIR, TARGET_DIR):
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"the bundled model pair is missing: no {d / 'config.json'}")
    return DRAFT_DIR, TARGET_DIR
