"""``info["capital_locked_usd"]`` counts the backstop vault like the fund.

Why this file: the frontier and ``fundgym evaluate`` compare policies on capital locked. A
vault that the number left out let a search buy safety with free capital (docs/frontier.md);
the number now has one home, the environment, and holds fund value + vault equity +
maintenance margin locked.
"""

from __future__ import annotations

import numpy as np
import pytest

from fundgym.envs.exchange_env import InsuranceFundEnv
from fundgym.envs.observation import BOOK_STATS


def test_capital_locked_is_fund_plus_vault_equity_plus_margin() -> None:
    env = InsuranceFundEnv(
        scenario="oct_10_2025", n_accounts=64, liquidation_mode="hyperliquid",
        vault_to_oi_frac=0.02,
    )  # fmt: skip
    env.reset(seed=3)
    core = env.unwrapped.core
    margin_col = BOOK_STATS.index("margin_locked_usd")
    seen_vault = 0.0
    for _ in range(5):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        margin = float(core.last_book[0, margin_col])
        vault = float(info["vault_equity_usd"])
        seen_vault = max(seen_vault, vault)
        expected = float(info["fund_balance_usd"]) + vault + margin
        assert float(info["capital_locked_usd"]) == pytest.approx(expected, rel=1e-12)
    # the vault started with 2% of open interest and holds it while nothing is liquidated
    assert seen_vault == pytest.approx(
        0.02 * float(core.sim.initial_open_interest_usd[0]), rel=0.05
    )
