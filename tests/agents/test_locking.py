"""One writer per output: the --out lock, unique temporary names, a torn evaluations.csv row.

A second fundgym process on an output another one is writing stops at once with exit code 2,
naming the output and the holder's PID; the kernel releases the lock of a killed holder; two
writers of one file never share a temporary; ``--resume`` drops a last evaluation row a kill
cut short and says so.
"""

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fundgym.agents.cli import main
from fundgym.agents.config import load_config
from fundgym.agents.outputs import (
    OutputLockError,
    lock_path,
    output_lock,
    temp_sibling,
    write_text_atomic,
)
from fundgym.agents.training.train import (
    RunDirError,
    _drop_torn_evaluation,
    _read_evaluations,
    list_checkpoints,
    train,
)
from tests.tiny_runs import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"
HEADER = b"timesteps,scenario,mean_reward,mean_cost\r\n"

# Takes the lock on argv[1] as fundgym's commands do, says so, then holds it until killed.
HOLDER = """
import sys, time
from pathlib import Path
from fundgym.agents.outputs import output_lock
with output_lock(Path(sys.argv[1]), command="fundgym holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the lock on ``tmp_path/out`` (killed at the end)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n", proc.stderr.read() if proc.stderr else ""
        yield out, proc
    finally:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run (256 timesteps; evaluations and checkpoints at 128, 256)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    train(load_config(PPO, TINY_TRAIN), out, progress=False)
    return out


def _commands(out: Path, tiny_run: Path) -> dict[str, list[str]]:
    """A valid command line of every subcommand that writes ``out`` (export: a file in it)."""
    sets = [x for o in TINY_TRAIN for x in ("--set", o)]
    return {
        "train": ["train", *sets, "--out", str(out), "--no-progress"],
        "train --resume": ["train", *sets, "--out", str(out), "--resume", "--no-progress"],
        "evaluate": ["evaluate", "--policy", "static:binance", "--scenarios", "venue_flash_wick",
                     "--episodes", "1", "--out", str(out), "--no-progress"],
        "simulate": ["simulate", "--accounts", "50", "--out", str(out)],
        "demo": ["demo", "--quick", "--out", str(out), "--no-progress"],
        "export": ["export", "--policy", str(tiny_run), "--format", "onnx", "--out", str(out)],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command", ["train", "train --resume", "evaluate", "simulate", "demo", "export"]
)
def test_a_second_process_on_the_same_out_exits_2_naming_the_holder(
    command: str, holder: tuple[Path, subprocess.Popen[str]], tiny_run: Path, capsys
):
    out, proc = holder
    assert main(_commands(out, tiny_run)[command]) == 2
    err = capsys.readouterr().err
    assert f"{out} is being written by another fundgym process (PID {proc.pid}" in err
    assert "fundgym holder" in err and "Traceback" not in err
    assert not out.exists()  # stopped before writing anything
    assert proc.poll() is None  # the holder was not disturbed


def test_the_cli_process_exits_2_at_once(holder: tuple[Path, subprocess.Popen[str]]):
    out, proc = holder
    sets = [x for o in TINY_TRAIN for x in ("--set", o)]
    second = subprocess.run(
        [sys.executable, "-m", "fundgym.agents.cli", "train", *sets, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr
    assert f"{out} is being written by another fundgym process (PID {proc.pid}" in second.stderr
    assert not out.exists()


def test_train_with_seeds_locks_each_run_directory(tmp_path: Path, capsys):
    """``--seeds`` into BASE also holds BASE/seed_<S>: no `train --out BASE/seed_1` meanwhile."""
    base = tmp_path / "base"
    with output_lock(base / "seed_1"):
        sets = [x for o in TINY_TRAIN for x in ("--set", o)]
        assert main(["train", *sets, "--seeds", "0,1", "--out", str(base)]) == 2
    assert f"{base / 'seed_1'} is being written by another fundgym process" in (
        capsys.readouterr().err
    )
    assert not (base / "seed_0").exists()  # the first seed did not start either


def test_the_lock_of_a_killed_holder_is_released(holder: tuple[Path, subprocess.Popen[str]]):
    out, proc = holder
    with pytest.raises(OutputLockError, match=f"PID {proc.pid}"), output_lock(out):
        pass
    proc.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays, the lock does not
    proc.wait()
    assert lock_path(out).is_file()
    with output_lock(out, command="next"):
        assert lock_path(out).read_text() == f"{os.getpid()} next\n"
    assert not lock_path(out).exists()  # removed on a clean exit


def test_lock_file_is_a_sibling_shared_by_every_spelling(tmp_path: Path, monkeypatch):
    (tmp_path / "runs" / "real").mkdir(parents=True)
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "runs" / "real")
    monkeypatch.chdir(tmp_path)
    expected = tmp_path / "runs" / ".real.lock"
    for spelling in ("runs/real", "./runs/real/", "runs/x/../real", "runs/link"):
        assert lock_path(Path(spelling)) == expected
    with output_lock(Path("runs/real"), Path("runs/link")):  # one output named twice: one lock
        assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.endswith(".lock")] == [
            ".real.lock"
        ]
        with (
            pytest.raises(OutputLockError, match=f"PID {os.getpid()}"),
            output_lock(Path("runs/link")),
        ):
            pass
    assert not expected.exists()


def test_a_failed_second_lock_releases_the_first(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    with output_lock(b):
        with pytest.raises(OutputLockError, match=str(b)), output_lock(a, b):
            pass
        with output_lock(a):  # a was let go when b failed
            pass


def test_a_lock_file_that_cannot_be_made_is_an_error_naming_it(tmp_path: Path):
    (tmp_path / "file").write_text("not a directory")
    with (
        pytest.raises(OutputLockError, match=r"cannot create the lock file .*file/\.out\.lock"),
        output_lock(tmp_path / "file" / "out"),
    ):
        pass


# ---------------------------------------------------------------- temporary names ----


def test_temporary_names_are_unique_per_call_and_name_the_process(tmp_path: Path):
    path = tmp_path / "a.txt"
    names = {temp_sibling(path).name for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(f".a.txt.tmp-{os.getpid()}-") for n in names)
    assert temp_sibling(path, "partial").name.startswith(f".a.txt.partial-{os.getpid()}-")


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path):
    """Eight threads (one PID) rewrite one file: every write lands whole, none fails."""
    path = tmp_path / "shared.txt"
    contents = {f"writer {i}\n" + str(i) * 200_000 for i in range(8)}
    errors: list[BaseException] = []
    start = threading.Barrier(len(contents))

    def write(text: str) -> None:
        start.wait()
        try:
            for _ in range(20):
                write_text_atomic(path, text)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


# ---------------------------------------------------------------- torn rows ----


ROW_128 = b"128,training,1.5,0.25\r\n"


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (HEADER + ROW_128 + b"256,training,2.", HEADER + ROW_128),  # no newline
        (HEADER + ROW_128 + b"256,training,2.5,0.5", HEADER + ROW_128),  # 4 fields, no newline
        (HEADER + ROW_128 + b"256,training,2.5,0.5\r", HEADER + ROW_128),  # half a newline
        (HEADER + ROW_128 + b"256,training\r\n", HEADER + ROW_128),  # 2 fields
        (b"timesteps", None),  # a torn header: the file goes, the next evaluation rewrites it
    ],
)
def test_a_torn_last_row_is_dropped_and_said(
    tmp_path: Path, capsys, data: bytes, kept: bytes | None
):
    path = tmp_path / "evaluations.csv"
    path.write_bytes(data)
    _drop_torn_evaluation(tmp_path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"dropped the torn last row of {path}" in err
    assert (path.read_bytes() if path.exists() else None) == kept


def test_an_intact_file_is_left_alone_silently(tmp_path: Path, capsys):
    path = tmp_path / "evaluations.csv"
    path.write_bytes(HEADER + ROW_128)
    _drop_torn_evaluation(tmp_path)
    assert path.read_bytes() == HEADER + ROW_128
    assert capsys.readouterr().err == ""


def test_a_bad_row_before_the_last_names_the_file_and_line(tmp_path: Path):
    (tmp_path / "evaluations.csv").write_bytes(
        HEADER + b"128,training,oops,0.25\r\n256,training,2.5,0.5\r\n"
    )
    with pytest.raises(RunDirError, match=r"evaluations\.csv, line 2: '128,training,oops,0.25'"):
        _read_evaluations(tmp_path)


def test_resume_drops_a_torn_row_and_continues(tiny_run: Path, tmp_path: Path, capsys):
    """A kill at 256 while appending its evaluation: resume from 128, rows whole again."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    shutil.rmtree(out / "final")
    shutil.rmtree(list_checkpoints(out)[-1])  # the checkpoint at 256 was never written
    path = out / "evaluations.csv"
    path.write_bytes(path.read_bytes()[:-7])  # the 256 row loses its last digits and newline
    sets = [x for o in TINY_TRAIN for x in ("--set", o)]
    assert main(["train", *sets, "--out", str(out), "--resume", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("dropped the torn last row") == 1
    assert "resumed at 128" in captured.out
    text = path.read_text()
    assert text.endswith("\n")
    rows = list(csv.reader(text.splitlines()))
    assert all(len(r) == 4 for r in rows)
    assert [r[:2] for r in rows[1:]] == [["128", "training"], ["256", "training"]]
    assert (out / "final" / "manifest.json").is_file()
