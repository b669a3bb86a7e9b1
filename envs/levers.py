"""The one registry of risk levers: name, unit, bounds, action range, default, venue names.

Every risk parameter of the simulated exchange is declared here once, as a :class:`Lever`.
Validation (:class:`fundgym.envs.core.params.RiskParams`,
:class:`fundgym.envs.config.FixedParams`), the action
mapping (:mod:`fundgym.envs.controls`), venue presets, exports and ``--help`` all read this table,
so a
range, a default or a unit lives in exactly one place.

Two ranges, two uses:

* **Hard bounds** (:attr:`Lever.bounds`): what the mechanics accept at all (an MMR of 0 or 1
  makes no sense; a fee of 0 does). :class:`~fundgym.envs.core.params.RiskParams` checks these.
* **Action range** (:attr:`Lever.action`, controllable levers only): the natural-unit interval
  an action coordinate in [-1, 1] maps onto (linear, or logarithmic for rates spanning decades).
  It lies inside the hard bounds. The environment holds every lever it manages, controlled or
  fixed, as a position in [-1, 1], so a configured value outside the action range cannot be
  represented there and is an error (never clipped): :class:`~fundgym.envs.config.FixedParams` and
  :class:`~fundgym.envs.controls.Controls` check these.

Venue names say what a lever is called in a real venue's configuration and how to convert
(``VenueField``): dYdX v4 stores rates in parts per million, Drift margins in 1e-4
(``MARGIN_PRECISION``), Binance and Hyperliquid state leverage (``1 / IMR``). Each field
cites where the name comes from; a field marked ``estimate`` is an approximate correspondence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
FloatOrArray = float | FloatArray
Venue = Literal["dydx", "drift", "binance", "hyperliquid"]

#: Positions this close outside [-1, 1] (in units of the whole range) are float round-off of a
#: value on the range's edge, not a configured value outside it.
ROUND_OFF_FRAC = 1e-9


class LeverError(ValueError):
    """A value outside a lever's range; the message names the lever, the value and the range."""


@dataclass(frozen=True)
class Interval:
    """A real interval with open or closed ends (``low`` may be ``-inf``, ``high`` ``inf``)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: FloatOrArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Elementwise: finite and inside the interval."""
        x = np.asarray(value, dtype=np.float64)
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return np.asarray(np.isfinite(x) & above & below)

    def spec_kwargs(self) -> dict[str, float]:
        """The interval as :func:`~fundgym.envs.schema.spec` keywords (ge, gt, le, lt)."""
        out: dict[str, float] = {}
        if math.isfinite(self.low):
            out["gt" if self.low_open else "ge"] = self.low
        if math.isfinite(self.high):
            out["lt" if self.high_open else "le"] = self.high
        return out

    def __str__(self) -> str:
        left = "(" if self.low_open or math.isinf(self.low) else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        return f"{left}{self.low!r}, {self.high!r}{right}"


@dataclass(frozen=True)
class ActionRange:
    """The natural-unit interval an action coordinate in [-1, 1] maps onto.

    Attributes:
        low: Value at position -1.
        high: Value at position +1.
        log: Logarithmic (geometric) mapping, for rates spanning decades; ``low > 0`` then.
    """

    low: float
    high: float
    log: bool

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"ActionRange needs finite low < high, got {self.low}, {self.high}")
        if self.log and self.low <= 0.0:
            raise ValueError(f"a log ActionRange needs low > 0, got {self.low}")

    def __str__(self) -> str:
        return f"[{self.low!r}, {self.high!r}] ({'log' if self.log else 'linear'})"


@dataclass(frozen=True)
class VenueField:
    """What a lever is called in one venue's configuration, and how its value converts.

    The venue's value is ``scale x value`` (``scale / value`` when ``inverse``), where
    ``value`` is the lever's natural-unit value divided by lever ``per``'s value when ``per``
    is set (dYdX states maintenance margin as a fraction of the initial margin).

    Attributes:
        venue: The venue.
        name: The venue's own field name.
        scale: Multiplier from natural units (1e6 for parts per million).
        source: Where the name comes from.
        per: Another lever this one is divided by first, or ``None``.
        inverse: The venue states the reciprocal (a leverage for a margin ratio).
        integer: The venue stores an integer (rounded to nearest).
        estimate: The correspondence is approximate (see ``source``).
    """

    venue: Venue
    name: str
    scale: float
    source: str
    per: str | None = None
    inverse: bool = False
    integer: bool = False
    estimate: bool = False

    def convert(self, value: float, per_value: float | None = None) -> float:
        """The venue's number for natural-unit ``value`` (``per_value``: lever ``per``'s)."""
        x = value
        if self.per is not None:
            if per_value is None:
                raise ValueError(f"{self.venue} {self.name} needs the value of {self.per}")
            x = x / per_value
        x = self.scale / x if self.inverse else self.scale * x
        return float(round(x)) if self.integer else x


def positions_to_values(
    position: FloatOrArray,
    low: FloatOrArray,
    high: FloatOrArray,
    log: bool | np.ndarray[Any, np.dtype[np.bool_]],
) -> FloatArray:
    """Natural-unit values of action positions, one lever or many at once.

    The one home of the action mapping: :meth:`Lever.to_value` maps one lever with it, and
    :meth:`fundgym.envs.controls.Controls.values` maps every lever of a batch in one call (a
    decision would otherwise pay numpy's dispatch once per lever). Positions are clipped to
    [-1, 1], as Box actions are; a NaN position gives a NaN value.

    Every element goes through the same operations in the same order whatever the batch: a
    linear lever's value is ``low + u x (high - low)``, a logarithmic one's
    ``low x (high / low) ** u``, with ``u = (clip(position) + 1) / 2``. One lever given as
    floats with a scalar position stays on numpy's scalar arithmetic, as it always has (its
    ``**`` is the C library's ``pow``, while the array loop may be a vectorised one that can
    differ in the last bit), so scalar and array callers keep their results.

    Args:
        position: Positions; with arrays of levers, lever ``i``'s along the first axis.
        low: Value at position -1: a float, or a ``(n_levers, 1, ...)`` array broadcasting
            against ``position``.
        high: Value at position +1, shaped as ``low``.
        log: Whether each lever maps logarithmically, shaped as ``low`` (a log lever's
            ``low`` is > 0).
    """
    # minimum(maximum()) is np.clip's result (the bounds are not zero, so no signed-zero
    # tie) without its Python-level dispatch.
    p = np.asarray(position, dtype=np.float64)
    u = (np.minimum(np.maximum(p, -1.0), 1.0) + 1.0) / 2.0
    if not isinstance(log, np.ndarray):  # one lever: only its own formula
        if log:
            return np.asarray(low * (high / low) ** u, dtype=np.float64)
        return np.asarray(low + u * (high - low), dtype=np.float64)
    # Both formulas for every lever, each keeping its own; a linear lever's low may be 0 or
    # negative, so its ratio is taken as 1 (its logarithmic value is never used).
    ratio = np.where(log, high, 1.0) / np.where(log, low, 1.0)
    return np.asarray(np.where(log, low * ratio**u, low + u * (high - low)), dtype=np.float64)


def action_columns(
    levers: tuple[Lever, ...],
) -> tuple[FloatArray, FloatArray, np.ndarray[Any, np.dtype[np.bool_]]]:
    """``(low, high, log)`` of controllable ``levers`` as ``(n_levers, 1)`` columns.

    What :func:`positions_to_values` reads to map ``(n_levers, n)`` positions in one call;
    built once by a caller that maps the same levers every decision.
    """
    low = np.array([[lever.low] for lever in levers], dtype=np.float64)
    high = np.array([[lever.high] for lever in levers], dtype=np.float64)
    log = np.array([[lever.log] for lever in levers], dtype=bool)
    return low, high, log


@dataclass(frozen=True)
class Lever:
    """One risk parameter: everything any part of fundgym needs to know about it.

    Attributes:
        name: The parameter's name everywhere in fundgym.
        unit: What one unit of its natural value is.
        bounds: Hard bounds: what the mechanics accept.
        default: Value used when nothing sets it (dYdX-like large cap unless noted).
        doc: One line for ``--help`` and the docs.
        action: Range an action in [-1, 1] maps onto; ``None``: not an action lever.
        venues: Names of this parameter in real venues' configurations.
    """

    name: str
    unit: str
    bounds: Interval
    default: float
    doc: str
    action: ActionRange | None = None
    venues: tuple[VenueField, ...] = ()

    def __post_init__(self) -> None:
        if not self.bounds.contains(self.default):
            raise ValueError(f"lever {self.name}: default {self.default} outside {self.bounds}")
        a = self.action
        if a is not None:
            if not (self.bounds.contains(a.low) and self.bounds.contains(a.high)):
                raise ValueError(f"lever {self.name}: action range {a} outside {self.bounds}")
            if not a.low <= self.default <= a.high:
                raise ValueError(f"lever {self.name}: default {self.default} outside {a}")

    # ---- the action range, as :data:`fundgym.envs.controls.PARAMS` users read it ----

    @property
    def controllable(self) -> bool:
        """Whether an action can set this lever."""
        return self.action is not None

    @property
    def low(self) -> float:
        """Value at action position -1 (the action range's low end)."""
        return self._action().low

    @property
    def high(self) -> float:
        """Value at action position +1 (the action range's high end)."""
        return self._action().high

    @property
    def log(self) -> bool:
        """Whether the action maps logarithmically."""
        return self._action().log

    def _action(self) -> ActionRange:
        if self.action is None:
            raise ValueError(f"lever {self.name} has no action range (it is not controllable)")
        return self.action

    # ---- mapping ----

    def to_value(self, position: FloatOrArray) -> FloatArray:
        """Natural-unit values of action positions (clipped to [-1, 1], as Box actions are)."""
        a = self._action()
        return positions_to_values(position, a.low, a.high, a.log)

    def to_position(self, value: FloatOrArray) -> FloatArray:
        """Action positions of natural-unit values (inverse of :meth:`to_value`).

        Raises:
            LeverError: A value lies outside the action range (beyond float round-off): it
                has no position, and silently moving it to the edge would change it.
        """
        a = self._action()
        v = np.asarray(value, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if a.log:
                u = np.log(v / a.low) / np.log(a.high / a.low)
            else:
                u = (v - a.low) / (a.high - a.low)
        bad = ~(np.isfinite(u) & (u >= -ROUND_OFF_FRAC) & (u <= 1.0 + ROUND_OFF_FRAC))
        if bad.any():
            raise LeverError(self.action_range_message(v[bad].flat[0] if v.ndim else v.item()))
        return np.asarray(2.0 * np.clip(u, 0.0, 1.0) - 1.0, dtype=np.float64)

    def clip(self, value: FloatOrArray) -> FloatArray:
        """``value`` saturated into the action range: for rules that compute targets freely."""
        a = self._action()
        return np.asarray(np.clip(np.asarray(value, dtype=np.float64), a.low, a.high))

    # ---- validation ----

    def check(self, value: Any, owner: str = "") -> FloatOrArray:
        """``value`` as a float or ``(n,)`` array if inside the hard bounds.

        Args:
            value: A number or a 1-D array of numbers (one per exchange).
            owner: Prefix of the name in the message (``"RiskParams."``).

        Raises:
            LeverError: Not finite, outside the hard bounds, or more than one dimension.
        """
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim > 1:
            raise LeverError(
                f"{owner}{self.name} must be a float or a (n_envs,) array, got shape {arr.shape}"
            )
        bad = ~self.bounds.contains(arr)
        if bad.any():
            got = float(arr[bad].flat[0]) if arr.ndim else arr.item()
            raise LeverError(
                f"{owner}{self.name} must lie in {self.bounds} ({self.unit}), got {got!r}"
            )
        return float(arr) if arr.ndim == 0 else arr

    def action_range_message(self, value: float) -> str:
        """Why ``value`` cannot be held as a position of this lever."""
        return (
            f"{self.name} = {float(value)!r} is outside its action range {self._action()} "
            f"({self.unit}); the environment holds every lever as a position in that range, "
            f"so this value cannot be represented (hard bounds {self.bounds})"
        )

    def venue(self, venue: Venue) -> VenueField | None:
        """This lever's field in ``venue``'s configuration, if it has one."""
        return next((f for f in self.venues if f.venue == venue), None)


_DYDX_CLOB = "dYdX v4 x/clob LiquidationsConfig (proto/dydxprotocol/clob/liquidations_config.proto)"
_DYDX_TIER = "dYdX v4 x/perpetuals LiquidityTier (proto/dydxprotocol/perpetuals/perpetual.proto)"
_DRIFT_PERP = "Drift protocol-v2 state/perp_market.rs PerpMarket"
_BINANCE_BRACKET = "Binance USD-M futures GET /fapi/v1/leverageBracket"


def _alloc(bucket: str, default: float, what: str) -> Lever:
    return Lever(
        name=f"alloc_{bucket}",
        unit="logit (weights = softmax(3 x logits))",
        bounds=Interval(-1.0, 1.0),
        default=default,
        doc=f"fund allocation logit: {bucket} ({what})",
        action=ActionRange(-1.0, 1.0, False),
    )


def _registry(*levers: Lever) -> dict[str, Lever]:
    """Levers by name, in declaration order (a registry's action order).

    Raises:
        ValueError: A name declared twice: each lever has one declaration.
    """
    out: dict[str, Lever] = {}
    for lever in levers:
        if lever.name in out:
            raise ValueError(f"lever {lever.name!r} is declared twice")
        out[lever.name] = lever
    return out


#: Every risk parameter, declared once. Controllable levers come first, in action order.
LEVERS: dict[str, Lever] = _registry(
    Lever(
        name="liquidation_fee_rate",
        unit="fraction of liquidated notional",
        bounds=Interval(0.0, 1.0, high_open=True),
        default=0.015,
        doc="max liquidation fee, of fill notional (dYdX 1.5%)",
        action=ActionRange(0.001, 0.03, True),
        # Drift splits its fee in two: liquidator_fee + if_liquidation_fee (both 1e-6,
        # LIQUIDATION_FEE_PRECISION): the sum is this lever, the IF part x fund share.
        venues=(
            VenueField("dydx", "max_liquidation_fee_ppm", 1e6, _DYDX_CLOB, integer=True),
            VenueField(
                "binance",
                "liquidationFee",
                1.0,
                "Binance USD-M futures GET /fapi/v1/exchangeInfo symbols[].liquidationFee",
            ),
        ),
    ),
    Lever(
        name="liquidation_fee_fund_share",
        unit="fraction of the liquidation fee",
        bounds=Interval(0.0, 1.0),
        default=1.0,
        doc="share of the liquidation fee paid to the insurance fund (dYdX: all of it)",
        action=ActionRange(0.0, 1.0, False),
    ),
    Lever(
        name="mmr",
        unit="fraction of notional",
        bounds=Interval(0.0, 1.0, low_open=True, high_open=True),
        default=0.03,
        doc="maintenance margin ratio (dYdX large cap 3%); scales a tier table when set",
        action=ActionRange(0.003, 0.10, True),
        venues=(
            VenueField(
                "dydx",
                "maintenance_fraction_ppm",
                1e6,
                _DYDX_TIER + ": maintenance margin as a fraction of the initial margin",
                per="imr",
                integer=True,
            ),
            VenueField(
                "drift", "margin_ratio_maintenance", 1e4, _DRIFT_PERP + " (MARGIN_PRECISION)"
            ),
            VenueField("binance", "maintMarginRatio", 1.0, _BINANCE_BRACKET + " (first bracket)"),
        ),
    ),
    Lever(
        name="imr_multiple",
        unit="multiple of mmr",
        bounds=Interval(1.0, 100.0),
        default=5.0 / 3.0,
        doc="initial margin as a multiple of MMR (IMR = mmr x this, capped at 1)",
        action=ActionRange(1.2, 3.0, False),
    ),
    Lever(
        name="trading_fee_fund_share",
        unit="fraction of taker fees",
        bounds=Interval(0.0, 1.0),
        default=0.1,
        doc="share of taker fees routed to the insurance fund",
        action=ActionRange(0.0, 1.0, False),
    ),
    _alloc("stable", 1.0, "stablecoin cash, pays shortfalls first"),
    _alloc("yield", -1.0, "lent out; withdrawals limited under stress"),
    _alloc("volatile", -1.0, "units of the underlying: wrong-way risk"),
    _alloc("hedge", -1.0, "out-of-the-money puts on the underlying"),
    Lever(
        name="imr",
        unit="fraction of notional",
        bounds=Interval(0.0, 1.0, low_open=True),
        default=0.05,
        doc="initial margin ratio, >= mmr: max leverage on opening is 1 / imr (dYdX 5%)",
        venues=(
            VenueField("dydx", "initial_margin_ppm", 1e6, _DYDX_TIER, integer=True),
            VenueField("drift", "margin_ratio_initial", 1e4, _DRIFT_PERP + " (MARGIN_PRECISION)"),
            VenueField(
                "binance",
                "initialLeverage",
                1.0,
                _BINANCE_BRACKET + " (first bracket; a leverage: 1 / imr)",
                inverse=True,
            ),
            VenueField(
                "hyperliquid",
                "maxLeverage",
                1.0,
                "Hyperliquid info API meta universe[].maxLeverage (a leverage: 1 / imr)",
                inverse=True,
            ),
        ),
    ),
    Lever(
        name="taker_fee_rate",
        unit="fraction of traded notional",
        bounds=Interval(0.0, 0.1),
        default=0.0005,
        doc="trading fee on traded notional (5 bps)",
        venues=(
            VenueField(
                "dydx",
                "taker_fee_ppm",
                1e6,
                "dYdX v4 x/feetiers PerpetualFeeTier (base tier 500 ppm)",
                integer=True,
            ),
            VenueField(
                "binance",
                "takerCommissionRate",
                1.0,
                "Binance USD-M futures GET /fapi/v1/commissionRate",
            ),
        ),
    ),
    Lever(
        name="max_liquidation_fraction",
        unit="fraction of the position",
        bounds=Interval(0.0, 1.0, low_open=True),
        default=0.25,
        doc=(
            "largest fraction of a position liquidated per tick, liquidation_mode partial "
            "(dYdX 10% per block)"
        ),
        venues=(
            VenueField(
                "dydx",
                "max_position_portion_liquidated_ppm",
                1e6,
                _DYDX_CLOB + " position_block_limits; per block, not per one-minute tick",
                integer=True,
                estimate=True,
            ),
        ),
    ),
    Lever(
        name="min_liquidation_notional_usd",
        unit="USD",
        bounds=Interval(0.0, math.inf, high_open=True),
        default=1000.0,
        doc=(
            "minimum notional liquidated per tick, liquidation_mode partial; smaller "
            "positions close whole (dYdX $1k)"
        ),
        venues=(
            VenueField(
                "dydx",
                "min_position_notional_liquidated",
                1e6,
                _DYDX_CLOB + " position_block_limits (USDC quote quantums, 1e6 per USD)",
                integer=True,
            ),
        ),
    ),
    Lever(
        name="liquidator_capacity_mult",
        unit="multiple of competitive capacity",
        bounds=Interval(0.0, 100.0),
        default=1.0,
        doc=(
            "outside liquidators' capacity, as a multiple of a competitive market's "
            "depth x ((their fee share - oracle gap) / 1%)^2; 0: the venue admits none"
        ),
    ),
    Lever(
        name="unrealised_pnl_haircut_frac",
        unit="fraction of unrealised profit",
        bounds=Interval(0.0, 1.0),
        default=1.0,
        doc=(
            "share of unrealised profit an account may not withdraw or borrow against "
            "(0: all of it, as Mango allowed; 1: none)"
        ),
    ),
    Lever(
        name="oi_cap_frac",
        unit="multiple of starting open interest",
        bounds=Interval(0.0, 1000.0),
        default=0.0,
        doc="open-interest cap per market: new positions above it are refused (0: off)",
    ),
    Lever(
        name="mark_cap_mult",
        unit="multiple of the mark's 8-hour average",
        bounds=Interval(0.0, 1000.0),
        default=0.0,
        doc=(
            "mark and oracle capped at this multiple of the mark's 8-hour average "
            "(0: off, else >= 1; Hyperliquid after XPL: 10)"
        ),
    ),
)

#: Levers an action can set, in action order when all are controlled.
CONTROLLABLE: tuple[str, ...] = tuple(n for n, lever in LEVERS.items() if lever.controllable)

#: Levers set per market on an exchange listing several markets
#: (:class:`fundgym.envs.markets_simulator.MarketsSimulator`,
#: :class:`fundgym.envs.markets_env.MarketsInsuranceFundEnv`): one value per market. Kept apart
#: from :data:`LEVERS`, whose levers are one per exchange and make up the one-market
#: environment's action.
MARKET_LEVERS: dict[str, Lever] = _registry(
    Lever(
        name="market_mmr_mult",
        unit="multiple of the exchange's margin",
        bounds=Interval(0.0, 100.0, low_open=True),
        default=1.0,
        doc="a market's maintenance and initial margin as a multiple of the exchange's "
        "(a thin alt asks more; Binance and Hyperliquid set margin per market)",
        action=ActionRange(0.5, 4.0, True),
    ),
    Lever(
        name="market_oi_cap_frac",
        unit="multiple of the market's starting open interest",
        bounds=Interval(0.0, 1000.0, low_open=True),
        default=4.0,
        doc="a market's open-interest cap: new positions that would lift its open interest "
        "above this multiple of its start are refused (the default, 4x, never binds in a "
        "day's crash; venues cap a thin market's OI, as Hyperliquid did after XPL)",
        action=ActionRange(0.25, 4.0, True),
    ),
    Lever(
        name="market_fund_cap_frac",
        unit="share of the exchange's starting insurance (every pot)",
        bounds=Interval(0.0, math.inf, high_open=True),
        default=1.0,
        doc="the most the fund pays toward a market's shortfalls (per tick or over the "
        "episode, fund_cap_period), as a share of the exchange's insurance at the start, "
        "every pot: Drift's per-market caps by contract tier ($100M, $1M, $100k, $0); 0: "
        "the fund never pays the market; 1: at most the whole starting fund",
        action=ActionRange(0.0, 1.0, False),
    ),
)


#: Levers of a segmented fund on an exchange listing several markets
#: (:class:`fundgym.envs.markets_env.MarketsInsuranceFundEnv` with ``fund_mode="segmented"``):
#: one value per exchange, kept apart from :data:`LEVERS` (the one-market environment's action).
SEGMENT_LEVERS: dict[str, Lever] = _registry(
    Lever(
        name="segment_transfer_cap_frac",
        unit="share of the segments' starting total, per tick",
        bounds=Interval(0.0, math.inf),
        default=0.0,
        doc="the most a segmented fund's segments may lend one another per tick toward a "
        "market its own segment cannot pay, as a share of the segments' starting total "
        "(0: forbidden, isolation; inf: pooled)",
        action=ActionRange(0.0, 0.05, False),
    ),
)

#: Levers set per collateral asset on an exchange whose accounts post collateral assets
#: (:class:`fundgym.envs.markets_simulator.MarketsSimulator`,
#: :class:`fundgym.envs.markets_env.MarketsInsuranceFundEnv`): one value per asset. Its default
#: is the scenario's ``haircut_frac`` for the asset; the one here stands for an asset without one.
COLLATERAL_LEVERS: dict[str, Lever] = _registry(
    Lever(
        name="collateral_haircut_frac",
        unit="share of the asset's price",
        bounds=Interval(0.0, 1.0, high_open=True),
        default=0.1,
        doc="the share of a collateral asset's price the venue does not count toward "
        "margin (Binance's collateral ratio is one minus it); a deeper haircut leaves "
        "less margin to a depeg",
        action=ActionRange(0.0, 0.9, False),
    ),
)


def venue_values(venue: Venue, values: dict[str, float]) -> dict[str, float]:
    """``venue``'s configuration fields for natural-unit ``values`` (levers it names).

    A lever missing from ``values``, or whose ``per`` lever is missing, is left out.
    """
    out: dict[str, float] = {}
    for name, lever in LEVERS.items():
        field = lever.venue(venue)
        if field is None or name not in values:
            continue
        if field.per is not None and field.per not in values:
            continue
        per_value = values[field.per] if field.per is not None else None
        out[field.name] = field.convert(float(values[name]), per_value)
    return out


def describe() -> list[tuple[str, str, str, str, str, str, str]]:
    """Rows ``(name, unit, hard bounds, action range, default, venue names, doc)``.

    For ``--help`` and the docs; the action range is ``"-"`` for levers an action cannot set.
    """
    rows = []
    for lever in LEVERS.values():
        names = ", ".join(
            f"{f.venue} {f.name}" + (" (estimate)" if f.estimate else "") for f in lever.venues
        )
        rows.append(
            (
                lever.name,
                lever.unit,
                str(lever.bounds),
                str(lever.action) if lever.action is not None else "-",
                f"{lever.default:g}",
                names or "-",
                lever.doc,
            )
        )
    return rows


def markdown_table() -> str:
    """:func:`describe` as a Markdown table: the lever list in ``docs/simulator_v2.md``.

    The docs embed this text verbatim and a test compares them, so the documented ranges
    cannot drift from the registry.
    """
    head = "| lever | unit | hard bounds | action range | default | venue fields | meaning |"
    lines = [head, "|---|---|---|---|---:|---|---|"]
    for row in describe():
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines)
