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
(``V_PEAK``, ``V_MAX_DRAWDOWN``), the largest notional it has held (``V_PEAK_INVENTORY``,
at the oracle, each tick before it unwinds) and its loss limit (``V_LOSS_LIMITED``,
``V_LOSS_LIMIT_USD``, below). Its equity is ``cash + size x
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

**Loss limit** (:func:`vault_over_loss_limit`, :func:`vault_deleverage`). Hyperliquid split
HLP into component vaults after the JELLY squeeze of March 2025 and capped the Liquidator
among them: "ADL will be triggered if the Liquidator loses above a certain threshold, instead
of moving collateral automatically from the other component vaults" (Hyperliquid's
announcement after JELLY, 27 Mar 2025, mirrored at tglist.com/ru/channel/vIeNxn; the squeeze
is [S89, S90] of ``../shared/reference/crashes.md``), and its docs: "the liquidator has one
last option to avoid liquidations that would cause a sufficiently large drawdown, at which
point auto-deleveraging is triggered" (hyperliquid.gitbook.io, auto-deleveraging). On 10 Oct
2025 95.1% of the ADL notional came from the HLP and Liquidator vaults' own positions [S77],
in bursts of takeovers followed by as many ADLs in the same millisecond [S78], and "some HLP
sub-vaults were temporarily undercollateralized due to excessive liquidation burdens"
(Hyperliquid's founder, followin.io/feed/20737074). A row with a limit (``V_LOSS_LIMITED``
= 1) whose equity falls more than ``V_LOSS_LIMIT_USD`` below its starting capital has its whole
inventory deleveraged at the oracle against the opposite side's accounts, ranked by the ADL
rule, at the check where it happens (after that check's takeovers) and at each tick's end
before it unwinds. The vault carries on taking accounts over while it stays margined, and is
deleveraged again whenever it is beyond the limit. The simulators set the limit at reset
(:func:`open_vault`) to :func:`vault_loss_frac` x the capital: ``hyperliquid``'s 2% [E] unless
their ``vault_adl_loss_frac`` says otherwise; a zeroed row has none (the vault unwinds into
the book whatever it loses, as before the rule).

**Deleveraging what the book cannot take** (the venue modes' checks, one market and across
markets). A loss-limited vault (``V_LOSS_LIMITED`` = 1) that takes over an account whose
position the book could not take back at once for less than the margin that came with it
(:func:`book_unwind_loss`: the whole position through the square-root book at the check's
book price, against the oracle it was taken at) is deleveraged at the same check, after the
check's takeovers, whatever its equity: Hyperliquid's "one last option to avoid liquidations
that would cause a sufficiently large drawdown, at which point auto-deleveraging is
triggered" (its auto-deleveraging page), read per takeover. On 10 Oct 2025 the largest burst
was "11,279 liquidations then 11,279 ADLs in one millisecond" [S78]: the takeovers in a book
that could not absorb them were deleveraged as they came. The vault keeps the margin of each
such takeover and carries no inventory into a book that cannot take it; a takeover the book
can take is held and unwound into it, as before. Without a limit (``vault_adl_loss_frac``
``inf``) neither rule acts.

**Whom the vault is deleveraged against** (:func:`vault_deleverage`): the accounts with an
opposite position, ranked by the ADL rule, then what they cannot absorb against the rest of
the venue's opposite side, the counterparty (the positions no sampled account holds: every
long on a venue has a short on it, makers among them), at the oracle, up to its opposite
position. Without it, a thin market's takeovers whose opposite side the sampled accounts did
not hold stayed in the vault, to be sold into a collapsed book.

**Several markets.** A state with ``M`` markets gives the vault row one inventory column per
market: ``V_SIZE`` for market 0 (the factor market, so a one-market row is unchanged), then
``N_VAULT + j - 1`` for market ``j >= 1`` (:func:`inventory_column`, :func:`vault_width`). It
takes over a cross account's every leg at once (:func:`vault_takeover_cross`, equity counted over
every market) and unwinds each market's inventory into that market's book
(:func:`vault_unwind_cross`): its margin and its drawdown are the whole vault's.
"""

from __future__ import annotations

import math

import numpy as np

from fundgym.envs.core.adl import close_market_counterparties
from fundgym.envs.core.events import (
    EV_ADL_VOLUME,
    EV_BAD_DEBT,
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_SHORTFALL,
    EV_UNRECOVERED,
    EV_VAULT_ADL,
    EV_VAULT_LOSS,
    EV_VAULT_TAKEOVER_USD,
    EV_VAULT_TAKEOVERS,
    EV_VAULT_UNWIND_USD,
)
from fundgym.envs.core.impact import book_price
from fundgym.envs.core.liquidation import HL_LIQUIDATOR_LOSS_FRAC
from fundgym.envs.core.params import W_NO_ADL
from fundgym.envs.jit import jit

__all__ = [
    "N_VAULT",
    "VAULT_UNWIND_DEPTH_FRAC",
    "V_ACTIVE",
    "V_CAPITAL",
    "V_CASH",
    "V_LOSS_LIMITED",
    "V_LOSS_LIMIT_USD",
    "V_MAX_DRAWDOWN",
    "V_PEAK",
    "V_PEAK_INVENTORY",
    "V_SIZE",
    "inventory_column",
    "open_vault",
    "record_takeover",
    "vault_deleverage",
    "vault_equity",
    "vault_equity_cross",
    "vault_loss_frac",
    "vault_over_loss_limit",
    "vault_over_loss_limit_1",
    "vault_takeover",
    "vault_takeover_cross",
    "vault_tick_end_limit",
    "vault_unwind_cross",
    "vault_unwind_one",
    "vault_width",
]

#: Columns of ``SimState.vault``.
V_CASH, V_SIZE, V_CAPITAL, V_ACTIVE, V_PEAK, V_MAX_DRAWDOWN, V_PEAK_INVENTORY = range(7)
#: The loss limit: 1 when it applies (0, as a zeroed row has it: none), and the loss in USD
#: below the vault's starting capital beyond which its inventory is deleveraged
#: (:func:`vault_deleverage`).
V_LOSS_LIMITED, V_LOSS_LIMIT_USD = 7, 8
N_VAULT = 9

#: Largest unwind a tick, as a share of the book's depth within 1% (USD): a quarter of it a
#: minute costs the vault about 0.125% of slippage on what it sells and leaves the book time to
#: refill [E]: HLP makes markets and works its inventory through its own quotes, which we do
#: not model.
VAULT_UNWIND_DEPTH_FRAC = 0.25


def vault_loss_frac(liquidation_mode: str, override: float | None = None) -> float | None:
    """The vault's loss limit under ``liquidation_mode`` as a share of its capital, or ``None``.

    ``override`` ``None`` gives the mode's own: ``hyperliquid``'s Liquidator
    (:data:`~fundgym.envs.core.liquidation.HL_LIQUIDATOR_LOSS_FRAC`), no limit under the other
    modes (their venues run no vault; a vault a configuration adds to them unwinds whatever it
    loses). A number in [0, 1] is the limit under any mode; ``inf`` is none.

    Raises:
        ValueError: ``override`` is not ``None``, a number in [0, 1] or ``inf`` (a boolean
            included).
    """
    if override is None:
        return HL_LIQUIDATOR_LOSS_FRAC if liquidation_mode == "hyperliquid" else None
    ok = not isinstance(override, bool) and isinstance(override, int | float)
    if not (ok and (0.0 <= override <= 1.0 or override == math.inf)):
        raise ValueError(
            "vault_adl_loss_frac must be None (the liquidation mode's own), a number in [0, 1] "
            f"or inf (no loss limit), got {override!r}"
        )
    return None if override == math.inf else float(override)


def open_vault(
    vault: np.ndarray,
    env: int | np.ndarray,
    capital_usd: float | np.ndarray,
    loss_frac: float | None = None,
) -> None:
    """Reset exchange ``env``'s vault row: ``capital_usd`` of cash, no inventory.

    ``env`` may be an array of rows with ``capital_usd`` one entry each (a batch's resets).
    Active when ``capital_usd > 0``. ``loss_frac`` (``None``: none) sets the loss limit to
    that share of the capital (module docstring, "Loss limit"); the simulators call this at
    every reset.
    """
    capital = np.asarray(capital_usd, dtype=np.float64)
    vault[env] = 0.0
    vault[env, V_CASH] = capital
    vault[env, V_CAPITAL] = capital
    vault[env, V_PEAK] = capital
    vault[env, V_ACTIVE] = np.where(capital > 0.0, 1.0, 0.0)
    if loss_frac is not None:
        vault[env, V_LOSS_LIMITED] = 1.0
        vault[env, V_LOSS_LIMIT_USD] = loss_frac * capital


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


@jit(error_model="numpy", inline="always")
def book_unwind_loss(q, m, book_px, depth, max_impact):  # type: ignore[no-untyped-def]
    """What closing ``q`` base at once through the book would lose against the oracle ``m``.

    The square-root book's average fill for the whole position (``book_px``, ``depth`` USD
    per 1%, capped at ``max_impact``; :func:`~fundgym.envs.core.impact.book_price`), against
    the price the vault took it over at. A takeover whose loss exceeds the margin it came
    with is one the book cannot take from the vault: the venue modes deleverage it at the
    check (module docstring, "Deleveraging what the book cannot take").
    """
    if q == 0.0:
        return 0.0
    s = 1.0 if q > 0.0 else -1.0
    return q * (m - book_price(book_px, abs(q) * book_px, depth, max_impact, -s))


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


@jit(error_model="numpy", inline="always")
def _loss_floor_usd(vault, i):  # type: ignore[no-untyped-def]
    """The equity below which exchange ``i``'s vault is beyond its loss limit (``-inf``: none).

    Its starting capital less ``V_LOSS_LIMIT_USD``, for an active vault whose row has a
    limit (``V_LOSS_LIMITED``).
    """
    if vault[i, V_ACTIVE] > 0.0 and vault[i, V_LOSS_LIMITED] > 0.0:
        return vault[i, V_CAPITAL] - vault[i, V_LOSS_LIMIT_USD]
    return -np.inf


@jit(error_model="numpy", inline="always")
def vault_over_loss_limit(vault, i, marks_i):  # type: ignore[no-untyped-def]
    """Whether exchange ``i``'s vault has lost more than its loss limit at ``marks_i`` ``(M,)``.

    Its equity over every market below :func:`_loss_floor_usd`.
    """
    return vault_equity_cross(vault, i, marks_i) < _loss_floor_usd(vault, i)


@jit(error_model="numpy", inline="always")
def vault_over_loss_limit_1(vault, i, m):  # type: ignore[no-untyped-def]
    """:func:`vault_over_loss_limit` for one market at the oracle ``m``, on scalars only.

    The compiled tick asks it of every exchange every tick: no array view is made for it.
    """
    return vault_equity(vault, i, m) < _loss_floor_usd(vault, i)


@jit(error_model="numpy", inline="always")
def _vault_sold(vault, i, col, inv, s, amount, m, ev, market_adl_volume, j):  # type: ignore[no-untyped-def]
    """Book ``amount`` base of the vault's inventory ``inv`` (side ``s``) deleveraged at ``m``.

    Its cash takes the quote, the events and market ``j``'s ADL record the notional; returns
    the inventory left (exactly 0 once all of it is gone).
    """
    quote = amount * m
    inv = inv - s * amount if amount < abs(inv) else 0.0
    vault[i, col] = inv
    vault[i, V_CASH] += s * quote
    ev[i, EV_ADL_VOLUME] += quote
    ev[i, EV_VAULT_ADL] += quote
    market_adl_volume[j] += quote
    return inv


@jit(error_model="numpy")
def vault_deleverage(  # type: ignore[no-untyped-def]
    vault, i, coll, size, entry, cp_size, cp_cash, marks_i, is_liq, adl_policy, ev,
    market_adl_volume,
):  # fmt: skip
    """Deleverage exchange ``i``'s vault: each market's inventory against that market's winners.

    Hyperliquid's ADL with the vault as the losing side (module docstring, "Loss limit"): in
    market ``j`` the inventory closes at the oracle ``marks_i[j]`` against the accounts with an
    opposite position there, ranked and sized by ``adl_policy``
    (:func:`~fundgym.envs.core.adl.close_market_counterparties`, on each account's equity over
    every market). An account is eligible unless ``is_liq`` marks it (the accounts being
    liquidated this tick; an empty mask marks none) or its equity is below zero. The vault
    receives the quote, the counterparties realise their PnL at the oracle: the ledger moves
    cash and base between them, and the vault's equity at the oracle does not change. The
    notional goes to ``EV_ADL_VOLUME``, ``EV_VAULT_ADL`` and ``market_adl_volume[j]``. What
    the eligible accounts cannot absorb closes against the counterparty (``cp_size``,
    ``cp_cash``) at the oracle, up to its opposite position, and is reported the same way;
    what is left after both stays in the inventory.
    """
    n_acc = size.shape[1]
    n_mk = size.shape[2]
    other = np.empty(0)  # one market: no other PnL, the one-market ranking op for op
    if n_mk > 1:
        other = np.zeros(n_acc)
    cand = np.empty(n_acc, np.int64)
    for j in range(n_mk):
        col = inventory_column(j)
        inv = vault[i, col]
        if inv == 0.0:
            continue
        m = marks_i[j]
        s = 1.0 if inv > 0.0 else -1.0
        if n_mk > 1:
            for a in range(n_acc):
                pnl = 0.0
                for k in range(n_mk):
                    if k != j:
                        pnl += size[i, a, k] * (marks_i[k] - entry[i, a, k])
                other[a] = pnl
        n_cand = 0
        capacity = 0.0
        for a in range(n_acc):
            q = size[i, a, j]
            if not q * s < 0.0 or (is_liq.shape[0] > 0 and is_liq[a]):
                continue
            equity = coll[i, a] + q * (m - entry[i, a, j])
            if n_mk > 1:
                equity += other[a]
            if equity >= 0.0:
                cand[n_cand] = a
                n_cand += 1
                capacity += abs(q)
        amount = min(abs(inv), capacity)
        if amount > 0.0:
            close_market_counterparties(
                i, j, coll, other, size, entry, m, cand[:n_cand], amount, amount * m, m, s,
                adl_policy,
            )  # fmt: skip
            inv = _vault_sold(vault, i, col, inv, s, amount, m, ev, market_adl_volume, j)
        # What the accounts cannot absorb closes against the rest of the venue's opposite
        # side, the counterparty (the positions no sampled account holds: makers among them),
        # at the oracle, up to its opposite position: last in the queue.
        rest = min(abs(inv), max(-s * cp_size[i, j], 0.0))
        if rest > 0.0:
            cp_size[i, j] += s * rest
            cp_cash[i] -= s * (rest * m)
            _vault_sold(vault, i, col, inv, s, rest, m, ev, market_adl_volume, j)


@jit(error_model="numpy")
def vault_tick_end_limit(  # type: ignore[no-untyped-def]
    vault, i, coll, size, entry, cp_size, cp_cash, marks_i, stages, adl_policy, ev,
    market_adl_volume,
):  # fmt: skip
    """At a tick's end, before the unwind: the loss limit's check against every account.

    With ADL a stage (``stages``, the waterfall's code), a vault beyond its loss limit at the
    oracles ``marks_i`` is deleveraged (:func:`vault_deleverage`, nobody excluded: the
    tick's liquidations are done).
    """
    if (stages & W_NO_ADL) == 0 and vault_over_loss_limit(vault, i, marks_i):
        nobody = np.zeros(0, np.bool_)
        vault_deleverage(
            vault, i, coll, size, entry, cp_size, cp_cash, marks_i, nobody, adl_policy, ev,
            market_adl_volume,
        )  # fmt: skip
