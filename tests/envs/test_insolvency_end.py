"""The episode's insolvency end does not depend on the ADL rule.

Why this file: docs/frontier.md found that socialised loss ended a Hyperliquid-rule episode
while the same dollars, charged to ADL counterparties as a haircut under the BitMEX rule, did
not; the evaluation then compared episodes of different lengths and put the Hyperliquid rule on
every front point. ``uncovered_usd`` now adds each tick's positive ADL haircut, so on a crash
that ends in deleveraging the rules end on the same decision, with the same loss.
"""

from __future__ import annotations

import numpy as np
import pytest

from fundgym.envs.controls import ALLOCATION, PARAMS
from fundgym.envs.exchange_env import InsuranceFundEnv

RISK_LEVERS = tuple(p for p in PARAMS if p not in ALLOCATION)


def run(policy: str, seed: int) -> tuple[int, bool, dict[str, float], float, float]:
    """Hold the default levers through ``oracle_manipulation``; decisions, end, loss sums.

    The fund stays in stable assets (the allocation is not controlled): what is compared is
    the ADL rule, not the path of a hedge bought with the fund.
    """
    env = InsuranceFundEnv(
        scenario="oracle_manipulation", n_accounts=64, adl_policy=policy, controlled=RISK_LEVERS
    )
    env.reset(seed=seed)
    sums = dict.fromkeys(("socialized_loss_usd", "unrecovered_usd", "adl_haircut_usd"), 0.0)
    n, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        n += 1
        for key in sums:
            sums[key] += float(info[key])
    core = env.unwrapped.core
    return (
        n,
        terminated,
        sums,
        float(core.uncovered_usd[0]),
        float(core.sim.initial_open_interest_usd[0]),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_every_adl_rule_ends_the_same_crash_on_the_same_decision(seed: int) -> None:
    runs = {p: run(p, seed) for p in ("bitmex", "hyperliquid", "drift")}
    decisions = {p: r[0] for p, r in runs.items()}
    assert all(r[1] for r in runs.values()), decisions  # every rule ends insolvent
    assert len(set(decisions.values())) == 1, decisions
    uncovered = np.array([r[3] for r in runs.values()])
    assert uncovered.max() == pytest.approx(uncovered.min(), rel=1e-3)
    for policy, (_, _, sums, loss, oi) in runs.items():
        assert loss > 0.05 * oi  # insolvency_frac's default
        # Under the haircut rules nothing was socialised: the haircut alone ended it.
        if policy != "hyperliquid":
            assert sums["socialized_loss_usd"] + sums["unrecovered_usd"] < 1e-6 * loss
        # A decision's haircut nets ticks' gains against losses; the end counts only losses.
        counted = sums["socialized_loss_usd"] + sums["unrecovered_usd"]
        assert loss >= counted + max(sums["adl_haircut_usd"], 0.0) - 1e-6 * loss
