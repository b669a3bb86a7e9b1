"""Venue events (outage, halts, settlement, leverage caps, reduce-only), the attacker and the
mark cap: hand-worked cases, the ledger, and the compiled tick equal to the numpy reference."""

import dataclasses
import math

import numpy as np
import pytest

from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.venue_events import (
    VF_ATTACKER,
    VF_CLOSED,
    VF_ENGINE_OFF,
    VF_OUTAGE,
    VF_REDUCE_ONLY,
    VF_SETTLE,
    VF_SETTLE_WINDOW,
    VF_WITHDRAWAL_HALT,
    event_arrays,
)
from fundgym.envs.scenarios import load_scenario, scenario_from_dict
from fundgym.envs.schema import SchemaError
from fundgym.envs.simulator import ExchangeSimulator
from fundgym.envs.state import ledger_error

N_ACCOUNTS = 64


def scenario(events=(), horizon=60.0, legs=None, attacker=None, **extra):
    """A short synthetic market: GBM at 50%, one crash leg if given."""
    data = {
        "name": "venue_test",
        "description": "venue events test",
        "seed": 7,
        "horizon_minutes": horizon,
        "price": {
            "initial": 100.0,
            "model": "gbm",
            "vol_annual": 0.5,
            "jumps": {"rate_per_day": 0},
        },
        "depth": {"normal_usd_per_pct": 1e9, "noise_frac": 0.0},
        "events": list(events),
        **extra,
    }
    if legs is not None:
        data["crash"] = {"start_minute": 10, "vol_multiplier": 1.0, "legs": legs}
    if attacker is not None:
        data["attacker"] = attacker
    return scenario_from_dict(data)


def no_traders(horizon):
    """An outage over the whole episode with the engine on: the population never steps."""
    return {"kind": "outage", "start_minute": 0, "minutes": horizon, "engine_runs": True}


# ---------------------------------------------------------------- schema and arrays ----


def test_event_arrays_map_minutes_to_ticks():
    sc = scenario(
        [
            {"kind": "outage", "start_minute": 5, "minutes": 3, "engine_runs": False},
            {"kind": "withdrawal_halt", "start_minute": 0, "minutes": 2},
            {"kind": "reduce_only", "start_minute": 58, "minutes": 10},
            {"kind": "leverage_cap", "start_minute": 20, "max_leverage": 8},
            {"kind": "leverage_cap", "start_minute": 30, "minutes": 5, "max_leverage": 4},
            {"kind": "settlement", "start_minute": 50, "index_window_minutes": 3},
        ]
    )
    flags, cap = event_arrays(sc)
    assert flags.shape == cap.shape == (60,)
    outage = VF_OUTAGE | VF_ENGINE_OFF
    assert [bool(f & outage == outage) for f in flags[4:9]] == [False, True, True, True, False]
    assert list(np.flatnonzero(flags & VF_WITHDRAWAL_HALT)) == [0, 1]
    assert list(np.flatnonzero(flags & VF_REDUCE_ONLY)) == [58, 59]
    assert np.isinf(cap[:20]).all() and (cap[20:30] == 8).all()
    assert (cap[30:35] == 4).all() and (cap[35:] == 8).all()  # the lowest cap holds
    assert list(np.flatnonzero(flags & VF_SETTLE_WINDOW)) == [48, 49, 50]
    assert list(np.flatnonzero(flags & VF_SETTLE)) == [50]
    assert list(np.flatnonzero(flags & VF_CLOSED)) == list(range(50, 60))
    assert not (flags & VF_ATTACKER).any()


@pytest.mark.parametrize(
    ("event", "field", "text"),
    [
        ({"kind": "outage", "start_minute": 1, "minutes": 2}, "engine_runs", "required"),
        ({"kind": "withdrawal_halt", "start_minute": 1}, "minutes", "required"),
        (
            {"kind": "settlement", "start_minute": 1, "index_window_minutes": 3, "minutes": 4},
            "minutes",
            "not a field of a 'settlement' event",
        ),
        (
            {"kind": "leverage_cap", "start_minute": 1, "max_leverage": 0.5},
            "max_leverage",
            "[1.0, 1000.0]",
        ),
        ({"kind": "halt", "start_minute": 1}, "kind", "one of"),
        ({"kind": "reduce_only", "start_minute": 600, "minutes": 1}, "start_minute", "horizon"),
    ],
)
def test_bad_events_are_refused_naming_the_field(event, field, text):
    with pytest.raises(SchemaError) as err:
        scenario([event])
    assert f"events[0].{field}" in str(err.value)
    assert text in str(err.value)


def test_two_settlements_are_refused():
    settle = {"kind": "settlement", "start_minute": 5, "index_window_minutes": 1}
    with pytest.raises(SchemaError, match="at most one settlement"):
        scenario([settle, {**settle, "start_minute": 9}])


# ---------------------------------------------------------------- settlement ----


def test_settlement_closes_every_position_at_the_window_average():
    sc = scenario([{"kind": "settlement", "start_minute": 30, "index_window_minutes": 4}])
    sim = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=11, fund_to_oi_frac=0.05)
    block = sim.advance(30)  # ticks 0-29
    st = sim.state
    coll, size, entry = st.collateral_usd.copy(), st.size.copy(), st.entry_price.copy()
    assert (size != 0).sum() > 10
    settle = sim.advance(1)  # tick 30 settles
    index = np.concatenate(
        [block.column("index_price")[27:, 0], settle.column("index_price")[:, 0]]
    )
    price = (index[0] + index[1] + index[2] + index[3]) / 4.0  # the four window ticks
    assert settle.event("settlement_price")[0, 0] == pytest.approx(price, rel=1e-15)
    expected = coll[0] + size[0, :, 0] * (price - entry[0, :, 0])
    bankrupt = np.maximum(-expected, 0.0).sum()
    np.testing.assert_allclose(st.collateral_usd[0], np.maximum(expected, 0.0), rtol=1e-12)
    assert (st.size == 0).all() and st.counterparty_size[0, 0] == 0.0
    assert settle.event("bad_debt_usd")[0, 0] == pytest.approx(bankrupt, abs=1e-6)
    assert abs(ledger_error(st, settle.column("mark_price")[0])[0]) < 1e-6
    # Closed: no trading, liquidations or funding after.
    after = sim.advance(sim.market.n_ticks[0] - sim.t)
    assert (after.event("market_closed") == 1.0).all()
    assert (after.event("trading_fees_usd") == 0).all()
    assert (after.event("n_liquidations") == 0).all() and (sim.state.size == 0).all()
    assert sim.max_ledger_error_usd < 1e-6


def test_a_bankrupt_account_at_settlement_is_paid_by_the_fund():
    # A -50% leg with the engine off until the settlement: longs end below zero and the fund
    # pays their debt, as it pays the engine's.
    sc = scenario(
        [
            {"kind": "outage", "start_minute": 0, "minutes": 40, "engine_runs": False},
            {"kind": "settlement", "start_minute": 40, "index_window_minutes": 1},
        ],
        legs=[{"kind": "decline", "minutes": 20, "return_frac": -0.5}],
    )
    sim = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=3, fund_to_oi_frac=10.0)
    fund0 = float(sim.fund_value_usd()[0])
    block = sim.advance(41)
    debt = float(block.event("bad_debt_usd")[40, 0])
    assert debt > 0.0
    assert block.event("shortfall_usd")[40, 0] == pytest.approx(debt)
    assert (block.event("n_liquidations")[:40] == 0).all()
    assert fund0 - float(sim.fund_value_usd()[0]) == pytest.approx(debt, rel=1e-6)
    assert sim.max_ledger_error_usd < 1e-6


# ---------------------------------------------------------------- outage and halts ----


@pytest.mark.parametrize("engine_runs", [True, False])
def test_outage_stops_traders_and_the_engine_only_when_told(engine_runs):
    outage = {"kind": "outage", "start_minute": 10, "minutes": 30, "engine_runs": engine_runs}
    sc = scenario([outage], legs=[{"kind": "decline", "minutes": 20, "return_frac": -0.4}])
    sim = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=5)
    block = sim.advance(60)
    inside = slice(10, 40)
    assert (block.event("trading_fees_usd")[inside] == 0).all()
    assert block.event("trading_fees_usd")[:10].sum() > 0
    liquidated = block.event("n_liquidations")[inside].sum()
    assert (liquidated > 0) if engine_runs else (liquidated == 0)
    assert sim.max_ledger_error_usd < 1e-6


def test_reduce_only_opens_no_position_and_the_leverage_cap_bounds_new_ones():
    sc = scenario(
        [
            {"kind": "reduce_only", "start_minute": 0, "minutes": 30},
            {"kind": "leverage_cap", "start_minute": 30, "max_leverage": 2},
        ],
        horizon=240,
    )
    sim = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=9)
    for _ in range(30):
        was_open = sim.state.size[0, :, 0] != 0
        sim.step()
        assert not ((sim.state.size[0, :, 0] != 0) & ~was_open).any()
    opened = np.zeros(N_ACCOUNTS, dtype=bool)
    leverage = np.zeros(N_ACCOUNTS)
    for _ in range(210):
        was_open = sim.state.size[0, :, 0] != 0
        sim.step()
        st = sim.state
        new = (st.size[0, :, 0] != 0) & ~was_open
        leverage[new] = (
            np.abs(st.size[0, new, 0]) * st.entry_price[0, new, 0] / st.collateral_usd[0, new]
        )
        opened |= new
    assert opened.sum() > 0
    assert leverage[opened].max() <= 2.0


# ---------------------------------------------------------------- the attacker ----


#: No basis and no interest: a zero funding rate, so the attacker's balance moves by its own
#: withdrawals alone.
NO_FUNDING = {"venue": {"basis_noise_bps": 0.0}, "funding": {"interest_per_interval": 0.0}}
ATTACKER = {"margin_usd": 5e6, "notional_usd": 1.84e7, "side": "long", "withdraw_start_minute": 20}


@pytest.mark.parametrize("haircut", [0.0, 1.0])
def test_attacker_withdraws_against_unrealised_pnl_up_to_the_haircut(haircut):
    legs = [{"kind": "recovery", "minutes": 5, "return_frac": 1.0}]  # the pump: x2 by minute 15
    sc = scenario([no_traders(60)], legs=legs, attacker=ATTACKER, **NO_FUNDING)
    risk = RiskParams(unrealised_pnl_haircut_frac=haircut)
    sim = ExchangeSimulator(sc, risk, n_accounts=N_ACCOUNTS, seed=4)
    st = sim.state
    q = st.size[0, 0, 0]
    assert q == pytest.approx(1.84e7 / 100.0) and st.entry_price[0, 0, 0] == 100.0
    assert st.collateral_usd[0, 0] == 5e6
    block = sim.advance(20)
    assert (block.event("attacker_withdrawn_usd") == 0).all()
    # Just before the tick (ADL may have cut the profitable position while shorts failed).
    coll, q, entry = float(st.collateral_usd[0, 0]), st.size[0, 0, 0], st.entry_price[0, 0, 0]
    tick = sim.advance(1)
    oracle = float(tick.column("oracle_price")[0, 0])
    pnl = q * (oracle - entry)
    assert pnl > 1e7  # the pump doubled the price
    expected = coll + pnl - haircut * pnl - 0.05 * q * oracle
    assert tick.event("attacker_withdrawn_usd")[0, 0] == pytest.approx(expected, rel=1e-12)
    assert st.net_deposits_usd[0] == pytest.approx(-expected, rel=1e-12)  # it left the ledger
    assert sim.max_ledger_error_usd < 1e-6


def test_withdrawal_halt_stops_the_attacker():
    halt = {"kind": "withdrawal_halt", "start_minute": 0, "minutes": 60}
    sc = scenario([no_traders(60), halt], attacker={**ATTACKER, "withdraw_start_minute": 0})
    sim = ExchangeSimulator(sc, RiskParams(unrealised_pnl_haircut_frac=0.0), n_accounts=N_ACCOUNTS)
    assert (sim.advance(60).event("attacker_withdrawn_usd") == 0).all()


def test_the_attackers_bankruptcy_reaches_the_waterfall():
    # Pump x2, the attacker takes its profit, the price falls back below entry: it is
    # liquidated past bankruptcy and the loss is covered by the fund and beyond.
    legs = [
        {"kind": "recovery", "minutes": 5, "return_frac": 1.0},
        {"kind": "decline", "minutes": 5, "return_frac": -0.6},
    ]
    sc = scenario([no_traders(60)], legs=legs, attacker={**ATTACKER, "withdraw_start_minute": 15})
    sim = ExchangeSimulator(
        sc, RiskParams(unrealised_pnl_haircut_frac=0.0), n_accounts=N_ACCOUNTS, seed=4
    )
    block = sim.advance(60)
    withdrawn = block.event("attacker_withdrawn_usd").sum()
    assert withdrawn > 5e6
    assert block.event("bad_debt_usd").sum() > 0.5 * (withdrawn - 5e6)
    assert sim.state.size[0, 0, 0] == 0.0
    assert sim.max_ledger_error_usd < 1e-6


# ---------------------------------------------------------------- mark cap ----


def test_mark_cap_holds_the_mark_under_a_multiple_of_its_8_hour_average():
    legs = [{"kind": "recovery", "minutes": 5, "return_frac": 9.0}]  # x10 in five minutes
    events = [{"kind": "outage", "start_minute": 0, "minutes": 60, "engine_runs": False}]
    sc = scenario(events, legs=legs)
    free = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=2).advance(60)
    capped_sim = ExchangeSimulator(sc, RiskParams(mark_cap_mult=2.0), n_accounts=N_ACCOUNTS, seed=2)
    capped = capped_sim.advance(60)
    raw = free.column("mark_price")[:, 0]
    w = 1.0 - math.exp(-1.0 / 480.0)  # one minute of an 8-hour average
    avg = 100.0
    expected = np.empty(60)
    for k in range(60):
        expected[k] = min(raw[k], 2.0 * avg)
        avg += w * (expected[k] - avg)
    np.testing.assert_allclose(capped.column("mark_price")[:, 0], expected, rtol=1e-12)
    assert expected[-1] < 0.25 * raw[-1]  # the cap binds
    assert (capped.column("oracle_price")[:, 0] <= expected * (1 + 1e-12)).all()


# ---------------------------------------------------------------- compiled = reference ----


@pytest.mark.parametrize(("mode", "vault"), [("partial", 0.0), ("hyperliquid", 0.05)])
def test_compiled_tick_equals_the_reference_with_every_event(mode, vault):
    events = [
        {"kind": "withdrawal_halt", "start_minute": 2, "minutes": 3},
        {"kind": "outage", "start_minute": 6, "minutes": 4, "engine_runs": False},
        {"kind": "outage", "start_minute": 12, "minutes": 3, "engine_runs": True},
        {"kind": "reduce_only", "start_minute": 16, "minutes": 4},
        {"kind": "leverage_cap", "start_minute": 8, "max_leverage": 3},
        {"kind": "settlement", "start_minute": 34, "index_window_minutes": 5},
    ]
    legs = [
        {"kind": "recovery", "minutes": 5, "return_frac": 1.0},
        {"kind": "decline", "minutes": 10, "return_frac": -0.6},
    ]
    sc = scenario(events, horizon=40, legs=legs, attacker={**ATTACKER, "withdraw_start_minute": 3})
    risk = RiskParams(
        unrealised_pnl_haircut_frac=0.3, mark_cap_mult=1.5, oi_cap_frac=1.1, liquidation_mode=mode
    )
    kwargs = {
        "n_envs": 2,
        "n_accounts": N_ACCOUNTS,
        "seed": 21,
        "fund_to_oi_frac": 0.01,
        "vault_to_oi_frac": vault,
    }
    a = ExchangeSimulator(sc, risk, **kwargs)
    b = ExchangeSimulator(sc, risk, **kwargs)
    for k in range(40):
        ta = a.step()
        tb = b.reference_step()
        np.testing.assert_array_equal(ta.events.data, tb.events.data, err_msg=f"tick {k}")
        for name in ("collateral_usd", "size", "entry_price", "net_deposits_usd"):
            np.testing.assert_array_equal(
                getattr(a.state, name), getattr(b.state, name), err_msg=f"{name}, tick {k}"
            )
        np.testing.assert_array_equal(ta.prices.mark, tb.prices.mark)
        np.testing.assert_array_equal(ta.prices.oracle, tb.prices.oracle)
    np.testing.assert_array_equal(a.drivers, b.drivers)
    assert a.max_ledger_error_usd < 1e-6 and b.max_ledger_error_usd < 1e-6


# ---------------------------------------------------------------- OI cap ----


def _openings_above(sim, cap_usd, n_ticks):
    """Ticks in which a position opened and left open interest above ``cap_usd``."""
    above = 0
    for _ in range(n_ticks):
        was_open = sim.state.size[0, :, 0] != 0
        tick = sim.step()
        if ((sim.state.size[0, :, 0] != 0) & ~was_open).any():
            above += int(tick.open_interest_usd[0] > cap_usd * (1 + 1e-12))
    return above


def test_oi_cap_refuses_arrivals_above_a_multiple_of_the_starting_open_interest():
    # The same seed without a cap opens positions that lift open interest past 1.02x its
    # start; under oi_cap_frac 1.02 the population refuses them.
    sc = scenario(horizon=240)
    free = ExchangeSimulator(sc, n_accounts=N_ACCOUNTS, seed=13)
    cap = 1.02 * float(free.initial_open_interest_usd[0])
    assert _openings_above(free, cap, 240) > 0
    capped = ExchangeSimulator(sc, RiskParams(oi_cap_frac=1.02), n_accounts=N_ACCOUNTS, seed=13)
    assert _openings_above(capped, cap, 240) == 0


# ---------------------------------------------------------------- the library ----


def test_luna_settles_early_and_earns_nothing_from_shorts_against_its_floored_oracle():
    # LUNA's events (leverage cut, reduce-only once the index crosses the oracle's $0.107
    # floor, BitMEX's settlement on 12 May 20:00 UTC against a 30-minute index): the fund's
    # income from shorts liquidated against the floored oracle goes from positive to none.
    sc = load_scenario("luna_2022")
    assert [e.kind for e in sc.events] == ["leverage_cap", "reduce_only", "settlement"]
    runs = {}
    for events in ((), sc.events):
        s = dataclasses.replace(sc, events=events)
        sim = ExchangeSimulator(s, n_accounts=N_ACCOUNTS, seed=2022, population_minutes=5.0)
        runs[len(events)] = sim.advance(s.n_ticks, book_series=False)
        assert sim.max_ledger_error_usd < 1e-6
    assert runs[0].event("floored_fund_fee_income_usd").sum() > 0.0
    after = runs[3]
    assert after.event("floored_fund_fee_income_usd").sum() == 0.0
    assert after.event("floored_short_liquidation_usd").sum() == 0.0
    settled = np.flatnonzero(after.event("settlement_price")[:, 0])
    assert settled.tolist() == [11280]  # minute 11280: 12 May 2022, 20:00 UTC


def test_mango_attacker_borrows_against_pumped_pnl_up_to_what_the_venue_lends():
    sc = load_scenario("oracle_manipulation")
    assert sc.attacker is not None and sc.attacker.margin_usd == 5e6
    withdrawn = {}
    for haircut in (0.0, 1.0):
        risk = RiskParams(unrealised_pnl_haircut_frac=haircut)
        sim = ExchangeSimulator(sc, risk, n_accounts=N_ACCOUNTS)
        block = sim.advance(sc.n_ticks)
        withdrawn[haircut] = block.event("attacker_withdrawn_usd").sum()
        assert sim.max_ledger_error_usd < 1e-5 * sim.initial_open_interest_usd[0]
    assert withdrawn[0.0] == pytest.approx(1.16e8)  # every lendable asset: 23x the margin
    assert withdrawn[1.0] < 0.5 * withdrawn[0.0]


def test_an_exchange_reset_to_a_longer_scenario_carries_its_events():
    short, longer = (
        scenario(horizon=30),
        scenario(
            [{"kind": "settlement", "start_minute": 50, "index_window_minutes": 2}], horizon=60
        ),
    )
    sim = ExchangeSimulator(short, n_envs=2, n_accounts=N_ACCOUNTS, seed=1)
    sim.reset_env(1, 5, longer)
    first = sim.advance(30)
    sim.reset_env(0, 6, short)
    second = sim.advance(30)
    assert (first.event("settlement_price") == 0).all()
    settled = second.event("settlement_price")
    assert np.flatnonzero(settled[:, 1]).tolist() == [20] and (settled[:, 0] == 0).all()
    assert (second.event("market_closed")[20:, 1] == 1).all()
    assert (second.event("market_closed")[:, 0] == 0).all()
