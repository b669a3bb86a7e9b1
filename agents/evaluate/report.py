"""The report of ``fundgym evaluate``: plots, ``report.md`` and a self-contained ``report.html``.

A risk committee choosing insurance-fund parameters wants to see every candidate policy on
the *same* crashes with the *same* seeds, so that a difference between two policies comes
from the policies and not from the luck of the market path. It also wants intervals rather
than single runs: evaluation runs few episodes, and a policy that looks twice as safe on one
crash may be no safer on the next. The report therefore shows, for each policy:

* a headline table over all scenarios (solvency loss, bad debt, deleveraged notional, the
  probability that the fund is exhausted, the tail of bad debt, and what that safety costs in
  locked capital and fees), each mean with its 95% interval;
* whether it clears the quality bar against the reference policy (``metrics.dominates``) and
  how much of the gap between the best static parameters and the hindsight-tuned ones it
  closes;
* a per-scenario table and grouped bars, since a policy can win on average and lose badly
  on one kind of crash;
* where some policy ran a backstop vault (Hyperliquid's HLP), what the vault made or lost,
  its deepest drawdown, the largest inventory it carried and the accounts it took over;
* a scatter of solvency loss against locked capital, the trade-off a committee actually
  decides on (lower-left is better);
* one episode per scenario as time series (price, fund, liquidations and the parameters the
  policy set), to show *how* a policy behaved, not only how it scored, and the user loss it
  accrued over that episode (socialised, unrecovered, deleveraged: the loss that ranks the
  policies). An episode that ended insolvent is marked where it ended; a historical crash
  (its scenario's ``start_utc``) is drawn against UTC dates, so it reads as the day it was.

:func:`write_report` writes the figures (``plots/*.png``), ``report.md`` (which links to
them) and ``report.html`` (the same sections with every figure embedded as a base64 data URI,
so it can be mailed or archived as one file). Both documents are rendered from one list of
blocks, so they cannot disagree; every figure carries an alt text that says in words what it
shows (the numbers a reader would take from it). In the page, a table too wide for the screen
scrolls inside its own box, and the print stylesheet fits every table to the paper, so a
printout keeps every column. Every file is written atomically (a temporary file in the same
folder, then ``os.replace``): an interrupted run never leaves half a report.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from fundgym.agents.evaluate.metrics import (
    CAPITAL_RULE_MAX_RATIO,
    LOSS_RULE_MAX_RATIO,
    SUMMARY_LEVEL,
    EpisodeRecord,
    Row,
)
from fundgym.agents.evaluate.plots import (
    TimeAxis,
    place_labels,
    save_atomic,
    unclutter_xticks,
)
from fundgym.agents.outputs import write_text_atomic

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Folder (inside the output folder) that holds the figures.
PLOTS_DIRNAME = "plots"

#: Parameters drawn in the time-series figure: name -> (legend label, line style). Drawn in
#: percent, as risk teams quote them.
TIMESERIES_PARAMS: dict[str, tuple[str, str]] = {
    "mmr": ("maintenance margin (mmr)", "-"),
    "liquidation_fee_rate": ("liquidation fee", "--"),
}

#: Marker drawn where an episode ended insolvent (with a dotted line at that time).
INSOLVENT_MARKER = "X"

#: Placeholder for a number that does not exist (NaN, missing, not computable).
NOT_AVAILABLE = "n/a"

# Up to 10 policies get the tab10 colours, up to 20 tab20; more are spread over a colormap.
_TAB10 = [to_hex(plt.get_cmap("tab10")(i)) for i in range(10)]
_TAB20 = [to_hex(plt.get_cmap("tab20")(i)) for i in range(20)]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 1.8em; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: 1em 0; }
p, li, figcaption, h1, h2, h3 { overflow-wrap: break-word; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: .25em .4em; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.nw { white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .6em; overflow-x: auto; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; box-sizing: border-box; }
figcaption { font-size: .9em; color: #555; }
@media print {
  @page { margin: 12mm; }
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  .table-wrap { overflow: visible; }
  table { table-layout: auto; width: 100%; font-size: 7pt; }
  th, td { padding: .15em .25em; overflow-wrap: anywhere; }
  .nw { white-space: normal; }
  thead { display: table-header-group; }
  tr, figure { break-inside: avoid; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; overflow: visible; }
  figure img { border: none; }
}
"""


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _number(row: Mapping[str, object] | None, key: str) -> float:
    """``row[key]`` as a float, NaN when the row or key is missing or not a number.

    The report renders what it has: a summary produced by an older or partial evaluation
    shows "n/a" in a cell rather than failing the whole report.
    """
    if row is None:
        return math.nan
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return math.nan
    return float(value)


def _usd(value: float) -> str:
    """Whole dollars with thousands separators (``$1,234,567``; ``-$5``); "n/a" if NaN."""
    if math.isnan(value):
        return NOT_AVAILABLE
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    rounded = round(value)
    if rounded == 0:
        return "$0"
    return f"-${-rounded:,}" if rounded < 0 else f"${rounded:,}"


def _pct(frac: float, digits: int = 1) -> str:
    """A ratio as percent (``0.125`` -> ``12.5%``); "n/a" if NaN."""
    if math.isnan(frac):
        return NOT_AVAILABLE
    if math.isinf(frac):
        return "inf" if frac > 0 else "-inf"
    return f"{100.0 * frac:.{digits}f}%"


def _times(value: float) -> str:
    """A ratio as ``x1.016`` (``n/a`` when not a number)."""
    return NOT_AVAILABLE if math.isnan(value) else f"x{value:.3f}"


def _plain(value: float, digits: int = 3) -> str:
    """A unitless number with thousands separators; "n/a" if NaN."""
    if math.isnan(value):
        return NOT_AVAILABLE
    return f"{value:,.{digits}f}"


def _with_ci(row: Mapping[str, object], key: str, fmt: Callable[[float], str]) -> str:
    """``mean [low, high]`` of a summary column; the interval is "n/a" from one episode.

    :func:`fundgym.agents.evaluate.metrics.mean_ci` returns the point ``(mean, mean, mean)`` for
    one episode
    (no estimate of spread); printing that as an interval would read as certainty. The
    Wilson interval of ``p_*`` columns is valid from one episode and is always shown. The
    lower end is printed no lower than 0: every column shown with an interval is an amount
    or a probability, and a Student-t interval around a small mean can reach below 0, which
    would read as an impossible negative loss.
    """
    mean = fmt(_number(row, key))
    low, high = _number(row, f"{key}_ci_low"), _number(row, f"{key}_ci_high")
    single = _number(row, "episodes") < 2 and not key.startswith("p_")
    if single or math.isnan(low) or math.isnan(high):
        return f"{mean} [{NOT_AVAILABLE}]"
    return f"{mean} [{fmt(max(low, 0.0))}, {fmt(high)}]"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 scenario"``, ``"3 scenarios"``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _usd_tick(value: float, _pos: int | None = None) -> str:
    """Compact axis tick in USD: ``$1.5M``, ``$250k``, ``$12``."""
    size = abs(value)
    sign = "-" if value < 0 else ""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= scale:
            return f"{sign}${size / scale:.4g}{suffix}"
    return f"{sign}${size:.4g}"


def _safe_filename(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


# --------------------------------------------------------------------------------------------
# Order and colour of policies and scenarios
# --------------------------------------------------------------------------------------------


def _ordered(preferred: Sequence[object], seen: Sequence[str]) -> list[str]:
    """Names of ``seen`` in the order of ``preferred``, then the others in first-seen order."""
    present = set(seen)
    out = [n for n in dict.fromkeys(str(p) for p in preferred) if n in present]
    out += [n for n in dict.fromkeys(seen) if n not in out]
    return out


def _colours(policies: Sequence[str]) -> dict[str, str]:
    """One fixed colour per policy, the same in every figure."""
    n = len(policies)
    if n <= len(_TAB10):
        palette = _TAB10
    elif n <= len(_TAB20):
        palette = _TAB20
    else:
        cmap = plt.get_cmap("nipy_spectral")
        palette = [to_hex(cmap(i / n)) for i in range(n)]
    return {p: palette[i] for i, p in enumerate(policies)}


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _edges_minutes(rec: EpisodeRecord) -> FloatArray:
    """Step boundaries in minutes: the episode start (0) then the end of every step."""
    return np.concatenate(([0.0], rec.time_minutes))


def _per_step(values: FloatArray) -> FloatArray:
    """Values of each step, first repeated, for ``ax.step(edges, ..., where="pre")``."""
    return np.concatenate((values[:1], values))


def _line_widths(policies: Sequence[str]) -> dict[str, float]:
    """Line width per policy: earlier policies wider, so a line hidden under a later one shows.

    Policies often coincide (same market path, same parameters until they act, no loss at
    all); the widest line is drawn first and peeks out from under the others at its edges.
    """
    last = max(1, len(policies) - 1)
    return {policy: 1.0 + 2.5 * (last - i) / last for i, policy in enumerate(policies)}


def _mark_insolvent(
    ax: Axes, x_end: Any, y_end: float, policy: str, colour: str, *, point: bool
) -> None:
    """Mark where ``policy``'s episode ended insolvent: a dotted vertical line, and an X.

    An episode that ends on insolvency stops early; without a mark its lines just stop and
    read as missing data. The X (``gid`` ``"insolvent <policy>"``) sits at the line's last
    point when ``point`` is set.
    """
    ax.axvline(x_end, color=colour, ls=(0, (2, 2)), lw=1.0, zorder=2)
    if point:
        ax.plot(
            [x_end],
            [y_end],
            ls="none",
            marker=INSOLVENT_MARKER,
            ms=10,
            mfc=colour,
            mec="black",
            mew=0.8,
            zorder=5,
            gid=f"insolvent {policy}",
        )


def _insolvent_handle() -> Line2D:
    """Legend entry of the insolvency mark."""
    return Line2D(
        [],
        [],
        color="0.3",
        ls=(0, (2, 2)),
        marker=INSOLVENT_MARKER,
        mfc="0.6",
        mec="black",
        label="episode ended insolvent",
    )


def timeseries_figure(
    scenario: str,
    traces: Mapping[str, EpisodeRecord],
    colours: Mapping[str, str],
    time: TimeAxis,
) -> Figure:
    """One episode of one scenario under every policy: price, fund, liquidations, parameters.

    Policies see the same market path (equal seeds), so the mark price is drawn once, from
    the longest trace. The parameter panel (mmr solid, liquidation fee dashed, in percent) is
    drawn only if some trace recorded one of :data:`TIMESERIES_PARAMS`. An episode that ended
    insolvent is marked where it ended (:func:`_mark_insolvent`).

    Args:
        scenario: Scenario name, for the title.
        traces: Policy -> its record (non-empty), in policy order.
        colours: Policy -> colour.
        time: The time axis (dates for a historical crash).

    Returns:
        The figure (not yet saved).
    """
    with_params = any(name in rec.params for rec in traces.values() for name in TIMESERIES_PARAMS)
    n_panels = 4 if with_params else 3
    ratios = [1.4, 1.2, 1.0, 1.0][:n_panels]
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(10, 2.3 * n_panels + 0.8), sharex=True, height_ratios=ratios
    )
    # An episode that ends early on insolvency stops its price path there; the longest trace
    # (the first in policy order among equals) shows the whole path.
    price_policy = max(traces, key=lambda p: traces[p].n_steps)
    price = traces[price_policy]
    ax_price, ax_fund, ax_liq = axes[0], axes[1], axes[2]
    ax_price.plot(
        time.x(price.time_minutes),
        price.mark_price,
        color="0.25",
        lw=1.0,
        label=f"mark (run of {price_policy})",
    )
    ax_price.set_ylabel("mark price (USD)")
    ax_price.set_title(f"{scenario}: episode {price.episode} (seed {price.seed})")
    ax_price.legend(loc="best", fontsize=8)
    widths = _line_widths(list(traces))
    for policy, rec in traces.items():
        colour, lw = colours[policy], widths[policy]
        edges = time.x(_edges_minutes(rec))
        fund = np.concatenate(([rec.initial_fund_usd], rec.fund_balance_usd))
        ax_fund.plot(edges, fund, color=colour, lw=lw, label=policy)
        ax_liq.step(edges, _per_step(rec.liquidation_volume_usd), where="pre", color=colour, lw=lw)
    ax_fund.set_ylabel("insurance fund (USD)")
    ax_liq.set_ylabel("liquidations\n(USD per step)")
    for ax in (ax_fund, ax_liq):
        ax.yaxis.set_major_formatter(FuncFormatter(_usd_tick))
    if with_params:
        ax_par = axes[3]
        for policy, rec in traces.items():
            for name, (_label, style) in TIMESERIES_PARAMS.items():
                if name in rec.params:
                    values = 100.0 * _per_step(rec.params[name])
                    ax_par.step(
                        time.x(_edges_minutes(rec)),
                        values,
                        where="pre",
                        color=colours[policy],
                        ls=style,
                        lw=widths[policy],
                    )
        handles = [
            Line2D([], [], color="0.3", ls=style, label=label)
            for label, style in TIMESERIES_PARAMS.values()
        ]
        ax_par.legend(handles=handles, loc="best", fontsize=8)
        ax_par.set_ylabel("parameter (%)")
    insolvent = [p for p, rec in traces.items() if rec.terminated]
    for policy in insolvent:
        rec = traces[policy]
        x_end = time.x(rec.time_minutes[-1:])[0]
        y_end = float(rec.fund_balance_usd[-1])
        for ax in axes:
            _mark_insolvent(ax, x_end, y_end, policy, colours[policy], point=ax is ax_fund)
    # The policy legend sits outside, right of the fund panel: with several policies inside
    # it would cover the lines it explains.
    handles, _labels = ax_fund.get_legend_handles_labels()
    if insolvent:
        handles.append(_insolvent_handle())
    ax_fund.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title="policy",
        title_fontsize=8,
    )
    time.format(axes[-1])
    return fig


#: The per-step record fields whose sum is the solvency loss users bear (the headline metric
#: ``solvency_loss_usd`` = bad debt + ADL notional): socialised, unrecovered, deleveraged.
USER_LOSS_PARTS = ("socialized_loss_usd", "unrecovered_usd", "adl_volume_usd")

#: Panels of the cumulative user-loss figure: title -> the record fields summed into it.
USER_LOSS_PANELS: dict[str, tuple[str, ...]] = {
    "solvency loss (ranks the policies)": USER_LOSS_PARTS,
    "socialised loss (borne by traders)": ("socialized_loss_usd",),
    "unrecovered loss (borne by the exchange)": ("unrecovered_usd",),
    "deleveraged notional (ADL)": ("adl_volume_usd",),
}


def _cumulative(rec: EpisodeRecord, fields: Sequence[str]) -> FloatArray:
    """Running total of the summed ``fields`` from the episode start: 0, then one per step."""
    per_step = np.sum([getattr(rec, f) for f in fields], axis=0)
    return np.concatenate(([0.0], np.cumsum(per_step)))


def user_loss_figure(
    scenario: str,
    traces: Mapping[str, EpisodeRecord],
    colours: Mapping[str, str],
    time: TimeAxis,
) -> Figure:
    """Cumulative user loss over one episode, per policy: the total and its three parts.

    The headline metric (solvency loss = socialised + unrecovered + deleveraged notional)
    decides the ranking; this shows *when* each policy accrued it and which part it was.
    Panels (:data:`USER_LOSS_PANELS`) share both axes' meaning: USD accrued since the episode
    start. A panel where no policy lost anything says so rather than drawing flat lines.

    Args:
        scenario: Scenario name, for the title.
        traces: Policy -> its record (non-empty), in policy order.
        colours: Policy -> colour.
        time: The time axis (dates for a historical crash).

    Returns:
        The figure (not yet saved).
    """
    fig, grid = plt.subplots(2, 2, figsize=(11, 6.8), sharex=True)
    axes = list(grid.ravel())
    widths = _line_widths(list(traces))
    first = next(iter(traces.values()))
    fig.suptitle(f"{scenario}: cumulative user loss, episode {first.episode} (seed {first.seed})")
    for ax, (title, fields) in zip(axes, USER_LOSS_PANELS.items(), strict=True):
        top = 0.0
        for policy, rec in traces.items():
            total = _cumulative(rec, fields)
            top = max(top, float(total[-1]))
            edges = time.x(_edges_minutes(rec))
            ax.plot(edges, total, color=colours[policy], lw=widths[policy], label=policy)
            if rec.terminated:
                _mark_insolvent(
                    ax, edges[-1], float(total[-1]), policy, colours[policy], point=True
                )
        ax.set_title(title, fontsize=10)
        if top > 0.0:
            ax.set_ylim(0.0, 1.08 * top)
        else:
            ax.set_ylim(-0.05, 1.0)
            ax.set_yticks([0.0])
            ax.text(0.5, 0.5, "none in this episode", transform=ax.transAxes, ha="center")
        ax.yaxis.set_major_formatter(FuncFormatter(_usd_tick))
        ax.grid(alpha=0.3)
    handles, _labels = axes[0].get_legend_handles_labels()
    if any(rec.terminated for rec in traces.values()):
        handles.append(_insolvent_handle())
    axes[1].legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        title="policy",
        title_fontsize=8,
    )
    for ax in axes[2:]:
        time.format(ax)
    # Fixed spacing rather than tight_layout (a full draw): room for the panel titles and the
    # tick labels; the saved image is cropped to its content (and the outside legend).
    fig.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.1, hspace=0.3, wspace=0.22)
    return fig


def _yerr(
    rows: Sequence[Mapping[str, object]], key: str
) -> tuple[list[float], list[float], list[float]]:
    """Means and (lower, upper) whisker lengths; NaN bounds give no whisker, none below 0.

    Amounts here cannot be negative, but a t-interval around a small mean can reach below
    zero; the whisker stops at zero instead of pointing at an impossible loss (and a log
    axis would drop it altogether).
    """
    means, lows, highs = [], [], []
    for row in rows:
        mean = _number(row, key)
        low, high = _number(row, f"{key}_ci_low"), _number(row, f"{key}_ci_high")
        mean = 0.0 if math.isnan(mean) else mean
        means.append(mean)
        lows.append(0.0 if math.isnan(low) else max(0.0, mean - max(low, 0.0)))
        highs.append(0.0 if math.isnan(high) else max(0.0, high - mean))
    return means, lows, highs


def _loss_axis(ax: Axes, values: Sequence[float], *, room_below: bool) -> None:
    """Scale a loss axis: symlog when positive values span > 100x, else linear from 0.

    Solvency losses run from 0 (a quiet scenario) to tens of millions (a cascade); a linear
    axis hides every small loss, a log axis cannot show 0. ``symlog`` is linear below the
    smallest positive value's power of ten and logarithmic above it, with ticks at 0 and at
    whole decades. ``room_below`` leaves a little space under 0 so a marker at zero loss is
    drawn whole (for points, not for bars, which stand on 0).
    """
    positive = [v for v in values if math.isfinite(v) and v > 0.0]
    if not positive:
        ax.set_ylim(-0.05 if room_below else 0.0, 1.0)
        ax.set_yticks([0.0])
        ax.text(
            0.5,
            0.5,
            "no solvency loss",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    elif max(positive) / min(positive) > 100.0:
        low_decade = max(0, math.floor(math.log10(min(positive))))
        high_decade = math.ceil(math.log10(max(positive)))
        linthresh = 10.0**low_decade
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(-0.3 * linthresh if room_below else 0.0, 2.0 * max(positive))
        ax.set_yticks([0.0] + [10.0**k for k in range(low_decade, high_decade + 1)])
    else:
        top = 1.1 * max(positive)
        ax.set_ylim(-0.04 * top if room_below else 0.0, top)
    ax.yaxis.set_major_formatter(FuncFormatter(_usd_tick))


def scenario_bars_figure(
    by_scenario: Sequence[Mapping[str, object]],
    scenarios: Sequence[str],
    policies: Sequence[str],
    colours: Mapping[str, str],
) -> Figure:
    """Grouped bars per scenario: solvency loss and mean locked capital, with 95% intervals.

    Scenario names are slanted when they would run into each other (:func:`unclutter_xticks`).

    Args:
        by_scenario: Summary lines from :func:`fundgym.agents.evaluate.metrics.summarize`.
        scenarios: Scenario order (groups).
        policies: Policy order (bars within a group).
        colours: Policy -> colour.

    Returns:
        The figure (not yet saved).
    """
    lines = {(str(r.get("policy")), str(r.get("scenario"))): r for r in by_scenario}
    width_in = max(8.0, 1.5 + len(scenarios) * (0.5 + 0.3 * len(policies)))
    fig, (ax_loss, ax_cap) = plt.subplots(2, 1, figsize=(width_in, 7.5))
    width = 0.8 / max(1, len(policies))
    x0 = np.arange(len(scenarios), dtype=np.float64)
    losses: list[float] = []
    for ax, key in ((ax_loss, "solvency_loss_usd"), (ax_cap, "mean_capital_locked_usd")):
        for i, policy in enumerate(policies):
            xs = [x0[j] for j, s in enumerate(scenarios) if (policy, s) in lines]
            rows = [lines[(policy, s)] for s in scenarios if (policy, s) in lines]
            if not rows:
                continue
            means, lows, highs = _yerr(rows, key)
            if key == "solvency_loss_usd":
                losses += [m + h for m, h in zip(means, highs, strict=True)]
            offset = (i - (len(policies) - 1) / 2.0) * width
            ax.bar(
                np.asarray(xs) + offset,
                means,
                width=width,
                color=colours[policy],
                label=policy,
                yerr=[lows, highs],
                capsize=2,
                error_kw={"lw": 0.8, "ecolor": "0.2"},
            )
        ax.set_xticks(x0, list(scenarios))
    _loss_axis(ax_loss, losses, room_below=False)
    ax_loss.set_ylabel("solvency loss (USD)\nbad debt + ADL notional")
    ax_loss.set_title(
        f"Per scenario: mean over episodes with {SUMMARY_LEVEL:.0%} intervals (lower is better)"
    )
    ax_loss.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="policy", title_fontsize=8
    )
    ax_cap.set_ylabel("mean capital locked (USD)\nfund + vault + maintenance margin")
    ax_cap.set_ylim(bottom=0.0)
    ax_cap.yaxis.set_major_formatter(FuncFormatter(_usd_tick))
    fig.tight_layout()
    unclutter_xticks([ax_loss, ax_cap])
    fig.tight_layout()  # room for slanted names
    return fig


def scatter_figure(
    by_policy: Sequence[Mapping[str, object]],
    policies: Sequence[str],
    colours: Mapping[str, str],
    reference: str | None,
) -> Figure:
    """Solvency loss against locked capital, one point per policy; lower-left is better.

    With a reference policy, the region a policy must land in to dominate it
    (:func:`fundgym.agents.evaluate.metrics.dominates`) is shaded: half the loss for no more
    capital, or no more loss for 20% less capital. Points are named where the names collide
    neither with each other nor with a point (:func:`place_labels`); the legend sits outside.

    Args:
        by_policy: Summary lines from :func:`fundgym.agents.evaluate.metrics.summarize_policies`.
        policies: Policy order (for colours and drawing order).
        colours: Policy -> colour.
        reference: Name of the reference policy, or None.

    Returns:
        The figure (not yet saved).
    """
    lines = {str(r.get("policy")): r for r in by_policy}
    order = [p for p in policies if p in lines]
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    xs_all: list[float] = []
    ys_all: list[float] = []
    spots: dict[tuple[str, str], tuple[float, float]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    bars: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for policy in order:
        row = lines[policy]
        (x,), (xl,), (xh,) = _yerr([row], "mean_capital_locked_usd")
        (y,), (yl,), (yh,) = _yerr([row], "solvency_loss_usd")
        is_ref = policy == reference
        ax.errorbar(
            [x],
            [y],
            xerr=[[xl], [xh]],
            yerr=[[yl], [yh]],
            fmt="*" if is_ref else "o",
            ms=13 if is_ref else 8,
            color=colours[policy],
            ecolor=colours[policy],
            elinewidth=1.0,
            capsize=3,
            label=f"{policy} (reference)" if is_ref else policy,
            zorder=3,
        )
        # Policies at the same point (e.g. two static sets that never bind) share one label.
        spot = (f"{x:.6g}", f"{y:.6g}")
        spots.setdefault(spot, (x, y))
        names.setdefault(spot, []).append(policy)
        bars += [((x - xl, y), (x + xh, y)), ((x, y - yl), (x, y + yh))]
        xs_all += [x - xl, x + xh]
        ys_all += [y + yh]
    ref_row = lines.get(reference) if reference is not None else None
    ref_cap = _number(ref_row, "mean_capital_locked_usd")
    ref_loss = _number(ref_row, "solvency_loss_usd")
    shade = ref_row is not None and math.isfinite(ref_cap) and math.isfinite(ref_loss)
    if shade:
        xs_all += [CAPITAL_RULE_MAX_RATIO * ref_cap]
        ys_all += [ref_loss]
    lo, hi = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    pad = 0.08 * (hi - lo) if hi > lo else max(0.05 * abs(hi), 1.0)
    x_left, x_right = max(0.0, lo - pad), hi + pad
    if shade:
        half = LOSS_RULE_MAX_RATIO * ref_loss
        cheap = CAPITAL_RULE_MAX_RATIO * ref_cap
        corners_x = [x_left, ref_cap, ref_cap, cheap, cheap, x_left]
        corners_y = [0.0, 0.0, half, half, ref_loss, ref_loss]
        ax.fill(
            corners_x,
            corners_y,
            color="tab:green",
            alpha=0.12,
            lw=0,
            zorder=1,
            label=f"dominates {reference}",
        )
    ax.set_xlim(x_left, x_right)
    _loss_axis(ax, ys_all, room_below=True)
    ax.xaxis.set_major_formatter(FuncFormatter(_usd_tick))
    ax.set_xlabel("mean capital locked (USD): fund + vault + maintenance margin")
    ax.set_ylabel("solvency loss (USD): bad debt + ADL notional")
    ax.set_title(
        "Solvency vs capital efficiency, all scenarios "
        f"(lower-left is better; {SUMMARY_LEVEL:.0%} intervals)"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    # Policies that behave alike land close together: their names are spread around instead
    # of printed over each other.
    place_labels(
        ax,
        list(spots.values()),
        ["\n".join(names[spot]) for spot in spots],
        keep_clear=bars,
        marker_pt=13.0,
    )
    return fig


# --------------------------------------------------------------------------------------------
# Documents: one list of blocks, rendered to Markdown and to HTML
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Code:
    text: str


@dataclass(frozen=True)
class _Items:
    """A bullet list; each item is (bold lead, rest)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Table:
    label: str  # names the table's scrolling region for screen readers (HTML)
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]


@dataclass(frozen=True)
class _Image:
    alt: str  # what the figure shows, in words: read out instead of the picture
    path: Path  # absolute path of the PNG
    caption: str


_Block = _Heading | _Paragraph | _Code | _Items | _Table | _Image


def _md_text(text: str) -> str:
    """Escape the characters that would turn plain text into Markdown markup or a table cell.

    Dollar signs, brackets and underscores inside words are left alone: they render as
    themselves in CommonMark and keep the raw file readable. Line breaks become spaces, so a
    multi-line note cannot end a list item or a table row.
    """
    return re.sub(r"([\\`*|<])", r"\\\1", " ".join(text.splitlines()))


def _render_markdown(blocks: Sequence[_Block], root: Path) -> str:
    """Markdown of ``blocks``; images link to their PNG relative to ``root``."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"{'#' * block.level} {_md_text(block.text)}")
        elif isinstance(block, _Paragraph):
            parts.append(_md_text(block.text))
        elif isinstance(block, _Code):
            fence = "```"
            while fence in block.text:
                fence += "`"
            parts.append(f"{fence}\n{block.text}\n{fence}")
        elif isinstance(block, _Items):
            parts.append(
                "\n".join(
                    f"- **{_md_text(lead)}**{_md_text(rest)}" if lead else f"- {_md_text(rest)}"
                    for lead, rest in block.items
                )
            )
        elif isinstance(block, _Table):
            align = ["---:" if num else "---" for num in block.numeric]
            lines = [
                "| " + " | ".join(_md_text(h) for h in block.header) + " |",
                "| " + " | ".join(align) + " |",
            ]
            lines += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        else:
            rel = block.path.relative_to(root).as_posix()
            alt = _md_text(block.alt).replace("[", "(").replace("]", ")")
            parts.append(f"![{alt}]({rel})\n\n*{_md_text(block.caption)}*")
    return "\n\n".join(parts) + "\n"


def _html_breakable(text: str) -> str:
    """Escaped ``text`` that may break after an underscore (long policy and scenario names)."""
    return html.escape(text).replace("_", "_<wbr>")


def _html_cell(text: str, numeric: bool) -> str:
    """One table cell; a number cell may wrap between its numbers, never inside one.

    ``mean [low, high]`` becomes up to three lines when its column is squeezed; a number split
    over two lines would misread, so each is kept whole. On paper every cell may wrap
    anywhere (the print stylesheet), since a column cut off loses more than a split number.
    """
    if not numeric:
        return f"<td>{_html_breakable(text)}</td>"
    words = " ".join(f'<span class="nw">{html.escape(word)}</span>' for word in text.split(" "))
    return f'<td class="num">{words}</td>'


def _render_html(blocks: Sequence[_Block], title: str) -> str:
    """A self-contained HTML page of ``blocks``: inline CSS, PNGs as base64 data URIs."""
    esc = html.escape
    body: list[str] = []
    for block in blocks:
        if isinstance(block, _Heading):
            body.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            body.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, _Code):
            body.append(f"<pre><code>{esc(block.text)}</code></pre>")
        elif isinstance(block, _Items):
            items = "".join(
                f"<li><strong>{esc(lead)}</strong>{esc(rest)}</li>"
                if lead
                else f"<li>{esc(rest)}</li>"
                for lead, rest in block.items
            )
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, _Table):
            head = "".join(f"<th>{_html_breakable(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>"
                + "".join(_html_cell(c, num) for c, num in zip(row, block.numeric, strict=True))
                + "</tr>"
                for row in block.rows
            )
            # The box scrolls sideways on a narrow screen, so the page itself never does; the
            # print stylesheet lets the table wrap to the page instead (nothing is scrolled
            # out of sight on paper). tabindex lets a keyboard scroll it.
            body.append(
                f'<div class="table-wrap" role="region" tabindex="0" '
                f'aria-label="{esc(block.label)}"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table></div>"
            )
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{esc(block.alt)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------
# What each figure shows, in words (alt text and caption)
# --------------------------------------------------------------------------------------------


def _price(value: float) -> str:
    """A price in USD with cents below $1,000 (``$0.0712``, ``$97.50``, ``$61,234``)."""
    if value >= 1000.0:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if value >= 1.0 else f"${value:.4g}"


def _scatter_image(
    by_policy: Sequence[Mapping[str, object]],
    policies: Sequence[str],
    reference: str | None,
    path: Path,
) -> _Image:
    """The scatter's figure block: its alt text reads every point's two coordinates."""
    lines = {str(r.get("policy")): r for r in by_policy}
    points = "; ".join(
        f"{p}{' (reference)' if p == reference else ''}: loss "
        f"{_usd(_number(lines[p], 'solvency_loss_usd'))}, capital "
        f"{_usd(_number(lines[p], 'mean_capital_locked_usd'))}"
        for p in policies
        if p in lines
    )
    shaded = f" The shaded region is where a policy dominates {reference}." if reference else ""
    return _Image(
        "Scatter plot of mean solvency loss (vertical axis) against mean capital locked "
        "(horizontal axis) over all scenarios, one point per policy with "
        f"{SUMMARY_LEVEL:.0%} intervals; lower-left is better. {points}.{shaded}",
        path,
        "One point per policy over all scenarios; lower-left is better."
        + (" The shaded region is where a policy dominates the reference." if reference else ""),
    )


def _bars_image(
    by_scenario: Sequence[Mapping[str, object]],
    scenarios: Sequence[str],
    policies: Sequence[str],
    path: Path,
) -> _Image:
    """The bars' figure block: its alt text names the groups and the largest loss."""

    def loss_of(row: Mapping[str, object]) -> float:
        loss = _number(row, "solvency_loss_usd")
        return -math.inf if math.isnan(loss) else loss

    worst = max(by_scenario, key=loss_of)
    loss = loss_of(worst)
    largest = (
        f"The largest mean loss is {worst.get('policy')} on {worst.get('scenario')}, {_usd(loss)}."
        if loss > 0.0
        else "No policy lost anything in any scenario."
    )
    return _Image(
        f"Grouped bar charts, one group per scenario ({', '.join(scenarios)}) and one bar per "
        f"policy ({', '.join(policies)}): mean solvency loss (top) and mean capital locked "
        f"(bottom), each with its {SUMMARY_LEVEL:.0%} interval. {largest}",
        path,
        "Solvency loss and mean capital locked per scenario and policy, with intervals.",
    )


def _ending(rec: EpisodeRecord, time: TimeAxis) -> str:
    """`` (ended insolvent at ...)`` for an episode that ended on insolvency, else empty."""
    return f" (ended insolvent at {time.at(float(rec.time_minutes[-1]))})" if rec.terminated else ""


def _timeseries_image(
    scenario: str, traces: Mapping[str, EpisodeRecord], time: TimeAxis, path: Path
) -> _Image:
    """The time series' figure block: its alt text gives the price path and each fund's end."""
    price = max(traces.values(), key=lambda r: r.n_steps)
    funds = "; ".join(
        f"{p} {_usd(float(rec.fund_balance_usd[-1]))}{_ending(rec, time)}"
        for p, rec in traces.items()
    )
    params = any(name in rec.params for rec in traces.values() for name in TIMESERIES_PARAMS)
    return _Image(
        f"Time series of {scenario}, episode {price.episode} (seed {price.seed}), "
        f"{time.span(0.0, float(price.time_minutes[-1]))}: mark price from "
        f"{_price(float(price.mark_price[0]))} to {_price(float(price.mark_price[-1]))} (low "
        f"{_price(float(price.mark_price.min()))}); insurance fund at the end: {funds}; "
        "liquidation volume per step"
        + ("; the maintenance margin and liquidation fee each policy set." if params else "."),
        path,
        f"{scenario}: mark price, insurance fund, liquidations per step"
        + (" and the parameters each policy set." if params else ".")
        + (
            " An X and a dotted line mark where an episode ended insolvent."
            if any(rec.terminated for rec in traces.values())
            else ""
        ),
    )


def _losses_image(
    scenario: str, traces: Mapping[str, EpisodeRecord], time: TimeAxis, path: Path
) -> _Image:
    """The user-loss figure's block: its alt text gives each policy's totals at the end."""
    first = next(iter(traces.values()))

    def total(rec: EpisodeRecord, *fields: str) -> str:
        return _usd(float(_cumulative(rec, fields)[-1]))

    totals = "; ".join(
        f"{p} {total(rec, *USER_LOSS_PARTS)} (socialised {total(rec, 'socialized_loss_usd')}, "
        f"unrecovered {total(rec, 'unrecovered_usd')}, deleveraged "
        f"{total(rec, 'adl_volume_usd')}){_ending(rec, time)}"
        for p, rec in traces.items()
    )
    return _Image(
        f"Cumulative user loss in {scenario}, episode {first.episode}, "
        f"{time.span(0.0, max(float(r.time_minutes[-1]) for r in traces.values()))}, one line "
        "per policy in four panels: solvency loss (the sum), socialised loss, unrecovered "
        f"loss and deleveraged notional. Totals at the end: {totals}.",
        path,
        f"{scenario}: user loss accrued since the episode start, per policy; solvency loss "
        "(top left) is what ranks the policies.",
    )


# --------------------------------------------------------------------------------------------
# Report content
# --------------------------------------------------------------------------------------------

_HEADLINE_HEADER = (
    "policy",
    "solvency loss [95% CI]",
    "bad debt",
    "ADL notional",
    "shortfall paid by fund",
    "P(fund exhausted) [Wilson 95%]",
    "bad debt VaR99",
    "bad debt ES99",
    "capital locked [95% CI]",
    "fee revenue",
    "fund / OI",
    "OI retained",
    "param movement",
    "objective (mean reward)",
)

_SCENARIO_HEADER = (
    "scenario",
    "policy",
    "solvency loss [95% CI]",
    "of it, at insolvency",
    "bad debt",
    "ADL notional",
    "capital locked [95% CI]",
    "P(fund exhausted) [Wilson 95%]",
    "fund min",
    "liquidation volume",
    "absorbed by liquidators",
    "fee revenue",
)

_VAULT_HEADER = (
    "policy",
    "scenario",
    "vault capital",
    "vault PnL",
    "PnL / capital",
    "max drawdown",
    "peak inventory",
    "takeovers",
    "notional taken over",
)

_ALLOCATION_HEADER = (
    "policy",
    "scenario",
    "fund at the trough",
    "allocation's PnL by then",
    "against the fund held stable",
    "at least stable",
)

_GLOSSARY: tuple[tuple[str, str], ...] = (
    (
        "horizon",
        ": every amount is over one episode, from its start to its last decision (each "
        "scenario's own length; an episode that ends early on insolvency covers less time); "
        "means are over episodes.",
    ),
    (
        "solvency loss",
        ": bad debt + ADL notional per episode: what users lose beyond the insurance fund.",
    ),
    (
        "of it, at insolvency",
        ": the part of the solvency loss in the decision that crossed the insolvency line "
        "(the uncovered loss passing the environment's insolvency_frac of the starting open "
        "interest), which ends the episode; the rest is the loss before the exchange failed, "
        "where the levers act.",
    ),
    (
        "bad debt",
        ": socialised loss + loss nobody could bear (absorbed by the exchange); the loss "
        "borne beyond the fund.",
    ),
    ("ADL notional", ": notional auto-deleveraged from profitable traders."),
    ("shortfall paid by fund", ": bankrupt positions' losses that the insurance fund covered."),
    (
        "P(fund exhausted)",
        ": share of episodes in which the fund hit zero after holding something (a venue "
        "without an insurance fund, which starts at zero, never counts), with a Wilson score "
        "interval (sensible at 0 or all episodes).",
    ),
    (
        "absorbed by liquidators",
        ": liquidation notional outside liquidators took on (the rest went to the book); "
        "their capacity grows with their share of the liquidation fee and with book depth.",
    ),
    (
        "VaR99 / ES99",
        ": empirical 99% value at risk and expected shortfall of bad debt over the episodes "
        "(with few episodes, VaR99 is the worst episode).",
    ),
    (
        "capital locked",
        ": insurance fund + backstop vault equity + maintenance margin, averaged over "
        "decision steps: the capital that sits idle to buy the safety.",
    ),
    ("fund / OI", ": mean of fund balance / open interest over decision steps."),
    ("OI retained", ": open interest at the episode end / at its start."),
    (
        "param movement",
        ": sum over steps of the L1 change of the parameter positions (action units).",
    ),
    (
        "objective",
        ": mean total reward per episode over all scenarios (what policy search maximises).",
    ),
    (
        "95% CI",
        ": Student-t interval of the mean over episodes, its lower end shown no lower than "
        "$0; n/a from a single episode (no spread to estimate).",
    ),
)


def _dominance_items(
    policies: Sequence[str],
    reference: str,
    dominance: Mapping[str, Mapping[str, object]],
    gap_closure: Mapping[str, object],
) -> tuple[tuple[str, str], ...]:
    """One line per non-reference policy: the bar's verdict, its ratios and gap closure."""
    items: list[tuple[str, str]] = []
    for policy in policies:
        if policy == reference:
            continue
        verdict = dominance.get(policy)
        if verdict is None:
            text = "dominance not assessed"
        else:
            rule = verdict.get("rule")
            text = (
                f"dominates: {'yes' if verdict.get('dominates') else 'no'} "
                f"(rule: {rule if rule else 'none'}, "
                f"loss ratio {_pct(_number(verdict, 'loss_ratio'))}, "
                f"capital ratio {_pct(_number(verdict, 'capital_ratio'))})"
            )
        gap = _number(gap_closure, policy)
        items.append((policy, f": {text}; gap closure {_pct(gap)}"))
    return tuple(items)


def _headline_row(row: Mapping[str, object], objective: float) -> tuple[str, ...]:
    """Cells of one policy's line in the headline table."""
    return (
        str(row.get("policy")),
        _with_ci(row, "solvency_loss_usd", _usd),
        _usd(_number(row, "bad_debt_usd")),
        _usd(_number(row, "adl_volume_usd")),
        _usd(_number(row, "shortfall_usd")),
        _with_ci(row, "p_fund_exhausted", _pct),
        _usd(_number(row, "bad_debt_var99_usd")),
        _usd(_number(row, "bad_debt_es99_usd")),
        _with_ci(row, "mean_capital_locked_usd", _usd),
        _usd(_number(row, "fee_revenue_usd")),
        _pct(_number(row, "mean_fund_to_oi_frac"), 2),
        _pct(_number(row, "open_interest_retained_frac")),
        _plain(_number(row, "param_movement"), 2),
        _plain(objective),
    )


def _scenario_row(row: Mapping[str, object]) -> tuple[str, ...]:
    """Cells of one (policy, scenario) line in the per-scenario table."""
    return (
        str(row.get("scenario")),
        str(row.get("policy")),
        _with_ci(row, "solvency_loss_usd", _usd),
        _usd(_number(row, "insolvency_decision_loss_usd")),
        _usd(_number(row, "bad_debt_usd")),
        _usd(_number(row, "adl_volume_usd")),
        _with_ci(row, "mean_capital_locked_usd", _usd),
        _with_ci(row, "p_fund_exhausted", _pct),
        _usd(_number(row, "fund_min_usd")),
        _usd(_number(row, "liquidation_volume_usd")),
        _usd(_number(row, "liquidator_absorbed_usd")),
        _usd(_number(row, "fee_revenue_usd")),
    )


def _ran_vault(row: Mapping[str, object]) -> bool:
    """Whether a summary line's episodes ran a backstop vault (it started with capital)."""
    return _number(row, "vault_initial_usd") > 0.0


def _vault_row(row: Mapping[str, object]) -> tuple[str, ...]:
    """Cells of one (policy, scenario) line in the vault table (means over episodes).

    The PnL is shown without an interval: :func:`_with_ci` floors intervals at 0, which suits
    losses but would hide a vault's loss.
    """
    return (
        str(row.get("policy")),
        str(row.get("scenario")),
        _usd(_number(row, "vault_initial_usd")),
        _usd(_number(row, "vault_pnl_usd")),
        _pct(_number(row, "vault_pnl_frac"), 2),
        _pct(_number(row, "vault_max_drawdown_frac"), 2),
        _usd(_number(row, "vault_peak_inventory_usd")),
        _plain(_number(row, "vault_takeovers"), 1),
        _usd(_number(row, "vault_takeover_usd")),
    )


def _sorted_rows(
    rows: Iterable[Mapping[str, object]],
    policies: Sequence[str],
    scenarios: Sequence[str],
    scenario_first: bool = False,
) -> list[Mapping[str, object]]:
    """``rows`` in the report's order: by policy then scenario (or scenario then policy).

    Rows of a policy or scenario not listed go last.
    """
    order = {
        (p, s): (si, pi) if scenario_first else (pi, si)
        for pi, p in enumerate(policies)
        for si, s in enumerate(scenarios)
    }
    return sorted(
        rows,
        key=lambda r: order.get((str(r.get("policy")), str(r.get("scenario"))), (10**9, 10**9)),
    )


def _vault_blocks(
    by_scenario: Sequence[Mapping[str, object]],
    policies: Sequence[str],
    scenarios: Sequence[str],
) -> list[_Block]:
    """The backstop-vault section: one row per (policy, scenario) that ran a vault, else none."""
    rows = _sorted_rows((r for r in by_scenario if _ran_vault(r)), policies, scenarios)
    if not rows:
        return []
    return [
        _Heading(2, "Backstop vault"),
        _Paragraph(
            "The vault (like Hyperliquid's HLP) takes over accounts the liquidation engine "
            "hands it, with their margin, and unwinds their positions into the book. Means over "
            "episodes: its capital at the start, its PnL at the episode's end (equity minus "
            "that capital) and as a share of it, its largest fall from peak equity, the "
            "largest position it carried at a decision's end (absolute notional at the mark), "
            "and the accounts and notional it took over."
        ),
        _Table(
            "backstop vault table: every policy that ran a vault, on each scenario",
            _VAULT_HEADER,
            tuple(_vault_row(r) for r in rows),
            (False, False) + (True,) * (len(_VAULT_HEADER) - 2),
        ),
    ]


def _allocation_row(row: Mapping[str, object]) -> tuple[str, ...]:
    """Cells of one (policy, scenario) line in the allocation table (means over episodes).

    "Against the fund held stable" is the fund at the trough over that fund less what its
    allocation earned: the same path with the allocation's earnings taken out. Signed, as
    :func:`_vault_row` prints PnL, not floored at 0.
    """
    fund = _number(row, "fund_at_trough_usd")
    pnl = _number(row, "allocation_pnl_at_trough_usd")
    stable = fund - pnl
    return (
        str(row.get("policy")),
        str(row.get("scenario")),
        _usd(fund),
        _usd(pnl),
        f"x{fund / stable:.4f}" if stable > 0 else "n/a",
        "yes" if pnl >= 0.0 else "no",
    )


def _allocation_blocks(
    by_scenario: Sequence[Mapping[str, object]],
    policies: Sequence[str],
    scenarios: Sequence[str],
) -> list[_Block]:
    """The allocation section: every scenario of each policy whose fund left stable assets.

    Issue 21's bar (the learned allocation's fund at each crash's trough at least the
    stable-only fund's), read on each episode's own path: a policy whose allocation earned or
    lost anything on some scenario gets a row for every scenario; none, no section.
    """
    moved = {  # NaN (a summary written before the metric existed) is not a move
        str(r.get("policy"))
        for r in by_scenario
        if abs(_number(r, "allocation_pnl_at_trough_usd")) > 0.0
    }
    if not moved:
        return []
    rows = _sorted_rows(
        (r for r in by_scenario if str(r.get("policy")) in moved), policies, scenarios
    )
    return [
        _Heading(2, "The fund's allocation at the trough"),
        _Paragraph(
            "Where the fund's allocation (yield, put hedges, the listed asset) left it at each "
            "scenario's trough, the step of the lowest index: the fund then, what its "
            "allocation had earned by then against holding stable assets on the same path "
            "(yield, option marks and payoffs, less every cost of moving the fund), and the "
            "fund over that fund without those earnings. Means over episodes."
        ),
        _Table(
            "allocation table: every scenario of each policy whose fund left stable assets",
            _ALLOCATION_HEADER,
            tuple(_allocation_row(r) for r in rows),
            (False, False) + (True,) * (len(_ALLOCATION_HEADER) - 3) + (False,),
        ),
    ]


@dataclass(frozen=True)
class _SeedRows:
    """One multi-seed policy's ``seeds.csv`` rows, looked up by what they describe."""

    rows: dict[tuple[object, ...], Mapping[str, object]]

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, object]]) -> _SeedRows:
        keys = ("metric", "scenario", "statistic", "reference", "seed")
        return cls({tuple(r.get(k) for k in keys): r for r in rows})

    def value(self, metric: str, scenario: str, statistic: str, reference: str = "") -> float:
        """The statistic's value; NaN when the evaluation did not record it."""
        return _number(self.rows.get((metric, scenario, statistic, reference, "")), "value")

    def cell(
        self,
        metric: str,
        scenario: str,
        statistic: str,
        fmt: Callable[[float], str],
        reference: str = "",
        seed: object = "",
    ) -> str:
        """``value [low, high]`` (``value`` alone for a statistic without an interval)."""
        row = self.rows.get((metric, scenario, statistic, reference, seed))
        value = fmt(_number(row, "value"))
        low, high = _number(row, "ci_low"), _number(row, "ci_high")
        if math.isnan(low) or math.isnan(high):
            return value
        return f"{value} [{fmt(low)}, {fmt(high)}]"

    def worst_seed(self, scenario: str) -> str:
        """The seed with the highest mean user loss on ``scenario``."""
        for metric, label, statistic, _reference, seed in self.rows:
            if (metric, label, statistic) == (_LOSS, scenario, "worst_seed"):
                return str(seed)
        return NOT_AVAILABLE

    def yes_no(self, scenario: str, reference: str) -> str:
        """Whether the worst seed's user loss is no worse than ``reference``'s."""
        flag = self.value(_LOSS, scenario, "worst_seed_no_worse", reference)
        return NOT_AVAILABLE if math.isnan(flag) else ("yes" if flag else "no")


_LOSS, _CAPITAL = "solvency_loss_usd", "mean_capital_locked_usd"

_SEEDS_INTRO = (
    "Each seed of a multi-seed training ran as its own policy (NAME@seed_S) on the same "
    "episodes. IQM is the interquartile mean across seeds of each seed's mean (the middle half "
    "of the seeds); P(improvement) is the probability that a seed's episode has less user loss "
    "than the reference's (Mann-Whitney over episode pairs, ties one half, averaged over "
    "seeds); P(loss > reference) is the share of episodes on which a seed's user loss is above "
    "the reference's on the same episode. Intervals: 95% percentile bootstrap, seeds and "
    "episodes resampled within each scenario (docs/seeds.md). Over all scenarios (ALL), a "
    "seed's score is its mean over scenarios and the probabilities are means over scenarios. "
    "A seed's user loss over the reference's has a paired interval: the episodes resampled "
    "alike for both, the seed kept, so it says whether that seed is distinguishably worse."
)


def _seed_blocks(seeds: Mapping[str, Mapping[str, Any]]) -> list[_Block]:
    """The section on multi-seed policies: IQM, probabilities and spread across seeds.

    ``seeds`` is the summary's ``seeds`` entry (group -> its seeds, references and the rows of
    ``seeds.csv``, :func:`fundgym.agents.evaluate.evaluation.seed_statistics`).
    """
    if not seeds:
        return []
    blocks: list[_Block] = [_Heading(2, "Across training seeds"), _Paragraph(_SEEDS_INTRO)]
    for group, entry in seeds.items():
        rows: Sequence[Mapping[str, object]] = entry.get("rows") or []
        look = _SeedRows.of(rows)
        refs = [str(r) for r in entry.get("references") or []]
        labels = list(dict.fromkeys(str(r.get("scenario")) for r in rows))
        seed_list = list(entry.get("seeds") or [])
        blocks.append(_Heading(3, f"{group}: {_count(len(seed_list), 'seed')}"))
        header = ["scenario", "user loss IQM", "capital locked IQM", "seeds' user loss"]
        ref = refs[0] if refs else None
        if ref is not None:
            header += [f"P(improvement) vs {ref}", f"P(loss > {ref})", f"worst seed <= {ref}"]
        table: list[tuple[str, ...]] = []
        for label in labels:
            spread = (
                f"{look.cell(_LOSS, label, 'seed_min', _usd)} to "
                f"{look.cell(_LOSS, label, 'seed_max', _usd)} "
                f"(worst: seed {look.worst_seed(label)})"
            )
            line = [
                label,
                look.cell(_LOSS, label, "iqm", _usd),
                look.cell(_CAPITAL, label, "iqm", _usd),
                spread,
            ]
            if ref is not None:
                line += [
                    look.cell(_LOSS, label, "probability_of_improvement", _pct, ref),
                    look.cell(_LOSS, label, "probability_exceeds", _pct, ref),
                    look.yes_no(label, ref),
                ]
            table.append(tuple(line))
        blocks.append(
            _Table(
                f"{group} across seeds: interquartile means, probabilities and spread",
                tuple(header),
                tuple(table),
                (False,)
                + (True,) * (len(header) - 1 - (ref is not None))
                + (False,) * (ref is not None),
            )
        )
        per_seed = tuple(
            (
                str(sd),
                look.cell(_LOSS, "ALL", "seed_mean", _usd, seed=sd),
                look.cell(_CAPITAL, "ALL", "seed_mean", _usd, seed=sd),
            )
            + (() if ref is None else (look.cell(_LOSS, "ALL", "seed_ratio", _times, ref, sd),))
            for sd in seed_list
        )
        blocks.append(
            _Table(
                f"{group}: each seed over all scenarios",
                ("seed", "user loss", "capital locked")
                + (() if ref is None else (f"user loss / {ref}'s (paired 95%)",)),
                per_seed,
                (False, True, True) + (() if ref is None else (True,)),
            )
        )
        if len(refs) > 1:
            versus = tuple(
                (
                    r,
                    look.cell(_LOSS, "ALL", "probability_of_improvement", _pct, r),
                    look.cell(_LOSS, "ALL", "probability_exceeds", _pct, r),
                    look.yes_no("ALL", r),
                )
                for r in refs
            )
            blocks.append(
                _Table(
                    f"{group} against every compared policy, user loss over all scenarios",
                    ("reference", "P(improvement)", "P(loss > reference)", "worst seed no worse"),
                    versus,
                    (False, True, True, False),
                )
            )
    return blocks


def _build_blocks(
    *,
    by_scenario: Sequence[Mapping[str, object]],
    by_policy: Sequence[Mapping[str, object]],
    policies: Sequence[str],
    scenarios: Sequence[str],
    meta: Mapping[str, Any],
    figures: Mapping[str, _Image],
    missing_traces: Sequence[str],
) -> list[_Block]:
    """The report's sections, in order, as renderer-neutral blocks."""
    reference = meta.get("reference")
    objective = meta.get("objective") or {}
    episodes = meta.get("episodes")
    blocks: list[_Block] = [
        _Heading(1, "fundgym evaluation report"),
        _Paragraph(
            "Every policy ran on the same scenarios with the same seeds; means come with "
            f"{SUMMARY_LEVEL:.0%} intervals over episodes."
        ),
        _Code(str(meta.get("command", ""))),
        _Items(
            (
                ("created (UTC)", f": {meta.get('created_utc', NOT_AVAILABLE)}"),
                (
                    "episodes",
                    f": {episodes} per policy x scenario; {_count(len(scenarios), 'scenario')} "
                    f"({', '.join(scenarios)}); {_count(len(policies), 'policy', 'policies')}",
                ),
                ("seed", f": {meta.get('seed', NOT_AVAILABLE)}"),
                ("horizon", f": {meta.get('horizon_note', NOT_AVAILABLE)}"),
                ("reference policy", f": {reference if reference else 'none'}"),
            )
        ),
        _Heading(2, "Headline: all scenarios"),
    ]
    lines = {str(r.get("policy")): r for r in by_policy}
    blocks.append(
        _Table(
            "headline table: every policy over all scenarios",
            _HEADLINE_HEADER,
            tuple(_headline_row(lines[p], _number(objective, p)) for p in policies if p in lines),
            (False,) + (True,) * (len(_HEADLINE_HEADER) - 1),
        )
    )
    blocks.append(_Heading(2, f"Dominance vs {reference}" if reference else "Dominance"))
    if reference:
        blocks.append(
            _Paragraph(
                f"A policy dominates {reference} if its solvency loss is at most "
                f"{LOSS_RULE_MAX_RATIO:.0%} of the reference's with no more capital locked "
                f"(rule: loss), or no more loss with capital at most "
                f"{CAPITAL_RULE_MAX_RATIO:.0%} of the reference's (rule: capital). Ratios are "
                "candidate / reference on the all-scenario means. Gap closure is the share of "
                "the mean-reward gap between best_static and hindsight_static a policy closes "
                "(100% = matches hindsight)."
            )
        )
        items = _dominance_items(
            policies, str(reference), meta.get("dominance") or {}, meta.get("gap_closure") or {}
        )
        blocks.append(_Items(items) if items else _Paragraph("No other policy was evaluated."))
    else:
        blocks.append(_Paragraph("No reference policy: dominance was not assessed."))
    blocks += _seed_blocks(meta.get("seeds") or {})
    blocks.append(_Heading(2, "Solvency vs capital efficiency"))
    blocks.append(figures["scatter"])
    blocks.append(_Heading(2, "Per scenario"))
    rows = _sorted_rows(by_scenario, policies, scenarios, scenario_first=True)
    blocks.append(
        _Table(
            "per-scenario table: every policy on each scenario",
            _SCENARIO_HEADER,
            tuple(_scenario_row(r) for r in rows),
            (False, False) + (True,) * (len(_SCENARIO_HEADER) - 2),
        )
    )
    blocks.append(figures["bars"])
    blocks += _vault_blocks(by_scenario, policies, scenarios)
    blocks += _allocation_blocks(by_scenario, policies, scenarios)
    blocks.append(_Heading(2, "Episode 0 of each scenario"))
    for scenario in scenarios:
        for kind in ("timeseries", "losses"):
            if f"{kind}_{scenario}" in figures:
                blocks.append(figures[f"{kind}_{scenario}"])
    if missing_traces:
        blocks.append(
            _Paragraph(f"No episode trace was recorded for: {', '.join(missing_traces)}.")
        )
    notes: Mapping[str, object] = meta.get("policy_notes") or {}
    noted = tuple((p, f": {notes[p]}") for p in policies if p in notes)
    if noted:
        blocks.append(_Heading(2, "Policies"))
        blocks.append(_Items(noted))
    blocks.append(_Heading(2, "Metric definitions"))
    blocks.append(_Items(_GLOSSARY))
    return blocks


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_report(
    out_dir: Path,
    *,
    by_scenario: list[Row],
    by_policy: list[Row],
    traces: dict[tuple[str, str], EpisodeRecord],
    meta: dict[str, Any],
) -> dict[str, Path]:
    """Write the evaluation report: figures, ``report.md`` and a self-contained ``report.html``.

    Figures go to ``out_dir/plots``: for each scenario that has at least one trace,
    ``timeseries_<scenario>.png`` and ``losses_<scenario>.png`` (cumulative user loss; a
    missing (policy, scenario) trace is skipped, since the tables do not need it), then
    ``scenario_bars.png`` and ``scatter.png``. Policies and scenarios appear in the order of
    ``meta["policies"]`` and ``meta["scenarios"]`` (others after, as first seen), and each
    policy keeps one colour in every figure. A scenario with a known real start
    (``meta["scenario_start_utc"]``) is drawn against UTC dates, the others against hours.

    Args:
        out_dir: Existing folder to write into.
        by_scenario: Summary lines from :func:`fundgym.agents.evaluate.metrics.summarize`.
        by_policy: Summary lines from :func:`fundgym.agents.evaluate.metrics.summarize_policies`.
        traces: (policy, scenario) -> the record of that pair's first episode.
        meta: Run description: ``command``, ``created_utc``, ``episodes``, ``seed``,
            ``scenarios``, ``policies``, ``horizon_note``, ``reference`` (or None),
            ``dominance`` (policy -> :func:`fundgym.agents.evaluate.metrics.dominates` result),
            ``gap_closure`` (policy -> fraction or None), ``objective`` (policy -> mean
            reward), ``policy_notes`` (policy -> one line) and, optionally,
            ``scenario_start_utc`` (scenario -> its ``Scenario.start_utc``, an ISO 8601 UTC
            timestamp of its minute 0, or None) and ``seeds`` (the statistics across seeds
            of each multi-seed policy, :func:`fundgym.agents.evaluate.evaluation.
            seed_statistics`; a section "Across training seeds" when not empty).

    Returns:
        Paths written: ``report_md``, ``report_html``, ``scatter``, ``bars``, and
        ``timeseries_<scenario>`` and ``losses_<scenario>`` for each scenario plotted.

    Raises:
        ValueError: If ``out_dir`` is not an existing folder, ``by_policy`` or
            ``by_scenario`` is empty, or a ``scenario_start_utc`` is not an ISO 8601
            timestamp with its zone.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"out_dir must be an existing folder, got {str(out_dir)!r}")
    if not by_policy:
        raise ValueError("by_policy is empty: there is no policy summary to report")
    if not by_scenario:
        raise ValueError("by_scenario is empty: there is no scenario summary to report")
    policies = _ordered(
        meta.get("policies") or [],
        [str(r.get("policy")) for r in [*by_policy, *by_scenario]] + [p for p, _s in traces],
    )
    scenarios = _ordered(
        meta.get("scenarios") or [],
        [str(r.get("scenario")) for r in by_scenario] + [s for _p, s in traces],
    )
    starts: Mapping[str, str | None] = meta.get("scenario_start_utc") or {}
    time_axes = {s: TimeAxis.of(starts.get(s), f"scenario {s!r}") for s in scenarios}
    colours = _colours(policies)
    plots_dir = out_dir / PLOTS_DIRNAME
    plots_dir.mkdir(exist_ok=True)

    figures: dict[str, _Image] = {}
    missing: list[str] = []
    used_names: set[str] = set()
    for scenario in scenarios:
        recs = {p: traces[(p, scenario)] for p in policies if (p, scenario) in traces}
        if not recs:
            missing.append(scenario)
            continue
        name = _safe_filename(scenario)
        while name in used_names:
            name += "_"
        used_names.add(name)
        time = time_axes[scenario]
        path = plots_dir / f"timeseries_{name}.png"
        save_atomic(timeseries_figure(scenario, recs, colours, time), path)
        figures[f"timeseries_{scenario}"] = _timeseries_image(scenario, recs, time, path)
        path = plots_dir / f"losses_{name}.png"
        save_atomic(user_loss_figure(scenario, recs, colours, time), path)
        figures[f"losses_{scenario}"] = _losses_image(scenario, recs, time, path)
    path = plots_dir / "scenario_bars.png"
    save_atomic(scenario_bars_figure(by_scenario, scenarios, policies, colours), path)
    figures["bars"] = _bars_image(by_scenario, scenarios, policies, path)
    path = plots_dir / "scatter.png"
    reference = meta.get("reference")
    save_atomic(scatter_figure(by_policy, policies, colours, reference), path)
    figures["scatter"] = _scatter_image(by_policy, policies, reference, path)

    blocks = _build_blocks(
        by_scenario=by_scenario,
        by_policy=by_policy,
        policies=policies,
        scenarios=scenarios,
        meta=meta,
        figures=figures,
        missing_traces=missing,
    )
    written = {key: figure.path for key, figure in figures.items()}
    written["report_md"] = out_dir / "report.md"
    write_text_atomic(written["report_md"], _render_markdown(blocks, out_dir))
    written["report_html"] = out_dir / "report.html"
    write_text_atomic(written["report_html"], _render_html(blocks, "fundgym evaluation report"))
    return written
