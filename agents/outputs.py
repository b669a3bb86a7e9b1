"""Outputs: files written through a temporary sibling and a rename, plain JSON, progress bars.

A run that fails or is killed halfway must never leave a half-written file where a user (or a
risk engine) would read it, so every writer in ``agents`` goes through these helpers.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is removed on any failure, so ``path`` holds either its old content or
    the new one, never part of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Plain JSON values: tuples as lists, numpy scalars as Python, NaN and infinities as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class _NoBar:
    """Stands in for a progress bar when progress is off (logs, tests)."""

    def update(self, n: int) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar on stderr counting episodes, or a silent stand-in when ``progress`` is off."""
    if not progress:
        return _NoBar()
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True)
