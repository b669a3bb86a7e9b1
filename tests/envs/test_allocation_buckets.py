"""Buckets the fund may not hold (``EnvConfig.allocation_buckets``, issue 21).

Leaving ``alloc_volatile`` uncontrolled does not keep the fund out of the volatile bucket: its
logit stays at its start (-1) and takes a third of the fund when the three controlled logits
all fall to -1 (the softmax of equal logits). Excluding the bucket gives it weight 0 whatever
the action. Read through the observation's fund composition (columns 16-19: stable, yield,
volatile, hedge) and the controls' weights.
"""

import math

import numpy as np
import pytest

from fundgym.envs.config import make_config
from fundgym.envs.controls import BUCKETS, Controls, allocation_weights
from fundgym.envs.exchange_env import InsuranceFundVectorEnv
from fundgym.envs.schema import SchemaError

NO_VOLATILE = ["alloc_stable", "alloc_yield", "alloc_hedge"]
ALL_DOWN = np.array([[-1.0, -1.0, -1.0]], np.float32)  # every controlled logit at its bottom


def test_weights_of_the_held_buckets_by_hand():
    logits = np.array([[1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, 1.0, -1.0]])
    e3, em3 = math.exp(3.0), math.exp(-3.0)
    # held: stable, yield, hedge. Row 0: e^3 / (e^3 + 2 e^-3) in stable.
    w = allocation_weights(logits, ("stable", "yield", "hedge"))
    np.testing.assert_allclose(w[0], np.array([e3, em3, 0.0, em3]) / (e3 + 2 * em3), rtol=1e-15)
    # Row 1: the volatile logit is the highest, yet its bucket gets nothing; the rest equal.
    np.testing.assert_allclose(w[1], [1 / 3, 1 / 3, 0.0, 1 / 3], rtol=1e-15)
    assert w[1, 2] == 0.0  # exactly
    assert allocation_weights(logits, ("stable",)).tolist() == [[1.0, 0.0, 0.0, 0.0]] * 2
    # all four held: the plain softmax, bit for bit
    assert np.array_equal(allocation_weights(logits, BUCKETS), allocation_weights(logits))


def _composition(**kw: object) -> np.ndarray:
    env = InsuranceFundVectorEnv(
        num_envs=1, n_accounts=64, scenario="calm", controlled=NO_VOLATILE, max_step=2.0, **kw
    )
    env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(ALL_DOWN)
    values = env.core.controls.values()
    env.close()
    return np.array([*obs[0, 16:20], values["alloc_volatile"][0]])


def test_an_uncontrolled_logit_still_takes_a_share_but_an_excluded_bucket_none():
    kept = _composition()
    assert kept[4] == pytest.approx(0.25)  # four equal logits: a quarter each, volatile too
    assert kept[2] > 0.2  # the fund bought the underlying
    excluded = _composition(allocation_buckets=["stable", "yield", "hedge"])
    assert excluded[4] == 0.0
    assert excluded[2] == 0.0  # none of the fund in the underlying
    assert excluded[0] > 0.2 and excluded[1] > 0.2  # the other three share it


def test_a_controlled_logit_of_an_excluded_bucket_is_refused():
    with pytest.raises(SchemaError) as err:
        make_config(allocation_buckets=["stable", "yield"], controlled=NO_VOLATILE)
    msg = str(err.value)
    assert "allocation_buckets" in msg and "'alloc_hedge' is in controlled" in msg
    with pytest.raises(ValueError, match="'alloc_hedge' is controlled"):
        Controls(tuple(NO_VOLATILE), {}, 0.2, 0, 1, held=("stable", "yield"))


@pytest.mark.parametrize(
    ("held", "what"),
    [
        (["stable", "gold"], "unknown bucket 'gold'"),
        ([], "distinct buckets, at least one"),
        (["stable", "stable"], "distinct buckets, at least one"),
    ],
)
def test_bad_bucket_lists_are_refused_naming_field_value_and_allowed(held, what):
    with pytest.raises(SchemaError) as err:
        make_config(allocation_buckets=held, controlled=["mmr"])
    msg = str(err.value)
    assert "allocation_buckets" in msg and str(held) in msg and what in msg
    assert "['stable', 'yield', 'volatile', 'hedge']" in msg
