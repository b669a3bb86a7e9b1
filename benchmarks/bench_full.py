"""Throughput of the full simulation tick and of path generation.

``full``: :meth:`envs.simulator.ExchangeSimulator.step` (market, population, funding, core)
in account-steps per second on two library scenarios: ``volatile`` (ordinary trading) and
``oct_10_2025`` with its -12% cascade and depth collapse moved to minute 5, so the timed ticks
are the cascade itself. ``paths``: seconds to draw and price a one-week path at one-minute
ticks (``envs.market.market.sample_market``).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from envs.market.market import sample_market
from envs.scenarios import load_scenario
from envs.simulator import ExchangeSimulator


def time_full(
    n_envs: int, n_accounts: int, scenario: str, steps: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Median account-steps per second of full ticks, over ``repeats`` runs."""
    sc = load_scenario(scenario)
    if sc.crash is not None:  # move the sharpest leg and the collapse to the start
        legs = sorted(sc.crash.legs, key=lambda leg: leg.return_frac / leg.minutes)[:1]
        collapses = tuple(dataclasses.replace(c, start_minute=5.0) for c in sc.depth.collapses)
        sc = dataclasses.replace(
            sc,
            crash=dataclasses.replace(sc.crash, start_minute=5.0, legs=tuple(legs)),
            depth=dataclasses.replace(sc.depth, collapses=collapses),
            precursors=dataclasses.replace(sc.precursors, strength=0.0),
        )
    skip = 0
    rates = []
    liq = 0
    for rep in range(repeats):
        sim = ExchangeSimulator(sc, n_envs=n_envs, n_accounts=n_accounts, seed=seed + rep)
        for _ in range(skip):
            sim.step()
        start = time.perf_counter()
        for _ in range(steps):
            tick = sim.step()
            liq += int(tick.events.n_liquidations.sum())
        rates.append(n_envs * n_accounts * steps / (time.perf_counter() - start))
    return {
        "scenario": scenario,
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "steps": steps,
        "repeats": repeats,
        "median_account_steps_per_s": statistics.median(rates),
        "min_account_steps_per_s": min(rates),
        "max_account_steps_per_s": max(rates),
        "liquidations_per_step": liq / (steps * repeats),
    }


def time_paths(repeats: int, days: float = 7.0) -> dict[str, Any]:
    """Median seconds to sample a ``days``-long one-minute path of ``calm`` and ``volatile``."""
    out: dict[str, Any] = {"days": days, "repeats": repeats}
    for name in ("calm", "volatile"):
        sc = dataclasses.replace(load_scenario(name), horizon_minutes=days * 1440.0)
        times = []
        for rep in range(repeats):
            start = time.perf_counter()
            sample_market(sc, rep)
            times.append(time.perf_counter() - start)
        out[name] = {"median_s": statistics.median(times), "max_s": max(times)}
    return out
