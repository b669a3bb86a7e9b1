"""``fundgym/MarketsInsuranceFund-v0``: a risk desk's levers over an exchange listing many markets.

One exchange per environment, on :class:`~fundgym.envs.markets_simulator.MarketsSimulator`: the
exchange-wide levers plus one margin multiple per market, observed through an exchange block, a
cross-market stress summary and one block per market. The spaces are flat ``Box``es with the
layouts :meth:`MarketsInsuranceFundEnv.action_names` and
:meth:`MarketsInsuranceFundEnv.observation_names` give, so any Gymnasium or SB3 agent takes them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fundgym.envs.controls import allocation_weights
from fundgym.envs.core.params import AdlPolicy, LiquidationMode, RiskParams
from fundgym.envs.core.step import margin_state
from fundgym.envs.fund.portfolio import BUCKETS
from fundgym.envs.levers import COLLATERAL_LEVERS, LEVERS, MARKET_LEVERS, SEGMENT_LEVERS, Lever
from fundgym.envs.market.price import MINUTES_PER_YEAR
from fundgym.envs.markets_simulator import MarketsPopulation, MarketsSimulator
from fundgym.envs.rewards import DecisionTotals, RewardWeights, combine, reward_components
from fundgym.envs.scenarios import Scenario, load_scenario
from fundgym.envs.state import open_interest_usd

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: The exchange-wide levers an action sets, in action order (the lever registry's).
EXCHANGE_LEVERS: tuple[str, ...] = (
    "liquidation_fee_rate",
    "liquidation_fee_fund_share",
    "trading_fee_fund_share",
)
#: The shared fund's allocation logits (weights = softmax(3 x logits)), after the exchange
#: levers when the fund is shared; a segmented fund's segments are cash and have none.
ALLOCATION_LEVERS: tuple[str, ...] = tuple(f"alloc_{bucket}" for bucket in BUCKETS)
#: The per-market levers, one action coordinate per market each, after the exchange's.
PER_MARKET_LEVERS: tuple[str, ...] = tuple(MARKET_LEVERS)
#: The exchange block of the observation (then one :data:`MARKET_OBS` block per market).
EXCHANGE_OBS: tuple[str, ...] = (
    "fund_coverage",
    "worst_pot_left",
    "open_interest_rel",
    "stress_max_drawdown",
    "stress_near_liquidation",
    "collateral_discount",
    "user_loss_per_mille_oi",
    "episode_progress",
    *(f"param_{name}" for name in EXCHANGE_LEVERS),
    *(f"fund_weight_{bucket}" for bucket in BUCKETS),
)
#: One market's block.
MARKET_OBS: tuple[str, ...] = (
    "vol_ratio_log",
    "depth_rel",
    "oi_share",
    "long_short_skew",
    "near_liquidation",
    "drawdown",
    *(f"param_{name}" for name in PER_MARKET_LEVERS),
)
OBS_CLIP = 10.0
NEAR_LIQUIDATION_BUFFER = 0.25
"""An account is near liquidation when its equity is below ``1.25 x`` its requirement (the
one-market population's ``near_liquidation_buffer_frac``)."""


def _positive_up_to(name: str, value: float, high: float, meaning: str) -> float:
    """``value`` as a float if it is a number in ``(0, high]``, else a ValueError naming it."""
    ok = not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0.0 < value <= high):
        raise ValueError(f"{name} must lie in (0, {high:g}] ({meaning}), got {value!r}")
    return float(value)


class MarketsInsuranceFundEnv(gym.Env[np.ndarray[Any, Any], np.ndarray[Any, Any]]):
    """An exchange listing several markets: its liquidation fees, fund shares and market margins.

    ## Description

    A perpetual-futures exchange lists the scenario's markets (BTC-, ETH-, SOL-like majors and
    thin alts; ``docs/markets.md``). Cross-margined accounts hold positions in several markets
    against one balance, some in collateral assets that can depeg; one insurance fund backs
    every market, or one per market (``fund_mode``). Each decision the desk sets the exchange's
    liquidation fee and the shares of fees paid into the fund, the shared fund's allocation
    (stable, yield, the listed asset ``fund_asset`` itself, puts on it), each market's margin
    as a multiple of the exchange's and each market's open-interest cap; the exchange then runs
    ``decision_minutes`` of the scenario.

    ## Action Space

    A ``Box(-1, 1, (K + 3 M + A,), float32)``: the levers' positions, mapped onto their action
    ranges by the lever registry (:data:`fundgym.envs.levers.LEVERS`, ``MARKET_LEVERS``,
    ``COLLATERAL_LEVERS`` and ``SEGMENT_LEVERS``), ``A`` the scenario's collateral assets.
    ``K = 7`` with a shared fund (three exchange levers and four allocation logits), ``K = 4``
    with a segmented one (its segments are cash; the cap on what they lend one another), 3
    under ``dydx_v4`` (whose segments never lend).

    | Num | Lever | Range | Scale |
    |-----|-------|-------|-------|
    | 0 | liquidation_fee_rate | 0.1% .. 3% of notional | log |
    | 1 | liquidation_fee_fund_share | 0 .. 1 | lin |
    | 2 | trading_fee_fund_share | 0 .. 1 | lin |
    | 3-6 (shared) | alloc_stable/yield/volatile/hedge | logits: softmax(3 x logits) | lin |
    | 3 (segmented) | segment_transfer_cap_frac | 0 .. 5% of the segments' start a tick | lin |
    | K .. K+M-1 | market_mmr_mult of market 0 .. M-1 | 0.5 .. 4 x the exchange's margin | log |
    | K+M .. K+2M-1 | market_oi_cap_frac of market 0 .. M-1 | 0.25 .. 4 x its starting OI | log |
    | K+2M .. K+3M-1 | market_fund_cap_frac of market 0 .. M-1 | 0 .. 1 x the fund's start | lin |
    | K+3M .. K+3M+A-1 | collateral_haircut_frac of asset 0 .. A-1 | 0 .. 90% of its price | lin |

    The fund is rebalanced toward the allocation when the weights move by more than
    ``rebalance_threshold`` (L1, 0.02), at the fund asset's index: its ``volatile`` bucket is
    units of that market's asset (wrong-way risk: it falls in the crash the fund pays for), its
    ``hedge`` bucket puts on it; rebalancing pays fees, spreads and slippage.

    An OI cap refuses new positions that would lift the market's open interest above it; the
    default, 4x (position +1), never binds in a day's crash, and position 0 is a cap at 1x.

    A fund cap is the most the fund pays toward the market's shortfalls over the episode
    (``fund_cap_period``, default ``episode``, Drift's cumulative cap; ``tick``: anew every
    tick), as a share of the exchange's starting insurance (every pot): position -1 (0) and the
    fund never pays the market, its shortfalls go to ADL and socialisation (Drift's $0 tier);
    the default, +1 (the whole starting fund), binds only if fee income lets one market draw
    more than that. Capping a thin alt keeps its crash from draining a shared fund that BTC
    and ETH also rely on; segmented, what other segments lend a market counts against it.

    A haircut is the share of a collateral asset's price the venue does not count toward
    margin, in force from the next tick for every account holding the asset (the default
    position is the scenario's own haircut): a deeper one leaves less margin to a depeg, and
    liquidates accounts whose margin rests on the asset at once.

    ## Observation Space

    A ``Box(-10, 10, (15 + 9 M + A,), float32)``: the exchange block, one block per market,
    then each collateral asset's haircut in force.

    | Num | Observation | Scaling |
    |-----|-------------|---------|
    | 0 | fund coverage: all pots / starting open interest | x 10 |
    | 1 | the emptiest pot's value / its start (shared: the fund) | fraction |
    | 2 | open interest / its start | ratio |
    | 3 | stress: the largest drawdown of any market from its recent peak | fraction |
    | 4 | stress: share of open interest held by accounts near liquidation | fraction |
    | 5 | collateral discount: the largest ``1 - price / redemption`` of any asset | fraction |
    | 6 | user loss (socialised, unrecovered, deleveraged), last decision | per mille of OI |
    | 7 | episode progress | fraction |
    | 8-10 | the exchange levers in force | action units |
    | 11-14 | the fund's weights: stable, yield, volatile, hedge (segmented: 1, 0, 0, 0) | share |
    | 15 + 9m | market m: log(its one-day volatility / its usual volatility) | log ratio |
    | 16 + 9m | market m: book depth / normal | fraction |
    | 17 + 9m | market m: its share of open interest | fraction |
    | 18 + 9m | market m: long/short skew | (L - S) / (L + S) |
    | 19 + 9m | market m: share of its OI held by accounts near liquidation | fraction |
    | 20 + 9m | market m: drawdown from its recent peak | fraction |
    | 21 + 9m | market m: its margin multiple in force | action units |
    | 22 + 9m | market m: its OI cap in force | action units |
    | 23 + 9m | market m: its fund cap in force | action units |
    | 15 + 9M + a | collateral asset a: its haircut in force | action units |
    | 15 + 9M + A | segmented: the transfer cap in force (last) | action units |

    ## Rewards

    :mod:`fundgym.envs.rewards`'s, per decision, in basis points of the starting open interest:
    revenue (trading fees, the fund's liquidation-fee income and outside gains) minus the
    fund's cost of capital, the solvency loss (socialised + unrecovered + ``adl_weight`` x
    deleveraged notional), the cost of locked maintenance margin and lever churn.
    ``info`` adds what the fund paid toward each market and the notional deleveraged in each
    (``market_fund_paid_usd``, ``market_adl_volume_usd``, ``(M,)``): the contagion. The demand
    term is 0 here: the multi-market population does not yet price demand per market.
    ``info["cost"]`` is the solvency term alone.

    The fee's share not paid into the fund buys outside liquidators capacity in each market
    at its oracle (``liquidator_capacity_mult``, default the lever's 1, as in the one-market
    environment: :mod:`fundgym.envs.core.liquidators`), under every liquidation mode.

    ## Starting State

    :class:`~fundgym.envs.markets_simulator.MarketsSimulator`'s book at the scenario's initial
    prices and the fund at ``fund_to_oi_frac`` of open interest; levers at their defaults.

    ## Episode End

    1. Termination, as in one market: the episode's socialised and unrecovered losses plus the
       losses ADL imposed on counterparties (closed at bankruptcy worse than the mark) exceed
       ``insolvency_frac`` (0.05) of the starting open interest over every market (``info
       ["uncovered_usd"]``): the exchange is insolvent, the same dollars under every ADL rule.
    2. Truncation: the scenario's horizon.

    ## Arguments

    ``scenario`` (name, path or :class:`Scenario`, default ``alt_contagion``), ``n_accounts``,
    ``decision_minutes`` (10), ``fund_mode`` (``shared`` or ``segmented``), ``fund_groups``,
    ``collateral_price`` (``book``, ``index``, ``redemption``), ``fund_to_oi_frac``,
    ``fund_asset`` (the market whose asset and puts the fund can hold, default market 0, or a
    basket of markets and weights, ``{"BTC": 0.6, "ETH": 0.4}``: units of each, puts on each),
    ``rebalance_threshold`` (0.02), ``markets_population``, ``reward`` (:class:`RewardWeights`),
    the engine the levers run under: ``liquidation_mode`` (``partial``, the default, or a venue's:
    ``binance``, ``hyperliquid``, ``bitmex``, ``dydx_v4``; :mod:`fundgym.envs.core.venue_cross`),
    ``adl_policy`` (``bitmex``), ``vault_to_oi_frac`` (0: no backstop vault; a vault needs a
    venue mode that hands accounts to it), ``vault_adl_loss_frac`` (the vault's loss limit,
    ``None``: the mode's own, :mod:`fundgym.envs.core.vault`), ``liquidator_capacity_mult``
    (outside liquidators' capacity, ``None``: the lever's default, 1), ``fund_cap_period``
    (``episode``, the default, or ``tick``: what the per-market fund caps hold over) and
    ``insolvency_frac`` (0.05: the uncovered loss, as a share of the starting open interest,
    that ends the episode) and ``max_step`` (the largest move of a lever's position in one
    decision, action units in (0, 2]; 2, the default, lets every move land at once, as before
    it existed; the one-market env's is 0.2 by default. A limit damps a policy's exploration
    noise, but on ``alt_contagion`` 0.2 made the levers lag the crash, so
    ``configs/train/ppo_markets.yaml`` keeps 2: ``docs/markets.md``, "Training across
    markets").

    ## Version History

    * v0, issue 17: the shared fund's allocation in the action (four logits after the exchange
      levers) and its weights in the observation (after the exchange levers in force); the
      engine (``liquidation_mode``, ``adl_policy``, ``vault_to_oi_frac``; the default
      ``partial`` engine as before); outside liquidators across markets
      (``liquidator_capacity_mult``, default 1: before, 0);
      a fund cap per market in the action (``market_fund_cap_frac``, after the OI caps) and
      in each market's observation block (last), ``fund_cap_period``; each collateral
      asset's haircut in the action and the observation (last, after the markets); a
      segmented fund's transfer cap (``segment_transfer_cap_frac``, after the exchange levers;
      its value last in the observation) and ``info["fund_transfer_usd"]``; the
      insolvency end (``insolvency_frac``, ``info["uncovered_usd"]``; before, truncation
      only); ``max_step`` (default 2: as before).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(
        self,
        scenario: str | Scenario = "alt_contagion",
        *,
        n_accounts: int = 1_000,
        decision_minutes: float = 10.0,
        fund_mode: str = "shared",
        fund_groups: Sequence[int] | None = None,
        collateral_price: str = "book",
        fund_to_oi_frac: float = 0.02,
        fund_asset: str | int | Mapping[Any, float] = 0,
        rebalance_threshold: float = 0.02,
        markets_population: MarketsPopulation | None = None,
        reward: RewardWeights | None = None,
        liquidation_mode: str = "partial",
        adl_policy: str = "bitmex",
        vault_to_oi_frac: float = 0.0,
        vault_adl_loss_frac: float | None = None,
        liquidator_capacity_mult: float | None = None,
        fund_cap_period: str = "episode",
        insolvency_frac: float = 0.05,
        max_step: float = 2.0,
    ) -> None:
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.insolvency_frac = _positive_up_to(
            "insolvency_frac",
            insolvency_frac,
            10.0,
            "uncovered loss / starting open interest that ends the episode",
        )
        self.max_step = _positive_up_to(
            "max_step",
            max_step,
            2.0,
            "the largest move of a lever's position in one decision, action units; 2: none",
        )
        # The engine the levers run under, at the levers' defaults: RiskParams checks the names
        # (every liquidation mode runs across markets) and the capacity's range, the
        # simulator the vault.
        capacity = (
            LEVERS["liquidator_capacity_mult"].default
            if liquidator_capacity_mult is None
            else liquidator_capacity_mult
        )
        self._engine = RiskParams(
            liquidation_mode=cast(LiquidationMode, liquidation_mode),
            adl_policy=cast(AdlPolicy, adl_policy),
            liquidator_capacity_mult=capacity,
        )
        if not (np.isfinite(decision_minutes) and decision_minutes >= sc.tick_minutes):
            raise ValueError(
                f"decision_minutes must be >= the scenario's tick ({sc.tick_minutes:g} min), "
                f"got {decision_minutes!r}"
            )
        self.scenario = sc
        self.ticks_per_decision = max(1, round(decision_minutes / sc.tick_minutes))
        self.decision_minutes = self.ticks_per_decision * sc.tick_minutes
        if not (np.isfinite(rebalance_threshold) and 0.0 <= rebalance_threshold <= 2.0):
            raise ValueError(f"rebalance_threshold must lie in [0, 2], got {rebalance_threshold!r}")
        self.rebalance_threshold = float(rebalance_threshold)
        self.weights = reward or RewardWeights()
        self.n_markets = sc.n_markets
        self.sim = MarketsSimulator(
            sc,
            n_accounts=n_accounts,
            fund_mode=fund_mode,
            fund_groups=fund_groups,
            collateral_price=collateral_price,
            fund_to_oi_frac=fund_to_oi_frac,
            fund_asset=fund_asset,
            markets_population=markets_population,
            risk=self._engine,  # each decision puts the levers in force
            vault_to_oi_frac=vault_to_oi_frac,
            vault_adl_loss_frac=vault_adl_loss_frac,
            fund_cap_period=fund_cap_period,
        )
        # A shared fund's allocation; a segmented fund's transfer cap between its segments
        # (not under dydx_v4, which pays a fill whole from its market's fund or rejects it).
        lends = not self._shared and self._engine.liquidation_mode != "dydx_v4"
        self.segment_levers: tuple[str, ...] = tuple(SEGMENT_LEVERS) if lends else ()
        self.exchange_levers = (
            EXCHANGE_LEVERS + (ALLOCATION_LEVERS if self._shared else ()) + self.segment_levers
        )
        self.n_assets = self.sim.n_assets  # collateral assets: one haircut each
        haircut = COLLATERAL_LEVERS["collateral_haircut_frac"]
        self.levers: tuple[Lever, ...] = (
            *(LEVERS.get(name) or SEGMENT_LEVERS[name] for name in self.exchange_levers),
            *(MARKET_LEVERS[name] for name in PER_MARKET_LEVERS for _ in range(self.n_markets)),
            *(haircut for _ in range(self.n_assets)),
        )
        n_act = len(self.levers)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        n_obs = (
            len(EXCHANGE_OBS)
            + len(MARKET_OBS) * self.n_markets
            + self.n_assets
            + len(self.segment_levers)
        )
        self.observation_space = spaces.Box(-OBS_CLIP, OBS_CLIP, (n_obs,), np.float32)
        # The levers' defaults; each haircut's is the scenario's for its asset (or the one the
        # simulator was given), so the default action runs the scenario as written.
        defaults = [lever.default for lever in self.levers[: n_act - self.n_assets]]
        self._default_positions = np.array(
            [float(lever.to_position(v)) for lever, v in zip(self.levers, defaults, strict=False)]
            + [float(haircut.to_position(h)) for h in self.sim.haircut]
        )
        self.positions = self._default_positions.copy()
        self.uncovered_usd = 0.0  # losses no fund covered this episode (the insolvency end)
        self.alloc_target = np.array([1.0, 0.0, 0.0, 0.0])
        self._last_loss_usd = 0.0

    def default_action(self) -> np.ndarray[Any, Any]:
        """The action holding every lever at its default: the scenario as written.

        The static baseline a trained multi-market policy is scored against
        (``fundgym markets --run``); each haircut's default is the scenario's for its asset.
        """
        return self._default_positions.copy()

    # ---- layouts ---------------------------------------------------------------------------

    def action_names(self) -> tuple[str, ...]:
        """Each action coordinate's lever, ``name`` or ``name[MARKET]``, in order."""
        per_market = tuple(
            f"{name}[{m}]" for name in PER_MARKET_LEVERS for m in self.scenario.market_names
        )
        per_asset = tuple(
            f"{name}[{a}]" for name in COLLATERAL_LEVERS for a in self.scenario.collateral_names
        )
        return (*self.exchange_levers, *per_market, *per_asset)

    def observation_names(self) -> tuple[str, ...]:
        """Each observation coordinate's name, ``name`` or ``name[MARKET]``, in order."""
        blocks = tuple(f"{name}[{m}]" for m in self.scenario.market_names for name in MARKET_OBS)
        assets = tuple(
            f"param_{name}[{a}]"
            for name in COLLATERAL_LEVERS
            for a in self.scenario.collateral_names
        )
        segments = tuple(f"param_{name}" for name in self.segment_levers)
        return (*EXCHANGE_OBS, *blocks, *assets, *segments)

    # ---- Gymnasium -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        """A fresh exchange: new paths and book (seeded by ``seed`` or the env's generator)."""
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        self._apply(self._default_positions.copy(), rebalance=False)  # the book's levers
        self.sim.reset(episode_seed)
        self.alloc_target = np.array([1.0, 0.0, 0.0, 0.0])  # a reset fund is all stable
        self._rebalance()
        self._last_loss_usd = 0.0
        self.uncovered_usd = 0.0
        self._oi0 = float(self.sim.initial_open_interest_usd.sum())
        self._pots0 = self.sim.initial_fund_usd[0].copy()
        return self._observation(None), {"seed": episode_seed}

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        """Set the levers, run one decision's ticks, and score them."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} ({len(self.exchange_levers)} "
                "exchange levers, then each per-market lever for every market, then a haircut "
                f"per collateral asset: env.action_names()), got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"action must be finite, got {a.tolist()}")
        new = np.clip(a, -1.0, 1.0)
        if self.max_step < 2.0:  # each lever moves toward its target by at most max_step
            new = self.positions + np.clip(new - self.positions, -self.max_step, self.max_step)
        change = float(np.abs(new - self.positions).sum())
        sim = self.sim
        ext_before = float(sim.state.fund.external_pnl_usd[0])  # the rebalance's costs count
        self._apply(new)
        sums: dict[str, float] = {}
        paid = np.zeros(self.n_markets)
        adl = np.zeros(self.n_markets)
        lent = np.zeros(sim.n_pots)
        row: dict[str, Any] | None = None
        for _ in range(self.ticks_per_decision):
            if sim.done:
                break
            row = sim.step()
            ev = row["events"]
            for name in (
                "trading_fees_usd",
                "fund_fee_income_usd",
                "socialized_loss_usd",
                "unrecovered_usd",
                "adl_volume_usd",
                "shortfall_usd",
                "liquidation_volume_usd",
            ):
                sums[name] = sums.get(name, 0.0) + float(getattr(ev, name)[0])
            # What ends the episode, as in one market: losses no fund covered, the same
            # dollars under every ADL rule (a counterparty's haircut past the mark counts).
            self.uncovered_usd += (
                float(ev.socialized_loss_usd[0])
                + float(ev.unrecovered_usd[0])
                + max(float(ev.adl_haircut_usd[0]), 0.0)
            )
            paid += row["market_fund_paid_usd"][0]
            adl += row["market_adl_volume_usd"][0]
            lent += row["fund_transfer_usd"][0]
        ext = float(sim.state.fund.external_pnl_usd[0]) - ext_before if self._shared else 0.0
        margins = self._margin(row)
        margin = float(margins[1].sum())
        pots = sim.fund_pots_usd()[0]
        one = np.ones(1)
        totals = DecisionTotals(
            trading_fees_usd=one * sums.get("trading_fees_usd", 0.0),
            fund_liquidation_fees_usd=one * sums.get("fund_fee_income_usd", 0.0),
            fund_external_pnl_usd=one * ext,
            fund_value_usd=one * float(pots.sum()),
            socialized_loss_usd=one * sums.get("socialized_loss_usd", 0.0),
            unrecovered_usd=one * sums.get("unrecovered_usd", 0.0),
            adl_volume_usd=one * sums.get("adl_volume_usd", 0.0),
            margin_locked_usd=one * margin,
            lost_fee_revenue_usd=np.zeros(1),
            change=one * change,
            years=self.decision_minutes / MINUTES_PER_YEAR,
        )
        components = reward_components(totals, np.array([self._oi0]), self.weights)
        reward = float(combine(components, self.weights)[0])
        loss = (
            sums.get("socialized_loss_usd", 0.0)
            + sums.get("unrecovered_usd", 0.0)
            + sums.get("adl_volume_usd", 0.0)
        )
        self._last_loss_usd = loss
        info = {
            "reward_components": {k: float(v[0]) for k, v in components.items()},
            "cost": float(components["solvency"][0]),
            "user_loss_usd": loss,
            "capital_locked_usd": float(pots.sum()) + margin,
            "fund_pots_usd": pots.copy(),
            "market_fund_paid_usd": paid,
            "market_adl_volume_usd": adl,
            "fund_transfer_usd": lent,
            "levers": self.lever_values(),
            "fund_weights": sim.fund_weights()[0],
            **sums,
        }
        terminated = self.uncovered_usd > self.insolvency_frac * self._oi0
        truncated = sim.done and not terminated
        info["uncovered_usd"] = self.uncovered_usd
        return self._observation(row, margins), reward, terminated, truncated, info

    # ---- internals -------------------------------------------------------------------------

    @property
    def _shared(self) -> bool:
        return self.sim.fund_mode == "shared"

    def lever_values(self) -> dict[str, Any]:
        """The levers in force in natural units (per-market ones as ``(M,)`` arrays)."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self.exchange_levers):
            out[name] = float(self.levers[i].to_value(self.positions[i]))
        k = len(self.exchange_levers)
        for j, name in enumerate(PER_MARKET_LEVERS):
            rows = self.positions[k + j * self.n_markets : k + (j + 1) * self.n_markets]
            out[name] = MARKET_LEVERS[name].to_value(rows)
        if self.n_assets:
            rows = self.positions[len(self.positions) - self.n_assets :]
            out["collateral_haircut_frac"] = COLLATERAL_LEVERS["collateral_haircut_frac"].to_value(
                rows
            )
        return out

    def _apply(self, positions: FloatArray, rebalance: bool = True) -> None:
        """Hold ``positions`` and put their levers in force (the allocation if ``rebalance``)."""
        self.positions = positions
        values = self.lever_values()
        risk = dataclasses.replace(self._engine, **{name: values[name] for name in EXCHANGE_LEVERS})
        self.sim.set_levers(
            risk,
            values["market_mmr_mult"],
            values["market_oi_cap_frac"],
            values["market_fund_cap_frac"],
            values.get("collateral_haircut_frac"),
            # the segments' transfer cap, a share of their starting total per tick
            None
            if not self.segment_levers
            else values["segment_transfer_cap_frac"] * float(self.sim.initial_fund_usd[0].sum()),
        )
        if rebalance:
            self._rebalance()

    def _rebalance(self) -> None:
        """Move the shared fund toward the allocation in force, when it moved enough to pay."""
        if not self._shared:
            return
        values = self.lever_values()
        target = allocation_weights(np.array([values[name] for name in ALLOCATION_LEVERS]))
        if float(np.abs(target - self.alloc_target).sum()) > self.rebalance_threshold:
            self.sim.set_allocation(target)
            self.alloc_target = target

    def _margin(self, row: dict[str, Any] | None) -> tuple[FloatArray, FloatArray]:
        """Each account's equity and requirement at the last oracle (the engine's view)."""
        sim = self.sim
        mark = sim.last_index if row is None else row["oracle"]
        kw: dict[str, Any] = {"market_mmr_mult": sim.market_mmr_mult}
        if sim.n_assets:
            kw.update(collateral_price=sim.unit_price, collateral_haircut=sim.haircut)
        return margin_state(sim.state, sim.risk, mark, **kw)

    def _observation(
        self,
        row: dict[str, Any] | None,
        margins: tuple[FloatArray, FloatArray] | None = None,
    ) -> np.ndarray[Any, Any]:
        sim = self.sim
        st = sim.state
        index = sim.last_index[0]
        mark = sim.last_index if row is None else row["mark"]
        oi = open_interest_usd(st, mark)[0]
        oi_total = max(float(oi.sum()), 1e-9)
        eq, req = self._margin(row) if margins is None else margins
        near = (req[0] > 0.0) & (eq[0] < (1.0 + NEAR_LIQUIDATION_BUFFER) * req[0])
        gross = np.abs(st.size[0]) * mark[0]  # (A, M)
        near_m = gross[near].sum(axis=0) / np.maximum(gross.sum(axis=0), 1e-9)
        near_total = float(gross[near].sum()) / max(float(gross.sum()), 1e-9)
        drawdown = 1.0 - index / sim.peak_index[0]
        pots = sim.fund_pots_usd()[0]
        left = pots / np.maximum(self._pots0, 1e-9)
        discount = 0.0
        t = min(sim.t, sim.redemption_path.shape[1] - 1)
        if sim.n_assets:
            ratio = sim.unit_price[0] / sim.redemption_path[0, t]
            discount = float(max(0.0, (1.0 - ratio).max()))
        exchange = [
            10.0 * float(pots.sum()) / self._oi0,
            float(left.min()),
            oi_total / self._oi0,
            float(drawdown.max()),
            near_total,
            discount,
            1e3 * self._last_loss_usd / self._oi0,
            sim.t / max(self.scenario.n_ticks, 1),
            *self.positions[: len(EXCHANGE_LEVERS)],
            *sim.fund_weights()[0],
        ]
        q = st.size[0]
        longs = np.where(q > 0.0, q, 0.0).sum(axis=0)
        shorts = np.where(q < 0.0, -q, 0.0).sum(axis=0)
        skew = (longs - shorts) / np.maximum(longs + shorts, 1e-12)
        normal = np.array([sim.normal_depth(m)[0] for m in range(self.n_markets)])
        depth_now = normal if row is None else row["depth"][0]
        k = len(self.exchange_levers)
        blocks = []
        for m in range(self.n_markets):
            blocks += [
                float(np.log(max(sim.vol_annual[0, m], 1e-12) / sim.base_vol[m])),
                float(depth_now[m] / normal[m]),
                float(oi[m] / oi_total),
                float(skew[m]),
                float(near_m[m]),
                float(drawdown[m]),
                *self.positions[k + m :: self.n_markets][: len(PER_MARKET_LEVERS)],
            ]
        assets = self.positions[len(self.positions) - self.n_assets :].tolist()
        segments = [self.positions[self.exchange_levers.index(n)] for n in self.segment_levers]
        obs = np.asarray([*exchange, *blocks, *assets, *segments], dtype=np.float64)
        obs = np.nan_to_num(obs, nan=0.0, posinf=OBS_CLIP, neginf=-OBS_CLIP)
        return np.clip(obs, -OBS_CLIP, OBS_CLIP).astype(np.float32)
