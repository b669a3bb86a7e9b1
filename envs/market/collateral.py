"""Collateral assets' prices: what a token redeems for, its external index, the venue's book.

A scenario's ``collateral`` section (:class:`~fundgym.envs.scenarios.CollateralSpec`) lists
the assets accounts can post besides USD. Each has three prices, every tick and exchange:

* ``redemption``: 1 USD for a stable; ``conversion_ratio`` times its market's index for a
  liquid-staking token (wBETH: about 1.07 ETH);
* ``index``: its price across venues, ``redemption x index_depeg x noise`` (UST fell to
  $0.037 everywhere in May 2022);
* ``book``: the venue's own thin book, ``index x book_depeg x noise`` (Binance's USDe book
  printed $0.6567 on 10 Oct 2025, a depeg of that book alone).

A depeg is scripted by waypoints ``(minute, level)``, interpolated linearly in log price
between them and held before the first and after the last, so a level printed at a waypoint's
minute is exactly the scripted one. The noise is Gaussian in log price, independent across
ticks, with the ``-sigma^2 / 2`` term that keeps its mean at 1; at 0 bps it is exactly 1.

Which price the venue marks collateral at is its choice, each with its failure mode
(``docs/markets.md``, "Collateral"): its own book (Binance, 10 Oct 2025: thin books printed
USDe at $0.6567, wBETH at -88%, and $283M of compensation followed), the external index, or
the redemption value (a peg that truly broke, UST, still counts at $1).

Randomness: :func:`~fundgym.envs.market.factor.draw_markets` gives each asset its own child
stream, spawned after the markets' children, so adding an asset changes no market's path.
Each asset draws its index noise, then its book noise, whatever their size, so changing one
noise level leaves the other's draws alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fundgym.envs.scenarios import (
    CollateralSpec,
    DepegPointSpec,
    NonFinitePathError,
    Scenario,
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: The price columns of :class:`CollateralPath`, each ``(n_ticks, n_envs, n_collateral)``.
PRICE_COLUMNS = ("redemption", "index", "book")


@dataclass
class CollateralPath:
    """The collateral assets' prices, ``(n_ticks, n_envs, n_collateral)`` arrays in USD.

    Indexed ``[tick, exchange, asset]`` and exchange-major in memory, as
    :class:`~fundgym.envs.market.factor.MarketsPath`. With no collateral section the asset
    axis is empty.

    Attributes:
        names: The assets' names, in the section's order (``Scenario.collateral_names``).
        redemption: What one token redeems for: 1 for a stable, conversion ratio x its
            market's index for an lst.
        index: The external price: redemption x the scripted index depeg x noise.
        book: The venue's own book: index x the scripted book depeg x noise.
    """

    names: tuple[str, ...]
    redemption: FloatArray
    index: FloatArray
    book: FloatArray

    @property
    def n_collateral(self) -> int:
        """Collateral assets, the last axis."""
        return len(self.names)


def depeg_levels(points: tuple[DepegPointSpec, ...], t: FloatArray) -> FloatArray:
    """The scripted multiple at each minute ``t``: 1 without waypoints.

    Linear in log price between waypoints, held before the first and after the last: a
    depeg from 1 to 0.04 is 0.2 halfway in time, the geometric mean, as a steady rate of fall.
    """
    if not points:
        return np.ones(t.size)
    minutes = np.array([p.minute for p in points])
    logs = np.log(np.array([p.level for p in points]))
    return np.asarray(np.exp(np.interp(t, minutes, logs)), dtype=np.float64)


def draw_collateral(
    scenario: Scenario,
    market_index: FloatArray,
    t: FloatArray,
    rngs: list[np.random.Generator],
    n_envs: int,
) -> CollateralPath:
    """Draw every collateral asset's three prices (module docstring).

    Args:
        scenario: The scenario; its ``collateral`` section lists the assets.
        market_index: ``(n_ticks, n_envs, n_markets)`` the markets' index, in
            ``scenario.market_names`` order: an lst's redemption value follows its market's.
        t: ``(n_ticks,)`` minute of each tick.
        rngs: One stream per asset, in order.
        n_envs: Exchanges.

    Raises:
        NonFinitePathError: A drawn price is not finite or not > 0; the message names the
            scenario, the asset, the column and the tick.
    """
    n_ticks = t.size
    columns = {name: np.empty((n_envs, n_ticks, len(rngs))) for name in PRICE_COLUMNS}
    for k, (spec, rng) in enumerate(zip(scenario.collateral, rngs, strict=True)):
        prices = _draw_asset(scenario, spec, market_index, t, rng, n_envs)
        for name, values in zip(PRICE_COLUMNS, prices, strict=True):
            _check_positive(scenario, spec.name, name, values)
            columns[name][:, :, k] = values.T
    return CollateralPath(
        names=scenario.collateral_names,
        **{name: values.transpose(1, 0, 2) for name, values in columns.items()},
    )


def _draw_asset(
    sc: Scenario,
    spec: CollateralSpec,
    market_index: FloatArray,
    t: FloatArray,
    rng: np.random.Generator,
    n_envs: int,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One asset's ``(n_ticks, n_envs)`` redemption, index and book prices."""
    shape = (t.size, n_envs)
    if spec.kind == "lst":
        assert spec.conversion_ratio is not None  # required for an lst (CollateralSpec)
        m = sc.market_names.index(spec.linked_to)
        redemption = spec.conversion_ratio * market_index[:, :, m]
    else:
        redemption = np.ones(shape)
    z = rng.standard_normal((2, *shape))  # index noise, then book noise, always drawn
    index = redemption * depeg_levels(spec.index_depeg, t)[:, None]
    index = index * _noise(z[0], spec.index_noise_bps)
    book = index * depeg_levels(spec.book_depeg, t)[:, None] * _noise(z[1], spec.book_noise_bps)
    return redemption, index, book


def _noise(z: FloatArray, bps: float) -> FloatArray:
    """Log-normal multiplier of mean 1 and log std ``bps``: exactly 1 at 0 bps."""
    sigma = bps * 1e-4
    return np.asarray(np.exp(sigma * z - 0.5 * sigma**2), dtype=np.float64)


def _check_positive(sc: Scenario, asset: str, column: str, values: FloatArray) -> None:
    """Refuse a price that is not finite and > 0, naming where it first breaks."""
    if values.min() > 0.0 and values.max() < np.inf:  # a NaN fails both
        return
    ok = (values > 0.0) & (values < np.inf)
    tick, env = np.unravel_index(int(np.argmin(ok)), ok.shape)
    where = f" of exchange {env}" if ok.shape[1] > 1 else ""
    raise NonFinitePathError(
        f"scenario {sc.name!r}, collateral {asset!r}",
        column,
        float(values[tick, env]),
        f"finite and > 0; first broken at tick {tick} (minute {tick * sc.tick_minutes:g})"
        f"{where} of the drawn path, so this draw is refused",
    )
