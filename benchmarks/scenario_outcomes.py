"""Outcomes of every shipped scenario under default parameters, averaged over seeds.

Prints one JSON object per scenario: liquidated notional / initial OI, fund drawdown, shortfall
paid, ADL volume, socialised and unrecovered loss (each as a share of initial OI), OI end /
start, and the largest ledger error. It uses only the simulator's long-standing public API
(``ExchangeSimulator(scenario, risk, n_envs=..., n_accounts=..., seed=...).run()``), so the
same script measures two versions of the code: that is how ``docs/simulator_v2.md`` lists what
Simulator v2 changed per scenario.

Usage: ``python benchmarks/scenario_outcomes.py [--accounts 2000] [--seeds 4] [--out FILE]``;
``--compare OLD.json NEW.json`` prints the two runs side by side as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from fundgym.envs.core.params import RiskParams
from fundgym.envs.scenarios import load_scenario, single_market_names
from fundgym.envs.simulator import ExchangeSimulator


def outcomes(name: str, n_accounts: int, seeds: list[int], fallback: str) -> dict[str, float]:
    """Mean outcomes of scenario ``name`` over ``seeds`` (one batch, one exchange per seed)."""
    sc = load_scenario(name)
    sim = ExchangeSimulator(
        sc,
        RiskParams(fallback=fallback),  # type: ignore[arg-type]
        n_envs=len(seeds),
        n_accounts=n_accounts,
        seed=seeds,
    )
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    tot = res.totals()
    oi0 = np.maximum(res.initial_open_interest_usd, 1.0)
    oi = res.series["open_interest_usd"]
    fund0 = np.maximum(tot["fund_start_usd"], 1.0)
    row = {
        "liquidated_over_oi": tot["liquidation_volume_usd"] / oi0,
        "fund_drawdown_frac": 1.0 - tot["fund_min_usd"] / fund0,
        "shortfall_over_oi": tot["shortfall_usd"] / oi0,
        "adl_over_oi": tot["adl_volume_usd"] / oi0,
        "socialized_over_oi": tot["socialized_loss_usd"] / oi0,
        "unrecovered_over_oi": tot["unrecovered_usd"] / oi0,
        "bad_debt_over_oi": tot["bad_debt_usd"] / oi0,
        "oi_end_over_start": oi[-1] / oi0,
        "max_price_over_start": res.series["index_price"].max(axis=0)
        / res.series["index_price"][0],
    }
    out = {k: float(np.mean(v)) for k, v in row.items()}
    out["max_ledger_error_usd"] = float(res.max_ledger_error_usd)
    out["wall_s"] = wall
    return out


COMPARED = (
    ("liquidated_over_oi", "liquidated / OI", "{:.3g}"),
    ("shortfall_over_oi", "fund paid / OI", "{:.2e}"),
    ("adl_over_oi", "ADL / OI", "{:.3g}"),
    ("socialized_over_oi", "socialised / OI", "{:.3g}"),
    ("unrecovered_over_oi", "unrecovered / OI", "{:.3g}"),
    ("oi_end_over_start", "OI end / start", "{:.3g}"),
    ("max_price_over_start", "max index / start", "{:.4g}"),
)


def compare(old_path: str, new_path: str) -> str:
    """A Markdown table of two runs' outcomes, ``old -> new`` per cell."""
    with open(old_path) as fh:
        old = json.load(fh)
    with open(new_path) as fh:
        new = json.load(fh)
    head = "| scenario | " + " | ".join(label for _, label, _ in COMPARED) + " |"
    lines = [head, "|---|" + "---:|" * len(COMPARED)]
    for name in sorted(new):
        cells = []
        for key, _, fmt in COMPARED:
            a = fmt.format(old[name][key]) if name in old else "-"
            cells.append(f"{a} -> {fmt.format(new[name][key])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the outcome table, or compare two saved tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="two saved JSON runs")
    ap.add_argument("--accounts", type=int, default=2000, help="account slots per exchange")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per scenario (0..N-1 + 1000)")
    ap.add_argument("--fallback", default="adl", choices=("adl", "socialize"))
    ap.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return 0
    seeds = [1000 + i for i in range(args.seeds)]
    table = {}
    for name in single_market_names():
        table[name] = outcomes(name, args.accounts, seeds, args.fallback)
        print(name, json.dumps(table[name]), file=sys.stderr)
    text = json.dumps(table, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
