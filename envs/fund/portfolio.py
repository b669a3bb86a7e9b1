"""The insurance fund as a portfolio of four asset buckets, with costs and liquidity limits.

A controller may hold the fund in more than one asset. Each bucket is there for the risk it
carries, so the controller has to trade return against the fund being there in a crash:

- ``stable`` (index 0): cash in a stablecoin. No yield, no price risk, fully liquid. It is the
  bucket that pays shortfalls first and the one every inflow, fee and option payoff lands in.
- ``yield`` (index 1): lent out in a lending market at ``yield_apr``. It earns, but it carries
  *liquidity* risk: per tick at most ``yield_withdraw_frac_normal`` of it can be withdrawn, and
  only ``yield_withdraw_frac_stressed`` under stress, like a lending pool whose utilisation hits
  100% when everyone withdraws at once, which is exactly when the fund needs it.
- ``volatile`` (index 2): held in units of the exchange's underlying (the exchange's own token,
  or the traded coin). Its USD value moves with the price, so it carries *wrong-way* risk: it
  loses value in the crash that creates the shortfalls it must pay. Selling it costs
  ``volatile_sell_slippage_frac``.
- ``hedge`` (index 3): out-of-the-money puts on the underlying (strike ``put_moneyness`` x the
  price at purchase, tenor ``put_tenor_days``). They cost premium (theta) in calm markets and
  gain in a crash. Their risk is basis and cost: the premium and the ``option_spread_frac``
  paid on every purchase and sale. At expiry they pay ``max(K - S, 0)`` into ``stable``; a
  new series is bought only by :func:`rebalance`. The hedge's weight is a premium budget: the
  bucket is sized by the larger of its mark and the premium committed to the series held
  (``put_cost_usd``), so a series is bought once, topped up when the weight rises above that
  size and sold down only when the weight falls below its mark, never re-bought at every
  decision (see :func:`rebalance`).

Options are bought at the simulated market's quote, :func:`put_price`: Black-Scholes with zero
rates from the *current* volatility (the ``vol_annual`` each call carries, floored at
``PUT_VOL_FLOOR_ANNUAL``) plus a crash premium, the probability of at least one crash before
expiry at the rate the fund's world produces them (``AllocationParams.put_crash_rate_per_year``)
times the put's payoff after a crash of ``PUT_CRASH_DROP_FRAC``. Held puts are *marked* at the
Black-Scholes term alone (:func:`put_mark`), so the crash premium is expensed on purchase like
an insurance policy's cost (booked with the other costs in ``fees_paid_usd``), and a crash pays
through the put's intrinsic value. Why: with lognormal tails only, a 15%-out-of-the-money weekly
put cost a few dollars on a $100k coin while the training sampler crashes most days, and a random
allocation to ``hedge`` returned hundreds of times the fund (measured: 1.8e6 bps of open interest
in one evaluation episode); marking the premium as well made every crash re-price another one
on the fallen spot, still a free lunch (+216 bps of open interest a day over an unhedged fund).
Now a hedge bought at random loses money on the training distribution and pays when a controller
times it better than the crash rate the market prices (precursors), which is the skill to learn.
A volatility spike raises the marks of the puts held and the premium of new ones.

Accounting convention. Every function keeps this identity, per exchange, up to rounding::

    value_usd(mark) == initial_value_usd + external_pnl_usd + received_usd + injected_usd
                       - paid_usd

``value_usd`` is the portfolio's mark-to-market value at the last price and volatility it
saw (``mark_price``, ``mark_vol_annual``). ``external_pnl_usd`` is the cumulative value
gained from outside the fund: yield, price moves of ``volatile``, option marks and payoffs,
*minus* every cost paid to the outside (rebalance fees, option spreads, sale slippage). Costs
are thus booked twice on purpose: as negative ``external_pnl_usd`` (so the identity closes)
and, as positive numbers, in ``fees_paid_usd`` (so the cost of managing the fund can be read
on its own). ``received_usd`` and ``paid_usd`` are the cumulative inflows and shortfall
payments; ``injected_usd`` the venue's own top-ups after the fund ran dry (:func:`inject`).
Every function that takes a ``price`` first re-marks the portfolio to it (booking the
revaluation to ``external_pnl_usd``) and then moves money at that mark.

A fund may hold several listed assets at once (a multi-market exchange's): its asset fields
then carry an asset axis, ``(n_envs, K)``, one put series per asset (:class:`FundPortfolio`,
"Several assets"; :func:`rebalance`'s ``basket``); a one-asset fund's arithmetic is unchanged.

All arrays are float64, batch-first ``(n_envs,)``; there is no Python loop over exchanges
(the only element-wise calls are the C library's ``log`` and ``erfc`` inside
:func:`black_scholes_put`, :mod:`fundgym.envs.libm`, which the compiled twins in
:mod:`fundgym.envs.fund.kernels` call too, so both agree to the bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs import libm

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

BUCKETS: tuple[str, ...] = ("stable", "yield", "volatile", "hedge")
"""Bucket names in the column order of weight arrays."""

STABLE, YIELD, VOLATILE, HEDGE = 0, 1, 2, 3
MIN_PUT_PREMIUM_FRAC = 1e-6
"""Puts cheaper than this fraction of spot are not bought (they would need absurd sizes)."""
MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0
"""A 365-day year: APRs and option tenors both use it."""
PUT_VOL_FLOOR_ANNUAL = 0.4
"""Lowest implied volatility the option market quotes (BTC's 1-week implied rarely trades
below ~35-40%, even when realised volatility is lower)."""
PUT_CRASH_RATE_PER_YEAR = 0.7 * 365.0
"""Crashes per year the option market prices by default (``AllocationParams``): the training
sampler's default rate (``crash_prob`` 0.7 per one-day episode), so hedging is no free lunch in
the world the agent trains in. The environments price each world's own rate
(:func:`world_put_crash_rate_per_year`)."""
REAL_WORLD_CRASH_RATE_PER_YEAR = 2.0
"""**[E]** Crashes of about ``PUT_CRASH_DROP_FRAC`` a year that a real option market prices:
BTC fell 25-50% within days about five times in 2020-2025 (12 Mar 2020, 19 May 2021, LUNA in
May 2022 and FTX in November, in the reference's crashes.md; June 2022, [E]), 0.8 a year, and
option markets charge more than the realised rate for crash protection (the put skew's risk
premium), put here at 2.5x. Only a rough anchor: no option prices are in the reference."""
MAX_PUT_CRASH_RATE_PER_YEAR = 36_500.0
"""The most crashes a year a quote may price (100 a day): beyond, every put costs its payoff."""
PUT_CRASH_DROP_FRAC = 0.275
"""Size of the crash the premium prices: the sampler's mean severity (uniform 5%..50%)."""


def world_put_crash_rate_per_year(draw_crash_prob: float | None, episode_minutes: float) -> float:
    """Crashes a year the fund's option market prices: the rate of the world the fund is in.

    Training draws crash with probability ``draw_crash_prob`` per episode of
    ``episode_minutes``, so their option market quotes that rate and a hedge is no free lunch
    where a policy learns. A named scenario (``draw_crash_prob=None``) replays a real or
    realistic market, whose option market priced real crashes:
    :data:`REAL_WORLD_CRASH_RATE_PER_YEAR`. With the training defaults (0.7, one day) this is
    :data:`PUT_CRASH_RATE_PER_YEAR` to the bit.
    """
    if draw_crash_prob is None:
        return REAL_WORLD_CRASH_RATE_PER_YEAR
    return draw_crash_prob * (MINUTES_PER_YEAR / episode_minutes)


EXHAUSTED_FRAC = 1e-9
"""A fund counts as exhausted (:func:`inject_if_exhausted`) when what it could pay is at most
this share of one top-up: a payment capped at the fund's liquid value leaves rounding dust,
not an exact zero, and a fund whose only holding is frozen ``yield`` can pay nothing at all."""

# name: (low, high, low_open, high_open)
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "yield_apr": (0.0, 1.0, False, False),
    "yield_withdraw_frac_normal": (0.0, 1.0, False, False),
    "yield_withdraw_frac_stressed": (0.0, 1.0, False, False),
    "rebalance_fee_bps": (0.0, 1000.0, False, False),
    "volatile_sell_slippage_frac": (0.0, 0.5, False, False),
    "put_moneyness": (0.0, 1.0, True, False),
    "put_tenor_days": (0.0, 365.0, True, False),
    "option_spread_frac": (0.0, 0.5, False, False),
    "put_crash_rate_per_year": (0.0, MAX_PUT_CRASH_RATE_PER_YEAR, False, False),
}


@dataclass(frozen=True)
class AllocationParams:
    """Costs and terms of the fund's buckets, shared by every exchange in the batch.

    Attributes:
        yield_apr: Simple annual rate of the ``yield`` bucket, in [0, 1]; accrued every tick
            as ``yield_usd *= 1 + yield_apr * tick_minutes / 525,600`` (so it compounds per
            tick).
        yield_withdraw_frac_normal: Largest fraction of the ``yield`` bucket that can be
            withdrawn in one call (a pay or a rebalance) when not stressed, in [0, 1].
        yield_withdraw_frac_stressed: The same under stress, in [0, 1] (a frozen pool).
        rebalance_fee_bps: Fee on the USD value moved into or out of the non-stable buckets
            by :func:`rebalance`, in basis points, in [0, 1000].
        volatile_sell_slippage_frac: Fraction of the sold value of ``volatile`` lost to
            slippage, in [0, 0.5]. Buying has no slippage.
        put_moneyness: Strike over spot when puts are bought, in (0, 1].
        put_tenor_days: Tenor of a newly bought put series, in days, in (0, 365].
        option_spread_frac: Fraction of the quote (:func:`put_price`) paid on every purchase,
            and of the mark lost on every sale, of puts, in [0, 0.5].
        put_crash_rate_per_year: Crashes a year the option market prices into its quote
            (:func:`crash_premium`), in [0, 36,500]: the rate of the world the fund lives in,
            so a hedge is neither a free lunch nor a tax there (issue 21, "price puts with the
            fund's actual execution costs"). Default: the training sampler's default rate.
    """

    yield_apr: float = 0.05
    yield_withdraw_frac_normal: float = 1.0
    yield_withdraw_frac_stressed: float = 0.02
    rebalance_fee_bps: float = 10.0
    volatile_sell_slippage_frac: float = 0.005
    put_moneyness: float = 0.85
    put_tenor_days: float = 7.0
    option_spread_frac: float = 0.05
    put_crash_rate_per_year: float = PUT_CRASH_RATE_PER_YEAR

    def __post_init__(self) -> None:
        for f in fields(self):
            low, high, low_open, high_open = _RANGES[f.name]
            value = getattr(self, f.name)
            ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(
                value, bool
            )
            if ok:
                x = float(value)
                ok = math.isfinite(x) and (x > low if low_open else x >= low)
                ok = ok and (x < high if high_open else x <= high)
            if not ok:
                left = ("(" if low_open else "[") + repr(low)
                right = repr(high) + (")" if high_open else "]")
                raise ValueError(
                    f"AllocationParams.{f.name} must be a float in {left}, {right}, got {value!r}"
                )
            object.__setattr__(self, f.name, float(value))

    @property
    def rebalance_fee_frac(self) -> float:
        """The rebalance fee as a fraction of the USD moved."""
        return self.rebalance_fee_bps * 1e-4


# ==== Black-Scholes ====


def _norm_cdf(d: FloatArray) -> FloatArray:
    """Standard normal CDF, accurate in both tails."""
    return 0.5 * libm.erfc(-d / math.sqrt(2.0))


def black_scholes_put(
    spot: ArrayLike, strike: ArrayLike, tenor_years: ArrayLike, vol_annual: ArrayLike
) -> FloatArray:
    """Black-Scholes value of one European put with zero rates and no dividends.

    ``P = K N(-d2) - S N(-d1)``, ``d1 = (ln(S/K) + vol^2 T / 2) / (vol sqrt(T))``,
    ``d2 = d1 - vol sqrt(T)``. Where ``T <= 0``, ``vol <= 0`` (or ``vol sqrt(T) < 1e-12``),
    ``S <= 0`` or ``K <= 0`` the value is the intrinsic ``max(K - S, 0)``. The result is never
    below intrinsic (zero-rate European puts are worth at least that), never NaN, and the
    function raises no floating-point warnings.

    Args:
        spot: Price of the underlying, USD; broadcastable.
        strike: Strike, USD; broadcastable.
        tenor_years: Time to expiry in years; broadcastable.
        vol_annual: Annualised volatility (0.8 = 80%); broadcastable.

    Returns:
        The broadcast shape of the inputs, float64, USD per unit.
    """
    s, k, t, v = np.broadcast_arrays(
        np.asarray(spot, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(tenor_years, dtype=np.float64),
        np.asarray(vol_annual, dtype=np.float64),
    )
    intrinsic = np.maximum(k - s, 0.0)
    sig_sqrt_t = np.sqrt(np.maximum(t, 0.0)) * np.maximum(v, 0.0)
    live = (sig_sqrt_t >= 1e-12) & (s > 0) & (k > 0)
    s_ = np.where(live, s, 1.0)
    k_ = np.where(live, k, 1.0)
    w = np.where(live, sig_sqrt_t, 1.0)
    d1 = np.clip((libm.log(s_ / k_) + 0.5 * w * w) / w, -40.0, 40.0)
    d2 = np.clip(d1 - w, -40.0, 40.0)
    value = k_ * _norm_cdf(-d2) - s_ * _norm_cdf(-d1)
    out: FloatArray = np.where(live, np.maximum(value, intrinsic), intrinsic)
    return out


def put_mark(
    spot: ArrayLike, strike: ArrayLike, tenor_years: ArrayLike, vol_annual: ArrayLike
) -> FloatArray:
    """The value a held put is marked at: Black-Scholes at ``max(vol, PUT_VOL_FLOOR_ANNUAL)``."""
    v = np.maximum(np.asarray(vol_annual, dtype=np.float64), PUT_VOL_FLOOR_ANNUAL)
    return black_scholes_put(spot, strike, tenor_years, v)


def put_price(
    spot: ArrayLike,
    strike: ArrayLike,
    tenor_years: ArrayLike,
    vol_annual: ArrayLike,
    crash_rate_per_year: float = PUT_CRASH_RATE_PER_YEAR,
) -> FloatArray:
    """What the simulated option market charges for one put (see the module docstring).

    ``BS(S, K, T, max(vol, PUT_VOL_FLOOR_ANNUAL)) + (1 - exp(-rate T)) max(K - S (1 - drop), 0)``
    with ``rate = crash_rate_per_year`` and ``drop = PUT_CRASH_DROP_FRAC``: Black-Scholes
    plus a one-jump crash premium (the first term of Merton's jump-diffusion series, with the
    probability of at least one crash in place of the expected count, so the premium stays
    below the post-crash payoff however long the tenor). Never below intrinsic; intrinsic at
    or after expiry.

    Args:
        spot: Price of the underlying, USD; broadcastable.
        strike: Strike, USD; broadcastable.
        tenor_years: Time to expiry in years; broadcastable.
        vol_annual: Current annualised volatility; broadcastable.
        crash_rate_per_year: Crashes a year the quote prices
            (:attr:`AllocationParams.put_crash_rate_per_year`).

    Returns:
        USD per put, the broadcast shape of the inputs.
    """
    s, k, t, v = np.broadcast_arrays(
        np.asarray(spot, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(tenor_years, dtype=np.float64),
        np.asarray(vol_annual, dtype=np.float64),
    )
    t_live = np.maximum(t, 0.0)
    quote = put_mark(s, k, t_live, v) + crash_premium(s, k, t_live, crash_rate_per_year)
    out: FloatArray = np.where(t > 0, quote, np.maximum(k - s, 0.0))
    return out


def crash_premium(
    spot: ArrayLike,
    strike: ArrayLike,
    tenor_years: ArrayLike,
    crash_rate_per_year: float = PUT_CRASH_RATE_PER_YEAR,
) -> FloatArray:
    """The quote's crash term: P(at least one crash before expiry) x the payoff after it.

    The probability is ``1 - exp(-crash_rate_per_year T)``: the rate the option market prices.
    """
    t = np.maximum(np.asarray(tenor_years, dtype=np.float64), 0.0)
    payoff = np.maximum(
        np.asarray(strike, dtype=np.float64)
        - np.asarray(spot, dtype=np.float64) * (1.0 - PUT_CRASH_DROP_FRAC),
        0.0,
    )
    out: FloatArray = -libm.expm1(-crash_rate_per_year * t) * payoff
    return out


# ==== The portfolio ====

# Last put valuation per portfolio object: (input key, value). Keyed by id(); an entry is only
# returned when every input matches to the bit, so a reused id() can never return stale values.
_PUT_CACHE: dict[int, tuple[tuple[bytes, bytes, bytes, bytes], FloatArray]] = {}


def _vec(x: ArrayLike, n_envs: int, name: str) -> FloatArray:
    arr = np.broadcast_to(np.asarray(x, dtype=np.float64), (n_envs,))
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def _vec_like(x: ArrayLike, shape: tuple[int, ...], name: str) -> FloatArray:
    """``x`` broadcast to an asset field's shape, ``(n_envs,)`` or ``(n_envs, K)``; finite."""
    try:
        arr = np.broadcast_to(np.asarray(x, dtype=np.float64), shape)
    except ValueError:
        raise ValueError(
            f"{name} must broadcast to {shape} (n_envs{', K assets' if len(shape) == 2 else ''}), "
            f"got shape {np.shape(x)}"
        ) from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def _over_assets(x: FloatArray) -> FloatArray:
    """A per-asset amount summed over the fund's assets: ``(n_envs,)``.

    The identity for a one-asset fund (``(n_envs,)`` fields), so its arithmetic is exactly what
    it was before funds held several assets.
    """
    if x.ndim == 1:
        return x
    out: FloatArray = x.sum(axis=1)
    return out


def _per_asset(x: FloatArray, like: FloatArray) -> FloatArray:
    """A per-exchange ``(n_envs,)`` amount against per-asset ones shaped like ``like``."""
    return x if like.ndim == 1 else x[:, None]


@dataclass
class FundPortfolio:
    """The fund's holdings in each bucket, per exchange. Every field is ``(n_envs,)`` float64.

    **Several assets.** A fund may hold ``K`` listed assets at once (a multi-market exchange's
    shared fund, :mod:`fundgym.envs.markets_simulator`): then the asset fields
    (:data:`ASSET_FIELDS`: ``volatile_units``, the put series' ``put_units``, ``put_strike``,
    ``put_minutes_left`` and ``put_cost_usd``, and the marks ``mark_price`` and
    ``mark_vol_annual``) are ``(n_envs, K)``: units of each asset, one put series on each, each
    marked at its own price and volatility. Every function takes prices and volatilities of
    the same shape, values the ``volatile`` and ``hedge`` buckets as the sums over the assets,
    and :func:`rebalance` splits their targets by a ``basket`` of weights. A one-asset fund
    keeps ``(n_envs,)`` fields and the arithmetic it always had, to the bit.

    Attributes:
        stable_usd: Stablecoin balance.
        yield_usd: Balance lent out in the lending market, interest included.
        volatile_units: Units of the underlying held.
        put_units: Number of puts (each on one unit of the underlying) of the current series.
        put_strike: Strike of the current put series, USD (0 when none is held).
        put_minutes_left: Minutes to expiry of the current series (0 when none is held).
        external_pnl_usd: Cumulative value gained from outside the fund: yield, price moves
            of ``volatile``, option marks and payoffs, minus fees, spreads and slippage.
        fees_paid_usd: Cumulative costs (fees, spreads, slippage), as positive USD; they are
            also inside ``external_pnl_usd`` with a minus sign.
        received_usd: Cumulative inflows (:func:`receive`).
        paid_usd: Cumulative shortfall payments (:func:`pay`).
        initial_value_usd: Value at creation.
        mark_price: Price of the underlying at the last mark, USD (0 before the first one).
        mark_vol_annual: Volatility at the last mark.
        injection_usd: What one top-up adds (:func:`inject`); 0: the venue never tops up.
        injections_left: Top-ups the venue may still make this episode.
        injections: Top-ups made so far (a count, as float64 like every field).
        injected_usd: Cumulative top-ups, USD: outside money, like a deposit.
        put_cost_usd: What the puts still held of the current series cost at the quote, USD
            (spread and fee apart): the premium committed to the hedge, which
            :func:`rebalance` sizes the hedge by (0 when none is held). Last in the order, so
            the compiled kernels' indices of the other fields stay put.
    """

    stable_usd: FloatArray
    yield_usd: FloatArray
    volatile_units: FloatArray
    put_units: FloatArray
    put_strike: FloatArray
    put_minutes_left: FloatArray
    external_pnl_usd: FloatArray
    fees_paid_usd: FloatArray
    received_usd: FloatArray
    paid_usd: FloatArray
    initial_value_usd: FloatArray
    mark_price: FloatArray
    mark_vol_annual: FloatArray
    injection_usd: FloatArray
    injections_left: FloatArray
    injections: FloatArray
    injected_usd: FloatArray
    put_cost_usd: FloatArray

    @property
    def n_envs(self) -> int:
        """Number of exchanges in the batch."""
        return int(self.stable_usd.shape[0])

    @property
    def n_assets(self) -> int | None:
        """``K``, the listed assets the fund can hold; ``None`` for a one-asset fund."""
        return None if self.volatile_units.ndim == 1 else int(self.volatile_units.shape[1])

    @classmethod
    def zeros(cls, n_envs: int, n_assets: int | None = None) -> FundPortfolio:
        """An empty portfolio for ``n_envs`` exchanges (``n_assets``: ``K`` assets, above)."""
        if n_assets is not None and not (isinstance(n_assets, int) and n_assets >= 1):
            raise ValueError(f"n_assets must be an int >= 1 or None, got {n_assets!r}")

        def field(name: str) -> FloatArray:
            several = n_assets is not None and name in ASSET_FIELDS
            return np.zeros((n_envs, n_assets) if several else (n_envs,), dtype=np.float64)

        return cls(*(field(f.name) for f in fields(cls)))

    @classmethod
    def from_stable(cls, amount_usd: ArrayLike, n_assets: int | None = None) -> FundPortfolio:
        """A portfolio holding ``amount_usd`` (``(n_envs,)``, >= 0) in ``stable`` only."""
        amount = np.array(amount_usd, dtype=np.float64, ndmin=1)
        if amount.ndim != 1 or not (np.isfinite(amount).all() and (amount >= 0).all()):
            raise ValueError(f"amount_usd must be a finite (n_envs,) array >= 0, got {amount}")
        pf = cls.zeros(amount.shape[0], n_assets)
        pf.stable_usd[:] = amount
        pf.initial_value_usd[:] = amount
        return pf

    def put_value_per_unit(self, price: ArrayLike, vol_annual: ArrayLike) -> FloatArray:
        """Mark (:func:`put_mark`) of one put of the current series."""
        if not (self.put_minutes_left > 0).any():  # no live series anywhere: intrinsic only
            return np.maximum(self.put_strike - np.asarray(price, dtype=np.float64), 0.0)
        # The same inputs are priced several times a tick (value, liquid value, payments);
        # remember the last answer, keyed on the exact inputs.
        p = np.asarray(price, dtype=np.float64)
        v = np.asarray(vol_annual, dtype=np.float64)
        key = (p.tobytes(), v.tobytes(), self.put_strike.tobytes(), self.put_minutes_left.tobytes())
        cached = _PUT_CACHE.get(id(self))
        if cached is not None and cached[0] == key:
            return cached[1].copy()
        value = put_mark(p, self.put_strike, self.put_minutes_left / MINUTES_PER_YEAR, v)
        _PUT_CACHE[id(self)] = (key, value.copy())
        return value

    def bucket_values_usd(self, price: ArrayLike, vol_annual: ArrayLike) -> FloatArray:
        """``(n_envs, 4)`` mark-to-market value of each bucket, in :data:`BUCKETS` order.

        ``price`` and ``vol_annual`` are shaped like :attr:`mark_price` (one per asset).
        """
        price_ = np.asarray(price, dtype=np.float64)
        return np.stack(
            [
                self.stable_usd,
                self.yield_usd,
                _over_assets(self.volatile_units * price_),
                _over_assets(self.put_units * self.put_value_per_unit(price_, vol_annual)),
            ],
            axis=-1,
        )

    def value_usd(self, price: ArrayLike, vol_annual: ArrayLike) -> FloatArray:
        """``stable + yield + volatile_units * price + put_units * put_mark``, ``(n_envs,)``."""
        out: FloatArray = self.bucket_values_usd(price, vol_annual).sum(axis=-1)
        return out

    def liquid_usd(
        self,
        price: ArrayLike,
        vol_annual: ArrayLike,
        stressed: ArrayLike,
        params: AllocationParams | None = None,
    ) -> FloatArray:
        """What :func:`pay` could pay this tick: ``(n_envs,)`` USD.

        ``stable`` + the withdrawable part of ``yield`` (stress rule) + ``volatile`` sold with
        slippage + puts sold at their mark (:func:`put_mark`) minus the spread.

        Args:
            price: ``(n_envs,)`` price of the underlying.
            vol_annual: ``(n_envs,)`` current annualised volatility.
            stressed: ``(n_envs,)`` bool, whether the lending market is stressed.
            params: Bucket terms; the defaults when ``None``.
        """
        params = AllocationParams() if params is None else params
        v = self.bucket_values_usd(price, vol_annual)
        frac = _withdraw_frac(stressed, params, self.n_envs)
        out: FloatArray = (
            v[:, STABLE]
            + frac * v[:, YIELD]
            + v[:, VOLATILE] * (1.0 - params.volatile_sell_slippage_frac)
            + v[:, HEDGE] * (1.0 - params.option_spread_frac)
        )
        return out

    def weights(self, price: ArrayLike, vol_annual: ArrayLike) -> FloatArray:
        """``(n_envs, 4)`` share of value in each bucket; all-stable where the value is 0."""
        v = self.bucket_values_usd(price, vol_annual)
        total = v.sum(axis=-1, keepdims=True)
        empty = total <= 0
        out: FloatArray = np.where(
            empty, np.array([1.0, 0.0, 0.0, 0.0]), v / np.where(empty, 1.0, total)
        )
        return out

    def ledger_gap_usd(self) -> FloatArray:
        """``value - (initial + external_pnl + received - paid)`` at the last mark; ~0."""
        expected = self.initial_value_usd + self.external_pnl_usd + self.received_usd
        out: FloatArray = (
            self.value_usd(self.mark_price, self.mark_vol_annual) - expected + self.paid_usd
        )
        return out


ASSET_FIELDS: tuple[str, ...] = (
    "volatile_units",
    "put_units",
    "put_strike",
    "put_minutes_left",
    "mark_price",
    "mark_vol_annual",
    "put_cost_usd",
)
"""The fields with one column per asset in a fund that holds several (``(n_envs, K)``)."""


def _withdraw_frac(stressed: ArrayLike, params: AllocationParams, n_envs: int) -> FloatArray:
    mask = np.broadcast_to(np.asarray(stressed, dtype=bool), (n_envs,))
    out: FloatArray = np.where(
        mask, params.yield_withdraw_frac_stressed, params.yield_withdraw_frac_normal
    )
    return out


def _check_market(
    pf: FundPortfolio, price: ArrayLike, vol_annual: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    p = _vec_like(price, pf.mark_price.shape, "price")
    v = _vec_like(vol_annual, pf.mark_price.shape, "vol_annual")
    if (p <= 0).any() or (v < 0).any():
        raise ValueError(f"price must be > 0 and vol_annual >= 0, got {p} and {v}")
    return p, v


def _mark(pf: FundPortfolio, price: FloatArray, vol_annual: FloatArray) -> None:
    """Revalue to ``price``, ``vol_annual`` (no ageing); book the change as external PnL."""
    before = pf.value_usd(pf.mark_price, pf.mark_vol_annual)
    pf.mark_price[:] = price
    pf.mark_vol_annual[:] = vol_annual
    pf.external_pnl_usd += pf.value_usd(price, vol_annual) - before


def _book_cost(pf: FundPortfolio, cost_usd: FloatArray) -> None:
    pf.external_pnl_usd -= cost_usd
    pf.fees_paid_usd += cost_usd


def _close_or_scale_puts(pf: FundPortfolio, units_before: FloatArray) -> None:
    """After puts were sold: a closed series is cleared, a cut one keeps its share of the cost.

    ``units_before`` is what was held before the sale (where nothing was sold, the units now
    held: ``x / x`` is exactly 1, so the cost is left as it is).
    """
    closed = pf.put_units <= 0
    kept = pf.put_units / np.where(closed, 1.0, units_before)
    pf.put_strike[:] = np.where(closed, 0.0, pf.put_strike)
    pf.put_minutes_left[:] = np.where(closed, 0.0, pf.put_minutes_left)
    pf.put_cost_usd[:] = np.where(closed, 0.0, pf.put_cost_usd * kept)


def accrue(
    pf: FundPortfolio,
    price: ArrayLike,
    vol_annual: ArrayLike,
    tick_minutes: float,
    params: AllocationParams,
) -> None:
    """Advance the portfolio by one tick of ``tick_minutes`` (>= 0), in place.

    In order: the portfolio is re-marked to ``price`` and ``vol_annual``; ``yield`` grows by
    ``yield_apr * tick_minutes / 525,600`` of itself (simple accrual per tick, so it compounds
    tick by tick); the puts age by ``tick_minutes`` (their time value decays); a series whose
    time runs out pays ``put_units * max(strike - price, 0)`` into ``stable`` and is closed
    (units, strike and minutes to 0; no new series is bought). The whole value change is
    booked to ``external_pnl_usd``.

    Args:
        pf: The portfolio, modified in place.
        price: ``(n_envs,)`` price of the underlying, > 0 (``(n_envs, K)``: each asset's).
        vol_annual: ``(n_envs,)`` current annualised volatility, >= 0 (likewise).
        tick_minutes: Length of the tick in minutes.
        params: Bucket terms.
    """
    if not (math.isfinite(tick_minutes) and tick_minutes >= 0):
        raise ValueError(f"tick_minutes must be finite and >= 0, got {tick_minutes!r}")
    p, v = _check_market(pf, price, vol_annual)
    before = pf.value_usd(pf.mark_price, pf.mark_vol_annual)
    pf.mark_price[:] = p
    pf.mark_vol_annual[:] = v
    pf.yield_usd *= 1.0 + params.yield_apr * tick_minutes / MINUTES_PER_YEAR
    held = pf.put_units > 0
    pf.put_minutes_left[:] = np.where(held, np.maximum(pf.put_minutes_left - tick_minutes, 0), 0)
    expired = held & (pf.put_minutes_left <= 0)
    payoff = np.where(expired, pf.put_units * np.maximum(pf.put_strike - p, 0.0), 0.0)
    pf.stable_usd += _over_assets(payoff)
    pf.put_units[:] = np.where(expired, 0.0, pf.put_units)
    pf.put_strike[:] = np.where(expired | ~held, 0.0, pf.put_strike)
    pf.put_cost_usd[:] = np.where(expired | ~held, 0.0, pf.put_cost_usd)
    pf.external_pnl_usd += pf.value_usd(p, v) - before


def rebalance(
    pf: FundPortfolio,
    target_weights: ArrayLike,
    price: ArrayLike,
    vol_annual: ArrayLike,
    stressed: ArrayLike,
    params: AllocationParams,
    basket: ArrayLike | None = None,
) -> FloatArray:
    """Move value toward ``target_weights``, in place; return the cost paid, ``(n_envs,)`` USD.

    After re-marking to ``price``/``vol_annual``, the target of bucket ``i`` is
    ``target_weights[:, i] * value`` with the value *before* costs (and the hedge counted at
    its size, below). Buckets above target are
    sold into ``stable`` (``volatile`` loses the slippage, puts the spread; a ``yield``
    withdrawal is capped by the stress rule, see :func:`pay`); buckets below target are bought
    from ``stable`` (puts at the market quote, :func:`put_price`, plus the spread; the quote
    above the mark is expensed). A fee of ``rebalance_fee_bps`` is charged on the USD value
    moved into or out of each non-stable bucket. All costs come out of ``stable``.

    The hedge is sized by ``max(mark, committed premium)`` (``put_cost_usd``), not by its
    mark alone: a put is bought at the quote and marked without the quote's crash premium, at
    about 2.5% of its cost for the default weekly put, so a hedge sized by its mark looked under
    target a moment after its purchase and was bought again at every decision (measured: a
    learned allocation bought eleven series in one Black Thursday episode and spent $122k of
    a $115k fund on premium). Now, against the target ``w_hedge * value``:

    - above the size: more puts of the *live* series (same strike and expiry) are bought at its
      quote for the difference; with no live series, or one quoted below
      ``MIN_PUT_PREMIUM_FRAC`` of spot (far out of the money after a rally), any puts held are
      sold and a fresh series is bought for the whole target (strike ``put_moneyness * price``,
      tenor ``put_tenor_days``), the roll;
    - below the mark: puts worth ``mark - target`` are sold at the mark minus the spread, and
      the committed premium shrinks with the units (a hedge in the money after a crash is
      trimmed to the target: profit taken, and not bought back at the next decision);
    - between the two: held. The premium above the mark is sunk; selling puts at their mark to
      move toward a lower weight would give up protection for a few cents on the dollar.

    The weights are shares of the fund valued with the hedge at its size (the same sum as
    :meth:`FundPortfolio.value_usd` with the mark replaced), so the same weights after a
    purchase ask for the same hedge, not one shrunk by the premium just expensed.

    Where the put bought would be worth less than ``MIN_PUT_PREMIUM_FRAC`` of spot (zero or
    tiny volatility), no puts are bought.

    **Several assets** (``(n_envs, K)`` asset fields): the ``volatile`` and ``hedge`` targets
    are split over the assets by ``basket`` (``(K,)`` weights >= 0 summing to 1; default
    equal), and each asset's part follows the rules above on its own (its units, its put
    series, sized by its own committed premium); the sales, purchases and costs of every asset
    share the one ``stable`` bucket, so a shortage of cash scales every purchase alike.

    Targets are approximate by design: costs make ``stable`` end below its target, a frozen
    ``yield`` bucket may stay above its target, and where ``stable`` plus the sale proceeds
    cannot pay for every purchase and fee, all purchases are scaled down by the same factor.

    Args:
        pf: The portfolio, modified in place.
        target_weights: ``(n_envs, 4)`` (or ``(4,)``) weights in :data:`BUCKETS` order, each
            >= 0, rows summing to 1.
        price: ``(n_envs,)`` price of the underlying, > 0 (``(n_envs, K)``: each asset's).
        vol_annual: ``(n_envs,)`` current annualised volatility, >= 0 (likewise).
        stressed: ``(n_envs,)`` bool, whether the lending market is stressed.
        params: Bucket terms.
        basket: ``(K,)`` each asset's share of the ``volatile`` and ``hedge`` targets (a fund
            of several assets only; ``None``: equal shares).

    Returns:
        ``(n_envs,)`` total cost (fees + spreads + slippage), also booked to the portfolio.
    """
    n = pf.n_envs
    w = np.broadcast_to(np.asarray(target_weights, dtype=np.float64), (n, 4))
    if not np.isfinite(w).all() or (w < 0).any() or not np.allclose(w.sum(axis=1), 1.0):
        raise ValueError(f"target_weights rows must be >= 0 and sum to 1, got {w}")
    p, v = _check_market(pf, price, vol_annual)
    share = _basket(basket, pf)
    _mark(pf, p, v)
    fee = params.rebalance_fee_frac
    slip = params.volatile_sell_slippage_frac
    spread = params.option_spread_frac

    # Per asset (one column each in a fund of several; the exchange's own arrays otherwise).
    put_unit_value = pf.put_value_per_unit(p, v)
    values = pf.bucket_values_usd(p, v)
    vol_value = pf.volatile_units * p
    hedge_value = pf.put_units * put_unit_value
    # The hedge is sized by the larger of its mark and the premium committed to it: puts are
    # bought at the quote and marked without its crash premium, so sizing by the mark alone
    # would find a hedge bought a moment ago under target and buy it again at every decision.
    # The weights are shares of the fund valued with the hedge at that size, so the same
    # weights after a purchase ask for the same hedge, not one shrunk by the premium expensed.
    live = (pf.put_units > 0) & (pf.put_minutes_left > 0)
    committed = np.where(live, pf.put_cost_usd, 0.0)
    size = np.maximum(hedge_value, committed)
    sized = values.copy()
    sized[:, HEDGE] = _over_assets(size)
    target = w * sized.sum(axis=1, keepdims=True)
    target_vol = _split(target[:, VOLATILE], share)
    target_hedge = _split(target[:, HEDGE], share)

    # Sales (USD value taken out of each bucket).
    sell_yield = np.minimum(
        np.maximum(values[:, YIELD] - target[:, YIELD], 0.0),
        _withdraw_frac(stressed, params, n) * values[:, YIELD],
    )
    sell_vol = np.maximum(vol_value - target_vol, 0.0)
    new_strike = params.put_moneyness * p
    new_minutes = np.full(p.shape, params.put_tenor_days * 24.0 * 60.0)
    # The quote (put_price for a live tenor), with its Black-Scholes term computed once.
    new_put_mark = put_mark(p, new_strike, new_minutes / MINUTES_PER_YEAR, v)
    rate = params.put_crash_rate_per_year
    new_put_value = new_put_mark + crash_premium(
        p, new_strike, new_minutes / MINUTES_PER_YEAR, rate
    )
    # More puts go into the live series at its own quote (same strike and expiry), unless it
    # is quoted below MIN_PUT_PREMIUM_FRAC of spot (far out of the money after a rally): then
    # it is sold and a fresh series bought, the "roll".
    live_put_value = put_unit_value + crash_premium(
        p, pf.put_strike, pf.put_minutes_left / MINUTES_PER_YEAR, rate
    )
    top_up = live & (live_put_value > MIN_PUT_PREMIUM_FRAC * p)
    buy_mark = np.where(top_up, put_unit_value, new_put_mark)
    buy_value = np.where(top_up, live_put_value, new_put_value)
    # A put worth less than MIN_PUT_PREMIUM_FRAC of spot buys no protection worth the name;
    # buying 1e22 of them would only make the hedge a bet on volatility.
    buy_puts = (target_hedge > size) & (buy_value > MIN_PUT_PREMIUM_FRAC * p)
    roll = buy_puts & ~top_up
    # Puts are sold only down to a target below their mark: the premium above the mark is
    # sunk, and selling at 2.5 cents on the dollar would only give up protection.
    sell_hedge = np.where(
        roll,
        hedge_value,
        np.where(buy_puts, 0.0, np.maximum(hedge_value - target_hedge, 0.0)),
    )

    # Purchases (USD value put into each bucket), before scaling.
    buy_yield = np.maximum(target[:, YIELD] - values[:, YIELD], 0.0)
    buy_vol = np.maximum(target_vol - vol_value, 0.0)
    buy_hedge = np.where(buy_puts, np.where(roll, target_hedge, target_hedge - size), 0.0)

    sold = sell_yield + _over_assets(sell_vol) + _over_assets(sell_hedge)
    vol_proceeds = _over_assets(sell_vol * (1.0 - slip))  # what the sales bring, every asset
    hedge_proceeds = _over_assets(sell_hedge * (1.0 - spread))
    cash = pf.stable_usd + sell_yield + vol_proceeds + hedge_proceeds - fee * sold
    need = (
        buy_yield * (1.0 + fee)
        + _over_assets(buy_vol * (1.0 + fee))
        + _over_assets(buy_hedge * (1.0 + spread + fee))
    )
    scale = np.where(need > cash, np.maximum(cash, 0.0) / np.where(need > 0, need, 1.0), 1.0)
    buy_yield = buy_yield * scale
    buy_vol = buy_vol * _per_asset(scale, buy_vol)
    buy_hedge = buy_hedge * _per_asset(scale, buy_hedge)
    bought = buy_yield + _over_assets(buy_vol) + _over_assets(buy_hedge)

    # The crash premium (quote minus mark) is expensed on purchase, like an insurance policy.
    premium = buy_hedge * (1.0 - buy_mark / np.where(buy_puts, buy_value, 1.0))
    cost = (
        _over_assets(sell_vol * slip)
        + _over_assets(sell_hedge * spread)
        + _over_assets(buy_hedge * spread)
        + fee * (sold + bought)
        + _over_assets(premium)  # buy_hedge, hence premium, is zero where no puts are bought
    )
    pf.stable_usd[:] = np.maximum(
        pf.stable_usd
        + sell_yield
        + vol_proceeds
        + hedge_proceeds
        - buy_yield
        - _over_assets(buy_vol)
        - _over_assets(buy_hedge * (1.0 + spread))
        - fee * (sold + bought),
        0.0,
    )
    pf.yield_usd[:] = np.maximum(pf.yield_usd - sell_yield + buy_yield, 0.0)
    sells_all_vol = (sell_vol >= vol_value) & (vol_value > 0)
    pf.volatile_units[:] = np.where(
        sells_all_vol, 0.0, np.maximum(pf.volatile_units + (buy_vol - sell_vol) / p, 0.0)
    )
    # Puts: a roll replaces the series, a top-up adds to it, otherwise sell down what is held.
    units_before = pf.put_units.copy()
    sells_all_puts = (sell_hedge >= hedge_value) & (hedge_value > 0)
    safe_unit = np.where(put_unit_value > 0, put_unit_value, 1.0)
    kept_units = np.where(
        sells_all_puts, 0.0, np.maximum(pf.put_units - sell_hedge / safe_unit, 0.0)
    )
    bought_units = buy_hedge / np.where(buy_puts, buy_value, 1.0)
    pf.put_units[:] = np.where(
        roll, bought_units, np.where(buy_puts, pf.put_units + bought_units, kept_units)
    )
    pf.put_strike[:] = np.where(roll, new_strike, pf.put_strike)
    pf.put_minutes_left[:] = np.where(roll, new_minutes, pf.put_minutes_left)
    pf.put_cost_usd[:] = np.where(
        roll, buy_hedge, np.where(buy_puts, committed + buy_hedge, pf.put_cost_usd)
    )
    _close_or_scale_puts(pf, np.where(buy_puts, pf.put_units, units_before))
    _book_cost(pf, cost)
    out: FloatArray = cost
    return out


def _basket(basket: ArrayLike | None, pf: FundPortfolio) -> FloatArray | None:
    """The ``(K,)`` shares of a fund of ``K`` assets (equal by default); ``None`` for one."""
    k = pf.n_assets
    if k is None:
        if basket is not None:
            raise ValueError("basket splits a fund of several assets; this fund holds one")
        return None
    if basket is None:
        return np.full(k, 1.0 / k)
    b = np.asarray(basket, dtype=np.float64)
    if b.shape != (k,) or not np.isfinite(b).all() or (b < 0).any() or abs(b.sum() - 1.0) > 1e-9:
        raise ValueError(f"basket must be {k} weights >= 0 summing to 1, got {basket!r}")
    return b


def _split(total: FloatArray, share: FloatArray | None) -> FloatArray:
    """A bucket's per-exchange target split over the assets by ``share`` (itself for one)."""
    if share is None:
        return total
    out: FloatArray = total[:, None] * share[None, :]
    return out


def pay(
    pf: FundPortfolio,
    amount_usd: ArrayLike,
    price: ArrayLike,
    vol_annual: ArrayLike,
    stressed: ArrayLike,
    params: AllocationParams,
) -> FloatArray:
    """Pay up to ``amount_usd`` out of the fund's liquid value, in place.

    Buckets are drawn in the order ``stable``, ``yield`` (at most the withdrawable fraction,
    ``yield_withdraw_frac_stressed`` where ``stressed`` else ``..._normal``, of the bucket),
    ``volatile`` (sold with slippage: paying ``x`` sells ``x / (1 - slippage)`` of value) and
    ``hedge`` (sold at their mark minus the spread). Slippage and spreads are booked as
    costs; there is no rebalance fee on a payment. A fund of several assets sells each of
    ``volatile`` (then of ``hedge``) pro rata to what it would raise, every asset alike.

    Args:
        pf: The portfolio, modified in place.
        amount_usd: ``(n_envs,)`` shortfall to pay, >= 0.
        price: ``(n_envs,)`` price of the underlying, > 0 (``(n_envs, K)``: each asset's).
        vol_annual: ``(n_envs,)`` current annualised volatility, >= 0.
        stressed: ``(n_envs,)`` bool, whether the lending market is stressed.
        params: Bucket terms.

    Returns:
        ``(n_envs,)`` USD paid, at most ``amount_usd`` and at most :meth:`FundPortfolio.liquid_usd`.
    """
    amount = _vec(amount_usd, pf.n_envs, "amount_usd")
    if (amount < 0).any():
        raise ValueError(f"amount_usd must be >= 0, got {amount}")
    p, v = _check_market(pf, price, vol_annual)
    _mark(pf, p, v)
    slip = params.volatile_sell_slippage_frac
    spread = params.option_spread_frac
    left = amount.copy()

    from_stable = np.minimum(left, pf.stable_usd)
    pf.stable_usd -= from_stable
    left -= from_stable

    from_yield = np.minimum(left, _withdraw_frac(stressed, params, pf.n_envs) * pf.yield_usd)
    pf.yield_usd[:] = np.maximum(pf.yield_usd - from_yield, 0.0)
    left -= from_yield

    vol_value = pf.volatile_units * p
    vol_proceeds = vol_value * (1.0 - slip)
    from_vol, all_vol = _draw(left, vol_proceeds)
    vol_sold = np.where(all_vol, vol_value, from_vol / (1.0 - slip))
    pf.volatile_units[:] = np.where(all_vol, 0.0, np.maximum(pf.volatile_units - vol_sold / p, 0))
    from_vol_usd = _over_assets(from_vol)
    left -= from_vol_usd

    unit = pf.put_value_per_unit(p, v)
    put_value = pf.put_units * unit
    put_proceeds = put_value * (1.0 - spread)
    from_puts, all_puts = _draw(left, put_proceeds)
    puts_sold = np.where(all_puts, put_value, from_puts / (1.0 - spread))
    safe_unit = np.where(unit > 0, unit, 1.0)
    units_before = pf.put_units.copy()
    pf.put_units[:] = np.where(all_puts, 0.0, np.maximum(pf.put_units - puts_sold / safe_unit, 0))
    _close_or_scale_puts(pf, units_before)
    from_puts_usd = _over_assets(from_puts)
    left -= from_puts_usd

    paid = amount - np.maximum(left, 0.0)
    _book_cost(
        pf,
        (_over_assets(vol_sold) - from_vol_usd) + (_over_assets(puts_sold) - from_puts_usd),
    )
    pf.paid_usd += paid
    out: FloatArray = paid
    return out


def _draw(left: FloatArray, proceeds: FloatArray) -> tuple[FloatArray, BoolArray]:
    """What a payment of ``left`` draws from a bucket's ``proceeds``, and whether it is all.

    One asset: ``(min(left, proceeds), min(...) >= proceeds)``. Several: the bucket's assets
    are drawn pro rata to their proceeds (each asset gives the same share of itself), so a
    payment sells every asset of the basket alike; the second array then says, per asset,
    whether the whole bucket went.
    """
    if proceeds.ndim == 1:
        taken = np.minimum(left, proceeds)
        return taken, taken >= proceeds
    total = proceeds.sum(axis=1)
    taken_total = np.minimum(left, total)
    everything = taken_total >= total
    share = proceeds / np.where(total > 0.0, total, 1.0)[:, None]
    taken = np.where(everything[:, None], proceeds, taken_total[:, None] * share)
    return taken, np.broadcast_to(everything[:, None], proceeds.shape)


def receive(pf: FundPortfolio, amount_usd: ArrayLike) -> None:
    """Add inflows (fee income), ``(n_envs,)`` USD >= 0, to ``stable``, in place."""
    amount = _vec(amount_usd, pf.n_envs, "amount_usd")
    if (amount < 0).any():
        raise ValueError(f"amount_usd must be >= 0, got {amount}")
    pf.stable_usd += amount
    pf.received_usd += amount


def inject(pf: FundPortfolio, due: ArrayLike) -> FloatArray:
    """Top up the funds in ``due`` by one injection each, into ``stable``, in place.

    Each exchange in ``due`` receives its ``injection_usd``; its count goes up by one and what
    is left of its allowance down by one. The money comes from outside the exchange (Deribit
    injected 500 BTC after 12 Mar 2020, Binance $30M after 10 May 2020), so the caller books
    it as a deposit (``net_deposits_usd``), and the portfolio in ``injected_usd``, apart from
    its fee income (``received_usd``).

    Args:
        pf: The portfolio, modified in place.
        due: ``(n_envs,)`` bool, which exchanges are topped up (the caller checks that each has
            an allowance left).

    Returns:
        ``(n_envs,)`` USD injected (0 where not ``due``).
    """
    mask = np.broadcast_to(np.asarray(due, dtype=bool), (pf.n_envs,))
    amount: FloatArray = np.where(mask, pf.injection_usd, 0.0)
    pf.stable_usd += amount
    pf.injected_usd += amount
    pf.injections += mask
    pf.injections_left -= mask
    return amount


def inject_if_exhausted(
    pf: FundPortfolio, bad_debt_usd: ArrayLike, stressed: ArrayLike, params: AllocationParams
) -> FloatArray:
    """The venue tops up a fund that a tick's bad debt left exhausted, in place.

    Checked at the end of a tick, after the fund's settlement: an exchange is topped up
    (:func:`inject`) when the tick had bad debt (``bad_debt_usd > 0``, the losses the fund
    stands behind), the fund's liquid value at its own mark is at most
    :data:`EXHAUSTED_FRAC` of one top-up (it paid everything it could draw), and it has an
    allowance left (``injections_left > 0``, ``injection_usd > 0``). The top-up pays the
    shortfalls of later ticks, not this one's: what the fund could not pay this tick has
    already gone down the waterfall (ADL, socialisation, the exchange), as the venues' top-ups
    came after the crash that emptied them. A fund that starts at 0 is exhausted from the
    start, so its first bad debt tops it up.

    Args:
        pf: The portfolio, modified in place.
        bad_debt_usd: ``(n_envs,)`` the tick's bad debt (``StepEvents.bad_debt_usd``).
        stressed: ``(n_envs,)`` bool, whether the lending market is stressed.
        params: Bucket terms (the withdrawable share of ``yield``, slippage, spread).

    Returns:
        ``(n_envs,)`` USD injected.
    """
    bad = _vec(bad_debt_usd, pf.n_envs, "bad_debt_usd")
    due = (bad > 0.0) & (pf.injections_left > 0.0) & (pf.injection_usd > 0.0)
    if not due.any():
        return np.zeros(pf.n_envs)
    liquid = pf.liquid_usd(pf.mark_price, pf.mark_vol_annual, stressed, params)
    return inject(pf, due & (liquid <= EXHAUSTED_FRAC * pf.injection_usd))


def settle(
    pf: FundPortfolio,
    income_usd: ArrayLike,
    paid_usd: ArrayLike,
    price: ArrayLike,
    vol_annual: ArrayLike,
    stressed: ArrayLike,
    params: AllocationParams,
) -> FloatArray:
    """Book one tick of the margin engine's fund flows, in place; return what was paid.

    The fee income is received first (into ``stable``, :func:`receive`), then the shortfall
    is paid (:func:`pay`), the order in which the engine counted them. Only the exchanges
    that pay are re-marked to ``price``; the others are left untouched, so an exchange's
    portfolio never depends on whether its siblings in the batch had a shortfall.

    Args:
        pf: The portfolio, modified in place.
        income_usd: ``(n_envs,)`` fee income, >= 0.
        paid_usd: ``(n_envs,)`` shortfall the engine paid out of the fund, >= 0.
        price: ``(n_envs,)`` price of the underlying, > 0 (used only when paying;
            ``(n_envs, K)``: each asset's).
        vol_annual: ``(n_envs,)`` current annualised volatility, >= 0.
        stressed: ``(n_envs,)`` bool, whether the lending market is stressed.
        params: Bucket terms.

    Returns:
        ``(n_envs,)`` USD actually paid: ``paid_usd`` unless it exceeds what the fund could
        pay after the income (:meth:`FundPortfolio.liquid_usd`).
    """
    n = pf.n_envs
    income = _vec(income_usd, n, "income_usd")
    owed = _vec(paid_usd, n, "paid_usd")
    if (income > 0.0).any():
        receive(pf, income)
    paid = np.zeros(n)
    rows = np.flatnonzero(owed > 0.0)
    if rows.size == n:
        paid[:] = pay(pf, owed, price, vol_annual, stressed, params)
    elif rows.size:  # only the exchanges that pay are re-marked: the others stay untouched
        sub = FundPortfolio(**{f.name: getattr(pf, f.name)[rows] for f in fields(pf)})
        paid[rows] = pay(
            sub,
            owed[rows],
            _vec_like(price, pf.mark_price.shape, "price")[rows],
            _vec_like(vol_annual, pf.mark_price.shape, "vol_annual")[rows],
            np.broadcast_to(np.asarray(stressed, dtype=bool), (n,))[rows],
            params,
        )
        for f in fields(pf):
            getattr(pf, f.name)[rows] = getattr(sub, f.name)
    return paid
