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
5. **Top-up**: a venue that injects into an exhausted fund does so after the tick's settlement
   (:func:`fundgym.envs.fund.portfolio.inject_if_exhausted`; off unless ``fund_injection_frac``
   and ``fund_injection_max`` are set), an outside deposit in the ledger.

Around these stages run the scenario's venue events (:mod:`fundgym.envs.core.venue_events`): a
settlement first closes every position at its window's average index; an outage skips the
population (and, if so scripted, the engine), halts and caps reach the population, and the
attacker withdraws against its unrealised PnL before the engine runs.

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
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import P_MARK_CAP_MULT, P_OI_CAP_FRAC, RiskParams
from fundgym.envs.core.rng import BatchStreams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.trading import apply_funding
from fundgym.envs.core.vault import open_vault, vault_loss_frac
from fundgym.envs.core.venue_events import (
    ATTACKER_SLOT,
    VF_ATTACKER,
    VF_CLOSED,
    VF_ENGINE_OFF,
    VF_OUTAGE,
    VF_SETTLE,
    VF_SETTLE_WINDOW,
    VF_WITHDRAWAL_HALT,
    attacker_withdrawal,
    capped_marks,
    event_arrays,
    halt_mask,
    mark_average_weight,
    settle_exchange,
)
from fundgym.envs.fund.kernels import allocation_terms, fund_arrays, pay_one, rebalance_kernel
from fundgym.envs.fund.portfolio import (
    AllocationParams,
    FundPortfolio,
    accrue,
    inject_if_exhausted,
    receive,
)
from fundgym.envs.market.market import Market, Prices
from fundgym.envs.observation import BOOK_STATS
from fundgym.envs.scenarios import Scenario, market_path
from fundgym.envs.state import SimState, ledger_error, ledger_total, open_interest_usd
from fundgym.envs.traders.population import PopulationParams, TraderPopulation

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


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
#: :data:`SERIES`, then the funding the accounts paid (NaN when ``advance`` skips the book
#: series) and the ledger error at the mark (0 when the ledger was not checked).
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
#: Every risk-parameter field's name, in declaration order (``dataclasses.fields`` costs
#: microseconds a call, and the parameters are set every decision).
_RISK_FIELDS = tuple(f.name for f in dataclasses.fields(RiskParams))
#: The fields that may hold a per-exchange array (the others are names or tables).
_NUMERIC_RISK_FIELDS = tuple(name for name in _RISK_FIELDS if name not in _CODED_FIELDS)
#: The fund portfolio's fields, in declaration order (read at every reset of an exchange).
_FUND_FIELDS = tuple(f.name for f in dataclasses.fields(FundPortfolio))
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
        venue_flags: ``(E,)`` int64, the venue events in force this tick (``VF_*`` bits of
            :mod:`fundgym.envs.core.venue_events`).
        leverage_cap: ``(E,)`` largest leverage of a new position (``inf``: none).
        oi_cap_usd: ``(E,)`` open interest above which new positions are refused (``inf``).
        settlement_price: ``(E,)`` the settlement window's average index where the market
            settles this tick (0 elsewhere).
        oracle_floor: ``(E,)`` the oracle's floor (0: none).
        attacker_left_usd: ``(E,)`` what the scenario's attacker may still withdraw (its
            ``lendable_usd`` less what it took; ``inf``): a view of the simulator's driver,
            which the tick draws down.
        first_slot: ``(E,)`` int: slots below it hold scripted accounts (the attacker) the
            population leaves alone.
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
    venue_flags: IntArray
    leverage_cap: FloatArray
    oi_cap_usd: FloatArray
    settlement_price: FloatArray
    oracle_floor: FloatArray
    attacker_left_usd: FloatArray
    first_slot: IntArray


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
    vf = inputs.venue_flags
    settle_debt = _settle(state, vf, inputs.settlement_price)
    active = inputs.population_active & ((vf & (VF_OUTAGE | VF_CLOSED)) == 0)
    trading_fees = fund_trading_income = None
    if inputs.population_minutes > 0.0 and active.any():
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
            halt_mask=_halt_masks(vf),
            leverage_cap=inputs.leverage_cap,
            oi_cap_usd=inputs.oi_cap_usd,
            first_slot=inputs.first_slot,
            active=active,
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
    withdrawn = _attacker_withdraws(state, risk, vf, p.oracle, inputs.attacker_left_usd)
    engine = (vf & (VF_ENGINE_OFF | VF_CLOSED)) == 0
    if engine.all():
        events = core_step(
            state,
            risk,
            p.oracle,
            SqrtImpact(p.depth_usd_per_pct),
            book_price=p.last,
            fund_stressed=inputs.stressed,
            allocation=params.allocation,
            tick_minutes=inputs.tick_minutes,
            prev_mark=inputs.prev_oracle,
            prev_book_price=inputs.prev_last,
        )
    else:  # the exchanges whose engine runs, one at a time (each computes alone anyway)
        events = StepEvents.zeros(state.n_envs)
        for e in np.flatnonzero(engine):
            r = slice(e, e + 1)
            events.data[r] = core_step(
                _rows(state, r),
                risk.take(np.array([e])),
                p.oracle[r],
                SqrtImpact(p.depth_usd_per_pct[r]),
                book_price=p.last[r],
                fund_stressed=inputs.stressed[r],
                allocation=params.allocation,
                tick_minutes=inputs.tick_minutes,
                prev_mark=inputs.prev_oracle[r],
                prev_book_price=inputs.prev_last[r],
            ).data
    _pay_settlement_debt(state, events, settle_debt, p.oracle, inputs, params.allocation)
    _venue_events_record(events, vf, inputs.settlement_price, withdrawn, p, inputs.oracle_floor)
    # The venue's top-up of a fund the tick's bad debt exhausted: money from outside.
    state.net_deposits_usd += inject_if_exhausted(
        pf, events.bad_debt_usd, inputs.stressed, params.allocation
    )
    if trading_fees is not None and fund_trading_income is not None:
        events.trading_fees_usd = trading_fees
        events.fund_trading_fee_income_usd = fund_trading_income
    return events, funding_paid


def ewma_weight(tick_minutes: float) -> float:
    """Weight of one tick in the volatility's one-day EWMA."""
    return float(1.0 - np.exp(-tick_minutes / 1440.0))


def vol_and_peak(
    vol_annual: FloatArray,
    last_index: FloatArray,
    peak: FloatArray,
    index: FloatArray,
    tick_minutes: float,
) -> tuple[FloatArray, FloatArray]:
    """The tick's drivers from its index: the one-day EWMA volatility and the recent peak.

    The numpy statement of what the compiled tick computes inline (``tick_kernels``), for
    one market or a market axis alike: the variance per tick moves ``1 - exp(-tick / 1 day)``
    of the way to the squared log return, and the peak moves ``tick / PEAK_MEMORY_MINUTES``
    of the way down to the index, never below it.

    Returns:
        ``(vol_annual, peak)``, new arrays shaped as ``index``.
    """
    log_ret = libm.log(index / last_index)
    var_tick = (vol_annual**2) * tick_minutes / tk.MINUTES_PER_YEAR_VOL
    var_tick += ewma_weight(tick_minutes) * (log_ret**2 - var_tick)
    vol = np.sqrt(var_tick * tk.MINUTES_PER_YEAR_VOL / tick_minutes)
    memory = tick_minutes / tk.PEAK_MEMORY_MINUTES
    return vol, np.maximum(index, peak + (index - peak) * memory)


def batch_seeds(seed: int | Sequence[int] | None, defaults: Sequence[int]) -> list[int]:
    """Each exchange's seed, from one seed, one per exchange, or none.

    ``None`` gives ``defaults`` (each exchange's scenario's seed); one seed gives exchange ``e``
    ``seed + e`` (Gymnasium's convention for vector envs); a list gives one per exchange.

    Raises:
        ValueError: A list of seeds whose length is not the number of exchanges.
    """
    n_envs = len(defaults)
    if seed is None:
        return [int(s) for s in defaults]
    if isinstance(seed, int | np.integer):
        return [int(seed) + e for e in range(n_envs)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n_envs:
        raise ValueError(f"got {len(seeds)} seeds for n_envs={n_envs}")
    return seeds


def _rows(state: SimState, rows: slice) -> SimState:
    """A state of views onto exchanges ``rows`` of ``state`` (writes go through)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, FundPortfolio):
            value = FundPortfolio(
                **{g.name: getattr(value, g.name)[rows] for g in dataclasses.fields(value)}
            )
        else:
            value = value[rows]
        out[f.name] = value
    return SimState(**out)


def _halt_masks(flags: IntArray) -> IntArray:
    """The population's ``halt_mask`` per exchange for the tick's ``VF_*`` flags."""
    return np.array([halt_mask(int(f)) for f in flags], dtype=np.int64)


def _settle(state: SimState, flags: IntArray, price: FloatArray) -> FloatArray:
    """Settle the exchanges whose market settles this tick; their bankrupt accounts' debt."""
    debt = np.zeros(state.n_envs)
    for e in np.flatnonzero(flags & VF_SETTLE):
        debt[e] = settle_exchange(
            state.collateral_usd,
            state.size,
            state.entry_price,
            state.counterparty_size,
            state.counterparty_cash_usd,
            state.vault,
            int(e),
            float(price[e]),
        )
    return debt


def _attacker_withdraws(
    state: SimState, risk: RiskParams, flags: IntArray, oracle: FloatArray, left: FloatArray
) -> FloatArray:
    """The attackers' withdrawals of the tick (:func:`attacker_withdrawal`), out of the ledger.

    Each takes at most what its venue can still pay out, ``left`` (updated in place).
    """
    took = np.zeros(state.n_envs)
    can = (flags & VF_ATTACKER != 0) & (flags & (VF_WITHDRAWAL_HALT | VF_CLOSED) == 0)
    if not can.any():
        return took
    haircut = risk.per_env("unrealised_pnl_haircut_frac", state.n_envs)
    imr = risk.per_env("imr", state.n_envs)
    for e in np.flatnonzero(can):
        took[e] = attacker_withdrawal(
            state.collateral_usd,
            state.size,
            state.entry_price,
            int(e),
            float(oracle[e]),
            float(haircut[e]),
            float(imr[e]),
        )
        took[e] = min(took[e], left[e])
        left[e] -= took[e]
        state.collateral_usd[e, ATTACKER_SLOT] -= took[e]
        state.net_deposits_usd[e] -= took[e]
    return took


def _pay_settlement_debt(
    state: SimState,
    events: StepEvents,
    debt: FloatArray,
    oracle: FloatArray,
    inputs: TickInputs,
    allocation: AllocationParams,
) -> None:
    """The fund pays the debt a settlement left, the exchange the rest (as the tick's engine)."""
    if not (debt > 0.0).any():
        return
    pf = state.fund
    fund = fund_arrays(pf)
    terms = allocation_terms(allocation, inputs.tick_minutes)
    events.bad_debt_usd += debt
    for e in np.flatnonzero(debt > 0.0):
        owed = float(debt[e])
        px = float(pf.mark_price[e]) if pf.mark_price[e] > 0.0 else float(oracle[e])
        ext_before = float(pf.external_pnl_usd[e])
        paid = pay_one(
            fund, int(e), owed, px, float(pf.mark_vol_annual[e]), bool(inputs.stressed[e]), terms
        )
        state.net_deposits_usd[e] += float(pf.external_pnl_usd[e]) - ext_before
        events.shortfall_usd[e] = paid
        gap = owed - paid
        if gap != 0.0:
            events.unrecovered_usd[e] += gap
            state.unrecovered_usd[e] += gap


def _venue_events_record(
    events: StepEvents,
    flags: IntArray,
    settlement_price: FloatArray,
    withdrawn: FloatArray,
    prices: Prices,
    oracle_floor: FloatArray,
) -> None:
    """The venue events' columns of the tick's events, as the compiled tick writes them."""
    events.settlement_price = np.where(flags & VF_SETTLE != 0, settlement_price, 0.0)
    events.market_closed = np.where(flags & VF_CLOSED != 0, 1.0, 0.0)
    events.attacker_withdrawn_usd = withdrawn
    floored = (oracle_floor > 0.0) & (prices.oracle <= oracle_floor) & (prices.mark < oracle_floor)
    events.floored_short_liquidation_usd = np.where(floored, events.liquidation_buy_usd, 0.0)
    # the core wrote the fund's income from shorts bought back; it counts only when floored
    events.floored_fund_fee_income_usd = np.where(floored, events.floored_fund_fee_income_usd, 0.0)


def _install_attacker(book: SimState, i: int, scenario: Scenario, price: float) -> None:
    """Put the scenario's attacker in slot 0 of row ``i`` of freshly drawn ``book``.

    The slot's trader is dropped (its position leaves the counterparty's book with it); the
    attacker deposits its margin and opens its position at ``price`` against the
    counterparty. The row's starting total is recomputed, so the deposit is part of it.
    """
    spec = scenario.attacker
    assert spec is not None
    a = ATTACKER_SLOT
    q_old, entry_old = book.size[i, a, 0], book.entry_price[i, a, 0]
    q = (1.0 if spec.side == "long" else -1.0) * spec.notional_usd / price
    book.counterparty_size[i, 0] += q_old - q
    book.counterparty_cash_usd[i] += q * price - q_old * entry_old
    book.collateral_usd[i, a] = spec.margin_usd
    book.size[i, a, 0] = q
    book.entry_price[i, a, 0] = price
    book.initial_total_usd[i] = ledger_total(book.take([i]), np.ones((1, 1)))[0]


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
        vault_adl_loss_frac: The vault's loss limit as a share of its capital, in [0, 1]:
            beyond it, its inventory is deleveraged against the opposite side's accounts
            (Hyperliquid's Liquidator vault; :mod:`fundgym.envs.core.vault`, "Loss limit").
            ``None`` (the default): the liquidation mode's own (``hyperliquid``: 2% [E]; the
            other modes: none); ``inf``: none, the vault unwinds whatever it loses.
        fund_injection_frac: What the venue injects into an exhausted fund, as a share of
            initial open interest (0: never; :func:`fundgym.envs.fund.portfolio.inject_if_exhausted`
            says when it fires): Deribit's 500 BTC after 12 Mar 2020, Binance's $30M after
            10 May 2020.
        fund_injection_max: Injections at most per episode (0: none).
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
        vault_adl_loss_frac: float | None = None,
        fund_injection_frac: float = 0.0,
        fund_injection_max: int = 0,
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
        if not 0.0 <= fund_injection_frac <= 10.0:
            raise ValueError(
                f"fund_injection_frac must lie in [0, 10], got {fund_injection_frac!r}"
            )
        if not (float(fund_injection_max).is_integer() and 0 <= fund_injection_max <= 1000):
            raise ValueError(
                f"fund_injection_max must be a whole number in [0, 1000], got "
                f"{fund_injection_max!r}"
            )
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
        vault_loss_frac("partial", vault_adl_loss_frac)  # checked before any work
        self.vault_adl_loss_frac = vault_adl_loss_frac
        self.fund_injection_frac = fund_injection_frac
        self.fund_injection_max = int(fund_injection_max)
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
        attrs = risk.__dict__  # the fields, without a getattr each
        allowed = ((), (self.n_envs,))
        for name in _NUMERIC_RISK_FIELDS:
            value = attrs[name]
            if isinstance(value, np.ndarray) and value.shape not in allowed:
                raise ValueError(
                    f"RiskParams.{name} must be a float or an (n_envs,) = ({self.n_envs},) "
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
        # Built directly: ``dataclasses.replace`` re-reads the fields every decision.
        self._params = SimParams(risk, self._params.population, self._params.allocation)
        # What the compiled tick reads, built once per parameter set; the tier table once per
        # tier schedule (the environment passes the same frozen one every decision).
        self._packed = risk.packed(self.n_envs)
        cached = getattr(self, "_tier_table_cache", None)
        if cached is None or cached[0] is not risk.tiers:
            cached = (risk.tiers, risk.tier_table())
            self._tier_table_cache = cached
        self._tiers = cached[1]

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
        return batch_seeds(seed, [sc.seed for sc in self.scenarios])

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
        # The venue events per exchange and tick (fundgym.envs.core.venue_events), widened
        # to the longest episode installed.
        self._venue_flags = np.zeros((self.n_envs, 1), dtype=np.int64)
        self._venue_cap = np.full((self.n_envs, 1), np.inf)
        self._install(range(self.n_envs))
        self.record = FundRecord(self.state.fund_usd)
        self.max_ledger_error_usd = 0.0

    def _empty_state(self) -> SimState:
        shape = (self.n_envs, self.n_accounts)
        return SimState.create(np.zeros(shape), np.zeros(shape), np.zeros(shape), 0.0)

    def reset_env(self, env: int, seed: int, scenario: Scenario | None = None) -> None:
        """Reset exchange ``env`` alone with ``seed`` (and optionally a new scenario)."""
        self.reset_envs([env], [seed], None if scenario is None else [scenario])

    def reset_envs(
        self,
        envs: Sequence[int],
        seeds: Sequence[int],
        scenarios: Sequence[Scenario] | None = None,
    ) -> None:
        """Reset exchanges ``envs`` (the others untouched), ``envs[i]`` with ``seeds[i]``.

        The same numbers as resetting them one at a time (:meth:`reset_env`), in any order:
        each exchange draws from its own streams. A vector env restarts many exchanges at
        once (every episode of a training batch ends at the same decision), and drawing their
        books in one call, with one set of array operations for their funds, vaults and
        drivers, costs a fraction of one call per exchange.

        Args:
            envs: Distinct exchange indices.
            seeds: One seed per entry of ``envs``.
            scenarios: One scenario per entry of ``envs`` (``None``: each keeps its own).
        """
        if len(seeds) != len(envs) or (scenarios is not None and len(scenarios) != len(envs)):
            raise ValueError(
                f"reset_envs needs one seed (and scenario) per exchange: {len(envs)} exchanges, "
                f"{len(seeds)} seeds, {'no' if scenarios is None else len(scenarios)} scenarios"
            )
        for i, env in enumerate(envs):
            if scenarios is not None:
                self.scenarios[env] = scenarios[i]
            self.seeds[env] = int(seeds[i])
            self.rng.reseed(env, int(seeds[i]))
        self._install(envs)

    def _install(self, envs: Sequence[int]) -> None:
        """Draw exchanges ``envs``' paths and books, each from its own streams, and their funds.

        Per exchange: its market path and venue events. In one call for all of them: the
        books (each row from its exchange's population stream), and the state's, fund's,
        vault's and drivers' rows, by array operations whose every element is what one
        exchange alone computes (elementwise, or a reduction along one row).
        """
        rows = np.asarray(envs, dtype=np.int64)
        scenarios = [self.scenarios[e] for e in envs]
        for env, scenario in zip(envs, scenarios, strict=True):
            # The path comes from ``default_rng(seed)``, as before Simulator v2, so every
            # shipped scenario keeps its market paths; the trader streams are separate.
            g = np.random.default_rng(int(self.seeds[env]))
            self.market.reset_env(env, scenario, market_path(scenario, g, 1))
            self._install_events(env, scenario)
        price = np.array([float(sc.price.initial) for sc in scenarios])
        streams = self.rng.take(rows)
        book = self.population.initial_state(streams, self.n_accounts, price, self._risk_rows(rows))
        self.rng.put(rows, streams)
        for i, scenario in enumerate(scenarios):
            if scenario.attacker is not None:
                _install_attacker(book, i, scenario, float(price[i]))
        oi = open_interest_usd(book, price)[:, 0]
        fund_usd = self.fund_to_oi_frac * oi
        vault_usd = self.vault_to_oi_frac * oi
        st = self.state
        st.collateral_usd[rows] = book.collateral_usd
        st.size[rows] = book.size
        st.entry_price[rows] = book.entry_price
        st.counterparty_size[rows] = book.counterparty_size
        st.counterparty_cash_usd[rows] = book.counterparty_cash_usd
        for name in ("fee_revenue_usd", "liquidator_rewards_usd", "unrecovered_usd"):
            getattr(st, name)[rows] = 0.0
        st.net_deposits_usd[rows] = 0.0
        st.initial_total_usd[rows] = book.initial_total_usd + fund_usd + vault_usd
        loss_frac = vault_loss_frac(self.risk.liquidation_mode, self.vault_adl_loss_frac)
        open_vault(st.vault, rows, vault_usd, loss_frac)
        fresh = FundPortfolio.from_stable(fund_usd)
        for name in _FUND_FIELDS:
            getattr(st.fund, name)[rows] = getattr(fresh, name)
        st.fund.injection_usd[rows] = self.fund_injection_frac * oi
        st.fund.injections_left[rows] = self.fund_injection_max
        self.initial_open_interest_usd[rows] = oi

        def column(value: Callable[[Scenario], float]) -> FloatArray:
            return np.array([value(sc) for sc in scenarios], dtype=np.float64)

        d = self.drivers
        vol = column(lambda sc: sc.price.vol_annual)
        d[tk.D_VOL_ANNUAL, rows] = vol
        d[tk.D_BASE_VOL, rows] = vol
        d[tk.D_PEAK_INDEX, rows] = price
        d[tk.D_OI_BUILD, rows] = column(lambda sc: sc.precursors.oi_build)
        d[tk.D_LEVERAGE_BUILD, rows] = column(lambda sc: sc.precursors.leverage_build)
        d[tk.D_LONG_SKEW, rows] = column(lambda sc: sc.precursors.long_skew)
        d[tk.D_FUNDING_INTERVAL_MIN, rows] = column(lambda sc: 60.0 * sc.funding.interval_hours)
        d[tk.D_LAST_INDEX, rows] = price
        d[tk.D_MARK_AVG, rows] = price
        d[tk.D_MARK_AVG_WEIGHT, rows] = column(lambda sc: mark_average_weight(sc.tick_minutes))
        d[tk.D_SETTLE_SUM, rows] = 0.0
        d[tk.D_SETTLE_N, rows] = 0.0
        d[tk.D_START_OI, rows] = oi
        d[tk.D_ATTACKER_LEFT, rows] = column(
            lambda sc: (
                np.inf
                if sc.attacker is None or sc.attacker.lendable_usd is None
                else sc.attacker.lendable_usd
            )
        )
        d[tk.D_FIRST_SLOT, rows] = column(
            lambda sc: 0 if sc.attacker is None else ATTACKER_SLOT + 1
        )
        d[tk.D_LAST_DEPTH_MULT, rows] = 1.0
        normal_depth = column(lambda sc: sc.depth.normal_usd_per_pct)
        for i, (env, scenario) in enumerate(zip(envs, scenarios, strict=True)):
            if scenario.depth.oi_to_depth is not None:  # the book scales with the exchange's OI
                normal_depth[i] = max(float(oi[i]) / scenario.depth.oi_to_depth, 1.0)
                self.market.set_normal_depth(env, float(normal_depth[i]))
        d[tk.D_LAST_DEPTH_USD, rows] = normal_depth
        # No previous tick: the first tick's venue sub-steps read its own prices, not a path
        # from the initial price (which the first oracle and last price need not equal).
        d[tk.D_LAST_ORACLE, rows] = 0.0
        d[tk.D_LAST_BOOK, rows] = 0.0

    def _install_events(self, env: int, scenario: Scenario) -> None:
        """Exchange ``env``'s venue events per tick, widening the batch's arrays if needed."""
        flags, cap = event_arrays(scenario)
        n = flags.size
        if n > self._venue_flags.shape[1]:
            grown = np.zeros((self.n_envs, n), dtype=np.int64)
            grown[:, : self._venue_flags.shape[1]] = self._venue_flags
            self._venue_flags = grown
            grown_cap = np.full((self.n_envs, n), np.inf)
            grown_cap[:, : self._venue_cap.shape[1]] = self._venue_cap
            self._venue_cap = grown_cap
        self._venue_flags[env, :n] = flags
        self._venue_flags[env, n:] = flags[-1] & VF_CLOSED  # past the end: as its last tick
        self._venue_cap[env, :n] = cap
        self._venue_cap[env, n:] = np.inf

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
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n_envs, 4):  # the environment's (n_envs, 4) needs no broadcast
            w = np.broadcast_to(w, (self.n_envs, 4))
        w = np.ascontiguousarray(w)
        # np.allclose(sums, 1.0) written out: its general machinery cost ~25 us a decision.
        # ``w >= 0`` is False for NaN, and an infinite entry makes its row's sum miss 1, so
        # this rejects every row that is negative, not finite or not summing to 1.
        sum_ok = (np.abs(w.sum(axis=1) - 1.0) <= 1e-8 + 1e-5).all()
        if not ((w >= 0).all() and sum_ok):
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
            self._allocation_terms(),
            cost,
        )
        self.state.net_deposits_usd += pf.external_pnl_usd - ext_before
        return cost

    def _allocation_terms(self) -> FloatArray:
        """:func:`allocation_terms` of the fund's terms at the tick's clock, built once.

        Both are fixed for the simulator's life (the terms are frozen and set at construction;
        every scenario shares one ``tick_minutes``), and a decision rebalances every time.
        """
        key = (self.allocation, self._tick_minutes)
        cached: tuple[tuple[AllocationParams, float], FloatArray] | None = getattr(
            self, "_allocation_terms_cache", None
        )
        if cached is None or cached[0][0] is not key[0] or cached[0][1] != key[1]:
            cached = (key, allocation_terms(*key))
            self._allocation_terms_cache = cached
        return cached[1]

    def _risk_rows(self, rows: IntArray) -> RiskParams:
        """Exchanges ``rows``' risk parameters, one entry per row (for drawing their books).

        Entries of parameters already in force are valid, so the rows skip the checks
        (:meth:`RiskParams.trusted`).
        """
        risk = self.risk
        out: dict[str, Any] = {name: getattr(risk, name) for name in _CODED_FIELDS}
        for name in _NUMERIC_RISK_FIELDS:  # a scalar, or one entry per exchange
            value = getattr(risk, name)
            if isinstance(value, np.ndarray) and value.size > 1:
                value = value[rows]
            out[name] = value
        return RiskParams.trusted(**out)

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
        """Weight of one tick in the volatility's one-day EWMA (:func:`ewma_weight`)."""
        return ewma_weight(self._tick_minutes)

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
        self.vol_annual, peak = vol_and_peak(
            self.vol_annual, self.last_index, d[tk.D_PEAK_INDEX], prices.index, tick_minutes
        )
        self.last_index = prices.index
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
            **self._venue_inputs(prices),
        )

    def _venue_inputs(self, prices: Prices) -> dict[str, Any]:
        """This tick's venue events; adds the index to a settlement window's running sum."""
        d = self.drivers
        rows = np.arange(self.n_envs)
        flags = self._venue_flags[rows, self.market.t]
        window = (flags & VF_SETTLE_WINDOW) != 0
        d[tk.D_SETTLE_SUM] = np.where(window, d[tk.D_SETTLE_SUM] + prices.index, d[tk.D_SETTLE_SUM])
        d[tk.D_SETTLE_N] = np.where(window, d[tk.D_SETTLE_N] + 1.0, d[tk.D_SETTLE_N])
        settle = (flags & VF_SETTLE) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            price = np.where(settle, d[tk.D_SETTLE_SUM] / d[tk.D_SETTLE_N], 0.0)
        oi_cap = self._packed[:, P_OI_CAP_FRAC]
        _, _, _, floor, _, _ = self.market.oracle.kernel_arrays()
        return {
            "venue_flags": flags,
            "leverage_cap": self._venue_cap[rows, self.market.t],
            "oi_cap_usd": np.where(oi_cap > 0.0, oi_cap * d[tk.D_START_OI], np.inf),
            "settlement_price": price,
            "oracle_floor": floor.copy(),
            "attacker_left_usd": d[tk.D_ATTACKER_LEFT],  # a view: withdrawals draw it down
            "first_slot": d[tk.D_FIRST_SLOT].astype(np.int64),
        }

    def _capped_prices(self, prices: Prices) -> Prices:
        """``prices`` with the mark and oracle under the mark cap; updates the mark's average."""
        d = self.drivers
        mark, oracle, d[tk.D_MARK_AVG] = capped_marks(
            prices.mark,
            prices.oracle,
            d[tk.D_MARK_AVG].copy(),
            self._packed[:, P_MARK_CAP_MULT],
            d[tk.D_MARK_AVG_WEIGHT],
        )
        return dataclasses.replace(prices, mark=mark, oracle=oracle)

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
            book_series: Compute each tick's open interest, open accounts and funding paid
                (a pass over the accounts, and a running sum of the payments); ``False``
                leaves them NaN, -1 and NaN (the environment reads the book once per
                decision instead, and never the funding total).
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
            m.frozen_rows(),
            (self._venue_flags, self._venue_cap),
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
            self._allocation_terms(),
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
        prices = self._capped_prices(self.market.prices())
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
