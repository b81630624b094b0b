"""A GGUF model read once: its weights (dequantised by transformers), config and tokenizer are
written as safetensors to the user's cache the first time, and later loads read that copy.

transformers' GGUF reader parses a file three times (config, tokenizer, weights) and
dequantises every tensor on each load: about two minutes for Gemma-3-270M on a CPU. The copy is
keyed by the file's content (SHA-256) and the dtype it was loaded in, so a file that changes
(or another dtype) is converted again; nothing is read back from a copy left half-written (it
is written under a temporary name and renamed when complete).

Where: ``$SPECGUARD_CACHE``, else ``$XDG_CACHE_HOME/specguard-integrations``, else
``~/.cache/specguard-integrations``, under ``gguf/``. ``gguf_cache=False`` in the model's
options skips it (each load parses the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_MARK = "specguard-gguf.json"  # written last: the copy is complete


def cache_root() -> Path:
    base = os.environ.get("SPECGUARD_CACHE")
    if base:
        return Path(base)
    user = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(user) / "specguard-integrations"


def gguf_path(name_or_path: str, gguf_file: str) -> Path | None:
    """The local GGUF file a load names (a directory and a file in it, or a file path); None
    for a hub id (transformers fetches and parses it as usual)."""
    for candidate in (Path(name_or_path) / gguf_file, Path(gguf_file)):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def converted_dir(path: Path, dtype: Any) -> Path:
    """Where the copy of `path` loaded in `dtype` lives (it may not exist yet)."""
    return cache_root() / "gguf" / f"{_digest(path)[:40]}-{str(dtype).removeprefix('torch.')}"


def ready(where: Path) -> bool:
    return (where / _MARK).is_file()


def save(
    where: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: Path
) -> None:
    """Write the copy (safetensors, config, tokenizer) under a temporary name, then move it into
    place; a copy that cannot be written is skipped with a warning (the model is loaded)."""
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=where.parent))
        _save_weights(model, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARK).write_text(
            json.dumps({"source": str(source), "bytes": source.stat().st_size})
        )
        try:
            tmp.rename(where)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        log.warning("could not keep a converted copy of %s in %s: %s", source, where, err)


def _save_weights(model: PreTrainedModel, where: Path) -> None:
    """The dequantised weights as safetensors and the config without its GGUF quantisation
    (transformers' `save_pretrained` refuses a model loaded from GGUF): a plain checkpoint
    that `from_pretrained` reads as any other. Tied weights are written once."""
    import copy

    from safetensors.torch import save_model

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(where)
    save_model(model, str(where / "model.safetensors"))
