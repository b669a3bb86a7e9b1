"""``MarketsInsuranceFundVectorEnv``: the multi-market env's exchanges stepped as one batch."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fundgym  # noqa: F401 (registers the environments)
from fundgym.envs import MARKETS_ENV_ID
from fundgym.envs.markets_env import (
    MarketsInsuranceFundEnv,
    MarketsInsuranceFundVectorEnv,
    first_episode_seed,
)
from fundgym.envs.scenarios import Scenario, load_scenario
from tests.multi_market import short_alt_contagion


def _twins(n: int, sc: Scenario, seed: int, **kw: Any) -> list[MarketsInsuranceFundEnv]:
    envs = [MarketsInsuranceFundEnv(sc, **kw) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    return envs


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("fund_mode", ["shared", "segmented"])
def test_exchange_i_is_the_env_seeded_seed_plus_i_across_episodes(
    mode: AutoresetMode, fund_mode: str
) -> None:
    """Three exchanges, each its own random levers, over 30 decisions (two episode ends).

    Observations, rewards, flags and every ``info`` value equal the one-exchange envs', bit
    for bit; each new episode's first observation is the twin's next ``reset()``.
    """
    sc, n = short_alt_contagion(), 3
    kw: dict[str, Any] = {"n_accounts": 150, "fund_mode": fund_mode}
    venv = MarketsInsuranceFundVectorEnv(n, sc, autoreset_mode=mode, **kw)
    obs, info = venv.reset(seed=7)
    twins = _twins(n, sc, 7, **kw)
    first = np.stack([MarketsInsuranceFundEnv(sc, **kw).reset(seed=7 + i)[0] for i in range(n)])
    np.testing.assert_array_equal(obs, first)
    assert info["seed"].shape == (n,) and info["_seed"].all()
    rng = np.random.default_rng(0)
    ends = 0
    pending = False  # next-step: the step after an end restarts
    for _ in range(30):
        action = rng.uniform(-1, 1, (n, venv.core.action_dim)).astype(np.float32)
        obs, reward, term, trunc, info = venv.step(action)
        if pending:
            assert not (term | trunc).any() and not reward.any()
            np.testing.assert_array_equal(obs, np.stack([t.reset()[0] for t in twins]))
            pending = False
            continue
        for i, twin in enumerate(twins):
            o, r, te, tr, ti = twin.step(action[i])
            last = info["final_obs"][i] if "final_obs" in info else obs[i]
            np.testing.assert_array_equal(last, o)
            assert (reward[i], term[i], trunc[i]) == (r, te, tr)
            step_info = info.get("final_info", info)
            assert step_info["cost"][i] == ti["cost"]
            assert step_info["user_loss_usd"][i] == ti["user_loss_usd"]
            np.testing.assert_array_equal(step_info["fund_pots_usd"][i], ti["fund_pots_usd"])
            np.testing.assert_array_equal(
                step_info["levers"]["market_mmr_mult"][i], ti["levers"]["market_mmr_mult"]
            )
        if (term | trunc).any():
            ends += 1
            assert trunc.all()  # the horizon: every exchange at once
            if mode is AutoresetMode.SAME_STEP:
                np.testing.assert_array_equal(obs, np.stack([t.reset()[0] for t in twins]))
            else:
                pending = True
    assert ends == 2


def test_each_exchange_holds_its_own_haircuts_and_margins() -> None:
    """10 Oct across markets with collateral assets: per-exchange haircuts reach the margin."""
    sc = load_scenario("oct_10_2025_multi")
    kw: dict[str, Any] = {"n_accounts": 120}
    venv = MarketsInsuranceFundVectorEnv(2, sc, **kw)
    venv.reset(seed=3)
    twins = _twins(2, sc, 3, **kw)
    action = np.tile(venv.default_action(), (2, 1))
    action[1, -venv.core.n_assets :] = 1.0  # exchange 1: a 90% haircut on every asset
    for _ in range(3):
        obs, reward, *_ = venv.step(action)
        for i, twin in enumerate(twins):
            o, r, *_ = twin.step(action[i])
            np.testing.assert_array_equal(obs[i], o)
            assert reward[i] == r
    assert venv.sim.haircut.shape == (2, venv.core.n_assets)
    np.testing.assert_allclose(venv.sim.haircut[1], 0.9, rtol=1e-9)
    assert (venv.sim.haircut[0] < 0.9).all()


def test_an_insolvent_exchange_ends_the_batchs_episode() -> None:
    """No fund and a 0.01% threshold: the first insolvency terminates its exchange and
    truncates the others at the same decision; the next step starts every exchange anew."""
    venv = MarketsInsuranceFundVectorEnv(
        3, short_alt_contagion(), n_accounts=150, fund_to_oi_frac=0.0, insolvency_frac=1e-4
    )
    venv.reset(seed=3)
    zero = np.tile(venv.default_action(), (3, 1))
    decisions = 0
    for _ in range(12):
        _, _, term, trunc, info = venv.step(zero)
        decisions += 1
        if term.any():
            break
    assert term.any() and decisions < 12  # before the horizon
    np.testing.assert_array_equal(trunc, ~term)
    assert (info["uncovered_usd"][term] > 1e-4 * venv.core.oi0[term]).all()
    _, reward, term, trunc, info = venv.step(zero)
    assert not (term | trunc).any() and not reward.any() and "seed" in info
    assert venv.core.sim.t == 0


def test_make_vec_builds_the_batch_and_infos_are_masked_arrays() -> None:
    venv = gym.make_vec(
        MARKETS_ENV_ID,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        scenario=short_alt_contagion(),
        n_accounts=100,
    )
    assert isinstance(venv.unwrapped, MarketsInsuranceFundVectorEnv)
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (2, *venv.single_observation_space.shape)
    _, reward, _, _, info = venv.step(venv.action_space.sample())
    assert reward.shape == (2,) and info["cost"].shape == (2,) and info["_cost"].all()
    m = venv.unwrapped.core.n_markets
    assert info["levers"]["market_mmr_mult"].shape == (2, m)
    assert info["reward_components"]["solvency"].shape == (2,)
    np.testing.assert_array_equal(info["cost"], info["reward_components"]["solvency"])


def test_bad_use_is_refused_by_name() -> None:
    venv = MarketsInsuranceFundVectorEnv(2, short_alt_contagion(), n_accounts=100)
    with pytest.raises(RuntimeError, match="call reset"):
        venv.step(np.zeros((2, venv.core.action_dim)))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(num_envs, action_dim\)"):
        venv.step(np.zeros((venv.core.action_dim, 2)))
    with pytest.raises(ValueError, match="share one clock"):
        venv.reset(options={"reset_mask": np.array([True, False])})
    with pytest.raises(ValueError, match=r"one seed per exchange \(2\)"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(RuntimeError, match="SAME_STEP"):
        venv.step_list(np.zeros((2, venv.core.action_dim)))
    with pytest.raises(ValueError, match="autoreset_mode = 'later'"):
        MarketsInsuranceFundVectorEnv(
            2, short_alt_contagion(), n_accounts=100, autoreset_mode="later"
        )
    off = MarketsInsuranceFundVectorEnv(
        1, short_alt_contagion(60.0), n_accounts=100, autoreset_mode=AutoresetMode.DISABLED
    )
    off.reset(seed=0)
    for _ in range(6):  # the horizon: 6 decisions of 10 minutes
        _, _, _, trunc, _ = off.step(np.zeros((1, off.core.action_dim)))
    assert trunc.all()
    with pytest.raises(RuntimeError, match="DISABLED"):
        off.step(np.zeros((1, off.core.action_dim)))


def test_first_episode_seed_is_the_seed_a_seeded_reset_draws() -> None:
    """Scoring resets a batch on it to play the one-exchange env's episode in every exchange."""
    env = MarketsInsuranceFundEnv(short_alt_contagion(), n_accounts=50)
    for seed in (0, 7, 9000):
        _, info = env.reset(seed=seed)
        assert info["seed"] == first_episode_seed(seed)
