"""Where users' loss sits: the decision that crossed the insolvency line, and the rest.

An episode ends when the losses no fund covered pass ``insolvency_frac`` of the starting open
interest, checked once a decision. Issue 21's headline loss (socialised plus unrecovered plus
deleveraged notional) keeps everything up to that check, including the decision that crossed
it, where a pump or a crash's last leg may deleverage several times the open interest within
ten minutes. This script splits each policy's mean user loss into that decision's and the
rest's, so the part a policy's levers move before the exchange fails can be read apart from
the blow-up that ends it; and it counts the insolvent episodes whose ending decision differs
between policies (one decision earlier can leave a policy millions of dollars less loss on
the same draw). It also reports what a tick-level end would count: each insolvent episode's
loss up to the tick at which its uncovered loss (socialised + unrecovered + each tick's positive
ADL haircut, as the environment sums it) passed the line, from the ticks' own events (the
ticks before it are the same in either world).

It re-runs the episodes of an evaluation directory (``fundgym evaluate --out DIR``): the
policies, scenarios, episode count, first seed and environment of its ``config.yaml``, through
the same :func:`~fundgym.agents.evaluate.episodes.run_episodes` (the same numbers as its
``metrics.csv``, to the dollar). ``--mmr 0.005,0.03`` adds, per value, a copy of every static
policy with its MMR replaced (a sweep of one lever around ``best_static``).

Usage: ``python benchmarks/stress_loss_split.py EVAL_DIR [--mmr V,V,...] [--workers 2]
[--out FILE.json]``. docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents.evaluate.episodes import run_episodes
from fundgym.agents.evaluate.metrics import episode_metrics
from fundgym.agents.policies.registry import PolicySpec
from fundgym.agents.rollout import job_env
from fundgym.envs import simulator
from fundgym.envs.core.events import StepEvents

#: Episodes per batched environment (the evaluation's own batches are one job per policy).
CHUNK = 64

SOC, UNREC, HAIRCUT, ADL = (
    StepEvents.FIELDS.index(name)
    for name in ("socialized_loss_usd", "unrecovered_usd", "adl_haircut_usd", "adl_volume_usd")
)

#: Every decision's per-tick events, ``(ticks, n_envs, N_EVENTS)``, in the order they ran.
_BLOCKS: list[np.ndarray] = []
_advance = simulator.ExchangeSimulator.advance


def _recording_advance(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``ExchangeSimulator.advance``, keeping a copy of its per-tick events (this script only)."""
    block = _advance(self, *args, **kwargs)
    _BLOCKS.append(block.events.copy())
    return block


simulator.ExchangeSimulator.advance = _recording_advance  # type: ignore[method-assign]


def policy_rows(
    policy: dict[str, Any], env: dict[str, Any], scenarios: list[str], episodes: int, seed: int
) -> tuple[str, list[list[float]]]:
    """Per episode: user loss, its part in the ending decision, insolvent, decisions, tick end.

    The last is the loss up to the tick that crossed the line (the whole loss where none did).
    """
    fields = dict(policy)
    name = fields.pop("name")
    spec = PolicySpec(name, **fields)
    rows = []
    for scenario in scenarios:
        kw = job_env(env, spec, scenario)
        for start in range(0, episodes, CHUNK):
            _BLOCKS.clear()
            recs = run_episodes(spec, kw, min(CHUNK, episodes - start), seed + start, scenario)
            events = np.stack(_BLOCKS)  # (decisions, ticks, exchanges, events)
            for e, rec in enumerate(recs):
                row = episode_metrics(rec)  # the evaluation's own sums
                total = float(row["bad_debt_usd"]) + float(row["adl_volume_usd"])
                tick_end = total
                if rec.terminated:
                    x = events[: rec.n_steps, :, e, :].reshape(-1, events.shape[-1])
                    uncovered = np.cumsum(x[:, SOC] + x[:, UNREC] + np.maximum(x[:, HAIRCUT], 0.0))
                    line = kw["insolvency_frac"] * rec.initial_open_interest_usd
                    crossed = int(np.argmax(uncovered > line))
                    tick_end = float((x[: crossed + 1][:, [SOC, UNREC, ADL]]).sum())
                last = float(row["insolvency_decision_loss_usd"])
                rows.append([total, last, float(rec.terminated), float(rec.n_steps), tick_end])
    return name, rows


def _times(x: float, ref: float) -> str:
    """``x`` as a multiple of ``ref`` (``n/a`` where the reference is 0)."""
    return f"x{x / ref:.3f}" if ref > 0 else "n/a"


def _share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` (``n/a`` where the whole is 0)."""
    return f"{part / whole:.0%}" if whole > 0 else "n/a"


def _run(args: tuple[dict[str, Any], dict[str, Any], list[str], int, int]) -> Any:
    return policy_rows(*args)


def main() -> None:
    """Print the split per policy; ``--out`` writes every episode's figures (JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", type=Path, help="a fundgym evaluate --out directory")
    ap.add_argument("--mmr", default="", help="comma-separated MMRs: a static copy per value")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=None, help="JSON file of every episode")
    a = ap.parse_args()
    cfg = yaml.safe_load((a.eval_dir / "config.yaml").read_text())
    policies = list(cfg["policies"])
    for value in [float(v) for v in a.mmr.split(",") if v]:
        for p in [p for p in cfg["policies"] if p["kind"] == "static"]:
            q = copy.deepcopy(p)
            q["values"]["mmr"] = value
            q["name"] = f"{p['name']} mmr={value:g}"
            policies.append(q)
    jobs = [(p, cfg["env"], list(cfg["scenarios"]), cfg["episodes"], cfg["seed"]) for p in policies]
    with Pool(max(1, a.workers)) as pool:
        results = dict(pool.map(_run, jobs))
    ref_name = "best_static" if "best_static" in results else next(iter(results))
    ref = np.array(results[ref_name])
    ref_before = ref[:, 0].mean() - ref[:, 1].mean()
    print(f"per episode, mean over {len(ref)} episodes; multiples of {ref_name}'s")
    for name, rows in results.items():
        x = np.array(rows)
        total, crossing = x[:, 0].mean(), x[:, 1].mean()
        print(
            f"{name:40s} user loss ${total:12,.0f} ({_times(total, ref[:, 0].mean())}); in the "
            f"decision that crossed the line ${crossing:12,.0f} ({_share(crossing, total)}); "
            f"before it ${total - crossing:10,.0f} ({_times(total - crossing, ref_before)}); "
            f"insolvent {int(x[:, 2].sum())}; ended at the tick ${x[:, 4].mean():10,.0f} "
            f"({_times(x[:, 4].mean(), ref[:, 4].mean())})"
        )
    steps = np.array([np.array(r)[:, 3] for r in results.values()])
    ended = np.array([np.array(r)[:, 2] > 0 for r in results.values()]).any(axis=0)
    differ = ended & (steps.min(axis=0) != steps.max(axis=0))
    print(
        f"insolvent under some policy: {int(ended.sum())} episodes; their ending decision "
        f"differs between policies on {int(differ.sum())}"
    )
    if a.out is not None:
        a.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
