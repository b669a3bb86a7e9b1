"""fundgym's simulator: exchange mechanics over numpy arrays, and the Gymnasium environment.

This package imports only numpy and gymnasium (PyYAML only to read scenario and config files),
never torch or stable-baselines3, so that a risk engine or a JAX/NumPy user can take the
simulator without the training stack. Importing it registers the environment:

* ``fundgym/InsuranceFund-v0``: :class:`fundgym.envs.exchange_env.InsuranceFundEnv`, with the
  batched :class:`fundgym.envs.exchange_env.InsuranceFundVectorEnv` as its ``vector_entry_point``;
* ``fundgym/MarketsInsuranceFund-v0``: :class:`fundgym.envs.markets_env.MarketsInsuranceFundEnv`,
  an exchange listing several markets (per-market margins, shared or segmented funds), with
  the batched :class:`fundgym.envs.markets_env.MarketsInsuranceFundVectorEnv` as its
  ``vector_entry_point``.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "fundgym/InsuranceFund-v0"
MARKETS_ENV_ID = "fundgym/MarketsInsuranceFund-v0"

# ---- fundgym environments ----------------------------------------------------------------
if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="fundgym.envs.exchange_env:InsuranceFundEnv",
        vector_entry_point="fundgym.envs.exchange_env:InsuranceFundVectorEnv",
    )
if MARKETS_ENV_ID not in registry:
    register(
        id=MARKETS_ENV_ID,
        entry_point="fundgym.envs.markets_env:MarketsInsuranceFundEnv",
        vector_entry_point="fundgym.envs.markets_env:MarketsInsuranceFundVectorEnv",
    )

__all__ = ["ENV_ID", "MARKETS_ENV_ID"]
