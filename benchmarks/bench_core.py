"""Throughput of one full core step, in account-steps per second.

One step is mark to market, margin check, liquidation fills, fund accounting and fallback;
account-steps per second is accounts x exchanges x steps / second.

Two regimes, so the number is honest about what a step costs:

* ``quiet``: a random walk of 0.05% per tick; liquidations are rare and most steps take the
  fast path (no liquidatable account).
* ``crash``: a -40% slide over the timed steps with thin depth, so accounts are liquidated,
  the fund pays, and deleveraging runs on most steps.

Each configuration starts from a freshly drawn book, runs one untimed warm-up step, then times
``steps`` steps; the figure reported is the median over ``repeats`` runs.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import numpy as np

from envs.core.impact import LinearImpact
from envs.core.params import RiskParams
from envs.core.step import core_step
from envs.core.synthetic import synthetic_book


def _marks(regime: str, n_envs: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    if regime == "quiet":
        r = rng.normal(0.0, 0.0005, (steps + 1, n_envs))
    elif regime == "crash":
        r = np.full((steps + 1, n_envs), np.log(0.6) / (steps + 1))
        r += rng.normal(0.0, 0.002, r.shape)
    else:
        raise ValueError(f"regime must be 'quiet' or 'crash', got {regime!r}")
    return np.asarray(100.0 * np.exp(np.cumsum(r, axis=0)))


def time_core(
    n_envs: int, n_accounts: int, regime: str, steps: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Median account-steps per second of ``core_step`` over ``repeats`` timed runs."""
    rates = []
    liquidations = 0
    params = RiskParams(fallback="adl")
    for rep in range(repeats):
        rng = np.random.default_rng(seed + rep)
        state = synthetic_book(rng, n_envs, n_accounts, 100.0, fund_usd=1e4)
        marks = _marks(regime, n_envs, steps, rng)
        impact = LinearImpact(depth_usd_per_pct=2e4 * n_accounts)
        core_step(state, params, marks[0], impact)  # warm-up
        start = time.perf_counter()
        for t in range(1, steps + 1):
            ev = core_step(state, params, marks[t], impact)
            liquidations += int(ev.n_liquidations.sum())
        elapsed = time.perf_counter() - start
        rates.append(n_envs * n_accounts * steps / elapsed)
    return {
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "regime": regime,
        "steps": steps,
        "repeats": repeats,
        "median_account_steps_per_s": statistics.median(rates),
        "min_account_steps_per_s": min(rates),
        "max_account_steps_per_s": max(rates),
        "liquidations_per_step": liquidations / (steps * repeats),
    }


def machine() -> str:
    """One line describing where the benchmark ran."""
    return (
        f"{platform.processor() or platform.machine()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}"
    )
