"""A trained multi-market policy beside the levers' defaults, on the same episodes.

``fundgym train`` with a ``markets:`` section trains on ``fundgym/MarketsInsuranceFund-v0``;
``fundgym markets --run DIR`` scores the run here (or each run of a multi-seed directory).
Each episode is played on the same seed by every run's model (``best/``, else ``final/``;
observations normalised with its statistics, deterministic actions, centred as trained) and
by the levers held at their defaults (the scenario as written:
:meth:`~fundgym.envs.markets_env.MarketsInsuranceFundEnv.default_action`), so the rows of an
episode differ only by the levers. Per episode: the return, the solvency
cost (bps of open interest, summed), the users' loss (socialised, unrecovered and deleveraged
notional), the capital locked (insurance plus traders' margin, mean over decisions) and the
insurance's largest drawdown from its start (every pot together).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.config import markets_env_kwargs
from fundgym.agents.evaluate.plots import plot_markets_run
from fundgym.agents.evaluate.seeds import SEED_METRICS, SeedTable, seed_rows, seed_verdict
from fundgym.agents.policies.markets_run import Act, MarketsRun, markets_env
from fundgym.envs.market.sampler import MarketsSamplerSettings
from fundgym.envs.markets_core import MarketsControlCore
from fundgym.envs.markets_env import first_episode_seed
from fundgym.envs.scenarios import Scenario

#: The two policies of every episode, in row order.
POLICIES = ("trained", "defaults")
#: Per-episode columns (after ``policy``, ``run_seed``, ``episode`` and ``seed``).
COLUMNS = (
    "return",
    "cost_bps",
    "user_loss_usd",
    "capital_locked_usd",
    "fund_drawdown_frac",
    "decisions",
    "terminated",
)


@dataclass
class Trace:
    """One episode decision by decision: what ``policies.png`` draws.

    Attributes:
        fund_frac: The insurance (every pot) after each decision, as a share of its start.
        user_loss_frac: The users' cumulative loss after each decision, as a share of the
            starting open interest.
        index: ``(decisions, M)`` each market's index after each decision.
    """

    fund_frac: list[float] = field(default_factory=list)
    user_loss_frac: list[float] = field(default_factory=list)
    index: list[np.ndarray[Any, Any]] = field(default_factory=list)


def _episode(
    core: MarketsControlCore,
    acts: list[Act],
    seed: int,
    traces: list[Trace] | None = None,
) -> list[dict[str, float | int]]:
    """Episode ``seed`` played by every policy of ``acts`` at once, one exchange each.

    Every exchange of ``core`` starts the episode the one-exchange env seeded ``seed`` starts
    (:func:`~fundgym.envs.markets_env.first_episode_seed`: its paths, book and, with a
    sampler, its day), so exchange ``p`` is policy ``p``'s episode alone, bit for bit (the
    batch's twin property); an exchange whose episode has ended keeps stepping, unread,
    until every one has. One row per policy, with :class:`Trace` ``traces[p]`` filled.
    """
    n = len(acts)
    obs = core.reset([first_episode_seed(seed)] * n)
    sim = core.sim
    start = [float(sim.fund_pots_usd()[p].sum()) for p in range(n)]
    oi0 = [float(sim.initial_open_interest_usd[p].sum()) for p in range(n)]
    low = list(start)
    total, cost, loss, locked = ([0.0] * n for _ in range(4))
    steps = [0] * n
    ended = [False] * n
    terminated = [False] * n
    last = np.tile(core.default_positions, (n, 1))
    while not all(ended):
        for p in range(n):
            if not ended[p]:
                last[p] = acts[p](obs[p])
        obs, reward, term, trunc, infos = core.step(last)
        for p in range(n):
            if ended[p]:
                continue
            info = infos[p]
            total[p] += float(reward[p])
            cost[p] += float(info["cost"])
            loss[p] += float(info["user_loss_usd"])
            locked[p] += float(info["capital_locked_usd"])
            pots = float(np.sum(info["fund_pots_usd"]))
            low[p] = min(low[p], pots)
            steps[p] += 1
            if traces is not None:
                t = traces[p]
                t.fund_frac.append(pots / start[p] if start[p] > 0.0 else 0.0)
                t.user_loss_frac.append(loss[p] / oi0[p] if oi0[p] > 0.0 else 0.0)
                t.index.append(sim.last_index[p].copy())
            if term[p] or trunc[p]:
                ended[p], terminated[p] = True, bool(term[p])
    return [
        {
            "return": total[p],
            "cost_bps": cost[p],
            "user_loss_usd": loss[p],
            "capital_locked_usd": locked[p] / max(steps[p], 1),
            "fund_drawdown_frac": (start[p] - low[p]) / start[p] if start[p] > 0.0 else 0.0,
            "decisions": steps[p],
            "terminated": int(terminated[p]),
        }
        for p in range(n)
    ]


def score_episodes(
    runs: Mapping[int | None, MarketsRun],
    scenario: Scenario,
    episodes: int,
    seed: int,
    traces: dict[str, list[Trace]] | None = None,
    sampler: MarketsSamplerSettings | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per episode and policy, episode ``i`` seeded ``seed + i`` for every policy.

    ``sampler``: each episode a day drawn around ``scenario``'s markets from its seed (the
    same day for every policy; :func:`markets_env`), instead of ``scenario`` as written.

    Each run's model (``policy`` "trained", ``run_seed`` its training seed, empty for a lone
    run), then the levers' defaults ("defaults"), on the same episode. The runs share their
    settings (a multi-seed directory's configs differ only in seed). With ``traces``, each
    episode's :class:`Trace` is appended under its policy's label (``trained``, ``trained,
    seed S``, ``defaults``).
    """
    # One batch, one exchange per policy: each episode's seed draws it anew for all of them.
    first = next(iter(runs.values()))
    env = markets_env(first, scenario, sampler)  # checked against the networks
    defaults = env.default_action()

    def hold(_obs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return defaults

    players = [("trained", key, run.act(env)) for key, run in runs.items()]
    players.append(("defaults", None, hold))
    core = MarketsControlCore(
        scenario, len(players), **markets_env_kwargs(first.markets, sampler=sampler)
    )
    labels = [name if key is None else f"{name}, seed {key}" for name, key, _ in players]
    for i in range(episodes):
        episode = None
        if traces is not None:
            episode = [Trace() for _ in players]
            for label, trace in zip(labels, episode, strict=True):
                traces.setdefault(label, []).append(trace)
        scores = _episode(core, [act for _, _, act in players], seed + i, episode)
        for (name, key, _), score in zip(players, scores, strict=True):
            yield {
                "policy": name,
                "run_seed": "" if key is None else key,
                "episode": i,
                "seed": seed + i,
                **score,
            }


def plot_policies(
    traces: dict[str, list[Trace]], scenario: Scenario, decision_minutes: float, out: Path
) -> None:
    """``policies.png``: each policy's insurance and users' loss, means over the episodes.

    Drawn by :func:`~fundgym.agents.evaluate.plots.plot_markets_run` (``fundgym markets``' own
    plot), decision by decision, above the markets' indexes of the defaults' first episode.
    An episode that ended early holds its last values to the horizon.
    """
    n = max(len(t.fund_frac) for ts in traces.values() for t in ts)

    def padded(values: list[float]) -> np.ndarray[Any, Any]:
        return np.array(values + [values[-1]] * (n - len(values)))

    configs = {
        label: {
            "fund_frac": np.mean([padded(t.fund_frac) for t in ts], axis=0),
            "user_loss_frac": np.mean([padded(t.user_loss_frac) for t in ts], axis=0),
        }
        for label, ts in traces.items()
    }
    first = np.array(traces["defaults"][0].index)  # (decisions, M)
    index = {name: first[:, m] for m, name in enumerate(scenario.market_names)}
    time_min = np.arange(1, first.shape[0] + 1, dtype=np.float64) * decision_minutes
    if first.shape[0] < n:  # the defaults' first episode ended early: the others' axis
        time_min = np.arange(1, n + 1, dtype=np.float64) * decision_minutes
        index = {k: np.concatenate([v, np.full(n - v.size, v[-1])]) for k, v in index.items()}
    title = f"fundgym markets --run: {scenario.name}"
    plot_markets_run(time_min, configs, index, title, out, start_utc=scenario.start_utc)


def _means(rows: list[dict[str, Any]], policy: str) -> dict[str, float]:
    return {c: float(np.mean([r[c] for r in rows if r["policy"] == policy])) for c in COLUMNS}


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Means per policy over the episodes (every seed's pooled), the ratio to the defaults."""
    means = {p: _means(rows, p) for p in POLICIES}
    lines = [
        "| policy | return | cost (bps of OI) | users' loss | capital locked | fund drawdown "
        "| decisions | ended insolvent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in POLICIES:
        m = means[p]
        lines.append(
            f"| {p} | {m['return']:.1f} | {m['cost_bps']:.2f} | ${m['user_loss_usd'] / 1e6:.3f}M "
            f"| ${m['capital_locked_usd'] / 1e6:.2f}M | {m['fund_drawdown_frac']:.1%} "
            f"| {m['decisions']:.0f} | {m['terminated']:.0%} |"
        )
    t, d = means["trained"], means["defaults"]

    def ratio(key: str) -> str:
        return f"x{t[key] / d[key]:.2f}" if d[key] > 0.0 else "n/a (defaults 0)"

    lines += [
        "",
        f"trained over defaults: users' loss {ratio('user_loss_usd')}, capital locked "
        f"{ratio('capital_locked_usd')}",
    ]
    return "\n".join(lines)


#: ``rows``' columns behind the seed statistics' two metrics (:data:`SEED_METRICS`): the
#: users' loss is the solvency loss (socialised + unrecovered + deleveraged notional).
_SEED_COLUMNS = dict(zip(SEED_METRICS, ("user_loss_usd", "capital_locked_usd"), strict=True))


def seed_statistics(rows: list[dict[str, Any]], scenario: str, policy: str) -> list[dict[str, Any]]:
    """:func:`~fundgym.agents.evaluate.seeds.seed_rows` of a multi-seed run's episodes.

    The rows of ``seeds.csv`` (IQM across seeds with intervals, probabilities of improvement
    and of exceeding the defaults on the same episode, each seed's mean), for the users' loss
    and the capital locked, the defaults as the reference.
    """
    seeds = sorted({int(r["run_seed"]) for r in rows if r["policy"] == "trained"})
    n_ep = 1 + max(int(r["episode"]) for r in rows)
    out: list[dict[str, Any]] = []
    for metric, column in _SEED_COLUMNS.items():
        values = np.zeros((1, len(seeds), n_ep))
        reference = np.zeros((1, n_ep))
        for r in rows:
            if r["policy"] == "trained":
                values[0, seeds.index(int(r["run_seed"])), int(r["episode"])] = r[column]
            else:
                reference[0, int(r["episode"])] = r[column]
        table = SeedTable(
            policy, metric, (scenario,), tuple(seeds), values, {"defaults": reference}
        )
        out += seed_rows(table)
    return out


def seed_summary(rows: list[dict[str, Any]], policy: str) -> str:
    """The seed statistics' verdict against the defaults, as a few lines of text."""
    v = seed_verdict(rows, policy, reference="defaults")

    def usd(t: tuple[float, float, float]) -> str:
        return f"${t[0] / 1e6:.4f}M [{t[1] / 1e6:.4f}, {t[2] / 1e6:.4f}]"

    def prob(t: tuple[float, float, float]) -> str:
        return f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]"

    worst = v.worst_seed_label()
    paired = f" ({v.worst_seed_paired()})" if v.worst_seed_paired() else ""
    return "\n".join(
        [
            f"over {v.n_seeds} training seeds (IQM across seeds, 95% bootstrap intervals):",
            f"- users' loss {usd(v.loss_iqm_usd)}; capital locked {usd(v.capital_iqm_usd)}",
            f"- probability of improvement over the defaults {prob(v.p_improvement)}; "
            f"probability a seed's loss exceeds the defaults' on the same episode "
            f"{prob(v.p_exceeds)}",
            f"- {worst} no worse than the defaults on loss: "
            f"{'yes' if v.worst_seed_no_worse else 'no'}{paired}; dominates the defaults: "
            f"{'yes' if v.dominance.get('dominates') else 'no'}",
        ]
    )
