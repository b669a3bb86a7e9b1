"""Run directories as data: what ``fundgym train`` writes, and the one way fundgym reads it back.

A run directory holds plain files, and reading one never unpickles anything, so a run directory
from someone else cannot run code::

    RUN/config.yaml             the resolved training config (the network is built from it)
    RUN/final/  RUN/best/       model directories: the final model, the best by held-out evaluation
    RUN/checkpoints/step_<N>/   a model directory plus the training state for --resume
    RUN/command.txt  evaluations.csv  train_summary.json  tensorboard/   records, never loaded

``fundgym train --seeds S1,S2,...`` writes one run per seed into ``DIR/seed_<S>/``
(:func:`seed_dir_name`); :func:`seed_runs` reads such a **multi-seed directory** back, checking
that its runs differ only in their seed.

A **model directory** holds:

* ``policy.pt``: the SB3 policy's ``state_dict``, tensors only, read with
  ``torch.load(..., weights_only=True)``; the network itself is built from ``config.yaml``;
* ``normalize.npz`` (when the run normalises): ``VecNormalize``'s statistics as plain float
  arrays, read with ``np.load(..., allow_pickle=False)``;
* ``manifest.json``, written last: the format, algorithm, timesteps, observation and action
  spaces, the SHA-256 of the run's ``config.yaml`` and of every other file in the directory.

A model directory is written complete in a temporary sibling and renamed into place, so weights
never exist without the statistics they were trained with. Loading reads each file once, checks
it against the manifest and then parses those same bytes; a missing file, a changed byte or a
changed ``config.yaml`` is a :class:`RunError` naming the file, never a fall-back to raw
observations.

A checkpoint also holds what ``fundgym train --resume`` continues from, as plain data too:
``training_state.pt`` (the optimisers, SAC's entropy coefficient, the update counters; read with
``torch.load(..., weights_only=True)``) and, for off-policy algorithms, ``replay_buffer.npz``
(read with ``np.load(..., allow_pickle=False)``); ``--resume`` builds the algorithm from
``config.yaml`` and loads them into it. Run directories from before this format (``model.zip``
and ``vecnormalize.pkl`` at the top) are refused with how to re-create them; ``--resume`` of
one's own such run rewrites it in this format (reading its pickles: the one place fundgym does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents.config import POLICY_ALGO, TrainConfig, dump_config
from fundgym.agents.outputs import directory_in_place, naming_file
from fundgym.agents.policies.base import FloatArray, SpecError

#: What ``manifest.json`` says it is, and the version of the layout it describes.
FORMAT = "fundgym-model"
FORMAT_VERSION = 1
WEIGHTS = "policy.pt"
STATS = "normalize.npz"
MANIFEST = "manifest.json"
#: Model directories of a run: the best model by held-out evaluation, the final model.
BEST = "best"
FINAL = "final"
CHECKPOINTS = "checkpoints"
#: What a run directory written before this format holds instead of model directories.
LEGACY_FILES = ("best_model.zip", "best_vecnormalize.pkl", "model.zip", "vecnormalize.pkl")


class RunError(SpecError):
    """A run directory cannot be loaded: a file is missing, changed, unreadable or a pickle."""


# ---------------------------------------------------------------- normalisation ----


@dataclass(frozen=True)
class NormStats:
    """``VecNormalize``'s state as plain numbers: all it needs to normalise identically.

    Attributes:
        obs_mean: Running mean of each observation, float64 ``(n_obs,)`` (``(0,)`` when
            observations are not normalised: ``VecNormalize`` then keeps no statistics).
        obs_var: Running variance of each observation, float64, as ``obs_mean``.
        obs_count: Samples behind ``obs_mean`` and ``obs_var``.
        ret_mean: Running mean of the discounted return (reward scaling).
        ret_var: Running variance of the discounted return.
        ret_count: Samples behind ``ret_mean`` and ``ret_var``.
        clip_obs: Normalised observations are clipped to ``±clip_obs``.
        clip_reward: Normalised rewards are clipped to ``±clip_reward``.
        epsilon: Added to variances before the square root.
        gamma: Discount of the return whose variance scales rewards.
        norm_obs: Whether observations are normalised.
        norm_reward: Whether rewards are normalised (in training).
    """

    obs_mean: FloatArray
    obs_var: FloatArray
    obs_count: float
    ret_mean: float
    ret_var: float
    ret_count: float
    clip_obs: float
    clip_reward: float
    epsilon: float
    gamma: float
    norm_obs: bool
    norm_reward: bool

    @classmethod
    def of(cls, vecnorm: Any) -> NormStats:
        """The statistics of a live ``VecNormalize``."""
        norm_obs = bool(vecnorm.norm_obs)
        return cls(
            obs_mean=np.array(vecnorm.obs_rms.mean if norm_obs else [], dtype=np.float64),
            obs_var=np.array(vecnorm.obs_rms.var if norm_obs else [], dtype=np.float64),
            obs_count=float(vecnorm.obs_rms.count) if norm_obs else 0.0,
            ret_mean=float(vecnorm.ret_rms.mean),
            ret_var=float(vecnorm.ret_rms.var),
            ret_count=float(vecnorm.ret_rms.count),
            clip_obs=float(vecnorm.clip_obs),
            clip_reward=float(vecnorm.clip_reward),
            epsilon=float(vecnorm.epsilon),
            gamma=float(vecnorm.gamma),
            norm_obs=norm_obs,
            norm_reward=bool(vecnorm.norm_reward),
        )

    def restore(self, vecnorm: Any) -> None:
        """Put these statistics into ``vecnorm`` (``--resume``: training continues from them)."""
        if self.norm_obs:
            vecnorm.obs_rms.mean = self.obs_mean.copy()
            vecnorm.obs_rms.var = self.obs_var.copy()
            vecnorm.obs_rms.count = self.obs_count
        vecnorm.ret_rms.mean = np.float64(self.ret_mean)
        vecnorm.ret_rms.var = np.float64(self.ret_var)
        vecnorm.ret_rms.count = self.ret_count
        vecnorm.clip_obs, vecnorm.clip_reward = self.clip_obs, self.clip_reward
        vecnorm.epsilon, vecnorm.gamma = self.epsilon, self.gamma
        vecnorm.norm_obs, vecnorm.norm_reward = self.norm_obs, self.norm_reward

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """``VecNormalize.normalize_obs``: the same float64 arithmetic, clipped, as float32."""
        if not self.norm_obs:
            return obs
        z = (obs - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def to_bytes(self) -> bytes:
        """An ``.npz`` of plain arrays (no object arrays: loading it runs nothing)."""
        buf = io.BytesIO()
        arrays: dict[str, Any] = {f.name: np.asarray(getattr(self, f.name)) for f in _FIELDS}
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, path: Path) -> NormStats:
        """Parse :meth:`to_bytes`; :class:`RunError` naming ``path`` on anything else."""
        arrays = plain_arrays(data, path)
        expected = [f.name for f in _FIELDS]
        if sorted(arrays) != sorted(expected):
            raise RunError(f"{path}: holds arrays {sorted(arrays)}; expected {sorted(expected)}")
        values: dict[str, Any] = {}
        for f in _FIELDS:
            a = arrays[f.name]
            vector = f.name in ("obs_mean", "obs_var")
            kind = "b" if f.name.startswith("norm_") else "f"
            if a.dtype.kind != kind or (a.ndim != 1 if vector else a.ndim != 0):
                raise RunError(
                    f"{path}: {f.name} is a {a.dtype} array of shape {a.shape}; expected "
                    f"{'a float vector' if vector else 'a scalar'}"
                )
            if kind == "f" and not np.all(np.isfinite(a)):
                raise RunError(f"{path}: {f.name} is not finite")
            if vector:
                values[f.name] = a.astype(np.float64)
            else:
                values[f.name] = bool(a) if kind == "b" else float(a)
        stats = cls(**values)
        if stats.obs_mean.shape != stats.obs_var.shape:
            raise RunError(f"{path}: obs_mean and obs_var differ in shape")
        return stats


_FIELDS = dataclasses.fields(NormStats)


# ---------------------------------------------------------------- the network ----


def policy_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The SB3 ``policy_kwargs`` of ``cfg``: what training builds the network with, and loading."""
    import torch

    pk = cfg.hyperparameters.policy_kwargs
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}[pk.activation_fn]
    out: dict[str, Any] = {"net_arch": list(pk.net_arch), "activation_fn": act}
    if pk.log_std_init is not None:
        out["log_std_init"] = pk.log_std_init
    if pk.ortho_init is not None:
        out["ortho_init"] = pk.ortho_init
    return out


def _no_learning(_progress_remaining: float) -> float:
    """The learning rate of a policy that only acts (its optimiser never steps)."""
    return 0.0


def _box_spec(space: Any) -> dict[str, Any]:
    return {
        "dtype": str(space.dtype),
        "low": [float(x) for x in np.asarray(space.low).ravel()],
        "high": [float(x) for x in np.asarray(space.high).ravel()],
    }


def _box(spec: Any, where: str) -> Any:
    import gymnasium as gym

    if not isinstance(spec, dict) or spec.get("dtype") not in ("float32", "float64"):
        raise RunError(f"{where}: expected a float32 or float64 box space")
    try:
        low = np.asarray(spec["low"], dtype=spec["dtype"])
        high = np.asarray(spec["high"], dtype=spec["dtype"])
        return gym.spaces.Box(low, high, dtype=low.dtype)
    except Exception as exc:  # a hand-edited manifest: wrong types, shapes or dtype
        raise RunError(f"{where}: not a box space ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- writing ----


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex (what the manifest records)."""
    return hashlib.sha256(data).hexdigest()


def write_model_dir(
    dest: Path,
    model: Any,
    cfg: TrainConfig,
    extras: Mapping[str, Callable[[Path], object]] | None = None,
) -> Path:
    """Write ``model``'s weights and normalisation into ``dest`` as one complete directory.

    Everything goes into a temporary sibling, the manifest last; the sibling then replaces
    ``dest``. A crash leaves either the old ``dest`` or the new one (or, in the instant between
    two renames, none), never weights without their statistics.

    Args:
        dest: The model directory (``RUN/best``, ``RUN/final``, ``RUN/checkpoints/step_N``).
        model: A stable-baselines3 algorithm.
        cfg: Its config (the manifest records the hash of its resolved YAML).
        extras: More files for the directory, by name: a function writing each to a path
            (checkpoints: the training state and the replay buffer, for ``--resume``).

    Returns:
        ``dest``.

    Raises:
        OSError: A write failed (a full disk), naming the file as it would be in ``dest``.
    """
    import torch

    # Built under a temporary, renamed into place whole; a full disk names the file in dest.
    with directory_in_place(dest, "tmp") as tmp:
        weights = io.BytesIO()  # torch.save to a path fails with a RuntimeError, no name
        torch.save(model.policy.state_dict(), weights)
        _write_file(tmp / WEIGHTS, weights.getvalue())
        vecnorm = model.get_vec_normalize_env()
        if vecnorm is not None:
            _write_file(tmp / STATS, NormStats.of(vecnorm).to_bytes())
        for name, write in (extras or {}).items():
            write(tmp / name)
        files = {p.name: sha256_hex(p.read_bytes()) for p in sorted(tmp.iterdir())}
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "algo": cfg.algo,
            "policy": cfg.policy,
            "num_timesteps": int(model.num_timesteps),
            "observation_space": _box_spec(model.observation_space),
            "action_space": _box_spec(model.action_space),
            "config_sha256": sha256_hex(dump_config(cfg).encode("utf-8")),
            "files": files,
        }
        _write_file(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return dest


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``; a failure as it is flushed (a full disk) names ``path``."""
    with naming_file(path):
        path.write_bytes(data)


# ---------------------------------------------------------------- reading ----


def legacy_files(run_dir: Path) -> list[str]:
    """The pickled model files of a run directory written before this format."""
    return [name for name in LEGACY_FILES if (run_dir / name).exists()]


def legacy_error(run_dir: Path, found: list[str]) -> RunError:
    """Why an old run directory is refused, and how to re-create it."""
    config = run_dir / "config.yaml"
    return RunError(
        f"{run_dir}: written by an older fundgym ({', '.join(found)}): its model and "
        "statistics are pickles, and loading a pickle can run code, so fundgym no longer "
        f"reads them. Retrain it with `fundgym train --config {config} --out NEW_DIR`; if you "
        f"made it yourself, `fundgym train --config {config} --out {run_dir} --resume` "
        "rewrites it as plain tensors and arrays (that reads the pickles: never for a run you "
        "were sent; see docs/trust.md)"
    )


def model_dir(run_dir: Path, which: str) -> Path:
    """``run_dir/which`` (``best`` or ``final``), or why the run has none.

    Raises:
        RunError: The directory is missing; the message says when the run is of the old,
            pickled format.
    """
    path = run_dir / which
    if path.is_dir():
        return path
    found = legacy_files(run_dir)
    if found and not (run_dir / BEST).is_dir() and not (run_dir / FINAL).is_dir():
        raise legacy_error(run_dir, found)
    raise RunError(
        f"{path}: missing; a run directory written by `fundgym train` holds its model in "
        f"{BEST}/ (after an evaluation) and {FINAL}/ (at the end)"
    )


def default_model_dir(run_dir: Path) -> Path:
    """The model a run is evaluated with: ``best/``, else ``final/`` (no evaluation finished)."""
    return model_dir(run_dir, BEST if (run_dir / BEST).is_dir() else FINAL)


@dataclass(frozen=True)
class ModelFiles:
    """A model directory's files, read once and checked against its manifest.

    Attributes:
        path: The model directory.
        manifest: Its parsed ``manifest.json``.
        weights: ``policy.pt``'s tensors by name.
        stats: ``normalize.npz``'s statistics (``None`` when the run does not normalise).
        contents: Every file the manifest lists, by name, as bytes already checked against
            its hash (a checkpoint's resume files are parsed from these, not read again).
    """

    path: Path
    manifest: dict[str, Any]
    weights: dict[str, Any]
    stats: NormStats | None
    contents: dict[str, bytes]


def plain_arrays(data: bytes, path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of an ``.npz`` file's bytes, read without pickle (``allow_pickle=False``).

    Raises:
        RunError: Naming ``path``: not an ``.npz`` of plain arrays (damaged, foreign, or
            holding object arrays, whose loading could run code).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile, format and object-array errors alike
        raise RunError(
            f"{path}: cannot be read as plain arrays ({type(exc).__name__}: {exc})"
        ) from exc


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise RunError(
            f"{file}: missing; the model directory is incomplete (the manifest is written "
            "last) or not written by `fundgym train`"
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{file}: not a readable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunError(f"{file}: not a fundgym model manifest (format {FORMAT!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise RunError(
            f"{file}: format version {manifest.get('version')!r}; this fundgym reads version "
            f"{FORMAT_VERSION}: retrain the run with this version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise RunError(f"{file}: 'files' must map file names to SHA-256 hex digests")
    for name in files:
        if name in ("", ".", "..", MANIFEST) or Path(name).name != name:
            raise RunError(f"{file}: {name!r} is not a file name in the model directory")
    return manifest


def _checked_bytes(path: Path, name: str, manifest: dict[str, Any]) -> bytes:
    """A listed file's bytes, after checking them against the manifest's hash."""
    file = path / name
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise RunError(
            f"{file}: missing; {path / MANIFEST} lists it as part of the model"
        ) from None
    except OSError as exc:
        raise RunError(f"{file}: cannot be read ({exc})") from exc
    if sha256_hex(data) != manifest["files"][name]:
        raise RunError(
            f"{file}: SHA-256 differs from the one {path / MANIFEST} recorded; the file was "
            "changed or damaged after the model was saved"
        )
    return data


def read_model_dir(run_dir: Path, path: Path, cfg: TrainConfig) -> ModelFiles:
    """Check a model directory against its manifest and read its weights and statistics.

    Every file the manifest lists must be present with its recorded hash; the run's config must
    be the one the model was saved with (the network is built from it); a run that normalises
    must have its statistics. Nothing is unpickled: weights go through
    ``torch.load(weights_only=True)``, statistics through ``np.load(allow_pickle=False)``.

    Raises:
        RunError: Naming the file that is missing, changed or unreadable.
    """
    import torch

    manifest = _read_manifest(path)
    config_path = run_dir / "config.yaml"
    try:
        config_sha = sha256_hex(config_path.read_bytes())
    except OSError as exc:
        raise RunError(f"{config_path}: cannot be read ({exc})") from exc
    if manifest.get("config_sha256") != config_sha:
        raise RunError(
            f"{config_path}: differs from the config {path / MANIFEST} was saved with; the "
            "network is built from it, so it must be the run's own"
        )
    listed = manifest["files"]
    needs_stats = cfg.normalize.observation or cfg.normalize.reward
    for name in (WEIGHTS, *((STATS,) if needs_stats else ())):
        if name not in listed:
            raise RunError(
                f"{path / name}: missing from {path / MANIFEST}; the model needs it"
                + (" (the run normalises observations or rewards)" if name == STATS else "")
            )
    contents = {name: _checked_bytes(path, name, manifest) for name in sorted(listed)}
    weights_file = path / WEIGHTS
    try:
        weights = torch.load(io.BytesIO(contents[WEIGHTS]), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises anything from zipfile or its restricted unpickler
        raise RunError(
            f"{weights_file}: cannot be read as plain tensors ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise RunError(f"{weights_file}: expected a state_dict (tensor names to tensors)")
    stats = NormStats.from_bytes(contents[STATS], path / STATS) if STATS in listed else None
    return ModelFiles(path, manifest, weights, stats, contents)


@dataclass(frozen=True)
class LoadedModel:
    """A run's policy rebuilt from its config and tensors, with its normalisation.

    Attributes:
        files: What was read from the model directory.
        policy: The SB3 policy (``stable_baselines3.common.policies.BasePolicy``), on the CPU,
            in evaluation mode.
    """

    files: ModelFiles
    policy: Any

    @property
    def stats(self) -> NormStats | None:
        """The statistics observations are normalised with (``None``: raw observations)."""
        s = self.files.stats
        return s if s is not None and s.norm_obs else None

    def predict(self, obs: np.ndarray) -> FloatArray:
        """``model.predict(normalize_obs(obs), deterministic=True)`` as SB3 computes it."""
        x = self.stats.normalize_obs(obs.astype(np.float32)) if self.stats is not None else obs
        action, _ = self.policy.predict(x, deterministic=True)
        return np.asarray(action, dtype=np.float64)


def load_model(run_dir: Path, path: Path, cfg: TrainConfig) -> LoadedModel:
    """Build the policy ``cfg`` describes on the manifest's spaces and load its tensors.

    Raises:
        RunError: A file is missing, changed or unreadable, or the tensors do not fit the
            network the config describes.
    """
    import stable_baselines3 as sb3

    files = read_model_dir(run_dir, path, cfg)
    where = path / MANIFEST
    if files.manifest.get("algo") != cfg.algo:
        raise RunError(
            f"{where}: algo {files.manifest.get('algo')!r}, but {run_dir / 'config.yaml'} "
            f"says {cfg.algo!r}"
        )
    observation_space = _box(files.manifest.get("observation_space"), f"{where}: observation")
    action_space = _box(files.manifest.get("action_space"), f"{where}: action")
    policy_class = getattr(sb3, POLICY_ALGO[cfg.algo]).policy_aliases[cfg.policy]
    policy = policy_class(observation_space, action_space, _no_learning, **policy_kwargs(cfg))
    try:
        policy.load_state_dict(files.weights, strict=True)
    except RuntimeError as exc:
        raise RunError(
            f"{path / WEIGHTS}: does not fit the {cfg.algo.upper()} network "
            f"{run_dir / 'config.yaml'} describes ({exc})"
        ) from exc
    policy.set_training_mode(False)
    return LoadedModel(files, policy)


# ---------------------------------------------------------------- multi-seed directories ----

#: A multi-seed directory's run of seed ``S`` is ``seed_<S>/``.
_SEED_DIR = re.compile(r"seed_(0|[1-9][0-9]*)")


def seed_dir_name(seed: int) -> str:
    """The folder of seed ``seed``'s run inside a multi-seed directory: ``seed_<seed>``."""
    return f"seed_{seed}"


def is_seed_group(path: Path) -> bool:
    """Whether ``path`` is a multi-seed directory: no run of its own, ``seed_<S>/`` folders in it.

    A run directory (one with ``config.yaml``) is never a group, even if it holds such folders.
    """
    if not path.is_dir() or (path / "config.yaml").exists():
        return False
    return any(p.is_dir() and _SEED_DIR.fullmatch(p.name) for p in path.iterdir())


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``: a config's fields by dotted name."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _run_fields(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` by dotted field name, its ``seed`` left out."""
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(
            f"{path}: missing; {run_dir} is named like a seed's run but is not a fundgym run"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: cannot be read as YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    fields = _flat(data)
    fields.pop("seed", None)
    return fields


def seed_runs(group: Path) -> dict[int, Path]:
    """The runs of a multi-seed directory by seed, ascending; checked to differ only in seed.

    A comparison across seeds means something only if every seed trained the same config, so
    the runs' ``config.yaml`` files must agree in every field but ``seed`` (each run's model is
    checked against its own config when it is loaded).

    Raises:
        RunError: ``group`` holds no ``seed_<S>/`` folder, one of them has no readable
            ``config.yaml``, or two runs' configs differ (naming both runs, the field and the
            two values).
    """
    folders = list(group.iterdir()) if group.is_dir() else []
    runs = {
        int(p.name[len("seed_") :]): p
        for p in folders
        if p.is_dir() and _SEED_DIR.fullmatch(p.name)
    }
    if not runs:
        raise RunError(
            f"{group}: holds no seed_<S>/ runs (what `fundgym train --seeds S1,S2,... --out "
            f"{group}` writes) and no config.yaml of its own: not a fundgym run"
        )
    ordered = dict(sorted(runs.items()))
    first_seed, first = next(iter(ordered.items()))
    expected = _run_fields(first)
    for seed, run in ordered.items():
        fields = _run_fields(run)
        if fields == expected:
            continue
        key = next(k for k in sorted({*expected, *fields}) if expected.get(k) != fields.get(k))
        raise RunError(
            f"{group}: seeds {first_seed} and {seed} were trained from different configs "
            f"({key}: {expected.get(key, '(absent)')!r} in {first / 'config.yaml'}, "
            f"{fields.get(key, '(absent)')!r} in {run / 'config.yaml'}); a multi-seed "
            "directory must hold one config trained with several seeds"
        )
    return ordered
