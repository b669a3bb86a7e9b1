"""Export a trained policy to ONNX: raw observations in, parameter targets in natural units out.

:func:`export_onnx` turns a run directory written by :func:`fundgym.agents.training.train.train`
into one
``.onnx`` file that needs neither torch nor stable-baselines3 to run. The graph holds, in order:

1. the run's observation normalisation (``VecNormalize``'s statistics, saved as plain arrays:
   ``(obs - mean) / sqrt(var + eps)``, clipped to ``±clip_obs``, computed in float64 as SB3
   does; absent when the run did not normalise observations);
2. the deterministic policy: the Gaussian mean of the actor network clipped to [-1, 1] for
   PPO and A2C, the tanh-squashed actor output for SAC and TD3 (what ``model.predict(obs,
   deterministic=True)`` returns);
3. the map from action units to natural units (:mod:`fundgym.envs.controls`).

Input ``observation``: ``(batch, 32)`` float32, the raw environment observation
(:data:`fundgym.envs.exchange_env.OBS_NAMES`, already clipped to ±10 by the environment).
Outputs, both ``(batch, n_controlled)`` float32 in the order of the run's ``env.controlled``:

* ``action``: target positions in action units [-1, 1], what the environment's ``step`` takes;
* ``params``: the same targets in natural units (see :func:`export_onnx`).

The run's model is rebuilt from its config and plain tensors and checked against its manifest
(:mod:`fundgym.agents.policies.runs`); nothing in the run directory is unpickled. Before anything is
written the export is checked with onnxruntime against that stable-baselines3 policy
(:func:`reference_outputs`) on real and random observations; it fails unless the largest
absolute difference is below :data:`TOLERANCE`. The file is written atomically, and its
``metadata_props`` say what it is (:data:`SCHEMA_VERSION`): parameter names, units and scales,
observation names, the algorithm, the model files, the run's config and the check's result.

A multi-market run (a ``markets:`` config, ``fundgym/MarketsInsuranceFund-v0``) exports the
same graph over its own layouts (:class:`Columns`): the environment's
``observation_names()`` in, one output column per ``action_names()`` entry (``lever`` or
``lever[MARKET]``; the shared fund's allocation logits as their buckets' weights), the
actions centred on the scenario's defaults when ``markets.centred``.

The torch exporter used is the TorchScript-based one (``dynamo=False``): torch 2.13 still
ships it (deprecated), and it needs no extra package; the network is a plain MLP, which it
traces exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fundgym.agents.action_map import (
    CENTRED_SPAN,
    ActionMap,
    action_map,
    centred_on,
    start_positions,
)
from fundgym.agents.config import (
    POLICY_ALGO,
    ConfigError,
    TrainConfig,
    env_kwargs,
    load_config,
)
from fundgym.agents.outputs import write_bytes_atomic
from fundgym.agents.policies import run_config_file
from fundgym.agents.policies.runs import (
    BEST,
    FINAL,
    STATS,
    WEIGHTS,
    LoadedModel,
    NormStats,
    RunError,
    load_model,
    model_dir,
)
from fundgym.envs import ENV_ID, MARKETS_ENV_ID
from fundgym.envs.controls import (
    ALLOCATION,
    ALLOCATION_SHARPNESS,
    BUCKETS,
    PARAMS,
    allocation_weights,
)
from fundgym.envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv
from fundgym.envs.levers import CONTROLLABLE, LEVERS, Lever

if TYPE_CHECKING:
    import onnx
    import torch

SCHEMA_VERSION = "1"
INPUT_NAME = "observation"
OUTPUT_NAMES = ("action", "params")
#: The largest absolute difference (action units and natural units) the check accepts.
TOLERANCE = 1e-4
OPSET = 17

#: The model directory of each choice of ``model``.
MODEL_DIRS: dict[str, str] = {"best": BEST, "final": FINAL}

#: What one unit of each ``params`` column is: the lever's unit
#: (:data:`fundgym.envs.levers.LEVERS`); an allocation column holds its bucket's weight, not the
#: logit the lever moves.
UNITS: dict[str, str] = {
    name: (
        f"fraction of the fund in the {name.removeprefix('alloc_')} bucket"
        if name in ALLOCATION
        else LEVERS[name].unit
    )
    for name in CONTROLLABLE
}


class ExportError(ValueError):
    """The run cannot be exported (missing or unreadable files) or the export fails its check."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it matches the stable-baselines3 model."""

    path: Path
    input_name: str
    output_names: tuple[str, ...]
    max_abs_diff: float
    n_checked: int
    n_obs: int = len(OBS_NAMES)


# ---------------------------------------------------------------- the run ----


@dataclass(frozen=True)
class Columns:
    """What the graph's input and output columns are: the environment's layouts.

    Attributes:
        obs_names: The observation's columns (the graph's input).
        names: The action's columns, each a lever (``name`` or ``name[MARKET]``).
        levers: Each action column's lever; ``None`` for an allocation logit, whose
            ``params`` column is its bucket's weight.
        logits: Per bucket (:data:`BUCKETS` order) where its allocation logit comes from: an
            action column (``int``) or a constant position (``float``; the run does not
            control it); the buckets the fund may not hold are not listed.
        amap: The network's action -> the environment's target positions.
        environment: The environment the run acts on (its Gymnasium id).
    """

    obs_names: tuple[str, ...]
    names: tuple[str, ...]
    levers: tuple[Lever | None, ...]
    logits: dict[str, int | float]
    amap: ActionMap
    environment: str


def one_market_columns(cfg: TrainConfig) -> Columns:
    """The columns of a one-market run (``env.controlled``, :data:`OBS_NAMES`)."""
    controlled = tuple(cfg.env.controlled)
    fixed = _allocation_logits(cfg)
    held = _held(cfg)
    logits: dict[str, int | float] = {}
    for bucket, name in zip(BUCKETS, ALLOCATION, strict=True):
        if bucket in held:
            logits[bucket] = controlled.index(name) if name in controlled else fixed[name]
    return Columns(
        obs_names=OBS_NAMES,
        names=controlled,
        levers=tuple(None if n in ALLOCATION else PARAMS[n] for n in controlled),
        logits=logits,
        amap=action_map(cfg.env, cfg.centred_levers),
        environment=ENV_ID,
    )


def markets_columns(cfg: TrainConfig) -> Columns:
    """The columns of a multi-market run, from its environment on its training scenario.

    The environment's action and observation names; the shared fund's four allocation
    logits are action columns (a segmented fund has none, so ``params`` holds no weights);
    with ``markets.centred`` the actions are moves from the scenario's defaults.
    """
    from fundgym.agents.config import markets_env_kwargs
    from fundgym.envs.markets_env import MarketsInsuranceFundEnv

    assert cfg.markets is not None
    env = MarketsInsuranceFundEnv(cfg.markets.scenario, **markets_env_kwargs(cfg.markets))
    names = env.action_names()
    return Columns(
        obs_names=env.observation_names(),
        names=names,
        levers=tuple(None if n in ALLOCATION else env.levers[j] for j, n in enumerate(names)),
        logits={b: names.index(n) for b, n in zip(BUCKETS, ALLOCATION, strict=True) if n in names},
        amap=centred_on(env.default_action()) if cfg.markets.centred else ActionMap(),
        environment=MARKETS_ENV_ID,
    )


@dataclass(frozen=True)
class _Run:
    """A run directory's config and model (weights and observation normalisation), loaded."""

    run_dir: Path
    cfg: TrainConfig
    config_text: str
    model: LoadedModel
    columns: Columns

    @property
    def policy(self) -> Any:
        """The stable-baselines3 policy."""
        return self.model.policy

    @property
    def vecnorm(self) -> NormStats | None:
        """The observation normalisation (``None``: the network takes raw observations)."""
        return self.model.stats

    @property
    def model_file(self) -> Path:
        """The weights, ``RUN/best/policy.pt`` or ``RUN/final/policy.pt``."""
        return self.model.files.path / WEIGHTS

    def file_name(self, name: str) -> str:
        """A file of the model directory, relative to the run (``""`` when not listed)."""
        listed = name in self.model.files.manifest["files"]
        return f"{self.model.files.path.name}/{name}" if listed else ""


def _load_run(run_dir: Path, model: str) -> _Run:
    """Load what the export needs from ``run_dir``; :class:`ExportError` naming what is wrong."""
    run_dir = Path(run_dir)
    if model not in MODEL_DIRS:
        raise ExportError(f"model = {model!r}: expected one of {list(MODEL_DIRS)}")
    config_path = run_config_file(run_dir, ExportError)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise ExportError(f"{config_path}: not a valid training config:\n{exc}") from exc
    columns = one_market_columns(cfg) if cfg.markets is None else markets_columns(cfg)
    which = MODEL_DIRS[model]
    if which == BEST and not (run_dir / BEST).is_dir() and (run_dir / FINAL).is_dir():
        warnings.warn(
            f"{run_dir / BEST} is absent (no evaluation finished); exporting the final "
            f"model ({FINAL}/) instead",
            UserWarning,
            stacklevel=3,
        )
        which = FINAL
    try:
        loaded = load_model(run_dir, model_dir(run_dir, which), cfg)
    except RunError as exc:
        raise ExportError(str(exc)) from exc
    model_file = loaded.files.path / WEIGHTS
    n_obs, n_act = len(columns.obs_names), len(columns.names)
    spaces = (loaded.policy.observation_space.shape, loaded.policy.action_space.shape)
    if spaces != ((n_obs,), (n_act,)):
        raise ExportError(
            f"{model_file}: the model maps observations {spaces[0]} to actions {spaces[1]}, "
            f"but the run's environment has {n_obs} observations and {n_act} actions "
            f"(config {config_path}: another fundgym version or config made it)"
        )
    stats = loaded.stats  # observation statistics, when the run normalises observations
    if stats is not None and stats.obs_mean.shape != (n_obs,):
        raise ExportError(
            f"{loaded.files.path / STATS}: statistics of shape {stats.obs_mean.shape}; "
            f"expected ({n_obs},)"
        )
    return _Run(run_dir, cfg, config_path.read_text(), loaded, columns)


def _allocation_logits(cfg: TrainConfig) -> dict[str, float]:
    """Positions (logits) of the allocation buckets the policy does not control."""
    start = start_positions(dataclasses.asdict(cfg.env.fixed))
    return {name: start[name] for name in ALLOCATION if name not in cfg.env.controlled}


def _held(cfg: TrainConfig) -> tuple[str, ...]:
    """The buckets the fund may hold, :data:`BUCKETS` order (the others weigh 0)."""
    return tuple(b for b in BUCKETS if b in cfg.env.allocation_buckets)


# ---------------------------------------------------------------- the reference ----


def _natural_units(columns: Columns, action: np.ndarray) -> np.ndarray:
    """``params`` from ``action`` in numpy (float64), as the graph computes them.

    Each lever's ``to_value``, and for each allocation column its bucket's weight
    (:func:`fundgym.envs.controls.allocation_weights`).
    """
    a = np.asarray(action, dtype=np.float64)
    out = np.empty_like(a)
    if columns.logits:
        logits = np.zeros((a.shape[0], len(BUCKETS)))
        for k, bucket in enumerate(BUCKETS):
            source = columns.logits.get(bucket, 0.0)
            logits[:, k] = np.clip(a[:, source], -1.0, 1.0) if isinstance(source, int) else source
        held = tuple(b for b in BUCKETS if b in columns.logits)
        weights = allocation_weights(logits, held)
    for j, (name, lever) in enumerate(zip(columns.names, columns.levers, strict=True)):
        if lever is None:
            out[:, j] = weights[:, ALLOCATION.index(name)]
        else:
            out[:, j] = lever.to_value(a[:, j])
    return out


def _reference(run: _Run, observations: np.ndarray) -> dict[str, np.ndarray]:
    obs = np.asarray(observations, dtype=np.float32)
    n_obs = len(run.columns.obs_names)
    if obs.ndim != 2 or obs.shape[1] != n_obs:
        raise ValueError(f"observations must have shape (batch, {n_obs}), got {obs.shape}")
    action = run.columns.amap(run.model.predict(obs)).astype(np.float32)
    action = action.reshape(obs.shape[0], -1)
    return {"action": action, "params": _natural_units(run.columns, action)}


def reference_outputs(
    run_dir: Path, observations: np.ndarray, *, model: str = "best"
) -> dict[str, np.ndarray]:
    """What the exported graph should output, computed with stable-baselines3 and numpy.

    The policy is the one :mod:`fundgym.agents.policies.runs` rebuilds from the run's config and
    tensors.

    ``VecNormalize.normalize_obs`` (when the run normalised observations), then
    ``model.predict(..., deterministic=True)``, then the natural-unit map of
    :mod:`fundgym.envs.controls` (``Lever.to_value``, ``allocation_weights``).

    Args:
        run_dir: A run directory written by :func:`fundgym.agents.training.train.train`.
        observations: Raw environment observations, ``(batch, 32)``; cast to float32 first,
            as the environment emits them and the graph takes them.
        model: ``"best"`` (``best/``, falling back to ``final/`` with a warning when absent)
            or ``"final"`` (``final/``).

    Returns:
        ``{"action": (batch, n) float32, "params": (batch, n) float64}`` as in
        :func:`export_onnx`.

    Raises:
        ExportError: The run directory or one of its files is missing or unreadable.
    """
    return _reference(_load_run(Path(run_dir), model), observations)


def check_observations(cfg: TrainConfig, n: int, seed: int) -> np.ndarray:
    """``n`` float32 observations: half from the run's environment, half uniform in ±10.

    The real half comes from a few exchanges of the run's environment (a multi-market run's
    on its training scenario) stepped with uniform random actions (seeded ``seed``), the
    other half covers the whole observation box, far outside what training saw, where
    clipping and saturation are exercised.
    """
    rng = np.random.default_rng(seed)
    n_real = n // 2
    rows: list[np.ndarray] = []
    if cfg.markets is not None:
        from fundgym.agents.config import markets_env_kwargs
        from fundgym.envs.markets_env import MarketsInsuranceFundVectorEnv

        n_envs = min(4, max(n_real, 1))
        env: Any = MarketsInsuranceFundVectorEnv(
            n_envs, cfg.markets.scenario, **markets_env_kwargs(cfg.markets)
        )
    else:
        n_envs = min(8, max(n_real, 1))
        env = InsuranceFundVectorEnv(num_envs=n_envs, **env_kwargs(cfg))
    n_obs = env.single_observation_space.shape[0]
    n_act = env.single_action_space.shape[0]
    if n_real > 0:
        obs, _ = env.reset(seed=seed)
        rows.append(obs)
        for _ in range(math.ceil(n_real / n_envs) - 1):
            obs, *_ = env.step(rng.uniform(-1.0, 1.0, (n_envs, n_act)))
            rows.append(obs)
    real = np.concatenate(rows)[:n_real] if rows else np.empty((0, n_obs))
    box = rng.uniform(-10.0, 10.0, (n - n_real, n_obs))
    return np.concatenate([real, box]).astype(np.float32)


# ---------------------------------------------------------------- the graph ----


def _graph(run: _Run) -> torch.nn.Module:
    """Raw observation -> (action, params) as one torch module, ready to trace."""
    import torch
    from stable_baselines3.common.policies import BaseModel

    policy = run.policy
    policy.set_training_mode(False)
    algo = run.cfg.algo
    space = policy.action_space
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    columns = run.columns
    vecnorm = run.vecnorm
    centred = dict(zip(columns.amap.columns, columns.amap.start, strict=True))

    if vecnorm is not None:
        obs_mean = torch.as_tensor(vecnorm.obs_mean)
        obs_std = torch.as_tensor(np.sqrt(vecnorm.obs_var + vecnorm.epsilon))
        clip_obs = float(vecnorm.clip_obs)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def normalise(self, obs: torch.Tensor) -> torch.Tensor:
            """``VecNormalize.normalize_obs``: float64, clipped, back to float32."""
            if vecnorm is None:
                return obs
            z = (obs.double() - obs_mean) / obs_std
            return z.clamp(-clip_obs, clip_obs).float()

        def actor(self, x: torch.Tensor) -> torch.Tensor:
            """The deterministic action before SB3's post-processing in ``predict``."""
            p = self.policy
            if POLICY_ALGO[algo] in ("PPO", "A2C"):
                features = BaseModel.extract_features(p, x, p.pi_features_extractor)
                mean: torch.Tensor = p.action_net(p.mlp_extractor.forward_actor(features))
                return torch.tanh(mean) if p.squash_output else mean  # gSDE squashes
            if algo == "sac":
                actor = p.actor
                features = actor.extract_features(x, actor.features_extractor)
                return torch.tanh(actor.mu(actor.latent_pi(features)))
            squashed: torch.Tensor = p.actor(x)  # td3: mu ends in tanh
            return squashed

        def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = self.actor(self.normalise(obs))
            if self.policy.squash_output:  # BasePolicy.predict: unscale_action
                action = low + 0.5 * (a + 1.0) * (high - low)
            else:
                action = torch.minimum(torch.maximum(a, low), high)
            if centred:  # fundgym.agents.action_map: a move from the lever's start
                action = torch.stack(
                    [
                        (CENTRED_SPAN * action[:, j] + centred[j]).clamp(-1.0, 1.0)
                        if j in centred
                        else action[:, j]
                        for j in range(action.shape[1])
                    ],
                    dim=1,
                )
            return action, self.params(action)

        def params(self, action: torch.Tensor) -> torch.Tensor:
            a = action.double().clamp(-1.0, 1.0)
            if columns.logits:
                logits = []
                for bucket in BUCKETS:
                    source = columns.logits.get(bucket)
                    if source is None:  # not held: exp(-inf) = 0 in the softmax
                        logits.append(torch.full_like(a[:, 0], -math.inf))
                    elif isinstance(source, int):
                        logits.append(a[:, source])
                    else:
                        logits.append(torch.full_like(a[:, 0], source))
                stacked = ALLOCATION_SHARPNESS * torch.stack(logits, dim=1)
                weights = torch.softmax(stacked, dim=1)
            cols = []
            for j, (name, r) in enumerate(zip(columns.names, columns.levers, strict=True)):
                if r is None:
                    cols.append(weights[:, ALLOCATION.index(name)])
                    continue
                u = (a[:, j] + 1.0) / 2.0
                cols.append(
                    r.low * (r.high / r.low) ** u if r.log else r.low + u * (r.high - r.low)
                )
            return torch.stack(cols, dim=1).float()

    return Graph().eval()


def _to_onnx(module: torch.nn.Module, n_obs: int) -> onnx.ModelProto:
    import onnx
    import torch

    example = torch.zeros(2, n_obs, dtype=torch.float32)
    batch = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        path = Path(tmp) / "policy.onnx"
        # The TorchScript exporter announces its deprecation; it is still exact for an MLP.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return proto


def _metadata(run: _Run) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        fundgym_version = version("fundgym")
    except PackageNotFoundError:
        fundgym_version = "unknown"
    columns = run.columns
    params = []
    for j, (name, r) in enumerate(zip(columns.names, columns.levers, strict=True)):
        item: dict[str, Any] = {"name": name, "index": j}
        if r is None:
            item.update(unit=UNITS[name], scale="softmax", low=0.0, high=1.0)
        else:
            item.update(unit=r.unit, scale="log" if r.log else "linear", low=r.low, high=r.high)
        params.append(item)
    # The allocation logits the policy does not control (a multi-market run controls all).
    fixed = _allocation_logits(run.cfg) if run.cfg.markets is None else {}
    vn = run.vecnorm
    normalisation = (
        {"observation": True, "clip_obs": float(vn.clip_obs), "epsilon": float(vn.epsilon)}
        if vn is not None
        else {"observation": False}
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "fundgym_version": fundgym_version,
        "algo": run.cfg.algo,
        "model_file": run.file_name(WEIGHTS),
        "vecnormalize_file": run.file_name(STATS),
        "run_dir": str(run.run_dir),
        "config": run.config_text,
        "input": INPUT_NAME,
        "outputs": json.dumps(list(OUTPUT_NAMES)),
        "environment": columns.environment,
        "obs_names": json.dumps(list(columns.obs_names)),
        "param_names": json.dumps(list(columns.names)),
        "params": json.dumps(params),
        "fixed_allocation_logits": json.dumps(fixed),
        "allocation_sharpness": repr(ALLOCATION_SHARPNESS),
        "allocation_buckets": json.dumps(list(columns.logits)),
        "observation_normalisation": json.dumps(normalisation),
        "targets": (
            "action and params are targets: the environment moves each position toward its "
            "target by at most env.max_step action units per decision, and a margin increase "
            "(mmr, imr_multiple) takes effect only after env.margin_notice_minutes"
        ),
    }


def _run_onnx(model_bytes: bytes, observations: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: observations.astype(np.float32)})
    return {name: np.asarray(value) for name, value in zip(OUTPUT_NAMES, outputs, strict=True)}


def export_onnx(
    run_dir: Path,
    out: Path,
    *,
    model: str = "best",
    n_check: int = 512,
    seed: int = 0,
) -> OnnxExport:
    """Export a run's policy to ONNX, check it against stable-baselines3, write it atomically.

    The graph takes raw observations (input ``observation``, ``(batch, 32)`` float32, the
    order of :data:`fundgym.envs.exchange_env.OBS_NAMES`) and gives, per controlled parameter in the
    order of the run's ``env.controlled``:

    * ``action``: what ``model.predict(normalised_obs, deterministic=True)`` returns, in
      action units [-1, 1];
    * ``params``: the same in natural units: ``PARAMS[name].to_value(action)`` for a
      parameter (log scale: ``low * (high / low) ** u``, linear: ``low + u * (high - low)``,
      ``u = (action + 1) / 2``), and for an allocation logit the *weight* of its bucket,
      ``softmax(3 x logits)`` over the four buckets, where the buckets the policy does not
      control keep their constant logits (the run's fixed or default allocation).

    Both are **targets**, not the parameters in force after the decision: the environment
    moves each parameter's position toward its target by at most ``env.max_step`` action
    units per decision, and an increase of ``mmr`` or ``imr_multiple`` reaches open positions
    only after ``env.margin_notice_minutes`` (cuts apply at once). A deployment that wants the
    environment's behaviour applies the same rate limit and notice to successive targets.

    Args:
        run_dir: A run directory written by :func:`fundgym.agents.training.train.train`.
        out: The ``.onnx`` file to write (its parent is created; an existing file is replaced
            only when the new one has passed its check).
        model: ``"best"``: the model directory ``best/``, falling back to ``final/`` with a
            warning when the run has no best model; ``"final"``: ``final/``.
        n_check: Observations in the check (half from the run's environment stepped with
            random actions, half uniform in [-10, 10]^32).
        seed: Seed of the check's observations.

    Returns:
        Where the file is, its input and output names, and the check's result.

    Raises:
        ExportError: The run directory, its config, model or normalisation file is missing or
            unreadable, ``out`` is a directory, or the exported graph differs from the
            stable-baselines3 model by :data:`TOLERANCE` or more (then nothing is written).
    """
    out = Path(out)
    if n_check < 1:
        raise ExportError(f"n_check = {n_check}: at least 1 observation must be checked")
    if out.is_dir():
        raise ExportError(f"{out}: is a directory; expected the path of the .onnx file to write")
    run = _load_run(Path(run_dir), model)
    import onnx

    proto = _to_onnx(_graph(run), len(run.columns.obs_names))
    observations = check_observations(run.cfg, n_check, seed)
    expected = _reference(run, observations)
    got = _run_onnx(proto.SerializeToString(), observations)
    diff = max(
        float(np.max(np.abs(got[name].astype(np.float64) - expected[name])))
        for name in OUTPUT_NAMES
    )
    if not diff < TOLERANCE:  # also catches NaN
        raise ExportError(
            f"{out}: not written; the ONNX graph of {run.model_file} differs from the "
            f"stable-baselines3 model by up to {diff:.3g} (tolerance {TOLERANCE:g}) over "
            f"{n_check} observations"
        )
    props = {**_metadata(run), "check_max_abs_diff": repr(diff), "check_n": str(n_check)}
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = (
        f"fundgym {run.cfg.algo.upper()} policy from {run.model_file}: raw observations in, "
        "target parameters out (action units and natural units)"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, proto.SerializeToString())
    return OnnxExport(out, INPUT_NAME, OUTPUT_NAMES, diff, n_check, len(run.columns.obs_names))
