"""Compiled random draws from per-exchange streams: xoshiro256** state rows, read in kernels.

A stream is four ``uint64`` words, one row of a ``(n_envs, n_streams, 4)`` array (see
:class:`fundgym.envs.core.rng.BatchStreams`, which seeds and owns it). A kernel loads exchange
``e``'s row into a tuple (:func:`load`), draws from the tuple (every draw returns the value and the
advanced tuple) and stores it back (:func:`store`), so exchange ``e``'s draws depend on its own seed
and its own history only, never on how many exchanges share the batch or what they drew. The draws
take and return plain values, not arrays, on purpose: an array passed to a compiled helper costs a
reference-count increment and decrement (two atomic operations) per call, which measured ten times
the cost of the draw itself.

The generator is xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number
generators", ACM TOMS 2021): 256 bits of state, period ``2**256 - 1``, passes BigCrush, and
one draw is a few shifts, xors and two multiplies, so drawing costs about a nanosecond. The
distributions built on it:

* :func:`uniform`: the top 53 bits as a double in ``[0, 1)``.
* :func:`normal`: Box-Muller from two uniforms, cosine branch only (one normal per two
  uniforms: a fixed amount of stream per draw, which the arrivals' common random numbers need).
* :func:`poisson_quantile`: the Poisson count as the quantile of *one* uniform, so a count
  costs one draw whatever its mean (again a fixed amount of stream), and counts at two means
  drawn from the same uniform are ordered like the means.
* :func:`geometric_gap`: trials up to the first success, by inversion; stepping through slots
  by these gaps samples each slot with probability ``p`` at a cost that grows with the number
  sampled, not with the slots. :func:`geometric_gap_tabled` returns the same gap for the same
  draw without the logarithm, from a table built once per ``p`` (:func:`gap_table`).

Integer arithmetic is on ``uint64`` throughout: in numba a ``uint64`` mixed with a signed
integer promotes to ``float64``, so every constant here is an explicit ``np.uint64``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fundgym.envs.jit import jit

_U5 = np.uint64(5)
_U7 = np.uint64(7)
_U9 = np.uint64(9)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U45 = np.uint64(45)
_U57 = np.uint64(57)
_U19 = np.uint64(19)
_U52 = np.uint64(52)
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2**-53
_TWO_PI = 2.0 * math.pi


@jit
def load(state, e, s):  # type: ignore[no-untyped-def]
    """Stream ``state[e, s]`` as a tuple of its four words."""
    return (state[e, s, 0], state[e, s, 1], state[e, s, 2], state[e, s, 3])


@jit
def store(state, e, s, st):  # type: ignore[no-untyped-def]
    """Write the stream tuple ``st`` back to ``state[e, s]``."""
    state[e, s, 0] = st[0]
    state[e, s, 1] = st[1]
    state[e, s, 2] = st[2]
    state[e, s, 3] = st[3]


@jit
def next_u64(st):  # type: ignore[no-untyped-def]
    """The next 64-bit output of xoshiro256** and the advanced state: ``(value, st)``."""
    s0, s1, s2, s3 = st
    x = s1 * _U5
    result = ((x << _U7) | (x >> _U57)) * _U9
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << _U45) | (s3 >> _U19)
    return result, (s0, s1, s2, s3)


@jit
def uniform(st):  # type: ignore[no-untyped-def]
    """A double in ``[0, 1)`` from the top 53 bits of the next output (never 1): ``(u, st)``."""
    x, st = next_u64(st)
    return float(x >> _U11) * _TWO_POW_M53, st


@jit
def normal(st):  # type: ignore[no-untyped-def]
    """A standard normal by Box-Muller, ``sqrt(-2 ln(1-u1)) cos(2 pi u2)``: ``(z, st)``.

    ``1 - u1`` lies in ``(0, 1]``, so the logarithm is finite.
    """
    u1, st = uniform(st)
    u2, st = uniform(st)
    return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(_TWO_PI * u2), st


@jit
def poisson_quantile(u, lam):  # type: ignore[no-untyped-def]
    """Smallest ``k`` with ``P(Poisson(lam) <= k) > u``: the Poisson count of one uniform.

    The pmf follows its recurrence ``p_k = p_(k-1) lam / k`` in log space, out to
    ``lam + 12 sqrt(lam) + 20`` (beyond it the tail is below 1e-30; the count is clipped
    there). ``lam <= 0`` gives 0.
    """
    if not lam > 0.0:
        return 0
    k_max = math.ceil(lam + 12.0 * math.sqrt(lam) + 20.0)
    log_lam = math.log(lam)
    log_p = -lam
    cdf = math.exp(log_p)
    k = 0
    while cdf <= u and k < k_max:
        k += 1
        log_p += log_lam - math.log(k)
        cdf += math.exp(log_p)
    return k


@jit
def gap_of_uniform(u, log1m_p, cap):  # type: ignore[no-untyped-def]
    """Trials up to and including the first success, for success chance ``p``, from ``u``.

    By inversion, ``1 + floor(ln(1 - u) / ln(1 - p))`` with ``log1m_p = ln(1 - p)`` (``-inf``
    for ``p = 1`` gives 1 every time; ``p`` must be > 0). Results above ``cap`` come back as
    ``cap``: the caller only needs to know the gap runs past its last slot.
    """
    g = math.floor(math.log1p(-u) / log1m_p)
    if g >= cap:
        return cap
    return int(g) + 1


@jit
def geometric_gap(st, log1m_p, cap):  # type: ignore[no-untyped-def]
    """:func:`gap_of_uniform` of the next uniform of ``st``: ``(gap, st)``."""
    u, st = uniform(st)
    return gap_of_uniform(u, log1m_p, cap), st


GAP_TABLE_BITS = 12
"""The table of :func:`gap_table` is indexed by this many top bits of the raw draw."""
GAP_MARGIN = 1e-10
"""A draw closer than this to a tabled threshold takes the logarithm instead (see
:func:`gap_table`): far wider than the few ulps of error of ``log1p`` and of the table."""


def gap_table(p: float) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.float64], float]:
    """What :func:`geometric_gap_tabled` needs to draw gaps at chance ``p`` without a logarithm.

    A gap is ``1 + g`` with ``g = floor(ln(1 - u) / ln(1 - p))``, so ``g >= k`` exactly when
    ``u >= T_k = 1 - (1 - p)^k``. The table holds the thresholds ``T_k`` up to where they
    reach 1 (no uniform lies beyond: ``1 - u >= 2**-53``) and, for each of the
    ``2**GAP_TABLE_BITS`` equal buckets of ``u``, the largest ``k`` whose threshold (plus
    ``GAP_MARGIN``) is at or below the bucket's start: where the search for ``g`` begins.
    A draw is compared with the thresholds above that ``k``; one within ``GAP_MARGIN`` of a
    threshold, where rounding in ``log1p`` could decide the floor, is left to the formula.
    Everywhere else ``ln(1 - u) / ln(1 - p)`` is at least ``GAP_MARGIN / |ln(1 - p)|`` from
    every integer, so the formula's few ulps of error cannot move its floor: the table gives
    the same gap as :func:`geometric_gap` for every draw.

    Args:
        p: Success chance, in (0, 1).

    Returns:
        ``(k_start, thresholds, log1m_p)``: the search start per bucket, ``T_k`` for
        ``k = 0, 1, ...``, and the ``ln(1 - p)`` the table was built for (a kernel whose own
        ``ln(1 - p)`` differs in any bit falls back to the formula).
    """
    log1m_p = math.log1p(-p)
    n = math.ceil(53.0 * math.log(2.0) / -log1m_p) + 3
    thresholds = -np.expm1(np.arange(n) * log1m_p)
    starts = np.arange(1 << GAP_TABLE_BITS) / float(1 << GAP_TABLE_BITS)
    k_start = np.searchsorted(thresholds + GAP_MARGIN, starts, side="right") - 1
    if n >= 1 << 15:
        raise ValueError(
            f"gap_table: p={p!r} needs {n} thresholds, more than an int16 table indexes"
        )
    return np.maximum(k_start, 0).astype(np.int16), thresholds, log1m_p  # 8 KiB: stays in L1


@jit(inline="always")
def gap_of_draw(x, log1m_p, cap, k_start, thresholds, table_log1m_p):  # type: ignore[no-untyped-def]
    """The :func:`geometric_gap` of raw output ``x``, from a :func:`gap_table` where it can.

    ``k_start``, ``thresholds`` and ``table_log1m_p`` come from ``gap_table(p)``; when
    ``log1m_p`` is not that table's, or the draw lies within ``GAP_MARGIN`` of a threshold or
    past the table, the gap comes from the formula.
    """
    u = float(x >> _U11) * _TWO_POW_M53
    if log1m_p == table_log1m_p:
        k = int(k_start[x >> _U52])  # g >= k for every draw of this bucket
        while k < cap and k + 1 < thresholds.size:
            t = thresholds[k + 1]
            if u < t - GAP_MARGIN:  # g < k + 1: g is k
                return k + 1
            if u < t + GAP_MARGIN:  # too close to call from the table
                break
            k += 1
        if k >= cap:
            return cap
    return gap_of_uniform(u, log1m_p, cap)


@jit(inline="always")
def geometric_gap_tabled(st, log1m_p, cap, k_start, thresholds, table_log1m_p):  # type: ignore[no-untyped-def]
    """:func:`geometric_gap` through :func:`gap_of_draw`: the same gap, the same stream used."""
    x, st = next_u64(st)
    return gap_of_draw(x, log1m_p, cap, k_start, thresholds, table_log1m_p), st


@jit
def fill_uniforms(state, e, s, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` with uniforms from stream ``state[e, s]``, in order."""
    st = load(state, e, s)
    for i in range(out.size):
        out[i], st = uniform(st)
    store(state, e, s, st)


@jit
def fill_normals(state, e, s, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` with standard normals from stream ``state[e, s]``, in order."""
    st = load(state, e, s)
    for i in range(out.size):
        out[i], st = normal(st)
    store(state, e, s, st)


@jit
def fill_u64(state, e, s, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` (``uint64``) with raw outputs of stream ``state[e, s]``, in order."""
    st = load(state, e, s)
    for i in range(out.size):
        out[i], st = next_u64(st)
    store(state, e, s, st)


@jit
def fill_gaps(state, e, s, p, cap, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` (``int64``) with :func:`geometric_gap` draws at chance ``p`` (> 0)."""
    st = load(state, e, s)
    log1m_p = math.log1p(-p)
    for i in range(out.size):
        out[i], st = geometric_gap(st, log1m_p, cap)
    store(state, e, s, st)


@jit
def poisson_quantiles(u, lam, out):  # type: ignore[no-untyped-def]
    """:func:`poisson_quantile` element-wise into ``out`` (``int64``)."""
    for i in range(u.size):
        out[i] = poisson_quantile(u[i], lam[i])


@jit
def sample_slots(state, e, s, p, n_slots, out):  # type: ignore[no-untyped-def]
    """Slots of ``range(n_slots)``, each with chance ``p``, into ``out``; returns how many.

    Steps by :func:`geometric_gap`; ``out`` must hold ``n_slots`` entries. ``p <= 0`` draws
    nothing.
    """
    if not p > 0.0:
        return 0
    st = load(state, e, s)
    log1m_p = math.log1p(-p)
    n = 0
    gap, st = geometric_gap(st, log1m_p, n_slots + 1)
    slot = gap - 1
    while slot < n_slots:
        out[n] = slot
        n += 1
        gap, st = geometric_gap(st, log1m_p, n_slots + 1)
        slot += gap
    store(state, e, s, st)
    return n
