"""ONNX export: the graph equals the SB3 model, outputs natural units, says what it is."""

import hashlib
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import fundgym.agents.export.onnx as onnx_export
from fundgym.agents.config import load_config
from fundgym.agents.export.onnx import (
    ExportError,
    OnnxExport,
    check_observations,
    export_onnx,
    reference_outputs,
)
from fundgym.agents.policies.runs import load_model
from fundgym.agents.training.train import train
from fundgym.envs.controls import ALLOCATION, ALLOCATION_SHARPNESS, PARAMS
from fundgym.envs.exchange_env import OBS_NAMES
from fundgym.envs.levers import LEVERS
from tests.tiny_runs import ALL_NINE

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"
SAC = ROOT / "configs" / "train" / "sac.yaml"
LAGRANGIAN = ROOT / "configs" / "train" / "ppo_lagrangian.yaml"

# Tiny runs (a second or two each): 4 exchanges x 32 accounts, one-hour episodes.
# Every lever controlled, so the four buckets' softmax inside the graph is exercised.
SMALL = ["n_envs=4", "env.n_accounts=32", "env.horizon_minutes=60", "eval.episodes=2", *ALL_NINE]
SHORT = ["total_timesteps=64", "eval.freq=64", "checkpoint.freq=1000"]
OFF_POLICY = "hyperparameters={learning_starts: 16, buffer_size: 1000}"
RUNS = {
    "ppo": (
        PPO,
        [
            "total_timesteps=256",
            "hyperparameters.n_steps=16",
            "hyperparameters.batch_size=32",
            "hyperparameters.n_epochs=2",
            "eval.freq=128",
            "checkpoint.freq=1000",
        ],
    ),
    "sac": (SAC, [*SHORT, OFF_POLICY]),
    "td3": (PPO, [*SHORT, "algo=td3", OFF_POLICY]),
    "a2c": (PPO, [*SHORT, "algo=a2c", "hyperparameters={n_steps: 4}"]),
    # PPO's actor-critic; the cost critic stays in the training state, out of the graph.
    "ppo_lagrangian": (
        LAGRANGIAN,
        [*SHORT, "hyperparameters={n_steps: 16, batch_size: 32, n_epochs: 2}"],
    ),
    # Raw observations into the network (rewards still normalised: normalize.npz exists),
    # and only some parameters controlled: two allocation buckets keep their default logits.
    "subset": (
        PPO,
        [
            *SHORT,
            "normalize.observation=false",
            "env.controlled=[mmr, imr_multiple, alloc_stable, alloc_volatile]",
            "hyperparameters={n_steps: 16, batch_size: 32, n_epochs: 2}",
        ],
    ),
    # The same levers with the fund kept out of yield and hedge (env.allocation_buckets).
    "held": (
        PPO,
        [
            *SHORT,
            "env.controlled=[mmr, imr_multiple, alloc_stable, alloc_volatile]",
            "env.allocation_buckets=[volatile, stable]",  # any order
            "hyperparameters={n_steps: 16, batch_size: 32, n_epochs: 2}",
        ],
    ),
    # The allocation's actions centred on the buckets' start (all stable), the rest not.
    "centred": (
        PPO,
        [
            *SHORT,
            "centred_levers=[alloc_hedge, alloc_stable, alloc_yield, alloc_volatile]",
            "hyperparameters={n_steps: 16, batch_size: 32, n_epochs: 2}",
        ],
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    for name, (base, extra) in RUNS.items():
        train(load_config(base, [*SMALL, *extra]), root / name, progress=False)
    return {name: root / name for name in RUNS}


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("tensorboard", "checkpoints"))
    return to


def rehash(model_dir: Path, name: str) -> None:
    """Record ``name``'s current hash in the manifest (past the hash check, to the parser)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def run_onnx(path: Path, obs: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    action, params = session.run(["action", "params"], {"observation": obs})
    return {"action": action, "params": params}


def fresh_observations(run: Path) -> np.ndarray:
    """Observations the export's check did not see: another seed, plus the box's corners."""
    cfg = load_config(run / "config.yaml")
    corners = np.array([np.full(len(OBS_NAMES), v) for v in (-10.0, 0.0, 10.0)])
    return np.concatenate([check_observations(cfg, 200, seed=123), corners]).astype(np.float32)


def props_of(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3", "a2c", "ppo_lagrangian"])
def test_export_matches_the_sb3_model(runs, tmp_path, algo):
    out = tmp_path / "policy.onnx"
    result = export_onnx(runs[algo], out)
    assert result == OnnxExport(out, "observation", ("action", "params"), result.max_abs_diff, 512)
    assert result.max_abs_diff < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]  # no temporary files

    obs = fresh_observations(runs[algo])
    got = run_onnx(out, obs)
    want = reference_outputs(runs[algo], obs)
    n = len(load_config(runs[algo] / "config.yaml").env.controlled)
    for name in ("action", "params"):
        assert got[name].shape == (len(obs), n) and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4)
    assert np.abs(got["action"]).max() <= 1.0


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_params_are_natural_units_inside_each_range(runs, tmp_path, algo):
    out = export_onnx(runs[algo], tmp_path / "policy.onnx").path
    got = run_onnx(out, fresh_observations(runs[algo]))
    controlled = load_config(runs[algo] / "config.yaml").env.controlled
    assert controlled == tuple(PARAMS)  # every parameter, the four buckets included
    for j, name in enumerate(controlled):
        column, r = got["params"][:, j], PARAMS[name]
        low, high = (0.0, 1.0) if name in ALLOCATION else (r.low, r.high)
        assert np.all((column >= low * (1 - 1e-6)) & (column <= high * (1 + 1e-6))), name
        if name not in ALLOCATION:  # the documented map, written out by hand
            u = (got["action"][:, j].astype(np.float64) + 1) / 2
            want = r.low * (r.high / r.low) ** u if r.log else r.low + u * (r.high - r.low)
            np.testing.assert_allclose(column, want, rtol=1e-6)
    weights = got["params"][:, [controlled.index(n) for n in ALLOCATION]]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)


def test_metadata_says_what_the_file_is(runs, tmp_path):
    out = export_onnx(runs["ppo"], tmp_path / "policy.onnx").path
    props = props_of(out)
    assert props["schema_version"] == "1"
    assert props["fundgym_version"] == version("fundgym")
    assert props["algo"] == "ppo"
    assert props["model_file"] == "best/policy.pt"
    assert props["vecnormalize_file"] == "best/normalize.npz"
    assert props["config"] == (runs["ppo"] / "config.yaml").read_text()
    assert json.loads(props["obs_names"]) == list(OBS_NAMES)
    assert json.loads(props["param_names"]) == list(PARAMS)
    params = {p["name"]: p for p in json.loads(props["params"])}
    assert [p["index"] for p in params.values()] == list(range(len(PARAMS)))
    assert params["mmr"]["scale"] == "log" and params["mmr"]["low"] == PARAMS["mmr"].low
    assert params["imr_multiple"]["scale"] == "linear"
    assert params["alloc_hedge"]["scale"] == "softmax"
    # units come from the lever registry; an allocation column is its bucket's weight
    assert params["mmr"]["unit"] == LEVERS["mmr"].unit == "fraction of notional"
    assert params["imr_multiple"]["unit"] == "multiple of mmr"
    assert params["alloc_hedge"]["unit"] == "fraction of the fund in the hedge bucket"
    assert json.loads(props["observation_normalisation"])["observation"] is True
    assert float(props["check_max_abs_diff"]) < 1e-4 and props["check_n"] == "512"
    assert "max_step" in props["targets"] and "margin_notice_minutes" in props["targets"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("observation", ["batch", 32])]
    assert [o.name for o in session.get_outputs()] == ["action", "params"]


def test_run_without_observation_normalisation_and_a_subset_controlled(runs, tmp_path):
    run = runs["subset"]
    out = tmp_path / "policy.onnx"
    assert export_onnx(run, out, n_check=64).max_abs_diff < 1e-4
    props = props_of(out)
    assert json.loads(props["observation_normalisation"]) == {"observation": False}
    assert json.loads(props["param_names"]) == [
        "mmr",
        "imr_multiple",
        "alloc_stable",
        "alloc_volatile",
    ]
    assert json.loads(props["fixed_allocation_logits"]) == {
        "alloc_yield": -1.0,
        "alloc_hedge": -1.0,
    }
    obs = fresh_observations(run)
    got = run_onnx(out, obs)
    # Raw observations go straight into the network.
    policy = load_model(run, run / "best", load_config(run / "config.yaml")).policy
    action, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_allclose(got["action"], action, rtol=0, atol=1e-5)
    # Bucket weights: softmax(3 x logits) with the uncontrolled buckets at their default -1.
    e = np.exp(ALLOCATION_SHARPNESS * np.c_[action[:, 2:], np.full((len(obs), 2), -1.0)])
    np.testing.assert_allclose(
        got["params"][:, 2:], e[:, :2] / e.sum(axis=1, keepdims=True), atol=1e-6
    )
    assert np.all(got["params"][:, 2:].sum(axis=1) < 1.0)  # the other two buckets hold the rest


def test_buckets_not_held_weigh_zero_in_the_graph(runs, tmp_path):
    # The fund kept out of yield and hedge: the softmax runs over the two controlled logits.
    run = runs["held"]
    out = tmp_path / "policy.onnx"
    assert export_onnx(run, out, n_check=64).max_abs_diff < 1e-4
    assert json.loads(props_of(out)["allocation_buckets"]) == ["stable", "volatile"]
    obs = fresh_observations(run)
    got = run_onnx(out, obs)
    e = np.exp(ALLOCATION_SHARPNESS * got["action"][:, 2:].astype(np.float64))
    np.testing.assert_allclose(got["params"][:, 2:], e / e.sum(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(got["params"][:, 2:].sum(axis=1), 1.0, atol=1e-6)
    want = reference_outputs(run, obs)
    np.testing.assert_allclose(got["params"], want["params"], rtol=0, atol=1e-4)


def test_final_model_and_fallback_when_no_best_model(runs, tmp_path):
    final = export_onnx(runs["sac"], tmp_path / "final.onnx", model="final", n_check=16)
    assert props_of(final.path)["model_file"] == "final/policy.pt"
    run = copy_run(runs["sac"], tmp_path / "run")
    shutil.rmtree(run / "best")
    with pytest.warns(UserWarning, match=r"run/best is absent.*final/"):
        fallback = export_onnx(run, tmp_path / "fallback.onnx", n_check=16)
    props = props_of(fallback.path)
    want = ("final/policy.pt", "final/normalize.npz")
    assert (props["model_file"], props["vecnormalize_file"]) == want


def test_missing_or_corrupt_files_are_named(runs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "policy.onnx"
    with pytest.raises(ExportError, match="no-such-run: no such run directory"):
        export_onnx(tmp_path / "no-such-run", out)
    run = copy_run(runs["ppo"], tmp_path / "run")
    with pytest.raises(ExportError, match="model = 'latest'"):
        export_onnx(run, out, model="latest")

    shutil.rmtree(run / "final")
    with pytest.raises(ExportError, match=r"run/final: missing; .*best/ .*final/"):
        export_onnx(run, out, model="final")
    (run / "best" / "policy.pt").write_bytes(b"not a tensor file at all")
    with pytest.raises(ExportError, match=r"best/policy\.pt: SHA-256 differs"):
        export_onnx(run, out)
    with pytest.raises(ExportError, match=r"best/policy\.pt: SHA-256 differs"):
        reference_outputs(run, np.zeros((1, len(OBS_NAMES))))
    rehash(run / "best", "policy.pt")
    with pytest.raises(ExportError, match=r"best/policy\.pt: cannot be read as plain tensors"):
        export_onnx(run, out)

    shutil.copy(runs["ppo"] / "best" / "policy.pt", run / "best" / "policy.pt")
    rehash(run / "best", "policy.pt")
    (run / "best" / "normalize.npz").write_bytes(b"\x00garbage")
    rehash(run / "best", "normalize.npz")
    with pytest.raises(ExportError, match=r"best/normalize\.npz: cannot be read as plain"):
        export_onnx(run, out)
    (run / "best" / "normalize.npz").unlink()
    with pytest.raises(ExportError, match=r"best/normalize\.npz: missing"):
        export_onnx(run, out)
    (run / "config.yaml").unlink()
    with pytest.raises(ExportError, match=r"config\.yaml: missing"):
        export_onnx(run, out)
    assert list(out_dir.iterdir()) == []  # nothing written, nothing half-written


def test_a_failed_check_leaves_the_previous_file_untouched(runs, tmp_path, monkeypatch):
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"the previous export")
    monkeypatch.setattr(onnx_export, "TOLERANCE", 0.0)  # no difference can pass
    with pytest.raises(ExportError, match=r"policy\.onnx: not written; .* differs .* by up to"):
        export_onnx(runs["ppo"], out, n_check=16)
    assert out.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]


def test_reference_outputs_want_a_batch_of_observations(runs):
    with pytest.raises(ValueError, match=r"shape \(batch, 32\), got \(32,\)"):
        reference_outputs(runs["ppo"], np.zeros(len(OBS_NAMES)))


def test_a_centred_run_exports_its_actions_as_moves_from_the_start(runs, tmp_path):
    """The graph's ``action`` is what the environment gets: ``clip(start + 2 a, -1, 1)`` on the
    centred allocation columns (start: stable +1, the others -1), the network's own ``a`` on
    the rest."""
    run = runs["centred"]
    out = export_onnx(run, tmp_path / "policy.onnx")
    assert out.max_abs_diff < 1e-4
    obs = fresh_observations(run)
    got = run_onnx(out.path, obs)
    cfg = load_config(run / "config.yaml")
    raw = load_model(run, run / "best", cfg).predict(obs)  # the network's own actions
    want = raw.copy()
    for name, start in zip(ALLOCATION, (1.0, -1.0, -1.0, -1.0), strict=True):
        j = cfg.env.controlled.index(name)
        want[:, j] = np.clip(start + 2.0 * raw[:, j], -1.0, 1.0)
    np.testing.assert_allclose(got["action"], want, rtol=0, atol=1e-5)
    moved = [cfg.env.controlled.index(n) for n in ALLOCATION]
    assert not np.allclose(want[:, moved], raw[:, moved], atol=1e-3)  # the map did something
    np.testing.assert_allclose(got["params"], reference_outputs(run, obs)["params"], atol=1e-4)
