"""The allocation's slower clock (``EnvConfig.allocation_minutes``, issue 21).

The fund moves toward the action's allocation only at decisions 0, k, 2k, ... of an episode;
the other decisions' allocation logits are ignored. Read through the observation's fund
composition (columns 16-19: stable, yield, volatile, hedge).
"""

import numpy as np
import pytest

from fundgym.envs.config import make_config
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.schema import SchemaError

ALLOCATION = ["alloc_stable", "alloc_yield", "alloc_volatile", "alloc_hedge"]
TO_YIELD = np.array([[-1.0, 1.0, -1.0, -1.0]], np.float32)
TO_VOLATILE = np.array([[-1.0, -1.0, 1.0, -1.0]], np.float32)


def _compositions(allocation_minutes: float | None) -> list[np.ndarray]:
    """The fund's weights after each of four decisions: to yield, then to volatile thrice."""
    env = InsuranceFundVectorEnv(
        num_envs=1,
        n_accounts=64,
        scenario="calm",
        controlled=ALLOCATION,
        max_step=2.0,  # the logits reach the action's target in one decision
        allocation_minutes=allocation_minutes,
    )
    env.reset(seed=0)
    out = []
    for action in (TO_YIELD, TO_VOLATILE, TO_VOLATILE, TO_VOLATILE):
        obs, *_ = env.step(action)
        out.append(obs[0, 16:20].copy())
    env.close()
    return out


def test_every_decision_moves_the_fund_without_a_clock():
    comp = _compositions(None)
    assert comp[0][1] > 0.9  # yield
    assert comp[1][2] > 0.9 and comp[2][2] > 0.9 and comp[3][2] > 0.9  # volatile from the 2nd


def test_a_30_minute_clock_moves_the_fund_at_decisions_0_and_3_only():
    comp = _compositions(30.0)  # decisions every 10 minutes: k = 3
    assert comp[0][1] > 0.9  # decision 0 is on the clock
    for k in (1, 2):  # off the clock: the fund stays in yield (no volatile bought)
        assert comp[k][1] > 0.9 and comp[k][2] < 0.01  # softmax(3 x logits) at decision 0
    assert comp[3][2] > 0.9  # decision 3: on the clock again


@pytest.mark.parametrize("minutes", [5.0, 15.0, 25.0])
def test_a_clock_that_is_not_a_whole_multiple_of_the_decision_is_refused(minutes):
    with pytest.raises(SchemaError) as err:
        make_config(allocation_minutes=minutes)
    msg = str(err.value)
    assert "allocation_minutes" in msg and f"{minutes:g}" in msg
    assert "whole multiple of decision_minutes (10)" in msg


def test_a_turnover_budget_moves_a_tenth_of_the_fund_per_move_along_the_line():
    """Budget 0.1, asked for yield at once (max_step 2): the target weights are
    w = softmax(3 x [-1, 1, -1, -1]) = [e, 1 - 3e, e, e] with e = e^-3 / (e^3 + 3 e^-3)
    = 0.0024605; from all stable the turnover is 0.5 x ((1 - e) + (1 - 3e) + 2e) = 1 - e, so a
    move shifts 0.1 / (1 - e) of the way: stable falls by exactly 0.1 a move and yield rises
    by 0.1 (1 - 3e) / (1 - e) = 0.0995067 (the same line each time)."""
    env = InsuranceFundVectorEnv(
        num_envs=1,
        n_accounts=64,
        scenario="calm",
        controlled=ALLOCATION,
        max_step=2.0,
        allocation_turnover_frac=0.1,
    )
    env.reset(seed=0)
    e = np.exp(-3.0) / (np.exp(3.0) + 3.0 * np.exp(-3.0))
    assert e == pytest.approx(0.0024605, abs=1e-7)
    for k in range(1, 5):
        obs, *_ = env.step(TO_YIELD)
        held = env.core.alloc_target[0]
        want = np.array([1.0 - 0.1 * k, 0.1 * k * (1 - 3 * e) / (1 - e), 0.0, 0.0])
        want[2] = want[3] = 0.1 * k * e / (1 - e)
        np.testing.assert_allclose(held, want, rtol=0, atol=1e-12)
        assert want[1] == pytest.approx(0.0995067 * k, abs=1e-7)
        np.testing.assert_allclose(obs[0, 16:20], held, atol=2e-3)  # the fund, fees apart
    env.close()
    assert make_config(allocation_turnover_frac=None).allocation_turnover_frac is None
    for bad in (0.0, 1.5, True):
        with pytest.raises(SchemaError) as err:
            make_config(allocation_turnover_frac=bad)
        assert "allocation_turnover_frac" in str(err.value)
