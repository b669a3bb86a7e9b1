"""The square-root book with resilience: fills, the market's impact, its calibration (issue 16)."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundgym.envs.core.impact import (
    FILL_SHARE,
    SqrtImpact,
    book_price,
    walk_log_move,
    walked_notional,
)
from fundgym.envs.market import kernels
from fundgym.envs.market.depth import MAX_IMPACT_LOG, bounded_impact_log, walk_book
from fundgym.envs.market.market import Market
from fundgym.envs.scenarios import load_scenario, market_path, scenario_from_dict

# N / D, the walk's log move 0.01 sqrt(N / D), and the average slippage of a sell and of a buy:
# 2/3 of the final move, 1 - exp(-x) below and exp(x) - 1 above (worked with a calculator).
TABLE = [
    (0.25, 0.005, 0.0033250139, 0.0033416806),
    (1.0, 0.01, 0.0066334442, 0.0067001114),
    (4.0, 0.02, 0.0132008845, 0.0134675600),
    (100.0, 0.1, 0.0634417213, 0.0701139454),
]


@pytest.mark.parametrize(("ratio", "move", "sell_slip", "buy_slip"), TABLE)
def test_square_root_book_table(ratio, move, sell_slip, buy_slip):
    depth = 2e6
    notional = np.array([ratio * depth])
    assert walk_log_move(notional, depth)[0] == pytest.approx(move, rel=1e-12)
    sell, buy = SqrtImpact(depth).fill_prices(np.array([50_000.0]), notional, notional)
    assert 1.0 - sell[0] / 50_000.0 == pytest.approx(sell_slip, rel=1e-8)
    assert buy[0] / 50_000.0 - 1.0 == pytest.approx(buy_slip, rel=1e-8)
    # The compiled fill is the same arithmetic, to the bit.
    assert book_price(50_000.0, notional[0], depth, 0.9, -1.0) == sell[0]
    assert book_price(50_000.0, notional[0], depth, 0.9, 1.0) == buy[0]


def test_a_book_for_a_slippage_fills_a_sell_at_that_slippage():
    book = SqrtImpact.for_slippage(9_400.0, 0.001)
    sell, _ = book.fill_prices(np.array([9_400.0]), np.array([9_400.0]), np.zeros(1))
    assert sell[0] == pytest.approx(9_400.0 * 0.999, rel=1e-12)
    with pytest.raises(ValueError, match="slippage_frac in"):
        SqrtImpact.for_slippage(1.0, 0.7)


def test_square_root_equals_linear_at_one_depth_and_is_smaller_above():
    # Linear: N / D percent. Square root: sqrt(N / D) percent; the same at N = D.
    assert walk_log_move(1e6, 1e6) == pytest.approx(0.01)
    assert walk_log_move(1e8, 1e6) == pytest.approx(0.1)  # 100 x the depth: 10%, not 100%


def test_a_buy_fill_is_capped_and_a_sell_never_reaches_zero():
    book = SqrtImpact(1.0, max_impact_frac=0.9)
    sell, buy = book.fill_prices(np.array([10.0]), np.array([1e12]), np.array([1e12]))
    assert sell[0] == pytest.approx(10.0 * (1.0 - FILL_SHARE))  # the walk ends near zero
    assert buy[0] == pytest.approx(19.0)  # capped at +90%


@settings(max_examples=200, deadline=None)
@given(
    depth=st.floats(1.0, 1e10),
    a=st.floats(0.0, 1e6),
    b=st.floats(0.0, 1e6),
)
def test_move_is_monotone_and_concave_and_fills_stay_positive(depth, a, b):
    lo, hi = sorted((a * depth, b * depth))
    f_lo, f_hi = walk_log_move(lo, depth), walk_log_move(hi, depth)
    f_mid = walk_log_move(0.5 * (lo + hi), depth)
    assert f_lo <= f_hi
    assert f_mid >= 0.5 * (f_lo + f_hi) - 1e-15  # concave
    sell_lo = book_price(100.0, lo, depth, 0.9, -1.0)
    sell_hi = book_price(100.0, hi, depth, 0.9, -1.0)
    assert 0.0 < sell_hi <= sell_lo <= 100.0
    # A fill lies between the book price and where the walk ends.
    assert sell_hi >= 100.0 * math.exp(-float(f_hi)) - 1e-9


def test_flow_split_over_ticks_walks_as_far_as_one_walk_of_the_sum():
    # Without refill the book remembers what was walked: concave in the total, not per tick.
    depth = np.array([1e6])
    walk = np.zeros(1)
    for _ in range(4):
        walk = walk_book(walk, np.array([1e6]), np.zeros(1), depth)
    assert walk[0] == pytest.approx(-0.02)  # sqrt(4) percent, as 4e6 at once
    assert walked_notional(walk, depth)[0] == pytest.approx(-4e6)
    # Buys walk it back.
    back = walk_book(walk, np.zeros(1), np.array([4e6]), depth)
    assert back[0] == pytest.approx(0.0, abs=1e-9)  # sqrt of a rounding residual


def _market(sc, depth_usd_per_pct):
    market = Market(1)
    market.reset_env(0, sc, market_path(sc, np.random.default_rng(0), 1))
    market.set_normal_depth(0, depth_usd_per_pct)
    return market


def _quiet(half_life_minutes=30.0, coef=0.5, permanent=0.5):
    sc = load_scenario("calm")
    depth = dataclasses.replace(
        sc.depth,
        noise_frac=0.0,
        impact_coef=coef,
        impact_permanent_frac=permanent,
        impact_half_life_minutes=half_life_minutes,
    )
    return dataclasses.replace(sc, depth=depth)


def test_transient_impact_refills_with_the_stated_half_life():
    # A 4e6 sell through 1e6 per 1%: walk -2%; half of coef 0.5 stays, half refills.
    market = _market(_quiet(half_life_minutes=10.0), 1e6)
    market.prices()
    market.advance(np.array([4e6]), np.zeros(1), np.array([1e6]))
    assert market.impact_log[0] == pytest.approx(-0.01, rel=1e-5)  # the bound: -1.6e-6
    zero = np.zeros(1)
    for _ in range(10):  # ten one-minute ticks: one half-life
        market.prices()
        market.advance(zero, zero, np.array([1e6]))
    permanent = market.scalars[kernels.MK_IMPACT_PERMANENT_LOG, 0]
    assert permanent == pytest.approx(-0.005)
    assert market.scalars[kernels.MK_BOOK_WALK_LOG, 0] == pytest.approx(-0.01)  # half of -2%
    assert market.impact_log[0] == pytest.approx(-0.005 - 0.25 * 0.01, rel=1e-5)


def test_the_bound_on_impact_is_smooth_and_keeps_a_squeeze_finite():
    x = np.array([-1e300, -0.5, -1e-3, 0.0, 1e-3, 0.5, 50.0, 1e300])
    got = bounded_impact_log(x)
    np.testing.assert_allclose(got, MAX_IMPACT_LOG * np.tanh(x / MAX_IMPACT_LOG), rtol=1e-13)
    assert got[0] == -MAX_IMPACT_LOG and got[-1] == MAX_IMPACT_LOG  # 1/100 and 100 x the path
    assert 0.4978 < got[5] < 0.4982  # tanh's x^3 / 3 term: -0.4% of a 0.5 log move
    # A walk through a book of one dollar stays finite and the price above zero.
    market = _market(_quiet(coef=1.0), 1.0)
    for flow in (1e12, 0.0):
        market.prices()
        market.advance(np.array([0.0]), np.array([flow]), np.array([1.0]))
    assert market.prices().index[0] < 101.0 * market.column("index")[0]


def test_no_impact_with_coef_zero():
    market = _market(_quiet(coef=0.0), 1e6)
    market.prices()
    market.advance(np.array([1e9]), np.zeros(1), np.array([1e6]))
    assert market.impact_log[0] == 0.0


@pytest.mark.parametrize(
    ("depth_mult", "expected_move"),
    [
        (1.0, 0.3 * 0.01 * math.sqrt(0.015 * 225)),  # normal depth: 0.55%
        (0.1, 0.3 * 0.01 * math.sqrt(0.015 * 2250)),  # depth -90% (10 Oct 2025): 1.74%
    ],
)
def test_calibration_a_peak_minute_moves_a_major_a_few_percent_at_most(depth_mult, expected_move):
    # OI / depth(1%) = 225 and a minute whose liquidations are 1.5% of OI (10 Oct 2025:
    # $3.21B of $217B). The defaults (impact_coef 0.3) move the index by 0.3 of the walk.
    sc = load_scenario("oct_10_2025")
    oi = 1e8
    depth = oi / 225.0 * depth_mult
    market = _market(sc, oi / 225.0)
    market.prices()
    market.advance(np.array([0.015 * oi]), np.zeros(1), np.array([depth]))
    assert -market.impact_log[0] == pytest.approx(expected_move, rel=1e-4)
    assert 0.005 < -math.expm1(market.impact_log[0]) < 0.05


def test_the_ratio_sets_normal_depth_to_open_interest_over_it():
    from fundgym.envs import tick_kernels as tk
    from fundgym.envs.simulator import ExchangeSimulator

    sc = load_scenario("calm")
    assert sc.depth.oi_to_depth == 225.0
    sim = ExchangeSimulator(sc, n_envs=2, n_accounts=64, seed=[0, 1])
    want = sim.initial_open_interest_usd / 225.0
    np.testing.assert_allclose(sim.market.scalars[kernels.MK_DEPTH_NORMAL], want, rtol=1e-15)
    np.testing.assert_allclose(sim.drivers[tk.D_LAST_DEPTH_USD], want, rtol=1e-15)
    absolute = dataclasses.replace(sc, depth=dataclasses.replace(sc.depth, oi_to_depth=None))
    sim.reset_env(1, 1, absolute)
    assert sim.market.scalars[kernels.MK_DEPTH_NORMAL, 1] == 2.2e8
    assert sim.drivers[tk.D_LAST_DEPTH_USD, 1] == 2.2e8
    assert sim.market.scalars[kernels.MK_DEPTH_NORMAL, 0] == want[0]


def test_a_bad_ratio_is_refused_by_name():
    data = {"name": "x", "description": "y", "price": {"initial": 1.0}}
    data["depth"] = {"normal_usd_per_pct": 1e6, "oi_to_depth": 0}
    with pytest.raises(ValueError, match="oi_to_depth"):
        scenario_from_dict(data)
