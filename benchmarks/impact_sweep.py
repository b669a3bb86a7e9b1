"""Realised drawdown and liquidations against the book's OI / depth(1%), impact on and off.

For each scenario and each ratio of open interest to normal depth per 1% (the scenario's
``depth.oi_to_depth``), runs one batch of exchanges (one per seed) with liquidation impact as
the scenario sets it and one with ``depth.impact_coef: 0`` on the same seeds, and prints a
Markdown table of the means over seeds:

- the index's realised peak-to-trough drawdown, impact on;
- liquidated notional / starting open interest, and the peak minute's share of it;
- the liquidation-flow contribution to the drawdown: drawdown on minus drawdown off, in
  percentage points, and as a share of the drawdown (issue 16 asks for > 0.5 pp and < 1/3
  on majors at a realistic ratio).

With ``impact_coef: 0`` the index is the exogenous path, whatever the ratio, so the off run
is done once per scenario. ``docs/impact.md`` carries the table this script printed.

Usage: ``python benchmarks/impact_sweep.py [--scenarios oct_10_2025 may_19_2021]
[--ratios 1 3 10 30 100 225 300 1000] [--seeds 4] [--accounts 1000] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from fundgym.envs.scenarios import Scenario, load_scenario, single_market_names
from fundgym.envs.simulator import ExchangeSimulator

FloatArray = np.ndarray[tuple[int], np.dtype[np.float64]]

DEFAULT_RATIOS = (1.0, 3.0, 10.0, 30.0, 100.0, 225.0, 300.0, 1000.0)


def with_book(sc: Scenario, oi_to_depth: float | None, impact_coef: float | None) -> Scenario:
    """``sc`` with its normal depth set by ``oi_to_depth`` and, if given, its impact share."""
    depth = dataclasses.replace(sc.depth, oi_to_depth=oi_to_depth)
    if impact_coef is not None:
        depth = dataclasses.replace(depth, impact_coef=impact_coef)
    return dataclasses.replace(sc, depth=depth)


def run(sc: Scenario, seeds: list[int], n_accounts: int) -> dict[str, FloatArray]:
    """Per-seed drawdown of the index, liquidated notional / OI and peak minute / OI."""
    sim = ExchangeSimulator(sc, n_envs=len(seeds), n_accounts=n_accounts, seed=seeds)
    res = sim.run()
    index = res.series["index_price"]
    drawdown = (1.0 - index / np.maximum.accumulate(index, axis=0)).max(axis=0)
    oi0 = np.maximum(res.initial_open_interest_usd, 1.0)
    liq = res.record.arrays()["liquidation_volume_usd"]
    per_minute = liq / sc.tick_minutes  # a tick of tick_minutes: its volume per minute
    return {
        "drawdown": drawdown,
        "liquidated_over_oi": liq.sum(axis=0) / oi0,
        "peak_minute_over_oi": per_minute.max(axis=0) / oi0,
    }


def sweep(name: str, ratios: list[float], seeds: list[int], n_accounts: int) -> list[str]:
    """Markdown rows of one scenario, one per ratio."""
    sc = load_scenario(name)
    off = run(with_book(sc, None, 0.0), seeds, n_accounts)
    rows = []
    for ratio in ratios:
        on = run(with_book(sc, ratio, None), seeds, n_accounts)
        contrib = on["drawdown"] - off["drawdown"]
        share = contrib / np.maximum(on["drawdown"], 1e-12)
        rows.append(
            f"| {name} | {ratio:g} | {100 * on['drawdown'].mean():.1f} "
            f"| {100 * off['drawdown'].mean():.1f} "
            f"| {100 * contrib.mean():.2f} ({100 * contrib.min():.2f} to "
            f"{100 * contrib.max():.2f}) | {share.mean():.2f} "
            f"| {on['liquidated_over_oi'].mean():.3f} "
            f"| {100 * on['peak_minute_over_oi'].mean():.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


HEADER = (
    "| scenario | OI / depth(1%) | drawdown, % | drawdown without impact, % "
    "| liquidation-flow contribution, pp (min to max) | share of drawdown "
    "| liquidated / OI | peak minute / OI, % |\n|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the sweep, print (and optionally write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--scenarios", nargs="+", default=["oct_10_2025", "may_19_2021"], help="scenario names"
    )
    ap.add_argument(
        "--ratios",
        nargs="+",
        type=float,
        default=list(DEFAULT_RATIOS),
        help="OI / depth(1%%) values, in (0, 100000]",
    )
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0 .. N-1 (>= 1)")
    ap.add_argument("--accounts", type=int, default=1000, help="account slots per exchange")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    known = single_market_names()
    for name in args.scenarios:
        if name not in known:
            ap.error(f"--scenarios: unknown scenario {name!r}; known: {', '.join(known)}")
    if any(not (0.0 < r <= 1e5) for r in args.ratios):  # the schema's depth.oi_to_depth range
        ap.error(f"--ratios: every ratio must be in (0, 100000], got {args.ratios}")
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.accounts < 1:
        ap.error(f"--accounts must be >= 1, got {args.accounts}")
    seeds = list(range(args.seeds))
    print(HEADER, flush=True)
    t0 = time.perf_counter()
    rows = [
        row for name in args.scenarios for row in sweep(name, args.ratios, seeds, args.accounts)
    ]
    print(f"({args.seeds} seeds, {args.accounts} accounts, {time.perf_counter() - t0:.0f} s)")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(HEADER + "\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
