"""PPO-Lagrangian: PPO under a budget on the solvency cost, with a learned Lagrange multiplier.

The constrained problem (as in Safety-Gymnasium, OmniSafe and Safety-Starter-Agents): maximise
the reward subject to ``E[episode cost] <= budget``, where the cost is the environment's
``info["cost"]`` (:mod:`fundgym.envs.rewards`: the unweighted ``solvency`` term, socialised and
unrecovered losses plus ``adl_weight`` x deleveraged notional, in basis points of the episode's
initial open interest). A decision's cost is in bps of that one open interest, so an episode's
summed cost is its solvency loss in bps of open interest: the budget's unit, used as it comes.
The reward a constrained run trains on should not price the same loss again
(``configs/train/ppo_lagrangian.yaml`` sets ``env.reward.solvency: 0``).

The Lagrangian ``J_r - lambda (J_c - budget)`` is optimised by alternating:

* **the policy**, by PPO's clipped surrogate on the advantage ``(A_r - lambda A_c) / (1 + lambda)``
  (the ``1 + lambda`` keeps the surrogate's scale as lambda grows). ``A_r`` is the reward's GAE,
  standardised over the rollout when ``normalize_advantage``; ``A_c`` is the cost's GAE from a
  separate cost critic with its own ``cost_gae_lambda``, centred over the rollout (as the
  reference implementations do: a calm rollout then pushes the policy by reward alone) and
  measured in budgets (costs divided by the budget before anything else sees them), so the
  multiplier is a plain number: at lambda = 1 a cost advantage of one budget weighs as much as
  one standard deviation of reward advantage, whatever the budget;
* **the multiplier**, by projected gradient ascent after a rollout:
  ``lambda <- clip(lambda + multiplier_lr x (mean episode cost - budget), 0, multiplier_max)``,
  in bps of open interest (so ``multiplier_lr`` is per bps of overshoot). The mean is over the
  episodes ended since the last update, and the update waits until at least ``n_envs`` have
  ended: episodes that end early are the insolvent ones (``insolvency_frac``), and the
  exchanges' full-length episodes end together every ``horizon / n_steps`` rollouts, so a mean
  over one rollout's few early endings would count only the worst episodes.

:class:`PPOLagrangian` is SB3's :class:`~stable_baselines3.PPO` with three hooks, none of its
loops copied: a callback that runs at every environment step, before SB3 stores the step, reads
each exchange's ``info["cost"]`` into a :class:`CostRolloutBuffer` (with the cost critic's value,
and its bootstrap where an episode was truncated, as SB3 does for reward); after the rollout,
the cost's GAE and the multiplier's update; in :meth:`PPOLagrangian.train`, the cost critic's
regression on the cost returns, then PPO's own update on the combined advantage.

The cost critic is not part of the policy: a model directory's ``policy.pt`` holds PPO's
actor-critic exactly, so evaluation and export treat the actor as PPO's. The critic, its
optimiser and the multiplier are saved in a checkpoint's training state
(:meth:`PPOLagrangian._get_torch_save_params`), so ``--resume`` continues all three. (A resumed
run's exchanges start new episodes, as PPO's do: the costs of episodes in progress at the
checkpoint, and of those ended since the multiplier's last update, are not carried over.)

TensorBoard, every rollout: ``lagrangian/multiplier`` (after any update of it) and
``lagrangian/budget_bps``; at each update of the multiplier, ``lagrangian/episode_cost_bps``
(the mean it used); at each policy update (logged with the next rollout, as SB3's ``train/*``),
``lagrangian/cost_value_loss`` and ``lagrangian/cost_explained_variance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import explained_variance, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]


# ---------------------------------------------------------------- the three formulas ----


def gae(
    rewards: FloatArray,
    values: FloatArray,
    episode_starts: FloatArray,
    last_values: FloatArray,
    last_dones: FloatArray,
    gamma: float,
    gae_lambda: float,
) -> tuple[FloatArray, FloatArray]:
    """Generalised advantage estimates and TD(lambda) returns of one rollout.

    ``delta_t = r_t + gamma V(s_{t+1}) (1 - done_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma lambda (1 - done_{t+1}) A_{t+1}``, ``R_t = A_t + V(s_t)``, where
    ``done_{t+1}`` is ``episode_starts[t + 1]`` (the next state began a new episode) and, after the
    last step, ``last_dones`` with ``last_values`` the value of the state the rollout stopped in.

    Args:
        rewards: ``(n_steps, n_envs)`` the signal (reward or cost) of each step.
        values: ``(n_steps, n_envs)`` the critic's value of each step's state.
        episode_starts: ``(n_steps, n_envs)`` 1 where the step's state began an episode.
        last_values: ``(n_envs,)`` the value of the state after the last step.
        last_dones: ``(n_envs,)`` 1 where the last step ended an episode.
        gamma: Discount factor.
        gae_lambda: GAE's bias-variance trade-off (1: Monte Carlo, 0: one-step TD).

    Returns:
        The advantages and the returns, each ``(n_steps, n_envs)``.
    """
    advantages = np.zeros_like(values, dtype=np.float64)
    running = np.zeros(values.shape[1:], dtype=np.float64)
    next_values = np.asarray(last_values, dtype=np.float64)
    next_live = 1.0 - np.asarray(last_dones, dtype=np.float64)
    for t in range(len(values) - 1, -1, -1):
        delta = rewards[t] + gamma * next_values * next_live - values[t]
        running = delta + gamma * gae_lambda * next_live * running
        advantages[t] = running
        next_values = values[t]
        next_live = 1.0 - episode_starts[t]
    return advantages, advantages + values


def combined_advantages(
    reward_advantages: FloatArray,
    cost_advantages: FloatArray,
    multiplier: float,
    standardize_reward: bool,
) -> FloatArray:
    """The advantage PPO's surrogate uses: ``(A_r - lambda A_c) / (1 + lambda)``.

    ``A_r`` is standardised over the rollout when ``standardize_reward`` (PPO's
    ``normalize_advantage``, applied here to the whole rollout so that it happens before the
    combination); ``A_c`` is centred only, keeping its scale (budgets), so that the multiplier
    weighs a real cost, and a rollout without cost leaves the reward's direction alone.
    """
    a_r = np.asarray(reward_advantages, dtype=np.float64)
    if standardize_reward:
        a_r = (a_r - a_r.mean()) / (a_r.std() + 1e-8)
    a_c = np.asarray(cost_advantages, dtype=np.float64)
    a_c = a_c - a_c.mean()
    combined: FloatArray = (a_r - multiplier * a_c) / (1.0 + multiplier)
    return combined


def updated_multiplier(
    multiplier: float,
    episode_cost_bps: float,
    budget_bps: float,
    lr: float,
    max_value: float,
) -> float:
    """One projected gradient-ascent step of the multiplier on ``episode_cost - budget``.

    The Lagrangian's derivative in lambda is ``-(J_c - budget)``; ascending the dual raises lambda
    while the constraint is violated and lowers it while there is slack, never below 0 (the
    multiplier of an inequality constraint) nor above ``max_value`` (a bound on how far the
    cost may outweigh the reward while the critic is still learning).
    """
    return float(min(max(multiplier + lr * (episode_cost_bps - budget_bps), 0.0), max_value))


# ---------------------------------------------------------------- the rollout buffer ----


class CostRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer plus each step's cost, cost value and the cost's GAE.

    The step's cost and cost value are staged (:meth:`stage_cost`) by the algorithm's step
    callback before SB3 calls :meth:`add`, which stores them at the step's row.

    Args:
        buffer_size: Steps per environment in a rollout (``n_steps``).
        observation_space: As :class:`RolloutBuffer`.
        action_space: As :class:`RolloutBuffer`.
        device: As :class:`RolloutBuffer`.
        gae_lambda: The reward's GAE lambda.
        gamma: Discount factor (reward and cost).
        n_envs: Exchanges.
        cost_gae_lambda: The cost's GAE lambda.
    """

    costs: np.ndarray
    cost_values: np.ndarray
    cost_advantages: np.ndarray
    cost_returns: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        cost_gae_lambda: float = 0.95,
    ) -> None:
        """Allocate the arrays (see the class docstring)."""
        self.cost_gae_lambda = cost_gae_lambda
        self._staged: tuple[np.ndarray, np.ndarray] | None = None
        super().__init__(
            buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs
        )

    def reset(self) -> None:
        """Empty the buffer, cost arrays included."""
        shape = (self.buffer_size, self.n_envs)
        self.costs = np.zeros(shape, dtype=np.float32)
        self.cost_values = np.zeros(shape, dtype=np.float32)
        self.cost_advantages = np.zeros(shape, dtype=np.float32)
        self.cost_returns = np.zeros(shape, dtype=np.float32)
        self._staged = None
        super().reset()

    def stage_cost(self, cost: np.ndarray, cost_value: np.ndarray) -> None:
        """The next :meth:`add`'s cost (budgets, bootstrap included) and cost value."""
        self._staged = (cost, cost_value)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
    ) -> None:
        """Store a step as SB3 does, and its staged cost.

        Raises:
            RuntimeError: No cost was staged for this step (the step callback did not run).
        """
        if self._staged is None:
            raise RuntimeError("CostRolloutBuffer.add: no cost staged for this step")
        self.costs[self.pos], self.cost_values[self.pos] = self._staged
        self._staged = None
        super().add(obs, action, reward, episode_start, value, log_prob)

    def compute_cost_returns_and_advantage(
        self, last_cost_values: np.ndarray, dones: np.ndarray
    ) -> None:
        """The cost's GAE and returns, after the rollout (:func:`gae`)."""
        adv, ret = gae(
            self.costs,
            self.cost_values,
            self.episode_starts,
            last_cost_values,
            dones.astype(np.float64),
            self.gamma,
            self.cost_gae_lambda,
        )
        self.cost_advantages = adv.astype(np.float32)
        self.cost_returns = ret.astype(np.float32)


# ---------------------------------------------------------------- the cost critic ----


class CostCritic(th.nn.Module):
    """``V_c(s)``: the discounted cost to come, in budgets, from a (normalised) observation.

    An MLP of the policy's value-network shape, trained by its own Adam optimiser
    (``self.optimizer``) so that the policy's optimiser state is PPO's exactly.
    """

    def __init__(
        self,
        obs_dim: int,
        net_arch: list[int],
        activation_fn: type[th.nn.Module],
        learning_rate: float,
    ) -> None:
        """Build the layers and the optimiser."""
        super().__init__()
        layers: list[th.nn.Module] = []
        width = obs_dim
        for hidden in net_arch:
            layers += [th.nn.Linear(width, hidden), activation_fn()]
            width = hidden
        layers.append(th.nn.Linear(width, 1))
        self.net = th.nn.Sequential(*layers)
        self.optimizer = th.optim.Adam(self.parameters(), lr=learning_rate, eps=1e-5)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """The value of each row of ``obs`` (``(n,)``)."""
        out: th.Tensor = self.net(obs.flatten(start_dim=1)).squeeze(-1)
        return out


class _CostTap(BaseCallback):
    """Hands each step's infos to :meth:`PPOLagrangian._record_step` before SB3 stores it."""

    def _on_step(self) -> bool:
        model = self.model
        assert isinstance(model, PPOLagrangian)
        model._record_step(self.locals["infos"], self.locals["dones"])
        return True


# ---------------------------------------------------------------- the algorithm ----


class PPOLagrangian(PPO):
    """PPO with a Lagrange multiplier on the episode cost (see the module docstring).

    Args:
        policy: As :class:`~stable_baselines3.PPO` (``"MlpPolicy"``).
        env: As :class:`~stable_baselines3.PPO`; its infos carry ``cost`` every step.
        cost_budget_bps: The budget: mean episode cost, bps of open interest (> 0).
        cost_gae_lambda: GAE lambda of the cost advantage.
        multiplier_init: The multiplier's starting value.
        multiplier_lr: The multiplier's step per bps of mean episode cost over the budget.
        multiplier_max: The multiplier's upper bound.
        normalize_advantage: Standardise the reward advantage over each rollout.
        **kwargs: PPO's other arguments.
    """

    def __init__(
        self,
        policy: str | type[Any],
        env: Any,
        *,
        cost_budget_bps: float,
        cost_gae_lambda: float = 0.95,
        multiplier_init: float = 0.0,
        multiplier_lr: float = 1e-3,
        multiplier_max: float = 100.0,
        normalize_advantage: bool = True,
        **kwargs: Any,
    ) -> None:
        """Check the constraint's settings and build PPO with a cost buffer and critic."""
        if not cost_budget_bps > 0.0:
            raise ValueError(f"cost_budget_bps must be > 0, got {cost_budget_bps}")
        if not 0.0 <= multiplier_init <= multiplier_max:
            raise ValueError(
                f"multiplier_init must lie in [0, multiplier_max={multiplier_max}], "
                f"got {multiplier_init}"
            )
        self.cost_budget_bps = float(cost_budget_bps)
        self.multiplier_lr = float(multiplier_lr)
        self.multiplier_max = float(multiplier_max)
        self.multiplier_init = float(multiplier_init)
        # The reward advantage is standardised over the rollout before the combination, so
        # PPO's own per-minibatch normalisation is off.
        self.standardize_reward_advantage = normalize_advantage
        super().__init__(
            policy,
            env,
            normalize_advantage=False,
            rollout_buffer_class=CostRolloutBuffer,
            rollout_buffer_kwargs={"cost_gae_lambda": cost_gae_lambda},
            **kwargs,
        )

    def _setup_model(self) -> None:
        """PPO's model, then the cost critic and the multiplier (a tensor: checkpointed)."""
        super()._setup_model()
        pk = self.policy_kwargs
        arch = pk.get("net_arch", [64, 64])
        if isinstance(arch, dict):
            arch = arch.get("vf", [64, 64])
        obs_dim = int(np.prod(self.observation_space.shape or (1,)))
        self.cost_critic = CostCritic(
            obs_dim, list(arch), pk.get("activation_fn", th.nn.Tanh), self.lr_schedule(1.0)
        ).to(self.device)
        self.multiplier = th.tensor(self.multiplier_init, dtype=th.float64)
        self._episode_cost_bps = np.zeros(self.n_envs)
        self._ended_cost_bps: list[float] = []

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        """PPO's state plus the cost critic, its optimiser and the multiplier."""
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "cost_critic", "cost_critic.optimizer"], [*variables, "multiplier"]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """PPO's set-up; episode cost sums restart when the environments do."""
        fresh = reset_num_timesteps or self._last_obs is None
        out = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if fresh:
            self._episode_cost_bps = np.zeros(self.n_envs)
            self._ended_cost_bps = []
        return out

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        """The caller's callbacks, after :class:`_CostTap` (which must see each step first)."""
        if isinstance(callback, list):
            callback = CallbackList(callback)
        elif callback is not None and not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        chained = [_CostTap(), *([callback] if callback is not None else [])]
        return super()._init_callback(CallbackList(chained), progress_bar)

    def _cost_values(self, obs: np.ndarray) -> np.ndarray:
        """The cost critic's values of a batch of (normalised) observations."""
        with th.no_grad():
            x = th.as_tensor(np.asarray(obs), dtype=th.float32, device=self.device)
            return np.asarray(self.cost_critic(x).cpu().numpy(), dtype=np.float64)

    def _record_step(self, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        """Stage one step's cost and cost value; sum episode costs and keep the ended ones.

        An episode ended by truncation has the discounted cost critic's value of its last state
        added to its last cost, as SB3 adds the value's to the reward.
        """
        cost_bps = np.array([float(info["cost"]) for info in infos])
        self._episode_cost_bps += cost_bps
        cost = cost_bps / self.cost_budget_bps
        for i in np.flatnonzero(dones):
            info = infos[i]
            terminal = info.get("terminal_observation")
            if terminal is not None and info.get("TimeLimit.truncated", False):
                cost[i] += self.gamma * float(self._cost_values(terminal[None])[0])
            self._ended_cost_bps.append(float(self._episode_cost_bps[i]))
            self._episode_cost_bps[i] = 0.0
        assert self._last_obs is not None and not isinstance(self._last_obs, dict)
        buffer = self.rollout_buffer
        assert isinstance(buffer, CostRolloutBuffer)
        buffer.stage_cost(cost, self._cost_values(self._last_obs))

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """PPO's rollout, then the cost's GAE and the multiplier's update (logged)."""
        if not super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps):
            return False
        assert isinstance(rollout_buffer, CostRolloutBuffer)
        assert self._last_obs is not None and not isinstance(self._last_obs, dict)
        rollout_buffer.compute_cost_returns_and_advantage(
            self._cost_values(self._last_obs), np.asarray(self._last_episode_starts)
        )
        self._update_multiplier()
        return True

    def _update_multiplier(self) -> None:
        """Once ``n_envs`` episodes have ended since the last update, step the multiplier."""
        if len(self._ended_cost_bps) >= self.n_envs:
            episode_cost = float(np.mean(self._ended_cost_bps))
            self.multiplier.fill_(
                updated_multiplier(
                    float(self.multiplier),
                    episode_cost,
                    self.cost_budget_bps,
                    self.multiplier_lr,
                    self.multiplier_max,
                )
            )
            self.logger.record("lagrangian/episode_cost_bps", episode_cost)
            self._ended_cost_bps = []
        self.logger.record("lagrangian/multiplier", float(self.multiplier))
        self.logger.record("lagrangian/budget_bps", self.cost_budget_bps)

    def _train_cost_critic(self, buffer: CostRolloutBuffer) -> None:
        """Regress the cost critic on the rollout's cost returns (PPO's epochs and batches)."""
        update_learning_rate(
            self.cost_critic.optimizer, self.lr_schedule(self._current_progress_remaining)
        )
        obs = th.as_tensor(buffer.swap_and_flatten(buffer.observations), device=self.device)
        targets = th.as_tensor(buffer.cost_returns.swapaxes(0, 1).ravel(), device=self.device)
        losses = []
        for _ in range(self.n_epochs):
            order = th.randperm(len(targets), device=self.device)
            for start in range(0, len(targets), self.batch_size):
                rows = order[start : start + self.batch_size]
                loss = th.nn.functional.mse_loss(self.cost_critic(obs[rows]), targets[rows])
                self.cost_critic.optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                th.nn.utils.clip_grad_norm_(self.cost_critic.parameters(), self.max_grad_norm)
                self.cost_critic.optimizer.step()
                losses.append(loss.item())
        self.logger.record("lagrangian/cost_value_loss", float(np.mean(losses)))
        self.logger.record(
            "lagrangian/cost_explained_variance",
            float(explained_variance(buffer.cost_values.flatten(), buffer.cost_returns.flatten())),
        )

    def train(self) -> None:
        """Fit the cost critic, then PPO's update on the combined advantage."""
        buffer = self.rollout_buffer
        assert isinstance(buffer, CostRolloutBuffer)
        self._train_cost_critic(buffer)
        buffer.advantages = combined_advantages(
            buffer.advantages,
            buffer.cost_advantages,
            float(self.multiplier),
            self.standardize_reward_advantage,
        ).astype(np.float32)
        super().train()
