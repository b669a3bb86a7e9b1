"""Hand-worked cases for one core step: the liquidation waterfall end to end.

Common setup unless stated: a long of 1 unit entered at 10,000 with 1,000 collateral
(bankruptcy price 10,000 - 1,000 / 1 = 9,000), MMR 5%, full closes (max fraction 1, no minimum
notional), and a square-root book whose depth is chosen so the average slippage of the
step's flow is exactly 0.1% (:meth:`SqrtImpact.for_slippage`: the fill pays 2/3 of the walk's
final move, ``2/3 x (1 - exp(-0.01 sqrt(N / D))) = 0.001``).
"""

import numpy as np
import pytest

from fundgym.envs.core import formulas
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.margin import maintenance_requirement
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.core.step import StepEvents, core_step, margin_state
from fundgym.envs.core.trading import deposit, execute_trades
from fundgym.envs.fund.portfolio import receive
from fundgym.envs.state import SimState, ledger_error
from tests.books import worked_params

APPROX = {"rel": 1e-12, "abs": 1e-9}


def params(**kw):
    # The book stage alone: outside liquidators (tests/envs/test_liquidators.py) would take
    # part of the flow at the oracle once paid half the fee.
    return worked_params(**{"liquidator_capacity_mult": 0.0, **kw})


def impact_for(notional_usd, slippage=0.001):
    return SqrtImpact.for_slippage(notional_usd, slippage)


def one_long(fund=1000.0):
    return SimState.create([[1000.0]], [[1.0]], [[10_000.0]], fund)


def step(state, p, mark, impact):
    ev = core_step(state, p, np.array([float(mark)]), impact)
    assert abs(ledger_error(state, [mark])[0]) < 1e-9
    assert (state.fund_usd >= 0).all()
    assert ev.bad_debt_usd[0] == pytest.approx(
        ev.shortfall_usd[0] + ev.socialized_loss_usd[0] + ev.unrecovered_usd[0], **APPROX
    )
    return ev


def test_not_liquidatable_above_trigger():
    # mark 9,500: equity 1,000 - 500 = 500 >= requirement 0.05 x 9,500 = 475
    s = one_long()
    ev = step(s, params(), 9_500, impact_for(9_500))
    assert ev.n_liquidations[0] == 0
    assert s.size[0, 0, 0] == 1.0


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
    assert s.size[0, 0, 0] == 0.0
    assert ev.liquidation_volume_usd[0] == pytest.approx(9_390.6, **APPROX)
    assert ev.shortfall_usd[0] == 0.0
    # counterparty: created short 1 with cash +10,000; buys 1 at 9,390.6
    assert s.counterparty_size[0, 0] == pytest.approx(0.0, abs=1e-12)
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
    return SimState.create(
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
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -0.5, -1.5], atol=1e-12)
    assert ev.socialized_loss_usd[0] == 0.0


def test_fund_pays_half_then_socialize_drift_pro_rata_by_size():
    # Same, fallback socialize under drift: the whole unit fills at 8,791.2; the uncovered
    # 104.4 is shared by |size|: B 0.5/2.5 -> 20.88, C 2/2.5 -> 83.52.
    s = three_accounts(fund=104.4)
    ev = step(s, params(fallback="socialize", socialization="drift"), 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(104.4, **APPROX)
    assert ev.unrecovered_usd[0] == 0.0
    assert ev.adl_volume_usd[0] == 0.0
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 979.12, 4_916.48], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -0.5, -2.0], atol=1e-12)


def test_fund_pays_half_then_socialize_profit_haircut():
    # The default convention: the 104.4 is shared by positive unrealised PnL at 8,800:
    # B 0.5 x 1,200 = 600, C 2 x 3,200 = 6,400 (total 7,000): B 104.4 x 6/70 = 8.948571...,
    # C 104.4 x 64/70 = 95.451428...; both far below their PnL, so no cap binds.
    s = three_accounts(fund=104.4)
    ev = step(s, params(fallback="socialize"), 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(104.4, **APPROX)
    np.testing.assert_allclose(
        s.collateral_usd[0], [0.0, 1000.0 - 626.4 / 70, 5000.0 - 6681.6 / 70], atol=1e-9
    )


def test_profit_haircut_caps_each_charge_at_the_profit_and_reports_the_rest():
    # Empty fund, socialize: A (long 1 from 10,000, 1,000) fills at 8,791.2 -> 208.8 loss.
    # B: short 1 from 8,850 with 1,000: PnL 50 -> charged at most 50. C: short 1 from 8,700
    # with 1,000: PnL -100 -> never charged. D: long 0.5 from 8,000 with 1,000: PnL 400;
    # total positive PnL 450 >= 208.8 so pro rata: B 208.8 x 50/450 = 23.2, D 185.6.
    s = SimState.create(
        [[1000.0, 1000.0, 1000.0, 1000.0]],
        [[1.0, -1.0, -1.0, 0.5]],
        [[10_000.0, 8_850.0, 8_700.0, 8_000.0]],
        0.0,
    )
    ev = step(s, params(fallback="socialize"), 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(208.8, **APPROX)
    np.testing.assert_allclose(
        s.collateral_usd[0, 1:], [1000.0 - 23.2, 1000.0, 1000.0 - 185.6], atol=1e-9
    )
    # A second loss larger than all profit: only the PnL can be taken, the rest is
    # unrecovered. Same book with B's and D's profits 50 and 40 (D from 8,720): 90 < 208.8.
    s = SimState.create(
        [[1000.0, 1000.0, 1000.0, 1000.0]],
        [[1.0, -1.0, -1.0, 0.5]],
        [[10_000.0, 8_850.0, 8_700.0, 8_720.0]],
        0.0,
    )
    ev = step(s, params(fallback="socialize"), 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(90.0, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(118.8, **APPROX)
    np.testing.assert_allclose(s.collateral_usd[0, 1:], [950.0, 1000.0, 960.0], atol=1e-9)


def test_drift_never_takes_a_bearer_below_zero_equity():
    # Empty fund, drift: A's 208.8 loss is shared by |size| between B and C, 104.4 each.
    # B (short 1 from 8,710 with 590: equity 500 at 8,800) pays it in full. C (short 1 from
    # 9,300 with -470: equity 30, above its requirement 0.001 x 8,800 = 8.8, so not
    # liquidated) is capped at its equity: it pays 30, and the other 74.4 is unrecovered.
    s = SimState.create(
        [[1000.0, 590.0, -470.0]],
        [[1.0, -1.0, -1.0]],
        [[10_000.0, 8_710.0, 9_300.0]],
        0.0,
    )
    p = params(mmr=0.001, imr=0.002, fallback="socialize", socialization="drift")
    ev = step(s, p, 8_800, impact_for(8_800))
    assert ev.socialized_loss_usd[0] == pytest.approx(104.4 + 30.0, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(74.4, **APPROX)
    np.testing.assert_allclose(s.collateral_usd[0, 1:], [590.0 - 104.4, -500.0], atol=1e-9)


def test_dust_positions_are_never_billed():
    # The only open position beside the bankrupt long is 1e-15 units (8.8e-12 USD of
    # notional, below DUST_NOTIONAL_USD) on an account with 1,000 of collateral. Old code
    # billed it the whole 208.8 under drift; now nobody can bear the loss.
    assert formulas.DUST_NOTIONAL_USD > 8.8e-12
    for convention in ("drift", "profit_haircut"):
        s = SimState.create([[1000.0, 1000.0]], [[1.0, -1e-15]], [[10_000.0, 10_000.0]], 0.0)
        p = params(fallback="socialize", socialization=convention)
        ev = step(s, p, 8_800, impact_for(8_800))
        assert ev.socialized_loss_usd[0] == 0.0
        assert ev.unrecovered_usd[0] == pytest.approx(208.8, **APPROX)
        assert s.collateral_usd[0, 1] == 1000.0


def test_adl_capacity_short_then_unrecovered():
    # Empty fund, only B (0.5 short) can take ADL: 0.5 deleveraged at 9,000; the other 0.5 fills
    # at 8,791.2 with 104.4 of bad debt and nobody left holding a position: unrecovered.
    s = SimState.create([[1000.0, 1000.0]], [[1.0, -0.5]], [[10_000.0, 10_000.0]], 0.0)
    ev = step(s, params(), 8_800, impact_for(8_800))
    assert ev.adl_volume_usd[0] == pytest.approx(4_500.0, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(104.4, **APPROX)
    assert s.unrecovered_usd[0] == pytest.approx(104.4, **APPROX)
    # B closes 0.5 at 9,000 from 10,000: +500
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1_500.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, 0.0], atol=1e-12)


def test_fund_pays_shortfalls_in_account_order_after_fee_income():
    # Two bankrupt longs in one exchange, fund 150. Each: 1 unit from 10,000 with 1,000, fill
    # 8,791.2 (aggregate sell 17,600, depth for 0.1%) -> 208.8 bad debt each. The fund pays the
    # first 150 and is then empty: 58.8 + 208.8 = 267.6 socialised onto the bystander (short 2
    # from 10,000: PnL 2,400 at 8,800, so either convention charges it all of it).
    s = SimState.create([[1000.0, 1000.0, 50_000.0]], [[1.0, 1.0, -2.0]], [[10_000.0] * 3], 150.0)
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
    s = SimState.create([[1000.0 * size]], [[size]], [[10_000.0]], 1e6)
    p = params(max_liquidation_fraction=0.25, min_liquidation_notional_usd=1000.0)
    step(s, p, 9_400, SqrtImpact(1e12))
    assert s.size[0, 0, 0] == pytest.approx(size - expected_close, **APPROX)


def test_batch_equals_separate_exchanges():
    # Three exchanges with different marks and parameters stepped together equal each stepped
    # alone, bit for bit: nothing leaks across the batch axis.
    rng = np.random.default_rng(7)
    c = rng.uniform(100, 2000, (3, 50))
    q = rng.normal(0, 1, (3, 50))
    e = rng.uniform(9_000, 11_000, (3, 50))
    marks = np.array([8_000.0, 10_500.0, 12_000.0])
    mmr = np.array([0.02, 0.05, 0.1])
    funds = [10.0, 1e4, 0.0]
    batch = SimState.create(c, q, e, funds)
    ev = core_step(batch, params(mmr=mmr, imr=0.2), marks, SqrtImpact(np.array([1e4, 1e5, 1e3])))
    assert ev.n_liquidations.min() > 0
    for i in range(3):
        one = SimState.create(c[i], q[i], e[i], funds[i])
        ev1 = core_step(
            one, params(mmr=mmr[i], imr=0.2), marks[i : i + 1], SqrtImpact([1e4, 1e5, 1e3][i])
        )
        np.testing.assert_array_equal(batch.collateral_usd[i], one.collateral_usd[0])
        np.testing.assert_array_equal(batch.size[i], one.size[0])
        np.testing.assert_array_equal(batch.fund_usd[i], one.fund_usd[0])
        np.testing.assert_array_equal(ev.data[i], ev1.data[0])


def test_margin_state_sums_markets_cross_margin():
    # One account, two markets: long 1 from 100 at mark 90 (PnL -10), short 2 from 50 at 40
    # (PnL +20); collateral 5 -> equity 15. Requirement 5% x (90 + 80) = 8.5.
    s = SimState.create([[5.0]], [[[1.0, -2.0]]], [[[100.0, 50.0]]], 0.0)
    eq, req = margin_state(s, params(), np.array([[90.0, 40.0]]))
    assert eq[0, 0] == pytest.approx(15.0, **APPROX)
    assert req[0, 0] == pytest.approx(8.5, **APPROX)
    # Several markets are liquidated under "partial" and every venue mode
    # (tests/envs/test_cross_margin.py, tests/envs/test_venue_cross.py): dYdX's leaves this
    # account, above its requirement, alone.
    ev = core_step(s, params(liquidation_mode="dydx_v4"), np.array([[90.0, 40.0]]), SqrtImpact(1e6))
    assert ev.n_liquidations[0] == 0 and s.collateral_usd[0, 0] == 5.0


def test_margin_state_matches_the_numpy_requirement_under_tiers():
    rng = np.random.default_rng(3)
    c = rng.uniform(-1e3, 1e6, (2, 200))
    q = rng.normal(0, 30, (2, 200))
    e = rng.uniform(5e4, 1.5e5, (2, 200))
    mark = np.array([9e4, 1.1e5])
    tiers = MarginTiers.binance_btcusdt_2021()
    p = params(mmr=np.array([0.004, 0.01]), imr=0.02, tiers=tiers)
    eq, req = margin_state(SimState.create(c, q, e, 0.0), p, mark)
    np.testing.assert_allclose(eq, formulas.equity(c, q, e, mark[:, None]), rtol=1e-13)
    expected = maintenance_requirement(np.abs(q) * mark[:, None], p.column("mmr"), tiers)
    np.testing.assert_allclose(req, expected, rtol=1e-13)


def test_tiered_liquidation_price_is_where_the_engine_fires():
    # A $3M long at 10x: 30 units from 100,000 with 300,000, Binance brackets at base MMR.
    # At the trigger the notional ~2.75M sits in the 2.5% bracket (cum 16,300):
    # (3,000,000 - 300,000 - 16,300) / (30 x 0.975) = 2,683,700 / 29.25 = 91,750.427...
    # The flat 0.4% formula the old observation used: 2,700,000 / 29.88 = 90,361.45.
    tiers = MarginTiers.binance_btcusdt_2021()
    lp = formulas.liquidation_price_tiered(300_000.0, 30.0, 100_000.0, 0.004, tiers)
    assert lp == pytest.approx(2_683_700 / 29.25, **APPROX)
    assert formulas.liquidation_price(300_000.0, 30.0, 100_000.0, 0.004) == pytest.approx(
        2_700_000 / 29.88, **APPROX
    )
    p = params(mmr=0.004, imr=0.1, tiers=tiers)
    s = SimState.create([[300_000.0]], [[30.0]], [[100_000.0]], 0.0)
    for mark, fires in ((lp * (1 + 1e-9), False), (lp * (1 - 1e-9), True), (91_000.0, True)):
        eq, req = margin_state(s, p, np.array([mark]))
        assert bool(eq[0, 0] < req[0, 0]) is fires, mark


def test_step_events_are_one_array_with_named_columns():
    ev = StepEvents.zeros(2)
    assert ev.data.shape == (2, len(StepEvents.FIELDS))
    ev.shortfall_usd += 5.0
    ev.n_liquidations = np.array([3, 0])
    assert ev.data[0, StepEvents.FIELDS.index("shortfall_usd")] == 5.0
    assert ev.n_liquidations.dtype == np.int64
    assert list(ev.as_dict()) == list(StepEvents.FIELDS)
    np.testing.assert_array_equal(ev.as_dict()["n_liquidations"], [3, 0])


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


def trade(state, p, order, px):
    """Execute ``order`` at ``px`` and book the fund's share of the fee, as the tick does."""
    result = execute_trades(state, p, np.array(order), px, px)
    receive(state.fund, result.fund_trading_fee_income_usd)
    return result


def test_trades_initial_margin_entry_and_fees():
    p = RiskParams(mmr=0.05, imr=0.1, taker_fee_rate=0.0005, trading_fee_fund_share=0.1)
    s = SimState.create([[1000.0]], [[0.0]], [[0.0]], 0.0)
    px = np.array([10_000.0])
    # 1 unit at 10,000: fee 5, equity after 995 < IM 1,000 -> rejected
    assert trade(s, p, [[1.0]], px).rejected[0, 0]
    assert s.size[0, 0, 0] == 0.0 and s.collateral_usd[0, 0] == 1000.0
    # 0.9 unit: fee 4.5, equity 995.5 >= 900 -> accepted
    assert not trade(s, p, [[0.9]], px).rejected[0, 0]
    # add 0.1 at 11,000 (mark 11,000): entry (0.9 x 10,000 + 0.1 x 11,000) / 1 = 10,100
    trade(s, p, [[0.1]], np.array([11_000.0]))
    assert s.entry_price[0, 0, 0] == pytest.approx(10_100.0, **APPROX)
    # sell 0.5 at 12,000: realised 0.5 x 1,900 = 950, fee 3, entry unchanged
    px3 = np.array([12_000.0])
    trade(s, p, [[-0.5]], px3)
    assert s.entry_price[0, 0, 0] == pytest.approx(10_100.0, **APPROX)
    # flip: sell 1 at 12,000: realise 0.5 x 1,900 = 950, open 0.5 short at 12,000, fee 6
    trade(s, p, [[-1.0]], px3)
    assert s.size[0, 0, 0] == pytest.approx(-0.5, **APPROX)
    assert s.entry_price[0, 0, 0] == pytest.approx(12_000.0, **APPROX)
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
    s = SimState.create(
        [[1000.0, 50.0, 5000.0]], [[1.0, -1.0, -1.0]], [[10_000.0, 8_900.0, 12_000.0]], 0.0
    )
    ev = step(s, params(mmr=0.01, imr=0.02), 8_800, impact_for(8_800))
    assert ev.adl_volume_usd[0] == pytest.approx(9_000.0, **APPROX)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 50.0, 8_000.0], atol=1e-9)


def test_a_negative_bankruptcy_price_still_counts_positive_volume():
    # A short of 1 from 100 whose collateral was drained to -500 (funding in a pump): its
    # bankruptcy price is 100 + (-500) / 1 = -400. Empty fund, mark 120: the whole unit is
    # deleveraged against the long (collateral 1,000, entry 100) at -400, i.e. the long hands
    # over its unit and pays 400. Volume is notional: |1 x -400| = 400, never negative.
    s = SimState.create([[-500.0, 1000.0]], [[-1.0, 1.0]], [[100.0, 100.0]], 0.0)
    ev = step(s, params(mmr=0.01, imr=0.02), 120, impact_for(120))
    assert ev.adl_volume_usd[0] == pytest.approx(400.0, **APPROX)
    assert ev.liquidation_volume_usd[0] == pytest.approx(400.0, **APPROX)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, 0.0], atol=1e-12)
    # the long realises -400 - 100 = -500 on its unit: 1,000 - 500
    assert s.collateral_usd[0, 1] == pytest.approx(500.0, **APPROX)
