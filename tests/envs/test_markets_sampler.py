"""The multi-market training distribution: days drawn around a scenario's markets."""

from __future__ import annotations

import numpy as np
import pytest

from fundgym.envs.market.sampler import (
    THIN_CRASH_BETA,
    THIN_DEPTH_SCALE,
    MarketsSamplerSettings,
    sample_markets_scenario,
)
from fundgym.envs.markets_env import MarketsInsuranceFundEnv, MarketsInsuranceFundVectorEnv
from fundgym.envs.markets_simulator import MarketsSimulator
from fundgym.envs.scenarios import load_scenario


@pytest.mark.parametrize("name", ["alt_contagion", "oct_10_2025_multi"])
def test_draws_keep_the_listing_and_vary_the_day(name: str) -> None:
    """200 draws: valid scenarios with the template's markets, shares and collateral; about
    ``crash_prob`` of them crash; only thin markets crash harder or on their own."""
    template = load_scenario(name)
    thin = [m.depth_scale < THIN_DEPTH_SCALE for m in template.markets]
    thin[0] = False
    crashes, idio = 0, 0
    for seed in range(200):
        sc = sample_markets_scenario(np.random.default_rng([seed, 1]), template)
        assert sc.market_names == template.market_names
        assert sc.collateral_names == template.collateral_names
        assert sc.market_oi_shares == pytest.approx(template.market_oi_shares)
        assert sc.horizon_minutes == template.horizon_minutes and sc.training
        crashes += sc.crash is not None
        for m, t, is_thin in zip(sc.markets[1:], template.markets[1:], thin[1:], strict=True):
            assert (m.initial, m.beta, m.depth_scale) == (t.initial, t.beta, t.depth_scale)
            if not is_thin:
                assert m.idio_crash is None and m.crash_beta is None
            elif sc.crash is not None:
                assert m.crash_beta is not None
                assert THIN_CRASH_BETA[0] <= m.crash_beta <= THIN_CRASH_BETA[1]
            idio += m.idio_crash is not None
    assert 0.6 <= crashes / 200 <= 0.8  # crash_prob 0.7: a binomial sd of 0.03
    assert idio > 0


def test_the_same_generator_draws_the_same_day_and_the_settings_bind() -> None:
    template = load_scenario("alt_contagion")
    a = sample_markets_scenario(np.random.default_rng(5), template)
    b = sample_markets_scenario(np.random.default_rng(5), template)
    assert a == b
    calm = MarketsSamplerSettings(crash_prob=0.0, idio_prob=0.0)
    for seed in range(30):
        sc = sample_markets_scenario(np.random.default_rng(seed), template, calm)
        assert sc.crash is None and all(m.idio_crash is None for m in sc.markets)
        assert all(m.crash_beta is None for m in sc.markets)
    with pytest.raises(ValueError, match="lists 0"):
        sample_markets_scenario(np.random.default_rng(0), load_scenario("volatile"))


def test_the_env_draws_each_episodes_day_from_its_seed() -> None:
    """Same seed, same day and trajectory; each exchange of a batch runs the batch's day, and
    exchange 0 is the one-exchange env seeded alike."""
    kw = {"n_accounts": 100, "sampler": MarketsSamplerSettings(crash_prob=1.0)}
    env = MarketsInsuranceFundEnv("alt_contagion", **kw)
    days = []
    for seed in (1, 2, 1):
        env.reset(seed=seed)
        days.append(env.sim.scenario)
        assert env.sim.scenario.name == "alt_contagion~sampled"
    assert days[0] == days[2] and days[0] != days[1]
    venv = MarketsInsuranceFundVectorEnv(3, "alt_contagion", **kw)
    obs, _ = venv.reset(seed=1)
    first, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs[0], first)
    assert venv.sim.scenario == env.sim.scenario
    action = np.tile(venv.default_action(), (3, 1))
    for _ in range(5):
        o, r, *_ = venv.step(action)
        so, sr, *_ = env.step(action[0])
        np.testing.assert_array_equal(o[0], so)
        assert r[0] == sr
    with pytest.raises(ValueError, match="MarketsSamplerSettings"):
        MarketsInsuranceFundEnv("alt_contagion", n_accounts=10, sampler={"crash_prob": 1.0})  # type: ignore[arg-type]


def test_a_new_day_must_list_the_same_markets() -> None:
    sim = MarketsSimulator(load_scenario("alt_contagion"), n_accounts=20)
    with pytest.raises(ValueError, match="must list the markets"):
        sim.reset(0, scenario=load_scenario("oct_10_2025_multi"))
