"""Compiled kernels of the margin engine: margin check, liquidation waterfall, ADL, socialisation.

Every kernel loops over exchanges on the outside and over accounts inside, and keeps each exchange's
sums in local scalars: nothing accumulates across exchanges, so exchange ``i`` of a batch computes
bit for bit what it computes stepped alone. Arrays come straight from
:class:`fundgym.envs.state.SimState` (``(E, A)`` collateral, ``(E, A, M)`` positions); parameters
come packed (:meth:`fundgym.envs.core.params.RiskParams.packed`, ``P_*`` columns) with the tier
table as four arrays (:meth:`~fundgym.envs.core.params.RiskParams.tier_table`); events are written
into :attr:`fundgym.envs.core.events.StepEvents.data` by ``EV_*`` column. The kernels never touch
the insurance fund: they report its fee income and the shortfall it paid, and
:func:`fundgym.envs.core.step.core_step` books both into the fund's portfolio.

The order of operations and the venue each rule follows are documented once, in
:mod:`fundgym.envs.core.step`; the scalar formulas below are the ones in
:mod:`fundgym.envs.core.formulas`,
written in the same operation order so the compiled and the numpy versions agree to the bit
on the same inputs. Kernels use numba's numpy error model: a division by zero gives ``inf``
or ``NaN`` as in numpy (a subnormal position's ADL score, say), never an exception.
"""

from __future__ import annotations

import numpy as np

from fundgym.envs.core.adl import (
    ADL_HYPERLIQUID,
    close_counterparties,
    close_market_counterparties,
)
from fundgym.envs.core.events import (
    EV_ADL_HAIRCUT,
    EV_ADL_OVERSHOOT,
    EV_ADL_VOLUME,
    EV_BAD_DEBT,
    EV_FLOORED_FUND_FEE_INCOME,
    EV_FUND_FEE_INCOME,
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_FEES,
    EV_LIQUIDATION_SELL,
    EV_LIQUIDATION_VOLUME,
    EV_LIQUIDATOR_ABSORBED,
    EV_LIQUIDATOR_REWARDS,
    EV_N_BELOW_BANKRUPTCY,
    EV_N_LIQUIDATIONS,
    EV_SHORTFALL,
    EV_SOCIALIZED_LOSS,
    EV_UNRECOVERED,
)
from fundgym.envs.core.formulas import DUST_NOTIONAL_USD
from fundgym.envs.core.impact import book_price
from fundgym.envs.core.liquidation import (
    DYDX_BANKRUPTCY_ADJUSTMENT,
    DYDX_MAX_INSURANCE_LOST_USD,
    DYDX_SPREAD_TO_MMR,
    HL_BACKSTOP_FRACTION_OF_MM,
    HL_SLICE_FRACTION,
    HL_SLICE_THRESHOLD_USD,
    LIQ_BINANCE,
    LIQ_DYDX_V4,
    LIQ_HYPERLIQUID,
    LIQ_PARTIAL,
    dydx_close_base,
    dydx_fillable_price,
    hl_cooldown_substeps,
    n_substeps,
    path_price,
)
from fundgym.envs.core.liquidators import (
    liquidator_capacity_usd,
    liquidators_paid,
    side_fills,
)
from fundgym.envs.core.params import (
    P_LIQ_FEE,
    P_LIQ_FUND_SHARE,
    P_LIQUIDATOR_MULT,
    P_MAX_LIQ_FRAC,
    P_MIN_LIQ_NOTIONAL,
    P_MMR,
    W_ADL_FIRST,
    W_NO_ADL,
    W_NO_FUND,
    W_NO_SOCIALIZE,
    W_NO_VAULT,
)
from fundgym.envs.core.vault import (
    V_ACTIVE,
    V_LOSS_LIMITED,
    book_unwind_loss,
    record_takeover,
    vault_deleverage,
    vault_over_loss_limit_1,
    vault_takeover,
    vault_tick_end_limit,
    vault_unwind_one,
)
from fundgym.envs.jit import jit

SOCIALIZE_PROFIT_HAIRCUT = 0
SOCIALIZE_DRIFT = 1
__all__ = [
    "DUST_NOTIONAL_USD",
    "margin_kernel",
    "requirement",
    "scan_cross_kernel",
    "scan_kernel",
    "waterfall_cross_kernel",
    "waterfall_kernel",
]


# ==== scalar formulas (the operation order of fundgym.envs.core.formulas) ====


@jit(error_model="numpy", inline="always")
def requirement(notional_usd, mmr, floors, rates, cums, base_mmr):  # type: ignore[no-untyped-def]
    """Maintenance requirement of one position: flat ``mmr x N`` or the scaled tier table."""
    n_tiers = floors.shape[0]
    if n_tiers == 0:
        return notional_usd * mmr
    k = 0
    while k + 1 < n_tiers and floors[k + 1] <= notional_usd:
        k += 1
    return (notional_usd * rates[k] - cums[k]) * (mmr / base_mmr)


@jit(error_model="numpy", inline="always")
def _account_margin(coll, size, entry, marks, mmr_mult, i, a, mmr, floors, rates, cums, base_mmr):  # type: ignore[no-untyped-def]
    """Cross-margin equity and maintenance requirement of account ``a`` of exchange ``i``.

    Market ``j``'s position requires :func:`requirement` times ``mmr_mult[i, j]`` (the
    market's margin multiple, ``core_step``'s ``market_mmr_mult``; ones by default, and
    ``x * 1.0`` is ``x`` exactly, so the default costs no bit of the sum).
    """
    eq = coll[i, a]
    req = 0.0
    for j in range(size.shape[2]):
        q = size[i, a, j]
        m = marks[i, j]
        eq += q * (m - entry[i, a, j])
        req += requirement(abs(q) * m, mmr, floors, rates, cums, base_mmr) * mmr_mult[i, j]
    return eq, req


@jit(error_model="numpy", inline="always")
def _liquidatable_1(c, q, e, m, mmr, floors, rates, cums, base_mmr):  # type: ignore[no-untyped-def]
    """dYdX ``IsLiquidatable`` for a one-market account: requirement > 0 and equity below it."""
    req = requirement(abs(q) * m, mmr, floors, rates, cums, base_mmr)
    return (req > 0.0) & (c + q * (m - e) < req)  # no short circuit: no branch to mispredict


@jit(error_model="numpy", inline="always")
def liquidatable_flat(c, q, e, m, mmr):  # type: ignore[no-untyped-def]
    """:func:`_liquidatable_1` under a flat MMR: the requirement without tiers, same operations."""
    req = abs(q) * m * mmr
    return (req > 0.0) & (c + q * (m - e) < req)  # no short circuit: no branch to mispredict


@jit(error_model="numpy")
def count_liquidatable(coll, size, entry, i, m, mmr, floors, rates, cums, base_mmr):  # type: ignore[no-untyped-def]
    """How many of exchange ``i``'s accounts are liquidatable at ``m``.

    Counted without branching, flat and tiered requirements in loops of their own, so the
    common case vectorises: most ticks liquidate no one, and listing them
    (:func:`_collect_liquidatable`) waits until the count says there are some.
    """
    n = 0
    if floors.shape[0] == 0:
        for a in range(size.shape[1]):
            n += liquidatable_flat(coll[i, a], size[i, a, 0], entry[i, a, 0], m, mmr)
    else:
        for a in range(size.shape[1]):
            n += _liquidatable_1(
                coll[i, a], size[i, a, 0], entry[i, a, 0], m, mmr, floors, rates, cums, base_mmr
            )
    return n


@jit(error_model="numpy", inline="always")
def count_liquidatable_flat_row(coll, size, entry, m, mmr):  # type: ignore[no-untyped-def]
    """:func:`count_liquidatable` under a flat MMR on one exchange's contiguous ``(A,)`` rows.

    Unit strides let the branch-free loop vectorise (the batch arrays' strides are known only
    at run time); the count is an integer, the same in any order.
    """
    n = 0
    for a in range(size.shape[0]):
        n += liquidatable_flat(coll[a], size[a], entry[a], m, mmr)
    return n


@jit(error_model="numpy")
def _collect_liquidatable(coll, size, entry, i, m, mmr, floors, rates, cums, base_mmr, idx):  # type: ignore[no-untyped-def]
    """Write exchange ``i``'s liquidatable accounts, in order, into ``idx``; return how many.

    Branch-free compaction (every index is written, the count advances by the flag), so the
    third of slots that are empty cost no mispredicted branch; flat and tiered requirements
    get their own loop.
    """
    n = 0
    if floors.shape[0] == 0:
        for a in range(size.shape[1]):
            idx[n] = a
            n += liquidatable_flat(coll[i, a], size[i, a, 0], entry[i, a, 0], m, mmr)
    else:
        for a in range(size.shape[1]):
            idx[n] = a
            n += _liquidatable_1(
                coll[i, a], size[i, a, 0], entry[i, a, 0], m, mmr, floors, rates, cums, base_mmr
            )
    return n


@jit(error_model="numpy")
def order_flow(size, i, idx, n, packed, m, book_px):  # type: ignore[no-untyped-def]
    """Notional of exchange ``i``'s liquidation orders at the book price: ``(sell, buy)``.

    ``idx[:n]`` lists the liquidatable accounts; each order closes :func:`_close_base` of the
    position. Longs sell (``EV_LIQUIDATION_SELL``), shorts buy (``EV_LIQUIDATION_BUY``): the
    flow the impact model prices.
    """
    sell = 0.0
    buy = 0.0
    max_frac = packed[i, P_MAX_LIQ_FRAC]
    min_base = packed[i, P_MIN_LIQ_NOTIONAL] / m
    for k in range(n):
        q = size[i, idx[k], 0]
        notional = _close_base(abs(q), max_frac, min_base) * book_px
        if q > 0.0:
            sell += notional
        else:
            buy += notional
    return sell, buy


@jit(error_model="numpy", inline="always")
def _bankruptcy_value(c, q, e, close_base):  # type: ignore[no-untyped-def]
    """``close_base`` x bankruptcy price, without dividing by ``q`` (formulas.bankruptcy_value)."""
    frac = close_base / abs(q) if q != 0.0 else 0.0
    return close_base * e - np.sign(q) * c * frac


@jit(error_model="numpy", inline="always")
def _insurance_fund_delta(c, q, e, close_base, fill_price, fee_rate):  # type: ignore[no-untyped-def]
    """dYdX's fund delta for closing ``close_base`` (unsigned) of ``q`` at ``fill_price``."""
    if close_base == 0.0:
        return 0.0
    raw = np.sign(q) * (close_base * fill_price - _bankruptcy_value(c, q, e, close_base))
    if raw > 0.0:
        return min(raw, fee_rate * close_base * fill_price)
    return raw


@jit(error_model="numpy", inline="always")
def _close_base(abs_q, max_frac, min_base):  # type: ignore[no-untyped-def]
    """Base units a partial liquidation order closes (dust whose fraction underflows: all)."""
    close = min(abs_q, max(max_frac * abs_q, min_base))
    return close if close > 0.0 else abs_q


# ==== margin ====


@jit(error_model="numpy")
def margin_kernel(  # type: ignore[no-untyped-def]
    coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base, eq_out, req_out,
):  # fmt: skip
    """Equity and maintenance requirement of every account, into ``eq_out``, ``req_out``.

    ``mmr_mult`` ``(E, M)`` scales each market's requirement (:func:`_account_margin`).
    """
    n_envs, n_acc, _ = size.shape
    for i in range(n_envs):
        mmr = packed[i, P_MMR]
        for a in range(n_acc):
            eq, req = _account_margin(
                coll, size, entry, marks, mmr_mult, i, a, mmr, floors, rates, cums, base[0]
            )
            eq_out[i, a] = eq
            req_out[i, a] = req


@jit(error_model="numpy")
def scan_kernel(coll, size, entry, marks, book, packed, floors, rates, cums, base, ev):  # type: ignore[no-untyped-def]
    """Count liquidatable accounts and their order flow; return ``(batch total, liq_idx)``.

    Writes ``EV_N_LIQUIDATIONS``, the orders' notional at the book price
    (``EV_LIQUIDATION_SELL`` for longs, ``EV_LIQUIDATION_BUY`` for shorts), which the impact
    model turns into the tick's fill prices. ``liq_idx[i, :n]`` lists exchange ``i``'s
    liquidatable accounts in order, for :func:`waterfall_kernel` (an ``(E, A)`` scratch
    array, allocated only when some exchange liquidates, else ``(0, 0)``; rows of exchanges
    that do not liquidate are left unset). One market (``M == 1``).
    """
    n_envs, n_acc, _ = size.shape
    total = 0
    liq_idx = np.empty((0, 0), np.int64)
    for i in range(n_envs):
        mmr = packed[i, P_MMR]
        m = marks[i, 0]
        n = count_liquidatable(coll, size, entry, i, m, mmr, floors, rates, cums, base[0])
        sell = 0.0
        buy = 0.0
        if n > 0:
            if liq_idx.shape[0] == 0:
                liq_idx = np.empty((n_envs, n_acc), np.int64)
            idx = liq_idx[i]
            _collect_liquidatable(coll, size, entry, i, m, mmr, floors, rates, cums, base[0], idx)
            sell, buy = order_flow(size, i, idx, n, packed, m, book[i])
        ev[i, EV_N_LIQUIDATIONS] = n
        ev[i, EV_LIQUIDATION_SELL] = sell
        ev[i, EV_LIQUIDATION_BUY] = buy
        total += n
    return total, liq_idx


@jit(error_model="numpy")
def vault_kernel(  # type: ignore[no-untyped-def]
    vault, cp_size, cp_cash, marks, book, depth, max_impact, packed, ev, coll, size, entry,
    stages, adl_policy,
):  # fmt: skip
    """Each active vault's unwind at the tick's end (:func:`.vault.vault_unwind_one`).

    At the oracle ``marks[i, 0]``, into the book at ``book[i]`` with ``depth[i]`` USD per 1%,
    its margin at the exchange's MMR. A vault beyond its loss limit is first deleveraged at
    the oracle against every account (:func:`.vault.vault_deleverage`; with ADL a stage).
    """
    per_market = np.zeros(size.shape[2])  # the one-market path keeps no per-market record
    for i in range(vault.shape[0]):
        if vault[i, V_ACTIVE] > 0.0:
            vault_tick_end_limit(
                vault, i, coll, size, entry, cp_size, cp_cash, marks[i], stages, adl_policy, ev,
                per_market,
            )  # fmt: skip
            vault_unwind_one(
                vault, i, cp_size, cp_cash, marks[i, 0], book[i], depth[i], max_impact,
                packed[i, P_MMR], ev,
            )  # fmt: skip


# ==== the waterfall ====


@jit(error_model="numpy")
def waterfall_kernel(  # type: ignore[no-untyped-def]
    coll,
    size,
    entry,
    marks,
    packed,
    floors,
    rates,
    cums,
    base,
    sell_px,
    buy_px,
    fund_available,
    stages,
    socialization,
    adl_policy,
    liquidation_mode,
    book,
    depth,
    max_impact,
    tick_seconds,
    oracle_from,
    book_from,
    cp_size,
    cp_cash,
    liquidator_rewards,
    unrecovered,
    vault,
    ev,
    liq_idx,
):
    """Liquidate every exchange's liquidatable accounts (those ``scan_kernel`` listed).

    Updates accounts, the counterparty, liquidator rewards and unrecovered loss in place and
    writes the events; the fund's flows are only reported (``EV_FUND_FEE_INCOME``,
    ``EV_SHORTFALL``). One market (``M == 1``).

    ``liquidation_mode`` (:mod:`fundgym.envs.core.liquidation`) picks the engine: ``partial``
    fills at ``sell_px`` / ``buy_px``, the tick's prices; the venue modes run sub-steps of
    ``tick_seconds`` and price each on its own flow through the square-root book (``book``
    price, ``depth`` USD per 1%, buys' slippage capped at ``max_impact``), writing the tick's
    flow into ``EV_LIQUIDATION_SELL`` / ``EV_LIQUIDATION_BUY``. Their sub-steps read the
    oracle and the book on the intra-tick path from the previous tick's ``oracle_from`` /
    ``book_from`` (``(E,)``; not > 0: no previous tick) to ``marks`` / ``book``
    (:func:`~fundgym.envs.core.liquidation.path_price`).

    Outside liquidators (:mod:`fundgym.envs.core.liquidators`) take part of each side's flow
    at the oracle in every mode, as their share of the fee buys (none at the default split).
    ``vault`` (``SimState.vault``, :mod:`fundgym.envs.core.vault`) is the backstop the venue
    modes hand accounts to; ``partial`` runs none.
    """
    for i in range(size.shape[0]):
        if ev[i, EV_N_LIQUIDATIONS] > 0.0 and liquidation_mode != LIQ_PARTIAL:
            _venue_one(
                i,
                coll,
                size,
                entry,
                marks,
                packed,
                floors,
                rates,
                cums,
                base[0],
                book[i],
                depth[i],
                max_impact,
                tick_seconds,
                oracle_from[i],
                book_from[i],
                fund_available[i],
                stages,
                socialization,
                adl_policy,
                liquidation_mode,
                cp_size,
                cp_cash,
                liquidator_rewards,
                unrecovered,
                vault,
                ev,
                liq_idx[i, : int(ev[i, EV_N_LIQUIDATIONS])],
            )
        elif ev[i, EV_N_LIQUIDATIONS] > 0.0:
            _waterfall_one(
                i,
                coll,
                size,
                entry,
                marks,
                packed,
                floors,
                rates,
                cums,
                base[0],
                sell_px[i],
                buy_px[i],
                book[i],
                depth[i],
                max_impact,
                fund_available[i],
                stages,
                socialization,
                adl_policy,
                cp_size,
                cp_cash,
                liquidator_rewards,
                unrecovered,
                ev,
                liq_idx[i, : int(ev[i, EV_N_LIQUIDATIONS])],
            )


@jit(error_model="numpy", inline="always")
def _settle_order(  # type: ignore[no-untyped-def]
    coll, size, i, a, c, q, e, s, book_close, adl_base, fill_px, fee, fund_paid, book_bad,
    socialized, adl_policy, m, acc,
):  # fmt: skip
    """Book one liquidation order on account ``a``: its fill, its deleveraged part, its flows.

    ``book_close`` base units fill at ``fill_px``, ``adl_base`` are deleveraged (at the bankrupt
    account's bankruptcy price, or at the mark under ``hyperliquid``, where a deficit against
    bankruptcy is bad debt that continues down the waterfall and a surplus stays on the
    account); the account pays ``fee`` and receives ``fund_paid`` and ``socialized``. Adds to
    ``acc``: :data:`_ACC_BAD_DEBT`, ``_VOLUME``, ``_LOSS``, ``_SHORTFALL``, ``_CP_BASE``,
    ``_CP_QUOTE`` (the book's side goes to the counterparty). Both waterfalls settle through
    here, so the ledger of a fill is written once.
    """
    adl_quote = _bankruptcy_value(c, q, e, adl_base)
    if adl_policy == ADL_HYPERLIQUID and adl_base > 0.0:
        at_mark = adl_base * m
        deficit = max(s * (adl_quote - at_mark), 0.0)
        book_bad += deficit
        socialized += deficit
        adl_quote = at_mark
    coll[i, a] = (
        c
        + s * book_close * (fill_px - e)
        + s * (adl_quote - adl_base * e)
        - fee
        + fund_paid
        + socialized
    )
    size[i, a, 0] = q - s * (book_close + adl_base)
    book_base = s * book_close
    acc[_ACC_CP_BASE] += book_base
    acc[_ACC_CP_QUOTE] += book_base * fill_px
    acc[_ACC_VOLUME] += book_close * fill_px + abs(adl_quote)
    acc[_ACC_BAD_DEBT] += book_bad
    acc[_ACC_SHORTFALL] += fund_paid
    acc[_ACC_LOSS] += socialized


#: Slots of the accumulator :func:`_settle_order` adds to.
_ACC_BAD_DEBT, _ACC_VOLUME, _ACC_LOSS, _ACC_SHORTFALL, _ACC_CP_BASE, _ACC_CP_QUOTE = range(6)


@jit(error_model="numpy", inline="always")
def _listed_mask(mask, n_acc, idx):  # type: ignore[no-untyped-def]
    """``mask`` if built, else a new one marking the tick's listed accounts ``idx``.

    Only ADL and socialisation read it (they skip the accounts being liquidated), and most
    ticks that liquidate need neither: the waterfalls build it on first use.
    """
    if mask.shape[0] == n_acc:
        return mask
    out = np.zeros(n_acc, np.bool_)
    for k in range(idx.shape[0]):
        out[idx[k]] = True
    return out


@jit(error_model="numpy", inline="always")
def _record_orders(  # type: ignore[no-untyped-def]
    ev, i, volume, fees, income, income_shorts, rewards, bad_debt, shortfall, overshoot, n_below
):
    """Write exchange ``i``'s liquidation orders' totals into their ``EV_*`` columns.

    One home for what every waterfall (one market, the venue modes, across markets) reports.
    """
    ev[i, EV_LIQUIDATION_VOLUME] = volume
    ev[i, EV_LIQUIDATION_FEES] = fees
    ev[i, EV_FUND_FEE_INCOME] = income
    ev[i, EV_FLOORED_FUND_FEE_INCOME] = income_shorts
    ev[i, EV_LIQUIDATOR_REWARDS] = rewards
    ev[i, EV_BAD_DEBT] = bad_debt
    ev[i, EV_SHORTFALL] = shortfall
    ev[i, EV_ADL_OVERSHOOT] = overshoot
    ev[i, EV_N_BELOW_BANKRUPTCY] = n_below


@jit(error_model="numpy", inline="always")
def _uncovered_base(need, paid, bad, close, n):  # type: ignore[no-untyped-def]
    """Write into ``need`` the base of each order the fund did not cover; whether any is > 0.

    An order's uncovered share is ``1 - paid / bad`` of its close (all of it covered when it
    has no bad debt): what ADL must place against counterparties.
    """
    any_need = False
    for k in range(n):
        covered = paid[k] / bad[k] if bad[k] > 0.0 else 1.0
        need[k] = (1.0 - covered) * close[k]
        any_need = any_need or need[k] > 0.0
    return any_need


@jit(error_model="numpy", inline="always")
def _pay_in_order(paid, owed, available, n):  # type: ignore[no-untyped-def]
    """The fund pays ``owed[k]`` in account order from ``available``, never below zero."""
    before = 0.0
    for k in range(n):
        paid[k] = min(max(available - before, 0.0), owed[k])
        before += owed[k]


@jit(error_model="numpy")
def _waterfall_one(  # type: ignore[no-untyped-def]
    i,
    coll,
    size,
    entry,
    marks,
    packed,
    floors,
    rates,
    cums,
    base_mmr,
    sell_px,
    buy_px,
    book_px,
    depth,
    max_impact,
    fund_available,
    stages,
    socialization,
    adl_policy,
    cp_size,
    cp_cash,
    liquidator_rewards,
    unrecovered,
    ev,
    idx,
):
    """The waterfall of exchange ``i`` on its liquidatable accounts ``idx`` (in order).

    See :mod:`fundgym.envs.core.step` for the order of operations. ``sell_px`` / ``buy_px``
    price each side's whole flow in the book; when the liquidators' share of the fee buys
    capacity, they take part of it at the oracle and the rest is priced again, on its own
    flow, through the square-root book (``book_px``, ``depth``, ``max_impact``).
    """
    n_acc = size.shape[1]
    n = idx.shape[0]
    m = marks[i, 0]
    is_liq = np.zeros(0, np.bool_)  # the listed accounts' mask, built when ADL or socialising

    # 1. The liquidation order: partial (dYdX), priced by the tick's fill price per side.
    max_frac = packed[i, P_MAX_LIQ_FRAC]
    min_base = packed[i, P_MIN_LIQ_NOTIONAL] / m
    fee_rate = packed[i, P_LIQ_FEE]
    fund_share = packed[i, P_LIQ_FUND_SHARE]
    mult = packed[i, P_LIQUIDATOR_MULT]
    side = np.empty(n)
    close = np.empty(n)
    paid_for = np.zeros(n, np.bool_)  # orders liquidators are paid for: solvent at the oracle
    sell_liq_px = sell_px
    buy_liq_px = buy_px
    for k in range(n):
        a = idx[k]
        q = size[i, a, 0]
        side[k] = 1.0 if q > 0.0 else -1.0
        close[k] = _close_base(abs(q), max_frac, min_base)
    if liquidators_paid(fee_rate, fund_share, mult):  # they take capacity at the oracle
        paid_sell = 0.0
        paid_buy = 0.0
        for k in range(n):
            a = idx[k]
            paid_for[k] = coll[i, a] + size[i, a, 0] * (m - entry[i, a, 0]) > 0.0
            if paid_for[k] and side[k] > 0.0:
                paid_sell += close[k] * book_px
            elif paid_for[k]:
                paid_buy += close[k] * book_px
        sell_px, sell_liq_px, buy_px, buy_liq_px, taken_sell, taken_buy = _side_prices(
            ev[i, EV_LIQUIDATION_SELL], ev[i, EV_LIQUIDATION_BUY], paid_sell, paid_buy, mult,
            fee_rate, fund_share, 0.0, 0.0, m, book_px, depth, max_impact,
        )  # fmt: skip
        ev[i, EV_LIQUIDATOR_ABSORBED] = taken_sell + taken_buy
    price = np.empty(n)
    fee = np.empty(n)
    bad = np.empty(n)
    income = 0.0
    income_shorts = 0.0  # the part from shorts bought back (the floored-oracle check)
    rewards = 0.0
    fees = 0.0
    for k in range(n):
        a = idx[k]
        q = size[i, a, 0]
        if paid_for[k]:
            price[k] = sell_liq_px if q > 0.0 else buy_liq_px
        else:
            price[k] = sell_px if q > 0.0 else buy_px
        delta = _insurance_fund_delta(coll[i, a], q, entry[i, a, 0], close[k], price[k], fee_rate)
        fee[k] = max(delta, 0.0)
        bad[k] = max(-delta, 0.0)
        income += fee[k] * fund_share
        income_shorts += fee[k] * fund_share if q < 0.0 else 0.0
        rewards += fee[k] * (1.0 - fund_share)
        fees += fee[k]

    # 2. The insurance fund: this tick's fee income first, then shortfalls in account order,
    #    never below zero. Only this exchange's own running sum. (A sequence without the
    #    fund pays nothing; one with ADL first pays after step 3, what ADL could not place.)
    adl_first = (stages & W_ADL_FIRST) != 0
    available = fund_available + income if (stages & W_NO_FUND) == 0 else 0.0
    paid = np.zeros(n)
    if not adl_first:
        _pay_in_order(paid, bad, available, n)

    # 3. Auto-deleveraging of what the fund could not cover (or, ADL first, of every order
    #    past bankruptcy).
    adl_close = np.zeros(n)
    if (stages & W_NO_ADL) == 0:
        need = np.zeros(n)
        if _uncovered_base(need, paid, bad, close, n):
            is_liq = _listed_mask(is_liq, n_acc, idx)
            _deleverage(i, coll, size, entry, m, idx, is_liq, side, need, adl_close, ev, adl_policy)
            _off_book_flow(ev, i, side, adl_close, n, book_px)
    if adl_first:  # the fund pays the book part's bad debt
        left = np.empty(n)
        for k in range(n):
            left[k] = bad[k] * (1.0 - adl_close[k] / close[k]) if close[k] > 0.0 else bad[k]
        _pay_in_order(paid, left, available, n)

    # 4. Fills and deleveraged closes on the liquidated accounts; the book's side to the
    #    counterparty; what neither the fund nor ADL covered is the loss to socialise.
    #    The fund pays only the book part's bad debt: when rounding has ADL take more than
    #    the uncovered share (a subnormal close whose share rounds up to all of it), the
    #    excess of its payment is not made.
    acc = np.zeros(6)
    overshoot = 0.0
    for k in range(n):
        a = idx[k]
        s = side[k]
        book_close = close[k] - adl_close[k]
        adl_share = adl_close[k] / close[k] if close[k] > 0.0 else 0.0
        book_bad = bad[k] * (1.0 - adl_share)  # the deleveraged part closes at bankruptcy
        fund_paid = min(paid[k], book_bad)
        socialized = max(book_bad - fund_paid, 0.0)
        if adl_policy == ADL_HYPERLIQUID and adl_close[k] > 0.0:
            uncovered = bad[k] if adl_first else bad[k] - paid[k]
            overshoot += _mark_overshoot(adl_close[k], uncovered, s * (m - price[k])) * m
        _settle_order(
            coll, size, i, a, coll[i, a], size[i, a, 0], entry[i, a, 0], s, book_close,
            adl_close[k], price[k], fee[k], fund_paid, book_bad, socialized, adl_policy, m, acc,
        )  # fmt: skip
    cp_size[i, 0] += acc[_ACC_CP_BASE]
    cp_cash[i] -= acc[_ACC_CP_QUOTE]
    volume = acc[_ACC_VOLUME]
    bad_debt = acc[_ACC_BAD_DEBT]
    shortfall = acc[_ACC_SHORTFALL]
    loss = acc[_ACC_LOSS]
    liquidator_rewards[i] += rewards

    below = 0
    for k in range(n):
        below += bad[k] > 0.0
    _record_orders(
        ev, i, volume, fees, income, income_shorts, rewards, bad_debt, shortfall, overshoot, below
    )

    # 5. Socialisation, then 6. the exchange absorbs the rest.
    charged = 0.0
    if loss > 0.0 and (stages & W_NO_SOCIALIZE) == 0:
        is_liq = _listed_mask(is_liq, n_acc, idx)
        charged = _socialize(i, coll, size, entry, m, is_liq, loss, socialization)
    ev[i, EV_SOCIALIZED_LOSS] = charged
    ev[i, EV_UNRECOVERED] = loss - charged
    unrecovered[i] += loss - charged


@jit(error_model="numpy", inline="always")
def _order_price(side, paid_for, sell_px, sell_liq, buy_px, buy_liq):  # type: ignore[no-untyped-def]
    """An order's fill: its side's, at the liquidators' average if they are paid for it."""
    if side > 0.0:
        return sell_liq if paid_for else sell_px
    return buy_liq if paid_for else buy_px


@jit(error_model="numpy", inline="always")
def _side_prices(  # type: ignore[no-untyped-def]
    flow_sell, flow_buy, paid_sell, paid_buy, mult, fee_rate, fund_share, taken_sell, taken_buy,
    m, book_px, depth, max_impact,
):  # fmt: skip
    """A (sub-)step's fills: ``(sell, sell_liq, buy, buy_liq, got_sell, got_buy)``.

    Without liquidators each side's flow walks the book (``*_liq`` equal the book's fills).
    With them, each side's capacity at the sub-step's oracle and book, less what they took
    earlier in the tick, is taken at the oracle out of the orders they are paid for
    (``paid_*`` USD; :func:`~fundgym.envs.core.liquidators.side_fills`).
    """
    if not liquidators_paid(fee_rate, fund_share, mult):
        sell_px = book_price(book_px, flow_sell, depth, max_impact, -1.0)
        buy_px = book_price(book_px, flow_buy, depth, max_impact, 1.0)
        return sell_px, sell_px, buy_px, buy_px, 0.0, 0.0
    cap = liquidator_capacity_usd(fee_rate, fund_share, mult, depth, m, book_px, 1.0)
    sell_px, sell_liq, got_sell = side_fills(
        flow_sell, paid_sell, max(cap - taken_sell, 0.0), m, book_px, depth, max_impact, 1.0
    )
    cap = liquidator_capacity_usd(fee_rate, fund_share, mult, depth, m, book_px, -1.0)
    buy_px, buy_liq, got_buy = side_fills(
        flow_buy, paid_buy, max(cap - taken_buy, 0.0), m, book_px, depth, max_impact, -1.0
    )
    return sell_px, sell_liq, buy_px, buy_liq, got_sell, got_buy


@jit(error_model="numpy")
def _venue_one(  # type: ignore[no-untyped-def]
    i,
    coll,
    size,
    entry,
    marks,
    packed,
    floors,
    rates,
    cums,
    base_mmr,
    book_end,
    depth,
    max_impact,
    tick_seconds,
    oracle_from,
    book_from,
    fund_available,
    stages,
    socialization,
    adl_policy,
    mode,
    cp_size,
    cp_cash,
    liquidator_rewards,
    unrecovered,
    vault,
    ev,
    idx,
):
    """The venue modes' waterfall of exchange ``i`` on its listed accounts ``idx``, by sub-step.

    See :mod:`fundgym.envs.core.liquidation` for the sub-steps and each mode's rules. Every
    sum is this exchange's own; the fund's flows are only reported, as in
    :func:`_waterfall_one`, and ``fund_available`` bounds what the sub-steps pay in total
    (each sub-step's fee income counted before its shortfalls). Sub-step ``step`` reads the
    oracle ``m`` and the book ``book_px`` on the intra-tick path from ``oracle_from`` /
    ``book_from`` to the tick's ``marks[i, 0]`` / ``book_end``
    (:func:`~fundgym.envs.core.liquidation.path_price`); everything in the sub-step (the
    check, the order's size and limit, ADL's and socialisation's marks) is at that oracle.

    Before the mode sizes an account's order, an active ``vault`` takes over an account with
    equity in ``[0, 2/3)`` of its requirement, if it stays margined
    (:func:`~fundgym.envs.core.vault.vault_takeover`); outside liquidators take their share of
    each sub-step's flow at the oracle, out of the tick's capacity
    (:mod:`fundgym.envs.core.liquidators`).
    """
    n_acc = size.shape[1]
    n = idx.shape[0]
    m_end = marks[i, 0]
    is_liq = np.zeros(0, np.bool_)  # the listed accounts' mask, built when ADL or socialising
    mmr = packed[i, P_MMR]
    fee_rate = packed[i, P_LIQ_FEE]
    fund_share = packed[i, P_LIQ_FUND_SHARE]
    side = np.zeros(n)
    close = np.zeros(n)  # base sent to the book this sub-step
    limit = np.zeros(n)  # dydx_v4: the fillable price
    price = np.zeros(n)
    fee = np.zeros(n)
    bad = np.zeros(n)
    paid = np.zeros(n)
    need = np.zeros(n)
    adl_close = np.zeros(n)
    takeover = np.zeros(n, np.bool_)
    paid_for = np.zeros(n, np.bool_)  # orders liquidators are paid for: solvent, no takeover
    refused = np.zeros(n, np.bool_)
    deficient = np.zeros(n, np.bool_)
    below = np.zeros(n, np.bool_)
    cool_until = np.zeros(n, np.int64)  # hyperliquid: first check a slice is allowed again
    cooldown = hl_cooldown_substeps()
    flow_sell_total = 0.0
    flow_buy_total = 0.0
    acc = np.zeros(6)  # volume, bad debt and shortfall run over the sub-steps
    fees = 0.0
    income = 0.0
    income_shorts = 0.0  # the part from shorts bought back (the floored-oracle check)
    rewards = 0.0
    overshoot = 0.0
    charged_total = 0.0
    unrecovered_total = 0.0
    orders = np.empty(n, np.int64)  # this sub-step's orders, in account order
    with_vault = vault[i, V_ACTIVE] > 0.0 and (stages & W_NO_VAULT) == 0
    adl_on = (stages & W_NO_ADL) == 0
    adl_first = (stages & W_ADL_FIRST) != 0  # never under dydx_v4 (RiskParams checks)
    fund_on = (stages & W_NO_FUND) == 0
    available = fund_available if fund_on else 0.0
    mult = packed[i, P_LIQUIDATOR_MULT]
    taken_sell = 0.0  # what the liquidators took this tick, per side
    taken_buy = 0.0
    n_steps = n_substeps(mode, tick_seconds)
    step = 0
    while step < n_steps:
        m = path_price(oracle_from, m_end, step, n_steps)
        book_px = path_price(book_from, book_end, step, n_steps)
        # 1. Orders: the listed accounts still liquidatable at the sub-step's oracle, sized by
        #    the mode.
        flow_sell = 0.0
        flow_buy = 0.0
        paid_sell = 0.0  # the flow of orders liquidators are paid for
        paid_buy = 0.0
        n_orders = 0
        book_cannot = False  # a takeover the book could not take from the vault at once
        for k in range(n):
            close[k] = 0.0
            refused[k] = False
            takeover[k] = False
            fee[k] = 0.0
            bad[k] = 0.0
            paid[k] = 0.0
            need[k] = 0.0
            adl_close[k] = 0.0
            a = idx[k]
            q = size[i, a, 0]
            if q == 0.0:
                continue
            eq = coll[i, a] + q * (m - entry[i, a, 0])
            req = requirement(abs(q) * m, mmr, floors, rates, cums, base_mmr)
            if not (req > 0.0 and eq < req):
                continue  # not yet on the path, never, or a slice brought it back
            abs_q = abs(q)
            if (
                with_vault
                and eq >= 0.0
                and eq < HL_BACKSTOP_FRACTION_OF_MM * req
                and vault_takeover(vault, i, eq, q, m, mmr)
            ):
                if vault[i, V_LOSS_LIMITED] > 0.0:  # a liquidator that deleverages
                    book_cannot |= book_unwind_loss(q, m, book_px, depth, max_impact) > eq
                record_takeover(ev, i, abs_q * m)  # the account's equity went with it
                coll[i, a] = 0.0
                size[i, a, 0] = 0.0
                continue
            side[k] = 1.0 if q > 0.0 else -1.0
            deficient[k] = eq < 0.0
            if mode == LIQ_DYDX_V4:
                close[k] = dydx_close_base(abs_q, m)
                limit[k] = dydx_fillable_price(
                    q, m, eq, req, DYDX_BANKRUPTCY_ADJUSTMENT, DYDX_SPREAD_TO_MMR, req
                )
            elif mode == LIQ_HYPERLIQUID:
                close[k] = abs_q
                limit[k] = m - eq / q  # the bankruptcy price: the market order fills no worse
                if eq < HL_BACKSTOP_FRACTION_OF_MM * req:
                    takeover[k] = True  # the backstop: no vault, an exhausted one, or eq < 0
                    limit[k] = -side[k] * np.inf  # the backstop has no limit
                elif abs_q * m > HL_SLICE_THRESHOLD_USD and cool_until[k] <= step:
                    slice_base = HL_SLICE_FRACTION * abs_q
                    close[k] = slice_base if slice_base > 0.0 else abs_q
                    cool_until[k] = step + cooldown
            elif mode == LIQ_BINANCE:
                close[k] = abs_q
                takeover[k] = deficient[k]
            else:  # LIQ_BITMEX
                close[k] = abs_q
                takeover[k] = True
            paid_for[k] = eq > 0.0 and not takeover[k]  # liquidators earn its fee
            if q > 0.0:
                flow_sell += close[k] * book_px
                paid_sell += close[k] * book_px if paid_for[k] else 0.0
            else:
                flow_buy += close[k] * book_px
                paid_buy += close[k] * book_px if paid_for[k] else 0.0
            orders[n_orders] = k
            n_orders += 1
        if with_vault and adl_on and (book_cannot or vault_over_loss_limit_1(vault, i, m)):
            # A takeover the book cannot take, or the vault's loss limit, after this check's
            # takeovers (one market: no per-market record).
            is_liq = _listed_mask(is_liq, n_acc, idx)
            vault_deleverage(
                vault, i, coll, size, entry, cp_size, cp_cash, np.full(1, m), is_liq,
                adl_policy, ev, np.zeros(1),
            )  # fmt: skip
        if n_orders == 0:
            # Nothing to do until the path takes a listed account below its requirement: on
            # to that sub-step, or done when none is below it even at the tick's oracle.
            step = _next_order_step(
                i, coll, size, entry, idx, oracle_from, m_end, step, n_steps, mmr, floors,
                rates, cums, base_mmr,
            )  # fmt: skip
            continue
        sell_px, sell_liq, buy_px, buy_liq, got_sell, got_buy = _side_prices(
            flow_sell, flow_buy, paid_sell, paid_buy, mult, fee_rate, fund_share, taken_sell,
            taken_buy, m, book_px, depth, max_impact,
        )  # fmt: skip

        # 2. dYdX fills no order worse than its fillable price, Hyperliquid no market order
        #    worse than the account's bankruptcy price; the others are priced again on their
        #    own flow (one pass: a refused order is not re-admitted). Without deleveraging (no
        #    "adl" stage) a deficient account's order is not refused: nothing else could
        #    close it.
        if mode in (LIQ_DYDX_V4, LIQ_HYPERLIQUID):
            cut = False
            for o in range(n_orders):
                k = orders[o]
                if close[k] > 0.0 and (adl_on or not deficient[k]):
                    px = _order_price(side[k], paid_for[k], sell_px, sell_liq, buy_px, buy_liq)
                    if side[k] * (px - limit[k]) < 0.0:
                        refused[k] = True
                        cut = True
            if cut:
                flow_sell = 0.0
                flow_buy = 0.0
                paid_sell = 0.0
                paid_buy = 0.0
                for o in range(n_orders):
                    k = orders[o]
                    if close[k] > 0.0 and not refused[k]:
                        notional = close[k] * book_px
                        if side[k] > 0.0:
                            flow_sell += notional
                            paid_sell += notional if paid_for[k] else 0.0
                        else:
                            flow_buy += notional
                            paid_buy += notional if paid_for[k] else 0.0
                sell_px, sell_liq, buy_px, buy_liq, got_sell, got_buy = _side_prices(
                    flow_sell, flow_buy, paid_sell, paid_buy, mult, fee_rate, fund_share,
                    taken_sell, taken_buy, m, book_px, depth, max_impact,
                )  # fmt: skip
        taken_sell += got_sell
        taken_buy += got_buy
        flow_sell_total += flow_sell
        flow_buy_total += flow_buy

        # 3. Fills: a fee capped by the surplus (split with the liquidators), or under a
        #    takeover the whole surplus to the fund; a fill past bankruptcy is a shortfall.
        income_now = 0.0
        for o in range(n_orders):
            k = orders[o]
            price[k] = _order_price(side[k], paid_for[k], sell_px, sell_liq, buy_px, buy_liq)
            if close[k] > 0.0 and not refused[k]:
                a = idx[k]
                c = coll[i, a]
                q = size[i, a, 0]
                e = entry[i, a, 0]
                if takeover[k]:
                    raw = side[k] * (close[k] * price[k] - _bankruptcy_value(c, q, e, close[k]))
                    fee[k] = max(raw, 0.0)
                    bad[k] = max(-raw, 0.0)
                    got = fee[k]
                else:
                    delta = _insurance_fund_delta(c, q, e, close[k], price[k], fee_rate)
                    fee[k] = max(delta, 0.0)
                    bad[k] = max(-delta, 0.0)
                    got = fee[k] * fund_share
                    rewards += fee[k] * (1.0 - fund_share)
                income_now += got
                income_shorts += got if side[k] < 0.0 else 0.0
                fees += fee[k]
        income += income_now

        # 4. The fund: this sub-step's income first, then shortfalls in account order, never
        #    below zero. dYdX pays a fill whole or rejects it (the fund's balance, and at most
        #    $1M per subaccount per block; without deleveraging a deficient account's fill
        #    goes ahead unpaid, its loss to socialisation); the others pay what they can.
        if fund_on:
            available += income_now
        for o in range(n_orders):
            k = orders[o]
            if bad[k] > 0.0 and not adl_first:
                if mode == LIQ_DYDX_V4:
                    if not (bad[k] <= available and bad[k] <= DYDX_MAX_INSURANCE_LOST_USD):
                        if adl_on or not deficient[k]:
                            refused[k] = True
                            bad[k] = 0.0
                        continue
                    paid[k] = bad[k]
                else:
                    paid[k] = min(max(available, 0.0), bad[k])
                available -= paid[k]

        # 5. Auto-deleveraging of what the fund did not cover; under dydx_v4, of the entire
        #    position of a refused order whose account is below zero equity (dYdX deleverages
        #    only then; a refused order of a solvent account waits for the next block).
        if adl_on:
            any_need = False
            for o in range(n_orders):
                k = orders[o]
                if refused[k]:
                    if deficient[k]:
                        need[k] = abs(size[i, idx[k], 0])
                elif close[k] > 0.0:
                    covered = paid[k] / bad[k] if bad[k] > 0.0 else 1.0
                    need[k] = (1.0 - covered) * close[k]
                any_need = any_need or need[k] > 0.0
            if any_need:
                is_liq = _listed_mask(is_liq, n_acc, idx)
                _deleverage(
                    i, coll, size, entry, m, idx, is_liq, side, need, adl_close, ev, adl_policy
                )
        if adl_first:  # the fund pays what ADL could not place, in account order
            for o in range(n_orders):
                k = orders[o]
                if bad[k] > 0.0:
                    paid[k] = min(max(available, 0.0), bad[k] * (1.0 - adl_close[k] / close[k]))
                    available -= paid[k]

        # 6. Fills and deleveraged closes on the accounts; the book's side to the counterparty.
        #    A refused order of a deficient account: what ADL could not place closes in the
        #    book at the sub-step's price, its loss (the fund refused it) to socialisation.
        acc[_ACC_LOSS] = 0.0  # the loss to socialise and the counterparty's side: this sub-step's
        acc[_ACC_CP_BASE] = 0.0
        acc[_ACC_CP_QUOTE] = 0.0
        for o in range(n_orders):
            k = orders[o]
            if close[k] == 0.0:
                continue
            if refused[k] and not deficient[k]:
                continue  # a solvent account waits: the next block or tick tries again
            a = idx[k]
            c = coll[i, a]
            q = size[i, a, 0]
            e = entry[i, a, 0]
            s = side[k]
            if refused[k]:
                book_close = need[k] - adl_close[k]
                raw = s * (book_close * price[k] - _bankruptcy_value(c, q, e, book_close))
                book_bad = max(-raw, 0.0)
                fund_paid = 0.0
                socialized = book_bad
                below[k] = True
                if s > 0.0:
                    flow_sell_total += book_close * book_px
                else:
                    flow_buy_total += book_close * book_px
            else:
                book_close = close[k] - adl_close[k]
                # What ADL closed never reached the book: off the flow the impact model reads.
                if s > 0.0:
                    flow_sell_total = max(flow_sell_total - adl_close[k] * book_px, 0.0)
                else:
                    flow_buy_total = max(flow_buy_total - adl_close[k] * book_px, 0.0)
                book_bad = bad[k] * (1.0 - adl_close[k] / close[k])
                fund_paid = min(paid[k], book_bad)  # as in _waterfall_one
                available += paid[k] - fund_paid
                socialized = max(book_bad - fund_paid, 0.0)
                below[k] = below[k] or bad[k] > 0.0
            if adl_policy == ADL_HYPERLIQUID and adl_close[k] > 0.0 and not refused[k]:
                gain = s * (m - price[k])
                uncovered = bad[k] if adl_first else bad[k] - paid[k]
                overshoot += _mark_overshoot(adl_close[k], uncovered, gain) * m
            _settle_order(
                coll, size, i, a, c, q, e, s, book_close, adl_close[k], price[k], fee[k],
                fund_paid, book_bad, socialized, adl_policy, m, acc,
            )  # fmt: skip
        cp_size[i, 0] += acc[_ACC_CP_BASE]
        cp_cash[i] -= acc[_ACC_CP_QUOTE]
        loss = acc[_ACC_LOSS]

        # 7. Socialisation, then the exchange absorbs the rest.
        if loss > 0.0 and (stages & W_NO_SOCIALIZE) == 0:
            is_liq = _listed_mask(is_liq, n_acc, idx)
            charged = _socialize(i, coll, size, entry, m, is_liq, loss, socialization)
            charged_total += charged
            unrecovered_total += loss - charged
        elif loss > 0.0:
            unrecovered_total += loss
        step += 1

    liquidator_rewards[i] += rewards
    unrecovered[i] += unrecovered_total
    ev[i, EV_LIQUIDATION_SELL] = flow_sell_total
    ev[i, EV_LIQUIDATION_BUY] = flow_buy_total
    ev[i, EV_LIQUIDATOR_ABSORBED] = taken_sell + taken_buy
    ev[i, EV_SOCIALIZED_LOSS] = charged_total
    ev[i, EV_UNRECOVERED] = unrecovered_total
    n_below = 0
    for k in range(n):
        n_below += below[k]
    _record_orders(
        ev, i, acc[_ACC_VOLUME], fees, income, income_shorts, rewards, acc[_ACC_BAD_DEBT],
        acc[_ACC_SHORTFALL], overshoot, n_below,
    )  # fmt: skip


@jit(error_model="numpy")
def _any_below_requirement(i, coll, size, entry, idx, m, mmr, floors, rates, cums, base_mmr):  # type: ignore[no-untyped-def]
    """Whether a listed open account of exchange ``i`` is liquidatable at oracle ``m``."""
    for k in range(idx.shape[0]):
        a = idx[k]
        q = size[i, a, 0]
        if q != 0.0 and _liquidatable_1(
            coll[i, a], q, entry[i, a, 0], m, mmr, floors, rates, cums, base_mmr
        ):
            return True
    return False


@jit(error_model="numpy")
def _next_order_step(  # type: ignore[no-untyped-def]
    i, coll, size, entry, idx, oracle_from, m_end, step, n_steps, mmr, floors, rates, cums,
    base_mmr,
):  # fmt: skip
    """The first sub-step after ``step`` (none sent an order) at which one would; ``n_steps``: none.

    The path is monotone, and at ``step`` no listed account was below its requirement: a
    long (on a falling path) once below stays below further on, a short that was above stays
    above, and the other way round on a rising path. So whether any account is below is
    monotone along the rest of the path and bisection finds the first sub-step where one is,
    in ``log2(n_steps)`` passes over the listed accounts instead of one pass a sub-step: the
    sub-steps skipped would have sent nothing. None below at the tick's own oracle (always so
    without a path): the tick is done.
    """
    hi = n_steps - 1
    if step >= hi or not _any_below_requirement(
        i, coll, size, entry, idx, m_end, mmr, floors, rates, cums, base_mmr
    ):
        return n_steps
    lo = step + 1
    while lo < hi:
        mid = (lo + hi) // 2
        m = path_price(oracle_from, m_end, mid, n_steps)
        if _any_below_requirement(i, coll, size, entry, idx, m, mmr, floors, rates, cums, base_mmr):
            hi = mid
        else:
            lo = mid + 1
    return lo


@jit(error_model="numpy", inline="always")
def _mark_overshoot(adl_base, uncovered, gain_per_unit):  # type: ignore[no-untyped-def]
    """Base deleveraged at the mark beyond what closes ``uncovered`` (hyperliquid only).

    Each unit moved from the book's fill to the mark improves the bankrupt account by
    ``gain_per_unit = side x (mark - fill)``; the fewest units that cover the shortfall the
    fund left are ``uncovered / gain_per_unit`` (none suffice when the mark is no better than
    the fill). See :mod:`fundgym.envs.core.adl` for why other rules have no overshoot.
    """
    if not gain_per_unit > 0.0:
        return 0.0
    return max(adl_base - uncovered / gain_per_unit, 0.0)


@jit(error_model="numpy")
def _deleverage(i, coll, size, entry, m, idx, is_liq, side, need, adl_close, ev, adl_policy):  # type: ignore[no-untyped-def]
    """Offset ``need`` base units of the liquidated accounts against opposite positions.

    Per bankrupt side, the accounts of that side are one batch: each closes at its own
    bankruptcy price, the counterparties at the batch's size-weighted bankruptcy price, so
    the cash matches exactly (``hyperliquid``: everyone at the mark; the bankrupt accounts'
    difference to bankruptcy is settled by the caller). Counterparties are the accounts not
    being liquidated that stay solvent when closed whole at that price (dYdX's collateral
    check); the ``adl_policy`` rule of :mod:`fundgym.envs.core.adl` decides how much each
    closes (``bitmex``: greedily in BitMEX rank order, ties to the lower index). Writes the
    base units each liquidated account deleverages into ``adl_close`` (``<= need``: what
    exceeds the eligible opposite interest is left over for socialisation).
    """
    n_acc = size.shape[1]
    n = idx.shape[0]
    at_mark = adl_policy == ADL_HYPERLIQUID
    for bankrupt_side in (1.0, -1.0):
        need_total = 0.0
        value_total = 0.0
        for k in range(n):
            if side[k] == bankrupt_side and need[k] > 0.0:
                a = idx[k]
                need_total += need[k]
                value_total += _bankruptcy_value(coll[i, a], size[i, a, 0], entry[i, a, 0], need[k])
        if not need_total > 0.0:
            continue
        batch_price = m if at_mark else value_total / need_total
        # Eligible counterparties, compacted without branching (half the book is on the
        # wrong side, in no order a branch predictor could learn).
        cand = np.empty(n_acc, np.int64)
        n_cand = 0
        capacity = 0.0
        for a in range(n_acc):
            q = size[i, a, 0]
            equity_now = coll[i, a] + q * (m - entry[i, a, 0])
            haircut = abs(q) * (batch_price - m) * bankrupt_side
            ok = (
                (not is_liq[a])
                & (q * bankrupt_side < 0.0)
                & (equity_now - max(haircut, 0.0) >= 0.0)
            )
            cand[n_cand] = a
            n_cand += ok
            capacity += abs(q) * ok  # + 0.0 for the others: the sum is unchanged
        ratio = min(1.0, capacity / need_total)
        # The units and USD that change hands are summed from the closes made, each at its
        # account's bankruptcy value, as the caller settles them: scaling the totals by
        # ``ratio`` instead let a dust position (5e-324 units carrying -1 USD) whose share
        # underflowed to 0 keep its part of the quote, which the counterparties paid and
        # nobody received. With ``ratio`` 1 these are the totals above, bit for bit.
        amount = 0.0
        value_closed = 0.0
        for k in range(n):
            if side[k] == bankrupt_side and need[k] > 0.0:
                a = idx[k]
                adl_close[k] = need[k] * ratio
                amount += adl_close[k]
                value_closed += _bankruptcy_value(
                    coll[i, a], size[i, a, 0], entry[i, a, 0], adl_close[k]
                )
        # USD that changes hands: at the bankruptcy prices, or at the mark.
        quote = amount * m if at_mark else value_closed
        if amount > 0.0:
            close_counterparties(
                i,
                coll,
                size,
                entry,
                m,
                cand[:n_cand],
                amount,
                quote,
                batch_price,
                bankrupt_side,
                adl_policy,
            )
        ev[i, EV_ADL_VOLUME] += abs(quote)
        ev[i, EV_ADL_HAIRCUT] += bankrupt_side * (quote - amount * m)


@jit(error_model="numpy", inline="always")
def _off_book_flow(ev, i, side, adl_close, n, book_px):  # type: ignore[no-untyped-def]
    """Take the base ADL closed off exchange ``i``'s liquidation flow (``EV_LIQUIDATION_*``).

    The scan counted every order's whole size at the book price; the part deleveraged
    against counterparties never reached the book, so it must not move the price (the
    tick's permanent impact reads these columns). The fills of the book part stay priced on
    the whole flow: conservative, and decided before ADL could be known. Floored at zero
    against rounding when ADL took every order.
    """
    for k in range(n):
        if adl_close[k] > 0.0:
            col = EV_LIQUIDATION_SELL if side[k] > 0.0 else EV_LIQUIDATION_BUY
            ev[i, col] = max(ev[i, col] - adl_close[k] * book_px, 0.0)


@jit(error_model="numpy", inline="always")
def _bearer_weights(weight, size, entry, i, j, m, is_liq, socialization):  # type: ignore[no-untyped-def]
    """Write market ``j``'s socialisation weights into ``weight``; return their sum.

    Bearers: accounts not liquidated this tick whose position in the market is worth at least
    ``DUST_NOTIONAL_USD`` at ``m``. Weight: the position's positive unrealised PnL
    (``profit_haircut``) or its ``|size|`` (``drift``); others keep 0.
    """
    total = 0.0
    for a in range(size.shape[1]):
        q = size[i, a, j]
        if is_liq[a] or not abs(q) * m >= DUST_NOTIONAL_USD:
            continue
        w = abs(q) if socialization == SOCIALIZE_DRIFT else max(q * (m - entry[i, a, j]), 0.0)
        weight[a] = w
        total += w
    return total


@jit(error_model="numpy")
def _socialize(i, coll, size, entry, m, is_liq, loss, socialization):  # type: ignore[no-untyped-def]
    """Charge ``loss`` to exchange ``i``'s bearers; return the total charged (``<= loss``).

    Bearers: accounts not liquidated this tick whose position is worth at least
    ``DUST_NOTIONAL_USD`` at mark. Weights: positive unrealised PnL (``profit_haircut``, each
    charge also capped by that PnL) or ``|size|`` (``drift``). Each charge is capped at the
    bearer's equity (``max(equity, 0)``), so nobody is pushed below zero; what the caps hold
    back is not passed on to the others (the caller reports it as unrecovered).
    """
    n_acc = size.shape[1]
    weight = np.zeros(n_acc)
    total = _bearer_weights(weight, size, entry, i, 0, m, is_liq, socialization)
    if not total > 0.0:
        return 0.0
    charged = 0.0
    for a in range(n_acc):
        w = weight[a]
        if w == 0.0:
            continue
        # Normalise first: loss x w would underflow for small weights and lose the loss.
        charge = loss * (w / total)
        if socialization == SOCIALIZE_PROFIT_HAIRCUT:
            charge = min(charge, w)
        q = size[i, a, 0]
        charge = min(charge, max(coll[i, a] + q * (m - entry[i, a, 0]), 0.0))
        coll[i, a] -= charge
        charged += charge
    return charged


# ==== several markets: cross-margined accounts (the partial mode) ====


@jit(error_model="numpy")
def scan_cross_kernel(  # type: ignore[no-untyped-def]
    coll, size, entry, marks, mmr_mult, book, packed, floors, rates, cums, base, ev, flow,
):  # fmt: skip
    """:func:`scan_kernel` over ``M`` markets: liquidatable cross accounts and their legs' flow.

    An account is liquidatable when its requirement, summed over its positions (market
    ``j``'s scaled by ``mmr_mult[i, j]``), is positive and its cross equity is below it
    (:func:`_account_margin`). Its order in each market where it holds a position (a leg)
    closes :func:`_close_base` of that position, the minimum notional read at that market's
    mark. ``flow[i, j, 0]`` sums market ``j``'s sells (longs) at its book price
    ``book[i, j]``, ``flow[i, j, 1]`` its buys (``flow`` arrives zeroed);
    ``EV_LIQUIDATION_SELL`` / ``_BUY`` hold their sums over markets and
    ``EV_N_LIQUIDATIONS`` the accounts. ``liq_idx`` as :func:`scan_kernel`'s.
    """
    n_envs, n_acc, n_mk = size.shape
    total = 0
    liq_idx = np.empty((0, 0), np.int64)
    for i in range(n_envs):
        mmr = packed[i, P_MMR]
        max_frac = packed[i, P_MAX_LIQ_FRAC]
        min_notional = packed[i, P_MIN_LIQ_NOTIONAL]
        n = 0
        for a in range(n_acc):
            eq, req = _account_margin(
                coll, size, entry, marks, mmr_mult, i, a, mmr, floors, rates, cums, base[0]
            )
            if not (req > 0.0 and eq < req):
                continue
            if liq_idx.shape[0] == 0:
                liq_idx = np.empty((n_envs, n_acc), np.int64)
            liq_idx[i, n] = a
            n += 1
            for j in range(n_mk):
                q = size[i, a, j]
                if q == 0.0:
                    continue
                notional = _close_base(abs(q), max_frac, min_notional / marks[i, j]) * book[i, j]
                flow[i, j, 0 if q > 0.0 else 1] += notional
        sell = 0.0
        buy = 0.0
        for j in range(n_mk):
            sell += flow[i, j, 0]
            buy += flow[i, j, 1]
        ev[i, EV_N_LIQUIDATIONS] = n
        ev[i, EV_LIQUIDATION_SELL] = sell
        ev[i, EV_LIQUIDATION_BUY] = buy
        total += n
    return total, liq_idx


@jit(error_model="numpy")
def waterfall_cross_kernel(  # type: ignore[no-untyped-def]
    coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base, sell_px, buy_px,
    fund_available, fund_group, fund_cap, stages, socialization, adl_policy, book, depth,
    max_impact, cp_size, cp_cash, liquidator_rewards, unrecovered, ev, flow, market_paid,
    market_income, market_adl_volume, market_adl_haircut, market_socialized, market_unrecovered,
    liq_idx, transfer_cap, pot_lent,
):  # fmt: skip
    """:func:`waterfall_kernel`'s ``partial`` mode over ``M`` markets (cross-margined accounts).

    ``mmr_mult`` ``(E, M)`` scales each market's requirement, as in :func:`scan_cross_kernel`:
    the legs' collateral is apportioned by the scaled requirements (:func:`_leg_collateral`).

    ``sell_px`` / ``buy_px`` / ``book`` are ``(E, M)``: each market's fills are priced on its
    own flow. ``flow`` (``(E, M, 2)``, from :func:`scan_cross_kernel`) loses what ADL took off
    the book, market by market, and the ``EV_LIQUIDATION_*`` columns are set to its sums.
    ``depth`` ``(E, M)`` (USD per 1%) and ``max_impact`` ``(M,)`` are each market's
    square-root book, read only where outside liquidators are paid a share of the fee: they
    then take each market's capacity at that market's oracle
    (:mod:`fundgym.envs.core.liquidators`, :func:`_waterfall_cross_one`).

    The fund is ``P`` pots: ``fund_available`` ``(E, P)`` is what each can pay this tick
    before its fee income, ``fund_group`` ``(M,)`` the pot that pays (and earns) each market's
    legs (one pot, every market 0, for the shared fund; one per segment when segmented), and
    ``fund_cap`` ``(E, M)`` the most each market's legs may be paid this tick (``inf``: no
    cap). ``market_paid`` / ``market_income`` ``(E, M)`` (zeroed) receive what each market's
    legs were paid and the fund's share of their fees: the caller books them into the pots
    (the kernel never writes a fund). See :func:`_waterfall_cross_one` and
    :mod:`fundgym.envs.core.step` for the rules.

    ``transfer_cap`` ``(E,)`` caps what the pots may lend one another this tick
    (:func:`lend_between_pots`; 0 forbids it) and ``pot_lent`` ``(E, P)`` (zeroed) receives
    what each pot sent less what it received: the caller books it out of the pots.

    ``market_adl_volume`` / ``market_adl_haircut`` / ``market_socialized`` /
    ``market_unrecovered`` ``(E, M)`` (zeroed) receive each market's share of
    ``EV_ADL_VOLUME`` / ``EV_ADL_HAIRCUT`` / ``EV_SOCIALIZED_LOSS`` / ``EV_UNRECOVERED``,
    written where the market's amount is known (:func:`_deleverage_market`, step 5 of
    :func:`_waterfall_cross_one`): each row sums to its column, to rounding of the sum's
    order. They are reports only; nothing in the kernel reads them back.
    """
    for i in range(size.shape[0]):
        if ev[i, EV_N_LIQUIDATIONS] > 0.0:
            _waterfall_cross_one(
                i, coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base[0],
                sell_px[i], buy_px[i], fund_available[i], fund_group, fund_cap[i], stages,
                socialization, adl_policy, book[i], depth[i], max_impact, cp_size, cp_cash,
                liquidator_rewards,
                unrecovered, ev, flow, market_paid[i], market_income[i], market_adl_volume[i],
                market_adl_haircut[i], market_socialized[i], market_unrecovered[i],
                liq_idx[i, : int(ev[i, EV_N_LIQUIDATIONS])], transfer_cap[i : i + 1].copy(),
                pot_lent[i],
            )  # fmt: skip


@jit(error_model="numpy", inline="always")
def _pay_from_pots(paid, owed, leg_j, group, cap_left, available, spent, n):  # type: ignore[no-untyped-def]
    """Pay ``owed[o]`` in leg order, each leg from its market's pot, capped per market.

    Leg ``o`` in market ``j`` asks ``min(owed[o], what j's cap has left)`` of pot
    ``group[j]``, which pays it from ``available[group[j]]``, never below zero. A pot counts
    what its legs asked (``spent``, zeroed by the caller), so a shortfall it could not pay in
    full exhausts it for the legs after; with one pot and no cap (``inf``) this is
    :func:`_pay_in_order`, bit for bit. ``cap_left`` (a copy of the caps) loses what each
    market was paid. What a cap or an empty pot refuses stays uncovered (ADL,
    socialisation, the exchange), unless :func:`lend_between_pots` covers it.
    """
    for o in range(n):
        j = leg_j[o]
        g = group[j]
        ask = min(owed[o], cap_left[j])
        paid[o] = min(max(available[g] - spent[g], 0.0), ask)
        spent[g] += ask
        cap_left[j] -= paid[o]


@jit(error_model="numpy", inline="always")
def lend_between_pots(paid, owed, leg_j, group, cap_left, available, spent, transfer_left, lent, n):  # type: ignore[no-untyped-def]
    """Cover what each leg's own pot could not from the other pots, within a transfer cap.

    After every pot has paid its own legs (:func:`_pay_from_pots`), leg ``o`` still short
    (``owed[o] - paid[o]``, within what its market's cap has left) draws from the other pots in
    pot order, each at most what it has left (``available - spent``), and all of them at most
    ``transfer_left[0]`` this tick (a segmented fund's cap on transfers between segments; 0
    forbids them, ``inf`` pools the segments for shortfalls). ``lent[h]`` gains what pot
    ``h`` sent and loses what it received, so the caller books ``segment -= lent``. With one
    pot, or a cap of 0, nothing moves.
    """
    n_pots = available.shape[0]
    if n_pots < 2 or not transfer_left[0] > 0.0:
        return
    for o in range(n):
        j = leg_j[o]
        short = min(owed[o] - paid[o], cap_left[j])
        if not short > 0.0:
            continue
        g = group[j]
        for h in range(n_pots):
            if h == g:
                continue
            take = min(max(available[h] - spent[h], 0.0), short, transfer_left[0])
            if take > 0.0:
                paid[o] += take
                spent[h] += take
                lent[h] += take
                lent[g] -= take
                cap_left[j] -= take
                transfer_left[0] -= take
                short -= take
            if not (short > 0.0 and transfer_left[0] > 0.0):
                break


@jit(error_model="numpy")
def _leg_collateral(  # type: ignore[no-untyped-def]
    coll, size, entry, marks, mmr_mult, i, a, j, req, mmr, floors, rates, cums, base_mmr,
):  # fmt: skip
    """The collateral account ``a``'s leg in market ``j`` is bankrupt against (dYdX v4).

    dYdX's bankruptcy quote for closing ``delta`` of one position of a multi-position
    subaccount is ``-DNNV - TNC x |DMMR| / TMMR``: the account's equity is apportioned to the
    position by its share ``w = req_j / req`` of the maintenance requirement (``req_j``
    scaled by ``mmr_mult[i, j]``, ``req`` the scaled sum :func:`_account_margin` returns). As a
    one-position account that equity ``w x eq`` is collateral ``c_j = w x eq - u_j`` (``u_j``
    the leg's unrealised PnL), written ``w x c + (w x U_other - (1 - w) x u_j)`` so that an
    account with one open position gets exactly its collateral (``w = 1``, the others zero).
    The legs' ``c_j`` sum to the account's collateral, so closing every leg whole at its
    bankruptcy price (:func:`_bankruptcy_value` with ``c_j``) leaves zero equity.
    """
    q = size[i, a, j]
    m = marks[i, j]
    w = requirement(abs(q) * m, mmr, floors, rates, cums, base_mmr) * mmr_mult[i, j] / req
    other = 0.0
    for k in range(size.shape[2]):
        if k != j:
            other += size[i, a, k] * (marks[i, k] - entry[i, a, k])
    return w * coll[i, a] + (w * other - (1.0 - w) * (q * (m - entry[i, a, j])))


@jit(error_model="numpy", inline="always")
def settle_leg(  # type: ignore[no-untyped-def]
    coll, size, entry, cp_size, i, a, j, s, m, alloc, book_close, adl_close, price, fee,
    fund_paid, book_bad, socialized, adl_policy, uncovered, with_overshoot,
):  # fmt: skip
    """Book one leg's fill and deleveraged close on account ``a`` and the counterparty's size.

    The leg (side ``s``, market ``j`` at oracle ``m``, apportioned collateral ``alloc``)
    closes ``book_close`` in the book at ``price`` and ``adl_close`` against counterparties
    at its bankruptcy price, or at the mark under Hyperliquid's rule, whose shortfall against
    the bankruptcy price joins the leg's bad debt and its socialised loss. The account's
    collateral gains the fills' PnL less the fee, plus what the fund paid and what was
    socialised for it; ``cp_size[i, j]`` takes the book's side. Returns ``(book_bad,
    socialized, adl_quote, overshoot)``: the leg's bad debt and socialised loss after the
    mark's shortfall, the deleveraged close's quote, and (``with_overshoot``) the ADL
    overshoot against ``uncovered`` (:func:`_mark_overshoot`). One home for the partial and
    the venue waterfalls across markets.
    """
    q = size[i, a, j]
    e = entry[i, a, j]
    adl_quote = _bankruptcy_value(alloc, q, e, adl_close)
    overshoot = 0.0
    if adl_policy == ADL_HYPERLIQUID and adl_close > 0.0:
        if with_overshoot:
            overshoot = _mark_overshoot(adl_close, uncovered, s * (m - price)) * m
        at_mark = adl_close * m
        deficit = max(s * (adl_quote - at_mark), 0.0)
        book_bad += deficit
        socialized += deficit
        adl_quote = at_mark
    coll[i, a] = (
        coll[i, a]
        + s * book_close * (price - e)
        + s * (adl_quote - adl_close * e)
        - fee
        + fund_paid
        + socialized
    )
    size[i, a, j] = q - s * (book_close + adl_close)
    cp_size[i, j] += s * book_close
    return book_bad, socialized, adl_quote, overshoot


@jit(error_model="numpy")
def _waterfall_cross_one(  # type: ignore[no-untyped-def]
    i, coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base_mmr, sell_px, buy_px,
    fund_available, fund_group, fund_cap, stages, socialization, adl_policy, book, depth,
    max_impact, cp_size, cp_cash, liquidator_rewards, unrecovered, ev, flow, market_paid,
    market_income, market_adl_volume, market_adl_haircut, market_socialized, market_unrecovered,
    idx, transfer_left, lent,
):  # fmt: skip
    """The waterfall of exchange ``i`` on its liquidatable cross accounts ``idx`` (in order).

    One order (a leg) per listed account and market where it holds a position, in account
    order and, within an account, market order. Each leg is :func:`_waterfall_one`'s order
    with the leg's apportioned collateral (:func:`_leg_collateral`) in place of the
    account's: its fee, shortfall and deleveraged part are priced against the leg's
    bankruptcy price. The fund pays the legs' shortfalls in leg order, each from its
    market's pot (``fund_group``) and within its market's cap (:func:`_pay_from_pots`), the
    other pots lending what it could not within ``transfer_left`` (:func:`lend_between_pots`); ADL
    runs per market (:func:`_deleverage_market`); socialisation per market
    (:func:`_socialize_market`).

    **Outside liquidators** (where their share of the fee buys them capacity,
    :func:`~fundgym.envs.core.liquidators.liquidators_paid`): in each market, per side, they
    take the first ``capacity`` of the orders they are paid for at that market's oracle, out
    of that market's book (``depth[j]``, its oracle gap), pro rata over those orders, as in
    one market (:func:`_side_prices`); the rest of the market's flow walks its book. They are
    paid for the legs of accounts solvent at the oracles (cross equity above zero): a
    bankrupt account's fee is zero. Each market's capacity is its own: a thin alt's book
    gives its liquidators little room, whatever BTC's gives.

    The rows ``market_paid`` .. ``market_unrecovered`` (``(M,)``, exchange ``i``'s) gain
    each market's part of the tick's fund payments, fee income, ADL volume and haircut,
    socialised charge and unrecovered loss, where each is decided: the contagion report
    reads which market's legs the fund, the counterparties, the bearers and the exchange
    paid for.
    """
    n_acc = size.shape[1]
    n_mk = size.shape[2]
    n = idx.shape[0]
    mmr = packed[i, P_MMR]
    max_frac = packed[i, P_MAX_LIQ_FRAC]
    min_notional = packed[i, P_MIN_LIQ_NOTIONAL]
    fee_rate = packed[i, P_LIQ_FEE]
    fund_share = packed[i, P_LIQ_FUND_SHARE]
    mult = packed[i, P_LIQUIDATOR_MULT]
    is_liq = np.zeros(0, np.bool_)

    # 1. The legs and their orders, each priced by its market's fill for its side (and, where
    #    liquidators are paid, at their average in the orders they take part of).
    n_legs = 0
    for k in range(n):
        for j in range(n_mk):
            n_legs += size[i, idx[k], j] != 0.0
    leg_k = np.empty(n_legs, np.int64)  # position in idx
    leg_j = np.empty(n_legs, np.int64)  # market
    alloc = np.empty(n_legs)
    side = np.empty(n_legs)
    close = np.empty(n_legs)
    price = np.empty(n_legs)
    fee = np.empty(n_legs)
    bad = np.empty(n_legs)
    paid_for = np.zeros(n_legs, np.bool_)  # liquidators earn the leg's fee: account solvent
    income = 0.0
    income_shorts = 0.0
    rewards = 0.0
    fees = 0.0
    o = 0
    for k in range(n):
        a = idx[k]
        eq, req = _account_margin(
            coll, size, entry, marks, mmr_mult, i, a, mmr, floors, rates, cums, base_mmr
        )
        for j in range(n_mk):
            q = size[i, a, j]
            if q == 0.0:
                continue
            m = marks[i, j]
            leg_k[o] = k
            leg_j[o] = j
            alloc[o] = _leg_collateral(
                coll, size, entry, marks, mmr_mult, i, a, j, req, mmr, floors, rates, cums,
                base_mmr,
            )  # fmt: skip
            side[o] = 1.0 if q > 0.0 else -1.0
            close[o] = _close_base(abs(q), max_frac, min_notional / m)
            paid_for[o] = eq > 0.0
            o += 1
    sell_liq = sell_px
    buy_liq = buy_px
    if liquidators_paid(fee_rate, fund_share, mult):  # each market's capacity at its oracle
        sell_px = sell_px.copy()
        buy_px = buy_px.copy()
        sell_liq = sell_px.copy()
        buy_liq = buy_px.copy()
        paid_sell = np.zeros(n_mk)
        paid_buy = np.zeros(n_mk)
        for o in range(n_legs):
            if paid_for[o]:
                j = leg_j[o]
                if side[o] > 0.0:
                    paid_sell[j] += close[o] * book[j]
                else:
                    paid_buy[j] += close[o] * book[j]
        absorbed = 0.0
        for j in range(n_mk):
            sell_px[j], sell_liq[j], buy_px[j], buy_liq[j], got_sell, got_buy = _side_prices(
                flow[i, j, 0], flow[i, j, 1], paid_sell[j], paid_buy[j], mult, fee_rate,
                fund_share, 0.0, 0.0, marks[i, j], book[j], depth[j], max_impact[j],
            )  # fmt: skip
            absorbed += got_sell + got_buy
        ev[i, EV_LIQUIDATOR_ABSORBED] = absorbed
    for o in range(n_legs):
        a = idx[leg_k[o]]
        j = leg_j[o]
        q = size[i, a, j]
        if paid_for[o]:
            price[o] = sell_liq[j] if q > 0.0 else buy_liq[j]
        else:
            price[o] = sell_px[j] if q > 0.0 else buy_px[j]
        delta = _insurance_fund_delta(alloc[o], q, entry[i, a, j], close[o], price[o], fee_rate)
        fee[o] = max(delta, 0.0)
        bad[o] = max(-delta, 0.0)
        income += fee[o] * fund_share
        income_shorts += fee[o] * fund_share if q < 0.0 else 0.0
        rewards += fee[o] * (1.0 - fund_share)
        fees += fee[o]
        market_income[j] += fee[o] * fund_share

    # 2. The fund: each pot's fee income first, then each leg's shortfall in leg order from
    #    its market's pot, within its market's cap, never below zero.
    adl_first = (stages & W_ADL_FIRST) != 0
    n_pots = fund_available.shape[0]
    pot_income = np.zeros(n_pots)
    for o in range(n_legs):
        pot_income[fund_group[leg_j[o]]] += fee[o] * fund_share
    available = np.zeros(n_pots)
    if (stages & W_NO_FUND) == 0:
        for g in range(n_pots):
            available[g] = fund_available[g] + pot_income[g]
    paid = np.zeros(n_legs)
    spent = np.zeros(n_pots)
    cap_left = fund_cap.copy()
    if not adl_first:
        _pay_from_pots(paid, bad, leg_j, fund_group, cap_left, available, spent, n_legs)
        lend_between_pots(
            paid, bad, leg_j, fund_group, cap_left, available, spent, transfer_left, lent, n_legs
        )

    # 3. ADL of what the fund did not cover, market by market, against that market's
    #    opposite positions; its base leaves that market's book flow.
    adl_close = np.zeros(n_legs)
    if (stages & W_NO_ADL) == 0:
        need = np.zeros(n_legs)
        if _uncovered_base(need, paid, bad, close, n_legs):
            is_liq = _listed_mask(is_liq, n_acc, idx)
            for j in range(n_mk):
                _deleverage_market(
                    i, j, coll, size, entry, marks, idx, leg_k, leg_j, alloc, is_liq, side,
                    need, adl_close, ev, adl_policy, market_adl_volume, market_adl_haircut,
                )  # fmt: skip
            for o in range(n_legs):
                if adl_close[o] > 0.0:
                    j = leg_j[o]
                    col = 0 if side[o] > 0.0 else 1
                    flow[i, j, col] = max(flow[i, j, col] - adl_close[o] * book[j], 0.0)
    if adl_first:
        left = np.empty(n_legs)
        for o in range(n_legs):
            left[o] = bad[o] * (1.0 - adl_close[o] / close[o]) if close[o] > 0.0 else bad[o]
        _pay_from_pots(paid, left, leg_j, fund_group, cap_left, available, spent, n_legs)
        lend_between_pots(
            paid, left, leg_j, fund_group, cap_left, available, spent, transfer_left, lent, n_legs
        )

    # 4. Fills and deleveraged closes on the legs; each market's book side to the
    #    counterparty; what neither the fund nor ADL covered is that market's loss.
    loss_m = np.zeros(n_mk)
    cp_quote = 0.0
    volume = 0.0
    bad_debt = 0.0
    shortfall = 0.0
    overshoot = 0.0
    below = np.zeros(n, np.bool_)
    for o in range(n_legs):
        a = idx[leg_k[o]]
        j = leg_j[o]
        m = marks[i, j]
        s = side[o]
        book_close = close[o] - adl_close[o]
        adl_share = adl_close[o] / close[o] if close[o] > 0.0 else 0.0
        book_bad = bad[o] * (1.0 - adl_share)
        fund_paid = min(paid[o], book_bad)
        socialized = max(book_bad - fund_paid, 0.0)
        uncovered = bad[o] if adl_first else bad[o] - paid[o]
        book_bad, socialized, adl_quote, over = settle_leg(
            coll, size, entry, cp_size, i, a, j, s, m, alloc[o], book_close, adl_close[o],
            price[o], fee[o], fund_paid, book_bad, socialized, adl_policy, uncovered, True,
        )  # fmt: skip
        overshoot += over
        cp_quote += s * book_close * price[o]
        volume += book_close * price[o] + abs(adl_quote)
        bad_debt += book_bad
        shortfall += fund_paid
        market_paid[j] += fund_paid
        loss_m[j] += socialized
        below[leg_k[o]] = below[leg_k[o]] or bad[o] > 0.0
    cp_cash[i] -= cp_quote
    liquidator_rewards[i] += rewards

    sell = 0.0
    buy = 0.0
    for j in range(n_mk):
        sell += flow[i, j, 0]
        buy += flow[i, j, 1]
    n_below = 0
    for k in range(n):
        n_below += below[k]
    ev[i, EV_LIQUIDATION_SELL] = sell
    ev[i, EV_LIQUIDATION_BUY] = buy
    _record_orders(
        ev, i, volume, fees, income, income_shorts, rewards, bad_debt, shortfall, overshoot, n_below
    )

    # 5. Socialisation per market, then 6. the exchange absorbs the rest; each market's
    #    part of both is recorded as it is decided.
    charged, lost, is_liq = socialize_markets(
        i, coll, size, entry, marks, is_liq, idx, loss_m, (stages & W_NO_SOCIALIZE) == 0,
        socialization, market_socialized, market_unrecovered,
    )  # fmt: skip
    ev[i, EV_SOCIALIZED_LOSS] = charged
    ev[i, EV_UNRECOVERED] = lost
    unrecovered[i] += lost


@jit(error_model="numpy", inline="always")
def socialize_markets(  # type: ignore[no-untyped-def]
    i, coll, size, entry, marks, is_liq, idx, loss_m, social_on, socialization,
    market_socialized, market_unrecovered,
):  # fmt: skip
    """Each market's loss ``loss_m[j]`` to its bearers, the rest to the exchange; the totals.

    :func:`_socialize_market` per market with a loss (when ``social_on``); what it could not
    charge, and every loss when socialisation is off, is the exchange's. Each market's part of
    both goes to ``market_socialized`` / ``market_unrecovered`` (``(M,)``) as it is decided.
    Returns ``(charged, lost, is_liq)`` (the listed mask, built on first use). One home for the
    partial and the venue waterfalls across markets.
    """
    charged = 0.0
    lost = 0.0
    n_acc = size.shape[1]
    for j in range(size.shape[2]):
        if loss_m[j] > 0.0 and social_on:
            is_liq = _listed_mask(is_liq, n_acc, idx)
            got = _socialize_market(
                i, j, coll, size, entry, marks, is_liq, loss_m[j], socialization
            )
            charged += got
            left = loss_m[j] - got
            lost += left
            market_socialized[j] += got
            market_unrecovered[j] += left
        else:
            lost += loss_m[j]
            market_unrecovered[j] += loss_m[j]
    return charged, lost, is_liq


@jit(error_model="numpy", inline="always")
def _cross_equity(coll, size, entry, marks, i, a):  # type: ignore[no-untyped-def]
    """Account ``a``'s equity over every market: collateral plus unrealised PnL."""
    eq = coll[i, a]
    for j in range(size.shape[2]):
        eq += size[i, a, j] * (marks[i, j] - entry[i, a, j])
    return eq


@jit(error_model="numpy")
def _deleverage_market(  # type: ignore[no-untyped-def]
    i, j, coll, size, entry, marks, idx, leg_k, leg_j, alloc, is_liq, side, need, adl_close, ev,
    adl_policy, market_adl_volume, market_adl_haircut,
):  # fmt: skip
    """:func:`_deleverage` in market ``j``: its legs' ``need`` against its opposite positions.

    Per bankrupt side, market ``j``'s legs are one batch: each closes at its own bankruptcy
    price (its apportioned collateral ``alloc``), the counterparties at the batch's
    size-weighted bankruptcy price (``hyperliquid``: the market's mark). Counterparties are
    accounts not being liquidated, with an opposite position in market ``j``, whose whole
    cross account stays at or above zero equity when that position closes whole at that
    price; the ``adl_policy`` rule ranks and sizes them on their cross equity
    (:func:`~fundgym.envs.core.adl.close_market_counterparties`).

    The volume and haircut go to the exchange's ``EV_ADL_VOLUME`` / ``EV_ADL_HAIRCUT`` and to
    market ``j``'s entry of the rows ``market_adl_volume`` / ``market_adl_haircut``
    (``(M,)``), the same two numbers added to both.
    """
    n_acc = size.shape[1]
    n_mk = size.shape[2]
    m = marks[i, j]
    at_mark = adl_policy == ADL_HYPERLIQUID
    other = np.empty(0)
    for bankrupt_side in (1.0, -1.0):
        need_total = 0.0
        value_total = 0.0
        for o in range(leg_j.shape[0]):
            if leg_j[o] == j and side[o] == bankrupt_side and need[o] > 0.0:
                a = idx[leg_k[o]]
                need_total += need[o]
                value_total += _bankruptcy_value(alloc[o], size[i, a, j], entry[i, a, j], need[o])
        if not need_total > 0.0:
            continue
        batch_price = m if at_mark else value_total / need_total
        if other.shape[0] == 0:  # the other markets' PnL: ADL in market j does not change it
            other = np.zeros(n_acc)
            for a in range(n_acc):
                for k in range(n_mk):
                    if k != j:
                        other[a] += size[i, a, k] * (marks[i, k] - entry[i, a, k])
        cand = np.empty(n_acc, np.int64)
        n_cand = 0
        capacity = 0.0
        for a in range(n_acc):
            q = size[i, a, j]
            equity_now = coll[i, a] + other[a] + q * (m - entry[i, a, j])
            haircut = abs(q) * (batch_price - m) * bankrupt_side
            ok = (
                (not is_liq[a])
                & (q * bankrupt_side < 0.0)
                & (equity_now - max(haircut, 0.0) >= 0.0)
            )
            cand[n_cand] = a
            n_cand += ok
            capacity += abs(q) * ok
        ratio = min(1.0, capacity / need_total)
        # Summed from the closes made, as :func:`_deleverage` does (a dust leg's share).
        amount = 0.0
        value_closed = 0.0
        for o in range(leg_j.shape[0]):
            if leg_j[o] == j and side[o] == bankrupt_side and need[o] > 0.0:
                a = idx[leg_k[o]]
                adl_close[o] = need[o] * ratio
                amount += adl_close[o]
                value_closed += _bankruptcy_value(
                    alloc[o], size[i, a, j], entry[i, a, j], adl_close[o]
                )
        quote = amount * m if at_mark else value_closed
        if amount > 0.0:
            close_market_counterparties(
                i, j, coll, other, size, entry, m, cand[:n_cand], amount, quote, batch_price,
                bankrupt_side, adl_policy,
            )  # fmt: skip
        volume = abs(quote)
        haircut_usd = bankrupt_side * (quote - amount * m)
        ev[i, EV_ADL_VOLUME] += volume
        ev[i, EV_ADL_HAIRCUT] += haircut_usd
        market_adl_volume[j] += volume
        market_adl_haircut[j] += haircut_usd


@jit(error_model="numpy")
def _socialize_market(i, j, coll, size, entry, marks, is_liq, loss, socialization):  # type: ignore[no-untyped-def]
    """:func:`_socialize` of market ``j``'s loss to market ``j``'s bearers; return the charge.

    Bearers and weights are the market's (a position worth at least ``DUST_NOTIONAL_USD``;
    its positive unrealised PnL or its ``|size|``), as Drift charges a market's loss through
    that market's funding index; each charge is capped at the bearer's whole cross-account
    equity (``max(equity, 0)``), which it comes out of.
    """
    n_acc = size.shape[1]
    m = marks[i, j]
    weight = np.zeros(n_acc)
    total = _bearer_weights(weight, size, entry, i, j, m, is_liq, socialization)
    if not total > 0.0:
        return 0.0
    charged = 0.0
    for a in range(n_acc):
        w = weight[a]
        if w == 0.0:
            continue
        charge = loss * (w / total)
        if socialization == SOCIALIZE_PROFIT_HAIRCUT:
            charge = min(charge, w)
        charge = min(charge, max(_cross_equity(coll, size, entry, marks, i, a), 0.0))
        coll[i, a] -= charge
        charged += charge
    return charged
