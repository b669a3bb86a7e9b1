"""The online market of a batch of exchanges: one tick at a time, exogenous path plus impact.

:class:`Market` turns drawn :class:`~fundgym.envs.scenarios.MarketPath` columns into the prices of
each tick: the index (exogenous path times the accumulated impact of liquidation flow: a permanent
share and a transient share the book refills, ``docs/impact.md``),
the venue's last and mark prices, the oracle the margin engine reads, the book depth and the funding
rate. The liquidation flow of a tick moves the next tick's prices, so cascades emerge.

Each exchange of the batch carries its own scenario, path and clock (``t[e]``), so one exchange
can be reset (a vector environment's autoreset) while the others go on. Paths are padded
``(max_ticks, n_envs)`` arrays gathered at each exchange's own tick, and the scenario constants
are ``(n_envs,)`` arrays: a tick is one array program over the batch.

Each path array is the transpose of a C-ordered ``(n_envs, max_ticks)`` array, so one exchange's
path lies in consecutive memory: its reset writes one contiguous row per field (a column of a
C-ordered array touched a cache line per tick, 1,440 a field, about 0.2 ms a reset once the tick
had evicted them), and the compiled tick, which runs one exchange's ticks in a row, reads
consecutive addresses. Python indexes ``paths[name][t, e]``; the compiled tick takes the
C-ordered arrays themselves (:meth:`Market.path_arrays`) and indexes ``[e, t]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fundgym.envs import libm
from fundgym.envs.market import kernels
from fundgym.envs.market.depth import bounded_impact_log, walk_book
from fundgym.envs.market.funding import funding_rate
from fundgym.envs.market.oracle import OracleFeed, mark_price
from fundgym.envs.scenarios import MarketPath, Scenario, market_path

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

_PATH_FIELDS = (
    "index",
    "basis",
    "wick",
    "depth_mult",
    "frozen",
    "manipulation",
    "vol_mult",
    "precursor",
)
#: Path fields the compiled tick reads, in ``kernels.PATH_*`` order.
_KERNEL_PATHS = ("index", "basis", "wick", "depth_mult", "manipulation", "precursor")
assert _KERNEL_PATHS.index("precursor") == kernels.PATH_PRECURSOR
_LN2 = float(np.log(2.0))


@dataclass
class Prices:
    """One tick's prices per exchange, ``(n_envs,)`` each."""

    index: FloatArray
    last: FloatArray
    mark: FloatArray
    oracle: FloatArray
    depth_usd_per_pct: FloatArray
    funding_rate: FloatArray  # per funding interval


class Market:
    """Steps the markets of ``n_envs`` exchanges tick by tick, each on its own scenario."""

    def __init__(self, n_envs: int) -> None:
        """An empty batch; every exchange needs :meth:`reset_env` before the first tick."""
        self.n_envs = n_envs
        self.scenarios: list[Scenario | None] = [None] * n_envs
        self.paths: dict[str, np.ndarray[Any, Any]] = {}
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.n_ticks = np.zeros(n_envs, dtype=np.int64)
        # Per-exchange scalars, one row each (MK_* rows): the numpy methods below and the
        # compiled tick (fundgym.envs.market.kernels) read and write the same array.
        self.scalars = np.zeros((kernels.N_MARKET_SCALARS, n_envs))
        self.tick_minutes: float | None = None
        self.mark_last = np.zeros(n_envs, dtype=bool)
        self.oracle_index = np.zeros(n_envs, dtype=bool)
        self.oracle = OracleFeed(n_envs)
        self._cols = np.arange(n_envs)

    @property
    def impact_log(self) -> FloatArray:
        """Log-price impact of liquidation flow the index carries now, ``(n_envs,)`` (a copy).

        The permanent impact plus the transient share of the book's walk (:meth:`advance`),
        smoothly bounded (:func:`~fundgym.envs.market.depth.bounded_impact_log`).
        """
        k = kernels
        sc = self.scalars
        return bounded_impact_log(
            sc[k.MK_IMPACT_PERMANENT_LOG] + sc[k.MK_IMPACT_TRANSIENT_COEF] * sc[k.MK_BOOK_WALK_LOG]
        )

    @property
    def premium_ema(self) -> FloatArray:
        """Smoothed premium of last over index, ``(n_envs,)`` (a view)."""
        out: FloatArray = self.scalars[kernels.MK_PREMIUM_EMA]
        return out

    @premium_ema.setter
    def premium_ema(self, value: FloatArray) -> None:
        self.scalars[kernels.MK_PREMIUM_EMA] = value

    def path_arrays(self) -> tuple[FloatArray, ...]:
        """The float paths in ``kernels.PATH_*`` order for the compiled tick, ``(n_envs, ticks)``.

        Exchange-major (the C-ordered arrays :attr:`paths` are transposes of), indexed
        ``[e, t]``: C-ordered whatever the batch size, so the compiled tick has one signature.
        (``paths[name]`` itself is C- and F-contiguous at one exchange and F-ordered above,
        which numba types as two layouts: the tick was compiled twice, about a minute each.)
        """
        return tuple(self.paths[name].T for name in _KERNEL_PATHS)

    def frozen_rows(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """The oracle-freeze path as :meth:`path_arrays` gives the others: ``(n_envs, ticks)``."""
        return self.paths["frozen"].T

    def reset_env(self, env: int, scenario: Scenario, path: MarketPath) -> None:
        """Install a fresh path (one column) and the scenario's constants for exchange ``env``."""
        if self.tick_minutes is None:
            self.tick_minutes = scenario.tick_minutes
        elif scenario.tick_minutes != self.tick_minutes:
            raise ValueError(
                f"every exchange of a batch needs the same tick_minutes: scenario "
                f"{scenario.name!r} has {scenario.tick_minutes}, the batch {self.tick_minutes}"
            )
        n = path.index.shape[0]
        self._grow(n)
        for name in _PATH_FIELDS:
            col = getattr(path, name)[:, 0]
            row = self.paths[name].T[env]  # the exchange's path: contiguous (module docstring)
            row[:n] = col
            if n < row.shape[0]:  # past the path's end: its last value (never frozen)
                row[n:] = col[-1] if name != "frozen" else False
        sc = scenario
        dt = sc.tick_minutes
        self.scenarios[env] = sc
        self.t[env], self.n_ticks[env] = 0, n
        k, f = kernels, sc.funding
        col = self.scalars[:, env]
        col[k.MK_BOOK_WALK_LOG] = 0.0
        col[k.MK_IMPACT_PERMANENT_LOG] = 0.0
        col[k.MK_PREMIUM_EMA] = 0.0
        col[k.MK_IMPACT_DECAY] = np.exp(-_LN2 * dt / sc.depth.impact_half_life_minutes)
        col[k.MK_EMA_ALPHA] = 1.0 - np.exp(-dt / sc.funding.premium_ema_minutes)
        permanent = sc.depth.impact_permanent_frac
        col[k.MK_IMPACT_PERMANENT_COEF] = sc.depth.impact_coef * permanent
        col[k.MK_IMPACT_TRANSIENT_COEF] = sc.depth.impact_coef * (1.0 - permanent)
        col[k.MK_DEPTH_NORMAL] = sc.depth.normal_usd_per_pct
        col[k.MK_INTEREST] = f.interest_per_interval
        col[k.MK_CLAMP] = f.clamp_per_interval
        col[k.MK_CAP] = f.cap_per_interval
        self.mark_last[env] = sc.venue.mark_method == "last"
        self.oracle_index[env] = sc.oracle.source == "index"
        self.oracle.reset_env(env, round(sc.oracle.delay_minutes / dt), sc.oracle.floor_price)

    def set_normal_depth(self, env: int, depth_usd_per_pct: float) -> None:
        """Exchange ``env``'s normal book depth, USD per 1% (the scenario's, until this call).

        The simulator sets it from the exchange's starting open interest when the scenario
        gives ``depth.oi_to_depth``, once the book is drawn.
        """
        if not (math.isfinite(depth_usd_per_pct) and depth_usd_per_pct > 0.0):
            raise ValueError(f"normal depth must be finite and > 0, got {depth_usd_per_pct!r}")
        self.scalars[kernels.MK_DEPTH_NORMAL, env] = depth_usd_per_pct

    def _grow(self, n: int) -> None:
        have = next(iter(self.paths.values())).shape[0] if self.paths else 0
        if n <= have:
            return
        for name in _PATH_FIELDS:
            dtype = bool if name == "frozen" else np.float64
            rows = np.zeros((self.n_envs, n), dtype=dtype)  # exchange-major (module docstring)
            if have:
                old = self.paths[name].T
                rows[:, :have] = old
                rows[:, have:] = old[:, have - 1 : have] if name != "frozen" else False
            self.paths[name] = rows.T

    def column(self, name: str) -> FloatArray:
        """Path field ``name`` at each exchange's current tick, ``(n_envs,)``."""
        return np.asarray(self.paths[name][self.t, self._cols])

    def prices(self) -> Prices:
        """Prices of the current tick (call once per tick, then :meth:`advance`).

        The numpy reference of :func:`fundgym.envs.market.kernels.prices_one` (the compiled tick).
        """
        k = kernels
        sc = self.scalars
        index = self.column("index") * libm.exp(self.impact_log)
        basis = self.column("basis")
        last = index * libm.exp(basis) * self.column("wick")
        premium = libm.expm1(basis)
        self.premium_ema += sc[k.MK_EMA_ALPHA] * (premium - self.premium_ema)
        ema = self.premium_ema
        mark = np.where(self.mark_last, last, mark_price(last, index, ema))
        source = np.where(self.oracle_index, index, mark)
        oracle = self.oracle.update(
            source, self.paths["frozen"][self.t, self._cols], self.column("manipulation")
        )
        rate = funding_rate(
            index * (1.0 + ema), index, sc[k.MK_INTEREST], sc[k.MK_CLAMP], sc[k.MK_CAP]
        )
        depth = sc[k.MK_DEPTH_NORMAL] * self.column("depth_mult")
        return Prices(index, last, mark, oracle, depth, rate)

    def advance(
        self,
        sell_notional_usd: FloatArray,
        buy_notional_usd: FloatArray,
        depth_usd_per_pct: FloatArray,
    ) -> None:
        """Apply this tick's liquidation flow to the price and move every clock on.

        A book with resilience (``docs/impact.md``): what earlier flow walked refills with
        ``impact_half_life_minutes`` (``MK_IMPACT_DECAY`` a tick), then the tick's net flow
        walks the square-root book further (:func:`~fundgym.envs.market.depth.walk_book`). Of
        the walk's move, ``impact_coef`` reaches the index: ``impact_permanent_frac`` of it for
        good, the rest as long as the book stays walked (:attr:`impact_log`).
        """
        k = kernels
        sc = self.scalars
        walk = sc[k.MK_BOOK_WALK_LOG] * sc[k.MK_IMPACT_DECAY]
        new_walk = walk_book(walk, sell_notional_usd, buy_notional_usd, depth_usd_per_pct)
        sc[k.MK_IMPACT_PERMANENT_LOG] = sc[k.MK_IMPACT_PERMANENT_LOG] + sc[
            k.MK_IMPACT_PERMANENT_COEF
        ] * (new_walk - walk)
        sc[k.MK_BOOK_WALK_LOG] = new_walk
        self.t += 1


def sample_market(scenario: Scenario, seed: int | None = None) -> dict[str, FloatArray]:
    """One path of the market alone (no exchange flow): the columns of ``scenarios sample``."""
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    market = Market(1)
    market.reset_env(0, scenario, market_path(scenario, rng, 1))
    n = int(market.n_ticks[0])
    cols = {k: np.empty(n) for k in ("index", "last", "mark", "oracle", "depth", "funding")}
    zero = np.zeros(1)
    for t in range(n):
        pr = market.prices()
        cols["index"][t], cols["last"][t], cols["mark"][t] = pr.index[0], pr.last[0], pr.mark[0]
        cols["oracle"][t], cols["depth"][t] = pr.oracle[0], pr.depth_usd_per_pct[0]
        cols["funding"][t] = pr.funding_rate[0]
        market.advance(zero, zero, pr.depth_usd_per_pct)
    return {
        "step": np.arange(n, dtype=np.float64),
        "time_min": np.arange(n) * scenario.tick_minutes,
        "mark_price": cols["mark"],
        "index_price": cols["index"],
        "last_price": cols["last"],
        "oracle_price": cols["oracle"],
        "depth_usd": cols["depth"],
        "depth_mult": market.paths["depth_mult"][:n, 0].copy(),
        "funding_rate": cols["funding"],
        "precursor": market.paths["precursor"][:n, 0].copy(),
    }
