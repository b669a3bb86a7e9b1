"""A batch of exchanges listing several markets: prices per market, one margin engine across them.

:class:`MarketsSimulator` runs a scenario with a ``markets:`` section (and its ``collateral:``
assets) tick by tick, as :class:`~fundgym.envs.simulator.ExchangeSimulator` runs a one-market
scenario. One tick, in order:

1. **Prices, per market.** Each market has its own :class:`~fundgym.envs.market.market.Market`
   over its drawn path (:func:`~fundgym.envs.market.factor.draw_markets`): its own index, last,
   mark, oracle (its ``oracle`` section), funding (its ``funding`` section) and book depth,
   ``depth_scale`` x the factor market's. Each market's one-day EWMA volatility and recent peak
   give its stress (:func:`~fundgym.envs.traders.kernels.market_stress`). Under a mark cap
   (``RiskParams.mark_cap_mult``) each market's mark and oracle are held at most that multiple
   of its own 8-hour average of its mark (:func:`~fundgym.envs.core.venue_events.
   capped_marks`, as in one market).
2. **Collateral prices.** Each asset is priced at the venue's choice (``collateral_price``:
   its own ``book``, the external ``index`` or the ``redemption`` value; ``docs/markets.md``
   tables each one's failure mode). The move since the last tick revalues the assets the
   accounts hold, an outside revaluation booked to ``net_deposits_usd`` as the fund's outside
   gains are, so the ledger closes at every tick.
3. **Population** (on its clock): per-leg exits at each market's stressed hazard, reactions
   near liquidation, leavers, and arrivals per market (:mod:`fundgym.envs.traders.markets`).
   The fund's share of each market's fees goes to the shared fund or to that market's segment.
   Not during an ``outage``; under a ``withdrawal_halt`` nobody leaves; a market under
   ``reduce_only`` admits nobody, one under a ``leverage_cap`` caps its arrivals (the
   scenario's venue events, each on its ``market`` or on all).
4. **Funding**, per market at its own rate and interval.
5. **Fund**: the shared fund accrues (:func:`~fundgym.envs.fund.portfolio.accrue`) at the
   index and volatility of the listed market it holds (``fund_asset``, market 0 by default),
   or of each market of a basket of them: its ``volatile`` bucket is units of those assets and
   its ``hedge`` bucket puts on each, so a fund that holds an alt carries the alt's wrong-way
   risk. :meth:`set_allocation` moves it between the buckets. Segments are cash.
6. **Margin engine** across markets (:func:`~fundgym.envs.core.step.core_step`): cross
   accounts' requirement summed over markets, every leg priced on its own market's book,
   collateral assets seized and sold at the venue's price less the haircut, the shortfall paid
   by the shared fund or the market's segment (``fund_mode``, per-market caps), ADL and
   socialisation per market. Not during an ``outage`` with ``engine_runs: false``.
7. **Impact**: each market's liquidation flow (``StepEvents.market_flow_usd``) walks that
   market's book and moves its next prices, so an alt's cascade moves the alt.

Venue modes: ``partial``, ``binance`` (run as the partial waterfall closing every leg whole,
:func:`engine_risk`), and ``hyperliquid``, ``bitmex`` and ``dydx_v4`` with their sub-steps,
takeovers, (Hyperliquid's) backstop vault and (dYdX's) one order per subaccount a block at its
fillable price across markets (:mod:`fundgym.envs.core.venue_cross`): each market's oracle and
book on a path from the previous tick's. Paid outside liquidators take each market's capacity
at its oracle in every mode. What it does not do yet, compared with the one-market tick: under
``dydx_v4`` lending between fund segments (refused) and ordinary volume in the population
(the venue events run on every market, a settlement on its market, steps 2b, 3 and 6; the
attacker in its market, step 5b; the mark cap on each market's own average, step 1). It is not
compiled across ticks: each tick is a few compiled calls joined in Python.

Every exchange draws its paths from ``default_rng(seed)`` and its traders from its own streams,
so exchange ``e`` of a batch evolves exactly as a single exchange seeded alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import (
    P_IMR,
    P_MARK_CAP_MULT,
    P_OI_CAP_FRAC,
    P_UPNL_HAIRCUT,
    RiskParams,
)
from fundgym.envs.core.rng import POPULATION_STREAM, BatchStreams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.trading import apply_funding
from fundgym.envs.core.vault import V_CASH, inventory_column, open_vault, vault_loss_frac
from fundgym.envs.core.venue_events import (
    ATTACKER_SLOT,
    VF_ATTACKER,
    VF_ENGINE_OFF,
    VF_OUTAGE,
    VF_WITHDRAWAL_HALT,
    attacker_withdrawal_markets,
    capped_marks,
    halt_mask,
    mark_average_weight,
    market_event_arrays,
    market_settlements,
    settle_market,
)
from fundgym.envs.fund.portfolio import (
    EXHAUSTED_FRAC,
    AllocationParams,
    FundPortfolio,
    accrue,
    inject_if_exhausted,
    pay,
    rebalance,
    receive,
)
from fundgym.envs.levers import MARKET_LEVERS
from fundgym.envs.market.factor import MarketsPath, draw_markets
from fundgym.envs.market.kernels import MK_DEPTH_NORMAL
from fundgym.envs.market.market import Market
from fundgym.envs.scenarios import Scenario
from fundgym.envs.simulator import batch_seeds, vol_and_peak
from fundgym.envs.state import SimState, ledger_error, ledger_total, open_interest_usd
from fundgym.envs.traders import kernels as pk
from fundgym.envs.traders.markets import (
    ME_ARRIVALS,
    ME_EXITS,
    ME_FEES_USD,
    N_MARKETS_EVENTS,
    markets_population_exchange,
    place_accounts,
)
from fundgym.envs.traders.population import PopulationParams

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
CollateralSource = Literal["book", "index", "redemption"]
FundMode = Literal["shared", "segmented"]
#: The venue's choices of the price collateral assets are marked at.
COLLATERAL_SOURCES: tuple[str, ...] = ("book", "index", "redemption")
#: Fund modes.
FUND_MODES: tuple[str, ...] = ("shared", "segmented")
#: What a per-market fund cap holds over: one tick, or the episode.
FUND_CAP_PERIODS: tuple[str, ...] = ("tick", "episode")
LEDGER_TOLERANCE_REL = 1e-9
"""Largest ledger error accepted, relative to the exchange's starting total (plus $1e-6)."""


@dataclass(frozen=True)
class MarketsPopulation:
    """How a multi-market exchange's accounts spread across markets and collateral ([E] all).

    Attributes:
        second_leg_frac: Share of cross accounts holding a second position in another market,
            in [0, 1] ([E]: cross margin exists to net several positions; 0.3 is an estimate).
        asset_share: Share of cross accounts posting part of their margin in a collateral
            asset, in [0, 1] ([E]: Binance's Multi-Assets Mode is opt-in; 0.2 is an estimate).
        asset_margin_frac: Share of such an account's margin posted in the asset, in [0, 1].
    """

    second_leg_frac: float = 0.3
    asset_share: float = 0.2
    asset_margin_frac: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and 0.0 <= float(value) <= 1.0
            ):
                raise ValueError(f"MarketsPopulation.{f.name} must lie in [0, 1], got {value!r}")


@dataclass
class MarketsResult:
    """A whole episode of a multi-market batch (arrays ``(n_ticks, n_envs, ...)``).

    Attributes:
        scenario: The scenario run.
        market_names: The markets, in order.
        fund_mode: ``shared`` or ``segmented``.
        fund_groups: ``(M,)`` each market's segment (all 0 when shared).
        events: ``(n, E, N_EVENTS)`` each tick's :class:`StepEvents` rows.
        index_price, mark_price, oracle_price, depth_usd_per_pct, open_interest_usd:
            ``(n, E, M)`` per market.
        market_fund_paid_usd: ``(n, E, M)`` what the fund paid toward each market's
            shortfalls.
        market_adl_volume_usd, market_adl_haircut_usd, market_socialized_usd,
            market_unrecovered_usd: ``(n, E, M)`` each market's share of the exchange's
            deleveraged notional, ADL haircut, socialised and unrecovered loss
            (:class:`StepEvents`'s; the fund's own shortfall against its promise belongs to
            no market).
        market_flow_usd: ``(n, E, M, 2)`` each market's liquidation sells and buys.
        fund_usd: ``(n, E, G)`` each pot after the tick: the shared fund's value (``G = 1``)
            or each segment's cash.
        fund_transfer_usd: ``(n, E, G)`` what each segment lent the other segments' markets
            that tick, less what it borrowed (zeros when transfers are forbidden or shared).
        collateral_seized_usd, collateral_depeg_loss_usd: ``(n, E)``.
        collateral_price: ``(n, E, K)`` the venue's price of each asset.
        arrivals, exits, trading_fees_usd: ``(n, E)`` the population's.
        vault_equity_usd: ``(n, E)`` the backstop vault's equity after each tick (cash plus
            every market's inventory at mark; zeros without a vault).
        vault_capital_usd: ``(E,)`` its depositors' capital at the start.
        initial_fund_usd: ``(E, G)`` each pot at the start.
        initial_open_interest_usd: ``(E, M)``.
        max_ledger_error_usd: Largest ledger error over the episode.
        fund_injections, fund_injected_usd: ``(E,)`` the venue's top-ups of the shared fund
            over the episode (``fund_injection_frac``) and what they added, USD.
    """

    scenario: Scenario
    market_names: tuple[str, ...]
    fund_mode: str
    fund_groups: np.ndarray[Any, np.dtype[np.int64]]
    events: FloatArray
    index_price: FloatArray
    mark_price: FloatArray
    oracle_price: FloatArray
    depth_usd_per_pct: FloatArray
    open_interest_usd: FloatArray
    market_fund_paid_usd: FloatArray
    market_adl_volume_usd: FloatArray
    market_adl_haircut_usd: FloatArray
    market_socialized_usd: FloatArray
    market_unrecovered_usd: FloatArray
    market_flow_usd: FloatArray
    fund_usd: FloatArray
    fund_transfer_usd: FloatArray
    collateral_seized_usd: FloatArray
    collateral_depeg_loss_usd: FloatArray
    collateral_price: FloatArray
    arrivals: FloatArray
    exits: FloatArray
    trading_fees_usd: FloatArray
    vault_equity_usd: FloatArray
    vault_capital_usd: FloatArray
    initial_fund_usd: FloatArray
    initial_open_interest_usd: FloatArray
    max_ledger_error_usd: float
    fund_injections: FloatArray
    fund_injected_usd: FloatArray

    def event(self, name: str) -> FloatArray:
        """Event field ``name`` (a :attr:`StepEvents.FIELDS` name) per tick, ``(n, E)``."""
        out: FloatArray = self.events[:, :, StepEvents.FIELDS.index(name)]
        return out

    def totals(self) -> dict[str, FloatArray]:
        """Per-exchange episode totals, ``(E,)`` each unless noted.

        ``bad_debt_usd`` is every dollar below bankruptcy, the fund's share included;
        ``loss_beyond_fund_usd`` the part the fund did not pay (socialised plus
        unrecovered), and ``user_loss_usd`` that plus the deleveraged notional: the headline
        loss of the one-market evaluation (``agents.evaluate.metrics``). ``fund_drawdown_frac`` is
        ``(E, G)``: each pot's largest fall below its running peak, as a share of that peak.
        ``fund_transfer_usd`` is what the segments lent one another over the episode.
        ``vault_pnl_usd`` is the backstop vault's equity at the end less its depositors'
        capital (HLP's PnL on 10 Oct 2025: about +$40M on $300M).
        ``liquidator_absorbed_usd`` is the liquidation flow outside liquidators took at the
        oracles (every market's).
        """
        out = {
            name: self.event(name).sum(axis=0)
            for name in (
                "liquidation_volume_usd",
                "shortfall_usd",
                "adl_volume_usd",
                "adl_haircut_usd",
                "socialized_loss_usd",
                "unrecovered_usd",
                "bad_debt_usd",
                "fund_fee_income_usd",
                "fund_trading_fee_income_usd",
                "liquidation_sell_usd",
                "liquidation_buy_usd",
                "vault_takeover_usd",
                "vault_unwind_usd",
                "vault_loss_usd",
                "vault_adl_usd",
                "liquidator_absorbed_usd",
            )
        }
        out["vault_takeovers"] = self.event("vault_takeovers").sum(axis=0)
        out["vault_pnl_usd"] = self.vault_equity_usd[-1] - self.vault_capital_usd
        out["n_liquidations"] = self.event("n_liquidations").sum(axis=0)
        out["n_below_bankruptcy"] = self.event("n_liquidations_below_bankruptcy").sum(axis=0)
        beyond = out["socialized_loss_usd"] + out["unrecovered_usd"]
        out["loss_beyond_fund_usd"] = beyond
        out["user_loss_usd"] = beyond + out["adl_volume_usd"]
        out["collateral_seized_usd"] = self.collateral_seized_usd.sum(axis=0)
        out["collateral_depeg_loss_usd"] = self.collateral_depeg_loss_usd.sum(axis=0)
        for name in MARKET_EVENTS:
            out[name] = getattr(self, name).sum(axis=0)
        pots = np.concatenate([self.initial_fund_usd[None], self.fund_usd], axis=0)
        peak = np.maximum.accumulate(pots, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            fall = np.where(peak > 0.0, (peak - pots) / peak, 0.0)
        out["fund_drawdown_frac"] = fall.max(axis=0)
        out["fund_transfer_usd"] = np.maximum(self.fund_transfer_usd, 0.0).sum(axis=(0, 2))
        out["fund_start_usd"] = self.initial_fund_usd.sum(axis=1)
        out["fund_end_usd"] = self.fund_usd[-1].sum(axis=1)
        out["open_interest_start_usd"] = self.initial_open_interest_usd.sum(axis=1)
        out["open_interest_end_usd"] = self.open_interest_usd[-1].sum(axis=1)
        return out


class MarketsSimulator:
    """A batch of ``n_envs`` exchanges, each listing a scenario's ``M`` markets (module docstring).

    Args:
        scenario: The scenario, with or without a ``markets:`` section (without one it is
            one market; the population is this module's, not the one-market tick's).
        risk: Risk parameters (scalars or ``(n_envs,)`` arrays). ``liquidation_mode``
            ``partial``, ``binance`` (run as :func:`engine_risk` says), ``hyperliquid``,
            ``bitmex`` or ``dydx_v4``.
        n_envs: Exchanges simulated together.
        n_accounts: Account slots per exchange (cross accounts hold several markets in one).
        population: The traders' behaviour (sizes, leverage, hazards), as in one market.
        markets_population: How accounts spread across markets and collateral assets.
        fund_to_oi_frac: The insurance fund at reset as a share of the starting open
            interest; segmented, each segment gets its markets' share of that open interest.
        vault_to_oi_frac: The backstop vault's capital at reset as a share of the starting
            open interest over every market, in [0, 10] (Hyperliquid's HLP: about 0.022);
            > 0 needs a venue mode and a ``vault`` stage in ``risk.waterfall``.
        vault_adl_loss_frac: The vault's loss limit as a share of its capital, in [0, 1]:
            beyond it, its inventory is deleveraged against the opposite side's accounts
            (Hyperliquid's Liquidator vault; :mod:`fundgym.envs.core.vault`, "Loss limit").
            ``None`` (the default): the liquidation mode's own (``hyperliquid``: 2% [E]; the
            other modes: none); ``inf``: none, the vault unwinds whatever it loses.
        fund_mode: ``shared`` (one fund for every market) or ``segmented`` (one per group).
        fund_asset: The listed market (name or index) whose asset the shared fund's
            ``volatile`` bucket holds and whose puts its ``hedge`` bucket buys (default market
            0, the factor market); the fund is marked at that market's index. Or a basket:
            a mapping of markets (names or indices) to weights > 0 summing to 1 (``{"BTC":
            0.6, "ETH": 0.4}``): the fund holds units of each and a put series on each, its
            ``volatile`` and ``hedge`` targets split by the weights, each marked at its
            market's index (:class:`~fundgym.envs.fund.portfolio.FundPortfolio`, "Several
            assets").
        allocation: The fund's bucket terms (yield, withdrawal limits, option costs).
        fund_allocation: The shared fund's weights (stable, yield, volatile, hedge) at each
            reset, rebalanced into at the starting prices (default all stable).
        fund_groups: ``(M,)`` each market's segment ``0 .. G - 1`` (segmented only; default
            one per market).
        fund_cap_usd: ``(M,)`` the most the fund pays toward each market per tick, or per
            episode (``fund_cap_period``) (``inf``: none; Drift's tier caps).
        fund_injection_frac: What the venue injects into the shared fund when a tick's bad
            debt leaves it exhausted, as a share of the starting open interest over every
            market, in [0, 10] (0: never; :func:`~fundgym.envs.fund.portfolio.
            inject_if_exhausted` says when; Deribit's 500 BTC after 12 Mar 2020, Binance's $30M
            after 10 May 2020), as in one market; segmented, each segment its markets' share of
            it, when its markets' losses exhaust it (:meth:`_top_up_segments`).
        fund_injection_max: Top-ups at most per episode (per segment, segmented), a whole
            number in [0, 1000].
        market_fund_cap_frac: ``(M,)`` each market's cap as a share of the exchange's starting
            insurance, every pot (``market_fund_cap_frac``, :data:`~fundgym.envs.levers.
            MARKET_LEVERS`; ``inf``: none, the default): the cap in force is the smaller of
            this and ``fund_cap_usd``, per exchange, for the same period.
        fund_cap_period: ``"tick"`` (the default): each cap holds per tick, anew every
            tick; ``"episode"``: each market's cap is spent over the episode, what the fund
            paid toward the market so far counting against it (Drift's ``quote_max_insurance``
            less ``quote_settled_insurance``: a market's claim on the fund is cumulative
            until governance raises the cap), restored at each reset.
        segment_transfer_cap_usd: Segmented: the most the segments may lend one another per
            tick toward a market's shortfalls its own segment cannot pay, >= 0 (0, the
            default: transfers forbidden; ``inf``: the segments pool for shortfalls).
        collateral_price: The price the venue marks collateral assets at: ``book``,
            ``index`` or ``redemption``.
        collateral_haircut_frac: ``(K,)`` haircuts in [0, 1) (default: the scenario's
            ``haircut_frac`` per asset).
        market_mmr_mult: ``(M,)`` each market's margin as a multiple of the exchange's
            (``core_step``'s ``market_mmr_mult``; > 0, default all 1): a thin alt asks more.
            New positions' initial margin scales alike, so their leverage is capped at
            ``1 / (imr x multiple)``.
        market_oi_cap_frac: ``(M,)`` each market's open-interest cap as a multiple of its
            open interest at the reset (> 0; default none): arrivals that would lift it above
            are refused (``MARKET_LEVERS["market_oi_cap_frac"]``).
            Each per-market lever, and the haircuts, may also be one row per exchange
            (``(n_envs, M)``, ``(n_envs, K)``), as :meth:`set_levers` takes them.
        population_minutes: Clock of the population (default 5 minutes, or every tick when
            ticks are longer).
        seed: One seed (exchange ``e`` gets ``seed + e``), one per exchange, or ``None`` for
            the scenario's for every exchange (as the one-market simulator's).
    """

    def __init__(
        self,
        scenario: Scenario,
        risk: RiskParams | None = None,
        *,
        n_envs: int = 1,
        n_accounts: int = 2_000,
        population: PopulationParams | None = None,
        markets_population: MarketsPopulation | None = None,
        fund_to_oi_frac: float = 0.02,
        vault_to_oi_frac: float = 0.0,
        vault_adl_loss_frac: float | None = None,
        fund_mode: str = "shared",
        fund_asset: str | int | Mapping[Any, float] = 0,
        allocation: AllocationParams | None = None,
        fund_allocation: Sequence[float] | None = None,
        fund_groups: Sequence[int] | None = None,
        fund_cap_usd: Sequence[float] | None = None,
        fund_cap_period: str = "tick",
        market_fund_cap_frac: ArrayLike | None = None,
        segment_transfer_cap_usd: float = 0.0,
        collateral_price: str = "book",
        collateral_haircut_frac: ArrayLike | None = None,
        market_mmr_mult: ArrayLike | None = None,
        market_oi_cap_frac: ArrayLike | None = None,
        population_minutes: float | None = None,
        seed: int | Sequence[int] | None = None,
        fund_injection_frac: float = 0.0,
        fund_injection_max: int = 0,
    ) -> None:
        if n_envs < 1 or n_accounts < 1:
            raise ValueError(
                f"n_envs and n_accounts must be >= 1, got n_envs={n_envs}, n_accounts={n_accounts}"
            )
        if not (math.isfinite(fund_to_oi_frac) and 0.0 <= fund_to_oi_frac <= 10.0):
            raise ValueError(f"fund_to_oi_frac must lie in [0, 10], got {fund_to_oi_frac!r}")
        if not (math.isfinite(vault_to_oi_frac) and 0.0 <= vault_to_oi_frac <= 10.0):
            raise ValueError(f"vault_to_oi_frac must lie in [0, 10], got {vault_to_oi_frac!r}")
        if fund_mode not in FUND_MODES:
            raise ValueError(f"fund_mode must be one of {list(FUND_MODES)}, got {fund_mode!r}")
        ok = not isinstance(fund_injection_frac, bool) and math.isfinite(fund_injection_frac)
        if not (ok and 0.0 <= fund_injection_frac <= 10.0):
            raise ValueError(
                f"fund_injection_frac must lie in [0, 10], got {fund_injection_frac!r}"
            )
        ok = not isinstance(fund_injection_max, bool)
        if not (ok and float(fund_injection_max).is_integer() and 0 <= fund_injection_max <= 1000):
            raise ValueError(
                "fund_injection_max must be a whole number in [0, 1000], got "
                f"{fund_injection_max!r}"
            )
        self.fund_injection_frac = float(fund_injection_frac)
        self.fund_injection_max = int(fund_injection_max)
        if collateral_price not in COLLATERAL_SOURCES:
            raise ValueError(
                f"collateral_price must be one of {list(COLLATERAL_SOURCES)}, "
                f"got {collateral_price!r}"
            )
        self.vault_to_oi_frac = float(vault_to_oi_frac)
        vault_loss_frac("partial", vault_adl_loss_frac)  # checked before any work
        self.vault_adl_loss_frac = vault_adl_loss_frac
        risk = self._engine(risk if risk is not None else RiskParams())
        _check_transfer_cap(segment_transfer_cap_usd, fund_mode, risk.liquidation_mode)
        self.segment_transfer_cap_usd: float | FloatArray = float(segment_transfer_cap_usd)
        n_mkt = scenario.n_markets
        # The markets whose assets (and puts) the shared fund holds, and their weights (None:
        # one market, the one-asset fund of one market's arithmetic).
        self.fund_markets, self.fund_basket = _fund_basket(fund_asset, scenario)
        self.allocation = allocation or AllocationParams()
        self.fund_allocation = None if fund_allocation is None else _weights(fund_allocation)
        if self.fund_allocation is not None and fund_mode != "shared":
            raise ValueError(
                "fund_allocation applies to fund_mode 'shared': segments are cash, got "
                f"fund_mode {fund_mode!r}"
            )
        self.scenario = scenario
        self.market_names = scenario.market_names
        self.n_envs, self.n_accounts, self.n_markets = n_envs, n_accounts, n_mkt
        self.n_assets = len(scenario.collateral)
        self.risk = risk
        self.population = population or PopulationParams()
        self.markets_population = markets_population or MarketsPopulation()
        self.fund_to_oi_frac = float(fund_to_oi_frac)
        self.fund_mode = fund_mode
        self.fund_groups = _groups(fund_mode, fund_groups, n_mkt)
        self.n_pots = int(self.fund_groups.max()) + 1 if fund_mode == "segmented" else 1
        self.fund_cap_usd = _caps(fund_cap_usd, n_mkt)
        self.market_fund_cap_frac = _fund_cap_fracs(market_fund_cap_frac, scenario, n_envs)
        if fund_cap_period not in FUND_CAP_PERIODS:
            raise ValueError(
                f"fund_cap_period must be one of {list(FUND_CAP_PERIODS)}, got {fund_cap_period!r}"
            )
        self.fund_cap_period = fund_cap_period
        self.collateral_source = collateral_price
        self.haircut = _haircuts(scenario, collateral_haircut_frac, n_envs)
        self.market_mmr_mult = _mmr_mults(market_mmr_mult, scenario, n_envs)
        self.market_oi_cap_frac = _oi_caps(market_oi_cap_frac, scenario, n_envs)
        tick = scenario.tick_minutes
        every = 5.0 if population_minutes is None else float(population_minutes)
        if not (math.isfinite(every) and every > 0.0):
            raise ValueError(f"population_minutes must be > 0, got {population_minutes!r}")
        self.pop_every = max(1, round(every / tick))
        self.pop_columns = self.population.columns(self.pop_every * tick)
        self._scenario_arrays()
        self.reset(seed)

    def _scenario_arrays(self) -> None:
        """What the tick reads of the scenario's markets: the mix, books, volatility, funding."""
        scenario = self.scenario
        shares = np.asarray(scenario.market_oi_shares, dtype=np.float64)
        self.mix_cdf = np.cumsum(shares)
        self.mix_cdf[-1] = 1.0
        self.oi_shares = shares
        self.market_scenarios = tuple(
            _market_scenario(scenario, m) for m in range(scenario.n_markets)
        )
        self.depth_scale = np.array(
            [1.0, *(spec.depth_scale for spec in scenario.markets[1:])], dtype=np.float64
        )
        self.base_vol = _base_vols(scenario)
        self.funding_interval_min = np.array(
            [60.0 * s.funding.interval_hours for s in self.market_scenarios]
        )

    def set_levers(
        self,
        risk: RiskParams,
        market_mmr_mult: ArrayLike | None = None,
        market_oi_cap_frac: ArrayLike | None = None,
        market_fund_cap_frac: ArrayLike | None = None,
        collateral_haircut_frac: ArrayLike | None = None,
        segment_transfer_cap_usd: ArrayLike | None = None,
    ) -> None:
        """Put ``risk``, each market's levers and each collateral asset's haircut in force.

        From the next tick; ``None`` for a per-market lever: none (all ones for the margin);
        for the haircuts: those in force (the constructor's, or the scenario's). A fund cap
        over the episode counts what the fund has already paid the market. A haircut moves
        every account's margin at once (the assets they hold are valued at the venue's price
        less it), not the ledger, which counts collateral at its price.
        ``segment_transfer_cap_usd``: what the segments may lend one another per tick from
        the next tick (``None``: the one in force; checked as the constructor's).

        Every lever may differ between the exchanges of the batch, as ``risk``'s arrays may
        (a batched environment sets each exchange's own): a per-market lever is ``(M,)`` for
        every exchange or ``(n_envs, M)``, a haircut ``(K,)`` or ``(n_envs, K)``, the
        transfer cap a number or ``(n_envs,)``.

        Raises:
            ValueError: What the constructor refuses (a vault without a venue mode, a
                multiple that is not finite and > 0, or not one per market).
        """
        risk = self._engine(risk)
        E = self.n_envs
        mults = _mmr_mults(market_mmr_mult, self.scenario, E)
        caps = _oi_caps(market_oi_cap_frac, self.scenario, E)
        fund_caps = _fund_cap_fracs(market_fund_cap_frac, self.scenario, E)
        haircuts = (
            self.haircut
            if collateral_haircut_frac is None
            else _haircuts(self.scenario, collateral_haircut_frac, E)
        )
        if segment_transfer_cap_usd is not None:
            transfer = _transfer_caps(segment_transfer_cap_usd, E)
            _check_transfer_cap(transfer, self.fund_mode, risk.liquidation_mode)
            self.segment_transfer_cap_usd = transfer
        self.risk = risk
        self.market_mmr_mult = mults
        self.market_oi_cap_frac = caps
        self.market_fund_cap_frac = fund_caps
        self.haircut = haircuts

    def _engine(self, risk: RiskParams) -> RiskParams:
        """:func:`engine_risk` of ``risk``, checked against this simulator's vault."""
        out = engine_risk(risk)
        if self.vault_to_oi_frac > 0.0:
            if "vault" not in out.stages:
                raise ValueError(
                    f"vault_to_oi_frac = {self.vault_to_oi_frac!r} needs a 'vault' stage in "
                    f"RiskParams.waterfall, got {list(out.stages)}"
                )
            if out.liquidation_mode == "partial":
                raise ValueError(
                    f"vault_to_oi_frac = {self.vault_to_oi_frac!r} needs a liquidation_mode "
                    f"that hands accounts to a vault across markets (hyperliquid, bitmex), got "
                    f"{risk.liquidation_mode!r}: the partial waterfall (binance's engine across "
                    "markets, engine_risk) takes no account over"
                )
        return out

    def set_allocation(
        self, weights: Sequence[float] | FloatArray, mask: BoolArray | None = None
    ) -> FloatArray:
        """Rebalance the shared fund toward ``weights``; the cost per exchange, USD.

        ``weights`` is ``(4,)`` or ``(n_envs, 4)`` (stable, yield, volatile, hedge), each row
        >= 0 and summing to 1, applied at the fund asset's last index and volatility
        (:func:`~fundgym.envs.fund.portfolio.rebalance`); the costs and the revaluation are
        outside gains or losses of the fund, booked with its others. Only the exchanges in
        ``mask`` (``(n_envs,)`` bools; default: all) are touched: the others keep their
        portfolio exactly, since even a rebalance to the weights in force trades (a batched
        environment moves only the funds whose targets moved).

        Raises:
            ValueError: A segmented fund (its segments are cash), or weights that are not
                four non-negative shares summing to 1.
        """
        if self.fund_mode != "shared":
            raise ValueError("set_allocation moves the shared fund: segments are cash")
        w = np.broadcast_to(_weights(weights), (self.n_envs, 4))
        pf = self.state.fund
        ext = pf.external_pnl_usd.copy()
        px, vol = self._fund_marks(self.last_index)
        cost = np.zeros(self.n_envs)
        if mask is None or bool(np.all(mask)):
            cost = rebalance(
                pf, w, px, vol, self.fund_stressed, self.allocation, basket=self.fund_basket
            )
        elif np.any(mask):  # the rows in the mask, rebalanced apart and written back
            rows = np.flatnonzero(mask)
            part = FundPortfolio(
                **{f.name: getattr(pf, f.name)[rows] for f in dataclasses.fields(FundPortfolio)}
            )
            cost[rows] = rebalance(
                part, w[rows], px[rows], vol[rows], self.fund_stressed[rows], self.allocation,
                basket=self.fund_basket,
            )  # fmt: skip
            for f in dataclasses.fields(FundPortfolio):
                getattr(pf, f.name)[rows] = getattr(part, f.name)
        self.state.net_deposits_usd += pf.external_pnl_usd - ext
        return cost

    def fund_weights(self) -> FloatArray:
        """``(E, 4)`` the shared fund's bucket weights now (all stable for segments)."""
        if self.fund_mode != "shared":
            return np.tile([1.0, 0.0, 0.0, 0.0], (self.n_envs, 1))
        return self.state.fund.weights(*self._fund_marks(self.last_index))

    @property
    def fund_asset(self) -> int | dict[int, float]:
        """The shared fund's listed asset: a market's index, or a basket ``{index: weight}``."""
        if self.fund_basket is None:
            return self.fund_markets[0]
        return dict(zip(self.fund_markets, self.fund_basket.tolist(), strict=True))

    def _fund_marks(self, index: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The fund's assets' prices at ``index`` ``(E, M)`` and their volatilities.

        ``(E,)`` each for a one-market fund, ``(E, K)`` for a basket of ``K`` markets.
        """
        if self.fund_basket is None:
            k = self.fund_markets[0]
            return index[:, k], self.vol_annual[:, k]
        cols = list(self.fund_markets)
        return index[:, cols], self.vol_annual[:, cols]

    # ---------------------------------------------------------------- reset ----

    def reset(
        self, seed: int | Sequence[int] | None = None, scenario: Scenario | None = None
    ) -> None:
        """Every exchange anew: paths, books and funds, tick 0 (seeds as the constructor's).

        ``scenario``: a new day for every exchange of the batch (a training sampler's draw,
        :func:`~fundgym.envs.market.sampler.sample_markets_scenario`), listing the same
        markets and collateral assets on the same clock, so that every array keeps its
        layout; ``None`` keeps the one in force.

        Raises:
            ValueError: ``scenario`` lists other markets or assets, or ticks on another clock.
        """
        if scenario is not None:
            self._use_scenario(scenario)
        E, A, M, K = self.n_envs, self.n_accounts, self.n_markets, self.n_assets
        self.seeds = batch_seeds(seed, [self.scenario.seed] * E)
        self.rng = BatchStreams(self.seeds)
        self.markets = [Market(E) for _ in range(M)]
        n = self.scenario.n_ticks
        self.collateral_path = np.ones((E, n, K))
        self.redemption_path = np.ones((E, n, K))
        self.t = 0
        # The venue's events per tick (one scenario: every exchange's the same): the exchange's
        # flags, and each market's reduce-only windows and leverage caps.
        self.venue_flags, self.market_reduce_only, self.market_leverage_cap = market_event_arrays(
            self.scenario
        )
        # Each market's settlement (a tick, or -1) and the first tick of its index window;
        # the window's index sum so far, per exchange.
        self.settle_tick, self.settle_from = market_settlements(self.scenario)
        self.settle_sum = np.zeros((E, M))
        # The scenario's attacker (Mango): its slot (it withdraws from the ticks flagged
        # VF_ATTACKER) and what the venue has left to pay out (inf: no limit).
        att = self.scenario.attacker
        self.first_slot = 0 if att is None else ATTACKER_SLOT + 1
        lendable = np.inf if att is None or att.lendable_usd is None else att.lendable_usd
        self.attacker_left_usd = np.full(E, lendable)
        # What the fund has paid toward each market this episode (fund_cap_period "episode").
        self.fund_cap_spent_usd = np.zeros((E, M))
        segments = np.zeros((E, self.n_pots)) if self.fund_mode == "segmented" else None
        self.state = SimState.create(
            np.zeros((E, A)),
            np.zeros((E, A, M)),
            np.zeros((E, A, M)),
            0.0,
            collateral_units=np.zeros((E, A, K)),
            fund_segments_usd=segments,
        )
        if self.fund_basket is not None:  # one column per asset of the basket
            self.state.fund = FundPortfolio.zeros(E, len(self.fund_markets))
        self.vol_annual = np.tile(self.base_vol, (E, 1))
        self.last_index = np.zeros((E, M))
        self.peak_index = np.zeros((E, M))
        # The mark cap's 8-hour average of each market's mark (from its first price).
        self.mark_average = np.zeros((E, M))
        self.mark_average_weight = mark_average_weight(self.scenario.tick_minutes)
        self.initial_open_interest_usd = np.zeros((E, M))
        self.initial_fund_usd = np.zeros((E, self.n_pots))
        self.unit_price = np.ones((E, K))
        self.fund_stressed = np.zeros(E, dtype=bool)
        self.prev_oracle = np.zeros((E, M))  # the venue modes' intra-tick paths start here
        self.prev_book = np.zeros((E, M))
        self.vault_capital_usd = np.zeros(E)
        # Segmented top-ups (fund_injection_frac): each segment's size and allowance left.
        self.segment_injection_usd = np.zeros((E, self.n_pots))
        self.segment_injections_left = np.zeros((E, self.n_pots))
        for e in range(E):
            self._install(e)
        self.max_ledger_error_usd = 0.0
        if self.fund_allocation is not None:
            self.set_allocation(self.fund_allocation)

    def _use_scenario(self, scenario: Scenario) -> None:
        """Put ``scenario`` in force for the next reset (checked against the one in force)."""
        now = self.scenario
        same = (
            scenario.market_names == now.market_names
            and scenario.collateral_names == now.collateral_names
            and scenario.tick_minutes == now.tick_minutes
        )
        if not same:
            raise ValueError(
                f"scenario {scenario.name!r} must list the markets {list(now.market_names)} "
                f"and collateral assets {list(now.collateral_names)} of {now.name!r} on its "
                f"{now.tick_minutes:g}-minute clock, got {list(scenario.market_names)}, "
                f"{list(scenario.collateral_names)}, {scenario.tick_minutes:g} minutes"
            )
        self.scenario = scenario
        self._scenario_arrays()

    def _install(self, e: int) -> None:
        """Draw exchange ``e``'s paths (its own generator) and book (its own streams)."""
        sc = self.scenario
        paths: MarketsPath = draw_markets(sc, np.random.default_rng(self.seeds[e]), 1)
        for m, market in enumerate(self.markets):
            market.reset_env(e, self.market_scenarios[m], paths.market(m))
        source = getattr(paths.collateral, self.collateral_source)  # (n, 1, K)
        self.collateral_path[e] = source[:, 0, :]
        self.redemption_path[e] = paths.collateral.redemption[:, 0, :]
        st = self.state
        price0 = paths.index[0, 0, :].copy()
        self.last_index[e] = price0
        self.peak_index[e] = price0
        self.mark_average[e] = price0
        self.unit_price[e] = self.collateral_path[e, 0]
        unit_value = self.unit_price[e] * (1.0 - _row(self.haircut, e))
        mp = self.markets_population
        packed = self.risk.packed(self.n_envs)
        scratch = np.zeros(self.n_markets)
        n_open = round(self.population.calm_open_frac * self.n_accounts)
        place_accounts(
            e, self.rng.state, POPULATION_STREAM, n_open, -1, True, st.collateral_usd, st.size,
            st.entry_price, st.collateral_units, st.counterparty_size, st.counterparty_cash_usd,
            packed, self.pop_columns, price0, self.mix_cdf, _row(self.market_mmr_mult, e),
            np.full(self.n_markets, np.inf), mp.second_leg_frac, mp.asset_share,
            mp.asset_margin_frac, unit_value, self.unit_price[e], self.first_slot,
            np.full(self.n_markets, np.inf), np.zeros(self.n_markets, np.bool_), scratch,
            scratch.copy(), scratch.copy(),
        )  # fmt: skip
        if sc.attacker is not None:
            self._install_attacker(e, price0)
        oi = open_interest_usd(st.take([e]), price0[None, :])[0]
        self.initial_open_interest_usd[e] = oi
        fund = self.fund_to_oi_frac * float(oi.sum())
        if self.fund_mode == "segmented":
            per_group = np.bincount(self.fund_groups, weights=oi, minlength=self.n_pots)
            st.fund_segments_usd[e] = self.fund_to_oi_frac * per_group
            self.initial_fund_usd[e] = st.fund_segments_usd[e]
            # Each segment's top-up: its markets' share of the exchange's.
            self.segment_injection_usd[e] = self.fund_injection_frac * per_group
            self.segment_injections_left[e] = self.fund_injection_max
        else:
            fresh = FundPortfolio.from_stable(np.array([fund]), st.fund.n_assets)
            for f in dataclasses.fields(FundPortfolio):
                getattr(st.fund, f.name)[e] = getattr(fresh, f.name)[0]
            st.fund.injection_usd[e] = self.fund_injection_frac * float(oi.sum())
            st.fund.injections_left[e] = self.fund_injection_max
            self.initial_fund_usd[e, 0] = fund
        base_depth = self.scenario.depth.normal_usd_per_pct
        if self.scenario.depth.oi_to_depth is not None:
            base_depth = max(float(oi[0]) / self.scenario.depth.oi_to_depth, 1.0)
        for m, market in enumerate(self.markets):
            market.set_normal_depth(e, max(base_depth * float(self.depth_scale[m]), 1.0))
        vault_usd = self.vault_to_oi_frac * float(oi.sum())
        loss_frac = vault_loss_frac(self.risk.liquidation_mode, self.vault_adl_loss_frac)
        open_vault(st.vault, e, vault_usd, loss_frac)
        self.vault_capital_usd[e] = vault_usd
        row = st.take([e])
        st.initial_total_usd[e] = ledger_total(row, price0[None, :], self.unit_price[e][None])[0]

    # ---------------------------------------------------------------- tick ----

    @property
    def done(self) -> bool:
        """Whether the episode has run its scenario's ticks."""
        return self.t >= self.scenario.n_ticks

    def fund_pots_usd(self) -> FloatArray:
        """``(E, G)`` each pot's value now: the shared fund at its last mark, or the segments."""
        if self.fund_mode == "segmented":
            return self.state.fund_segments_usd.copy()
        return self.state.fund_usd[:, None].copy()

    def fund_caps_usd(self) -> FloatArray:
        """Each market's cap in force, USD: ``(M,)``, or ``(E, M)`` with a share of the fund.

        The smaller of ``fund_cap_usd`` and ``market_fund_cap_frac`` x the exchange's
        starting insurance (every pot: the shared fund, or the segments' total, so that what
        other segments lend a market counts against its cap but a cap of 1 never stops it;
        ``inf``: none).
        """
        if np.isinf(self.market_fund_cap_frac).all():
            return self.fund_cap_usd
        start = np.repeat(self.initial_fund_usd.sum(axis=1)[:, None], self.n_markets, axis=1)
        frac = _rows(self.market_fund_cap_frac, self.n_envs)
        none = np.isinf(frac)
        finite = np.where(none, 0.0, frac)  # no inf x 0 below
        share = np.where(none, np.inf, finite * start)
        out: FloatArray = np.minimum(self.fund_cap_usd[None, :], share)
        return out

    def _cap_left(self) -> FloatArray | None:
        """The caps this tick's payments may use: ``None`` (no cap), ``(M,)`` or ``(E, M)``."""
        caps = self.fund_caps_usd()
        if np.isinf(caps).all():
            return None
        if self.fund_cap_period == "tick":
            return caps
        # inf - spent stays inf; a spent cap leaves 0 (the kernels read >= 0).
        left: FloatArray = np.maximum(caps - self.fund_cap_spent_usd, 0.0)
        return left

    def step(self) -> dict[str, Any]:
        """Advance every exchange one tick (module docstring); what it produced."""
        st, risk = self.state, self.risk
        E, M = self.n_envs, self.n_markets
        tick = self.scenario.tick_minutes
        prices = [market.prices() for market in self.markets]
        index = np.stack([p.index for p in prices], axis=1)
        last = np.stack([p.last for p in prices], axis=1)
        mark = np.stack([p.mark for p in prices], axis=1)
        oracle = np.stack([p.oracle for p in prices], axis=1)
        # 1b. The mark cap per market (mark_cap_mult: mark and oracle at most that multiple of
        #    the market's own 8-hour average of its mark, Hyperliquid after XPL), as in one market.
        mult = risk.packed(E)[:, P_MARK_CAP_MULT]
        if (mult > 0.0).any():
            mark, oracle, self.mark_average = capped_marks(
                mark, oracle, self.mark_average, mult, self.mark_average_weight
            )
        else:  # the average still follows the mark, so a cap set later has it
            self.mark_average = self.mark_average + self.mark_average_weight * (
                mark - self.mark_average
            )
        depth = np.stack([p.depth_usd_per_pct for p in prices], axis=1)
        rate = np.stack([p.funding_rate for p in prices], axis=1)
        # 1. Drivers per market: one-day EWMA volatility and the recent peak (as one market).
        self.vol_annual, self.peak_index = vol_and_peak(
            self.vol_annual, self.last_index, self.peak_index, index, tick
        )
        self.last_index = index
        # 2. Collateral at the venue's price; its move is an outside revaluation.
        t = min(self.t, self.collateral_path.shape[1] - 1)
        px = self.collateral_path[:, t, :]
        if self.n_assets:
            held = st.collateral_units.sum(axis=1)  # (E, K)
            st.net_deposits_usd += (held * (px - self.unit_price)).sum(axis=1)
        self.unit_price = px.copy()
        # The lending market is stressed when the factor market's book is below half its
        # normal depth (as in one market): the settlements' and the engine's fund payments.
        self.fund_stressed = depth[:, 0] < 0.5 * self.normal_depth(0)
        # 2b. Settlements: a market's every position closes at its window's average index,
        #     and the market is closed (reduce-only from then on: market_event_arrays).
        settled = self._settle(index)
        # 3. Population, on its clock, unless an outage keeps traders out (venue events: the
        #    scenario's, the same tick for every exchange of the batch).
        row = min(self.t, self.venue_flags.size - 1)  # the events' row of this tick
        vf = int(self.venue_flags[row])
        pop_events = np.zeros((E, N_MARKETS_EVENTS))
        fund_income = np.zeros((E, M))
        if self.t % self.pop_every == 0 and not vf & VF_OUTAGE:
            pop_events, fund_income = self._population(mark, rate, index, row)
        # 4. Funding per market; 5. the shared fund's accrual at its asset's index.
        apply_funding(st, rate * tick / self.funding_interval_min, mark)
        if self.fund_mode == "shared":
            pf = st.fund
            ext = pf.external_pnl_usd.copy()
            accrue(pf, *self._fund_marks(index), tick, self.allocation)
            st.net_deposits_usd += pf.external_pnl_usd - ext
        # 5b. The attacker's withdrawal against its unrealised PnL (Mango), before the engine.
        withdrawn = self._attacker_withdraws(oracle, vf)
        # 6. The margin engine across markets.
        segmented = self.fund_mode == "segmented"
        kwargs: dict[str, Any] = {}
        if (self.market_mmr_mult != 1.0).any():
            kwargs["market_mmr_mult"] = self.market_mmr_mult
        if self.n_assets:
            kwargs.update(
                collateral_price=px,
                collateral_haircut=self.haircut,
                collateral_redemption_price=self.redemption_path[:, t, :],
            )
        lend = self.segment_transfer_cap_usd
        transfer_cap = lend if np.any(lend) else None
        if vf & VF_ENGINE_OFF:  # an outage that stops the liquidation engine: nothing closes
            events = StepEvents.zeros(E)
            if M > 1:
                events.market_flow_usd = np.zeros((E, M, 2))
        else:
            events = core_step(
                st,
                risk,
                oracle if M > 1 else oracle[:, 0],
                [SqrtImpact(depth[:, m]) for m in range(M)] if M > 1 else SqrtImpact(depth[:, 0]),
                book_price=last if M > 1 else last[:, 0],
                fund_stressed=self.fund_stressed,
                allocation=self.allocation,
                tick_minutes=tick,
                fund_mode=self.fund_mode,
                fund_groups=self.fund_groups if segmented else None,
                fund_cap_usd=self._cap_left(),
                fund_transfer_cap_usd=transfer_cap,
                prev_mark=self.prev_oracle if M > 1 else self.prev_oracle[:, 0],
                prev_book_price=self.prev_book if M > 1 else self.prev_book[:, 0],
                **kwargs,
            )
        events.attacker_withdrawn_usd = withdrawn
        if settled is not None:  # the settlements' debt, paid before this tick's engine
            price, debt, paid, _ = settled
            events.settlement_price = price
            events.bad_debt_usd += debt
            events.shortfall_usd += paid
            events.unrecovered_usd += debt - paid
        if self.fund_injection_max > 0:
            # 6b. The venue's top-up of a fund the tick's bad debt exhausted: outside money.
            if self.fund_mode == "shared":
                st.net_deposits_usd += inject_if_exhausted(
                    st.fund, events.bad_debt_usd, self.fund_stressed, self.allocation
                )
            else:
                self._top_up_segments(events, settled)
        self.prev_oracle = oracle.copy()
        self.prev_book = last.copy()
        self.fund_cap_spent_usd += _per_market(events, "market_fund_paid_usd", M)
        flow: FloatArray
        if events.market_flow_usd is not None:
            flow = events.market_flow_usd
        else:  # one market: the per-exchange columns are its flow
            pair = np.stack([events.liquidation_sell_usd, events.liquidation_buy_usd], axis=1)
            flow = pair[:, None, :]
        for m, market in enumerate(self.markets):
            market.advance(flow[:, m, 0], flow[:, m, 1], depth[:, m])
        events.trading_fees_usd = pop_events[:, ME_FEES_USD]
        events.fund_trading_fee_income_usd = fund_income.sum(axis=1)
        err = ledger_error(st, mark, px if self.n_assets else None)
        scale = np.abs(st.initial_total_usd) * LEDGER_TOLERANCE_REL + 1e-6
        worst = float(np.max(np.abs(err)))
        self.max_ledger_error_usd = max(self.max_ledger_error_usd, worst)
        if not (np.abs(err) <= scale).all():
            e = int(np.argmax(np.abs(err) / scale))
            raise RuntimeError(
                f"ledger error {err[e]!r} USD in exchange {e} at tick {self.t} of "
                f"{self.scenario.name!r}: money was created or lost"
            )
        self.t += 1
        return {
            "events": events,
            "index": index,
            "mark": mark,
            "oracle": oracle,
            "depth": depth,
            "open_interest_usd": open_interest_usd(st, mark),
            **{name: _per_market(events, name, M) for name in MARKET_EVENTS},
            "market_flow_usd": flow,
            "fund_usd": self.fund_pots_usd(),
            "fund_transfer_usd": np.zeros((E, self.n_pots))
            if events.fund_transfer_usd is None
            else events.fund_transfer_usd.copy(),
            "collateral_seized_usd": _or_zeros(events.collateral_seized_usd, E),
            "collateral_depeg_loss_usd": _or_zeros(events.collateral_depeg_loss_usd, E),
            "collateral_price": px.copy(),
            "arrivals": pop_events[:, ME_ARRIVALS],
            "exits": pop_events[:, ME_EXITS],
            "trading_fees_usd": pop_events[:, ME_FEES_USD],
            "vault_equity_usd": self.vault_equity_usd(mark),
        }

    def _install_attacker(self, e: int, price0: FloatArray) -> None:
        """Put the scenario's attacker in exchange ``e``'s slot 0 (the population's start at 1).

        As in one market (``fundgym.envs.simulator._install_attacker``): it deposits its
        margin and opens its position in its market (``attacker.market``, the first without
        one) at the starting index against the outside counterparty.
        """
        spec = self.scenario.attacker
        assert spec is not None
        st, a = self.state, ATTACKER_SLOT
        j = 0 if spec.market is None else self.scenario.market_names.index(spec.market)
        q = (1.0 if spec.side == "long" else -1.0) * spec.notional_usd / float(price0[j])
        st.collateral_usd[e, a] = spec.margin_usd
        st.size[e, a, j] = q
        st.entry_price[e, a, j] = price0[j]
        st.counterparty_size[e, j] -= q
        st.counterparty_cash_usd[e] += q * price0[j]

    def _attacker_withdraws(self, oracle: FloatArray, vf: int) -> FloatArray:
        """What the attacker takes this tick, ``(E,)`` USD: against its unrealised PnL.

        From its ``withdraw_start_minute``, unless withdrawals are halted: its equity at the
        oracles with profit counted at ``1 - unrealised_pnl_haircut_frac``, less the initial
        margin of its positions (the exchange's IMR times each market's margin multiple), in
        all at most ``lendable_usd`` over the episode
        (:func:`~fundgym.envs.core.venue_events.attacker_withdrawal_markets`). It leaves
        through ``net_deposits_usd``.
        """
        took = np.zeros(self.n_envs)
        if not vf & VF_ATTACKER or vf & VF_WITHDRAWAL_HALT:
            return took
        st, a = self.state, ATTACKER_SLOT
        packed = self.risk.packed(self.n_envs)
        for e in range(self.n_envs):
            imr = packed[e, P_IMR] * _row(self.market_mmr_mult, e)
            took[e] = min(
                attacker_withdrawal_markets(
                    float(st.collateral_usd[e, a]), st.size[e, a], st.entry_price[e, a],
                    oracle[e], float(packed[e, P_UPNL_HAIRCUT]), imr,
                ),
                self.attacker_left_usd[e],
            )  # fmt: skip
        self.attacker_left_usd -= took
        st.collateral_usd[:, a] -= took
        st.net_deposits_usd -= took
        return took

    def _settle(
        self, index: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None:
        """This tick's settlements (``docs/markets.md``, "Settlement across markets").

        Adds the tick's index to each settling market's window; a market whose settling tick
        this is closes every position at the window's average index
        (:func:`~fundgym.envs.core.venue_events.settle_market`). The debt of accounts it left
        flat below zero goes to the shared fund, or under segmented funds to the market's own
        segment, within what it holds (no cap); the rest is unrecovered, the exchange's.
        Returns ``(price, debt, paid, pot_debt)``: ``(E,)`` each (the last settling market's
        price, the debts summed) and each pot's share of the debt ``(E, G)`` (its markets'),
        or ``None`` when nothing settles this tick.
        """
        t = self.t
        st = self.state
        out = None
        pot_debt = np.zeros((self.n_envs, self.n_pots))
        for j in np.flatnonzero((self.settle_from <= t) & (t <= self.settle_tick)):
            self.settle_sum[:, j] += index[:, j]
            if t != self.settle_tick[j]:
                continue
            price = self.settle_sum[:, j] / float(t - self.settle_from[j] + 1)
            has_assets: BoolArray = np.asarray((st.collateral_units > 0.0).any(axis=2))
            debt = settle_market(
                st.collateral_usd, st.size, st.entry_price, st.counterparty_size,
                st.counterparty_cash_usd, st.vault, inventory_column(j), int(j), price,
                has_assets,
            )  # fmt: skip
            paid = np.zeros(self.n_envs)
            pot_debt[:, int(self.fund_groups[j])] += debt
            if (debt > 0.0).any():
                if self.fund_mode == "shared":
                    pf = st.fund
                    ext = pf.external_pnl_usd.copy()
                    px, vol = self._fund_marks(index)
                    paid = pay(pf, debt, px, vol, self.fund_stressed, self.allocation)
                    st.net_deposits_usd += pf.external_pnl_usd - ext
                else:
                    g = int(self.fund_groups[j])
                    paid = np.minimum(np.maximum(st.fund_segments_usd[:, g], 0.0), debt)
                    st.fund_segments_usd[:, g] -= paid
                st.unrecovered_usd += debt - paid
            out = (price, debt, paid) if out is None else (price, out[1] + debt, out[2] + paid)
        return None if out is None else (*out, pot_debt)

    def _top_up_segments(self, events: StepEvents, settled: Any) -> None:
        """The venue's top-ups of segments, as ``inject_if_exhausted`` tops up the shared fund.

        A segment is topped up by its own ``segment_injection_usd`` (``fund_injection_frac`` x
        its markets' starting open interest) when this tick brought losses in its markets (what
        a pot paid toward them, or what was socialised or left unrecovered there, or a
        settlement's debt in them) and left its cash at most
        :data:`~fundgym.envs.fund.portfolio.EXHAUSTED_FRAC` of one top-up, and it has an
        allowance left; the money comes from outside (a deposit).
        """
        st = self.state
        M = self.n_markets
        lost = (
            _per_market(events, "market_fund_paid_usd", M)
            + _per_market(events, "market_socialized_usd", M)
            + _per_market(events, "market_unrecovered_usd", M)
        )
        per_pot = np.zeros((self.n_envs, self.n_pots))
        for g in range(self.n_pots):
            per_pot[:, g] = lost[:, self.fund_groups == g].sum(axis=1)
        if settled is not None:  # a settlement's debt, on the segment that paid it
            per_pot += settled[3]
        size = self.segment_injection_usd
        due = (
            (per_pot > 0.0)
            & (self.segment_injections_left > 0.0)
            & (size > 0.0)
            & (st.fund_segments_usd <= EXHAUSTED_FRAC * size)
        )
        if not due.any():
            return
        amount = np.where(due, size, 0.0)
        st.fund_segments_usd += amount
        st.net_deposits_usd += amount.sum(axis=1)
        self.segment_injections_left -= due

    @property
    def segment_injections(self) -> FloatArray:
        """``(E, G)`` top-ups each segment has had this episode (its allowance spent)."""
        if self.fund_mode != "segmented":
            return np.zeros((self.n_envs, self.n_pots))
        out: FloatArray = self.fund_injection_max - self.segment_injections_left
        return out

    @property
    def segment_injected_usd(self) -> FloatArray:
        """``(E, G)`` what the top-ups added to each segment this episode, USD."""
        out: FloatArray = self.segment_injections * self.segment_injection_usd
        return out

    def vault_equity_usd(self, mark: FloatArray) -> FloatArray:
        """``(E,)`` the vault's cash plus every market's inventory at ``mark`` ``(E, M)``."""
        vault = self.state.vault
        out: FloatArray = vault[:, V_CASH].copy()
        for j in range(self.n_markets):
            out += vault[:, inventory_column(j)] * mark[:, j]
        return out

    def normal_depth(self, m: int) -> FloatArray:
        """Market ``m``'s normal book depth per exchange, USD per 1%."""
        out: FloatArray = self.markets[m].scalars[MK_DEPTH_NORMAL]
        return out

    def _population(
        self, mark: FloatArray, rate: FloatArray, index: FloatArray, row: int
    ) -> tuple[FloatArray, FloatArray]:
        """Each exchange's population step across markets; events and fund income per market.

        ``row``: the tick's row of the venue events (:func:`market_event_arrays`): the
        exchange's withdrawal halt and each market's reduce-only window and leverage cap act
        on the traders as in one market.
        """
        st = self.state
        E, M = self.n_envs, self.n_markets
        cols = self.pop_columns
        arrival = np.zeros(E * M)
        exit_factor = np.zeros(E * M)
        shift = np.zeros(E * M)
        drawdown = 1.0 - index / self.peak_index
        pk.market_responses(
            self.vol_annual.ravel(),
            np.tile(self.base_vol, E),
            np.ascontiguousarray(drawdown.ravel()),
            np.ascontiguousarray(rate.ravel()),
            cols,
            arrival,
            exit_factor,
            shift,
        )
        arrival_em = arrival.reshape(E, M)
        exit_em = exit_factor.reshape(E, M)
        packed = self.risk.packed(E)
        demand = np.zeros(E)
        pk.demand_multipliers(packed, cols, demand)
        p_exit = -np.expm1(np.log1p(-cols[pk.C_P_EXIT]) * exit_em)
        lam = cols[pk.C_LAM_PER_SLOT_TICK] * self.n_accounts * demand[:, None] * arrival_em
        lam = lam * self.oi_shares[None, :]
        mp = self.markets_population
        unit_value = self.unit_price * (1.0 - self.haircut)
        events = np.zeros((E, N_MARKETS_EVENTS))
        income = np.zeros((E, M))
        room = np.full((E, M), np.inf)
        # Each market's cap: its own (market_oi_cap_frac) and the exchange's oi_cap_frac,
        # which caps every market at that multiple of its starting open interest (0: off).
        exchange_cap = packed[:, P_OI_CAP_FRAC]
        caps = np.minimum(
            _rows(self.market_oi_cap_frac, E),
            np.where(exchange_cap > 0.0, exchange_cap, np.inf)[:, None],
        )
        if np.isfinite(caps).any():  # what each capped market's open interest may still grow by
            allowed = np.where(np.isfinite(caps), caps, 0.0) * self.initial_open_interest_usd
            now = open_interest_usd(st, mark)
            room = np.ascontiguousarray(np.where(np.isfinite(caps), allowed - now, np.inf))
        scratch = [np.zeros(M) for _ in range(3)]
        halt = int(halt_mask(self.venue_flags[row]))
        cap = np.ascontiguousarray(self.market_leverage_cap[row])
        reduce_only = np.ascontiguousarray(self.market_reduce_only[row])
        for e in range(E):
            markets_population_exchange(
                e, self.rng.state, st.collateral_usd, st.size, st.entry_price,
                st.collateral_units, st.counterparty_size, st.counterparty_cash_usd,
                st.fee_revenue_usd, st.net_deposits_usd, packed, cols,
                np.ascontiguousarray(mark[e]), np.ascontiguousarray(p_exit[e]),
                np.ascontiguousarray(lam[e]), self.mix_cdf, _row(self.market_mmr_mult, e), room[e],
                mp.second_leg_frac, mp.asset_share, mp.asset_margin_frac,
                np.ascontiguousarray(unit_value[e]),
                np.ascontiguousarray(self.unit_price[e]), self.first_slot, halt, cap, reduce_only,
                scratch[0], scratch[1], scratch[2], income[e], events[e],
            )  # fmt: skip
        if self.fund_mode == "segmented":
            for g in range(self.n_pots):
                st.fund_segments_usd[:, g] += income[:, self.fund_groups == g].sum(axis=1)
        else:
            total = income.sum(axis=1)
            if (total > 0.0).any():
                receive(st.fund, total)
        return events, income

    def run(self) -> MarketsResult:
        """Run every exchange to the end of its scenario from where it stands."""
        rows: list[dict[str, Any]] = []
        while not self.done:
            rows.append(self.step())
        if not rows:
            raise ValueError("the episode has already run to its end: call reset() first")

        def col(name: str) -> FloatArray:
            return np.stack([r[name] for r in rows])

        return MarketsResult(
            scenario=self.scenario,
            market_names=self.market_names,
            fund_mode=self.fund_mode,
            fund_groups=self.fund_groups.copy(),
            events=np.stack([r["events"].data for r in rows]),
            index_price=col("index"),
            mark_price=col("mark"),
            oracle_price=col("oracle"),
            depth_usd_per_pct=col("depth"),
            open_interest_usd=col("open_interest_usd"),
            market_fund_paid_usd=col("market_fund_paid_usd"),
            market_adl_volume_usd=col("market_adl_volume_usd"),
            market_adl_haircut_usd=col("market_adl_haircut_usd"),
            market_socialized_usd=col("market_socialized_usd"),
            market_unrecovered_usd=col("market_unrecovered_usd"),
            market_flow_usd=col("market_flow_usd"),
            fund_usd=col("fund_usd"),
            fund_transfer_usd=col("fund_transfer_usd"),
            collateral_seized_usd=col("collateral_seized_usd"),
            collateral_depeg_loss_usd=col("collateral_depeg_loss_usd"),
            collateral_price=col("collateral_price"),
            arrivals=col("arrivals"),
            exits=col("exits"),
            trading_fees_usd=col("trading_fees_usd"),
            vault_equity_usd=col("vault_equity_usd"),
            vault_capital_usd=self.vault_capital_usd.copy(),
            initial_fund_usd=self.initial_fund_usd.copy(),
            initial_open_interest_usd=self.initial_open_interest_usd.copy(),
            max_ledger_error_usd=self.max_ledger_error_usd,
            fund_injections=self.state.fund.injections.copy()
            if self.fund_mode == "shared"
            else self.segment_injections.sum(axis=1),
            fund_injected_usd=self.state.fund.injected_usd.copy()
            if self.fund_mode == "shared"
            else self.segment_injected_usd.sum(axis=1),
        )


#: Per-market event arrays of the several-markets step and the exchange column each splits.
MARKET_EVENTS: dict[str, str] = {
    "market_fund_paid_usd": "shortfall_usd",
    "market_adl_volume_usd": "adl_volume_usd",
    "market_adl_haircut_usd": "adl_haircut_usd",
    "market_socialized_usd": "socialized_loss_usd",
    "market_unrecovered_usd": "unrecovered_usd",
}


def _per_market(events: StepEvents, name: str, n_markets: int) -> FloatArray:
    """``(E, M)`` per-market event ``name`` (zeros on a tick that liquidated nobody).

    One market's step sets none of them: its exchange column is then the market's.
    """
    value = getattr(events, name)
    if value is not None:
        return np.asarray(value, dtype=np.float64)
    column = getattr(events, MARKET_EVENTS[name])
    if n_markets == 1:
        return np.asarray(column, dtype=np.float64)[:, None].copy()
    return np.zeros((column.size, n_markets))


def _or_zeros(value: FloatArray | None, n: int) -> FloatArray:
    return np.zeros(n) if value is None else np.asarray(value, dtype=np.float64)


def engine_risk(risk: RiskParams) -> RiskParams:
    """The risk parameters the margin engine runs across markets for ``risk``.

    ``partial`` runs as it is. ``binance`` runs as the partial waterfall closing every leg
    whole in one step (``max_liquidation_fraction`` 1): Binance's engine sends the whole
    position as one IOC order to the book, and its fund takes over a deficient account at
    its bankruptcy price and closes it into the same book, keeping the surplus or paying the
    loss, which is what the partial waterfall books for a whole close (a fee capped by the
    surplus to the fund, a fill past bankruptcy a shortfall the fund pays). The one-market
    ``binance`` mode does the same in one sub-step; across markets each leg fills on its own
    market's book.

    ``hyperliquid``, ``bitmex`` and ``dydx_v4`` run as they are, with their sub-steps,
    takeovers, (Hyperliquid's) vault and (dYdX's) one order per subaccount a block across
    markets (:mod:`fundgym.envs.core.venue_cross`).
    """
    if risk.liquidation_mode == "binance":
        return dataclasses.replace(risk, liquidation_mode="partial", max_liquidation_fraction=1.0)
    return risk


def _fund_basket(
    value: str | int | Mapping[Any, float], scenario: Scenario
) -> tuple[tuple[int, ...], FloatArray | None]:
    """``fund_asset``'s markets and weights: one market (weights ``None``) or a basket.

    A mapping names each market once (by name or index), with weights > 0 summing to 1; a
    mapping of one market is that market.
    """
    if not isinstance(value, Mapping):
        return (_market_index("fund_asset", value, scenario),), None
    if not value:
        raise ValueError("fund_asset: a basket needs at least one market, got {}")
    markets: list[int] = []
    weights: list[float] = []
    for key, w in value.items():
        k = _market_index("fund_asset", key, scenario)
        if k in markets:
            raise ValueError(f"fund_asset: market {key!r} is named twice in {dict(value)!r}")
        ok = isinstance(w, int | float | np.integer | np.floating) and not isinstance(w, bool)
        if not (ok and math.isfinite(float(w)) and float(w) > 0.0):
            raise ValueError(f"fund_asset: the weight of {key!r} must be a number > 0, got {w!r}")
        markets.append(k)
        weights.append(float(w))
    total = math.fsum(weights)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"fund_asset: the basket's weights must sum to 1, got {total!r}")
    if len(markets) == 1:
        return (markets[0],), None
    return tuple(markets), np.asarray(weights, dtype=np.float64)


def _market_index(name: str, value: str | int, scenario: Scenario) -> int:
    """A market given by name or index, checked against the scenario's markets."""
    names = scenario.market_names
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{name} must be one of the markets {list(names)}, got {value!r}")
        return names.index(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not (0 <= int(value) < len(names))
    ):
        raise ValueError(
            f"{name} must be a market name {list(names)} or index 0 .. {len(names) - 1}, "
            f"got {value!r}"
        )
    return int(value)


def _weights(weights: Sequence[float] | FloatArray) -> FloatArray:
    """Bucket weights, ``(4,)`` or ``(E, 4)``, each row >= 0 and summing to 1, checked."""
    w = np.asarray(weights, dtype=np.float64)
    ok = w.ndim in (1, 2) and w.shape[-1] == 4 and bool(np.isfinite(w).all())
    if not (ok and (w >= 0.0).all() and bool((np.abs(w.sum(axis=-1) - 1.0) <= 1e-8).all())):
        raise ValueError(
            "fund weights must be four shares (stable, yield, volatile, hedge), each >= 0, "
            f"summing to 1, got {np.asarray(weights).tolist()!r}"
        )
    return w


def _groups(mode: str, groups: Sequence[int] | None, n_mkt: int) -> np.ndarray[Any, Any]:
    if mode == "shared":
        if groups is not None:
            raise ValueError("fund_groups applies to fund_mode 'segmented' only")
        return np.zeros(n_mkt, dtype=np.int64)
    if groups is None:
        return np.arange(n_mkt, dtype=np.int64)
    g = np.asarray(groups)
    if g.shape != (n_mkt,) or g.dtype.kind not in "iu" or (g < 0).any():
        raise ValueError(
            f"fund_groups must list one segment index >= 0 per market ({n_mkt}), got {groups!r}"
        )
    used = np.unique(g)
    if not np.array_equal(used, np.arange(used.size)):
        raise ValueError(f"fund_groups must use every segment 0 .. G - 1, got {groups!r}")
    return g.astype(np.int64)


def _row(values: FloatArray, e: int) -> FloatArray:
    """Exchange ``e``'s row of a lever held as ``(n,)`` (every exchange's) or ``(E, n)``."""
    out: FloatArray = values if values.ndim == 1 else values[e]
    return out


def _rows(values: FloatArray, n_envs: int) -> FloatArray:
    """A lever held as ``(n,)`` or ``(E, n)`` as ``(E, n)`` (a read-only view)."""
    return np.broadcast_to(values, (n_envs, values.shape[-1]))


def _transfer_caps(cap: ArrayLike | bool, n_envs: int) -> float | FloatArray:
    """``segment_transfer_cap_usd`` as a float, or ``(n_envs,)`` floats, shape checked."""
    if isinstance(cap, bool):  # refused by _check_transfer_cap, naming the value
        return cap
    out = np.asarray(cap, dtype=np.float64)
    if out.ndim == 0:
        return float(out)
    if out.shape != (n_envs,):
        raise ValueError(
            f"segment_transfer_cap_usd must be a number or (n_envs,) = ({n_envs},) of them, "
            f"got shape {out.shape}"
        )
    return out


def _check_transfer_cap(
    cap: float | FloatArray, fund_mode: str, liquidation_mode: str | None
) -> None:
    """A segment transfer cap: >= 0 USD a tick, segmented only, not under ``dydx_v4``.

    ``cap`` is a number or one per exchange; each must hold.
    """
    c = np.asarray(cap, dtype=np.float64)
    if isinstance(cap, bool) or not (c >= 0.0).all():
        raise ValueError(
            "segment_transfer_cap_usd must be >= 0 USD per tick (0: forbidden, inf: "
            f"pooled), got {cap!r}"
        )
    if (c > 0.0).any() and fund_mode != "segmented":
        raise ValueError(
            "segment_transfer_cap_usd caps transfers between segments: fund_mode "
            f"'segmented' only, got fund_mode {fund_mode!r}"
        )
    if (c > 0.0).any() and liquidation_mode == "dydx_v4":
        raise ValueError(
            f"segment_transfer_cap_usd = {cap!r} with liquidation_mode "
            "'dydx_v4': dYdX pays a fill whole from its market's fund or rejects it, and "
            "lending between segments is not built for it; allowed: 0"
        )


def _per_exchange_shape(shape: tuple[int, ...], n: int, n_envs: int) -> bool:
    """Whether ``shape`` is one value per item (``(n,)``) or per exchange and item."""
    return shape in ((n,), (n_envs, n))


def _fund_cap_fracs(fracs: ArrayLike | None, scenario: Scenario, n_envs: int = 1) -> FloatArray:
    """``market_fund_cap_frac``: one share >= 0 per market (``inf``: none; ``None``: none).

    ``(M,)`` for every exchange or ``(n_envs, M)``.
    """
    if fracs is None:
        return np.full(scenario.n_markets, np.inf)
    lever = MARKET_LEVERS["market_fund_cap_frac"]
    out = np.asarray(fracs, dtype=np.float64)
    ok = _per_exchange_shape(out.shape, scenario.n_markets, n_envs)
    if not (ok and not np.isnan(out).any() and (out >= 0.0).all()):
        raise ValueError(
            f"market_fund_cap_frac must list one {lever.unit} >= 0 (inf: none) per market "
            f"({scenario.n_markets}: {', '.join(scenario.market_names)}), or one such row per "
            f"exchange ({n_envs}), got {fracs!r}"
        )
    return out


def _caps(caps: Sequence[float] | None, n_mkt: int) -> FloatArray:
    if caps is None:
        return np.full(n_mkt, np.inf)
    c = np.asarray(caps, dtype=np.float64)
    if c.shape != (n_mkt,) or np.isnan(c).any() or (c < 0).any():
        raise ValueError(f"fund_cap_usd must list one cap >= 0 per market ({n_mkt}), got {caps!r}")
    return c


def _haircuts(scenario: Scenario, haircuts: ArrayLike | None, n_envs: int = 1) -> FloatArray:
    """The collateral haircuts: ``(K,)`` for every exchange or ``(n_envs, K)``."""
    if haircuts is None:
        return np.array([c.haircut_frac for c in scenario.collateral], dtype=np.float64)
    h = np.asarray(haircuts, dtype=np.float64)
    k = len(scenario.collateral)
    if not _per_exchange_shape(h.shape, k, n_envs) or not ((h >= 0.0) & (h < 1.0)).all():
        raise ValueError(
            f"collateral_haircut_frac must list one haircut in [0, 1) per collateral asset "
            f"({k}: {list(scenario.collateral_names)}), or one such row per exchange "
            f"({n_envs}), got {haircuts!r}"
        )
    return h


def _market_lever(
    name: str, values: ArrayLike | None, scenario: Scenario, default: float, n_envs: int
) -> FloatArray:
    """Per-market lever ``name`` (``MARKET_LEVERS``): one value per market, checked.

    ``(M,)`` for every exchange or ``(n_envs, M)`` one row each; ``None`` gives ``default``
    in every market.
    """
    n = scenario.n_markets
    if values is None:
        return np.full(n, default)
    k = np.asarray(values, dtype=np.float64)
    bounds = MARKET_LEVERS[name].bounds
    if not _per_exchange_shape(k.shape, n, n_envs) or not bounds.contains(k).all():
        raise ValueError(
            f"{name} must list one multiple in {bounds} per market ({n}: "
            f"{', '.join(scenario.market_names)}), or one such row per exchange ({n_envs}), "
            f"got {values!r}"
        )
    return k


def _mmr_mults(mults: ArrayLike | None, scenario: Scenario, n_envs: int = 1) -> FloatArray:
    return _market_lever("market_mmr_mult", mults, scenario, 1.0, n_envs)


def _oi_caps(caps: ArrayLike | None, scenario: Scenario, n_envs: int = 1) -> FloatArray:
    return _market_lever("market_oi_cap_frac", caps, scenario, np.inf, n_envs)


def _market_scenario(scenario: Scenario, m: int) -> Scenario:
    """The scenario as market ``m``'s :class:`Market` reads it: its own venue, oracle, funding."""
    if m == 0 or not scenario.markets:
        return scenario
    spec = scenario.markets[m]
    return dataclasses.replace(
        scenario,
        venue=spec.venue or scenario.venue,
        oracle=spec.oracle or scenario.oracle,
        funding=spec.funding or scenario.funding,
    )


def _base_vols(scenario: Scenario) -> FloatArray:
    """Each market's usual annual volatility: ``sqrt((beta x factor)^2 + own^2)``."""
    v0 = scenario.price.vol_annual
    out = [v0]
    for spec in scenario.markets[1:]:
        out.append(math.hypot(spec.beta * v0, spec.idio_vol_annual))
    return np.asarray(out, dtype=np.float64)


__all__ = [
    "COLLATERAL_SOURCES",
    "FUND_MODES",
    "MarketsPopulation",
    "MarketsResult",
    "MarketsSimulator",
]
