"""Outside liquidators with incentives: hand-worked capacity and fills (envs/core/liquidators.py).

One long of 1 unit, collateral 1,000, entry 10,000 (bankruptcy 9,000); MMR 5%; liquidation fee
1%; ``partial`` closes the whole position (fraction 1). Capacity per side and tick is
``k x depth x (max(fee x (1 - fund share) - oracle gap, 0) / 0.01)^2``: the flow whose walk
through the square-root book moves the price by the liquidators' net incentive. A flow ``N``
the liquidators leave walks the book alone and fills ``2/3 x (1 - exp(-0.01 sqrt(N / D)))``
below it.
"""

import numpy as np
import pytest

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.liquidators import liquidator_capacity_usd
from fundgym.envs.core.step import core_step
from fundgym.envs.state import SimState
from tests.books import assert_books_balance
from tests.books import worked_params as params

APPROX = {"rel": 1e-12, "abs": 1e-9}


def one_long():
    return SimState.create([[1000.0]], [[1.0]], [[10_000.0]], 1000.0)


def step(state, p, mark, depth, book=None):
    mark_px = np.array([float(mark)])
    book_px = None if book is None else np.array([float(book)])
    ev = core_step(state, p, mark_px, SqrtImpact(depth), book_price=book_px)
    assert_books_balance(state, mark_px)
    return ev


@pytest.mark.parametrize(
    ("fee", "share", "mult", "depth", "oracle", "book", "sign", "want"),
    [
        # f_L = 1% x 0.5 = 0.5%: 47,000 x (0.5% / 1%)^2 = 47,000 x 0.25 = 11,750
        (0.01, 0.5, 1.0, 47_000.0, 9_400.0, 9_400.0, 1.0, 11_750.0),
        # a tenth of the competitive capital
        (0.01, 0.5, 0.1, 47_000.0, 9_400.0, 9_400.0, 1.0, 1_175.0),
        # all of the fee to the fund: nothing to earn, nobody comes
        (0.01, 1.0, 1.0, 47_000.0, 9_400.0, 9_400.0, 1.0, 0.0),
        # book 0.2% under the oracle: a buyer at the oracle loses 0.2% hedging; 0.3% is left:
        # 10,000 x 0.3^2 = 900
        (0.01, 0.5, 1.0, 10_000.0, 10_000.0, 9_980.0, 1.0, 900.0),
        # the same gap helps the buys (shorts' liquidations): the book is cheaper to buy from;
        # no gap counts against them: 10,000 x 0.5^2 = 2,500
        (0.01, 0.5, 1.0, 10_000.0, 10_000.0, 9_980.0, -1.0, 2_500.0),
        # a gap wider than the fee: liquidators vanish
        (0.01, 0.5, 1.0, 10_000.0, 10_000.0, 9_900.0, 1.0, 0.0),
    ],
)
def test_capacity_table(fee, share, mult, depth, oracle, book, sign, want):
    got = liquidator_capacity_usd(fee, share, mult, depth, oracle, book, sign)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_capacity_is_quadratic_in_the_fee_share_and_linear_in_depth():
    # Elasticity 2 in the liquidators' incentive and 1 in depth, with a live oracle: twice
    # the fee share (0.5% -> 1%) buys four times the capacity.
    base = liquidator_capacity_usd(0.01, 0.5, 1.0, 1e6, 100.0, 100.0, 1.0)
    assert liquidator_capacity_usd(0.01, 0.0, 1.0, 1e6, 100.0, 100.0, 1.0) == pytest.approx(
        4.0 * base, rel=1e-12
    )
    assert liquidator_capacity_usd(0.01, 0.5, 1.0, 5e5, 100.0, 100.0, 1.0) == pytest.approx(
        0.5 * base, rel=1e-12
    )


def test_liquidators_with_room_take_the_whole_order_at_the_oracle():
    # Oracle 9,400, depth 47,000 (the book alone would walk 0.01 sqrt(0.2) = 0.447% and slip
    # 2/3 (1 - e^-0.00447214) = 0.297477%, to 9,372.0372). Capacity 11,750 covers the 9,400
    # order: it fills at 9,400. Surplus 400, fee min(94, 400) = 94, 47 to the fund and 47 to
    # the liquidators; the account keeps 1,000 - 600 - 94 = 306 (278.3168 through the book).
    s = one_long()
    ev = step(s, params(), 9_400, 47_000.0)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_400.0, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(306.0, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(47.0, **APPROX)
    assert s.liquidator_rewards_usd[0] == pytest.approx(47.0, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(9_400.0, **APPROX)  # they hedge it


def test_the_rest_of_the_flow_walks_the_book_on_its_own():
    # k = 0.16: capacity 0.16 x 11,750 = 1,880 of the 9,400 order (a fifth) at 9,400; the
    # other 7,520 walks 0.01 sqrt(7,520 / 47,000) = 0.01 x 0.4 = 0.4% and slips
    # 2/3 (1 - e^-0.004) = 2/3 x 0.00399201 = 0.266134%: 9,374.98340. Average
    # 0.2 x 9,400 + 0.8 x 9,374.98340 = 9,379.98672; fee 93.7998672; the account keeps
    # 1,000 - 620.01328 - 93.7998672 = 286.18685.
    fill = 9_400.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.004)))
    average = 0.2 * 9_400.0 + 0.8 * fill
    s = one_long()
    ev = step(s, params(liquidator_capacity_mult=0.16), 9_400, 47_000.0)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(1_880.0, **APPROX)
    assert ev.liquidation_fees_usd[0] == pytest.approx(0.01 * average, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(
        1_000.0 + average - 10_000.0 - 0.01 * average, **APPROX
    )
    assert s.collateral_usd[0, 0] == pytest.approx(286.18685, abs=1e-5)


def test_the_fee_split_has_a_price_the_fund_pays_in_shortfalls():
    # Oracle 9,050 (equity 50), depth 4,525: through the book alone the 9,050 order walks
    # 0.01 sqrt(2) = 1.41421% and slips 2/3 (1 - e^-0.0141421) = 2/3 x 0.0140426 = 0.936174%,
    # to 8,965.2763: 34.7237 past bankruptcy, which the fund pays (share 1: no liquidators).
    book_alone = 9_050.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.01 * np.sqrt(2.0))))
    s = one_long()
    ev = step(s, params(liquidation_fee_fund_share=1.0), 9_050, 4_525.0)
    assert ev.shortfall_usd[0] == pytest.approx(9_000.0 - book_alone, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(34.7237, abs=1e-4)
    assert ev.liquidator_absorbed_usd[0] == 0.0
    # The whole fee to the liquidators (share 0): capacity 4,525 x (1% / 1%)^2 = 4,525, half
    # the order at 9,050; the rest, 4,525, walks 0.01 sqrt(1) = 1% and slips
    # 2/3 (1 - e^-0.01) = 2/3 x 0.00995017 = 0.663344%: 8,989.9673. Average 9,019.9837:
    # 19.9837 over bankruptcy, all of it the capped fee, to the liquidators. No shortfall, no
    # fund income.
    average = 0.5 * (9_050.0 + 9_050.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.01))))
    s = one_long()
    ev = step(s, params(liquidation_fee_fund_share=0.0), 9_050, 4_525.0)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(4_525.0, **APPROX)
    assert ev.shortfall_usd[0] == 0.0 and ev.bad_debt_usd[0] == 0.0
    assert ev.fund_fee_income_usd[0] == 0.0
    assert s.liquidator_rewards_usd[0] == pytest.approx(average - 9_000.0, **APPROX)
    assert s.liquidator_rewards_usd[0] == pytest.approx(19.9837, abs=1e-4)
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_a_stale_oracle_above_the_book_drives_liquidators_away():
    # Oracle 9,400, book 9,300: the gap, 1.06%, exceeds their 0.5%; the order walks the book
    # from 9,300 as without liquidators.
    s, t = one_long(), one_long()
    ev = step(s, params(), 9_400, 46_500.0, book=9_300)
    ref = step(t, params(liquidator_capacity_mult=0.0), 9_400, 46_500.0, book=9_300)
    assert ev.liquidator_absorbed_usd[0] == 0.0
    assert s.collateral_usd[0, 0] == t.collateral_usd[0, 0]
    assert ev.liquidation_fees_usd[0] == ref.liquidation_fees_usd[0]


def test_venue_modes_share_the_ticks_capacity():
    # binance takes the whole position with an IOC; with liquidators paid it fills at the
    # oracle as in the partial case above: fee 94, account 306.
    s = one_long()
    p = params(liquidation_mode="binance")
    ev = step(s, p, 9_400, 47_000.0)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_400.0, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(306.0, **APPROX)


def test_liquidators_take_only_the_orders_they_are_paid_for():
    # Two longs of 1 unit at 10,000: account 0 with 1,000 (equity 400 at 9,400), account 1
    # with 500 (equity -100: bankrupt at 9,500, its capped fee is zero). Capacity 11,750
    # covers account 0's 9,400 order, filled at the oracle (keeps 306, as above); account 1's
    # order walks the book alone: 9,400 through 47,000 slips 0.297477% (as above), to
    # 9,372.0372, which is 127.9628 past its bankruptcy price: the fund pays it.
    s = SimState.create([[1000.0, 500.0]], [[1.0, 1.0]], [[10_000.0, 10_000.0]], 1000.0)
    ev = step(s, params(), 9_400, 47_000.0)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_400.0, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(306.0, **APPROX)
    book_alone = 9_400.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.01 * np.sqrt(0.2))))
    assert ev.shortfall_usd[0] == pytest.approx(9_500.0 - book_alone, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(127.9628, abs=1e-4)
    assert s.collateral_usd[0, 1] == pytest.approx(0.0, abs=1e-9)


def test_paid_liquidators_need_the_square_root_book_they_hedge_through():
    class Flat:
        def fill_prices(self, mark, sell, buy):
            return mark, mark

    with pytest.raises(TypeError, match=r"liquidators price through a SqrtImpact.*Flat"):
        core_step(one_long(), params(), np.array([9_400.0]), Flat())
    # unpaid (the fund takes the whole fee), any impact model will do
    ev = core_step(one_long(), params(liquidation_fee_fund_share=1.0), np.array([9_400.0]), Flat())
    assert ev.n_liquidations[0] == 1
