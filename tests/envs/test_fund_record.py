"""The per-step fund record stacks every flow and the balance after each step."""

import numpy as np
import pytest

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.fund_record import FundRecord
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.state import SimState
from tests.books import worked_params


def test_record_stacks_steps_and_totals():
    # Step 1: the long of test_core_step's fee case (fee 93.906, half to the fund);
    # step 2: nothing happens; step 3: a second exchange-wide zero step. The book fills the
    # 9,400 sold 0.1% below the mark: 9,390.6, fee 1% = 93.906.
    state = SimState.create([[1000.0]], [[1.0]], [[10_000.0]], 1000.0)
    # The book stage alone: outside liquidators (tests/envs/test_liquidators.py) would take
    # part of the flow at the oracle once paid half the fee.
    p = worked_params(liquidator_capacity_mult=0.0)
    record = FundRecord(state.fund_usd)
    for mark in (9_400.0, 9_000.0, 8_000.0):
        ev = core_step(state, p, np.array([mark]), SqrtImpact.for_slippage(9_400.0, 0.001))
        record.append(ev, state.fund_usd)
    arrays = record.arrays()
    assert len(record) == 3
    assert arrays["fund_usd"].shape == (3, 1)
    np.testing.assert_allclose(arrays["fund_usd"][:, 0], [1046.953] * 3, rtol=1e-12)
    np.testing.assert_allclose(arrays["fund_fee_income_usd"][:, 0], [46.953, 0, 0], rtol=1e-12)
    totals = record.totals()
    assert totals["n_liquidations"][0] == 1
    assert totals["fund_start_usd"][0] == 1000.0
    assert totals["fund_min_usd"][0] == 1000.0
    assert totals["fund_end_usd"][0] == pytest.approx(1046.953, rel=1e-12)
    assert set(StepEvents.FIELDS) <= set(arrays)


def test_tiers_drive_the_trigger():
    # A 2M-notional long at 10x (collateral 200k) under Binance brackets needs 33,700 at
    # 100,000 (2M x 2.5% - 16,300). At 91,000 notional is 1.82M: requirement
    # 1.82M x 2.5% - 16,300 = 29,200; equity 200,000 - 20 x 9,000 = 20,000 < 29,200 -> liquidated.
    # With a flat 0.4% MMR the requirement would be 7,280 and nothing would happen.
    def run(tiers):
        s = SimState.create([[200_000.0]], [[20.0]], [[100_000.0]], 1e9)
        ev = core_step(
            s, RiskParams(mmr=0.004, imr=0.1, tiers=tiers), np.array([91_000.0]), SqrtImpact(1e12)
        )
        return int(ev.n_liquidations[0])

    assert run(MarginTiers.binance_btcusdt_2021()) == 1
    assert run(None) == 0
