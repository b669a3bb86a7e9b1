"""Evaluate policies on crash scenarios, every policy on the same scenarios and seeds.

:func:`evaluate` runs each policy through each scenario for ``episodes`` episodes (episode
``i`` of every scenario seeded ``seed + i`` for every policy, so the market paths and trader
books are identical across policies and only the parameters differ), records every decision
step (:class:`agents.metrics.EpisodeRecord`), and writes into the output directory:

* ``metrics.csv``: one row per policy x scenario x episode (:data:`agents.metrics.
  EPISODE_COLUMNS`, then the mean of each parameter);
* ``summary.json``: per (policy, scenario) and per policy, every metric's mean with a 95%
  interval, bad-debt VaR/ES and the probability the fund is exhausted; each policy's dominance
  test against ``best_static`` and the share of the ``best_static`` -> ``hindsight_static``
  gap it closes; the static searches' results;
* ``report.md``, ``report.html`` and ``plots/`` (:mod:`agents.report`);
* ``config.yaml``: everything that made the run (policies as resolved, scenarios, seeds,
  environment settings, search grid), and ``command.txt``.

The directory is built under a temporary name and renamed into place at the end, so a failed
or interrupted evaluation leaves nothing half-written.

**Searched baselines.** ``best_static`` is the best point of a grid of static parameter sets
(:data:`GRID`) by mean episode reward on fresh draws of the training sampler, the only data an
operator has before a crash; it is cached (:func:`search_static`) with the settings that
produced it. ``hindsight_static`` runs the same search on the evaluation scenarios and seeds
themselves: an upper bound for any static choice, which no operator could have made.

Jobs (policy x scenario, and grid point x scenario for the searches) run in parallel worker
processes (``workers``); each job steps its episodes as one batched array program.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.metrics import (
    STEP_FIELDS,
    EpisodeRecord,
    Row,
    dominates,
    episode_metrics,
    summarize,
    summarize_policies,
)
from agents.outputs import jsonable, progress_bar, write_text_atomic
from agents.policies import (
    STATIC_PARAMS,
    Policy,
    PolicySpec,
    SpecError,
    build_policy,
    parse_spec,
)
from envs.controls import DEFAULTS
from envs.exchange_env import EnvConfig, InsuranceFundVectorEnv, make_config
from envs.scenarios import library, load_scenario
from envs.schema import SchemaError

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN_CONFIG = REPO_ROOT / "configs" / "train" / "ppo.yaml"

#: The calibrated historical crashes (``--scenarios crashes``).
CRASHES: tuple[str, ...] = (
    "black_thursday_2020",
    "may_19_2021",
    "luna_2022",
    "ftx_2022",
    "oct_10_2025",
    "venue_flash_wick",
    "oracle_manipulation",
)

#: The static search grid: liquidation fee x MMR x trading-fee share to the fund (fee all to
#: the fund, IMR at 5/3 x MMR, the fund in stable assets): 24 sets spanning the venues'.
GRID: dict[str, tuple[float, ...]] = {
    "liquidation_fee_rate": (0.005, 0.015, 0.03),
    "mmr": (0.01, 0.03, 0.06, 0.1),
    "trading_fee_fund_share": (0.1, 0.5),
}

#: Seeds of the training-sampler draws ``best_static`` is searched on (no training or
#: model-selection episode uses them).
SEARCH_SEED = 2_000_003
SEARCH_EPISODES = 16

#: Environment settings a trained policy must share with the evaluation environment (the
#: others: scenario, horizon, reward weights, controlled and fixed, may differ).
_MUST_MATCH = (
    "n_accounts",
    "decision_minutes",
    "max_step",
    "margin_notice_minutes",
    "fund_to_oi_frac",
    "insolvency_frac",
    "fallback",
    "taker_fee_rate",
    "rebalance_threshold",
    "population_minutes",
)


class EvaluateError(ValueError):
    """An evaluation that cannot run as asked (the message says why and what is allowed)."""


# ------------------------------------------------------------------ settings ----


def parse_scenarios(items: Iterable[str]) -> list[str]:
    """Scenario names from ``--scenarios`` (comma-separated, repeatable; ``crashes`` = all).

    Each is a library name, a YAML path or ``training`` (sampler draws); every one is loaded
    once here, so a typo fails before any work starts.
    """
    out: list[str] = []
    for item in items:
        for name in (s.strip() for s in item.split(",")):
            if not name:
                continue
            names = list(CRASHES) if name == "crashes" else [name]
            for n in names:
                if n != "training":
                    try:
                        load_scenario(n)
                    except (FileNotFoundError, SchemaError) as exc:
                        raise EvaluateError(f"--scenarios: {exc}") from exc
                if n not in out:
                    out.append(n)
    if not out:
        raise EvaluateError(
            f"--scenarios: no scenario given; library: {sorted(library())}, 'crashes', 'training'"
        )
    return out


def env_settings(cfg: EnvConfig) -> dict[str, Any]:
    """An env config as plain keyword arguments (tuples for ``controlled``)."""
    kw = dataclasses.asdict(cfg)
    kw["controlled"] = tuple(kw["controlled"])
    return kw


def base_env(config: str | Path | None, specs: Sequence[PolicySpec]) -> dict[str, Any]:
    """The evaluation environment's settings.

    From ``config`` (a training config, whose ``env`` section is used, or an environment
    YAML); else from the first trained policy's run; else from the default training config.
    """
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise EvaluateError(f"--config: {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and ("algo" in data or "defaults" in data):
            return _train_env(path)
        try:
            return env_settings(make_config(path))
        except (SchemaError, ValueError) as exc:
            raise EvaluateError(f"--config: {exc}") from exc
    for spec in specs:
        own = policy_env(spec)
        if own is not None:
            return {**own, "controlled": tuple(own["controlled"])}
    return _train_env(DEFAULT_TRAIN_CONFIG)


def _train_env(path: Path) -> dict[str, Any]:
    from agents.train_config import ConfigError, load_config

    try:
        return env_settings(load_config(path).env)
    except ConfigError as exc:
        raise EvaluateError(f"invalid training config {path}:\n{exc}") from exc


def policy_env(spec: PolicySpec) -> dict[str, Any] | None:
    """The environment settings a policy was made in (trained runs and their exports)."""
    if spec.path is None:
        return None
    if spec.kind == "trained":
        return _train_env(Path(spec.path) / "config.yaml")
    if spec.kind == "schedule":
        from agents.schedule import read_schedule

        meta, _ = read_schedule(Path(spec.path))
        return dict(meta["env"])
    if spec.kind == "table":
        from agents.distill import read_table

        return dict(read_table(Path(spec.path))["env"])
    return None


def job_env(base: dict[str, Any], spec: PolicySpec, scenario: str) -> dict[str, Any]:
    """Environment keyword arguments for ``spec`` on ``scenario``.

    A library scenario runs its own horizon; the training sampler keeps the base horizon. A
    trained policy keeps the parameters it controls and starts from; a static one starts at
    its values.
    """
    kw = dict(base)
    kw["scenario"] = scenario
    if scenario != "training":
        kw["horizon_minutes"] = None
    own = policy_env(spec)
    if own is not None:
        for key in _MUST_MATCH:
            if own[key] != base[key]:
                raise EvaluateError(
                    f"policy {spec.name!r} was trained with env.{key} = {own[key]!r} but the "
                    f"evaluation environment has {base[key]!r}; evaluate it with --config "
                    "set to its run's config.yaml, or retrain"
                )
        kw["controlled"] = tuple(own["controlled"])
        kw["fixed"] = own["fixed"]
        kw["margin_tiers"] = own.get("margin_tiers", "none")
    kw.update(spec.env_overrides())
    return kw


# ------------------------------------------------------------------ episodes ----


@dataclass
class Step:
    """One decision of a batch of first episodes (see :func:`first_episodes`).

    Attributes:
        t: Decision index.
        obs: The observations the action answered, ``(n_envs, 32)``.
        action: The policy's targets, ``(n_envs, n_controlled)``.
        reward: The step's reward per exchange.
        info: The environment's ``info`` of the step (before any exchange restarts).
        done: Exchanges whose first episode ended at this step.
        terminated: Which of them ended on insolvency.
    """

    t: int
    obs: FloatArray
    action: FloatArray
    reward: FloatArray
    info: dict[str, Any]
    done: BoolArray
    terminated: BoolArray


def first_episodes(env: InsuranceFundVectorEnv, policy: Policy, obs: FloatArray) -> Iterator[Step]:
    """Step ``policy`` through each exchange's first episode from the reset observations ``obs``.

    The exchanges step as one array program; one whose episode ends is restarted (as the
    vector environment's same-step autoreset does) and keeps stepping until every exchange is
    done, its later steps belonging to nobody. Each step is yielded before that restart, so a
    consumer can still read the core's state (parameters in force) of the step.
    """
    n = env.num_envs
    core = env.core
    policy.reset(n)
    obs64 = obs.astype(np.float64)
    running = np.ones(n, dtype=bool)
    t = 0
    while running.any():
        action = np.asarray(policy.act(obs64), dtype=np.float64)
        new_obs, reward, term, trunc, info = core.step(action)
        ended = term | trunc
        done = ended & running
        yield Step(t, obs64, action, reward, info, done, term & done)
        running &= ~done
        if ended.any():
            fresh = core.reset(ended)
            new_obs = np.where(ended[:, None], fresh, new_obs)
        obs64 = np.asarray(new_obs, dtype=np.float64)
        t += 1


def run_episodes(
    spec: PolicySpec, env_kw: dict[str, Any], episodes: int, seed: int, scenario_label: str
) -> list[EpisodeRecord]:
    """Run ``episodes`` episodes of ``spec`` (episode ``i`` seeded ``seed + i``), batched."""
    env = InsuranceFundVectorEnv(num_envs=episodes, **env_kw)
    core = env.core
    policy = build_policy(spec, tuple(env.config.controlled))
    keys = [k for k in STEP_FIELDS if k not in ("time_minutes", "reward")]
    steps: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "reward")}
    params: dict[str, list[np.ndarray]] = {}
    positions: list[np.ndarray] = []
    end = np.full(episodes, -1)
    terminated = np.zeros(episodes, dtype=bool)
    obs, _ = env.reset(seed=seed)
    sim = core.sim
    assert sim is not None
    oi0 = sim.initial_open_interest_usd.copy()
    fund0 = np.asarray(sim.portfolio.value_usd(sim.last_index, sim.vol_annual)).copy()
    for step in first_episodes(env, policy, obs):
        for k in keys:
            steps[k].append(np.asarray(step.info[k], dtype=np.float64).copy())
        steps["reward"].append(np.asarray(step.reward, dtype=np.float64).copy())
        for name, values in step.info["params"].items():
            params.setdefault(name, []).append(np.asarray(values, dtype=np.float64).copy())
        positions.append(core.controls.normalised().copy())
        end[step.done] = step.t
        terminated |= step.terminated
    minutes = core.ticks_per_decision * core.tick_minutes
    arrays = {k: np.stack(v) for k, v in steps.items()}
    par = {k: np.stack(v) for k, v in params.items()}
    pos = np.stack(positions)
    records = []
    for i in range(episodes):
        n = int(end[i]) + 1
        records.append(
            EpisodeRecord(
                policy=spec.name,
                scenario=scenario_label,
                episode=i,
                seed=seed + i,
                initial_open_interest_usd=float(oi0[i]),
                initial_fund_usd=float(fund0[i]),
                time_minutes=minutes * np.arange(1, n + 1, dtype=np.float64),
                **{k: arrays[k][:n, i] for k in (*keys, "reward")},
                params={k: v[:n, i] for k, v in par.items()},
                positions=pos[:n, i, :],
                terminated=bool(terminated[i]),
            )
        )
    return records


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: a policy on a scenario for ``episodes`` episodes."""

    spec: PolicySpec
    scenario: str
    env_kw: dict[str, Any]
    episodes: int
    seed: int
    rows_only: bool = False


def run_job(job: Job) -> list[EpisodeRecord] | list[Row]:
    """Run a job; searches keep only the metric rows (records are large)."""
    records = run_episodes(job.spec, job.env_kw, job.episodes, job.seed, job.scenario)
    if job.rows_only:
        return [episode_metrics(r) for r in records]
    return records


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    on_done: Callable[[Job], None] | None = None,
) -> list[Any]:
    """Run ``jobs`` (in worker processes when ``workers > 1``); results in job order."""
    results: list[Any] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = run_job(job)
            if on_done:
                on_done(job)
        return results
    ctx = get_context("spawn")  # no fork of a process that may hold torch threads
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init
    ) as pool:
        # Longest first: the crash suite's horizons range from 3 hours to 8 days.
        order = sorted(range(len(jobs)), key=lambda i: -_job_size(jobs[i]))
        futures: dict[Future[Any], int] = {pool.submit(run_job, jobs[i]): i for i in order}
        pending = set(futures)
        from concurrent.futures import FIRST_COMPLETED, wait

        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = futures[fut]
                results[i] = fut.result()
                if on_done:
                    on_done(jobs[i])
    return results


def _job_size(job: Job) -> float:
    if job.scenario == "training":
        minutes = float(job.env_kw.get("horizon_minutes") or 1440.0)
    else:
        minutes = float(load_scenario(job.scenario).horizon_minutes)
    return minutes * job.episodes


# ------------------------------------------------------------------ search ----


def grid_points(grid: dict[str, tuple[float, ...]] | None = None) -> list[dict[str, float]]:
    """Every static set of the grid, full natural-unit values of :data:`STATIC_PARAMS`."""
    g = grid or GRID
    names = list(g)
    points = []
    for combo in itertools.product(*(g[n] for n in names)):
        values = {k: DEFAULTS[k] for k in STATIC_PARAMS}
        values.update(dict(zip(names, combo, strict=True)))
        points.append(values)
    return points


def _point_name(values: dict[str, float]) -> str:
    return "static:" + ",".join(f"{k}={values[k]:g}" for k in STATIC_PARAMS)


def objective(rows: Sequence[Row]) -> float:
    """Mean episode reward, averaged per scenario and then over scenarios (equal weight)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(str(r["scenario"]), []).append(float(r["total_reward"]))
    return float(np.mean([np.mean(v) for v in by.values()]))


@dataclass
class SearchResult:
    """The outcome of a static grid search (also the cache file's content)."""

    name: str
    key: dict[str, Any]
    points: list[dict[str, Any]]
    best: dict[str, float]
    best_objective: float
    wall_s: float
    cache_file: str | None = None
    cached: bool = False


def search_static(
    name: str,
    base: dict[str, Any],
    scenarios: Sequence[str],
    episodes: int,
    seed: int,
    workers: int,
    cache_dir: Path | None,
    progress: bool,
    grid: dict[str, tuple[float, ...]] | None = None,
) -> SearchResult:
    """Score every grid point on ``scenarios`` (same seeds for all); keep the best by reward.

    With ``cache_dir``, the result is stored under a hash of everything that determines it
    (environment settings, scenarios, episodes, seed, grid, fundgym version) together with
    those settings, and reused when they match.
    """
    from agents import __version__

    g = grid or GRID
    key = {
        "search": name,
        "env": jsonable(base),
        "scenarios": list(scenarios),
        "episodes": episodes,
        "seed": seed,
        "grid": {k: list(v) for k, v in g.items()},
        "objective": "mean episode reward, per scenario then averaged",
        "fundgym": __version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = cache_dir / f"static_search-{digest}.json" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            if data.get("key") == key:
                fields = [k for k in SearchResult.__annotations__ if k not in ("cached",)]
                res = SearchResult(**{k: data[k] for k in fields})
                res.cached = True
                res.cache_file = str(cache_file)
                return res
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a corrupt cache entry is recomputed and overwritten
    t0 = time.perf_counter()
    points = grid_points(g)
    jobs = []
    for values in points:
        spec = PolicySpec(_point_name(values), "static", values=values)
        for sc in scenarios:
            jobs.append(Job(spec, sc, job_env(base, spec, sc), episodes, seed, rows_only=True))
    bar = progress_bar(len(jobs) * episodes, f"{name} search", progress)
    results = run_jobs(jobs, workers, lambda j: bar.update(j.episodes))
    bar.close()
    scored: list[dict[str, Any]] = []
    for p, values in enumerate(points):
        rows = [r for rs in results[p * len(scenarios) : (p + 1) * len(scenarios)] for r in rs]
        s = summarize_policies(rows)[0]
        scored.append(
            {
                "values": values,
                "objective": objective(rows),
                "solvency_loss_usd": s["solvency_loss_usd"],
                "mean_capital_locked_usd": s["mean_capital_locked_usd"],
            }
        )
    best = max(scored, key=lambda r: float(r["objective"]))
    res = SearchResult(
        name=name,
        key=key,
        points=scored,
        best=dict(best["values"]),
        best_objective=float(best["objective"]),
        wall_s=time.perf_counter() - t0,
        cache_file=str(cache_file) if cache_file else None,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: getattr(res, k) for k in SearchResult.__annotations__}
        payload.pop("cached")
        write_text_atomic(cache_file, json.dumps(jsonable(payload), indent=2))
    return res


# ------------------------------------------------------------------ the job ----


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced."""

    out_dir: Path
    rows: list[Row]
    by_scenario: list[Row]
    by_policy: list[Row]
    dominance: dict[str, dict[str, Any]]
    gap_closure: dict[str, float | None]
    objective: dict[str, float]
    searches: dict[str, SearchResult] = field(default_factory=dict)
    wall_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


def evaluate(
    policies: Sequence[str],
    scenarios: Sequence[str],
    episodes: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    config: str | Path | None = None,
    workers: int | None = None,
    search_episodes: int = SEARCH_EPISODES,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    report: bool = True,
    grid: dict[str, tuple[float, ...]] | None = None,
) -> EvaluationResult:
    """Evaluate ``policies`` on ``scenarios`` and write the results to ``out_dir``.

    Args:
        policies: Policy specs (:func:`agents.policies.parse_spec`).
        scenarios: Scenario names (:func:`parse_scenarios` output).
        episodes: Episodes per policy and scenario (seeds ``seed .. seed + episodes - 1``).
        out_dir: Output directory; must not exist (or be empty) unless ``overwrite``.
        seed: First episode seed.
        config: Training or environment config for the evaluation environment.
        workers: Worker processes (default: one per CPU, at most the number of jobs).
        search_episodes: Training-sampler episodes per grid point for ``best_static``.
        cache_dir: Where static searches are cached (None: no cache).
        overwrite: Replace an existing output directory.
        progress: Show progress bars.
        argv: The command line, recorded in ``command.txt`` and the report.
        report: Write ``report.md``/``report.html`` and plots.
        grid: Static search grid (default :data:`GRID`).

    Raises:
        EvaluateError: Bad arguments, an unusable output directory, or a policy that cannot
            run in the evaluation environment.
        SpecError: A policy spec that names nothing runnable.
    """
    t_start = time.perf_counter()
    if episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {episodes}")
    if not policies:
        raise EvaluateError("give at least one --policy")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EvaluateError(f"{out} already exists and is not empty; pass --overwrite or --out")
    specs = [parse_spec(p) for p in policies]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EvaluateError(f"policy {dup[0]!r} given twice; every policy needs its own name")
    scenarios = list(scenarios)
    base = base_env(config, specs)
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    cache = Path(cache_dir) if cache_dir is not None else None

    searches: dict[str, SearchResult] = {}
    resolved: list[PolicySpec] = []
    for spec in specs:
        if spec.kind != "search":
            resolved.append(spec)
            continue
        if spec.name == "best_static":
            res = search_static(
                "best_static", base, ["training"], search_episodes, SEARCH_SEED,
                n_workers, cache, progress, grid,
            )  # fmt: skip
            where = f"{search_episodes} training-sampler draws"
        else:
            res = search_static(
                "hindsight_static", base, scenarios, episodes, seed, n_workers, cache,
                progress, grid,
            )  # fmt: skip
            where = "the evaluation scenarios themselves (hindsight)"
        searches[spec.name] = res
        desc = ", ".join(f"{k} {res.best[k]:g}" for k in GRID)
        note = f"static set searched on {where} over {len(res.points)} grid points: {desc}"
        resolved.append(PolicySpec(spec.name, "static", values=dict(res.best), note=note))

    jobs = [
        Job(spec, sc, job_env(base, spec, sc), episodes, seed)
        for spec in resolved
        for sc in scenarios
    ]
    bar = progress_bar(len(jobs) * episodes, "policy x scenario x episode", progress)
    results = run_jobs(jobs, n_workers, lambda j: bar.update(j.episodes))
    bar.close()
    records: list[EpisodeRecord] = [r for rs in results for r in rs]
    rows = [episode_metrics(r) for r in records]
    by_scenario = summarize(rows)
    by_policy = summarize_policies(rows)
    line = {str(r["policy"]): r for r in by_policy}
    objectives = {
        n: objective([r for r in rows if r["policy"] == n]) for n in (s.name for s in resolved)
    }
    reference = "best_static" if "best_static" in line else None
    dom: dict[str, dict[str, Any]] = {}
    if reference is not None:
        for n in line:
            if n != reference:
                dom[n] = dominates(line[n], line[reference])
    gap: dict[str, float | None] = {n: None for n in objectives}
    if "best_static" in objectives and "hindsight_static" in objectives:
        lo, hi = objectives["best_static"], objectives["hindsight_static"]
        for n, v in objectives.items():
            gap[n] = (v - lo) / (hi - lo) if hi - lo > 1e-9 * max(1.0, abs(hi)) else None
    traces = {(r.policy, r.scenario): r for r in records if r.episode == 0}

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        files = _write_outputs(
            tmp, out, rows, by_scenario, by_policy, traces, resolved, scenarios, episodes, seed,
            base, searches, dom, gap, objectives, reference, argv, report, n_workers,
            search_episodes, grid,
        )  # fmt: skip
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EvaluationResult(
        out_dir=out,
        rows=rows,
        by_scenario=by_scenario,
        by_policy=by_policy,
        dominance=dom,
        gap_closure=gap,
        objective=objectives,
        searches=searches,
        wall_s=time.perf_counter() - t_start,
        files={k: out / v.relative_to(tmp) for k, v in files.items()},
    )


def _write_outputs(
    tmp: Path,
    out: Path,
    rows: list[Row],
    by_scenario: list[Row],
    by_policy: list[Row],
    traces: dict[tuple[str, str], EpisodeRecord],
    specs: list[PolicySpec],
    scenarios: list[str],
    episodes: int,
    seed: int,
    base: dict[str, Any],
    searches: dict[str, SearchResult],
    dom: dict[str, dict[str, Any]],
    gap: dict[str, float | None],
    objectives: dict[str, float],
    reference: str | None,
    argv: Sequence[str] | None,
    report: bool,
    workers: int,
    search_episodes: int,
    grid: dict[str, tuple[float, ...]] | None,
) -> dict[str, Path]:
    import shlex

    from agents import __version__

    command = shlex.join(argv) if argv else "(called from Python: agents.evaluate.evaluate)"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    files: dict[str, Path] = {}
    files["metrics_csv"] = tmp / "metrics.csv"
    write_text_atomic(files["metrics_csv"], rows_to_csv(rows))
    config = {
        "fundgym": __version__,
        "policies": [
            {
                "name": s.name,
                "kind": s.kind,
                **({"path": s.path} if s.path else {}),
                **({"values": s.values} if s.values else {}),
                "margin_tiers": s.margin_tiers,
            }
            for s in specs
        ],
        "scenarios": scenarios,
        "episodes": episodes,
        "seed": seed,
        "episode_seeds": f"{seed} .. {seed + episodes - 1} (episode i: seed + i, every policy)",
        "env": jsonable(base),
        "search": {
            "grid": {k: list(v) for k, v in (grid or GRID).items()},
            "best_static": {
                "scenario": "training",
                "episodes": search_episodes,
                "seed": SEARCH_SEED,
            },
            "hindsight_static": {"scenarios": scenarios, "episodes": episodes, "seed": seed},
        },
        "workers": workers,
    }
    files["config"] = tmp / "config.yaml"
    write_text_atomic(files["config"], yaml.safe_dump(config, sort_keys=False))
    files["command"] = tmp / "command.txt"
    write_text_atomic(files["command"], f"{command}\n# created {created}\n")
    notes = {s.name: s.note for s in specs if s.note}
    summary = {
        "command": command,
        "created_utc": created,
        "episodes": episodes,
        "seed": seed,
        "scenarios": scenarios,
        "policies": [s.name for s in specs],
        "horizon": "each scenario's own horizon; 'training' draws run the config's",
        "reference": reference,
        "by_policy": by_policy,
        "by_scenario": by_scenario,
        "dominance": dom,
        "gap_closure": gap,
        "objective": objectives,
        "policy_notes": notes,
        "searches": {
            k: {
                "best": v.best,
                "best_objective": v.best_objective,
                "points": v.points,
                "cache_file": v.cache_file,
                "cached": v.cached,
                "wall_s": round(v.wall_s, 3),
            }
            for k, v in searches.items()
        },
    }
    files["summary"] = tmp / "summary.json"
    write_text_atomic(files["summary"], json.dumps(jsonable(summary), indent=2))
    if report:
        from agents.report import write_report

        meta = {
            "command": command,
            "created_utc": created,
            "episodes": episodes,
            "seed": seed,
            "scenarios": scenarios,
            "policies": [s.name for s in specs],
            "horizon_note": summary["horizon"],
            "reference": reference,
            "dominance": dom,
            "gap_closure": gap,
            "objective": objectives,
            "policy_notes": notes,
        }
        written = write_report(
            tmp, by_scenario=by_scenario, by_policy=by_policy, traces=traces, meta=meta
        )
        files.update(written)
    return files


# ------------------------------------------------------------------ helpers ----


def rows_to_csv(rows: Sequence[Row]) -> str:
    """``metrics.csv``: the union of the rows' columns, in first-seen order."""
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return buf.getvalue()


def _csv_value(v: object) -> object:
    if isinstance(v, float):
        return repr(v)
    return v


__all__ = [
    "CRASHES",
    "GRID",
    "EvaluateError",
    "EvaluationResult",
    "SearchResult",
    "SpecError",
    "evaluate",
    "parse_scenarios",
    "run_episodes",
    "search_static",
]
