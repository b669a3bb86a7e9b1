"""``fundgym demo``: the main job in one command: train, evaluate against baselines, export.

1. **Train** the default config (``configs/train/ppo.yaml``: PPO on 128 batched exchanges)
   into ``OUT/ppo`` (a finished run there with the same config is reused, an interrupted one
   resumed from its last checkpoint).
2. **Evaluate** it on the seven calibrated historical crashes beside the venue presets
   (``static:binance``, ``static:dydx``, ``static:hyperliquid``), the hand-written ``rule``,
   ``best_static`` (searched on the training sampler) and ``hindsight_static`` (searched on the
   crashes themselves), every policy on the same seeds, into ``OUT/evaluate`` (metrics.csv,
   summary.json, report.md, report.html, plots/).
3. **Export** the trained policy's parameter schedule along ``oct_10_2025`` (CSV) and its ONNX
   graph into ``OUT/export``.

It prints the results table, whether the trained policy dominates ``best_static``, how long
each stage took and where everything went. ``--quick`` runs every stage at toy size (about a
minute): a check that the pipeline works, not a result.

``--seeds N`` trains N seeds (``--seed`` .. ``--seed + N - 1``) into ``OUT/ppo/seed_<S>``
and judges them together, as one draw of training cannot be: the verdict is the dominance
bar applied to the interquartile mean across seeds of loss and capital, beside the
probability of improvement over ``best_static`` with its bootstrap interval and whether the
worst seed is no worse (:mod:`fundgym.agents.evaluate.seeds`). The export is the first seed's.
"""

from __future__ import annotations

import argparse
import sys
import time
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
)
from fundgym.agents.outputs import output_lock
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
        help="every stage at toy size, about a minute (checks the pipeline; not a result)",
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
        help="evaluation worker processes (default: one per CPU)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed, the first of --seeds (default 0)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train N seeds (--seed .. --seed + N - 1) into OUT/ppo/seed_<S> and judge them by "
        "the interquartile mean across seeds, with bootstrap intervals (default 1)",
    )
    parser.add_argument("--force", action="store_true", help=OUTPUT_KINDS["demo"].force_help())
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """Check the arguments, the config and --out, lock --out, then train, evaluate and export."""
    if args.episodes is not None:
        at_least("--episodes", args.episodes, 1)
    if args.workers is not None:
        at_least("--workers", args.workers, 1)
    at_least("--seeds", args.seeds, 1)
    check_seed("--seed", args.seed)
    check_seed("--seed + --seeds - 1", args.seed + args.seeds - 1)
    quick = [*(QUICK_TRAIN if args.quick else [])]
    cfgs = [
        load_config(DEFAULT_TRAIN_CONFIG, [*quick, f"seed={args.seed + k}"])
        for k in range(args.seeds)
    ]
    check_scenarios(cfgs[0], str(DEFAULT_TRAIN_CONFIG))
    out = Path(args.out)
    check_output(out, OUTPUT_KINDS["demo"], force=args.force)
    single = out / "ppo" / "config.yaml"
    if args.seeds > 1 and single.exists() and not args.force:
        raise UsageError(
            f"--seeds {args.seeds}: {single.parent} holds a single-seed run (its config.yaml); "
            "use another --out, or --force to replace the demo"
        )
    # Its run and evaluation directories too: no `fundgym train --out DIR/ppo` meanwhile.
    with output_lock(out, out / "ppo", out / "evaluate", command="fundgym demo"):
        return _demo(args, cfgs)


def _demo(args: argparse.Namespace, cfgs: list[TrainConfig]) -> int:
    """Train ``cfgs`` (one per seed), evaluate, export; print the table, verdict, times, paths."""
    from fundgym.agents.evaluate import evaluate
    from fundgym.agents.export import export_onnx, export_schedule
    from fundgym.agents.training.train import train  # stable-baselines3 only when training

    out = Path(args.out)
    quick = bool(args.quick)
    progress = not args.no_progress
    episodes = args.episodes or (2 if quick else 8)
    scenarios = list(QUICK_SCENARIOS if quick else CRASHES)
    argv = ["fundgym", *sys.argv[1:]] if sys.argv[1:] else ["fundgym", "demo"]
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. train
    policy_dir = out / "ppo"
    multi = len(cfgs) > 1
    runs = [(policy_dir / f"seed_{c.seed}" if multi else policy_dir, c) for c in cfgs]
    run_dir = runs[0][0]  # the one exported
    seeds_text = f", seeds {cfgs[0].seed} .. {cfgs[-1].seed}" if multi else ""
    _stage(
        f"1/3 train {DEFAULT_TRAIN_CONFIG.name}{' (quick)' if quick else ''}{seeds_text} "
        f"-> {policy_dir}"
    )
    t0 = time.perf_counter()
    for path, cfg in runs:
        t_run = time.perf_counter()
        trained = train(cfg, path, resume=True, progress=progress, argv=argv)
        took = time.perf_counter() - t_run
        if trained.resumed_from is not None and trained.resumed_from >= cfg.total_timesteps:
            print(f"reused the finished run in {path} ({trained.num_timesteps:,} timesteps)")
        else:
            print(f"trained {trained.num_timesteps:,} timesteps in {took:.0f} s -> {path}")
    times["train"] = time.perf_counter() - t0

    # 2. evaluate
    eval_dir = out / "evaluate"
    policies = [str(policy_dir), *BASELINES]
    _stage(
        f"2/3 evaluate {len(policies)} policies x {len(scenarios)} crashes x {episodes} "
        f"episodes -> {eval_dir}"
    )
    t0 = time.perf_counter()
    result = evaluate(
        policies,
        scenarios,
        episodes,
        eval_dir,
        seed=0,
        workers=args.workers,
        search_episodes=4 if quick else 16,
        grid=QUICK_GRID if quick else None,
        cache_dir=out / "cache",
        overwrite=True,
        progress=progress,
        argv=argv,
    )
    times["evaluate"] = time.perf_counter() - t0

    # 3. export
    export_dir = out / "export"
    _stage(f"3/3 export the schedule along {EXPORT_SCENARIO} and the ONNX graph -> {export_dir}")
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
    d = None if multi else result.dominance.get(name)
    if multi:
        _seed_verdict(seed_rows_of(result.seeds, name), name)
    elif d is not None:
        verdict = (
            f"DOMINATES best_static ({d['rule']} rule)"
            if d["dominates"]
            else "does NOT dominate best_static"
        )
        print(
            f"\ntrained policy {verdict}: loss x{d['loss_ratio']:.2f}, capital "
            f"x{d['capital_ratio']:.2f} (bar: loss <= 0.5x at <= 1x capital, or loss <= 1x at "
            "<= 0.8x capital)"
        )
    if quick:
        print("(--quick: toy sizes; the numbers check the pipeline, they are not a result)")
    print(
        "\ntook "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k != "total")
        + f"; total {times['total']:.0f} s ({times['total'] / 60:.1f} min)"
    )
    print("wrote:")
    for label, path in (
        ("trained model", run_dir / "best" / "policy.pt"),
        ("report", eval_dir / "report.html"),
        ("report (markdown)", eval_dir / "report.md"),
        ("metrics", eval_dir / "metrics.csv"),
        ("summary", eval_dir / "summary.json"),
        ("scatter plot", eval_dir / "plots" / "scatter.png"),
        ("schedule", schedule.path),
        ("ONNX policy", graph.path),
    ):
        print(f"  {label:18s} {path}")
    return 0


def seed_rows_of(seeds: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The ``seeds.csv`` rows of multi-seed policy ``name`` from an evaluation's ``seeds``."""
    rows: list[dict[str, Any]] = seeds[name]["rows"]
    return rows


def _seed_verdict(rows: list[dict[str, Any]], name: str) -> None:
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
    worst = "no worse" if v.worst_seed_no_worse else "WORSE"
    lines = [
        f"\ntrained policy over {v.n_seeds} seeds (interquartile mean) {verdict}: loss "
        f"x{d['loss_ratio']:.2f}, capital x{d['capital_ratio']:.2f} (bar: loss <= 0.5x at "
        "<= 1x capital, or loss <= 1x at <= 0.8x capital)",
        f"  loss IQM ${loss[0]:,.0f} [95% CI ${loss[1]:,.0f}, ${loss[2]:,.0f}], capital IQM "
        f"${cap[0]:,.0f} [${cap[1]:,.0f}, ${cap[2]:,.0f}]",
        f"  P(improvement over best_static) {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]; P(loss above "
        f"best_static's on the same episode) {pe[0]:.2f} [{pe[1]:.2f}, {pe[2]:.2f}]; worst seed "
        f"{worst} than best_static on loss",
    ]
    print("\n".join(lines))


def _stage(text: str) -> None:
    print(f"\n== {text}", flush=True)
