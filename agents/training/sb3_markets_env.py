"""The multi-market vector env as a stable-baselines3 ``VecEnv`` (``envs/`` never imports SB3).

:class:`MarketsVecEnv` adapts :class:`fundgym.envs.markets_env.MarketsInsuranceFundVectorEnv`
so a ``markets:`` training config steps its exchanges as one batch of the multi-market
simulator instead of one environment each in SB3's ``DummyVecEnv``: same-step autoreset (SB3's
contract) with ``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``, seeds from
:meth:`VecEnv.seed` applied at the next reset (exchange ``i`` gets ``seed + i``, as
``DummyVecEnv`` seeds env ``i``), and ``markets.centred``'s map on the network's actions (every
lever centred on its default, as :class:`~fundgym.agents.action_map.CentredActions` centres one
env's). Exchange ``i`` returns what ``DummyVecEnv``'s env ``i`` would, bit for bit, while the
batch's episode runs; the exchanges share one clock, so an insolvent exchange ends its
siblings' episodes (truncated), where ``DummyVecEnv``'s would run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvStepReturn,
)

from fundgym.agents.action_map import ActionMap, centred_on
from fundgym.agents.training.sb3_env import BatchVecEnv
from fundgym.envs.markets_env import MarketsInsuranceFundVectorEnv
from fundgym.envs.scenarios import Scenario


class MarketsVecEnv(BatchVecEnv):
    """SB3 ``VecEnv`` over ``num_envs`` exchanges of ``fundgym/MarketsInsuranceFund-v0``.

    Args:
        num_envs: Exchanges stepped together.
        scenario: The multi-market scenario (a name, a path or a :class:`Scenario`).
        centred: Read the network's actions as moves from the levers' defaults
            (:func:`~fundgym.agents.action_map.centred_on`; ``markets.centred``).
        **env_kwargs: ``MarketsInsuranceFundEnv``'s keyword arguments.
    """

    venv: MarketsInsuranceFundVectorEnv

    def __init__(
        self,
        num_envs: int,
        scenario: str | Scenario,
        centred: bool = False,
        **env_kwargs: Any,
    ) -> None:
        self.venv = MarketsInsuranceFundVectorEnv(
            num_envs, scenario, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs
        )
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )
        self._actions: np.ndarray | None = None
        self._action_map = centred_on(self.venv.default_action()) if centred else ActionMap()

    def reset_rows(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Each exchange's reset info (its episode seed) from the vector env's."""
        return [{"seed": int(info["seed"][i])} for i in range(self.num_envs)]

    def step_wait(self) -> VecEnvStepReturn:
        """Step every exchange; when the batch's episode ends, every exchange restarts."""
        assert self._actions is not None, "step_async() first"
        obs, reward, term, trunc, infos, last = self.venv.step_list(self._actions)
        dones = term | trunc
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                infos[i]["terminal_observation"] = last[i].copy()
            self.reset_infos = self.reset_rows({"seed": self.venv.episode_seeds})
        return obs, reward.astype(np.float32), dones, infos

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No frames: the multi-market env does not render."""
        return [None] * self.num_envs
