"""Per-step record of the insurance fund and every flow through it.

The step functions return :class:`~envs.core.step.StepEvents` for one tick; a
:class:`FundRecord` stacks them over time into ``(n_steps, n_envs)`` arrays, together with the
fund balance after each step, so evaluation and plots read one table per exchange.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.core.events import StepEvents

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


class FundRecord:
    """Accumulates the fund balance and the step events, tick by tick."""

    def __init__(self, initial_fund_usd: FloatArray) -> None:
        """Start a record whose balance before the first step is ``initial_fund_usd``."""
        self.initial_fund_usd = np.array(initial_fund_usd, dtype=np.float64)
        self._fund: list[FloatArray] = []
        self._events: list[FloatArray] = []

    def append(self, events: StepEvents, fund_usd: FloatArray) -> None:
        """Record one step: its events and the fund balance after it."""
        self._fund.append(np.array(fund_usd, dtype=np.float64))
        self._events.append(events.data.copy())  # one copy of the (n_envs, N_EVENTS) block

    def __len__(self) -> int:
        return len(self._fund)

    def arrays(self) -> dict[str, FloatArray]:
        """``fund_usd`` and every event field as ``(n_steps, n_envs)`` arrays."""
        n_envs = self.initial_fund_usd.shape[0]
        out: dict[str, FloatArray] = {"fund_usd": np.array(self._fund).reshape(len(self), n_envs)}
        stacked = np.array(self._events, dtype=np.float64).reshape(len(self), n_envs, -1)
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
