"""The factor model of a multi-market exchange: N markets' exogenous paths from one draw.

Market 0 is the factor market (BTC-like): its path is :func:`~fundgym.envs.scenarios.market_path`
of the scenario, to the bit, drawn from ``rng`` first. Every other market ``i`` moves with it
through its log returns, tick by tick::

    r_i = beta_i x F + crash_i + sigma_i x m x z_i - (sigma_i x m)^2 / 2 + J_i + idio_crash_i

where ``F`` is the factor's base log return (market 0's GARCH or GBM draw plus its jumps, the
scripted crash left out), ``crash_i`` the market's legs of the scenario's crash
(``crash_beta`` times each leg's log move, ``beta`` by default, or explicit returns per leg:
:meth:`~fundgym.envs.scenarios.MarketSpec.crash_legs`), ``sigma_i`` its own volatility per
tick, ``m`` the factor's volatility multiplier (regimes, crash, precursors), ``z_i`` standard
normals, ``J_i`` its own Merton jumps (rate scaled by the factor's regime) and
``idio_crash_i`` a crash of its own. With ``crash_beta`` left at ``beta``, ``r_i = beta_i x
r_0 + noise``: the regression of a market's log returns on market 0's recovers ``beta_i``.
The basis, wicks, depth multiplier and oracle columns come from the market's own ``venue``,
``oracle``, ``funding`` and ``depth_collapses`` (the scenario's where it gives none), with its
own noise; the depth noise level, precursors and volatility multiplier are the exchange's,
shared.

Randomness: market 0 draws from ``rng`` exactly as a one-market scenario does; markets 1..N-1
draw from ``rng.spawn(N - 1 + K)``'s first N - 1 children, one independent stream each
(numpy's ``SeedSequence`` spawning), and the scenario's K collateral assets from the last K
(:mod:`fundgym.envs.market.collateral`), so the same seed gives the same numbers, adding a
market at the end or any collateral asset leaves the markets' paths unchanged, and changing
one market's parameters changes no other market.

Layout: every column of :class:`MarketsPath` is indexed ``[tick, exchange, market]``, shape
``(n_ticks, n_envs, n_markets)``: :class:`~fundgym.envs.scenarios.MarketPath`'s ``[tick,
exchange]`` with the market axis last. The memory is exchange-major (each column is the
transpose of a C-ordered ``(n_envs, n_ticks, n_markets)`` array), as
:class:`~fundgym.envs.market.market.Market` stores one market's paths: the compiled tick runs
one exchange's ticks in a row and, each tick, reads all its markets, so it walks consecutive
addresses, and an exchange's reset writes one contiguous block. ``[:, :, m]`` is market
``m``'s ``(n_ticks, n_envs)`` view; :meth:`MarketsPath.market` copies it into a
:class:`~fundgym.envs.scenarios.MarketPath`.

Nothing here simulates: :class:`~fundgym.envs.markets_simulator.MarketsSimulator` runs the
markets drawn here; the one-market tick refuses a multi-market scenario
(:func:`~fundgym.envs.scenarios.require_single_market`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from fundgym.envs.market.collateral import CollateralPath, draw_collateral
from fundgym.envs.market.price import MINUTES_PER_YEAR, merton_jump_log_returns
from fundgym.envs.scenarios import (
    FactorDraw,
    MarketPath,
    MarketSpec,
    Scenario,
    check_path,
    crash_path,
    draw_factor,
    venue_path,
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass
class MarketsPath:
    """The exogenous paths of an exchange's markets, ``(n_ticks, n_envs, n_markets)`` arrays.

    The columns mean what :class:`~fundgym.envs.scenarios.MarketPath`'s do, per market;
    ``vol_mult`` and ``precursor`` are the exchange's, the same in every market.

    Attributes:
        names: The markets' names, in market order (``Scenario.market_names``).
        index: Other venues' price before this venue's liquidation impact.
        basis: This venue's log basis vs index.
        wick: Multiplier on this venue's last price only (1 = none).
        depth_mult: Depth multiplier (1 = normal); depth is the market's normal depth
            (``depth_scale`` x the scenario's) times this.
        frozen: Oracle frozen at its last value.
        manipulation: Multiplier on the oracle's source price.
        vol_mult: Volatility multiplier (regimes, crash, precursors).
        precursor: Precursor intensity in [0, strength].
        collateral: The collateral assets' redemption, index and book prices (an empty
            asset axis without a ``collateral`` section).
    """

    names: tuple[str, ...]
    index: FloatArray
    basis: FloatArray
    wick: FloatArray
    depth_mult: FloatArray
    frozen: BoolArray
    manipulation: FloatArray
    vol_mult: FloatArray
    precursor: FloatArray
    collateral: CollateralPath

    @property
    def n_markets(self) -> int:
        """Markets, the last axis."""
        return len(self.names)

    def market(self, m: int) -> MarketPath:
        """Market ``m``'s columns as a one-market path (contiguous ``(n_ticks, n_envs)`` copies)."""
        return MarketPath(
            **{
                f.name: np.ascontiguousarray(getattr(self, f.name)[:, :, m])
                for f in fields(MarketPath)
            }
        )


def draw_markets(scenario: Scenario, rng: np.random.Generator, n_envs: int = 1) -> MarketsPath:
    """Draw every market of ``scenario`` for ``n_envs`` exchanges (module docstring).

    A scenario without a ``markets`` section gives one market, its
    :func:`~fundgym.envs.scenarios.market_path`; its ``collateral`` section, the assets'
    prices in :attr:`MarketsPath.collateral`.

    Raises:
        NonFinitePathError: A drawn value is not finite (or a price or multiplier not > 0);
            the message names the scenario, the market or collateral asset, the column and
            the tick.
    """
    factor = draw_factor(scenario, rng, n_envs)
    paths = [factor.path]
    others = scenario.markets[1:]
    n_children = len(others) + len(scenario.collateral)
    children = rng.spawn(n_children) if n_children else []
    paths += [
        _draw_market(scenario, spec, factor, child, n_envs)
        for spec, child in zip(others, children[: len(others)], strict=True)
    ]
    columns = _stack(paths)
    collateral = draw_collateral(
        scenario, columns["index"], factor.t, children[len(others) :], n_envs
    )
    return MarketsPath(names=scenario.market_names, collateral=collateral, **columns)


def _draw_market(
    sc: Scenario,
    spec: MarketSpec,
    factor: FactorDraw,
    rng: np.random.Generator,
    n_envs: int,
) -> MarketPath:
    """Market ``spec``'s path from the factor's draw and its own stream ``rng``."""
    n, dt = sc.n_ticks, sc.tick_minutes
    shape = (n, n_envs)
    log_ret = spec.beta * factor.base_log_ret
    if spec.idio_vol_annual > 0.0:
        sigma = spec.idio_vol_annual * math.sqrt(dt / MINUTES_PER_YEAR) * factor.path.vol_mult
        log_ret += sigma * rng.standard_normal(shape) - 0.5 * sigma**2
    if spec.jumps is not None:
        j = spec.jumps
        log_ret += merton_jump_log_returns(
            rng,
            n,
            n_envs,
            j.rate_per_day,
            j.mean_log,
            j.std_log,
            dt,
            rate_multiplier=factor.jump_mult,
        )
    if sc.crash is not None and spec.crash_returns is not None:
        log_ret += crash_path(sc.crash.start_minute, spec.crash_legs(sc.crash), n, dt)[0][:, None]
    elif sc.crash is not None:  # scaled in log terms, exactly: any multiple keeps prices > 0
        log_ret += (spec.crash_scale * factor.crash_ret)[:, None]
    if spec.idio_crash is not None:
        own = spec.idio_crash
        log_ret += crash_path(own.start_minute, own.legs, n, dt)[0][:, None]
    log_ret[0] = 0.0
    assert spec.initial is not None  # required from markets[1] on (Scenario's rules)
    with np.errstate(over="ignore"):  # an overflow is reported by check_path, with its tick
        index = spec.initial * np.exp(np.cumsum(log_ret, axis=0))
    path = venue_path(
        sc,
        index,
        factor.path.vol_mult,
        sc.venue if spec.venue is None else spec.venue,
        sc.oracle if spec.oracle is None else spec.oracle,
        sc.funding if spec.funding is None else spec.funding,
        sc.depth.collapses if spec.depth_collapses is None else spec.depth_collapses,
        rng,
        n_envs,
        factor.t,
        factor.crash_mask,
        factor.path.precursor,
    )
    check_path(sc, path, spec.name)
    return path


def _stack(paths: list[MarketPath]) -> dict[str, Any]:
    """One ``[tick, exchange, market]`` array per column, exchange-major in memory."""
    columns: dict[str, Any] = {}
    for f in fields(MarketPath):
        first = getattr(paths[0], f.name)
        n_ticks, n_envs = first.shape
        out = np.empty((n_envs, n_ticks, len(paths)), dtype=first.dtype)
        for m, path in enumerate(paths):
            out[:, :, m] = getattr(path, f.name).T
        columns[f.name] = out.transpose(1, 0, 2)
    return columns
