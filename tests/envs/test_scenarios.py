"""Scenario library: schema validation, calibration to the documented crashes, the sampler."""

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.envs.market.market import sample_market
from fundgym.envs.market.price import drawdown_stats, runup_stats
from fundgym.envs.market.sampler import sample_training_scenario
from fundgym.envs.scenarios import (
    SCENARIO_DIR,
    library,
    load_scenario,
    market_path,
    scenario_from_dict,
)
from fundgym.envs.schema import SchemaError, load_yaml

ZERO = timedelta(0)

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
        (lambda d: d["price"].update(vol_annual=-0.2), "price.vol_annual", "(0.0, 5.0]"),
        (lambda d: d["price"].update(vol_annual="high"), "price.vol_annual", "a number"),
        (lambda d: d["crash"]["legs"][1].update(kind="melt"), "crash.legs[1].kind", "one of"),
        (
            lambda d: d["depth"]["collapses"][0].update(floor_mult=1.5),
            "floor_mult",
            "[0.0001, 1.0]",
        ),
        (
            lambda d: d["price"]["garch"].update(alpha=0.2, beta=0.8),
            "price.garch.beta",
            "alpha + beta",
        ),
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
    rng = np.random.default_rng(5)
    draws = [sample_training_scenario(rng) for _ in range(600)]
    thin = [d for d in draws if d.depth.oi_to_depth >= 1_000.0]
    major = [d for d in draws if d.depth.oi_to_depth <= 300.0]
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


def test_training_sampler_sets_the_book_by_open_interest_to_depth():
    # Majors at OI / depth(1%) of 100-300, thin markets at 1,000-10,000, each log-uniform: a
    # quarter of the log range holds about a quarter of the draws (400 majors: 100 +- 3.5
    # sigma; 400 thin: 100 +- 3.5 sigma). The real venue's depth stays filled, the same
    # quantile of its own range as the ratio.
    rng = np.random.default_rng(7)
    major = [sample_training_scenario(rng, thin_prob=0.0).depth for _ in range(400)]
    thin = [sample_training_scenario(rng, thin_prob=1.0).depth for _ in range(400)]
    for books, (low, high), (d_low, d_high) in (
        (major, (100.0, 300.0), (3e7, 3e8)),
        (thin, (1e3, 1e4), (2e4, 2e6)),
    ):
        q = np.array([np.log(b.oi_to_depth / low) / np.log(high / low) for b in books])
        assert q.min() >= 0.0 and q.max() <= 1.0
        assert 70 <= (q < 0.25).sum() <= 130 and 70 <= (q >= 0.75).sum() <= 130
        q_real = [np.log(b.normal_usd_per_pct / d_low) / np.log(d_high / d_low) for b in books]
        np.testing.assert_allclose(q_real, q, atol=1e-9)


def test_training_sampler_draws_are_reproducible_by_seed():
    # The same seed gives the same scenarios, book included; another seed other ones.
    def draws(seed):
        rng = np.random.default_rng(seed)
        return [sample_training_scenario(rng, thin_prob=0.5) for _ in range(20)]

    first, again, other = draws(11), draws(11), draws(12)
    assert first == again
    assert [d.depth.oi_to_depth for d in first] == [d.depth.oi_to_depth for d in again]
    assert len({d.depth.oi_to_depth for d in first} & {d.depth.oi_to_depth for d in other}) == 0


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


def test_training_sampler_stays_inside_the_budget_up_to_90_days():
    # Its worst corner (80% vol, regimes up to x3, 2 jumps a day x3 of mean -1.5%, std 1%) over
    # 90 days, hand-worked: V = 0.64 x 9 x 90 / 365 = 1.42 (+ <= 0.07 in the crash legs),
    # N = 540 jumps; drift 0.74 + 8.1, sd sqrt(1.49 + 540 x 3.25e-4) = 1.29: 21.7 < 23.0.
    from fundgym.envs.market.sampler import MAX_TRAINING_HORIZON_MINUTES

    rng = np.random.default_rng(4)
    for _ in range(50):
        sc = sample_training_scenario(rng, horizon_minutes=MAX_TRAINING_HORIZON_MINUTES)
        assert sc.base_process_bound().log_move < 21.8
    with pytest.raises(SchemaError, match=r"<training sampler>: horizon_minutes = 200000.0: "):
        sample_training_scenario(rng, horizon_minutes=200_000.0)


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


# ---- strict types: every coercion path of the schema ----------------------------------------


def _with(key_path: str, raw: str) -> dict:
    """calm.yaml with ``key_path`` set to the YAML text ``raw`` (read as a file would be)."""
    data = load_yaml((SCENARIO_DIR / "calm.yaml").read_text())
    *parents, last = key_path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = load_yaml(raw)
    return data


NUMBER = r"a number \(int\)"
FLOAT = r"a number \(float\)"

# fmt: off
REFUSED = [
    # field,                 YAML text,               message after "t.yaml: <field> = "
    ("seed",                 "true",                  rf"True: {NUMBER}, not true/false"),
    ("seed",                 "on",                    rf"'on': {NUMBER}, not a string"),
    ("seed",                 '"7"',                   rf"'7': {NUMBER}, not a string"),
    ("seed",                 "7.5",                   r"7.5: an integer"),
    ("seed",                 "null",                  rf"None: {NUMBER}"),
    ("seed",                 ".inf",                  r"inf: a finite number"),
    ("seed",                 "-1",                    r"-1: a number in \[0, "),
    ("seed",                 "9223372036854775808",   r"9223372036854775808: a number in \[0, "),
    ("seed",                 "1:30",                  rf"'1:30': {NUMBER}, not a string"),
    ("seed",                 "[7]",                   rf"\[7\]: {NUMBER}"),
    ("training",             "yes",                   r"'yes': true or false"),
    ("training",             "1",                     r"1: true or false"),
    ("training",             '"true"',                r"'true': true or false"),
    ("training",             "null",                  r"None: true or false"),
    ("price.vol_annual",     '"0.5"',                 rf"'0.5': {FLOAT}, not a string"),
    ("price.vol_annual",     '"2.2e-1"',              rf"'2.2e-1': {FLOAT}, not a string"),
    ("price.vol_annual",     "false",                 rf"False: {FLOAT}, not true/false"),
    ("price.vol_annual",     ".nan",                  r"nan: a finite number"),
    ("price.vol_annual",     "null",                  rf"None: {FLOAT}"),
    ("price.vol_annual",     "{a: 1}",                rf"{{'a': 1}}: {FLOAT}"),
    ("price.initial",        "1" + "0" * 400,         r"1000.*: a number in \[1e-09, "),
    ("price.model",          "1",                     r"1: one of \['garch_t', 'gbm'\]"),
    ("price.garch",          "3",                     r"3: a mapping of GarchSpec fields"),
    ("name",                 "2020",                  r"2020: a string"),
    ("name",                 "null",                  r"None: a string"),
    ("start_utc",            "1760097600",            r"1760097600: a string"),
    ("depth.collapses",      "{}",                    r"{}: a list"),
]
ACCEPTED = [
    # field,                 YAML text,               value built
    ("seed",                 "7.0",                   7),          # integral float: an integer
    ("seed",                 "1e3",                   1000),       # YAML reads 1e3 as a float
    ("seed",                 "010",                   10),         # YAML 1.2: decimal, not octal
    ("seed",                 "0x10",                  16),
    ("seed",                 "1_000",                 1000),
    ("seed",                 "9223372036854775807",   2**63 - 1),  # exact, not via a float
    ("price.vol_annual",     "1",                     1.0),        # an int for a float
    ("price.vol_annual",     "2.2e-1",                0.22),
    ("oracle.floor_price",   "null",                  None),       # optional: null allowed
    ("training",             "False",                 False),
    ("start_utc",            "2025-10-10T12:00:00Z",  "2025-10-10T12:00:00Z"),  # not a date
]
# fmt: on


@pytest.mark.parametrize(("field", "raw", "message"), REFUSED)
def test_schema_refuses_every_coercion(field, raw, message):
    with pytest.raises(SchemaError, match=rf"^t\.yaml: {re.escape(field)} = {message}"):
        scenario_from_dict(_with(field, raw), "t.yaml")


@pytest.mark.parametrize(("field", "raw", "value"), ACCEPTED)
def test_schema_accepts_numbers_without_changing_them(field, raw, value):
    sc = scenario_from_dict(_with(field, raw), "t.yaml")
    got = sc
    for part in field.split("."):
        got = getattr(got, part)
    assert got == value and type(got) is type(value)


def test_a_number_as_a_key_is_an_unknown_key():
    data = _with("seed", "3")
    data[1] = "x"
    with pytest.raises(SchemaError, match=r"^t\.yaml: 1 = 'x': unknown key; allowed: \["):
        scenario_from_dict(data, "t.yaml")


# ---- cross-field rules name the field to change ---------------------------------------------


def _crash(*returns: float, kind: str = "decline") -> dict:
    legs = [{"kind": kind, "minutes": 10, "return_frac": r} for r in returns]
    return {"start_minute": 10, "legs": legs}


# fmt: off
RULES = [
    # mutation of calm.yaml,                                    field,                  fragment
    (lambda d: d["price"].update(garch={"alpha": 0.3, "beta": 0.7}),
     "price.garch.beta", "alpha + beta must be <= 0.99, got 1"),
    (lambda d: d.update(crash=_crash(-0.999, -0.999, -0.999, -0.999)),  # 4 x ln(0.001) = -27.6
     "crash.legs", "running log move reaches -27.6, at most ln(1e10) = 23.0"),
    (lambda d: d.update(crash=_crash(999, 999, 999, 999, kind="recovery")),  # 4 x 6.91 = 27.6
     "crash.legs", "running log move reaches 27.6"),
    (lambda d: d["venue"].update(wicks=[{"minute": m, "return_frac": -0.999} for m in (1, 2, 3)]),
     "venue.wicks", "|ln(1 + return_frac)| is 20.7, at most ln(1e6) = 13.8"),
    (lambda d: d["oracle"].update(manipulations=[
        {"start_minute": 0, "minutes": 5, "return_frac": 999}] * 3),
     "oracle.manipulations", "is 20.7, at most ln(1e6) = 13.8"),
    (lambda d: d["depth"].update(collapses=[
        {"start_minute": 0, "minutes_to_floor": 1, "floor_mult": 1e-3}] * 3),
     "depth.collapses", "multiply to 1e-09 (as they do where collapses overlap); at least 1e-06"),
    (lambda d: d.update(tick_minutes=0.001),  # 1440 / 0.001 = 1.44e6 ticks
     "tick_minutes", "= 1.44e+06 ticks; at most 2**20 = 1048576"),
    (lambda d: d["oracle"].update(delay_minutes=1e5) or d.update(tick_minutes=0.05),
     "oracle.delay_minutes", "at most 2**20 = 1048576 ticks of 0.05 minutes"),
    (lambda d: d.update(tick_minutes=1440) or d["price"].update(vol_annual=1.0),
     "price.vol_annual", "one tick's log-return std is 0.0523; at most 0.05"),  # 1 x sqrt(1/365)
    (lambda d: d.update(horizon_minutes=600_000),
     "horizon_minutes", "a number in (0.0, 525600.0]"),
]
# fmt: on


@pytest.mark.parametrize(("mutate", "field", "fragment"), RULES)
def test_cross_field_rules_name_the_field_to_change(mutate, field, fragment):
    data = _with("seed", "1")
    data.setdefault("venue", {})
    data.setdefault("oracle", {})
    mutate(data)
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "t.yaml")
    msg = str(info.value)
    assert msg.startswith(f"t.yaml: {field} = ") and fragment in msg, msg


# ---- dates of the historical scenarios ------------------------------------------------------


def test_every_historical_scenario_dates_its_minute_zero():
    for name in CALIBRATED:
        sc = load_scenario(name)
        assert sc.start_utc is not None and sc.start_utc.endswith("Z"), name
        assert sc.start_datetime.tzinfo is not None and sc.start_datetime.utcoffset() == ZERO
    for name in ("calm", "volatile"):
        assert load_scenario(name).start_utc is None
        assert load_scenario(name).start_datetime is None


def _at(name: str, minute: float) -> str:
    when = load_scenario(name).start_datetime + timedelta(minutes=minute)
    return when.strftime("%Y-%m-%d %H:%M")


def test_dates_put_each_event_at_its_sourced_time():
    # Hand-worked from each file's legs and the UTC times of shared/reference/crashes.md.
    bt = load_scenario("black_thursday_2020")
    assert _at("black_thursday_2020", bt.crash.start_minute) == "2020-03-12 10:00"  # leg 1
    assert _at("black_thursday_2020", bt.oracle.freezes[0].start_minute) == "2020-03-13 02:16"
    may = load_scenario("may_19_2021")
    cascade = may.crash.start_minute + may.crash.legs[0].minutes
    assert _at("may_19_2021", cascade) == "2021-05-19 12:40"
    oct10 = load_scenario("oct_10_2025")
    cascade = oct10.crash.start_minute + oct10.crash.legs[0].minutes
    assert "2025-10-10 20:50" <= _at("oct_10_2025", cascade) < "2025-10-10 21:30"
    assert _at("oct_10_2025", cascade + 12) <= "2025-10-10 21:15"  # ends by the peak minute
    mango = load_scenario("oracle_manipulation")
    assert _at("oracle_manipulation", mango.crash.start_minute) == "2022-10-11 22:26"
    wick = load_scenario("venue_flash_wick")
    assert _at("venue_flash_wick", wick.venue.wicks[0].minute) == "2021-10-21 11:34"
    luna = load_scenario("luna_2022")
    ends = np.cumsum([luna.crash.start_minute] + [leg.minutes for leg in luna.crash.legs])
    assert [_at("luna_2022", m)[:10] for m in ends[1:]] == [
        "2022-05-10", "2022-05-11", "2022-05-12", "2022-05-13",
    ]  # fmt: skip
    ftx = load_scenario("ftx_2022")
    assert _at("ftx_2022", 0)[:10] == "2022-11-06"
    assert _at("ftx_2022", ftx.horizon_minutes - 1)[:10] == "2022-11-09"


# fmt: off
BAD_DATES = [
    ("2025-10-10",                "no time zone: end it with Z"),
    ("2025-10-10T12:00:00",       "no time zone: end it with Z"),
    ("2025-10-10T14:00:00+02:00", "offset 2:00:00 is not UTC"),
    ("10/10/2025 12:00",          "not an ISO 8601 timestamp"),
    ("yesterday",                 "not an ISO 8601 timestamp"),
]
# fmt: on


@pytest.mark.parametrize(("text", "fragment"), BAD_DATES)
def test_start_utc_must_be_an_iso_utc_timestamp(text, fragment):
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(_with("start_utc", f'"{text}"'), "t.yaml")
    assert str(info.value).startswith(f"t.yaml: start_utc = {text!r}: {fragment}")


def test_start_utc_accepts_utc_written_as_an_offset():
    sc = scenario_from_dict(_with("start_utc", '"2025-10-10T12:00:00+00:00"'), "t.yaml")
    assert sc.start_datetime == datetime(2025, 10, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: x\n\xff\xfe binary", r"bad\.yaml.*not UTF-8 text \(byte 8\)"),
        (b"name: [unclosed\n", r"bad\.yaml.*not valid YAML"),
    ],
)
def test_an_unreadable_scenario_file_is_a_schema_error_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(SchemaError, match=message):
        load_scenario(path)
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scenario(folder)  # a directory is not a scenario file
