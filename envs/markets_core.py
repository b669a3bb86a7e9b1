"""The multi-market control problem for a batch of exchanges: levers in, reward and observation out.

``fundgym/MarketsInsuranceFund-v0`` (one exchange) and its vector form (``n`` exchanges) are
two faces of one decision: put a desk's levers in force, run ``decision_minutes`` of the
scenario, score the interval and observe the exchange. :class:`MarketsControlCore` holds that
decision once, over ``n_envs`` exchanges of one
:class:`~fundgym.envs.markets_simulator.MarketsSimulator`, whose Python tick costs about the
same for one exchange as for several (the per-exchange work is compiled), so a batch of
exchanges steps several times cheaper per exchange than the same exchanges one by one.

The exchanges share the simulator's clock: they start their episodes together and reach the
scenario's horizon together. Each exchange's own numbers (its paths, book, levers, reward and
observation) are those of a batch of one seeded alike, bit for bit: per-exchange values are
computed row by row with the same operations as alone (a lever's value from its own position,
the allocation's softmax from its own logits), so no vectorised loop can differ from the
one-exchange path in the last bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from fundgym.envs.controls import allocation_weights
from fundgym.envs.core.params import AdlPolicy, LiquidationMode, RiskParams
from fundgym.envs.core.step import margin_state
from fundgym.envs.fund.portfolio import BUCKETS, AllocationParams, world_put_crash_rate_per_year
from fundgym.envs.levers import COLLATERAL_LEVERS, LEVERS, MARKET_LEVERS, SEGMENT_LEVERS, Lever
from fundgym.envs.market.price import MINUTES_PER_YEAR
from fundgym.envs.market.sampler import MarketsSamplerSettings, sample_markets_scenario
from fundgym.envs.markets_simulator import MarketsPopulation, MarketsSimulator
from fundgym.envs.rewards import DecisionTotals, RewardWeights, combine, reward_components
from fundgym.envs.scenarios import Scenario
from fundgym.envs.state import open_interest_usd

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

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

#: The decision's event sums, per exchange (``info`` carries each).
SUMMED_EVENTS: tuple[str, ...] = (
    "trading_fees_usd",
    "fund_fee_income_usd",
    "socialized_loss_usd",
    "unrecovered_usd",
    "adl_volume_usd",
    "shortfall_usd",
    "liquidation_volume_usd",
)


def positive_up_to(name: str, value: float, high: float, meaning: str) -> float:
    """``value`` as a float if it is a number in ``(0, high]``, else a ValueError naming it."""
    ok = not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0.0 < value <= high):
        raise ValueError(f"{name} must lie in (0, {high:g}] ({meaning}), got {value!r}")
    return float(value)


class MarketsControlCore:
    """``n_envs`` exchanges listing one scenario's markets, their levers and their rewards.

    The arguments are :class:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv`'s (its
    docstring describes the levers, the observation, the reward and the episode's end), with
    ``n_envs`` the exchanges stepped together.

    Raises:
        ValueError: An argument out of its range, named.
    """

    def __init__(
        self,
        scenario: Scenario,
        n_envs: int = 1,
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
        dead_band: float = 0.0,
        sampler: MarketsSamplerSettings | None = None,
        put_crash_rate_per_year: float | None = None,
    ) -> None:
        sc = scenario
        if isinstance(n_envs, bool) or not (isinstance(n_envs, int) and n_envs >= 1):
            raise ValueError(f"n_envs must be a whole number >= 1, got {n_envs!r}")
        self.n_envs = n_envs
        self.insolvency_frac = positive_up_to(
            "insolvency_frac",
            insolvency_frac,
            10.0,
            "uncovered loss / starting open interest that ends the episode",
        )
        self.max_step = positive_up_to(
            "max_step",
            max_step,
            2.0,
            "the largest move of a lever's position in one decision, action units; 2: none",
        )
        ok = not isinstance(dead_band, bool) and math.isfinite(dead_band)
        if not (ok and 0.0 <= dead_band < 2.0):
            raise ValueError(
                "dead_band must lie in [0, 2) (a lever whose target lies within it of its "
                f"position holds, action units; 0: none), got {dead_band!r}"
            )
        self.dead_band = float(dead_band)
        # The engine the levers run under, at the levers' defaults: RiskParams checks the names
        # (every liquidation mode runs across markets) and the capacity's range, the
        # simulator the vault.
        capacity = (
            LEVERS["liquidator_capacity_mult"].default
            if liquidator_capacity_mult is None
            else liquidator_capacity_mult
        )
        self.engine = RiskParams(
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
        if sampler is not None and not isinstance(sampler, MarketsSamplerSettings):
            raise ValueError(
                f"sampler must be a MarketsSamplerSettings or None, got {type(sampler).__name__}"
            )
        if sampler is not None and sc.n_markets < 2:
            raise ValueError(
                f"sampler draws days around a scenario of several markets; {sc.name!r} lists one"
            )
        self.sampler = sampler
        if put_crash_rate_per_year is None:  # the world's own (the one-market env's rule)
            crash_prob = None if sampler is None else sampler.crash_prob
            put_crash_rate_per_year = world_put_crash_rate_per_year(crash_prob, sc.horizon_minutes)
        # AllocationParams checks it: the message names the field, the value and the range.
        terms = AllocationParams(put_crash_rate_per_year=put_crash_rate_per_year)
        self.ticks_per_decision = max(1, round(decision_minutes / sc.tick_minutes))
        self.decision_minutes = self.ticks_per_decision * sc.tick_minutes
        if not (np.isfinite(rebalance_threshold) and 0.0 <= rebalance_threshold <= 2.0):
            raise ValueError(f"rebalance_threshold must lie in [0, 2], got {rebalance_threshold!r}")
        self.rebalance_threshold = float(rebalance_threshold)
        self.weights = reward or RewardWeights()
        self.n_markets = sc.n_markets
        self.sim = MarketsSimulator(
            sc,
            n_envs=n_envs,
            n_accounts=n_accounts,
            fund_mode=fund_mode,
            fund_groups=fund_groups,
            collateral_price=collateral_price,
            fund_to_oi_frac=fund_to_oi_frac,
            fund_asset=fund_asset,
            markets_population=markets_population,
            risk=self.engine,  # each decision puts the levers in force
            vault_to_oi_frac=vault_to_oi_frac,
            vault_adl_loss_frac=vault_adl_loss_frac,
            fund_cap_period=fund_cap_period,
            allocation=terms,
        )
        # A shared fund's allocation; a segmented fund's transfer cap between its segments
        # (not under dydx_v4, which pays a fill whole from its market's fund or rejects it).
        lends = not self.shared and self.engine.liquidation_mode != "dydx_v4"
        self.segment_levers: tuple[str, ...] = tuple(SEGMENT_LEVERS) if lends else ()
        self.exchange_levers = (
            EXCHANGE_LEVERS + (ALLOCATION_LEVERS if self.shared else ()) + self.segment_levers
        )
        self.n_assets = self.sim.n_assets  # collateral assets: one haircut each
        haircut = COLLATERAL_LEVERS["collateral_haircut_frac"]
        self.levers: tuple[Lever, ...] = (
            *(LEVERS.get(name) or SEGMENT_LEVERS[name] for name in self.exchange_levers),
            *(MARKET_LEVERS[name] for name in PER_MARKET_LEVERS for _ in range(self.n_markets)),
            *(haircut for _ in range(self.n_assets)),
        )
        self.action_dim = len(self.levers)
        self.obs_dim = (
            len(EXCHANGE_OBS)
            + len(MARKET_OBS) * self.n_markets
            + self.n_assets
            + len(self.segment_levers)
        )
        # The levers' defaults; each haircut's is the scenario's for its asset (or the one the
        # simulator was given), so the default action runs the scenario as written.
        n_act = self.action_dim
        defaults = [lever.default for lever in self.levers[: n_act - self.n_assets]]
        self.default_positions = np.array(
            [float(lever.to_position(v)) for lever, v in zip(self.levers, defaults, strict=False)]
            + [float(haircut.to_position(h)) for h in self.sim.haircut]
        )
        self.positions = np.tile(self.default_positions, (n_envs, 1))
        # Losses no fund covered this episode (the insolvency end), per exchange.
        self.uncovered_usd = np.zeros(n_envs)
        self.alloc_target = np.tile([1.0, 0.0, 0.0, 0.0], (n_envs, 1))
        self.last_loss_usd = np.zeros(n_envs)
        self.oi0 = np.ones(n_envs)  # set by reset()
        self.pots0 = np.ones((n_envs, self.sim.n_pots))
        self._values: list[dict[str, Any]] = []  # lever_values of each exchange, in force

    @property
    def shared(self) -> bool:
        """Whether one fund backs every market (else one segment per group)."""
        return self.sim.fund_mode == "shared"

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

    # ---- episodes and decisions ------------------------------------------------------------

    def reset(self, seeds: Sequence[int]) -> FloatArray:
        """Every exchange anew (exchange ``e`` on ``seeds[e]``); ``(n_envs, obs_dim)``.

        With a ``sampler``, the batch's day is drawn around the scenario's markets from
        ``default_rng([seeds[0], 1])`` (as the one-market env draws a training scenario from
        its episode seed) and every exchange runs it on its own paths and book.
        """
        if len(seeds) != self.n_envs:
            raise ValueError(f"reset needs one seed per exchange ({self.n_envs}), got {seeds!r}")
        # The book is drawn under the levers' defaults (its leverage and margin multiples).
        self._apply(np.tile(self.default_positions, (self.n_envs, 1)), rebalance=False)
        day = None
        if self.sampler is not None:  # the batch's day, drawn from exchange 0's episode seed
            rng = np.random.default_rng([int(seeds[0]), 1])
            day = sample_markets_scenario(rng, self.scenario, self.sampler)
        self.sim.reset([int(s) for s in seeds], scenario=day)
        self.alloc_target = np.tile([1.0, 0.0, 0.0, 0.0], (self.n_envs, 1))  # all stable
        self._rebalance()
        self.last_loss_usd = np.zeros(self.n_envs)
        self.uncovered_usd = np.zeros(self.n_envs)
        oi0 = self.sim.initial_open_interest_usd
        self.oi0 = np.array([float(oi0[e].sum()) for e in range(self.n_envs)])
        self.pots0 = self.sim.initial_fund_usd.copy()
        return self.observe(None)

    def step(
        self, action: FloatArray
    ) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray, list[dict[str, Any]]]:
        """Set every exchange's levers (``(n_envs, action_dim)``), run one decision, score it.

        Returns:
            ``(obs, reward, terminated, truncated, infos)``: ``(n_envs, obs_dim)`` float32,
            ``(n_envs,)`` each, and one info dict per exchange (the one-exchange env's).
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_envs, self.action_dim):
            raise ValueError(
                f"action must have shape {(self.n_envs, self.action_dim)} "
                f"({len(self.exchange_levers)} exchange levers, then each per-market lever for "
                "every market, then a haircut per collateral asset: env.action_names()), "
                f"got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"action must be finite, got {a.tolist()}")
        new = np.clip(a, -1.0, 1.0)
        if self.dead_band > 0.0:  # a target within the band of its position: the lever holds
            new = np.where(np.abs(new - self.positions) <= self.dead_band, self.positions, new)
        if self.max_step < 2.0:  # each lever moves toward its target by at most max_step
            new = self.positions + np.clip(new - self.positions, -self.max_step, self.max_step)
        change = np.array(
            [float(np.abs(new[e] - self.positions[e]).sum()) for e in range(self.n_envs)]
        )
        sim = self.sim
        ext_before = sim.state.fund.external_pnl_usd.copy()  # the rebalance's costs count
        self._apply(new)
        E, M = self.n_envs, self.n_markets
        sums: dict[str, FloatArray] = {}
        paid = np.zeros((E, M))
        adl = np.zeros((E, M))
        lent = np.zeros((E, sim.n_pots))
        row: dict[str, Any] | None = None
        for _ in range(self.ticks_per_decision):
            if sim.done:
                break
            row = sim.step()
            ev = row["events"]
            for name in SUMMED_EVENTS:
                sums[name] = sums.get(name, 0.0) + getattr(ev, name)
            # What ends the episode, as in one market: losses no fund covered, the same
            # dollars under every ADL rule (a counterparty's haircut past the mark counts).
            self.uncovered_usd = self.uncovered_usd + (
                ev.socialized_loss_usd + ev.unrecovered_usd + np.maximum(ev.adl_haircut_usd, 0.0)
            )
            paid += row["market_fund_paid_usd"]
            adl += row["market_adl_volume_usd"]
            lent += row["fund_transfer_usd"]
        zero = np.zeros(E)
        ext = sim.state.fund.external_pnl_usd - ext_before if self.shared else zero
        margins = self.margins(row)
        margin = np.array([float(margins[1][e].sum()) for e in range(E)])
        pots = sim.fund_pots_usd()
        fund = np.array([float(pots[e].sum()) for e in range(E)])
        totals = DecisionTotals(
            trading_fees_usd=sums.get("trading_fees_usd", zero),
            fund_liquidation_fees_usd=sums.get("fund_fee_income_usd", zero),
            fund_external_pnl_usd=ext,
            fund_value_usd=fund,
            socialized_loss_usd=sums.get("socialized_loss_usd", zero),
            unrecovered_usd=sums.get("unrecovered_usd", zero),
            adl_volume_usd=sums.get("adl_volume_usd", zero),
            fund_shortfall_usd=sums.get("shortfall_usd", zero),
            margin_locked_usd=margin,
            lost_fee_revenue_usd=np.zeros(E),
            change=change,
            years=self.decision_minutes / MINUTES_PER_YEAR,
        )
        components = reward_components(totals, self.oi0, self.weights)
        reward = combine(components, self.weights)
        loss = (
            sums.get("socialized_loss_usd", zero)
            + sums.get("unrecovered_usd", zero)
            + sums.get("adl_volume_usd", zero)
        )
        self.last_loss_usd = np.asarray(loss, dtype=np.float64)
        terminated = self.uncovered_usd > self.insolvency_frac * self.oi0
        truncated = np.full(E, sim.done) & ~terminated
        weights = sim.fund_weights()
        infos = [
            {
                "reward_components": {k: float(v[e]) for k, v in components.items()},
                "cost": float(components["solvency"][e]),
                "user_loss_usd": float(self.last_loss_usd[e]),
                "capital_locked_usd": float(fund[e]) + float(margin[e]),
                "fund_pots_usd": pots[e].copy(),
                "market_fund_paid_usd": paid[e].copy(),
                "market_adl_volume_usd": adl[e].copy(),
                "fund_transfer_usd": lent[e].copy(),
                "levers": self._values[e],
                "fund_weights": weights[e].copy(),
                **{name: float(value[e]) for name, value in sums.items()},
                "uncovered_usd": float(self.uncovered_usd[e]),
            }
            for e in range(E)
        ]
        return self.observe(row, margins, weights), reward, terminated, truncated, infos

    # ---- levers ----------------------------------------------------------------------------

    def lever_values(self, e: int) -> dict[str, Any]:
        """Exchange ``e``'s levers in force in natural units (per-market ones as ``(M,)``)."""
        p = self.positions[e]
        out: dict[str, Any] = {}
        for i, name in enumerate(self.exchange_levers):
            out[name] = float(self.levers[i].to_value(p[i]))
        k, m = len(self.exchange_levers), self.n_markets
        for j, name in enumerate(PER_MARKET_LEVERS):
            out[name] = MARKET_LEVERS[name].to_value(p[k + j * m : k + (j + 1) * m])
        if self.n_assets:
            rows = p[len(p) - self.n_assets :]
            haircut = COLLATERAL_LEVERS["collateral_haircut_frac"]
            out["collateral_haircut_frac"] = haircut.to_value(rows)
        return out

    def _apply(self, positions: FloatArray, rebalance: bool = True) -> None:
        """Hold ``positions`` (``(n_envs, action_dim)``) and put their levers in force."""
        self.positions = positions
        rows = [self.lever_values(e) for e in range(self.n_envs)]
        self._values = rows  # the decision's rebalance and info read them

        def column(name: str) -> FloatArray:
            return np.array([r[name] for r in rows], dtype=np.float64)

        risk = dataclasses.replace(
            self.engine,
            liquidation_fee_rate=column("liquidation_fee_rate"),
            liquidation_fee_fund_share=column("liquidation_fee_fund_share"),
            trading_fee_fund_share=column("trading_fee_fund_share"),
        )
        transfer = None
        if self.segment_levers:  # a share of the segments' starting total per tick
            start = self.sim.initial_fund_usd
            transfer = np.array(
                [
                    rows[e]["segment_transfer_cap_frac"] * float(start[e].sum())
                    for e in range(self.n_envs)
                ]
            )
        self.sim.set_levers(
            risk,
            column("market_mmr_mult"),
            column("market_oi_cap_frac"),
            column("market_fund_cap_frac"),
            column("collateral_haircut_frac") if self.n_assets else None,
            transfer,
        )
        if rebalance:
            self._rebalance()

    def _rebalance(self) -> None:
        """Move each shared fund toward its allocation, where it moved enough to pay."""
        if not self.shared:
            return
        target = self.alloc_target.copy()
        move = np.zeros(self.n_envs, dtype=bool)
        for e in range(self.n_envs):
            values = self._values[e]
            t = allocation_weights(np.array([values[name] for name in ALLOCATION_LEVERS]))
            if float(np.abs(t - self.alloc_target[e]).sum()) > self.rebalance_threshold:
                target[e], move[e] = t, True
        if move.any():
            self.sim.set_allocation(target, move)
            self.alloc_target = target

    def margins(self, row: dict[str, Any] | None) -> tuple[FloatArray, FloatArray]:
        """Each account's equity and requirement at the last oracle (the engine's view)."""
        sim = self.sim
        mark = sim.last_index if row is None else row["oracle"]
        kw: dict[str, Any] = {"market_mmr_mult": sim.market_mmr_mult}
        if sim.n_assets:
            kw.update(collateral_price=sim.unit_price, collateral_haircut=sim.haircut)
        return margin_state(sim.state, sim.risk, mark, **kw)

    # ---- observation -----------------------------------------------------------------------

    def observe(
        self,
        row: dict[str, Any] | None,
        margins: tuple[FloatArray, FloatArray] | None = None,
        fund_weights: FloatArray | None = None,
    ) -> FloatArray:
        """Every exchange's observation, ``(n_envs, obs_dim)`` float32 (the env's layout).

        ``row``: the decision's last tick (``None``: the episode's start), whose open interest
        and pots are the state's now; ``margins`` and ``fund_weights``, where the decision
        computed them already.
        """
        sim = self.sim
        if row is None:
            mark = sim.last_index
            oi, pots = open_interest_usd(sim.state, mark), sim.fund_pots_usd()
        else:
            mark, oi, pots = row["mark"], row["open_interest_usd"], row["fund_usd"]
        eq, req = self.margins(row) if margins is None else margins
        weights = sim.fund_weights() if fund_weights is None else fund_weights
        normal = np.stack([sim.normal_depth(m) for m in range(self.n_markets)], axis=1)
        depth = normal if row is None else row["depth"]
        rows = [
            self._observe_one(
                e, mark[e], oi[e], eq[e], req[e], weights[e], pots[e], normal[e], depth[e]
            )
            for e in range(self.n_envs)
        ]
        return np.stack(rows)

    def _observe_one(
        self,
        e: int,
        mark: FloatArray,
        oi: FloatArray,
        eq: FloatArray,
        req: FloatArray,
        fund_weights: FloatArray,
        pots: FloatArray,
        normal: FloatArray,
        depth_now: FloatArray,
    ) -> FloatArray:
        """Exchange ``e``'s observation from its rows of the batch's arrays."""
        sim = self.sim
        st = sim.state
        index = sim.last_index[e]
        oi0 = float(self.oi0[e])
        oi_total = max(float(oi.sum()), 1e-9)
        near = (req > 0.0) & (eq < (1.0 + NEAR_LIQUIDATION_BUFFER) * req)
        gross = np.abs(st.size[e]) * mark  # (A, M)
        near_m = gross[near].sum(axis=0) / np.maximum(gross.sum(axis=0), 1e-9)
        near_total = float(gross[near].sum()) / max(float(gross.sum()), 1e-9)
        drawdown = 1.0 - index / sim.peak_index[e]
        left = pots / np.maximum(self.pots0[e], 1e-9)
        discount = 0.0
        t = min(sim.t, sim.redemption_path.shape[1] - 1)
        if sim.n_assets:
            ratio = sim.unit_price[e] / sim.redemption_path[e, t]
            discount = float(max(0.0, (1.0 - ratio).max()))
        positions = self.positions[e]
        exchange = [
            10.0 * float(pots.sum()) / oi0,
            float(left.min()),
            oi_total / oi0,
            float(drawdown.max()),
            near_total,
            discount,
            1e3 * float(self.last_loss_usd[e]) / oi0,
            sim.t / max(self.scenario.n_ticks, 1),
            *positions[: len(EXCHANGE_LEVERS)],
            *fund_weights,
        ]
        q = st.size[e]
        longs = np.where(q > 0.0, q, 0.0).sum(axis=0)
        shorts = np.where(q < 0.0, -q, 0.0).sum(axis=0)
        skew = (longs - shorts) / np.maximum(longs + shorts, 1e-12)
        k = len(self.exchange_levers)
        blocks: list[float] = []
        for m in range(self.n_markets):
            blocks += [
                float(np.log(max(sim.vol_annual[e, m], 1e-12) / sim.base_vol[m])),
                float(depth_now[m] / normal[m]),
                float(oi[m] / oi_total),
                float(skew[m]),
                float(near_m[m]),
                float(drawdown[m]),
                *positions[k + m :: self.n_markets][: len(PER_MARKET_LEVERS)],
            ]
        assets = positions[len(positions) - self.n_assets :].tolist()
        segments = [positions[self.exchange_levers.index(n)] for n in self.segment_levers]
        obs = np.asarray([*exchange, *blocks, *assets, *segments], dtype=np.float64)
        obs = np.nan_to_num(obs, nan=0.0, posinf=OBS_CLIP, neginf=-OBS_CLIP)
        return np.clip(obs, -OBS_CLIP, OBS_CLIP).astype(np.float32)
