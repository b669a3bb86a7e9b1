"""The full exchange simulation: :func:`tick` fixes the order of operations, and nothing else.

One tick, in order (:func:`tick`):

1. **Population** (on its own clock): exits, reactions near liquidation, arrivals and ordinary
   volume, trading at the mark and paying taker fees; the fund's share of the fees is paid
   into the fund. Precursors raise arrivals, leverage and the long skew before a crash
   (compiled: :mod:`fundgym.envs.traders.kernels`).
2. **Funding**: accrued every tick at the rate of the interval, pro rata (compiled).
3. **Fund portfolio**: the fund's buckets accrue yield and are marked to the index and the
   current (one-day EWMA) volatility (:func:`fundgym.envs.fund.portfolio.accrue`).
4. **Margin engine**: margin check at the oracle price, liquidations walking the venue's book
   through the scenario's depth, the fund, ADL or socialised loss (compiled:
   :func:`fundgym.envs.core.step.core_step`, which pays from the fund's *liquid* value and books the
   flows into its buckets once).

Before the tick the market produces its prices (:class:`fundgym.envs.market.market.Market`: the
index is the exogenous path times the decaying impact of earlier liquidation flow; last, mark,
oracle, depth, funding); after it the tick's net liquidation flow moves the next tick's prices, so
liquidations can cascade. :class:`ExchangeSimulator` wires these together for a batch of exchanges
and owns everything that is not the state: the market, the random streams, the parameters in force
(set through :meth:`ExchangeSimulator.set_params`, never by assignment).

:func:`tick` and :meth:`ExchangeSimulator.reference_step` are the numpy statement of one tick.
:meth:`ExchangeSimulator.advance` runs the same order compiled (:mod:`fundgym.envs.tick_kernels`),
``n`` ticks per call with no Python between them, optionally with exchanges on threads; it is
what :meth:`~ExchangeSimulator.step`, :meth:`~ExchangeSimulator.run` and the environment use,
and the tests hold it equal to the reference bit for bit.

Money the fund gains or loses against the outside world (yield, price moves of the volatile
bucket, option marks, spreads and fees) enters the ledger as an external flow
(``net_deposits_usd``), so the books still balance (:func:`fundgym.envs.state.ledger_error`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from fundgym.envs import libm
from fundgym.envs import tick_kernels as tk
from fundgym.envs.core.events import N_EVENTS, StepEvents
from fundgym.envs.core.fund_record import FundRecord
from fundgym.envs.core.impact import LinearImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.rng import BatchStreams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.trading import apply_funding
from fundgym.envs.core.vault import V_ACTIVE, V_CAPITAL, V_CASH, V_PEAK
from fundgym.envs.fund.kernels import allocation_terms, fund_arrays, rebalance_kernel
from fundgym.envs.fund.portfolio import AllocationParams, FundPortfolio, accrue, receive
from fundgym.envs.market.market import Market, Prices
from fundgym.envs.observation import BOOK_STATS
from fundgym.envs.scenarios import Scenario, market_path
from fundgym.envs.state import SimState, ledger_error, open_interest_usd
from fundgym.envs.traders.population import PopulationParams, TraderPopulation

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


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
#: Every per-tick series of a :class:`TickBlock`, in its column order (``tick_kernels.S_*``):
#: :data:`SERIES`, then the funding the accounts paid and the ledger error at the mark (0
#: when the ledger was not checked).
BLOCK_SERIES = (*SERIES, "funding_paid_usd", "ledger_error_usd")
assert BLOCK_SERIES.index("ledger_error_usd") == tk.S_LEDGER_ERROR
assert BLOCK_SERIES.index("fund_usd") == tk.S_FUND_USD
#: Risk-parameter fields that are names or tables, not per-exchange numbers.
_CODED_FIELDS = (
    "fallback",
    "tiers",
    "socialization",
    "adl_policy",
    "liquidation_mode",
    "waterfall",
)
THREADS_ENV = "FUNDGYM_THREADS"
"""Environment variable read when a simulator is built with ``threads=None``."""


@dataclass(frozen=True)
class SimParams:
    """Everything a tick reads that is not state or market: frozen, replaced between ticks.

    Attributes:
        risk: The levers in force (scalars or ``(E,)`` arrays).
        population: The trader population's behaviour.
        allocation: Terms of the fund's buckets (yield, withdrawal limits, option costs).
    """

    risk: RiskParams
    population: TraderPopulation
    allocation: AllocationParams


@dataclass(frozen=True)
class TickInputs:
    """The market's side of one tick, per exchange (``(E,)`` arrays unless noted).

    Attributes:
        prices: This tick's index, last, mark, oracle, depth and funding rate.
        vol_annual: Current annualised volatility (one-day EWMA): marks the fund's options.
        stressed: Whether the lending market is stressed (book depth below half of normal).
        funding_per_tick: Funding rate for this tick (the interval's rate, pro rata).
        tick_minutes: Length of the tick (scalar).
        population_minutes: Minutes of trader flow a population step runs (0: none this tick).
        population_active: ``(E,)`` which exchanges run it this tick: each on its own clock,
            the tick within its episode, so an exchange reset apart from its batch stays on
            the schedule it would have alone.
        arrival_mult: Precursor multiplier of arrivals.
        leverage_mult: Precursor multiplier of new positions' leverage.
        long_share_shift: Precursor and funding shift of the long share of arrivals.
        exit_mult: The traders' exit hazard multiplier (voluntary de-risking under stress).
        prev_oracle: The previous tick's oracle, where the venue liquidation modes' intra-tick
            path starts (0: no previous tick, the episode's first).
        prev_last: The previous tick's last price, where the path of the book the sub-steps'
            fills walk starts (0: none).
    """

    prices: Prices
    vol_annual: FloatArray
    stressed: BoolArray
    funding_per_tick: FloatArray
    tick_minutes: float
    population_minutes: float
    population_active: BoolArray
    arrival_mult: FloatArray
    leverage_mult: FloatArray
    long_share_shift: FloatArray
    exit_mult: FloatArray
    prev_oracle: FloatArray
    prev_last: FloatArray


@dataclass
class Tick:
    """What one tick produced, per exchange."""

    prices: Prices
    events: StepEvents
    open_interest_usd: FloatArray
    funding_paid_usd: FloatArray


@dataclass(frozen=True)
class TickBlock:
    """What :meth:`ExchangeSimulator.advance` produced: ``n`` ticks of every exchange.

    Attributes:
        events: ``(n, n_envs, N_EVENTS)``: each tick's :class:`StepEvents` rows (margin
            engine plus the population's trading fees).
        series: ``(n, n_envs, len(BLOCK_SERIES))``: each tick's prices, open interest, fund
            value, open accounts, funding paid and ledger error, after the tick.
    """

    events: FloatArray
    series: FloatArray

    def __len__(self) -> int:
        return int(self.events.shape[0])

    def event(self, name: str) -> FloatArray:
        """Event field ``name`` (a :attr:`StepEvents.FIELDS` name), ``(n, n_envs)``."""
        out: FloatArray = self.events[:, :, StepEvents.FIELDS.index(name)]
        return out

    def column(self, name: str) -> FloatArray:
        """Series ``name`` (a :data:`BLOCK_SERIES` name), ``(n, n_envs)``."""
        out: FloatArray = self.series[:, :, BLOCK_SERIES.index(name)]
        return out

    def tick(self, i: int) -> Tick:
        """Tick ``i`` of the block, as :meth:`ExchangeSimulator.step` returns it (copies)."""
        row = self.series[i]
        prices = Prices(*(row[:, c].copy() for c in range(tk.S_FUNDING_RATE + 1)))
        return Tick(
            prices,
            StepEvents(self.events[i].copy()),
            row[:, tk.S_OPEN_INTEREST].copy(),
            row[:, tk.S_FUNDING_PAID].copy(),
        )


def tick(
    state: SimState, params: SimParams, inputs: TickInputs, rng: BatchStreams
) -> tuple[StepEvents, FloatArray]:
    """Advance ``state`` by one tick, in place, in the order the module docstring gives.

    Args:
        state: The batch state.
        params: Levers, population behaviour and fund terms.
        inputs: The market's prices and drivers for this tick.
        rng: Per-exchange random streams (the population draws from them).

    Returns:
        The tick's events (margin engine plus trading fees) and the funding each exchange's
        accounts paid, ``(E,)``.
    """
    p = inputs.prices
    risk = params.risk
    trading_fees = fund_trading_income = None
    if inputs.population_minutes > 0.0:
        pop = params.population.step(
            rng,
            state,
            risk,
            p.mark,
            inputs.population_minutes,
            arrival_mult=inputs.arrival_mult,
            leverage_mult=inputs.leverage_mult,
            long_share_shift=inputs.long_share_shift,
            exit_mult=inputs.exit_mult,
            active=inputs.population_active,
        )
        trading_fees = pop.trading_fees_usd
        fund_trading_income = pop.fund_trading_fee_income_usd
        if (fund_trading_income > 0.0).any():
            receive(state.fund, fund_trading_income)
    funding_paid = apply_funding(state, inputs.funding_per_tick, p.mark)
    pf = state.fund
    ext_before = pf.external_pnl_usd.copy()
    accrue(pf, p.index, inputs.vol_annual, inputs.tick_minutes, params.allocation)
    state.net_deposits_usd += pf.external_pnl_usd - ext_before
    events = core_step(
        state,
        risk,
        p.oracle,
        LinearImpact(p.depth_usd_per_pct),
        book_price=p.last,
        fund_stressed=inputs.stressed,
        allocation=params.allocation,
        tick_minutes=inputs.tick_minutes,
        prev_mark=inputs.prev_oracle,
        prev_book_price=inputs.prev_last,
    )
    if trading_fees is not None and fund_trading_income is not None:
        events.trading_fees_usd = trading_fees
        events.fund_trading_fee_income_usd = fund_trading_income
    return events, funding_paid


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

    Every exchange draws its randomness from its own streams (its market path from its own
    generator at reset, then the trader population's per-exchange streams tick by tick), so
    exchange ``e`` of a batch evolves exactly as a single-exchange simulator given the same
    scenario and seed; one exchange can be reset (:meth:`reset_env`) while the others go on,
    as a vector environment's autoreset needs.

    Args:
        scenario: One scenario for every exchange, or one per exchange (same ``tick_minutes``).
        risk: Risk parameters (scalars or ``(n_envs,)`` arrays); replaced between ticks with
            :meth:`set_params` (the environment's actions do that).
        n_envs: Exchanges simulated together.
        n_accounts: Account slots per exchange.
        population: Trader-population parameters (defaults if ``None``).
        fund_to_oi_frac: Initial insurance fund as a share of initial open interest (2%,
            within the 2-6% of Hyperliquid and Binance in the calibration notes).
        vault_to_oi_frac: The backstop vault's capital at each reset as a share of initial
            open interest (0: no vault; :mod:`fundgym.envs.core.vault`). It runs under the
            venue liquidation modes only: ``partial`` has no takeover for it to stand behind.
        seed: One seed (exchange ``e`` gets ``seed + e``, Gymnasium's convention for vector
            envs), one per exchange, or ``None`` for the first scenario's default seed.
        allocation: Terms of the fund's buckets (yield, withdrawal limits, option costs); the
            fund starts all in ``stable`` until :meth:`set_allocation` moves it.
        population_minutes: Clock of the trader population (``None``: every tick). Arrivals,
            exits, reactions and volume are slow flows; running them every few minutes with
            their rates scaled to the elapsed time keeps them while the market and the margin
            engine still move every tick (the environment uses 5 minutes for speed).
        record: Keep a per-tick :class:`~fundgym.envs.core.fund_record.FundRecord` (``run`` and
            evaluation read it; the environment, which sums what it needs, turns it off).
        threads: Threads that step exchanges in parallel in :meth:`advance` (results are
            bit-identical to one thread); ``None`` reads ``FUNDGYM_THREADS`` (default 1).
            Capped at numba's thread count.
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
        vault_to_oi_frac: float = 0.0,
        seed: int | Sequence[int] | None = None,
        allocation: AllocationParams | None = None,
        population_minutes: float | None = None,
        record: bool = True,
        threads: int | None = None,
    ) -> None:
        if n_envs < 1 or n_accounts < 1:
            raise ValueError(
                f"n_envs and n_accounts must be >= 1, got n_envs={n_envs}, n_accounts={n_accounts}"
            )
        if not 0.0 <= fund_to_oi_frac <= 10.0:
            raise ValueError(f"fund_to_oi_frac must lie in [0, 10], got {fund_to_oi_frac!r}")
        if not 0.0 <= vault_to_oi_frac <= 10.0:
            raise ValueError(f"vault_to_oi_frac must lie in [0, 10], got {vault_to_oi_frac!r}")
        scenarios = [scenario] * n_envs if isinstance(scenario, Scenario) else list(scenario)
        if len(scenarios) != n_envs:
            raise ValueError(f"got {len(scenarios)} scenarios for n_envs={n_envs}")
        if population_minutes is not None and not population_minutes > 0:
            raise ValueError(f"population_minutes must be > 0, got {population_minutes!r}")
        self.scenarios: list[Scenario] = scenarios
        self.n_envs = n_envs
        self.n_accounts = n_accounts
        self.fund_to_oi_frac = fund_to_oi_frac
        self.vault_to_oi_frac = vault_to_oi_frac
        self.population_minutes = population_minutes
        self.keep_record = record
        if threads is None:
            text = os.environ.get(THREADS_ENV, "1")
            try:
                threads = int(text)
            except ValueError:
                raise ValueError(
                    f"{THREADS_ENV} must be a whole number of threads >= 1, got {text!r}"
                ) from None
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.threads = min(threads, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        self._pop_columns: dict[float, FloatArray] = {}
        self._params = SimParams(
            risk=RiskParams(),
            population=TraderPopulation(population or PopulationParams()),
            allocation=allocation or AllocationParams(),
        )
        self.set_params(risk if risk is not None else RiskParams())
        self.reset(seed)

    # ------------------------------------------------------------------ params ----

    @property
    def params(self) -> SimParams:
        """Levers, population behaviour and fund terms in force (frozen)."""
        return self._params

    @property
    def risk(self) -> RiskParams:
        """The levers in force (read-only: change them with :meth:`set_params`)."""
        return self._params.risk

    @property
    def population(self) -> TraderPopulation:
        """The trader population's behaviour."""
        return self._params.population

    @property
    def allocation(self) -> AllocationParams:
        """Terms of the fund's buckets."""
        return self._params.allocation

    def set_params(self, risk: RiskParams) -> None:
        """Put ``risk`` in force from the next tick on.

        Raises:
            ValueError: A per-exchange array does not have ``n_envs`` entries, or the
                simulator has a vault and ``risk`` the ``partial`` liquidation mode.
        """
        for f in dataclasses.fields(risk):
            value = getattr(risk, f.name)
            if isinstance(value, np.ndarray) and value.shape not in ((), (self.n_envs,)):
                raise ValueError(
                    f"RiskParams.{f.name} must be a float or an (n_envs,) = ({self.n_envs},) "
                    f"array, got shape {value.shape}"
                )
        if self.vault_to_oi_frac > 0.0 and "vault" not in risk.stages:
            raise ValueError(
                f"vault_to_oi_frac = {self.vault_to_oi_frac!r} needs a 'vault' stage in "
                f"RiskParams.waterfall, got {list(risk.stages)}"
            )
        if self.vault_to_oi_frac > 0.0 and risk.liquidation_mode == "partial":
            raise ValueError(
                f"vault_to_oi_frac = {self.vault_to_oi_frac!r} needs a venue liquidation_mode "
                "(binance, dydx_v4, hyperliquid, bitmex): liquidation_mode 'partial' hands "
                "no account to a backstop vault"
            )
        self._params = dataclasses.replace(self._params, risk=risk)
        # What the compiled tick reads, built once per parameter set.
        self._packed = risk.packed(self.n_envs)
        self._tiers = risk.tier_table()

    # ------------------------------------------------------------------ state ----

    @property
    def scenario(self) -> Scenario:
        """The first exchange's scenario (the only one when all share it)."""
        return self.scenarios[0]

    @property
    def portfolio(self) -> FundPortfolio:
        """The fund (its buckets live in :attr:`state`: this is the same object)."""
        return self.state.fund

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
        self.rng = BatchStreams(self.seeds)
        self.market = Market(self.n_envs)
        self.initial_open_interest_usd = np.zeros(self.n_envs)
        # The tick's drivers per exchange, one row each (tick_kernels.D_*): the volatility
        # estimate, the last tick's index, depth, oracle and last price, and the scenario
        # constants the tick reads.
        self.drivers = np.zeros((tk.N_DRIVERS, self.n_envs))
        self.drivers[tk.D_LAST_DEPTH_MULT] = 1.0
        self.drivers[tk.D_LAST_DEPTH_USD] = 1.0
        self.drivers[tk.D_FUNDING_INTERVAL_MIN] = 1.0
        self.state = self._empty_state()
        for e in range(self.n_envs):
            self._install(e, self.scenarios[e])
        self.record = FundRecord(self.state.fund_usd)
        self.max_ledger_error_usd = 0.0

    def _empty_state(self) -> SimState:
        shape = (self.n_envs, self.n_accounts)
        return SimState.create(np.zeros(shape), np.zeros(shape), np.zeros(shape), 0.0)

    def reset_env(self, env: int, seed: int, scenario: Scenario | None = None) -> None:
        """Reset exchange ``env`` alone with ``seed`` (and optionally a new scenario)."""
        if scenario is not None:
            self.scenarios[env] = scenario
        self.seeds[env] = int(seed)
        self.rng.reseed(env, int(seed))
        self._install(env, self.scenarios[env])

    def _install(self, env: int, scenario: Scenario) -> None:
        """Draw exchange ``env``'s path and book, each from its own stream, and its fund."""
        # The path comes from ``default_rng(seed)``, as before Simulator v2, so every shipped
        # scenario keeps its market paths; the trader streams are separate (BatchStreams).
        g = np.random.default_rng(int(self.seeds[env]))
        self.market.reset_env(env, scenario, market_path(scenario, g, 1))
        price = float(scenario.price.initial)
        row = self.population.initial_state(
            self.rng.env(env), self.n_accounts, price, self._risk_row(env)
        )
        oi = float(open_interest_usd(row, price)[0, 0])
        fund_usd = self.fund_to_oi_frac * oi
        vault_usd = self.vault_to_oi_frac * oi
        st = self.state
        st.collateral_usd[env] = row.collateral_usd[0]
        st.size[env] = row.size[0]
        st.entry_price[env] = row.entry_price[0]
        st.counterparty_size[env] = row.counterparty_size[0]
        st.counterparty_cash_usd[env] = row.counterparty_cash_usd[0]
        for name in ("fee_revenue_usd", "liquidator_rewards_usd", "unrecovered_usd"):
            getattr(st, name)[env] = 0.0
        st.net_deposits_usd[env] = 0.0
        st.initial_total_usd[env] = row.initial_total_usd[0] + fund_usd + vault_usd
        st.vault[env] = 0.0
        st.vault[env, V_CASH] = vault_usd
        st.vault[env, V_CAPITAL] = vault_usd
        st.vault[env, V_PEAK] = vault_usd
        st.vault[env, V_ACTIVE] = 1.0 if vault_usd > 0.0 else 0.0
        fresh = FundPortfolio.from_stable(np.array([fund_usd]))
        for f in dataclasses.fields(FundPortfolio):
            getattr(st.fund, f.name)[env] = getattr(fresh, f.name)[0]
        self.initial_open_interest_usd[env] = oi
        d = self.drivers[:, env]
        d[tk.D_VOL_ANNUAL] = scenario.price.vol_annual
        d[tk.D_BASE_VOL] = scenario.price.vol_annual
        d[tk.D_PEAK_INDEX] = price
        d[tk.D_OI_BUILD] = scenario.precursors.oi_build
        d[tk.D_LEVERAGE_BUILD] = scenario.precursors.leverage_build
        d[tk.D_LONG_SKEW] = scenario.precursors.long_skew
        d[tk.D_FUNDING_INTERVAL_MIN] = 60.0 * scenario.funding.interval_hours
        d[tk.D_LAST_INDEX] = price
        d[tk.D_LAST_DEPTH_MULT] = 1.0
        d[tk.D_LAST_DEPTH_USD] = scenario.depth.normal_usd_per_pct
        # No previous tick: the first tick's venue sub-steps read its own prices, not a path
        # from the initial price (which the first oracle and last price need not equal).
        d[tk.D_LAST_ORACLE] = 0.0
        d[tk.D_LAST_BOOK] = 0.0

    def _driver(self, row: int) -> FloatArray:
        out: FloatArray = self.drivers[row]
        return out

    @property
    def vol_annual(self) -> FloatArray:
        """Current annualised volatility per exchange (one-day EWMA of squared returns)."""
        return self._driver(tk.D_VOL_ANNUAL)

    @vol_annual.setter
    def vol_annual(self, value: FloatArray) -> None:
        self.drivers[tk.D_VOL_ANNUAL] = value

    @property
    def last_index(self) -> FloatArray:
        """The last tick's index price per exchange (the scenario's initial price at reset)."""
        return self._driver(tk.D_LAST_INDEX)

    @last_index.setter
    def last_index(self, value: FloatArray) -> None:
        self.drivers[tk.D_LAST_INDEX] = value

    @property
    def last_depth_mult(self) -> FloatArray:
        """The last tick's book depth relative to normal per exchange."""
        return self._driver(tk.D_LAST_DEPTH_MULT)

    @last_depth_mult.setter
    def last_depth_mult(self, value: FloatArray) -> None:
        self.drivers[tk.D_LAST_DEPTH_MULT] = value

    @property
    def last_depth_usd_per_pct(self) -> FloatArray:
        """The last tick's book depth, USD per 1% of price, per exchange."""
        return self._driver(tk.D_LAST_DEPTH_USD)

    @last_depth_usd_per_pct.setter
    def last_depth_usd_per_pct(self, value: FloatArray) -> None:
        self.drivers[tk.D_LAST_DEPTH_USD] = value

    @property
    def stressed(self) -> BoolArray:
        """Exchanges whose book depth is below half of normal: lending markets freeze too."""
        return np.asarray(self.last_depth_mult < 0.5)

    def fund_value_usd(self) -> FloatArray:
        """The fund's value per exchange at the last index price and volatility."""
        out: FloatArray = self.state.fund.value_usd(self.last_index, self.vol_annual)
        return out

    def fund_weights(self) -> FloatArray:
        """``(E, 4)`` share of the fund in each bucket (stable, yield, volatile, hedge)."""
        out: FloatArray = self.state.fund.weights(self.last_index, self.vol_annual)
        return out

    def set_allocation(self, weights: FloatArray, mask: BoolArray | None = None) -> FloatArray:
        """Rebalance the fund toward ``weights``; returns the cost per exchange.

        ``weights`` is ``(n_envs, 4)`` (stable, yield, volatile, hedge), applied at the last
        index price and volatility. Only exchanges in ``mask`` (default: all) are touched; the
        others keep their portfolio exactly (even a rebalance to current weights has costs).
        The compiled :func:`fundgym.envs.fund.kernels.rebalance_one` does the work (the numpy
        :func:`fundgym.envs.fund.portfolio.rebalance` is its reference, equal to the bit).

        Raises:
            ValueError: A row of ``weights`` is negative, not finite or does not sum to 1.
        """
        w = np.ascontiguousarray(
            np.broadcast_to(np.asarray(weights, dtype=np.float64), (self.n_envs, 4))
        )
        if not np.isfinite(w).all() or (w < 0).any() or not np.allclose(w.sum(axis=1), 1.0):
            raise ValueError(f"target_weights rows must be >= 0 and sum to 1, got {w}")
        move = np.ones(self.n_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        pf = self.state.fund
        ext_before = pf.external_pnl_usd.copy()
        cost = np.zeros(self.n_envs)
        rebalance_kernel(
            fund_arrays(pf),
            w,
            move,
            self.last_index,
            self.vol_annual,
            self.stressed,
            allocation_terms(self.allocation, self._tick_minutes),
            cost,
        )
        self.state.net_deposits_usd += pf.external_pnl_usd - ext_before
        return cost

    def _risk_row(self, env: int) -> RiskParams:
        """Exchange ``env``'s risk parameters as scalars (for drawing its book alone).

        Entries of parameters already in force are valid, so the row skips the checks
        (:meth:`RiskParams.trusted`); a vector env resets every exchange at once.
        """
        risk = self.risk
        row: dict[str, Any] = {}
        for f in dataclasses.fields(risk):
            value = getattr(risk, f.name)
            if f.name not in _CODED_FIELDS:
                value = float(np.broadcast_to(np.asarray(value), (self.n_envs,))[env])
            row[f.name] = value
        return RiskParams.trusted(**row)

    @property
    def t(self) -> int:
        """Ticks elapsed on exchange 0 (all exchanges when they share a clock)."""
        return int(self.market.t[0])

    @property
    def env_done(self) -> BoolArray:
        """``(n_envs,)``: which exchanges reached their scenario's horizon."""
        return np.asarray(self.market.t >= self.market.n_ticks)

    @property
    def done(self) -> bool:
        """Whether every exchange reached its horizon."""
        return bool(self.env_done.all())

    def open_interest_usd(self, mark: FloatArray) -> FloatArray:
        """One side's open interest per exchange: half the gross notional of all positions."""
        return np.asarray(open_interest_usd(self.state, mark).sum(axis=1), dtype=np.float64)

    # ------------------------------------------------------------------ step -----

    @property
    def _tick_minutes(self) -> float:
        return self.market.tick_minutes or 1.0

    @property
    def _population_every(self) -> int:
        """Ticks between population steps; each exchange counts its own ticks within the episode."""
        if self.population_minutes is None:
            return 1
        return max(1, round(self.population_minutes / self._tick_minutes))

    def _ewma_weight(self) -> float:
        """Weight of one tick in the volatility's one-day EWMA."""
        return float(1.0 - np.exp(-self._tick_minutes / 1440.0))

    def _check_horizon(self, n_ticks: int) -> None:
        left = self.market.n_ticks - self.market.t
        if (left < n_ticks).any():
            short = np.flatnonzero(left < n_ticks).tolist()
            raise RuntimeError(
                f"exchanges {short} have fewer than {n_ticks} ticks left (past their horizon "
                "at the end); call reset() or reset_env()"
            )

    def _inputs(self, prices: Prices) -> TickInputs:
        """This tick's market drivers; updates the volatility estimate and last-tick marks."""
        tick_minutes = self._tick_minutes
        every = self._population_every
        active = self.market.t % every == 0
        pop_minutes = tick_minutes * every if active.any() else 0.0
        pre = self.market.column("precursor")
        d = self.drivers
        # Implied volatility for the fund's options: a one-day EWMA of squared returns. Implied
        # vol is sticky; an hourly estimate from one-minute returns is so noisy that buying
        # puts at a low reading and marking them at a high one would print money.
        log_ret = libm.log(prices.index / self.last_index)
        var_tick = (self.vol_annual**2) * tick_minutes / tk.MINUTES_PER_YEAR_VOL
        var_tick += self._ewma_weight() * (log_ret**2 - var_tick)
        self.vol_annual = np.sqrt(var_tick * tk.MINUTES_PER_YEAR_VOL / tick_minutes)
        self.last_index = prices.index
        peak = d[tk.D_PEAK_INDEX]
        peak = np.maximum(prices.index, peak + (prices.index - peak) * (
            tick_minutes / tk.PEAK_MEMORY_MINUTES
        ))  # fmt: skip
        d[tk.D_PEAK_INDEX] = peak
        arrival_f, exit_f, shift = self.population.market_response(
            self.vol_annual, d[tk.D_BASE_VOL], 1.0 - prices.index / peak, prices.funding_rate
        )
        self.last_depth_mult = self.market.column("depth_mult")
        self.last_depth_usd_per_pct = np.asarray(prices.depth_usd_per_pct, dtype=np.float64)
        prev_oracle = d[tk.D_LAST_ORACLE].copy()
        prev_last = d[tk.D_LAST_BOOK].copy()
        d[tk.D_LAST_ORACLE] = prices.oracle
        d[tk.D_LAST_BOOK] = prices.last
        return TickInputs(
            prices=prices,
            vol_annual=self.vol_annual.copy(),
            stressed=self.stressed,
            funding_per_tick=prices.funding_rate * tick_minutes / d[tk.D_FUNDING_INTERVAL_MIN],
            tick_minutes=tick_minutes,
            population_minutes=pop_minutes,
            population_active=active,
            arrival_mult=(1.0 + d[tk.D_OI_BUILD] * pre) * arrival_f,
            leverage_mult=1.0 + d[tk.D_LEVERAGE_BUILD] * pre,
            long_share_shift=d[tk.D_LONG_SKEW] * pre + shift,
            exit_mult=exit_f,
            prev_oracle=prev_oracle,
            prev_last=prev_last,
        )

    def advance(
        self,
        n_ticks: int,
        check_ledger: bool = True,
        book_series: bool = True,
        book_out: FloatArray | None = None,
    ) -> TickBlock:
        """Advance every exchange ``n_ticks`` ticks in one compiled call.

        The tick is :func:`tick` between the market's prices and its impact update, as
        :meth:`reference_step` runs it in numpy; :mod:`fundgym.envs.tick_kernels` runs all of it,
        ``n_ticks`` times, without returning to Python (exchanges in parallel when
        ``threads > 1``). The fund record, when kept, takes the block at once.

        Args:
            n_ticks: Ticks to run, >= 0; every exchange needs that many left.
            check_ledger: Compute each tick's ledger error (:func:`fundgym.envs.state.ledger_error`
                at the mark) and keep the largest in ``max_ledger_error_usd``.
            book_series: Compute each tick's open interest and open accounts (a pass over
                the accounts); ``False`` leaves them NaN and -1 (the environment reads the
                book once per decision instead).
            book_out: An ``(n_envs, len(BOOK_STATS))`` array to fill with
                :func:`fundgym.envs.observation.book_stats` of each exchange at its last
                tick's mark, computed inside the compiled call while the accounts are in
                cache (the environment's observation reads it); ``None`` skips it.

        Returns:
            The block's events and series, ``(n_ticks, n_envs, ...)``.

        Raises:
            RuntimeError: An exchange would pass its horizon; reset it first.
            NotImplementedError: The state has more than one market.
        """
        if n_ticks < 0:
            raise ValueError(f"n_ticks must be >= 0, got {n_ticks!r}")
        self._check_horizon(n_ticks)
        st = self.state
        if st.n_markets != 1:
            raise NotImplementedError(
                "the compiled tick trades and liquidates one market per exchange; several "
                "markets need the multi-market mechanics issue"
            )
        events = np.zeros((n_ticks, self.n_envs, N_EVENTS))
        series = np.zeros((n_ticks, self.n_envs, len(BLOCK_SERIES)))
        tick_minutes = self._tick_minutes
        every = self._population_every
        pop_minutes = tick_minutes * every
        pop = self._pop_columns.get(pop_minutes)
        if pop is None:
            pop = self._pop_columns[pop_minutes] = self.population.params.columns(pop_minutes)
        m = self.market
        risk = self.risk
        kernel = tk.advance_serial
        if self.threads > 1:
            numba.set_num_threads(self.threads)
            kernel = tk.advance_parallel
        kernel(
            n_ticks,
            every,
            tick_minutes,
            self._ewma_weight(),
            check_ledger,
            book_series,
            m.path_arrays(),
            m.paths["frozen"],
            m.scalars,
            m.mark_last,
            m.oracle_index,
            m.oracle.kernel_arrays(),
            m.t,
            self.drivers,
            (st.collateral_usd, st.size, st.entry_price, st.counterparty_size),
            (
                st.counterparty_cash_usd,
                st.fee_revenue_usd,
                st.liquidator_rewards_usd,
                st.unrecovered_usd,
                st.net_deposits_usd,
                st.initial_total_usd,
            ),
            fund_arrays(st.fund),
            st.vault,
            allocation_terms(self.allocation, tick_minutes),
            self.rng.state,
            self._packed,
            self._tiers,
            pop,
            risk.waterfall_code,
            risk.socialization_code,
            risk.adl_policy_code,
            risk.liquidation_mode_code,
            events,
            series,
            np.zeros((0, len(BOOK_STATS))) if book_out is None else book_out,
        )
        block = TickBlock(events, series)
        if self.keep_record and n_ticks:
            self.record.extend(events, series[:, :, tk.S_FUND_USD])
        if check_ledger and n_ticks:
            err = float(np.abs(series[:, :, tk.S_LEDGER_ERROR]).max())
            self.max_ledger_error_usd = max(self.max_ledger_error_usd, err)
        return block

    def step(self, check_ledger: bool = True) -> Tick:
        """Advance every exchange one tick (:meth:`advance` of one tick).

        Raises:
            RuntimeError: An exchange is past its horizon; reset it first.
        """
        return self.advance(1, check_ledger).tick(0)

    def reference_step(self, check_ledger: bool = True) -> Tick:
        """One tick in numpy: market prices, :func:`tick`, then impact.

        The reference :meth:`advance` must equal (the tests compare the two, bit for bit
        except the open interest's summation order); slower, not different.

        Raises:
            RuntimeError: An exchange is past its horizon; reset it first.
        """
        self._check_horizon(1)
        prices = self.market.prices()
        inputs = self._inputs(prices)
        events, funding_paid = tick(self.state, self._params, inputs, self.rng)
        self.market.advance(
            events.liquidation_sell_usd, events.liquidation_buy_usd, prices.depth_usd_per_pct
        )
        if self.keep_record:
            self.record.append(events, self.fund_value_usd())
        if check_ledger:
            err = float(np.abs(ledger_error(self.state, prices.mark)).max())
            self.max_ledger_error_usd = max(self.max_ledger_error_usd, err)
        return Tick(prices, events, self.open_interest_usd(prices.mark), funding_paid)

    def run(
        self, progress: Callable[[int], None] | None = None, block_ticks: int = 1024
    ) -> SimulationResult:
        """Run every exchange to its horizon (they must share one), keeping :data:`SERIES`.

        Ticks run in compiled blocks of ``block_ticks``; ``progress(i)`` is called for every
        tick ``i`` once its block is done.
        """
        n = int((self.market.n_ticks - self.market.t).min())
        series = {k: np.zeros((n, self.n_envs)) for k in SERIES}
        done = 0
        while done < n:
            block = self.advance(min(block_ticks, n - done))
            for k in SERIES:
                series[k][done : done + len(block)] = block.column(k)
            if progress is not None:
                for i in range(done, done + len(block)):
                    progress(i)
            done += len(block)
        return SimulationResult(
            scenario=self.scenario,
            series=series,
            record=self.record,
            max_ledger_error_usd=self.max_ledger_error_usd,
            initial_open_interest_usd=self.initial_open_interest_usd,
        )
