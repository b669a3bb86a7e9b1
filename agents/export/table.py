"""Distil a trained policy into a state-conditioned lookup table a person can read and apply.

:func:`distill_table` rolls a ``fundgym train`` run's policy (its best model, deterministic)
through scenarios, bins the states it met by a few observations (by default realised
volatility, book depth and fund coverage; :data:`FEATURES`) and stores, for every cell of the
grid, the mean of the actions the policy took there. Applying the table needs no model, no
torch and no stable-baselines3: look up the cell an observation falls in and use its
parameters (:class:`fundgym.agents.policies.TablePolicy`, ``fundgym evaluate --policy table:FILE``).

**Bins.** Per feature, ``bins`` quantile bins of the fitting data: the inner edges are the
``1/bins .. (bins-1)/bins`` quantiles, duplicates and edges at the data's minimum dropped (a
feature that rarely moves, such as book depth in calm markets, gets fewer bins); the outer
edges are -inf and +inf, so every state maps to a cell. Bin ``k`` of a feature holds values
``edges[k] <= x < edges[k + 1]``. A cell no fitting state fell in takes the action of the
nearest filled cell (Euclidean distance in bin-index space, ties to the first in row-major
order) and says so (``"n": 0, "filled_from": [i, j, k]``).

**The file** (JSON, ``schema_version`` and ``kind`` as :mod:`fundgym.agents.policies.replay`
reads them) holds the run it came from (``run_dir``, ``model_file``, the run's
``config`` text and its resolved ``env`` section, from which a replay rebuilds the
environment; :func:`fundgym.agents.policies.replay_env`), the ``controlled`` parameters in action
order, the
``features`` with their edges (outer edges written ``"-inf"``/``"inf"``, so the file is strict
JSON), one entry per cell (``bin``, a readable ``state``, ``n`` samples, ``action`` in action
units and ``params`` in natural units), the ``fidelity`` and the ``fit`` settings. A CSV with
the same stem lies next to it: one row per cell, the bin ranges, ``n`` and every parameter in
natural units.

**Fidelity** (:func:`distill_table`) is measured on fresh seeds (``check_seed``), never on the
fitting data:

* ``open_loop``: on the states the policy itself visits, how far the table's action is from
  the policy's (per parameter, action units and natural units);
* ``closed_loop``: the table and the policy each run the scenarios from the same seeds, and
  the parameters *in force* at each decision (what the exchange applied, after the rate limit
  and margin notice; :attr:`fundgym.agents.evaluate.metrics.EpisodeRecord.params`) are compared step
  by step.
  Both runs are deterministic, so replaying the table on these seeds reproduces these numbers.

Like every policy's output, a table's actions are *targets*: the environment moves each
parameter toward its target by at most ``max_step`` per decision and delays margin increases.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.action_map import start_positions
from fundgym.agents.outputs import jsonable, progress_bar
from fundgym.agents.policies import (
    Policy,
    PolicySpec,
    SpecError,
    TableError,
    TablePolicy,
    TrainedPolicy,
    run_config_file,
    run_model_files,
)
from fundgym.agents.policies.replay import TABLE_KIND, TABLE_SCHEMA_VERSION, TableGrid
from fundgym.agents.rollout import CRASHES, base_env, first_episodes, job_env, parse_scenarios
from fundgym.envs.controls import ALLOCATION, BUCKETS, PARAMS, allocation_weights
from fundgym.envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

#: Default binning features (observation names): realised volatility (1-hour), book depth
#: relative to normal, fund coverage.
FEATURES: tuple[str, ...] = ("vol_short", "depth_rel", "fund_coverage")

#: What one unit of each observation is (the observation table of
#: :class:`fundgym.envs.exchange_env.InsuranceFundEnv`).
OBS_UNITS: dict[str, str] = {
    "vol_short": "realised volatility, 1-hour EWMA, annualised fraction",
    "vol_long": "realised volatility, 1-day EWMA, annualised fraction",
    "return_pct": "index return over the last decision, percent",
    "depth_rel": "book depth relative to normal (1 = normal)",
    "oracle_gap_pct": "oracle vs mark gap, percent",
    "funding_per_mille": "funding rate per 8 h, per mille",
    "open_interest_rel": "open interest / the episode's initial open interest",
    "long_short_skew": "(long - short) / (long + short) open interest",
    "leverage_p50": "median leverage of open accounts / 50",
    "leverage_p90": "90th percentile leverage of open accounts / 50",
    "leverage_p99": "99th percentile leverage of open accounts / 50",
    "oi_within_1pct": "share of open interest within 1% of its liquidation price",
    "oi_within_2pct": "share of open interest within 2% of its liquidation price",
    "oi_within_5pct": "share of open interest within 5% of its liquidation price",
    "fund_coverage": "10 x fund value / open interest",
    "fund_stable": "fund weight in the stable bucket",
    "fund_yield": "fund weight in the yield bucket",
    "fund_volatile": "fund weight in the volatile bucket",
    "fund_hedge": "fund weight in the hedge bucket",
    "liquidations_pct_oi": "liquidation volume last decision, % of initial open interest",
    "shortfall_per_mille_oi": "fund shortfall + uncovered loss last decision, per mille of OI",
    **{f"param_{n}": f"{n} in force, action units [-1, 1]" for n in PARAMS},
    "episode_progress": "fraction of the episode elapsed",
}


@dataclass(frozen=True)
class TableExport:
    """What :func:`distill_table` wrote and how faithful the table is to the policy.

    Attributes:
        path: The JSON table (the CSV view is ``path.with_suffix(".csv")``).
        n_cells: Cells of the grid (product of the features' bin counts).
        n_filled: Cells at least one fitting state fell in (the others copy a neighbour).
        fidelity: ``{"open_loop": ..., "closed_loop": ...}`` as stored in the file.
    """

    path: Path
    n_cells: int
    n_filled: int
    fidelity: dict[str, Any]


def _edge_text(x: float) -> str | float:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


@dataclass(frozen=True)
class Rollout:
    """A batch of episodes of one policy: the decisions of each episode and what was in force.

    Attributes:
        obs: ``(n, 32)`` the observation at every decision of every episode (episode-major).
        actions: ``(n, n_controlled)`` the policy's action at each of them.
        params: Per episode, parameter name -> its value in force after each decision, natural
            units (as :attr:`fundgym.agents.evaluate.metrics.EpisodeRecord.params`).
        total_reward: ``(episodes,)`` each episode's summed reward.
    """

    obs: FloatArray
    actions: FloatArray
    params: list[dict[str, FloatArray]]
    total_reward: FloatArray


def rollout(policy: Policy, env_kw: dict[str, Any], episodes: int, seed: int) -> Rollout:
    """Run ``episodes`` episodes of ``policy`` (episode ``i`` seeded ``seed + i``), batched.

    The same loop as :func:`fundgym.agents.evaluate.episodes.run_episodes` (same observations, same
    autoreset), so the parameters in force equal that function's ``EpisodeRecord.params``; it
    also keeps each decision's observation and action.
    """
    env = InsuranceFundVectorEnv(num_envs=episodes, **env_kw)
    obs, _ = env.reset(seed=seed)
    seen_obs: list[FloatArray] = []
    seen_act: list[FloatArray] = []
    live_steps: list[np.ndarray[Any, np.dtype[np.bool_]]] = []
    params: dict[str, list[FloatArray]] = {}
    rewards: list[FloatArray] = []
    end = np.full(episodes, -1)
    for step in first_episodes(env, policy, obs):
        seen_obs.append(step.obs.copy())
        seen_act.append(step.action.copy())
        live_steps.append(end < 0)
        rewards.append(np.asarray(step.reward, dtype=np.float64).copy())
        for name, values in step.info["params"].items():
            params.setdefault(name, []).append(np.asarray(values, dtype=np.float64).copy())
        end[step.done] = step.t
    o, a, m = np.stack(seen_obs), np.stack(seen_act), np.stack(live_steps)
    # Episode-major: exchange 0's decisions first, in time order.
    o_e, a_e, m_e = o.transpose(1, 0, 2), a.transpose(1, 0, 2), m.T
    par = {k: np.stack(v) for k, v in params.items()}
    rew = np.stack(rewards)
    return Rollout(
        obs=o_e[m_e],
        actions=a_e[m_e],
        params=[{k: v[: end[i] + 1, i] for k, v in par.items()} for i in range(episodes)],
        total_reward=np.array([rew[: end[i] + 1, i].sum() for i in range(episodes)]),
    )


def compare_params(
    a: Sequence[dict[str, FloatArray]], b: Sequence[dict[str, FloatArray]]
) -> dict[str, dict[str, float]]:
    """Per parameter, the absolute gaps between two runs' parameters in force, step by step.

    Episode ``i`` of ``a`` is compared with episode ``i`` of ``b`` over the steps both ran
    (the shorter one's length); the gaps of all episodes are pooled.

    Returns:
        Parameter name -> ``{"mean_abs", "p95_abs", "max_abs"}`` (natural units).
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} episodes against {len(b)}")
    out: dict[str, dict[str, float]] = {}
    if not a:
        return out
    for key in a[0]:
        gaps = [
            np.abs(x[key][:n] - y[key][:n])
            for x, y in zip(a, b, strict=True)
            for n in [min(len(x[key]), len(y[key]))]
        ]
        g = np.concatenate(gaps)
        out[key] = {
            "mean_abs": float(g.mean()),
            "p95_abs": float(np.percentile(g, 95.0)),
            "max_abs": float(g.max()),
        }
    return out


# ------------------------------------------------------------------ distilling ----


def _start_positions(env: dict[str, Any]) -> dict[str, float]:
    """Every parameter's starting position: the env's fixed values, else the defaults."""
    return start_positions(env.get("fixed") or {})


def _held(env: dict[str, Any]) -> tuple[str, ...]:
    """The allocation buckets the env's fund may hold (``allocation_buckets``; all four)."""
    return tuple(env.get("allocation_buckets") or BUCKETS)


def natural_units(
    actions: FloatArray,
    controlled: Sequence[str],
    start: dict[str, float],
    held: tuple[str, ...] = BUCKETS,
) -> dict[str, FloatArray]:
    """Targets in natural units, column per name, for actions ``(n, n_controlled)``.

    Each controlled parameter through ``PARAMS[name].to_value``; ``imr`` (= mmr x imr_multiple,
    capped at 1) when either is controlled; when an allocation logit is controlled, the
    weights of all four buckets (``alloc_<bucket>``, softmax of the logits with uncontrolled
    buckets at ``start``; a bucket outside ``held`` weighs 0) and each controlled logit as
    ``alloc_<bucket>_logit``.
    """
    a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    n = a.shape[0]
    pos = {name: np.full(n, start[name]) for name in PARAMS}
    for j, name in enumerate(controlled):
        pos[name] = a[:, j]
    out: dict[str, FloatArray] = {}
    for name in controlled:
        if name not in ALLOCATION:
            out[name] = PARAMS[name].to_value(pos[name])
    if "mmr" in controlled or "imr_multiple" in controlled:
        mmr, multiple = (PARAMS[k].to_value(pos[k]) for k in ("mmr", "imr_multiple"))
        out["imr"] = np.minimum(mmr * multiple, 1.0)
    if any(name in ALLOCATION for name in controlled):
        logits = np.stack([pos[name] for name in ALLOCATION], axis=1)
        weights = allocation_weights(logits, held)
        for k, name in enumerate(ALLOCATION):
            out[name] = weights[:, k]
        for name in controlled:
            if name in ALLOCATION:
                out[f"{name}_logit"] = pos[name]
    return out


def _quantile_edges(x: FloatArray, bins: int) -> FloatArray:
    """Inner edges of ``bins`` quantile bins (deduplicated; none at the data's minimum)."""
    if bins <= 1 or x.size == 0:
        return np.empty(0)
    q = np.unique(np.quantile(x, np.arange(1, bins) / bins))
    return np.asarray(q[q > x.min()], dtype=np.float64)


def _range_text(lo: float, hi: float) -> str:
    left = "(-inf" if math.isinf(lo) else f"[{lo:.4g}"
    right = "inf)" if math.isinf(hi) else f"{hi:.4g})"
    return f"{left}, {right}"


def fit_grid(
    obs: FloatArray, actions: FloatArray, obs_index: Sequence[int], bins: int
) -> tuple[tuple[FloatArray, ...], IntArray, FloatArray, IntArray]:
    """Quantile-bin ``obs`` and average ``actions`` per cell; empty cells copy the nearest.

    Args:
        obs: ``(n, 32)`` observations (``n >= 1``).
        actions: ``(n, k)`` the policy's actions at them.
        obs_index: The observation column of each feature.
        bins: Quantile bins per feature (fewer where edges coincide).

    Returns:
        The inner edges per feature, the counts ``(*shape,)``, the cell actions
        ``(*shape, k)`` and, per cell, the bin of the filled cell its action comes from
        ``(*shape, n_features)`` (itself when filled).
    """
    inner = tuple(_quantile_edges(obs[:, i], bins) for i in obs_index)
    shape = tuple(len(e) + 1 for e in inner)
    idx = tuple(
        np.searchsorted(e, obs[:, i], side="right") for e, i in zip(inner, obs_index, strict=True)
    )
    flat = np.ravel_multi_index(idx, shape)
    n_cells = int(np.prod(shape))
    counts = np.bincount(flat, minlength=n_cells).astype(np.int64)
    k = actions.shape[1]
    sums = np.stack(
        [np.bincount(flat, weights=actions[:, j], minlength=n_cells) for j in range(k)], axis=1
    )
    coords = np.array(list(np.ndindex(*shape)), dtype=np.int64).reshape(n_cells, len(shape))
    filled = np.flatnonzero(counts > 0)
    means = np.zeros((n_cells, k))
    means[filled] = sums[filled] / counts[filled, None]
    source = np.arange(n_cells)
    for c in np.flatnonzero(counts == 0):
        d2 = ((coords[filled] - coords[c]) ** 2).sum(axis=1)
        source[c] = filled[int(np.argmin(d2))]  # argmin: the first of equals, row-major
    means = np.clip(means[source], -1.0, 1.0)
    return (
        inner,
        counts.reshape(shape),
        means.reshape(*shape, k),
        coords[source].reshape(*shape, len(shape)),
    )


def _stats(gaps: FloatArray) -> dict[str, float]:
    return {"mean_abs": float(gaps.mean()), "max_abs": float(gaps.max())}


def _open_loop(
    table: TablePolicy,
    obs: FloatArray,
    actions: FloatArray,
    controlled: Sequence[str],
    start: dict[str, float],
    constant: FloatArray,
    held: tuple[str, ...],
) -> dict[str, Any]:
    got = table.act(obs)
    nat_got = natural_units(got, controlled, start, held)
    nat_want = natural_units(actions, controlled, start, held)
    per: dict[str, Any] = {}
    for j, name in enumerate(controlled):
        per[name] = {
            "action_units": _stats(np.abs(got[:, j] - actions[:, j])),
            "natural_units": _stats(np.abs(nat_got[name] - nat_want[name])),
        }
    return {
        "n_samples": int(obs.shape[0]),
        "mean_abs_action": float(np.abs(got - actions).mean()),
        "mean_abs_action_constant": float(np.abs(constant[None, :] - actions).mean()),
        "params": per,
    }


def distill_table(
    run_dir: Path,
    out: Path,
    *,
    scenarios: Sequence[str] | None = None,
    episodes: int = 4,
    seed: int = 0,
    bins: int = 4,
    features: Sequence[str] = FEATURES,
    check_seed: int = 10_000,
    progress: bool = False,
) -> TableExport:
    """Distil a run's policy into a state table, measure its fidelity, write it atomically.

    Args:
        run_dir: A run directory written by ``fundgym train`` (its best model is used, else
            its final model, with the observation normalisation it was trained with).
        out: The JSON table to write; the CSV view goes to ``out.with_suffix(".csv")``.
        scenarios: Scenarios to roll the policy through (library names, YAML paths or
            ``"training"``); default ``("training", *fundgym.agents.rollout.CRASHES)``.
        episodes: Episodes per scenario, for fitting and again for each fidelity check.
        seed: First fitting seed (episode ``i`` of every scenario seeded ``seed + i``).
        bins: Quantile bins per feature (fewer where the data's quantiles coincide).
        features: Observation names to bin by (:data:`FEATURES`).
        check_seed: First seed of the fidelity checks (keep it clear of the fitting seeds).
        progress: Show a progress bar.

    Returns:
        The file written, the grid's size and the fidelity, as stored in the file:

        * ``open_loop``: ``scenarios``, ``episodes``, ``seed`` (the check's), ``n_samples``;
          ``mean_abs_action`` (table vs policy, all parameters, action units) next to
          ``mean_abs_action_constant`` (one global mean action instead of the table); and per
          controlled parameter ``{"action_units"|"natural_units": {"mean_abs", "max_abs"}}``
          (an allocation logit's natural unit is its bucket's weight);
        * ``closed_loop``: the same settings, ``n_steps`` compared, ``params``: every
          parameter in force (``EpisodeRecord.params`` keys) -> ``{"mean_abs", "p95_abs",
          "max_abs"}`` in natural units, ``max_abs_by_scenario``, and ``mean_episode_reward``
          of the model and of the table (overall and by scenario).

    Raises:
        fundgym.agents.policies.SpecError: The run directory, its config or its model is missing or
            cannot be loaded (the message names the file).
        fundgym.agents.rollout.EvaluateError: An unknown scenario or an invalid run config.
        TableError: Bad arguments (``bins``, ``episodes``, ``features``, ``out``).
    """
    run_dir, out, feats = Path(run_dir), Path(out), tuple(features)
    if bins < 1:
        raise TableError(f"bins = {bins}: at least 1 bin per feature")
    if episodes < 1:
        raise TableError(f"episodes = {episodes}: at least 1 episode per scenario")
    unknown = [f for f in feats if f not in OBS_NAMES]
    if not feats or unknown or len(set(feats)) != len(feats):
        raise TableError(
            f"features = {list(feats)}: expected distinct observation names from {OBS_NAMES}"
        )
    if out.is_dir():
        raise TableError(f"{out}: is a directory; expected the path of the .json table")
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise TableError(f"{out}: the table must not end in .csv (its CSV view goes there)")
    config_path = run_config_file(run_dir, SpecError)
    model_file, _ = run_model_files(run_dir)
    names = ["training", *CRASHES] if scenarios is None else parse_scenarios(list(scenarios))

    spec = PolicySpec(run_dir.resolve().name, "trained", path=str(run_dir.resolve()))
    base = base_env(config_path, [spec])
    env_kw = {sc: job_env(base, spec, sc) for sc in names}
    env = job_env(base, spec, "training")  # stored: replay_env() sets each scenario
    controlled = tuple(env["controlled"])
    start = _start_positions(env)
    model = TrainedPolicy(spec.name, run_dir.resolve())
    bar = progress_bar(3 * len(names) * episodes, "distil: rollouts", progress)

    # Fit: the policy's own states and actions on the fitting seeds.
    fit_runs = []
    for sc in names:
        fit_runs.append(rollout(model, env_kw[sc], episodes, seed))
        bar.update(episodes)
    obs = np.concatenate([r.obs for r in fit_runs])
    actions = np.concatenate([r.actions for r in fit_runs])
    obs_index = [OBS_NAMES.index(f) for f in feats]
    inner, counts, cell_actions, source = fit_grid(obs, actions, obs_index, bins)
    grid = TableGrid(controlled, tuple(obs_index), inner, cell_actions)
    table = _table_document(
        feats, grid, counts, source, start, run_dir, model_file, config_path, env
    )
    table["fit"] = {
        "scenarios": list(names),
        "episodes": episodes,
        "seed": seed,
        "bins": bins,
        "n_samples": int(obs.shape[0]),
        "n_cells": int(counts.size),
        "n_filled": int((counts > 0).sum()),
        "in_sample_mean_abs_action": float(np.abs(grid.lookup(obs) - actions).mean()),
    }
    policy = TablePolicy(table, "table", controlled, source=str(out))

    # Fidelity: fresh seeds; the policy's run gives the open-loop states and the reference
    # for the closed loop, the table's run the parameters it puts in force.
    check_runs: list[Rollout] = []
    table_runs: list[Rollout] = []
    for sc in names:
        check_runs.append(rollout(model, env_kw[sc], episodes, check_seed))
        bar.update(episodes)
        table_runs.append(rollout(policy, env_kw[sc], episodes, check_seed))
        bar.update(episodes)
    bar.close()
    settings = {"scenarios": list(names), "episodes": episodes, "seed": check_seed}
    check_obs = np.concatenate([r.obs for r in check_runs])
    check_actions = np.concatenate([r.actions for r in check_runs])
    open_loop = {
        **settings,
        **_open_loop(
            policy, check_obs, check_actions, controlled, start, actions.mean(axis=0), _held(env)
        ),
    }
    model_params = [p for r in check_runs for p in r.params]
    table_params = [p for r in table_runs for p in r.params]
    closed_loop = {
        **settings,
        "n_steps": sum(
            min(len(a["mmr"]), len(b["mmr"]))
            for a, b in zip(table_params, model_params, strict=True)
        ),
        "params": compare_params(table_params, model_params),
        "max_abs_by_scenario": {
            sc: {k: v["max_abs"] for k, v in compare_params(t.params, m.params).items()}
            for sc, t, m in zip(names, table_runs, check_runs, strict=True)
        },
        "mean_episode_reward": {
            "model": float(np.mean([r.total_reward.mean() for r in check_runs])),
            "table": float(np.mean([r.total_reward.mean() for r in table_runs])),
            "by_scenario": {
                sc: {"model": float(m.total_reward.mean()), "table": float(t.total_reward.mean())}
                for sc, t, m in zip(names, table_runs, check_runs, strict=True)
            },
        },
    }
    fidelity = {"open_loop": open_loop, "closed_loop": closed_loop}
    table["fidelity"] = fidelity
    text = json.dumps(table, indent=2, allow_nan=False) + "\n"
    _write_pair(out, text, csv_path, table_csv(table))
    return TableExport(out, int(counts.size), int((counts > 0).sum()), fidelity)


def _table_document(
    feats: tuple[str, ...],
    grid: TableGrid,
    counts: IntArray,
    source: IntArray,
    start: dict[str, float],
    run_dir: Path,
    model_file: Path,
    config_path: Path,
    env: dict[str, Any],
) -> dict[str, Any]:
    """The table file's content, without its fidelity and fit settings."""
    shape = grid.shape
    features = [
        {
            "name": f,
            "obs_index": i,
            "unit": OBS_UNITS[f],
            "edges": [_edge_text(-math.inf), *(float(x) for x in e), _edge_text(math.inf)],
        }
        for f, i, e in zip(feats, grid.obs_index, grid.inner_edges, strict=True)
    ]
    full = [np.concatenate([[-np.inf], e, [np.inf]]) for e in grid.inner_edges]
    flat_actions = grid.actions.reshape(-1, len(grid.controlled))
    params = natural_units(flat_actions, grid.controlled, start, _held(env))
    cells: list[dict[str, Any]] = []
    for c, b in enumerate(np.ndindex(*shape)):
        state = {
            f: _range_text(float(e[k]), float(e[k + 1]))
            for f, e, k in zip(feats, full, b, strict=True)
        }
        cell: dict[str, Any] = {"bin": list(b), "state": state, "n": int(counts[b])}
        if counts[b] == 0:
            cell["filled_from"] = [int(x) for x in source[b]]
        cell["action"] = [float(x) for x in flat_actions[c]]
        cell["params"] = {k: float(v[c]) for k, v in params.items()}
        cells.append(cell)
    return {
        "schema_version": TABLE_SCHEMA_VERSION,
        "kind": TABLE_KIND,
        "description": (
            "A state-conditioned lookup table distilled from a trained fundgym policy. At each "
            "decision read the features from the observation, find the bin of each (bin k: "
            "edges[k] <= x < edges[k+1]) and set the cell's action: targets in action units, "
            "in the order of 'controlled'; 'params' are the same targets in natural units. "
            "The exchange moves each parameter toward its target by at most env.max_step "
            "action units per decision and delays margin increases by "
            "env.margin_notice_minutes. A cell with n = 0 met no state while fitting and "
            "copies the nearest filled cell ('filled_from')."
        ),
        "run_dir": str(run_dir.resolve()),
        "model_file": model_file.relative_to(run_dir).as_posix(),
        "config": config_path.read_text(),
        "env": jsonable(env),
        "controlled": list(grid.controlled),
        "features": features,
        "shape": list(shape),
        "cells": cells,
    }


def table_csv(table: dict[str, Any]) -> str:
    """The human-readable view: one row per cell, bin ranges, ``n`` and natural-unit params."""
    feats = [f["name"] for f in table["features"]]
    keys: list[str] = []
    for cell in table["cells"]:
        keys.extend(k for k in cell.get("params", {}) if k not in keys)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*feats, "n", "filled_from", *keys])
    for cell in table["cells"]:
        src = cell.get("filled_from")
        writer.writerow(
            [
                *(cell["state"][f] for f in feats),
                cell["n"],
                "-".join(map(str, src)) if src else "",
                *(f"{cell['params'][k]:.6g}" for k in keys),
            ]
        )
    return buf.getvalue()


# ------------------------------------------------------------------ helpers ----


def _write_pair(path: Path, text: str, other: Path, other_text: str) -> None:
    """Write two files atomically (temporary files beside them, then rename); none on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    tmps: list[str] = []
    try:
        for p, t in ((path, text), (other, other_text)):
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
            tmps.append(tmp)
            with os.fdopen(fd, "w") as fh:
                fh.write(t)
            os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it 0600)
        os.replace(tmps[1], other)
        os.replace(tmps[0], path)
    finally:
        for tmp in tmps:
            Path(tmp).unlink(missing_ok=True)


__all__ = [
    "FEATURES",
    "OBS_UNITS",
    "Rollout",
    "TableError",
    "TableExport",
    "compare_params",
    "distill_table",
    "fit_grid",
    "natural_units",
    "rollout",
    "table_csv",
]
