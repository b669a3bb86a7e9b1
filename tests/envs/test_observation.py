import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.core.params import MarginTiers, RiskParams
from envs.observation import BOOK_STATS, book_stats
from envs.state import SimState

COL = {name: k for k, name in enumerate(BOOK_STATS)}
BINANCE = RiskParams(mmr=0.004, imr=0.01, tiers=MarginTiers.binance_btcusdt_2021())


def _long_3m_at_10x() -> SimState:
    # $3M long (30 BTC at 100,000) with $300k collateral: 10x.
    return SimState.create([[300_000.0]], [[30.0]], [[100_000.0]], 0.0)


# Hand-worked: under Binance's brackets the $3M position sits in the 2.5% bracket
# (cum_usd 16,300), so equity 30p - 2.7e6 falls below 0.75p - 16,300 below p = 91,750.43.
# With a flat 0.4% MMR the trigger would be 90,361.4 (what the old observation computed).
# "Within 1%" at mark p means 0.99 p < 91,750.43, i.e. p < 92,677.2.
@pytest.mark.parametrize(
    ("mark", "within_1pct"),
    [(92_600.0, 1.0), (92_677.0, 1.0), (92_678.0, 0.0), (92_700.0, 0.0), (95_000.0, 0.0)],
)
def test_within_1pct_uses_the_tiered_trigger(mark: float, within_1pct: float) -> None:
    out = book_stats(_long_3m_at_10x(), BINANCE, np.array([mark]))[0]
    assert out[COL["oi_within_1pct"]] == within_1pct


def test_flat_mmr_trigger_is_lower_than_the_tiered_one() -> None:
    flat = RiskParams(mmr=0.004, imr=0.01)
    # 0.99 x 91,500 = 90,585: above the flat trigger 90,361, below the tiered 91,750.
    mark = np.array([91_500.0])
    assert book_stats(_long_3m_at_10x(), flat, mark)[0, COL["oi_within_1pct"]] == 0.0
    assert book_stats(_long_3m_at_10x(), BINANCE, mark)[0, COL["oi_within_1pct"]] == 1.0


def test_open_interest_and_skew_columns() -> None:
    s = SimState.create([[1e4, 1e4, 5e3, 0.0]], [[2.0, -1.0, 0.5, 0.0]], [[100.0] * 4], 0.0)
    out = book_stats(s, RiskParams(), np.array([110.0]))[0]
    assert out[COL["long_oi_usd"]] == pytest.approx(2.5 * 110.0)
    assert out[COL["short_oi_usd"]] == pytest.approx(110.0)
    assert out[COL["open_interest_usd"]] == pytest.approx(0.5 * 3.5 * 110.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1.0, 1e4), min_size=1, max_size=40),
    st.lists(st.floats(1.0, 1e3), min_size=1, max_size=40),
)
def test_leverage_quantiles_match_numpy(collateral: list[float], sizes: list[float]) -> None:
    n = min(len(collateral), len(sizes))
    c = np.array(collateral[:n])
    q = np.array(sizes[:n])
    s = SimState.create(c[None, :], q[None, :], np.full((1, n), 10.0), 0.0)
    out = book_stats(s, RiskParams(), np.array([10.0]))[0]
    lev = q * 10.0 / c
    want = np.quantile(lev, [0.5, 0.9, 0.99])
    got = out[[COL["leverage_p50"], COL["leverage_p90"], COL["leverage_p99"]]]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_batch_rows_are_independent() -> None:
    a = _long_3m_at_10x()
    big = SimState.create([[300_000.0], [3e20]], [[30.0], [3e16]], [[1e5], [1e5]], 0.0)
    alone = book_stats(a, BINANCE, np.array([92_000.0]))[0]
    batch = book_stats(big, BINANCE, np.array([92_000.0, 92_000.0]))[0]
    np.testing.assert_array_equal(alone, batch)


def test_an_exchange_with_no_open_account_reads_zero() -> None:
    s = SimState.create([[0.0, 5.0]], [[0.0, 0.0]], [[0.0, 0.0]], 0.0)
    np.testing.assert_array_equal(book_stats(s, RiskParams(), np.array([100.0]))[0], 0.0)
