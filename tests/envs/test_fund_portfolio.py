"""The fund's bucket portfolio: Black-Scholes marks, yield, stress, costs and conservation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundgym.envs.fund.portfolio import (
    BUCKETS,
    MINUTES_PER_YEAR,
    AllocationParams,
    FundPortfolio,
    accrue,
    black_scholes_put,
    crash_premium,
    inject_if_exhausted,
    pay,
    put_price,
    rebalance,
    receive,
    settle,
)

P = AllocationParams()
WEEK_YEARS = 7 * 1440 / MINUTES_PER_YEAR


def bs_put_ref(s, k, t, vol):
    """Scalar Black-Scholes put (zero rates) from the textbook formula and math.erfc."""
    if t <= 0 or vol <= 0:
        return max(k - s, 0.0)
    w = vol * math.sqrt(t)
    d1 = (math.log(s / k) + 0.5 * w * w) / w
    d2 = d1 - w

    def n(x):
        return 0.5 * math.erfc(-x / math.sqrt(2))

    return k * n(-d2) - s * n(-d1)


def put_price_ref(s, k, t, vol):
    """The option market's quote from its definition: Black-Scholes at the implied-vol floor
    (40%) or above, plus P(at least one crash at 0.7/day before expiry) x the put's payoff
    after a 27.5% crash."""
    if t <= 0:
        return max(k - s, 0.0)
    p_crash = 1.0 - math.exp(-0.7 * 365.0 * t)
    return bs_put_ref(s, k, t, max(vol, 0.4)) + p_crash * max(k - s * (1 - 0.275), 0.0)


# fmt: off
PUT_PRICE_TABLE = [
    # spot, strike, tenor_y,    vol, value (by hand: BS term + crash term)
    (100.0, 85.0,  WEEK_YEARS, 0.8, 0.3222841 + (1 - math.exp(-4.9)) * 12.5),   # 12.7291
    (100.0, 85.0,  WEEK_YEARS, 0.2, None),        # realised 20% quoted at the 40% floor
    (100.0, 60.0,  WEEK_YEARS, 0.8, None),        # strike below the crash level: no premium
    (70.0,  85.0,  1 / 365,    0.8, None),        # after a crash, one day left
    (70.0,  85.0,  0.0,        0.8, 15.0),        # expired: intrinsic
]
# fmt: on


@pytest.mark.parametrize(("s", "k", "t", "vol", "value"), PUT_PRICE_TABLE)
def test_put_price_table(s, k, t, vol, value):
    expected = put_price_ref(s, k, t, vol) if value is None else value
    assert put_price(s, k, t, vol) == pytest.approx(expected, rel=1e-6 if value else 1e-12)


def test_put_price_crash_premium_makes_the_weekly_hedge_cost_what_a_crash_pays():
    # At the sampler's crash rate a 15%-OTM weekly put costs ~12.7% of spot, while a 30% crash
    # pays 15%: a hedge no longer returns hundreds of times its premium.
    quote = float(put_price(100.0, 85.0, WEEK_YEARS, 0.5))
    assert 12.0 < quote < 13.5
    assert float(black_scholes_put(100.0, 85.0, WEEK_YEARS, 0.5)) < 0.7


# fmt: off
CRASH_RATE_TABLE = [
    # crashes a year, P(a crash within the week) = 1 - exp(-rate x 7/365), premium (x 12.5)
    (255.5,  1 - math.exp(-4.9),          (1 - math.exp(-4.9)) * 12.5),           # 12.4070
    (2.0,    1 - math.exp(-14 / 365),     (1 - math.exp(-14 / 365)) * 12.5),      # 0.470447
    (0.0,    0.0,                         0.0),
]
# fmt: on


@pytest.mark.parametrize(("rate", "p_crash", "premium"), CRASH_RATE_TABLE)
def test_put_quote_prices_the_configured_crash_rate(rate, p_crash, premium):
    # A 15%-OTM weekly put on 100: the crash term is P(a crash) x (85 - 100 x 0.725) = 12.5;
    # the quote adds it to Black-Scholes at 80% (0.3222841, PUT_PRICE_TABLE).
    assert float(crash_premium(100.0, 85.0, WEEK_YEARS, rate)) == pytest.approx(premium, rel=1e-12)
    assert premium == pytest.approx(p_crash * 12.5)
    quote = float(put_price(100.0, 85.0, WEEK_YEARS, 0.8, rate))
    assert quote == pytest.approx(bs_put_ref(100.0, 85.0, WEEK_YEARS, 0.8) + premium, rel=1e-12)


def test_rebalance_buys_more_protection_where_the_market_prices_fewer_crashes():
    # The same 10% hedge budget buys 0.470447 / 12.4070 of the puts at the training rate
    # that it buys at a real market's 2 a year: the premium, not the mark, is what differs.
    units = {}
    for rate in (255.5, 2.0):
        pf = FundPortfolio.from_stable([1_000.0])
        params = AllocationParams(put_crash_rate_per_year=rate, rebalance_fee_bps=0.0)
        w = np.array([[0.9, 0.0, 0.0, 0.1]])
        rebalance(pf, w, np.full(1, 100.0), np.full(1, 0.8), np.zeros(1, bool), params)
        units[rate] = float(pf.put_units[0])
    mark = bs_put_ref(100.0, 85.0, WEEK_YEARS, 0.8)
    quote = {r: mark + p * 12.5 for r, p, _ in CRASH_RATE_TABLE[:2]}
    assert units[2.0] / units[255.5] == pytest.approx(quote[255.5] / quote[2.0], rel=1e-6)


def portfolio(stable=0.0, yield_=0.0, volatile_units=0.0, price=100.0, vol=0.8):
    """A one-exchange portfolio with the given holdings, marked at ``price``."""
    pf = FundPortfolio.zeros(1)
    pf.stable_usd[:] = stable
    pf.yield_usd[:] = yield_
    pf.volatile_units[:] = volatile_units
    pf.mark_price[:] = price
    pf.mark_vol_annual[:] = vol
    pf.initial_value_usd[:] = pf.value_usd(price, vol)
    return pf


# ==== Black-Scholes ====

# fmt: off
BS_TABLE = [
    # spot,  strike, tenor_y, vol,  value
    (100.0,  100.0,  1.0,     0.2,  7.965567455405804),   # = 100 erf(0.1 / sqrt 2)
    (100.0,   85.0,  WEEK_YEARS, 0.8, None),               # the default hedge
    (70.0,    85.0,  WEEK_YEARS, 0.8, None),               # after a 30% crash
    (100.0,  120.0,  0.5,     0.5,  None),
    (50.0,   100.0,  0.25,    1.5,  None),
]
# fmt: on


@pytest.mark.parametrize(("s", "k", "t", "vol", "value"), BS_TABLE)
def test_black_scholes_put_table(s, k, t, vol, value):
    expected = bs_put_ref(s, k, t, vol) if value is None else value
    assert black_scholes_put(s, k, t, vol) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_black_scholes_limits():
    # Deep in the money: worth intrinsic (plus a sliver of time value, well under a cent).
    deep_itm = black_scholes_put(10.0, 100.0, 7 / 365, 0.5)
    assert 90.0 <= deep_itm < 90.0 + 1e-12
    # Deep out of the money: worth nothing, but not negative.
    deep_otm = black_scholes_put(1000.0, 100.0, 7 / 365, 0.5)
    assert 0.0 <= deep_otm < 1e-12
    # No time or no volatility: intrinsic, no NaN and no warning (pytest turns them into errors).
    spot = np.array([80.0, 100.0, 120.0])
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(black_scholes_put(spot, 100.0, 0.0, 0.8), [20.0, 0.0, 0.0])
        np.testing.assert_array_equal(black_scholes_put(spot, 100.0, 1.0, 0.0), [20.0, 0.0, 0.0])
        np.testing.assert_array_equal(black_scholes_put(spot, 0.0, 1.0, 0.8), [0.0, 0.0, 0.0])
        assert black_scholes_put(1e-300, 100.0, 1.0, 1e-300) == 100.0
    # Put-call parity with zero rates: C - P = S - K, and C >= 0 means P >= K - S.
    assert black_scholes_put(90.0, 100.0, 2.0, 3.0) > 10.0


def test_black_scholes_vectorised_equals_row_by_row():
    rng = np.random.default_rng(0)
    s = rng.uniform(1, 200, 64)
    k = rng.uniform(1, 200, 64)
    t = rng.uniform(0, 2, 64)
    vol = rng.uniform(0, 3, 64)
    t[:4] = 0.0
    vol[4:8] = 0.0
    batch = black_scholes_put(s, k, t, vol)
    rows = [float(black_scholes_put(*args)) for args in zip(s, k, t, vol, strict=True)]
    np.testing.assert_array_equal(batch, rows)
    np.testing.assert_allclose(
        batch, [bs_put_ref(*a) for a in zip(s, k, t, vol, strict=True)], rtol=1e-11, atol=1e-11
    )


# ==== Yield and stress ====


def test_yield_accrues_simple_rate_compounded_per_tick():
    pf = FundPortfolio.from_stable([0.0])
    pf.yield_usd[:] = 1_000_000.0
    pf.initial_value_usd[:] = 1_000_000.0
    for _ in range(1440):
        accrue(pf, 100.0, 0.8, 1.0, P)
    exact = 1_000_000.0 * (1 + 0.05 / 525_600) ** 1440
    assert pf.yield_usd[0] == pytest.approx(exact, rel=1e-12)
    # One day at 5% APR is 1e6 * 0.05 / 365 = 136.986...; compounding adds ~1e-5 of that.
    assert pf.yield_usd[0] - 1e6 == pytest.approx(1e6 * 0.05 / 365, rel=1e-4)
    assert pf.external_pnl_usd[0] == pytest.approx(exact - 1e6, rel=1e-9)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_stress_limits_yield_withdrawal():
    # stable 100, yield 1,000, volatile 1 unit at 200 (sells for 199 after 0.5% slippage).
    pf = portfolio(stable=100.0, yield_=1000.0, volatile_units=1.0, price=200.0)
    paid = pay(pf, [500.0], 200.0, 0.8, np.array([True]), P)
    # 100 stable + 2% of 1,000 yield + 199 from the whole volatile bucket.
    assert paid[0] == pytest.approx(319.0, rel=1e-12)
    assert pf.yield_usd[0] == pytest.approx(980.0, rel=1e-12)
    assert pf.volatile_units[0] == 0.0
    assert pf.fees_paid_usd[0] == pytest.approx(1.0, rel=1e-9)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-9)

    calm = portfolio(stable=100.0, yield_=1000.0, volatile_units=1.0, price=200.0)
    assert calm.liquid_usd(200.0, 0.8, np.array([False]), P)[0] == pytest.approx(1299.0)
    paid = pay(calm, [500.0], 200.0, 0.8, np.array([False]), P)
    assert paid[0] == 500.0
    assert calm.yield_usd[0] == 600.0
    assert calm.volatile_units[0] == 1.0


def test_pay_is_vectorised_over_exchanges():
    pf = FundPortfolio.from_stable([100.0, 1000.0])
    pf.yield_usd[:] = 1000.0
    pf.initial_value_usd += 1000.0
    paid = pay(pf, [500.0, 300.0], 100.0, 0.8, np.array([True, True]), P)
    np.testing.assert_array_equal(paid, [120.0, 300.0])
    np.testing.assert_array_equal(pf.stable_usd, [0.0, 700.0])
    np.testing.assert_allclose(pf.ledger_gap_usd(), 0.0, atol=1e-9)


# ==== Rebalance, crash and expiry ====


def bought():
    pf = FundPortfolio.from_stable([1_000_000.0])
    cost = rebalance(pf, [0.5, 0.2, 0.2, 0.1], 100.0, 0.8, np.array([False]), P)
    return pf, cost


# The default hedge, bought at 100 with 80% vol: quoted 12.7291 (Black-Scholes 0.32228 + the
# crash premium 12.4069), marked at 0.32228; the difference is expensed on purchase.
QUOTE = put_price_ref(100.0, 85.0, WEEK_YEARS, 0.8)
MARK = bs_put_ref(100.0, 85.0, WEEK_YEARS, 0.8)


def test_rebalance_from_stable_hand_computed():
    pf, cost = bought()
    # Moved into yield 200k, volatile 200k, hedge 100k: 500k x 10 bps = 500 fee.
    # Puts: 100k at the quote, 5% spread = 5,000; the crash premium expensed is
    # 100k x (1 - 0.32228 / 12.7291) = 97,468.1. Total cost 102,968.1, all out of stable.
    premium = 100_000.0 * (1.0 - MARK / QUOTE)
    assert premium == pytest.approx(97_468.1, abs=0.1)
    assert cost[0] == pytest.approx(5_500.0 + premium, rel=1e-12)
    assert pf.fees_paid_usd[0] == pytest.approx(5_500.0 + premium, rel=1e-12)
    assert pf.external_pnl_usd[0] == pytest.approx(-5_500.0 - premium, rel=1e-12)
    assert pf.stable_usd[0] == pytest.approx(1e6 - 200_000 - 200_000 - 105_000 - 500, rel=1e-12)
    assert pf.yield_usd[0] == 200_000.0
    assert pf.volatile_units[0] == pytest.approx(2_000.0, rel=1e-12)
    assert pf.put_units[0] == pytest.approx(100_000.0 / QUOTE, rel=1e-11)  # 7,856 puts
    assert pf.put_strike[0] == 85.0
    assert pf.put_minutes_left[0] == 7 * 1440
    hedge_mark = 100_000.0 * MARK / QUOTE  # 2,531.9
    value = 494_500.0 + 400_000.0 + hedge_mark
    assert pf.value_usd(100.0, 0.8)[0] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(
        pf.weights(100.0, 0.8)[0], np.array([494_500, 200_000, 200_000, hedge_mark]) / value
    )
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)
    assert BUCKETS[3] == "hedge"


def test_crash_raises_hedge_and_lowers_volatile():
    pf, _ = bought()
    before = pf.bucket_values_usd(100.0, 0.8)[0]
    pnl_before = pf.external_pnl_usd[0]
    accrue(pf, 70.0, 0.8, 0.0, P)  # a -30% gap, same vol, no time passes
    after = pf.bucket_values_usd(70.0, 0.8)[0]
    units = 100_000.0 / QUOTE
    hedge_gain = units * (bs_put_ref(70.0, 85.0, WEEK_YEARS, 0.8) - MARK)
    assert after[2] - before[2] == pytest.approx(2_000 * (70.0 - 100.0), rel=1e-12)  # -60,000
    assert after[3] - before[3] == pytest.approx(hedge_gain, rel=1e-10)
    # Each put went from 0.3223 to 15.137 (worth more than its 15 of intrinsic): the crash pays
    # 1.19x the 100k spent on the hedge.
    assert after[3] == pytest.approx(units * 15.137, rel=1e-4)
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert pf.external_pnl_usd[0] - pnl_before == pytest.approx(
        after.sum() - before.sum(), rel=1e-12
    )


def test_puts_expire_into_stable():
    pf, _ = bought()
    units = pf.put_units[0]
    stable = pf.stable_usd[0]
    for _ in range(7 * 24):  # hourly ticks for the put tenor, price falls to 60
        accrue(pf, 60.0, 0.8, 60.0, P)
    assert pf.put_units[0] == 0.0
    assert pf.put_strike[0] == 0.0
    assert pf.put_minutes_left[0] == 0.0
    assert pf.stable_usd[0] == pytest.approx(stable + units * (85.0 - 60.0), rel=1e-12)
    assert pf.bucket_values_usd(60.0, 0.8)[0, 3] == 0.0
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)
    # Not rolled by itself: a rebalance opens a new series at 85% of the new price.
    rebalance(pf, [0.5, 0.2, 0.2, 0.1], 60.0, 0.8, np.array([False]), P)
    assert pf.put_strike[0] == pytest.approx(51.0)
    assert pf.put_units[0] > 0


# ==== Sizing the hedge by the premium committed to it ====


def hedged(weights=(0.9, 0.0, 0.0, 0.1)):
    """1M in stable, then one rebalance to ``weights`` at 100 with 80% vol."""
    pf = FundPortfolio.from_stable([1_000_000.0])
    rebalance(pf, list(weights), 100.0, 0.8, np.array([False]), P)
    return pf


def test_the_hedge_is_not_bought_again_at_every_decision():
    # The churn that drained the fund: a hedge marked at 2.5% of its cost looked under target at
    # every decision and bought a fresh series each time. Ten hourly decisions at the same
    # weights, flat price: the premium is expensed once (97,468 on the 100k bought).
    pf = hedged()
    first_fees = pf.fees_paid_usd[0]
    strike, units = pf.put_strike[0], pf.put_units[0]
    assert pf.put_cost_usd[0] == pytest.approx(100_000.0, rel=1e-12)
    for _ in range(10):
        accrue(pf, 100.0, 0.8, 60.0, P)
        rebalance(pf, [0.9, 0.0, 0.0, 0.1], 100.0, 0.8, np.array([False]), P)
    assert pf.put_strike[0] == strike  # the same series, ten hours older
    assert pf.put_minutes_left[0] == 7 * 1440 - 600
    assert pf.put_units[0] == units
    assert pf.put_cost_usd[0] == 100_000.0
    assert pf.fees_paid_usd[0] - first_fees < 1.0  # rebalancing stable's hourly drift only
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_a_fund_almost_all_in_puts_keeps_them_at_the_same_weights():
    # 96% of the fund in puts leaves ~2.5% of its value by mark: the weights are taken of the
    # fund with the hedge at its cost, so the same weights later ask for the same hedge.
    pf = hedged((0.04, 0.0, 0.0, 0.96))
    units, committed = pf.put_units[0], pf.put_cost_usd[0]
    for _ in range(10):
        accrue(pf, 100.0, 0.8, 60.0, P)
        rebalance(pf, [0.04, 0.0, 0.0, 0.96], 100.0, 0.8, np.array([False]), P)
    assert pf.put_units[0] == units
    assert pf.put_cost_usd[0] == committed


def test_a_hedge_out_of_the_money_is_held_until_its_target_falls_below_its_mark():
    pf = hedged()
    units = pf.put_units[0]
    stable = pf.stable_usd[0]
    # Weights are shares of the fund with the hedge at its size, the 100k premium committed
    # (above its 2,532 mark): 894,900 + 100,000. A 5% target (49,745) lies between the mark and
    # the cost: the premium is sunk, the puts are held, nothing is paid.
    cost = rebalance(pf, [0.95, 0.0, 0.0, 0.05], 100.0, 0.8, np.array([False]), P)[0]
    assert pf.put_units[0] == units
    assert pf.put_cost_usd[0] == 100_000.0
    assert cost == pytest.approx(0.0, abs=1e-9)  # stable is already at 95% (894,900 of 994,900)
    assert pf.stable_usd[0] == stable
    # A 0.1% target (994.90) is below the mark: puts worth the difference are sold.
    cost = rebalance(pf, [0.999, 0.0, 0.0, 0.001], 100.0, 0.8, np.array([False]), P)[0]
    mark = units * MARK
    sold = mark - 0.001 * (stable + 100_000.0)
    assert pf.put_units[0] == pytest.approx(units * (1 - sold / mark), rel=1e-12)
    assert pf.put_cost_usd[0] == pytest.approx(100_000.0 * (1 - sold / mark), rel=1e-12)
    assert cost == pytest.approx(sold * (0.05 + 0.001), rel=1e-9)  # spread + 10 bps
    assert pf.stable_usd[0] == pytest.approx(stable + sold * (1 - 0.05 - 0.001), rel=1e-12)
    # A zero target sells them all.
    rebalance(pf, [1.0, 0.0, 0.0, 0.0], 100.0, 0.8, np.array([False]), P)
    assert pf.put_units[0] == 0.0
    assert pf.put_cost_usd[0] == 0.0
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_hedge_below_target_tops_up_the_live_series_at_its_quote():
    pf = hedged()
    units = pf.put_units[0]
    accrue(pf, 95.0, 0.8, 1440.0, P)  # a day later, 5% lower: six days left on the 85 strike
    assert pf.bucket_values_usd(95.0, 0.8)[0, 3] < 100_000.0  # sized by its cost, not its mark
    value = pf.stable_usd[0] + 100_000.0
    cost = rebalance(pf, [0.8, 0.0, 0.0, 0.2], 95.0, 0.8, np.array([False]), P)[0]
    six_days = 6 * 1440 / MINUTES_PER_YEAR
    quote = bs_put_ref(95.0, 85.0, six_days, 0.8) + (1 - math.exp(-0.7 * 6)) * (85 - 95 * 0.725)
    buy = 0.2 * value - 100_000.0  # the target less the premium already committed
    assert pf.put_strike[0] == 85.0  # no new series
    assert pf.put_minutes_left[0] == 6 * 1440
    assert pf.put_units[0] == pytest.approx(units + buy / quote, rel=1e-9)
    assert pf.put_cost_usd[0] == pytest.approx(0.2 * value, rel=1e-12)
    premium = buy * (1 - bs_put_ref(95.0, 85.0, six_days, 0.8) / quote)
    assert cost == pytest.approx(buy * (0.05 + 0.001) + premium, rel=1e-9)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_a_hedge_in_the_money_is_sized_by_its_mark_and_does_not_flip():
    pf = hedged()
    accrue(pf, 70.0, 0.8, 0.0, P)  # the crash: each put marked 15.14, 1.19x its cost
    mark = pf.bucket_values_usd(70.0, 0.8)[0, 3]
    assert mark > pf.put_cost_usd[0]
    rebalance(pf, [0.9, 0.0, 0.0, 0.1], 70.0, 0.8, np.array([False]), P)
    target = 0.1 * pf.value_usd(70.0, 0.8)[0]
    after = pf.bucket_values_usd(70.0, 0.8)[0, 3]
    assert after < mark  # profit taken down to the target, by the mark
    assert after == pytest.approx(target, rel=1e-2)
    units, fees = pf.put_units[0], pf.fees_paid_usd[0]
    # The next decision at the same state neither buys back nor sells more than rounding.
    rebalance(pf, [0.9, 0.0, 0.0, 0.1], 70.0, 0.8, np.array([False]), P)
    assert pf.put_units[0] == pytest.approx(units, rel=1e-3)
    assert pf.fees_paid_usd[0] - fees < 1e-3 * fees
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_a_worthless_live_series_is_rolled():
    pf = hedged()
    accrue(pf, 400.0, 0.4, 1440.0, P)  # a 4x rally: the 85 strike is worth nothing
    value = pf.stable_usd[0] + 100_000.0  # the hedge still sized by its cost
    # Target 50% is above the 100k committed, but topping up a series quoted below
    # MIN_PUT_PREMIUM_FRAC of spot buys no protection: it is sold, a new one bought.
    rebalance(pf, [0.5, 0.0, 0.0, 0.5], 400.0, 0.4, np.array([False]), P)
    assert pf.put_strike[0] == pytest.approx(340.0)  # a fresh series at 85% of 400
    assert pf.put_minutes_left[0] == 7 * 1440
    assert pf.put_cost_usd[0] == pytest.approx(0.5 * value, rel=1e-12)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-6)


def test_paying_from_puts_and_expiry_shrink_the_committed_premium():
    pf = hedged((0.0, 0.0, 0.0, 1.0))
    units, committed = pf.put_units[0], pf.put_cost_usd[0]
    accrue(pf, 70.0, 0.8, 0.0, P)
    liquid = pf.liquid_usd(70.0, 0.8, np.array([False]), P)[0]
    pay(pf, [pf.stable_usd[0] + 0.5 * (liquid - pf.stable_usd[0])], 70.0, 0.8, [False], P)
    kept = pf.put_units[0] / units
    assert kept == pytest.approx(0.5, rel=1e-9)
    assert pf.put_cost_usd[0] == pytest.approx(committed * kept, rel=1e-12)
    for _ in range(7):
        accrue(pf, 70.0, 0.8, 1440.0, P)
    assert pf.put_units[0] == 0.0
    assert pf.put_cost_usd[0] == 0.0


def test_rebalance_frozen_yield_and_selling_costs():
    pf = portfolio(yield_=1000.0, volatile_units=10.0, price=100.0)  # value 2,000
    cost = rebalance(pf, [1.0, 0.0, 0.0, 0.0], 100.0, 0.8, np.array([True]), P)
    # Only 2% of yield (20) comes out; volatile sells whole (1,000, 5 slippage).
    # Fee 10 bps on 1,020 moved = 1.02.
    assert cost[0] == pytest.approx(5.0 + 1.02, rel=1e-12)
    assert pf.yield_usd[0] == 980.0
    assert pf.volatile_units[0] == 0.0
    assert pf.stable_usd[0] == pytest.approx(20.0 + 995.0 - 1.02, rel=1e-12)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-9)


def test_rebalance_scales_purchases_when_cash_short():
    # All in (frozen) yield, target all hedge: only 2% can be freed, so buys are scaled.
    pf = portfolio(yield_=1000.0)
    rebalance(pf, [0.0, 0.0, 0.0, 1.0], 100.0, 0.8, np.array([True]), P)
    assert pf.stable_usd[0] == pytest.approx(0.0, abs=1e-12)
    # 20 withdrawn (fee 0.02), the rest buys puts at 1 + 5% spread + 10 bps fee; they are
    # marked at Black-Scholes, MARK / QUOTE of what they cost.
    spent = 20.0 - 0.02
    hedge = pf.bucket_values_usd(100.0, 0.8)[0, 3]
    assert hedge == pytest.approx(spent / 1.051 * MARK / QUOTE, rel=1e-12)
    assert pf.ledger_gap_usd()[0] == pytest.approx(0.0, abs=1e-9)


def test_receive_goes_to_stable():
    pf = FundPortfolio.from_stable([10.0, 0.0])
    receive(pf, [5.0, 7.0])
    np.testing.assert_array_equal(pf.stable_usd, [15.0, 7.0])
    np.testing.assert_array_equal(pf.ledger_gap_usd(), [0.0, 0.0])


def test_settle_receives_income_then_pays_the_shortfall():
    # Exchange 0: stable 100 + income 30 = 130, shortfall 120 paid from stable -> 10 left.
    # Exchange 1: stable 0 + income 5, yield 1,000 frozen (2% = 20 withdrawable): owes 40,
    #   pays 5 from stable and 20 from yield = 25, short by 15.
    # Exchange 2: nothing moves, so it is not even re-marked.
    pf = FundPortfolio.from_stable([100.0, 0.0, 50.0])
    pf.yield_usd[:] = [0.0, 1000.0, 0.0]
    pf.initial_value_usd += pf.yield_usd
    paid = settle(
        pf, [30.0, 5.0, 0.0], [120.0, 40.0, 0.0], 100.0, 0.8, np.array([False, True, False]), P
    )
    np.testing.assert_array_equal(paid, [120.0, 25.0, 0.0])
    np.testing.assert_array_equal(pf.stable_usd, [10.0, 0.0, 50.0])
    np.testing.assert_array_equal(pf.yield_usd, [0.0, 980.0, 0.0])
    np.testing.assert_array_equal(pf.received_usd, [30.0, 5.0, 0.0])
    np.testing.assert_array_equal(pf.paid_usd, [120.0, 25.0, 0.0])
    # Only the exchanges that paid were marked to the price; exchange 2 was not touched.
    np.testing.assert_array_equal(pf.mark_price, [100.0, 100.0, 0.0])
    np.testing.assert_allclose(pf.ledger_gap_usd(), 0.0, atol=1e-9)


def test_settle_without_flows_changes_nothing():
    pf = portfolio(stable=10.0, volatile_units=2.0, price=100.0)
    before = {k: v.copy() for k, v in vars(pf).items()}
    paid = settle(pf, [0.0], [0.0], 50.0, 0.8, np.array([False]), P)
    assert paid[0] == 0.0
    for k, v in vars(pf).items():  # not even re-marked to the new price
        np.testing.assert_array_equal(v, before[k], err_msg=k)


# ==== Conservation property ====

OPS = st.one_of(
    st.tuples(
        st.just("accrue"),
        st.floats(0.01, 2.0),  # price factor: -99% .. +100%
        st.floats(0.0, 3.0),  # vol
        st.sampled_from([0.0, 1.0, 60.0, 1440.0, 3 * 1440.0]),
    ),
    st.tuples(
        st.just("rebalance"),
        st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
        st.floats(0.01, 2.0),
        st.floats(0.0, 3.0),
        st.booleans(),
    ),
    st.tuples(
        st.just("pay"), st.floats(0.0, 1.5), st.floats(0.01, 2.0), st.floats(0, 3), st.booleans()
    ),
    st.tuples(st.just("receive"), st.floats(0.0, 1e6)),
    # The venue's top-up after the tick's bad debt (a 0 flag: no bad debt), under stress or not.
    st.tuples(st.just("inject"), st.sampled_from([0.0, 1.0]), st.booleans()),
)


def with_top_ups(pf: FundPortfolio) -> FundPortfolio:
    """``pf`` with an allowance of two top-ups of half its starting value each."""
    pf.injection_usd[:] = 0.5 * pf.initial_value_usd
    pf.injections_left[:] = 2.0
    return pf


@settings(max_examples=300, deadline=None)
@given(initial=st.floats(0.0, 1e9), ops=st.lists(OPS, max_size=25))
def test_every_movement_balances(initial, ops):
    pf = with_top_ups(FundPortfolio.from_stable([initial, initial / 3]))
    price = np.array([100.0, 2_000.0])
    vol = np.array([0.8, 0.8])
    received = np.zeros(2)
    injected = np.zeros(2)
    paid_total = np.zeros(2)
    accrue(pf, price, vol, 0.0, P)
    for op in ops:
        kind = op[0]
        if kind == "accrue":
            price = price * op[1]
            vol = np.full(2, op[2])
            accrue(pf, price, vol, op[3], P)
        elif kind == "rebalance":
            raw = np.array(op[1]) + 1e-9
            w = raw / raw.sum()
            price = price * op[2]
            vol = np.full(2, op[3])
            cost = rebalance(pf, w, price, vol, np.full(2, op[4]), P)
            assert (cost >= 0).all()
        elif kind == "pay":
            price = price * op[2]
            vol = np.full(2, op[3])
            stressed = np.full(2, op[4])
            liquid = pf.liquid_usd(price, vol, stressed, P)
            amount = op[1] * pf.value_usd(price, vol)
            paid = pay(pf, amount, price, vol, stressed, P)
            assert (paid <= amount * (1 + 1e-12)).all()
            assert (paid <= liquid * (1 + 1e-12) + 1e-9).all()
            paid_total += paid
        elif kind == "inject":
            injected += inject_if_exhausted(pf, np.full(2, op[1]), np.full(2, op[2]), P)
        else:
            receive(pf, [op[1], op[1]])
            received += op[1]
        value = pf.value_usd(price, vol)
        expected = pf.initial_value_usd + pf.external_pnl_usd + received + injected - paid_total
        scale = np.maximum.reduce(
            [np.ones(2), value, initial + received, np.abs(pf.external_pnl_usd), pf.fees_paid_usd]
        )
        assert (np.abs(value - expected) <= 1e-9 * scale).all()
        np.testing.assert_array_equal(pf.received_usd, received)
        np.testing.assert_array_equal(pf.injected_usd, injected)
        assert (pf.injections + pf.injections_left == 2.0).all()
        np.testing.assert_allclose(pf.paid_usd, paid_total, rtol=1e-12)
        for name in pf.__dataclass_fields__:
            arr = getattr(pf, name)
            assert np.isfinite(arr).all(), name
            if name != "external_pnl_usd":
                assert (arr >= 0).all(), name
        assert (value >= 0).all()


# ==== Parameter validation ====


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("yield_apr", -0.01),
        ("yield_withdraw_frac_stressed", 1.5),
        ("rebalance_fee_bps", float("nan")),
        ("volatile_sell_slippage_frac", 0.9),
        ("put_moneyness", 0.0),
        ("put_moneyness", 1.2),
        ("put_tenor_days", 0.0),
        ("option_spread_frac", -1.0),
        ("put_crash_rate_per_year", -1.0),
        ("put_crash_rate_per_year", 40_000.0),
        ("put_crash_rate_per_year", float("inf")),
        ("yield_apr", "5%"),
    ],
)
def test_params_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"AllocationParams\.{field} must .* got {value!r}"):
        AllocationParams(**{field: value})


def test_params_accept_boundaries():
    p = AllocationParams(put_moneyness=1.0, yield_withdraw_frac_stressed=0.0, rebalance_fee_bps=0)
    assert p.rebalance_fee_frac == 0.0
    assert isinstance(p.rebalance_fee_bps, float)


def test_puts_with_negligible_premium_are_not_bought():
    # A 70%-OTM 7-day put (below the priced crash level, at the 40% vol floor) is worth ~1e-60
    # of spot: a 25% hedge target must not turn into 1e59 contracts (which a later volatility
    # jump would revalue into nonsense).
    pf = FundPortfolio.from_stable([1.0])
    rebalance(
        pf,
        np.full((1, 4), 0.25),
        np.ones(1),
        np.full(1, 0.125),
        np.zeros(1, bool),
        AllocationParams(put_moneyness=0.3),
    )
    assert pf.put_units[0] == 0.0
    assert pf.stable_usd[0] > 0.25  # the hedge share stayed in cash


# ==== The compiled twins (fundgym.envs.fund.kernels) ====


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(1.0, 1e9),
    ops=st.lists(OPS, max_size=25),
    rate=st.sampled_from([P.put_crash_rate_per_year, 2.0, 0.0, 36_500.0]),
)
def test_compiled_fund_operations_equal_numpy_to_the_bit(initial, ops, rate):
    # The compiled accrue/pay/receive/rebalance/value/liquid value/weights against the numpy
    # functions, on the same sequence of operations, per exchange, under option markets that
    # price crashes at the training rate, a real market's, none and one a day x 100.
    from fundgym.envs.fund import kernels as fk

    params = AllocationParams(put_crash_rate_per_year=rate)

    ref = with_top_ups(FundPortfolio.from_stable([initial, initial / 3]))
    comp = with_top_ups(FundPortfolio.from_stable([initial, initial / 3]))
    arrays = fk.fund_arrays(comp)
    price = np.array([100.0, 2_000.0])
    vol = np.array([0.8, 0.8])
    for op in ops:
        kind = op[0]
        if kind == "accrue":
            price = price * op[1]
            vol = np.full(2, op[2])
            accrue(ref, price, vol, op[3], params)
            terms = fk.allocation_terms(params, op[3])
            for e in range(2):
                fk.accrue_one(arrays, e, price[e], vol[e], op[3], terms)
        elif kind == "rebalance":
            raw = np.array(op[1]) + 1e-9
            price = price * op[2]
            vol = np.full(2, op[3])
            w = np.ascontiguousarray(np.broadcast_to(raw / raw.sum(), (2, 4)))
            want = rebalance(ref, w, price, vol, np.full(2, op[4]), params)
            cost = np.full(2, np.nan)
            mask = np.array([True, True])
            fk.rebalance_kernel(
                arrays,
                w,
                mask,
                price,
                vol,
                np.full(2, op[4]),
                fk.allocation_terms(params, 1.0),
                cost,
            )
            np.testing.assert_array_equal(cost, want)
        elif kind == "pay":
            price = price * op[2]
            vol = np.full(2, op[3])
            terms = fk.allocation_terms(params, 1.0)
            want_liquid = ref.liquid_usd(price, vol, np.full(2, op[4]), params)
            amount = op[1] * ref.value_usd(price, vol)
            want = pay(ref, amount, price, vol, np.full(2, op[4]), params)
            for e in range(2):
                liquid = fk.liquid_usd(arrays, e, price[e], vol[e], op[4], terms)
                assert liquid == want_liquid[e]
                assert fk.pay_one(arrays, e, amount[e], price[e], vol[e], op[4], terms) == want[e]
        elif kind == "inject":
            want = inject_if_exhausted(ref, np.full(2, op[1]), np.full(2, op[2]), params)
            terms = fk.allocation_terms(params, 1.0)
            for e in range(2):
                assert fk.inject_if_exhausted_one(arrays, e, op[1], op[2], terms) == want[e]
        else:
            receive(ref, [op[1], op[1]])
            for e in range(2):
                fk.receive_one(arrays, e, op[1])
        for name in ref.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(comp, name), getattr(ref, name), err_msg=name)
        want_value = ref.value_usd(price, vol)
        for e in range(2):
            assert fk.value_usd(arrays, e, price[e], vol[e]) == want_value[e]
        value, weights = np.empty(2), np.empty((2, 4))
        fk.values_and_weights(arrays, price, vol, value, weights)
        np.testing.assert_array_equal(value, want_value)
        np.testing.assert_array_equal(weights, ref.weights(price, vol))
