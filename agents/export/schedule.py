"""Parameter schedules: what a trained policy sets along a scenario, as a file an engine can load.

:func:`export_schedule` runs a trained policy through one episode of a scenario and writes,
for every decision, the time, the parameters in force (natural units: rates as fractions,
fund shares, allocation weights), the targets the policy asked for, and the state it reacted
to (volatility, depth, fund coverage, ...), as CSV or JSON. Both are self-describing: the
schema version, every column's unit, the run, model and resolved config that produced it.

A risk engine applies the ``*`` in-force columns as they are. ``action_*`` columns hold the policy's
raw targets in action units at full precision: :class:`fundgym.agents.policies.SchedulePolicy`
replays them (``fundgym evaluate --policy schedule:FILE``), which reproduces the policy's parameters
exactly on the same scenario and seed, since the environment rate-limits and delays moves from the
targets the same way. Replayed on other seeds or scenarios, a schedule is an open-loop, time-indexed
plan (the last row holds after it ends): the comparison with the closed-loop model shows what
reacting to the state is worth.

``naming=VENUE`` (one of :data:`NAMINGS` but ``fundgym``) adds the columns that venue's own
configuration names, converted as :data:`fundgym.envs.levers.LEVERS` declares
(:func:`fundgym.envs.levers.venue_values`), so a schedule maps onto a real config: for ``dydx``,
``max_liquidation_fee_ppm`` (fee x 1e6), ``initial_margin_ppm`` (IMR x 1e6) and
``maintenance_fraction_ppm`` (MMR / IMR x 1e6).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from fundgym.agents import __version__
from fundgym.agents.outputs import jsonable, write_text_atomic
from fundgym.agents.policies import PolicySpec, TrainedPolicy, run_model_files
from fundgym.agents.policies.replay import (
    CSV_MARKER,
    SCHEDULE_KIND,
    SCHEDULE_SCHEMA_VERSION,
    ScheduleError,
)
from fundgym.agents.rollout import base_env, first_episodes, job_env
from fundgym.envs.controls import ALLOCATION, PARAMS
from fundgym.envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv
from fundgym.envs.levers import LEVERS, Venue, VenueField, venue_values

#: Column namings: fundgym's own, or fundgym's plus a venue's (every venue the registry knows).
NAMINGS: tuple[str, ...] = ("fundgym", *get_args(Venue))


def _param_unit(name: str) -> str:
    """The unit of an in-force column: the lever's, but allocation columns hold weights."""
    if name in ALLOCATION:
        return f"fund weight in the {name.removeprefix('alloc_')} bucket (fraction)"
    return LEVERS[name].unit


#: In-force parameters (``info["params"]``: the levers, allocation as weights) and their units.
PARAM_UNITS: dict[str, str] = {name: _param_unit(name) for name in LEVERS}
#: The levers a schedule row holds in force: the action levers and the ``imr`` they imply.
IN_FORCE: tuple[str, ...] = (*PARAMS, "imr")

#: The state columns: observation name -> (column, unit, scale from the observation).
STATE_COLUMNS: dict[str, tuple[str, str, float]] = {
    "vol_short": ("vol_1h_annual", "annualised realised volatility, 1-hour EWMA", 1.0),
    "vol_long": ("vol_1d_annual", "annualised realised volatility, 1-day EWMA", 1.0),
    "return_pct": ("return_last_decision_pct", "index return over the last decision, %", 1.0),
    "depth_rel": ("depth_rel", "book depth / normal depth", 1.0),
    "oi_to_depth_log10": (
        "oi_to_depth_log10",
        "log10 of open interest / book depth per 1% (thinness)",
        1.0,
    ),
    "oracle_gap_pct": ("oracle_gap_pct", "oracle vs mark, %", 1.0),
    "fund_coverage": ("fund_coverage_frac", "fund value / open interest", 0.1),
    "leverage_p90": ("leverage_p90", "90th percentile leverage of open accounts", 50.0),
    "oi_within_2pct": ("oi_within_2pct_frac", "share of OI within 2% of liquidation", 1.0),
}

#: Outcome columns from the environment's ``info`` and their units.
OUTCOME_UNITS: dict[str, str] = {
    "index_price": "USD",
    "mark_price": "USD",
    "fund_balance_usd": "USD, fund value at the end of the decision",
    "open_interest_usd": "USD, end of the decision",
    "liquidation_volume_usd": "USD liquidated during the decision",
    "shortfall_usd": "USD of bad debt the fund paid during the decision",
    "adl_volume_usd": "USD deleveraged during the decision",
    "socialized_loss_usd": "USD socialised during the decision",
}


def _venue_fields(
    venue: str, in_force: tuple[str, ...] = IN_FORCE
) -> dict[str, tuple[str, VenueField]]:
    """``venue``'s fields a schedule can fill: field name -> (lever name, field).

    Those whose lever (and the lever it is stated per) is in force (``in_force``: the
    one-market schedule's :data:`IN_FORCE`, or a multi-market schedule's per-market set), in
    registry order.
    """
    return {
        f.name: (name, f)
        for name, lever in LEVERS.items()
        for f in lever.venues
        if f.venue == venue and name in in_force and f.per in (None, *in_force)
    }


def _venue_unit(lever: str, field: VenueField) -> str:
    """What a venue column holds and how it is computed from fundgym's columns."""
    x = f"({lever} / {field.per})" if field.per is not None else lever
    scale = f"{field.scale:g}".replace("e+0", "e")
    scaled = x if field.scale == 1.0 else f"{x} x {scale}"
    formula = f"{scale} / {x}" if field.inverse else scaled
    rounded = ", rounded to an integer" if field.integer else ""
    estimate = "; an approximate correspondence" if field.estimate else ""
    return f"{field.source}: {formula}{rounded}{estimate}"


def venue_units(venue: str, in_force: tuple[str, ...] = IN_FORCE) -> dict[str, str]:
    """The columns ``naming=venue`` adds, with units (:data:`fundgym.envs.levers.LEVERS`)."""
    return {
        col: _venue_unit(lever, f) for col, (lever, f) in _venue_fields(venue, in_force).items()
    }


def venue_columns(
    venue: Venue, row: dict[str, float], in_force: tuple[str, ...] = IN_FORCE
) -> dict[str, float | int]:
    """``venue``'s configuration fields for a schedule row (integers where the venue stores them).

    The row's in-force levers (``in_force``, default :data:`IN_FORCE`) are converted by
    :func:`fundgym.envs.levers.venue_values`; a venue field of a lever the environment does not move
    (a taker fee, the liquidation block limits) is not a column.
    """
    fields = _venue_fields(venue, in_force)
    values = venue_values(venue, {name: row[name] for name in in_force})
    return {col: int(v) if fields[col][1].integer else v for col, v in values.items()}


@dataclass(frozen=True)
class ScheduleExport:
    """What :func:`export_schedule` wrote."""

    path: Path
    n_steps: int
    columns: tuple[str, ...]
    metadata: dict[str, Any]


def rollout_schedule(
    run_dir: Path, scenario: str, seed: int
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """One episode of the run's policy on ``scenario`` (seeded ``seed``): rows and env settings.

    The environment is the one ``fundgym evaluate`` runs the policy in (the run's settings, the
    scenario's own horizon), so an exported schedule replays there exactly.
    """
    spec = PolicySpec(run_dir.resolve().name, "trained", path=str(run_dir.resolve()))
    kw = job_env(base_env(run_dir / "config.yaml", [spec]), spec, scenario)
    env = InsuranceFundVectorEnv(num_envs=1, **kw)
    controlled = tuple(env.config.controlled)
    policy = TrainedPolicy(spec.name, run_dir)
    obs, _ = env.reset(seed=seed)
    core = env.core
    minutes = core.ticks_per_decision * core.tick_minutes
    rows: list[dict[str, float]] = []
    for step in first_episodes(env, policy, obs):
        t, info = step.t, step.info
        row: dict[str, float] = {"step": t, "time_minutes": minutes * (t + 1)}
        for name, value in info["params"].items():
            row[name] = float(value[0])
        for j, name in enumerate(controlled):
            row[f"target_{name}"] = _target_value(name, float(step.action[0, j]))
        for obs_name, (col, _, scale) in STATE_COLUMNS.items():
            row[col] = float(step.obs[0, OBS_NAMES.index(obs_name)]) * scale
        for key in OUTCOME_UNITS:
            row[key] = float(info[key][0])
        for j, name in enumerate(controlled):
            row[f"action_{name}"] = float(step.action[0, j])
        rows.append(row)
    return rows, kw


def _target_value(name: str, position: float) -> float:
    """A target in natural units; allocation targets stay logit positions (weights need all)."""
    if name in ALLOCATION:
        return position
    return float(PARAMS[name].to_value(np.array(position, dtype=np.float64)))


def export_schedule(
    run_dir: Path,
    out: Path,
    *,
    scenario: str,
    seed: int = 0,
    fmt: Literal["csv", "json"] = "csv",
    naming: Literal["fundgym"] | Venue = "fundgym",
    argv: list[str] | None = None,
) -> ScheduleExport:
    """Write the schedule the run's policy sets along ``scenario`` (see the module docstring).

    Raises:
        ScheduleError: An unknown format or naming.
    """
    check_schedule_options(fmt, naming)
    rows, kw = rollout_schedule(run_dir, scenario, seed)
    controlled = list(kw["controlled"])
    if naming != "fundgym":
        rows = [{**r, **venue_columns(naming, r)} for r in rows]
    columns = list(rows[0])
    units: dict[str, str] = {"step": "decision index", "time_minutes": "minutes since start"}
    units.update({k: v for k, v in PARAM_UNITS.items() if k in columns})
    for name in controlled:
        units[f"target_{name}"] = (
            "target allocation logit position in [-1, 1] (weights = softmax(3 x logits))"
            if name in ALLOCATION
            else f"target of {name} ({LEVERS[name].unit})"
        )
        units[f"action_{name}"] = "raw policy output, action units [-1, 1] (for replay)"
    units.update({col: unit for col, unit, _ in STATE_COLUMNS.values()})
    units.update(OUTCOME_UNITS)
    units.update(venue_units(naming))
    meta = schedule_metadata(
        run_dir,
        scenario=scenario,
        seed=seed,
        decision_minutes=kw["decision_minutes"],
        controlled=controlled,
        naming=naming,
        units=units,
        env=jsonable(kw),
        argv=argv,
        notes=(
            "Parameters in force at the end of each decision (the environment moves toward "
            "the targets by at most max_step per decision and applies margin increases after "
            "margin_notice_minutes). action_* columns replay the policy exactly."
        ),
    )
    return write_schedule(out, fmt, meta, rows)


def check_schedule_options(fmt: str, naming: str) -> None:
    """Refuse a format or naming a schedule does not have.

    Raises:
        ScheduleError: Naming the value and the allowed ones.
    """
    if fmt not in ("csv", "json"):
        raise ScheduleError(f"format {fmt!r}: allowed csv, json")
    if naming not in NAMINGS:
        raise ScheduleError(f"naming {naming!r}: allowed {', '.join(NAMINGS)}")


def schedule_metadata(
    run_dir: Path,
    *,
    scenario: str,
    seed: int,
    decision_minutes: float,
    controlled: list[str],
    naming: str,
    units: dict[str, str],
    env: dict[str, Any],
    argv: list[str] | None,
    notes: str,
) -> dict[str, Any]:
    """A schedule's self-description: format, run, model files, episode, units, settings."""
    model_file, norm_file = run_model_files(run_dir)
    return {
        "schema_version": SCHEDULE_SCHEMA_VERSION,
        "kind": SCHEDULE_KIND,
        "fundgym_version": __version__,
        "run_dir": str(run_dir.resolve()),
        "model_file": model_file.relative_to(run_dir).as_posix(),
        "vecnormalize_file": norm_file.relative_to(run_dir).as_posix() if norm_file else None,
        "scenario": scenario,
        "seed": seed,
        "decision_minutes": decision_minutes,
        "controlled": controlled,
        "naming": naming,
        "notes": notes,
        "units": units,
        "env": env,
        "config": (run_dir / "config.yaml").read_text(),
        "command": " ".join(argv) if argv else None,
    }


def write_schedule(
    out: Path,
    fmt: Literal["csv", "json"],
    meta: dict[str, Any],
    rows: list[dict[str, float]],
) -> ScheduleExport:
    """Write a schedule atomically: JSON (metadata, columns, rows) or CSV (metadata line first).

    Floats are written at full precision (``repr``), so ``action_*`` columns replay exactly.
    """
    columns = list(rows[0])
    if fmt == "json":
        text = json.dumps({**meta, "columns": columns, "rows": rows}, indent=1)
    else:
        buf = io.StringIO()
        buf.write(CSV_MARKER + json.dumps(meta) + "\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(
                [repr(float(r[c])) if isinstance(r[c], float) else r[c] for c in columns]
            )
        text = buf.getvalue()
    write_text_atomic(out, text)
    return ScheduleExport(out, len(rows), tuple(columns), meta)


__all__ = [
    "IN_FORCE",
    "NAMINGS",
    "OUTCOME_UNITS",
    "PARAM_UNITS",
    "STATE_COLUMNS",
    "ScheduleError",
    "ScheduleExport",
    "check_schedule_options",
    "export_schedule",
    "rollout_schedule",
    "schedule_metadata",
    "venue_columns",
    "venue_units",
    "write_schedule",
]
