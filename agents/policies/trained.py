"""Trained policies: a ``fundgym train`` run directory's model, loaded once per process.

The model is rebuilt from the run's config and plain tensors (:mod:`fundgym.agents.policies.runs`);
nothing in the run directory is unpickled, and a run whose files are missing or changed is
refused, naming the file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fundgym.agents.action_map import action_map
from fundgym.agents.config import ConfigError, load_config
from fundgym.agents.policies.base import FloatArray, SpecError
from fundgym.agents.policies.runs import STATS, WEIGHTS, RunError, default_model_dir, load_model
from fundgym.envs.exchange_env import OBS_NAMES


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
            "holding config.yaml and its model in best/ or final/)"
        )
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise error(f"{config_path}: missing; a run directory holds its resolved config")
    return config_path


def run_model_files(run_dir: Path) -> tuple[Path, Path | None]:
    """The weights and normalisation files a run is evaluated with (best model if saved).

    Raises:
        RunError: The run has no model directory (or is of the old, pickled format).
    """
    path = default_model_dir(run_dir)
    stats = path / STATS
    return path / WEIGHTS, (stats if stats.is_file() else None)


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
    """Load a run's model once per process (workers evaluate many scenarios with it).

    The returned ``predict`` runs torch on one thread (the same actions however many cores a
    worker has) and puts the process's thread count back after each call: set once here for
    the whole process, it used to change the numbers of a training that followed an
    evaluation in the same process (a demo, a notebook). Setting it costs about a microsecond.
    """
    import torch

    path = Path(run_dir)
    config_path = run_config_file(path)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise SpecError(f"{config_path}: not a valid training config:\n{exc}") from exc
    if cfg.markets is not None:
        raise SpecError(
            f"{config_path}: a multi-market run (its config has markets:), which acts on "
            f"MarketsInsuranceFund-v0: score it with `fundgym markets --run {path}`"
        )
    model_path = default_model_dir(path)
    loaded = load_model(path, model_path, cfg)
    mismatch = space_mismatch(loaded.policy, len(cfg.env.controlled))
    if mismatch:
        raise RunError(f"{model_path / WEIGHTS}: {mismatch}")
    amap = action_map(cfg.env, cfg.centred_levers)
    network = loaded.predict

    def centred(obs: FloatArray) -> FloatArray:
        return amap(network(obs))

    inner = centred if amap.columns else network  # nothing centred: the network's own

    def predict(obs: FloatArray) -> FloatArray:
        threads = torch.get_num_threads()
        if threads == 1:
            return inner(obs)
        torch.set_num_threads(1)
        try:
            return inner(obs)
        finally:
            torch.set_num_threads(threads)

    return predict
