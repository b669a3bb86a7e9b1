"""The policies ``fundgym evaluate`` compares: trained runs, venue presets, a rule, searched sets.

A policy maps a batch of observations ``(n_envs, 32)`` to actions ``(n_envs, n_controlled)`` in
action units [-1, 1] (each coordinate the *target* position of one controlled parameter; the
environment rate-limits the move and delays margin increases). Some policies also change how the
environment starts (``env_overrides``): a static venue preset starts *at* its parameters (the
``fixed`` start values) rather than walking to them from the defaults, and the Binance preset
switches the maintenance requirement to Binance's notional brackets; every venue preset also
starts its fund at its venue's size (fund / open interest, :data:`PRESETS`).

Policies are named by a **spec** string, parsed by :func:`parse_spec`:

* ``RUN_DIR``: a ``fundgym train`` run directory (its best model by held-out evaluation,
  ``RUN_DIR/best/``, with the observation normalisation it was trained with; ``final/`` if no
  best model; plain tensors and arrays checked against a manifest, never unpickled);
* ``static:<preset>``: a venue's published parameters held fixed (:data:`PRESETS`), or
  ``static:name=value,...`` for any set in natural units;
* ``rule``: :class:`RulePolicy`, the hand-written dynamic controller risk teams run today;
* ``best_static`` / ``hindsight_static``: the static set a grid search picks on the training sampler
  / on the evaluation scenarios themselves (resolved by :mod:`fundgym.agents.evaluate.search`);
* ``schedule:FILE`` / ``table:FILE``: an exported schedule or state table replayed without the
  model (:mod:`fundgym.agents.policies.replay`).

Specs and resolved static values are plain data, so evaluation workers in other processes can
rebuild the same policy; trained models are loaded once per worker process.
"""

from fundgym.agents.policies.base import FloatArray, Policy, SpecError
from fundgym.agents.policies.presets import PRESETS, STATIC_ALLOC, STATIC_PARAMS, Preset
from fundgym.agents.policies.registry import PolicySpec, build_policy, parse_spec
from fundgym.agents.policies.replay import (
    ScheduleError,
    SchedulePolicy,
    TableError,
    TablePolicy,
    read_schedule,
    read_table,
    replay_env,
)
from fundgym.agents.policies.rule import RuleParams, RulePolicy
from fundgym.agents.policies.static import StaticPolicy, parse_static_values
from fundgym.agents.policies.trained import (
    TrainedPolicy,
    run_config_file,
    run_model_files,
    space_mismatch,
)

__all__ = [
    "PRESETS",
    "STATIC_ALLOC",
    "STATIC_PARAMS",
    "FloatArray",
    "Policy",
    "PolicySpec",
    "Preset",
    "RuleParams",
    "RulePolicy",
    "ScheduleError",
    "SchedulePolicy",
    "SpecError",
    "StaticPolicy",
    "TableError",
    "TablePolicy",
    "TrainedPolicy",
    "build_policy",
    "parse_spec",
    "parse_static_values",
    "read_schedule",
    "read_table",
    "replay_env",
    "run_config_file",
    "run_model_files",
    "space_mismatch",
]
