"""Per-exchange random streams: reference vectors, reproducibility, batch invariance, laws.

Distribution checks use fixed seeds and tolerances of at least four standard errors of the
statistic at the sample size drawn, so they fail on a wrong law, not on noise.
"""

import math

import numpy as np
import pytest
from numba import njit

from fundgym.envs.core import random_nb
from fundgym.envs.core.rng import (
    ARRIVAL_STREAM,
    N_STREAMS,
    POPULATION_STREAM,
    BatchStreams,
    splitmix64,
    stream_words,
)

# ---- reference vectors ---------------------------------------------------------------------


def test_splitmix64_matches_the_reference_outputs_for_seed_1234567():
    # SplitMix64's published first outputs for state 1234567.
    x, out = 1234567, []
    for _ in range(5):
        x, value = splitmix64(x)
        out.append(value)
    assert out == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                   4593380528125082431, 16408922859458223821]  # fmt: skip


def test_xoshiro256starstar_matches_the_reference_outputs_for_state_1_2_3_4():
    # The reference implementation's first ten outputs from the state {1, 2, 3, 4}.
    state = np.array([[[1, 2, 3, 4]]], dtype=np.uint64)
    out = np.zeros(10, dtype=np.uint64)
    random_nb.fill_u64(state, 0, 0, out)
    assert out.tolist() == [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360,
                            607988272756665600, 16172922978634559625, 8476171486693032832,
                            10595114339597558777, 2904607092377533576]  # fmt: skip


def test_uniform_is_the_top_53_bits():
    state = np.array([[[1, 2, 3, 4]]], dtype=np.uint64)
    u = np.zeros(4)
    random_nb.fill_uniforms(state, 0, 0, u)
    raw = [11520, 0, 1509978240, 1215971899390074240]
    np.testing.assert_array_equal(u, [(r >> 11) / 2.0**53 for r in raw])


# ---- seeding -------------------------------------------------------------------------------


def test_streams_are_seeded_from_seed_and_key_alone():
    rng = BatchStreams([7, 8])
    assert rng.state.shape == (2, N_STREAMS, 4) and rng.state.dtype == np.uint64
    for e, seed in enumerate((7, 8)):
        for s in (POPULATION_STREAM, ARRIVAL_STREAM):
            key = (0x9091, 0xA221)[s]
            np.testing.assert_array_equal(rng.state[e, s], np.array(stream_words(seed, key),
                                                                   dtype=np.uint64))  # fmt: skip
    assert not np.array_equal(rng.state[0, 0], rng.state[0, 1])  # streams differ
    assert not np.array_equal(rng.state[0, 0], rng.state[1, 0])  # neighbouring seeds differ


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3"])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        BatchStreams([seed])


def test_the_largest_seed_is_accepted():
    assert BatchStreams([2**64 - 1]).state.any()


# ---- reproducibility and batch invariance --------------------------------------------------


def draw_all(rng, n):
    """``n`` uniforms from each exchange's population stream and ``n`` normals from arrivals."""
    return [
        (rng.uniforms(e, POPULATION_STREAM, n), rng.normals(e, ARRIVAL_STREAM, n))
        for e in range(rng.n_envs)
    ]


def test_same_seeds_same_draws():
    a, b = draw_all(BatchStreams([3, 4]), 100), draw_all(BatchStreams([3, 4]), 100)
    for (ua, za), (ub, zb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ua, ub)
        np.testing.assert_array_equal(za, zb)


def test_an_exchange_draws_the_same_in_any_batch():
    # Exchange seeded 22 alone, second of three, and last of five: the same numbers.
    alone = draw_all(BatchStreams([22]), 50)[0]
    for seeds, e in (([11, 22, 33], 1), ([5, 6, 7, 8, 22], 4)):
        got = draw_all(BatchStreams(seeds), 50)[e]
        np.testing.assert_array_equal(got[0], alone[0])
        np.testing.assert_array_equal(got[1], alone[1])


def test_streams_of_one_exchange_do_not_move_each_other():
    rng = BatchStreams([9])
    rng.uniforms(0, POPULATION_STREAM, 1000)
    np.testing.assert_array_equal(rng.state[0, ARRIVAL_STREAM], BatchStreams([9]).state[0, 1])


def test_reseeding_one_exchange_leaves_the_others_streams_unchanged():
    rng = BatchStreams([11, 22, 33])
    rng.uniforms(0, POPULATION_STREAM, 5)
    rng.uniforms(2, ARRIVAL_STREAM, 5)
    before = rng.state.copy()
    rng.reseed(1, 99)
    np.testing.assert_array_equal(rng.state[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(rng.state[1], BatchStreams([99]).state[0])
    assert rng.seeds == [11, 99, 33]


def test_a_view_of_one_exchange_advances_the_batch():
    rng = BatchStreams([11, 22])
    view = rng.env(1)
    assert view.n_envs == 1 and view.seeds == [22]
    got = view.uniforms(0, POPULATION_STREAM, 3)
    np.testing.assert_array_equal(got, BatchStreams([22]).uniforms(0, POPULATION_STREAM, 3))
    np.testing.assert_array_equal(
        rng.uniforms(1, POPULATION_STREAM, 1), BatchStreams([22]).uniforms(0, 0, 4)[3:]
    )


def test_a_copy_is_independent():
    rng = BatchStreams([1])
    twin = rng.copy()
    a = rng.uniforms(0, 0, 3)
    np.testing.assert_array_equal(twin.uniforms(0, 0, 3), a)


# ---- laws ----------------------------------------------------------------------------------

N = 400_000


def test_uniforms_are_uniform_on_the_unit_interval():
    u = BatchStreams([1]).uniforms(0, 0, N)
    assert u.min() >= 0.0 and u.max() < 1.0
    se_mean = math.sqrt(1 / 12 / N)  # 4.6e-4
    assert u.mean() == pytest.approx(0.5, abs=5 * se_mean)
    assert u.var() == pytest.approx(1 / 12, abs=5 * math.sqrt(1 / 180 / N))
    counts = np.bincount((u * 20).astype(int), minlength=20)
    chi2 = ((counts - N / 20) ** 2 / (N / 20)).sum()
    assert chi2 < 50.0  # 19 degrees of freedom: P(chi2 > 50) ~ 1e-4
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / math.sqrt(N)


def test_normals_have_mean_0_variance_1_and_normal_tails():
    z = BatchStreams([2]).normals(0, 0, N)
    assert z.mean() == pytest.approx(0.0, abs=5 / math.sqrt(N))
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / N))
    assert (np.abs(z) > 1.959963984540054).mean() == pytest.approx(
        0.05, abs=5 * math.sqrt(0.0475 / N)
    )
    assert np.mean(z**4) == pytest.approx(3.0, abs=5 * math.sqrt(96 / N))


@pytest.mark.parametrize("p", [0.05, 0.5, 1e-3])
def test_geometric_gaps_have_mean_one_over_p(p):
    n = 100_000
    gaps = np.zeros(n, dtype=np.int64)
    random_nb.fill_gaps(BatchStreams([3]).state, 0, 0, p, 10**12, gaps)
    assert gaps.min() >= 1
    sd = math.sqrt((1 - p) / p**2)
    assert gaps.mean() == pytest.approx(1 / p, abs=5 * sd / math.sqrt(n))
    assert (gaps == 1).mean() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))


def test_geometric_gap_at_p_1_is_always_1_and_long_gaps_are_capped():
    state = BatchStreams([4]).state
    gaps = np.zeros(100, dtype=np.int64)
    random_nb.fill_gaps(state, 0, 0, 1.0, 100, gaps)
    assert (gaps == 1).all()
    random_nb.fill_gaps(state, 0, 0, 1e-12, 1000, gaps)
    assert gaps.max() == 1000


@pytest.mark.parametrize("p", [0.05, 0.3, 1.0])
def test_sampled_slots_are_one_bernoulli_per_slot(p):
    # 2,000 draws over 100 slots: each slot's hit count is binomial(2,000, p).
    state = BatchStreams([5]).state
    out = np.zeros(100, dtype=np.int64)
    hits = np.zeros(100)
    for _ in range(2000):
        n = random_nb.sample_slots(state, 0, 0, p, 100, out)
        assert (np.diff(out[:n]) > 0).all() and (n == 0 or out[n - 1] < 100)
        hits[out[:n]] += 1
    sd = math.sqrt(2000 * p * (1 - p))
    assert np.abs(hits - 2000 * p).max() <= max(5 * sd, 0)
    assert hits.sum() == pytest.approx(200_000 * p, abs=5 * math.sqrt(200_000 * p * (1 - p)))


def test_sample_slots_at_p_0_draws_nothing():
    state = BatchStreams([6]).state
    before = state.copy()
    assert random_nb.sample_slots(state, 0, 0, 0.0, 100, np.zeros(100, dtype=np.int64)) == 0
    np.testing.assert_array_equal(state, before)


# ---- geometric gaps from a table -----------------------------------------------------------


@njit
def _gaps_both_ways(raw, log1m_p, cap, k_start, thresholds, table_log1m_p):
    """The tabled gap and the formula's gap of each raw output, side by side."""
    tabled = np.empty(raw.size, dtype=np.int64)
    formula = np.empty(raw.size, dtype=np.int64)
    for i in range(raw.size):
        tabled[i] = random_nb.gap_of_draw(raw[i], log1m_p, cap, k_start, thresholds, table_log1m_p)
        u = float(raw[i] >> np.uint64(11)) * 2.0**-53
        formula[i] = random_nb.gap_of_uniform(u, log1m_p, cap)
    return tabled, formula


def raw_near_thresholds(thresholds, rng):
    """Raw outputs whose uniform lies within 3 grid steps (2**-53) of each threshold."""
    grid = np.round(np.clip(thresholds, 0.0, 1.0) * 2.0**53).astype(np.int64)
    r = (grid[:, None] + np.arange(-3, 4)[None, :]).ravel()
    r = np.clip(r, 0, 2**53 - 1).astype(np.uint64)
    low_bits = rng.integers(0, 2**11, r.size).astype(np.uint64)
    return (r << np.uint64(11)) | low_bits


@pytest.mark.parametrize("p", [0.05, 0.002, 0.3, 0.9, 1.0 - 1e-9])
@pytest.mark.parametrize("cap", [1, 2, 7, 1001, 10**6])
def test_tabled_gap_equals_the_formula_for_every_draw_tried(p, cap):
    # Random draws, and draws on and next to every threshold (where a table without the
    # margin would round differently from log1p): the same gap, bit for bit.
    k_start, thresholds, table_log1m_p = random_nb.gap_table(p)
    rng = np.random.default_rng(int(p * 1e6) + cap)
    raw = np.concatenate([
        rng.integers(0, 2**64, 200_000, dtype=np.uint64),
        raw_near_thresholds(thresholds, rng),
        np.array([0, 2**64 - 1, 1 << 11, (2**53 - 1) << 11], dtype=np.uint64),
    ])  # fmt: skip
    tabled, formula = _gaps_both_ways(raw, math.log1p(-p), cap, k_start, thresholds,
                                      table_log1m_p)  # fmt: skip
    np.testing.assert_array_equal(tabled, formula)


def test_a_table_for_another_p_falls_back_to_the_formula():
    k_start, thresholds, table_log1m_p = random_nb.gap_table(0.05)
    raw = np.random.default_rng(4).integers(0, 2**64, 10_000, dtype=np.uint64)
    log1m_p = math.log1p(-0.1)
    tabled, formula = _gaps_both_ways(raw, log1m_p, 10**6, k_start, thresholds, table_log1m_p)
    np.testing.assert_array_equal(tabled, formula)
    assert formula.mean() == pytest.approx(10.0, rel=0.05)  # p = 0.1, not the table's 0.05


def test_gap_table_hand_worked_at_p_one_half():
    # T_k = 1 - 2**-k: 0, 0.5, 0.75, 0.875, ...; bucket b of 4096 starts at b / 4096, so the
    # search starts at the last k with T_k + margin <= b / 4096.
    k_start, thresholds, table_log1m_p = random_nb.gap_table(0.5)
    assert table_log1m_p == math.log1p(-0.5)
    np.testing.assert_array_equal(thresholds[:4], [0.0, 0.5, 0.75, 0.875])
    assert (
        thresholds.size == 56
    )  # T_0 .. T_55, with ceil(53 ln 2 / ln 2) + 3 = 56: past every uniform
    assert k_start.dtype == np.int16 and k_start.size == 2**random_nb.GAP_TABLE_BITS
    assert (k_start[0], k_start[2047], k_start[2048], k_start[2049], k_start[3072]) == (
        0, 0, 0, 1, 1,  # T_1 = 0.5 = bucket 2048's start, within the margin: not yet 1
    )  # fmt: skip
    assert k_start[3073] == 2


def test_gap_table_refuses_a_chance_too_small_to_table():
    with pytest.raises(ValueError, match="gap_table"):
        random_nb.gap_table(1e-4)


def test_tabled_gaps_use_the_stream_like_geometric_gap():
    # The same stream, drawn through each: the same gaps and the stream left at the same place.
    k_start, thresholds, table_log1m_p = random_nb.gap_table(0.05)
    log1m_p = math.log1p(-0.05)
    a, b = BatchStreams([9]).state, BatchStreams([9]).state
    got_a = _draw_gaps(a, log1m_p, 500, k_start, thresholds, table_log1m_p)
    got_b = np.empty(got_a.size, dtype=np.int64)
    random_nb.fill_gaps(b, 0, POPULATION_STREAM, 0.05, 500, got_b)
    np.testing.assert_array_equal(got_a, got_b)
    np.testing.assert_array_equal(a, b)


@njit
def _draw_gaps(state, log1m_p, cap, k_start, thresholds, table_log1m_p):
    """5,000 tabled gaps from exchange 0's population stream, advanced in place."""
    st = random_nb.load(state, 0, POPULATION_STREAM)
    out = np.empty(5000, dtype=np.int64)
    for i in range(out.size):
        out[i], st = random_nb.geometric_gap_tabled(st, log1m_p, cap, k_start, thresholds,
                                                    table_log1m_p)  # fmt: skip
    random_nb.store(state, 0, POPULATION_STREAM, st)
    return out
