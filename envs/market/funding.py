"""Perpetual funding from the premium of mark over index, clamped as venues do.

Binance's formula per 8-hour interval: ``F = P + clamp(I - P, -c, +c)`` with premium
``P = (mark - index) / index``, interest ``I`` (0.01% per 8 h) and ``c = 0.05%``; the result is
then capped (BitMEX: +-0.375% per 8 h, hit on 12 Mar 2020). Positive funding: longs pay shorts.
fundgym accrues it every tick, pro rata to the interval, as Hyperliquid does hourly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def funding_rate(
    mark: FloatArray,
    index: FloatArray,
    interest_per_interval: float | FloatArray = 0.0001,
    clamp_per_interval: float | FloatArray = 0.0005,
    cap_per_interval: float | FloatArray = 0.00375,
) -> FloatArray:
    """Funding rate per interval (fraction of notional) for each exchange."""
    premium = (np.asarray(mark) - np.asarray(index)) / np.asarray(index)
    rate = premium + np.clip(
        interest_per_interval - premium, -clamp_per_interval, clamp_per_interval
    )
    return np.asarray(np.clip(rate, -cap_per_interval, cap_per_interval), dtype=np.float64)
