"""Per-market maintenance margin across markets (``core_step(..., market_mmr_mult=...)``), by hand.

**The books.** As ``tests/envs/test_cross_margin.py``: flat MMR 5%, full closes, liquidation
fee 1.5% all to the fund, fills from :class:`FixedSlippage`. Market ``j``'s position requires
``mult_j x 5% x |size| x mark``; an account is liquidatable when its equity is below the sum.

**1. The trigger** (account ``T``): collateral 700, BTC long 1 from 10,000 and ALT long 100
from 10, at BTC 10,000 and ALT 9. Equity ``700 + 0 - 100 = 600``.

| mult | BTC req | ALT req | requirement | liquidatable |
|---|---|---|---|---|
| (1, 1) | 500 | 45 | 545 | no: 600 >= 545 |
| (1, 3) | 500 | 135 | 635 | yes: 600 < 635 |

**2. Apportioning** (account ``A`` of test_cross_margin): collateral 800, BTC long 1 from
10,500, ETH short 10 from 1,000, at BTC 9,000 and ETH 900; equity 300. With mult (1, 3):

| quantity | BTC leg | ETH leg | account |
|---|---|---|---|
| unrealised PnL ``u_j`` | -1,500 | +1,000 | -500 |
| requirement ``req_j`` | 450 | 3 x 450 = 1,350 | 1,800 |
| share ``w_j`` | 1/4 | 3/4 | |
| equity apportioned | 75 | 225 | 300 |
| leg collateral ``c_j = w_j x 300 - u_j`` | 1,575 | -775 | 800 |
| bankruptcy price ``e - c_j / q`` | 10,500 - 1,575 = 8,925 | 1,000 - 77.5 = 922.5 | |

(mult (1, 1): 8,850 and 915.) Closing both at 8,925 and 922.5: ``800 - 1,575 + 775 = 0``, no
fee, no debt. Under mult (1, 1) the same fills are 75 better than BTC's 8,850 (fee 75) and
7.5 x 10 = 75 worse than ETH's 915 (bad debt 75, paid by the fund from that fee).

With 1% slippage (fills 8,910 and 909) under mult (1, 3): BTC is 15 below its 8,925 (bad
debt 15), ETH 13.5 x 10 = 135 better than 922.5 (fee 135 < cap 1.5% x 9,090 = 136.35); the
fund takes 135 and pays 15, ending at 120; the account ends at ``800 - 1,590 + 910 - 135 + 15
= 0``.

**3. One market, mult 3**: collateral 1,000, long 1 from 10,000 at 10,000. Requirement 500
(not liquidatable), times 3 = 1,500 (liquidatable). At a 1% fill (9,900), bankruptcy 9,000:
fee ``min(900, 148.5) = 148.5``, collateral after ``1,000 - 100 - 148.5 = 751.5``: what a
flat MMR of 15% gives on the one-market path.

**4. Fuzzed books**: ``None`` and explicit ones step bit for bit alike; ``(M,)`` and the same
row tiled to ``(E, M)`` alike; per-exchange rows step as each exchange alone; the ledger holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fundgym.envs.core.formulas import bankruptcy_price, cross_leg_collateral
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import MarginTiers
from fundgym.envs.core.step import core_step, margin_state, market_requirements
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


T = (700.0, 1.0, 10_000.0, 100.0, 10.0)
MARK_T = np.array([[10_000.0, 9.0]])
A = (800.0, 1.0, 10_500.0, -10.0, 1_000.0)
MARK_A = np.array([[9_000.0, 900.0]])


# ---- 1. the trigger ----


def test_alt_leg_needing_three_times_the_margin_triggers_liquidation() -> None:
    eq, req = margin_state(book([T], 0.0), PARAMS, MARK_T)
    assert (eq[0, 0], req[0, 0]) == pytest.approx((600.0, 545.0), rel=1e-12)
    eq, req = margin_state(book([T], 0.0), PARAMS, MARK_T, market_mmr_mult=[1.0, 3.0])
    assert (eq[0, 0], req[0, 0]) == pytest.approx((600.0, 635.0), rel=1e-12)
    np.testing.assert_allclose(
        market_requirements(book([T], 0.0), PARAMS, MARK_T, market_mmr_mult=[1.0, 3.0])[0, 0],
        [500.0, 135.0],
        rtol=1e-12,
    )

    calm = book([T], 0.0)
    ev = core_step(calm, PARAMS, MARK_T, FixedSlippage(0.01), market_mmr_mult=[1.0, 1.0])
    assert ev.n_liquidations[0] == 0
    np.testing.assert_array_equal(calm.size[0, 0], [1.0, 100.0])

    strict = book([T], 0.0)
    ev = core_step(strict, PARAMS, MARK_T, FixedSlippage(0.01), market_mmr_mult=[1.0, 3.0])
    assert ev.n_liquidations[0] == 1
    np.testing.assert_array_equal(strict.size[0, 0], [0.0, 0.0])  # both legs closed
    assert ledger_error(strict, MARK_T)[0] == pytest.approx(0.0, abs=1e-9)


def test_per_exchange_rows_set_each_exchanges_margin() -> None:
    """``(E, M)``: exchange 0 asks (1, 1) and keeps ``T``; exchange 1 asks (1, 3) and liquidates."""
    one = book([T], 0.0)
    state = SimState.create(
        np.repeat(one.collateral_usd, 2, axis=0),
        np.repeat(one.size, 2, axis=0),
        np.repeat(one.entry_price, 2, axis=0),
        np.zeros(2),
    )
    marks = np.repeat(MARK_T, 2, axis=0)
    mult = np.array([[1.0, 1.0], [1.0, 3.0]])
    _, req = margin_state(state, PARAMS, marks, market_mmr_mult=mult)
    np.testing.assert_allclose(req[:, 0], [545.0, 635.0], rtol=1e-12)
    ev = core_step(state, PARAMS, marks, FixedSlippage(0.01), market_mmr_mult=mult)
    np.testing.assert_array_equal(ev.n_liquidations, [0, 1])
    np.testing.assert_array_equal(state.size[:, 0], [[1.0, 100.0], [0.0, 0.0]])


# ---- 2. apportioning the account's equity across legs ----


def test_leg_collateral_apportioned_by_the_scaled_requirement() -> None:
    state = book([A], 0.0)
    req = market_requirements(state, PARAMS, MARK_A, market_mmr_mult=[1.0, 3.0])
    np.testing.assert_allclose(req[0, 0], [450.0, 1_350.0], rtol=1e-12)
    legs = cross_leg_collateral(800.0, state.size[0, 0], state.entry_price[0, 0], MARK_A[0], req)
    np.testing.assert_allclose(legs[0, 0], [1_575.0, -775.0], rtol=1e-12)
    assert legs[0, 0].sum() == pytest.approx(800.0, rel=1e-12)
    np.testing.assert_allclose(
        bankruptcy_price(legs[0, 0], state.size[0, 0], state.entry_price[0, 0]),
        [8_925.0, 922.5],
        rtol=1e-12,
    )


class AtPrices:
    """Fills at fixed prices: ``btc_px`` in the market marked above 1,000, else ``eth_px``."""

    def __init__(self, btc_px: float, eth_px: float) -> None:
        self.btc_px = btc_px
        self.eth_px = eth_px

    def fill_prices(
        self, mark: FloatArray, sell: FloatArray, buy: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The same price for both sides of a market."""
        px = np.where(mark > 1_000.0, self.btc_px, self.eth_px)
        return px, px


def test_closing_both_legs_at_their_scaled_bankruptcy_prices_leaves_zero() -> None:
    state = book([A], 0.0)
    ev = core_step(state, PARAMS, MARK_A, AtPrices(8_925.0, 922.5), market_mmr_mult=[1.0, 3.0])
    assert ev.n_liquidations[0] == 1
    assert ev.liquidation_fees_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert ev.bad_debt_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])

    # The same fills under equal multiples: BTC's leg pays a fee of 75, ETH's is 75 short.
    flat = book([A], 0.0)
    ev = core_step(flat, PARAMS, MARK_A, AtPrices(8_925.0, 922.5))
    assert ev.liquidation_fees_usd[0] == pytest.approx(75.0, rel=1e-12)
    assert ev.bad_debt_usd[0] == pytest.approx(75.0, rel=1e-12)
    assert ev.shortfall_usd[0] == pytest.approx(75.0, rel=1e-12)
    assert flat.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_slipped_fills_price_against_the_scaled_bankruptcy_prices() -> None:
    state = book([A], 0.0)
    ev = core_step(state, PARAMS, MARK_A, FixedSlippage(0.01), market_mmr_mult=[1.0, 3.0])
    assert ev.liquidation_fees_usd[0] == pytest.approx(135.0, rel=1e-12)
    assert ev.bad_debt_usd[0] == pytest.approx(15.0, rel=1e-12)
    assert ev.shortfall_usd[0] == pytest.approx(15.0, rel=1e-12)
    assert state.fund_usd[0] == pytest.approx(120.0, rel=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert ledger_error(state, MARK_A)[0] == pytest.approx(0.0, abs=1e-9)


# ---- 3. one market ----


def test_one_market_multiple_runs_the_cross_path() -> None:
    def one() -> SimState:
        return SimState.create([[1_000.0]], [[1.0]], [[10_000.0]], 0.0)

    mark = np.array([10_000.0])
    assert core_step(one(), PARAMS, mark, FixedSlippage(0.01)).n_liquidations[0] == 0
    state = one()
    ev = core_step(state, PARAMS, mark, FixedSlippage(0.01), market_mmr_mult=[3.0])
    assert ev.n_liquidations[0] == 1
    assert ev.liquidation_fees_usd[0] == pytest.approx(148.5, rel=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(751.5, rel=1e-12)
    # What a flat 15% MMR gives on the one-market path.
    flat = one()
    core_step(flat, dataclasses.replace(PARAMS, mmr=0.15, imr=0.2), mark, FixedSlippage(0.01))
    assert state.collateral_usd[0, 0] == pytest.approx(flat.collateral_usd[0, 0], rel=1e-12)

    # Ones keep the one-market path (and its venue modes); another multiple takes the cross
    # path, where every venue mode runs: dYdX's liquidates the account the 3x makes short.
    venue = dataclasses.replace(PARAMS, liquidation_mode="dydx_v4")
    assert core_step(one(), venue, mark, SqrtImpact(), market_mmr_mult=[1.0]).n_liquidations[0] == 0
    tripled = one()
    ev = core_step(tripled, venue, mark, SqrtImpact(), market_mmr_mult=[3.0])
    assert ev.n_liquidations[0] == 1 and 0.0 < tripled.size[0, 0, 0] < 1.0
    assert ledger_error(tripled, mark[:, None])[0] == pytest.approx(0.0, abs=1e-6)


# ---- 4. the default is today's step; shapes broadcast ----


def assert_same_step(a: SimState, b: SimState, ev_a: Any, ev_b: Any) -> None:
    """Two steps alike bit for bit: events, accounts, counterparty, fund."""
    np.testing.assert_array_equal(ev_a.data, ev_b.data)
    np.testing.assert_array_equal(ev_a.market_flow_usd, ev_b.market_flow_usd)
    np.testing.assert_array_equal(a.collateral_usd, b.collateral_usd)
    np.testing.assert_array_equal(a.size, b.size)
    np.testing.assert_array_equal(a.counterparty_size, b.counterparty_size)
    np.testing.assert_array_equal(a.counterparty_cash_usd, b.counterparty_cash_usd)
    np.testing.assert_array_equal(a.fund_usd, b.fund_usd)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@fuzz_engine()
def test_fuzzed_default_is_ones_and_rows_broadcast(
    seed: int,
    policy: str,
    social: str,
    max_frac: float,
    sequence: tuple[tuple[str, ...] | None, str],
) -> None:
    params = fuzz_params(PARAMS, sequence, policy, social, max_frac)
    books = FUZZ_BOOKS
    start, marks = random_books(seed, 3, 12, 3)
    n_envs, n_mk = start.n_envs, start.n_markets

    # None, ones (M,) and ones (E, M): today's step, bit for bit.
    default = start.copy()
    ev_default = core_step(default, params, marks, books)
    for ones in (np.ones(n_mk), np.ones((n_envs, n_mk))):
        state = start.copy()
        ev = core_step(state, params, marks, books, market_mmr_mult=ones)
        assert_same_step(state, default, ev, ev_default)
        eq, req = margin_state(start, params, marks, market_mmr_mult=ones)
        eq0, req0 = margin_state(start, params, marks)
        np.testing.assert_array_equal(eq, eq0)
        np.testing.assert_array_equal(req, req0)

    # A row (M,) steps as that row tiled to (E, M).
    row = np.random.default_rng(seed).uniform(0.5, 4.0, n_mk)
    by_row = start.copy()
    ev_row = core_step(by_row, params, marks, books, market_mmr_mult=row)
    tiled = start.copy()
    ev_tiled = core_step(tiled, params, marks, books, market_mmr_mult=np.tile(row, (n_envs, 1)))
    assert_same_step(by_row, tiled, ev_row, ev_tiled)
    scale = float(np.abs(start.size).sum() * marks.max() + np.abs(start.collateral_usd).sum())
    assert np.abs(ledger_error(by_row, marks)).max() <= 1e-12 * scale
    assert (by_row.fund_usd >= 0.0).all()

    # Per-exchange rows: exchange i of the batch is exchange i alone with its row.
    grid = np.random.default_rng(seed + 1).uniform(0.5, 4.0, (n_envs, n_mk))
    batch = start.copy()
    ev_batch = core_step(batch, params, marks, books, market_mmr_mult=grid)
    for i in range(n_envs):
        alone = start.take([i])
        ev_i = core_step(alone, params, marks[i : i + 1], books, market_mmr_mult=grid[i])
        np.testing.assert_array_equal(ev_i.data[0], ev_batch.data[i])
        np.testing.assert_array_equal(alone.collateral_usd[0], batch.collateral_usd[i])
        np.testing.assert_array_equal(alone.size[0], batch.size[i])


def test_margin_state_is_the_sum_of_market_requirements_under_tiers() -> None:
    start, marks = random_books(7, 2, 50, 3)
    tiers = MarginTiers.binance_btcusdt_2021()
    p = dataclasses.replace(PARAMS, mmr=np.array([0.004, 0.01]), imr=0.02, tiers=tiers)
    # Notionals large enough to cross brackets.
    state = SimState.create(
        start.collateral_usd * 1e3, start.size * 1e3, start.entry_price, start.fund_usd
    )
    mult = np.array([1.0, 2.0, 5.0])
    per_position = market_requirements(state, p, marks, market_mmr_mult=mult)
    base = market_requirements(state, p, marks)
    np.testing.assert_array_equal(per_position, base * mult)
    _, req = margin_state(state, p, marks, market_mmr_mult=mult)
    np.testing.assert_allclose(req, per_position.sum(axis=2), rtol=1e-13)
    # One market: the kernel's sum has one term, so each position's bits are the kernel's.
    one = SimState.create(
        state.collateral_usd, state.size[:, :, 2:], state.entry_price[:, :, 2:], state.fund_usd
    )
    _, req_one = margin_state(one, p, marks[:, 2], market_mmr_mult=[5.0])
    np.testing.assert_array_equal(
        req_one, market_requirements(one, p, marks[:, 2], market_mmr_mult=[5.0])[:, :, 0]
    )


# ---- validation ----


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, np.nan],
        [1.0, 0.0],
        [-1.0, 1.0],
        [1.0, np.inf],
        [1.0, 2.0, 3.0],  # (M + 1,)
        [[1.0, 1.0], [1.0, 1.0]],  # (E + 1, M)
        [[1.0], [1.0]],  # (M, 1)
        2.0,  # a scalar: the exchange's mmr is its own lever
    ],
)
def test_bad_multiples_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="market_mmr_mult") as info:
        core_step(book([A], 0.0), PARAMS, MARK_A, FixedSlippage(0.01), market_mmr_mult=bad)
    if np.shape(bad) == (2,):
        assert "finite and > 0" in str(info.value)
        assert repr(float(np.asarray(bad)[~(np.isfinite(bad) & (np.asarray(bad) > 0))][0])) in (
            str(info.value)
        )
    else:
        assert "got shape" in str(info.value)
    with pytest.raises(ValueError, match="market_mmr_mult"):
        margin_state(book([A], 0.0), PARAMS, MARK_A, market_mmr_mult=bad)


def test_bad_multiple_refused_on_the_one_market_path_too() -> None:
    state = SimState.create([[1_000.0]], [[1.0]], [[10_000.0]], 0.0)
    with pytest.raises(ValueError, match="market_mmr_mult"):
        core_step(state, PARAMS, np.array([10_000.0]), FixedSlippage(0.01), market_mmr_mult=[0.0])
