"""agents.evaluate.report: figures, report.md and a self-contained report.html from summaries.

The episodes are hand-built so that the summaries' means (and some intervals) are round numbers
worked out in the comments; the report must print exactly those.
"""

import base64
import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from fundgym.agents.evaluate.metrics import (
    STEP_FIELDS,
    EpisodeRecord,
    Row,
    dominates,
    episode_metrics,
    summarize,
    summarize_policies,
)
from fundgym.agents.evaluate.plots import TimeAxis, place_labels, plot_crash, plot_scenario
from fundgym.agents.evaluate.report import (
    _colours,
    scatter_figure,
    scenario_bars_figure,
    timeseries_figure,
    user_loss_figure,
    write_report,
)
from fundgym.envs.scenarios import load_scenario

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCENARIOS = ["flash_crash", "slow_bleed"]
POLICIES = ["best_static", "ppo", "aggressive"]


def make_record(
    policy: str,
    scenario: str,
    episode: int,
    *,
    socialized_usd: float = 0.0,
    adl_usd: float = 0.0,
    capital_usd: float = 10_000_000.0,
    exhausted: bool = False,
    params: bool = True,
    terminated: bool = False,
    vault_pnl_usd: float | None = None,
    fund_external_pnl_usd: Sequence[float] | None = None,
) -> EpisodeRecord:
    """4 steps of 15 min; the loss (if any) lands in step 2, the fund empties if ``exhausted``.

    A ``terminated`` episode ends insolvent after step 2 (45 min), its fund empty. With
    ``vault_pnl_usd`` a $2M backstop vault runs: it takes over 2 accounts ($600k) in step 1,
    carries a $600k long then a $250k short, falls to $1.8M (10% drawdown) and ends at its
    capital plus ``vault_pnl_usd``; without it, no vault runs (every vault series is 0).
    Outside liquidators absorb $500k of the $2M liquidated in step 1. The index is lowest at
    step 2 (70); ``fund_external_pnl_usd`` is what the fund's allocation earned each step
    (default none: a fund held in stable assets).
    """
    fund = [4e6, 3e6, 0.0, 0.0] if exhausted or terminated else [4e6, 3e6, 2.5e6, 2.5e6]
    zeros = [0.0] * 4
    vault = vault_pnl_usd is not None
    rec = EpisodeRecord(
        policy=policy,
        scenario=scenario,
        episode=episode,
        seed=100 + episode,
        initial_open_interest_usd=1e8,
        initial_fund_usd=5e6,
        initial_vault_usd=2e6 if vault else 0.0,
        time_minutes=[15.0, 30.0, 45.0, 60.0],
        fund_balance_usd=fund,
        open_interest_usd=[1e8, 9e7, 8e7, 8e7],
        capital_locked_usd=[capital_usd] * 4,
        mark_price=[100.0, 80.0, 70.0, 75.0],
        liquidation_volume_usd=[0.0, 2e6, 5e6, 1e6],
        shortfall_usd=[0.0, 1e6, 5e5, 0.0],
        adl_volume_usd=[0.0, 0.0, adl_usd, 0.0],
        socialized_loss_usd=[0.0, 0.0, socialized_usd, 0.0],
        unrecovered_usd=[0.0, 0.0, 0.0, 0.0],
        fee_revenue_usd=[1e4, 2e4, 3e4, 1e4],
        adl_haircut_usd=zeros,
        adl_overshoot_usd=zeros,
        liquidator_absorbed_usd=[0.0, 5e5, 0.0, 0.0],
        vault_pnl_usd=[0.0, -1e5, -2e5, vault_pnl_usd] if vault_pnl_usd is not None else zeros,
        vault_drawdown_frac=[0.0, 0.05, 0.1, 0.1] if vault else zeros,
        vault_peak_inventory_usd=[0.0, 6e5, 6e5, 6e5] if vault else zeros,
        vault_takeovers=[0.0, 2.0, 0.0, 0.0] if vault else zeros,
        vault_takeover_usd=[0.0, 6e5, 0.0, 0.0] if vault else zeros,
        vault_adl_usd=[0.0, 2e5, 0.0, 0.0] if vault else zeros,
        index_price=[100.0, 80.0, 70.0, 75.0],
        fund_external_pnl_usd=zeros if fund_external_pnl_usd is None else fund_external_pnl_usd,
        reward=[-0.1, -0.2, -0.3, -0.1],
        cost=[0.0, 0.0, 0.0, 0.0],
        params=(
            {"mmr": [0.03, 0.03, 0.04, 0.04], "liquidation_fee_rate": [0.015] * 4} if params else {}
        ),
        positions=[[0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.5, 0.5]] if params else [],
    )
    if not terminated:
        return rec
    fields = {f: getattr(rec, f)[:3] for f in STEP_FIELDS}
    return dataclasses.replace(
        rec,
        **fields,
        params={k: v[:3] for k, v in rec.params.items()},
        positions=rec.positions[:3],
        terminated=True,
    )


# Socialised loss of each flash_crash episode; slow_bleed has none for every policy.
# best_static: mean 1,500,000, s = 500,000; t(0.975, 2) = 4.302652729749464 (published),
#   half = 4.302652729749464 * 500,000 / sqrt(3) = 1,242,068.86 -> [$257,931, $2,742,069].
#   Over all 6 episodes: (1.0 + 1.5 + 2.0) M / 6 = $750,000.
# ppo: flash mean 500,000; all-scenario mean 250,000: 33.3% of 750,000 with capital 9M vs 10M
#   (90.0%) -> dominates by rule "loss".
# aggressive: 1.2M in every flash episode (interval [1.2M, 1.2M]); all-scenario 600,000 (80.0%)
#   with capital 12M (120.0%) -> does not dominate. Its fund empties in every flash episode:
#   P = 3/3, Wilson low (z = 1.959964, n = 3): centre = (1 + z^2/6) / (1 + z^2/3) = 0.71925,
#   half = z sqrt(z^2/36) / (1 + z^2/3) = 0.28075 -> 43.9%, high 100%.
FLASH_LOSSES = {
    "best_static": [1_000_000.0, 1_500_000.0, 2_000_000.0],
    "ppo": [400_000.0, 500_000.0, 600_000.0],
    "aggressive": [1_200_000.0, 1_200_000.0, 1_200_000.0],
}
CAPITAL = {"best_static": 10_000_000.0, "ppo": 9_000_000.0, "aggressive": 12_000_000.0}


def build_records() -> list[EpisodeRecord]:
    records = []
    for policy in POLICIES:
        for scenario in SCENARIOS:
            for ep in range(3):
                flash = scenario == "flash_crash"
                records.append(
                    make_record(
                        policy,
                        scenario,
                        ep,
                        socialized_usd=FLASH_LOSSES[policy][ep] if flash else 0.0,
                        capital_usd=CAPITAL[policy],
                        exhausted=flash and policy == "aggressive",
                    )
                )
    return records


def make_meta(
    by_policy: list[Row], policies: list[str], scenarios: list[str], reference: str | None
) -> dict[str, Any]:
    lines = {str(r["policy"]): r for r in by_policy}
    dominance = (
        {p: dominates(lines[p], lines[reference]) for p in policies if p != reference}
        if reference is not None
        else {}
    )
    return {
        "command": "fundgym evaluate --config configs/eval/crash_suite.yaml --episodes 3",
        "created_utc": "2025-01-02T03:04:05Z",
        "episodes": 3,
        "seed": 123,
        "scenarios": scenarios,
        "policies": policies,
        "horizon_note": "each scenario's own horizon",
        "reference": reference,
        "dominance": dominance,
        "gap_closure": {"ppo": 1.25, "aggressive": None},
        "objective": {"best_static": -1.5, "ppo": -0.5, "aggressive": -2.0},
        "policy_notes": {
            "best_static": "static dYdX-like: MMR 3%, fee 1.5% <script>alert(1)</script>",
            "ppo": "PPO agent trained on the crash suite",
        },
    }


def run_report(
    out_dir: Path,
    records: list[EpisodeRecord],
    *,
    reference: str | None = "best_static",
    drop_traces: tuple[tuple[str, str], ...] = (),
    start_utc: dict[str, str | None] | None = None,
) -> dict[str, Path]:
    rows = [episode_metrics(r) for r in records]
    by_policy = summarize_policies(rows)
    policies = list(dict.fromkeys(r.policy for r in records))
    scenarios = list(dict.fromkeys(r.scenario for r in records))
    traces = {
        (r.policy, r.scenario): r
        for r in records
        if r.episode == 0 and (r.policy, r.scenario) not in drop_traces
    }
    return write_report(
        out_dir,
        by_scenario=summarize(rows),
        by_policy=by_policy,
        traces=traces,
        meta={
            **make_meta(by_policy, policies, scenarios, reference),
            "scenario_start_utc": start_utc or {},
        },
    )


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def assert_valid_outputs(out: dict[str, Path], out_dir: Path) -> None:
    for key, path in out.items():
        assert path.is_file(), key
        assert path.stat().st_size > 0, key
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC, key
    # Atomic writes leave no temporary files behind.
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out_dir = tmp_path_factory.mktemp("report")
    return out_dir, run_report(out_dir, build_records())


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def test_writes_every_file(full_report: tuple[Path, dict[str, Path]]) -> None:
    out_dir, out = full_report
    assert set(out) == {
        "report_md",
        "report_html",
        "scatter",
        "bars",
        "timeseries_flash_crash",
        "timeseries_slow_bleed",
        "losses_flash_crash",
        "losses_slow_bleed",
    }
    assert out["report_md"] == out_dir / "report.md"
    assert out["report_html"] == out_dir / "report.html"
    assert out["scatter"] == out_dir / "plots" / "scatter.png"
    assert out["bars"] == out_dir / "plots" / "scenario_bars.png"
    assert out["timeseries_flash_crash"] == out_dir / "plots" / "timeseries_flash_crash.png"
    assert out["losses_slow_bleed"] == out_dir / "plots" / "losses_slow_bleed.png"
    assert_valid_outputs(out, out_dir)


# ------------------------------------------------------------------------------------------
# report.md
# ------------------------------------------------------------------------------------------


def test_markdown_names_run_policies_and_scenarios(
    full_report: tuple[Path, dict[str, Path]],
) -> None:
    md = full_report[1]["report_md"].read_text()
    assert "fundgym evaluate --config configs/eval/crash_suite.yaml --episodes 3" in md
    assert "2025-01-02T03:04:05Z" in md
    assert "each scenario's own horizon" in md
    assert "123" in md
    for name in POLICIES + SCENARIOS:
        assert name in md
    assert "PPO agent trained on the crash suite" in md


def test_markdown_numbers_worked_by_hand(full_report: tuple[Path, dict[str, Path]]) -> None:
    md = full_report[1]["report_md"].read_text()
    headline = {line.split("|")[1].strip(): line for line in md.splitlines() if "|" in line}
    # All scenarios: best_static loses (1.0 + 1.5 + 2.0) M / 6 episodes = $750,000.
    # Its interval over [1.0, 1.5, 2.0, 0, 0, 0] M: s^2 = 3.875e12 / 5, s = 880,340.84,
    # t(0.975, 5) = 2.570581835636314, half = 923,860.6 -> [-$173,861, $1,673,861]; a loss
    # cannot be negative, so the lower end is printed as $0.
    assert "| best_static | $750,000 [$0, $1,673,861] |" in headline["best_static"]
    assert "| ppo | $250,000 [" in headline["ppo"]
    # Constant capital: the interval collapses onto the mean.
    assert "$9,000,000 [$9,000,000, $9,000,000]" in headline["ppo"]
    # Objective from meta, 3 decimals.
    assert "-1.500" in headline["best_static"]
    # Per scenario: best_static flash_crash, mean 1.5M with the t-interval worked above.
    flash_best = next(
        line for line in md.splitlines() if line.startswith("| flash_crash | best_static |")
    )
    assert "$1,500,000 [$257,931, $2,742,069]" in flash_best
    flash_aggr = next(
        line for line in md.splitlines() if line.startswith("| flash_crash | aggressive |")
    )
    assert "$1,200,000 [$1,200,000, $1,200,000]" in flash_aggr
    # P(fund exhausted) 3/3 with its Wilson interval, and a fund minimum of 0.
    assert "100.0% [43.9%, 100.0%]" in flash_aggr
    assert "| $0 |" in flash_aggr
    # Per-scenario rows come scenario by scenario in the evaluation order.
    order = [line[:40] for line in md.splitlines() if line.startswith(("| flash", "| slow"))]
    assert [o.split("|")[1].strip() for o in order] == ["flash_crash"] * 3 + ["slow_bleed"] * 3


def test_markdown_dominance_lines(full_report: tuple[Path, dict[str, Path]]) -> None:
    md = full_report[1]["report_md"].read_text()
    assert "Dominance vs best_static" in md
    assert (
        "- **ppo**: dominates: yes (rule: loss, loss ratio 33.3%, capital ratio 90.0%); "
        "gap closure 125.0%"
    ) in md
    assert (
        "- **aggressive**: dominates: no (rule: none, loss ratio 80.0%, capital ratio 120.0%); "
        "gap closure n/a"
    ) in md
    # The reference is not compared with itself.
    assert "- **best_static**: dominates" not in md


def test_markdown_images_are_relative(full_report: tuple[Path, dict[str, Path]]) -> None:
    out_dir, out = full_report
    md = out["report_md"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = {p.relative_to(out_dir).as_posix() for p in out.values() if p.suffix == ".png"}
    assert set(links) == pngs
    assert (
        "lower-left is better. best_static (reference): loss $750,000, capital $10,000,000; " in md
    )
    assert "](plots/scatter.png)" in md


def test_alt_texts_say_what_each_figure_shows(full_report: tuple[Path, dict[str, Path]]) -> None:
    page = full_report[1]["report_html"].read_text()
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert len(alts) == 6
    scatter = next(a for a in alts if a.startswith("Scatter plot"))
    # The all-scenario means worked above: every point with both coordinates.
    for point in (
        "best_static (reference): loss $750,000, capital $10,000,000",
        "ppo: loss $250,000, capital $9,000,000",
        "aggressive: loss $600,000, capital $12,000,000",
    ):
        assert point in scatter
    assert "dominates best_static" in scatter
    bars = next(a for a in alts if a.startswith("Grouped bar charts"))
    # Largest per-scenario mean loss: best_static on flash_crash, 1.5M.
    assert "(flash_crash, slow_bleed)" in bars
    assert "The largest mean loss is best_static on flash_crash, $1,500,000." in bars
    series = next(a for a in alts if a.startswith("Time series of flash_crash"))
    # Episode 0: marks 100, 80, 70, 75 over one hour; aggressive's fund empties.
    assert "episode 0 (seed 100), 0 to 1 h after the episode start" in series
    assert "mark price from $100.00 to $75.00 (low $70.00)" in series
    assert "best_static $2,500,000; ppo $2,500,000; aggressive $0;" in series
    losses = next(a for a in alts if a.startswith("Cumulative user loss in flash_crash"))
    # Episode 0's socialised losses: best_static 1.0M, ppo 0.4M, aggressive 1.2M.
    assert (
        "best_static $1,000,000 (socialised $1,000,000, unrecovered $0, deleveraged $0); "
        "ppo $400,000 (socialised $400,000, unrecovered $0, deleveraged $0); "
        "aggressive $1,200,000 (socialised $1,200,000, unrecovered $0, deleveraged $0)."
    ) in losses


# ------------------------------------------------------------------------------------------
# report.html
# ------------------------------------------------------------------------------------------


def test_html_is_self_contained(full_report: tuple[Path, dict[str, Path]]) -> None:
    out = full_report[1]
    page = out["report_html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert 'src="http' not in page
    assert "href=" not in page
    assert 'src="plots/' not in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    pngs = [p for p in out.values() if p.suffix == ".png"]
    assert page.count("data:image/png;base64,") == len(pngs) == len(uris) == 6
    # Each embedded image is one of the written PNGs, byte for byte.
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in pngs)


def test_html_has_the_same_content_escaped(full_report: tuple[Path, dict[str, Path]]) -> None:
    page = full_report[1]["report_html"].read_text()
    # A squeezed cell may wrap between its numbers, never inside one.
    assert (
        '<td class="num"><span class="nw">$1,500,000</span> <span class="nw">[$257,931,</span> '
        '<span class="nw">$2,742,069]</span></td>'
    ) in page
    assert "dominates: yes (rule: loss, loss ratio 33.3%, capital ratio 90.0%)" in page
    assert "dominates: no (rule: none, loss ratio 80.0%, capital ratio 120.0%)" in page
    for name in POLICIES + SCENARIOS:
        assert name in page
    # Header plus one row per policy, header plus one row per (policy, scenario).
    assert page.count("<tr>") == (1 + 3) + (1 + 6)
    # Text from meta is escaped, never injected as markup.
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "each scenario&#x27;s own horizon" in page


def test_html_tables_scroll_in_their_own_box_and_print_whole(
    full_report: tuple[Path, dict[str, Path]],
) -> None:
    page = full_report[1]["report_html"].read_text()
    # Both tables sit in a box that scrolls sideways on screen (the page itself never does)...
    assert page.count('<div class="table-wrap" role="region" tabindex="0"') == 2
    assert page.count("<table>") == 2
    css = page[page.index("<style>") : page.index("</style>")]
    assert re.search(r"\.table-wrap \{[^}]*overflow-x: auto", css)
    # ...and on paper the box does not clip: the table takes the page width, its cells may
    # wrap anywhere, so no column is wider than its share (test_report_browser measures it).
    printed = css[css.index("@media print") :]
    assert re.search(r"\.table-wrap \{[^}]*overflow: visible", printed)
    assert re.search(r"table \{[^}]*table-layout: auto; width: 100%", printed)
    assert re.search(r"th, td \{[^}]*overflow-wrap: anywhere", printed)
    assert re.search(r"\.nw \{ white-space: normal; \}", printed)
    # Long names may break after an underscore.
    assert "<td>best_<wbr>static</td>" in page


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def text_box(text: Text) -> Bbox:
    """The rendered box of a label's text alone (without its leader line), in pixels."""
    return Text.get_window_extent(text)


def overlap(a: Bbox, b: Bbox) -> bool:
    return bool(min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0))


def crowded_policy_lines() -> list[Row]:
    """Nine policies within 1% of one another in both coordinates, two of them coinciding."""
    rows: list[Row] = []
    for i in range(9):
        spot = min(i, 7)  # policies 7 and 8 coincide
        loss = 1_000_000.0 * (1.0 + 0.002 * (spot % 4))
        capital = 10_000_000.0 * (1.0 + 0.002 * (spot // 4))
        rows.append(
            {
                "policy": f"policy_{i}",
                "episodes": 3,
                "solvency_loss_usd": loss,
                "solvency_loss_usd_ci_low": 0.9 * loss,
                "solvency_loss_usd_ci_high": 1.1 * loss,
                "mean_capital_locked_usd": capital,
                "mean_capital_locked_usd_ci_low": capital,
                "mean_capital_locked_usd_ci_high": capital,
            }
        )
    return rows


def test_scatter_labels_do_not_collide_when_points_crowd() -> None:
    rows = crowded_policy_lines()
    policies = [str(r["policy"]) for r in rows]
    fig = scatter_figure(rows, policies, _colours(policies), "policy_0")
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = list(ax.texts)
    # Eight spots, so eight labels: the two coinciding policies share one, both named.
    assert len(labels) == 8
    assert "policy_7\npolicy_8" in [t.get_text() for t in labels]
    centres = ax.transData.transform(
        [(r["mean_capital_locked_usd"], r["solvency_loss_usd"]) for r in rows]
    )
    boxes = [text_box(t) for t in labels]
    # The case is crowded: every point is within one label height of another, so labels at
    # one fixed offset would print over each other.
    height = max(b.height for b in boxes)
    for i, (x, y) in enumerate(centres[:8]):
        assert (
            min(abs(x - u) + abs(y - v) for j, (u, v) in enumerate(centres[:8]) if j != i) < height
        )
    frame = ax.get_window_extent()
    for i, box in enumerate(boxes):
        assert (
            frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        )
        for other in boxes[i + 1 :]:
            assert not overlap(box, other), (labels[i].get_text(), box, other)
        # No label covers a point.
        for x, y in centres:
            assert not (box.x0 < x < box.x1 and box.y0 < y < box.y1), labels[i].get_text()
    plt.close(fig)


def test_place_labels_keeps_a_label_beside_a_lonely_point() -> None:
    fig, ax = plt.subplots()
    ax.set_xlim(0.0, 10.0)
    ax.set_ylim(0.0, 10.0)
    (label,) = place_labels(ax, [(5.0, 5.0)], ["alone"], marker_pt=9.0)
    fig.canvas.draw()
    box = text_box(label)
    x, y = ax.transData.transform((5.0, 5.0))
    # Level with the point, on its right, 4.5 + 1.5 points away (no leader line needed).
    assert box.x0 == pytest.approx(x + 6.0 * fig.dpi / 72.0, abs=0.5)
    assert (box.y0 + box.y1) / 2 == pytest.approx(y, abs=0.5)
    assert label.arrow_patch is None
    plt.close(fig)


def test_long_scenario_names_are_slanted_not_overlapping() -> None:
    scenarios = [f"historical_crash_number_{i}_with_a_long_name" for i in range(6)]

    def bar_rows(names: list[str]) -> list[Row]:
        return [
            {"policy": p, "scenario": s, "episodes": 1, "solvency_loss_usd": 1.0e6,
             "mean_capital_locked_usd": 1.0e7}
            for s in names
            for p in ("a", "b")
        ]  # fmt: skip

    rows = bar_rows(scenarios)
    fig = scenario_bars_figure(rows, scenarios, ["a", "b"], _colours(["a", "b"]))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(ticks) == 6
        assert ticks[0].get_rotation() > 0.0
        boxes = [text_box(t) for t in ticks]
        assert not any(overlap(a, b) for a, b in itertools.pairwise(boxes))
    plt.close(fig)
    # Short names stay level.
    fig = scenario_bars_figure(
        bar_rows(["calm", "crash"]), ["calm", "crash"], ["a", "b"], _colours(["a", "b"])
    )
    assert all(t.get_rotation() == 0.0 for t in fig.axes[0].get_xticklabels())
    plt.close(fig)


def drawn_texts(fig: Figure) -> list[Text]:
    """Every piece of text the figure draws: titles, axis labels, legends, annotations, and
    the tick labels inside the axes' limits (matplotlib keeps hidden ones past the ends)."""
    fig.canvas.draw()
    tick_labels: set[int] = set()
    drawn: list[Text] = []
    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(limits), max(limits)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                for label in (tick.label1, tick.label2):
                    tick_labels.add(id(label))
                    if label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi:
                        drawn.append(label)
    for text in fig.findobj(Text):
        shown = isinstance(text, Text) and text.get_visible() and text.get_text().strip()
        if shown and id(text) not in tick_labels:
            drawn.append(text)
    return drawn


def crowded_figures() -> dict[str, Figure]:
    """Every kind of report figure, eight policies, a dated crash and an insolvent episode."""
    records = build_records()
    for i in range(5):
        for scenario in SCENARIOS:
            records.append(
                make_record(f"hindsight_static_variant_{i}", scenario, 0, terminated=i == 0)
            )
    rows = [episode_metrics(r) for r in records]
    policies = list(dict.fromkeys(r.policy for r in records))
    colours = _colours(policies)
    traces = {r.policy: r for r in records if r.episode == 0 and r.scenario == "flash_crash"}
    dated = TimeAxis.of("2025-10-10T21:00:00Z", "flash_crash")
    return {
        "timeseries": timeseries_figure("flash_crash", traces, colours, TimeAxis()),
        "timeseries dated": timeseries_figure("flash_crash", traces, colours, dated),
        "losses": user_loss_figure("flash_crash", traces, colours, TimeAxis()),
        "losses dated": user_loss_figure("flash_crash", traces, colours, dated),
        "bars": scenario_bars_figure(summarize(rows), SCENARIOS, policies, colours),
        "scatter": scatter_figure(summarize_policies(rows), policies, colours, "best_static"),
    }


def test_no_text_collides_in_any_figure() -> None:
    for name, fig in crowded_figures().items():
        texts = drawn_texts(fig)
        assert len(texts) > 20, name
        boxes = [(t.get_text(), text_box(t)) for t in texts]
        clashes = [
            (a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if overlap(box_a, box_b)
        ]  # fmt: skip
        assert not clashes, f"{name}: {clashes}"
        plt.close(fig)


def insolvent_marks(fig: Figure) -> dict[str, list[tuple[Any, float]]]:
    """Policy -> (x, y) of every insolvency X in the figure."""
    marks: dict[str, list[tuple[Any, float]]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid()
            if gid and gid.startswith("insolvent "):
                marks.setdefault(gid.removeprefix("insolvent "), []).append(
                    (np.asarray(line.get_xdata())[0], float(np.asarray(line.get_ydata())[0]))
                )
    return marks


def test_an_insolvent_episode_is_marked_where_it_ends() -> None:
    traces = {
        "a": make_record("a", "s", 0, socialized_usd=1e6),
        "b": make_record("b", "s", 0, socialized_usd=2e6, terminated=True),
    }
    colours = _colours(["a", "b"])
    fig = timeseries_figure("s", traces, colours, TimeAxis())
    # b ended insolvent after its third step, at 45 min = 0.75 h, its fund empty; a ran on.
    assert insolvent_marks(fig) == {"b": [(0.75, 0.0)]}
    legend = fig.axes[1].get_legend()
    assert legend is not None
    assert "episode ended insolvent" in [t.get_text() for t in legend.get_texts()]
    plt.close(fig)
    fig = user_loss_figure("s", traces, colours, TimeAxis())
    # One X per loss panel at b's running totals: total 2M, socialised 2M, 0, 0.
    assert insolvent_marks(fig) == {"b": [(0.75, 2e6), (0.75, 2e6), (0.75, 0.0), (0.75, 0.0)]}
    plt.close(fig)
    fig = timeseries_figure("s", {"a": traces["a"]}, colours, TimeAxis())
    assert insolvent_marks(fig) == {}
    legend = fig.axes[1].get_legend()
    assert legend is not None
    assert "episode ended insolvent" not in [t.get_text() for t in legend.get_texts()]
    plt.close(fig)


def test_cumulative_user_loss_panels_add_up_the_parts() -> None:
    rec = dataclasses.replace(
        make_record("a", "s", 0),
        socialized_loss_usd=np.array([0.0, 0.0, 1e6, 0.0]),
        unrecovered_usd=np.array([0.0, 0.0, 0.0, 2e5]),
        adl_volume_usd=np.array([3e5, 0.0, 0.0, 0.0]),
    )
    fig = user_loss_figure("s", {"a": rec}, _colours(["a"]), TimeAxis())
    series = {ax.get_title(): np.asarray(ax.get_lines()[0].get_ydata()).tolist() for ax in fig.axes}
    # From 0 at the start: ADL 0.3M in step 1, socialised 1M in step 3, unrecovered 0.2M in 4.
    assert series == {
        "solvency loss (ranks the policies)": [0.0, 3e5, 3e5, 1.3e6, 1.5e6],
        "socialised loss (borne by traders)": [0.0, 0.0, 0.0, 1e6, 1e6],
        "unrecovered loss (borne by the exchange)": [0.0, 0.0, 0.0, 0.0, 2e5],
        "deleveraged notional (ADL)": [0.0, 3e5, 3e5, 3e5, 3e5],
    }
    assert np.asarray(fig.axes[0].get_lines()[0].get_xdata()).tolist() == [
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
    ]
    plt.close(fig)
    # A part nobody lost in is labelled as such.
    fig = user_loss_figure("s", {"a": make_record("a", "s", 0)}, _colours(["a"]), TimeAxis())
    assert [t.get_text() for t in fig.axes[0].texts] == ["none in this episode"]
    plt.close(fig)


def test_a_historical_crash_is_drawn_against_utc_dates() -> None:
    time = TimeAxis.of("2025-10-10T21:00:00Z", "oct_10_2025")
    assert time.start_utc == dt.datetime(2025, 10, 10, 21, 0, tzinfo=dt.UTC)
    assert list(time.x([15.0, 90.0])) == [
        np.datetime64("2025-10-10T21:15:00.000"),
        np.datetime64("2025-10-10T22:30:00.000"),
    ]
    assert time.at(45.0) == "2025-10-10 21:45 UTC"
    traces = {"a": make_record("a", "oct_10_2025", 0, terminated=True)}
    fig = timeseries_figure("oct_10_2025", traces, _colours(["a"]), time)
    fig.canvas.draw()
    bottom = fig.axes[-1]
    assert bottom.get_xlabel() == "time (UTC); episode start 2025-10-10 21:00 UTC"
    ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    # The episode ended insolvent at 21:45: ten-minute ticks from 21:00 to 21:40.
    assert ticks == ["21:00", "21:10", "21:20", "21:30", "21:40"]
    # The insolvency X at 21:45 UTC.
    ((x, _fund),) = insolvent_marks(fig)["a"]
    assert x == np.datetime64("2025-10-10T21:45")
    plt.close(fig)
    # A historical scenario of the library dates its path; a synthetic one counts hours.
    crash = load_scenario("black_thursday_2020")
    assert crash.start_utc is not None
    assert TimeAxis.of(crash.start_utc, crash.name).start_utc == crash.start_datetime
    assert TimeAxis.of(None, "x").start_utc is None
    fig = timeseries_figure("s", {"a": make_record("a", "s", 0)}, _colours(["a"]), TimeAxis())
    assert fig.axes[-1].get_xlabel() == "hours since episode start"
    plt.close(fig)


def test_report_dates_the_scenarios_that_have_a_start(tmp_path: Path) -> None:
    records = [
        make_record("a", "flash_crash", 0, socialized_usd=1e6, terminated=True),
        make_record("a", "slow_bleed", 0),
    ]
    rows = [episode_metrics(r) for r in records]
    meta = make_meta(summarize_policies(rows), ["a"], SCENARIOS, None)
    meta["scenario_start_utc"] = {"flash_crash": "2025-10-10T21:00:00Z", "slow_bleed": None}
    out = write_report(
        tmp_path,
        by_scenario=summarize(rows),
        by_policy=summarize_policies(rows),
        traces={(r.policy, r.scenario): r for r in records},
        meta=meta,
    )
    md = out["report_md"].read_text()
    # flash_crash ended insolvent after its third 15-minute step: 21:45 UTC.
    assert (
        "Time series of flash_crash, episode 0 (seed 100), 2025-10-10 21:00 UTC to "
        "2025-10-10 21:45 UTC: mark price from $100.00 to $70.00 (low $70.00); insurance fund "
        "at the end: a $0 (ended insolvent at 2025-10-10 21:45 UTC)"
    ) in md
    assert "An X and a dotted line mark where an episode ended insolvent." in md
    assert (
        "Totals at the end: a $1,000,000 (socialised $1,000,000, unrecovered $0, deleveraged "
        "$0) (ended insolvent at 2025-10-10 21:45 UTC)."
    ) in md
    assert "Time series of slow_bleed, episode 0 (seed 100), 0 to 1 h after the episode start" in md


def test_scenario_and_simulator_figures_take_the_start_date(tmp_path: Path) -> None:
    minutes = np.arange(0.0, 181.0, 1.0)
    price = 100.0 - 0.1 * minutes
    columns = {
        "time_min": minutes,
        "last_price": price,
        "index_price": price,
        "mark_price": price,
        "oracle_price": price,
        "depth_usd": np.full_like(minutes, 2e6),
        "funding_rate": np.full_like(minutes, 1e-4),
        "precursor": np.linspace(0.0, 1.0, minutes.size),
    }
    runs = {"defaults": {"fund_usd": 5e6 - 1e4 * minutes, "liquidation_volume_usd": minutes}}
    for start in ("2020-03-12T08:00:00Z", None):
        plot_scenario(
            columns, "black_thursday_2020", tmp_path / f"scenario_{start}.png", start_utc=start
        )
        plot_crash(
            minutes / 60.0, price, price, columns["depth_usd"], runs, "black_thursday_2020",
            tmp_path / f"crash_{start}.png", start_utc=start,
        )  # fmt: skip
    assert sorted(p.read_bytes()[:8] == PNG_MAGIC for p in tmp_path.iterdir()) == [True] * 4
    with pytest.raises(ValueError, match="start_utc of black_thursday_2020 must be"):
        plot_scenario(columns, "black_thursday_2020", tmp_path / "x.png", start_utc="12 March")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 Oct 2025", "start_utc of scenario 'flash_crash' must be an ISO 8601 UTC timestamp"),
        ("2025-10-10T21:00:00", "got '2025-10-10T21:00:00' (no time zone"),
        ("2025-10-10T23:00:00+02:00", "is not UTC"),
    ],
)
def test_a_bad_start_is_named_with_its_scenario(tmp_path: Path, value: str, message: str) -> None:
    rows = [episode_metrics(make_record("a", "flash_crash", 0))]
    meta = make_meta(summarize_policies(rows), ["a"], ["flash_crash"], None)
    meta["scenario_start_utc"] = {"flash_crash": value}
    with pytest.raises(ValueError, match=re.escape(message)):
        write_report(
            tmp_path,
            by_scenario=summarize(rows),
            by_policy=summarize_policies(rows),
            traces={},
            meta=meta,
        )
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------------


def test_single_policy_single_episode(tmp_path: Path) -> None:
    rec = make_record("best_static", "flash_crash", 0, socialized_usd=1_500_000.0)
    out = run_report(tmp_path, [rec], reference=None)
    assert_valid_outputs(out, tmp_path)
    md = out["report_md"].read_text()
    # One episode: no spread estimated, so the interval reads n/a, not [mean, mean].
    assert "$1,500,000 [n/a]" in md
    assert "$1,500,000 [$1,500,000" not in md
    assert "No reference policy" in md


def test_all_zero_losses_and_missing_params(tmp_path: Path) -> None:
    records = [
        make_record(p, s, ep, params=False) for p in ("a", "b") for s in SCENARIOS for ep in (0, 1)
    ]
    out = run_report(tmp_path, records, reference="a")
    assert_valid_outputs(out, tmp_path)
    md = out["report_md"].read_text()
    # Zero loss and zero capital difference: "b" matches "a", which passes rule "loss" (0 <= 0).
    assert "| a | $0 [$0, $0] |" in md
    assert "- **b**: dominates: yes (rule: loss, loss ratio 0.0%, capital ratio 100.0%)" in md


def test_liquidators_absorbed_notional_is_in_the_per_scenario_table_and_no_vault_no_section(
    full_report: tuple[Path, dict[str, Path]],
) -> None:
    md = full_report[1]["report_md"].read_text()
    assert "| absorbed by liquidators |" in md
    # the loss of the decision that crossed the insolvency line, beside the loss it is part of
    assert "| solvency loss [95% CI] | of it, at insolvency | bad debt |" in md
    assert "**of it, at insolvency**: the part of the solvency loss" in md
    # every episode: $500k of the $8M liquidated went to outside liquidators
    flash_best = next(line for line in md.splitlines() if line.startswith("| flash_crash | best_"))
    assert "| $8,000,000 | $500,000 |" in flash_best
    # no policy ran a vault: no vault section
    assert "Backstop vault" not in md and "vault PnL" not in md


def test_the_vault_section_lists_the_policies_that_ran_one(tmp_path: Path) -> None:
    # static:hyperliquid's $2M vault ends at +$300k, -$100k, +$400k: mean $200,000; as a share
    # of capital 15%, -5%, 20%: mean 10.00%. Every episode: 10% drawdown, peak inventory
    # |$600k| (the -$250k short is smaller), 2 takeovers of $600k. static:binance runs none.
    records = [
        make_record("static:hyperliquid", "oct", ep, vault_pnl_usd=pnl)
        for ep, pnl in enumerate([3e5, -1e5, 4e5])
    ] + [make_record("static:binance", "oct", ep) for ep in range(3)]
    out = run_report(tmp_path, records, reference=None)
    md = out["report_md"].read_text()
    assert "## Backstop vault" in md
    head = (
        "| policy | scenario | vault capital | vault PnL | PnL / capital | max drawdown | "
        "peak inventory | takeovers | notional taken over |"
    )
    assert head in md
    row = (
        "| static:hyperliquid | oct | $2,000,000 | $200,000 | 10.00% | 10.00% | $600,000 | 2.0 | "
        "$600,000 |"
    )
    assert row in md
    assert not [line for line in md.splitlines() if line.startswith("| static:binance | oct |")]
    # a vault that lost: the PnL is printed signed, not floored at $0
    (tmp_path / "lost").mkdir()
    lost = run_report(
        tmp_path / "lost",
        [make_record("v", "s", 0, vault_pnl_usd=-5e5)],
        reference=None,
    )
    assert "| v | s | $2,000,000 | -$500,000 | -25.00% |" in lost["report_md"].read_text()
    page = out["report_html"].read_text()
    assert "<h2>Backstop vault</h2>" in page and 'aria-label="backstop vault table' in page


def test_the_allocation_section_lists_every_scenario_of_a_policy_whose_fund_moved(
    tmp_path: Path,
) -> None:
    # ppo's allocation earned 0 + 50k - 10k = 40k by the trough (step 2: the index at 70) in
    # episode 0 and -20k - 40k = -60k in episode 1: mean -$10,000, on a fund of $2.5M at the
    # trough; held stable it would have been $2,510,000: x0.9960, below stable. On "calm" it
    # never moved: $0, x1.0000, at stable. static:dydx holds stable assets: no row.
    records = [
        make_record("ppo", "oct", 0, fund_external_pnl_usd=[0.0, 5e4, -1e4, 9e4]),
        make_record("ppo", "oct", 1, fund_external_pnl_usd=[0.0, -2e4, -4e4, 0.0]),
        make_record("ppo", "calm", 0),
        make_record("static:dydx", "oct", 0),
        make_record("static:dydx", "calm", 0),
    ]
    out = run_report(tmp_path, records, reference=None)
    md = out["report_md"].read_text()
    assert "## The fund's allocation at the trough" in md
    assert (
        "| policy | scenario | fund at the trough | allocation's PnL by then | "
        "against the fund held stable | at least stable |"
    ) in md
    assert "| ppo | oct | $2,500,000 | -$10,000 | x0.9960 | no |" in md
    assert "| ppo | calm | $2,500,000 | $0 | x1.0000 | yes |" in md
    section = md.split("## The fund's allocation at the trough")[1].split("\n## ")[0]
    assert "static:dydx" not in section
    # no policy moved its fund (the shared fixture): no section
    (tmp_path / "still").mkdir()
    still = run_report(tmp_path / "still", records[2:], reference=None)
    assert "allocation at the trough" not in still["report_md"].read_text()


def test_parameter_panel_only_when_parameters_recorded(tmp_path: Path) -> None:
    with_dir, without_dir = tmp_path / "with", tmp_path / "without"
    with_dir.mkdir()
    without_dir.mkdir()
    with_params = run_report(with_dir, [make_record("a", "s", 0)], reference=None)
    without = run_report(without_dir, [make_record("a", "s", 0, params=False)], reference=None)
    # Same width, one panel fewer: the figure without parameters is shorter.
    w1, h1 = png_size(with_params["timeseries_s"])
    w2, h2 = png_size(without["timeseries_s"])
    assert h2 < h1
    assert abs(w1 - w2) < 0.1 * w1


def test_missing_traces_are_skipped(tmp_path: Path) -> None:
    records = [make_record(p, s, 0) for p in ("a", "b") for s in SCENARIOS]
    drop = (("a", "flash_crash"), ("a", "slow_bleed"), ("b", "slow_bleed"))
    out = run_report(tmp_path, records, reference="a", drop_traces=drop)
    assert_valid_outputs(out, tmp_path)
    assert "timeseries_flash_crash" in out
    assert "timeseries_slow_bleed" not in out
    assert not (tmp_path / "plots" / "timeseries_slow_bleed.png").exists()
    assert "No episode trace was recorded for: slow_bleed." in out["report_md"].read_text()
    page = out["report_html"].read_text()
    # flash_crash's two figures, the bars and the scatter.
    assert page.count("data:image/png;base64,") == 4


def test_scenario_name_is_made_safe_for_a_filename(tmp_path: Path) -> None:
    out = run_report(tmp_path, [make_record("a", "oct 10/2025", 0)], reference=None)
    assert out["timeseries_oct 10/2025"] == tmp_path / "plots" / "timeseries_oct_10_2025.png"
    assert_valid_outputs(out, tmp_path)


def test_rejects_empty_by_policy_and_missing_folder(tmp_path: Path) -> None:
    rows = [episode_metrics(make_record("a", "s", 0))]
    meta = make_meta(summarize_policies(rows), ["a"], ["s"], None)
    with pytest.raises(ValueError, match="by_policy is empty"):
        write_report(tmp_path, by_scenario=summarize(rows), by_policy=[], traces={}, meta=meta)
    with pytest.raises(ValueError, match="existing folder"):
        write_report(
            tmp_path / "nope",
            by_scenario=summarize(rows),
            by_policy=summarize_policies(rows),
            traces={},
            meta=meta,
        )
    assert not list(tmp_path.iterdir())


def test_a_summary_without_the_trough_metrics_adds_no_allocation_section() -> None:
    # A summary written before the metric existed reads NaN: not a move, no section.
    from fundgym.agents.evaluate.report import _allocation_blocks

    assert _allocation_blocks([{"policy": "p", "scenario": "s"}], ["p"], ["s"]) == []
    moved = _allocation_blocks(
        [{"policy": "p", "scenario": "s", "allocation_pnl_at_trough_usd": -1.0}], ["p"], ["s"]
    )
    assert len(moved) == 3  # heading, paragraph, table
