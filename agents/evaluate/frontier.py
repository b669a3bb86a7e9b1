"""The solvency-versus-capital frontier of static parameter sets, searched with NSGA-II.

A static set is the levers of :data:`fundgym.agents.policies.STATIC_PARAMS`, held fixed for an
episode, and the engine it runs under (:class:`fundgym.agents.policies.presets.Engine`: the
liquidation mode, the ADL ranking, the margin tiers, the fund's and the backstop vault's
starting sizes), exactly what a venue preset sets. It buys safety with capital: a higher
maintenance margin, liquidation fee, fund or vault loses less to socialisation, bad debt and
deleveraging, and locks more of the traders', the fund's and the vault's money.
:func:`search_frontier` maps that trade-off. Every candidate runs the same scenarios on the
same seeds (episode ``i`` seeded ``seed + i``) and is scored on two objectives, both
minimised, both per episode and averaged over every episode of every scenario:

* ``solvency_loss_usd``: socialised loss + unrecovered loss + deleveraged notional, the user
  loss of :mod:`fundgym.agents.evaluate.metrics`;
* ``capital_locked_usd``: the fund's value plus the backstop vault's equity plus the
  maintenance margin locked, averaged over the episode (``mean_capital_locked_usd`` in the
  metrics, from the environment's own ``capital_locked_usd``): a vault is capital like the
  fund, and the search cannot buy safety with it for free.

**The search space.** Each lever over its action range (:data:`fundgym.envs.controls.PARAMS`),
on a log scale where the lever's action maps logarithmically; the liquidation mode, the ADL
ranking and the margin tiers over every choice the environment has; the fund's and the
vault's sizes (shares of open interest) on a log scale over :data:`FUND_RANGE` and
:data:`VAULT_RANGE`, and which of them start with capital at all (:data:`BACKSTOPS`: a venue
without a fund, like Hyperliquid, starts it at 0). Every venue preset is a point of it.

**The search.** Optuna's NSGA-II sampler (:class:`optuna.samplers.NSGAIISampler`): with two
objectives its crowding distance spreads the candidates along the front, which is what a
trade-off curve needs; NSGA-III's reference directions are built for three or more objectives
and bring nothing here. The first generation is the old hand grid
(:data:`fundgym.agents.evaluate.search.GRID`, 24 sets, under the evaluation environment's
engine) and the venue presets (:data:`fundgym.agents.policies.PRESETS`, each under its own
engine), enqueued; their number is the population. So the grid and the presets are part of
every study and the comparison with them is exact. A generation is asked for at once and its
episodes run in parallel (:func:`fundgym.agents.evaluate.backends.run_jobs_backend`).

**Resuming.** A study lives in Optuna's storage (SQLite: ``sqlite:///path.db``) together with
the settings that produced it (environment, scenarios, episodes, seed, search space, grid,
presets, population, objectives, fundgym version); asking the same study for more trials
runs only the missing ones, and a study whose settings differ is refused rather than mixed.
A study of ``N`` trials is always read as its first ``N`` complete trials, so a result
depends on the settings and ``N`` alone.
The sampler is seeded with ``seed`` plus the number of trials already in the study, so the
same sequence of commands gives the same study.

**The chosen point.** A :class:`SelectionRule` picks one point of the Pareto front; that point
is ``best_static`` (:mod:`fundgym.agents.evaluate.search`). The default, ``loss_within=0.1``,
takes the least capital among the front's points whose solvency loss is within 10% of the
lowest solvency loss found: the safest a static set can be made, bought as cheaply as the
search found.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fundgym.agents import __version__
from fundgym.agents.evaluate.backends import run_policies, static_spec
from fundgym.agents.evaluate.metrics import Row, summarize_policies
from fundgym.agents.outputs import jsonable, progress_bar
from fundgym.agents.policies import PRESETS, STATIC_PARAMS, PolicySpec
from fundgym.agents.policies.presets import ENGINE_KEYS, MARGIN_TIERS, Engine, env_engine
from fundgym.agents.rollout import EvaluateError
from fundgym.envs.controls import PARAMS
from fundgym.envs.core.params import ADL_POLICIES, LIQUIDATION_MODES, AdlPolicy, LiquidationMode

if TYPE_CHECKING:
    import optuna

#: The two objectives, in the order Optuna stores them (both minimised).
OBJECTIVES = ("solvency_loss_usd", "capital_locked_usd")
#: What each objective adds up: summary columns of
#: :func:`fundgym.agents.evaluate.metrics.summarize_policies` (recorded with every study).
OBJECTIVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "solvency_loss_usd": ("solvency_loss_usd",),
    "capital_locked_usd": ("mean_capital_locked_usd",),
}
#: Which of the insurance fund and the backstop vault start an episode with capital (the
#: other starts at 0; a fund at 0 still collects the fees routed to it). ``vault`` and
#: ``fund_and_vault`` under liquidation mode ``partial``, which hands no account to a vault,
#: run as ``none`` and ``fund``.
BACKSTOPS = ("fund", "vault", "fund_and_vault", "none")
#: The searched starting fund, as a share of open interest (log scale): from a tenth of
#: dYdX's 0.5% to about twice BitMEX's 27.5% of March 2020, the largest preset.
FUND_RANGE = (0.001, 0.5)
#: The searched starting vault, as a share of open interest (log scale), around Hyperliquid's
#: 2.2% (HLP) on both sides.
VAULT_RANGE = (0.001, 0.5)
#: The sampler, as the settings record it.
SAMPLER = "NSGA-II (optuna.samplers.NSGAIISampler, default crossover and mutation)"


class FrontierError(EvaluateError):
    """A frontier search that cannot run: a bad rule, or a stored study of other settings."""


# --------------------------------------------------------------------------------------------
# The rule that picks best_static
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionRule:
    """How one point of the Pareto front is chosen.

    Attributes:
        kind: ``loss_within``: the least capital among front points whose solvency loss is at
            most ``(1 + value)`` times the lowest found; ``weighted``: the least
            ``solvency loss + value x capital locked`` (``value`` in USD of loss per USD of
            capital, the price put on locked capital over an episode).
        value: The rule's parameter (>= 0).
    """

    kind: str
    value: float

    def text(self) -> str:
        """The rule as ``--rule`` takes it (``loss_within=0.1``)."""
        return f"{self.kind}={self.value:g}"

    def describe(self) -> str:
        """The rule in words, for reports."""
        if self.kind == "loss_within":
            return (
                f"the least capital locked among the Pareto front's points whose solvency loss "
                f"is within {self.value:.0%} of the lowest found (rule {self.text()})"
            )
        return (
            f"the least solvency loss + {self.value:g} x capital locked on the Pareto front "
            f"(rule {self.text()})"
        )

    def pick(self, loss_usd: Sequence[float], capital_usd: Sequence[float]) -> int:
        """The index of the chosen point among the given (front) points.

        Ties go to the lower loss, then to the earlier point.

        Raises:
            FrontierError: No points.
        """
        if not loss_usd:
            raise FrontierError("no complete trial to choose from")
        order = range(len(loss_usd))
        if self.kind == "loss_within":
            bound = min(loss_usd) * (1.0 + self.value)
            within = [i for i in order if loss_usd[i] <= bound]
            return min(within, key=lambda i: (capital_usd[i], loss_usd[i], i))
        return min(order, key=lambda i: (loss_usd[i] + self.value * capital_usd[i], loss_usd[i], i))


#: The rules :func:`parse_rule` knows, with what their value means.
RULES = {
    "loss_within": "FRAC >= 0: least capital among points with loss <= (1 + FRAC) x the lowest",
    "weighted": "W >= 0: least (loss + W x capital)",
}
#: ``best_static``'s rule unless the user names another.
DEFAULT_RULE = SelectionRule("loss_within", 0.1)


def parse_rule(text: str, option: str = "--rule") -> SelectionRule:
    """A :class:`SelectionRule` from ``NAME=VALUE`` (``loss_within=0.1``, ``weighted=0.01``).

    Raises:
        FrontierError: An unknown name, or a value that is not a finite number >= 0.
    """
    name, sep, raw = text.strip().partition("=")
    allowed = "; ".join(f"{k}={v}" for k, v in RULES.items())
    if not sep or name not in RULES:
        raise FrontierError(f"{option} {text!r}: expected NAME=VALUE, one of: {allowed}")
    try:
        value = float(raw)
    except ValueError:
        raise FrontierError(f"{option} {text!r}: {raw!r} is not a number ({allowed})") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise FrontierError(f"{option} {text!r}: the value must be finite and >= 0, got {raw}")
    return SelectionRule(name, value)


# --------------------------------------------------------------------------------------------
# Pareto dominance
# --------------------------------------------------------------------------------------------


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether point ``a`` Pareto-dominates ``b``: no worse in both, better in one (minimised)."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Whether each point is on the Pareto front (dominated by no other point)."""
    return [not any(dominates(q, p) for q in points) for p in points]


def dominated_by(point: tuple[float, float], front: Sequence[tuple[float, float]]) -> int | None:
    """The index of the front point that dominates ``point`` with the least capital, or None.

    The least-capital dominating point is the one that shows how much cheaper the same or
    better safety is.
    """
    hits = [i for i, q in enumerate(front) if dominates(q, point)]
    return min(hits, key=lambda i: (front[i][1], front[i][0])) if hits else None


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One scored static set of a study.

    Attributes:
        number: Optuna's trial number (the order trials were asked in).
        values: Every lever of :data:`STATIC_PARAMS`, natural units.
        engine: The engine it ran under (the fund and vault it actually started with).
        solvency_loss_usd: Mean solvency loss per episode over every scenario and episode.
        capital_locked_usd: Mean capital locked (fund + vault equity + maintenance margin) per
            episode.
        mean_reward: The old grid search's objective (mean episode reward, per scenario then
            averaged), kept for comparison.
        source: ``grid`` (an enqueued point of the old grid), ``preset:<name>`` (an enqueued
            venue preset) or ``nsga2``.
        generation: The NSGA-II generation (0: the grid and the presets).
    """

    number: int
    values: dict[str, float]
    engine: Engine
    solvency_loss_usd: float
    capital_locked_usd: float
    mean_reward: float
    source: str
    generation: int

    @property
    def point(self) -> tuple[float, float]:
        """(solvency loss, capital locked): the two objectives."""
        return (self.solvency_loss_usd, self.capital_locked_usd)

    def spec(self) -> PolicySpec:
        """The static policy this trial ran: its levers under its engine."""
        return static_spec(self.values, self.engine)


@dataclass
class FrontierResult:
    """The outcome of :func:`search_frontier`.

    Attributes:
        settings: What determines the study (stored with it; a resumed study must match).
        trials: The study's first ``trials`` complete trials, by number.
        pareto: Per trial, whether it is on the Pareto front of ``trials``.
        dominated_by: Per trial, the number of the front trial that dominates it with the
            least capital (None on the front).
        chosen: The number of the trial the rule picks (``best_static``).
        rule: The rule.
        new_trials: Trials run by this call (0: the study already held enough).
        wall_s: This call's wall time.
        storage: Where the study is stored (None: in memory only).
        study_name: The study's name in ``storage``.
        grid: The old grid's points (levers), enqueued in generation 0 under the
            environment's engine.
        presets: The venue presets enqueued in generation 0, after the grid.
    """

    settings: dict[str, Any]
    trials: list[Trial]
    pareto: list[bool]
    dominated_by: list[int | None]
    chosen: int
    rule: SelectionRule
    new_trials: int
    wall_s: float
    storage: str | None
    study_name: str
    grid: list[dict[str, float]]
    presets: list[str]

    def trial(self, number: int) -> Trial:
        """The trial numbered ``number``."""
        return next(t for t in self.trials if t.number == number)

    @property
    def front(self) -> list[Trial]:
        """The Pareto front's trials, by capital locked."""
        on = [t for t, p in zip(self.trials, self.pareto, strict=True) if p]
        return sorted(on, key=lambda t: (t.capital_locked_usd, t.solvency_loss_usd))


def settings_key(
    base: dict[str, Any],
    scenarios: Sequence[str],
    episodes: int,
    seed: int,
    grid: Sequence[dict[str, float]],
    presets: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything that determines a study's scores; stored with the study and checked on resume.

    A study of another search space (the levers alone, before the engine was searched), other
    first-generation points or other objectives has other settings, so it is refused.
    """
    return {
        "env": jsonable(base),
        "scenarios": list(scenarios),
        "episodes": episodes,
        "seed": seed,
        "levers": {
            n: {"low": PARAMS[n].low, "high": PARAMS[n].high, "log": PARAMS[n].log}
            for n in STATIC_PARAMS
        },
        "engine": {
            "liquidation_mode": list(LIQUIDATION_MODES),
            "adl_policy": list(ADL_POLICIES),
            "margin_tiers": list(MARGIN_TIERS),
            "backstop": list(BACKSTOPS),
            "fund_to_oi_frac": {"low": FUND_RANGE[0], "high": FUND_RANGE[1], "log": True},
            "vault_to_oi_frac": {"low": VAULT_RANGE[0], "high": VAULT_RANGE[1], "log": True},
        },
        "grid": [jsonable(p) for p in grid],
        "grid_engine": env_engine(base).settings(),
        "presets": {
            name: {"values": PRESETS[name].values, "engine": PRESETS[name].engine.settings()}
            for name in presets
        },
        "population": len(grid) + len(presets),
        "objectives": {k: list(v) for k, v in OBJECTIVE_COLUMNS.items()},
        "sampler": SAMPLER,
        "fundgym": __version__,
    }


def settings_digest(settings: dict[str, Any]) -> str:
    """A short hash of ``settings`` (names a cached study)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _load_study(
    storage: str | None, study_name: str, settings: dict[str, Any], seed: int
) -> optuna.Study:
    """Open (or create) the study, check its settings, and seed its sampler for this call."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=["minimize", "minimize"],
            load_if_exists=True,
        )
    except (ValueError, ImportError) as exc:  # a storage URL SQLAlchemy cannot open
        raise FrontierError(f"--storage {storage!r}: cannot open the study: {exc}") from None
    stored = study.user_attrs.get("settings")
    if stored is None:
        if study.trials:
            raise FrontierError(
                f"study {study_name!r} in {storage}: not a fundgym frontier study (it has trials "
                "but no settings); choose another --study-name"
            )
        study.set_user_attr("settings", settings)
    elif stored != settings:
        differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        raise FrontierError(
            f"study {study_name!r} in {storage} was searched with other settings "
            f"({', '.join(differ)} differ); a study resumes only with the same ones: choose "
            "another --study-name or --storage, or repeat the original settings"
        )
    # A run killed mid-generation leaves trials RUNNING: they are failed, and asked again.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        _fail(study, t)
    population = int(settings["population"])
    study.sampler = optuna.samplers.NSGAIISampler(
        population_size=population, seed=(seed + len(study.trials)) % 2**32
    )
    return study


def _ask(study: optuna.Study) -> tuple[optuna.trial.Trial, dict[str, float], Engine]:
    """A new trial, its static set and engine, its NSGA-II generation and its source recorded.

    The sampler records the generation of the trials it samples, but not of an enqueued one
    (the grid and the presets); without it they would not count as generation 0, and the
    first bred generation would be drawn at random instead of from them. The source of an
    enqueued point came with it from the queue (:func:`_enqueue`), not from its values: a
    bred set can land on a grid point exactly (crossover swaps whole coordinates).
    """
    import optuna

    trial = study.ask()
    sampler = study.sampler
    if isinstance(sampler, optuna.samplers.NSGAIISampler):
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        sampler.get_trial_generation(study, next(t for t in running if t.number == trial.number))
    if "source" not in trial.user_attrs:
        trial.set_user_attr("source", "nsga2")
    values = {
        n: trial.suggest_float(n, PARAMS[n].low, PARAMS[n].high, log=PARAMS[n].log)
        for n in STATIC_PARAMS
    }
    params: dict[str, Any] = {
        "liquidation_mode": trial.suggest_categorical("liquidation_mode", LIQUIDATION_MODES),
        "adl_policy": trial.suggest_categorical("adl_policy", ADL_POLICIES),
        "margin_tiers": trial.suggest_categorical("margin_tiers", MARGIN_TIERS),
        "backstop": trial.suggest_categorical("backstop", BACKSTOPS),
        "fund_to_oi_frac": trial.suggest_float("fund_to_oi_frac", *FUND_RANGE, log=True),
        "vault_to_oi_frac": trial.suggest_float("vault_to_oi_frac", *VAULT_RANGE, log=True),
    }
    return trial, values, decode_engine(params)


def decode_engine(params: dict[str, Any]) -> Engine:
    """The engine a trial's parameters run: a size counts only where ``backstop`` starts it.

    A fund (vault) that ``backstop`` leaves out starts at 0, whatever its size parameter (the
    sampler still draws one, which a child may inherit with a ``backstop`` that uses it); a
    vault under liquidation mode ``partial``, which hands no account to one, is 0.
    """
    backstop = str(params["backstop"])
    mode = cast(LiquidationMode, str(params["liquidation_mode"]))
    with_fund = backstop in ("fund", "fund_and_vault")
    with_vault = backstop in ("vault", "fund_and_vault") and mode != "partial"
    return Engine(
        liquidation_mode=mode,
        adl_policy=cast(AdlPolicy, str(params["adl_policy"])),
        margin_tiers=str(params["margin_tiers"]),
        fund_to_oi_frac=float(params["fund_to_oi_frac"]) if with_fund else 0.0,
        vault_to_oi_frac=float(params["vault_to_oi_frac"]) if with_vault else 0.0,
    )


def encode_engine(engine: Engine, what: str) -> dict[str, Any]:
    """The trial parameters of ``engine`` (an enqueued point); the inverse of :func:`decode_engine`.

    A size the engine does not start with is left out: the sampler draws it, and it does not
    act (:func:`decode_engine`).

    Raises:
        FrontierError: A setting outside the search space (``what`` names the point).
    """
    fund, vault = engine.fund_to_oi_frac, engine.vault_to_oi_frac
    for name, value, (low, high) in (
        ("fund_to_oi_frac", fund, FUND_RANGE),
        ("vault_to_oi_frac", vault, VAULT_RANGE),
    ):
        if value != 0.0 and not low <= value <= high:
            raise FrontierError(
                f"{what}: {name} = {value:g} is outside the searched range [{low:g}, {high:g}] "
                "(or 0: none)"
            )
    if vault > 0.0 and engine.liquidation_mode == "partial":
        raise FrontierError(f"{what}: a vault needs a liquidation mode other than 'partial'")
    backstop = {(True, False): "fund", (False, True): "vault", (True, True): "fund_and_vault"}
    params: dict[str, Any] = {
        "liquidation_mode": engine.liquidation_mode,
        "adl_policy": engine.adl_policy,
        "margin_tiers": engine.margin_tiers,
        "backstop": backstop.get((fund > 0.0, vault > 0.0), "none"),
    }
    if fund > 0.0:
        params["fund_to_oi_frac"] = fund
    if vault > 0.0:
        params["vault_to_oi_frac"] = vault
    return params


def first_generation(
    base: dict[str, Any], grid: Sequence[dict[str, float]], presets: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The enqueued points, (source, trial parameters): the grid, then the venue presets.

    The grid's points run under the evaluation environment's engine, so they are the old
    grid exactly; each preset under its own.

    Raises:
        FrontierError: An unknown preset, or a point outside the search space.
    """
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise FrontierError(f"preset {unknown[0]!r}: allowed {list(PRESETS)}")
    grid_engine = encode_engine(env_engine(base), "the environment's engine (the grid's)")
    points = [("grid", {**dict(p), **grid_engine}) for p in grid]
    for name in presets:
        preset = PRESETS[name]
        engine = encode_engine(preset.engine, f"preset {name!r}")
        points.append((f"preset:{name}", {**preset.values, **engine}))
    return points


def _enqueue(study: optuna.Study, source: str, params: dict[str, Any]) -> None:
    """Queue a point for the next ask, with its source (``grid``, ``preset:<name>``)."""
    study.enqueue_trial(params, user_attrs={"source": source, "enqueued": params})


def _fail(study: optuna.Study, trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> None:
    """Mark ``trial`` failed; an enqueued point goes back into the queue, so it is never lost."""
    import optuna

    enqueued = trial.user_attrs.get("enqueued")
    if enqueued is not None:
        _enqueue(study, str(trial.user_attrs["source"]), dict(enqueued))
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _to_fill(study: optuna.Study, population: int) -> int:
    """How many trials the current generation still lacks (a whole one when it is full).

    A search stopped after ``--trials 50`` with a population of 24 leaves generation 2 with 2
    trials; resuming asks for the 22 that complete it first, so a study grown in steps has
    the generations of one grown at once.
    """
    key = "NSGAIISampler:generation"
    gens = [int(t.system_attrs.get(key, 0)) for t in _complete(study)]
    if not gens:
        return population
    in_last = gens.count(max(gens))
    return population - in_last if in_last < population else population


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.number)


def _objective_values(rows: Sequence[Row]) -> tuple[float, float, float]:
    """(solvency loss, capital locked, mean reward) of one candidate's rows."""
    s = summarize_policies(rows)[0]
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(str(r["scenario"]), []).append(float(r["total_reward"]))
    reward = float(np.mean([np.mean(v) for v in by.values()]))
    loss, capital = (sum(float(s[c]) for c in OBJECTIVE_COLUMNS[o]) for o in OBJECTIVES)
    return loss, capital, reward


def search_frontier(
    base: dict[str, Any],
    scenarios: Sequence[str],
    episodes: int,
    seed: int,
    trials: int,
    *,
    grid: Sequence[dict[str, float]],
    presets: Sequence[str] = tuple(PRESETS),
    workers: int,
    storage: str | None = None,
    study_name: str = "frontier",
    rule: SelectionRule = DEFAULT_RULE,
    backend: str = "local",
    address: str | None = None,
    progress: bool = False,
    label: str = "frontier",
    on_generation: Callable[[int, int], None] | None = None,
) -> FrontierResult:
    """Search the static sets' frontier until the study holds ``trials`` complete trials.

    Args:
        base: The evaluation environment's settings (:func:`fundgym.agents.rollout.base_env`).
        scenarios: Scenario names (``training``: training-sampler draws).
        episodes: Episodes per scenario for every candidate (seeds ``seed + i``).
        seed: First episode seed; also seeds the sampler.
        trials: Complete trials the study must hold (the grid and the presets count).
        grid: Points enqueued first (full natural-unit values of :data:`STATIC_PARAMS`), run
            under the environment's engine (the old grid).
        presets: Venue presets (:data:`PRESETS` names) enqueued after the grid, each under
            its own engine. The grid's and the presets' number is the population (>= 2).
        workers: Worker processes, or the CPUs of a local Ray instance.
        storage: Optuna storage URL (``sqlite:///path.db``); None keeps the study in memory.
        study_name: The study's name in ``storage``.
        rule: How ``best_static`` is picked from the front.
        backend: Where episodes run (:data:`fundgym.agents.evaluate.backends.BACKENDS`).
        address: A Ray cluster to join (``ray`` only).
        progress: Show a progress bar.
        label: The progress bar's name.
        on_generation: Called after each generation with (complete trials, trials wanted).

    Raises:
        FrontierError: A first generation too small or outside the search space, or a
            stored study of other settings.
        EvaluateError: An episode that cannot be scored (its trials are failed first).
    """
    first = first_generation(base, grid, presets)
    if len(first) < 2:
        raise FrontierError(
            f"the grid and the presets need at least 2 points (the population), got {len(first)}"
        )
    t0 = time.perf_counter()
    settings = settings_key(base, scenarios, episodes, seed, grid, presets)
    study = _load_study(storage, study_name, settings, seed)
    if not study.trials:
        for source, params in first:
            _enqueue(study, source, params)
    population = len(first)
    missing = trials - len(_complete(study))
    bar = progress_bar(max(missing, 0) * len(scenarios) * episodes, label, progress)
    new = 0
    while missing > 0:
        asked = [_ask(study) for _ in range(min(_to_fill(study, population), missing))]
        batch = [t for t, _, _ in asked]
        try:
            per_point = run_policies(
                [static_spec(v, e) for _, v, e in asked], scenarios, base, episodes, seed,
                rows_only=True, workers=workers, backend=backend, address=address,
                progress=lambda j: bar.update(j.episodes),
            )  # fmt: skip
        except BaseException:
            for t in batch:
                _fail(study, t)
            raise
        for t, rows in zip(batch, per_point, strict=True):
            loss, capital, reward = _objective_values(rows)
            t.set_user_attr("mean_reward", reward)
            study.tell(t, [loss, capital])
        new += len(batch)
        missing = trials - len(_complete(study))
        if on_generation is not None:
            on_generation(trials - max(missing, 0), trials)
    bar.close()
    wall_s = time.perf_counter() - t0
    return _result(study, settings, trials, rule, new, wall_s, storage, grid, presets)


def _result(
    study: optuna.Study,
    settings: dict[str, Any],
    trials: int,
    rule: SelectionRule,
    new: int,
    wall_s: float,
    storage: str | None,
    grid: Sequence[dict[str, float]],
    presets: Sequence[str],
) -> FrontierResult:
    """The first ``trials`` complete trials of ``study``, their front and the chosen point."""
    key = "NSGAIISampler:generation"
    done = _complete(study)[:trials]
    scored = [
        Trial(
            number=t.number,
            values={n: float(t.params[n]) for n in STATIC_PARAMS},
            engine=decode_engine(t.params),
            solvency_loss_usd=float(t.values[0]),
            capital_locked_usd=float(t.values[1]),
            mean_reward=float(t.user_attrs.get("mean_reward", math.nan)),
            source=str(t.user_attrs.get("source", "nsga2")),
            generation=int(t.system_attrs.get(key, 0)),
        )
        for t in done
    ]
    points = [t.point for t in scored]
    pareto = pareto_front(points)
    front = [t for t, p in zip(scored, pareto, strict=True) if p]
    front_points = [t.point for t in front]
    by: list[int | None] = []
    for t, on in zip(scored, pareto, strict=True):
        i = None if on else dominated_by(t.point, front_points)
        by.append(None if i is None else front[i].number)
    chosen = front[
        rule.pick([t.solvency_loss_usd for t in front], [t.capital_locked_usd for t in front])
    ].number
    return FrontierResult(
        settings=settings,
        trials=scored,
        pareto=pareto,
        dominated_by=by,
        chosen=chosen,
        rule=rule,
        new_trials=new,
        wall_s=wall_s,
        storage=storage,
        study_name=study.study_name,
        grid=[dict(p) for p in grid],
        presets=list(presets),
    )


# --------------------------------------------------------------------------------------------
# Policies placed on the same axes
# --------------------------------------------------------------------------------------------


@dataclass
class PlacedPolicy:
    """A policy scored on the frontier's scenarios and seeds.

    Attributes:
        name: The policy's name (``static:dydx``, ``rule``, a run's folder name).
        kind: ``static``, ``rule``, ``trained``, ...
        solvency_loss_usd: Mean solvency loss per episode.
        capital_locked_usd: Mean capital locked per episode.
        dominated_by: The front trial that dominates it with the least capital (None: not
            dominated by any searched static set).
        note: What the policy is.
    """

    name: str
    kind: str
    solvency_loss_usd: float
    capital_locked_usd: float
    dominated_by: int | None
    note: str = ""


def place_policies(
    result: FrontierResult,
    specs: Sequence[PolicySpec],
    base: dict[str, Any],
    *,
    workers: int,
    backend: str = "local",
    address: str | None = None,
    progress: bool = False,
) -> list[PlacedPolicy]:
    """Score ``specs`` on the frontier's own scenarios, episodes and seeds, and mark dominance."""
    s = result.settings
    scenarios, episodes, seed = list(s["scenarios"]), int(s["episodes"]), int(s["seed"])
    bar = progress_bar(len(specs) * len(scenarios) * episodes, "policies", progress)
    per_policy = run_policies(
        specs, scenarios, base, episodes, seed, rows_only=True, workers=workers,
        backend=backend, address=address, progress=lambda j: bar.update(j.episodes),
    )  # fmt: skip
    bar.close()
    front_points = [t.point for t in result.front]
    front_numbers = [t.number for t in result.front]
    out = []
    for spec, rows in zip(specs, per_policy, strict=True):
        loss, capital, _ = _objective_values(rows)
        i = dominated_by((loss, capital), front_points)
        out.append(
            PlacedPolicy(
                name=spec.name,
                kind=spec.kind,
                solvency_loss_usd=loss,
                capital_locked_usd=capital,
                dominated_by=None if i is None else front_numbers[i],
                note=spec.note or "",
            )
        )
    return out


def grid_comparison(result: FrontierResult, source: str = "grid") -> list[dict[str, Any]]:
    """For each enqueued point: on the front, or dominated by which trial.

    The grid's points and the presets are enqueued into every study, so each is either on
    the front (no searched set improves on it: "matched") or dominated by a front point; the
    row says which, and whether that point came from the search, the grid or a preset.

    Args:
        result: The search.
        source: ``grid`` (the old grid's points) or ``preset`` (the venue presets).
    """
    rows = []
    for t, on, by in zip(result.trials, result.pareto, result.dominated_by, strict=True):
        if t.source.partition(":")[0] != source:
            continue
        winner = None if by is None else result.trial(by)
        rows.append(
            {
                "trial": t.number,
                "source": t.source,
                "values": t.values,
                "engine": t.engine.settings(),
                "solvency_loss_usd": t.solvency_loss_usd,
                "capital_locked_usd": t.capital_locked_usd,
                "status": "on the front (matched)" if on else "dominated",
                "dominated_by": by,
                "dominated_by_source": None if winner is None else winner.source,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

#: The files ``fundgym frontier`` writes into its ``--out`` (the study's database besides,
#: ``frontier.db``, unless ``--storage`` puts it elsewhere).
FRONTIER_FILES = (
    "frontier.json",
    "frontier.csv",
    "frontier.md",
    "frontier.png",
    "config.yaml",
    "command.txt",
)
#: ``frontier.json``'s kind.
FRONTIER_KIND = "fundgym.frontier"


def frontier_json(
    result: FrontierResult, policies: Sequence[PlacedPolicy], command: str, created_utc: str
) -> dict[str, Any]:
    """The content of ``frontier.json``: settings, rule, every trial, the front, the policies."""
    chosen = result.trial(result.chosen)
    content: dict[str, Any] = jsonable(
        {
            "kind": FRONTIER_KIND,
            "command": command,
            "created_utc": created_utc,
            "objectives": {
                "solvency_loss_usd": "mean per episode of socialised + unrecovered loss + "
                "deleveraged notional (minimised)",
                "capital_locked_usd": "mean per episode of the fund's value + the backstop "
                "vault's equity + maintenance margin locked, averaged over the episode "
                "(minimised)",
            },
            "settings": result.settings,
            "storage": result.storage,
            "study_name": result.study_name,
            "trials": len(result.trials),
            "new_trials": result.new_trials,
            "wall_s": round(result.wall_s, 3),
            "rule": {"text": result.rule.text(), "description": result.rule.describe()},
            "best_static": {
                "trial": chosen.number,
                "values": chosen.values,
                "engine": chosen.engine.settings(),
                "spec": chosen.spec().name,
                "solvency_loss_usd": chosen.solvency_loss_usd,
                "capital_locked_usd": chosen.capital_locked_usd,
            },
            "front": [t.number for t in result.front],
            "all_trials": [
                {
                    "trial": t.number,
                    "source": t.source,
                    "generation": t.generation,
                    "values": t.values,
                    "engine": t.engine.settings(),
                    "solvency_loss_usd": t.solvency_loss_usd,
                    "capital_locked_usd": t.capital_locked_usd,
                    "mean_reward": t.mean_reward,
                    "pareto": on,
                    "dominated_by": by,
                }
                for t, on, by in zip(result.trials, result.pareto, result.dominated_by, strict=True)
            ],
            "policies": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "solvency_loss_usd": p.solvency_loss_usd,
                    "capital_locked_usd": p.capital_locked_usd,
                    "dominated": p.dominated_by is not None,
                    "dominated_by": p.dominated_by,
                    "note": p.note,
                }
                for p in policies
            ],
            "grid_comparison": grid_comparison(result),
            "preset_comparison": grid_comparison(result, "preset"),
        }
    )
    return content


def frontier_csv(result: FrontierResult) -> str:
    """``frontier.csv``: one row per trial: levers, engine, objectives, front flag, dominator."""
    head = [
        "trial",
        "source",
        "generation",
        *STATIC_PARAMS,
        *ENGINE_KEYS,
        *OBJECTIVES,
        "mean_reward",
        "pareto",
        "dominated_by",
        "best_static",
    ]
    lines = [",".join(head)]
    for t, on, by in zip(result.trials, result.pareto, result.dominated_by, strict=True):
        cells = [
            str(t.number),
            t.source,
            str(t.generation),
            *(repr(t.values[n]) for n in STATIC_PARAMS),
            *(str(v) for v in t.engine.settings().values()),
            repr(t.solvency_loss_usd),
            repr(t.capital_locked_usd),
            repr(t.mean_reward),
            str(on).lower(),
            "" if by is None else str(by),
            str(t.number == result.chosen).lower(),
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _usd(x: float) -> str:
    return f"${x:,.0f}"


def _levers(values: dict[str, float], engine: Engine | dict[str, Any] | None = None) -> str:
    """The levers, and the engine when given, for a table cell."""
    text = ", ".join(f"{n} {values[n]:.4g}" for n in STATIC_PARAMS)
    if engine is None:
        return text
    e = engine if isinstance(engine, Engine) else Engine(**engine)
    return f"{text}; {e.describe()}"


def frontier_md(result: FrontierResult, policies: Sequence[PlacedPolicy], command: str) -> str:
    """``frontier.md``: the settings, the rule and its pick, the front, policies, grid, presets."""
    s = result.settings
    chosen = result.trial(result.chosen)
    grid = grid_comparison(result)
    presets = grid_comparison(result, "preset")
    beaten = sum(1 for g in grid if g["dominated_by_source"] == "nsga2")
    matched = sum(1 for g in grid if g["status"].startswith("on the front"))
    first = f"the {len(result.grid)}-point grid"
    if result.presets:
        first += f" and the presets {', '.join(result.presets)}"
    lines = [
        "# Solvency-vs-capital frontier of static parameter sets",
        "",
        f"`{command}`",
        "",
        f"{len(result.trials)} trials (NSGA-II, population {s['population']}, {first} as "
        f"generation 0) on {', '.join(s['scenarios'])}, {s['episodes']} episodes each (seeds "
        f"{s['seed']} .. {s['seed'] + s['episodes'] - 1}, the same for every set). A set is "
        "the levers and the engine (liquidation mode, ADL ranking, margin tiers, the fund's "
        "and the vault's starting sizes). Both objectives are means per episode, minimised: "
        "solvency loss (socialised + unrecovered + deleveraged notional) and capital locked "
        "(fund + the backstop vault's equity + maintenance margin).",
        "",
        f"**best_static** is {result.rule.describe()}: trial {chosen.number} "
        f"({chosen.source}), loss {_usd(chosen.solvency_loss_usd)}, capital "
        f"{_usd(chosen.capital_locked_usd)} ({_levers(chosen.values, chosen.engine)}).",
        "",
        f"**The old grid:** of its {len(grid)} points, {beaten} are dominated by a searched "
        f"set, {len(grid) - beaten - matched} by another enqueued point, and {matched} are on "
        "the front (matched, not beaten).",
        "",
        "## The Pareto front",
        "",
        "| trial | source | solvency loss | capital locked | levers; engine |",
        "|---:|---|---:|---:|---|",
    ]
    for t in result.front:
        mark = " (best_static)" if t.number == result.chosen else ""
        lines.append(
            f"| {t.number}{mark} | {t.source} | {_usd(t.solvency_loss_usd)} | "
            f"{_usd(t.capital_locked_usd)} | {_levers(t.values, t.engine)} |"
        )
    if policies:
        lines += [
            "",
            "## Policies on the same scenarios and seeds",
            "",
            "| policy | solvency loss | capital locked | dominated by a searched static set |",
            "|---|---:|---:|---|",
        ]
        for p in policies:
            if p.dominated_by is None:
                verdict = "no"
            else:
                d = result.trial(p.dominated_by)
                verdict = (
                    f"yes: trial {d.number} ({d.source}; {_usd(d.solvency_loss_usd)}, "
                    f"{_usd(d.capital_locked_usd)})"
                )
            lines.append(
                f"| {p.name} | {_usd(p.solvency_loss_usd)} | {_usd(p.capital_locked_usd)} | "
                f"{verdict} |"
            )
    for title, rows in (("The venue presets", presets), ("The old grid", grid)):
        if not rows:
            continue
        lines += [
            "",
            f"## {title}, point by point",
            "",
            "| trial | source | levers; engine | solvency loss | capital locked | status |",
            "|---:|---|---|---:|---:|---|",
        ]
        for g in rows:
            status = str(g["status"])
            if g["dominated_by"] is not None:
                status = f"dominated by trial {g['dominated_by']} ({g['dominated_by_source']})"
            lines.append(
                f"| {g['trial']} | {g['source']} | {_levers(g['values'], g['engine'])} | "
                f"{_usd(g['solvency_loss_usd'])} | {_usd(g['capital_locked_usd'])} | {status} |"
            )
    return "\n".join(lines) + "\n"


def frontier_figure(result: FrontierResult, policies: Sequence[PlacedPolicy]) -> Any:
    """The frontier plot: every trial, the front, the grid, the presets, best_static, policies.

    Capital locked on x, solvency loss on y (both in USD per episode; lower-left is better).
    A policy's label says whether a searched static set dominates it; a venue preset placed
    as a policy sits on its own enqueued trial (the same set, seeds and scores).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.6))
    searched = [t for t in result.trials if t.source == "nsga2"]
    grid = [t for t in result.trials if t.source == "grid"]
    enqueued = [t for t in result.trials if t.source.startswith("preset:")]
    hollow = {"facecolors": "none", "zorder": 2}
    groups: list[tuple[list[Trial], str, dict[str, Any]]] = [
        (searched, "searched static sets", {"s": 12, "color": "0.7", "zorder": 1}),
        (grid, "old grid", {"s": 28, "marker": "s", "edgecolors": "0.35", **hollow}),
    ]
    if enqueued:
        groups.append(
            (enqueued, "venue presets as trials", {"s": 60, "edgecolors": "black", **hollow})
        )
    for trials, what, style in groups:
        ax.scatter(
            [t.capital_locked_usd for t in trials],
            [t.solvency_loss_usd for t in trials],
            label=f"{what} ({len(trials)})",
            **style,
        )
    front = result.front
    ax.plot(
        [t.capital_locked_usd for t in front],
        [t.solvency_loss_usd for t in front],
        "-o",
        color="tab:red",
        markersize=4,
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    chosen = result.trial(result.chosen)
    ax.scatter(
        [chosen.capital_locked_usd],
        [chosen.solvency_loss_usd],
        s=220,
        marker="*",
        color="gold",
        edgecolors="black",
        label=f"best_static ({result.rule.text()})",
        zorder=5,
    )
    markers = ["D", "^", "v", "P", "X", "h", "<", ">", "p", "8"]
    for k, p in enumerate(policies):
        state = "dominated" if p.dominated_by is not None else "not dominated"
        ax.scatter(
            [p.capital_locked_usd],
            [p.solvency_loss_usd],
            s=70,
            marker=markers[k % len(markers)],
            color=f"C{k % 10}",
            edgecolors="black",
            label=f"{p.name} ({state})",
            zorder=4,
        )
    ax.set_xscale("log")
    losses = [t.solvency_loss_usd for t in result.trials] + [p.solvency_loss_usd for p in policies]
    if min(losses) > 0.0:
        ax.set_yscale("log")
    else:  # a zero loss: linear near 0, logarithmic above
        ax.set_yscale("symlog", linthresh=_linthresh(losses))
        ax.set_ylim(bottom=0.0)  # no negative losses; the points at 0 sit on the axis
        for artist in (*ax.collections, *ax.lines):
            artist.set_clip_on(False)
    ax.set_xlabel("capital locked per episode (fund + maintenance margin + vault), USD")
    ax.set_ylabel("solvency loss per episode (socialised + unrecovered + ADL), USD")
    s = result.settings
    ax.set_title(
        f"Static sets: solvency vs capital ({len(result.trials)} NSGA-II trials, "
        f"{', '.join(s['scenarios'])} x {s['episodes']} episodes)",
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    return fig


def _linthresh(losses: Sequence[float]) -> float:
    """The loss below which a symlog axis is linear: a tenth of the smallest positive loss."""
    positive = [x for x in losses if x > 0.0]
    return max(1.0, 0.1 * min(positive)) if positive else 1.0
