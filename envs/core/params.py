"""Risk parameters of one exchange (or one per exchange in a batch), validated on construction.

Every numeric field is a float or an array of shape ``(n_envs,)``, so a batch of exchanges can
run under different parameters in one array program (the environment's actions set them).
Defaults follow dYdX v4 mainnet for a large-cap market unless noted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

FloatOrArray = float | np.ndarray[Any, np.dtype[np.float64]]
Fallback = Literal["adl", "socialize"]
FALLBACKS: tuple[str, ...] = ("adl", "socialize")


def _check_field(
    name: str, value: Any, low: float, high: float, low_open: bool, high_open: bool
) -> FloatOrArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a float or a (n_envs,) array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if not bad.any():
        bad = (arr <= low if low_open else arr < low) | (arr >= high if high_open else arr > high)
    if bad.any():
        left = ("(" if low_open else "[") + repr(low)
        right = repr(high) + (")" if high_open else "]")
        got = arr[bad].flat[0] if arr.ndim else arr.item()
        raise ValueError(f"RiskParams.{name} must lie in {left}, {right}, got {got!r}")
    return float(arr) if arr.ndim == 0 else arr


# name: (low, high, low_open, high_open)
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "mmr": (0.0, 1.0, True, True),
    "imr": (0.0, 1.0, True, False),
    "liquidation_fee_rate": (0.0, 1.0, False, True),
    "liquidation_fee_fund_share": (0.0, 1.0, False, False),
    "taker_fee_rate": (0.0, 0.1, False, False),
    "trading_fee_fund_share": (0.0, 1.0, False, False),
    "max_liquidation_fraction": (0.0, 1.0, True, False),
    "min_liquidation_notional_usd": (0.0, float("inf"), False, True),
}


@dataclass(frozen=True)
class MarginTiers:
    """Notional brackets for the maintenance requirement, Binance style.

    The requirement of a position of notional ``N`` in bracket ``k`` (``floor_usd[k] <= N <
    floor_usd[k+1]``) is ``N * mmr[k] - cum_usd[k]``, with ``cum_usd[k] = floor_usd[k] *
    (mmr[k] - mmr[k-1]) + cum_usd[k-1]`` so the requirement is continuous across brackets.

    Attributes:
        floor_usd: Lower notional bound of each bracket; starts at 0, strictly increasing.
        mmr: Maintenance margin ratio of each bracket, non-decreasing, each in (0, 1).
        cum_usd: Derived maintenance offsets (computed, not given).
    """

    floor_usd: tuple[float, ...]
    mmr: tuple[float, ...]
    cum_usd: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        floors = np.asarray(self.floor_usd, dtype=np.float64)
        rates = np.asarray(self.mmr, dtype=np.float64)
        if floors.ndim != 1 or floors.shape != rates.shape or floors.size == 0:
            raise ValueError(
                "MarginTiers.floor_usd and .mmr must be non-empty 1-D sequences of equal length, "
                f"got {len(self.floor_usd)} and {len(self.mmr)}"
            )
        if not (np.isfinite(floors).all() and np.isfinite(rates).all()):
            raise ValueError(f"MarginTiers values must be finite, got {self.floor_usd}, {self.mmr}")
        if floors[0] != 0.0 or (np.diff(floors) <= 0).any():
            raise ValueError(
                f"MarginTiers.floor_usd must start at 0 and increase strictly, got {self.floor_usd}"
            )
        if (rates <= 0).any() or (rates >= 1).any() or (np.diff(rates) < 0).any():
            raise ValueError(
                f"MarginTiers.mmr must be non-decreasing values in (0, 1), got {self.mmr}"
            )
        cum = np.zeros_like(rates)
        for k in range(1, rates.size):  # a handful of brackets, computed once
            cum[k] = floors[k] * (rates[k] - rates[k - 1]) + cum[k - 1]
        object.__setattr__(self, "floor_usd", tuple(floors.tolist()))
        object.__setattr__(self, "mmr", tuple(rates.tolist()))
        object.__setattr__(self, "cum_usd", tuple(cum.tolist()))

    @property
    def base_mmr(self) -> float:
        """MMR of the first bracket; the controlled ``RiskParams.mmr`` scales the table by it."""
        return self.mmr[0]

    @classmethod
    def binance_btcusdt_2021(cls) -> MarginTiers:
        """Binance BTCUSDT brackets (2021): 0.4% to $50k, 0.5% to $250k, 1% to $1M, ..."""
        return cls(
            floor_usd=(0, 5e4, 2.5e5, 1e6, 1e7, 2e7, 5e7, 1e8, 2e8, 3e8),
            mmr=(0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.15, 0.25, 0.5),
        )


@dataclass(frozen=True)
class RiskParams:
    """The parameters a risk team sets, per exchange.

    Attributes:
        mmr: Maintenance margin ratio, in (0, 1). dYdX large-cap 3%. With ``tiers`` set, the
            tier table is scaled by ``mmr / tiers.base_mmr``, so ``mmr`` stays the one lever.
        imr: Initial margin ratio, in [mmr, 1]: max leverage on opening is ``1 / imr``.
            dYdX large-cap 5%.
        liquidation_fee_rate: Maximum liquidation fee as a fraction of fill notional, in
            [0, 1). dYdX ``max_liquidation_fee_ppm`` = 15,000 (1.5%).
        liquidation_fee_fund_share: Share of the liquidation fee paid to the insurance fund,
            the rest to the liquidator, in [0, 1]. dYdX sends all of it to the fund (1.0);
            Drift splits it (``if_liquidation_fee`` vs ``liquidator_fee``).
        taker_fee_rate: Trading fee on traded notional, in [0, 0.1]. 5 bps.
        trading_fee_fund_share: Share of trading fees routed to the insurance fund, in [0, 1].
        max_liquidation_fraction: Largest fraction of a position liquidated per step, in
            (0, 1]. dYdX liquidates 10% per block; with one-minute steps we default to 25%.
        min_liquidation_notional_usd: Minimum notional liquidated per step (dYdX $1,000);
            smaller positions are closed whole.
        fallback: What covers a shortfall the fund cannot pay: ``"adl"`` (auto-deleverage
            opposite positions at the bankruptcy price, BitMEX ranking; then socialise any
            remainder) or ``"socialize"`` (share the loss pro rata by size, Drift).
        tiers: Optional notional brackets for the maintenance requirement.
    """

    mmr: FloatOrArray = 0.03
    imr: FloatOrArray = 0.05
    liquidation_fee_rate: FloatOrArray = 0.015
    liquidation_fee_fund_share: FloatOrArray = 1.0
    taker_fee_rate: FloatOrArray = 0.0005
    trading_fee_fund_share: FloatOrArray = 0.1
    max_liquidation_fraction: FloatOrArray = 0.25
    min_liquidation_notional_usd: FloatOrArray = 1000.0
    fallback: Fallback = "adl"
    tiers: MarginTiers | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in _RANGES:
                low, high, lo_open, hi_open = _RANGES[f.name]
                value = _check_field(f.name, getattr(self, f.name), low, high, lo_open, hi_open)
                object.__setattr__(self, f.name, value)
        if np.any(np.asarray(self.imr) < np.asarray(self.mmr)):
            raise ValueError(
                f"RiskParams.imr must be >= mmr (initial margin covers maintenance), "
                f"got imr={self.imr!r}, mmr={self.mmr!r}"
            )
        if self.fallback not in FALLBACKS:
            raise ValueError(
                f"RiskParams.fallback must be one of {FALLBACKS}, got {self.fallback!r}"
            )
        if self.tiers is not None and not isinstance(self.tiers, MarginTiers):
            raise ValueError(f"RiskParams.tiers must be a MarginTiers or None, got {self.tiers!r}")

    def take(self, env: np.ndarray[Any, np.dtype[np.int64]]) -> RiskParams:
        """Per-exchange arrays indexed by ``env`` (one entry per row), without re-validating.

        Indexing already-validated values cannot make them invalid, and the population packs a
        subset of accounts this way several times a tick; validation would dominate its cost.
        """
        out = object.__new__(RiskParams)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RANGES and np.ndim(value) == 1:
                value = np.asarray(value, dtype=np.float64)[env]
            object.__setattr__(out, f.name, value)
        return out

    def column(self, name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Field ``name`` as an ``(n_envs, 1)`` or ``(1, 1)`` column for account arrays."""
        return self._cached(("column", name), lambda v: v.reshape(-1, 1))

    def per_env(self, name: str, n_envs: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Field ``name`` broadcast to shape ``(n_envs,)``."""
        return self._cached(("per_env", name, n_envs), lambda v: np.broadcast_to(v, (n_envs,)))

    def _cached(
        self,
        key: tuple[Any, ...],
        make: Callable[[np.ndarray[Any, np.dtype[np.float64]]], np.ndarray[Any, Any]],
    ) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Memoised read-only views: the step asks for the same shapes every tick."""
        cache: dict[tuple[Any, ...], np.ndarray[Any, Any]] = self.__dict__.setdefault(
            "_view_cache", {}
        )
        view = cache.get(key)
        if view is None:
            view = make(np.asarray(getattr(self, key[1]), dtype=np.float64))
            view.flags.writeable = False
            cache[key] = view
        return view
