"""Environment throughput: single env, batched twin, DummyVecEnv, and PPO's time in the env.

* ``single``: ``InsuranceFundEnv.step`` with random actions, env steps (decisions) per second.
* ``batched``: ``InsuranceFundVectorEnv`` with ``n_envs`` exchanges, env steps per second
  counting every exchange (each decision's ticks run as one compiled call).
* ``dummy``: ``n_envs`` single envs in stable-baselines3's ``DummyVecEnv``, same count.
* ``ppo``: PPO (64x64, ``n_steps`` 32, batch 1,024, torch on one thread) trained on the SB3
  adapter for a fixed number of steps; the share of wall time spent inside ``step_wait``.

Every env runs 1,024 accounts on the training sampler by default (1-day episodes, decisions
every 10 minutes, each decision 10 one-minute ticks, the population every 5 minutes).
``threads`` goes to the batched envs built (their exchanges on that many threads).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _rate(fn: Callable[[int], None], steps: int, repeats: int, per_call: int) -> dict[str, float]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(steps)
        rates.append(steps * per_call / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def time_env(
    n_envs: int,
    n_accounts: int,
    steps: int,
    repeats: int,
    threads: int = 1,
    dummy: bool = True,
) -> dict[str, Any]:
    """Env steps per second of the single env, the batched twin and (optionally) DummyVecEnv."""
    from fundgym.envs.exchange_env import InsuranceFundEnv, InsuranceFundVectorEnv

    # One exchange has nothing to spread over threads: only the batched env takes them.
    single = InsuranceFundEnv(n_accounts=n_accounts)
    batched = InsuranceFundVectorEnv(num_envs=n_envs, n_accounts=n_accounts, threads=threads)
    single.reset(seed=0)
    batched.reset(seed=0)
    assert batched.core.sim is not None
    rng = np.random.default_rng(0)
    shape = single.action_space.shape
    assert shape is not None

    def run_single(n: int) -> None:
        for _ in range(n):
            _, _, te, tr, _ = single.step(rng.uniform(-1, 1, shape))
            if te or tr:
                single.reset()

    def run_batched(n: int) -> None:
        for _ in range(n):
            batched.step(rng.uniform(-1, 1, (n_envs, *shape)))

    run_batched(1)  # compiles on first use
    out: dict[str, Any] = {
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "threads": batched.core.sim.threads,  # the simulator's (capped at numba's threads)
        "single": _rate(run_single, steps, repeats, 1),
        "batched": _rate(run_batched, steps, repeats, n_envs),
    }
    if dummy:
        from stable_baselines3.common.vec_env import DummyVecEnv

        venv = DummyVecEnv([lambda: InsuranceFundEnv(n_accounts=n_accounts) for _ in range(n_envs)])
        venv.seed(0)
        venv.reset()

        def run_dummy(n: int) -> None:
            for _ in range(n):
                venv.step(rng.uniform(-1, 1, (n_envs, *shape)))

        out["dummy"] = _rate(run_dummy, steps, repeats, n_envs)
        out["batched_over_dummy"] = out["batched"]["median"] / out["dummy"]["median"]
    return out


#: PPO's rollout length in the share's run (the simulator issue's configuration): ``learn``
#: steps the env in whole rollouts of this many decisions.
PPO_N_STEPS = 32


def time_ppo(
    n_envs: int,
    n_accounts: int,
    total_timesteps: int,
    threads: int = 1,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Share of PPO's wall time spent stepping the environment.

    The configuration the simulator issue names: SB3 PPO, ``MlpPolicy`` 64x64, ``n_steps`` 32,
    batch 1,024, torch on one thread (the training default's shape, whose ``n_envs`` exchanges
    are stepped as one batch); the env's exchanges on ``threads`` threads. ``env_kwargs``
    (environment settings, default none: the environment's own) is for bounds such as
    ``benchmarks/share_without_restarts.py``'s; the result counts the decisions stepped
    (``decisions``, whole rollouts) and the episodes that ended during ``learn``
    (``episodes_ended``), each of which restarted an exchange.
    """
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_ppo(n_envs, n_accounts, total_timesteps, threads, env_kwargs or {})
    finally:  # the caller's torch as it was (a test process goes on training)
        torch.set_num_threads(torch_threads)


def _time_ppo(
    n_envs: int, n_accounts: int, total_timesteps: int, threads: int, env_kwargs: dict[str, Any]
) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from fundgym.agents.training.sb3_env import FundGymVecEnv

    # The threads go to the env itself: set as FUNDGYM_THREADS only around the constructor,
    # they never reached the simulator, which is built at the first reset (every two-thread
    # figure before 2026-12-02, PPO's and the batched rate's, ran the env on one thread).
    venv = FundGymVecEnv(n_envs, n_accounts=n_accounts, threads=threads, **env_kwargs)
    venv.seed(0)
    venv.reset()
    sim = venv.venv.core.sim
    assert sim is not None
    spent = [0.0]
    decisions = [0]
    ended = [0]
    inner = venv.step_wait

    def timed() -> Any:
        start = time.perf_counter()
        result = inner()
        spent[0] += time.perf_counter() - start
        decisions[0] += 1
        ended[0] += int(np.count_nonzero(result[2]))
        return result

    venv.step_wait = timed  # type: ignore[method-assign]
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=PPO_N_STEPS,
        batch_size=1024,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
        device="cpu",
        verbose=0,
    )
    # No logger: SB3 would make an empty SB3-<time> directory under the temp dir every run.
    model.set_logger(Logger(None, []))
    start = time.perf_counter()
    model.learn(total_timesteps=total_timesteps)
    wall = time.perf_counter() - start
    return {
        "n_envs": n_envs,
        "n_accounts": n_accounts,
        "total_timesteps": total_timesteps,
        "threads": sim.threads,  # what the simulator runs on (capped at numba's threads)
        "wall_s": wall,
        "env_s": spent[0],
        "env_share": spent[0] / wall,
        "decisions": decisions[0],
        "episodes_ended": ended[0],
    }


def markets_scenario(n_markets: int) -> Any:
    """``alt_contagion``'s quiet day with ``n_markets`` markets: BTC and ``n - 1`` alike alts.

    Each market after BTC is the file's ETH (beta 1.15, its own noise, 0.4 of BTC's depth),
    renamed, with an equal share of 60% of open interest; no market crashes, so every N times
    the same kind of tick (the decision's cost, not a cascade's).
    """
    from fundgym.envs.resources import SCENARIO_DIR
    from fundgym.envs.scenarios import scenario_from_dict
    from fundgym.envs.schema import load_yaml

    data = load_yaml((SCENARIO_DIR / "alt_contagion.yaml").read_text())
    eth = dict(data["markets"][1])
    markets = [data["markets"][0]]
    for i in range(1, n_markets):
        m = dict(eth)
        m["name"] = f"M{i}"
        m["oi_share"] = 0.6 / (n_markets - 1)
        markets.append(m)
    data["markets"] = markets
    data["name"] = f"bench_{n_markets}_markets"
    return scenario_from_dict(data, f"bench_{n_markets}_markets")


def time_markets_env(
    markets: list[int], n_accounts: int, steps: int, repeats: int, n_envs: int = 1
) -> dict[str, Any]:
    """``MarketsInsuranceFundEnv`` decisions per second for each market count, random actions.

    Each row: the count, decisions/s (median, min, max of ``repeats`` runs of ``steps``
    decisions after one warm-up decision), milliseconds per decision, and that cost per market.
    With ``n_envs`` > 1 each row also times ``MarketsInsuranceFundVectorEnv`` with that many
    exchanges (``batch``: exchange-decisions/s, the same statistics, milliseconds per
    exchange-decision and the speed-up over one env per exchange).
    """
    from gymnasium.vector import AutoresetMode

    from fundgym.envs.markets_env import MarketsInsuranceFundEnv, MarketsInsuranceFundVectorEnv

    rows = []
    for n in markets:
        env = MarketsInsuranceFundEnv(markets_scenario(n), n_accounts=n_accounts)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        env.step(rng.uniform(-1, 1, env.action_space.shape))  # compile, warm caches

        def run(k: int, env: Any = env, rng: Any = rng) -> None:
            for _ in range(k):
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
                if term or trunc:
                    env.reset(seed=int(rng.integers(1 << 30)))

        r = _rate(run, steps, repeats, 1)
        ms = 1e3 / r["median"]
        row: dict[str, Any] = {
            "markets": n,
            **r,
            "ms_per_decision": ms,
            "ms_per_decision_per_market": ms / n,
        }
        if n_envs > 1:
            venv = MarketsInsuranceFundVectorEnv(
                n_envs,
                markets_scenario(n),
                n_accounts=n_accounts,
                autoreset_mode=AutoresetMode.SAME_STEP,
            )
            venv.reset(seed=0)
            shape = (n_envs, venv.core.action_dim)
            venv.step(rng.uniform(-1, 1, shape))

            def run_batch(k: int, venv: Any = venv, rng: Any = rng, shape: Any = shape) -> None:
                for _ in range(k):  # same-step autoreset: an ended episode restarts inside
                    venv.step(rng.uniform(-1, 1, shape))

            b = _rate(run_batch, steps, repeats, n_envs)
            ms_b = 1e3 / b["median"]
            row["batch"] = {**b, "n_envs": n_envs, "ms_per_decision": ms_b, "speedup": ms / ms_b}
        rows.append(row)
    return {
        "accounts": n_accounts,
        "steps": steps,
        "repeats": repeats,
        "n_envs": n_envs,
        "rows": rows,
    }
