"""``fundgym demo``: the main job in one command: train, evaluate against baselines, export.

1. **Train** the default config (``configs/train/ppo.yaml``: PPO on 128 batched exchanges)
   over five seeds (``--seed`` .. ``--seed + 4``) into ``OUT/ppo/seed_<S>``, as many at once
   as there are CPUs (``--train-workers``), each on one torch thread (a finished run there
   with the same config is reused, an interrupted one resumed from its last checkpoint; one
   saved with another config, as after the default changes, is refused before any work, and
   trained afresh with ``--force``).
2. **Evaluate on the crashes**: the seven calibrated historical crashes beside the venue
   presets (``static:binance``, ``static:dydx``, ``static:hyperliquid``), the hand-written
   ``rule``, ``best_static`` (the frontier's, searched on the training sampler) and
   ``hindsight_static`` (searched on the crashes themselves), every policy on the same
   seeds, into ``OUT/evaluate`` (metrics.csv, seeds.csv, summary.json, report.md,
   report.html, plots/).
3. **Evaluate on fresh stress draws**: 256 episodes of the training sampler from episode seed
   5,000,000 on (apart from the seeds of the held-out evaluation during training), the trained
   seeds beside ``best_static``,
   into ``OUT/evaluate_stress``.
4. **Export** the first seed's parameter schedule along ``oct_10_2025`` (CSV) and its ONNX
   graph into ``OUT/export``.

It prints each results table and the verdict on each set: one draw of training cannot be
judged alone, so the verdict is the dominance bar applied to the interquartile mean across
seeds of loss and capital, beside the probability of improvement over ``best_static`` with
its bootstrap interval and whether the worst seed is no worse
(:mod:`fundgym.agents.evaluate.seeds`). Then how long each stage took and where everything
went. ``--seeds 1`` trains one seed into ``OUT/ppo`` and judges it alone (the dominance
ratios of its mean episode). ``--quick`` runs every stage at toy size with one seed and one
evaluation process (about 20 seconds): a check that the pipeline works, not a result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from fundgym.agents.cli.evaluate import format_table
from fundgym.agents.cli.guards import (
    OUTPUT_KINDS,
    UsageError,
    at_least,
    check_output,
    check_seed,
)
from fundgym.agents.config import (
    DEFAULT_TRAIN_CONFIG,
    TrainConfig,
    check_scenarios,
    load_config,
    saved_config_matches,
)
from fundgym.agents.outputs import output_lock, progress_bar
from fundgym.agents.rollout import CRASHES

BASELINES = (
    "static:binance",
    "static:dydx",
    "static:hyperliquid",
    "rule",
    "best_static",
    "hindsight_static",
)
EXPORT_SCENARIO = "oct_10_2025"
#: Seeds trained by default: the issue's "at least 5 seeds", judged by their interquartile mean.
SEEDS = 5
#: Stress draws of the training sampler, from this episode seed on: apart from the crash
#: episodes' seeds (0 on) and training's held-out evaluation (1,000,003 on), so the draws are
#: fresh (training's own episodes draw from 31-bit seeds mixed from the run's seed).
STRESS_EPISODES = 256
STRESS_SEED = 5_000_000

#: ``--quick``: every stage at toy size (training of a few seconds, short crashes).
QUICK_TRAIN = [
    "n_envs=8",
    "env.n_accounts=64",
    "env.horizon_minutes=240",
    "total_timesteps=2048",
    "hyperparameters.n_steps=32",
    "hyperparameters.batch_size=128",
    "hyperparameters.n_epochs=2",
    "eval.freq=1024",
    "eval.episodes=4",
    "checkpoint.freq=1024",
]
QUICK_SCENARIOS = ("venue_flash_wick", "oracle_manipulation")
#: ``--quick``: ``best_static``'s search on a 2 x 2 x 1 grid (3 x 8 trials instead of 3 x 28):
#: the pipeline's every stage runs, at toy size.
QUICK_GRID: dict[str, tuple[float, ...]] = {
    "liquidation_fee_rate": (0.005, 0.015),
    "mmr": (0.01, 0.06),
    "trading_fee_fund_share": (0.5,),
}

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fundgym demo``."""
    parser.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every stage at toy size, one seed, one evaluation process, about 20 seconds "
        "(checks the pipeline; not a result)",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        metavar="K",
        help="evaluation episodes per crash (default 8; --quick: 2)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="evaluation worker processes (default: one per CPU; --quick: 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed, the first of --seeds (default 0)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help=f"train N seeds (--seed .. --seed + N - 1) into OUT/ppo/seed_<S> and judge them by "
        f"the interquartile mean across seeds, with bootstrap intervals; 1 trains into OUT/ppo "
        f"and judges that run alone (default {SEEDS}; --quick: 1)",
    )
    parser.add_argument(
        "--train-workers",
        type=int,
        default=None,
        metavar="N",
        help="seeds trained at once, each in its own process on one torch thread (default: one "
        "per CPU, at most --seeds); a seed's run is the same whatever N",
    )
    parser.add_argument(
        "--stress-episodes",
        type=int,
        default=None,
        metavar="K",
        help=f"fresh draws of the training sampler (episode seeds {STRESS_SEED:,} on) the "
        f"trained seeds and best_static are judged on after the crashes; 0 skips that stage "
        f"(default {STRESS_EPISODES}; --quick: 4)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=OUTPUT_KINDS["demo"].force_help()
        + "; and train afresh, replacing them, the runs in OUT/ppo saved with another config "
        "than the default gives now, or in the other layout (one seed, several)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """Check the arguments, the config and --out, lock --out, then train, evaluate and export."""
    if args.episodes is not None:
        at_least("--episodes", args.episodes, 1)
    if args.workers is not None:
        at_least("--workers", args.workers, 1)
    if args.seeds is None:
        args.seeds = 1 if args.quick else SEEDS
    at_least("--seeds", args.seeds, 1)
    if args.train_workers is not None:
        at_least("--train-workers", args.train_workers, 1)
    if args.stress_episodes is not None:
        at_least("--stress-episodes", args.stress_episodes, 0)
    check_seed("--seed", args.seed)
    check_seed("--seed + --seeds - 1", args.seed + args.seeds - 1)
    quick = [*(QUICK_TRAIN if args.quick else [])]
    # Several seeds train on one torch thread each, however many run at once, so that a seed's
    # numbers do not depend on --train-workers (torch's thread count changes its arithmetic);
    # the setting is recorded in each run's config.yaml.
    threads = ["torch_threads=1"] if args.seeds > 1 else []
    cfgs = [
        load_config(DEFAULT_TRAIN_CONFIG, [*quick, *threads, f"seed={args.seed + k}"])
        for k in range(args.seeds)
    ]
    check_scenarios(cfgs[0], str(DEFAULT_TRAIN_CONFIG))
    out = Path(args.out)
    check_output(out, OUTPUT_KINDS["demo"], force=args.force)
    stale = _other_layout(out / "ppo", multi=args.seeds > 1)
    if stale and not args.force:
        raise UsageError(
            f"--seeds {args.seeds}: {out / 'ppo'} holds {stale}; use another --out, or --force "
            "to replace its training runs"
        )
    outdated = [] if stale else _outdated_runs(out / "ppo", cfgs)
    if outdated and not args.force:
        more = f" (and {len(outdated) - 1} more)" if len(outdated) > 1 else ""
        raise UsageError(
            f"{outdated[0]}{more} was trained with another config than {DEFAULT_TRAIN_CONFIG} "
            "gives now (its config.yaml differs: the default changed since, or the run was "
            "trained by hand); use another --out, or --force to train it afresh"
        )
    # Its run and evaluation directories too: no `fundgym train --out DIR/ppo` meanwhile.
    with output_lock(
        out, out / "ppo", out / "evaluate", out / "evaluate_stress", command="fundgym demo"
    ):
        if stale:  # --force: the other layout's runs go, or evaluation would mix the two
            shutil.rmtree(out / "ppo")
        for run in outdated:  # --force: a run of another config cannot be resumed or reused
            shutil.rmtree(run)
        return _demo(args, cfgs)


def _outdated_runs(policy_dir: Path, cfgs: list[TrainConfig]) -> list[Path]:
    """The demo's run directories in ``policy_dir`` saved with another config than ``cfgs``.

    A finished run is reused and an interrupted one resumed only under the config that started
    it; after the default config changes (a new version, a local edit) the old runs must be
    trained again, which replaces them, so the demo asks first (``--force``).
    """
    multi = len(cfgs) > 1
    out = []
    for cfg in cfgs:
        run = policy_dir / f"seed_{cfg.seed}" if multi else policy_dir
        saved = run / "config.yaml"
        if saved.is_file() and not saved_config_matches(saved, cfg):
            out.append(run)
    return out


def _other_layout(policy_dir: Path, *, multi: bool) -> str:
    """What in ``policy_dir`` belongs to the other layout than ``multi``'s ('' if nothing).

    One seed trains into ``OUT/ppo`` itself, several into ``OUT/ppo/seed_<S>``; a directory
    holding both would be read as one run, so a demo with the other count must not train
    beside them.
    """
    if multi:
        single = policy_dir / "config.yaml"
        return "a single-seed run (its config.yaml)" if single.exists() else ""
    seeds = sorted(p.name for p in policy_dir.glob("seed_*") if p.is_dir())
    return f"runs of several seeds ({', '.join(seeds)})" if seeds else ""


def _demo(args: argparse.Namespace, cfgs: list[TrainConfig]) -> int:
    """Train ``cfgs`` (one per seed), evaluate, export; print the tables, verdicts, times, paths."""
    from fundgym.agents.evaluate import evaluate
    from fundgym.agents.export import export_onnx, export_schedule

    out = Path(args.out)
    quick = bool(args.quick)
    progress = not args.no_progress
    episodes = args.episodes or (2 if quick else 8)
    stress = (
        args.stress_episodes
        if args.stress_episodes is not None
        else (4 if quick else STRESS_EPISODES)
    )
    scenarios = list(QUICK_SCENARIOS if quick else CRASHES)
    # At toy size a pool of evaluation processes costs more to start than its episodes take.
    workers_eval = args.workers if args.workers is not None else (1 if quick else None)
    argv = ["fundgym", *sys.argv[1:]] if sys.argv[1:] else ["fundgym", "demo"]
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    stages = 4 if stress else 3

    # 1. train
    policy_dir = out / "ppo"
    multi = len(cfgs) > 1
    runs = [(policy_dir / f"seed_{c.seed}" if multi else policy_dir, c) for c in cfgs]
    run_dir = runs[0][0]  # the one exported
    workers = min(len(runs), args.train_workers or os.cpu_count() or 1)
    seeds_text = f", seeds {cfgs[0].seed} .. {cfgs[-1].seed}, {workers} at a time" if multi else ""
    _stage(
        f"1/{stages} train {DEFAULT_TRAIN_CONFIG.name}{' (quick)' if quick else ''}{seeds_text} "
        f"-> {policy_dir}"
    )
    t0 = time.perf_counter()
    _train_runs(runs, workers, progress=progress, argv=argv)
    times["train"] = time.perf_counter() - t0

    # 2. evaluate on the crashes
    eval_dir = out / "evaluate"
    policies = [str(policy_dir), *BASELINES]
    # A seed directory is one policy spec that evaluates as one policy per seed.
    what = (
        f"{len(runs)} seeds and {len(BASELINES)} baselines"
        if multi
        else f"{len(policies)} policies"
    )
    _stage(
        f"2/{stages} evaluate {what} x {len(scenarios)} crashes x {episodes} episodes -> {eval_dir}"
    )
    t0 = time.perf_counter()
    # Both evaluations share these, the frontier cache included: the same best_static.
    shared: dict[str, Any] = {
        "workers": workers_eval,
        "search_episodes": 4 if quick else 16,
        "grid": QUICK_GRID if quick else None,
        "cache_dir": out / "cache",
        "overwrite": True,
        "progress": progress,
        "argv": argv,
    }
    result = evaluate(policies, scenarios, episodes, eval_dir, seed=0, **shared)
    times["evaluate"] = time.perf_counter() - t0

    # 3. evaluate on fresh stress draws
    stress_dir = out / "evaluate_stress"
    stress_result = None
    if stress:
        _stage(
            f"3/{stages} evaluate the trained policy and best_static on {stress} fresh stress "
            f"draws of the training sampler (episode seeds {STRESS_SEED:,} on) -> {stress_dir}"
        )
        t0 = time.perf_counter()
        stress_result = evaluate(
            [str(policy_dir), "best_static"], ["training"], stress, stress_dir,
            seed=STRESS_SEED, **shared,
        )  # fmt: skip
        times["stress"] = time.perf_counter() - t0

    # 4. export
    export_dir = out / "export"
    _stage(
        f"{stages}/{stages} export the schedule along {EXPORT_SCENARIO} and the ONNX graph "
        f"-> {export_dir}"
    )
    t0 = time.perf_counter()
    schedule = export_schedule(
        run_dir,
        export_dir / f"schedule_{EXPORT_SCENARIO}.csv",
        scenario=EXPORT_SCENARIO,
        fmt="csv",
        naming="dydx",
        argv=argv,
    )
    graph = export_onnx(run_dir, export_dir / "policy.onnx")
    times["export"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all

    name = policy_dir.resolve().name
    print(
        f"\nper episode, mean over {len(scenarios)} crashes x {episodes} episodes "
        "(solvency loss = socialised + unrecovered + deleveraged notional; capital = fund + "
        "vault + maintenance margin):"
    )
    print(format_table(result.by_policy))
    _verdict(result, name, multi, "the crashes")
    if stress_result is not None:
        print(f"\nper episode, mean over {stress} fresh stress draws:")
        print(format_table(stress_result.by_policy))
        _verdict(stress_result, name, multi, "the stress draws")
    if quick:
        print("(--quick: toy sizes; the numbers check the pipeline, they are not a result)")
    print(
        "\ntook "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k != "total")
        + f"; total {times['total']:.0f} s ({times['total'] / 60:.1f} min)"
    )
    print("wrote:")
    model = run_dir / "best" / "policy.pt"
    written = [
        (f"trained models ({len(runs)})" if multi else "trained model", model),
        ("report", eval_dir / "report.html"),
        ("report (markdown)", eval_dir / "report.md"),
        ("metrics", eval_dir / "metrics.csv"),
        ("summary", eval_dir / "summary.json"),
        ("scatter plot", eval_dir / "plots" / "scatter.png"),
    ]
    if stress_result is not None:
        written.append(("stress report", stress_dir / "report.html"))
    written += [("schedule", schedule.path), ("ONNX policy", graph.path)]
    for label, path in written:
        print(f"  {label:18s} {path}")
    return 0


def _train_runs(
    runs: list[tuple[Path, TrainConfig]], workers: int, *, progress: bool, argv: list[str]
) -> None:
    """Train each (run directory, config), ``workers`` at a time; print a line per run.

    One at a time runs in this process with its progress bar. More run in spawned processes
    (torch and numba do not survive a fork with threads started), each seed's config on one
    torch thread, so the runs are the same as one at a time. The first run to fail stops the
    others and its error propagates as it would have in this process (a run directory that
    cannot be used: exit 2, naming it); an interrupted demo resumes from each run's last
    checkpoint when started again.
    """
    if workers <= 1:
        for path, cfg in runs:
            _report_run(path, cfg, _train_one(cfg, path, argv, progress))
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    total = sum(cfg.total_timesteps for _, cfg in runs)
    bar = progress_bar(total, f"train {len(runs)} seeds, {workers} at a time", progress, "step")
    shown, finished = 0, set()
    try:
        futures = {
            pool.submit(_train_one, cfg, path, argv, False): (path, cfg) for path, cfg in runs
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            for future in done:
                path, cfg = futures[future]
                result = future.result()  # a failed run raises here and stops the others
                finished.add(path)
                _report_run(path, cfg, result)
            now = sum(
                cfg.total_timesteps if path in finished else _evaluated_timesteps(path)
                for path, cfg in runs
            )
            bar.update(max(now - shown, 0))
            shown = max(now, shown)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _evaluated_timesteps(path: Path) -> int:
    """Timesteps of a training run's last held-out evaluation so far (0 before the first).

    The progress a run in another process has made, as its ``evaluations.csv`` says (a row per
    evaluation, ``eval.freq`` apart); a row being written (fewer fields than the header) is
    passed over for the one before it.
    """
    try:
        header, *rows = (path / "evaluations.csv").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):  # no file yet, or an empty one
        return 0
    fields = header.count(",")
    for row in reversed(rows):
        first = row.split(",", 1)[0]
        if row.count(",") == fields and first.isdigit():
            return int(first)
    return 0


def _train_one(
    cfg: TrainConfig, path: Path, argv: list[str], progress: bool
) -> tuple[int, int | None, float]:
    """Train (or reuse, or resume) one run; (timesteps, resumed from, seconds)."""
    from fundgym.agents.training.train import train  # stable-baselines3 only when training

    t0 = time.perf_counter()
    trained = train(cfg, path, resume=True, progress=progress, argv=argv)
    return trained.num_timesteps, trained.resumed_from, time.perf_counter() - t0


def _report_run(path: Path, cfg: TrainConfig, done: tuple[int, int | None, float]) -> None:
    """Say whether ``path`` was reused or trained, and in how long."""
    timesteps, resumed_from, took = done
    if resumed_from is not None and resumed_from >= cfg.total_timesteps:
        print(f"reused the finished run in {path} ({timesteps:,} timesteps)", flush=True)
    else:
        print(f"trained {timesteps:,} timesteps in {took:.0f} s -> {path}", flush=True)


def _verdict(result: Any, name: str, multi: bool, where: str) -> None:
    """Print the trained policy's verdict against ``best_static`` on one evaluation."""
    if multi:
        _seed_verdict(seed_rows_of(result.seeds, name), name, where)
        return
    d = result.dominance.get(name)
    if d is None:
        return
    verdict = (
        f"DOMINATES best_static ({d['rule']} rule)"
        if d["dominates"]
        else "does NOT dominate best_static"
    )
    print(
        f"\ntrained policy, on {where}, {verdict}: loss x{d['loss_ratio']:.2f}, capital "
        f"x{d['capital_ratio']:.2f} (bar: loss <= 0.5x at <= 1x capital, or loss <= 1x at "
        "<= 0.8x capital)"
    )


def seed_rows_of(seeds: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The ``seeds.csv`` rows of multi-seed policy ``name`` from an evaluation's ``seeds``."""
    rows: list[dict[str, Any]] = seeds[name]["rows"]
    return rows


def _seed_verdict(rows: list[dict[str, Any]], name: str, where: str) -> None:
    """Print the verdict of ``name``'s seeds against ``best_static`` (IQM, intervals)."""
    from fundgym.agents.evaluate.seeds import seed_verdict

    v = seed_verdict(rows, name)
    d = v.dominance
    verdict = (
        f"DOMINATES best_static ({d['rule']} rule)"
        if d["dominates"]
        else "does NOT dominate best_static"
    )
    loss, cap = v.loss_iqm_usd, v.capital_iqm_usd
    p, pe = v.p_improvement, v.p_exceeds
    worst = f"{v.worst_seed_label()} " + ("no worse" if v.worst_seed_no_worse else "WORSE")
    paired = f": {v.worst_seed_paired()}" if v.worst_seed_paired() else ""
    lines = [
        f"\ntrained policy over {v.n_seeds} seeds (interquartile mean), on {where}, {verdict}: "
        f"loss x{d['loss_ratio']:.2f}, capital x{d['capital_ratio']:.2f} (bar: loss <= 0.5x at "
        "<= 1x capital, or loss <= 1x at <= 0.8x capital)",
        f"  loss IQM ${loss[0]:,.0f} [95% CI ${loss[1]:,.0f}, ${loss[2]:,.0f}], capital IQM "
        f"${cap[0]:,.0f} [${cap[1]:,.0f}, ${cap[2]:,.0f}]",
        f"  P(improvement over best_static) {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]; P(loss above "
        f"best_static's on the same episode) {pe[0]:.2f} [{pe[1]:.2f}, {pe[2]:.2f}]; {worst} "
        f"than best_static on loss{paired}",
    ]
    print("\n".join(lines))


def _stage(text: str) -> None:
    print(f"\n== {text}", flush=True)
