"""The batched environment as a stable-baselines3 ``VecEnv`` (``envs/`` never imports SB3).

SB3 only recognises its own ``VecEnv`` class; handed a Gymnasium ``VectorEnv`` it would wrap
it as one environment. :class:`FundGymVecEnv` adapts :class:`fundgym.envs.exchange_env.
InsuranceFundVectorEnv` instead, so all exchanges still step as one array program: same-step
autoreset (SB3's ``VecEnv`` contract, asked of the vector env explicitly) with
``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``, the new episode's reset
info in ``reset_infos[i]``, seeds from :meth:`VecEnv.seed` applied at the next reset (exchange
``i`` gets ``seed + i``), each step's ``info`` entries (``cost``, ``fund_balance_usd``,
``reward_components``, ...) per exchange (copied out of the step's arrays when first read,
:class:`ExchangeInfo`), and ``render_mode="rgb_array"`` frames for
SB3's ``VecVideoRecorder``. An ``action_map`` (:mod:`fundgym.agents.action_map`) turns the
network's actions into the environment's target positions when a config centres levers.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Sequence, ValuesView
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from fundgym.agents.action_map import ActionMap
from fundgym.envs.exchange_env import InsuranceFundVectorEnv


class BatchVecEnv(VecEnv):
    """What an SB3 ``VecEnv`` over one batched vector env (``self.venv``) does alike.

    The exchanges live in one vector env, so an attribute or method is the batch's, returned
    once per selected exchange, and nothing is wrapped per exchange or needs closing.
    """

    venv: Any
    _actions: np.ndarray | None
    _action_map: ActionMap

    def reset(self) -> VecEnvObs:
        """Reset every exchange (with the seeds set by :meth:`seed`, once)."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = self.reset_rows(info)
        self._reset_seeds()
        self._reset_options()
        return obs  # type: ignore[no-any-return]

    def reset_rows(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Each exchange's reset info from the vector env's (the subclass's layout)."""
        raise NotImplementedError

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions (as the environment reads them) for :meth:`step_wait`."""
        self._actions = self._action_map(actions)

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


class FundGymVecEnv(BatchVecEnv):
    """SB3 ``VecEnv`` over ``num_envs`` exchanges of ``fundgym/InsuranceFund-v0``.

    Args:
        num_envs: Exchanges stepped together.
        config: Optional YAML file of environment settings.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"`` (what :meth:`get_images` draws).
        action_map: The network's action -> the environment's (``None``: the same).
        threads: Threads the exchanges are stepped on (bit-identical; ``None``:
            ``FUNDGYM_THREADS``, default 1).
        **env_kwargs: Environment keyword arguments (see ``InsuranceFundEnv``).
    """

    venv: InsuranceFundVectorEnv

    def __init__(
        self,
        num_envs: int,
        config: str | None = None,
        render_mode: str | None = None,
        action_map: ActionMap | None = None,
        threads: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.venv = InsuranceFundVectorEnv(
            num_envs=num_envs,
            config=config,
            render_mode=render_mode,
            autoreset_mode=AutoresetMode.SAME_STEP,
            threads=threads,
            **env_kwargs,
        )
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )
        self._actions: np.ndarray | None = None
        self._action_map = action_map or ActionMap()

    def reset_rows(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Each exchange's reset info from the vector env's."""
        return [_row(info, i) for i in range(self.num_envs)]

    def step_wait(self) -> VecEnvStepReturn:
        """Step every exchange; finished ones restart in the same step.

        SB3 wants each exchange's step info in ``infos[i]`` (the ended step's, where an
        episode ended) and its reset's in ``reset_infos[i]``. The vector env's
        :meth:`~fundgym.envs.exchange_env.InsuranceFundVectorEnv.step_arrays` gives the
        step's values as one array per key without Gymnasium's masks, and each ``infos[i]``
        is an :class:`ExchangeInfo` over them: what SB3 and training read every step
        (``cost``, ``terminal_observation``, ``TimeLimit.truncated``) is there at once, the
        other keys are copied out of the arrays when first asked for.
        """
        assert self._actions is not None, "step_async() first"
        obs, reward, term, trunc, info, last = self.venv.step_arrays(self._actions)
        dones = term | trunc
        keys = frozenset(info)
        names = [key for key in EAGER_INFO_KEYS if key in info]
        columns = [np.asarray(info[key]).tolist() for key in names]
        infos = ExchangeInfo.rows(info, keys, names, columns)
        ended = np.flatnonzero(dones).tolist()
        if ended:
            reset = self.venv.reset_info(dones)
            for i in ended:
                self.reset_infos[i] = _row(reset, i)
                infos[i]["terminal_observation"] = last[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        return obs, reward.astype(np.float32), dones, infos

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Every exchange's dashboard frame (``render_mode="rgb_array"``), for video."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        frames = self.venv.render()
        assert frames is not None
        return list(frames)


#: Keys put into every :class:`ExchangeInfo` at once: training reads them every step
#: (``EpisodeStats`` sums ``cost``); any other key would copy the exchange's whole row.
EAGER_INFO_KEYS = ("cost",)


class ExchangeInfo(dict[str, Any]):
    """One exchange's step info: a ``dict`` whose simulator values are copied when first read.

    A step's info holds about 60 values per exchange (``fund_balance_usd``, ``params``,
    ``reward_components``, ...); copying them into 64 exchanges' dicts every step cost 10% of
    PPO's step, while SB3 reads only ``terminal_observation`` and ``TimeLimit.truncated`` and
    training only ``cost``. Those are stored at once; the first look at any other key of the
    step (indexing, iterating, ``len``, ``copy``, ``==``, printing, pickling) copies the
    exchange's row of the vector info in, after which this is an ordinary ``dict`` with the
    same keys, values and order as an eager copy. Asking for a key the step does not hold
    (``get("episode")``, ``"is_success" in info``) copies nothing.

    The vector info's arrays are the step's own (the core never writes into an array it has
    reported), so a row copied steps later holds this step's values.

    Args:
        source: The step's info: one array per key (``_key`` masks, where present, say which
            exchanges hold the key), nested dicts of arrays.
        row: The exchange's index.
        keys: The keys ``source`` may hold for this exchange.
        eager: The exchange's values of :data:`EAGER_INFO_KEYS`.
    """

    __slots__ = ("_keys", "_row", "_source")  # 64 are made every step

    def __init__(
        self, source: dict[str, Any], row: int, keys: frozenset[str], eager: dict[str, Any]
    ) -> None:
        dict.__init__(self, eager)
        self._source: dict[str, Any] | None = source
        self._row = row
        self._keys = keys

    @classmethod
    def rows(
        cls,
        source: dict[str, Any],
        keys: frozenset[str],
        names: list[str],
        columns: list[list[Any]],
    ) -> list[dict[str, Any]]:
        """Every exchange's info of one step: ``ExchangeInfo(source, i, keys, eager_i)``.

        Built without a Python-level ``__init__`` call per exchange (a step makes one per
        exchange, 64 in the training default, and that call was half their cost).

        Args:
            source: As for the constructor.
            keys: As for the constructor.
            names: The eager keys.
            columns: Per eager key, its value for every exchange, in exchange order.
        """
        new = dict.__new__
        fill = dict.update
        out: list[dict[str, Any]] = []
        for row, values in enumerate(zip(*columns, strict=True)):
            info = new(cls)
            fill(info, zip(names, values, strict=True))
            info._source = source
            info._row = row
            info._keys = keys
            out.append(info)
        return out

    def _fill(self) -> None:
        """Copy the row in (once); values set on this dict since win over the step's."""
        if self._source is None:
            return
        merged = _row(self._source, self._row)
        merged.update(dict.items(self))
        self._source = None
        dict.clear(self)
        dict.update(self, merged)

    def __missing__(self, key: str) -> Any:
        if self._source is not None and key in self._keys:
            self._fill()
            if dict.__contains__(self, key):
                return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        if self._source is not None and key in self._keys:
            self._fill()
            return dict.__contains__(self, key)
        return False

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if the step holds ``key``, else ``default``."""
        if self.__contains__(key):  # copies the row in only for a key the step holds
            return dict.__getitem__(self, key)
        return default

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._fill()
        return dict.__reversed__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def __repr__(self) -> str:
        self._fill()
        return dict.__repr__(self)

    def __eq__(self, other: object) -> bool:
        self._fill()
        if isinstance(other, ExchangeInfo):
            other._fill()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __delitem__(self, key: str) -> None:
        self._fill()
        dict.__delitem__(self, key)

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._fill()
        return dict.__or__(self, other)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and ``copy.copy``-ed) as the plain ``dict`` it stands for."""
        return (dict, (self.copy(),))

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        """The keys, the step's all copied in."""
        self._fill()
        return dict.keys(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        """The values, the step's all copied in."""
        self._fill()
        return dict.values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        """The items, the step's all copied in."""
        self._fill()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of every key (SB3's ``VecMonitor`` copies an ended step's info)."""
        self._fill()
        return dict.copy(self)

    def pop(self, key: str, *default: Any) -> Any:
        """``dict.pop``, the step's keys included."""
        self._fill()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        """``dict.popitem``, the step's keys included."""
        self._fill()
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``dict.setdefault``, the step's keys included."""
        self._fill()
        return dict.setdefault(self, key, default)

    def clear(self) -> None:
        """Empty the dict (the step's keys are not copied in later)."""
        self._source = None
        dict.clear(self)


_NOT_ROWS = ("final_obs", "final_info")


def _present(info: dict[str, Any], key: str, row: int) -> bool:
    """Whether exchange ``row`` reports ``key`` (its ``_key`` mask is set, or there is none)."""
    mask = info.get(f"_{key}")
    return mask is None or bool(mask[row])


def _item(value: Any, row: int) -> Any:
    """Exchange ``row``'s entry of a per-exchange array as a Python value (as ``tolist``)."""
    return (value if isinstance(value, np.ndarray) else np.asarray(value)).item(row)


def _row(info: dict[str, Any], row: int) -> dict[str, Any]:
    """Exchange ``row``'s dict of a vector info: each key its ``_key`` mask sets, in order.

    Nested dicts (``params``, ``reward_components``) become dicts of their own; ``final_obs``
    and ``final_info`` are left to the caller.
    """
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or key in _NOT_ROWS or not _present(info, key, row):
            continue
        out[key] = _row(value, row) if isinstance(value, dict) else _item(value, row)
    return out
