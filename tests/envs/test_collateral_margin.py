"""Collateral assets in the cross-margin engine, worked by hand (issue 17).

**The books.** BTC (one market unless said), flat MMR 5%, full closes
(``max_liquidation_fraction`` 1), liquidation fee 1.5% all to the fund, fills 1% off the book
(:class:`FixedSlippage`: sells at ``book x 0.99``). One collateral asset, USDe-like, haircut
10%, redemption value 1.00. Equity = USD + units x price x (1 - haircut) + size x (mark -
entry); requirement = 5% x |size| x mark.

**1. Equity and requirement.** ``X``: USD 1,000, 10,000 USDe, BTC long 2 from 50,000, at a
mark of 48,000 and USDe at 1.00:

| line | value |
|---|---|
| USDe ``10,000 x 1.00 x 0.9`` | 9,000 |
| unrealised PnL ``2 x (48,000 - 50,000)`` | -4,000 |
| equity ``1,000 + 9,000 - 4,000`` | 6,000 |
| requirement ``5% x 2 x 48,000`` | 4,800: not liquidatable |

**2. A depeg, no move in the position's price.** Same mark; USDe 1.00 -> 0.66 (10 Oct's
$0.6567 on Binance's book, rounded):

| line | ``X`` | ``Y`` (USD 0, 10,000 USDe, BTC long 1 from 50,000, mark 44,000) |
|---|---|---|
| before: equity / requirement | 6,000 / 4,800 | 9,000 - 6,000 = 3,000 / 2,200 |
| after: USDe ``10,000 x 0.66 x 0.9`` | 5,940 | 5,940 |
| after: equity / requirement | 2,940 / 4,800: liquidatable | -60 / 2,200: liquidatable |
| seized at the venue's price | 6,600 | 6,600 |
| fetched (USD collateral after) | 5,940 (6,940) | 5,940 (5,940) |
| haircut to the counterparty's cash | 660 | 660 |
| depeg loss ``10,000 x 1.00 - 5,940`` | 4,060 | 4,060 |
| bankruptcy price ``e - c / q`` | 50,000 - 6,940 / 2 = 46,530 | 50,000 - 5,940 = 44,060 |
| fill ``mark x 0.99`` | 47,520 | 43,560 |
| fee ``min(1.5% x N, surplus)`` | min(1,425.6, 1,980) = 1,425.6 | 0 |
| bad debt | 0 | 44,060 - 43,560 = 500 (the fund pays it) |
| USD after | 6,940 - 4,960 - 1,425.6 = 554.4 | 5,940 - 6,440 + 500 = 0 |

``Y``'s bad debt is what a USD account of 5,940 with the same position makes at the same
mark: the depeg is a price move of the collateral.

**3. Book versus index** (two exchanges of one batch, the same accounts ``X`` and ``W``: USD
2,000, 1,000 USDe, BTC long 1 from 50,000; mark 48,000). Exchange 0 marks USDe on the venue's
own thin book (0.6567), exchange 1 on an index (0.97):

| at USDe price ``p`` | book 0.6567 | index 0.97 |
|---|---|---|
| ``X`` equity ``1,000 + 10,000 x p x 0.9 - 4,000`` | 2,910.3 < 4,800: liq. | 5,730 >= 4,800 |
| ``W`` equity ``2,000 + 1,000 x p x 0.9 - 2,000`` | 591.03 < 2,400: liq. | 873 < 2,400: liq. |
| seized | 6,567 + 656.7 = 7,223.7 | 970 |
| depeg loss ``units - units x p x 0.9`` | 4,089.7 + 408.97 = 4,498.67 | 127 |

**4. Fuzzed books** (hypothesis): the step conserves the ledger read at the venue's price,
the fund stays >= 0, seized accounts hold no units, and a state whose assets nobody holds
steps as the USD-only state, bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.impact import SqrtImpact, market_books
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step, margin_state
from fundgym.envs.state import SimState, ledger_error, ledger_total
from tests.books import FixedSlippage

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

PARAMS = RiskParams(
    mmr=0.05,
    imr=0.1,
    liquidation_fee_rate=0.015,
    max_liquidation_fraction=1.0,
    min_liquidation_notional_usd=0.0,
)
HAIRCUT = np.array([0.1])
REDEMPTION = np.array([1.0])


BOOK = FixedSlippage(0.01)


def accounts(
    rows: list[tuple[float, float, float, float]], fund_usd: float, px: float, n_envs: int = 1
) -> SimState:
    """``n_envs`` copies of one BTC exchange: rows of (USD, USDe units, BTC size, BTC entry)."""
    coll = [[r[0] for r in rows]] * n_envs
    units = [[[r[1]] for r in rows]] * n_envs
    size = [[[r[2]] for r in rows]] * n_envs
    entry = [[[r[3]] for r in rows]] * n_envs
    return SimState.create(coll, size, entry, fund_usd, units, [px])


X = (1_000.0, 10_000.0, 2.0, 50_000.0)
Y = (0.0, 10_000.0, 1.0, 50_000.0)
W = (2_000.0, 1_000.0, 1.0, 50_000.0)


def test_equity_and_requirement_count_the_haircut_value() -> None:
    state = accounts([X], 0.0, 1.0)
    eq, req = margin_state(
        state, PARAMS, np.array([48_000.0]), collateral_price=[1.0], collateral_haircut=HAIRCUT
    )
    assert eq[0, 0] == pytest.approx(6_000.0, rel=1e-12)
    assert req[0, 0] == pytest.approx(4_800.0, rel=1e-12)
    ev = core_step(
        state,
        PARAMS,
        np.array([48_000.0]),
        BOOK,
        collateral_price=[1.0],
        collateral_haircut=HAIRCUT,
    )
    assert ev.n_liquidations[0] == 0
    assert ev.collateral_seized_usd is not None and ev.collateral_seized_usd[0] == 0.0
    assert state.collateral_units[0, 0, 0] == 10_000.0


def test_depeg_makes_cross_account_liquidatable_with_no_price_move() -> None:
    mark = np.array([48_000.0])
    before = accounts([X], 0.0, 1.0)
    ev0 = core_step(before, PARAMS, mark, BOOK, collateral_price=[1.0], collateral_haircut=HAIRCUT)
    assert ev0.n_liquidations[0] == 0

    state = accounts([X], 0.0, 0.66)
    eq, _ = margin_state(state, PARAMS, mark, collateral_price=[0.66], collateral_haircut=HAIRCUT)
    assert eq[0, 0] == pytest.approx(2_940.0, rel=1e-12)
    cash_before = state.counterparty_cash_usd[0]
    ev = core_step(
        state,
        PARAMS,
        mark,
        BOOK,
        collateral_price=[0.66],
        collateral_haircut=HAIRCUT,
        collateral_redemption_price=REDEMPTION,
    )
    assert ev.n_liquidations[0] == 1
    assert state.size[0, 0, 0] == 0.0  # the leg closed
    assert state.collateral_units[0, 0, 0] == 0.0  # the collateral seized
    assert ev.collateral_seized_usd is not None and ev.collateral_depeg_loss_usd is not None
    assert ev.collateral_seized_usd[0] == pytest.approx(6_600.0, rel=1e-12)
    assert ev.collateral_depeg_loss_usd[0] == pytest.approx(4_060.0, rel=1e-12)
    assert ev.liquidation_fees_usd[0] == pytest.approx(1_425.6, rel=1e-12)
    assert ev.bad_debt_usd[0] == 0.0
    assert state.collateral_usd[0, 0] == pytest.approx(554.4, rel=1e-9)
    # The counterparty bought 2 BTC at 47,520 and got the 660 haircut on the USDe.
    assert state.counterparty_cash_usd[0] - cash_before == pytest.approx(
        660.0 - 2.0 * 47_520.0, rel=1e-12
    )
    assert ledger_error(state, mark, [0.66])[0] == pytest.approx(0.0, abs=1e-8)


def test_depeg_below_zero_is_bad_debt_as_a_price_move() -> None:
    mark = np.array([44_000.0])
    before = accounts([Y], 1_000.0, 1.0)
    ev0 = core_step(before, PARAMS, mark, BOOK, collateral_price=[1.0], collateral_haircut=HAIRCUT)
    assert ev0.n_liquidations[0] == 0  # 3,000 >= 2,200
    assert before.collateral_units[0, 0, 0] == 10_000.0

    state = accounts([Y], 1_000.0, 0.66)
    ev = core_step(
        state,
        PARAMS,
        mark,
        BOOK,
        collateral_price=[0.66],
        collateral_haircut=HAIRCUT,
        collateral_redemption_price=REDEMPTION,
    )
    assert ev.n_liquidations[0] == 1
    assert ev.n_liquidations_below_bankruptcy[0] == 1
    assert ev.bad_debt_usd[0] == pytest.approx(500.0, rel=1e-9)
    assert ev.shortfall_usd[0] == pytest.approx(500.0, rel=1e-9)
    assert state.fund_usd[0] == pytest.approx(500.0, rel=1e-9)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ledger_error(state, mark, [0.66])[0] == pytest.approx(0.0, abs=1e-8)
    # The same loss as a USD account of what the USDe fetched, at the same mark.
    twin = SimState.create([[5_940.0]], [[[1.0]]], [[[50_000.0]]], 1_000.0)
    ev_usd = core_step(twin, PARAMS, mark, BOOK)
    assert ev.bad_debt_usd[0] == pytest.approx(ev_usd.bad_debt_usd[0], rel=1e-9)


def test_book_price_liquidates_where_the_index_does_not() -> None:
    mark = np.array([48_000.0, 48_000.0])
    px = np.array([[0.6567], [0.97]])  # exchange 0 on its own book, exchange 1 on an index
    state = accounts([X, W], 0.0, 1.0, n_envs=2)
    ev = core_step(
        state,
        PARAMS,
        mark,
        BOOK,
        collateral_price=px,
        collateral_haircut=HAIRCUT,
        collateral_redemption_price=REDEMPTION,
    )
    assert ev.collateral_seized_usd is not None and ev.collateral_depeg_loss_usd is not None
    assert list(ev.n_liquidations) == [2, 1]
    assert state.collateral_units[0, :, 0].tolist() == [0.0, 0.0]
    assert state.collateral_units[1, :, 0].tolist() == [10_000.0, 0.0]  # X kept its USDe
    assert state.size[1, 0, 0] == 2.0
    np.testing.assert_allclose(ev.collateral_seized_usd, [7_223.7, 970.0], rtol=1e-12)
    np.testing.assert_allclose(ev.collateral_depeg_loss_usd, [4_498.67, 127.0], rtol=1e-12)


def test_refuses_bad_collateral_terms() -> None:
    mark = np.array([48_000.0])
    with pytest.raises(ValueError, match="collateral_price is required"):
        core_step(accounts([X], 0.0, 1.0), PARAMS, mark, BOOK)
    with pytest.raises(ValueError, match=r"collateral_price must be finite and > 0.*-0\.5"):
        core_step(accounts([X], 0.0, 1.0), PARAMS, mark, BOOK, collateral_price=[-0.5])
    with pytest.raises(ValueError, match=r"collateral_haircut must be finite and in \[0, 1\)"):
        core_step(
            accounts([X], 0.0, 1.0), PARAMS, mark, BOOK, collateral_price=[1.0],
            collateral_haircut=[1.0],
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"collateral_haircut must be \(n_envs, n_assets\)"):
        core_step(
            accounts([X], 0.0, 1.0), PARAMS, mark, BOOK, collateral_price=[1.0],
            collateral_haircut=[0.1, 0.2],
        )  # fmt: skip
    with pytest.raises(ValueError, match="collateral_redemption_price"):
        core_step(
            accounts([X], 0.0, 1.0), PARAMS, mark, BOOK, collateral_price=[1.0],
            collateral_redemption_price=[np.nan],
        )  # fmt: skip
    with pytest.raises(ValueError, match="collateral_units must be finite and >= 0"):
        SimState.create([[0.0]], [[[1.0]]], [[[1.0]]], 0.0, [[[-1.0]]])
    with pytest.raises(ValueError, match="collateral_px is required"):
        ledger_total(accounts([X], 0.0, 1.0), mark)
    # Every venue mode runs with collateral assets (dYdX v4's too, since 2026-12-02).
    venue = dataclasses.replace(PARAMS, liquidation_mode="dydx_v4")
    state = accounts([X], 0.0, 1.0)
    ev = core_step(state, venue, mark, SqrtImpact(), collateral_price=[1.0])
    assert np.isfinite(ev.liquidation_volume_usd).all()
    assert ledger_error(state, mark, np.array([[1.0]]))[0] == pytest.approx(0.0, abs=1e-6)


def random_books(
    seed: int, n_envs: int, n_acc: int, n_mk: int, n_assets: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Books near their margin with collateral assets: (usd, units, size, entry, fund, marks)."""
    rng = np.random.default_rng(seed)
    entry = rng.uniform(50.0, 150.0, (n_envs, n_acc, n_mk))
    size = rng.normal(0.0, 10.0, (n_envs, n_acc, n_mk))
    size[rng.random((n_envs, n_acc, n_mk)) < 0.3] = 0.0
    notional = (np.abs(size) * entry).sum(axis=2)
    coll = notional * rng.uniform(-0.05, 0.15, (n_envs, n_acc))
    units = notional[:, :, None] * rng.uniform(0.0, 0.15, (n_envs, n_acc, n_assets))
    units[rng.random((n_envs, n_acc, n_assets)) < 0.4] = 0.0
    fund = rng.uniform(0.0, 500.0, n_envs)
    marks = entry.mean(axis=1) * rng.uniform(0.8, 1.2, (n_envs, n_mk))
    return coll, units, np.where(size == 0.0, 0.0, size), entry, fund, marks


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_mk=st.sampled_from((1, 2)),
    policy=st.sampled_from(("bitmex", "hyperliquid", "drift")),
    fallback=st.sampled_from(("adl", "socialize")),
    max_frac=st.sampled_from((0.25, 1.0)),
)
def test_fuzzed_depegs_conserve_the_ledger(
    seed: int, n_mk: int, policy: str, fallback: str, max_frac: float
) -> None:
    params = dataclasses.replace(
        PARAMS,
        fallback=fallback,  # type: ignore[arg-type]
        adl_policy=policy,  # type: ignore[arg-type]
        max_liquidation_fraction=max_frac,
        min_liquidation_notional_usd=100.0,
    )
    coll, units, size, entry, fund, marks = random_books(seed, 3, 12, n_mk, 2)
    rng = np.random.default_rng(seed + 1)
    px = np.where(rng.random((3, 2)) < 0.5, rng.uniform(0.3, 1.0, (3, 2)), 1.0)  # random depegs
    haircut = rng.uniform(0.0, 0.3, 2)
    state = SimState.create(coll, size, entry, fund, units, px)
    books = market_books(SqrtImpact(2e4), [1.0, 0.3][:n_mk])
    ev = core_step(
        state, params, marks, books, collateral_price=px, collateral_haircut=haircut,
        collateral_redemption_price=1.0,
    )  # fmt: skip
    scale = float(np.abs(size).sum() * marks.max() + np.abs(coll).sum() + units.sum())
    assert np.abs(ledger_error(state, marks, px)).max() <= 1e-12 * scale
    assert (state.fund_usd >= 0.0).all()
    assert ev.collateral_seized_usd is not None
    # Each account keeps all its units or, liquidated, none; seized value is their worth.
    kept = (state.collateral_units == units).all(axis=2)
    gone = (state.collateral_units == 0.0).all(axis=2)
    assert (kept | gone).all()
    taken = ~kept
    assert (taken.sum(axis=1) <= ev.n_liquidations).all()
    worth = ((units * px[:, None, :]).sum(axis=2) * taken).sum(axis=1)
    np.testing.assert_allclose(ev.collateral_seized_usd, worth, rtol=1e-12)
    # Assets nobody holds: the USD-only state's step, bit for bit (two markets).
    size2 = np.concatenate([size[:, :, :1], size[:, :, :1]], axis=2)
    entry2 = np.concatenate([entry[:, :, :1], entry[:, :, :1]], axis=2)
    usd_only = SimState.create(coll, size2, entry2, fund)
    none_held = SimState.create(
        coll, usd_only.size, usd_only.entry_price, fund, np.zeros_like(units), px
    )
    marks2 = np.concatenate([marks[:, :1], marks[:, :1] * 0.9], axis=1)
    books2 = market_books(SqrtImpact(2e4), [1.0, 0.3])
    ev_usd = core_step(usd_only, params, marks2, books2)
    ev_none = core_step(
        none_held, params, marks2, books2, collateral_price=px, collateral_haircut=haircut
    )
    np.testing.assert_array_equal(ev_none.data, ev_usd.data)
    np.testing.assert_array_equal(none_held.collateral_usd, usd_only.collateral_usd)
    np.testing.assert_array_equal(none_held.size, usd_only.size)
    np.testing.assert_array_equal(none_held.counterparty_cash_usd, usd_only.counterparty_cash_usd)
