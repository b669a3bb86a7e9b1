"""``fundgym frontier``: the solvency-vs-capital frontier of static parameter sets."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fundgym.agents.cli.guards import (
    OutputKind,
    UsageError,
    add_backend_options,
    at_least,
    check_output,
    check_seed,
)
from fundgym.agents.cli.levers import lever_table
from fundgym.agents.evaluate.backends import check_backend
from fundgym.agents.evaluate.frontier import (
    BACKSTOPS,
    DEFAULT_RULE,
    FRONTIER_FILES,
    FRONTIER_KIND,
    FUND_RANGE,
    RULES,
    VAULT_RANGE,
    SelectionRule,
    parse_rule,
)
from fundgym.agents.evaluate.search import GRID, SEARCH_EPISODES, SEARCH_SEED
from fundgym.agents.outputs import jsonable, output_lock, write_text_atomic
from fundgym.agents.policies import PRESETS, STATIC_PARAMS, PolicySpec
from fundgym.agents.policies.presets import MARGIN_TIERS
from fundgym.envs.core.params import ADL_POLICIES, LIQUIDATION_MODES

#: The study's database inside ``--out`` unless ``--storage`` names another.
DEFAULT_DB = "frontier.db"


def is_frontier_dir(path: Path) -> bool:
    """Whether ``path`` holds a fundgym frontier (which a longer search may add to).

    Either its ``frontier.json`` is of kind ``fundgym.frontier``, or it holds nothing but
    the files ``fundgym frontier`` writes (a first search stopped before writing them leaves
    only ``frontier.db``).
    """
    report = path / "frontier.json"
    if report.is_file():
        try:
            return bool(json.loads(report.read_text()).get("kind") == FRONTIER_KIND)
        except (OSError, ValueError, AttributeError):
            return False
    ours = {*FRONTIER_FILES, DEFAULT_DB, f"{DEFAULT_DB}-journal"}
    return all(p.name in ours or p.name.startswith(".") for p in path.iterdir())


#: What ``--out`` holds, and how an earlier frontier is told from anything else.
OUTPUT = OutputKind(
    "frontier directory",
    True,
    is_frontier_dir,
    f"a frontier.json of kind {FRONTIER_KIND}, or nothing but {DEFAULT_DB} and the files "
    "fundgym frontier writes",
)

_RULES = "\n".join(f"  {k}=VALUE  {v}" for k, v in RULES.items())

DESCRIPTION = f"""\
Search static parameter sets for the trade-off between solvency loss (socialised +
unrecovered loss + deleveraged notional) and capital locked (the fund + the maintenance
margin + the backstop vault's starting capital), both per episode, both minimised, every set
on the same scenarios and seeds. A set is the levers and the engine it runs under, as a venue
preset is.

The search is Optuna's NSGA-II (two objectives: its crowding distance spreads the sets along
the front; NSGA-III is built for three or more). Its first generation is the old 24-point grid
of best_static (under the environment's engine) and the venue presets (each under its own):
{", ".join(PRESETS)}, enqueued, so the comparison with both is exact; their number (28) is
the population. The study is stored (Optuna's SQLite storage, --out/{DEFAULT_DB} by default),
so a longer search resumes: --trials 200 after --trials 50 runs 150 more. A stored study
searched with other settings (scenarios, episodes, seed, environment, search space) is
refused, never mixed.

Levers searched (each over its action range, log-scaled where its action is; fundgym
levers lists every lever):
{lever_table(STATIC_PARAMS)}

Engine searched (environment settings a venue preset sets):
  liquidation_mode  {", ".join(LIQUIDATION_MODES)}
  adl_policy        {", ".join(ADL_POLICIES)}
  margin_tiers      {", ".join(MARGIN_TIERS)}
  backstop          {", ".join(BACKSTOPS)}: which of the fund and the vault
                    start with capital (the other at 0; no vault under liquidation_mode
                    partial)
  fund_to_oi_frac   fund at the start / OI, [{FUND_RANGE[0]:g}, {FUND_RANGE[1]:g}] (log)
  vault_to_oi_frac  vault at the start / OI, [{VAULT_RANGE[0]:g}, {VAULT_RANGE[1]:g}] (log)

The policies (--policies) are placed on the same axes, scored on the same scenarios and
seeds, each marked dominated or not by a searched static set: presets (the venue presets
{", ".join(PRESETS)}), rule, any static:... set, or a fundgym train run directory.

best_static is the front's point that --rule picks (default {DEFAULT_RULE.text()}):
{_RULES}
The defaults (training-sampler draws, {SEARCH_EPISODES} episodes, seed {SEARCH_SEED}) are those
fundgym evaluate searches best_static with.

Writes into --out: frontier.json (settings, rule, every trial, the front, the policies, the
grid and the presets point by point), frontier.csv (one row per trial: every lever, the
engine, both objectives, the Pareto flag, the trial that dominates it), frontier.md,
frontier.png, config.yaml (the resolved arguments) and command.txt. Each file is written
whole or not at all.

Everything is checked before any work. Exit codes: 0 done, 2 bad arguments (the message
names the option, value and what is allowed).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym frontier``."""
    p = sub.add_parser(
        "frontier",
        help="the solvency-vs-capital frontier of static parameter sets (NSGA-II, resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--trials",
        type=int,
        required=True,
        metavar="N",
        help="trials the study must hold, the grid's 24 and the 4 presets included (a stored "
        "study with fewer runs the missing ones)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help=f"Optuna storage of the study, sqlite:///PATH.db (default: sqlite:///DIR/{DEFAULT_DB})",
    )
    p.add_argument(
        "--study-name",
        default="frontier",
        metavar="NAME",
        help="the study's name in --storage (default frontier)",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=SEARCH_EPISODES,
        metavar="E",
        help=f"episodes per scenario for every set (default {SEARCH_EPISODES})",
    )
    p.add_argument(
        "--scenarios",
        action="append",
        default=None,
        metavar="SET",
        help="comma-separated scenarios (repeatable): library names, YAML paths, `crashes`, "
        "`training` (default: training, the sampler's draws)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=SEARCH_SEED,
        metavar="S",
        help=f"first episode seed, also the sampler's (default {SEARCH_SEED})",
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
        "--policies",
        action="append",
        default=None,
        metavar="LIST",
        help="comma-separated policies to place on the plot (repeatable): presets, rule, "
        "static:..., RUN_DIR (default: presets,rule)",
    )
    p.add_argument(
        "--rule",
        default=DEFAULT_RULE.text(),
        metavar="NAME=VALUE",
        help=f"how best_static is picked from the front (default {DEFAULT_RULE.text()}; see above)",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="training or environment config for the environment (default: the first trained "
        "run's config, else the packaged ppo.yaml)",
    )
    p.add_argument("--force", action="store_true", help=OUTPUT.force_help() + "; --force writes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.set_defaults(func=main)


def _policy_specs(items: list[str] | None) -> list[PolicySpec]:
    """The specs of ``--policies`` (``presets`` expands to every venue preset)."""
    from fundgym.agents.policies import parse_spec

    specs: list[PolicySpec] = []
    for item in items or ["presets,rule"]:
        for name in (s.strip() for s in item.split(",")):
            if not name:
                continue
            names = [f"static:{k}" for k in PRESETS] if name == "presets" else [name]
            for n in names:
                spec = parse_spec(n)
                if spec.kind == "search":
                    raise UsageError(
                        f"--policies {n!r}: a searched set is the frontier itself (best_static "
                        "is its starred point); allowed: presets, rule, static:..., RUN_DIR"
                    )
                if spec.name not in {s.name for s in specs}:
                    specs.append(spec)
    return specs


def _storage(args: argparse.Namespace) -> str:
    """The study's storage URL: ``--storage``, checked, or ``sqlite:///--out/frontier.db``."""
    if args.storage is None:
        return f"sqlite:///{(Path(args.out) / DEFAULT_DB).resolve()}"
    url = str(args.storage)
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise UsageError(f"--storage {url!r}: expected sqlite:///PATH.db (a SQLite file)")
    path = Path(url[len("sqlite:///") :])
    if path.is_dir():
        raise UsageError(f"--storage {url!r}: {path} is a directory; name a .db file")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--storage {url!r}: {parent} is a file")
    return url


def preflight(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything ``fundgym frontier`` was given, before any work; the resolved inputs.

    Raises:
        UsageError, SpecError, EvaluateError, FrontierError: The first problem, naming the
            option or file, the value and what is allowed.
    """
    from fundgym.agents.evaluate.frontier import first_generation
    from fundgym.agents.evaluate.search import grid_points
    from fundgym.agents.policies import build_policy
    from fundgym.agents.rollout import base_env, job_env, parse_scenarios

    at_least("--trials", args.trials, 1)
    at_least("--episodes", args.episodes, 1)
    if args.workers is not None:
        at_least("--workers", args.workers, 1)
    check_seed("--seed", args.seed)
    if not args.study_name.strip():
        raise UsageError("--study-name: must not be empty")
    check_backend(args.backend, args.address)
    rule = parse_rule(args.rule)
    scenarios = parse_scenarios(args.scenarios or ["training"])
    specs = _policy_specs(args.policies)
    base = base_env(args.config, specs)
    for spec in specs:
        kw: dict[str, Any] = {}
        for scenario in scenarios:
            kw = job_env(base, spec, scenario)  # a trained policy's settings must match
        if spec.kind in ("trained", "schedule", "table"):
            build_policy(spec, tuple(kw["controlled"]))
    first_generation(base, grid_points(GRID), tuple(PRESETS))  # the env's engine in the space
    check_output(Path(args.out), OUTPUT, force=args.force)
    storage = _storage(args)
    return {"rule": rule, "scenarios": scenarios, "specs": specs, "base": base, "storage": storage}


def main(args: argparse.Namespace) -> int:
    """Validate, lock --out, search (or resume), place the policies, write the files."""
    import os

    from fundgym.agents.evaluate.frontier import (
        frontier_csv,
        frontier_figure,
        frontier_json,
        frontier_md,
        place_policies,
        search_frontier,
    )
    from fundgym.agents.evaluate.plots import save_atomic
    from fundgym.agents.evaluate.search import grid_points

    checked = preflight(args)
    rule: SelectionRule = checked["rule"]
    command = shlex.join(["fundgym", *sys.argv[1:]]) if sys.argv[1:] else "fundgym frontier"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    workers = args.workers or os.cpu_count() or 1
    out = Path(args.out)
    progress = not args.no_progress
    with output_lock(out, command="fundgym frontier"):
        out.mkdir(parents=True, exist_ok=True)
        result = search_frontier(
            checked["base"],
            checked["scenarios"],
            args.episodes,
            args.seed,
            args.trials,
            grid=grid_points(GRID),
            workers=workers,
            storage=checked["storage"],
            study_name=args.study_name,
            rule=rule,
            backend=args.backend,
            address=args.address,
            progress=progress,
        )
        placed = place_policies(
            result,
            checked["specs"],
            checked["base"],
            workers=workers,
            backend=args.backend,
            address=args.address,
            progress=progress,
        )
        config = {
            "fundgym": result.settings["fundgym"],
            "trials": args.trials,
            "storage": checked["storage"],
            "study_name": args.study_name,
            "scenarios": checked["scenarios"],
            "episodes": args.episodes,
            "seed": args.seed,
            "workers": workers,
            "backend": args.backend,
            "address": args.address,
            "rule": rule.text(),
            "policies": [s.name for s in checked["specs"]],
            "config": args.config,
            "env": checked["base"],
        }
        write_text_atomic(out / "config.yaml", yaml.safe_dump(jsonable(config), sort_keys=False))
        write_text_atomic(out / "command.txt", f"{command}\n# created {created}\n")
        content = frontier_json(result, placed, command, created)
        write_text_atomic(out / "frontier.json", json.dumps(content, indent=2))
        write_text_atomic(out / "frontier.csv", frontier_csv(result))
        write_text_atomic(out / "frontier.md", frontier_md(result, placed, command))
        save_atomic(frontier_figure(result, placed), out / "frontier.png")
    front = result.front
    chosen = result.trial(result.chosen)
    print(
        f"{len(result.trials)} trials ({result.new_trials} run now, {result.wall_s:.0f} s); "
        f"{len(front)} on the Pareto front"
    )
    print(
        f"best_static ({rule.text()}): trial {chosen.number} ({chosen.source}), solvency loss "
        f"${chosen.solvency_loss_usd:,.0f}, capital ${chosen.capital_locked_usd:,.0f}; "
        f"{chosen.engine.describe()}"
    )
    for p in placed:
        verdict = (
            "not dominated" if p.dominated_by is None else f"dominated by trial {p.dominated_by}"
        )
        print(
            f"  {p.name:24s} loss ${p.solvency_loss_usd:>14,.0f}  capital "
            f"${p.capital_locked_usd:>14,.0f}  {verdict}"
        )
    print(f"wrote {out}/ ({', '.join(FRONTIER_FILES)})")
    return 0
