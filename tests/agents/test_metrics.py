"""agents.evaluate.metrics: episode metrics, quantiles, intervals, VaR/ES, summaries, dominance.

Expected values are worked by hand in the comments (or come from published tables), never from
the module under test.
"""

import dataclasses
import math
import re
import statistics
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundgym.agents.evaluate.metrics import (
    EPISODE_COLUMNS,
    MAX_PLAUSIBLE_USD,
    SUMMARY_METRICS,
    EpisodeRecord,
    MetricError,
    check_metrics,
    dominates,
    episode_metrics,
    fund_exhausted,
    max_drawdown_frac,
    mean_ci,
    normal_quantile,
    param_movement,
    student_t_cdf,
    student_t_quantile,
    summarize,
    summarize_policies,
    var_es,
    wilson_interval,
)

Z975 = 1.959963984540054  # standard normal 97.5% quantile (published)

# ------------------------------------------------------------------------------------------
# Hand-built episodes
# ------------------------------------------------------------------------------------------


def record_a_kwargs() -> dict[str, Any]:
    """4 steps of 15 min; the fund dips, recovers to a new peak, then falls by half."""
    return {
        "policy": "ppo",
        "scenario": "crash",
        "episode": 0,
        "seed": 7,
        "initial_open_interest_usd": 1000.0,
        "initial_fund_usd": 100.0,
        "initial_vault_usd": 100.0,
        "time_minutes": [15.0, 30.0, 45.0, 60.0],
        "fund_balance_usd": [80.0, 120.0, 60.0, 90.0],
        "open_interest_usd": [1000.0, 800.0, 500.0, 400.0],
        "capital_locked_usd": [110.0, 144.0, 75.0, 102.0],
        "mark_price": [100.0, 95.0, 90.0, 92.0],
        "liquidation_volume_usd": [0.0, 100.0, 300.0, 50.0],
        "shortfall_usd": [0.0, 20.0, 60.0, 0.0],
        "adl_volume_usd": [0.0, 0.0, 40.0, 10.0],
        "socialized_loss_usd": [0.0, 0.0, 5.0, 0.0],
        "unrecovered_usd": [0.0, 0.0, 0.0, 2.5],
        "fee_revenue_usd": [1.0, 2.0, 3.0, 0.5],
        "adl_haircut_usd": [0.0, 0.0, 8.0, 2.0],
        "adl_overshoot_usd": [0.0, 0.0, 4.0, 0.0],
        "liquidator_absorbed_usd": [0.0, 30.0, 90.0, 10.0],
        # a vault of capital 100: equity 100, 95, 80, 112.5 (peak 100 until the last step)
        "vault_pnl_usd": [0.0, -5.0, -20.0, 12.5],
        "vault_drawdown_frac": [0.0, 0.05, 0.2, 0.2],
        "vault_peak_inventory_usd": [0.0, 160.0, 160.0, 160.0],
        "vault_takeovers": [0.0, 1.0, 3.0, 0.0],
        "vault_takeover_usd": [0.0, 160.0, 300.0, 0.0],
        "vault_adl_usd": [0.0, 50.0, 100.0, 0.0],
        # the index bottoms at step 2; the fund's allocation earned 1, lost 3, earned 0.5, 2
        "index_price": [100.0, 94.0, 88.0, 91.0],
        "fund_external_pnl_usd": [1.0, -3.0, 0.5, 2.0],
        "reward": [0.5, -1.0, -2.0, 0.25],
        "cost": [0.0, 0.0, 0.005, 0.0025],
        "params": {"max_leverage": [20.0, 20.0, 10.0, 10.0], "mmr": [0.03, 0.03, 0.04, 0.05]},
        "positions": [[0.0, 0.0], [0.5, -0.5], [0.5, -0.5], [-0.5, 0.25]],
        "terminated": False,
    }


def record_a(**overrides: Any) -> EpisodeRecord:
    return EpisodeRecord(**{**record_a_kwargs(), **overrides})


# Record A, worked by hand (initial OI 1000, initial fund 100):
EXPECTED_A: dict[str, Any] = {
    "policy": "ppo",
    "scenario": "crash",
    "episode": 0,
    "seed": 7,
    "n_steps": 4,
    "horizon_minutes": 60.0,  # time at the end of the last step
    "terminated": False,
    "socialized_loss_usd": 5.0,  # 0 + 0 + 5 + 0
    "unrecovered_usd": 2.5,  # 0 + 0 + 0 + 2.5
    "bad_debt_usd": 7.5,  # 5 + 2.5
    "adl_volume_usd": 50.0,  # 40 + 10
    "shortfall_usd": 80.0,  # 20 + 60
    "insolvency_decision_loss_usd": 0.0,  # ran to its end
    "socialized_loss_pct_oi": 0.5,  # 100 * 5 / 1000
    "adl_volume_pct_oi": 5.0,  # 100 * 50 / 1000
    "bad_debt_pct_oi": 0.75,  # 100 * 7.5 / 1000
    "fund_min_usd": 60.0,  # min(100, 80, 120, 60, 90)
    # path 100, 80, 120, 60, 90; running peak 100, 100, 120, 120, 120;
    # declines 0, 0.2, 0, 0.5, 0.25 -> 0.5 (from the later peak 120, not the start 100)
    "fund_max_drawdown_frac": 0.5,
    "fund_exhausted": False,  # 60 > 1e-6 * 1000
    "fund_at_trough_usd": 60.0,  # the fund at step 2, where the index is lowest (88)
    "allocation_pnl_at_trough_usd": -1.5,  # 1 - 3 + 0.5: the steps up to the trough
    "liquidation_volume_usd": 450.0,  # 100 + 300 + 50
    "liquidation_volume_pct_oi": 45.0,  # 100 * 450 / 1000
    "fee_revenue_usd": 6.5,  # 1 + 2 + 3 + 0.5
    "adl_haircut_usd": 10.0,  # 8 + 2
    "adl_overshoot_usd": 4.0,
    "liquidator_absorbed_usd": 130.0,  # 30 + 90 + 10
    "vault_initial_usd": 100.0,
    "vault_pnl_usd": 12.5,  # the last step's, not the sum
    "vault_pnl_frac": 0.125,  # 12.5 / 100
    "vault_max_drawdown_frac": 0.2,  # (100 - 80) / 100
    "vault_peak_inventory_usd": 160.0,  # the running peak's last value
    "vault_takeovers": 4.0,  # 1 + 3
    "vault_takeover_usd": 460.0,  # 160 + 300
    "vault_adl_usd": 150.0,  # 50 + 100
    "mean_open_interest_usd": 675.0,  # (1000 + 800 + 500 + 400) / 4 = 2700 / 4
    "mean_capital_locked_usd": 107.75,  # (110 + 144 + 75 + 102) / 4 = 431 / 4
    "mean_fund_usd": 87.5,  # (80 + 120 + 60 + 90) / 4 = 350 / 4
    # 80/1000 = 0.08, 120/800 = 0.15, 60/500 = 0.12, 90/400 = 0.225; sum 0.575, / 4
    "mean_fund_to_oi_frac": 0.14375,
    "open_interest_retained_frac": 0.4,  # 400 / 1000
    # rows: (0,0) (.5,-.5) (.5,-.5) (-.5,.25); first row 0; |.5|+|-.5| = 1; 0; 1 + .75 = 1.75
    "param_movement": 2.75,
    "total_reward": -2.25,  # 0.5 - 1 - 2 + 0.25
    "total_cost": 0.0075,  # 0.005 + 0.0025
    "mean_max_leverage": 15.0,  # (20 + 20 + 10 + 10) / 4
    "mean_mmr": 0.0375,  # (0.03 + 0.03 + 0.04 + 0.05) / 4 = 0.15 / 4
}


def record_b_kwargs() -> dict[str, Any]:
    """3 steps: the fund runs dry, open interest collapses to 0.5 USD then 0, terminated."""
    return {
        "policy": "ppo",
        "scenario": "crash",
        "episode": 1,
        "seed": 8,
        "initial_open_interest_usd": 2000.0,
        "initial_fund_usd": 50.0,
        "initial_vault_usd": 0.0,
        "time_minutes": [10.0, 20.0, 30.0],
        "fund_balance_usd": [20.0, 2.0, 0.0],
        "open_interest_usd": [1000.0, 0.5, 0.0],
        "capital_locked_usd": [70.0, 2.5, 0.0],
        "mark_price": [50.0, 40.0, 30.0],
        "liquidation_volume_usd": [400.0, 600.0, 0.0],
        "shortfall_usd": [30.0, 18.0, 0.0],
        "adl_volume_usd": [0.0, 200.0, 100.0],
        "socialized_loss_usd": [0.0, 10.0, 30.0],
        "unrecovered_usd": [0.0, 0.0, 20.0],
        "fee_revenue_usd": [4.0, 0.0, 0.0],
        # signed: at step 2 the ADL price paid the counterparties $5 more than the mark
        "adl_haircut_usd": [0.0, 15.0, -5.0],
        "adl_overshoot_usd": [0.0, 0.0, 0.0],
        "liquidator_absorbed_usd": [100.0, 0.0, 0.0],
        # no vault: every vault series is 0
        "vault_pnl_usd": [0.0, 0.0, 0.0],
        "vault_drawdown_frac": [0.0, 0.0, 0.0],
        "vault_peak_inventory_usd": [0.0, 0.0, 0.0],
        "vault_takeovers": [0.0, 0.0, 0.0],
        "vault_takeover_usd": [0.0, 0.0, 0.0],
        "vault_adl_usd": [0.0, 0.0, 0.0],
        # the lowest index twice (steps 1 and 2): the trough is the first
        "index_price": [50.0, 40.0, 40.0],
        "fund_external_pnl_usd": [0.0, -4.0, 10.0],
        "reward": [-1.0, -5.0, -10.0],
        "cost": [0.0, 0.005, 0.025],
        "params": {},
        "positions": np.zeros((3, 0)),
        "terminated": True,
    }


# Record B, worked by hand (initial OI 2000, initial fund 50):
EXPECTED_B: dict[str, Any] = {
    "policy": "ppo",
    "scenario": "crash",
    "episode": 1,
    "seed": 8,
    "n_steps": 3,
    "horizon_minutes": 30.0,
    "terminated": True,
    "socialized_loss_usd": 40.0,  # 10 + 30
    "unrecovered_usd": 20.0,
    "bad_debt_usd": 60.0,  # 40 + 20
    "adl_volume_usd": 300.0,  # 200 + 100
    "shortfall_usd": 48.0,  # 30 + 18
    # ended on insolvency: its last decision's socialised 30 + unrecovered 20 + ADL 100
    "insolvency_decision_loss_usd": 150.0,
    "socialized_loss_pct_oi": 2.0,  # 100 * 40 / 2000
    "adl_volume_pct_oi": 15.0,  # 100 * 300 / 2000
    "bad_debt_pct_oi": 3.0,  # 100 * 60 / 2000
    "fund_min_usd": 0.0,
    "fund_max_drawdown_frac": 1.0,  # path 50, 20, 2, 0: peak 50, trough 0 -> 50 / 50
    "fund_exhausted": True,  # 0 <= 1e-6 * 2000
    "fund_at_trough_usd": 2.0,  # step 1: the first of the two steps at the lowest index
    "allocation_pnl_at_trough_usd": -4.0,  # 0 - 4; step 2's +10 comes after the trough
    "liquidation_volume_usd": 1000.0,
    "liquidation_volume_pct_oi": 50.0,  # 100 * 1000 / 2000
    "fee_revenue_usd": 4.0,
    "adl_haircut_usd": 10.0,  # 15 - 5
    "adl_overshoot_usd": 0.0,
    "liquidator_absorbed_usd": 100.0,
    "vault_initial_usd": 0.0,
    "vault_pnl_usd": 0.0,
    "vault_pnl_frac": 0.0,  # no vault: 0 by rule, never 0 / 0
    "vault_max_drawdown_frac": 0.0,
    "vault_peak_inventory_usd": 0.0,
    "vault_takeovers": 0.0,
    "vault_takeover_usd": 0.0,
    "vault_adl_usd": 0.0,
    "mean_open_interest_usd": 1000.5 / 3,  # (1000 + 0.5 + 0) / 3
    "mean_capital_locked_usd": 72.5 / 3,  # (70 + 2.5 + 0) / 3
    "mean_fund_usd": 22.0 / 3,  # (20 + 2 + 0) / 3
    # Only steps with OI of at least 1 USD count: 20/1000 = 0.02; the 0.5 and 0 steps have
    # (almost) none, as a settled market has none (their fund over a floored OI read 2 and 0)
    "mean_fund_to_oi_frac": 0.02,
    "open_interest_retained_frac": 0.0,  # 0 / 2000
    "param_movement": 0.0,  # no controlled parameters (k = 0)
    "total_reward": -16.0,  # -1 - 5 - 10
    "total_cost": 0.03,  # 0.005 + 0.025
}


def record_c_kwargs() -> dict[str, Any]:
    """One step of 60 min, a fund that starts (and stays) at 0, positions given as 1 row."""
    return {
        "policy": "default",
        "scenario": "crash",
        "episode": 0,
        "seed": 7,
        "initial_open_interest_usd": 500.0,
        "initial_fund_usd": 0.0,
        "initial_vault_usd": 40.0,
        "time_minutes": [60.0],
        "fund_balance_usd": [0.0],
        "open_interest_usd": [500.0],
        "capital_locked_usd": [15.0],
        "mark_price": [100.0],
        "liquidation_volume_usd": [0.0],
        "shortfall_usd": [0.0],
        "adl_volume_usd": [0.0],
        "socialized_loss_usd": [0.0],
        "unrecovered_usd": [0.0],
        "fee_revenue_usd": [0.5],
        "adl_haircut_usd": [0.0],
        "adl_overshoot_usd": [0.0],
        "liquidator_absorbed_usd": [0.0],
        # a vault that lost all it started with: equity 0 at the end
        "vault_pnl_usd": [-40.0],
        "vault_drawdown_frac": [1.0],
        "vault_peak_inventory_usd": [0.0],
        "vault_takeovers": [2.0],
        "vault_takeover_usd": [75.0],
        "vault_adl_usd": [25.0],
        "index_price": [100.0],
        "fund_external_pnl_usd": [0.0],
        "reward": [0.0],
        "cost": [0.0],
        "params": {"mmr": [0.03]},
        "positions": [[0.2]],
        "terminated": False,
    }


EXPECTED_C: dict[str, Any] = {
    "policy": "default",
    "scenario": "crash",
    "episode": 0,
    "seed": 7,
    "n_steps": 1,
    "horizon_minutes": 60.0,
    "terminated": False,
    "socialized_loss_usd": 0.0,
    "unrecovered_usd": 0.0,
    "bad_debt_usd": 0.0,
    "adl_volume_usd": 0.0,
    "shortfall_usd": 0.0,
    "insolvency_decision_loss_usd": 0.0,
    "socialized_loss_pct_oi": 0.0,
    "adl_volume_pct_oi": 0.0,
    "bad_debt_pct_oi": 0.0,
    "fund_min_usd": 0.0,
    "fund_max_drawdown_frac": 0.0,  # the running peak is 0 throughout: nothing to lose
    # 0 <= 1e-6 * 500 throughout, but it never held more: no fund to exhaust (a venue whose
    # backstop is a vault)
    "fund_exhausted": False,
    "fund_at_trough_usd": 0.0,
    "allocation_pnl_at_trough_usd": 0.0,
    "liquidation_volume_usd": 0.0,
    "liquidation_volume_pct_oi": 0.0,
    "fee_revenue_usd": 0.5,
    "adl_haircut_usd": 0.0,
    "adl_overshoot_usd": 0.0,
    "liquidator_absorbed_usd": 0.0,
    "vault_initial_usd": 40.0,
    "vault_pnl_usd": -40.0,
    "vault_pnl_frac": -1.0,  # -40 / 40: all of it
    "vault_max_drawdown_frac": 1.0,
    "vault_peak_inventory_usd": 0.0,
    "vault_takeovers": 2.0,
    "vault_takeover_usd": 75.0,
    "vault_adl_usd": 25.0,
    "mean_open_interest_usd": 500.0,
    "mean_capital_locked_usd": 15.0,
    "mean_fund_usd": 0.0,
    "mean_fund_to_oi_frac": 0.0,
    "open_interest_retained_frac": 1.0,  # 500 / 500
    "param_movement": 0.0,  # the first (only) row counts no movement
    "total_reward": 0.0,
    "total_cost": 0.0,
    "mean_mmr": 0.03,
}


def assert_row(row: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(row) == set(expected)
    for key, want in expected.items():
        got = row[key]
        if isinstance(want, float):
            assert type(got) is float, key
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15), (key, got, want)
        else:
            assert type(got) is type(want), key
            assert got == want, key


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (record_a_kwargs(), EXPECTED_A),
        (record_b_kwargs(), EXPECTED_B),
        (record_c_kwargs(), EXPECTED_C),
    ],
    ids=["a_dip_recover_fall", "b_fund_runs_dry", "c_one_step_no_fund_vault_emptied"],
)
def test_episode_metrics_hand_worked(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_row(episode_metrics(EpisodeRecord(**kwargs)), expected)


def test_episode_metrics_column_order() -> None:
    row = episode_metrics(record_a())
    assert list(row) == [*EPISODE_COLUMNS, "mean_max_leverage", "mean_mmr"]
    assert list(episode_metrics(EpisodeRecord(**record_b_kwargs()))) == list(EPISODE_COLUMNS)


def test_fund_exhausted_threshold_is_one_millionth_of_initial_oi() -> None:
    # initial OI 1e6: the threshold is 1e-6 * 1e6 = 1 USD
    def exhausted(fund_low: float) -> bool:
        kwargs = record_a_kwargs() | {
            "initial_open_interest_usd": 1e6,
            "fund_balance_usd": [80.0, 120.0, fund_low, 90.0],
        }
        return bool(episode_metrics(EpisodeRecord(**kwargs))["fund_exhausted"])

    assert exhausted(1.0)
    assert exhausted(0.5)
    assert not exhausted(1.01)


def test_a_fund_that_starts_empty_is_exhausted_only_after_holding_something() -> None:
    # initial OI 1000: the threshold is 1e-6 * 1000 = 0.001 USD
    assert not fund_exhausted(0.0, np.array([0.0, 0.0]), 1000.0)  # no fund ever
    assert not fund_exhausted(0.0, np.array([0.0, 5.0, 3.0]), 1000.0)  # fees, never emptied
    assert fund_exhausted(0.0, np.array([5.0, 0.0, 2.0]), 1000.0)  # fees, then emptied
    assert fund_exhausted(10.0, np.array([0.001]), 1000.0)  # to the threshold from a start
    assert not fund_exhausted(10.0, np.array([0.0011]), 1000.0)
    # a fund that starts empty: drawdown 0 (the running peak is 0, nothing to divide by)
    row = episode_metrics(record_a(initial_fund_usd=0.0, fund_balance_usd=[0.0] * 4))
    assert row["fund_max_drawdown_frac"] == 0.0 and row["fund_exhausted"] is False


def test_a_vault_below_zero_equity_draws_down_more_than_its_peak() -> None:
    # peak equity 100, then -20 before the loss beyond its equity went down the waterfall:
    # 1 - (-20) / 100 = 1.2; a fraction of the peak, not capped at 1
    row = episode_metrics(record_a(vault_drawdown_frac=[0.0, 0.5, 1.2, 1.2]))
    assert row["vault_max_drawdown_frac"] == 1.2
    # round-off below 0 is clipped, not refused
    assert record_a(vault_drawdown_frac=[-1e-12, 0.0, 0.0, 0.0]).vault_drawdown_frac[0] == 0.0


def test_fund_min_counts_the_initial_value() -> None:
    # every step's fund is above the start of 100: the minimum is the start
    rec = record_a(fund_balance_usd=[150.0, 200.0, 180.0, 190.0])
    row = episode_metrics(rec)
    assert row["fund_min_usd"] == 100.0
    # path 100, 150, 200, 180, 190: decline from 200 to 180 = 0.1
    assert math.isclose(float(row["fund_max_drawdown_frac"]), 0.1, rel_tol=1e-12)


def test_drawdown_from_the_initial_value() -> None:
    # the start 100 is the peak; the lowest later value 25 -> (100 - 25) / 100 = 0.75
    assert max_drawdown_frac(100.0, np.array([90.0, 25.0, 40.0])) == 0.75
    # a fund that starts at 0 and grows has no drawdown until it falls from a positive peak
    assert max_drawdown_frac(0.0, np.array([0.0, 10.0, 5.0])) == 0.5


def test_param_movement_first_row_counts_zero() -> None:
    # a jump from the environment's default into row 0 is not counted
    assert param_movement(np.array([[1.0, -1.0]])) == 0.0
    # |(-1) - 1| + |1 - (-1)| = 4 between rows 0 and 1; then |0 - (-1)| + |0 - 1| = 2
    assert param_movement(np.array([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]])) == 6.0
    assert param_movement(np.zeros((5, 0))) == 0.0


def test_an_amount_beyond_any_market_stops_the_row_naming_episode_and_metric() -> None:
    # A scenario whose prices overflowed: finite per-step numbers, a $9.4e89 loss.
    rec = record_a(socialized_loss_usd=[0.0, 0.0, 9.4e89, 0.0])
    with pytest.raises(MetricError) as exc:
        episode_metrics(rec)
    assert str(exc.value).startswith(
        "policy 'ppo' on scenario 'crash', episode 0 (seed 7): socialized_loss_usd = 9.4e+89 "
        "is beyond 1e+18 USD, more than any market holds"
    )
    # Just inside the bound is a (huge) market, and scores; the ratios may be anything.
    assert MAX_PLAUSIBLE_USD == 1e18
    row = episode_metrics(record_a(socialized_loss_usd=[0.0, 0.0, 9.9e17, 0.0]))
    assert row["socialized_loss_usd"] == 9.9e17
    assert row["socialized_loss_pct_oi"] == pytest.approx(9.9e16)  # 100 x 9.9e17 / 1000


def test_a_sum_that_overflows_float64_is_refused_not_raised_as_overflow() -> None:
    # math.fsum raises OverflowError on 1e308 + 1e308; the row reports inf and is refused.
    rec = record_a(fee_revenue_usd=[1e308, 1e308, 0.0, 0.0])
    with pytest.raises(MetricError, match=r"episode 0 \(seed 7\): fee_revenue_usd = inf is not"):
        episode_metrics(rec)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("total_reward", math.nan, "total_reward = nan is not finite"),
        ("mean_fund_to_oi_frac", -math.inf, "mean_fund_to_oi_frac = -inf is not finite"),
        ("fund_min_usd", -2e18, "fund_min_usd = -2e+18 is beyond 1e+18 USD"),
    ],
)
def test_check_metrics_names_the_first_bad_metric(key: str, value: float, why: str) -> None:
    row = episode_metrics(record_a())
    check_metrics(row)  # a sound row passes
    bad = {**row, key: value}
    with pytest.raises(MetricError, match=r"^policy 'ppo' on scenario 'crash', episode 0 "):
        check_metrics(bad)
    with pytest.raises(MetricError, match=re.escape(why)):
        check_metrics(bad)
    # Ratios and percentages may be large (a tiny open interest), never non-finite.
    check_metrics({**row, "bad_debt_pct_oi": 1e30, "episode": 3, "terminated": True})


def test_record_copies_its_inputs_and_normalises_types() -> None:
    fund = np.array([80.0, 120.0, 60.0, 90.0])
    rec = record_a(fund_balance_usd=fund, episode=np.int64(3), terminated=np.bool_(True))
    fund[2] = 0.0
    assert rec.fund_balance_usd[2] == 60.0
    assert type(rec.episode) is int and rec.episode == 3
    assert rec.terminated is True
    assert rec.n_steps == 4
    assert rec.time_minutes.dtype == np.float64


def test_negative_dust_is_clipped_to_zero() -> None:
    # initial OI 1000: up to 1e-9 * 1000 = 1e-6 USD below zero is rounding dust
    rec = record_a(shortfall_usd=[0.0, 20.0, 60.0, -5e-7])
    assert rec.shortfall_usd[3] == 0.0
    assert episode_metrics(rec)["shortfall_usd"] == 80.0


def test_positions_default_to_no_parameters() -> None:
    kwargs = record_a_kwargs()
    del kwargs["positions"]
    rec = EpisodeRecord(**kwargs)
    assert rec.positions.shape == (4, 0)
    assert episode_metrics(rec)["param_movement"] == 0.0


# ------------------------------------------------------------------------------------------
# EpisodeRecord validation: every path names its field
# ------------------------------------------------------------------------------------------

BAD_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"policy": ""}, "policy"),
    ({"policy": 3}, "policy"),
    ({"scenario": None}, "scenario"),
    ({"episode": 1.5}, "episode"),
    ({"episode": True}, "episode"),
    ({"seed": "7"}, "seed"),
    ({"terminated": "yes"}, "terminated"),
    ({"initial_open_interest_usd": 0.0}, r"initial_open_interest_usd must be > 0"),
    ({"initial_open_interest_usd": -5.0}, "initial_open_interest_usd"),
    ({"initial_open_interest_usd": math.nan}, "initial_open_interest_usd"),
    ({"initial_open_interest_usd": "1000"}, "initial_open_interest_usd"),
    ({"initial_fund_usd": -1.0}, r"initial_fund_usd must be >= 0"),
    ({"initial_fund_usd": math.inf}, "initial_fund_usd must be finite"),
    ({"initial_vault_usd": -1.0}, r"initial_vault_usd must be >= 0"),
    ({"initial_vault_usd": math.nan}, "initial_vault_usd must be finite"),
    ({"time_minutes": []}, r"time_minutes must have at least one step"),
    ({"time_minutes": [[15.0, 30.0, 45.0, 60.0]]}, r"time_minutes must be a 1-D"),
    ({"time_minutes": [0.0, 30.0, 45.0, 60.0]}, r"time_minutes must be > 0"),
    ({"time_minutes": [15.0, 30.0, 30.0, 60.0]}, r"time_minutes must be strictly increasing"),
    ({"time_minutes": ["a", 30.0, 45.0, 60.0]}, "time_minutes must be a 1-D array of numbers"),
    ({"fund_balance_usd": [80.0, 120.0, 60.0]}, r"fund_balance_usd must have one value per"),
    ({"open_interest_usd": [1000.0, math.nan, 500.0, 400.0]}, r"open_interest_usd.*index 1"),
    ({"reward": [0.5, -1.0, -math.inf, 0.25]}, r"reward must be finite.*index 2"),
    ({"shortfall_usd": [0.0, -20.0, 60.0, 0.0]}, r"shortfall_usd must be >= 0.*index 1"),
    ({"fund_balance_usd": [80.0, 120.0, -1e-3, 90.0]}, r"fund_balance_usd must be >= 0"),
    ({"capital_locked_usd": [110.0, -1.0, 75.0, 102.0]}, "capital_locked_usd"),
    ({"socialized_loss_usd": [0.0, 0.0, -5.0, 0.0]}, "socialized_loss_usd"),
    ({"unrecovered_usd": [-2.5, 0.0, 0.0, 0.0]}, "unrecovered_usd"),
    ({"adl_volume_usd": [0.0, 0.0, -40.0, 10.0]}, "adl_volume_usd"),
    ({"liquidation_volume_usd": [0.0, -1.0, 0.0, 0.0]}, "liquidation_volume_usd"),
    ({"fee_revenue_usd": [0.0, -1.0, 0.0, 0.0]}, "fee_revenue_usd"),
    ({"adl_overshoot_usd": [-1.0, 0.0, 0.0, 0.0]}, "adl_overshoot_usd must be >= 0"),
    ({"liquidator_absorbed_usd": [0.0, -1.0, 0.0, 0.0]}, "liquidator_absorbed_usd must be"),
    ({"vault_takeovers": [0.0, -1.0, 0.0, 0.0]}, r"vault_takeovers must be >= 0.*index 1"),
    ({"vault_takeover_usd": [0.0, 0.0, -1.0, 0.0]}, "vault_takeover_usd must be >= 0"),
    ({"vault_drawdown_frac": [0.0, -0.01, 0.2, 0.2]}, r"vault_drawdown_frac must be >= 0.*index 1"),
    ({"vault_pnl_usd": [0.0, math.nan, 0.0, 0.0]}, r"vault_pnl_usd must be finite.*index 1"),
    ({"vault_peak_inventory_usd": [0.0, 0.0]}, r"vault_peak_inventory_usd must have one value"),
    ({"mark_price": [100.0, 0.0, 90.0, 92.0]}, r"mark_price must be > 0.*index 1"),
    ({"cost": [0.0, 0.0]}, r"cost must have one value per step \(4"),
    ({"params": [("mmr", [0.03] * 4)]}, "params must be a dict"),
    ({"params": {3: [0.03] * 4}}, "params keys must be non-empty strings"),
    ({"params": {"fund_usd": [1.0] * 4}}, r"params key 'fund_usd' would write column mean_fund"),
    ({"params": {"mmr": [0.03] * 3}}, r"params\['mmr'\] must have one value per step"),
    ({"params": {"mmr": [0.03, math.nan, 0.03, 0.03]}}, r"params\['mmr'\] must be finite"),
    ({"positions": np.zeros((3, 2))}, r"positions must have shape \(n_steps, k\) = \(4, k\)"),
    ({"positions": np.zeros(4)}, r"positions must have shape"),
    ({"positions": [[0.0, 0.0], [0.5, math.nan], [0.0, 0.0], [0.0, 0.0]]}, "positions must be"),
    ({"positions": [[0.0, 0.0], [0.5, 1.5], [0.0, 0.0], [0.0, 0.0]]}, r"positions must lie in"),
    ({"positions": "up"}, "positions must be an"),
]


@pytest.mark.parametrize(("overrides", "match"), BAD_RECORDS)
def test_record_rejects_bad_input(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        record_a(**overrides)


# ------------------------------------------------------------------------------------------
# Quantiles
# ------------------------------------------------------------------------------------------

# Student-t quantiles from printed tables (4 decimals), as in any statistics textbook
T_TABLE_4DP = [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (1000, 1.9623)]


@pytest.mark.parametrize(("df", "expected"), T_TABLE_4DP)
def test_student_t_quantile_textbook_table(df: int, expected: float) -> None:
    assert abs(student_t_quantile(0.975, df) - expected) < 1e-4
    assert abs(student_t_quantile(0.025, df) + expected) < 1e-4  # symmetry


# 10 significant digits (R's qt)
T_TABLE_10SF = [
    (0.975, 1, 12.70620474),
    (0.975, 2, 4.302652730),
    (0.975, 3, 3.182446305),
    (0.975, 4, 2.776445105),
    (0.975, 9, 2.262157163),
    (0.975, 29, 2.045229642),
    (0.975, 1000, 1.962339081),
    (0.995, 10, 3.169272673),
    (0.95, 3, 2.353363435),
    (0.95, 5, 2.015048373),
    (0.9, 3, 1.637744354),
    (0.9995, 1, 636.6192488),
]


@pytest.mark.parametrize(("p", "df", "expected"), T_TABLE_10SF)
def test_student_t_quantile_ten_digits(p: float, df: int, expected: float) -> None:
    assert math.isclose(student_t_quantile(p, df), expected, rel_tol=5e-10)


@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.001, 0.1, 0.3, 0.6, 0.9, 0.999, 1 - 1e-9])
def test_student_t_quantile_closed_forms(p: float) -> None:
    # df = 1 is the Cauchy distribution: t = -cot(pi p) = cot(pi (1 - p)), written from the
    # nearer end (tan(pi (p - 1/2)) would lose the tails to rounding)
    cauchy = -1.0 / math.tan(math.pi * p) if p < 0.5 else 1.0 / math.tan(math.pi * (1 - p))
    assert math.isclose(student_t_quantile(p, 1), cauchy, rel_tol=1e-9)
    # df = 2: t = (2p - 1) / sqrt(2 p (1 - p))
    expected = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert math.isclose(student_t_quantile(p, 2), expected, rel_tol=1e-9)


def test_student_t_large_df_tends_to_normal_and_is_continuous() -> None:
    # at df = 1e12 the t and normal quantiles agree to ~(z^3 + z) / (4 df) = 2.4e-12
    assert math.isclose(student_t_quantile(0.975, 1e12), Z975, rel_tol=1e-11)
    # the switch to the normal expansion above df = 1e4 leaves no step
    below, above = student_t_quantile(0.975, 1e4), student_t_quantile(0.975, 1e4 * (1 + 1e-12))
    assert math.isclose(below, above, rel_tol=1e-12)
    assert student_t_quantile(0.5, 7) == 0.0


def test_student_t_cdf_cauchy_and_inverse() -> None:
    # Cauchy CDF 1/2 + atan(t) / pi
    for t in (-50.0, -1.0, 0.0, 0.3, 4.0):
        assert math.isclose(student_t_cdf(t, 1), 0.5 + math.atan(t) / math.pi, rel_tol=1e-12)
    assert math.isclose(student_t_cdf(1.962339081, 1000), 0.975, rel_tol=1e-9)
    assert math.isclose(student_t_cdf(Z975, 1e9), 0.975, rel_tol=1e-8)


NORMAL_TABLE = [
    (0.975, 1.959964),
    (0.995, 2.575829),
    (0.95, 1.644854),
    (0.999, 3.090232),
    (0.5, 0.0),
    (0.025, -1.959964),
]


@pytest.mark.parametrize(("p", "expected"), NORMAL_TABLE)
def test_normal_quantile_table(p: float, expected: float) -> None:
    assert abs(normal_quantile(p) - expected) < 1e-6


@pytest.mark.parametrize("p", [1e-300, 1e-20, 1e-10, 0.02, 0.02425, 0.2, 0.7, 0.98, 1 - 1e-12])
def test_normal_quantile_matches_the_standard_library(p: float) -> None:
    # statistics.NormalDist uses Wichura's AS241, an independent algorithm
    expected = statistics.NormalDist().inv_cdf(p)
    assert math.isclose(normal_quantile(p), expected, rel_tol=1e-13)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: student_t_quantile(0.0, 3), "p must lie strictly between 0 and 1"),
        (lambda: student_t_quantile(1.0, 3), "p must lie strictly between 0 and 1"),
        (lambda: student_t_quantile(math.nan, 3), "p must lie"),
        (lambda: student_t_quantile("0.9", 3), "p must be a number"),
        (lambda: student_t_quantile(0.9, 0), r"df \(degrees of freedom\) must be finite and > 0"),
        (lambda: student_t_quantile(0.9, -2), "df"),
        (lambda: student_t_quantile(0.9, math.inf), "df"),
        (lambda: student_t_quantile(0.9, None), "df must be a number"),
        (lambda: student_t_cdf(math.inf, 3), "t must be finite"),
        (lambda: student_t_cdf("1", 3), "t must be a finite number"),
        (lambda: student_t_cdf(1.0, math.nan), "df"),
        (lambda: normal_quantile(0.0), "p must lie strictly between 0 and 1"),
        (lambda: normal_quantile(1.5), "p must lie"),
        (lambda: normal_quantile(True), "p must be a number"),
    ],
)
def test_quantile_validation(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------
# mean_ci, wilson_interval, var_es
# ------------------------------------------------------------------------------------------


def test_mean_ci_hand_worked() -> None:
    # 1, 2, 3, 6: mean 3; squared deviations 4 + 1 + 0 + 9 = 14, s^2 = 14 / 3;
    # half-width t(0.975, 3) * s / sqrt(4) = 3.182446305 * sqrt(14 / 3) / 2
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 6.0])
    half = 3.182446305 * math.sqrt(14.0 / 3.0) / 2.0
    assert mean == 3.0
    assert math.isclose(low, 3.0 - half, rel_tol=1e-9)
    assert math.isclose(high, 3.0 + half, rel_tol=1e-9)
    # at 90%: t(0.95, 3) = 2.353363435
    _, low90, high90 = mean_ci(np.array([1.0, 2.0, 3.0, 6.0]), level=0.9)
    assert math.isclose(high90 - 3.0, 2.353363435 * math.sqrt(14.0 / 3.0) / 2.0, rel_tol=1e-9)
    assert math.isclose(3.0 - low90, high90 - 3.0, rel_tol=1e-12)


def test_mean_ci_degenerate_samples() -> None:
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)  # n = 1: no spread estimate, the point
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # zero spread


def test_wilson_hand_worked() -> None:
    # Wilson: centre = (p + z^2/(2n)) / (1 + z^2/n),
    #         half = z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n), z = 1.959963985
    def wilson(k: int, n: int) -> tuple[float, float, float]:
        p, z2 = k / n, Z975 * Z975
        denom = 1 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
        return p, centre - half, centre + half

    for k, published in [
        (0, (0.0, 0.0, 0.2775)),
        (3, (0.3, 0.1078, 0.6032)),
        (10, (1.0, 0.7225, 1.0)),
    ]:
        got = wilson_interval(k, 10)
        for g, w, pub in zip(got, wilson(k, 10), published, strict=True):
            assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-15)
            assert abs(g - pub) < 1e-4  # the 4-decimal values in published tables
    assert wilson_interval(0, 10)[1] == 0.0  # exactly, not -1e-17
    assert wilson_interval(10, 10)[2] == 1.0


def test_wilson_other_level() -> None:
    # 99%: z = 2.575829304; 0 of 20 -> high = (z^2/n) / (1 + z^2/n)
    z2n = 2.5758293035489004**2 / 20
    assert math.isclose(wilson_interval(0, 20, level=0.99)[2], z2n / (1 + z2n), rel_tol=1e-12)


def test_var_es_hand_worked() -> None:
    losses = list(range(1, 101))
    # VaR95: smallest x with #(<= x)/100 >= 0.95 -> 95; ES95 = mean(95..100) = 97.5
    assert var_es(losses, 0.95) == (95.0, 97.5)
    # VaR99 = 99; ES99 = mean(99, 100) = 99.5
    assert var_es(losses, 0.99) == (99.0, 99.5)
    # order does not matter
    assert var_es(np.array(losses[::-1], dtype=float), 0.95) == (95.0, 97.5)
    # 1..5: level 0.5 -> ceil(2.5) = 3rd value 3, ES = mean(3, 4, 5) = 4
    assert var_es([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == (3.0, 4.0)
    # level 0.6: 3 has share 3/5 = 0.6 >= 0.6 exactly -> 3 (no interpolation)
    assert var_es([1.0, 2.0, 3.0, 4.0, 5.0], 0.6) == (3.0, 4.0)
    # level 0.61 -> 4, ES = 4.5
    assert var_es([1.0, 2.0, 3.0, 4.0, 5.0], 0.61) == (4.0, 4.5)
    # 0.07 x 100 is 7.000000000000001 in floating point; the 7th value is still the VaR
    assert var_es(losses, 0.07) == (7.0, 53.5)  # ES = mean(7..100) = 107/2
    # small samples: VaR99 of 20 episodes is the maximum
    sample = [0.0] * 19 + [100.0]
    assert var_es(sample, 0.99) == (100.0, 100.0)
    # ties at VaR are in the tail: VaR95 = 19th value = 0, ES = mean of all 20 = 5
    assert var_es(sample, 0.95) == (0.0, 5.0)
    assert var_es([7.0], 0.99) == (7.0, 7.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mean_ci([]), "values must not be empty"),
        (lambda: mean_ci([[1.0, 2.0]]), r"values must be 1-D, got shape \(1, 2\)"),
        (lambda: mean_ci([1.0, math.nan]), "values must be finite.*index 1"),
        (lambda: mean_ci(["a", "b"]), "values must be a 1-D sequence of numbers"),
        (lambda: mean_ci([1.0, 2.0], level=0.0), "level must lie strictly between 0 and 1"),
        (lambda: mean_ci([1.0, 2.0], level=1.0), "level must lie"),
        (lambda: mean_ci([1.0, 2.0], level=95), "level must lie"),
        (lambda: mean_ci([1.0, 2.0], level="0.95"), "level must be a number"),
        (lambda: wilson_interval(11, 10), r"successes must lie in \[0, n\] = \[0, 10\]"),
        (lambda: wilson_interval(-1, 10), "successes must lie"),
        (lambda: wilson_interval(2.0, 10), "successes must be an integer"),
        (lambda: wilson_interval(True, 10), "successes must be an integer"),
        (lambda: wilson_interval(0, 0), "n must be >= 1"),
        (lambda: wilson_interval(0, 10.0), "n must be an integer"),
        (lambda: wilson_interval(1, 10, level=1.0), "level must lie"),
        (lambda: var_es([], 0.95), "losses must not be empty"),
        (lambda: var_es([1.0, math.inf], 0.95), "losses must be finite"),
        (lambda: var_es(np.ones((2, 2)), 0.95), "losses must be 1-D"),
        (lambda: var_es([1.0], 1.0), "level must lie"),
        (lambda: var_es([1.0], -0.5), "level must lie"),
    ],
)
def test_statistics_validation(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------
# summarize / summarize_policies
# ------------------------------------------------------------------------------------------


def four_rows() -> list[dict[str, Any]]:
    """A (ppo, crash), C (default, crash), B (ppo, crash), A again under (ppo, storm)."""
    a = episode_metrics(record_a())
    b = episode_metrics(EpisodeRecord(**record_b_kwargs()))
    c = episode_metrics(EpisodeRecord(**record_c_kwargs()))
    a_storm = episode_metrics(dataclasses.replace(record_a(), scenario="storm", episode=5))
    return [a, c, b, a_storm]


def test_summarize_groups_in_first_seen_order() -> None:
    out = summarize(four_rows())
    keys = [(s["policy"], s["scenario"], s["episodes"]) for s in out]
    assert keys == [("ppo", "crash", 2), ("default", "crash", 1), ("ppo", "storm", 1)]
    for line in out:
        for m in SUMMARY_METRICS:
            assert {m, f"{m}_ci_low", f"{m}_ci_high"} <= set(line)
        for key in (
            "p_fund_exhausted",
            "p_fund_exhausted_ci_low",
            "p_fund_exhausted_ci_high",
            "bad_debt_var95_usd",
            "bad_debt_var99_usd",
            "bad_debt_es99_usd",
            "solvency_loss_usd",
            "solvency_loss_usd_ci_low",
            "solvency_loss_usd_ci_high",
        ):
            assert key in line


def test_summarize_hand_worked_values() -> None:
    ppo_crash, default_crash, _ = summarize(four_rows())
    t1 = 12.70620474  # t(0.975, df = 1)
    # bad debt A 7.5, B 60: mean 33.75; for two values s / sqrt(2) = |60 - 7.5| / 2 = 26.25
    assert ppo_crash["bad_debt_usd"] == 33.75
    assert math.isclose(ppo_crash["bad_debt_usd_ci_low"], 33.75 - t1 * 26.25, rel_tol=1e-9)
    assert math.isclose(ppo_crash["bad_debt_usd_ci_high"], 33.75 + t1 * 26.25, rel_tol=1e-9)
    # solvency loss = bad debt + ADL: A 7.5 + 50 = 57.5, B 60 + 300 = 360;
    # mean 208.75, half-width t1 * |360 - 57.5| / 2 = t1 * 151.25
    assert ppo_crash["solvency_loss_usd"] == 208.75
    assert math.isclose(ppo_crash["solvency_loss_usd_ci_high"], 208.75 + t1 * 151.25, rel_tol=1e-9)
    # horizons 60 and 30 min -> 45
    assert ppo_crash["horizon_minutes"] == 45.0
    # VaR over 2 episodes: ceil(0.95 * 2) = 2nd value = 60; ES = 60
    assert ppo_crash["bad_debt_var95_usd"] == 60.0
    assert ppo_crash["bad_debt_var99_usd"] == 60.0
    assert ppo_crash["bad_debt_es99_usd"] == 60.0
    # fund exhausted in B only: 1 of 2, Wilson with n = 2, p = 0.5:
    # centre 0.5; half = z sqrt(0.25/2 + z^2/16) / (1 + z^2/2)
    half = Z975 * math.sqrt(0.125 + Z975**2 / 16) / (1 + Z975**2 / 2)
    assert ppo_crash["p_fund_exhausted"] == 0.5
    assert math.isclose(ppo_crash["p_fund_exhausted_ci_low"], 0.5 - half, rel_tol=1e-12)
    assert math.isclose(ppo_crash["p_fund_exhausted_ci_high"], 0.5 + half, rel_tol=1e-12)
    # one episode: every t-interval is the point; C never held a fund, so 0 of 1 exhausted:
    # Wilson p = 0, centre = half = (z^2 / 2) / (1 + z^2): low 0, high z^2 / (1 + z^2)
    assert default_crash["mean_capital_locked_usd"] == 15.0
    assert default_crash["mean_capital_locked_usd_ci_low"] == 15.0
    assert default_crash["p_fund_exhausted"] == 0.0
    assert default_crash["p_fund_exhausted_ci_low"] == 0.0
    high = Z975**2 / (1 + Z975**2)
    assert math.isclose(default_crash["p_fund_exhausted_ci_high"], high, rel_tol=1e-12)


def test_summarize_policies_pools_scenarios() -> None:
    out = summarize_policies(four_rows())
    assert [(s["policy"], s["scenario"], s["episodes"]) for s in out] == [
        ("ppo", "ALL", 3),
        ("default", "ALL", 1),
    ]
    ppo = out[0]
    # bad debt 7.5, 60, 7.5: mean 25; deviations -17.5, 35, -17.5; s^2 = 1837.5 / 2 = 918.75;
    # s / sqrt(3) = sqrt(306.25) = 17.5; t(0.975, 2) = 4.302652730
    assert ppo["bad_debt_usd"] == 25.0
    assert math.isclose(ppo["bad_debt_usd_ci_high"], 25.0 + 4.302652730 * 17.5, rel_tol=1e-9)
    # VaR95 of (7.5, 7.5, 60): ceil(2.85) = 3rd value = 60
    assert ppo["bad_debt_var95_usd"] == 60.0
    assert ppo["p_fund_exhausted"] == 1 / 3


def test_summarize_validation() -> None:
    rows = four_rows()
    with pytest.raises(ValueError, match="rows must not be empty"):
        summarize([])
    with pytest.raises(ValueError, match="rows must be a list"):
        summarize(rows[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rows\[1\] must be a dict"):
        summarize([rows[0], 3])  # type: ignore[list-item]
    missing = dict(rows[1])
    del missing["total_cost"]
    with pytest.raises(ValueError, match=r"rows\[1\] has no 'total_cost'"):
        summarize([rows[0], missing])
    as_text = dict(rows[0], bad_debt_usd="7.5")
    with pytest.raises(ValueError, match=r"rows\[0\]\['bad_debt_usd'\] must be a number"):
        summarize([as_text])
    with pytest.raises(ValueError, match=r"rows\[0\]\['fund_min_usd'\] must be finite"):
        summarize_policies([dict(rows[0], fund_min_usd=math.nan)])
    with pytest.raises(ValueError, match=r"rows\[0\]\['fund_exhausted'\] must be a bool"):
        summarize([dict(rows[0], fund_exhausted="False")])
    with pytest.raises(ValueError, match=r"rows\[0\]\['policy'\] must be a non-empty string"):
        summarize([dict(rows[0], policy="")])


# ------------------------------------------------------------------------------------------
# dominates
# ------------------------------------------------------------------------------------------

REFERENCE = {"scenario": "ALL", "solvency_loss_usd": 100.0, "mean_capital_locked_usd": 1000.0}


def cand(loss: float, capital: float) -> dict[str, Any]:
    return {"scenario": "ALL", "solvency_loss_usd": loss, "mean_capital_locked_usd": capital}


@pytest.mark.parametrize(
    ("loss", "capital", "dominated", "rule", "loss_ratio", "capital_ratio"),
    [
        (50.0, 1000.0, True, "loss", 0.5, 1.0),  # exactly half the loss, same capital
        (10.0, 900.0, True, "loss", 0.1, 0.9),
        (40.0, 700.0, True, "loss", 0.4, 0.7),  # both rules hold: "loss" is reported
        (50.5, 1000.0, False, None, 0.505, 1.0),  # just over half, same capital
        (40.0, 1000.5, False, None, 0.4, 1.0005),  # half the loss but more capital
        (100.0, 800.0, True, "capital", 1.0, 0.8),  # same loss, exactly 20% less capital
        (90.0, 500.0, True, "capital", 0.9, 0.5),
        (100.0, 800.5, False, None, 1.0, 0.8005),  # 19.95% less capital
        (100.5, 100.0, False, None, 1.005, 0.1),  # far less capital but more loss
    ],
)
def test_dominates_branches(
    loss: float,
    capital: float,
    dominated: bool,
    rule: str | None,
    loss_ratio: float,
    capital_ratio: float,
) -> None:
    out = dominates(cand(loss, capital), REFERENCE)
    assert out["dominates"] is dominated
    assert out["rule"] == rule
    assert math.isclose(out["loss_ratio"], loss_ratio, rel_tol=1e-12)
    assert math.isclose(out["capital_ratio"], capital_ratio, rel_tol=1e-12)


def test_dominates_zero_loss_edges() -> None:
    zero_ref = cand(0.0, 1000.0)
    # no loss on either side: the loss bar (0 <= 0.5 x 0) holds, so capital decides
    assert dominates(cand(0.0, 1000.0), zero_ref) == {
        "dominates": True,
        "rule": "loss",
        "loss_ratio": 0.0,
        "capital_ratio": 1.0,
    }
    more_capital = dominates(cand(0.0, 1200.0), zero_ref)
    assert more_capital["dominates"] is False and more_capital["loss_ratio"] == 0.0
    # any loss against a reference with none is an infinite ratio and never dominates
    worse = dominates(cand(5.0, 100.0), zero_ref)
    assert worse == {"dominates": False, "rule": None, "loss_ratio": math.inf, "capital_ratio": 0.1}
    # zero capital on both sides: capital ratio 0
    assert dominates(cand(10.0, 0.0), cand(100.0, 0.0))["capital_ratio"] == 0.0
    assert dominates(cand(10.0, 5.0), cand(100.0, 0.0))["capital_ratio"] == math.inf


def test_dominates_accepts_summary_lines() -> None:
    ppo, default = summarize_policies(four_rows())
    # ppo: solvency loss mean (57.5 + 360 + 57.5) / 3 = 158.33; capital mean
    # (107.75 + 24.17 + 107.75) / 3 = 79.89; default: loss 0, capital 15
    out = dominates(default, ppo)
    assert out["dominates"] is True and out["rule"] == "loss"
    assert dominates(ppo, default)["dominates"] is False


@pytest.mark.parametrize(
    ("candidate", "reference", "match"),
    [
        ({"mean_capital_locked_usd": 1.0}, REFERENCE, "candidate has no 'solvency_loss_usd'"),
        (cand(1.0, 1.0), {"solvency_loss_usd": 1.0}, "reference has no 'mean_capital_locked"),
        (cand(-1.0, 1.0), REFERENCE, r"candidate\['solvency_loss_usd'\] must be finite and >= 0"),
        (cand(1.0, math.nan), REFERENCE, r"candidate\['mean_capital_locked_usd'\] must be"),
        (cand(1.0, 1.0), cand(math.inf, 1.0), r"reference\['solvency_loss_usd'\]"),
        (cand("1", 1.0), REFERENCE, r"candidate\['solvency_loss_usd'\] must be a number"),
        (dict(cand(1.0, 1.0), scenario="crash"), REFERENCE, "same scenarios"),
        ([1.0, 1.0], REFERENCE, "candidate must be a summary dict"),
    ],
)
def test_dominates_validation(candidate: Any, reference: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dominates(candidate, reference)


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

finite_losses = st.lists(
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=60,
)
levels = st.floats(min_value=0.001, max_value=0.999)


@given(finite_losses, levels, levels)
def test_var_es_properties(losses: list[float], level_1: float, level_2: float) -> None:
    lo_level, hi_level = sorted((level_1, level_2))
    var_lo, es_lo = var_es(losses, lo_level)
    var_hi, es_hi = var_es(losses, hi_level)
    assert var_lo in losses and var_hi in losses
    assert es_lo >= var_lo and es_hi >= var_hi
    assert var_hi >= var_lo and es_hi >= es_lo
    assert es_hi <= max(losses)
    # the definition, by brute force: the smallest sample value whose share of values <= it
    # reaches the level (1e-9 slack for the level x n rounding the module also allows)
    n = len(losses)
    brute = min(x for x in losses if sum(y <= x for y in losses) >= hi_level * n - 1e-9)
    assert var_hi == brute


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=40),
    levels,
)
def test_mean_ci_contains_the_mean_and_widens_with_level(values: list[float], level: float) -> None:
    mean, low, high = mean_ci(values, level)
    assert low <= mean <= high
    assert math.isclose(mean, math.fsum(values) / len(values), rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(mean - low, high - mean, rel_tol=1e-9, abs_tol=1e-9)
    _, low_wide, high_wide = mean_ci(values, min(0.9999, level + 0.0001 + (1 - level) / 2))
    assert low_wide <= low and high_wide >= high


@given(st.integers(min_value=1, max_value=500), st.data())
def test_wilson_properties(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    p, low, high = wilson_interval(k, n)
    assert 0.0 <= low <= p <= high <= 1.0
    # mirror symmetry: failures' interval is the reflection
    _, low_q, high_q = wilson_interval(n - k, n)
    assert math.isclose(low, 1.0 - high_q, abs_tol=1e-12)
    assert math.isclose(high, 1.0 - low_q, abs_tol=1e-12)


@given(
    st.floats(min_value=0.0, max_value=1e9),
    st.lists(st.floats(min_value=0.0, max_value=1e9), min_size=1, max_size=50),
)
def test_drawdown_in_unit_interval_and_matches_brute_force(start: float, path: list[float]) -> None:
    dd = max_drawdown_frac(start, np.array(path))
    assert 0.0 <= dd <= 1.0
    values = [start, *path]
    brute = 0.0
    for j in range(len(values)):
        peak = max(values[: j + 1])
        if peak > 0:
            brute = max(brute, (peak - values[j]) / peak)
    assert dd == pytest.approx(brute, rel=1e-12, abs=1e-15)


@settings(max_examples=60)
@given(
    st.floats(min_value=1e-6, max_value=1 - 1e-6),
    st.one_of(st.integers(min_value=1, max_value=200), st.floats(min_value=0.5, max_value=1e7)),
)
def test_student_t_cdf_inverts_the_quantile(p: float, df: float) -> None:
    t = student_t_quantile(p, df)
    assert math.isclose(student_t_cdf(t, df), p, rel_tol=1e-9)
    # heavier tails than the normal: |t| >= |z|
    assert abs(t) >= abs(normal_quantile(p)) * (1 - 1e-12)


@given(st.floats(min_value=1e-300, max_value=1 - 1e-15))
def test_normal_quantile_matches_statistics_module(p: float) -> None:
    expected = statistics.NormalDist().inv_cdf(p)
    assert normal_quantile(p) == pytest.approx(expected, rel=1e-12, abs=1e-14)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=1e6),  # fund
            st.floats(min_value=0.0, max_value=1e7),  # open interest
            st.floats(min_value=0.0, max_value=1e5),  # socialised
            st.floats(min_value=0.0, max_value=1e5),  # unrecovered
            st.floats(min_value=-1.0, max_value=1.0),  # position
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(min_value=0.0, max_value=1e6),
)
def test_episode_metrics_properties(steps: list[tuple[float, ...]], fund0: float) -> None:
    n = len(steps)
    fund, oi, soc, unrec, pos = (np.array(col) for col in zip(*steps, strict=True))
    zeros = np.zeros(n)
    rec = EpisodeRecord(
        policy="p",
        scenario="s",
        episode=0,
        seed=0,
        initial_open_interest_usd=1e6,
        initial_fund_usd=fund0,
        initial_vault_usd=0.0,
        time_minutes=np.arange(1, n + 1) * 5.0,
        fund_balance_usd=fund,
        open_interest_usd=oi,
        capital_locked_usd=fund,
        mark_price=np.ones(n),
        liquidation_volume_usd=zeros,
        shortfall_usd=zeros,
        adl_volume_usd=zeros,
        socialized_loss_usd=soc,
        unrecovered_usd=unrec,
        fee_revenue_usd=zeros,
        adl_haircut_usd=zeros,
        adl_overshoot_usd=zeros,
        liquidator_absorbed_usd=zeros,
        vault_pnl_usd=zeros,
        vault_drawdown_frac=zeros,
        vault_peak_inventory_usd=zeros,
        vault_takeovers=zeros,
        vault_takeover_usd=zeros,
        vault_adl_usd=zeros,
        index_price=np.ones(n),
        fund_external_pnl_usd=zeros,
        reward=zeros,
        cost=zeros,
        positions=pos[:, None],
    )
    row = episode_metrics(rec)
    assert 0.0 <= row["fund_max_drawdown_frac"] <= 1.0
    assert row["fund_min_usd"] <= fund0 and row["fund_min_usd"] <= fund.min()
    # 1e-6 x 1e6 = 1 USD: a fund that starts above it is exhausted when it reaches it; one
    # that starts at or below it must first have held more
    if fund0 > 1.0:
        assert row["fund_exhausted"] == (row["fund_min_usd"] <= 1.0)
    elif row["fund_exhausted"]:
        assert fund.max() > 1.0 and fund.min() <= 1.0
    assert row["bad_debt_usd"] == row["socialized_loss_usd"] + row["unrecovered_usd"]
    assert math.isclose(
        row["bad_debt_pct_oi"], 100 * row["bad_debt_usd"] / 1e6, rel_tol=1e-12, abs_tol=1e-15
    )
    assert 0.0 <= row["param_movement"] <= 2.0 * (n - 1)
    assert row["horizon_minutes"] == 5.0 * n
