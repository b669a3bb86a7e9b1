"""Hand-worked cases for one core step: the liquidation waterfall end to end.

Common setup unless stated: a long of 1 unit entered at 10,000 with 1,000 collateral
(bankruptcy price 10,000 - 1,000 / 1 = 9,000), MMR 5%, full closes (max fraction 1, no minimum
notional), and a linear book whose depth is chosen so the average slippage is exactly 0.1%
(slippage = 0.005 x notional / depth).
"""

import numpy as np
import pytest

from envs.core.impact import LinearImpact
from envs.core.margin import maintenance_requirement
from envs.core.params import MarginTiers, RiskParams
from envs.core.state import ExchangeState, ledger_error
from envs.core.step import core_step
from envs.core.trading import deposit, execute_trades

APPROX = {"rel": 1e-12, "abs": 1e-9}


def params(**kw):
    base = dict(
        mmr=0.05,
        imr=0.1,
        liquidation_fee_rate=0.01,
        liquidation_fee_fund_share=0.5,
        max_liquidation_fraction=1.0,
        min_liquidation_notional_usd=0.0,
    )
    base.update(kw)
    return RiskParams(**base)


def impact_for(notional_usd, slippage=0.001):
    return LinearImpact(depth_usd_per_pct=0.005 * notional_usd / slippage)


def one_long(fund=1000.0):
    return ExchangeState.create([[1000.0]], [[1.0]], [[10_000.0]], fund)


def step(state, p, mark, impact):
    ev = core_step(state, p, np.array([float(mark)]), impact)
    assert abs(ledger_error(state, [mark])[0]) < 1e-9
    assert (state.fund_usd >= 0).all()
    return ev


def test_not_liquidatable_above_trigger():
    # mark 9,500: equity 1,000 - 500 = 500 >= requirement 0.05 x 9,500 = 475
    s = one_long()
    ev = step(s, params(), 9_500, impact_for(9_500))
    assert ev.n_liquidations[0] == 0
    assert s.size[0, 0] == 1.0


def test_fill_better_than_bankruptcy_pays_rate_capped_fee():
    # mark 9,400: equity 400 < 470. Fill 9,400 x 0.999 = 9,390.6; surplus 390.6 over 9,000;
    # fee = min(1% x 9,390.6, 390.6) = 93.906, half to the fund, half to the liquidator.
    s = one_long()
    ev = step(s, params(), 9_400, impact_for(9_400))
    assert ev.n_liquidations[0] == 1
    assert ev.liquidation_fees_usd[0] == pytest.approx(93.906, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(46.953, **APPROX)
    assert ev.liquidator_rewards_usd[0] == pytest.approx(46.953, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1046.953, **APPROX)
    # 1,000 + (9,390.6 - 10,000) - 93.906
    assert s.collateral_usd[0, 0] == pytest.approx(296.694, **APPROX)
    assert s.size[0, 0] == 0.0
    assert ev.liquidation_volume_usd[0] == pytest.approx(9_390.6, **APPROX)
    assert ev.shortfall_usd[0] == 0.0
    # counterparty: created short 1 with cash +10,000; buys 1 at 9,390.6
    assert s.counterparty_size[0] == pytest.approx(0.0, abs=1e-12)
    assert s.counterparty_cash_usd[0] == pytest.approx(609.4, **APPROX)


def test_fee_capped_by_surplus_leaves_zero_equity():
    # mark 9,100: fill 9,090.9; surplus 90.9 < 1.5% x 9,090.9 = 136.36 -> fee 90.9, equity 0.
    s = one_long()
    ev = step(s, params(liquidation_fee_rate=0.015), 9_100, impact_for(9_100))
    assert ev.liquidation_fees_usd[0] == pytest.approx(90.9, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_fill_worse_than_bankruptcy_fund_pays():
    # mark 8,800: fill 8,791.2, 208.8 below bankruptcy 9,000: the fund pays 208.8.
    s = one_long(fund=1000.0)
    ev = step(s, params(), 8_800, impact_for(8_800))
    assert ev.bad_debt_usd[0] == pytest.approx(208.8, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(208.8, **APPROX)
    assert ev.liquidation_fees_usd[0] == 0.0
    assert s.fund_usd[0] == pytest.approx(791.2, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)  # made whole to zero
    assert ev.adl_volume_usd[0] == 0.0 and ev.socialized_loss_usd[0] == 0.0


def three_accounts(fund):
    # A: bankrupt-to-be long; B: short 0.5 from 10,000 with 1,000; C: short 2 from 12,000 with
    # 5,000. At 8,800 B has equity 1,600 and C 11,400: both far from their requirement.
    return ExchangeState.create(
        [[1000.0, 1000.0, 5000.0]],
        [[1.0, -0.5, -2.0]],
        [[10_000.0, 10_000.0, 12_000.0]],
        fund,
    )


def test_fund_pays_half_then_adl_by_bitmex_rank():
    # Bad debt 208.8, fund 104.4 covers half: 0.5 unit fills in the book at 8,791.2, the other
    # 0.5 is deleveraged at the bankruptcy price 9,000.
    # Scores: B pnl% 600/5,000 = 0.12, lev 4,400/1,600 = 2.75 -> 0.33;
    #         C pnl% 6,400/24,000 = 0.2667, lev 17,600/11,400 = 1.5439 -> 0.4117: C goes first.
    s = three_accounts(fund=104.4)
    ev = step(s, params(), 8_800, impact_for(8_800))
    assert ev.shortfall_usd[0] == pytest.approx(104.4, **APPROX)
    assert s.fund_usd[0] == 0.0
    assert ev.adl_volume_usd[0] == pytest.approx(4_500.0, **APPROX)  # 0.5 x 9,000
    assert ev.adl_haircut_usd[0] == pytest.approx(100.0, **APPROX)  # 0.5 x (9,000 - 8,800)
    # 0.5 x 8,791.2 + 0.5 x 9,000
    assert ev.liquidation_volume_usd[0] == pytest.approx(8_895.6, **APPROX)
    # A: 1,000 + 0.5 (8,791.2 - 10,000) + 0.5 (9,000 - 10,000) + 104.4 = 0
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1000.0, 6_500.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0], [0.0, -0.5, -1.5], atol=1e-12)
    assert ev.socialized_loss_usd[0] == 0.0


def test_fund_pays_half_then_socialize_pro_rata():
    # Same, fallback socialize: the whole unit fills at 8,791.2; the uncovered 104.4 is shared
    # by |size|: B 0.5/2.5 -> 20.88, C 2/2.5 -> 83.52.
    s = three_accounts(fund=104.4)
    ev = step(s, params(fallback="socialize"), 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(104.4, **APPROX)
    assert ev.adl_volume_usd[0] == 0.0
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 979.12, 4_916.48], atol=1e-9)
    np.testing.assert_allclose(s.size[0], [0.0, -0.5, -2.0], atol=1e-12)


def test_adl_capacity_short_then_unrecovered():
    # Empty fund, only B (0.5 short) can take ADL: 0.5 deleveraged at 9,000; the other 0.5 fills
    # at 8,791.2 with 104.4 of bad debt and nobody left holding a position: unrecovered.
    s = ExchangeState.create([[1000.0, 1000.0]], [[1.0, -0.5]], [[10_000.0, 10_000.0]], 0.0)
    ev = step(s, params(), 8_800, impact_for(8_800))
    assert ev.adl_volume_usd[0] == pytest.approx(4_500.0, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(104.4, **APPROX)
    assert s.unrecovered_usd[0] == pytest.approx(104.4, **APPROX)
    # B closes 0.5 at 9,000 from 10,000: +500
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1_500.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0], [0.0, 0.0], atol=1e-12)


def test_fund_pays_shortfalls_in_account_order_after_fee_income():
    # Two bankrupt longs in one exchange, fund 150. Each: 1 unit from 10,000 with 1,000, fill
    # 8,791.2 (aggregate sell 17,600, depth for 0.1%) -> 208.8 bad debt each. The fund pays the
    # first 150 and is then empty: 58.8 + 208.8 = 267.6 socialised onto the long bystander.
    s = ExchangeState.create(
        [[1000.0, 1000.0, 50_000.0]], [[1.0, 1.0, -2.0]], [[10_000.0] * 3], 150.0
    )
    ev = step(s, params(fallback="socialize"), 8_800, impact_for(17_600))
    assert ev.n_liquidations[0] == 2
    assert ev.shortfall_usd[0] == pytest.approx(150.0, **APPROX)
    assert ev.socialized_loss_usd[0] == pytest.approx(267.6, **APPROX)
    assert s.fund_usd[0] == 0.0
    # bystander: 50,000 - 267.6
    assert s.collateral_usd[0, 2] == pytest.approx(49_732.4, **APPROX)


@pytest.mark.parametrize(
    ("size", "expected_close"),
    [
        (1.0, 0.25),  # 25% of 1 = 0.25 > 1,000 / 9,400 = 0.1064
        (0.2, 1000.0 / 9_400.0),  # 25% = 0.05 < minimum notional -> 0.1064
        (0.05, 0.05),  # 470 of notional < 1,000: closed whole
    ],
)
def test_partial_liquidation_fraction_and_minimum(size, expected_close):
    # Leverage 10x on every size: collateral 1,000 x size, equity < requirement at 9,400.
    s = ExchangeState.create([[1000.0 * size]], [[size]], [[10_000.0]], 1e6)
    p = params(max_liquidation_fraction=0.25, min_liquidation_notional_usd=1000.0)
    step(s, p, 9_400, LinearImpact(1e12))
    assert s.size[0, 0] == pytest.approx(size - expected_close, **APPROX)


def test_batch_equals_separate_exchanges():
    # Three exchanges with different marks and parameters stepped together equal each stepped
    # alone: nothing leaks across the batch axis.
    rng = np.random.default_rng(7)
    c = rng.uniform(100, 2000, (3, 50))
    q = rng.normal(0, 1, (3, 50))
    e = rng.uniform(9_000, 11_000, (3, 50))
    marks = np.array([8_000.0, 10_500.0, 12_000.0])
    mmr = np.array([0.02, 0.05, 0.1])
    batch = ExchangeState.create(c, q, e, [10.0, 1e4, 0.0])
    core_step(batch, params(mmr=mmr, imr=0.2), marks, LinearImpact(np.array([1e4, 1e5, 1e3])))
    for i in range(3):
        one = ExchangeState.create(c[i], q[i], e[i], [10.0, 1e4, 0.0][i])
        core_step(
            one, params(mmr=mmr[i], imr=0.2), marks[i : i + 1], LinearImpact([1e4, 1e5, 1e3][i])
        )
        np.testing.assert_allclose(batch.collateral_usd[i], one.collateral_usd[0], rtol=1e-12)
        np.testing.assert_allclose(batch.size[i], one.size[0], rtol=1e-12)
        assert batch.fund_usd[i] == pytest.approx(one.fund_usd[0], rel=1e-12)


# Binance BTCUSDT brackets: cum = 0, 50 (50k x 0.1%), 1,300 (250k x 0.5% + 50),
# 16,300 (1M x 1.5% + 1,300).
@pytest.mark.parametrize(
    ("notional", "mmr", "expected"),
    [
        (10_000.0, 0.004, 40.0),  # 10k x 0.4%
        (100_000.0, 0.004, 450.0),  # 100k x 0.5% - 50
        (500_000.0, 0.004, 3_700.0),  # 500k x 1% - 1,300
        (2_000_000.0, 0.004, 33_700.0),  # 2M x 2.5% - 16,300
        (2_000_000.0, 0.008, 67_400.0),  # twice the base MMR scales the table x2
        (50_000.0, 0.004, 200.0),  # on the floor: 50k x 0.5% - 50, continuous with 50k x 0.4%
    ],
)
def test_binance_tiers(notional, mmr, expected):
    tiers = MarginTiers.binance_btcusdt_2021()
    assert tiers.cum_usd[:4] == pytest.approx((0.0, 50.0, 1_300.0, 16_300.0))
    got = maintenance_requirement(np.array([notional]), mmr, tiers)
    assert got[0] == pytest.approx(expected, **APPROX)


def test_trades_initial_margin_entry_and_fees():
    p = RiskParams(mmr=0.05, imr=0.1, taker_fee_rate=0.0005, trading_fee_fund_share=0.1)
    s = ExchangeState.create([[1000.0]], [[0.0]], [[0.0]], 0.0)
    px = np.array([10_000.0])
    # 1 unit at 10,000: fee 5, equity after 995 < IM 1,000 -> rejected
    assert execute_trades(s, p, np.array([[1.0]]), px, px)[0, 0]
    assert s.size[0, 0] == 0.0 and s.collateral_usd[0, 0] == 1000.0
    # 0.9 unit: fee 4.5, equity 995.5 >= 900 -> accepted
    assert not execute_trades(s, p, np.array([[0.9]]), px, px)[0, 0]
    # add 0.1 at 11,000 (mark 11,000): entry (0.9 x 10,000 + 0.1 x 11,000) / 1 = 10,100
    px2 = np.array([11_000.0])
    execute_trades(s, p, np.array([[0.1]]), px2, px2)
    assert s.entry_price[0, 0] == pytest.approx(10_100.0, **APPROX)
    # sell 0.5 at 12,000: realised 0.5 x 1,900 = 950, fee 3, entry unchanged
    px3 = np.array([12_000.0])
    execute_trades(s, p, np.array([[-0.5]]), px3, px3)
    assert s.entry_price[0, 0] == pytest.approx(10_100.0, **APPROX)
    # flip: sell 1 at 12,000: realise 0.5 x 1,900 = 950, open 0.5 short at 12,000, fee 6
    execute_trades(s, p, np.array([[-1.0]]), px3, px3)
    assert s.size[0, 0] == pytest.approx(-0.5, **APPROX)
    assert s.entry_price[0, 0] == pytest.approx(12_000.0, **APPROX)
    fees = 4.5 + 0.55 + 3.0 + 6.0
    assert s.collateral_usd[0, 0] == pytest.approx(1000.0 + 950.0 + 950.0 - fees, **APPROX)
    assert s.fund_usd[0] == pytest.approx(0.1 * fees, **APPROX)
    assert s.fee_revenue_usd[0] == pytest.approx(0.9 * fees, **APPROX)
    assert abs(ledger_error(s, px3)[0]) < 1e-9


def test_deposits_enter_the_ledger():
    s = one_long()
    deposit(s, np.array([[250.0]]))
    assert s.net_deposits_usd[0] == 250.0
    assert abs(ledger_error(s, [9_000.0])[0]) < 1e-9


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("mmr", 0.0, r"\(0.0, 1.0\)"),
        ("mmr", float("nan"), "got nan"),
        ("liquidation_fee_rate", -0.01, r"\[0.0, 1.0\)"),
        ("max_liquidation_fraction", 1.5, r"\(0.0, 1.0\]"),
        ("liquidation_fee_fund_share", 2.0, r"\[0.0, 1.0\]"),
    ],
)
def test_bad_params_name_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"RiskParams\.{field}.*{allowed}"):
        RiskParams(**{field: value})


def test_imr_below_mmr_and_unknown_fallback_rejected():
    with pytest.raises(ValueError, match="imr must be >= mmr"):
        RiskParams(mmr=0.05, imr=0.04)
    with pytest.raises(ValueError, match="fallback must be one of"):
        RiskParams(fallback="bailout")  # type: ignore[arg-type]


def test_adl_skips_a_counterparty_it_would_push_below_zero():
    # Empty fund; bankrupt long A (bankruptcy price 9,000) deleverages at 9,000 while the mark is
    # 8,800. B: short 1 from 8,900 with 50 of collateral: equity 50 + 100 = 150, but closing at
    # 9,000 costs (9,000 - 8,800) = 200 > 150 -> skipped. C: short 1 from 12,000 with 5,000 ->
    # eligible, takes the whole unit: realised 12,000 - 9,000 = 3,000.
    s = ExchangeState.create(
        [[1000.0, 50.0, 5000.0]], [[1.0, -1.0, -1.0]], [[10_000.0, 8_900.0, 12_000.0]], 0.0
    )
    ev = step(s, params(mmr=0.01, imr=0.02), 8_800, impact_for(8_800))
    assert ev.adl_volume_usd[0] == pytest.approx(9_000.0, **APPROX)
    np.testing.assert_allclose(s.size[0], [0.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 50.0, 8_000.0], atol=1e-9)


def test_a_negative_bankruptcy_price_still_counts_positive_volume():
    # A short of 1 from 100 whose collateral was drained to -500 (funding in a pump): its
    # bankruptcy price is 100 + (-500) / 1 = -400. Empty fund, mark 120: the whole unit is
    # deleveraged against the long (collateral 1,000, entry 100) at -400, i.e. the long hands
    # over its unit and pays 400. Volume is notional: |1 x -400| = 400, never negative.
    s = ExchangeState.create([[-500.0, 1000.0]], [[-1.0, 1.0]], [[100.0, 100.0]], 0.0)
    ev = step(s, params(mmr=0.01, imr=0.02), 120, impact_for(120))
    assert ev.adl_volume_usd[0] == pytest.approx(400.0, **APPROX)
    assert ev.liquidation_volume_usd[0] == pytest.approx(400.0, **APPROX)
    np.testing.assert_allclose(s.size[0], [0.0, 0.0], atol=1e-12)
    # the long realises -400 - 100 = -500 on its unit: 1,000 - 500
    assert s.collateral_usd[0, 1] == pytest.approx(500.0, **APPROX)
