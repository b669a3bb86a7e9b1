"""Figures: a scenario's prices and depth, and a simulated crash's fund and liquidations.

Matplotlib runs headless (Agg); every figure is written atomically (a temporary file renamed
into place) so a failed run never leaves a half-written PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fundgym.agents.outputs import temp_sibling

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def save_atomic(fig: Any, out: Path) -> None:
    """Save ``fig`` to ``out`` through a temporary file in the same folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
        tmp.replace(out)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def plot_scenario(columns: dict[str, FloatArray], title: str, out: Path) -> None:
    """Price (index, last, mark, oracle), depth and funding of one sampled scenario path."""
    hours = columns["time_min"] / 60.0
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True, height_ratios=[3, 1.3, 1])
    ax = axes[0]
    ax.plot(hours, columns["last_price"], color="0.7", lw=0.8, label="venue last")
    ax.plot(hours, columns["index_price"], color="tab:blue", lw=1.0, label="index")
    ax.plot(hours, columns["mark_price"], color="tab:orange", lw=1.0, ls="--", label="mark")
    ax.plot(hours, columns["oracle_price"], color="tab:red", lw=1.0, ls=":", label="oracle")
    if columns["mark_price"].max() / max(columns["mark_price"].min(), 1e-300) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("price (USD)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    axes[1].plot(hours, columns["depth_usd"] / 1e6, color="tab:green", lw=1.0)
    axes[1].set_ylabel("depth\n($M per 1%)")
    if "precursor" in columns and columns["precursor"].max() > 0:
        twin = axes[1].twinx()
        twin.fill_between(hours, columns["precursor"], color="tab:purple", alpha=0.15, lw=0)
        twin.set_ylabel("precursor", color="tab:purple", fontsize=8)
        twin.set_ylim(0, 1)
    axes[2].plot(hours, columns["funding_rate"] * 100, color="tab:brown", lw=1.0)
    axes[2].set_ylabel("funding\n(% per 8 h)")
    axes[2].set_xlabel("hours")
    save_atomic(fig, out)


def plot_crash(
    hours: FloatArray,
    mark: FloatArray,
    oracle: FloatArray,
    depth: FloatArray,
    runs: dict[str, dict[str, FloatArray]],
    title: str,
    out: Path,
) -> None:
    """Price and depth, then fund balance and liquidation volume per tick for each run."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, height_ratios=[2, 1.5, 1.5])
    axes[0].plot(hours, mark, color="tab:orange", lw=1.0, label="mark")
    axes[0].plot(hours, oracle, color="tab:red", lw=0.8, ls=":", label="oracle")
    axes[0].set_ylabel("price (USD)")
    twin = axes[0].twinx()
    twin.fill_between(hours, depth / 1e6, color="tab:green", alpha=0.15, lw=0)
    twin.set_ylabel("depth ($M per 1%)", color="tab:green", fontsize=8)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title(title)
    for name, run in runs.items():
        axes[1].plot(hours, run["fund_usd"] / 1e6, lw=1.0, label=name)
        axes[2].plot(hours, run["liquidation_volume_usd"] / 1e6, lw=0.8, label=name)
    axes[1].set_ylabel("insurance fund ($M)")
    axes[1].legend(loc="best", fontsize=8)
    axes[2].set_ylabel("liquidations\n($M per tick)")
    axes[2].set_xlabel("hours")
    save_atomic(fig, out)
