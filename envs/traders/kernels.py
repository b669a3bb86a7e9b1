"""Compiled kernels of the trader population: one step over every exchange, and the book at reset.

:mod:`envs.traders.population` documents the behaviour and its calibration; this module is its
arithmetic, over the :class:`~envs.state.SimState` arrays directly. The loop runs over
exchanges, and inside one exchange a single pass over its accounts does everything that needs
to look at every account, in slot order:

1. a hazard exit, when the exit sampler (geometric gaps over slots, so its cost grows with the
   exits drawn) lands on this slot and the account is open;
2. a flat account with money left (or rounding dust of debt) withdraws and leaves;
3. an open account near liquidation draws its reaction (top up, halve, nothing);
4. an empty slot takes the next arrival while the tick's arrival count lasts;
5. the account's ``|size|`` joins the open-interest sum the ordinary volume is sized from.

Then ordinary volume samples about ``VOLUME_TRADER_FRAC`` of the slots, again by geometric
gaps, and the eligible ones trade their round trips. Nothing else touches the book, so a
population step costs one pass over the accounts plus work proportional to the few that act.
Per slot the order is the one the numpy population had (exits, then reactions, then arrivals),
and accounts do not interact except through per-exchange sums, so the behaviour is the same;
only the order in which the main stream's draws are consumed differs (exit gaps and reaction
uniforms interleave by slot), which changes which draws are used, not their distribution.

Every trade is priced by :func:`envs.core.trading.trade` and each exchange's trades are booked
once by :func:`envs.core.trading.book_exchange`; deposits and withdrawals add to the account
and to the exchange's ``net_deposits_usd``. Per-exchange totals are sums over that exchange's
accounts alone, in slot order, so a batch books exactly what each exchange books alone; each
exchange draws from its own rows of the stream array (:mod:`envs.core.random_nb`), held in
local tuples while it steps. Helpers take and return plain values, never arrays, because an
array passed to a compiled helper costs two atomic reference-count operations per call.

Market axis: the population trades market 0 only (its Python wrapper refuses ``M > 1``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from envs.core.params import P_IMR, P_MMR, P_TAKER_FEE, P_TRADE_FUND_SHARE
from envs.core.random_nb import (
    geometric_gap,
    load,
    next_u64,
    normal,
    poisson_quantile,
    store,
    uniform,
)
from envs.core.rng import ARRIVAL_STREAM, POPULATION_STREAM
from envs.core.trading import book_exchange, trade

# Columns of the population vector (``PopulationParams.columns(tick_minutes)``).
C_LAM_PER_TICK = 0  # arrival_rate_per_min x tick
C_P_EXIT = 1  # per-tick exit probability
C_P_REACT = 2  # per-tick reaction probability
C_BUFFER = 3  # near_liquidation_buffer_frac
C_TOP_UP_SHARE = 4
C_REDUCE_SHARE = 5
C_TURNOVER_PER_TICK = 6  # turnover_per_day x tick / 1 day
C_LONG_SHARE = 7
C_SCALE_USD = 8  # Pareto minimum of notional
C_PARETO_ALPHA = 9
C_LOG_LEV_MEDIAN = 10
C_LEV_SIGMA = 11
C_IMR_ELASTICITY = 12
C_FEE_ELASTICITY = 13
C_REFERENCE_IMR = 14
C_REFERENCE_FEE = 15
N_POP_COLUMNS = 16

# Event columns: counts (int64) and USD (float64), in PopulationEvents field order.
E_ARRIVALS, E_EXITS, E_TOP_UPS, E_REDUCTIONS = 0, 1, 2, 3
N_COUNT_EVENTS = 4
E_TOP_UP_USD, E_WITHDRAWN_USD, E_NEW_COLLATERAL_USD, E_NEW_NOTIONAL_USD = 0, 1, 2, 3
E_VOLUME_USD, E_TRADING_FEES_USD, E_FUND_FEE_INCOME_USD = 4, 5, 6
N_USD_EVENTS = 7

VOLUME_TRADER_FRAC = 0.05
"""Share of open accounts drawn each tick to carry the ordinary volume as round trips."""
FEE_FLOOR_FRAC = 1e-3
"""A zero taker fee counts as ``FEE_FLOOR_FRAC x reference`` in the demand multiplier, since
constant-elasticity demand is infinite at a zero price (with elasticity -0.5 the floor caps
the fee term at 1000**0.5, about 32x)."""
LONG_SHARE_LOW, LONG_SHARE_HIGH = 0.02, 0.98
"""Bounds of the long share after the per-tick shift: neither side of the book ever empties."""
DUST_DEBT_USD = 1e-6
"""Negative collateral smaller than this on a flat account is float rounding left by a
liquidation at exactly the bankruptcy price, not bad debt: the account settles it and leaves,
so rounding cannot lock slots for ever."""
IMR_HEADROOM_REL = 1e-9
"""Relative slack on the initial-margin checks the population makes before trading, so an
order that passes in exact arithmetic is never rejected by float rounding."""
ARRIVAL_CANDIDATE_DEMAND = 4.0
"""Candidates drawn per tick cover a Poisson count at this demand multiplier (plus six
standard deviations): counts beyond it, only at extreme leverage caps, draw more and lose the
coupling for the rest of the episode, never the distribution."""


@njit(cache=True)
def demand_multiplier(imr, taker_fee_rate, pop):  # type: ignore[no-untyped-def]
    """Constant-elasticity demand at one exchange's IMR and taker fee (1 at the references)."""
    fee = max(taker_fee_rate, FEE_FLOOR_FRAC * pop[C_REFERENCE_FEE])
    return (imr / pop[C_REFERENCE_IMR]) ** pop[C_IMR_ELASTICITY] * (
        fee / pop[C_REFERENCE_FEE]
    ) ** pop[C_FEE_ELASTICITY]


@njit(cache=True)
def demand_multipliers(packed, pop, out):  # type: ignore[no-untyped-def]
    """:func:`demand_multiplier` per exchange into ``out``."""
    for e in range(out.size):
        out[e] = demand_multiplier(packed[e, P_IMR], packed[e, P_TAKER_FEE], pop)


@njit(cache=True)
def candidate_budget(lam_ref):  # type: ignore[no-untyped-def]
    """Candidates drawn per tick, ``ceil(4 lam_ref + 6 sqrt(4 lam_ref) + 6)``, policy-free."""
    scaled = ARRIVAL_CANDIDATE_DEMAND * lam_ref
    return math.ceil(scaled + 6.0 * math.sqrt(scaled) + 6.0)


@njit(cache=True)
def draw_trader(st, long_share, max_leverage, leverage_mult, scale_usd, alpha, log_median, sigma):  # type: ignore[no-untyped-def]
    """One new trader from four uniforms of stream ``st``: ``(notional, side, leverage, st)``.

    Notional is Pareto by its inverse CDF, ``scale (1 - u) ** (-1 / alpha)``; the side is long
    when the second uniform is below ``long_share``; leverage is lognormal (``log_median``,
    ``sigma``; Box-Muller from the last two) times ``leverage_mult``, clipped to
    ``[1, max_leverage]``.
    """
    u, st = uniform(st)
    notional = scale_usd * (1.0 - u) ** (-1.0 / alpha)
    u, st = uniform(st)
    side = 1.0 if u < long_share else -1.0
    z, st = normal(st)
    lev = min(max(math.exp(log_median + sigma * z) * leverage_mult, 1.0), max_leverage)
    return notional, side, lev, st


@njit(cache=True)
def coupled_candidates_kernel(  # type: ignore[no-untyped-def]
    state, lam, lam_ref, long_share, max_leverage, leverage_mult, pop, counts, out
):
    """Each exchange's arrival count and its candidate list, as the step draws them.

    Row ``e`` of ``out`` (``(E, 3, width)``: notional, side, leverage) receives candidates
    ``0 .. max(K_e, count_e) - 1`` (the rest stays as given); ``width`` must cover them.
    """
    for e in range(counts.size):
        sa = load(state, e, ARRIVAL_STREAM)
        u, sa = uniform(sa)
        counts[e] = poisson_quantile(u, lam[e])
        for j in range(max(candidate_budget(lam_ref[e]), counts[e])):
            n, side, lev, sa = draw_trader(
                sa, long_share[e], max_leverage[e], leverage_mult[e], pop[C_SCALE_USD],
                pop[C_PARETO_ALPHA], pop[C_LOG_LEV_MEDIAN], pop[C_LEV_SIGMA],
            )  # fmt: skip
            out[e, 0, j] = n
            out[e, 1, j] = side
            out[e, 2, j] = lev
        store(state, e, ARRIVAL_STREAM, sa)


@njit(cache=True)
def initial_book_kernel(state, pop, packed, price, n_open, collateral, size, entry):  # type: ignore[no-untyped-def]
    """Fill slots ``0 .. n_open - 1`` of every exchange with traders drawn like arrivals.

    Each holds a position opened at ``price[e]`` with collateral ``notional x (1 / leverage +
    fee)``: what an arrival keeps after its opening fee. Draws come from the exchange's
    population stream, four uniforms per account.
    """
    for e in range(price.size):
        st = load(state, e, POPULATION_STREAM)
        max_lev = 1.0 / packed[e, P_IMR]
        fee = packed[e, P_TAKER_FEE]
        for a in range(n_open):
            notional, side, lev, st = draw_trader(
                st, pop[C_LONG_SHARE], max_lev, 1.0, pop[C_SCALE_USD], pop[C_PARETO_ALPHA],
                pop[C_LOG_LEV_MEDIAN], pop[C_LEV_SIGMA],
            )  # fmt: skip
            collateral[e, a] = notional * (1.0 / lev + fee)
            size[e, a, 0] = side * notional / price[e]
            entry[e, a, 0] = price[e]
        store(state, e, POPULATION_STREAM, st)


@njit(cache=True)
def population_step_kernel(  # type: ignore[no-untyped-def]
    rng_state,
    collateral,
    size,
    entry,
    counterparty_size,
    counterparty_cash,
    fee_revenue,
    net_deposits,
    packed,
    floor_usd,
    tier_mmr,
    cum_usd,
    tier_scale_div,
    pop,
    marks,
    arrival_mult,
    leverage_mult,
    long_share_shift,
    volume_mult,
    counts,
    usd,
):
    """One population step of every exchange, in place; events into ``counts`` and ``usd``.

    ``marks`` is ``(E, 1)``; ``counts`` ``(E, N_COUNT_EVENTS)`` and ``usd``
    ``(E, N_USD_EVENTS)`` must start at zero. The maintenance requirement is ``mmr x N``, or
    with tiers (``floor_usd`` non-empty) ``(N x tier_mmr_k - cum_k) x mmr / base_mmr`` for the
    bracket ``k`` of ``N`` (:class:`envs.core.params.MarginTiers`).
    """
    n_envs, n_acc = collateral.shape
    n_tiers = floor_usd.size
    base_mmr = tier_scale_div[0]
    chosen = np.empty(n_acc, dtype=np.int64)
    scale_usd, alpha = pop[C_SCALE_USD], pop[C_PARETO_ALPHA]
    log_median, sigma = pop[C_LOG_LEV_MEDIAN], pop[C_LEV_SIGMA]
    buffer = pop[C_BUFFER]
    p_top = pop[C_P_REACT] * pop[C_TOP_UP_SHARE]
    p_act = pop[C_P_REACT] * (pop[C_TOP_UP_SHARE] + pop[C_REDUCE_SHARE])
    p_exit = pop[C_P_EXIT]
    log1m_exit = math.log1p(-p_exit)
    log1m_vol = math.log1p(-VOLUME_TRADER_FRAC)
    for e in range(n_envs):
        st = load(rng_state, e, POPULATION_STREAM)
        sa = load(rng_state, e, ARRIVAL_STREAM)
        m = marks[e, 0]
        mmr = packed[e, P_MMR]
        imr = packed[e, P_IMR]
        fee_rate = packed[e, P_TAKER_FEE]
        demand = demand_multiplier(imr, fee_rate, pop)
        # Exchange-level sums, booked once at the end: orders, fees, deposits, events.
        base = 0.0
        fees = 0.0
        deposits = 0.0
        volume = 0.0
        n_exits = 0
        withdrawn = 0.0
        n_top = 0
        top_usd = 0.0
        n_reduce = 0
        n_new = 0
        new_collateral = 0.0
        new_notional = 0.0

        # Arrivals: the count now, the candidates one by one as slots take them.
        lam = pop[C_LAM_PER_TICK] * (demand * arrival_mult[e])
        budget = candidate_budget(pop[C_LAM_PER_TICK] * arrival_mult[e])
        u, sa = uniform(sa)
        n_arrive = poisson_quantile(u, lam)
        long_share = min(
            max(pop[C_LONG_SHARE] + long_share_shift[e], LONG_SHARE_LOW), LONG_SHARE_HIGH
        )
        max_lev = 1.0 / imr
        taken = 0

        next_exit = n_acc
        if p_exit > 0.0:
            gap, st = geometric_gap(st, log1m_exit, n_acc + 1)
            next_exit = gap - 1
        gross = 0.0

        for a in range(n_acc):
            exit_drawn = a == next_exit
            if exit_drawn:
                gap, st = geometric_gap(st, log1m_exit, n_acc + 1)
                next_exit += gap
            q = size[e, a, 0]
            c = collateral[e, a]
            # 1-2. Exits (a bankrupt account cannot walk away) and flat accounts withdrawing.
            leaves = False
            if q != 0.0:
                if exit_drawn:
                    ent = entry[e, a, 0]
                    close_value = c + q * (m - ent)
                    if close_value - abs(q) * m * fee_rate >= 0.0:
                        t = -q  # a full close: a reduction always executes
                        ok, q, ent, cash, fee = trade(q, ent, close_value, 0.0, t, m, m, imr,
                                                      fee_rate)  # fmt: skip
                        size[e, a, 0] = q
                        entry[e, a, 0] = ent
                        c += cash
                        collateral[e, a] = c
                        base += t
                        fees += fee
                        volume += abs(t) * m
                        leaves = q == 0.0 and c > -DUST_DEBT_USD
            elif c != 0.0 and c > -DUST_DEBT_USD:
                leaves = True
            if leaves:
                collateral[e, a] = 0.0  # c - c: the whole balance is withdrawn
                entry[e, a, 0] = 0.0
                deposits -= c
                n_exits += 1
                withdrawn += c
                c = 0.0
            # 3. Near liquidation: top up, halve, or nothing.
            if q != 0.0:
                ent = entry[e, a, 0]
                eq = c + q * (m - ent)
                notional = abs(q) * m
                if n_tiers == 0:
                    req = notional * mmr
                else:
                    k = 0
                    while k + 1 < n_tiers and floor_usd[k + 1] <= notional:
                        k += 1
                    req = (notional * tier_mmr[k] - cum_usd[k]) * (mmr / base_mmr)
                if eq < (1.0 + buffer) * req:
                    u, st = uniform(st)
                    if u < p_top:
                        amount = (1.0 + 2.0 * buffer) * req - eq
                        collateral[e, a] = c + amount
                        deposits += amount
                        n_top += 1
                        top_usd += amount
                    elif u < p_act:  # halving is a reduction: it always executes
                        half = -0.5 * q
                        ok, q, ent, cash, fee = trade(q, ent, eq, 0.0, half, m, m, imr, fee_rate)
                        size[e, a, 0] = q
                        entry[e, a, 0] = ent
                        collateral[e, a] = c + cash
                        n_reduce += 1
                        base += half
                        fees += fee
                        volume += abs(half) * m
            # 4. An empty slot takes the next arrival.
            elif taken < n_arrive and c == 0.0:
                notional, side, lev, sa = draw_trader(
                    sa, long_share, max_lev, leverage_mult[e], scale_usd, alpha, log_median, sigma
                )
                taken += 1
                col = notional * (1.0 / lev * (1.0 + IMR_HEADROOM_REL) + 2.0 * fee_rate)
                order = side * notional / m
                ok, q, ent, cash, fee = trade(0.0, entry[e, a, 0], col, 0.0, order, m, m, imr,
                                              fee_rate)  # fmt: skip
                if ok:  # deposit, then open; a rejected order deposits nothing
                    size[e, a, 0] = q
                    entry[e, a, 0] = ent
                    collateral[e, a] = col + cash
                    deposits += col
                    base += order
                    fees += fee
                    volume += abs(order) * m
                    n_new += 1
                    new_collateral += col
                    new_notional += notional
            # 5. Open interest after this slot's flows.
            gross += abs(q)

        # The arrival stream moves by the same amount every tick: skip unused candidates.
        for _ in range(4 * (max(budget, n_arrive) - taken)):
            _, sa = next_u64(sa)

        # Ordinary volume: round trips by about VOLUME_TRADER_FRAC of the open accounts.
        target_usd = pop[C_TURNOVER_PER_TICK] * (0.5 * gross * m) * (demand * volume_mult[e])
        if target_usd > 0.0:
            n_chosen = 0
            room_usd = 0.0
            gap, st = geometric_gap(st, log1m_vol, n_acc + 1)
            slot = gap - 1
            while slot < n_acc:
                q = size[e, slot, 0]
                if q != 0.0:
                    notional = abs(q) * m
                    eq = collateral[e, slot] + q * (m - entry[e, slot, 0])
                    if eq >= (imr + 2.0 * fee_rate) * notional * (1.0 + IMR_HEADROOM_REL):
                        chosen[n_chosen] = slot
                        n_chosen += 1
                        room_usd += notional
                gap, st = geometric_gap(st, log1m_vol, n_acc + 1)
                slot += gap
            room_usd *= 2.0  # traded if every round trip were a full close and re-open
            if room_usd > 0.0:
                scale = min(target_usd / room_usd, 1.0)
                for i in range(n_chosen):
                    a = chosen[i]
                    q = size[e, a, 0]
                    ent = entry[e, a, 0]
                    c = collateral[e, a]
                    first = -scale * q  # -sign(q) x scale |q|: a reduction, never rejected
                    for leg in (first, -first):
                        ok, q, ent, cash, fee = trade(q, ent, c + q * (m - ent), 0.0, leg, m, m,
                                                      imr, fee_rate)  # fmt: skip
                        if ok:
                            c += cash
                            base += leg
                            fees += fee
                            volume += abs(leg) * m
                    size[e, a, 0] = q
                    entry[e, a, 0] = ent
                    collateral[e, a] = c

        store(rng_state, e, POPULATION_STREAM, st)
        store(rng_state, e, ARRIVAL_STREAM, sa)
        net_deposits[e] += deposits
        to_fund = book_exchange(
            counterparty_size, counterparty_cash, fee_revenue, e, 0, base, base * m, fees,
            packed[e, P_TRADE_FUND_SHARE],
        )  # fmt: skip
        counts[e, E_ARRIVALS] = n_new
        counts[e, E_EXITS] = n_exits
        counts[e, E_TOP_UPS] = n_top
        counts[e, E_REDUCTIONS] = n_reduce
        usd[e, E_TOP_UP_USD] = top_usd
        usd[e, E_WITHDRAWN_USD] = withdrawn
        usd[e, E_NEW_COLLATERAL_USD] = new_collateral
        usd[e, E_NEW_NOTIONAL_USD] = new_notional
        usd[e, E_VOLUME_USD] = volume
        usd[e, E_TRADING_FEES_USD] = fees
        usd[e, E_FUND_FEE_INCOME_USD] = to_fund
