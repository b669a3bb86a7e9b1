"""The three prices: the venue's last trade, its mark, and the oracle the margin engine reads.

* ``index``: the price on other venues (the exogenous path plus market-wide impact).
* ``last``: this venue's last trade = index x (1 + basis), plus venue-only wicks.
* ``mark``: Binance-style ``median(last, index x (1 + premium EMA), index)``, so a single-venue
  wick moves ``last`` but not a well-built mark; ``mark_method="last"`` models a venue that
  marks to its own last trade.
* ``oracle``: what the margin engine reads: the mark (or index) delayed by ``delay`` ticks,
  stuck during freezes, held at a floor (Chainlink's ``minAnswer`` on LUNA, $0.107), and
  multiplied by a manipulation path (Mango).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


def mark_price(
    last: FloatArray,
    index: FloatArray,
    premium_ema: FloatArray,
    method: Literal["median", "last"] = "median",
) -> FloatArray:
    """The venue's mark: median of last, index with the smoothed premium, and index."""
    if method == "last":
        return last
    a, b, c = last, index * (1.0 + premium_ema), index
    # median of three without a sort: max(min(a, b), min(max(a, b), c))
    return np.asarray(np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c)))


class OracleFeed:
    """Online oracle over a batch of exchanges: delay, freezes, floor and manipulation.

    Each exchange has its own delay (ticks), floor and clock, so one exchange can be reset while
    the others go on. A shared ring buffer holds the last ``max delay + 1`` source prices.

    Args:
        n_envs: Exchanges in the batch.
    """

    def __init__(self, n_envs: int) -> None:
        self.n_envs = n_envs
        self._buffer = np.zeros((1, n_envs))
        self._count = np.zeros(n_envs, dtype=np.int64)
        self._delay = np.zeros(n_envs, dtype=np.int64)
        self._floor = np.full(n_envs, -np.inf)
        self._first = np.zeros(n_envs)
        self._last = np.zeros(n_envs)
        self._cols = np.arange(n_envs)

    def reset_env(self, env: int, delay_ticks: int, floor_price: float | None) -> None:
        """Start exchange ``env`` afresh with its delay and floor (``None``: no floor)."""
        if delay_ticks + 1 > self._buffer.shape[0]:
            grown = np.zeros((delay_ticks + 1, self.n_envs))
            grown[: self._buffer.shape[0]] = self._buffer  # positions are per exchange clock
            # Re-lay the other exchanges' history at their positions modulo the new length.
            for e in range(self.n_envs):  # once per reset, over exchanges only
                if e != env and self._count[e] > 0:
                    old_len = self._buffer.shape[0]
                    k = np.arange(max(0, self._count[e] - old_len), self._count[e])
                    grown[k % (delay_ticks + 1), e] = self._buffer[k % old_len, e]
            self._buffer = grown
        self._count[env] = 0
        self._delay[env] = delay_ticks
        self._floor[env] = -np.inf if floor_price is None else floor_price

    def update(
        self, source: FloatArray, frozen: BoolArray, manipulation_mult: FloatArray
    ) -> FloatArray:
        """Push this tick's source price; return the oracle price per exchange."""
        size = self._buffer.shape[0]
        self._buffer[self._count % size, self._cols] = source
        first = self._count == 0
        self._first = np.where(first, source, self._first)
        self._count += 1
        lag = self._count - 1 - self._delay
        delayed = np.where(
            lag >= 0, self._buffer[np.maximum(lag, 0) % size, self._cols], self._first
        )
        delayed = np.maximum(delayed * manipulation_mult, self._floor)
        out = np.where(frozen & ~first, self._last, delayed)
        self._last = np.asarray(out, dtype=np.float64)
        return self._last.copy()  # the compiled tick writes _last in place

    def kernel_arrays(
        self,
    ) -> tuple[FloatArray, IntArray, IntArray, FloatArray, FloatArray, FloatArray]:
        """``(buffer, count, delay, floor, first, last)``: the feed's state, as arrays.

        The compiled tick (:func:`fundgym.envs.market.kernels.prices_one`) updates them in place.
        """
        return self._buffer, self._count, self._delay, self._floor, self._first, self._last
