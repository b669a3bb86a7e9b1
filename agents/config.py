"""Training configs: one YAML file says how a model is made, validated before anything runs.

A config (``configs/train/ppo.yaml``) holds the environment section (the keys of
:class:`fundgym.envs.exchange_env.EnvConfig`: scenario sampler, accounts, decision interval,
horizon,
controlled parameters, reward weights), the algorithm and its hyperparameters, vectorisation,
observation/reward normalisation, total timesteps, the seed, evaluation on held-out scenarios
and checkpointing. Shared settings live in one place through a ``defaults:`` key naming a base
file (relative to the config; merged key by key, the config winning) or through YAML anchors.

Validation uses pydantic for the training keys and the environment's own schema for the
``env`` section (one source of truth for its ranges and levers). Every problem (an unknown key,
a wrong type, a value out of range) is reported before anything runs, as
``<file>: <field.path> = <value>: <what is allowed>``; the command line exits with code 2.

The scenarios a config names (``env.scenario``, ``eval.scenarios``) are checked by
:func:`check_scenarios`, which loads each one; the command line calls it before it writes a
run directory (a config alone cannot tell a typo from a file still to be written).

Nothing is coerced silently. Files and ``--set`` values are read with YAML 1.2's scalars
(:class:`ConfigLoader`: only ``true``/``false`` are booleans, ``3e-4`` is a number); a boolean
where a number is expected is an error (Python would count ``true`` as 1), and so is anything
but a boolean where one is expected (``1``, ``"yes"``).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fundgym.envs.config import EnvConfig
from fundgym.envs.core.params import AdlPolicy, LiquidationMode
from fundgym.envs.market.sampler import MarketsSamplerSettings
from fundgym.envs.resources import TRAIN_CONFIG_DIR
from fundgym.envs.rewards import RewardWeights
from fundgym.envs.scenarios import load_scenario, require_single_market, scenario_names
from fundgym.envs.schema import SchemaError, build, load_yaml

#: The config ``fundgym train`` and ``fundgym demo`` use, and evaluation falls back to: the
#: packaged ``ppo.yaml`` (found through importlib.resources, so an installed wheel has it).
DEFAULT_TRAIN_CONFIG = TRAIN_CONFIG_DIR / "ppo.yaml"

ALGOS = ("ppo", "sac", "td3", "a2c", "ppo_lagrangian")
Algo = Literal["ppo", "sac", "td3", "a2c", "ppo_lagrangian"]
#: The stable-baselines3 algorithm whose policy network a run of each ``algo`` saves: what
#: loading a run and exporting its actor read (PPO-Lagrangian saves PPO's actor-critic; its
#: cost critic lives in the training state only).
POLICY_ALGO: dict[str, str] = {
    "ppo": "PPO",
    "sac": "SAC",
    "td3": "TD3",
    "a2c": "A2C",
    "ppo_lagrangian": "PPO",
}


class ConfigError(ValueError):
    """One or more config values are not allowed; each line names file, field, value, rule."""

    def __init__(self, problems: list[str]) -> None:
        """Join ``problems`` (one per line)."""
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_a_bool(kind: str) -> BeforeValidator:
    """A validator refusing a boolean for a ``kind`` number (Python counts ``True`` as 1)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError("number_not_bool", f"a number ({kind}), not true/false")
        return value

    return BeforeValidator(check)


# Number fields refuse booleans and otherwise keep pydantic's lax parsing (an integral float
# is an integer); boolean fields take only true or false (StrictBool).
Int = Annotated[int, _not_a_bool("int")]
Float = Annotated[float, _not_a_bool("float")]
OptionalInt = Annotated[int | None, _not_a_bool("int")]
OptionalFloat = Annotated[float | None, _not_a_bool("float")]
FloatOrAuto = Annotated[float | Literal["auto"], _not_a_bool("float or 'auto'")]


# ---------------------------------------------------------------- hyperparameters ----


class PolicyKwargs(_Strict):
    """The policy network (SB3 ``policy_kwargs``)."""

    net_arch: list[Int] = Field(default=[64, 64], min_length=1, max_length=8)
    activation_fn: Literal["tanh", "relu", "elu"] = "tanh"
    log_std_init: OptionalFloat = Field(default=None, ge=-10.0, le=5.0)
    ortho_init: StrictBool | None = None

    @model_validator(mode="after")
    def _widths(self) -> PolicyKwargs:
        if any(w < 1 or w > 4096 for w in self.net_arch):
            raise ValueError(f"net_arch widths must lie in [1, 4096], got {self.net_arch}")
        return self


class _Common(_Strict):
    learning_rate: Float = Field(default=3e-4, gt=0.0, le=1.0)
    gamma: Float = Field(default=0.99, gt=0.0, le=1.0)
    policy_kwargs: PolicyKwargs = PolicyKwargs()


class PPOHyper(_Common):
    """PPO's hyperparameters (names as in ``stable_baselines3.PPO``)."""

    n_steps: Int = Field(default=32, ge=1, le=1_000_000)
    batch_size: Int = Field(default=1024, ge=2, le=10_000_000)
    n_epochs: Int = Field(default=10, ge=1, le=1000)
    gae_lambda: Float = Field(default=0.95, ge=0.0, le=1.0)
    clip_range: Float = Field(default=0.2, gt=0.0, le=10.0)
    ent_coef: Float = Field(default=0.0, ge=0.0, le=10.0)
    vf_coef: Float = Field(default=0.5, ge=0.0, le=10.0)
    max_grad_norm: Float = Field(default=0.5, gt=0.0, le=1e6)
    target_kl: OptionalFloat = Field(default=None, gt=0.0, le=10.0)
    normalize_advantage: StrictBool = True


class PPOLagrangianHyper(PPOHyper):
    """PPO-Lagrangian's: PPO's plus the constraint (:mod:`fundgym.agents.training.lagrangian`).

    The constraint is ``mean episode cost <= cost_budget_bps``, the cost being ``info["cost"]``
    summed over an episode: its solvency loss in basis points of open interest.
    """

    cost_budget_bps: Float = Field(
        default=3000.0, gt=0.0, le=1e6, description="budget: mean episode cost, bps of OI"
    )
    cost_gae_lambda: Float = Field(default=0.95, ge=0.0, le=1.0)
    multiplier_init: Float = Field(default=0.5, ge=0.0, le=1e6)
    multiplier_lr: Float = Field(
        default=5e-4, gt=0.0, le=1e3, description="step per bps of episode cost over budget"
    )
    multiplier_max: Float = Field(default=20.0, gt=0.0, le=1e6)


class A2CHyper(_Common):
    """A2C's hyperparameters (names as in ``stable_baselines3.A2C``)."""

    learning_rate: Float = Field(default=7e-4, gt=0.0, le=1.0)
    n_steps: Int = Field(default=5, ge=1, le=1_000_000)
    gae_lambda: Float = Field(default=1.0, ge=0.0, le=1.0)
    ent_coef: Float = Field(default=0.0, ge=0.0, le=10.0)
    vf_coef: Float = Field(default=0.5, ge=0.0, le=10.0)
    max_grad_norm: Float = Field(default=0.5, gt=0.0, le=1e6)
    normalize_advantage: StrictBool = False


class _OffPolicy(_Common):
    buffer_size: Int = Field(default=200_000, ge=1, le=100_000_000)
    learning_starts: Int = Field(default=1000, ge=0, le=100_000_000)
    batch_size: Int = Field(default=256, ge=1, le=1_000_000)
    tau: Float = Field(default=0.005, gt=0.0, le=1.0)
    train_freq: Int = Field(default=1, ge=1, le=1_000_000)
    gradient_steps: Int = Field(default=1, ge=-1, le=100_000)


class SACHyper(_OffPolicy):
    """SAC's hyperparameters (names as in ``stable_baselines3.SAC``)."""

    ent_coef: FloatOrAuto = "auto"
    target_entropy: FloatOrAuto = "auto"

    @model_validator(mode="after")
    def _positive_entropy_coef(self) -> SACHyper:
        if isinstance(self.ent_coef, float) and self.ent_coef <= 0.0:
            raise ValueError(f"ent_coef must be 'auto' or > 0, got {self.ent_coef}")
        return self


class TD3Hyper(_OffPolicy):
    """TD3's hyperparameters; ``action_noise_std`` is Gaussian exploration, in action units."""

    learning_rate: Float = Field(default=1e-3, gt=0.0, le=1.0)
    policy_delay: Int = Field(default=2, ge=1, le=1000)
    target_policy_noise: Float = Field(default=0.2, ge=0.0, le=2.0)
    target_noise_clip: Float = Field(default=0.5, ge=0.0, le=2.0)
    action_noise_std: Float = Field(default=0.1, ge=0.0, le=2.0)


HYPER_MODELS: dict[str, type[_Common]] = {
    "ppo": PPOHyper,
    "a2c": A2CHyper,
    "sac": SACHyper,
    "td3": TD3Hyper,
    "ppo_lagrangian": PPOLagrangianHyper,
}


# ---------------------------------------------------------------- the rest ----


class NormalizeConfig(_Strict):
    """Running normalisation of observations and rewards (SB3 ``VecNormalize``)."""

    observation: StrictBool = True
    reward: StrictBool = True
    clip_obs: Float = Field(default=10.0, gt=0.0, le=1e6)
    clip_reward: Float = Field(default=10.0, gt=0.0, le=1e6)


class EvalConfig(_Strict):
    """Periodic evaluation on held-out scenarios; the best model by mean episode reward is kept.

    ``training`` among the scenarios means fresh draws of the training sampler on seeds no
    training episode uses (a validation set from the training distribution); named scenarios
    are the library's (the historical crashes are never trained on).
    """

    scenarios: list[str] = Field(default=["training"], min_length=1, max_length=32)
    episodes: Int = Field(default=8, ge=1, le=1024)
    freq: Int = Field(default=100_000, ge=1, le=10**10, description="timesteps between evals")
    seed: Int = Field(default=1_000_003, ge=0, le=2**62)
    deterministic: StrictBool = True


class CheckpointConfig(_Strict):
    """Checkpoints for ``--resume``: a killed run loses at most ``freq`` timesteps."""

    freq: Int = Field(default=200_000, ge=1, le=10**10, description="timesteps")
    keep: Int = Field(default=2, ge=1, le=1000)


class MarketsConfig(_Strict):
    """The multi-market environment a config trains on (``fundgym/MarketsInsuranceFund-v0``).

    Its keys are :class:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv`'s arguments. The
    env controls every lever it has (the exchange's, one per market, a haircut per collateral
    asset), so there is no ``controlled`` list; ``reward`` holds
    :class:`~fundgym.envs.rewards.RewardWeights` fields (checked by the env's schema). The
    training exchanges step as one batch (``MarketsInsuranceFundVectorEnv``), held-out
    evaluation as one env each.
    """

    scenario: str = "alt_contagion"
    n_accounts: Int = Field(default=1_000, ge=1, le=1_000_000)
    decision_minutes: Float = Field(default=10.0, gt=0.0, le=10_080.0)
    fund_mode: Literal["shared", "segmented"] = "shared"
    fund_groups: list[Int] | None = Field(default=None, max_length=4096)
    collateral_price: Literal["book", "index", "redemption"] = "book"
    fund_to_oi_frac: Float = Field(default=0.02, ge=0.0, le=1.0)
    fund_asset: Int | str | dict[str, Float] = 0
    rebalance_threshold: Float = Field(default=0.02, ge=0.0, le=2.0)
    liquidation_mode: LiquidationMode = "partial"
    adl_policy: AdlPolicy = "bitmex"
    vault_to_oi_frac: Float = Field(default=0.0, ge=0.0, le=1.0)
    vault_adl_loss_frac: OptionalFloat = Field(default=None, ge=0.0, le=1.0)
    liquidator_capacity_mult: OptionalFloat = Field(default=None, ge=0.0, le=100.0)
    fund_cap_period: Literal["tick", "episode"] = "episode"
    insolvency_frac: Float = Field(default=0.05, gt=0.0, le=10.0)
    max_step: Float = Field(default=2.0, gt=0.0, le=2.0)
    dead_band: Float = Field(default=0.0, ge=0.0, lt=2.0)
    reward: dict[str, Float] = Field(default_factory=dict)
    #: The multi-market training distribution (``MarketsSamplerSettings`` fields, checked by
    #: the env's schema: ``crash_prob``, ``idio_prob``): each training episode a new day
    #: around ``scenario``'s markets. None: every episode is ``scenario`` as written. Named
    #: evaluation scenarios and ``fundgym markets --run`` run as written either way.
    sampler: dict[str, Float] | None = None
    #: Each action a move from its lever's default (``clip(default + 2 a, -1, 1)``,
    #: :func:`fundgym.agents.action_map.centred_on`): action 0 runs the scenario as written,
    #: where otherwise it asks for the middle of every lever's range. Not an env argument.
    centred: StrictBool = False


class TrainConfig(_Strict):
    """A validated training config (the ``env`` section is an :class:`EnvConfig`).

    With a ``markets`` section (:class:`MarketsConfig`) the run trains on the multi-market
    environment instead, and ``env`` holds the one-market defaults, unused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    env: EnvConfig
    markets: MarketsConfig | None = None
    algo: Algo = "ppo"
    policy: Literal["MlpPolicy"] = "MlpPolicy"
    hyperparameters: PPOLagrangianHyper | PPOHyper | A2CHyper | SACHyper | TD3Hyper
    n_envs: Int = Field(default=16, ge=1, le=4096)
    normalize: NormalizeConfig = NormalizeConfig()
    total_timesteps: Int = Field(default=1_000_000, ge=1, le=10**10)
    seed: Int = Field(default=0, ge=0, le=2**31 - 1)
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    torch_threads: OptionalInt = Field(default=None, ge=1, le=256)
    #: Threads the training env steps its exchanges on (bit-identical results; None: the
    #: FUNDGYM_THREADS variable, default 1). With torch on one thread, 2 uses the other core.
    env_threads: OptionalInt = Field(default=None, ge=1, le=256)
    #: Controlled levers whose action is a move from where they start rather than a position
    #: in their range (:mod:`fundgym.agents.action_map`): action 0 holds the start.
    centred_levers: list[str] = Field(default_factory=list, max_length=64)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-ready data (every default written out)."""
        if self.markets is not None:  # the one-market section is a placeholder: not written
            return self.model_dump(mode="python", exclude={"env"})
        data = self.model_dump(mode="python", exclude={"env", "markets"})
        env = dataclasses.asdict(self.env)
        env["controlled"] = list(env["controlled"])
        return {"env": env, **data}


# ---------------------------------------------------------------- loading ----


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file and the ``defaults`` files it names, merged (base first)."""
    if path.is_dir():
        raise ConfigError([f"{path}: is a directory; expected a training config (YAML file)"])
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    if path.resolve() in chain:
        raise ConfigError([f"{path}: defaults form a cycle ({' -> '.join(map(str, chain))})"])
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a config is YAML"]
        ) from exc
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror or exc})"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: <top> = {data!r}: a mapping of training settings"])
    bases = data.pop("defaults", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError([f"{path}: defaults = {bases!r}: a file name or a list of them"])
    merged: dict[str, Any] = {}
    for name in bases:
        merged = _merge(merged, _read_yaml(_base_path(path, name), (*chain, path.resolve())))
    return _merge(merged, data)


def _base_path(config: Path, name: str) -> Path:
    """Where a ``defaults:`` entry of ``config`` lives: beside it, else among the packaged configs.

    A user who copies ``ppo.yaml`` into their own folder keeps ``defaults: base.yaml`` working:
    the name resolves to the packaged ``base.yaml`` unless a file of that name sits beside the
    copy (which then wins, so a user can override a base too).
    """
    beside = config.parent / name
    if beside.is_file():
        return beside
    packaged = TRAIN_CONFIG_DIR / name
    if not Path(name).is_absolute() and packaged.is_file():
        return packaged
    shipped = sorted(p.name for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(
        [
            f"{config}: defaults names {name!r}, which is neither a file beside it ({beside}) "
            f"nor a packaged training config (one of {shipped})"
        ]
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into the key path and the value (parsed as YAML: 3, 1e-4, [..])."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError([f"--set {text!r}: expected KEY.PATH=VALUE, e.g. n_envs=32"])
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {text!r}: the value is not valid YAML: {exc}"]) from exc
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to raw config data (validation comes afterwards)."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    [f"--set {text!r}: {part} = {child!r} is not a mapping of settings"]
                )
            node = child
        node[path[-1]] = value
    return out


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<top>"


def _pydantic_problems(source: str, prefix: str, exc: ValidationError, model: type) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = err["loc"]
        where = ".".join(p for p in (prefix, _loc(loc)) if p)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            rule = f"unknown key; allowed: {allowed}"
        elif err["type"] == "bool_type":
            rule = "true or false"
        else:
            rule = err["msg"]
        problems.append(f"{source}: {where} = {err.get('input')!r}: {rule}")
    return problems


def _allowed_keys(model: type, loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc``."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        ann = field.annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def validate(data: dict[str, Any], source: str) -> TrainConfig:
    """Validate raw config data; raise :class:`ConfigError` listing every problem found."""
    problems: list[str] = []
    raw = dict(data)
    if "markets" in raw and "env" in raw:
        problems.append(
            f"{source}: env = {raw['env']!r}: a multi-market config sets its environment in "
            "markets: (MarketsInsuranceFund-v0); remove env (from the file and from the "
            "defaults it names)"
        )
    markets_raw = raw.get("markets")
    if isinstance(markets_raw, dict) and isinstance(markets_raw.get("reward"), dict):
        try:  # the env's own schema: names the weight, its value and its range
            build(RewardWeights, markets_raw["reward"], source, "markets.reward")
        except SchemaError as exc:
            problems.append(str(exc))
    env_raw = raw.pop("env", {})
    hyper_raw = raw.pop("hyperparameters", {}) or {}
    env: EnvConfig | None = None
    try:  # the environment's schema names a bad lever (unknown, not controllable, repeated)
        env = build(EnvConfig, env_raw if env_raw is not None else {}, source, "env")
    except SchemaError as exc:
        problems.append(str(exc))
    algo = raw.get("algo", "ppo")
    hyper_model = HYPER_MODELS.get(algo) if isinstance(algo, str) else None
    hyper: _Common | None = None
    if hyper_model is not None:
        if not isinstance(hyper_raw, dict):
            problems.append(
                f"{source}: hyperparameters = {hyper_raw!r}: a mapping of {algo} settings"
            )
        else:
            try:
                hyper = hyper_model.model_validate(hyper_raw)
            except ValidationError as exc:
                problems += _pydantic_problems(source, "hyperparameters", exc, hyper_model)
    # The rest, with placeholders for the parts validated above.
    placeholder_env = env or EnvConfig()
    placeholder_hyper = hyper or (hyper_model or PPOHyper)()
    try:
        cfg = TrainConfig.model_validate(
            {**raw, "env": placeholder_env, "hyperparameters": placeholder_hyper}
        )
    except ValidationError as exc:
        problems += _pydantic_problems(source, "", exc, TrainConfig)
        cfg = None
    if problems or cfg is None:
        raise ConfigError(problems)
    hp = cfg.hyperparameters
    if isinstance(hp, PPOHyper) and hp.batch_size > hp.n_steps * cfg.n_envs:
        raise ConfigError(
            [
                f"{source}: hyperparameters.batch_size = {hp.batch_size}: at most n_steps x "
                f"n_envs = {hp.n_steps * cfg.n_envs} (one rollout)"
            ]
        )
    if cfg.markets is not None and cfg.centred_levers:
        raise ConfigError(
            [
                f"{source}: centred_levers = {cfg.centred_levers}: none with markets: "
                "(markets.centred: true centres every lever on its default)"
            ]
        )
    controlled = list(cfg.env.controlled)
    stray = [n for n in cfg.centred_levers if n not in controlled]
    if stray or len(set(cfg.centred_levers)) != len(cfg.centred_levers):
        raise ConfigError(
            [
                f"{source}: centred_levers = {cfg.centred_levers}: distinct levers of "
                f"env.controlled ({controlled})"
            ]
        )
    if isinstance(hp, PPOLagrangianHyper) and hp.multiplier_init > hp.multiplier_max:
        raise ConfigError(
            [
                f"{source}: hyperparameters.multiplier_init = {hp.multiplier_init}: at most "
                f"multiplier_max = {hp.multiplier_max}"
            ]
        )
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, merge ``defaults``, apply ``--set`` overrides, and validate a training config."""
    p = Path(path)
    data = apply_overrides(_read_yaml(p), overrides or [])
    return validate(data, str(p))


def check_scenarios(cfg: TrainConfig, source: str) -> None:
    """Load every scenario ``cfg`` names (``env.scenario``, ``eval.scenarios``), before training.

    A name is ``training`` (the sampler), a library scenario or a YAML file; the config itself
    cannot tell a typo from a file to come, so the command line calls this before it writes a
    run directory, and a typo fails at once rather than at the first evaluation.

    Raises:
        ConfigError: One line per name that is neither, or a file the scenario schema refuses.
    """
    if cfg.markets is not None:
        _check_markets(cfg, cfg.markets, source)
        return
    problems: list[str] = []
    named = [("env.scenario", cfg.env.scenario)]
    named += [(f"eval.scenarios.{i}", n) for i, n in enumerate(cfg.eval.scenarios)]
    for where, name in named:
        if name == "training":
            continue
        try:
            require_single_market(load_scenario(name))
        except SchemaError as exc:
            problems.append(f"{source}: {where} = {name!r}: the scenario file is invalid: {exc}")
        except FileNotFoundError:
            problems.append(
                f"{source}: {where} = {name!r}: not 'training', a library scenario "
                f"({', '.join(scenario_names())}) or a YAML file"
            )
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{source}: {where} = {name!r}: the file cannot be read ({exc})")
    if problems:
        raise ConfigError(problems)


def _check_markets(cfg: TrainConfig, markets: MarketsConfig, source: str) -> None:
    """:func:`check_scenarios` for a multi-market config: every scenario builds the same spaces.

    Each scenario (``markets.scenario``; ``eval.scenarios``, where ``training`` is the training
    scenario on held-out seeds) must list several markets, and build the env with the config's
    settings (its fund groups, fund asset and engine checked against its markets) with the
    training scenario's action and observation layout: one network acts on all of them.
    """
    from fundgym.envs.markets_env import MarketsInsuranceFundEnv

    problems: list[str] = []
    named = [("markets.scenario", markets.scenario)]
    named += [
        (f"eval.scenarios.{i}", n) for i, n in enumerate(cfg.eval.scenarios) if n != "training"
    ]
    layout: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    for where, name in named:
        try:
            scenario = load_scenario(name)
        except SchemaError as exc:
            problems.append(f"{source}: {where} = {name!r}: the scenario file is invalid: {exc}")
            continue
        except FileNotFoundError:
            problems.append(
                f"{source}: {where} = {name!r}: not a library scenario "
                f"({', '.join(scenario_names())}) or a YAML file"
            )
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{source}: {where} = {name!r}: the file cannot be read ({exc})")
            continue
        if scenario.n_markets < 2:
            problems.append(
                f"{source}: {where} = {name!r}: lists one market; markets: trains on a scenario "
                "with a markets: section (alt_contagion, oct_10_2025_multi, luna_2022_multi)"
            )
            continue
        try:  # one slot: the settings are checked against the scenario, nothing is simulated
            env = MarketsInsuranceFundEnv(scenario, **markets_env_kwargs(markets, n_accounts=1))
        except ValueError as exc:
            problems.append(f"{source}: markets (with {where} = {name!r}): {exc}")
            continue
        here = (env.action_names(), env.observation_names())
        if layout is None:
            layout = here
        elif here != layout:
            problems.append(
                f"{source}: {where} = {name!r}: its actions ({len(here[0])}) and observations "
                f"({len(here[1])}) differ from markets.scenario's ({len(layout[0])}, "
                f"{len(layout[1])}): a multi-market policy acts on scenarios listing the same "
                "markets and collateral assets"
            )
    if problems:
        raise ConfigError(problems)


def markets_env_kwargs(markets: MarketsConfig, **override: Any) -> dict[str, Any]:
    """``MarketsInsuranceFundEnv``'s keyword arguments (all but the scenario) from ``markets``."""
    kw = markets.model_dump(mode="python", exclude={"scenario", "reward", "centred", "sampler"})
    kw["reward"] = build(RewardWeights, dict(markets.reward), "config", "markets.reward")
    kw["sampler"] = (
        None
        if markets.sampler is None
        else build(MarketsSamplerSettings, dict(markets.sampler), "config", "markets.sampler")
    )
    return {**kw, **override}


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML (what a run directory's ``config.yaml`` holds)."""
    return str(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def saved_config_matches(saved: Path, cfg: TrainConfig) -> bool:
    """Whether the run config saved at ``saved`` resolves to ``cfg``.

    Compared resolved, not as text: the saved YAML is validated again, so a setting added to
    the schema since the run was saved (a new reward weight, at its default) takes its default
    on both sides, and a run from before it is still the same run (``--resume``, the demo's
    reuse). A saved file that no longer validates (a setting since removed or narrowed) does
    not match.
    """
    resolved = dump_config(cfg)
    text = saved.read_text(encoding="utf-8")
    if text == resolved:
        return True
    try:
        data = yaml.safe_load(text)
        return isinstance(data, dict) and dump_config(validate(data, str(saved))) == resolved
    except (yaml.YAMLError, ConfigError):
        return False


# ---------------------------------------------------------------- environment kwargs ----


def env_settings(cfg: EnvConfig) -> dict[str, Any]:
    """An env config as plain keyword arguments (tuples for ``controlled``)."""
    kw = dataclasses.asdict(cfg)
    kw["controlled"] = tuple(kw["controlled"])
    return kw


def env_kwargs(cfg: TrainConfig, scenario: str | None = None) -> dict[str, Any]:
    """Keyword arguments for the environment from the config's ``env`` section."""
    kw = env_settings(cfg.env)
    if scenario is not None:
        kw["scenario"] = scenario
        if scenario != "training" and cfg.env.scenario == "training":
            kw["horizon_minutes"] = None  # a library scenario runs its own horizon
    return kw
