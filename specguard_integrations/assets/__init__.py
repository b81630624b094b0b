"""The bundled offline draft/target pair (trained by `scripts/train_pair.py`) and a tiny process
reward model on the same tokenizer (`scripts/train_prm.py`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingAssetError

ASSETS = Path(__file__).resolve().parent
DRAFT_DIR = ASSETS / "draft"
TARGET_DIR = ASSETS / "target"
PRM_DIR = ASSETS / "prm"  # the tiny process reward model of the rsd baseline
DEFAULT_CONFIG = ASSETS / "specguard.json"  # the SpecGuard config used with the bundled pair
BUNDLED_DRAFT = "specguard-bundled/draft"
BUNDLED_TARGET = "specguard-bundled/target"


def bundled_prm() -> Path:
    """Directory of the bundled tiny process reward model (the `rsd` baseline's verifier)."""
    if not (PRM_DIR / "config.json").is_file():
        raise MissingAssetError(f"the bundled PRM is missing: no {PRM_DIR / 'config.json'}")
    return PRM_DIR


def bundled_pair() -> tuple[Path, Path]:
    """Directories of the bundled draft and target, loadable with `from_pretrained`."""
    for d in (DRAFT_DIR, TARGET_DIR):
        if not (d / "config.json").is_file():
            raise MissingAssetError(f"the bundled model pair is missing: no {d / 'config.json'}")
    return DRAFT_DIR, TARGET_DIR
