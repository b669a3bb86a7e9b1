"""The levers: actions in [-1, 1] mapped to risk parameters, rate-limited, with margin notice.

Each controlled parameter is a lever of :data:`fundgym.envs.levers.LEVERS`, the one place its action
range, default and unit are declared; an action coordinate ``a`` in [-1, 1] names a *target*
position in that range (linear, or logarithmic for rates spanning decades). The
position in force moves toward the target by at most ``max_step`` per decision (in action
units: 0.2 = a tenth of the range), as live risk oracles bound each update (Chaos Labs'
Aave stewards: a few percent per update). A **margin increase** (MMR or IMR up) is announced and
reaches open positions only after ``margin_notice_minutes``; a decrease applies at once. Raised
into a crash, an increase can itself force liquidations: that procyclicality is why clearing
houses have anti-procyclicality floors, and why a controller should act early.

The fund allocation is four logits (stable, yield, volatile, hedge), turned into weights by a
softmax with temperature ``ALLOCATION_SHARPNESS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fundgym.envs.levers import CONTROLLABLE, LEVERS, Lever, LeverError

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Controllable levers (:data:`fundgym.envs.levers.LEVERS`), in action order when all are
#: controlled. Each maps positions to values (``to_value``, ``to_position``);
#: ``low``/``high``/``log`` are its action range.
PARAMS: dict[str, Lever] = {name: LEVERS[name] for name in CONTROLLABLE}
ALLOCATION = ("alloc_stable", "alloc_yield", "alloc_volatile", "alloc_hedge")
MARGIN_PARAMS = ("mmr", "imr_multiple")  # increases wait for the notice period
ALLOCATION_SHARPNESS = 3.0

#: The levers mapped one by one (the allocation's four logits map together, as weights).
_LEVER_PARAMS = {name: lever for name, lever in PARAMS.items() if name not in ALLOCATION}

#: Values used for parameters that are not controlled (the levers' defaults: dYdX-like; the
#: fund all in stable).
DEFAULTS: dict[str, float] = {name: lever.default for name, lever in PARAMS.items()}


def allocation_weights(logits: FloatArray) -> FloatArray:
    """Softmax of ``ALLOCATION_SHARPNESS x logits`` over the last axis (4 buckets)."""
    z = ALLOCATION_SHARPNESS * np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float64)


def _clip_step(move: FloatArray, max_step: float) -> FloatArray:
    """``move`` limited to [-max_step, max_step]: np.clip's result without its dispatch cost."""
    return np.minimum(np.maximum(move, -max_step), max_step)


class Controls:
    """The parameters in force for a batch of exchanges, moved by actions.

    Args:
        controlled: Names (from :data:`PARAMS`) the action vector sets, in order.
        fixed: Natural-unit values where parameters start (defaults from :data:`DEFAULTS`);
            each must lie in its lever's action range, since it is held as a position there.
        max_step: Largest move of a position per decision, in action units (0, 2].
        margin_notice_decisions: Decisions before a margin increase takes effect.
        n_envs: Exchanges in the batch.

    Raises:
        ValueError: An unknown or repeated name, or ``max_step`` outside (0, 2].
        LeverError: A ``fixed`` value outside its lever's action range (never clipped).
    """

    def __init__(
        self,
        controlled: tuple[str, ...],
        fixed: dict[str, float],
        max_step: float,
        margin_notice_decisions: int,
        n_envs: int,
    ) -> None:
        unknown = [n for n in (*controlled, *fixed) if n not in PARAMS]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; allowed: {list(PARAMS)}")
        if len(set(controlled)) != len(controlled) or not controlled:
            raise ValueError(f"controlled must list distinct parameters, got {controlled}")
        if not 0.0 < max_step <= 2.0:
            raise ValueError(f"max_step must lie in (0, 2], got {max_step!r}")
        self.controlled = tuple(controlled)
        self.max_step = float(max_step)
        self.notice = int(margin_notice_decisions)
        self.n_envs = n_envs
        start = {**DEFAULTS, **fixed}
        self._initial: dict[str, float] = {}
        for name, lever in PARAMS.items():
            try:
                self._initial[name] = float(lever.to_position(start[name]))
            except LeverError as exc:
                raise LeverError(f"fixed {exc}") from None
        self.position: dict[str, FloatArray] = {}
        self.pending: dict[str, FloatArray] = {}
        self.due: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {
            name: np.zeros(n_envs, dtype=np.int64) for name in MARGIN_PARAMS
        }
        self.decision = np.zeros(n_envs, dtype=np.int64)
        self.reset(np.ones(n_envs, dtype=bool))

    def reset(self, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """Exchanges in ``mask`` start again from the initial parameters."""
        for name, pos in self._initial.items():
            arr = self.position.setdefault(name, np.full(self.n_envs, pos))
            arr[mask] = pos
        for name in MARGIN_PARAMS:
            arr = self.pending.setdefault(name, np.full(self.n_envs, np.nan))
            arr[mask] = np.nan
            self.due[name][mask] = 0
        self.decision[mask] = 0

    def apply(self, action: FloatArray) -> FloatArray:
        """Move the positions toward ``action`` (``(n_envs, n_controlled)``); return |moves|.

        A margin increase is announced and arrives ``notice`` decisions later; further raises
        during the notice join the pending increase without restarting its clock, and a
        request at or below the level in force applies at once and cancels what is pending.
        The returned moves (summed per exchange, in action units) feed the change penalty.

        Raises:
            ValueError: ``action`` is not exactly ``(n_envs, n_controlled)`` (a transposed
                batch would otherwise be reshaped into scrambled targets), or holds values
                outside [-1, 1] (the environment clips Box actions before they get here).
        """
        a = np.asarray(action, dtype=np.float64)
        shape = (self.n_envs, len(self.controlled))
        if a.shape != shape:
            raise ValueError(f"action must have shape {shape} (exchanges, levers), got {a.shape}")
        if not (np.abs(a) <= 1.0).all():
            bad = float(a[~(np.abs(a) <= 1.0)].flat[0])
            raise ValueError(f"action targets must lie in [-1, 1], got {bad!r}")
        self.decision += 1
        moved = np.zeros(self.n_envs)
        for name in MARGIN_PARAMS:  # pending increases that come due now
            ready = ~np.isnan(self.pending[name]) & (self.decision >= self.due[name])
            self.position[name] = np.where(ready, self.pending[name], self.position[name])
            self.pending[name] = np.where(ready, np.nan, self.pending[name])
        for j, name in enumerate(self.controlled):
            in_force = self.position[name]
            if name in MARGIN_PARAMS and self.notice > 0:
                pend = self.pending[name]
                # A cut is measured from the level in force (and cancels what is pending); a
                # raise from the announced level, so raises during a notice add up.
                down = a[:, j] < in_force
                reference = np.where(down | np.isnan(pend), in_force, pend)
                target = reference + _clip_step(a[:, j] - reference, self.max_step)
                moved += np.abs(target - reference)
                lower = target <= in_force
                self.position[name] = np.where(lower, target, in_force)
                self.due[name] = np.where(
                    ~lower & np.isnan(pend), self.decision + self.notice, self.due[name]
                )
                self.pending[name] = np.where(lower, np.nan, target)
            else:
                target = in_force + _clip_step(a[:, j] - in_force, self.max_step)
                moved += np.abs(target - in_force)
                self.position[name] = target
        return moved

    def values(self) -> dict[str, FloatArray]:
        """Parameters in force, natural units, ``(n_envs,)`` each (allocation as weights)."""
        out = {name: _LEVER_PARAMS[name].to_value(self.position[name]) for name in _LEVER_PARAMS}
        weights = allocation_weights(np.stack([self.position[n] for n in ALLOCATION], axis=1))
        for k, name in enumerate(ALLOCATION):
            out[name] = weights[:, k]
        out["imr"] = np.minimum(out["mmr"] * out["imr_multiple"], 1.0)
        return out

    def normalised(self) -> FloatArray:
        """Positions of every parameter in force, ``(n_envs, len(PARAMS))``, in [-1, 1]."""
        return np.stack([self.position[name] for name in PARAMS], axis=1)
