"""Compiled twins of the fund's per-tick operations, one exchange at a time.

:mod:`fundgym.envs.fund.portfolio` documents the buckets, their costs and the accounting identity,
and its numpy functions (:func:`~fundgym.envs.fund.portfolio.accrue`,
:func:`~fundgym.envs.fund.portfolio.pay`, :func:`~fundgym.envs.fund.portfolio.receive`,
:func:`~fundgym.envs.fund.portfolio.inject_if_exhausted`,
:func:`~fundgym.envs.fund.portfolio.put_mark`) stay the reference the tests check these against.
This module is the same arithmetic, in the same operation order, on one exchange's row of the
portfolio's arrays, for the compiled tick (:mod:`fundgym.envs.tick_kernels`). Both call the C
library's ``log`` and ``erfc`` (the reference through :mod:`fundgym.envs.libm`), so the two agree to
the bit (tests/envs/test_fund_portfolio.py).

The portfolio is passed as the tuple :func:`fund_arrays` builds (the eighteen
:class:`~fundgym.envs.fund.portfolio.FundPortfolio` fields in declaration order, the ``F_*``
indices below), the bucket terms as :func:`allocation_terms` packs them (``A_*`` columns).
The helpers the tick calls every tick (:func:`accrue_one`, :func:`receive_one`,
:func:`value_usd`, :func:`put_unit_value`) are inlined into their callers (numba's
``inline="always"``): a call that passes the eighteen-array tuple costs two atomic
reference-count operations per array, which measured an eighth of a decision's time.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

from fundgym.envs.fund.portfolio import (
    EXHAUSTED_FRAC,
    MIN_PUT_PREMIUM_FRAC,
    MINUTES_PER_YEAR,
    PUT_CRASH_DROP_FRAC,
    PUT_VOL_FLOOR_ANNUAL,
    AllocationParams,
    FundPortfolio,
)
from fundgym.envs.jit import jit

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

# Indices into the portfolio tuple (FundPortfolio field order).
F_STABLE, F_YIELD, F_VOLATILE_UNITS, F_PUT_UNITS, F_PUT_STRIKE, F_PUT_MINUTES_LEFT = range(6)
F_EXTERNAL_PNL, F_FEES_PAID, F_RECEIVED, F_PAID, F_INITIAL_VALUE = range(6, 11)
F_MARK_PRICE, F_MARK_VOL = 11, 12
F_INJECTION_USD, F_INJECTIONS_LEFT, F_INJECTIONS, F_INJECTED = 13, 14, 15, 16
F_PUT_COST = 17
N_FUND_FIELDS = 18

# Columns of the bucket terms (allocation_terms).
A_YIELD_GROWTH = 0  # 1 + yield_apr x tick / year: one tick's accrual factor
A_WITHDRAW_NORMAL, A_WITHDRAW_STRESSED = 1, 2
A_SLIPPAGE, A_SPREAD = 3, 4
A_REBALANCE_FEE, A_PUT_MONEYNESS, A_PUT_TENOR_MINUTES = 5, 6, 7  # read by rebalance_one
A_PUT_CRASH_RATE = 8  # the option market's crashes a year (read by rebalance_one)
N_ALLOCATION_TERMS = 9

_SQRT2 = math.sqrt(2.0)

_FIELD_NAMES = tuple(f.name for f in fields(FundPortfolio))
"""The portfolio's fields in order, looked up once (``dataclasses.fields`` costs microseconds
a call, and a decision builds the tuple three times)."""
assert _FIELD_NAMES[F_MARK_VOL] == "mark_vol_annual"
assert _FIELD_NAMES[F_INJECTED] == "injected_usd"
assert _FIELD_NAMES[F_PUT_COST] == "put_cost_usd"
assert len(_FIELD_NAMES) == N_FUND_FIELDS


def fund_arrays(pf: FundPortfolio) -> tuple[FloatArray, ...]:
    """The portfolio's arrays as a tuple in field order (the kernels write them in place)."""
    return tuple(getattr(pf, name) for name in _FIELD_NAMES)


def allocation_terms(params: AllocationParams, tick_minutes: float) -> FloatArray:
    """The bucket terms a tick reads, ``A_*`` columns; the yield factor as :func:`accrue` has it."""
    out = np.zeros(N_ALLOCATION_TERMS)
    out[A_YIELD_GROWTH] = 1.0 + params.yield_apr * tick_minutes / MINUTES_PER_YEAR
    out[A_WITHDRAW_NORMAL] = params.yield_withdraw_frac_normal
    out[A_WITHDRAW_STRESSED] = params.yield_withdraw_frac_stressed
    out[A_SLIPPAGE] = params.volatile_sell_slippage_frac
    out[A_SPREAD] = params.option_spread_frac
    out[A_REBALANCE_FEE] = params.rebalance_fee_frac
    out[A_PUT_MONEYNESS] = params.put_moneyness
    out[A_PUT_TENOR_MINUTES] = params.put_tenor_days * 24.0 * 60.0  # as rebalance() has it
    out[A_PUT_CRASH_RATE] = params.put_crash_rate_per_year
    return out


@jit(error_model="numpy")
def _norm_cdf(d):  # type: ignore[no-untyped-def]
    return 0.5 * math.erfc(-d / _SQRT2)


@jit(error_model="numpy")
def black_scholes_put(s, k, t, v):  # type: ignore[no-untyped-def]
    """:func:`~fundgym.envs.fund.portfolio.black_scholes_put` for one put (same cases, order)."""
    intrinsic = max(k - s, 0.0)
    w = math.sqrt(max(t, 0.0)) * max(v, 0.0)
    if not (w >= 1e-12 and s > 0.0 and k > 0.0):
        return intrinsic
    d1 = min(max((math.log(s / k) + 0.5 * w * w) / w, -40.0), 40.0)
    d2 = min(max(d1 - w, -40.0), 40.0)
    value = k * _norm_cdf(-d2) - s * _norm_cdf(-d1)
    return max(value, intrinsic)


@jit(error_model="numpy", inline="always")
def put_unit_value(f, e, price, vol_annual):  # type: ignore[no-untyped-def]
    """Mark of one put of exchange ``e`` (:func:`~fundgym.envs.fund.portfolio.put_mark`)."""
    tenor = f[F_PUT_MINUTES_LEFT][e] / MINUTES_PER_YEAR
    return black_scholes_put(
        price, f[F_PUT_STRIKE][e], tenor, max(vol_annual, PUT_VOL_FLOOR_ANNUAL)
    )


@jit(error_model="numpy", inline="always")
def _buckets(f, e, price, unit):  # type: ignore[no-untyped-def]
    """Exchange ``e``'s bucket values (:data:`BUCKETS` order), one put marked at ``unit``."""
    return (
        f[F_STABLE][e],
        f[F_YIELD][e],
        f[F_VOLATILE_UNITS][e] * price,
        f[F_PUT_UNITS][e] * unit,
    )


@jit(error_model="numpy", inline="always")
def _value_at(f, e, price, unit):  # type: ignore[no-untyped-def]
    """The buckets of exchange ``e`` summed in order, one put marked at ``unit``."""
    v0, v1, v2, v3 = _buckets(f, e, price, unit)
    return v0 + v1 + v2 + v3


@jit(error_model="numpy", inline="always")
def value_usd(f, e, price, vol_annual):  # type: ignore[no-untyped-def]
    """:meth:`FundPortfolio.value_usd` of exchange ``e``: the buckets summed in order."""
    return _value_at(f, e, price, put_unit_value(f, e, price, vol_annual))


@jit(error_model="numpy")
def values_and_weights(f, price, vol_annual, value_out, weights_out):  # type: ignore[no-untyped-def]
    """Every exchange's :meth:`FundPortfolio.value_usd` and :meth:`FundPortfolio.weights`.

    One compiled pass for what the environment reads every decision: the puts priced once
    per exchange, the buckets summed in order (numpy's sum of four), all-stable weights
    where the value is not positive.
    """
    for e in range(price.shape[0]):
        v0, v1, v2, v3 = _buckets(f, e, price[e], put_unit_value(f, e, price[e], vol_annual[e]))
        total = v0 + v1 + v2 + v3
        value_out[e] = total
        if total <= 0.0:
            weights_out[e, 0] = 1.0
            weights_out[e, 1] = 0.0
            weights_out[e, 2] = 0.0
            weights_out[e, 3] = 0.0
        else:
            weights_out[e, 0] = v0 / total
            weights_out[e, 1] = v1 / total
            weights_out[e, 2] = v2 / total
            weights_out[e, 3] = v3 / total


@jit(error_model="numpy", inline="always")
def _withdraw_frac(terms, stressed):  # type: ignore[no-untyped-def]
    """The share of ``yield`` that can be withdrawn now (the stress rule)."""
    return terms[A_WITHDRAW_STRESSED] if stressed else terms[A_WITHDRAW_NORMAL]


@jit(error_model="numpy", inline="always")
def _mark_one(f, e, price, vol_annual):  # type: ignore[no-untyped-def]
    """Re-mark exchange ``e``'s fund to ``price``, ``vol_annual``; the change is outside PnL.

    The reference's ``_mark``: what :func:`pay_one` and :func:`rebalance_one` do first.
    Returns one put's mark at ``price`` and ``vol_annual``, which they read next. A fund
    already marked there (the usual case: the tick marked it last) prices its put once: a
    put's mark depends on the price, the volatility, its strike and its tenor alone.
    """
    mark_px = f[F_MARK_PRICE][e]
    mark_vol = f[F_MARK_VOL][e]
    unit_before = put_unit_value(f, e, mark_px, mark_vol)
    same = (mark_px == price) & (mark_vol == vol_annual)
    unit = unit_before if same else put_unit_value(f, e, price, vol_annual)
    before = _value_at(f, e, mark_px, unit_before)
    f[F_MARK_PRICE][e] = price
    f[F_MARK_VOL][e] = vol_annual
    f[F_EXTERNAL_PNL][e] += _value_at(f, e, price, unit) - before
    return unit


@jit(error_model="numpy")
def liquid_usd(f, e, price, vol_annual, stressed, terms):  # type: ignore[no-untyped-def]
    """:meth:`FundPortfolio.liquid_usd` of exchange ``e``: what :func:`pay_one` could pay."""
    frac = _withdraw_frac(terms, stressed)
    return (
        f[F_STABLE][e]
        + frac * f[F_YIELD][e]
        + f[F_VOLATILE_UNITS][e] * price * (1.0 - terms[A_SLIPPAGE])
        + f[F_PUT_UNITS][e] * put_unit_value(f, e, price, vol_annual) * (1.0 - terms[A_SPREAD])
    )


@jit(error_model="numpy", inline="always")
def accrue_one(f, e, price, vol_annual, tick_minutes, terms):  # type: ignore[no-untyped-def]
    """:func:`~fundgym.envs.fund.portfolio.accrue` for exchange ``e``: mark, yield, puts."""
    before = value_usd(f, e, f[F_MARK_PRICE][e], f[F_MARK_VOL][e])
    f[F_MARK_PRICE][e] = price
    f[F_MARK_VOL][e] = vol_annual
    f[F_YIELD][e] *= terms[A_YIELD_GROWTH]
    held = f[F_PUT_UNITS][e] > 0.0
    f[F_PUT_MINUTES_LEFT][e] = max(f[F_PUT_MINUTES_LEFT][e] - tick_minutes, 0.0) if held else 0.0
    expired = held and f[F_PUT_MINUTES_LEFT][e] <= 0.0
    payoff = f[F_PUT_UNITS][e] * max(f[F_PUT_STRIKE][e] - price, 0.0) if expired else 0.0
    f[F_STABLE][e] += payoff
    if expired:
        f[F_PUT_UNITS][e] = 0.0
    if expired or not held:
        f[F_PUT_STRIKE][e] = 0.0
        f[F_PUT_COST][e] = 0.0
    f[F_EXTERNAL_PNL][e] += value_usd(f, e, price, vol_annual) - before


@jit(error_model="numpy", inline="always")
def receive_one(f, e, amount_usd):  # type: ignore[no-untyped-def]
    """:func:`fundgym.envs.fund.portfolio.receive` for exchange ``e``: inflow into ``stable``."""
    f[F_STABLE][e] += amount_usd
    f[F_RECEIVED][e] += amount_usd


@jit(error_model="numpy")
def inject_one(f, e):  # type: ignore[no-untyped-def]
    """:func:`fundgym.envs.fund.portfolio.inject` for exchange ``e``; returns the USD injected."""
    amount = f[F_INJECTION_USD][e]
    f[F_STABLE][e] += amount
    f[F_INJECTED][e] += amount
    f[F_INJECTIONS][e] += 1.0
    f[F_INJECTIONS_LEFT][e] -= 1.0
    return amount


@jit(error_model="numpy")
def inject_if_exhausted_one(f, e, bad_debt_usd, stressed, terms):  # type: ignore[no-untyped-def]
    """:func:`~fundgym.envs.fund.portfolio.inject_if_exhausted` for exchange ``e``.

    Returns the USD injected (0 when no top-up is due): the caller books it as a deposit.
    """
    if not (bad_debt_usd > 0.0 and f[F_INJECTIONS_LEFT][e] > 0.0 and f[F_INJECTION_USD][e] > 0.0):
        return 0.0
    liquid = liquid_usd(f, e, f[F_MARK_PRICE][e], f[F_MARK_VOL][e], stressed, terms)
    if liquid > EXHAUSTED_FRAC * f[F_INJECTION_USD][e]:
        return 0.0
    return inject_one(f, e)


@jit(error_model="numpy", inline="always")
def _sell_down(left_usd, value_usd, cost_frac):  # type: ignore[no-untyped-def]
    """Raise up to ``left_usd`` from a holding worth ``value_usd``, sold ``cost_frac`` below it.

    Returns ``(raised_usd, sold_usd, all_sold)``: the cash raised, the value given up for it
    (``raised / (1 - cost_frac)``, or the whole holding when it all goes) and whether it did.
    """
    proceeds = value_usd * (1.0 - cost_frac)
    raised = min(left_usd, proceeds)
    all_sold = raised >= proceeds
    sold = value_usd if all_sold else raised / (1.0 - cost_frac)
    return raised, sold, all_sold


@jit(error_model="numpy", inline="always")
def _close_or_scale_puts(f, e, units_before):  # type: ignore[no-untyped-def]
    """The portfolio's ``_close_or_scale_puts`` for exchange ``e``: clear or scale the cost."""
    units = f[F_PUT_UNITS][e]
    if units <= 0.0:
        f[F_PUT_STRIKE][e] = 0.0
        f[F_PUT_MINUTES_LEFT][e] = 0.0
        f[F_PUT_COST][e] = 0.0
    else:
        f[F_PUT_COST][e] = f[F_PUT_COST][e] * (units / units_before)


@jit(error_model="numpy")
def pay_one(f, e, amount_usd, price, vol_annual, stressed, terms):  # type: ignore[no-untyped-def]
    """:func:`fundgym.envs.fund.portfolio.pay` for exchange ``e``; returns the USD paid.

    Re-marks to ``price``, then draws ``stable``, the withdrawable part of ``yield``,
    ``volatile`` (with slippage) and the puts (at their mark minus the spread), in that order.
    """
    unit = _mark_one(f, e, price, vol_annual)
    slip = terms[A_SLIPPAGE]
    spread = terms[A_SPREAD]
    left = amount_usd

    from_stable = min(left, f[F_STABLE][e])
    f[F_STABLE][e] -= from_stable
    left -= from_stable

    frac = _withdraw_frac(terms, stressed)
    from_yield = min(left, frac * f[F_YIELD][e])
    f[F_YIELD][e] = max(f[F_YIELD][e] - from_yield, 0.0)
    left -= from_yield

    units = f[F_VOLATILE_UNITS][e]
    from_vol, vol_sold, all_vol = _sell_down(left, units * price, slip)
    f[F_VOLATILE_UNITS][e] = 0.0 if all_vol else max(units - vol_sold / price, 0.0)
    left -= from_vol

    puts = f[F_PUT_UNITS][e]  # ``unit``: the put's mark, from the re-mark (strike, tenor kept)
    from_puts, puts_sold, all_puts = _sell_down(left, puts * unit, spread)
    safe_unit = unit if unit > 0.0 else 1.0
    f[F_PUT_UNITS][e] = 0.0 if all_puts else max(puts - puts_sold / safe_unit, 0.0)
    _close_or_scale_puts(f, e, puts)
    left -= from_puts

    paid = amount_usd - max(left, 0.0)
    cost = (vol_sold - from_vol) + (puts_sold - from_puts)
    f[F_EXTERNAL_PNL][e] -= cost
    f[F_FEES_PAID][e] += cost
    f[F_PAID][e] += paid
    return paid


@jit(error_model="numpy")
def _crash_premium(s, k, t, rate):  # type: ignore[no-untyped-def]
    """:func:`~fundgym.envs.fund.portfolio.crash_premium` for one put (``rate`` a year)."""
    payoff = max(k - s * (1.0 - PUT_CRASH_DROP_FRAC), 0.0)
    return -math.expm1(-rate * max(t, 0.0)) * payoff


@jit(error_model="numpy", inline="always")
def rebalance_one(f, e, w, price, vol_annual, stressed, terms):  # type: ignore[no-untyped-def]
    """:func:`~fundgym.envs.fund.portfolio.rebalance` for exchange ``e``; returns the cost.

    ``w`` holds the four target weights (checked by the caller: >= 0, summing to 1). The
    same arithmetic as the reference, in its operation order.
    """
    unit = _mark_one(f, e, price, vol_annual)
    fee = terms[A_REBALANCE_FEE]
    slip = terms[A_SLIPPAGE]
    spread = terms[A_SPREAD]

    v0, v1, v2, v3 = _buckets(f, e, price, unit)
    units = f[F_PUT_UNITS][e]
    live = units > 0.0 and f[F_PUT_MINUTES_LEFT][e] > 0.0
    committed = f[F_PUT_COST][e] if live else 0.0
    size = max(v3, committed)
    total = v0 + v1 + v2 + size
    t1 = w[1] * total
    t2 = w[2] * total
    t3 = w[3] * total

    frac = _withdraw_frac(terms, stressed)
    sell_yield = min(max(v1 - t1, 0.0), frac * v1)
    sell_vol = max(v2 - t2, 0.0)
    new_strike = terms[A_PUT_MONEYNESS] * price
    new_minutes = terms[A_PUT_TENOR_MINUTES]
    tenor = new_minutes / MINUTES_PER_YEAR
    new_put_mark = black_scholes_put(
        price, new_strike, tenor, max(vol_annual, PUT_VOL_FLOOR_ANNUAL)
    )
    rate = terms[A_PUT_CRASH_RATE]
    new_put_value = new_put_mark + _crash_premium(price, new_strike, tenor, rate)
    live_put_value = unit + _crash_premium(
        price, f[F_PUT_STRIKE][e], f[F_PUT_MINUTES_LEFT][e] / MINUTES_PER_YEAR, rate
    )
    top_up = live and live_put_value > MIN_PUT_PREMIUM_FRAC * price
    buy_mark = unit if top_up else new_put_mark
    buy_value = live_put_value if top_up else new_put_value
    buy_puts = (t3 > size) and (buy_value > MIN_PUT_PREMIUM_FRAC * price)
    roll = buy_puts and not top_up
    # A roll sells the series held; a top-up sells nothing; otherwise the mark above target.
    sell_hedge = v3 if roll else (0.0 if buy_puts else max(v3 - t3, 0.0))

    buy_yield = max(t1 - v1, 0.0)
    buy_vol = max(t2 - v2, 0.0)
    buy_hedge = (t3 if roll else t3 - size) if buy_puts else 0.0

    sold = sell_yield + sell_vol + sell_hedge
    cash = (
        f[F_STABLE][e]
        + sell_yield
        + sell_vol * (1.0 - slip)
        + sell_hedge * (1.0 - spread)
        - fee * sold
    )
    need = buy_yield * (1.0 + fee) + buy_vol * (1.0 + fee) + buy_hedge * (1.0 + spread + fee)
    if need > cash:
        scale = max(cash, 0.0) / (need if need > 0.0 else 1.0)
        buy_yield = buy_yield * scale
        buy_vol = buy_vol * scale
        buy_hedge = buy_hedge * scale
    bought = buy_yield + buy_vol + buy_hedge

    premium = buy_hedge * (1.0 - buy_mark / (buy_value if buy_puts else 1.0))
    cost = (
        sell_vol * slip + sell_hedge * spread + buy_hedge * spread + fee * (sold + bought) + premium
    )
    f[F_STABLE][e] = max(
        f[F_STABLE][e]
        + sell_yield
        + sell_vol * (1.0 - slip)
        + sell_hedge * (1.0 - spread)
        - buy_yield
        - buy_vol
        - buy_hedge * (1.0 + spread)
        - fee * (sold + bought),
        0.0,
    )
    f[F_YIELD][e] = max(f[F_YIELD][e] - sell_yield + buy_yield, 0.0)
    if sell_vol >= v2 and v2 > 0.0:
        f[F_VOLATILE_UNITS][e] = 0.0
    else:
        f[F_VOLATILE_UNITS][e] = max(f[F_VOLATILE_UNITS][e] + (buy_vol - sell_vol) / price, 0.0)
    bought_units = buy_hedge / (buy_value if buy_puts else 1.0)
    if roll:
        f[F_PUT_UNITS][e] = bought_units
        f[F_PUT_STRIKE][e] = new_strike
        f[F_PUT_MINUTES_LEFT][e] = new_minutes
        f[F_PUT_COST][e] = buy_hedge
    elif buy_puts:
        f[F_PUT_UNITS][e] = units + bought_units
        f[F_PUT_COST][e] = committed + buy_hedge
    elif sell_hedge >= v3 and v3 > 0.0:
        f[F_PUT_UNITS][e] = 0.0
    else:
        safe_unit = unit if unit > 0.0 else 1.0
        f[F_PUT_UNITS][e] = max(units - sell_hedge / safe_unit, 0.0)
    _close_or_scale_puts(f, e, f[F_PUT_UNITS][e] if buy_puts else units)
    f[F_EXTERNAL_PNL][e] -= cost
    f[F_FEES_PAID][e] += cost
    return cost


@jit(error_model="numpy")
def rebalance_kernel(f, weights, mask, price, vol_annual, stressed, terms, cost_out):  # type: ignore[no-untyped-def]
    """:func:`rebalance_one` on every exchange in ``mask``; the others are not touched."""
    for e in range(price.shape[0]):
        cost_out[e] = (
            rebalance_one(f, e, weights[e], price[e], vol_annual[e], stressed[e], terms)
            if mask[e]
            else 0.0
        )
