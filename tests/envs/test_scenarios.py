"""Scenario library: schema validation, calibration to the documented crashes, the sampler."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.envs.market.market import sample_market
from fundgym.envs.market.price import drawdown_stats, runup_stats
from fundgym.envs.market.sampler import sample_training_scenario
from fundgym.envs.scenarios import SCENARIO_DIR, library, load_scenario, market_path
from fundgym.envs.schema import SchemaError

REQUIRED = {
    "calm",
    "volatile",
    "black_thursday_2020",
    "may_19_2021",
    "luna_2022",
    "ftx_2022",
    "oct_10_2025",
    "venue_flash_wick",
    "oracle_manipulation",
}
CALIBRATED = sorted(n for n in REQUIRED if n not in ("calm", "volatile"))


def test_library_ships_every_required_scenario():
    assert set(library()) >= REQUIRED
    for name in library():
        sc = load_scenario(name)
        assert sc.name == name
        assert sc.description
        text = (SCENARIO_DIR / f"{name}.yaml").read_text()
        assert text.lstrip().startswith("#"), f"{name} must state its sources in comments"


def test_named_crashes_are_held_out_of_training():
    for name in CALIBRATED:
        assert not load_scenario(name).training
    assert load_scenario("calm").training and load_scenario("volatile").training


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibrated_crash_reproduces_its_facts(name):
    """Default seed: drawdown within 3 pp, time to trough within 25%, depth collapse reached."""
    sc = load_scenario(name)
    tg = sc.targets
    cols = sample_market(sc)
    price = cols[f"{tg.price}_price"]
    dd, onset, trough = drawdown_stats(price)
    if tg.drawdown_frac is not None:
        assert abs(dd - tg.drawdown_frac) <= 0.03, dd
    if tg.time_to_trough_minutes is not None:
        ttt = (trough - onset) * sc.tick_minutes
        assert abs(ttt - tg.time_to_trough_minutes) <= 0.25 * tg.time_to_trough_minutes, ttt
    if tg.runup_frac is not None:  # a pump: 5% of the run-up, which is in the thousands of %
        up, start, peak = runup_stats(price)
        assert abs(up - tg.runup_frac) <= 0.05 * tg.runup_frac, up
        if tg.time_to_peak_minutes is not None:
            ttp = (peak - start) * sc.tick_minutes
            assert abs(ttp - tg.time_to_peak_minutes) <= 0.25 * tg.time_to_peak_minutes, ttp
    if tg.depth_floor_mult is not None:
        assert cols["depth_mult"].min() <= tg.depth_floor_mult * 1.05
    if tg.mark_max_drawdown_frac is not None:
        assert drawdown_stats(cols["mark_price"])[0] <= tg.mark_max_drawdown_frac


def test_luna_oracle_sticks_at_its_floor_while_the_market_falls_through():
    cols = sample_market(load_scenario("luna_2022"))
    assert cols["index_price"].min() < 0.01
    assert cols["oracle_price"].min() == pytest.approx(0.107)


def test_black_thursday_perp_trades_below_spot_and_funding_hits_the_cap():
    cols = sample_market(load_scenario("black_thursday_2020"))
    assert (cols["last_price"] / cols["index_price"]).min() < 0.92  # ~10% discount at the low
    assert cols["funding_rate"].min() == pytest.approx(-0.00375)


def test_oct_10_funding_runs_hot_before_the_crash():
    sc = load_scenario("oct_10_2025")
    cols = sample_market(sc)
    before = cols["time_min"] < sc.crash.start_minute
    apr = cols["funding_rate"][before].max() * 365 * 3
    assert 0.25 < apr < 0.45  # strength 0.8 of a 40% APR precursor


def test_sampling_is_reproducible_and_seeded():
    sc = load_scenario("may_19_2021")
    a, b = sample_market(sc, 7), sample_market(sc, 7)
    np.testing.assert_array_equal(a["mark_price"], b["mark_price"])
    assert not np.array_equal(a["mark_price"], sample_market(sc, 8)["mark_price"])


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base_dict() -> dict:
    return yaml.safe_load((SCENARIO_DIR / "oct_10_2025.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d.update(colour="red"), "colour", "unknown key"),
        (lambda d: d["price"].update(vol_annual=-0.2), "price.vol_annual", "(0.0, 20.0]"),
        (lambda d: d["price"].update(vol_annual="high"), "price.vol_annual", "a number"),
        (lambda d: d["crash"]["legs"][1].update(kind="melt"), "crash.legs[1].kind", "one of"),
        (lambda d: d["depth"]["collapses"][0].update(floor_mult=1.5), "floor_mult", "0.0, 1.0]"),
        (lambda d: d["price"]["garch"].update(alpha=0.5, beta=0.6), "price.garch", "alpha + beta"),
        (lambda d: d.pop("price"), "price", "required field is missing"),
        (lambda d: d.update(horizon_minutes=60), "<top>", "after horizon_minutes"),
        (lambda d: d["oracle"].update(source="twap"), "oracle.source", "['mark', 'index']"),
    ],
)
def test_bad_fields_name_file_field_value_and_rule(tmp_path, mutate, field, fragment):
    data = base_dict()
    data.setdefault("oracle", {})
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(SchemaError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg and field in msg and fragment in msg


def test_unknown_name_lists_the_library():
    with pytest.raises(FileNotFoundError, match="not one of"):
        load_scenario("black_friday_2030")


def test_scenario_given_by_path_equals_by_name():
    assert load_scenario(SCENARIO_DIR / "calm.yaml") == load_scenario("calm")


def test_training_sampler_draws_valid_varied_scenarios():
    rng = np.random.default_rng(0)
    draws = [sample_training_scenario(rng) for _ in range(40)]
    crashes = [d for d in draws if d.crash is not None]
    assert 15 <= len(crashes) <= 38  # crash_prob 0.7
    starts = {round(d.crash.start_minute) for d in crashes}
    assert len(starts) == len(crashes)  # random timing
    assert any(d.precursors.strength == 0 for d in crashes)  # some arrive unannounced
    assert any(d.precursors.strength > 0.5 for d in crashes)
    assert all(d.training for d in draws)
    for d in draws[:5]:
        p = market_path(d, np.random.default_rng(1), 2)
        assert np.isfinite(p.index).all() and (p.index > 0).all()


def test_training_sampler_draws_thin_markets_and_unannounced_pumps():
    from fundgym.envs.market.sampler import MAJOR_DEPTH_USD_PER_PCT, THIN_DEPTH_USD_PER_PCT

    rng = np.random.default_rng(5)
    draws = [sample_training_scenario(rng) for _ in range(600)]
    thin = [d for d in draws if d.depth.normal_usd_per_pct <= THIN_DEPTH_USD_PER_PCT[1]]
    major = [d for d in draws if d.depth.normal_usd_per_pct >= MAJOR_DEPTH_USD_PER_PCT[0]]
    assert len(thin) + len(major) == len(draws)
    assert 110 <= len(thin) <= 190  # thin_prob 0.25 of 600: 150 +- 3.3 sigma

    def pump(d):
        return d.crash is not None and d.crash.legs[0].kind == "recovery"

    thin_pumps = [d for d in thin if pump(d)]
    major_pumps = [d for d in major if pump(d)]
    # Half of a thin market's crashes (crash_prob 0.7) are pumps; a tenth of a major's.
    assert 0.2 <= len(thin_pumps) / len(thin) <= 0.5
    assert 0.02 <= len(major_pumps) / len(major) <= 0.13
    for d in thin_pumps:
        up, sag, release = d.crash.legs
        assert 1.0 <= up.return_frac <= 25.0 and 5.0 <= up.minutes <= 30.0
        assert -0.1 <= sag.return_frac <= 0.0 and -1.0 < release.return_frac <= 0.0
        end = (1 + up.return_frac) * (1 + sag.return_frac) * (1 + release.return_frac)
        assert 0.8 - 1e-9 <= end <= max(1.5, (1 + up.return_frac) * (1 + sag.return_frac))
        assert d.precursors.strength == 0.0  # a manipulation gives no warning
        assert d.oracle.source == "index"  # and the oracle follows the pumped spot venues
        assert d.crash.start_minute >= 30.0
    assert all(0.1 <= d.crash.legs[0].return_frac <= 0.5 for d in major_pumps)
    assert min(d.crash.start_minute for d in thin_pumps) < 360.0  # pumps come early too
    others = [d for d in draws if d.crash is not None and not pump(d)]
    assert min(d.crash.start_minute for d in others) >= 360.0


def test_training_sampler_rejects_bad_probabilities():
    with pytest.raises(ValueError, match=r"thin_prob must lie in \[0, 1\], got 1.5"):
        sample_training_scenario(np.random.default_rng(0), thin_prob=1.5)
    with pytest.raises(ValueError, match=r"crash_prob must lie in \[0, 1\], got -0.1"):
        sample_training_scenario(np.random.default_rng(0), crash_prob=-0.1)


@pytest.mark.parametrize("horizon", [30.0, 60.0, 180.0])
def test_training_sampler_fits_crashes_into_short_episodes(horizon):
    # A crash drawn for a day (up to 12 hours of legs) is compressed into a short episode
    # rather than failing validation; before the fix a 60-minute horizon raised SchemaError.
    rng = np.random.default_rng(3)
    draws = [sample_training_scenario(rng, horizon_minutes=horizon) for _ in range(60)]
    crashes = [d for d in draws if d.crash is not None]
    assert len(crashes) > 20
    for d in crashes:
        legs = sum(leg.minutes for leg in d.crash.legs)
        assert d.crash.start_minute + legs <= horizon


def test_week_long_path_is_fast_enough_to_sample():
    # Not a timing assertion (see docs/benchmarks.md): checks the shape of a one-week path.
    sc = dataclasses.replace(load_scenario("calm"), horizon_minutes=7 * 1440.0)
    cols = sample_market(sc)
    assert cols["mark_price"].shape == (7 * 1440,)


def test_schema_doc_lists_every_field():
    from fundgym.envs.scenarios import Scenario
    from fundgym.envs.schema import describe

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    for path, *_ in describe(Scenario):
        assert f"`{path}`" in doc, f"docs/scenarios.md lacks {path}: regenerate it"


def test_gbm_model_has_gaussian_tails():
    sc = dataclasses.replace(
        load_scenario("calm"),
        horizon_minutes=20_000.0,
        price=dataclasses.replace(
            load_scenario("calm").price,
            model="gbm",
            jumps=dataclasses.replace(load_scenario("calm").price.jumps, rate_per_day=0.0),
        ),
        depth=dataclasses.replace(load_scenario("calm").depth, noise_frac=0.0),
    )
    r = np.diff(np.log(market_path(sc, np.random.default_rng(0), 8).index), axis=0)
    z = (r - r.mean()) / r.std()
    assert abs((z**4).mean() - 3.0) < 0.3  # Gaussian kurtosis
