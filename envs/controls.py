"""The levers: actions in [-1, 1] mapped to risk parameters, rate-limited, with margin notice.

Each controlled parameter has a documented range; an action coordinate ``a`` in [-1, 1] names
a *target* position in that range (linear, or logarithmic for rates spanning decades). The
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

from dataclasses import dataclass
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class ParamRange:
    """A controllable parameter: natural-unit range and scale."""

    low: float
    high: float
    log: bool
    doc: str

    def to_value(self, position: FloatArray) -> FloatArray:
        """Map positions in [-1, 1] to natural units."""
        u = (np.clip(position, -1.0, 1.0) + 1.0) / 2.0
        if self.log:
            return np.asarray(self.low * (self.high / self.low) ** u, dtype=np.float64)
        return np.asarray(self.low + u * (self.high - self.low), dtype=np.float64)

    def to_position(self, value: FloatArray | float) -> FloatArray:
        """Map natural units to positions in [-1, 1] (inverse of :meth:`to_value`)."""
        v = np.clip(np.asarray(value, dtype=np.float64), self.low, self.high)
        if self.log:
            u = np.log(v / self.low) / np.log(self.high / self.low)
        else:
            u = (v - self.low) / (self.high - self.low)
        return np.asarray(2.0 * u - 1.0, dtype=np.float64)


#: Controllable parameters, in action order when all are controlled.
PARAMS: dict[str, ParamRange] = {
    "liquidation_fee_rate": ParamRange(0.001, 0.03, True, "max liquidation fee, of notional"),
    "liquidation_fee_fund_share": ParamRange(0.0, 1.0, False, "share of that fee to the fund"),
    "mmr": ParamRange(0.003, 0.10, True, "maintenance margin ratio"),
    "imr_multiple": ParamRange(1.2, 3.0, False, "initial margin as a multiple of MMR"),
    "trading_fee_fund_share": ParamRange(0.0, 1.0, False, "share of taker fees to the fund"),
    "alloc_stable": ParamRange(-1.0, 1.0, False, "fund allocation logit: stable"),
    "alloc_yield": ParamRange(-1.0, 1.0, False, "fund allocation logit: yield"),
    "alloc_volatile": ParamRange(-1.0, 1.0, False, "fund allocation logit: volatile"),
    "alloc_hedge": ParamRange(-1.0, 1.0, False, "fund allocation logit: hedge"),
}
ALLOCATION = ("alloc_stable", "alloc_yield", "alloc_volatile", "alloc_hedge")
MARGIN_PARAMS = ("mmr", "imr_multiple")  # increases wait for the notice period
ALLOCATION_SHARPNESS = 3.0

#: Values used for parameters that are not controlled (dYdX-like; the fund all in stable).
DEFAULTS: dict[str, float] = {
    "liquidation_fee_rate": 0.015,
    "liquidation_fee_fund_share": 1.0,
    "mmr": 0.03,
    "imr_multiple": 5.0 / 3.0,
    "trading_fee_fund_share": 0.1,
    "alloc_stable": 1.0,
    "alloc_yield": -1.0,
    "alloc_volatile": -1.0,
    "alloc_hedge": -1.0,
}


def allocation_weights(logits: FloatArray) -> FloatArray:
    """Softmax of ``ALLOCATION_SHARPNESS x logits`` over the last axis (4 buckets)."""
    z = ALLOCATION_SHARPNESS * np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float64)


class Controls:
    """The parameters in force for a batch of exchanges, moved by actions.

    Args:
        controlled: Names (from :data:`PARAMS`) the action vector sets, in order.
        fixed: Natural-unit values of the others (defaults from :data:`DEFAULTS`).
        max_step: Largest move of a position per decision, in action units (0, 2].
        margin_notice_decisions: Decisions before a margin increase takes effect.
        n_envs: Exchanges in the batch.
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
        self._initial = {name: float(PARAMS[name].to_position(start[name])) for name in PARAMS}
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
        """
        a = np.asarray(action, dtype=np.float64).reshape(self.n_envs, len(self.controlled))
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
                target = reference + np.clip(a[:, j] - reference, -self.max_step, self.max_step)
                moved += np.abs(target - reference)
                lower = target <= in_force
                self.position[name] = np.where(lower, target, in_force)
                self.due[name] = np.where(
                    ~lower & np.isnan(pend), self.decision + self.notice, self.due[name]
                )
                self.pending[name] = np.where(lower, np.nan, target)
            else:
                target = in_force + np.clip(a[:, j] - in_force, -self.max_step, self.max_step)
                moved += np.abs(target - in_force)
                self.position[name] = target
        return moved

    def values(self) -> dict[str, FloatArray]:
        """Parameters in force, natural units, ``(n_envs,)`` each (allocation as weights)."""
        out = {name: PARAMS[name].to_value(self.position[name]) for name in PARAMS}
        weights = allocation_weights(np.stack([self.position[n] for n in ALLOCATION], axis=1))
        for k, name in enumerate(ALLOCATION):
            out[name] = weights[:, k]
        out["imr"] = np.minimum(out["mmr"] * out["imr_multiple"], 1.0)
        return out

    def normalised(self) -> FloatArray:
        """Positions of every parameter in force, ``(n_envs, len(PARAMS))``, in [-1, 1]."""
        return np.stack([self.position[name] for name in PARAMS], axis=1)
