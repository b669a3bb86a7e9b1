"""The whole tick loop, compiled: ``n`` ticks of a batch of exchanges in one call.

:func:`fundgym.envs.simulator.tick` (with :class:`fundgym.envs.market.market.Market` around it) is
the numpy
reference of one tick and documents the order of operations; :func:`advance_serial` and
:func:`advance_parallel` run that order ``n`` times per exchange without returning to Python:

1. market prices (:func:`fundgym.envs.market.kernels.prices_cols`) and the simulator's drivers: the
   one-day EWMA volatility, the stressed flag, the funding of the tick, the precursors; the
   mark cap (mark and oracle at most ``mark_cap_mult`` x the mark's 8-hour average) and the
   scenario's venue events of the tick (:mod:`fundgym.envs.core.venue_events`: a settlement
   closes every position at its window's average index, its debt owed to the fund in 5.);
2. the trader population when its clock is due and no outage or closed market stops it
   (:func:`fundgym.envs.traders.kernels.population_step_exchange`, with the tick's halts,
   leverage cap and open-interest cap), then the fund receives its share of the trading fees;
3. the fund accrues (:func:`fundgym.envs.fund.kernels.accrue_one`), its outside gain booked as a
   deposit (the reference accrues after funding: the two touch disjoint state);
4. funding (:func:`fundgym.envs.core.trading.funding_row`, the order of
   :func:`~fundgym.envs.core.trading._funding_kernel`), the attacker's withdrawal
   against its unrealised PnL, then (unless an outage stops the engine or the market is
   closed) the margin engine's scan:
   a branch-free count (:func:`fundgym.envs.core.kernels.count_liquidatable`; without margin
   tiers :func:`~fundgym.envs.core.kernels.count_liquidatable_flat_row`), and only when it
   finds some, the list of liquidatable accounts, into a buffer allocated once per call;
5. square-root-book fill prices, the waterfall (:mod:`fundgym.envs.core.kernels`, under the
   ``liquidation_mode`` of :mod:`fundgym.envs.core.liquidation`: the venue modes price each
   sub-step of the tick themselves, on the path from the previous tick's oracle and last
   price, ``D_LAST_ORACLE`` / ``D_LAST_BOOK``, to this tick's), then the fund's settlement
   (fee income received, shortfall paid from its buckets), and the venue's top-up of a fund
   the tick's bad debt exhausted (:func:`fundgym.envs.fund.kernels.inject_if_exhausted_one`);
6. the permanent impact of the tick's liquidation flow and the clocks; the tick's series
   (``S_*`` columns: prices, open interest, fund value, the ledger check).

The existing kernels are called on one-row slices of the batch arrays (``a[e:e + 1]``, a view),
so every rule lives once. The loop runs over exchanges outside and ticks inside: exchanges do
not interact within a call, so the order changes nothing, one exchange's accounts stay in cache
across its ticks, and :func:`advance_parallel` can hand exchanges to threads (``prange``) with
results bit-identical to :func:`advance_serial`: both run :func:`_advance_exchanges`, the
serial tick on every exchange in one call, the parallel one on each exchange alone.

Kernels are declared with :func:`fundgym.envs.jit.jit`: this module links in kernels from other
files,
which numba's own per-file cache would not notice changing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from fundgym.envs.core.events import (
    EV_ATTACKER_WITHDRAWN,
    EV_BAD_DEBT,
    EV_FLOORED_FUND_FEE_INCOME,
    EV_FLOORED_SHORT_LIQUIDATION,
    EV_FUND_FEE_INCOME,
    EV_FUND_TRADING_FEE_INCOME,
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_MARKET_CLOSED,
    EV_N_LIQUIDATIONS,
    EV_SETTLEMENT_PRICE,
    EV_SHORTFALL,
    EV_TRADING_FEES,
    EV_UNRECOVERED,
)
from fundgym.envs.core.impact import SqrtImpact, book_price
from fundgym.envs.core.kernels import (
    _collect_liquidatable,
    count_liquidatable,
    count_liquidatable_flat_row,
    order_flow,
    waterfall_kernel,
)
from fundgym.envs.core.liquidation import LIQ_PARTIAL
from fundgym.envs.core.params import P_IMR, P_MARK_CAP_MULT, P_MMR, P_OI_CAP_FRAC, P_UPNL_HAIRCUT
from fundgym.envs.core.trading import funding_row
from fundgym.envs.core.vault import (
    V_ACTIVE,
    V_CASH,
    V_SIZE,
    vault_over_loss_limit_1,
    vault_tick_end_limit,
    vault_unwind_one,
)
from fundgym.envs.core.venue_events import (
    ATTACKER_SLOT,
    VF_ATTACKER,
    VF_CLOSED,
    VF_ENGINE_OFF,
    VF_OUTAGE,
    VF_SETTLE,
    VF_SETTLE_WINDOW,
    VF_WITHDRAWAL_HALT,
    attacker_withdrawal,
    cap_mark,
    halt_mask,
    settle_exchange,
)
from fundgym.envs.fund.kernels import (
    F_EXTERNAL_PNL,
    F_MARK_PRICE,
    F_MARK_VOL,
    accrue_one,
    inject_if_exhausted_one,
    liquid_usd,
    pay_one,
    receive_one,
    value_usd,
)
from fundgym.envs.jit import jit
from fundgym.envs.market.kernels import (
    PATH_BASIS,
    PATH_DEPTH_MULT,
    PATH_INDEX,
    PATH_MANIPULATION,
    PATH_PRECURSOR,
    PATH_WICK,
    advance_one,
    prices_cols,
)
from fundgym.envs.observation import book_stats_exchange, book_work
from fundgym.envs.traders.kernels import market_response, market_stress, population_step_exchange

# Rows of the simulator's per-exchange values (ExchangeSimulator.drivers). D_LAST_ORACLE and
# D_LAST_BOOK are the previous tick's oracle and last price, where the venue liquidation modes'
# intra-tick path starts (0 at reset: no previous tick).
D_VOL_ANNUAL, D_LAST_INDEX, D_LAST_DEPTH_MULT, D_LAST_DEPTH_USD = 0, 1, 2, 3
D_OI_BUILD, D_LEVERAGE_BUILD, D_LONG_SKEW, D_FUNDING_INTERVAL_MIN = 4, 5, 6, 7
D_LAST_ORACLE, D_LAST_BOOK = 8, 9
# The traders' memory of the market (fundgym.envs.traders.kernels.market_stress): the
# scenario's usual volatility and the recent peak of the index (PEAK_MEMORY_MINUTES).
D_BASE_VOL, D_PEAK_INDEX = 10, 11
# Venue events and defences (fundgym.envs.core.venue_events): the mark's 8-hour average and
# its weight per tick, the settlement window's index sum and ticks, the starting open interest,
# and what the attacker may still take (its scenario's lendable_usd less what it took; inf).
D_MARK_AVG, D_MARK_AVG_WEIGHT, D_SETTLE_SUM, D_SETTLE_N, D_START_OI = 12, 13, 14, 15, 16
D_ATTACKER_LEFT = 17
D_FIRST_SLOT = 18  # slots below it hold scripted accounts the population leaves alone
N_DRIVERS = 19
PEAK_MEMORY_MINUTES = 1440.0
"""The recent peak the traders measure their drawdown from forgets at this pace: each tick it
moves ``tick / PEAK_MEMORY_MINUTES`` of the way down to the index (never below it)."""

# Columns of the per-tick series.
S_INDEX, S_LAST, S_MARK, S_ORACLE, S_DEPTH, S_FUNDING_RATE = range(6)
S_OPEN_INTEREST, S_FUND_USD, S_N_OPEN, S_FUNDING_PAID, S_LEDGER_ERROR = range(6, 11)
N_SERIES = 11

#: Largest average slippage of a liquidation buy: :class:`SqrtImpact`'s default, whose
#: ``fill_prices`` the tick computes with :func:`fundgym.envs.core.impact.book_price`.
MAX_IMPACT_FRAC = float(SqrtImpact.max_impact_frac)
MINUTES_PER_YEAR_VOL = 525_600.0
"""Minutes in the year the volatility estimate annualises with."""


@jit(error_model="numpy", inline="always")
def _gross_size(size, e):  # type: ignore[no-untyped-def]
    """Exchange ``e``'s ``sum |size|`` and open accounts (one market), in four running sums.

    One running sum waits on its previous add every account; four interleaved ones let the
    adds overlap (about 4x faster, the per-tick open-interest series' whole cost). The total
    differs from a slot-order sum only in rounding: the terms are all >= 0, so by at most a
    few ulps (the tests compare the series with the reference at rtol 1e-12).
    """
    n_acc = size.shape[1]
    g0 = g1 = g2 = g3 = 0.0
    n_open = 0
    a = 0
    while a + 4 <= n_acc:
        q0 = size[e, a, 0]
        q1 = size[e, a + 1, 0]
        q2 = size[e, a + 2, 0]
        q3 = size[e, a + 3, 0]
        g0 += abs(q0)
        g1 += abs(q1)
        g2 += abs(q2)
        g3 += abs(q3)
        n_open += (q0 != 0.0) + (q1 != 0.0) + (q2 != 0.0) + (q3 != 0.0)
        a += 4
    while a < n_acc:
        q0 = size[e, a, 0]
        g0 += abs(q0)
        n_open += q0 != 0.0
        a += 1
    return (g0 + g1) + (g2 + g3), n_open


@jit(error_model="numpy")
def _advance_exchanges(  # type: ignore[no-untyped-def]
    e_lo,
    e_hi,
    n_ticks,
    pop_every,
    tick_minutes,
    ewma,
    check_ledger,
    book_series,
    path,
    frozen,
    venue,
    mk,
    mark_last,
    oracle_index,
    oracle,
    t_now,
    drivers,
    accounts,
    books,
    fund,
    vault,
    terms,
    rng_state,
    packed,
    tiers,
    pop,
    stages,
    socialization,
    adl_policy,
    liquidation_mode,
    events,
    series,
    book_out,
):
    """``n_ticks`` ticks of exchanges ``e_lo`` to ``e_hi - 1``, in turn, in the module's order.

    The serial tick passes every exchange in one call: a call's entry and exit cost two atomic
    reference-count operations for each array it is passed (about seventy, most inside
    tuples), so calling once per exchange cost as much as the reference counting of all its
    ticks. The scratch arrays are allocated once and reused by each exchange (every entry is
    written before it is read).
    """
    buffer, count, delay, floor, first, last = oracle
    venue_flags, venue_leverage_cap = venue
    coll, size, entry, cp_size = accounts
    cp_cash, fee_revenue, rewards, unrecovered, net_deposits, initial_total = books
    floors, rates, cums, base = tiers
    marks = np.empty((1, 1))
    no_market = np.zeros(1)  # the vault's per-market ADL record: one market keeps none
    n_acc = size.shape[1]
    chosen = np.empty(n_acc, np.int64)  # the population's scratch, kept across ticks
    flags = np.zeros(n_acc + 7 - (n_acc + 7) % 8, np.uint8)  # whole words, padding zero
    sell_px = np.empty(1)
    buy_px = np.empty(1)
    available = np.empty(1)
    book_1 = np.empty(1)
    depth_1 = np.empty(1)
    oracle_from = np.empty(1)
    book_from = np.empty(1)
    tick_seconds = tick_minutes * 60.0
    liq_idx = np.empty((1, size.shape[1]), np.int64)  # the tick's liquidatable accounts
    flat = floors.shape[0] == 0
    liq_row = liq_idx[0]
    index_path, basis_path, wick_path = path[PATH_INDEX], path[PATH_BASIS], path[PATH_WICK]
    manipulation_path, depth_mult_path = path[PATH_MANIPULATION], path[PATH_DEPTH_MULT]
    precursor_path = path[PATH_PRECURSOR]
    fund_external_pnl = fund[F_EXTERNAL_PNL]
    fund_mark_price = fund[F_MARK_PRICE]
    fund_mark_vol = fund[F_MARK_VOL]
    base_0 = base[0]
    # The book statistics' scratch (7.), allocated once per call, not once per exchange.
    book_scratch = book_work(n_acc)
    for e in range(e_lo, e_hi):
        # The exchange's one-row views and the tuples' arrays, taken once per exchange: each
        # view made or array taken out of a tuple inside the tick loop costs two atomic
        # reference-count operations per tick (about a tenth of a decision's time, measured).
        r = slice(e, e + 1)
        coll_r, size_r, entry_r, packed_r = coll[r], size[r], entry[r], packed[r]
        cp_size_r, cp_cash_r, vault_r = cp_size[r], cp_cash[r], vault[r]
        rewards_r, unrecovered_r = rewards[r], unrecovered[r]
        events_r = events[:, r]
        # One market: the exchange's contiguous (A,) rows, whose unit strides let the account
        # loops of funding and the margin check vectorise.
        coll_v, size_v, entry_v = coll[e], size[e].reshape(n_acc), entry[e].reshape(n_acc)
        for k in range(n_ticks):
            t = t_now[e]
            ev = events_r[k]
            vf = venue_flags[e, t]
            # 1. Prices and drivers (ExchangeSimulator._inputs); the mark cap, and the mark's
            #    8-hour average.
            index, last_px, mark, oracle_px, depth, rate = prices_cols(
                e, t, index_path, basis_path, wick_path, manipulation_path, depth_mult_path, frozen,
                mk, mark_last, oracle_index, buffer, count, delay, floor, first, last,
            )  # fmt: skip
            mark_avg = drivers[D_MARK_AVG, e]
            mark = cap_mark(mark, mark_avg, packed[e, P_MARK_CAP_MULT])
            oracle_px = cap_mark(oracle_px, mark_avg, packed[e, P_MARK_CAP_MULT])
            drivers[D_MARK_AVG, e] = mark_avg + drivers[D_MARK_AVG_WEIGHT, e] * (mark - mark_avg)
            log_ret = math.log(index / drivers[D_LAST_INDEX, e])
            var_tick = drivers[D_VOL_ANNUAL, e] ** 2 * tick_minutes / MINUTES_PER_YEAR_VOL
            var_tick += ewma * (log_ret**2 - var_tick)
            vol = math.sqrt(var_tick * MINUTES_PER_YEAR_VOL / tick_minutes)
            drivers[D_VOL_ANNUAL, e] = vol
            drivers[D_LAST_INDEX, e] = index
            depth_mult = depth_mult_path[e, t]
            drivers[D_LAST_DEPTH_MULT, e] = depth_mult
            drivers[D_LAST_DEPTH_USD, e] = depth
            oracle_from[0] = drivers[D_LAST_ORACLE, e]
            book_from[0] = drivers[D_LAST_BOOK, e]
            drivers[D_LAST_ORACLE, e] = oracle_px
            drivers[D_LAST_BOOK, e] = last_px
            stressed = depth_mult < 0.5
            pre = precursor_path[e, t]
            peak = drivers[D_PEAK_INDEX, e]
            peak = max(index, peak + (index - peak) * (tick_minutes / PEAK_MEMORY_MINUTES))
            drivers[D_PEAK_INDEX, e] = peak
            arrival_f, exit_f, shift = market_response(
                market_stress(vol, drivers[D_BASE_VOL, e], 1.0 - index / peak, pop), rate, pop
            )

            # 1b. Venue events: the settlement window's index, and the settlement itself.
            if vf & VF_SETTLE_WINDOW:
                drivers[D_SETTLE_SUM, e] += index
                drivers[D_SETTLE_N, e] += 1.0
            if vf & VF_SETTLE:
                settle_px = drivers[D_SETTLE_SUM, e] / drivers[D_SETTLE_N, e]
                debt = settle_exchange(coll, size, entry, cp_size, cp_cash, vault, e, settle_px)
                ev[0, EV_SETTLEMENT_PRICE] = settle_px
                ev[0, EV_BAD_DEBT] += debt
                ev[0, EV_SHORTFALL] += debt  # the fund pays what it can below (5.)
            closed = (vf & VF_CLOSED) != 0
            if closed:
                ev[0, EV_MARKET_CLOSED] = 1.0

            # 2. The population, on its clock, and the fund's share of its fees (not while
            #    traders cannot act, nor once the market is closed).
            if t % pop_every == 0 and (vf & (VF_OUTAGE | VF_CLOSED)) == 0:
                # The call's scalars first: a choice among its arguments would put a branch
                # between the references the call takes to its arrays and their release, and
                # numba would count them (two atomic operations per array per call).
                arrival_mult = (1.0 + drivers[D_OI_BUILD, e] * pre) * arrival_f
                leverage_mult = 1.0 + drivers[D_LEVERAGE_BUILD, e] * pre
                skew = drivers[D_LONG_SKEW, e] * pre + shift
                halts = halt_mask(vf)
                leverage_cap = venue_leverage_cap[e, t]
                oi_cap_frac = packed[e, P_OI_CAP_FRAC]
                oi_cap = oi_cap_frac * drivers[D_START_OI, e] if oi_cap_frac > 0.0 else math.inf
                slot0 = int(drivers[D_FIRST_SLOT, e])
                # One exchange, on the batch's arrays: no one-exchange view of each of them.
                _, _, _, _, _, _, _, _, _, fees_usd, income = population_step_exchange(
                    e, rng_state, coll, size, entry, cp_size, cp_cash, fee_revenue, net_deposits,
                    packed, floors, rates, cums, base, pop, mark, arrival_mult, leverage_mult,
                    skew, 1.0, exit_f, halts, leverage_cap, oi_cap, slot0, chosen, flags,
                )  # fmt: skip
                if income > 0.0:
                    receive_one(fund, e, income)
                ev[0, EV_TRADING_FEES] = fees_usd
                ev[0, EV_FUND_TRADING_FEE_INCOME] = income

            # 3. The fund accrues; its outside gain is a deposit. (The reference accrues after
            #    funding; the two touch disjoint state, so the order changes nothing.)
            ext_before = fund_external_pnl[e]
            accrue_one(fund, e, index, vol, tick_minutes, terms)
            net_deposits[e] += fund_external_pnl[e] - ext_before

            # 4. Funding, pro rata to the tick, and the margin engine's check at the oracle in
            #    the same pass over the accounts; the orders walk the book at last.
            #    (fundgym.envs.core.trading._funding_kernel's order: accounts, counterparty, vault;
            #    the total paid only when the series are asked for.)
            rate_tick = rate * tick_minutes / drivers[D_FUNDING_INTERVAL_MIN, e]
            funding_paid = funding_row(coll_v, size_v, rate_tick * mark, book_series)
            cp_cash[e] -= cp_size[e, 0] * rate_tick * mark
            if vault[e, V_SIZE] != 0.0:
                vault[e, V_CASH] -= vault[e, V_SIZE] * rate_tick * mark
            if (vf & VF_ATTACKER) and (vf & (VF_WITHDRAWAL_HALT | VF_CLOSED)) == 0:
                took = attacker_withdrawal(
                    coll, size, entry, e, oracle_px, packed[e, P_UPNL_HAIRCUT], packed[e, P_IMR]
                )
                took = min(took, drivers[D_ATTACKER_LEFT, e])
                drivers[D_ATTACKER_LEFT, e] -= took
                coll[e, ATTACKER_SLOT] -= took
                net_deposits[e] -= took
                ev[0, EV_ATTACKER_WITHDRAWN] = took
            mmr = packed[e, P_MMR]
            n_liq = 0
            if (vf & (VF_ENGINE_OFF | VF_CLOSED)) == 0:  # the engine runs
                if flat:
                    n_liq = count_liquidatable_flat_row(coll_v, size_v, entry_v, oracle_px, mmr)
                else:
                    n_liq = count_liquidatable(
                        coll, size, entry, e, oracle_px, mmr, floors, rates, cums, base_0
                    )
            if n_liq > 0:
                _collect_liquidatable(
                    coll, size, entry, e, oracle_px, mmr, floors, rates, cums, base_0, liq_row
                )
            sell = 0.0
            buy = 0.0
            if n_liq > 0 and liquidation_mode == LIQ_PARTIAL:  # the venue modes price by sub-step
                sell, buy = order_flow(size_r, 0, liq_row, n_liq, packed_r, oracle_px, last_px)
            ev[0, EV_N_LIQUIDATIONS] = n_liq
            ev[0, EV_LIQUIDATION_SELL] = sell
            ev[0, EV_LIQUIDATION_BUY] = buy

            # 5. The waterfall on the listed accounts, at the square-root book's fill prices; the
            #    vault works its inventory; then the fund's settlement.
            fund_px = fund_mark_price[e] if fund_mark_price[e] > 0.0 else oracle_px
            fund_vol = fund_mark_vol[e]
            if n_liq > 0:
                marks[0, 0] = oracle_px
                sell_px[0] = book_price(last_px, sell, depth, MAX_IMPACT_FRAC, -1.0)
                buy_px[0] = book_price(last_px, buy, depth, MAX_IMPACT_FRAC, 1.0)
                available[0] = liquid_usd(fund, e, fund_px, fund_vol, stressed, terms)
                book_1[0] = last_px
                depth_1[0] = depth
                waterfall_kernel(
                    coll_r, size_r, entry_r, marks, packed_r, floors, rates, cums, base,
                    sell_px, buy_px, available, stages, socialization, adl_policy,
                    liquidation_mode, book_1, depth_1, MAX_IMPACT_FRAC, tick_seconds, oracle_from,
                    book_from, cp_size_r, cp_cash_r, rewards_r, unrecovered_r, vault_r, ev,
                    liq_idx,
                )  # fmt: skip
            if vault[e, V_ACTIVE] > 0.0 and (vf & (VF_ENGINE_OFF | VF_CLOSED)) == 0:
                if vault_over_loss_limit_1(vault, e, oracle_px):
                    marks[0, 0] = oracle_px
                    vault_tick_end_limit(
                        vault_r, 0, coll_r, size_r, entry_r, cp_size_r, cp_cash_r, marks[0],
                        stages, adl_policy, ev, no_market,
                    )  # fmt: skip
                vault_unwind_one(
                    vault_r, 0, cp_size_r, cp_cash_r, oracle_px, last_px, depth,
                    MAX_IMPACT_FRAC, packed[e, P_MMR], ev,
                )  # fmt: skip
            income = ev[0, EV_FUND_FEE_INCOME]
            owed = ev[0, EV_SHORTFALL]
            if income > 0.0 or owed > 0.0:
                ext_before = fund_external_pnl[e]
                if income > 0.0:
                    receive_one(fund, e, income)
                paid = 0.0
                if owed > 0.0:
                    paid = pay_one(fund, e, owed, fund_px, fund_vol, stressed, terms)
                net_deposits[e] += fund_external_pnl[e] - ext_before
                gap = owed - paid
                if gap != 0.0:
                    ev[0, EV_SHORTFALL] = paid
                    ev[0, EV_UNRECOVERED] += gap
                    unrecovered[e] += gap
            tick_debt = ev[0, EV_BAD_DEBT]
            if tick_debt > 0.0:  # the venue tops up a fund the tick's bad debt exhausted: a deposit
                net_deposits[e] += inject_if_exhausted_one(fund, e, tick_debt, stressed, terms)
            if floor[e] > 0.0 and oracle_px <= floor[e] and mark < floor[e]:  # a floored oracle
                ev[0, EV_FLOORED_SHORT_LIQUIDATION] = ev[0, EV_LIQUIDATION_BUY]
            else:  # the core wrote the fund's income from shorts; it counts only when floored
                ev[0, EV_FLOORED_FUND_FEE_INCOME] = 0.0

            # 6. Impact of the tick's flow, the clock, the series.
            advance_one(e, mk, ev[0, EV_LIQUIDATION_SELL], ev[0, EV_LIQUIDATION_BUY], depth)
            t_now[e] = t + 1
            gross = np.nan
            n_open = -1
            if book_series:  # a pass over the accounts: only when asked for
                gross, n_open = _gross_size(size, e)
            fund_value = value_usd(fund, e, index, vol)
            series[k, e, S_INDEX] = index
            series[k, e, S_LAST] = last_px
            series[k, e, S_MARK] = mark
            series[k, e, S_ORACLE] = oracle_px
            series[k, e, S_DEPTH] = depth
            series[k, e, S_FUNDING_RATE] = rate
            series[k, e, S_OPEN_INTEREST] = 0.5 * gross * mark
            series[k, e, S_FUND_USD] = fund_value
            series[k, e, S_N_OPEN] = n_open
            series[k, e, S_FUNDING_PAID] = funding_paid
            if check_ledger:  # fundgym.envs.state.ledger_error at the mark
                total = 0.0
                for a in range(size.shape[1]):
                    total += coll[e, a] + size[e, a, 0] * (mark - entry[e, a, 0])
                total = (
                    total
                    + value_usd(fund, e, fund_mark_price[e], fund_mark_vol[e])
                    + vault[e, V_CASH]
                    + vault[e, V_SIZE] * mark
                    + fee_revenue[e]
                    + rewards[e]
                    + cp_cash[e]
                    + cp_size[e, 0] * mark
                    - unrecovered[e]
                )
                series[k, e, S_LEDGER_ERROR] = total - (initial_total[e] + net_deposits[e])

        # 7. The book as the observation reads it, at the last tick's mark, while the accounts
        #    are in cache (fundgym.envs.observation.book_stats; an empty book_out skips it).
        if book_out.shape[0] > 0 and n_ticks > 0:
            marks[0, 0] = series[n_ticks - 1, e, S_MARK]
            book_stats_exchange(
                coll_r, size_r, entry_r, marks, packed_r, floors, rates, cums, base_0, book_out[r],
                np.int64(0),  # not the literal 0: the observation's calls pass an int64
                book_scratch,
            )  # fmt: skip


@jit(error_model="numpy")
def advance_serial(  # type: ignore[no-untyped-def]
    n_ticks, pop_every, tick_minutes, ewma, check_ledger, book_series, path, frozen, venue,
    mk, mark_last, oracle_index, oracle, t_now, drivers, accounts, books, fund, vault, terms,
    rng_state, packed, tiers, pop, stages, socialization, adl_policy, liquidation_mode,
    events, series, book_out,
):  # fmt: skip
    """``n_ticks`` ticks of every exchange, one exchange after another."""
    # np.int64(0), not the literal 0, as advance_parallel passes: one compile of the tick.
    _advance_exchanges(
        np.int64(0), t_now.shape[0], n_ticks, pop_every, tick_minutes, ewma, check_ledger,
        book_series, path, frozen, venue, mk, mark_last, oracle_index, oracle, t_now, drivers,
        accounts, books, fund, vault, terms, rng_state, packed, tiers, pop, stages,
        socialization, adl_policy, liquidation_mode, events, series, book_out,
    )  # fmt: skip


PARALLEL_CHUNKS = 8
"""Runs of exchanges :func:`advance_parallel` hands out: a few per thread of a two-core machine,
so an exchange in a cascade (slower ticks) does not leave the other thread idle for long."""


@jit(error_model="numpy", parallel=True)
def advance_parallel(  # type: ignore[no-untyped-def]
    n_ticks, pop_every, tick_minutes, ewma, check_ledger, book_series, path, frozen, venue,
    mk, mark_last, oracle_index, oracle, t_now, drivers, accounts, books, fund, vault, terms,
    rng_state, packed, tiers, pop, stages, socialization, adl_policy, liquidation_mode,
    events, series, book_out,
):  # fmt: skip
    """:func:`advance_serial` with exchanges spread over threads (bit-identical results).

    The exchanges go to the threads in :data:`PARALLEL_CHUNKS` contiguous runs, each one call
    of :func:`_advance_exchanges`, not one call per exchange: a call's entry and exit count
    references to each of the seventy-odd arrays it is passed, atomically, on counters every
    thread shares, which cost more than the ticks of a small exchange (docs/benchmarks.md).
    Each exchange's arithmetic does not depend on its run, so the results are those of one
    thread, bit for bit.
    """
    n_envs = t_now.shape[0]
    n_chunks = min(n_envs, PARALLEL_CHUNKS)
    for i in prange(n_chunks):
        c = np.int64(i)  # prange's index is unsigned: calling with it compiled a second tick
        _advance_exchanges(
            c * n_envs // n_chunks, (c + 1) * n_envs // n_chunks, n_ticks, pop_every,
            tick_minutes, ewma, check_ledger, book_series, path, frozen, venue, mk, mark_last,
            oracle_index, oracle, t_now, drivers, accounts, books, fund, vault, terms, rng_state,
            packed, tiers, pop, stages, socialization, adl_policy, liquidation_mode, events,
            series, book_out,
        )  # fmt: skip
