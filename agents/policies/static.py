"""Static policies: the same parameters at every decision, from a preset or ``name=value`` text."""

from __future__ import annotations

import numpy as np

from fundgym.agents.policies.base import FloatArray, SpecError
from fundgym.agents.policies.presets import STATIC_ALLOC, STATIC_PARAMS
from fundgym.envs.controls import DEFAULTS, PARAMS
from fundgym.envs.levers import LeverError


def parse_static_values(text: str, spec: str) -> dict[str, float]:
    """Natural-unit values of ``static:name=value,...`` (the rest at their defaults).

    Raises:
        SpecError: An unknown name, or a value that is not a number or lies outside its
            lever's action range (the message names the lever, the value and the range).
    """
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
        lever = PARAMS[key]
        try:
            lever.to_position(value)  # the environment holds it as a position in that range
        except LeverError as exc:
            raise SpecError(f"policy {spec!r}: {exc}") from None
        # Inside the range, or its edge up to float round-off (which the clip removes).
        values[key] = float(lever.clip(value))
    return {**{k: DEFAULTS[k] for k in STATIC_PARAMS}, **values}


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
