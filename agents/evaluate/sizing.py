"""Sizing the insurance fund: how large must it be to keep socialised loss and ADL rare?

``fundgym size-fund`` runs one policy through a scenario set for many episodes and answers
the risk committee's first question from the simulated deficits. This module holds the
measurement and the statistics; :mod:`fundgym.agents.evaluate.sizing_report` writes them.

**Per episode** (:class:`Deficits`, one entry per episode):

* ``payout_usd``: the fund's peak cumulative payout, the bad debt it paid (the sum of the
  environment's ``shortfall_usd``; the per-step payouts are never negative, so the cumulative
  payout peaks at its end and the sum *is* its running maximum);
* ``loss_beyond_usd``: the deficit the fund did not cover, in USD: socialised loss plus
  unrecovered bad debt (``bad_debt_usd`` of :mod:`fundgym.agents.evaluate.metrics`) plus the
  profit that auto-deleveraging took from its counterparties (``adl_haircut_usd``, summed
  over the episode and floored at 0). The ADL'd *notional* (``adl_volume_usd``, the part of
  the metrics' headline ``solvency_loss_usd``) is not added: it is a volume, not a deficit,
  and one dollar of bad debt can deleverage a hundred dollars of positions, so a fund sized
  on it would be sized on the wrong unit. The haircut is the deficit ADL covered (a close at
  the bankruptcy price hands the counterparty's mark-to-market profit to the bankrupt
  position); a venue that closes at a price better than the mark makes it smaller [E];
* ``fund_needed_usd = payout_usd + loss_beyond_usd``: the total deficit a fund would have had
  to pay for nobody to be socialised or deleveraged, and ``fund_needed_frac_oi``, the same over
  the open interest at the episode's start: fund / OI is the headline. Two estimate marks:
  fee income that reached the fund during the episode is not credited (conservative: in a
  cascade the fees arrive with the losses), and the episode ran with the policy's own fund,
  so after that fund was exhausted the path is the one ADL or socialisation shaped, not the
  one a larger fund would have seen [E: first-order counterfactual];
* ``event``: whether socialised loss, unrecovered bad debt or ADL happened at all with the
  policy's own fund (observed, no counterfactual).

Amounts below :data:`LOSS_DUST_FRAC_OI` of the open interest are the simulator's
floating-point dust (1e-18 USD) and count as zero.

**Statistics.** Value at risk and expected shortfall at :data:`LEVELS` use the evaluation's
own definition (:func:`fundgym.agents.evaluate.metrics.var_es`: the lower empirical quantile
without interpolation, ES the mean of the losses at or above it). Their intervals are
percentile bootstrap intervals (:func:`bootstrap_var_es`: :data:`BOOTSTRAP_RESAMPLES`
resamples of the episodes with replacement, generator seeded :data:`BOOTSTRAP_SEED`, the
:data:`CI_LEVEL` interval between the bootstrap distribution's 2.5% and 97.5% points; VaR's
cover the truth at their nominal rate, ES's run slightly narrow, 92-93% for a nominal 95% on
exponential samples of 2,000: tests/agents/test_sizing.py). The
fund that keeps P(socialised loss or ADL) at or under a target ``p`` is the VaR of
``fund_needed`` at level ``1 - p`` (:func:`fund_for_target`): the smallest observed need that
at most a share ``p`` of the episodes exceed. A 99.9% figure rests on at most a tenth of one
per cent of the episodes; below :data:`MIN_EPISODES_999` episodes it is refused unless asked
for (:func:`few_episodes_message`), and every figure states how many episodes it rests on.

**Cover-2** (:func:`cover2_usd`): the deficit the two largest accounts leave when they
default under the scenario set's most extreme moves. At each episode's start the two accounts
with the largest notional are read from the simulator's state (``SimState.size``,
``collateral_usd``, ``entry_price``; one market); a long is hit by the set's extreme fall, a
short by its extreme rise: the :data:`COVER2_MOVE_LEVEL` quantile over the episodes of each
episode's largest peak-to-trough fall and trough-to-peak rise of the mark (the largest
observed are reported beside them); each account's deficit is its loss beyond its equity
(collateral plus unrealised PnL at the start), and the episode's Cover-2 is the sum of the
two. The figure is the largest over the episodes' starting books (the median beside it).
Estimate marks: the moves are read at decision resolution (every ``decision_minutes``), so a
wick inside a decision is missed [E]; the accounts are taken whole at the move's extreme with
no liquidation on the way (the clearing-house convention of a defaulter's portfolio closed
out after the move) [E]; a short's adverse move is a rise from a trough, as the historical
stress moves of a clearing house are, not only from the starting price [E]; single accounts
stand in for groups, since the simulated population has no ownership links between
accounts.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fundgym.agents.evaluate.episodes import Job
from fundgym.agents.evaluate.metrics import EpisodeRecord, var_es, wilson_interval
from fundgym.agents.policies import PolicySpec, parse_spec
from fundgym.agents.rollout import EvaluateError, FloatArray, base_env, job_env
from fundgym.envs.exchange_env import InsuranceFundVectorEnv

#: The confidence levels of every VaR / ES table.
LEVELS: tuple[float, ...] = (0.95, 0.99, 0.999)
#: The fewest episodes a 99.9% figure may rest on without ``--allow-few-episodes``: ten
#: episodes beyond the quantile.
MIN_EPISODES_999 = 10_000
#: Levels at or above this need :data:`MIN_EPISODES_999` episodes.
HIGH_LEVEL = 0.999
#: Bootstrap resamples behind every interval: the 2.5% and 97.5% points of 2,000 resamples
#: move by about a tenth of the interval's width between generator seeds.
BOOTSTRAP_RESAMPLES = 2_000
#: Seed of the bootstrap's generator: the same episodes always give the same intervals.
BOOTSTRAP_SEED = 0
#: Two-sided level of every interval.
CI_LEVEL = 0.95
#: Resamples sorted at once (memory: this many copies of the sample).
_BOOTSTRAP_BLOCK = 32
#: The default target for P(socialised loss or ADL): once in a thousand episodes (99.9%).
DEFAULT_TARGET_PROB = 0.001
#: Losses below this share of the open interest are floating-point dust, counted as zero.
LOSS_DUST_FRAC_OI = 1e-9
#: Cover-2's moves: this quantile of the episodes' largest fall and largest rise, the
#: "extreme but plausible" move of clearing-house stress tests at CME's 99.9% (the largest
#: of 20,000 stressed draws is a thin market's pump of 150x, no plausible move for a book;
#: below 1,000 episodes the quantile is the largest).
COVER2_MOVE_LEVEL = 0.999
#: Episodes per job: one batched environment of this many exchanges in a worker.
CHUNK_EPISODES = 256
#: Episodes whose records are held at once (about 36 kB each); more run in further waves.
WAVE_EPISODES = 8_192
#: Points of the fund-size-versus-P(exhaustion) curve.
CURVE_POINTS = 201
#: The measures with a VaR / ES table, each with what it is.
MEASURES: dict[str, str] = {
    "fund_needed_frac_oi": "fund needed / open interest at the episode's start",
    "fund_needed_usd": "fund needed, USD",
    "loss_beyond_usd": "loss beyond the policy's own fund (socialised + unrecovered + ADL "
    "haircut), USD",
}


# --------------------------------------------------------------------------------------------
# Per-episode deficits
# --------------------------------------------------------------------------------------------


@dataclass
class StartBooks:
    """What Cover-2 and the price moves need from each episode's start, one row per episode.

    Attributes:
        initial_mark_usd: The mark price at the episode's start.
        initial_open_interest_usd: Open interest at the start (checked against the record's).
        top_size: ``(n, 2)`` signed sizes (base units) of the two accounts with the largest
            notional, largest first.
        top_equity_usd: ``(n, 2)`` their equity at the start: collateral plus unrealised PnL.
    """

    initial_mark_usd: FloatArray
    initial_open_interest_usd: FloatArray
    top_size: FloatArray
    top_equity_usd: FloatArray


def start_books(env_kw: dict[str, Any], episodes: int, seed: int) -> StartBooks:
    """The starting books of ``episodes`` episodes (episode ``i`` seeded ``seed + i``).

    Resets the same batched environment :func:`~fundgym.agents.evaluate.episodes.run_episodes`
    resets (an exchange's episode depends on its seed alone), and reads the simulator's state
    before the first decision.

    Raises:
        EvaluateError: The environment lists more than one market (Cover-2 reads one).
    """
    env = InsuranceFundVectorEnv(num_envs=episodes, **env_kw)
    env.reset(seed=seed)
    sim = env.core.sim
    assert sim is not None
    state = sim.state
    if state.n_markets != 1:
        raise EvaluateError(f"Cover-2 reads one market; this environment lists {state.n_markets}")
    mark = np.array(env.core.last_mark, dtype=np.float64)
    size = state.size[:, :, 0]
    notional = np.abs(size) * mark[:, None]
    top = np.argsort(-notional, axis=1, kind="stable")[:, :2]
    rows = np.arange(episodes)[:, None]
    top_size = size[rows, top]
    equity = state.collateral_usd + size * (mark[:, None] - state.entry_price[:, :, 0])
    books = StartBooks(
        initial_mark_usd=mark,
        initial_open_interest_usd=np.array(env.core.initial_open_interest_usd),
        top_size=np.array(top_size, dtype=np.float64),
        top_equity_usd=np.array(equity[rows, top], dtype=np.float64),
    )
    env.close()
    return books


def price_moves(initial_mark_usd: float, mark_usd: FloatArray) -> tuple[float, float]:
    """Largest peak-to-trough fall and trough-to-peak rise of a mark path, as fractions.

    The path starts at ``initial_mark_usd`` and goes on with the mark at the end of each
    decision. The fall is ``max(1 - p / running max)``, the rise ``max(p / running min - 1)``.
    """
    path = np.concatenate(([float(initial_mark_usd)], np.asarray(mark_usd, dtype=np.float64)))
    fall = float(np.max(1.0 - path / np.maximum.accumulate(path)))
    rise = float(np.max(path / np.minimum.accumulate(path) - 1.0))
    return fall, rise


def _fsum(values: FloatArray) -> float:
    return math.fsum(values.tolist())


@dataclass
class Deficits:
    """Per-episode deficits of one policy on a scenario set (see the module docstring).

    Every attribute but ``scenario`` is a 1-D array with one entry per episode; ``top_size``
    and ``top_equity_usd`` are ``(n, 2)`` (:class:`StartBooks`).
    """

    scenario: list[str] = field(default_factory=list)
    seed: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    initial_open_interest_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    initial_fund_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    payout_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    socialized_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    adl_haircut_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    adl_volume_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    price_fall_frac: FloatArray = field(default_factory=lambda: np.zeros(0))
    price_rise_frac: FloatArray = field(default_factory=lambda: np.zeros(0))
    initial_mark_usd: FloatArray = field(default_factory=lambda: np.zeros(0))
    top_size: FloatArray = field(default_factory=lambda: np.zeros((0, 2)))
    top_equity_usd: FloatArray = field(default_factory=lambda: np.zeros((0, 2)))

    @classmethod
    def from_records(cls, records: Sequence[EpisodeRecord], books: StartBooks) -> Deficits:
        """Reduce recorded episodes and their starting books to deficits (same order).

        Raises:
            RuntimeError: The books are not those of the records (their open interest at the
                start differs): a bug, not a user's mistake.
        """
        n = len(records)
        oi = np.array([r.initial_open_interest_usd for r in records])
        if oi.shape != books.initial_open_interest_usd.shape or not np.allclose(
            oi, books.initial_open_interest_usd, rtol=1e-12, atol=0.0
        ):
            raise RuntimeError("starting books do not match the recorded episodes")
        dust = LOSS_DUST_FRAC_OI * oi
        payout = np.array([_fsum(r.shortfall_usd) for r in records])
        social = np.array(
            [_fsum(r.socialized_loss_usd) + _fsum(r.unrecovered_usd) for r in records]
        )
        haircut = np.maximum(np.array([_fsum(r.adl_haircut_usd) for r in records]), 0.0)
        adl = np.array([_fsum(r.adl_volume_usd) for r in records])
        moves = np.array(
            [
                price_moves(m, r.mark_price)
                for m, r in zip(books.initial_mark_usd, records, strict=True)
            ]
        ).reshape(n, 2)
        return cls(
            scenario=[r.scenario for r in records],
            seed=np.array([r.seed for r in records], dtype=np.int64),
            initial_open_interest_usd=oi,
            initial_fund_usd=np.array([r.initial_fund_usd for r in records]),
            payout_usd=np.where(payout < dust, 0.0, payout),
            socialized_usd=np.where(social < dust, 0.0, social),
            adl_haircut_usd=np.where(haircut < dust, 0.0, haircut),
            adl_volume_usd=np.where(adl < dust, 0.0, adl),
            price_fall_frac=moves[:, 0],
            price_rise_frac=moves[:, 1],
            initial_mark_usd=books.initial_mark_usd,
            top_size=books.top_size,
            top_equity_usd=books.top_equity_usd,
        )

    @classmethod
    def concat(cls, parts: Sequence[Deficits]) -> Deficits:
        """The episodes of ``parts``, in order."""
        out = cls()
        if not parts:
            return out
        out.scenario = [s for p in parts for s in p.scenario]
        for name in (f.name for f in _ARRAY_FIELDS):
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
        return out

    def select(self, mask: npt.NDArray[np.bool_]) -> Deficits:
        """The episodes where ``mask`` holds."""
        out = Deficits(scenario=[s for s, m in zip(self.scenario, mask, strict=True) if m])
        for name in (f.name for f in _ARRAY_FIELDS):
            setattr(out, name, getattr(self, name)[mask])
        return out

    def __len__(self) -> int:
        return len(self.scenario)

    @property
    def loss_beyond_usd(self) -> FloatArray:
        """Deficit beyond the policy's own fund: socialised + unrecovered + ADL haircut."""
        out: FloatArray = self.socialized_usd + self.adl_haircut_usd
        return out

    @property
    def fund_needed_usd(self) -> FloatArray:
        """The fund that would have covered every deficit: payout + loss beyond."""
        out: FloatArray = self.payout_usd + self.loss_beyond_usd
        return out

    @property
    def fund_needed_frac_oi(self) -> FloatArray:
        """:attr:`fund_needed_usd` over the open interest at the episode's start."""
        out: FloatArray = self.fund_needed_usd / self.initial_open_interest_usd
        return out

    @property
    def event(self) -> npt.NDArray[np.bool_]:
        """Socialised loss, unrecovered bad debt or ADL with the policy's own fund."""
        out: npt.NDArray[np.bool_] = (self.socialized_usd > 0.0) | (self.adl_volume_usd > 0.0)
        out |= self.adl_haircut_usd > 0.0
        return out

    def measure(self, name: str) -> FloatArray:
        """One of :data:`MEASURES` per episode."""
        value: FloatArray = getattr(self, name)
        return value


_ARRAY_FIELDS = [f for f in Deficits.__dataclass_fields__.values() if f.name != "scenario"]


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _level_index(level: float, n: int) -> int:
    """Index of the lower empirical ``level`` quantile in a sorted sample of ``n``.

    The same index :func:`~fundgym.agents.evaluate.metrics.var_es` takes.
    """
    return min(max(math.ceil(level * n - 1e-9) - 1, 0), n - 1)


def bootstrap_var_es(
    losses: npt.ArrayLike,
    levels: Sequence[float] = LEVELS,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    ci_level: float = CI_LEVEL,
) -> dict[float, dict[str, tuple[float, float]]]:
    """Percentile bootstrap intervals of VaR and ES at each of ``levels``.

    Each resample draws ``n`` episodes with replacement (generator
    ``numpy.random.default_rng(seed)``), and VaR and ES are computed on it exactly as
    :func:`~fundgym.agents.evaluate.metrics.var_es` computes them on the sample (the lower
    quantile; the mean of the losses at or above it). The interval is the
    ``(1 - ci_level) / 2`` and ``(1 + ci_level) / 2`` quantiles of the resampled values (the
    percentile method: no normal approximation, which a skewed tail statistic would break).

    Args:
        losses: 1-D, non-empty, finite sample.
        levels: VaR / ES levels, each strictly between 0 and 1.
        resamples: Bootstrap resamples, >= 1.
        seed: The generator's seed.
        ci_level: Two-sided level of the intervals, strictly between 0 and 1.

    Returns:
        ``{level: {"var": (low, high), "es": (low, high)}}``.

    Raises:
        ValueError: An empty or non-finite sample, a level outside (0, 1), ``resamples < 1``.
    """
    x = np.asarray(losses, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError("losses must be a non-empty 1-D sample of finite numbers")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    for q in (*levels, ci_level):
        if not 0.0 < q < 1.0:
            raise ValueError(f"levels must lie strictly between 0 and 1, got {q!r}")
    n = x.size
    rng = np.random.default_rng(seed)
    index = [_level_index(q, n) for q in levels]
    var_s = np.empty((resamples, len(levels)))
    es_s = np.empty((resamples, len(levels)))
    for start in range(0, resamples, _BOOTSTRAP_BLOCK):
        m = min(_BOOTSTRAP_BLOCK, resamples - start)
        sample = np.sort(x[rng.integers(0, n, size=(m, n))], axis=1)
        # tail[:, j] = sum of sample[:, j:]; the first index at or above VaR opens the tail
        tail = np.cumsum(sample[:, ::-1], axis=1)[:, ::-1]
        rows = np.arange(m)
        for j, k in enumerate(index):
            var = sample[:, k]
            first = np.sum(sample < var[:, None], axis=1)
            es = tail[rows, first] / (n - first)
            var_s[start : start + m, j] = var
            es_s[start : start + m, j] = np.clip(es, var, sample[:, -1])
    lo, hi = 0.5 * (1.0 - ci_level), 0.5 * (1.0 + ci_level)
    out: dict[float, dict[str, tuple[float, float]]] = {}
    for j, q in enumerate(levels):
        out[q] = {
            "var": (float(np.quantile(var_s[:, j], lo)), float(np.quantile(var_s[:, j], hi))),
            "es": (float(np.quantile(es_s[:, j], lo)), float(np.quantile(es_s[:, j], hi))),
        }
    return out


def few_episodes_message(episodes: int, allow_few: bool) -> str | None:
    """Why ``episodes`` episodes may not give a 99.9% figure, or ``None`` when they may.

    A 99.9% VaR from ``n`` episodes is the ``ceil(0.999 n)``-th smallest: below
    :data:`MIN_EPISODES_999` it rests on fewer than ten episodes beyond it, and its ES on fewer
    than ten losses. ``allow_few`` (``--allow-few-episodes``) lets it through, marked.
    """
    if episodes >= MIN_EPISODES_999 or allow_few:
        return None
    tail = episodes - _level_index(HIGH_LEVEL, episodes)
    return (
        f"--episodes {episodes:,}: a 99.9% figure needs at least {MIN_EPISODES_999:,} episodes "
        f"per scenario (from {episodes:,} its VaR and ES would rest on the worst {tail:,}); "
        "raise --episodes, or pass --allow-few-episodes to print it anyway, marked as resting "
        "on too few"
    )


def tail_table(
    losses: npt.ArrayLike,
    levels: Sequence[float] = LEVELS,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[dict[str, Any]]:
    """VaR and ES at each level with their bootstrap intervals, and what each rests on.

    Returns:
        One dict per level: ``level``, ``var``, ``var_ci``, ``es``, ``es_ci``, ``episodes``
        (the sample size), ``tail_episodes`` (how many are at or above VaR) and
        ``few_episodes`` (a level of at least :data:`HIGH_LEVEL` from fewer than
        :data:`MIN_EPISODES_999` episodes).
    """
    x = np.asarray(losses, dtype=np.float64)
    ci = bootstrap_var_es(x, levels, resamples=resamples, seed=seed)
    rows = []
    for q in levels:
        var, es = var_es(x, q)
        rows.append(
            {
                "level": q,
                "var": var,
                "var_ci": list(ci[q]["var"]),
                "es": es,
                "es_ci": list(ci[q]["es"]),
                "episodes": int(x.size),
                "tail_episodes": int(np.sum(x >= var)),
                "few_episodes": q >= HIGH_LEVEL - 1e-12 and x.size < MIN_EPISODES_999,
            }
        )
    return rows


def fund_for_target(needed: npt.ArrayLike, target_prob: float) -> float:
    """The smallest observed need that at most a share ``target_prob`` of episodes exceed.

    With a fund of ``F``, an episode socialises or deleverages when its need exceeds ``F``, so
    the empirical P(need > F) <= ``target_prob`` first holds at the lower empirical quantile
    at level ``1 - target_prob``: the VaR of the need at that level.
    """
    if not 0.0 < target_prob < 1.0:
        raise ValueError(f"target_prob must lie strictly between 0 and 1, got {target_prob!r}")
    return var_es(needed, 1.0 - target_prob)[0]


def exhaustion_curve(needed: npt.ArrayLike, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """P(a fund of size F is exhausted) = P(need > F) on a grid of F, with Wilson intervals.

    The grid is 0, then ``points - 1`` sizes spaced evenly on a log scale from the smallest
    positive need to the largest (a tail spans decades); the need and F share a unit (USD or
    a share of open interest).

    Returns:
        ``fund`` (the grid), ``p``, ``p_low``, ``p_high`` (95% Wilson interval).
    """
    x = np.sort(np.asarray(needed, dtype=np.float64))
    n = x.size
    positive = x[x > 0.0]
    grid = np.zeros(1)
    if positive.size:
        grid = np.unique(np.concatenate(([0.0], np.geomspace(positive[0], x[-1], points - 1))))
    above = n - np.searchsorted(x, grid, side="right")
    p, low, high = zip(*(wilson_interval(int(k), n, CI_LEVEL) for k in above), strict=True)
    return {"fund": grid.tolist(), "p": list(p), "p_low": list(low), "p_high": list(high)}


def cover2_usd(
    top_size: npt.ArrayLike,
    top_equity_usd: npt.ArrayLike,
    mark_usd: npt.ArrayLike,
    fall_frac: float,
    rise_frac: float,
) -> FloatArray:
    """Each book's Cover-2: the two largest accounts' deficit under the extreme moves.

    A long of ``q > 0`` base units loses ``q x mark x fall_frac`` when the price falls by
    ``fall_frac``; a short loses ``|q| x mark x rise_frac`` when it rises by ``rise_frac``.
    An account's deficit is what that loss leaves beyond its equity, ``max(loss - equity, 0)``;
    a book's Cover-2 is the sum over its two accounts.

    Args:
        top_size: ``(n, 2)`` signed sizes of the two accounts with the largest notional.
        top_equity_usd: ``(n, 2)`` their equity (collateral + unrealised PnL) at the start.
        mark_usd: ``(n,)`` the mark at the start.
        fall_frac: The largest peak-to-trough fall of the set (>= 0).
        rise_frac: The largest trough-to-peak rise of the set (>= 0).

    Returns:
        ``(n,)`` Cover-2 per book, USD.
    """
    q = np.asarray(top_size, dtype=np.float64)
    equity = np.asarray(top_equity_usd, dtype=np.float64)
    mark = np.asarray(mark_usd, dtype=np.float64)[:, None]
    loss = np.where(q > 0.0, q * mark * fall_frac, -q * mark * rise_frac)
    out: FloatArray = np.maximum(loss - equity, 0.0).sum(axis=1)
    return out


# --------------------------------------------------------------------------------------------
# One group of episodes -> its figures
# --------------------------------------------------------------------------------------------


def summarize_group(
    d: Deficits,
    target_prob: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Every figure of one group of episodes (a scenario, or all of them).

    Args:
        d: The group's episodes (at least one).
        target_prob: The target for P(socialised loss or ADL).
        resamples: The bootstrap's resamples (:func:`bootstrap_var_es`).
        seed: The bootstrap's seed.

    Returns:
        A JSON-ready dict: ``episodes``; ``observed`` (P(socialised loss or ADL) with the
        policy's own fund and its Wilson interval, the fund's median share of open
        interest); ``tail`` (:func:`tail_table` of each of :data:`MEASURES`);
        ``fund_for_target`` (USD and share of OI, with bootstrap intervals);
        ``cover2``; ``curve`` (:func:`exhaustion_curve` in shares of OI).
    """
    n = len(d)
    events = int(np.sum(d.event))
    p, p_lo, p_hi = wilson_interval(events, n, CI_LEVEL)
    level = 1.0 - target_prob
    target: dict[str, Any] = {
        "target_prob": target_prob,
        "level": level,
        "episodes": n,
        "few_episodes": level >= HIGH_LEVEL - 1e-12 and n < MIN_EPISODES_999,
    }
    for measure, key in (("fund_needed_usd", "usd"), ("fund_needed_frac_oi", "frac_oi")):
        x = d.measure(measure)
        target[key] = fund_for_target(x, target_prob)
        ci = bootstrap_var_es(x, (level,), resamples=resamples, seed=seed)[level]["var"]
        target[f"{key}_ci"] = list(ci)
        target[f"p_exceed_{key}"] = float(np.mean(x > target[key]))
    fall = var_es(d.price_fall_frac, COVER2_MOVE_LEVEL)[0]  # extreme but plausible
    rise = var_es(d.price_rise_frac, COVER2_MOVE_LEVEL)[0]
    c2 = cover2_usd(d.top_size, d.top_equity_usd, d.initial_mark_usd, fall, rise)
    c2_frac = c2 / d.initial_open_interest_usd
    # Each side alone: which move the figure comes from (a pump hits only the shorts).
    longs = cover2_usd(d.top_size, d.top_equity_usd, d.initial_mark_usd, fall, 0.0)
    shorts = cover2_usd(d.top_size, d.top_equity_usd, d.initial_mark_usd, 0.0, rise)
    worst = int(np.argmax(c2_frac))
    cover2 = {
        "move_level": COVER2_MOVE_LEVEL,
        "fall_frac": fall,
        "rise_frac": rise,
        "largest_fall_frac": float(d.price_fall_frac.max()),
        "largest_rise_frac": float(d.price_rise_frac.max()),
        "books": n,
        "usd": float(c2.max()),
        "frac_oi": float(c2_frac[worst]),
        "median_frac_oi": float(np.median(c2_frac)),
        "longs_frac_oi": float(np.max(longs / d.initial_open_interest_usd)),
        "shorts_frac_oi": float(np.max(shorts / d.initial_open_interest_usd)),
        "worst_seed": int(d.seed[worst]),
        "top2_notional_frac_oi": float(
            np.median(
                np.abs(d.top_size).sum(axis=1) * d.initial_mark_usd / d.initial_open_interest_usd
            )
        ),
    }
    return {
        "episodes": n,
        "observed": {
            "p_socialised_or_adl": p,
            "p_socialised_or_adl_ci": [p_lo, p_hi],
            "episodes_with_event": events,
            "own_fund_frac_oi": float(np.median(d.initial_fund_usd / d.initial_open_interest_usd)),
            "mean_payout_usd": float(np.mean(d.payout_usd)),
            "mean_loss_beyond_usd": float(np.mean(d.loss_beyond_usd)),
        },
        "tail": {m: tail_table(d.measure(m), resamples=resamples, seed=seed) for m in MEASURES},
        "fund_for_target": target,
        "cover2": cover2,
        "curve": exhaustion_curve(d.fund_needed_frac_oi),
    }


# --------------------------------------------------------------------------------------------
# The whole job
# --------------------------------------------------------------------------------------------


@dataclass
class SizingResult:
    """What :func:`size_fund` measured, ready for :mod:`.sizing_report`.

    Attributes:
        policy: The policy's spec as resolved.
        scenarios: The scenario names, in order.
        episodes: Episodes per scenario.
        seed: First episode seed (episode ``i`` of every scenario seeded ``seed + i``).
        target_prob: The target for P(socialised loss or ADL).
        allow_few_episodes: Whether ``--allow-few-episodes`` let a 99.9% figure rest on fewer
            than :data:`MIN_EPISODES_999` episodes.
        env: The evaluation environment's settings (before each scenario's fit).
        deficits: Every episode, scenario by scenario.
        overall: :func:`summarize_group` of all the episodes.
        by_scenario: The same per scenario (Cover-2 under each scenario's own extreme moves;
            the overall figure under the whole set's).
        workers: Worker processes (or Ray CPUs).
        backend: Where the episodes ran.
        wall_s: Seconds from start to the figures (episodes, books and statistics).
        episodes_s: Seconds of the episodes and starting books alone.
    """

    policy: PolicySpec
    scenarios: list[str]
    episodes: int
    seed: int
    target_prob: float
    allow_few_episodes: bool
    env: dict[str, Any]
    deficits: Deficits
    overall: dict[str, Any]
    by_scenario: dict[str, dict[str, Any]]
    workers: int
    backend: str
    wall_s: float
    episodes_s: float


def sizing_env(
    policy: str, config: str | None, accounts: int | None
) -> tuple[PolicySpec, dict[str, Any]]:
    """The policy's spec and the evaluation environment's settings (``--accounts`` applied).

    Raises:
        SpecError: A spec that names nothing runnable.
        EvaluateError: ``best_static`` or ``hindsight_static`` (searched per evaluation; size
            the static set it found instead), or a config that cannot be read.
    """
    spec = parse_spec(policy)
    if spec.kind == "search":
        raise EvaluateError(
            f"--policy {policy!r}: a searched baseline is not a fixed policy; size the static "
            "set it found (static:name=value,... from an evaluation's summary.json)"
        )
    base = base_env(config, [spec])
    if accounts is not None:
        base["n_accounts"] = accounts
    return spec, base


def size_fund(
    policy: str,
    scenarios: Sequence[str],
    episodes: int,
    *,
    seed: int = 0,
    target_prob: float = DEFAULT_TARGET_PROB,
    allow_few_episodes: bool = False,
    config: str | None = None,
    accounts: int | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    progress: Callable[[int], None] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> SizingResult:
    """Run ``policy`` through ``scenarios`` for ``episodes`` episodes each and size the fund.

    Episodes run as jobs of :data:`CHUNK_EPISODES` (job ``j`` of a scenario covers episodes
    ``j x CHUNK_EPISODES ..``, seeded ``seed + i`` as one job would seed them) through
    :func:`fundgym.agents.evaluate.backends.run_jobs_backend`, in waves of at most
    :data:`WAVE_EPISODES` episodes whose records are reduced to :class:`Deficits` before the
    next wave runs, so memory does not grow with ``episodes``. The starting books are read in
    this process (:func:`start_books`, about a millisecond per episode).

    Args:
        policy: A policy spec (:func:`fundgym.agents.policies.parse_spec`).
        scenarios: Scenario names (:func:`fundgym.agents.rollout.parse_scenarios` output).
        episodes: Episodes per scenario.
        seed: First episode seed.
        target_prob: Target for P(socialised loss or ADL), strictly between 0 and 1.
        allow_few_episodes: Print 99.9% figures from fewer than :data:`MIN_EPISODES_999`.
        config: Training or environment config (default: as ``fundgym evaluate``).
        accounts: Account slots per exchange (default: the config's).
        workers: Worker processes (default: one per CPU).
        backend: ``local`` or ``ray`` (:data:`fundgym.agents.evaluate.backends.BACKENDS`).
        address: A Ray cluster to join (``ray`` only).
        progress: Called with the number of episodes each finished job ran.
        resamples: Bootstrap resamples.

    Raises:
        EvaluateError: Too few episodes for a 99.9% figure without ``allow_few_episodes``, a
            bad target, a policy that cannot run in the environment, an episode that cannot
            be scored, or a backend that cannot run.
    """
    from fundgym.agents.evaluate.backends import run_jobs_backend

    t0 = time.perf_counter()
    message = few_episodes_message(episodes, allow_few_episodes)
    if message is not None:
        raise EvaluateError(message)
    if episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {episodes}")
    if not 0.0 < target_prob < 1.0:
        raise EvaluateError(f"--target-prob must lie strictly between 0 and 1, got {target_prob}")
    spec, base = sizing_env(policy, config, accounts)
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    jobs = [
        Job(spec, sc, kw, min(CHUNK_EPISODES, episodes - start), seed + start)
        for sc in scenarios
        for kw in [job_env(base, spec, sc)]
        for start in range(0, episodes, CHUNK_EPISODES)
    ]
    parts: list[Deficits] = []
    wave: list[Job] = []
    for i, job in enumerate(jobs):
        wave.append(job)
        if sum(j.episodes for j in wave) >= WAVE_EPISODES or i == len(jobs) - 1:
            results = run_jobs_backend(
                wave,
                workers=n_workers,
                backend=backend,
                address=address,
                progress=None if progress is None else (lambda j: progress(j.episodes)),
            )
            for done, records in zip(wave, results, strict=True):
                books = start_books(done.env_kw, done.episodes, done.seed)
                parts.append(Deficits.from_records(records, books))
            wave = []
    deficits = Deficits.concat(parts)
    episodes_s = time.perf_counter() - t0
    overall = summarize_group(deficits, target_prob, resamples=resamples)
    names = np.array(deficits.scenario)
    by_scenario = {
        sc: summarize_group(deficits.select(names == sc), target_prob, resamples=resamples)
        for sc in scenarios
    }
    overall["cover2"]["set"] = "every scenario's largest moves"
    for sc, group in by_scenario.items():
        group["cover2"]["set"] = f"{sc}'s own largest moves"
    return SizingResult(
        policy=spec,
        scenarios=list(scenarios),
        episodes=episodes,
        seed=seed,
        target_prob=target_prob,
        allow_few_episodes=allow_few_episodes,
        env=base,
        deficits=deficits,
        overall=overall,
        by_scenario=by_scenario,
        workers=n_workers,
        backend=backend,
        wall_s=time.perf_counter() - t0,
        episodes_s=episodes_s,
    )
