"""``fundgym/MarketsInsuranceFund-v0``: a risk desk's levers over an exchange listing many markets.

One exchange per environment (:class:`MarketsInsuranceFundEnv`), or ``num_envs`` of them stepped
together (:class:`MarketsInsuranceFundVectorEnv`), on
:class:`~fundgym.envs.markets_simulator.MarketsSimulator`: the exchange-wide levers plus one
margin multiple per market, observed through an exchange block, a cross-market stress summary
and one block per market. The spaces are flat ``Box``es with the layouts
:meth:`MarketsInsuranceFundEnv.action_names` and :meth:`MarketsInsuranceFundEnv.observation_names`
give, so any Gymnasium or SB3 agent takes them. Both faces run one decision,
:class:`~fundgym.envs.markets_core.MarketsControlCore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from fundgym.envs.markets_core import (
    ALLOCATION_LEVERS,
    EXCHANGE_LEVERS,
    EXCHANGE_OBS,
    MARKET_OBS,
    OBS_CLIP,
    PER_MARKET_LEVERS,
    MarketsControlCore,
)
from fundgym.envs.markets_simulator import MarketsSimulator
from fundgym.envs.scenarios import Scenario, load_scenario
from fundgym.envs.vector import checked_actions, checked_autoreset_mode

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

__all__ = [
    "ALLOCATION_LEVERS",
    "EXCHANGE_LEVERS",
    "EXCHANGE_OBS",
    "MARKET_OBS",
    "PER_MARKET_LEVERS",
    "MarketsInsuranceFundEnv",
    "MarketsInsuranceFundVectorEnv",
    "first_episode_seed",
]

#: The largest seed an episode draws (the one-exchange env's, kept for its episodes).
_EPISODE_SEED_HIGH = 2**31 - 1


def draw_episode_seed(rng: np.random.Generator) -> int:
    """An episode's seed from an exchange's generator: its paths, book and drawn day follow."""
    return int(rng.integers(0, _EPISODE_SEED_HIGH))


def first_episode_seed(seed: int) -> int:
    """The episode seed :class:`MarketsInsuranceFundEnv` draws at ``reset(seed=seed)``.

    Its paths, book and (with a ``sampler``) its day follow from it: a batch whose exchanges
    all reset on it plays that episode in each of them (scoring several policies at once).
    """
    return draw_episode_seed(seeding.np_random(int(seed))[0])


class _MarketsLayouts:
    """What both faces of the multi-market env read off their core: simulator and layouts."""

    core: MarketsControlCore

    @property
    def sim(self) -> MarketsSimulator:
        """The simulator (row ``i`` of its arrays: exchange ``i``; one exchange: row 0)."""
        return self.core.sim

    def default_action(self) -> np.ndarray[Any, Any]:
        """One exchange's action holding every lever at its default: the scenario as written.

        The static baseline a trained multi-market policy is scored against
        (``fundgym markets --run``); each haircut's default is the scenario's for its asset.
        """
        return self.core.default_positions.copy()

    def action_names(self) -> tuple[str, ...]:
        """Each action coordinate's lever, ``name`` or ``name[MARKET]``, in order."""
        return self.core.action_names()

    def observation_names(self) -> tuple[str, ...]:
        """Each observation coordinate's name, ``name`` or ``name[MARKET]``, in order."""
        return self.core.observation_names()


class MarketsInsuranceFundEnv(_MarketsLayouts, gym.Env[np.ndarray[Any, Any], np.ndarray[Any, Any]]):
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
    markets"), ``dead_band`` (a lever whose target lies within ``dead_band`` action units of
    its position holds where it is, in [0, 2); 0, the default: none. A risk desk does not
    move a margin for a small difference, and the band keeps a policy's small jitter from
    churning the levers and the fund's allocation) and ``sampler`` (``None``, the default:
    every episode is the scenario as
    written, on its seed; a :class:`~fundgym.envs.market.sampler.MarketsSamplerSettings`:
    each episode a new day around the scenario's markets, drawn from the episode's seed by
    :func:`~fundgym.envs.market.sampler.sample_markets_scenario`, the multi-market training
    distribution). ``put_crash_rate_per_year`` (``None``, the default: the world's own, the
    sampler's ``crash_prob`` per episode for drawn days and a real market's rate, an estimate of
    2 a year, for the scenario as written; :func:`~fundgym.envs.fund.portfolio.
    world_put_crash_rate_per_year`) is the crash rate the shared fund's option market prices
    into a put's quote.

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
      only); ``max_step`` (default 2: as before); the batched form,
      :class:`MarketsInsuranceFundVectorEnv` (``gym.make_vec``'s ``vector_entry_point``), with
      this env's numbers unchanged, bit for bit; ``sampler`` (default ``None``: as before);
      ``dead_band`` (default 0: as before); ``put_crash_rate_per_year`` (2026-12-03: a
      scenario as written now quotes puts at a real market's rate, 2 crashes a year, where
      before every fund paid the training sampler's 255.5; drawn days keep theirs).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(self, scenario: str | Scenario = "alt_contagion", **kwargs: Any) -> None:
        """One exchange on ``scenario``; ``kwargs`` as "Arguments" above lists them.

        :class:`~fundgym.envs.markets_core.MarketsControlCore` takes them (their one home, with
        their defaults and checks).

        Raises:
            ValueError: An argument out of its range, named.
        """
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.core = MarketsControlCore(sc, 1, **kwargs)
        core = self.core
        self.scenario = sc
        self.n_markets = core.n_markets
        self.n_assets = core.n_assets  # collateral assets: one haircut each
        self.ticks_per_decision = core.ticks_per_decision
        self.decision_minutes = core.decision_minutes
        self.weights = core.weights
        self.exchange_levers = core.exchange_levers
        self.segment_levers = core.segment_levers
        self.levers = core.levers
        self.action_space = spaces.Box(-1.0, 1.0, (core.action_dim,), np.float32)
        self.observation_space = spaces.Box(-OBS_CLIP, OBS_CLIP, (core.obs_dim,), np.float32)

    @property
    def positions(self) -> FloatArray:
        """The levers' positions in force, ``(action_dim,)``."""
        out: FloatArray = self.core.positions[0]
        return out

    @property
    def uncovered_usd(self) -> float:
        """Losses no fund covered this episode (what ends it past ``insolvency_frac``)."""
        return float(self.core.uncovered_usd[0])

    @property
    def _default_positions(self) -> FloatArray:
        return self.core.default_positions

    @property
    def _oi0(self) -> float:
        return float(self.core.oi0[0])

    @property
    def _pots0(self) -> FloatArray:
        out: FloatArray = self.core.pots0[0]
        return out

    # ---- Gymnasium -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        """A fresh exchange: new paths and book (seeded by ``seed`` or the env's generator)."""
        super().reset(seed=seed)
        episode_seed = draw_episode_seed(self.np_random)
        obs = self.core.reset([episode_seed])
        return obs[0], {"seed": episode_seed}

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        """Set the levers, run one decision's ticks, and score them."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} ({len(self.exchange_levers)} "
                "exchange levers, then each per-market lever for every market, then a haircut "
                f"per collateral asset: env.action_names()), got {a.shape}"
            )
        obs, reward, terminated, truncated, infos = self.core.step(a[None, :])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), infos[0]

    def lever_values(self) -> dict[str, Any]:
        """The levers in force in natural units (per-market ones as ``(M,)`` arrays)."""
        return self.core.lever_values(0)


class MarketsInsuranceFundVectorEnv(_MarketsLayouts, VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """``num_envs`` exchanges of :class:`MarketsInsuranceFundEnv` stepped as one batch.

    ## Description

    The same MDP as :class:`MarketsInsuranceFundEnv` (its spaces, levers, reward and
    ``info``), for ``num_envs`` exchanges of one
    :class:`~fundgym.envs.markets_simulator.MarketsSimulator`: a tick's Python runs once for
    the batch and its per-exchange work is compiled, so a decision costs several times less
    per exchange than one environment per exchange (``docs/benchmarks.md``). Exchange ``i``
    of a batch seeded ``s`` equals :class:`MarketsInsuranceFundEnv` seeded ``s + i`` step for
    step, bit for bit, while every exchange of the batch is in its episode (below).

    ## One clock

    The exchanges share the simulator's clock, so their episodes start and end together:
    every exchange draws its next episode (its own seed, from its own generator, as the
    one-exchange env draws it) when the batch's episode ends. That is at the scenario's
    horizon (every exchange truncated) or at the decision where some exchange is insolvent
    (``insolvency_frac``): it terminates and the others are **truncated** there, a time limit
    like any other (a learner bootstraps their value from the last observation). Exchanges
    that would have run on alone differ from their one-exchange twins from that decision on.

    ## Autoreset

    ``autoreset_mode`` (a :class:`gymnasium.vector.AutoresetMode` or its value):

    * ``NEXT_STEP`` (default, Gymnasium's): the step where the episode ends returns its last
      observations, rewards and flags; the next ``step()`` ignores the actions and returns the
      new episode's first observations, rewards 0 and flags ``False``.
    * ``SAME_STEP`` (the stable-baselines3 adapter's): the episode restarts within the step
      that ended it; the returned observations are the new episode's, the last ones are in
      ``infos["final_obs"]`` (an object array) with the step's info in
      ``infos["final_info"]``.
    * ``DISABLED``: stepping after the episode ended is an error until ``reset()``.

    ``reset(options={"reset_mask": mask})`` must select every exchange (one clock).

    ## Infos

    One array per key of the one-exchange env's ``info`` (``reward_components`` and ``levers``
    as dicts of arrays, per-market values ``(num_envs, M)``), each with its ``_key`` mask, as
    ``gymnasium.vector.SyncVectorEnv`` returns them; ``reset()`` returns each exchange's
    episode ``seed``.

    ## Arguments

    ``num_envs`` (exchanges), ``scenario`` and the keyword arguments of
    :class:`MarketsInsuranceFundEnv`, and ``autoreset_mode``.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012  (Gymnasium declares it so)
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        scenario: str | Scenario = "alt_contagion",
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        self.autoreset_mode = checked_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.core = MarketsControlCore(sc, num_envs, **kwargs)
        self.num_envs = num_envs
        self.scenario = sc
        self.single_action_space = spaces.Box(-1.0, 1.0, (self.core.action_dim,), np.float32)
        self.single_observation_space = spaces.Box(
            -OBS_CLIP, OBS_CLIP, (self.core.obs_dim,), np.float32
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self._rngs: list[np.random.Generator] = [
            seeding.np_random(None)[0] for _ in range(num_envs)
        ]
        self._started = False
        self._ended = False  # the batch's episode ended at the last step (next-step reset)
        #: Each exchange's episode seed (its generator's draw at the last restart).
        self.episode_seeds = np.zeros(num_envs, dtype=np.int64)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every exchange's next episode.

        Args:
            seed: An int gives exchange ``i`` the seed ``seed + i``; a list one seed (or
                ``None``) per exchange; an exchange without a seed continues its stream (the
                first reset without one: fresh entropy).
            options: ``{"reset_mask": mask}`` is accepted only when it selects every exchange
                (their episodes share one clock).

        Raises:
            ValueError: A seed list of the wrong length, or a mask that leaves an exchange out.
        """
        n = self.num_envs
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.all():
                raise ValueError(
                    "options['reset_mask']: the exchanges of MarketsInsuranceFundVectorEnv share "
                    f"one clock and reset together; pass every exchange ({n} x True) or no mask, "
                    f"got {options['reset_mask']!r}"
                )
        seeds: list[int | None]
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, Sequence):
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed must list one seed per exchange ({n}), got {len(seeds)}")
        else:
            seeds = [int(seed) + i for i in range(n)]
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i] = seeding.np_random(int(s))[0]
        obs, info = self._restart()
        self._started = True
        return obs, info

    def _restart(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Every exchange's next episode from its own stream: observations and reset info."""
        seeds = [draw_episode_seed(g) for g in self._rngs]
        obs = self.core.reset(seeds)
        self._ended = False
        self.episode_seeds = np.array(seeds, dtype=np.int64)
        every = np.ones(self.num_envs, dtype=bool)
        return obs, {"seed": self.episode_seeds.copy(), "_seed": every}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every exchange; a finished episode restarts as ``autoreset_mode`` says."""
        a = self._checked_actions(actions)
        n = self.num_envs
        if self._ended:
            if self.autoreset_mode is AutoresetMode.DISABLED:
                raise RuntimeError(
                    "the episode ended at the last step and autoreset_mode is DISABLED: "
                    "call reset() first"
                )
            if self.autoreset_mode is AutoresetMode.NEXT_STEP:
                obs, info = self._restart()
                flags = np.zeros(n, dtype=bool)
                return obs, np.zeros(n), flags, flags.copy(), info
        obs, reward, term, trunc, infos = self._step_batch(a)
        info = stack_infos(infos)
        if self.autoreset_mode is AutoresetMode.SAME_STEP and self._ended:
            final = np.empty(n, dtype=object)
            for e in range(n):
                final[e] = obs[e].copy()
            obs, reset_info = self._restart()
            every = np.ones(n, dtype=bool)
            info = {
                **info,
                "final_obs": final,
                "_final_obs": every,
                "final_info": stack_infos(infos),
                "_final_info": every.copy(),
                **reset_info,
            }
        return obs, reward, term, trunc, info

    def step_list(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], np.ndarray]:
        """A same-step autoreset step with one info dict per exchange (the adapters' form).

        Returns:
            ``(obs, rewards, terminations, truncations, infos, last_obs)``: ``obs`` holds the
            new episode's first observations when the episode ended, ``last_obs`` every
            exchange's observation before that reset; ``infos[i]`` is exchange ``i``'s
            one-exchange ``info``.

        Raises:
            RuntimeError: ``autoreset_mode`` is not ``SAME_STEP``, or no reset yet.
        """
        if self.autoreset_mode is not AutoresetMode.SAME_STEP:
            raise RuntimeError(
                "step_list() restarts the episode within the step: make the environment with "
                f"autoreset_mode=SAME_STEP (it has {self.autoreset_mode})"
            )
        obs, reward, term, trunc, infos = self._step_batch(self._checked_actions(actions))
        last = obs
        if self._ended:
            obs, _ = self._restart()
        return obs, reward, term, trunc, infos, last

    def _step_batch(
        self, a: FloatArray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One decision of every exchange; one insolvent exchange ends the batch's episode."""
        obs, reward, term, trunc, infos = self.core.step(a)
        if term.any():  # one clock: the others' episodes end here too, as a time limit
            trunc = ~term
        self._ended = bool((term | trunc).any())
        return obs, reward, term, trunc, infos

    def _checked_actions(self, actions: np.ndarray) -> FloatArray:
        """``actions`` as float64 of shape exactly ``(num_envs, action_dim)``, after a reset."""
        return checked_actions(actions, self._started, self.num_envs, self.core.action_dim)


def stack_infos(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One info dict per exchange as Gymnasium's vector info: an array per key, ``_key`` masks.

    Every exchange reports every key (a batch steps together), so each mask is all ``True``;
    nested dicts (``reward_components``, ``levers``) become dicts of arrays.
    """
    every = np.ones(len(infos), dtype=bool)
    out: dict[str, Any] = {}
    for key, first in infos[0].items():
        values = [info[key] for info in infos]
        out[key] = (
            stack_infos(values)
            if isinstance(first, dict)
            else np.stack([np.asarray(v) for v in values])
        )
        out[f"_{key}"] = every.copy()
    return out
