"""Trader balance sheets and the market's pull on the population (issue 16).

Hand-worked: the opening deposit of a cross account, the one-sided margin term of demand,
the stress and the response to it. Behaviour: the venue's halts, the leverage and
open-interest caps, and the exit multiplier, each against a twin run without it.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.rng import BatchStreams
from fundgym.envs.traders import PopulationParams, TraderPopulation, kernels
from fundgym.envs.traders.population import truncated_pareto_mean, truncated_pareto_scale

MARK = 100.0


def pop_of(**kw):
    return TraderPopulation(replace(PopulationParams(), **kw))


def book(pop, seed, n_accounts=400, fill_frac=None, **risk_kw):
    risk = RiskParams(**risk_kw)
    rng = BatchStreams([seed])
    return pop.initial_state(rng, n_accounts, MARK, risk, fill_frac), rng, risk


def test_opening_collateral_by_hand():
    # $10,000 at 10x order leverage, usage 0.2 (effective 2x), fee 5 bps:
    # 10,000 x (1 / (10 x 0.2) x (1 + 1e-9) + 2 x 0.0005) = 5,000.000005 + 10.
    got = kernels.opening_collateral(10_000.0, 10.0, 0.2, 0.0005)
    assert got == pytest.approx(5_010.000005, rel=1e-15)
    # An isolated account (usage 1) posts the order's margin and fees only: 1,010.000001.
    assert kernels.opening_collateral(10_000.0, 10.0, 1.0, 0.0005) == pytest.approx(
        1_010.000001, rel=1e-15
    )


def test_cross_accounts_carry_free_collateral_and_isolated_ones_none():
    pop = pop_of(cross_share=0.9, cross_leverage_median=0.2, cross_leverage_p95=5.1)
    _, (notional, _, lev, usage) = pop.coupled_candidates(
        BatchStreams([3]), 0.0, 5_000.0, 0.5, 20.0, 1.0
    )
    notional, lev, usage = notional[0], lev[0], usage[0]
    assert usage.size > 20_000
    cross = usage < 1.0
    # About 90% cross (isolated ones and cross ones capped at order leverage read 1).
    assert 0.85 < cross.mean() < 0.92
    effective = lev * usage
    assert (usage >= kernels.USAGE_FLOOR).all() and (effective <= lev * (1 + 1e-15)).all()
    # The cross accounts' effective leverage is lognormal at median 0.2x (where the floor
    # and the cap at order leverage do not bind: both sit in the tails).
    assert np.median(effective[cross]) == pytest.approx(0.2, rel=0.08)


def test_demand_margin_term_is_one_sided():
    cols = PopulationParams().columns(1.0)  # reference IMR 5%, fee 5 bps, elasticity -0.8
    # Below the reference IMR: no extra demand (a 125x venue draws the reference's traders).
    assert kernels.demand_multiplier(0.008, 0.0005, cols) == 1.0
    # Above it: (0.1 / 0.05) ** -0.8 = 0.574349...
    assert kernels.demand_multiplier(0.1, 0.0005, cols) == pytest.approx(2.0**-0.8, rel=1e-15)
    # The fee term stays two-sided: half the fee, (0.5) ** -0.5 = sqrt 2 more demand.
    assert kernels.demand_multiplier(0.05, 0.00025, cols) == pytest.approx(
        math.sqrt(2.0), rel=1e-15
    )


def test_market_stress_and_response_by_hand():
    p = PopulationParams(
        derisk_per_stress=0.1, arrival_per_stress=0.2, funding_long_shift=100.0,
        stress_drawdown_frac=0.1,
    )  # fmt: skip
    cols = p.columns(1.0)
    # Volatility twice its usual level (+1) and 5% below the recent peak (+0.5): 1.5.
    stress = kernels.market_stress(0.5, 0.25, 0.05, cols)
    assert stress == pytest.approx(1.5, rel=1e-15)
    # Calmer than usual counts as no stress, not negative stress.
    assert kernels.market_stress(0.1, 0.25, 0.0, cols) == 0.0
    arrival, exit_factor, shift = kernels.market_response(stress, 0.0005, cols)
    assert arrival == pytest.approx(1.0 / 1.3, rel=1e-15)  # 1 / (1 + 0.2 x 1.5)
    assert exit_factor == pytest.approx(1.15, rel=1e-15)  # 1 + 0.1 x 1.5
    assert shift == pytest.approx(-0.05, rel=1e-15)  # -100 x 5 bps: longs pay, fewer longs
    got = TraderPopulation(p).market_response(
        np.array([0.5, 0.1]), np.array([0.25, 0.25]), np.array([0.05, 0.0]),
        np.array([0.0005, -0.0001]),
    )  # fmt: skip
    np.testing.assert_allclose(got[0], [1.0 / 1.3, 1.0], rtol=1e-15)
    np.testing.assert_allclose(got[1], [1.15, 1.0], rtol=1e-15)
    np.testing.assert_allclose(got[2], [-0.05, 0.01], rtol=1e-15)


def test_exit_multiplier_scales_the_hazard():
    pop = pop_of(arrival_rate_per_slot_per_day=0.0, exit_rate_per_day=2.0, react_rate_per_min=0.0)
    counts = []
    for mult in (0.0, 1.0, 4.0):
        state, rng, risk = book(pop, 5, n_accounts=4000, fill_frac=0.6)
        ev = pop.step(rng, state, risk, np.array([MARK]), 60.0, exit_mult=mult)
        counts.append(int(ev.exits[0]))
    # 2,400 open accounts, hazard 2/day over an hour: p = 1 - exp(-2 x mult / 24).
    assert counts[0] == 0
    for mult, got in zip((1.0, 4.0), counts[1:], strict=True):
        p = -math.expm1(-2.0 * mult / 24.0)
        assert abs(got - 2400 * p) < 5 * math.sqrt(2400 * p * (1 - p))


def test_withdrawal_halt_closes_positions_but_keeps_the_money():
    pop = pop_of(arrival_rate_per_slot_per_day=0.0, exit_rate_per_day=50.0, react_rate_per_min=0.0,
                 turnover_per_day=0.0)  # fmt: skip
    state, rng, risk = book(pop, 7, n_accounts=200, fill_frac=0.5)
    money_before = state.collateral_usd.sum()
    ev = pop.step(rng, state, risk, np.array([MARK]), 60.0, halt_mask=kernels.HALT_WITHDRAWALS)
    flat_with_money = (state.size[0, :, 0] == 0) & (state.collateral_usd[0] > 0)
    assert ev.exits[0] == 0 and ev.withdrawn_usd[0] == 0.0
    assert flat_with_money.sum() > 50  # most of the 100 accounts closed, all kept their money
    assert state.net_deposits_usd[0] == 0.0
    # Closing at mark costs only the taker fee: the money stays on the exchange.
    assert state.collateral_usd.sum() == pytest.approx(
        money_before - ev.trading_fees_usd[0], rel=1e-12
    )
    # Once the halt lifts, the flat accounts withdraw and leave.
    ev = pop.step(rng, state, risk, np.array([MARK]), 1.0)
    assert ev.exits[0] >= flat_with_money.sum()


def test_reduce_only_admits_no_arrivals_and_no_round_trips():
    pop = pop_of(arrival_rate_per_slot_per_day=50.0, turnover_per_day=5.0)
    state, rng, risk = book(pop, 9, n_accounts=200, fill_frac=0.5)
    ev = pop.step(rng, state, risk, np.array([MARK]), 10.0, halt_mask=kernels.HALT_NEW_POSITIONS)
    assert ev.arrivals[0] == 0 and ev.new_notional_usd[0] == 0.0
    # Only exits trade (to close): every traded dollar is a reduction.
    assert ev.volume_usd[0] == pytest.approx(ev.trading_fees_usd[0] / risk.taker_fee_rate)
    state2, rng2, _ = book(pop, 9, n_accounts=200, fill_frac=0.5)
    ev2 = pop.step(rng2, state2, risk, np.array([MARK]), 10.0)
    assert ev2.arrivals[0] > 0 and ev2.volume_usd[0] > ev.volume_usd[0]


def test_leverage_cap_binds_new_positions():
    pop = pop_of(arrival_rate_per_slot_per_day=200.0, cross_share=0.0, exit_rate_per_day=0.0)
    state, rng, risk = book(pop, 11, n_accounts=300, fill_frac=0.0, imr=0.01, mmr=0.005)
    pop.step(rng, state, risk, np.array([MARK]), 10.0, leverage_cap=8.0)
    q, c = state.size[0, :, 0], state.collateral_usd[0]
    open_ = q != 0
    assert open_.sum() > 100
    lev = np.abs(q[open_]) * MARK / c[open_]
    # Isolated accounts at order leverage: capped at 8x (less their fees), not the venue's 100x.
    assert lev.max() <= 8.0 and lev.max() > 7.5


def test_open_interest_cap_refuses_arrivals_beyond_it():
    pop = pop_of(arrival_rate_per_slot_per_day=200.0, exit_rate_per_day=0.0)
    state, rng, risk = book(pop, 13, n_accounts=500, fill_frac=0.2)
    oi0 = 0.5 * np.abs(state.size).sum() * MARK
    cap = 1.5 * oi0
    pop.step(rng, state, risk, np.array([MARK]), 10.0, oi_cap_usd=cap)
    oi1 = 0.5 * np.abs(state.size).sum() * MARK
    assert oi0 < oi1 <= cap
    free = (state.size[0, :, 0] == 0) & (state.collateral_usd[0] == 0)
    assert free.sum() > 0  # slots were free: the cap, not capacity, stopped the arrivals


@pytest.mark.parametrize(
    ("name", "value"),
    [("halt_mask", 4), ("halt_mask", -1), ("leverage_cap", 0.5), ("oi_cap_usd", float("nan"))],
)
def test_bad_halts_and_caps_name_the_argument(name, value):
    pop = pop_of()
    state, rng, risk = book(pop, 1, n_accounts=20)
    with pytest.raises(ValueError, match=name):
        pop.step(rng, state, risk, np.array([MARK]), 1.0, **{name: value})


def test_truncated_pareto_by_hand():
    # Minimum 1, index 2, cap 2: mean = 2 x 1 x (1 - 1/2) / (1 x (1 - 1/4)) = 4/3.
    assert truncated_pareto_mean(1.0, 2.0, 2.0) == pytest.approx(4.0 / 3.0, rel=1e-15)
    # Far from the cap it is the plain Pareto's alpha xm / (alpha - 1): 1.5 x 10 / 0.5 = 30.
    assert truncated_pareto_mean(10.0, 1.5, 1e30) == pytest.approx(30.0, rel=1e-12)
    scale = truncated_pareto_scale(20_000.0, 1.5, 500_000.0)
    assert truncated_pareto_mean(scale, 1.5, 500_000.0) == pytest.approx(20_000.0, rel=1e-14)
    assert 20_000.0 / 3.0 < scale < 20_000.0  # truncation needs a larger minimum


def test_sizes_stay_below_the_cap_and_keep_their_mean():
    pop = pop_of(mean_notional_usd=20_000.0, max_notional_mult=25.0)
    _, (notional, *_) = pop.coupled_candidates(BatchStreams([4]), 0.0, 5_000.0, 0.5, 20.0, 1.0)
    notional = notional[0][notional[0] > 0]
    assert notional.max() <= 500_000.0 * (1 + 1e-12)
    assert notional.min() >= pop.params.columns(1.0)[kernels.C_SCALE_USD] * (1 - 1e-12)
    # A heavy tail even truncated: the sample mean is within a few percent of 20,000.
    assert notional.mean() == pytest.approx(20_000.0, rel=0.05)


def test_slots_below_first_slot_are_left_alone():
    # A scenario's attacker sits in slot 0: no exit, reaction or round trip may touch it.
    pop = pop_of(exit_rate_per_day=1e6, react_rate_per_min=1.0, turnover_per_day=50.0)
    state, rng, risk = book(pop, 17, n_accounts=64, fill_frac=1.0)
    before = state.copy()
    ev = pop.step(rng, state, risk, np.array([90.0]), 5.0, first_slot=1)
    assert ev.exits[0] > 50  # every other account left
    for name in ("collateral_usd", "size", "entry_price"):
        np.testing.assert_array_equal(getattr(state, name)[:, 0], getattr(before, name)[:, 0])
    state2, rng2, _ = book(pop, 17, n_accounts=64, fill_frac=1.0)
    pop.step(rng2, state2, risk, np.array([90.0]), 5.0)
    assert state2.size[0, 0, 0] != before.size[0, 0, 0] or state2.collateral_usd[0, 0] == 0.0
