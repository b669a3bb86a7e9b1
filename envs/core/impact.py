"""Execution against a book of finite depth: the interface and a linear placeholder model.

The liquidation engine sends each step's liquidation flow to an :class:`ImpactModel` and fills
at the prices it returns. The market issue replaces :class:`LinearImpact` with depth that
collapses under stress and flow that moves the mark (endogenous impact); the core only relies
on the protocol below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.jit import jit

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


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


@dataclass(frozen=True)
class LinearImpact:
    """A book with constant depth per 1% of price on each side.

    Walking ``N`` USD through a book that holds ``D`` USD per 1% moves the price by
    ``N / D`` percent; fills average half of that move. The average slippage is capped at
    ``max_impact_frac`` so a price can never reach zero.

    Attributes:
        depth_usd_per_pct: USD depth per 1% move, scalar or ``(n_envs,)`` (> 0).
        max_impact_frac: Cap on the average slippage, in (0, 1).
    """

    depth_usd_per_pct: float | FloatArray = 5e6
    max_impact_frac: float = 0.9

    def __post_init__(self) -> None:
        depth = np.asarray(self.depth_usd_per_pct, dtype=np.float64)
        if not np.isfinite(depth).all() or (depth <= 0).any():
            raise ValueError(
                f"LinearImpact.depth_usd_per_pct must be finite and > 0, "
                f"got {self.depth_usd_per_pct!r}"
            )
        if not 0.0 < self.max_impact_frac < 1.0:
            raise ValueError(
                f"LinearImpact.max_impact_frac must lie in (0, 1), got {self.max_impact_frac!r}"
            )

    def slippage_frac(self, notional_usd: ArrayLike) -> FloatArray:
        """Average slippage, as a fraction of mark, of a market order of ``notional_usd``."""
        frac = 0.005 * np.asarray(notional_usd, dtype=np.float64) / self.depth_usd_per_pct
        return np.minimum(frac, self.max_impact_frac)

    def fill_prices(
        self, mark: FloatArray, sell_notional_usd: FloatArray, buy_notional_usd: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Sells fill below mark and buys above it, by the average slippage of each side."""
        return (
            mark * (1.0 - self.slippage_frac(sell_notional_usd)),
            mark * (1.0 + self.slippage_frac(buy_notional_usd)),
        )


@jit(error_model="numpy", inline="always")
def book_price(book_px, flow, depth, max_impact, sign):  # type: ignore[no-untyped-def]
    """Average fill of ``flow`` USD through the linear book, compiled (:class:`LinearImpact`).

    ``book x (1 - min(0.005 x flow / depth, cap))`` for sells (``sign = -1``), ``+`` for buys:
    :meth:`LinearImpact.fill_prices`'s formula, for the kernels that price inside a tick.
    """
    return book_px * (1.0 + sign * min(0.005 * flow / depth, max_impact))
