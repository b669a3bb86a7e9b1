"""Margin requirements over account arrays: maintenance (flat or tiered) and initial margin.

Pure functions; the trigger follows dYdX v4 ``IsLiquidatable``: an account is liquidatable when
its maintenance requirement is positive and its equity is below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.core.params import MarginTiers

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


def maintenance_requirement(
    notional_usd: FloatArray, mmr: FloatArray | float, tiers: MarginTiers | None
) -> FloatArray:
    """Maintenance requirement in USD for positions of absolute notional ``notional_usd``.

    Without tiers: ``mmr * notional``. With tiers (Binance brackets): ``(notional * mmr_k -
    cum_k) * mmr / tiers.base_mmr``, so the controlled ``mmr`` scales the whole table and equals
    Binance's requirement when ``mmr == tiers.base_mmr``.

    Args:
        notional_usd: ``|size| * mark``, any shape.
        mmr: Maintenance margin ratio, broadcastable to ``notional_usd`` (e.g. ``(n_envs, 1)``).
        tiers: Optional bracket table.
    """
    if tiers is None:
        return np.multiply(notional_usd, mmr)
    floors = np.asarray(tiers.floor_usd)
    k = np.searchsorted(floors, notional_usd, side="right") - 1
    rates = np.asarray(tiers.mmr)[k]
    cum = np.asarray(tiers.cum_usd)[k]
    scale = np.asarray(mmr) / tiers.base_mmr
    return np.asarray((notional_usd * rates - cum) * scale, dtype=np.float64)


def liquidatable(equity_usd: FloatArray, requirement_usd: FloatArray) -> BoolArray:
    """dYdX ``IsLiquidatable``: requirement > 0 and equity < requirement."""
    return (requirement_usd > 0.0) & (equity_usd < requirement_usd)


def initial_margin_ok(
    equity_after_usd: FloatArray,
    size_before: FloatArray,
    size_after: FloatArray,
    mark: FloatArray | float,
    imr: FloatArray | float,
) -> BoolArray:
    """Whether a trade may execute under the initial-margin rule.

    A trade that opens, grows or flips a position needs post-trade equity of at least
    ``imr * |size_after| * mark`` (max leverage ``1 / imr``); a pure reduction is always allowed,
    as on every venue, because it can only lower risk.
    """
    grows = (np.abs(size_after) > np.abs(size_before)) | (size_before * size_after < 0.0)
    return ~grows | (equity_after_usd >= np.multiply(imr, np.abs(size_after) * mark))
