"""The venue liquidation modes across markets: Hyperliquid's engine, vault and ADL, and dYdX v4's.

:func:`fundgym.envs.core.kernels.waterfall_cross_kernel` runs the ``partial`` waterfall over
cross-margined accounts in ``M`` markets, in one pass a tick. Hyperliquid's engine is not a
waterfall over one snapshot: it checks every account once a second, sends market orders that
fill no worse than the account's bankruptcy price, slices big positions, hands accounts below
2/3 of their requirement to the HLP vault with all their positions, and deleverages what an
account below zero equity leaves (``../shared/reference/mechanics.md``, section 4). On 10 Oct
2025 that engine deleveraged $2.10B over 162 tickers while only 302 of 63,637 liquidations ended
below zero: the ADL notional is the whole position of the few accounts that went negative.
:func:`venue_cross_kernel` is that engine over several markets, with
:func:`~fundgym.envs.core.kernels._venue_one`'s rules per leg:

* **Sub-steps.** One check a second (:func:`~fundgym.envs.core.liquidation.n_substeps`); each
  market's oracle and book read a path from the previous tick's to this tick's
  (:func:`~fundgym.envs.core.liquidation.path_price`), every market on its own path. The
  accounts checked are those the scan listed at the tick's end.
* **The check** is the cross account's: equity over every market against the sum of its legs'
  requirements (each scaled by ``mmr_mult``), as in the scan.
* **The vault** (``hyperliquid`` with an active vault): an account with equity in ``[0, 2/3)``
  of its requirement goes to the vault with every leg and its equity
  (:func:`~fundgym.envs.core.vault.vault_takeover_cross`), if the vault stays margined.
* **Orders**, one per leg (an account's position in one market), priced together through that
  market's book on that market's flow:

  - ``hyperliquid``: the whole leg, or 20% of a leg worth more than $100k first, then a 30 s
    cooldown for the account; the order fills no worse than the leg's bankruptcy price (its
    apportioned collateral, :func:`~fundgym.envs.core.kernels._leg_collateral`), or is
    refused. Below 2/3 of the requirement without a vault (or with one that cannot take it,
    or below zero equity), every leg closes whole with no limit: the backstop.
  - ``binance``: every leg whole; a deficient account's legs are taken over (the whole
    surplus to the fund, the deficit a shortfall).
  - ``bitmex``: every leg whole, always taken over at bankruptcy by the fund.
  - ``dydx_v4``: one order a block per subaccount, on one of its positions (the first from an
    offset that rotates with the block, :func:`_dydx_leg`; dYdX draws it pseudo-randomly), of
    10% of the position (at least $1,000, at most $100,000 a block), no worse than the
    fillable price: the subaccount's bankruptcy rating times the position's own requirement.
    The fund pays a fill past the leg's bankruptcy price whole (its market's pot and cap,
    and at most $1M a block) or rejects it; a rejected or refused order of an account below
    zero equity deleverages that whole position, at its bankruptcy price under dYdX's rule.

* **Fills, fund, ADL, socialisation** per leg and per market as in
  :func:`~fundgym.envs.core.kernels._waterfall_cross_one`: the fund's pots pay each market's
  legs within its cap (over the whole tick; segments lend one another within
  ``transfer_cap``), what they do not cover is deleveraged in that
  market against its counterparties (:func:`~fundgym.envs.core.kernels._deleverage_market`,
  ranked on their cross equity; ``hyperliquid``'s rule closes them at the sub-step's oracle),
  and a refused order of an account below zero equity is deleveraged whole (Hyperliquid's ADL
  fires "when account value is negative"); what ADL cannot place closes in the book, its loss
  socialised in that market.

After the sub-steps, :func:`~fundgym.envs.core.vault.vault_unwind_cross` works the vault's
inventory into each market's book (:func:`vault_cross_kernel`).

Every sum is exchange ``i``'s own, as in every kernel here: exchange ``i`` of a batch computes
bit for bit what it computes alone.
"""

from __future__ import annotations

import numpy as np

from fundgym.envs.core.events import (
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_LIQUIDATOR_ABSORBED,
    EV_N_LIQUIDATIONS,
    EV_SOCIALIZED_LOSS,
    EV_UNRECOVERED,
)
from fundgym.envs.core.kernels import (
    _account_margin,
    _bankruptcy_value,
    _deleverage_market,
    _insurance_fund_delta,
    _leg_collateral,
    _listed_mask,
    _record_orders,
    _side_prices,
    lend_between_pots,
    requirement,
    settle_leg,
    socialize_markets,
)
from fundgym.envs.core.liquidation import (
    DYDX_BANKRUPTCY_ADJUSTMENT,
    DYDX_MAX_INSURANCE_LOST_USD,
    DYDX_SPREAD_TO_MMR,
    HL_BACKSTOP_FRACTION_OF_MM,
    HL_SLICE_FRACTION,
    HL_SLICE_THRESHOLD_USD,
    LIQ_BINANCE,
    LIQ_BITMEX,
    LIQ_DYDX_V4,
    LIQ_HYPERLIQUID,
    dydx_close_base,
    dydx_fillable_price,
    hl_cooldown_substeps,
    n_substeps,
    path_price,
)
from fundgym.envs.core.params import (
    P_LIQ_FEE,
    P_LIQ_FUND_SHARE,
    P_LIQUIDATOR_MULT,
    P_MMR,
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
    vault_over_loss_limit,
    vault_takeover_cross,
    vault_tick_end_limit,
    vault_unwind_cross,
)
from fundgym.envs.jit import jit

__all__ = ["CROSS_VENUE_MODES", "vault_cross_kernel", "venue_cross_kernel"]

#: The venue modes :func:`venue_cross_kernel` runs (codes of
#: :data:`fundgym.envs.core.params.LIQUIDATION_MODES`): every venue mode.
CROSS_VENUE_MODES: tuple[int, ...] = (LIQ_HYPERLIQUID, LIQ_BINANCE, LIQ_BITMEX, LIQ_DYDX_V4)


@jit(error_model="numpy")
def venue_cross_kernel(  # type: ignore[no-untyped-def]
    coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base, book_end, depth,
    max_impact, tick_seconds, oracle_from, book_from, fund_available, fund_group, fund_cap,
    stages, socialization, adl_policy, mode, cp_size, cp_cash, liquidator_rewards, unrecovered,
    vault, ev, flow, market_paid, market_income, market_adl_volume, market_adl_haircut,
    market_socialized, market_unrecovered, liq_idx, transfer_cap, pot_lent,
):  # fmt: skip
    """The venue mode ``mode`` over ``M`` markets for every exchange with a listed account.

    Arrays as :func:`~fundgym.envs.core.kernels.waterfall_cross_kernel`'s, plus: ``book_end``
    ``(E, M)`` each market's book at the tick's end, ``depth`` ``(E, M)`` its depth (USD per
    1%), ``max_impact`` ``(M,)`` its book's cap, ``oracle_from`` / ``book_from`` ``(E, M)`` the
    previous tick's oracle and book (not > 0: no previous tick), ``vault`` the vault rows
    (one inventory column per market), ``transfer_cap`` / ``pot_lent`` as
    :func:`~fundgym.envs.core.kernels.waterfall_cross_kernel`'s (the cap holds over the whole
    tick). ``flow`` is rewritten with the orders actually sent.
    """
    for i in range(size.shape[0]):
        n = int(ev[i, EV_N_LIQUIDATIONS])
        if n > 0:
            _venue_cross_one(
                i, coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base[0],
                book_end[i], depth[i], max_impact, tick_seconds, oracle_from[i], book_from[i],
                fund_available[i], fund_group, fund_cap[i], stages, socialization, adl_policy,
                mode, cp_size, cp_cash, liquidator_rewards, unrecovered, vault, ev, flow,
                market_paid[i], market_income[i], market_adl_volume[i], market_adl_haircut[i],
                market_socialized[i], market_unrecovered[i], liq_idx[i, :n],
                transfer_cap[i : i + 1].copy(), pot_lent[i],
            )  # fmt: skip


@jit(error_model="numpy")
def vault_cross_kernel(  # type: ignore[no-untyped-def]
    vault, cp_size, cp_cash, marks, book, depth, max_impact, packed, loss_to_fund, ev, flow,
    unrecovered, coll, size, entry, stages, adl_policy, market_adl_volume,
):  # fmt: skip
    """Each active vault's unwind over every market at the tick's end (``vault_unwind_cross``).

    A vault beyond its loss limit is first deleveraged at the markets' oracles against every
    account (:func:`~fundgym.envs.core.vault.vault_deleverage`; with ADL a stage).
    """
    for i in range(vault.shape[0]):
        if vault[i, V_ACTIVE] > 0.0:
            vault_tick_end_limit(
                vault, i, coll, size, entry, cp_size, cp_cash, marks[i], stages, adl_policy, ev,
                market_adl_volume[i],
            )  # fmt: skip
            vault_unwind_cross(
                vault, i, cp_size, cp_cash, marks[i], book[i], depth[i], max_impact,
                packed[i, P_MMR], loss_to_fund, ev, flow, unrecovered,
            )  # fmt: skip


@jit(error_model="numpy")
def _venue_cross_one(  # type: ignore[no-untyped-def]
    i, coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base_mmr, book_end, depth,
    max_impact, tick_seconds, oracle_from, book_from, fund_available, fund_group, fund_cap,
    stages, socialization, adl_policy, mode, cp_size, cp_cash, liquidator_rewards, unrecovered,
    vault, ev, flow, market_paid, market_income, market_adl_volume, market_adl_haircut,
    market_socialized, market_unrecovered, idx, transfer_left, lent,
):  # fmt: skip
    """Exchange ``i``'s sub-steps on its listed accounts ``idx`` (module docstring)."""
    n_acc = size.shape[1]
    n_mk = size.shape[2]
    n = idx.shape[0]
    n_max = n * n_mk
    mmr = packed[i, P_MMR]
    fee_rate = packed[i, P_LIQ_FEE]
    fund_share = packed[i, P_LIQ_FUND_SHARE]
    mult = packed[i, P_LIQUIDATOR_MULT]
    with_vault = vault[i, V_ACTIVE] > 0.0 and (stages & W_NO_VAULT) == 0
    adl_on = (stages & W_NO_ADL) == 0
    fund_on = (stages & W_NO_FUND) == 0
    social_on = (stages & W_NO_SOCIALIZE) == 0
    n_pots = fund_available.shape[0]
    available = np.zeros(n_pots)
    if fund_on:
        for g in range(n_pots):
            available[g] = fund_available[g]
    cap_left = fund_cap.copy()
    # The sub-step's oracle of every market sits in row i of `sub`, so that the shared
    # helpers (which read marks[i, j]) price this exchange at it.
    sub = np.zeros((size.shape[0], n_mk))
    bp = np.zeros(n_mk)
    for j in range(n_mk):
        flow[i, j, 0] = 0.0
        flow[i, j, 1] = 0.0
    leg_k = np.empty(n_max, np.int64)
    leg_j = np.empty(n_max, np.int64)
    alloc = np.zeros(n_max)
    side = np.zeros(n_max)
    close = np.zeros(n_max)
    limit = np.zeros(n_max)
    price = np.zeros(n_max)
    fee = np.zeros(n_max)
    bad = np.zeros(n_max)
    paid = np.zeros(n_max)
    need = np.zeros(n_max)
    adl_close = np.zeros(n_max)
    takeover = np.zeros(n_max, np.bool_)
    refused = np.zeros(n_max, np.bool_)
    deficient = np.zeros(n_max, np.bool_)
    cool_until = np.zeros(n, np.int64)
    below = np.zeros(n, np.bool_)
    is_liq = np.zeros(0, np.bool_)
    sells = np.zeros(n_mk)
    buys = np.zeros(n_mk)
    paid_sells = np.zeros(n_mk)  # the orders outside liquidators are paid for, per market
    paid_buys = np.zeros(n_mk)
    taken_sell = np.zeros(n_mk)  # what they took in each market this tick (their capacity)
    taken_buy = np.zeros(n_mk)
    got_sell = np.zeros(n_mk)
    got_buy = np.zeros(n_mk)
    fills = np.empty((4, n_mk))  # each market's book and liquidators' fills, per side
    paid_for = np.zeros(n_max, np.bool_)  # a leg whose fee pays them: solvent, no takeover
    solvent = np.zeros(n, np.bool_)
    loss_m = np.zeros(n_mk)
    pot_income = np.zeros(n_pots)
    lent_now = np.zeros(n_pots)  # what each pot lent this sub-step (its "spent")
    cooldown = hl_cooldown_substeps()
    volume = 0.0
    fees = 0.0
    income = 0.0
    income_shorts = 0.0
    rewards = 0.0
    bad_debt = 0.0
    shortfall = 0.0
    overshoot = 0.0
    cp_quote = 0.0
    charged_total = 0.0
    unrecovered_total = 0.0
    n_steps = n_substeps(mode, tick_seconds)
    for step in range(n_steps):
        for j in range(n_mk):
            sub[i, j] = path_price(oracle_from[j], marks[i, j], step, n_steps)
            bp[j] = path_price(book_from[j], book_end[j], step, n_steps)
        # 1. The legs of every listed account below its requirement at the sub-step's oracles.
        n_legs = 0
        book_cannot = False  # a takeover the books could not take from the vault at once
        for k in range(n):
            a = idx[k]
            eq, req = _account_margin(
                coll, size, entry, sub, mmr_mult, i, a, mmr, floors, rates, cums, base_mmr
            )
            solvent[k] = eq > 0.0
            if not (req > 0.0 and eq < req):
                continue  # not yet on the path, never, or a slice brought it back
            if (
                with_vault
                and eq >= 0.0
                and eq < HL_BACKSTOP_FRACTION_OF_MM * req
                and vault_takeover_cross(vault, i, eq, size, a, sub[i], mmr)
            ):
                # Taken over at once into every market's book, would the legs lose more than
                # the margin that came with them? Then the vault deleverages at this check.
                if vault[i, V_LOSS_LIMITED] > 0.0:  # a liquidator that deleverages
                    loss = 0.0
                    for j in range(n_mk):
                        q = size[i, a, j]
                        loss += book_unwind_loss(q, sub[i, j], bp[j], depth[j], max_impact[j])
                    book_cannot |= loss > eq
                notional = 0.0
                for j in range(n_mk):
                    notional += abs(size[i, a, j]) * sub[i, j]
                    size[i, a, j] = 0.0
                record_takeover(ev, i, notional)  # the account's equity went with it
                coll[i, a] = 0.0
                continue
            if mode == LIQ_DYDX_V4:
                n_legs = _dydx_leg(
                    n_legs, k, a, i, step, eq, req, coll, size, entry, sub, mmr_mult, mmr, floors,
                    rates, cums, base_mmr, leg_k, leg_j, alloc, side, close, limit, takeover,
                    deficient, refused, adl_close, need, paid, fee, bad,
                )  # fmt: skip
                continue
            backstop = mode == LIQ_BITMEX or (mode == LIQ_BINANCE and eq < 0.0)
            if mode == LIQ_HYPERLIQUID:
                backstop = eq < HL_BACKSTOP_FRACTION_OF_MM * req
            may_slice = mode == LIQ_HYPERLIQUID and not backstop and cool_until[k] <= step
            sliced = False
            for j in range(n_mk):
                q = size[i, a, j]
                if q == 0.0:
                    continue
                o = n_legs
                n_legs += 1
                c_j = _leg_collateral(
                    coll, size, entry, sub, mmr_mult, i, a, j, req, mmr, floors, rates, cums,
                    base_mmr,
                )  # fmt: skip
                s = 1.0 if q > 0.0 else -1.0
                abs_q = abs(q)
                # The leg's bankruptcy price: its apportioned collateral is gone there.
                _new_leg(
                    o, k, j, c_j, s, abs_q, -s * np.inf if backstop else entry[i, a, j] - c_j / q,
                    backstop, eq < 0.0, leg_k, leg_j, alloc, side, close, limit, takeover,
                    deficient, refused, adl_close, need, paid, fee, bad,
                )  # fmt: skip
                if may_slice and abs_q * sub[i, j] > HL_SLICE_THRESHOLD_USD:
                    part = HL_SLICE_FRACTION * abs_q
                    close[o] = part if part > 0.0 else abs_q
                    sliced = True
            if sliced:
                cool_until[k] = step + cooldown
        if with_vault and adl_on and (book_cannot or vault_over_loss_limit(vault, i, sub[i])):
            # A takeover the books cannot take, or the vault's loss limit, after this check's
            # takeovers.
            is_liq = _listed_mask(is_liq, n_acc, idx)
            vault_deleverage(
                vault, i, coll, size, entry, cp_size, cp_cash, sub[i], is_liq, adl_policy, ev,
                market_adl_volume,
            )  # fmt: skip
        if n_legs == 0:
            continue
        for o in range(n_legs):
            paid_for[o] = solvent[leg_k[o]] and not takeover[o]

        # 2. Each market's orders priced together on its book (outside liquidators, where paid,
        #    taking their capacity at the market's oracle, out of what they took this tick, as
        #    in one market); Hyperliquid's market orders
        #    fill no worse than their leg's bankruptcy price, dYdX's orders no worse than their
        #    fillable price (one pass: a refused order is not re-admitted). Without ADL a
        #    deficient account's order is not refused.
        _price_legs(
            n_legs, leg_j, side, close, refused, paid_for, bp, sub[i], depth, max_impact, mult,
            fee_rate, fund_share, taken_sell, taken_buy, sells, buys, paid_sells, paid_buys,
            got_sell, got_buy, fills, price,
        )  # fmt: skip
        if mode in (LIQ_HYPERLIQUID, LIQ_DYDX_V4):
            cut = False
            for o in range(n_legs):
                may_refuse = not takeover[o] and (adl_on or not deficient[o])
                if may_refuse and side[o] * (price[o] - limit[o]) < 0.0:
                    refused[o] = True
                    cut = True
            if cut:
                _price_legs(
                    n_legs, leg_j, side, close, refused, paid_for, bp, sub[i], depth,
                    max_impact, mult, fee_rate, fund_share, taken_sell, taken_buy, sells, buys,
                    paid_sells, paid_buys, got_sell, got_buy, fills, price,
                )  # fmt: skip
        for j in range(n_mk):
            flow[i, j, 0] += sells[j]  # they hedge what they take: the whole flow moves prices
            flow[i, j, 1] += buys[j]
            taken_sell[j] += got_sell[j]
            taken_buy[j] += got_buy[j]

        # 3. Fills: a fee capped by the surplus (its fund share to the leg's pot), or under a
        #    takeover the whole surplus; a fill past bankruptcy is a shortfall.
        for g in range(n_pots):
            pot_income[g] = 0.0
        for o in range(n_legs):
            if refused[o]:
                continue
            a = idx[leg_k[o]]
            j = leg_j[o]
            q = size[i, a, j]
            e = entry[i, a, j]
            if takeover[o]:
                raw = side[o] * (close[o] * price[o] - _bankruptcy_value(alloc[o], q, e, close[o]))
                fee[o] = max(raw, 0.0)
                bad[o] = max(-raw, 0.0)
                got = fee[o]
            else:
                delta = _insurance_fund_delta(alloc[o], q, e, close[o], price[o], fee_rate)
                fee[o] = max(delta, 0.0)
                bad[o] = max(-delta, 0.0)
                got = fee[o] * fund_share
                rewards += fee[o] - got
            income += got
            income_shorts += got if q < 0.0 else 0.0
            fees += fee[o]
            market_income[j] += got
            pot_income[fund_group[j]] += got

        # 4. The pots: this sub-step's income first, then each leg's shortfall in leg order
        #    from its market's pot, within what its market's cap has left this tick. dYdX pays
        #    a fill whole or rejects it (its pot, its cap and $1M per subaccount per block;
        #    without ADL a deficient account's fill goes ahead unpaid, its loss socialised):
        #    a rejected order leaves the book's flow.
        if fund_on:
            for g in range(n_pots):
                available[g] += pot_income[g]
        for o in range(n_legs):
            if bad[o] > 0.0:
                j = leg_j[o]
                g = fund_group[j]
                if mode == LIQ_DYDX_V4:
                    whole = min(available[g], cap_left[j], DYDX_MAX_INSURANCE_LOST_USD)
                    if not bad[o] <= whole:
                        if adl_on or not deficient[o]:
                            refused[o] = True
                            bad[o] = 0.0
                            col = 0 if side[o] > 0.0 else 1
                            flow[i, j, col] = max(flow[i, j, col] - close[o] * bp[j], 0.0)
                        continue
                    paid[o] = bad[o]
                else:
                    paid[o] = min(max(available[g], 0.0), min(bad[o], cap_left[j]))
                available[g] -= paid[o]
                cap_left[j] -= paid[o]
        if n_pots > 1 and transfer_left[0] > 0.0:  # the other pots lend what one could not
            for g in range(n_pots):
                lent_now[g] = 0.0
            lend_between_pots(
                paid, bad, leg_j, fund_group, cap_left, available, lent_now, transfer_left,
                lent, n_legs,
            )  # fmt: skip
            for g in range(n_pots):
                available[g] -= lent_now[g]

        # 5. ADL of what the pots did not cover, per market; a refused order of an account
        #    below zero equity is deleveraged whole.
        if adl_on:
            any_need = False
            for o in range(n_legs):
                if refused[o]:
                    if deficient[o]:
                        need[o] = abs(size[i, idx[leg_k[o]], leg_j[o]])
                else:
                    covered = paid[o] / bad[o] if bad[o] > 0.0 else 1.0
                    need[o] = (1.0 - covered) * close[o]
                any_need = any_need or need[o] > 0.0
            if any_need:
                is_liq = _listed_mask(is_liq, n_acc, idx)
                for j in range(n_mk):
                    _deleverage_market(
                        i, j, coll, size, entry, sub, idx, leg_k[:n_legs], leg_j[:n_legs],
                        alloc[:n_legs], is_liq, side[:n_legs], need[:n_legs],
                        adl_close[:n_legs], ev, adl_policy, market_adl_volume,
                        market_adl_haircut,
                    )  # fmt: skip

        # 6. Fills and deleveraged closes on the legs; each book's side to the counterparty;
        #    what neither a pot nor ADL covered is its market's loss.
        for j in range(n_mk):
            loss_m[j] = 0.0
        for o in range(n_legs):
            if refused[o] and not deficient[o]:
                continue  # a solvent account waits for the next check
            a = idx[leg_k[o]]
            j = leg_j[o]
            m = sub[i, j]
            s = side[o]
            q = size[i, a, j]
            e = entry[i, a, j]
            col = 0 if s > 0.0 else 1
            if refused[o]:
                book_close = need[o] - adl_close[o] if adl_on else 0.0
                raw = s * (book_close * price[o] - _bankruptcy_value(alloc[o], q, e, book_close))
                book_bad = max(-raw, 0.0)
                fund_paid = 0.0
                socialized = book_bad
                flow[i, j, col] += book_close * bp[j]
                below[leg_k[o]] = True
            else:
                book_close = close[o] - adl_close[o]
                flow[i, j, col] = max(flow[i, j, col] - adl_close[o] * bp[j], 0.0)
                book_bad = bad[o] * (1.0 - adl_close[o] / close[o])
                fund_paid = min(paid[o], book_bad)
                back = paid[o] - fund_paid  # ADL placed it: the pot keeps it
                available[fund_group[j]] += back
                cap_left[j] += back
                socialized = max(book_bad - fund_paid, 0.0)
                below[leg_k[o]] = below[leg_k[o]] or bad[o] > 0.0
            book_bad, socialized, adl_quote, over = settle_leg(
                coll, size, entry, cp_size, i, a, j, s, m, alloc[o], book_close, adl_close[o],
                price[o], fee[o], fund_paid, book_bad, socialized, adl_policy,
                bad[o] - paid[o], not refused[o],
            )  # fmt: skip
            overshoot += over
            cp_quote += s * book_close * price[o]
            volume += book_close * price[o] + abs(adl_quote)
            bad_debt += book_bad
            shortfall += fund_paid
            market_paid[j] += fund_paid
            loss_m[j] += socialized

        # 7. Socialisation per market, then the exchange absorbs the rest.
        charged, lost, is_liq = socialize_markets(
            i, coll, size, entry, sub, is_liq, idx, loss_m, social_on, socialization,
            market_socialized, market_unrecovered,
        )  # fmt: skip
        charged_total += charged
        unrecovered_total += lost

    cp_cash[i] -= cp_quote
    liquidator_rewards[i] += rewards
    unrecovered[i] += unrecovered_total
    sell = 0.0
    buy = 0.0
    for j in range(n_mk):
        sell += flow[i, j, 0]
        buy += flow[i, j, 1]
    ev[i, EV_LIQUIDATION_SELL] = sell
    ev[i, EV_LIQUIDATION_BUY] = buy
    absorbed = 0.0
    for j in range(n_mk):
        absorbed += taken_sell[j] + taken_buy[j]
    ev[i, EV_LIQUIDATOR_ABSORBED] = absorbed
    ev[i, EV_SOCIALIZED_LOSS] = charged_total
    ev[i, EV_UNRECOVERED] = unrecovered_total
    n_below = 0
    for k in range(n):
        n_below += below[k]
    _record_orders(
        ev, i, volume, fees, income, income_shorts, rewards, bad_debt, shortfall, overshoot, n_below
    )


@jit(error_model="numpy")
def _dydx_leg(  # type: ignore[no-untyped-def]
    n_legs, k, a, i, step, eq, req, coll, size, entry, sub, mmr_mult, mmr, floors, rates, cums,
    base_mmr, leg_k, leg_j, alloc, side, close, limit, takeover, deficient, refused, adl_close,
    need, paid, fee, bad,
):  # fmt: skip
    """dYdX's one order a block for liquidatable subaccount ``a``: returns the new leg count.

    dYdX liquidates one perpetual of a subaccount per block, the first position from a
    pseudo-random offset (``GetPerpetualPositionToLiquidate``); here the offset rotates with
    the block and the account, ``(a + step) mod M`` [E: deterministic, no draw], so that every
    position is reached in turn. The order is :func:`dydx_close_base` of the position (10%,
    at least $1,000, at most the subaccount's $100,000 a block) with the fillable price of
    :func:`dydx_fillable_price` as its limit: the subaccount's rating (equity ``eq`` against
    requirement ``req``) times the position's own requirement. Its bankruptcy price is the
    leg's apportioned collateral's (:func:`~fundgym.envs.core.kernels._leg_collateral`).
    """
    n_mk = size.shape[2]
    start = (a + step) % n_mk
    for t in range(n_mk):
        j = (start + t) % n_mk
        q = size[i, a, j]
        if q == 0.0:
            continue
        m = sub[i, j]
        abs_q = abs(q)
        c_j = _leg_collateral(
            coll, size, entry, sub, mmr_mult, i, a, j, req, mmr, floors, rates, cums, base_mmr
        )
        leg_req = requirement(abs_q * m, mmr, floors, rates, cums, base_mmr) * mmr_mult[i, j]
        fillable = dydx_fillable_price(
            q, m, eq, req, DYDX_BANKRUPTCY_ADJUSTMENT, DYDX_SPREAD_TO_MMR, leg_req
        )
        _new_leg(
            n_legs, k, j, c_j, 1.0 if q > 0.0 else -1.0, dydx_close_base(abs_q, m), fillable,
            False, eq < 0.0, leg_k, leg_j, alloc, side, close, limit, takeover, deficient,
            refused, adl_close, need, paid, fee, bad,
        )  # fmt: skip
        return n_legs + 1
    return n_legs


@jit(error_model="numpy")
def _new_leg(  # type: ignore[no-untyped-def]
    o, k, j, c_j, s, close_base, limit_price, is_takeover, is_deficient, leg_k, leg_j, alloc,
    side, close, limit, takeover, deficient, refused, adl_close, need, paid, fee, bad,
):  # fmt: skip
    """Write leg ``o`` (account ``k``'s position in market ``j``) and clear what a sub-step fills.

    One home for a leg's fields, whichever engine sized it: its apportioned collateral
    ``c_j``, side ``s``, the base it sends, its limit price, whether it is taken over and
    whether its account is below zero; the fill's fee, shortfall, payment and deleveraged
    parts start at zero.
    """
    leg_k[o] = k
    leg_j[o] = j
    alloc[o] = c_j
    side[o] = s
    close[o] = close_base
    limit[o] = limit_price
    takeover[o] = is_takeover
    deficient[o] = is_deficient
    refused[o] = False
    adl_close[o] = 0.0
    need[o] = 0.0
    paid[o] = 0.0
    fee[o] = 0.0
    bad[o] = 0.0


@jit(error_model="numpy", inline="always")
def _price_legs(  # type: ignore[no-untyped-def]
    n_legs, leg_j, side, close, refused, paid_for, bp, oracle, depth, max_impact, mult, fee_rate,
    fund_share, taken_sell, taken_buy, sells, buys, paid_sells, paid_buys, got_sell, got_buy,
    fills, price,
):  # fmt: skip
    """Each market's sells and buys at its book (the legs not refused), and each leg's fill.

    A market's sells fill together at the square-root book's average price for their summed
    notional, its buys likewise (:func:`~fundgym.envs.core.impact.book_price`). Where outside
    liquidators are paid, each market's are the one-market rule's
    (:func:`~fundgym.envs.core.kernels._side_prices`): of the legs they are paid for
    (``paid_for``), they take what that market's capacity at its ``oracle`` has left this
    tick (``taken_*``) at the oracle, the rest walking the book alone; a paid leg fills at
    the average. ``got_*`` (``(M,)``) is what they took now; ``fills`` ``(4, M)`` is scratch
    (each market's book sell, liquidators' sell, book buy and liquidators' buy fill).
    """
    n_mk = bp.shape[0]
    for j in range(n_mk):
        sells[j] = 0.0
        buys[j] = 0.0
        paid_sells[j] = 0.0
        paid_buys[j] = 0.0
    for o in range(n_legs):
        if not refused[o]:
            j = leg_j[o]
            usd = close[o] * bp[j]
            if side[o] > 0.0:
                sells[j] += usd
                paid_sells[j] += usd if paid_for[o] else 0.0
            else:
                buys[j] += usd
                paid_buys[j] += usd if paid_for[o] else 0.0
    sell_px, sell_liq, buy_px, buy_liq = fills[0], fills[1], fills[2], fills[3]
    for j in range(n_mk):
        sell_px[j], sell_liq[j], buy_px[j], buy_liq[j], got_sell[j], got_buy[j] = _side_prices(
            sells[j], buys[j], paid_sells[j], paid_buys[j], mult, fee_rate, fund_share,
            taken_sell[j], taken_buy[j], oracle[j], bp[j], depth[j], max_impact[j],
        )  # fmt: skip
    for o in range(n_legs):
        j = leg_j[o]
        if side[o] > 0.0:
            price[o] = sell_liq[j] if paid_for[o] else sell_px[j]
        else:
            price[o] = buy_liq[j] if paid_for[o] else buy_px[j]
