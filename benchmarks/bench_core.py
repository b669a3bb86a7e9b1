"""Throughput of one full core step, in account-steps per second.

One step is mark to market, margin check, liquidation fills, fund accounting and fallback;
account-steps per second is accounts x exchanges x steps / second.

Two regimes, so the number is honest about what a step costs:

* ``quiet``: a random walk of 0.05% per tick; liquidations are rare and most steps take the
  fast path (no liquidatable account).
* ``crash``: a -40% slide over the timed steps with thin depth, so accounts are liquidated,
  the fund pays, and deleveraging runs on most steps.

Each configuration starts from a freshly drawn book, runs one untimed warm-up step, then times
``steps`` steps; the figure reported is the median over ``repeats`` runs. The kernels are
compiled (or loaded from numba's on-disk cache) before the first timed run;
:func:`compile_seconds` measures that cost on its own.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.synthetic import synthetic_book


def _marks(regime: str, n_envs: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    if regime == "quiet":
        r = rng.normal(0.0, 0.0005, (steps + 1, n_envs))
    elif regime == "crash":
        r = np.full((steps + 1, n_envs), np.log(0.6) / (steps + 1))
        r += rng.normal(0.0, 0.002, r.shape)
    else:
        raise ValueError(f"regime must be 'quiet' or 'crash', got {regime!r}")
    return np.asarray(100.0 * np.exp(np.cumsum(r, axis=0)))


def time_core(
    n_envs: int, n_accounts: int, regime: str, steps: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Median account-steps per second of ``core_step`` over ``repeats`` timed runs."""
    rates = []
    liquidations = 0
    params = RiskParams(fallback="adl")
    # Compile (or load) every kernel first: the warm-up step below liquidates nothing, and
    # the waterfall's first compile must not land in a timed run.
    small = synthetic_book(np.random.default_rng(seed), n_envs, 50, 100.0, fund_usd=1e2)
    core_step(small, params, np.full(n_envs, 60.0), SqrtImpact(1e3))
    for rep in range(repeats):
        rng = np.random.default_rng(seed + rep)
        state = synthetic_book(rng, n_envs, n_accounts, 100.0, fund_usd=1e4)
        marks = _marks(regime, n_envs, steps, rng)
        impact = SqrtImpact(depth_usd_per_pct=2e4 * n_accounts)
        core_step(state, params, marks[0], impact)  # warm-up
        start = time.perf_counter()
        for t in range(1, steps + 1):
            ev = core_step(state, params, marks[t], impact)
            liquidations += int(ev.n_liquidations.sum())
        elapsed = time.perf_counter() - start
        rates.append(n_envs * n_accounts * steps / elapsed)
    return {
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "regime": regime,
        "steps": steps,
        "repeats": repeats,
        "median_account_steps_per_s": statistics.median(rates),
        "min_account_steps_per_s": min(rates),
        "max_account_steps_per_s": max(rates),
        "liquidations_per_step": liquidations / (steps * repeats),
    }


_COMPILE_PROBE = """
import time
t0 = time.perf_counter()
import numpy as np
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step, margin_state
from fundgym.envs.core.synthetic import synthetic_book
t1 = time.perf_counter()
state = synthetic_book(np.random.default_rng(0), 2, 100, 100.0, fund_usd=1e3)
margin_state(state, RiskParams(), np.full(2, 60.0))
core_step(state, RiskParams(), np.full(2, 60.0), SqrtImpact(1e3))  # compiles every kernel
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def compile_seconds(cached: bool) -> dict[str, float]:
    """Seconds to import the margin engine and to run its first step, in a fresh process.

    Args:
        cached: Whether numba may use its on-disk cache (``cache=True``). ``False`` points
            the cache (numba's ``NUMBA_CACHE_DIR`` and fundgym's ``FUNDGYM_NUMBA_CACHE_DIR``,
            :mod:`fundgym.envs.jit`, which fundgym's kernels use) at an empty directory, so
            every kernel compiles from scratch; ``True`` fills that directory first, then
            measures a second process that loads the kernels from it.
    """
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as cache_dir:
        # fundgym's kernels read FUNDGYM_NUMBA_CACHE_DIR; with NUMBA_CACHE_DIR alone, the "no
        # cache" run loaded them from the user's cache and timed no compile.
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "FUNDGYM_NUMBA_CACHE_DIR": cache_dir}
        run = [sys.executable, "-c", _COMPILE_PROBE]
        if cached:
            subprocess.run(run, env=env, cwd=root, check=True, capture_output=True)
        out = subprocess.run(run, env=env, cwd=root, check=True, capture_output=True, text=True)
    import_s, first_step_s = (float(x) for x in out.stdout.split())
    return {"import_s": import_s, "first_step_s": first_step_s}


def machine() -> str:
    """One line describing where the benchmark ran."""
    return (
        f"{platform.processor() or platform.machine()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}"
    )


def main() -> None:
    """Print the issue's grid (quiet and crash at 1 x 10k, 16 x 10k, 1 x 100k) and compile times."""
    print(f"margin engine (core_step) on {machine()}")
    for regime in ("quiet", "crash"):
        for n_envs, n_accounts in ((1, 10_000), (16, 10_000), (1, 100_000)):
            r = time_core(n_envs, n_accounts, regime, steps=200, repeats=7)
            print(
                f"{regime:>6s} {n_envs:>3d} x {n_accounts:>7,d}: "
                f"{r['median_account_steps_per_s']:.2e} account-steps/s "
                f"({r['min_account_steps_per_s']:.2e} .. {r['max_account_steps_per_s']:.2e}), "
                f"{r['liquidations_per_step']:.1f} liquidations/step",
                flush=True,
            )
    for cached in (False, True):
        c = compile_seconds(cached)
        label = "on-disk cache" if cached else "no cache"
        print(
            f"first call, {label}: import {c['import_s']:.2f} s, "
            f"first step {c['first_step_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
