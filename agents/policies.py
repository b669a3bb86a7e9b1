"""The policies ``fundgym evaluate`` compares: trained runs, venue presets, a rule, searched sets.

A policy maps a batch of observations ``(n_envs, 32)`` to actions ``(n_envs, n_controlled)`` in
action units [-1, 1] (each coordinate the *target* position of one controlled parameter; the
environment rate-limits the move and delays margin increases). Some policies also change how the
environment starts (``env_overrides``): a static venue preset starts *at* its parameters (the
``fixed`` start values) rather than walking to them from the defaults, and the Binance preset
switches the maintenance requirement to Binance's notional brackets.

Policies are named by a **spec** string, parsed by :func:`parse_spec`:

* ``RUN_DIR``: a ``fundgym train`` run directory (its best model by held-out evaluation, with
  the observation normalisation it was trained with; ``RUN_DIR/model.zip`` if no best model);
* ``static:<preset>``: a venue's published parameters held fixed (:data:`PRESETS`), or
  ``static:name=value,...`` for any set in natural units;
* ``rule``: :class:`RulePolicy`, the hand-written dynamic controller risk teams run today;
* ``best_static`` / ``hindsight_static``: the static set a grid search picks on the training
  sampler / on the evaluation scenarios themselves (resolved by :mod:`agents.evaluate`);
* ``schedule:FILE`` / ``table:FILE``: an exported schedule or state table replayed without the
  model (:mod:`agents.schedule`, :mod:`agents.distill`).

Specs and resolved static values are plain data, so evaluation workers in other processes can
rebuild the same policy; trained models are loaded once per worker process.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from envs.controls import ALLOCATION, DEFAULTS, PARAMS
from envs.exchange_env import OBS_NAMES

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: The parameters a static set may name (the allocation stays all-stable: see ``STATIC_ALLOC``).
STATIC_PARAMS: tuple[str, ...] = (
    "liquidation_fee_rate",
    "liquidation_fee_fund_share",
    "mmr",
    "imr_multiple",
    "trading_fee_fund_share",
)


@dataclass(frozen=True)
class Preset:
    """A venue's risk parameters, in natural units, with where they come from.

    Attributes:
        values: Parameter name -> value (names from :data:`STATIC_PARAMS`).
        margin_tiers: The environment's ``margin_tiers`` setting for this venue.
        note: One line for the report: what the set is.
        sources: Where each number comes from.
    """

    values: dict[str, float]
    margin_tiers: str
    note: str
    sources: tuple[str, ...]


#: Static presets modelled on real venues' large-cap perpetual markets.
PRESETS: dict[str, Preset] = {
    "binance": Preset(
        values={
            "liquidation_fee_rate": 0.003,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.004,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="binance_btcusdt_2021",
        note=(
            "Binance-like BTCUSDT: tiered MMR from 0.4% (brackets to 50% above $300M), "
            "IMR 2x MMR (125x max leverage), 0.3% liquidation clearance fee to the fund"
        ),
        sources=(
            "MMR brackets: binance.com/en/futures/trading-rules/perpetual/leverage-margin "
            "(BTCUSDT 2021: 0.4% to $50k, 0.5% to $250k, 1% to $1M, ...)",
            "clearance fee 0.3% BTCUSDT, to the insurance fund: "
            "binance.zendesk.com/hc/en-us/articles/360033525271-Liquidation",
            "trading fees do not feed the insurance fund",
        ),
    ),
    "dydx": Preset(
        values={
            "liquidation_fee_rate": 0.015,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.03,
            "imr_multiple": 5.0 / 3.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        note="dYdX-like large cap: MMR 3%, IMR 5%, 1.5% max liquidation fee, all to the fund",
        sources=(
            "dYdX v4 perpetual params (large-cap liquidity tier: initial 5%, maintenance "
            "fraction 60% -> MMR 3%): github.com/dydxprotocol/v4-chain x/perpetuals",
            "max_liquidation_fee_ppm = 15,000 (1.5%), paid to the insurance fund: "
            "x/clob liquidations_config",
            "trading fees go to stakers, not the insurance fund",
        ),
    ),
    "hyperliquid": Preset(
        values={
            "liquidation_fee_rate": 0.008,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.0125,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        note=(
            "Hyperliquid-like BTC: 40x max leverage (IMR 2.5%), MM half of it (1.25%); the "
            "0.8% fee stands for the margin HLP keeps on backstop liquidations (2/3 of MM)"
        ),
        sources=(
            "MM = 1/2 IM at max leverage; backstop below 2/3 MM to the HLP liquidator vault, "
            "which keeps the remaining margin: hyperliquid.gitbook.io/hyperliquid-docs/trading/"
            "liquidations",
            "BTC max leverage 40x: hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers",
        ),
    ),
}

#: Allocation positions of every static policy: the fund all in stable assets.
STATIC_ALLOC: dict[str, float] = {name: DEFAULTS[name] for name in ALLOCATION}


class SpecError(ValueError):
    """A policy spec that names nothing fundgym can run (the message says what is allowed)."""


class Policy(Protocol):
    """What the evaluation loop needs from a policy."""

    name: str

    def reset(self, n_envs: int) -> None:
        """Forget per-exchange state before a new batch of episodes."""

    def act(self, obs: FloatArray) -> FloatArray:
        """Target positions ``(n_envs, n_controlled)`` in [-1, 1] for observations ``obs``."""


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec: plain data a worker process can rebuild the policy from.

    Attributes:
        name: Display name (``static:dydx``, ``rule``, a run directory's name, ...).
        kind: ``"trained"``, ``"static"``, ``"rule"``, ``"search"`` (best/hindsight static,
            resolved into ``"static"`` before running), ``"schedule"`` or ``"table"``.
        path: The run directory (``trained``) or the exported file (``schedule``, ``table``).
        values: Natural-unit static values (``static``) after resolution.
        margin_tiers: Environment ``margin_tiers`` the policy runs under.
        note: One line for the report.
    """

    name: str
    kind: str
    path: str | None = None
    values: dict[str, float] = field(default_factory=dict)
    margin_tiers: str = "none"
    note: str = ""

    def env_overrides(self) -> dict[str, Any]:
        """Environment settings this policy changes: where parameters start, margin tiers."""
        if self.kind != "static":
            return {}  # trained runs and their exports keep the settings they were made in
        return {
            "margin_tiers": self.margin_tiers,
            "fixed": {k: self.values[k] for k in STATIC_PARAMS if k in self.values},
        }


def _static_values_from_text(text: str, spec: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in text.split(","):
        if "=" not in item:
            raise SpecError(f"policy {spec!r}: expected name=value, got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in STATIC_PARAMS:
            raise SpecError(
                f"policy {spec!r}: unknown parameter {key!r}; allowed: {list(STATIC_PARAMS)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise SpecError(f"policy {spec!r}: {key} = {raw!r} is not a number") from None
        r = PARAMS[key]
        if not (np.isfinite(value) and r.low <= value <= r.high):
            raise SpecError(
                f"policy {spec!r}: {key} = {value!r} is outside its range [{r.low}, {r.high}]"
            )
        values[key] = value
    return {**{k: DEFAULTS[k] for k in STATIC_PARAMS}, **values}


def parse_spec(spec: str) -> PolicySpec:
    """Parse a ``--policy`` argument (see the module docstring for the forms).

    Raises:
        SpecError: If the spec names no preset, baseline, file or run directory; the message
            lists what is allowed.
    """
    text = spec.strip()
    if text.startswith("static:"):
        body = text[len("static:") :]
        if body in PRESETS:
            p = PRESETS[body]
            return PolicySpec(
                text, "static", values=dict(p.values), margin_tiers=p.margin_tiers, note=p.note
            )
        if "=" in body:
            values = _static_values_from_text(body, text)
            note = "static: " + ", ".join(f"{k} {values[k]:g}" for k in STATIC_PARAMS)
            return PolicySpec(text, "static", values=values, note=note)
        raise SpecError(
            f"policy {spec!r}: unknown preset {body!r}; allowed: "
            f"{', '.join('static:' + p for p in PRESETS)} or static:name=value,..."
        )
    if text == "rule":
        return PolicySpec("rule", "rule", note=RulePolicy.NOTE)
    if text in ("best_static", "hindsight_static"):
        return PolicySpec(text, "search")
    for prefix in ("schedule:", "table:"):
        if text.startswith(prefix):
            path = Path(text[len(prefix) :])
            if not path.is_file():
                raise SpecError(f"policy {spec!r}: file {path} does not exist")
            kind = prefix[:-1]
            note = f"exported {kind} {path.name} replayed without the model"
            return PolicySpec(text, kind, path=str(path.resolve()), note=note)
    path = Path(text)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise SpecError(f"policy {spec!r}: {path} has no config.yaml (not a fundgym run)")
        if not any((path / m).is_file() for m in ("best_model.zip", "model.zip")):
            raise SpecError(f"policy {spec!r}: {path} has neither best_model.zip nor model.zip")
        return PolicySpec(path.resolve().name, "trained", path=str(path.resolve()))
    raise SpecError(
        f"policy {spec!r}: not a run directory, and not one of static:<preset> "
        f"({', '.join(PRESETS)}), static:name=value,..., rule, best_static, hindsight_static, "
        "schedule:FILE, table:FILE"
    )


# ------------------------------------------------------------------ static ----


class StaticPolicy:
    """Always ask for the same parameters (the environment starts there too)."""

    def __init__(self, name: str, values: dict[str, float], controlled: tuple[str, ...]) -> None:
        full = {**DEFAULTS, **STATIC_ALLOC, **values}
        self.name = name
        self._target = np.array([float(PARAMS[n].to_position(full[n])) for n in controlled])

    def reset(self, n_envs: int) -> None:
        """Nothing to forget."""

    def act(self, obs: FloatArray) -> FloatArray:
        """The same target for every exchange and every step."""
        return np.tile(self._target, (obs.shape[0], 1))


# ------------------------------------------------------------------ rule ------

_OBS = {name: i for i, name in enumerate(OBS_NAMES)}


@dataclass(frozen=True)
class RuleParams:
    """Settings of :class:`RulePolicy` (the kind a risk team writes into a runbook).

    Attributes:
        z: Standard deviations of price move the maintenance margin must cover.
        horizon_hours: Time to close a position out in stress (the margin period of risk).
        apc_buffer_frac: Anti-procyclicality buffer on top of the volatility margin in calm
            markets, released in stress (EMIR RTS 153/2013 art. 28(1)(a): 25%).
        apc_floor_frac: Margin never falls below this share of the highest margin of the
            episode so far (a look-back floor, so a calm hour cannot undo a stressed day).
        stress_ratio: Short over long volatility above which the market counts as stressed.
        fee_base: Liquidation fee at the target fund coverage.
        coverage_target_frac: Target fund value / open interest.
        yield_share_calm: Share of the fund in the yield bucket in calm markets.
        calm_vol: Annualised short volatility below which the market counts as calm.
    """

    z: float = 3.0
    horizon_hours: float = 4.0
    apc_buffer_frac: float = 0.25
    apc_floor_frac: float = 0.75
    stress_ratio: float = 1.5
    fee_base: float = 0.01
    coverage_target_frac: float = 0.02
    yield_share_calm: float = 0.3
    calm_vol: float = 0.8


class RulePolicy:
    """A hand-written dynamic controller of the kind exchange risk teams run.

    * **Margin**: MMR covers ``z`` standard deviations of the price move over
      ``horizon_hours`` at the larger of the 1-hour and 1-day realised volatilities (the
      observation), plus a 25% anti-procyclicality buffer in calm markets that is released in
      stress, and never below 75% of the highest MMR it asked for this episode (a look-back
      floor); clearing houses (EMIR art. 28, CFTC) do this so margins do not collapse after a
      calm spell and then jump in a crash.
    * **Fees**: the liquidation fee and the fund's share of trading fees rise as fund
      coverage (fund / open interest) falls below target: the fund refills fastest when it is
      lowest.
    * **Allocation**: part of the fund earns yield in calm markets; all of it moves to stable
      assets when volatility rises (yield withdrawals are limited under stress).

    Args:
        controlled: The environment's controlled parameters, in action order.
        params: The rule's settings.
    """

    NOTE = (
        "rule: MMR = 3 sigma of a 4-hour move (+25% buffer in calm, 75% look-back floor), fees "
        "up as fund coverage falls, fund to stable assets when volatility rises"
    )

    def __init__(self, controlled: tuple[str, ...], params: RuleParams | None = None) -> None:
        self.name = "rule"
        self.controlled = controlled
        self.p = params or RuleParams()
        self._peak_mmr = np.zeros(0)

    def reset(self, n_envs: int) -> None:
        """Forget the look-back floor."""
        self._peak_mmr = np.zeros(n_envs)

    def targets(self, obs: FloatArray) -> dict[str, FloatArray]:
        """The rule's targets in natural units (allocation as logit positions)."""
        p = self.p
        n = obs.shape[0]
        if self._peak_mmr.shape != (n,):
            self.reset(n)
        new = obs[:, _OBS["episode_progress"]] <= 0.0
        self._peak_mmr[new] = 0.0
        vol_short = obs[:, _OBS["vol_short"]]
        vol_long = obs[:, _OBS["vol_long"]]
        vol = np.maximum(vol_short, vol_long)
        stressed = vol_short > p.stress_ratio * np.maximum(vol_long, 1e-9)
        mmr = p.z * vol * np.sqrt(p.horizon_hours / (365.0 * 24.0))
        mmr = np.where(stressed, mmr, mmr * (1.0 + p.apc_buffer_frac))
        mmr = np.maximum(mmr, p.apc_floor_frac * self._peak_mmr)
        r = PARAMS["mmr"]
        mmr = np.clip(mmr, r.low, r.high)
        self._peak_mmr = np.maximum(self._peak_mmr, mmr)
        coverage = obs[:, _OBS["fund_coverage"]] / 10.0
        short = np.clip(1.0 - coverage / p.coverage_target_frac, 0.0, 1.0)
        fee = np.clip(p.fee_base * (1.0 + 2.0 * short), 0.001, 0.03)
        calm = (vol_short < p.calm_vol) & ~stressed
        # softmax(3 x logits): stable at +1 and yield at x gives yield share
        # 1 / (1 + exp(3 (1 - x))); solve for the calm share, all others at -1.
        share = p.yield_share_calm
        yield_logit = 1.0 - np.log((1.0 - share) / share) / 3.0
        return {
            "liquidation_fee_rate": fee,
            "liquidation_fee_fund_share": np.ones(n),
            "mmr": mmr,
            "imr_multiple": np.full(n, DEFAULTS["imr_multiple"]),
            "trading_fee_fund_share": 0.1 + 0.4 * short,
            "alloc_stable": np.ones(n),
            "alloc_yield": np.where(calm, yield_logit, -1.0),
            "alloc_volatile": -np.ones(n),
            "alloc_hedge": -np.ones(n),
        }

    def act(self, obs: FloatArray) -> FloatArray:
        """Target positions of the controlled parameters."""
        t = self.targets(np.asarray(obs, dtype=np.float64))
        cols = [PARAMS[n].to_position(t[n]) for n in self.controlled]
        return np.stack(cols, axis=1)


# ------------------------------------------------------------------ trained ---


class TrainedPolicy:
    """A ``fundgym train`` run's model, observations normalised as in training, deterministic.

    Args:
        name: Display name.
        run_dir: The run directory.
    """

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self._predict = _load_run(str(run_dir))

    def reset(self, n_envs: int) -> None:
        """Feed-forward policies keep no state."""

    def act(self, obs: FloatArray) -> FloatArray:
        """The model's deterministic action."""
        return self._predict(obs)


def run_config_file(run_dir: Path, error: type[Exception] = SpecError) -> Path:
    """A run directory's resolved ``config.yaml``; ``error`` names what is missing."""
    if not run_dir.is_dir():
        raise error(
            f"{run_dir}: no such run directory (expected one written by `fundgym train`, "
            "holding config.yaml and model.zip)"
        )
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise error(f"{config_path}: missing; a run directory holds its resolved config")
    return config_path


def run_model_files(run_dir: Path) -> tuple[Path, Path | None]:
    """The model and normalisation files a run is evaluated with (best model if saved)."""
    for model, norm in (
        ("best_model.zip", "best_vecnormalize.pkl"),
        ("model.zip", "vecnormalize.pkl"),
    ):
        if (run_dir / model).is_file():
            n = run_dir / norm
            return run_dir / model, (n if n.is_file() else None)
    raise SpecError(f"{run_dir}: neither best_model.zip nor model.zip")


def space_mismatch(model: Any, n_actions: int) -> str | None:
    """Why ``model`` cannot act in this environment, or ``None`` when its spaces fit.

    A run from another fundgym version (another observation layout) or config (another set of
    controlled levers) would otherwise fail deep inside torch with a matrix-shape error.
    """
    n_obs = len(OBS_NAMES)
    obs_shape, act_shape = model.observation_space.shape, model.action_space.shape
    if obs_shape == (n_obs,) and act_shape == (n_actions,):
        return None
    return (
        f"the model maps observations {obs_shape} to actions {act_shape}, but this "
        f"environment has ({n_obs},) observations and ({n_actions},) actions; it was trained "
        "by another fundgym version: retrain it"
    )


@functools.lru_cache(maxsize=8)
def _load_run(run_dir: str) -> Callable[[FloatArray], FloatArray]:
    """Load a run's model once per process (workers evaluate many scenarios with it)."""
    import stable_baselines3 as sb3
    import torch

    from agents.train_config import load_config

    torch.set_num_threads(1)
    path = Path(run_dir)
    cfg = load_config(path / "config.yaml")
    model_path, norm_path = run_model_files(path)
    algo = getattr(sb3, cfg.algo.upper())
    try:
        model = algo.load(model_path, device="cpu")
    except Exception as exc:
        raise SpecError(f"{model_path}: cannot load a {cfg.algo.upper()} model ({exc})") from exc
    mismatch = space_mismatch(model, len(cfg.env.controlled))
    if mismatch:
        raise SpecError(f"{model_path}: {mismatch}")
    vecnorm = None
    if norm_path is not None:
        try:
            vecnorm = pickle.loads(norm_path.read_bytes())
        except Exception as exc:
            raise SpecError(f"{norm_path}: cannot load VecNormalize statistics ({exc})") from exc

    def predict(obs: FloatArray) -> FloatArray:
        x = vecnorm.normalize_obs(obs.astype(np.float32)) if vecnorm is not None else obs
        action, _ = model.predict(x, deterministic=True)
        return np.asarray(action, dtype=np.float64)

    return predict


def build_policy(spec: PolicySpec, controlled: tuple[str, ...]) -> Policy:
    """The runnable policy of a resolved spec (``search`` specs must be resolved first)."""
    if spec.kind == "static":
        return StaticPolicy(spec.name, spec.values, controlled)
    if spec.kind == "rule":
        return RulePolicy(controlled)
    if spec.kind == "trained":
        assert spec.path is not None
        return TrainedPolicy(spec.name, Path(spec.path))
    if spec.kind == "schedule":
        from agents.schedule import SchedulePolicy

        assert spec.path is not None
        return SchedulePolicy(Path(spec.path), spec.name, controlled)
    if spec.kind == "table":
        from agents.distill import TablePolicy

        assert spec.path is not None
        return TablePolicy.load(Path(spec.path), spec.name, controlled)
    raise SpecError(f"policy {spec.name!r} ({spec.kind}) must be resolved before it runs")
