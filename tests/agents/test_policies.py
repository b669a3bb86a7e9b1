"""Baseline policies: spec parsing, venue presets, the rule controller worked by hand."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from fundgym.agents.policies import (
    PRESETS,
    STATIC_ALLOC,
    STATIC_PARAMS,
    PolicySpec,
    RuleParams,
    RulePolicy,
    SpecError,
    StaticPolicy,
    build_policy,
    parse_spec,
)
from fundgym.envs.controls import ALLOCATION, DEFAULTS, PARAMS, allocation_weights
from fundgym.envs.exchange_env import OBS_NAMES, InsuranceFundVectorEnv
from fundgym.envs.levers import venue_values

ROOT = Path(__file__).resolve().parents[2]

OBS = {n: i for i, n in enumerate(OBS_NAMES)}
ALL = tuple(PARAMS)


def obs_with(n=1, **values):
    o = np.zeros((n, len(OBS_NAMES)))
    o[:, OBS["episode_progress"]] = 0.5
    for k, v in values.items():
        o[:, OBS[k]] = v
    return o


def natural(policy, obs):
    a = policy.act(obs)
    return {n: float(PARAMS[n].to_value(a[0, j])) for j, n in enumerate(ALL)}


# ---- specs ----


def test_presets_parse_to_their_documented_values():
    dydx = parse_spec("static:dydx")
    assert dydx.kind == "static"
    assert dydx.values["mmr"] == 0.03 and dydx.values["liquidation_fee_rate"] == 0.015
    assert dydx.env_overrides() == {
        "margin_tiers": "none",
        "liquidation_mode": "dydx_v4",  # the venue's own engine
        "adl_policy": "bitmex",  # standing in for dYdX's random-start iteration [E]
        "fixed": {
            "liquidation_fee_rate": 0.015,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.03,
            "imr_multiple": 5.0 / 3.0,
            "trading_fee_fund_share": 0.0,
        },
        "fund_to_oi_frac": 0.005,  # the venue's fund size: evaluation runs it under its own
        "vault_to_oi_frac": 0.0,  # no backstop vault: a preset fixes it, whatever the config
        "fund_injection_frac": 0.0,  # no top-ups of an exhausted fund: fixed the same way
        "fund_injection_max": 0,
    }
    binance = parse_spec("static:binance")
    assert binance.margin_tiers == "binance_btcusdt_2021" and binance.values["mmr"] == 0.004
    hl = parse_spec("static:hyperliquid")
    assert hl.values["mmr"] == 0.0125 and hl.values["imr_multiple"] == 2.0
    bitmex = parse_spec("static:bitmex")
    assert bitmex.values["mmr"] == 0.005 and bitmex.values["liquidation_fee_rate"] == 0.005
    for p in PRESETS.values():
        assert p.sources and p.note
        assert set(p.values) == set(STATIC_PARAMS)
        for k, v in p.values.items():
            assert PARAMS[k].low <= v <= PARAMS[k].high, k


@pytest.mark.parametrize(
    ("preset", "fund", "estimate"),
    [
        # outcomes.md, "Fund size relative to open interest": Binance Oct 2025 3-6% (midpoint),
        # dYdX v4 $1M seed against $0.1-0.3B, HLP $300M against $13.8B, BitMEX 2020 20-35%
        # Hyperliquid has no insurance fund in front of ADL: HLP is its backstop (below)
        ("binance", 0.045, True),
        ("dydx", 0.005, True),
        ("hyperliquid", 0.0, False),
        ("bitmex", 0.275, True),
    ],
)
def test_presets_carry_their_venues_fund_size_with_a_source(preset, fund, estimate):
    p = PRESETS[preset]
    assert (p.fund_to_oi_frac, p.fund_estimate) == (fund, estimate)
    assert any(line.startswith(f"fund {100 * fund:g}% of OI") for line in p.sources)
    spec = parse_spec(f"static:{preset}")
    assert spec.fund_to_oi_frac == fund and spec.env_overrides()["fund_to_oi_frac"] == fund
    fund_note = f"fund {fund:.2%} of open interest" + (" [E]" if estimate else "")
    assert fund_note in spec.note


@pytest.mark.parametrize(
    ("preset", "vault"),
    [
        # HLP about $300M against $13.8B of open interest on 10 Oct 2025 (outcomes.md)
        ("hyperliquid", 0.022),
        ("binance", 0.0),
        ("dydx", 0.0),
        ("bitmex", 0.0),
    ],
)
def test_only_hyperliquid_runs_a_backstop_vault_sized_as_hlp(preset, vault):
    p = PRESETS[preset]
    assert p.vault_to_oi_frac == vault
    spec = parse_spec(f"static:{preset}")
    assert spec.vault_to_oi_frac == vault and spec.env_overrides()["vault_to_oi_frac"] == vault
    assert ("backstop vault 2.20% of open interest" in spec.note) == (vault > 0)
    if vault:
        assert any(line.startswith("vault 2.2% of OI: HLP, about $300M") for line in p.sources)


def test_hyperliquid_has_no_fund_in_front_of_adl_and_says_so():
    p = PRESETS["hyperliquid"]
    (fund_line,) = [line for line in p.sources if line.startswith("fund ")]
    assert "no insurance fund in front of ADL" in fund_line
    assert "hyperliquid.gitbook.io/hyperliquid-docs/trading/liquidations" in fund_line
    assert "hyperliquid.gitbook.io/hyperliquid-docs/trading/auto-deleveraging" in fund_line
    # the notes no longer say the fund stands in for the vault
    assert not any("stand" in line and "vault" in line for line in (*p.sources, p.note))


@pytest.mark.parametrize(
    ("preset", "mode"),
    [
        ("binance", "binance"),
        ("dydx", "dydx_v4"),
        ("hyperliquid", "hyperliquid"),
        ("bitmex", "bitmex"),
    ],
)
def test_presets_select_their_venues_liquidation_mode(preset, mode):
    assert PRESETS[preset].liquidation_mode == mode
    assert any(line.startswith(f"liquidation mode {mode}") for line in PRESETS[preset].sources)
    assert parse_spec(f"static:{preset}").env_overrides()["liquidation_mode"] == mode
    # overriding a value keeps the venue's engine; a custom set keeps the environment's
    assert parse_spec(f"static:{preset},mmr=0.02").env_overrides()["liquidation_mode"] == mode
    assert "liquidation_mode" not in parse_spec("static:mmr=0.05").env_overrides()


@pytest.mark.parametrize(
    ("preset", "rule"),
    [
        ("binance", "bitmex"),
        ("dydx", "bitmex"),
        ("hyperliquid", "hyperliquid"),
        ("bitmex", "bitmex"),
    ],
)
def test_presets_select_their_venues_adl_rule(preset, rule):
    assert PRESETS[preset].adl_policy == rule
    assert any(line.startswith("ADL") for line in PRESETS[preset].sources)
    assert parse_spec(f"static:{preset}").env_overrides()["adl_policy"] == rule
    assert parse_spec(f"static:{preset},mmr=0.02").env_overrides()["adl_policy"] == rule
    assert "adl_policy" not in parse_spec("static:mmr=0.05").env_overrides()


def test_evaluation_runs_a_preset_under_its_venues_liquidation_mode():
    from fundgym.agents.rollout import base_env, job_env

    base = {**base_env(None, []), "n_accounts": 32}
    assert base["liquidation_mode"] == "partial"
    assert job_env(base, parse_spec("static:dydx"), "calm")["liquidation_mode"] == "dydx_v4"
    assert job_env(base, parse_spec("rule"), "calm")["liquidation_mode"] == "partial"
    env = InsuranceFundVectorEnv(num_envs=1, **job_env(base, parse_spec("static:bitmex"), "calm"))
    env.reset(seed=0)
    assert env.core.sim.risk.liquidation_mode == "bitmex"


def test_bitmex_is_xbtusd_in_march_2020():
    # base maintenance margin 0.50% and initial margin 1.00% (100x) until 17 Apr 2020; the
    # remaining maintenance margin of a liquidated account goes to the fund
    v = PRESETS["bitmex"].values
    assert v["mmr"] * v["imr_multiple"] == pytest.approx(0.01, rel=1e-12)
    assert v["liquidation_fee_rate"] == v["mmr"] and v["liquidation_fee_fund_share"] == 1.0


def test_evaluation_runs_a_preset_under_its_fund_and_others_under_the_configs():
    from fundgym.agents.rollout import base_env, job_env

    base = {**base_env(None, []), "n_accounts": 32}
    assert base["fund_to_oi_frac"] == 0.02
    for name, fund in [("static:bitmex", 0.275), ("rule", 0.02), ("static:mmr=0.05", 0.02)]:
        spec = parse_spec(name)
        kw = job_env(base, spec, "venue_flash_wick")
        assert kw["fund_to_oi_frac"] == fund, name
        env = InsuranceFundVectorEnv(num_envs=1, **kw)
        env.reset(seed=0)
        ratio = env.core.fund_value_usd()[0] / env.core.initial_open_interest_usd[0]
        assert ratio == pytest.approx(fund, rel=1e-12), name


def test_a_preset_takes_overrides_and_keeps_the_rest():
    spec = parse_spec("static:binance, mmr=0.01, fund_to_oi_frac=0.1")
    assert spec.margin_tiers == "binance_btcusdt_2021" and spec.fund_to_oi_frac == 0.1
    assert spec.values == {**PRESETS["binance"].values, "mmr": 0.01}
    assert spec.note.endswith("of open interest; overridden: mmr 0.01, fund 10.00%")
    assert parse_spec("static:dydx,fund_to_oi_frac=0").fund_to_oi_frac == 0.0


def test_a_preset_or_a_custom_set_takes_a_vault_size():
    spec = parse_spec("static:hyperliquid,vault_to_oi_frac=0.05")
    assert spec.vault_to_oi_frac == 0.05 and spec.env_overrides()["vault_to_oi_frac"] == 0.05
    assert spec.note.endswith("; overridden: vault 5.00%")
    assert parse_spec("static:binance,vault_to_oi_frac=0.01").vault_to_oi_frac == 0.01
    assert parse_spec("static:hyperliquid,vault_to_oi_frac=0").vault_to_oi_frac == 0.0
    # a custom set keeps the environment's vault unless it names one
    assert parse_spec("static:mmr=0.05").vault_to_oi_frac is None
    assert "vault_to_oi_frac" not in parse_spec("static:mmr=0.05").env_overrides()
    named = parse_spec("static:vault_to_oi_frac=0.1,mmr=0.05")
    assert named.vault_to_oi_frac == 0.1 and named.fund_to_oi_frac is None
    assert named.note.endswith(", vault 10.00% of open interest")


def test_a_spec_sets_the_vaults_loss_limit_and_the_multi_market_simulator_takes_it():
    from fundgym.agents.evaluate.markets_policy import market_risk

    spec = parse_spec("static:hyperliquid,vault_adl_loss_frac=0.05")
    assert spec.vault_adl_loss_frac == 0.05
    assert spec.env_overrides()["vault_adl_loss_frac"] == 0.05
    assert spec.note.endswith("; overridden: vault loss limit 5.00%")
    assert market_risk("static:hyperliquid,vault_adl_loss_frac=0.05").vault_adl_loss_frac == 0.05
    # A preset that does not name one keeps the environment's: the liquidation mode's own.
    assert parse_spec("static:hyperliquid").vault_adl_loss_frac is None
    assert "vault_adl_loss_frac" not in parse_spec("static:hyperliquid").env_overrides()
    assert market_risk("static:hyperliquid").vault_adl_loss_frac is None
    custom = parse_spec("static:vault_adl_loss_frac=0,mmr=0.05")
    assert custom.vault_adl_loss_frac == 0.0
    assert custom.note.endswith(", vault loss limit 0.00% of its capital")


def test_the_vault_range_is_the_environment_configs():
    from fundgym.agents.policies.registry import SHARE_RANGES
    from fundgym.envs.config import EnvConfig

    field = next(f for f in dataclasses.fields(EnvConfig) if f.name == "vault_to_oi_frac")
    assert SHARE_RANGES["vault_to_oi_frac"] == (field.metadata["ge"], field.metadata["le"])
    assert SHARE_RANGES["vault_to_oi_frac"] == (0.0, 10.0)


def test_a_custom_set_keeps_the_configs_fund_unless_it_names_one():
    assert parse_spec("static:mmr=0.05").fund_to_oi_frac is None
    assert "fund_to_oi_frac" not in parse_spec("static:mmr=0.05").env_overrides()
    spec = parse_spec("static:fund_to_oi_frac=0.1,mmr=0.05")
    assert spec.fund_to_oi_frac == 0.1 and spec.margin_tiers == "none"
    assert spec.values == {**{k: DEFAULTS[k] for k in STATIC_PARAMS}, "mmr": 0.05}
    only = parse_spec("static:fund_to_oi_frac=0.3")
    assert only.values == {k: DEFAULTS[k] for k in STATIC_PARAMS} and only.fund_to_oi_frac == 0.3


def test_static_sets_are_the_registry_levers_but_the_allocation():
    assert STATIC_PARAMS == (
        "liquidation_fee_rate",
        "liquidation_fee_fund_share",
        "mmr",
        "imr_multiple",
        "trading_fee_fund_share",
    )
    # the fund all in stable assets: logits +1, -1, -1, -1
    assert STATIC_ALLOC == {
        "alloc_stable": 1.0,
        "alloc_yield": -1.0,
        "alloc_volatile": -1.0,
        "alloc_hedge": -1.0,
    }


@pytest.mark.parametrize(
    ("preset", "venue", "published"),
    [
        # dYdX v4 large-cap tier: initial 5%, maintenance fraction 60% (MMR 3%), 1.5% max
        # liquidation fee: x/perpetuals LiquidityTier, x/clob LiquidationsConfig (ppm)
        (
            "dydx",
            "dydx",
            {
                "max_liquidation_fee_ppm": 15_000,
                "maintenance_fraction_ppm": 600_000,
                "initial_margin_ppm": 50_000,
            },
        ),
        # Binance BTCUSDT first bracket: 125x, maintenance 0.4%; 0.3% clearance fee
        (
            "binance",
            "binance",
            {"liquidationFee": 0.003, "maintMarginRatio": 0.004, "initialLeverage": 125.0},
        ),
        # Hyperliquid BTC: 40x max leverage
        ("hyperliquid", "hyperliquid", {"maxLeverage": 40.0}),
    ],
)
def test_presets_are_the_venues_published_numbers(preset, venue, published):
    # The presets hold natural units; the registry's venue names convert them back to what
    # each venue publishes (IMR = mmr x imr_multiple).
    values = PRESETS[preset].values
    got = venue_values(venue, {**values, "imr": values["mmr"] * values["imr_multiple"]})
    assert got == pytest.approx(published, rel=1e-12)


def test_custom_static_set_fills_the_rest_with_defaults():
    spec = parse_spec("static:mmr=0.05, liquidation_fee_rate=0.01")
    assert spec.values["mmr"] == 0.05 and spec.values["liquidation_fee_rate"] == 0.01
    assert spec.values["imr_multiple"] == DEFAULTS["imr_multiple"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("static:ftx", "unknown preset 'ftx'; allowed: static:binance"),
        (
            "static:mmr=0.5",
            "policy 'static:mmr=0.5': mmr = 0.5 is outside its action range [0.003, 0.1] (log) "
            "(fraction of notional)",
        ),
        # 0 is a fee the mechanics accept (hard bounds), but no action position holds it
        (
            "static:liquidation_fee_rate=0",
            "liquidation_fee_rate = 0.0 is outside its action range [0.001, 0.03] (log)",
        ),
        ("static:mmr=nan", "mmr = nan is outside its action range"),
        ("static:imr_multiple=inf", "imr_multiple = inf is outside its action range [1.2, 3.0]"),
        ("static:mmr=abc", "mmr = 'abc' is not a number"),
        ("static:leverage=3", "unknown parameter 'leverage'"),
        (
            "static:binance,leverage=3",
            "unknown parameter 'leverage'; allowed: ['liquidation_fee_rate', "
            "'liquidation_fee_fund_share', 'mmr', 'imr_multiple', 'trading_fee_fund_share', "
            "'fund_to_oi_frac', 'vault_to_oi_frac', 'vault_adl_loss_frac', 'fund_injection_frac', "
            "'fund_injection_max', 'liquidation_mode', 'adl_policy', 'margin_tiers']",
        ),
        ("static:binance,dydx", "expected name=value, got 'dydx'"),
        ("static:binance,mmr=0.5", "mmr = 0.5 is outside its action range [0.003, 0.1]"),
        (
            "static:binance,fund_to_oi_frac=11",
            "fund_to_oi_frac = 11.0 is outside [0, 10] (the fund at the start of an episode, "
            "as a share of open interest)",
        ),
        ("static:fund_to_oi_frac=-0.1", "fund_to_oi_frac = -0.1 is outside [0, 10]"),
        ("static:fund_to_oi_frac=nan", "fund_to_oi_frac = nan is outside [0, 10]"),
        ("static:fund_to_oi_frac=lots", "fund_to_oi_frac = 'lots' is not a number"),
        (
            "static:hyperliquid,vault_to_oi_frac=10.5",
            "vault_to_oi_frac = 10.5 is outside [0, 10] (the backstop vault's capital at the "
            "start of an episode, as a share of open interest)",
        ),
        ("static:vault_to_oi_frac=-0.01", "vault_to_oi_frac = -0.01 is outside [0, 10]"),
        ("static:vault_to_oi_frac=inf", "vault_to_oi_frac = inf is outside [0, 10]"),
        ("static:vault_to_oi_frac=big", "vault_to_oi_frac = 'big' is not a number"),
        (
            "static:hyperliquid,vault_adl_loss_frac=1.5",
            "vault_adl_loss_frac = 1.5 is outside [0, 1] (the backstop vault's loss, as a share "
            "of its capital, beyond which its inventory is deleveraged)",
        ),
        ("static:mmr", "unknown preset 'mmr'"),
        ("nonexistent_run_dir", "not a run directory, and not one of static:<preset>"),
    ],
)
def test_bad_specs_name_the_value_and_what_is_allowed(spec, message):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert message in str(err.value)


def test_a_static_value_on_the_range_edge_up_to_round_off_is_the_edge():
    # 0.1 x (1 + 1e-15): float round-off of the top of mmr's range, held there exactly
    spec = parse_spec("static:mmr=0.10000000000000009")
    assert spec.values["mmr"] == 0.1
    InsuranceFundVectorEnv(num_envs=1, n_accounts=8, **spec.env_overrides())  # accepted


def test_a_directory_without_a_run_is_rejected(tmp_path):
    with pytest.raises(SpecError, match=r"has no config\.yaml"):
        parse_spec(str(tmp_path))
    (tmp_path / "config.yaml").write_text("algo: ppo\n")
    with pytest.raises(SpecError, match=r"final: missing; .*best/ .*final/"):
        parse_spec(str(tmp_path))


def test_a_run_from_another_observation_layout_says_retrain(tmp_path):
    # A model whose spaces do not match this environment (here: Pendulum's 3 observations, as
    # a run from before an observation was added would have 31) fails with the file, both
    # shapes and what to do, not with a matrix-shape error deep inside torch.
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from fundgym.agents.config import dump_config, load_config
    from fundgym.agents.policies.runs import policy_kwargs, write_model_dir

    cfg = load_config(ROOT / "configs" / "train" / "ppo.yaml")
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, policy_kwargs=policy_kwargs(cfg))
    write_model_dir(tmp_path / "final", model, cfg)
    spec = parse_spec(str(tmp_path))
    with pytest.raises(SpecError, match=r"final/policy\.pt: the model maps observations \(3,\) "
                       r"to actions \(1,\), but this environment has \(32,\) observations and "
                       r"\(8,\) actions; .* retrain it"):  # fmt: skip
        build_policy(spec, ALL)


def test_search_specs_must_be_resolved_before_running():
    with pytest.raises(SpecError, match="must be resolved"):
        build_policy(parse_spec("best_static"), ALL)


# ---- static ----


def test_static_policy_starts_at_and_holds_its_values():
    spec = parse_spec("static:hyperliquid")
    env = InsuranceFundVectorEnv(
        num_envs=2, scenario="venue_flash_wick", n_accounts=32, **spec.env_overrides()
    )
    obs, _ = env.reset(seed=3)
    policy = build_policy(spec, ALL)
    for _ in range(3):
        obs, _, _, _, info = env.step(policy.act(obs))
        for k in ("mmr", "liquidation_fee_rate", "imr_multiple", "trading_fee_fund_share"):
            np.testing.assert_allclose(info["params"][k], spec.values[k], rtol=1e-12)
        np.testing.assert_allclose(info["params"]["imr"], 0.025, rtol=1e-12)
        assert info["params"]["alloc_stable"] == pytest.approx([0.9926, 0.9926], abs=1e-4)


def test_static_policy_target_is_the_position_of_each_value():
    p = StaticPolicy("s", {"mmr": 0.03}, ("mmr", "alloc_stable"))
    a = p.act(np.zeros((3, len(OBS_NAMES))))
    assert a.shape == (3, 2)
    assert PARAMS["mmr"].to_value(a[0, 0]) == pytest.approx(0.03, rel=1e-12)
    assert a[0, 1] == 1.0


# ---- the rule, by hand ----

SQRT_4H = math.sqrt(4.0 / 8760.0)  # 0.0213687...


def test_rule_calm_market_margin_has_the_buffer():
    # vol 0.6 short, 0.5 long: not stressed (0.6 < 1.5 x 0.5); MMR = 3 x 0.6 x sqrt(4/8760)
    # x 1.25 = 0.0480796...
    rule = RulePolicy(ALL)
    v = natural(rule, obs_with(vol_short=0.6, vol_long=0.5, fund_coverage=0.2))
    assert v["mmr"] == pytest.approx(3 * 0.6 * SQRT_4H * 1.25, rel=1e-9)
    assert v["mmr"] == pytest.approx(0.0480796, rel=1e-6)
    # coverage 0.2 / 10 = 2% = target: base fee 1%, trading-fee share 0.1
    assert v["liquidation_fee_rate"] == pytest.approx(0.01, rel=1e-9)
    assert v["trading_fee_fund_share"] == pytest.approx(0.1, rel=1e-9)


def test_rule_stress_releases_the_buffer_but_the_floor_holds():
    rule = RulePolicy(ALL)
    rule.reset(1)
    calm = natural(rule, obs_with(vol_short=0.6, vol_long=0.5, fund_coverage=0.2))
    # stressed: 1.2 > 1.5 x 0.5; 3 x 1.2 x sqrt(4/8760) = 0.0769261, no buffer
    hot = natural(rule, obs_with(vol_short=1.2, vol_long=0.5, fund_coverage=0.2))
    assert hot["mmr"] == pytest.approx(3 * 1.2 * SQRT_4H, rel=1e-9)
    # back to a quiet market (vol 0.1): 3 x 0.1 x ... x 1.25 = 0.008 < floor 0.75 x 0.0769
    quiet = natural(rule, obs_with(vol_short=0.1, vol_long=0.1, fund_coverage=0.2))
    assert quiet["mmr"] == pytest.approx(0.75 * 3 * 1.2 * SQRT_4H, rel=1e-9)
    assert calm["mmr"] < hot["mmr"]
    # a new episode (progress 0) forgets the floor
    fresh = obs_with(vol_short=0.1, vol_long=0.1, fund_coverage=0.2)
    fresh[:, OBS["episode_progress"]] = 0.0
    assert natural(rule, fresh)["mmr"] == pytest.approx(3 * 0.1 * SQRT_4H * 1.25, rel=1e-9)


def test_rule_targets_outside_a_lever_range_are_saturated_not_refused():
    # a 5% base fee tripled, and a calm yield share of 99% (logit 1 + ln(99)/3 = 2.53): both
    # beyond their levers' action ranges; the rule asks for the edges instead
    rule = RulePolicy(ALL, RuleParams(fee_base=0.05, yield_share_calm=0.99))
    a = rule.act(obs_with(vol_short=0.3, vol_long=0.3, fund_coverage=0.0))
    assert natural(rule, obs_with(vol_short=0.3, vol_long=0.3))["liquidation_fee_rate"] == (
        pytest.approx(0.03, rel=1e-12)
    )
    assert a[0, ALL.index("alloc_yield")] == 1.0
    assert np.all(np.abs(a) <= 1.0)


def test_rule_margin_is_clipped_to_the_lever_range():
    rule = RulePolicy(ALL)
    assert natural(rule, obs_with(vol_short=0.0, vol_long=0.0))["mmr"] == pytest.approx(0.003)
    rule.reset(1)
    assert natural(rule, obs_with(vol_short=9.0, vol_long=9.0))["mmr"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("coverage_frac", "fee", "share"),
    [
        (0.02, 0.01, 0.1),
        (0.01, 0.02, 0.3),
        (0.005, 0.025, 0.4),
        (0.0, 0.03, 0.5),
        (0.05, 0.01, 0.1),
    ],
)
def test_rule_fees_rise_as_fund_coverage_falls(coverage_frac, fee, share):
    # shortfall s = clip(1 - coverage / 2%, 0, 1); fee = 1% x (1 + 2 s); share = 0.1 + 0.4 s
    obs = obs_with(vol_short=0.5, vol_long=0.5, fund_coverage=10 * coverage_frac)
    v = natural(RulePolicy(ALL), obs)
    assert v["liquidation_fee_rate"] == pytest.approx(fee, rel=1e-9)
    assert v["trading_fee_fund_share"] == pytest.approx(share, rel=1e-9)


def test_rule_moves_the_fund_to_stable_assets_when_volatility_rises():
    rule = RulePolicy(ALL)
    idx = [ALL.index(n) for n in ALLOCATION]
    calm = allocation_weights(rule.act(obs_with(vol_short=0.4, vol_long=0.4))[:, idx])[0]
    rule.reset(1)
    hot = allocation_weights(rule.act(obs_with(vol_short=1.0, vol_long=0.4))[:, idx])[0]
    # calm: stable logit 1, yield 1 - ln(0.7/0.3)/3, others -1
    z = np.array([1.0, 1.0 - math.log(0.7 / 0.3) / 3.0, -1.0, -1.0])
    expected = np.exp(3 * z) / np.exp(3 * z).sum()
    np.testing.assert_allclose(calm, expected, rtol=1e-12)
    assert calm[1] == pytest.approx(0.2990, abs=1e-4)  # 8.610 / (20.086 + 8.610 + 2 x 0.0498)
    assert hot[1] < 0.003 and hot[0] > 0.99


def test_rule_acts_on_a_subset_of_parameters():
    rule = RulePolicy(("mmr",))
    a = rule.act(obs_with(n=4, vol_short=0.6, vol_long=0.5))
    assert a.shape == (4, 1)
    assert PARAMS["mmr"].to_value(a[2, 0]) == pytest.approx(3 * 0.6 * SQRT_4H * 1.25, rel=1e-9)


def test_spec_overrides_do_not_leak_between_kinds():
    assert PolicySpec("rule", "rule").env_overrides() == {}
    assert PolicySpec("run", "trained", path="x").env_overrides() == {}
