"""Book depth: a normal level, collapses under stress and recovery; flow that moves the price.

Depth is USD per 1% of price on each side (the ``depth_usd_per_pct`` the core's impact model
reads). A collapse ramps the multiplier down to ``floor_mult`` (calibration notes: 0.05-0.1 on
12 Mar 2020, 0.02-0.1 on 10 Oct 2025), holds it, then recovers exponentially. Liquidation flow
is the endogenous part: :func:`walk_book` walks one tick's net liquidation flow through the
square-root book of :mod:`fundgym.envs.core.impact`, on top of what earlier flow walked and the
book has not refilled; the market turns the walk into a permanent and a transient price
impact (:meth:`fundgym.envs.market.market.Market.advance`). That is what lets liquidations
cascade, and the book's concavity and refill are what bound the cascade (``docs/impact.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fundgym.envs import libm
from fundgym.envs.core.impact import walk_log_move, walked_notional

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


#: Bound on the log-price impact of liquidation flow, either way: ``ln 100``. Flow alone can
#: take the index to at most 100 times, or a hundredth of, its exogenous path; the bound is
#: smooth (:func:`bounded_impact_log`), so it costs a realistic impact almost nothing (-0.4% of
#: a 50% move) and creates no threshold, and it keeps a squeeze through a book of any
#: thinness finite (a short squeeze's buys grow with the price it pushes up).
MAX_IMPACT_LOG = math.log(100.0)


def bounded_impact_log(impact_log: FloatArray) -> FloatArray:
    """``MAX_IMPACT_LOG x tanh(impact_log / MAX_IMPACT_LOG)``: the impact the index carries.

    tanh as ``-expm1(-2a) / (2 + expm1(-2a))`` of ``a = |impact_log| / MAX_IMPACT_LOG`` with
    the sign put back, finite for any input: the numpy twin of
    :func:`fundgym.envs.market.kernels.bounded_impact_log_one`, operation for operation.
    """
    x = np.asarray(impact_log, dtype=np.float64)
    t = libm.expm1(-2.0 * (np.abs(x) / MAX_IMPACT_LOG))
    out = MAX_IMPACT_LOG * (-t / (2.0 + t))
    return np.asarray(np.where(x < 0.0, -out, out), dtype=np.float64)


def walk_book(
    walk_log: FloatArray,
    sell_notional_usd: FloatArray,
    buy_notional_usd: FloatArray,
    depth_usd_per_pct: FloatArray,
) -> FloatArray:
    """The book's log displacement after one tick's net liquidation flow walks it further.

    ``walk_log`` is how far earlier flow has walked the book and the book has not refilled
    (log price; negative: sells ate the bids). It is the walk of
    :func:`~fundgym.envs.core.impact.walked_notional` USD at today's depth; the tick's net flow
    adds to that notional and the square-root law gives the new displacement
    (:func:`~fundgym.envs.core.impact.walk_log_move`). So flow split over ticks moves the price
    as one walk of their sum (concave in the total, not per tick), less what the book refilled
    in between. The numpy twin of the walk in :func:`fundgym.envs.market.kernels.advance_one`.
    """
    walked = walked_notional(walk_log, depth_usd_per_pct) - (
        np.asarray(sell_notional_usd, dtype=np.float64) - np.asarray(buy_notional_usd)
    )
    move = walk_log_move(np.abs(walked), depth_usd_per_pct)
    return np.asarray(np.where(walked < 0.0, -move, move), dtype=np.float64)
