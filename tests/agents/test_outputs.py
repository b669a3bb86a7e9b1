"""Output helpers: atomic writes leave old content or new, never a part; JSON made plain.

A write that fails names the file the user knows; the temporaries a killed writer left are
removed by the next run, and only those.
"""

import errno
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fundgym.agents.outputs import (
    TEMP_KINDS,
    directory_in_place,
    jsonable,
    naming_file,
    process_running,
    progress_bar,
    remove_stale_temps,
    temp_sibling,
    write_bytes_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    write_bytes_atomic(path, b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("fundgym.agents.outputs.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_jsonable_makes_strict_json():
    data = {1: (np.float64(2.5), np.int64(3)), "x": [math.nan, math.inf, -math.inf, 1.0]}
    out = jsonable(data)
    assert out == {"1": [2.5, 3], "x": [None, None, None, 1.0]}
    json.dumps(out, allow_nan=False)  # would raise on NaN


def test_silent_progress_bar_accepts_updates():
    bar = progress_bar(10, "x", progress=False)
    bar.update(3)
    bar.close()


# ---------------------------------------------------------------- a full disk ----


def test_a_write_that_fails_as_it_flushes_names_the_file(tmp_path):
    # /dev/full fails every write with ENOSPC, as a full disk does: Python's error names no file.
    with pytest.raises(OSError) as raw, open("/dev/full", "wb") as fh:
        fh.write(b"x")
    assert raw.value.errno == errno.ENOSPC and raw.value.filename is None
    with (
        pytest.raises(OSError) as named,
        naming_file(tmp_path / "metrics.csv"),
        open("/dev/full", "wb") as fh,
    ):
        fh.write(b"x")
    assert named.value.errno == errno.ENOSPC
    assert str(named.value) == f"[Errno 28] No space left on device: '{tmp_path / 'metrics.csv'}'"


def test_an_error_about_the_temporary_names_the_output_and_others_pass_unchanged(tmp_path):
    out, tmp = tmp_path / "a.txt", tmp_path / ".a.txt.tmp-1-00000000"
    with (
        pytest.raises(PermissionError, match=r"Permission denied: '.*/a\.txt'$"),
        naming_file(out, tmp),
    ):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    # A directory being built: a file inside it is named inside the output directory.
    outdir, partial = tmp_path / "out", tmp_path / ".out.partial-1-00000000"
    with (
        pytest.raises(OSError, match=r"No space left on device: '.*/out/plots/a\.png'$"),
        naming_file(outdir, partial),
    ):
        raise OSError(errno.ENOSPC, "No space left on device", str(partial / "plots/a.png"))
    with pytest.raises(FileNotFoundError, match=r"'/elsewhere'$"), naming_file(out, tmp):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere")
    with pytest.raises(OSError, match=r"^disk full$"), naming_file(out):
        raise OSError("disk full")  # no errno: nothing to rebuild it with


# ---------------------------------------------------------------- stale temporaries ----


def a_dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no zombie keeps the PID alive
    assert not process_running(proc.pid)
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path, capsys):
    dead, alive = a_dead_pid(), os.getpid()
    (tmp_path / "out").mkdir()
    stale_dir = tmp_path / f".out.partial-{dead}-0123abcd"
    (stale_dir / "plots").mkdir(parents=True)
    (stale_dir / "metrics.csv").write_text("half")
    stale_file = tmp_path / f".out.tmp-{dead}-deadbeef"
    stale_file.write_text("half")
    stale_old = tmp_path / f".out.old-{dead}-00000000"
    stale_old.mkdir()
    kept = [
        tmp_path / f".out.partial-{alive}-0123abcd",  # a live writer's
        tmp_path / f".other.partial-{dead}-0123abcd",  # another output's
        tmp_path / f".out.partial-{dead}-0123",  # not fundgym's pattern
        tmp_path / f".out.backup-{dead}-0123abcd",
        tmp_path / ".out.lock",
        tmp_path / "out.partial-1-0123abcd",
    ]
    for path in kept:
        path.mkdir()
    removed = remove_stale_temps(tmp_path, "out")
    assert sorted(removed) == sorted([stale_dir, stale_file, stale_old])
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "out", *kept])
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"fundgym: removed {p}, left by process {dead} (killed while writing; it no longer runs)"
        for p in sorted(removed)
    ]
    # Without a name (a run directory, only fundgym's): every dead writer's temporaries go.
    assert remove_stale_temps(tmp_path) == [tmp_path / f".other.partial-{dead}-0123abcd"]
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_run_directory_gets_back_a_model_dir_killed_between_its_two_renames(tmp_path, capsys):
    # A kill between "best -> .best.old-..." and ".best.tmp-... -> best" leaves no best/: the
    # old copy stays for the user, and a run being resumed (restore_old) puts it back.
    dead = a_dead_pid()
    old = tmp_path / f".best.old-{dead}-0123abcd"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    assert remove_stale_temps(tmp_path) == [] and old.is_dir()  # kept: the only copy
    assert remove_stale_temps(tmp_path, restore_old=True) == []
    assert (tmp_path / "best" / "manifest.json").read_text() == "{}" and not old.exists()
    assert f"restored {tmp_path / 'best'} from {old.name}" in capsys.readouterr().err


def test_an_old_copy_without_its_output_is_kept(tmp_path):
    # A kill between the two renames of a replacement: the old copy is the only one left.
    old = tmp_path / f".out.old-{a_dead_pid()}-0123abcd"
    old.mkdir()
    assert remove_stale_temps(tmp_path, "out") == []
    assert old.is_dir()


def test_temporary_kinds_are_the_ones_the_clean_up_knows(tmp_path):
    with pytest.raises(ValueError, match=r"temporary kind 'backup'; expected one of"):
        temp_sibling(tmp_path / "a", "backup")
    for kind in TEMP_KINDS:
        name = temp_sibling(tmp_path / "a", kind).name
        assert name.startswith(f".a.{kind}-{os.getpid()}-") and len(name.split("-")[-1]) == 8


def test_directory_in_place_replaces_whole_or_leaves_the_old_one(tmp_path):
    out = tmp_path / "out"
    with directory_in_place(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="midway"), directory_in_place(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("midway")
    assert (out / "a.txt").read_text() == "first"  # the old output, untouched
    with directory_in_place(out) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
