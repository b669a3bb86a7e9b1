"""Shared test helpers: the books balance (fund non-negative, nothing NaN); a book's depth;
a fixed-slippage impact model for hand-worked books; the hand-worked cases' risk
parameters."""

import dataclasses
from dataclasses import fields
from typing import Any

import numpy as np

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.vault import V_CASH, V_SIZE
from fundgym.envs.fund.portfolio import FundPortfolio
from fundgym.envs.state import SimState, ledger_error, marks_2d


def ledger_scale(state: SimState, mark: np.ndarray) -> np.ndarray:
    """A money scale per exchange for the relative ledger tolerance."""
    m = marks_2d(mark, state.n_envs, state.n_markets)
    gross = (
        np.abs(state.collateral_usd).sum(axis=1)
        + (np.abs(state.size) * (m[:, None, :] + state.entry_price)).sum(axis=(1, 2))
        + (np.abs(state.counterparty_size) * m).sum(axis=1)
        + np.abs(state.counterparty_cash_usd)
        + np.abs(state.net_deposits_usd)
        + np.abs(state.unrecovered_usd)
        + np.abs(state.vault[:, V_CASH])
        + np.abs(state.vault[:, V_SIZE]) * m[:, 0]
    )
    return np.maximum(gross + state.fund_usd + np.abs(state.initial_total_usd), 1.0)


def assert_books_balance(state: SimState, mark: np.ndarray) -> None:
    """Ledger closes to 1e-9 relative per exchange, fund >= 0, every array finite."""
    err = ledger_error(state, mark)
    assert np.all(np.abs(err) <= 1e-9 * ledger_scale(state, mark)), err
    assert (state.fund_usd >= 0.0).all(), state.fund_usd
    for f in fields(state):
        value = getattr(state, f.name)
        if isinstance(value, FundPortfolio):
            for g in fields(value):
                assert np.isfinite(getattr(value, g.name)).all(), f"fund.{g.name}"
        else:
            assert np.isfinite(value).all(), f.name


def depth_for(flow_usd: float, slippage: float) -> float:
    """Depth (USD per 1%) at which ``flow_usd`` slips by ``slippage`` on average."""
    return float(SqrtImpact.for_slippage(flow_usd, slippage).depth_usd_per_pct)


FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclasses.dataclass(frozen=True)
class FixedSlippage:
    """Hand-worked books' impact: sells ``slippage_frac`` below the book, buys as far above.

    Whatever the flow; shared by the cross-market, collateral and fund-segment tests.
    """

    slippage_frac: float

    def fill_prices(
        self, mark: FloatArray, sell_notional_usd: FloatArray, buy_notional_usd: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Sells at ``book x (1 - s)``, buys at ``book x (1 + s)``, whatever the flow."""
        return mark * (1.0 - self.slippage_frac), mark * (1.0 + self.slippage_frac)


def worked_params(**kw: Any) -> RiskParams:
    """MMR 5%, IMR 10%, a 1% liquidation fee half to the fund, whole closes, no minimum: the
    hand-worked cases' risk parameters (the core step, the fund record, the venue modes, the
    outside liquidators in one market and across markets), with ``kw`` replacing any."""
    base: dict[str, Any] = dict(
        mmr=0.05,
        imr=0.1,
        liquidation_fee_rate=0.01,
        liquidation_fee_fund_share=0.5,
        max_liquidation_fraction=1.0,
        min_liquidation_notional_usd=0.0,
    )
    base.update(kw)
    return RiskParams(**base)
