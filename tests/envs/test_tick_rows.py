"""The compiled tick's row kernels: the same bits as the kernels they stand in for."""

import numpy as np

from fundgym.envs.core.kernels import count_liquidatable, count_liquidatable_flat_row
from fundgym.envs.core.trading import _funding_kernel, funding_row
from fundgym.envs.observation import decision_close, decision_totals
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator
from fundgym.envs.state import SimState


def _book(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collateral, size and entry of ``n`` slots, a third of them empty, some at -0."""
    size = rng.normal(0.0, 2.0, n) * (rng.random(n) < 0.66)
    size[::17] = -0.0
    coll = rng.uniform(-5.0, 50.0, n)
    coll[::13] = -0.0
    entry = np.where(size != 0.0, rng.uniform(90.0, 110.0, n), 0.0)
    return coll, size, entry


def test_funding_row_by_hand():
    coll = np.array([10.0, 5.0, -0.0, 3.0])
    size = np.array([2.0, 0.0, 0.0, -1.0])
    total = funding_row(coll, size, 0.25, True)
    # 10 - 2 x 0.25, untouched, untouched (still -0), 3 - (-1 x 0.25); paid 0.5 - 0.25.
    np.testing.assert_array_equal(coll, [9.5, 5.0, 0.0, 3.25])
    assert np.signbit(coll[2])
    assert total == 0.25
    assert np.isnan(funding_row(coll, size, 0.25, False))  # no total asked for
    np.testing.assert_array_equal(coll, [9.0, 5.0, 0.0, 3.5])


def test_funding_row_matches_the_batch_kernel_to_the_bit():
    rng = np.random.default_rng(7)
    for per_unit in (3e-5, -2e-4, 0.0, -0.0):
        coll, size, _ = _book(rng, 1001)
        want_coll = coll[None, :].copy()
        paid = np.zeros(1)
        rate, mark = np.array([[per_unit / 100.0]]), np.array([[100.0]])
        _funding_kernel(
            want_coll, size[None, :, None], np.zeros((1, 1)), np.zeros(1), np.zeros((1, 4)),
            rate, mark, paid,
        )  # fmt: skip
        got = coll.copy()
        total = funding_row(got, size, rate[0, 0] * mark[0, 0], True)
        assert got.tobytes() == want_coll[0].tobytes()
        assert np.float64(total).tobytes() == paid.tobytes()


def test_flat_row_count_by_hand_and_against_the_batch_count():
    # Long 1 at 100 with $1 at a mark of 95: equity -4 below 4.75 required; the second has
    # $100; the empty slot requires nothing and is never liquidatable.
    coll, size, entry = np.array([1.0, 100.0, 0.0]), np.array([1.0, 1.0, 0.0]), np.full(3, 100.0)
    assert count_liquidatable_flat_row(coll, size, entry, 95.0, 0.05) == 1
    rng = np.random.default_rng(3)
    empty = np.zeros(0)
    for _ in range(5):
        coll, size, entry = _book(rng, 777)
        m, mmr = float(rng.uniform(85.0, 115.0)), float(rng.uniform(0.01, 0.2))
        want = count_liquidatable(
            coll[None, :], size[None, :, None], entry[None, :, None], 0, m, mmr, empty, empty,
            empty, 1.0,
        )  # fmt: skip
        assert count_liquidatable_flat_row(coll, size, entry, m, mmr) == want


def test_decision_totals_equal_numpy_tick_by_tick():
    rng = np.random.default_rng(5)
    events = rng.normal(size=(10, 4, 6))
    r2 = rng.random((10, 4)) * 1e-4
    var_s, var_l = rng.random(4) * 1e-5, rng.random(4) * 1e-5
    want_total, want_s, want_l = np.zeros((4, 6)), var_s.copy(), var_l.copy()
    for k in range(10):
        want_total += events[k]
        want_s += 0.3 * (r2[k] - want_s)
        want_l += 0.01 * (r2[k] - want_l)
    total = np.zeros((4, 6))
    decision_totals(events, r2, 0.3, 0.01, var_s, var_l, total)
    assert total.tobytes() == want_total.tobytes()
    assert var_s.tobytes() == want_s.tobytes() and var_l.tobytes() == want_l.tobytes()


def test_decision_close_equals_the_numpy_expressions_it_replaces():
    # The step's bookkeeping after its ticks, against the numpy it replaced: the last prices,
    # the liquidated and shortfall sums, the uncovered loss with each tick's haircut floored at
    # zero (negative haircuts are gains, not netted), the largest tick and the last flag.
    rng = np.random.default_rng(11)
    t, e, n_ev, n_series = 10, 5, 24, 8
    events = rng.normal(size=(t, e, n_ev)) * rng.choice([0.0, 1.0, 1e6], size=(t, e, n_ev))
    events[:, :, 23] = rng.integers(0, 2, size=(t, e))
    r2 = rng.random((t, e)) * 1e-4
    var_s, var_l = rng.random(e) * 1e-5, rng.random(e) * 1e-5
    last_row = rng.normal(size=(e, n_series))
    columns = np.array([2, 3, 5, 1, 6, 9, 10, 8, 23], dtype=np.int64)
    uncovered = rng.random(e) * 1e3
    want_total = np.zeros((e, n_ev))
    decision_totals(events, r2, 0.3, 0.01, var_s.copy(), var_l.copy(), want_total)
    want_uncovered = uncovered.copy()
    want_uncovered += (
        want_total[:, 9] + want_total[:, 10] + np.maximum(events[:, :, 8], 0.0).sum(axis=0)
    )
    total, last, peak, closed = np.zeros((e, n_ev)), np.empty((5, e)), np.empty(e), np.empty(e)
    decision_close(
        events, r2, 0.3, 0.01, var_s, var_l, total, last_row, columns, last, uncovered, peak,
        closed,
    )  # fmt: skip
    assert total.tobytes() == want_total.tobytes()
    for row, want in zip(
        last,
        [
            last_row[:, 2],
            last_row[:, 3],
            last_row[:, 5],
            want_total[:, 1],
            want_total[:, 6] + want_total[:, 9] + want_total[:, 10],
        ],
        strict=True,
    ):
        assert row.tobytes() == want.tobytes()
    np.testing.assert_array_equal(uncovered, want_uncovered)
    assert peak.tobytes() == events[:, :, 1].max(axis=0).tobytes()
    assert closed.tobytes() == events[-1, :, 23].tobytes()


def test_skipping_the_book_series_skips_the_funding_total_and_nothing_else():
    sc = load_scenario("calm")
    runs = []
    for book_series in (True, False):
        sim = ExchangeSimulator(sc, n_envs=2, n_accounts=64, seed=[1, 2])
        runs.append((sim, sim.advance(20, book_series=book_series)))
    (full_sim, full), (lean_sim, lean) = runs
    assert np.isfinite(full.column("funding_paid_usd")).all()
    assert np.isnan(lean.column("funding_paid_usd")).all()
    assert full.events.tobytes() == lean.events.tobytes()
    for a, b in zip(_arrays(full_sim.state), _arrays(lean_sim.state), strict=True):
        assert a.tobytes() == b.tobytes()


def _arrays(state: SimState) -> list[np.ndarray]:
    out = [getattr(state, n) for n in ("collateral_usd", "size", "entry_price")]
    return [*out, state.counterparty_cash_usd, state.fund.stable_usd, state.net_deposits_usd]
