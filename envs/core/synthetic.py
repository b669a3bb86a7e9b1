"""A synthetic book of positions for tests, benchmarks and the demo.

It draws a balanced population (longs and shorts of equal open interest), heavy-tailed sizes
and lognormal leverage (median 10x, p95 about 60x, capped at ``1 / imr``), the retail leverage
profile in the calibration notes (BitMEX/Binance: median ~10x, p80 ~25x, p95 ~60x). The trader
population model (arrivals, exits, behaviour) builds on the same shapes.
"""

from __future__ import annotations

import numpy as np

from fundgym.envs.state import SimState

# Lognormal leverage: median 10x, p95 60x  =>  sigma = ln(6) / 1.645.
LEVERAGE_MEDIAN = 10.0
LEVERAGE_SIGMA = float(np.log(6.0) / 1.6448536269514722)


def synthetic_book(
    rng: np.random.Generator,
    n_envs: int,
    n_accounts: int,
    price: float,
    *,
    mean_notional_usd: float = 20_000.0,
    max_leverage: float = 20.0,
    long_share: float = 0.5,
    fund_usd: float = 0.0,
) -> SimState:
    """Draw an exchange batch whose accounts all hold a position opened at ``price``.

    The state has one market: ``size`` and ``entry_price`` are ``(n_envs, n_accounts, 1)``.

    Args:
        rng: Random generator (the only source of randomness).
        n_envs: Exchanges in the batch.
        n_accounts: Accounts per exchange.
        price: Entry price of every position (> 0).
        mean_notional_usd: Mean position notional; sizes are Pareto-tailed (alpha 1.5), so a
            few whales hold a large share of open interest.
        max_leverage: Leverage cap, normally ``1 / imr``.
        long_share: Fraction of accounts that are long; the notional of each side is rescaled
            so that long and short open interest are equal.
        fund_usd: Initial insurance fund per exchange.
    """
    shape = (n_envs, n_accounts)
    alpha = 1.5
    notional = (rng.pareto(alpha, shape) + 1.0) * mean_notional_usd * (alpha - 1.0) / alpha
    is_long = rng.random(shape) < long_share
    long_oi = np.where(is_long, notional, 0.0).sum(axis=1, keepdims=True)
    short_oi = np.where(is_long, 0.0, notional).sum(axis=1, keepdims=True)
    half = 0.5 * (long_oi + short_oi)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(is_long, half / long_oi, half / short_oi)
    notional = notional * np.nan_to_num(scale, nan=1.0, posinf=1.0)
    leverage = np.minimum(
        np.exp(rng.normal(np.log(LEVERAGE_MEDIAN), LEVERAGE_SIGMA, shape)), max_leverage
    )
    leverage = np.maximum(leverage, 1.0)
    size = np.where(is_long, 1.0, -1.0) * notional / price
    collateral = notional / leverage
    return SimState.create(collateral, size, np.full(shape, float(price)), fund_usd)
