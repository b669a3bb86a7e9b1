"""Train an agent from a config file: the run directory says exactly how its model was made.

:func:`train` builds the batched environment through the SB3 adapter (one ``(n_envs,
n_accounts)`` array program behind a ``VecMonitor`` and a ``VecNormalize``), trains PPO, SAC,
TD3, A2C or PPO-Lagrangian (:mod:`fundgym.agents.training.lagrangian`: PPO under a budget on
the episode's solvency cost) with the config's hyperparameters, and writes into the run
directory:

* ``config.yaml``: the resolved config (every default written out) and ``command.txt``;
* ``final/``: the model at the end, a model directory (:mod:`fundgym.agents.policies.runs`: weights
  as plain tensors, normalisation statistics as plain arrays, a manifest of their hashes);
* ``best/``: the best model by mean episode reward on the held-out evaluation scenarios
  (evaluation statistics frozen, same seeds at every evaluation; for PPO-Lagrangian the best
  within the cost budget, :func:`selection_key`), and ``evaluations.csv`` with every evaluation;
* ``checkpoints/step_<N>/``: what ``--resume`` continues from: a model directory plus the
  training state (``training_state.pt``: the optimisers, SAC's entropy coefficient,
  PPO-Lagrangian's cost critic and multiplier, and the update counter, tensors and numbers
  only) and, for off-policy algorithms, the replay buffer
  (``replay_buffer.npz``: plain arrays);
* ``tensorboard/``: SB3's logs plus ``rollout/ep_cost_mean`` and ``eval/*`` (PPO-Lagrangian:
  also ``lagrangian/*``, the multiplier, episode cost and budget), the resolved config as text
  (``config``) and the hyperparameters on TensorBoard's HParams tab;
* ``train_summary.json``: timesteps, wall time, the best evaluation.

Every model directory is written complete in a temporary sibling and renamed into place, so a
killed process never leaves weights without their statistics and loses at most one checkpoint
interval. ``--resume`` rebuilds the algorithm from ``config.yaml`` and loads the checkpoint's
tensors and arrays into it: nothing in a run directory is unpickled, by any command. It
keeps the evaluations recorded after the checkpoint (each one describes a model that was
saved as ``best/`` if it was the best) and evaluates next after the last one recorded, so
``evaluations.csv`` never holds a step twice; the next run also removes the temporaries a
killed one left (:func:`fundgym.agents.outputs.remove_stale_temps`). Resuming one's own run
from before model directories (pickled ``model.zip`` / ``vecnormalize.pkl``) first rewrites
it in this format: the one time fundgym reads a pickle, and only on ``--resume``.

Reproducibility: the model's seed seeds python, numpy and torch; the training exchanges get
seeds derived from it (exchange ``i``: ``base + i``, ``base`` drawn from a ``SeedSequence``
of the seed, so runs with seeds 0, 1, 2 do not share episode streams), and evaluation
exchanges get ``eval.seed + i``, streams no training episode uses. The same config and seed
give the same model (on the same machine and thread count).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import pickle
import platform
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from fundgym.agents.action_map import action_map
from fundgym.agents.config import (
    MarketsConfig,
    PPOLagrangianHyper,
    TrainConfig,
    check_scenarios,
    dump_config,
    env_kwargs,
    markets_env_kwargs,
    saved_config_matches,
)
from fundgym.agents.outputs import (
    naming_file,
    remove_stale_temps,
    write_bytes_atomic,
    write_text_atomic,
)
from fundgym.agents.policies.runs import (
    BEST,
    CHECKPOINTS,
    FINAL,
    MANIFEST,
    ModelFiles,
    RunError,
    legacy_files,
    plain_arrays,
    policy_kwargs,
    read_model_dir,
    write_model_dir,
)
from fundgym.agents.rollout import markets_training_env
from fundgym.agents.training.sb3_env import FundGymVecEnv
from fundgym.agents.training.sb3_markets_env import MarketsVecEnv
from fundgym.envs.scenarios import load_scenario


class RunDirError(ValueError):
    """The output directory cannot be used as asked (exists, or nothing to resume)."""


# ---------------------------------------------------------------- environments ----


def derived_seed(seed: int, stream: int) -> int:
    """A well-mixed base seed for stream ``stream`` of run seed ``seed`` (fits in 31 bits)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint32)
    return int(state[0] >> 1)


def make_vec_env(
    cfg: TrainConfig, n_envs: int, scenario: str | None = None, whole_episodes: bool = False
) -> Any:
    """The batched env as an SB3 ``VecEnv`` behind ``VecMonitor`` (raw episode returns).

    ``whole_episodes`` (a ``markets:`` config's evaluation): every exchange runs each episode
    to its own end, as one environment per exchange does, rather than on the batch's one
    clock, where an insolvent exchange ends its siblings' episodes.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    if cfg.markets is not None:
        return VecMonitor(_markets_vec_env(cfg.markets, n_envs, scenario, whole_episodes))
    amap = action_map(cfg.env, cfg.centred_levers)
    return VecMonitor(
        FundGymVecEnv(n_envs, action_map=amap, threads=cfg.env_threads, **env_kwargs(cfg, scenario))
    )


def _markets_vec_env(
    markets: MarketsConfig, n_envs: int, scenario: str | None, whole_episodes: bool
) -> Any:
    """``n_envs`` exchanges of the multi-market env (``training``: the config's scenario).

    For training, one batch of the multi-market simulator (:class:`MarketsVecEnv`: several
    times faster per exchange; the exchanges share a clock). With ``whole_episodes``, one env
    per exchange in SB3's ``DummyVecEnv``, each episode run to its own end. Either way
    ``seed(s)`` seeds exchange ``i`` with ``s + i`` at the next reset, and exchange ``i``'s
    episodes are the same until a sibling's insolvency ends the batch's.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    training = scenario in (None, "training")
    sc = load_scenario(markets.scenario if training else str(scenario))
    if not training:  # a named scenario runs as written, whatever trains on a sampler
        markets = markets.model_copy(update={"sampler": None})
    if not whole_episodes:
        return MarketsVecEnv(n_envs, sc, centred=markets.centred, **markets_env_kwargs(markets))
    make = functools.partial(markets_training_env, sc, markets)
    return DummyVecEnv([make for _ in range(n_envs)])


def wrap_normalize(cfg: TrainConfig, venv: Any, training: bool) -> Any:
    """``VecNormalize`` as the config asks (``training=False``: statistics frozen)."""
    from stable_baselines3.common.vec_env import VecNormalize

    n = cfg.normalize
    if not (n.observation or n.reward):
        return venv
    return VecNormalize(
        venv,
        training=training,
        norm_obs=n.observation,
        norm_reward=n.reward and training,
        clip_obs=n.clip_obs,
        clip_reward=n.clip_reward,
        gamma=cfg.hyperparameters.gamma,
    )


# ---------------------------------------------------------------- the model ----


def algorithm_class(algo: str) -> Any:
    """The class that trains ``algo``: stable-baselines3's, or :class:`PPOLagrangian`."""
    if algo == "ppo_lagrangian":
        from fundgym.agents.training.lagrangian import PPOLagrangian

        return PPOLagrangian
    import stable_baselines3 as sb3

    return getattr(sb3, algo.upper())


def build_model(cfg: TrainConfig, venv: Any, tensorboard_dir: str | None) -> Any:
    """The SB3 algorithm for ``cfg`` on ``venv`` (seeded by the caller)."""
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.noise import NormalActionNoise

    hp = cfg.hyperparameters.model_dump(exclude={"policy_kwargs"})
    kwargs: dict[str, Any] = {
        **hp,
        "policy_kwargs": policy_kwargs(cfg),
        "tensorboard_log": tensorboard_dir,
        "device": cfg.device,
        "verbose": 0,
        # Seeds torch before the network is built: torch's default generator starts from OS
        # entropy in this build, so weights initialised before seeding differed between
        # processes (the same config and seed gave different models in two shells).
        "seed": cfg.seed,
    }
    if cfg.algo == "td3":
        std = kwargs.pop("action_noise_std")
        dim = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), np.full(dim, std))
    model = algorithm_class(cfg.algo)(cfg.policy, venv, **kwargs)
    if tensorboard_dir is None:
        # Nothing to log to. Without a logger of its own, SB3 configures one at every learn()
        # and makes an empty SB3-<time> directory under the system's temp dir for it.
        model.set_logger(Logger(None, []))
    return model


def _seed_everything(model: Any, venv: Any, seed: int, stream: int) -> None:
    """Seed python/numpy/torch and the action space with ``seed``; the exchanges derived."""
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)
    model.action_space.seed(seed)
    venv.seed(derived_seed(seed, stream))


# ---------------------------------------------------------------- callbacks ----


@dataclass
class EvalResult:
    """Mean raw episode reward and solvency cost per evaluation scenario."""

    timesteps: int
    per_scenario: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def mean_reward(self) -> float:
        """Equal-weight mean over scenarios (each scenario's mean over its episodes)."""
        return float(np.mean([r for r, _ in self.per_scenario.values()]))

    @property
    def mean_cost(self) -> float:
        """Equal-weight mean solvency cost (bps of open interest, summed over the episode)."""
        return float(np.mean([c for _, c in self.per_scenario.values()]))


def selection_key(cfg: TrainConfig, result: EvalResult) -> tuple[float, float]:
    """How ``best/`` is chosen among evaluations: the highest key wins.

    The mean reward, for every algorithm but PPO-Lagrangian. Its reward leaves the solvency loss
    to the constraint (``ppo_lagrangian.yaml`` weighs it 0), so reward alone would pick the least
    solvent model: an evaluation within the cost budget beats any over it, those within rank by
    reward, and those over by how far over (the first element: minus the overshoot in bps).
    """
    hp = cfg.hyperparameters
    if isinstance(hp, PPOLagrangianHyper):
        return (-max(result.mean_cost - hp.cost_budget_bps, 0.0), result.mean_reward)
    return (0.0, result.mean_reward)


def evaluate_episodes(
    model: Any, venv: Any, n_episodes: int, seed: int, deterministic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One episode on each of ``n_episodes`` exchanges; raw returns and summed costs.

    ``venv`` steps ``n_episodes`` exchanges (seeded ``seed + i``); an exchange's later
    episodes (after its autoreset) are ignored, so every exchange counts exactly once.
    """
    venv.seed(seed)
    obs = venv.reset()
    returns = np.zeros(n_episodes)
    costs = np.zeros(n_episodes)
    active = np.ones(n_episodes, dtype=bool)
    while active.any():
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(action)
        raw = venv.get_original_reward() if hasattr(venv, "get_original_reward") else rewards
        for i, info in enumerate(infos):
            if active[i]:
                returns[i] += float(raw[i])
                costs[i] += float(info["cost"])
        active &= ~np.asarray(dones, dtype=bool)
    return returns, costs


def make_callbacks(
    cfg: TrainConfig,
    run_dir: Path,
    progress: bool,
    total_timesteps: int,
    start_timesteps: int,
) -> tuple[list[Any], Any]:
    """Episode statistics (and progress bar), checkpoints and the evaluation callback."""

    class EpisodeStats(BaseCallback):
        """Logs ``rollout/ep_cost_mean``; drives the progress bar (reward, solvency cost)."""

        def __init__(self) -> None:
            super().__init__()
            self.costs = np.zeros(cfg.n_envs)
            self.recent_cost: deque[float] = deque(maxlen=100)
            self.recent_reward: deque[float] = deque(maxlen=100)
            self.bar: Any = None
            self.last_eval: EvalResult | None = None

        def _on_training_start(self) -> None:
            if progress:
                from tqdm.auto import tqdm  # type: ignore[import-untyped]

                self.bar = tqdm(
                    total=total_timesteps,
                    initial=start_timesteps,
                    unit="step",
                    unit_scale=True,
                    dynamic_ncols=True,
                    desc=f"{cfg.algo} seed {cfg.seed}",
                )

        def _on_step(self) -> bool:
            infos = self.locals["infos"]
            for i, info in enumerate(infos):
                self.costs[i] += float(info.get("cost", 0.0))
                if "episode" in info:
                    self.recent_reward.append(float(info["episode"]["r"]))
                    self.recent_cost.append(float(self.costs[i]))
                    self.costs[i] = 0.0
            if self.bar is not None:
                self.bar.n = min(self.model.num_timesteps, total_timesteps)
                if self.n_calls % 8 == 0 or self.model.num_timesteps >= total_timesteps:
                    post = {}
                    if self.recent_reward:
                        post["ep_rew"] = f"{np.mean(self.recent_reward):.1f}"
                        post["cost"] = f"{np.mean(self.recent_cost):.2f}"
                    if self.last_eval is not None:
                        post["eval"] = f"{self.last_eval.mean_reward:.1f}"
                    self.bar.set_postfix(post, refresh=False)
                    self.bar.refresh()
            return True

        def _on_rollout_end(self) -> None:
            if self.recent_cost:
                self.logger.record("rollout/ep_cost_mean", float(np.mean(self.recent_cost)))

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.close()

    stats = EpisodeStats()

    class RecordConfig(BaseCallback):
        """Write the resolved config (text) and the hyperparameters (HParams) to TensorBoard."""

        def _on_training_start(self) -> None:
            from stable_baselines3.common.logger import HParam

            tensorboard_only = ("stdout", "log", "json", "csv")
            self.logger.record("config", config_markdown(cfg), exclude=tensorboard_only)
            self.logger.record(
                "hparams", HParam(hparams(cfg), dict.fromkeys(HPARAM_METRICS, 0.0)),
                exclude=tensorboard_only,
            )  # fmt: skip
            self.logger.dump(self.num_timesteps)

        def _on_step(self) -> bool:
            return True

    class Checkpoint(BaseCallback):
        """Every ``checkpoint.freq`` timesteps, an atomic checkpoint for ``--resume``."""

        def __init__(self) -> None:
            super().__init__()
            self.next_at = (start_timesteps // cfg.checkpoint.freq + 1) * cfg.checkpoint.freq

        def _on_step(self) -> bool:
            if self.model.num_timesteps >= self.next_at:
                save_checkpoint(self.model, cfg, run_dir, cfg.checkpoint.keep)
                while self.next_at <= self.model.num_timesteps:
                    self.next_at += cfg.checkpoint.freq
            return True

    class Evaluate(BaseCallback):
        """Evaluate on held-out scenarios every ``eval.freq`` timesteps; keep the best model."""

        def __init__(self) -> None:
            super().__init__()
            self.envs: dict[str, Any] = {}
            prior = _read_evaluations(run_dir)  # a resumed run keeps its best so far
            self.best = max((selection_key(cfg, r) for r in prior), default=(-np.inf, -np.inf))
            self.last_at = prior[-1].timesteps if prior else -1
            # Next after the last evaluation recorded, which may lie past the checkpoint a
            # resumed run continues from: no step is evaluated twice, and one due at or
            # before the checkpoint but never recorded (a kill in between) runs at once.
            self.next_at = (max(self.last_at, 0) // cfg.eval.freq + 1) * cfg.eval.freq

        def _env(self, scenario: str) -> Any:
            if scenario not in self.envs:
                venv = make_vec_env(cfg, cfg.eval.episodes, scenario, whole_episodes=True)
                self.envs[scenario] = wrap_normalize(cfg, venv, training=False)
            return self.envs[scenario]

        def run(self) -> EvalResult:
            from stable_baselines3.common.vec_env import sync_envs_normalization

            result = EvalResult(int(self.model.num_timesteps))
            for scenario in cfg.eval.scenarios:
                venv = self._env(scenario)
                sync_envs_normalization(self.training_env, venv)
                r, c = evaluate_episodes(
                    self.model, venv, cfg.eval.episodes, cfg.eval.seed, cfg.eval.deterministic
                )
                result.per_scenario[scenario] = (float(r.mean()), float(c.mean()))
                self.logger.record(f"eval/{scenario}/mean_reward", float(r.mean()))
                self.logger.record(f"eval/{scenario}/mean_cost", float(c.mean()))
            self.logger.record("eval/mean_reward", result.mean_reward)
            self.logger.record("eval/mean_cost", result.mean_cost)
            _append_evaluation(run_dir, result)
            self.last_at = result.timesteps
            stats.last_eval = result
            if selection_key(cfg, result) > self.best:
                self.best = selection_key(cfg, result)
                write_model_dir(run_dir / BEST, self.model, cfg)
            return result

        def _on_step(self) -> bool:
            if self.model.num_timesteps >= self.next_at:
                self.run()
                while self.next_at <= self.model.num_timesteps:
                    self.next_at += cfg.eval.freq
            return True

        def _on_training_end(self) -> None:
            done = self.model.num_timesteps >= total_timesteps
            if done and self.last_at < self.model.num_timesteps:
                self.run()

    evaluate = Evaluate()
    return [stats, RecordConfig(), Checkpoint(), evaluate], evaluate


# ---------------------------------------------------------------- TensorBoard ----


#: The scalars TensorBoard's HParams tab shows against the hyperparameters.
HPARAM_METRICS = ("eval/mean_reward", "eval/mean_cost", "rollout/ep_rew_mean")


def config_markdown(cfg: TrainConfig) -> str:
    """The resolved config as TensorBoard text: ``config.yaml`` in a fenced code block."""
    return f"```yaml\n{dump_config(cfg)}```"


def hparams(cfg: TrainConfig) -> dict[str, bool | str | float | None]:
    """Every setting of the resolved config, by dotted name, as TensorBoard's HParams take it.

    Numbers and strings stay as they are; booleans and lists become their YAML text (``true``,
    ``[training, oct_10_2025]``: torch would record a boolean as the number 1) and ``null``
    stays ``None`` (HParams skips it).
    """
    flat: dict[str, bool | str | float | None] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        elif isinstance(node, bool):
            flat[prefix[:-1]] = "true" if node else "false"
        elif isinstance(node, list):
            flat[prefix[:-1]] = yaml.safe_dump(node, default_flow_style=True).strip()
        else:
            flat[prefix[:-1]] = node

    walk("", yaml.safe_load(dump_config(cfg)))
    return flat


# ---------------------------------------------------------------- files ----


#: The columns of ``evaluations.csv``: one row per evaluation scenario per evaluation.
EVALUATION_COLUMNS = ("timesteps", "scenario", "mean_reward", "mean_cost")


def _append_evaluation(run_dir: Path, result: EvalResult) -> None:
    """Append one evaluation's rows (a failure names the file; a torn row: see below)."""
    path = run_dir / "evaluations.csv"
    new = not path.exists()
    with naming_file(path), path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(EVALUATION_COLUMNS)
        for scenario, (r, c) in result.per_scenario.items():
            w.writerow([result.timesteps, scenario, f"{r:.6f}", f"{c:.6f}"])


def _drop_torn_evaluation(run_dir: Path) -> None:
    """Remove a last row of ``evaluations.csv`` that a kill cut short, and say so.

    A process killed while appending leaves a last line without its newline, or with too few
    fields; the next row appended would be glued to it. ``--resume`` drops that line (the
    evaluation it belonged to runs again after the checkpoint) and prints one line saying so.
    """
    path = run_dir / "evaluations.csv"
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data:
        return
    body = data[:-1] if data.endswith(b"\n") else data
    start = body.rfind(b"\n") + 1  # the last line: data[start:]
    last = data[start:]
    fields = next(csv.reader([last.decode("utf-8", "replace").rstrip("\r\n")]), [])
    if last.endswith(b"\n") and len(fields) == len(EVALUATION_COLUMNS):
        return
    if start:
        write_bytes_atomic(path, data[:start])
    else:
        path.unlink()  # nothing complete, not even the header: the next evaluation rewrites it
    print(
        f"fundgym: dropped the torn last row of {path} "
        f"({last.decode('utf-8', 'replace').rstrip()!r}); continuing",
        file=sys.stderr,
    )


def _read_evaluations(run_dir: Path) -> list[EvalResult]:
    """The evaluations recorded in ``evaluations.csv``, by timestep.

    Raises:
        RunDirError: A row is not ``timesteps,scenario,mean_reward,mean_cost`` (naming the
            file and the line).
    """
    path = run_dir / "evaluations.csv"
    if not path.exists():
        return []
    by_step: dict[int, EvalResult] = {}
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        for fields in reader:
            if reader.line_num == 1 and tuple(fields) == EVALUATION_COLUMNS:
                continue
            try:
                t_text, scenario, r_text, c_text = fields
                t, r, c = int(t_text), float(r_text), float(c_text)
            except ValueError:
                raise RunDirError(
                    f"{path}, line {reader.line_num}: {','.join(fields)!r} is not a row of "
                    f"{','.join(EVALUATION_COLUMNS)}"
                ) from None
            by_step.setdefault(t, EvalResult(t)).per_scenario[scenario] = (r, c)
    return [by_step[t] for t in sorted(by_step)]


#: A checkpoint's training state: ``{"optimizers": {name: state_dict}, "variables": {name:
#: tensor}, "n_updates": int, "episode_num": int}`` (SB3's ``_get_torch_save_params`` minus the
#: policy, which is ``policy.pt``), read with ``torch.load(weights_only=True)``.
TRAINING_STATE = "training_state.pt"
#: An off-policy checkpoint's replay buffer: its filled rows, ``pos`` and ``full``, read with
#: ``np.load(allow_pickle=False)``.
REPLAY_BUFFER = "replay_buffer.npz"
#: The arrays of SB3's ``ReplayBuffer`` a checkpoint keeps (``next_observations`` is ``None``
#: when the buffer saves memory, and is then not kept).
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
_STATE_KEYS = ("optimizers", "variables", "n_updates", "episode_num")


def _write_file(path: Path, data: bytes) -> None:
    with naming_file(path):
        path.write_bytes(data)


def write_training_state(model: Any, path: Path) -> None:
    """Write ``model``'s optimisers, extra tensors and counters to ``path`` (tensors only)."""
    import torch

    names, variables = model._get_torch_save_params()
    params = model.get_parameters()
    state = {
        "optimizers": {n: params[n] for n in names if n != "policy"},
        "variables": {n: getattr(model, n).detach().cpu().clone() for n in variables},
        "n_updates": int(model._n_updates),
        "episode_num": int(model._episode_num),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    _write_file(path, buf.getvalue())


def write_replay_buffer(model: Any, path: Path) -> None:
    """Write the filled rows of ``model``'s replay buffer to ``path`` as plain arrays."""
    rb = model.replay_buffer
    n = rb.buffer_size if rb.full else rb.pos
    arrays = {k: getattr(rb, k)[:n] for k in _BUFFER_ARRAYS if getattr(rb, k, None) is not None}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, pos=np.int64(rb.pos), full=np.bool_(rb.full), **arrays)
    _write_file(path, buf.getvalue())


def _checkpoint_extras(model: Any) -> dict[str, Callable[[Path], object]]:
    """What a checkpoint holds besides the model directory's files, by name."""
    extras: dict[str, Callable[[Path], object]] = {
        TRAINING_STATE: functools.partial(write_training_state, model)
    }
    if getattr(model, "replay_buffer", None) is not None:
        extras[REPLAY_BUFFER] = functools.partial(write_replay_buffer, model)
    return extras


def save_checkpoint(model: Any, cfg: TrainConfig, run_dir: Path, keep: int) -> Path:
    """Write ``checkpoints/step_<N>/``: a model directory plus what ``--resume`` needs."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"step_{int(model.num_timesteps):012d}"
    final = write_model_dir(dest, model, cfg, _checkpoint_extras(model))
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _resume_file(ck: Path, saved: ModelFiles, name: str, why: str) -> bytes:
    """A checkpoint's resume file, as :func:`read_model_dir` read and checked it."""
    if name not in saved.contents:
        raise RunDirError(f"{ck / name}: missing from {ck / MANIFEST}; --resume needs it ({why})")
    return saved.contents[name]


def _restore_training_state(model: Any, weights: dict[str, Any], data: bytes, path: Path) -> None:
    """Load a checkpoint's policy weights and :data:`TRAINING_STATE` into a fresh ``model``."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location=model.device, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's advice (weights_only=False) is the hole
        raise RunDirError(
            f"{path}: holds objects other than tensors and numbers, and loading those could "
            "run code, so it is not read"
        ) from exc
    except Exception as exc:  # anything from zipfile: a damaged or foreign file
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise RunDirError(
            f"{path}: cannot be read as plain tensors ({type(exc).__name__}: {first_line})"
        ) from exc
    names, variables = model._get_torch_save_params()
    optimizers = set(names) - {"policy"}
    if (
        not isinstance(state, dict)
        or sorted(state) != sorted(_STATE_KEYS)
        or not isinstance(state["optimizers"], dict)
        or set(state["optimizers"]) != optimizers
        or not isinstance(state["variables"], dict)
        or set(state["variables"]) != set(variables)
        or not all(isinstance(t, torch.Tensor) for t in state["variables"].values())
        or not all(type(state[k]) is int and state[k] >= 0 for k in _STATE_KEYS[2:])
    ):
        raise RunDirError(
            f"{path}: expected {list(_STATE_KEYS)} with the optimisers {sorted(optimizers)} "
            f"and the tensors {sorted(variables)} of a {type(model).__name__}"
        )
    try:
        model.set_parameters({"policy": weights, **state["optimizers"]}, exact_match=True)
        for name, tensor in state["variables"].items():
            current = getattr(model, name)
            if current.shape != tensor.shape:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}, not {current.shape}")
            current.data = tensor.to(current.device)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(
            f"{path}: does not fit the {type(model).__name__} the run's config describes ({exc})"
        ) from exc
    model._n_updates = state["n_updates"]
    model._episode_num = state["episode_num"]


def _restore_replay_buffer(model: Any, data: bytes, path: Path) -> None:
    """Load :data:`REPLAY_BUFFER` into the fresh ``model``'s (same-sized) replay buffer."""
    rb = model.replay_buffer
    try:
        arrays = plain_arrays(data, path)
    except RunError as exc:
        raise RunDirError(str(exc)) from exc
    kept = [k for k in _BUFFER_ARRAYS if getattr(rb, k, None) is not None]
    if sorted(arrays) != sorted([*kept, "pos", "full"]):
        raise RunDirError(f"{path}: holds {sorted(arrays)}; expected {sorted(kept)}, pos, full")
    pos, full = arrays["pos"], arrays["full"]
    if (
        pos.shape != ()
        or pos.dtype.kind not in "iu"
        or not 0 <= int(pos) < rb.buffer_size
        or full.shape != ()
        or full.dtype != np.bool_
    ):
        raise RunDirError(
            f"{path}: pos must be an integer below the buffer size {rb.buffer_size} and full "
            "a boolean"
        )
    n = rb.buffer_size if bool(full) else int(pos)
    for name in kept:
        target, saved = getattr(rb, name), arrays[name]
        if saved.dtype != target.dtype or saved.shape != (n, *target.shape[1:]):
            raise RunDirError(
                f"{path}: {name} is a {saved.dtype} array of shape {saved.shape}; expected "
                f"{target.dtype} of shape {(n, *target.shape[1:])}"
            )
        target[:n] = saved
    rb.pos, rb.full = int(pos), bool(full)


def resume_model(cfg: TrainConfig, venv: Any, run_dir: Path, ck: Path, tensorboard: str) -> Any:
    """The algorithm ``cfg`` describes, continued from checkpoint ``ck`` without unpickling.

    The model is built from the config as a fresh run's is; the checkpoint's files, checked
    against its manifest, then fill in its state: normalisation statistics (into ``venv``),
    policy weights, optimisers and extra tensors, counters, the timestep and the replay buffer.

    Raises:
        RunDirError: A file is missing, changed, unreadable, or does not fit the model (the
            message names it and says how to fall back to the checkpoint before).
    """
    try:
        try:
            saved = read_model_dir(run_dir, ck, cfg)  # every part present, hashes matching
        except RunError as exc:
            raise RunDirError(str(exc)) from exc
        num_timesteps = saved.manifest.get("num_timesteps")
        if type(num_timesteps) is not int or num_timesteps < 0:
            raise RunDirError(f"{ck / MANIFEST}: num_timesteps must be a count of timesteps")
        if saved.stats is not None:
            saved.stats.restore(venv)
        model = build_model(cfg, venv, tensorboard)
        why = "the optimisers' state"
        state = _resume_file(ck, saved, TRAINING_STATE, why)
        _restore_training_state(model, saved.weights, state, ck / TRAINING_STATE)
        if getattr(model, "replay_buffer", None) is not None:
            why = f"the replay buffer of {cfg.algo.upper()}"
            buffer = _resume_file(ck, saved, REPLAY_BUFFER, why)
            _restore_replay_buffer(model, buffer, ck / REPLAY_BUFFER)
    except RunDirError as exc:
        raise RunDirError(f"{exc}; remove {ck} to resume from the checkpoint before") from exc
    model.num_timesteps = num_timesteps
    return model


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (with their manifest), oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / MANIFEST).is_file())


def _convert_pickled_run(cfg: TrainConfig, run_dir: Path) -> None:
    """Rewrite a run from before model directories (pickled files) as model directories.

    ``--resume`` of one's own run only: SB3 unpickles ``model.zip``, ``vecnormalize.pkl`` and
    ``replay_buffer.pkl`` here, which is why evaluation and export refuse such a run instead.
    New directories are written before the old files go, so a crash midway leaves a run the
    next resume finishes.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    cls = algorithm_class(cfg.algo)

    def load(model_zip: Path, stats_pkl: Path) -> Any:
        venv = make_vec_env(cfg, 1)
        if stats_pkl.is_file():
            venv = VecNormalize.load(str(stats_pkl), venv)
        return cls.load(model_zip, env=venv, device="cpu")

    root = run_dir / CHECKPOINTS
    for ck in sorted(root.glob("step_*")) if root.is_dir() else []:
        if (ck / MANIFEST).is_file() or not (ck / "model.zip").is_file():
            continue
        model = load(ck / "model.zip", ck / "vecnormalize.pkl")
        if (ck / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(ck / "replay_buffer.pkl")
        write_model_dir(ck, model, cfg, _checkpoint_extras(model))
    for zip_name, pkl_name, new in (
        ("best_model.zip", "best_vecnormalize.pkl", BEST),
        ("model.zip", "vecnormalize.pkl", FINAL),
    ):
        if (run_dir / zip_name).is_file():
            model = load(run_dir / zip_name, run_dir / pkl_name)
            write_model_dir(run_dir / new, model, cfg)
    for name in legacy_files(run_dir):
        (run_dir / name).unlink()


def _command_text(argv: list[str] | None) -> str:
    import shlex

    import stable_baselines3
    import torch

    cmd = shlex.join(argv) if argv else "(called from Python: fundgym.agents.training.train.train)"
    return (
        f"{cmd}\n"
        f"# cwd: {os.getcwd()}\n"
        f"# python {platform.python_version()}, torch {torch.__version__}, "
        f"stable-baselines3 {stable_baselines3.__version__}, numpy {np.__version__}\n"
        f"# started {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
    )


# ---------------------------------------------------------------- the job ----


@dataclass
class TrainResult:
    """What :func:`train` did (also written to ``train_summary.json``)."""

    run_dir: Path
    num_timesteps: int
    wall_s: float
    resumed_from: int | None
    best_eval_mean_reward: float | None
    last_eval: dict[str, tuple[float, float]]


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (see the module docstring for what it writes).

    Args:
        cfg: A validated config.
        run_dir: Output directory. Without ``resume`` it must not already hold a run.
        resume: Continue from the latest complete checkpoint in ``run_dir`` (whose
            ``config.yaml`` must equal ``cfg``); with none there, start afresh.
        progress: Show the progress bar.
        argv: The command line to record in ``command.txt``.

    Raises:
        RunDirError: ``run_dir`` already holds a run (without ``resume``), or its saved config
            differs from ``cfg`` (with ``resume``).
        ConfigError: A scenario ``cfg`` names (``env.scenario``, ``eval.scenarios``) is neither
            a library name nor a valid file; nothing has been written.
    """
    import torch

    out = Path(run_dir)
    resolved = dump_config(cfg)
    saved = out / "config.yaml"
    if saved.exists() and not resume:
        raise RunDirError(
            f"{out} already holds a run (config.yaml); pass --resume to continue it or "
            "choose another --out"
        )
    if resume and saved.exists() and not saved_config_matches(saved, cfg):
        raise RunDirError(
            f"{saved} differs from the config given; --resume continues a run only with the "
            "config that started it"
        )
    # Scenario names are files to the config schema; a typo must fail before the run dir exists.
    check_scenarios(cfg, "config")
    # What a killed run left; in the run dir (fundgym's own) a model directory caught between
    # the two renames of its replacement is put back from its complete previous version.
    remove_stale_temps(out.parent, out.name)
    for directory in (out, out / CHECKPOINTS):
        remove_stale_temps(directory, restore_old=True)
    out.mkdir(parents=True, exist_ok=True)
    if not (resume and saved.exists()):
        # A resumed run keeps its own file: the text its checkpoints' manifests hash, which may
        # predate a setting added since (saved_config_matches resolved it to ``cfg``).
        write_text_atomic(saved, resolved)
    write_text_atomic(out / "command.txt", _command_text(argv))
    if resume:
        _convert_pickled_run(cfg, out)
        _drop_torn_evaluation(out)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)

    checkpoints = list_checkpoints(out) if resume else []
    venv = wrap_normalize(cfg, make_vec_env(cfg, cfg.n_envs), training=True)
    tb = str(out / "tensorboard")
    start = time.perf_counter()
    resumed_from: int | None = None
    if checkpoints:
        model = resume_model(cfg, venv, out, checkpoints[-1], tb)
        resumed_from = int(model.num_timesteps)
        # Fresh, deterministic episode streams after the resume point.
        _seed_everything(model, venv, cfg.seed + resumed_from, 1 + resumed_from)
    else:
        model = build_model(cfg, venv, tb)
        _seed_everything(model, venv, cfg.seed, 0)
    done_steps = int(model.num_timesteps)
    remaining = max(0, cfg.total_timesteps - done_steps)
    callbacks, evaluator = make_callbacks(
        cfg, out, progress, cfg.total_timesteps, start_timesteps=done_steps
    )
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            callback=callbacks,
            reset_num_timesteps=resumed_from is None,
            tb_log_name="run",
        )
    if remaining > 0 or not (out / FINAL).is_dir():  # a finished run keeps its final model
        write_model_dir(out / FINAL, model, cfg)
    if not (out / BEST).is_dir() and evaluator.last_at < model.num_timesteps:
        evaluator.init_callback(model)  # no evaluation ran (e.g. nothing remained to train)
        evaluator.run()
    wall = time.perf_counter() - start
    evals = _read_evaluations(out)
    best = max(evals, key=functools.partial(selection_key, cfg), default=None)
    result = TrainResult(
        run_dir=out,
        num_timesteps=int(model.num_timesteps),
        wall_s=wall,
        resumed_from=resumed_from,
        best_eval_mean_reward=best.mean_reward if best is not None else None,
        last_eval=evals[-1].per_scenario if evals else {},
    )
    summary = {
        "num_timesteps": result.num_timesteps,
        "wall_s": round(wall, 3),
        "resumed_from": resumed_from,
        "best_eval_mean_reward": result.best_eval_mean_reward,
        "last_eval": {
            k: {"mean_reward": r, "mean_cost": c} for k, (r, c) in result.last_eval.items()
        },
        "algo": cfg.algo,
        "seed": cfg.seed,
        "python": sys.version.split()[0],
    }
    write_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2))
    return result
