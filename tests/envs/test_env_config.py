"""Configuration validation: strict types, lever ranges, nothing changed silently."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.envs.config import EnvConfig, FixedParams, make_config
from fundgym.envs.controls import Controls
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.schema import SchemaError, build, spec

ACTION_NOTE = r"\(the lever's action range: the environment holds it as a position there\)"

# fmt: off
OUT_OF_RANGE = [
    # fixed field,                 value,  allowed (the lever's action range)
    ("mmr",                        0.9,    r"\[0.003, 0.1\]"),
    ("mmr",                        0.002,  r"\[0.003, 0.1\]"),
    ("imr_multiple",               5.0,    r"\[1.2, 3.0\]"),
    ("imr_multiple",               1.0,    r"\[1.2, 3.0\]"),
    ("liquidation_fee_rate",       0.05,   r"\[0.001, 0.03\]"),
    ("liquidation_fee_rate",       0.0,    r"\[0.001, 0.03\]"),
    ("liquidation_fee_fund_share", 1.5,    r"\[0.0, 1.0\]"),
    ("trading_fee_fund_share",     -0.1,   r"\[0.0, 1.0\]"),
]
# fmt: on


@pytest.mark.parametrize(("name", "value", "allowed"), OUT_OF_RANGE)
def test_a_fixed_value_outside_its_lever_range_is_an_error(name, value, allowed):
    # Before: fixed.mmr = 0.9 was accepted, run at 0.10, and recorded as 0.9.
    with pytest.raises(
        SchemaError, match=rf"fixed\.{name} = {value!r}: a number in {allowed} {ACTION_NOTE}"
    ):
        make_config(fixed={name: value})


def test_fixed_values_on_the_edges_run_as_configured():
    cfg = make_config(fixed={"mmr": 0.1, "imr_multiple": 1.2, "liquidation_fee_rate": 0.001})
    fixed = {k: v for k, v in dataclasses.asdict(cfg.fixed).items() if v is not None}
    c = Controls(("trading_fee_fund_share",), fixed, 0.2, 0, n_envs=2)
    v = c.values()
    np.testing.assert_allclose(v["mmr"], 0.1, rtol=1e-12)
    np.testing.assert_allclose(v["imr_multiple"], 1.2, rtol=1e-12)
    np.testing.assert_allclose(v["liquidation_fee_rate"], 0.001, rtol=1e-12)
    np.testing.assert_allclose(v["imr"], 0.12, rtol=1e-12)


def test_taker_fee_uses_the_lever_hard_bounds():
    assert make_config(taker_fee_rate=0.1).taker_fee_rate == 0.1
    with pytest.raises(SchemaError, match=r"taker_fee_rate = 0.2: a number in \[0.0, 0.1\]"):
        make_config(taker_fee_rate=0.2)


def test_controlled_names_come_from_the_registry():
    with pytest.raises(
        SchemaError, match=r"controlled = \['leverage'\]: unknown parameter 'leverage'"
    ):
        make_config(controlled=["leverage"])
    with pytest.raises(SchemaError, match=r"'taker_fee_rate' has hard bounds only"):
        make_config(controlled=["taker_fee_rate"])
    with pytest.raises(SchemaError, match=r"distinct parameters"):
        make_config(controlled=["mmr", "mmr"])


FLOAT_NOT_BOOL = r"a number \(float\), not true/false"
INT_NOT_BOOL = r"a number \(int\), not true/false"

# fmt: off
WRONG_TYPE = [
    # overrides,                          where,                  value,      allowed
    ({"fixed": {"mmr": True}},            r"fixed\.mmr",          "True",     FLOAT_NOT_BOOL),
    ({"n_accounts": False},               "n_accounts",           "False",    INT_NOT_BOOL),
    ({"sampler": {"crash_prob": True}},   r"sampler\.crash_prob", "True",     FLOAT_NOT_BOOL),
    ({"max_step": np.bool_(True)},        "max_step",             "np.True_", FLOAT_NOT_BOOL),
    ({"fallback": True},                  "fallback",             "True",     r"one of \['adl'"),
    ({"scenario": 3},                     "scenario",             "3",        "a string"),
    ({"n_accounts": 10.5},                "n_accounts",           "10.5",     "an integer"),
    ({"decision_minutes": "ten"},         "decision_minutes",     "'ten'",    r"a number \(float"),
    ({"decision_minutes": float("nan")},  "decision_minutes",     "nan",      "a finite number"),
    ({"controlled": "mmr"},               "controlled",           "'mmr'",    "a list"),
]
# fmt: on


@pytest.mark.parametrize(("overrides", "where", "value", "allowed"), WRONG_TYPE)
def test_wrong_types_name_field_value_and_what_is_allowed(overrides, where, value, allowed):
    with pytest.raises(SchemaError, match=rf"<kwargs>: {where} = {value}: {allowed}"):
        make_config(**overrides)


def test_numbers_accepted_without_changing_them():
    # An int for a float, an integral float for an int, numpy scalars, a YAML 1.1 string.
    cfg = make_config(
        decision_minutes=5,
        n_accounts=np.int64(64),
        fund_to_oi_frac=np.float32(0.5),
        horizon_minutes=2.5e3,
        margin_notice_minutes=60.0,
    )
    assert cfg.decision_minutes == 5.0 and isinstance(cfg.decision_minutes, float)
    assert cfg.n_accounts == 64 and type(cfg.n_accounts) is int
    assert cfg.fund_to_oi_frac == 0.5 and cfg.horizon_minutes == 2500.0


@dataclasses.dataclass(frozen=True)
class _Flags:
    enabled: bool = spec(False, doc="a switch")


# fmt: off
BOOLS = [
    # value,  accepted
    (True,    True),
    (False,   True),
    (1,       False),
    (0,       False),
    (1.0,     False),
    ("true",  False),
    ("yes",   False),
    (None,    False),
]
# fmt: on


@pytest.mark.parametrize(("value", "accepted"), BOOLS)
def test_only_a_boolean_is_a_boolean(value, accepted):
    if accepted:
        assert build(_Flags, {"enabled": value}, "flags.yaml").enabled is value
        return
    with pytest.raises(SchemaError, match=rf"flags\.yaml: enabled = {value!r}: true or false"):
        build(_Flags, {"enabled": value}, "flags.yaml")


def test_a_scenario_file_with_a_number_for_a_boolean_is_rejected(tmp_path):
    text = Path("configs/scenarios/calm.yaml").read_text()
    assert "training: true" in text
    bad = tmp_path / "calm_bad.yaml"
    bad.write_text(text.replace("training: true", "training: 1"))
    with pytest.raises(SchemaError, match=r"calm_bad\.yaml: training = 1: true or false"):
        load_scenario(bad)


def _write(tmp_path: Path, env: dict) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump({"env": env}))
    return path


def test_make_config_from_a_yaml_file(tmp_path):
    path = _write(
        tmp_path,
        {
            "n_accounts": 256,
            "controlled": ["liquidation_fee_rate", "mmr"],
            "fixed": {"mmr": 0.01, "imr_multiple": 2.0},
            "taker_fee_rate": 0.0002,
        },
    )
    cfg = make_config(path, n_accounts=128)  # keyword arguments override the file
    assert cfg.n_accounts == 128 and cfg.controlled == ("liquidation_fee_rate", "mmr")
    assert cfg.fixed == FixedParams(mmr=0.01, imr_multiple=2.0)
    assert cfg.taker_fee_rate == 0.0002
    assert make_config(cfg) == cfg  # a config round-trips through its own fields


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env:\n  fixed:\n    mmr: 0.9\n", r"env\.yaml: fixed\.mmr = 0\.9: a number in \[0\.003"),
        # YAML 1.2 booleans (fundgym.envs.schema.ConfigLoader): ``yes`` is a string, still not a
        # number.
        ("env:\n  fixed:\n    mmr: yes\n", r"env\.yaml: fixed\.mmr = 'yes': a number \(float\)"),
        ("env:\n  fixed:\n    mmr: true\n", r"env\.yaml: fixed\.mmr = True: a number \(float\)"),
        ("env:\n  n_accounts: true\n", r"env\.yaml: n_accounts = True: a number \(int\)"),
        ("env:\n  fallback: 1\n", r"env\.yaml: fallback = 1: one of"),
        ("env:\n  fixed:\n    leverage: 3\n", r"env\.yaml: fixed\.leverage = 3: unknown key"),
        ("- 1\n- 2\n", r"env\.yaml: <top> = \[1, 2\]: a mapping"),
    ],
)
def test_yaml_errors_name_the_file_field_value_and_rule(tmp_path, text, message):
    path = tmp_path / "env.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message):
        make_config(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml does not exist"):
        make_config(tmp_path / "nowhere.yaml")


def test_a_valid_config_keeps_the_values_it_was_given():
    # No clipping anywhere on the way: what the config records is what runs.
    cfg = make_config(fixed={"mmr": 0.004, "liquidation_fee_rate": 0.003})
    assert (cfg.fixed.mmr, cfg.fixed.liquidation_fee_rate) == (0.004, 0.003)
    assert EnvConfig(fixed=cfg.fixed).fixed == cfg.fixed


# ==== The option market's crash rate (issue 21: puts priced at the fund's actual costs) ====

# fmt: off
CRASH_RATES = [
    # overrides,                                                   crashes a year priced
    ({},                                                           2.0),       # named: real [E]
    ({"scenario": "training"},                                     0.7 * 365.0),
    ({"scenario": "training", "sampler": {"crash_prob": 0.35}},    0.35 * 365.0),
    ({"scenario": "training", "horizon_minutes": 2880.0},          0.7 * 182.5),
    ({"scenario": "training", "put_crash_rate_per_year": 12.0},    12.0),
    ({"put_crash_rate_per_year": 0.0},                             0.0),
]
# fmt: on


@pytest.mark.parametrize(("overrides", "rate"), CRASH_RATES)
def test_puts_are_quoted_at_the_crash_rate_of_the_fund_s_world(overrides, rate):
    from fundgym.envs.config import put_crash_rate_per_year

    kwargs = {"scenario": "black_thursday_2020", **overrides}
    assert put_crash_rate_per_year(make_config(**kwargs)) == rate


def test_the_training_draws_keep_the_quote_s_former_constant_to_the_bit():
    from fundgym.envs.config import put_crash_rate_per_year
    from fundgym.envs.fund.portfolio import PUT_CRASH_RATE_PER_YEAR

    assert put_crash_rate_per_year(make_config(scenario="training")) == PUT_CRASH_RATE_PER_YEAR


@pytest.mark.parametrize("value", [-1.0, 40_000.0, True, "2/yr"])
def test_a_bad_put_crash_rate_names_the_field(value):
    with pytest.raises(SchemaError, match=r"put_crash_rate_per_year"):
        make_config(put_crash_rate_per_year=value)


def test_the_environment_s_fund_prices_its_world_s_rate():
    from fundgym.envs.exchange_env import InsuranceFundVectorEnv

    for scenario, rate in (("black_thursday_2020", 2.0), ("training", 0.7 * 365.0)):
        env = InsuranceFundVectorEnv(num_envs=1, scenario=scenario, n_accounts=16)
        env.reset(seed=0)
        assert env.core.sim.allocation.put_crash_rate_per_year == rate
