"""One episode of a trained run, the fund's buckets every few decisions.

Where an allocation's money goes: premium, spreads and fees against what the puts are worth at
the trough.

Usage: ``python benchmarks/allocation_trace.py RUN SCENARIO [--seed 0] [--every 24]
[--held-stable]``. ``--held-stable`` forces the run's allocation coordinates to stable's logits,
as :mod:`benchmarks.allocation_trough` does for its comparison. Prints one line every
``--every`` decisions (the index, the fund, its buckets stable/yield/volatile/hedge at their
marks, the premium and the fees paid so far, the target weights), then the trough. The
figures docs/benchmarks.md quotes for FTX came from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from allocation_trough import episode  # run as a script: benchmarks/ is on the path

from fundgym.agents.config import load_config
from fundgym.agents.policies.trained import TrainedPolicy
from fundgym.envs.exchange_env import InsuranceFundVectorEnv


def main() -> None:
    """Run the episode and print the trace."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a fundgym train run directory")
    ap.add_argument("scenario", help="a library scenario, e.g. ftx_2022")
    ap.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    ap.add_argument("--every", type=int, default=24, help="decisions between lines (default 24)")
    ap.add_argument("--held-stable", action="store_true", help="force the allocation to stable")
    args = ap.parse_args()
    decision = 0

    def line(env: InsuranceFundVectorEnv, info: dict[str, Any]) -> None:
        nonlocal decision
        if decision % args.every == 0:
            sim = env.core.sim
            pf = sim.portfolio
            buckets = pf.bucket_values_usd(sim.last_index, sim.vol_annual)[0]
            print(
                f"{decision:5d} index {info['index_price'][0]:10.1f} fund "
                f"{info['fund_balance_usd'][0]:11,.0f} buckets "
                f"{', '.join(f'{b:,.0f}' for b in buckets)} premium {pf.put_cost_usd[0]:,.0f} "
                f"fees {pf.fees_paid_usd[0]:,.0f} target {np.round(env.core.alloc_target[0], 2)}"
            )
        decision += 1

    cfg = load_config(args.run / "config.yaml")
    policy = TrainedPolicy("run", args.run)
    out = episode(policy, cfg, args.scenario, args.seed, args.held_stable, trace=line)
    print(
        f"trough at decision {out['trough_decision']:.0f}: index {out['index_at_trough']:,.1f}, "
        f"fund {out['fund_at_trough_usd']:,.0f}; end {out['fund_end_usd']:,.0f}"
    )


if __name__ == "__main__":
    main()
