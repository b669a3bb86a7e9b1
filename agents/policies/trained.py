"""Trained policies: a ``fundgym train`` run directory's model, loaded once per process.

Also what a run directory holds as data (its resolved config, model and normalisation files),
which export reads too.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import load_config
from agents.policies.base import FloatArray, SpecError
from envs.exchange_env import OBS_NAMES


class TrainedPolicy:
    """A ``fundgym train`` run's model, observations normalised as in training, deterministic.

    Args:
        name: Display name.
        run_dir: The run directory.
    """

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self._predict = _load_run(str(run_dir))

    def reset(self, n_envs: int) -> None:
        """Feed-forward policies keep no state."""

    def act(self, obs: FloatArray) -> FloatArray:
        """The model's deterministic action."""
        return self._predict(obs)


def run_config_file(run_dir: Path, error: type[Exception] = SpecError) -> Path:
    """A run directory's resolved ``config.yaml``; ``error`` names what is missing."""
    if not run_dir.is_dir():
        raise error(
            f"{run_dir}: no such run directory (expected one written by `fundgym train`, "
            "holding config.yaml and model.zip)"
        )
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise error(f"{config_path}: missing; a run directory holds its resolved config")
    return config_path


def run_model_files(run_dir: Path) -> tuple[Path, Path | None]:
    """The model and normalisation files a run is evaluated with (best model if saved)."""
    for model, norm in (
        ("best_model.zip", "best_vecnormalize.pkl"),
        ("model.zip", "vecnormalize.pkl"),
    ):
        if (run_dir / model).is_file():
            n = run_dir / norm
            return run_dir / model, (n if n.is_file() else None)
    raise SpecError(f"{run_dir}: neither best_model.zip nor model.zip")


def space_mismatch(model: Any, n_actions: int) -> str | None:
    """Why ``model`` cannot act in this environment, or ``None`` when its spaces fit.

    A run from another fundgym version (another observation layout) or config (another set of
    controlled levers) would otherwise fail deep inside torch with a matrix-shape error.
    """
    n_obs = len(OBS_NAMES)
    obs_shape, act_shape = model.observation_space.shape, model.action_space.shape
    if obs_shape == (n_obs,) and act_shape == (n_actions,):
        return None
    return (
        f"the model maps observations {obs_shape} to actions {act_shape}, but this "
        f"environment has ({n_obs},) observations and ({n_actions},) actions; it was trained "
        "by another fundgym version: retrain it"
    )


@functools.lru_cache(maxsize=8)
def _load_run(run_dir: str) -> Callable[[FloatArray], FloatArray]:
    """Load a run's model once per process (workers evaluate many scenarios with it)."""
    import stable_baselines3 as sb3
    import torch

    torch.set_num_threads(1)
    path = Path(run_dir)
    cfg = load_config(path / "config.yaml")
    model_path, norm_path = run_model_files(path)
    algo = getattr(sb3, cfg.algo.upper())
    try:
        model = algo.load(model_path, device="cpu")
    except Exception as exc:
        raise SpecError(f"{model_path}: cannot load a {cfg.algo.upper()} model ({exc})") from exc
    mismatch = space_mismatch(model, len(cfg.env.controlled))
    if mismatch:
        raise SpecError(f"{model_path}: {mismatch}")
    vecnorm = None
    if norm_path is not None:
        try:
            vecnorm = pickle.loads(norm_path.read_bytes())
        except Exception as exc:
            raise SpecError(f"{norm_path}: cannot load VecNormalize statistics ({exc})") from exc

    def predict(obs: FloatArray) -> FloatArray:
        x = vecnorm.normalize_obs(obs.astype(np.float32)) if vecnorm is not None else obs
        action, _ = model.predict(x, deterministic=True)
        return np.asarray(action, dtype=np.float64)

    return predict
