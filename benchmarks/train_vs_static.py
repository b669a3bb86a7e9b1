"""A trained run against static parameter sets, on the held-out crash suite and the same seeds.

Superseded by ``fundgym evaluate`` (baselines, searches, intervals, report); kept because
``docs/benchmarks.md#training`` quotes its figures.

Until ``fundgym evaluate`` exists this is how a training config is judged: a grid of static
parameter sets (liquidation fee x MMR x trading-fee share to the fund, the fund in stable
assets) is scored on fresh training-sampler draws (seeds no training or evaluation episode
uses); the best of them by mean episode reward is the *best static* set. It, the environment's
dYdX-like defaults and the trained policy then run the seven calibrated historical crashes,
every policy on the same seeds, with the run's environment settings.

Usage: ``python benchmarks/train_vs_static.py RUN_DIR [--episodes K] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.evaluate import CRASHES  # the held-out crash suite, one definition
from agents.train_config import load_config
from envs.controls import DEFAULTS, PARAMS
from envs.exchange_env import InsuranceFundVectorEnv

SEARCH_SEED = 2_000_003  # sampler draws for the static search: not training's, not eval's

Policy = Callable[[np.ndarray], np.ndarray]


def static_values(fee: float, mmr: float, tf_share: float) -> dict[str, float]:
    """A static parameter set in natural units (the rest at the environment defaults)."""
    return {**DEFAULTS, "liquidation_fee_rate": fee, "mmr": mmr, "trading_fee_fund_share": tf_share}


def static_policy(values: dict[str, float], controlled: tuple[str, ...]) -> Policy:
    """Always ask for ``values`` (the env starts there too, through ``fixed``)."""
    target = np.array([float(PARAMS[n].to_position(values[n])) for n in controlled])
    return lambda obs: np.tile(target, (obs.shape[0], 1))


def learned_policy(run_dir: Path) -> Policy:
    """The run's best model (by its held-out evaluation), observations normalised as trained."""
    import pickle

    import stable_baselines3 as sb3

    cfg = load_config(run_dir / "config.yaml")
    model = getattr(sb3, cfg.algo.upper()).load(run_dir / "best_model.zip", device="cpu")
    norm_path = run_dir / "best_vecnormalize.pkl"
    vecnorm = pickle.loads(norm_path.read_bytes()) if norm_path.exists() else None

    def act(obs: np.ndarray) -> np.ndarray:
        x = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
        action, _ = model.predict(x, deterministic=True)
        return np.asarray(action)

    return act


def run_episodes(
    env_kw: dict[str, Any], scenario: str, policy: Policy, episodes: int, seed: int
) -> dict[str, np.ndarray]:
    """One episode per exchange (seeded ``seed + i``); per-episode totals and means."""
    env = InsuranceFundVectorEnv(num_envs=episodes, **{**env_kw, "scenario": scenario})
    obs, _ = env.reset(seed=seed)
    active = np.ones(episodes, dtype=bool)
    out = {
        k: np.zeros(episodes)
        for k in ("reward", "loss_usd", "socialized_usd", "adl_usd", "capital_usd", "steps")
    }
    oi0 = None
    while active.any():
        obs, reward, term, trunc, info = env.step(policy(obs))
        if oi0 is None:
            oi0 = info["open_interest_usd"].copy()
        a = active.astype(float)
        out["reward"] += a * reward
        uncovered = info["socialized_loss_usd"] + info["unrecovered_usd"]
        out["socialized_usd"] += a * uncovered
        out["adl_usd"] += a * info["adl_volume_usd"]
        out["loss_usd"] += a * (uncovered + info["adl_volume_usd"])
        out["capital_usd"] += a * info["capital_locked_usd"]
        out["steps"] += a
        active &= ~(term | trunc)
    out["capital_usd"] /= np.maximum(out["steps"], 1)
    return out


def main() -> int:
    """Search the static grid, then run every policy on the crash suite; print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--episodes", type=int, default=8, help="episodes per crash (default 8)")
    ap.add_argument("--search-episodes", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    env_kw = dataclasses.asdict(cfg.env)
    env_kw["controlled"] = tuple(env_kw["controlled"])
    controlled = cfg.env.controlled

    t0 = time.perf_counter()
    grid = list(itertools.product((0.005, 0.015, 0.03), (0.01, 0.03, 0.06, 0.1), (0.1, 0.5)))
    search = []
    for fee, mmr, tf in grid:
        values = static_values(fee, mmr, tf)
        fixed = {k: values[k] for k in dataclasses.asdict(cfg.env.fixed)}
        kw = {**env_kw, "fixed": fixed}
        r = run_episodes(
            kw, "training", static_policy(values, controlled), args.search_episodes, SEARCH_SEED
        )
        search.append(((fee, mmr, tf), float(r["reward"].mean())))
        print(f"static fee {fee:.3f} mmr {mmr:.3f} tf {tf:.1f}: {r['reward'].mean():9.1f}")
    (fee, mmr, tf), best_reward = max(search, key=lambda x: x[1])
    took = time.perf_counter() - t0
    print(f"best static: fee {fee} mmr {mmr} tf {tf} ({best_reward:.1f}) in {took:.0f} s")
    best = static_values(fee, mmr, tf)

    policies: dict[str, tuple[Policy, dict[str, Any]]] = {
        "trained": (learned_policy(args.run_dir), env_kw),
        "best_static": (
            static_policy(best, controlled),
            {**env_kw, "fixed": {k: best[k] for k in dataclasses.asdict(cfg.env.fixed)}},
        ),
        "defaults": (static_policy(dict(DEFAULTS), controlled), env_kw),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, (policy, kw) in policies.items():
        results[name] = {}
        for scenario in CRASHES:
            r = run_episodes(kw, scenario, policy, args.episodes, 0)
            results[name][scenario] = {k: float(v.mean()) for k, v in r.items()}
    header = f"{'scenario':22s}" + "".join(f"{p:>34s}" for p in policies)
    print("\nmean reward | loss (uncovered + ADL) USD | capital locked USD, per episode")
    print(header)
    totals = {p: np.zeros(3) for p in policies}
    for scenario in CRASHES:
        row = f"{scenario:22s}"
        for p in policies:
            m = results[p][scenario]
            totals[p] += [m["reward"], m["loss_usd"], m["capital_usd"]]
            row += f"{m['reward']:>10.0f} {m['loss_usd']:>12.0f} {m['capital_usd']:>10.0f}"
        print(row)
    row = f"{'mean':22s}"
    for p in policies:
        t = totals[p] / len(CRASHES)
        row += f"{t[0]:>10.0f} {t[1]:>12.0f} {t[2]:>10.0f}"
    print(row)
    if args.json:
        payload = {
            "run_dir": str(args.run_dir),
            "episodes": args.episodes,
            "best_static": {"liquidation_fee_rate": fee, "mmr": mmr, "trading_fee_fund_share": tf},
            "search": [{"set": s, "mean_reward": r} for s, r in search],
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
