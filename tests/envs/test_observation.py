import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.observation import BOOK_STATS, N_BUCKETS, _quantiles, book_stats
from fundgym.envs.state import SimState

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


def _slot_order_book(c: np.ndarray, q: np.ndarray, e: np.ndarray, m: float, mmr: float) -> list:
    """The flat one-market columns by a Python loop over the slots, in order (float64)."""
    gross = long_oi = locked = w1 = w2 = w5 = 0.0
    for ci, qi, ei in zip(c.tolist(), q.tolist(), e.tolist(), strict=True):
        notional = abs(qi) * m
        gross += notional
        long_oi += max(qi, 0.0) * m
        locked += notional * mmr
        km = (qi - mmr * abs(qi)) * m
        t = ci - qi * ei + km
        w1 += notional * float(t - abs(km) * 0.01 < 0.0)
        w2 += notional * float(t - abs(km) * 0.02 < 0.0)
        w5 += notional * float(t - abs(km) * 0.05 < 0.0)
    within = [w / gross if gross > 0.0 else 0.0 for w in (w1, w2, w5)]
    return [0.5 * gross, long_oi, gross - long_oi, *within, locked]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.floats(0.0, 1.0), st.floats(0.001, 0.2), st.integers(0, 2**32))
def test_flat_book_sums_keep_slot_order_bit_for_bit(
    n: int, open_frac: float, mmr: float, seed: int
) -> None:
    # The kernel computes the terms in one vectorised pass and sums them in a second: the
    # sums must still be the slot-order ones, to the bit (the observation's golden runs).
    rng = np.random.default_rng(seed)
    q = rng.normal(0.0, 3.0, n) * (rng.random(n) < open_frac)
    c = rng.lognormal(8.0, 2.0, n) * (rng.random(n) < 0.9)
    e = rng.uniform(50.0, 150.0, n) * (q != 0.0)
    m = float(rng.uniform(60.0, 140.0))
    s = SimState.create(c[None, :], q[None, :], e[None, :], 0.0)
    out = book_stats(s, RiskParams(mmr=mmr, imr=2.0 * mmr), np.array([m]))[0]
    names = ["open_interest_usd", "long_oi_usd", "short_oi_usd", "oi_within_1pct",
             "oi_within_2pct", "oi_within_5pct", "margin_locked_usd"]  # fmt: skip
    got = [float(out[COL[k]]) for k in names]
    assert got == _slot_order_book(c, q, e, m, mmr)


def test_batch_rows_are_independent() -> None:
    a = _long_3m_at_10x()
    big = SimState.create([[300_000.0], [3e20]], [[30.0], [3e16]], [[1e5], [1e5]], 0.0)
    alone = book_stats(a, BINANCE, np.array([92_000.0]))[0]
    batch = book_stats(big, BINANCE, np.array([92_000.0, 92_000.0]))[0]
    np.testing.assert_array_equal(alone, batch)


def test_an_exchange_with_no_open_account_reads_zero() -> None:
    s = SimState.create([[0.0, 5.0]], [[0.0, 0.0]], [[0.0, 0.0]], 0.0)
    np.testing.assert_array_equal(book_stats(s, RiskParams(), np.array([100.0]))[0], 0.0)


def _exact_quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The kernel's formula on the order statistics read from a full sort."""
    s = np.sort(values)
    out = []
    for q in qs:
        pos = q * (len(s) - 1)
        lo = int(np.floor(pos))
        b = s[lo + 1] if lo + 1 < len(s) else s[lo]
        out.append(s[lo] + (pos - lo) * (b - s[lo]))
    return np.array(out)


def _kernel_quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    n = len(values)
    buf = np.concatenate([values, [np.pi] * 3])  # values past n are never read
    before = buf.copy()
    out = np.full(len(qs) + 2, -7.0)
    bins = np.empty(n + 3, dtype=np.int64)
    # Dirty scratch, as a caller reusing it across exchanges hands it over.
    counts = np.full(N_BUCKETS, 12345, dtype=np.int64)
    tag = np.full(N_BUCKETS, 255, dtype=np.uint8)
    ranks = np.full(2 * len(qs), -9, dtype=np.int64)
    brackets = np.full(len(qs) * (n + 3), np.nan)
    _quantiles(buf, buf.view(np.int64), n, qs, out, 2, bins, counts, tag, ranks, brackets)
    np.testing.assert_array_equal(buf, before)  # read, not reordered
    assert (out[:2] == -7.0).all()  # only its own columns written
    return out[2:]


_QS = np.array([0.5, 0.9, 0.99])
# Heavy tails, ties, both signs and both zeros: the bucket order must agree with the values'.
_MIXED = st.one_of(
    st.floats(-1e300, 1e300),
    st.sampled_from([0.0, -0.0, 1.0, 1.0 + 2**-52, 5e-324, -5e-324, 1e-300]),
    st.floats(0.5, 2.0),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_MIXED, min_size=1, max_size=3000))
def test_bracketed_quantiles_are_the_exact_order_statistics(values: list[float]) -> None:
    v = np.array(values)
    got = _kernel_quantiles(v, _QS)
    np.testing.assert_array_equal(got, _exact_quantiles(v, _QS))  # bit for bit
    if np.isfinite(np.diff(np.sort(v))).all():  # no overflow between neighbours
        np.testing.assert_allclose(got, np.quantile(v, _QS), rtol=1e-12, atol=1e-300)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.floats(0.1, 3.0), st.integers(0, 2**32))
def test_bracketed_quantiles_of_lognormal_leverage(n: int, sigma: float, seed: int) -> None:
    # The observation's case: about a thousand leverages, lognormal, with bankrupt-edge tails.
    v = np.random.default_rng(seed).lognormal(1.5, sigma, n)
    v[:: max(1, n // 7)] *= 1e6
    np.testing.assert_array_equal(_kernel_quantiles(v, _QS), _exact_quantiles(v, _QS))


def test_quantiles_of_equal_values_and_of_none() -> None:
    np.testing.assert_array_equal(_kernel_quantiles(np.full(2000, 3.5), _QS), [3.5] * 3)
    np.testing.assert_array_equal(_kernel_quantiles(np.zeros(0), _QS), [0.0] * 3)


@pytest.mark.parametrize("tiers", [None, MarginTiers.binance_btcusdt_2021()])
def test_threads_give_the_same_rows_bit_for_bit(tiers: MarginTiers | None) -> None:
    rng = np.random.default_rng(4)
    n_envs, n_acc = 9, 700
    # Books from a few open accounts to most (the serial rows reuse one scratch, dirty).
    open_frac = rng.uniform(0.005, 0.9, (n_envs, 1))
    size = rng.normal(0.0, 2.0, (n_envs, n_acc)) * (rng.random((n_envs, n_acc)) < open_frac)
    coll = rng.lognormal(10.0, 1.0, (n_envs, n_acc))
    entry = rng.uniform(9e4, 1.1e5, (n_envs, n_acc))
    s = SimState.create(coll, size, entry, 0.0)
    params = RiskParams(mmr=0.004, imr=0.01, tiers=tiers)
    mark = rng.uniform(9.5e4, 1.05e5, n_envs)
    serial = book_stats(s, params, mark)
    np.testing.assert_array_equal(book_stats(s, params, mark, parallel=True), serial)
    for e in range(n_envs):  # and each row is the exchange alone
        alone = SimState.create(coll[e : e + 1], size[e : e + 1], entry[e : e + 1], 0.0)
        np.testing.assert_array_equal(book_stats(alone, params, mark[e : e + 1])[0], serial[e])


@pytest.mark.parametrize("tiers", [None, MarginTiers.binance_btcusdt_2021()])
def test_book_read_inside_the_compiled_decision_equals_book_stats_after_it(
    tiers: MarginTiers | None,
) -> None:
    # The environment takes the book from the advance kernel (book_out); it must be exactly
    # what book_stats reads from the state the block leaves, at the block's last mark.
    from fundgym.envs.scenarios import load_scenario
    from fundgym.envs.simulator import BLOCK_SERIES, ExchangeSimulator

    risk = RiskParams(mmr=0.004, imr=0.01, tiers=tiers)
    sim = ExchangeSimulator(
        load_scenario("oct_10_2025"), risk, n_envs=3, n_accounts=64, seed=[1, 2, 3]
    )
    mark_col = BLOCK_SERIES.index("mark_price")
    for _ in range(4):
        book = np.full((3, len(BOOK_STATS)), np.nan)
        block = sim.advance(7, check_ledger=False, book_series=False, book_out=book)
        want = book_stats(sim.state, sim.risk, block.series[-1, :, mark_col])
        np.testing.assert_array_equal(book, want)
