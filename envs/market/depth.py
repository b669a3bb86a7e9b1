"""Book depth: a normal level, collapses under stress and recovery; flow that moves the price.

Depth is USD per 1% of price on each side (the ``depth_usd_per_pct`` the core's impact model
reads). A collapse ramps the multiplier down to ``floor_mult`` (calibration notes: 0.05-0.1 on
12 Mar 2020, 0.02-0.1 on 10 Oct 2025), holds it, then recovers exponentially. Liquidation flow
is the endogenous part: :func:`permanent_impact_log` turns one tick's net liquidation flow into
a permanent log-price move (a fraction of it decays as arbitrageurs lean against it), which
is what lets liquidations cascade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class Collapse:
    """One depth collapse: ramp down, hold, recover."""

    start_minute: float
    minutes_to_floor: float
    floor_mult: float
    hold_minutes: float
    recovery_half_life_minutes: float


def depth_multiplier_path(
    n_ticks: int, tick_minutes: float, collapses: Sequence[Collapse]
) -> FloatArray:
    """Deterministic depth multiplier per tick (1 = normal), the product of every collapse."""
    t = np.arange(n_ticks) * tick_minutes
    mult = np.ones(n_ticks)
    for c in collapses:
        ramp_end = c.start_minute + max(c.minutes_to_floor, tick_minutes)
        hold_end = ramp_end + c.hold_minutes
        m = np.ones(n_ticks)
        ramp = (t >= c.start_minute) & (t < ramp_end)
        frac = (t - c.start_minute) / max(c.minutes_to_floor, tick_minutes)
        m[ramp] = 1.0 + (c.floor_mult - 1.0) * frac[ramp]
        m[(t >= ramp_end) & (t < hold_end)] = c.floor_mult
        rec = t >= hold_end
        decay = np.exp(-np.log(2.0) * (t[rec] - hold_end) / c.recovery_half_life_minutes)
        m[rec] = 1.0 - (1.0 - c.floor_mult) * decay
        mult *= m
    return mult


def permanent_impact_log(
    sell_notional_usd: FloatArray,
    buy_notional_usd: FloatArray,
    depth_usd_per_pct: FloatArray,
    impact_coef: float | FloatArray,
) -> FloatArray:
    """Log-price move from one tick's net liquidation flow: ``-coef x net sells / depth %``.

    Walking ``N`` USD through ``D`` USD per 1% moves the price ``N / D`` percent; ``impact_coef``
    is the share of that move that is permanent (the rest is refilled within the tick).
    """
    net = np.asarray(sell_notional_usd) - np.asarray(buy_notional_usd)
    move = 0.01 * net / np.asarray(depth_usd_per_pct)
    return np.asarray(-impact_coef * np.clip(move, -0.5, 0.5), dtype=np.float64)
