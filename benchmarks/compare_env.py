"""Before/after throughput of the batched env: checkouts timed in alternation, each run fresh.

On a shared VM two runs of the same code differ by 15-40%; comparing code measured an hour
apart says little. This times several checkouts (a ``git worktree`` of the old commit and the
current tree, say) in rounds, one fresh process per run, so slow spells hit every checkout
alike, and prints each configuration's median and best. A run is ``--steps`` decisions of the
training-sampler env with ``--envs`` exchanges of ``--accounts`` accounts under random actions
over every lever (resets included), after five warm-up decisions; numba's cache must be warm
(run once first).

Usage: ``python benchmarks/compare_env.py /tmp/old . --threads 1,2 --rounds 5``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

_RUN = """
import os, sys, time
sys.path.insert(0, {root!r})
os.environ["FUNDGYM_THREADS"] = "{threads}"
import numpy as np
import fundgym
assert fundgym.__file__.startswith({root!r}), fundgym.__file__
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
env = InsuranceFundVectorEnv(num_envs={envs}, n_accounts={accounts})
env.reset(seed=0)
rng = np.random.default_rng(0)
shape = (env.num_envs, *env.single_action_space.shape)
for _ in range(5):
    env.step(rng.uniform(-1, 1, shape))
start = time.perf_counter()
for _ in range({steps}):
    env.step(rng.uniform(-1, 1, shape))
print({steps} * {envs} / (time.perf_counter() - start))
"""


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the rounds, print one line per checkout and thread count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="checkouts to time (folders)")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--envs", type=int, default=64, help="exchanges (default 64)")
    parser.add_argument("--accounts", type=int, default=1024, help="accounts (default 1024)")
    parser.add_argument("--steps", type=int, default=300, help="timed decisions (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="runs per configuration")
    args = parser.parse_args(argv)
    configs = [(root.resolve(), int(t)) for root in args.roots for t in args.threads.split(",")]
    rates: dict[tuple[Path, int], list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for root, threads in configs:
            code = _RUN.format(
                root=str(root),
                threads=threads,
                envs=args.envs,
                accounts=args.accounts,
                steps=args.steps,
            )
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
            )
            rates[(root, threads)].append(float(out.stdout.split()[-1]))
    for (root, threads), values in rates.items():
        print(
            f"{root} threads={threads}: median {statistics.median(values):,.0f} best "
            f"{max(values):,.0f} decisions/s over {len(values)} runs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
