"""The venue's top-up of an exhausted fund: when it fires, how much, how often, and the ledger."""

import dataclasses

import numpy as np
import pytest

from fundgym.envs.config import make_config
from fundgym.envs.core.params import RiskParams
from fundgym.envs.fund import kernels as fk
from fundgym.envs.fund.portfolio import (
    AllocationParams,
    FundPortfolio,
    inject_if_exhausted,
    settle,
)
from fundgym.envs.scenarios import Scenario, load_scenario
from fundgym.envs.schema import SchemaError
from fundgym.envs.simulator import ExchangeSimulator

P = AllocationParams()


def fund(stable_usd: float, injection_usd: float, allowance: int) -> FundPortfolio:
    """A one-exchange fund holding ``stable_usd``, marked at 100, with a top-up allowance."""
    pf = FundPortfolio.from_stable([stable_usd])
    pf.mark_price[:] = 100.0
    pf.mark_vol_annual[:] = 0.8
    pf.injection_usd[:] = injection_usd
    pf.injections_left[:] = allowance
    return pf


def test_a_shortfall_that_empties_the_fund_tops_it_up_once():
    # $100 in the fund, $250 of shortfall: it pays $100 and is empty; the tick had bad debt,
    # so the venue injects its $1,000. By hand: stable 0 + 1,000; one injection, none left.
    pf = fund(100.0, 1_000.0, allowance=1)
    paid = settle(pf, [0.0], [250.0], [100.0], [0.8], [False], P)
    assert paid[0] == 100.0
    assert pf.stable_usd[0] == 0.0
    injected = inject_if_exhausted(pf, [250.0], [False], P)
    assert injected[0] == 1_000.0
    assert pf.stable_usd[0] == 1_000.0
    assert (pf.injections[0], pf.injections_left[0], pf.injected_usd[0]) == (1.0, 0.0, 1_000.0)
    # The accounting identity with the top-up as its own term: 100 - 100 + 1,000.
    value = pf.value_usd(pf.mark_price, pf.mark_vol_annual)[0]
    assert value == pf.initial_value_usd[0] + pf.received_usd[0] + pf.injected_usd[0] - 100.0
    # Emptied again: the allowance is spent, nothing more comes.
    settle(pf, [0.0], [5_000.0], [100.0], [0.8], [False], P)
    assert inject_if_exhausted(pf, [5_000.0], [False], P)[0] == 0.0
    assert (pf.injections[0], pf.stable_usd[0]) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("stable_usd", "bad_debt_usd", "allowance", "injection_usd"),
    [
        (0.5, 10.0, 3, 1_000.0),  # $0.50 left is more than 1e-9 of a top-up: not exhausted
        (0.0, 0.0, 3, 1_000.0),  # empty, but no bad debt this tick: nothing asked of it
        (0.0, 10.0, 0, 1_000.0),  # no allowance
        (0.0, 10.0, 3, 0.0),  # top-ups off (fund_injection_frac 0)
    ],
)
def test_no_top_up_unless_bad_debt_found_the_fund_empty_with_an_allowance(
    stable_usd, bad_debt_usd, allowance, injection_usd
):
    pf = fund(stable_usd, injection_usd, allowance)
    assert inject_if_exhausted(pf, [bad_debt_usd], [False], P)[0] == 0.0
    assert (pf.stable_usd[0], pf.injections[0], pf.injected_usd[0]) == (stable_usd, 0.0, 0.0)


def test_a_fund_whose_only_holding_is_frozen_yield_is_exhausted():
    # Under stress no yield can be withdrawn (yield_withdraw_frac_stressed 0): the fund is
    # worth $500 but can pay nothing, so bad debt tops it up.
    terms = AllocationParams(yield_withdraw_frac_stressed=0.0)
    pf = fund(0.0, 1_000.0, allowance=2)
    pf.yield_usd[:] = 500.0
    assert inject_if_exhausted(pf, [1.0], [False], terms)[0] == 0.0  # unstressed: it can pay
    assert inject_if_exhausted(pf, [1.0], [True], terms)[0] == 1_000.0
    assert (pf.stable_usd[0], pf.yield_usd[0], pf.injections_left[0]) == (1_000.0, 500.0, 1.0)


def test_compiled_top_up_equals_numpy_to_the_bit():
    # Four exchanges: exhausted, dust below the threshold, not exhausted, no allowance.
    stable = [0.0, 1e-7, 3.0, 0.0]
    ref = FundPortfolio.from_stable(stable)
    ref.mark_price[:] = 100.0
    ref.mark_vol_annual[:] = 0.8
    ref.injection_usd[:] = [1_000.0, 1_000.0, 1_000.0, 1_000.0]
    ref.injections_left[:] = [2.0, 2.0, 2.0, 0.0]
    comp = dataclasses.replace(ref, **{f.name: getattr(ref, f.name).copy() for f in
                                       dataclasses.fields(ref)})  # fmt: skip
    arrays = fk.fund_arrays(comp)
    terms = fk.allocation_terms(P, 1.0)
    bad = np.array([1.0, 1.0, 1.0, 1.0])
    want = inject_if_exhausted(ref, bad, np.zeros(4, bool), P)
    got = [fk.inject_if_exhausted_one(arrays, e, bad[e], False, terms) for e in range(4)]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [1_000.0, 1_000.0, 0.0, 0.0])
    for f in dataclasses.fields(ref):
        np.testing.assert_array_equal(getattr(comp, f.name), getattr(ref, f.name), f.name)


def pump_early() -> Scenario:
    """``oracle_manipulation`` with its pump at minute 20: bad debt within a few hundred ticks."""
    sc = load_scenario("oracle_manipulation")
    assert sc.crash is not None
    collapses = tuple(dataclasses.replace(c, start_minute=20.0) for c in sc.depth.collapses)
    return dataclasses.replace(
        sc,
        crash=dataclasses.replace(sc.crash, start_minute=20.0),
        depth=dataclasses.replace(sc.depth, collapses=collapses),
    )


def simulator(frac: float, most: int, **kwargs: object) -> ExchangeSimulator:
    return ExchangeSimulator(
        pump_early(),
        RiskParams(fallback="socialize"),
        n_envs=2,
        n_accounts=64,
        seed=[1, 2],
        fund_to_oi_frac=0.0,
        fund_injection_frac=frac,
        fund_injection_max=most,
        population_minutes=2.0,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("most", [0, 1, 3])
def test_top_ups_in_a_run_are_frac_times_open_interest_at_most_max_times(most):
    # A fund of 0 and top-ups of 0.01% of open interest: the pump's bad debt empties each
    # one, so every exchange uses its whole allowance, and not one more.
    sim = simulator(1e-4, most)
    n = min(240, int(sim.market.n_ticks[0]))
    sim.advance(n)
    pf = sim.state.fund
    size = 1e-4 * sim.initial_open_interest_usd
    np.testing.assert_array_equal(pf.injection_usd, size)
    np.testing.assert_array_equal(pf.injections, [most, most])
    np.testing.assert_allclose(pf.injected_usd, most * size, rtol=1e-15)
    # Outside money: booked as a deposit, the ledger (fund value included) still closes.
    assert sim.max_ledger_error_usd <= 1e-9 * float(sim.state.initial_total_usd.max())


def test_reset_restores_the_allowance():
    sim = simulator(1e-4, 2)
    sim.advance(min(240, int(sim.market.n_ticks[0])))
    assert (sim.state.fund.injections == 2).all()
    sim.reset_env(0, 7)
    assert (sim.state.fund.injections[0], sim.state.fund.injections_left[0]) == (0.0, 2.0)
    assert sim.state.fund.injected_usd[0] == 0.0
    assert sim.state.fund.injections[1] == 2.0


def test_compiled_ticks_with_top_ups_equal_the_numpy_reference():
    sims = [simulator(1e-4, 3) for _ in range(2)]
    for sim in sims:  # the second exchange holds every bucket: liquid value below its value
        sim.set_allocation(np.array([[1.0, 0.0, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2]]))
    compiled, reference = sims
    n = min(240, int(compiled.market.n_ticks[0]))
    block = compiled.advance(n)
    events = np.stack([reference.reference_step().events.data for _ in range(n)])
    np.testing.assert_array_equal(block.events, events)
    for f in dataclasses.fields(compiled.state):
        x, y = getattr(compiled.state, f.name), getattr(reference.state, f.name)
        if f.name == "fund":
            for g in dataclasses.fields(x):
                np.testing.assert_array_equal(getattr(x, g.name), getattr(y, g.name), g.name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)
    assert compiled.state.fund.injections[0] > 0  # the case exercises what it names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fund_injection_frac": -0.1}, r"fund_injection_frac must lie in \[0, 10\], got -0.1"),
        ({"fund_injection_frac": 11.0}, r"fund_injection_frac must lie in \[0, 10\], got 11.0"),
        ({"fund_injection_max": -1}, r"fund_injection_max must be a whole number .* got -1"),
        ({"fund_injection_max": 1.5}, r"fund_injection_max must be a whole number .* got 1.5"),
    ],
)
def test_simulator_rejects_bad_top_up_settings_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExchangeSimulator(load_scenario("calm"), n_accounts=64, **kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fund_injection_frac", -0.1),
        ("fund_injection_frac", 10.5),
        ("fund_injection_max", -1),
        ("fund_injection_max", 1001),
    ],
)
def test_env_config_rejects_bad_top_up_settings_naming_the_field(field, value):
    with pytest.raises(SchemaError, match=rf"{field}.*{value}"):
        make_config(**{field: value})


def test_env_config_defaults_leave_top_ups_off():
    cfg = make_config()
    assert (cfg.fund_injection_frac, cfg.fund_injection_max) == (0.0, 0)
