"""One tick of the margin engine over a batch of exchanges: the order of operations.

``core_step`` marks every account to the price the margin engine reads, finds the liquidatable
ones, and runs the loss waterfall on them. The waterfall, in order (dYdX v4 documents the same
sequence as "liquidation, then insurance fund, then deleveraging"):

1. **The account's own margin.** A partial liquidation order closes at most
   ``max_liquidation_fraction`` of the position (at least ``min_liquidation_notional_usd``,
   small positions whole: dYdX) into the book through the impact model. A fill better than
   the bankruptcy price pays a fee ``min(fee rate x notional, surplus)`` (dYdX
   ``GetLiquidationInsuranceFundDelta``), split between fund and liquidator (Drift's split).
2. **The insurance fund** pays the shortfall of fills worse than bankruptcy. Within a step
   the fund first books all fee income, then pays shortfalls in account order; a payment that
   would take it below zero is not made: it pays what it holds and the rest goes on.
3. **Auto-deleveraging** (``fallback="adl"``): the part of a fill the fund cannot cover is not
   sent to the book; it is offset against opposite-side accounts at the bankrupt account's
   bankruptcy price, in BitMEX rank order (greedy from the top score). Bankrupt accounts of one
   side in one step are offset as a batch: each closes at its own bankruptcy price and the
   counterparties at the batch's size-weighted bankruptcy price, so the cash matches exactly.
4. **Socialised loss** (``fallback="socialize"``, and whatever ADL cannot place for lack of
   opposite positions): the book fills, and the uncovered loss is shared pro rata by |size|
   over the accounts not being liquidated (Drift's funding-index convention).
5. **The exchange** absorbs what no open position is left to bear (``unrecovered_usd``).

The step updates ``state`` in place: at 1e5 accounts a functional copy of every array per tick
would cost more than the step itself. All formulas come from :mod:`envs.core.formulas`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from envs.core import formulas
from envs.core.impact import ImpactModel
from envs.core.margin import liquidatable, maintenance_requirement
from envs.core.params import RiskParams
from envs.core.state import ExchangeState

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class StepEvents:
    """What one step did, per exchange: every field is an ``(n_envs,)`` array.

    Attributes:
        n_liquidations: Accounts that received a liquidation order.
        liquidation_volume_usd: Notional closed by the liquidation engine (book fills at the
            fill price plus deleveraged size at the bankruptcy price, in absolute value: an
            account whose debt exceeds its whole position's value, e.g. a short drained by
            funding in a pump, has a negative bankruptcy price).
        liquidation_fees_usd: Liquidation fees charged to liquidated accounts.
        fund_fee_income_usd: The fund's share of those fees.
        liquidator_rewards_usd: The liquidators' share.
        bad_debt_usd: Loss beyond bankruptcy on book fills, before anyone covers it: the sum
            of ``shortfall_usd``, ``socialized_loss_usd`` and ``unrecovered_usd`` (what is
            deleveraged closes at the bankruptcy price and shows as ``adl_haircut_usd``).
        shortfall_usd: The part of ``bad_debt_usd`` the insurance fund paid.
        adl_volume_usd: Notional deleveraged, at the bankruptcy price (absolute value).
        adl_haircut_usd: Mark-to-market profit the deleveraged counterparties gave up.
        socialized_loss_usd: Loss shared over open positions.
        unrecovered_usd: Loss nobody could bear, absorbed by the exchange.
        trading_fees_usd: Taker fees charged (filled in by trading, zero here).
        fund_trading_fee_income_usd: The fund's share of trading fees.
        liquidation_sell_usd: Notional the liquidation engine sold into the book (longs).
        liquidation_buy_usd: Notional it bought from the book (shorts); with the sells, the
            flow that moves the price (endogenous impact).
    """

    n_liquidations: IntArray
    liquidation_volume_usd: FloatArray
    liquidation_fees_usd: FloatArray
    fund_fee_income_usd: FloatArray
    liquidator_rewards_usd: FloatArray
    bad_debt_usd: FloatArray
    shortfall_usd: FloatArray
    adl_volume_usd: FloatArray
    adl_haircut_usd: FloatArray
    socialized_loss_usd: FloatArray
    unrecovered_usd: FloatArray
    trading_fees_usd: FloatArray
    fund_trading_fee_income_usd: FloatArray
    liquidation_sell_usd: FloatArray
    liquidation_buy_usd: FloatArray

    @classmethod
    def zeros(cls, n_envs: int) -> StepEvents:
        """A step in which nothing happened."""
        ints = np.zeros(n_envs, dtype=np.int64)
        return cls(ints, *(np.zeros(n_envs) for _ in range(len(_EVENT_FIELDS) - 1)))

    def as_dict(self) -> dict[str, FloatArray | IntArray]:
        """Field name to array."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_EVENT_FIELDS = tuple(f.name for f in fields(StepEvents))
assert _EVENT_FIELDS[0] == "n_liquidations"


def margin_state(
    state: ExchangeState, params: RiskParams, mark: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Equity and maintenance requirement of every account at ``mark`` (``(n_envs,)``)."""
    m = mark[:, None]
    eq = formulas.equity(state.collateral_usd, state.size, state.entry_price, m)
    req = maintenance_requirement(np.abs(state.size) * m, params.column("mmr"), params.tiers)
    return eq, req


def core_step(
    state: ExchangeState,
    params: RiskParams,
    mark: FloatArray,
    impact: ImpactModel,
    book_price: FloatArray | None = None,
) -> StepEvents:
    """Mark to market, check margins and liquidate, for every exchange in the batch.

    Args:
        state: Batch state, updated in place.
        params: Risk parameters (scalars or ``(n_envs,)`` arrays).
        mark: ``(n_envs,)`` price the margin engine reads (the oracle or mark price).
        impact: Depth model that prices the step's liquidation flow.
        book_price: ``(n_envs,)`` price of the venue's book that liquidation orders walk
            (default ``mark``); differs from ``mark`` when the oracle is stale, floored or
            manipulated.

    Returns:
        The step's events per exchange.
    """
    eq, req = margin_state(state, params, mark)
    liq = liquidatable(eq, req)
    if not liq.any():  # the common case: no account is liquidatable this tick
        return StepEvents.zeros(state.n_envs)
    return _liquidate(state, params, mark, impact, liq, mark if book_price is None else book_price)


def _group_exclusive_cumsum(values: FloatArray, group: IntArray) -> FloatArray:
    """Sum of the earlier ``values`` of the same group, for ``group`` sorted ascending."""
    excl = np.zeros_like(values)
    np.cumsum(values[:-1], out=excl[1:])  # shifted, exact: not ``cumsum - values``
    new_group = np.empty(group.shape, dtype=bool)
    new_group[:1] = True
    np.not_equal(group[1:], group[:-1], out=new_group[1:])
    group_start_excl = excl[new_group]
    return np.asarray(excl - group_start_excl[np.cumsum(new_group) - 1], dtype=np.float64)


def _liquidate(
    state: ExchangeState,
    params: RiskParams,
    mark: FloatArray,
    impact: ImpactModel,
    liq: np.ndarray[Any, np.dtype[np.bool_]],
    book_price: FloatArray,
) -> StepEvents:
    """Run the waterfall on the liquidatable accounts (``liq``), all exchanges at once."""
    n_envs, n_acc = state.size.shape
    ev = StepEvents.zeros(n_envs)
    flat = np.flatnonzero(liq)  # row-major: grouped by exchange, account order within
    env = flat // n_acc
    c_all = state.collateral_usd.reshape(-1)
    q_all = state.size.reshape(-1)
    e_all = state.entry_price.reshape(-1)
    c, q, e = c_all[flat], q_all[flat], e_all[flat]
    m = mark[env]
    side = np.sign(q)
    abs_q = np.abs(q)

    def bincount(weights: FloatArray) -> FloatArray:
        return np.bincount(env, weights=weights, minlength=n_envs).astype(np.float64)

    # 1. The liquidation order: partial, with a minimum notional (dYdX).
    frac = params.per_env("max_liquidation_fraction", n_envs)[env]
    min_base = params.per_env("min_liquidation_notional_usd", n_envs)[env] / m
    close = np.minimum(abs_q, np.maximum(frac * abs_q, min_base))
    close = np.where(close > 0.0, close, abs_q)  # a dust position whose fraction underflows
    is_long = side > 0
    order_notional = close * book_price[env]
    ev.liquidation_sell_usd = bincount(np.where(is_long, order_notional, 0.0))
    ev.liquidation_buy_usd = bincount(np.where(is_long, 0.0, order_notional))
    sell_px, buy_px = impact.fill_prices(
        book_price, ev.liquidation_sell_usd, ev.liquidation_buy_usd
    )
    p = np.where(is_long, sell_px[env], buy_px[env])
    fee_rate = params.per_env("liquidation_fee_rate", n_envs)[env]
    delta = formulas.insurance_fund_delta(c, q, e, -side * close, p, fee_rate)
    fee = np.maximum(delta, 0.0)
    bad_debt = np.maximum(-delta, 0.0)

    # 2. The insurance fund: fee income first, then shortfalls in account order.
    fund_share = params.per_env("liquidation_fee_fund_share", n_envs)[env]
    ev.fund_fee_income_usd = bincount(fee * fund_share)
    ev.liquidator_rewards_usd = bincount(fee * (1.0 - fund_share))
    ev.liquidation_fees_usd = bincount(fee)
    available = state.fund_usd + ev.fund_fee_income_usd
    if bad_debt.any():
        paid = np.clip(available[env] - _group_exclusive_cumsum(bad_debt, env), 0.0, bad_debt)
    else:
        paid = bad_debt  # all zeros: nothing to pay
    ev.shortfall_usd = bincount(paid)
    exhausted = ev.bad_debt_usd >= available
    state.fund_usd = np.where(exhausted, 0.0, np.maximum(available - ev.shortfall_usd, 0.0))
    state.liquidator_rewards_usd += ev.liquidator_rewards_usd
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = np.where(bad_debt > 0.0, paid / bad_debt, 1.0)  # share the fund covered

    # 3./4. What the fund could not cover: deleverage it, or fill it and socialise the loss.
    uncovered = 1.0 - covered
    adl_close = np.zeros_like(close)
    if params.fallback == "adl" and (uncovered > 0.0).any():
        need = uncovered * close
        adl_close = _deleverage(
            state, mark, liq, env, side, need, formulas.bankruptcy_value(c, q, e, need), ev
        )
    book_close = close - adl_close
    adl_share = np.divide(adl_close, close, out=np.zeros_like(close), where=close > 0.0)
    book_bad_debt = bad_debt * (1.0 - adl_share)  # the deleveraged part closes at bankruptcy
    socialized = np.maximum(book_bad_debt - paid, 0.0)
    ev.bad_debt_usd = bincount(book_bad_debt)
    # Deleveraged base closes at the bankruptcy price: its quote is the bankruptcy value.
    adl_quote = formulas.bankruptcy_value(c, q, e, adl_close)

    # Book fills and deleveraged closes on the liquidated accounts themselves.
    c_all[flat] = (
        c
        + side * book_close * (p - e)
        + side * (adl_quote - adl_close * e)
        - fee
        + paid
        + socialized
    )
    q_all[flat] = q - side * (book_close + adl_close)
    book_base = side * book_close  # what the counterparty buys (+) or sells (-)
    state.counterparty_size += bincount(book_base)
    state.counterparty_cash_usd -= bincount(book_base * p)

    ev.n_liquidations = np.bincount(env, minlength=n_envs).astype(np.int64)
    ev.liquidation_volume_usd = bincount(book_close * p + np.abs(adl_quote))
    loss = bincount(socialized)
    if (loss > 0.0).any():
        _socialize(state, liq, loss, ev)
    return ev


def _deleverage(
    state: ExchangeState,
    mark: FloatArray,
    liq: np.ndarray[Any, np.dtype[np.bool_]],
    env: IntArray,
    side: FloatArray,
    need: FloatArray,
    need_quote: FloatArray,
    ev: StepEvents,
) -> FloatArray:
    """Offset ``need`` base units of the liquidated accounts against opposite positions.

    Counterparties are the accounts not being liquidated this step that stay solvent when
    closed at the batch price (dYdX skips those that fail collateral checks), ranked by BitMEX's
    score,
    closed greedily from the top at the batch's size-weighted bankruptcy price
    (``need_quote`` is each account's ``need x bankruptcy price``). Updates the
    counterparties in ``state`` and ``ev``; returns the base units deleveraged per liquidated
    account (``<= need``: whatever exceeds the opposite side's open interest is left over).
    """
    n_envs = state.n_envs
    m = mark[:, None]
    adl_close = np.zeros_like(need)
    for bankrupt_side in (1.0, -1.0):  # two sides, not a loop over accounts
        mine = (side == bankrupt_side) & (need > 0.0)
        if not mine.any():
            continue
        need_env = np.bincount(env[mine], weights=need[mine], minlength=n_envs)
        value_env = np.bincount(env[mine], weights=need_quote[mine], minlength=n_envs)
        # Only the exchanges with something to deleverage on this side do the (n_accounts-wide)
        # work: row by row the arithmetic is the same, so results are bit-identical, but a big
        # batch no longer pays for every exchange whenever one of them deleverages.
        rows = np.flatnonzero(need_env > 0.0)
        coll = state.collateral_usd[rows]
        size = state.size[rows]
        entry = state.entry_price[rows]
        m_r = m[rows]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            batch_price = value_env[rows] / need_env[rows]
        # dYdX's collateral check: a counterparty is skipped if the deleveraging would leave it
        # under-collateralised; here, if closing its whole position at the batch price would
        # take its equity below zero (what it cannot bear goes on to socialisation).
        equity_now = formulas.equity(coll, size, entry, m_r)
        with np.errstate(invalid="ignore", over="ignore"):  # inf price x 0 size: not eligible
            haircut = np.abs(size) * (batch_price[:, None] - m_r) * bankrupt_side
            solvent_after = equity_now - np.maximum(haircut, 0.0) >= 0.0
        eligible = ~liq[rows] & (size * bankrupt_side < 0.0) & solvent_after
        capacity = np.where(eligible, np.abs(size), 0.0)
        cap_env = np.zeros(n_envs)
        cap_env[rows] = capacity.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ratio = np.where(need_env > 0.0, np.minimum(1.0, cap_env / need_env), 0.0)
        adl_close[mine] = need[mine] * ratio[env[mine]]
        amount = need_env * ratio
        quote = value_env * ratio  # USD that changes hands at the bankruptcy prices
        scores = np.where(eligible, formulas.adl_score(coll, size, entry, m_r), -np.inf)
        closed = formulas.auto_deleverage(amount[rows], capacity, scores)
        # Each counterparty trades its share of the batch at the batch's bankruptcy price
        # (quote / amount), written as share x quote so that no price is formed from a dust
        # size. Shorts buy back (+), longs sell (-); both move toward zero.
        amount_r = amount[rows, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(amount_r > 0.0, closed / amount_r, 0.0)
        cash = share * quote[rows, None]
        state.collateral_usd[rows] = coll - bankrupt_side * (cash - closed * entry)
        state.size[rows] = size + closed * bankrupt_side
        ev.adl_volume_usd += np.abs(quote)
        ev.adl_haircut_usd += bankrupt_side * (quote - amount * mark)
    return adl_close


def _socialize(
    state: ExchangeState,
    liq: np.ndarray[Any, np.dtype[np.bool_]],
    loss: FloatArray,
    ev: StepEvents,
) -> None:
    """Share ``loss`` (``(n_envs,)``) pro rata by |size| over accounts not being liquidated."""
    rows = np.flatnonzero(loss > 0.0)  # only exchanges with a loss to share do the work
    bearers = np.where(liq[rows], 0.0, state.size[rows])
    shares = formulas.socialized_loss_shares(loss[rows], bearers)
    state.collateral_usd[rows] -= shares
    nobody = np.zeros(state.n_envs, dtype=bool)
    nobody[rows] = np.abs(bearers).sum(axis=1) == 0.0
    ev.socialized_loss_usd = np.where(nobody, 0.0, loss)
    ev.unrecovered_usd = np.where(nobody, loss, 0.0)
    state.unrecovered_usd += ev.unrecovered_usd
