"""Training end to end: run directory, reproducibility, resume, every algorithm, TensorBoard.

``--resume`` rebuilds the algorithm from the config and loads tensors and arrays: a test runs
it with every unpickler disabled, and another feeds it crafted pickles that would run code.
(A kill during training, then ``--resume``: ``tests/agents/test_faults.py``.)
"""

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
import yaml

from fundgym.agents.config import dump_config, load_config
from fundgym.agents.policies.runs import MANIFEST, WEIGHTS
from fundgym.agents.training.train import (
    REPLAY_BUFFER,
    TRAINING_STATE,
    RunDirError,
    hparams,
    list_checkpoints,
    make_vec_env,
    resume_model,
    train,
    wrap_normalize,
)
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


def test_a_run_saved_before_a_setting_was_added_resumes_and_keeps_its_file(tmp_path, monkeypatch):
    # The run as an older fundgym saved it: its config.yaml, and the hash its checkpoints'
    # manifests record, without the reward's fund_shortfall line (added since, default 0).
    import fundgym.agents.policies.runs as runs_module
    import fundgym.agents.training.train as train_module

    real = train_module.dump_config

    def older(cfg):
        return real(cfg).replace("    fund_shortfall: 0.0\n", "")

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(train_module, "dump_config", older)
        m.setattr(runs_module, "dump_config", older)
        train(tiny(), out, progress=False)
    saved = (out / "config.yaml").read_text()
    assert "fund_shortfall" not in saved
    # Today's resolved config has the line; the run is the same run, resumed from its
    # checkpoint (whose manifest hashes the file as saved), and keeps its file.
    again = train(tiny(), out, resume=True, progress=False)
    assert again.resumed_from == 256 and again.num_timesteps == 256
    assert (out / "config.yaml").read_text() == saved
    with pytest.raises(RunDirError, match="differs from the config given"):
        train(tiny("env.reward.fund_shortfall=1"), out, resume=True, progress=False)


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
    checkpoint = list_checkpoints(tmp_path / cfg.algo)[-1]
    assert (checkpoint / TRAINING_STATE).is_file()
    # Off-policy checkpoints carry the replay buffer, as plain arrays.
    assert (checkpoint / REPLAY_BUFFER).is_file() == (cfg.algo in ("sac", "td3"))
    assert not list(checkpoint.glob("*.zip")) and not list(checkpoint.glob("*.pkl"))


# ---------------------------------------------------------------- resume without pickles ----


SAC_TINY = [
    *(o for o in TINY if not o.startswith("hyperparameters")),
    "total_timesteps=64",
    "eval.freq=32",
    "checkpoint.freq=32",
    "hyperparameters.learning_starts=16",
    "hyperparameters.buffer_size=1000",
]


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A finished tiny SAC run: checkpoints at 32 and 64 timesteps (replay buffer, entropy)."""
    out = tmp_path_factory.mktemp("sac") / "run"
    train(load_config(SAC, SAC_TINY), out, progress=False)
    return out


def no_unpickling(monkeypatch) -> None:
    """Make every unpickler in reach raise: pickle, cloudpickle and SB3's zip loader."""
    import stable_baselines3.common.save_util as save_util

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in (
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (cloudpickle, "load"),
        (cloudpickle, "loads"),
        (save_util, "load_from_zip_file"),
    ):
        monkeypatch.setattr(module, name, refuse)


def test_resume_restores_every_part_of_the_checkpoint_without_unpickling(sac_run, monkeypatch):
    cfg = load_config(sac_run / "config.yaml")
    ck = list_checkpoints(sac_run)[-1]
    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    no_unpickling(monkeypatch)
    model = resume_model(cfg, venv, sac_run, ck, None)
    assert model.num_timesteps == 64
    weights = torch.load(ck / WEIGHTS, weights_only=True)
    assert all(torch.equal(model.policy.state_dict()[k], v) for k, v in weights.items())
    saved = torch.load(ck / TRAINING_STATE, weights_only=True)
    assert model._n_updates == saved["n_updates"] > 0
    assert sorted(saved["optimizers"]) == ["actor.optimizer", "critic.optimizer",
                                           "ent_coef_optimizer"]  # fmt: skip
    for name, state in saved["optimizers"].items():
        live = model.get_parameters()[name]["state"]
        assert all(torch.equal(live[i]["exp_avg"], s["exp_avg"]) for i, s in state["state"].items())
    assert torch.equal(model.log_ent_coef.detach(), saved["variables"]["log_ent_coef"])
    assert model.log_ent_coef.item() != 0.0  # trained: the entropy coefficient moved
    rb = model.replay_buffer
    with np.load(ck / REPLAY_BUFFER, allow_pickle=False) as npz:
        # 16 vector steps of 4 exchanges; the checkpoint is taken in the callback of the 16th,
        # before SB3 stores that step's transitions: 15 rows.
        assert int(npz["pos"]) == rb.pos == 15 and not npz["full"]
        for name in ("observations", "next_observations", "actions", "rewards", "dones"):
            assert np.array_equal(getattr(rb, name)[:15], npz[name]), name
    assert np.abs(rb.observations[:15]).sum() > 0 and not rb.observations[15:].any()


def test_resume_trains_on_without_unpickling(sac_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(sac_run, out)
    shutil.rmtree(list_checkpoints(out)[-1])  # killed before the checkpoint at 64
    shutil.rmtree(out / "final")
    no_unpickling(monkeypatch)
    result = train(load_config(SAC, SAC_TINY), out, resume=True, progress=False)
    assert result.resumed_from == 32 and result.num_timesteps == 64


class RunsCode:
    """A pickle that runs a shell command when loaded (what a crafted run directory holds)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _rehash(ck: Path, name: str) -> None:
    """Record ``name``'s current hash, as whoever crafted the directory would."""
    import hashlib

    manifest = json.loads((ck / MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256((ck / name).read_bytes()).hexdigest()
    (ck / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", [TRAINING_STATE, REPLAY_BUFFER])
def test_a_crafted_checkpoint_is_refused_without_running_it(sac_run, tmp_path, name):
    out = tmp_path / "run"
    shutil.copytree(sac_run, out)
    ck = list_checkpoints(out)[-1]
    marker = tmp_path / "ran"
    if name == TRAINING_STATE:
        buf = io.BytesIO()
        torch.save({"optimizers": RunsCode(marker)}, buf)
        (ck / name).write_bytes(buf.getvalue())
        refusal = r"training_state\.pt: holds objects other than tensors and numbers, and lo"
    else:
        with (ck / name).open("wb") as fh:
            np.savez(fh, observations=np.array([RunsCode(marker)], dtype=object))
        refusal = r"replay_buffer\.npz: cannot be read as plain arrays \(ValueError: Object arr"
    _rehash(ck, name)
    with pytest.raises(RunDirError, match=refusal + r".*; remove .*step_000000000064 to resume"):
        train(load_config(SAC, SAC_TINY), out, resume=True, progress=False)
    assert not marker.exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(sac_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(sac_run, out)
    ck = list_checkpoints(out)[-1]
    with np.load(ck / REPLAY_BUFFER, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["actions"] = arrays["actions"][:, :, :2]  # two levers fewer than the config's
    with (ck / REPLAY_BUFFER).open("wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)
    _rehash(ck, REPLAY_BUFFER)
    with pytest.raises(RunDirError, match=r"replay_buffer\.npz: actions is a float32 array of "
                       r"shape \(15, 4, 2\); expected float32 of shape \(15, 4, 5\)"):  # fmt: skip
        train(load_config(SAC, SAC_TINY), out, resume=True, progress=False)
    state = torch.load(ck / TRAINING_STATE, weights_only=True)
    del state["optimizers"]["ent_coef_optimizer"]
    torch.save(state, ck / TRAINING_STATE)
    _rehash(ck, TRAINING_STATE)
    with pytest.raises(RunDirError, match=r"training_state\.pt: expected \['optimizers', "):
        train(load_config(SAC, SAC_TINY), out, resume=True, progress=False)


# ---------------------------------------------------------------- TensorBoard ----


def test_tensorboard_records_the_config_and_the_hyperparameters(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = tiny("eval.scenarios=[training, venue_flash_wick]")
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    (log_dir,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("config/text_summary")
    assert text.step == 0
    assert text.tensor_proto.string_val[0].decode() == f"```yaml\n{dump_config(cfg)}```"
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    recorded = {
        k: v.number_value if v.HasField("number_value") else v.string_value
        for k, v in start.hparams.items()
    }
    assert recorded == {k: v for k, v in hparams(cfg).items() if v is not None}
    assert recorded["algo"] == "ppo" and recorded["seed"] == 0.0
    assert recorded["hyperparameters.learning_rate"] == cfg.hyperparameters.learning_rate
    assert recorded["hyperparameters.n_steps"] == 16.0
    assert recorded["hyperparameters.policy_kwargs.net_arch"] == "[64, 64]"
    assert recorded["eval.scenarios"] == "[training, venue_flash_wick]"
    assert recorded["normalize.observation"] == "true"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics == ["eval/mean_reward", "eval/mean_cost", "rollout/ep_rew_mean"]
    assert set(metrics) <= set(events.Tags()["scalars"])  # the tab has curves to show


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
    (out / "command.txt").write_text("fundgym train\n")  # a run's files: not --force's business
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


def test_a_scenario_typo_fails_before_the_run_directory_exists(tmp_path):
    # Python callers get the command line's early check: nothing is written.
    from fundgym.agents.config import ConfigError

    cfg = load_config(PPO, [*TINY_TRAIN, "eval.scenarios=[calm, no_such]"])
    with pytest.raises(ConfigError, match=r"eval\.scenarios\.1 = 'no_such'"):
        train(cfg, tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []
