"""What a risk desk watches of its book, compiled: open interest, leverage, nearness to trigger.

:func:`book_stats` makes one pass over each exchange's accounts and returns, per exchange, the
book-side columns of the observation (the market and fund columns come from their own
modules). Nearness to liquidation is measured the way the engine would find it: an account
counts as "within x%" when an adverse move of x% in every market it holds (down for longs,
up for shorts) would make it liquidatable under the requirement in force, tiers included
(:func:`fundgym.envs.core.kernels.requirement`, the engine's own formula). A formula-derived
liquidation price would have to re-implement the tier table and, before this module, did not:
for a $3M long at 10x under Binance's brackets it put the trigger at 90,361 while the engine
fires below 91,750.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from fundgym.envs.core.kernels import requirement
from fundgym.envs.core.params import P_MMR, RiskParams
from fundgym.envs.jit import jit
from fundgym.envs.state import SimState, marks_2d

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Columns of :func:`book_stats`, in order.
BOOK_STATS: tuple[str, ...] = (
    "open_interest_usd",
    "long_oi_usd",
    "short_oi_usd",
    "leverage_p50",
    "leverage_p90",
    "leverage_p99",
    "oi_within_1pct",
    "oi_within_2pct",
    "oi_within_5pct",
    "margin_locked_usd",
)
SHOCKS_FRAC = (0.01, 0.02, 0.05)
"""The adverse moves behind ``oi_within_*``."""


@jit
def _select(a, lo, hi, k):  # type: ignore[no-untyped-def]
    """Reorder ``a[lo:hi]`` in place so ``a[k]`` holds its order statistic (quickselect).

    Everything left of ``k`` is ``<= a[k]`` and everything right of it ``>=``. In place and
    O(n); :func:`_quantiles` runs it on a bracket of a few values, where its mispredicted
    comparisons no longer matter.
    """
    hi -= 1
    while lo < hi:
        mid = (lo + hi) // 2  # median of three as the pivot: sorted-ish input stays O(n)
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


#: Most buckets of the histogram that brackets each order statistic (:func:`_quantiles`).
N_BUCKETS = 1024
#: Fewest buckets, for the smallest books (a walk over 16 counts costs next to nothing).
MIN_BUCKETS = 16
#: The leverage quantiles of :data:`BOOK_STATS` (``leverage_p50``, ``_p90``, ``_p99``).
LEVERAGE_QS = np.array([0.5, 0.9, 0.99])
_SHOCKS = np.array(SHOCKS_FRAC)
#: The low 63 bits of an int64 (see :func:`_order_key`).
_LOW_BITS = 0x7FFF_FFFF_FFFF_FFFF


@jit(inline="always")
def _order_key(bits):  # type: ignore[no-untyped-def]
    """An int64 that orders like the float64 whose bit pattern is ``bits`` (NaN excepted).

    Positive floats order like their bit patterns; a negative one's low 63 bits count away
    from zero, so they are flipped; the ``+ 1`` for negatives gives -0.0 the key of +0.0.
    """
    sign = bits >> 63  # 0 or -1
    return (bits ^ (sign & _LOW_BITS)) - sign


@jit(error_model="numpy", inline="always")
def n_buckets(n):  # type: ignore[no-untyped-def]
    """Buckets for ``n`` values: the power of two at least ``n``, within [16, 1,024].

    About one value a bucket: fewer would put more values in each bracket's selection, more
    would lengthen the walk over the counts. Zeroing and walking 1,024 buckets for a book of
    16 accounts was most of its statistics' cost (docs/benchmarks.md). The order statistics
    are exact for any number of buckets.
    """
    nb = MIN_BUCKETS
    while nb < n and nb < N_BUCKETS:
        nb *= 2
    return nb


@jit(error_model="numpy")
def _quantiles(values, bits, n, qs, out, col, bins, counts, tag, ranks, scratch):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantiles ``qs`` (ascending) of ``values[:n]`` into ``out[col:]``.

    numpy's default method, on the exact order statistics. Quickselect over all the values
    cost about 20 ns per value here (its comparisons mispredict); instead a histogram
    brackets each order statistic and a selection runs among the few values of its bracket,
    in passes whose branches are almost always predicted: about 3.5 ns per value in all
    (6 ns while the ends were found over the floats and each bucket computed beside its
    count, which kept both loops scalar).

    The buckets split the range of :func:`_order_key` (the values' bit patterns, in value
    order) into :func:`n_buckets` equal widths, nearly equal in log-value: a heavy tail of
    leverage widens the range without emptying the buckets where the quantiles lie. A value
    smaller than another is in the same bucket or an earlier one, so counting the buckets
    locates every rank exactly.

    Args:
        values: Contiguous float64 array; ``values[:n]`` are read (not modified), none NaN.
        bits: ``values.view(np.int64)``, made once by the caller.
        n: How many values.
        qs: Quantiles in [0, 1], ascending.
        out: Row written at ``out[col + s]`` for each quantile (0 when ``n`` is 0).
        col: First column written.
        bins: Int64 scratch of at least ``n`` entries (each value's bucket).
        counts: Int64 scratch of :data:`N_BUCKETS` entries.
        tag: Uint8 scratch of :data:`N_BUCKETS` entries.
        ranks: Int64 scratch of ``2 len(qs)`` entries.
        scratch: Float64 scratch of ``len(qs)`` times at least ``n`` entries, one run per
            quantile (each quantile's bracket).

    The caller owns the scratch (allocated once, not per call), and nothing here takes a
    view of an array (a view costs two atomic reference-count operations). Both were small
    beside the 1,024 buckets every call walked before :func:`n_buckets` (docs/benchmarks.md).
    """
    n_q = qs.shape[0]
    if n == 0:
        for s in range(n_q):
            out[col + s] = 0.0
        return
    # The ends, the buckets, then the counts: three loops, the first two branch-free over
    # integers (so they vectorise), the scatter alone serial. The ends are taken over the
    # keys, not the floats: the keys order like the values, so their extremes are the
    # values' extremes' keys (-0.0 and +0.0 share a key, as they share the order).
    key_min = key_max = _order_key(bits[0])
    for i in range(1, n):
        key = _order_key(bits[i])
        key_min = min(key_min, key)
        key_max = max(key_max, key)
    base = np.uint64(key_min)
    span = np.uint64(key_max) - base  # unsigned: wraps to the true width
    nb = n_buckets(n)
    shift = np.uint64(0)
    while (span >> shift) >= np.uint64(nb):
        shift += np.uint64(1)
    for i in range(n):
        bins[i] = min(np.int64((np.uint64(_order_key(bits[i])) - base) >> shift), nb - 1)
    for b in range(nb):
        counts[b] = 0
        tag[b] = 0
    for i in range(n):
        counts[bins[i]] += 1
    # Quantile s needs ranks lo and lo + 1 (the next order statistic): the buckets from the
    # one holding lo to the one holding lo + 1 (empty in between) are its bracket, tagged
    # with bit s. Ranks ascend with s, so one walk over the counts finds them all.
    # ranks[s]: values in buckets before quantile s's bracket; ranks[n_q + s]: its fill.
    b = 0
    before = 0
    for s in range(n_q):
        lo = int(np.floor(qs[s] * (n - 1)))
        while before + counts[b] <= lo:
            before += counts[b]
            b += 1
        ranks[s] = before
        hi = min(lo + 1, n - 1)
        b_hi = b
        upto = before + counts[b]  # values in buckets up to b_hi
        while upto <= hi:
            b_hi += 1
            upto += counts[b_hi]
        for k in range(b, b_hi + 1):
            tag[k] |= np.uint8(1 << s)
    width = scratch.shape[0] // n_q  # quantile s's bracket: scratch[s * width:]
    for s in range(n_q):
        ranks[n_q + s] = s * width
    for i in range(n):
        t = tag[bins[i]]
        if t != 0:  # rarely: a few values per bracket
            for s in range(n_q):
                if t & (1 << s):
                    scratch[ranks[n_q + s]] = values[i]
                    ranks[n_q + s] += 1
    for s in range(n_q):
        pos = qs[s] * (n - 1)
        lo = int(np.floor(pos))
        start = s * width
        k = start + lo - ranks[s]
        end = ranks[n_q + s]
        _select(scratch, start, end, k)
        a = scratch[k]
        nxt = a
        if lo + 1 < n:  # the next order statistic: the smallest value right of rank lo
            nxt = scratch[k + 1]
            for j in range(k + 2, end):
                if scratch[j] < nxt:
                    nxt = scratch[j]
        out[col + s] = a + (pos - lo) * (nxt - a)


@jit(error_model="numpy")
def _flat_one_market(coll, size, entry, m, mmr, lev, within, terms, ok):  # type: ignore[no-untyped-def]
    """An exchange's book under a flat MMR and one market, on its contiguous ``(A,)`` rows.

    With ``req = mmr |q| x``, equity minus requirement at price ``x`` is
    ``c - q e + k x`` with ``k = q - mmr |q|``, a line: an adverse move of ``s`` (``x = m (1 -
    s)`` for a long, ``m (1 + s)`` for a short) makes the account liquidatable exactly when
    ``t - |k m| s < 0`` with ``t = c - q e + k m``. Three comparisons instead of three
    re-evaluations, and no branch on the side (a long/short branch mispredicts half the time).

    No branch on empty slots either: an empty slot goes through the same arithmetic and adds
    nothing. Its notional is +0, which leaves every running sum's bits as they were (each
    starts at +0 and adds terms >= 0), and its leverage is written one past the list's end
    (the count moves only for an open account with positive equity), to be overwritten.

    Two passes: the first computes every account's terms into ``terms`` (``(7, A)``) and
    ``ok`` (``(A,)`` bool) with no dependence between accounts, so it vectorises, the
    leverage's division included; the second adds them up in slot order (the same bits as
    one pass) and lists the leverages. One fused pass ran scalar: 3.0 ns an account against
    2.1-2.5 (docs/benchmarks.md).

    Returns:
        ``(gross, long_oi, short_oi, locked, n_lev)``; ``lev[:n_lev]`` and ``within`` filled.
    """
    n_acc = size.shape[0]
    for a in range(n_acc):  # terms[j, a], not rows of terms: a view costs two atomic operations
        q = size[a]
        c = coll[a]
        e = entry[a]
        notional = abs(q) * m
        eq = c + q * (m - e)
        km = (q - mmr * abs(q)) * m
        t = c - q * e + km
        a_km = abs(km)
        terms[0, a] = notional
        terms[1, a] = max(q, 0.0) * m
        terms[2, a] = notional * mmr
        terms[3, a] = notional * (t - a_km * 0.01 < 0.0)
        terms[4, a] = notional * (t - a_km * 0.02 < 0.0)
        terms[5, a] = notional * (t - a_km * 0.05 < 0.0)
        terms[6, a] = notional / eq
        ok[a] = (q != 0.0) & (eq > 0.0)
    gross = 0.0
    long_oi = 0.0
    locked = 0.0
    w1 = w2 = w5 = 0.0  # in registers, not ``within``: a store per account would chain them
    n_lev = 0
    for a in range(n_acc):
        gross += terms[0, a]
        long_oi += terms[1, a]
        locked += terms[2, a]
        w1 += terms[3, a]
        w2 += terms[4, a]
        w5 += terms[5, a]
        lev[n_lev] = terms[6, a]
        n_lev += ok[a]
    within[0] += w1
    within[1] += w2
    within[2] += w5
    return gross, long_oi, gross - long_oi, locked, n_lev


@jit(error_model="numpy")
def _general(coll, size, entry, marks, mmr, floors, rates, cums, base, i, lev, within, shocks):  # type: ignore[no-untyped-def]
    """Exchange ``i``'s book in general: margin tiers and/or several markets (cross margin).

    Each shock re-evaluates equity and the tiered requirement at the shocked prices, largest
    shock first: equity minus requirement rises with a favourable price (slope ``q (1 -
    mmr_k)`` in bracket ``k``), so an account out of reach of 5% is out of reach of 2% and 1%.
    """
    gross = 0.0
    long_oi = 0.0
    short_oi = 0.0
    locked = 0.0
    n_lev = 0
    n_mk = size.shape[2]
    for a in range(size.shape[1]):
        eq = coll[i, a]
        notional = 0.0
        for j in range(n_mk):
            q = size[i, a, j]
            if q == 0.0:
                continue
            m = marks[i, j]
            eq += q * (m - entry[i, a, j])
            nj = abs(q) * m
            notional += nj
            locked += requirement(nj, mmr, floors, rates, cums, base)
            long_oi += max(q, 0.0) * m
            short_oi += max(-q, 0.0) * m
        if notional == 0.0:
            continue
        gross += notional
        if eq > 0.0:
            lev[n_lev] = notional / eq
            n_lev += 1
        for s in range(2, -1, -1):
            eq_s = coll[i, a]
            req_s = 0.0
            for j in range(n_mk):
                q = size[i, a, j]
                if q == 0.0:
                    continue
                m_s = marks[i, j] * (1.0 - shocks[s] if q > 0.0 else 1.0 + shocks[s])
                eq_s += q * (m_s - entry[i, a, j])
                req_s += requirement(abs(q) * m_s, mmr, floors, rates, cums, base)
            if not (req_s > 0.0 and eq_s < req_s):
                break
            within[s] += notional
    return gross, long_oi, short_oi, locked, n_lev


@jit(error_model="numpy")
def book_work(n_acc):  # type: ignore[no-untyped-def]
    """Scratch for :func:`book_stats_exchange` over books of ``n_acc`` accounts, allocated once.

    ``(lev, lev_bits, bins, counts, tag, ranks, brackets, within, terms, ok)``, ``lev_bits``
    the int64 view of ``lev``: a caller that runs exchanges on threads keeps one per thread.
    """
    n_q = LEVERAGE_QS.shape[0]
    lev = np.empty(n_acc)
    return (
        lev,
        lev.view(np.int64),
        np.empty(n_acc, dtype=np.int64),
        np.empty(N_BUCKETS, dtype=np.int64),
        np.empty(N_BUCKETS, dtype=np.uint8),
        np.empty(2 * n_q, dtype=np.int64),
        np.empty(n_q * n_acc),
        np.empty(3),
        np.empty((7, n_acc)),
        np.empty(n_acc, dtype=np.bool_),
    )


@jit(error_model="numpy")
def book_stats_exchange(coll, size, entry, marks, packed, floors, rates, cums, base, out, i, work):  # type: ignore[no-untyped-def]
    """Exchange ``i``'s row of ``out``; ``work`` is :func:`book_work`'s scratch."""
    lev, lev_bits, bins, counts, tag, ranks, brackets, within, terms, ok = work
    n_acc, n_mk = size.shape[1], size.shape[2]
    within[0] = within[1] = within[2] = 0.0
    mmr = packed[i, P_MMR]
    if floors.shape[0] == 0 and n_mk == 1:
        gross, long_oi, short_oi, locked, n_lev = _flat_one_market(
            coll[i],
            size[i].reshape(n_acc),
            entry[i].reshape(n_acc),
            marks[i, 0],
            mmr,
            lev,
            within,
            terms,
            ok,
        )
    else:
        gross, long_oi, short_oi, locked, n_lev = _general(
            coll, size, entry, marks, mmr, floors, rates, cums, base, i, lev, within, _SHOCKS
        )
    out[i, 0] = 0.5 * gross
    out[i, 1] = long_oi
    out[i, 2] = short_oi
    _quantiles(lev, lev_bits, n_lev, LEVERAGE_QS, out[i], 3, bins, counts, tag, ranks, brackets)
    for s in range(3):
        out[i, 6 + s] = within[s] / gross if gross > 0.0 else 0.0
    out[i, 9] = locked


@jit(error_model="numpy")
def _book_stats_serial(coll, size, entry, marks, packed, floors, rates, cums, base, out):  # type: ignore[no-untyped-def]
    work = book_work(size.shape[1])
    for i in range(size.shape[0]):
        book_stats_exchange(
            coll, size, entry, marks, packed, floors, rates, cums, base, out, i, work
        )


@jit(error_model="numpy", parallel=True)
def _book_stats_parallel(coll, size, entry, marks, packed, floors, rates, cums, base, out):  # type: ignore[no-untyped-def]
    for i in prange(size.shape[0]):
        work = book_work(size.shape[1])  # each exchange its own: they run on threads
        book_stats_exchange(
            coll, size, entry, marks, packed, floors, rates, cums, base, out, i, work
        )


@jit(error_model="numpy")
def _book_stats_rows(coll, size, entry, marks, packed, floors, rates, cums, base, out, rows):  # type: ignore[no-untyped-def]
    work = book_work(size.shape[1])
    for i in rows:
        book_stats_exchange(
            coll, size, entry, marks, packed, floors, rates, cums, base, out, i, work
        )


def book_stats(
    state: SimState,
    params: RiskParams,
    mark: FloatArray,
    parallel: bool = False,
    rows: np.ndarray[Any, np.dtype[np.int64]] | None = None,
) -> FloatArray:
    """The :data:`BOOK_STATS` columns per exchange, ``(E, len(BOOK_STATS))``.

    Args:
        state: The batch state (read only).
        params: Parameters in force (MMR and tiers set the requirement).
        mark: ``(E,)`` or ``(E, M)`` price the margin engine reads.
        parallel: Spread exchanges over numba's threads (as many as
            ``numba.set_num_threads`` allows); each row is the same either way, bit for bit.
        rows: Only these exchanges' rows (int64 indices), one after another; the others
            are left 0. ``None``: every exchange.

    Returns:
        Open interest (one side), long and short notional in USD; leverage quantiles of open
        accounts with positive equity (0 when there are none); and the share of gross notional
        that an adverse 1%, 2% or 5% move would make liquidatable; and the maintenance margin
        the book locks, in USD (the capital traders tie up: the reward prices it).
    """
    n_envs, n_mk = state.n_envs, state.n_markets
    floors, rates, cums, base = params.tier_table()
    out = np.zeros((n_envs, len(BOOK_STATS)))
    args = (
        state.collateral_usd,
        state.size,
        state.entry_price,
        marks_2d(mark, n_envs, n_mk),
        params.packed(n_envs),
        floors,
        rates,
        cums,
        float(base[0]),
        out,
    )
    if rows is not None:
        _book_stats_rows(*args, np.asarray(rows, dtype=np.int64))
    elif parallel:
        _book_stats_parallel(*args)
    else:
        _book_stats_serial(*args)
    return out


@jit(error_model="numpy")
def decision_totals(events, r2, a_short, a_long, var_short, var_long, total):  # type: ignore[no-untyped-def]
    """A decision's summed events and the observation's volatility EWMAs, in place.

    For each tick ``k`` in order, ``total[e] += events[k, e]`` and ``var += a x (r2[k, e] -
    var)`` (``r2``: the tick's squared log return): numpy's element-by-element arithmetic,
    the same bits, in one call instead of four array operations per tick.
    """
    for k in range(events.shape[0]):
        for e in range(events.shape[1]):
            for c in range(events.shape[2]):
                total[e, c] += events[k, e, c]
            var_short[e] += a_short * (r2[k, e] - var_short[e])
            var_long[e] += a_long * (r2[k, e] - var_long[e])


@jit(error_model="numpy")
def decision_close(  # type: ignore[no-untyped-def]
    events, r2, a_short, a_long, var_short, var_long, total, last_row, columns, last_out,
    uncovered, peak_liquidation, closed,
):  # fmt: skip
    """A decision's bookkeeping after its ticks, in one call: what the core reads next.

    :func:`decision_totals` first (the summed events into ``total``, the EWMAs in place), then
    per exchange, each value by the numpy expression it replaces, in its order (the
    environment's step documents them):

    * ``last_out`` ``(5, E)``: the last tick's mark, oracle and funding rate (``last_row``,
      the block's last series row, at ``columns[0:3]``), the decision's liquidated notional,
      and its shortfall plus the loss socialised and unrecovered (``(shortfall + socialised)
      + unrecovered`` of ``total``);
    * ``uncovered`` (in place): ``+= (socialised + unrecovered) + haircut``, the haircut being
      the sum over ticks of each tick's ADL haircut floored at 0 (numpy's ``maximum`` then
      ``sum``: from the first tick's term on, NaN kept);
    * ``peak_liquidation``: the largest tick's liquidated notional; ``closed``: the last
      tick's market-closed flag.

    ``columns`` (int64): the series' mark, oracle and funding columns, then the events'
    liquidation volume, shortfall, socialised loss, unrecovered loss, ADL haircut and
    market-closed columns.
    """
    decision_totals(events, r2, a_short, a_long, var_short, var_long, total)
    n_ticks = events.shape[0]
    mark_c, oracle_c, funding_c = columns[0], columns[1], columns[2]
    liq_c, short_c, soc_c, unrec_c, hair_c, closed_c = (
        columns[3], columns[4], columns[5], columns[6], columns[7], columns[8]
    )  # fmt: skip
    for e in range(total.shape[0]):
        last_out[0, e] = last_row[e, mark_c]
        last_out[1, e] = last_row[e, oracle_c]
        last_out[2, e] = last_row[e, funding_c]
        last_out[3, e] = total[e, liq_c]
        last_out[4, e] = (total[e, short_c] + total[e, soc_c]) + total[e, unrec_c]
        h = events[0, e, hair_c]
        h = 0.0 if h < 0.0 else h
        peak = events[0, e, liq_c]
        for k in range(1, n_ticks):
            x = events[k, e, hair_c]
            h += 0.0 if x < 0.0 else x
            v = events[k, e, liq_c]
            if v > peak or v != v:
                peak = v
        uncovered[e] += (total[e, soc_c] + total[e, unrec_c]) + h
        peak_liquidation[e] = peak
        closed[e] = events[n_ticks - 1, e, closed_c]


@jit(error_model="numpy", inline="always")
def _at_least(x, floor):  # type: ignore[no-untyped-def]
    """``np.maximum(x, floor)`` of one value: ``x`` when NaN (it propagates, as numpy's)."""
    return floor if x < floor else x


@jit(error_model="numpy")
def observation_columns(  # type: ignore[no-untyped-def]
    var_short, var_long, per_year, last_return, depth_mult, depth_usd, min_depth_usd, oracle,
    mark, funding, book, initial_oi, fund_value, weights, last_liq, last_shortfall, positions,
    params_col, decision, n_decisions, obs, thinness,
):  # fmt: skip
    """The environment's raw observation (``OBS_NAMES`` order, before clipping), in place.

    Every column but the thinness one (4), whose ``log10`` stays with numpy (its vectorised
    logarithm is not the C library's to the bit): ``thinness`` gets its argument,
    ``max(OI, 1) / max(depth, min_depth_usd)``. Each value has the operations, in the
    order, of the numpy expressions this replaces (``InsuranceFundEnv``'s docstring gives the
    scaling of each column); ``positions`` is ``(n_envs, n_levers)``, the levers' positions,
    written from column ``params_col`` on; the episode's progress is the last column.
    """
    n_params = positions.shape[1]
    for e in range(obs.shape[0]):
        oi = book[e, 0]
        long_oi = book[e, 1]
        short_oi = book[e, 2]
        oi0 = _at_least(initial_oi[e], 1.0)
        oi_floor = _at_least(oi, 1.0)
        obs[e, 0] = np.sqrt(var_short[e] * per_year)
        obs[e, 1] = np.sqrt(var_long[e] * per_year)
        obs[e, 2] = 100.0 * last_return[e]
        obs[e, 3] = depth_mult[e]
        thinness[e] = oi_floor / _at_least(depth_usd[e], min_depth_usd)
        obs[e, 5] = 100.0 * (oracle[e] / mark[e] - 1.0)
        obs[e, 6] = 1e3 * funding[e]
        obs[e, 7] = oi / oi0
        obs[e, 8] = (long_oi - short_oi) / _at_least(long_oi + short_oi, 1e-12)
        for k in range(3):
            obs[e, 9 + k] = book[e, 3 + k] / 50.0  # leverage p50, p90, p99
            obs[e, 12 + k] = book[e, 6 + k]  # OI within 1%, 2%, 5%
        obs[e, 15] = 10.0 * fund_value[e] / oi_floor
        for k in range(4):
            obs[e, 16 + k] = weights[e, k]
        obs[e, 20] = 100.0 * last_liq[e] / oi0
        obs[e, 21] = 1e3 * last_shortfall[e] / oi0
        for k in range(n_params):
            obs[e, params_col + k] = positions[e, k]
        obs[e, params_col + n_params] = float(decision[e]) / float(max(n_decisions[e], 1))
