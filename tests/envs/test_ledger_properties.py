"""Money is conserved: the ledger closes on random books and random paths, crashes included.

collateral + unrealised PnL of all accounts + fund + fee revenue + liquidator rewards +
counterparty PnL - bad debt absorbed by the exchange == initial total + net deposits,
to 1e-9 relative, after every step; the fund is never negative and nothing becomes NaN.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.core.impact import LinearImpact
from envs.core.params import MarginTiers, RiskParams
from envs.core.state import ExchangeState, ledger_error
from envs.core.step import core_step
from envs.core.synthetic import synthetic_book
from envs.core.trading import deposit, execute_trades
from tests.books import assert_books_balance

# Extreme single-step moves are drawn on purpose: -99% and +500%.
RETURNS = st.one_of(
    st.sampled_from([-0.99, -0.5, -0.2, 5.0, 1.0, 0.0]),
    st.floats(-0.3, 0.3, allow_nan=False),
)
SIZES = st.one_of(st.just(0.0), st.floats(-50.0, 50.0, allow_nan=False))


@st.composite
def books(draw):
    n = draw(st.integers(1, 12))
    size = np.array(draw(st.lists(SIZES, min_size=n, max_size=n)))
    collateral = np.array(
        draw(st.lists(st.floats(-100.0, 1e6, allow_nan=False), min_size=n, max_size=n))
    )
    entry = np.array(draw(st.lists(st.floats(1.0, 1e5), min_size=n, max_size=n)))
    fund = draw(st.sampled_from([0.0, 10.0, 1e4, 1e7]))
    mmr = draw(st.floats(0.001, 0.3))
    p = RiskParams(
        mmr=mmr,
        imr=min(1.0, mmr * draw(st.floats(1.0, 3.0))),
        liquidation_fee_rate=draw(st.floats(0.0, 0.05)),
        liquidation_fee_fund_share=draw(st.floats(0.0, 1.0)),
        taker_fee_rate=draw(st.floats(0.0, 0.002)),
        trading_fee_fund_share=draw(st.floats(0.0, 1.0)),
        max_liquidation_fraction=draw(st.floats(0.05, 1.0)),
        min_liquidation_notional_usd=draw(st.sampled_from([0.0, 1000.0])),
        fallback=draw(st.sampled_from(["adl", "socialize"])),
        tiers=draw(st.sampled_from([None, MarginTiers.binance_btcusdt_2021()])),
    )
    depth = draw(st.sampled_from([1e2, 1e5, 1e9]))
    return ExchangeState.create(collateral, size, entry, fund), p, LinearImpact(depth), entry


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(),
    returns=st.lists(RETURNS, min_size=1, max_size=8),
    trades=st.lists(st.floats(-5.0, 5.0, allow_nan=False), min_size=1, max_size=8),
    top_up=st.floats(-50.0, 500.0, allow_nan=False),
)
def test_ledger_closes_on_random_paths(book, returns, trades, top_up):
    state, params, impact, entry = book
    mark = np.array([float(np.median(entry))])
    assert_books_balance(state, mark)
    for k, r in enumerate(returns):
        mark = mark * (1.0 + r)
        mark = np.maximum(mark, 1e-6)
        core_step(state, params, mark, impact)
        assert_books_balance(state, mark)
        if k < len(trades):  # an order from one account, then a deposit by another
            order = np.zeros_like(state.size)
            order[0, k % state.n_accounts] = trades[k]
            execute_trades(state, params, order, mark * 1.001, mark)
            cash = np.zeros_like(state.size)
            cash[0, (k + 1) % state.n_accounts] = top_up
            deposit(state, cash)
            assert_books_balance(state, mark)


def test_ledger_closes_on_thousands_of_batched_crash_paths():
    # 4,000 exchanges x 32 accounts, 40 steps of fat-tailed moves with crash and squeeze
    # steps (-99% / +500%) mixed in, both fallbacks, empty and full funds.
    rng = np.random.default_rng(12345)
    n_envs, n_acc = 4000, 32
    for fallback in ("adl", "socialize"):
        state = synthetic_book(rng, n_envs, n_acc, 100.0, fund_usd=0.0)
        state.fund_usd[: n_envs // 2] = 5e4
        state.size[:, :3] = 0.0  # accounts of size zero
        state.counterparty_size = -state.size.sum(axis=1)
        state.counterparty_cash_usd = (state.size * state.entry_price).sum(axis=1)
        state.initial_total_usd = ledger_error(state, np.ones(n_envs)) + state.initial_total_usd
        p = RiskParams(mmr=rng.uniform(0.005, 0.1, n_envs), imr=0.2, fallback=fallback)
        impact = LinearImpact(rng.uniform(1e3, 1e7, n_envs))
        mark = np.full(n_envs, 100.0)
        for _ in range(40):
            r = rng.standard_t(3, n_envs) * 0.03
            shock = rng.random(n_envs)
            r = np.where(shock < 0.02, -0.99, np.where(shock > 0.99, 5.0, r))
            mark = np.maximum(mark * (1.0 + np.clip(r, -0.99, 5.0)), 1e-6)
            core_step(state, p, mark, impact)
            assert_books_balance(state, mark)
