"""The backstop vault (Hyperliquid's HLP liquidator vault): takeovers, unwinding, exhaustion.

A vault is capital that depositors put up to take over accounts the book did not close in
time. Hyperliquid's docs (hyperliquid.gitbook.io/hyperliquid-docs/trading/liquidations): below
2/3 of the maintenance margin, "the backstop liquidator vault" takes over the account's
positions and its margin, and the margin is not returned, "keeping backstops profitable on
average". HLP then trades the inventory out; on 10 Oct 2025 it earned about $40M on about $300M
(``../shared/reference/outcomes.md``).

**State.** One row per exchange of :attr:`fundgym.envs.state.SimState.vault`, columns ``V_*``:
its cash (``V_CASH``, USD: deposits, the margins it kept, its realised trades, less what it
paid for its inventory), its inventory (``V_SIZE``, base units, one market), the capital its
depositors put in at the episode's start (``V_CAPITAL``), whether it still takes accounts over
(``V_ACTIVE``, 1 or 0; 0 without a vault), its running peak equity and largest drawdown
(``V_PEAK``, ``V_MAX_DRAWDOWN``) and the largest notional it has held (``V_PEAK_INVENTORY``,
at the oracle, each tick before it unwinds). Its equity is ``cash + size x
mark``, a line of the one ledger (:func:`fundgym.envs.state.ledger_total`).

**Takeover** (:func:`vault_takeover`, called by the venue modes' sub-steps of
:mod:`fundgym.envs.core.kernels`): an account below ``HL_BACKSTOP_FRACTION_OF_MM`` of its
requirement with equity ``eq >= 0`` at the sub-step's oracle ``m`` is taken over at ``m``: the
vault receives the position (paying ``q x m``) and the account's equity ``eq`` (its margin),
so its equity rises by ``eq``; the account ends flat at zero. An account already below zero
equity is not the vault's: Hyperliquid deleverages then (its ADL fires "when account value is
negative"), so it goes on down the waterfall (the fund's takeover, then ADL). The vault accepts
only while it stays margined itself: its equity after the takeover at least the maintenance
requirement of its inventory after it, ``mmr x |inventory| x m`` (the exchange's MMR: HLP is an
account on its own venue [E]). A vault that cannot is **exhausted**: the account goes to the
next stage, as the venue mode would without a vault.

**Unwinding** (:func:`vault_unwind_one`, once a tick after the waterfall): the vault sells (or
buys back) at most :data:`VAULT_UNWIND_DEPTH_FRAC` of the book's 1% depth a tick into the book,
priced by the square-root book on its own flow; its flow joins the tick's liquidation flow, which
moves the next tick's prices. A vault whose equity falls below its inventory's maintenance
requirement unwinds everything at once, and a loss beyond its whole equity (a vault closed
below zero) goes down the waterfall as a shortfall (``vault_loss_usd``): the fund pays what it
can and the exchange the rest. Its depositors are then wiped out and it takes nothing more
(``V_ACTIVE`` = 0).

**Several markets.** A state with ``M`` markets gives the vault row one inventory column per
market: ``V_SIZE`` for market 0 (the factor market, so a one-market row is unchanged), then
``N_VAULT + j - 1`` for market ``j >= 1`` (:func:`inventory_column`, :func:`vault_width`). It
takes over a cross account's every leg at once (:func:`vault_takeover_cross`, equity counted over
every market) and unwinds each market's inventory into that market's book
(:func:`vault_unwind_cross`): its margin and its drawdown are the whole vault's.
"""

from __future__ import annotations

from fundgym.envs.core.events import (
    EV_BAD_DEBT,
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_SHORTFALL,
    EV_UNRECOVERED,
    EV_VAULT_LOSS,
    EV_VAULT_TAKEOVER_USD,
    EV_VAULT_TAKEOVERS,
    EV_VAULT_UNWIND_USD,
)
from fundgym.envs.core.impact import book_price
from fundgym.envs.jit import jit

__all__ = [
    "N_VAULT",
    "VAULT_UNWIND_DEPTH_FRAC",
    "V_ACTIVE",
    "V_CAPITAL",
    "V_CASH",
    "V_MAX_DRAWDOWN",
    "V_PEAK",
    "V_PEAK_INVENTORY",
    "V_SIZE",
    "inventory_column",
    "record_takeover",
    "vault_equity",
    "vault_equity_cross",
    "vault_takeover",
    "vault_takeover_cross",
    "vault_unwind_cross",
    "vault_unwind_one",
    "vault_width",
]

#: Columns of ``SimState.vault``.
V_CASH, V_SIZE, V_CAPITAL, V_ACTIVE, V_PEAK, V_MAX_DRAWDOWN, V_PEAK_INVENTORY = range(7)
N_VAULT = 7

#: Largest unwind a tick, as a share of the book's depth within 1% (USD): a quarter of it a
#: minute costs the vault about 0.125% of slippage on what it sells and leaves the book time to
#: refill [E]: HLP makes markets and works its inventory through its own quotes, which we do
#: not model.
VAULT_UNWIND_DEPTH_FRAC = 0.25


def vault_width(n_markets: int) -> int:
    """Columns of a vault row for ``n_markets`` markets.

    The ``V_*`` ones, then one inventory column per market after the first (module docstring).
    """
    return N_VAULT + max(n_markets, 1) - 1


@jit(error_model="numpy", inline="always")
def inventory_column(j):  # type: ignore[no-untyped-def]
    """The vault row's column holding market ``j``'s inventory (``V_SIZE`` for market 0)."""
    return V_SIZE if j == 0 else N_VAULT - 1 + j


@jit(error_model="numpy", inline="always")
def vault_equity(vault, i, m):  # type: ignore[no-untyped-def]
    """Exchange ``i``'s vault equity at price ``m``: cash plus inventory at ``m``."""
    return vault[i, V_CASH] + vault[i, V_SIZE] * m


@jit(error_model="numpy", inline="always")
def vault_takeover(vault, i, eq, q, m, mmr):  # type: ignore[no-untyped-def]
    """Take over an account of equity ``eq >= 0`` and position ``q`` at ``m``, if the vault can.

    Returns whether it did (the caller then zeroes the account). The vault must be active
    (``V_ACTIVE``) and stay margined after the takeover: equity ``+ eq`` at least
    ``mmr x |inventory + q| x m``.
    """
    if not vault[i, V_ACTIVE] > 0.0:
        return False
    after = vault[i, V_SIZE] + q
    if vault_equity(vault, i, m) + eq < mmr * abs(after) * m:
        return False
    vault[i, V_CASH] += eq - q * m
    vault[i, V_SIZE] = after
    return True


@jit(error_model="numpy")
def vault_unwind_one(vault, i, cp_size, cp_cash, m, book_px, depth, max_impact, mmr, ev):  # type: ignore[no-untyped-def]
    """One tick's unwind of exchange ``i``'s vault into the book, and its drawdown record.

    Sells a long inventory (buys back a short one) into the book at ``book_px`` with depth
    ``depth`` USD per 1%: at most :data:`VAULT_UNWIND_DEPTH_FRAC` of ``depth`` a tick, or
    all of it when the vault's equity at the oracle ``m`` is below ``mmr x |inventory| x m``.
    The book's side goes to the counterparty. A vault left with negative equity and no
    inventory passes the loss on as a shortfall (``EV_SHORTFALL``, ``EV_BAD_DEBT``,
    ``EV_VAULT_LOSS``) and is closed (``V_ACTIVE`` = 0). Does nothing for an exchange
    without an active vault.
    """
    if not vault[i, V_ACTIVE] > 0.0:
        return
    q = vault[i, V_SIZE]
    if q != 0.0:
        vault[i, V_PEAK_INVENTORY] = max(vault[i, V_PEAK_INVENTORY], abs(q) * m)
        s = 1.0 if q > 0.0 else -1.0
        abs_q = abs(q)
        close = abs_q
        if vault_equity(vault, i, m) >= mmr * abs_q * m:
            close = min(abs_q, VAULT_UNWIND_DEPTH_FRAC * depth / book_px)
        flow = close * book_px
        fill = book_price(book_px, flow, depth, max_impact, -s)
        vault[i, V_CASH] += s * close * fill
        vault[i, V_SIZE] = q - s * close if close < abs_q else 0.0
        cp_size[i, 0] += s * close
        cp_cash[i] -= s * close * fill
        if s > 0.0:
            ev[i, EV_LIQUIDATION_SELL] += flow
        else:
            ev[i, EV_LIQUIDATION_BUY] += flow
        ev[i, EV_VAULT_UNWIND_USD] += flow
    equity = vault_equity(vault, i, m)
    if vault[i, V_SIZE] == 0.0 and equity < 0.0:
        loss = -equity
        vault[i, V_CASH] = 0.0
        vault[i, V_ACTIVE] = 0.0
        ev[i, EV_VAULT_LOSS] += loss
        ev[i, EV_BAD_DEBT] += loss
        ev[i, EV_SHORTFALL] += loss
        equity = 0.0
    peak = max(vault[i, V_PEAK], equity)
    vault[i, V_PEAK] = peak
    if peak > 0.0:
        vault[i, V_MAX_DRAWDOWN] = max(vault[i, V_MAX_DRAWDOWN], 1.0 - equity / peak)


@jit(error_model="numpy", inline="always")
def record_takeover(ev, i, notional):  # type: ignore[no-untyped-def]
    """Count one takeover of ``notional`` USD in exchange ``i``'s events."""
    ev[i, EV_VAULT_TAKEOVERS] += 1.0
    ev[i, EV_VAULT_TAKEOVER_USD] += notional


@jit(error_model="numpy", inline="always")
def vault_equity_cross(vault, i, marks_i):  # type: ignore[no-untyped-def]
    """Exchange ``i``'s vault equity at ``marks_i`` ``(M,)``: cash plus every inventory at mark."""
    equity = vault[i, V_CASH]
    for j in range(marks_i.shape[0]):
        equity += vault[i, inventory_column(j)] * marks_i[j]
    return equity


@jit(error_model="numpy", inline="always")
def _inventory_requirement(vault, i, marks_i, mmr):  # type: ignore[no-untyped-def]
    """``mmr`` x the vault's inventory notional over every market at ``marks_i``."""
    notional = 0.0
    for j in range(marks_i.shape[0]):
        notional += abs(vault[i, inventory_column(j)]) * marks_i[j]
    return mmr * notional


@jit(error_model="numpy")
def vault_takeover_cross(vault, i, eq, size, a, marks_i, mmr):  # type: ignore[no-untyped-def]
    """Take over cross account ``a`` (equity ``eq >= 0``, legs ``size[i, a, :]``) at ``marks_i``.

    :func:`vault_takeover` over every market: the vault receives each leg at its market's
    price and the account's equity, and must stay margined after it: its equity ``+ eq`` at
    least ``mmr`` x its inventory notional over every market after the takeover. Returns
    whether it did (the caller then zeroes the account).
    """
    if not vault[i, V_ACTIVE] > 0.0:
        return False
    n_mk = marks_i.shape[0]
    after_notional = 0.0
    for j in range(n_mk):
        after_notional += abs(vault[i, inventory_column(j)] + size[i, a, j]) * marks_i[j]
    if vault_equity_cross(vault, i, marks_i) + eq < mmr * after_notional:
        return False
    paid = 0.0
    for j in range(n_mk):
        q = size[i, a, j]
        if q != 0.0:
            paid += q * marks_i[j]
            vault[i, inventory_column(j)] += q
    vault[i, V_CASH] += eq - paid
    return True


@jit(error_model="numpy")
def vault_unwind_cross(  # type: ignore[no-untyped-def]
    vault, i, cp_size, cp_cash, marks_i, book_i, depth_i, max_impact, mmr, loss_to_fund, ev, flow,
    unrecovered,
):  # fmt: skip
    """:func:`vault_unwind_one` over every market: each inventory into its own market's book.

    Market ``j``'s inventory sells (or buys back) at most :data:`VAULT_UNWIND_DEPTH_FRAC` of
    ``depth_i[j]`` a tick at ``book_i[j]`` (its cap ``max_impact[j]``), all of every market's
    when the vault's equity over every market is below ``mmr`` x its inventory notional. The
    flow joins market ``j``'s liquidation flow (``flow[i, j]``) and the exchange's columns. A
    vault left with negative equity and no inventory passes the loss on: as a shortfall for
    the shared fund to pay (``loss_to_fund``), or, with no fund in front of it (segmented
    pots belong to markets), as unrecovered (``EV_UNRECOVERED`` and ``unrecovered[i]``).
    """
    if not vault[i, V_ACTIVE] > 0.0:
        return
    n_mk = marks_i.shape[0]
    held = 0.0
    for j in range(n_mk):
        held += abs(vault[i, inventory_column(j)]) * marks_i[j]
    vault[i, V_PEAK_INVENTORY] = max(vault[i, V_PEAK_INVENTORY], held)
    all_out = vault_equity_cross(vault, i, marks_i) < _inventory_requirement(vault, i, marks_i, mmr)
    for j in range(n_mk):
        col = inventory_column(j)
        q = vault[i, col]
        if q == 0.0:
            continue
        s = 1.0 if q > 0.0 else -1.0
        abs_q = abs(q)
        close = abs_q if all_out else min(abs_q, VAULT_UNWIND_DEPTH_FRAC * depth_i[j] / book_i[j])
        usd = close * book_i[j]
        fill = book_price(book_i[j], usd, depth_i[j], max_impact[j], -s)
        vault[i, V_CASH] += s * close * fill
        vault[i, col] = q - s * close if close < abs_q else 0.0
        cp_size[i, j] += s * close
        cp_cash[i] -= s * close * fill
        side = 0 if s > 0.0 else 1
        flow[i, j, side] += usd
        ev[i, EV_LIQUIDATION_SELL if s > 0.0 else EV_LIQUIDATION_BUY] += usd
        ev[i, EV_VAULT_UNWIND_USD] += usd
    equity = vault_equity_cross(vault, i, marks_i)
    flat = True
    for j in range(n_mk):
        flat = flat and vault[i, inventory_column(j)] == 0.0
    if flat and equity < 0.0:
        loss = -equity
        vault[i, V_CASH] = 0.0
        vault[i, V_ACTIVE] = 0.0
        ev[i, EV_VAULT_LOSS] += loss
        ev[i, EV_BAD_DEBT] += loss
        if loss_to_fund:
            ev[i, EV_SHORTFALL] += loss
        else:
            ev[i, EV_UNRECOVERED] += loss
            unrecovered[i] += loss
        equity = 0.0
    peak = max(vault[i, V_PEAK], equity)
    vault[i, V_PEAK] = peak
    if peak > 0.0:
        vault[i, V_MAX_DRAWDOWN] = max(vault[i, V_MAX_DRAWDOWN], 1.0 - equity / peak)
