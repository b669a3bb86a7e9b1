"""The margin engine across markets: cross-margined accounts, worked by hand (issue 17).

**The books.** Two markets, BTC (market 0) and ETH (market 1), USD collateral, flat MMR 5%,
full closes (``max_liquidation_fraction`` 1), liquidation fee 1.5% all to the fund. Fills come
from :class:`FixedSlippage`: sells at ``book x (1 - s)``, buys at ``book x (1 + s)``, one ``s``
for every market, so every number below is exact. Equity = collateral + sum over markets of
size x (mark - entry); requirement = sum of 5% x |size| x mark.

**1. One cross account** ``A``: collateral 800, BTC long 1 from 10,500, ETH short 10 from 1,000.
At BTC 9,000 and ETH 900 the BTC leg loses 1,500 and the ETH leg wins 1,000:

| quantity | BTC leg | ETH leg | account |
|---|---|---|---|
| unrealised PnL ``u_j`` | -1,500 | +1,000 | -500 |
| requirement ``req_j`` | 450 | 450 | 900 |
| share ``w_j = req_j / req`` | 1/2 | 1/2 | |
| equity (300) apportioned ``w_j x 300`` | 150 | 150 | 300 < 900: liquidatable |
| leg collateral ``c_j = w_j x equity - u_j`` | 1,650 | -850 | 800 (sums to collateral) |
| bankruptcy price ``e - c_j / q`` | 10,500 - 1,650 = 8,850 | 1,000 - 85 = 915 | |

Closing both legs at their bankruptcy prices: ``800 + (8,850 - 10,500) - 10 x (915 - 1,000) =
800 - 1,650 + 850 = 0``. The winning ETH leg carries the losing BTC one: alone on 800 the BTC
leg's bankruptcy price would be 9,700, above the mark.

With 1% slippage the legs fill at 8,910 (sell) and 909 (buy): 60 better than bankruptcy each
(1 x 60 and 10 x 6), both under the 1.5% cap (133.65 and 136.35), so the fees are 60 + 60 and
the account ends at ``800 - 1,590 + 910 - 120 = 0``; the fund gains 120.

**The trigger** (account ``T``): collateral 1,000, BTC long 1 from 10,000 and ETH long 10 from
1,000, at BTC 9,700 and ETH 970. Each leg alone on the 1,000 would have equity 700 against a
requirement of 485: not liquidatable. Together: equity 400 against 970: liquidatable.

**2. Isolated next to cross** (one trader, two slots). ``I`` (isolated): collateral 1,300, BTC
long 1 from 10,000. ``X`` (the trader's cross account): collateral 10,000, BTC short 1 from
9,500 and ETH long 10 from 1,000.

| marks | ``I`` equity / req | ``X`` equity / req | liquidated |
|---|---|---|---|
| BTC 9,000, ETH 900 | 300 / 450 | 10,000 + 500 - 1,000 = 9,500 / 900 | ``I`` alone |
| BTC 10,300, ETH 100 | 1,600 / 515 | 10,000 - 800 - 9,000 = 200 / 565 | ``X`` alone |

``I`` at 9,000 with 1% slippage: bankruptcy 10,000 - 1,300 = 8,700, fill 8,910, fee
min(210, 133.65) = 133.65, collateral after ``1,300 - 1,090 - 133.65 = 76.35``: exactly what
the same account gets in a one-market exchange.

**3. Shortfall across legs, then ADL per market.** Book 1 with 5% slippage: BTC sells at 8,550
(300 below bankruptcy), ETH buys at 945 (10 x 30 = 300 above). The fund holds 150: it pays the
BTC leg (first in account then market order) 150 of its 300; the ETH leg gets nothing.
ADL takes the uncovered share of each leg, ``need = (1 - paid / bad) x close``: 0.5 BTC and 10
ETH. Counterparties: ``P`` (collateral 5,000, BTC short 2 from 9,500), ``Q`` (collateral 5,000,
ETH long 20 from 850), ``R`` (collateral 1,000, BTC long 1 from 9,000: BTC's same side, never
touched).

| who | closes | at | collateral after |
|---|---|---|---|
| ``A`` BTC | 0.5 in the book, 0.5 by ADL | 8,550; 8,850 | (both legs) 0, below |
| ``A`` ETH | 10 by ADL | 915 | |
| ``P`` | 0.5 of its BTC short | 8,850 | ``5,000 + 0.5 x (9,500 - 8,850) = 5,325`` |
| ``Q`` | 10 of its ETH long | 915 | ``5,000 + 10 x (915 - 850) = 5,650`` |

``A`` ends at ``800 + 0.5 x (8,550 - 10,500) + 0.5 x (8,850 - 10,500) + 150 (the fund)
- 10 x (915 - 1,000) = 800 - 975 - 825 + 150 + 850 = 0``.

ADL volume ``0.5 x 8,850 + 10 x 915 = 13,575``; haircut ``(4,425 - 4,500) - (9,150 - 9,000) =
-225`` (both counterparties close better than the mark). BTC's book flow keeps the 0.5 sold
(4,500 at the book), ETH's none.

**Counterparties judged on the whole account.** ``B``: collateral 500, BTC long 1 from 10,000:
at 9,000 its equity is -500, bankruptcy 9,500, above the mark. The fund is empty, so ADL closes
the whole BTC at 9,500, 500 worse than the mark for the shorts. ``S1``: collateral 598, BTC short
1 from 9,000, ETH long 1 from 1,000: equity ``598 + 0 - 100 = 498`` against a requirement of
``450 + 45 = 495``, not liquidatable; its BTC leg alone could bear the 500 (598 >= 500), its
account cannot (498 < 500), so it is not a counterparty, though BitMEX's rank would put it
first. ``S2``: collateral 5,000, BTC short 1 from 9,000: closes 1 at 9,500, ending at
``5,000 - (9,500 - 9,000) = 4,500``; ``B`` ends at ``500 + (9,500 - 10,000) = 0``.

**4. Fuzzed books** (hypothesis): ledger conservation, a non-negative fund, exchange ``i`` of a
batch equal to it stepped alone, and a second market nobody holds changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fundgym.envs.core.formulas import bankruptcy_price, cross_leg_collateral
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.step import core_step, margin_state
from fundgym.envs.state import SimState, ledger_error
from tests.books import FixedSlippage
from tests.multi_market import CROSS_PARAMS as PARAMS
from tests.multi_market import (
    FUZZ_BOOKS,
    fuzz_engine,
    fuzz_params,
    random_books,
)
from tests.multi_market import two_market_book as book

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


A = (800.0, 1.0, 10_500.0, -10.0, 1_000.0)
MARK_1 = np.array([[9_000.0, 900.0]])


def test_requirement_and_trigger_sum_over_markets() -> None:
    t = (1_000.0, 1.0, 10_000.0, 10.0, 1_000.0)
    marks = np.array([[9_700.0, 970.0]])
    eq, req = margin_state(book([t], 0.0), PARAMS, marks)
    assert (eq[0, 0], req[0, 0]) == pytest.approx((400.0, 970.0), rel=1e-12)
    for leg in ((1_000.0, 1.0, 10_000.0, 0.0, 0.0), (1_000.0, 0.0, 0.0, 10.0, 1_000.0)):
        eq1, req1 = margin_state(book([leg], 0.0), PARAMS, marks)  # each leg alone
        assert (eq1[0, 0], req1[0, 0]) == pytest.approx((700.0, 485.0), rel=1e-12)
        assert (
            core_step(book([leg], 0.0), PARAMS, marks, FixedSlippage(0.01)).n_liquidations[0] == 0
        )
    state = book([t], 0.0)
    ev = core_step(state, PARAMS, marks, FixedSlippage(0.01))
    assert ev.n_liquidations[0] == 1
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])  # both legs closed


def test_leg_collateral_and_bankruptcy_prices() -> None:
    size = np.array([1.0, -10.0])
    entry = np.array([10_500.0, 1_000.0])
    mark = MARK_1[0]
    legs = cross_leg_collateral(800.0, size, entry, mark, 0.05 * np.abs(size) * mark)
    np.testing.assert_allclose(legs, [1_650.0, -850.0], rtol=1e-12)
    np.testing.assert_allclose(bankruptcy_price(legs, size, entry), [8_850.0, 915.0], rtol=1e-12)
    one = cross_leg_collateral(
        1_300.0, np.array([1.0, 0.0]), np.array([1e4, 0.0]), mark, [450.0, 0.0]
    )
    assert one[0] == 1_300.0  # one open position: its collateral, exactly


def test_both_legs_liquidated_bankruptcy_across_legs() -> None:
    state = book([A], 0.0)
    eq, req = margin_state(state, PARAMS, MARK_1)
    assert (eq[0, 0], req[0, 0]) == (300.0, 900.0)
    ev = core_step(state, PARAMS, MARK_1, FixedSlippage(0.01))
    assert ev.n_liquidations[0] == 1
    assert ev.liquidation_fees_usd[0] == pytest.approx(120.0, rel=1e-12)
    assert ev.fund_fee_income_usd[0] == pytest.approx(120.0, rel=1e-12)
    assert ev.bad_debt_usd[0] == 0.0
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])
    assert state.fund_usd[0] == pytest.approx(120.0, rel=1e-12)
    assert ev.market_flow_usd is not None  # per market, at the book: BTC sold, ETH bought
    np.testing.assert_allclose(ev.market_flow_usd[0], [[9_000.0, 0.0], [0.0, 9_000.0]])
    assert (ev.liquidation_sell_usd[0], ev.liquidation_buy_usd[0]) == (9_000.0, 9_000.0)
    assert ledger_error(state, MARK_1)[0] == pytest.approx(0.0, abs=1e-9)


def test_closing_every_leg_at_bankruptcy_leaves_zero() -> None:
    """Fills exactly at the legs' bankruptcy prices (8,850 and 915): no fee, no debt, zero."""

    class AtBankruptcy:
        def fill_prices(
            self, mark: FloatArray, sell: FloatArray, buy: FloatArray
        ) -> tuple[FloatArray, FloatArray]:
            px = np.where(mark > 1_000.0, 8_850.0, 915.0)
            return px, px

    state = book([A], 0.0)
    ev = core_step(state, PARAMS, MARK_1, AtBankruptcy())
    assert ev.liquidation_fees_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert ev.bad_debt_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)


ISOLATED = (1_300.0, 1.0, 10_000.0, 0.0, 0.0)
CROSS = (10_000.0, -1.0, 9_500.0, 10.0, 1_000.0)


def test_isolated_slot_liquidated_alone() -> None:
    state = book([ISOLATED, CROSS], 0.0)
    before = state.copy()
    ev = core_step(state, PARAMS, MARK_1, FixedSlippage(0.01))
    assert ev.n_liquidations[0] == 1
    assert state.collateral_usd[0, 0] == pytest.approx(76.35, rel=1e-12)
    assert state.size[0, 0, 0] == 0.0
    assert state.collateral_usd[0, 1] == before.collateral_usd[0, 1]  # the cross slot: untouched
    np.testing.assert_array_equal(state.size[0, 1], before.size[0, 1])
    # Bit for bit what the isolated account gets in a one-market exchange.
    alone = SimState.create([[1_300.0]], [[1.0]], [[10_000.0]], 0.0)
    ev1 = core_step(alone, PARAMS, MARK_1[:, 0], FixedSlippage(0.01))
    assert state.collateral_usd[0, 0] == alone.collateral_usd[0, 0]
    assert ev.liquidation_fees_usd[0] == ev1.liquidation_fees_usd[0]


def test_cross_account_liquidated_alone() -> None:
    marks = np.array([[10_300.0, 100.0]])
    state = book([ISOLATED, CROSS], 0.0)
    eq, req = margin_state(state, PARAMS, marks)
    np.testing.assert_allclose(eq[0], [1_600.0, 200.0], rtol=1e-12)
    np.testing.assert_allclose(req[0], [515.0, 565.0], rtol=1e-12)
    ev = core_step(state, PARAMS, marks, FixedSlippage(0.01))
    assert ev.n_liquidations[0] == 1
    assert (state.collateral_usd[0, 0], state.size[0, 0, 0]) == (1_300.0, 1.0)  # isolated: kept
    np.testing.assert_array_equal(state.size[0, 1], [0.0, 0.0])  # both cross legs closed
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_shortfall_across_legs_then_adl_per_market() -> None:
    p_row = (5_000.0, -2.0, 9_500.0, 0.0, 0.0)
    q_row = (5_000.0, 0.0, 0.0, 20.0, 850.0)
    r_row = (1_000.0, 1.0, 9_000.0, 0.0, 0.0)
    state = book([A, p_row, q_row, r_row], 150.0)
    ev = core_step(state, PARAMS, MARK_1, FixedSlippage(0.05))
    assert ev.bad_debt_usd[0] == pytest.approx(150.0, rel=1e-12)  # book parts: 300 x 0.5, ETH 0
    assert ev.shortfall_usd[0] == pytest.approx(150.0, rel=1e-12)
    assert state.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert ev.adl_volume_usd[0] == pytest.approx(13_575.0, rel=1e-12)
    assert ev.adl_haircut_usd[0] == pytest.approx(-225.0, rel=1e-12)
    assert ev.socialized_loss_usd[0] == 0.0 and ev.unrecovered_usd[0] == 0.0
    np.testing.assert_allclose(
        state.collateral_usd[0], [0.0, 5_325.0, 5_650.0, 1_000.0], rtol=1e-12, atol=1e-9
    )
    np.testing.assert_allclose(
        state.size[0], [[0.0, 0.0], [-1.5, 0.0], [0.0, 10.0], [1.0, 0.0]], atol=1e-12
    )
    assert ev.market_flow_usd is not None
    np.testing.assert_allclose(ev.market_flow_usd[0], [[4_500.0, 0.0], [0.0, 0.0]], atol=1e-9)
    # The book took A's 0.5 BTC; ETH's book took nothing (it started at -(20 - 10)).
    np.testing.assert_allclose(state.counterparty_size[0], [0.5, -10.0], atol=1e-12)
    assert ledger_error(state, MARK_1)[0] == pytest.approx(0.0, abs=1e-9)


def test_adl_counterparties_judged_on_their_cross_account() -> None:
    b_row = (500.0, 1.0, 10_000.0, 0.0, 0.0)
    s1 = (598.0, -1.0, 9_000.0, 1.0, 1_000.0)
    s2 = (5_000.0, -1.0, 9_000.0, 0.0, 0.0)
    state = book([b_row, s1, s2], 0.0)
    eq, req = margin_state(state, PARAMS, MARK_1)
    np.testing.assert_allclose(eq[0], [-500.0, 498.0, 5_000.0], rtol=1e-12)
    np.testing.assert_allclose(req[0], [450.0, 495.0, 450.0], rtol=1e-12)
    ev = core_step(state, PARAMS, MARK_1, FixedSlippage(0.01))
    assert ev.n_liquidations[0] == 1
    assert ev.adl_volume_usd[0] == pytest.approx(9_500.0, rel=1e-12)
    assert ev.adl_haircut_usd[0] == pytest.approx(500.0, rel=1e-12)
    np.testing.assert_allclose(state.collateral_usd[0], [0.0, 598.0, 4_500.0], atol=1e-9)
    np.testing.assert_array_equal(state.size[0, :, 0], [0.0, -1.0, 0.0])
    assert ev.liquidation_sell_usd[0] == 0.0  # all of it deleveraged: nothing reached the book
    assert ledger_error(state, MARK_1)[0] == pytest.approx(0.0, abs=1e-9)


def test_refuses_what_is_not_built_for_several_markets() -> None:
    with pytest.raises(ValueError, match="one per market"):
        core_step(book([A], 0.0), PARAMS, MARK_1, [SqrtImpact()] * 3)
    with pytest.raises(ValueError, match="mark must be"):
        core_step(book([A, A], 0.0), PARAMS, np.array([9_000.0, 900.0]), SqrtImpact())


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@fuzz_engine(
    # (the fee's fund share, the outside liquidators' capacity): none paid, the competitive
    # market on half the fee, fifty times it on the whole fee
    liquidators=st.sampled_from([(1.0, 1.0), (0.5, 1.0), (0.0, 50.0)]),
)
def test_fuzzed_books_conserve_and_batch(
    seed: int,
    policy: str,
    social: str,
    max_frac: float,
    sequence: tuple[tuple[str, ...] | None, str],
    liquidators: tuple[float, float],
) -> None:
    params = dataclasses.replace(
        fuzz_params(PARAMS, sequence, policy, social, max_frac),
        liquidation_fee_fund_share=liquidators[0],
        liquidator_capacity_mult=liquidators[1],
    )
    books = FUZZ_BOOKS
    state, marks = random_books(seed, 3, 12, 3)
    start = state.copy()
    ev = core_step(state, params, marks, books)
    scale = float(np.abs(start.size).sum() * marks.max() + np.abs(start.collateral_usd).sum())
    assert np.abs(ledger_error(state, marks)).max() <= 1e-12 * scale
    assert (state.fund_usd >= 0.0).all()
    assert ev.market_flow_usd is not None
    np.testing.assert_allclose(ev.market_flow_usd.sum(axis=1)[:, 0], ev.liquidation_sell_usd)
    for i in range(3):  # exchange i of the batch is exchange i alone, bit for bit
        alone = start.take([i])
        ev_i = core_step(alone, params, marks[i : i + 1], books)
        np.testing.assert_array_equal(ev_i.data[0], ev.data[i])
        np.testing.assert_array_equal(alone.collateral_usd[0], state.collateral_usd[i])
        np.testing.assert_array_equal(alone.size[0], state.size[i])
    # A second market nobody holds changes nothing: the one-market step, bit for bit.
    one = start.take([0])
    one_state = SimState.create(
        one.collateral_usd, one.size[:, :, :1], one.entry_price[:, :, :1], one.fund_usd
    )
    two_state = SimState.create(
        one.collateral_usd,
        np.concatenate([one.size[:, :, :1], np.zeros_like(one.size[:, :, :1])], axis=2),
        np.concatenate([one.entry_price[:, :, :1], np.zeros_like(one.size[:, :, :1])], axis=2),
        one.fund_usd,
    )
    ev1 = core_step(one_state, params, marks[:1, 0], books[0])
    ev2 = core_step(two_state, params, np.array([[marks[0, 0], 1.0]]), books[:2])
    np.testing.assert_array_equal(ev2.data, ev1.data)
    np.testing.assert_array_equal(two_state.collateral_usd, one_state.collateral_usd)
    np.testing.assert_array_equal(two_state.size[:, :, 0], one_state.size[:, :, 0])
