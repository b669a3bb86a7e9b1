"""Figures and what every figure shares: time axes, label placement, atomic saving.

* :func:`plot_scenario` and :func:`plot_crash` draw a scenario's market path and a simulated
  crash (``fundgym scenarios plot``, ``fundgym simulate``); :mod:`.report` draws the
  evaluation report's figures with the helpers below.
* :class:`TimeAxis` puts time on the x axis: real UTC dates and times when the path's start is
  known (a historical crash, ``Scenario.start_utc``), else hours since the start. A reader
  who lived through 12 March 2020 recognises "03-12 13:00", not "hour 2".
* :func:`place_labels` names points beside them without two names (or a name and a point)
  overlapping: a greedy search over positions around each point.
* :func:`unclutter_xticks` turns category names on an x axis aslant when they would overlap.

Matplotlib runs headless (Agg); every figure is written atomically (a temporary file renamed
into place) so a failed run never leaves a half-written PNG.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from fundgym.agents.outputs import temp_sibling
from fundgym.envs.scenarios import parse_start_utc

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Resolution of every saved figure (dots per inch).
SAVE_DPI = 110


def save_atomic(fig: Any, out: Path) -> None:
    """Save ``fig`` to ``out`` through a temporary file in the same folder, then close it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=SAVE_DPI, bbox_inches="tight")
        tmp.replace(out)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# Time axes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeAxis:
    """How minutes since the start of a path are drawn on an x axis.

    Attributes:
        start_utc: The real instant of minute 0 (an aware datetime), or None: then the axis
            counts hours since the start.
        origin: What minute 0 is, for the axis label ("episode start", "path start").
    """

    start_utc: dt.datetime | None = None
    origin: str = "episode start"

    @classmethod
    def of(cls, start_utc: str | None, what: str, origin: str = "episode start") -> TimeAxis:
        """The axis of a path whose minute 0 is ``start_utc`` (a ``Scenario.start_utc``).

        Args:
            start_utc: ISO 8601 UTC timestamp ending in Z (``"2025-10-10T14:00:00Z"``), or
                None for a synthetic path.
            what: Whose timestamp it is (a scenario), for the error message.
            origin: What minute 0 is, for the axis label.

        Raises:
            ValueError: If ``start_utc`` is not such a timestamp; the message names ``what``,
                the value and what is allowed.
        """
        if start_utc is None:
            return cls(None, origin)
        try:
            start = parse_start_utc(start_utc)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"start_utc of {what} must be an ISO 8601 UTC timestamp ending in Z, such as "
                f'"2025-10-10T14:00:00Z"; got {start_utc!r} ({exc})'
            ) from None
        return cls(start, origin)

    def x(self, minutes: FloatArray | Sequence[float]) -> np.ndarray[Any, Any]:
        """Axis coordinates of ``minutes``: hours, or UTC datetimes (``datetime64[ms]``)."""
        mins = np.asarray(minutes, dtype=np.float64)
        if self.start_utc is None:
            return mins / 60.0
        # datetime64 is naive; matplotlib reads it as UTC, and the axis is formatted in UTC.
        start = np.datetime64(self.start_utc.replace(tzinfo=None), "ms")
        return start + np.rint(mins * 60_000.0).astype("timedelta64[ms]")

    def at(self, minutes: float) -> str:
        """``minutes`` as text for captions: a UTC date and time, or hours since the start."""
        if self.start_utc is None:
            return f"{minutes / 60.0:.3g} h after the {self.origin}"
        return f"{self.start_utc + dt.timedelta(minutes=minutes):%Y-%m-%d %H:%M} UTC"

    def span(self, first_minutes: float, last_minutes: float) -> str:
        """The stretch of time drawn, for captions and alt texts."""
        if self.start_utc is None:
            return (
                f"{first_minutes / 60.0:.3g} to {last_minutes / 60.0:.3g} h after the {self.origin}"
            )
        return f"{self.at(first_minutes)} to {self.at(last_minutes)}"

    def format(self, ax: Axes) -> None:
        """Ticks and label of ``ax``'s x axis (the bottom axes of a shared column)."""
        if self.start_utc is None:
            ax.set_xlabel(f"hours since {self.origin}")
            return
        locator = mdates.AutoDateLocator(tz=dt.UTC, minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        # No offset text ("2025-Oct-10" under the last tick): it would collide with the axis
        # label, which already names the start date.
        formatter = mdates.ConciseDateFormatter(locator, tz=dt.UTC, show_offset=False)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(formatter)
        ax.set_xlabel(f"time (UTC); {self.origin} {self.start_utc:%Y-%m-%d %H:%M} UTC")


# --------------------------------------------------------------------------------------------
# Labels that do not collide
# --------------------------------------------------------------------------------------------

# Directions tried around a point, in order of preference: level with it on the right (a
# label beside its point reads unambiguously even among close neighbours), the right-hand
# diagonals, the same on the left, then above and below.
_DIRECTIONS: tuple[tuple[float, float], ...] = (
    (1.0, 0.0),
    (1.0, 1.0),
    (1.0, -1.0),
    (-1.0, 0.0),
    (-1.0, 1.0),
    (-1.0, -1.0),
    (0.0, 1.0),
    (0.0, -1.0),
)
# Distance (points) of a label from its point on ring k: half the marker, a gap, then k steps.
LABEL_GAP_PT = 1.5
LABEL_STEP_PT = 9.0
LABEL_RINGS = 12
# Half-width (pixels) of the strip kept clear along a segment (an error bar is ~1 px wide).
SEGMENT_PAD_PX = 1.5


def _overlap_area(a: Bbox, b: Bbox) -> float:
    """Area (px^2) shared by two boxes; 0 when they only touch or are apart."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0.0 and h > 0.0 else 0.0


def _outside_area(box: Bbox, frame: Bbox) -> float:
    """Area (px^2) of ``box`` that lies outside ``frame``."""
    return box.width * box.height - _overlap_area(box, frame)


def place_labels(
    ax: Axes,
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    *,
    keep_clear: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
    marker_pt: float = 9.0,
    fontsize: float = 9.0,
) -> list[Annotation]:
    """Name each point with a label placed where it covers no other label, point or bar.

    Policies that behave alike land on (almost) the same spot, and a fixed offset prints
    their names over one another. Labels are placed one by one, in the given order (the
    first gets the best spot): around its point, on rings of growing distance, the first of
    eight directions whose box overlaps no label placed before, no point's marker, no
    ``keep_clear`` segment (error bars) and does not leave the axes wins; when none is free,
    the one with the least overlap. A label away from its point gets a thin leader line to it.

    Call it after the axes' limits and scales are final: positions are worked out in pixels.

    Args:
        ax: Axes whose data coordinates ``points`` are in.
        points: (x, y) of each point, in data coordinates.
        labels: Text of each point's label.
        keep_clear: Line segments ((x0, y0), (x1, y1)) in data coordinates that labels should
            not cover, such as error bars.
        marker_pt: Size (points) of the square kept clear around every point.
        fontsize: Label font size (points).

    Returns:
        The annotations, in the order of ``points``.
    """
    fig = ax.get_figure()
    assert isinstance(fig, Figure), "place_labels needs axes that belong to a figure"
    px_per_pt = fig.dpi / 72.0
    frame = ax.get_window_extent()
    xy_px = ax.transData.transform(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    half = 0.5 * marker_pt * px_per_pt
    taken = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in xy_px]
    for start, end in keep_clear:
        (x0, y0), (x1, y1) = ax.transData.transform(np.asarray([start, end], dtype=np.float64))
        pad = SEGMENT_PAD_PX
        taken.append(
            Bbox.from_extents(
                min(x0, x1) - pad, min(y0, y1) - pad, max(x0, x1) + pad, max(y0, y1) + pad
            )
        )
    annotations: list[Annotation] = []
    for (px, py), point, label in zip(xy_px, points, labels, strict=True):
        probe = ax.text(0.0, 0.0, label, fontsize=fontsize)
        extent = probe.get_window_extent()
        probe.remove()
        w, h = extent.width, extent.height
        best: tuple[float, int, float, float] | None = None
        for ring in range(LABEL_RINGS):
            dist_px = (0.5 * marker_pt + LABEL_GAP_PT + ring * LABEL_STEP_PT) * px_per_pt
            for cx, cy in _DIRECTIONS:
                # Anchor corner at the offset; the box extends away from the point.
                ax0 = px + cx * dist_px - (w if cx < 0 else w / 2 if cx == 0 else 0.0)
                ay0 = py + cy * dist_px - (h if cy < 0 else h / 2 if cy == 0 else 0.0)
                box = Bbox.from_bounds(ax0, ay0, w, h)
                clash = sum(_overlap_area(box, other) for other in taken)
                clash += 10.0 * _outside_area(box, frame)
                if best is None or clash < best[0]:
                    best = (clash, ring, ax0, ay0)
                if clash == 0.0:
                    break
            if best is not None and best[0] == 0.0:
                break
        assert best is not None
        _clash, ring, x0, y0 = best
        taken.append(Bbox.from_bounds(x0, y0, w, h))
        # Text anchored at its lower-left corner, offset from the point in points.
        offset = ((x0 - px) / px_per_pt, (y0 - py) / px_per_pt)
        annotations.append(
            ax.annotate(
                label,
                point,
                xytext=offset,
                textcoords="offset points",
                ha="left",
                va="bottom",
                fontsize=fontsize,
                zorder=4,
                arrowprops=(
                    {"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 0, "shrinkB": 3}
                    if ring > 0
                    else None
                ),
            )
        )
    return annotations


# Tick label layouts tried in turn: horizontal, slanted (anchored at its end), upright.
_TICK_LAYOUTS: tuple[tuple[float, Literal["left", "center", "right"]], ...] = (
    (0.0, "center"),
    (30.0, "right"),
    (90.0, "center"),
)


def unclutter_xticks(axes: Sequence[Axes]) -> None:
    """Slant the x tick labels of ``axes`` (30 degrees, then upright) while neighbours overlap.

    Scenario names are long ("black_thursday_2020", "oracle_manipulation"); side by side under
    narrow groups of bars they run into each other. Horizontal labels are kept when they fit.
    The axes of one figure share the layout, so each try costs one draw.
    """
    fig = axes[0].get_figure()
    assert isinstance(fig, Figure), "unclutter_xticks needs axes that belong to a figure"
    for rotation, ha in _TICK_LAYOUTS:
        for ax in axes:
            for tick in ax.get_xticklabels():
                tick.set_rotation(rotation)
                tick.set_horizontalalignment(ha)
                tick.set_rotation_mode("anchor" if 0.0 < rotation < 90.0 else "default")
        fig.canvas.draw()
        if not any(
            _overlap_area(a, b) > 0.0
            for ax in axes
            for a, b in itertools.pairwise(
                t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()
            )
        ):
            return


# --------------------------------------------------------------------------------------------
# Scenario and simulator figures
# --------------------------------------------------------------------------------------------


def plot_scenario(
    columns: dict[str, FloatArray], title: str, out: Path, *, start_utc: str | None = None
) -> None:
    """Price (index, last, mark, oracle), depth and funding of one sampled scenario path.

    Args:
        columns: Sampled market columns (``time_min``, prices, ``depth_usd``, ``funding_rate``,
            optionally ``precursor``).
        title: Figure title.
        out: PNG path.
        start_utc: The scenario's ``start_utc`` (its minute 0 in UTC), or None: the time axis
            shows dates for a historical crash, hours otherwise.
    """
    time = TimeAxis.of(start_utc, title, "path start")
    x = time.x(columns["time_min"])
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True, height_ratios=[3, 1.3, 1])
    ax = axes[0]
    ax.plot(x, columns["last_price"], color="0.7", lw=0.8, label="venue last")
    ax.plot(x, columns["index_price"], color="tab:blue", lw=1.0, label="index")
    ax.plot(x, columns["mark_price"], color="tab:orange", lw=1.0, ls="--", label="mark")
    ax.plot(x, columns["oracle_price"], color="tab:red", lw=1.0, ls=":", label="oracle")
    if columns["mark_price"].max() / max(columns["mark_price"].min(), 1e-300) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("price (USD)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    axes[1].plot(x, columns["depth_usd"] / 1e6, color="tab:green", lw=1.0)
    axes[1].set_ylabel("depth\n($M per 1%)")
    if "precursor" in columns and columns["precursor"].max() > 0:
        twin = axes[1].twinx()
        twin.fill_between(x, columns["precursor"], color="tab:purple", alpha=0.15, lw=0)
        twin.set_ylabel("precursor", color="tab:purple", fontsize=8)
        twin.set_ylim(0, 1)
    axes[2].plot(x, columns["funding_rate"] * 100, color="tab:brown", lw=1.0)
    axes[2].set_ylabel("funding\n(% per 8 h)")
    time.format(axes[2])
    save_atomic(fig, out)


def plot_markets(
    time_min: FloatArray,
    markets: dict[str, dict[str, FloatArray]],
    collateral: dict[str, dict[str, FloatArray]],
    title: str,
    out: Path,
    *,
    start_utc: str | None = None,
) -> None:
    """Every market's index and depth, and every collateral asset's prices, of one drawn path.

    The drawn (exogenous) paths of a multi-market scenario
    (:func:`fundgym.envs.market.factor.draw_markets`): the markets' indexes as a share of
    their starting price, so BTC and a $1 alt read on one axis; their depth multipliers; and
    each collateral asset's external index and venue-book price over what it redeems for, the
    gap a venue that marks collateral on its own book exposes.

    Args:
        time_min: Minutes since the path start at each tick.
        markets: Market name -> its ``index`` and ``depth_mult`` per tick.
        collateral: Asset name -> its ``redemption``, ``index`` and ``book`` per tick (may be
            empty: no panel).
        title: Figure title.
        out: PNG path.
        start_utc: The scenario's ``start_utc``, or None (see :func:`plot_scenario`).
    """
    time = TimeAxis.of(start_utc, title, "path start")
    x = time.x(time_min)
    n_panels = 3 if collateral else 2
    ratios = [3, 1.3, 2][:n_panels]
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(10, 2.6 * n_panels + 1), sharex=True, height_ratios=ratios
    )
    colors = plt.get_cmap("tab10")
    low = 1.0
    for k, (name, cols) in enumerate(markets.items()):
        rel = cols["index"] / cols["index"][0]
        low = min(low, float(rel.min()))
        axes[0].plot(x, rel * 100.0, lw=1.4 if k == 0 else 0.9, color=colors(k % 10), label=name)
        axes[1].plot(x, cols["depth_mult"], lw=0.9, color=colors(k % 10))
    if low < 0.02:
        axes[0].set_yscale("log")
    axes[0].set_ylabel("index, % of start")
    axes[0].legend(loc="best", fontsize=8, ncol=3)
    axes[0].set_title(title)
    axes[1].set_ylabel("depth\n(x normal)")
    if collateral:
        ax = axes[2]
        for k, (name, cols) in enumerate(collateral.items()):
            c = colors((k + 3) % 10)
            ax.plot(x, cols["index"] / cols["redemption"], lw=0.9, color=c, label=f"{name} index")
            ax.plot(x, cols["book"] / cols["redemption"], lw=0.9, ls="--", color=c,
                    label=f"{name} venue book")  # fmt: skip
        ax.set_ylabel("price / redemption")
        ax.legend(loc="best", fontsize=7, ncol=2)
    time.format(axes[-1])
    save_atomic(fig, out)


def plot_markets_run(
    time_min: FloatArray,
    configs: dict[str, dict[str, FloatArray]],
    index: dict[str, FloatArray],
    title: str,
    out: Path,
    *,
    start_utc: str | None = None,
) -> None:
    """What ``fundgym markets`` compared, over the episode: the funds, the users' loss, the prices.

    One line per configuration (a fund mode, a collateral price): the insurance it holds (every
    pot) as a share of its start, and the users' cumulative loss (socialised, unrecovered,
    deleveraged notional) as a share of the starting open interest, each the mean over the
    episodes; below, each market's index as a share of its start (the first configuration's
    first episode), so the crash that drives them is on the same time axis.

    Args:
        time_min: Minutes since the episode start at each tick.
        configs: Configuration label -> its ``fund_frac`` and ``user_loss_frac`` per tick.
        index: Market name -> its index per tick.
        title: Figure title.
        out: PNG path.
        start_utc: The scenario's ``start_utc``, or None (see :func:`plot_scenario`).
    """
    time = TimeAxis.of(start_utc, title)
    x = time.x(time_min)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True, height_ratios=[2, 2, 2])
    colors = plt.get_cmap("tab10")
    for k, (label, cols) in enumerate(configs.items()):
        axes[0].plot(x, cols["fund_frac"] * 100.0, lw=1.2, color=colors(k % 10), label=label)
        axes[1].plot(x, cols["user_loss_frac"] * 1e4, lw=1.2, color=colors(k % 10), label=label)
    axes[0].set_ylabel("insurance, % of start")
    axes[0].legend(loc="best", fontsize=8)
    axes[0].set_title(title)
    axes[1].set_ylabel("users' loss,\nbps of start OI")
    low = 1.0
    for k, (name, series) in enumerate(index.items()):
        rel = series / series[0]
        low = min(low, float(rel.min()))
        axes[2].plot(x, rel * 100.0, lw=1.4 if k == 0 else 0.9, color=colors(k % 10), label=name)
    if low < 0.02:
        axes[2].set_yscale("log")
    axes[2].set_ylabel("index, % of start")
    axes[2].legend(loc="best", fontsize=7, ncol=3)
    time.format(axes[-1])
    save_atomic(fig, out)


def plot_crash(
    hours: FloatArray,
    mark: FloatArray,
    oracle: FloatArray,
    depth: FloatArray,
    runs: dict[str, dict[str, FloatArray]],
    title: str,
    out: Path,
    *,
    start_utc: str | None = None,
) -> None:
    """Price and depth, then fund balance and liquidation volume per tick for each run.

    Args:
        hours: Hours since the path start at each tick.
        mark: Mark price per tick.
        oracle: Oracle price per tick.
        depth: Book depth (USD per 1% move) per tick.
        runs: Run name -> its ``fund_usd`` and ``liquidation_volume_usd`` per tick.
        title: Figure title.
        out: PNG path.
        start_utc: The scenario's ``start_utc`` (its minute 0 in UTC), or None: the time axis
            shows dates for a historical crash, hours otherwise.
    """
    time = TimeAxis.of(start_utc, title, "path start")
    x = time.x(np.asarray(hours, dtype=np.float64) * 60.0)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, height_ratios=[2, 1.5, 1.5])
    axes[0].plot(x, mark, color="tab:orange", lw=1.0, label="mark")
    axes[0].plot(x, oracle, color="tab:red", lw=0.8, ls=":", label="oracle")
    axes[0].set_ylabel("price (USD)")
    twin = axes[0].twinx()
    twin.fill_between(x, depth / 1e6, color="tab:green", alpha=0.15, lw=0)
    twin.set_ylabel("depth ($M per 1%)", color="tab:green", fontsize=8)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title(title)
    for name, run in runs.items():
        axes[1].plot(x, run["fund_usd"] / 1e6, lw=1.0, label=name)
        axes[2].plot(x, run["liquidation_volume_usd"] / 1e6, lw=0.8, label=name)
    axes[1].set_ylabel("insurance fund ($M)")
    axes[1].legend(loc="best", fontsize=8)
    axes[2].set_ylabel("liquidations\n($M per tick)")
    time.format(axes[2])
    save_atomic(fig, out)
