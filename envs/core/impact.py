"""Execution against a book of finite depth: one square-root book for fills and price impact.

The one home of the book's formula. Walking ``N`` USD of market orders through a book that
holds ``D`` USD per 1% of price on each side moves the price, in log terms, by

    ``x = 0.01 x sqrt(N / D)``  (:func:`walk_log_move`)

the square-root law of market impact: equal to the linear book's ``N / D`` percent at
``N = D``, concave above it (a hundred times the depth moves the price 10%, not 100%). The
move is a log move, so the price after any walk stays above zero without a clip: a sell walk
ends at ``book x exp(-x)``, a buy walk at ``book x exp(x)``.

Fills average the profile the walk passes through. For a square-root profile the average of
``0.01 x sqrt(n / D)`` over ``n`` in ``[0, N]`` is two thirds of the final move, so a fill sits
:data:`FILL_SHARE` of the way from the book price to the walk's final price
(:func:`book_price`); for moves of a few percent this is the exact average, and far out, where
the final price is bounded by the exponential, it stays between the book and the final price.
The buy side is capped at ``max_impact_frac`` above the book (a fill ten times the book price
would not be a fill); the sell side never needs it, a sell fills above a third of the book.

The liquidation engine sends each step's liquidation flow to an :class:`ImpactModel` and
fills at the prices it returns (:class:`SqrtImpact`, compiled: :func:`book_price`); the market
(:mod:`fundgym.envs.market`) moves the index by :func:`walk_log_move` of the tick's net flow,
with a permanent share and a transient share that refills (``docs/impact.md``).

Sample values (``x`` in percent; fill slippage of a sell, percent of the book price):

=========  =====  ============  ===============
``N / D``  ``x``  final sell    average sell fill
=========  =====  ============  ===============
0.25       0.5    -0.4988       -0.3325
1          1      -0.9950       -0.6633
4          2      -1.9801       -1.3201
100        10     -9.5163       -6.3442
=========  =====  ============  ===============
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs import libm
from fundgym.envs.jit import jit

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Share of the walk's final move that the average fill pays: the mean of a square-root
#: profile, ``(1/N) x integral of sqrt(n) dn over [0, N] = (2/3) sqrt(N)``.
FILL_SHARE = 2.0 / 3.0
#: Largest walk a fill prices, log price: past it a sell's slippage is ``FILL_SHARE`` to the last
#: bit (``exp(-40) < 1e-17``) and a buy's is at its cap, so it changes no fill; it keeps
#: ``expm1`` finite for any flow.
MAX_FILL_WALK_LOG = 40.0


class ImpactModel(Protocol):
    """Maps one step's aggregate liquidation flow per exchange to average fill prices."""

    def fill_prices(
        self, mark: FloatArray, sell_notional_usd: FloatArray, buy_notional_usd: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Average fill price of the sells and of the buys, each ``(n_envs,)``.

        Args:
            mark: ``(n_envs,)`` price before the flow.
            sell_notional_usd: ``(n_envs,)`` notional sold (liquidated longs), at mark.
            buy_notional_usd: ``(n_envs,)`` notional bought (liquidated shorts), at mark.
        """
        ...


def walk_log_move(notional_usd: ArrayLike, depth_usd_per_pct: ArrayLike) -> FloatArray:
    """Log-price move of walking ``notional_usd`` through the book: ``0.01 x sqrt(N / D)``.

    Unsigned (a sell walk moves the log price down by it, a buy walk up); the numpy twin of
    :func:`walk_log_move_one`, operation for operation.
    """
    ratio = np.asarray(notional_usd, dtype=np.float64) / np.asarray(depth_usd_per_pct)
    return np.asarray(0.01 * np.sqrt(ratio), dtype=np.float64)


@jit(error_model="numpy", inline="always")
def walk_log_move_one(notional_usd, depth_usd_per_pct):  # type: ignore[no-untyped-def]
    """:func:`walk_log_move` of one value, for the compiled tick."""
    return 0.01 * math.sqrt(notional_usd / depth_usd_per_pct)


def walked_notional(log_move: ArrayLike, depth_usd_per_pct: ArrayLike) -> FloatArray:
    """Signed notional whose walk moves the log price by ``log_move``: the inverse of the walk.

    ``D x (log_move / 0.01)^2`` with the move's sign (negative: sells); the numpy twin of
    :func:`walked_notional_one`, operation for operation.
    """
    units = np.asarray(log_move, dtype=np.float64) / 0.01
    return np.asarray(np.asarray(depth_usd_per_pct) * (units * np.abs(units)), dtype=np.float64)


@jit(error_model="numpy", inline="always")
def walked_notional_one(log_move, depth_usd_per_pct):  # type: ignore[no-untyped-def]
    """:func:`walked_notional` of one value, for the compiled tick."""
    units = log_move / 0.01
    return depth_usd_per_pct * (units * abs(units))


@dataclass(frozen=True)
class SqrtImpact:
    """A square-root book with ``depth_usd_per_pct`` USD per 1% of price on each side.

    Walking ``N`` USD moves the log price by ``0.01 x sqrt(N / D)``; fills pay
    :data:`FILL_SHARE` of the final move (module docstring), buys at most ``max_impact_frac``.

    Attributes:
        depth_usd_per_pct: USD depth per 1% move, scalar or ``(n_envs,)`` (> 0).
        max_impact_frac: Cap on a buy's average slippage, in (0, 1).
    """

    depth_usd_per_pct: float | FloatArray = 5e6
    max_impact_frac: float = 0.9

    def __post_init__(self) -> None:
        depth = np.asarray(self.depth_usd_per_pct, dtype=np.float64)
        if not np.isfinite(depth).all() or (depth <= 0).any():
            raise ValueError(
                f"SqrtImpact.depth_usd_per_pct must be finite and > 0, "
                f"got {self.depth_usd_per_pct!r}"
            )
        if not 0.0 < self.max_impact_frac < 1.0:
            raise ValueError(
                f"SqrtImpact.max_impact_frac must lie in (0, 1), got {self.max_impact_frac!r}"
            )

    @classmethod
    def for_slippage(
        cls, notional_usd: float, slippage_frac: float, max_impact_frac: float = 0.9
    ) -> SqrtImpact:
        """The book on which a sell of ``notional_usd`` fills ``slippage_frac`` below the book.

        Inverts the fill: ``x = -ln(1 - slippage / FILL_SHARE)``, ``D = N / (x / 0.01)^2``; a
        sell's slippage is below :data:`FILL_SHARE`, so ``slippage_frac`` must be too.

        Raises:
            ValueError: ``notional_usd`` is not > 0 or ``slippage_frac`` not in
                ``(0, FILL_SHARE)``.
        """
        if not (notional_usd > 0.0 and 0.0 < slippage_frac < FILL_SHARE):
            raise ValueError(
                f"SqrtImpact.for_slippage needs notional_usd > 0 and slippage_frac in (0, 2/3), "
                f"got {notional_usd!r} and {slippage_frac!r}"
            )
        walk = -math.log1p(-slippage_frac / FILL_SHARE)
        return cls(notional_usd / (walk / 0.01) ** 2, max_impact_frac)

    def slippage_frac(self, notional_usd: ArrayLike, sign: float) -> FloatArray:
        """Average slippage, fraction of the book price, of a sell (``sign = -1``) or buy (``+1``).

        The numpy twin of the slippage inside :func:`book_price`, operation for operation (the
        C library's ``expm1`` through :mod:`fundgym.envs.libm`).
        """
        walk = np.minimum(walk_log_move(notional_usd, self.depth_usd_per_pct), MAX_FILL_WALK_LOG)
        final = libm.expm1(sign * walk)
        return np.asarray(
            np.minimum(FILL_SHARE * np.abs(final), self.max_impact_frac), dtype=np.float64
        )

    def fill_prices(
        self, mark: FloatArray, sell_notional_usd: FloatArray, buy_notional_usd: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Sells fill below mark and buys above it, by the average slippage of each side."""
        return (
            mark * (1.0 - self.slippage_frac(sell_notional_usd, -1.0)),
            mark * (1.0 + self.slippage_frac(buy_notional_usd, 1.0)),
        )


def market_books(book: SqrtImpact, depth_scale: ArrayLike) -> tuple[SqrtImpact, ...]:
    """One square-root book per market, broadcast from one model.

    Market ``j``'s book holds ``depth_scale[j]`` times ``book``'s depth (a scenario's
    ``markets[j].depth_scale``). :func:`fundgym.envs.core.step.core_step` takes the tuple as
    ``impact`` for several markets and prices each market's liquidation flow in its own book.

    Raises:
        ValueError: ``depth_scale`` is not a non-empty 1-D list of finite numbers > 0.
    """
    scale = np.asarray(depth_scale, dtype=np.float64)
    if scale.ndim != 1 or scale.size == 0 or not np.isfinite(scale).all() or (scale <= 0).any():
        raise ValueError(
            f"depth_scale must be a non-empty list of finite numbers > 0 (one per market), "
            f"got {depth_scale!r}"
        )
    depth = np.asarray(book.depth_usd_per_pct, dtype=np.float64)
    return tuple(SqrtImpact(depth * float(x), book.max_impact_frac) for x in scale)


@jit(error_model="numpy", inline="always")
def book_price(book_px, flow, depth, max_impact, sign):  # type: ignore[no-untyped-def]
    """Average fill of ``flow`` USD through the square-root book, compiled (:class:`SqrtImpact`).

    ``book x (1 + sign x min(FILL_SHARE x |expm1(sign x 0.01 sqrt(flow / depth))|, cap))``
    (the walk at most :data:`MAX_FILL_WALK_LOG`),
    ``sign = -1`` for sells and ``+1`` for buys: :meth:`SqrtImpact.fill_prices`'s formula, in
    the same operation order, for the kernels that price inside a tick.
    """
    final = math.expm1(sign * min(walk_log_move_one(flow, depth), MAX_FILL_WALK_LOG))
    return book_px * (1.0 + sign * min(FILL_SHARE * abs(final), max_impact))
