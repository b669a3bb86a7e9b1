"""The Gymnasium environment: the API contract, determinism, the vector twin, bad input."""

import gymnasium as gym
import numba
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import fundgym
from fundgym.envs.controls import PARAMS
from fundgym.envs.exchange_env import (
    OBS_NAMES,
    FundControlCore,
    InsuranceFundEnv,
    InsuranceFundVectorEnv,
    make_config,
)
from fundgym.envs.render import RenderFrame, render_ansi
from fundgym.envs.schema import SchemaError

SMALL = {"scenario": "venue_flash_wick", "n_accounts": 128}  # 180 min: 18 decisions


def rollout(env, seed, n, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for k in range(n):
        obs, r, term, trunc, info = env.step(actions[k])
        out.append((obs, r, term, trunc, info["fund_balance_usd"]))
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return out


def test_registered_and_made_with_keyword_arguments():
    assert fundgym.ENV_ID in gym.registry
    env = gym.make(fundgym.ENV_ID, **SMALL)
    assert env.action_space.shape == (len(PARAMS),)
    assert env.observation_space.shape == (len(OBS_NAMES),)


def test_gymnasium_env_checker_passes_render_modes_included():
    # Made by id, so the checker also builds one environment per declared render mode.
    env = gym.make(fundgym.ENV_ID, **SMALL, render_mode="ansi")
    check_env(env.unwrapped)


def test_same_seed_same_rollout():
    acts = np.random.default_rng(0).uniform(-1, 1, (25, len(PARAMS))).astype(np.float32)
    a = rollout(InsuranceFundEnv(**SMALL), 3, 25, acts)
    b = rollout(InsuranceFundEnv(**SMALL), 3, 25, acts)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            np.testing.assert_array_equal(x[0], y[0])
            assert x[1:] == y[1:]
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_equals_single_envs_step_for_step_across_autoreset(mode):
    n, steps, seed = 3, 25, 7  # 18 decisions per episode: the autoreset happens inside
    vec = gym.make_vec(
        fundgym.ENV_ID, n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **SMALL
    )
    acts = np.random.default_rng(1).uniform(-1, 1, (steps, n, len(PARAMS))).astype(np.float32)
    singles = [InsuranceFundEnv(**SMALL) for _ in range(n)]
    vobs, _ = vec.reset(seed=seed)
    sobs = [s.reset(seed=seed + i)[0] for i, s in enumerate(singles)]
    np.testing.assert_array_equal(vobs, np.stack(sobs))
    ended = 0
    pending = [False] * n
    for k in range(steps):
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(acts[k])
        for i, s in enumerate(singles):
            if pending[i]:  # next-step: this step is the reset; the action is not used
                (o, _), r, te, tr = s.reset(), 0.0, False, False
                pending[i] = False
            else:
                o, r, te, tr, _ = s.step(acts[k, i])
            assert vrew[i] == r and vterm[i] == te and vtrunc[i] == tr, f"step {k} env {i}"
            if te or tr:
                ended += 1
                if mode is AutoresetMode.SAME_STEP:  # final obs in infos, the new first
                    np.testing.assert_array_equal(vinfo["final_obs"][i], o)
                    o, _ = s.reset()
                else:  # the last obs now, the reset at the next step
                    pending[i] = True
            np.testing.assert_array_equal(vobs[i], o, err_msg=f"step {k} env {i}")
    assert ended == n  # every exchange crossed an episode boundary


def test_vector_env_on_two_threads_equals_one_bit_for_bit(monkeypatch):
    # Threads step exchanges (the tick) and read their books (the observation) in parallel;
    # every exchange's arithmetic is its own, so observations, rewards and infos are equal.
    # 11 exchanges: advance_parallel's runs of them (PARALLEL_CHUNKS = 8) hold one or two each.
    n, steps = 11, 25  # across the autoreset
    acts = np.random.default_rng(2).uniform(-1.2, 1.2, (steps, n, len(PARAMS)))
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("FUNDGYM_THREADS", threads)
        vec = InsuranceFundVectorEnv(num_envs=n, **SMALL)
        out = [vec.reset(seed=5)[0]]
        for k in range(steps):
            out.append(vec.step(acts[k]))
        runs.append((vec.core.sim.threads, out))
    (one, a), (two, b) = runs
    assert one == 1 and two == min(2, numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(a[0], b[0])
    for (oa, ra, ta, tra, ia), (ob, rb, tb, trb, ib) in zip(a[1:], b[1:], strict=True):
        for x, y in ((oa, ob), (ra, rb), (ta, tb), (tra, trb)):
            np.testing.assert_array_equal(x, y)
        assert ia.keys() == ib.keys()
        for key, value in ia.items():
            if isinstance(value, dict):
                for sub, column in value.items():
                    np.testing.assert_array_equal(column, ib[key][sub], err_msg=key)
            else:
                np.testing.assert_array_equal(value, ib[key], err_msg=key)


def test_nan_action_is_a_clear_error():
    env = InsuranceFundEnv(**SMALL)
    env.reset(seed=0)
    bad = np.zeros(len(PARAMS), dtype=np.float32)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="action must be finite, got nan"):
        env.step(bad)
    with pytest.raises(ValueError, match="action must have shape"):
        env.step(np.zeros(3, dtype=np.float32))


def test_info_carries_the_documented_keys():
    env = InsuranceFundEnv(**SMALL)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    for key in (
        "fund_balance_usd",
        "open_interest_usd",
        "liquidation_volume_usd",
        "shortfall_usd",
        "adl_volume_usd",
        "socialized_loss_usd",
        "fee_revenue_usd",
        "params",
        "reward_components",
        "cost",
    ):
        assert key in info
    assert set(info["reward_components"]) == {
        "revenue",
        "capital_cost",
        "solvency",
        "margin_cost",
        "lost_demand",
        "change",
        "fund_pnl",
        "fund_shortfall",
    }
    assert info["cost"] == info["reward_components"]["solvency"]
    assert 0.003 <= info["params"]["mmr"] <= 0.10
    w = [info["params"][f"alloc_{b}"] for b in ("stable", "yield", "volatile", "hedge")]
    assert sum(w) == pytest.approx(1.0)


def test_rate_limit_and_margin_notice():
    # MMR from its default (3%) toward the top of its range: the position moves at most
    # max_step = 0.2 per decision, and the increase waits 30 minutes = 3 decisions.
    env = InsuranceFundEnv(scenario="calm", n_accounts=64, controlled=("mmr",))
    env.reset(seed=0)
    start = PARAMS["mmr"].to_position(0.03)
    seen = []
    for _ in range(5):
        _, _, _, _, info = env.step(np.ones(1, dtype=np.float32))
        seen.append(info["params"]["mmr"])
    assert seen[0] == pytest.approx(0.03) and seen[2] == pytest.approx(0.03)  # in notice
    assert seen[3] > 0.03  # the first increase arrives after three decisions
    assert PARAMS["mmr"].to_position(seen[3]) <= start + 0.2 * 4 + 1e-9
    # a decrease applies at once
    _, _, _, _, info = env.step(-np.ones(1, dtype=np.float32))
    assert info["params"]["mmr"] < seen[-1]


def test_insolvency_terminates_the_episode():
    # 19 May 2021 (-30% in a day) leaves an unfunded exchange with bad debt it socialises;
    # Black Thursday's crash did too before traders carried free collateral (issue 16).
    env = InsuranceFundEnv(
        scenario="may_19_2021",
        n_accounts=256,
        fund_to_oi_frac=0.0,
        insolvency_frac=1e-6,
        fallback="socialize",
        controlled=("liquidation_fee_rate",),
    )
    env.reset(seed=0)
    terminated = False
    for _ in range(300):
        _, _, terminated, truncated, _ = env.step(-np.ones(1, dtype=np.float32))
        if terminated or truncated:
            break
    assert terminated


def test_config_file_and_overrides(tmp_path):
    cfg = make_config("configs/env/default.yaml", n_accounts=64)
    assert cfg.scenario == "training" and cfg.n_accounts == 64 and cfg.reward.solvency == 20.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("env:\n  decision_minutes: -5\n")
    with pytest.raises(SchemaError, match=r"bad\.yaml: decision_minutes = -5"):
        make_config(bad)
    with pytest.raises(SchemaError, match=r"controlled.*unknown parameter 'leverage'"):
        make_config(controlled=["leverage"])


def test_a_margin_increase_forces_liquidations_when_it_arrives():
    # Procyclicality: MMR pushed from 3% to the top of its range reaches open positions only
    # after the 30-minute notice; the decision it arrives, accounts that were safe a moment
    # ago are liquidated, with no price move needed.
    env = InsuranceFundEnv(scenario="calm", n_accounts=512, controlled=("mmr",), max_step=2.0)
    env.reset(seed=0)
    hold = np.array([PARAMS["mmr"].to_position(0.03)], dtype=np.float32)
    quiet = [env.step(hold)[4]["liquidation_volume_usd"] for _ in range(3)]
    volumes = [env.step(np.ones(1, dtype=np.float32))[4] for _ in range(4)]
    mmr = [info["params"]["mmr"] for info in volumes]
    liq = [info["liquidation_volume_usd"] for info in volumes]
    assert mmr[:2] == [pytest.approx(0.03)] * 2 and mmr[3] == pytest.approx(0.10)
    arrival = next(i for i, m in enumerate(mmr) if m > 0.03)
    assert liq[arrival] > 10 * (max(quiet) + 1.0)


def test_first_observation_of_an_episode_does_not_leak_the_last_one():
    env = InsuranceFundEnv(scenario="oracle_manipulation", n_accounts=64)
    first, _ = env.reset(seed=2)
    done = False
    while not done:
        _, _, te, tr, _ = env.step(env.action_space.sample())
        done = te or tr
    again, _ = env.reset(seed=2)
    np.testing.assert_array_equal(first, again)
    gap = OBS_NAMES.index("oracle_gap_pct")
    assert again[gap] == 0.0


def test_thinness_is_open_interest_over_the_book_depth_per_pct():
    # Hand-worked: log10(OI / depth per 1%) from the simulated book itself. Its normal depth
    # is the scenario's normal_usd_per_pct, or, where the scenario sets depth.oi_to_depth, the
    # exchange's starting open interest over that ratio (oct_10_2025: 225, so the reading at
    # reset is log10(225) = 2.352 while the open interest is still the starting one).
    k = OBS_NAMES.index("oi_to_depth_log10")
    for name in ("oracle_manipulation", "oct_10_2025"):
        env = InsuranceFundEnv(scenario=name, n_accounts=256)
        obs, _ = env.reset(seed=4)
        sim = env.unwrapped.core.sim
        book = sim.scenarios[0].depth
        q, price = sim.state.size[0, :, 0], sim.last_index[0]
        oi = 0.5 * np.abs(q).sum() * price
        if book.oi_to_depth is None:
            depth = book.normal_usd_per_pct
        else:
            depth = sim.initial_open_interest_usd[0] / book.oi_to_depth
            assert obs[k] == pytest.approx(np.log10(book.oi_to_depth), abs=1e-6)
        assert obs[k] == pytest.approx(np.log10(oi / depth), abs=1e-6)
    # After a decision it reads the book in force, collapsed or not.
    obs, *_ = env.step(np.zeros(len(PARAMS), dtype=np.float32))
    info_oi = 0.5 * np.abs(sim.state.size[0]).sum() * env.unwrapped.core.last_mark[0]
    expected = np.log10(info_oi / sim.last_depth_usd_per_pct[0])
    assert obs[k] == pytest.approx(expected, abs=1e-6)
    assert sim.last_depth_usd_per_pct[0] == pytest.approx(depth * sim.last_depth_mult[0], rel=0.5)


def test_sampler_settings_reach_the_training_draws():
    from fundgym.envs.market.sampler import THIN_DEPTH_USD_PER_PCT

    vec = InsuranceFundVectorEnv(num_envs=4, n_accounts=32, sampler={"thin_prob": 1.0})
    vec.reset(seed=0)
    depths = [sc.depth.normal_usd_per_pct for sc in vec.core.sim.scenarios]
    assert all(d <= THIN_DEPTH_USD_PER_PCT[1] for d in depths)
    vec = InsuranceFundVectorEnv(
        num_envs=4, n_accounts=32, sampler={"thin_prob": 0.0, "crash_prob": 0.0}
    )
    vec.reset(seed=0)
    assert all(sc.crash is None for sc in vec.core.sim.scenarios)
    assert all(sc.depth.normal_usd_per_pct >= 3e7 for sc in vec.core.sim.scenarios)
    with pytest.raises(SchemaError, match=r"sampler\.thin_prob = 1\.5: a number in \[0\.0, 1\.0\]"):
        make_config(sampler={"thin_prob": 1.5})


def test_gym_make_from_a_config_file_with_overrides():
    env = gym.make(
        fundgym.ENV_ID,
        config="configs/env/default.yaml",
        n_accounts=64,
        scenario="venue_flash_wick",
    )
    cfg = env.unwrapped.config
    assert cfg.n_accounts == 64 and cfg.scenario == "venue_flash_wick"
    assert cfg.reward.solvency == 20.0 and cfg.margin_notice_minutes == 30.0
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_binance_margin_tiers_set_the_requirement_and_the_capital_locked():
    from fundgym.envs.core.margin import maintenance_requirement
    from fundgym.envs.core.params import MarginTiers

    env = InsuranceFundVectorEnv(
        num_envs=2,
        scenario="calm",
        n_accounts=256,
        fixed={"mmr": 0.004, "imr_multiple": 2.0},
        margin_tiers="binance_btcusdt_2021",
    )
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.zeros((2, 9)))
    sim = env.core.sim
    assert sim.risk.tiers == MarginTiers.binance_btcusdt_2021()
    notional = np.abs(sim.state.size[:, :, 0]) * info["mark_price"][:, None]
    assert notional.max() > 5e4  # some positions sit above the first bracket
    tiered = maintenance_requirement(notional, 0.004, MarginTiers.binance_btcusdt_2021())
    margin = info["capital_locked_usd"] - info["fund_balance_usd"]
    np.testing.assert_allclose(margin, tiered.sum(axis=1), rtol=1e-9)
    assert (margin > 0.004 * notional.sum(axis=1)).all()


# ---- rendering ----


def test_render_mode_is_accepted_by_id_and_checked():
    # SB3 and the zoo make environments by id with render_mode="rgb_array": an argument of
    # the environment, never a config key.
    env = gym.make(fundgym.ENV_ID, render_mode="rgb_array", **SMALL)
    assert env.render_mode == "rgb_array" and env.metadata["render_fps"] == 4
    with pytest.raises(ValueError, match=r"render_mode = 'rgb': not one of \[None, 'ansi', 'rgb_a"):
        InsuranceFundEnv(render_mode="rgb", **SMALL)
    with pytest.raises(SchemaError, match="render_mode"):
        make_config(render_mode="ansi")


def test_ansi_render_draws_the_state_after_each_reset_and_step():
    env = InsuranceFundEnv(render_mode="ansi", **SMALL)
    env.reset(seed=0)
    core = env.core
    first = env._history.frames[-1]
    assert (first.minute, first.liquidated_usd, first.insolvent) == (0.0, 0.0, False)
    assert first.index_price == first.mark_price == first.oracle_price == core.sim.last_index[0]
    for _ in range(2):
        _, _, term, _, info = env.step(np.zeros(len(PARAMS), dtype=np.float32))
    frame = env._history.frames[-1]
    # Two decisions of 10 one-minute ticks; every number is what info reported.
    assert frame == RenderFrame(
        minute=20.0,
        index_price=info["index_price"],
        mark_price=info["mark_price"],
        oracle_price=float(core.last_oracle[0]),
        fund_usd=info["fund_balance_usd"],
        open_interest_usd=info["open_interest_usd"],
        liquidated_usd=info["liquidation_volume_usd"],
        params=info["params"],
        insolvent=term,
        scenario="venue_flash_wick",
    )
    line = env.render()
    assert line == render_ansi(frame) and "\n" not in line
    env.reset(seed=1)
    assert len(env._history) == 1  # a new episode, a new history


def test_rgb_render_draws_the_episode_so_far():
    env = InsuranceFundEnv(render_mode="rgb_array", **SMALL)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before render\(\)"):
        env.render()
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(len(PARAMS), dtype=np.float32))
    image = env.render()
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    assert (image != image[0, 0]).any(axis=-1).mean() > 0.01  # drawn, not a blank frame
    assert len(env._history) == 4  # the reset and three decisions


def test_no_render_mode_builds_no_frame(monkeypatch):
    def refuse(*_):
        raise AssertionError("a frame was built without a render mode")

    monkeypatch.setattr(FundControlCore, "frames", refuse)
    env = InsuranceFundEnv(**SMALL)
    env.reset(seed=0)
    env.step(np.zeros(len(PARAMS), dtype=np.float32))
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert env.render() is None


# ---- observations are finite by construction, or an error ----


def test_a_non_finite_raw_observation_names_its_column_and_exchange():
    # Before 0.4.0, np.nan_to_num showed a NaN as 0 and an infinity as +-10.
    env = InsuranceFundEnv(**SMALL)
    env.reset(seed=0)
    env.core.var_short[0] = np.nan  # a corrupt state, as a simulator defect would leave it
    with pytest.raises(FloatingPointError, match=r"'vol_short' \(column 0\) of exchange 0 is nan"):
        env.step(np.zeros(len(PARAMS), dtype=np.float32))
    vec = InsuranceFundVectorEnv(3, **SMALL)
    vec.reset(seed=0)
    vec.core.last_funding[2] = np.inf
    with pytest.raises(FloatingPointError, match=r"'funding_per_mille' \(column 6\) of exchange 2"):
        vec.core.observe()


def test_thinness_of_a_book_without_depth_is_finite():
    # Depth 0 would make OI / depth infinite; the depth is read as $1 per 1% instead, so the
    # column is log10(OI / $1), hand-worked from the book, and the clip to +-10 still holds.
    k = OBS_NAMES.index("oi_to_depth_log10")
    vec = InsuranceFundVectorEnv(2, **SMALL)
    obs, _ = vec.reset(seed=4)
    sim = vec.core.sim
    sim.last_depth_usd_per_pct[1] = 0.0
    again = vec.core.observe()
    oi = 0.5 * np.abs(sim.state.size[1]).sum() * sim.last_index[1]
    assert 4.0 < np.log10(oi) < 10.0
    assert again[1, k] == pytest.approx(np.log10(oi), abs=1e-9)
    np.testing.assert_array_equal(again[0].astype(np.float32), obs[0])  # the other: untouched


def test_info_reports_the_decisions_largest_tick_of_liquidations():
    # The decision's compiled block, captured as it returns: the info's peak is the largest of
    # its ticks' liquidated notional, and the info's sum is their sum.
    env = InsuranceFundVectorEnv(num_envs=2, scenario="oct_10_2025", n_accounts=256)
    env.reset(seed=4)  # 7 decisions with liquidations (free collateral keeps most accounts)
    sim = env.core.sim
    blocks = []
    advance = sim.advance

    def capture(*args, **kwargs):
        blocks.append(advance(*args, **kwargs))
        return blocks[-1]

    sim.advance = capture
    action = np.zeros((2, *env.single_action_space.shape), dtype=np.float32)
    liquidating = 0  # decisions with liquidations seen (the crash comes late in the day)
    for _ in range(env.core.n_decisions.min() - 1):
        _, _, _, _, info = env.step(action)
        per_tick = blocks[-1].event("liquidation_volume_usd")
        np.testing.assert_array_equal(info["peak_tick_liquidation_volume_usd"], per_tick.max(0))
        np.testing.assert_allclose(info["liquidation_volume_usd"], per_tick.sum(0), rtol=1e-12)
        liquidating += bool((per_tick > 0.0).any())
        if liquidating == 5:
            break
    assert liquidating == 5


def test_the_fund_s_external_pnl_info_sums_to_what_its_allocation_earned():
    # A fund moved into yield and puts on Black Thursday: every decision's
    # info["fund_external_pnl_usd"] summed over the episode is the portfolio's own external
    # PnL (yield, option marks and payoffs, less the costs of moving it), to rounding; a fund
    # held in stable assets earns exactly 0 at every decision.
    levers = ("alloc_stable", "alloc_yield", "alloc_hedge")
    kw = {"scenario": "black_thursday_2020", "n_accounts": 128, "horizon_minutes": 600.0}
    for action, moves in (((0.0, 1.0, 1.0), True), ((1.0, -1.0, -1.0), False)):
        env = InsuranceFundEnv(controlled=levers, **kw)
        env.reset(seed=0)
        pf = env.core.sim.portfolio
        start = float(pf.external_pnl_usd[0])
        earned = []
        done = False
        while not done:
            _, _, term, trunc, info = env.step(np.array(action, dtype=np.float32))
            earned.append(info["fund_external_pnl_usd"])
            done = term or trunc
        total = float(pf.external_pnl_usd[0]) - start
        assert sum(earned) == pytest.approx(total, rel=1e-12, abs=1e-9)
        assert (total != 0.0) is moves
        if not moves:
            assert all(x == 0.0 for x in earned)


def test_fund_shortfall_term_prices_what_the_fund_paid_out():
    # At a 0.5% MMR Black Thursday leaves liquidations below bankruptcy that the fund pays:
    # the term is that bad debt in basis points of the starting open interest, and its
    # weight moves the reward by exactly weight x term, every decision, nothing else.
    kw = {"scenario": "black_thursday_2020", "n_accounts": 128, "fixed": {"mmr": 0.005}}
    plain = InsuranceFundEnv(**kw)
    priced = InsuranceFundEnv(**kw, reward={"fund_shortfall": 2.0})
    plain.reset(seed=0)
    priced.reset(seed=0)
    oi0 = float(plain.core.initial_open_interest_usd[0])
    hold = np.zeros(plain.action_space.shape, dtype=np.float32)
    paid = 0.0
    while True:
        _, r0, term, trunc, i0 = plain.step(hold)
        _, r2, _, _, i2 = priced.step(hold)
        term_bps = i0["reward_components"]["fund_shortfall"]
        assert term_bps == pytest.approx(i0["shortfall_usd"] * 1e4 / oi0, rel=1e-12, abs=0.0)
        assert i2["reward_components"] == i0["reward_components"]
        assert r2 == pytest.approx(r0 - 2.0 * term_bps, rel=1e-12, abs=1e-12)
        paid += i0["shortfall_usd"]
        if term or trunc:
            break
    assert paid > 0.0  # the test saw the fund pay
