"""BitMEX against Hyperliquid ADL on the same books: who closes, at what price, where money goes.

Why this file: the frontier (docs/frontier.md) puts ``adl_policy: hyperliquid`` on every front
point. These hand-worked books show what the two rules do to one liquidation, so that the
difference over an episode can be attributed: per event the two rules move the same base and
the same dollars, and only the *label* of the loss differs (a counterparty haircut under
``bitmex``, socialised loss under ``hyperliquid``).

**The books.** Mark 100, MMR 10% (IMR 20%), full closes, no liquidation fee, and a square-root
book whose depth gives exactly 10% slippage on the liquidated notional (the long sells at 90).
Equity = collateral + size x (100 - entry), leverage = |size| x 100 / equity. Two shorts are the
possible counterparties, in both books:

| acct | position | entry | collateral | equity | leverage | BitMEX score | HL index |
|---|---|---|---|---|---|---|---|
| X | short 10 | 200 | 1,000 | 2,000 | 0.5 | 100/200 x 0.5 = 0.25 | 200/100 x 0.5 = 1.0 |
| Y | short 10 | 105 | 450 | 500 | 2 | 5/105 x 2 = 0.095 | 105/100 x 2 = 2.1 |

Neither is liquidatable (2,000 and 500 >= 10% x 1,000). BitMEX's queue takes X first, Hyperliquid's
takes Y; both are eligible under both rules (X's equity covers any haircut here).

* **Underwater book** (``underwater``): A is long 10 from 110 with 50: bankruptcy 105, equity -50
  at the mark (Hyperliquid's own trigger, negative account value, fires). The fund holds 60.
* **Solvent book** (``solvent``): A is long 10 from 120 with 250: bankruptcy 95, equity +50 at the
  mark, below its 100 of maintenance margin, so liquidated. The fund holds 20. Hyperliquid's
  trigger would not fire here (the account value is positive); the simulator's does, because the
  book fill (90) is below bankruptcy and the fund cannot pay it all.

In both, A sells 10 at 90; the fund pays in full only if it can, and ADL takes the uncovered share
of the order: ``need = (1 - paid / bad) x 10``. The two rules receive the same ``need``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.state import SimState, ledger_total

MARK = 100.0
REL = 1e-12
ABS = 1e-9


def params(policy: str) -> RiskParams:
    """The books' risk parameters under ADL rule ``policy``."""
    return RiskParams(
        mmr=0.1,
        imr=0.2,
        liquidation_fee_rate=0.0,
        max_liquidation_fraction=1.0,
        min_liquidation_notional_usd=0.0,
        adl_policy=policy,  # type: ignore[arg-type]
    )


def book(entry_a: float, collateral_a: float, fund_usd: float) -> SimState:
    """Long A (10 units) against shorts X and Y (see the module table)."""
    return SimState.create(
        [[collateral_a, 1000.0, 450.0]],
        [[10.0, -10.0, -10.0]],
        [[entry_a, 200.0, 105.0]],
        fund_usd,
    )


def underwater() -> SimState:
    """A: long 10 from 110 with 50 (bankruptcy 105, equity -50); fund 60."""
    return book(110.0, 50.0, 60.0)


def solvent() -> SimState:
    """A: long 10 from 120 with 250 (bankruptcy 95, equity +50); fund 20."""
    return book(120.0, 250.0, 20.0)


def run(state: SimState, policy: str) -> dict[str, float]:
    """One step at the mark with 10% slippage; the events, the ledger checked unchanged."""
    before = float(ledger_total(state, [MARK])[0])
    ev = core_step(state, params(policy), np.array([MARK]), SqrtImpact.for_slippage(1000.0, 0.1))
    assert float(ledger_total(state, [MARK])[0]) == pytest.approx(before, rel=REL, abs=ABS)
    return {
        "adl": float(ev.adl_volume_usd[0]),
        "haircut": float(ev.adl_haircut_usd[0]),
        "overshoot": float(ev.adl_overshoot_usd[0]),
        "bad_debt": float(ev.bad_debt_usd[0]),
        "fund_paid": float(ev.shortfall_usd[0]),
        "socialised": float(ev.socialized_loss_usd[0]),
        "unrecovered": float(ev.unrecovered_usd[0]),
    }


def equity(state: SimState) -> np.ndarray:
    """Each account's equity at the mark."""
    q = state.size[0, :, 0]
    return np.asarray(state.collateral_usd[0] + q * (MARK - state.entry_price[0, :, 0]))


# ---- the underwater book: the mark is worse than A's bankruptcy price ----
#
# Bad debt 10 x (105 - 90) = 150; the fund pays its 60; uncovered 90; need = 0.6 x 10 = 6.
# The book takes 4 at 90: A realises 4 x (90 - 110) = -80; the book's buyer gains
# 4 x (100 - 90) = 40 at the mark. The fund pays the book part's bad debt, 4 x 15 = 60.


def test_underwater_bitmex_closes_x_at_bankruptcy_and_x_bears_the_deficit() -> None:
    # X closes 6 at 105: collateral 1,000 + 6 x (200 - 105) = 1,570; equity 1,570 + 4 x 100 =
    # 1,970: 30 below its 2,000, the haircut 6 x (105 - 100). A: 50 - 80 + 6 x (105 - 110) + 60
    # = 0. Where A's -50 at the mark and the book's 40 went: fund 60 + X's haircut 30 = 90.
    s = underwater()
    cp_size, cp_cash = s.counterparty_size[0, 0], s.counterparty_cash_usd[0]
    ev = run(s, "bitmex")
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1570.0, 450.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -4.0, -10.0], atol=1e-12)
    np.testing.assert_allclose(equity(s), [0.0, 1970.0, 500.0], atol=1e-9)
    assert s.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    # The book's buyer (the counterparty, long 10 against the accounts' net -10) takes 4 at 90.
    assert s.counterparty_size[0, 0] - cp_size == pytest.approx(4.0, rel=REL, abs=ABS)
    assert s.counterparty_cash_usd[0] - cp_cash == pytest.approx(-360.0, rel=REL, abs=ABS)
    assert ev == pytest.approx(
        {"adl": 630.0, "haircut": 30.0, "overshoot": 0.0, "bad_debt": 60.0, "fund_paid": 60.0,
         "socialised": 0.0, "unrecovered": 0.0},
        rel=REL, abs=ABS,
    )  # fmt: skip


def test_underwater_hyperliquid_closes_y_at_the_mark_and_socialises_the_deficit() -> None:
    # Y closes 6 at 100: collateral 450 + 6 x (105 - 100) = 480, equity unchanged at 500. A
    # receives 600 for units worth 630 at its bankruptcy price: a deficit of 30 that continues
    # down the waterfall (bad debt 60 + 30 = 90, of which the fund pays 60) and is socialised by
    # positive PnL after the close: X 1,000, Y 4 x 5 = 20 (total 1,020): X pays 30 x 1,000 / 1,020,
    # Y 30 x 20 / 1,020. A: 50 - 80 + (600 - 660) + 60 + 30 = 0. No overshoot: moving a unit from
    # the fill to the mark recovers 10 and 90 were uncovered, so 9 units were needed, 6 were moved.
    s = underwater()
    cp_size = s.counterparty_size[0, 0]
    ev = run(s, "hyperliquid")
    x_pays = 30.0 * 1000.0 / 1020.0
    y_pays = 30.0 * 20.0 / 1020.0
    np.testing.assert_allclose(
        s.collateral_usd[0], [0.0, 1000.0 - x_pays, 480.0 - y_pays], rtol=1e-12, atol=1e-9
    )
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -10.0, -4.0], atol=1e-12)
    assert s.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert s.counterparty_size[0, 0] - cp_size == pytest.approx(4.0, rel=REL, abs=ABS)
    assert ev == pytest.approx(
        {"adl": 600.0, "haircut": 0.0, "overshoot": 0.0, "bad_debt": 90.0, "fund_paid": 60.0,
         "socialised": 30.0, "unrecovered": 0.0},
        rel=REL, abs=ABS,
    )  # fmt: skip


def test_underwater_the_rules_move_the_same_base_and_the_same_dollars() -> None:
    # Same 6 units deleveraged; the 30 that X alone gives up under BitMEX (a haircut, outside
    # the solvency loss) is charged under Hyperliquid as socialised loss (inside it) to X and Y.
    # The dollar loss beyond the fund (socialised + unrecovered + haircut) is 30 under both, and
    # so is metrics' solvency_loss (socialised + unrecovered + ADL notional): 0 + 630 = 30 + 600.
    b = run(underwater(), "bitmex")
    h = run(underwater(), "hyperliquid")
    assert b["adl"] / 105.0 == pytest.approx(h["adl"] / MARK, rel=REL, abs=ABS)  # 6 units each
    assert b["haircut"] == pytest.approx(h["socialised"], rel=REL, abs=ABS)
    dollars_b = b["socialised"] + b["unrecovered"] + b["haircut"]
    dollars_h = h["socialised"] + h["unrecovered"] + h["haircut"]
    assert dollars_b == pytest.approx(dollars_h, rel=REL, abs=ABS) and dollars_b == pytest.approx(
        30.0
    )
    solvency_b = b["socialised"] + b["unrecovered"] + b["adl"]
    solvency_h = h["socialised"] + h["unrecovered"] + h["adl"]
    assert solvency_b == pytest.approx(
        solvency_h, rel=REL, abs=ABS
    ) and solvency_b == pytest.approx(630.0)
    # What the insolvency termination counts (socialised + unrecovered): 0 against 30.
    assert b["socialised"] + b["unrecovered"] == 0.0
    assert h["socialised"] + h["unrecovered"] == pytest.approx(30.0, rel=REL, abs=ABS)


# ---- the solvent book: the mark is better than A's bankruptcy price ----
#
# Bad debt 10 x (95 - 90) = 50; the fund pays its 20; uncovered 30; need = 0.6 x 10 = 6.
# The book takes 4 at 90: A realises 4 x (90 - 120) = -120, the book's buyer gains 40; the fund
# pays the book part's bad debt, 4 x 5 = 20.


def test_solvent_bitmex_pays_x_below_the_mark() -> None:
    # X closes 6 at 95: collateral 1,000 + 6 x (200 - 95) = 1,630; equity 2,030, 30 above its
    # 2,000 (haircut -30: the bankruptcy price pays the counterparty). A: 250 - 120 +
    # 6 x (95 - 120) + 20 = 0. A's +50 at the mark and the fund's 20 went to X (30) and to the
    # book (40).
    s = solvent()
    ev = run(s, "bitmex")
    np.testing.assert_allclose(s.collateral_usd[0], [0.0, 1630.0, 450.0], atol=1e-9)
    np.testing.assert_allclose(equity(s), [0.0, 2030.0, 500.0], atol=1e-9)
    assert ev == pytest.approx(
        {"adl": 570.0, "haircut": -30.0, "overshoot": 0.0, "bad_debt": 20.0, "fund_paid": 20.0,
         "socialised": 0.0, "unrecovered": 0.0},
        rel=REL, abs=ABS,
    )  # fmt: skip


def test_solvent_hyperliquid_deleverages_a_positive_account_which_keeps_a_surplus() -> None:
    # Y closes 6 at 100 (equity unchanged, 500). A receives 600 for units worth 570 at
    # bankruptcy: no deficit, and A ends with 250 - 120 + (600 - 720) + 20 = 30 in cash, its
    # position closed: the fund's 20 went to an account that ends solvent. Overshoot: 30 were
    # uncovered, a unit moved from the fill to the mark recovers 10, so 3 units were needed;
    # the other 3, at the mark, are 300. On the venue A (account value +50) would not have been
    # auto-deleveraged at all: Hyperliquid's trigger is a negative account value.
    s = solvent()
    ev = run(s, "hyperliquid")
    np.testing.assert_allclose(s.collateral_usd[0], [30.0, 1000.0, 480.0], atol=1e-9)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, -10.0, -4.0], atol=1e-12)
    np.testing.assert_allclose(equity(s), [30.0, 2000.0, 500.0], atol=1e-9)
    assert s.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert ev == pytest.approx(
        {"adl": 600.0, "haircut": 0.0, "overshoot": 300.0, "bad_debt": 20.0, "fund_paid": 20.0,
         "socialised": 0.0, "unrecovered": 0.0},
        rel=REL, abs=ABS,
    )  # fmt: skip


# ---- what ADL closed never reaches the book ----
#
# In both books A's order is 10 units at the book price 100, 1,000 of sell flow; ADL takes 6 of
# them against a counterparty, so only 4 reach the book: 400 of flow is what the tick's
# permanent impact may read. (Before this was fixed the whole 1,000 moved the price, and on one
# frontier seed a BitMEX-rule run's mark went from 239k to 91.7M in 18 ticks: docs/frontier.md.)


@pytest.mark.parametrize("policy", ["bitmex", "hyperliquid"])
@pytest.mark.parametrize("make", [underwater, solvent], ids=["underwater", "solvent"])
@pytest.mark.parametrize("mode", ["partial", "bitmex", "binance"])
def test_deleveraged_base_is_taken_off_the_flow_that_moves_the_price(
    policy: str, make: object, mode: str
) -> None:
    # The venue modes close the whole position in one order too here (no slices: 1,000 of
    # notional), and their fund pays what it can, so need = 6 in every mode.
    state = make()  # type: ignore[operator]
    p = dataclasses.replace(params(policy), liquidation_mode=mode)  # type: ignore[arg-type]
    ev = core_step(state, p, np.array([MARK]), SqrtImpact.for_slippage(1000.0, 0.1))
    # ADL closed 6 units: at the mark (600) or at bankruptcy (630 at 105, 570 at 95).
    expected_adl = {"hyperliquid": 600.0, "underwater": 630.0, "solvent": 570.0}
    key = "hyperliquid" if policy == "hyperliquid" else make.__name__  # type: ignore[attr-defined]
    assert float(ev.adl_volume_usd[0]) == pytest.approx(expected_adl[key], rel=REL)
    assert float(ev.liquidation_sell_usd[0]) == pytest.approx(400.0, rel=REL, abs=ABS)
    assert float(ev.liquidation_buy_usd[0]) == 0.0
