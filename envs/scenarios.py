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
PyYAML is imported only to read a file, so the simulator itself needs numpy alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fundgym.envs.market.depth import Collapse, depth_multiplier_path
from fundgym.envs.market.price import (
    CrashLeg,
    crash_log_returns,
    garch_t_log_returns,
    merton_jump_log_returns,
    regime_path,
)
from fundgym.envs.resources import SCENARIO_DIR
from fundgym.envs.schema import SchemaError, build, load_yaml, spec

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


# ---------------------------------------------------------------- schema ----


@dataclass(frozen=True)
class GarchSpec:
    """GARCH(1,1) with Student-t innovations."""

    alpha: float = spec(0.06, ge=0.0, lt=1.0, doc="reaction to the last squared return")
    beta: float = spec(0.92, ge=0.0, lt=1.0, doc="variance persistence (alpha + beta < 1)")
    nu: float = spec(4.0, gt=2.0, le=1e6, doc="Student-t degrees of freedom (fat tails)")

    def __post_init__(self) -> None:
        if self.alpha + self.beta >= 1.0:
            raise ValueError(f"garch: alpha + beta must be < 1, got {self.alpha + self.beta}")


@dataclass(frozen=True)
class JumpSpec:
    """Merton jumps."""

    rate_per_day: float = spec(0.5, ge=0.0, le=1e4, doc="expected jumps per day")
    mean_log: float = spec(-0.005, ge=-5.0, le=5.0, doc="mean log jump (negative skew)")
    std_log: float = spec(0.01, ge=0.0, le=5.0, doc="std of log jumps")


@dataclass(frozen=True)
class RegimeSpec:
    """Markov regimes (e.g. calm, volatile, crisis) scaling volatility and jump rate."""

    vol_multipliers: tuple[float, ...] = spec(
        doc="volatility multiplier per regime", gt=0.0, le=100.0
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

    initial: float = spec(ge=1e-9, le=1e12, doc="starting price, USD")
    model: Literal["garch_t", "gbm"] = "garch_t"
    vol_annual: float = spec(0.5, gt=0.0, le=20.0, doc="long-run annualised volatility")
    garch: GarchSpec = dataclasses.field(default_factory=GarchSpec)
    jumps: JumpSpec = dataclasses.field(default_factory=JumpSpec)
    regimes: RegimeSpec | None = None


@dataclass(frozen=True)
class LegSpec:
    """One crash leg (see :class:`fundgym.envs.market.price.CrashLeg`)."""

    kind: Literal["decline", "recovery", "pause", "steps", "wick"]
    minutes: float = spec(gt=0.0, le=1e6, doc="duration")
    return_frac: float = spec(0.0, gt=-1.0, le=1e3, doc="total simple return of the leg")
    shape: Literal["linear", "accelerating", "front_loaded"] = "linear"
    n_steps: int = spec(1, ge=1, le=1000, doc="drops of a stepwise decline")


@dataclass(frozen=True)
class CrashSpec:
    """A scripted crash dropped into the base path."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the first leg starts")
    legs: tuple[LegSpec, ...] = spec(doc="legs in order")
    vol_multiplier: float = spec(2.0, gt=0.0, le=100.0, doc="extra volatility during the legs")
    basis_frac: float = spec(0.0, gt=-1.0, le=1.0, doc="venue discount vs index at the trough")


@dataclass(frozen=True)
class WickSpec:
    """A venue-only print: last price moves, index and a well-built mark do not."""

    minute: float = spec(ge=0.0, le=1e7, doc="tick of the print")
    return_frac: float = spec(gt=-1.0, le=1e3, doc="move of the last price")
    ticks: int = spec(1, ge=1, le=1000, doc="how many ticks it lasts")


@dataclass(frozen=True)
class VenueSpec:
    """This venue's own prints and marking."""

    basis_noise_bps: float = spec(2.0, ge=0.0, le=1e4, doc="std of the last-vs-index basis")
    wicks: tuple[WickSpec, ...] = ()
    mark_method: Literal["median", "last"] = "median"


@dataclass(frozen=True)
class CollapseSpec:
    """A depth collapse (see :class:`fundgym.envs.market.depth.Collapse`)."""

    start_minute: float = spec(ge=0.0, le=1e7, doc="minute the collapse starts")
    minutes_to_floor: float = spec(ge=0.0, le=1e6, doc="ramp length")
    floor_mult: float = spec(gt=0.0, le=1.0, doc="depth at the floor, fraction of normal")
    hold_minutes: float = spec(0.0, ge=0.0, le=1e7, doc="time at the floor")
    recovery_half_life_minutes: float = spec(60.0, gt=0.0, le=1e7, doc="recovery half-life")


@dataclass(frozen=True)
class DepthSpec:
    """Book depth per 1% of price."""

    normal_usd_per_pct: float = spec(gt=0.0, le=1e13, doc="normal depth, USD per 1% move")
    noise_frac: float = spec(0.05, ge=0.0, le=0.9, doc="lognormal noise on the multiplier")
    collapses: tuple[CollapseSpec, ...] = ()
    impact_coef: float = spec(0.5, ge=0.0, le=1.0, doc="permanent share of liquidation impact")
    impact_half_life_minutes: float = spec(
        30.0, gt=0.0, le=1e7, doc="decay of accumulated impact (arbitrage)"
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
    return_frac: float = spec(gt=-1.0, le=1e3, doc="peak move of the oracle")


@dataclass(frozen=True)
class OracleSpec:
    """What the margin engine reads."""

    source: Literal["mark", "index"] = "mark"
    delay_minutes: float = spec(0.0, ge=0.0, le=1e5, doc="staleness of the feed")
    floor_price: float | None = spec(None, gt=0.0, le=1e12, doc="minimum answer of the feed")
    freezes: tuple[WindowSpec, ...] = ()
    manipulations: tuple[ManipulationSpec, ...] = ()


@dataclass(frozen=True)
class FundingSpec:
    """Funding clamp (Binance formula, BitMEX cap)."""

    interval_hours: float = spec(8.0, gt=0.0, le=1e3, doc="funding interval")
    interest_per_interval: float = spec(0.0001, ge=-0.1, le=0.1, doc="interest rate I")
    clamp_per_interval: float = spec(0.0005, ge=0.0, le=0.1, doc="clamp on I - P")
    cap_per_interval: float = spec(0.00375, gt=0.0, le=0.5, doc="cap on the rate")
    premium_ema_minutes: float = spec(60.0, gt=0.0, le=1e5, doc="smoothing of the premium")


@dataclass(frozen=True)
class PrecursorSpec:
    """Build-up before the crash; strength 0 = the crash arrives with no warning."""

    strength: float = spec(0.0, ge=0.0, le=1.0, doc="0 none .. 1 strong")
    lead_minutes: float = spec(720.0, gt=0.0, le=1e6, doc="how long before the crash")
    hot_funding_apr: float = spec(0.40, ge=0.0, le=5.0, doc="funding APR at full strength")
    leverage_build: float = spec(0.5, ge=0.0, le=5.0, doc="extra leverage of new positions")
    oi_build: float = spec(1.0, ge=0.0, le=20.0, doc="extra arrivals of new positions")
    long_skew: float = spec(0.15, ge=0.0, le=0.45, doc="extra long share of new positions")
    depth_thinning: float = spec(0.4, ge=0.0, le=0.95, doc="depth lost at full strength")
    vol_cluster: float = spec(1.0, ge=0.0, le=20.0, doc="extra volatility at full strength")


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


@dataclass(frozen=True)
class Scenario:
    """A market scenario: everything exogenous about an episode."""

    name: str
    description: str
    price: PriceSpec
    depth: DepthSpec
    seed: int = spec(0, ge=0, le=2**63 - 1, doc="default seed")
    tick_minutes: float = spec(1.0, gt=0.0, le=1440.0, doc="simulation clock")
    horizon_minutes: float = spec(1440.0, gt=0.0, le=1e7, doc="episode length")
    crash: CrashSpec | None = None
    venue: VenueSpec = dataclasses.field(default_factory=VenueSpec)
    oracle: OracleSpec = dataclasses.field(default_factory=OracleSpec)
    funding: FundingSpec = dataclasses.field(default_factory=FundingSpec)
    precursors: PrecursorSpec = dataclasses.field(default_factory=PrecursorSpec)
    targets: TargetSpec = dataclasses.field(default_factory=TargetSpec)
    training: bool = spec(False, doc="part of the training distribution (named crashes: false)")

    @property
    def n_ticks(self) -> int:
        """Ticks in one episode."""
        return max(1, round(self.horizon_minutes / self.tick_minutes))

    def __post_init__(self) -> None:
        if self.crash is not None:
            end = self.crash.start_minute + sum(leg.minutes for leg in self.crash.legs)
            if end > self.horizon_minutes:
                raise ValueError(
                    f"crash ends at minute {end:g}, after horizon_minutes={self.horizon_minutes:g}"
                )


# ---------------------------------------------------------------- loading ----


def library() -> dict[str, Path]:
    """Scenario name -> file, for every YAML file in ``configs/scenarios/``."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def scenario_names() -> list[str]:
    """The names of the packaged scenario library, sorted."""
    return sorted(library())


def scenario_from_dict(data: Any, source: str = "<dict>") -> Scenario:
    """Validate a parsed mapping into a :class:`Scenario`."""
    return build(Scenario, data, source)


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
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SchemaError(str(path), "<file>", "", f"not valid YAML: {exc}") from exc
    return scenario_from_dict(data, str(path))


# ---------------------------------------------------------------- drawing ----


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


def market_path(scenario: Scenario, rng: np.random.Generator, n_envs: int = 1) -> MarketPath:
    """Draw the exogenous market of ``scenario`` for ``n_envs`` exchanges."""
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
        legs = [
            CrashLeg(leg.kind, leg.minutes, leg.return_frac, leg.shape, leg.n_steps)
            for leg in sc.crash.legs
        ]
        seg = crash_log_returns(legs, dt)
        i0 = round(sc.crash.start_minute / dt)
        seg = seg[: max(0, n - i0)]
        crash_ret[i0 : i0 + seg.size] = seg
        crash_mask[i0 : i0 + seg.size] = True
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
    log_ret = garch_t_log_returns(
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
    log_ret += merton_jump_log_returns(
        rng, n, n_envs, j.rate_per_day, j.mean_log, j.std_log, dt, rate_multiplier=jump_mult
    )
    log_ret += crash_ret[:, None]
    log_ret[0] = 0.0
    index = sc.price.initial * np.exp(np.cumsum(log_ret, axis=0))

    # Venue basis: noise, a discount growing through the crash legs, a premium when funding is
    # hot (premium ~ funding APR / intervals per year).
    basis = rng.normal(0.0, sc.venue.basis_noise_bps * 1e-4, shape)
    if sc.crash is not None and sc.crash.basis_frac != 0.0:
        progress = np.cumsum(crash_mask) / max(1, crash_mask.sum())
        crash_basis = np.where(crash_mask, np.log1p(sc.crash.basis_frac) * progress, 0.0)
        after = t >= sc.crash.start_minute + sum(leg.minutes for leg in sc.crash.legs)
        crash_basis[after] = 0.0
        basis += crash_basis[:, None]
    # Funding running hot: the premium that makes Binance's formula pay the target rate. The
    # formula pins funding at the interest rate I while |I - P| <= clamp, so a rate F above I
    # needs P = F + clamp.
    intervals_per_year = 365.0 * 24.0 / sc.funding.interval_hours
    f = sc.funding
    hot_rate = sc.precursors.hot_funding_apr / intervals_per_year
    target = f.interest_per_interval + (hot_rate - f.interest_per_interval) * precursor
    premium = np.where(target > f.interest_per_interval, target + f.clamp_per_interval, target)
    basis += np.where(precursor > 0.0, np.log1p(premium), 0.0)

    wick = np.ones(shape)
    for w in sc.venue.wicks:
        wick[_window(t, w.minute, w.ticks * dt)] *= 1.0 + w.return_frac

    depth_mult = depth_multiplier_path(
        n,
        dt,
        [
            Collapse(
                c.start_minute,
                c.minutes_to_floor,
                c.floor_mult,
                c.hold_minutes,
                c.recovery_half_life_minutes,
            )
            for c in sc.depth.collapses
        ],
    )[:, None] * (1.0 - sc.precursors.depth_thinning * precursor)
    if sc.depth.noise_frac > 0:
        depth_mult = depth_mult * np.exp(
            rng.normal(0.0, sc.depth.noise_frac, shape) - 0.5 * sc.depth.noise_frac**2
        )
    depth_mult = np.minimum(depth_mult, 1.5)

    frozen = np.zeros(shape, dtype=bool)
    for window in sc.oracle.freezes:
        frozen[_window(t, window.start_minute, window.minutes)] = True
    manipulation = np.ones(shape)
    for mspec in sc.oracle.manipulations:
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
        vol_mult=np.asarray(vol_mult, dtype=np.float64),
        precursor=precursor,
    )
