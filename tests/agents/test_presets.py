"""A venue preset's engine: what it runs under besides its levers, in one description."""

import pytest

from fundgym.agents.evaluate.backends import static_spec
from fundgym.agents.policies import PRESETS, parse_spec
from fundgym.agents.policies.base import SpecError
from fundgym.agents.policies.presets import ENGINE_KEYS, MARGIN_TIERS, Engine, env_engine


def test_the_engine_names_the_environment_settings_a_preset_sets():
    assert ENGINE_KEYS == (
        "liquidation_mode",
        "adl_policy",
        "margin_tiers",
        "fund_to_oi_frac",
        "vault_to_oi_frac",
    )
    assert MARGIN_TIERS == ("none", "binance_btcusdt_2021")
    hl = PRESETS["hyperliquid"].engine
    assert hl == Engine("hyperliquid", "hyperliquid", "none", 0.0, 0.022)
    assert hl.text() == (
        "liquidation_mode=hyperliquid,adl_policy=hyperliquid,margin_tiers=none,"
        "fund_to_oi_frac=0.0,vault_to_oi_frac=0.022"
    )
    assert hl.describe() == (
        "hyperliquid liquidations, hyperliquid ADL, fund 0.00% of OI, vault 2.20% of OI"
    )
    assert PRESETS["binance"].engine.describe() == (
        "binance liquidations, bitmex ADL, binance_btcusdt_2021 margin tiers, fund 4.50% of OI"
    )


def test_env_engine_reads_settings_and_takes_the_rest_from_the_defaults():
    # EnvConfig's defaults: partial liquidations, BitMEX ADL, flat MMR, a 2% fund, no vault
    assert env_engine({}) == Engine("partial", "bitmex", "none", 0.02, 0.0)
    got = env_engine({"liquidation_mode": "bitmex", "fund_to_oi_frac": 0.1, "n_accounts": 8})
    assert got == Engine("bitmex", "bitmex", "none", 0.1, 0.0)


def test_a_static_spec_with_a_presets_engine_runs_the_presets_environment():
    for name, preset in PRESETS.items():
        ours = static_spec(preset.values, preset.engine).env_overrides()
        theirs = parse_spec(f"static:{name}").env_overrides()
        # the preset also names its fund top-ups (none); the engine leaves them to the env
        for key in ("fund_injection_frac", "fund_injection_max"):
            assert theirs.pop(key) == 0
        assert ours == theirs, name
    # without an engine, the environment's own settings stay (only the levers and flat MMR)
    plain = static_spec(PRESETS["dydx"].values).env_overrides()
    assert set(plain) == {"margin_tiers", "fixed"} and plain["margin_tiers"] == "none"


def test_the_spec_text_of_a_set_with_an_engine_parses_back_to_the_same_environment():
    # best_static's spec text names its engine; pasting it back as --policy runs the same env
    for name, preset in PRESETS.items():
        spec = static_spec(preset.values, preset.engine)
        again = parse_spec(spec.name)
        assert again.values == spec.values, name
        assert again.env_overrides() == spec.env_overrides(), name
    # an engine choice overrides a preset's, and a wrong one is named with what is allowed
    over = parse_spec("static:binance,liquidation_mode=dydx_v4,adl_policy=hyperliquid")
    assert (over.liquidation_mode, over.adl_policy) == ("dydx_v4", "hyperliquid")
    assert over.margin_tiers == "binance_btcusdt_2021"
    assert "overridden: liquidation_mode dydx_v4, adl_policy hyperliquid" in over.note
    with pytest.raises(SpecError, match=r"liquidation_mode='fast' is not one of partial, "):
        parse_spec("static:mmr=0.05,liquidation_mode=fast")
    with pytest.raises(SpecError, match=r"margin_tiers='tiered' is not one of none, binance"):
        parse_spec("static:margin_tiers=tiered")
