"""``fundgym calibrate``: the simulated world's crash outcomes against what real venues saw."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import textwrap
from pathlib import Path

from fundgym.agents.cli.guards import (
    OutputKind,
    UsageError,
    at_least,
    check_output,
    check_seed,
)
from fundgym.agents.evaluate.calibration import (
    CHECKS,
    KIND,
    Check,
    is_calibration_dir,
)
from fundgym.agents.outputs import output_lock, progress_bar
from fundgym.agents.policies import PRESETS
from fundgym.agents.rollout import CRASHES

#: Episodes per (policy, scenario) by default: the full table in under a minute on one core
#: at the evaluation environment's 1,024 accounts (docs/calibration.md), leaving room for the
#: lines still to come.
DEFAULT_SEEDS = 16

#: What ``--out`` holds, and how an earlier calibration is told from anything else.
OUTPUT = OutputKind(
    "calibration directory",
    True,
    is_calibration_dir,
    f"a calibration.json of kind {KIND}",
)

#: The help's list of checks with a target, one per line.
_LINES = "\n".join(
    f"  {c.name:40s} {c.policy} on {c.scenario}, target {c.target.text(c.percent)}"
    for c in CHECKS
    if c.target is not None
)


def _wrapped(text: str) -> str:
    """``text`` wrapped to the help's width, indented under its line."""
    return "\n".join(textwrap.wrap(text, width=90, initial_indent="    ", subsequent_indent="    "))


#: The help's presets and crashes of the info lines, and the presets that run a vault.
_INFO = _wrapped(f"presets {', '.join(PRESETS)}; crashes {', '.join(CRASHES)}")
_VAULT_INFO = _wrapped(
    f"presets {', '.join(n for n, p in PRESETS.items() if p.vault_to_oi_frac > 0.0)}; "
    "the same crashes"
)

DESCRIPTION = f"""\
Run named outcome checks on the shipped crash scenarios and print, for each, the measured
value against its target with a pass mark: check | scenario | policy | measured | target |
pass. Each line holds the simulator to a fact of what a crash did to a real venue
(shared/reference/outcomes.md); docs/calibration.md explains every line and shows a full run.

Checks with a target (PASS or FAIL):
{_LINES}

Info lines (measured and reported, no pass mark yet):
  fund_drawdown_<preset>_<crash>: the fund's drawdown from its start (1 - min fund / starting
  fund, mean over episodes) of each venue preset on each historical crash; n/a (no fund)
  for a preset whose fund starts at 0:
{_INFO}
  vault_pnl_<preset>_<crash>, vault_drawdown_<preset>_<crash>: the backstop vault's PnL at
  the episode's end as a share of its starting capital, and its largest fall from peak
  equity (means over episodes), for each preset that runs a vault:
{_VAULT_INFO}
  attacker_borrowed_over_margin_{{mango,haircut}}_oracle_manipulation: what the attacker
  withdrew against pumped unrealised PnL over his margin (Mango: $116M on $5M, 23x), with
  unrealised profit fully usable (Mango's rule) and not withdrawable (the default haircut).

Each (policy, scenario) runs --seeds episodes (episode i seeded S + i) through the same
environment and policies as `fundgym evaluate` (a venue preset starts at its levers, margin
tiers, fund and vault sizes); checks on the same policy and scenario share their episodes.
The liquidation_flow_drawdown_* lines also run each episode's twin on the scenario with
depth.impact_coef 0 (built in code) and measure what the liquidations added to the index's
drawdown.

--pass-rate-seeds N judges every check with a target in N runs of --seeds episodes, run r
from seed S + r x --seeds (disjoint episodes; run 0 is the default seed's), and adds two
columns: the seeds it passes with (e.g. 19/20) and the episodes it passes on alone (e.g.
250/320: how often one crash, as the real one was, lands in the target), with the default
seed's verdict (do all targets hold on it?) below.

--out DIR writes calibration.json (every line: value, target, pass mark, per-episode values,
source), calibration.md (the table) and config.yaml (the resolved settings), built under a
temporary name and renamed into place.

Exit codes: 0 the checks ran (whatever their pass marks), 1 with --strict when a check
failed, 2 bad arguments (the message names the option, value and what is allowed; nothing
is run or written).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym calibrate``."""
    p = sub.add_parser(
        "calibrate",
        help="check crash outcomes (liquidations past bankruptcy, fund drawdowns, the "
        "backstop vault's PnL) against what real venues saw",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--check",
        dest="checks",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this check (repeatable; a shell pattern such as 'fund_drawdown_*' "
        "selects several; default: every check)",
    )
    p.add_argument(
        "--scenarios",
        action="append",
        default=None,
        metavar="NAMES",
        help="run only the checks on these scenarios (comma-separated, repeatable; default: "
        "every scenario a check runs on)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        metavar="N",
        help=f"episodes per policy and scenario, averaged or pooled as each check says "
        f"(default {DEFAULT_SEEDS})",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="first episode seed (default 0)"
    )
    p.add_argument(
        "--pass-rate-seeds",
        type=int,
        default=None,
        metavar="N",
        help="also judge every check in N runs of --seeds episodes from seeds S, S + "
        "--seeds, ... and on each of their episodes alone, and report both pass rates "
        "(issue 16 asks for 20; costs N times the episodes; default: not computed)",
    )
    p.add_argument(
        "--accounts",
        type=int,
        default=None,
        metavar="N",
        help="account slots per exchange (default: the evaluation environment's, 1,024)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write calibration.json, calibration.md and config.yaml here (default: print only)",
    )
    p.add_argument(
        "--force", action="store_true", help=OUTPUT.force_help() + "; --force replaces it"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 1 when a check with a target fails (default: exit 0 once the "
        "checks ran; info lines never fail)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=main)


def preflight(args: argparse.Namespace) -> list[Check]:
    """Check every argument before any work; the checks to run.

    Every (policy, scenario) environment is built as a config (numbers, scenario, accounts
    validated) and ``--out`` is checked; nothing runs and nothing is written.

    Raises:
        UsageError, CalibrationError, SchemaError: The first problem, naming the option, the
            value and what is allowed.
    """
    from fundgym.agents.evaluate.calibration import calibration_env, groups, select_checks
    from fundgym.agents.policies import parse_spec
    from fundgym.agents.rollout import job_env
    from fundgym.envs.config import EnvConfig, make_config

    at_least("--seeds", args.seeds, 1)
    check_seed("--seed", args.seed)
    if args.pass_rate_seeds is not None:
        at_least("--pass-rate-seeds", args.pass_rate_seeds, 1)
        check_seed("--seed", args.seed + args.pass_rate_seeds * args.seeds - 1)
    if args.accounts is not None:
        at_least("--accounts", args.accounts, 1)
        field = next(f for f in dataclasses.fields(EnvConfig) if f.name == "n_accounts")
        if args.accounts > field.metadata["le"]:
            raise UsageError(
                f"--accounts must be <= {field.metadata['le']:,} (env.n_accounts), got "
                f"{args.accounts:,}"
            )
    checks = select_checks(args.checks, args.scenarios)
    base = calibration_env(checks, args.accounts)
    for policy, scenario, overrides in groups(checks):
        make_config(**{**job_env(base, parse_spec(policy), scenario), **dict(overrides)})
    if args.out is not None:
        check_output(Path(args.out), OUTPUT, force=args.force)
    return checks


def main(args: argparse.Namespace) -> int:
    """Validate, lock --out, run the checks, print the table, write the files."""
    from fundgym.agents.evaluate.calibration import (
        default_seed_line,
        episode_count,
        format_table,
        pass_rate_line,
        run_checks,
        summary_line,
        write_calibration,
    )

    checks = preflight(args)
    command = shlex.join(["fundgym", *sys.argv[1:]]) if sys.argv[1:] else "fundgym calibrate"
    rate_seeds = args.pass_rate_seeds
    total = episode_count(checks, args.seeds, rate_seeds)
    bar = progress_bar(total, "policy x scenario x episode", not args.no_progress)
    out = None if args.out is None else Path(args.out)
    if out is None:
        run = run_checks(checks, args.seeds, args.seed, args.accounts, bar.update, rate_seeds)
        bar.close()
    else:
        with output_lock(out, command="fundgym calibrate"):
            run = run_checks(checks, args.seeds, args.seed, args.accounts, bar.update, rate_seeds)
            bar.close()
            write_calibration(out, run, command)
    print(format_table(run))
    print()
    print(
        f"{summary_line(run)}; {args.seeds} episodes per policy and scenario, "
        f"{run.env['n_accounts']:,} accounts, {run.wall_s:.0f} s"
    )
    if rate_seeds is not None:
        print(default_seed_line(run))
        print(pass_rate_line(run))
    if out is not None:
        print(f"wrote {out}/ (calibration.json, calibration.md, config.yaml)")
    if args.strict and run.failed:
        names = ", ".join(r.check.name for r in run.failed)
        print(f"fundgym calibrate: --strict: failed: {names}", file=sys.stderr)
        return 1
    return 0
