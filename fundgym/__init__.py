"""fundgym: tune a perpetual-futures exchange's insurance fund, liquidation fees and margins.

``import fundgym`` registers the Gymnasium environment ``fundgym/InsuranceFund-v0`` (single:
:class:`fundgym.envs.exchange_env.InsuranceFundEnv`; batched, as its ``vector_entry_point``:
:class:`fundgym.envs.exchange_env.InsuranceFundVectorEnv`) and exposes the public API:

* :func:`make` and :func:`make_vec`: the environment by keyword (``scenario=``, ``n_accounts=``...);
* the venue formulas of :mod:`fundgym.envs.mechanics` (``liquidation_price``,
  ``bankruptcy_price``, ``insurance_fund_delta``, ...), pure numpy and validated;
* :func:`load_scenario` and :func:`scenario_names`: the crash library shipped with the package;
* ``__version__``.

Importing ``fundgym`` imports numpy, gymnasium, PyYAML and numba only; training, evaluation and
export live in :mod:`fundgym.agents`, which needs the ``train`` extra.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import gymnasium as gym

from fundgym.envs import ENV_ID
from fundgym.envs.mechanics import (
    adl_score,
    auto_deleverage,
    bankruptcy_price,
    fillable_price,
    insurance_fund_delta,
    liquidation_price,
    liquidation_price_tiered,
    socialized_loss_shares,
)
from fundgym.envs.scenarios import Scenario, load_scenario, scenario_names

try:
    __version__ = version("fundgym")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"


def make(**kwargs: Any) -> gym.Env[Any, Any]:
    """``gymnasium.make("fundgym/InsuranceFund-v0", **kwargs)``, with Gymnasium's wrappers.

    Args:
        **kwargs: The environment's keywords (``scenario``, ``n_accounts``, ``render_mode``...)
            and Gymnasium's own (``max_episode_steps``, ``disable_env_checker``).
    """
    return gym.make(ENV_ID, **kwargs)


def make_vec(num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv[Any, Any, Any]:
    """``gymnasium.make_vec("fundgym/InsuranceFund-v0", num_envs, **kwargs)``.

    The default ``vectorization_mode`` is the batched twin (``"vector_entry_point"``): one
    simulator over ``num_envs`` exchanges, compiled, rather than ``num_envs`` copies.

    Args:
        num_envs: Exchanges in the batch.
        **kwargs: ``vectorization_mode``, ``vector_kwargs`` and the environment's keywords.
    """
    kwargs.setdefault("vectorization_mode", "vector_entry_point")
    return gym.make_vec(ENV_ID, num_envs=num_envs, **kwargs)


__all__ = [
    "ENV_ID",
    "Scenario",
    "__version__",
    "adl_score",
    "auto_deleverage",
    "bankruptcy_price",
    "fillable_price",
    "insurance_fund_delta",
    "liquidation_price",
    "liquidation_price_tiered",
    "load_scenario",
    "make",
    "make_vec",
    "scenario_names",
    "socialized_loss_shares",
]
