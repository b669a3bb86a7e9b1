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

One market: the inventory is one base amount (``M == 1``, as the liquidation kernels).
"""

from __future__ import annotations

from fundgym.envs.core.events import (
    EV_BAD_DEBT,
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_SHORTFALL,
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
    "record_takeover",
    "vault_equity",
    "vault_takeover",
    "vault_unwind_one",
]

#: Columns of ``SimState.vault``.
V_CASH, V_SIZE, V_CAPITAL, V_ACTIVE, V_PEAK, V_MAX_DRAWDOWN, V_PEAK_INVENTORY = range(7)
N_VAULT = 7

#: Largest unwind a tick, as a share of the book's depth within 1% (USD): a quarter of it a
#: minute costs the vault about 0.125% of slippage on what it sells and leaves the book time to
#: refill [E]: HLP makes markets and works its inventory through its own quotes, which we do
#: not model.
VAULT_UNWIND_DEPTH_FRAC = 0.25


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
