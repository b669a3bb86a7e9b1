"""The multi-market simulator (issue 17): books, ledger, funds, collateral, contagion."""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.params import RiskParams
from fundgym.envs.markets_simulator import MarketsPopulation, MarketsResult, MarketsSimulator
from fundgym.envs.scenarios import Scenario, load_scenario, scenario_from_dict
from fundgym.envs.state import open_interest_usd
from tests.multi_market import assert_field_error, library_dict


def _short(name: str, minutes: float) -> Scenario:
    """Library scenario ``name`` cut to its first ``minutes`` (its crash must end inside)."""
    data = library_dict(name)
    data["horizon_minutes"] = minutes
    return scenario_from_dict(data, f"{name}.yaml")


def _run(sc: Scenario, risk: RiskParams | None = None, **kw: Any) -> MarketsResult:
    return MarketsSimulator(sc, risk, **kw).run()


def _same(a: MarketsResult, b: MarketsResult, row_a: int, row_b: int) -> None:
    for name in ("events", "mark_price", "open_interest_usd", "fund_usd", "market_fund_paid_usd"):
        x, y = getattr(a, name)[:, row_a], getattr(b, name)[:, row_b]
        assert np.array_equal(x, y), name


# ---- the book across markets ---------------------------------------------------------------


def test_book_spreads_accounts_by_the_scenarios_shares() -> None:
    """20,000 slots, one leg each: each market's share of accounts is its share of OI.

    Sizes are drawn alike in every market, so account shares are the expected OI shares; the
    count is binomial (12,000 open accounts: a standard error under 0.5 pp), where the OI
    itself, Pareto-sized, is noisy.
    """
    sc = load_scenario("alt_contagion")
    assert sc.market_oi_shares == pytest.approx((0.70, 0.25, 0.05))
    mp = MarketsPopulation(second_leg_frac=0.0)
    sim = MarketsSimulator(sc, n_accounts=20_000, markets_population=mp, seed=3)
    held = (sim.state.size[0] != 0.0).sum(axis=0)
    assert held / held.sum() == pytest.approx([0.70, 0.25, 0.05], abs=0.02)


def test_second_legs_assets_and_isolated_accounts() -> None:
    """Cross accounts take a second leg and post assets as told; isolated ones never do."""
    sc = load_scenario("oct_10_2025_multi")
    mp = MarketsPopulation(second_leg_frac=1.0, asset_share=1.0, asset_margin_frac=0.5)
    sim = MarketsSimulator(sc, n_accounts=3_000, markets_population=mp, seed=1)
    st = sim.state
    legs = (st.size[0] != 0.0).sum(axis=1)
    open_ = legs > 0
    assert set(np.unique(legs[open_])) <= {1, 2}
    two = legs == 2
    # every cross account (about 90% of accounts: PopulationParams.cross_share) holds two legs
    assert 0.85 < two[open_].mean() < 0.95
    px0 = np.array([m.initial or sc.price.initial for m in sc.markets])
    notional = np.abs(st.size[0]) * px0
    both = notional[two]
    legs_usd = np.sort(both, axis=1)[:, -2:]
    assert np.allclose(legs_usd[:, 0], legs_usd[:, 1], rtol=1e-12)  # split in half
    sides = np.sign(st.size[0][two])
    assert (np.abs(sides.sum(axis=1)) == 2).all()  # both legs on one side
    held = st.collateral_units[0] != 0.0
    assert (held.sum(axis=1) <= 1).all()
    assert not held[open_ & ~two].any()  # isolated accounts post USD only
    # asset_margin_frac = 0.5: the asset counts (at price less haircut) for half the margin
    price = sim.unit_price[0]
    value = (st.collateral_units[0] * price * (1.0 - sim.haircut)).sum(axis=1)
    with_asset = held.any(axis=1)
    assert with_asset[two].all()
    assert np.allclose(value[with_asset], st.collateral_usd[0][with_asset], rtol=1e-12)


def test_no_second_leg_and_no_assets_when_asked() -> None:
    sc = load_scenario("oct_10_2025_multi")
    mp = MarketsPopulation(second_leg_frac=0.0, asset_share=0.0)
    st = MarketsSimulator(sc, n_accounts=2_000, markets_population=mp).state
    assert ((st.size[0] != 0.0).sum(axis=1) <= 1).all()
    assert not st.collateral_units.any()


def test_counterparty_takes_the_other_side_of_every_market() -> None:
    st = MarketsSimulator(load_scenario("oct_10_2025_multi"), n_accounts=1_000).state
    assert np.allclose(st.size.sum(axis=1) + st.counterparty_size, 0.0, atol=1e-9)


def test_a_market_asking_three_times_the_margin_caps_its_leverage() -> None:
    """``market_mmr_mult`` (3 on the alt): isolated alt positions open at most 1 / (3 imr).

    An isolated account keeps ``notional x (1 / lev + fee)``, so its order leverage is
    ``notional / (collateral - notional x fee)``.
    """
    sc = load_scenario("alt_contagion")
    risk = RiskParams()
    mp = MarketsPopulation(second_leg_frac=0.0, asset_share=0.0)
    kw: dict[str, Any] = {"n_accounts": 5_000, "markets_population": mp, "seed": 4}
    levs = {}
    for k in (1.0, 3.0):
        st = MarketsSimulator(sc, risk, market_mmr_mult=[1.0, 1.0, k], **kw).state
        alt = st.size[0, :, 2] != 0.0
        notional = np.abs(st.size[0, alt, 2]) * sc.markets[2].initial
        lev = notional / (st.collateral_usd[0, alt] - notional * risk.taker_fee_rate)
        levs[k] = lev.max()
    assert levs[1.0] <= 1.0 / risk.imr * (1 + 1e-9)
    assert levs[3.0] <= 1.0 / (3.0 * risk.imr) * (1 + 1e-9)
    assert levs[1.0] > 1.0 / (3.0 * risk.imr)  # the cap binds: some traders wanted more


def test_a_larger_alt_margin_liquidates_earlier_on_alt_contagion() -> None:
    sc = load_scenario("alt_contagion")
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 1_000, "seed": 17}
    base = _run(sc, **kw).totals()
    alt3 = _run(sc, market_mmr_mult=[1.0, 1.0, 3.0], **kw).totals()
    # lower alt leverage and an earlier trigger: less of the alt's crash falls past bankruptcy
    assert alt3["market_fund_paid_usd"][:, 2].sum() < base["market_fund_paid_usd"][:, 2].sum()


# ---- ledger, determinism, batch ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["shared", "segmented"])
def test_alt_contagion_ledger_closes_and_pots_stay_non_negative(mode: str) -> None:
    res = _run(load_scenario("alt_contagion"), n_envs=2, n_accounts=1_000, fund_mode=mode)
    assert res.max_ledger_error_usd < 1e-6
    assert (res.fund_usd >= 0.0).all()
    assert np.isfinite(res.events).all() and np.isfinite(res.mark_price).all()
    paid = res.market_fund_paid_usd.sum(axis=2)
    assert np.allclose(paid, res.event("shortfall_usd"), rtol=1e-12, atol=1e-9)


def test_same_seed_same_numbers_and_exchange_e_equals_its_single_twin() -> None:
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_accounts": 400, "fund_mode": "segmented"}
    batch = _run(sc, n_envs=3, seed=[11, 12, 13], **kw)
    again = _run(sc, n_envs=3, seed=[11, 12, 13], **kw)
    single = _run(sc, n_envs=1, seed=12, **kw)
    for row in range(3):
        _same(batch, again, row, row)
    _same(batch, single, 1, 0)
    assert batch.event("n_liquidations").sum() > 0  # the comparison saw liquidations


# ---- funds: shared against segmented ---------------------------------------------------------


def test_segmented_contains_the_alt_crash_that_a_shared_fund_pays() -> None:
    """alt_contagion: shared, BTC's and ETH's backing pays the alt; segmented, the alt's pot.

    The alt falls 80% on a thin book, so its liquidations fill below bankruptcy. With a fund of
    1% of open interest, shared, the fund pays them out of what backs every market and nobody
    is deleveraged; segmented, the alt's own segment is exhausted, the rest is deleveraged
    against the alt's winners, and the BTC and ETH segments lose (almost) nothing.
    """
    sc = load_scenario("alt_contagion")
    kw: dict[str, Any] = {"n_envs": 4, "n_accounts": 2_000, "seed": 17, "fund_to_oi_frac": 0.01}
    shared = _run(sc, fund_mode="shared", **kw)
    seg = _run(sc, fund_mode="segmented", **kw)
    t_sh, t_seg = shared.totals(), seg.totals()
    alt = sc.market_names.index("ALT")
    alt_paid = t_sh["market_fund_paid_usd"][:, alt]
    assert (alt_paid > seg.initial_fund_usd[:, alt]).all()  # more than the alt's segment held
    assert (t_sh["adl_volume_usd"] == 0.0).all()
    assert (t_seg["adl_volume_usd"] > 0.0).all()
    assert (t_seg["fund_drawdown_frac"][:, alt] > 0.99).all()  # the alt's segment exhausted
    others = [m for m in range(sc.n_markets) if m != alt]
    assert (t_seg["fund_drawdown_frac"][:, others] < 0.05).all()
    assert (t_sh["fund_drawdown_frac"][:, 0] > 0.05).all()
    assert (
        t_sh["fund_drawdown_frac"][:, 0] > 5 * t_seg["fund_drawdown_frac"][:, others].max()
    ).all()
    # segmented pays the alt at most what its segment had plus the alt's own fee income
    fee_room = seg.initial_fund_usd[:, alt] + 0.1 * seg.initial_fund_usd.sum(axis=1)
    assert (t_seg["market_fund_paid_usd"][:, alt] <= fee_room).all()


def test_capped_transfers_between_segments_cut_the_alts_adl_within_the_cap() -> None:
    """alt_contagion, segmented: BTC's and ETH's segments lend the alt what its own cannot pay.

    Forbidden (the default), the alt's winners are deleveraged; at $500 a tick they lend at
    most $500 a tick and less is deleveraged; pooled (``inf``), the fund pays it all.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 1_000, "seed": 17, "fund_to_oi_frac": 0.01}
    runs = {
        cap: _run(sc, fund_mode="segmented", segment_transfer_cap_usd=cap, **kw)
        for cap in (0.0, 500.0, np.inf)
    }
    adl = {cap: r.totals()["adl_volume_usd"] for cap, r in runs.items()}
    lent = {cap: r.totals()["fund_transfer_usd"] for cap, r in runs.items()}
    assert (adl[0.0] > 0.0).all() and (lent[0.0] == 0.0).all()
    assert (lent[500.0] > 0.0).all() and (adl[500.0] < adl[0.0]).all()
    assert (adl[np.inf] <= adl[500.0]).all() and (lent[np.inf] >= lent[500.0]).all()
    capped = runs[500.0].fund_transfer_usd
    assert (np.maximum(capped, 0.0).sum(axis=2) <= 500.0 + 1e-9).all()  # per tick
    np.testing.assert_allclose(capped.sum(axis=2), 0.0, atol=1e-9)  # lent = borrowed
    for r in runs.values():
        assert r.max_ledger_error_usd < 1e-6 and (r.fund_usd >= 0.0).all()
    with pytest.raises(ValueError, match="fund_mode 'segmented' only"):
        MarketsSimulator(sc, segment_transfer_cap_usd=1.0)
    with pytest.raises(ValueError, match="segment_transfer_cap_usd must be >= 0"):
        MarketsSimulator(sc, fund_mode="segmented", segment_transfer_cap_usd=-1.0)


def test_the_fund_holding_the_alt_falls_with_it_and_puts_on_it_pay() -> None:
    """alt_contagion: half the fund in the crashing alt loses; puts on the alt gain; ledger closes.

    The alt falls 80% while BTC and ETH barely move, so holding BTC costs little, holding the
    alt costs about half the fund's half, and puts on the alt pay off in the crash.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 500, "seed": 17}
    end = {}
    for label, asset, weights in (
        ("stable", "BTC", None),
        ("btc", "BTC", [0.5, 0.0, 0.5, 0.0]),
        ("alt", "ALT", [0.5, 0.0, 0.5, 0.0]),
        ("alt_puts", "ALT", [0.9, 0.0, 0.0, 0.1]),
    ):
        res = _run(sc, fund_asset=asset, fund_allocation=weights, **kw)
        assert res.max_ledger_error_usd < 1e-6 and (res.fund_usd >= 0.0).all()
        end[label] = res.fund_usd[-1, :, 0] / res.initial_fund_usd[:, 0]
    assert (end["alt"] < end["stable"] - 0.3).all()  # wrong-way: half the fund, -80%
    assert (np.abs(end["btc"] - end["stable"]) < 0.1).all()  # BTC barely moved
    assert (end["alt_puts"] > end["stable"]).all()  # the puts paid in the alt's crash


def test_a_basket_fund_holds_each_asset_and_puts_on_each() -> None:
    """alt_contagion: half the fund in a BTC/ALT basket loses about half of the ALT fund's loss.

    The basket holds units of BTC and of the alt (weights 0.5 each) and a put series on each;
    each is marked at its own market's index. BTC barely moves and the alt falls 80%, so the
    basket's fund ends between the BTC fund and the alt fund, and near their mean (the fund
    pays the same episodes' shortfalls either way, so not exactly). A basket of one market is
    that market's fund, bit for bit.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 500, "seed": 17}
    half = [0.5, 0.0, 0.5, 0.0]
    end = {}
    for label, asset in (("btc", "BTC"), ("alt", "ALT"), ("basket", {"BTC": 0.5, "ALT": 0.5})):
        sim = MarketsSimulator(sc, fund_asset=asset, fund_allocation=half, **kw)
        res = sim.run()
        assert res.max_ledger_error_usd < 1e-6 and (res.fund_usd >= 0.0).all()
        end[label] = res.fund_usd[-1, :, 0] / res.initial_fund_usd[:, 0]
        if label == "basket":
            assert sim.state.fund.n_assets == 2 and sim.fund_asset == {0: 0.5, 2: 0.5}
            assert (sim.state.fund.volatile_units > 0.0).all()  # both assets held
    assert (end["alt"] < end["basket"]).all() and (end["basket"] < end["btc"]).all()
    np.testing.assert_allclose(end["basket"], 0.5 * (end["alt"] + end["btc"]), atol=0.05)
    puts = MarketsSimulator(
        sc, fund_asset={"BTC": 0.5, "ALT": 0.5}, fund_allocation=[0.9, 0.0, 0.0, 0.1], **kw
    )
    assert (puts.state.fund.put_units > 0.0).all() and (puts.state.fund.put_strike > 0.0).all()
    assert puts.run().max_ledger_error_usd < 1e-6
    one = _run(sc, fund_asset={"ALT": 1.0}, fund_allocation=half, **kw)
    _same(one, _run(sc, fund_asset="ALT", fund_allocation=half, **kw), 0, 0)


@pytest.mark.parametrize(
    ("basket", "fragment"),
    [
        ({"BTC": 0.5, "ETH": 0.6}, "the basket's weights must sum to 1, got 1.1"),
        ({"BTC": 0.5, 0: 0.5}, "market 0 is named twice"),
        ({"BTC": 1.0, "ALT": 0.0}, "the weight of 'ALT' must be a number > 0, got 0.0"),
        ({"BTC": 0.5, "DOGE": 0.5}, "fund_asset must be one of the markets"),
        ({"BTC": True}, "the weight of 'BTC' must be a number > 0, got True"),
        ({}, "a basket needs at least one market"),
    ],
)
def test_a_bad_basket_is_named(basket: dict[Any, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        MarketsSimulator(load_scenario("alt_contagion"), fund_asset=basket, n_accounts=8)


def test_allocation_arguments_are_named() -> None:
    sc = load_scenario("alt_contagion")
    with pytest.raises(ValueError, match="fund_asset must be one of the markets"):
        MarketsSimulator(sc, fund_asset="DOGE")
    with pytest.raises(ValueError, match="fund_asset must be a market name"):
        MarketsSimulator(sc, fund_asset=7)
    with pytest.raises(ValueError, match="four shares"):
        MarketsSimulator(sc, fund_allocation=[0.5, 0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="segments are cash"):
        MarketsSimulator(sc, fund_mode="segmented", fund_allocation=[1.0, 0.0, 0.0, 0.0])
    seg = MarketsSimulator(sc, fund_mode="segmented", n_accounts=50)
    with pytest.raises(ValueError, match="segments are cash"):
        seg.set_allocation([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(seg.fund_weights(), [[1.0, 0.0, 0.0, 0.0]])


def test_per_market_cap_limits_what_the_fund_pays_the_alt() -> None:
    sc = _short("alt_contagion", 700.0)  # the alt's crash ends at minute 630
    caps = [np.inf, np.inf, 100.0]  # Drift-like tier: $100 a tick toward the alt
    res = _run(sc, n_envs=1, n_accounts=1_000, fund_cap_usd=caps, seed=17)
    assert (res.market_fund_paid_usd[:, :, 2] <= 100.0 + 1e-9).all()
    assert res.totals()["adl_volume_usd"][0] > 0.0


@pytest.mark.parametrize("mode", ["shared", "segmented"])
def test_a_fund_cap_as_a_share_of_the_pot_is_that_many_dollars(mode: str) -> None:
    """market_fund_cap_frac f is fund_cap_usd = f x the exchange's starting insurance.

    The same seed under either gives the same run to the bit, per tick and over the episode;
    a share of 0 and the fund never pays the alt (Drift's $0 tier).
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 1, "n_accounts": 1_000, "seed": 17, "fund_mode": mode}
    start_usd = MarketsSimulator(sc, **kw).initial_fund_usd[0].sum()  # every pot's start
    for period in ("tick", "episode"):
        frac = _run(sc, market_fund_cap_frac=[np.inf, np.inf, 0.002], fund_cap_period=period, **kw)
        caps = [np.inf, np.inf, 0.002 * start_usd]
        usd = _run(sc, fund_cap_usd=caps, fund_cap_period=period, **kw)
        _same(frac, usd, 0, 0)
        assert frac.market_fund_paid_usd[:, 0, 2].sum() > 0.0
    capped = frac.market_fund_paid_usd[:, 0, 2].sum()  # over the episode: at most the cap
    assert capped <= 0.002 * start_usd * (1 + 1e-12)
    assert _run(sc, **kw).market_fund_paid_usd[:, 0, 2].sum() > capped  # it binds
    none = _run(sc, market_fund_cap_frac=[np.inf, np.inf, 0.0], **kw)
    assert (none.market_fund_paid_usd[:, :, 2] == 0.0).all()
    assert none.totals()["adl_volume_usd"][0] > 0.0
    with pytest.raises(ValueError, match=r"market_fund_cap_frac must list one share .* per market"):
        MarketsSimulator(sc, market_fund_cap_frac=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"market_fund_cap_frac must list one"):
        MarketsSimulator(sc, market_fund_cap_frac=[1.0, 1.0])


def test_the_venue_tops_up_an_exhausted_shared_fund() -> None:
    """A fund of 0.1% of OI runs dry in the alt's crash; the venue injects 1% of OI, twice at most.

    The top-ups are outside money (the ledger closes every tick), they come only after a tick
    whose bad debt left the fund exhausted, and they pay later ticks' shortfalls: the alt's
    ADL falls. Without an allowance nothing is injected.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 1_000, "seed": 17, "fund_to_oi_frac": 0.001}
    dry = _run(sc, **kw)
    topped = _run(sc, fund_injection_frac=0.01, fund_injection_max=2, **kw)
    assert topped.max_ledger_error_usd < 1e-6 and (topped.fund_usd >= 0.0).all()
    np.testing.assert_array_equal(dry.fund_injections, 0.0)
    assert ((topped.fund_injections >= 1) & (topped.fund_injections <= 2)).all()
    oi = topped.initial_open_interest_usd.sum(axis=1)
    np.testing.assert_allclose(topped.fund_injected_usd, topped.fund_injections * 0.01 * oi)
    assert (topped.totals()["adl_volume_usd"] < dry.totals()["adl_volume_usd"]).all()
    assert (topped.totals()["shortfall_usd"] > dry.totals()["shortfall_usd"]).all()
    for bad, fragment in (
        ({"fund_injection_frac": -0.1}, "fund_injection_frac must lie in [0, 10], got -0.1"),
        ({"fund_injection_max": 1.5}, "fund_injection_max must be a whole number in [0, 1000]"),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            MarketsSimulator(sc, n_accounts=8, **bad)


def test_the_mark_cap_holds_each_markets_mark_under_its_own_average() -> None:
    """A pumped alt (x5 in 10 minutes) under mark_cap_mult 1.5: its mark and oracle stay at most
    1.5x its own 8-hour average of the mark, tick by tick; BTC and ETH, which barely move, stay
    well inside theirs; without the cap the alt's mark runs to the pump. The ledger closes.
    """
    data = copy.deepcopy(library_dict("alt_contagion"))
    data["horizon_minutes"] = 420
    alt = data["markets"][2]
    alt["idio_crash"] = {
        "start_minute": 300,
        "legs": [{"kind": "recovery", "minutes": 10, "return_frac": 4.0, "shape": "linear"}],
    }
    sc = scenario_from_dict(data, "pump.yaml")
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 300, "seed": 5}
    free = _run(sc, **kw)
    sim = MarketsSimulator(sc, RiskParams(mark_cap_mult=1.5), **kw)
    average = sim.mark_average.copy()  # each market's first price, per exchange
    capped = sim.run()
    assert capped.max_ledger_error_usd < 1e-6
    start = free.mark_price[0, :, 2]
    assert (free.mark_price[:, :, 2].max(axis=0) > 4.0 * start).all()  # the pump, uncapped
    weight = sim.mark_average_weight
    for t in range(capped.mark_price.shape[0]):
        bound = 1.5 * average
        assert (capped.mark_price[t] <= bound * (1 + 1e-12)).all()
        assert (capped.oracle_price[t] <= bound * (1 + 1e-12)).all()
        average = average + weight * (capped.mark_price[t] - average)
    assert capped.mark_price[:, :, 2].max() < 0.5 * free.mark_price[:, :, 2].max()
    # BTC and ETH, which barely move, never reach their caps: their marks stay well inside.
    assert (capped.mark_price[:, :, :2] < 1.2 * capped.mark_price[0, :, :2]).all()


def test_the_exchanges_oi_cap_caps_every_market_as_the_per_market_caps_would() -> None:
    """RiskParams.oi_cap_frac f is market_oi_cap_frac f in every market, to the bit.

    MarketsSimulator used to ignore the exchange's lever; with both, the smaller cap holds.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 400, "seed": 3}
    exchange = _run(sc, RiskParams(oi_cap_frac=1.0), **kw)
    markets = _run(sc, market_oi_cap_frac=[1.0, 1.0, 1.0], **kw)
    _same(exchange, markets, 0, 0)
    _same(exchange, markets, 1, 1)
    assert not np.array_equal(_run(sc, **kw).events, exchange.events)  # the cap binds
    both = _run(sc, RiskParams(oi_cap_frac=1.0), market_oi_cap_frac=[4.0, 4.0, 0.5], **kw)
    smaller = _run(sc, market_oi_cap_frac=[1.0, 1.0, 0.5], **kw)
    _same(both, smaller, 0, 0)


def test_the_venue_tops_up_the_segment_its_markets_exhausted() -> None:
    """Segmented, every pot starts at 0.1% of its markets' OI: the alt's crash exhausts the
    alt's segment, which the venue tops up by 1% of the alt's starting OI (twice at most);
    segments whose markets lose nothing get nothing. The ledger closes every tick.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 1_000, "seed": 17, "fund_to_oi_frac": 0.001}
    sim = MarketsSimulator(
        sc, fund_mode="segmented", fund_injection_frac=0.01, fund_injection_max=2, **kw
    )
    res = sim.run()
    assert res.max_ledger_error_usd < 1e-6 and (res.fund_usd >= 0.0).all()
    alt = 2
    assert ((sim.segment_injections[:, alt] >= 1) & (sim.segment_injections[:, alt] <= 2)).all()
    np.testing.assert_allclose(
        sim.segment_injected_usd[:, alt],
        sim.segment_injections[:, alt] * 0.01 * res.initial_open_interest_usd[:, alt],
    )
    paid = res.market_fund_paid_usd.sum(axis=0)
    for m in (0, 1):  # a segment whose market's pot never paid is never topped up
        lost = res.market_socialized_usd[:, :, m].sum(axis=0) + paid[:, m]
        assert ((lost == 0.0) <= (sim.segment_injections[:, m] == 0)).all()
    np.testing.assert_allclose(res.fund_injections, sim.segment_injections.sum(axis=1))


def test_a_settlements_debt_tops_up_only_the_segment_that_paid_it() -> None:
    """Every segment empty; a tick with no engine losses and a settlement's debt on the alt's
    segment alone: the alt's segment is topped up, BTC's and ETH's are not."""
    sim = MarketsSimulator(
        load_scenario("alt_contagion"), n_accounts=50, fund_mode="segmented",
        fund_injection_frac=0.01, fund_injection_max=1,
    )  # fmt: skip
    sim.state.fund_segments_usd[:] = 0.0
    pot_debt = np.array([[0.0, 0.0, 100.0]])
    one = np.array([100.0])
    sim._top_up_segments(StepEvents.zeros(1), (one, one, np.zeros(1), pot_debt))
    np.testing.assert_array_equal(sim.segment_injections, [[0.0, 0.0, 1.0]])
    assert sim.state.fund_segments_usd[0, 2] == sim.segment_injection_usd[0, 2] > 0.0


def test_a_cap_over_the_episode_is_spent_once_and_restored_at_reset() -> None:
    """Drift's cap is cumulative (quote_max_insurance less quote_settled_insurance).

    The same seed under $100 a tick toward the alt pays it more than $100 over the crash;
    under $100 for the episode, the alt's payments sum to at most $100 and the rest is
    deleveraged, while BTC's and ETH's (no cap) are paid as before the cap bit.
    """
    sc = _short("alt_contagion", 700.0)
    caps = [np.inf, np.inf, 100.0]
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 1_000, "fund_cap_usd": caps, "seed": 17}
    per_tick = _run(sc, **kw)
    sim = MarketsSimulator(sc, fund_cap_period="episode", **kw)
    episode = sim.run()
    alt_tick = per_tick.market_fund_paid_usd[:, :, 2].sum(axis=0)
    alt_episode = episode.market_fund_paid_usd[:, :, 2].sum(axis=0)
    assert (alt_tick > 100.0).all()  # a per-tick cap pays again every tick
    assert (alt_episode <= 100.0 + 1e-9).all() and (alt_episode > 99.0).all()
    np.testing.assert_allclose(sim.fund_cap_spent_usd[:, 2], alt_episode, rtol=1e-12)
    assert (episode.totals()["adl_volume_usd"] > per_tick.totals()["adl_volume_usd"]).all()
    assert episode.max_ledger_error_usd < 1e-6
    sim.reset(seed=17)
    np.testing.assert_array_equal(sim.fund_cap_spent_usd, 0.0)
    with pytest.raises(ValueError, match="fund_cap_period must be one of"):
        MarketsSimulator(sc, fund_cap_period="block")


# ---- collateral ---------------------------------------------------------------------------


def test_depeg_loss_is_larger_marked_on_the_venues_book_than_on_an_index() -> None:
    """10 Oct 2025: USDe at $0.6567 on Binance's book while the index held near $1."""
    sc = load_scenario("oct_10_2025_multi")
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 2_000, "seed": 2025}
    book = _run(sc, collateral_price="book", **kw).totals()
    index = _run(sc, collateral_price="index", **kw).totals()
    assert book["collateral_depeg_loss_usd"].sum() > 0.0
    assert book["collateral_depeg_loss_usd"].sum() > 2.0 * index["collateral_depeg_loss_usd"].sum()
    assert book["collateral_seized_usd"].sum() > index["collateral_seized_usd"].sum()


def test_redemption_pricing_never_marks_the_depeg() -> None:
    """At redemption value the seized units fetch ``r (1 - h)``: the loss is the haircut alone.

    ``collateral_depeg_loss = units x (r - p (1 - h))`` with ``p = r`` is ``units x r x h``:
    between the smallest and largest haircut (5% and 10%) of what was seized.
    """
    sc = load_scenario("oct_10_2025_multi")
    tot = _run(sc, n_accounts=2_000, collateral_price="redemption", seed=2025).totals()
    seized, loss = tot["collateral_seized_usd"][0], tot["collateral_depeg_loss_usd"][0]
    assert seized > 0.0
    assert 0.05 * seized * (1 - 1e-9) <= loss <= 0.10 * seized * (1 + 1e-9)


# ---- fuzz: ledger and non-negative pots over random multi-market paths with depegs ----------


#: The fuzz's extra mechanisms, one at a time: paid outside liquidators, fund caps as shares
#: of the pots, a basket fund with puts, the venue's top-ups, the mark cap, deep haircuts.
FUZZ_EXTRAS: dict[str, dict[str, Any]] = {
    "none": {},
    "liquidators": {"risk": RiskParams(liquidation_fee_fund_share=0.5)},
    "fund_caps": {"market_fund_cap_frac": [np.inf, 0.5, 0.01], "fund_cap_period": "episode"},
    "basket": {"fund_asset": {"BTC": 0.5, "ALT": 0.5}, "fund_allocation": [0.5, 0.0, 0.3, 0.2]},
    "top_ups": {"fund_to_oi_frac": 0.0005, "fund_injection_frac": 0.01, "fund_injection_max": 2},
    "mark_cap": {"risk": RiskParams(mark_cap_mult=1.2)},
    "haircuts": {"collateral_haircut_frac": [0.5, 0.5]},
}


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alt_move=st.floats(-0.9, 0.5),
    alt_start=st.floats(10.0, 100.0),
    depeg=st.floats(0.05, 1.0),
    mode=st.sampled_from(["shared", "segmented"]),
    source=st.sampled_from(["book", "index", "redemption"]),
    seed=st.integers(0, 10_000),
    event=st.sampled_from(
        ["none", "outage", "outage_engine", "withdrawal_halt", "cap", "settle", "settle_all"]
    ),
    extra=st.sampled_from(list(FUZZ_EXTRAS)),
)
def test_fuzzed_paths_conserve_money_and_keep_pots_non_negative(
    alt_move: float,
    alt_start: float,
    depeg: float,
    mode: str,
    source: str,
    seed: int,
    event: str,
    extra: str,
) -> None:
    data = copy.deepcopy(library_dict("alt_contagion"))
    data["horizon_minutes"] = 180
    # A venue event over the alt's crash (the engine stopped, or running, in an outage).
    window = {"start_minute": alt_start, "minutes": 30.0}
    data["events"] = {
        "none": [],
        "outage": [{"kind": "outage", **window, "engine_runs": False}],
        "outage_engine": [{"kind": "outage", **window, "engine_runs": True}],
        "withdrawal_halt": [{"kind": "withdrawal_halt", **window}],
        "cap": [{"kind": "leverage_cap", **window, "max_leverage": 2.0}],
        # The alt settled mid-crash (its window's mean), or every market at once.
        "settle": [{"kind": "settlement", "start_minute": alt_start + 10.0,
                    "index_window_minutes": 15.0, "market": "ALT"}],
        "settle_all": [{"kind": "settlement", "start_minute": alt_start + 10.0,
                        "index_window_minutes": 15.0}],
    }[event]  # fmt: skip
    alt = data["markets"][2]
    alt["idio_crash"] = {
        "start_minute": alt_start,
        "legs": [{"kind": "decline", "minutes": 20, "return_frac": alt_move, "shape": "linear"}],
    }
    alt["depth_collapses"][0]["start_minute"] = alt_start
    data["collateral"] = [
        {
            "name": "USDx",
            "kind": "yield_stable",
            "haircut_frac": 0.05,
            "book_noise_bps": 20,
            "book_depeg": [
                {"minute": alt_start, "level": 1.0},
                {"minute": alt_start + 5, "level": depeg},
            ],
        },
        {
            "name": "stETH",
            "kind": "lst",
            "linked_to": "ETH",
            "conversion_ratio": 1.1,
            "haircut_frac": 0.1,
            "index_depeg": [{"minute": 60, "level": 1.0}, {"minute": 90, "level": depeg}],
        },
    ]
    sc = scenario_from_dict(data, "fuzz.yaml")
    mp = MarketsPopulation(second_leg_frac=0.6, asset_share=0.6)
    kw = dict(FUZZ_EXTRAS[extra])
    if mode == "segmented" and extra == "basket":  # the shared fund's alone
        kw = {}
    res = _run(
        sc,
        n_envs=2,
        n_accounts=300,
        fund_mode=mode,
        collateral_price=source,
        markets_population=mp,
        seed=seed,
        **kw,
    )
    assert res.max_ledger_error_usd < 1e-5  # the simulator also raises on any tick above it
    assert (res.fund_usd >= 0.0).all()
    assert np.isfinite(res.events).all()
    assert np.isfinite(res.collateral_depeg_loss_usd).all()


@pytest.mark.parametrize("mode", ["shared", "segmented"])
@pytest.mark.parametrize("extra", list(FUZZ_EXTRAS))
def test_every_extra_mechanism_conserves_money_on_10_oct(mode: str, extra: str) -> None:
    """Each of the fuzz's extras, on 10 Oct across nine markets with its depegs (two hours
    from the slide's start, 300 slots): the ledger closes every tick and no pot goes below zero.
    """
    data = copy.deepcopy(library_dict("oct_10_2025_multi"))
    data["horizon_minutes"] = 720  # through the crash minute, the collapse and the depegs
    data["crash"]["legs"] = data["crash"]["legs"][:2]  # the slide and the crash, no recovery
    for market in data["markets"]:
        if "crash_returns" in market:
            market["crash_returns"] = market["crash_returns"][:2]
    sc = scenario_from_dict(data, "oct_10_2025_multi.yaml")
    kw = dict(FUZZ_EXTRAS[extra])
    if "market_fund_cap_frac" in kw:
        kw["market_fund_cap_frac"] = [np.inf] * 8 + [0.01]
    if "fund_asset" in kw:
        kw["fund_asset"] = {"BTC": 0.5, "ALT_C": 0.5}
    if "collateral_haircut_frac" in kw:
        kw["collateral_haircut_frac"] = [0.5, 0.5, 0.5]
    if mode == "segmented" and extra == "basket":
        return  # the shared fund's alone (segments are cash: an allocation is refused)
    res = _run(sc, n_envs=1, n_accounts=300, fund_mode=mode, seed=7, **kw)
    assert res.max_ledger_error_usd < 1e-5
    assert (res.fund_usd >= 0.0).all() and np.isfinite(res.events).all()


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"fund_mode": "pooled"}, "fund_mode must be one of"),
        ({"collateral_price": "oracle"}, "collateral_price must be one of"),
        (
            {
                "risk": RiskParams(liquidation_mode="dydx_v4"),
                "fund_mode": "segmented",
                "segment_transfer_cap_usd": 5.0,
            },
            "lending between segments is not built",
        ),
        ({"vault_to_oi_frac": 0.02}, "hands accounts to a vault across markets"),
        (
            {"vault_to_oi_frac": 0.02, "risk": RiskParams(liquidation_mode="binance")},
            "got 'binance'",
        ),
        ({"vault_to_oi_frac": -0.1}, "vault_to_oi_frac must lie in [0, 10]"),
        ({"fund_mode": "segmented", "fund_groups": [0, 0]}, "fund_groups must list"),
        ({"fund_mode": "segmented", "fund_groups": [0, 2, 2]}, "every segment 0 .. G - 1"),
        ({"fund_groups": [0, 0, 1]}, "fund_mode 'segmented' only"),
        ({"fund_cap_usd": [1.0, -1.0, 1.0]}, "fund_cap_usd must list"),
        ({"n_accounts": 0}, "n_accounts must be >= 1"),
        ({"fund_to_oi_frac": -0.1}, "fund_to_oi_frac"),
        ({"market_mmr_mult": [1.0, 0.0, 1.0]}, "market_mmr_mult must list"),
        ({"market_mmr_mult": [1.0, 1.0]}, "(3: BTC, ETH, ALT)"),
        ({"market_oi_cap_frac": [1.0, 0.0, 1.0]}, "market_oi_cap_frac must list"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        MarketsSimulator(load_scenario("alt_contagion"), **kwargs)
    assert fragment in str(info.value)


def test_bad_haircuts_are_named() -> None:
    with pytest.raises(ValueError) as info:
        MarketsSimulator(load_scenario("oct_10_2025_multi"), collateral_haircut_frac=[0.1, 1.0])
    assert "collateral_haircut_frac" in str(info.value) and "USDe" in str(info.value)


def test_markets_population_bounds() -> None:
    with pytest.raises(ValueError, match="second_leg_frac"):
        MarketsPopulation(second_leg_frac=1.5)


def test_oi_share_rules_name_the_field() -> None:
    data = library_dict("alt_contagion")
    del data["markets"][2]["oi_share"]
    assert_field_error(data, "markets[2].oi_share", "on every market from markets[1] on")
    data = library_dict("alt_contagion")
    data["markets"][1]["oi_share"] = 0.6
    data["markets"][2]["oi_share"] = 0.5
    assert_field_error(data, "markets[2].oi_share", "sum to 1.1")
    data = library_dict("alt_contagion")
    data["markets"][0]["oi_share"] = 0.5
    assert_field_error(data, "markets[0].oi_share", "leave it out")


def test_oi_shares_follow_depth_without_the_field() -> None:
    sc = load_scenario("oct_10_2025_multi")
    scales = np.array([1.0, *(m.depth_scale for m in sc.markets[1:])])
    assert np.allclose(sc.market_oi_shares, scales / scales.sum())
    assert load_scenario("calm").market_oi_shares == (1.0,)


def test_one_market_scenario_runs_too() -> None:
    """Without a markets section it is one market (this module's population, not the tick's)."""
    sc = _short("volatile", 240.0)
    res = _run(sc, n_accounts=500)
    assert res.market_names == ("BTC",) or len(res.market_names) == 1
    assert res.max_ledger_error_usd < 1e-6
    oi = open_interest_usd(MarketsSimulator(sc, n_accounts=500).state, sc.price.initial)
    assert oi.shape == (1, 1) and oi[0, 0] > 0.0


def test_arrivals_come_to_the_market_whose_count_drew_them() -> None:
    """``lam`` per market: only ALT's is positive, so every arrival holds an ALT position."""
    from fundgym.envs.core.rng import BatchStreams
    from fundgym.envs.traders.markets import (
        ME_ARRIVALS,
        N_MARKETS_EVENTS,
        markets_population_exchange,
    )
    from fundgym.envs.traders.population import PopulationParams

    n_acc, n_mkt = 400, 3
    coll = np.zeros((1, n_acc))
    size = np.zeros((1, n_acc, n_mkt))
    entry = np.zeros((1, n_acc, n_mkt))
    units = np.zeros((1, n_acc, 0))
    cp_size, cp_cash = np.zeros((1, n_mkt)), np.zeros(1)
    fee_rev, deposits = np.zeros(1), np.zeros(1)
    events = np.zeros(N_MARKETS_EVENTS)
    income = np.zeros(n_mkt)
    rng = BatchStreams([5])
    markets_population_exchange(
        0, rng.state, coll, size, entry, units, cp_size, cp_cash, fee_rev, deposits,
        RiskParams().packed(1), PopulationParams().columns(5.0),
        np.array([100_000.0, 3_500.0, 1.0]), np.zeros(n_mkt), np.array([0.0, 0.0, 60.0]),
        np.array([0.7, 0.95, 1.0]), np.ones(n_mkt), np.full(n_mkt, np.inf), 0.5, 0.0, 0.5,
        np.zeros(0), np.zeros(0),
        0, 0, np.full(n_mkt, np.inf), np.zeros(n_mkt, np.bool_), np.zeros(n_mkt),
        np.zeros(n_mkt), np.zeros(n_mkt), income, events,
    )  # fmt: skip
    held = size[0] != 0.0
    opened = held.any(axis=1)
    assert 30 <= events[ME_ARRIVALS] == opened.sum()
    assert held[opened, 2].all()  # the home leg is ALT's; a second leg may be elsewhere
    assert held[opened][:, :2].any()  # some cross accounts took a second leg
    # the counterparty holds the other side of every position, market by market
    assert np.allclose(size[0].sum(axis=0) + cp_size[0], 0.0)


def test_binance_runs_as_the_partial_waterfall_closing_whole_positions() -> None:
    """engine_risk: Binance's IOC whole close and fund takeover, across markets, bit for bit."""
    from fundgym.envs.markets_simulator import engine_risk

    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 500, "seed": 3}
    binance = _run(sc, RiskParams(liquidation_mode="binance", liquidation_fee_rate=0.005), **kw)
    whole = RiskParams(liquidation_fee_rate=0.005, max_liquidation_fraction=1.0)
    partial = _run(sc, whole, **kw)
    quarter = _run(sc, RiskParams(liquidation_fee_rate=0.005), **kw)
    for row in range(2):
        _same(binance, partial, row, row)
    assert binance.event("n_liquidations").sum() > 0
    assert not np.array_equal(binance.events, quarter.events)  # whole closes differ from 25%
    assert engine_risk(RiskParams()).liquidation_mode == "partial"


def _one_exchange_step(
    rows: list[tuple[float, float, float, float, float]],
    pop: Any,
    p_exit: float,
    mark: tuple[float, float] = (100.0, 10.0),
    halt: int = 0,
) -> tuple[np.ndarray[Any, Any], ...]:
    """The population kernel on one exchange of two markets, no arrivals, no assets.

    Rows are (collateral, size 0, entry 0, size 1, entry 1); MMR 5%, taker fee 0.
    """
    from fundgym.envs.core.rng import BatchStreams
    from fundgym.envs.traders.markets import N_MARKETS_EVENTS, markets_population_exchange

    coll = np.array([[r[0] for r in rows]], dtype=np.float64)
    size = np.array([[[r[1], r[3]] for r in rows]], dtype=np.float64)
    entry = np.array([[[r[2], r[4]] for r in rows]], dtype=np.float64)
    cp_size, cp_cash = -size.sum(axis=1), np.zeros(1)
    deposits, events = np.zeros(1), np.zeros(N_MARKETS_EVENTS)
    packed = RiskParams(mmr=0.05, imr=0.1, taker_fee_rate=0.0).packed(1)
    markets_population_exchange(
        0, BatchStreams([1]).state, coll, size, entry, np.zeros((1, len(rows), 0)), cp_size,
        cp_cash, np.zeros(1), deposits, packed, pop.columns(5.0), np.array(mark),
        np.full(2, p_exit), np.zeros(2), np.array([0.5, 1.0]), np.ones(2), np.full(2, np.inf),
        0.0, 0.0, 0.5, np.zeros(0), np.zeros(0), 0, halt, np.full(2, np.inf),
        np.zeros(2, np.bool_), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), events,
    )  # fmt: skip
    return coll, size, deposits, events


def test_an_account_near_liquidation_tops_up_to_one_and_a_half_times_its_requirement() -> None:
    """Equity 100 + 1 x (100 - 110) + 10 x (10 - 10) = 90; requirement 5% x (100 + 100) = 10.

    Not near (90 >= 12.5): untouched. With collateral 21, equity 11 < 12.5: it tops up to
    1.5 x 10 = 15, a deposit of 4.
    """
    from fundgym.envs.traders.markets import ME_TOP_UP_USD, ME_TOP_UPS
    from fundgym.envs.traders.population import PopulationParams

    pop = PopulationParams(react_rate_per_min=1.0, top_up_share=1.0, reduce_share=0.0)
    rows = [(100.0, 1.0, 110.0, 10.0, 10.0), (21.0, 1.0, 110.0, 10.0, 10.0)]
    coll, size, deposits, events = _one_exchange_step(rows, pop, p_exit=0.0)
    assert coll[0, 0] == 100.0
    assert coll[0, 1] == pytest.approx(25.0)  # equity 21 - 10 = 11 -> 15
    assert deposits[0] == pytest.approx(4.0) and events[ME_TOP_UPS] == 1
    assert events[ME_TOP_UP_USD] == pytest.approx(4.0)
    assert np.array_equal(size[0], [[1.0, 10.0], [1.0, 10.0]])


def test_an_account_near_liquidation_halves_every_leg() -> None:
    from fundgym.envs.traders.markets import ME_REDUCTIONS
    from fundgym.envs.traders.population import PopulationParams

    pop = PopulationParams(react_rate_per_min=1.0, top_up_share=0.0, reduce_share=1.0)
    rows = [(21.0, 1.0, 110.0, -10.0, 10.0)]
    coll, size, _, events = _one_exchange_step(rows, pop, p_exit=0.0)
    assert np.array_equal(size[0, 0], [0.5, -5.0]) and events[ME_REDUCTIONS] == 1
    assert coll[0, 0] == pytest.approx(21.0 - 5.0)  # half the BTC leg's loss of 10 realised


def test_a_bankrupt_account_cannot_walk_away_a_solvent_one_exits_and_leaves() -> None:
    """Every leg draws an exit (p_exit 1): the solvent account closes both and withdraws 90;
    the one at equity -9 keeps its positions and its debt."""
    from fundgym.envs.traders.markets import ME_EXITS, ME_LEAVERS
    from fundgym.envs.traders.population import PopulationParams

    pop = PopulationParams(react_rate_per_min=0.0)
    rows = [(100.0, 1.0, 110.0, 10.0, 10.0), (1.0, 1.0, 110.0, 10.0, 10.0)]
    coll, size, deposits, events = _one_exchange_step(rows, pop, p_exit=1.0)
    assert np.array_equal(size[0, 0], [0.0, 0.0]) and coll[0, 0] == 0.0
    assert deposits[0] == pytest.approx(-90.0)  # withdrew its equity
    assert np.array_equal(size[0, 1], [1.0, 10.0]) and coll[0, 1] == 1.0
    assert events[ME_EXITS] == 2 and events[ME_LEAVERS] == 1


# ---- venue events across markets ------------------------------------------------------------


def test_a_withdrawal_halt_keeps_the_exited_account_and_its_money_in() -> None:
    """The case above under a withdrawal halt: the solvent account still closes both legs
    (an exit is a trade), but its 90 stays as collateral; nobody leaves."""
    from fundgym.envs.traders.kernels import HALT_WITHDRAWALS
    from fundgym.envs.traders.markets import ME_EXITS, ME_LEAVERS
    from fundgym.envs.traders.population import PopulationParams

    pop = PopulationParams(react_rate_per_min=0.0)
    rows = [(100.0, 1.0, 110.0, 10.0, 10.0), (1.0, 1.0, 110.0, 10.0, 10.0)]
    coll, size, deposits, events = _one_exchange_step(rows, pop, 1.0, halt=HALT_WITHDRAWALS)
    assert np.array_equal(size[0, 0], [0.0, 0.0]) and coll[0, 0] == pytest.approx(90.0)
    assert deposits[0] == 0.0
    assert events[ME_EXITS] == 2 and events[ME_LEAVERS] == 0


def _with_events(events: list[dict[str, Any]], minutes: float = 900.0) -> Scenario:
    data = library_dict("alt_contagion")
    data["horizon_minutes"] = minutes
    data["events"] = events
    return scenario_from_dict(data, "alt_contagion_events.yaml")


def test_venue_events_act_on_every_market_as_in_one() -> None:
    """alt_contagion's crash (minute 600) under an outage, reduce-only and a leverage cap.

    An outage that stops the engine (590-700) liquidates nobody and admits nobody in its
    window, then the engine closes what it deferred; one with the engine running admits
    nobody but liquidates; reduce-only admits nobody.
    """
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 400, "seed": 4}
    n_liq = StepEvents.FIELDS.index("n_liquidations")
    base = _run(_with_events([]), **kw)
    window = slice(590, 700)
    assert base.events[window, :, n_liq].sum() > 0 and base.arrivals[window].sum() > 0

    off = _run(_with_events([{"kind": "outage", "start_minute": 590, "minutes": 110,
                              "engine_runs": False}]), **kw)  # fmt: skip
    assert off.events[window, :, n_liq].sum() == 0 and off.arrivals[window].sum() == 0
    assert off.events[700:, :, n_liq].sum() > 0  # deferred, not forgiven
    assert off.max_ledger_error_usd < 1e-6 * float(np.abs(off.initial_open_interest_usd).sum())
    assert np.array_equal(off.events[:590], base.events[:590])  # the same until it starts

    on = _run(_with_events([{"kind": "outage", "start_minute": 590, "minutes": 110,
                             "engine_runs": True}]), **kw)  # fmt: skip
    assert on.events[window, :, n_liq].sum() > 0 and on.arrivals[window].sum() == 0

    reduce_only = _run(_with_events([{"kind": "reduce_only", "start_minute": 0,
                                      "minutes": 900}]), **kw)  # fmt: skip
    assert reduce_only.arrivals.sum() == 0 and base.arrivals.sum() > 0
    btc_only = _run(_with_events([{"kind": "reduce_only", "start_minute": 0, "minutes": 900,
                                   "market": "BTC"}]), **kw)  # fmt: skip
    assert 0 < btc_only.arrivals.sum() < 0.5 * base.arrivals.sum()  # ETH and ALT still admit


def test_a_settlement_closes_one_market_at_its_window_average_and_the_others_trade_on() -> None:
    """ALT settles at minute 800 against a 30-minute index window (alt_contagion, one tick a
    minute), as BitMEX settled LUNA: every ALT position closes at the mean of ALT's index over
    ticks 771-800, into each account's one collateral balance; BTC and ETH trade on; nothing
    opens in ALT again; the ledger closes every tick.
    """
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 400, "seed": 4}
    sc = _with_events([{"kind": "settlement", "start_minute": 800, "index_window_minutes": 30,
                        "market": "ALT"}])  # fmt: skip
    sim = MarketsSimulator(sc, **kw)
    assert sim.settle_tick.tolist() == [-1, -1, 800] and sim.settle_from.tolist() == [-1, -1, 771]
    index_alt = []
    while sim.t < 800:
        out = sim.step()
        index_alt.append(out["index"][:, 2])
    before = sim.state.size.copy()
    out = sim.step()  # tick 800: the settlement, then the tick as usual
    index_alt.append(out["index"][:, 2])
    price = np.mean(index_alt[771:801], axis=0)
    np.testing.assert_allclose(out["events"].settlement_price, price, rtol=1e-12)
    assert (before[:, :, 2] != 0.0).sum() > 10  # there was something to settle
    # Hand-worked PnL: test_a_settlement_leaves_a_flat_account_below_zero_as_debt_the_fund_pays
    # (the rest of the tick moves collateral too: leavers, fees, funding).
    assert (sim.state.size[:, :, 2] == 0.0).all()
    assert (sim.state.counterparty_size[:, 2] == 0.0).all()
    assert (sim.state.size[:, :, :2] != 0.0).sum() > 0  # cross accounts keep BTC and ETH legs
    arrivals = [sim.step()["arrivals"] for _ in range(60)]
    assert sum(a.sum() for a in arrivals) > 0  # BTC and ETH still admit traders
    assert (sim.state.size[:, :, 2] == 0.0).all()  # closed: nothing opens in ALT again
    assert sim.max_ledger_error_usd < 1e-6 * float(np.abs(sim.state.initial_total_usd).max())


def test_a_settlement_leaves_a_flat_account_below_zero_as_debt_the_fund_pays() -> None:
    # | account | before (ALT at entry 10) | settles at 4 | after                        |
    # |---------|--------------------------|--------------|------------------------------|
    # | 0       | long 10 ALT, coll 20      | PnL -60      | coll -40, flat: debt 40, 0   |
    # | 1       | long 10 ALT + 1 BTC, 20   | PnL -60      | coll -40, keeps BTC: no debt |
    # | 2       | short 20 ALT, coll 50     | PnL +120     | coll 170                     |
    # The counterparty held +0 ALT after these three (10 + 10 - 20); the fund pays the 40.
    from fundgym.envs.core.vault import inventory_column, vault_width
    from fundgym.envs.core.venue_events import settle_market

    coll = np.array([[20.0, 20.0, 50.0]])
    size = np.zeros((1, 3, 2))
    size[0, :, 1] = [10.0, 10.0, -20.0]
    size[0, 1, 0] = 1.0
    entry = np.zeros((1, 3, 2))
    entry[0, :, 1] = 10.0
    entry[0, 1, 0] = 100.0
    cp_size = np.array([[-1.0, 0.0]])
    cp_cash = np.array([100.0])
    vault = np.zeros((1, vault_width(2)))
    vault[0, inventory_column(1)] = 2.0
    debt = settle_market(
        coll,
        size,
        entry,
        cp_size,
        cp_cash,
        vault,
        inventory_column(1),
        1,
        np.array([4.0]),
        np.zeros((1, 3), dtype=bool),
    )
    assert debt.tolist() == [40.0]
    assert coll.tolist() == [[0.0, -40.0, 170.0]]
    assert (size[:, :, 1] == 0.0).all() and size[0, 1, 0] == 1.0
    assert vault[0, inventory_column(1)] == 0.0 and vault[0, 0] == 8.0
    # With a collateral asset the flat account is not bankrupt here: its asset stays its own.
    coll = np.array([[20.0]])
    size = np.array([[[0.0, 10.0]]])
    entry = np.array([[[0.0, 10.0]]])
    debt = settle_market(
        coll,
        size,
        entry,
        np.zeros((1, 2)),
        np.zeros(1),
        np.zeros((1, vault_width(2))),
        inventory_column(1),
        1,
        np.array([4.0]),
        np.ones((1, 1), dtype=bool),
    )
    assert debt.tolist() == [0.0] and coll.tolist() == [[-40.0]]


def test_the_attackers_withdrawal_across_markets_by_hand() -> None:
    from fundgym.envs.core.venue_events import attacker_withdrawal, attacker_withdrawal_markets

    # | market | size | entry | oracle | PnL | IMR x |size| x oracle |
    # |--------|------|-------|--------|-----|------------------------|
    # | ALT    | 100  | 1     | 5      | 400 | 0.1 x 500 = 50         |
    # | BTC    | -1   | 100   | 110    | -10 | 0.2 x 110 = 22         |
    # Collateral 20: PnL 390, counted at 1 - 0.5 of its profit: 20 + 390 - 195 = 215; less
    # 72 of initial margin: 143.
    size, entry = np.array([100.0, -1.0]), np.array([1.0, 100.0])
    got = attacker_withdrawal_markets(
        20.0, size, entry, np.array([5.0, 110.0]), 0.5, np.array([0.1, 0.2])
    )
    assert got == pytest.approx(143.0, rel=1e-15)
    # A loss counts whole, and nothing is owed back: 20 - 400 ... floored at 0.
    assert attacker_withdrawal_markets(20.0, size, entry, np.array([-3.0, 100.0]), 0.5,
                                       np.array([0.1, 0.2])) == 0.0  # fmt: skip
    # One market: the one-market formula's value.
    one = attacker_withdrawal(
        np.array([[20.0]]), np.array([[[100.0]]]), np.array([[[1.0]]]), 0, 5.0, 0.5, 0.1
    )
    assert attacker_withdrawal_markets(
        20.0, np.array([100.0]), np.array([1.0]), np.array([5.0]), 0.5, np.array([0.1])
    ) == pytest.approx(one, rel=1e-15)


def test_an_attacker_in_a_thin_alt_drains_a_shared_fund_and_a_segment_contains_it() -> None:
    """Mango in one market of three: alt_contagion with ALT pumped 5x from minute 600 and
    back down, an attacker long ALT from minute 0 ($20k behind $80k) who withdraws against
    his unrealised profit from minute 600 (the haircut lever at 0, as Mango's venue had it),
    at most $1M. He takes nothing before 600 and far less with the default haircut (1); the
    ledger closes every tick; the shared fund pays his bad debt out of what backs BTC and ETH,
    the segmented funds confine it to ALT's.
    """
    data = copy.deepcopy(library_dict("alt_contagion"))
    data["horizon_minutes"] = 900
    data["attacker"] = {
        "margin_usd": 2e4,
        "notional_usd": 8e4,
        "side": "long",
        "withdraw_start_minute": 600,
        "lendable_usd": 1e6,
        "market": "ALT",
    }
    data["markets"][2]["idio_crash"] = {"start_minute": 600, "legs": [
        {"kind": "recovery", "minutes": 15, "return_frac": 4.0},
        {"kind": "decline", "minutes": 60, "return_frac": -0.9}]}  # fmt: skip
    sc = scenario_from_dict(data, "alt_attack.yaml")
    kw: dict[str, Any] = {"n_envs": 2, "n_accounts": 400, "seed": 4}
    mango = RiskParams(unrealised_pnl_haircut_frac=0.0)
    runs = {mode: MarketsSimulator(sc, mango, fund_mode=mode, **kw).run()
            for mode in ("shared", "segmented")}  # fmt: skip
    col = StepEvents.FIELDS.index("attacker_withdrawn_usd")
    for res in runs.values():
        took = res.events[:, :, col]
        assert (took[:600] == 0.0).all() and (took.sum(axis=0) > 1e4).all()
        assert (took.sum(axis=0) <= 1e6 + 1e-6).all()
        assert res.max_ledger_error_usd < 1e-6 * float(np.abs(res.initial_open_interest_usd).sum())
    shared = runs["shared"].fund_usd.sum(axis=2)
    assert (shared.min(axis=0) < 0.05 * shared[0]).all()  # drained
    seg = runs["segmented"].fund_usd  # (T, E, pots): BTC's and ETH's hold
    assert (seg[:, :, :2].min(axis=0) > 0.8 * seg[0, :, :2]).all()
    # The haircut lever's default (1) lends nothing against unrealised profit: what he takes
    # then is free margin and profit ADL realised for him, far less.
    default = MarketsSimulator(sc, fund_mode="shared", **kw).run()
    assert default.events[:, :, col].sum() < 0.75 * runs["shared"].events[:, :, col].sum()


def test_per_market_caps_and_reduce_only_act_on_their_market_alone() -> None:
    """Arrivals in BTC, ETH and ALT (homes by ``lam``) under one market's events.

    Isolated accounts (``cross_share`` 0) post the order's margin, so notional / collateral is
    the order's leverage less the fee: under a 2x cap on ALT every ALT arrival is at most 2x
    (without it some are above), and BTC's arrivals still go above it. Cross accounts take a
    second leg in ALT only at an order leverage the cap allows: fewer of them do. Reduce-only
    on ALT: BTC and ETH still admit accounts, none of which takes a leg in ALT.
    """
    from fundgym.envs.core.rng import BatchStreams
    from fundgym.envs.traders.markets import ME_ARRIVALS, N_MARKETS_EVENTS
    from fundgym.envs.traders.markets import markets_population_exchange as step
    from fundgym.envs.traders.population import PopulationParams

    def arrivals(lam: list[float], cap: list[float], reduce_only: list[bool], **pop: Any) -> Any:
        n_acc, n_mkt = 600, 3
        coll = np.zeros((1, n_acc))
        size = np.zeros((1, n_acc, n_mkt))
        events = np.zeros(N_MARKETS_EVENTS)
        step(
            0, BatchStreams([5]).state, coll, size, np.zeros((1, n_acc, n_mkt)),
            np.zeros((1, n_acc, 0)), np.zeros((1, n_mkt)), np.zeros(1), np.zeros(1),
            np.zeros(1), RiskParams().packed(1), PopulationParams(**pop).columns(5.0),
            np.array([100_000.0, 3_500.0, 1.0]), np.zeros(n_mkt), np.array(lam),
            np.array([0.7, 0.95, 1.0]), np.ones(n_mkt), np.full(n_mkt, np.inf), 0.6, 0.0, 0.5,
            np.zeros(0), np.zeros(0), 0, 0, np.array(cap), np.array(reduce_only),
            np.zeros(n_mkt), np.zeros(n_mkt), np.zeros(n_mkt), np.zeros(n_mkt), events,
        )  # fmt: skip
        notional = np.abs(size[0]) * np.array([100_000.0, 3_500.0, 1.0])
        return notional, coll[0], events[ME_ARRIVALS]

    inf = np.inf
    for lam, home, capped in (([0.0, 0.0, 60.0], 2, True), ([60.0, 0.0, 0.0], 0, False)):
        for cap in (2.0, inf):
            notional, coll, n = arrivals(lam, [inf, inf, cap], [False] * 3, cross_share=0.0)
            held = notional[:, home] > 0.0
            lev = notional[held, home] / coll[held]
            assert n >= 30 and held.sum() == n
            assert (lev <= 2.0).all() if capped and cap == 2.0 else (lev > 2.0).any()
    second = []
    for cap in (inf, 2.0):
        notional, _, n = arrivals([60.0, 0.0, 0.0], [inf, inf, cap], [False] * 3)
        second.append(int(((notional[:, 0] > 0.0) & (notional[:, 2] > 0.0)).sum()))
    assert second[0] > second[1]
    notional, coll, n = arrivals([0.0, 0.0, 60.0], [inf] * 3, [False, False, True])
    assert n == 0 and not notional.any()
    notional, coll, n = arrivals([40.0, 40.0, 60.0], [inf] * 3, [False, False, True])
    assert n >= 30 and not notional[:, 2].any() and notional[:, :2].any(axis=1).sum() == n
    notional, _, n = arrivals([40.0, 40.0, 60.0], [inf] * 3, [False] * 3)
    assert notional[:, 2].any()  # without it ALT admits accounts


# ---- levers per exchange -------------------------------------------------------------------


def test_each_exchange_runs_its_own_levers_as_its_single_twin() -> None:
    """``set_levers`` with one row per exchange: exchange ``e`` is a batch of one with row ``e``.

    Segmented funds that may lend, with every lever different across the three exchanges:
    fees and fee shares (``RiskParams`` arrays), each market's margin multiple, OI cap and
    fund cap, and the transfer cap; each exchange equals its twin bit for bit.
    """
    sc = _short("alt_contagion", 700.0)
    kw: dict[str, Any] = {"n_accounts": 300, "fund_mode": "segmented"}
    fee = np.array([0.002, 0.01, 0.03])
    share = np.array([0.0, 0.5, 1.0])
    mmr_mult = np.array([[1.0, 1.0, 1.0], [0.5, 1.5, 4.0], [2.0, 1.0, 0.5]])
    oi_cap = np.array([[4.0, 4.0, 4.0], [1.0, 2.0, 0.25], [4.0, 0.5, 1.0]])
    fund_cap = np.array([[1.0, 1.0, 1.0], [0.0, 0.5, 0.1], [1.0, 1.0, 0.0]])
    transfer = np.array([0.0, 1e4, np.inf])

    def levers(rows: Any) -> dict[str, Any]:
        return {
            "market_mmr_mult": mmr_mult[rows],
            "market_oi_cap_frac": oi_cap[rows],
            "market_fund_cap_frac": fund_cap[rows],
            "segment_transfer_cap_usd": transfer[rows],
        }

    def risk(rows: Any) -> RiskParams:
        return RiskParams(liquidation_fee_rate=fee[rows], liquidation_fee_fund_share=share[rows])

    batch = MarketsSimulator(sc, n_envs=3, seed=[11, 12, 13], **kw)
    batch.set_levers(risk(slice(None)), **levers(slice(None)))
    res = batch.run()
    for e in range(3):
        single = MarketsSimulator(sc, n_envs=1, seed=11 + e, **kw)
        single.set_levers(risk([e]), **levers([e]))
        _same(res, single.run(), e, 0)
    assert res.event("n_liquidations").sum() > 0
    # The levers differ, and so do the exchanges' outcomes.
    paid = res.market_fund_paid_usd.sum(axis=0)
    assert not np.array_equal(paid[0], paid[1])


def test_per_exchange_levers_of_the_wrong_shape_are_named() -> None:
    sim = MarketsSimulator(_short("alt_contagion", 700.0), n_envs=2, n_accounts=50)
    with pytest.raises(
        ValueError, match=r"market_mmr_mult must list one multiple .* per exchange \(2\)"
    ):
        sim.set_levers(RiskParams(), market_mmr_mult=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"market_fund_cap_frac must list .* per exchange \(2\)"):
        sim.set_levers(RiskParams(), market_fund_cap_frac=np.ones((2, 2)))
    with pytest.raises(
        ValueError, match=r"segment_transfer_cap_usd must be a number or \(n_envs,\)"
    ):
        sim.set_levers(RiskParams(), segment_transfer_cap_usd=np.zeros(3))
    with pytest.raises(ValueError, match=r"segment_transfer_cap_usd must be >= 0 .* got True"):
        sim.set_levers(RiskParams(), segment_transfer_cap_usd=True)


def test_a_masked_rebalance_moves_only_the_masked_funds() -> None:
    """``set_allocation(w, mask)``: the masked exchange is rebalanced as alone; the other's fund
    is untouched to the bit (a rebalance to the weights in force would still trade)."""
    sc = _short("alt_contagion", 700.0)
    sim = MarketsSimulator(sc, n_envs=2, n_accounts=200, seed=[5, 6])
    alone = MarketsSimulator(sc, n_envs=1, n_accounts=200, seed=6)
    for s in (sim, alone):
        s.step()
    before = copy.deepcopy(sim.state.fund)
    w = np.array([[0.5, 0.2, 0.2, 0.1], [0.5, 0.2, 0.2, 0.1]])
    cost = sim.set_allocation(w, np.array([False, True]))
    cost_alone = alone.set_allocation(w[1])
    assert cost[0] == 0.0 and cost[1] == cost_alone[0] > 0.0
    for name in ("stable_usd", "yield_usd", "volatile_units", "put_units", "external_pnl_usd"):
        assert getattr(sim.state.fund, name)[0] == getattr(before, name)[0], name
        assert getattr(sim.state.fund, name)[1] == getattr(alone.state.fund, name)[0], name
