"""The environment's top-up settings: they reach the simulator and its ``info`` reports them."""

import numpy as np
import pytest

from fundgym.agents.policies import parse_spec
from fundgym.agents.policies.registry import SpecError
from fundgym.envs.exchange_env import InsuranceFundVectorEnv


def test_info_reports_each_decisions_top_ups_and_they_add_up_to_the_funds() -> None:
    # No fund and top-ups of 0.01% of open interest, at most 2: the manipulated market's bad
    # debt empties each one. The decisions' counts and amounts sum to what the fund holds.
    env = InsuranceFundVectorEnv(
        num_envs=2,
        scenario="oracle_manipulation",
        n_accounts=64,
        fund_to_oi_frac=0.0,
        fund_injection_frac=1e-4,
        fund_injection_max=2,
        fallback="socialize",
    )
    env.reset(seed=3)
    counts, amounts = [], []
    for _ in range(40):
        _, _, term, trunc, info = env.step(np.zeros(env.action_space.shape))
        counts.append(info["fund_injections"])
        amounts.append(info["fund_injection_usd"])
        if (term | trunc).any():
            break
    pf = env.core.sim.portfolio
    np.testing.assert_array_equal(np.sum(counts, axis=0), pf.injections)
    np.testing.assert_allclose(np.sum(amounts, axis=0), pf.injected_usd, rtol=1e-12)
    assert (pf.injections == 2).all()
    size = 1e-4 * env.core.initial_open_interest_usd
    np.testing.assert_array_equal(pf.injection_usd, size)
    env.close()


def test_a_static_spec_names_top_ups_and_a_preset_keeps_none() -> None:
    spec = parse_spec("static:binance,fund_injection_frac=0.01,fund_injection_max=2")
    assert spec.env_overrides()["fund_injection_frac"] == 0.01
    assert spec.env_overrides()["fund_injection_max"] == 2
    assert "fund top-ups of 1.00% of open interest, at most 2" in spec.note
    plain = parse_spec("static:binance").env_overrides()
    assert (plain["fund_injection_frac"], plain["fund_injection_max"]) == (0.0, 0)
    custom = parse_spec("static:mmr=0.05").env_overrides()
    assert "fund_injection_frac" not in custom  # keeps the environment's


def test_bad_top_up_specs_are_refused_naming_the_setting() -> None:
    with pytest.raises(SpecError, match=r"fund_injection_frac = 11.0 is outside \[0, 10\]"):
        parse_spec("static:binance,fund_injection_frac=11")
    with pytest.raises(SpecError, match=r"fund_injection_max = 1.5 is not a whole number"):
        parse_spec("static:binance,fund_injection_max=1.5")
