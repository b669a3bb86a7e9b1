"""``fundgym train``: train an agent from a config file, one seed or several."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fundgym.agents.cli.guards import OUTPUT_KINDS, check_output, check_seed
from fundgym.agents.cli.levers import lever_table
from fundgym.agents.config import (
    DEFAULT_TRAIN_CONFIG,
    TrainConfig,
    check_scenarios,
    load_config,
)
from fundgym.agents.evaluate.backends import BACKENDS, check_backend
from fundgym.agents.outputs import output_lock
from fundgym.agents.policies.runs import seed_dir_name

if TYPE_CHECKING:
    from fundgym.agents.training.train import TrainResult

DESCRIPTION = f"""\
Train an agent from a YAML config (see configs/train/). The config is validated before anything
runs or is written: an unknown key, a wrong type (true where a number is expected, 1 or yes
where true/false is), a value out of range, or a scenario in env.scenario or eval.scenarios
that is neither 'training', a library name nor a valid YAML file stops the command with exit
code 2 and a message naming the file, the field, the value and what is allowed. So does an
--out that cannot be written, or a non-empty folder that is not a fundgym run (see --force).

The run directory receives config.yaml (the resolved config), command.txt, final/ (the final
model: weights as plain tensors, normalisation statistics as plain arrays, a manifest of their
SHA-256), best/ (the same for the best on the held-out evaluation scenarios), evaluations.csv,
checkpoints/, tensorboard/ and train_summary.json. Loading a run directory never runs code
from it; --resume also reads SB3's pickled files in checkpoints/, so resume only your own runs.
One process writes a run directory at a time: a second fundgym command on the same --out
exits with code 2 at once, naming the PID that holds it (the lock is the hidden file
.NAME.lock beside DIR; a killed process releases it). --resume drops a last evaluations.csv
row that a kill cut short, and says so.

--seeds S1,S2,... trains one run per seed into DIR/seed_<S>/ (`fundgym evaluate --policy DIR`
then reports statistics across the seeds): one after another in this process (--backend
local, the default), or in parallel as Ray tasks on this machine, one CPU each (--backend ray;
pip install fundgym[ray]). A seed's run is the same on either backend: same seed, same torch
thread count (this process's, unless the config sets torch_threads), same numbers. To train
seeds in parallel without oversubscribing the cores, --set torch_threads=1 (on both backends,
to compare them).

A config with a markets: section (configs/train/ppo_markets.yaml) trains on the multi-market
env, fundgym/MarketsInsuranceFund-v0, with every lever it has (the exchange's, one per market,
a haircut per collateral asset) and no env: section; its scenarios must list the same markets
and collateral assets. Its n_envs exchanges step as one batch of the multi-market simulator
(held-out evaluation: one env each); markets.sampler: {{crash_prob: P, idio_prob: Q}} trains on
days drawn around the scenario's markets instead of the scenario as written. Score such a run
with fundgym markets --run DIR (fundgym evaluate takes one-market runs and refuses it by name);
fundgym export writes its schedule per market and its ONNX graph.
Watch training with
  tensorboard --logdir DIR/tensorboard

The levers: env.controlled lists those with an action range, in action order; --set
env.fixed.NAME=VALUE starts one at VALUE, which must lie in its action range (never clipped).
`fundgym levers` adds hard bounds and venue names.
{lever_table()}
"""


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym train``."""
    p = sub.add_parser(
        "train",
        help="train an agent (PPO, SAC, TD3, A2C) from a config file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        default=str(DEFAULT_TRAIN_CONFIG),
        help="training config, YAML (default: the packaged ppo.yaml: configs/train/ in a checkout)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY.PATH=VALUE",
        action="append",
        default=[],
        help="override one config value, e.g. --set n_envs=32 --set env.reward.solvency=40 "
        "(the value is read as YAML; repeatable)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, metavar="N", help="random seed (overrides the config's)")
    seeds.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S1,S2,...",
        help="train one run per seed, into DIR/seed_<S> (for confidence intervals)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="run directory (default: runs/train/<config name>-seed<N>, or "
        "runs/train/<config name> holding seed_<S>/ with --seeds)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in DIR from its latest checkpoint (after an interruption); "
        "the config must be the one that started it",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where the seeds train: one after another in this process (local, default) or in "
        "parallel as Ray tasks on this machine (pip install fundgym[ray]); the same runs either "
        "way",
    )
    p.add_argument("--force", action="store_true", help=OUTPUT_KINDS["run"].force_help())
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Validate the config, its scenarios and --out, lock the run directories, then train.

    Nothing is written before every check has passed: a typo in a scenario name or an
    unwritable --out leaves no config.yaml behind to refuse the corrected command.
    """
    check_seed("--seed", args.seed)
    check_backend(args.backend, None)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides)
    check_scenarios(cfg, args.config)
    seed_cfgs = (
        [(s, load_config(args.config, [*overrides, f"seed={s}"])) for s in args.seeds]
        if args.seeds
        else [(cfg.seed, cfg)]
    )
    stem = Path(args.config).stem
    if args.out:
        base = Path(args.out)
    else:
        base = Path("runs") / "train" / (stem if args.seeds else f"{stem}-seed{cfg.seed}")
    run_dirs = [base / seed_dir_name(seed) if args.seeds else base for seed, _ in seed_cfgs]
    for path in dict.fromkeys([base, *run_dirs]):
        check_output(path, OUTPUT_KINDS["run"], force=args.force)
    runs = list(zip(run_dirs, seed_cfgs, strict=True))
    with output_lock(base, *run_dirs, command="fundgym train"):
        if args.backend == "ray":
            return _train_seeds_ray(args, runs)
        return _train_seeds(args, runs)


def _argv() -> list[str] | None:
    """The command line, recorded in each run's ``command.txt``."""
    return ["fundgym", *sys.argv[1:]] if sys.argv[1:] else None


def _report(seed: int, run_dir: Path, result: TrainResult) -> None:
    """One line per finished seed: timesteps, time, last evaluation, where it was written."""
    evals = ", ".join(f"{k} {r:.1f} (cost {c:.2f})" for k, (r, c) in result.last_eval.items())
    resumed = f", resumed at {result.resumed_from:,}" if result.resumed_from else ""
    print(
        f"seed {seed}: {result.num_timesteps:,} timesteps in {result.wall_s:.0f} s{resumed}; "
        f"evaluation reward {evals}; wrote {run_dir}/final/"
    )


def _train_seeds(args: argparse.Namespace, runs: list[tuple[Path, tuple[int, TrainConfig]]]) -> int:
    """Train each (run directory, (seed, config)) in turn; the command's exit code."""
    from fundgym.agents.training.train import train

    argv = _argv()
    for run_dir, (seed, scfg) in runs:
        try:
            result = train(
                scfg, run_dir, resume=args.resume, progress=not args.no_progress, argv=argv
            )
        except KeyboardInterrupt:
            print(
                f"\nfundgym train: interrupted; continue with --resume --out {run_dir}",
                file=sys.stderr,
            )
            return 130
        _report(seed, run_dir, result)
    return 0


def train_in_task(
    cfg: TrainConfig, run_dir: Path, resume: bool, argv: list[str] | None, torch_threads: int
) -> TrainResult:
    """One seed's training inside a Ray task, as the local backend would run it.

    Ray starts its workers with one thread for torch; the local backend trains with the
    calling process's thread count, and a different count can change the arithmetic, so the
    task uses ``torch_threads`` (the caller's) unless the config sets its own.
    """
    import torch

    from fundgym.agents.training.train import train

    if cfg.torch_threads is None:
        torch.set_num_threads(torch_threads)
    return train(cfg, run_dir, resume=resume, progress=False, argv=argv)


def _train_seeds_ray(
    args: argparse.Namespace, runs: list[tuple[Path, tuple[int, TrainConfig]]]
) -> int:
    """Train every seed at once as a Ray task (one CPU each); the command's exit code.

    As :func:`fundgym.agents.evaluate.backends.run_jobs_backend` does, a Ray instance already
    up in this process is used and left running; otherwise a local one is started with one CPU
    per seed (at most this machine's) and shut down at the end. The first seed that fails
    cancels the others and its error is raised as the local backend would raise it (a run
    directory it cannot use: exit 2, naming it).
    """
    import torch

    ray: Any = importlib.import_module("ray")  # check_backend has checked that it imports
    started = not ray.is_initialized()
    if started:
        cpus = min(len(runs), os.cpu_count() or 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(train_in_task)
        argv, threads = _argv(), torch.get_num_threads()
        refs = {
            task.remote(scfg, run_dir, args.resume, argv, threads): (seed, run_dir)
            for run_dir, (seed, scfg) in runs
        }
        print(f"training seeds {', '.join(str(s) for s, _ in refs.values())} on Ray")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    for other in pending:
                        ray.cancel(other, force=True)
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, Exception) else exc) from None
                _report(*refs[ref], result)
    except KeyboardInterrupt:
        print(
            "\nfundgym train: interrupted; continue with --resume and the same --seeds and --out",
            file=sys.stderr,
        )
        return 130
    finally:
        if started:
            ray.shutdown()
    return 0
