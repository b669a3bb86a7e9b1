"""``fundgym export``: a trained policy as files a risk engine without Python or torch can use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fundgym.agents.cli.guards import OUTPUT_KINDS, UsageError, at_least, check_output, check_seed
from fundgym.agents.export.schedule import NAMINGS, venue_units
from fundgym.agents.outputs import output_lock

DESCRIPTION = """\
Export what a trained policy does, in a form a production risk engine can apply:

  csv, json  the parameter schedule the policy sets along --scenario (one episode, --seed):
             time, every parameter in force in natural units (fee and margin rates, fund
             shares, allocation weights), the targets it asked for, and the state it reacted
             to; self-describing (schema version, units, run and config). Replay it with
             `fundgym evaluate --policy schedule:FILE` (exact on the same scenario and seed).
             A multi-market run (a `markets:` config) writes its levers per market
             (market_mmr_mult[BTC], mmr[BTC], ...) along a multi-market --scenario, and
             --naming adds the venue's fields per market (maxLeverage[ALT], ...).
  table      a lookup table distilled from the policy: market state (realised volatility,
             book depth, fund coverage; quantile bins) -> parameters, a JSON file plus a CSV
             view next to it, with its fidelity to the policy measured open- and closed-loop.
             Replay it with `fundgym evaluate --policy table:FILE`.
  onnx       the policy network with its observation normalisation, clipping and action
             scaling inside the graph: raw observations (32 floats; a multi-market run's
             own layout, named in the graph's metadata) in, action and parameters in
             natural units out; checked against the SB3 model with onnxruntime (maximum
             absolute difference printed, must be < 1e-4). A multi-market run cannot be
             distilled to a table.

The run directory, the scenario and --out are checked before any work; an existing --out is
replaced only when it is a fundgym export of the same format (see --force).

Exit codes: 0 done, 2 bad arguments or unreadable run (the message names file and value).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym export``."""
    p = sub.add_parser(
        "export",
        help="export a trained policy: schedule (csv/json), state table, or ONNX graph",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", required=True, metavar="RUN_DIR", help="a fundgym train run")
    p.add_argument(
        "--format",
        required=True,
        choices=("csv", "json", "table", "onnx"),
        help="what to write (see above)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output file")
    p.add_argument(
        "--scenario",
        metavar="NAME",
        help="scenario the schedule follows (required for csv/json), library name or YAML",
    )
    p.add_argument("--seed", type=int, default=0, help="episode seed of the schedule (default 0)")
    p.add_argument(
        "--naming",
        choices=NAMINGS,
        default="fundgym",
        help="csv/json: also write the columns a venue's own configuration names, converted "
        "from fundgym's in-force parameters (default fundgym: none); "
        + "; ".join(f"{v}: {', '.join(venue_units(v))}" for v in NAMINGS[1:]),
    )
    p.add_argument(
        "--model",
        choices=("best", "final"),
        default="best",
        help="onnx: best/ (held-out evaluation's best model) or final/ (default best)",
    )
    p.add_argument(
        "--episodes", type=int, default=4, help="table: episodes per fitting scenario (default 4)"
    )
    p.add_argument("--bins", type=int, default=4, help="table: quantile bins per feature (4)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out that fundgym does not recognise as an export of the "
        "same format (a schedule: a CSV starting '# fundgym-schedule:' or JSON of kind "
        "fundgym.schedule; a table: JSON of kind fundgym.state_table, its CSV view by the "
        "n,filled_from columns; ONNX: a graph with fundgym's metadata); without it such a "
        "file is refused, untouched",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Check the arguments, the run and --out, lock --out, export, print what was written."""
    scenario = preflight(args)
    with output_lock(Path(args.out), command="fundgym export"):
        return _export(args, Path(args.policy), scenario)


def preflight(args: argparse.Namespace) -> str:
    """Check everything ``fundgym export`` was given, before any work; the scenario (or "").

    The numbers, the scenario, --out (with the table's CSV view beside it) and the run
    directory (its config, manifest and every file's hash: the model is loaded once here).

    Raises:
        UsageError, SpecError, EvaluateError: The first problem, naming the option or file,
            the value and what is allowed.
    """
    from fundgym.agents.policies import SpecError, TrainedPolicy, parse_spec
    from fundgym.agents.policies.markets_run import load_markets_run
    from fundgym.agents.policies.runs import model_dir
    from fundgym.agents.rollout import parse_scenarios

    check_seed("--seed", args.seed)
    schedule = args.format in ("csv", "json")
    if schedule and not args.scenario:
        raise UsageError("--format csv/json needs --scenario (a library name or a YAML path)")
    if args.format == "table":
        at_least("--episodes", args.episodes, 1)
        at_least("--bins", args.bins, 1)
    spec = parse_spec(args.policy)
    if spec.kind != "trained" or spec.path is None:
        raise SpecError(f"--policy {args.policy!r}: export needs a `fundgym train` run directory")
    markets = is_markets_run(Path(spec.path))
    if markets and args.format == "table":
        raise UsageError(
            f"--format table: {spec.path} is a multi-market run; the state table distils one "
            "market's state. Export its schedule (csv, json) or its network (onnx)"
        )
    scenario = ""
    if schedule and markets:
        scenario = _markets_scenario(args.scenario, Path(spec.path))
    elif schedule:
        names = parse_scenarios([args.scenario], "--scenario")
        if len(names) != 1:
            raise UsageError(
                f"--scenario {args.scenario!r}: names {len(names)} scenarios; a schedule "
                "follows one"
            )
        scenario = names[0]
    out = Path(args.out)
    if args.format == "table":
        if out.suffix == ".csv":
            raise UsageError(f"--out {out}: the table is JSON; its CSV view goes beside it")
        check_output(out, OUTPUT_KINDS["table"], force=args.force)
        check_output(out.with_suffix(".csv"), OUTPUT_KINDS["table_view"], force=args.force)
    else:
        kind = OUTPUT_KINDS["schedule" if schedule else "onnx"]
        check_output(out, kind, force=args.force)
    run_dir = Path(spec.path)
    if args.format == "onnx" and args.model == "final":
        model_dir(run_dir, "final")
    if not markets:  # config, manifest and hashes checked; nothing unpickled
        TrainedPolicy(spec.name, run_dir)
    elif not schedule:  # the schedule's scenario check loaded it already
        load_markets_run(run_dir)
    return scenario


def is_markets_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` was trained from a ``markets:`` config (on the multi-market env).

    Raises:
        SpecError: Not a run directory, or its config is not a valid training config.
    """
    from fundgym.agents.config import ConfigError, load_config
    from fundgym.agents.policies import SpecError, run_config_file

    config_path = run_config_file(run_dir)
    try:
        return load_config(config_path).markets is not None
    except ConfigError as exc:
        raise SpecError(f"{config_path}: not a valid training config:\n{exc}") from exc


def _markets_scenario(name: str, run_dir: Path) -> str:
    """``--scenario`` for a multi-market run: one scenario that fits the run's network.

    Raises:
        UsageError: Not one loadable scenario.
        SpecError: The run cannot be loaded, or the scenario gives its network other sizes
            (other markets or collateral assets).
    """
    from fundgym.agents.policies.markets_run import load_markets_run, markets_env
    from fundgym.envs.scenarios import load_scenario
    from fundgym.envs.schema import SchemaError

    if "," in name or name in ("crashes", "training"):
        raise UsageError(
            f"--scenario {name!r}: a multi-market schedule follows one named scenario (a "
            "library name or a YAML path), not a list or the training sampler"
        )
    try:
        scenario = load_scenario(name)
    except (FileNotFoundError, SchemaError, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--scenario: {exc}") from exc
    markets_env(load_markets_run(run_dir), scenario).close()
    return name


def _export(args: argparse.Namespace, run_dir: Path, scenario: str) -> int:
    """Write the export ``args.format`` asks for (``scenario``: csv/json only)."""
    out = Path(args.out)
    if args.format in ("csv", "json"):
        from fundgym.agents.export import export_markets_schedule, export_schedule

        export = export_markets_schedule if is_markets_run(run_dir) else export_schedule
        res = export(
            run_dir,
            out,
            scenario=scenario,
            seed=args.seed,
            fmt=args.format,
            naming=args.naming,
            argv=["fundgym", *sys.argv[1:]] if sys.argv[1:] else None,
        )
        print(
            f"wrote {out}: {res.n_steps} decisions of {scenario} (seed {args.seed}), "
            f"{len(res.columns)} columns"
        )
    elif args.format == "onnx":
        from fundgym.agents.export import export_onnx

        onnx_res = export_onnx(run_dir, out, model=args.model, seed=args.seed)
        print(
            f"wrote {out}: input {onnx_res.input_name!r} (batch, {onnx_res.n_obs}) float32 -> "
            f"{', '.join(onnx_res.output_names)}; max |onnx - SB3| = "
            f"{onnx_res.max_abs_diff:.2e} over {onnx_res.n_checked} observations"
        )
    else:
        from fundgym.agents.export import distill_table

        t = distill_table(
            run_dir,
            out,
            episodes=args.episodes,
            bins=args.bins,
            seed=args.seed,
            progress=not args.no_progress,
        )
        closed = t.fidelity.get("closed_loop", {})
        print(f"wrote {out} ({t.n_filled} of {t.n_cells} cells filled) and its CSV view")
        for name, f in closed.get("params", closed).items():
            if isinstance(f, dict) and "mean_abs" in f:
                print(
                    f"  closed-loop |table - policy| {name:28s} mean {f['mean_abs']:.3g} "
                    f"p95 {f['p95_abs']:.3g} max {f['max_abs']:.3g}"
                )
    return 0
