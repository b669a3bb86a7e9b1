"""The full exchange simulation: market, trader population and core, tick by tick.

One tick, in order:

1. **Market**: the index (exogenous path x the decaying impact of earlier liquidation flow),
   the venue's last and mark prices, the oracle, book depth and the funding rate.
2. **Population**: exits, reactions near liquidation, arrivals and ordinary volume, trading at
   the mark and paying taker fees (a share to the fund). Precursors raise arrivals, leverage
   and the long skew before a crash.
3. **Funding**: accrued every tick at the rate of the interval, pro rata.
4. **Fund portfolio**: the fund's buckets accrue yield and are marked to the index and the
   current (one-day EWMA) volatility; only their *liquid* value is put at the margin
   engine's disposal.
5. **Core**: margin check at the oracle price, liquidations walking the venue's book through
   the scenario's depth, the fund, ADL or socialised loss (:func:`envs.core.step.core_step`);
   what the core paid or received is then withdrawn from or paid into the buckets (stable
   first, then yield within its withdrawal limit, volatile, hedge).
6. **Impact**: the tick's net liquidation flow moves the next tick's prices, so liquidations
   can cascade.

Money the portfolio gains or loses against the outside world (yield, price moves of the
volatile bucket, option marks, spreads and fees) enters the ledger as an external flow
(``net_deposits_usd``), so the books still balance.

The loop runs over ticks; everything inside a tick is vectorised over ``(n_envs, n_accounts)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.core.fund_allocation import (
    AllocationParams,
    FundPortfolio,
    accrue,
    pay,
    rebalance,
    receive,
)
from envs.core.fund_record import FundRecord
from envs.core.impact import LinearImpact
from envs.core.params import RiskParams
from envs.core.rng import BatchRandom
from envs.core.state import ExchangeState, ledger_error
from envs.core.step import StepEvents, core_step
from envs.core.trading import apply_funding
from envs.market.market import Market, Prices
from envs.scenarios import Scenario, market_path
from envs.traders.population import PopulationParams, TraderPopulation

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

ARRIVAL_STREAM = 0xA221
"""Spawn key of each exchange's arrival stream, ``default_rng([seed, ARRIVAL_STREAM])``."""

#: Per-tick series kept by :meth:`ExchangeSimulator.run`, each ``(n_ticks, n_envs)``.
SERIES = (
    "index_price",
    "last_price",
    "mark_price",
    "oracle_price",
    "depth_usd_per_pct",
    "funding_rate",
    "open_interest_usd",
    "fund_usd",
    "n_accounts_open",
)


@dataclass
class Tick:
    """What one tick produced, per exchange."""

    prices: Prices
    events: StepEvents
    open_interest_usd: FloatArray
    funding_paid_usd: FloatArray


@dataclass
class SimulationResult:
    """A whole episode: per-tick series, the fund record and ledger check."""

    scenario: Scenario
    series: dict[str, FloatArray]
    record: FundRecord
    max_ledger_error_usd: float
    initial_open_interest_usd: FloatArray

    def totals(self) -> dict[str, FloatArray]:
        """Per-exchange totals of every fund flow plus the fund's start, minimum and end."""
        return self.record.totals()


class ExchangeSimulator:
    """A batch of ``n_envs`` exchanges, each living through its own scenario and seed.

    Every exchange draws its randomness from its own generator (market path at reset, then the
    trader population tick by tick), so exchange ``e`` of a batch evolves exactly as a
    single-exchange simulator given the same scenario and seed; one exchange can be reset
    (:meth:`reset_env`) while the others go on, as a vector environment's autoreset needs.

    Args:
        scenario: One scenario for every exchange, or one per exchange (same ``tick_minutes``).
        risk: Risk parameters (scalars or ``(n_envs,)`` arrays); may be replaced between ticks
            through :attr:`risk` (the environment's actions do that).
        n_envs: Exchanges simulated together.
        n_accounts: Account slots per exchange.
        population: Trader-population parameters (defaults if ``None``).
        fund_to_oi_frac: Initial insurance fund as a share of initial open interest (2%,
            within the 2-6% of Hyperliquid and Binance in the calibration notes).
        allocation: Terms of the fund's buckets (yield, withdrawal limits, option costs); the
            fund starts all in ``stable`` until :meth:`set_allocation` moves it.
        population_minutes: Clock of the trader population (``None``: every tick). Arrivals,
            exits, reactions and volume are slow flows; running them every few minutes with
            their rates scaled to the elapsed time keeps them while the market and the margin
            engine still move every tick (the environment uses 5 minutes for speed).
        seed: One seed (exchange ``e`` gets ``seed + e``, Gymnasium's convention for vector
            envs), one per exchange, or ``None`` for the first scenario's default seed.
    """

    def __init__(
        self,
        scenario: Scenario | Sequence[Scenario],
        risk: RiskParams | None = None,
        *,
        n_envs: int = 1,
        n_accounts: int = 2_000,
        population: PopulationParams | None = None,
        fund_to_oi_frac: float = 0.02,
        seed: int | Sequence[int] | None = None,
        allocation: AllocationParams | None = None,
        population_minutes: float | None = None,
    ) -> None:
        if n_envs < 1 or n_accounts < 1:
            raise ValueError(
                f"n_envs and n_accounts must be >= 1, got n_envs={n_envs}, n_accounts={n_accounts}"
            )
        if not 0.0 <= fund_to_oi_frac <= 10.0:
            raise ValueError(f"fund_to_oi_frac must lie in [0, 10], got {fund_to_oi_frac!r}")
        scenarios = [scenario] * n_envs if isinstance(scenario, Scenario) else list(scenario)
        if len(scenarios) != n_envs:
            raise ValueError(f"got {len(scenarios)} scenarios for n_envs={n_envs}")
        self.scenarios: list[Scenario] = scenarios
        self.risk = risk if risk is not None else RiskParams()
        self.n_envs = n_envs
        self.n_accounts = n_accounts
        self.population = TraderPopulation(population or PopulationParams())
        self.fund_to_oi_frac = fund_to_oi_frac
        self.allocation = allocation or AllocationParams()
        if population_minutes is not None and not population_minutes > 0:
            raise ValueError(f"population_minutes must be > 0, got {population_minutes!r}")
        self.population_minutes = population_minutes
        self._ticks = 0  # ticks stepped by this simulator, across resets (population clock)
        self.reset(seed)

    @property
    def scenario(self) -> Scenario:
        """The first exchange's scenario (the only one when all share it)."""
        return self.scenarios[0]

    # ------------------------------------------------------------------ state ----

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int]:
        if seed is None:
            return [sc.seed for sc in self.scenarios]
        if isinstance(seed, int | np.integer):
            return [int(seed) + e for e in range(self.n_envs)]
        seeds = [int(s) for s in seed]
        if len(seeds) != self.n_envs:
            raise ValueError(f"got {len(seeds)} seeds for n_envs={self.n_envs}")
        return seeds

    def reset(self, seed: int | Sequence[int] | None = None) -> None:
        """Reset every exchange: new market paths and trader books, tick 0."""
        self.seeds = self._seeds(seed)
        self.rng = BatchRandom(self.seeds)
        # Arrivals draw from their own stream (common random numbers across policies).
        self.arrival_rng = BatchRandom.from_generators(
            [np.random.default_rng([int(s), ARRIVAL_STREAM]) for s in self.seeds]
        )
        self.market = Market(self.n_envs)
        self.state: ExchangeState | None = None
        self.initial_open_interest_usd = np.zeros(self.n_envs)
        self.portfolio = FundPortfolio.zeros(self.n_envs)
        self.vol_annual = np.zeros(self.n_envs)
        self.last_index = np.zeros(self.n_envs)
        self.last_depth_mult = np.ones(self.n_envs)
        self.last_depth_usd_per_pct = np.ones(self.n_envs)
        # Per-exchange scenario constants the tick reads, set when an exchange is installed.
        self._oi_build = np.zeros(self.n_envs)
        self._leverage_build = np.zeros(self.n_envs)
        self._long_skew = np.zeros(self.n_envs)
        self._funding_interval_min = np.ones(self.n_envs)
        for e in range(self.n_envs):
            self._install(e, self.scenarios[e])
        self.record = FundRecord(self.state_.fund_usd)
        self.max_ledger_error_usd = 0.0

    @property
    def state_(self) -> ExchangeState:
        """The batch state (always set after construction)."""
        assert self.state is not None
        return self.state

    def reset_env(self, env: int, seed: int, scenario: Scenario | None = None) -> None:
        """Reset exchange ``env`` alone with ``seed`` (and optionally a new scenario)."""
        if scenario is not None:
            self.scenarios[env] = scenario
        self.seeds[env] = int(seed)
        self.rng.reseed(env, int(seed))
        self.arrival_rng.generators[env] = np.random.default_rng([int(seed), ARRIVAL_STREAM])
        self._install(env, self.scenarios[env])

    def _install(self, env: int, scenario: Scenario) -> None:
        """Draw exchange ``env``'s path, then its book, both from its own generator."""
        g = self.rng.generators[env]
        self.market.reset_env(env, scenario, market_path(scenario, g, 1))
        price = float(scenario.price.initial)
        row = self.population.initial_state(
            BatchRandom.from_generators([g]), 1, self.n_accounts, price, self._risk_row(env), 0.0
        )
        oi = float(0.5 * np.abs(row.size).sum() * price)
        row.fund_usd[:] = self.fund_to_oi_frac * oi
        row.initial_total_usd = row.initial_total_usd + row.fund_usd
        if self.state is None:
            self.state = ExchangeState(
                **{k: np.repeat(v, self.n_envs, axis=0) for k, v in vars(row).items()}
            )
        else:
            for name, value in vars(row).items():
                getattr(self.state, name)[env] = value[0]
        self.initial_open_interest_usd[env] = oi
        fresh = FundPortfolio.from_stable(row.fund_usd)
        for name, value in vars(fresh).items():
            getattr(self.portfolio, name)[env] = value[0]
        self.vol_annual[env] = scenario.price.vol_annual
        self._oi_build[env] = scenario.precursors.oi_build
        self._leverage_build[env] = scenario.precursors.leverage_build
        self._long_skew[env] = scenario.precursors.long_skew
        self._funding_interval_min[env] = 60.0 * scenario.funding.interval_hours
        self.last_index[env] = price
        self.last_depth_mult[env] = 1.0
        self.last_depth_usd_per_pct[env] = scenario.depth.normal_usd_per_pct

    @property
    def stressed(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Exchanges whose book depth is below half of normal: lending markets freeze too."""
        return np.asarray(self.last_depth_mult < 0.5)

    def set_allocation(
        self, weights: FloatArray, mask: np.ndarray[Any, np.dtype[np.bool_]] | None = None
    ) -> FloatArray:
        """Rebalance the fund toward ``weights``; returns the cost per exchange.

        ``weights`` is ``(n_envs, 4)`` (stable, yield, volatile, hedge), applied at the last
        index price and volatility. Only exchanges in ``mask`` (default: all) are touched; the
        others keep their portfolio exactly (even a rebalance to current weights has costs).
        """
        state = self.state_
        pf = self.portfolio
        keep = np.zeros(self.n_envs, dtype=bool) if mask is None else ~np.asarray(mask)
        saved = {f.name: getattr(pf, f.name).copy() for f in dataclasses.fields(pf)}
        ext_before = pf.external_pnl_usd.copy()
        cost = rebalance(
            pf, weights, self.last_index, self.vol_annual, self.stressed, self.allocation
        )
        for name, value in saved.items():
            getattr(pf, name)[keep] = value[keep]
        cost = np.where(keep, 0.0, cost)
        state.net_deposits_usd += self.portfolio.external_pnl_usd - ext_before
        state.fund_usd = self.portfolio.value_usd(self.last_index, self.vol_annual)
        return np.asarray(cost, dtype=np.float64)

    def _risk_row(self, env: int) -> RiskParams:
        """Exchange ``env``'s risk parameters as scalars (for drawing its book alone)."""
        numeric: dict[str, Any] = {
            f.name: float(
                np.broadcast_to(np.asarray(getattr(self.risk, f.name)), (self.n_envs,))[env]
            )
            for f in dataclasses.fields(self.risk)
            if f.name not in ("fallback", "tiers")
        }
        return dataclasses.replace(self.risk, **numeric)

    @property
    def t(self) -> int:
        """Ticks elapsed on exchange 0 (all exchanges when they share a clock)."""
        return int(self.market.t[0])

    @property
    def env_done(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """``(n_envs,)``: which exchanges reached their scenario's horizon."""
        return np.asarray(self.market.t >= self.market.n_ticks)

    @property
    def done(self) -> bool:
        """Whether every exchange reached its horizon."""
        return bool(self.env_done.all())

    def open_interest_usd(self, mark: FloatArray) -> FloatArray:
        """One side's open interest per exchange: half the gross notional of all positions."""
        return np.asarray(0.5 * np.abs(self.state_.size).sum(axis=1) * mark, dtype=np.float64)

    # ------------------------------------------------------------------ step -----

    def step(self, check_ledger: bool = True) -> Tick:
        """Advance every exchange one tick (see the module docstring for the order).

        Raises:
            RuntimeError: An exchange is past its horizon; reset it first.
        """
        if self.env_done.any():
            raise RuntimeError(
                f"exchanges {np.flatnonzero(self.env_done).tolist()} are past their horizon; "
                "call reset() or reset_env()"
            )
        state = self.state_
        prices = self.market.prices()
        pre = self.market.column("precursor")
        events = StepEvents.zeros(self.n_envs)
        tick_minutes = self.market.tick_minutes or 1.0
        every = 1
        if self.population_minutes is not None:
            every = max(1, round(self.population_minutes / tick_minutes))
        if self._ticks % every == 0:
            pop = self.population.step(
                self.rng,
                state,
                self.risk,
                prices.mark,
                tick_minutes * every,
                arrival_mult=1.0 + self._oi_build * pre,
                leverage_mult=1.0 + self._leverage_build * pre,
                long_share_shift=self._long_skew * pre,
                arrival_rng=self.arrival_rng,
            )
            events.trading_fees_usd = pop.trading_fees_usd
            events.fund_trading_fee_income_usd = pop.fund_trading_fee_income_usd
        self._ticks += 1
        rate_per_tick = prices.funding_rate * tick_minutes / self._funding_interval_min
        funding_paid = apply_funding(state, rate_per_tick, prices.mark)

        # The fund's buckets: accrue and mark, then lend the core their liquid value.
        log_ret = np.log(prices.index / self.last_index)
        # Implied volatility for the fund's options: a one-day EWMA of squared returns. Implied
        # vol is sticky; an hourly estimate from one-minute returns is so noisy that buying
        # puts at a low reading and marking them at a high one would print money.
        ewma = 1.0 - np.exp(-tick_minutes / 1440.0)
        var_tick = (self.vol_annual**2) * tick_minutes / 525_600.0
        var_tick += ewma * (log_ret**2 - var_tick)
        self.vol_annual = np.sqrt(var_tick * 525_600.0 / tick_minutes)
        self.last_index = prices.index
        self.last_depth_mult = self.market.column("depth_mult")
        self.last_depth_usd_per_pct = np.asarray(prices.depth_usd_per_pct, dtype=np.float64)
        pf = self.portfolio
        ext_before = pf.external_pnl_usd.copy()
        inflow = state.fund_usd - pf.value_usd(pf.mark_price, pf.mark_vol_annual)
        if (inflow > 0.0).any():  # trading fees the population just paid in
            receive(pf, np.maximum(inflow, 0.0))
        accrue(pf, prices.index, self.vol_annual, tick_minutes, self.allocation)
        liquid = pf.liquid_usd(prices.index, self.vol_annual, self.stressed, self.allocation)
        state.fund_usd = liquid.copy()
        liq = core_step(
            state,
            self.risk,
            prices.oracle,
            LinearImpact(prices.depth_usd_per_pct),
            book_price=prices.last,
        )
        for name in StepEvents.__dataclass_fields__:
            if name not in ("trading_fees_usd", "fund_trading_fee_income_usd"):
                setattr(events, name, getattr(liq, name))
        # What the core paid or received goes back into the buckets; a tick with no flow (most
        # ticks) skips both calls, which would be exact no-ops (accrue just marked the fund).
        change = state.fund_usd - liquid
        if (change > 0.0).any():
            receive(pf, np.maximum(change, 0.0))
        if (change < 0.0).any():
            pay(
                pf,
                np.maximum(-change, 0.0),
                prices.index,
                self.vol_annual,
                self.stressed,
                self.allocation,
            )
        state.net_deposits_usd += pf.external_pnl_usd - ext_before
        state.fund_usd = pf.value_usd(prices.index, self.vol_annual)
        self.market.advance(
            liq.liquidation_sell_usd, liq.liquidation_buy_usd, prices.depth_usd_per_pct
        )
        self.record.append(events, state.fund_usd)
        if check_ledger:
            err = float(np.abs(ledger_error(state, prices.mark)).max())
            self.max_ledger_error_usd = max(self.max_ledger_error_usd, err)
        return Tick(prices, events, self.open_interest_usd(prices.mark), funding_paid)

    def run(self, progress: Callable[[int], None] | None = None) -> SimulationResult:
        """Run every exchange to its horizon (they must share one), keeping :data:`SERIES`."""
        n = int((self.market.n_ticks - self.market.t).min())
        series = {k: np.zeros((n, self.n_envs)) for k in SERIES}
        for i in range(n):
            tick = self.step()
            p = tick.prices
            series["index_price"][i] = p.index
            series["last_price"][i] = p.last
            series["mark_price"][i] = p.mark
            series["oracle_price"][i] = p.oracle
            series["depth_usd_per_pct"][i] = p.depth_usd_per_pct
            series["funding_rate"][i] = p.funding_rate
            series["open_interest_usd"][i] = tick.open_interest_usd
            series["fund_usd"][i] = self.state_.fund_usd
            series["n_accounts_open"][i] = (self.state_.size != 0.0).sum(axis=1)
            if progress is not None:
                progress(i)
        return SimulationResult(
            scenario=self.scenario,
            series=series,
            record=self.record,
            max_ledger_error_usd=self.max_ledger_error_usd,
            initial_open_interest_usd=self.initial_open_interest_usd,
        )
