"""Parameter schedules: what a trained policy sets along a scenario, as a file an engine can load.

:func:`export_schedule` runs a trained policy through one episode of a scenario and writes,
for every decision, the time, the parameters in force (natural units: rates as fractions,
fund shares, allocation weights), the targets the policy asked for, and the state it reacted
to (volatility, depth, fund coverage, ...), as CSV or JSON. Both are self-describing: the
schema version, every column's unit, the run, model and resolved config that produced it.

A risk engine applies the ``*`` in-force columns as they are. ``action_*`` columns hold the
policy's raw targets in action units at full precision: :class:`SchedulePolicy` replays them
(``fundgym evaluate --policy schedule:FILE``), which reproduces the policy's parameters
exactly on the same scenario and seed, since the environment rate-limits and delays moves
from the targets the same way. Replayed on other seeds or scenarios, a schedule is an
open-loop, time-indexed plan (the last row holds after it ends): the comparison with the
closed-loop model shows what reacting to the state is worth.

``naming="dydx"`` adds columns named as dYdX v4's perpetual and liquidation configs name
them, so a schedule maps onto a real config: ``max_liquidation_fee_ppm`` (fee x 1e6),
``initial_margin_ppm`` (IMR x 1e6) and ``maintenance_fraction_ppm`` (MMR / IMR x 1e6).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.outputs import jsonable, write_text_atomic
from envs.controls import ALLOCATION, PARAMS
from envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

SCHEDULE_SCHEMA_VERSION = "1"
SCHEDULE_KIND = "fundgym.schedule"
CSV_MARKER = "# fundgym-schedule: "

#: In-force parameters (``info["params"]``) and their units.
PARAM_UNITS: dict[str, str] = {
    "liquidation_fee_rate": "fraction of liquidated notional (max fee)",
    "liquidation_fee_fund_share": "fraction of the liquidation fee paid to the fund",
    "mmr": "maintenance margin, fraction of notional",
    "imr_multiple": "initial margin / maintenance margin",
    "imr": "initial margin, fraction of notional",
    "trading_fee_fund_share": "fraction of taker fees paid to the fund",
    "alloc_stable": "fund weight in stable assets (fraction)",
    "alloc_yield": "fund weight in yield-bearing assets (fraction)",
    "alloc_volatile": "fund weight in volatile assets (fraction)",
    "alloc_hedge": "fund weight in put hedges (fraction)",
}

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

DYDX_UNITS = {
    "max_liquidation_fee_ppm": "dYdX liquidations_config.max_liquidation_fee_ppm (fee x 1e6)",
    "initial_margin_ppm": "dYdX liquidity tier initial_margin_ppm (IMR x 1e6)",
    "maintenance_fraction_ppm": "dYdX liquidity tier maintenance_fraction_ppm (MMR/IMR x 1e6)",
}


class ScheduleError(ValueError):
    """A schedule file that cannot be read or replayed (the message names file and field)."""


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
    from agents.evaluate import base_env, first_episodes, job_env
    from agents.policies import PolicySpec, TrainedPolicy

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


def _dydx_columns(row: dict[str, float]) -> dict[str, float]:
    return {
        "max_liquidation_fee_ppm": round(row["liquidation_fee_rate"] * 1e6),
        "initial_margin_ppm": round(row["imr"] * 1e6),
        "maintenance_fraction_ppm": round(row["mmr"] / row["imr"] * 1e6),
    }


def export_schedule(
    run_dir: Path,
    out: Path,
    *,
    scenario: str,
    seed: int = 0,
    fmt: Literal["csv", "json"] = "csv",
    naming: Literal["fundgym", "dydx"] = "fundgym",
    argv: list[str] | None = None,
) -> ScheduleExport:
    """Write the schedule the run's policy sets along ``scenario`` (see the module docstring).

    Raises:
        ScheduleError: An unknown format or naming.
    """
    from agents import __version__
    from agents.policies import run_model_files

    if fmt not in ("csv", "json"):
        raise ScheduleError(f"format {fmt!r}: allowed csv, json")
    if naming not in ("fundgym", "dydx"):
        raise ScheduleError(f"naming {naming!r}: allowed fundgym, dydx")
    rows, kw = rollout_schedule(run_dir, scenario, seed)
    controlled = list(kw["controlled"])
    if naming == "dydx":
        rows = [{**r, **_dydx_columns(r)} for r in rows]
    columns = list(rows[0])
    units: dict[str, str] = {"step": "decision index", "time_minutes": "minutes since start"}
    units.update({k: v for k, v in PARAM_UNITS.items() if k in columns})
    for name in controlled:
        units[f"target_{name}"] = (
            "target allocation logit position in [-1, 1] (weights = softmax(3 x logits))"
            if name in ALLOCATION
            else f"target of {name} ({PARAM_UNITS[name]})"
        )
        units[f"action_{name}"] = "raw policy output, action units [-1, 1] (for replay)"
    units.update({col: unit for col, unit, _ in STATE_COLUMNS.values()})
    units.update(OUTCOME_UNITS)
    if naming == "dydx":
        units.update(DYDX_UNITS)
    model_file, norm_file = run_model_files(run_dir)
    meta: dict[str, Any] = {
        "schema_version": SCHEDULE_SCHEMA_VERSION,
        "kind": SCHEDULE_KIND,
        "fundgym_version": __version__,
        "run_dir": str(run_dir.resolve()),
        "model_file": model_file.name,
        "vecnormalize_file": norm_file.name if norm_file else None,
        "scenario": scenario,
        "seed": seed,
        "decision_minutes": kw["decision_minutes"],
        "controlled": controlled,
        "naming": naming,
        "notes": (
            "Parameters in force at the end of each decision (the environment moves toward "
            "the targets by at most max_step per decision and applies margin increases after "
            "margin_notice_minutes). action_* columns replay the policy exactly."
        ),
        "units": units,
        "env": jsonable(kw),
        "config": (run_dir / "config.yaml").read_text(),
        "command": " ".join(argv) if argv else None,
    }
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


def read_schedule(path: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Metadata and rows of a schedule file (CSV or JSON, by content).

    Raises:
        ScheduleError: Not a fundgym schedule, an unsupported schema version, or a bad row;
            the message names the file and what is wrong.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read ({exc})") from exc
    try:
        if text.startswith(CSV_MARKER):
            first, _, body = text.partition("\n")
            meta = json.loads(first[len(CSV_MARKER) :])
            reader = csv.DictReader(io.StringIO(body))
            rows = [{k: float(v) for k, v in r.items()} for r in reader]
        else:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ScheduleError(f"{path}: not a fundgym schedule (top level is not a mapping)")
            meta = {k: v for k, v in data.items() if k not in ("rows", "columns")}
            rows = [{k: float(v) for k, v in r.items()} for r in data.get("rows", [])]
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        if isinstance(exc, ScheduleError):
            raise
        raise ScheduleError(f"{path}: not a readable fundgym schedule ({exc})") from exc
    if meta.get("kind") != SCHEDULE_KIND:
        raise ScheduleError(f"{path}: kind = {meta.get('kind')!r}, expected {SCHEDULE_KIND!r}")
    if meta.get("schema_version") != SCHEDULE_SCHEMA_VERSION:
        raise ScheduleError(
            f"{path}: schema_version = {meta.get('schema_version')!r}; this fundgym reads "
            f"{SCHEDULE_SCHEMA_VERSION!r}"
        )
    if not rows:
        raise ScheduleError(f"{path}: the schedule has no rows")
    missing = [f"action_{n}" for n in meta.get("controlled", []) if f"action_{n}" not in rows[0]]
    if missing:
        raise ScheduleError(f"{path}: column {missing[0]!r} is missing (needed to replay)")
    return meta, rows


class SchedulePolicy:
    """Replays a schedule's targets by decision index (the last row holds after it ends).

    Args:
        path: The schedule file.
        name: Display name.
        controlled: The evaluation environment's controlled parameters; must be the schedule's.
    """

    def __init__(self, path: Path, name: str, controlled: tuple[str, ...]) -> None:
        meta, rows = read_schedule(path)
        if tuple(meta["controlled"]) != tuple(controlled):
            raise ScheduleError(
                f"{path}: controls {meta['controlled']} but the environment controls "
                f"{list(controlled)}"
            )
        self.name = name
        self.actions = np.array([[r[f"action_{n}"] for n in controlled] for r in rows])
        self._t = np.zeros(0, dtype=np.int64)

    def reset(self, n_envs: int) -> None:
        """Every exchange starts at the schedule's first row."""
        self._t = np.zeros(n_envs, dtype=np.int64)

    def act(self, obs: FloatArray) -> FloatArray:
        """The row of each exchange's decision index."""
        n = obs.shape[0]
        if self._t.shape != (n,):
            self.reset(n)
        out = self.actions[np.minimum(self._t, len(self.actions) - 1)]
        self._t += 1
        return np.asarray(out, dtype=np.float64)
