"""Venue events and thin-market defences: what the exchange itself does, tick by tick.

A scenario's ``events`` (:class:`fundgym.envs.scenarios.EventSpec`) become two per-tick arrays
per exchange, built once at reset (:func:`event_arrays`), which the compiled tick and the numpy
reference read the way they read the market's path columns: a bit mask of what is in force
(``VF_*``) and the leverage cap of new positions (``inf``: none). What each bit does:

* ``VF_OUTAGE``: traders cannot act, so the population does not step; with ``VF_ENGINE_OFF``
  the liquidation engine does not run either (BitMEX, 12 Mar 2020; Binance, 19 May 2021).
* ``VF_WITHDRAWAL_HALT``: nobody withdraws (the population's ``HALT_WITHDRAWALS``; the
  attacker's withdrawals stop too).
* ``VF_REDUCE_ONLY``: no new positions or increases (the population's ``HALT_NEW_POSITIONS``).
* ``VF_SETTLE_WINDOW``: the tick's index counts toward the settlement price; ``VF_SETTLE``:
  the tick every position closes at the window's average index (:func:`settle_exchange`);
  ``VF_CLOSED``: from that tick on the market is closed: no trading, arrivals, funding or
  liquidations.

Leverage caps (``leverage_cap`` events) act on new positions only: an existing position keeps
its size and its margin, as Binance's cut of LUNA to 8x did; a venue that also forced existing
positions down would be a ``reduce_only`` window plus the cap.

The thin-market defences are levers (:mod:`fundgym.envs.levers`): ``mark_cap_mult`` caps the
mark and the oracle at a multiple of the mark's 8-hour average (:func:`cap_mark`, Hyperliquid
after XPL), ``unrealised_pnl_haircut_frac`` limits what an account may withdraw against its
unrealised profit (:func:`attacker_withdrawal`, Mango), and ``oi_cap_frac`` caps open interest
relative to the starting open interest (the population refuses arrivals above it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fundgym.envs.core.vault import V_CASH, V_SIZE
from fundgym.envs.jit import jit
from fundgym.envs.traders.kernels import HALT_NEW_POSITIONS, HALT_WITHDRAWALS

if TYPE_CHECKING:
    from fundgym.envs.scenarios import EventSpec, Scenario

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

VF_OUTAGE = 1
VF_ENGINE_OFF = 2
VF_WITHDRAWAL_HALT = 4
VF_REDUCE_ONLY = 8
VF_SETTLE_WINDOW = 16
VF_SETTLE = 32
VF_CLOSED = 64
VF_ATTACKER = 128
"""The scenario's attacker withdraws this tick (from its ``withdraw_start_minute`` on)."""

#: Minutes of the mark's average the mark cap multiplies (Hyperliquid: 8 hours).
MARK_AVERAGE_MINUTES = 480.0
#: The attacker's account slot (:class:`fundgym.envs.scenarios.AttackerSpec`).
ATTACKER_SLOT = 0


def _ticks(start_minute: float, minutes: float, tick_minutes: float, n_ticks: int) -> slice:
    """Ticks whose minute ``k x tick`` lies in ``[start, start + minutes)``."""
    first = math.ceil(start_minute / tick_minutes - 1e-9)
    stop = (start_minute + minutes) / tick_minutes
    end = math.ceil(stop - 1e-9) if stop < n_ticks else n_ticks
    return slice(min(max(first, 0), n_ticks), min(max(end, 0), n_ticks))


def event_arrays(scenario: Scenario) -> tuple[IntArray, FloatArray]:
    """``(flags, leverage_cap)``, ``(n_ticks,)`` each: the scenario's events per tick.

    A settlement at minute ``s`` settles at the first tick at or after ``s``; its window is
    that tick and the ``round(index_window_minutes / tick) - 1`` ticks before it (at least
    the settling tick, at most the episode's start). Overlapping leverage caps: the lowest
    holds.
    """
    n = scenario.n_ticks
    dt = scenario.tick_minutes
    flags = np.zeros(n, dtype=np.int64)
    cap = np.full(n, np.inf)
    for ev in scenario.events:
        if ev.kind == "settlement":
            settles = _settlement_ticks(ev, dt, n)
            if settles is not None:
                k, first = settles
                flags[first : k + 1] |= VF_SETTLE_WINDOW
                flags[k] |= VF_SETTLE
                flags[k:] |= VF_CLOSED
            continue
        ticks = _ticks(ev.start_minute, ev.minutes or math.inf, dt, n)
        if ev.kind == "outage":
            flags[ticks] |= VF_OUTAGE | (0 if ev.engine_runs else VF_ENGINE_OFF)
        elif ev.kind == "withdrawal_halt":
            flags[ticks] |= VF_WITHDRAWAL_HALT
        elif ev.kind == "reduce_only":
            flags[ticks] |= VF_REDUCE_ONLY
        elif ev.kind == "leverage_cap":
            assert ev.max_leverage is not None  # the schema requires it
            cap[ticks] = np.minimum(cap[ticks], ev.max_leverage)
    flags |= _attacker_flags(scenario)
    return flags, cap


def _settlement_ticks(ev: EventSpec, dt: float, n: int) -> tuple[int, int] | None:
    """A settlement's tick and the first tick of its index window; ``None``: after the episode.

    It settles at the first tick at or after ``start_minute``; its window is that tick and
    the ``round(index_window_minutes / tick) - 1`` ticks before it (at least the settling
    tick, at most back to the episode's start).
    """
    k = _ticks(ev.start_minute, math.inf, dt, n).start
    if k >= n:
        return None
    w = max(1, round((ev.index_window_minutes or dt) / dt))
    return k, max(0, k - w + 1)


def _attacker_flags(scenario: Scenario) -> IntArray:
    """``VF_ATTACKER`` on every tick from the scenario's attacker's ``withdraw_start_minute``."""
    flags = np.zeros(scenario.n_ticks, dtype=np.int64)
    if scenario.attacker is not None:
        start = scenario.attacker.withdraw_start_minute
        flags[_ticks(start, math.inf, scenario.tick_minutes, scenario.n_ticks)] = VF_ATTACKER
    return flags


def market_event_arrays(scenario: Scenario) -> tuple[IntArray, BoolArray, FloatArray]:
    """``(flags, reduce_only, leverage_cap)``: the events of a scenario with several markets.

    ``flags`` ``(n_ticks,)`` holds the exchange's events (``VF_OUTAGE``, ``VF_ENGINE_OFF``,
    ``VF_WITHDRAWAL_HALT``, and ``VF_ATTACKER`` from the attacker's start); ``reduce_only``
    ``(n_ticks, M)`` and ``leverage_cap`` ``(n_ticks, M)`` the per-market ones, on the event's
    ``market`` or, without one, on every market (overlapping caps: the lowest holds). A
    settled market is reduce-only from its settling tick on (:func:`market_settlements`): it
    is closed, nothing opens there again.
    """
    n = scenario.n_ticks
    dt = scenario.tick_minutes
    names = scenario.market_names
    flags = np.zeros(n, dtype=np.int64)
    reduce_only = np.zeros((n, len(names)), dtype=np.bool_)
    cap = np.full((n, len(names)), np.inf)
    for ev in scenario.events:
        if ev.kind == "settlement":
            continue  # market_settlements
        ticks = _ticks(ev.start_minute, ev.minutes or math.inf, dt, n)
        cols = slice(None) if ev.market is None else names.index(ev.market)
        if ev.kind == "outage":
            flags[ticks] |= VF_OUTAGE | (0 if ev.engine_runs else VF_ENGINE_OFF)
        elif ev.kind == "withdrawal_halt":
            flags[ticks] |= VF_WITHDRAWAL_HALT
        elif ev.kind == "reduce_only":
            reduce_only[ticks, cols] = True
        elif ev.kind == "leverage_cap":
            assert ev.max_leverage is not None  # the schema requires it
            cap[ticks, cols] = np.minimum(cap[ticks, cols], ev.max_leverage)
    settle_tick, _ = market_settlements(scenario)
    for j, k in enumerate(settle_tick):
        if k >= 0:
            reduce_only[k:, j] = True
    return flags | _attacker_flags(scenario), reduce_only, cap


def market_settlements(scenario: Scenario) -> tuple[IntArray, IntArray]:
    """``(settle_tick, window_start)``, ``(M,)`` each: when each market settles, from which tick.

    As :func:`event_arrays`'s settlement, per market: a ``settlement`` on its ``market`` (every
    market without one) settles at the first tick at or after its ``start_minute``, at the
    average index of the ticks ``window_start .. settle_tick``. ``-1``: the market does not
    settle (or only after the episode). Two settlements of one market: the earlier holds.
    """
    n = scenario.n_ticks
    dt = scenario.tick_minutes
    names = scenario.market_names
    settle_tick = np.full(len(names), -1, dtype=np.int64)
    window_start = np.full(len(names), -1, dtype=np.int64)
    for ev in scenario.events:
        settles = _settlement_ticks(ev, dt, n) if ev.kind == "settlement" else None
        if settles is None:
            continue
        k, first = settles
        cols = range(len(names)) if ev.market is None else [names.index(ev.market)]
        for j in cols:
            if settle_tick[j] < 0 or k < settle_tick[j]:
                settle_tick[j] = k
                window_start[j] = first
    return settle_tick, window_start


def settle_market(
    coll: FloatArray,
    size: FloatArray,
    entry: FloatArray,
    cp_size: FloatArray,
    cp_cash: FloatArray,
    vault: FloatArray,
    inventory_col: int,
    j: int,
    price: FloatArray,
    has_assets: BoolArray,
) -> FloatArray:
    """Close every position in market ``j`` at ``price`` ``(E,)``; each exchange's debt ``(E,)``.

    :func:`settle_exchange` for one market of several: each account's one collateral balance
    takes its market-``j`` PnL at its exchange's price and its position there goes to zero;
    the outside counterparty and the vault (its column ``inventory_col``) close theirs at the
    same price. Nothing changes value at ``price``. An account left with no position in any
    market, no collateral asset (``has_assets`` ``(E, A)``) and negative collateral is set
    to zero and its debt returned, for the caller to pass down the waterfall; a cross account
    that still holds positions elsewhere keeps its balance, and the margin engine judges its
    equity over those positions as any account's (the settled loss may liquidate them).
    """
    q = size[:, :, j]
    had = q != 0.0
    coll += q * (price[:, None] - entry[:, :, j])
    q[...] = 0.0
    entry[:, :, j] = 0.0
    flat = ~(size != 0.0).any(axis=2) & ~has_assets
    bankrupt = had & flat & (coll < 0.0)
    debt: FloatArray = np.where(bankrupt, -coll, 0.0).sum(axis=1)
    coll[bankrupt] = 0.0
    cp_cash += cp_size[:, j] * price
    cp_size[:, j] = 0.0
    vault[:, V_CASH] += vault[:, inventory_col] * price
    vault[:, inventory_col] = 0.0
    return debt


@jit(inline="always")
def halt_mask(flags):  # type: ignore[no-untyped-def]
    """The population's halt bits for a tick's ``VF_*`` flags (its ``halt_mask`` argument)."""
    out = 0
    if flags & VF_WITHDRAWAL_HALT:
        out |= HALT_WITHDRAWALS
    if flags & VF_REDUCE_ONLY:
        out |= HALT_NEW_POSITIONS
    return out


@jit(error_model="numpy")
def settle_exchange(coll, size, entry, cp_size, cp_cash, vault, e, price):  # type: ignore[no-untyped-def]
    """Close every position of exchange ``e`` at ``price``; returns the bankrupt accounts' debt.

    Each account's collateral takes its PnL at ``price`` and its position goes to zero; the
    outside counterparty and the vault close theirs at the same price. Nothing changes value
    at ``price``, so the ledger still closes there. An account left with negative collateral
    is set to zero and its debt returned: the caller passes it down the waterfall (the fund
    pays what it can, the exchange the rest).
    """
    debt = 0.0
    for a in range(size.shape[1]):
        q = size[e, a, 0]
        if q != 0.0:
            c = coll[e, a] + q * (price - entry[e, a, 0])
            size[e, a, 0] = 0.0
            entry[e, a, 0] = 0.0
            if c < 0.0:
                debt -= c
                c = 0.0
            coll[e, a] = c
    cp_cash[e] += cp_size[e, 0] * price
    cp_size[e, 0] = 0.0
    vault[e, V_CASH] += vault[e, V_SIZE] * price
    vault[e, V_SIZE] = 0.0
    return debt


@jit(error_model="numpy")
def attacker_withdrawal(coll, size, entry, e, price, haircut_frac, imr):  # type: ignore[no-untyped-def]
    """What the attacker's account may withdraw now, USD (>= 0); the caller moves it.

    Its equity at ``price`` with unrealised profit counted at ``1 - haircut_frac`` (a loss
    counts whole), less the initial margin of its position, ``imr x |size| x price``.
    """
    a = ATTACKER_SLOT
    q = size[e, a, 0]
    pnl = q * (price - entry[e, a, 0])
    usable = coll[e, a] + pnl - haircut_frac * max(pnl, 0.0)
    return max(usable - imr * abs(q) * price, 0.0)


def attacker_withdrawal_markets(
    coll_usd: float,
    size: FloatArray,
    entry: FloatArray,
    price: FloatArray,
    haircut_frac: float,
    imr: FloatArray,
) -> float:
    """:func:`attacker_withdrawal` for an account with positions in several markets, USD (>= 0).

    ``size``, ``entry``, ``price`` and ``imr`` are ``(M,)``: its collateral plus its PnL over
    every market, the profit counted at ``1 - haircut_frac`` (a loss whole), less each
    position's initial margin ``imr_j x |size_j| x price_j``. With one market, the same sums
    as :func:`attacker_withdrawal`.
    """
    pnl = float((size * (price - entry)).sum())
    usable = coll_usd + pnl - haircut_frac * max(pnl, 0.0)
    return max(usable - float((imr * np.abs(size) * price).sum()), 0.0)


@jit(error_model="numpy", inline="always")
def cap_mark(mark, average, mult):  # type: ignore[no-untyped-def]
    """``mark`` capped at ``mult x average`` (``mult`` 0: no cap, or no average yet)."""
    if mult > 0.0 and average > 0.0:
        return min(mark, mult * average)
    return mark


def capped_marks(
    mark: FloatArray,
    oracle: FloatArray,
    average: FloatArray,
    mult: FloatArray,
    weight: float | FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The mark cap on a batch: ``(mark, oracle, average)`` after one tick.

    :func:`cap_mark`'s rule in numpy, for the simulators that step in Python: ``mark`` and
    ``oracle`` (``(E,)``, or ``(E, M)`` with one column per market) at most ``mult x
    average`` where ``mult`` (``(E,)``, the exchange's ``mark_cap_mult``) is above 0 and the
    market has an average; the mark's 8-hour average then moves toward the capped mark by
    ``weight`` (:func:`mark_average_weight`). Each market keeps its own average.
    """
    m = np.asarray(mult, dtype=np.float64).reshape((-1,) + (1,) * (mark.ndim - 1))
    on = (m > 0.0) & (average > 0.0)
    mark = np.where(on, np.minimum(mark, m * average), mark)
    oracle = np.where(on, np.minimum(oracle, m * average), oracle)
    new_average: FloatArray = average + weight * (mark - average)
    return mark, oracle, new_average


def mark_average_weight(tick_minutes: float) -> float:
    """Weight of one tick in the mark's 8-hour exponential average."""
    return float(1.0 - np.exp(-tick_minutes / MARK_AVERAGE_MINUTES))
