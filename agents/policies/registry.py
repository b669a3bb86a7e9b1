"""The policy registry: spec strings parsed into plain data, and runnable policies built from it.

A spec names a policy (see :mod:`fundgym.agents.policies` for the forms); :func:`parse_spec` checks
it and :func:`build_policy` turns the resolved spec into the object the stepping loop calls. Specs
are plain data, so evaluation workers in other processes can rebuild the same policy.

:func:`parse_specs` also takes a multi-seed directory (``fundgym train --seeds`` output: no run of
its own, one run per seed in ``seed_<S>/``) and expands it into one trained policy per seed, named
``NAME@seed_<S>`` (:func:`seed_policy_name`) and marked with their ``group`` and ``train_seed``, so
the evaluation can report statistics across seeds (:mod:`fundgym.agents.evaluate.seeds`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundgym.agents.policies.base import Policy, SpecError
from fundgym.agents.policies.presets import MARGIN_TIERS, PRESETS, STATIC_PARAMS
from fundgym.agents.policies.replay import SchedulePolicy, TablePolicy
from fundgym.agents.policies.rule import RulePolicy
from fundgym.agents.policies.runs import (
    default_model_dir,
    is_seed_group,
    seed_dir_name,
    seed_runs,
)
from fundgym.agents.policies.static import StaticPolicy, parse_static_values
from fundgym.agents.policies.trained import TrainedPolicy
from fundgym.envs.config import EnvConfig
from fundgym.envs.controls import DEFAULTS
from fundgym.envs.core.params import AdlPolicy, LiquidationMode

#: The environment settings a static spec may name besides the levers: the sizes, at the start
#: of an episode and as shares of open interest, of the insurance fund
#: (``EnvConfig.fund_to_oi_frac``) and of the backstop vault (``EnvConfig.vault_to_oi_frac``).
FUND_KEY = "fund_to_oi_frac"
VAULT_KEY = "vault_to_oi_frac"
#: The backstop vault's loss limit as a share of its capital (``EnvConfig.vault_adl_loss_frac``;
#: a spec that does not name it keeps the environment's, by default the liquidation mode's own).
VAULT_LOSS_KEY = "vault_adl_loss_frac"
#: The venue's top-ups of an exhausted fund (``EnvConfig.fund_injection_frac``, a share of
#: open interest, and ``EnvConfig.fund_injection_max``, a whole number of top-ups).
INJECTION_KEY = "fund_injection_frac"
INJECTION_MAX_KEY = "fund_injection_max"
#: What each of them is, for messages.
SHARE_MEANINGS: dict[str, str] = {
    FUND_KEY: "the fund at the start of an episode, as a share of open interest",
    VAULT_KEY: "the backstop vault's capital at the start of an episode, as a share of open "
    "interest",
    VAULT_LOSS_KEY: "the backstop vault's loss, as a share of its capital, beyond which its "
    "inventory is deleveraged",
    INJECTION_KEY: "one top-up of an exhausted fund, as a share of open interest",
    INJECTION_MAX_KEY: "top-ups of an exhausted fund at most per episode, a whole number",
}


def _env_range(name: str) -> tuple[float, float]:
    """The allowed range of ``EnvConfig.<name>``: its field's ``ge`` and ``le``."""
    field_ = next(f for f in dataclasses.fields(EnvConfig) if f.name == name)
    return float(field_.metadata["ge"]), float(field_.metadata["le"])


#: Their allowed ranges, the environment config's own (one home for the bounds).
SHARE_RANGES: dict[str, tuple[float, float]] = {key: _env_range(key) for key in SHARE_MEANINGS}

#: The engine's named choices a static spec may set (``EnvConfig`` fields of the same names):
#: so the spec text of a searched set that carries its engine (``best_static``'s,
#: :meth:`fundgym.agents.policies.presets.Engine.text`) can be pasted back as a policy.
ENGINE_CHOICES: dict[str, tuple[str, ...]] = {
    "liquidation_mode": typing.get_args(LiquidationMode),
    "adl_policy": typing.get_args(AdlPolicy),
    "margin_tiers": MARGIN_TIERS,
}


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
        adl_policy: Environment ``adl_policy`` the policy runs under (a venue preset's ADL
            rule); ``None`` keeps the evaluation environment's.
        liquidation_mode: Environment ``liquidation_mode`` the policy runs under (a venue
            preset's engine); ``None`` keeps the evaluation environment's.
        fund_to_oi_frac: Environment ``fund_to_oi_frac`` the policy runs under (a venue
            preset's fund size, or one a static spec names); ``None`` keeps the evaluation
            environment's.
        vault_to_oi_frac: Environment ``vault_to_oi_frac`` the policy runs under (a venue
            preset's backstop vault, 0 for a venue without one, or one a static spec names);
            ``None`` keeps the evaluation environment's.
        vault_adl_loss_frac: Environment ``vault_adl_loss_frac`` the policy runs under (one a
            static spec names); ``None`` keeps the evaluation environment's.
        fund_injection_frac: Environment ``fund_injection_frac`` the policy runs under (a
            venue preset's top-ups, or one a static spec names); ``None`` keeps the
            evaluation environment's.
        fund_injection_max: Environment ``fund_injection_max``, the same way.
        note: One line for the report.
        group: The multi-seed directory's name (``trained`` runs expanded by
            :func:`parse_specs`); ``None`` for a policy of its own.
        train_seed: The training seed of such a run (``None`` outside a group).
    """

    name: str
    kind: str
    path: str | None = None
    values: dict[str, float] = field(default_factory=dict)
    margin_tiers: str = "none"
    liquidation_mode: str | None = None
    adl_policy: str | None = None
    fund_to_oi_frac: float | None = None
    vault_to_oi_frac: float | None = None
    vault_adl_loss_frac: float | None = None
    fund_injection_frac: float | None = None
    fund_injection_max: int | None = None
    note: str = ""
    group: str | None = None
    train_seed: int | None = None

    def env_overrides(self) -> dict[str, Any]:
        """Environment settings this policy changes: starts, tiers, engine, ADL, fund, vault."""
        if self.kind != "static":
            return {}  # trained runs and their exports keep the settings they were made in
        out: dict[str, Any] = {
            "margin_tiers": self.margin_tiers,
            "fixed": {k: self.values[k] for k in STATIC_PARAMS if k in self.values},
        }
        if self.liquidation_mode is not None:
            out["liquidation_mode"] = self.liquidation_mode
        if self.adl_policy is not None:
            out["adl_policy"] = self.adl_policy
        if self.fund_to_oi_frac is not None:
            out[FUND_KEY] = self.fund_to_oi_frac
        if self.vault_to_oi_frac is not None:
            out[VAULT_KEY] = self.vault_to_oi_frac
        if self.vault_adl_loss_frac is not None:
            out[VAULT_LOSS_KEY] = self.vault_adl_loss_frac
        if self.fund_injection_frac is not None:
            out[INJECTION_KEY] = self.fund_injection_frac
        if self.fund_injection_max is not None:
            out[INJECTION_MAX_KEY] = self.fund_injection_max
        return out


def parse_spec(spec: str) -> PolicySpec:
    """Parse a ``--policy`` argument (see the module docstring for the forms).

    Raises:
        SpecError: If the spec names no preset, baseline, file or run directory; the message
            lists what is allowed.
    """
    text = spec.strip()
    if text.startswith("static:"):
        return _parse_static(text)
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
        if is_seed_group(path):
            raise SpecError(
                f"policy {spec!r}: {path} holds one run per seed (seed_<S>/); name one of "
                "them (fundgym evaluate takes the whole directory)"
            )
        if not (path / "config.yaml").is_file():
            raise SpecError(
                f"policy {spec!r}: {path} has no config.yaml and no seed_<S>/ runs (not a "
                "fundgym run, nor a multi-seed training directory)"
            )
        default_model_dir(path)  # RunError (a SpecError) naming what is missing, or an old run
        return PolicySpec(path.resolve().name, "trained", path=str(path.resolve()))
    raise SpecError(
        f"policy {spec!r}: not a run directory, and not one of static:<preset> "
        f"({', '.join(PRESETS)}), static:name=value,..., rule, best_static, hindsight_static, "
        "schedule:FILE, table:FILE"
    )


def seed_policy_name(group: str, seed: int) -> str:
    """Seed ``seed``'s policy name in multi-seed directory ``group``: ``group@seed_<seed>``."""
    return f"{group}@{seed_dir_name(seed)}"


def parse_specs(specs: Sequence[str]) -> list[PolicySpec]:
    """Parse ``--policy`` arguments, expanding each multi-seed directory into its seeds' runs.

    A multi-seed directory (:func:`fundgym.agents.policies.runs.is_seed_group`) becomes one
    ``trained`` spec per seed, ascending, named by :func:`seed_policy_name` with ``group`` (the
    directory's name) and ``train_seed`` set; every other argument is :func:`parse_spec`'s.

    Raises:
        SpecError: As :func:`parse_spec`; for a multi-seed directory, a seed folder that is
            not a run (naming what it lacks) or seeds trained from different configs
            (:func:`fundgym.agents.policies.runs.seed_runs`).
    """
    out: list[PolicySpec] = []
    for text in specs:
        path = Path(text.strip())
        if not is_seed_group(path):
            out.append(parse_spec(text))
            continue
        group = path.resolve().name
        for seed, run in seed_runs(path).items():
            one = parse_spec(str(run))
            note = f"seed {seed} of the multi-seed training {group}"
            out.append(
                dataclasses.replace(
                    one,
                    name=seed_policy_name(group, seed),
                    group=group,
                    train_seed=seed,
                    note=note,
                )
            )
    return out


def _parse_static(text: str) -> PolicySpec:
    """A ``static:`` spec: a preset, a preset with ``name=value`` overrides, or a full set.

    ``static:binance`` is the venue; ``static:binance,mmr=0.01,fund_to_oi_frac=0.1`` the venue
    with those values replaced (its margin tiers and liquidation mode kept);
    ``static:mmr=0.05,...`` a set whose other levers keep their defaults and whose fund, vault
    and liquidation mode keep the environment's, the fund and the vault unless
    ``fund_to_oi_frac`` or ``vault_to_oi_frac`` is named. ``liquidation_mode=``,
    ``adl_policy=`` and ``margin_tiers=`` (:data:`ENGINE_CHOICES`) set the engine, over the
    preset's or the environment's.

    Raises:
        SpecError: An unknown preset or name, an item that is not ``name=value``, or a value
            that is not a number or lies outside its range (named, with the range).
    """
    items = [s.strip() for s in text[len("static:") :].split(",")]
    preset = PRESETS.get(items[0])
    if preset is not None:
        items = items[1:]
    elif "=" not in items[0]:
        raise SpecError(
            f"policy {text!r}: unknown preset {items[0]!r}; allowed: "
            f"{', '.join('static:' + p for p in PRESETS)}, optionally followed by "
            ",name=value overrides, or static:name=value,..."
        )
    shares: dict[str, float] = {}
    engine: dict[str, str] = {}
    levers: list[str] = []
    for item in items:
        key, equals, raw = (s.strip() for s in item.partition("="))
        if not equals:
            raise SpecError(f"policy {text!r}: expected name=value, got {item!r}")
        if key in SHARE_RANGES:
            shares[key] = _parse_share(key, raw, text)
        elif key in ENGINE_CHOICES:
            if raw not in ENGINE_CHOICES[key]:
                raise SpecError(
                    f"policy {text!r}: {key}={raw!r} is not one of {', '.join(ENGINE_CHOICES[key])}"
                )
            engine[key] = raw
        elif key in STATIC_PARAMS:
            levers.append(item)
        else:
            raise SpecError(
                f"policy {text!r}: unknown parameter {key!r}; allowed: "
                f"{[*STATIC_PARAMS, *SHARE_RANGES, *ENGINE_CHOICES]}"
            )
    given = parse_static_values(",".join(levers), text) if levers else {}
    named = {item.partition("=")[0].strip() for item in levers}
    fund, vault = shares.get(FUND_KEY), shares.get(VAULT_KEY)
    vault_loss = shares.get(VAULT_LOSS_KEY)
    top_up = shares.get(INJECTION_KEY)
    top_ups = None if INJECTION_MAX_KEY not in shares else int(shares[INJECTION_MAX_KEY])
    if preset is None:
        values = given or {k: DEFAULTS[k] for k in STATIC_PARAMS}
        note = "static: " + ", ".join(f"{k} {values[k]:g}" for k in STATIC_PARAMS)
        if fund is not None:
            note += f", fund {fund:.2%} of open interest"
        if vault is not None:
            note += f", vault {vault:.2%} of open interest"
        if vault_loss is not None:
            note += f", vault loss limit {vault_loss:.2%} of its capital"
        if top_up is not None or top_ups is not None:
            note += f", {_top_ups_text(top_up, top_ups)}"
        note += "".join(f", {k} {v}" for k, v in engine.items())
        return PolicySpec(
            text,
            "static",
            values=values,
            margin_tiers=engine.get("margin_tiers", "none"),  # checked against ENGINE_CHOICES
            liquidation_mode=engine.get("liquidation_mode"),
            adl_policy=engine.get("adl_policy"),
            fund_to_oi_frac=fund,
            vault_to_oi_frac=vault,
            vault_adl_loss_frac=vault_loss,
            fund_injection_frac=top_up,
            fund_injection_max=top_ups,
            note=note,
        )
    values = {**preset.values, **{k: given[k] for k in named}}
    fund_frac = preset.fund_to_oi_frac if fund is None else fund
    vault_frac = preset.vault_to_oi_frac if vault is None else vault
    estimate = " [E]" if fund is None and preset.fund_estimate else ""
    note = f"{preset.note}; fund {fund_frac:.2%} of open interest{estimate}"
    if vault_frac > 0.0:
        note += f"; backstop vault {vault_frac:.2%} of open interest"
    changed = [f"{k} {values[k]:g}" for k in STATIC_PARAMS if k in named]
    changed += [f"fund {fund:.2%}"] if fund is not None else []
    changed += [f"vault {vault:.2%}"] if vault is not None else []
    changed += [f"vault loss limit {vault_loss:.2%}"] if vault_loss is not None else []
    top_up_frac = preset.fund_injection_frac if top_up is None else top_up
    top_up_max = preset.fund_injection_max if top_ups is None else top_ups
    if top_up_frac > 0.0 and top_up_max > 0:
        note += f"; {_top_ups_text(top_up_frac, top_up_max)}"
    changed += [_top_ups_text(top_up, top_ups)] if (top_up, top_ups) != (None, None) else []
    changed += [f"{k} {v}" for k, v in engine.items()]
    if changed:
        note += "; overridden: " + ", ".join(changed)
    return PolicySpec(
        text,
        "static",
        values=values,
        margin_tiers=engine.get("margin_tiers", preset.margin_tiers),
        liquidation_mode=engine.get("liquidation_mode", preset.liquidation_mode),
        adl_policy=engine.get("adl_policy", preset.adl_policy),
        fund_to_oi_frac=fund_frac,
        vault_to_oi_frac=vault_frac,
        vault_adl_loss_frac=vault_loss,
        fund_injection_frac=top_up_frac,
        fund_injection_max=top_up_max,
        note=note,
    )


def _top_ups_text(frac: float | None, most: int | None) -> str:
    """``top-ups of 1.00% of open interest, at most 2``: a spec's top-ups, for its note."""
    size = "the environment's size" if frac is None else f"{frac:.2%} of open interest"
    count = "the environment's count" if most is None else f"at most {most}"
    return f"fund top-ups of {size}, {count}"


def _parse_share(key: str, raw: str, spec: str) -> float:
    """``key=raw`` of a static spec (the fund's or the vault's size), inside its range.

    Raises:
        SpecError: Not a number, or outside :data:`SHARE_RANGES` (the message names both and
            what the setting is).
    """
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"policy {spec!r}: {key} = {raw!r} is not a number") from None
    low, high = SHARE_RANGES[key]
    if not (math.isfinite(value) and low <= value <= high):
        raise SpecError(
            f"policy {spec!r}: {key} = {value!r} is outside [{low:g}, {high:g}] "
            f"({SHARE_MEANINGS[key]})"
        )
    if key == INJECTION_MAX_KEY and not value.is_integer():
        raise SpecError(
            f"policy {spec!r}: {key} = {value!r} is not a whole number ({SHARE_MEANINGS[key]})"
        )
    return value


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
        assert spec.path is not None
        return SchedulePolicy(Path(spec.path), spec.name, controlled)
    if spec.kind == "table":
        assert spec.path is not None
        return TablePolicy.load(Path(spec.path), spec.name, controlled)
    raise SpecError(f"policy {spec.name!r} ({spec.kind}) must be resolved before it runs")
