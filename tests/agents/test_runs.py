"""Run directories are data: nothing in one runs as code, and a run is complete or refused."""

import base64
import contextlib
import hashlib
import io
import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fundgym.agents.action_map import action_map
from fundgym.agents.cli import main
from fundgym.agents.config import dump_config, load_config
from fundgym.agents.export.onnx import (
    ExportError,
    check_observations,
    export_onnx,
    reference_outputs,
)
from fundgym.agents.policies import TrainedPolicy
from fundgym.agents.policies.runs import (
    MANIFEST,
    STATS,
    WEIGHTS,
    NormStats,
    RunError,
    load_model,
    write_model_dir,
)
from fundgym.agents.training.train import (
    TRAINING_STATE,
    RunDirError,
    build_model,
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
OFF_POLICY = "hyperparameters={learning_starts: 16, buffer_size: 1000}"
SMALL = ["n_envs=4", "env.n_accounts=32", "env.horizon_minutes=60"]
ALGO_PPO = ["hyperparameters={n_steps: 16, batch_size: 32, n_epochs: 2}"]
#: Each algorithm's tiny config: base file and overrides.
ALGOS = {
    "ppo": (PPO, ALGO_PPO),
    "sac": (SAC, [OFF_POLICY]),
    "td3": (PPO, ["algo=td3", OFF_POLICY]),
    "a2c": (PPO, ["algo=a2c", "hyperparameters={n_steps: 4}"]),
    # Rewards normalised, observations raw: VecNormalize keeps no observation statistics.
    "ppo_raw_obs": (PPO, [*ALGO_PPO, "normalize.observation=false"]),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny PPO run (evaluations and checkpoints at 128 and 256 steps)."""
    out = tmp_path_factory.mktemp("runs") / "ppo"
    train(load_config(PPO, TINY_TRAIN), out, progress=False)
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("tensorboard"))
    return to


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rehash(model_dir: Path, name: str) -> None:
    """Record ``name``'s current hash in the manifest, as an attacker crafting a run would."""
    manifest = json.loads((model_dir / MANIFEST).read_text())
    manifest["files"][name] = sha(model_dir / name)
    (model_dir / MANIFEST).write_text(json.dumps(manifest))


# ---------------------------------------------------------------- the format ----


def test_a_run_directory_holds_model_directories_of_plain_files(run):
    assert not [p.name for p in run.iterdir() if p.suffix in (".zip", ".pkl")]
    for model_dir in (run / "best", run / "final", *list_checkpoints(run)):
        manifest = json.loads((model_dir / MANIFEST).read_text())
        assert manifest["format"] == "fundgym-model" and manifest["algo"] == "ppo"
        assert manifest["config_sha256"] == sha(run / "config.yaml")
        on_disk = sorted(p.name for p in model_dir.iterdir() if p.name != MANIFEST)
        assert sorted(manifest["files"]) == on_disk
        assert all(manifest["files"][n] == sha(model_dir / n) for n in on_disk)
        assert len(manifest["observation_space"]["low"]) == 32
    assert sorted(json.loads((run / "final" / MANIFEST).read_text())["files"]) == [STATS, WEIGHTS]
    assert json.loads((run / "final" / MANIFEST).read_text())["num_timesteps"] == 256
    # Checkpoints add the training state for --resume (tensors); nothing else is left behind.
    checkpoint = json.loads((list_checkpoints(run)[-1] / MANIFEST).read_text())
    assert sorted(checkpoint["files"]) == sorted([STATS, TRAINING_STATE, WEIGHTS])
    assert not [p for p in run.rglob(".*") if p.name not in (".", "..")]


def test_statistics_are_plain_arrays_that_round_trip(run):
    data = (run / "final" / STATS).read_bytes()
    stats = NormStats.from_bytes(data, run / "final" / STATS)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    assert stats.obs_mean.shape == stats.obs_var.shape == (32,)
    assert stats.norm_obs and stats.clip_obs == 10.0 and stats.obs_count > 1
    again = NormStats.from_bytes(stats.to_bytes(), Path("x"))
    assert all(np.array_equal(getattr(stats, k), getattr(again, k)) for k in vars(stats))


def _old_predict(model_zip: Path, vecnorm_pkl: Path, algo: str, obs: np.ndarray) -> np.ndarray:
    """How evaluation predicted before run directories were data: SB3's load and a pickle."""
    import stable_baselines3 as sb3

    model = getattr(sb3, algo.split("_")[0].upper()).load(model_zip, device="cpu")
    vecnorm = pickle.loads(vecnorm_pkl.read_bytes())  # our own file, written just above
    action, _ = model.predict(vecnorm.normalize_obs(obs.astype(np.float32)), deterministic=True)
    return np.asarray(action, dtype=np.float64)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_the_rebuilt_policy_acts_bit_for_bit_as_the_sb3_loaded_model(tmp_path, algo):
    base, extra = ALGOS[algo]
    cfg = load_config(base, [*SMALL, *extra])
    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    model = build_model(cfg, venv, None)
    model.learn(64)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    write_model_dir(run_dir / "final", model, cfg)
    model.save(tmp_path / "model.zip")
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    obs = check_observations(cfg, 256, seed=5)  # real states and the whole ±10 box

    raw = _old_predict(tmp_path / "model.zip", tmp_path / "vecnormalize.pkl", algo, obs)
    assert np.abs(raw).max() > 0
    # A loaded run acts through its config's action map (the default centres the allocation).
    before = action_map(cfg.env, cfg.centred_levers)(raw)
    now = TrainedPolicy("run", run_dir).act(obs.astype(np.float64))
    assert now.dtype == np.float64 and np.array_equal(now, before)
    if algo == "ppo":  # the export's reference is the same computation
        ref = reference_outputs(run_dir, obs, model="final")["action"]
        assert np.array_equal(ref, before.astype(np.float32))


# ---------------------------------------------------------------- complete or refused ----


def test_a_missing_statistics_file_is_an_error_naming_it(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    (copy / "best" / STATS).unlink()
    with pytest.raises(RunError, match=r"best/normalize\.npz: missing; .*manifest\.json lists it"):
        TrainedPolicy("run", copy)
    with pytest.raises(ExportError, match=r"best/normalize\.npz: missing"):
        export_onnx(copy, tmp_path / "p.onnx", n_check=8)
    # Dropped from the manifest as well: the config still says the run normalises.
    manifest = json.loads((copy / "best" / MANIFEST).read_text())
    del manifest["files"][STATS]
    (copy / "best" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"best/normalize\.npz: missing from .*normalises"):
        TrainedPolicy("run2", copy)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("name", [WEIGHTS, STATS])
def test_a_changed_byte_is_a_hash_error_naming_the_file(run, tmp_path, name):
    copy = copy_run(run, tmp_path / "run")
    path = copy / "best" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    changed = re.escape(f"best/{name}") + ": SHA-256 differs"
    with pytest.raises(RunError, match=changed):
        TrainedPolicy("run", copy)
    with pytest.raises(ExportError, match=changed):
        export_onnx(copy, tmp_path / "p.onnx", model="best", n_check=8)


def test_a_changed_config_or_missing_manifest_is_named(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("seed: 0", "seed: 1"))
    with pytest.raises(RunError, match=r"config\.yaml: differs from the config .*was saved with"):
        TrainedPolicy("a", copy)
    (copy / "config.yaml").write_text(text)
    (copy / "best" / MANIFEST).unlink()
    with pytest.raises(RunError, match=r"best/manifest\.json: missing; .*incomplete"):
        TrainedPolicy("b", copy)


def test_a_manifest_naming_a_file_outside_its_directory_is_refused(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    manifest = json.loads((copy / "final" / MANIFEST).read_text())
    manifest["files"]["../config.yaml"] = sha(copy / "config.yaml")
    (copy / "final" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"'\.\./config\.yaml' is not a file name"):
        load_model(copy, copy / "final", load_config(copy / "config.yaml"))


def test_without_a_best_model_the_final_one_is_used_and_without_either_refused(run, tmp_path):
    # Distinct directories: a process loads each run directory once.
    obs = np.zeros((3, 32))
    a = copy_run(run, tmp_path / "a")
    shutil.rmtree(a / "best")
    final = TrainedPolicy("a", a).act(obs)
    b = copy_run(a, tmp_path / "b")
    shutil.rmtree(b / "final")
    with pytest.raises(RunError, match=r"b/final: missing; .*best/ .*final/"):
        TrainedPolicy("b", b)
    shutil.copytree(a / "final", b / "best")  # a manifest names no directory: it moves whole
    assert np.array_equal(TrainedPolicy("b", b).act(obs), final)


def test_resume_checks_its_checkpoint(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    cfg = load_config(copy / "config.yaml")
    ck = list_checkpoints(copy)[-1]
    (ck / TRAINING_STATE).write_bytes(b"damaged")
    with pytest.raises(RunDirError, match=r"step_000000000256/training_state\.pt: SHA-256 diff"):
        train(cfg, copy, resume=True, progress=False)
    shutil.rmtree(ck)  # the earlier checkpoint is complete: training continues from it
    result = train(cfg, copy, resume=True, progress=False)
    assert result.resumed_from == 128 and result.num_timesteps == 256


def test_a_model_without_tensorboard_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    # SB3 without a logger of its own makes an SB3-<time> directory under the temp dir at
    # every learn(); a model built without a TensorBoard directory logs nowhere instead.
    import tempfile

    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base, extra = ALGOS["ppo"]
    cfg = load_config(base, [*SMALL, *extra])
    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    model = build_model(cfg, venv, None)
    model.learn(64)
    assert model.num_timesteps >= 64
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")] == []


def test_statistics_restore_into_vecnormalize_as_its_own_pickle_did(tmp_path):
    # What --resume continues from: plain arrays restored into a fresh VecNormalize give the
    # same normalisation, reward scaling and settings as SB3's VecNormalize.load did.
    from stable_baselines3.common.vec_env import VecNormalize

    base, extra = ALGOS["ppo"]
    cfg = load_config(base, [*SMALL, *extra, "normalize.reward=true"])
    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    build_model(cfg, venv, None).learn(64)
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    old = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), make_vec_env(cfg, cfg.n_envs))
    new = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    NormStats.from_bytes(NormStats.of(venv).to_bytes(), Path("x")).restore(new)
    obs = check_observations(cfg, 64, seed=1)
    rewards = np.linspace(-5.0, 5.0, cfg.n_envs)
    assert np.array_equal(old.normalize_obs(obs), new.normalize_obs(obs))
    assert np.array_equal(old.normalize_reward(rewards), new.normalize_reward(rewards))
    for rms in ("obs_rms", "ret_rms"):
        a, b = getattr(old, rms), getattr(new, rms)
        assert np.array_equal(a.mean, b.mean) and np.array_equal(a.var, b.var)
        assert a.count == b.count
    for key in ("clip_obs", "clip_reward", "epsilon", "gamma", "norm_obs", "norm_reward"):
        assert getattr(old, key) == getattr(new, key), key


# ---------------------------------------------------------------- nothing runs ----


class _Touchable:
    """An object whose unpickling creates a marker file (as one running a command would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def _payload(marker: Path) -> bytes:
    return pickle.dumps(_Touchable(marker))


def _cloudpickled_model_zip(path: Path, marker: Path) -> None:
    """An SB3 ``model.zip`` whose ``data`` holds a serialised entry that creates ``marker``."""
    entry = {":type:": "<class 'type'>", ":serialized:": base64.b64encode(_payload(marker))}
    data = {"policy_class": {k: v if isinstance(v, str) else v.decode() for k, v in entry.items()}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", json.dumps(data))
        zf.writestr("_stable_baselines3_version", "2.9.2")


@pytest.fixture()
def marker(tmp_path):
    return tmp_path / "PWNED"


def _legacy_run(run: Path, to: Path, marker: Path) -> Path:
    """An old-format run directory: a real config, pickled statistics, cloudpickled models."""
    to.mkdir()
    shutil.copy(run / "config.yaml", to / "config.yaml")
    for name in ("vecnormalize.pkl", "best_vecnormalize.pkl"):
        (to / name).write_bytes(_payload(marker))
    for name in ("model.zip", "best_model.zip"):
        _cloudpickled_model_zip(to / name, marker)
    return to


def _data_run(run: Path, to: Path, marker: Path) -> Path:
    """A current-format run whose data files are pickles, listed with matching hashes."""
    copy = copy_run(run, to)
    for model_dir in (copy / "best", copy / "final"):
        buf = io.BytesIO()
        np.savez(buf, obs_mean=np.array([_Touchable(marker)], dtype=object))
        (model_dir / STATS).write_bytes(buf.getvalue())
        torch.save({"weight": _Touchable(marker)}, model_dir / WEIGHTS)
        rehash(model_dir, STATS)
        rehash(model_dir, WEIGHTS)
    return copy


def test_the_malicious_files_would_run_if_unpickled(run, tmp_path, marker):
    # The payloads are live: the old loaders run them. (Proves the next test can fail.)
    from stable_baselines3.common.save_util import load_from_zip_file

    legacy = _legacy_run(run, tmp_path / "legacy", marker)
    pickle.loads((legacy / "vecnormalize.pkl").read_bytes())
    assert marker.exists()
    marker.unlink()
    with contextlib.suppress(Exception):  # the payload has run before SB3 gives up
        load_from_zip_file(legacy / "model.zip", device="cpu")
    assert marker.exists()
    marker.unlink()
    data = _data_run(run, tmp_path / "data", marker)
    torch.load(data / "best" / WEIGHTS, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("form", ["legacy", "data"])
@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--scenarios", "luna_2022", "--episodes", "1", "--workers", "1"],
        ["export", "--format", "onnx"],
        ["export", "--format", "csv", "--scenario", "luna_2022"],
        ["export", "--format", "table", "--episodes", "1", "--bins", "2"],
    ],
    ids=["evaluate", "onnx", "csv", "table"],
)
def test_no_command_runs_a_crafted_run_directory(run, tmp_path, marker, capsys, form, command):
    build = _legacy_run if form == "legacy" else _data_run
    crafted = build(run, tmp_path / "crafted", marker)
    out = tmp_path / ("out" if command[0] == "evaluate" else "out.file")
    args = [*command, "--policy", str(crafted), "--out", str(out), "--no-progress"]
    if command[0] == "evaluate":
        args += ["--cache-dir", "none", "--no-report"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "Traceback" not in err
    if form == "legacy":
        assert "older fundgym" in err and "pickle" in err and "fundgym train --config" in err
    else:
        assert "cannot be read as plain" in err and str(crafted / "best") in err


def test_an_old_run_directory_is_refused_with_how_to_recreate_it(run, tmp_path, marker):
    legacy = _legacy_run(run, tmp_path / "legacy", marker)
    with pytest.raises(RunError, match=r"older fundgym .*fundgym train --config .*config\.yaml"):
        TrainedPolicy("legacy", legacy)
    assert not marker.exists()


def _as_before_model_directories(run: Path, to: Path) -> Path:
    """A genuine run in the layout fundgym wrote before: SB3's zip and a pickled VecNormalize."""
    old = copy_run(run, to)
    cfg = load_config(old / "config.yaml")

    def pickled_stats(model_dir: Path, path: Path) -> None:
        venv = wrap_normalize(cfg, make_vec_env(cfg, 1), training=True)
        NormStats.from_bytes((model_dir / STATS).read_bytes(), Path("x")).restore(venv)
        venv.save(str(path))

    checkpoints = list_checkpoints(old)
    venv = wrap_normalize(cfg, make_vec_env(cfg, 1), training=True)
    for new, zip_name, pkl_name in (
        ("best", "best_model.zip", "best_vecnormalize.pkl"),
        ("final", "model.zip", "vecnormalize.pkl"),
    ):
        model = resume_model(cfg, venv, old, checkpoints[-1], None)
        model.policy.load_state_dict(torch.load(old / new / WEIGHTS, weights_only=True))
        model.save(old / zip_name)
        pickled_stats(old / new, old / pkl_name)
        shutil.rmtree(old / new)
    for ck in checkpoints:
        resume_model(cfg, venv, old, ck, None).save(ck / "model.zip")  # SB3's pickled zip
        pickled_stats(ck, ck / "vecnormalize.pkl")
        (ck / "state.json").write_text(json.dumps({"num_timesteps": int(ck.name[5:])}))
        for name in (MANIFEST, WEIGHTS, STATS, TRAINING_STATE):
            (ck / name).unlink()
    return old


def test_resume_rewrites_an_own_old_run_as_model_directories(run, tmp_path):
    old = _as_before_model_directories(run, tmp_path / "old")
    with pytest.raises(RunError, match=r"older fundgym .*--resume` rewrites it"):
        TrainedPolicy("old", old)
    result = train(load_config(old / "config.yaml"), old, resume=True, progress=False)
    assert result.resumed_from == 256  # from the converted checkpoint
    assert not list(old.glob("*.zip")) and not list(old.glob("*.pkl"))
    assert len(list_checkpoints(old)) == 2
    obs = check_observations(load_config(run / "config.yaml"), 64, seed=2).astype(np.float64)
    converted = TrainedPolicy("old", old).act(obs)  # the old best model, exactly
    assert np.array_equal(converted, TrainedPolicy("run", run).act(obs))
    final, before = (torch.load(d / "final" / WEIGHTS, weights_only=True) for d in (old, run))
    assert all(torch.equal(final[k], before[k]) for k in before)  # nothing trained: kept


def test_acting_leaves_the_process_thread_count_as_it_was(run):
    # A trained policy acts on one torch thread (the same actions on any machine) but must not
    # leave the process there: a training after an in-process evaluation would change.
    obs = np.random.default_rng(0).normal(size=(4, 32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = TrainedPolicy("run", run).act(obs)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert np.array_equal(TrainedPolicy("run", run).act(obs), two)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
