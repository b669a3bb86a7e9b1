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

    Args:
        n_envs: Exchanges in the batch.
        delay_ticks: The oracle reports the source price of ``delay_ticks`` ago.
        floor_price: If set, the oracle never reports below it (a feed's minimum answer).
    """

    def __init__(self, n_envs: int, delay_ticks: int, floor_price: float | None) -> None:
        self.delay_ticks = int(delay_ticks)
        self.floor_price = floor_price
        self._buffer = np.zeros((self.delay_ticks + 1, n_envs))
        self._count = 0
        self._last = np.zeros(n_envs)

    def update(
        self, source: FloatArray, frozen: BoolArray, manipulation_mult: FloatArray
    ) -> FloatArray:
        """Push this tick's source price; return the oracle price."""
        self._buffer[self._count % (self.delay_ticks + 1)] = source
        self._count += 1
        oldest = max(0, self._count - 1 - self.delay_ticks)
        delayed = self._buffer[oldest % (self.delay_ticks + 1)] * manipulation_mult
        if self.floor_price is not None:
            delayed = np.maximum(delayed, self.floor_price)
        first = self._count == 1
        out = delayed if first else np.where(frozen, self._last, delayed)
        self._last = np.asarray(out, dtype=np.float64)
        return self._last
