"""Socialised loss cannot feed itself: properties of the margin engine's last resort.

Random books, an empty or small fund and a crash tick, under both conventions
(``profit_haircut`` and ``drift``) and both fallbacks (ADL leaves to socialisation whatever
it cannot place). After the tick:

* no account the engine did not liquidate ends below zero equity (bearers are capped at
  their equity, ADL counterparties must stay solvent);
* the total socialised never exceeds the loss it covers, and socialised + unrecovered is
  that loss (``bad_debt - shortfall``);
* under ``profit_haircut`` nobody is charged more than their unrealised profit, and an
  account without profit is never charged; dust positions are never charged;
* the engine's charges are exactly :func:`fundgym.envs.core.formulas.socialized_loss_shares` over
  the same bearers (one rule, two implementations).
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core import formulas
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step, margin_state
from fundgym.envs.state import SimState
from tests.books import assert_books_balance, ledger_scale

SIZES = st.one_of(
    st.just(0.0),
    st.sampled_from([1e-15, -1e-12, 1e-3]),  # dust and near-dust
    st.floats(-20.0, 20.0, allow_nan=False),
)


@st.composite
def crash_books(draw):
    n = draw(st.integers(2, 16))
    size = np.array(draw(st.lists(SIZES, min_size=n, max_size=n)))
    collateral = np.array(
        draw(st.lists(st.floats(-500.0, 5e4, allow_nan=False), min_size=n, max_size=n))
    )
    entry = np.array(draw(st.lists(st.floats(50.0, 200.0), min_size=n, max_size=n)))
    # Account 0 is a leveraged long that the crash makes bankrupt: a loss always exists.
    size[0], collateral[0], entry[0] = 10.0, 50.0, 100.0
    fund = draw(st.sampled_from([0.0, 1.0, 100.0]))
    params = RiskParams(
        mmr=draw(st.floats(0.001, 0.2)),
        imr=0.5,
        liquidation_fee_rate=draw(st.floats(0.0, 0.02)),
        max_liquidation_fraction=draw(st.sampled_from([0.25, 1.0])),
        min_liquidation_notional_usd=draw(st.sampled_from([0.0, 100.0])),
        fallback=draw(st.sampled_from(["adl", "socialize"])),
        socialization=draw(st.sampled_from(["profit_haircut", "drift"])),
    )
    mark = draw(st.floats(40.0, 160.0))
    depth = draw(st.sampled_from([1e-3, 10.0, 1e4]))
    return SimState.create(collateral, size, entry, fund), params, mark, depth


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=crash_books())
def test_socialisation_properties(case):
    state, params, mark, depth = case
    m = np.array([mark])
    eq0, req0 = margin_state(state, params, m)
    liquidated = (req0 > 0.0) & (eq0 < req0)
    before = state.copy()
    ev = core_step(state, params, m, SqrtImpact(depth))
    scale = ledger_scale(state, m)[0]
    tol = 1e-9 * scale
    assert_books_balance(state, m)

    loss = ev.bad_debt_usd[0] - ev.shortfall_usd[0]
    assert ev.socialized_loss_usd[0] <= loss + tol
    assert abs(ev.socialized_loss_usd[0] + ev.unrecovered_usd[0] - loss) <= tol
    assert ev.socialized_loss_usd[0] >= 0.0 and ev.unrecovered_usd[0] >= -tol

    # Nobody it did not liquidate ends below zero (an account with no position can start
    # there, with negative collateral; it must not get worse).
    eq1, _ = margin_state(state, params, m)
    floor = np.minimum(eq0, 0.0) - tol
    assert np.all(eq1[~liquidated] >= floor[~liquidated]), eq1[~liquidated]

    if params.fallback != "socialize":
        return
    # Without ADL nobody but the liquidated is touched, except by the socialised charge.
    charge = (before.collateral_usd - state.collateral_usd)[0]
    bearer = ~liquidated[0]
    q = before.size[0, :, 0]
    upnl = q * (mark - before.entry_price[0, :, 0])
    assert np.all(charge[bearer] >= 0.0)
    dust = np.abs(q) * mark < formulas.DUST_NOTIONAL_USD
    assert np.all(charge[bearer & dust] == 0.0)
    if params.socialization == "profit_haircut":
        assert np.all(charge[bearer] <= np.maximum(upnl[bearer], 0.0) + tol)
    expected = formulas.socialized_loss_shares(
        loss,
        np.where(bearer, q, 0.0),
        np.where(bearer, upnl, 0.0),
        eq0[0],
        params.socialization,
        mark,
    )
    np.testing.assert_allclose(charge[bearer], expected[bearer], rtol=1e-12, atol=tol)


def test_a_loss_larger_than_every_bearer_is_mostly_unrecovered():
    # The old convention charged every non-liquidated account, bankrupt or not, and let the
    # charge take it below zero; a $1e6 loss on a book with $150 of bearer equity then
    # "socialised" $1e6. Now at most the bearers' equity (drift) or profit (haircut) is taken.
    # A: long 1,000 from 100 with 100 of collateral; crash to 50 through a thin book.
    # B: short 1 from 100 with 100 (equity 150 at 50, PnL 50); C: long 1 from 60 with 100
    # (equity 90, PnL -10, requirement 0.05 x 50 = 2.5: not liquidated).
    for convention, taken in (("drift", 150.0 + 90.0), ("profit_haircut", 50.0)):
        s = SimState.create(
            [[100.0, 100.0, 100.0]], [[1000.0, -1.0, 1.0]], [[100.0, 100.0, 60.0]], 0
        )
        p = RiskParams(
            mmr=0.05,
            imr=0.1,
            max_liquidation_fraction=1.0,
            min_liquidation_notional_usd=0.0,
            fallback="socialize",
            socialization=convention,
        )
        ev = core_step(s, p, np.array([50.0]), SqrtImpact(1.0))
        loss = ev.bad_debt_usd[0]
        assert loss > 1e4
        assert ev.socialized_loss_usd[0] == taken
        assert ev.unrecovered_usd[0] == loss - taken
        eq, _ = margin_state(s, p, np.array([50.0]))
        assert np.all(eq[0, 1:] >= 0.0)
