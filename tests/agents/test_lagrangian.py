"""PPO-Lagrangian: the multiplier's update, the cost's GAE, the combined advantage (worked by
hand), and a tiny run from the packaged YAML that logs the multiplier and resumes it.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer

from fundgym.agents.config import ConfigError, PPOLagrangianHyper, load_config
from fundgym.agents.policies.runs import policy_kwargs
from fundgym.agents.training.lagrangian import (
    CostRolloutBuffer,
    PPOLagrangian,
    combined_advantages,
    gae,
    updated_multiplier,
)
from fundgym.agents.training.train import (
    TRAINING_STATE,
    EvalResult,
    list_checkpoints,
    make_vec_env,
    resume_model,
    selection_key,
    train,
    wrap_normalize,
)
from fundgym.envs.resources import TRAIN_CONFIG_DIR
from tests.tiny_runs import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
CONFIG = TRAIN_CONFIG_DIR / "ppo_lagrangian.yaml"


# ---------------------------------------------------------------- the multiplier ----


@pytest.mark.parametrize(
    ("multiplier", "cost_bps", "expected"),
    [
        (0.5, 3500.0, 1.0),  # 500 bps over: + 1e-3 x 500
        (1.0, 2800.0, 0.8),  # 200 bps under: - 1e-3 x 200
        (0.1, 0.0, 0.0),  # 0.1 - 3.0 would be negative: held at 0
        (19.9, 5000.0, 20.0),  # 19.9 + 2.0 held at the maximum
        (0.0, 3000.0, 0.0),  # on budget: unchanged
    ],
)
def test_multiplier_moves_by_lr_times_the_overshoot_within_its_bounds(
    multiplier, cost_bps, expected
):
    got = updated_multiplier(multiplier, cost_bps, budget_bps=3000.0, lr=1e-3, max_value=20.0)
    assert got == pytest.approx(expected, abs=1e-12)


def test_the_multiplier_waits_for_n_envs_episodes_and_uses_their_mean():
    """Early endings (insolvent episodes) alone must not move it: they are the worst ones."""
    from stable_baselines3.common.logger import Logger

    cfg = load_config(CONFIG, ["n_envs=2", "env.n_accounts=32", "hyperparameters.n_steps=4",
                               "hyperparameters.batch_size=8"])  # fmt: skip
    venv = make_vec_env(cfg, 2)
    model = PPOLagrangian("MlpPolicy", venv, n_steps=4, batch_size=8, cost_budget_bps=100.0,
                          multiplier_init=1.0, multiplier_lr=0.01, device="cpu")  # fmt: skip
    model.set_logger(Logger(None, []))
    model._last_obs = venv.reset()
    zeros, n_actions = torch.zeros(2), venv.action_space.shape[0]

    def step(costs: list[float], dones: list[bool]) -> None:
        model._record_step([{"cost": c} for c in costs], np.array(dones))
        actions = np.zeros((2, n_actions))
        model.rollout_buffer.add(model._last_obs, actions, np.zeros(2), np.zeros(2), zeros, zeros)
        model._update_multiplier()

    step([10.0, 20.0], [True, False])  # exchange 0's episode ends at 10 bps: 1 of 2
    assert model.multiplier.item() == 1.0
    step([5.0, 30.0], [False, True])  # exchange 1's at 20 + 30 = 50: mean 30, 70 under budget
    assert model.multiplier.item() == pytest.approx(1.0 + 0.01 * (30.0 - 100.0))
    step([400.0, 0.0], [True, False])  # 5 + 400 bps: 1 of 2 again, no move
    assert model.multiplier.item() == pytest.approx(0.3)
    # The staged costs are in budgets (cost / 100 bps).
    np.testing.assert_allclose(model.rollout_buffer.costs[:3], [[0.1, 0.2], [0.05, 0.3], [4, 0]])


# ---------------------------------------------------------------- the cost's GAE ----

# Two exchanges, three steps, gamma = lambda = 0.5. Exchange 0 runs one episode through the
# rollout; exchange 1's episode ends after step 1 (a new one starts at step 2) and again after
# step 2 (the rollout's last step). Columns are exchanges.
COSTS = np.array([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
VALUES = np.array([[0.5, 0.5], [1.0, 1.0], [0.25, 0.25]])
STARTS = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
LAST_VALUES = np.array([1.0, 1.0])
LAST_DONES = np.array([0.0, 1.0])
# Exchange 0: delta_2 = 2 + 0.5 x 1 - 0.25 = 2.25 = A_2; delta_1 = 0 + 0.5 x 0.25 - 1 = -0.875,
# A_1 = -0.875 + 0.25 x 2.25 = -0.3125; delta_0 = 1 + 0.5 x 1 - 0.5 = 1, A_0 = 1 + 0.25 x
# -0.3125 = 0.921875. Exchange 1: no bootstrap past an episode's end: A_2 = 2 - 0.25 = 1.75,
# A_1 = 0 - 1 = -1, A_0 = 1 + 0.5 x 1 - 0.5 + 0.25 x -1 = 0.75.
ADVANTAGES = np.array([[0.921875, 0.75], [-0.3125, -1.0], [2.25, 1.75]])


def test_gae_of_a_hand_made_rollout():
    adv, ret = gae(COSTS, VALUES, STARTS, LAST_VALUES, LAST_DONES, gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv, ADVANTAGES, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ret, ADVANTAGES + VALUES, rtol=0, atol=1e-12)


def spaces():
    from gymnasium.spaces import Box

    return Box(-1.0, 1.0, (1,), dtype=np.float32), Box(-1.0, 1.0, (1,), dtype=np.float32)


def test_the_cost_buffer_stores_staged_costs_and_computes_their_gae():
    obs_space, act_space = spaces()
    buf = CostRolloutBuffer(3, obs_space, act_space, "cpu", 0.5, 0.5, 2, cost_gae_lambda=0.5)
    for t in range(3):
        buf.stage_cost(COSTS[t], VALUES[t])
        zeros = torch.zeros(2)
        buf.add(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), STARTS[t], zeros, zeros)
    buf.compute_cost_returns_and_advantage(LAST_VALUES, LAST_DONES.astype(bool))
    np.testing.assert_allclose(buf.cost_advantages, ADVANTAGES, rtol=0, atol=1e-6)
    np.testing.assert_allclose(buf.cost_returns, ADVANTAGES + VALUES, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="no cost staged"):
        buf.add(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), STARTS[0], zeros, zeros)


def test_the_cost_gae_is_the_reward_gae_of_sb3_on_the_same_signal():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    starts = (rng.random((8, 3)) < 0.3).astype(np.float64)
    last_values, last_dones = rng.normal(size=3), np.array([True, False, True])
    obs_space, act_space = spaces()
    sb3 = RolloutBuffer(8, obs_space, act_space, "cpu", gae_lambda=0.9, gamma=0.97, n_envs=3)
    for t in range(8):
        sb3.add(np.zeros((3, 1)), np.zeros((3, 1)), rewards[t], starts[t],
                torch.as_tensor(values[t]), torch.zeros(3))  # fmt: skip
    sb3.compute_returns_and_advantage(torch.as_tensor(last_values), last_dones)
    adv, ret = gae(rewards, values, starts, last_values, last_dones, 0.97, 0.9)
    np.testing.assert_allclose(adv, sb3.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, sb3.returns, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the combined advantage ----


def test_combined_advantage_is_reward_minus_lambda_cost_over_one_plus_lambda():
    a_r = np.array([1.0, 2.0, 3.0, 4.0])
    a_c = np.array([0.0, 0.0, 0.0, 4.0])  # centred: [-1, -1, -1, 3]
    # Unstandardised: lambda 0 is the reward advantage; lambda 3: (a_r - 3 [-1, -1, -1, 3]) / 4.
    np.testing.assert_allclose(combined_advantages(a_r, a_c, 0.0, False), a_r)
    np.testing.assert_allclose(combined_advantages(a_r, a_c, 3.0, False), [1, 1.25, 1.5, -1.25])
    # Standardised reward advantage: (a_r - 2.5) / sqrt(1.25) = [-3, -1, 1, 3] / sqrt(5).
    z = np.array([-3.0, -1.0, 1.0, 3.0]) / np.sqrt(5.0)
    expected = (z - np.array([-1.0, -1.0, -1.0, 3.0])) / 2.0
    np.testing.assert_allclose(combined_advantages(a_r, a_c, 1.0, True), expected, atol=1e-7)
    # A rollout without cost: the cost advantage is constant, centred to 0, and the reward's
    # direction is kept (scaled by 1 / (1 + lambda)).
    flat = np.full(4, 0.7)
    np.testing.assert_allclose(combined_advantages(a_r, flat, 4.0, False), a_r / 5.0)


# ---------------------------------------------------------------- config ----


def test_the_packaged_config_trains_ppo_lagrangian_without_the_solvency_reward():
    cfg = load_config(CONFIG)
    hp = cfg.hyperparameters
    assert cfg.algo == "ppo_lagrangian" and isinstance(hp, PPOLagrangianHyper)
    assert cfg.env.reward.solvency == 0.0
    assert (hp.cost_budget_bps, hp.multiplier_init, hp.multiplier_max) == (3000.0, 0.5, 20.0)
    assert hp.n_steps == 32 and hp.batch_size == 1024  # the rest is ppo.yaml's


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hyperparameters.cost_budget_bps=0", "hyperparameters.cost_budget_bps = 0: Input "
         "should be greater than 0"),
        ("hyperparameters.multiplier_lr=-1", "hyperparameters.multiplier_lr = -1: Input should "
         "be greater than 0"),
        ("hyperparameters.cost_gae_lambda=1.5", "hyperparameters.cost_gae_lambda = 1.5: Input "
         "should be less than or equal to 1"),
        ("hyperparameters.multiplier_init=30", "hyperparameters.multiplier_init = 30.0: at most "
         "multiplier_max = 20.0"),
        ("hyperparameters.multiplier_max=true", "hyperparameters.multiplier_max = True: a "
         "number (float), not true/false"),
    ],
)  # fmt: skip
def test_bad_constraint_settings_are_refused_naming_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, [override])
    assert f"{CONFIG}: {message}" in str(err.value)


def test_cli_bad_constraint_setting_exits_2_and_ppo_refuses_the_budget(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fundgym.agents.cli", "train", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    bad = run("--config", str(CONFIG), "--set", "hyperparameters.cost_budget_bps=-5",
              "--out", str(tmp_path / "a"))  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "hyperparameters.cost_budget_bps = -5: Input should be greater than 0" in bad.stderr
    ppo = run("--set", "hyperparameters.cost_budget_bps=10", "--out", str(tmp_path / "b"))
    assert ppo.returncode == 2 and "hyperparameters.cost_budget_bps = 10: unknown key" in ppo.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_best_model_is_the_best_reward_within_the_budget():
    """The reward of a constrained run leaves the loss out: reward alone would pick the
    least solvent model."""

    def result(reward: float, cost_bps: float) -> EvalResult:
        return EvalResult(0, {"training": (reward, cost_bps)})

    lag, ppo = load_config(CONFIG), load_config(ROOT / "configs" / "train" / "ppo.yaml")
    within, richer_within = result(-10.0, 2999.0), result(-5.0, 3000.0)
    over, further_over = result(50.0, 3100.0), result(90.0, 4000.0)
    ranked = sorted(
        [over, within, further_over, richer_within], key=lambda r: selection_key(lag, r)
    )
    assert ranked == [further_over, over, within, richer_within]
    assert selection_key(lag, over) == (-100.0, 50.0)
    assert max([over, within], key=lambda r: selection_key(ppo, r)) is over  # PPO: reward


# ---------------------------------------------------------------- a tiny run ----

# 4 exchanges x 64 accounts, one-hour episodes (6 decisions), 16-step rollouts: every rollout
# ends episodes, so the multiplier moves every rollout. A budget of 1 bps with a small lr keeps
# the multiplier between its bounds (a 0 or 20 would not show the update at work).
TINY = [*TINY_TRAIN, "env.n_accounts=64", "hyperparameters.cost_budget_bps=1",
        "hyperparameters.multiplier_lr=1e-5", "hyperparameters.multiplier_init=0.25"]  # fmt: skip


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for log_dir in sorted((run_dir / "tensorboard").iterdir()):
        events = EventAccumulator(str(log_dir))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny PPO-Lagrangian run from the packaged YAML: 256 steps, checkpoints at
    128 and 256."""
    out = tmp_path_factory.mktemp("lag") / "run"
    train(load_config(CONFIG, TINY), out, progress=False)
    return out


def test_a_tiny_run_logs_the_multiplier_cost_and_budget_every_rollout(tiny_run):
    logged = scalars(tiny_run)
    rollouts = [64, 128, 192, 256]  # 16 steps x 4 exchanges each
    assert [s for s, _ in logged["lagrangian/budget_bps"]] == rollouts
    assert {v for _, v in logged["lagrangian/budget_bps"]} == {1.0}
    costs = dict(logged["lagrangian/episode_cost_bps"])
    multipliers = dict(logged["lagrangian/multiplier"])
    assert sorted(costs) == sorted(multipliers) == rollouts
    # Each rollout's multiplier is the previous one plus lr x (that rollout's cost - budget).
    previous = 0.25
    for step in rollouts:
        expected = min(max(previous + 1e-5 * (costs[step] - 1.0), 0.0), 20.0)
        assert multipliers[step] == pytest.approx(expected, rel=1e-5)
        previous = multipliers[step]
    assert multipliers[256] != 0.25  # it moved
    assert "lagrangian/cost_value_loss" in logged


def test_the_model_directory_holds_ppos_actor_critic_alone(tiny_run):
    """Evaluation and export rebuild PPO's policy: the cost critic must not be in it."""
    cfg = load_config(tiny_run / "config.yaml")
    weights = torch.load(tiny_run / "final" / "policy.pt", weights_only=True)
    venv = make_vec_env(cfg, 1)
    policy = PPO.policy_aliases["MlpPolicy"](
        venv.observation_space, venv.action_space, lambda _: 0.0, **policy_kwargs(cfg)
    )
    policy.load_state_dict(weights, strict=True)


def test_resume_restores_the_multiplier_and_the_cost_critic_and_trains_on(tiny_run, tmp_path):
    cfg = load_config(tiny_run / "config.yaml")
    first = list_checkpoints(tiny_run)[0]  # step 128: taken mid-rollout, before its update
    saved = torch.load(first / TRAINING_STATE, weights_only=True)
    assert sorted(saved["optimizers"]) == ["cost_critic", "cost_critic.optimizer",
                                           "policy.optimizer"]  # fmt: skip
    multiplier_at_64 = dict(scalars(tiny_run)["lagrangian/multiplier"])[64]
    assert saved["variables"]["multiplier"].item() == pytest.approx(multiplier_at_64, rel=1e-6)

    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    model = resume_model(cfg, venv, tiny_run, first, None)
    assert isinstance(model, PPOLagrangian) and model.num_timesteps == 128
    assert model.multiplier.item() == saved["variables"]["multiplier"].item() != 0.25
    for name, tensor in saved["optimizers"]["cost_critic"].items():
        assert torch.equal(model.cost_critic.state_dict()[name], tensor), name
    live = model.cost_critic.optimizer.state_dict()["state"]
    for i, state in saved["optimizers"]["cost_critic.optimizer"]["state"].items():
        assert torch.equal(live[i]["exp_avg"], state["exp_avg"])

    # Continue from step 128 in a copy whose later checkpoint is gone: the first multiplier
    # the resumed run logs is the checkpoint's, moved by that rollout's cost.
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    for ck in list_checkpoints(out)[1:]:
        shutil.rmtree(ck)
    shutil.rmtree(out / "tensorboard")
    result = train(cfg, out, resume=True, progress=False)
    assert result.resumed_from == 128 and result.num_timesteps == 256
    logged = scalars(out)
    costs = dict(logged["lagrangian/episode_cost_bps"])
    multipliers = dict(logged["lagrangian/multiplier"])
    assert sorted(multipliers) == [192, 256]
    expected = saved["variables"]["multiplier"].item() + 1e-5 * (costs[192] - 1.0)
    assert multipliers[192] == pytest.approx(expected, rel=1e-5)
