"""The SB3 adapter and SB3 by id: SB3's checker, seeding, same-step autoreset, tiny PPO runs."""

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

import fundgym
from fundgym.agents.training.sb3_env import FundGymVecEnv
from fundgym.envs.exchange_env import InsuranceFundEnv

SMALL = {"scenario": "venue_flash_wick", "n_accounts": 96}  # 18 decisions per episode
TINY = {"scenario": "venue_flash_wick", "n_accounts": 64, "horizon_minutes": 60.0}  # 6


def test_sb3_env_checker_passes_on_the_single_env():
    sb3_check_env(InsuranceFundEnv(**SMALL), warn=True)


def test_adapter_steps_seeds_and_autoresets_like_single_envs():
    venv = FundGymVecEnv(2, **SMALL)
    assert venv.venv.metadata["autoreset_mode"].value == "SameStep"
    venv.seed(4)
    obs = venv.reset()
    singles = [InsuranceFundEnv(**SMALL) for _ in range(2)]
    np.testing.assert_array_equal(
        obs, np.stack([s.reset(seed=4 + i)[0] for i, s in enumerate(singles)])
    )
    assert venv.reset_infos == [{"scenario": "venue_flash_wick"}] * 2
    acts = (
        np.random.default_rng(0)
        .uniform(-1, 1, (20, 2, venv.action_space.shape[0]))
        .astype(np.float32)
    )
    ended = 0
    for k in range(20):
        obs, rew, dones, infos = venv.step(acts[k])
        for i, s in enumerate(singles):
            o, r, te, tr, info = s.step(acts[k, i])
            assert np.float32(r) == rew[i]
            # The step's own info, the ended step's included (not the reset's values).
            assert {key: infos[i][key] for key in info} == info, f"step {k} env {i}"
            if te or tr:
                ended += 1
                assert dones[i]
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] == (tr and not te)
                assert venv.reset_infos[i] == {"scenario": "venue_flash_wick"}
                o, _ = s.reset()
            np.testing.assert_array_equal(obs[i], o)
    assert ended == 2


def test_adapter_records_rgb_frames_for_video():
    venv = FundGymVecEnv(2, render_mode="rgb_array", **TINY)
    assert venv.render_mode == "rgb_array"
    venv.reset()
    venv.step(np.zeros((2, venv.action_space.shape[0]), dtype=np.float32))
    frames = venv.get_images()
    assert len(frames) == 2 and all(f.shape == (400, 640, 3) for f in frames)
    assert venv.render().shape == (800, 640, 3)  # SB3 tiles the two frames


def test_ppo_learns_a_few_steps_on_the_adapter():
    venv = FundGymVecEnv(2, **SMALL)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (2, venv.action_space.shape[0])
    assert np.isfinite(action).all()


def test_ppo_by_id():
    # SB3 makes the environment with gym.make(id, render_mode="rgb_array"): the defaults
    # (1,024 accounts, training scenarios) take a few seconds here.
    model = PPO("MlpPolicy", fundgym.ENV_ID, n_steps=8, batch_size=8, n_epochs=1, device="cpu")
    assert model.get_env().render_mode == "rgb_array"
    model.learn(16)
    assert model.num_timesteps == 16


def test_make_vec_env_by_id_with_env_kwargs():
    venv = make_vec_env(fundgym.ENV_ID, n_envs=2, seed=0, env_kwargs=TINY)
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(16)  # across the 6-decision episodes' ends
    assert venv.get_attr("config")[0].n_accounts == 64
    assert venv.render().shape == (800, 640, 3)
