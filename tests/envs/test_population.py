"""The trader population: parameter checks, distributions, each behaviour, and the ledger.

Hand-worked cases use one-exchange books at mark 100 with MMR 3%, IMR 5%, a 5 bps taker fee
and 10% of fees routed to the fund (RiskParams defaults unless stated).
"""

import math
import re
from dataclasses import fields, replace

import numpy as np
import pytest

from envs.core.impact import LinearImpact
from envs.core.margin import maintenance_requirement
from envs.core.params import MarginTiers, RiskParams
from envs.core.rng import BatchRandom
from envs.core.state import ExchangeState
from envs.core.step import core_step
from envs.core.synthetic import LEVERAGE_SIGMA
from envs.traders import PopulationEvents, PopulationParams, TraderPopulation
from tests.books import assert_books_balance

APPROX = {"rel": 1e-12, "abs": 1e-9}

# Every behaviour off: each test turns on the one it checks.
QUIET = PopulationParams(
    arrival_rate_per_min=0.0,
    exit_rate_per_day=0.0,
    react_rate_per_min=0.0,
    turnover_per_day=0.0,
)


def quiet(**kw):
    return TraderPopulation(replace(QUIET, **kw))


def brng(seed, n_envs=1):
    """One generator per exchange: exchange e seeded ``seed + 1000 e`` (``seed`` alone for one)."""
    return BatchRandom([seed + 1000 * e for e in range(n_envs)])


# ---- parameters ----------------------------------------------------------------------------

BAD_VALUES = [
    ("arrival_rate_per_min", -1.0),
    ("exit_rate_per_day", float("nan")),
    ("long_share", 1.5),
    ("mean_notional_usd", 0.0),
    ("pareto_alpha", 1.0),
    ("leverage_median", 0.5),
    ("leverage_p95", 5.0),  # below the median of 10
    ("near_liquidation_buffer_frac", -0.1),
    ("top_up_share", 1.2),
    ("reduce_share", 0.9),  # top_up_share 0.2 + 0.9 > 1
    ("react_rate_per_min", 2.0),
    ("turnover_per_day", float("inf")),
    ("imr_elasticity", 0.3),
    ("fee_elasticity", 1.0),
    ("reference_imr", 0.0),
    ("reference_taker_fee_rate", 0.2),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_out_of_range_field_names_field_and_value(name, value):
    with pytest.raises(ValueError, match=rf"PopulationParams\.{name}\b.*{re.escape(repr(value))}"):
        PopulationParams(**{name: value})


def test_every_field_has_an_out_of_range_case():
    assert {name for name, _ in BAD_VALUES} == {f.name for f in fields(PopulationParams)}


def test_defaults_are_valid_and_match_the_synthetic_book_leverage():
    p = PopulationParams()
    assert p.leverage_sigma == pytest.approx(LEVERAGE_SIGMA, rel=1e-15)
    assert p.leverage_sigma == pytest.approx(math.log(6.0) / 1.6449, rel=1e-4)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"arrival_mult": -0.1}, "arrival_mult"),
        ({"leverage_mult": 0.0}, "leverage_mult"),
        ({"volume_mult": np.array([1.0, 2.0, 3.0])}, "volume_mult"),
        ({"long_share_shift": np.nan}, "long_share_shift"),
    ],
)
def test_step_rejects_bad_modulation(kw, message):
    state = ExchangeState.create([[0.0], [0.0]], [[0.0], [0.0]], [[0.0], [0.0]], 0.0)
    with pytest.raises(ValueError, match=message):
        quiet().step(brng(0, 2), state, RiskParams(), np.full(2, 100.0), 1.0, **kw)


# ---- distributions -------------------------------------------------------------------------


def test_leverage_is_lognormal_median_10_p80_25_p95_60_before_the_cap():
    lev = TraderPopulation(PopulationParams()).draw_leverage(np.random.default_rng(1), 400_000)
    assert np.median(lev) == pytest.approx(10.0, rel=0.1)
    assert np.quantile(lev, 0.80) == pytest.approx(25.0, rel=0.1)
    assert np.quantile(lev, 0.95) == pytest.approx(60.0, rel=0.1)
    assert lev.min() >= 1.0


def test_leverage_cap_is_one_over_imr_per_exchange_exactly():
    risk = RiskParams(mmr=0.005, imr=np.array([0.05, 0.1, 0.01]))
    cap = 1.0 / risk.column("imr")
    pop = TraderPopulation(PopulationParams())
    for mult in (1.0, 3.0):  # a leverage build-up is capped all the same
        lev = pop.draw_leverage(np.random.default_rng(2), (3, 20_000), cap, mult)
        assert (lev <= cap).all()
        np.testing.assert_array_equal(lev.max(axis=1), [20.0, 10.0, 100.0])
        assert lev.min() >= 1.0


def test_new_accounts_respect_the_cap_and_pass_initial_margin():
    # 20x is the cap; ~26% of drawn leverage lies above it, and no arrival may be rejected.
    risk = RiskParams()
    pop = quiet(arrival_rate_per_min=400.0)
    state = ExchangeState.create(np.zeros((2, 1000)), np.zeros((2, 1000)), np.zeros((2, 1000)), 0)
    mark = np.array([100.0, 250.0])
    ev = pop.step(brng(3, 2), state, risk, mark, 1.0)
    opened = state.size != 0.0
    assert (opened.sum(axis=1) == ev.arrivals).all() and ev.arrivals.min() > 300
    notional = np.abs(state.size) * mark[:, None]
    equity = state.collateral_usd  # entry == mark
    # Collateral kept after the opening fee: notional x (1/leverage x (1 + 1e-9) + fee).
    implied_lev = (1.0 + 1e-9) / (equity[opened] / notional[opened] - 0.0005)
    assert implied_lev.max() == pytest.approx(20.0, rel=1e-9)
    assert (equity[opened] >= 0.05 * notional[opened]).all()
    np.testing.assert_allclose(ev.new_notional_usd, notional.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ev.volume_usd, notional.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ev.trading_fees_usd, 0.0005 * ev.volume_usd, rtol=1e-12)
    np.testing.assert_allclose(ev.new_collateral_usd, state.net_deposits_usd, rtol=1e-12)
    assert_books_balance(state, mark)


def test_long_share_shift_moves_the_side_of_new_positions():
    pop = quiet(arrival_rate_per_min=3000.0)
    state = ExchangeState.create(np.zeros((3, 4000)), np.zeros((3, 4000)), np.zeros((3, 4000)), 0)
    shift = np.array([0.3, -0.3, 0.9])  # the last one clips at 0.98
    pop.step(brng(4, 3), state, RiskParams(), np.full(3, 100.0), 1.0,
             long_share_shift=shift)  # fmt: skip
    long_frac = (state.size > 0).sum(axis=1) / (state.size != 0).sum(axis=1)
    np.testing.assert_allclose(long_frac, [0.8, 0.2, 0.98], atol=0.025)


# ---- demand elasticity ---------------------------------------------------------------------


def test_demand_multiplier_hand_worked():
    pop = TraderPopulation(PopulationParams())  # elasticities -0.8 (IMR) and -0.5 (fee)
    assert pop.demand_multiplier(RiskParams(), 1)[0] == 1.0
    assert pop.demand_multiplier(RiskParams(imr=0.1), 1)[0] == 2.0**-0.8
    assert pop.demand_multiplier(RiskParams(taker_fee_rate=0.001), 1)[0] == 2.0**-0.5
    # A zero fee is floored at 1e-3 x the reference fee: (1e-3) ** -0.5.
    assert pop.demand_multiplier(RiskParams(taker_fee_rate=0.0), 1)[0] == pytest.approx(
        1000.0**0.5, rel=1e-12
    )
    both = pop.demand_multiplier(RiskParams(imr=np.array([0.05, 0.1, 0.2])), 3)
    np.testing.assert_allclose(both, [1.0, 2.0**-0.8, 4.0**-0.8], rtol=1e-15)


def test_doubling_imr_cuts_mean_arrivals_by_two_to_the_elasticity():
    # Every account exits on the next step, so slots never run out and every arrival counts.
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    pop = quiet(arrival_rate_per_min=20.0, exit_rate_per_day=1e12)
    state = ExchangeState.create(np.zeros((2, 200)), np.zeros((2, 200)), np.zeros((2, 200)), 0)
    rng = brng(5, 2)
    mark = np.full(2, 100.0)
    total = np.zeros(2)
    for _ in range(1000):
        total += pop.step(rng, state, risk, mark, 1.0).arrivals
    assert total[0] == pytest.approx(20_000, rel=0.04)
    assert total[1] / total[0] == pytest.approx(2.0**-0.8, rel=0.04)
    assert_books_balance(state, mark)


# ---- arrivals ------------------------------------------------------------------------------


def small_book():
    """Two exchanges of 8 slots: open positions, empty slots and one flat account in debt."""
    size = np.array([[1.0, 0, -2.0, 0, 0, 3.0, 0, 0], [0, 1.0, 0, 0, -1.0, 0, 0, 0]])
    collateral = np.where(size != 0, 100.0, 0.0)
    entry = np.where(size != 0, 100.0, 0.0)
    collateral[0, 6] = -5.0  # bad debt a liquidation left behind: not a free slot
    return ExchangeState.create(collateral, size, entry, 0.0)


def test_arrivals_fill_exactly_the_empty_slots():
    state = small_book()
    before = state.copy()
    ev = quiet(arrival_rate_per_min=1e6).step(
        brng(6, 2), state, RiskParams(), np.full(2, 100.0), 1.0
    )
    was_empty = (before.size == 0) & (before.collateral_usd == 0)
    np.testing.assert_array_equal(state.size != 0, (before.size != 0) | was_empty)
    np.testing.assert_array_equal(ev.arrivals, was_empty.sum(axis=1))  # [4, 6]
    np.testing.assert_array_equal(state.size[~was_empty], before.size[~was_empty])
    assert state.collateral_usd[0, 6] == -5.0
    np.testing.assert_array_equal(state.entry_price[was_empty], 100.0)


def test_arrivals_take_the_first_empty_slots_and_counts_match():
    n_acc = 40
    size, collateral, entry = np.zeros((3, n_acc)), np.zeros((3, n_acc)), np.zeros((3, n_acc))
    size[:, ::3], collateral[:, ::3], entry[:, ::3] = 1.0, 50.0, 100.0  # open among empty
    state = ExchangeState.create(collateral, size, entry, 0.0)
    pop = quiet(arrival_rate_per_min=2.0)
    rng = brng(7, 3)
    seen = 0
    for _ in range(8):
        before = state.copy()
        ev = pop.step(rng, state, RiskParams(), np.full(3, 100.0), 1.0)
        was_empty = (before.size == 0) & (before.collateral_usd == 0)
        filled = was_empty & (state.size != 0)
        np.testing.assert_array_equal(filled.sum(axis=1), ev.arrivals)
        # The filled slots are the first `arrivals` empty ones of each exchange.
        rank = np.cumsum(was_empty, axis=1)
        np.testing.assert_array_equal(filled, was_empty & (rank <= ev.arrivals[:, None]))
        seen += ev.arrivals.sum()
    assert seen > 0
    assert ((state.size == 0) & (state.collateral_usd == 0)).any(axis=1).all()  # never full


# ---- common random numbers for arrivals ---------------------------------------------------


@pytest.mark.parametrize(
    ("lam", "u", "expected"),
    [
        # Poisson(1): P(0) = e^-1 = 0.36788, CDF(1) = 0.73576, CDF(2) = 0.91970, CDF(3) = 0.98101
        (1.0, 0.0, 0),
        (1.0, 0.3678, 0),
        (1.0, 0.3679, 1),
        (1.0, 0.7357, 1),
        (1.0, 0.7358, 2),
        (1.0, 0.95, 3),
        # Poisson(0) is always 0; Poisson(4): CDF(3) = 0.43347, CDF(4) = 0.62884
        (0.0, 0.999, 0),
        (4.0, 0.4334, 3),
        (4.0, 0.4335, 4),
        (4.0, 0.6289, 5),
    ],
)
def test_poisson_quantile_hand_worked(lam, u, expected):
    from envs.traders.population import _poisson_quantile

    assert _poisson_quantile(np.array([u]), np.array([lam]))[0] == expected


def test_poisson_quantile_of_uniforms_is_poisson():
    from envs.traders.population import _poisson_quantile

    u = np.random.default_rng(0).random(200_000)
    for lam in (0.3, 10.0, 80.0):
        k = _poisson_quantile(u, np.full(u.size, lam))
        assert k.mean() == pytest.approx(lam, rel=0.01)
        assert k.var() == pytest.approx(lam, rel=0.03)


def test_coupled_candidates_do_not_depend_on_demand_and_counts_are_monotone():
    # The same stream gives the same candidate traders at any demand; a policy that deters
    # demand admits a prefix of the same list (the same whales, fewer of them).
    pop = TraderPopulation(PopulationParams())
    lam_ref = np.array([10.0, 10.0])
    out = {}
    for demand in (0.5, 1.0, 3.0):
        rng = brng(11, 2)
        out[demand] = pop.coupled_candidates(
            rng, lam_ref * demand, lam_ref, np.full(2, 0.5), np.full(2, 20.0), np.ones(2)
        )
        out[demand] += (rng.generators[0].random(),)  # where the stream stands afterwards
    for demand in (0.5, 3.0):
        for a, b in zip(out[demand][1], out[1.0][1], strict=True):
            np.testing.assert_array_equal(a, b)
        assert out[demand][2] == out[1.0][2]  # the same amount of stream consumed
    assert (out[0.5][0] <= out[1.0][0]).all() and (out[1.0][0] <= out[3.0][0]).all()
    # K = ceil(4 x 10 + 6 sqrt(40) + 6) = 84 candidates per exchange.
    assert out[1.0][1][0].shape == (2, 84)


def test_coupled_candidates_have_the_population_distributions():
    p = PopulationParams()
    pop = TraderPopulation(p)
    notional, side, lev = [], [], []
    rng = brng(3, 1)
    for _ in range(400):
        _, (n, s, lv) = pop.coupled_candidates(
            rng, np.array([10.0]), np.array([10.0]), np.array([0.3]), np.array([1e9]), np.ones(1)
        )
        notional.append(n[0]), side.append(s[0]), lev.append(lv[0])
    notional, side, lev = (np.concatenate(x) for x in (notional, side, lev))
    alpha, mean = p.pareto_alpha, p.mean_notional_usd
    scale = mean * (alpha - 1.0) / alpha  # Pareto minimum: $6,667; median x 2^(1/1.5)
    assert notional.min() >= scale
    assert np.median(notional) == pytest.approx(scale * 2.0 ** (1.0 / alpha), rel=0.03)
    assert (side > 0).mean() == pytest.approx(0.3, abs=0.01)
    assert np.median(lev) == pytest.approx(p.leverage_median, rel=0.03)
    assert np.quantile(lev, 0.95) == pytest.approx(p.leverage_p95, rel=0.05)


def test_coupled_arrivals_meet_the_same_traders_under_different_imr():
    # Two exchanges, same arrival stream, IMR 5% vs 10%: every trader the stricter exchange
    # admits arrived at the laxer one too, in the same slot with the same notional and side.
    pop = quiet(arrival_rate_per_min=2.0)
    state = ExchangeState.create(np.zeros((2, 300)), np.zeros((2, 300)), np.zeros((2, 300)), 0)
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    rng = brng(9, 2)
    arrivals = BatchRandom.from_generators([np.random.default_rng(42) for _ in range(2)])
    mark = np.full(2, 100.0)
    ev = pop.step(rng, state, risk, mark, 5.0, arrival_rng=arrivals)  # 10 expected at 5%
    n_lax, n_strict = ev.arrivals
    assert 0 < n_strict < n_lax  # demand at 10% is 2^-0.8 = 0.57 of that at 5%
    np.testing.assert_array_equal(state.size[1, :n_strict], state.size[0, :n_strict])
    assert (state.size[1, n_strict:] == 0).all() and (state.size[0, :n_lax] != 0).all()
    # Leverage is capped per venue (20x vs 10x), so the same trader posts more at 10%.
    assert (state.collateral_usd[1, :n_strict] >= state.collateral_usd[0, :n_strict]).all()
    assert_books_balance(state, mark)


def test_a_full_book_takes_no_arrivals():
    risk = RiskParams()
    pop = quiet(arrival_rate_per_min=50.0)
    state = pop.initial_state(brng(8, 2), 2, 30, 100.0, risk, 0.0, fill_frac=1.0)
    before = state.copy()
    ev = pop.step(brng(9, 2), state, risk, np.full(2, 100.0), 1.0)
    np.testing.assert_array_equal(ev.arrivals, [0, 0])
    np.testing.assert_array_equal(ev.new_notional_usd, [0.0, 0.0])
    np.testing.assert_array_equal(state.size, before.size)
    np.testing.assert_array_equal(state.collateral_usd, before.collateral_usd)


def test_initial_state_fills_the_first_slots_and_leaves_zeros():
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    pop = TraderPopulation(PopulationParams())
    state = pop.initial_state(brng(10, 2), 2, 10, [100.0, 50.0], risk, 1e4)
    assert (state.size[:, :8] != 0).all()
    for arr in (state.size, state.collateral_usd, state.entry_price):
        np.testing.assert_array_equal(arr[:, 8:], 0.0)
    np.testing.assert_array_equal(state.entry_price[:, :8], [[100.0] * 8, [50.0] * 8])
    # Collateral after an opening fee: notional x (1 / leverage + fee), leverage <= 1 / imr.
    notional = np.abs(state.size[:, :8]) * np.array([[100.0], [50.0]])
    lev = 1.0 / (state.collateral_usd[:, :8] / notional - 0.0005)
    assert (lev <= 1.0 / risk.column("imr") * (1 + 1e-12)).all() and (lev >= 1 - 1e-12).all()
    np.testing.assert_array_equal(state.fund_usd, [1e4, 1e4])
    assert_books_balance(state, np.array([100.0, 50.0]))


# ---- near liquidation ----------------------------------------------------------------------


def near_book():
    # Account 0: long 10 at 100, equity 31 vs requirement 30 (< 1.25 x 30 = 37.5): near.
    # Account 1: equity 100, far from it.
    return ExchangeState.create([[31.0, 100.0]], [[10.0, 10.0]], [[100.0, 100.0]], 0.0)


def test_near_liquidation_top_up_restores_one_plus_two_buffers():
    state = near_book()
    pop = quiet(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0)
    mark = np.array([100.0])
    ev = pop.step(brng(11), state, RiskParams(), mark, 1.0)
    assert state.collateral_usd[0, 0] == pytest.approx(1.5 * 30.0, **APPROX)  # equity 45
    assert state.collateral_usd[0, 1] == 100.0
    np.testing.assert_array_equal(state.size, [[10.0, 10.0]])
    assert ev.top_ups[0] == 1 and ev.reductions[0] == 0
    assert ev.top_up_usd[0] == pytest.approx(14.0, **APPROX)
    assert state.net_deposits_usd[0] == pytest.approx(14.0, **APPROX)
    assert_books_balance(state, mark)


def test_near_liquidation_top_up_with_tiers_and_a_price_move():
    # Short 10 entered at 97, mark 100: a loss of 30 on 59 of collateral leaves equity 29,
    # below the tiered requirement (first bracket 0.4% scaled by 0.03 / 0.004: 3% of 1,000).
    tiers = MarginTiers.binance_btcusdt_2021()
    risk = RiskParams(mmr=0.03, imr=0.05, tiers=tiers)
    state = ExchangeState.create([[59.0]], [[-10.0]], [[97.0]], 0.0)
    mark = np.array([100.0])
    req = float(maintenance_requirement(np.array([1000.0]), 0.03, tiers)[0])
    assert req == pytest.approx(30.0, rel=1e-12)
    ev = quiet(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0).step(
        brng(12), state, risk, mark, 1.0
    )
    equity = state.collateral_usd[0, 0] + state.size[0, 0] * (100.0 - 97.0)
    assert equity == pytest.approx(1.5 * req, **APPROX)  # 45
    assert ev.top_up_usd[0] == pytest.approx(16.0, **APPROX)


def test_near_liquidation_reduce_halves_the_position_and_pays_the_fee():
    state = near_book()
    pop = quiet(react_rate_per_min=1.0, top_up_share=0.0, reduce_share=1.0)
    mark = np.array([100.0])
    ev = pop.step(brng(13), state, RiskParams(), mark, 1.0)
    np.testing.assert_array_equal(state.size, [[5.0, 10.0]])
    assert state.collateral_usd[0, 0] == pytest.approx(31.0 - 0.25, **APPROX)  # 500 x 5 bps
    assert ev.reductions[0] == 1 and ev.top_ups[0] == 0
    assert ev.trading_fees_usd[0] == pytest.approx(0.25, **APPROX)
    assert ev.fund_trading_fee_income_usd[0] == pytest.approx(0.025, **APPROX)
    assert ev.volume_usd[0] == pytest.approx(500.0, **APPROX)
    assert_books_balance(state, mark)


def test_near_liquidation_nobody_reacts_at_react_rate_zero():
    state = near_book()
    ev = quiet(top_up_share=1.0, reduce_share=0.0).step(
        brng(14), state, RiskParams(), np.array([100.0]), 1.0
    )
    np.testing.assert_array_equal(state.collateral_usd, [[31.0, 100.0]])
    assert ev.top_ups[0] == 0


# ---- exits ---------------------------------------------------------------------------------


def test_huge_exit_rate_empties_every_slot_and_withdraws_what_is_left():
    risk = RiskParams()
    pop = TraderPopulation(PopulationParams())
    state = pop.initial_state(brng(15, 3), 3, 50, 100.0, risk, 0.0)
    mark = np.full(3, 101.0)  # shorts lose 1%: at most 20% of their margin
    m = mark[:, None]
    left = state.collateral_usd + state.size * (m - state.entry_price)
    left -= 0.0005 * np.abs(state.size) * m  # the closing fee
    assert (left[state.size != 0] > 0).all()
    n_open = (state.size != 0).sum(axis=1)
    ev = quiet(exit_rate_per_day=1e12).step(brng(16, 3), state, risk, mark, 1.0)
    for arr in (state.size, state.collateral_usd, state.entry_price):
        np.testing.assert_array_equal(arr, 0.0)
    np.testing.assert_array_equal(ev.exits, n_open)
    np.testing.assert_allclose(ev.withdrawn_usd, left.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(state.net_deposits_usd, -ev.withdrawn_usd, rtol=1e-12)
    assert_books_balance(state, mark)


def test_flat_accounts_withdraw_and_debts_stay_on_the_books():
    # Flat accounts: 50 left by a liquidation, a 5 USD debt, 1e-9 of rounding dust.
    state = ExchangeState.create([[50.0, -5.0, -1e-9, 100.0]], [[0, 0, 0, 1.0]],
                                 [[0, 0, 0, 100.0]], 0.0)  # fmt: skip
    mark = np.array([100.0])
    ev = quiet().step(brng(17), state, RiskParams(), mark, 1.0)
    np.testing.assert_array_equal(state.collateral_usd, [[0.0, -5.0, 0.0, 100.0]])
    assert ev.exits[0] == 2
    assert ev.withdrawn_usd[0] == pytest.approx(50.0 - 1e-9, rel=1e-15)
    assert_books_balance(state, mark)


def test_bankrupt_accounts_do_not_exit():
    # Equity 100 - 10 x 20 = -100: the liquidation engine, not an exit, closes this account.
    state = ExchangeState.create([[100.0]], [[10.0]], [[100.0]], 0.0)
    mark = np.array([80.0])
    ev = quiet(exit_rate_per_day=1e12).step(brng(18), state, RiskParams(), mark, 1.0)
    assert ev.exits[0] == 0 and state.size[0, 0] == 10.0


# ---- ordinary volume -----------------------------------------------------------------------


def test_volume_matches_target_and_leaves_positions_unchanged():
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    pop = quiet(turnover_per_day=2.0)
    state = pop.initial_state(brng(19, 2), 2, 2000, 100.0, risk, 0.0)
    before = state.copy()
    mark = np.full(2, 100.0)
    volume_mult = np.array([1.0, 3.0])
    ev = pop.step(brng(20, 2), state, risk, mark, 5.0, volume_mult=volume_mult)
    oi = 0.5 * np.abs(before.size).sum(axis=1) * mark
    target = 2.0 * oi * 5.0 / 1440.0 * np.array([1.0, 2.0**-0.8]) * volume_mult
    np.testing.assert_allclose(ev.volume_usd, target, rtol=1e-9)
    np.testing.assert_allclose(state.size, before.size, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ev.trading_fees_usd, 0.0005 * ev.volume_usd, rtol=1e-12)
    np.testing.assert_allclose(ev.fund_trading_fee_income_usd, 0.1 * ev.trading_fees_usd)
    # The fees are the only cost: equity fell by exactly the fees, money stayed in the ledger.
    m = mark[:, None]
    eq = lambda s: (s.collateral_usd + s.size * (m - s.entry_price)).sum(axis=1)  # noqa: E731
    np.testing.assert_allclose(eq(before) - eq(state), ev.trading_fees_usd, rtol=1e-9)
    assert_books_balance(state, mark)


def test_volume_beyond_what_the_drawn_accounts_can_carry_is_capped_at_full_round_trips():
    # A day's turnover in one tick: ~5% of accounts cannot trade 2x open interest, so each
    # drawn account closes and re-opens its whole position (entry moves to the mark).
    risk = RiskParams()
    pop = quiet(turnover_per_day=2.0)
    state = pop.initial_state(brng(24), 1, 2000, 100.0, risk, 0.0)
    before = state.copy()
    mark = np.array([101.0])
    ev = pop.step(brng(25), state, risk, mark, 1440.0)
    traded = np.isclose(state.entry_price, 101.0, rtol=1e-12, atol=0)  # (q x 101) / q
    assert 0.02 < traded.sum() / 2000 < 0.08
    np.testing.assert_allclose(state.size, before.size, rtol=1e-12, atol=0)
    full = 2.0 * (np.abs(state.size) * 101.0)[traded].sum()
    assert ev.volume_usd[0] == pytest.approx(full, rel=1e-12)
    assert ev.volume_usd[0] < 0.5 * np.abs(before.size).sum() * 101.0  # short of the target
    assert_books_balance(state, mark)


# ---- whole runs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "risk",
    [
        RiskParams(mmr=np.array([0.03, 0.01, 0.03, 0.02]), imr=np.array([0.05, 0.02, 0.1, 0.05])),
        RiskParams(fallback="socialize", tiers=MarginTiers.binance_btcusdt_2021()),
    ],
    ids=["adl-per-env", "socialize-tiers"],
)
def test_ledger_closes_over_500_crashy_steps_with_liquidations(risk):
    rng = np.random.default_rng(21)  # the market path and the modulation
    n_envs = 4
    pop_rng = brng(21, n_envs)
    pop = TraderPopulation(PopulationParams(arrival_rate_per_min=3.0, exit_rate_per_day=5.0))
    state = pop.initial_state(pop_rng, n_envs, 500, 100.0, risk, 2e4)
    impact = LinearImpact(np.array([1e5, 1e6, 1e7, 3e5]))
    mark = np.full(n_envs, 100.0)
    totals = dict.fromkeys(f.name for f in fields(PopulationEvents))
    totals = {k: 0.0 for k in totals}
    liquidations = 0
    for _ in range(500):
        r = rng.normal(0.0, 0.006, n_envs)
        shock = rng.random(n_envs)
        r = np.where(shock < 0.01, -0.25, np.where(shock > 0.995, 0.2, r))
        mark = mark * (1.0 + r)
        liquidations += core_step(state, risk, mark, impact).n_liquidations.sum()
        assert_books_balance(state, mark)
        ev = pop.step(
            pop_rng,
            state,
            risk,
            mark,
            1.0,
            arrival_mult=rng.uniform(0.5, 3.0, n_envs),
            leverage_mult=rng.uniform(0.8, 2.0, n_envs),
            long_share_shift=rng.uniform(-0.3, 0.3, n_envs),
            volume_mult=rng.uniform(0.0, 3.0, n_envs),
        )
        assert_books_balance(state, mark)
        for k, v in ev.as_dict().items():
            assert np.isfinite(v).all(), k
            totals[k] += float(np.sum(v))
    # The run exercised every path it claims to check.
    assert liquidations > 100
    for k in ("arrivals", "exits", "top_ups", "reductions", "volume_usd", "withdrawn_usd"):
        assert totals[k] > 0, k


def run_twice(seed):
    risk = RiskParams()
    pop = TraderPopulation(PopulationParams(arrival_rate_per_min=5.0, exit_rate_per_day=20.0))
    rng = np.random.default_rng(seed)  # the market path
    pop_rng = brng(seed, 2)
    state = pop.initial_state(pop_rng, 2, 100, 100.0, risk, 1e4)
    mark = np.full(2, 100.0)
    events = []
    for _ in range(30):
        mark = mark * (1.0 + rng.normal(0.0, 0.02, 2))
        core_step(state, risk, mark, LinearImpact(1e6))
        events.append(pop.step(pop_rng, state, risk, mark, 1.0).as_dict())
    return state, events


def test_same_seed_same_result():
    (s1, e1), (s2, e2), (s3, _) = run_twice(22), run_twice(22), run_twice(23)
    for name, arr in vars(s1).items():
        np.testing.assert_array_equal(arr, getattr(s2, name), err_msg=name)
    for a, b in zip(e1, e2, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(s1.size, s3.size)  # a different seed is a different run


# ---- per-exchange randomness ---------------------------------------------------------------


def test_grouped_draws_each_exchange_from_its_own_generator_in_order():
    rng = BatchRandom([11, 22, 33])
    env_ids = np.array([0, 0, 0, 2, 2])  # exchange 1 draws nothing
    got = rng.grouped(env_ids, lambda g, n: g.random(n))
    ref = [np.random.default_rng(s) for s in (11, 22, 33)]
    np.testing.assert_array_equal(got, np.concatenate([ref[0].random(3), ref[2].random(2)]))
    # Each stream advanced by exactly its own count: the next draws agree too.
    np.testing.assert_array_equal(rng.random_grouped([0, 1, 2]), [g.random() for g in ref])
    lam = (1.0, 5.0, 50.0)
    np.testing.assert_array_equal(
        rng.poisson(lam), [g.poisson(m) for g, m in zip(ref, lam, strict=True)]
    )
    assert rng.grouped(np.zeros(0, dtype=np.int64), lambda g, n: g.random(n)).size == 0


def test_reseeding_one_exchange_leaves_the_others_streams_unchanged():
    rng = BatchRandom([11, 22, 33])
    rng.random_grouped([0, 1, 2])
    rng.reseed(1, 99)
    ref = [np.random.default_rng(11), np.random.default_rng(99), np.random.default_rng(33)]
    ref[0].random(), ref[2].random()
    np.testing.assert_array_equal(rng.rows(lambda g, n: g.random(n), 4),
                                  np.stack([g.random(4) for g in ref]))  # fmt: skip


def test_rng_must_have_one_generator_per_exchange():
    pop = TraderPopulation(PopulationParams())
    with pytest.raises(ValueError, match="n_envs"):
        pop.initial_state(brng(0, 2), 3, 10, 100.0, RiskParams(), 0.0)
    state = pop.initial_state(brng(0, 2), 2, 10, 100.0, RiskParams(), 0.0)
    with pytest.raises(ValueError, match="n_envs"):
        pop.step(brng(0, 3), state, RiskParams(), np.full(2, 100.0), 1.0)


def run_population(seeds, marks, risk, pop, n_accounts=200):
    """``initial_state`` and one ``core_step`` + ``step`` per row of ``marks`` (ticks, envs)."""
    rng = BatchRandom(seeds)
    impact = LinearImpact(np.full(len(seeds), 3e6))
    state = pop.initial_state(rng, len(seeds), n_accounts, marks[0], risk, 5e4)
    states, events = [state.copy()], []
    for t in range(1, marks.shape[0]):
        core = core_step(state, risk, marks[t], impact)
        ev = pop.step(rng, state, risk, marks[t], 1.0, arrival_mult=1.5, volume_mult=2.0)
        events.append({**ev.as_dict(), "n_liquidations": core.n_liquidations})
        states.append(state.copy())
    return states, events


def per_env_risk(n_envs):
    """Equal risk parameters given as ``(n_envs,)`` arrays (the simulator's per-env form)."""
    return RiskParams(mmr=np.full(n_envs, 0.03), imr=np.full(n_envs, 0.05),
                      taker_fee_rate=np.full(n_envs, 0.0005),
                      trading_fee_fund_share=np.full(n_envs, 0.1))  # fmt: skip


@pytest.mark.parametrize("per_env", [False, True], ids=["scalar-risk", "per-env-risk"])
def test_a_batch_equals_its_exchanges_run_alone_draw_for_draw(per_env):
    # Three exchanges seeded 11, 22, 33, each with its own random-walk mark (a volatile one, so
    # liquidations, reactions, exits, arrivals and volume all happen), against three single
    # runs with the same seeds and marks: every array and every event equal bit for bit.
    seeds = [11, 22, 33]
    n_ticks = 200
    marks = np.stack(
        [100.0 * np.cumprod(1.0 + np.random.default_rng(s + 7).normal(0.0, 0.01, n_ticks + 1))
         for s in seeds], axis=1)  # fmt: skip
    tiers = MarginTiers.binance_btcusdt_2021()
    risk = RiskParams(mmr=0.03, imr=0.05, tiers=tiers)
    batch_risk = replace(per_env_risk(3), tiers=tiers) if per_env else risk
    single_risk = replace(per_env_risk(1), tiers=tiers) if per_env else risk
    pop = TraderPopulation(PopulationParams(arrival_rate_per_min=3.0, exit_rate_per_day=5.0))
    batch_states, batch_events = run_population(seeds, marks, batch_risk, pop)
    totals = dict.fromkeys(batch_events[0], 0.0)
    for e, seed in enumerate(seeds):
        states, events = run_population([seed], marks[:, e : e + 1], single_risk, pop)
        for t, (b, s) in enumerate(zip(batch_states, states, strict=True)):
            for name, arr in vars(s).items():
                np.testing.assert_array_equal(
                    getattr(b, name)[e : e + 1], arr, err_msg=f"{name}, env {e}, tick {t}"
                )
        for t, (b, s) in enumerate(zip(batch_events, events, strict=True)):
            for k, v in s.items():
                np.testing.assert_array_equal(b[k][e : e + 1], v, err_msg=f"{k}, env {e}, tick {t}")
    for ev in batch_events:
        for k, v in ev.items():
            totals[k] += float(np.sum(v))
    for k in ("arrivals", "exits", "top_ups", "reductions", "volume_usd", "n_liquidations"):
        assert totals[k] > 0, k  # the run exercised every path the equality covers
