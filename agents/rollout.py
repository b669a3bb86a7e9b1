"""How a policy runs on a scenario: each job's environment, and the one stepping loop.

Evaluation (:mod:`fundgym.agents.evaluate`), its static searches and every export
(:mod:`fundgym.agents.export`) run a policy the same way, so they share this module:

* **Settings.** :func:`parse_scenarios` checks scenario names once, before any work;
  :func:`base_env` picks the evaluation environment (a config, else the first trained run's
  own, else the default training config); :func:`job_env` fits it to one policy on one
  scenario (a library scenario runs its own horizon; a trained policy and its exports keep the
  parameters they were made with, and refuse an environment that differs where it matters; a
  static policy starts at its values, and a venue preset runs under its venue's margin tiers,
  fund and vault sizes, :meth:`~fundgym.agents.policies.PolicySpec.env_overrides`).
* **Stepping.** :func:`first_episodes` steps a policy through each exchange's first episode
  of a batched environment, one :class:`Step` per decision.
* **Many markets.** :func:`markets_training_env` is a ``markets:`` config's environment on a
  scenario, what training steps and scoring (:mod:`fundgym.agents.evaluate.markets_runs`)
  builds its policy's map for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents.action_map import CentredActions
from fundgym.agents.config import (
    DEFAULT_TRAIN_CONFIG,
    ConfigError,
    MarketsConfig,
    env_settings,
    load_config,
    markets_env_kwargs,
)
from fundgym.agents.policies import (
    Policy,
    PolicySpec,
    ScheduleError,
    TableError,
    read_schedule,
    read_table,
)
from fundgym.envs.config import EnvConfig, make_config
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.markets_env import MarketsInsuranceFundEnv
from fundgym.envs.scenarios import Scenario, library, load_scenario, require_single_market
from fundgym.envs.schema import SchemaError, build, load_yaml

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

#: The calibrated historical crashes (``--scenarios crashes``).
CRASHES: tuple[str, ...] = (
    "black_thursday_2020",
    "may_19_2021",
    "luna_2022",
    "ftx_2022",
    "oct_10_2025",
    "venue_flash_wick",
    "oracle_manipulation",
)

#: Environment settings a trained policy must share with the evaluation environment (the
#: others: scenario, horizon, reward weights, controlled and fixed, may differ).
_MUST_MATCH = (
    "n_accounts",
    "decision_minutes",
    "max_step",
    "margin_notice_minutes",
    "fund_to_oi_frac",
    "vault_to_oi_frac",
    "vault_adl_loss_frac",
    "fund_injection_frac",
    "fund_injection_max",
    "insolvency_frac",
    "fallback",
    "adl_policy",
    "liquidation_mode",
    "taker_fee_rate",
    "rebalance_threshold",
    "population_minutes",
    "allocation_minutes",
    "allocation_turnover_frac",
)


class EvaluateError(ValueError):
    """An evaluation that cannot run as asked (the message says why and what is allowed)."""


# ------------------------------------------------------------------ settings ----


def parse_scenarios(items: Iterable[str], option: str = "--scenarios") -> list[str]:
    """Scenario names from ``--scenarios`` (comma-separated, repeatable; ``crashes`` = all).

    Each is a library name, a YAML path or ``training`` (sampler draws); every one is loaded
    once here, so a typo fails before any work starts. ``option`` names the command-line
    option in messages.
    """
    out: list[str] = []
    for item in items:
        for name in (s.strip() for s in item.split(",")):
            if not name:
                continue
            names = list(CRASHES) if name == "crashes" else [name]
            for n in names:
                if n != "training":
                    try:
                        require_single_market(load_scenario(n))
                    except (FileNotFoundError, SchemaError) as exc:
                        raise EvaluateError(f"{option}: {exc}") from exc
                    except UnicodeDecodeError as exc:
                        raise EvaluateError(
                            f"{option} {n!r}: the file is not UTF-8 text ({exc.reason} at "
                            f"byte {exc.start}); a scenario is a YAML file"
                        ) from exc
                    except OSError as exc:
                        raise EvaluateError(
                            f"{option} {n!r}: cannot be read ({exc.strerror or exc})"
                        ) from exc
                if n not in out:
                    out.append(n)
    if not out:
        raise EvaluateError(
            f"{option}: no scenario given; library: {sorted(library())}, 'crashes', 'training'"
        )
    return out


def base_env(config: str | Path | None, specs: Sequence[PolicySpec]) -> dict[str, Any]:
    """The evaluation environment's settings.

    From ``config`` (a training config, whose ``env`` section is used, or an environment
    YAML); else from the first trained policy's run; else from the default training config.
    """
    if config is not None:
        path = Path(config)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise EvaluateError(f"--config: {path} {what}; expected a YAML config file")
        try:
            data = load_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise EvaluateError(
                f"--config: {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a "
                "config is YAML"
            ) from exc
        except OSError as exc:
            raise EvaluateError(f"--config: {path}: cannot be read ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise EvaluateError(f"--config: {path}: not valid YAML: {exc}") from exc
        if isinstance(data, dict) and ("algo" in data or "defaults" in data):
            return _train_env(path)
        try:
            return env_settings(make_config(path))
        except (SchemaError, ValueError, TypeError) as exc:
            raise EvaluateError(f"--config: {exc}") from exc
    for spec in specs:
        own = policy_env(spec)
        if own is not None:
            return {**own, "controlled": tuple(own["controlled"])}
    return _train_env(DEFAULT_TRAIN_CONFIG)


def _train_env(path: Path) -> dict[str, Any]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise EvaluateError(f"invalid training config {path}:\n{exc}") from exc
    if cfg.markets is not None:
        raise EvaluateError(
            f"{path}: a multi-market run (its config has markets:); fundgym evaluate scores "
            f"one-market policies: score it with `fundgym markets --run {path.parent}`"
        )
    return env_settings(cfg.env)


def policy_env(spec: PolicySpec) -> dict[str, Any] | None:
    """The environment settings a policy was made in (trained runs and their exports)."""
    if spec.path is None:
        return None
    if spec.kind == "trained":
        return _train_env(Path(spec.path) / "config.yaml")
    if spec.kind == "schedule":
        meta, _ = read_schedule(Path(spec.path))
        return _export_env(meta.get("env"), spec.path, ScheduleError)
    if spec.kind == "table":
        return _export_env(read_table(Path(spec.path)).get("env"), spec.path, TableError)
    return None


def _export_env(env: Any, source: str, error: type[ValueError]) -> dict[str, Any]:
    """An exported file's ``env`` field, validated as the environment's own config.

    Raises:
        ScheduleError or TableError (``error``): ``env`` is not a valid environment config;
            the message names the file and the field.
    """
    if not isinstance(env, dict):
        raise error(f"{source}: env = {env!r}: expected the environment settings (a mapping)")
    try:
        return env_settings(build(EnvConfig, env, source, "env"))
    except SchemaError as exc:
        raise error(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise error(f"{source}: env: {exc}") from exc


def job_env(base: dict[str, Any], spec: PolicySpec, scenario: str) -> dict[str, Any]:
    """Environment keyword arguments for ``spec`` on ``scenario``.

    A library scenario runs its own horizon; the training sampler keeps the base horizon. A
    trained policy keeps the parameters it controls and starts from, and the allocation
    buckets it was trained to hold; a static one starts at
    its values, under its margin tiers and, where it names them (every venue preset does), its
    fund and vault sizes as shares of open interest.

    Raises:
        EvaluateError: The settings do not make a valid environment (a vault the policy names
            under the ``partial`` liquidation mode, which hands no account to a vault); the
            message names the policy, the scenario, the setting and what is allowed.
    """
    kw = dict(base)
    kw["scenario"] = scenario
    if scenario != "training":
        kw["horizon_minutes"] = None
    own = policy_env(spec)
    if own is not None:
        for key in _MUST_MATCH:
            if own[key] != base[key]:
                raise EvaluateError(
                    f"policy {spec.name!r} was trained with env.{key} = {own[key]!r} but the "
                    f"evaluation environment has {base[key]!r}; evaluate it with --config "
                    "set to its run's config.yaml, or retrain"
                )
        kw["controlled"] = tuple(own["controlled"])
        # the buckets its actions were mapped over: a bucket it never held would take a share
        kw["allocation_buckets"] = tuple(own["allocation_buckets"])
        kw["fixed"] = own["fixed"]
        kw["margin_tiers"] = own.get("margin_tiers", "none")
    kw.update(spec.env_overrides())
    try:
        make_config(**kw)  # a setting the policy brings may not fit the rest (a vault, partial)
    except SchemaError as exc:
        raise EvaluateError(
            f"policy {spec.name!r} on scenario {scenario!r}: env.{exc.path} = {exc.value!r}: "
            f"{exc.allowed}"
        ) from None
    return kw


# ------------------------------------------------------------------ episodes ----


def vault_capital_usd(info: dict[str, Any]) -> FloatArray:
    """The backstop vault's capital at the start of each exchange's episode (USD; 0: none).

    Read from any step's ``info`` of the episode (the first, by the callers):
    ``vault_capital_usd``, which the environment reports every step.
    """
    return np.asarray(info["vault_capital_usd"], dtype=np.float64).copy()


@dataclass
class Step:
    """One decision of a batch of first episodes (see :func:`first_episodes`).

    Attributes:
        t: Decision index.
        obs: The observations the action answered, ``(n_envs, 32)``.
        action: The policy's targets, ``(n_envs, n_controlled)``.
        reward: The step's reward per exchange.
        info: The environment's ``info`` of the step (before any exchange restarts).
        next_obs: The observations the step ended on (before any exchange restarts): the
            state after it, the positions of the parameters in force among them.
        done: Exchanges whose first episode ended at this step.
        terminated: Which of them ended on insolvency.
    """

    t: int
    obs: FloatArray
    action: FloatArray
    reward: FloatArray
    info: dict[str, Any]
    next_obs: FloatArray
    done: BoolArray
    terminated: BoolArray


def first_episodes(env: InsuranceFundVectorEnv, policy: Policy, obs: FloatArray) -> Iterator[Step]:
    """Step ``policy`` through each exchange's first episode from the reset observations ``obs``.

    The exchanges step as one array program; one whose episode ends is restarted (as the
    vector environment's same-step autoreset does) and keeps stepping until every exchange is
    done, its later steps belonging to nobody. Each step is yielded with what the environment
    returned before that restart (its ``info`` and the observation it ended on).
    """
    n = env.num_envs
    core = env.core
    policy.reset(n)
    obs64 = obs.astype(np.float64)
    running = np.ones(n, dtype=bool)
    t = 0
    while running.any():
        action = np.asarray(policy.act(obs64), dtype=np.float64)
        new_obs, reward, term, trunc, info = core.step(action)
        ended = term | trunc
        done = ended & running
        yield Step(t, obs64, action, reward, info, new_obs, done, term & done)
        running &= ~done
        if ended.any():
            fresh = core.reset(ended)
            new_obs = np.where(ended[:, None], fresh, new_obs)
        obs64 = np.asarray(new_obs, dtype=np.float64)
        t += 1


def markets_training_env(scenario: Scenario, markets: MarketsConfig) -> Any:
    """One env of a ``markets:`` config on ``scenario``: training's, or held-out evaluation's.

    ``MarketsInsuranceFundEnv`` with the config's arguments, behind :class:`CentredActions`
    when ``markets.centred`` (the network's actions are moves from the levers' defaults).
    """
    env = MarketsInsuranceFundEnv(scenario, **markets_env_kwargs(markets))
    return CentredActions(env) if markets.centred else env
