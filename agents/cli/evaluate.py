"""``fundgym evaluate``: policies side by side on crash scenarios, same scenarios and seeds."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fundgym.agents.cli.guards import (
    OUTPUT_KINDS,
    UsageError,
    add_backend_options,
    at_least,
    check_output,
    check_seed,
)
from fundgym.agents.cli.levers import lever_table
from fundgym.agents.evaluate.backends import check_backend
from fundgym.agents.outputs import output_lock
from fundgym.agents.policies import PRESETS, STATIC_PARAMS

DESCRIPTION = f"""\
Run every policy through every scenario for K episodes (episode i seeded S + i for every
policy: same market paths and trader books, only the parameters differ), and write
metrics.csv (one row per policy x scenario x episode), summary.json (means with 95%
intervals, bad-debt VaR/ES, P(fund exhausted), dominance against best_static, share of the
best_static -> hindsight_static gap closed), report.md, a self-contained report.html and
plots/ into --out.

A policy (--policy, repeatable) is one of:
  RUN_DIR                a `fundgym train` run directory (its best model by held-out evaluation)
  SEEDS_DIR              a `fundgym train --seeds` directory (seed_<S>/ runs of one config):
                         every seed runs as policy NAME@seed_<S>, and seeds.csv (also in
                         summary.json and the report) gives, per scenario and over all, the
                         interquartile mean of user loss and capital across seeds with 95%
                         bootstrap intervals, the probability of improvement over every other
                         policy, the probability that its user loss exceeds theirs, and each
                         seed's mean (docs/seeds.md)
  static:PRESET          a venue's parameters held fixed: {", ".join(PRESETS)}
  static:k=v,...         any static set, e.g. static:mmr=0.05,liquidation_fee_rate=0.01
  static:PRESET,k=v,...  a preset with values replaced (fund_to_oi_frac, vault_to_oi_frac
                         and the vault's loss limit vault_adl_loss_frac too)
  rule                   a hand-written dynamic controller (volatility-scaled margin with an
                         anti-procyclicality buffer and floor, fees up as fund coverage falls,
                         fund to stable assets when volatility rises)
  best_static            the point of the solvency-vs-capital frontier of static sets (NSGA-II
                         on training-sampler draws, the old 24-point grid first) with the
                         least capital among those within 10% of the lowest solvency loss
                         (`fundgym frontier` draws the whole front; the study is cached in
                         --cache-dir with the settings that produced it)
  hindsight_static       the same search on the evaluation scenarios and seeds themselves: an
                         upper bound for static choices no operator could have made

Levers a static set may name (static:name=value: natural units inside the action range; the
others keep their defaults; `fundgym levers` lists every lever in full):
{lever_table(STATIC_PARAMS)}

Scenarios (--scenarios): library names or YAML paths, comma-separated; `crashes` = the seven
calibrated historical crashes; `training` = draws of the training sampler.

Everything is checked before any work: the numbers, each policy (a run directory against its
manifest, a schedule or table file read in full and matched to the environment), each
scenario, --config, and --out (writable; an existing non-empty --out is replaced only with
--overwrite when it holds an evaluation, and only with --force when it holds anything else).

Exit codes: 0 done, 2 bad arguments (the message names the option, value and what is allowed).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="compare policies (trained, venue presets, rule, searched) on crash scenarios",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        dest="policies",
        action="append",
        required=True,
        metavar="P",
        help="a policy to evaluate (repeatable; see above)",
    )
    p.add_argument(
        "--scenarios",
        action="append",
        default=None,
        metavar="NAMES_OR_PATHS",
        help="comma-separated scenarios (repeatable; default: crashes)",
    )
    p.add_argument(
        "--episodes", type=int, default=8, metavar="K", help="episodes per scenario (default 8)"
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="first episode seed (default 0)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="training or environment config for the evaluation environment (default: the "
        "first trained run's config, else the packaged ppo.yaml: configs/train/ in a checkout)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: one per CPU); 1 runs everything in this process",
    )
    p.add_argument(
        "--search-episodes",
        type=int,
        default=16,
        metavar="K",
        help="training-sampler episodes per grid point for best_static (default 16)",
    )
    p.add_argument(
        "--cache-dir",
        default="runs/cache",
        metavar="DIR",
        help="where static searches are cached (default runs/cache; 'none' disables)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing evaluation in --out"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help=OUTPUT_KINDS["evaluation"].force_help() + "; --force replaces it",
    )
    add_backend_options(p)
    p.add_argument("--no-report", action="store_true", help="skip report.md/html and plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.set_defaults(func=main)


def format_table(by_policy: Sequence[Mapping[str, Any]]) -> str:
    """The per-policy headline table printed at the end (USD per episode).

    "at insolvency $" is the part of the solvency loss in the decision that crossed the
    insolvency line (``insolvency_decision_loss_usd``; "n/a" in a summary without it).
    """
    head = (
        f"{'policy':34s} {'solvency loss $':>16s} {'at insolvency $':>16s} {'bad debt $':>13s} "
        f"{'ADL $':>13s} {'P(exhausted)':>12s} {'capital $':>12s} {'reward':>10s}"
    )
    lines = [head, "-" * len(head)]
    for r in by_policy:
        at = r.get("insolvency_decision_loss_usd")
        at_text = "n/a" if at is None else f"{float(at):,.0f}"
        lines.append(
            f"{str(r['policy'])[:34]:34s} {float(r['solvency_loss_usd']):>16,.0f} "
            f"{at_text:>16s} "
            f"{float(r['bad_debt_usd']):>13,.0f} {float(r['adl_volume_usd']):>13,.0f} "
            f"{float(r['p_fund_exhausted']):>12.0%} "
            f"{float(r['mean_capital_locked_usd']):>12,.0f} "
            f"{float(r['total_reward']):>10.1f}"
        )
    return "\n".join(lines)


def format_seed_table(rows: Sequence[Mapping[str, Any]], references: Sequence[str]) -> str:
    """A multi-seed policy's user loss across seeds, per scenario and over all (ALL).

    The interquartile mean with its 95% interval, the seeds' lowest and highest means, and,
    against the first reference (``best_static`` when evaluated), the probabilities of
    improvement and of exceeding its loss, with their intervals.
    """
    loss = {
        (str(r["scenario"]), str(r["statistic"]), str(r["reference"])): r
        for r in rows
        if r["metric"] == "solvency_loss_usd" and r["seed"] == ""
    }

    def usd(r: Mapping[str, Any]) -> str:
        return f"{r['value']:,.0f} [{r['ci_low']:,.0f}, {r['ci_high']:,.0f}]"

    def prob(r: Mapping[str, Any]) -> str:
        return f"{r['value']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}]"

    ref = references[0] if references else None
    head = f"{'scenario':24s} {'user loss IQM [95% CI] $':>36s} {'seeds min..max $':>26s}"
    if ref is not None:
        head += f" {'P(improve) vs ' + ref:>30s} {'P(loss > ' + ref + ')':>26s}"
    lines = [head, "-" * len(head)]
    for scenario in dict.fromkeys(str(r["scenario"]) for r in rows):
        low, high = loss[(scenario, "seed_min", "")], loss[(scenario, "seed_max", "")]
        spread = f"{low['value']:,.0f}..{high['value']:,.0f}"
        line = f"{scenario[:24]:24s} {usd(loss[(scenario, 'iqm', '')]):>36s} {spread:>26s}"
        if ref is not None:
            improve = prob(loss[(scenario, "probability_of_improvement", ref)])
            exceeds = prob(loss[(scenario, "probability_exceeds", ref)])
            line += f" {improve:>30s} {exceeds:>26s}"
        lines.append(line)
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Validate every argument and input file, lock --out, evaluate, print the table."""
    from fundgym.agents.evaluate import evaluate

    scenarios = preflight(args)
    cache = None if args.cache_dir.lower() == "none" else Path(args.cache_dir)
    with output_lock(Path(args.out), command="fundgym evaluate"):
        result = evaluate(
            args.policies,
            scenarios,
            args.episodes,
            args.out,
            seed=args.seed,
            config=args.config,
            workers=args.workers,
            search_episodes=args.search_episodes,
            cache_dir=cache,
            overwrite=args.overwrite or args.force,
            force=args.force,
            progress=not args.no_progress,
            argv=["fundgym", *sys.argv[1:]] if sys.argv[1:] else None,
            report=not args.no_report,
            backend=args.backend,
            address=args.address,
        )
    print()
    print(f"per episode, mean over {len(scenarios)} scenarios x {args.episodes} episodes:")
    print(format_table(result.by_policy))
    for name, d in result.dominance.items():
        verdict = f"dominates ({d['rule']} rule)" if d["dominates"] else "does not dominate"
        gap = result.gap_closure.get(name)
        closes = "" if gap is None else f"; closes {gap:.0%} of the best_static -> hindsight gap"
        print(
            f"{name} {verdict} best_static: loss x{d['loss_ratio']:.2f}, "
            f"capital x{d['capital_ratio']:.2f}{closes}"
        )
    for group, entry in result.seeds.items():
        print(f"\n{group} across seeds {', '.join(str(s) for s in entry['seeds'])}:")
        print(format_seed_table(entry["rows"], entry["references"]))
    print(f"\nwrote {result.out_dir}/ ({', '.join(sorted(p.name for p in result.files.values()))})")
    print(f"took {result.wall_s:.0f} s")
    return 0


def preflight(args: argparse.Namespace) -> list[str]:
    """Check everything ``fundgym evaluate`` was given, before any work; the scenario names.

    The numbers, every policy spec (run directories against their manifests, schedule and
    table files read and checked against the environment they will run in), every scenario,
    the evaluation config, and the output and cache directories. Nothing is written.

    Raises:
        UsageError, SpecError, EvaluateError, ScheduleError, TableError: The first problem,
            naming the option or file, the value and what is allowed.
    """
    from fundgym.agents.policies import build_policy
    from fundgym.agents.policies.registry import parse_specs
    from fundgym.agents.rollout import base_env, job_env, parse_scenarios

    at_least("--episodes", args.episodes, 1)
    at_least("--search-episodes", args.search_episodes, 1)
    if args.workers is not None:
        at_least("--workers", args.workers, 1)
    check_seed("--seed", args.seed)
    check_backend(args.backend, args.address)
    specs = parse_specs(args.policies)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"policy {dup[0]!r} given twice; every policy needs its own name")
    scenarios = parse_scenarios(args.scenarios or ["crashes"])
    base = base_env(args.config, specs)
    for spec in specs:
        kw: dict[str, Any] = {}
        for scenario in scenarios:
            kw = job_env(base, spec, scenario)  # a trained policy's settings must match
        if spec.kind in ("trained", "schedule", "table"):
            build_policy(spec, tuple(kw["controlled"]))  # files read and checked, once
    out = Path(args.out)
    kind = OUTPUT_KINDS["evaluation"]
    check_output(out, kind, force=args.force)
    if out.is_dir() and any(out.iterdir()) and not (args.overwrite or args.force):
        raise UsageError(
            f"--out {out}: already holds an evaluation; pass --overwrite to replace it, or "
            "choose another --out"
        )
    if args.cache_dir.lower() != "none":
        check_output(Path(args.cache_dir), OUTPUT_KINDS["cache"], option="--cache-dir")
    return scenarios
