"""The batched environment as a stable-baselines3 ``VecEnv`` (``envs/`` never imports SB3).

SB3 only recognises its own ``VecEnv`` class; handed a Gymnasium ``VectorEnv`` it would wrap
it as one environment. :class:`FundGymVecEnv` adapts :class:`fundgym.envs.exchange_env.
InsuranceFundVectorEnv` instead, so all exchanges still step as one array program: same-step
autoreset (SB3's ``VecEnv`` contract, asked of the vector env explicitly) with
``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``, the new episode's reset
info in ``reset_infos[i]``, seeds from :meth:`VecEnv.seed` applied at the next reset (exchange
``i`` gets ``seed + i``), each step's ``info`` entries (``cost``, ``fund_balance_usd``,
``reward_components``, ...) copied per exchange, and ``render_mode="rgb_array"`` frames for
SB3's ``VecVideoRecorder``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
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
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"`` (what :meth:`get_images` draws).
        **env_kwargs: Environment keyword arguments (see ``InsuranceFundEnv``).
    """

    def __init__(
        self,
        num_envs: int,
        config: str | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.venv = InsuranceFundVectorEnv(
            num_envs=num_envs,
            config=config,
            render_mode=render_mode,
            autoreset_mode=AutoresetMode.SAME_STEP,
            **env_kwargs,
        )
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        """Reset every exchange (with the seeds set by :meth:`seed`, once)."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = _per_exchange(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every exchange; finished ones restart in the same step.

        The vector env reports a finished exchange's step under ``final_info`` and its reset
        under the top-level keys (Gymnasium's convention); SB3 wants the step's info in
        ``infos[i]`` and the reset's in ``reset_infos[i]``, so the two are put back together.
        """
        assert self._actions is not None, "step_async() first"
        obs, reward, term, trunc, info = self.venv.step(self._actions)
        dones = term | trunc
        if dones.any():
            step_info = _merge(info, info["final_info"], dones)
            for i, reset in enumerate(_per_exchange(info, self.num_envs)):
                if dones[i]:
                    self.reset_infos[i] = reset
        else:
            step_info = info
        infos = _per_exchange(step_info, self.num_envs)
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        return obs, reward.astype(np.float32), dones, infos

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Every exchange's dashboard frame (``render_mode="rgb_array"``), for video."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        frames = self.venv.render()
        assert frames is not None
        return list(frames)

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


def _merge(info: dict[str, Any], final: dict[str, Any], dones: np.ndarray) -> dict[str, Any]:
    """The step's info of every exchange: ``final`` where ``dones``, ``info`` elsewhere.

    Both are Gymnasium vector infos of the same step keys with disjoint ``_key`` masks (an
    exchange reports its step at the top level or, when it finished, under ``final_info``).
    """
    out: dict[str, Any] = {}
    for key, value in final.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            out[key] = _merge(info.get(key, {}), value, dones)
        elif key in info:
            out[key] = np.where(dones, value, info[key])
        else:
            out[key] = value  # every exchange finished: nothing at the top level
        out[f"_{key}"] = np.ones(len(dones), dtype=bool)
    return out


def _per_exchange(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """One dict per exchange from a vector info, each key where its ``_key`` mask is set.

    Each array becomes a Python list once (``tolist`` converts every element in C) and each
    exchange's dict is zipped from the lists' rows: an element-by-element ``.item()`` over
    64 exchanges x ~35 values cost more than a decision of the simulator. Only keys some
    exchanges lack (a reset's ``scenario``) go exchange by exchange. ``final_obs`` and
    ``final_info`` are left to the caller.
    """
    keys: list[str] = []
    columns: list[list[Any]] = []
    partial: list[tuple[str, list[Any], list[bool]]] = []
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        column = _per_exchange(value, n) if isinstance(value, dict) else np.asarray(value).tolist()
        mask = info.get(f"_{key}")
        if mask is None or mask.all():
            keys.append(key)
            columns.append(column)
        else:
            partial.append((key, column, np.asarray(mask).tolist()))
    out = [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
    if not keys:
        out = [{} for _ in range(n)]
    for key, column, present in partial:
        for item, value, here in zip(out, column, present, strict=True):
            if here:
                item[key] = value
    return out
