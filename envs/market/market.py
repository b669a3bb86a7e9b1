"""The online market of a batch of exchanges: one tick at a time, exogenous path plus impact.

:class:`Market` turns a drawn :class:`~envs.scenarios.MarketPath` into the prices of each
tick: the index (exogenous path times the accumulated, decaying impact of liquidation flow),
the venue's last and mark prices, the oracle the margin engine reads, the book depth and the
funding rate. The liquidation flow of a tick moves the next tick's prices, so cascades emerge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.market.depth import permanent_impact_log
from envs.market.funding import funding_rate
from envs.market.oracle import OracleFeed, mark_price
from envs.scenarios import MarketPath, Scenario

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


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
    """Steps the market of ``path`` tick by tick for ``n_envs`` exchanges."""

    def __init__(self, scenario: Scenario, path: MarketPath) -> None:
        """Bind a scenario's constants to one drawn path."""
        self.scenario = scenario
        self.path = path
        n_envs = path.index.shape[1]
        self.n_ticks = path.index.shape[0]
        self.impact_log = np.zeros(n_envs)
        self.premium_ema = np.zeros(n_envs)
        dt = scenario.tick_minutes
        self._impact_decay = float(
            np.exp(-np.log(2.0) * dt / scenario.depth.impact_half_life_minutes)
        )
        self._ema_alpha = 1.0 - float(np.exp(-dt / scenario.funding.premium_ema_minutes))
        self.oracle = OracleFeed(
            n_envs, round(scenario.oracle.delay_minutes / dt), scenario.oracle.floor_price
        )
        self.t = 0

    def prices(self) -> Prices:
        """Prices of the current tick (call once per tick, then :meth:`advance`)."""
        p, t, sc = self.path, self.t, self.scenario
        index = p.index[t] * np.exp(self.impact_log)
        last = index * np.exp(p.basis[t]) * p.wick[t]
        premium = (index * np.exp(p.basis[t]) - index) / index
        self.premium_ema += self._ema_alpha * (premium - self.premium_ema)
        mark = mark_price(last, index, self.premium_ema, sc.venue.mark_method)
        source = mark if sc.oracle.source == "mark" else index
        oracle = self.oracle.update(source, p.frozen[t], p.manipulation[t])
        f = sc.funding
        rate = funding_rate(
            index * (1.0 + self.premium_ema),
            index,
            f.interest_per_interval,
            f.clamp_per_interval,
            f.cap_per_interval,
        )
        depth = sc.depth.normal_usd_per_pct * p.depth_mult[t]
        return Prices(index, last, mark, oracle, depth, rate)

    def advance(
        self,
        sell_notional_usd: FloatArray,
        buy_notional_usd: FloatArray,
        depth_usd_per_pct: FloatArray,
    ) -> None:
        """Apply this tick's liquidation flow to the price and move to the next tick."""
        self.impact_log = self.impact_log * self._impact_decay + permanent_impact_log(
            sell_notional_usd, buy_notional_usd, depth_usd_per_pct, self.scenario.depth.impact_coef
        )
        self.t += 1


def sample_market(scenario: Scenario, seed: int | None = None) -> dict[str, FloatArray]:
    """One path of the market alone (no exchange flow): the columns of ``scenarios sample``."""
    from envs.scenarios import market_path  # local: avoids a cycle at import time

    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    market = Market(scenario, market_path(scenario, rng, 1))
    n = market.n_ticks
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
        "depth_mult": market.path.depth_mult[:, 0].copy(),
        "funding_rate": cols["funding"],
        "precursor": market.path.precursor[:, 0].copy(),
    }
