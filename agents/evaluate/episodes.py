"""Evaluation episodes: a policy on a scenario, recorded decision by decision, in worker processes.

A :class:`Job` is one policy on one scenario for a number of episodes (episode ``i`` seeded
``seed + i``); :func:`run_episodes` steps them as one batched array program through
:func:`fundgym.agents.rollout.first_episodes` and records every decision
(:class:`fundgym.agents.evaluate.metrics.EpisodeRecord`); :func:`run_jobs` spreads jobs over worker
processes, longest first.

Workers exit with their parent: each one watches that the process that started it still runs
(:func:`exit_with_parent`), so a ``kill -9`` of ``fundgym evaluate`` leaves no idle worker
behind. An episode whose numbers cannot be scored (not finite, or amounts beyond any market)
stops the evaluation with an :class:`~fundgym.agents.rollout.EvaluateError` naming the policy,
scenario, episode and metric (:func:`score`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np

from fundgym.agents.evaluate.metrics import (
    STEP_FIELDS,
    EpisodeRecord,
    MetricError,
    Row,
    episode_metrics,
)
from fundgym.agents.policies import PolicySpec, build_policy
from fundgym.agents.rollout import EvaluateError, FloatArray, first_episodes, vault_capital_usd
from fundgym.envs.controls import PARAMS
from fundgym.envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv
from fundgym.envs.market.sampler import DEFAULT_TRAINING_HORIZON_MINUTES
from fundgym.envs.scenarios import load_scenario

#: Observation columns holding the position of every parameter in force (in [-1, 1], never
#: clipped by the observation's +-10 bound), in :data:`fundgym.envs.controls.PARAMS` order.
POSITION_COLUMNS = [OBS_NAMES.index(f"param_{name}") for name in PARAMS]


def _episode_start(env: InsuranceFundVectorEnv) -> tuple[FloatArray, FloatArray]:
    """Open interest and fund value (USD) of every exchange as its episode starts.

    Read right after ``env.reset``, through the environment's public accessors.
    """
    return env.core.initial_open_interest_usd, env.core.fund_value_usd().copy()


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
    oi0, fund0 = _episode_start(env)
    vault0 = np.zeros(episodes)
    for step in first_episodes(env, policy, obs):
        if step.t == 0:
            vault0 = vault_capital_usd(step.info)
        for k in keys:
            steps[k].append(np.asarray(step.info[k], dtype=np.float64).copy())
        steps["reward"].append(np.asarray(step.reward, dtype=np.float64).copy())
        for name, values in step.info["params"].items():
            params.setdefault(name, []).append(np.asarray(values, dtype=np.float64).copy())
        positions.append(step.next_obs[:, POSITION_COLUMNS])
        end[step.done] = step.t
        terminated |= step.terminated
    minutes = core.ticks_per_decision * core.tick_minutes
    arrays = {k: np.stack(v) for k, v in steps.items()}
    par = {k: np.stack(v) for k, v in params.items()}
    pos = np.stack(positions)
    records = []
    for i in range(episodes):
        n = int(end[i]) + 1
        try:
            record = EpisodeRecord(
                policy=spec.name,
                scenario=scenario_label,
                episode=i,
                seed=seed + i,
                initial_open_interest_usd=float(oi0[i]),
                initial_fund_usd=float(fund0[i]),
                initial_vault_usd=float(vault0[i]),
                time_minutes=minutes * np.arange(1, n + 1, dtype=np.float64),
                **{k: arrays[k][:n, i] for k in (*keys, "reward")},
                params={k: v[:n, i] for k, v in par.items()},
                positions=pos[:n, i, :],
                terminated=bool(terminated[i]),
            )
        except ValueError as exc:  # a NaN or infinite step: the record names field and step
            raise EvaluateError(
                f"policy {spec.name!r} on scenario {scenario_label!r}, episode {i} (seed "
                f"{seed + i}) cannot be scored: {exc}"
            ) from None
        records.append(record)
    return records


def score(records: Sequence[EpisodeRecord]) -> list[Row]:
    """The ``metrics.csv`` rows of ``records``, refusing an episode that cannot be scored.

    Raises:
        EvaluateError: A metric is not finite or an amount is beyond any market
            (:func:`fundgym.agents.evaluate.metrics.check_metrics`), naming the policy,
            scenario, episode and metric.
    """
    try:
        return [episode_metrics(r) for r in records]
    except MetricError as exc:
        raise EvaluateError(str(exc)) from None


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
        return score(records)
    return records


#: How often a worker checks that the process that started it still runs (seconds).
PARENT_POLL_S = 0.2


def exit_with_parent(parent_pid: int) -> None:
    """Exit this process as soon as process ``parent_pid`` is no longer its parent.

    A pool's workers otherwise outlive an evaluation killed with ``kill -9`` (its shutdown
    never runs), idle at ~145 MB each, indefinitely. When its parent dies, a process is
    re-parented (to ``init`` or a sub-reaper), so ``os.getppid()`` changes: a daemon thread
    polls it every :data:`PARENT_POLL_S` and ends the worker with ``os._exit`` (nothing of a
    dead evaluation is worth finishing). It runs on every POSIX system, unlike Linux's
    ``PR_SET_PDEATHSIG``; a worker whose parent died before the thread started exits at once.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="fundgym-exit-with-parent", daemon=True).start()


def _worker_init(parent_pid: int) -> None:
    """Set up a worker process: one OpenMP thread, and exit with the evaluating process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    exit_with_parent(parent_pid)


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
        max_workers=min(workers, len(jobs)),
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(os.getpid(),),
    ) as pool:
        # Longest first: the crash suite's horizons range from 3 hours to 8 days.
        order = sorted(range(len(jobs)), key=lambda i: -_job_size(jobs[i]))
        futures: dict[Future[Any], int] = {pool.submit(run_job, jobs[i]): i for i in order}
        pending = set(futures)
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
        minutes = float(job.env_kw.get("horizon_minutes") or DEFAULT_TRAINING_HORIZON_MINUTES)
    else:
        minutes = float(load_scenario(job.scenario).horizon_minutes)
    return minutes * job.episodes
