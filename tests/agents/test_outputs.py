"""Output helpers: atomic writes leave old content or new, never a part; JSON made plain."""

import json
import math

import numpy as np
import pytest

from fundgym.agents.outputs import jsonable, progress_bar, write_bytes_atomic, write_text_atomic


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
