"""Per-market ADL, haircut, socialised and unrecovered loss in ``StepEvents`` (issue 17).

A contagion report asks not only how much the fund paid for each market
(``market_fund_paid_usd``) but who else paid for it: the counterparties deleveraged in which
market, the bearers charged in which market, and what each market left to the exchange. The
cross path sets four ``(E, M)`` arrays for that, each row summing to its exchange column:
``market_adl_volume_usd`` (``adl_volume_usd``), ``market_adl_haircut_usd``
(``adl_haircut_usd``), ``market_socialized_usd`` (``socialized_loss_usd``) and
``market_unrecovered_usd`` (the waterfall's part of ``unrecovered_usd``).

**The books** are ``tests/envs/test_fund_segments.py``'s: BTC (market 0) and ALT (market 1),
flat MMR 5%, full closes, fee 1.5% all to the fund, fills at the mark. ``X`` is an ALT long
1,000 short of its bankruptcy (bankruptcy 90, mark 80, 100 ALT), ``Y`` a BTC long 500 short
(bankruptcy 9,500, mark 9,000, 1 BTC), ``P`` a BTC short 2 from 10,000 (+2,000 at the mark),
``Q`` an ALT short 200 from 100 (+4,000). 1,400 of insurance:

| | shared, ADL | segmented (1,000 / 400), ADL | shared, socialise | segmented, socialise |
|---|---|---|---|---|
| fund paid (BTC, ALT) | 400, 1,000 | 500, 400 | 400, 1,000 | 500, 400 |
| uncovered | BTC 100 | ALT 600 | BTC 100 | ALT 600 |
| ADL volume | 0.2 x 9,500 = 1,900, BTC | 60 x 90 = 5,400, ALT | 0 | 0 |
| ADL haircut | 1,900 - 0.2 x 9,000 = 100, BTC | 5,400 - 60 x 80 = 600, ALT | 0 | 0 |
| socialised | 0 | 0 | 100 to ``P``, BTC | 600 to ``Q``, ALT |

(ADL at the bankruptcy price; the haircut is what the counterparty gave up against the mark,
``+1 x (quote - base x mark)`` for a bankrupt long.) Shared, the alt's crash lands in BTC,
whose shorts pay for it; segmented, it stays in the alt. Without ``Q`` (no ALT bearer) the
segmented alt's 600 is unrecovered, in ALT. A shared fund that promised more than it held
(``fund_available_usd``) leaves its gap unrecovered, but in no market's row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.step import core_step, margin_state
from fundgym.envs.state import SimState, ledger_error
from tests.books import FixedSlippage, worked_params
from tests.multi_market import FUZZ_BOOKS, fuzz_engine, fuzz_params
from tests.multi_market import two_market_book as book

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

PARAMS = worked_params(liquidation_fee_rate=0.015, liquidation_fee_fund_share=1.0)
SOCIALIZE = dataclasses.replace(PARAMS, fallback="socialize")
MARKS = np.array([[9_000.0, 80.0]])
AT_MARK = FixedSlippage(0.0)

X = (1_000.0, 0.0, 0.0, 100.0, 100.0)
Y = (500.0, 1.0, 10_000.0, 0.0, 0.0)
P = (5_000.0, -2.0, 10_000.0, 0.0, 0.0)
Q = (5_000.0, 0.0, 0.0, -200.0, 100.0)

NEW_FIELDS = (
    "market_adl_volume_usd",
    "market_adl_haircut_usd",
    "market_socialized_usd",
    "market_unrecovered_usd",
)


def per_market(ev: StepEvents) -> dict[str, FloatArray]:
    """The four new arrays (each asserted set), and the fund's, by name."""
    out: dict[str, FloatArray] = {}
    for name in ("market_fund_paid_usd", *NEW_FIELDS):
        arr = getattr(ev, name)
        assert arr is not None, name
        out[name] = arr
    return out


def check_rows(ev: StepEvents) -> None:
    """Each new array's rows against its exchange column, on an exact worked case."""
    m = per_market(ev)
    np.testing.assert_allclose(m["market_adl_volume_usd"].sum(axis=1), ev.adl_volume_usd)
    np.testing.assert_allclose(m["market_adl_haircut_usd"].sum(axis=1), ev.adl_haircut_usd)
    np.testing.assert_allclose(m["market_socialized_usd"].sum(axis=1), ev.socialized_loss_usd)
    np.testing.assert_allclose(m["market_unrecovered_usd"].sum(axis=1), ev.unrecovered_usd)


def test_shared_fund_the_alt_crash_deleverages_btc() -> None:
    state = book([X, Y, P, Q], 1_400.0)
    ev = core_step(state, PARAMS, MARKS, AT_MARK)
    m = per_market(ev)
    np.testing.assert_allclose(m["market_fund_paid_usd"][0], [400.0, 1_000.0], rtol=1e-12)
    np.testing.assert_allclose(m["market_adl_volume_usd"][0], [1_900.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(m["market_adl_haircut_usd"][0], [100.0, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(m["market_socialized_usd"][0], [0.0, 0.0])
    np.testing.assert_array_equal(m["market_unrecovered_usd"][0], [0.0, 0.0])
    check_rows(ev)
    # P, the BTC counterparty, took 0.2 at 9,500: +100 against the mark's 9,000 is its haircut.
    assert state.collateral_usd[0, 2] == pytest.approx(5_100.0, rel=1e-12)


def test_segmented_fund_keeps_the_adl_in_the_alt() -> None:
    state = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    ev = core_step(state, PARAMS, MARKS, AT_MARK, fund_mode="segmented")
    m = per_market(ev)
    np.testing.assert_allclose(m["market_fund_paid_usd"][0], [500.0, 400.0], rtol=1e-12)
    np.testing.assert_allclose(m["market_adl_volume_usd"][0], [0.0, 5_400.0], rtol=1e-12)
    np.testing.assert_allclose(m["market_adl_haircut_usd"][0], [0.0, 600.0], rtol=1e-12)
    np.testing.assert_array_equal(m["market_socialized_usd"][0], [0.0, 0.0])
    np.testing.assert_array_equal(m["market_unrecovered_usd"][0], [0.0, 0.0])
    check_rows(ev)
    # Q, the ALT counterparty, closed 60 at 90 rather than the mark's 80: 600 given up.
    assert state.collateral_usd[0, 3] == pytest.approx(5_600.0, rel=1e-12)


def test_shared_fund_socialises_the_alt_crash_to_btc_shorts() -> None:
    state = book([X, Y, P, Q], 1_400.0)
    ev = core_step(state, SOCIALIZE, MARKS, AT_MARK)
    m = per_market(ev)
    np.testing.assert_allclose(m["market_socialized_usd"][0], [100.0, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(m["market_adl_volume_usd"][0], [0.0, 0.0])
    np.testing.assert_array_equal(m["market_adl_haircut_usd"][0], [0.0, 0.0])
    np.testing.assert_array_equal(m["market_unrecovered_usd"][0], [0.0, 0.0])
    check_rows(ev)
    np.testing.assert_allclose(
        state.collateral_usd[0], [0.0, 0.0, 4_900.0, 5_000.0], rtol=1e-12, atol=1e-9
    )
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-9)


def test_segmented_fund_socialises_the_alt_loss_to_alt_shorts() -> None:
    state = book([X, Y, P, Q], 0.0, [1_000.0, 400.0])
    ev = core_step(state, SOCIALIZE, MARKS, AT_MARK, fund_mode="segmented")
    m = per_market(ev)
    np.testing.assert_allclose(m["market_socialized_usd"][0], [0.0, 600.0], rtol=1e-12)
    np.testing.assert_array_equal(m["market_adl_volume_usd"][0], [0.0, 0.0])
    np.testing.assert_array_equal(m["market_unrecovered_usd"][0], [0.0, 0.0])
    check_rows(ev)
    np.testing.assert_allclose(
        state.collateral_usd[0], [0.0, 0.0, 5_000.0, 4_400.0], rtol=1e-12, atol=1e-9
    )
    assert ledger_error(state, MARKS)[0] == pytest.approx(0.0, abs=1e-9)


def test_an_alt_loss_without_bearers_is_unrecovered_in_the_alt() -> None:
    state = book([X, Y, P], 0.0, [1_000.0, 400.0])
    ev = core_step(state, SOCIALIZE, MARKS, AT_MARK, fund_mode="segmented")
    m = per_market(ev)
    np.testing.assert_array_equal(m["market_socialized_usd"][0], [0.0, 0.0])
    np.testing.assert_allclose(m["market_unrecovered_usd"][0], [0.0, 600.0], rtol=1e-12)
    assert ev.unrecovered_usd[0] == pytest.approx(600.0, rel=1e-12)
    check_rows(ev)


def test_the_funds_gap_against_its_promise_is_no_markets() -> None:
    """The fund said 1,400 but holds 1,000: the 400 it cannot pay is unrecovered, unattributed."""
    state = book([X, Y, P, Q], 1_000.0)
    ev = core_step(state, PARAMS, MARKS, AT_MARK, fund_available_usd=1_400.0)
    m = per_market(ev)
    np.testing.assert_allclose(m["market_fund_paid_usd"][0], [400.0, 1_000.0], rtol=1e-12)
    assert ev.shortfall_usd[0] == pytest.approx(1_000.0, rel=1e-12)
    assert ev.unrecovered_usd[0] == pytest.approx(400.0, rel=1e-12)
    np.testing.assert_array_equal(m["market_unrecovered_usd"][0], [0.0, 0.0])
    gap = m["market_fund_paid_usd"].sum(axis=1) - ev.shortfall_usd
    np.testing.assert_allclose(
        m["market_unrecovered_usd"].sum(axis=1) + gap, ev.unrecovered_usd, rtol=1e-12
    )


def test_set_on_the_cross_path_only() -> None:
    one = SimState.create([[50.0, 5_000.0]], [[10.0, -20.0]], [[100.0] * 2], 0.0)
    ev1 = core_step(one, PARAMS, np.array([80.0]), AT_MARK)
    assert ev1.n_liquidations[0] == 1
    for name in ("market_fund_paid_usd", *NEW_FIELDS):
        assert getattr(ev1, name) is None, name
    quiet = core_step(book([P, Q], 0.0), PARAMS, MARKS, AT_MARK)  # cross, nobody liquidated
    assert quiet.n_liquidations[0] == 0
    for name in ("market_fund_paid_usd", *NEW_FIELDS):
        assert getattr(quiet, name) is None, name
    ev = core_step(book([X, Y, P, Q], 1_400.0), PARAMS, MARKS, AT_MARK)
    copy = ev.copy()
    for name in NEW_FIELDS:
        orig, dup = getattr(ev, name), getattr(copy, name)
        np.testing.assert_array_equal(dup, orig)
        assert dup is not orig
        assert dup.shape == (1, 2)


def random_books(seed: int, segmented: bool) -> tuple[SimState, FloatArray]:
    """Three exchanges, twelve accounts, three markets near their margin.

    Accounts 0-7 are thin and hold markets 0 and 1 only; accounts 8-11 are well collateralised
    (three times their notional) and hold every market. So market 2 never has a liquidated leg, but
    its holders can be ADL counterparties and bearers in the other two.
    """
    rng = np.random.default_rng(seed)
    n_envs, n_acc, n_mk = 3, 12, 3
    entry = rng.uniform(50.0, 150.0, (n_envs, n_acc, n_mk))
    size = rng.normal(0.0, 10.0, (n_envs, n_acc, n_mk))
    size[rng.random((n_envs, n_acc, n_mk)) < 0.3] = 0.0
    size[:, :8, 2] = 0.0
    notional = (np.abs(size) * entry).sum(axis=2)
    coll = notional * rng.uniform(0.0, 0.3, (n_envs, n_acc))
    coll[:, 8:] = 3.0 * notional[:, 8:]
    marks = entry.mean(axis=1) * rng.uniform(0.7, 1.3, (n_envs, n_mk))
    if segmented:
        segments = rng.uniform(0.0, 300.0, (n_envs, 2))
        state = SimState.create(coll, size, entry, 0.0, fund_segments_usd=segments)
    else:
        state = SimState.create(coll, size, entry, rng.uniform(0.0, 500.0, n_envs))
    return state, marks


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@fuzz_engine(segmented=st.booleans(), capped=st.booleans())
def test_fuzzed_rows_sum_to_the_exchange_columns(
    seed: int,
    policy: str,
    social: str,
    max_frac: float,
    sequence: tuple[tuple[str, ...] | None, str],
    segmented: bool,
    capped: bool,
) -> None:
    params = fuzz_params(PARAMS, sequence, policy, social, max_frac)
    books = FUZZ_BOOKS
    state, marks = random_books(seed, segmented)
    eq, req = margin_state(state, params, marks)
    liquidated = (req > 0.0) & (eq < req)
    legs = (liquidated[:, :, None] & (state.size != 0.0)).any(axis=1)  # (E, M)
    caps = np.where(np.random.default_rng(seed + 1).random((3, 3)) < 0.5, 50.0, np.inf)
    ev = core_step(
        state,
        params,
        marks,
        books,
        fund_mode="segmented" if segmented else "shared",
        fund_groups=np.array([0, 1, 1]) if segmented else None,
        fund_cap_usd=caps if capped else None,
    )
    np.testing.assert_array_equal(ev.n_liquidations, liquidated.sum(axis=1))
    if ev.market_fund_paid_usd is None:  # nobody liquidated: none of them is set
        assert not liquidated.any()
        for name in NEW_FIELDS:
            assert getattr(ev, name) is None, name
        return
    m = per_market(ev)
    for name, arr in m.items():
        assert arr.shape == (3, 3), name
        assert np.isfinite(arr).all(), name
        np.testing.assert_array_equal(arr[~legs], 0.0, err_msg=name)
    assert not legs[:, 2].any()  # market 2's holders are never liquidated
    for name, column in (
        ("market_adl_volume_usd", ev.adl_volume_usd),
        ("market_adl_haircut_usd", ev.adl_haircut_usd),
        ("market_socialized_usd", ev.socialized_loss_usd),
    ):
        np.testing.assert_allclose(m[name].sum(axis=1), column, rtol=1e-12, atol=1e-9)
    assert (m["market_adl_volume_usd"] >= 0.0).all()
    assert (m["market_socialized_usd"] >= 0.0).all()
    # loss - charged: a charge's rounding can leave an ulp below zero, as in the column.
    assert (m["market_unrecovered_usd"] >= -1e-9).all()
    # The unrecovered rows leave out the funds' gap against what they were to pay (the
    # kernel's payments less what was booked as paid), which is no market's.
    gap = m["market_fund_paid_usd"].sum(axis=1) - ev.shortfall_usd
    np.testing.assert_allclose(
        m["market_unrecovered_usd"].sum(axis=1) + gap, ev.unrecovered_usd, rtol=1e-12, atol=1e-9
    )
    assert (m["market_unrecovered_usd"].sum(axis=1) <= ev.unrecovered_usd + 1e-9).all()
