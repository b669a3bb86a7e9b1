"""Many markets, one factor: the ``markets`` schema, the factor model's draws, the refusal.

Hand-worked cases use a near-silent factor (GBM at 1e-12 volatility, no jumps, no basis or
depth noise) so a market's index is its scripted legs alone; the statistical checks draw long
GBM and GARCH-t paths on fixed seeds and compare realised betas and correlations with the
configured ones within standard-error tolerances.
"""

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.agents.cli import main
from fundgym.envs.market.factor import draw_markets
from fundgym.envs.market.price import drawdown_stats
from fundgym.envs.scenarios import (
    SCENARIO_DIR,
    SINGLE_MARKET_NAME,
    JumpSpec,
    LegSpec,
    MarketPath,
    MarketSpec,
    MultiMarketError,
    NonFinitePathError,
    Scenario,
    check_path,
    load_scenario,
    market_path,
    require_single_market,
    scenario_from_dict,
    single_market_names,
)
from fundgym.envs.schema import SchemaError
from tests.multi_market import assert_field_error, draw, library_dict

COLUMNS = [f.name for f in dataclasses.fields(MarketPath)]


def assert_same_bits(a: MarketPath, b: MarketPath) -> None:
    for name in COLUMNS:
        x, y = np.ascontiguousarray(getattr(a, name)), np.ascontiguousarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8), err_msg=name)


def silent(markets: list[dict[str, Any]], legs: list[dict[str, Any]] | None = None) -> Scenario:
    """60 one-minute ticks, a factor with no noise to speak of, a crash at minute 10."""
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
        "markets": markets,
    }
    if legs is not None:
        data["crash"] = {"start_minute": 10, "vol_multiplier": 1.0, "legs": legs}
    return scenario_from_dict(data, "silent.yaml")


DECLINE_RECOVERY = [
    {"kind": "decline", "minutes": 10, "return_frac": -0.2},
    {"kind": "pause", "minutes": 5},
    {"kind": "recovery", "minutes": 10, "return_frac": 0.1},
]


# ---------------------------------------------------------------- one market, unchanged ----


def test_a_scenario_without_markets_is_one_market_drawn_as_today():
    sc = load_scenario("oct_10_2025")
    assert sc.markets == () and sc.n_markets == 1 and sc.market_names == (SINGLE_MARKET_NAME,)
    paths = draw(sc, 7, n_envs=3)
    assert paths.index.shape == (sc.n_ticks, 3, 1)
    assert_same_bits(paths.market(0), market_path(sc, np.random.default_rng(7), 3))


@pytest.mark.parametrize("name", ["oct_10_2025", "volatile", "luna_2022"])
def test_a_one_entry_markets_list_equals_the_plain_scenario_bit_for_bit(name):
    # volatile has regimes, luna_2022 an oracle floor and four legs: every part of the draw.
    data = library_dict(name)
    one = scenario_from_dict({**data, "markets": [{"name": "BTC"}]})
    plain = load_scenario(name)
    assert one.n_markets == 1 and one.market_names == ("BTC",)
    require_single_market(one)  # one market: simulated as today
    for seed in (0, 2027):
        want = market_path(plain, np.random.default_rng(seed), 2)
        assert_same_bits(market_path(one, np.random.default_rng(seed), 2), want)
        assert_same_bits(draw(one, seed, 2).market(0), want)


def test_the_multi_file_is_oct_10_2025_with_markets_and_btc_is_its_path():
    multi, single = load_scenario("oct_10_2025_multi"), load_scenario("oct_10_2025")
    same = dataclasses.replace(
        multi, name=single.name, description=single.description, markets=(), collateral=()
    )
    assert same == single  # every section copied, nothing else changed
    paths = draw(multi, multi.seed, 2)
    assert paths.names[0] == "BTC"
    assert_same_bits(paths.market(0), market_path(single, np.random.default_rng(multi.seed), 2))


# ---------------------------------------------------------------- hand-worked ----


def test_beta_scales_the_scripted_crash_in_log_terms():
    # Legs -20%, pause, +10%: the factor troughs at 0.8 and ends at 0.88. beta 2 makes each
    # leg's log move twice: trough 0.8^2 = 0.64, end 0.88^2 = 0.7744; beta 0 stays at 1.
    sc = silent(
        [
            {"name": "F"},
            {"name": "B2", "initial": 50.0, "beta": 2.0},
            {"name": "Z", "initial": 7.0, "beta": 0.0},
        ],
        DECLINE_RECOVERY,
    )
    rel = draw(sc).index[:, 0, :] / np.array([100.0, 50.0, 7.0])
    assert rel[10:21, 0].min() == pytest.approx(0.8, rel=1e-9)
    np.testing.assert_allclose(
        rel[[0, 19, 24, -1]],
        [[1, 1, 1], [0.8, 0.64, 1], [0.8, 0.64, 1], [0.88, 0.7744, 1]],
        rtol=1e-9,
    )


def test_crash_beta_and_crash_returns_override_the_markets_share_of_the_crash():
    # crash_beta 3 (normal-time beta 1.5): trough 0.8^3 = 0.512, end 0.88^3 = 0.681472.
    # crash_returns [-0.6, 0, +0.5]: trough 0.4, end 0.6, whatever its beta.
    sc = silent(
        [
            {"name": "F"},
            {"name": "CB", "initial": 1.0, "beta": 1.5, "crash_beta": 3.0},
            {"name": "CR", "initial": 1.0, "beta": 4.0, "crash_returns": [-0.6, 0.0, 0.5]},
        ],
        DECLINE_RECOVERY,
    )
    idx = draw(sc).index[:, 0, :]
    np.testing.assert_allclose(idx[20, 1:], [0.512, 0.4], rtol=1e-9)
    np.testing.assert_allclose(idx[-1, 1:], [0.681472, 0.6], rtol=1e-9)
    cb, cr = sc.markets[1], sc.markets[2]
    assert cb.crash_scale == 3.0 and cr.crash_scale == 4.0
    assert [leg.return_frac for leg in cr.crash_legs(sc.crash)] == [-0.6, 0.0, 0.5]
    assert [leg.minutes for leg in cr.crash_legs(sc.crash)] == [10, 5, 10]
    # Running log moves: crash_beta 3 x (ln 0.8, ln 0.88); crash_returns (ln 0.4, 0).
    assert cb.crash_log_range(sc.crash) == pytest.approx((3 * math.log(0.8), 0.0))
    assert cr.crash_log_range(sc.crash) == pytest.approx((math.log(0.4), 0.0))
    with pytest.raises(ValueError, match="'CB' has no crash_returns"):
        cb.crash_legs(sc.crash)


def test_a_crash_beta_far_past_the_legs_keeps_prices_positive():
    # A -99% leg at crash_beta 4.4: ln(0.01) x 4.4 = -20.3, inside ln 1e10 = 23.0; as a
    # simple return (1 - 0.99)^4.4 - 1 = -1 + 1.6e-9. Scaled in log terms, the trough is
    # exactly 0.01^4.4 = 1.585e-9 of the start, never 0.
    sc = silent(
        [{"name": "F"}, {"name": "X", "initial": 1.0, "crash_beta": 4.4}],
        [{"kind": "decline", "minutes": 10, "return_frac": -0.99}],
    )
    idx = draw(sc).index[:, 0, 1]
    assert idx[-1] == pytest.approx(0.01**4.4, rel=1e-9) and idx.min() > 0.0


def test_an_idiosyncratic_crash_moves_its_market_alone():
    # LUNA-like, after the common crash (minutes 10-34): -50% over minutes 40-44, then -90%
    # in one step at minute 50: its index ends at 0.88 x 0.5 x 0.1 = 0.044; the factor 0.88.
    sc = silent(
        [
            {"name": "F"},
            {
                "name": "LUNA",
                "initial": 80.0,
                "idio_crash": {
                    "start_minute": 40,
                    "legs": [
                        {"kind": "decline", "minutes": 5, "return_frac": -0.5},
                        {"kind": "pause", "minutes": 5},
                        {"kind": "steps", "minutes": 1, "return_frac": -0.9},
                    ],
                },
            },
        ],
        DECLINE_RECOVERY,
    )
    rel = draw(sc).index[:, 0, :] / np.array([100.0, 80.0])
    np.testing.assert_allclose(rel[39], [0.88, 0.88], rtol=1e-9)
    np.testing.assert_allclose(rel[44], [0.88, 0.44], rtol=1e-9)
    np.testing.assert_allclose(rel[49], [0.88, 0.44], rtol=1e-9)
    np.testing.assert_allclose(rel[-1], [0.88, 0.044], rtol=1e-9)


def test_venue_oracle_and_funding_overrides_apply_to_their_market_only():
    sc = silent(
        [
            {"name": "F"},
            {
                "name": "THIN",
                "initial": 1.0,
                "venue": {"basis_noise_bps": 0.0, "wicks": [{"minute": 5, "return_frac": -0.999}]},
                "oracle": {"freezes": [{"start_minute": 3, "minutes": 4}]},
                "funding": {"interval_hours": 1.0, "interest_per_interval": 0.0003},
            },
            {"name": "PLAIN", "initial": 1.0},
        ],
        DECLINE_RECOVERY,
    )
    sc = dataclasses.replace(
        sc,
        precursors=dataclasses.replace(
            sc.precursors, strength=1.0, lead_minutes=10.0, depth_thinning=0.0
        ),
    )
    p = draw(sc)
    np.testing.assert_allclose(p.wick[5, 0], [1.0, 0.001, 1.0], rtol=1e-12)
    assert (p.wick[[4, 6], 0] == 1.0).all()
    assert p.frozen[:, 0, 1].nonzero()[0].tolist() == [3, 4, 5, 6]
    assert not p.frozen[:, 0, [0, 2]].any()
    assert (p.depth_mult == 1.0).all()  # no collapse, thinning or noise: every book normal
    # Minute 5, precursor 0.5 of a 40% APR. The scenario's funding (8 h, I = 0.0001, clamp
    # 0.0005): target 0.0001 + (0.4 / 1095 - 0.0001) x 0.5 = 2.32648e-4 > I, so the premium
    # is target + clamp = 7.32648e-4. THIN's (1 h, I = 0.0003): 0.0003 + (0.4 / 8760 -
    # 0.0003) x 0.5 = 1.72831e-4 < I: the premium is the target itself.
    np.testing.assert_allclose(
        p.basis[5, 0], np.log1p([7.32648e-4, 1.72831e-4, 7.32648e-4]), rtol=1e-5
    )


def test_common_columns_are_the_exchanges_and_layout_is_exchange_major():
    sc = load_scenario("oct_10_2025_multi")
    p = draw(sc, 3, n_envs=2)
    n, m = sc.n_ticks, sc.n_markets
    assert p.index.shape == (n, 2, m) and p.n_markets == m == 9
    # [tick, exchange, market] indexing over (exchange, tick, market) memory, as Market stores
    # one market's paths: an exchange's ticks in a row, a tick's markets side by side.
    assert p.index.strides == (m * 8, n * m * 8, 8)
    for col in ("vol_mult", "precursor"):
        values = getattr(p, col)
        assert (values == values[:, :, :1]).all(), col
    assert_same_bits(p.market(4), MarketPath(**{c: getattr(p, c)[:, :, 4] for c in COLUMNS}))
    assert p.market(4).index.flags.c_contiguous


# ---------------------------------------------------------------- reproducible ----


def test_draws_are_reproducible_by_seed_and_markets_do_not_disturb_each_other():
    sc = load_scenario("oct_10_2025_multi")
    a, b = draw(sc, 11, 2), draw(sc, 11, 2)
    for c in COLUMNS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert not np.array_equal(a.index[:, :, 1:], draw(sc, 12, 2).index[:, :, 1:])
    # Dropping the last market, or changing ETH, leaves every other market's bits alone.
    fewer = dataclasses.replace(sc, markets=sc.markets[:-1])
    np.testing.assert_array_equal(draw(fewer, 11, 2).index, a.index[:, :, :-1])
    eth = dataclasses.replace(sc.markets[1], beta=1.1, idio_vol_annual=0.5)
    changed = draw(dataclasses.replace(sc, markets=(sc.markets[0], eth, *sc.markets[2:])), 11, 2)
    np.testing.assert_array_equal(
        changed.index[:, :, [0, *range(2, 9)]], a.index[:, :, [0, *range(2, 9)]]
    )
    assert not np.array_equal(changed.index[:, :, 1], a.index[:, :, 1])


# ---------------------------------------------------------------- statistics ----


def factor_scenario(model: str, jumps_per_day: float, markets: list[dict[str, Any]]) -> Scenario:
    jumps = {"rate_per_day": jumps_per_day}
    return scenario_from_dict(
        {
            "name": "stats",
            "description": "long, crash-free",
            "horizon_minutes": 2880,
            "price": {"initial": 100.0, "model": model, "vol_annual": 0.6, "jumps": jumps},
            "depth": {"normal_usd_per_pct": 1e8},
            "markets": [{"name": "F"}, *markets],
        }
    )


def test_realised_betas_and_correlations_match_the_configured_ones():
    # GBM factor without jumps at 60% vol; 2,879 returns x 20 exchanges = 57,580 per market.
    # Configured: beta 1.5 with idiosyncratic 50% vol, beta 0.5 with 30%, so
    # corr(F, 1) = 0.9 / sqrt(0.81 + 0.25) = 0.8742, corr(F, 2) = 0.3 / sqrt(0.09 + 0.09) =
    # 0.7071, corr(1, 2) = 1.5 x 0.5 x 0.36 / (sqrt(1.06) sqrt(0.18)) = 0.6181.
    markets = [
        {"name": "A", "initial": 10.0, "beta": 1.5, "idio_vol_annual": 0.5, "jumps": None},
        {"name": "B", "initial": 1.0, "beta": 0.5, "idio_vol_annual": 0.3},
    ]
    sc = factor_scenario("gbm", 0.0, markets)
    r = np.diff(np.log(draw(sc, 2024, 20).index), axis=0).reshape(-1, 3)
    n = r.shape[0]
    f = r[:, 0] - r[:, 0].mean()
    for i, (beta, idio) in ((1, (1.5, 0.5)), (2, (0.5, 0.3))):
        y = r[:, i] - r[:, i].mean()
        b_hat = float(f @ y / (f @ f))
        resid = y - b_hat * f
        se = math.sqrt(float(resid @ resid) / (n - 2) / float(f @ f))
        assert abs(b_hat - beta) < 4.0 * se, (i, b_hat, se)
        assert resid.std() / f.std() == pytest.approx(idio / 0.6, rel=0.02)  # ~0.3% s.e.
    corr = np.corrcoef(r.T)
    fisher_se = 1.0 / math.sqrt(n - 3)
    for (i, j), want in (((0, 1), 0.87416), ((0, 2), 0.70711), ((1, 2), 0.61812)):
        assert abs(math.atanh(corr[i, j]) - math.atanh(want)) < 4.0 * fisher_se, (i, j, corr[i, j])


def test_beta_holds_under_a_fat_tailed_clustered_factor_with_jumps():
    # GARCH-t factor with jumps; the market adds its own, forty a day. OLS beta is
    # unbiased whatever the factor's law, as the market's own noise is independent of it.
    jumps = {"rate_per_day": 20.0, "mean_log": -0.002, "std_log": 0.004}
    market = {"name": "A", "initial": 1.0, "beta": 2.0, "idio_vol_annual": 0.4, "jumps": jumps}
    sc = factor_scenario("garch_t", 0.5, [market])
    r = np.diff(np.log(draw(sc, 99, 10).index), axis=0).reshape(-1, 2)
    f, y = r[:, 0] - r[:, 0].mean(), r[:, 1] - r[:, 1].mean()
    b_hat = float(f @ y / (f @ f))
    resid = y - b_hat * f
    se = math.sqrt(float(resid @ resid) / (r.shape[0] - 2) / float(f @ f))
    assert abs(b_hat - 2.0) < 4.0 * se, (b_hat, se)


# ---------------------------------------------------------------- finite or refused ----


def _in_range(cls: type, name: str) -> st.SearchStrategy[float]:
    """Any float the schema accepts for ``cls.name``, end points favoured by hypothesis."""
    m = {f.name: f for f in dataclasses.fields(cls)}[name].metadata
    return st.floats(m["ge"], m["le"], allow_nan=False, allow_infinity=False)


LEG_KINDS = ("decline", "recovery", "pause", "steps", "wick")


@st.composite
def with_markets(draw: st.DrawFn) -> dict[str, Any]:
    """A library scenario (LUNA's -99.9999%, Mango's +2,295%, regimes) with drawn markets."""
    data = library_dict(draw(st.sampled_from(["luna_2022", "oracle_manipulation", "volatile"])))
    # Their paths, not LUNA's settlement or Mango's attacker, which run in one market only
    # (refused with several markets).
    data.pop("events", None)
    data.pop("attacker", None)
    horizon = float(data.get("horizon_minutes", 1440.0))
    legs = data.get("crash", {}).get("legs", [])
    markets: list[dict[str, Any]] = [{"name": "M0"}]
    for i in range(draw(st.integers(1, 3))):
        m: dict[str, Any] = {
            "name": f"M{i + 1}",
            "initial": draw(_in_range(MarketSpec, "initial")),
            "beta": draw(_in_range(MarketSpec, "beta")),
            "idio_vol_annual": draw(_in_range(MarketSpec, "idio_vol_annual")),
        }
        if draw(st.booleans()):
            m["jumps"] = {n: draw(_in_range(JumpSpec, n)) for n in ("rate_per_day", "mean_log")}
        if legs and draw(st.booleans()):
            m["crash_beta"] = draw(_in_range(MarketSpec, "crash_beta"))
        elif legs and draw(st.booleans()):
            r = _in_range(MarketSpec, "crash_returns")
            m["crash_returns"] = [0.0 if leg["kind"] == "pause" else draw(r) for leg in legs]
        if draw(st.booleans()):
            kinds = draw(st.lists(st.sampled_from(LEG_KINDS), min_size=1, max_size=3))
            m["idio_crash"] = {
                "start_minute": draw(st.floats(0.0, horizon)),
                "legs": [
                    {
                        "kind": k,
                        "minutes": draw(st.floats(0.5, horizon / 4)),
                        "return_frac": draw(_in_range(LegSpec, "return_frac")),
                    }
                    for k in kinds
                ],
            }
        markets.append(m)
    return {**data, "markets": markets}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=with_markets(), seed=st.integers(0, 2**32 - 1))
def test_in_range_markets_draw_finite_paths_or_are_refused(data, seed):
    try:
        sc = scenario_from_dict(data, "<drawn>")
    except SchemaError as exc:  # a budget or a rule, named: never a crash
        assert str(exc).startswith("<drawn>: markets[")
        return
    p = draw(sc, seed, 2)  # NonFinitePathError here would fail the test
    for name in ("index", "wick", "depth_mult", "manipulation", "vol_mult"):
        values = getattr(p, name)
        assert np.isfinite(values).all() and (values > 0).all(), name
    assert np.isfinite(p.basis).all()


# ---------------------------------------------------------------- the library file ----


def test_oct_10_multi_reproduces_its_sourced_drawdowns_on_the_default_seed():
    sc = load_scenario("oct_10_2025_multi")
    assert sc.market_names[:3] == ("BTC", "ETH", "SOL") and sc.n_markets >= 8
    p = draw(sc, sc.seed)
    dd = [drawdown_stats(p.index[:, 0, m])[0] for m in range(sc.n_markets)]
    assert abs(dd[0] - sc.targets.drawdown_frac) <= 0.03  # as oct_10_2025's own test
    for m, spec in enumerate(sc.markets[1:], start=1):
        assert spec.target_drawdown_frac is not None, spec.name
        assert abs(dd[m] - spec.target_drawdown_frac) <= 0.05, (spec.name, dd[m])
    assert 0.15 <= dd[1] <= 0.24 and 0.24 <= dd[2] <= 0.32  # ETH, SOL: sourced ranges
    alts = dd[3:]
    assert min(alts) >= 0.40 and max(alts) <= 0.90  # alts -40% to -70%, one at -80% [S62]
    assert abs(np.mean(alts) - 0.63) <= 0.05  # the average Binance alt, -63% [S62]


def test_the_multi_file_marks_every_number_with_its_source():
    text = (SCENARIO_DIR / "oct_10_2025_multi.yaml").read_text()
    body = text.split("\nmarkets:\n", 1)[1]
    for line in body.splitlines():
        if line.lstrip().startswith("#"):  # a comment: the sources of the lines below it
            continue
        key, _, value = line.strip().lstrip("- ").partition(":")
        if any(ch.isdigit() for ch in value.split("#")[0]) and key not in ("name",):
            assert "#" in line and any(tag in line for tag in ("[S", "[E", "[B1]")), line


# ---------------------------------------------------------------- refusal ----


def test_simulating_a_multi_market_scenario_is_refused_naming_it():
    sc = load_scenario("oct_10_2025_multi")
    for call in (
        lambda: require_single_market(sc),
        lambda: market_path(sc, np.random.default_rng(0)),
    ):
        with pytest.raises(MultiMarketError) as info:
            call()
        assert isinstance(info.value, SchemaError)
        text = str(info.value)
        assert "'oct_10_2025_multi'" in text and "markets" in text
        assert "fundgym markets" in text
    names = single_market_names()
    assert "oct_10_2025" in names and "oct_10_2025_multi" not in names


def test_the_cli_lists_samples_and_plots_a_multi_market_scenarios_drawn_paths(capsys, tmp_path):
    assert main(["scenarios", "list"]) == 0
    listed = capsys.readouterr().out
    line = next(x for x in listed.splitlines() if x.startswith("oct_10_2025_multi "))
    assert "[9 markets: BTC, ETH, SOL," in line
    # sample: the drawn (exogenous) paths, every market and collateral asset, as draw_markets
    out = tmp_path / "path.csv"
    assert main(["scenarios", "sample", "oct_10_2025_multi", "--seed", "3", "--out", str(out)]) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    sc = load_scenario("oct_10_2025_multi")
    paths = draw_markets(sc, np.random.default_rng(3), 1)
    assert len(rows) == sc.n_ticks
    assert list(rows[0])[:4] == ["step", "time_min", "BTC_index", "BTC_depth_mult"]
    alt = paths.names.index("ALT_A")
    usde = paths.collateral.names.index("USDe")
    for i in (0, 600, sc.n_ticks - 1):
        assert float(rows[i]["ALT_A_index"]) == pytest.approx(paths.index[i, 0, alt], rel=1e-9)
        assert float(rows[i]["USDe_book"]) == pytest.approx(
            paths.collateral.book[i, 0, usde], rel=1e-9
        )
    # plot: one figure of the markets, their depth and the collateral's prices
    png = tmp_path / "multi.png"
    assert main(["scenarios", "plot", "oct_10_2025_multi", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_non_finite_market_path_names_its_market():
    sc = load_scenario("oct_10_2025_multi")
    path = draw(sc).market(3)
    path.index[7, 0] = np.inf
    with pytest.raises(NonFinitePathError, match=r"market 'ALT_A'.*index = inf.*tick 7"):
        check_path(sc, path, "ALT_A")


# ---------------------------------------------------------------- schema errors ----


def multi(**changes: Any) -> dict[str, Any]:
    data = library_dict("oct_10_2025_multi")
    for where, value in changes.items():
        i, field = where.split("__")
        data["markets"][int(i[1:])][field] = value
    return data


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (multi(m0__beta=1.2), "markets[0].beta", "markets[0] is the factor market"),
        (multi(m0__initial=100.0), "markets[0].initial", "leave it out"),
        (multi(m1__initial=None), "markets[1].initial", "required from markets[1] on"),
        (multi(m2__name="ETH"), "markets[2].name", "a name no other market has"),
        (multi(m1__name="E TH"), "markets[1].name", "1-32 of A-Z"),
        (multi(m1__beta=11.0), "markets[1].beta", "[0.0, 10.0]"),
        (multi(m1__beta="1.2"), "markets[1].beta", "not a string"),
        (multi(m1__idio_vol_annual=-0.1), "markets[1].idio_vol_annual", "[0.0, 5.0]"),
        (multi(m1__depth_scale=0.0), "markets[1].depth_scale", "[1e-06, 1000.0]"),
        (
            multi(m1__crash_beta=2.0, m1__crash_returns=[-0.1, -0.2, 0.1]),
            "markets[1].crash_returns",
            "give crash_beta or crash_returns",
        ),
        (multi(m7__crash_returns=[-0.1, -0.5]), "markets[7].crash_returns", "one return per leg"),
        (
            multi(m7__crash_returns=[-0.1, -1.0, 0.3]),
            "markets[7].crash_returns[1]",
            "[-0.9999, 1000.0]",
        ),
        (multi(m3__crash_beta=21.0), "markets[3].crash_beta", "[0.0, 20.0]"),
        (multi(m3__target_drawdown_frac=1.5), "markets[3].target_drawdown_frac", "[0.0, 1.0]"),
        (
            multi(m3__jumps={"rate_per_day": -1.0}),
            "markets[3].jumps.rate_per_day",
            "[0.0, 1440.0]",
        ),
        (
            multi(m3__venue={"wicks": [{"minute": 5, "return_frac": -1.0}]}),
            "markets[3].venue.wicks[0].return_frac",
            "[-0.9999",
        ),
        (
            multi(m3__oracle={"delay_minutes": -1}),
            "markets[3].oracle.delay_minutes",
            "[0.0, 100000.0]",
        ),
        (multi(m3__funding={"color": 1}), "markets[3].funding.color", "unknown key"),
        (
            multi(
                m3__idio_crash={
                    "start_minute": 2000,
                    "legs": [{"kind": "decline", "minutes": 60, "return_frac": -0.5}],
                }
            ),
            "markets[3].idio_crash.start_minute",
            "after horizon_minutes = 2040",
        ),
    ],
)
def test_bad_market_fields_name_the_field_value_and_rule(data, field, fragment):
    assert_field_error(data, field, fragment)


def test_a_pause_leg_takes_no_return():
    sc = load_scenario("oct_10_2025_multi")
    data = library_dict("oct_10_2025_multi")
    data["crash"]["legs"].insert(1, {"kind": "pause", "minutes": 10})
    data["horizon_minutes"] = sc.horizon_minutes + 10
    data["markets"][7]["crash_returns"] = [-0.1, -0.2, -0.78, 0.3]
    with pytest.raises(
        SchemaError, match=r"markets\[7\]\.crash_returns\[1\] = -0.2: 0: crash.legs\[1\] is a pause"
    ):
        scenario_from_dict(data, "multi.yaml")


def test_venue_events_and_the_attacker_load_across_markets_and_name_their_market():
    # LUNA's settlement and Mango's attacker in scenarios with markets: the multi-market
    # simulator runs both (since 2026-12-02; before, the schema refused them, and earlier still
    # they were silently ignored). An attacker's market must be one of the scenario's.
    data = library_dict("luna_2022")
    data["markets"] = [{"name": "LUNA"}, {"name": "BTC", "initial": 30000.0}]
    assert [e.kind for e in scenario_from_dict(data, "luna_multi.yaml").events] == [
        "leverage_cap",
        "reduce_only",
        "settlement",
    ]
    data = library_dict("oracle_manipulation")
    data["markets"] = [{"name": "MNGO"}, {"name": "BTC", "initial": 30000.0}]
    assert scenario_from_dict(data, "mango_multi.yaml").attacker.market is None
    data["attacker"]["market"] = "SOL"
    with pytest.raises(
        SchemaError,
        match=r"mango_multi\.yaml: attacker\.market = 'SOL': one of the scenario's markets: "
        r"MNGO, BTC",
    ):
        scenario_from_dict(data, "mango_multi.yaml")
    # One market with a one-entry list is still the one-market simulator's: events stay.
    data = library_dict("luna_2022")
    data["markets"] = [{"name": "LUNA"}]
    assert len(scenario_from_dict(data, "luna_one.yaml").events) == 3


def test_an_events_market_is_one_of_the_scenarios_and_only_where_its_kind_takes_one():
    data = library_dict("alt_contagion")
    data["events"] = [{"kind": "leverage_cap", "start_minute": 0, "max_leverage": 8.0,
                       "market": "ALT"}]  # fmt: skip
    assert scenario_from_dict(data, "alt.yaml").events[0].market == "ALT"
    data["events"][0]["market"] = "LUNA"
    with pytest.raises(
        SchemaError,
        match=r"alt\.yaml: events\[0\]\.market = 'LUNA': one of the scenario's "
        r"markets: BTC, ETH, ALT",
    ):
        scenario_from_dict(data, "alt.yaml")
    data["events"] = [{"kind": "outage", "start_minute": 0, "minutes": 5, "engine_runs": True,
                       "market": "ALT"}]  # fmt: skip
    with pytest.raises(
        SchemaError, match=r"events\[0\]\.market = 'ALT': not a field of a 'outage' event"
    ):
        scenario_from_dict(data, "alt.yaml")


def test_crash_overrides_need_a_crash():
    data = library_dict("calm")
    data["markets"] = [{"name": "F"}, {"name": "A", "initial": 1.0, "crash_beta": 3.0}]
    with pytest.raises(
        SchemaError, match=r"markets\[1\]\.crash_beta = 3.0: needs the scenario's crash"
    ):
        scenario_from_dict(data, "calm_multi.yaml")


def test_each_market_keeps_the_single_markets_budgets():
    # LUNA's legs fall ln(1e-6) = -13.8 in all: crash_beta 2 would take a market to -27.6,
    # past ln 1e10 = 23.0.
    data = library_dict("luna_2022")
    data["markets"] = [{"name": "LUNA"}, {"name": "X", "initial": 1.0, "crash_beta": 2.0}]
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "luna_multi.yaml")
    assert info.value.path == "markets[1].crash_beta" and "at most ln(1e10) = 23.0" in str(
        info.value
    )
    # One tick's std: hourly ticks at 500% idiosyncratic vol, 5 x sqrt(60 / 525,600) = 0.053.
    data = library_dict("calm")
    data["tick_minutes"] = 60
    data["markets"] = [{"name": "F"}, {"name": "X", "initial": 1.0, "idio_vol_annual": 5.0}]
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "calm_hourly.yaml")
    assert info.value.path == "markets[1].idio_vol_annual" and "at most 0.05" in str(info.value)


def test_market_spec_rules_outside_a_file_name_the_field():
    with pytest.raises(ValueError, match=r"name = 'a b'"):
        MarketSpec(name="a b")


def test_the_markets_doc_lists_every_market_field():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "markets.md").read_text()
    for f in dataclasses.fields(MarketSpec):
        assert f"| `{f.name}` |" in doc, f"docs/markets.md lacks markets[].{f.name}"
