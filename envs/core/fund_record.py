"""Per-step record of the insurance fund and every flow through it.

The step functions return :class:`~fundgym.envs.core.step.StepEvents` for one tick, and
:meth:`fundgym.envs.simulator.ExchangeSimulator.advance` a block of ticks at once; a
:class:`FundRecord` stacks them over time into ``(n_steps, n_envs)`` arrays, together with the
fund balance after each step, so evaluation and plots read one table per exchange.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fundgym.envs.core.events import N_EVENTS, StepEvents

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


class FundRecord:
    """Accumulates the fund balance and the step events, tick by tick or block by block."""

    def __init__(self, initial_fund_usd: FloatArray) -> None:
        """Start a record whose balance before the first step is ``initial_fund_usd``."""
        self.initial_fund_usd = np.array(initial_fund_usd, dtype=np.float64)
        self._fund: list[FloatArray] = []  # (n, n_envs) blocks
        self._events: list[FloatArray] = []  # (n, n_envs, N_EVENTS) blocks
        self._len = 0

    def append(self, events: StepEvents, fund_usd: FloatArray) -> None:
        """Record one step: its events and the fund balance after it."""
        self.extend(events.data[None], np.asarray(fund_usd, dtype=np.float64)[None])

    def extend(self, events: FloatArray, fund_usd: FloatArray) -> None:
        """Record a block of steps: ``(n, n_envs, N_EVENTS)`` events and ``(n, n_envs)`` fund.

        Both are copied, so the caller may reuse its arrays.
        """
        n_envs = self.initial_fund_usd.shape[0]
        if events.shape[1:] != (n_envs, N_EVENTS) or fund_usd.shape != events.shape[:2]:
            raise ValueError(
                f"expected (n, {n_envs}, {N_EVENTS}) events and (n, {n_envs}) fund, got "
                f"{events.shape} and {fund_usd.shape}"
            )
        self._events.append(np.array(events, dtype=np.float64))
        self._fund.append(np.array(fund_usd, dtype=np.float64))
        self._len += events.shape[0]

    def __len__(self) -> int:
        return self._len

    def arrays(self) -> dict[str, FloatArray]:
        """``fund_usd`` and every event field as ``(n_steps, n_envs)`` arrays."""
        n_envs = self.initial_fund_usd.shape[0]
        fund = np.concatenate(self._fund) if self._fund else np.zeros((0, n_envs))
        stacked = np.concatenate(self._events) if self._events else np.zeros((0, n_envs, N_EVENTS))
        out: dict[str, FloatArray] = {"fund_usd": fund}
        for col, name in enumerate(StepEvents.FIELDS):
            out[name] = stacked[:, :, col]
        return out

    def totals(self) -> dict[str, FloatArray]:
        """Per-exchange totals of every flow, plus the fund's start, minimum and end."""
        arr = self.arrays()
        fund = np.vstack([self.initial_fund_usd[None, :], arr.pop("fund_usd")])
        totals = {k: v.sum(axis=0) for k, v in arr.items()}
        totals["fund_start_usd"] = fund[0]
        totals["fund_min_usd"] = fund.min(axis=0)
        totals["fund_end_usd"] = fund[-1]
        return totals
