"""fundgym by id in clients nobody on this project wrote: rl-baselines3-zoo and Gymnasium's API.

stable-baselines3 by id (``PPO("MlpPolicy", id)``, ``make_vec_env``) is tested in
tests/agents/test_sb3_env.py and by the README's example, and the vector conventions in full
(every mode, reset masks, ``_key`` masks) in tests/envs/test_vector_conventions.py; here, what
a user does first with the public names.
"""

import shlex
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml
from torch import nn

import fundgym
from fundgym.agents.config import DEFAULT_TRAIN_CONFIG, NormalizeConfig, load_config
from fundgym.envs.config import make_config
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.resources import CONFIG_DIR
from tests.readme import EXAMPLES, README

ZOO_FILE = CONFIG_DIR / "zoo" / "ppo.yml"
ZOO = yaml.safe_load(ZOO_FILE.read_text())[fundgym.ENV_ID]

# Small, fast environments for the Gymnasium checks: one-hour episodes are 6 decisions.
SMALL = {"scenario": "calm", "n_accounts": 64, "horizon_minutes": 60}


def test_the_zoo_file_is_fundgym_trains_default_in_the_zoos_format():
    cfg = load_config(DEFAULT_TRAIN_CONFIG)
    hyper = cfg.hyperparameters.model_dump()
    assert make_config(**ZOO["env_kwargs"]) == cfg.env
    for key in ("learning_rate", "gamma", "gae_lambda", "clip_range", "ent_coef", "vf_coef",
                "max_grad_norm", "n_epochs", "batch_size"):  # fmt: skip
        assert ZOO[key] == hyper[key], key
    assert ZOO["n_envs"] * ZOO["n_steps"] == cfg.n_envs * hyper["n_steps"]  # steps per update
    assert (ZOO["n_timesteps"], ZOO["policy"]) == (cfg.total_timesteps, cfg.policy)
    # `normalize: true` is VecNormalize's defaults: observations and rewards, clipped at 10
    assert ZOO["normalize"] is True
    assert cfg.normalize == NormalizeConfig(observation=True, reward=True, clip_obs=10.0)
    # the zoo evaluates policy_kwargs with torch.nn in scope
    net = eval(ZOO["policy_kwargs"], {"nn": nn})
    assert net["net_arch"] == hyper["policy_kwargs"]["net_arch"]
    assert net["activation_fn"].__name__.lower() == hyper["policy_kwargs"]["activation_fn"]
    assert net["log_std_init"] == hyper["policy_kwargs"]["log_std_init"]


def test_rl_zoo3_trains_by_id_with_the_readme_line(tmp_path):
    from stable_baselines3 import PPO

    command = shlex.split(EXAMPLES["rl_zoo3"].replace("\\\n", " "))
    assert command[:3] == ["python", "-m", "rl_zoo3.train"]
    # the README's line, at toy size: 64 steps of 2 copies of the shipped environment
    tiny = ["-n", "64", "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:64",
            "n_epochs:1", "--seed", "0", "-f", str(tmp_path)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, *command[1:], *tiny],
        cwd=README.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (run,) = (tmp_path / "ppo").glob("fundgym-InsuranceFund-v0_*")
    assert (run / "fundgym-InsuranceFund-v0" / "vecnormalize.pkl").is_file()  # normalize: true
    model = PPO.load(run / "fundgym-InsuranceFund-v0.zip", device="cpu")
    obs, _ = fundgym.make(**{**ZOO["env_kwargs"], "n_accounts": 64}).reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    # the file's env_kwargs reached the environment: eight levers, not the env's default nine
    assert action.shape == (len(ZOO["env_kwargs"]["controlled"]),) == (8,)


def test_fundgym_make_is_gymnasium_make_by_id():
    ours, theirs = fundgym.make(**SMALL), gym.make(fundgym.ENV_ID, **SMALL)
    assert ours.spec is not None and ours.spec.id == fundgym.ENV_ID
    np.testing.assert_array_equal(ours.reset(seed=3)[0], theirs.reset(seed=3)[0])


def test_fundgym_make_vec_is_the_batched_twin():
    envs = fundgym.make_vec(2, **SMALL)
    assert isinstance(envs.unwrapped, InsuranceFundVectorEnv)
    obs, _ = envs.reset(seed=3)
    # exchange i of a batch seeded 3 is the single environment seeded 3 + i
    for i in range(2):
        np.testing.assert_array_equal(obs[i], fundgym.make(**SMALL).reset(seed=3 + i)[0])


def test_a_plain_gymnasium_loop_with_gymnasiums_wrappers():
    env = gym.wrappers.RecordEpisodeStatistics(fundgym.make(**SMALL))
    env.action_space.seed(0)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    assert steps == 6  # 60 minutes of 10-minute decisions
    assert info["episode"]["l"] == 6


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
def test_gymnasiums_vector_api_and_its_wrappers(mode):
    envs = gym.make_vec(fundgym.ENV_ID, num_envs=2, vectorization_mode=mode, **SMALL)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.wrappers.vector.NormalizeObservation(envs)
    )
    envs.action_space.seed(0)
    envs.reset(seed=0)
    for _ in range(6):
        _, _, terminated, truncated, info = envs.step(envs.action_space.sample())
    # both one-hour episodes end at the sixth decision, and the wrapper records them
    assert (terminated | truncated).all()
    assert info["_episode"].all() and (info["episode"]["l"] == 6).all()
