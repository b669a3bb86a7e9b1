"""Multi-market schedules: what a trained multi-market policy sets along a scenario, per market.

A run trained from a ``markets:`` config acts on ``fundgym/MarketsInsuranceFund-v0``: the
exchange's liquidation fee and its fund share, the trading-fee share, the shared fund's
allocation (or a segmented fund's transfer cap), and per market its margin multiple, open-
interest cap and fund cap, plus a haircut per collateral asset. :func:`export_markets_schedule`
plays one episode of a multi-market scenario with the run's model (``best/``, else ``final/``;
deterministic, centred as trained: :mod:`fundgym.agents.evaluate.markets_runs`) and writes, per
decision, in the one-market schedule's format (:mod:`fundgym.agents.export.schedule`: the same
metadata, CSV marker and JSON form):

* ``step``, ``time_minutes``;
* every lever in force, in natural units, named as the environment's
  :meth:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv.action_names` name its actions
  (``market_mmr_mult[BTC]``: BTC's maintenance margin as a multiple of the exchange's), and,
  with a shared fund, ``fund_weight_<bucket>``: the allocation the fund holds;
* ``target_<lever>``: what the policy asked for, in natural units (an allocation logit stays
  a position in [-1, 1]: weights need all four);
* ``obs_<name>``: the observation it acted on (the environment's
  :meth:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv.observation_names`, the ONNX
  graph's input), and ``index_price[MARKET]``;
* the decision's outcomes: reward, solvency cost, users' loss, capital locked, the insurance
  (every pot), liquidations, deleveraging, and per market what the fund paid and what was
  deleveraged;
* ``action_<lever>``: the environment's action (target positions, action units) at full
  precision, which :func:`replay_markets_schedule` feeds back to reproduce the levers exactly.

Each market's margins in force are written out too, ``mmr[BTC]`` and ``imr[BTC]`` (the
exchange's times the market's multiple, as the simulator applies them), and ``naming=VENUE``
adds that venue's configuration fields per market (``maxLeverage[ALT]`` for Hyperliquid,
``maintenance_fraction_ppm[BTC]`` for dYdX), converted from :data:`MARKET_IN_FORCE` as the
lever registry declares: these venues configure margins per market.

The metadata's ``environment`` names the multi-market environment, so the one-market replay
(``fundgym evaluate --policy schedule:FILE``) refuses the file by name rather than misread it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from fundgym.agents.export.schedule import (
    ScheduleExport,
    check_schedule_options,
    schedule_metadata,
    venue_columns,
    venue_units,
    write_schedule,
)
from fundgym.agents.outputs import jsonable
from fundgym.agents.policies.markets_run import MarketsRun, load_markets_run, markets_env
from fundgym.agents.policies.replay import MARKETS_ENVIRONMENT, ScheduleError, read_schedule
from fundgym.envs.controls import BUCKETS
from fundgym.envs.levers import LEVERS, Venue
from fundgym.envs.markets_core import ALLOCATION_LEVERS
from fundgym.envs.markets_env import MarketsInsuranceFundEnv
from fundgym.envs.scenarios import load_scenario

#: Outcome columns of a decision (the environment's ``info``), and their units.
OUTCOME_UNITS: dict[str, str] = {
    "reward": "the decision's reward",
    "cost": "solvency cost, bps of starting open interest",
    "user_loss_usd": "USD socialised, unrecovered and deleveraged during the decision",
    "capital_locked_usd": "USD of insurance plus traders' margin at the end of the decision",
    "fund_usd": "USD, the insurance (every pot) at the end of the decision",
    "liquidation_volume_usd": "USD liquidated during the decision",
    "adl_volume_usd": "USD deleveraged during the decision",
    "shortfall_usd": "USD of bad debt the insurance paid during the decision",
    "socialized_loss_usd": "USD socialised during the decision",
}
#: Per-market outcome columns (``name[MARKET]``) and their units.
MARKET_OUTCOME_UNITS: dict[str, str] = {
    "market_fund_paid_usd": "USD the insurance paid for the market's losses during the decision",
    "market_adl_volume_usd": "USD deleveraged in the market during the decision",
}


#: The levers a venue's per-market configuration is converted from (``naming``): the
#: exchange's fee levers and each market's margins (:func:`market_margins`).
MARKET_IN_FORCE: tuple[str, ...] = (
    "liquidation_fee_rate",
    "liquidation_fee_fund_share",
    "trading_fee_fund_share",
    "mmr",
    "imr",
)


def market_margins(env: MarketsInsuranceFundEnv, mults: Any) -> tuple[list[float], list[float]]:
    """Each market's maintenance and initial margin in force: the exchange's times its multiple.

    As the multi-market simulator applies them (``market_mmr_mult`` scales both); under margin
    tiers these are the first bracket's.
    """
    engine = env.core.engine
    m = np.asarray(mults, dtype=np.float64)
    mmr = float(np.asarray(engine.mmr)) * m
    imr = float(np.asarray(engine.imr)) * m
    return [float(x) for x in mmr], [float(x) for x in imr]


def _in_force(levers: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    """``info["levers"]`` flattened to one value per action name (``name[X]`` per market)."""
    out: dict[str, float] = {}
    counters: dict[str, int] = {}
    for name in names:
        base, _, _ = name.partition("[")
        value = levers[base]
        if np.ndim(value) == 0:
            out[name] = float(value)
        else:
            i = counters.get(base, 0)
            counters[base] = i + 1
            out[name] = float(np.asarray(value)[i])
    return out


def rollout_markets_schedule(
    run: MarketsRun, scenario: str, seed: int, naming: Literal["fundgym"] | Venue = "fundgym"
) -> tuple[list[dict[str, float]], MarketsInsuranceFundEnv]:
    """One episode of ``run``'s policy on ``scenario`` (seeded ``seed``): rows and the env.

    The environment ``fundgym markets --run`` scores the run in (its settings, the scenario
    as written). ``naming`` adds a venue's configuration fields per market
    (``maintenance_fraction_ppm[BTC]``), converted from :data:`MARKET_IN_FORCE`.

    Raises:
        SpecError: The scenario gives the run's network other sizes (other markets or
            collateral assets).
    """
    env = markets_env(run, load_scenario(scenario))
    act = run.act(env)
    names = env.action_names()
    obs_names = env.observation_names()
    markets = env.core.scenario.market_names
    minutes = env.core.decision_minutes
    shared = env.core.shared
    obs, _ = env.reset(seed=seed)
    rows: list[dict[str, float]] = []
    done, t = False, 0
    while not done:
        action = np.asarray(act(obs), dtype=np.float64)
        before = obs
        obs, reward, terminated, truncated, info = env.step(action)
        row: dict[str, float] = {"step": t, "time_minutes": minutes * (t + 1)}
        row.update(_in_force(info["levers"], names))
        mmr, imr = market_margins(env, info["levers"]["market_mmr_mult"])
        for m, market in enumerate(markets):
            row[f"mmr[{market}]"] = mmr[m]
            row[f"imr[{market}]"] = imr[m]
        if naming != "fundgym":
            for m, market in enumerate(markets):
                values = {name: row[name] for name in MARKET_IN_FORCE[:3]}
                values.update(mmr=mmr[m], imr=imr[m])
                for col, v in venue_columns(naming, values, MARKET_IN_FORCE).items():
                    row[f"{col}[{market}]"] = v
        if shared:
            for k, bucket in enumerate(BUCKETS):
                row[f"fund_weight_{bucket}"] = float(info["fund_weights"][k])
        for j, name in enumerate(names):
            target = float(np.clip(action[j], -1.0, 1.0))
            if name not in ALLOCATION_LEVERS:
                target = float(env.levers[j].to_value(np.array(target)))
            row[f"target_{name}"] = target
        for k, name in enumerate(obs_names):
            row[f"obs_{name}"] = float(before[k])
        for m, market in enumerate(markets):
            row[f"index_price[{market}]"] = float(env.core.sim.last_index[0, m])
        row["reward"] = float(reward)
        row["cost"] = float(info["cost"])
        row["user_loss_usd"] = float(info["user_loss_usd"])
        row["capital_locked_usd"] = float(info["capital_locked_usd"])
        row["fund_usd"] = float(np.sum(info["fund_pots_usd"]))
        for key in ("liquidation_volume_usd", "adl_volume_usd", "shortfall_usd"):
            row[key] = float(info[key])
        row["socialized_loss_usd"] = float(info["socialized_loss_usd"])
        for key in MARKET_OUTCOME_UNITS:
            for m, market in enumerate(markets):
                row[f"{key}[{market}]"] = float(info[key][m])
        for j, name in enumerate(names):
            row[f"action_{name}"] = float(action[j])
        rows.append(row)
        done = bool(terminated or truncated)
        t += 1
    return rows, env


def _units(env: MarketsInsuranceFundEnv, columns: list[str], naming: str) -> dict[str, str]:
    """Every column's unit."""
    units: dict[str, str] = {"step": "decision index", "time_minutes": "minutes since start"}
    for market in env.core.scenario.market_names:
        for name in ("mmr", "imr"):
            units[f"{name}[{market}]"] = (
                f"{LEVERS[name].unit}, the market's: the exchange's {name} x "
                f"market_mmr_mult[{market}] (the first bracket's under margin tiers)"
            )
        if naming != "fundgym":
            for col, unit in venue_units(naming, MARKET_IN_FORCE).items():
                units[f"{col}[{market}]"] = f"{unit}, the market's"
    for j, name in enumerate(env.action_names()):
        lever = env.levers[j]
        if name in ALLOCATION_LEVERS:
            units[name] = "allocation logit position in [-1, 1] (weights = softmax(3 x logits))"
            units[f"target_{name}"] = units[name]
        else:
            units[name] = lever.unit
            units[f"target_{name}"] = f"target of {name} ({lever.unit})"
        units[f"action_{name}"] = "the environment's action: target position in [-1, 1]"
    for bucket in BUCKETS:
        units[f"fund_weight_{bucket}"] = f"share of the fund held in the {bucket} bucket"
    for name in env.observation_names():
        units[f"obs_{name}"] = "the observation the policy acted on (the environment's layout)"
    for market in env.core.scenario.market_names:
        units[f"index_price[{market}]"] = "USD, the market's index at the end of the decision"
        for key, unit in MARKET_OUTCOME_UNITS.items():
            units[f"{key}[{market}]"] = unit
    units.update(OUTCOME_UNITS)
    return {c: units[c] for c in columns}


def export_markets_schedule(
    run_dir: Path,
    out: Path,
    *,
    scenario: str,
    seed: int = 0,
    fmt: Literal["csv", "json"] = "csv",
    naming: Literal["fundgym"] | Venue = "fundgym",
    argv: list[str] | None = None,
) -> ScheduleExport:
    """Write the levers a multi-market run's policy sets along ``scenario`` (module docstring).

    Raises:
        ScheduleError: An unknown format or naming.
        SpecError: Not a multi-market run (:func:`load_markets_run`), or as
            :func:`rollout_markets_schedule`.
    """
    check_schedule_options(fmt, naming)
    run = load_markets_run(run_dir)
    rows, env = rollout_markets_schedule(run, scenario, seed, naming)
    columns = list(rows[0])
    meta = schedule_metadata(
        run_dir,
        scenario=scenario,
        seed=seed,
        decision_minutes=env.core.decision_minutes,
        controlled=list(env.action_names()),
        naming=naming,
        units=_units(env, columns, naming),
        env=jsonable(run.markets.model_dump(mode="python")),
        argv=argv,
        notes=(
            "Levers in force at the end of each decision (a move lands at once, or by at most "
            "markets.max_step action units a decision). Per-market levers are named "
            "lever[MARKET]. action_* columns replay the policy exactly on the same scenario "
            "and seed (fundgym.agents.export.markets_schedule.replay_markets_schedule)."
        ),
    )
    meta.update(
        environment=MARKETS_ENVIRONMENT,
        markets=list(env.core.scenario.market_names),
        collateral_assets=list(env.core.scenario.collateral_names),
        observation_names=list(env.observation_names()),
    )
    return write_schedule(out, fmt, meta, rows)


def replay_markets_schedule(path: Path, run_dir: Path | None = None) -> list[dict[str, float]]:
    """Play a multi-market schedule's ``action_*`` columns back; the levers in force each step.

    On the schedule's own scenario and seed, under the settings of the run that wrote it
    (``run_dir``; default the ``run_dir`` the file names), the rows returned equal the
    file's in-force columns: what makes the schedule a faithful record of the policy.

    Raises:
        ScheduleError: Not a multi-market schedule, or unreadable (the message names the file).
        SpecError: The run cannot be loaded.
    """
    meta, rows = read_schedule(path, environment=MARKETS_ENVIRONMENT)
    run = load_markets_run(Path(run_dir) if run_dir is not None else Path(meta["run_dir"]))
    env = markets_env(run, load_scenario(str(meta["scenario"])))
    names = env.action_names()
    missing = [n for n in names if f"action_{n}" not in rows[0]]
    if missing:
        raise ScheduleError(f"{path}: columns {['action_' + n for n in missing]} are missing")
    env.reset(seed=int(meta["seed"]))
    out: list[dict[str, float]] = []
    for row in rows:
        action = np.array([row[f"action_{n}"] for n in names], dtype=np.float64)
        _, _, terminated, truncated, info = env.step(action)
        out.append(_in_force(info["levers"], names))
        if terminated or truncated:
            break
    return out


__all__ = [
    "MARKET_IN_FORCE",
    "MARKET_OUTCOME_UNITS",
    "OUTCOME_UNITS",
    "export_markets_schedule",
    "market_margins",
    "replay_markets_schedule",
    "rollout_markets_schedule",
]
