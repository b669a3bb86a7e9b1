"""The compiled tick has one signature, whatever calls it (a compile costs about a minute).

numba compiles a kernel once per tuple of argument types, and array layout (C, F), a read-only
flag and a literal argument are all part of the type. The tick used to be compiled up to four
times in one process: one exchange's paths were C-contiguous and a batch's F-ordered, the
parallel tick passed prange's unsigned index and the serial one a literal 0, and a broadcast
read-only view reached the book statistics. Run in a fresh process, so that no other test's
calls count: a batch, one exchange and the threaded tick. (With numba's cache warm a kernel
called only from other kernels registers no signature, so only the callers are checked
exactly.)
"""

import subprocess
import sys

CODE = """
import numpy as np
from fundgym.envs import observation, tick_kernels
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator

env = InsuranceFundVectorEnv(num_envs=3, n_accounts=32, scenario="oct_10_2025")
env.reset(seed=0)
env.step(np.zeros(env.action_space.shape, np.float32))
for n, threads in ((1, 1), (2, 1), (2, 2)):
    sim = ExchangeSimulator(
        [load_scenario("volatile")] * n, n_envs=n, n_accounts=16, seed=list(range(n)),
        threads=threads,
    )
    sim.advance(2)
for k in (tick_kernels.advance_serial, tick_kernels.advance_parallel,
          tick_kernels._advance_exchanges, observation.book_stats_exchange):
    print(k.__name__, len(k.signatures))
"""


def test_the_tick_and_the_book_statistics_compile_once():
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=600, check=True
    )
    counts = {k: int(v) for k, v in (line.split() for line in done.stdout.splitlines())}
    assert counts["advance_serial"] == counts["advance_parallel"] == 1
    # Called only from inside other kernels: none when those came from numba's cache (only the
    # callers' signatures are registered then), one when they were compiled in this process.
    assert counts["_advance_exchanges"] <= 1 and counts["book_stats_exchange"] <= 1
