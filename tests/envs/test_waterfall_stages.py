"""The loss waterfall as a configurable sequence of stages (RiskParams.waterfall).

Hand-worked on one book: account 0 long 1 unit at 10,000 with 1,000 of collateral (bankruptcy
9,000), account 1 short 1 unit at 10,000 with 1,000 (in profit as the price falls). MMR 5%, fee
1% all to the fund, liquidators off. At oracle 8,900 with the square-root book's depth chosen
to slip the 8,900 order by 0.1% (:meth:`SqrtImpact.for_slippage`), account 0's
whole position fills at 8,891.1: 108.9 past bankruptcy. Account 1 (equity 2,100) is not
liquidatable and is the only counterparty for ADL or socialisation.
"""

import numpy as np
import pytest

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import (
    W_ADL_FIRST,
    W_NO_ADL,
    W_NO_FUND,
    W_NO_SOCIALIZE,
    W_NO_VAULT,
    WATERFALL_STAGES,
    RiskParams,
)
from fundgym.envs.core.step import core_step
from fundgym.envs.core.vault import V_ACTIVE, V_CAPITAL, V_CASH, V_PEAK
from fundgym.envs.state import SimState
from tests.books import assert_books_balance, worked_params

APPROX = {"rel": 1e-12, "abs": 1e-9}
DEPTH = SqrtImpact.for_slippage(8_900.0, 0.001).depth_usd_per_pct  # slips 8,900 by 0.1%


def params(mode="partial", **kw):
    """The hand-worked parameters with the whole fee to the fund and no outside liquidators."""
    base = dict(liquidation_fee_fund_share=1.0, liquidator_capacity_mult=0.0, liquidation_mode=mode)
    return worked_params(**{**base, **kw})


def book(fund=1_000.0):
    return SimState.create([[1_000.0, 1_000.0]], [[1.0, -1.0]], [[10_000.0, 10_000.0]], fund)


def step(state, p, mark=8_900.0, depth=DEPTH):
    m = np.array([mark])
    ev = core_step(state, p, m, SqrtImpact(depth))
    assert_books_balance(state, m)
    return ev


def test_codes_of_the_sequences():
    assert RiskParams().stages == WATERFALL_STAGES
    assert RiskParams().waterfall_code == 0  # the default: fund, then ADL
    assert RiskParams(fallback="socialize").waterfall_code == W_NO_ADL
    seq = ("margin", "book", "adl", "fund", "exchange")
    assert RiskParams(waterfall=seq).waterfall_code == W_ADL_FIRST | W_NO_SOCIALIZE | W_NO_VAULT
    seq = ("margin", "book", "vault", "socialize", "exchange")
    assert RiskParams(waterfall=seq, fallback="socialize").waterfall_code == W_NO_ADL | W_NO_FUND


@pytest.mark.parametrize(
    ("waterfall", "fallback", "match"),
    [
        (("margin", "book", "fund", "exchange"), "adl", "disagree"),
        (("book", "margin", "fund", "adl", "exchange"), "adl", "must start"),
        (("margin", "book", "fund", "adl"), "adl", "end with 'exchange'"),
        (("margin", "book", "fund", "vault", "adl", "exchange"), "adl", "right after 'book'"),
        (("margin", "book", "socialize", "fund", "exchange"), "socialize", "after 'fund'"),
        (("margin", "book", "fund", "fund", "adl", "exchange"), "adl", "twice"),
        (("margin", "book", "insurance", "exchange"), "socialize", "unknown stage"),
    ],
)
def test_bad_sequences_are_named(waterfall, fallback, match):
    with pytest.raises(ValueError, match=match):
        RiskParams(waterfall=waterfall, fallback=fallback)


def test_adl_before_the_fund_is_refused_under_dydx_v4():
    with pytest.raises(ValueError, match="dydx_v4"):
        params("dydx_v4", waterfall=("margin", "book", "adl", "fund", "exchange"))


def test_default_order_the_fund_pays_and_nobody_is_deleveraged():
    s = book()
    ev = step(s, params())
    assert ev.shortfall_usd[0] == pytest.approx(108.9, **APPROX)
    assert ev.adl_volume_usd[0] == 0.0
    assert s.fund_usd[0] == pytest.approx(891.1, **APPROX)


@pytest.mark.parametrize("mode", ["partial", "binance", "hyperliquid", "bitmex"])
def test_adl_first_deleverages_the_deficient_order_and_spares_the_fund(mode):
    # ADL before the fund: the whole deficient order closes against account 1 at account 0's
    # bankruptcy price, 9,000: account 0 ends at zero, account 1 realises 10,000 - 9,000 =
    # 1,000 (it gives up 100 of its 1,100 at the oracle: the haircut) and the fund pays
    # nothing. (Under binance, bitmex and hyperliquid the deficient account is a takeover;
    # the deleveraged part is the same.)
    s = book()
    p = params(mode, waterfall=("margin", "book", "adl", "fund", "socialize", "exchange"))
    ev = step(s, p)
    assert ev.adl_volume_usd[0] == pytest.approx(9_000.0, **APPROX)
    assert ev.adl_haircut_usd[0] == pytest.approx(100.0, **APPROX)
    assert ev.shortfall_usd[0] == 0.0
    assert s.fund_usd[0] == pytest.approx(1_000.0, **APPROX)
    assert s.size[0, 0, 0] == 0.0 and s.size[0, 1, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert s.collateral_usd[0, 1] == pytest.approx(2_000.0, **APPROX)


def test_without_the_fund_the_loss_is_socialised():
    # No fund stage: the 108.9 goes to socialisation, charged to account 1's profit (1,100).
    s = book()
    p = params(fallback="socialize", waterfall=("margin", "book", "socialize", "exchange"))
    ev = step(s, p)
    assert ev.shortfall_usd[0] == 0.0
    assert ev.socialized_loss_usd[0] == pytest.approx(108.9, **APPROX)
    assert s.collateral_usd[0, 1] == pytest.approx(1_000.0 - 108.9, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1_000.0, **APPROX)


def test_without_socialisation_what_the_fund_cannot_pay_is_the_exchanges():
    # Fund 50, no ADL, no socialisation: it pays 50, the exchange absorbs 58.9.
    s = book(fund=50.0)
    p = params(fallback="socialize", waterfall=("margin", "book", "fund", "exchange"))
    ev = step(s, p)
    assert ev.shortfall_usd[0] == pytest.approx(50.0, **APPROX)
    assert ev.socialized_loss_usd[0] == 0.0
    assert ev.unrecovered_usd[0] == pytest.approx(58.9, **APPROX)
    assert s.collateral_usd[0, 1] == pytest.approx(1_000.0, **APPROX)


def test_a_sequence_without_the_vault_leaves_it_idle():
    # Under hyperliquid at 9,300 account 0 (equity 300, below 2/3 of 465) would go to a vault;
    # without the stage the fund's takeover closes it in the book and keeps 290.7.
    s = SimState.create([[1_000.0]], [[1.0]], [[10_000.0]], 1_000.0)
    v = s.vault
    v[0, V_CASH] = v[0, V_CAPITAL] = v[0, V_PEAK] = 5_000.0
    v[0, V_ACTIVE] = 1.0
    s.initial_total_usd += 5_000.0
    p = params("hyperliquid", waterfall=("margin", "book", "fund", "adl", "socialize", "exchange"))
    ev = step(s, p, mark=9_300.0, depth=SqrtImpact.for_slippage(9_300.0, 0.001).depth_usd_per_pct)
    assert ev.vault_takeovers[0] == 0 and s.vault[0, V_CASH] == 5_000.0
    assert s.fund_usd[0] == pytest.approx(1_290.7, **APPROX)
