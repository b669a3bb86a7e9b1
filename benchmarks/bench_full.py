"""Throughput of the full simulation tick, numba's compile time, and path generation.

``full``: :meth:`fundgym.envs.simulator.ExchangeSimulator.advance` (market, population every tick,
funding, fund, core, all compiled) in account-steps per second on two library scenarios:
``volatile`` (ordinary trading) and ``oct_10_2025`` with its -12% cascade and depth collapse moved
to minute 5, so the timed ticks are the cascade itself. The timed ticks run as one block (one
compiled call) and, for comparison, one :meth:`~fundgym.envs.simulator.ExchangeSimulator.step` at a
time; ``threads`` > 1 spreads exchanges over threads. ``compile``: seconds of the first ``advance``
in a fresh process, with an empty numba cache (cold) and with the cache the cold run left (cached).
``paths``: seconds to draw and price a one-week path at one-minute ticks
(``fundgym.envs.market.market.sample_market``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fundgym.envs.core.params import RiskParams
from fundgym.envs.market.market import sample_market
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator


def _timed_scenario(scenario: str) -> Any:
    """``scenario``, a crash moved to its sharpest leg at minute 5 (see the module docstring)."""
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
    return sc


def time_full(
    n_envs: int,
    n_accounts: int,
    scenario: str,
    steps: int,
    repeats: int,
    seed: int = 0,
    threads: int = 1,
    check_ledger: bool = False,
    liquidation_mode: str = "partial",
    adl_policy: str = "bitmex",
    vault_to_oi_frac: float = 0.0,
    liquidation_fee_fund_share: float = 1.0,
) -> dict[str, Any]:
    """Median account-steps per second of full ticks, over ``repeats`` runs.

    ``liquidation_mode`` and ``adl_policy`` set the margin engine's venue mode and ADL rule,
    ``vault_to_oi_frac`` a backstop vault (venue modes only) and
    ``liquidation_fee_fund_share`` below 1 pays outside liquidators (default parameters
    otherwise), so the cost of each stage can be read side by side.

    Each run builds a fresh simulator, runs one warm-up tick (compiles on first use), then
    ``steps`` ticks as one :meth:`advance` block, and again ``steps`` ticks one
    :meth:`step` at a time on a twin. ``check_ledger`` adds the per-tick ledger check (a
    diagnostic, not part of the tick).
    """
    sc = _timed_scenario(scenario)
    block_rates, step_rates = [], []
    liq = 0
    for rep in range(repeats):
        sims = [
            ExchangeSimulator(
                sc,
                RiskParams(
                    liquidation_mode=liquidation_mode,  # type: ignore[arg-type]
                    adl_policy=adl_policy,  # type: ignore[arg-type]
                    liquidation_fee_fund_share=liquidation_fee_fund_share,
                ),
                n_envs=n_envs,
                n_accounts=n_accounts,
                vault_to_oi_frac=vault_to_oi_frac,
                seed=seed + rep,
                threads=threads,
                record=False,
            )
            for _ in range(2)
        ]
        for sim in sims:
            sim.advance(1, check_ledger)
        start = time.perf_counter()
        block = sims[0].advance(steps, check_ledger)
        block_rates.append(n_envs * n_accounts * steps / (time.perf_counter() - start))
        liq += int(block.event("n_liquidations").sum())
        start = time.perf_counter()
        for _ in range(steps):
            sims[1].step(check_ledger)
        step_rates.append(n_envs * n_accounts * steps / (time.perf_counter() - start))
    return {
        "scenario": scenario,
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "steps": steps,
        "repeats": repeats,
        "threads": threads,
        "check_ledger": check_ledger,
        "liquidation_mode": liquidation_mode,
        "adl_policy": adl_policy,
        "vault_to_oi_frac": vault_to_oi_frac,
        "liquidation_fee_fund_share": liquidation_fee_fund_share,
        "median_account_steps_per_s": statistics.median(block_rates),
        "min_account_steps_per_s": min(block_rates),
        "max_account_steps_per_s": max(block_rates),
        "median_step_by_step_account_steps_per_s": statistics.median(step_rates),
        "liquidations_per_step": liq / (steps * repeats),
    }


_COMPILE_PROBE = """
import time
start = time.perf_counter()
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator
sim = ExchangeSimulator(load_scenario("oct_10_2025"), n_envs=2, n_accounts=64, threads={threads})
sim.advance(2)
print(time.perf_counter() - start)
"""


def compile_seconds(threads: int = 1) -> dict[str, float]:
    """Seconds from import to the first two ticks in a fresh process: cold and cached cache.

    Both runs use one temporary cache directory (numba's ``NUMBA_CACHE_DIR`` and fundgym's
    ``FUNDGYM_NUMBA_CACHE_DIR``, :mod:`fundgym.envs.jit`): the first finds it empty and compiles
    every kernel, the second loads what the first wrote.
    """
    root = Path(__file__).resolve().parent.parent
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "FUNDGYM_NUMBA_CACHE_DIR": cache}
        for label in ("cold_s", "cached_s"):
            res = subprocess.run(
                [sys.executable, "-c", _COMPILE_PROBE.format(threads=threads)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out[label] = float(res.stdout.strip().splitlines()[-1])
    return out


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
