"""Compiled twin of :class:`fundgym.envs.market.market.Market`: one exchange's prices for one tick.

:meth:`Market.prices <fundgym.envs.market.market.Market.prices>` and :meth:`Market.advance
<fundgym.envs.market.market.Market.advance>` stay the numpy reference (and document the economics);
:func:`prices_one` and :func:`advance_one` are the same arithmetic, in the same operation
order, on exchange ``e``'s entries of the same arrays, for the compiled tick
(:mod:`fundgym.envs.tick_kernels`). Both call the C library's ``exp`` and ``expm1`` (the reference
through :mod:`fundgym.envs.libm`), so the two agree to the bit (tests/envs/test_market.py).

Arrays arrive as the market stores them: the path columns as a tuple (``PATH_*`` order), the
per-exchange scalars as one ``(N_MARKET_SCALARS, n_envs)`` array (``MK_*`` rows), the two
flags and the oracle feed's arrays (:class:`fundgym.envs.market.oracle.OracleFeed`).
"""

from __future__ import annotations

import math

import numpy as np

from fundgym.envs.core.impact import walk_log_move_one, walked_notional_one
from fundgym.envs.jit import jit
from fundgym.envs.market.depth import MAX_IMPACT_LOG

# Path columns (each (max_ticks, n_envs)).
PATH_INDEX, PATH_BASIS, PATH_WICK, PATH_DEPTH_MULT, PATH_MANIPULATION, PATH_PRECURSOR = range(6)
N_PATHS = 6

# Rows of the per-exchange scalars (Market.scalars, (N_MARKET_SCALARS, n_envs)). The impact of
# liquidation flow (Market.advance): MK_BOOK_WALK_LOG is how far flow has walked the book that
# it has not refilled (log price; times MK_IMPACT_DECAY each tick, the refill), and
# MK_IMPACT_PERMANENT_LOG the impact that stays; the index carries the permanent impact plus
# MK_IMPACT_TRANSIENT_COEF times the walk.
MK_BOOK_WALK_LOG, MK_PREMIUM_EMA, MK_IMPACT_DECAY, MK_EMA_ALPHA = range(4)
MK_IMPACT_TRANSIENT_COEF, MK_DEPTH_NORMAL, MK_INTEREST, MK_CLAMP, MK_CAP = range(4, 9)
MK_IMPACT_PERMANENT_LOG, MK_IMPACT_PERMANENT_COEF = 9, 10
N_MARKET_SCALARS = 11


@jit(error_model="numpy", inline="always")
def _clip(x, low, high):  # type: ignore[no-untyped-def]
    """``np.clip`` of one value: ``min(max(x, low), high)``."""
    return min(max(x, low), high)


@jit(error_model="numpy", inline="always")
def bounded_impact_log_one(impact_log):  # type: ignore[no-untyped-def]
    """:func:`fundgym.envs.market.depth.bounded_impact_log` of one value."""
    t = math.expm1(-2.0 * (abs(impact_log) / MAX_IMPACT_LOG))
    out = MAX_IMPACT_LOG * (-t / (2.0 + t))
    return -out if impact_log < 0.0 else out


@jit(error_model="numpy")
def funding_rate_one(mark, index, interest, clamp, cap):  # type: ignore[no-untyped-def]
    """:func:`fundgym.envs.market.funding.funding_rate` for one exchange."""
    premium = (mark - index) / index
    rate = premium + _clip(interest - premium, -clamp, clamp)
    return _clip(rate, -cap, cap)


@jit(error_model="numpy")
def prices_one(  # type: ignore[no-untyped-def]
    e, t, path, frozen, mk, mark_last, oracle_index, buffer, count, delay, floor, first, last
):
    """Exchange ``e``'s prices at its tick ``t``; updates its premium EMA and oracle feed.

    Returns ``(index, last, mark, oracle, depth_usd_per_pct, funding_rate)``, as
    :meth:`Market.prices <fundgym.envs.market.market.Market.prices>` computes them
    (:func:`prices_cols` on the path tuple's columns). The paths are
    :meth:`Market.path_arrays <fundgym.envs.market.market.Market.path_arrays>`' exchange-major
    ``(n_envs, ticks)`` arrays, read at ``[e, t]``.
    """
    return prices_cols(
        e, t, path[PATH_INDEX], path[PATH_BASIS], path[PATH_WICK], path[PATH_MANIPULATION],
        path[PATH_DEPTH_MULT], frozen, mk, mark_last, oracle_index, buffer, count, delay, floor,
        first, last,
    )  # fmt: skip


@jit(error_model="numpy", inline="always")
def prices_cols(  # type: ignore[no-untyped-def]
    e, t, index_path, basis_path, wick_path, manipulation_path, depth_mult_path, frozen, mk,
    mark_last, oracle_index, buffer, count, delay, floor, first, last,
):  # fmt: skip
    """:func:`prices_one` with the five path columns it reads passed as arrays.

    The compiled tick takes the columns out of the path tuple once per call and calls this
    every tick: taking an array out of a tuple costs two atomic reference-count operations
    each time. Inlined into its callers: a call passing 17 arguments, 15 of them arrays, cost
    as many reference-count pairs per exchange-tick.
    """
    # Every array is read first, then written, with no branch in between where possible: an
    # array argument of this inlined helper is referenced from its first use to its last, and
    # a reference held across a branch costs two atomic reference-count operations every tick
    # (numba prunes a pair only inside one basic block; measured, docs/benchmarks.md). So the
    # reads come before the ring buffer's remainders (whose 64-bit division LLVM branches on),
    # and each choice is made between values already computed (a select): the median is
    # computed either way, ``first`` is stored back unchanged after the first tick, and the
    # load at a negative lag reads a slot in range that is then not chosen. Same values, same
    # operations in the same order as the branching form.
    impact = (
        mk[MK_IMPACT_PERMANENT_LOG, e] + mk[MK_IMPACT_TRANSIENT_COEF, e] * mk[MK_BOOK_WALK_LOG, e]
    )
    ema = mk[MK_PREMIUM_EMA, e]
    ema_alpha = mk[MK_EMA_ALPHA, e]
    interest, clamp, cap = mk[MK_INTEREST, e], mk[MK_CLAMP, e], mk[MK_CAP, e]
    depth = mk[MK_DEPTH_NORMAL, e] * depth_mult_path[e, t]
    index_px, basis, wick = index_path[e, t], basis_path[e, t], wick_path[e, t]
    manipulation = manipulation_path[e, t]
    frozen_now = frozen[e, t]
    use_last, use_index = mark_last[e], oracle_index[e]
    n = count[e]
    lag = n - delay[e]  # the slot read after this tick's is written (n - 1 - delay, n += 1)
    first_before, floor_px, held = first[e], floor[e], last[e]

    index = index_px * math.exp(bounded_impact_log_one(impact))
    last_px = index * math.exp(basis) * wick
    premium = math.expm1(basis)
    ema += ema_alpha * (premium - ema)
    mk[MK_PREMIUM_EMA, e] = ema
    b = index * (1.0 + ema)
    median = max(min(last_px, b), min(max(last_px, b), index))  # last, index with premium, index
    mark = last_px if use_last else median
    source = index if use_index else mark

    # The oracle (fundgym.envs.market.oracle.OracleFeed.update): delay, manipulation, floor, freeze.
    is_first = n == 0
    first_px = source if is_first else first_before
    first[e] = first_px
    count[e] = n + 1
    size = np.uint64(buffer.shape[0])
    buffer[np.uint64(n) % size, e] = source  # n >= 0: an unsigned remainder, no sign fix-up
    at_lag = buffer[np.uint64(max(lag, 0)) % size, e]
    delayed = at_lag if lag >= 0 else first_px
    delayed = max(delayed * manipulation, floor_px)
    oracle = held if frozen_now & (not is_first) else delayed  # ``&``: no short-circuit branch
    last[e] = oracle

    rate = funding_rate_one(index * (1.0 + ema), index, interest, clamp, cap)
    return index, last_px, mark, oracle, depth, rate


@jit(error_model="numpy")
def advance_one(e, mk, sell_notional_usd, buy_notional_usd, depth_usd_per_pct):  # type: ignore[no-untyped-def]
    """:meth:`Market.advance <fundgym.envs.market.market.Market.advance>`'s impact update for ``e``.

    The book refills one tick, the tick's net liquidation flow walks it further
    (:func:`fundgym.envs.market.depth.walk_book`), and the permanent impact takes its share of
    the walk's move. The caller moves the clock.
    """
    walk = mk[MK_BOOK_WALK_LOG, e] * mk[MK_IMPACT_DECAY, e]
    walked = walked_notional_one(walk, depth_usd_per_pct) - (sell_notional_usd - buy_notional_usd)
    new_walk = walk_log_move_one(abs(walked), depth_usd_per_pct)
    if walked < 0.0:
        new_walk = -new_walk
    mk[MK_IMPACT_PERMANENT_LOG, e] = mk[MK_IMPACT_PERMANENT_LOG, e] + mk[
        MK_IMPACT_PERMANENT_COEF, e
    ] * (new_walk - walk)
    mk[MK_BOOK_WALK_LOG, e] = new_walk
