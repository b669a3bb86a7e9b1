"""The outputs of ``fundgym size-fund``: sizing.json, sizing.md, sizing.html and their figures.

:func:`write_sizing` writes, into ``--out``:

* ``sizing.json`` (kind :data:`KIND`): every figure of :mod:`fundgym.agents.evaluate.sizing`,
  overall and per scenario, each with the number of episodes it rests on;
* ``sizing.md`` and ``sizing.html``: the same tables for a reader, the method and its
  estimate marks, and three figures (``plots/``; embedded in the HTML as PNG data URIs so the
  page travels alone): the histogram of the fund needed, its tail on log axes with the
  VaR / ES lines, and the fund size against P(exhaustion);
* ``episodes.csv``: one row per episode (payout, loss beyond, need, moves, Cover-2 inputs), to
  recompute any figure;
* ``config.yaml`` (the resolved arguments and environment) and ``command.txt``.

The directory is built under a temporary name and renamed into place
(:func:`fundgym.agents.outputs.directory_in_place`), so a failed or interrupted write leaves
the previous ``--out`` as it was. Matplotlib is imported only here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents import __version__
from fundgym.agents.evaluate.sizing import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CHUNK_EPISODES,
    CI_LEVEL,
    COVER2_MOVE_LEVEL,
    LOSS_DUST_FRAC_OI,
    MEASURES,
    MIN_EPISODES_999,
    SizingResult,
)
from fundgym.agents.outputs import (
    directory_in_place,
    jsonable,
    remove_stale_temps,
    write_bytes_atomic,
    write_text_atomic,
)

#: ``kind`` of sizing.json: how a sizing directory is recognised.
KIND = "fundgym.sizing"
#: The files every sizing directory holds.
SIZING_FILES = ("sizing.json", "sizing.md", "sizing.html", "episodes.csv", "config.yaml")
#: The figures, by file name under ``plots/``.
FIGURES = ("loss_histogram.png", "tail.png", "exhaustion_curve.png")

#: A figure marked as resting on fewer episodes than a 99.9% figure needs.
FEW = "†"

METHOD = f"""\
Per episode, the fund's payout is the bad debt it paid (the sum of shortfall_usd, which is
its peak cumulative payout since payouts are never negative); the loss beyond it is
socialised loss + unrecovered bad debt + the profit ADL took from its counterparties (the
ADL haircut, the deficit ADL covered; the ADL'd notional is a volume, not a deficit, and is
not added). The fund needed is payout + loss beyond: what a fund would have had to pay for
nobody to be socialised or deleveraged. Fund / OI divides it by the open interest at the
episode's start. Estimate marks [E]: fee income that reached the fund during the episode is
not credited (conservative), and each episode ran with the policy's own fund, so once that
fund was exhausted the path is the one ADL or socialisation shaped (a first-order
counterfactual). Amounts below {LOSS_DUST_FRAC_OI:g} of the open interest count as zero.

VaR is the lower empirical quantile without interpolation and ES the mean of the needs at or
above it (the definitions of `fundgym evaluate`). Intervals are {CI_LEVEL:.0%} percentile
bootstrap intervals: {BOOTSTRAP_RESAMPLES:,} resamples of the episodes with replacement,
generator seed {BOOTSTRAP_SEED}; those of VaR cover the truth at their nominal rate on
simulated data, those of ES run slightly narrow (a tail mean is skewed: 95% intervals of an
exponential sample's ES90 covered 92-93% at 2,000 episodes). The fund for a target
P(socialised loss or ADL) <= p is the VaR of the need at level 1 - p. A 99.9% figure from
fewer than {MIN_EPISODES_999:,} episodes is refused unless --allow-few-episodes is passed,
and is then marked {FEW}.

Cover-2: at each episode's start, the two accounts with the largest notional are read from
the simulator's state; a long is hit by the set's extreme fall and a short by its extreme
rise (per scenario: that scenario's), the {COVER2_MOVE_LEVEL:.1%} quantile over the episodes
of each one's largest peak-to-trough fall and trough-to-peak rise of the mark ("extreme but
plausible", at CME's 99.9%; the largest observed are reported beside them, and below 1,000
episodes the quantile is the largest); an account's deficit is its loss beyond its equity
(collateral plus unrealised PnL), and an episode's Cover-2 is the sum over the two. The
figure is the largest over the episodes' starting books. Estimate marks [E]: moves are read
at decision resolution, so a wick inside a decision is missed; the accounts are closed whole
at the move's extreme, with no liquidation on the way; the moves are peak-to-trough and
trough-to-peak, not only from the starting price; single accounts stand in for account
groups (the simulated population has no ownership links).
"""


def is_sizing_dir(path: Path) -> bool:
    """Whether ``path`` holds a fundgym sizing (``sizing.json`` of kind :data:`KIND`)."""
    try:
        data = json.loads((path / "sizing.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


# --------------------------------------------------------------------------------------------
# Numbers as text
# --------------------------------------------------------------------------------------------


def _pct(frac: float) -> str:
    return f"{100.0 * frac:.2f}%"


def _usd(value: float) -> str:
    return f"${value:,.0f}"


def _with_ci(value: float, ci: Sequence[float], fmt: Any) -> str:
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def _level(q: float) -> str:
    return f"{100.0 * q:g}%"


# --------------------------------------------------------------------------------------------
# The document: blocks rendered to Markdown and HTML
# --------------------------------------------------------------------------------------------

Block = tuple[str, Any]


def _groups(result: SizingResult) -> list[tuple[str, dict[str, Any]]]:
    """Every group of figures: all scenarios first, then each scenario."""
    return [("all scenarios", result.overall), *result.by_scenario.items()]


def _headline_rows(result: SizingResult) -> list[list[str]]:
    rows = []
    for name, g in _groups(result):
        t = g["fund_for_target"]
        mark = f" {FEW}" if t["few_episodes"] else ""
        obs = g["observed"]
        rows.append(
            [
                name,
                f"{g['episodes']:,}",
                _with_ci(t["frac_oi"], t["frac_oi_ci"], _pct) + mark,
                _with_ci(t["usd"], t["usd_ci"], _usd) + mark,
                f"{_pct(obs['own_fund_frac_oi'])}: "
                + _with_ci(obs["p_socialised_or_adl"], obs["p_socialised_or_adl_ci"], _pct),
                f"{_pct(g['cover2']['frac_oi'])} ({_usd(g['cover2']['usd'])})",
            ]
        )
    return rows


def _tail_rows(group: dict[str, Any], measure: str) -> list[list[str]]:
    fmt = _pct if measure.endswith("_frac_oi") else _usd
    rows = []
    for r in group["tail"][measure]:
        mark = f" {FEW}" if r["few_episodes"] else ""
        rows.append(
            [
                _level(r["level"]),
                _with_ci(r["var"], r["var_ci"], fmt) + mark,
                _with_ci(r["es"], r["es_ci"], fmt) + mark,
                f"{r['episodes']:,} ({r['tail_episodes']:,} at or beyond VaR)",
            ]
        )
    return rows


def _blocks(result: SizingResult, command: str, created: str) -> list[Block]:
    policy = result.policy
    n_total = len(result.deficits)
    target = result.target_prob
    blocks: list[Block] = [
        ("h1", f"Fund sizing: {policy.name} on {', '.join(result.scenarios)}"),
        (
            "p",
            f"{result.episodes:,} episodes per scenario ({n_total:,} in all; episode i of "
            f"every scenario seeded {result.seed} + i), {result.env['n_accounts']:,} account "
            f"slots per exchange, {result.workers} worker(s) on the {result.backend} backend, "
            f"{result.wall_s:.0f} s. Command: `{command}`. Created {created}.",
        ),
    ]
    if policy.note:
        blocks.append(("p", f"Policy: {policy.note}."))
    if result.allow_few_episodes and result.episodes < MIN_EPISODES_999:
        blocks.append(
            (
                "p",
                f"**--allow-few-episodes was used**: the 99.9% figures below rest on "
                f"{result.episodes:,} episodes per scenario, fewer than the "
                f"{MIN_EPISODES_999:,} a 99.9% figure needs; they are marked {FEW}.",
            )
        )
    blocks += [
        ("h2", "The fund needed"),
        (
            "p",
            f"Fund for P(socialised loss or ADL) <= {target:g} (level {_level(1 - target)}), "
            f"with {CI_LEVEL:.0%} bootstrap intervals; the policy's own fund and the share of "
            "episodes that socialised or deleveraged with it (Wilson interval); Cover-2 (the "
            "two largest accounts' default under the set's extreme moves, the largest over "
            "the starting books).",
        ),
        (
            "table",
            (
                [
                    "scenario",
                    "episodes",
                    "fund / OI needed",
                    "fund needed, USD",
                    "own fund / OI: P(socialised or ADL)",
                    "Cover-2 / OI (USD)",
                ],
                _headline_rows(result),
            ),
        ),
    ]
    groups = _groups(result)
    for measure, what in MEASURES.items():
        blocks.append(("h2", f"VaR and ES: {what}"))
        for name, g in groups:
            blocks.append(("h3", name))
            blocks.append(
                ("table", (["level", "VaR", "ES", "episodes it rests on"], _tail_rows(g, measure)))
            )
    blocks.append(("h2", "Cover-2"))
    cover_rows = [
        [
            name,
            f"{_pct(g['cover2']['fall_frac'])} ({_pct(g['cover2']['largest_fall_frac'])})",
            f"{_pct(g['cover2']['rise_frac'])} ({_pct(g['cover2']['largest_rise_frac'])})",
            _pct(g["cover2"]["top2_notional_frac_oi"]),
            f"{_pct(g['cover2']['frac_oi'])} (seed {g['cover2']['worst_seed']})",
            f"{_pct(g['cover2']['longs_frac_oi'])} / {_pct(g['cover2']['shorts_frac_oi'])}",
            _pct(g["cover2"]["median_frac_oi"]),
            _usd(g["cover2"]["usd"]),
            f"{g['cover2']['books']:,}",
        ]
        for name, g in groups
    ]
    blocks.append(
        (
            "table",
            (
                [
                    "scenario",
                    "fall applied (largest seen)",
                    "rise applied (largest seen)",
                    "two largest / OI (median)",
                    "Cover-2 / OI, worst book",
                    "longs only / shorts only",
                    "median book",
                    "worst USD",
                    "books",
                ],
                cover_rows,
            ),
        )
    )
    blocks += [
        ("h2", "Figures"),
        ("img", ("loss_histogram.png", "Fund needed per episode (all scenarios)")),
        ("img", ("tail.png", "The tail of the fund needed, log axes, with VaR and ES")),
        ("img", ("exhaustion_curve.png", "Fund size against P(exhaustion)")),
        ("h2", "Method"),
    ]
    blocks += [("p", para.replace("\n", " ")) for para in METHOD.split("\n\n")]
    return blocks


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    """``sizing.md``: the blocks as Markdown (figures linked under ``plots/``)."""
    out: list[str] = []
    for kind, body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + body)
        elif kind == "p":
            out.append(body)
        elif kind == "table":
            out.append(_md_table(*body))
        else:
            name, caption = body
            out.append(f"![{caption}](plots/{name})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Markdown's ``**bold**`` and ```code``` of a paragraph as HTML (the text escaped)."""
    parts = html.escape(text).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    joined = "".join(parts)
    bold = joined.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<strong>{bold[i]}</strong>"
    return "".join(bold)


def to_html(blocks: Sequence[Block], images: dict[str, bytes]) -> str:
    """``sizing.html``: the blocks as one self-contained page (figures as data URIs)."""
    body: list[str] = []
    title = "fundgym size-fund"
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            title = content if kind == "h1" else title
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(content)}</p>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        else:
            name, caption = content
            data = base64.b64encode(images[name]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def figures(result: SizingResult) -> dict[str, bytes]:
    """The three figures as PNG bytes, by file name (:data:`FIGURES`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fundgym.agents.evaluate.plots import SAVE_DPI

    d = result.deficits
    need = 100.0 * d.fund_needed_frac_oi
    n = need.size
    positive = need[need > 0.0]
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=SAVE_DPI, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    if positive.size:
        low, high = float(positive.min()), float(positive.max())
        ax.hist(
            positive, bins=np.geomspace(low, max(high, low * 1.01), 61).tolist(), color="#4c72b0"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("fund needed, % of open interest at the episode's start (log)")
    ax.set_ylabel("episodes")
    ax.set_title(
        f"{result.policy.name}: {positive.size:,} of {n:,} episodes needed a fund "
        f"({n - positive.size:,} needed none)",
        fontsize=10,
    )
    out["loss_histogram.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    if positive.size:
        xs = np.sort(positive)
        survival = (xs.size - np.arange(xs.size)) / n
        ax.step(xs, survival, where="post", color="#333333", label="P(need >= x), episodes")
        ax.set_xscale("log")
        ax.set_yscale("log")
        colours = ("#dd8452", "#c44e52", "#8172b3")
        for colour, row in zip(
            colours, result.overall["tail"]["fund_needed_frac_oi"], strict=False
        ):
            few = f" {FEW}" if row["few_episodes"] else ""
            for key, style in (("var", "-"), ("es", "--")):
                value = 100.0 * row[key]
                if value > 0.0:
                    ax.axvline(
                        value,
                        color=colour,
                        linestyle=style,
                        label=f"{key.upper()} {_level(row['level'])}: {value:.2f}%{few}",
                    )
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("fund needed x, % of open interest (log)")
    ax.set_ylabel("share of episodes needing more (log)")
    ax.set_title(f"Tail of the fund needed ({n:,} episodes)", fontsize=10)
    out["tail.png"] = png(fig)

    curve = result.overall["curve"]
    # The first grid point is a fund of 0: a log axis starts at the second.
    fund = 100.0 * np.asarray(curve["fund"])[1:]
    p, p_low, p_high = (np.asarray(curve[k])[1:] for k in ("p", "p_low", "p_high"))
    floor = 0.5 / n
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    if fund.size == 0:  # no episode needed anything: nothing to draw on a log axis
        fund, p, p_low, p_high = np.array([1e-6, 1.0]), np.zeros(2), np.zeros(2), np.zeros(2)
    ax.fill_between(
        fund,
        np.maximum(p_low, floor),
        np.maximum(p_high, floor),
        color="#4c72b0",
        alpha=0.25,
        label=f"{CI_LEVEL:.0%} Wilson interval",
    )
    ax.plot(fund, np.maximum(p, floor), color="#4c72b0", label="P(need > fund)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    target = result.overall["fund_for_target"]
    ax.axhline(result.target_prob, color="#c44e52", linestyle=":", label="target")
    ax.axvline(
        100.0 * target["frac_oi"],
        color="#c44e52",
        label=f"fund for the target: {_pct(target['frac_oi'])}",
    )
    own = result.overall["observed"]["own_fund_frac_oi"]
    ax.axvline(
        100.0 * own, color="#55a868", linestyle="--", label=f"policy's own fund: {_pct(own)}"
    )
    ax.set_xlabel("fund, % of open interest (log)")
    ax.set_ylabel("P(fund exhausted: socialised loss or ADL)")
    ax.set_title(
        f"Fund size against P(exhaustion), {n:,} episodes; P(need > 0) = "
        f"{_pct(float(np.mean(need > 0.0)))}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    out["exhaustion_curve.png"] = png(fig)
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def episodes_csv(result: SizingResult) -> str:
    """``episodes.csv``: one row per episode, every input of every figure."""
    d = result.deficits
    columns = {
        "scenario": d.scenario,
        "seed": d.seed.tolist(),
        "initial_open_interest_usd": d.initial_open_interest_usd.tolist(),
        "initial_fund_usd": d.initial_fund_usd.tolist(),
        "payout_usd": d.payout_usd.tolist(),
        "socialized_usd": d.socialized_usd.tolist(),
        "adl_haircut_usd": d.adl_haircut_usd.tolist(),
        "adl_volume_usd": d.adl_volume_usd.tolist(),
        "loss_beyond_usd": d.loss_beyond_usd.tolist(),
        "fund_needed_usd": d.fund_needed_usd.tolist(),
        "fund_needed_frac_oi": d.fund_needed_frac_oi.tolist(),
        "event": d.event.tolist(),
        "price_fall_frac": d.price_fall_frac.tolist(),
        "price_rise_frac": d.price_rise_frac.tolist(),
        "initial_mark_usd": d.initial_mark_usd.tolist(),
        "top1_size": d.top_size[:, 0].tolist(),
        "top2_size": d.top_size[:, 1].tolist(),
        "top1_equity_usd": d.top_equity_usd[:, 0].tolist(),
        "top2_equity_usd": d.top_equity_usd[:, 1].tolist(),
    }
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buf.getvalue()


def to_json(result: SizingResult, command: str, created: str) -> dict[str, Any]:
    """``sizing.json``'s content (:data:`KIND` first, so a reader recognises it early)."""
    return {
        "kind": KIND,
        "fundgym": __version__,
        "command": command,
        "created_utc": created,
        "policy": result.policy.name,
        "policy_note": result.policy.note,
        "scenarios": result.scenarios,
        "episodes_per_scenario": result.episodes,
        "episodes_total": len(result.deficits),
        "seed": result.seed,
        "target_prob": result.target_prob,
        "allow_few_episodes": result.allow_few_episodes,
        "min_episodes_999": MIN_EPISODES_999,
        "bootstrap": {
            "method": "percentile",
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "ci_level": CI_LEVEL,
        },
        "measures": MEASURES,
        "wall_s": round(result.wall_s, 3),
        "episodes_s": round(result.episodes_s, 3),
        "episodes_per_s": round(len(result.deficits) / max(result.episodes_s, 1e-9), 2),
        "workers": result.workers,
        "backend": result.backend,
        "overall": result.overall,
        "by_scenario": result.by_scenario,
        "method": METHOD.replace("\n", " "),
    }


def write_sizing(
    out: Path, result: SizingResult, command: str, *, address: str | None = None
) -> dict[str, Path]:
    """Write every output of ``result`` into ``out``, replacing what is there.

    The caller has checked ``out`` (:func:`fundgym.agents.cli.guards.check_output`) and
    holds its lock; what a killed earlier write left beside it is removed first.

    Returns:
        File name -> its path inside ``out``.
    """
    remove_stale_temps(out.parent, out.name)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    blocks = _blocks(result, command, created)
    images = figures(result)
    config = {
        "command": command,
        "fundgym": __version__,
        "policy": {
            "spec": result.policy.name,
            "kind": result.policy.kind,
            "env_overrides": result.policy.env_overrides(),
        },
        "scenarios": result.scenarios,
        "episodes": result.episodes,
        "seed": result.seed,
        "episode_seeds": f"{result.seed} .. {result.seed + result.episodes - 1} per scenario",
        "target_prob": result.target_prob,
        "allow_few_episodes": result.allow_few_episodes,
        "workers": result.workers,
        "backend": result.backend,
        "address": address,
        "chunk_episodes": CHUNK_EPISODES,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        "env": result.env,
        "each_run": "env with scenario set to each scenario (a library scenario runs its own "
        "horizon) and the policy's overrides",
    }
    texts = {
        "sizing.json": json.dumps(jsonable(to_json(result, command, created)), indent=2),
        "sizing.md": to_markdown(blocks),
        "sizing.html": to_html(blocks, images),
        "episodes.csv": episodes_csv(result),
        "config.yaml": yaml.safe_dump(jsonable(config), sort_keys=False),
        "command.txt": f"{command}\n# created {created}\n",
    }
    with directory_in_place(out) as tmp:
        for name, text in texts.items():
            write_text_atomic(tmp / name, text)
        for name, data in images.items():
            write_bytes_atomic(tmp / "plots" / name, data)
    return {name: out / name for name in (*texts, *(f"plots/{n}" for n in images))}
