"""Calibration: named outcome checks of the simulated world against what crashes did to venues.

A scenario's *path* is calibrated in its file (drawdown, time to trough, depth collapse); this
module checks *outcomes*, what a crash did to the exchange, against the facts of
``shared/reference/outcomes.md``. ``fundgym calibrate`` runs it.

**A check** (:class:`Check`) is one line of the table: a policy spec on one library scenario,
what is measured, a :class:`Target` (or none: an *info* line, reported without a pass mark),
the real-world line it is held to, and a function that computes the measured value from the
episodes (:class:`EpisodeOutcome`). :data:`CHECKS` is the registry, the one home of every
line; a new line (the calibrated-world issue's population and book checks) is a new entry,
and nothing else changes.

**Episodes** run through the machinery ``fundgym evaluate`` uses, so a preset means here what
it means there: the evaluation environment (:func:`fundgym.agents.rollout.base_env`, the
default training config's settings), fitted to the policy and scenario by
:func:`~fundgym.agents.rollout.job_env` (a venue preset starts at its levers, margin tiers and
fund size), the policy built by :func:`~fundgym.agents.policies.build_policy` and stepped by
:func:`~fundgym.agents.rollout.first_episodes`; episode ``i`` is seeded ``seed + i``. Checks
that share a policy and a scenario share their episodes. Every numeric ``info`` array of every
decision is kept (:attr:`EpisodeOutcome.steps`), so a check may read any quantity the
environment reports.

**Outputs** (:func:`write_calibration`): ``calibration.json`` (every line with its measured
value, target, pass mark, per-episode values and source), ``calibration.md`` (the table and
the real-world lines) and ``config.yaml`` (the run's resolved settings), built under a
temporary name and renamed into place, as an evaluation is.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents import __version__
from fundgym.agents.evaluate.markets_policy import market_risk
from fundgym.agents.outputs import (
    directory_in_place,
    jsonable,
    remove_stale_temps,
    write_text_atomic,
)
from fundgym.agents.policies import PRESETS, PolicySpec, build_policy, parse_spec
from fundgym.agents.rollout import (
    CRASHES,
    EvaluateError,
    FloatArray,
    base_env,
    first_episodes,
    job_env,
    vault_capital_usd,
)
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.markets_simulator import MarketsSimulator
from fundgym.envs.scenarios import Scenario, load_scenario, simulated_today

#: ``calibration.json``'s ``kind``: how a calibration directory is recognised.
KIND = "fundgym.calibration"
#: The files every calibration directory holds.
CALIBRATION_FILES = ("calibration.json", "calibration.md", "config.yaml")


class CalibrationError(EvaluateError):
    """A calibration that cannot run as asked; the message lists what is allowed."""


# ------------------------------------------------------------------ episodes ----


@dataclass(frozen=True)
class EpisodeOutcome:
    """What the environment reported at each decision of one episode, for checks to read.

    Attributes:
        policy: The policy spec the episode ran.
        scenario: The library scenario.
        episode: Index of the episode in its batch.
        seed: Seed the episode was reset with (``seed + episode``).
        initial_open_interest_usd: Open interest as the episode started.
        initial_fund_usd: The fund's value as the episode started.
        initial_vault_usd: The backstop vault's capital as the episode started (0: none).
        steps: Every numeric ``info`` key of the environment -> one value per decision of
            this episode (flows summed over the decision's ticks, levels at its end), e.g.
            ``fund_balance_usd``, ``n_liquidations``, ``n_liquidations_below_bankruptcy``.
        terminated: Whether the episode ended on insolvency before its horizon.
        counterfactual: The same episode (policy, seed) on the scenario as a check's
            counterfactual changes it (:data:`COUNTERFACTUALS`), for the checks that compare
            the two; ``None`` otherwise.
    """

    policy: str
    scenario: str
    episode: int
    seed: int
    initial_open_interest_usd: float
    initial_fund_usd: float
    initial_vault_usd: float
    steps: Mapping[str, FloatArray]
    terminated: bool
    counterfactual: EpisodeOutcome | None = None

    def total(self, key: str) -> float:
        """The sum of ``steps[key]`` over the episode (correctly rounded)."""
        return math.fsum(np.asarray(self.steps[key], dtype=np.float64).tolist())


def record_episodes(
    spec: PolicySpec,
    env_kw: Mapping[str, Any],
    episodes: int,
    seed: int,
    scenario_name: str | None = None,
) -> list[EpisodeOutcome]:
    """Run ``episodes`` episodes of ``spec`` in one batched environment (``env_kw``).

    Episode ``i`` is seeded ``seed + i`` and runs to its scenario's horizon, or to insolvency;
    its decisions are the ones :func:`~fundgym.agents.rollout.first_episodes` gives it.
    ``scenario_name`` is what the outcomes call the scenario (default: ``env_kw``'s, which
    for a counterfactual is the path of its temporary file).
    """
    env = InsuranceFundVectorEnv(num_envs=episodes, **env_kw)
    runner = build_policy(spec, tuple(env.config.controlled))
    obs, _ = env.reset(seed=seed)
    oi0 = env.core.initial_open_interest_usd
    fund0 = env.core.fund_value_usd().copy()
    rows: dict[str, list[FloatArray]] = {}
    end = np.full(episodes, -1)
    terminated = np.zeros(episodes, dtype=bool)
    vault0 = np.zeros(episodes)
    for step in first_episodes(env, runner, obs):
        if step.t == 0:
            vault0 = vault_capital_usd(step.info)
        for key, value in step.info.items():
            if not isinstance(value, dict):
                rows.setdefault(key, []).append(np.array(value, dtype=np.float64))
        end[step.done] = step.t
        terminated |= step.terminated
    stacked = {k: np.stack(v) for k, v in rows.items()}
    return [
        EpisodeOutcome(
            policy=spec.name,
            scenario=scenario_name or str(env_kw["scenario"]),
            episode=i,
            seed=seed + i,
            initial_open_interest_usd=float(oi0[i]),
            initial_fund_usd=float(fund0[i]),
            initial_vault_usd=float(vault0[i]),
            steps={k: v[: end[i] + 1, i].copy() for k, v in stacked.items()},
            terminated=bool(terminated[i]),
        )
        for i in range(episodes)
    ]


#: What a multi-market episode reports per tick, as :attr:`EpisodeOutcome.steps` keys: the
#: shared fund's value (or its segments' sum) and the tick's events.
MARKET_STEP_EVENTS: tuple[str, ...] = (
    "n_liquidations",
    "n_liquidations_below_bankruptcy",
    "liquidation_volume_usd",
    "adl_volume_usd",
    "shortfall_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "vault_adl_usd",
)


def record_market_episodes(
    policy: str,
    scenario_name: str,
    episodes: int,
    seed: int,
    n_accounts: int,
    **simulator_kw: Any,
) -> list[EpisodeOutcome]:
    """Run ``episodes`` episodes of a multi-market scenario on the multi-market simulator.

    :class:`~fundgym.envs.markets_simulator.MarketsSimulator` with the policy's levers, ADL
    rule, tiers and fund size (:func:`~fundgym.agents.evaluate.markets_policy.market_risk`),
    episode ``i`` seeded ``seed + i``, to the scenario's horizon (no insolvency end across
    markets). ``steps`` are per tick: ``fund_balance_usd`` (after the tick), the collateral
    seized and its depeg loss, the vault's PnL (``vault_pnl_usd``, its equity less its
    capital), and :data:`MARKET_STEP_EVENTS`. ``simulator_kw`` go to the
    simulator (``collateral_price``, ``fund_mode``).
    """
    spec = market_risk(policy)
    sim = MarketsSimulator(
        load_scenario(scenario_name),
        spec.risk,
        n_envs=episodes,
        n_accounts=n_accounts,
        fund_to_oi_frac=0.02 if spec.fund_to_oi_frac is None else spec.fund_to_oi_frac,
        vault_to_oi_frac=spec.vault_to_oi_frac,
        vault_adl_loss_frac=spec.vault_adl_loss_frac,
        fund_injection_frac=spec.fund_injection_frac,
        fund_injection_max=spec.fund_injection_max,
        seed=seed,
        **simulator_kw,
    )
    res = sim.run()
    fund = res.fund_usd.sum(axis=2)
    steps_all = {name: res.event(name) for name in MARKET_STEP_EVENTS}
    steps_all["fund_balance_usd"] = fund
    steps_all["collateral_seized_usd"] = res.collateral_seized_usd
    steps_all["collateral_depeg_loss_usd"] = res.collateral_depeg_loss_usd
    steps_all["vault_pnl_usd"] = res.vault_equity_usd - res.vault_capital_usd[None, :]
    return [
        EpisodeOutcome(
            policy=policy,
            scenario=scenario_name,
            episode=i,
            seed=seed + i,
            initial_open_interest_usd=float(res.initial_open_interest_usd[i].sum()),
            initial_fund_usd=float(res.initial_fund_usd[i].sum()),
            initial_vault_usd=float(res.vault_capital_usd[i]),
            steps={k: np.asarray(v[:, i], dtype=np.float64).copy() for k, v in steps_all.items()},
            terminated=False,
        )
        for i in range(episodes)
    ]


# ------------------------------------------------------------------ checks ----


@dataclass(frozen=True)
class Target:
    """The range a measured value must fall in to pass: ``low <= value <= high``.

    Attributes:
        low: The lowest passing value (``None``: no lower bound).
        high: The highest passing value (``None``: no upper bound).
    """

    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError("a Target needs low, high or both; an info line has no Target")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Target low {self.low} is above high {self.high}")

    def passes(self, value: float) -> bool:
        """Whether ``value`` is inside the range (a value that is not a number never is)."""
        if math.isnan(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def text(self, percent: bool) -> str:
        """``<= 2%``, ``>= 0.5``, ``4% to 18%``: the range as the table prints it."""

        def fmt(x: float) -> str:
            return f"{100.0 * x:g}%" if percent else f"{x:g}"

        if self.low is None:
            return f"<= {fmt(self.high)}" if self.high is not None else ""
        if self.high is None:
            return f">= {fmt(self.low)}"
        return f"{fmt(self.low)} to {fmt(self.high)}"


@dataclass(frozen=True)
class Measurement:
    """A check's measured value over its episodes.

    Attributes:
        value: The value the target is held to (NaN: nothing to measure, which never passes).
        per_episode: The same quantity episode by episode (for the spread).
        detail: One line on how it was computed (counts, the pooling).
        missing: Why there is nothing to measure, when ``value`` is NaN for a reason the
            table should say (``"no fund"``: printed ``n/a (no fund)``).
    """

    value: float
    per_episode: tuple[float, ...]
    detail: str
    missing: str = ""


#: A check's measure: the episodes of its policy on its scenario -> the measured value.
Measure = Callable[[Sequence[EpisodeOutcome]], Measurement]


@dataclass(frozen=True)
class Check:
    """One line of the calibration table.

    Attributes:
        name: Unique name (``--check NAME``).
        scenario: The library scenario it runs on.
        policy: The policy spec it runs (a venue preset, usually).
        measures: What is measured, in one line.
        target: The passing range; ``None`` for an info line (reported, no pass mark).
        source: The real-world line it is held to (``outcomes.md``, with the source numbers).
        measure: Computes the measured value from the episodes.
        percent: Print the value and target as percentages.
        counterfactual: A key of :data:`COUNTERFACTUALS`: the episodes are also run, same
            policy and seeds, on the scenario that change makes, and each outcome carries
            its twin (:attr:`EpisodeOutcome.counterfactual`); ``None``: no twin.
        env_overrides: Environment settings the line runs under beyond the policy's own, as
            ``(name, value)`` pairs of :class:`~fundgym.envs.config.EnvConfig` fields (a
            venue rule no preset carries, e.g. Mango's unrealised PnL as collateral).
    """

    name: str
    scenario: str
    policy: str
    measures: str
    target: Target | None
    source: str
    measure: Measure
    percent: bool = True
    counterfactual: str | None = None
    env_overrides: tuple[tuple[str, float], ...] = ()

    def format(self, value: float, missing: str = "") -> str:
        """The measured value as the table prints it (``n/a``, or ``n/a (missing)``, if NaN)."""
        if math.isnan(value):
            return f"n/a ({missing})" if missing else "n/a"
        return f"{100.0 * value:.2f}%" if self.percent else f"{value:.4g}"


def below_bankruptcy_share(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The share of liquidation orders whose fill landed past the account's bankruptcy price.

    Pooled over the episodes: ``sum(n_liquidations_below_bankruptcy) / sum(n_liquidations)``,
    so every liquidation weighs the same whichever episode it fell in (Hyperliquid's 302 of
    63,637 is such a count). NaN when no liquidation happened.
    """
    share, n_below, n_total = _pooled_share(
        episodes, "n_liquidations_below_bankruptcy", "n_liquidations"
    )
    detail = f"{n_below:,.0f} of {n_total:,.0f} liquidation orders over {len(episodes)} episodes"
    return dataclasses.replace(share, detail=detail)


def _pooled_share(
    episodes: Sequence[EpisodeOutcome], part: str, whole: str
) -> tuple[Measurement, float, float]:
    """``sum(part) / sum(whole)`` over the episodes' steps, and the two sums.

    Pooled, so every unit weighs the same whichever episode it fell in; the per-episode
    values are each episode's own ratio. NaN where ``whole`` sums to nothing.
    """
    parts = [e.total(part) for e in episodes]
    wholes = [e.total(whole) for e in episodes]
    p, w = math.fsum(parts), math.fsum(wholes)
    share = Measurement(
        value=p / w if w > 0 else math.nan,
        per_episode=tuple(a / b if b > 0 else math.nan for a, b in zip(parts, wholes, strict=True)),
        detail="",
    )
    return share, p, w


def fund_drawdown_from_start_frac(initial_usd: float, path_usd: FloatArray) -> float:
    """``1 - min(fund) / starting fund``: how far the fund fell below where it started.

    The start counts as a point of the path, so a fund that only grew has drawn down 0; a
    fund emptied has drawn down 1. Unlike the evaluation's peak-to-trough
    ``fund_max_drawdown_frac``, fee income earned before the fall does not raise the
    reference: the venues' figures (BitMEX 35,508 -> 33,881 BTC, -4.6%) are from a starting
    balance. NaN for a fund that started at 0 (a venue without one: nothing to fall from).
    """
    if not initial_usd > 0.0:
        return math.nan
    low = min(initial_usd, float(np.min(path_usd))) if len(path_usd) else initial_usd
    return 1.0 - low / initial_usd


def fund_drawdown(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The mean over episodes of :func:`fund_drawdown_from_start_frac` (decision by decision).

    Episodes whose fund started at 0 have no drawdown to measure and are left out of the mean
    (their per-episode value is NaN); when every episode's did (Hyperliquid, whose backstop is
    its vault), the line is NaN with the reason ``no fund``, printed ``n/a (no fund)``.
    """
    values = [
        fund_drawdown_from_start_frac(e.initial_fund_usd, e.steps["fund_balance_usd"])
        for e in episodes
    ]
    return _mean_of_episodes(values, "no fund", "episodes started with a fund of 0")


def _over_starting_oi(
    episodes: Sequence[EpisodeOutcome], value_usd: Callable[[EpisodeOutcome], float]
) -> Measurement:
    """The mean over episodes of ``value_usd(episode)`` / the episode's starting open interest."""
    values = [
        value_usd(e) / oi if (oi := e.initial_open_interest_usd) > 0.0 else math.nan
        for e in episodes
    ]
    return _mean_of_episodes(values, "no open interest", "episodes started with no positions")


def liquidated_share_of_oi(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """Liquidated notional over the episode / open interest at its start, mean over episodes.

    The notional is ``liquidation_volume_usd`` summed over the decisions (book fills and
    deleveraged closes); the scenario's horizon is the window (the real figures are 24 h).
    """
    return _over_starting_oi(episodes, lambda e: e.total("liquidation_volume_usd"))


def peak_tick_liquidated_share_of_oi(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The largest single tick's liquidated notional / starting open interest, mean over episodes.

    Each decision reports its largest tick (``peak_tick_liquidation_volume_usd``); the
    episode's peak is the largest of those. A tick is a minute in every shipped scenario.
    """
    return _over_starting_oi(
        episodes, lambda e: float(np.max(e.steps["peak_tick_liquidation_volume_usd"]))
    )


def open_interest_end_over_start(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """Open interest at the episode's last decision / at its start, mean over episodes."""
    return _over_starting_oi(episodes, lambda e: float(e.steps["open_interest_usd"][-1]))


def _mean_of_episodes(values: Sequence[float], missing: str, why: str) -> Measurement:
    """The mean of the episodes' values that are numbers, with the spread in the detail.

    NaN values (an episode with nothing to measure) are left out and counted in the detail
    (``why`` says what they lacked); when all are NaN, the measurement is NaN with the reason
    ``missing``.
    """
    measured = [v for v in values if not math.isnan(v)]
    left_out = len(values) - len(measured)
    if not measured:
        return Measurement(
            value=math.nan,
            per_episode=tuple(values),
            detail=f"nothing to measure: all {len(values)} {why}",
            missing=missing,
        )
    mean = math.fsum(measured) / len(measured)
    noun = "episode" if len(measured) == 1 else "episodes"
    detail = f"mean of {len(measured)} {noun}, {min(measured):.2%} to {max(measured):.2%}"
    if left_out:
        detail += f"; {left_out} left out ({why})"
    return Measurement(value=mean, per_episode=tuple(values), detail=detail)


def vault_pnl_frac(episode: EpisodeOutcome) -> float:
    """The vault's PnL at the episode's end over its starting capital; NaN without a vault."""
    if not episode.initial_vault_usd > 0.0:
        return math.nan
    return float(episode.steps["vault_pnl_usd"][-1]) / episode.initial_vault_usd


def vault_pnl(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The mean over episodes of :func:`vault_pnl_frac` (``n/a (no vault)`` without one).

    The detail adds what the vault earned on: its takeovers and their notional, summed over
    the episodes.
    """
    m = _mean_of_episodes(
        [vault_pnl_frac(e) for e in episodes], "no vault", "episodes ran no vault"
    )
    takeovers = math.fsum(e.total("vault_takeovers") for e in episodes)
    notional = math.fsum(e.total("vault_takeover_usd") for e in episodes)
    detail = f"{m.detail}; {takeovers:,.0f} takeovers, ${notional:,.0f}, over the episodes"
    return dataclasses.replace(m, detail=detail)


def vault_drawdown(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The mean over episodes of the vault's largest fall from peak equity, as a share of it.

    The environment tracks the fall tick by tick (``vault_drawdown_frac``, the largest so far
    at each decision's end); its largest value over the episode is the episode's. Unlike the
    fund's line this is peak to trough: a vault is judged by what its depositors saw.
    """
    values = [
        float(np.max(e.steps["vault_drawdown_frac"])) if e.initial_vault_usd > 0.0 else math.nan
        for e in episodes
    ]
    return _mean_of_episodes(values, "no vault", "episodes ran no vault")


def _without_impact(scenario: Scenario) -> Scenario:
    """``scenario`` with ``depth.impact_coef`` 0: liquidation flow no longer moves the index."""
    return dataclasses.replace(scenario, depth=dataclasses.replace(scenario.depth, impact_coef=0.0))


#: The scenario changes a check may compare against (:attr:`Check.counterfactual`): name ->
#: (what it changes, the change). Built in code from the library scenario, never by editing
#: its file.
COUNTERFACTUALS: dict[str, tuple[str, Callable[[Scenario], Scenario]]] = {
    "no_impact": (
        "depth.impact_coef = 0 (liquidation flow does not move the index)",
        _without_impact,
    ),
}


#: The multi-market simulator's changes a check may compare against: name -> (what it
#: changes, the :class:`~fundgym.envs.markets_simulator.MarketsSimulator` settings).
MARKET_COUNTERFACTUALS: dict[str, tuple[str, dict[str, Any]]] = {
    "index_collateral": (
        "collateral assets marked at their external index instead of the venue's own book",
        {"collateral_price": "index"},
    ),
}


def counterfactual_text(name: str) -> str:
    """What counterfactual ``name`` changes, in words (a one-market or a multi-market twin)."""
    if name in COUNTERFACTUALS:
        return COUNTERFACTUALS[name][0]
    return MARKET_COUNTERFACTUALS[name][0]


def collateral_depeg_loss_share(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The collateral-depeg loss of seized assets over starting open interest (mean)."""
    return _over_starting_oi(episodes, lambda e: e.total("collateral_depeg_loss_usd"))


def collateral_depeg_book_over_index(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """Depeg loss marked on the venue's book over the same episodes' loss marked on the index.

    Pooled: the episodes' losses summed on each side, then divided (per episode the same
    ratio, NaN where the index side lost nothing). Needs the ``index_collateral`` twins.
    """
    book = [e.total("collateral_depeg_loss_usd") for e in episodes]
    index = [
        e.counterfactual.total("collateral_depeg_loss_usd") if e.counterfactual else math.nan
        for e in episodes
    ]
    total_index = math.fsum(index)
    value = math.fsum(book) / total_index if total_index > 0.0 else math.nan
    per = tuple(b / x if x > 0.0 else math.nan for b, x in zip(book, index, strict=True))
    detail = (
        f"book ${math.fsum(book):,.0f} over index ${total_index:,.0f}, summed over "
        f"{len(episodes)} episodes"
    )
    missing = "" if total_index > 0.0 else "no depeg loss on the index"
    return Measurement(value, per, detail, missing)


def index_drawdown_frac(index_price: FloatArray) -> float:
    """The index's largest peak-to-trough fall over the decisions, as a share of the peak."""
    path = np.asarray(index_price, dtype=np.float64)
    if path.size == 0:
        return math.nan
    peak = np.maximum.accumulate(path)
    return float(np.max(1.0 - path / peak))


def _flow_drawdowns(episode: EpisodeOutcome) -> tuple[float, float]:
    """The index's drawdown with the scenario's impact and in its no-impact twin."""
    twin = episode.counterfactual
    if twin is None:
        raise ValueError(f"episode {episode.seed} of {episode.scenario} has no no-impact twin")
    return index_drawdown_frac(episode.steps["index_price"]), index_drawdown_frac(
        twin.steps["index_price"]
    )


def liquidation_flow_drawdown_pp(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """What liquidation flow adds to the index's drawdown, in points of price, mean over episodes.

    Each episode's index drawdown (peak to trough at decision ends) minus its twin's, the same
    seed on the scenario with ``depth.impact_coef`` 0: the same exogenous path, the same
    traders' draws, only the liquidations' push on the price taken away.
    """
    values = [with_ - without for with_, without in map(_flow_drawdowns, episodes)]
    m = _mean_of_episodes(values, "no index", "episodes had no decision")
    return dataclasses.replace(m, detail=m.detail.replace("%", " pp"))


def liquidation_flow_drawdown_share(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """:func:`liquidation_flow_drawdown_pp` as a share of the drawdown with impact (mean).

    NaN for an episode whose index never fell (nothing to share), left out of the mean.
    """
    values = [
        (with_ - without) / with_ if with_ > 0.0 else math.nan
        for with_, without in map(_flow_drawdowns, episodes)
    ]
    return _mean_of_episodes(values, "no drawdown", "episodes' index never fell")


def _needs(episodes: Sequence[EpisodeOutcome], keys: Sequence[str]) -> Measurement | None:
    """An ``n/a`` measurement naming the ``info`` keys the environment does not report yet."""
    absent = [k for k in keys if any(k not in e.steps for e in episodes)]
    if not absent:
        return None
    return Measurement(
        value=math.nan,
        per_episode=tuple(math.nan for _ in episodes),
        detail=f"the environment reports no info key {', '.join(absent)}",
        missing=f"no info {absent[0]}",
    )


def floored_short_fund_income(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The fund's income from liquidating shorts against a floored oracle / its starting value.

    ``floored_fund_fee_income_usd`` summed over the episode (the fund's liquidation-fee income
    in ticks where the oracle sat at its floor above the mark), over the fund at the start;
    mean over episodes. The detail adds the floored shorts' notional.
    """
    absent = _needs(episodes, ("floored_fund_fee_income_usd", "floored_short_liquidation_usd"))
    if absent is not None:
        return absent
    values = [
        e.total("floored_fund_fee_income_usd") / e.initial_fund_usd
        if e.initial_fund_usd > 0.0
        else math.nan
        for e in episodes
    ]
    m = _mean_of_episodes(values, "no fund", "episodes started with a fund of 0")
    notional = math.fsum(e.total("floored_short_liquidation_usd") for e in episodes)
    detail = f"{m.detail}; ${notional:,.0f} of shorts liquidated against the floor, all episodes"
    return dataclasses.replace(m, detail=detail)


def attacker_borrowed_over_margin(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """What the attacker withdrew against pumped unrealised PnL / the margin he posted (mean).

    ``attacker_withdrawn_usd`` summed over the episode over ``attacker_margin_usd`` (its
    largest reported value: the margin behind the position). The detail adds what the
    exchange was left with: its bad debt and the loss nobody bore, summed over the episodes.
    """
    absent = _needs(episodes, ("attacker_withdrawn_usd", "attacker_margin_usd"))
    if absent is not None:
        return absent
    values = []
    for e in episodes:
        margin = float(np.max(e.steps["attacker_margin_usd"]))
        values.append(e.total("attacker_withdrawn_usd") / margin if margin > 0.0 else math.nan)
    m = _mean_of_episodes(values, "no attacker", "episodes had no attacker margin")
    measured = [v for v in values if not math.isnan(v)]
    spread = f"{min(measured):.3g}x to {max(measured):.3g}x" if measured else "none"
    bad = math.fsum(e.total("bad_debt_usd") for e in episodes)
    lost = math.fsum(e.total("unrecovered_usd") + e.total("socialized_loss_usd") for e in episodes)
    detail = (
        f"mean of {len(measured)} episodes, {spread}; bad debt ${bad:,.0f}, of which "
        f"${lost:,.0f} socialised or unrecovered, all episodes"
    )
    return dataclasses.replace(m, detail=detail)


#: What each crash did to real venues' funds (``outcomes.md``, "Per crash"): the real-world
#: line of every fund-drawdown info line.
CRASH_FUND_OUTCOMES: dict[str, str] = {
    "black_thursday_2020": (
        "12 Mar 2020: BitMEX fund 35,508 -> 33,881 BTC (-4.6%), no ADL; Binance 12.86M -> "
        "6.23M USDT (-52%); Deribit 391 -> 183 BTC (-53%) plus a 500 BTC injection"
    ),
    "may_19_2021": "19 May 2021: Binance BTC/ETH fund 291.85M -> 288.72M USDT (-1.1%) [S30]",
    "luna_2022": (
        "LUNA, May 2022: perp venues cut leverage, settled or delisted early; the bad debt "
        "landed in lending (Venus $11.2M) [S44], no perp fund figure"
    ),
    "ftx_2022": "FTX, Nov 2022: no insurance-fund or ADL event on major BTC perps [S10, S50]",
    "oct_10_2025": (
        "10 Oct 2025: Binance shared fund $1.23B -> $1.04B (-15%) [S75]; HLP earned about "
        "$40M (+10-13%); dYdX paid $462k from its fund after an 8 h halt"
    ),
    "venue_flash_wick": "Binance.US flash wick, Oct 2021: no fund figure in outcomes.md",
    "oracle_manipulation": (
        "Mango, 11 Oct 2022: $116M borrowed against pumped unrealised PnL; the fund was "
        "insufficient, no ADL"
    ),
}


#: What backstop vaults did in each crash (``outcomes.md``, ``crashes.md`` section 9): the
#: real-world line of every vault info line. HLP's +10-13% on 10 Oct 2025 includes its
#: market making, which the simulator's vault does not do: an upper reference, not a target.
CRASH_VAULT_OUTCOMES: dict[str, str] = {
    "oct_10_2025": (
        "10 Oct 2025: HLP (about $300M) earned about $40M (+10-13%), market making included: "
        "an upper reference [E] for a vault that only takes backstops [S65, S80]"
    ),
    "oracle_manipulation": (
        "Hyperliquid JELLY, 26 Mar 2025: a $4-6M short dumped on HLP and squeezed 400-500%; "
        "HLP's unrealised loss reached $10.6-13.5M of its $230M before validators settled the "
        "market (HLP +$0.7M) [S89, S90]"
    ),
}


def _vault_outcome(scenario: str) -> str:
    """The vault line's real-world reference on ``scenario`` (or that there is none)."""
    return CRASH_VAULT_OUTCOMES.get(
        scenario, f"{scenario}: no backstop-vault figure for this crash in outcomes.md"
    )


def _vault_checks() -> tuple[Check, ...]:
    """Two info lines per venue preset that runs a vault, per historical crash: PnL, drawdown."""
    return tuple(
        check
        for scenario in CRASHES
        for preset, spec in PRESETS.items()
        if spec.vault_to_oi_frac > 0.0
        for check in (
            Check(
                name=f"vault_pnl_{preset}_{scenario}",
                scenario=scenario,
                policy=f"static:{preset}",
                measures="backstop vault PnL at the episode's end / its starting capital (mean)",
                target=None,
                source=_vault_outcome(scenario),
                measure=vault_pnl,
            ),
            Check(
                name=f"vault_drawdown_{preset}_{scenario}",
                scenario=scenario,
                policy=f"static:{preset}",
                measures="backstop vault's largest fall from peak equity / that peak (mean)",
                target=None,
                source=_vault_outcome(scenario),
                measure=vault_drawdown,
            ),
        )
    )


#: The calibrated-world issue's (16) targets for fund drawdowns, by (preset, crash): the
#: venue-sized fund's fall against the real one (``outcomes.md``). Every other preset and
#: crash stays an info line.
FUND_DRAWDOWN_TARGETS: dict[tuple[str, str], Target] = {
    ("binance", "oct_10_2025"): Target(low=0.05, high=0.35),  # real -15%
    ("binance", "may_19_2021"): Target(high=0.10),  # real -1.1%
    ("bitmex", "black_thursday_2020"): Target(high=0.15),  # real -4.6%, no ADL
}

BINANCE_2020_FUND_TO_OI_FRAC = 0.01
"""Binance's BTC fund in March 2020 against its open interest: about $13M on $1-2B, about 1%
[E] (outcomes.md, "Fund size relative to open interest"). The preset's 4.5% is its 2025 fund;
"Binance-sized" on Black Thursday means the fund Binance had then."""


def _fund_drawdown_checks() -> tuple[Check, ...]:
    """A line per venue preset per historical crash: the fund's drawdown.

    Those in :data:`FUND_DRAWDOWN_TARGETS` carry the calibrated-world issue's target; the
    rest are info lines.
    """
    per_preset = tuple(
        Check(
            name=f"fund_drawdown_{preset}_{scenario}",
            scenario=scenario,
            policy=f"static:{preset}",
            measures="fund drawdown from its start, 1 - min fund / starting fund (mean)",
            target=FUND_DRAWDOWN_TARGETS.get((preset, scenario)),
            source=CRASH_FUND_OUTCOMES[scenario],
            measure=fund_drawdown,
        )
        for scenario in CRASHES
        for preset in PRESETS
    )
    return (
        *per_preset,
        Check(
            name="fund_drawdown_binance_2020_black_thursday_2020",
            scenario="black_thursday_2020",
            policy=f"static:binance,fund_to_oi_frac={BINANCE_2020_FUND_TO_OI_FRAC}",
            measures=(
                "fund drawdown from its start, 1 - min fund / starting fund (mean), with "
                "Binance's fund of March 2020 (1% of open interest [E])"
            ),
            target=Target(low=0.25, high=0.80),
            source=CRASH_FUND_OUTCOMES["black_thursday_2020"],
            measure=fund_drawdown,
        ),
    )


def _outcome_checks() -> tuple[Check, ...]:
    """The calibrated-world issue's (16) lines on liquidations and open interest.

    Targets and sources are that issue's, from ``outcomes.md``. Run under the venue preset
    whose venue the figure is.
    """
    return (
        Check(
            name="liquidated_oi_binance_oct_10_2025",
            scenario="oct_10_2025",
            policy="static:binance",
            measures="liquidated notional over the scenario / starting open interest (mean)",
            target=Target(low=0.04, high=0.18),
            source=(
                "10 Oct 2025: $19.13B liquidated in 24 h, 8.8% of the whole market's $217B of "
                "open interest [S56, S57, S64]"
            ),
            measure=liquidated_share_of_oi,
        ),
        Check(
            name="peak_minute_liquidated_oi_binance_oct_10_2025",
            scenario="oct_10_2025",
            policy="static:binance",
            measures="largest one-minute tick's liquidated notional / starting open interest",
            target=Target(low=0.005, high=0.04),
            source=(
                "10 Oct 2025: $3.21B liquidated in the peak minute, 1.5% of the market's open "
                "interest [S56, S57, S64]"
            ),
            measure=peak_tick_liquidated_share_of_oi,
        ),
        Check(
            name="oi_change_binance_oct_10_2025",
            scenario="oct_10_2025",
            policy="static:binance",
            measures="open interest at the end / at the start (mean)",
            target=Target(low=0.5, high=0.9),
            source=(
                "10 Oct 2025: BTC open interest fell about 22% [S66]; Hyperliquid's about halved"
            ),
            measure=open_interest_end_over_start,
            percent=False,
        ),
        Check(
            name="liquidated_oi_binance_may_19_2021",
            scenario="may_19_2021",
            policy="static:binance",
            measures="liquidated notional over the scenario / starting open interest (mean)",
            target=Target(low=0.10, high=0.50),
            source=(
                "19 May 2021: above $8B liquidated against derivatives open interest of about "
                "$28-32B, about 0.25x [E]"
            ),
            measure=liquidated_share_of_oi,
        ),
        Check(
            name="oi_change_bitmex_black_thursday_2020",
            scenario="black_thursday_2020",
            policy="static:bitmex",
            measures="open interest at the end / at the start (mean)",
            target=Target(low=0.4, high=0.85),
            source="12 Mar 2020: XBTUSD open interest fell 48% in 12 h",
            measure=open_interest_end_over_start,
            percent=False,
        ),
        Check(
            name="liquidated_oi_binance_ftx_2022",
            scenario="ftx_2022",
            policy="static:binance",
            measures="liquidated notional over the scenario / starting open interest (mean)",
            target=Target(high=0.20),
            source=(
                "FTX, Nov 2022: about $1.6B liquidated over the episode, about 5-8% of "
                "aggregate open interest [E] [S10, S50]; no fund stress"
            ),
            measure=liquidated_share_of_oi,
        ),
    )


#: The major crashes whose drawdown liquidation flow must measurably but boundedly deepen.
FLOW_CRASHES: tuple[str, ...] = ("oct_10_2025", "black_thursday_2020", "may_19_2021")

_FLOW_SOURCE = (
    "{crash}: at realistic open interest / depth(1%) (BTC about 225 [S66, S97]) liquidations "
    "moved BTC by a few percent ($3.21B in the peak minute of 10 Oct 2025), not the crash "
    "itself: measurable, and a minority of the fall (issue 16) [E]"
)


def _flow_checks() -> tuple[Check, ...]:
    """Two lines per major crash: what liquidation flow adds to the index's drawdown.

    One per crash (not pooled), under ``static:binance`` (the majors' venue), each against
    the same seeds with ``depth.impact_coef`` 0: the contribution in points of price
    (> 0.5 pp: measurable) and as a share of the drawdown (< 1/3: bounded).
    """
    return tuple(
        check
        for crash in FLOW_CRASHES
        for check in (
            Check(
                name=f"liquidation_flow_drawdown_pp_binance_{crash}",
                scenario=crash,
                policy="static:binance",
                measures="index drawdown (peak to trough) minus the same seeds' with "
                "depth.impact_coef 0, in points of price (mean)",
                target=Target(low=0.005),
                source=_FLOW_SOURCE.format(crash=crash),
                measure=liquidation_flow_drawdown_pp,
                counterfactual="no_impact",
            ),
            Check(
                name=f"liquidation_flow_drawdown_share_binance_{crash}",
                scenario=crash,
                policy="static:binance",
                measures="that contribution / the index drawdown with impact (mean)",
                target=Target(high=1.0 / 3.0),
                source=_FLOW_SOURCE.format(crash=crash),
                measure=liquidation_flow_drawdown_share,
                counterfactual="no_impact",
            ),
        )
    )


def _mechanism_checks() -> tuple[Check, ...]:
    """The LUNA and Mango lines: the mechanism of each loss, not only its size."""
    return (
        Check(
            name="floored_short_fund_income_binance_luna_2022",
            scenario="luna_2022",
            policy="static:binance",
            measures="fund income from liquidating shorts against a floored oracle / "
            "starting fund (mean)",
            target=Target(high=0.0),
            source=(
                "LUNA, May 2022: perp venues cut leverage and settled or delisted early "
                "(BitMEX at a 30-minute index on 12 May); the oracle floor hurt lenders (Venus "
                "$11.2M) [S44], no perp fund earned from shorts liquidated against it"
            ),
            measure=floored_short_fund_income,
        ),
        *(
            Check(
                name=f"attacker_borrowed_over_margin_{label}_oracle_manipulation",
                scenario="oracle_manipulation",
                policy="static:binance",
                measures=(
                    "withdrawn against pumped unrealised PnL / the attacker's margin (mean), "
                    f"{rule}"
                ),
                target=None,
                source=(
                    "Mango, 11 Oct 2022: $5M of USDC behind a self-matched 483M MNGO-PERP "
                    "position, spot pumped 23x, $116M borrowed against the unrealised PnL (23x "
                    "the margin); the fund was insufficient, no ADL; $67M returned"
                ),
                measure=attacker_borrowed_over_margin,
                percent=False,
                env_overrides=(("unrealised_pnl_haircut_frac", haircut),),
            )
            for label, haircut, rule in (
                ("mango", 0.0, "unrealised profit fully usable as collateral, as on Mango"),
                ("haircut", 1.0, "unrealised profit not withdrawable (the default haircut)"),
            )
        ),
    )


#: 10-11 Oct 2025 across markets: Binance's shared fund and its collateral pricing.
_BINANCE_OCT_10_SOURCE = (
    "Binance, 10-11 Oct 2025: its fund, shared by BTC, ETH and BNB, $1.23B -> $1.04B (-15%) "
    "[S75]; it priced collateral from its own books (USDe $0.6567, wBETH $430) and paid "
    "$283M in compensation [S72,S73,S118]"
)


def adl_share_of_oi(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """Deleveraged notional over the episode / open interest at its start, mean over episodes."""
    return _over_starting_oi(episodes, lambda e: e.total("adl_volume_usd"))


def vault_adl_share(episodes: Sequence[EpisodeOutcome]) -> Measurement:
    """The share of the deleveraged notional that was the backstop vault's own inventory.

    Pooled: ``sum(vault_adl_usd) / sum(adl_volume_usd)`` (the vault deleveraged beyond its
    loss limit, :mod:`fundgym.envs.core.vault`). NaN when nothing was deleveraged.
    """
    share, v, t = _pooled_share(episodes, "vault_adl_usd", "adl_volume_usd")
    return dataclasses.replace(
        share, detail=f"${v:,.0f} of ${t:,.0f} deleveraged over {len(episodes)} episodes"
    )


_HYPERLIQUID_OCT_10_SOURCE = (
    "Hyperliquid, 10 Oct 2025: $2.10B auto-deleveraged over 162 tickers in 11 minutes against "
    "$13.8B of open interest (about 15%); HLP (about $300M) earned about $40M; 302 of 63,637 "
    "liquidations (0.5%) ended below zero equity [S76-S78]"
)


def _market_checks() -> tuple[Check, ...]:
    """Issue 17's 10 Oct lines: Hyperliquid's engine, vault and ADL; Binance's fund and collateral.

    ``oct_10_2025_multi`` on the multi-market simulator (:func:`record_market_episodes`).
    Hyperliquid: its levers, queue ADL at the mark, no fund and the HLP vault at 2.2% of OI,
    its engine across markets (:mod:`fundgym.envs.core.venue_cross`). Binance: its levers, ADL
    rule, tiers and 4.5% fund, its engine as
    :func:`~fundgym.envs.markets_simulator.engine_risk` runs it across markets, collateral
    marked on the venue's own book.
    """
    scenario = "oct_10_2025_multi"
    return (
        Check(
            name="adl_share_hyperliquid_oct_10_2025_multi",
            scenario=scenario,
            policy="static:hyperliquid",
            measures="notional deleveraged across nine markets / starting open interest (mean)",
            target=Target(low=0.05, high=0.30),
            source=_HYPERLIQUID_OCT_10_SOURCE,
            measure=adl_share_of_oi,
        ),
        Check(
            name="vault_pnl_hyperliquid_oct_10_2025_multi",
            scenario=scenario,
            policy="static:hyperliquid",
            measures="HLP vault's PnL at the episode's end / its starting capital (mean): positive",
            target=Target(low=0.0),
            source=_HYPERLIQUID_OCT_10_SOURCE,
            measure=vault_pnl,
        ),
        Check(
            name="vault_adl_share_hyperliquid_oct_10_2025_multi",
            scenario=scenario,
            policy="static:hyperliquid",
            measures=(
                "share of the deleveraged notional that was the HLP vault's own inventory, "
                "deleveraged beyond its loss limit (pooled)"
            ),
            target=None,
            source=(
                "Hyperliquid, 10 Oct 2025: 95.1% of the ADL notional came from the HLP and "
                "Liquidator vaults' positions [S77]"
            ),
            measure=vault_adl_share,
        ),
        Check(
            name="below_bankruptcy_hyperliquid_oct_10_2025_multi",
            scenario=scenario,
            policy="static:hyperliquid",
            measures="share of liquidation orders filled past bankruptcy across markets (pooled)",
            target=Target(high=0.02),
            source=_HYPERLIQUID_OCT_10_SOURCE,
            measure=below_bankruptcy_share,
        ),
        Check(
            name="fund_drawdown_binance_oct_10_2025_multi",
            scenario=scenario,
            policy="static:binance",
            measures=(
                "shared fund's drawdown from its start across nine markets, 1 - min fund / "
                "starting fund (mean)"
            ),
            target=Target(low=0.05, high=0.35),
            source=_BINANCE_OCT_10_SOURCE,
            measure=fund_drawdown,
        ),
        Check(
            name="collateral_depeg_loss_binance_oct_10_2025_multi",
            scenario=scenario,
            policy="static:binance",
            measures=(
                "collateral-depeg loss of seized assets (redemption value less what they "
                "fetched), marked on the venue's book, / starting open interest (mean)"
            ),
            target=None,
            source=_BINANCE_OCT_10_SOURCE,
            measure=collateral_depeg_loss_share,
        ),
        Check(
            name="collateral_depeg_book_over_index_binance_oct_10_2025_multi",
            scenario=scenario,
            policy="static:binance",
            measures=(
                "collateral-depeg loss marked on the venue's book / the same episodes marked "
                "on the external index (pooled): larger on the book"
            ),
            target=Target(low=1.0),
            source=_BINANCE_OCT_10_SOURCE,
            measure=collateral_depeg_book_over_index,
            percent=False,
            counterfactual="index_collateral",
        ),
    )


#: Every calibration line, in table order.
CHECKS: tuple[Check, ...] = (
    Check(
        name="hyperliquid_below_bankruptcy",
        scenario="oct_10_2025",
        policy="static:hyperliquid",
        measures="share of liquidation orders filled past bankruptcy (pooled)",
        target=Target(high=0.02),
        source=(
            "Hyperliquid, 10 Oct 2025: 302 of 63,637 liquidation events (0.5%) ended with "
            "negative equity, -$23.2M on $5.5B liquidated [S76-S78]"
        ),
        measure=below_bankruptcy_share,
    ),
    *_outcome_checks(),
    *_flow_checks(),
    *_mechanism_checks(),
    *_fund_drawdown_checks(),
    *_vault_checks(),
    *_market_checks(),
)

assert len({c.name for c in CHECKS}) == len(CHECKS), "check names must be unique"


def select_checks(
    patterns: Iterable[str] | None = None, scenarios: Iterable[str] | None = None
) -> list[Check]:
    """The checks named by ``patterns`` (names or shell patterns) on ``scenarios``.

    Args:
        patterns: ``--check`` values: exact names or patterns such as ``fund_drawdown_*``
            (``None``: every check).
        scenarios: ``--scenarios`` values, comma-separated names (``None``: every scenario).

    Raises:
        CalibrationError: A pattern that matches no check, a scenario no check runs on, or
            a combination that leaves nothing to run; the message lists what is allowed.
    """
    chosen = list(CHECKS)
    if patterns is not None:
        names = [c.name for c in CHECKS]
        wanted: set[str] = set()
        for pattern in patterns:
            hits = fnmatch.filter(names, pattern.strip())
            if not hits:
                raise CalibrationError(
                    f"--check {pattern!r}: no such check; allowed (or a pattern such as "
                    f"'fund_drawdown_*'): {', '.join(names)}"
                )
            wanted.update(hits)
        chosen = [c for c in chosen if c.name in wanted]
    if scenarios is not None:
        known = list(dict.fromkeys(c.scenario for c in CHECKS))
        subset: set[str] = set()
        for item in scenarios:
            for name in (s.strip() for s in item.split(",")):
                if not name:
                    continue
                if name not in known:
                    raise CalibrationError(
                        f"--scenarios {name!r}: no check runs on it; allowed: {', '.join(known)}"
                    )
                subset.add(name)
        if not subset:
            raise CalibrationError(f"--scenarios: no scenario given; allowed: {', '.join(known)}")
        chosen = [c for c in chosen if c.scenario in subset]
    if not chosen:
        raise CalibrationError(
            "no check left to run: --check and --scenarios select none in common"
        )
    return chosen


# ------------------------------------------------------------------ running ----


@dataclass(frozen=True)
class CheckResult:
    """A check with its measurement and pass marks (``None`` for an info line).

    Attributes:
        check: The line.
        measurement: Its value over the run's ``seeds`` episodes.
        passed: Whether that value is in the target: the verdict on the default seed, the
            calibrated-world issue asks every target to hold there.
        run_passes: With a pass rate asked for, whether it passes in each of those runs
            (run ``r``: ``seeds`` episodes from seed ``seed + r x seeds``; run 0 is the
            default one), in run order; ``None`` otherwise.
        episode_passes: With a pass rate asked for, whether it passes on each of the runs'
            episodes judged alone, in seed order: how often one crash, as the real one was,
            lands in the target; ``None`` otherwise.
    """

    check: Check
    measurement: Measurement
    passed: bool | None
    run_passes: tuple[bool, ...] | None = None
    episode_passes: tuple[bool, ...] | None = None

    @property
    def pass_rate(self) -> float | None:
        """The share of the pass-rate runs the check passes in (``None``: not asked, info)."""
        if not self.run_passes:
            return None
        return sum(self.run_passes) / len(self.run_passes)

    @property
    def episode_pass_rate(self) -> float | None:
        """The share of the runs' episodes it passes on alone (``None``: not asked, info)."""
        if not self.episode_passes:
            return None
        return sum(self.episode_passes) / len(self.episode_passes)


@dataclass(frozen=True)
class CalibrationRun:
    """What :func:`run_checks` did: the results in check order and how they were made.

    Attributes:
        results: One per check, in the order asked.
        seeds: Episodes per check.
        seed: The first episode's seed.
        env: The evaluation environment's base settings (before each policy's overrides).
        policies: Each policy spec run -> its note and the settings it changed (levers,
            margin tiers, fund size).
        wall_s: Wall time of the episodes and measurements.
        pass_rate_seeds: Runs of ``seeds`` episodes each check was also judged in for its
            pass rate (run ``r`` from seed ``seed + r x seeds``, run 0 the default one);
            ``None``: no pass rate asked for.
    """

    results: tuple[CheckResult, ...]
    seeds: int
    seed: int
    env: dict[str, Any]
    policies: dict[str, dict[str, Any]]
    wall_s: float
    pass_rate_seeds: int | None = None

    @property
    def failed(self) -> list[CheckResult]:
        """The checks with a target that did not pass."""
        return [r for r in self.results if r.passed is False]


def calibration_env(checks: Sequence[Check], accounts: int | None) -> dict[str, Any]:
    """The base environment settings of ``checks``: evaluation's, with ``accounts`` slots."""
    base = base_env(None, [parse_spec(c.policy) for c in checks])
    if accounts is not None:
        base["n_accounts"] = accounts
    return base


Group = tuple[str, str, tuple[tuple[str, float], ...]]
"""A batch of episodes: policy, scenario and environment overrides (:attr:`Check.env_overrides`)."""


def groups(checks: Sequence[Check]) -> dict[Group, list[Check]]:
    """``checks`` by (policy, scenario, overrides), in first-seen order: a group shares episodes."""
    out: dict[Group, list[Check]] = {}
    for c in checks:
        out.setdefault((c.policy, c.scenario, c.env_overrides), []).append(c)
    return out


def _counterfactuals(members: Sequence[Check]) -> list[str]:
    """The counterfactuals ``members`` ask for, each once, in first-seen order."""
    return list(dict.fromkeys(c.counterfactual for c in members if c.counterfactual))


def episode_count(checks: Sequence[Check], seeds: int, pass_rate_seeds: int | None) -> int:
    """Episodes :func:`run_checks` runs: per (policy, scenario), its batch and each twin's."""
    n = seeds * (pass_rate_seeds or 1)
    return sum(n * (1 + len(_counterfactuals(m))) for m in groups(checks).values())


def _twin_episodes(
    spec: PolicySpec, env_kw: Mapping[str, Any], counterfactual: str, episodes: int, seed: int
) -> list[EpisodeOutcome]:
    """The episodes of ``spec`` on ``env_kw``'s scenario as ``counterfactual`` changes it.

    The changed scenario is built in code from the library one and handed to the environment
    as a file in a temporary directory (the environment takes scenarios by name or path),
    removed once the episodes ran.
    """
    name = str(env_kw["scenario"])
    changed = COUNTERFACTUALS[counterfactual][1](load_scenario(name))
    with tempfile.TemporaryDirectory(prefix="fundgym-calibrate-") as tmp:
        path = Path(tmp) / f"{name}_{counterfactual}.yaml"
        path.write_text(yaml.safe_dump(jsonable(dataclasses.asdict(changed)), sort_keys=False))
        return record_episodes(spec, {**env_kw, "scenario": str(path)}, episodes, seed, name)


def _judge(
    c: Check, episodes: Sequence[EpisodeOutcome], seeds: int, pass_rate_seeds: int | None
) -> CheckResult:
    """``c`` measured on the first ``seeds`` episodes, run by run, and episode by episode."""
    m = c.measure(episodes[:seeds])
    if c.target is None:
        return CheckResult(c, m, None)
    target = c.target
    if not pass_rate_seeds:
        return CheckResult(c, m, target.passes(m.value))
    runs = [episodes[r * seeds : (r + 1) * seeds] for r in range(pass_rate_seeds)]
    return CheckResult(
        c,
        m,
        target.passes(m.value),
        run_passes=tuple(target.passes(c.measure(run).value) for run in runs),
        episode_passes=tuple(
            target.passes(c.measure([e]).value) for e in episodes[: seeds * pass_rate_seeds]
        ),
    )


def run_checks(
    checks: Sequence[Check],
    seeds: int,
    seed: int = 0,
    accounts: int | None = None,
    on_group_done: Callable[[int], None] | None = None,
    pass_rate_seeds: int | None = None,
) -> CalibrationRun:
    """Run every (policy, scenario) of ``checks`` for ``seeds`` episodes and measure each check.

    With ``pass_rate_seeds``, each check is also judged in that many runs of ``seeds``
    episodes (run ``r`` from seed ``seed + r x seeds``: disjoint episodes; run 0 is the default
    one), and on each of their episodes alone. One batch per (policy, scenario) serves all:
    ``seeds x pass_rate_seeds`` episodes, the first ``seeds`` the default run's (episode ``i``
    is the same whatever the batch's size).
    A check with a counterfactual also runs the batch's twin on the changed scenario.

    Args:
        checks: The checks (:func:`select_checks`).
        seeds: Episodes per (policy, scenario), seeded ``seed .. seed + seeds - 1``.
        seed: The first episode's seed.
        accounts: Account slots per exchange (``None``: the evaluation environment's).
        on_group_done: Called with the episodes run after each batch (a progress bar).
        pass_rate_seeds: Runs to judge each check in (``None``: no pass rate).
    """
    t0 = time.perf_counter()
    base = calibration_env(checks, accounts)
    n = seeds * (pass_rate_seeds or 1)
    measured: dict[str, CheckResult] = {}
    policies: dict[str, dict[str, Any]] = {}
    for (policy, scenario, overrides), members in groups(checks).items():
        spec = parse_spec(policy)
        policies[policy] = {"note": spec.note, **spec.env_overrides()}
        markets = not simulated_today(load_scenario(scenario))
        accounts = int(base["n_accounts"])
        if markets:  # several markets or collateral assets: the multi-market simulator
            outcomes = record_market_episodes(policy, scenario, n, seed, accounts)
        else:
            env_kw = {**job_env(base, spec, scenario), **dict(overrides)}
            outcomes = record_episodes(spec, env_kw, n, seed)
        if on_group_done is not None:
            on_group_done(n)
        paired: dict[str, list[EpisodeOutcome]] = {}
        for name in _counterfactuals(members):
            if markets:
                settings = MARKET_COUNTERFACTUALS[name][1]
                twins = record_market_episodes(policy, scenario, n, seed, accounts, **settings)
            else:
                twins = _twin_episodes(spec, env_kw, name, n, seed)
            paired[name] = [
                dataclasses.replace(o, counterfactual=t)
                for o, t in zip(outcomes, twins, strict=True)
            ]
            if on_group_done is not None:
                on_group_done(n)
        for c in members:
            episodes = paired[c.counterfactual] if c.counterfactual else outcomes
            measured[c.name] = _judge(c, episodes, seeds, pass_rate_seeds)
    return CalibrationRun(
        results=tuple(measured[c.name] for c in checks),
        seeds=seeds,
        seed=seed,
        env=base,
        policies=policies,
        wall_s=time.perf_counter() - t0,
        pass_rate_seeds=pass_rate_seeds,
    )


# ------------------------------------------------------------------ reporting ----

#: The table's columns.
COLUMNS = ("check", "scenario", "policy", "measured", "target", "pass")


def columns(run: CalibrationRun) -> tuple[str, ...]:
    """:data:`COLUMNS`, and with a pass rate asked for, the default seed's mark and the rate."""
    if run.pass_rate_seeds is None:
        return COLUMNS
    n = run.pass_rate_seeds
    return (*COLUMNS, f"pass rate ({n} seeds)", f"episodes alone ({n * run.seeds})")


def _mark(passed: bool | None) -> str:
    return "info" if passed is None else ("PASS" if passed else "FAIL")


def _cells(r: CheckResult, run: CalibrationRun) -> tuple[str, ...]:
    c = r.check
    target = "-" if c.target is None else c.target.text(c.percent)
    measured = c.format(r.measurement.value, r.measurement.missing)
    cells: tuple[str, ...] = (c.name, c.scenario, c.policy, measured, target, _mark(r.passed))
    if run.pass_rate_seeds is not None:
        if r.run_passes is None or r.episode_passes is None:
            cells += ("-", "-")
        else:
            cells += (
                f"{sum(r.run_passes)}/{len(r.run_passes)}",
                f"{sum(r.episode_passes)}/{len(r.episode_passes)}",
            )
    return cells


def format_table(run: CalibrationRun) -> str:
    """The fixed-width table the command prints: ``check | scenario | ... | pass``.

    With a pass rate asked for (``run.pass_rate_seeds``), two columns follow: the seeds
    (runs of ``run.seeds`` episodes) it passes in, and the episodes it passes on alone.
    """
    head = columns(run)
    rows = [head, *(_cells(r, run) for r in run.results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    right = {3}  # measured values line up on the decimal point
    lines = []
    for k, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" | ".join(cells).rstrip())
        if k == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_line(run: CalibrationRun) -> str:
    """``1 check: 0 passed, 1 failed; 28 info lines``."""
    marked = [r for r in run.results if r.passed is not None]
    passed = sum(1 for r in marked if r.passed)
    info = len(run.results) - len(marked)
    noun = "check" if len(marked) == 1 else "checks"
    return (
        f"{len(marked)} {noun}: {passed} passed, {len(marked) - passed} failed; "
        f"{info} info line{'' if info == 1 else 's'} (no pass mark)"
    )


def default_seed_line(run: CalibrationRun) -> str:
    """The default seed's verdict: whether every target holds in the run from it.

    ``on the default seed (0, episodes 0 .. 15): all 11 targets hold`` or ``...: 3 of 11
    targets hold; failing: a, b``.
    """
    marked = [r for r in run.results if r.passed is not None]
    held = sum(1 for r in marked if r.passed)
    head = f"on the default seed ({run.seed}, episodes {run.seed} .. {run.seed + run.seeds - 1}): "
    if held == len(marked):
        return head + f"all {len(marked)} targets hold"
    failing = ", ".join(r.check.name for r in run.failed)
    return head + f"{held} of {len(marked)} targets hold; failing: {failing}"


def pass_rate_line(run: CalibrationRun) -> str:
    """``pass rate over 20 seeds (...): 7 of 11 checks pass with every seed; ...``."""
    n = run.pass_rate_seeds
    if n is None:
        return ""
    marked = [r for r in run.results if r.run_passes is not None]
    always = sum(1 for r in marked if all(r.run_passes or ()))
    alone = sum(1 for r in marked if all(r.episode_passes or ()))
    last = run.seed + n * run.seeds - 1
    return (
        f"pass rate over {n} seeds ({run.seeds} episode{'' if run.seeds == 1 else 's'} each, "
        f"from seeds {run.seed}, "
        f"{run.seed + run.seeds}, ..., episodes {run.seed} .. {last}): {always} of "
        f"{len(marked)} checks pass with every seed; {alone} of {len(marked)} on every "
        f"episode alone"
    )


def to_markdown(run: CalibrationRun, command: str) -> str:
    """``calibration.md``: the table, how it was run, and each real-world line once."""
    lines = [
        "# fundgym calibrate",
        "",
        f"`{command}`: {run.seeds} episodes per line (seeds {run.seed} .. "
        f"{run.seed + run.seeds - 1}), {run.env['n_accounts']:,} accounts, "
        f"{run.wall_s:.0f} s. {summary_line(run)}.",
        "",
    ]
    if run.pass_rate_seeds is not None:
        lines += [f"{default_seed_line(run)}; {pass_rate_line(run)}.", ""]
    head = columns(run)
    align = ["---", "---", "---", "---:", "---", "---", "---", "---:"][: len(head)]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in run.results:
        cells = list(_cells(r, run))
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## What real venues did", ""]
    cited: dict[str, list[str]] = {}
    for r in run.results:
        cited.setdefault(r.check.source, []).append(r.check.name)
    for source, names in cited.items():
        lines.append(f"- {source} ({', '.join(f'`{n}`' for n in names)})")
    lines += ["", "## How each line was measured", ""]
    for r in run.results:
        lines.append(f"- `{r.check.name}`: {r.check.measures}; {r.measurement.detail}")
    return "\n".join(lines) + "\n"


def to_json(run: CalibrationRun, command: str, created_utc: str) -> dict[str, Any]:
    """``calibration.json``: every line with its value, target, pass mark and source."""
    marked = [r for r in run.results if r.passed is not None]
    return {
        "kind": KIND,
        "fundgym": __version__,
        "command": command,
        "created_utc": created_utc,
        "seeds": run.seeds,
        "seed": run.seed,
        "episode_seeds": f"{run.seed} .. {run.seed + run.seeds - 1} (episode i: seed + i)",
        "accounts": run.env["n_accounts"],
        "wall_s": round(run.wall_s, 3),
        "passed": sum(1 for r in marked if r.passed),
        "failed": sum(1 for r in marked if not r.passed),
        "info": len(run.results) - len(marked),
        "default_seed": {
            "seed": run.seed,
            "passed": sum(1 for r in marked if r.passed),
            "failed": len(run.failed),
            "all_hold": not run.failed,
        },
        "pass_rate_seeds": run.pass_rate_seeds,
        "checks": [
            {
                "name": r.check.name,
                "scenario": r.check.scenario,
                "policy": r.check.policy,
                "measures": r.check.measures,
                "measured": r.measurement.value,
                "target": None
                if r.check.target is None
                else {
                    "low": r.check.target.low,
                    "high": r.check.target.high,
                    "text": r.check.target.text(r.check.percent),
                },
                "passed": r.passed,
                "pass_rate": None
                if r.run_passes is None
                else {
                    "passed": sum(r.run_passes),
                    "seeds": len(r.run_passes),
                    "episodes_per_seed": run.seeds,
                    "rate": r.pass_rate,
                    "per_seed": list(r.run_passes),
                },
                "episode_pass_rate": None
                if r.episode_passes is None
                else {
                    "passed": sum(r.episode_passes),
                    "episodes": len(r.episode_passes),
                    "rate": r.episode_pass_rate,
                },
                "counterfactual": None
                if r.check.counterfactual is None
                else counterfactual_text(r.check.counterfactual),
                "missing": r.measurement.missing or None,
                "detail": r.measurement.detail,
                "per_episode": list(r.measurement.per_episode),
                "source": r.check.source,
            }
            for r in run.results
        ],
    }


def is_calibration_dir(path: Path) -> bool:
    """Whether ``path`` holds a fundgym calibration (``calibration.json`` of kind :data:`KIND`)."""
    try:
        data = json.loads((path / "calibration.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def write_calibration(out: Path, run: CalibrationRun, command: str) -> dict[str, Path]:
    """Write :data:`CALIBRATION_FILES` of ``run`` into ``out``, replacing what is there.

    The directory is built under a temporary name beside ``out`` and renamed into place, so
    an interrupted or failed write leaves the previous ``out`` as it was and no partial
    files; what a killed one left behind is removed first
    (:func:`~fundgym.agents.outputs.remove_stale_temps`). The caller has checked ``out``
    (:func:`fundgym.agents.cli.guards.check_output`) and holds its lock.

    Returns:
        File name -> its path inside ``out``.
    """
    remove_stale_temps(out.parent, out.name)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "command": command,
        "fundgym": __version__,
        "checks": [r.check.name for r in run.results],
        "seeds": run.seeds,
        "seed": run.seed,
        "pass_rate_seeds": run.pass_rate_seeds,
        "env": jsonable(run.env),
        "each_run": "env with scenario set to the check's (a library scenario runs its own "
        "horizon) and the policy's settings below",
        "policies": jsonable(run.policies),
    }
    texts = {
        "config.yaml": yaml.safe_dump(config, sort_keys=False),
        "calibration.md": to_markdown(run, command),
        "calibration.json": json.dumps(jsonable(to_json(run, command, created)), indent=2),
    }
    with directory_in_place(out) as tmp:
        for name, text in texts.items():
            write_text_atomic(tmp / name, text)
    return {name: out / name for name in CALIBRATION_FILES}
