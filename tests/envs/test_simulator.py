"""The full simulation: money conserved, reproducible, and liquidation flow cascades."""

import dataclasses

import numpy as np
import pytest

from fundgym.envs import tick_kernels as tk
from fundgym.envs.core.events import (
    EV_LIQUIDATION_BUY,
    EV_LIQUIDATION_SELL,
    EV_N_LIQUIDATIONS,
    EV_SHORTFALL,
)
from fundgym.envs.core.params import LIQUIDATION_MODES, RiskParams
from fundgym.envs.scenarios import WindowSpec, load_scenario
from fundgym.envs.simulator import SERIES, ExchangeSimulator


def short(name: str, minutes: float):
    sc = load_scenario(name)
    return sc if minutes >= sc.horizon_minutes else dataclasses.replace(sc, horizon_minutes=minutes)


def test_full_simulation_balances_the_books_on_every_library_crash():
    for name in ("oct_10_2025", "black_thursday_2020", "venue_flash_wick", "oracle_manipulation"):
        sc = load_scenario(name)
        for fallback in ("adl", "socialize"):
            sim = ExchangeSimulator(
                sc, RiskParams(fallback=fallback), n_envs=2, n_accounts=300, fund_to_oi_frac=0.0
            )
            res = sim.run()
            oi = float(res.initial_open_interest_usd.max())
            assert res.max_ledger_error_usd <= 1e-9 * max(oi, 1.0) * 10, name
            assert (res.series["fund_usd"] >= 0).all()
            for arr in res.record.arrays().values():
                assert np.isfinite(arr).all()


def test_same_seed_same_episode():
    sc = short("may_19_2021", 720)
    a = ExchangeSimulator(sc, n_accounts=400, seed=3).run()
    b = ExchangeSimulator(sc, n_accounts=400, seed=3).run()
    for k in a.series:
        np.testing.assert_array_equal(a.series[k], b.series[k])
    np.testing.assert_array_equal(a.record.arrays()["fund_usd"], b.record.arrays()["fund_usd"])


def test_liquidation_flow_moves_the_price_below_the_exogenous_path():
    # With a thin book the liquidations of the Oct 2025 cascade push the index below the
    # exogenous path: endogenous impact, the mechanism behind cascades.
    sc = load_scenario("oct_10_2025")
    thin = dataclasses.replace(sc, depth=dataclasses.replace(sc.depth, normal_usd_per_pct=2e6))
    sim = ExchangeSimulator(thin, n_accounts=2000, fund_to_oi_frac=0.02)
    res = sim.run()
    exogenous = sim.market.paths["index"][: sim.market.n_ticks[0], 0]
    assert res.series["index_price"][:, 0].min() < exogenous.min() * 0.99
    assert res.record.totals()["n_liquidations"][0] > 0


def test_stale_oracle_delays_liquidations():
    # The margin engine reads the oracle: frozen at a floor, it liquidates nobody while the
    # book price falls through it (LUNA), and the losses pile up unrealised.
    sc = short("luna_2022", 12240)
    sim = ExchangeSimulator(sc, n_accounts=300, fund_to_oi_frac=0.02)
    res = sim.run()
    floor_ticks = res.series["oracle_price"][:, 0] <= 0.1070001
    assert floor_ticks.any()
    liq = res.record.arrays()["n_liquidations"][:, 0]
    assert liq[floor_ticks].sum() < liq.sum()


def test_batch_equals_single_exchanges_draw_for_draw():
    # Exchange e of a batch seeded [s0, s1, s2] evolves exactly as a single exchange seeded
    # s_e: every random draw comes from that exchange's own generator.
    sc = short("may_19_2021", 720)
    seeds = [11, 22, 33]
    batch = ExchangeSimulator(sc, n_envs=3, n_accounts=300, seed=seeds)
    singles = [ExchangeSimulator(sc, n_envs=1, n_accounts=300, seed=[s]) for s in seeds]
    for _ in range(300):
        tb = batch.step()
        ts = [sim.step() for sim in singles]
        for e, t in enumerate(ts):
            assert tb.prices.mark[e] == t.prices.mark[0]
            assert tb.events.n_liquidations[e] == t.events.n_liquidations[0]
    for e, sim in enumerate(singles):
        row = batch.state.take([e])
        for f in dataclasses.fields(row):
            if f.name == "fund":
                for g in dataclasses.fields(row.fund):
                    got, want = getattr(row.fund, g.name), getattr(sim.state.fund, g.name)
                    np.testing.assert_array_equal(got, want, err_msg=f"fund.{g.name}")
            else:
                got, want = getattr(row, f.name), getattr(sim.state, f.name)
                np.testing.assert_array_equal(got, want, err_msg=f.name)


def test_resetting_one_exchange_leaves_the_others_untouched():
    sc = short("may_19_2021", 720)
    a = ExchangeSimulator(sc, n_envs=2, n_accounts=200, seed=[5, 6])
    b = ExchangeSimulator(sc, n_envs=2, n_accounts=200, seed=[5, 6])
    for _ in range(50):
        a.step()
        b.step()
    a.reset_env(0, seed=99, scenario=load_scenario("calm"))
    assert a.market.t[0] == 0 and a.market.t[1] == 50
    for _ in range(50):
        ta, tb = a.step(), b.step()
        assert ta.prices.mark[1] == tb.prices.mark[1]
    np.testing.assert_array_equal(a.state.collateral_usd[1], b.state.collateral_usd[1])
    fresh = ExchangeSimulator(load_scenario("calm"), n_envs=1, n_accounts=200, seed=[99])
    for _ in range(50):
        fresh.step()
    np.testing.assert_array_equal(a.state.collateral_usd[0], fresh.state.collateral_usd[0])


def _state_bytes(sim: ExchangeSimulator, env: int) -> list[bytes]:
    st = sim.state
    out = [
        getattr(st, f.name)[env].tobytes()
        for f in dataclasses.fields(st)
        if isinstance(getattr(st, f.name), np.ndarray)
    ]
    out += [getattr(st.fund, f.name)[env].tobytes() for f in dataclasses.fields(st.fund)]
    out += [sim.drivers[:, env].tobytes(), sim.rng.state[env].tobytes()]
    out += [sim.market.paths[name][:, env].tobytes() for name in sim.market.paths]
    out += [sim._venue_flags[env].tobytes(), sim._venue_cap[env].tobytes()]
    return [*out, sim.initial_open_interest_usd[env].tobytes()]


def test_resetting_several_exchanges_at_once_equals_resetting_them_one_by_one():
    # A vector env restarts many exchanges in one call (reset_envs: their books drawn in one
    # kernel call, their funds, vaults and drivers by array operations); every row must be
    # what resetting each alone gives, bit for bit, whatever the order: an attacker's slot,
    # a book scaled from open interest and a scenario of another length included.
    scenarios = [load_scenario(n) for n in ("calm", "oracle_manipulation", "black_thursday_2020")]
    risk = RiskParams(
        mmr=np.array([0.03, 0.05, 0.04, 0.06]),
        imr=np.array([0.06, 0.1, 0.1, 0.2]),
        liquidation_mode="hyperliquid",
    )
    batch, single = (
        ExchangeSimulator(
            short("volatile", 120),
            risk,
            n_envs=4,
            n_accounts=64,
            seed=[1, 2, 3, 4],
            vault_to_oi_frac=0.02,
            vault_adl_loss_frac=0.02,
        )
        for _ in range(2)
    )
    for sim in (batch, single):
        for _ in range(7):
            sim.step()
    batch.reset_envs([3, 0, 2], [30, 10, 20], scenarios)
    for env, seed, sc in ((0, 10, scenarios[1]), (2, 20, scenarios[2]), (3, 30, scenarios[0])):
        single.reset_env(env, seed, sc)
    for env in range(4):
        assert _state_bytes(batch, env) == _state_bytes(single, env), env
    assert batch.market.t.tolist() == [0, 7, 0, 0]
    for _ in range(30):
        a, b = batch.step(), single.step()
        assert a.prices.mark.tobytes() == b.prices.mark.tobytes()
    with pytest.raises(ValueError, match=r"one seed .* per exchange: 2 exchanges, 1 seeds"):
        batch.reset_envs([0, 1], [5])


def test_an_episodes_first_tick_has_no_previous_prices_to_start_a_path_from():
    # The venue modes' intra-tick path starts at the previous tick's oracle and last price:
    # none at reset (0: the first tick reads its own prices), then each tick's, compiled and
    # in the reference alike; resetting one exchange clears only its own.
    sc = short("volatile", 60)
    sim = ExchangeSimulator(sc, n_envs=2, n_accounts=32, seed=[1, 2])
    rows = [tk.D_LAST_ORACLE, tk.D_LAST_BOOK]
    np.testing.assert_array_equal(sim.drivers[rows], 0.0)
    t = sim.step()
    np.testing.assert_array_equal(sim.drivers[tk.D_LAST_ORACLE], t.prices.oracle)
    np.testing.assert_array_equal(sim.drivers[tk.D_LAST_BOOK], t.prices.last)
    t = sim.reference_step()
    np.testing.assert_array_equal(sim.drivers[tk.D_LAST_ORACLE], t.prices.oracle)
    np.testing.assert_array_equal(sim.drivers[tk.D_LAST_BOOK], t.prices.last)
    sim.reset_env(0, seed=7)
    np.testing.assert_array_equal(sim.drivers[rows, 0], 0.0)
    np.testing.assert_array_equal(sim.drivers[tk.D_LAST_ORACLE, 1], t.prices.oracle[1])


def test_a_batch_can_mix_scenarios_of_different_lengths():
    sims = ExchangeSimulator(
        [load_scenario("venue_flash_wick"), load_scenario("oracle_manipulation")],
        n_envs=2,
        n_accounts=100,
        seed=[1, 2],
    )
    for _ in range(180):
        sims.step()
    assert sims.env_done.tolist() == [True, False]
    try:
        sims.step()
    except RuntimeError as exc:
        assert "past their horizon" in str(exc)
    else:
        raise AssertionError("stepping a finished exchange must raise")


def test_fund_buckets_keep_the_books_balanced_and_the_hedge_pays_in_a_crash():
    sc = load_scenario("black_thursday_2020")
    sim = ExchangeSimulator(sc, n_envs=2, n_accounts=300, fund_to_oi_frac=0.05, seed=[1, 1])
    for _ in range(60):
        sim.step()
    weights = np.array([[1.0, 0.0, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2]])
    cost = sim.set_allocation(weights)
    assert cost[0] == 0.0 and cost[1] > 0.0
    hedge_before = sim.portfolio.bucket_values_usd(sim.last_index, sim.vol_annual)[1, 3]
    for _ in range(120):  # through leg 1: -22% in an hour
        sim.step()
    hedge_after = sim.portfolio.bucket_values_usd(sim.last_index, sim.vol_annual)[1, 3]
    assert hedge_after > 2.0 * hedge_before
    assert sim.max_ledger_error_usd <= 1e-6
    assert (sim.state.fund_usd >= 0.0).all()
    # same seed, same market: the two exchanges differ only by what the fund holds
    assert sim.market.column("index")[0] == sim.market.column("index")[1]


# ==== the compiled tick against its numpy reference ====


def crash_early(name: str, oracle: dict | None = None):
    """``name`` with its crash and depth collapse moved to minute 20 (and oracle changes)."""
    sc = load_scenario(name)
    collapses = tuple(dataclasses.replace(c, start_minute=20.0) for c in sc.depth.collapses)
    sc = dataclasses.replace(
        sc,
        crash=dataclasses.replace(sc.crash, start_minute=20.0),
        depth=dataclasses.replace(sc.depth, collapses=collapses),
    )
    if oracle:
        sc = dataclasses.replace(sc, oracle=dataclasses.replace(sc.oracle, **oracle))
    return sc


def assert_states_equal(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "fund":
            for g in dataclasses.fields(x):
                got, want = getattr(x, g.name), getattr(y, g.name)
                np.testing.assert_array_equal(got, want, err_msg=f"fund.{g.name}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


CASES = {
    # name: (oracle changes, fallback, the fund's share of the liquidation fee: below 1 the
    # outside liquidators are paid and take flow)
    "oct_10_2025": ({}, "adl", 0.5),
    "oracle_manipulation": ({}, "socialize", 1.0),
    "luna_2022": ({"floor_price": 84.0}, "adl", 0.2),  # the floor binds on its first decline
    "black_thursday_2020": (
        {"delay_minutes": 3.0, "freezes": (WindowSpec(start_minute=40.0, minutes=15.0),)},
        "adl",
        1.0,
    ),
}


@pytest.mark.parametrize("mode", LIQUIDATION_MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_ticks_equal_the_numpy_reference(name, mode):
    # advance() runs the tick in compiled code; reference_step() runs it in numpy (Market
    # prices and advance, accrue, receive, pay through settle, put_mark). Every operation is
    # the same, the C library's exp/log/erfc included, so states and events agree to the bit;
    # only the open interest and the ledger check sum accounts in another order (1e-12).
    # Under every liquidation mode: the venue modes' sub-steps price their own flow inside
    # the waterfall, from the tick's book price and depth, in both.
    # The venue modes run with a backstop vault (0.5% of open interest), which takes
    # accounts over in the waterfall and unwinds into the book every tick.
    oracle, fallback, fund_share = CASES[name]
    sc = crash_early(name, oracle)
    sims = [
        ExchangeSimulator(
            sc,
            RiskParams(
                fallback=fallback, liquidation_mode=mode, liquidation_fee_fund_share=fund_share
            ),
            n_envs=3,
            n_accounts=400,
            seed=[1, 2, 3],
            fund_to_oi_frac=0.01,
            vault_to_oi_frac=0.0 if mode == "partial" else 0.005,
            population_minutes=2.0,
        )
        for _ in range(2)
    ]
    weights = np.array([[1.0, 0.0, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2], [0.1, 0.3, 0.3, 0.3]])
    for sim in sims:
        for _ in range(3):
            sim.reference_step()
        sim.set_allocation(weights)  # every bucket held: yield, volatile, puts
    compiled, reference = sims
    n = min(300, int(compiled.market.n_ticks[0]) - 3)
    block = compiled.advance(n)
    ticks = [reference.reference_step() for _ in range(n)]
    assert_states_equal(compiled.state, reference.state)
    events = np.stack([t.events.data for t in ticks])
    np.testing.assert_array_equal(block.events, events)
    for col, field in enumerate(("index", "last", "mark", "oracle", "depth_usd_per_pct")):
        want = np.stack([getattr(t.prices, field) for t in ticks])
        np.testing.assert_array_equal(block.column(SERIES[col]), want, err_msg=field)
    want = np.stack([t.prices.funding_rate for t in ticks])
    np.testing.assert_array_equal(block.column("funding_rate"), want)
    want = np.stack([t.funding_paid_usd for t in ticks])
    np.testing.assert_array_equal(block.column("funding_paid_usd"), want)
    want = np.stack([t.open_interest_usd for t in ticks])
    np.testing.assert_allclose(block.column("open_interest_usd"), want, rtol=1e-12)
    rec_c, rec_r = compiled.record.arrays(), reference.record.arrays()
    for k in rec_r:
        np.testing.assert_array_equal(rec_c[k], rec_r[k], err_msg=k)
    for k in ("vol_annual", "last_index", "last_depth_mult", "last_depth_usd_per_pct"):
        np.testing.assert_array_equal(getattr(compiled, k), getattr(reference, k), err_msg=k)
    # Every driver, the previous tick's oracle and last price (the venue modes' intra-tick
    # path starts there) included.
    np.testing.assert_array_equal(compiled.drivers, reference.drivers)
    np.testing.assert_array_equal(
        compiled.drivers[tk.D_LAST_ORACLE], block.column("oracle_price")[-1]
    )
    np.testing.assert_array_equal(compiled.drivers[tk.D_LAST_BOOK], block.column("last_price")[-1])
    np.testing.assert_array_equal(compiled.market.scalars, reference.market.scalars)
    # The ledger check sums accounts in another order: both see only rounding.
    scale = float(reference.state.initial_total_usd.max())
    assert compiled.max_ledger_error_usd <= 1e-9 * scale
    assert reference.max_ledger_error_usd <= 1e-9 * scale
    # The case exercises what it names.
    assert events[:, :, EV_N_LIQUIDATIONS].sum() > 0
    assert events[:, :, [EV_LIQUIDATION_SELL, EV_LIQUIDATION_BUY]].sum() > 0
    if name != "luna_2022" and mode == "partial":
        assert events[:, :, EV_SHORTFALL].sum() > 0
    if name == "luna_2022":
        assert (block.column("oracle_price") == 84.0).sum() > 100
    if name == "black_thursday_2020":
        frozen = block.column("oracle_price")[40:50]
        assert (frozen == frozen[0]).all()


def test_parallel_advance_is_bit_identical_to_serial():
    scenarios = [crash_early("oct_10_2025"), load_scenario("volatile"), crash_early("luna_2022")]
    sims = [
        ExchangeSimulator(scenarios, n_envs=3, n_accounts=300, seed=[4, 5, 6], threads=t)
        for t in (1, 2)
    ]
    for sim in sims:
        sim.set_allocation(np.tile([0.4, 0.2, 0.2, 0.2], (3, 1)))
    serial, parallel = (sim.advance(200) for sim in sims)
    np.testing.assert_array_equal(serial.events, parallel.events)
    np.testing.assert_array_equal(serial.series, parallel.series)
    assert_states_equal(sims[0].state, sims[1].state)


def test_one_block_equals_tick_by_tick_and_batch_rows_equal_single_exchanges():
    sc = crash_early("black_thursday_2020")
    seeds = [7, 8]
    block_sim = ExchangeSimulator(sc, n_envs=2, n_accounts=300, seed=seeds, population_minutes=5)
    block = block_sim.advance(150)
    for e, s in enumerate(seeds):
        single = ExchangeSimulator(sc, n_envs=1, n_accounts=300, seed=[s], population_minutes=5)
        ticks = [single.step() for _ in range(150)]
        np.testing.assert_array_equal(
            block.events[:, e], np.stack([t.events.data[0] for t in ticks])
        )
        np.testing.assert_array_equal(
            block.column("mark_price")[:, e], [t.prices.mark[0] for t in ticks]
        )
        assert_states_equal(block_sim.state.take([e]), single.state)
    assert len(block_sim.record) == 150


def test_advance_refuses_to_pass_a_horizon_and_leaves_the_state_alone():
    sim = ExchangeSimulator(load_scenario("venue_flash_wick"), n_accounts=50, seed=1)
    left = int(sim.market.n_ticks[0])
    before = sim.state.copy()
    with pytest.raises(RuntimeError, match="fewer than"):
        sim.advance(left + 1)
    assert_states_equal(sim.state, before)
    assert len(sim.advance(left)) == left
    assert sim.done
