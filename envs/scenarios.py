"""Scenario library: the documented, validated schema and the exogenous market path it draws.

A scenario is a YAML file under ``configs/scenarios/`` (or any path). It composes the market
model's parts: a base process (GARCH(1,1) with Student-t innovations, Merton jumps, optional
regime switching), an optional scripted crash (legs), venue-only wicks and basis, book-depth
collapses, the oracle's delay, freezes, floor and manipulation, the funding clamp, and
precursors (leverage and open interest building up, funding running hot, depth thinning and
volatility clustering before the crash, with a strength; 0 = no warning). ``targets`` holds
the calibration facts the scenario reproduces; tests check them.

:func:`load_scenario` takes a name (a file in the library) or a path and raises
:class:`~fundgym.envs.schema.SchemaError` naming the file, the field, the value and what is allowed.
:func:`market_path` draws the exogenous parts for a batch of exchanges; the simulator adds
what is endogenous (liquidation flow moving the price, funding from the resulting premium).

An optional ``markets`` section lists several markets moving together through a factor model
(:class:`MarketSpec`, ``docs/markets.md``); :mod:`fundgym.envs.market.factor` draws them.
An optional ``collateral`` section lists collateral assets besides USD with their scripted
depegs (:class:`CollateralSpec`); :mod:`fundgym.envs.market.collateral` draws their prices.
The one-market simulator runs one market with USD collateral, so :func:`market_path` refuses
a scenario with several markets or with collateral assets (:func:`require_single_market`),
and :func:`single_market_names` lists the library scenarios it can run; the others run on
:class:`~fundgym.envs.markets_simulator.MarketsSimulator`.

Finite or refused: the schema's ranges and cross-field budgets (the comment above
:data:`MAX_HORIZON_MINUTES`) keep every drawn price and depth finite and positive, and
:func:`market_path` checks each draw anyway, raising :class:`NonFinitePathError` (a
:class:`~fundgym.envs.schema.SchemaError`) with the scenario and the tick rather than return
``inf``. ``start_utc`` dates minute 0 of a historical scenario (:attr:`Scenario.start_datetime`).
PyYAML is imported only to read a file, so the simulator itself needs numpy alone.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fundgym.envs.market.depth import Collapse, depth_multiplier_path
from fundgym.envs.market.price import (
    MINUTES_PER_DAY,
    MINUTES_PER_YEAR,
    CrashLeg,
    crash_log_returns,
    garch_t_log_returns,
    merton_jump_log_returns,
    regime_path,
)
from fundgym.envs.resources import SCENARIO_DIR
from fundgym.envs.schema import FieldError, SchemaError, build, build_trusted, load_yaml, spec

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


# ---------------------------------------------------------------- bounds ----
# Why a scenario inside the schema cannot overflow (docs/scenarios.md, "Finite by construction").
# float64 overflows at exp(709.8) and underflows to 0 below exp(-745); a price is the start price
# in [1e-9, 1e12] times exp(log moves) from the parts below, each bounded on its own:
#   scripted legs     |running log move| <= ln 1e10 = 23.0       (exact: the legs are fixed)
#   base process      drift + 10 sd of the log move <= 23.0       (a budget over the horizon)
#   venue wicks       sum |ln(1 + return)| <= ln 1e6 = 13.8       (last price only)
#   manipulations     sum |ln(1 + return)| <= 13.8                (oracle only)
#   basis             |ln(1 + basis_frac)| <= 2.3, noise <= 10% a tick
# so index / initial stays within 1e+-20 at the design point, and every drawn price (index,
# last with basis and wicks, an oracle marked to last and manipulated) within about 1e-43 ..
# 1e45 (impact from liquidation flow comes on top, in the simulator). The base process has
# fat tails, so "10 sd" is a design point, not a certainty:
# at the per-tick limit (5% a tick, alpha 0.1-0.3, nu 2.5-3, 50,000 paths of 1,719 ticks) the
# largest log move measured was 84, against 709 to overflow; sampling still checks every path
# (NonFinitePathError) so a value beyond all of this is refused, never returned.

#: Longest episode, minutes: a year. The path is held in memory, and over a year the
#: base-process budget already caps volatility at ~200% (0.5 V + 10 sqrt(V) <= 23.0: V <= 4.35).
MAX_HORIZON_MINUTES = 525_600.0
#: Most ticks in one path, and most ticks of oracle delay: the path is eight
#: ``(n_ticks, n_envs)`` arrays and the oracle keeps ``delay + 1`` rows.
MAX_TICKS = 2**20
#: Largest std of one tick's log return at the highest volatility multiplier. The base process
#: is the noise around the scripted legs (which carry the crash moves); above ~5% a tick a
#: fat-tailed draw feeds GARCH's next variance (alpha z^2) and a few draws in a row compound.
MAX_TICK_SIGMA = 0.05
#: Standard deviations of the base process's log move that :data:`MAX_RANDOM_LOG_MOVE` covers.
TAIL_SIGMAS = 10.0
#: Budget of the base process (GARCH or GBM with jumps) over the episode: its drift plus
#: :data:`TAIL_SIGMAS` standard deviations of its log move, a factor 1e10.
MAX_RANDOM_LOG_MOVE = math.log(1e10)
#: Scripted legs: their running log move stays within this either way (1e10; LUNA's
#: -99.9999% over four legs is -13.7, Mango's +2,295% is +3.2).
MAX_CRASH_LOG_MOVE = math.log(1e10)
#: Venue wicks, and oracle manipulations: the sum of their ``|ln(1 + return_frac)|`` (1e6, as if
#: every one overlapped; GDAX's 2017 wick to $0.10 from $317 is ln 3,178 = 8.1).
MAX_MULTIPLIER_LOG_MOVE = math.log(1e6)
#: Depth collapses together keep at least this fraction of normal depth (their floors multiply
#: where they overlap): with precursor thinning (x0.05) and noise, depth stays > 0.
MIN_DEPTH_FLOOR_PRODUCT = 1e-6
#: Shortest half-life, smoothing or lead time, minutes (0.6 s): anything shorter acts at once
#: on any clock, and a floor keeps ``tick / duration`` finite (5e-324 would overflow it).
MIN_DURATION_MINUTES = 0.01
#: The one market's name in a scenario without a ``markets`` section.
SINGLE_MARKET_NAME = "market"
#: Most negative return of one crash leg, wick or manipulation: a 10,000-fold fall (GDAX ETH
#: 2017: -99.97%). A return of -1 would be a price of 0.
MIN_RETURN_FRAC = -0.9999


def _log_moves_text(total: float, limit: float) -> str:
    """``"24.1, at most ln(1e10) = 23.0"``: a log move against its budget."""
    return f"{total:.3g}, at most ln(1e{round(limit / math.log(10))}) = {limit:.1f}"


# ---------------------------------------------------------------- schema ----


@dataclass(frozen=True)
class GarchSpec:
    """GARCH(1,1) with Student-t innovations."""

    alpha: float = spec(
        0.06,
        ge=0.0,
        le=0.3,
        doc="reaction to the last squared return (crypto fits 0.03-0.15; a large alpha turns "
        "one fat-tailed draw into a run of large ones)",
    )
    beta: float = spec(
        0.92,
        ge=0.0,
        le=0.99,
        doc="variance persistence; alpha + beta <= 0.99 (a shock's half-life at most 69 ticks; "
        "near 1 the variance wanders with no pull back to its target)",
    )
    nu: float = spec(4.0, gt=2.0, le=1e6, doc="Student-t degrees of freedom (fat tails)")

    def __post_init__(self) -> None:
        if self.alpha + self.beta > 0.99:
            raise FieldError(
                "beta",
                self.beta,
                f"alpha + beta must be <= 0.99, got {self.alpha + self.beta:g} (GARCH "
                "persistence; at 1 the variance has no long-run level)",
            )


@dataclass(frozen=True)
class JumpSpec:
    """Merton jumps."""

    rate_per_day: float = spec(
        0.5,
        ge=0.0,
        le=1440.0,
        doc="expected jumps per day (at most one a minute; the library: 0.5-2)",
    )
    mean_log: float = spec(
        -0.005,
        ge=-0.25,
        le=0.25,
        doc="mean log jump (negative skew); larger moves are scripted legs",
    )
    std_log: float = spec(0.01, ge=0.0, le=0.25, doc="std of log jumps")


@dataclass(frozen=True)
class RegimeSpec:
    """Markov regimes (e.g. calm, volatile, crisis) scaling volatility and jump rate."""

    vol_multipliers: tuple[float, ...] = spec(
        doc="volatility and jump-rate multiplier per regime (crisis regimes run x2-4)",
        ge=0.01,  # a hundredfold calm is no market, and tinier ones underflow to zero
        le=10.0,
    )
    switch_rate_per_day: tuple[tuple[float, ...], ...] = spec(
        doc="rate of moving from regime i to j, per day", ge=0.0, le=1e4
    )
    initial: int = spec(0, ge=0, doc="regime at the start")

    def __post_init__(self) -> None:
        k = len(self.vol_multipliers)
        if (
            k == 0
            or any(len(row) != k for row in self.switch_rate_per_day)
            or len(self.switch_rate_per_day) != k
        ):
            raise ValueError(f"regimes: switch_rate_per_day must be a {k}x{k} matrix")
        if self.initial >= k:
            raise ValueError(f"regimes: initial must be < {k}, got {self.initial}")


@dataclass(frozen=True)
class PriceSpec:
    """The base price process."""

    initial: float = spec(
        ge=1e-9,
        le=1e12,
        doc="starting price, USD (with every log move bounded, prices stay in ~1e-43..1e45)",
    )
    model: Literal["garch_t", "gbm"] = "garch_t"
    vol_annual: float = spec(
        0.5,
        gt=0.0,
        le=5.0,
        doc="long-run annualised volatility (5 = five times LUNA's scenario); times the "
        "largest multiplier, one tick's std <= 0.05, and drift + 10 sd of the base process's "
        "log move over the episode (jumps included) <= ln 1e10",
    )
    garch: GarchSpec = dataclasses.field(default_factory=GarchSpec)
    jumps: JumpSpec = dataclasses.field(default_factory=JumpSpec)
    regimes: RegimeSpec | None = None


@dataclass(frozen=True)
class LegSpec:
    """One crash leg (see :class:`fundgym.envs.market.price.CrashLeg`)."""

    kind: Literal["decline", "recovery", "pause", "steps", "wick"]
    minutes: float = spec(gt=0.0, le=1e6, doc="duration")
    return_frac: float = spec(
        0.0,
        ge=MIN_RETURN_FRAC,
        le=1e3,
        doc="total simple return of the leg (-0.9999: a 10,000-fold fall; -1 is a price of 0)",
    )
    shape: Literal["linear", "accelerating", "front_loaded"] = "linear"
    n_steps: int = spec(1, ge=1, le=1000, doc="drops of a stepwise decline")


def crash_log_range(legs: tuple[LegSpec, ...]) -> tuple[float, float]:
    """Lowest and highest running log move of scripted legs, from 0 at the first leg's start.

    A ``wick`` leg moves and comes straight back; a ``pause`` does not move.
    """
    level = low = high = 0.0
    for leg in legs:
        move = math.log1p(leg.return_frac)
        if leg.kind == "wick":
            low, high = min(low, level + move), max(high, level + move)
        elif leg.kind != "pause":
            level += move
            low, high = min(low, level), max(high, level)
    return low, high


@dataclass(frozen=True)
class CrashSpec:
    """A scripted crash dropped into the base path."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the first leg starts")
    legs: tuple[LegSpec, ...] = spec(
        doc="legs in order; their running log move stays within ln 1e10 = 23.0 either way "
        "(LUNA's four legs: -13.7)"
    )
    vol_multiplier: float = spec(
        2.0, ge=0.01, le=10.0, doc="extra volatility during the legs (BT-2020: x2)"
    )
    basis_frac: float = spec(
        0.0,
        ge=-0.9,
        le=1.0,
        doc="venue discount vs index at the trough (BT-2020: -0.10; -0.9 is a tenth of spot)",
    )

    def __post_init__(self) -> None:
        low, high = crash_log_range(self.legs)
        if max(-low, high) > MAX_CRASH_LOG_MOVE:
            raise FieldError(
                "legs",
                [leg.return_frac for leg in self.legs if leg.kind != "pause"],
                "the legs' running log move reaches "
                + _log_moves_text(low if -low > high else high, MAX_CRASH_LOG_MOVE)
                + " either way (a factor 1e10)",
            )


@dataclass(frozen=True)
class WickSpec:
    """A venue-only print: last price moves, index and a well-built mark do not."""

    minute: float = spec(ge=0.0, le=1e7, doc="tick of the print")
    return_frac: float = spec(
        ge=MIN_RETURN_FRAC, le=1e3, doc="move of the last price (Binance.US 2021: -0.875)"
    )
    ticks: int = spec(1, ge=1, le=1000, doc="how many ticks it lasts")


def _sum_abs_log1p(returns: list[float]) -> float:
    return sum(abs(math.log1p(r)) for r in returns)


@dataclass(frozen=True)
class VenueSpec:
    """This venue's own prints and marking."""

    basis_noise_bps: float = spec(
        2.0, ge=0.0, le=1000.0, doc="std of the last-vs-index basis per tick (10% at most)"
    )
    wicks: tuple[WickSpec, ...] = spec(
        (), doc="venue-only prints; the sum of their abs(ln(1 + return_frac)) <= ln 1e6 = 13.8"
    )
    mark_method: Literal["median", "last"] = "median"

    def __post_init__(self) -> None:
        total = _sum_abs_log1p([w.return_frac for w in self.wicks])
        if total > MAX_MULTIPLIER_LOG_MOVE:
            raise FieldError(
                "wicks",
                [w.return_frac for w in self.wicks],
                "the sum of |ln(1 + return_frac)| is "
                + _log_moves_text(total, MAX_MULTIPLIER_LOG_MOVE)
                + " (overlapping wicks multiply)",
            )


@dataclass(frozen=True)
class CollapseSpec:
    """A depth collapse (see :class:`fundgym.envs.market.depth.Collapse`)."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the collapse starts")
    minutes_to_floor: float = spec(ge=0.0, le=1e6, doc="ramp length")
    floor_mult: float = spec(
        ge=1e-4,
        le=1.0,
        doc="depth at the floor, fraction of normal (Oct 2025: 0.02-0.1; a wick's minute: 0.01)",
    )
    hold_minutes: float = spec(0.0, ge=0.0, le=1e7, doc="time at the floor")
    recovery_half_life_minutes: float = spec(
        60.0, ge=MIN_DURATION_MINUTES, le=1e7, doc="recovery half-life"
    )


@dataclass(frozen=True)
class DepthSpec:
    """Book depth per 1% of price."""

    normal_usd_per_pct: float = spec(
        ge=1.0,
        le=1e13,
        doc="normal depth, USD per 1% move (under $1 is no book): the real venue's figure, and "
        "the simulated book's unless oi_to_depth is given",
    )
    oi_to_depth: float | None = spec(
        None,
        gt=0.0,
        le=1e5,
        doc="normal depth = the exchange's starting open interest / this ratio (real BTC: "
        "about 225); none: normal_usd_per_pct",
    )
    noise_frac: float = spec(0.05, ge=0.0, le=0.9, doc="lognormal noise on the multiplier")
    collapses: tuple[CollapseSpec, ...] = spec(
        (), doc="depth collapses; the product of their floor_mult >= 1e-6"
    )
    impact_coef: float = spec(
        0.3,
        ge=0.0,
        le=1.0,
        doc="share of the square-root book's move under a tick's net liquidation flow that "
        "reaches the index (0: liquidations do not move the price); 0.3 [E] keeps the flow's "
        "share of the majors' drawdowns under a third (docs/impact.md)",
    )
    impact_permanent_frac: float = spec(
        0.5, ge=0.0, le=1.0, doc="share of that move that stays; the rest the book refills"
    )
    impact_half_life_minutes: float = spec(
        30.0, ge=MIN_DURATION_MINUTES, le=1e7, doc="refill half-life of the transient share"
    )

    def __post_init__(self) -> None:
        check_floor_product("collapses", self.collapses)


def check_floor_product(field: str, collapses: tuple[CollapseSpec, ...]) -> None:
    """Collapses that overlap multiply: at least :data:`MIN_DEPTH_FLOOR_PRODUCT` must remain.

    Raises:
        FieldError: Naming ``field`` and the floors.
    """
    product = math.prod(c.floor_mult for c in collapses)
    if product < MIN_DEPTH_FLOOR_PRODUCT:
        raise FieldError(
            field,
            [c.floor_mult for c in collapses],
            f"the floor_mult values multiply to {product:.3g} (as they do where collapses "
            f"overlap); at least {MIN_DEPTH_FLOOR_PRODUCT:g} of normal depth must remain",
        )


@dataclass(frozen=True)
class WindowSpec:
    """A time window."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="start")
    minutes: float = spec(gt=0.0, le=1e7, doc="length")


@dataclass(frozen=True)
class ManipulationSpec:
    """The oracle's source is pushed by ``return_frac`` over the window, then released."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="start")
    minutes: float = spec(gt=0.0, le=1e7, doc="length")
    return_frac: float = spec(ge=MIN_RETURN_FRAC, le=1e3, doc="peak move of the oracle")


@dataclass(frozen=True)
class OracleSpec:
    """What the margin engine reads."""

    source: Literal["mark", "index"] = "mark"
    delay_minutes: float = spec(
        0.0, ge=0.0, le=1e5, doc="staleness of the feed (at most 2**20 ticks)"
    )
    floor_price: float | None = spec(None, gt=0.0, le=1e12, doc="minimum answer of the feed")
    freezes: tuple[WindowSpec, ...] = ()
    manipulations: tuple[ManipulationSpec, ...] = spec(
        (), doc="pushes of the oracle; the sum of abs(ln(1 + return_frac)) <= ln 1e6 = 13.8"
    )

    def __post_init__(self) -> None:
        total = _sum_abs_log1p([m.return_frac for m in self.manipulations])
        if total > MAX_MULTIPLIER_LOG_MOVE:
            raise FieldError(
                "manipulations",
                [m.return_frac for m in self.manipulations],
                "the sum of |ln(1 + return_frac)| is "
                + _log_moves_text(total, MAX_MULTIPLIER_LOG_MOVE)
                + " (overlapping manipulations multiply)",
            )


@dataclass(frozen=True)
class FundingSpec:
    """Funding clamp (Binance formula, BitMEX cap)."""

    interval_hours: float = spec(
        8.0,
        ge=1.0,
        le=1e3,
        doc="funding interval (hourly on Hyperliquid and dYdX v4, 8 h on Binance; each tick "
        "pays rate x tick / interval)",
    )
    interest_per_interval: float = spec(0.0001, ge=-0.1, le=0.1, doc="interest rate I")
    clamp_per_interval: float = spec(0.0005, ge=0.0, le=0.1, doc="clamp on I - P")
    cap_per_interval: float = spec(0.00375, gt=0.0, le=0.5, doc="cap on the rate")
    premium_ema_minutes: float = spec(
        60.0, ge=MIN_DURATION_MINUTES, le=1e5, doc="smoothing of the premium"
    )


@dataclass(frozen=True)
class PrecursorSpec:
    """Build-up before the crash; strength 0 = the crash arrives with no warning."""

    strength: float = spec(0.0, ge=0.0, le=1.0, doc="0 none .. 1 strong")
    lead_minutes: float = spec(
        720.0, ge=MIN_DURATION_MINUTES, le=1e6, doc="how long before the crash"
    )
    hot_funding_apr: float = spec(0.40, ge=0.0, le=5.0, doc="funding APR at full strength")
    leverage_build: float = spec(0.5, ge=0.0, le=5.0, doc="extra leverage of new positions")
    oi_build: float = spec(1.0, ge=0.0, le=20.0, doc="extra arrivals of new positions")
    long_skew: float = spec(0.15, ge=0.0, le=0.45, doc="extra long share of new positions")
    depth_thinning: float = spec(0.4, ge=0.0, le=0.95, doc="depth lost at full strength")
    vol_cluster: float = spec(
        1.0, ge=0.0, le=9.0, doc="extra volatility at full strength (x10 at most)"
    )


@dataclass(frozen=True)
class TargetSpec:
    """Calibration facts the scenario reproduces (checked by tests on its default seed)."""

    price: Literal["index", "mark", "last"] = "index"
    drawdown_frac: float | None = spec(None, ge=0.0, le=1.0, doc="peak-to-trough drawdown")
    time_to_trough_minutes: float | None = spec(None, gt=0.0, le=1e7, doc="peak to trough")
    runup_frac: float | None = spec(None, ge=0.0, le=1e4, doc="trough-to-peak run-up")
    time_to_peak_minutes: float | None = spec(None, gt=0.0, le=1e7, doc="trough to peak")
    depth_floor_mult: float | None = spec(None, gt=0.0, le=1.0, doc="depth collapse reached")
    mark_max_drawdown_frac: float | None = spec(
        None, ge=0.0, le=1.0, doc="upper bound on the mark's drawdown (a mark ignoring wicks)"
    )


EventKind = Literal["outage", "withdrawal_halt", "settlement", "leverage_cap", "reduce_only"]
#: Fields each event kind takes beyond ``kind`` and ``start_minute`` (True: required).
_EVENT_FIELDS: dict[str, dict[str, bool]] = {
    "outage": {"minutes": True, "engine_runs": True},
    "withdrawal_halt": {"minutes": True},
    "settlement": {"index_window_minutes": True, "market": False},
    "leverage_cap": {"max_leverage": True, "minutes": False, "market": False},
    "reduce_only": {"minutes": True, "market": False},
}


@dataclass(frozen=True)
class EventSpec:
    """A venue event: what the exchange did, scripted (:mod:`fundgym.envs.core.venue_events`).

    ``outage``: traders cannot act for ``minutes`` (no population step); the liquidation
    engine runs or not (``engine_runs``; BitMEX, 12 Mar 2020, 02:16-02:40 UTC).
    ``withdrawal_halt``: no withdrawals for ``minutes`` (Binance blocked transfers, 19 May
    2021). ``settlement``: delisting or early settlement at ``start_minute``: every position
    closes at the average index of the ``index_window_minutes`` before it, then the market is
    closed (BitMEX LUNA, 12 May 2022 20:00 UTC, against a 30-minute index).
    ``leverage_cap``: new positions at most ``max_leverage``, to the end or for ``minutes``;
    existing positions keep their size and margin (Binance LUNA: 8x). ``reduce_only``: no new
    positions or increases for ``minutes``. The last three can name the ``market`` they act
    on, as venues act on one contract (Binance capped LUNA, not BTC); without it they act on
    every market. Outages and withdrawal halts are the exchange's, every market's.
    """

    kind: EventKind
    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the event starts (or settles)")
    minutes: float | None = spec(None, gt=0.0, le=1e7, doc="length of the event")
    engine_runs: bool | None = spec(None, doc="outage: whether the liquidation engine runs")
    index_window_minutes: float | None = spec(
        None, gt=0.0, le=1e5, doc="settlement: the index is averaged over this window"
    )
    max_leverage: float | None = spec(
        None, ge=1.0, le=1000.0, doc="leverage_cap: largest leverage of a new position"
    )
    market: str | None = spec(
        None,
        doc="settlement, leverage_cap, reduce_only: the market it acts on (a name from "
        "markets:); none: every market",
    )

    def __post_init__(self) -> None:
        allowed = _EVENT_FIELDS[self.kind]
        for name in ("minutes", "engine_runs", "index_window_minutes", "max_leverage", "market"):
            value = getattr(self, name)
            if value is None and allowed.get(name, False):
                raise FieldError(name, value, f"required by a {self.kind!r} event")
            if value is not None and name not in allowed:
                takes = ", ".join(["start_minute", *allowed])
                raise FieldError(
                    name, value, f"not a field of a {self.kind!r} event (it takes {takes})"
                )


@dataclass(frozen=True)
class AttackerSpec:
    """An attacker's account (Mango, 11 Oct 2022): opened at minute 0, then drained.

    The account holds ``margin_usd`` behind a position of ``notional_usd`` at the initial
    price, opened against the outside counterparty (Mango's attacker matched it himself). From
    ``withdraw_start_minute`` on it withdraws, every tick, what the venue lets it take: its
    equity at the oracle, unrealised profit counted at ``1 - unrealised_pnl_haircut_frac``
    (a lever), less the initial margin of the position, and in all at most ``lendable_usd``.
    When the price reverts the account is bankrupt and the margin engine's waterfall takes
    the loss. The account is slot 0 (:data:`fundgym.envs.core.venue_events.ATTACKER_SLOT`);
    the trader population still treats that slot as one of its own (it may draw it for an
    exit, a reaction or volume).
    """

    margin_usd: float = spec(gt=0.0, le=1e12, doc="collateral deposited (Mango: $5M USDC)")
    notional_usd: float = spec(
        gt=0.0,
        le=1e13,
        doc="position at the initial price (Mango: 483M MNGO x $0.038 = $18.4M)",
    )
    side: Literal["long", "short"] = "long"
    withdraw_start_minute: float = spec(
        0.0, ge=0.0, le=1e7, doc="minute from which it withdraws against unrealised PnL"
    )
    lendable_usd: float | None = spec(
        None,
        gt=0.0,
        le=1e13,
        doc="most the venue can pay out or lend, USD (Mango: every lendable asset, ~$116M "
        "drained); none: no limit beyond the account's own",
    )
    market: str | None = spec(
        None,
        doc="the market its position is in (a name from markets:); none: the first market",
    )


@dataclass(frozen=True)
class IdioCrashSpec:
    """A crash of one market alone (LUNA in May 2022), added to what the factor gives it."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the first leg starts")
    legs: tuple[LegSpec, ...] = spec(
        doc="legs in order, as crash.legs; with the market's share of the common crash, the "
        "running log move stays within ln 1e10 = 23.0 either way"
    )


#: A market's name: a ticker (``BTC``, ``1000PEPE``, ``USDe``), unique in its scenario.
_MARKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class MarketSpec:
    """One market of a multi-market exchange (``docs/markets.md``).

    Market ``i``'s log return each tick is ``beta x`` the factor's base log return (market 0's
    GARCH or GBM draw plus its jumps), plus its share of the scripted crash
    (:attr:`crash_scale` times its legs' log moves, or :meth:`crash_legs`), plus its own
    Gaussian noise, jumps and crash. ``markets[0]`` is the factor market itself: its
    parameters are the scenario's own sections, so it takes a name and nothing else
    (:meth:`Scenario.__post_init__` says which field to leave out).

    The optional sections: ``jumps``, the market's own Merton jumps (their rate scaled by the
    factor's regime; none: no jumps of its own); ``idio_crash``, a crash of this market alone;
    ``depth_collapses``, ``venue``, ``oracle`` and ``funding``, this market's own (none: the
    scenario's).
    """

    name: str = spec(doc="ticker, unique in the scenario: 1-32 of A-Z a-z 0-9 _ . -, e.g. ETH")
    initial: float | None = spec(
        None,
        ge=1e-9,
        le=1e12,
        doc="starting price, USD; required from markets[1] on (markets[0] starts at price.initial)",
    )
    beta: float = spec(
        1.0,
        ge=0.0,
        le=10.0,
        doc="loading on the factor's log returns (markets[0]: 1); the scripted crash too "
        "unless crash_beta or crash_returns is given",
    )
    idio_vol_annual: float = spec(
        0.0,
        ge=0.0,
        le=5.0,
        doc="annualised volatility of the market's own Gaussian noise, scaled by the factor's "
        "volatility multiplier (regimes, crash, precursors)",
    )
    jumps: JumpSpec | None = None
    crash_beta: float | None = spec(
        None,
        ge=0.0,
        le=20.0,
        doc="multiple of each crash leg's log move this market makes (10 Oct 2025 alts: 4-6 "
        "[E]); none: beta",
    )
    crash_returns: tuple[float, ...] | None = spec(
        None,
        ge=MIN_RETURN_FRAC,
        le=1e3,
        doc="this market's total simple return of each crash leg, in order (same timing and "
        "shapes; a pause leg's is 0); replaces crash_beta",
    )
    idio_crash: IdioCrashSpec | None = None
    depth_scale: float = spec(
        1.0,
        ge=1e-6,
        le=1e3,
        doc="normal book depth as a multiple of the scenario's (depth.normal_usd_per_pct, or "
        "open interest / depth.oi_to_depth); the depth noise, and the collapses unless "
        "depth_collapses is given, apply as they are",
    )
    depth_collapses: tuple[CollapseSpec, ...] | None = spec(
        None,
        doc="this market's own depth collapses, fields as depth.collapses (a thin alt's book "
        "emptying while BTC's holds); the product of their floor_mult >= 1e-6; none: the "
        "scenario's",
    )
    venue: VenueSpec | None = None
    oracle: OracleSpec | None = None
    funding: FundingSpec | None = None
    oi_share: float | None = spec(
        None,
        gt=0.0,
        lt=1.0,
        doc="this market's share of the exchange's open interest at the start (the "
        "population's market mix); give it on every market from markets[1] on or on none "
        "(then shares follow depth_scale); markets[0] holds the rest",
    )
    target_drawdown_frac: float | None = spec(
        None,
        ge=0.0,
        le=1.0,
        doc="peak-to-trough drawdown of this market's index on the default seed (tests check "
        "it within 5 pp; markets[0] uses targets)",
    )

    def __post_init__(self) -> None:
        if not _MARKET_NAME.match(self.name):
            raise FieldError("name", self.name, "1-32 of A-Z a-z 0-9 _ . -, starting with one")
        if self.depth_collapses is not None:
            check_floor_product("depth_collapses", self.depth_collapses)
        if self.crash_beta is not None and self.crash_returns is not None:
            raise FieldError(
                "crash_returns", list(self.crash_returns), "give crash_beta or crash_returns"
            )

    @property
    def crash_scale(self) -> float:
        """Multiple of the crash legs' log moves this market makes (without ``crash_returns``)."""
        return self.beta if self.crash_beta is None else self.crash_beta

    def crash_legs(self, crash: CrashSpec) -> tuple[LegSpec, ...]:
        """The scenario's crash legs with this market's ``crash_returns``: same timing, shapes.

        Raises:
            ValueError: The market has no ``crash_returns`` (its share is :attr:`crash_scale`
                times the legs' log moves, scaled exactly in log terms by the drawing).
        """
        if self.crash_returns is None:
            raise ValueError(f"market {self.name!r} has no crash_returns")
        return tuple(
            dataclasses.replace(leg, return_frac=r)
            for leg, r in zip(crash.legs, self.crash_returns, strict=True)
        )

    def crash_log_range(self, crash: CrashSpec) -> tuple[float, float]:
        """Lowest and highest running log move of this market's share of ``crash``."""
        if self.crash_returns is not None:
            return crash_log_range(self.crash_legs(crash))
        low, high = crash_log_range(crash.legs)
        return self.crash_scale * low, self.crash_scale * high


#: The unit of account: every balance is in USD, accepted at 1 with no haircut, so a
#: ``collateral`` section lists only the other assets and none of them may take this name.
UNIT_OF_ACCOUNT = "USD"


@dataclass(frozen=True)
class DepegPointSpec:
    """A waypoint of a scripted depeg: the price at ``minute`` as a multiple of its reference.

    Depegs are reported as prices at times (UST $0.68 on 9 May 2022, USDe $0.6567 on Binance's
    book), so a depeg is scripted by its waypoints, each carrying its own source.
    """

    minute: float = spec(ge=0.0, le=1e7, doc="minute of the waypoint")
    level: float = spec(
        ge=1e-4,
        le=10.0,
        doc="price as a multiple of the reference (1: on it; UST on 13 May 2022: 0.037); "
        "1e-4 is a 10,000-fold fall, as a crash leg's floor",
    )


def _check_waypoints(field: str, points: tuple[DepegPointSpec, ...]) -> None:
    """Waypoint minutes strictly increase: a depeg is a function of time."""
    for k in range(1, len(points)):
        if points[k].minute <= points[k - 1].minute:
            raise FieldError(
                f"{field}[{k}].minute",
                points[k].minute,
                f"after {field}[{k - 1}].minute = {points[k - 1].minute:g}: waypoints in time "
                "order",
            )


@dataclass(frozen=True)
class CollateralSpec:
    """A collateral asset accounts can post besides USD (``docs/markets.md``, Collateral).

    Three prices per asset, each ``(n_ticks, n_envs)``
    (:func:`fundgym.envs.market.collateral.draw_collateral`):

    * **redemption**: what one token redeems for: 1 USD for a stable; for a liquid-staking
      token (``lst``), ``conversion_ratio`` times its market's index (wBETH: ETH);
    * **index**: its external price across venues: redemption x ``index_depeg`` x noise (UST
      fell to $0.037 everywhere);
    * **book**: the venue's own thin book: index x ``book_depeg`` x noise (Binance's USDe book
      printed $0.6567 on 10 Oct 2025, a depeg of that book alone).

    Which of the three a venue marks collateral at is its choice, each with its failure mode;
    ``haircut_frac`` is the venue's default haircut (a lever once collateral is simulated).
    """

    name: str = spec(
        doc="ticker, unique among the scenario's markets and collateral, not USD: 1-32 of "
        "A-Z a-z 0-9 _ . -, e.g. USDe"
    )
    kind: Literal["stable", "yield_stable", "algo_stable", "lst"] = spec(
        doc="stable (fiat-backed, USDT-like), yield_stable (USDe-like), algo_stable "
        "(UST-like): pegged to USD; lst (wBETH-like): a liquid-staking token of a market"
    )
    haircut_frac: float = spec(
        ge=0.0,
        lt=1.0,
        doc="the venue's default haircut: the share of the collateral's value it does not "
        "count (Binance Multi-Assets: USDT 0.0001, ETH 0.05, SOL 0.1); give its source",
    )
    linked_to: str = spec(
        UNIT_OF_ACCOUNT,
        doc="what a token redeems for: USD for the stables, one of the scenario's markets "
        "for an lst (wBETH: ETH)",
    )
    conversion_ratio: float | None = spec(
        None,
        ge=1e-3,
        le=1e3,
        doc="lst: units of its market's asset one token redeems for (wBETH: about 1.07 ETH "
        "[E]); required for an lst, none for a stable",
    )
    index_noise_bps: float = spec(
        0.0,
        ge=0.0,
        le=1000.0,
        doc="std of the index's log deviation from redemption x index_depeg, per tick, "
        "independent across ticks (10% at most)",
    )
    book_noise_bps: float = spec(
        0.0,
        ge=0.0,
        le=1000.0,
        doc="std of the venue book's log deviation from index x book_depeg, per tick, "
        "independent across ticks (10% at most)",
    )
    index_depeg: tuple[DepegPointSpec, ...] = spec(
        (),
        doc="the index as a multiple of redemption, by waypoints: log-linear between them, "
        "held before the first and after the last (UST: 0.9857, 0.68, 0.25, 0.037); none: 1",
    )
    book_depeg: tuple[DepegPointSpec, ...] = spec(
        (),
        doc="the venue's own book as a multiple of the index, by waypoints as index_depeg "
        "(Binance's USDe book, 21:36-22:16 UTC on 10 Oct 2025: down to 0.6567); none: 1",
    )

    def __post_init__(self) -> None:
        if not _MARKET_NAME.match(self.name):
            raise FieldError("name", self.name, "1-32 of A-Z a-z 0-9 _ . -, starting with one")
        if self.name == UNIT_OF_ACCOUNT:
            raise FieldError(
                "name", self.name, "not USD: the unit of account is always collateral, at 1"
            )
        if self.kind == "lst":
            if self.linked_to == UNIT_OF_ACCOUNT:
                raise FieldError(
                    "linked_to", self.linked_to, "an lst links to one of the scenario's markets"
                )
            if self.conversion_ratio is None:
                raise FieldError("conversion_ratio", None, "required for an lst")
        else:
            if self.linked_to != UNIT_OF_ACCOUNT:
                raise FieldError(
                    "linked_to",
                    self.linked_to,
                    f"USD: a {self.kind} redeems for dollars (only an lst links to a market)",
                )
            if self.conversion_ratio is not None:
                raise FieldError(
                    "conversion_ratio",
                    self.conversion_ratio,
                    f"leave it out: a {self.kind} redeems for 1 USD",
                )
        _check_waypoints("index_depeg", self.index_depeg)
        _check_waypoints("book_depeg", self.book_depeg)


def parse_start_utc(text: str) -> datetime:
    """An ISO 8601 timestamp in UTC (``2025-10-10T14:00:00Z``) as an aware UTC datetime.

    Raises:
        ValueError: Not ISO 8601, no time zone, or an offset other than UTC; the message says
            which.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp (e.g. 2025-10-10T14:00:00Z)") from None
    if when.tzinfo is None:
        raise ValueError("no time zone: end it with Z (UTC), e.g. 2025-10-10T14:00:00Z")
    if when.utcoffset() != timedelta(0):
        raise ValueError(f"offset {when.utcoffset()} is not UTC: give the UTC time, ending in Z")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class BaseProcessBound:
    """Worst-case size of the base process (GARCH or GBM plus jumps) over one episode.

    Upper bounds, from the parameters alone: every tick counted at the largest regime
    multiplier, crash and precursor ticks rounded up.

    Attributes:
        max_vol_multiplier: Largest volatility multiplier of any tick (regimes x crash or
            precursors).
        tick_sigma: Std of one tick's log return at that multiplier.
        variance: Integrated variance of the diffusive log move over the episode.
        jumps: Expected number of jumps in the episode.
        log_move: Drift plus :data:`TAIL_SIGMAS` standard deviations of the log move.
    """

    max_vol_multiplier: float
    tick_sigma: float
    variance: float
    jumps: float
    log_move: float


@dataclass(frozen=True)
class Scenario:
    """A market scenario: everything exogenous about an episode."""

    name: str
    description: str
    price: PriceSpec
    depth: DepthSpec
    seed: int = spec(0, ge=0, le=2**63 - 1, doc="default seed")
    tick_minutes: float = spec(
        1.0, gt=0.0, le=1440.0, doc="simulation clock; horizon / tick <= 2**20 ticks"
    )
    horizon_minutes: float = spec(
        1440.0,
        gt=0.0,
        le=MAX_HORIZON_MINUTES,
        doc="episode length (a year at most: the path is held in memory, and over a year the "
        "base-process budget already caps volatility at ~200%)",
    )
    start_utc: str | None = spec(
        None,
        doc="UTC time of minute 0, ISO 8601 ending in Z or +00:00 (2025-10-10T14:00:00Z): dates "
        "the path of a historical event; none for a synthetic one",
    )
    crash: CrashSpec | None = None
    venue: VenueSpec = dataclasses.field(default_factory=VenueSpec)
    oracle: OracleSpec = dataclasses.field(default_factory=OracleSpec)
    funding: FundingSpec = dataclasses.field(default_factory=FundingSpec)
    precursors: PrecursorSpec = dataclasses.field(default_factory=PrecursorSpec)
    targets: TargetSpec = dataclasses.field(default_factory=TargetSpec)
    training: bool = spec(False, doc="part of the training distribution (named crashes: false)")
    events: tuple[EventSpec, ...] = spec(
        (), doc="venue events: outages, halts, settlement, leverage caps, reduce-only"
    )
    attacker: AttackerSpec | None = None
    markets: tuple[MarketSpec, ...] = spec(
        (),
        doc="the exchange's markets, moving together through a factor model (docs/markets.md); "
        "markets[0] is the factor market, priced by the sections above; none: one market",
    )
    collateral: tuple[CollateralSpec, ...] = spec(
        (),
        doc="collateral assets besides USD, with their scripted depegs (docs/markets.md); "
        "none: USD only",
    )

    @property
    def n_ticks(self) -> int:
        """Ticks in one episode."""
        return max(1, round(self.horizon_minutes / self.tick_minutes))

    @property
    def n_markets(self) -> int:
        """Markets the exchange lists: 1 without a ``markets`` section."""
        return max(1, len(self.markets))

    @property
    def market_names(self) -> tuple[str, ...]:
        """The markets' names, in order (:data:`SINGLE_MARKET_NAME` without a section)."""
        return tuple(m.name for m in self.markets) or (SINGLE_MARKET_NAME,)

    @property
    def collateral_names(self) -> tuple[str, ...]:
        """The collateral assets' names besides USD, in order (empty without a section)."""
        return tuple(c.name for c in self.collateral)

    @property
    def start_datetime(self) -> datetime | None:
        """Minute 0 of the path as an aware UTC datetime (``None``: a synthetic scenario)."""
        return None if self.start_utc is None else parse_start_utc(self.start_utc)

    def base_process_bound(self) -> BaseProcessBound:
        """How far the base process can move the log price (see :class:`BaseProcessBound`)."""
        return self.process_bound(self.price.vol_annual, self.price.jumps)

    def process_bound(self, vol_annual: float, jumps: JumpSpec | None) -> BaseProcessBound:
        """:class:`BaseProcessBound` of a process with this volatility and these jumps.

        Under this scenario's multipliers (regimes, crash, precursors): the base process, or a
        market's own noise and jumps (:class:`MarketSpec`), which the same multipliers scale.
        """
        dt = self.tick_minutes
        n = self.n_ticks
        regime_max = max(self.price.regimes.vol_multipliers) if self.price.regimes else 1.0
        crash_mult = precursor_mult = 1.0
        crash_ticks = precursor_ticks = 0.0
        if self.crash is not None:
            crash_mult = self.crash.vol_multiplier
            crash_ticks = min(n, sum(leg.minutes / dt + 2.0 for leg in self.crash.legs))
            precursor_mult = 1.0 + self.precursors.vol_cluster * self.precursors.strength
            lead = min(self.precursors.lead_minutes, self.crash.start_minute)
            precursor_ticks = min(n, lead / dt + 1.0)
        max_mult = regime_max * max(1.0, crash_mult, precursor_mult)
        sigma2_tick = vol_annual**2 * dt / MINUTES_PER_YEAR
        sum_mult2 = regime_max**2 * (
            n
            + crash_ticks * max(crash_mult**2 - 1.0, 0.0)
            + precursor_ticks * (precursor_mult**2 - 1.0)
        )
        variance = sigma2_tick * sum_mult2
        j = JumpSpec(rate_per_day=0.0) if jumps is None else jumps
        n_jumps = j.rate_per_day * dt / MINUTES_PER_DAY * regime_max * n
        drift = 0.5 * variance + n_jumps * abs(j.mean_log)
        spread = math.sqrt(variance + n_jumps * (j.mean_log**2 + j.std_log**2))
        return BaseProcessBound(
            max_vol_multiplier=max_mult,
            tick_sigma=math.sqrt(sigma2_tick) * max_mult,
            variance=variance,
            jumps=n_jumps,
            log_move=drift + TAIL_SIGMAS * spread,
        )

    def __post_init__(self) -> None:
        if self.start_utc is not None:
            try:
                parse_start_utc(self.start_utc)
            except (ValueError, TypeError) as exc:
                raise FieldError("start_utc", self.start_utc, str(exc)) from None
        if self.horizon_minutes / self.tick_minutes > MAX_TICKS:
            raise FieldError(
                "tick_minutes",
                self.tick_minutes,
                f"horizon_minutes / tick_minutes = {self.horizon_minutes / self.tick_minutes:.3g}"
                f" ticks; at most 2**20 = {MAX_TICKS} (the path is held in memory)",
            )
        if self.oracle.delay_minutes / self.tick_minutes > MAX_TICKS:
            raise FieldError(
                "oracle.delay_minutes",
                self.oracle.delay_minutes,
                f"at most 2**20 = {MAX_TICKS} ticks of {self.tick_minutes:g} minutes",
            )
        if self.crash is not None:
            end = self.crash.start_minute + sum(leg.minutes for leg in self.crash.legs)
            if end > self.horizon_minutes:
                raise ValueError(
                    f"crash ends at minute {end:g}, after horizon_minutes={self.horizon_minutes:g}"
                )
        for i, event in enumerate(self.events):
            if event.start_minute >= self.horizon_minutes:
                raise FieldError(
                    f"events[{i}].start_minute",
                    event.start_minute,
                    f"before horizon_minutes = {self.horizon_minutes:g}",
                )
            self._check_market_name(f"events[{i}].market", event.market)
        if self.attacker is not None:
            self._check_market_name("attacker.market", self.attacker.market)
        if sum(e.kind == "settlement" for e in self.events) > 1:
            raise FieldError(
                "events",
                [e.kind for e in self.events],
                "at most one settlement (the market is closed after it)",
            )
        bound = self.base_process_bound()
        if bound.tick_sigma > MAX_TICK_SIGMA:
            raise FieldError(
                "price.vol_annual",
                self.price.vol_annual,
                f"at the largest volatility multiplier (x{bound.max_vol_multiplier:g}: regimes "
                f"x crash.vol_multiplier or 1 + precursors.vol_cluster x strength) and "
                f"tick_minutes={self.tick_minutes:g}, one tick's log-return std is "
                f"{bound.tick_sigma:.3g}; at most {MAX_TICK_SIGMA:g} (lower the volatility, "
                "the multipliers or tick_minutes)",
            )
        if bound.log_move > MAX_RANDOM_LOG_MOVE:
            raise FieldError(
                "price.vol_annual",
                self.price.vol_annual,
                f"over horizon_minutes={self.horizon_minutes:g} the base process (variance "
                f"{bound.variance:.3g}, {bound.jumps:.3g} jumps of mean "
                f"{self.price.jumps.mean_log:g}) can move the log price by drift + "
                f"{TAIL_SIGMAS:g} sd = "
                + _log_moves_text(bound.log_move, MAX_RANDOM_LOG_MOVE)
                + " (lower the volatility, the multipliers, price.jumps or horizon_minutes)",
            )
        if self.markets:
            self._check_markets(bound)
        if self.collateral:
            self._check_collateral()

    def _check_market_name(self, field_name: str, name: str | None) -> None:
        """Refuse a ``market`` that names none of the scenario's markets (``None``: all/first)."""
        if name is not None and name not in self.market_names:
            raise FieldError(
                field_name, name, f"one of the scenario's markets: {', '.join(self.market_names)}"
            )

    def _check_collateral(self) -> None:
        """The ``collateral`` section's rules that need the rest of the scenario.

        Names are unique across markets and collateral, an lst links to a listed market, and
        every depeg waypoint lies within the episode.
        """
        seen = {m.name for m in self.markets}
        for i, c in enumerate(self.collateral):
            where = f"collateral[{i}]"
            if c.name in seen:
                raise FieldError(
                    f"{where}.name", c.name, "a name no market or other collateral asset has"
                )
            seen.add(c.name)
            if c.kind == "lst" and c.linked_to not in self.market_names:
                raise FieldError(
                    f"{where}.linked_to",
                    c.linked_to,
                    f"one of the scenario's markets {list(self.market_names)}",
                )
            for field in ("index_depeg", "book_depeg"):
                points: tuple[DepegPointSpec, ...] = getattr(c, field)
                if points and points[-1].minute > self.horizon_minutes:
                    k = len(points) - 1
                    raise FieldError(
                        f"{where}.{field}[{k}].minute",
                        points[-1].minute,
                        f"within horizon_minutes = {self.horizon_minutes:g}",
                    )

    def _check_markets(self, factor: BaseProcessBound) -> None:
        """The ``markets`` section's cross-field rules, naming the field to change.

        Each market keeps the single market's budgets (module comment above
        :data:`MAX_HORIZON_MINUTES`): one tick's std at most :data:`MAX_TICK_SIGMA`, its random
        log move (``beta x`` the factor's plus its own noise and jumps) at most
        :data:`MAX_RANDOM_LOG_MOVE`, and its scripted log move (its legs of the crash plus its
        own crash, taken as if their extremes coincided) at most :data:`MAX_CRASH_LOG_MOVE`.
        """
        first = self.markets[0]
        for f in dataclasses.fields(MarketSpec):
            if f.name != "name" and getattr(first, f.name) != f.default:
                raise FieldError(
                    f"markets[0].{f.name}",
                    getattr(first, f.name),
                    "leave it out: markets[0] is the factor market (beta 1), priced by the "
                    "scenario's own price, crash, depth, venue, oracle, funding and targets",
                )
        seen: set[str] = set()
        for i, m in enumerate(self.markets):
            where = f"markets[{i}]"
            if m.name in seen:
                raise FieldError(f"{where}.name", m.name, "a name no other market has")
            seen.add(m.name)
            if i == 0:
                continue
            if m.initial is None:
                raise FieldError(f"{where}.initial", None, "required from markets[1] on")
            if (m.crash_beta is not None or m.crash_returns is not None) and self.crash is None:
                field = "crash_beta" if m.crash_beta is not None else "crash_returns"
                raise FieldError(
                    f"{where}.{field}", getattr(m, field), "needs the scenario's crash section"
                )
            if m.crash_returns is not None and self.crash is not None:
                self._check_crash_returns(where, m.crash_returns, self.crash)
            if m.idio_crash is not None:
                end = m.idio_crash.start_minute + sum(leg.minutes for leg in m.idio_crash.legs)
                if end > self.horizon_minutes:
                    raise FieldError(
                        f"{where}.idio_crash.start_minute",
                        m.idio_crash.start_minute,
                        f"its legs end at minute {end:g}, after horizon_minutes = "
                        f"{self.horizon_minutes:g}",
                    )
            self._check_market_budgets(where, m, factor)
        self._check_oi_shares()

    def _check_oi_shares(self) -> None:
        """Every market from markets[1] on gives ``oi_share``, or none does; they sum below 1."""
        given = [m.oi_share is not None for m in self.markets[1:]]
        if any(given) and not all(given):
            i = 1 + given.index(False)
            raise FieldError(
                f"markets[{i}].oi_share",
                None,
                "a share in (0, 1): give oi_share on every market from markets[1] on, or on none",
            )
        total = sum(m.oi_share or 0.0 for m in self.markets[1:])
        if total >= 1.0:
            raise FieldError(
                f"markets[{len(self.markets) - 1}].oi_share",
                self.markets[-1].oi_share,
                f"shares of markets[1:] summing below 1 (markets[0] holds the rest); they sum "
                f"to {total:g}",
            )

    @property
    def market_oi_shares(self) -> tuple[float, ...]:
        """Each market's share of the starting open interest, in market order, summing to 1.

        The markets' ``oi_share`` with markets[0] holding the rest; without them, shares in
        proportion to ``depth_scale`` (markets[0]: 1), open interest following book depth [E].
        """
        if len(self.markets) <= 1:
            return (1.0,)
        rest = [m.oi_share for m in self.markets[1:]]
        if all(r is not None for r in rest):
            shares = [1.0 - sum(r for r in rest if r is not None), *(r or 0.0 for r in rest)]
        else:
            scales = [1.0, *(m.depth_scale for m in self.markets[1:])]
            shares = [x / sum(scales) for x in scales]
        return tuple(shares)

    @staticmethod
    def _check_crash_returns(where: str, returns: tuple[float, ...], crash: CrashSpec) -> None:
        """One return per crash leg, 0 for a pause (a pause does not move)."""
        if len(returns) != len(crash.legs):
            raise FieldError(
                f"{where}.crash_returns",
                list(returns),
                f"one return per leg of crash.legs ({len(crash.legs)})",
            )
        for k, (leg, r) in enumerate(zip(crash.legs, returns, strict=True)):
            if leg.kind == "pause" and r != 0.0:
                raise FieldError(f"{where}.crash_returns[{k}]", r, f"0: crash.legs[{k}] is a pause")

    def _check_market_budgets(self, where: str, m: MarketSpec, factor: BaseProcessBound) -> None:
        """Market ``m``'s tick std, random log move and scripted log move within budget."""
        own = self.process_bound(m.idio_vol_annual, m.jumps)
        tick_sigma = math.hypot(m.beta * factor.tick_sigma, own.tick_sigma)
        if tick_sigma > MAX_TICK_SIGMA:
            raise FieldError(
                f"{where}.idio_vol_annual" if m.idio_vol_annual > 0.0 else f"{where}.beta",
                m.idio_vol_annual if m.idio_vol_annual > 0.0 else m.beta,
                f"one tick's log-return std, sqrt((beta x {factor.tick_sigma:.3g})^2 + "
                f"{own.tick_sigma:.3g}^2) = {tick_sigma:.3g} at the largest volatility "
                f"multiplier (x{factor.max_vol_multiplier:g}); at most {MAX_TICK_SIGMA:g}",
            )
        log_move = m.beta * factor.log_move + own.log_move
        if log_move > MAX_RANDOM_LOG_MOVE:
            field = "beta" if m.beta * factor.log_move >= own.log_move else "idio_vol_annual"
            raise FieldError(
                f"{where}.{field}",
                getattr(m, field),
                f"beta x the factor's log-move bound ({factor.log_move:.3g}) + the market's "
                f"own ({own.log_move:.3g}) = "
                + _log_moves_text(log_move, MAX_RANDOM_LOG_MOVE)
                + " (lower beta, idio_vol_annual or jumps)",
            )
        common = 0.0
        if self.crash is not None:
            low, high = m.crash_log_range(self.crash)
            common = max(-low, high)
        alone = 0.0
        if m.idio_crash is not None:
            low, high = crash_log_range(m.idio_crash.legs)
            alone = max(-low, high)
        if common + alone > MAX_CRASH_LOG_MOVE:
            if m.idio_crash is not None and common <= MAX_CRASH_LOG_MOVE:
                field, value = "idio_crash.legs", [leg.return_frac for leg in m.idio_crash.legs]
            elif m.crash_returns is not None:
                field, value = "crash_returns", list(m.crash_returns)
            else:
                field = "beta" if m.crash_beta is None else "crash_beta"
                value = getattr(m, field)
            raise FieldError(
                f"{where}.{field}",
                value,
                "the market's scripted log move (its legs of crash, then idio_crash, as if "
                "their extremes coincided) reaches "
                + _log_moves_text(common + alone, MAX_CRASH_LOG_MOVE)
                + " (a factor 1e10)",
            )


# ---------------------------------------------------------------- loading ----


def library() -> dict[str, Path]:
    """Scenario name -> file, for every YAML file in ``configs/scenarios/``."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def scenario_names() -> list[str]:
    """The names of the packaged scenario library, sorted."""
    return sorted(library())


def single_market_names() -> list[str]:
    """The library scenarios the simulator runs today, sorted (:func:`simulated_today`).

    Every library file is loaded to read its ``markets`` and ``collateral`` sections. What
    simulates every library scenario (benchmarks, calibration sweeps) iterates these; listing
    and loading use :func:`scenario_names`, which includes multi-market scenarios.
    """
    return [name for name, path in library().items() if simulated_today(load_scenario(path))]


def simulated_today(scenario: Scenario) -> bool:
    """Whether the one-market simulator runs ``scenario``: one market, USD collateral only.

    The others run in :class:`~fundgym.envs.markets_simulator.MarketsSimulator`.
    """
    return scenario.n_markets == 1 and not scenario.collateral


class MultiMarketError(SchemaError):
    """A scenario with several markets or collateral assets was given to the simulator.

    A :class:`~fundgym.envs.schema.SchemaError`, so every command reports it as a bad scenario
    (exit 2) rather than a crash.
    """


def require_single_market(scenario: Scenario) -> None:
    """Refuse what the one-market simulator cannot run: several markets, or collateral assets.

    :class:`~fundgym.envs.simulator.ExchangeSimulator` and the environment run one market with
    USD collateral; :class:`~fundgym.envs.markets_simulator.MarketsSimulator` runs the rest. A
    scenario with several markets must not silently run its first market alone, nor one with
    collateral assets silently ignore their depegs.

    Raises:
        MultiMarketError: Naming the scenario and its markets, or its collateral.
    """
    if scenario.n_markets == 1 and scenario.collateral:
        raise MultiMarketError(
            f"scenario {scenario.name!r}",
            "collateral",
            list(scenario.collateral_names),
            "collateral assets besides USD are not simulated by this simulator, which takes "
            "USD collateral only: run the scenario with `fundgym markets` "
            "(fundgym.envs.markets_simulator.MarketsSimulator), or leave the collateral "
            "section out",
        )
    if scenario.n_markets > 1:
        raise MultiMarketError(
            f"scenario {scenario.name!r}",
            "markets",
            list(scenario.market_names),
            f"{scenario.n_markets} markets: this simulator and the environment run one "
            "market. Run it with `fundgym markets` "
            "(fundgym.envs.markets_simulator.MarketsSimulator), or use a one-market scenario",
        )


def scenario_from_dict(data: Any, source: str = "<dict>") -> Scenario:
    """Validate a parsed mapping into a :class:`Scenario`."""
    return build(Scenario, data, source)


def scenario_from_draw(data: dict[str, Any], source: str) -> Scenario:
    """A :class:`Scenario` from a mapping a program drew inside every field's range.

    The training sampler draws each value inside its field's range (tests/envs/
    test_fast_paths.py checks the result equals :func:`scenario_from_dict`'s over many
    draws), so only the cross-field rules run (:func:`~fundgym.envs.schema.build_trusted`).
    Should one of them fail, the mapping is validated in full, for the message that names
    the field.

    Raises:
        SchemaError: The mapping breaks a rule (from :func:`scenario_from_dict`).
    """
    try:
        return build_trusted(Scenario, data)
    except (KeyError, ValueError, TypeError):
        return scenario_from_dict(data, source)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by library name or by path.

    Raises:
        SchemaError: The file is not valid; the message names the file, field, value and rule.
        FileNotFoundError: Neither a library name nor an existing file.
    """
    candidate = Path(name_or_path)
    lib = library()
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    elif str(name_or_path) in lib:
        path = lib[str(name_or_path)]
    else:
        raise FileNotFoundError(
            f"unknown scenario {str(name_or_path)!r}: not a file, and not one of {sorted(lib)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"scenario file {path} does not exist")
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a base dependency
        raise ImportError("reading scenario files needs PyYAML: pip install pyyaml") from exc
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(
            str(path), "<file>", "", f"not UTF-8 text (byte {exc.start}): a YAML scenario file"
        ) from exc
    except OSError as exc:  # unreadable: permissions, a directory, an I/O error
        raise SchemaError(str(path), "<file>", "", f"cannot be read: {exc.strerror}") from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SchemaError(str(path), "<file>", "", f"not valid YAML: {exc}") from exc
    return scenario_from_dict(data, str(path))


# ---------------------------------------------------------------- drawing ----


class NonFinitePathError(SchemaError):
    """A drawn path went non-finite or non-positive; names the scenario, column and tick.

    The schema's bounds make this practically impossible (module comment above
    :data:`MAX_HORIZON_MINUTES`); if fat tails beat them anyway, sampling refuses the path
    rather than hand ``inf`` or ``0`` to the simulator. A :class:`SchemaError`, so every
    command that reports a bad scenario reports this too.
    """


#: The drawn (random) path columns that must be finite and > 0, and finite. The others (wick,
#: manipulation, vol_mult, precursor) are fixed functions of validated parameters whose bounds
#: hold exactly, so checking them would cost time and catch nothing.
_POSITIVE_COLUMNS = ("index", "depth_mult")
_FINITE_COLUMNS = ("basis",)


def check_path(scenario: Scenario, path: MarketPath, market: str | None = None) -> None:
    """Refuse a path with a non-finite or non-positive value, naming where it first appears.

    Two reductions per column, its minimum and maximum (a NaN makes both NaN, which fails
    either comparison); the location is only looked up on failure. ``market`` names the
    market of a multi-market scenario the path belongs to.

    Raises:
        NonFinitePathError: Naming the scenario (and market), the column, the value, the tick
            and minute.
    """
    source = f"scenario {scenario.name!r}" + ("" if market is None else f", market {market!r}")
    for name in _POSITIVE_COLUMNS + _FINITE_COLUMNS:
        values: FloatArray = getattr(path, name)
        positive = name in _POSITIVE_COLUMNS
        if (values.min() > (0.0 if positive else -np.inf)) and values.max() < np.inf:
            continue
        ok = (values > 0.0) & (values < np.inf) if positive else np.isfinite(values)
        rule = "finite and > 0" if positive else "finite"
        tick, env = np.unravel_index(int(np.argmin(ok)), ok.shape)
        where = f" of exchange {env}" if ok.shape[1] > 1 else ""
        raise NonFinitePathError(
            source,
            name,
            float(values[tick, env]),
            f"{rule}; first broken at tick {tick} (minute {tick * scenario.tick_minutes:g})"
            f"{where} of the drawn path, so this draw is refused",
        )


@dataclass
class MarketPath:
    """The exogenous market of one episode, ``(n_ticks, n_envs)`` arrays.

    Attributes:
        index: Other venues' price before this venue's liquidation impact.
        basis: This venue's log basis vs index (noise, crash discount, funding-hot premium).
        wick: Multiplier on this venue's last price only (1 = none).
        depth_mult: Depth multiplier (1 = normal); depth is ``normal x depth_mult``.
        frozen: Oracle frozen at its last value.
        manipulation: Multiplier on the oracle's source price.
        vol_mult: Volatility multiplier used (regimes, crash, precursors): an observable.
        precursor: Precursor intensity in [0, strength], ramping up before the crash.
    """

    index: FloatArray
    basis: FloatArray
    wick: FloatArray
    depth_mult: FloatArray
    frozen: np.ndarray[Any, np.dtype[np.bool_]]
    manipulation: FloatArray
    vol_mult: FloatArray
    precursor: FloatArray


def _window(t: FloatArray, start: float, minutes: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return (t >= start) & (t < start + minutes)


def crash_path(
    start_minute: float, legs: tuple[LegSpec, ...], n_ticks: int, tick_minutes: float
) -> tuple[FloatArray, np.ndarray[Any, np.dtype[np.bool_]]]:
    """Scripted legs as ``(n_ticks,)`` log returns from ``start_minute``, and where they run.

    Legs running past the last tick are cut there.
    """
    crash_ret = np.zeros(n_ticks)
    crash_mask = np.zeros(n_ticks, dtype=bool)
    seg = crash_log_returns(
        [CrashLeg(leg.kind, leg.minutes, leg.return_frac, leg.shape, leg.n_steps) for leg in legs],
        tick_minutes,
    )
    i0 = round(start_minute / tick_minutes)
    seg = seg[: max(0, n_ticks - i0)]
    crash_ret[i0 : i0 + seg.size] = seg
    crash_mask[i0 : i0 + seg.size] = True
    return crash_ret, crash_mask


@dataclass
class FactorDraw:
    """Market 0's path and what the other markets of a factor model share with it.

    Attributes:
        path: Market 0's path: :func:`market_path` of the scenario, to the bit.
        t: ``(n_ticks,)`` minute of each tick.
        base_log_ret: ``(n_ticks, n_envs)`` the base process's log returns (GARCH or GBM plus
            jumps, before the scripted crash): the factor the markets load on.
        jump_mult: The jumps' rate multiplier (the regime's volatility multiplier, or 1),
            broadcastable to ``(n_ticks, n_envs)``.
        crash_ret: ``(n_ticks,)`` the scenario's crash legs as log returns (0 outside them).
        crash_mask: ``(n_ticks,)`` whether the scenario's crash legs run at each tick.
    """

    path: MarketPath
    t: FloatArray
    base_log_ret: FloatArray
    jump_mult: FloatArray
    crash_ret: FloatArray
    crash_mask: np.ndarray[Any, np.dtype[np.bool_]]


def market_path(scenario: Scenario, rng: np.random.Generator, n_envs: int = 1) -> MarketPath:
    """Draw the exogenous market of ``scenario`` for ``n_envs`` exchanges.

    Raises:
        MultiMarketError: The scenario lists several markets (:func:`require_single_market`);
            :func:`fundgym.envs.market.factor.draw_markets` draws them.
        NonFinitePathError: A drawn value is not finite (or a price or multiplier not > 0);
            the message names the scenario, the column and the tick (:func:`check_path`).
    """
    require_single_market(scenario)
    return draw_factor(scenario, rng, n_envs).path


def draw_factor(scenario: Scenario, rng: np.random.Generator, n_envs: int) -> FactorDraw:
    """Draw market 0 (the only market, or the factor market) and keep its parts.

    :func:`market_path` returns its ``path``; the factor model
    (:mod:`fundgym.envs.market.factor`) draws the other markets from the rest.
    """
    sc = scenario
    n = sc.n_ticks
    dt = sc.tick_minutes
    t: FloatArray = np.arange(n, dtype=np.float64) * dt
    shape = (n, n_envs)

    # Precursor intensity: ramps from 0 to ``strength`` over the lead window before the crash.
    precursor = np.zeros(shape)
    crash_ret = np.zeros(n)
    crash_mask = np.zeros(n, dtype=bool)
    if sc.crash is not None:
        crash_ret, crash_mask = crash_path(sc.crash.start_minute, sc.crash.legs, n, dt)
        lead = sc.precursors.lead_minutes
        ramp = np.clip((t - (sc.crash.start_minute - lead)) / lead, 0.0, 1.0)
        ramp[t >= sc.crash.start_minute] = 0.0
        precursor[:] = (sc.precursors.strength * ramp)[:, None]

    vol_mult = 1.0 + sc.precursors.vol_cluster * precursor
    jump_mult = np.ones(shape)
    if sc.price.regimes is not None:
        reg = sc.price.regimes
        states = regime_path(
            rng, n, n_envs, np.array(reg.switch_rate_per_day), dt, initial=reg.initial
        )
        regime_vol = np.asarray(reg.vol_multipliers)[states]
        vol_mult = vol_mult * regime_vol
        jump_mult = regime_vol
    if sc.crash is not None:
        vol_mult = np.where(crash_mask[:, None], vol_mult * sc.crash.vol_multiplier, vol_mult)

    g = sc.price.garch
    # GBM is GARCH with no reaction, no persistence and Gaussian innovations.
    gbm = sc.price.model == "gbm"
    base_log_ret = garch_t_log_returns(
        rng,
        n,
        n_envs,
        sc.price.vol_annual,
        dt,
        alpha=0.0 if gbm else g.alpha,
        beta=0.0 if gbm else g.beta,
        nu=float("inf") if gbm else g.nu,
        vol_multiplier=vol_mult,
    )
    j = sc.price.jumps
    base_log_ret += merton_jump_log_returns(
        rng, n, n_envs, j.rate_per_day, j.mean_log, j.std_log, dt, rate_multiplier=jump_mult
    )
    log_ret = base_log_ret + crash_ret[:, None]
    log_ret[0] = 0.0
    with np.errstate(over="ignore"):  # an overflow is reported by check_path, with its tick
        index = sc.price.initial * np.exp(np.cumsum(log_ret, axis=0))

    path = venue_path(
        sc,
        index,
        np.asarray(vol_mult, dtype=np.float64),
        sc.venue,
        sc.oracle,
        sc.funding,
        sc.depth.collapses,
        rng,
        n_envs,
        t,
        crash_mask,
        precursor,
    )
    check_path(sc, path, None if not sc.markets else sc.markets[0].name)
    return FactorDraw(path, t, base_log_ret, jump_mult, crash_ret, crash_mask)


def venue_path(
    sc: Scenario,
    index: FloatArray,
    vol_mult: FloatArray,
    venue: VenueSpec,
    oracle: OracleSpec,
    funding: FundingSpec,
    collapses: tuple[CollapseSpec, ...],
    rng: np.random.Generator,
    n_envs: int,
    t: FloatArray,
    crash_mask: np.ndarray[Any, np.dtype[np.bool_]],
    precursor: FloatArray,
) -> MarketPath:
    """One market's path: its ``index`` and ``vol_mult``, and the venue's columns drawn here.

    The venue's columns: basis, wick, depth multiplier, oracle freezes and manipulation.

    From its own ``venue``, ``oracle``, ``funding`` and depth ``collapses`` and the scenario's
    crash, depth noise and precursors (one exchange: one crash, one precursor ramp). Draws
    the basis noise, then the depth noise, from ``rng``.
    """
    shape = (t.size, n_envs)
    # Venue basis: noise, a discount growing through the crash legs, a premium when funding is
    # hot (premium ~ funding APR / intervals per year).
    basis = rng.normal(0.0, venue.basis_noise_bps * 1e-4, shape)
    if sc.crash is not None and sc.crash.basis_frac != 0.0:
        progress = np.cumsum(crash_mask) / max(1, crash_mask.sum())
        crash_basis = np.where(crash_mask, np.log1p(sc.crash.basis_frac) * progress, 0.0)
        after = t >= sc.crash.start_minute + sum(leg.minutes for leg in sc.crash.legs)
        crash_basis[after] = 0.0
        basis += crash_basis[:, None]
    # Funding running hot: the premium that makes Binance's formula pay the target rate. The
    # formula pins funding at the interest rate I while |I - P| <= clamp, so a rate F above I
    # needs P = F + clamp.
    intervals_per_year = 365.0 * 24.0 / funding.interval_hours
    f = funding
    hot_rate = sc.precursors.hot_funding_apr / intervals_per_year
    target = f.interest_per_interval + (hot_rate - f.interest_per_interval) * precursor
    premium = np.where(target > f.interest_per_interval, target + f.clamp_per_interval, target)
    basis += np.where(precursor > 0.0, np.log1p(premium), 0.0)

    dt = sc.tick_minutes
    wick = np.ones(shape)
    for w in venue.wicks:
        wick[_window(t, w.minute, w.ticks * dt)] *= 1.0 + w.return_frac

    depth_mult = depth_multiplier_path(
        t.size,
        dt,
        [
            Collapse(
                c.start_minute,
                c.minutes_to_floor,
                c.floor_mult,
                c.hold_minutes,
                c.recovery_half_life_minutes,
            )
            for c in collapses
        ],
    )[:, None] * (1.0 - sc.precursors.depth_thinning * precursor)
    if sc.depth.noise_frac > 0:
        depth_mult = depth_mult * np.exp(
            rng.normal(0.0, sc.depth.noise_frac, shape) - 0.5 * sc.depth.noise_frac**2
        )
    depth_mult = np.minimum(depth_mult, 1.5)

    frozen = np.zeros(shape, dtype=bool)
    for window in oracle.freezes:
        frozen[_window(t, window.start_minute, window.minutes)] = True
    manipulation = np.ones(shape)
    for mspec in oracle.manipulations:
        inside = _window(t, mspec.start_minute, mspec.minutes)
        x = (t[inside] - mspec.start_minute) / mspec.minutes
        bump = np.log1p(mspec.return_frac) * np.sin(np.pi * x)  # up, then released
        manipulation[inside] *= np.exp(bump)[:, None]
    return MarketPath(
        index=index,
        basis=basis,
        wick=wick,
        depth_mult=depth_mult,
        frozen=frozen,
        manipulation=manipulation,
        vol_mult=vol_mult,
        precursor=precursor,
    )
