"""The lever registry: one consistent source for ranges, defaults, mapping and venue names."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundgym.envs.config import EnvConfig, FixedParams
from fundgym.envs.controls import DEFAULTS, MARGIN_PARAMS, PARAMS, Controls
from fundgym.envs.core.params import P_MARK_CAP_MULT, P_OI_CAP_FRAC, P_UPNL_HAIRCUT, RiskParams
from fundgym.envs.levers import (
    CONTROLLABLE,
    LEVERS,
    ActionRange,
    Interval,
    Lever,
    LeverError,
    describe,
    venue_values,
)
from fundgym.envs.schema import SchemaError, build
from fundgym.envs.schema import describe as describe_schema


@pytest.mark.parametrize("name", list(LEVERS))
def test_default_inside_action_range_inside_hard_bounds(name):
    lever = LEVERS[name]
    assert lever.name == name
    assert lever.bounds.contains(lever.default)
    if lever.action is not None:
        a = lever.action
        assert a.low <= lever.default <= a.high
        assert lever.bounds.contains(a.low) and lever.bounds.contains(a.high)


def test_every_parameter_name_in_use_is_a_lever():
    numeric = {f.name for f in dataclasses.fields(RiskParams)} - {
        "fallback",
        "tiers",
        "socialization",
        "adl_policy",
        "liquidation_mode",
        "waterfall",
    }
    assert numeric <= set(LEVERS)
    assert set(PARAMS) == set(CONTROLLABLE) <= set(LEVERS)
    assert {f.name for f in dataclasses.fields(FixedParams)} <= set(PARAMS)
    assert set(MARGIN_PARAMS) <= set(PARAMS)
    assert set(EnvConfig().controlled) == set(PARAMS)
    assert {n: LEVERS[n].default for n in PARAMS} == DEFAULTS


def test_risk_params_defaults_are_the_levers_defaults():
    p = RiskParams()
    for f in dataclasses.fields(RiskParams):
        if f.name in LEVERS:
            assert getattr(p, f.name) == LEVERS[f.name].default
    # The controls' defaults reproduce RiskParams' IMR: 3% x 5/3 = 5%.
    assert DEFAULTS["mmr"] * DEFAULTS["imr_multiple"] == pytest.approx(RiskParams().imr)


# fmt: off
MAPPING = [
    # lever,                  position, value (hand-worked)
    ("mmr",                   -1.0,     0.003),
    ("mmr",                    1.0,     0.10),
    ("mmr",                    0.0,     math.sqrt(0.003 * 0.10)),           # geometric middle
    ("mmr",                   -0.5,     0.003 * (0.10 / 0.003) ** 0.25),    # a quarter in log
    ("liquidation_fee_rate",   0.0,     math.sqrt(0.001 * 0.03)),
    ("imr_multiple",          -1.0,     1.2),
    ("imr_multiple",           0.0,     2.1),                               # (1.2 + 3.0) / 2
    ("imr_multiple",           0.5,     2.55),                              # 1.2 + 0.75 x 1.8
    ("alloc_hedge",            0.25,    0.25),                              # identity on [-1, 1]
]
# fmt: on


@pytest.mark.parametrize(("name", "position", "value"), MAPPING)
def test_hand_worked_mapping(name, position, value):
    lever = LEVERS[name]
    assert lever.to_value(position)[()] == pytest.approx(value, rel=1e-12)
    assert lever.to_position(value)[()] == pytest.approx(position, abs=1e-12)


@given(
    name=st.sampled_from(CONTROLLABLE),
    position=st.floats(-1.0, 1.0, allow_nan=False),
)
def test_position_value_round_trip(name, position):
    lever = LEVERS[name]
    value = lever.to_value(position)
    assert lever.action is not None
    assert lever.action.low <= value <= lever.action.high * (1 + 1e-12)
    assert lever.to_position(value)[()] == pytest.approx(position, abs=1e-9)


def test_positions_beyond_the_box_saturate_like_box_actions():
    # An action outside [-1, 1] is clipped (Gymnasium Box convention), not an error.
    assert LEVERS["mmr"].to_value(np.array([-3.0, 7.0])).tolist() == pytest.approx([0.003, 0.10])


@pytest.mark.parametrize(
    ("name", "value"),
    [("mmr", 0.9), ("mmr", 0.002), ("imr_multiple", 5.0), ("liquidation_fee_rate", 0.0)],
)
def test_a_value_outside_the_action_range_has_no_position(name, value):
    lever = LEVERS[name]
    with pytest.raises(LeverError, match=rf"{name} = {value!r} is outside its action range"):
        lever.to_position(value)


def test_round_off_on_the_edge_is_not_an_error():
    lever = LEVERS["liquidation_fee_rate"]
    edge = lever.to_value(1.0)[()]  # 0.001 x 30 may round past 0.03
    assert lever.to_position(edge)[()] == 1.0
    assert lever.to_position(0.03 * (1 + 1e-13))[()] == 1.0


def test_clip_saturates_into_the_action_range():
    assert LEVERS["liquidation_fee_rate"].clip([0.0, 0.01, 0.5]).tolist() == [0.001, 0.01, 0.03]


def test_non_controllable_levers_have_no_action_mapping():
    with pytest.raises(ValueError, match="taker_fee_rate has no action range"):
        LEVERS["taker_fee_rate"].to_position(0.0005)
    assert "taker_fee_rate" not in PARAMS


# fmt: off
HARD = [
    # lever,                          value,        allowed text
    ("mmr",                           0.0,          r"\(0.0, 1.0\)"),
    ("mmr",                           1.0,          r"\(0.0, 1.0\)"),
    ("imr",                           1.0,          None),
    ("liquidation_fee_rate",          1.0,          r"\[0.0, 1.0\)"),
    ("liquidation_fee_rate",          0.0,          None),
    ("taker_fee_rate",                0.11,         r"\[0.0, 0.1\]"),
    ("max_liquidation_fraction",      0.0,          r"\(0.0, 1.0\]"),
    ("min_liquidation_notional_usd",  math.inf,     r"\[0.0, inf\)"),
    ("min_liquidation_notional_usd",  -1.0,         r"\[0.0, inf\)"),
    ("imr_multiple",                  0.99,         r"\[1.0, 100.0\]"),
]
# fmt: on


@pytest.mark.parametrize(("name", "value", "allowed"), HARD)
def test_hard_bounds(name, value, allowed):
    lever = LEVERS[name]
    if allowed is None:
        assert lever.check(value) == value
        return
    with pytest.raises(LeverError, match=rf"Owner\.{name} must lie in {allowed} .*got {value!r}"):
        lever.check(value, "Owner.")


def test_check_names_the_first_bad_entry_of_an_array():
    with pytest.raises(LeverError, match=r"mmr must lie in \(0.0, 1.0\) .*got 1.5"):
        LEVERS["mmr"].check(np.array([0.03, 1.5, 2.0]))
    with pytest.raises(LeverError, match=r"shape \(1, 2\)"):
        LEVERS["mmr"].check(np.array([[0.03, 0.04]]))


def test_registry_rejects_an_inconsistent_lever():
    with pytest.raises(ValueError, match=r"default 0\.5 outside"):
        Lever("x", "frac", Interval(0.0, 1.0), 0.5, "doc", ActionRange(0.0, 0.1, False))
    with pytest.raises(ValueError, match="action range"):
        Lever("x", "frac", Interval(0.0, 1.0), 0.5, "doc", ActionRange(0.1, 2.0, False))
    with pytest.raises(ValueError, match="log ActionRange needs low > 0"):
        ActionRange(0.0, 1.0, True)


def test_dydx_names_of_the_default_large_cap():
    # dYdX v4 large cap: IMR 5% = 50,000 ppm, maintenance fraction 60% = 600,000 ppm,
    # max liquidation fee 1.5% = 15,000 ppm, taker fee 5 bps = 500 ppm, $1,000 = 1e9 quantums.
    values = {n: lever.default for n, lever in LEVERS.items()}
    assert venue_values("dydx", values) == {
        "max_liquidation_fee_ppm": 15_000,
        "maintenance_fraction_ppm": 600_000,
        "initial_margin_ppm": 50_000,
        "taker_fee_ppm": 500,
        "max_position_portion_liquidated_ppm": 250_000,
        "min_position_notional_liquidated": 1e9,
    }


def test_leverage_names_are_reciprocals_and_missing_inputs_are_left_out():
    # Binance/Hyperliquid state IMR as max leverage: 1 / 0.025 = 40x; Drift in 1e-4.
    out = venue_values("hyperliquid", {"imr": 0.025})
    assert out == {"maxLeverage": pytest.approx(40.0)}
    assert venue_values("drift", {"mmr": 0.03, "imr": 0.05}) == pytest.approx(
        {"margin_ratio_maintenance": 300.0, "margin_ratio_initial": 500.0}
    )
    assert venue_values("dydx", {"mmr": 0.03}) == {}  # maintenance fraction needs imr too


def test_describe_has_one_row_per_lever_with_ranges_and_names():
    rows = {r[0]: r for r in describe()}
    assert list(rows) == list(LEVERS)
    _, unit, hard, action, default, venues, doc = rows["mmr"]
    assert (unit, hard, action, default) == (
        "fraction of notional",
        "(0.0, 1.0)",
        "[0.003, 0.1] (log)",
        "0.03",
    )
    assert "dydx maintenance_fraction_ppm" in venues and doc
    assert rows["taker_fee_rate"][3] == "-"
    assert "(estimate)" in rows["max_liquidation_fraction"][5]


def test_config_docs_carry_the_lever_ranges():
    rows = {r[0]: r for r in describe_schema(EnvConfig)}
    assert "a number in [0.003, 0.1]" in rows["fixed.mmr"][3]
    assert "a number in [0.0, 0.1]" in rows["taker_fee_rate"][3]


def test_controls_reject_a_fixed_value_they_cannot_represent():
    with pytest.raises(LeverError, match=r"fixed mmr = 0.9 is outside its action range"):
        Controls(("liquidation_fee_rate",), {"mmr": 0.9}, 0.2, 0, n_envs=1)
    c = Controls(("liquidation_fee_rate",), {"mmr": 0.1}, 0.2, 0, n_envs=1)
    assert c.values()["mmr"][0] == pytest.approx(0.1)  # the edge itself is representable


def test_the_docs_lever_table_is_the_registry() -> None:
    from pathlib import Path

    from fundgym.envs.levers import markdown_table

    doc = (Path(__file__).parents[2] / "docs" / "simulator_v2.md").read_text()
    assert markdown_table() in doc, "regenerate docs/simulator_v2.md's lever table"


@pytest.mark.parametrize(
    ("name", "unit", "bounds", "default", "col"),
    [
        (
            "unrealised_pnl_haircut_frac",
            "fraction of unrealised profit",
            "[0.0, 1.0]",
            1.0,
            P_UPNL_HAIRCUT,
        ),
        ("oi_cap_frac", "multiple of starting open interest", "[0.0, 1000.0]", 0.0, P_OI_CAP_FRAC),
        (
            "mark_cap_mult",
            "multiple of the mark's 8-hour average",
            "[0.0, 1000.0]",
            0.0,
            P_MARK_CAP_MULT,
        ),
    ],
)
def test_thin_market_defences_are_levers_off_by_default(name, unit, bounds, default, col):
    lever = LEVERS[name]
    assert (lever.unit, str(lever.bounds), lever.default) == (unit, bounds, default)
    assert not lever.controllable
    assert getattr(RiskParams(), name) == default
    assert getattr(EnvConfig(), name) == default
    assert RiskParams(**{name: 1.0}).packed(2)[:, col].tolist() == [1.0, 1.0]


def test_a_mark_cap_below_one_is_refused():
    with pytest.raises(ValueError, match=r"mark_cap_mult must be 0 \(no cap\) or >= 1"):
        RiskParams(mark_cap_mult=0.5)
    with pytest.raises(SchemaError, match="mark_cap_mult"):
        build(EnvConfig, {"mark_cap_mult": 0.5}, "<test>")
    assert RiskParams(mark_cap_mult=10.0).mark_cap_mult == 10.0


def test_a_registry_refuses_a_lever_declared_twice():
    from fundgym.envs.levers import _registry

    fee = LEVERS["liquidation_fee_rate"]
    assert list(_registry(fee, LEVERS["mmr"])) == ["liquidation_fee_rate", "mmr"]
    with pytest.raises(ValueError, match="lever 'liquidation_fee_rate' is declared twice"):
        _registry(fee, LEVERS["mmr"], fee)
