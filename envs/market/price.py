"""Price processes: the building blocks a scenario composes into an index path.

Every generator returns per-tick **log returns** of shape ``(n_ticks, n_paths)`` so that parts
add: a regime-switching GARCH(1,1) with Student-t innovations for the diffusive part, Merton
jumps with negative skew, and scripted crash legs (declines, pauses, V-recoveries, stepwise
declines, one-tick wicks) dropped in at a chosen minute. GBM is the special case
``alpha = beta = 0`` with Gaussian innovations. The loop over ticks in :func:`garch_t_log_returns`
is inherent to GARCH (each variance depends on the last return); it is vectorised over paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fundgym.envs.jit import jit, kernel_array

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

MINUTES_PER_YEAR = 525_600.0
MINUTES_PER_DAY = 1_440.0


def student_t_unit(rng: np.random.Generator, nu: float, shape: tuple[int, ...]) -> FloatArray:
    """Student-t draws scaled to unit variance (``nu > 2``; ``inf`` gives a standard normal)."""
    if np.isinf(nu):
        return rng.standard_normal(shape)
    return np.asarray(rng.standard_t(nu, shape) * np.sqrt((nu - 2.0) / nu), dtype=np.float64)


def garch_t_log_returns(
    rng: np.random.Generator,
    n_ticks: int,
    n_paths: int,
    vol_annual: float,
    tick_minutes: float,
    *,
    alpha: float = 0.08,
    beta: float = 0.90,
    nu: float = 4.0,
    vol_multiplier: FloatArray | None = None,
) -> FloatArray:
    """GARCH(1,1) log returns with unit-variance Student-t innovations (fat tails, clustering).

    Variance targeting: ``sigma2_t = omega_t + alpha * r_{t-1}^2 + beta * sigma2_{t-1}`` with
    ``omega_t = (1 - alpha - beta) * (m_t * sigma_tick)^2``, so the long-run volatility is
    ``vol_annual`` scaled by ``vol_multiplier`` ``m_t`` (regimes, precursors) and shocks
    persist with half-life ``ln 0.5 / ln(alpha + beta)`` ticks.

    Args:
        rng: Random generator.
        n_ticks: Number of ticks.
        n_paths: Independent paths (columns).
        vol_annual: Long-run annualised volatility at multiplier 1.
        tick_minutes: Minutes per tick.
        alpha: Reaction to the last squared return (>= 0).
        beta: Persistence (>= 0, ``alpha + beta < 1``).
        nu: Student-t degrees of freedom (> 2; ``inf`` for Gaussian).
        vol_multiplier: Optional ``(n_ticks, n_paths)`` multiplier of the target volatility.
    """
    if alpha < 0 or beta < 0 or alpha + beta >= 1.0:
        raise ValueError(f"GARCH needs alpha, beta >= 0 and alpha + beta < 1, got {alpha}, {beta}")
    if not nu > 2.0:  # inf (Gaussian) passes
        raise ValueError(f"Student-t nu must be > 2 for a finite variance, got {nu}")
    sigma_tick = float(vol_annual * np.sqrt(tick_minutes / MINUTES_PER_YEAR))
    shape = (n_ticks, n_paths)
    mult = np.ones(shape) if vol_multiplier is None else vol_multiplier
    mult = kernel_array(mult, shape, np.float64)
    z = student_t_unit(rng, nu, shape)
    _garch_recursion(mult, sigma_tick, 1.0 - alpha - beta, float(alpha), float(beta), z)
    return z


@jit(error_model="numpy")
def _garch_recursion(mult, sigma_tick, omega_frac, alpha, beta, z):  # type: ignore[no-untyped-def]
    """Turn the innovations ``z`` into the GARCH log returns, in place.

    ``v = m_t sigma_tick``; ``var_t = omega_frac v^2 + alpha r_(t-1)^2 + beta var_(t-1)``
    from ``var = v_0^2``, ``r_t = sqrt(var_t) z_t``, and the Ito-style correction
    ``r_t - 0.5 v^2`` (so the price is a martingale on average). Sequential in time, so
    compiled: a Python loop over a day's 1,440 ticks made every episode reset cost
    milliseconds, and the array arithmetic around the loop (omega, the correction) cost
    more numpy calls than the loop. Each value has the operations, in the order, of the
    numpy expressions it replaces (``x ** 2`` is ``x * x`` in numpy).
    """
    n_ticks, n_paths = z.shape
    for p in range(n_paths):
        v = mult[0, p] * sigma_tick
        var = v * v
        prev_r2 = var
        for t in range(n_ticks):
            v = mult[t, p] * sigma_tick
            v2 = v * v
            var = omega_frac * v2 + alpha * prev_r2 + beta * var
            r = np.sqrt(var) * z[t, p]
            prev_r2 = r * r
            z[t, p] = r - 0.5 * v2


def merton_jump_log_returns(
    rng: np.random.Generator,
    n_ticks: int,
    n_paths: int,
    rate_per_day: float,
    mean_log: float,
    std_log: float,
    tick_minutes: float,
    rate_multiplier: FloatArray | None = None,
) -> FloatArray:
    """Compound-Poisson jumps (Merton): ``N ~ Poisson(rate dt)`` normal log jumps per tick.

    A negative ``mean_log`` gives the negative skew of crypto jumps (clustered, mostly down).
    """
    lam = rate_per_day * tick_minutes / MINUTES_PER_DAY
    lam_t = lam if rate_multiplier is None else lam * rate_multiplier
    counts = rng.poisson(lam_t, (n_ticks, n_paths))
    z = rng.standard_normal((n_ticks, n_paths))
    _jump_sizes(counts, float(mean_log), float(std_log), z)
    return z


@jit(error_model="numpy")
def _jump_sizes(counts, mean_log, std_log, z):  # type: ignore[no-untyped-def]
    """``N mean_log + sqrt(N) std_log z`` per tick, into ``z`` (one pass, not five numpy calls).

    Evaluated as numpy evaluates ``counts * mean_log + np.sqrt(counts) * std_log * z``.
    """
    n_ticks, n_paths = z.shape
    for t in range(n_ticks):
        for p in range(n_paths):
            n = float(counts[t, p])
            z[t, p] = n * mean_log + np.sqrt(n) * std_log * z[t, p]


def regime_path(
    rng: np.random.Generator,
    n_ticks: int,
    n_paths: int,
    switch_rate_per_day: FloatArray,
    tick_minutes: float,
    initial: int = 0,
) -> IntArray:
    """Markov regime index per tick (e.g. 0 calm, 1 volatile, 2 crisis).

    ``switch_rate_per_day[i, j]`` is the rate of moving from regime ``i`` to ``j`` (diagonal
    ignored); per tick the chain leaves ``i`` with probability ``1 - exp(-sum_j rate_ij dt)``
    and picks ``j`` in proportion to the rates.
    """
    rates = np.array(switch_rate_per_day, dtype=np.float64)
    np.fill_diagonal(rates, 0.0)
    dt = tick_minutes / MINUTES_PER_DAY
    leave = 1.0 - np.exp(-rates.sum(axis=1) * dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        dest = np.where(
            rates.sum(axis=1, keepdims=True) > 0, rates / rates.sum(1, keepdims=True), 0
        )
    cum_dest = np.cumsum(dest, axis=1)
    u_leave = rng.random((n_ticks, n_paths))
    u_dest = rng.random((n_ticks, n_paths))
    out = np.empty((n_ticks, n_paths), dtype=np.int64)
    _regime_chain(u_leave, u_dest, leave, np.ascontiguousarray(cum_dest), int(initial), out)
    return out


@jit
def _regime_chain(u_leave, u_dest, leave, cum_dest, initial, out):  # type: ignore[no-untyped-def]
    """The Markov chain of :func:`regime_path`, tick by tick, in place (compiled: see GARCH).

    A regime moves when its uniform is below its leaving probability, to the number of
    cumulative destination weights below the second uniform (capped at the last regime).
    """
    n_ticks, n_paths = u_leave.shape
    k = cum_dest.shape[0]
    for p in range(n_paths):
        state = initial
        for t in range(n_ticks):
            if u_leave[t, p] < leave[state]:
                nxt = 0
                for j in range(k):
                    nxt += u_dest[t, p] > cum_dest[state, j]
                state = min(nxt, k - 1)
            out[t, p] = state


LegKind = Literal["decline", "recovery", "pause", "steps", "wick"]


@dataclass(frozen=True)
class CrashLeg:
    """One segment of a scripted crash.

    Attributes:
        kind: ``decline`` / ``recovery``: a move of ``return_frac`` spread over the leg;
            ``pause``: flat; ``steps``: ``n_steps`` equal drops evenly spaced (stepwise
            decline, FTX-style); ``wick``: a one-tick move of ``return_frac`` reversed on the
            next tick (the path ends where it started).
        minutes: Duration of the leg.
        return_frac: Total simple return of the leg (-0.12 = down 12%).
        shape: ``linear`` (equal per tick), ``accelerating`` (slow start, fast end, the usual
            cascade), or ``front_loaded`` (gap then drift).
        n_steps: Number of drops for ``steps``.
    """

    kind: LegKind
    minutes: float
    return_frac: float = 0.0
    shape: Literal["linear", "accelerating", "front_loaded"] = "linear"
    n_steps: int = 1


def crash_log_returns(legs: Sequence[CrashLeg], tick_minutes: float) -> FloatArray:
    """Per-tick log returns of the scripted crash, legs in order (1-D, length in ticks)."""
    parts: list[FloatArray] = []
    for leg in legs:
        n = max(1, round(leg.minutes / tick_minutes))
        total = float(np.log1p(leg.return_frac))
        seg = np.zeros(n)
        if leg.kind in ("decline", "recovery"):
            x = (np.arange(n) + 0.5) / n
            w = {"linear": np.ones(n), "accelerating": x, "front_loaded": 1.0 - x}[leg.shape]
            seg = total * w / w.sum()
        elif leg.kind == "steps":
            k = max(1, min(leg.n_steps, n))
            at = np.linspace(0, n - 1, k).round().astype(int)
            seg[at] = total / k
        elif leg.kind == "wick":
            seg = np.zeros(max(n, 2))
            seg[0], seg[1] = total, -total
        parts.append(seg)
    return np.concatenate(parts) if parts else np.zeros(0)


def drawdown_stats(price: FloatArray, onset_frac: float = 0.05) -> tuple[float, int, int]:
    """Largest peak-to-trough drawdown: ``(drawdown_frac, onset_idx, trough_idx)``.

    The onset is the last tick before the trough at which the drawdown was at most
    ``onset_frac`` of its final size, so ``trough - onset`` measures how long the fall took
    ("-33% in 3 h") rather than how long ago a noisy peak happened to print.
    """
    running_max = np.maximum.accumulate(price)
    dd = 1.0 - price / running_max
    trough = int(np.argmax(dd))
    before = dd[: trough + 1] <= onset_frac * dd[trough]
    onset = int(np.flatnonzero(before)[-1]) if before.any() else 0
    return float(dd[trough]), onset, trough


def runup_stats(price: FloatArray, onset_frac: float = 0.05) -> tuple[float, int, int]:
    """Largest trough-to-peak run-up: ``(runup_frac, onset_idx, peak_idx)``.

    The onset is measured in log terms (the last tick at which the run-up had covered at most
    ``onset_frac`` of its final log move): a +2,295% pump would otherwise "start" a third of the
    way up.
    """
    log_p = np.log(price)
    log_up = log_p - np.minimum.accumulate(log_p)
    peak = int(np.argmax(log_up))
    before = log_up[: peak + 1] <= onset_frac * log_up[peak]
    onset = int(np.flatnonzero(before)[-1]) if before.any() else 0
    return float(np.expm1(log_up[peak])), onset, peak
