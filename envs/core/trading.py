"""Trader orders and external cash flows: opening, growing, reducing and flipping positions.

Orders trade against the outside counterparty at a given price, pay the taker fee (a share of
which belongs to the insurance fund), and must pass the initial-margin check when they open
or grow a position. Entry prices follow the usual average-cost rule: an increase averages in,
a reduction realises PnL at the trade price and keeps the entry, a flip realises the whole old
position and opens the rest at the trade price.

One compiled primitive, :func:`trade`, prices every order of the simulator (the trader
population's kernels call it per account; :func:`execute_trades` calls it for a whole order
array), and :func:`book_exchange` books each exchange's trades once (the counterparty takes
the other side, the fee is split), so the rule lives once. The fund's share of a fee is *not*
written anywhere in the state (the fund is a portfolio the tick owns): :func:`book_exchange`
returns it, callers report it per exchange, and the tick books it into the fund. The
exchange's share goes to ``fee_revenue_usd``. Until the fund share is booked, the ledger is
short by exactly that amount.

Margin is cross margin over markets: an order that opens or grows a position needs the
account's post-trade equity (collateral plus unrealised PnL in every market) to cover
``imr`` times its post-trade gross notional over every market. With one market this is the
single-position rule ``equity_after >= imr x |size_after| x mark``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core.params import P_IMR, P_TAKER_FEE, P_TRADE_FUND_SHARE, RiskParams
from fundgym.envs.core.vault import V_CASH, V_SIZE, inventory_column
from fundgym.envs.jit import jit
from fundgym.envs.state import SimState, marks_2d

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


@jit
def trade(q, entry_price, equity_usd, other_gross_usd, t, price, mark, imr, fee_rate):  # type: ignore[no-untyped-def]
    """The trade primitive: one signed order of ``t`` base units for one account in one market.

    Plain values in and out (no arrays: an array passed to a compiled helper costs two atomic
    reference-count operations per call, several times the arithmetic); the caller writes the
    result into the state and adds the exchange-level sums (:func:`book_exchange`).

    Args:
        q: Position before the order, base units.
        entry_price: Its average entry price.
        equity_usd: The account's equity at ``mark`` before the order: collateral plus
            unrealised PnL in every market.
        other_gross_usd: Gross notional of its positions in the other markets, at their marks.
        t: Signed order, base units (0: nothing happens).
        price: Execution price, > 0.
        mark: The market's mark, for the initial-margin check.
        imr: Initial margin ratio.
        fee_rate: Taker fee rate.

    Returns:
        ``(executed, new_q, new_entry_price, cash_usd, fee_usd)``: whether the order passed
        the initial-margin check (an order that opens, grows or flips a position needs
        ``equity after >= imr x gross notional after``; a reduction always passes), the new
        position and entry, the change of collateral (realised PnL minus the fee) and the fee.
        A rejected or zero order returns the position unchanged, cash and fee 0.
    """
    if t == 0.0:
        return True, q, entry_price, 0.0, 0.0
    fee = abs(t) * price * fee_rate
    new_q = q + t
    if abs(new_q) > abs(q) or q * new_q < 0.0:
        eq_after = equity_usd + t * (mark - price) - fee
        if not eq_after >= imr * (other_gross_usd + abs(new_q) * mark):
            return False, q, entry_price, 0.0, 0.0
    # Average cost: a reduction realises PnL on the closed part and keeps the entry.
    closed = 0.0
    if q * t < 0.0:
        closed = min(abs(t), abs(q)) * (1.0 if q > 0.0 else -1.0)
    new_entry = entry_price
    if new_q != 0.0:
        new_entry = ((q - closed) * entry_price + (t + closed) * price) / new_q
    return True, new_q, new_entry, closed * (price - entry_price) - fee, fee


@jit
def book_exchange(  # type: ignore[no-untyped-def]
    counterparty_size, counterparty_cash, fee_revenue, e, k, base, quote_usd, fees_usd, fund_share
):
    """Book one exchange's trades in market ``k``; returns the fund's share of the fees.

    ``base`` and ``quote_usd`` are the sums of the orders and of ``order x price`` over the
    exchange's accounts, ``fees_usd`` their fees: the counterparty takes the other side, the
    exchange keeps ``fees x (1 - fund_share)`` in ``fee_revenue`` and the fund's share is
    returned for the caller to report.
    """
    counterparty_size[e, k] -= base
    counterparty_cash[e] += quote_usd
    to_fund = fees_usd * fund_share
    fee_revenue[e] += fees_usd - to_fund
    return to_fund


@jit
def _execute_kernel(  # type: ignore[no-untyped-def]
    collateral,
    size,
    entry,
    counterparty_size,
    counterparty_cash,
    fee_revenue,
    orders,
    price,
    marks,
    packed,
    rejected,
    fees_usd,
    fund_fees_usd,
):
    n_envs, n_acc, n_mkt = orders.shape
    base = np.zeros(n_mkt)
    quote = np.zeros(n_mkt)
    fees = np.zeros(n_mkt)
    for e in range(n_envs):
        imr = packed[e, P_IMR]
        fee_rate = packed[e, P_TAKER_FEE]
        base[:] = 0.0
        quote[:] = 0.0
        fees[:] = 0.0
        for a in range(n_acc):
            for k in range(n_mkt):
                t = orders[e, a, k]
                if t == 0.0:
                    continue
                eq = collateral[e, a]
                other = 0.0
                for j in range(n_mkt):
                    eq += size[e, a, j] * (marks[e, j] - entry[e, a, j])
                    if j != k:
                        other += abs(size[e, a, j]) * marks[e, j]
                p = price[e, k]
                ok, new_q, new_entry, cash, fee = trade(
                    size[e, a, k], entry[e, a, k], eq, other, t, p, marks[e, k], imr, fee_rate
                )
                rejected[e, a, k] = not ok
                if ok:
                    size[e, a, k] = new_q
                    entry[e, a, k] = new_entry
                    collateral[e, a] += cash
                    base[k] += t
                    quote[k] += t * p
                    fees[k] += fee
        for k in range(n_mkt):
            fund = book_exchange(
                counterparty_size, counterparty_cash, fee_revenue, e, k, base[k], quote[k],
                fees[k], packed[e, P_TRADE_FUND_SHARE],
            )  # fmt: skip
            fees_usd[e] += fees[k]
            fund_fees_usd[e] += fund


@jit
def _deposit_kernel(collateral, net_deposits, amount):  # type: ignore[no-untyped-def]
    n_envs, n_acc = amount.shape
    for e in range(n_envs):
        total = 0.0
        for a in range(n_acc):
            collateral[e, a] += amount[e, a]
            total += amount[e, a]
        net_deposits[e] += total


@jit
def _funding_kernel(collateral, size, cp_size, cp_cash, vault, rate, marks, paid):  # type: ignore[no-untyped-def]
    n_envs, n_acc, n_mkt = size.shape
    for e in range(n_envs):
        for k in range(n_mkt):
            per_unit = rate[e, k] * marks[e, k]
            total = 0.0
            for a in range(n_acc):
                q = size[e, a, k]
                if q != 0.0:
                    x = q * per_unit
                    collateral[e, a] -= x
                    total += x
            paid[e] += total
            cp_cash[e] -= cp_size[e, k] * rate[e, k] * marks[e, k]
        # The backstop vault's inventory pays like any position, in every market it holds.
        if vault[e, V_SIZE] != 0.0:
            vault[e, V_CASH] -= vault[e, V_SIZE] * rate[e, 0] * marks[e, 0]
        for k in range(1, n_mkt):
            held = vault[e, inventory_column(k)]
            if held != 0.0:
                vault[e, V_CASH] -= held * rate[e, k] * marks[e, k]


@jit(error_model="numpy", inline="always")
def funding_row(collateral, size, per_unit, want_total):  # type: ignore[no-untyped-def]
    """:func:`_funding_kernel`'s account loop for one exchange and market, bit for bit.

    ``collateral`` and ``size`` are the exchange's contiguous ``(A,)`` rows; each open
    position pays ``size x per_unit``. An empty slot is written too, paying ``+0.0``
    (``c - 0.0`` is ``c`` to the bit, -0 and NaN included), so the loop has no branch and
    vectorises. The total paid, a running sum whose adds keep slot order (adding +0 to a
    sum that starts at +0 changes no bit), runs only when ``want_total``: its chain of
    dependent adds costs more than the payments; otherwise it is NaN.
    """
    if want_total:
        total = 0.0
        for a in range(size.shape[0]):
            q = size[a]
            x = q * per_unit if q != 0.0 else 0.0
            collateral[a] -= x
            total += x
        return total
    for a in range(size.shape[0]):
        q = size[a]
        collateral[a] -= q * per_unit if q != 0.0 else 0.0
    return np.nan


class TradeResult(NamedTuple):
    """What :func:`execute_trades` did.

    Attributes:
        rejected: Orders the initial-margin check rejected, shaped like the orders.
        trading_fees_usd: ``(E,)`` taker fees paid.
        fund_trading_fee_income_usd: ``(E,)`` the fund's share of them, for the caller to
            book into the fund (the state does not hold the fund's share).
    """

    rejected: BoolArray
    trading_fees_usd: FloatArray
    fund_trading_fee_income_usd: FloatArray


def _orders_3d(state: SimState, values: ArrayLike, name: str) -> FloatArray:
    """``values`` as a C-contiguous ``(E, A, M)`` float array (``(E, A)`` means one market)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2 and state.n_markets == 1:
        arr = arr[:, :, None]
    try:
        out = np.broadcast_to(arr, state.size.shape)
    except ValueError:
        raise ValueError(
            f"{name} must be (n_envs, n_accounts[, n_markets]) = {state.size.shape}, "
            f"got shape {arr.shape}"
        ) from None
    return np.ascontiguousarray(out)


def execute_trades(
    state: SimState,
    params: RiskParams,
    trade_size: ArrayLike,
    price: ArrayLike,
    mark: ArrayLike,
) -> TradeResult:
    """Execute signed orders ``trade_size`` (base units) at ``price``, account by account.

    Args:
        state: Updated in place (accounts, counterparty, ``fee_revenue_usd``).
        params: Supplies ``imr``, ``taker_fee_rate`` and ``trading_fee_fund_share``.
        trade_size: ``(E, A, M)`` signed base units, or ``(E, A)`` with one market; 0 = no
            order.
        price: ``(E, M)`` execution price (> 0); ``(E,)`` with one market.
        mark: ``(E, M)`` marks for the initial-margin check; ``(E,)`` with one market.

    Returns:
        The rejections (shaped like ``trade_size``) and the fees per exchange.
    """
    orders = _orders_3d(state, trade_size, "trade_size")
    n_envs, n_mkt = state.n_envs, state.n_markets
    rejected = np.zeros(orders.shape, dtype=np.bool_)
    fees, to_fund = np.zeros(n_envs), np.zeros(n_envs)
    _execute_kernel(
        state.collateral_usd,
        state.size,
        state.entry_price,
        state.counterparty_size,
        state.counterparty_cash_usd,
        state.fee_revenue_usd,
        orders,
        marks_2d(price, n_envs, n_mkt),
        marks_2d(mark, n_envs, n_mkt),
        params.packed(n_envs),
        rejected,
        fees,
        to_fund,
    )
    shape = np.shape(trade_size)
    return TradeResult(rejected.reshape(shape) if len(shape) == 2 else rejected, fees, to_fund)


def deposit(state: SimState, amount_usd: ArrayLike) -> None:
    """External deposits (positive) or withdrawals (negative) of collateral, ``(E, A)``."""
    amount = np.ascontiguousarray(
        np.broadcast_to(np.asarray(amount_usd, dtype=np.float64), state.collateral_usd.shape)
    )
    _deposit_kernel(state.collateral_usd, state.net_deposits_usd, amount)


def apply_funding(state: SimState, rate: ArrayLike, mark: ArrayLike) -> FloatArray:
    """Funding transfer of ``rate`` (fraction of notional per market, ``(E, M)``) at ``mark``.

    Every position pays ``size x mark x rate`` (longs pay shorts when ``rate > 0``), the
    backstop vault's inventory included; the counterparty settles the net of the rest, so the
    payments sum to zero. ``rate``
    and ``mark`` may be ``(E,)`` with one market. Returns the funding each exchange's accounts
    paid in total (``(E,)``, positive = net paid).
    """
    n_envs, n_mkt = state.n_envs, state.n_markets
    paid = np.zeros(n_envs)
    _funding_kernel(
        state.collateral_usd,
        state.size,
        state.counterparty_size,
        state.counterparty_cash_usd,
        state.vault,
        marks_2d(rate, n_envs, n_mkt),
        marks_2d(mark, n_envs, n_mkt),
        paid,
    )
    return paid
