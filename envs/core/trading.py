"""Trader orders and external cash flows: opening, growing, reducing and flipping positions.

Orders trade against the outside counterparty at a given price, pay the taker fee (a share of
which is routed to the insurance fund), and must pass the initial-margin check when they open
or grow a position. Entry prices follow the usual average-cost rule: an increase averages in,
a reduction realises PnL at the trade price and keeps the entry, a flip realises the whole old
position and opens the rest at the trade price.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.core import formulas
from envs.core.margin import initial_margin_ok
from envs.core.params import RiskParams
from envs.core.state import ExchangeState
from envs.core.step import StepEvents

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


def execute_trades(
    state: ExchangeState,
    params: RiskParams,
    trade_size: FloatArray,
    price: FloatArray,
    mark: FloatArray,
    events: StepEvents | None = None,
) -> BoolArray:
    """Execute signed orders ``trade_size`` (``(n_envs, n_accounts)``, base units) at ``price``.

    Args:
        state: Updated in place.
        params: Supplies ``imr``, ``taker_fee_rate`` and ``trading_fee_fund_share``.
        trade_size: Signed base units per account; 0 = no order.
        price: ``(n_envs,)`` execution price (> 0).
        mark: ``(n_envs,)`` mark used for the initial-margin check.
        events: If given, its trading-fee fields are incremented.

    Returns:
        ``(n_envs, n_accounts)`` mask of orders rejected by the initial-margin check.
    """
    t = np.asarray(trade_size, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)[:, None]
    m = np.asarray(mark, dtype=np.float64)[:, None]
    q, e, c = state.size, state.entry_price, state.collateral_usd
    fee = np.abs(t) * p * params.column("taker_fee_rate")
    new_q = q + t
    eq_after = formulas.equity(c, q, e, m) + t * (m - p) - fee
    ok = initial_margin_ok(eq_after, q, new_q, m, params.column("imr"))
    rejected = (t != 0.0) & ~ok
    t = np.where(rejected, 0.0, t)
    fee = np.where(rejected, 0.0, fee)
    new_q = q + t

    # Average-cost accounting.
    closes = (q * t) < 0.0
    closed_part = np.where(closes, np.sign(q) * np.minimum(np.abs(t), np.abs(q)), 0.0)
    realised = closed_part * (p - e)
    remaining_old = q - closed_part
    opened = t + closed_part
    with np.errstate(invalid="ignore", divide="ignore"):
        new_e = np.where(new_q != 0.0, (remaining_old * e + opened * p) / new_q, e)
    state.collateral_usd += realised - fee
    state.size[...] = new_q
    state.entry_price[...] = new_e

    traded = t.sum(axis=1)
    state.counterparty_size -= traded
    state.counterparty_cash_usd += (t * p).sum(axis=1)
    fee_env = fee.sum(axis=1)
    to_fund = fee_env * params.per_env("trading_fee_fund_share", state.n_envs)
    state.fund_usd += to_fund
    state.fee_revenue_usd += fee_env - to_fund
    if events is not None:
        events.trading_fees_usd += fee_env
        events.fund_trading_fee_income_usd += to_fund
    return np.asarray(rejected, dtype=np.bool_)


def deposit(state: ExchangeState, amount_usd: FloatArray) -> None:
    """External deposits (positive) or withdrawals (negative) of collateral, per account."""
    amt = np.asarray(amount_usd, dtype=np.float64)
    state.collateral_usd += amt
    state.net_deposits_usd += np.broadcast_to(amt, state.size.shape).sum(axis=1)


def apply_funding(state: ExchangeState, rate: FloatArray, mark: FloatArray) -> FloatArray:
    """Funding transfer of ``rate`` (fraction of notional, ``(n_envs,)``) at ``mark``.

    Every position pays ``size x mark x rate`` (longs pay shorts when ``rate > 0``); the
    counterparty settles the population's net position, so the payments sum to zero. Returns
    the funding each exchange's accounts paid in total (``(n_envs,)``, positive = net paid).
    """
    r = np.asarray(rate, dtype=np.float64)
    m = np.asarray(mark, dtype=np.float64)
    per_unit = (r * m)[:, None]
    paid = state.size * per_unit
    state.collateral_usd -= paid
    state.counterparty_cash_usd -= state.counterparty_size * r * m
    return np.asarray(paid.sum(axis=1), dtype=np.float64)
