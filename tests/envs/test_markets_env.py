"""``fundgym/MarketsInsuranceFund-v0``: spaces, layouts, levers, determinism, reward (issue 17)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import fundgym  # noqa: F401 (registers the environments)
from fundgym.envs import MARKETS_ENV_ID
from fundgym.envs.core.vault import V_ACTIVE
from fundgym.envs.fund.portfolio import BUCKETS
from fundgym.envs.levers import LEVERS, MARKET_LEVERS
from fundgym.envs.markets_env import (
    ALLOCATION_LEVERS,
    EXCHANGE_LEVERS,
    EXCHANGE_OBS,
    MARKET_OBS,
    MarketsInsuranceFundEnv,
)
from fundgym.envs.rewards import combine
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.state import open_interest_usd
from tests.multi_market import short_alt_contagion


def _env(**kw: Any) -> MarketsInsuranceFundEnv:
    kw.setdefault("n_accounts", 200)
    return MarketsInsuranceFundEnv(kw.pop("scenario", short_alt_contagion()), **kw)


def test_passes_gymnasiums_checker_and_is_registered() -> None:
    check_env(_env(), skip_render_check=True)
    env = gym.make(MARKETS_ENV_ID, scenario=short_alt_contagion(), n_accounts=100)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_layouts_are_flat_and_named() -> None:
    env = _env(scenario=load_scenario("oct_10_2025_multi"))
    m = 9
    a = 3  # its collateral assets: USDe, wBETH, BNSOL
    assert env.action_space.shape == (7 + 3 * m + a,)
    assert env.observation_space.shape == (len(EXCHANGE_OBS) + len(MARKET_OBS) * m + a,) == (99,)
    names = env.action_names()
    assert names[:7] == EXCHANGE_LEVERS + ALLOCATION_LEVERS and names[7] == "market_mmr_mult[BTC]"
    assert names[7 + m - 1] == "market_mmr_mult[ENJ]" and names[7 + m] == "market_oi_cap_frac[BTC]"
    assert names[7 + 2 * m] == "market_fund_cap_frac[BTC]"
    assert names[7 + 3 * m - 1] == "market_fund_cap_frac[ENJ]"
    assert names[-a:] == tuple(
        f"collateral_haircut_frac[{x}]" for x in env.scenario.collateral_names
    )
    obs_names = env.observation_names()
    assert len(obs_names) == 99 and obs_names[len(EXCHANGE_OBS)] == "vol_ratio_log[BTC]"
    assert obs_names[11:15] == tuple(f"fund_weight_{b}" for b in BUCKETS)
    assert obs_names[-a - 3 : -a] == (
        "param_market_mmr_mult[ENJ]",
        "param_market_oi_cap_frac[ENJ]",
        "param_market_fund_cap_frac[ENJ]",
    )
    assert obs_names[-1] == f"param_collateral_haircut_frac[{env.scenario.collateral_names[-1]}]"
    # a segmented fund's segments are cash: no allocation levers, but the cap on what they
    # may lend one another (last in the observation); not under dydx_v4, which never lends
    seg = _env(scenario=load_scenario("oct_10_2025_multi"), fund_mode="segmented")
    assert seg.action_space.shape == (4 + 3 * m + a,)
    assert seg.action_names()[3:5] == ("segment_transfer_cap_frac", "market_mmr_mult[BTC]")
    assert seg.observation_space.shape == (len(EXCHANGE_OBS) + len(MARKET_OBS) * m + a + 1,)
    assert seg.observation_names()[-1] == "param_segment_transfer_cap_frac"
    dydx = _env(
        scenario=load_scenario("oct_10_2025_multi"),
        fund_mode="segmented",
        liquidation_mode="dydx_v4",
    )
    assert dydx.action_space.shape == (3 + 3 * m + a,)


def test_actions_map_through_the_lever_registry() -> None:
    env = _env()
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.full(env.action_space.shape, -1.0, dtype=np.float32))
    lv = info["levers"]
    for name in EXCHANGE_LEVERS:
        assert lv[name] == pytest.approx(LEVERS[name].low)
    assert np.allclose(lv["market_mmr_mult"], MARKET_LEVERS["market_mmr_mult"].low)
    assert np.allclose(lv["market_oi_cap_frac"], 0.25)
    assert np.allclose(env.sim.market_oi_cap_frac, 0.25)
    assert env.sim.risk.liquidation_fee_rate == pytest.approx(0.001)
    assert np.allclose(env.sim.market_mmr_mult, 0.5)
    _, _, _, _, info = env.step(np.ones(env.action_space.shape, dtype=np.float32))
    assert np.allclose(info["levers"]["market_mmr_mult"], 4.0)
    obs = env.core.observe(None)[0]
    assert obs[EXCHANGE_OBS.index("param_liquidation_fee_rate")] == pytest.approx(1.0)
    alt_param = len(EXCHANGE_OBS) + 2 * len(MARKET_OBS) + MARKET_OBS.index("param_market_mmr_mult")
    assert obs[alt_param] == pytest.approx(1.0)


def test_max_step_moves_each_lever_toward_its_target_a_step_a_decision() -> None:
    """``max_step`` 0.2: from the defaults to +1 in steps of 0.2, then held; 2: at once."""
    env = MarketsInsuranceFundEnv("alt_contagion", n_accounts=200, max_step=0.2)
    env.reset(seed=1)
    start = env.positions.copy()
    up = np.ones(env.action_space.shape, dtype=np.float32)
    for k in range(1, 12):
        env.step(up)
        np.testing.assert_allclose(env.positions, np.minimum(start + 0.2 * k, 1.0), atol=1e-12)
    change = np.abs(env.positions - start).sum()
    assert change > 0.0 and np.all(env.positions == 1.0)
    free = MarketsInsuranceFundEnv("alt_contagion", n_accounts=200)
    free.reset(seed=1)
    free.step(up)
    assert np.all(free.positions == 1.0)
    with pytest.raises(ValueError, match=r"max_step must lie in \(0, 2\].*got 0"):
        MarketsInsuranceFundEnv("alt_contagion", n_accounts=200, max_step=0)


def test_a_dead_band_holds_a_lever_whose_target_is_near_its_position() -> None:
    """``dead_band`` 0.3: a target 0.2 away holds the lever (no churn, no change cost); one
    0.5 away lands; with ``max_step`` too, a move beyond the band is limited as before."""
    env = MarketsInsuranceFundEnv("alt_contagion", n_accounts=200, dead_band=0.3)
    env.reset(seed=1)
    start = env.positions.copy()
    near = np.clip(start + np.where(np.arange(start.size) % 2 == 0, 0.2, -0.2), -1.0, 1.0)
    *_, info = env.step(near.astype(np.float64))
    np.testing.assert_array_equal(env.positions, start)
    assert info["reward_components"]["change"] == 0.0
    far = start.copy()
    far[0] = min(start[0] + 0.5, 1.0) if start[0] <= 0.5 else start[0] - 0.5
    far[7] = near[7]  # still within the band of its position
    *_, info = env.step(far)
    assert env.positions[0] == far[0] and env.positions[7] == start[7]
    assert info["reward_components"]["change"] == pytest.approx(0.5)
    limited = MarketsInsuranceFundEnv("alt_contagion", n_accounts=200, dead_band=0.3, max_step=0.2)
    limited.reset(seed=1)
    limited.step(far)
    assert limited.positions[0] == pytest.approx(start[0] + np.sign(far[0] - start[0]) * 0.2)
    for bad in (-0.1, 2.0, True):
        with pytest.raises(ValueError, match=r"dead_band must lie in \[0, 2\)"):
            MarketsInsuranceFundEnv("alt_contagion", n_accounts=200, dead_band=bad)


def test_same_seed_same_trajectory_and_truncation_at_the_horizon() -> None:
    def run(seed: int) -> tuple[list[float], np.ndarray[Any, Any], int]:
        env = _env()
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        rewards, n = [], 0
        while True:
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, r, term, trunc, _ = env.step(action)
            rewards.append(r)
            n += 1
            assert not term
            if trunc:
                return rewards, obs, n

    a, b, c = run(3), run(3), run(4)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert a[0] != c[0]
    assert a[2] == math.ceil(120 / 10)


def test_reward_is_the_registry_of_terms_and_cost_is_solvency() -> None:
    env = _env()
    env.reset(seed=5)
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    comps = {k: np.array([v]) for k, v in info["reward_components"].items()}
    assert reward == pytest.approx(float(combine(comps, env.weights)[0]))
    assert info["cost"] == info["reward_components"]["solvency"]
    assert info["capital_locked_usd"] > info["fund_pots_usd"].sum() > 0.0
    for name, total in (
        ("market_adl_volume_usd", "adl_volume_usd"),
        ("market_fund_paid_usd", "shortfall_usd"),
    ):
        assert info[name].shape == (3,)
        assert info[name].sum() == pytest.approx(info[total], abs=1e-6)


def test_bad_actions_are_refused() -> None:
    env = _env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(16,\)"):
        env.step(np.zeros(9))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(16, np.nan))


def _allocation_action(env: MarketsInsuranceFundEnv, bucket: str) -> np.ndarray[Any, Any]:
    """Levers at their defaults except the allocation: all logits at -1 but ``bucket`` at +1."""
    action = env._default_positions.astype(np.float32).copy()
    for name in ALLOCATION_LEVERS:
        action[env.action_names().index(name)] = 1.0 if name == f"alloc_{bucket}" else -1.0
    return action


def test_the_allocation_holds_the_chosen_listed_asset_and_its_wrong_way_risk() -> None:
    """The fund in the alt's own asset loses with the alt's crash; in stable it does not."""
    values = {}
    for bucket in ("stable", "volatile"):
        env = _env(fund_asset="ALT")
        env.reset(seed=2)
        _, _, _, _, info = env.step(_allocation_action(env, bucket))
        w = info["fund_weights"]
        assert w.sum() == pytest.approx(1.0) and w[BUCKETS.index(bucket)] > 0.99
        obs = env.core.observe(None)[0]
        assert obs[EXCHANGE_OBS.index(f"fund_weight_{bucket}")] == pytest.approx(
            w[BUCKETS.index(bucket)], rel=1e-6
        )
        start = float(env.sim.fund_pots_usd()[0].sum())
        truncated = False
        while not truncated:  # hold it through the alt's crash at minute 30
            _, _, _, truncated, info = env.step(_allocation_action(env, bucket))
        values[bucket] = float(env.sim.fund_pots_usd()[0].sum()) / start
        assert env.sim.max_ledger_error_usd < 1e-6
    alt = env.scenario.market_names.index("ALT")
    assert env.sim.fund_asset == alt
    alt_move = env.sim.last_index[0, alt] / env.scenario.markets[alt].initial
    assert alt_move < 0.5  # the alt fell more than half
    assert values["volatile"] < values["stable"] - 0.3  # wrong-way: the fund fell with it


def test_a_basket_fund_in_the_env_holds_both_assets() -> None:
    """fund_asset as a basket: the volatile bucket holds BTC and the alt; the alt's half falls."""
    env = _env(fund_asset={"BTC": 0.5, "ALT": 0.5})
    env.reset(seed=2)
    _, _, _, _, info = env.step(_allocation_action(env, "volatile"))
    assert info["fund_weights"][BUCKETS.index("volatile")] > 0.99
    assert (env.sim.state.fund.volatile_units > 0.0).all()
    start = float(env.sim.fund_pots_usd()[0].sum())
    truncated = False
    while not truncated:
        obs, _, _, truncated, info = env.step(_allocation_action(env, "volatile"))
        assert np.isfinite(obs).all()
    end = float(env.sim.fund_pots_usd()[0].sum()) / start
    assert env.sim.max_ledger_error_usd < 1e-6
    assert 0.3 < end < 0.9  # half the fund in an alt that fell more than half, half in BTC


def test_capping_the_alts_draw_keeps_the_shared_fund_for_the_others() -> None:
    """market_fund_cap_frac[ALT] at -1 (0): the fund pays the alt nothing; at +1 it pays it."""
    paid = {}
    for position in (-1.0, 1.0):
        env = _env()
        env.reset(seed=3)
        action = env._default_positions.astype(np.float32).copy()
        action[env.action_names().index("market_fund_cap_frac[ALT]")] = position
        total = np.zeros(env.n_markets)
        truncated = False
        while not truncated:
            obs, _, _, truncated, info = env.step(action)
            total += info["market_fund_paid_usd"]
        assert info["levers"]["market_fund_cap_frac"][2] == (0.0 if position < 0 else 1.0)
        at = (
            len(EXCHANGE_OBS) + 2 * len(MARKET_OBS) + MARKET_OBS.index("param_market_fund_cap_frac")
        )
        assert obs[at] == pytest.approx(position)
        paid[position] = total
    assert paid[-1.0][2] == 0.0 and paid[1.0][2] > 0.0


def test_a_deeper_haircut_leaves_less_margin_at_once() -> None:
    """The default action keeps the scenario's haircuts; +1 (90%) cuts asset holders' margin."""
    env = _env(scenario=load_scenario("oct_10_2025_multi"), n_accounts=300)
    env.reset(seed=0)
    scenario_cuts = [c.haircut_frac for c in env.scenario.collateral]
    np.testing.assert_allclose(env.sim.haircut[0], scenario_cuts, rtol=1e-12)
    eq0, _ = env.core.margins(None)
    action = env._default_positions.astype(np.float32).copy()
    action[-env.n_assets :] = 1.0
    _, _, _, _, info = env.step(action)
    np.testing.assert_allclose(info["levers"]["collateral_haircut_frac"], 0.9, rtol=1e-6)
    np.testing.assert_allclose(env.sim.haircut, 0.9, rtol=1e-6)
    holders = (env.sim.state.collateral_units[0] > 0.0).any(axis=1)
    assert holders.any()
    eq1, _ = env.core.margins(None)
    assert (eq1[0, holders] < eq0[0, holders]).mean() > 0.9  # their assets count for less
    assert env.core.observe(None)[0][-1] == pytest.approx(1.0)


def test_an_insolvent_exchange_ends_the_episode() -> None:
    """No fund and a 0.01% insolvency threshold: the alt's crash ends the episode early.

    The uncovered loss (socialised, unrecovered, ADL haircuts past the mark) crosses the
    threshold at the decision that terminates, not before; with the threshold at 10x open
    interest the same episode runs to its horizon.
    """
    lengths = {}
    for frac in (1e-4, 10.0):
        env = _env(fund_to_oi_frac=0.0, insolvency_frac=frac)
        env.reset(seed=3)
        n, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(env._default_positions.astype(np.float32))
            n += 1
            limit = frac * env._oi0
            assert terminated == (info["uncovered_usd"] > limit)
        lengths[frac] = (n, terminated, truncated)
    assert lengths[1e-4][1] and not lengths[1e-4][2]
    assert lengths[10.0][2] and not lengths[10.0][1]
    assert lengths[1e-4][0] < lengths[10.0][0]
    for bad in (0.0, -1.0, float("nan"), 11.0, True):
        with pytest.raises(ValueError, match="insolvency_frac must lie in"):
            _env(insolvency_frac=bad)


def test_the_segments_lend_the_alt_within_the_cap_the_action_sets() -> None:
    """Segmented on the alt's crash: at -1 (0, the default) no segment lends; at +1 (5% of the
    segments' starting total a tick) BTC's and ETH's segments lend the alt's, within the cap.

    ``info["fund_transfer_usd"]`` is what each segment lent less what it borrowed over the
    decision: its entries sum to zero.
    """
    lent = {}
    for position in (-1.0, 1.0):
        env = _env(fund_mode="segmented", fund_to_oi_frac=0.002)
        env.reset(seed=3)
        action = env._default_positions.astype(np.float32).copy()
        action[env.action_names().index("segment_transfer_cap_frac")] = position
        total = np.zeros(env.sim.n_pots)
        truncated = terminated = False
        while not (truncated or terminated):
            obs, _, terminated, truncated, info = env.step(action)
            assert abs(info["fund_transfer_usd"].sum()) < 1e-9
            total += np.maximum(info["fund_transfer_usd"], 0.0)
        cap = info["levers"]["segment_transfer_cap_frac"] * float(env._pots0.sum())
        assert env.sim.segment_transfer_cap_usd == pytest.approx(cap)
        assert obs[-1] == pytest.approx(position)
        assert env.sim.max_ledger_error_usd < 1e-6
        assert total.sum() <= cap * env.sim.t + 1e-9
        lent[position] = total.sum()
    assert lent[-1.0] == 0.0 and lent[1.0] > 0.0


def test_a_higher_alt_margin_liquidates_and_locks_more_at_once() -> None:
    """Raising one market's multiple raises its requirement from the next tick on.

    At 4x the alt's 3% MMR asks 12%, more than a 10x isolated position's margin: those are
    liquidated in the first decision, and the margin the alt's survivors lock rises.
    """
    seen: dict[float, dict[str, Any]] = {}
    for pos in (-1.0, 1.0):
        env = _env(n_accounts=2_000)
        env.reset(seed=7)
        action = np.ones(env.action_space.shape, dtype=np.float32)  # OI caps at 4x: loose
        action[:3] = 0.0
        action[env.action_names().index("market_mmr_mult[ALT]")] = pos  # 0.5x or 4x
        _, _, _, _, info = env.step(action)
        seen[pos] = info
    assert seen[1.0]["liquidation_volume_usd"] > seen[-1.0]["liquidation_volume_usd"]
    assert seen[1.0]["capital_locked_usd"] > seen[-1.0]["capital_locked_usd"]


def test_segmented_funds_are_observed_per_pot() -> None:
    env = _env(fund_mode="segmented")
    obs, _ = env.reset(seed=2)
    assert obs[EXCHANGE_OBS.index("worst_pot_left")] == pytest.approx(1.0)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert info["fund_pots_usd"].shape == (3,)


def test_decision_minutes_below_a_tick_is_refused() -> None:
    with pytest.raises(ValueError, match="decision_minutes"):
        _env(decision_minutes=0.5)


def test_a_tight_oi_cap_refuses_the_alts_arrivals() -> None:
    """The alt's OI cap at 0.25x its start (position -1): its open interest cannot regrow."""
    shares = {}
    for pos in (-1.0, 1.0):
        env = _env(n_accounts=1_000)
        env.reset(seed=3)
        action = np.ones(env.action_space.shape, dtype=np.float32)
        action[:3] = 0.0
        action[env.action_names().index("market_oi_cap_frac[ALT]")] = pos
        for _ in range(6):
            env.step(action)
        oi = open_interest_usd(env.sim.state, env.sim.last_index)[0]
        shares[pos] = oi[2] / env.sim.initial_open_interest_usd[0, 2]
    assert shares[-1.0] < shares[1.0]
    assert shares[-1.0] <= 1.0


@pytest.mark.parametrize(
    ("engine", "vault"),
    [({"liquidation_mode": "hyperliquid", "adl_policy": "hyperliquid"}, 0.02),
     ({"liquidation_mode": "dydx_v4", "adl_policy": "bitmex"}, 0.0)],
)  # fmt: skip
def test_the_levers_run_under_a_venue_engine_across_markets(
    engine: dict[str, str], vault: float
) -> None:
    """The engine the levers run under is the env's: Hyperliquid's with its vault, dYdX's."""
    env = _env(vault_to_oi_frac=vault, **engine)
    env.reset(seed=5)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(4):
        env.step(zero)
    risk = env.sim.risk
    assert (risk.liquidation_mode, risk.adl_policy) == tuple(engine.values())
    assert env.sim.vault_to_oi_frac == vault
    assert bool(env.sim.state.vault[0, V_ACTIVE] > 0.0) == (vault > 0.0)
    assert env.sim.max_ledger_error_usd < 1e-6


def test_an_unknown_engine_or_a_vault_without_one_is_refused() -> None:
    with pytest.raises(ValueError, match="liquidation_mode must be one of"):
        _env(liquidation_mode="ftx")
    with pytest.raises(ValueError, match="adl_policy must be one of"):
        _env(adl_policy="random")
    with pytest.raises(ValueError, match="vault_to_oi_frac"):
        _env(vault_to_oi_frac=0.02)  # the partial engine hands nobody to a vault


def test_the_shared_fund_s_puts_are_quoted_at_its_world_s_crash_rate():
    # The one-market env's rule (fundgym.envs.fund.portfolio.world_put_crash_rate_per_year):
    # the scenario as written, a real market's 2 a year; drawn days, the sampler's crash_prob
    # per episode (alt_contagion runs one day: 0.35 x 365); a number, as given.
    from fundgym.envs.market.sampler import MarketsSamplerSettings
    from fundgym.envs.markets_env import MarketsInsuranceFundEnv

    def rate(**kw: Any) -> float:
        env = MarketsInsuranceFundEnv("alt_contagion", n_accounts=16, **kw)
        return float(env.core.sim.allocation.put_crash_rate_per_year)

    horizon = MarketsInsuranceFundEnv("alt_contagion", n_accounts=16).scenario.horizon_minutes
    assert rate() == 2.0
    drawn = rate(sampler=MarketsSamplerSettings(crash_prob=0.35))
    assert drawn == 0.35 * (525_600.0 / horizon)
    assert rate(put_crash_rate_per_year=12.0) == 12.0
    with pytest.raises(ValueError, match=r"put_crash_rate_per_year must be .* got -1"):
        rate(put_crash_rate_per_year=-1)
