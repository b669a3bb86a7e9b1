"""``fundgym/InsuranceFund-v0``: a risk desk's levers against a simulated crash.

The single environment and its batched twin share one core (:class:`FundControlCore`) that
steps ``n_envs`` exchanges as one ``(n_envs, n_accounts)`` array program, so the twin equals
single environments seeded alike, step for step, in each of Gymnasium's autoreset modes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from fundgym.envs.config import EnvConfig, make_config, put_crash_rate_per_year
from fundgym.envs.controls import ALLOCATION, MARGIN_PARAMS, PARAMS, Controls
from fundgym.envs.core.events import EV_ADL_HAIRCUT, N_EVENTS, StepEvents
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.core.vault import V_CAPITAL, V_CASH, V_MAX_DRAWDOWN, V_PEAK_INVENTORY, V_SIZE
from fundgym.envs.fund.kernels import fund_arrays, values_and_weights
from fundgym.envs.fund.portfolio import AllocationParams, FundPortfolio
from fundgym.envs.market.price import MINUTES_PER_YEAR
from fundgym.envs.market.sampler import sample_training_scenario
from fundgym.envs.observation import (
    BOOK_STATS,
    book_stats,
    decision_close,
    observation_columns,
)
from fundgym.envs.render import RenderFrame, RenderHistory, render_ansi, render_rgb
from fundgym.envs.rewards import DecisionTotals, combine, reward_components
from fundgym.envs.scenarios import Scenario, load_scenario
from fundgym.envs.simulator import BLOCK_SERIES, ExchangeSimulator
from fundgym.envs.state import SimState
from fundgym.envs.vector import checked_actions, checked_autoreset_mode

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

OBS_CLIP = 10.0
#: Render modes of both environments (``None``: nothing is recorded or drawn).
RENDER_MODES = ("ansi", "rgb_array")
#: Frames per second a video of decisions plays at (``RecordVideo`` reads ``render_fps``).
RENDER_FPS = 4
#: Book depth below which thinness (observation 4) reads the depth as this floor, USD per 1%.
MIN_DEPTH_USD_PER_PCT = 1.0
#: Event fields a decision sums over its ticks (rewards, info and observations read them).
_SUMMED_EVENTS = (
    "trading_fees_usd",
    "fund_fee_income_usd",
    "socialized_loss_usd",
    "unrecovered_usd",
    "adl_volume_usd",
    "liquidation_volume_usd",
    "shortfall_usd",
    "liquidation_fees_usd",
    "bad_debt_usd",
    "n_liquidations",
    "n_liquidations_below_bankruptcy",
    "adl_haircut_usd",
    "adl_overshoot_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "vault_unwind_usd",
    "vault_adl_usd",
    "liquidator_absorbed_usd",
    "settlement_price",
    "floored_short_liquidation_usd",
    "floored_fund_fee_income_usd",
    "attacker_withdrawn_usd",
)
#: Each, with its column in a block's event rows.
_SUMS = tuple((name, StepEvents.FIELDS.index(name)) for name in _SUMMED_EVENTS)
#: The liquidated notional's column, whose largest tick a decision also reports.
_LIQUIDATION_VOLUME = StepEvents.FIELDS.index("liquidation_volume_usd")
#: Columns of a block's series the decision reads: its last prices and every tick's index.
_INDEX, _MARK, _ORACLE, _FUNDING = (
    BLOCK_SERIES.index(name)
    for name in ("index_price", "mark_price", "oracle_price", "funding_rate")
)
#: What :func:`~fundgym.envs.observation.decision_close` reads: the series' last mark, oracle
#: and funding columns, then the events' columns it sums, floors or takes the last of.
_CLOSE_COLUMNS = np.array(
    [
        _MARK,
        _ORACLE,
        _FUNDING,
        _LIQUIDATION_VOLUME,
        *(
            StepEvents.FIELDS.index(name)
            for name in ("shortfall_usd", "socialized_loss_usd", "unrecovered_usd")
        ),
        EV_ADL_HAIRCUT,
        StepEvents.FIELDS.index("market_closed"),
    ],
    dtype=np.int64,
)

#: Observation names, in vector order (see the environment docstring for their scaling).
OBS_NAMES: tuple[str, ...] = (
    "vol_short",
    "vol_long",
    "return_pct",
    "depth_rel",
    "oi_to_depth_log10",
    "oracle_gap_pct",
    "funding_per_mille",
    "open_interest_rel",
    "long_short_skew",
    "leverage_p50",
    "leverage_p90",
    "leverage_p99",
    "oi_within_1pct",
    "oi_within_2pct",
    "oi_within_5pct",
    "fund_coverage",
    "fund_stable",
    "fund_yield",
    "fund_volatile",
    "fund_hedge",
    "liquidations_pct_oi",
    "shortfall_per_mille_oi",
    *(f"param_{name}" for name in PARAMS),
    "episode_progress",
)
_PARAMS_COL = OBS_NAMES.index("param_liquidation_fee_rate")  # first lever's column
_THINNESS_COL = OBS_NAMES.index("oi_to_depth_log10")
_OI_COL = BOOK_STATS.index("open_interest_usd")


# ------------------------------------------------------------------ core ------


#: ``(array, axis)`` pairs: arrays holding one row per exchange, and the axis of exchanges.
_Rows = list[tuple[np.ndarray[Any, Any], int]]


class _SavedRows:
    """Copies of some exchanges' rows of a set of arrays, put back after a batched call.

    The compiled tick advances every exchange of a batch in one call; an exchange that must
    not move (its reset is pending under next-step autoreset) is saved before the call and
    restored after it, so its state, random streams and clocks are bit for bit as they were.

    Args:
        arrays: Lists the arrays, each with its exchange axis. Called again to restore, since
            a step may replace an array by a new one (``x = np.where(...)``): the rows go
            back into whatever array holds the quantity then.
        rows: Exchanges to save, as indices.
    """

    def __init__(self, arrays: Callable[[], _Rows], rows: np.ndarray[Any, Any]) -> None:
        self._arrays = arrays
        self._rows = rows
        self._saved = [np.take(a, rows, axis=axis) for a, axis in arrays()]

    def restore(self) -> None:
        """Write the saved rows back into the arrays that hold them now."""
        for (a, axis), saved in zip(self._arrays(), self._saved, strict=True):
            if axis == 0:
                a[self._rows] = saved
            else:
                a[:, self._rows] = saved


def _venue_info(
    attacker_margin_usd: FloatArray, market_closed: FloatArray, sums: dict[str, FloatArray]
) -> dict[str, FloatArray]:
    """The venue events' ``info`` keys (:mod:`fundgym.envs.core.venue_events`).

    ``attacker_margin_usd``: each exchange's scenario's attacker margin (0 without one);
    ``market_closed``: the decision's last tick's market-closed flag (a new array).
    """
    return {
        "market_settled": market_closed,
        "settlement_price": sums["settlement_price"],
        "floored_short_liquidation_usd": sums["floored_short_liquidation_usd"],
        "floored_fund_fee_income_usd": sums["floored_fund_fee_income_usd"],
        "attacker_withdrawn_usd": sums["attacker_withdrawn_usd"],
        "attacker_margin_usd": attacker_margin_usd.copy(),
    }


def _vault_info(vault: FloatArray, oracle: FloatArray) -> dict[str, FloatArray]:
    """The backstop vault's ``info`` keys at the step's last oracle (new arrays).

    Equity is cash plus inventory at the oracle (the price the vault's margin is checked at);
    PnL is equity less the capital it started the episode with (``vault_capital_usd``); the
    drawdown is the largest fall from its running peak this episode, and the peak inventory
    the largest notional it held at any tick of it (:mod:`fundgym.envs.core.vault`).
    """
    inventory = vault[:, V_SIZE] * oracle
    equity = vault[:, V_CASH] + inventory
    return {
        "vault_equity_usd": equity,
        "vault_pnl_usd": equity - vault[:, V_CAPITAL],
        "vault_drawdown_frac": vault[:, V_MAX_DRAWDOWN].copy(),
        "vault_inventory_usd": inventory,
        "vault_peak_inventory_usd": vault[:, V_PEAK_INVENTORY].copy(),
        "vault_capital_usd": vault[:, V_CAPITAL].copy(),
    }


def _state_arrays(state: SimState) -> _Rows:
    """Every array of ``state``, the fund's included, each with its exchange axis (0)."""
    out: _Rows = []
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, FundPortfolio):
            out.extend((getattr(value, g.name), 0) for g in dataclasses.fields(FundPortfolio))
        else:
            out.append((value, 0))
    return out


class FundControlCore:
    """``n_envs`` exchanges, their controls and their rewards, stepped together.

    Args:
        config: The environment's configuration.
        n_envs: Exchanges in the batch.
    """

    #: Per-exchange arrays of the core that a decision moves (see :meth:`step`'s ``frozen``).
    _DECISION_ROWS = (
        "decision",
        "uncovered_usd",
        "var_short",
        "var_long",
        "last_return",
        "last_liq_usd",
        "last_shortfall_usd",
        "last_mark",
        "last_oracle",
        "last_funding",
    )

    def __init__(self, config: EnvConfig, n_envs: int, threads: int | None = None) -> None:
        self.config = config
        self.n_envs = n_envs
        # The simulator's threads (results bit-identical; None: FUNDGYM_THREADS, default 1).
        self.threads = threads
        self._library: Scenario | None = (
            None if config.scenario == "training" else load_scenario(config.scenario)
        )
        tick = self._library.tick_minutes if self._library else 1.0
        self.ticks_per_decision = max(1, round(config.decision_minutes / tick))
        self.tick_minutes = tick
        # Weights of one tick in the observation's 1-hour and 1-day volatility EWMAs.
        self._ewma_short = 1.0 - np.exp(-tick / 60.0)
        self._ewma_long = 1.0 - np.exp(-tick / 1440.0)
        notice = int(np.ceil(config.margin_notice_minutes / config.decision_minutes))
        # Decisions between allocation moves (EnvConfig.allocation_minutes; 1: every decision).
        self.allocation_every = (
            1
            if config.allocation_minutes is None
            else round(config.allocation_minutes / config.decision_minutes)
        )
        fixed = {k: v for k, v in dataclasses.asdict(config.fixed).items() if v is not None}
        self.controls = Controls(
            config.controlled, fixed, config.max_step, notice, n_envs, config.allocation_buckets
        )
        self._tiers: MarginTiers | None = (
            None if config.margin_tiers == "none" else getattr(MarginTiers, config.margin_tiers)()
        )
        self.sim: ExchangeSimulator | None = None
        self._episode_rngs = [np.random.default_rng() for _ in range(n_envs)]
        self.n_decisions = np.zeros(n_envs, dtype=np.int64)
        #: Each exchange's scenario's attacker margin (0 without one), set at its reset: the
        #: step's ``info`` reports it without walking the scenarios every decision.
        self.attacker_margin_usd = np.zeros(n_envs)
        self.decision = np.zeros(n_envs, dtype=np.int64)
        self.uncovered_usd = np.zeros(n_envs)
        self.var_short = np.zeros(n_envs)
        self.var_long = np.zeros(n_envs)
        self.last_return = np.zeros(n_envs)
        self.last_liq_usd = np.zeros(n_envs)
        self.last_shortfall_usd = np.zeros(n_envs)
        self.alloc_target = np.tile([1.0, 0.0, 0.0, 0.0], (n_envs, 1))
        # The last tick's venue prices, per exchange (reset with each episode).
        self.last_mark = np.zeros(n_envs)
        self.last_oracle = np.zeros(n_envs)
        self.last_funding = np.zeros(n_envs)
        self.last_book = np.zeros((n_envs, len(BOOK_STATS)))  # book_stats at the last observation
        self.last_fund_value_usd = np.zeros(n_envs)  # the fund's value at the last observation

    @property
    def action_dim(self) -> int:
        """Length of one exchange's action vector."""
        return len(self.config.controlled)

    def fund_value_usd(self) -> FloatArray:
        """``(n_envs,)`` the insurance fund's value now (at the last index price), USD."""
        assert self.sim is not None, "call reset() first"
        return self.sim.fund_value_usd()

    @property
    def initial_open_interest_usd(self) -> FloatArray:
        """``(n_envs,)`` open interest when each exchange's current episode began, USD."""
        assert self.sim is not None, "call reset() first"
        return np.array(self.sim.initial_open_interest_usd, copy=True)

    @property
    def minutes_elapsed(self) -> FloatArray:
        """``(n_envs,)`` simulated minutes since each exchange's episode began."""
        return np.asarray(self.decision * (self.ticks_per_decision * self.tick_minutes), float)

    # ---- episodes ----

    def seed(self, seeds: Sequence[int | None], mask: BoolArray | None = None) -> None:
        """Seed episode streams: exchange ``e`` gets ``seeds[e]`` (``None``: OS entropy).

        With ``mask``, only the exchanges in it are seeded (``seeds`` still has one entry per
        exchange); the others keep their streams.
        """
        for e, s in enumerate(seeds):
            if mask is None or mask[e]:
                self._episode_rngs[e] = np.random.default_rng(s)

    def _scenario_for(self, episode_seed: int) -> Scenario:
        if self._library is not None:
            sc = self._library
        else:
            sc = sample_training_scenario(
                np.random.default_rng([episode_seed, 1]),
                horizon_minutes=self.config.training_horizon_minutes,
                crash_prob=self.config.sampler.crash_prob,
                thin_prob=self.config.sampler.thin_prob,
            )
        return sc

    def reset(self, mask: BoolArray) -> FloatArray:
        """Start new episodes on the exchanges in ``mask``; return every observation."""
        self.start_episodes(mask)
        return self.observe()

    def restart(self, mask: BoolArray) -> FloatArray:
        """:meth:`reset` right after :meth:`step` (same-step autoreset); every observation.

        Only the restarted exchanges' book statistics are computed: the others have not moved
        since the step computed theirs (the same accounts, levers and mark), so their rows of
        the step's :attr:`last_book` are kept, bit for bit.
        """
        self.start_episodes(mask)
        sim = self.sim
        assert sim is not None
        rows = np.flatnonzero(mask)
        book = self.last_book.copy()
        book[rows] = book_stats(sim.state, sim.risk, self.last_mark, rows=rows)[rows]
        return self.observe(book)

    def start_episodes(self, mask: BoolArray) -> None:
        """Start new episodes on the exchanges in ``mask`` (the others are not touched).

        Each draws its episode seed from its own stream, so an exchange's episodes depend on
        its seed alone, whenever and alongside whichever others it is reset.
        """
        seeds = [int(self._episode_rngs[e].integers(2**62)) for e in range(self.n_envs) if mask[e]]
        envs = np.flatnonzero(mask)
        # Parameters first: a new book is drawn under the parameters in force (IMR caps its
        # leverage), which for a new episode are the starting ones.
        self.controls.reset(mask)
        if self.sim is not None:
            self.sim.set_params(self._risk())
        if self.sim is None:
            assert mask.all()
            scenarios = [self._scenario_for(s) for s in seeds]
            self.sim = ExchangeSimulator(
                scenarios,
                self._risk(),
                n_envs=self.n_envs,
                n_accounts=self.config.n_accounts,
                fund_to_oi_frac=self.config.fund_to_oi_frac,
                vault_to_oi_frac=self.config.vault_to_oi_frac,
                vault_adl_loss_frac=self.config.vault_adl_loss_frac,
                fund_injection_frac=self.config.fund_injection_frac,
                fund_injection_max=self.config.fund_injection_max,
                seed=seeds,
                allocation=AllocationParams(
                    put_crash_rate_per_year=put_crash_rate_per_year(self.config)
                ),
                population_minutes=self.config.population_minutes,
                record=False,
                threads=self.threads,
            )
        else:  # every restarted exchange at once (ExchangeSimulator.reset_envs)
            self.sim.reset_envs(envs.tolist(), seeds, [self._scenario_for(s) for s in seeds])
        sim = self.sim
        n_dec = sim.market.n_ticks[envs] // self.ticks_per_decision
        cap = self.config.horizon_minutes
        if cap is not None:
            n_dec = np.minimum(n_dec, int(cap // self.config.decision_minutes))
        if (n_dec < 1).any():
            e = int(envs[np.argmax(n_dec < 1)])
            raise ValueError(
                f"scenario {sim.scenarios[e].name!r} is shorter than one decision "
                f"({self.config.decision_minutes} min)"
            )
        self.n_decisions[envs] = n_dec
        self.attacker_margin_usd[envs] = [
            0.0 if (a := sim.scenarios[e].attacker) is None else a.margin_usd for e in envs.tolist()
        ]
        vol = np.array([sim.scenarios[e].price.vol_annual for e in envs.tolist()])
        self.var_short[envs] = self.var_long[envs] = vol**2 * self.tick_minutes / MINUTES_PER_YEAR
        self.decision[mask] = 0
        self.uncovered_usd[mask] = 0.0
        self.last_return[mask] = 0.0
        self.last_liq_usd[mask] = 0.0
        self.last_shortfall_usd[mask] = 0.0
        self.alloc_target[mask] = [1.0, 0.0, 0.0, 0.0]
        self.last_mark[mask] = sim.last_index[mask]
        self.last_oracle[mask] = sim.last_index[mask]
        self.last_funding[mask] = [
            sim.scenarios[e].funding.interest_per_interval for e in np.flatnonzero(mask)
        ]

    def _risk(self, values: dict[str, FloatArray] | None = None) -> RiskParams:
        """The levers in force as risk parameters (``values``: :meth:`Controls.values`).

        Built with :meth:`RiskParams.trusted`: every value comes from a position the controls
        clipped to [-1, 1], mapped into its lever's action range, which lies inside the hard
        bounds, and ``imr = min(mmr x imr_multiple, 1) >= mmr`` since the multiple is >= 1.2;
        the configuration's values were checked when it was made. The arrays are copies, so
        the ``info["params"]`` arrays a caller may modify are not the ones in force.
        """
        v = self.controls.values() if values is None else values
        return RiskParams.trusted(
            mmr=v["mmr"].copy(),
            imr=v["imr"].copy(),
            liquidation_fee_rate=v["liquidation_fee_rate"].copy(),
            liquidation_fee_fund_share=v["liquidation_fee_fund_share"].copy(),
            taker_fee_rate=self.config.taker_fee_rate,
            liquidator_capacity_mult=self.config.liquidator_capacity_mult,
            unrealised_pnl_haircut_frac=self.config.unrealised_pnl_haircut_frac,
            oi_cap_frac=self.config.oi_cap_frac,
            mark_cap_mult=self.config.mark_cap_mult,
            trading_fee_fund_share=v["trading_fee_fund_share"].copy(),
            fallback=self.config.fallback,
            adl_policy=self.config.adl_policy,
            liquidation_mode=self.config.liquidation_mode,
            waterfall=None if self.config.waterfall is None else tuple(self.config.waterfall),
            tiers=self._tiers,
        )

    # ---- holding exchanges still ----

    def _control_rows(self) -> _Rows:
        """The levers' positions, pending margin increases and their clocks."""
        c = self.controls
        out: _Rows = [(c.position[n], 0) for n in PARAMS]
        out += [(c.pending[n], 0) for n in MARGIN_PARAMS]
        out += [(c.due[n], 0) for n in MARGIN_PARAMS]
        return [*out, (c.decision, 0)]

    def _simulator_rows(self) -> _Rows:
        """Every per-exchange array the compiled tick writes (``tick_kernels.advance_*``)."""
        sim = self.sim
        assert sim is not None
        m = sim.market
        out = _state_arrays(sim.state)
        out += [(sim.drivers, 1), (sim.rng.state, 0), (m.scalars, 1), (m.t, 0)]
        buffer, *feed = m.oracle.kernel_arrays()
        return [*out, (buffer, 1), *((a, 0) for a in feed)]

    def _decision_rows(self) -> _Rows:
        """The core's own per-exchange arrays a decision moves."""
        return [(getattr(self, n), 0) for n in self._DECISION_ROWS]

    # ---- one decision ----

    def step(
        self, action: FloatArray, frozen: BoolArray | None = None
    ) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        """Apply ``action`` (``(n_envs, action_dim)``), run one decision interval.

        Args:
            action: One row of targets per exchange.
            frozen: Exchanges that must not move (a vector env's pending next-step reset):
                their action is ignored and their state, random streams, parameters and
                observation stay exactly as they were; their reward is 0, their flags False,
                and their ``info`` entries hold nothing meaningful. The compiled tick advances
                every exchange, so these are saved before it and restored after it; ``None``
                (the common case) saves nothing.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_envs, self.action_dim):
            raise ValueError(
                f"action must have shape {(self.n_envs, self.action_dim)}, got {a.shape}"
            )
        if not np.isfinite(a).all():
            bad = float(a[~np.isfinite(a)].flat[0])
            raise ValueError(
                f"action must be finite, got {bad!r} (an action is {self.action_dim} numbers "
                f"in [-1, 1]: {list(self.config.controlled)})"
            )
        sim = self.sim
        assert sim is not None, "call reset() first"
        held = None
        if frozen is not None and frozen.any():
            held = np.flatnonzero(frozen)
            saved_controls = _SavedRows(self._control_rows, held)
            saved_sim = _SavedRows(self._simulator_rows, held)
            saved_decision = _SavedRows(self._decision_rows, held)
        moved = self.controls.apply(np.minimum(np.maximum(a, -1.0), 1.0))  # np.clip, cheaper
        if held is not None:
            saved_controls.restore()
            moved[held] = 0.0
        values, target = self.controls.in_force()
        sim.set_params(self._risk(values))
        ext0 = sim.portfolio.external_pnl_usd.copy()
        injections0 = sim.portfolio.injections.copy()
        injected0 = sim.portfolio.injected_usd.copy()
        change = np.abs(target - self.alloc_target).sum(axis=1) > self.config.rebalance_threshold
        if self.allocation_every > 1:  # the allocation's slower clock: decisions 0, k, 2k, ...
            change &= self.decision % self.allocation_every == 0
        if held is not None:
            change[held] = False
        if change.any():
            budget = self.config.allocation_turnover_frac
            if budget is not None:  # a move shifts at most `budget` of the fund, on the line
                delta = target - self.alloc_target
                turnover = 0.5 * np.abs(delta).sum(axis=1)
                scale = np.minimum(1.0, budget / np.maximum(turnover, 1e-300))
                target = self.alloc_target + delta * scale[:, None]
            sim.set_allocation(target, change)
            self.alloc_target = np.where(change[:, None], target, self.alloc_target)
        start_index = sim.last_index.copy()
        # The decision's ticks in one compiled call; the sums and EWMAs from its arrays.
        # The book statistics come out of the same compiled call, unless some exchanges are
        # held (their rows are restored below, so their book is read after that).
        book = np.empty((self.n_envs, len(BOOK_STATS))) if held is None else None
        block = sim.advance(
            self.ticks_per_decision, check_ledger=False, book_series=False, book_out=book
        )
        if held is not None:
            saved_sim.restore()
        index = block.series[:, :, _INDEX]
        # Every tick's squared log return at once (np.log is elementwise: the same bits as
        # tick by tick); the event sums and the EWMAs then run tick by tick, compiled.
        before = np.empty_like(index)
        before[0] = start_index
        before[1:] = index[:-1]
        r2 = np.log(index / before) ** 2
        # The sums, EWMAs and last prices in one compiled call (observation.decision_close):
        # the core's new last values are rows of this decision's own array. What ends an
        # episode must not depend on the ADL rule: a counterparty's haircut (BitMEX, dYdX:
        # closed at bankruptcy, worse than the mark) is the same dollars that the Hyperliquid
        # rule socialises, so the uncovered loss counts each tick's positive haircut (a tick
        # where the bankruptcy price is better than the mark is a gain, not a loss netted off).
        total = np.zeros((self.n_envs, N_EVENTS))
        new_last = np.empty((5, self.n_envs))
        peak_liquidation = np.empty(self.n_envs)
        market_closed = np.empty(self.n_envs)
        last = block.series[-1]
        decision_close(
            block.events, r2, self._ewma_short, self._ewma_long, self.var_short, self.var_long,
            total, last, _CLOSE_COLUMNS, new_last, self.uncovered_usd, peak_liquidation,
            market_closed,
        )  # fmt: skip
        # Rows of the transposed totals: views of this decision's own array, no copy.
        by_event = total.T
        sums = {name: by_event[col] for name, col in _SUMS}
        self.last_mark, self.last_oracle, self.last_funding = new_last[0], new_last[1], new_last[2]
        self.last_liq_usd, self.last_shortfall_usd = new_last[3], new_last[4]
        self.last_return = np.log(sim.last_index / start_index)
        self.decision += 1
        if held is not None:
            saved_decision.restore()

        obs = self.observe(book)
        fund_value = self.last_fund_value_usd
        oi0 = sim.initial_open_interest_usd
        years = self.ticks_per_decision * self.tick_minutes / MINUTES_PER_YEAR
        risk = sim.risk
        demand = sim.population.demand_multiplier(risk, self.n_envs)
        pop = sim.population.params
        oi = self.last_book[:, _OI_COL].copy()
        lost = (
            (1.0 - demand)
            * pop.turnover_per_day
            * oi
            * self.config.taker_fee_rate
            * (years * 365.0)
        )
        totals = DecisionTotals(
            trading_fees_usd=sums["trading_fees_usd"],
            fund_liquidation_fees_usd=sums["fund_fee_income_usd"],
            fund_external_pnl_usd=sim.portfolio.external_pnl_usd - ext0,
            fund_value_usd=fund_value,
            socialized_loss_usd=sums["socialized_loss_usd"],
            unrecovered_usd=sums["unrecovered_usd"],
            adl_volume_usd=sums["adl_volume_usd"],
            fund_shortfall_usd=sums["shortfall_usd"],
            margin_locked_usd=self.last_book[:, BOOK_STATS.index("margin_locked_usd")],
            lost_fee_revenue_usd=lost,
            change=moved,
            years=years,
        )
        weights = self.config.reward
        comps = reward_components(totals, oi0, weights)
        reward = combine(comps, weights)
        terminated = self.uncovered_usd > self.config.insolvency_frac * oi0
        truncated = ~terminated & (self.decision >= self.n_decisions)
        if held is not None:
            reward[held] = 0.0
            terminated[held] = False
            truncated[held] = False
        # No info array is one the core keeps: a reset right after (same-step autoreset)
        # writes the core's arrays in place, and must not rewrite what this step reported.
        vault = _vault_info(sim.state.vault, last[:, _ORACLE])
        info: dict[str, Any] = {
            "fund_balance_usd": fund_value.copy(),
            "open_interest_usd": oi,
            "liquidation_volume_usd": sums["liquidation_volume_usd"],
            "peak_tick_liquidation_volume_usd": peak_liquidation,
            "shortfall_usd": sums["shortfall_usd"],
            "fund_injections": sim.portfolio.injections - injections0,
            "fund_injection_usd": sim.portfolio.injected_usd - injected0,
            # What the fund's allocation earned this decision against holding stable assets:
            # yield, option marks and payoffs, the listed asset's moves, less every cost.
            "fund_external_pnl_usd": totals.fund_external_pnl_usd,
            "adl_volume_usd": sums["adl_volume_usd"],
            "adl_haircut_usd": sums["adl_haircut_usd"],
            "adl_overshoot_usd": sums["adl_overshoot_usd"],
            **vault,
            "vault_takeovers": sums["vault_takeovers"],
            "vault_takeover_usd": sums["vault_takeover_usd"],
            "vault_unwind_usd": sums["vault_unwind_usd"],
            "vault_adl_usd": sums["vault_adl_usd"],
            "liquidator_absorbed_usd": sums["liquidator_absorbed_usd"],
            **_venue_info(self.attacker_margin_usd, market_closed, sums),
            "socialized_loss_usd": sums["socialized_loss_usd"],
            "unrecovered_usd": sums["unrecovered_usd"],
            "bad_debt_usd": sums["bad_debt_usd"],
            "n_liquidations": sums["n_liquidations"],
            "n_liquidations_below_bankruptcy": sums["n_liquidations_below_bankruptcy"],
            "fee_revenue_usd": sums["trading_fees_usd"] + sums["liquidation_fees_usd"],
            # The vault is backstop capital like the fund: a policy must not buy safety with
            # it for free (the frontier and evaluate compare policies on this number).
            "capital_locked_usd": fund_value + vault["vault_equity_usd"] + totals.margin_locked_usd,
            "mark_price": last[:, _MARK].copy(),
            "index_price": last[:, _INDEX].copy(),
            "cost": comps["solvency"],
            "reward_components": comps,
            "params": _params_info(values),
        }
        return obs, reward, terminated, truncated, info

    # ---- what a risk desk watches ----

    def observe(self, book: FloatArray | None = None) -> FloatArray:
        """The normalised observation of every exchange, ``(n_envs, len(OBS_NAMES))``.

        ``book`` is :func:`book_stats` at the last marks when the caller has it already (the
        compiled decision computes it); ``None`` computes it here.

        Every column is finite by construction (ratios have floored denominators: open
        interest at $1, the book's depth at :data:`MIN_DEPTH_USD_PER_PCT`), so a NaN or an
        infinity here is a defect upstream, never a state to show as a number.

        Raises:
            FloatingPointError: A raw value is not finite; the message names its column and
                exchange.
        """
        sim = self.sim
        assert sim is not None
        state = sim.state
        index = sim.last_index
        mark, oracle, funding = self.last_mark, self.last_oracle, self.last_funding
        per_year = MINUTES_PER_YEAR / self.tick_minutes
        if book is None:
            book = book_stats(state, sim.risk, mark, parallel=sim.threads > 1)
        self.last_book = book
        fund_value = self.last_fund_value_usd = np.empty(self.n_envs)
        weights = np.empty((self.n_envs, 4))
        values_and_weights(fund_arrays(sim.portfolio), index, sim.vol_annual, fund_value, weights)
        # Every column in one compiled pass (OBS_NAMES order; the thinness column's log10 by
        # numpy, as before), checked, then clipped in place.
        obs = np.empty((self.n_envs, len(OBS_NAMES)))
        thinness = np.empty(self.n_envs)
        observation_columns(
            self.var_short, self.var_long, per_year, self.last_return, sim.last_depth_mult,
            sim.last_depth_usd_per_pct, MIN_DEPTH_USD_PER_PCT, oracle, mark, funding, book,
            sim.initial_open_interest_usd, fund_value, weights, self.last_liq_usd,
            self.last_shortfall_usd, self.controls.normalised(), _PARAMS_COL, self.decision,
            self.n_decisions, obs, thinness,
        )  # fmt: skip
        obs[:, _THINNESS_COL] = np.log10(thinness)
        if not np.isfinite(obs).all():
            e, col = (int(i) for i in np.argwhere(~np.isfinite(obs))[0])
            raise FloatingPointError(
                f"observation {OBS_NAMES[col]!r} (column {col}) of exchange {e} is "
                f"{float(obs[e, col])!r}, not finite: the simulator's state is corrupt "
                f"(scenario {sim.scenarios[e].name!r}, decision {int(self.decision[e])})"
            )
        return np.minimum(np.maximum(obs, -OBS_CLIP, out=obs), OBS_CLIP, out=obs)  # np.clip

    # ---- what a renderer draws ----

    def frames(self, insolvent: BoolArray) -> list[RenderFrame]:
        """Every exchange's :class:`RenderFrame` now (after a reset or a step).

        Args:
            insolvent: ``(n_envs,)``: which exchanges this step ended on insolvency.
        """
        sim = self.sim
        assert sim is not None, "call reset() first"
        params = _params_info(self.controls.values())
        minutes = self.minutes_elapsed
        return [
            RenderFrame(
                minute=float(minutes[e]),
                index_price=float(sim.last_index[e]),
                mark_price=float(self.last_mark[e]),
                oracle_price=float(self.last_oracle[e]),
                fund_usd=float(self.last_fund_value_usd[e]),
                open_interest_usd=float(self.last_book[e, _OI_COL]),
                liquidated_usd=float(self.last_liq_usd[e]),
                params={k: float(v[e]) for k, v in params.items()},
                insolvent=bool(insolvent[e]),
                scenario=sim.scenarios[e].name,
            )
            for e in range(self.n_envs)
        ]


def _params_info(values: dict[str, FloatArray]) -> dict[str, FloatArray]:
    """``info["params"]``: the levers in force, natural units, the allocation weights last."""
    out = {k: v for k, v in values.items() if k not in ALLOCATION}
    out.update({name: values[name] for name in ALLOCATION})
    return out


def _spaces(core: FundControlCore) -> tuple[spaces.Box, spaces.Box]:
    act = spaces.Box(-1.0, 1.0, (core.action_dim,), dtype=np.float32)
    obs = spaces.Box(-OBS_CLIP, OBS_CLIP, (len(OBS_NAMES),), dtype=np.float32)
    return act, obs


def _single_info(info: dict[str, Any], e: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in info.items():
        out[k] = {kk: float(vv[e]) for kk, vv in v.items()} if isinstance(v, dict) else float(v[e])
    return out


# ------------------------------------------------------------------ envs ------


class InsuranceFundEnv(gym.Env[np.ndarray, np.ndarray]):
    """A perpetual-futures exchange's risk desk: liquidation fees, margins and the fund.

    ## Description

    One exchange with a population of traders lives through a market scenario: a calibrated
    historical crash (``black_thursday_2020``, ``oct_10_2025``, ...), a calm or volatile day, or
    (by default) a random draw from the training sampler with crashes of random timing, shape,
    depth collapse and warning. Every ``decision_minutes`` the agent sets the exchange's risk
    parameters; between decisions the market, the traders and the margin engine run tick by
    tick (one minute): liquidations fill into a book of collapsing depth, fills past bankruptcy
    are paid by the insurance fund, and when the fund runs dry the exchange deleverages
    profitable traders or socialises the loss. The agent trades solvency against capital
    efficiency: a large fund, high fees and high margins protect users but lock up capital
    and drive traders away.

    Underneath, one explicit state (:class:`fundgym.envs.state.SimState`: accounts x markets,
    structure of arrays, the fund stored once) advances by one compiled tick
    (:func:`fundgym.envs.simulator.tick`: population, funding, the fund's buckets, the margin
    engine's waterfall); the environment only sets the levers in force
    (:meth:`fundgym.envs.simulator.ExchangeSimulator.set_params`) and reads state and events.
    ``docs/simulator_v2.md`` describes the state, the tick and the lever registry.

    ## Action Space

    A ``Box(-1, 1, (n,), float32)`` with one coordinate per controlled parameter (all nine by
    default, in this order; ``controlled`` picks a subset, the rest stay at ``fixed`` values).
    Each coordinate is a *target*; the parameter in force moves toward it by at most
    ``max_step`` action units per decision, and an increase of MMR or the IMR multiple takes
    effect only after ``margin_notice_minutes``. Ranges, units, defaults and venue names come
    from the lever registry, :data:`fundgym.envs.levers.LEVERS` (one source for validation, presets,
    exports and ``--help``); a ``fixed`` value outside its range is an error, never clipped.

    | Num | Parameter                    | Range (natural units)  | Scale |
    |-----|------------------------------|------------------------|-------|
    | 0   | liquidation_fee_rate         | 0.1% .. 3% of notional | log   |
    | 1   | liquidation_fee_fund_share   | 0 .. 1                 | lin   |
    | 2   | mmr                          | 0.3% .. 10%            | log   |
    | 3   | imr_multiple (IMR = x MMR)   | 1.2 .. 3               | lin   |
    | 4   | trading_fee_fund_share       | 0 .. 1                 | lin   |
    | 5-8 | alloc_stable/yield/volatile/hedge | logits; weights = softmax(3 x logits) | |

    The fund is rebalanced toward the allocation when the weights move by more than
    ``rebalance_threshold`` (L1); rebalancing pays fees, option spreads and slippage. With
    ``allocation_minutes`` the allocation has a slower clock of its own: the fund moves only
    at decisions 0, k, 2k, ... of the episode (k = ``allocation_minutes`` /
    ``decision_minutes``); in between, the allocation logits are ignored. With
    ``allocation_turnover_frac`` each move shifts at most that share of the fund (half the L1
    distance between the weights held and asked for), along the straight line toward the
    allocation asked for; the next moves go on from there. A bucket left out of
    ``allocation_buckets`` weighs exactly 0 (the softmax runs over the buckets held); an
    uncontrolled logit is not enough, since at its start it keeps a share of the softmax.

    Puts are quoted at Black-Scholes plus a crash premium: the chance of a crash before expiry
    at the rate the fund's option market prices, ``put_crash_rate_per_year``. By default it is
    the world's own: the sampler's ``crash_prob`` per episode on training draws (255.5 a year
    with the defaults: the hedge is no free lunch where a policy learns) and a real market's
    rate on a named scenario (2 a year, an estimate; :mod:`fundgym.envs.fund.portfolio`).

    ## Observation Space

    A ``Box(-10, 10, (32,), float32)``, leading indicators first; values are clipped to
    [-10, 10].

    | Num   | Observation                                     | Scaling                 |
    |-------|-------------------------------------------------|-------------------------|
    | 0     | realised volatility, 1-hour EWMA                | annualised fraction     |
    | 1     | realised volatility, 1-day EWMA                 | annualised fraction     |
    | 2     | index return over the last decision             | percent                 |
    | 3     | book depth relative to normal                   | fraction                |
    | 4     | thinness: open interest / book depth per 1%     | log10                   |
    | 5     | oracle vs mark gap                              | percent                 |
    | 6     | funding rate per 8 h                            | per mille               |
    | 7     | open interest relative to the episode's start   | ratio                   |
    | 8     | long/short skew of open interest                | (L - S) / (L + S)       |
    | 9-11  | leverage p50, p90, p99 of open accounts         | leverage / 50           |
    | 12-14 | share of OI an adverse 1%, 2%, 5% move would liquidate (tiers included) | fraction |
    | 15    | fund coverage: fund value / open interest       | x 10                    |
    | 16-19 | fund composition: stable, yield, volatile, hedge | weights                |
    | 20    | liquidation volume, last decision               | % of initial OI         |
    | 21    | fund shortfall + uncovered loss, last decision  | per mille of initial OI |
    | 22-30 | the nine parameters in force                    | action units [-1, 1]    |
    | 31    | episode progress                                | fraction                |

    Thinness (4) is what makes a market manipulable and its liquidations costly: at 0 the
    whole open interest equals the book's depth within 1% of price (BTC on a major venue sits
    near -2; Mango's MNGO in October 2022 near +1.6, when +2,295% pushed through its oracle).

    ## Rewards

    Per decision, in basis points of the episode's initial open interest (see
    :mod:`fundgym.envs.rewards`): revenue (trading fees, the fund's liquidation-fee income, what the
    fund's buckets earned) minus the fund's cost of capital, minus ``solvency`` x (socialised
    and unrecovered losses + ``adl_weight`` x deleveraged notional), minus the cost of the
    margin traders lock, minus the fee revenue lost to demand that high margins and fees drive
    away, minus a small penalty on parameter moves, plus ``fund_pnl`` x what the fund's buckets
    earned (an extra weight on the allocation's PnL against holding stable assets, 0 by
    default), minus ``fund_shortfall`` x the bad debt the fund paid (its outgo beside the
    fee income in revenue, 0 by default). ``info["reward_components"]`` holds each term
    unweighted (``fund_pnl`` is also inside ``revenue``); ``info["cost"]`` the solvency loss
    alone (Safety-Gymnasium convention).

    ## Starting State

    A book of ``n_accounts`` slots, 60% holding positions drawn from the trader population
    (the calm market's steady state: arrivals per slot over exits; truncated Pareto sizes,
    lognormal order leverage capped at 1 / IMR, 90% cross-margined accounts carrying free
    collateral; docs/traders.md), opened at the scenario's initial price; the fund holds
    ``fund_to_oi_frac`` of open interest, all in the stable bucket; parameters start at their
    ``fixed`` values (defaults: dYdX-like, MMR 3%, IMR 5%, 1.5% fee).

    ## Episode End

    1. Termination: socialised and unrecovered losses plus the losses ADL imposed on
       counterparties (closed at bankruptcy worse than the mark) exceed ``insolvency_frac`` of
       the initial open interest (the exchange is insolvent; the same dollars under every ADL
       rule).
    2. Truncation: the scenario's horizon (or ``horizon_minutes``) is reached.

    ## Arguments

    ```python
    >>> import gymnasium as gym, fundgym
    >>> env = gym.make("fundgym/InsuranceFund-v0", scenario="oct_10_2025", n_accounts=1024)
    ```

    | Parameter              | Type        | Default      | Description                          |
    |------------------------|-------------|--------------|--------------------------------------|
    | scenario               | str         | "training"   | library name, YAML path or "training" |
    | sampler                | dict        | see sampler  | crash_prob 0.7, thin_prob 0.25       |
    | n_accounts             | int         | 1024         | account slots                        |
    | decision_minutes       | float       | 10           | minutes between actions              |
    | horizon_minutes        | float, None | None         | episode cap                          |
    | controlled             | tuple[str]  | all nine     | parameters the action sets           |
    | fixed                  | dict        | {}           | values of the others                 |
    | max_step               | float       | 0.2          | rate limit, action units per decision |
    | margin_notice_minutes  | float       | 30           | delay of margin increases            |
    | fund_to_oi_frac        | float       | 0.02         | initial fund / open interest         |
    | insolvency_frac        | float       | 0.05         | uncovered loss that ends the episode |
    | fallback               | str         | "adl"        | "adl" or "socialize"                 |
    | adl_policy             | str         | "bitmex"     | ADL rule (docs/adl.md)               |
    | liquidation_mode       | str         | "partial"    | venue engine (docs/liquidation.md)   |
    | margin_tiers           | str         | "none"       | "binance_btcusdt_2021": MMR brackets |
    | unrealised_pnl_haircut_frac | float  | 1            | unrealised profit not withdrawable   |
    | oi_cap_frac            | float       | 0 (off)      | OI cap / starting open interest      |
    | mark_cap_mult          | float       | 0 (off)      | mark cap / its 8-hour average        |
    | population_minutes     | float       | 5            | clock of arrivals, exits, volume     |
    | allocation_minutes     | float, None | None         | clock of allocation moves            |
    | allocation_turnover_frac | float, None | None       | share of the fund moved per move     |
    | allocation_buckets     | tuple[str]  | all four     | buckets the fund may hold            |
    | put_crash_rate_per_year | float, None | None       | crashes a year a put's quote prices  |
    | reward                 | dict        | see rewards  | reward weights                       |
    | config                 | str         | None         | a YAML file holding the above        |
    | render_mode            | str, None   | None         | "ansi", "rgb_array" (not config) |

    ``render_mode`` (Gymnasium's, declared in ``metadata["render_modes"]`` with
    ``render_fps``): with ``"ansi"``, ``render()`` returns one line of the state after the last
    reset or step (time, prices, fund, open interest, liquidations, the parameters in force);
    with ``"rgb_array"``, an ``(H, W, 3)`` ``uint8`` dashboard of the episode so far (index,
    mark and oracle; the fund; liquidations; the parameters), which ``RecordVideo`` records.
    Both are drawn by :mod:`fundgym.envs.render` from a :class:`~fundgym.envs.render.RenderFrame`
    the environment keeps after every reset and step; with ``None`` (the default) nothing is
    kept or drawn, so stepping costs nothing extra.

    ## Vectorized environment

    ``gymnasium.make_vec("fundgym/InsuranceFund-v0", num_envs=16,
    vectorization_mode="vector_entry_point")`` builds :class:`InsuranceFundVectorEnv`, which
    steps all exchanges as one array program and follows Gymnasium's vector conventions:
    ``autoreset_mode`` (next-step by default, as ``gymnasium.make_vec`` assumes; same-step for
    the stable-baselines3 adapter), ``reset(options={"reset_mask": mask})``, ``_key`` masks in
    ``infos``. Seeded ``s``, its exchange ``i`` equals this environment seeded ``s + i``, step
    for step, in either mode, as a ``SyncVectorEnv`` of these environments would return it.

    ## Version History

    * v0: initial version.
    * v0, fundgym 0.3.0 (Simulator v2): compiled tick over an explicit state; loss sharing
      ``profit_haircut`` by default (``RiskParams.socialization``); the trader population on
      per-exchange xoshiro256** streams (same distributions, new draws); observations 12-14
      measured with the tiered requirement; out-of-range ``fixed`` values and mis-typed
      arguments are errors. Outcomes per scenario: ``docs/simulator_v2.md``.
    * v0, fundgym 0.4.0: ``render_mode`` ``"ansi"`` and ``"rgb_array"``; the batched twin
      takes ``autoreset_mode`` (default next-step, was same-step), honours ``reset_mask`` and
      returns ``_key`` masks and same-step ``final_obs``/``final_info`` as Gymnasium
      documents; a non-finite raw observation is an error naming its column and exchange
      (it was shown as 0 or +-10); thinness (4) reads a book thinner than $1 per 1% as $1.
    * v0, after 0.4.0 (issue 15): ``liquidation_mode``, ``adl_policy``, ``waterfall``,
      ``vault_to_oi_frac`` and ``liquidator_capacity_mult`` settings; outside liquidators are
      paid, and take flow, whenever the fund's share of the liquidation fee is below 1; new
      ``info`` keys ``n_liquidations``,
      ``n_liquidations_below_bankruptcy``, ``adl_haircut_usd``, ``adl_overshoot_usd``,
      ``liquidator_absorbed_usd``, ``peak_tick_liquidation_volume_usd`` (the decision's
      largest tick) and the vault's ``vault_equity_usd``, ``vault_pnl_usd``,
      ``vault_drawdown_frac``, ``vault_inventory_usd``, ``vault_peak_inventory_usd``,
      ``vault_capital_usd``, ``vault_takeovers``, ``vault_takeover_usd``, ``vault_unwind_usd``.
    * v0, issue 16 (fund top-ups): ``fund_injection_frac`` and ``fund_injection_max`` settings
      (a venue's top-ups of an exhausted fund, off by default); ``info`` keys
      ``fund_injections`` and ``fund_injection_usd`` (the decision's top-ups and what they added).
    * v0, issue 16 (venue events): ``market_settled`` (1 once the scenario's settlement has
      closed the market, this decision or before; 0 before), ``settlement_price`` (the
      average index it settled at, in the decision it settled; 0 otherwise),
      ``floored_short_liquidation_usd`` and ``floored_fund_fee_income_usd`` (shorts bought
      back, and the fund's fee income, while the oracle sat at its floor above the mark:
      LUNA), ``attacker_withdrawn_usd`` and
      ``attacker_margin_usd`` (what the scenario's attacker withdrew against unrealised PnL
      this decision, and the margin it started with: Mango; 0 without an attacker).
    * v0, issue 16 (calibrated world): traders carry balance sheets (90% cross-margined with
      free collateral), arrivals are bounded by demand (60% of slots open in a calm market,
      not 80%), traders de-risk under stress; liquidations fill on a square-root book whose
      normal depth is the starting open interest over the scenario's ``oi_to_depth``. Every
      outcome moves: ``docs/calibration.md``, ``docs/traders.md``, ``docs/impact.md``.
    * v0, issue 17 (the vault's loss limit): ``vault_adl_loss_frac`` setting (``None``: the
      liquidation mode's own, ``hyperliquid``'s Liquidator deleveraged beyond a loss of 2% of
      its capital); ``info`` key ``vault_adl_usd`` (the vault's inventory deleveraged, part of
      ``adl_volume_usd``). ``hyperliquid``'s outcomes move: ``docs/liquidation.md``.
    * v0, issue 21 (what a put costs): ``put_crash_rate_per_year`` setting (``None``: the
      world's own). A named scenario's fund now buys puts at a real option market's price (2
      crashes a year, an estimate) where it paid the training sampler's 255.5 a year; training
      draws keep theirs, bit for bit. Only a fund that holds puts moves. ``info`` key
      ``fund_external_pnl_usd``: what the fund's allocation earned in the decision against
      holding stable assets (yield, the listed asset's moves, option marks and payoffs, less
      every cost of moving the fund; 0 for a fund in stable assets).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012  (Gymnasium declares it so)
        "render_modes": list(RENDER_MODES),
        "render_fps": RENDER_FPS,
    }

    def __init__(
        self, config: str | None = None, *, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        """See the class docstring for the arguments."""
        self.render_mode = _checked_render_mode(render_mode)
        self.config = make_config(config, **kwargs)
        self.core = FundControlCore(self.config, 1)
        self.action_space, self.observation_space = _spaces(self.core)
        self._needs_reset = True
        self._history = RenderHistory() if self.render_mode is not None else None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``seed`` seeds this and every following episode's stream."""
        super().reset(seed=seed)
        if seed is not None or self.core.sim is None:
            self.core.seed([seed])
        obs = self.core.reset(np.ones(1, dtype=bool))
        self._needs_reset = False
        assert self.core.sim is not None
        if self._history is not None:
            self._history.clear()
            self._history.append(self.core.frames(np.zeros(1, dtype=bool))[0])
        return obs[0].astype(np.float32), {"scenario": self.core.sim.scenarios[0].name}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One decision: apply the action, run ``decision_minutes`` of market."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step(), and after an episode ends")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        obs, reward, term, trunc, info = self.core.step(a[None, :])
        self._needs_reset = bool(term[0] or trunc[0])
        if self._history is not None:
            self._history.append(self.core.frames(term)[0])
        return (
            obs[0].astype(np.float32),
            float(reward[0]),
            bool(term[0]),
            bool(trunc[0]),
            _single_info(info, 0),
        )

    def render(self) -> Any:
        """The state after the last reset or step, drawn in ``render_mode``.

        Returns:
            ``"ansi"``: one line (str); ``"rgb_array"``: the episode's dashboard, an
            ``(H, W, 3)`` ``uint8`` array; no render mode: ``None``, with a warning.

        Raises:
            RuntimeError: Nothing to draw yet: ``reset()`` was never called.
        """
        if self._history is None:
            _warn_no_render_mode(self)
            return None
        return _draw(self.render_mode, self._history)


class InsuranceFundVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """``num_envs`` exchanges of :class:`InsuranceFundEnv` stepped as one array program.

    ## Description

    The same MDP as :class:`InsuranceFundEnv` (spaces, rewards, episode end), batched: one
    simulator holds every exchange and a decision runs all of them in one compiled call.
    Exchange ``i`` of a batch seeded ``s`` equals :class:`InsuranceFundEnv` seeded ``s + i``
    step for step, and returns what a ``gymnasium.vector.SyncVectorEnv`` of such environments
    would, bit for bit, in every autoreset mode (with one caveat, below).

    ## Autoreset

    ``autoreset_mode`` (a :class:`gymnasium.vector.AutoresetMode` or its value, declared in
    ``metadata["autoreset_mode"]``):

    * ``NEXT_STEP`` (default, what ``gymnasium.make_vec`` and Gymnasium's vector wrappers
      assume): the step where an episode ends returns its last observation, reward and flags;
      the next ``step()`` ignores that exchange's action and returns its new episode's first
      observation, reward 0 and both flags ``False``. The reset exchange does not move in that
      step: the compiled call advances every exchange, so its state, random streams and
      parameters are saved before the call and restored after it (nothing is saved when no
      reset is pending).
    * ``SAME_STEP`` (the stable-baselines3 adapter's): an exchange whose episode ends is reset
      within that step; the returned observation is its new episode's first, and the last one
      is in ``infos["final_obs"]`` (an object array, ``None`` elsewhere) with the step's info
      in ``infos["final_info"]`` (masks ``_final_obs``, ``_final_info``).
    * ``DISABLED``: nothing is reset; stepping an exchange whose episode ended is an error
      until ``reset(options={"reset_mask": mask})`` restarts it.

    ``reset(seed=..., options={"reset_mask": mask})`` (a ``(num_envs,)`` bool array) resets
    only the exchanges in ``mask`` (an int ``seed`` gives exchange ``i`` the seed ``seed + i``,
    a list one each; unseeded exchanges continue their episode streams); the others keep
    their state and observation. Under next-step autoreset a masked exchange's pending reset
    is the one this call performs.

    Exactness holds for every setting: each exchange runs the trader population on its own
    clock (every ``population_minutes`` of its episode), so an exchange that sits out a
    decision while its reset is pending resumes on the schedule it would have alone.

    ``threads`` spreads the exchanges of a decision's compiled call over that many threads
    (capped at numba's; ``None`` reads ``FUNDGYM_THREADS``, default 1): the same numbers bit
    for bit, faster when a core is free (a learner with torch on one thread leaves one).

    ## Infos

    ``infos`` hold one array per key (``params`` and ``reward_components`` as dicts of arrays),
    each with its ``_key`` boolean mask (nested dicts carry their own): ``True`` where the
    exchange reported the key. An exchange reset in a step reports its reset info
    (``scenario``) instead of the step's keys, whose entries are then 0, as
    ``SyncVectorEnv`` returns them. ``reset()`` returns ``scenario`` for the exchanges it reset.

    ## Rendering

    ``render_mode`` as for :class:`InsuranceFundEnv`, one history per exchange; ``render()``
    returns a tuple with one string or frame per exchange (``RecordVideo`` tiles them).

    ## Version History

    * v0, fundgym 0.4.0: ``autoreset_mode`` (default ``NEXT_STEP``; same-step before, and
      Gymnasium's vector wrappers refused it), ``reset_mask`` (ignored before), ``_key``
      masks, ``final_obs`` as an object array and ``final_info`` (``final_obs`` was one
      float32 array), ``scenario`` in reset infos, ``render_mode``. Same-step infos of an
      ended step now hold that step's ``mark_price`` and ``liquidation_volume_usd``; the reset
      that followed used to overwrite them with the new episode's (its price, 0).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012  (Gymnasium declares it so)
        "render_modes": list(RENDER_MODES),
        "render_fps": RENDER_FPS,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        config: str | None = None,
        *,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        """See :class:`InsuranceFundEnv` for the keyword arguments, the class for the others."""
        self.render_mode = _checked_render_mode(render_mode)
        self.autoreset_mode = checked_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.config = make_config(config, **kwargs)
        self.num_envs = num_envs
        self.core = FundControlCore(self.config, num_envs, threads)
        self.single_action_space, self.single_observation_space = _spaces(self.core)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self._started = False
        # Exchanges whose episode ended at the last step (next-step: reset at this one).
        self._ended = np.zeros(num_envs, dtype=bool)
        self._histories = (
            [RenderHistory() for _ in range(num_envs)] if self.render_mode is not None else None
        )

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every exchange, or those in ``options["reset_mask"]``.

        Args:
            seed: An int gives exchange ``i`` the seed ``seed + i``; a list one seed (or
                ``None``) per exchange; an exchange without a seed continues its stream.
            options: ``{"reset_mask": mask}``: reset only the exchanges where the
                ``(num_envs,)`` bool array is ``True``.

        Raises:
            ValueError: A malformed ``reset_mask`` or seed list, or a mask before the first
                full reset.
        """
        n = self.num_envs
        mask = self._reset_mask(options)
        if isinstance(seed, int | np.integer):
            seeds: list[int | None] = [int(seed) + i for i in range(n)]
        elif seed is None:
            seeds = [None] * n
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed must list one seed per exchange ({n}), got {len(seeds)}")
        if not self._started:
            if not mask.all():
                raise ValueError(
                    "options['reset_mask']: the first reset() starts every exchange; pass a "
                    "mask only once the environment has been reset"
                )
            self.core.seed(seeds)  # None: fresh OS entropy
        else:
            self.core.seed(seeds, mask & np.array([s is not None for s in seeds]))
        obs = self.core.reset(mask)
        self._started = True
        self._ended[mask] = False
        if self._histories is not None:
            self._record(mask, np.zeros(n, dtype=bool))
        return obs.astype(np.float32), self.reset_info(mask)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every exchange, resetting ended episodes as ``autoreset_mode`` says."""
        a = self._checked_actions(actions)
        mode = self.autoreset_mode
        if mode is AutoresetMode.SAME_STEP:
            obs32, reward, term, trunc, info, last = self._step_same(a)
            done = term | trunc
            if not done.any():
                return obs32, reward, term, trunc, _vector_info(info, ~done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for e in np.flatnonzero(done):
                final_obs[e] = last[e].copy()
            infos = {
                **_vector_info(info, ~done),
                "final_obs": final_obs,
                "_final_obs": done.copy(),
                "final_info": _vector_info(info, done),
                "_final_info": done.copy(),
                **self.reset_info(done),
            }
            return obs32, reward, term, trunc, infos
        frozen = None
        if self._ended.any():
            if mode is AutoresetMode.DISABLED:
                raise RuntimeError(
                    f"exchanges {np.flatnonzero(self._ended).tolist()} ended at the last step "
                    "and autoreset_mode is DISABLED: reset them first with "
                    "env.reset(options={'reset_mask': mask})"
                )
            frozen = self._ended.copy()  # next-step: these start again, and sit this one out
            self.core.start_episodes(frozen)
        obs, reward, term, trunc, info = self.core.step(a, frozen)
        done = term | trunc
        if self._histories is not None:
            self._record(np.ones(self.num_envs, dtype=bool), term)
        if frozen is not None:
            infos = {**_vector_info(info, ~frozen), **self.reset_info(frozen)}
        else:
            infos = _vector_info(info, np.ones(self.num_envs, dtype=bool))
        self._ended = done
        return obs.astype(np.float32), reward, term, trunc, infos

    def step_arrays(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], np.ndarray]:
        """A same-step autoreset step whose info is one plain array per key, without masks.

        For callers that read the step's values as arrays (the stable-baselines3 adapter):
        every exchange reports every step key, an ended one its ended step's, so Gymnasium's
        ``_key`` masks, ``final_info`` and the copies they take are left out. :meth:`step`
        returns the same values in Gymnasium's layout.

        Returns:
            ``(obs, rewards, terminations, truncations, info, last_obs)``: ``obs`` holds the
            new episode's first observation where an episode ended, ``last_obs`` (float32,
            ``(num_envs, obs_dim)``) every exchange's observation before those resets;
            :meth:`reset_info` gives the resets' info.

        Raises:
            RuntimeError: ``autoreset_mode`` is not ``SAME_STEP``, or no reset yet.
        """
        if self.autoreset_mode is not AutoresetMode.SAME_STEP:
            raise RuntimeError(
                f"step_arrays() resets ended exchanges within the step: make the environment "
                f"with autoreset_mode=SAME_STEP (it has {self.autoreset_mode})"
            )
        return self._step_same(self._checked_actions(actions))

    def _checked_actions(self, actions: np.ndarray) -> FloatArray:
        """``actions`` as float64 of shape exactly ``(num_envs, action_dim)``, after a reset."""
        return checked_actions(actions, self._started, self.num_envs, self.core.action_dim)

    def _step_same(
        self, a: FloatArray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], np.ndarray]:
        """One step under same-step autoreset: :meth:`step_arrays`'s return."""
        obs, reward, term, trunc, info = self.core.step(a)
        done = term | trunc
        last = obs.astype(np.float32)
        if self._histories is not None:
            self._record(np.ones(self.num_envs, dtype=bool), term)
        if not done.any():
            return last, reward, term, trunc, info, last
        fresh = self.core.restart(done)
        obs32 = np.where(done[:, None], fresh, obs).astype(np.float32)
        if self._histories is not None:
            self._record(done, np.zeros(self.num_envs, dtype=bool))
        return obs32, reward, term, trunc, info, last

    def render(self) -> tuple[Any, ...] | None:
        """Every exchange's state drawn in ``render_mode``, one entry per exchange.

        Returns:
            A tuple of strings (``"ansi"``) or ``(H, W, 3)`` ``uint8`` frames
            (``"rgb_array"``); ``None``, with a warning, without a render mode.

        Raises:
            RuntimeError: Nothing to draw yet: ``reset()`` was never called.
        """
        if self._histories is None:
            _warn_no_render_mode(self)
            return None
        return tuple(_draw(self.render_mode, h) for h in self._histories)

    def _record(self, rows: BoolArray, insolvent: BoolArray) -> None:
        """Append each exchange's frame in ``rows`` to its history (new episode: cleared)."""
        assert self._histories is not None
        frames = self.core.frames(insolvent)
        new = self.core.decision == 0
        for e in np.flatnonzero(rows):
            if new[e]:
                self._histories[e].clear()
            self._histories[e].append(frames[e])

    def _reset_mask(self, options: dict[str, Any] | None) -> BoolArray:
        """``options["reset_mask"]`` checked, or every exchange."""
        n = self.num_envs
        if not options or "reset_mask" not in options:
            return np.ones(n, dtype=bool)
        mask = options["reset_mask"]
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
            got = (
                f"dtype {mask.dtype}, shape {mask.shape}"
                if isinstance(mask, np.ndarray)
                else type(mask).__name__
            )
            raise ValueError(
                f"options['reset_mask'] must be a numpy bool array of shape ({n},), one entry "
                f"per exchange, got {got}"
            )
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one exchange, got none")
        return mask

    def reset_info(self, mask: BoolArray) -> dict[str, Any]:
        """The reset info of the exchanges in ``mask`` (their scenario), with its mask.

        What :meth:`reset` returns for them, and a same-step autoreset's top-level keys.
        """
        sim = self.core.sim
        assert sim is not None
        names = np.full(self.num_envs, None, dtype=object)
        for e in np.flatnonzero(mask):
            names[e] = sim.scenarios[e].name
        return {"scenario": names, "_scenario": mask.copy()}


def _checked_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if it is ``None`` or one of :data:`RENDER_MODES`."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(
            f"render_mode = {render_mode!r}: not one of {[None, *RENDER_MODES]} (no render "
            "mode draws on screen; 'rgb_array' frames can be shown or recorded)"
        )
    return render_mode


def _vector_info(info: dict[str, Any], mask: BoolArray) -> dict[str, Any]:
    """``info`` (one array per key) with Gymnasium's ``_key`` masks, nested dicts included.

    ``mask`` marks the exchanges that report the keys; entries outside it are set to 0, as
    ``SyncVectorEnv`` fills them (when every exchange reports, the arrays are passed as is),
    and when none does, no key is there.
    """
    every = bool(mask.all())
    if not every and not mask.any():
        return {}

    def masked(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out[key] = masked(value)
            else:
                out[key] = value if every else np.where(mask, value, 0.0)
            out[f"_{key}"] = mask.copy()
        return out

    return masked(info)


def _warn_no_render_mode(env: object) -> None:
    gym.logger.warn(
        f"{type(env).__name__}.render() without a render_mode: nothing is recorded; make the "
        f"environment with render_mode in {list(RENDER_MODES)}"
    )


def _draw(render_mode: str | None, history: RenderHistory) -> Any:
    """The last frame of ``history`` as a line (``"ansi"``), or the history as an image."""
    if len(history) == 0:
        raise RuntimeError("call reset() before render(): there is nothing to draw yet")
    if render_mode == "ansi":
        return render_ansi(history.frames[-1])
    return render_rgb(history)
