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
softmax with temperature ``ALLOCATION_SHARPNESS``. A bucket the configuration excludes
(``EnvConfig.allocation_buckets``) weighs exactly 0: the softmax runs over the others. An
uncontrolled logit cannot do that: at its default it still takes a share whenever the
controlled logits fall below it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fundgym.envs.jit import jit
from fundgym.envs.levers import (
    CONTROLLABLE,
    LEVERS,
    Lever,
    LeverError,
    action_columns,
    positions_to_values,
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Controllable levers (:data:`fundgym.envs.levers.LEVERS`), in action order when all are
#: controlled. Each maps positions to values (``to_value``, ``to_position``);
#: ``low``/``high``/``log`` are its action range.
PARAMS: dict[str, Lever] = {name: LEVERS[name] for name in CONTROLLABLE}
#: The fund's allocation buckets, and their logits' levers in the same order.
BUCKETS = ("stable", "yield", "volatile", "hedge")
ALLOCATION = tuple(f"alloc_{bucket}" for bucket in BUCKETS)
MARGIN_PARAMS = ("mmr", "imr_multiple")  # increases wait for the notice period
ALLOCATION_SHARPNESS = 3.0

#: The levers mapped one by one (the allocation's four logits map together, as weights).
_LEVER_PARAMS = {name: lever for name, lever in PARAMS.items() if name not in ALLOCATION}
#: Their rows of the positions (``PARAMS`` order) and action ranges as columns, so that
#: :meth:`Controls.values` maps them all in one call.
_LEVER_ROWS = np.array([list(PARAMS).index(name) for name in _LEVER_PARAMS], dtype=np.int64)
_LEVER_LOW, _LEVER_HIGH, _LEVER_LOG = action_columns(tuple(_LEVER_PARAMS.values()))
#: The allocation logits' rows of the positions.
_ALLOCATION_ROWS = np.array([list(PARAMS).index(name) for name in ALLOCATION], dtype=np.int64)


def _rows_index(rows: np.ndarray[Any, np.dtype[np.int64]]) -> slice | np.ndarray[Any, Any]:
    """``rows`` as a slice when they are consecutive (a view, not a copy, every decision)."""
    if rows.size and (np.diff(rows) == 1).all():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


_LEVER_TAKE = _rows_index(_LEVER_ROWS)
_ALLOCATION_TAKE = _rows_index(_ALLOCATION_ROWS)

#: Values used for parameters that are not controlled (the levers' defaults: dYdX-like; the
#: fund all in stable).
DEFAULTS: dict[str, float] = {name: lever.default for name, lever in PARAMS.items()}


def allocation_weights(logits: FloatArray, held: tuple[str, ...] = BUCKETS) -> FloatArray:
    """Softmax of ``ALLOCATION_SHARPNESS x logits`` over the last axis (4 buckets).

    Args:
        logits: ``(..., 4)``, :data:`BUCKETS` order.
        held: The buckets the fund may hold (a non-empty subset of :data:`BUCKETS`); the
            others weigh exactly 0, and the softmax runs over these.
    """
    # The ufuncs' reductions called directly: what ``max`` and ``sum`` call, without their
    # Python-level wrappers (every decision maps the allocation).
    z = ALLOCATION_SHARPNESS * np.asarray(logits, dtype=np.float64)
    if held != BUCKETS and not (mask := held_mask(held)).all():
        z = np.where(mask, z, -np.inf)  # exp(-inf - max) = 0 exactly
    z = z - np.maximum.reduce(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / np.add.reduce(e, axis=-1, keepdims=True), dtype=np.float64)


def buckets_problem(held: tuple[str, ...]) -> str | None:
    """What is wrong with ``held`` as a list of buckets to hold, and what is allowed; or None."""
    bad = [b for b in held if b not in BUCKETS]
    if bad or not held or len(set(held)) != len(held):
        what = f"unknown bucket {bad[0]!r}" if bad else "distinct buckets, at least one"
        return f"{what}; allowed: {list(BUCKETS)}"
    return None


@functools.lru_cache(maxsize=32)
def held_mask(held: tuple[str, ...]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """``(4,)``, read-only: whether each bucket of :data:`BUCKETS` is held (in any order).

    Cached: a config's buckets are checked once, not at every decision that maps them.

    Raises:
        ValueError: An unknown or repeated bucket, or none.
    """
    problem = buckets_problem(held)
    if problem is not None:
        raise ValueError(f"allocation buckets {list(held)}: {problem}")
    mask = np.array([b in held for b in BUCKETS])
    mask.flags.writeable = False
    return mask


@jit(error_model="numpy")
def _apply_kernel(  # type: ignore[no-untyped-def]
    a, pos, pending, due, decision, cols, notice_rows, margin_rows, notice, max_step, moved
):
    """:meth:`Controls.apply` after its checks, exchange by exchange, in place.

    ``pos`` holds every lever's position (``PARAMS`` order, one row each), ``pending`` and
    ``due`` the margin levers' (``MARGIN_PARAMS`` order); action column ``j`` moves row
    ``cols[j]``, with notice through ``pending`` row ``notice_rows[j]`` (-1: none).
    ``margin_rows[m]`` is the ``pos`` row of margin lever ``m``. Only comparisons, additions,
    subtractions and ``abs``: the bits of the lever-by-lever numpy arithmetic it replaced
    (a move limited by ``min(max(move, -max_step), max_step)``; the moves summed per exchange
    from 0 in action order).
    """
    for e in range(a.shape[0]):
        decision[e] += 1
        now = decision[e]
        for m in range(margin_rows.shape[0]):  # pending increases that come due now
            if not np.isnan(pending[m, e]) and now >= due[m, e]:
                pos[margin_rows[m], e] = pending[m, e]
                pending[m, e] = np.nan
        total = 0.0
        for j in range(cols.shape[0]):
            row = cols[j]
            in_force = pos[row, e]
            wanted = a[e, j]
            m = notice_rows[j]
            if m < 0:
                target = in_force + min(max(wanted - in_force, -max_step), max_step)
                total += abs(target - in_force)
                pos[row, e] = target
                continue
            pend = pending[m, e]
            # A cut is measured from the level in force (and cancels what is pending); a
            # raise from the announced level, so raises during a notice add up.
            reference = in_force if (wanted < in_force or np.isnan(pend)) else pend
            target = reference + min(max(wanted - reference, -max_step), max_step)
            total += abs(target - reference)
            if target <= in_force:
                pos[row, e] = target
                pending[m, e] = np.nan
            else:
                if np.isnan(pend):
                    due[m, e] = now + notice
                pending[m, e] = target
        moved[e] = total


class Controls:
    """The parameters in force for a batch of exchanges, moved by actions.

    Args:
        controlled: Names (from :data:`PARAMS`) the action vector sets, in order.
        fixed: Natural-unit values where parameters start (defaults from :data:`DEFAULTS`);
            each must lie in its lever's action range, since it is held as a position there.
        max_step: Largest move of a position per decision, in action units (0, 2].
        margin_notice_decisions: Decisions before a margin increase takes effect.
        n_envs: Exchanges in the batch.
        held: The allocation buckets the fund may hold (:data:`BUCKETS` order kept); the
            others weigh 0, and their logits may not be controlled.

    Raises:
        ValueError: An unknown or repeated name, ``max_step`` outside (0, 2], an unknown,
            repeated or empty ``held``, or a controlled logit of a bucket not held.
        LeverError: A ``fixed`` value outside its lever's action range (never clipped).
    """

    def __init__(
        self,
        controlled: tuple[str, ...],
        fixed: dict[str, float],
        max_step: float,
        margin_notice_decisions: int,
        n_envs: int,
        held: tuple[str, ...] = BUCKETS,
    ) -> None:
        unknown = [n for n in (*controlled, *fixed) if n not in PARAMS]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; allowed: {list(PARAMS)}")
        if len(set(controlled)) != len(controlled) or not controlled:
            raise ValueError(f"controlled must list distinct parameters, got {controlled}")
        if not 0.0 < max_step <= 2.0:
            raise ValueError(f"max_step must lie in (0, 2], got {max_step!r}")
        mask = held_mask(held)
        dropped = [n for n, h in zip(ALLOCATION, mask, strict=True) if not h and n in controlled]
        if dropped:
            raise ValueError(
                f"{dropped[0]!r} is controlled, but its bucket is not held: allocation buckets "
                f"{list(held)}"
            )
        self.held = tuple(b for b in BUCKETS if b in held)
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
        # One row per lever (PARAMS order) and per margin lever (MARGIN_PARAMS order); the
        # dicts hold views of the rows, which ``apply`` and ``reset`` write in place.
        self._position = np.zeros((len(PARAMS), n_envs))
        self._pending = np.full((len(MARGIN_PARAMS), n_envs), np.nan)
        self._due = np.zeros((len(MARGIN_PARAMS), n_envs), dtype=np.int64)
        self._make_views()
        self.decision = np.zeros(n_envs, dtype=np.int64)
        names = list(PARAMS)
        self._cols = np.array([names.index(n) for n in self.controlled], dtype=np.int64)
        self._notice_rows = np.array(
            [
                MARGIN_PARAMS.index(n) if n in MARGIN_PARAMS and self.notice > 0 else -1
                for n in self.controlled
            ],
            dtype=np.int64,
        )
        self._margin_rows = np.array([names.index(n) for n in MARGIN_PARAMS], dtype=np.int64)
        self.reset(np.ones(n_envs, dtype=bool))

    def _make_views(self) -> None:
        """``position``, ``pending`` and ``due``: name -> that lever's row of the arrays."""
        self.position: dict[str, FloatArray] = {
            name: self._position[i] for i, name in enumerate(PARAMS)
        }
        self.pending: dict[str, FloatArray] = {
            name: self._pending[m] for m, name in enumerate(MARGIN_PARAMS)
        }
        self.due: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {
            name: self._due[m] for m, name in enumerate(MARGIN_PARAMS)
        }

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (and deep-copied) without the views: a copied view is no longer one."""
        state = self.__dict__.copy()
        for name in ("position", "pending", "due"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the arrays, then make the views of the new arrays."""
        self.__dict__.update(state)
        self._make_views()

    def reset(self, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """Exchanges in ``mask`` start again from the initial parameters."""
        for name, pos in self._initial.items():
            self.position[name][mask] = pos
        for name in MARGIN_PARAMS:
            self.pending[name][mask] = np.nan
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
        moved = np.empty(self.n_envs)
        _apply_kernel(
            a, self._position, self._pending, self._due, self.decision, self._cols,
            self._notice_rows, self._margin_rows, self.notice, self.max_step, moved,
        )  # fmt: skip
        return moved

    def values(self) -> dict[str, FloatArray]:
        """Parameters in force, natural units, ``(n_envs,)`` each (allocation as weights)."""
        return self.in_force()[0]

    def in_force(self) -> tuple[dict[str, FloatArray], FloatArray]:
        """:meth:`values`, and the allocation weights as one ``(n_envs, 4)`` array.

        The dict's ``alloc_*`` entries are the array's columns (views): a decision that
        rebalances toward the weights reads them without stacking the columns again.
        """
        mapped = positions_to_values(
            self._position[_LEVER_TAKE], _LEVER_LOW, _LEVER_HIGH, _LEVER_LOG
        )
        out = dict(zip(_LEVER_PARAMS, mapped, strict=True))
        weights = allocation_weights(self._position[_ALLOCATION_TAKE].T.copy(), self.held)
        for k, name in enumerate(ALLOCATION):
            out[name] = weights[:, k]
        out["imr"] = np.minimum(out["mmr"] * out["imr_multiple"], 1.0)
        return out, weights

    def normalised(self) -> FloatArray:
        """Positions of every parameter in force, ``(n_envs, len(PARAMS))``, in [-1, 1]."""
        return self._position.T.copy()
