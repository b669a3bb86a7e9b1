"""The batched twin under Gymnasium 1.x's vector conventions.

Autoreset modes, ``reset_mask``, ``_key`` info masks, ``final_obs``/``final_info``, rendering,
``make_vec`` in all three vectorization modes and Gymnasium's vector wrappers. The reference
throughout is what ``gymnasium.vector.SyncVectorEnv`` returns over single environments: the
batched twin must return the same, bit for bit.
"""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import vector as vw

import fundgym
from fundgym.envs.controls import PARAMS
from fundgym.envs.exchange_env import InsuranceFundEnv, InsuranceFundVectorEnv

SMALL = {"scenario": "venue_flash_wick", "n_accounts": 64}  # 180 min: 18 decisions
SHORT = {**SMALL, "horizon_minutes": 60.0}  # 6 decisions
N_ACT = len(PARAMS)


def colours(image):
    """The distinct RGB colours of an image, each packed into one int."""
    rgb = image.astype(np.uint32)
    return np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])


def actions(steps, n, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (steps, n, N_ACT)).astype(np.float32)


def assert_same(a, b, where):
    """Equal bit for bit: arrays, object arrays (obs or None or str), nested info dicts."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert b.dtype == object and a.shape == b.shape, where
        for x, y in zip(a, b, strict=True):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y, err_msg=where)
                assert x.dtype == y.dtype, where
            else:
                assert x == y, (where, x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, (where, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=where)


# ---- the reference: SyncVectorEnv over single environments ----


def test_next_step_is_exact_when_a_decision_is_not_whole_population_steps():
    # 7-minute decisions over a 5-minute population clock: a reset exchange sits out one
    # decision while the others trade; its population still steps at minutes 0, 5, 10... of
    # its own episode, as it would alone.
    kw = {**SHORT, "decision_minutes": 7.0, "population_minutes": 5.0}
    n, steps = 3, 22  # 60 min in 7-minute decisions: 9 per episode, two ends each
    mode = AutoresetMode.NEXT_STEP
    twin = gym.make_vec(
        fundgym.ENV_ID, n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kw
    )
    sync = gym.make_vec(
        fundgym.ENV_ID, n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kw
    )
    assert_same(twin.reset(seed=3), sync.reset(seed=3), "reset")
    acts = actions(steps, n, seed=5)
    ends = 0
    for k in range(steps):
        got, want = twin.step(acts[k]), sync.step(acts[k])
        for name, x, y in zip(("obs", "reward", "term", "trunc", "info"), got, want, strict=True):
            assert_same(x, y, f"step {k} {name}")
        ends += int((got[2] | got[3]).sum())
    assert ends >= 2 * n


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_batched_twin_returns_what_sync_vector_env_returns_bit_for_bit(mode):
    n, steps = 3, 40  # two episode ends per exchange (18 decisions each)
    twin = gym.make_vec(
        fundgym.ENV_ID, n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **SMALL
    )
    sync = gym.make_vec(
        fundgym.ENV_ID,
        n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
        **SMALL,
    )
    assert twin.metadata["autoreset_mode"] is sync.metadata["autoreset_mode"] is mode
    assert_same(twin.reset(seed=7), sync.reset(seed=7), "reset")
    acts = actions(steps, n)
    ends = 0
    for k in range(steps):
        got, want = twin.step(acts[k]), sync.step(acts[k])
        names = ("obs", "reward", "terminated", "truncated", "info")
        for name, x, y in zip(names, got, want, strict=True):
            assert_same(x, y, f"step {k} {name}")
        ends += int((got[2] | got[3]).sum())
        if mode is AutoresetMode.SAME_STEP and (got[2] | got[3]).any():
            assert {"final_obs", "_final_obs", "final_info", "_final_info"} <= got[4].keys()
    assert ends == 2 * n


def test_next_step_reset_step_ignores_the_action_and_keeps_the_exchange_as_reset():
    # Exchange i seeded 7 + i: its episode ends, the next step returns its reset observation
    # with reward 0 and both flags False, whatever the action; its whole simulator state, its
    # random streams and its clock are then those of a single environment just reset.
    n = 2
    vec = InsuranceFundVectorEnv(n, **SMALL)
    singles = [InsuranceFundEnv(**SMALL) for _ in range(n)]
    vec.reset(seed=7)
    for i, s in enumerate(singles):
        s.reset(seed=7 + i)
    acts = actions(18, n)
    for k in range(18):
        _, _, term, trunc, _ = vec.step(acts[k])
        for i, s in enumerate(singles):
            s.step(acts[k, i])
    assert (term | trunc).all()  # 18 decisions: both ended at the last step
    fresh = [s.reset()[0] for s in singles]
    obs, reward, term, trunc, info = vec.step(np.ones((n, N_ACT)))  # ignored
    np.testing.assert_array_equal(obs, np.stack(fresh))
    assert reward.tolist() == [0.0, 0.0] and not term.any() and not trunc.any()
    assert set(info) == {"scenario", "_scenario"}  # only the reset info, as SyncVectorEnv
    sim = vec.core.sim
    for i, s in enumerate(singles):
        one = s.core.sim
        for f in dataclasses.fields(sim.state):
            a, b = getattr(sim.state, f.name), getattr(one.state, f.name)
            if f.name == "fund":
                for g in dataclasses.fields(a):
                    np.testing.assert_array_equal(getattr(a, g.name)[i], getattr(b, g.name)[0])
            else:
                np.testing.assert_array_equal(a[i], b[0], err_msg=f.name)
        np.testing.assert_array_equal(sim.rng.state[i], one.rng.state[0])
        np.testing.assert_array_equal(sim.drivers[:, i], one.drivers[:, 0])
        assert sim.market.t[i] == one.market.t[0] == 0
        for name in PARAMS:
            assert vec.core.controls.position[name][i] == s.core.controls.position[name][0]


# ---- reset_mask ----


def test_reset_mask_resets_only_the_masked_exchanges():
    n = 3
    vec = InsuranceFundVectorEnv(n, **SMALL)
    singles = [InsuranceFundEnv(**SMALL) for _ in range(n)]
    vec.reset(seed=0)
    for i, s in enumerate(singles):
        s.reset(seed=i)
    acts = actions(6, n)
    for k in range(3):
        before, *_ = vec.step(acts[k])
        for i, s in enumerate(singles):
            s.step(acts[k, i])
    mask = np.array([False, True, False])
    obs, info = vec.reset(seed=10, options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[~mask], before[~mask])  # the others keep theirs
    np.testing.assert_array_equal(obs[1], singles[1].reset(seed=11)[0])  # seed + i
    assert info["scenario"].tolist() == [None, "venue_flash_wick", None]
    np.testing.assert_array_equal(info["_scenario"], mask)
    for k in range(3, 6):  # the others go on as if nothing happened; exchange 1 anew
        obs, reward, *_ = vec.step(acts[k])
        for i, s in enumerate(singles):
            o, r, *_ = s.step(acts[k, i])
            np.testing.assert_array_equal(obs[i], o)
            assert reward[i] == r


def test_reset_mask_cancels_a_pending_next_step_reset():
    vec = InsuranceFundVectorEnv(2, **SHORT)
    single = InsuranceFundEnv(**SHORT)
    vec.reset(seed=0)
    for _ in range(6):
        *_, term, trunc, _ = vec.step(np.zeros((2, N_ACT)))
    assert (term | trunc).all()
    obs, _ = vec.reset(seed=[None, 5], options={"reset_mask": np.array([False, True])})
    np.testing.assert_array_equal(obs[1], single.reset(seed=5)[0])
    obs, reward, term, trunc, info = vec.step(np.zeros((2, N_ACT)))
    o, r, *_ = single.step(np.zeros(N_ACT, dtype=np.float32))
    np.testing.assert_array_equal(obs[1], o)  # exchange 1 stepped: its reset is done
    assert reward[1] == r and reward[0] == 0.0  # exchange 0 took its pending reset
    np.testing.assert_array_equal(info["_scenario"], [True, False])
    np.testing.assert_array_equal(info["_cost"], [False, True])


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.array([True, False, True]), r"shape \(2,\).*got dtype bool, shape \(3,\)"),
        (np.array([1, 0]), r"numpy bool array.*got dtype int64"),
        ([True, False], r"numpy bool array.*got list"),
        (np.array([False, False]), r"at least one exchange"),
    ],
)
def test_a_malformed_reset_mask_is_a_clear_error(mask, message):
    vec = InsuranceFundVectorEnv(2, **SHORT)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"options\['reset_mask'\] must .*" + message):
        vec.reset(options={"reset_mask": mask})


def test_the_first_reset_starts_every_exchange():
    vec = InsuranceFundVectorEnv(2, **SHORT)
    with pytest.raises(ValueError, match="the first reset"):
        vec.reset(options={"reset_mask": np.array([True, False])})


# ---- infos ----


def test_every_info_key_carries_its_mask_nested_dicts_included():
    vec = InsuranceFundVectorEnv(2, **SHORT)
    _, info = vec.reset(seed=0)
    assert set(info) == {"scenario", "_scenario"}
    _, _, _, _, info = vec.step(np.zeros((2, N_ACT)))

    def check(d):
        for key, value in d.items():
            if key.startswith("_"):
                assert key[1:] in d
                continue
            mask = d[f"_{key}"]
            assert mask.dtype == np.bool_ and mask.tolist() == [True, True], key
            if isinstance(value, dict):
                check(value)

    check(info)
    assert {"cost", "params", "reward_components"} <= info.keys()
    assert info["params"]["_mmr"].tolist() == [True, True]


def test_same_step_final_obs_and_info_are_the_ended_step():
    vec = InsuranceFundVectorEnv(2, autoreset_mode="SameStep", **SHORT)
    single = InsuranceFundEnv(**SHORT)
    vec.reset(seed=3)
    single.reset(seed=3)
    for _ in range(6):
        obs, _, _, trunc, info = vec.step(np.zeros((2, N_ACT)))
        o, _, _, tr, i0 = single.step(np.zeros(N_ACT, dtype=np.float32))
    assert tr and trunc.all()  # 6 decisions of 10 minutes: the 60-minute cap
    np.testing.assert_array_equal(info["final_obs"][0], o)
    assert info["_final_obs"].tolist() == info["_final_info"].tolist() == [True, True]
    final = info["final_info"]
    for key, value in i0.items():
        if isinstance(value, dict):
            assert {k: final[key][k][0] for k in value} == value
        else:
            assert final[key][0] == value, key  # the ended step, not the reset
    assert "cost" not in info  # the step keys of a reset exchange live in final_info
    np.testing.assert_array_equal(obs[0], single.reset()[0])


# ---- modes, wrappers, make_vec ----


def test_autoreset_mode_is_declared_per_instance_and_checked():
    vec = InsuranceFundVectorEnv(1, autoreset_mode="SameStep", **SHORT)
    assert vec.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert InsuranceFundVectorEnv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert InsuranceFundVectorEnv(1, **SHORT).metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    with pytest.raises(ValueError, match=r"autoreset_mode = 'same_step': not one of \['NextStep'"):
        InsuranceFundVectorEnv(1, autoreset_mode="same_step", **SHORT)


def test_disabled_autoreset_steps_on_only_after_a_masked_reset():
    vec = InsuranceFundVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED, **SHORT)
    vec.reset(seed=0)
    for _ in range(6):
        *_, trunc, _ = vec.step(np.zeros((2, N_ACT)))
    assert trunc.all()
    with pytest.raises(RuntimeError, match=r"exchanges \[0, 1\] ended.*reset_mask"):
        vec.step(np.zeros((2, N_ACT)))
    vec.reset(options={"reset_mask": np.array([True, True])})
    _, reward, *_ = vec.step(np.zeros((2, N_ACT)))
    assert (reward != 0.0).all()


def wrapped(env):
    env = vw.NormalizeObservation(env)
    env = vw.FlattenObservation(env)
    env = vw.TransformObservation(env, lambda o: 2.0 * o, env.observation_space)
    env = vw.DtypeObservation(env, np.float64)
    return vw.RecordEpisodeStatistics(env)


def test_make_vec_in_every_mode_runs_gymnasium_vector_wrappers_alike():
    n, steps = 2, 9  # across the 6-decision episode's end and its reset step
    acts = actions(steps, n, seed=4)
    runs = {}
    for mode in ("sync", "async", "vector_entry_point"):
        env = wrapped(gym.make_vec(fundgym.ENV_ID, n, vectorization_mode=mode, **SHORT))
        out = [env.reset(seed=2)[0]]
        for k in range(steps):
            obs, reward, term, trunc, info = env.step(acts[k])
            out.append((obs, reward, term, trunc))
            if "episode" in info:
                out.append((info["episode"]["r"], info["episode"]["l"], info["_episode"]))
        env.close()
        runs[mode] = out
    assert runs["sync"][1][0].dtype == np.float64
    assert len(runs["sync"]) == 1 + steps + 1  # one step reports the ended episodes
    for mode in ("async", "vector_entry_point"):
        for x, y in zip(runs["sync"], runs[mode], strict=True):
            xs, ys = (x, y) if isinstance(x, tuple) else ((x,), (y,))
            for a, b in zip(xs, ys, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=mode)
    episode = next(x for x in runs["vector_entry_point"] if len(x) == 3)
    assert episode[1].tolist() == [6, 6] and episode[2].all()


# ---- rendering ----


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_render_returns_one_frame_per_exchange_as_sync_vector_env(mode):
    n = 2
    kw = {**SHORT, "render_mode": "rgb_array"}
    twin = InsuranceFundVectorEnv(n, autoreset_mode=mode, **kw)
    sync = SyncVectorEnv([lambda: InsuranceFundEnv(**kw) for _ in range(n)], autoreset_mode=mode)
    twin.reset(seed=1)
    sync.reset(seed=1)
    acts = actions(8, n)
    for k in range(8):  # ends at step 5; next-step resets at 6
        twin.step(acts[k])
        sync.step(acts[k])
        if k in (0, 5, 6):
            got, want = twin.render(), sync.render()
            assert isinstance(got, tuple) and len(got) == n
            for a, b in zip(got, want, strict=True):
                assert a.shape == (400, 640, 3) and a.dtype == np.uint8
                assert len(colours(a)) > 2  # drawn, not a blank
                np.testing.assert_array_equal(a, b)


def test_ansi_render_is_a_tuple_of_lines():
    vec = InsuranceFundVectorEnv(3, render_mode="ansi", **SHORT)
    vec.reset(seed=0)
    vec.step(np.zeros((3, N_ACT)))
    lines = vec.render()
    assert len(lines) == 3 and all(isinstance(x, str) and "\n" not in x for x in lines)


def test_no_render_mode_records_nothing(monkeypatch):
    from fundgym.envs.exchange_env import FundControlCore

    def refuse(*_):
        raise AssertionError("a frame was built without a render mode")

    monkeypatch.setattr(FundControlCore, "frames", refuse)
    vec = InsuranceFundVectorEnv(2, **SHORT)
    vec.reset(seed=0)
    for _ in range(7):  # across the end and the reset step
        vec.step(np.zeros((2, N_ACT)))
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert vec.render() is None


def test_render_mode_is_checked_and_never_reaches_the_config():
    with pytest.raises(ValueError, match=r"render_mode = 'human': not one of \[None, 'ansi'"):
        InsuranceFundVectorEnv(1, render_mode="human", **SHORT)
    vec = gym.make_vec(fundgym.ENV_ID, 2, render_mode="rgb_array", **SHORT)
    assert vec.render_mode == "rgb_array"
    assert "render_mode" not in {f.name for f in dataclasses.fields(vec.unwrapped.config)}
