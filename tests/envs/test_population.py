"""The trader population: parameter checks, distributions, each behaviour, and the ledger.

Hand-worked cases use one-exchange books at mark 100 with MMR 3%, IMR 5%, a 5 bps taker fee
and 10% of fees routed to the fund (RiskParams defaults unless stated). The population reports
the fund's share of fees instead of booking it; :func:`book` pays it into the fund as the tick
does, after which the ledger must close.
"""

import math
import re
from dataclasses import fields, replace

import numpy as np
import pytest

from fundgym.envs.core import random_nb
from fundgym.envs.core.margin import maintenance_requirement
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.core.rng import ARRIVAL_STREAM, BatchStreams
from fundgym.envs.core.synthetic import LEVERAGE_SIGMA
from fundgym.envs.core.trading import apply_funding, execute_trades
from fundgym.envs.fund.portfolio import receive
from fundgym.envs.state import SimState, ledger_error
from fundgym.envs.traders import PopulationEvents, PopulationParams, TraderPopulation, kernels

APPROX = {"rel": 1e-12, "abs": 1e-9}

# Every behaviour off: each test turns on the one it checks.
QUIET = PopulationParams(
    arrival_rate_per_slot_per_day=0.0,
    exit_rate_per_day=0.0,
    react_rate_per_min=0.0,
    turnover_per_day=0.0,
    cross_share=0.0,
)


def per_slot(per_min, n_slots):
    """The per-slot daily arrival rate that gives ``per_min`` arrivals a minute on ``n_slots``."""
    return per_min * 1440.0 / n_slots


def quiet(**kw):
    return TraderPopulation(replace(QUIET, **kw))


def streams(seed, n_envs=1):
    """One exchange per row: exchange e seeded ``seed + 1000 e`` (``seed`` alone for one)."""
    return BatchStreams([seed + 1000 * e for e in range(n_envs)])


def empty(n_envs, n_accounts):
    return SimState.create(np.zeros((n_envs, n_accounts)), np.zeros((n_envs, n_accounts)),
                           np.zeros((n_envs, n_accounts)), 0.0)  # fmt: skip


def book(state, ev):
    """Pay the fund's share of the step's fees into the fund, as the tick does."""
    receive(state.fund, ev.fund_trading_fee_income_usd)


def assert_books_balance(state, mark):
    """Ledger closes to 1e-9 of the money in play, nothing is NaN."""
    m = np.asarray(mark, dtype=np.float64)[:, None]
    q, e = state.size[:, :, 0], state.entry_price[:, :, 0]
    scale = (
        np.abs(state.collateral_usd).sum(axis=1)
        + (np.abs(q) * (m + e)).sum(axis=1)
        + np.abs(state.counterparty_size[:, 0]) * m[:, 0]
        + np.abs(state.counterparty_cash_usd)
        + np.abs(state.net_deposits_usd)
        + state.fund_usd
        + np.abs(state.initial_total_usd)
    )
    err = ledger_error(state, mark)
    assert np.all(np.abs(err) <= 1e-9 * np.maximum(scale, 1.0)), err
    for name in ("collateral_usd", "size", "entry_price", "counterparty_size"):
        assert np.isfinite(getattr(state, name)).all(), name


def col(state):
    """Collateral as ``(E, A)``; size and entry of the one market as ``(E, A)``."""
    return state.collateral_usd, state.size[:, :, 0], state.entry_price[:, :, 0]


# ---- parameters ----------------------------------------------------------------------------

BAD_VALUES = [
    ("arrival_rate_per_slot_per_day", -1.0),
    ("exit_rate_per_day", float("nan")),
    ("long_share", 1.5),
    ("mean_notional_usd", 0.0),
    ("pareto_alpha", 1.0),
    ("max_notional_mult", 1.0),
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
    ("cross_share", -0.1),
    ("cross_leverage_median", 0.0),
    ("cross_leverage_p95", 0.1),  # below the median of 0.2
    ("derisk_per_stress", -1.0),
    ("arrival_per_stress", float("nan")),
    ("funding_long_shift", -5.0),
    ("stress_drawdown_frac", 0.0),
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
        ({"arrival_mult": np.array([1.0, np.nan])}, "arrival_mult"),  # the (n_envs,) fast path
        ({"leverage_mult": np.array([1.0, 0.0])}, r"leverage_mult must be finite and > 0\.0"),
    ],
)
def test_step_rejects_bad_modulation(kw, message):
    state = empty(2, 1)
    with pytest.raises(ValueError, match=message):
        quiet().step(streams(0, 2), state, RiskParams(), np.full(2, 100.0), 1.0, **kw)


@pytest.mark.parametrize("mark", [np.array([100.0, -1.0]), np.array([np.inf, 100.0]), -5.0])
def test_step_rejects_a_bad_mark(mark):
    with pytest.raises(ValueError, match="mark must be finite and > 0"):
        quiet().step(streams(0, 2), empty(2, 1), RiskParams(), mark, 1.0)


def test_a_scalar_modulation_that_changes_is_used_each_step():
    # The wrapper keeps a scalar's array while the scalar repeats: a new value must not reuse it.
    pop = TraderPopulation(replace(QUIET, arrival_rate_per_slot_per_day=per_slot(50.0, 400)))
    state, rng = empty(1, 400), streams(3)
    assert pop.step(rng, state, RiskParams(), 100.0, 1.0, arrival_mult=0.0).arrivals[0] == 0
    assert pop.step(rng, state, RiskParams(), 100.0, 1.0, arrival_mult=1.0).arrivals[0] > 20
    assert pop.step(rng, state, RiskParams(), 100.0, 1.0, arrival_mult=0.0).arrivals[0] == 0


def test_flag_slots_hand_worked():
    # Mark 100, MMR 3%, buffer 25%: an open slot acts when equity < 1.25 x 3% x notional.
    q = np.array([1.0, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1000.0])
    c = np.array([10.0, 3.7, 10.0, 0.0, 5.0, -1e-7, -5.0, -0.0, 1e6])
    ent = np.array([100.0, 100.0, 97.0, 0.0, 0.0, 0.0, 3.0, 0.0, 100.0])
    # equity 10 vs 3.75 | 3.7 vs 3.75 | 10 - 2 x 3 = 4 vs 7.5 | empty | money | dust debt
    # (settled: acts) | debt (stays: nothing) | -0.0 is empty | a whale with ample equity
    flat = [0, kernels.ACTS, kernels.ACTS, kernels.EMPTY, kernels.ACTS, kernels.ACTS, 0,
            kernels.EMPTY, 0]  # fmt: skip
    flags = np.full(q.size, 99, dtype=np.uint8)
    kernels.flag_slots(q, c, ent, 100.0, 0.03, 1.25, False, math.inf, 0.0, 0.0, 1.0, flags)
    assert flags.tolist() == flat
    # Tiers (first bracket below $50k at 0.4%, scaled by 0.03 / 0.004): the same flags below
    # the first floor; the $100k whale is left to the step's full table.
    kernels.flag_slots(q, c, ent, 100.0, 0.03, 1.25, True, 5e4, 0.004, 0.0, 0.03 / 0.004, flags)
    assert flags.tolist() == [*flat[:-1], kernels.ACTS]


def test_more_than_one_market_is_not_implemented_yet():
    state = SimState.create(np.zeros((1, 2)), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), 0.0)
    with pytest.raises(NotImplementedError, match="multi-market mechanics"):
        quiet().step(streams(0), state, RiskParams(), np.array([100.0]), 1.0)


# ---- distributions -------------------------------------------------------------------------


def candidates(pop, seed, n_ticks, lam_ref, long_share=0.5, max_leverage=1e9, mult=1.0, n_envs=1):
    """``n_ticks`` ticks of coupled candidates, concatenated per exchange: (notional, side, lev)."""
    rng = streams(seed, n_envs)
    parts = []
    for _ in range(n_ticks):
        lam = np.full(n_envs, float(lam_ref))
        parts.append(pop.coupled_candidates(rng, lam, lam, np.full(n_envs, long_share),
                                            max_leverage, mult)[1])  # fmt: skip
    return tuple(np.concatenate([p[i] for p in parts], axis=1) for i in range(3))


def test_leverage_is_lognormal_median_10_p80_25_p95_60_before_the_cap():
    _, _, lev = candidates(TraderPopulation(PopulationParams()), 1, 10, 10_000.0)
    lev = lev[0]
    assert lev.size > 400_000
    assert np.median(lev) == pytest.approx(10.0, rel=0.1)
    assert np.quantile(lev, 0.80) == pytest.approx(25.0, rel=0.1)
    assert np.quantile(lev, 0.95) == pytest.approx(60.0, rel=0.1)
    assert lev.min() >= 1.0


def test_leverage_cap_is_one_over_imr_per_exchange_exactly():
    imr = np.array([0.05, 0.1, 0.01])
    pop = TraderPopulation(PopulationParams())
    for mult in (1.0, 3.0):  # a leverage build-up is capped all the same
        _, _, lev = candidates(pop, 2, 1, 5000.0, max_leverage=1.0 / imr, mult=mult, n_envs=3)
        assert (lev <= 1.0 / imr[:, None]).all()
        np.testing.assert_array_equal(lev.max(axis=1), [20.0, 10.0, 100.0])
        assert lev.min() >= 1.0


def test_new_accounts_respect_the_cap_and_pass_initial_margin():
    # 20x is the cap; ~26% of drawn leverage lies above it, and no arrival may be rejected.
    risk = RiskParams()
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(400.0, 1000))
    state = empty(2, 1000)
    mark = np.array([100.0, 250.0])
    ev = pop.step(streams(3, 2), state, risk, mark, 1.0)
    book(state, ev)
    c, q, _ = col(state)
    opened = q != 0.0
    assert (opened.sum(axis=1) == ev.arrivals).all() and ev.arrivals.min() > 300
    notional = np.abs(q) * mark[:, None]
    equity = c  # entry == mark
    # Collateral kept after the opening fee: notional x (1/leverage x (1 + 1e-9) + fee).
    implied_lev = (1.0 + 1e-9) / (equity[opened] / notional[opened] - 0.0005)
    assert implied_lev.max() == pytest.approx(20.0, rel=1e-9)
    assert (equity[opened] >= 0.05 * notional[opened]).all()
    np.testing.assert_allclose(ev.new_notional_usd, notional.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ev.volume_usd, notional.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ev.trading_fees_usd, 0.0005 * ev.volume_usd, rtol=1e-12)
    np.testing.assert_allclose(ev.new_collateral_usd, state.net_deposits_usd, rtol=1e-12)
    np.testing.assert_allclose(ev.fund_trading_fee_income_usd, 0.1 * ev.trading_fees_usd)
    np.testing.assert_allclose(state.fee_revenue_usd, 0.9 * ev.trading_fees_usd, rtol=1e-12)
    assert_books_balance(state, mark)


def test_long_share_shift_moves_the_side_of_new_positions():
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(3000.0, 4000))
    state = empty(3, 4000)
    shift = np.array([0.3, -0.3, 0.9])  # the last one clips at 0.98
    pop.step(streams(4, 3), state, RiskParams(), np.full(3, 100.0), 1.0,
             long_share_shift=shift)  # fmt: skip
    q = state.size[:, :, 0]
    long_frac = (q > 0).sum(axis=1) / (q != 0).sum(axis=1)
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
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(20.0, 200), exit_rate_per_day=1e12)
    state = empty(2, 200)
    rng = streams(5, 2)
    mark = np.full(2, 100.0)
    total = np.zeros(2)
    for _ in range(1000):
        ev = pop.step(rng, state, risk, mark, 1.0)
        book(state, ev)
        total += ev.arrivals
    # Poisson totals: sd sqrt(20,000) = 141, 0.7%; 4% is over 5 sd.
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
    return SimState.create(collateral, size, entry, 0.0)


def test_arrivals_fill_exactly_the_empty_slots():
    state = small_book()
    before = state.copy()
    ev = quiet(arrival_rate_per_slot_per_day=per_slot(1e6, 8)).step(
        streams(6, 2), state, RiskParams(), np.full(2, 100.0), 1.0
    )
    c0, q0, _ = col(before)
    c, q, e = col(state)
    was_empty = (q0 == 0) & (c0 == 0)
    np.testing.assert_array_equal(q != 0, (q0 != 0) | was_empty)
    np.testing.assert_array_equal(ev.arrivals, was_empty.sum(axis=1))  # [4, 6]
    np.testing.assert_array_equal(ev.arrivals, [4, 6])
    np.testing.assert_array_equal(q[~was_empty], q0[~was_empty])
    assert c[0, 6] == -5.0
    # Opened at mark: (0 x entry + size x 100) / size, exact to the last bit or one off.
    np.testing.assert_allclose(e[was_empty], 100.0, rtol=2e-16, atol=0)


def test_arrivals_take_the_first_empty_slots_and_counts_match():
    n_acc = 40
    size, collateral, entry = np.zeros((3, n_acc)), np.zeros((3, n_acc)), np.zeros((3, n_acc))
    size[:, ::3], collateral[:, ::3], entry[:, ::3] = 1.0, 50.0, 100.0  # open among empty
    state = SimState.create(collateral, size, entry, 0.0)
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(2.0, 40))
    rng = streams(7, 3)
    seen = 0
    for _ in range(8):
        before = state.copy()
        ev = pop.step(rng, state, RiskParams(), np.full(3, 100.0), 1.0)
        c0, q0, _ = col(before)
        was_empty = (q0 == 0) & (c0 == 0)
        filled = was_empty & (state.size[:, :, 0] != 0)
        np.testing.assert_array_equal(filled.sum(axis=1), ev.arrivals)
        # The filled slots are the first `arrivals` empty ones of each exchange.
        rank = np.cumsum(was_empty, axis=1)
        np.testing.assert_array_equal(filled, was_empty & (rank <= ev.arrivals[:, None]))
        seen += ev.arrivals.sum()
    assert seen > 0
    q, c = state.size[:, :, 0], state.collateral_usd
    assert ((q == 0) & (c == 0)).any(axis=1).all()  # never full


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
    assert random_nb.poisson_quantile(u, lam) == expected


def test_poisson_quantile_of_uniforms_is_poisson():
    u = np.random.default_rng(0).random(200_000)
    k = np.zeros(u.size, dtype=np.int64)
    for lam in (0.3, 10.0, 80.0):
        random_nb.poisson_quantiles(u, np.full(u.size, lam), k)
        # Standard errors of the mean and variance at n = 200,000: ~0.2% and ~0.3% for lam 10.
        assert k.mean() == pytest.approx(lam, rel=0.01)
        assert k.var() == pytest.approx(lam, rel=0.03)


def test_coupled_candidates_do_not_depend_on_demand_and_counts_are_monotone():
    # The same stream gives the same candidate traders at any demand; a policy that deters
    # demand admits a prefix of the same list (the same whales, fewer of them).
    pop = TraderPopulation(PopulationParams())
    lam_ref = np.array([10.0, 10.0])
    out = {}
    for demand in (0.5, 1.0, 3.0):
        rng = streams(11, 2)
        out[demand] = pop.coupled_candidates(
            rng, lam_ref * demand, lam_ref, np.full(2, 0.5), np.full(2, 20.0), np.ones(2)
        )
        out[demand] += (rng.uniforms(0, ARRIVAL_STREAM, 1)[0],)  # where the stream stands
    for demand in (0.5, 3.0):
        for a, b in zip(out[demand][1], out[1.0][1], strict=True):
            np.testing.assert_array_equal(a, b)
        assert out[demand][2] == out[1.0][2]  # the same amount of stream consumed
    assert (out[0.5][0] <= out[1.0][0]).all() and (out[1.0][0] <= out[3.0][0]).all()
    # K = ceil(4 x 10 + 6 sqrt(40) + 6) = 84 candidates per exchange.
    assert out[1.0][1][0].shape == (2, 84)


def test_a_count_beyond_the_budget_draws_more_candidates_of_the_same_kind():
    # lam = 100 against a budget K = ceil(4 + 6 x 2 + 6) = 22 for lam_ref = 1: the count
    # exceeds K, the list grows to the count, and the first K candidates are unchanged.
    pop = TraderPopulation(PopulationParams())
    one = np.ones(1)
    few = pop.coupled_candidates(streams(12), one, one, 0.5 * one, 20.0 * one, one)
    many = pop.coupled_candidates(streams(12), 100.0 * one, one, 0.5 * one, 20.0 * one, one)
    assert few[1][0].shape == (1, 22) and many[0][0] > 22
    assert many[1][0].shape == (1, many[0][0])
    for a, b in zip(few[1], many[1], strict=True):
        np.testing.assert_array_equal(a, b[:, :22])
    assert (many[1][0] > 0).all()  # no padding inside the count


def test_coupled_candidates_have_the_population_distributions():
    p = PopulationParams()
    notional, side, lev = candidates(TraderPopulation(p), 3, 400, 10.0, long_share=0.3)
    notional, side, lev = notional[0], side[0], lev[0]  # 400 x 84 = 33,600 candidates
    alpha, cols = p.pareto_alpha, p.columns(1.0)
    # Pareto truncated at 25 x the mean: minimum $7,589 (solved for a $20,000 mean), CDF at
    # the cap F = 1 - (7,589 / 500,000)^1.5; median xm (1 - F / 2)^(-1 / 1.5).
    scale, cdf_cap = cols[kernels.C_SCALE_USD], cols[kernels.C_SIZE_CDF_AT_CAP]
    assert scale == pytest.approx(7589.19, rel=1e-5)
    assert notional.min() >= scale and notional.max() <= 500_000.0 * (1 + 1e-12)
    median = scale * (1.0 - 0.5 * cdf_cap) ** (-1.0 / alpha)
    assert np.median(notional) == pytest.approx(median, rel=0.03)
    # Side: sd of a share at n = 33,600 is 0.0025; 0.01 is 4 sd.
    assert (side > 0).mean() == pytest.approx(0.3, abs=0.01)
    assert np.median(lev) == pytest.approx(p.leverage_median, rel=0.03)
    assert np.quantile(lev, 0.95) == pytest.approx(p.leverage_p95, rel=0.05)


def test_coupled_arrivals_meet_the_same_traders_under_different_imr():
    # Two exchanges seeded alike, IMR 5% vs 10%: every trader the stricter exchange admits
    # arrived at the laxer one too, in the same slot with the same notional and side.
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(2.0, 300))
    state = empty(2, 300)
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    mark = np.full(2, 100.0)
    ev = pop.step(BatchStreams([42, 42]), state, risk, mark, 5.0)  # 10 expected at 5%
    book(state, ev)
    n_lax, n_strict = ev.arrivals
    assert 0 < n_strict < n_lax  # demand at 10% is 2^-0.8 = 0.57 of that at 5%
    q = state.size[:, :, 0]
    np.testing.assert_array_equal(q[1, :n_strict], q[0, :n_strict])
    assert (q[1, n_strict:] == 0).all() and (q[0, :n_lax] != 0).all()
    # Leverage is capped per venue (20x vs 10x), so the same trader posts more at 10%.
    c = state.collateral_usd
    assert (c[1, :n_strict] >= c[0, :n_strict]).all()
    assert_books_balance(state, mark)


def test_the_arrival_stream_moves_by_the_same_amount_whatever_the_levers():
    # Common random numbers: after a tick, the arrival stream stands at the same place under
    # any IMR and fee, any book, and whether or not slots were free (as long as the count
    # stays within the candidate budget: demand here is at most 1.6x the reference).
    pop = quiet(
        arrival_rate_per_slot_per_day=per_slot(2.0, 50),
        exit_rate_per_day=50.0,
        react_rate_per_min=0.5,
    )
    risk = RiskParams(imr=np.array([0.05, 0.2, 0.05]), taker_fee_rate=np.array([5e-4, 1e-3, 2e-4]))
    rng = BatchStreams([9, 9, 9])
    state = pop.initial_state(BatchStreams([1, 2, 3]), 50, 100.0, risk, fill_frac=1.0)
    arrived = np.zeros(3, dtype=np.int64)
    for _ in range(20):
        arrived += pop.step(rng, state, risk, np.full(3, 100.0), 5.0).arrivals
    assert len(set(arrived.tolist())) == 3  # the levers and books did change the arrivals
    nxt = [rng.uniforms(e, ARRIVAL_STREAM, 1)[0] for e in range(3)]
    assert nxt[0] == nxt[1] == nxt[2]


def test_a_full_book_takes_no_arrivals():
    risk = RiskParams()
    pop = quiet(arrival_rate_per_slot_per_day=per_slot(50.0, 30))
    state = pop.initial_state(streams(8, 2), 30, 100.0, risk, fill_frac=1.0)
    before = state.copy()
    ev = pop.step(streams(9, 2), state, risk, np.full(2, 100.0), 1.0)
    np.testing.assert_array_equal(ev.arrivals, [0, 0])
    np.testing.assert_array_equal(ev.new_notional_usd, [0.0, 0.0])
    np.testing.assert_array_equal(state.size, before.size)
    np.testing.assert_array_equal(state.collateral_usd, before.collateral_usd)


def test_initial_state_fills_the_first_slots_and_leaves_zeros():
    risk = RiskParams(imr=np.array([0.05, 0.1]), mmr=0.03)
    pop = TraderPopulation(PopulationParams())
    state = pop.initial_state(streams(10, 2), 10, [100.0, 50.0], risk, fill_frac=0.8)
    c, q, e = col(state)
    assert (q[:, :8] != 0).all()
    for arr in (q, c, e):
        np.testing.assert_array_equal(arr[:, 8:], 0.0)
    np.testing.assert_array_equal(e[:, :8], [[100.0] * 8, [50.0] * 8])
    # Collateral after an opening fee: notional x (1 / (leverage x usage) + fee); effective
    # leverage (leverage x usage) <= 1 / imr, and >= USAGE_FLOOR x 1 (usage floor, leverage 1).
    notional = np.abs(q[:, :8]) * np.array([[100.0], [50.0]])
    lev = 1.0 / (c[:, :8] / notional - 0.0005)
    assert (lev <= 1.0 / risk.column("imr") * (1 + 1e-12)).all()
    assert (lev >= kernels.USAGE_FLOOR * (1 - 1e-12)).all()


def test_initial_state_starts_at_the_calm_markets_share_of_open_slots():
    # 0.3 arrivals per slot a day against 0.5 exits per account a day: 60% of slots open.
    pop = TraderPopulation(PopulationParams(arrival_rate_per_slot_per_day=0.3))
    assert pop.params.calm_open_frac == pytest.approx(0.6, rel=1e-15)
    state = pop.initial_state(streams(11, 2), 50, 100.0, RiskParams())
    np.testing.assert_array_equal((state.size[:, :, 0] != 0).sum(axis=1), [30, 30])
    assert PopulationParams(exit_rate_per_day=0.0).calm_open_frac == 1.0
    assert PopulationParams(arrival_rate_per_slot_per_day=9.0).calm_open_frac == 1.0
    np.testing.assert_array_equal(state.fund_usd, [0.0, 0.0])  # the caller sets the fund
    assert_books_balance(state, np.array([100.0, 50.0]))


def test_initial_state_of_one_exchange_through_its_view_equals_its_batch_row():
    # The simulator draws one exchange's book at its reset through rng.env(e).
    risk = RiskParams()
    pop = TraderPopulation(PopulationParams())
    batch_rng, rng = BatchStreams([5, 6, 7]), BatchStreams([5, 6, 7])
    batch = pop.initial_state(batch_rng, 20, 100.0, risk)
    row = pop.initial_state(rng.env(1), 20, 100.0, risk)
    np.testing.assert_array_equal(row.size[0], batch.size[1])
    np.testing.assert_array_equal(row.collateral_usd[0], batch.collateral_usd[1])
    np.testing.assert_array_equal(rng.state[1], batch_rng.state[1])  # the view advanced it
    np.testing.assert_array_equal(rng.state[0], BatchStreams([5]).state[0])  # others untouched


# ---- near liquidation ----------------------------------------------------------------------


def near_book():
    # Account 0: long 10 at 100, equity 31 vs requirement 30 (< 1.25 x 30 = 37.5): near.
    # Account 1: equity 100, far from it.
    return SimState.create([[31.0, 100.0]], [[10.0, 10.0]], [[100.0, 100.0]], 0.0)


def test_near_liquidation_top_up_restores_one_plus_two_buffers():
    state = near_book()
    pop = quiet(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0)
    mark = np.array([100.0])
    ev = pop.step(streams(11), state, RiskParams(), mark, 1.0)
    assert state.collateral_usd[0, 0] == pytest.approx(1.5 * 30.0, **APPROX)  # equity 45
    assert state.collateral_usd[0, 1] == 100.0
    np.testing.assert_array_equal(state.size[:, :, 0], [[10.0, 10.0]])
    assert ev.top_ups[0] == 1 and ev.reductions[0] == 0
    assert ev.top_up_usd[0] == pytest.approx(14.0, **APPROX)
    assert state.net_deposits_usd[0] == pytest.approx(14.0, **APPROX)
    assert_books_balance(state, mark)


def test_near_liquidation_top_up_with_tiers_and_a_price_move():
    # Short 10 entered at 97, mark 100: a loss of 30 on 59 of collateral leaves equity 29,
    # below the tiered requirement (first bracket 0.4% scaled by 0.03 / 0.004: 3% of 1,000).
    tiers = MarginTiers.binance_btcusdt_2021()
    risk = RiskParams(mmr=0.03, imr=0.05, tiers=tiers)
    state = SimState.create([[59.0]], [[-10.0]], [[97.0]], 0.0)
    mark = np.array([100.0])
    req = float(maintenance_requirement(np.array([1000.0]), 0.03, tiers)[0])
    assert req == pytest.approx(30.0, rel=1e-12)
    ev = quiet(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0).step(
        streams(12), state, risk, mark, 1.0
    )
    equity = state.collateral_usd[0, 0] + state.size[0, 0, 0] * (100.0 - 97.0)
    assert equity == pytest.approx(1.5 * req, **APPROX)  # 45
    assert ev.top_up_usd[0] == pytest.approx(16.0, **APPROX)


def test_near_liquidation_tiers_use_the_bracket_of_the_notional():
    # Long 1,000 at 100 (notional 100,000, bracket 2: 0.5%, cum 50 x ... scaled by 7.5):
    # requirement (100,000 x 0.005 - 50) x 0.03 / 0.004 = 3,375; equity 4,000 < 1.25 x 3,375.
    tiers = MarginTiers.binance_btcusdt_2021()
    risk = RiskParams(mmr=0.03, imr=0.05, tiers=tiers)
    req = float(maintenance_requirement(np.array([1e5]), 0.03, tiers)[0])
    assert req == pytest.approx((1e5 * 0.005 - 5e4 * 0.001) * 7.5, rel=1e-12)
    state = SimState.create([[4000.0]], [[1000.0]], [[100.0]], 0.0)
    ev = quiet(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0).step(
        streams(12), state, risk, np.array([100.0]), 1.0
    )
    assert ev.top_up_usd[0] == pytest.approx(1.5 * req - 4000.0, **APPROX)


def test_near_liquidation_reduce_halves_the_position_and_pays_the_fee():
    state = near_book()
    pop = quiet(react_rate_per_min=1.0, top_up_share=0.0, reduce_share=1.0)
    mark = np.array([100.0])
    ev = pop.step(streams(13), state, RiskParams(), mark, 1.0)
    book(state, ev)
    np.testing.assert_array_equal(state.size[:, :, 0], [[5.0, 10.0]])
    assert state.collateral_usd[0, 0] == pytest.approx(31.0 - 0.25, **APPROX)  # 500 x 5 bps
    assert ev.reductions[0] == 1 and ev.top_ups[0] == 0
    assert ev.trading_fees_usd[0] == pytest.approx(0.25, **APPROX)
    assert ev.fund_trading_fee_income_usd[0] == pytest.approx(0.025, **APPROX)
    assert state.fee_revenue_usd[0] == pytest.approx(0.225, **APPROX)
    assert ev.volume_usd[0] == pytest.approx(500.0, **APPROX)
    assert_books_balance(state, mark)


def test_near_liquidation_nobody_reacts_at_react_rate_zero():
    state = near_book()
    ev = quiet(top_up_share=1.0, reduce_share=0.0).step(
        streams(14), state, RiskParams(), np.array([100.0]), 1.0
    )
    np.testing.assert_array_equal(state.collateral_usd, [[31.0, 100.0]])
    assert ev.top_ups[0] == 0


def test_reaction_shares_split_near_accounts_as_configured():
    # 4,000 identical near accounts, react rate 0.5 per minute: a quarter react (0.5 x 0.5
    # in 0.5 minutes... here 1 minute: p = 0.5), of which 20% top up and 20% halve.
    n = 4000
    state = SimState.create(np.full((1, n), 31.0), np.full((1, n), 10.0), np.full((1, n), 100.0), 0)
    ev = quiet(react_rate_per_min=0.5).step(streams(15), state, RiskParams(), [100.0], 1.0)
    # Each count is binomial(4,000, 0.1): mean 400, sd 19; 80 is over 4 sd.
    assert ev.top_ups[0] == pytest.approx(400, abs=80)
    assert ev.reductions[0] == pytest.approx(400, abs=80)


# ---- exits ---------------------------------------------------------------------------------


def test_huge_exit_rate_empties_every_slot_and_withdraws_what_is_left():
    risk = RiskParams()
    pop = TraderPopulation(PopulationParams())
    state = pop.initial_state(streams(15, 3), 50, 100.0, risk)
    mark = np.full(3, 101.0)  # shorts lose 1%: at most 20% of their margin
    m = mark[:, None]
    c, q, e = col(state)
    left = c + q * (m - e)
    left -= 0.0005 * np.abs(q) * m  # the closing fee
    assert (left[q != 0] > 0).all()
    n_open = (q != 0).sum(axis=1)
    ev = quiet(exit_rate_per_day=1e12).step(streams(16, 3), state, risk, mark, 1.0)
    book(state, ev)
    for arr in (state.size, state.collateral_usd, state.entry_price):
        np.testing.assert_array_equal(arr, 0.0)
    np.testing.assert_array_equal(ev.exits, n_open)
    np.testing.assert_allclose(ev.withdrawn_usd, left.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(state.net_deposits_usd, -ev.withdrawn_usd, rtol=1e-12)
    assert_books_balance(state, mark)


def test_exit_hazard_per_tick_is_one_minus_exp_of_rate_times_tick():
    # 0.5 per day over a 60-minute tick: p = 1 - exp(-0.5 / 24) = 2.06% of 20,000 accounts.
    risk = RiskParams()
    pop = quiet(exit_rate_per_day=0.5)
    state = pop.initial_state(streams(16), 20_000, 100.0, risk, fill_frac=1.0)
    ev = pop.step(streams(17), state, risk, np.array([100.0]), 60.0)
    p = -math.expm1(-0.5 / 24.0)
    # Binomial(20,000, p): sd sqrt(20,000 p (1 - p)) = 20; 5 sd.
    assert ev.exits[0] == pytest.approx(20_000 * p, abs=5 * math.sqrt(20_000 * p * (1 - p)))


def test_flat_accounts_withdraw_and_debts_stay_on_the_books():
    # Flat accounts: 50 left by a liquidation, a 5 USD debt, 1e-9 of rounding dust.
    state = SimState.create([[50.0, -5.0, -1e-9, 100.0]], [[0, 0, 0, 1.0]],
                            [[0, 0, 0, 100.0]], 0.0)  # fmt: skip
    mark = np.array([100.0])
    ev = quiet().step(streams(17), state, RiskParams(), mark, 1.0)
    np.testing.assert_array_equal(state.collateral_usd, [[0.0, -5.0, 0.0, 100.0]])
    assert ev.exits[0] == 2
    assert ev.withdrawn_usd[0] == pytest.approx(50.0 - 1e-9, rel=1e-15)
    assert_books_balance(state, mark)


def test_bankrupt_accounts_do_not_exit():
    # Equity 100 - 10 x 20 = -100: the liquidation engine, not an exit, closes this account.
    state = SimState.create([[100.0]], [[10.0]], [[100.0]], 0.0)
    mark = np.array([80.0])
    ev = quiet(exit_rate_per_day=1e12).step(streams(18), state, RiskParams(), mark, 1.0)
    assert ev.exits[0] == 0 and state.size[0, 0, 0] == 10.0


# ---- ordinary volume -----------------------------------------------------------------------


def test_volume_matches_target_and_leaves_positions_unchanged():
    risk = RiskParams(imr=np.array([0.05, 0.1]))
    pop = quiet(turnover_per_day=2.0)
    state = pop.initial_state(streams(19, 2), 2000, 100.0, risk)
    before = state.copy()
    mark = np.full(2, 100.0)
    volume_mult = np.array([1.0, 3.0])
    ev = pop.step(streams(20, 2), state, risk, mark, 5.0, volume_mult=volume_mult)
    book(state, ev)
    oi = 0.5 * np.abs(before.size[:, :, 0]).sum(axis=1) * mark
    target = 2.0 * oi * 5.0 / 1440.0 * np.array([1.0, 2.0**-0.8]) * volume_mult
    np.testing.assert_allclose(ev.volume_usd, target, rtol=1e-9)
    np.testing.assert_allclose(state.size, before.size, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ev.trading_fees_usd, 0.0005 * ev.volume_usd, rtol=1e-12)
    np.testing.assert_allclose(ev.fund_trading_fee_income_usd, 0.1 * ev.trading_fees_usd)
    # The fees are the only cost: equity fell by exactly the fees, money stayed in the ledger.
    m = mark[:, None]

    def eq(s):
        c, q, e = col(s)
        return (c + q * (m - e)).sum(axis=1)

    np.testing.assert_allclose(eq(before) - eq(state), ev.trading_fees_usd, rtol=1e-9)
    assert_books_balance(state, mark)


def test_volume_beyond_what_the_drawn_accounts_can_carry_is_capped_at_full_round_trips():
    # A day's turnover in one tick: ~5% of accounts cannot trade 2x open interest, so each
    # drawn account closes and re-opens its whole position (entry moves to the mark).
    risk = RiskParams()
    pop = quiet(turnover_per_day=2.0)
    state = pop.initial_state(streams(24), 2000, 100.0, risk)
    before = state.copy()
    mark = np.array([101.0])
    ev = pop.step(streams(25), state, risk, mark, 1440.0)
    book(state, ev)
    traded = np.isclose(state.entry_price, 101.0, rtol=1e-12, atol=0)  # (q x 101) / q
    assert 0.02 < traded.sum() / 2000 < 0.08
    np.testing.assert_allclose(state.size, before.size, rtol=1e-12, atol=0)
    full = 2.0 * (np.abs(state.size) * 101.0)[traded].sum()
    assert ev.volume_usd[0] == pytest.approx(full, rel=1e-12)
    assert ev.volume_usd[0] < 0.5 * np.abs(before.size).sum() * 101.0  # short of the target
    assert_books_balance(state, mark)


# ---- whole runs ----------------------------------------------------------------------------


def liquidate_at_mark(state, risk, mark):
    """A stand-in margin engine: accounts below maintenance close whole at mark.

    Closing at mark with the fee can leave equity below zero: the account stays flat with
    negative collateral (bad debt on the books), which the population must leave alone.
    """
    m = mark[:, None]
    c, q, e = col(state)
    req = maintenance_requirement(np.abs(q) * m, risk.column("mmr"), risk.tiers)
    close = np.where((q != 0) & (c + q * (m - e) < req), -q, 0.0)
    result = execute_trades(state, risk, close, mark, mark)
    assert not result.rejected.any()  # reductions are never rejected
    receive(state.fund, result.fund_trading_fee_income_usd)
    return (close != 0).sum(axis=1)


@pytest.mark.parametrize(
    "risk",
    [
        RiskParams(mmr=np.array([0.03, 0.01, 0.03, 0.02]), imr=np.array([0.05, 0.02, 0.1, 0.05])),
        RiskParams(tiers=MarginTiers.binance_btcusdt_2021()),
    ],
    ids=["per-env", "tiers"],
)
def test_ledger_closes_over_500_crashy_steps_with_liquidations(risk):
    rng = np.random.default_rng(21)  # the market path and the modulation
    n_envs = 4
    pop_rng = streams(21, n_envs)
    pop = TraderPopulation(
        PopulationParams(arrival_rate_per_slot_per_day=per_slot(3.0, 500), exit_rate_per_day=5.0)
    )
    state = pop.initial_state(pop_rng, 500, 100.0, risk)
    mark = np.full(n_envs, 100.0)
    totals = {f.name: 0.0 for f in fields(PopulationEvents)}
    liquidations = 0
    for _ in range(500):
        r = rng.normal(0.0, 0.006, n_envs)
        shock = rng.random(n_envs)
        r = np.where(shock < 0.01, -0.25, np.where(shock > 0.995, 0.2, r))
        mark = mark * (1.0 + r)
        liquidations += liquidate_at_mark(state, risk, mark).sum()
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
        book(state, ev)
        assert_books_balance(state, mark)
        apply_funding(state, rng.normal(0.0, 1e-4, n_envs), mark)
        assert_books_balance(state, mark)
        for k, v in ev.as_dict().items():
            assert np.isfinite(v).all(), k
            totals[k] += float(np.sum(v))
    # The run exercised every path it claims to check.
    assert liquidations > 100
    for k in ("arrivals", "exits", "top_ups", "reductions", "volume_usd", "withdrawn_usd"):
        assert totals[k] > 0, k
    assert (state.collateral_usd < -1e-6).any()  # debts left by liquidations stayed


def run_population(seeds, marks, risk, pop, mults, n_accounts=200):
    """``initial_state``, then per tick a liquidation at mark, funding and a population step.

    ``marks`` is ``(ticks, envs)``; ``mults`` holds ``(envs,)`` arrays of the modulation.
    """
    rng = BatchStreams(seeds)
    state = pop.initial_state(rng, n_accounts, marks[0], risk)
    states, events = [state.copy()], []
    for t in range(1, marks.shape[0]):
        n_liq = liquidate_at_mark(state, risk, marks[t])
        paid = apply_funding(state, 1e-4 * np.sin(t + np.array(seeds)), marks[t])
        ev = pop.step(rng, state, risk, marks[t], 1.0, **mults)
        book(state, ev)
        events.append({**ev.as_dict(), "n_liquidations": n_liq, "funding_paid": paid})
        states.append(state.copy())
    return states, events, rng


def state_arrays(state):
    out = {f.name: getattr(state, f.name) for f in fields(SimState) if f.name != "fund"}
    out["fund_usd"] = state.fund_usd
    return out


def assert_row_equals(batch, e, single, label):
    """Exchange ``e`` of ``batch`` equals the single-exchange ``single`` bit for bit."""
    for name, arr in state_arrays(single).items():
        np.testing.assert_array_equal(state_arrays(batch)[name][e : e + 1], arr,
                                      err_msg=f"{name}, {label}")  # fmt: skip


def per_env_risk(n_envs):
    """Equal risk parameters given as ``(n_envs,)`` arrays (the simulator's per-env form)."""
    return RiskParams(mmr=np.full(n_envs, 0.03), imr=np.full(n_envs, 0.05),
                      taker_fee_rate=np.full(n_envs, 0.0005),
                      trading_fee_fund_share=np.full(n_envs, 0.1))  # fmt: skip


def test_same_seed_same_result_and_another_seed_differs():
    risk = RiskParams()
    pop = TraderPopulation(
        PopulationParams(arrival_rate_per_slot_per_day=per_slot(5.0, 100), exit_rate_per_day=20.0)
    )
    marks = 100.0 * np.cumprod(1.0 + np.random.default_rng(22).normal(0, 0.02, (31, 2)), axis=0)
    runs = [run_population(s, marks, risk, pop, {}, 100) for s in ([22, 23], [22, 23], [24, 25])]
    (s1, e1, _), (s2, e2, _), (s3, _, _) = runs
    for a, b in zip(s1, s2, strict=True):
        for name, arr in state_arrays(a).items():
            np.testing.assert_array_equal(arr, state_arrays(b)[name], err_msg=name)
    for a, b in zip(e1, e2, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(s1[-1].size, s3[-1].size)  # a different seed is a different run


def test_rng_must_have_one_row_per_exchange():
    pop = TraderPopulation(PopulationParams())
    state = pop.initial_state(streams(0, 2), 10, 100.0, RiskParams())
    with pytest.raises(ValueError, match="n_envs"):
        pop.step(streams(0, 3), state, RiskParams(), np.full(2, 100.0), 1.0)


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
    pop = TraderPopulation(
        PopulationParams(arrival_rate_per_slot_per_day=per_slot(3.0, 200), exit_rate_per_day=5.0)
    )
    mults = {"arrival_mult": 1.5, "volume_mult": 2.0}
    batch_states, batch_events, _ = run_population(seeds, marks, batch_risk, pop, mults)
    totals = dict.fromkeys(batch_events[0], 0.0)
    for e, seed in enumerate(seeds):
        states, events, _ = run_population([seed], marks[:, e : e + 1], single_risk, pop, mults)
        for t, (b, s) in enumerate(zip(batch_states, states, strict=True)):
            assert_row_equals(b, e, s, f"env {e}, tick {t}")
        for t, (b, s) in enumerate(zip(batch_events, events, strict=True)):
            for k, v in s.items():
                np.testing.assert_array_equal(b[k][e : e + 1], v, err_msg=f"{k}, env {e}, tick {t}")
    for ev in batch_events:
        for k, v in ev.items():
            totals[k] += float(np.sum(v))
    for k in ("arrivals", "exits", "top_ups", "reductions", "volume_usd", "n_liquidations"):
        assert totals[k] > 0, k  # the run exercised every path the equality covers


def test_exchanges_with_different_scenarios_in_one_batch_equal_each_alone():
    # Three different exchanges in one batch: calm, volatile with leverage build-up and
    # crowded longs, and a pump with high IMR, a zero fee and tiers-free per-env risk. Each
    # equals the same exchange stepped alone, bit for bit, over 50 steps (state, events, and
    # where its streams stand).
    seeds = [101, 202, 303]
    n_ticks = 50
    g = np.random.default_rng(5)
    vols = np.array([0.001, 0.02, 0.01])
    drift = np.array([0.0, -0.002, 0.01])
    marks = 100.0 * np.cumprod(1.0 + drift + vols * g.normal(size=(n_ticks + 1, 3)), axis=0)
    risk = RiskParams(mmr=np.array([0.03, 0.01, 0.1]), imr=np.array([0.05, 0.02, 0.2]),
                      taker_fee_rate=np.array([5e-4, 2e-4, 0.0]),
                      trading_fee_fund_share=np.array([0.1, 0.5, 1.0]))  # fmt: skip
    mults = {"arrival_mult": np.array([1.0, 3.0, 0.5]),
             "leverage_mult": np.array([1.0, 2.0, 0.8]),
             "long_share_shift": np.array([0.0, 0.3, -0.2]),
             "volume_mult": np.array([1.0, 0.0, 2.5])}  # fmt: skip
    # Isolated accounts (cross_share 0) run at order leverage, so some top up near liquidation.
    pop = TraderPopulation(PopulationParams(arrival_rate_per_slot_per_day=per_slot(4.0, 300),
                                            exit_rate_per_day=10.0, cross_share=0.0))  # fmt: skip
    batch_states, batch_events, batch_rng = run_population(seeds, marks, risk, pop, mults, 300)
    for e, seed in enumerate(seeds):
        one_risk = risk.take(np.array([e]))
        one_mults = {k: v[e : e + 1] for k, v in mults.items()}
        states, events, rng = run_population(
            [seed], marks[:, e : e + 1], one_risk, pop, one_mults, 300
        )
        for t, (b, s) in enumerate(zip(batch_states, states, strict=True)):
            assert_row_equals(b, e, s, f"env {e}, tick {t}")
        for t, (b, s) in enumerate(zip(batch_events, events, strict=True)):
            for k, v in s.items():
                np.testing.assert_array_equal(b[k][e : e + 1], v, err_msg=f"{k}, env {e}, tick {t}")
        np.testing.assert_array_equal(batch_rng.state[e], rng.state[0])
    counts = {k: sum(ev[k] for ev in batch_events) for k in ("arrivals", "exits", "top_ups")}
    assert all((v > 0).sum() >= 2 for v in counts.values()), counts


def test_reseeding_one_exchange_mid_run_equals_a_fresh_single_exchange():
    # Vector-env autoreset: exchange 1 is reset with seed 77 after 10 steps; from then on it
    # equals a single exchange started with seed 77, and its siblings are undisturbed.
    pop = TraderPopulation(
        PopulationParams(arrival_rate_per_slot_per_day=per_slot(3.0, 100), exit_rate_per_day=20.0)
    )
    risk = RiskParams()
    mark = np.full(3, 100.0)
    rng = BatchStreams([1, 2, 3])
    state = pop.initial_state(rng, 100, mark, risk)
    ref = BatchStreams([1, 2, 3])
    ref_state = pop.initial_state(ref, 100, mark, risk)
    for _ in range(10):
        pop.step(rng, state, risk, mark, 1.0)
        pop.step(ref, ref_state, risk, mark, 1.0)
    rng.reseed(1, 77)
    fresh = pop.initial_state(rng.env(1), 100, 100.0, risk)
    for name, value in state_arrays(fresh).items():
        if name != "fund_usd":
            getattr(state, name)[1] = value[0]
    alone_rng = BatchStreams([77])
    alone = pop.initial_state(alone_rng, 100, 100.0, risk)
    for _ in range(10):
        pop.step(rng, state, risk, mark, 1.0)
        pop.step(ref, ref_state, risk, mark, 1.0)
        pop.step(alone_rng, alone, risk, mark[:1], 1.0)
    np.testing.assert_array_equal(state.size[1], alone.size[0])
    np.testing.assert_array_equal(state.collateral_usd[1], alone.collateral_usd[0])
    for e in (0, 2):
        np.testing.assert_array_equal(state.size[e], ref_state.size[e])
        np.testing.assert_array_equal(rng.state[e], ref.state[e])


# ---- golden runs ---------------------------------------------------------------------------


def golden_run(tiers, crash, tick_minutes):
    """Three exchanges of 2,000 accounts for 200 steps of a random-walk (or crashing) mark.

    Per-exchange risk (a zero fee on none, different IMR caps), per-exchange modulation drawn
    each step, and a stand-in margin engine that closes at mark every account whose equity is
    below ``mmr x notional`` (flat MMR, so the run depends on this module and trading alone).
    Returns the run's totals: event sums, the final book and where exchange 0's streams stand.
    """
    g = np.random.default_rng(2024)
    n_envs = 3
    risk = RiskParams(mmr=np.array([0.03, 0.01, 0.02]), imr=np.array([0.05, 0.02, 0.04]),
                      taker_fee_rate=np.array([5e-4, 2e-4, 1e-3]),
                      tiers=MarginTiers.binance_btcusdt_2021() if tiers else None)  # fmt: skip
    pop = TraderPopulation(PopulationParams(arrival_rate_per_slot_per_day=per_slot(3.0, 2000),
                                            exit_rate_per_day=5.0))  # fmt: skip
    rng = BatchStreams([7, 8, 9])
    state = pop.initial_state(rng, 2000, 100.0, risk)
    mark = np.full(n_envs, 100.0)
    totals = dict.fromkeys(("arrivals", "exits", "top_ups", "reductions"), 0)
    usd = dict.fromkeys(("top_up_usd", "withdrawn_usd", "volume_usd", "trading_fees_usd"), 0.0)
    for t in range(200):
        drift = -0.03 if crash and 40 <= t < 50 else 0.0
        mark = mark * np.exp(drift + 0.01 * g.standard_normal(n_envs))
        c, q, e = col(state)
        m = mark[:, None]
        below = (q != 0.0) & (c + q * (m - e) < risk.column("mmr") * np.abs(q) * m)
        execute_trades(state, risk, np.where(below, -q, 0.0), mark, mark)
        ev = pop.step(rng, state, risk, mark, tick_minutes,
                      arrival_mult=g.uniform(0.5, 3.0, n_envs),
                      leverage_mult=g.uniform(0.8, 2.0, n_envs),
                      long_share_shift=g.uniform(-0.3, 0.3, n_envs),
                      volume_mult=g.uniform(0.0, 3.0, n_envs),
                      exit_mult=g.uniform(0.5, 2.0, n_envs))  # fmt: skip
        for k in totals:
            totals[k] += int(getattr(ev, k).sum())
        for k in usd:
            usd[k] += float(getattr(ev, k).sum())
    usd["open_interest_base"] = float(np.abs(state.size).sum())
    usd["collateral_usd"] = float(state.collateral_usd.sum())
    usd["counterparty_cash_usd"] = float(state.counterparty_cash_usd.sum())
    words = [int(w) for w in rng.state[0].ravel()]
    return totals, usd, int((state.size != 0.0).sum()), words


GOLDEN = {
    "flat-1min": (
        (False, False, 1.0),
        {"arrivals": 3406, "exits": 2785, "top_ups": 16, "reductions": 12},
        {"top_up_usd": 2265.073633286709, "withdrawn_usd": 311455165.38387513,
         "volume_usd": 130706565.09676684, "trading_fees_usd": 62199.899058244955,
         "open_interest_base": 639856.8865824516, "collateral_usd": 379977573.8155344,
         "counterparty_cash_usd": -386905.2007659696},
        3204,
        [3705071806343067853, 8663844495795467510, 1523268277452911418, 4003186108515200237,
         5365220377745496958, 1710578643150997523, 17595790323592162176, 13727737148365794553],
    ),
    "tiers-crash-5min": (
        (True, True, 5.0),
        {"arrivals": 17416, "exits": 15978, "top_ups": 104, "reductions": 106},
        {"top_up_usd": 23936.331811301294, "withdrawn_usd": 1666797743.4737122,
         "volume_usd": 718189907.2606348, "trading_fees_usd": 334207.53429833654,
         "open_interest_base": 1115647.1872436458, "collateral_usd": 422901994.27977854,
         "counterparty_cash_usd": -2061793.0221954938},
        3935,
        [15595505617719103594, 8601707951761506122, 4893704751020654543, 9580174598545376970,
         17459250632925082053, 17496195227877476481, 359544782716742107, 103980754056367188],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_run_is_unchanged(name):
    # Numbers printed from the population as of its balance sheets (issue 16: cross accounts
    # with free collateral, seven draws per trader, the exit multiplier): a faster kernel
    # must make the same draws in the same order and the same arithmetic per account, so
    # counts and the streams' positions match exactly and sums to rounding of the
    # platform's libm at most.
    args, counts, usd, n_open, words = GOLDEN[name]
    got_counts, got_usd, got_open, got_words = golden_run(*args)
    assert got_counts == counts
    assert got_usd == pytest.approx(usd, rel=1e-12)
    assert got_open == n_open
    assert got_words == words


def test_one_exchange_step_equals_its_row_of_the_batch_step():
    # The compiled tick steps one exchange at a time through population_step_exchange (the
    # batch kernel's loop body): each exchange must come out exactly as its row of the batch
    # step, state, streams and events, under tiers and per-exchange modulation.
    risk = RiskParams(mmr=np.array([0.03, 0.01, 0.02]), imr=np.array([0.05, 0.02, 0.04]),
                      tiers=MarginTiers.binance_btcusdt_2021())  # fmt: skip
    pop = TraderPopulation(PopulationParams(arrival_rate_per_slot_per_day=per_slot(3.0, 300),
                                            exit_rate_per_day=20.0))  # fmt: skip
    mark = np.array([97.0, 101.0, 100.0])
    mod = {
        "arrival_mult": np.array([0.5, 2.0, 1.0]),
        "leverage_mult": np.array([1.0, 1.5, 0.9]),
        "long_share_shift": np.array([0.1, -0.2, 0.0]),
        "volume_mult": np.array([1.0, 0.0, 2.5]),
        "exit_mult": np.array([1.0, 3.0, 0.5]),
    }
    caps = {
        "halt_mask": np.array([0, kernels.HALT_WITHDRAWALS, 0]),
        "leverage_cap": np.array([math.inf, 10.0, 30.0]),
        "oi_cap_usd": np.array([math.inf, math.inf, 2e6]),
        "first_slot": np.array([0, 1, 3]),
    }
    for seed in range(3):
        rng_a, rng_b = streams(seed, 3), streams(seed, 3)
        batch = pop.initial_state(rng_a, 300, 100.0, risk)
        alone = batch.copy()
        rng_b.state[:] = rng_a.state
        ev = pop.step(rng_a, batch, risk, mark, 5.0, **mod, **caps)
        packed = risk.packed(3)
        floors, rates, cums, base = risk.tier_table()
        chosen = np.empty(300, dtype=np.int64)
        flags = np.zeros(304, dtype=np.uint8)
        for e in range(3):
            got = kernels.population_step_exchange(
                e, rng_b.state, alone.collateral_usd, alone.size, alone.entry_price,
                alone.counterparty_size, alone.counterparty_cash_usd, alone.fee_revenue_usd,
                alone.net_deposits_usd, packed, floors, rates, cums, base,
                pop.params.columns(5.0), float(mark[e]), *(float(v[e]) for v in mod.values()),
                int(caps["halt_mask"][e]), float(caps["leverage_cap"][e]),
                float(caps["oi_cap_usd"][e]), int(caps["first_slot"][e]), chosen, flags,
            )  # fmt: skip
            want = [getattr(ev, f.name)[e] for f in fields(PopulationEvents)]
            assert list(got) == want
        for f in fields(SimState):
            if f.name != "fund":
                np.testing.assert_array_equal(getattr(alone, f.name), getattr(batch, f.name))
        np.testing.assert_array_equal(rng_b.state, rng_a.state)
        assert ev.exits.sum() > 0 and ev.arrivals.sum() > 0 and ev.volume_usd.sum() > 0
