"""The environment's fast paths give exactly what the paths they replace give.

Each fast path (issue 14's speed bars) skips work whose result is known: a trusted build of
the sampler's draws, the opening ledger total of a new state, the levers' moves in one
compiled call, the observation in one compiled call. Each test here runs the fast path and
the slow one on the same inputs and compares them bit for bit (``tobytes``), so a fast path
that drifts by one rounding fails.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from fundgym.envs.controls import MARGIN_PARAMS, PARAMS, Controls
from fundgym.envs.exchange_env import MIN_DEPTH_USD_PER_PCT, OBS_CLIP, InsuranceFundVectorEnv
from fundgym.envs.fund.kernels import fund_arrays, values_and_weights
from fundgym.envs.market import sampler
from fundgym.envs.scenarios import Scenario, scenario_from_dict, scenario_from_draw
from fundgym.envs.schema import SchemaError, build_trusted
from fundgym.envs.state import SimState, ledger_total


def _draw_and_reference(
    seed: int, horizon_minutes: float, crash_prob: float, thin_prob: float
) -> tuple[Scenario, Scenario]:
    """A sampler draw, and the same mapping validated in full by the schema."""
    seen: list[dict[str, object]] = []

    def capture(data: dict[str, object], source: str) -> Scenario:
        seen.append(data)
        return scenario_from_draw(data, source)

    mp = pytest.MonkeyPatch()
    mp.setattr(sampler, "scenario_from_draw", capture)
    try:
        drawn = sampler.sample_training_scenario(
            np.random.default_rng([seed, 1]),
            horizon_minutes=horizon_minutes,
            crash_prob=crash_prob,
            thin_prob=thin_prob,
        )
    finally:
        mp.undo()
    return drawn, scenario_from_dict(seen[0], "<reference>")


@pytest.mark.parametrize("horizon_minutes", [0.05, 60.0, 1440.0, 90 * 1440.0])
@pytest.mark.parametrize(("crash_prob", "thin_prob"), [(1.0, 1.0), (1.0, 0.0), (0.0, 0.5)])
def test_sampler_draw_equals_validated_build(
    horizon_minutes: float, crash_prob: float, thin_prob: float
) -> None:
    """Every kind of draw (crashes, pumps, thin books, regimes) equals the schema's build."""
    for seed in range(12):
        drawn, reference = _draw_and_reference(seed, horizon_minutes, crash_prob, thin_prob)
        assert drawn == reference
        assert repr(drawn) == repr(reference)  # the same types too: 0 (int) would print as 0


def test_trusted_build_converts_as_build_does() -> None:
    """An integer for a float field becomes a float, lists become tuples, sections nest."""
    data = {
        "name": "x",
        "description": "y",
        "tick_minutes": 1,
        "price": {
            "initial": 100,
            "regimes": {"vol_multipliers": [1, 2], "switch_rate_per_day": [[0, 1], [2, 0]]},
        },
        "depth": {
            "normal_usd_per_pct": 1e6,
            "collapses": [{"start_minute": 5, "minutes_to_floor": 1, "floor_mult": 0.5}],
        },
    }
    trusted = build_trusted(Scenario, data)
    assert trusted == scenario_from_dict(data)
    assert type(trusted.tick_minutes) is float and type(trusted.price.initial) is float
    assert trusted.price.regimes is not None
    assert trusted.price.regimes.switch_rate_per_day == ((0.0, 1.0), (2.0, 0.0))


def test_draw_breaking_a_rule_is_reported_by_the_schema() -> None:
    """A cross-field rule broken by a mapping is reported as the full validation names it."""
    data = {
        "name": "x",
        "description": "y",
        "horizon_minutes": 60.0,
        "price": {"initial": 100.0},
        "depth": {"normal_usd_per_pct": 1e6},
        "crash": {"start_minute": 50.0, "legs": [{"kind": "decline", "minutes": 20.0}]},
    }
    with pytest.raises(SchemaError, match=r"<draw>: <top> = .*crash ends at minute 70"):
        scenario_from_draw(data, "<draw>")


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"price": -1.0}, "price.initial"), ({"tick_minutes": 2000.0}, "tick_minutes")],
)
def test_sampler_checks_the_callers_settings(settings: dict[str, float], field: str) -> None:
    """What the caller chooses is still checked by the schema, naming the field."""
    with pytest.raises(SchemaError, match=f"<training sampler>: {field} = "):
        sampler.sample_training_scenario(np.random.default_rng(0), **settings)


def test_state_create_total_equals_ledger_total() -> None:
    """The opening total ``create`` writes is :func:`ledger_total` at a mark of 1, bit for bit.

    Signed zeros included: ``-0.0`` collateral, sizes and fund, where one ``+ 0.0`` decides the
    sign of the result.
    """
    rng = np.random.default_rng(3)
    for trial in range(300):
        e, a, m = int(rng.integers(1, 4)), int(rng.integers(1, 20)), int(rng.integers(1, 4))
        size = rng.normal(size=(e, a, m)) * rng.choice([0.0, 1.0, 1e6, 1e-9], size=(e, a, m))
        if trial % 3 == 0:
            size[size == 0.0] = -0.0
        entry = np.where(size != 0.0, rng.uniform(0.5, 1e5, (e, a, m)), 0.0)
        collateral = rng.normal(size=(e, a)) * rng.choice([0.0, -0.0, 1.0, 1e9], (e, a))
        fund = rng.choice([0.0, -0.0, 1.0, 12_345.678, 1e12], e)
        state = SimState.create(collateral, size, entry, fund)
        reference = ledger_total(state, np.ones((e, m)))
        assert state.initial_total_usd.tobytes() == reference.tobytes()


def test_state_create_all_negative_zero() -> None:
    """A book of ``-0.0`` everywhere: ``ledger_total`` gives ``+0.0``, and so does ``create``."""
    state = SimState.create(np.full((1, 2), -0.0), np.full((1, 2), -0.0), np.zeros((1, 2)), -0.0)
    assert state.initial_total_usd.tobytes() == np.zeros(1).tobytes()
    assert ledger_total(state, np.ones((1, 1))).tobytes() == np.zeros(1).tobytes()


def _apply_by_numpy(c: Controls, action: np.ndarray) -> np.ndarray:
    """:meth:`Controls.apply` lever by lever in numpy: the arithmetic the kernel replaced."""
    c.decision += 1
    moved = np.zeros(c.n_envs)
    for name in MARGIN_PARAMS:
        ready = ~np.isnan(c.pending[name]) & (c.decision >= c.due[name])
        c.position[name][:] = np.where(ready, c.pending[name], c.position[name])
        c.pending[name][:] = np.where(ready, np.nan, c.pending[name])
    for j, name in enumerate(c.controlled):
        in_force = c.position[name].copy()
        if name in MARGIN_PARAMS and c.notice > 0:
            pend = c.pending[name].copy()
            down = action[:, j] < in_force
            reference = np.where(down | np.isnan(pend), in_force, pend)
            target = reference + np.minimum(
                np.maximum(action[:, j] - reference, -c.max_step), c.max_step
            )
            moved += np.abs(target - reference)
            lower = target <= in_force
            c.position[name][:] = np.where(lower, target, in_force)
            c.due[name][:] = np.where(~lower & np.isnan(pend), c.decision + c.notice, c.due[name])
            c.pending[name][:] = np.where(lower, np.nan, target)
        else:
            target = in_force + np.minimum(
                np.maximum(action[:, j] - in_force, -c.max_step), c.max_step
            )
            moved += np.abs(target - in_force)
            c.position[name][:] = target
    return moved


@pytest.mark.parametrize(
    ("controlled", "notice", "max_step"),
    [
        (tuple(PARAMS), 3, 0.2),
        (tuple(PARAMS), 0, 0.2),
        (("imr_multiple", "alloc_hedge", "mmr"), 1, 0.05),
        (tuple(reversed(PARAMS)), 5, 2.0),
    ],
)
def test_compiled_controls_equal_numpy(
    controlled: tuple[str, ...], notice: int, max_step: float
) -> None:
    """Moves, positions, pending raises and their clocks, to the bit, over resets too."""
    fast = Controls(controlled, {"mmr": 0.05}, max_step, notice, 9)
    slow = Controls(controlled, {"mmr": 0.05}, max_step, notice, 9)
    rng = np.random.default_rng(5)
    for i in range(120):
        action = rng.uniform(-1.0, 1.0, (9, len(controlled)))
        if i % 3 == 0:  # edges, ties with the level in force and signed zeros
            action[:4] = rng.choice([-1.0, 1.0, 0.0, -0.0], (4, len(controlled)))
        assert fast.apply(action).tobytes() == _apply_by_numpy(slow, action).tobytes()
        assert fast.normalised().tobytes() == slow.normalised().tobytes()
        for name in MARGIN_PARAMS:
            assert np.array_equal(fast.pending[name], slow.pending[name], equal_nan=True)
            assert fast.due[name].tobytes() == slow.due[name].tobytes()
        if i % 10 == 0:
            mask = rng.random(9) < 0.4
            fast.reset(mask)
            slow.reset(mask)


def test_copied_controls_move_their_own_arrays() -> None:
    """A deep copy (or pickle) of the controls moves its own positions, not the original's."""
    original = Controls(tuple(PARAMS), {}, 0.2, 3, 5)
    twin = copy.deepcopy(original)
    action = np.full((5, len(PARAMS)), 1.0)
    twin.apply(action)
    assert twin.position["liquidation_fee_rate"][0] > original.position["liquidation_fee_rate"][0]
    assert twin.normalised().tobytes() != original.normalised().tobytes()
    original.apply(action)
    assert twin.normalised().tobytes() == original.normalised().tobytes()
    assert pickle.loads(pickle.dumps(twin)).normalised().tobytes() == twin.normalised().tobytes()


def test_compiled_observation_equals_numpy() -> None:
    """Every column of the compiled observation, against the numpy formulas it replaced."""
    env = InsuranceFundVectorEnv(num_envs=4, n_accounts=64)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(6):
        obs, *_ = env.step(rng.uniform(-1.0, 1.0, (4, env.core.action_dim)))
    core = env.core
    sim = core.sim
    assert sim is not None
    book = core.last_book
    fund_value = core.last_fund_value_usd
    weights = np.empty((4, 4))
    values_and_weights(
        fund_arrays(sim.portfolio), sim.last_index, sim.vol_annual, np.empty(4), weights
    )
    oi, long_oi, short_oi = book[:, 0], book[:, 1], book[:, 2]
    oi0 = np.maximum(sim.initial_open_interest_usd, 1.0)
    depth = np.maximum(sim.last_depth_usd_per_pct, MIN_DEPTH_USD_PER_PCT)
    per_year = 525_600.0 / core.tick_minutes
    expected = np.empty_like(obs, dtype=np.float64)
    expected[:, 0] = np.sqrt(core.var_short * per_year)
    expected[:, 1] = np.sqrt(core.var_long * per_year)
    expected[:, 2] = 100.0 * core.last_return
    expected[:, 3] = sim.last_depth_mult
    expected[:, 4] = np.log10(np.maximum(oi, 1.0) / depth)
    expected[:, 5] = 100.0 * (core.last_oracle / core.last_mark - 1.0)
    expected[:, 6] = 1e3 * core.last_funding
    expected[:, 7] = oi / oi0
    expected[:, 8] = (long_oi - short_oi) / np.maximum(long_oi + short_oi, 1e-12)
    expected[:, 9:12] = book[:, 3:6] / 50.0
    expected[:, 12:15] = book[:, 6:9]
    expected[:, 15] = 10.0 * fund_value / np.maximum(oi, 1.0)
    expected[:, 16:20] = weights
    expected[:, 20] = 100.0 * core.last_liq_usd / oi0
    expected[:, 21] = 1e3 * core.last_shortfall_usd / oi0
    expected[:, 22 : 22 + len(PARAMS)] = core.controls.normalised()
    expected[:, -1] = core.decision / np.maximum(core.n_decisions, 1)
    expected = np.minimum(np.maximum(expected, -OBS_CLIP), OBS_CLIP)
    assert core.observe(book).tobytes() == expected.tobytes()
