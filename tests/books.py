"""Shared assertion: the books balance, the fund is non-negative, nothing is NaN."""

import numpy as np

from envs.core.state import ExchangeState, ledger_error


def ledger_scale(state: ExchangeState, mark: np.ndarray) -> np.ndarray:
    """A money scale per exchange for the relative ledger tolerance."""
    m = mark[:, None]
    gross = (
        np.abs(state.collateral_usd).sum(axis=1)
        + (np.abs(state.size) * (m + state.entry_price)).sum(axis=1)
        + np.abs(state.counterparty_size) * mark
        + np.abs(state.counterparty_cash_usd)
        + np.abs(state.net_deposits_usd)
    )
    return np.maximum(gross + state.fund_usd + np.abs(state.initial_total_usd), 1.0)


def assert_books_balance(state: ExchangeState, mark: np.ndarray) -> None:
    """Ledger closes to 1e-9 relative, fund >= 0, every array finite."""
    err = ledger_error(state, mark)
    assert np.all(np.abs(err) <= 1e-9 * ledger_scale(state, mark)), err
    assert (state.fund_usd >= 0.0).all(), state.fund_usd
    for name, arr in vars(state).items():
        assert np.isfinite(arr).all(), name
