"""Before/after throughput of the full tick: checkouts timed in alternation, each run fresh.

The companion of ``compare_env.py`` for ``fundgym bench full``: on a shared VM two runs of the
same code differ by up to 2x, so this runs each checkout (a ``git worktree`` of the old commit
and of the new one, say) once per round, alternating, one fresh process per run, and prints
each run's figures. Extra arguments go to ``fundgym bench full`` (``--repeats 1`` and a JSON
file are added).

Usage: ``python benchmarks/compare_full.py /tmp/old /tmp/new --rounds 3 -- --accounts 10000
--envs 1,16 --scenarios volatile,oct_10_2025``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_RUN = """
import sys
sys.path.insert(0, {root!r})
import fundgym
assert fundgym.__file__.startswith({root!r}), fundgym.__file__
from fundgym.agents.cli import main
sys.exit(main(["bench", "full", *{args!r}, "--json", {out!r}, "--force", "--repeats", "1"]))
"""


def main() -> int:
    """Run the rounds and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="checkouts to time (folders)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per checkout (default 3)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: bench arguments")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    for k in range(args.rounds):
        for root in args.roots:
            root_abs = str(Path(root).resolve())
            with tempfile.TemporaryDirectory() as tmp:
                out = str(Path(tmp) / "bench.json")
                code = _RUN.format(root=root_abs, args=bench_args, out=out)
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return done.returncode
                rows = json.loads(Path(out).read_text())["rows"]
            figures = ", ".join(
                f"{r['scenario']} {r.get('liquidation_mode', 'partial')} {r['n_envs']}x"
                f"{r['n_accounts']} {r['median_account_steps_per_s']:.3e}"
                for r in rows
            )
            print(f"round {k} {root}: {figures}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
