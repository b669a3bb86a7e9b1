"""The online market of a batch of exchanges: one tick at a time, exogenous path plus impact.

:class:`Market` turns drawn :class:`~envs.scenarios.MarketPath` columns into the prices of each
tick: the index (exogenous path times the accumulated, decaying impact of liquidation flow),
the venue's last and mark prices, the oracle the margin engine reads, the book depth and the
funding rate. The liquidation flow of a tick moves the next tick's prices, so cascades emerge.

Each exchange of the batch carries its own scenario, path and clock (``t[e]``), so one exchange
can be reset (a vector environment's autoreset) while the others go on. Paths are stored in
padded ``(max_ticks, n_envs)`` arrays and gathered at each exchange's own tick, and the
scenario constants are ``(n_envs,)`` arrays: a tick is one array program over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.market.depth import permanent_impact_log
from envs.market.funding import funding_rate
from envs.market.oracle import OracleFeed, mark_price
from envs.scenarios import MarketPath, Scenario, market_path

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
        self.impact_log = np.zeros(n_envs)
        self.premium_ema = np.zeros(n_envs)
        self.tick_minutes: float | None = None
        z = np.zeros(n_envs)
        self._impact_decay, self._ema_alpha, self._impact_coef = z.copy(), z.copy(), z.copy()
        self._depth_normal, self._interest, self._clamp, self._cap = (
            z.copy(),
            z.copy(),
            z.copy(),
            z.copy(),
        )
        self._mark_last = np.zeros(n_envs, dtype=bool)
        self._oracle_index = np.zeros(n_envs, dtype=bool)
        self.oracle = OracleFeed(n_envs)
        self._cols = np.arange(n_envs)

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
            self.paths[name][:, env] = col[-1] if name != "frozen" else False
            self.paths[name][:n, env] = col
        sc = scenario
        dt = sc.tick_minutes
        self.scenarios[env] = sc
        self.t[env], self.n_ticks[env] = 0, n
        self.impact_log[env] = 0.0
        self.premium_ema[env] = 0.0
        self._impact_decay[env] = np.exp(-np.log(2.0) * dt / sc.depth.impact_half_life_minutes)
        self._ema_alpha[env] = 1.0 - np.exp(-dt / sc.funding.premium_ema_minutes)
        self._impact_coef[env] = sc.depth.impact_coef
        self._depth_normal[env] = sc.depth.normal_usd_per_pct
        f = sc.funding
        self._interest[env], self._clamp[env], self._cap[env] = (
            f.interest_per_interval,
            f.clamp_per_interval,
            f.cap_per_interval,
        )
        self._mark_last[env] = sc.venue.mark_method == "last"
        self._oracle_index[env] = sc.oracle.source == "index"
        self.oracle.reset_env(env, round(sc.oracle.delay_minutes / dt), sc.oracle.floor_price)

    def _grow(self, n: int) -> None:
        have = next(iter(self.paths.values())).shape[0] if self.paths else 0
        if n <= have:
            return
        for name in _PATH_FIELDS:
            dtype = bool if name == "frozen" else np.float64
            grown = np.zeros((n, self.n_envs), dtype=dtype)
            if have:
                grown[:have] = self.paths[name]
                grown[have:] = self.paths[name][have - 1] if name != "frozen" else False
            self.paths[name] = grown

    def column(self, name: str) -> FloatArray:
        """Path field ``name`` at each exchange's current tick, ``(n_envs,)``."""
        return np.asarray(self.paths[name][self.t, self._cols])

    def prices(self) -> Prices:
        """Prices of the current tick (call once per tick, then :meth:`advance`)."""
        index = self.column("index") * np.exp(self.impact_log)
        basis = self.column("basis")
        last = index * np.exp(basis) * self.column("wick")
        premium = np.expm1(basis)
        self.premium_ema += self._ema_alpha * (premium - self.premium_ema)
        mark = np.where(self._mark_last, last, mark_price(last, index, self.premium_ema))
        source = np.where(self._oracle_index, index, mark)
        oracle = self.oracle.update(
            source, self.paths["frozen"][self.t, self._cols], self.column("manipulation")
        )
        rate = funding_rate(
            index * (1.0 + self.premium_ema), index, self._interest, self._clamp, self._cap
        )
        depth = self._depth_normal * self.column("depth_mult")
        return Prices(index, last, mark, oracle, depth, rate)

    def advance(
        self,
        sell_notional_usd: FloatArray,
        buy_notional_usd: FloatArray,
        depth_usd_per_pct: FloatArray,
    ) -> None:
        """Apply this tick's liquidation flow to the price and move every clock on."""
        self.impact_log = self.impact_log * self._impact_decay + permanent_impact_log(
            sell_notional_usd, buy_notional_usd, depth_usd_per_pct, self._impact_coef
        )
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
