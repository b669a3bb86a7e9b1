"""The trader population: arrivals, exits, reactions near liquidation and ordinary volume.

The margin engine (:mod:`envs.core.step`) only liquidates; without a population the book
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

Every cash or position change goes through :func:`envs.core.trading.execute_trades` and
:func:`envs.core.trading.deposit`, so the ledger (:func:`envs.core.state.ledger_error`) stays
closed. The few accounts a tick touches are packed into a narrow state, one row per account,
before those calls (:class:`_Subset`), so the cost of a tick grows with the number of accounts
that act, not with the size of the book.

**Randomness is per exchange.** Every draw comes from a :class:`~envs.core.rng.BatchRandom`,
one generator per exchange, and exchange ``e``'s draws (its arrivals, exit and volume samples,
reaction uniforms, new accounts, and its rows of the initial book) come from generator ``e``
only, in the order a batch of one would make them. So an exchange's episode does not depend on
how many others share the batch, and a vector environment equals single environments seeded
alike, step for step. For the same reason every per-exchange total is a sum over that
exchange's accounts alone, in a fixed order (one packed row per account, reduced with
``bincount``): a sum over a row padded to the batch's widest exchange would round differently.
The loops this needs run over exchanges, never over accounts.

**Common random numbers for arrivals.** Given ``arrival_rng`` (the simulator always passes
one), arrivals draw from their own stream and consume a fixed amount of it per tick whatever
the levers did: the count is the Poisson quantile of one uniform, and a fixed list of
candidate traders (size, side, leverage) is drawn every tick, of which the first ``count``
arrive. Two policies run on the same seed therefore meet the same whales at the same minutes,
one policy merely admitting fewer of them when its margins deter demand. Without this, one
extra draw anywhere shifted every later arrival, and a $4M short that arrived under one policy
and not under another decided which of them lost more in a pump (measured: 8 of 8 evaluation
episodes of ``oracle_manipulation`` changed their whales between two margin settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from envs.core import formulas
from envs.core.margin import maintenance_requirement
from envs.core.params import RiskParams
from envs.core.rng import BatchRandom
from envs.core.state import ExchangeState
from envs.core.step import StepEvents
from envs.core.trading import deposit, execute_trades

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

MINUTES_PER_DAY = 1440.0
Z_95 = 1.6448536269514722
"""Standard-normal 95th percentile: a lognormal's p95 is ``median * exp(Z_95 * sigma)``."""
VOLUME_TRADER_FRAC = 0.05
"""Share of open accounts drawn each tick to carry the ordinary volume as round trips."""
FEE_FLOOR_FRAC = 1e-3
"""A zero taker fee counts as ``FEE_FLOOR_FRAC x reference`` in the demand multiplier, since
constant-elasticity demand is infinite at a zero price (with elasticity -0.5 the floor caps
the fee term at 1000**0.5, about 32x)."""
LONG_SHARE_BOUNDS = (0.02, 0.98)
"""Bounds of the long share after the per-tick shift: neither side of the book ever empties."""
DUST_DEBT_USD = 1e-6
"""Negative collateral smaller than this on a flat account is float rounding left by a
liquidation at exactly the bankruptcy price, not bad debt: the account settles it and leaves,
so rounding cannot lock slots for ever."""
IMR_HEADROOM_REL = 1e-9
"""Relative slack on the initial-margin checks the population makes before trading, so an
order that passes in exact arithmetic is never rejected by float rounding."""

_INF = float("inf")
ARRIVAL_CANDIDATE_DEMAND = 4.0
"""Candidates drawn per tick cover a Poisson count at this demand multiplier (plus six
standard deviations): counts beyond it, only at extreme leverage caps, draw more and lose the
coupling for the rest of the episode, never the distribution."""

# name: (low, high, low_open, high_open); every value must also be finite.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "arrival_rate_per_min": (0.0, _INF, False, True),
    "exit_rate_per_day": (0.0, _INF, False, True),
    "long_share": (0.0, 1.0, False, False),
    "mean_notional_usd": (0.0, _INF, True, True),
    "pareto_alpha": (1.0, _INF, True, True),
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
}


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low!r}, {high!r}{')' if high_open else ']'}"


@dataclass(frozen=True)
class PopulationParams:
    """Behaviour of the trader population of one exchange (the same for every exchange).

    Rates are per exchange and per unit of time named in the field; the step scales them by
    its tick length, so one parameter set serves one-minute and one-hour ticks. Values marked
    [E] are estimates, not measurements.

    Attributes:
        arrival_rate_per_min: Mean arrivals of new accounts per minute, a Poisson rate, at the
            reference IMR and taker fee; >= 0. [E]
        exit_rate_per_day: Per-account hazard of closing out and withdrawing, per day; >= 0.
            The default 0.5 gives a mean holding time of two days. [E]
        long_share: Probability that a new position is long, in [0, 1]. The step adds its
            ``long_share_shift`` and clips the result to ``LONG_SHARE_BOUNDS``.
        mean_notional_usd: Mean notional of a new position, > 0. Sizes are Pareto with index
            ``pareto_alpha`` and this mean, so a few whales hold much of the open interest.
        pareto_alpha: Pareto tail index of sizes, > 1 (the mean is finite only above 1); 1.5
            as in :func:`envs.core.synthetic.synthetic_book`.
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
    """

    arrival_rate_per_min: float = 2.0
    exit_rate_per_day: float = 0.5
    long_share: float = 0.5
    mean_notional_usd: float = 20_000.0
    pareto_alpha: float = 1.5
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
        if self.leverage_p95 < self.leverage_median:
            raise ValueError(
                f"PopulationParams.leverage_p95 must be >= leverage_median "
                f"({self.leverage_median!r}), got {self.leverage_p95!r}"
            )
        if self.top_up_share + self.reduce_share > 1.0:
            raise ValueError(
                f"PopulationParams.reduce_share must be <= 1 - top_up_share "
                f"({1.0 - self.top_up_share!r}), got {self.reduce_share!r}"
            )

    @property
    def leverage_sigma(self) -> float:
        """Lognormal sigma of leverage, ``ln(p95 / median) / Z_95``."""
        return math.log(self.leverage_p95 / self.leverage_median) / Z_95


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

    def as_dict(self) -> dict[str, FloatArray | IntArray]:
        """Field name to array."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COUNT_FIELDS = ("arrivals", "exits", "top_ups", "reductions")  # int64; the rest are USD
_USD_FIELDS = tuple(f.name for f in fields(PopulationEvents) if f.name not in _COUNT_FIELDS)


_RISK_FIELDS = tuple(f.name for f in fields(RiskParams) if f.name not in ("fallback", "tiers"))


def _poisson_quantile(u: FloatArray, lam: FloatArray) -> IntArray:
    """Smallest ``k`` with ``P(Poisson(lam) <= k) > u``, per element (vectorised).

    The pmf is built by its recurrence ``p_k = p_(k-1) lam / k`` in log space out to
    ``lam + 12 sqrt(lam) + 20`` (beyond it the tail is below 1e-30).
    """
    lam = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)
    u = np.asarray(u, dtype=np.float64)
    k_max = int(np.ceil((lam + 12.0 * np.sqrt(lam) + 20.0).max(initial=20.0)))
    k = np.arange(k_max + 1, dtype=np.float64)
    log_lam = np.log(np.where(lam > 0.0, lam, 1.0))[:, None]  # lam = 0: the other branch
    log_pmf = np.where(
        lam[:, None] > 0.0,
        k * log_lam - lam[:, None] - np.cumsum(np.log(np.maximum(k, 1.0)))[None, :],
        np.where(k == 0.0, 0.0, -np.inf)[None, :],
    )
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    return np.asarray((cdf <= u[:, None]).sum(axis=1), dtype=np.int64).clip(max=k_max)


def _rows_risk(risk: RiskParams, env: IntArray) -> RiskParams:
    """``risk`` with every per-exchange array indexed by ``env`` (one entry per packed row)."""
    if not any(np.ndim(getattr(risk, name)) == 1 for name in _RISK_FIELDS):
        return risk
    return risk.take(env)


class _Subset:
    """A few accounts of a batch packed into a narrow state, one row per account.

    ``execute_trades`` and ``deposit`` work on whole ``(n_envs, n_accounts)`` arrays; calling
    them on the full book for the handful of accounts that act in a tick would cost a dozen
    passes over every account. The packed state has shape ``(k, 1)`` for ``k`` selected
    accounts (in ``flat`` order, so grouped by exchange): account fields are copies, the
    exchange-level arrays start at zero per row, and the risk parameters and marks are those
    of each row's exchange. :meth:`write_back` copies the accounts back and adds each row's
    exchange-level changes (fees, the fund, the counterparty, deposits) to its exchange with
    ``bincount``: a sum over that exchange's accounts alone, in a fixed order, so a batch books
    exactly what each of its exchanges would book alone (a row padded to the batch's widest
    exchange would round differently).
    """

    def __init__(self, state: ExchangeState, flat: IntArray, risk: RiskParams) -> None:
        n_envs, n_acc = state.size.shape
        self.flat = flat
        self.env = np.asarray(flat // n_acc, dtype=np.int64)
        self.acc = np.asarray(flat % n_acc, dtype=np.int64)
        self.n_envs = n_envs
        self.risk = _rows_risk(risk, self.env)
        k = flat.size
        parts: dict[str, FloatArray] = {}
        for f in fields(ExchangeState):  # a dozen fields, not accounts
            arr = getattr(state, f.name)
            parts[f.name] = arr[self.env, self.acc][:, None] if arr.ndim == 2 else np.zeros(k)
        self.state = ExchangeState(**parts)
        self.fees = StepEvents.zeros(k)  # execute_trades books each row's fees here

    def pack(self, values: ArrayLike) -> FloatArray:
        """Per-account values (in ``flat`` order) as a ``(k, 1)`` column."""
        return np.asarray(np.broadcast_to(values, self.env.shape), dtype=np.float64)[:, None]

    @staticmethod
    def unpack(packed: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The selected accounts' entries of a packed array, in ``flat`` order."""
        return packed[:, 0]

    def per_env_sum(self, values: ArrayLike) -> FloatArray:
        """Sum of per-account values (in ``flat`` order) per exchange, in that order."""
        w = np.asarray(values, dtype=np.float64)
        return np.bincount(self.env, weights=w, minlength=self.n_envs).astype(np.float64)

    def per_env_count(self, mask: BoolArray) -> IntArray:
        """Number of selected accounts per exchange where ``mask`` (in ``flat`` order)."""
        return np.bincount(self.env[mask], minlength=self.n_envs).astype(np.int64)

    def write_back(self, state: ExchangeState, fees: StepEvents) -> None:
        """Copy the accounts into ``state``; add the rows' exchange-level changes and fees."""
        for f in fields(ExchangeState):
            arr = getattr(self.state, f.name)
            if arr.ndim == 2:
                getattr(state, f.name)[self.env, self.acc] = self.unpack(arr)
            elif arr.any():
                getattr(state, f.name)[...] += self.per_env_sum(arr)
        fees.trading_fees_usd += self.per_env_sum(self.fees.trading_fees_usd)
        fees.fund_trading_fee_income_usd += self.per_env_sum(self.fees.fund_trading_fee_income_usd)


def _per_env(name: str, value: ArrayLike, n_envs: int, low: float, low_open: bool) -> FloatArray:
    """``value`` broadcast to ``(n_envs,)``, checked finite and above ``low``."""
    arr = np.asarray(value, dtype=np.float64)
    try:
        out = np.broadcast_to(arr, (n_envs,))
    except ValueError:
        raise ValueError(
            f"{name} must be a float or an (n_envs,) = ({n_envs},) array, got shape {arr.shape}"
        ) from None
    bad = ~np.isfinite(out) | ((out <= low) if low_open else (out < low))
    if bad.any():
        bound = f"> {low!r}" if low_open else f">= {low!r}"
        raise ValueError(f"{name} must be finite and {bound}, got {out[bad][0]!r}")
    return np.asarray(out, dtype=np.float64)


class TraderPopulation:
    """Draws, moves and retires the accounts of a batch of exchanges, all vectorised.

    The population holds no state of its own: accounts live in the
    :class:`~envs.core.state.ExchangeState` and every random draw comes from the
    :class:`~envs.core.rng.BatchRandom` passed in, exchange ``e``'s from generator ``e`` only,
    so two runs with the same seeds are identical and each exchange of a batch runs exactly as
    it would alone with its seed.
    """

    def __init__(self, params: PopulationParams) -> None:
        """Bind the behaviour parameters (the population keeps no other state).

        Args:
            params: Behaviour of the population.
        """
        self.params = params

    # ---- distributions -------------------------------------------------------------------

    def demand_multiplier(self, risk: RiskParams, n_envs: int) -> FloatArray:
        """Arrival and volume multiplier per exchange from its IMR and taker fee.

        Constant-elasticity demand: ``(imr / ref_imr) ** imr_elasticity x (fee / ref_fee) **
        fee_elasticity``, 1 at the reference parameters. A zero fee is floored at
        ``FEE_FLOOR_FRAC x ref_fee`` (demand would otherwise be infinite).

        Returns:
            ``(n_envs,)`` multipliers, > 0.
        """
        p = self.params
        imr = risk.per_env("imr", n_envs)
        fee = np.maximum(
            risk.per_env("taker_fee_rate", n_envs), FEE_FLOOR_FRAC * p.reference_taker_fee_rate
        )
        mult = (imr / p.reference_imr) ** p.imr_elasticity * (
            fee / p.reference_taker_fee_rate
        ) ** p.fee_elasticity
        return np.asarray(mult, dtype=np.float64)

    def draw_leverage(
        self,
        rng: np.random.Generator,
        shape: int | tuple[int, ...],
        max_leverage: ArrayLike = _INF,
        leverage_mult: ArrayLike = 1.0,
    ) -> FloatArray:
        """Leverage of new positions: lognormal x ``leverage_mult``, clipped to [1, max].

        Args:
            rng: Random generator (one exchange's: batched callers draw per exchange).
            shape: Output shape.
            max_leverage: Venue maximum ``1 / imr``, broadcastable to ``shape`` (>= 1).
            leverage_mult: Leverage build-up factor, broadcastable to ``shape``.
        """
        p = self.params
        draw = rng.lognormal(math.log(p.leverage_median), p.leverage_sigma, shape)
        lev = np.minimum(np.maximum(draw * np.asarray(leverage_mult), 1.0), max_leverage)
        return np.asarray(lev, dtype=np.float64)

    def draw_new_accounts(
        self,
        rng: np.random.Generator,
        shape: int | tuple[int, ...],
        long_share: ArrayLike,
        max_leverage: ArrayLike,
        leverage_mult: ArrayLike = 1.0,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Notional, side and leverage of new positions.

        Args:
            rng: Random generator (draws, in order: notional, side, leverage); batched
                callers pass each exchange's own generator for that exchange's accounts.
            shape: Output shape.
            long_share: Probability of a long, broadcastable to ``shape``.
            max_leverage: Venue maximum ``1 / imr``, broadcastable to ``shape``.
            leverage_mult: Leverage build-up factor, broadcastable to ``shape``.

        Returns:
            ``(notional_usd, side, leverage)``: Pareto notional with mean
            ``mean_notional_usd``, side +1 (long) or -1, leverage from :meth:`draw_leverage`.
        """
        p = self.params
        alpha = p.pareto_alpha
        scale_usd = p.mean_notional_usd * (alpha - 1.0) / alpha  # Pareto minimum
        notional = (rng.pareto(alpha, shape) + 1.0) * scale_usd
        side = np.where(rng.random(shape) < np.asarray(long_share, dtype=np.float64), 1.0, -1.0)
        leverage = self.draw_leverage(rng, shape, max_leverage, leverage_mult)
        return np.asarray(notional, dtype=np.float64), side, leverage

    def coupled_candidates(
        self,
        rng: BatchRandom,
        lam: FloatArray,
        lam_ref: FloatArray,
        long_share: FloatArray,
        max_leverage: FloatArray,
        leverage_mult: FloatArray,
    ) -> tuple[IntArray, tuple[FloatArray, FloatArray, FloatArray]]:
        """This tick's arrival count and candidate traders, from a fixed amount of stream.

        Exchange ``e`` draws ``1 + 4 K_e`` uniforms, ``K_e`` set by the policy-free rate
        ``lam_ref[e]`` (the demand at reference levers, see ``ARRIVAL_CANDIDATE_DEMAND``):
        the count is the Poisson(``lam[e]``) quantile of the first, and candidate ``k``'s
        notional (Pareto, by its inverse CDF), side and leverage (lognormal, Box-Muller) come
        from the others. So the same seed gives the same candidates whatever ``lam`` is; only
        a count above ``K_e`` draws more.

        Returns:
            ``(count, (notional_usd, side, leverage))``, the candidates as ``(n_envs, K)``
            arrays padded with zeros past each exchange's own ``K_e``.
        """
        p = self.params
        lam = np.asarray(lam, dtype=np.float64)
        scaled = ARRIVAL_CANDIDATE_DEMAND * np.asarray(lam_ref, dtype=np.float64)
        k_env = np.ceil(scaled + 6.0 * np.sqrt(scaled) + 6.0).astype(np.int64)
        first = [g.random(1 + 4 * int(k)) for g, k in zip(rng.generators, k_env, strict=True)]
        count = _poisson_quantile(np.array([u[0] for u in first]), lam)
        extra = np.maximum(count - k_env, 0)
        width = int(np.maximum(k_env, count).max(initial=1))
        u = np.full((len(first), 4, width), 0.5)
        for e, (row, k) in enumerate(zip(first, k_env, strict=True)):
            u[e, :, :k] = row[1:].reshape(4, int(k))
            if extra[e]:  # a count beyond the candidates: more draws, same distribution
                u[e, :, k : k + extra[e]] = rng.generators[e].random((4, int(extra[e])))
        alpha = p.pareto_alpha
        scale_usd = p.mean_notional_usd * (alpha - 1.0) / alpha
        notional = scale_usd * (1.0 - u[:, 0]) ** (-1.0 / alpha)
        side = np.where(u[:, 1] < np.asarray(long_share)[:, None], 1.0, -1.0)
        z = np.sqrt(-2.0 * np.log1p(-u[:, 2])) * np.cos(2.0 * math.pi * u[:, 3])
        draw = np.exp(math.log(p.leverage_median) + p.leverage_sigma * z)
        lev = np.minimum(
            np.maximum(draw * np.asarray(leverage_mult)[:, None], 1.0),
            np.asarray(max_leverage)[:, None],
        )
        return count, (notional, side, lev)

    # ---- the book at reset ---------------------------------------------------------------

    def initial_state(
        self,
        rng: BatchRandom,
        n_envs: int,
        n_accounts: int,
        price: ArrayLike,
        risk: RiskParams,
        fund_usd: ArrayLike,
        fill_frac: float = 0.8,
    ) -> ExchangeState:
        """A batch whose first ``fill_frac`` of slots hold accounts drawn like new arrivals.

        Each account holds a position opened at ``price`` against the counterparty (no
        long/short balance is imposed: sides follow ``long_share``) and collateral
        ``notional x (1 / leverage + fee rate)``: what an arrival keeps after paying its
        opening fee, so the book looks as if it had been built by :meth:`step`. The remaining
        slots are empty (size, collateral and entry 0), ready for arrivals. Row ``e`` is drawn
        from exchange ``e``'s generator alone (:meth:`initial_row`).

        Args:
            rng: One generator per exchange.
            n_envs: Exchanges in the batch; must equal ``rng.n_envs``.
            n_accounts: Account slots per exchange.
            price: Entry price, scalar or ``(n_envs,)``, > 0.
            risk: Risk parameters (``imr`` caps leverage, ``taker_fee_rate`` sizes collateral).
            fund_usd: Initial insurance fund, scalar or ``(n_envs,)``.
            fill_frac: Share of slots filled, in [0, 1].
        """
        if not 0.0 <= fill_frac <= 1.0:
            raise ValueError(f"fill_frac must lie in [0, 1], got {fill_frac!r}")
        if n_envs != rng.n_envs:
            raise ValueError(f"n_envs ({n_envs}) must equal rng.n_envs ({rng.n_envs})")
        px = _per_env("price", price, n_envs, 0.0, True)
        max_lev = 1.0 / risk.per_env("imr", n_envs)
        fee = risk.per_env("taker_fee_rate", n_envs)
        rows = [
            self.initial_row(g, n_accounts, px[e], max_lev[e], fee[e], fill_frac)
            for e, g in enumerate(rng.generators)  # exchanges, not accounts
        ]
        shape = (n_envs, n_accounts)
        collateral, size, entry = (
            np.stack([r[i] for r in rows]) if rows else np.zeros(shape) for i in range(3)
        )
        return ExchangeState.create(collateral, size, entry, fund_usd)

    def initial_row(
        self,
        rng: np.random.Generator,
        n_accounts: int,
        price: float,
        max_leverage: float,
        taker_fee_rate: float,
        fill_frac: float = 0.8,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """One exchange's initial accounts, as :meth:`initial_state` lays out each row.

        Args:
            rng: That exchange's generator (draws notional, side, leverage of
                ``round(fill_frac x n_accounts)`` accounts, as :meth:`draw_new_accounts`).
            n_accounts: Account slots.
            price: Entry price, > 0.
            max_leverage: Venue maximum ``1 / imr``.
            taker_fee_rate: Opening fee rate kept out of the collateral.
            fill_frac: Share of slots filled, in [0, 1].

        Returns:
            ``(collateral_usd, size, entry_price)``, each ``(n_accounts,)``.
        """
        k = round(fill_frac * n_accounts)
        notional, side, lev = self.draw_new_accounts(rng, k, self.params.long_share, max_leverage)
        collateral, size, entry = np.zeros(n_accounts), np.zeros(n_accounts), np.zeros(n_accounts)
        collateral[:k] = notional * (1.0 / lev + taker_fee_rate)
        size[:k] = side * notional / price
        entry[:k] = price
        return collateral, size, entry

    # ---- one tick ------------------------------------------------------------------------

    def step(
        self,
        rng: BatchRandom,
        state: ExchangeState,
        risk: RiskParams,
        mark: ArrayLike,
        tick_minutes: float,
        *,
        arrival_mult: FloatArray | float = 1.0,
        leverage_mult: FloatArray | float = 1.0,
        long_share_shift: FloatArray | float = 0.0,
        volume_mult: FloatArray | float = 1.0,
        arrival_rng: BatchRandom | None = None,
    ) -> PopulationEvents:
        """One tick of trader behaviour, in place: exits, reactions, arrivals, volume.

        The order matters: exits free slots that arrivals of the same tick can take;
        reactions act on the book the margin engine just left; the volume is computed on the
        open interest after arrivals. All trades execute at ``mark`` against the
        counterparty and pay the taker fee.

        Args:
            rng: One generator per exchange (the only source of randomness); exchange ``e``
                draws from generator ``e`` only. ``rng.n_envs`` must equal ``state.n_envs``.
            state: Batch state, updated in place.
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
            arrival_rng: One generator per exchange for arrivals alone (common random
                numbers, see the module docstring); ``None`` draws them from ``rng``.

        Returns:
            The tick's events per exchange.
        """
        n_envs = state.n_envs
        if rng.n_envs != n_envs:
            raise ValueError(f"rng.n_envs ({rng.n_envs}) must equal state.n_envs ({n_envs})")
        m = _per_env("mark", mark, n_envs, 0.0, True)
        if not (math.isfinite(tick_minutes) and tick_minutes > 0.0):
            raise ValueError(f"tick_minutes must be finite and > 0, got {tick_minutes!r}")
        arrivals = _per_env("arrival_mult", arrival_mult, n_envs, 0.0, False)
        lev_mult = _per_env("leverage_mult", leverage_mult, n_envs, 0.0, True)
        shift = _per_env("long_share_shift", long_share_shift, n_envs, -_INF, True)
        volume = _per_env("volume_mult", volume_mult, n_envs, 0.0, False)

        ev = PopulationEvents.zeros(n_envs)
        fees = StepEvents.zeros(n_envs)  # execute_trades books the fee totals here
        demand = self.demand_multiplier(risk, n_envs)
        self._exits(rng, state, risk, m, tick_minutes, ev, fees)
        self._near_liquidation(rng, state, risk, m, tick_minutes, ev, fees)
        if arrival_rng is not None and arrival_rng.n_envs != n_envs:
            raise ValueError(
                f"arrival_rng.n_envs ({arrival_rng.n_envs}) must equal state.n_envs ({n_envs})"
            )
        self._arrivals(
            rng,
            state,
            risk,
            m,
            tick_minutes,
            demand * arrivals,
            lev_mult,
            shift,
            ev,
            fees,
            arrival_rng=arrival_rng,
            base_rate_mult=arrivals,
        )
        self._volume(rng, state, risk, m, tick_minutes, demand * volume, ev, fees)
        ev.trading_fees_usd = fees.trading_fees_usd
        ev.fund_trading_fee_income_usd = fees.fund_trading_fee_income_usd
        return ev

    # ---- the four stages -----------------------------------------------------------------

    @staticmethod
    def _trade(
        sub: _Subset,
        trade: FloatArray,
        mark: FloatArray,
        ev: PopulationEvents,
    ) -> BoolArray:
        """``execute_trades`` at mark on the packed accounts; books volume. Returns rejections.

        ``mark`` is per exchange; fees go to ``sub.fees`` until :meth:`_Subset.write_back`.
        A zero order leaves its account exactly as it was: ``execute_trades`` recomputes every
        entry price (``q x e / q`` for an untouched row, which can round), and whether it runs
        at all depends on the other rows, so without the restore an exchange's entries would
        depend on what the rest of the batch traded.
        """
        if not trade.any():
            return np.zeros(trade.shape, dtype=np.bool_)
        m = mark[sub.env]
        entry = sub.state.entry_price.copy()
        rejected = execute_trades(sub.state, sub.risk, trade, m, m, sub.fees)
        np.copyto(sub.state.entry_price, entry, where=trade == 0.0)
        ev.volume_usd += sub.per_env_sum(sub.unpack(np.where(rejected, 0.0, np.abs(trade))) * m)
        return rejected

    @staticmethod
    def _sample_slots(rng: np.random.Generator, n_slots: int, prob: float) -> IntArray:
        """Sorted slots of ``range(n_slots)``, each independently with probability ``prob``.

        The drawn slots are found by geometric gaps between successes (one draw per success,
        not per slot), so the cost grows with the number drawn rather than with the slots.
        """
        if prob < 1e-6:  # gaps would be huge: a binomial count and a draw of that many slots
            k = int(rng.binomial(n_slots, prob))
            return np.sort(rng.choice(n_slots, size=k, replace=False, shuffle=False))
        mean = n_slots * prob
        batch = int(mean + 6.0 * math.sqrt(mean) + 16.0)
        ends = np.cumsum(rng.geometric(prob, batch)) - 1
        while ends[-1] < n_slots - 1:  # more than mean + 6 sd successes: almost never runs
            ends = np.concatenate([ends, ends[-1] + np.cumsum(rng.geometric(prob, batch))])
        return np.asarray(ends[ends < n_slots], dtype=np.int64)

    @classmethod
    def _sample_open(
        cls,
        rng: BatchRandom,
        state: ExchangeState,
        prob: float,
        active: BoolArray | None = None,
    ) -> IntArray:
        """Open accounts, each independently with probability ``prob``, as sorted flat indices.

        Per exchange (only where ``active``, default all), every slot is drawn with probability
        ``prob`` from that exchange's generator (:meth:`_sample_slots`) and the empty ones are
        dropped, which has the law of one Bernoulli per open account. An inactive exchange
        draws nothing, as it would alone. The loop runs over exchanges; the cost of each grows
        with the number drawn.
        """
        n_acc = state.n_accounts
        if prob <= 0.0 or n_acc == 0:
            return np.zeros(0, dtype=np.int64)
        parts = []
        for e, g in enumerate(rng.generators):  # exchanges, not accounts
            if active is not None and not active[e]:
                continue
            pick = cls._sample_slots(g, n_acc, prob)
            parts.append(pick[state.size[e, pick] != 0.0] + e * n_acc)
        return np.asarray(np.concatenate(parts) if parts else np.zeros(0), dtype=np.int64)

    def _exits(
        self,
        rng: BatchRandom,
        state: ExchangeState,
        risk: RiskParams,
        mark: FloatArray,
        tick_minutes: float,
        ev: PopulationEvents,
        fees: StepEvents,
    ) -> None:
        """Hazard exits close out and withdraw; flat accounts with money left withdraw too.

        A flat account with negative collateral (bad debt a liquidation could not recover
        from it) keeps its slot: the debt stays on the books, where the ledger counts it.
        Rounding dust below ``DUST_DEBT_USD`` is settled by a deposit instead. An account
        whose equity would not cover its closing fee does not exit (an exchange does not let
        a bankrupt account walk away; the liquidation engine closes it).
        """
        p_exit = -math.expm1(-self.params.exit_rate_per_day * tick_minutes / MINUTES_PER_DAY)
        exiting = self._sample_open(rng, state, p_exit)
        c_all = state.collateral_usd
        idle = np.flatnonzero((state.size == 0.0) & (c_all != 0.0) & (c_all > -DUST_DEBT_USD))
        if exiting.size == 0 and idle.size == 0:
            return
        sub = _Subset(state, np.union1d(exiting, idle).astype(np.int64), risk)
        s = sub.state
        is_exit = np.isin(sub.flat, exiting)
        m = mark[sub.env]
        q = sub.unpack(s.size)
        close_value = sub.unpack(
            formulas.equity(s.collateral_usd, s.size, s.entry_price, m[:, None])
        )
        fee = np.abs(q) * m * risk.per_env("taker_fee_rate", sub.n_envs)[sub.env]
        is_exit &= close_value - fee >= 0.0
        self._trade(sub, sub.pack(np.where(is_exit, -q, 0.0)), mark, ev)
        c = sub.unpack(s.collateral_usd)
        flat_now = sub.unpack(s.size) == 0.0
        leaves = flat_now & (c > -DUST_DEBT_USD) & ((c != 0.0) | is_exit)
        out = np.where(leaves, c, 0.0)
        deposit(s, sub.pack(-out))
        s.entry_price[leaves, 0] = 0.0
        sub.write_back(state, fees)
        ev.exits += sub.per_env_count(leaves)
        ev.withdrawn_usd += sub.per_env_sum(out)

    def _near_liquidation(
        self,
        rng: BatchRandom,
        state: ExchangeState,
        risk: RiskParams,
        mark: FloatArray,
        tick_minutes: float,
        ev: PopulationEvents,
        fees: StepEvents,
    ) -> None:
        """Accounts close to their maintenance requirement top up, halve, or do nothing.

        One uniform per near account (drawn from its exchange's generator, in account order)
        splits the branches: below ``p x top_up_share`` it tops
        up, below ``p x (top_up_share + reduce_share)`` it halves, otherwise nothing, with
        ``p = min(1, react_rate_per_min x tick)`` the chance it reacts at all.
        """
        p = self.params
        m = mark[:, None]
        eq = formulas.equity(state.collateral_usd, state.size, state.entry_price, m)
        req = maintenance_requirement(np.abs(state.size) * m, risk.column("mmr"), risk.tiers)
        buffer = p.near_liquidation_buffer_frac
        near = np.flatnonzero(eq < (1.0 + buffer) * req)  # and flat accounts in debt:
        n_acc = state.n_accounts
        near = near[state.size[near // n_acc, near % n_acc] != 0.0]  # dropped on few elements
        if near.size == 0:
            return
        p_react = min(1.0, p.react_rate_per_min * tick_minutes)
        u = rng.random_grouped(near // n_acc)
        top = u < p_react * p.top_up_share
        reduce = ~top & (u < p_react * (p.top_up_share + p.reduce_share))
        acting = top | reduce
        if not acting.any():
            return
        eq_flat, req_flat = eq.reshape(-1)[near], req.reshape(-1)[near]
        sub = _Subset(state, near[acting], risk)
        top, reduce = top[acting], reduce[acting]
        amount = np.where(top, (1.0 + 2.0 * buffer) * req_flat[acting] - eq_flat[acting], 0.0)
        deposit(sub.state, sub.pack(amount))
        half = np.where(reduce, -0.5 * sub.unpack(sub.state.size), 0.0)
        self._trade(sub, sub.pack(half), mark, ev)
        sub.write_back(state, fees)
        ev.top_ups += sub.per_env_count(top)
        ev.reductions += sub.per_env_count(reduce)
        ev.top_up_usd += sub.per_env_sum(amount)

    def _arrivals(
        self,
        rng: BatchRandom,
        state: ExchangeState,
        risk: RiskParams,
        mark: FloatArray,
        tick_minutes: float,
        rate_mult: FloatArray,
        leverage_mult: FloatArray,
        long_share_shift: FloatArray,
        ev: PopulationEvents,
        fees: StepEvents,
        *,
        arrival_rng: BatchRandom | None = None,
        base_rate_mult: FloatArray | None = None,
    ) -> None:
        """Poisson arrivals take the first empty slots, deposit and open at mark.

        Collateral is ``notional x (1 / leverage + 2 x fee rate)``: the initial margin plus
        the opening and the eventual closing fee, so an order at the venue's maximum leverage
        still passes the initial-margin check after its fee (the margin part carries a
        ``1 + IMR_HEADROOM_REL`` pad against rounding, which matters at a zero fee). Arrivals
        beyond the free slots are dropped; an order the check rejects (none in exact
        arithmetic) withdraws its collateral again and is not counted.
        """
        p = self.params
        lam = p.arrival_rate_per_min * tick_minutes * rate_mult
        long_share = np.clip(p.long_share + long_share_shift, *LONG_SHARE_BOUNDS)
        max_lev_env = 1.0 / risk.per_env("imr", state.n_envs)
        coupled: tuple[FloatArray, FloatArray, FloatArray] | None = None
        if arrival_rng is not None:
            # The candidate list is sized by the rate without the levers' demand effect, so
            # its length (the stream consumed) does not depend on the policy.
            ref_mult = np.ones(state.n_envs) if base_rate_mult is None else base_rate_mult
            lam_ref = p.arrival_rate_per_min * tick_minutes * ref_mult
            count, coupled = self.coupled_candidates(
                arrival_rng, lam, lam_ref, long_share, max_lev_env, leverage_mult
            )
        else:
            count = rng.poisson(lam)  # one count per exchange, from its generator
        if not count.any():
            return
        empty = np.flatnonzero((state.size == 0.0) & (state.collateral_usd == 0.0))
        env = empty // state.n_accounts
        per_env = np.bincount(env, minlength=state.n_envs)
        rank = np.arange(empty.size) - (np.cumsum(per_env) - per_env)[env]  # 0 = first empty
        new = np.asarray(empty[rank < count[env]], dtype=np.int64)
        if new.size == 0:
            return
        sub = _Subset(state, new, risk)
        env = sub.env
        counts = np.bincount(env, minlength=sub.n_envs)
        if coupled is not None:  # the first arrivals of each exchange's candidate list
            notional, side, lev = (
                np.concatenate([c[e, :k] for e, k in enumerate(counts) if k > 0]) for c in coupled
            )
        else:
            drawn = [  # each exchange's new accounts from its own generator, as alone
                self.draw_new_accounts(g, int(c), long_share[e], max_lev_env[e], leverage_mult[e])
                for e, (g, c) in enumerate(zip(rng.generators, counts, strict=True))
                if c > 0
            ]
            notional, side, lev = (np.concatenate([d[i] for d in drawn]) for i in range(3))
        fee = risk.per_env("taker_fee_rate", sub.n_envs)[env]
        collateral = notional * (1.0 / lev * (1.0 + IMR_HEADROOM_REL) + 2.0 * fee)
        deposit(sub.state, sub.pack(collateral))
        order = sub.pack(side * notional / mark[env])
        rejected = sub.unpack(self._trade(sub, order, mark, ev))
        if rejected.any():
            deposit(sub.state, sub.pack(np.where(rejected, -collateral, 0.0)))
        sub.write_back(state, fees)
        ok = ~rejected
        ev.arrivals += sub.per_env_count(ok)
        ev.new_collateral_usd += sub.per_env_sum(np.where(ok, collateral, 0.0))
        ev.new_notional_usd += sub.per_env_sum(np.where(ok, notional, 0.0))

    def _volume(
        self,
        rng: BatchRandom,
        state: ExchangeState,
        risk: RiskParams,
        mark: FloatArray,
        tick_minutes: float,
        rate_mult: FloatArray,
        ev: PopulationEvents,
        fees: StepEvents,
    ) -> None:
        """Ordinary volume as round trips (reduce by ``x``, then re-open ``x``) at mark.

        Target notional ``turnover x OI x tick / 1 day x rate_mult``, with open interest
        ``0.5 x sum |size| x mark``. About ``VOLUME_TRADER_FRAC`` of open accounts are drawn;
        those whose equity covers the initial margin of their current position plus both
        legs' fees (so the re-opening leg cannot be rejected and positions end unchanged)
        each trade ``x = s |size|``, with ``s`` set so the notional matches the target. ``s``
        is capped at 1 (a full close and re-open), so the target is missed only when the
        drawn accounts are too few or too levered to carry it. An exchange with no target
        draws no accounts.
        """
        turnover = self.params.turnover_per_day * tick_minutes / MINUTES_PER_DAY
        oi_usd = 0.5 * np.abs(state.size).sum(axis=1) * mark
        target_usd = turnover * oi_usd * rate_mult
        active = target_usd > 0.0
        if not active.any():
            return
        chosen = self._sample_open(rng, state, VOLUME_TRADER_FRAC, active)
        if chosen.size == 0:
            return
        env = chosen // state.n_accounts
        acc = chosen % state.n_accounts
        q = state.size[env, acc]
        m = mark[env]
        eq = formulas.equity(state.collateral_usd[env, acc], q, state.entry_price[env, acc], m)
        imr = risk.per_env("imr", state.n_envs)[env]
        fee = risk.per_env("taker_fee_rate", state.n_envs)[env]
        notional = np.abs(q) * m
        eligible = eq >= (imr + 2.0 * fee) * notional * (1.0 + IMR_HEADROOM_REL)
        if not eligible.any():
            return
        sub = _Subset(state, chosen[eligible], risk)
        q = sub.unpack(sub.state.size)
        room_usd = 2.0 * sub.per_env_sum(notional[eligible])  # traded if every x = |size|
        scale = np.divide(target_usd, room_usd, out=np.zeros_like(room_usd), where=room_usd > 0)
        x = np.minimum(scale, 1.0)[sub.env] * np.abs(q)
        first = sub.pack(-np.sign(q) * x)
        self._trade(sub, first, mark, ev)  # a reduction: never rejected
        self._trade(sub, -first, mark, ev)
        sub.write_back(state, fees)
