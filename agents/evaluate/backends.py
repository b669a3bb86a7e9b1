"""Where evaluation jobs run: worker processes on this machine, or Ray tasks.

:func:`run_jobs_backend` runs a list of :class:`~fundgym.agents.evaluate.episodes.Job` on one
of :data:`BACKENDS` and returns their results in job order:

* ``local`` (the default): :func:`fundgym.agents.evaluate.episodes.run_jobs`, a process pool
  of ``workers`` processes on this machine.
* ``ray``: one Ray task per job. Without ``address`` the call starts a local Ray instance with
  ``workers`` CPUs (no dashboard, worker logs kept out of the terminal) and shuts it down when
  the jobs are done; with ``address`` (``ray://host:10001`` or ``host:6379``) it joins that
  cluster, whose nodes must have fundgym installed at the same version.

A job's episodes are seeded by the job alone (episode ``i`` of a job seeded ``seed + i``), so
both backends give identical numbers for the same jobs: where a job runs never changes what
it computes. Ray is an optional extra (``pip install fundgym[ray]``) and is imported only
when the ``ray`` backend is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from fundgym.agents.evaluate.episodes import Job, run_job, run_jobs
from fundgym.agents.policies import STATIC_PARAMS, PolicySpec
from fundgym.agents.policies.presets import Engine
from fundgym.agents.rollout import EvaluateError, job_env

#: The places jobs can run; ``local`` is the default.
BACKENDS = ("local", "ray")


class BackendError(EvaluateError):
    """A backend that cannot run: unknown, Ray not installed, or a cluster out of reach."""


def check_backend(backend: str, address: str | None) -> None:
    """Refuse a backend that cannot run, before any work is done.

    Raises:
        BackendError: ``backend`` is not one of :data:`BACKENDS`, ``address`` is given with
            the ``local`` backend, or ``ray`` is asked for and Ray is not installed.
    """
    if backend not in BACKENDS:
        raise BackendError(f"--backend {backend!r}: allowed {list(BACKENDS)}")
    if address is not None and backend != "ray":
        raise BackendError(
            f"--address {address!r} needs --backend ray (the local backend runs on this machine)"
        )
    if backend == "ray":
        _import_ray()


def _import_ray() -> ModuleType:
    """Ray, imported on first use; a :class:`BackendError` naming the extra when missing."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise BackendError(
            "--backend ray needs Ray, which is not installed: pip install fundgym[ray]"
        ) from None


def run_jobs_backend(
    jobs: Sequence[Job],
    *,
    workers: int,
    backend: str = "local",
    address: str | None = None,
    progress: Callable[[Job], None] | None = None,
) -> list[Any]:
    """Run ``jobs`` on ``backend``; results in job order, the same on every backend.

    Args:
        jobs: The jobs; each is run whole by one worker process or one Ray task.
        workers: Worker processes (``local``), or the CPUs of the Ray instance this call
            starts (``ray`` without ``address``); ignored when joining a cluster, which has
            its own.
        backend: One of :data:`BACKENDS`.
        address: A running Ray cluster to join (``ray`` only); ``None`` starts a local one.
        progress: Called with each job as it finishes (in completion order), e.g. to advance
            a progress bar.

    Returns:
        One result per job, in the order of ``jobs``: what
        :func:`~fundgym.agents.evaluate.episodes.run_job` returns for it.

    Raises:
        BackendError: See :func:`check_backend`.
    """
    check_backend(backend, address)
    if backend == "local":
        return run_jobs(jobs, workers, progress)
    return _run_ray(jobs, max(1, workers), address, progress)


def static_spec(values: dict[str, float], engine: Engine | None = None) -> PolicySpec:
    """The static policy of a searched point, named by its values (``static:k=v,...``).

    The name is a spec :func:`fundgym.agents.policies.parse_spec` reads back to the same
    policy, bit for bit (each number as its shortest exact text).

    Args:
        values: Every lever of :data:`STATIC_PARAMS`, natural units.
        engine: The engine it runs under (liquidation mode, ADL, tiers, fund and vault);
            ``None`` keeps the evaluation environment's.
    """
    items = [f"{k}={values[k]!r}" for k in STATIC_PARAMS]  # shortest text that parses back exact
    if engine is None:
        return PolicySpec("static:" + ",".join(items), "static", values=values)
    name = "static:" + ",".join([*items, engine.text()])
    return PolicySpec(name, "static", values=values, **engine.settings())


def run_policies(
    specs: Sequence[PolicySpec],
    scenarios: Sequence[str],
    base: dict[str, Any],
    episodes: int,
    seed: int,
    *,
    rows_only: bool,
    workers: int,
    backend: str = "local",
    address: str | None = None,
    progress: Callable[[Job], None] | None = None,
) -> list[list[Any]]:
    """Every policy on every scenario, on the same seeds; per policy, its results in order.

    One job per (policy, scenario) (:func:`~fundgym.agents.rollout.job_env` fits ``base`` to
    each), run by :func:`run_jobs_backend`; a policy's results are its jobs' concatenated in
    scenario order: the rows (``rows_only``) or episode records of all its episodes.
    """
    jobs = [
        Job(spec, sc, job_env(base, spec, sc), episodes, seed, rows_only)
        for spec in specs
        for sc in scenarios
    ]
    results = run_jobs_backend(
        jobs, workers=workers, backend=backend, address=address, progress=progress
    )
    n = len(scenarios)
    return [[r for rs in results[k * n : (k + 1) * n] for r in rs] for k in range(len(specs))]


def _run_ray(
    jobs: Sequence[Job],
    workers: int,
    address: str | None,
    progress: Callable[[Job], None] | None,
) -> list[Any]:
    """Run every job as one Ray task, on a local instance or the cluster at ``address``.

    A Ray instance that is already up in this process (``ray.init`` called by the user) is
    used as it is and left running; one this call starts is shut down before it returns.
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendError(
                    f"--address {address!r}: cannot join the Ray cluster: {exc}"
                ) from None
        started = True
    try:
        task = ray.remote(num_cpus=1)(run_job)
        refs = [task.remote(job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                results[i] = ray.get(ref)
                if progress is not None:
                    progress(jobs[i])
        return results
    finally:
        if started:
            ray.shutdown()
