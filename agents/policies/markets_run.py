"""A trained multi-market run loaded to act: its settings, its network, its environment.

``fundgym train`` with a ``markets:`` config trains on ``fundgym/MarketsInsuranceFund-v0``; this
loads such a run (``best/``, else ``final/``; plain tensors checked against their manifest,
nothing unpickled) as a deterministic policy over one observation, centred on a scenario's
defaults as it was trained, and builds the environment it acts in. ``fundgym markets --run``
scores it (:mod:`fundgym.agents.evaluate.markets_runs`) and ``fundgym export`` writes its
schedule and network (:mod:`fundgym.agents.export.markets_schedule`,
:mod:`fundgym.agents.export.onnx`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.action_map import centred_on
from fundgym.agents.config import ConfigError, MarketsConfig, load_config, markets_env_kwargs
from fundgym.agents.policies.base import SpecError
from fundgym.agents.policies.runs import (
    BEST,
    FINAL,
    default_model_dir,
    is_seed_group,
    load_model,
    model_dir,
    seed_runs,
)
from fundgym.agents.policies.trained import run_config_file
from fundgym.envs.market.sampler import MarketsSamplerSettings
from fundgym.envs.markets_env import MarketsInsuranceFundEnv
from fundgym.envs.scenarios import Scenario

Act = Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
"""A policy as one observation in, one action (the env's target positions) out."""


@dataclass(frozen=True)
class MarketsRun:
    """A multi-market run loaded for scoring: its settings and its network.

    Attributes:
        network: The model's deterministic action for one observation, before the
            centring map (``markets.centred``: :meth:`act` applies it on a scenario's env).
        model_dir: The model directory the network was loaded from (``best/`` or
            ``final/``; ``None`` for a network made in code).
    """

    run_dir: Path
    markets: MarketsConfig
    network: Act
    n_obs: int
    n_act: int
    model_dir: Path | None = None

    def act(self, env: MarketsInsuranceFundEnv) -> Act:
        """The run's policy on ``env``: its network, centred on ``env``'s defaults if asked."""
        if not self.markets.centred:
            return self.network
        amap = centred_on(env.default_action())
        network = self.network

        def centred(obs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            out: np.ndarray[Any, Any] = amap(network(obs)[None])[0]
            return out

        return centred


#: Which of a run's models to load: ``best`` (the held-out evaluation's best, else ``final/``
#: when no evaluation finished) or ``final`` (the model at the last step).
MODELS = (BEST, FINAL)


def load_markets_run(run_dir: Path, model: str = BEST) -> MarketsRun:
    """Load a run ``fundgym train`` made from a ``markets:`` config.

    Args:
        run_dir: The run directory.
        model: ``best`` (``best/``, else ``final/``) or ``final`` (``final/``). A held-out
            evaluation of a few episodes can pick an early model by luck: on drawn days
            around ``alt_contagion`` five runs' ``final/`` models lost users x0.59 of the
            defaults' against their ``best/`` models' x0.78 (docs/markets.md).

    Raises:
        SpecError: Not a run directory, an invalid config, a one-market run, or a model
            directory that is missing or changed (the message names the file).
    """
    config_path = run_config_file(run_dir)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise SpecError(f"{config_path}: not a valid training config:\n{exc}") from exc
    if cfg.markets is None:
        raise SpecError(
            f"{config_path}: a one-market run (no markets: section); score it with "
            f"`fundgym evaluate --policies run:{run_dir}`"
        )
    if model not in MODELS:
        raise SpecError(f"model {model!r}: allowed: {list(MODELS)}")
    which = default_model_dir(run_dir) if model == BEST else model_dir(run_dir, FINAL)
    loaded = load_model(run_dir, which, cfg)
    obs_shape = loaded.policy.observation_space.shape
    act_shape = loaded.policy.action_space.shape

    def act(obs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        action: np.ndarray[Any, Any] = loaded.predict(obs[None].astype(np.float32))[0]
        return action

    return MarketsRun(run_dir, cfg.markets, act, int(obs_shape[0]), int(act_shape[0]), which)


def markets_env(
    run: MarketsRun, scenario: Scenario, sampler: MarketsSamplerSettings | None = None
) -> MarketsInsuranceFundEnv:
    """The run's environment on ``scenario``, checked to fit its network.

    Under the run's settings but its training sampler (``markets.sampler``): scoring plays
    ``scenario`` as written, unless ``sampler`` draws each episode's day around it (from the
    episode's seed: the same day for the run's model and for the defaults).

    Raises:
        SpecError: The scenario gives other action or observation sizes than the run's
            network (other markets or collateral assets).
    """
    try:
        # The run's training sampler never: the scenario as written, or the caller's days.
        env = MarketsInsuranceFundEnv(scenario, **markets_env_kwargs(run.markets, sampler=sampler))
    except ValueError as exc:
        raise SpecError(f"{run.run_dir}: its markets settings on {scenario.name!r}: {exc}") from exc
    n_obs = env.observation_space.shape[0]  # type: ignore[index]
    n_act = env.action_space.shape[0]  # type: ignore[index]
    if (n_obs, n_act) != (run.n_obs, run.n_act):
        raise SpecError(
            f"{run.run_dir}: its network takes {run.n_obs} observations and gives {run.n_act} "
            f"actions; {scenario.name!r} under its settings has {n_obs} and {n_act} (other "
            f"markets or collateral assets; it was trained on {run.markets.scenario!r})"
        )
    return env


def load_markets_runs(path: Path, model: str = BEST) -> dict[int | None, MarketsRun]:
    """A run (key ``None``) or a multi-seed directory's runs by training seed.

    Args:
        path: A run directory or a multi-seed directory (``fundgym train --seeds``).
        model: Which model of each run (:func:`load_markets_run`).

    Raises:
        SpecError: As :func:`load_markets_run`, or seeds trained from different configs.
    """
    if not is_seed_group(path):
        return {None: load_markets_run(path, model)}
    return {seed: load_markets_run(run, model) for seed, run in seed_runs(path).items()}


__all__ = ["MODELS", "Act", "MarketsRun", "load_markets_run", "load_markets_runs", "markets_env"]
