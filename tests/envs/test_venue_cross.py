"""Hyperliquid's and dYdX v4's engines, the vault and ADL across markets, worked by hand (issue 17).

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

**4. dYdX v4: one order a block per subaccount, at its fillable price.** ``dydx_v4`` mode,
``bitmex`` ADL rule (closes at the bankruptcy price), otherwise as above. ``D``: collateral 100,
long 1 from 1,000 in market 0 and long 10 from 100 in market 1.

| at marks 960 / 98 | market 0 | market 1 | account ``D`` |
|---|---|---|---|
| unrealised PnL | -40 | -20 | equity 40 |
| requirement ``PMMR`` | 48 | 49 | ``TMMR`` 97 |
| order (10%, at least $1,000) | 1 (all: $960) | 10 (all: $980) | one a block |
| fillable price ``m - ABR 1.5 PMMR / q`` | ``960 - 0.5876 x 72 = 917.7`` | | ``ABR = 1 - 40/97`` |

Block 0 sends market 0's leg (the offset ``(account + block) mod 2`` is 0); it fills at the
deep book's 960 (above 917.7), a hair's impact aside. Market 1 waits for the next block, which
sends it. On a book 1 USD deep per 1% the fill falls far below 917.7: refused, and ``D``
(equity >= 0) keeps both positions for the next block.

``N`` of case 2 at marks 900 / 95 (equity -100; ``P`` and ``Q`` as there), no fund: block 0
sends leg 0 (1, ``FP = 900 - 1 x 1.5 x 45 = 832.5``); it would fill at 900 against its
bankruptcy value 948.65, a shortfall of 48.65 that the empty fund rejects. ``N`` is below zero,
so dYdX deleverages the whole position against ``P`` at the bankruptcy price: ADL notional
948.65, ``P``'s collateral ``1,000 + (1,000 - 948.65) = 1,051.35``, and ``N`` keeps leg 1 with
its apportioned collateral -1.35.
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
    V_SIZE,
    inventory_column,
    open_vault,
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
    # Nine columns of the vault itself (V_CASH .. V_LOSS_LIMIT_USD), then markets 1 .. M - 1.
    assert vault_width(1) == 9 and vault_width(3) == 11
    assert [inventory_column(j) for j in range(3)] == [1, 9, 10]
    assert SimState.create([[0.0]], [[[0.0, 0.0, 0.0]]], [[[1.0] * 3]], 0.0).vault.shape == (1, 11)


def test_a_vault_beyond_its_loss_limit_is_deleveraged_in_the_check_of_its_takeover() -> None:
    # Two markets, HL (MM 5%), flat paths. The vault (capital 10,000, loss limit 2%: 200)
    # bought 10 units of market 0 at 1,000 from W (short 10, collateral 3,000); L is long 10
    # of market 1 at 100 with collateral 20.
    #
    # | check at 950 / 100 | vault cash  | vault equity                 | what happens          |
    # |--------------------|-------------|------------------------------|-----------------------|
    # | before             | 0           | 10 x 950 = 9,500             |                       |
    # | L: equity 20 < 2/3 | -1,000 + 20 | -980 + 9,500 + 1,000 = 9,520 | takeover of L's leg   |
    # | of 5% x 1,000 = 33 | = -980      |                              |                       |
    # | 9,520 < 9,800      | 8,520       | 9,520 (unchanged at oracles) | ADL: 10 units of      |
    # |                    | + 1,000     |                              | market 0 against W at |
    # |                    | = 9,520     |                              | 950; market 1 has no  |
    # |                    |             |                              | account short: its 10 |
    # |                    |             |                              | units close against   |
    # |                    |             |                              | the counterparty      |
    # |                    |             |                              | (short 10) at 100     |
    #
    # W realises 10 x 50 = 500 (collateral 3,500, flat). The deep book could take L's leg for
    # less than its margin (20), so only the loss limit deleverages here.
    state = SimState.create(
        [[3_000.0, 20.0]], [[[-10.0, 0.0], [0.0, 10.0]]], [[[1_000.0, 100.0]] * 2], 0.0
    )
    state.counterparty_size[0, 0] -= 10.0
    state.counterparty_cash_usd[0] += 10_000.0
    open_vault(state.vault, 0, 10_000.0, 0.02)
    state.vault[0, V_CASH] -= 10_000.0
    state.vault[0, V_SIZE] = 10.0
    state.initial_total_usd[0] += 10_000.0
    marks = np.array([[950.0, 100.0]])
    ev = core_step(state, HL, marks, DEEP, book_price=marks, tick_minutes=1.0)
    assert ev.vault_takeovers[0] == 1
    assert ev.vault_adl_usd[0] == pytest.approx(10_500.0, rel=1e-12)
    np.testing.assert_allclose(ev.market_adl_volume_usd[0], [9_500.0, 1_000.0], rtol=1e-12)
    assert state.vault[0, V_SIZE] == 0.0
    np.testing.assert_allclose(state.size[0], [[0.0, 0.0], [0.0, 0.0]], atol=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(3_500.0, rel=1e-12)
    assert state.vault[0, inventory_column(1)] == 0.0  # deleveraged, not unwound
    assert state.vault[0, V_CASH] == pytest.approx(9_520.0, rel=1e-12)
    np.testing.assert_allclose(state.counterparty_size[0], [0.0, 0.0], atol=1e-12)
    assert ev.vault_unwind_usd[0] == 0.0
    assert abs(ledger_error(state, marks)[0]) <= 1e-9 * 20_000.0


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


DX = dataclasses.replace(HL, liquidation_mode="dydx_v4", adl_policy="bitmex")
BLOCK = 1.0 / 60.0  # one dYdX block a tick


def _d() -> SimState:
    return SimState.create([[100.0]], [[[1.0, 10.0]]], [[[1_000.0, 100.0]]], 0.0)


def test_dydx_v4_liquidates_one_position_a_block_per_subaccount() -> None:
    state = _d()
    marks = np.array([[960.0, 98.0]])
    ev = core_step(state, DX, marks, DEEP, book_price=marks, tick_minutes=BLOCK)
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 10.0])  # market 0's leg, whole
    fill_0 = book_price(960.0, 960.0, 1e9, 0.9, -1.0)
    assert ev.liquidation_sell_usd[0] == pytest.approx(960.0, rel=1e-12)
    fee_0 = 0.001 * fill_0  # the surplus over bankruptcy (19.8) is above the fee cap
    assert state.collateral_usd[0, 0] == pytest.approx(100.0 + fill_0 - 1_000.0 - fee_0, rel=1e-12)
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)
    ev = core_step(state, DX, marks, DEEP, book_price=marks, tick_minutes=BLOCK)
    np.testing.assert_array_equal(state.size[0, 0], [0.0, 0.0])  # the next block: market 1
    assert ev.liquidation_sell_usd[0] == pytest.approx(980.0, rel=1e-12)
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_dydx_v4_refuses_an_order_past_its_fillable_price_and_the_account_waits() -> None:
    state = _d()
    marks = np.array([[960.0, 98.0]])
    fill_0 = book_price(960.0, 960.0, 1.0, 0.9, -1.0)
    assert fill_0 < 960.0 - (1.0 - 40.0 / 97.0) * 1.5 * 48.0  # below the fillable price
    ev = core_step(
        state, DX, marks, [SqrtImpact(1.0), DEEP[1]], book_price=marks, tick_minutes=BLOCK
    )
    np.testing.assert_array_equal(state.size[0, 0], [1.0, 10.0])
    assert state.collateral_usd[0, 0] == 100.0
    assert ev.liquidation_volume_usd[0] == 0.0 and ev.adl_volume_usd[0] == 0.0


def test_dydx_v4_deleverages_the_whole_position_of_a_bankrupt_subaccount_at_bankruptcy() -> None:
    state = SimState.create(
        [[50.0, 1_000.0, 1_000.0]],
        [[[1.0, 10.0], [-2.0, 0.0], [0.0, -20.0]]],
        [[[1_000.0, 100.0], [1_000.0, 100.0], [1_000.0, 100.0]]],
        0.0,
    )
    marks = np.array([[900.0, 95.0]])
    ev = core_step(state, DX, marks, DEEP, book_price=marks, tick_minutes=BLOCK)
    alloc_0 = 45.0 / 92.5 * -100.0 + 100.0  # leg 0's collateral, 51.35
    assert ev.adl_volume_usd[0] == pytest.approx(1_000.0 - alloc_0, rel=1e-12)
    np.testing.assert_array_equal(state.size[0, :, 0], [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(state.size[0, :, 1], [10.0, 0.0, -20.0])  # leg 1 waits
    assert state.collateral_usd[0, 1] == pytest.approx(1_000.0 + alloc_0, rel=1e-12)
    assert state.collateral_usd[0, 0] == pytest.approx(50.0 - alloc_0, rel=1e-12)  # -1.35
    assert ev.liquidation_volume_usd[0] == pytest.approx(1_000.0 - alloc_0, rel=1e-12)
    assert ledger_error(state, marks)[0] == pytest.approx(0.0, abs=1e-9)


def test_dydx_v4_refuses_lending_between_fund_segments() -> None:
    state = SimState.create(
        [[100.0]], [[[1.0, 10.0]]], [[[1_000.0, 100.0]]], 0.0, fund_segments_usd=[10.0, 10.0]
    )
    marks = np.array([[960.0, 98.0]])
    with pytest.raises(NotImplementedError, match="dydx_v4"):
        core_step(state, DX, marks, DEEP, fund_mode="segmented", fund_transfer_cap_usd=5.0)
    core_step(state, DX, marks, DEEP, fund_mode="segmented", fund_transfer_cap_usd=0.0)  # forbidden
    sc = _short("alt_contagion", 700.0)
    with pytest.raises(ValueError, match=r"segment_transfer_cap_usd = 5\.0 with liquidation_mode"):
        MarketsSimulator(sc, DX, fund_mode="segmented", segment_transfer_cap_usd=5.0)


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


def test_dydx_v4_across_markets_exchange_e_equals_its_single_twin() -> None:
    sc = _short("alt_contagion", 700.0)

    def run(**kw: Any) -> MarketsResult:
        return MarketsSimulator(sc, DX, fund_to_oi_frac=0.001, n_accounts=300, **kw).run()

    batch = run(n_envs=2, seed=[21, 22])
    single = run(n_envs=1, seed=22)
    for name in ("events", "mark_price", "open_interest_usd", "fund_usd"):
        assert np.array_equal(getattr(batch, name)[:, 1], getattr(single, name)[:, 0]), name
    assert batch.event("n_liquidations").sum() > 0
    assert batch.max_ledger_error_usd < 1e-6


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alt_move=st.floats(-0.9, 0.3),
    mode=st.sampled_from(["hyperliquid", "bitmex", "dydx_v4"]),
    fund=st.sampled_from(["shared", "segmented"]),
    vault=st.sampled_from([0.0, 0.005, 0.05]),
    loss_limit=st.sampled_from([None, 0.0, 0.05, np.inf]),
    transfer=st.sampled_from([0.0, 50.0, np.inf]),
    seed=st.integers(0, 10_000),
    # (the fee's fund share, the outside liquidators' capacity): none paid, or paid
    liquidators=st.sampled_from([(1.0, 0.0), (0.5, 1.0), (0.0, 20.0)]),
)
def test_fuzzed_venue_modes_conserve_money_keep_pots_and_vault_sane(
    alt_move: float,
    mode: str,
    fund: str,
    vault: float,
    loss_limit: float | None,
    transfer: float,
    seed: int,
    liquidators: tuple[float, float],
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
    risk = dataclasses.replace(
        HL,
        liquidation_mode=mode,
        liquidation_fee_rate=0.01,
        liquidation_fee_fund_share=liquidators[0],
        liquidator_capacity_mult=liquidators[1],
    )
    lends = fund == "segmented" and mode != "dydx_v4"  # dYdX pays whole or rejects: no lending
    res = MarketsSimulator(
        sc, risk, n_envs=2, n_accounts=200, fund_to_oi_frac=0.005, vault_to_oi_frac=vault,
        vault_adl_loss_frac=loss_limit, fund_mode=fund,
        segment_transfer_cap_usd=transfer if lends else 0.0, seed=seed,
    ).run()  # fmt: skip
    assert res.max_ledger_error_usd < 1e-5  # the simulator also raises on any tick above it
    assert (res.fund_usd >= 0.0).all()
    assert np.isfinite(res.events).all() and np.isfinite(res.vault_equity_usd).all()
    assert (res.vault_equity_usd >= -1e-9).all()  # a vault below zero is closed, its loss passed on
    np.testing.assert_allclose(res.fund_transfer_usd.sum(axis=2), 0.0, atol=1e-9)
