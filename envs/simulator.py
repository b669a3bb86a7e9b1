"""The full exchange simulation: market, trader population and core, tick by tick.

One tick, in order:

1. **Market**: the index (exogenous path x the decaying impact of earlier liquidation flow),
   the venue's last and mark prices, the oracle, book depth and the funding rate.
2. **Population**: exits, reactions near liquidation, arrivals and ordinary volume, trading at
   the mark and paying taker fees (a share to the fund). Precursors raise arrivals, leverage
   and the long skew before a crash.
3. **Funding**: accrued every tick at the rate of the interval, pro rata.
4. **Core**: margin check at the oracle price, liquidations walking the venue's book through
   the scenario's depth, the fund, ADL or socialised loss (:func:`envs.core.step.core_step`).
5. **Impact**: the tick's net liquidation flow moves the next tick's prices, so liquidations
   can cascade.

The loop runs over ticks; everything inside a tick is vectorised over ``(n_envs, n_accounts)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.core.fund_record import FundRecord
from envs.core.impact import LinearImpact
from envs.core.params import RiskParams
from envs.core.state import ExchangeState, ledger_error
from envs.core.step import StepEvents, core_step
from envs.core.trading import apply_funding
from envs.market.market import Market, Prices
from envs.scenarios import Scenario, market_path
from envs.traders.population import PopulationParams, TraderPopulation

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

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
    extra: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, FloatArray]:
        """Per-exchange totals of every fund flow plus the fund's start, minimum and end."""
        return self.record.totals()


class ExchangeSimulator:
    """A batch of ``n_envs`` exchanges living through one scenario.

    Args:
        scenario: The market scenario.
        risk: Risk parameters (scalars or ``(n_envs,)`` arrays); may be replaced between ticks
            through :attr:`risk` (the environment's actions do that).
        n_envs: Exchanges simulated together, each on its own draw of the scenario.
        n_accounts: Account slots per exchange.
        population: Trader-population parameters (defaults if ``None``).
        fund_to_oi_frac: Initial insurance fund as a share of initial open interest (2%,
            within the 2-6% of Hyperliquid and Binance in the calibration notes).
        seed: Seed for the first :meth:`reset` (``None``: the scenario's default seed).
    """

    def __init__(
        self,
        scenario: Scenario,
        risk: RiskParams | None = None,
        *,
        n_envs: int = 1,
        n_accounts: int = 2_000,
        population: PopulationParams | None = None,
        fund_to_oi_frac: float = 0.02,
        seed: int | None = None,
    ) -> None:
        if n_envs < 1 or n_accounts < 1:
            raise ValueError(
                f"n_envs and n_accounts must be >= 1, got n_envs={n_envs}, n_accounts={n_accounts}"
            )
        if not 0.0 <= fund_to_oi_frac <= 10.0:
            raise ValueError(f"fund_to_oi_frac must lie in [0, 10], got {fund_to_oi_frac!r}")
        self.scenario = scenario
        self.risk = risk if risk is not None else RiskParams()
        self.n_envs = n_envs
        self.n_accounts = n_accounts
        self.population = TraderPopulation(population or PopulationParams())
        self.fund_to_oi_frac = fund_to_oi_frac
        self.reset(scenario.seed if seed is None else seed)

    # ------------------------------------------------------------------ state ----

    def reset(self, seed: int | None = None) -> None:
        """Draw a new market path and trader book; the episode restarts at tick 0."""
        self.seed = self.scenario.seed if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.path = market_path(self.scenario, self.rng, self.n_envs)
        self.market = Market(self.scenario, self.path)
        price = float(self.scenario.price.initial)
        self.state: ExchangeState = self.population.initial_state(
            self.rng, self.n_envs, self.n_accounts, price, self.risk, 0.0
        )
        oi = self.open_interest_usd(np.full(self.n_envs, price))
        self.state.fund_usd[:] = self.fund_to_oi_frac * oi
        self.state.initial_total_usd = self.state.initial_total_usd + self.state.fund_usd
        self.initial_open_interest_usd = oi
        self.record = FundRecord(self.state.fund_usd)
        self.t = 0
        self.max_ledger_error_usd = 0.0

    @property
    def done(self) -> bool:
        """Whether the scenario's horizon is reached."""
        return bool(self.t >= self.market.n_ticks)

    def open_interest_usd(self, mark: FloatArray) -> FloatArray:
        """One side's open interest per exchange: half the gross notional of all positions."""
        return np.asarray(0.5 * np.abs(self.state.size).sum(axis=1) * mark, dtype=np.float64)

    # ------------------------------------------------------------------ step -----

    def step(self) -> Tick:
        """Advance one tick (see the module docstring for the order)."""
        if self.done:
            raise RuntimeError("the episode is over; call reset()")
        sc, t = self.scenario, self.t
        prices = self.market.prices()
        pre = self.path.precursor[t]
        pstr = sc.precursors
        events = StepEvents.zeros(self.n_envs)
        pop = self.population.step(
            self.rng,
            self.state,
            self.risk,
            prices.mark,
            sc.tick_minutes,
            arrival_mult=1.0 + pstr.oi_build * pre,
            leverage_mult=1.0 + pstr.leverage_build * pre,
            long_share_shift=pstr.long_skew * pre,
        )
        events.trading_fees_usd = pop.trading_fees_usd
        events.fund_trading_fee_income_usd = pop.fund_trading_fee_income_usd
        rate_per_tick = prices.funding_rate * sc.tick_minutes / (60.0 * sc.funding.interval_hours)
        funding_paid = apply_funding(self.state, rate_per_tick, prices.mark)
        liq = core_step(
            self.state,
            self.risk,
            prices.oracle,
            LinearImpact(prices.depth_usd_per_pct),
            book_price=prices.last,
        )
        for name in StepEvents.__dataclass_fields__:
            if name not in ("trading_fees_usd", "fund_trading_fee_income_usd"):
                setattr(events, name, getattr(liq, name))
        self.market.advance(
            liq.liquidation_sell_usd, liq.liquidation_buy_usd, prices.depth_usd_per_pct
        )
        self.record.append(events, self.state.fund_usd)
        err = float(np.abs(ledger_error(self.state, prices.mark)).max())
        self.max_ledger_error_usd = max(self.max_ledger_error_usd, err)
        self.t += 1
        return Tick(prices, events, self.open_interest_usd(prices.mark), funding_paid)

    def run(self, progress: Callable[[int], None] | None = None) -> SimulationResult:
        """Run to the horizon, keeping the per-tick :data:`SERIES`."""
        n = self.market.n_ticks - self.t
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
            series["fund_usd"][i] = self.state.fund_usd
            series["n_accounts_open"][i] = (self.state.size != 0.0).sum(axis=1)
            if progress is not None:
                progress(i)
        return SimulationResult(
            scenario=self.scenario,
            series=series,
            record=self.record,
            max_ledger_error_usd=self.max_ledger_error_usd,
            initial_open_interest_usd=self.initial_open_interest_usd,
        )
