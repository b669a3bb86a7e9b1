"""The batched environment as a stable-baselines3 ``VecEnv`` (``envs/`` never imports SB3).

SB3 only recognises its own ``VecEnv`` class; handed a Gymnasium ``VectorEnv`` it would wrap
it as one environment. :class:`FundGymVecEnv` adapts :class:`fundgym.envs.exchange_env.
InsuranceFundVectorEnv` instead, so all exchanges still step as one array program: same-step
autoreset with ``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``, seeds from
:meth:`VecEnv.seed` applied at the next reset (exchange ``i`` gets ``seed + i``), and each
step's scalar ``info`` entries (``cost``, ``fund_balance_usd``, ``reward_components``, ...)
copied per exchange.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from fundgym.envs.exchange_env import InsuranceFundVectorEnv


class FundGymVecEnv(VecEnv):
    """SB3 ``VecEnv`` over ``num_envs`` exchanges of ``fundgym/InsuranceFund-v0``.

    Args:
        num_envs: Exchanges stepped together.
        config: Optional YAML file of environment settings.
        **env_kwargs: Environment keyword arguments (see ``InsuranceFundEnv``).
    """

    def __init__(self, num_envs: int, config: str | None = None, **env_kwargs: Any) -> None:
        self.venv = InsuranceFundVectorEnv(num_envs=num_envs, config=config, **env_kwargs)
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        """Reset every exchange (with the seeds set by :meth:`seed`, once)."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every exchange; finished ones restart in the same step."""
        assert self._actions is not None, "step_async() first"
        obs, reward, term, trunc, info = self.venv.step(self._actions)
        dones = term | trunc
        # Each array becomes a Python list once (``tolist`` converts every element in C) and
        # each exchange's dicts are zipped from the lists' rows: an element-by-element
        # ``.item()`` over 64 exchanges x ~35 values cost more than a decision of the simulator.
        flat_keys: list[str] = []
        flat: list[list[Any]] = []
        nested: list[tuple[str, list[dict[str, float]]]] = []
        for key, value in info.items():
            if key.startswith("_") or key == "final_obs":
                continue
            if isinstance(value, dict):
                columns = [np.asarray(v, dtype=np.float64).tolist() for v in value.values()]
                names = list(value)
                nested.append(
                    (
                        key,
                        [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)],
                    )
                )
            else:
                flat_keys.append(key)
                flat.append(np.asarray(value).tolist())
        infos: list[dict[str, Any]] = [
            dict(zip(flat_keys, row, strict=True)) for row in zip(*flat, strict=True)
        ]
        for key, rows in nested:
            for item, sub in zip(infos, rows, strict=True):
                item[key] = sub
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        """Nothing to release (no subprocesses)."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per selected exchange."""
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the (shared) vector env."""
        setattr(self.venv, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of the vector env once per selected exchange."""
        return [
            getattr(self.venv, method_name)(*method_args, **method_kwargs)
            for _ in self._get_indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No exchange is wrapped by Gymnasium wrappers."""
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)
