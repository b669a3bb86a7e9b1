"""``fundgym scenarios``: list the library, sample a path to CSV, plot a scenario."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.cli.guards import (
    OUTPUT_KINDS,
    UsageError,
    check_output,
    check_seed,
    load_scenario_checked,
)
from fundgym.agents.outputs import temp_sibling
from fundgym.envs.market.factor import draw_markets
from fundgym.envs.market.market import sample_market
from fundgym.envs.resources import SCENARIO_DIR
from fundgym.envs.scenarios import Scenario, library, simulated_today
from fundgym.envs.schema import describe

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

CSV_COLUMNS = (
    "step",
    "time_min",
    "mark_price",
    "index_price",
    "oracle_price",
    "depth_usd",
    "funding_rate",
    "last_price",
    "depth_mult",
    "precursor",
)


def cmd_list(args: argparse.Namespace) -> int:
    """Print every library scenario with its one-line description."""
    rows = []
    multi = False
    for name in library():
        sc = load_scenario_checked(name, "library scenario")
        tag = "train" if sc.training else "eval"
        desc = sc.description
        if not simulated_today(sc):  # run by `fundgym markets`, not by the env
            held = f"; collateral: {', '.join(sc.collateral_names)}" if sc.collateral else ""
            desc = f"[{sc.n_markets} markets: {', '.join(sc.market_names)}{held}] {desc}"
            multi = True
        rows.append((name, tag, f"{sc.horizon_minutes / 60:g} h", desc))
    if not rows:
        raise UsageError(f"the scenario library {SCENARIO_DIR} holds no scenario files")
    width = max(len(r[0]) for r in rows)
    for name, tag, hours, desc in rows:
        print(f"{name:<{width}}  {tag:<5}  {hours:>6}  {desc}")
    print("\ntrain: part of the training distribution; eval: held out for evaluation")
    if multi:
        print(
            "[N markets; collateral]: simulated by `fundgym markets` "
            "(fundgym.envs.markets_simulator); the environment, training and evaluation run "
            "one market"
        )
    return 0


def _checked(args: argparse.Namespace, kind: str) -> tuple[Scenario, Path]:
    """The scenario and --out of ``sample``/``plot``, checked before anything runs."""
    check_seed("--seed", args.seed)
    sc = load_scenario_checked(args.scenario, "scenario")
    out = Path(args.out)
    check_output(out, OUTPUT_KINDS[kind], force=args.force)
    return sc, out


def _drawn(sc: Scenario, seed: int | None) -> tuple[FloatArray, dict[str, FloatArray]]:
    """A multi-market scenario's drawn paths, one exchange: minutes and named columns.

    Columns ``<market>_index``, ``<market>_depth_mult``, ``<market>_basis`` for each market,
    then ``<asset>_redemption``, ``<asset>_index``, ``<asset>_book`` for each collateral asset.
    These are the exogenous paths (:func:`fundgym.envs.market.factor.draw_markets`): the
    simulator does not run several markets yet, so there is no mark, oracle or funding.
    """
    paths = draw_markets(sc, np.random.default_rng(sc.seed if seed is None else seed), 1)
    cols: dict[str, FloatArray] = {}
    for m, name in enumerate(paths.names):
        for field in ("index", "depth_mult", "basis"):
            cols[f"{name}_{field}"] = getattr(paths, field)[:, 0, m]
    coll = paths.collateral
    for a, name in enumerate(coll.names):
        for field in ("redemption", "index", "book"):
            cols[f"{name}_{field}"] = getattr(coll, field)[:, 0, a]
    time_min = np.arange(sc.n_ticks, dtype=np.float64) * sc.tick_minutes
    return time_min, cols


def cmd_sample(args: argparse.Namespace) -> int:
    """Write one sampled path of the scenario to CSV (atomically)."""
    sc, out = _checked(args, "scenario_csv")
    cols: dict[str, Any]
    if not simulated_today(sc):
        time_min, drawn = _drawn(sc, args.seed)
        cols = {"step": np.arange(time_min.size), "time_min": time_min, **drawn}
        columns: tuple[str, ...] = ("step", "time_min", *drawn)
    else:
        cols = sample_market(sc, args.seed)
        columns = CSV_COLUMNS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        with tmp.open("x", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            n = cols["step"].size
            for i in range(n):
                writer.writerow(
                    [int(cols["step"][i]), f"{cols['time_min'][i]:g}"]
                    + [f"{cols[c][i]:.10g}" for c in columns[2:]]
                )
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    seed = sc.seed if args.seed is None else args.seed
    print(f"wrote {out}: {cols['step'].size} ticks of {sc.name} (seed {seed})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot price, oracle, depth and funding of one sampled path."""
    sc, out = _checked(args, "plot")
    from fundgym.agents.evaluate.plots import plot_markets, plot_scenario  # matplotlib here only

    seed = sc.seed if args.seed is None else args.seed
    if not simulated_today(sc):
        time_min, drawn = _drawn(sc, args.seed)
        markets = {n: {f: drawn[f"{n}_{f}"] for f in ("index", "depth_mult")} for n in
                   sc.market_names}  # fmt: skip
        collateral = {
            n: {f: drawn[f"{n}_{f}"] for f in ("redemption", "index", "book")}
            for n in sc.collateral_names
        }
        title = f"{sc.name} (seed {seed}, drawn paths): {sc.description}"
        plot_markets(time_min, markets, collateral, title, out, start_utc=sc.start_utc)
        print(f"wrote {out}")
        return 0
    cols = sample_market(sc, args.seed)
    plot_scenario(cols, f"{sc.name} (seed {seed}): {sc.description}", out, start_utc=sc.start_utc)
    print(f"wrote {out}")
    return 0


def schema_markdown() -> str:
    """The scenario schema as a Markdown table (field path, type, default, meaning)."""
    lines = ["| field | type | default | meaning and allowed values |", "|---|---|---|---|"]
    for path, tp, default, doc in describe(Scenario):
        lines.append(f"| `{path}` | {tp} | {default} | {doc} |")
    return "\n".join(lines)


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the scenario schema."""
    print(schema_markdown())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``scenarios list|sample|plot``."""
    p = sub.add_parser(
        "scenarios",
        help="list, sample and plot market scenarios",
        description=(
            "The scenario library (configs/scenarios/*.yaml). A scenario is given by library "
            "name or by path to a YAML file."
        ),
    )
    ssub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p_list = ssub.add_parser("list", help="names with a one-line description")
    p_list.set_defaults(func=cmd_list)
    p_schema = ssub.add_parser("schema", help="print the scenario file schema (Markdown)")
    p_schema.set_defaults(func=cmd_schema)
    for name, func, helptext, kind in (
        ("sample", cmd_sample, "write one sampled path to CSV", "scenario_csv"),
        ("plot", cmd_plot, "plot price, oracle, depth and funding to PNG", "plot"),
    ):
        q = ssub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("scenario", metavar="NAME_OR_PATH", help="library name or YAML path")
        q.add_argument(
            "--seed", type=int, default=None, help="random seed (default: the scenario's own)"
        )
        q.add_argument(
            "--out",
            required=True,
            metavar="FILE",
            help="output file (.csv for sample, .png for plot)",
        )
        q.add_argument("--force", action="store_true", help=OUTPUT_KINDS[kind].force_help())
        q.set_defaults(func=func)
