"""Shared versus segmented insurance funds and per-market payout caps, worked by hand (issue 17).

**The books.** Two markets, BTC (market 0) and ALT (market 1), USD collateral, flat MMR 5%,
full closes, liquidation fee 1.5% all to the fund, BitMEX-rank ADL. Fills at the mark
(:class:`FixedSlippage` with ``s = 0``) unless said otherwise, so every number is exact.

**1. An alt crash beside a BTC loss, in one tick.** Accounts in this order, at BTC 9,000 and
ALT 80 (``c`` collateral; bankruptcy ``e - c / q``; fill at the mark):

| slot | who | ``c`` | position | equity | bankruptcy | shortfall |
|---|---|---|---|---|---|---|
| 0 | ``X`` | 1,000 | ALT long 100 from 100 | -1,000 | 90 | 100 x 10 = 1,000 |
| 1 | ``Y`` | 500 | BTC long 1 from 10,000 | -500 | 9,500 | 500 |
| 2 | ``P`` | 5,000 | BTC short 2 from 10,000 | BTC's ADL counterparty | | |
| 3 | ``Q`` | 5,000 | ALT short 200 from 100 | ALT's ADL counterparty | | |

The same 1,400 of insurance, held two ways (shared: one fund of 1,400; segmented: BTC 1,000,
ALT 400):

| | shared | segmented |
|---|---|---|
| ``X``'s ALT leg (first) | fund pays 1,000 | ALT pays 400; ADL 0.6 x 100 = 60 at 90 |
| ``Y``'s BTC leg | fund pays 400 of 500; ADL 0.2 x 1 at 9,500 | BTC pays 500, no ADL |
| ``P`` (BTC short) | 0.2 at 9,500: 5,000 + 0.2 x 500 = 5,100 | untouched: 5,000, size -2 |
| ``Q`` (ALT short) | untouched: 5,000, size -200 | 60 at 90: 5,000 + 60 x 10 = 5,600 |
| ``X``, ``Y`` after | 0 and 0 | 1,000 - 40 x 20 - 60 x 10 + 400 = 0; 0 |
| fund after | 0 | BTC 500, ALT 0 |
| paid per market (BTC, ALT) | 400, 1,000 | 500, 400 |
| ADL volume | 0.2 x 9,500 = 1,900 | 60 x 90 = 5,400 |

(ADL takes a leg's uncovered share, ``(1 - paid / shortfall) x close``: 1 - 400/1,000 = 0.6,
1 - 400/500 = 0.2.) Shared, the alt's loss drains the fund and BTC shorts are deleveraged
for it (contagion); segmented, it stays in the alt market. One segment holding every market
pays exactly as the shared fund does.

**2. A $100k cap.** ``Z``: collateral 50,000, ALT long 10,000 from 100, at ALT 80: bankruptcy
95, shortfall ``10,000 x 15 = 150,000``. The fund holds 1,000,000 but ALT's cap is 100,000:
it pays 100,000; ADL closes ``(1 - 100/150) x 10,000 = 3,333.33`` ALT at 95 against ``Q2``
(collateral 500,000, short 20,000 from 100), which gains ``3,333.33 x 5 = 16,666.67``. ``Z``
ends at ``50,000 - 6,666.67 x 20 - 3,333.33 x 5 + 100,000 = 0``; the fund at 900,000. With
no cap it pays all 150,000 and nobody is deleveraged; with a $0 cap it pays nothing and ADL
takes all 10,000. The same holds with ALT as the only market (a cap runs the cross path).

**3. Capped transfers between segments.** Case 1's segments (BTC 1,000, ALT 400) when the
venue lets a segment lend the others' legs what their own segment could not pay, within a cap
per tick. Each segment first pays its own legs (ALT 400 to ``X``, BTC 500 to ``Y``); then
``X``'s leg, 600 short, borrows from BTC's 500 left:

| cap | BTC lends | ``X`` paid | ADL of ``X`` at 90 | segments (BTC, ALT) | ``Q`` after |
|---|---|---|---|---|---|
| 0 (forbidden, the default) | 0 | 400 | 60 (5,400) | 500, 0 | 5,600, -140 |
| 300 | 300 | 700 | 30 (2,700) | 200, 0 | 5,300, -170 |
| ``inf`` (pooled) | 500 | 900 | 10 (900) | 0, 0 | 5,100, -190 |

``StepEvents.fund_transfer_usd`` is ``[300, -300]`` and ``[500, -500]``: what each segment
sent, net.

**4. Fuzzed books** (hypothesis): ledger conservation, non-negative segments, each segment
moved only by its own markets' fee income and payments, and every cap respected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.impact import SqrtImpact, market_books
from fundgym.envs.core.step import _book_segments, core_step
from fundgym.envs.state import SimState, ledger_error, ledger_total
from tests.books import FixedSlippage, worked_params
from tests.multi_market import two_market_book as book

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

PARAMS = worked_params(liquidation_fee_rate=0.015, liquidation_fee_fund_share=1.0)
MARKS = np.array([[9_000.0, 80.0]])


AT_MARK = FixedSlippage(0.0)
X = (1_000.0, 0.0, 0.0, 100.0, 100.0)
Y = (500.0, 1.0, 10_000.0, 0.0, 0.0)
P = (5_000.0, -2.0, 10_000.0, 0.0, 0.0)
Q = (5_000.0, 0.0, 0.0, -200.0, 100.0)


def test_shared_fund_pays_the_alt_then_btc_is_deleveraged() -> None:
    state = book([X, Y, P, Q], 1_400.0)
    ev = core_step(state, PARAMS, MARKS, AT_MARK)
    assert ev.market_fund_paid_usd is not None
    np.testing.assert_allclose(ev.market_fund_paid_usd[0], [400.0, 1_000.0], rtol=1e-12)
    assert ev.shortfall_usd[0] == pytest.approx(1_400.0, rel=1e-12)
    assert state.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(state.collateral_usd[0], [0.0, 0.0, 5_100.0, 5_000.0], atol=1e-9)
    np.testing.assert_allclose(state.size[0, 2], [-1.8, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(state.size[0, 3], [0.0, -200.0])  # ALT shorts untouched
    assert ev.adl_volume_usd[0] == pytest.approx(1_900.0, rel=1e-12)
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-9)


def test_segmented_fund_keeps_the_alt_loss_in_the_alt_market() -> None:
    state = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    ev = core_step(state, PARAMS, MARKS, AT_MARK, fund_mode="segmented")
    assert ev.market_fund_paid_usd is not None
    np.testing.assert_allclose(ev.market_fund_paid_usd[0], [500.0, 400.0], rtol=1e-12)
    np.testing.assert_allclose(state.fund_segments_usd[0], [500.0, 0.0], atol=1e-9)
    assert state.fund_usd[0] == 0.0  # the shared fund is never touched
    np.testing.assert_allclose(state.collateral_usd[0], [0.0, 0.0, 5_000.0, 5_600.0], atol=1e-9)
    np.testing.assert_array_equal(state.size[0, 2], [-2.0, 0.0])  # BTC shorts untouched
    np.testing.assert_allclose(state.size[0, 3], [0.0, -140.0], rtol=1e-12)
    assert ev.adl_volume_usd[0] == pytest.approx(5_400.0, rel=1e-12)
    assert ev.shortfall_usd[0] == pytest.approx(900.0, rel=1e-12)
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("cap", "lent", "adl_base", "segments"),
    [(300.0, 300.0, 30.0, [200.0, 0.0]), (np.inf, 500.0, 10.0, [0.0, 0.0])],
)
def test_a_capped_transfer_lends_the_alt_what_its_segment_could_not_pay(
    cap: float, lent: float, adl_base: float, segments: list[float]
) -> None:
    state = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    ev = core_step(state, PARAMS, MARKS, AT_MARK, fund_mode="segmented", fund_transfer_cap_usd=cap)
    assert ev.fund_transfer_usd is not None
    np.testing.assert_allclose(ev.fund_transfer_usd[0], [lent, -lent], rtol=1e-12)
    assert ev.market_fund_paid_usd is not None
    np.testing.assert_allclose(ev.market_fund_paid_usd[0], [500.0, 400.0 + lent], rtol=1e-12)
    np.testing.assert_allclose(state.fund_segments_usd[0], segments, atol=1e-9)
    assert ev.adl_volume_usd[0] == pytest.approx(adl_base * 90.0, rel=1e-12)
    np.testing.assert_allclose(state.size[0, 3], [0.0, -200.0 + adl_base], rtol=1e-12)
    assert state.collateral_usd[0, 3] == pytest.approx(5_000.0 + adl_base * 10.0, rel=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-9)


def test_a_zero_transfer_cap_is_the_forbidden_default_and_shared_refuses_one() -> None:
    forbidden = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    zero = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    core_step(forbidden, PARAMS, MARKS, AT_MARK, fund_mode="segmented")
    ev = core_step(zero, PARAMS, MARKS, AT_MARK, fund_mode="segmented", fund_transfer_cap_usd=0.0)
    assert ev.fund_transfer_usd is None
    np.testing.assert_array_equal(zero.fund_segments_usd, forbidden.fund_segments_usd)
    np.testing.assert_array_equal(zero.collateral_usd, forbidden.collateral_usd)
    with pytest.raises(ValueError, match="fund_mode 'segmented' only"):
        core_step(book([X, Y, P, Q], 1_400.0), PARAMS, MARKS, AT_MARK, fund_transfer_cap_usd=1.0)
    with pytest.raises(ValueError, match="fund_transfer_cap_usd must be"):
        core_step(
            book([X, Y, P, Q], 0.0, [1_000.0, 400.0]), PARAMS, MARKS, AT_MARK,
            fund_mode="segmented", fund_transfer_cap_usd=-1.0,
        )  # fmt: skip


def test_the_btc_segment_is_untouched_by_an_alt_crash_alone() -> None:
    state = book([X, P, Q], 0.0, [1_000.0, 400.0])
    core_step(state, PARAMS, MARKS, AT_MARK, fund_mode="segmented")
    assert state.fund_segments_usd[0, 0] == 1_000.0
    assert state.fund_segments_usd[0, 1] == pytest.approx(0.0, abs=1e-9)


def test_fee_income_goes_to_the_markets_own_segment() -> None:
    # BTC long 1 from 10,000 on 1,000: bankruptcy 9,000. At BTC 9,400 (equity 400 < 470)
    # filled at 9,400: surplus 400, fee min(400, 1.5% x 9,400) = 141, all to the BTC segment.
    solvent = (1_000.0, 1.0, 10_000.0, 0.0, 0.0)
    state = book([solvent, P], 0.0, [10.0, 20.0])
    marks = np.array([[9_400.0, 80.0]])
    ev = core_step(state, PARAMS, marks, AT_MARK, fund_mode="segmented")
    assert ev.fund_fee_income_usd[0] == pytest.approx(141.0, rel=1e-12)
    np.testing.assert_allclose(state.fund_segments_usd[0], [151.0, 20.0], rtol=1e-12)
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_one_segment_for_every_market_pays_as_the_shared_fund() -> None:
    shared = book([X, Y, P, Q], 1_400.0)
    one = book([X, Y, P, Q], 0.0, [1_400.0])
    ev_s = core_step(shared, PARAMS, MARKS, AT_MARK)
    ev_o = core_step(one, PARAMS, MARKS, AT_MARK, fund_mode="segmented", fund_groups=[0, 0])
    np.testing.assert_array_equal(one.collateral_usd, shared.collateral_usd)
    np.testing.assert_array_equal(one.size, shared.size)
    np.testing.assert_array_equal(ev_o.data, ev_s.data)
    assert one.fund_segments_usd[0, 0] == shared.fund_usd[0]


Z = (50_000.0, 0.0, 0.0, 10_000.0, 100.0)
Q2 = (500_000.0, 0.0, 0.0, -20_000.0, 100.0)


@pytest.mark.parametrize(
    ("cap_usd", "paid_usd"), [(100_000.0, 100_000.0), (np.inf, 150_000.0), (0.0, 0.0)]
)
def test_a_market_cap_sends_the_rest_to_adl(cap_usd: float, paid_usd: float) -> None:
    state = book([Z, Q2], 1_000_000.0)
    ev = core_step(state, PARAMS, MARKS, AT_MARK, fund_cap_usd=[np.inf, cap_usd])
    deleveraged = (1.0 - paid_usd / 150_000.0) * 10_000.0
    assert ev.shortfall_usd[0] == pytest.approx(paid_usd, rel=1e-12)
    assert state.fund_usd[0] == pytest.approx(1_000_000.0 - paid_usd, rel=1e-12)
    assert state.size[0, 1, 1] == pytest.approx(-20_000.0 + deleveraged, rel=1e-12)
    assert state.collateral_usd[0, 1] == pytest.approx(500_000.0 + 5.0 * deleveraged, rel=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-6)


def test_a_cap_on_a_one_market_exchange() -> None:
    state = SimState.create([[50_000.0, 500_000.0]], [[10_000.0, -20_000.0]], [[100.0] * 2], 1e6)
    ev = core_step(state, PARAMS, np.array([80.0]), AT_MARK, fund_cap_usd=100_000.0)
    assert ev.shortfall_usd[0] == pytest.approx(100_000.0, rel=1e-12)
    assert state.size[0, 1, 0] == pytest.approx(-20_000.0 + 10_000.0 / 3.0, rel=1e-12)
    assert state.fund_usd[0] == pytest.approx(900_000.0, rel=1e-12)


def test_a_segment_is_capped_too() -> None:
    state = book([Z, Q2], 0.0, [0.0, 1_000_000.0])
    ev = core_step(
        state, PARAMS, MARKS, AT_MARK, fund_mode="segmented", fund_cap_usd=[0.0, 100_000.0]
    )
    assert ev.shortfall_usd[0] == pytest.approx(100_000.0, rel=1e-12)
    np.testing.assert_allclose(state.fund_segments_usd[0], [0.0, 900_000.0], rtol=1e-12)


def test_segments_count_in_the_ledger() -> None:
    plain = book([X, Q], 0.0)
    segmented = book([X, Q], 0.0, [30.0, 70.0])
    diff = ledger_total(segmented, MARKS) - ledger_total(plain, MARKS)
    assert diff[0] == pytest.approx(100.0, rel=1e-12)
    assert ledger_error(segmented, MARKS)[0] == pytest.approx(0.0, abs=1e-9)
    assert plain.fund_segments_usd.shape == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "segments", "match"),
    [
        ({"fund_mode": "pooled"}, None, "fund_mode must be one of"),
        ({}, [1.0, 1.0], "fund_mode 'shared' pays from state.fund"),
        ({"fund_groups": [0, 0]}, None, "fund_groups maps markets"),
        ({"fund_mode": "segmented"}, None, "needs fund segments"),
        ({"fund_mode": "segmented"}, [1.0], "fund_groups is required"),
        ({"fund_mode": "segmented", "fund_groups": [0, 2]}, [1.0, 1.0], "0 .. 1, got"),
        ({"fund_mode": "segmented", "fund_groups": [0]}, [1.0, 1.0], r"\(n_markets,\)"),
        ({"fund_mode": "segmented", "fund_available_usd": 5.0}, [1.0, 1.0], "leave it None"),
        ({"fund_cap_usd": [1.0, -1.0]}, None, "fund_cap_usd must be >= 0"),
        ({"fund_cap_usd": [1.0, np.nan]}, None, "fund_cap_usd must be >= 0"),
        ({"fund_cap_usd": [1.0, 2.0, 3.0]}, None, "fund_cap_usd must be"),
    ],
)
def test_bad_fund_terms_are_refused(
    kwargs: dict[str, Any], segments: list[float] | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        core_step(book([X, Q], 0.0, segments), PARAMS, MARKS, AT_MARK, **kwargs)


def test_bad_segments_are_refused() -> None:
    with pytest.raises(ValueError, match="fund_segments_usd must be finite and >= 0"):
        book([X], 0.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="fund_segments_usd must be"):
        SimState.create([[1.0]], [[1.0]], [[1.0]], 0.0, fund_segments_usd=np.ones((2, 2)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    sequence=st.sampled_from(("adl", "socialize")),
    capped=st.booleans(),
    fee_rate=st.sampled_from((0.0, 0.015)),
)
def test_fuzzed_books_conserve_and_keep_segments_apart(
    seed: int, sequence: str, capped: bool, fee_rate: float
) -> None:
    rng = np.random.default_rng(seed)
    n_envs, n_acc, n_mk = 3, 12, 3
    entry = rng.uniform(50.0, 150.0, (n_envs, n_acc, n_mk))
    size = rng.normal(0.0, 10.0, (n_envs, n_acc, n_mk))
    size[rng.random((n_envs, n_acc, n_mk)) < 0.3] = 0.0
    coll = (np.abs(size) * entry).sum(axis=2) * rng.uniform(0.0, 0.3, (n_envs, n_acc))
    segments = rng.uniform(0.0, 300.0, (n_envs, 2))
    marks = entry.mean(axis=1) * rng.uniform(0.7, 1.3, (n_envs, n_mk))
    groups = np.array([0, 1, 1])
    caps = np.where(rng.random((n_envs, n_mk)) < 0.5, rng.uniform(0.0, 100.0), np.inf)
    state = SimState.create(coll, size, entry, 0.0, fund_segments_usd=segments)
    params = dataclasses.replace(
        PARAMS,
        fallback=sequence,  # type: ignore[arg-type]
        liquidation_fee_rate=fee_rate,
        max_liquidation_fraction=0.5,
        min_liquidation_notional_usd=100.0,
    )
    books = market_books(SqrtImpact(2e4), [1.0, 0.3, 0.05])
    ev = core_step(
        state,
        params,
        marks,
        books,
        fund_mode="segmented",
        fund_groups=groups,
        fund_cap_usd=caps if capped else None,
    )
    scale = float(np.abs(size).sum() * marks.max() + np.abs(coll).sum())
    assert np.abs(ledger_error(state, marks)).max() <= 1e-12 * scale
    assert (state.fund_segments_usd >= 0.0).all()
    assert state.fund_usd.max() == 0.0
    if ev.market_fund_paid_usd is None:  # nobody liquidated: nothing moved
        np.testing.assert_array_equal(state.fund_segments_usd, segments)
        return
    paid = ev.market_fund_paid_usd
    np.testing.assert_allclose(paid.sum(axis=1), ev.shortfall_usd, atol=1e-9 * scale)
    if capped:
        assert (paid <= caps + 1e-9 * scale).all()
    spent = segments - state.fund_segments_usd  # what each segment paid, net of income
    np.testing.assert_allclose(
        spent.sum(axis=1), paid.sum(axis=1) - ev.fund_fee_income_usd, atol=1e-9 * scale
    )
    if fee_rate == 0.0:  # no income: each segment paid exactly its own markets' legs
        np.testing.assert_allclose(spent[:, 0], paid[:, 0], atol=1e-9 * scale)
        np.testing.assert_allclose(spent[:, 1], paid[:, 1:].sum(axis=1), atol=1e-9 * scale)


def test_a_rounding_below_zero_is_booked_as_unrecovered() -> None:
    """A segment asked an ulp more than it holds pays what it holds; the ulp is the exchange's."""
    state = book([X], 0.0, [1.0, 5.0])
    ev = StepEvents.zeros(1)
    paid = np.array([[1.0 + 2.0**-52, 0.0]])
    ev.shortfall_usd = paid.sum(axis=1)
    _book_segments(state, ev, np.array([0, 1]), paid, np.zeros((1, 2)), np.zeros((1, 2)))
    np.testing.assert_array_equal(state.fund_segments_usd[0], [0.0, 5.0])
    assert state.unrecovered_usd[0] == 2.0**-52 == ev.unrecovered_usd[0]
    assert ev.shortfall_usd[0] == 1.0
