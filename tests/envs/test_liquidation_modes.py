"""Hand-worked cases for the venue liquidation modes (``RiskParams.liquidation_mode``).

Common setup unless stated: MMR 5%, liquidation fee 1% (half to the fund), one-minute ticks,
and a square-root book whose depth is chosen so the average slippage of the named flow is
exactly what the case says (:meth:`SqrtImpact.for_slippage`: a sell of ``N`` through ``D``
fills ``2/3 x (1 - exp(-0.01 sqrt(N / D)))`` below the book). ``max_liquidation_fraction`` is 25%
everywhere: the ``partial`` engine would close a quarter per tick, and the venue modes must
ignore it. The single long is 1 unit entered at 10,000 with 1,000 collateral: bankruptcy
price 10,000 - 1,000 / 1 = 9,000.
"""

import numpy as np
import pytest

from fundgym.envs.config import make_config
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.liquidation import (
    DYDX_SPREAD_TO_MMR,
    dydx_close_base,
    dydx_fillable_price,
    n_substeps,
)
from fundgym.envs.core.params import LIQUIDATION_MODES, RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.schema import SchemaError
from fundgym.envs.state import SimState
from tests.books import assert_books_balance, depth_for, worked_params

APPROX = {"rel": 1e-12, "abs": 1e-9}


def params(mode, **kw):
    # The book stage alone: outside liquidators (tests/envs/test_liquidators.py) would take
    # part of the flow at the oracle once paid half the fee.
    base = {"max_liquidation_fraction": 0.25, "liquidator_capacity_mult": 0.0}
    return worked_params(**{**base, "liquidation_mode": mode, **kw})


def one_long(fund=1000.0):
    return SimState.create([[1000.0]], [[1.0]], [[10_000.0]], fund)


def step(state, p, mark, depth, book=None):
    book_px = None if book is None else np.array([float(book)])
    mark_px = np.array([float(mark)])
    ev = core_step(state, p, mark_px, SqrtImpact(depth), book_price=book_px)
    assert_books_balance(state, mark_px)
    assert ev.bad_debt_usd[0] == pytest.approx(
        ev.shortfall_usd[0] + ev.socialized_loss_usd[0] + ev.unrecovered_usd[0], **APPROX
    )
    return ev


# ==== binance: takeover of the whole position, IOC limited at the bankruptcy price ====


def test_binance_takes_the_whole_position_and_caps_the_clearance_fee():
    # Mark 9,400: equity 400 < 470 (solvent). The IOC for the whole unit (not 25%) fills at
    # 9,400 x 0.999 = 9,390.6 >= bankruptcy 9,000; surplus 390.6, clearance fee
    # min(1% x 9,390.6, 390.6) = 93.906, half to the fund; the account keeps
    # 1,000 + (9,390.6 - 10,000) - 93.906 = 296.694.
    s = one_long()
    ev = step(s, params("binance"), 9_400, depth_for(9_400, 0.001))
    assert s.size[0, 0, 0] == 0.0
    assert ev.liquidation_fees_usd[0] == pytest.approx(93.906, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(46.953, **APPROX)
    assert s.liquidator_rewards_usd[0] == pytest.approx(46.953, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(296.694, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(9_400.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 0


def test_binance_deficient_account_is_closed_at_bankruptcy_and_the_fund_keeps_the_surplus():
    # The oracle reads 8,900 (equity -100: deficient) while the book trades at 9,200. The
    # account is closed at its bankruptcy price 9,000 (it ends at zero) and the fund sells the
    # unit at 9,200 x 0.999 = 9,190.8: it keeps the whole 190.8, uncapped, with no share to
    # the liquidators.
    s = one_long()
    ev = step(s, params("binance"), 8_900, depth_for(9_200, 0.001), book=9_200)
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert s.size[0, 0, 0] == 0.0
    assert ev.fund_fee_income_usd[0] == pytest.approx(190.8, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1_190.8, **APPROX)
    assert s.liquidator_rewards_usd[0] == 0.0
    assert ev.n_liquidations_below_bankruptcy[0] == 0


def test_binance_ioc_that_would_fill_past_bankruptcy_is_refused_and_the_fund_takes_over():
    # Mark 9,050: equity 50 >= 0 (solvent) but < 452.5. The book slips 1%: a fill at
    # 9,050 x 0.99 = 8,959.5 is below the IOC's limit 9,000, so it is refused; the account
    # is closed at bankruptcy (zero) and the fund sells at 8,959.5, paying 40.5.
    s = one_long(fund=1000.0)
    ev = step(s, params("binance"), 9_050, depth_for(9_050, 0.01))
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ev.shortfall_usd[0] == pytest.approx(40.5, **APPROX)
    assert s.fund_usd[0] == pytest.approx(959.5, **APPROX)
    assert ev.liquidation_fees_usd[0] == 0.0
    assert ev.liquidation_volume_usd[0] == pytest.approx(8_959.5, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 1


# ==== bitmex: the fund takes every position over with its remaining margin ====


def test_bitmex_takeover_hands_the_fund_the_whole_remaining_margin():
    # Mark 9,400: equity 400 < 470. Liquidation price L: 1,000 + (L - 10,000) = 0.05 L, so
    # L = 9,000 / 0.95 = 9,473.684...; the fund takes the unit at L with the remaining margin
    # 0.05 L = 473.684..., and sells at 9,390.6: -83.084... + 473.684... = +390.6, which is
    # fill - bankruptcy. The account ends at zero; the 1% fee lever and the 50% split are not
    # read (all to the fund, nothing to the liquidators).
    s = one_long()
    ev = step(s, params("bitmex"), 9_400, depth_for(9_400, 0.001))
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ev.fund_fee_income_usd[0] == pytest.approx(390.6, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1_390.6, **APPROX)
    assert s.liquidator_rewards_usd[0] == 0.0


def three_accounts(fund):
    # A: the long of one_long; B: short 0.5 from 10,000 with 1,000; C: short 2 from 12,000
    # with 5,000 (far from their requirements at the marks used here).
    return SimState.create(
        [[1000.0, 1000.0, 5000.0]],
        [[1.0, -0.5, -2.0]],
        [[10_000.0, 10_000.0, 12_000.0]],
        fund,
    )


def test_bitmex_fund_pays_until_depleted_then_adl_at_bankruptcy():
    # Mark 8,800: A's equity is -200. The fund takes the whole unit (not 25%) and sells at
    # 8,800 x 0.999 = 8,791.2, 208.8 below bankruptcy; it holds 104.4 and pays it, so half the
    # unit (0.5) is deleveraged at the bankruptcy price 9,000. BitMEX rank at 8,800: B
    # 0.12 x 2.75 = 0.33, C 0.2667 x 1.5439 = 0.4117: C closes 0.5 at 9,000 and realises
    # 0.5 x (12,000 - 9,000) = 1,500.
    s = three_accounts(fund=104.4)
    ev = step(s, params("bitmex"), 8_800, depth_for(8_800, 0.001))
    assert ev.shortfall_usd[0] == pytest.approx(104.4, **APPROX)
    assert s.fund_usd[0] == 0.0
    assert ev.adl_volume_usd[0] == pytest.approx(4_500.0, **APPROX)
    assert ev.adl_haircut_usd[0] == pytest.approx(100.0, **APPROX)  # 0.5 x (9,000 - 8,800)
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1000.0, 6_500.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -0.5, -1.5], atol=1e-12)
    assert ev.n_liquidations_below_bankruptcy[0] == 1
    assert ev.socialized_loss_usd[0] == 0.0


# ==== dydx_v4: one slice per one-second block, per-block caps, the fillable price ====


def test_dydx_fillable_price_matches_dydx_own_test_case():
    # x/clob/keeper/liquidations_test.go: oracle 50,000, maintenance 10%, BA 1, SMMR 0.1; quote
    # -4,501 with +0.1 BTC: TNC = 499, TMMR = 500, ABR = 1 - 499/500 = 0.002;
    # FP = (5,000 - 0.002 x 0.1 x 500) / 0.1 = 49,999.
    assert dydx_fillable_price(0.1, 50_000.0, 499.0, 500.0, 1.0, 0.1, 500.0) == pytest.approx(
        49_999.0, **APPROX
    )
    # A short mirrors it: FP = 50,000 + 1 = 50,001.
    assert dydx_fillable_price(-0.1, 50_000.0, 499.0, 500.0, 1.0, 0.1, 500.0) == pytest.approx(
        50_001.0, **APPROX
    )
    # ABR is clamped to [0, 1]: below zero equity the spread is the whole SMMR x TMMR.
    assert dydx_fillable_price(1.0, 8_900.0, -100.0, 445.0, 1.0, DYDX_SPREAD_TO_MMR, 445.0) == (
        pytest.approx(8_900.0 - 1.5 * 445.0, **APPROX)
    )
    # Two positions: ABR is the subaccount's (TNC 499, TMMR 500), the spread the position's
    # own requirement (PMMR 300 of the 500): FP = (5,000 - 0.002 x 0.1 x 300) / 0.1 = 49,999.4.
    assert dydx_fillable_price(0.1, 50_000.0, 499.0, 500.0, 1.0, 0.1, 300.0) == pytest.approx(
        49_999.4, **APPROX
    )


def test_dydx_order_size_per_block():
    # min(position, max(10%, $1,000), $100,000) in notional at the oracle.
    assert dydx_close_base(200.0, 9_400.0) == pytest.approx(100_000.0 / 9_400.0, **APPROX)
    assert dydx_close_base(5.0, 9_400.0) == pytest.approx(0.5, **APPROX)  # $4,700 > $1,000
    assert dydx_close_base(1.0, 8_900.0) == pytest.approx(1_000.0 / 8_900.0, **APPROX)
    assert dydx_close_base(0.05, 8_900.0) == 0.05  # $445 < $1,000: whole
    assert n_substeps(LIQUIDATION_MODES.index("dydx_v4"), 60.0) == 60
    assert n_substeps(LIQUIDATION_MODES.index("hyperliquid"), 60.0) == 60
    assert n_substeps(LIQUIDATION_MODES.index("binance"), 60.0) == 1


def test_dydx_slices_under_the_subaccount_block_cap_until_the_fillable_price_refuses():
    # A long of 200 from 10,000 with 200,000 (bankruptcy 9,000); oracle = book = 9,400, fee
    # 1.5% all to the fund. Equity 80,000 < requirement 94,000.
    # Each block closes min(200, max(20, 0.106), 100,000 / 9,400) = x = 10.638... units: the
    # $100k per-subaccount cap binds (10% would be $188k). The book makes $100k slip
    # 0.1%: fill 9,390.6, fee min(1.5% x 99,900, surplus > 4,000) = 1,498.5. Per block the
    # equity at 9,400 falls by x x 9.4 + 1,498.5 = 1,598.5 and the requirement by
    # 470 x = 5,000; the fillable price is 9,400 - ABR x 1.5 x 470, ABR = 1 - eq / req:
    #
    # | block | equity    | requirement | ABR       | fillable   | fill 9,390.6 |
    # |-------|-----------|-------------|-----------|------------|--------------|
    # | 1     | 80,000    | 94,000      | 0.148936  | 9,295.00   | fills        |
    # | 2     | 78,401.5  | 89,000      | 0.119084  | 9,316.04   | fills        |
    # | 3     | 76,803    | 84,000      | 0.085679  | 9,339.60   | fills        |
    # | 4     | 75,204.5  | 79,000      | 0.048044  | 9,366.13   | fills        |
    # | 5..60 | 73,606    | 74,000      | 0.005324  | 9,396.25   | refused      |
    #
    # From block 5 on the fill would breach the fillable price: refused, and the account
    # (solvent) waits; the tick ends after four $100k slices.
    s = SimState.create([[200_000.0]], [[200.0]], [[10_000.0]], 1e6)
    p = params("dydx_v4", liquidation_fee_rate=0.015, liquidation_fee_fund_share=1.0)
    ev = step(s, p, 9_400, depth_for(100_000.0, 0.001))
    x = 100_000.0 / 9_400.0
    assert s.size[0, 0, 0] == pytest.approx(200.0 - 4 * x, **APPROX)
    # 200,000 + 4 x (x (9,390.6 - 10,000) - 1,498.5) = 200,000 - 4 x (6,482.9787... + 1,498.5)
    assert s.collateral_usd[0, 0] == pytest.approx(200_000.0 - 4 * (609.4 * x + 1498.5), **APPROX)
    assert ev.liquidation_fees_usd[0] == pytest.approx(4 * 1_498.5, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(5_994.0, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(400_000.0, **APPROX)
    assert ev.liquidation_volume_usd[0] == pytest.approx(4 * 99_900.0, **APPROX)
    assert ev.n_liquidations[0] == 1 and ev.n_liquidations_below_bankruptcy[0] == 0
    equity = s.collateral_usd[0, 0] + s.size[0, 0, 0] * (9_400.0 - 10_000.0)
    assert equity == pytest.approx(73_606.0, **APPROX)  # still liquidatable: next tick


def test_dydx_fill_the_fund_cannot_pay_is_rejected_and_the_position_deleveraged():
    # Oracle 8,900: A's equity is -100 (deficient). Block 1's order: max(0.1, 1,000 / 8,900)
    # = 0.11236 units, $1,000 of flow slipping 0.1%: fill 8,891.1, above the fillable price
    # 8,900 - 1 x 1.5 x 445 = 8,232.5 but 108.9 a unit past bankruptcy; the empty fund cannot
    # pay 12.236, so the fill is rejected. A's TNC < 0: its entire unit is deleveraged at the
    # bankruptcy price 9,000, against C (BitMEX rank 0.4106 over B's 0.3158 at 8,900):
    # C realises 1 x (12,000 - 9,000) = 3,000 and gives up 1 x (9,000 - 8,900) = 100.
    s = three_accounts(fund=0.0)
    ev = step(s, params("dydx_v4"), 8_900, depth_for(1_000.0, 0.001))
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1000.0, 8_000.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -0.5, -1.0], atol=1e-12)
    assert ev.shortfall_usd[0] == 0.0 and ev.bad_debt_usd[0] == 0.0
    assert ev.adl_volume_usd[0] == pytest.approx(9_000.0, **APPROX)
    assert ev.adl_haircut_usd[0] == pytest.approx(100.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 1


def test_dydx_what_deleveraging_cannot_place_closes_in_the_book_and_is_socialised():
    # The same long alone: the rejected fill leaves it to deleveraging, which finds no
    # opposite account. The whole unit then closes in the book at the block's price 8,891.1;
    # its 108.9 below bankruptcy (the fund refused it) goes to socialisation, where nobody
    # can bear it: unrecovered. The tick's flow: the block's $1,000 order that priced it and
    # the unit's 8,900 at the book price.
    s = one_long(fund=0.0)
    ev = step(s, params("dydx_v4"), 8_900, depth_for(1_000.0, 0.001))
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ev.bad_debt_usd[0] == pytest.approx(108.9, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(108.9, **APPROX)
    assert ev.shortfall_usd[0] == 0.0 and ev.adl_volume_usd[0] == 0.0
    assert ev.liquidation_sell_usd[0] == pytest.approx(9_900.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 1


def test_dydx_without_deleveraging_a_deficient_account_is_sliced_and_its_loss_socialised():
    # fallback "socialize": no deleveraging stage, so a deficient account's orders are not
    # refused. The long alone at 8,900 with an empty fund: each block sells
    # x = 1,000 / 8,900 = 0.11236 units ($1,000, 0.1% slip: 8,891.1), 108.9 a unit below the
    # bankruptcy price 9,000 (which stays 9,000: each slice is made whole to it). Eight
    # blocks close 8x = 0.89888; the ninth sells the last 0.10112 ($900). The book that slips
    # $1,000 by 0.1% walks it exp(-0.01 sqrt(1,000 / D)) = 1 - 0.0015 (2/3 of 0.15% is 0.1%),
    # so $900 walks sqrt(0.9) of that log move: 1 - 0.9985^0.948683 = 0.00142307, slip 2/3 of
    # it = 0.00094872: fill 8,900 x 0.99905128 = 8,891.5564, 108.4436 below. Loss, all
    # unrecovered (nobody else to bear it):
    # (8,000 x 108.9 + 900 x 108.4436) / 8,900 = (871,200 + 97,599.25) / 8,900 = 108.8538.
    s = one_long(fund=0.0)
    ev = step(s, params("dydx_v4", fallback="socialize"), 8_900, depth_for(1_000.0, 0.001))
    x = 1_000.0 / 8_900.0
    last = 1.0 - 8 * x
    last_slip = 2.0 / 3.0 * (1.0 - 0.9985 ** np.sqrt(8_900.0 * last / 1_000.0))
    want = 8 * x * 108.9 + last * (9_000.0 - 8_900.0 * (1.0 - last_slip))
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ev.unrecovered_usd[0] == pytest.approx(want, **APPROX)
    assert want == pytest.approx(108.8538, abs=1e-4)
    assert ev.liquidation_sell_usd[0] == pytest.approx(8_900.0, **APPROX)


def test_dydx_caps_the_funds_loss_per_subaccount_per_block():
    # A long of 200 from 10,000 with no collateral (bankruptcy 10,000) after a 99.95% crash:
    # oracle 5. Block 1 closes max(20, 1,000 / 5 = 200) = all 200 ($1,000 of flow, 0.1%
    # slippage: fill 4.995, above the fillable price 5 - 1.5 x 0.05 x 5 = 4.625). The fund
    # would pay 200 x (10,000 - 4.995) = 1,999,001: more than dYdX's $1M per subaccount per
    # block, so the fill is rejected although the fund holds $10M. B (short 300 from 10,000
    # with 1,000: equity 2,999,500, solvent even after the 1,999,000 haircut) takes the 200
    # at 10,000.
    s = SimState.create([[0.0, 1000.0]], [[200.0, -300.0]], [[10_000.0, 10_000.0]], 1e7)
    ev = step(s, params("dydx_v4"), 5.0, depth_for(1_000.0, 0.001))
    assert ev.shortfall_usd[0] == 0.0
    assert s.fund_usd[0] == pytest.approx(1e7, **APPROX)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -100.0], atol=1e-9)
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1000.0], atol=1e-6)
    assert ev.adl_volume_usd[0] == pytest.approx(2_000_000.0, **APPROX)
    assert ev.adl_haircut_usd[0] == pytest.approx(1_999_000.0, **APPROX)


# ==== hyperliquid: 20% slices of large positions, the cooldown, the backstop ====


def test_hyperliquid_slices_20_percent_then_sends_the_whole_position_during_the_cooldown():
    # A long of 20 from 10,000 with 18,500; oracle = book = 9,400, fee 1% to the fund.
    # Notional 188,000 > $100k. The book makes $37,600 slip 0.1%: its walk ends at
    # exp(-0.01 sqrt(37,600 / D)) = 1 - 0.0015. $150,400 = 4 x 37,600 walks twice as far:
    # 1 - 0.9985^2 = 0.00299775, slip 2/3 of it = 0.0019985, fill 9,400 x 0.9980015 = 9,381.2141.
    #
    # | check | equity (2/3 MM)        | order        | fill       | fee                      |
    # |-------|------------------------|--------------|------------|--------------------------|
    # | 0 s   | 6,500 (>= 6,266.67)    | 20%: 4 units | 9,390.6    | 1% x 37,562.4 = 375.624  |
    # | 1 s   | 6,086.776 (>= 5,013.3) | whole: 16    | 9,381.2141 | 1% x 150,099.4256        |
    #
    # (the second fee: 1,500.994256)
    #
    # After check 0 the account is still below its requirement 7,520 and in its 30 s cooldown,
    # so the next order is for the entire position. Collateral:
    # 18,500 + 4 (9,390.6 - 10,000) - 375.624 + 16 (9,381.2141 - 10,000) - 1,500.994256
    # = 15,686.776 - 9,900.5744 - 1,500.994256 = 4,285.207344.
    s = SimState.create([[18_500.0]], [[20.0]], [[10_000.0]], 0.0)
    p = params("hyperliquid", liquidation_fee_fund_share=1.0)
    ev = step(s, p, 9_400, depth_for(37_600.0, 0.001))
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(4_285.207344, **APPROX)
    # 375.624 + 1,500.994256; volume 37,562.4 + 150,099.4256
    assert ev.fund_fee_income_usd[0] == pytest.approx(1_876.618256, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(188_000.0, **APPROX)
    assert ev.liquidation_volume_usd[0] == pytest.approx(187_661.8256, **APPROX)


def test_hyperliquid_slice_that_restores_the_margin_stops_the_liquidation():
    # Same long with 20,000: equity 8,000 < 9,400. The 20% slice (fee 375.624) leaves
    # 8,000 - 37.6 - 375.624 = 7,586.776 >= 0.05 x 16 x 9,400 = 7,520: the account keeps its
    # 16 units and nothing else is sent this tick.
    s = SimState.create([[20_000.0]], [[20.0]], [[10_000.0]], 0.0)
    p = params("hyperliquid", liquidation_fee_fund_share=1.0)
    ev = step(s, p, 9_400, depth_for(37_600.0, 0.001))
    assert s.size[0, 0, 0] == pytest.approx(16.0, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(20_000.0 - 2_437.6 - 375.624, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(37_600.0, **APPROX)


def test_hyperliquid_backstop_below_two_thirds_of_maintenance_margin():
    # | mark  | equity | 2/3 MM | path                  | fill    | account  | fund     |
    # |-------|--------|--------|-----------------------|---------|----------|----------|
    # | 9,400 | 400    | 313.33 | market order, whole   | 9,390.6 | 296.694  | +46.953  |
    # | 9,300 | 300    | 310.00 | backstop (the fund)   | 9,290.7 | 0        | +290.7   |
    #
    # Above 2/3 MM the position (< $100k) goes whole to the book and the trader keeps what is
    # left after the capped 1% fee (half of it to the fund). Below, the account is taken over
    # with its margin: the vault is not built yet, so the fund stands in and keeps the whole
    # surplus over bankruptcy (9,290.7 - 9,000).
    s = one_long()
    step(s, params("hyperliquid"), 9_400, depth_for(9_400, 0.001))
    assert s.collateral_usd[0, 0] == pytest.approx(296.694, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1_046.953, **APPROX)
    s = one_long()
    ev = step(s, params("hyperliquid"), 9_300, depth_for(9_300, 0.001))
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert s.fund_usd[0] == pytest.approx(1_290.7, **APPROX)
    assert s.liquidator_rewards_usd[0] == 0.0 and ev.n_liquidations_below_bankruptcy[0] == 0


def test_hyperliquid_market_order_past_bankruptcy_waits_for_the_backstop():
    # Hyperliquid's market order fills no worse than the account's bankruptcy price, 9,000
    # [E: the docs say only that the order goes to the book; a fill past bankruptcy would
    # leave the account negative before the backstop band is reached].
    #
    # | mark  | equity | 2/3 MM | path                  | book fill (5% slip) | result         |
    # |-------|--------|--------|-----------------------|---------------------|----------------|
    # | 9,400 | 400    | 313.33 | market order          | 8,930 < 9,000       | refused, waits |
    # | 9,300 | 300    | 310.00 | backstop (fund, none) | 8,835               | fund pays 165  |
    s = one_long(fund=1000.0)
    p = params("hyperliquid")
    ev = step(s, p, 9_400, depth_for(9_400, 0.05))
    assert s.size[0, 0, 0] == 1.0 and s.collateral_usd[0, 0] == 1_000.0
    assert ev.liquidation_volume_usd[0] == 0.0 and ev.liquidation_sell_usd[0] == 0.0
    assert ev.n_liquidations_below_bankruptcy[0] == 0 and s.fund_usd[0] == 1_000.0
    ev = step(s, p, 9_300, depth_for(9_300, 0.05))
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ev.liquidation_volume_usd[0] == pytest.approx(8_835.0, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(165.0, **APPROX)
    assert s.fund_usd[0] == pytest.approx(835.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 1
    # A book that slips 1% fills the same market order at 9,306 >= 9,000: no wait.
    s = one_long(fund=1000.0)
    ev = step(s, p, 9_400, depth_for(9_400, 0.01))
    assert s.size[0, 0, 0] == 0.0
    assert ev.liquidation_volume_usd[0] == pytest.approx(9_306.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 0


# ==== the intra-tick path: sub-steps read prices between the previous tick's and this one's ====
#
# Ticks of 4 s (4 sub-steps under dydx_v4 and hyperliquid). The previous tick's oracle and book
# were 10,000; this tick's are 10,000 x 0.98^4 = 9,223.6816. Linear in log price, sub-step j
# reads 10,000 x 0.98^(j + 1): 9,800, 9,604, 9,411.92, 9,223.6816 (oracle and book alike).


def path_step(state, p, depth, prev=10_000.0):
    """One 4 s tick from ``prev`` to 9,223.6816 (``prev=None``: no previous tick)."""
    end = np.array([10_000.0 * 0.98**4])
    start = None if prev is None else np.array([prev])
    ev = core_step(
        state,
        p,
        end,
        SqrtImpact(depth),
        tick_minutes=4.0 / 60.0,
        prev_mark=start,
        prev_book_price=start,
    )
    assert_books_balance(state, end)
    return ev


def test_hyperliquid_liquidates_at_the_sub_step_where_the_path_crosses_maintenance():
    # The single long's maintenance price: 1,000 + (L - 10,000) = 0.05 L, L = 9,473.68.
    #
    # | sub-step | oracle = book | equity | requirement | 2/3 of it | order          |
    # |----------|---------------|--------|-------------|-----------|----------------|
    # | 0        | 9,800         | 800    | 490         |           | none           |
    # | 1        | 9,604         | 604    | 480.2       |           | none           |
    # | 2        | 9,411.92      | 411.92 | 470.596     | 313.73    | whole (market) |
    #
    # Notional 9,411.92 < $100k: the whole unit, market, at 9,411.92 x (1 - 0.001) =
    # 9,402.50808 (depth 47,059.6 slips 9,411.92 by 0.1%). Surplus 402.50808; fee
    # min(1% x 9,402.50808, surplus) = 94.0250808, half to the fund. The account keeps
    # 1,000 + (9,402.50808 - 10,000) - 94.0250808 = 308.4829992.
    s = one_long()
    depth = depth_for(9_411.92, 0.001)
    ev = path_step(s, params("hyperliquid"), depth)
    assert s.size[0, 0, 0] == 0.0
    assert ev.liquidation_sell_usd[0] == pytest.approx(9_411.92, **APPROX)
    assert ev.liquidation_volume_usd[0] == pytest.approx(9_402.50808, **APPROX)
    assert ev.liquidation_fees_usd[0] == pytest.approx(94.0250808, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(47.0125404, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(308.4829992, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 0
    # Without a previous tick every sub-step reads 9,223.6816: equity 223.6816 is below
    # 2/3 of 461.18408 = 307.46, so the backstop takes the account over (it ends at zero).
    s = one_long()
    path_step(s, params("hyperliquid"), depth, prev=None)
    assert s.size[0, 0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_dydx_first_block_is_the_one_where_the_path_crosses_maintenance():
    # A long of 2 from 10,000 with 2,000 (bankruptcy 9,000; maintenance price 9,473.68), fee
    # 1% (half to the fund). The book slips 1,882.384 by 0.1%. Sub-steps 0 and 1 send
    # nothing; then one block at each of the last two oracles:
    #
    # | block | oracle     | size | equity       | TMMR       | order | fillable     | fill        |
    # |-------|------------|------|--------------|------------|-------|--------------|-------------|
    # | 2     | 9,411.92   | 2    | 823.84       | 941.192    | 0.2   | 9,323.906    | 9,402.50808 |
    # | 3     | 9,223.6816 | 1.8  | 464.32347984 | 830.131344 | 0.18  | 8,918.841713 | 9,215.01880 |
    #
    # Fills to 1e-12: 9,215.0187972447. Fees (1% of the fill, under the surplus): 18.80501616
    # and 16.587033835.
    #
    # Orders: 10% of the position (0.2 x 9,411.92 = 1,882.384 and 0.18 x 9,223.6816 =
    # 1,660.262688, both over $1,000). Fillable price m - SMMR (TMMR - TNC) / q:
    # 9,411.92 - 1.5 x 117.352 / 2 and 9,223.6816 - 1.5 x 365.80786416 / 1.8. Slippage 0.1%
    # (the walk ends at 1 - 0.0015) and, for 1,660.262688 / 1,882.384 = 0.882 of the flow,
    # 2/3 (1 - 0.9985^sqrt(0.882)) = 2/3 x 0.00140879 = 0.093919%. Collateral after block 2:
    # 2,000 + 0.2 (9,402.50808 - 10,000) - 18.80501616 = 1,861.69659984; after block 3:
    # 1,861.69659984 + 0.18 (9,215.0187972447 - 10,000) - 16.587033835 = 1,703.8129495090.
    s = SimState.create([[2_000.0]], [[2.0]], [[10_000.0]], 1000.0)
    ev = path_step(s, params("dydx_v4"), depth_for(1_882.384, 0.001))
    assert s.size[0, 0, 0] == pytest.approx(1.62, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(1_703.8129495090, rel=1e-12, abs=1e-9)
    assert ev.liquidation_sell_usd[0] == pytest.approx(1_882.384 + 1_660.262688, **APPROX)
    assert ev.liquidation_fees_usd[0] == pytest.approx(18.80501616 + 16.587033835, abs=1e-9)
    assert ev.n_liquidations_below_bankruptcy[0] == 0
    # Without a previous tick all four blocks read 9,223.6816: 2 x 0.9^4 = 1.3122 is left.
    s = SimState.create([[2_000.0]], [[2.0]], [[10_000.0]], 1000.0)
    path_step(s, params("dydx_v4"), depth_for(1_882.384, 0.001), prev=None)
    assert s.size[0, 0, 0] == pytest.approx(1.3122, **APPROX)


@pytest.mark.parametrize("mode", ["partial", "binance", "bitmex"])
def test_modes_of_one_sub_step_read_only_the_ticks_own_prices(mode):
    # partial, binance and bitmex run the tick as one step: a previous tick's prices change
    # nothing, to the bit.
    with_path, without = one_long(), one_long()
    ev_a = path_step(with_path, params(mode), depth_for(9_223.6816, 0.001))
    ev_b = path_step(without, params(mode), depth_for(9_223.6816, 0.001), prev=None)
    np.testing.assert_array_equal(ev_a.data, ev_b.data)
    np.testing.assert_array_equal(with_path.collateral_usd, without.collateral_usd)
    assert without.size[0, 0, 0] < 1.0  # the case liquidates


def test_a_path_start_that_is_not_positive_means_no_previous_tick_and_nan_is_an_error():
    a, b = one_long(), one_long()
    ev_a = path_step(a, params("hyperliquid"), 1e5, prev=0.0)
    ev_b = path_step(b, params("hyperliquid"), 1e5, prev=None)
    np.testing.assert_array_equal(ev_a.data, ev_b.data)
    with pytest.raises(ValueError, match=r"prev_mark must be finite, got \[nan\]"):
        path_step(one_long(), params("hyperliquid"), 1e5, prev=float("nan"))


# ==== every mode ====


@pytest.mark.parametrize("mode", LIQUIDATION_MODES)
def test_a_healthy_book_is_left_alone_under_every_mode(mode):
    # Mark 9,500: equity 500 >= 475, nothing is liquidatable and nothing moves.
    s = one_long()
    before = s.copy()
    ev = step(s, params(mode), 9_500, 1e6)
    assert ev.n_liquidations[0] == 0
    np.testing.assert_array_equal(s.collateral_usd, before.collateral_usd)


def test_unknown_mode_is_an_error_naming_the_field_the_value_and_the_modes():
    with pytest.raises(ValueError, match=r"liquidation_mode must be one of .*'dydx_v4'.*'ftx'"):
        RiskParams(liquidation_mode="ftx")
    with pytest.raises(SchemaError, match=r"liquidation_mode = 'ftx': one of \['partial'"):
        make_config(liquidation_mode="ftx")
    assert make_config(liquidation_mode="bitmex").liquidation_mode == "bitmex"


def test_venue_modes_need_the_square_root_book_they_price_sub_steps_with():
    class Flat:
        def fill_prices(self, mark, sell, buy):
            return mark, mark

    with pytest.raises(TypeError, match=r"dydx_v4.*SqrtImpact.*Flat"):
        core_step(one_long(), params("dydx_v4"), np.array([9_400.0]), Flat())


# ==== the fund's income from shorts: the floored-oracle check's numerator ====


@pytest.mark.parametrize("mode", ["partial", "binance", "hyperliquid"])
def test_the_core_reports_the_funds_income_from_shorts_alone(mode):
    # A long at mark 9,400 and a short (1 unit from 10,000 with 1,000) at 10,600: both have
    # equity 400, below 5% of their notional. The core's floored-income column carries the
    # fund's income from the short's liquidation only (the tick keeps it while the oracle
    # is floored, LUNA's check): the short alone's whole income, the long alone's none.
    depth = depth_for(10_000.0, 0.001)

    def run(coll, size, mark):
        s = SimState.create([coll], [size], [[10_000.0] * len(size)], 1000.0)
        return step(s, params(mode, liquidation_fee_fund_share=1.0), mark, depth)

    short = run([1000.0], [-1.0], 10_600)
    assert short.fund_fee_income_usd[0] > 0.0
    assert short.floored_fund_fee_income_usd[0] == short.fund_fee_income_usd[0]
    long = run([1000.0], [1.0], 9_400)
    assert long.fund_fee_income_usd[0] > 0.0 and long.floored_fund_fee_income_usd[0] == 0.0
