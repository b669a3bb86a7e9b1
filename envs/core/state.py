"""Exchange state as structure-of-arrays, batch-first: ``(n_envs, n_accounts)`` per account field.

One ledger: every dollar the simulator moves sits in exactly one of these fields, and
:func:`ledger_total` adds them up. Accounts trade against an aggregate *counterparty* (the
order book's market makers and liquidity takers outside the modelled population); it absorbs
liquidation fills and trader orders, so its position and cash make the ledger close even when
the modelled population is net long or short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class ExchangeState:
    """Mutable state of a batch of exchanges (one market each; a market axis can be added last).

    Attributes:
        collateral_usd: ``(n_envs, n_accounts)`` USD balance including realised PnL.
        size: ``(n_envs, n_accounts)`` signed position in base units (positive = long).
        entry_price: ``(n_envs, n_accounts)`` average entry price, USD per base unit.
        fund_usd: ``(n_envs,)`` insurance-fund balance, never negative.
        fee_revenue_usd: ``(n_envs,)`` the exchange's cumulative trading-fee revenue (the part
            not routed to the fund).
        liquidator_rewards_usd: ``(n_envs,)`` cumulative liquidation fees paid to liquidators.
        counterparty_size: ``(n_envs,)`` base units held by the outside counterparty.
        counterparty_cash_usd: ``(n_envs,)`` its cash; its PnL is ``cash + size * mark``.
        unrecovered_usd: ``(n_envs,)`` bad debt nobody could be made to pay (no open interest
            left to socialise it over); the exchange's own capital absorbs it.
        net_deposits_usd: ``(n_envs,)`` cumulative external deposits minus withdrawals.
        initial_total_usd: ``(n_envs,)`` ledger total at creation.
    """

    collateral_usd: FloatArray
    size: FloatArray
    entry_price: FloatArray
    fund_usd: FloatArray
    fee_revenue_usd: FloatArray
    liquidator_rewards_usd: FloatArray
    counterparty_size: FloatArray
    counterparty_cash_usd: FloatArray
    unrecovered_usd: FloatArray
    net_deposits_usd: FloatArray
    initial_total_usd: FloatArray

    @property
    def n_envs(self) -> int:
        """Number of exchanges in the batch."""
        return int(self.size.shape[0])

    @property
    def n_accounts(self) -> int:
        """Account slots per exchange (empty slots hold zero size and collateral)."""
        return int(self.size.shape[1])

    @classmethod
    def create(
        cls,
        collateral_usd: ArrayLike,
        size: ArrayLike,
        entry_price: ArrayLike,
        fund_usd: ArrayLike,
    ) -> ExchangeState:
        """Build a state whose open positions were opened against the counterparty at entry.

        Args:
            collateral_usd: ``(n_envs, n_accounts)`` or ``(n_accounts,)`` (one exchange).
            size: Same shape, signed base units.
            entry_price: Same shape, > 0 where ``size != 0``.
            fund_usd: Initial insurance fund, scalar or ``(n_envs,)``, >= 0.
        """
        c = np.array(collateral_usd, dtype=np.float64, ndmin=2, order="C")
        q = np.array(size, dtype=np.float64, ndmin=2, order="C")
        e = np.array(entry_price, dtype=np.float64, ndmin=2, order="C")
        if not (c.shape == q.shape == e.shape) or c.ndim != 2:
            raise ValueError(
                "collateral_usd, size and entry_price must share one (n_envs, n_accounts) shape, "
                f"got {c.shape}, {q.shape}, {e.shape}"
            )
        for name, arr in (("collateral_usd", c), ("size", q), ("entry_price", e)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)].flat[0]!r}")
        if ((q != 0.0) & (e <= 0.0)).any():
            raise ValueError("entry_price must be > 0 for every open position")
        n_envs = c.shape[0]
        fund = np.array(np.broadcast_to(np.asarray(fund_usd, dtype=np.float64), (n_envs,)))
        if not np.isfinite(fund).all() or (fund < 0.0).any():
            raise ValueError(f"fund_usd must be finite and >= 0, got {fund_usd!r}")
        zeros = np.zeros(n_envs)
        state = cls(
            collateral_usd=c,
            size=q,
            entry_price=e,
            fund_usd=fund,
            fee_revenue_usd=zeros.copy(),
            liquidator_rewards_usd=zeros.copy(),
            counterparty_size=-q.sum(axis=1),
            counterparty_cash_usd=(q * e).sum(axis=1),
            unrecovered_usd=zeros.copy(),
            net_deposits_usd=zeros.copy(),
            initial_total_usd=zeros.copy(),
        )
        # The total does not depend on the mark once the counterparty balances the book.
        state.initial_total_usd = ledger_total(state, np.ones(n_envs))
        return state

    def copy(self) -> ExchangeState:
        """Deep copy (every array copied)."""
        return ExchangeState(**{k: np.array(v, copy=True) for k, v in vars(self).items()})


def ledger_total(state: ExchangeState, mark: ArrayLike) -> FloatArray:
    """Sum of every ledger line per exchange at ``mark``: it must stay ``initial + deposits``.

    collateral + unrealised PnL of all accounts + fund + fee revenue + liquidator rewards +
    counterparty PnL (cash + position at mark) - bad debt absorbed by the exchange.
    """
    m = np.asarray(mark, dtype=np.float64).reshape(-1)
    accounts = (state.collateral_usd + state.size * (m[:, None] - state.entry_price)).sum(axis=1)
    total = (
        accounts
        + state.fund_usd
        + state.fee_revenue_usd
        + state.liquidator_rewards_usd
        + state.counterparty_cash_usd
        + state.counterparty_size * m
        - state.unrecovered_usd
    )
    return np.asarray(total, dtype=np.float64)


def ledger_error(state: ExchangeState, mark: ArrayLike) -> FloatArray:
    """``ledger_total - (initial_total + net deposits)`` per exchange; zero up to rounding."""
    return ledger_total(state, mark) - (state.initial_total_usd + state.net_deposits_usd)
