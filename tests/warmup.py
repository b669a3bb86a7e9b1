"""Compile the simulator's kernels once into numba's on-disk cache, before the test workers start.

``make test`` runs ``python -m tests.warmup one-market`` and ``... markets`` in the background
while ruff and mypy run, and waits for them before pytest. Why: on a fresh clone (CI) numba's
cache is empty, and both xdist workers compile the same kernels at the same time on their first
tests, each a minute or more of CPU (measured: a CLI test that takes 3 s with the cache filled
took 63 s cold). Compiled here once, beside mypy, the workers load the kernels from the cache
instead. Nothing here is a test: a failure shows again, with its test, in the suite.

The runs are tiny: each touches the kernels of one path (the one-market env under every
liquidation mode, the vault and an allocation; the simulator's serial and parallel ticks and its
tick-by-tick path; ``fundgym simulate``; the multi-market simulator under the partial
waterfall, segmented funds with transfers, and Hyperliquid's engine with its vault; the margin
engine called alone).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np


def _one_market() -> None:
    from fundgym.envs.exchange_env import InsuranceFundVectorEnv

    settings: tuple[dict[str, object], ...] = (
        {},
        {"liquidation_mode": "binance"},
        {"liquidation_mode": "dydx_v4"},
        {"liquidation_mode": "hyperliquid", "adl_policy": "hyperliquid", "vault_to_oi_frac": 0.02},
        {"liquidation_mode": "bitmex"},
    )
    for kw in settings:
        env = InsuranceFundVectorEnv(num_envs=2, n_accounts=64, scenario="oct_10_2025", **kw)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(3):
            env.step(rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32))
        env.close()


def _simulator() -> None:
    from fundgym.envs.scenarios import load_scenario
    from fundgym.envs.simulator import ExchangeSimulator

    names = ("oct_10_2025", "volatile", "luna_2022", "venue_flash_wick", "oracle_manipulation")
    scenarios = [load_scenario(name) for name in names]  # venue events and the attacker too
    n = len(scenarios)
    for threads in (1, 2):  # the serial and the parallel compiled tick
        sim = ExchangeSimulator(
            scenarios, n_envs=n, n_accounts=64, seed=list(range(n)), threads=threads
        )
        sim.set_allocation(np.tile([0.4, 0.2, 0.2, 0.2], (n, 1)))
        sim.advance(20)
        for _ in range(3):  # the tick-by-tick path (fundgym simulate)
            sim.step()


def _simulate_command() -> None:
    import contextlib
    import io
    import tempfile

    from fundgym.agents.cli import main as fundgym

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        argv = ["simulate", "--scenario", "venue_flash_wick", "--accounts", "64"]
        if fundgym([*argv, "--out", tmp, "--force"]) != 0:
            raise SystemExit("tests.warmup: fundgym simulate failed")


def _hyperliquid(**kw: float) -> Any:
    """Hyperliquid's engine and ADL rule, no liquidators: the vault takes what the book cannot."""
    from fundgym.envs.core.params import RiskParams

    return RiskParams(
        liquidation_mode="hyperliquid", adl_policy="hyperliquid", liquidator_capacity_mult=0.0, **kw
    )


def _markets() -> None:
    from fundgym.envs.markets_env import MarketsInsuranceFundEnv
    from fundgym.envs.markets_simulator import MarketsSimulator
    from fundgym.envs.scenarios import load_scenario, scenario_from_dict
    from tests.multi_market import library_dict

    data = library_dict("alt_contagion")
    data["horizon_minutes"] = 60
    data["markets"][2]["idio_crash"]["start_minute"] = 10
    data["markets"][2]["depth_collapses"][0]["start_minute"] = 10
    sc = scenario_from_dict(data, "alt_contagion.yaml")
    hl = _hyperliquid()
    runs: tuple[dict[str, object], ...] = (
        {},
        {"fund_mode": "segmented", "segment_transfer_cap_usd": 100.0},
        {"risk": hl, "vault_to_oi_frac": 0.02, "fund_to_oi_frac": 0.0},
        {"fund_allocation": [0.5, 0.0, 0.4, 0.1]},
    )
    for kw in runs:
        MarketsSimulator(sc, n_accounts=100, **kw).run()  # type: ignore[arg-type]
    multi = load_scenario("oct_10_2025_multi")  # collateral assets
    sim = MarketsSimulator(multi, n_accounts=100)
    for _ in range(5):
        sim.step()
    env = MarketsInsuranceFundEnv(sc, n_accounts=100)
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))


def _margin_engine() -> None:
    """The margin engine called alone: ``fundgym bench core`` and the engine's worked cases.

    Called on its own, ``core_step`` compiles its kernels for array types of its own (a
    synthetic book; a hand-made two-market cross account liquidated under Hyperliquid's
    engine, as the cross-margin venue cases do), which no env path reaches:
    in a fresh-clone ``make test`` they compiled inside the tests (the CLI's bench test, the
    cross-margin venue cases), 10-20 s each, while this part ends well before the other.
    """
    from fundgym.envs.core.impact import SqrtImpact
    from fundgym.envs.core.params import RiskParams
    from fundgym.envs.core.step import core_step, margin_state
    from fundgym.envs.core.synthetic import synthetic_book
    from fundgym.envs.state import SimState

    book = synthetic_book(np.random.default_rng(0), 2, 100, 100.0, fund_usd=1e3)
    margin_state(book, RiskParams(), np.full(2, 60.0))
    core_step(book, RiskParams(), np.full(2, 60.0), SqrtImpact(1e3))
    two = SimState.create([[100.0]], [[[1.0, -10.0]]], [[[1_000.0, 100.0]]], 0.0)
    marks = np.array([[960.0, 100.0]])
    deep = [SqrtImpact(1e9), SqrtImpact(1e9)]
    # MMR 5%: the account (equity 60 against a requirement of 98) is liquidated, which is what
    # reaches the cross-margin venue kernels; at the default MMR it would not be
    core_step(two, _hyperliquid(mmr=0.05, imr=0.1), marks, deep, book_price=marks, tick_minutes=1.0)


#: The parts ``python -m tests.warmup PART`` runs: the Makefile starts both at once, so the
#: two cores compile while mypy (one core) runs.
PARTS = {
    "one-market": (lambda: (_one_market(), _simulator(), _simulate_command())),
    "markets": (lambda: (_markets(), _margin_engine())),
}


def main(argv: list[str]) -> None:
    """Run the named parts (default: all) once; print how long it took."""
    names = argv or list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise SystemExit(f"tests.warmup: unknown part {unknown[0]!r}; allowed: {list(PARTS)}")
    start = time.perf_counter()
    for name in names:
        PARTS[name]()
    took = time.perf_counter() - start
    print(f"tests.warmup {' '.join(names)}: numba kernels compiled into the cache in {took:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
