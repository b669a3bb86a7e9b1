"""The trader population: arrivals, exits, reactions near liquidation and ordinary volume.

The margin engine (:mod:`fundgym.envs.core.step`) only liquidates; without a population the book
would drain and never rebuild. This module supplies the flows that keep an exchange alive and
that a risk team's levers act on:

* **Arrivals** (Poisson) open heavy-tailed positions (Pareto sizes: a few whales) at retail
  leverage (lognormal, median 10x, p80 ~25x, p95 ~60x, capped at the venue maximum
  ``1 / imr``: calibration notes, section 8 "Retail leverage").
* **Exits** close out and withdraw at a constant hazard.
* **Near liquidation**, some traders top up collateral, some cut the position in half and most
  do nothing: the behaviour that decides how much of a cascade the margin engine sees.
* **Ordinary volume**: round trips that leave positions unchanged but pay taker fees, the
  fund's steady income.

Demand for new positions and volume falls when margins or fees rise (constant-elasticity
demand), so tightening the levers has a cost the agent must weigh against bad debt.

The arithmetic is compiled (:mod:`fundgym.envs.traders.kernels`): one kernel steps every exchange,
one pass over each exchange's accounts plus work for the few that act, and every cash or
position change goes through :func:`fundgym.envs.core.trading.trade_account` and
:func:`fundgym.envs.core.trading.deposit_account`, so the ledger
(:func:`fundgym.envs.state.ledger_error`)
stays closed once the fund's share of the fees is booked. The population never touches the
fund: it reports that share per exchange (``fund_trading_fee_income_usd``) and the tick books
it into the fund's portfolio. This module holds the parameters, the events, validation and
the Python entry points.

**Randomness is per exchange.** Every draw comes from a
:class:`~fundgym.envs.core.rng.BatchStreams`: exchange ``e``'s exits, reaction uniforms, volume
samples and its rows of the initial book come from its population stream, its arrivals from its
arrival stream, both seeded from its own seed alone. So an exchange's episode does not depend on how
many others share the batch, and a vector environment equals single environments seeded alike, step
for step. For the same reason every per-exchange total is a sum over that exchange's accounts alone,
in slot order.

**Common random numbers for arrivals.** Arrivals draw from their own stream and consume a
fixed amount of it per tick whatever the levers did: the count is the Poisson quantile of one
uniform, and a fixed list of candidate traders (size, side, leverage) is drawn every tick, of
which the first ``count`` arrive. Two policies run on the same seed therefore meet the same
whales at the same minutes, one policy merely admitting fewer of them when its margins deter
demand. Without this, one extra draw anywhere shifted every later arrival, and a $4M short
that arrived under one policy and not under another decided which of them lost more in a pump
(measured: 8 of 8 evaluation episodes of ``oracle_manipulation`` changed their whales between
two margin settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.rng import BatchStreams
from fundgym.envs.jit import kernel_array
from fundgym.envs.state import SimState
from fundgym.envs.traders import kernels
from fundgym.envs.traders.kernels import (
    ARRIVAL_CANDIDATE_DEMAND,
    DUST_DEBT_USD,
    FEE_FLOOR_FRAC,
    IMR_HEADROOM_REL,
    LONG_SHARE_HIGH,
    LONG_SHARE_LOW,
    VOLUME_TRADER_FRAC,
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

__all__ = [
    "ARRIVAL_CANDIDATE_DEMAND",
    "DUST_DEBT_USD",
    "FEE_FLOOR_FRAC",
    "IMR_HEADROOM_REL",
    "LONG_SHARE_BOUNDS",
    "MINUTES_PER_DAY",
    "VOLUME_TRADER_FRAC",
    "Z_95",
    "PopulationEvents",
    "PopulationParams",
    "TraderPopulation",
]

MINUTES_PER_DAY = 1440.0
Z_95 = 1.6448536269514722
"""Standard-normal 95th percentile: a lognormal's p95 is ``median * exp(Z_95 * sigma)``."""
LONG_SHARE_BOUNDS = (LONG_SHARE_LOW, LONG_SHARE_HIGH)
"""Bounds of the long share after the per-tick shift (:mod:`fundgym.envs.traders.kernels`)."""

_INF = float("inf")
MULTI_MARKET_ISSUE = "multi-market mechanics"
"""The later issue that gives the population more than one market."""

# name: (low, high, low_open, high_open); every value must also be finite.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "arrival_rate_per_slot_per_day": (0.0, _INF, False, True),
    "exit_rate_per_day": (0.0, _INF, False, True),
    "long_share": (0.0, 1.0, False, False),
    "mean_notional_usd": (0.0, _INF, True, True),
    "pareto_alpha": (1.0, _INF, True, True),
    "max_notional_mult": (1.0, 1e6, True, False),
    "leverage_median": (1.0, _INF, False, True),
    "leverage_p95": (1.0, _INF, False, True),
    "near_liquidation_buffer_frac": (0.0, _INF, False, True),
    "top_up_share": (0.0, 1.0, False, False),
    "reduce_share": (0.0, 1.0, False, False),
    "react_rate_per_min": (0.0, 1.0, False, False),
    "turnover_per_day": (0.0, _INF, False, True),
    "imr_elasticity": (-_INF, 0.0, True, False),
    "fee_elasticity": (-_INF, 0.0, True, False),
    "reference_imr": (0.0, 1.0, True, False),
    "reference_taker_fee_rate": (0.0, 0.1, True, False),
    "cross_share": (0.0, 1.0, False, False),
    "cross_leverage_median": (0.0, _INF, True, True),
    "cross_leverage_p95": (0.0, _INF, True, True),
    "derisk_per_stress": (0.0, _INF, False, True),
    "arrival_per_stress": (0.0, _INF, False, True),
    "funding_long_shift": (0.0, _INF, False, True),
    "stress_drawdown_frac": (0.0, 1.0, True, False),
}


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low!r}, {high!r}{')' if high_open else ']'}"


def _lognormal_sigma(median: float, p95: float) -> float:
    """The sigma of a lognormal of this median and 95th percentile, ``ln(p95 / median) / Z_95``."""
    return math.log(p95 / median) / Z_95


def truncated_pareto_mean(scale_usd: float, alpha: float, cap_usd: float) -> float:
    """Mean of a Pareto (minimum ``scale_usd``, index ``alpha > 1``) truncated at ``cap_usd``.

    ``alpha xm^alpha (xm^(1 - alpha) - c^(1 - alpha)) / ((alpha - 1)(1 - (xm / c)^alpha))``;
    ``alpha xm / (alpha - 1)`` as the cap goes to infinity.
    """
    tail = (scale_usd / cap_usd) ** alpha
    body = scale_usd ** (1.0 - alpha) - cap_usd ** (1.0 - alpha)
    return float(alpha * scale_usd**alpha * body / ((alpha - 1.0) * (1.0 - tail)))


def truncated_pareto_scale(mean_usd: float, alpha: float, cap_usd: float) -> float:
    """The Pareto minimum whose truncation at ``cap_usd > mean_usd`` has mean ``mean_usd``.

    The truncated mean rises monotonically with the minimum (from 0 to the cap), so
    bisection between 0 and ``mean_usd`` finds it to the last bits in 200 halvings.
    """
    low, high = 0.0, mean_usd
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if truncated_pareto_mean(mid, alpha, cap_usd) < mean_usd:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PopulationParams:
    """Behaviour of the trader population of one exchange (the same for every exchange).

    Rates are per exchange and per unit of time named in the field; the step scales them by
    its tick length, so one parameter set serves one-minute and one-hour ticks. Values marked
    [E] are estimates, not measurements.

    Attributes:
        arrival_rate_per_slot_per_day: Mean arrivals of new accounts per day per account slot,
            a Poisson rate, at the reference IMR and taker fee in a calm market; >= 0.
            Demand, not free slots, sets arrivals: the slots scale the exchange and are
            capacity only. With the exit hazard it sets the share of slots open in a calm
            market, ``arrival rate / exit rate`` (0.3 / 0.5 = 60%: 40% of slots stay free, so
            a crash's freed slots do not refill themselves). [E]
        exit_rate_per_day: Per-account hazard of closing out and withdrawing, per day; >= 0.
            The default 0.5 gives a mean holding time of two days. [E]
        long_share: Probability that a new position is long, in [0, 1]. The step adds its
            ``long_share_shift`` and clips the result to ``LONG_SHARE_BOUNDS``.
        mean_notional_usd: Mean notional of a new position, > 0. Sizes are Pareto with index
            ``pareto_alpha`` and this mean, so a few whales hold much of the open interest.
        pareto_alpha: Pareto tail index of sizes, > 1 (the mean is finite only above 1); 1.5
            as in :func:`fundgym.envs.core.synthetic.synthetic_book`.
        max_notional_mult: Sizes are Pareto truncated at this multiple of
            ``mean_notional_usd``, in (1, 1e6]. Untruncated, the largest of 614 accounts held
            a median 11% of open interest and more than all of it in one book of 500; at 25x
            the median is 6% and the largest under 9% ([E]: whales hold a few
            percent of a major's open interest on a CEX, up to 10-25% on Hyperliquid in
            2025). The Pareto minimum is solved so the truncated mean stays
            ``mean_notional_usd`` (:func:`truncated_pareto_scale`).
        leverage_median: Median leverage of a new position, >= 1. Calibration notes section
            8: lognormal with median 10x (BitMEX/Binance retail). [E]
        leverage_p95: 95th percentile of leverage before the venue cap, >= ``leverage_median``;
            sets the lognormal sigma to ``ln(p95 / median) / Z_95``. 60x gives p80 = 25x, as
            in the notes. Drawn leverage is capped at ``1 / imr`` and floored at 1. [E]
        near_liquidation_buffer_frac: An account is "near liquidation" when its equity is
            below ``(1 + buffer) x`` its maintenance requirement; >= 0. Those that top up
            bring equity to ``(1 + 2 buffer) x`` the requirement. [E]
        top_up_share: Of the near-liquidation accounts that react in a tick, the share that
            deposits collateral, in [0, 1]. [E]
        reduce_share: The share that halves the position, in [0, 1];
            ``top_up_share + reduce_share <= 1`` and the rest do nothing. [E]
        react_rate_per_min: Probability per minute that a near-liquidation account reacts at
            all, in [0, 1] (``min(1, rate x tick)`` per tick): most retail traders are not
            watching when the price moves. [E]
        turnover_per_day: Ordinary traded notional per day as a multiple of open interest,
            >= 0 (BTC perps trade roughly 1-3x their open interest a day). [E]
        imr_elasticity: ``d ln(arrivals and volume) / d ln(imr)``, <= 0. [E] Constant-
            elasticity demand; margin-change studies (e.g. of CME margin hikes) find that
            higher margins shrink open interest and volume, with elasticities well below 1 in
            magnitude; -0.8 is an estimate, not a fit to crypto data.
        fee_elasticity: ``d ln(arrivals and volume) / d ln(taker fee)``, <= 0. [E] The
            literature on exchange fee changes reports volume elasticities around -0.5 to -1;
            -0.5 is an estimate.
        reference_imr: IMR at which ``arrival_rate_per_min`` and ``turnover_per_day`` hold,
            in (0, 1].
        reference_taker_fee_rate: Taker fee at which they hold, in (0, 0.1].
        cross_share: Share of new accounts that are cross-margined, in [0, 1]: their whole
            balance backs the position, so their effective leverage (notional / equity) is
            far below their order's. The rest are isolated and post only the order's initial
            margin: they run at order leverage. [E] (cross margin is the default mode on
            Binance, Bybit and Hyperliquid; 0.9 is an estimate.)
        cross_leverage_median: Median effective leverage of a cross account, > 0. The
            median Hyperliquid account auto-deleveraged on 10 Oct 2025 ran at 0.2x and the
            p95 at 5.1x (outcomes.md, "Account leverage", [S78]), against order leverage of
            median 10-20x; the defaults take those figures (a sample of profitable accounts,
            so an estimate for the whole population [E]). Capped at the order's leverage.
        cross_leverage_p95: Its 95th percentile, >= the median: lognormal with sigma
            ``ln(p95 / median) / Z_95``.
        derisk_per_stress: Voluntary de-risking: the exit hazard is multiplied by ``1 + this x
            stress`` (stress: :func:`fundgym.envs.traders.kernels.market_stress`, 1 when
            volatility doubles or the price is ``stress_drawdown_frac`` below its recent peak).
            Open interest fell 22-48% through real crashes, liquidations being a third of that
            or less (outcomes.md); de-risking and fewer arrivals are the rest. [E]
        arrival_per_stress: Arrivals are divided by ``1 + this x stress``. [E]
        funding_long_shift: The long share of arrivals moves by ``-this x funding rate per
            interval`` (0.01 per basis point at 100): paying longs open fewer longs. [E]
        stress_drawdown_frac: The drawdown from the recent peak (a one-day memory) that counts
            as one unit of stress, in (0, 1]. [E]
    """

    arrival_rate_per_slot_per_day: float = 0.3
    exit_rate_per_day: float = 0.5
    long_share: float = 0.5
    mean_notional_usd: float = 20_000.0
    pareto_alpha: float = 1.5
    max_notional_mult: float = 25.0
    leverage_median: float = 10.0
    leverage_p95: float = 60.0
    near_liquidation_buffer_frac: float = 0.25
    top_up_share: float = 0.2
    reduce_share: float = 0.2
    react_rate_per_min: float = 0.2
    turnover_per_day: float = 2.0
    imr_elasticity: float = -0.8
    fee_elasticity: float = -0.5
    reference_imr: float = 0.05
    reference_taker_fee_rate: float = 0.0005
    cross_share: float = 0.9
    cross_leverage_median: float = 0.2
    cross_leverage_p95: float = 5.1
    derisk_per_stress: float = 0.1
    arrival_per_stress: float = 0.1
    funding_long_shift: float = 100.0
    stress_drawdown_frac: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low, high, low_open, high_open = _RANGES[f.name]
            try:
                x = float(value)
            except (TypeError, ValueError):
                x = math.nan
            inside = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
            if not (math.isfinite(x) and inside):
                raise ValueError(
                    f"PopulationParams.{f.name} must be a finite number in "
                    f"{_interval(low, high, low_open, high_open)}, got {value!r}"
                )
            object.__setattr__(self, f.name, x)
        for stem in ("leverage", "cross_leverage"):  # the two lognormals' p95 >= median
            median, p95 = getattr(self, f"{stem}_median"), getattr(self, f"{stem}_p95")
            if p95 < median:
                raise ValueError(
                    f"PopulationParams.{stem}_p95 must be >= {stem}_median ({median!r}), "
                    f"got {p95!r}"
                )
        if self.top_up_share + self.reduce_share > 1.0:
            raise ValueError(
                f"PopulationParams.reduce_share must be <= 1 - top_up_share "
                f"({1.0 - self.top_up_share!r}), got {self.reduce_share!r}"
            )

    @property
    def cross_leverage_sigma(self) -> float:
        """Lognormal sigma of a cross account's effective leverage, ``ln(p95 / median) / Z_95``."""
        return _lognormal_sigma(self.cross_leverage_median, self.cross_leverage_p95)

    @property
    def calm_open_frac(self) -> float:
        """Share of slots open in a calm market at the reference levers: arrivals / exits.

        The expected steady state of arrivals at ``arrival_rate_per_slot_per_day`` per slot
        and exits at ``exit_rate_per_day`` per account, capped at 1 (the slots); 1 when
        nobody exits. The initial book starts there.
        """
        if self.exit_rate_per_day == 0.0:
            return 1.0
        return min(self.arrival_rate_per_slot_per_day / self.exit_rate_per_day, 1.0)

    @property
    def leverage_sigma(self) -> float:
        """Lognormal sigma of leverage, ``ln(p95 / median) / Z_95``."""
        return _lognormal_sigma(self.leverage_median, self.leverage_p95)

    def columns(self, tick_minutes: float) -> FloatArray:
        """The parameters as the kernels read them (``kernels.C_*``), rates scaled to a tick.

        Per tick: the arrival mean per slot ``rate x tick / 1 day``, the exit probability
        ``1 - exp(-rate x tick / 1 day)``, the reaction probability ``min(1, rate x tick)``
        and the turnover ``turnover x tick / 1 day``.
        """
        k = kernels
        out = np.zeros(k.N_POP_COLUMNS)
        out[k.C_LAM_PER_SLOT_TICK] = (
            self.arrival_rate_per_slot_per_day * tick_minutes / MINUTES_PER_DAY
        )
        out[k.C_P_EXIT] = -math.expm1(-self.exit_rate_per_day * tick_minutes / MINUTES_PER_DAY)
        out[k.C_P_REACT] = min(1.0, self.react_rate_per_min * tick_minutes)
        out[k.C_BUFFER] = self.near_liquidation_buffer_frac
        out[k.C_TOP_UP_SHARE] = self.top_up_share
        out[k.C_REDUCE_SHARE] = self.reduce_share
        out[k.C_TURNOVER_PER_TICK] = self.turnover_per_day * tick_minutes / MINUTES_PER_DAY
        out[k.C_LONG_SHARE] = self.long_share
        alpha = self.pareto_alpha
        cap_usd = self.max_notional_mult * self.mean_notional_usd
        out[k.C_SCALE_USD] = truncated_pareto_scale(self.mean_notional_usd, alpha, cap_usd)
        out[k.C_PARETO_ALPHA] = alpha
        out[k.C_SIZE_CDF_AT_CAP] = 1.0 - (out[k.C_SCALE_USD] / cap_usd) ** alpha
        out[k.C_LOG_LEV_MEDIAN] = math.log(self.leverage_median)
        out[k.C_LEV_SIGMA] = self.leverage_sigma
        out[k.C_IMR_ELASTICITY] = self.imr_elasticity
        out[k.C_FEE_ELASTICITY] = self.fee_elasticity
        out[k.C_REFERENCE_IMR] = self.reference_imr
        out[k.C_REFERENCE_FEE] = self.reference_taker_fee_rate
        out[k.C_CROSS_SHARE] = self.cross_share
        out[k.C_LOG_CROSS_LEV_MEDIAN] = math.log(self.cross_leverage_median)
        out[k.C_CROSS_LEV_SIGMA] = self.cross_leverage_sigma
        out[k.C_DERISK_PER_STRESS] = self.derisk_per_stress
        out[k.C_ARRIVAL_PER_STRESS] = self.arrival_per_stress
        out[k.C_FUNDING_LONG_SHIFT] = self.funding_long_shift
        out[k.C_DRAWDOWN_SCALE] = self.stress_drawdown_frac
        return out


@dataclass
class PopulationEvents:
    """What the population did in one step, per exchange: every field is ``(n_envs,)``.

    Attributes:
        arrivals: New accounts that opened a position (arrivals dropped for lack of a free
            slot, or rejected by the initial-margin check, are not counted).
        exits: Accounts that left and freed their slot: hazard exits, flat accounts that
            withdrew what a liquidation left them, and flat accounts settling rounding dust.
        top_ups: Near-liquidation accounts that deposited collateral.
        reductions: Near-liquidation accounts that halved their position.
        top_up_usd: Collateral deposited by ``top_ups``.
        withdrawn_usd: Collateral withdrawn by leaving accounts (net of dust debts settled).
        new_collateral_usd: Collateral deposited by ``arrivals``.
        new_notional_usd: Notional opened by ``arrivals``, at mark.
        volume_usd: All notional the population traded this step: exits, reductions, new
            positions and the ordinary round trips (``trading_fees_usd = fee rate x this``).
        trading_fees_usd: Taker fees paid on that volume.
        fund_trading_fee_income_usd: The insurance fund's share of those fees.
    """

    arrivals: IntArray
    exits: IntArray
    top_ups: IntArray
    reductions: IntArray
    top_up_usd: FloatArray
    withdrawn_usd: FloatArray
    new_collateral_usd: FloatArray
    new_notional_usd: FloatArray
    volume_usd: FloatArray
    trading_fees_usd: FloatArray
    fund_trading_fee_income_usd: FloatArray

    @classmethod
    def zeros(cls, n_envs: int) -> PopulationEvents:
        """A step in which nobody did anything."""
        arrays: dict[str, Any] = {name: np.zeros(n_envs, dtype=np.int64) for name in _COUNT_FIELDS}
        arrays.update({name: np.zeros(n_envs) for name in _USD_FIELDS})
        return cls(**arrays)

    @classmethod
    def from_columns(cls, counts: IntArray, usd: FloatArray) -> PopulationEvents:
        """Events from the kernel's ``(n_envs, 4)`` counts and ``(n_envs, 7)`` USD columns.

        Each field is a contiguous row of one transposed copy per dtype (two copies a step,
        not eleven), in :data:`_COUNT_FIELDS` then :data:`_USD_FIELDS` order.
        """
        return cls(*counts.T.copy(), *usd.T.copy())

    def as_dict(self) -> dict[str, FloatArray | IntArray]:
        """Field name to array."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COUNT_FIELDS = ("arrivals", "exits", "top_ups", "reductions")  # int64; the rest are USD
_USD_FIELDS = tuple(f.name for f in fields(PopulationEvents) if f.name not in _COUNT_FIELDS)
assert tuple(f.name for f in fields(PopulationEvents))[: len(_COUNT_FIELDS)] == _COUNT_FIELDS
assert _COUNT_FIELDS.index("reductions") == kernels.E_REDUCTIONS
assert _USD_FIELDS.index("fund_trading_fee_income_usd") == kernels.E_FUND_FEE_INCOME_USD


def _per_env(name: str, value: ArrayLike, n_envs: int, low: float, low_open: bool) -> FloatArray:
    """``value`` as a C-contiguous ``(n_envs,)`` array, checked finite and above ``low``.

    A float64 ``(n_envs,)`` C-contiguous array, the form the simulator passes every tick, is
    checked in one compiled pass and returned as it is (the kernels only read it).
    """
    bound = f"> {low!r}" if low_open else f">= {low!r}"
    if (
        type(value) is np.ndarray
        and value.shape == (n_envs,)
        and value.dtype == np.float64
        and value.flags.c_contiguous
    ):
        bad = kernels.first_invalid(value, low, low_open)
        if bad < 0:
            return value
        raise ValueError(f"{name} must be finite and {bound}, got {value[bad]!r}")
    if type(value) in (float, int):  # the common scalar (a bool is refused below)
        x = float(cast(float, value))
        if math.isfinite(x) and (x > low if low_open else x >= low):
            return np.full(n_envs, x)
    arr = np.asarray(value, dtype=np.float64)
    try:
        out = np.broadcast_to(arr, (n_envs,))
    except ValueError:
        raise ValueError(
            f"{name} must be a float or an (n_envs,) = ({n_envs},) array, got shape {arr.shape}"
        ) from None
    bad_mask = ~np.isfinite(out) | ((out <= low) if low_open else (out < low))
    if bad_mask.any():
        raise ValueError(f"{name} must be finite and {bound}, got {out[bad_mask][0]!r}")
    return np.ascontiguousarray(out, dtype=np.float64)


def _int_per_env(name: str, value: ArrayLike, n_envs: int, high: int, allowed: str) -> IntArray:
    """``value`` as a contiguous ``(n_envs,)`` int64 array in ``[0, high]``, or a ValueError.

    ``allowed`` says what may be given, for the message.
    """
    arr = kernel_array(value, (n_envs,))
    if arr.dtype.kind not in "iu" or (arr < 0).any() or (arr > high).any():
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return arr.astype(np.int64)


def _halt_mask(value: ArrayLike, n_envs: int) -> IntArray:
    """The halt bits per exchange (``kernels.HALT_*``), or a ValueError."""
    bits = kernels.HALT_WITHDRAWALS | kernels.HALT_NEW_POSITIONS  # the two bits: 0 .. 3
    allowed = (
        f"integers of the bits {kernels.HALT_WITHDRAWALS} (withdrawals) and "
        f"{kernels.HALT_NEW_POSITIONS} (new positions)"
    )
    return _int_per_env("halt_mask", value, n_envs, bits, allowed)


def _first_slots(value: ArrayLike, n_envs: int, n_accounts: int) -> IntArray:
    """The first population slot per exchange, in ``[0, n_accounts]``, or a ValueError."""
    allowed = f"integers in [0, n_accounts = {n_accounts}]"
    return _int_per_env("first_slot", value, n_envs, n_accounts, allowed)


def _capped(name: str, value: ArrayLike, n_envs: int, low: float) -> FloatArray:
    """A cap per exchange as a contiguous ``(n_envs,)`` array: ``>= low`` or ``inf`` (none)."""
    arr = kernel_array(value, (n_envs,), np.float64)
    if np.isnan(arr).any() or (arr < low).any():
        raise ValueError(f"{name} must be >= {low!r} or inf (no cap), got {value!r}")
    return arr


def _active(active: ArrayLike, n_envs: int) -> BoolArray:
    """``active`` as a contiguous ``(n_envs,)`` boolean array, or a ValueError naming it."""
    arr = np.ascontiguousarray(active)
    if arr.dtype != np.bool_ or arr.shape != (n_envs,):
        raise ValueError(
            f"active must be a boolean array of shape ({n_envs},), got {arr.dtype} {arr.shape}"
        )
    return arr


def _check_rng(rng: BatchStreams, n_envs: int) -> None:
    if rng.n_envs != n_envs:
        raise ValueError(f"rng.n_envs ({rng.n_envs}) must equal state.n_envs ({n_envs})")


def _check_contiguous(state: SimState) -> None:
    """The step kernel views each exchange's accounts as contiguous rows."""
    for name in ("collateral_usd", "size", "entry_price"):
        if not getattr(state, name).flags.c_contiguous:
            raise ValueError(f"state.{name} must be C-contiguous for the population step")


def _check_one_market(n_markets: int) -> None:
    if n_markets != 1:
        raise NotImplementedError(
            f"the trader population trades one market; got n_markets={n_markets} "
            f"(comes with the {MULTI_MARKET_ISSUE} issue)"
        )


class TraderPopulation:
    """Draws, moves and retires the accounts of a batch of exchanges, in compiled kernels.

    The population holds no state of its own: accounts live in the
    :class:`~fundgym.envs.state.SimState` and every random draw comes from the
    :class:`~fundgym.envs.core.rng.BatchStreams` passed in, exchange ``e``'s from its own streams
    only, so two runs with the same seeds are identical and each exchange of a batch runs
    exactly as it would alone with its seed.
    """

    def __init__(self, params: PopulationParams) -> None:
        """Bind the behaviour parameters (the population keeps no other state).

        Args:
            params: Behaviour of the population.
        """
        self.params = params
        self._columns: dict[float, tuple[PopulationParams, FloatArray]] = {}
        self._risk: tuple[RiskParams, int, tuple[FloatArray, ...]] | None = None
        self._scalars: dict[str, tuple[float, FloatArray]] = {}

    def _columns_for(self, tick_minutes: float) -> FloatArray:
        """:meth:`PopulationParams.columns`, memoised per tick length (a step asks every tick).

        Keyed by the tick and checked against :attr:`params` by identity: hashing the
        parameters every step would cost more than the rest of the lookup.
        """
        hit = self._columns.get(tick_minutes)
        if hit is None or hit[0] is not self.params:
            hit = self._columns[tick_minutes] = (self.params, self.params.columns(tick_minutes))
        return hit[1]

    def _risk_arrays(self, risk: RiskParams, n_envs: int) -> tuple[FloatArray, ...]:
        """``risk.packed(n_envs)`` and ``risk.tier_table()``, kept while ``risk`` stays the same.

        :class:`RiskParams` is frozen, so the same object always packs the same numbers.
        """
        hit = self._risk
        if hit is None or hit[0] is not risk or hit[1] != n_envs:
            hit = self._risk = (risk, n_envs, (risk.packed(n_envs), *risk.tier_table()))
        return hit[2]

    def _modulation(
        self, name: str, value: ArrayLike, n_envs: int, low: float, low_open: bool
    ) -> FloatArray:
        """:func:`_per_env` for a step's modulation, a scalar's array kept while it repeats."""
        if type(value) in (float, int):
            hit = self._scalars.get(name)
            if hit is not None and hit[0] == value and hit[1].size == n_envs:
                return hit[1]
            arr = _per_env(name, value, n_envs, low, low_open)
            self._scalars[name] = (cast(float, value), arr)
            return arr
        return _per_env(name, value, n_envs, low, low_open)

    # ---- distributions -------------------------------------------------------------------

    def demand_multiplier(self, risk: RiskParams, n_envs: int) -> FloatArray:
        """Arrival and volume multiplier per exchange from its IMR and taker fee.

        Constant-elasticity demand: ``(imr / ref_imr) ** imr_elasticity x (fee / ref_fee) **
        fee_elasticity``, 1 at the reference parameters. A zero fee is floored at
        ``FEE_FLOOR_FRAC x ref_fee`` (demand would otherwise be infinite). The step computes
        it with the same compiled function (:func:`fundgym.envs.traders.kernels.demand_multiplier`).

        Returns:
            ``(n_envs,)`` multipliers, > 0.
        """
        out = np.empty(n_envs)
        kernels.demand_multipliers(risk.packed(n_envs), self._columns_for(1.0), out)
        return out

    def coupled_candidates(
        self,
        rng: BatchStreams,
        lam: ArrayLike,
        lam_ref: ArrayLike,
        long_share: ArrayLike,
        max_leverage: ArrayLike,
        leverage_mult: ArrayLike,
    ) -> tuple[IntArray, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
        """One tick's arrival count and candidate traders, drawn exactly as :meth:`step` does.

        Exchange ``e`` draws ``1 + 7 max(K_e, count_e)`` uniforms from its arrival stream,
        ``K_e = ceil(4 lam_ref + 6 sqrt(4 lam_ref) + 6)`` set by the policy-free rate
        ``lam_ref[e]`` (the demand at reference levers, see ``ARRIVAL_CANDIDATE_DEMAND``):
        the count is the Poisson(``lam[e]``) quantile of the first, and candidate ``k``'s
        notional (Pareto, by its inverse CDF), side and leverage (lognormal, Box-Muller)
        come from the next four. So the same seed gives the same candidates whatever ``lam``
        is; only a count above ``K_e`` draws more. The step takes the first ``count``
        candidates for the first empty slots.

        Returns:
            ``(count, (notional_usd, side, leverage, margin_usage))``, the candidates as
            ``(n_envs, K)`` arrays padded with zeros past each exchange's own
            ``max(K_e, count_e)``; margin usage is 1 for an isolated account.
        """
        n = rng.n_envs
        lam_a = _per_env("lam", lam, n, 0.0, False)
        ref_a = _per_env("lam_ref", lam_ref, n, 0.0, False)
        counts = np.zeros(n, dtype=np.int64)
        # Width: every exchange's budget, or its count if larger (a quantile below its cap).
        cap = max((kernels.candidate_budget(x) for x in ref_a), default=1)
        k_max = (lam_a + 12.0 * np.sqrt(lam_a) + 21.0).max(initial=0.0)
        out = np.zeros((n, 4, max(cap, math.ceil(k_max))))
        kernels.coupled_candidates_kernel(
            rng.state,
            lam_a,
            ref_a,
            _per_env("long_share", long_share, n, -_INF, True),
            _per_env("max_leverage", max_leverage, n, 1.0, False),
            _per_env("leverage_mult", leverage_mult, n, 0.0, True),
            self._columns_for(1.0),
            counts,
            out,
        )
        width = int(max(cap, counts.max(initial=0)))
        return counts, (out[:, 0, :width], out[:, 1, :width], out[:, 2, :width], out[:, 3, :width])

    def market_response(
        self,
        vol_annual: FloatArray,
        base_vol_annual: FloatArray,
        drawdown_frac: FloatArray,
        funding_rate: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """How each exchange's traders answer its market: arrival factor, exit factor, shift.

        :func:`fundgym.envs.traders.kernels.market_response` of
        :func:`~fundgym.envs.traders.kernels.market_stress`, per exchange: the numpy
        reference tick calls this, the compiled tick the same functions.

        Returns:
            ``(arrival_factor, exit_factor, long_share_shift)``, each ``(n_envs,)``.
        """
        n = np.asarray(vol_annual).size
        arrival, exit_factor, shift = np.empty(n), np.empty(n), np.empty(n)
        kernels.market_responses(
            np.ascontiguousarray(vol_annual, dtype=np.float64),
            np.ascontiguousarray(base_vol_annual, dtype=np.float64),
            np.ascontiguousarray(drawdown_frac, dtype=np.float64),
            np.ascontiguousarray(funding_rate, dtype=np.float64),
            self._columns_for(1.0),
            arrival,
            exit_factor,
            shift,
        )
        return arrival, exit_factor, shift

    # ---- the book at reset ---------------------------------------------------------------

    def initial_state(
        self,
        rng: BatchStreams,
        n_accounts: int,
        price: ArrayLike,
        risk: RiskParams,
        fill_frac: float | None = None,
    ) -> SimState:
        """A batch whose first ``fill_frac`` of slots hold accounts drawn like new arrivals.

        Each account holds a position opened at ``price`` against the counterparty (no
        long/short balance is imposed: sides follow ``long_share``) and collateral
        ``notional x (1 / (leverage x usage) + fee rate)``: what an arrival keeps after paying its
        opening fee, so the book looks as if it had been built by :meth:`step`. The remaining
        slots are empty (size, collateral and entry 0), ready for arrivals. Row ``e`` is drawn
        from exchange ``e``'s population stream alone (four uniforms per account, as an
        arrival), so drawing one exchange's book through ``rng.env(e)`` at its reset gives the
        same row as drawing the whole batch. The fund starts at 0 (the caller sets it).

        Args:
            rng: The batch's streams (one exchange per row).
            n_accounts: Account slots per exchange.
            price: Entry price, scalar or ``(n_envs,)``, > 0.
            risk: Risk parameters (``imr`` caps leverage, ``taker_fee_rate`` sizes collateral).
            fill_frac: Share of slots filled, in [0, 1]; ``None``: the calm market's steady
                state, :attr:`PopulationParams.calm_open_frac`.
        """
        if fill_frac is None:
            fill_frac = self.params.calm_open_frac
        if not 0.0 <= fill_frac <= 1.0:
            raise ValueError(f"fill_frac must lie in [0, 1], got {fill_frac!r}")
        n_envs = rng.n_envs
        px = _per_env("price", price, n_envs, 0.0, True)
        shape = (n_envs, n_accounts)
        collateral, size, entry = np.zeros(shape), np.zeros((*shape, 1)), np.zeros((*shape, 1))
        kernels.initial_book_kernel(
            rng.state,
            self._columns_for(1.0),
            risk.packed(n_envs),
            px,
            round(fill_frac * n_accounts),
            collateral,
            size,
            entry,
        )
        return SimState.create(collateral, size, entry, 0.0)

    # ---- one tick ------------------------------------------------------------------------

    def step(
        self,
        rng: BatchStreams,
        state: SimState,
        risk: RiskParams,
        mark: ArrayLike,
        tick_minutes: float,
        *,
        arrival_mult: FloatArray | float = 1.0,
        leverage_mult: FloatArray | float = 1.0,
        long_share_shift: FloatArray | float = 0.0,
        volume_mult: FloatArray | float = 1.0,
        exit_mult: FloatArray | float = 1.0,
        halt_mask: IntArray | int = 0,
        leverage_cap: FloatArray | float = _INF,
        oi_cap_usd: FloatArray | float = _INF,
        first_slot: IntArray | int = 0,
        active: BoolArray | None = None,
    ) -> PopulationEvents:
        """One tick of trader behaviour, in place: exits, reactions, arrivals, volume.

        The order matters: exits free slots that arrivals of the same tick can take;
        reactions act on the book the margin engine just left; the volume is computed on the
        open interest after arrivals. All trades execute at ``mark`` against the
        counterparty and pay the taker fee; the fund's share of the fees is reported, not
        booked (``fund_trading_fee_income_usd``: the caller pays it into the fund).

        Exits. A hazard exit closes out and withdraws; a flat account with money left (what
        a liquidation left it) withdraws too. A flat account with negative collateral (bad
        debt a liquidation could not recover from it) keeps its slot: the debt stays on the
        books, where the ledger counts it; rounding dust below ``DUST_DEBT_USD`` is settled by
        a deposit instead. An account whose equity would not cover its closing fee does not
        exit (an exchange does not let a bankrupt account walk away; the liquidation engine
        closes it). Exiting accounts are drawn per slot with probability
        ``1 - exp(-exit_rate x tick / 1 day)`` (geometric gaps between the drawn slots, one
        draw per exit; empty slots drawn are skipped, which is one Bernoulli per open account).

        Near liquidation. Accounts whose equity is below ``(1 + buffer) x`` their maintenance
        requirement (tiers included) draw one uniform each, in slot order: below
        ``p x top_up_share`` they top up to ``(1 + 2 buffer) x`` the requirement, below
        ``p x (top_up_share + reduce_share)`` they halve the position, otherwise nothing, with
        ``p = min(1, react_rate_per_min x tick)`` the chance they react at all.

        Arrivals take the first empty slots (size and collateral 0), deposit and open at
        mark. Collateral is ``notional x (1 / leverage + 2 x fee rate)``: the initial margin
        plus the opening and the eventual closing fee, so an order at the venue's maximum
        leverage still passes the initial-margin check after its fee (the margin part carries
        a ``1 + IMR_HEADROOM_REL`` pad against rounding, which matters at a zero fee).
        Arrivals beyond the free slots are dropped; an order the check rejects (none in exact
        arithmetic) withdraws its collateral again and is not counted. Counts and candidates
        come from the arrival stream (:meth:`coupled_candidates`), sized by the rate without
        the levers' demand effect, so the stream consumed does not depend on the policy.

        Ordinary volume, as round trips (reduce by ``x``, then re-open ``x``) at mark: target
        notional ``turnover x OI x tick / 1 day x demand x volume_mult``, with open interest
        ``0.5 x sum |size| x mark``. About ``VOLUME_TRADER_FRAC`` of open accounts are drawn
        (each slot with that probability, empty ones skipped); those whose equity covers the
        initial margin of their current position plus both legs' fees (so the re-opening leg
        cannot be rejected and positions end unchanged) each trade ``x = s |size|``, with
        ``s`` set so the notional matches the target. ``s`` is capped at 1 (a full close and
        re-open), so the target is missed only when the drawn accounts are too few or too
        levered to carry it. An exchange with no target draws no accounts.

        Args:
            rng: The batch's streams (the only source of randomness); exchange ``e`` draws
                from its own rows only. ``rng.n_envs`` must equal ``state.n_envs``.
            state: Batch state, updated in place (one market).
            risk: Risk parameters in force (IMR, MMR and tiers, taker fee and its fund share).
            mark: ``(n_envs,)`` mark price, > 0.
            tick_minutes: Length of the tick, > 0.
            arrival_mult: ``(n_envs,)`` or scalar >= 0: regime or precursor modulation of
                arrivals (open-interest build-up before a crash).
            leverage_mult: ``(n_envs,)`` or scalar > 0: multiplies drawn leverage (leverage
                build-up); the venue cap still applies.
            long_share_shift: ``(n_envs,)`` or scalar: added to ``long_share``, the sum
                clipped to ``LONG_SHARE_BOUNDS`` (crowded longs before a long squeeze).
            volume_mult: ``(n_envs,)`` or scalar >= 0: multiplies ordinary volume.
            exit_mult: ``(n_envs,)`` or scalar >= 0: multiplies the exit hazard (voluntary
                de-risking, :meth:`market_response`).
            halt_mask: ``(n_envs,)`` or scalar int: the venue's halts, bits
                ``kernels.HALT_WITHDRAWALS`` (exits close their positions but nobody
                withdraws; a flat account with money waits) and ``kernels.HALT_NEW_POSITIONS``
                (reduce-only: no arrivals and no ordinary round trips).
            leverage_cap: ``(n_envs,)`` or scalar >= 1 (``inf``: none): caps the leverage of
                new positions below the venue's ``1 / imr``.
            oi_cap_usd: ``(n_envs,)`` or scalar >= 0 (``inf``: none): an arrival that would
                lift open interest (at mark, one side) above it is refused.
            first_slot: ``(n_envs,)`` or scalar int in ``[0, n_accounts]``: slots below it
                hold scripted accounts (a scenario's attacker) the population leaves alone
                and leaves out of its open interest.
            active: ``(n_envs,)`` which exchanges step (``None``: all); the others are left
                untouched and draw nothing, with zero events.

        Returns:
            The tick's events per exchange.

        Raises:
            NotImplementedError: The state has more than one market.
        """
        n_envs = state.n_envs
        _check_rng(rng, n_envs)
        _check_one_market(state.n_markets)
        _check_contiguous(state)
        m = _per_env("mark", mark, n_envs, 0.0, True)
        if not (math.isfinite(tick_minutes) and tick_minutes > 0.0):
            raise ValueError(f"tick_minutes must be finite and > 0, got {tick_minutes!r}")
        counts = np.zeros((n_envs, kernels.N_COUNT_EVENTS), dtype=np.int64)
        usd = np.zeros((n_envs, kernels.N_USD_EVENTS))
        packed, floor_usd, tier_mmr, cum_usd, scale_div = self._risk_arrays(risk, n_envs)
        kernels.population_step_kernel(
            rng.state,
            state.collateral_usd,
            state.size,
            state.entry_price,
            state.counterparty_size,
            state.counterparty_cash_usd,
            state.fee_revenue_usd,
            state.net_deposits_usd,
            packed,
            floor_usd,
            tier_mmr,
            cum_usd,
            scale_div,
            self._columns_for(tick_minutes),
            m.reshape(n_envs, 1),
            self._modulation("arrival_mult", arrival_mult, n_envs, 0.0, False),
            self._modulation("leverage_mult", leverage_mult, n_envs, 0.0, True),
            self._modulation("long_share_shift", long_share_shift, n_envs, -_INF, True),
            self._modulation("volume_mult", volume_mult, n_envs, 0.0, False),
            self._modulation("exit_mult", exit_mult, n_envs, 0.0, False),
            _halt_mask(halt_mask, n_envs),
            _capped("leverage_cap", leverage_cap, n_envs, 1.0),
            _capped("oi_cap_usd", oi_cap_usd, n_envs, 0.0),
            _first_slots(first_slot, n_envs, state.n_accounts),
            np.ones(n_envs, dtype=np.bool_) if active is None else _active(active, n_envs),
            counts,
            usd,
        )
        return PopulationEvents.from_columns(counts, usd)
