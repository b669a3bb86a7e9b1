"""The SB3 adapter: SB3's checker, seeding, same-step autoreset, and a tiny PPO run."""

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from fundgym.agents.training.sb3_env import FundGymVecEnv
from fundgym.envs.exchange_env import InsuranceFundEnv

SMALL = {"scenario": "venue_flash_wick", "n_accounts": 96}  # 18 decisions per episode


def test_sb3_env_checker_passes_on_the_single_env():
    sb3_check_env(InsuranceFundEnv(**SMALL), warn=True)


def test_adapter_steps_seeds_and_autoresets_like_single_envs():
    venv = FundGymVecEnv(2, **SMALL)
    venv.seed(4)
    obs = venv.reset()
    singles = [InsuranceFundEnv(**SMALL) for _ in range(2)]
    np.testing.assert_array_equal(
        obs, np.stack([s.reset(seed=4 + i)[0] for i, s in enumerate(singles)])
    )
    acts = (
        np.random.default_rng(0)
        .uniform(-1, 1, (20, 2, venv.action_space.shape[0]))
        .astype(np.float32)
    )
    for k in range(20):
        obs, rew, dones, infos = venv.step(acts[k])
        for i, s in enumerate(singles):
            o, r, te, tr, _ = s.step(acts[k, i])
            assert np.float32(r) == rew[i]
            if te or tr:
                assert dones[i]
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] == (tr and not te)
                o, _ = s.reset()
            np.testing.assert_array_equal(obs[i], o)
        assert "cost" in infos[0] and "reward_components" in infos[0]


def test_ppo_learns_a_few_steps_on_the_adapter():
    venv = FundGymVecEnv(2, **SMALL)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (2, venv.action_space.shape[0])
    assert np.isfinite(action).all()
