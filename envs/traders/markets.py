"""The trader population of a multi-market exchange: compiled exits and arrivals across markets.

One exchange lists ``M`` markets. Its accounts are drawn as the one-market population draws
them (:func:`~fundgym.envs.traders.kernels.draw_trader`: Pareto notional, lognormal leverage,
cross or isolated), then placed across markets:

- **Home market.** Each account's first position goes to market ``m`` with probability
  ``mix[m]``, the scenario's open-interest shares
  (:attr:`~fundgym.envs.scenarios.Scenario.market_oi_shares`): sizes are drawn alike in every
  market, so the account shares are the open-interest shares. Its leverage is capped by that
  market's initial margin, ``imr x margin_mult[m]``.
- **A second leg.** A cross account (its margin usage below 1: free collateral backs the
  position) holds a second position with probability ``second_leg_frac``: the notional is
  split in half between its home market and the next market ``(m + 1) mod M`` drawn from the
  mix without the home one, on the same side ([E]: the crowded long across majors and alts of
  10 Oct 2025). Its one balance backs both legs: cross margin. An isolated account holds one
  position in one slot, so its margin never reads another slot's.
- **Collateral assets.** A cross account posts ``asset_margin_frac`` of its margin in one of
  the ``K`` collateral assets (chosen uniformly) with probability ``asset_share``: ``units =
  margin x asset_margin_frac / (price x (1 - haircut))``, so its equity at the venue's price
  is exactly the margin it meant to post. It deposits ``units x price``: the haircut is the
  venue's discount on what it brings.

Each population step, in slot order (slots below ``first_slot`` are scripted and left alone):

1. **Exits, per leg.** Each open leg in market ``m`` closes at the market's mark with
   probability ``p_exit[m]`` (the one-market exit hazard times that market's own stress
   response, :func:`~fundgym.envs.traders.kernels.market_response`: traders de-risk the
   market that is crashing). The close is a taker trade (:func:`~fundgym.envs.core.trading.trade`);
   an account whose equity would not cover the fee (a bankrupt one) cannot walk away.
2. **Near liquidation.** An account still open whose equity is below ``(1 + buffer) x`` its
   requirement (each market's flat MMR times its multiple; a tier table is not read here)
   reacts with the one-market probabilities: tops up to ``(1 + 2 buffer) x``, halves every
   leg, or does nothing.
3. **Leaving.** A flat account with money left (or rounding dust of debt) withdraws its USD
   and its collateral assets and leaves, as in the one-market population.
4. **Arrivals.** Market ``m`` draws ``Poisson(lam[m])`` new accounts whose home it is (one
   uniform per market from the arrival stream, then each account's draws); they fill empty
   slots in slot order, as above, paying the opening fee. A market's stress thins its own
   arrivals, not the others'; a market's open-interest cap refuses what would lift it above.

Venue halts act as in one market (``halt``, ``leverage_cap``). Not modelled here, unlike the
one-market population: ordinary round-trip volume and the precursors' leverage build-up. Each
market's fees are booked per market (:func:`~fundgym.envs.core.trading.book_exchange`) and the
fund's share is returned per market, for the shared fund or its market's segment.
"""

from __future__ import annotations

import numpy as np

from fundgym.envs.core.params import P_IMR, P_MMR, P_TAKER_FEE, P_TRADE_FUND_SHARE
from fundgym.envs.core.random_nb import load, poisson_quantile, store, uniform
from fundgym.envs.core.rng import ARRIVAL_STREAM, POPULATION_STREAM
from fundgym.envs.core.trading import book_exchange, trade
from fundgym.envs.jit import jit
from fundgym.envs.traders.kernels import (
    C_BUFFER,
    C_LONG_SHARE,
    C_P_REACT,
    C_REDUCE_SHARE,
    C_TOP_UP_SHARE,
    DUST_DEBT_USD,
    HALT_WITHDRAWALS,
    draw_trader,
    opening_collateral,
)

# Event columns of :func:`markets_population_exchange` (USD unless a count).
ME_ARRIVALS, ME_EXITS, ME_LEAVERS, ME_WITHDRAWN_USD, ME_DEPOSITED_USD, ME_FEES_USD = range(6)
ME_TOP_UPS, ME_REDUCTIONS, ME_TOP_UP_USD = 6, 7, 8
N_MARKETS_EVENTS = 9


@jit
def _draw_market(u, mix_cdf):  # type: ignore[no-untyped-def]
    """The market a uniform picks from the mix's cumulative shares (the last on rounding)."""
    n = mix_cdf.size
    for m in range(n):
        if u < mix_cdf[m]:
            return m
    return n - 1


@jit(inline="always")
def _any_nonzero(rows, e, a):  # type: ignore[no-untyped-def]
    """Whether ``rows[e, a, :]`` (positions by market, or asset units) holds anything."""
    for j in range(rows.shape[2]):  # noqa: SIM110 (a loop compiles; a generator does not)
        if rows[e, a, j] != 0.0:
            return True
    return False


@jit(inline="always")
def _is_empty(size, collateral, units, e, a):  # type: ignore[no-untyped-def]
    """Slot ``a`` of exchange ``e`` holds nothing: no position, no balance, no asset."""
    return (
        collateral[e, a] == 0.0 and not _any_nonzero(size, e, a) and not _any_nonzero(units, e, a)
    )


@jit(inline="always")
def _equity(collateral, size, entry, units, mark, unit_value, e, a):  # type: ignore[no-untyped-def]
    """Account ``a``'s cross equity: USD, every market's unrealised PnL, its assets' value."""
    equity = collateral[e, a]
    for j in range(size.shape[2]):
        equity += size[e, a, j] * (mark[j] - entry[e, a, j])
    for k in range(units.shape[2]):
        equity += units[e, a, k] * unit_value[k]
    return equity


@jit
def place_accounts(  # type: ignore[no-untyped-def]
    e,
    rng_state,
    stream,
    n_new,
    home_market,
    initial,
    collateral,
    size,
    entry,
    units,
    counterparty_size,
    counterparty_cash,
    packed,
    pop,
    mark,
    mix_cdf,
    margin_mult,
    oi_room,
    second_leg_frac,
    asset_share,
    asset_margin_frac,
    unit_value,
    unit_price,
    first_slot,
    leverage_cap,
    reduce_only,
    base,
    quote,
    fees,
):
    """Place ``n_new`` accounts of exchange ``e`` into its empty slots (module docstring).

    Draws come from exchange ``e``'s stream ``stream`` of ``rng_state`` (the population
    stream at reset, the arrival stream for arrivals). Each account draws one uniform (its
    home market), :func:`draw_trader`'s seven, then three more (second leg, collateral
    asset, which asset), whatever it becomes, so the stream's use is the same for every
    outcome. ``home_market``: every account's home market, or -1 to draw each from the mix
    (the book at reset; arrivals come per market, each market's own count).
    ``margin_mult`` ``(M,)`` scales each market's margin as the engine's
    ``market_mmr_mult`` does, initial margin included: the order's leverage is capped at
    ``1 / (imr x margin_mult[home])`` and at ``leverage_cap[home]`` (``(M,)``: a venue's cap
    on new positions, ``inf``: none), and a second leg is taken only where that leverage is
    allowed and the market is not ``reduce_only`` (``(M,)``; the caller sends no arrival home
    to such a market).
    ``oi_room`` ``(M,)`` is what each market's open-interest cap still allows (USD, one side;
    ``inf``: no cap), drawn down as accounts are placed: an account whose home leg does not
    fit is refused (its draws are spent), a second leg that does not fit is not taken.
    ``initial``: the book at reset, whose accounts keep
    ``notional x (1 / (leverage x usage) + fee)`` as the one-market initial book does and pay
    nothing (the caller counts the book in the starting total); otherwise they are arrivals,
    depositing :func:`opening_collateral` and paying the opening fee, whose per-market
    orders, quotes and fees are added to ``base``, ``quote`` and ``fees`` for the caller to
    book. Accounts past the last empty slot are dropped (slots are capacity).

    Returns:
        ``(placed, deposited_usd)``: accounts placed and what they brought (0 at reset).
    """
    st = load(rng_state, e, stream)
    n_acc = collateral.shape[1]
    n_mkt = mark.size
    n_assets = unit_value.size
    imr = packed[e, P_IMR]
    fee_rate = packed[e, P_TAKER_FEE]
    placed = 0
    deposited = 0.0
    a = first_slot
    for _ in range(n_new):
        u_home, st = uniform(st)
        home = _draw_market(u_home, mix_cdf) if home_market < 0 else home_market
        max_lev = min(1.0 / (imr * margin_mult[home]), leverage_cap[home])
        notional, side, lev, usage, st = draw_trader(st, pop[C_LONG_SHARE], max_lev, 1.0, pop)
        u_leg, st = uniform(st)
        u_asset, st = uniform(st)
        u_which, st = uniform(st)
        while a < n_acc and not _is_empty(size, collateral, units, e, a):
            a += 1
        if a >= n_acc:
            continue
        if 0.5 * notional > oi_room[home]:  # the home market's OI cap refuses the order
            continue
        legs = 1
        other = home
        if n_mkt > 1 and usage < 1.0 and u_leg < second_leg_frac:
            legs = 2
            # the next market by the mix without the home one: redraw on the rest of the cdf
            lo = mix_cdf[home - 1] if home > 0 else 0.0
            width = mix_cdf[home] - lo
            v = u_leg / second_leg_frac * (1.0 - width)  # uniform on [0, 1 - width)
            other = _draw_market(v if v < lo else v + width, mix_cdf)
            if other == home:  # rounding at a boundary
                other = (home + 1) % n_mkt
            # the order's leverage is too high there, the venue takes no new positions there
            # or its OI cap has no room: one leg
            if (
                lev * imr * margin_mult[other] > 1.0
                or lev > leverage_cap[other]
                or reduce_only[other]
                or 0.25 * notional > oi_room[other]
            ):
                legs = 1
                other = home
        if initial:
            margin = notional * (1.0 / (lev * usage) + fee_rate)
        else:
            margin = opening_collateral(notional, lev, usage, fee_rate) - notional * fee_rate
        usd = margin
        if n_assets > 0 and usage < 1.0 and u_asset < asset_share:
            k = min(int(u_which * n_assets), n_assets - 1)
            n_units = margin * asset_margin_frac / unit_value[k]
            units[e, a, k] = n_units
            usd = margin * (1.0 - asset_margin_frac)
            if not initial:
                deposited += n_units * unit_price[k]
        collateral[e, a] = usd
        leg_notional = notional / legs
        for j in range(legs):
            m = home if j == 0 else other
            oi_room[m] -= 0.5 * leg_notional  # open interest counts one side
            q = side * leg_notional / mark[m]
            size[e, a, m] = q
            entry[e, a, m] = mark[m]
            if not initial:
                base[m] += q
                quote[m] += q * mark[m]
                fees[m] += leg_notional * fee_rate
        if initial:
            for j in range(legs):
                m = home if j == 0 else other
                counterparty_size[e, m] -= size[e, a, m]
                counterparty_cash[e] += size[e, a, m] * mark[m]
        else:
            deposited += usd + notional * fee_rate  # the opening fee is paid from the deposit
        placed += 1
        a += 1
    store(rng_state, e, stream, st)
    return placed, deposited


@jit
def markets_population_exchange(  # type: ignore[no-untyped-def]
    e,
    rng_state,
    collateral,
    size,
    entry,
    units,
    counterparty_size,
    counterparty_cash,
    fee_revenue,
    net_deposits,
    packed,
    pop,
    mark,
    p_exit,
    lam,
    mix_cdf,
    margin_mult,
    oi_room,
    second_leg_frac,
    asset_share,
    asset_margin_frac,
    unit_value,
    unit_price,
    first_slot,
    halt,
    leverage_cap,
    reduce_only,
    base,
    quote,
    fees,
    fund_income,
    events,
):
    """Exchange ``e``'s population step across its markets, in place (module docstring).

    ``mark`` ``(M,)`` prices the trades; ``p_exit`` ``(M,)`` is each leg's exit probability
    this step and ``lam`` ``(M,)`` each market's expected arrivals; ``unit_value`` ``(K,)`` is
    each asset's price less its haircut (what a unit counts for) and ``unit_price`` ``(K,)``
    its price (what a unit is worth outside). ``halt`` holds the venue's exchange-wide halt
    (``HALT_WITHDRAWALS``: nobody leaves with money, exits still close), and per market
    ``leverage_cap`` ``(M,)`` caps new positions' leverage (``inf``: none) and ``reduce_only``
    ``(M,)`` admits no arrival (nor second leg) there, their draws still spent, as in the
    one-market population (whose reduce-only is the whole exchange's). ``oi_room`` ``(M,)``:
    what each market's open-interest cap still allows new positions (:func:`place_accounts`;
    ``inf``: no cap; drawn down in place). ``base``, ``quote``, ``fees`` and ``fund_income``
    are ``(M,)`` scratch and outputs (overwritten): the fund's share of each market's fees
    lands in ``fund_income``. ``events`` ``(N_MARKETS_EVENTS,)`` is overwritten.
    """
    n_acc = collateral.shape[1]
    n_mkt = mark.size
    n_assets = unit_value.size
    imr = packed[e, P_IMR]
    fee_rate = packed[e, P_TAKER_FEE]
    st = load(rng_state, e, POPULATION_STREAM)
    for m in range(n_mkt):
        base[m] = 0.0
        quote[m] = 0.0
        fees[m] = 0.0
    n_exits = 0
    n_leavers = 0
    withdrawn = 0.0
    n_top = 0
    n_reduce = 0
    top_usd = 0.0
    mmr = packed[e, P_MMR]
    buffer = pop[C_BUFFER]
    near_mult = 1.0 + buffer
    top_up_mult = 1.0 + 2.0 * buffer
    p_top = pop[C_P_REACT] * pop[C_TOP_UP_SHARE]
    p_act = pop[C_P_REACT] * (pop[C_TOP_UP_SHARE] + pop[C_REDUCE_SHARE])
    for a in range(first_slot, n_acc):
        for m in range(n_mkt):
            q = size[e, a, m]
            if q == 0.0:
                continue
            u, st = uniform(st)
            if u >= p_exit[m]:
                continue
            equity = _equity(collateral, size, entry, units, mark, unit_value, e, a)
            if equity - abs(q) * mark[m] * fee_rate < 0.0:  # a bankrupt account cannot walk away
                continue
            _, new_q, new_entry, cash, fee = trade(
                q, entry[e, a, m], equity, 0.0, -q, mark[m], mark[m], imr, fee_rate
            )
            size[e, a, m] = new_q
            entry[e, a, m] = new_entry if new_q != 0.0 else 0.0
            collateral[e, a] += cash
            base[m] -= q
            quote[m] -= q * mark[m]
            fees[m] += fee
            n_exits += 1
        if _any_nonzero(size, e, a):
            # 2b. Near liquidation (equity below (1 + buffer) x its requirement, each market's
            #     flat MMR x its multiple): top up to (1 + 2 buffer) x, halve every leg, or
            #     nothing, as one market's accounts do.
            equity = _equity(collateral, size, entry, units, mark, unit_value, e, a)
            req = 0.0
            for j in range(n_mkt):
                req += abs(size[e, a, j]) * mark[j] * mmr * margin_mult[j]
            if req > 0.0 and equity < near_mult * req:
                u, st = uniform(st)
                if u < p_top:
                    amount = top_up_mult * req - equity
                    collateral[e, a] += amount
                    net_deposits[e] += amount
                    n_top += 1
                    top_usd += amount
                elif u < p_act:  # halving is a reduction: it always executes
                    for j in range(n_mkt):
                        q = size[e, a, j]
                        if q == 0.0:
                            continue
                        half = -0.5 * q
                        _, new_q, new_entry, cash, fee = trade(
                            q, entry[e, a, j], equity, 0.0, half, mark[j], mark[j], imr,
                            fee_rate,
                        )  # fmt: skip
                        size[e, a, j] = new_q
                        entry[e, a, j] = new_entry
                        collateral[e, a] += cash
                        base[j] += half
                        quote[j] += half * mark[j]
                        fees[j] += fee
                    n_reduce += 1
            continue
        c = collateral[e, a]
        if halt & HALT_WITHDRAWALS:
            continue
        if c > 0.0 or _any_nonzero(units, e, a) or (-DUST_DEBT_USD < c < 0.0):
            out = c
            for k in range(n_assets):
                out += units[e, a, k] * unit_price[k]
                units[e, a, k] = 0.0
            collateral[e, a] = 0.0
            net_deposits[e] -= out
            withdrawn += out
            n_leavers += 1
    store(rng_state, e, POPULATION_STREAM, st)
    sa = load(rng_state, e, ARRIVAL_STREAM)
    counts = np.zeros(n_mkt, np.int64)
    for m in range(n_mkt):
        u, sa = uniform(sa)
        counts[m] = 0 if reduce_only[m] else poisson_quantile(u, lam[m])
    store(rng_state, e, ARRIVAL_STREAM, sa)
    placed = 0
    deposited = 0.0
    for m in range(n_mkt):
        if counts[m] == 0:
            continue
        got, brought = place_accounts(
            e, rng_state, ARRIVAL_STREAM, counts[m], m, False, collateral, size, entry, units,
            counterparty_size, counterparty_cash, packed, pop, mark, mix_cdf, margin_mult,
            oi_room, second_leg_frac, asset_share, asset_margin_frac, unit_value, unit_price,
            first_slot, leverage_cap, reduce_only, base, quote, fees,
        )  # fmt: skip
        placed += got
        deposited += brought
    net_deposits[e] += deposited
    total_fees = 0.0
    for m in range(n_mkt):
        fund_income[m] = book_exchange(
            counterparty_size, counterparty_cash, fee_revenue, e, m, base[m], quote[m],
            fees[m], packed[e, P_TRADE_FUND_SHARE],
        )  # fmt: skip
        total_fees += fees[m]
    events[ME_ARRIVALS] = placed
    events[ME_EXITS] = n_exits
    events[ME_LEAVERS] = n_leavers
    events[ME_WITHDRAWN_USD] = withdrawn
    events[ME_DEPOSITED_USD] = deposited
    events[ME_FEES_USD] = total_fees
    events[ME_TOP_UPS] = n_top
    events[ME_REDUCTIONS] = n_reduce
    events[ME_TOP_UP_USD] = top_usd
