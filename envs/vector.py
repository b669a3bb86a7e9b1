"""What fundgym's batched environments check alike under Gymnasium's vector API.

``fundgym/InsuranceFund-v0``'s and ``fundgym/MarketsInsuranceFund-v0``'s vector forms take
the same ``autoreset_mode`` values and refuse the same malformed actions, with the same words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def checked_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` as an :class:`AutoresetMode` (the enum or its value), else a ValueError."""
    if isinstance(mode, AutoresetMode):
        return mode
    try:
        return AutoresetMode(mode)
    except ValueError:
        allowed = [m.value for m in AutoresetMode]
        raise ValueError(
            f"autoreset_mode = {mode!r}: not one of {allowed} (or gymnasium.vector.AutoresetMode)"
        ) from None


def checked_actions(actions: Any, started: bool, num_envs: int, action_dim: int) -> FloatArray:
    """``actions`` as float64 of shape exactly ``(num_envs, action_dim)``, after a reset.

    Raises:
        RuntimeError: No reset yet.
        ValueError: Another shape (reshaping would silently scramble a transposed
            ``(action_dim, num_envs)`` array).
    """
    if not started:
        raise RuntimeError("call reset() before step()")
    a = np.asarray(actions, dtype=np.float64)
    expected = (num_envs, action_dim)
    if a.shape != expected:
        raise ValueError(
            f"actions must have shape (num_envs, action_dim) = {expected}, got {a.shape}"
        )
    return a
