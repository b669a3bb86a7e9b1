"""A fund holding several listed assets and puts on each at once (issue 17), worked by hand.

**The fund.** 1,000 USD in ``stable``; two assets, A at 100 and B at 10, basket 0.6 / 0.4; no
fees, spreads or slippage unless said.

| step | stable | A units | B units | value |
|---|---:|---:|---:|---:|
| half volatile: A's target 0.6 x 500, B's 0.4 x 500 | 500 | 3 | 20 | 1,000 |
| A falls to 50, B to 5 (accrue) | 500 | 3 | 20 | 750 |
| pay 600, 1% slippage (below) | 0 | 1.787879 | 11.919192 | 148.9899 |

Stable pays 500; the other 100 comes from the basket pro rata to what each asset raises (A
148.5 of 247.5, 60%; B 99, 40%), so each gives the same 40.4% of itself: A 60 / 0.99 =
60.6061 of value (3 - 60.6061 / 50 = 1.787879 units), B 40 / 0.99 = 40.4040 (20 - 40.4040 / 5
= 11.919192 units). Paying 100 out of the basket sells 101.0101 of value: the slippage,
1.0101, is a cost.

**Puts on each.** From 1,000 in stable at A 100, B 10, volatility 80%, a hedge of 20% with basket
0.5 / 0.5 buys one series on each asset for 100 of premium (strike 85 and 8.5, seven days); the
quote's crash premium is expensed, each series is marked at Black-Scholes alone. A at 80 at
expiry pays 3.5 x (units of A's series); B above its strike pays nothing.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundgym.envs.fund.portfolio import (
    MINUTES_PER_YEAR,
    AllocationParams,
    FundPortfolio,
    accrue,
    crash_premium,
    pay,
    put_mark,
    rebalance,
    receive,
)

FREE = AllocationParams(
    rebalance_fee_bps=0.0, volatile_sell_slippage_frac=0.0, option_spread_frac=0.0
)
APPROX = {"rel": 1e-12, "abs": 1e-9}
PX = np.array([[100.0, 10.0]])
VOL = np.array([[0.8, 0.8]])


def basket_fund(amount=1_000.0, k=2):
    pf = FundPortfolio.from_stable([amount], n_assets=k)
    accrue(
        pf,
        PX if k == 2 else np.full((1, k), 100.0),
        VOL if k == 2 else np.full((1, k), 0.8),
        0.0,
        FREE,
    )
    return pf


def test_the_asset_fields_have_one_column_per_asset():
    pf = FundPortfolio.from_stable([1.0, 2.0], n_assets=3)
    assert pf.n_assets == 3
    assert pf.volatile_units.shape == (2, 3) and pf.put_strike.shape == (2, 3)
    assert pf.stable_usd.shape == (2,) and pf.external_pnl_usd.shape == (2,)
    assert FundPortfolio.from_stable([1.0]).n_assets is None
    with pytest.raises(ValueError, match="n_assets must be an int >= 1"):
        FundPortfolio.zeros(1, 0)


def test_the_volatile_target_is_split_by_the_basket_and_sold_pro_rata():
    pf = basket_fund()
    cost = rebalance(pf, [0.5, 0.0, 0.5, 0.0], PX, VOL, [False], FREE, basket=[0.6, 0.4])
    assert cost[0] == 0.0
    assert pf.stable_usd[0] == pytest.approx(500.0, **APPROX)
    np.testing.assert_allclose(pf.volatile_units[0], [3.0, 20.0], rtol=1e-12)
    np.testing.assert_allclose(pf.weights(PX, VOL)[0], [0.5, 0.0, 0.5, 0.0], rtol=1e-12)
    fallen = np.array([[50.0, 5.0]])
    accrue(pf, fallen, VOL, 1.0, FREE)
    assert pf.value_usd(fallen, VOL)[0] == pytest.approx(750.0, **APPROX)
    assert pf.external_pnl_usd[0] == pytest.approx(-250.0, **APPROX)
    slip = AllocationParams(rebalance_fee_bps=0.0, volatile_sell_slippage_frac=0.01)
    paid = pay(pf, [600.0], fallen, VOL, [False], slip)
    assert paid[0] == pytest.approx(600.0, **APPROX)
    assert pf.stable_usd[0] == 0.0
    np.testing.assert_allclose(
        pf.volatile_units[0], [3.0 - 60.0 / 0.99 / 50.0, 20.0 - 40.0 / 0.99 / 5.0], rtol=1e-12
    )
    np.testing.assert_allclose(pf.volatile_units[0], [1.787879, 11.919192], rtol=1e-6)
    assert pf.fees_paid_usd[0] == pytest.approx(100.0 / 0.99 - 100.0, **APPROX)
    assert abs(pf.ledger_gap_usd()[0]) <= 1e-9


def test_paying_more_than_the_basket_raises_takes_all_of_it():
    pf = basket_fund()
    rebalance(pf, [0.5, 0.0, 0.5, 0.0], PX, VOL, [False], FREE, basket=[0.6, 0.4])
    paid = pay(pf, [5_000.0], PX, VOL, [False], FREE)
    assert paid[0] == pytest.approx(1_000.0, **APPROX)
    np.testing.assert_array_equal(pf.volatile_units[0], [0.0, 0.0])


def test_one_put_series_per_asset_each_marked_and_expiring_on_its_own():
    pf = basket_fund()
    rebalance(pf, [0.8, 0.0, 0.0, 0.2], PX, VOL, [False], FREE, basket=[0.5, 0.5])
    np.testing.assert_allclose(pf.put_strike[0], [85.0, 8.5], rtol=1e-12)
    np.testing.assert_allclose(pf.put_minutes_left[0], [7 * 1440.0] * 2)
    np.testing.assert_allclose(pf.put_cost_usd[0], [100.0, 100.0], rtol=1e-12)
    assert pf.stable_usd[0] == pytest.approx(800.0, **APPROX)
    tenor = 7 * 1440.0 / MINUTES_PER_YEAR
    quote = put_mark(PX[0], PX[0] * 0.85, tenor, VOL[0]) + crash_premium(PX[0], PX[0] * 0.85, tenor)
    np.testing.assert_allclose(pf.put_units[0], 100.0 / quote, rtol=1e-12)
    marks = put_mark(PX[0], PX[0] * 0.85, tenor, VOL[0])
    # The crash premium of both series is expensed at once: the fund is worth its marks.
    assert pf.value_usd(PX, VOL)[0] == pytest.approx(
        800.0 + (pf.put_units[0] * marks).sum(), **APPROX
    )
    assert abs(pf.ledger_gap_usd()[0]) <= 1e-9
    # Weights after the purchase still ask for the same hedge: nothing is bought again.
    units = pf.put_units.copy()
    rebalance(pf, [0.8, 0.0, 0.0, 0.2], PX, VOL, [False], FREE, basket=[0.5, 0.5])
    np.testing.assert_array_equal(pf.put_units, units)
    # Expiry with A at 80 (below 85) and B at 9 (above 8.5): only A's series pays.
    at_expiry = np.array([[80.0, 9.0]])
    accrue(pf, at_expiry, VOL, 7 * 1440.0, FREE)
    assert pf.stable_usd[0] == pytest.approx(800.0 + units[0, 0] * 5.0, **APPROX)
    np.testing.assert_array_equal(pf.put_units[0], [0.0, 0.0])
    np.testing.assert_array_equal(pf.put_cost_usd[0], [0.0, 0.0])


def test_a_basket_must_be_weights_summing_to_one():
    pf = basket_fund()
    for bad in ([0.5, 0.6], [1.0], [-0.5, 1.5], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="basket must be 2 weights >= 0 summing to 1"):
            rebalance(pf, [0.5, 0.0, 0.5, 0.0], PX, VOL, [False], FREE, basket=bad)
    with pytest.raises(ValueError, match="basket splits a fund of several assets"):
        one = FundPortfolio.from_stable([1_000.0])
        rebalance(one, [0.5, 0.0, 0.5, 0.0], [100.0], [0.8], [False], FREE, basket=[1.0])
    with pytest.raises(ValueError, match=r"price must broadcast to \(1, 2\)"):
        accrue(pf, np.array([[1.0, 2.0, 3.0]]), VOL, 1.0, FREE)


# ---- properties ---------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("accrue"), st.floats(0.01, 2.0), st.floats(0.01, 2.0), st.floats(0, 3),
                  st.sampled_from([0.0, 60.0, 1440.0, 8 * 1440.0])),
        st.tuples(st.just("rebalance"), st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
                  st.floats(0.01, 2.0), st.booleans()),
        st.tuples(st.just("pay"), st.floats(0.0, 1.5), st.booleans()),
        st.tuples(st.just("receive"), st.floats(0.0, 1e6)),
    ),
    max_size=20,
)  # fmt: skip


def _run(pf, ops, first, second, basket, params):
    """Apply ``ops``; asset A's price moves by each op's first factor, B's by its second."""
    prices = [100.0, 10.0]
    vol = 0.8
    px = (
        (lambda: np.array([[prices[0], prices[1]]]))
        if pf.n_assets
        else (lambda: np.array([prices[0]]))
    )
    vols = (lambda: np.full((1, 2), vol)) if pf.n_assets else (lambda: np.array([vol]))
    accrue(pf, px(), vols(), 0.0, params)
    for op in ops:
        if op[0] == "accrue":
            prices = [prices[0] * op[1], prices[1] * op[2]]
            vol = op[3]
            accrue(pf, px(), vols(), op[4], params)
        elif op[0] == "rebalance":
            raw = np.array(op[1]) + 1e-9
            prices = [prices[0] * op[2], prices[1]]
            kw = {"basket": basket} if pf.n_assets else {}
            rebalance(pf, raw / raw.sum(), px(), vols(), [op[3]], params, **kw)
        elif op[0] == "pay":
            pay(pf, op[1] * pf.value_usd(px(), vols()), px(), vols(), [op[2]], params)
        else:
            receive(pf, [op[1]])
    return px(), vols()


@settings(max_examples=150, deadline=None)
@given(initial=st.floats(0.0, 1e9), ops=OPS)
def test_a_basket_wholly_in_one_asset_is_the_one_asset_fund_bit_for_bit(initial, ops):
    # Basket (1, 0): the second asset never held, whatever its price does. Every bucket and
    # every asset-A field equals the one-asset fund's to the bit, costs and payments included.
    params = AllocationParams()
    one = FundPortfolio.from_stable([initial])
    two = FundPortfolio.from_stable([initial], n_assets=2)
    _run(one, ops, 0, 0, None, params)
    _run(two, ops, 0, 0, [1.0, 0.0], params)
    for name in one.__dataclass_fields__:
        a, b = getattr(one, name), getattr(two, name)
        np.testing.assert_array_equal(b if b.ndim == 1 else b[:, 0], a, err_msg=name)
    np.testing.assert_array_equal(two.volatile_units[:, 1], 0.0)
    np.testing.assert_array_equal(two.put_units[:, 1], 0.0)


@settings(max_examples=150, deadline=None)
@given(
    initial=st.floats(0.0, 1e9),
    ops=OPS,
    raw_basket=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=2),
)
def test_every_movement_of_a_basket_fund_balances(initial, ops, raw_basket):
    basket = np.array(raw_basket) / sum(raw_basket)
    pf = FundPortfolio.from_stable([initial], n_assets=2)
    px, vols = _run(pf, ops, 0, 0, basket, AllocationParams())
    value = pf.value_usd(px, vols)
    expected = pf.initial_value_usd + pf.external_pnl_usd + pf.received_usd - pf.paid_usd
    scale = max(1.0, float(value[0]), initial + float(pf.received_usd[0]),
                abs(float(pf.external_pnl_usd[0])), float(pf.fees_paid_usd[0]))  # fmt: skip
    assert abs(float(value[0] - expected[0])) <= 1e-9 * scale
    for name in pf.__dataclass_fields__:
        arr = getattr(pf, name)
        assert np.isfinite(arr).all(), name
        if name != "external_pnl_usd":
            assert (arr >= 0).all(), name
