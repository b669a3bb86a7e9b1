"""The fund's value at each crash's trough: a trained run as is, and with its allocation stable.

Issue 21's allocation bar reads "the learned allocation's mean fund value at each crash's
trough is at least the stable-only fund's". The fairest stable-only fund is the same
controller on the same episodes with only its allocation taken away: each episode runs twice,
once as trained and once with the run's four allocation action coordinates forced to stable's
logits (+1, -1, -1, -1), the other levers still acting (they see the fund they get). The trough
is the decision at which the index is lowest. A run that does not control the allocation runs
once.

The two runs part ways: the allocation's action coordinates are part of the levers' positions
the policy observes, so its other levers act differently and the paths (liquidations, fees,
even the index, which liquidation flow moves) differ, however little the fund moved. So each
episode also reports what the allocation itself earned against holding stable assets on the
same path (``allocation_pnl_at_trough_usd``: the fund's external PnL, yield, option marks and
payoffs less every cost, which is 0 for a fund held in stable assets), and each crash's
"same path" ratio is the mean fund at the trough over the mean of that fund less its
allocation PnL.

Usage: ``python benchmarks/allocation_trough.py RUN [RUN ...] [--episodes 4]
[--scenarios a,b] [--out FILE.json]``. Episode ``i`` is seeded ``i``, as ``fundgym evaluate
--seed 0`` seeds it. Prints one line per run and crash, then per run the mean over crashes of
the as-trained / held-stable ratio and on how many it is at least 1; ``--out`` writes every
episode's fund at the trough, at the end and at its lowest (JSON). docs/benchmarks.md has the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.config import TrainConfig, env_kwargs, load_config
from fundgym.agents.policies.trained import TrainedPolicy
from fundgym.agents.rollout import CRASHES
from fundgym.envs.controls import ALLOCATION
from fundgym.envs.exchange_env import InsuranceFundVectorEnv

#: Stable's logits: softmax(3 x logits) puts 99.3% in stable.
STABLE_LOGITS = dict(zip(ALLOCATION, (1.0, -1.0, -1.0, -1.0), strict=True))


def episode(
    policy: TrainedPolicy,
    cfg: TrainConfig,
    scenario: str,
    seed: int,
    hold_stable: bool,
    trace: Callable[[InsuranceFundVectorEnv, dict[str, Any]], None] | None = None,
    put_crash_rate_per_year: float | None = None,
) -> dict[str, float]:
    """One episode on ``scenario``: the fund at the index's trough, at the end and lowest.

    ``hold_stable`` forces the run's allocation coordinates (those it controls) to stable's;
    ``trace``, if given, is called with the env and the step's info after every decision
    (``benchmarks/allocation_trace.py``); ``put_crash_rate_per_year``, if given, replaces
    the run's (``None``: the environment's own for the scenario, as ``fundgym evaluate`` has it).
    """
    controlled = cfg.env.controlled if hold_stable else ()
    held = {k: STABLE_LOGITS[n] for k, n in enumerate(controlled) if n in STABLE_LOGITS}
    kwargs = env_kwargs(cfg, scenario)
    if put_crash_rate_per_year is not None:
        kwargs["put_crash_rate_per_year"] = put_crash_rate_per_year
    env = InsuranceFundVectorEnv(num_envs=1, **kwargs)
    obs, _ = env.reset(seed=seed)
    policy.reset(1)
    fund: list[float] = []
    index: list[float] = []
    # What the allocation earned against holding stable assets on this very path, to date.
    alloc_pnl: list[float] = []
    earned = 0.0
    done = False
    while not done:
        action = np.array(policy.act(obs), dtype=np.float32)
        for k, logit in held.items():
            action[:, k] = logit
        obs, _, terminated, truncated, info = env.step(action)
        fund.append(float(info["fund_balance_usd"][0]))
        index.append(float(info["index_price"][0]))
        earned += float(info["fund_external_pnl_usd"][0])
        alloc_pnl.append(earned)
        if trace is not None:
            trace(env, info)
        done = bool(terminated[0] or truncated[0])
    env.close()
    trough = int(np.argmin(index))
    return {
        "fund_at_trough_usd": fund[trough],
        "fund_end_usd": fund[-1],
        "fund_min_usd": min(fund),
        "trough_decision": trough,
        "index_at_trough": index[trough],
        "allocation_pnl_at_trough_usd": alloc_pnl[trough],
    }


def mean_at_trough(rows: list[dict[str, dict[str, float]]], variant: str) -> float:
    """The mean over episodes of ``variant``'s fund at the trough, USD."""
    return statistics.mean(r[variant]["fund_at_trough_usd"] for r in rows)


def main() -> None:
    """Run every run on every crash; print the means and write ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="fundgym train run directories")
    ap.add_argument("--episodes", type=int, default=4, help="episodes per crash (default 4)")
    ap.add_argument("--scenarios", default=",".join(CRASHES), help="default: the crash library")
    ap.add_argument("--out", type=Path, help="also write every episode's figures (JSON)")
    ap.add_argument(
        "--put-crash-rate",
        type=float,
        default=None,
        help="crashes a year the option market prices (default: the environment's own)",
    )
    args = ap.parse_args()
    result: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[float]]] = {}
    for run in args.runs:
        cfg = load_config(run / "config.yaml")
        policy = TrainedPolicy(run.name, run)
        allocation = any(n in STABLE_LOGITS for n in cfg.env.controlled)
        per_run: dict[str, Any] = {}
        ratios: list[float] = []
        for scenario in args.scenarios.split(","):
            rows = [
                {
                    variant: episode(policy, cfg, scenario, seed, hold, None, args.put_crash_rate)
                    for variant, hold in (("as_trained", False), ("held_stable", True))
                    if allocation or not hold
                }
                for seed in range(args.episodes)
            ]
            per_run[scenario] = rows
            for variant in rows[0]:
                pooled.setdefault(scenario, {}).setdefault(variant, []).extend(
                    r[variant]["fund_at_trough_usd"] for r in rows
                )
            pooled[scenario].setdefault("allocation_pnl", []).extend(
                r["as_trained"]["allocation_pnl_at_trough_usd"] for r in rows
            )
            trained = mean_at_trough(rows, "as_trained")
            pnl = statistics.mean(r["as_trained"]["allocation_pnl_at_trough_usd"] for r in rows)
            line = (
                f"{run} {scenario}: mean fund at the trough, as trained ${trained:,.0f} "
                f"(the allocation's own PnL ${pnl:,.0f})"
            )
            if allocation:
                held = mean_at_trough(rows, "held_stable")
                line += f", allocation held stable ${held:,.0f}"
                ratios.append(trained / held if held > 0 else 1.0)
            print(line, flush=True)
        if ratios:  # the figures docs/benchmarks.md quotes per run
            print(
                f"{run}: as trained / held stable, mean over {len(ratios)} scenarios "
                f"{statistics.mean(ratios):.3f}; at or above stable on "
                f"{sum(r >= 1.0 for r in ratios)} of {len(ratios)}",
                flush=True,
            )
        result[str(run)] = per_run
    if len(args.runs) > 1 and all("held_stable" in v for v in pooled.values()):
        # The bar as written: each crash's mean over every run's episodes.
        at_least = same_path = 0
        for scenario, v in pooled.items():
            trained = statistics.mean(v["as_trained"])
            ratio = trained / statistics.mean(v["held_stable"])
            pnl = statistics.mean(v["allocation_pnl"])
            on_path = trained / (trained - pnl)
            at_least += ratio >= 1.0
            same_path += pnl >= 0.0
            print(
                f"pooled over {len(args.runs)} runs, {scenario}: {ratio:.4f}; same path "
                f"{on_path:.4f} (the allocation's mean PnL at the trough ${pnl:,.0f})",
                flush=True,
            )
        print(
            f"pooled: at or above stable on {at_least} of {len(pooled)} crashes; on the same "
            f"path, {same_path} of {len(pooled)}",
            flush=True,
        )
    if args.out is not None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.out)  # whole or absent


if __name__ == "__main__":
    main()
