"""Hyperliquid's engine, its vault and its ADL across markets, worked by hand (issue 17).

**The books.** Two markets (0 and 1), USD collateral, flat MMR 5% (1.25% in the slice case),
``hyperliquid`` mode and ADL rule, fee 0.1% all to the fund. Books are square-root books 1e9
USD deep per 1%: fills sit a hair from the book price, and where a number depends on the fill
it is read from :func:`fundgym.envs.core.impact.book_price`, the formula every kernel uses.
One-minute ticks run 60 one-second checks; with no previous tick every check reads the
tick's price.

**1. The vault takes a cross account over, every leg at once.** ``V``: collateral 100, long 1
from 1,000 in market 0 and short 10 from 100 in market 1; the vault holds $10,000 of cash.

| at marks 960 / 100 | market 0 | market 1 | account |
|---|---|---|---|
| unrealised PnL | -40 | 0 | equity 60 |
| requirement 5% x notional | 48 | 50 | 98; 2/3 of it 65.3 |

Equity 60 lies in [0, 65.3): the backstop. The vault stays margined after it (equity 10,060 >=
5% x 1,960), so it takes both legs at the marks and the 60 of equity: cash ``10,000 + 60 -
(1 x 960 - 10 x 100) = 10,100``, inventory +1 and -10; the account ends flat at zero. The same
tick it unwinds both (a quarter of a 1e9 book allows it): it sells 1 at ``fill_0`` and buys back
10 at ``fill_1``: cash ``10,100 + fill_0 - 10 x fill_1``, about 10,060 (it kept the margin).

**2. An account below zero is deleveraged whole in both markets, at the mark.** ``N``:
collateral 50, long 1 from 1,000 (market 0) and long 10 from 100 (market 1); ``P``: collateral
1,000, short 2 from 1,000 in market 0; ``Q``: collateral 1,000, short 20 from 100 in market 1.
No vault and no fund.

| at marks 900 / 95 | market 0 | market 1 | account ``N`` |
|---|---|---|---|
| unrealised PnL ``u_j`` | -100 | -50 | equity -100 |
| requirement | 45 | 47.5 | 92.5 |
| leg collateral ``w_j E - u_j`` | 45/92.5 x -100 + 100 = 51.35 | 47.5/92.5 x -100 + 50 = -1.35 | |
| bankruptcy value of the leg | 1,000 - 51.35 = 948.65 | 1,000 + 1.35 = 1,001.35 | |

Below 2/3 of its requirement with no vault, every leg closes whole with no limit; its fill is
past bankruptcy, nobody pays, so ADL takes the whole leg: 1 against ``P`` and 10 against ``Q``,
at the marks (Hyperliquid's rule): ADL notional ``900 + 950 = 1,850``. Closed at the mark, each
leg falls short of its bankruptcy value by 48.65 and 51.35: 100, ``N``'s negative equity,
socialised in each market to its bearers (``P`` and ``Q``). ``N`` ends flat at zero.

**3. Hyperliquid slices a big leg.** ``S``: collateral 8,000, long 200 from 1,000 in market 0
($194k at 970) and long 10 from 100 in market 1; MMR 1.25%: equity ``8,000 - 6,000 = 2,000``
against ``1.25% x 195,000 = 2,437.5`` (2/3 of it 1,625): a market liquidation. In one
one-second check the big leg sends 20% (40 of 200: over $100k), the small one all of it.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.impact import SqrtImpact, book_price
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.vault import (
    V_ACTIVE,
    V_CAPITAL,
    V_CASH,
    V_PEAK,
    inventory_column,
    vault_width,
)
from fundgym.envs.markets_simulator import MarketsResult, MarketsSimulator
from fundgym.envs.scenarios import Scenario, scenario_from_dict
from fundgym.envs.state import SimState, ledger_error
from tests.multi_market import library_dict

HL = RiskParams(
    mmr=0.05,
    imr=0.1,
    liquidation_mode="hyperliquid",
    adl_policy="hyperliquid",
    liquidation_fee_rate=0.001,
    liquidation_fee_fund_share=1.0,
    liquidator_capacity_mult=0.0,
)
DEEP = [SqrtImpact(1e9), SqrtImpact(1e9)]


def _with_vault(state: SimState, cash: float) -> None:
    """Give exchange 0 an active vault holding ``cash`` (and count it in the ledger)."""
    state.vault[0, V_CASH] = cash
    state.vault[0, V_CAPITAL] = cash
    state.vault[0, V_PEAK] = cash
    state.vault[0, V_ACTIVE] = 1.0
    state.initial_total_usd[0] += cash


def test_the_vault_row_holds_one_inventory_column_per_market() -> None:
    assert vault_width(1) == 7 and vault_width(3) == 9
    assert [inventory_column(j) for j in range(3)] == [1, 7, 8]
    assert SimState.create([[0.0]], [[[0.0, 0.0, 0.0]]], [[[1.0] * 3]], 0.0).vault.shape == (1, 9)


def test_the_vault_takes_a_cross_account_over_with_every_leg_and_unwinds_each_market() -> None:
    state = SimState.create([[100.0]], [[[1.0, -10.0]]], [[[1_000.0, 100.0]]], 0.0)
    _with_vault(state, 10_000.0)
    marks = np.array([[960.0, 100.0]])
    ev = core_step(state, HL, marks, DEEP, book_price=marks, tick_minutes=1.0)
    assert ev.vault_takeovers[0] == 1
    assert ev.vault_takeover_usd[0] == pytest.approx(1_960.0, rel=1e-12)
    assert state.collateral_usd[0, 0] == 0.0
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])
    fill_0 = book_price(960.0, 960.0, 1e9, 0.9, -1.0)
    fill_1 = book_price(100.0, 1_000.0, 1e9, 0.9, 1.0)
    assert state.vault[0, V_CASH] == pytest.approx(10_100.0 + fill_0 - 10.0 * fill_1, rel=1e-12)
    assert state.vault[0, inventory_column(0)] == 0.0
    assert state.vault[0, inventory_column(1)] == 0.0
    assert ev.vault_unwind_usd[0] == pytest.approx(1_960.0, rel=1e-12)
    assert ev.market_flow_usd is not None
    np.testing.assert_allclose(ev.market_flow_usd[0], [[960.0, 0.0], [0.0, 1_000.0]])
    np.testing.assert_array_equal(state.counterparty_size[0], [-1.0 + 1.0, 10.0 - 10.0])
    assert ev.n_liquidations_below_bankruptcy[0] == 0 and ev.adl_volume_usd[0] == 0.0
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_an_exhausted_vault_leaves_the_account_to_the_backstop_and_adl() -> None:
    # The same account with a vault too small to stay margined after taking 1,960 of notional
    # at 5%: 10 + 60 < 98. The legs close whole into the books with no limit instead.
    state = SimState.create([[100.0]], [[[1.0, -10.0]]], [[[1_000.0, 100.0]]], 0.0)
    _with_vault(state, 10.0)
    marks = np.array([[960.0, 100.0]])
    ev = core_step(state, HL, marks, DEEP, book_price=marks, tick_minutes=1.0)
    assert ev.vault_takeovers[0] == 0
    assert ev.liquidation_volume_usd[0] == pytest.approx(1_960.0, rel=1e-6)
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])
    assert state.vault[0, V_CASH] == 10.0  # untouched
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_an_account_below_zero_is_deleveraged_whole_in_both_markets_at_the_mark() -> None:
    state = SimState.create(
        [[50.0, 1_000.0, 1_000.0]],
        [[[1.0, 10.0], [-2.0, 0.0], [0.0, -20.0]]],
        [[[1_000.0, 100.0], [1_000.0, 1.0], [1.0, 100.0]]],
        0.0,
    )
    marks = np.array([[900.0, 95.0]])
    ev = core_step(state, HL, marks, DEEP, book_price=marks, tick_minutes=1.0)
    assert ev.n_liquidations[0] == 1 and ev.n_liquidations_below_bankruptcy[0] == 1
    assert ev.adl_volume_usd[0] == pytest.approx(1_850.0, rel=1e-12)
    assert ev.market_adl_volume_usd is not None
    np.testing.assert_allclose(ev.market_adl_volume_usd[0], [900.0, 950.0], rtol=1e-12)
    np.testing.assert_array_equal(state.size[0, :, 0], [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(state.size[0, :, 1], [0.0, 0.0, -10.0])
    assert state.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    lost = ev.socialized_loss_usd[0] + ev.unrecovered_usd[0]
    assert lost == pytest.approx(100.0, rel=1e-9)  # N's negative equity
    assert ev.market_socialized_usd is not None and ev.market_unrecovered_usd is not None
    per_market = ev.market_socialized_usd[0] + ev.market_unrecovered_usd[0]
    np.testing.assert_allclose(per_market, [100 * 45 / 92.5, 100 * 47.5 / 92.5], rtol=1e-9)
    assert ev.liquidation_sell_usd[0] == 0.0  # all of it deleveraged: nothing reached a book
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_hyperliquid_slices_a_leg_over_100k_and_closes_a_small_one_whole() -> None:
    state = SimState.create([[8_000.0]], [[[200.0, 10.0]]], [[[1_000.0, 100.0]]], 1e6)
    marks = np.array([[970.0, 100.0]])
    risk = dataclasses.replace(HL, mmr=0.0125, imr=0.025)
    ev = core_step(state, risk, marks, DEEP, book_price=marks, tick_minutes=1.0 / 60.0)
    assert ev.n_liquidations[0] == 1
    np.testing.assert_allclose(state.size[0, 0], [160.0, 0.0], rtol=1e-12)
    assert ev.liquidation_sell_usd[0] == pytest.approx(40.0 * 970.0 + 10.0 * 100.0, rel=1e-12)
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-6)


def test_dydx_v4_is_still_refused_across_markets() -> None:
    state = SimState.create([[100.0]], [[[1.0, -10.0]]], [[[1_000.0, 100.0]]], 0.0)
    venue = dataclasses.replace(HL, liquidation_mode="dydx_v4", adl_policy="bitmex")
    with pytest.raises(NotImplementedError, match="dydx_v4"):
        core_step(state, venue, np.array([[960.0, 100.0]]), DEEP)


# ---- the simulator: twins, ledger, vault over real paths -------------------------------------


def _short(name: str, minutes: float) -> Scenario:
    data = library_dict(name)
    data["horizon_minutes"] = minutes
    return scenario_from_dict(data, f"{name}.yaml")


def _hl(sc: Scenario, **kw: Any) -> MarketsResult:
    return MarketsSimulator(
        sc, HL, fund_to_oi_frac=0.0, vault_to_oi_frac=0.02, n_accounts=300, **kw
    ).run()


def test_hyperliquid_across_markets_exchange_e_equals_its_single_twin() -> None:
    sc = _short("alt_contagion", 700.0)
    batch = _hl(sc, n_envs=2, seed=[21, 22])
    single = _hl(sc, n_envs=1, seed=22)
    for name in ("events", "mark_price", "open_interest_usd", "vault_equity_usd"):
        assert np.array_equal(getattr(batch, name)[:, 1], getattr(single, name)[:, 0]), name
    assert batch.event("n_liquidations").sum() > 0
    assert batch.event("vault_takeovers").sum() > 0  # the comparison saw the vault at work
    assert batch.max_ledger_error_usd < 1e-6
    pnl = batch.totals()["vault_pnl_usd"]
    np.testing.assert_allclose(pnl, batch.vault_equity_usd[-1] - batch.vault_capital_usd)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alt_move=st.floats(-0.9, 0.3),
    mode=st.sampled_from(["hyperliquid", "bitmex"]),
    fund=st.sampled_from(["shared", "segmented"]),
    vault=st.sampled_from([0.0, 0.005, 0.05]),
    transfer=st.sampled_from([0.0, 50.0, np.inf]),
    seed=st.integers(0, 10_000),
)
def test_fuzzed_venue_modes_conserve_money_keep_pots_and_vault_sane(
    alt_move: float, mode: str, fund: str, vault: float, transfer: float, seed: int
) -> None:
    data = copy.deepcopy(library_dict("alt_contagion"))
    data["horizon_minutes"] = 120
    alt = data["markets"][2]
    alt["idio_crash"] = {
        "start_minute": 30,
        "legs": [{"kind": "decline", "minutes": 10, "return_frac": alt_move, "shape": "linear"}],
    }
    alt["depth_collapses"][0]["start_minute"] = 30
    sc = scenario_from_dict(data, "fuzz.yaml")
    risk = dataclasses.replace(HL, liquidation_mode=mode)
    res = MarketsSimulator(
        sc, risk, n_envs=2, n_accounts=200, fund_to_oi_frac=0.005, vault_to_oi_frac=vault,
        fund_mode=fund, segment_transfer_cap_usd=transfer if fund == "segmented" else 0.0,
        seed=seed,
    ).run()  # fmt: skip
    assert res.max_ledger_error_usd < 1e-5  # the simulator also raises on any tick above it
    assert (res.fund_usd >= 0.0).all()
    assert np.isfinite(res.events).all() and np.isfinite(res.vault_equity_usd).all()
    assert (res.vault_equity_usd >= -1e-9).all()  # a vault below zero is closed, its loss passed on
    np.testing.assert_allclose(res.fund_transfer_usd.sum(axis=2), 0.0, atol=1e-9)
