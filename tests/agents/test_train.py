"""Training end to end: run directory, reproducibility, resume after a kill, every algorithm."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fundgym.agents.config import dump_config, load_config
from fundgym.agents.training.train import RunDirError, list_checkpoints, train
from tests.tiny_runs import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"
SAC = ROOT / "configs" / "train" / "sac.yaml"

# The shared tiny run (tests/tiny_runs.py): a few seconds, one-hour episodes (6 decisions).
TINY = TINY_TRAIN


def tiny(*extra: str, base: Path = PPO):
    return load_config(base, [*TINY, *extra])


def params_of(path: Path) -> dict:
    """A model directory's weights (``policy.pt``: plain tensors)."""
    return torch.load(path / "policy.pt", weights_only=True)


def test_tiny_run_writes_the_run_directory(tmp_path):
    cfg = tiny()
    out = tmp_path / "run"
    result = train(cfg, out, progress=False, argv=["fundgym", "train", "--out", str(out)])
    for name in (
        "final/policy.pt",
        "final/normalize.npz",
        "final/manifest.json",
        "best/policy.pt",
        "best/normalize.npz",
        "best/manifest.json",
        "config.yaml",
        "command.txt",
        "evaluations.csv",
        "train_summary.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "config.yaml").read_text() == dump_config(cfg)
    assert load_config(out / "config.yaml") == cfg  # the resolved config rebuilds the run
    assert (out / "command.txt").read_text().startswith(f"fundgym train --out {out}\n")
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_timesteps"] == result.num_timesteps == 256
    # Evaluations at 128 and 256 timesteps, on the held-out sampler draws.
    rows = (out / "evaluations.csv").read_text().splitlines()
    assert rows[0] == "timesteps,scenario,mean_reward,mean_cost"
    assert [r.split(",")[:2] for r in rows[1:]] == [["128", "training"], ["256", "training"]]
    assert summary["best_eval_mean_reward"] == max(float(r.split(",")[2]) for r in rows[1:])
    # Checkpoints keep the last two, each complete (no temporary directories left).
    steps = [p.name for p in list_checkpoints(out)]
    assert steps == ["step_000000000128", "step_000000000256"]
    assert not list((out / "checkpoints").glob(".*"))
    assert not list(out.glob("*.zip")) and not list(out.glob("*.pkl"))


def test_same_config_and_seed_give_the_same_model(tmp_path):
    a = train(tiny(), tmp_path / "a", progress=False)
    b = train(tiny(), tmp_path / "b", progress=False)
    c = train(tiny("seed=1"), tmp_path / "c", progress=False)
    pa, pb, pc = (params_of(r.run_dir / "final") for r in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    assert a.last_eval == b.last_eval


def test_same_config_and_seed_give_the_same_model_in_separate_processes(tmp_path):
    # Two fresh interpreters, as two users' shells: in-process runs share torch's generator,
    # which hid that the network was initialised before seeding.
    import subprocess
    import sys

    for name in ("a", "b"):
        sets = [a for o in TINY for a in ("--set", o)]
        cmd = [sys.executable, "-m", "fundgym.agents.cli", "train", "--config", str(PPO), *sets]
        cmd += ["--out", str(tmp_path / name), "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    pa, pb = (params_of(tmp_path / n / "final") for n in ("a", "b"))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_existing_run_is_not_overwritten_and_resume_needs_the_same_config(tmp_path):
    out = tmp_path / "run"
    train(tiny(), out, progress=False)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny(), out, progress=False)
    with pytest.raises(RunDirError, match="differs from the config given"):
        train(tiny("env.reward.solvency=3"), out, resume=True, progress=False)
    # Resuming a finished run trains nothing more and keeps the model.
    final = (out / "final" / "manifest.json").read_bytes()
    again = train(tiny(), out, resume=True, progress=False)
    assert again.resumed_from == 256 and again.num_timesteps == 256
    assert (out / "final" / "manifest.json").read_bytes() == final


@pytest.mark.parametrize(
    ("base", "extra"),
    [
        (SAC, ["hyperparameters.learning_starts=16", "hyperparameters.buffer_size=1000"]),
        (PPO, ["algo=td3", "hyperparameters={learning_starts: 16, buffer_size: 1000}"]),
        (PPO, ["algo=a2c", "hyperparameters={n_steps: 4}"]),
    ],
)
def test_every_algorithm_trains(tmp_path, base, extra):
    overrides = [o for o in TINY if not o.startswith("hyperparameters")]
    cfg = load_config(
        base, [*overrides, "total_timesteps=64", "eval.freq=64", "checkpoint.freq=64", *extra]
    )
    result = train(cfg, tmp_path / cfg.algo, progress=False)
    assert result.num_timesteps >= 64
    assert (tmp_path / cfg.algo / "final" / "policy.pt").is_file()
    if cfg.algo in ("sac", "td3"):  # off-policy checkpoints carry the replay buffer
        assert (list_checkpoints(tmp_path / cfg.algo)[-1] / "replay_buffer.pkl").is_file()


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fundgym.agents.cli", "train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def sets(*overrides: str) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.mark.slow
def test_resume_after_a_kill_loses_at_most_one_checkpoint_interval(tmp_path):
    out = tmp_path / "run"
    args = [
        *sets(*TINY, "total_timesteps=4096", "checkpoint.freq=256", "eval.freq=100000"),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = cli(*args, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list_checkpoints(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list_checkpoints(out), proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up: as if the machine went down
    proc.wait()
    assert not (out / "final").exists()
    saved = int(list_checkpoints(out)[-1].name.split("_")[1])
    resumed = cli(*args, "--resume")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_timesteps"] == 4096
    assert summary["resumed_from"] >= saved >= 256  # continued from the latest checkpoint
    assert f"resumed at {summary['resumed_from']:,}" in stdout
    assert (out / "final" / "manifest.json").is_file()


def test_cli_bad_config_exits_2_naming_the_field(tmp_path):
    proc = cli("--set", "n_envs=0", "--set", "hyperparameters.gama=0.9", "--out", str(tmp_path))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "ppo.yaml: n_envs = 0: Input should be greater than or equal to 1" in stderr
    assert "hyperparameters.gama = 0.9: unknown key; allowed: [" in stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_existing_run_exits_2(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("x: 1\n")
    proc = cli(*sets(*TINY), "--out", str(out))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "already holds a run" in stderr


def test_cli_multiple_seeds_write_one_run_each(tmp_path):
    proc = cli(
        *sets(*TINY, "total_timesteps=64", "eval.freq=64"), "--seeds", "0,1", "--out", str(tmp_path)
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    for seed in (0, 1):
        cfg = yaml.safe_load((tmp_path / f"seed_{seed}" / "config.yaml").read_text())
        assert cfg["seed"] == seed
        assert (tmp_path / f"seed_{seed}" / "final" / "policy.pt").is_file()
    assert "seed 0:" in stdout and "seed 1:" in stdout
    a = params_of(tmp_path / "seed_0" / "final")
    b = params_of(tmp_path / "seed_1" / "final")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_cli_progress_bar_shows_episode_reward_and_solvency_cost(tmp_path):
    proc = cli(*sets(*TINY), "--out", str(tmp_path / "run"))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    bar = stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("ppo seed 0:") and "100%" in line for line in bar)
    assert any("ep_rew=" in line and "cost=" in line and "eval=" in line for line in bar)
