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
* :func:`remove_stale_temps`: a process killed while writing (``kill -9``, a power cut) leaves
  its temporary behind; the next run on the same output removes the ones whose process no
  longer runs, and only those.
* :func:`write_bytes_atomic` / :func:`write_text_atomic`: write a temporary sibling, rename;
  a failure (a full disk) names the file it was writing.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np


class OutputLockError(RuntimeError):
    """Another process is writing the same output, or its lock file cannot be created."""


#: The kinds of temporary :func:`temp_sibling` makes: a file or directory being written
#: (``tmp``, ``partial``), and the previous version of an output while it is replaced (``old``).
TEMP_KINDS = ("tmp", "partial", "old")

#: A temporary's name, ``.NAME.KIND-PID-TOKEN``: what :func:`remove_stale_temps` recognises.
_TEMP_NAME = re.compile(
    r"\.(?P<name>.+)\.(?P<kind>" + "|".join(TEMP_KINDS) + r")-(?P<pid>[0-9]+)-[0-9a-f]{8}"
)


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name next to ``path``, to write it fully before renaming it into place.

    The name, ``.NAME.KIND-PID-TOKEN``, is unique to this process (PID) and to this call (a
    random token): two threads or two processes writing the same output each get their own.
    The PID also tells a later run whether the writer still runs (:func:`remove_stale_temps`).

    Raises:
        ValueError: ``kind`` is not one of :data:`TEMP_KINDS` (a name the clean-up would not
            recognise).
    """
    if kind not in TEMP_KINDS:
        raise ValueError(f"temporary kind {kind!r}; expected one of {TEMP_KINDS}")
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie not yet reaped counts as running).

    Errs towards "running": a PID the system cannot even look up (out of range) is treated as
    a live process, so nothing is removed on its account.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; no such PID possible
        return True
    return True


def remove_stale_temps(
    directory: Path, name: str | None = None, *, restore_old: bool = False
) -> list[Path]:
    """Remove the temporaries that killed fundgym processes left in ``directory``.

    A temporary (:func:`temp_sibling`) normally lives only while its writer runs: the writer
    renames it into place or removes it on any error. Only ``kill -9`` (or a crash of the
    machine) leaves one behind, and its name records the PID of the writer. This removes the
    entries of ``directory`` named ``.NAME.KIND-PID-TOKEN`` whose PID no longer runs:

    * only temporaries of ``NAME == name`` when ``name`` is given (``directory`` is a folder
      the user shares with other things, such as the parent of an evaluation's ``--out``);
    * never one whose PID runs, whatever that process is (a reused PID only delays the
      clean-up to a later run);
    * an ``old`` one (the previous version of an output being replaced) only while ``NAME``
      itself exists: without it, the ``old`` copy is the only one left (a kill between the
      two renames of a replacement), and it stays for the user to rename back, or, with
      ``restore_old`` (a folder only fundgym writes, such as a run directory being resumed),
      is renamed back to ``NAME`` here: the complete previous version is what was in place.

    Each removal (and restoration) is said in one line on stderr.

    Args:
        directory: The folder to clean; a missing one holds nothing.
        name: The output whose temporaries to remove (``None``: every output's, for a folder
            only fundgym writes, such as a run directory).
        restore_old: Rename a dead writer's ``old`` copy back to ``NAME`` when ``NAME`` is
            missing (a folder only fundgym writes).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in entries:
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        if process_running(int(match["pid"])):
            continue
        if match["kind"] == "old" and not (directory / match["name"]).exists():
            if restore_old:
                os.replace(path, directory / match["name"])
                print(
                    f"fundgym: restored {directory / match['name']} from {path.name}, left by "
                    f"process {match['pid']} (killed while replacing it)",
                    file=sys.stderr,
                )
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # gone meanwhile
            continue
        removed.append(path)
        print(
            f"fundgym: removed {path}, left by process {match['pid']} (killed while writing; "
            "it no longer runs)",
            file=sys.stderr,
        )
    return removed


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


@contextmanager
def naming_file(path: Path, *aliases: Path) -> Iterator[None]:
    """Let an ``OSError`` raised in the block name ``path``, the file the user knows.

    Python's error for a write that fails as the data is flushed (a full disk) names no file,
    and one about a temporary (``aliases``: a file, or a directory being built) names a hidden
    name the user never chose. Either is re-raised as the same error (same ``errno``, hence
    the same class, such as ``PermissionError``) naming ``path``, or for a file inside an
    alias directory, the same file inside ``path``. An error naming another file, or without
    an ``errno``, passes unchanged.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        named: Path | None = path
        if exc.filename is not None:
            name = Path(os.fsdecode(exc.filename))
            named = next(
                (path / name.relative_to(a) for a in aliases if name.is_relative_to(a)), None
            )
        if named is None:
            raise
        raise OSError(exc.errno, exc.strerror, os.fspath(named)) from exc


@contextmanager
def directory_in_place(out: Path, kind: str = "partial") -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` when the block succeeds.

    The whole output is built under a hidden sibling (:func:`temp_sibling`), then renamed
    into place in one step, replacing an earlier ``out`` (moved aside under an ``old`` name
    first and removed after): a reader sees the old output or the new one, never half of
    either. On any error, the temporary is removed and ``out`` is left as it was; an
    ``OSError`` about a file being built names that file inside ``out`` (:func:`naming_file`).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out, kind)
    tmp.mkdir()  # a fresh name: never another writer's directory
    try:
        with naming_file(out, tmp):
            yield tmp
            if out.exists():
                old = temp_sibling(out, "old")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is removed on any failure, so ``path`` holds either its old content or
    the new one, never part of it.

    Raises:
        OSError: The write failed (a full disk, no permission), naming ``path``
            (:func:`naming_file`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with naming_file(path, tmp):
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


def progress_bar(total: int, desc: str, progress: bool, unit: str = "ep") -> Any:
    """A tqdm bar on stderr counting ``unit`` (episodes), or a silent stand-in when off."""
    if not progress:
        return _NoBar()
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
