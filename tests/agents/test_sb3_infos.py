"""The SB3 adapter's per-exchange infos, copied out of the step's arrays when first read."""

import copy
import json
import pickle

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from fundgym.agents.training.sb3_env import ExchangeInfo, FundGymVecEnv
from fundgym.envs.exchange_env import InsuranceFundVectorEnv

TINY = {"scenario": "venue_flash_wick", "n_accounts": 64, "horizon_minutes": 60.0}  # 6 steps
SB3_KEYS = ("terminal_observation", "TimeLimit.truncated")


def _row(info: dict, i: int) -> dict:
    """Exchange ``i``'s values of a Gymnasium vector info, nested dicts included."""
    return {
        k: _row(v, i) if isinstance(v, dict) else v[i].item()
        for k, v in info.items()
        if not k.startswith("_") and k not in ("final_obs", "final_info", "scenario")
    }


def _expected(infos: dict, done: np.ndarray, i: int) -> dict:
    """What an eager adapter put in ``infos[i]``: the ended step's info where ``done``."""
    return _row(infos["final_info"] if done[i] else infos, i)


def _twins(n: int = 2) -> tuple[FundGymVecEnv, InsuranceFundVectorEnv]:
    venv = FundGymVecEnv(n, **TINY)
    venv.seed(3)
    venv.reset()
    twin = InsuranceFundVectorEnv(n, autoreset_mode=AutoresetMode.SAME_STEP, **TINY)
    twin.reset(seed=3)
    return venv, twin


def test_infos_hold_every_key_of_the_step_including_ended_ones():
    venv, twin = _twins()
    acts = np.random.default_rng(0).uniform(-1, 1, (8, 2, venv.action_space.shape[0]))
    ended = 0
    for k in range(8):
        _, _, dones, infos = venv.step(acts[k].astype(np.float32))
        _, _, term, trunc, want = twin.step(acts[k].astype(np.float32))
        np.testing.assert_array_equal(dones, term | trunc)
        for i in range(2):
            got = {key: v for key, v in infos[i].items() if key not in SB3_KEYS}
            assert got == _expected(want, dones, i), f"step {k} exchange {i}"
            assert ("terminal_observation" in infos[i]) == bool(dones[i])
        ended += int(dones.sum())
    assert ended == 2  # each exchange's 6-step episode ended once


def test_asking_for_keys_the_step_lacks_copies_nothing():
    venv, twin = _twins()
    zeros = np.zeros((2, venv.action_space.shape[0]), dtype=np.float32)
    _, _, dones, infos = venv.step(zeros)
    _, _, _, _, want = twin.step(zeros)
    info = infos[0]
    assert dict.__len__(info) == 1  # only "cost", what training reads every step
    assert info.get("episode") is None
    assert "is_success" not in info
    assert info.get("TimeLimit.truncated", False) is False
    assert dict.__len__(info) == 1
    assert "fund_balance_usd" in info  # a key of the step: the row comes in
    assert dict.__len__(info) == len(_expected(want, dones, 0))


def test_an_info_read_steps_later_holds_its_own_step():
    venv, twin = _twins()
    zeros = np.zeros((2, venv.action_space.shape[0]), dtype=np.float32)
    _, _, dones, first = venv.step(zeros)
    _, _, _, _, want = twin.step(zeros)
    for _ in range(3):
        venv.step(zeros)
    assert dict(first[1]) == _expected(want, dones, 1)


def test_an_info_behaves_as_the_plain_dict_it_stands_for():
    for made in (
        lambda d: pickle.loads(pickle.dumps(d)),
        copy.copy,
        copy.deepcopy,
        dict,
        lambda d: {**d},
        lambda d: d.copy(),
        lambda d: json.loads(json.dumps(d)),
    ):  # each on a fresh info (its row still in the step's arrays), from an episode's start
        venv, twin = _twins()
        zeros = np.zeros((2, venv.action_space.shape[0]), dtype=np.float32)
        _, _, dones, infos = venv.step(zeros)
        _, _, _, _, want = twin.step(zeros)
        out = made(infos[0])
        assert type(out) is dict and out == _expected(want, dones, 0)
    _, _, dones, infos = venv.step(zeros)
    _, _, _, _, want = twin.step(zeros)
    plain = _expected(want, dones, 0)
    assert infos[0] == plain and plain == infos[0] and len(infos[0]) == len(plain)
    assert list(infos[0]) == list(plain)  # the eager adapter's key order


def test_values_set_before_the_row_is_read_are_kept():
    info = ExchangeInfo(
        {"cost": np.array([1.0, 2.0]), "fund_balance_usd": np.array([3.0, 4.0])},
        1,
        frozenset({"cost", "fund_balance_usd"}),
        {"cost": 2.0},
    )
    info["cost"] = 9.0
    info["episode"] = {"r": 1.0}
    assert info == {"cost": 9.0, "fund_balance_usd": 4.0, "episode": {"r": 1.0}}
    cleared = ExchangeInfo({"x": np.array([1.0])}, 0, frozenset({"x"}), {})
    cleared.clear()
    assert len(cleared) == 0 and "x" not in cleared


def test_step_arrays_needs_same_step_autoreset():
    env = InsuranceFundVectorEnv(2, **TINY)  # next-step, Gymnasium's default
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="SAME_STEP"):
        env.step_arrays(np.zeros((2, env.single_action_space.shape[0])))
