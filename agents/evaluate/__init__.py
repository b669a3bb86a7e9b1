"""Evaluation: policies side by side on crash scenarios, every policy on the same seeds.

* :mod:`fundgym.agents.evaluate.evaluation`: :func:`evaluate`, the whole job and its output
  directory;
* :mod:`fundgym.agents.evaluate.episodes`: one policy on one scenario, recorded, in worker
  processes;
* :mod:`fundgym.agents.evaluate.search`: the searched static baselines (``best_static``,
  ``hindsight_static``);
* :mod:`fundgym.agents.evaluate.frontier`: the solvency-vs-capital frontier of static sets
  (NSGA-II, stored to resume) and the rule that picks ``best_static`` from it;
* :mod:`fundgym.agents.evaluate.backends`: where jobs run, local worker processes or Ray tasks;
* :mod:`fundgym.agents.evaluate.metrics`: per-episode risk metrics, intervals, dominance;
* :mod:`fundgym.agents.evaluate.seeds`: statistics across the seeds of a multi-seed training
  (interquartile mean with bootstrap intervals, probability of improvement and of exceeding a
  reference's loss, per-seed spread), ``seeds.csv``;
* :mod:`fundgym.agents.evaluate.sizing` and :mod:`fundgym.agents.evaluate.sizing_report`:
  ``fundgym size-fund``, the fund needed per episode, its VaR / ES with bootstrap intervals,
  the fund for a target P(socialised loss or ADL), Cover-2, and their outputs;
* :mod:`fundgym.agents.evaluate.report` and :mod:`fundgym.agents.evaluate.plots`: report.md,
  report.html and
  figures (matplotlib, imported only when a report or plot is written).

The names below are the ones ``fundgym.agents.evaluate`` has always offered; the scenario and
environment settings come from :mod:`fundgym.agents.rollout`, shared with export.
"""

from fundgym.agents.config import env_settings
from fundgym.agents.evaluate.episodes import Job, run_episodes, run_job, run_jobs
from fundgym.agents.evaluate.evaluation import EvaluationResult, evaluate, rows_to_csv
from fundgym.agents.evaluate.search import (
    GRID,
    SEARCH_EPISODES,
    SEARCH_SEED,
    SearchResult,
    grid_points,
    objective,
    search_static,
)
from fundgym.agents.policies import SpecError
from fundgym.agents.rollout import (
    CRASHES,
    EvaluateError,
    Step,
    base_env,
    first_episodes,
    job_env,
    parse_scenarios,
    policy_env,
)

__all__ = [
    "CRASHES",
    "GRID",
    "SEARCH_EPISODES",
    "SEARCH_SEED",
    "EvaluateError",
    "EvaluationResult",
    "Job",
    "SearchResult",
    "SpecError",
    "Step",
    "base_env",
    "env_settings",
    "evaluate",
    "first_episodes",
    "grid_points",
    "job_env",
    "objective",
    "parse_scenarios",
    "policy_env",
    "rows_to_csv",
    "run_episodes",
    "run_job",
    "run_jobs",
    "search_static",
]
