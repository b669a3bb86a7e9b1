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
