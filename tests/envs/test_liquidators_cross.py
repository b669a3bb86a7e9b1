"""Outside liquidators across markets: each market's capacity at its own oracle (issue 17).

The one-market rule (``tests/envs/test_liquidators.py``, :mod:`fundgym.envs.core.liquidators`)
per market: in market ``j``, per side and tick, liquidators take the first
``k x D_j x (max(f_L - g_j, 0) / 0.01)^2`` of the orders they are paid for at ``j``'s oracle,
pro rata over those orders; the rest of ``j``'s flow walks ``j``'s square-root book alone,
``2/3 x (1 - exp(-0.01 sqrt(N / D_j)))`` below it. Fee 1% with half to the fund: ``f_L`` =
0.5%, so a book of ``D`` per 1% gives them ``0.25 D`` a tick.

**Two markets, two accounts** (flat MMR 5%, full closes). ``B``: collateral 1,000, BTC long 1
from 10,000; at BTC 9,400 equity 400 < 470. ``E``: collateral 100, ETH long 1 from 1,000; at ETH
940 equity 40 < 47. BTC's book 47,000 per 1% (capacity 11,750: B's 9,400 order whole, at the
oracle); ETH's book 1,000 per 1% (capacity 250 of E's 940 order, 0.265957 of it; the other
690 walks 0.01 sqrt(0.69) = 0.830662% and slips 2/3 (1 - e^-0.00830662) = 0.551481%).

| leg | at the oracle | through the book | average fill | fee (1%) | collateral after |
|---|---|---|---|---|---|
| B, BTC | 9,400 (all) | - | 9,400 | 94 | 1,000 - 600 - 94 = 306 |
| E, ETH | 250 | 690 at 934.81608 | 936.19478 | 9.36195 | 100 - 63.80522 - 9.36195 = 26.83283 |

Each account is alone in one market, so each leg's numbers are the one-market engine's: the
same accounts in two one-market exchanges give the same fills to the bit.
"""

import numpy as np
import pytest

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.step import core_step
from fundgym.envs.markets_env import MarketsInsuranceFundEnv
from fundgym.envs.markets_simulator import MarketsSimulator
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.state import SimState
from tests.books import assert_books_balance
from tests.books import worked_params as params

APPROX = {"rel": 1e-12, "abs": 1e-9}
MARKS = np.array([[9_400.0, 940.0]])
DEPTHS = (47_000.0, 1_000.0)


def two_markets(coll=(1_000.0, 100.0)):
    """``B`` long 1 BTC from 10,000; ``E`` long 1 ETH from 1,000; fund 1,000."""
    size = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    entry = np.array([[[10_000.0, 0.0], [0.0, 1_000.0]]])
    return SimState.create([list(coll)], size, entry, 1_000.0)


def step(state, p, marks=MARKS):
    ev = core_step(state, p, marks, [SqrtImpact(d) for d in DEPTHS])
    assert_books_balance(state, marks)
    return ev


def test_each_market_has_its_own_capacity():
    s = two_markets()
    ev = step(s, params())
    taken_eth = 0.25 * 1_000.0
    rest = 940.0 - taken_eth
    book_fill = 940.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.01 * np.sqrt(rest / 1_000.0))))
    average = (taken_eth * 940.0 + rest * book_fill) / 940.0
    assert book_fill == pytest.approx(934.81608, abs=1e-5)
    assert average == pytest.approx(936.19478, abs=1e-5)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_400.0 + taken_eth, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(306.0, **APPROX)
    assert s.collateral_usd[0, 1] == pytest.approx(
        100.0 + average - 1_000.0 - 0.01 * average, **APPROX
    )
    assert s.collateral_usd[0, 1] == pytest.approx(26.83283, abs=1e-5)
    fees = 94.0 + 0.01 * average
    assert ev.liquidation_fees_usd[0] == pytest.approx(fees, **APPROX)
    assert ev.fund_fee_income_usd[0] == pytest.approx(0.5 * fees, **APPROX)
    assert s.liquidator_rewards_usd[0] == pytest.approx(0.5 * fees, **APPROX)
    # They hedge what they take: every market's flow is still the whole order.
    assert ev.market_flow_usd[0, :, 0] == pytest.approx([9_400.0, 940.0], **APPROX)
    assert (s.size == 0.0).all()


def test_a_leg_is_the_one_market_engines_order_bit_for_bit():
    # Each account alone in its market: its fill, fee and collateral equal the same account's
    # in a one-market exchange with that market's book.
    s = two_markets()
    ev = step(s, params())
    absorbed = 0.0
    for j, (c, q, e) in enumerate(((1_000.0, 1.0, 10_000.0), (100.0, 1.0, 1_000.0))):
        one = SimState.create([[c]], [[q]], [[e]], 1_000.0)
        ev1 = core_step(one, params(), MARKS[:, j], SqrtImpact(DEPTHS[j]))
        assert s.collateral_usd[0, j] == one.collateral_usd[0, 0]
        absorbed += ev1.liquidator_absorbed_usd[0]
    assert ev.liquidator_absorbed_usd[0] == absorbed


def test_unpaid_liquidators_leave_every_market_to_its_book():
    # The whole fee to the fund: nobody comes; the cross engine is what it was before them.
    s, t = two_markets(), two_markets()
    ev = step(s, params(liquidation_fee_fund_share=1.0))
    ref = step(t, params(liquidator_capacity_mult=0.0, liquidation_fee_fund_share=1.0))
    assert ev.liquidator_absorbed_usd[0] == 0.0
    np.testing.assert_array_equal(s.collateral_usd, t.collateral_usd)
    assert ev.liquidation_fees_usd[0] == ref.liquidation_fees_usd[0]


def test_a_bankrupt_cross_account_pays_them_nothing_and_walks_the_book():
    # E with 30: equity 30 - 60 = -30 at 940, bankrupt: its capped fee is zero, so its order
    # is not theirs; it walks ETH's book alone (940 through 1,000 per 1%: 0.01 sqrt(0.94) =
    # 0.969536%, slip 2/3 (1 - e^-0.00969536) = 0.643234%, to 933.95360), 36.04640 below its
    # bankruptcy price 970: the fund pays it. B is still theirs.
    s = two_markets(coll=(1_000.0, 30.0))
    ev = step(s, params())
    fill = 940.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.01 * np.sqrt(0.94))))
    assert fill == pytest.approx(933.95360, abs=1e-5)
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_400.0, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(970.0 - fill, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(306.0, **APPROX)
    assert s.collateral_usd[0, 1] == pytest.approx(0.0, abs=1e-9)


def test_one_cross_account_is_paid_for_on_its_cross_equity():
    # One account holding both legs (collateral 1,100): equity 1,100 - 600 - 60 = 440 > 0, so
    # both its legs are theirs; each fills as the separate accounts' legs above did (the
    # legs' prices do not depend on who holds them), and the account ends with the sum of the
    # two separate accounts' collateral: 306 + 26.83283.
    size = np.array([[[1.0, 1.0]]])
    entry = np.array([[[10_000.0, 1_000.0]]])
    s = SimState.create([[1_100.0]], size, entry, 1_000.0)
    ev = step(s, params())
    sep = two_markets()
    step(sep, params())
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(9_650.0, **APPROX)
    assert s.collateral_usd[0, 0] == pytest.approx(sep.collateral_usd[0].sum(), **APPROX)


def test_paid_liquidators_need_a_square_root_book_in_every_market():
    class Flat:
        def fill_prices(self, mark, sell, buy):
            return mark, mark

    with pytest.raises(TypeError, match="liquidators price their hedge through a SqrtImpact"):
        core_step(two_markets(), params(), MARKS, [SqrtImpact(47_000.0), Flat()])
    ev = core_step(two_markets(), params(liquidation_fee_fund_share=1.0), MARKS, [Flat(), Flat()])
    assert ev.n_liquidations[0] == 2


@pytest.mark.parametrize(
    ("mode", "adl"), [("hyperliquid", "hyperliquid"), ("bitmex", "bitmex"), ("dydx_v4", "bitmex")]
)
def test_under_a_venue_mode_each_leg_is_its_one_market_order_bit_for_bit(mode, adl):
    # The venue modes' sub-steps across markets (venue_cross) with liquidators paid: each
    # account alone in its market gets what the one-market venue engine gives it, with the
    # same book, oracle path and liquidators; what they took sums over the markets.
    p = params(liquidation_mode=mode, adl_policy=adl)
    s = two_markets()
    ev = step(s, p)
    absorbed = 0.0
    for j, (c, q, e) in enumerate(((1_000.0, 1.0, 10_000.0), (100.0, 1.0, 1_000.0))):
        one = SimState.create([[c]], [[q]], [[e]], 1_000.0)
        ev1 = core_step(one, p, MARKS[:, j], SqrtImpact(DEPTHS[j]))
        assert s.collateral_usd[0, j] == one.collateral_usd[0, 0], (mode, j)
        assert s.size[0, j, j] == one.size[0, 0, 0], (mode, j)
        absorbed += ev1.liquidator_absorbed_usd[0]
    # BitMEX's engine takes every account over at its bankruptcy price: no fee pays them.
    assert (absorbed > 0.0) == (mode != "bitmex")
    assert ev.liquidator_absorbed_usd[0] == pytest.approx(absorbed, rel=1e-12)


def test_the_markets_env_and_simulator_take_them_in_every_mode():
    sc = load_scenario("alt_contagion")
    for mode in ("partial", "hyperliquid", "bitmex", "dydx_v4"):
        env = MarketsInsuranceFundEnv(sc, n_accounts=8, liquidation_mode=mode)
        assert env.sim.risk.liquidator_capacity_mult == 1.0  # the lever's default, as in one market
        MarketsSimulator(sc, params(liquidation_mode=mode), n_envs=1, n_accounts=8)
    off = MarketsInsuranceFundEnv(sc, n_accounts=8, liquidator_capacity_mult=0.0)
    assert off.sim.risk.liquidator_capacity_mult == 0.0
