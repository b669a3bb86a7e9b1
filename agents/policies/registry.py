"""The policy registry: spec strings parsed into plain data, and runnable policies built from it.

A spec names a policy (see :mod:`fundgym.agents.policies` for the forms); :func:`parse_spec` checks
it and :func:`build_policy` turns the resolved spec into the object the stepping loop calls. Specs
are plain data, so evaluation workers in other processes can rebuild the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundgym.agents.policies.base import Policy, SpecError
from fundgym.agents.policies.presets import PRESETS, STATIC_PARAMS
from fundgym.agents.policies.replay import SchedulePolicy, TablePolicy
from fundgym.agents.policies.rule import RulePolicy
from fundgym.agents.policies.runs import default_model_dir
from fundgym.agents.policies.static import StaticPolicy, parse_static_values
from fundgym.agents.policies.trained import TrainedPolicy


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
            values = parse_static_values(body, text)
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
        default_model_dir(path)  # RunError (a SpecError) naming what is missing, or an old run
        return PolicySpec(path.resolve().name, "trained", path=str(path.resolve()))
    raise SpecError(
        f"policy {spec!r}: not a run directory, and not one of static:<preset> "
        f"({', '.join(PRESETS)}), static:name=value,..., rule, best_static, hindsight_static, "
        "schedule:FILE, table:FILE"
    )


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
