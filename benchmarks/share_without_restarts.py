"""Issue 14's share bar without restarts: what the env's share of PPO would be if no episode ended.

``fundgym bench env``'s PPO run (SB3 PPO 64x64, ``n_steps`` 32, batch 1,024, torch on one
thread, the env on ``--threads``) twice, alternating: once on the environment's defaults, once
with episodes that cannot end during the run (``horizon_minutes`` long enough for every
decision of it, ``insolvency_frac`` 10, so no exchange is ever insolvent enough to stop). The
decision's own Python and the compiled tick are the same in both; only the restarts go. The
difference bounds what any way of restarting an exchange (compiled, drawn ahead on another core,
batched) could save: a restart that cost nothing would leave the second figure.

Usage: ``python benchmarks/share_without_restarts.py [--envs 64] [--accounts 256] [--steps
65536] [--threads 2] [--repeats 2]``. docs/benchmarks.md ("The two bars left") has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path; the checkout's root makes ``benchmarks``
# the package it is when the tests import this module.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_env import PPO_N_STEPS, time_ppo
from fundgym.envs.config import EnvConfig

AS_BUILT, NO_END = "as built", "no episode ends"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, default=64, help="exchanges in the batch (default 64)")
    ap.add_argument("--accounts", type=int, default=256, help="accounts per exchange (256)")
    ap.add_argument("--steps", type=int, default=65536, help="PPO timesteps per run (65,536)")
    ap.add_argument("--threads", type=int, default=2, help="the env's threads (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each kind (default 2)")
    args = ap.parse_args(argv)
    for name in ("envs", "accounts", "steps", "threads", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: {getattr(args, name)} is not a positive integer")
    return args


def measure(
    envs: int, accounts: int, steps: int, threads: int, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` PPO runs as built and as many with no episode ending, alternating."""
    # learn() steps whole rollouts: every decision it will take, and the reset's, in one episode.
    rollouts = -(-steps // (envs * PPO_N_STEPS))
    no_end: dict[str, Any] = {
        "horizon_minutes": (rollouts * PPO_N_STEPS + 1) * EnvConfig().decision_minutes,
        "insolvency_frac": 10.0,
    }
    runs: dict[str, list[dict[str, Any]]] = {AS_BUILT: [], NO_END: []}
    for _ in range(repeats):
        for label, kwargs in ((AS_BUILT, None), (NO_END, no_end)):
            runs[label].append(time_ppo(envs, accounts, steps, threads, env_kwargs=kwargs))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    runs = measure(args.envs, args.accounts, args.steps, args.threads, args.repeats)
    print(
        f"PPO {args.steps:,} steps, {args.envs} x {args.accounts:,} accounts, env on "
        f"{args.threads} thread(s); {args.repeats} run(s) each"
    )
    print(f"{'':18s} {'share':>14s} {'env ms/decision':>16s} {'PPO ms/decision':>16s} ended")
    for label, rs in runs.items():
        shares = ", ".join(f"{r['env_share']:.1%}" for r in rs)
        env_ms = statistics.median(r["env_s"] / r["decisions"] * 1e3 for r in rs)
        ppo_ms = statistics.median((r["wall_s"] - r["env_s"]) / r["decisions"] * 1e3 for r in rs)
        ended = statistics.median(r["episodes_ended"] for r in rs)
        print(f"{label:18s} {shares:>14s} {env_ms:16.3f} {ppo_ms:16.3f} {ended:5.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
