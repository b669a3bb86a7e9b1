"""Statistics across training seeds: what a controller promises, not what one seed did.

One trained run is one draw from the training procedure; another seed can land far from it.
``fundgym evaluate`` given a multi-seed directory (``fundgym train --seeds``) runs every seed
on the same episodes as the other policies, and this module turns those episodes into the
statistics of Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (NeurIPS; the ``rliable`` library), for a cost that is lower-better:

* the **interquartile mean** (IQM) across seeds of each seed's mean (:func:`iqm`): the mean of
  the middle half, robust to one outlying seed yet using more than the median;
* the **probability of improvement** over a reference policy (:func:`probability_of_improvement`):
  per scenario, the Mann-Whitney statistic of a seed's episodes against the reference's,
  ``P(x < y) + P(x = y) / 2`` over every pair of episodes, averaged over seeds;
* the **probability of exceeding** the reference (:func:`probability_exceeds`): the share of
  episodes on which a seed's cost is strictly above the reference's *on the same episode*
  (episode ``i`` of every policy sees the same market path and trader book), averaged over
  seeds: "the probability that the controller's user loss exceeds the best static set's";
* each seed's mean, the lowest and highest, and the worst seed against the reference.

Intervals are percentile intervals of a **stratified, two-level bootstrap**
(:func:`bootstrap_draws`): each replicate resamples, within each scenario independently, the
seeds (rliable's stratified bootstrap: runs resampled within each task) and the episodes (the
same episode draw for every seed and for the reference, keeping the pairs). rliable resamples
runs only, its per-run scores being means over many episodes; here a scenario has few episodes
(8 by default) and their noise is the larger part, so leaving it out would make the intervals
too narrow. With the episode draw fixed the scheme is rliable's.

"Over all scenarios": a seed's score is the mean over scenarios of its per-scenario means
(the evaluation's all-scenario mean, every scenario running the same number of episodes), and
the probabilities are the means over scenarios of the per-scenario ones (rliable averages
probability of improvement over tasks). Losses are not normalised across scenarios: they are
dollars on one exchange, and a reference with zero loss in a scenario (common) has no ratio.

Pure numpy over arrays shaped ``(scenarios, seeds, episodes)`` for the seeds and
``(scenarios, episodes)`` for a reference; :func:`seed_rows` lays the results out as the rows
of ``seeds.csv``. docs/seeds.md explains the statistics with worked examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fundgym.agents.evaluate.metrics import dominates, episode_solvency_loss_usd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The per-episode costs reported across seeds: user loss (socialised + unrecovered loss plus
#: deleveraged notional, :mod:`fundgym.agents.evaluate.metrics`'s ``solvency_loss_usd``) and
#: the capital locked to buy that safety.
SEED_METRICS = ("solvency_loss_usd", "mean_capital_locked_usd")
#: Bootstrap replicates, their generator's seed and the intervals' confidence level.
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
#: The columns of ``seeds.csv`` (one statistic per row; see :func:`seed_rows`).
SEED_COLUMNS = (
    "policy",
    "metric",
    "scenario",
    "statistic",
    "reference",
    "seed",
    "value",
    "ci_low",
    "ci_high",
    "seeds",
    "episodes",
)
#: The label of the all-scenario rows (as in the evaluation's summaries).
ALL = "ALL"


# ---------------------------------------------------------------- point statistics ----


def iqm(values: npt.ArrayLike, axis: int = -1) -> Any:
    """The interquartile mean along ``axis``: the mean after cutting a quarter from each end.

    ``int(n / 4)`` values are cut from each end of the ``n`` sorted (scipy's
    ``trim_mean(x, 0.25)``, rliable's IQM): 8 values give the mean of the middle 4, 5 the
    middle 3, and fewer than 4 the plain mean.

    Raises:
        ValueError: An empty axis.
    """
    x = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of no values")
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def probability_of_improvement(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """``P(X < Y)`` for costs: seeds' episodes ``x (seeds, episodes)`` against ``y (episodes,)``.

    Per seed, the Mann-Whitney statistic over every pair of a seed's episode and a reference
    episode, a tie counting one half; then the mean over seeds. 0.5 is no difference.
    """
    xs, ys = _pair(x, y)
    below = (xs[:, :, None] < ys[None, None, :]).mean(axis=(1, 2))
    ties = (xs[:, :, None] == ys[None, None, :]).mean(axis=(1, 2))
    return float(np.mean(below + 0.5 * ties))


def probability_exceeds(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """``P(X > Y)`` on the same episode: ``x (seeds, episodes)`` against ``y (episodes,)``.

    The share of (seed, episode) pairs whose cost is strictly above the reference's on that
    episode (a tie is not worse), averaged over seeds.
    """
    xs, ys = _pair(x, y)
    return float((xs > ys[None, :]).mean())


def _pair(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 2 or ys.ndim != 1 or xs.shape[1] != ys.shape[0] or xs.size == 0:
        raise ValueError(
            f"expected x (seeds, episodes) and y (episodes,), got shapes {xs.shape}, {ys.shape}"
        )
    return xs, ys


# ---------------------------------------------------------------- the bootstrap ----


@dataclass(frozen=True)
class Draws:
    """Bootstrap resamples, per replicate and scenario, of the seeds and of the episodes.

    Attributes:
        seeds: ``(reps, scenarios, seeds)`` indices of the seeds drawn (with replacement).
        episode_weights: ``(reps, scenarios, episodes)`` how often each episode was drawn,
            over the number of episodes (each row sums to 1): a resampled mean over episodes
            is a weighted mean.
    """

    seeds: IntArray
    episode_weights: FloatArray


def bootstrap_draws(n_scenarios: int, n_seeds: int, n_episodes: int, reps: int, seed: int) -> Draws:
    """``reps`` stratified draws: seeds and episodes resampled within each scenario.

    The same ``seed`` gives the same draws, so an evaluation's intervals are reproducible.
    """
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(reps, n_scenarios, n_seeds), dtype=np.int64)
    counts = rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes), (reps, n_scenarios))
    return Draws(seeds, counts.astype(np.float64) / n_episodes)


def _check(
    x: npt.ArrayLike, refs: Mapping[str, npt.ArrayLike]
) -> tuple[FloatArray, dict[str, FloatArray]]:
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 3 or 0 in xs.shape:
        raise ValueError(f"expected x (scenarios, seeds, episodes), got shape {xs.shape}")
    ys = {name: np.asarray(y, dtype=np.float64) for name, y in refs.items()}
    for name, y in ys.items():
        if y.shape != (xs.shape[0], xs.shape[2]):
            raise ValueError(
                f"reference {name!r}: expected shape (scenarios, episodes) = "
                f"{(xs.shape[0], xs.shape[2])}, got {y.shape}"
            )
    if not np.all(np.isfinite(xs)) or not all(np.all(np.isfinite(y)) for y in ys.values()):
        raise ValueError("every value must be finite")
    return xs, ys


def _seed_scores(xs: FloatArray, draws: Draws) -> FloatArray:
    """``(reps, scenarios, seeds)``: each drawn seed's mean over the drawn episodes."""
    means = np.einsum("sre,bse->bsr", xs, draws.episode_weights)
    return np.take_along_axis(means, draws.seeds, axis=2)


def _drawn_seeds_mean(per_seed: FloatArray, draws: Draws) -> FloatArray:
    """``(reps, scenarios)``: the mean over the drawn seeds of ``per_seed``, per scenario."""
    drawn = np.take_along_axis(per_seed, draws.seeds, axis=2)
    return np.asarray(drawn.mean(axis=2), dtype=np.float64)


def _improvement_draws(xs: FloatArray, y: FloatArray, draws: Draws) -> FloatArray:
    """``(reps, scenarios)``: :func:`probability_of_improvement` on each draw, per scenario."""
    w = draws.episode_weights
    out = np.empty(w.shape[:2])
    for s in range(xs.shape[0]):
        x, ys = xs[s][:, :, None], y[s][None, None, :]
        score = (x < ys) + 0.5 * (x == ys)  # (seeds, episode of x, episode of y)
        against = score @ w[:, s].T  # (seeds, episodes, reps): over the drawn reference episodes
        per_seed = np.einsum("reb,be->br", against, w[:, s])  # over the seed's drawn episodes
        out[:, s] = np.take_along_axis(per_seed, draws.seeds[:, s], axis=1).mean(axis=1)
    return out


def _exceeds_draws(xs: FloatArray, y: FloatArray, draws: Draws) -> FloatArray:
    """``(reps, scenarios)``: :func:`probability_exceeds` on each draw, per scenario."""
    above = (xs > y[:, None, :]).astype(np.float64)
    return _drawn_seeds_mean(np.einsum("sre,bse->bsr", above, draws.episode_weights), draws)


def _ratio_draws(xs: FloatArray, y: FloatArray, draws: Draws) -> FloatArray:
    """``(reps, scenarios + 1, seeds)``: each seed's mean over the reference's, paired.

    Per draw, the seed and the reference are averaged over the *same* drawn episodes (the
    seeds themselves are not resampled: each keeps its own ratio), per scenario and, last,
    over all scenarios (the means over scenarios, as a seed's score there). A draw whose
    reference mean is 0 gives NaN or inf (no ratio: the reference lost nothing on it).
    """
    w = draws.episode_weights
    seed_means = np.einsum("sre,bse->bsr", xs, w)  # (reps, scenarios, seeds)
    ref_means = np.einsum("se,bse->bs", y, w)  # (reps, scenarios)
    num = np.concatenate([seed_means, seed_means.mean(axis=1, keepdims=True)], axis=1)
    den = np.concatenate([ref_means, ref_means.mean(axis=1, keepdims=True)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = num / den[:, :, None]
    return out


def _interval(samples: FloatArray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------- the table ----


@dataclass(frozen=True)
class SeedTable:
    """One multi-seed policy's costs on one metric, with its references'.

    Attributes:
        policy: The multi-seed directory's name.
        metric: One of :data:`SEED_METRICS`.
        scenarios: Scenario names, in the order of the first axis.
        seeds: Training seeds, in the order of the second axis.
        values: ``(scenarios, seeds, episodes)``: each seed's cost on each episode.
        references: Reference policy name -> ``(scenarios, episodes)``: its cost on the same
            episodes.
    """

    policy: str
    metric: str
    scenarios: tuple[str, ...]
    seeds: tuple[int, ...]
    values: FloatArray
    references: Mapping[str, FloatArray]


def seed_rows(
    table: SeedTable,
    *,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> list[dict[str, Any]]:
    """The statistics of ``table`` as rows of :data:`SEED_COLUMNS`, per scenario then ``ALL``.

    Statistics (``statistic`` column), each for every scenario and for :data:`ALL`:

    * ``iqm``: the IQM across seeds of the seeds' means, with its interval;
    * ``seed_mean`` (one row per seed, ``seed`` set), ``seed_min``, ``seed_max``, and
      ``worst_seed`` (the seed with the highest mean cost, ``seed`` set);
    * per reference (``reference`` set): ``reference_mean``; ``probability_of_improvement``
      and ``probability_exceeds`` with their intervals; ``worst_seed_no_worse``, 1.0 when the
      worst seed's mean is at most the reference's, else 0.0; ``seed_ratio`` (one row per
      seed, ``seed`` set), the seed's mean over the reference's, with a paired interval
      (episodes resampled alike for both; draws where the reference's mean is 0 left out),
      omitted where the reference lost nothing.

    Raises:
        ValueError: Shapes that do not match, or values that are not finite.
    """
    xs, refs = _check(table.values, table.references)
    n_sc, n_seeds, n_ep = xs.shape
    if len(table.scenarios) != n_sc or len(table.seeds) != n_seeds:
        raise ValueError(
            f"{len(table.scenarios)} scenarios and {len(table.seeds)} seeds named for values "
            f"of shape {xs.shape}"
        )
    draws = bootstrap_draws(n_sc, n_seeds, n_ep, reps, seed)
    labels = [*table.scenarios, ALL]
    seed_means = xs.mean(axis=2)  # (scenarios, seeds)
    per_label = np.vstack([seed_means, seed_means.mean(axis=0)])  # + a seed's all-scenario mean
    boot = _seed_scores(xs, draws)  # (reps, scenarios, seeds)
    iqm_draws = np.hstack([iqm(boot), iqm(boot.mean(axis=1))[:, None]])

    rows: list[dict[str, Any]] = []

    def add(k: int, statistic: str, value: float, **extra: Any) -> None:
        rows.append(
            {
                "policy": table.policy,
                "metric": table.metric,
                "scenario": labels[k],
                "statistic": statistic,
                "reference": extra.get("reference", ""),
                "seed": extra.get("seed", ""),
                "value": float(value),
                "ci_low": extra.get("ci", ("", ""))[0],
                "ci_high": extra.get("ci", ("", ""))[1],
                "seeds": n_seeds,
                "episodes": n_ep * (n_sc if labels[k] == ALL else 1),
            }
        )

    probabilities: dict[str, tuple[FloatArray, FloatArray, FloatArray, FloatArray]] = {}
    ratios = {name: _ratio_draws(xs, y, draws) for name, y in refs.items()}
    for name, y in refs.items():
        improve = np.array([probability_of_improvement(xs[s], y[s]) for s in range(n_sc)])
        exceed = np.array([probability_exceeds(xs[s], y[s]) for s in range(n_sc)])
        improve_draws = _improvement_draws(xs, y, draws)
        exceed_draws = _exceeds_draws(xs, y, draws)
        probabilities[name] = (
            np.append(improve, improve.mean()),
            np.append(exceed, exceed.mean()),
            np.hstack([improve_draws, improve_draws.mean(axis=1)[:, None]]),
            np.hstack([exceed_draws, exceed_draws.mean(axis=1)[:, None]]),
        )
    for k in range(n_sc + 1):
        means = per_label[k]
        add(k, "iqm", iqm(means), ci=_interval(iqm_draws[:, k], level))
        for j, s in enumerate(table.seeds):
            add(k, "seed_mean", means[j], seed=s)
        add(k, "seed_min", means.min())
        add(k, "seed_max", means.max())
        worst = int(np.argmax(means))
        add(k, "worst_seed", means[worst], seed=table.seeds[worst])
        for name, y in refs.items():
            improve, exceed, improve_draws, exceed_draws = probabilities[name]
            ref_mean = y[k].mean() if k < n_sc else y.mean()
            add(k, "reference_mean", ref_mean, reference=name)
            add(
                k, "probability_of_improvement", improve[k], reference=name,
                ci=_interval(improve_draws[:, k], level),
            )  # fmt: skip
            add(
                k, "probability_exceeds", exceed[k], reference=name,
                ci=_interval(exceed_draws[:, k], level),
            )  # fmt: skip
            add(k, "worst_seed_no_worse", float(means[worst] <= ref_mean), reference=name)
            if ref_mean > 0.0:
                for j, sd in enumerate(table.seeds):
                    r = ratios[name][:, k, j]
                    r = r[np.isfinite(r)]  # a draw whose reference mean is 0 has no ratio
                    ci = _interval(r, level) if r.size else ("", "")
                    add(k, "seed_ratio", means[j] / ref_mean, reference=name, seed=sd, ci=ci)
    return rows


def tables_from_rows(
    rows: Sequence[Mapping[str, object]],
    policy: str,
    members: Mapping[int, str],
    references: Sequence[str],
    scenarios: Sequence[str],
) -> list[SeedTable]:
    """A multi-seed policy's :class:`SeedTable` per metric of :data:`SEED_METRICS`, from rows.

    Args:
        rows: The evaluation's episode rows (:func:`fundgym.agents.evaluate.metrics.
            episode_metrics`): ``policy``, ``scenario``, ``episode``, ``bad_debt_usd``,
            ``adl_volume_usd``, ``mean_capital_locked_usd``.
        policy: The multi-seed directory's name.
        members: Training seed -> the policy name its rows carry.
        references: The policies to compare with.
        scenarios: The scenarios, in order.

    Raises:
        ValueError: A (policy, scenario) with a different number of episodes from the others,
            or missing.
    """
    costs: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for i, r in enumerate(rows):
        loss = episode_solvency_loss_usd(r, i)
        key = (str(r["policy"]), str(r["scenario"]))
        episode = int(_number(r, "episode"))
        costs.setdefault(key, {})[episode] = (loss, _number(r, "mean_capital_locked_usd"))

    def episodes(name: str, scenario: str) -> FloatArray:
        found = costs.get((name, scenario), {})
        return np.array([found[e] for e in sorted(found)], dtype=np.float64).reshape(-1, 2)

    grid = {
        name: [episodes(name, sc) for sc in scenarios] for name in [*members.values(), *references]
    }
    n_ep = {a.shape[0] for arrays in grid.values() for a in arrays}
    if len(n_ep) != 1 or 0 in n_ep:
        raise ValueError(
            f"policy {policy!r}: every seed and reference needs the same number of episodes "
            f"in every scenario, got {sorted(n_ep)}"
        )
    tables = []
    for m, metric in enumerate(SEED_METRICS):
        values = np.stack(
            [np.stack([a[:, m] for a in grid[name]]) for name in members.values()], axis=1
        )
        refs = {name: np.stack([a[:, m] for a in grid[name]]) for name in references}
        tables.append(SeedTable(policy, metric, tuple(scenarios), tuple(members), values, refs))
    return tables


def _number(row: Mapping[str, object], key: str) -> float:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"episode row {key} = {value!r}: expected a number")
    return float(value)


@dataclass(frozen=True)
class SeedVerdict:
    """A multi-seed policy against a reference over all scenarios, from :func:`seed_rows`.

    Attributes:
        policy: The multi-seed policy.
        reference: The reference policy (``best_static`` in the demo).
        loss_iqm_usd: IQM across seeds of the user loss per episode, with its interval.
        capital_iqm_usd: IQM across seeds of the capital locked per episode, with its interval.
        dominance: :func:`fundgym.agents.evaluate.metrics.dominates` applied to the two IQMs
            against the reference's means: the demo's bar, judged on the IQM, not one seed.
        p_improvement: Probability of improvement in loss over the reference, with interval.
        p_exceeds: Probability that a seed's loss exceeds the reference's on the same episode.
        worst_seed_no_worse: Whether the worst seed's mean loss is at most the reference's.
        n_seeds: Seeds in the policy.
        worst_seed: The seed with the highest mean loss (``None``: not in ``rows``).
        worst_seed_ratio: Its mean loss over the reference's with the paired interval
            (``seed_ratio``); ``None`` where the reference lost nothing.
    """

    policy: str
    reference: str
    loss_iqm_usd: tuple[float, float, float]
    capital_iqm_usd: tuple[float, float, float]
    dominance: dict[str, bool | str | float | None]
    p_improvement: tuple[float, float, float]
    p_exceeds: tuple[float, float, float]
    worst_seed_no_worse: bool
    n_seeds: int
    worst_seed: int | None = None
    worst_seed_ratio: tuple[float, float, float] | None = None

    def worst_seed_label(self) -> str:
        """``worst seed (4)``, or ``worst seed`` where the rows did not name it."""
        return "worst seed" if self.worst_seed is None else f"worst seed ({self.worst_seed})"

    def worst_seed_paired(self) -> str:
        """``x1.105 [1.011, 1.232] paired``: its loss ratio and interval ('' if not recorded)."""
        r = self.worst_seed_ratio
        return "" if r is None else f"x{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] paired"


def seed_verdict(
    rows: Sequence[Mapping[str, Any]], policy: str, reference: str = "best_static"
) -> SeedVerdict:
    """The verdict of ``policy``'s seeds against ``reference`` over all scenarios.

    Args:
        rows: The rows of ``seeds.csv`` for ``policy`` (:func:`seed_rows` of both metrics).
        policy: The multi-seed policy's name.
        reference: A policy evaluated beside it.

    Raises:
        ValueError: A statistic the verdict needs is missing from ``rows``.
    """

    def over_all(metric: str, statistic: str, ref: str = "") -> list[Mapping[str, Any]]:
        return [
            r
            for r in rows
            if r["policy"] == policy
            and r["metric"] == metric
            and r["scenario"] == ALL
            and r["statistic"] == statistic
            and (r["reference"] or "") == ref
        ]

    def pick(metric: str, statistic: str, ref: str = "") -> Mapping[str, Any]:
        found = over_all(metric, statistic, ref)
        if not found:
            raise ValueError(
                f"no {statistic!r} of {metric} over all scenarios for {policy!r}"
                + (f" against {ref!r}" if ref else "")
            )
        return found[0]

    def triple(r: Mapping[str, Any]) -> tuple[float, float, float]:
        return (float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))

    loss, cap = SEED_METRICS
    loss_iqm = triple(pick(loss, "iqm"))
    cap_iqm = triple(pick(cap, "iqm"))
    dominance = dominates(
        {"solvency_loss_usd": loss_iqm[0], "mean_capital_locked_usd": cap_iqm[0]},
        {
            "solvency_loss_usd": float(pick(loss, "reference_mean", reference)["value"]),
            "mean_capital_locked_usd": float(pick(cap, "reference_mean", reference)["value"]),
        },
    )
    # Rows from before the worst seed's ratio was recorded have no such row: no ratio then.
    worst = next((r["seed"] for r in over_all(loss, "worst_seed")), None)
    ratio = [r for r in over_all(loss, "seed_ratio", reference) if str(r["seed"]) == str(worst)]
    return SeedVerdict(
        policy=policy,
        reference=reference,
        loss_iqm_usd=loss_iqm,
        capital_iqm_usd=cap_iqm,
        dominance=dominance,
        p_improvement=triple(pick(loss, "probability_of_improvement", reference)),
        p_exceeds=triple(pick(loss, "probability_exceeds", reference)),
        worst_seed_no_worse=float(pick(loss, "worst_seed_no_worse", reference)["value"]) == 1.0,
        n_seeds=int(pick(loss, "iqm")["seeds"]),
        worst_seed=None if worst is None else int(worst),
        worst_seed_ratio=triple(ratio[0]) if ratio and ratio[0]["ci_low"] != "" else None,
    )
