"""Outputs: one writer per output, files written through a temporary sibling, plain JSON.

A run that fails or is killed halfway must never leave a half-written file where a user (or a
risk engine) would read it, so every writer in ``agents`` goes through these helpers:

* :func:`output_lock`: every command that writes an ``--out`` holds an exclusive lock on it
  for as long as it writes, so a second fundgym process on the same output stops at once
  (exit code 2, naming the output and the holder's PID) instead of interleaving its files
  with the first one's. The lock is ``fcntl.flock`` on a hidden sibling file,
  ``PARENT/.NAME.lock`` for ``--out PARENT/NAME`` (a sibling, not a file inside, because
  evaluation renames its finished directory into place and an export's ``--out`` is a file).
  The kernel drops the lock when its process exits or is killed, so a crash never leaves an
  output locked; the file itself (holding the PID) is removed on a clean exit.
* :func:`temp_sibling`: temporary names hold the process id and a random token, so two
  writers of one output, in two processes or two threads, never share a temporary file.
* :func:`write_bytes_atomic` / :func:`write_text_atomic`: write a temporary sibling, rename.
"""

from __future__ import annotations

import fcntl
import math
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np


class OutputLockError(RuntimeError):
    """Another process is writing the same output, or its lock file cannot be created."""


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name next to ``path``, to write it fully before renaming it into place.

    The name, ``.NAME.KIND-PID-TOKEN``, is unique to this process (PID) and to this call (a
    random token): two threads or two processes writing the same output each get their own.
    """
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def lock_path(out: Path) -> Path:
    """The lock file of output ``out``: ``.NAME.lock`` beside it, however ``out`` is spelt.

    ``out`` is resolved first (symbolic links, ``..``, a trailing slash), so ``runs/x``,
    ``./runs/x/`` and a link to ``runs/x`` share one lock.

    Raises:
        OutputLockError: ``out`` has no name to lock (the file-system root).
    """
    resolved = out.resolve()
    if not resolved.name:
        raise OutputLockError(f"{out}: not an output path (choose a directory below it)")
    return resolved.with_name(f".{resolved.name}.lock")


def _lock_file(out: Path, path: Path, command: str) -> int:
    """Take ``out``'s lock (file ``path``) without waiting; the locked file's descriptor."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 256).decode("utf-8", "replace").strip()
                os.close(fd)
                pid, _, holder_command = holder.partition(" ")
                who = f"PID {pid or 'unknown'}" + (f", {holder_command}" if holder_command else "")
                raise OutputLockError(
                    f"{out} is being written by another fundgym process ({who}; lock file "
                    f"{path}); wait for it to finish or choose another --out"
                ) from None
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {command}\n".encode())
                    return fd
            except FileNotFoundError:
                pass
            except OSError:
                os.close(fd)
                raise
            # The previous holder removed this file as it let go: lock the file now there.
            os.close(fd)
    except OSError as exc:
        raise OutputLockError(f"{out}: cannot create the lock file {path}: {exc}") from exc


@contextmanager
def output_lock(*outs: Path, command: str = "fundgym") -> Iterator[None]:
    """Hold the exclusive lock on each of ``outs`` for the ``with`` block (see the module doc).

    Never waits: an output another process holds raises at once, before anything is written
    (the locks already taken are released).

    Args:
        outs: The outputs (directories or files) the block writes; one named twice (or by
            two spellings) is locked once.
        command: Recorded with the PID in the lock file, for the message a second process sees.

    Raises:
        OutputLockError: An output is locked by another process (the message names it and the
            holder's PID), or its lock file cannot be created.
    """
    with ExitStack() as stack:
        paths: dict[Path, Path] = {}
        for out in outs:
            paths.setdefault(lock_path(out), out)
        for path, out in paths.items():
            fd = _lock_file(out, path, command)
            stack.callback(os.close, fd)
            stack.callback(fcntl.flock, fd, fcntl.LOCK_UN)
            stack.callback(path.unlink, missing_ok=True)  # while still locked: see _lock_file
        yield


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is removed on any failure, so ``path`` holds either its old content or
    the new one, never part of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with tmp.open("xb") as fh:  # exclusive: never another writer's temporary
            fh.write(data)
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
