"""What every policy is: a map from a batch of observations to target parameter positions.

A policy maps observations ``(n_envs, 32)`` to actions ``(n_envs, n_controlled)`` in action
units [-1, 1] (each coordinate the *target* position of one controlled parameter; the
environment rate-limits the move and delays margin increases). The stepping loop
(:func:`fundgym.agents.rollout.first_episodes`) needs nothing else from it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


class SpecError(ValueError):
    """A policy spec that names nothing fundgym can run (the message says what is allowed)."""


class Policy(Protocol):
    """What the evaluation loop needs from a policy."""

    name: str

    def reset(self, n_envs: int) -> None:
        """Forget per-exchange state before a new batch of episodes."""

    def act(self, obs: FloatArray) -> FloatArray:
        """Target positions ``(n_envs, n_controlled)`` in [-1, 1] for observations ``obs``."""
