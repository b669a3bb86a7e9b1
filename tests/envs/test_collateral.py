"""Collateral assets: the ``collateral`` schema, their three drawn prices, the library files.

Hand-worked cases use a near-silent factor (GBM at 1e-12 volatility, no jumps, no basis or
depth noise) and 0 bps of collateral noise, so every price is its scripted waypoints and its
market's legs alone. The library checks compare each file's drawn prices, on its default seed,
with the numbers its comments cite.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fundgym.envs.market.collateral import CollateralPath, depeg_levels, draw_collateral
from fundgym.envs.market.depth import Collapse, depth_multiplier_path
from fundgym.envs.market.factor import MarketsPath
from fundgym.envs.market.price import drawdown_stats
from fundgym.envs.scenarios import (
    SCENARIO_DIR,
    CollapseSpec,
    CollateralSpec,
    DepegPointSpec,
    MultiMarketError,
    NonFinitePathError,
    Scenario,
    load_scenario,
    market_path,
    require_single_market,
    scenario_from_dict,
    simulated_today,
    single_market_names,
)
from fundgym.envs.schema import SchemaError
from tests.multi_market import assert_field_error, draw, library_dict

MARKET_COLUMNS = ("index", "basis", "wick", "depth_mult", "frozen", "manipulation")
LEGS = [
    {"kind": "decline", "minutes": 10, "return_frac": -0.2},
    {"kind": "pause", "minutes": 5},
    {"kind": "recovery", "minutes": 10, "return_frac": 0.1},
]


def silent(collateral: list[dict[str, Any]], **extra: Any) -> Scenario:
    """60 one-minute ticks; F (the factor, 100) and B2 (beta 2, 50); legs from minute 10."""
    data: dict[str, Any] = {
        "name": "silent",
        "description": "hand-worked",
        "horizon_minutes": 60,
        "price": {
            "initial": 100.0,
            "model": "gbm",
            "vol_annual": 1e-12,
            "jumps": {"rate_per_day": 0},
        },
        "depth": {"normal_usd_per_pct": 1e6, "noise_frac": 0.0},
        "venue": {"basis_noise_bps": 0.0},
        "crash": {"start_minute": 10, "vol_multiplier": 1.0, "legs": LEGS},
        "markets": [{"name": "F"}, {"name": "B2", "initial": 50.0, "beta": 2.0}],
        "collateral": collateral,
        **extra,
    }
    return scenario_from_dict(data, "silent.yaml")


STABLE = {
    "name": "USDx",
    "kind": "yield_stable",
    "haircut_frac": 0.05,
    "book_depeg": [
        {"minute": 10, "level": 1.0},
        {"minute": 20, "level": 0.5},
        {"minute": 30, "level": 0.5},
        {"minute": 40, "level": 1.0},
    ],
}
LST = {
    "name": "sB2",
    "kind": "lst",
    "linked_to": "B2",
    "conversion_ratio": 1.05,
    "haircut_frac": 0.1,
    "index_depeg": [{"minute": 30, "level": 0.9}, {"minute": 50, "level": 0.81}],
}


# ---------------------------------------------------------------- hand-worked ----


def test_a_book_depeg_hits_its_scripted_trough_while_the_index_stays_at_the_peg():
    # Waypoints 1 (minute 10), 0.5 (20), 0.5 (30), 1 (40): log-linear between, so minute 15
    # is sqrt(0.5) = 0.70711 and minute 35 the same on the way back; held outside.
    c = draw(silent([STABLE])).collateral
    assert c.names == ("USDx",) and c.book.shape == (60, 1, 1)
    book = c.book[:, 0, 0]
    assert book[20] == pytest.approx(0.5, rel=1e-12) and book[25] == pytest.approx(0.5, rel=1e-12)
    assert book.min() == pytest.approx(0.5, rel=1e-12)
    np.testing.assert_allclose(book[[0, 10, 15, 35, 40, 59]], [1, 1, 0.70711, 0.70711, 1, 1], 1e-5)
    assert (c.index == 1.0).all() and (c.redemption == 1.0).all()


def test_an_lsts_redemption_is_its_ratio_times_its_markets_index_and_its_index_depegs_from_it():
    # B2 (beta 2) follows the legs squared: 50 x 0.64 = 32 at minute 19, 50 x 0.7744 = 38.72
    # from minute 35. Ratio 1.05: redemption 33.6 and 40.656. Index depeg 0.9 held to minute
    # 30, then to 0.81 at 50: minute 40 is sqrt(0.9 x 0.81) = 0.853815.
    p = draw(silent([LST]))
    c = p.collateral
    np.testing.assert_array_equal(c.redemption[:, :, 0], 1.05 * p.index[:, :, 1])
    red = c.redemption[:, 0, 0]
    np.testing.assert_allclose(red[[0, 19, 40, 59]], [52.5, 33.6, 40.656, 40.656], rtol=1e-9)
    ratio = c.index[:, 0, 0] / red
    np.testing.assert_allclose(ratio[[0, 30, 40, 50, 59]], [0.9, 0.9, 0.853815, 0.81, 0.81], 1e-6)
    np.testing.assert_array_equal(c.book, c.index)  # no book depeg, no noise


def test_a_book_depeg_multiplies_the_index_depeg():
    both = {**LST, "book_depeg": [{"minute": 45, "level": 0.5}]}
    c = draw(silent([both])).collateral
    np.testing.assert_allclose(c.book[:, 0, 0], 0.5 * c.index[:, 0, 0], rtol=1e-12)


def test_depeg_levels_are_exact_at_waypoints_and_geometric_between():
    points = (DepegPointSpec(0.0, 1.0), DepegPointSpec(10.0, 0.04))
    t = np.array([0.0, 5.0, 10.0, 20.0])
    np.testing.assert_allclose(depeg_levels(points, t), [1.0, 0.2, 0.04, 0.04], rtol=1e-12)
    np.testing.assert_array_equal(depeg_levels((), t), np.ones(4))


def test_noise_has_the_configured_size_and_a_mean_of_one():
    # 50 bps of book noise over 60 ticks x 400 exchanges: log std 0.005 within 2%, mean 1
    # within 4 standard errors (0.005 / sqrt(24,000) = 3.2e-5).
    noisy = {"name": "N", "kind": "stable", "haircut_frac": 0.0, "book_noise_bps": 50.0}
    c = draw(silent([noisy]), 3, 400).collateral
    r = c.book[:, :, 0] / c.index[:, :, 0]
    assert (c.index == 1.0).all()  # 0 bps of index noise: exactly the peg
    assert np.log(r).std() == pytest.approx(0.005, rel=0.02)
    assert abs(r.mean() - 1.0) < 4 * 0.005 / math.sqrt(r.size)


def test_a_markets_own_depth_collapse_moves_its_book_alone():
    # B2's book alone falls to 2% of normal over minutes 20-25 and holds 10 minutes; F's stays.
    own = CollapseSpec(start_minute=20, minutes_to_floor=5, floor_mult=0.02, hold_minutes=10)
    sc = silent([])
    sc = dataclasses.replace(
        sc, markets=(sc.markets[0], dataclasses.replace(sc.markets[1], depth_collapses=(own,)))
    )
    p = draw(sc)
    want = depth_multiplier_path(60, 1.0, [Collapse(20.0, 5.0, 0.02, 10.0, 60.0)])
    np.testing.assert_allclose(p.depth_mult[:, 0, 1], want, rtol=1e-12)
    assert p.depth_mult[25, 0, 1] == pytest.approx(0.02) and (p.depth_mult[:, 0, 0] == 1.0).all()


# ---------------------------------------------------------------- unchanged ----


def assert_markets_equal(a: MarketsPath, b: MarketsPath) -> None:
    for name in (*MARKET_COLUMNS, "vol_mult", "precursor"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(
            np.ascontiguousarray(x).view(np.uint8), np.ascontiguousarray(y).view(np.uint8), name
        )


def test_adding_collateral_leaves_every_markets_path_bit_for_bit():
    with_c = load_scenario("oct_10_2025_multi")
    without = dataclasses.replace(with_c, collateral=())
    for seed in (0, 2025):
        a, b = draw(with_c, seed, 2), draw(without, seed, 2)
        assert_markets_equal(a, b)
        assert a.collateral.n_collateral == 3 and b.collateral.n_collateral == 0
        assert b.collateral.book.shape == (with_c.n_ticks, 2, 0)


def test_a_scenario_without_collateral_draws_as_before_and_simulates():
    sc = load_scenario("oct_10_2025")
    assert sc.collateral == () and sc.collateral_names == () and simulated_today(sc)
    p = draw(sc, 5, 2)
    assert p.collateral.names == () and p.collateral.index.shape == (sc.n_ticks, 2, 0)
    want = market_path(sc, np.random.default_rng(5), 2)
    np.testing.assert_array_equal(p.index[:, :, 0], want.index)


def test_collateral_draws_are_reproducible_and_each_asset_keeps_its_stream():
    sc = load_scenario("oct_10_2025_multi")
    a, b = draw(sc, 11, 2).collateral, draw(sc, 11, 2).collateral
    for name in ("redemption", "index", "book"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.index[:, :, 0], draw(sc, 12, 2).collateral.index[:, :, 0])
    # Dropping the last asset leaves the others' bits; so does adding one.
    fewer = draw(dataclasses.replace(sc, collateral=sc.collateral[:2]), 11, 2).collateral
    np.testing.assert_array_equal(fewer.book, a.book[:, :, :2])
    extra = CollateralSpec(name="USDT", kind="stable", haircut_frac=0.0001, index_noise_bps=2.0)
    more = draw(dataclasses.replace(sc, collateral=(*sc.collateral, extra)), 11, 2).collateral
    np.testing.assert_array_equal(more.book[:, :, :3], a.book)
    # Changing an asset's index noise leaves its book noise draws (book / index) alone.
    usde = dataclasses.replace(sc.collateral[0], index_noise_bps=50.0)
    changed = draw(dataclasses.replace(sc, collateral=(usde, *sc.collateral[1:])), 11, 2)
    c = changed.collateral
    assert not np.array_equal(c.index[:, :, 0], a.index[:, :, 0])
    np.testing.assert_allclose(
        c.book[:, :, 0] / c.index[:, :, 0], a.book[:, :, 0] / a.index[:, :, 0]
    )
    np.testing.assert_array_equal(c.book[:, :, 1:], a.book[:, :, 1:])


def test_layout_is_exchange_major_as_the_markets():
    sc = load_scenario("oct_10_2025_multi")
    c = draw(sc, 1, 2).collateral
    n, k = sc.n_ticks, c.n_collateral
    assert c.book.shape == (n, 2, k) and c.book.strides == (k * 8, n * k * 8, 8)


# ---------------------------------------------------------------- finite or refused ----


def test_extreme_in_range_collateral_stays_finite_and_positive():
    # LUNA's -99.9999% as an lst's market, a ratio of 1e3 and 1e-3, depegs at both level
    # bounds, 10% noise a tick on both prices, for 2,000 exchanges' worth of draws.
    data = library_dict("luna_2022")
    data["markets"] = [{"name": "LUNA"}]
    # LUNA's settlement is one market's only (refused with collateral assets): its path stays.
    data["events"] = [e for e in data["events"] if e["kind"] != "settlement"]
    extreme = [{"minute": 0, "level": 10.0}, {"minute": 12000, "level": 1e-4}]
    data["collateral"] = [
        {
            "name": f"X{i}",
            "kind": "lst",
            "linked_to": "LUNA",
            "conversion_ratio": ratio,
            "haircut_frac": 0.999,
            "index_noise_bps": 1000,
            "book_noise_bps": 1000,
            "index_depeg": extreme,
            "book_depeg": extreme,
        }
        for i, ratio in enumerate((1e-3, 1e3))
    ]
    c = draw(scenario_from_dict(data, "<extreme>"), 4, 5).collateral
    for name in ("redemption", "index", "book"):
        values = getattr(c, name)
        assert np.isfinite(values).all() and (values > 0).all(), name


def test_a_non_finite_collateral_price_names_the_asset_column_and_tick():
    sc = load_scenario("oct_10_2025_multi")
    p = draw(sc)
    index = p.index.copy()
    index[9, 0, 1] = np.inf  # ETH at tick 9: wBETH's redemption follows it
    rngs = list(np.random.default_rng(0).spawn(3))
    with pytest.raises(
        NonFinitePathError, match=r"collateral 'wBETH': redemption = inf.*tick 9 \(minute 9\)"
    ):
        draw_collateral(sc, index, np.arange(sc.n_ticks, dtype=float), rngs, 1)


# ---------------------------------------------------------------- refused by simulation ----


def test_collateral_is_refused_wherever_one_market_would_be_simulated():
    data = library_dict("oct_10_2025")
    data["collateral"] = [{"name": "USDe", "kind": "yield_stable", "haircut_frac": 0.05}]
    sc = scenario_from_dict(data, "one_market.yaml")
    assert sc.n_markets == 1 and not simulated_today(sc)
    for call in (
        lambda: require_single_market(sc),
        lambda: market_path(sc, np.random.default_rng(0)),
    ):
        with pytest.raises(MultiMarketError) as info:
            call()
        assert info.value.path == "collateral" and info.value.value == ["USDe"]
        assert "collateral assets besides USD are not simulated by this simulator" in str(
            info.value
        )
    assert draw(sc).collateral.names == ("USDe",)  # drawn all the same
    names = single_market_names()
    for name in ("oct_10_2025_multi", "luna_2022_multi", "alt_contagion"):
        assert name not in names
        with pytest.raises(MultiMarketError):
            require_single_market(load_scenario(name))


# ---------------------------------------------------------------- schema errors ----


def with_collateral(**changes: Any) -> dict[str, Any]:
    data = library_dict("oct_10_2025_multi")
    for where, value in changes.items():
        i, field = where.split("__")
        data["collateral"][int(i[1:])][field] = value
    return data


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (with_collateral(c0__name="USD"), "collateral[0].name", "not USD"),
        (with_collateral(c0__name="US De"), "collateral[0].name", "1-32 of A-Z"),
        (with_collateral(c1__name="ETH"), "collateral[1].name", "no market or other collateral"),
        (with_collateral(c2__name="wBETH"), "collateral[2].name", "no market or other collateral"),
        (with_collateral(c0__kind="stablecoin"), "collateral[0].kind", "one of ['stable'"),
        (with_collateral(c0__haircut_frac=1.0), "collateral[0].haircut_frac", "[0.0, 1.0)"),
        (with_collateral(c0__haircut_frac=-0.1), "collateral[0].haircut_frac", "[0.0, 1.0)"),
        (with_collateral(c0__linked_to="ETH"), "collateral[0].linked_to", "USD: a yield_stable"),
        (
            with_collateral(c0__conversion_ratio=1.1),
            "collateral[0].conversion_ratio",
            "leave it out",
        ),
        (with_collateral(c1__conversion_ratio=None), "collateral[1].conversion_ratio", "required"),
        (with_collateral(c1__linked_to="USD"), "collateral[1].linked_to", "links to one of"),
        (with_collateral(c1__linked_to="DOGE"), "collateral[1].linked_to", "['BTC', 'ETH', 'SOL'"),
        (with_collateral(c1__conversion_ratio=0.0), "collateral[1].conversion_ratio", "[0.001"),
        (with_collateral(c0__book_noise_bps=1001), "collateral[0].book_noise_bps", "[0.0, 1000.0]"),
        (with_collateral(c0__color=1), "collateral[0].color", "unknown key"),
        (
            with_collateral(c0__book_depeg=[{"minute": 5, "level": 0.0}]),
            "collateral[0].book_depeg[0].level",
            "[0.0001, 10.0]",
        ),
        (
            with_collateral(
                c0__book_depeg=[{"minute": 5, "level": 1.0}, {"minute": 5, "level": 0.5}]
            ),
            "collateral[0].book_depeg[1].minute",
            "after book_depeg[0].minute = 5: waypoints in time order",
        ),
        (
            with_collateral(
                c2__index_depeg=[{"minute": 5, "level": 1.0}, {"minute": 2041, "level": 0.5}]
            ),
            "collateral[2].index_depeg[1].minute",
            "within horizon_minutes = 2040",
        ),
    ],
)
def test_bad_collateral_fields_name_the_field_value_and_rule(data, field, fragment):
    assert_field_error(data, field, fragment)


def test_a_markets_own_depth_collapses_keep_the_floor_budget_and_the_factor_takes_none():
    collapse = {"start_minute": 5, "minutes_to_floor": 1, "floor_mult": 0.001}
    data = library_dict("alt_contagion")
    data["markets"][2]["depth_collapses"] = [collapse, collapse, collapse]
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "alt.yaml")
    assert info.value.path == "markets[2].depth_collapses" and "multiply to 1e-09" in str(
        info.value
    )
    data = library_dict("alt_contagion")
    data["markets"][0]["depth_collapses"] = [collapse]
    with pytest.raises(SchemaError, match=r"markets\[0\]\.depth_collapses = .*leave it out"):
        scenario_from_dict(data, "alt.yaml")


def test_collateral_spec_rules_outside_a_file_name_the_field():
    with pytest.raises(ValueError, match=r"conversion_ratio = None: required for an lst"):
        CollateralSpec(name="x", kind="lst", haircut_frac=0.0, linked_to="ETH")


# ---------------------------------------------------------------- the library files ----


def at_minute(sc: Scenario, minute: float) -> int:
    return round(minute / sc.tick_minutes)


def test_oct_10_multi_collateral_reproduces_binances_book_prices():
    sc = load_scenario("oct_10_2025_multi")
    assert sc.collateral_names == ("USDe", "wBETH", "BNSOL")
    assert [c.linked_to for c in sc.collateral] == ["USD", "ETH", "SOL"]
    # The book depeg window is 21:36-22:16 UTC [S72,S73].
    start = sc.start_datetime
    assert start is not None
    for spec in sc.collateral:
        first, last = spec.book_depeg[0].minute, spec.book_depeg[-1].minute
        assert (start.hour * 60 + start.minute + first) % 1440 == 21 * 60 + 36
        assert (start.hour * 60 + start.minute + last) % 1440 == 22 * 60 + 16
    p = draw(sc, sc.seed)
    c = p.collateral
    trough = slice(at_minute(sc, 581), at_minute(sc, 611) + 1)
    # USDe: the book at $0.6567 [S118] (5 bps of noise on each price), the index at $1.
    np.testing.assert_allclose(c.book[trough, 0, 0], 0.6567, rtol=0.003)
    np.testing.assert_allclose(c.index[:, 0, 0], 1.0, rtol=0.003)
    # wBETH: -88% of its index [S72,S73], about $430: $444-447 at ETH's drawn ~$3,460.
    ratio = c.book[trough, 0, 1] / c.index[trough, 0, 1]
    np.testing.assert_allclose(ratio, 0.12, rtol=0.006)
    assert np.all(np.abs(c.book[trough, 0, 1] / 430.0 - 1.0) <= 0.05)
    np.testing.assert_allclose(c.redemption[:, 0, 1], 1.07 * p.index[:, 0, 1], rtol=1e-15)
    # BNSOL: $34.9 [S72,S73].
    assert np.all(np.abs(c.book[trough, 0, 2] / 34.9 - 1.0) <= 0.05)
    # Outside the window every book is its index (noise only).
    for k in range(3):
        outside = c.book[: at_minute(sc, 576), 0, k] / c.index[: at_minute(sc, 576), 0, k]
        assert np.all(np.abs(outside - 1.0) < 0.01), k


def test_luna_2022_multi_reproduces_its_sourced_paths():
    sc = load_scenario("luna_2022_multi")
    single = load_scenario("luna_2022")
    assert sc.market_names == ("BTC", "LUNA") and sc.collateral_names == ("UST", "USDT")
    luna = sc.markets[1]
    assert single.crash is not None and luna.idio_crash is not None
    assert luna.idio_crash.legs == single.crash.legs  # luna_2022's own path, as sourced
    assert luna.idio_crash.start_minute == single.crash.start_minute and luna.crash_beta == 0
    assert luna.oracle is not None and luna.oracle.floor_price == 0.107  # [S44]
    assert sc.start_utc == single.start_utc
    p = draw(sc, sc.seed)
    dd_btc = drawdown_stats(p.index[:, 0, 0])[0]
    assert sc.targets.drawdown_frac == 0.248 and abs(dd_btc - 0.248) <= 0.03  # [S38,S39]
    assert drawdown_stats(p.index[:, 0, 1])[0] >= 0.9999  # $86 -> $0.0001 [S34,S36]
    assert p.index[:, 0, 1].min() < 0.107  # below the oracle's floor
    assert p.depth_mult[:, 0, 1].min() <= 0.01 * 1.05 < 0.5 < p.depth_mult[:, 0, 0].min()
    assert p.depth_mult[:, 0, 0].min() <= 0.6 * 1.05  # BTC's book to 0.6 (section 7)
    # UST (10 bps of noise on each price): the sourced closes, everywhere, book and index.
    ust = p.collateral.index[:, 0, 0]
    for minute, level in ((4320, 0.9857), (5760, 0.68), (11520, 0.037)):  # [S33,S34,S36]
        assert ust[at_minute(sc, minute)] == pytest.approx(level, rel=0.005), minute
    assert 0.2 <= ust[at_minute(sc, 8640)] <= 0.3  # [S35,S36]
    assert ust[-1] == pytest.approx(0.037, rel=0.005)  # no recovery
    np.testing.assert_allclose(p.collateral.book[:, 0, 0], ust, rtol=0.005)
    usdt = p.collateral.index[:, 0, 1]
    assert usdt.min() == pytest.approx(0.95, rel=0.001) and usdt[-1] == pytest.approx(1, 1e-3)


def test_alt_contagion_crashes_its_thin_alt_alone():
    sc = load_scenario("alt_contagion")
    assert sc.market_names == ("BTC", "ETH", "ALT") and sc.collateral == ()
    alt = sc.markets[2]
    assert alt.depth_scale <= 0.01 and alt.depth_collapses is not None
    p = draw(sc, sc.seed)
    dd = [drawdown_stats(p.index[:, 0, m])[0] for m in range(3)]
    assert alt.target_drawdown_frac == 0.8 and abs(dd[2] - 0.8) <= 0.05
    assert dd[0] < 0.1 and dd[1] < 0.1  # BTC and ETH quiet
    assert p.depth_mult[:, 0, 2].min() <= 0.02 * 1.05
    assert p.depth_mult[:, 0, :2].min() > 0.5  # their books hold


@pytest.mark.parametrize("name", ["luna_2022_multi", "alt_contagion", "oct_10_2025_multi"])
def test_every_number_in_the_new_files_carries_a_source_tag(name):
    text = (SCENARIO_DIR / f"{name}.yaml").read_text()
    if name == "oct_10_2025_multi":  # its markets are checked in test_market_factor
        text = text.split("\ncollateral:\n", 1)[1]
    only_estimates = name == "alt_contagion"
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        key, _, value = line.strip().lstrip("- ").partition(":")
        if key in ("name", "description") or not any(ch.isdigit() for ch in value.split("#")[0]):
            continue
        assert "#" in line, line
        comment = line.split("#", 1)[1]
        if only_estimates:  # synthetic: nothing is sourced
            assert "[E]" in comment and "[S" not in comment, line
        else:
            assert any(tag in comment for tag in ("[S", "[E", "[B1]", "section 7")), line


def test_the_markets_doc_lists_every_collateral_field():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "markets.md").read_text()
    for f in dataclasses.fields(CollateralSpec):
        assert f"| `{f.name}` |" in doc, f"docs/markets.md lacks collateral[].{f.name}"
    assert {f.name for f in dataclasses.fields(CollateralPath)} == {
        "names",
        "redemption",
        "index",
        "book",
    }
