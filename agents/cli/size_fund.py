"""``fundgym size-fund``: how large must the insurance fund be, at 99% and 99.9%?"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from fundgym.agents.cli.guards import (
    OutputKind,
    UsageError,
    add_backend_options,
    at_least,
    check_output,
    check_seed,
)
from fundgym.agents.evaluate.sizing import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_TARGET_PROB,
    MIN_EPISODES_999,
    SizingResult,
    few_episodes_message,
)
from fundgym.agents.evaluate.sizing_report import KIND, is_sizing_dir
from fundgym.agents.outputs import output_lock, progress_bar
from fundgym.agents.policies import PRESETS

#: What ``--out`` holds, and how an earlier sizing is told from anything else.
OUTPUT = OutputKind("sizing directory", True, is_sizing_dir, f"a sizing.json of kind {KIND}")

DESCRIPTION = f"""\
Run one policy through a scenario set for many episodes and size the insurance fund from
the deficits: per episode, the fund's peak cumulative payout (the bad debt it paid) and the
loss beyond it (socialised + unrecovered + the profit ADL took from its counterparties);
their sum is the fund that would have covered everything, and fund / open interest is the
headline.

Reports, overall and per scenario, each with the number of episodes it rests on:
  VaR and ES at 95%, 99% and 99.9% of the fund needed (USD and share of open interest)
    and of the loss beyond the policy's own fund, with {BOOTSTRAP_RESAMPLES:,}-resample
    percentile bootstrap intervals (fixed seed);
  the fund, in USD and as a share of open interest, that keeps P(socialised loss or ADL)
    at or under --target-prob;
  Cover-2: the deficit of the two largest accounts at the start defaulting under the
    scenario set's largest fall (longs) and rise (shorts).

A 99.9% figure from fewer than {MIN_EPISODES_999:,} episodes per scenario is refused (exit 2)
unless --allow-few-episodes is passed, which the report then states.

A policy (--policy) is one of: static:PRESET ({", ".join(PRESETS)}),
static:PRESET,k=v,..., static:k=v,..., rule, a `fundgym train` run directory,
schedule:FILE, table:FILE (the forms of `fundgym evaluate`). A venue preset runs under its
own fund size, margin tiers and liquidation engine.

Scenarios (--scenarios): library names or YAML paths, comma-separated; `crashes` = the seven
calibrated historical crashes; `training` (the default) = draws of the training sampler, which
oversamples stress (crash and thin-market draws), as in `fundgym evaluate`.

--out DIR receives sizing.json, sizing.md, sizing.html (figures embedded), plots/,
episodes.csv (one row per episode), config.yaml (the resolved arguments and environment) and
command.txt, built under a temporary name and renamed into place. Everything is checked
before any episode runs.

Exit codes: 0 done, 2 bad arguments (the message names the option, value and what is allowed).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym size-fund``."""
    p = sub.add_parser(
        "size-fund",
        help="size the insurance fund: VaR/ES of the deficit at 95/99/99.9%%, the fund / OI "
        "for a target P(socialised loss or ADL), Cover-2",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", required=True, metavar="SPEC", help="the policy to size for")
    p.add_argument(
        "--scenarios",
        action="append",
        default=None,
        metavar="SET",
        help="comma-separated scenarios, 'crashes' or 'training' (repeatable; default: training)",
    )
    p.add_argument(
        "--episodes",
        type=int,
        required=True,
        metavar="N",
        help=f"episodes per scenario (99.9%% figures need >= {MIN_EPISODES_999:,})",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="first episode seed; episode i of every scenario is seeded S + i (default 0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help="worker processes, or the CPUs of a local Ray instance (default: one per CPU)",
    )
    add_backend_options(p)
    p.add_argument(
        "--target-prob",
        type=float,
        default=DEFAULT_TARGET_PROB,
        metavar="P",
        help="size the fund so that P(socialised loss or ADL) <= P, strictly between 0 and 1 "
        f"(default {DEFAULT_TARGET_PROB:g}: 99.9%%)",
    )
    p.add_argument(
        "--allow-few-episodes",
        action="store_true",
        help=f"print 99.9%% figures from fewer than {MIN_EPISODES_999:,} episodes per scenario "
        "(marked in every output)",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="training or environment config for the environment (default: a trained "
        "policy's own, else the packaged ppo.yaml)",
    )
    p.add_argument(
        "--accounts",
        type=int,
        default=None,
        metavar="N",
        help="account slots per exchange (default: the config's, 1,024)",
    )
    p.add_argument(
        "--force", action="store_true", help=OUTPUT.force_help() + "; --force replaces it"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=main)


def preflight(args: argparse.Namespace) -> list[str]:
    """Check every argument before any work; the scenario names.

    The numbers, the episode count against the 99.9% minimum, the backend, the policy and
    every scenario (each environment built as a config; a trained policy's files read), and
    ``--out``. Nothing runs and nothing is written.

    Raises:
        UsageError, SpecError, EvaluateError, ScheduleError, TableError: The first problem,
            naming the option, the value and what is allowed.
    """
    from fundgym.agents.evaluate.backends import check_backend
    from fundgym.agents.evaluate.sizing import sizing_env
    from fundgym.agents.policies import build_policy
    from fundgym.agents.rollout import job_env, parse_scenarios
    from fundgym.envs.config import EnvConfig

    at_least("--episodes", args.episodes, 1)
    message = few_episodes_message(args.episodes, args.allow_few_episodes)
    if message is not None:
        raise UsageError(message)
    if args.workers is not None:
        at_least("--workers", args.workers, 1)
    check_seed("--seed", args.seed)
    check_seed("--seed", args.seed + args.episodes - 1)
    if not 0.0 < args.target_prob < 1.0:
        raise UsageError(
            f"--target-prob must lie strictly between 0 and 1 (a probability), got "
            f"{args.target_prob}"
        )
    if args.accounts is not None:
        at_least("--accounts", args.accounts, 1)
        field = next(f for f in dataclasses.fields(EnvConfig) if f.name == "n_accounts")
        if args.accounts > field.metadata["le"]:
            raise UsageError(
                f"--accounts must be <= {field.metadata['le']:,} (env.n_accounts), got "
                f"{args.accounts:,}"
            )
    check_backend(args.backend, args.address)
    scenarios = parse_scenarios(args.scenarios or ["training"])
    spec, base = sizing_env(args.policy, args.config, args.accounts)
    kw: dict[str, Any] = {}
    for scenario in scenarios:
        kw = job_env(base, spec, scenario)
    if spec.kind in ("trained", "schedule", "table"):
        build_policy(spec, tuple(kw["controlled"]))
    check_output(Path(args.out), OUTPUT, force=args.force)
    return scenarios


def main(args: argparse.Namespace) -> int:
    """Validate, lock --out, run the episodes, write the outputs, print the headline."""
    from fundgym.agents.evaluate.sizing import size_fund
    from fundgym.agents.evaluate.sizing_report import write_sizing

    scenarios = preflight(args)
    command = shlex.join(["fundgym", *sys.argv[1:]]) if sys.argv[1:] else "fundgym size-fund"
    out = Path(args.out)
    bar = progress_bar(args.episodes * len(scenarios), "episodes", not args.no_progress)
    with output_lock(out, command="fundgym size-fund"):
        result = size_fund(
            args.policy,
            scenarios,
            args.episodes,
            seed=args.seed,
            target_prob=args.target_prob,
            allow_few_episodes=args.allow_few_episodes,
            config=args.config,
            accounts=args.accounts,
            workers=args.workers,
            backend=args.backend,
            address=args.address,
            progress=bar.update,
        )
        bar.close()
        write_sizing(out, result, command, address=args.address)
    print(headline(result))
    return 0


def headline(result: SizingResult) -> str:
    """The lines printed at the end: the fund needed per group, and what each rests on."""
    lines = []
    if result.allow_few_episodes and result.episodes < MIN_EPISODES_999:
        lines.append(
            f"--allow-few-episodes was used: 99.9% figures rest on {result.episodes:,} "
            f"episodes per scenario (< {MIN_EPISODES_999:,}), marked with a dagger"
        )
    p = result.target_prob
    lines.append(
        f"{'scenario':24s} {'episodes':>9s} {'fund/OI for P<=' + format(p, 'g'):>22s} "
        f"{'VaR99 /OI':>10s} {'VaR99.9 /OI':>12s} {'Cover-2 /OI':>12s}"
    )
    groups = [("all scenarios", result.overall), *result.by_scenario.items()]
    for name, g in groups:
        target = g["fund_for_target"]
        tail = {r["level"]: r for r in g["tail"]["fund_needed_frac_oi"]}
        few = " †" if tail[0.999]["few_episodes"] else ""
        lines.append(
            f"{name[:24]:24s} {g['episodes']:>9,} {100 * target['frac_oi']:>21.2f}% "
            f"{100 * tail[0.99]['var']:>9.2f}% {100 * tail[0.999]['var']:>10.2f}%{few:2s} "
            f"{100 * g['cover2']['frac_oi']:>11.2f}%"
        )
    lines.append(
        f"{len(result.deficits):,} episodes in {result.episodes_s:.0f} s "
        f"({len(result.deficits) / max(result.episodes_s, 1e-9):.1f} episodes/s, "
        f"{result.workers} worker(s), {result.backend}); total {result.wall_s:.0f} s"
    )
    return "\n".join(lines)
