"""Compiled kernels of the trader population: one step over every exchange, and the book at reset.

:mod:`fundgym.envs.traders.population` documents the behaviour and its calibration; this module is
its arithmetic, over the :class:`~fundgym.envs.state.SimState` arrays directly. The loop runs over
exchanges, and inside one exchange each slot goes through, in slot order:

1. a hazard exit, when the exit sampler (geometric gaps over slots, so its cost grows with the
   exits drawn) lands on this slot and the account is open;
2. a flat account with money left (or rounding dust of debt) withdraws and leaves;
3. an open account near liquidation draws its reaction (top up, halve, nothing);
4. an empty slot takes the next arrival while the tick's arrival count lasts;
5. the account's ``|size|`` joins the open-interest sum the ordinary volume is sized from.

Then ordinary volume samples about ``VOLUME_TRADER_FRAC`` of the slots, again by geometric
gaps, and the eligible ones trade their round trips. Per slot the order is the one the numpy
population had (exits, then reactions, then arrivals), and accounts do not interact except
through per-exchange sums, so the behaviour is the same; only the order in which the main
stream's draws are consumed differs (exit gaps and reaction uniforms interleave by slot),
which changes which draws are used, not their distribution.

**Cost.** Most slots do nothing in a tick, so steps 1-4 must cost nothing for them. A vector pass
(:func:`flag_slots`) marks the slots that can act from the values the slot loop would find there (a
slot's flows touch that slot alone, so marking every slot first is the same as testing each in
turn); the slot loop then reads those marks eight to a ``uint64`` word, adds the ``|size|`` of a
quiet word's eight slots in order, and runs steps 1-4 only for marked slots and the slots the exit
sampler lands on. The open-interest sum stays one running sum in slot order, so it has the same bits
as a sum taken slot by slot. The volume sampler draws its gaps from a table instead of a logarithm
each (:func:`fundgym.envs.core.random_nb.gap_table`: the same gaps for the same draws). Compiled
with ``error_model="numpy"`` (no division-by-zero checks; no division here can see a zero), never
``fastmath``: every result is bit for bit what the plain per-slot loop computes, and a golden run in
the tests holds it there.

Every trade is priced by :func:`fundgym.envs.core.trading.trade` and each exchange's trades are
booked once by :func:`fundgym.envs.core.trading.book_exchange`; deposits and withdrawals add to the
account and to the exchange's ``net_deposits_usd``. Per-exchange totals are sums over that
exchange's accounts alone, in slot order, so a batch books exactly what each exchange books alone;
each exchange draws from its own rows of the stream array (:mod:`fundgym.envs.core.random_nb`), held
in local tuples while it steps. Helpers called per slot take and return plain values (or are
inlined), never arrays, because an array passed to a compiled helper costs two atomic
reference-count operations per call; :func:`flag_slots` takes arrays, once per exchange.

Market axis: the population trades market 0 only (its Python wrapper refuses ``M > 1``).
"""

from __future__ import annotations

import math

import numpy as np

from fundgym.envs.core.params import P_IMR, P_MMR, P_TAKER_FEE, P_TRADE_FUND_SHARE
from fundgym.envs.core.random_nb import (
    gap_table,
    geometric_gap,
    geometric_gap_tabled,
    load,
    next_u64,
    normal,
    poisson_quantile,
    store,
    uniform,
)
from fundgym.envs.core.rng import ARRIVAL_STREAM, POPULATION_STREAM
from fundgym.envs.core.trading import book_exchange, trade
from fundgym.envs.jit import jit

# Columns of the population vector (``PopulationParams.columns(tick_minutes)``).
C_LAM_PER_SLOT_TICK = 0  # arrival_rate_per_slot_per_day x tick / 1 day
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
C_CROSS_SHARE = 16
C_LOG_CROSS_LEV_MEDIAN = 17
C_CROSS_LEV_SIGMA = 18
C_DERISK_PER_STRESS = 19
C_ARRIVAL_PER_STRESS = 20
C_FUNDING_LONG_SHIFT = 21  # shift of the long share per unit of funding rate per interval
C_DRAWDOWN_SCALE = 22
C_SIZE_CDF_AT_CAP = 23  # the Pareto CDF at the largest notional: sizes are truncated there
N_POP_COLUMNS = 24

# Event columns: counts (int64) and USD (float64), in PopulationEvents field order.
E_ARRIVALS, E_EXITS, E_TOP_UPS, E_REDUCTIONS = 0, 1, 2, 3
N_COUNT_EVENTS = 4
E_TOP_UP_USD, E_WITHDRAWN_USD, E_NEW_COLLATERAL_USD, E_NEW_NOTIONAL_USD = 0, 1, 2, 3
E_VOLUME_USD, E_TRADING_FEES_USD, E_FUND_FEE_INCOME_USD = 4, 5, 6
N_USD_EVENTS = 7

VOLUME_TRADER_FRAC = 0.05
"""Share of open accounts drawn each tick to carry the ordinary volume as round trips."""
_VOLUME_GAPS = gap_table(VOLUME_TRADER_FRAC)
"""The volume sampler's gaps, no logarithm each (:func:`~fundgym.envs.core.random_nb.gap_table`)."""
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
USAGE_FLOOR = 0.01
"""Smallest margin usage of a cross account (initial margin / equity): effective leverage
is at least 1% of order leverage, so no account is drawn with an unbounded balance."""
UNIFORMS_PER_TRADER = 7
"""Uniforms :func:`draw_trader` consumes per candidate, whatever it draws."""
HALT_WITHDRAWALS = 1
"""``halt_mask`` bit: withdrawals are halted (exits close positions, the money stays)."""
HALT_NEW_POSITIONS = 2
"""``halt_mask`` bit: reduce-only (no arrivals, no ordinary round trips)."""
ARRIVAL_CANDIDATE_DEMAND = 4.0
"""Candidates drawn per tick cover a Poisson count at this demand multiplier (plus six
standard deviations): counts beyond it, only at extreme leverage caps, draw more and lose the
coupling for the rest of the episode, never the distribution."""


@jit
def demand_multiplier(imr, taker_fee_rate, pop):  # type: ignore[no-untyped-def]
    """Constant-elasticity demand at one exchange's IMR and taker fee (1 at the references).

    The margin term is one-sided: an IMR above the reference deters traders, one below it
    adds none. Traders choose leverage far below the venues' caps (order leverage median
    10-20x against caps of 50-125x), so lowering the cap further does not bring new traders;
    a two-sided term gave a 125x venue 4.3 times the reference demand.
    """
    fee = max(taker_fee_rate, FEE_FLOOR_FRAC * pop[C_REFERENCE_FEE])
    margin = max(imr, pop[C_REFERENCE_IMR])
    return (margin / pop[C_REFERENCE_IMR]) ** pop[C_IMR_ELASTICITY] * (
        fee / pop[C_REFERENCE_FEE]
    ) ** pop[C_FEE_ELASTICITY]


@jit
def demand_multipliers(packed, pop, out):  # type: ignore[no-untyped-def]
    """:func:`demand_multiplier` per exchange into ``out``."""
    for e in range(out.size):
        out[e] = demand_multiplier(packed[e, P_IMR], packed[e, P_TAKER_FEE], pop)


@jit
def market_stress(vol_annual, base_vol_annual, drawdown_frac, pop):  # type: ignore[no-untyped-def]
    """The market's stress as traders feel it: excess volatility plus drawdown, >= 0.

    ``max(vol / base vol - 1, 0) + drawdown / stress_drawdown_frac``: 0 in a market at its
    usual volatility and at its recent peak; 1 when volatility is twice its usual level, or
    the price ``stress_drawdown_frac`` below its recent peak.
    """
    return max(vol_annual / base_vol_annual - 1.0, 0.0) + drawdown_frac / pop[C_DRAWDOWN_SCALE]


@jit
def market_response(stress, funding_rate, pop):  # type: ignore[no-untyped-def]
    """How the population answers the market: ``(arrival factor, exit factor, long shift)``.

    Arrivals fall as ``1 / (1 + k_a x stress)`` (fewer traders open positions into a crash);
    the exit hazard rises as ``1 + k_d x stress`` (voluntary de-risking: traders close and
    withdraw as volatility and losses rise); the long share of arrivals moves by
    ``-k_f x funding_rate`` (a positive rate, longs paying shorts, deters longs). One home
    for the formula: the compiled tick and the numpy reference both call it.
    """
    arrival = 1.0 / (1.0 + pop[C_ARRIVAL_PER_STRESS] * stress)
    exit_factor = 1.0 + pop[C_DERISK_PER_STRESS] * stress
    return arrival, exit_factor, -pop[C_FUNDING_LONG_SHIFT] * funding_rate


@jit
def market_responses(vol, base_vol, drawdown, funding_rate, pop, arrival, exit_factor, shift):  # type: ignore[no-untyped-def]
    """:func:`market_response` of :func:`market_stress` per exchange, into the three outputs."""
    for e in range(vol.size):
        s = market_stress(vol[e], base_vol[e], drawdown[e], pop)
        arrival[e], exit_factor[e], shift[e] = market_response(s, funding_rate[e], pop)


@jit
def first_invalid(x, low, low_open):  # type: ignore[no-untyped-def]
    """Index of the first entry of ``x`` that is not finite or not above ``low``; -1 if none.

    "Above" is ``> low`` when ``low_open``, else ``>= low``: the wrapper's input check of a
    per-exchange array, in one compiled pass instead of several numpy ones.
    """
    for i in range(x.size):
        v = x[i]
        if not (math.isfinite(v) and (v > low if low_open else v >= low)):
            return i
    return -1


@jit
def candidate_budget(lam_ref):  # type: ignore[no-untyped-def]
    """Candidates drawn per tick, ``ceil(4 lam_ref + 6 sqrt(4 lam_ref) + 6)``, policy-free."""
    scaled = ARRIVAL_CANDIDATE_DEMAND * lam_ref
    return math.ceil(scaled + 6.0 * math.sqrt(scaled) + 6.0)


@jit
def draw_trader(st, long_share, max_leverage, leverage_mult, pop):  # type: ignore[no-untyped-def]
    """One new trader from seven uniforms of stream ``st``: ``(notional, side, lev, usage, st)``.

    Notional is Pareto truncated at ``max_notional_mult x`` the mean, by its inverse CDF,
    ``scale (1 - u F(cap)) ** (-1 / alpha)`` (``F(cap)``: the CDF at the cap); the side is long
    when the second uniform is below ``long_share``; order leverage is lognormal (Box-Muller
    from the next two) times ``leverage_mult``, clipped to ``[1, max_leverage]``. The fifth
    uniform makes the account cross-margined with probability ``cross_share``; a cross
    account's effective leverage (notional / equity) is lognormal (the last two), and its
    margin usage (initial margin / equity) is that over the order's leverage, clipped to
    ``[USAGE_FLOOR, 1]``: a cross account never runs above its order's leverage. An isolated
    account's usage is 1 (it posts the order's margin and nothing more). The draws are the
    same whatever the outcome, so every candidate consumes exactly seven uniforms.
    """
    u, st = uniform(st)
    notional = pop[C_SCALE_USD] * (1.0 - u * pop[C_SIZE_CDF_AT_CAP]) ** (-1.0 / pop[C_PARETO_ALPHA])
    u, st = uniform(st)
    side = 1.0 if u < long_share else -1.0
    z, st = normal(st)
    lev = math.exp(pop[C_LOG_LEV_MEDIAN] + pop[C_LEV_SIGMA] * z) * leverage_mult
    lev = min(max(lev, 1.0), max_leverage)
    u, st = uniform(st)
    z, st = normal(st)
    usage = 1.0
    if u < pop[C_CROSS_SHARE]:
        effective = math.exp(pop[C_LOG_CROSS_LEV_MEDIAN] + pop[C_CROSS_LEV_SIGMA] * z)
        usage = min(max(effective / lev, USAGE_FLOOR), 1.0)
    return notional, side, lev, usage, st


@jit(inline="always")
def opening_collateral(notional, lev, usage, fee_rate):  # type: ignore[no-untyped-def]
    """What a new account deposits: its margin at ``lev`` scaled up by ``1 / usage``, plus fees.

    ``notional x (1 / (lev x usage) x (1 + IMR_HEADROOM_REL) + 2 fee)``: the initial margin
    plus the opening and the eventual closing fee, so an order at the venue's maximum leverage
    passes the initial-margin check after its fee; a cross account (usage < 1) brings the rest
    of its balance as free collateral. Its effective leverage is ``lev x usage``.
    """
    return notional * (1.0 / (lev * usage) * (1.0 + IMR_HEADROOM_REL) + 2.0 * fee_rate)


@jit
def coupled_candidates_kernel(  # type: ignore[no-untyped-def]
    state, lam, lam_ref, long_share, max_leverage, leverage_mult, pop, counts, out
):
    """Each exchange's arrival count and its candidate list, as the step draws them.

    Row ``e`` of ``out`` (``(E, 4, width)``: notional, side, leverage, margin usage) receives
    candidates ``0 .. max(K_e, count_e) - 1`` (the rest stays as given); ``width`` must cover
    them.
    """
    for e in range(counts.size):
        sa = load(state, e, ARRIVAL_STREAM)
        u, sa = uniform(sa)
        counts[e] = poisson_quantile(u, lam[e])
        for j in range(max(candidate_budget(lam_ref[e]), counts[e])):
            n, side, lev, usage, sa = draw_trader(
                sa, long_share[e], max_leverage[e], leverage_mult[e], pop
            )
            out[e, 0, j] = n
            out[e, 1, j] = side
            out[e, 2, j] = lev
            out[e, 3, j] = usage
        store(state, e, ARRIVAL_STREAM, sa)


@jit
def initial_book_kernel(state, pop, packed, price, n_open, collateral, size, entry):  # type: ignore[no-untyped-def]
    """Fill slots ``0 .. n_open - 1`` of every exchange with traders drawn like arrivals.

    Each holds a position opened at ``price[e]`` with collateral ``notional x (1 / (leverage x
    usage) + fee)``: what an arrival keeps after its opening fee (:func:`opening_collateral`
    less the fee paid, without the rounding pad). Draws come from the exchange's population
    stream, seven uniforms per account.
    """
    for e in range(price.size):
        st = load(state, e, POPULATION_STREAM)
        max_lev = 1.0 / packed[e, P_IMR]
        fee = packed[e, P_TAKER_FEE]
        for a in range(n_open):
            notional, side, lev, usage, st = draw_trader(st, pop[C_LONG_SHARE], max_lev, 1.0, pop)
            collateral[e, a] = notional * (1.0 / (lev * usage) + fee)
            size[e, a, 0] = side * notional / price[e]
            entry[e, a, 0] = price[e]
        store(state, e, POPULATION_STREAM, st)


ACTS = 1
"""Slot flag (:func:`flag_slots`): the slot acts whatever the arrivals (near, or money out)."""
EMPTY = 2
"""Slot flag: the slot is empty and takes an arrival while the tick's arrivals last."""
ACTS_WORD = np.uint64(0x0101010101010101 * ACTS)
"""``ACTS`` in each of the eight slot flags of a ``uint64`` word."""
EMPTY_WORD = np.uint64(0x0101010101010101 * EMPTY)
"""``EMPTY`` in each of the eight slot flags of a ``uint64`` word."""


@jit(error_model="numpy")
def flag_slots(q, c, ent, m, mmr, near_mult, tiered, floor1_usd, mmr0, cum0_usd, tier_scale, flags):  # type: ignore[no-untyped-def]
    """Mark the slots of one exchange that may act this step, in one branch-free pass.

    ``flags[a]`` gets ``ACTS`` when the slot is open and near liquidation (equity below
    ``near_mult x`` its requirement, the step's own arithmetic) or flat with money or dust to
    withdraw, and ``EMPTY`` when it is empty (size and collateral 0). With tiers only the
    first bracket is checked here: a position at or above ``floor1_usd`` is marked ``ACTS``
    and the step decides it with the full table. Every slot is written, so the loop has no
    branch to mispredict and compiles to vector code; ``q``, ``c``, ``ent`` and ``flags``
    must be contiguous.
    """
    if tiered:
        for a in range(q.size):
            notional = abs(q[a]) * m
            req = (notional * mmr0 - cum0_usd) * tier_scale
            near = (q[a] != 0.0) & (
                (c[a] + q[a] * (m - ent[a]) < near_mult * req) | (notional >= floor1_usd)
            )
            money = (q[a] == 0.0) & (c[a] > -DUST_DEBT_USD) & (c[a] != 0.0)
            empty = (q[a] == 0.0) & (c[a] == 0.0)
            flags[a] = np.uint8(near | money) * np.uint8(ACTS) | np.uint8(empty) * np.uint8(EMPTY)
    else:
        for a in range(q.size):
            req = abs(q[a]) * m * mmr
            near = (q[a] != 0.0) & (c[a] + q[a] * (m - ent[a]) < near_mult * req)
            money = (q[a] == 0.0) & (c[a] > -DUST_DEBT_USD) & (c[a] != 0.0)
            empty = (q[a] == 0.0) & (c[a] == 0.0)
            flags[a] = np.uint8(near | money) * np.uint8(ACTS) | np.uint8(empty) * np.uint8(EMPTY)


# numba's runtime off (``_nrt=False``): the step allocates nothing (its views of the batch's
# rows and the scratch's words borrow the caller's arrays, which outlive the call), and with
# the runtime on, each array variable it holds across its branches cost a pair of atomic
# reference-count operations per call: 7.6 of the compiled tick's 22.8 operations per
# exchange-tick, amortised over the step's clock (docs/benchmarks.md). An allocation added
# here does not compile (numba has no ``np.zeros`` without its runtime), so the flag cannot
# hide a leak. ``_nrt`` is numba's own (underscored) option; a numba without it would refuse
# it at the first compile (an unknown option is an error there), not ignore it.
@jit(error_model="numpy", _nrt=False)
def population_step_exchange(  # type: ignore[no-untyped-def]
    e,
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
    mark,
    arrival_mult,
    leverage_mult,
    long_share_shift,
    volume_mult,
    exit_mult,
    halt_mask,
    leverage_cap,
    oi_cap_usd,
    first_slot,
    chosen,
    flags,
):
    """Exchange ``e``'s population step, in place, at ``mark`` with its modulations (scalars).

    ``exit_mult`` scales the exit hazard (voluntary de-risking, :func:`market_response`);
    ``halt_mask`` holds the venue's halts (``HALT_WITHDRAWALS``, ``HALT_NEW_POSITIONS``);
    ``leverage_cap`` caps new positions' leverage below ``1 / imr`` (``inf``: none);
    ``oi_cap_usd`` refuses an arrival that would lift open interest above it (``inf``:
    none). Slots below ``first_slot`` belong to scripted accounts (a scenario's attacker):
    the population neither moves them nor counts them in its own open interest.

    The body of :func:`population_step_kernel`'s loop over exchanges, callable on its own
    with the batch's arrays and the exchange's index, so the compiled tick steps one exchange
    without building a one-exchange view of every array. ``chosen`` (int64, at least the
    accounts) and ``flags`` (uint8, the accounts padded to whole words of eight, the padding
    zero) are scratch the caller keeps across calls.

    Returns:
        The events, ``(arrivals, exits, top_ups, reductions, top_up_usd, withdrawn_usd,
        new_collateral_usd, new_notional_usd, volume_usd, trading_fees_usd,
        fund_trading_fee_income_usd)``, the ``E_*`` columns in order.
    """
    n_acc = collateral.shape[1]
    n_tiers = floor_usd.size
    base_mmr = tier_scale_div[0]
    words = flags.view(np.uint64)  # eight slot flags per word
    buffer = pop[C_BUFFER]
    near_mult = 1.0 + buffer
    top_up_mult = 1.0 + 2.0 * buffer
    p_top = pop[C_P_REACT] * pop[C_TOP_UP_SHARE]
    p_act = pop[C_P_REACT] * (pop[C_TOP_UP_SHARE] + pop[C_REDUCE_SHARE])
    p_exit = pop[C_P_EXIT] if exit_mult > 0.0 else 0.0
    log1m_exit = math.log1p(-p_exit) * exit_mult  # hazard x exit_mult: log(1 - p) scales
    log1m_vol = math.log1p(-VOLUME_TRADER_FRAC)
    vol_start, vol_thresholds, vol_log1m = _VOLUME_GAPS
    tiered = n_tiers > 0
    floor1_usd = floor_usd[1] if n_tiers > 1 else math.inf
    mmr0 = tier_mmr[0] if tiered else 0.0
    cum0_usd = cum_usd[0] if tiered else 0.0
    qv = size[e].reshape(n_acc)  # one market: the (A, 1) row as a contiguous (A,) view
    ev = entry[e].reshape(n_acc)
    cv = collateral[e]
    st = load(rng_state, e, POPULATION_STREAM)
    sa = load(rng_state, e, ARRIVAL_STREAM)
    m = mark
    mmr = packed[e, P_MMR]
    imr = packed[e, P_IMR]
    fee_rate = packed[e, P_TAKER_FEE]
    tier_scale = mmr / base_mmr
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
    # Demand, not free slots, sets the count: a rate per slot (slots scale the exchange)
    # times the levers' demand and the market's modulation; slots are only capacity.
    lam_base = pop[C_LAM_PER_SLOT_TICK] * n_acc
    lam = lam_base * (demand * arrival_mult)
    budget = candidate_budget(lam_base * arrival_mult)
    u, sa = uniform(sa)
    n_arrive = poisson_quantile(u, lam)
    if halt_mask & HALT_NEW_POSITIONS:
        n_arrive = 0
    long_share = min(max(pop[C_LONG_SHARE] + long_share_shift, LONG_SHARE_LOW), LONG_SHARE_HIGH)
    max_lev = min(1.0 / imr, leverage_cap)
    withdrawals_open = (halt_mask & HALT_WITHDRAWALS) == 0
    oi_now_usd = 0.0
    if oi_cap_usd < math.inf:  # one more pass over the book, only under a cap
        for j in range(n_acc):
            oi_now_usd += abs(qv[j])
        oi_now_usd *= 0.5 * mark
    taken = 0
    wanted = ACTS | EMPTY if taken < n_arrive else ACTS
    wanted_word = ACTS_WORD | EMPTY_WORD if taken < n_arrive else ACTS_WORD

    next_exit = n_acc
    if p_exit > 0.0:
        gap, st = geometric_gap(st, log1m_exit, n_acc + 1)
        next_exit = first_slot + gap - 1

    flag_slots(qv, cv, ev, m, mmr, near_mult, tiered, floor1_usd, mmr0, cum0_usd,
               tier_scale, flags)  # fmt: skip
    gross = 0.0
    a = first_slot
    while a < n_acc:
        # 5. Open interest of slots that do not move: eight at a time while no flag is
        # up and no exit falls among them, one at a time otherwise.
        if (
            (a & 7) == 0
            and a + 8 <= n_acc
            and next_exit >= a + 8
            and (words[a >> 3] & wanted_word) == 0
        ):
            for j in range(a, a + 8):
                gross += abs(qv[j])
            a += 8
            continue
        if (flags[a] & wanted) == 0 and a != next_exit:
            gross += abs(qv[a])
            a += 1
            continue
        q = qv[a]
        c = cv[a]
        exit_drawn = a == next_exit
        if exit_drawn:
            gap, st = geometric_gap(st, log1m_exit, n_acc + 1)
            next_exit += gap
        # 1-2. Exits (a bankrupt account cannot walk away) and flat accounts withdrawing.
        leaves = False
        if q != 0.0:
            if exit_drawn:
                ent = ev[a]
                close_value = c + q * (m - ent)
                if close_value - abs(q) * m * fee_rate >= 0.0:
                    t = -q  # a full close: a reduction always executes
                    ok, q, ent, cash, fee = trade(q, ent, close_value, 0.0, t, m, m, imr,
                                                  fee_rate)  # fmt: skip
                    qv[a] = q
                    ev[a] = ent
                    c += cash
                    cv[a] = c
                    base += t
                    fees += fee
                    volume += abs(t) * m
                    leaves = withdrawals_open and q == 0.0 and c > -DUST_DEBT_USD
        elif c != 0.0 and c > -DUST_DEBT_USD:
            leaves = withdrawals_open
        if leaves:
            cv[a] = 0.0  # c - c: the whole balance is withdrawn
            ev[a] = 0.0
            deposits -= c
            n_exits += 1
            withdrawn += c
            c = 0.0
        # 3. Near liquidation: top up, halve, or nothing.
        if q != 0.0:
            ent = ev[a]
            eq = c + q * (m - ent)
            notional = abs(q) * m
            if n_tiers == 0:
                req = notional * mmr
            else:
                k = 0
                while k + 1 < n_tiers and floor_usd[k + 1] <= notional:
                    k += 1
                req = (notional * tier_mmr[k] - cum_usd[k]) * tier_scale
            if eq < near_mult * req:
                u, st = uniform(st)
                if u < p_top:
                    amount = top_up_mult * req - eq
                    cv[a] = c + amount
                    deposits += amount
                    n_top += 1
                    top_usd += amount
                elif u < p_act:  # halving is a reduction: it always executes
                    half = -0.5 * q
                    ok, q, ent, cash, fee = trade(q, ent, eq, 0.0, half, m, m, imr, fee_rate)
                    qv[a] = q
                    ev[a] = ent
                    cv[a] = c + cash
                    n_reduce += 1
                    base += half
                    fees += fee
                    volume += abs(half) * m
        # 4. An empty slot takes the next arrival.
        elif taken < n_arrive and c == 0.0:
            notional, side, lev, usage, sa = draw_trader(
                sa, long_share, max_lev, leverage_mult, pop
            )
            taken += 1
            if taken == n_arrive:
                wanted = ACTS
                wanted_word = ACTS_WORD
            col = opening_collateral(notional, lev, usage, fee_rate)
            order = side * notional / m
            ok = 0.5 * notional + oi_now_usd <= oi_cap_usd  # half: OI counts one side
            if ok:
                ok, q, ent, cash, fee = trade(0.0, ev[a], col, 0.0, order, m, m, imr, fee_rate)
            if ok:  # deposit, then open; a rejected order deposits nothing
                qv[a] = q
                ev[a] = ent
                cv[a] = col + cash
                deposits += col
                base += order
                fees += fee
                volume += abs(order) * m
                n_new += 1
                new_collateral += col
                new_notional += notional
                oi_now_usd += 0.5 * notional
        # 5. Open interest after this slot's flows.
        gross += abs(q)
        a += 1

    # The arrival stream moves by the same amount every tick: skip unused candidates.
    for _ in range(UNIFORMS_PER_TRADER * (max(budget, n_arrive) - taken)):
        _, sa = next_u64(sa)

    # Ordinary volume: round trips by about VOLUME_TRADER_FRAC of the open accounts.
    target_usd = pop[C_TURNOVER_PER_TICK] * (0.5 * gross * m) * (demand * volume_mult)
    if target_usd > 0.0 and (halt_mask & HALT_NEW_POSITIONS) == 0:
        n_chosen = 0
        room_usd = 0.0
        gap, st = geometric_gap_tabled(st, log1m_vol, n_acc + 1, vol_start, vol_thresholds,
                                       vol_log1m)  # fmt: skip
        slot = first_slot + gap - 1
        while slot < n_acc:
            q = qv[slot]
            if q != 0.0:
                notional = abs(q) * m
                eq = cv[slot] + q * (m - ev[slot])
                if eq >= (imr + 2.0 * fee_rate) * notional * (1.0 + IMR_HEADROOM_REL):
                    chosen[n_chosen] = slot
                    n_chosen += 1
                    room_usd += notional
            gap, st = geometric_gap_tabled(st, log1m_vol, n_acc + 1, vol_start,
                                           vol_thresholds, vol_log1m)  # fmt: skip
            slot += gap
        room_usd *= 2.0  # traded if every round trip were a full close and re-open
        if room_usd > 0.0:
            scale = min(target_usd / room_usd, 1.0)
            for i in range(n_chosen):
                a = chosen[i]
                q = qv[a]
                ent = ev[a]
                c = cv[a]
                first = -scale * q  # -sign(q) x scale |q|: a reduction, never rejected
                for leg in (first, -first):
                    ok, q, ent, cash, fee = trade(q, ent, c + q * (m - ent), 0.0, leg, m, m,
                                                  imr, fee_rate)  # fmt: skip
                    if ok:
                        c += cash
                        base += leg
                        fees += fee
                        volume += abs(leg) * m
                qv[a] = q
                ev[a] = ent
                cv[a] = c

    store(rng_state, e, POPULATION_STREAM, st)
    store(rng_state, e, ARRIVAL_STREAM, sa)
    net_deposits[e] += deposits
    to_fund = book_exchange(
        counterparty_size, counterparty_cash, fee_revenue, e, 0, base, base * m, fees,
        packed[e, P_TRADE_FUND_SHARE],
    )  # fmt: skip
    return (
        n_new, n_exits, n_top, n_reduce, top_usd, withdrawn, new_collateral, new_notional,
        volume, fees, to_fund,
    )  # fmt: skip


@jit(error_model="numpy")
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
    exit_mult,
    halt_mask,
    leverage_cap,
    oi_cap_usd,
    first_slot,
    active,
    counts,
    usd,
):
    """One population step of every exchange, in place; events into ``counts`` and ``usd``.

    ``active`` ``(E,)`` says which exchanges step now: each exchange runs the population on its
    own clock (its tick within its episode), so exchanges reset at different times stay exact.

    ``marks`` is ``(E, 1)``; ``counts`` ``(E, N_COUNT_EVENTS)`` and ``usd``
    ``(E, N_USD_EVENTS)`` must start at zero; ``collateral``, ``size`` and ``entry`` must be
    C-contiguous with one market. The maintenance requirement is ``mmr x N``, or with tiers
    (``floor_usd`` non-empty) ``(N x tier_mmr_k - cum_k) x mmr / base_mmr`` for the bracket
    ``k`` of ``N`` (:class:`fundgym.envs.core.params.MarginTiers`).

    Per exchange, three passes: :func:`flag_slots` marks the slots that may act (a vector
    loop); one pass in slot order runs every marked slot, and every slot the exit sampler
    lands on, through steps 1-4 of the module docstring and sums ``|size|`` after the flows;
    then the ordinary volume. A slot's flows read and write that slot alone, so marking all
    slots first from the values the loop would find gives the same slots as testing each in
    turn. The empty slots marked are all of them; the loop takes the first while arrivals
    last, as before.
    """
    n_envs, n_acc = collateral.shape
    chosen = np.empty(n_acc, dtype=np.int64)
    flags = np.zeros(n_acc + 7 - (n_acc + 7) % 8, dtype=np.uint8)  # padded to whole words
    for e in range(n_envs):
        if not active[e]:
            continue
        (
            counts[e, E_ARRIVALS], counts[e, E_EXITS], counts[e, E_TOP_UPS],
            counts[e, E_REDUCTIONS], usd[e, E_TOP_UP_USD], usd[e, E_WITHDRAWN_USD],
            usd[e, E_NEW_COLLATERAL_USD], usd[e, E_NEW_NOTIONAL_USD], usd[e, E_VOLUME_USD],
            usd[e, E_TRADING_FEES_USD], usd[e, E_FUND_FEE_INCOME_USD],
        ) = population_step_exchange(
            e, rng_state, collateral, size, entry, counterparty_size, counterparty_cash,
            fee_revenue, net_deposits, packed, floor_usd, tier_mmr, cum_usd, tier_scale_div, pop,
            marks[e, 0], arrival_mult[e], leverage_mult[e], long_share_shift[e], volume_mult[e],
            exit_mult[e], halt_mask[e], leverage_cap[e], oi_cap_usd[e], first_slot[e], chosen,
            flags,
        )  # fmt: skip
