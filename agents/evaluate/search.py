"""Searched static baselines: the frontier point ``best_static``, and ``hindsight_static``.

``best_static`` is the point of the solvency-versus-capital frontier of static sets
(:mod:`fundgym.agents.evaluate.frontier`) that a stated rule picks (by default the least
capital within 10% of the lowest solvency loss), searched with NSGA-II on fresh draws of the
training sampler, the only data an operator has before a crash: the 24 points of :data:`GRID`
and the four venue presets first, then :data:`BEST_STATIC_GENERATIONS` - 1 generations bred
from them (:func:`search_best_static`). A point is the levers and the engine they run under
(liquidation mode, ADL ranking, margin tiers, fund and vault sizes), so ``best_static`` is
both: :meth:`SearchResult.spec` is the policy that runs it, engine included. The study is
cached in ``cache_dir`` under a hash of the settings that produced it. ``hindsight_static``
is the best point of :data:`GRID` by mean episode reward on the evaluation scenarios and
seeds themselves (:func:`search_static`), under the evaluation environment's engine: an upper
bound for a static choice of levers, which no operator could have made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents import __version__
from fundgym.agents.evaluate.backends import run_policies, static_spec
from fundgym.agents.evaluate.frontier import (
    DEFAULT_RULE,
    SelectionRule,
    search_frontier,
    settings_digest,
    settings_key,
)
from fundgym.agents.evaluate.metrics import Row, summarize_policies
from fundgym.agents.outputs import jsonable, progress_bar, write_text_atomic
from fundgym.agents.policies import PRESETS, STATIC_PARAMS, PolicySpec
from fundgym.agents.policies.presets import Engine
from fundgym.envs.controls import DEFAULTS, PARAMS

#: The static search grid: liquidation fee x MMR x trading-fee share to the fund (the fee all
#: to the fund, IMR at the default multiple of MMR, the fund in stable assets): 24 sets.
#: Each lever's top point is the top of its action range (the most conservative value an
#: action can reach); the points below it sit where the venue presets operate (dYdX's 1.5% fee
#: and 3% MMR are on the grid) rather than spreading evenly over the range, whose low end (a
#: 0.1% fee, a 0.3% MMR) lies below every preset. They are values, not positions, so ``best_static``
#: and its cache stay comparable across runs; :func:`grid_points` checks each against its
#: lever's action range.
GRID: dict[str, tuple[float, ...]] = {
    "liquidation_fee_rate": (0.005, 0.015, PARAMS["liquidation_fee_rate"].high),
    "mmr": (0.01, 0.03, 0.06, PARAMS["mmr"].high),
    "trading_fee_fund_share": (0.1, 0.5),
}

#: Seeds of the training-sampler draws ``best_static`` is searched on (no training or
#: model-selection episode uses them).
SEARCH_SEED = 2_000_003
SEARCH_EPISODES = 16
#: Generations of ``best_static``'s NSGA-II search, the grid and the presets included:
#: 3 x 28 = 84 trials.
BEST_STATIC_GENERATIONS = 3


def grid_points(grid: dict[str, tuple[float, ...]] | None = None) -> list[dict[str, float]]:
    """Every static set of the grid, full natural-unit values of :data:`STATIC_PARAMS`.

    Raises:
        ValueError: A grid names a lever a static set cannot hold.
        fundgym.envs.levers.LeverError: A point lies outside its lever's action range.
    """
    g = grid or GRID
    names = list(g)
    for name in names:
        if name not in STATIC_PARAMS:
            raise ValueError(f"grid lever {name!r}: allowed {list(STATIC_PARAMS)}")
        PARAMS[name].to_position(np.asarray(g[name], dtype=np.float64))
    points = []
    for combo in itertools.product(*(g[n] for n in names)):
        values = {k: DEFAULTS[k] for k in STATIC_PARAMS}
        values.update(dict(zip(names, combo, strict=True)))
        points.append(values)
    return points


def objective(rows: Sequence[Row]) -> float:
    """Mean episode reward, averaged per scenario and then over scenarios (equal weight)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(str(r["scenario"]), []).append(float(r["total_reward"]))
    return float(np.mean([np.mean(v) for v in by.values()]))


@dataclass
class SearchResult:
    """The outcome of a static search (a grid search's is also its cache file's content).

    Attributes:
        name: ``best_static`` or ``hindsight_static``.
        key: The settings that determine it.
        points: Every scored set.
        best: The chosen set's levers (every one of :data:`STATIC_PARAMS`).
        best_objective: Its mean episode reward.
        wall_s: The search's wall time (this call's).
        cache_file: Where it is cached (None: not cached).
        cached: Whether it was read from the cache.
        rule: The rule that picked ``best`` from the frontier, in words (None: by reward).
        engine: The engine the chosen set runs under (:class:`Engine` settings; None: the
            evaluation environment's, as every grid point of ``hindsight_static``).
    """

    name: str
    key: dict[str, Any]
    points: list[dict[str, Any]]
    best: dict[str, float]
    best_objective: float
    wall_s: float
    cache_file: str | None = None
    cached: bool = False
    rule: str | None = None
    engine: dict[str, Any] | None = None

    def spec(self, note: str = "") -> PolicySpec:
        """The policy that runs the chosen set, named ``name``: its levers under its engine."""
        engine = None if self.engine is None else Engine(**self.engine)
        return dataclasses.replace(static_spec(self.best, engine), name=self.name, note=note)

    def describe(self) -> str:
        """The chosen set in words: its levers and, where searched, its engine."""
        text = ", ".join(f"{k} {self.best[k]:g}" for k in STATIC_PARAMS)
        return text if self.engine is None else f"{text}; {Engine(**self.engine).describe()}"


def search_static(
    name: str,
    base: dict[str, Any],
    scenarios: Sequence[str],
    episodes: int,
    seed: int,
    workers: int,
    cache_dir: Path | None,
    progress: bool,
    grid: dict[str, tuple[float, ...]] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> SearchResult:
    """Score every grid point on ``scenarios`` (same seeds for all); keep the best by reward.

    With ``cache_dir``, the result is stored under a hash of everything that determines it
    (environment settings, scenarios, episodes, seed, grid, fundgym version) together with
    those settings, and reused when they match.
    """
    g = grid or GRID
    key = {
        "search": name,
        "env": jsonable(base),
        "scenarios": list(scenarios),
        "episodes": episodes,
        "seed": seed,
        "grid": {k: list(v) for k, v in g.items()},
        "objective": "mean episode reward, per scenario then averaged",
        "fundgym": __version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = cache_dir / f"static_search-{digest}.json" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            if data.get("key") == key:
                fields = [
                    k for k in SearchResult.__annotations__ if k not in ("cached", "rule", "engine")
                ]
                res = SearchResult(**{k: data[k] for k in fields})
                res.cached = True
                res.cache_file = str(cache_file)
                return res
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a corrupt cache entry is recomputed and overwritten
    t0 = time.perf_counter()
    points = grid_points(g)
    bar = progress_bar(len(points) * len(scenarios) * episodes, f"{name} search", progress)
    per_point = run_policies(
        [static_spec(v) for v in points], scenarios, base, episodes, seed, rows_only=True,
        workers=workers, backend=backend, address=address,
        progress=lambda j: bar.update(j.episodes),
    )  # fmt: skip
    bar.close()
    scored: list[dict[str, Any]] = []
    for values, rows in zip(points, per_point, strict=True):
        s = summarize_policies(rows)[0]
        scored.append(
            {
                "values": values,
                "objective": objective(rows),
                "solvency_loss_usd": s["solvency_loss_usd"],
                "mean_capital_locked_usd": s["mean_capital_locked_usd"],
            }
        )
    best = max(scored, key=lambda r: float(r["objective"]))
    res = SearchResult(
        name=name,
        key=key,
        points=scored,
        best=dict(best["values"]),
        best_objective=float(best["objective"]),
        wall_s=time.perf_counter() - t0,
        cache_file=str(cache_file) if cache_file else None,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: getattr(res, k) for k in SearchResult.__annotations__}
        payload.pop("cached")
        payload.pop("engine")  # always the environment's: the grid is not searched over engines
        write_text_atomic(cache_file, json.dumps(jsonable(payload), indent=2))
    return res


def search_best_static(
    base: dict[str, Any],
    episodes: int,
    seed: int,
    workers: int,
    cache_dir: Path | None,
    progress: bool,
    grid: dict[str, tuple[float, ...]] | None = None,
    *,
    presets: Sequence[str] = tuple(PRESETS),
    rule: SelectionRule = DEFAULT_RULE,
    backend: str = "local",
    address: str | None = None,
) -> SearchResult:
    """``best_static``: the frontier point ``rule`` picks, on ``episodes`` training-sampler draws.

    The grid's points (under the environment's engine) and the venue ``presets`` (each
    under its own) are the first generation and the population size;
    :data:`BEST_STATIC_GENERATIONS` generations are run. With ``cache_dir`` the Optuna study
    is stored there (``frontier-<hash of the settings>.db``) and a repeated call with the same
    settings runs nothing.
    """
    points = grid_points(grid)
    trials = BEST_STATIC_GENERATIONS * (len(points) + len(presets))
    settings = settings_key(base, ["training"], episodes, seed, points, presets)
    db = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        db = cache_dir / f"frontier-{settings_digest(settings)}.db"
    res = search_frontier(
        base,
        ["training"],
        episodes,
        seed,
        trials,
        grid=points,
        presets=presets,
        workers=workers,
        storage=None if db is None else f"sqlite:///{db.resolve()}",
        study_name="best_static",
        rule=rule,
        backend=backend,
        address=address,
        progress=progress,
        label="best_static search",
    )
    chosen = res.trial(res.chosen)
    scored = [
        {
            "trial": t.number,
            "source": t.source,
            "values": t.values,
            "engine": t.engine.settings(),
            "objective": t.mean_reward,
            "solvency_loss_usd": t.solvency_loss_usd,
            "mean_capital_locked_usd": t.capital_locked_usd,
            "pareto": on,
        }
        for t, on in zip(res.trials, res.pareto, strict=True)
    ]
    return SearchResult(
        name="best_static",
        key={**settings, "trials": trials, "rule": rule.text()},
        points=scored,
        best=dict(chosen.values),
        best_objective=chosen.mean_reward,
        wall_s=res.wall_s,
        cache_file=None if db is None else str(db),
        cached=db is not None and res.new_trials == 0,
        rule=rule.describe(),
        engine=chosen.engine.settings(),
    )
