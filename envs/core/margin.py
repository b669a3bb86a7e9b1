"""The maintenance requirement over account arrays (flat or tiered), in numpy.

The margin engine applies the same formula compiled (:func:`fundgym.envs.core.kernels.requirement`,
with the dYdX v4 ``IsLiquidatable`` trigger and the initial-margin check in
:mod:`fundgym.envs.core.kernels` and :mod:`fundgym.envs.core.trading`); this array version is the
reference the tests check the kernels against, and the one to call from numpy code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fundgym.envs.core.params import MarginTiers

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


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
