"""The decision's fast paths give exactly what the paths they replace give.

Every decision maps the levers' positions to values (:meth:`Controls.values`), hands the
parameters to the simulator (``set_params``) and rebalances the fund (``set_allocation``).
The levers are now mapped all at once by :func:`fundgym.envs.levers.positions_to_values`, the
tier table and the fund's terms are built once, and the checks on the weights take fewer
passes. Each test compares with the per-lever formula or the validation it replaces, bit for
bit (``tobytes``, so a NaN or a signed zero counts too), or checks that a cache follows a change.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from fundgym.envs.controls import ALLOCATION, ALLOCATION_SHARPNESS, PARAMS, Controls
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.fund.kernels import allocation_terms
from fundgym.envs.levers import Lever, action_columns, positions_to_values
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Positions on the edges, in the middle, outside [-1, 1] (clipped) and NaN (kept NaN).
EDGE_POSITIONS = np.array(
    [-1.0, 1.0, 0.0, -0.0, 0.5, -0.5, -1.0 - 1e-12, 1.0 + 1e-12, -3.0, 2.5, 1e300, -np.inf, np.inf,
     np.nan],
)  # fmt: skip
LEVERS = tuple(PARAMS.values())


def _positions(n_random: int) -> FloatArray:
    """The edge positions, an even grid over [-1, 1] and uniform draws over [-1.5, 1.5]."""
    rng = np.random.default_rng(14)
    return np.concatenate(
        [EDGE_POSITIONS, np.linspace(-1.0, 1.0, 401), rng.uniform(-1.5, 1.5, n_random)]
    )


def _per_lever(lever: Lever, position: FloatArray) -> FloatArray:
    """The mapping as ``Lever.to_value`` wrote it before the batch: one lever, one array."""
    a = lever.action
    assert a is not None
    p = np.asarray(position, dtype=np.float64)
    u = (np.minimum(np.maximum(p, -1.0), 1.0) + 1.0) / 2.0
    if a.log:
        return np.asarray(a.low * (a.high / a.low) ** u, dtype=np.float64)
    return np.asarray(a.low + u * (a.high - a.low), dtype=np.float64)


def test_the_batch_maps_every_lever_as_the_per_lever_formula_does_to_the_bit() -> None:
    positions = _positions(2_000)
    # every lever at every position; lever i's row holds its own draws so rows differ
    rows = np.stack([np.roll(positions, 7 * i) for i in range(len(LEVERS))])
    low, high, log = action_columns(LEVERS)
    assert log.any() and not log.all()  # both formulas in one batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a linear lever's ratio must not divide by its low
        batch = positions_to_values(rows, low, high, log)
    assert batch.shape == rows.shape
    for i, lever in enumerate(LEVERS):
        expected = _per_lever(lever, rows[i])
        assert batch[i].tobytes() == expected.tobytes(), lever.name
        assert lever.to_value(rows[i]).tobytes() == expected.tobytes(), lever.name


def test_one_lever_at_a_scalar_position_keeps_the_scalar_arithmetic() -> None:
    # A Python float at a time: the reference is pure Python (the C library's pow), as the
    # scalar path has always been; an array loop's pow may differ in the last bit.
    for lever in LEVERS:
        a = lever.action
        assert a is not None
        for p in [*EDGE_POSITIONS[:-1].tolist(), *np.linspace(-1.0, 1.0, 97).tolist()]:
            u = (min(max(p, -1.0), 1.0) + 1.0) / 2.0
            expected = a.low * (a.high / a.low) ** u if a.log else a.low + u * (a.high - a.low)
            got = lever.to_value(np.float64(p))
            assert got.shape == ()
            assert got.tobytes() == np.float64(expected).tobytes(), (lever.name, p)
        assert np.isnan(lever.to_value(np.nan))


def test_hand_worked_values_of_a_linear_and_a_logarithmic_lever() -> None:
    # linear [0.2, 1.0]: -1 -> 0.2, 0 -> 0.2 + 0.5 x 0.8 = 0.6, beyond 1 -> 1.0
    # log [1e-4, 1e-2]: -1 -> 1e-4, 0 -> 1e-4 x 100 ** 0.5 = 1e-3, below -1 -> 1e-4
    low = np.array([[0.2], [1e-4]])
    high = np.array([[1.0], [1e-2]])
    log = np.array([[False], [True]])
    p = np.array([[-1.0, 0.0, 3.0, np.nan], [-1.0, 0.0, -7.0, np.nan]])
    v = positions_to_values(p, low, high, log)
    assert v[0, 0] == 0.2 and v[1, 0] == 1e-4 and v[1, 2] == 1e-4  # u = 0: low exactly
    assert v[0, 1] == pytest.approx(0.6, rel=1e-15) and v[0, 2] == pytest.approx(1.0, rel=1e-15)
    assert v[1, 1] == pytest.approx(1e-3, rel=1e-14)
    assert np.isnan(v[:, 3]).all()


def _values_per_lever(controls: Controls) -> dict[str, FloatArray]:
    """``Controls.values`` as it was: each lever mapped alone, the logits stacked."""
    out = {
        name: _per_lever(lever, controls.position[name])
        for name, lever in PARAMS.items()
        if name not in ALLOCATION
    }
    logits = np.stack([controls.position[n] for n in ALLOCATION], axis=1)
    z = ALLOCATION_SHARPNESS * logits
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    weights = e / e.sum(axis=-1, keepdims=True)
    for k, name in enumerate(ALLOCATION):
        out[name] = weights[:, k]
    out["imr"] = np.minimum(out["mmr"] * out["imr_multiple"], 1.0)
    return out


def test_controls_values_equal_the_per_lever_mapping_to_the_bit() -> None:
    controls = Controls(tuple(PARAMS), {}, 0.2, 3, n_envs=64)
    rng = np.random.default_rng(3)
    for _ in range(5):
        controls.apply(rng.uniform(-1.0, 1.0, (64, len(PARAMS))))
        got = controls.values()
        expected = _values_per_lever(controls)
        assert list(got) == list(expected)
        for name in expected:
            assert got[name].tobytes() == expected[name].tobytes(), name


def test_in_force_weights_are_the_allocation_columns_stacked() -> None:
    """The decision rebalances toward ``in_force()``'s array: the weights ``values()`` maps."""
    controls = Controls(tuple(PARAMS), {}, 0.2, 3, n_envs=16)
    rng = np.random.default_rng(4)
    controls.apply(rng.uniform(-1.0, 1.0, (16, len(PARAMS))))
    values, weights = controls.in_force()
    stacked = np.stack([controls.values()[name] for name in ALLOCATION], axis=1)
    assert weights.shape == (16, 4) and weights.tobytes() == stacked.tobytes()
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights > 0).all()
    for k, name in enumerate(ALLOCATION):  # the dict's columns are views of the array
        assert np.shares_memory(values[name], weights) and (values[name] == weights[:, k]).all()


def _sim(**kw: Any) -> ExchangeSimulator:
    return ExchangeSimulator(load_scenario("volatile"), n_envs=2, n_accounts=64, seed=3, **kw)


def _tables_equal(a: tuple[FloatArray, ...], b: tuple[FloatArray, ...]) -> bool:
    return len(a) == len(b) and all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


def test_set_params_builds_the_tier_table_again_when_the_tiers_change() -> None:
    sim = _sim()
    tiers = MarginTiers.binance_btcusdt_2021()
    flat = sim._tiers
    assert flat[0].size == 0
    sim.set_params(RiskParams(tiers=tiers))
    assert _tables_equal(sim._tiers, RiskParams(tiers=tiers).tier_table())
    assert sim._tiers[0].size > 0
    kept = sim._tiers
    sim.set_params(RiskParams(tiers=tiers, mmr=0.04))  # same schedule: the same table
    assert sim._tiers is kept
    sim.set_params(RiskParams())  # no tiers again: the flat (empty) table
    assert _tables_equal(sim._tiers, flat)
    assert sim.risk.mmr == RiskParams().mmr


def test_set_params_still_rejects_a_misshapen_array() -> None:
    sim = _sim()
    with pytest.raises(ValueError, match=r"RiskParams\.mmr must be a float or an \(n_envs,\)"):
        sim.set_params(RiskParams(mmr=np.array([0.05, 0.05, 0.05])))


@pytest.mark.parametrize(
    "row",
    [
        [0.5, 0.5, np.nan, 0.0],
        [np.inf, 0.0, 0.0, 0.0],
        [1.2, -0.2, 0.0, 0.0],
        [0.5, 0.4, 0.0, 0.0],
    ],
)
def test_set_allocation_still_rejects_bad_weights(row: list[float]) -> None:
    sim = _sim()
    with pytest.raises(ValueError, match="target_weights rows must be >= 0 and sum to 1"):
        sim.set_allocation(np.array([[1.0, 0.0, 0.0, 0.0], row]))


def test_set_allocation_broadcasts_one_row_as_a_full_batch_does() -> None:
    row = np.array([0.4, 0.2, 0.2, 0.2])
    one, full = _sim(), _sim()
    for sim in (one, full):
        for _ in range(5):
            sim.step()
    cost_one = one.set_allocation(row)
    cost_full = full.set_allocation(np.tile(row, (2, 1)))
    assert cost_one.tobytes() == cost_full.tobytes() and (cost_one > 0.0).all()
    assert one.fund_weights().tobytes() == full.fund_weights().tobytes()
    assert one._allocation_terms().tobytes() == (
        allocation_terms(one.allocation, one._tick_minutes).tobytes()
    )


def test_exchanges_risk_rows_take_their_own_entries() -> None:
    sim = _sim()
    tiers = MarginTiers.binance_btcusdt_2021()
    sim.set_params(RiskParams(mmr=np.array([0.01, 0.03]), imr=np.array([0.02, 0.05]), tiers=tiers))
    rows = sim._risk_rows(np.array([1]))
    assert rows.mmr.tolist() == [0.03] and rows.imr.tolist() == [0.05]
    assert rows.packed(1).tolist() == [sim.risk.packed(2)[1].tolist()]
    both = sim._risk_rows(np.array([1, 0]))
    assert both.packed(2).tolist() == sim.risk.packed(2)[[1, 0]].tolist()
    assert rows.taker_fee_rate == RiskParams().taker_fee_rate
    assert rows.tiers is tiers and rows.liquidation_mode == RiskParams().liquidation_mode
    one = ExchangeSimulator(load_scenario("volatile"), n_envs=1, n_accounts=64, seed=3)
    one.set_params(RiskParams(mmr=np.array([0.02]), imr=np.array([0.04])))
    assert one._risk_rows(np.array([0])).packed(1).tolist() == one.risk.packed(1).tolist()
