"""A trained policy's action, centred on its levers' starting values where the config asks.

The environment reads an action coordinate as its lever's *target position* in the action range
([-1, 1], :mod:`fundgym.envs.controls`), so a policy's zero action asks for the middle of every
range: for the fund's allocation, a quarter of the fund in each bucket (stable, yield, the
listed asset, puts). PPO starts from a zero-mean Gaussian, so the allocation it explores first
is that mix, and all-stable, the lever's default and the holding the fund is judged against,
is a corner of the action box it must learn its way to.

A **centred** lever (``centred_levers`` in a training config) reads its action ``a`` as a move
from where the lever starts (its default, or ``env.fixed``'s value): target position
``clip(start + 2 a, -1, 1)``. Action 0 holds the start; every position of the range is still
reachable (no two positions are more than 2 apart), and beyond the range's edge the target
stays on it. A residual policy around a baseline, as in residual reinforcement learning.

The map sits between the network and the environment, in the one place each consumer of a
trained network's actions reaches: the training and evaluation environments
(:class:`fundgym.agents.training.sb3_env.FundGymVecEnv`), a loaded run's policy
(:mod:`fundgym.agents.policies.trained`) and the exported ONNX graph, whose ``action`` output is
what the environment receives. Uncentred columns pass through untouched, so a config that
centres nothing gives the same actions, to the bit, as before the map existed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from fundgym.envs.config import EnvConfig
from fundgym.envs.controls import DEFAULTS, PARAMS

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Positions a centred lever's action spans each way from its start: the range's width, so
#: that every position is reachable from any start.
CENTRED_SPAN = 2.0


def start_positions(fixed: Mapping[str, float | None]) -> dict[str, float]:
    """Every lever's starting position: ``fixed``'s value where set, else the lever's default."""
    start = {**DEFAULTS, **{k: v for k, v in fixed.items() if v is not None}}
    return {name: float(PARAMS[name].to_position(start[name])) for name in PARAMS}


@dataclass(frozen=True)
class ActionMap:
    """The network's action -> the environment's target positions.

    Attributes:
        columns: Action columns of the centred levers (ascending).
        start: Their starting positions, in the same order.
    """

    columns: tuple[int, ...] = ()
    start: tuple[float, ...] = ()

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """Target positions for ``action`` (``(n, n_controlled)``).

        With no lever centred, ``action`` itself (the same object, dtype and bits).
        """
        if not self.columns:
            return action
        a = np.array(action, dtype=np.float64)
        cols = list(self.columns)
        start = np.asarray(self.start, dtype=np.float64)
        a[:, cols] = np.minimum(np.maximum(start + CENTRED_SPAN * a[:, cols], -1.0), 1.0)
        return a


def action_map(env: EnvConfig, centred: Sequence[str]) -> ActionMap:
    """The map of a config whose ``env`` controls ``env.controlled`` and centres ``centred``."""
    if not centred:
        return ActionMap()
    start = start_positions(dataclasses.asdict(env.fixed))
    cols = sorted(env.controlled.index(name) for name in centred)
    return ActionMap(tuple(cols), tuple(start[env.controlled[j]] for j in cols))


def centred_on(start: Sequence[float] | FloatArray) -> ActionMap:
    """Every action column centred on ``start`` (the positions action 0 holds).

    The multi-market env's map with ``markets.centred``: ``start`` is its
    :meth:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv.default_action`, so a fresh
    network's mean action runs the scenario as written.
    """
    return ActionMap(tuple(range(len(start))), tuple(float(x) for x in start))


class CentredActions(gym.ActionWrapper[Any, Any, Any]):
    """A multi-market env whose actions are moves from its levers' defaults (:func:`centred_on`).

    What ``markets.centred`` trains on; a loaded run applies the same map to its network's
    action before the unwrapped env (:mod:`fundgym.agents.evaluate.markets_runs`).
    """

    def __init__(self, env: Any) -> None:
        """Wrap ``env``, which must have ``default_action()`` (the positions action 0 holds)."""
        super().__init__(env)
        self.map = centred_on(env.default_action())

    def action(self, action: Any) -> Any:
        """The env's target positions for the network's ``action``."""
        return self.map(np.asarray(action, dtype=np.float64)[None])[0]
