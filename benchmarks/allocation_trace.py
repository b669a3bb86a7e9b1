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

import numpy as np

from fundgym.agents.config import env_kwargs, load_config
from fundgym.agents.policies.trained import TrainedPolicy
from fundgym.envs.exchange_env import InsuranceFundVectorEnv

#: Stable's logits: softmax(3 x logits) puts 99.3% in stable.
STABLE_LOGITS = {
    "alloc_stable": 1.0,
    "alloc_yield": -1.0,
    "alloc_volatile": -1.0,
    "alloc_hedge": -1.0,
}


def main() -> None:
    """Run the episode and print the trace."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a fundgym train run directory")
    ap.add_argument("scenario", help="a library scenario, e.g. ftx_2022")
    ap.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    ap.add_argument("--every", type=int, default=24, help="decisions between lines (default 24)")
    ap.add_argument("--held-stable", action="store_true", help="force the allocation to stable")
    args = ap.parse_args()
    cfg = load_config(args.run / "config.yaml")
    policy = TrainedPolicy("run", args.run)
    held = {
        k: STABLE_LOGITS[n]
        for k, n in enumerate(cfg.env.controlled)
        if args.held_stable and n in STABLE_LOGITS
    }
    env = InsuranceFundVectorEnv(num_envs=1, **env_kwargs(cfg, args.scenario))
    obs, _ = env.reset(seed=args.seed)
    policy.reset(1)
    sim = env.core.sim
    index: list[float] = []
    fund: list[float] = []
    done = False
    while not done:
        action = np.asarray(policy.act(obs), dtype=np.float32)
        for k, logit in held.items():
            action[:, k] = logit
        obs, _, terminated, truncated, info = env.step(action)
        pf = sim.portfolio
        index.append(float(info["index_price"][0]))
        fund.append(float(info["fund_balance_usd"][0]))
        if (len(index) - 1) % args.every == 0:
            buckets = pf.bucket_values_usd(sim.last_index, sim.vol_annual)[0]
            print(
                f"{len(index) - 1:5d} index {index[-1]:10.1f} fund {fund[-1]:11,.0f} buckets "
                f"{', '.join(f'{b:,.0f}' for b in buckets)} premium {pf.put_cost_usd[0]:,.0f} "
                f"fees {pf.fees_paid_usd[0]:,.0f} target {np.round(env.core.alloc_target[0], 2)}"
            )
        done = bool(terminated[0] or truncated[0])
    env.close()
    t = int(np.argmin(index))
    print(
        f"trough at decision {t}: index {index[t]:,.1f}, fund {fund[t]:,.0f}; end {fund[-1]:,.0f}"
    )


if __name__ == "__main__":
    main()
