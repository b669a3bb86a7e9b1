"""Evaluate policies on crash scenarios, every policy on the same scenarios and seeds.

:func:`evaluate` runs each policy through each scenario for ``episodes`` episodes (episode
``i`` of every scenario seeded ``seed + i`` for every policy, so the market paths and trader
books are identical across policies and only the parameters differ), records every decision
step (:class:`fundgym.agents.evaluate.metrics.EpisodeRecord`), and writes into the output directory:

* ``metrics.csv``: one row per policy x scenario x episode (:data:`fundgym.agents.evaluate.
  metrics.EPISODE_COLUMNS`, then the mean of each parameter);
* ``summary.json``: per (policy, scenario) and per policy, every metric's mean with a 95%
  interval, bad-debt VaR/ES and the probability the fund is exhausted; each policy's dominance
  test against ``best_static`` and the share of the ``best_static`` -> ``hindsight_static``
  gap it closes; the static searches' results;
* ``seeds.csv`` (only when a policy is a multi-seed directory, ``fundgym train --seeds``
  output, whose seeds run as policies ``NAME@seed_<S>``): per scenario and over all, the
  interquartile mean across seeds with bootstrap intervals, the probability of improvement
  over every other policy and of exceeding its loss, the per-seed spread
  (:mod:`fundgym.agents.evaluate.seeds`); the same rows in ``summary.json`` under ``seeds``;
* ``report.md``, ``report.html`` and ``plots/`` (:mod:`fundgym.agents.evaluate.report`);
* ``config.yaml``: everything that made the run (policies as resolved, scenarios, seeds,
  environment settings, search grid), and ``command.txt``.

The directory is built under a temporary name and renamed into place at the end, so a failed
or interrupted evaluation leaves nothing half-written; the next evaluation into the same
``--out`` removes what a killed one left (:func:`fundgym.agents.outputs.remove_stale_temps`).
Every metric is checked before anything is written: an episode whose numbers are not finite,
or whose amounts are beyond any market, stops the evaluation with an error naming the policy,
scenario, episode and metric (:func:`fundgym.agents.evaluate.episodes.score`).

**Searched baselines** (``best_static``, ``hindsight_static``):
:mod:`fundgym.agents.evaluate.search`.

Jobs (policy x scenario, and grid point x scenario for the searches) run in parallel worker
processes (``workers``); each job steps its episodes as one batched array program.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fundgym.agents import __version__
from fundgym.agents.evaluate.backends import run_policies
from fundgym.agents.evaluate.episodes import score
from fundgym.agents.evaluate.frontier import DEFAULT_RULE
from fundgym.agents.evaluate.metrics import (
    EpisodeRecord,
    Row,
    dominates,
    summarize,
    summarize_policies,
)
from fundgym.agents.evaluate.search import (
    BEST_STATIC_GENERATIONS,
    GRID,
    SEARCH_EPISODES,
    SEARCH_SEED,
    SearchResult,
    objective,
    search_best_static,
    search_static,
)
from fundgym.agents.evaluate.seeds import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    LEVEL,
    SEED_COLUMNS,
    seed_rows,
    tables_from_rows,
)
from fundgym.agents.outputs import (
    directory_in_place,
    jsonable,
    progress_bar,
    remove_stale_temps,
    write_text_atomic,
)
from fundgym.agents.policies import PolicySpec
from fundgym.agents.policies.registry import parse_specs
from fundgym.agents.rollout import EvaluateError, base_env
from fundgym.envs.scenarios import load_scenario

#: The files that make a directory a fundgym evaluation (all of them are always written).
EVALUATION_FILES = ("config.yaml", "metrics.csv", "summary.json")


def is_evaluation_dir(path: Path) -> bool:
    """Whether ``path`` holds a fundgym evaluation (:data:`EVALUATION_FILES`).

    ``overwrite`` may replace an evaluation; anything else is the user's and needs ``force``.
    """
    return all((path / name).is_file() for name in EVALUATION_FILES)


#: The summary's fields the report's run description repeats (with ``horizon_note``).
_REPORT_META_KEYS = (
    "command",
    "created_utc",
    "episodes",
    "seed",
    "scenarios",
    "policies",
    "reference",
    "dominance",
    "gap_closure",
    "objective",
    "policy_notes",
    "scenario_start_utc",
)


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
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    force: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    report: bool = True,
    grid: dict[str, tuple[float, ...]] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> EvaluationResult:
    """Evaluate ``policies`` on ``scenarios`` and write the results to ``out_dir``.

    Args:
        policies: Policy specs (:func:`fundgym.agents.policies.registry.parse_specs`: a
            multi-seed directory runs each seed as a policy, and adds ``seeds.csv``).
        scenarios: Scenario names (:func:`parse_scenarios` output).
        episodes: Episodes per policy and scenario (seeds ``seed .. seed + episodes - 1``).
        out_dir: Output directory; must not exist (or be empty) unless ``overwrite``.
        seed: First episode seed.
        config: Training or environment config for the evaluation environment.
        workers: Worker processes (default: one per CPU, at most the number of jobs).
        search_episodes: Training-sampler episodes per grid point for ``best_static``.
        cache_dir: Where static searches are cached (None: no cache).
        overwrite: Replace an existing evaluation in ``out_dir``.
        force: With ``overwrite``, replace ``out_dir`` even if it is not an evaluation
            (:func:`is_evaluation_dir`).
        progress: Show progress bars.
        argv: The command line, recorded in ``command.txt`` and the report.
        report: Write ``report.md``/``report.html`` and plots.
        grid: Static search grid (default :data:`GRID`); ``best_static``'s first generation.
        backend: Where episodes run: ``local`` worker processes or ``ray`` tasks
            (:func:`fundgym.agents.evaluate.backends.run_jobs_backend`).
        address: A Ray cluster to join (``ray`` only; None starts a local Ray instance).

    Raises:
        EvaluateError: Bad arguments, an unusable output directory, a policy that cannot
            run in the evaluation environment, or an episode that cannot be scored (a metric
            not finite, an amount beyond any market).
        SpecError: A policy spec that names nothing runnable.
    """
    t_start = time.perf_counter()
    if episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {episodes}")
    if not policies:
        raise EvaluateError("give at least one --policy")
    out = Path(out_dir)
    remove_stale_temps(out.parent, out.name)  # what a killed evaluation into ``out`` left
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EvaluateError(f"{out} already exists and is not empty; pass --overwrite or --out")
        if not force and not is_evaluation_dir(out):
            # overwrite replaces an evaluation; anything else is the user's, kept unless forced
            raise EvaluateError(
                f"{out} is not a fundgym evaluation (no {', '.join(EVALUATION_FILES)}); "
                "--overwrite replaces only an evaluation: pass --force to "
                "replace it anyway, or choose another --out"
            )
    specs = parse_specs(policies)
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
            res = search_best_static(
                base, search_episodes, SEARCH_SEED, n_workers, cache, progress, grid,
                backend=backend, address=address,
            )  # fmt: skip
            note = (
                f"the solvency-vs-capital frontier point picked by {res.rule}; NSGA-II, "
                f"{len(res.points)} static sets (the grid and the venue presets first) on "
                f"{search_episodes} training-sampler draws: {res.describe()}"
            )
        else:
            res = search_static(
                "hindsight_static", base, scenarios, episodes, seed, n_workers, cache,
                progress, grid, backend, address,
            )  # fmt: skip
            where = "the evaluation scenarios themselves (hindsight)"
            desc = ", ".join(f"{k} {res.best[k]:g}" for k in GRID)
            note = f"static set searched on {where} over {len(res.points)} grid points: {desc}"
        searches[spec.name] = res
        resolved.append(res.spec(note))  # best_static runs under the engine it was picked with

    total = len(resolved) * len(scenarios) * episodes
    bar = progress_bar(total, "policy x scenario x episode", progress)
    per_policy = run_policies(
        resolved, scenarios, base, episodes, seed, rows_only=False, workers=n_workers,
        backend=backend, address=address, progress=lambda j: bar.update(j.episodes),
    )  # fmt: skip
    bar.close()
    records: list[EpisodeRecord] = [r for rs in per_policy for r in rs]
    rows = score(records)
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
    seeds = seed_statistics(rows, resolved, scenarios)

    with directory_in_place(out) as tmp:  # a full disk names the file as the user will see it
        files = _write_outputs(
            tmp, out, rows, by_scenario, by_policy, traces, resolved, scenarios, episodes,
            seed, base, searches, dom, gap, objectives, reference, argv, report, n_workers,
            search_episodes, grid, seeds,
        )  # fmt: skip
    return EvaluationResult(
        out_dir=out,
        rows=rows,
        by_scenario=by_scenario,
        by_policy=by_policy,
        dominance=dom,
        gap_closure=gap,
        objective=objectives,
        searches=searches,
        seeds=seeds,
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
    seeds: dict[str, dict[str, Any]],
) -> dict[str, Path]:
    command = shlex.join(argv) if argv else "(called from Python: fundgym.agents.evaluate.evaluate)"
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
                **({"group": s.group, "train_seed": s.train_seed} if s.group else {}),
                **{
                    key: value
                    for key, value in (
                        ("liquidation_mode", s.liquidation_mode),
                        ("adl_policy", s.adl_policy),
                        ("fund_to_oi_frac", s.fund_to_oi_frac),
                        ("vault_to_oi_frac", s.vault_to_oi_frac),
                        ("vault_adl_loss_frac", s.vault_adl_loss_frac),
                        ("fund_injection_frac", s.fund_injection_frac),
                        ("fund_injection_max", s.fund_injection_max),
                    )
                    if value is not None
                },
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
                "search": f"NSGA-II frontier of levers and engine, {BEST_STATIC_GENERATIONS} "
                "generations (the grid and the venue presets first)",
                "rule": DEFAULT_RULE.describe(),
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
        # minute 0 of each historical crash in UTC (its plots are drawn against dates)
        "scenario_start_utc": {
            s: None if s == "training" else load_scenario(s).start_utc for s in scenarios
        },
        "searches": {
            k: {
                "best": v.best,
                "engine": v.engine,
                "best_objective": v.best_objective,
                "rule": v.rule,
                "points": v.points,
                "cache_file": v.cache_file,
                "cached": v.cached,
                "wall_s": round(v.wall_s, 3),
            }
            for k, v in searches.items()
        },
    }
    if seeds:
        summary["seeds"] = seeds
        files["seeds_csv"] = tmp / "seeds.csv"
        all_rows = [r for g in seeds.values() for r in g["rows"]]
        write_text_atomic(files["seeds_csv"], rows_to_csv(all_rows))
    files["summary"] = tmp / "summary.json"
    write_text_atomic(files["summary"], json.dumps(jsonable(summary), indent=2))
    if report:
        from fundgym.agents.evaluate.report import write_report  # matplotlib only when reporting

        # The report's run description: the summary's own fields, its horizon as a note.
        meta = {k: summary[k] for k in _REPORT_META_KEYS}
        meta["horizon_note"] = summary["horizon"]
        meta["seeds"] = seeds
        written = write_report(
            tmp, by_scenario=by_scenario, by_policy=by_policy, traces=traces, meta=meta
        )
        files.update(written)
    return files


# ------------------------------------------------------------------ helpers ----


def seed_statistics(
    rows: Sequence[Row], specs: Sequence[PolicySpec], scenarios: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each multi-seed policy's statistics across its seeds (:mod:`.seeds`), by its name.

    Every policy that is not a seed of a group is a reference (``best_static`` first); each
    group's entry holds its seeds, the policy name of each, the references, the bootstrap
    settings and the rows of ``seeds.csv`` (:data:`fundgym.agents.evaluate.seeds.SEED_COLUMNS`).
    Empty when no policy is a multi-seed directory.
    """
    members: dict[str, dict[int, str]] = {}
    for s in specs:
        if s.group is not None and s.train_seed is not None:
            members.setdefault(s.group, {})[s.train_seed] = s.name
    singles = [s.name for s in specs if s.group is None]
    references = sorted(singles, key=lambda n: n != "best_static")  # stable: best_static first
    out: dict[str, dict[str, Any]] = {}
    for group, by_seed in members.items():
        stats = [
            row
            for table in tables_from_rows(rows, group, by_seed, references, scenarios)
            for row in seed_rows(table)
        ]
        out[group] = {
            "seeds": list(by_seed),
            "policies": {str(k): v for k, v in by_seed.items()},
            "references": references,
            "bootstrap": {
                "reps": BOOTSTRAP_REPS,
                "seed": BOOTSTRAP_SEED,
                "level": LEVEL,
                "scheme": "percentile; seeds and episodes resampled within each scenario "
                "(one episode draw for every seed and reference)",
            },
            "columns": list(SEED_COLUMNS),
            "rows": stats,
        }
    return out


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
