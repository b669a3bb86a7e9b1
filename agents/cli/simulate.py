"""``fundgym simulate``: a calibrated crash through the full exchange simulation, summarised.

Runs the market, the trader population and the exchange core on a library scenario
(``oct_10_2025`` by default) with default risk parameters (dYdX-like: 1.5% liquidation fee,
all of it to the fund), and beside them a lean fee schedule (0.3%, a fifth to the fund, the
rest to liquidators) under each fallback, all on the same seed; prints the fund's flows side by
side and writes the crash plot and the resolved configuration to the output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents.cli.guards import (
    OUTPUT_KINDS,
    UsageError,
    at_least,
    check_output,
    check_seed,
    inside,
    load_scenario_checked,
    safe_name,
)
from fundgym.agents.outputs import output_lock, write_text_atomic
from fundgym.envs.core.params import RiskParams
from fundgym.envs.scenarios import Scenario
from fundgym.envs.simulator import ExchangeSimulator, SimulationResult

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: The runs the demo compares: column name -> risk parameters.
RUNS: dict[str, RiskParams] = {
    "defaults, ADL": RiskParams(),
    "lean fee, ADL": RiskParams(liquidation_fee_rate=0.003, liquidation_fee_fund_share=0.2),
    "lean fee, socialise": RiskParams(
        liquidation_fee_rate=0.003, liquidation_fee_fund_share=0.2, fallback="socialize"
    ),
}


ROWS: tuple[tuple[str, str], ...] = (
    ("liquidation orders", "n_liquidations"),
    ("liquidation volume", "liquidation_volume_usd"),
    ("liquidation fees charged", "liquidation_fees_usd"),
    ("  to the insurance fund", "fund_fee_income_usd"),
    ("  to liquidators", "liquidator_rewards_usd"),
    ("trading fees to the fund", "fund_trading_fee_income_usd"),
    ("bad debt (fills past bankruptcy)", "bad_debt_usd"),
    ("  shortfall paid by the fund", "shortfall_usd"),
    ("  deleveraged notional (ADL)", "adl_volume_usd"),
    ("  ADL haircut to counterparties", "adl_haircut_usd"),
    ("  socialised loss", "socialized_loss_usd"),
    ("  unrecovered (exchange)", "unrecovered_usd"),
    ("fund at start", "fund_start_usd"),
    ("fund minimum", "fund_min_usd"),
    ("fund at end", "fund_end_usd"),
)


def format_summary(results: dict[str, dict[str, FloatArray]]) -> str:
    """A fixed-width table: one row per flow, one column per run."""
    names = list(results)
    lines = [f"{'':36s}" + "".join(f"{n:>22s}" for n in names)]
    for label, key in ROWS:
        cells = []
        for n in names:
            v = float(results[n][key][0])
            money = "$" + f"{v:,.0f}"
            cells.append(f"{v:>22,.0f}" if key == "n_liquidations" else f"{money:>22s}")
        lines.append(f"{label:36s}" + "".join(cells))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fundgym simulate``."""
    parser.add_argument(
        "--scenario",
        default="oct_10_2025",
        metavar="NAME_OR_PATH",
        help="scenario by library name or YAML path (default oct_10_2025)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the scenario's own)"
    )
    parser.add_argument(
        "--accounts", type=int, default=5_000, help="trader account slots (default 5,000)"
    )
    parser.add_argument(
        "--fund-frac",
        type=float,
        default=0.005,
        help="initial insurance fund as a share of open interest, in [0, 10] (default 0.005: "
        "small enough that a hard crash exhausts it and the fallbacks act)",
    )
    parser.add_argument(
        "--out",
        default="runs/simulate",
        metavar="DIR",
        help="where the plot (named after the scenario, made a safe file name) and the "
        "resolved config go (default runs/simulate)",
    )
    parser.add_argument(
        "--force", action="store_true", help=OUTPUT_KINDS["simulation"].force_help()
    )


def main(args: argparse.Namespace) -> int:
    """Check the arguments, the scenario and --out, lock --out, then simulate."""
    at_least("--accounts", args.accounts, 1)
    if not np.isfinite(args.fund_frac) or not 0.0 <= args.fund_frac <= 10.0:
        raise UsageError(f"--fund-frac must lie in [0, 10], got {args.fund_frac}")
    check_seed("--seed", args.seed)
    scenario = load_scenario_checked(args.scenario)
    out = Path(args.out)
    check_output(out, OUTPUT_KINDS["simulation"], force=args.force)
    with output_lock(out, command="fundgym simulate"):
        return _simulate(args, scenario)


def _simulate(args: argparse.Namespace, scenario: Scenario) -> int:
    """Run ``scenario`` under both fallbacks, print the summary, write plot and config."""
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.out)
    results: dict[str, dict[str, FloatArray]] = {}
    runs: dict[str, dict[str, FloatArray]] = {}
    first: SimulationResult | None = None
    worst = 0.0
    start = time.perf_counter()
    for name, params in RUNS.items():
        sim = ExchangeSimulator(
            scenario, params, n_accounts=args.accounts, fund_to_oi_frac=args.fund_frac, seed=seed
        )
        res = sim.run()
        first = first or res
        results[name] = res.totals()
        arrays = res.record.arrays()
        runs[name] = {
            "fund_usd": arrays["fund_usd"][:, 0],
            "liquidation_volume_usd": arrays["liquidation_volume_usd"][:, 0],
        }
        worst = max(worst, res.max_ledger_error_usd)
    elapsed = time.perf_counter() - start
    assert first is not None
    s = first.series
    mark = s["mark_price"][:, 0]
    oi = float(first.initial_open_interest_usd[0])
    p = RiskParams()
    print(
        f"fundgym simulate: {scenario.name} (seed {seed}): {scenario.description}\n"
        f"mark {mark[0]:,.0f} -> low {mark.min():,.0f} ({mark.min() / mark[0] - 1:+.1%}) over "
        f"{mark.size:,} ticks of {scenario.tick_minutes:g} min; depth down to "
        f"{s['depth_usd_per_pct'][:, 0].min() / scenario.depth.normal_usd_per_pct:.0%} of normal"
    )
    print(
        f"{args.accounts:,} account slots, open interest ${oi:,.0f}, fund "
        f"${args.fund_frac * oi:,.0f} ({args.fund_frac:.2%} of OI)\n"
        f"defaults: MMR {p.mmr:.1%}, IMR {p.imr:.1%}, liquidation fee {p.liquidation_fee_rate:.2%} "
        f"(fund share {p.liquidation_fee_fund_share:.0%}), "
        f"max {p.max_liquidation_fraction:.0%} of a position per tick; "
        f"lean fee: 0.30% of notional, 20% to the fund\n"
    )
    print(format_summary(results))
    print(
        f"\nledger: largest imbalance over every tick ${worst:.2e} "
        f"({worst / oi:.1e} of open interest): the books balance"
    )
    from fundgym.agents.evaluate.plots import plot_crash  # matplotlib only when plotting

    hours = np.arange(mark.size, dtype=np.float64) * (scenario.tick_minutes / 60.0)
    # The scenario's name is text from its file: made safe, and the plot kept inside --out.
    plot_path = inside(out, out / f"{safe_name(scenario.name, 'scenario')}.png")
    plot_crash(
        hours,
        mark,
        s["oracle_price"][:, 0],
        s["depth_usd_per_pct"][:, 0],
        runs,
        f"{scenario.name} (seed {seed}): defaults vs a lean liquidation fee",
        plot_path,
        start_utc=scenario.start_utc,
    )
    config = {
        "command": "fundgym simulate",
        "scenario": dataclasses.asdict(scenario),
        "seed": seed,
        "accounts": args.accounts,
        "fund_frac": args.fund_frac,
        "runs": {
            name: {k: v for k, v in dataclasses.asdict(rp).items() if k != "tiers"}
            for name, rp in RUNS.items()
        },
    }
    config_path = out / "config.yaml"
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    print(f"\nwrote {plot_path} and {config_path} ({elapsed:.1f} s)")
    return 0
