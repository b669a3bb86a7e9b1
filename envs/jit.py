"""The one way fundgym compiles a kernel: ``@jit`` = numba's ``njit(cache=True)``, cached safely.

numba keys a cached kernel on its own source file only. A kernel that calls a kernel from
another file (the compiled tick calls the population's and the margin engine's) would keep
running the old callee after that file changed, silently. So every fundgym kernel is cached in
a directory named after a digest of all of ``envs/``'s sources: any change to any of them
starts a fresh cache, and a stale kernel can never run.

Where: ``$FUNDGYM_NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fundgym/numba`` (by default
``~/.cache/fundgym/numba``), then ``<digest>/``. numba's global ``CACHE_DIR`` is set only while
a fundgym kernel is being declared and restored right after, so other numba code in the same
process keeps its own cache. ``fundgym`` never needs the cache: without it (no writable
directory) kernels compile on first call, which takes seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba import config as numba_config

_ENVS_DIR = Path(__file__).resolve().parent


def _source_digest() -> str:
    """SHA-256 (16 hex digits) of every ``.py`` file under ``envs/``, in path order."""
    h = hashlib.sha256()
    for path in sorted(_ENVS_DIR.rglob("*.py")):
        h.update(str(path.relative_to(_ENVS_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """The directory fundgym's compiled kernels are cached in (see the module docstring)."""
    root = os.environ.get("FUNDGYM_NUMBA_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "fundgym" / "numba")
    return Path(root) / f"numba-{numba.__version__}-{_DIGEST}"


_DIGEST = _source_digest()


def jit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)``, cached under :func:`cache_dir`.

    Use as ``@jit`` or ``@jit(inline="always", error_model="numpy")``.
    """

    def wrap(f: Callable[..., Any]) -> Any:
        previous = numba_config.CACHE_DIR  # type: ignore[attr-defined]
        numba_config.CACHE_DIR = str(cache_dir())  # type: ignore[attr-defined]
        try:
            return numba.njit(cache=True, **options)(f)
        finally:
            numba_config.CACHE_DIR = previous  # type: ignore[attr-defined]

    return wrap if fn is None else wrap(fn)
