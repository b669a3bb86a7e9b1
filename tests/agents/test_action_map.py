"""Centred levers: a trained policy's action as a move from where the lever starts."""

from pathlib import Path

import numpy as np
import pytest

from fundgym.agents.action_map import ActionMap, action_map, start_positions
from fundgym.agents.config import ConfigError, load_config
from fundgym.agents.policies.runs import load_model
from fundgym.agents.policies.trained import TrainedPolicy
from fundgym.agents.training.sb3_env import FundGymVecEnv
from fundgym.agents.training.train import train
from fundgym.envs.controls import PARAMS
from tests.tiny_runs import ALL_NINE, TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"
CENTRED = "centred_levers=[alloc_stable, alloc_yield, alloc_volatile, alloc_hedge]"


def test_moves_from_the_start_by_hand():
    # Columns 1 (start +1, stable's logit) and 2 (start -1); column 0 passes through.
    amap = ActionMap(columns=(1, 2), start=(1.0, -1.0))
    action = np.array(
        [
            [0.3, 0.0, 0.0],  # action 0 holds both starts
            [-0.7, -0.25, 0.5],  # 1 - 0.5 = 0.5; -1 + 1 = 0
            [0.9, -1.0, 1.0],  # 1 - 2 = -1; -1 + 2 = 1: the far edge is reachable
            [-1.0, 0.5, -0.3],  # 1 + 1 -> clipped to 1; -1 - 0.6 -> clipped to -1
            [0.1, -0.6, 0.35],  # 1 - 1.2 = -0.2; -1 + 0.7 = -0.3
        ]
    )
    want = np.array(
        [
            [0.3, 1.0, -1.0],
            [-0.7, 0.5, 0.0],
            [0.9, -1.0, 1.0],
            [-1.0, 1.0, -1.0],
            [0.1, -0.2, -0.3],
        ]
    )
    got = amap(action)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert got is not action and action[1, 1] == -0.25  # the caller's array is left alone
    assert got.dtype == np.float64


def test_nothing_centred_is_the_same_object():
    action = np.array([[0.25, -0.5]], dtype=np.float32)
    assert ActionMap()(action) is action
    cfg = load_config(ROOT / "configs" / "train" / "sac.yaml")  # base.yaml centres nothing
    assert cfg.centred_levers == [] and action_map(cfg.env, cfg.centred_levers) == ActionMap()


def test_the_map_of_a_config_starts_at_the_levers_start():
    cfg = load_config(PPO, [*ALL_NINE, "centred_levers=[alloc_stable, mmr]", "env.fixed.mmr=0.05"])
    amap = action_map(cfg.env, cfg.centred_levers)
    start = start_positions({"mmr": 0.05})
    assert start["mmr"] == PARAMS["mmr"].to_position(0.05) and start["alloc_stable"] == 1.0
    mmr, stable = cfg.env.controlled.index("mmr"), cfg.env.controlled.index("alloc_stable")
    assert dict(zip(amap.columns, amap.start, strict=True)) == {
        mmr: start["mmr"],
        stable: 1.0,
    }
    assert amap.columns == tuple(sorted((mmr, stable)))


@pytest.mark.parametrize(
    "value",
    ["[alloc_volatile]", "[mmr, mmr]", "[margin]"],
)
def test_a_centred_lever_must_be_a_controlled_one(value):
    # The default config leaves the volatile bucket out; "margin" is no lever at all.
    with pytest.raises(ConfigError) as err:
        load_config(PPO, [f"centred_levers={value}"])
    text = str(err.value)
    assert "centred_levers = [" in text and "distinct levers of env.controlled" in text
    assert "'liquidation_fee_rate'" in text  # names what is allowed


def test_the_training_env_hands_the_environment_the_mapped_action():
    """Zero actions: centred, the fund stays all stable; uncentred, it moves toward a quarter
    in each bucket (the middle of the logits' range)."""
    weights = {}
    for label, extra in (("centred", [CENTRED]), ("plain", [])):
        cfg = load_config(PPO, [*ALL_NINE, *extra])
        env = FundGymVecEnv(
            2,
            action_map=action_map(cfg.env, cfg.centred_levers),
            n_accounts=32,
            controlled=cfg.env.controlled,
        )
        env.seed(0)
        env.reset()
        for _ in range(10):  # rate-limited: a position moves at most max_step a decision
            _, _, _, infos = env.step(np.zeros((2, len(cfg.env.controlled)), dtype=np.float32))
        weights[label] = infos[0]["params"]["alloc_stable"]
    assert weights["centred"] == pytest.approx(np.exp(3) / (np.exp(3) + 3 * np.exp(-3)))
    assert weights["plain"] == pytest.approx(0.25)


def test_a_trained_policy_acts_through_the_map(tmp_path):
    cfg = load_config(PPO, [*TINY_TRAIN, *ALL_NINE, CENTRED])
    train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    obs = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
    raw = load_model(run, run / "best", cfg).predict(obs)
    got = TrainedPolicy("run", run).act(obs)
    amap = action_map(cfg.env, cfg.centred_levers)
    np.testing.assert_array_equal(got, amap(raw))
    cols = list(amap.columns)
    assert not np.array_equal(got[:, cols], raw[:, cols])
    assert (got[:, cols] >= -1.0).all() and (got[:, cols] <= 1.0).all()
