"""agents.evaluate.report: figures, report.md and a self-contained report.html from summaries.

The episodes are hand-built so that the summaries' means (and some intervals) are round numbers
worked out in the comments; the report must print exactly those.
"""

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from fundgym.agents.evaluate.metrics import (
    EpisodeRecord,
    Row,
    dominates,
    episode_metrics,
    summarize,
    summarize_policies,
)
from fundgym.agents.evaluate.report import write_report

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
) -> EpisodeRecord:
    """4 steps of 15 min; the loss (if any) lands in step 2, the fund empties if ``exhausted``."""
    fund = [4e6, 3e6, 0.0, 0.0] if exhausted else [4e6, 3e6, 2.5e6, 2.5e6]
    return EpisodeRecord(
        policy=policy,
        scenario=scenario,
        episode=episode,
        seed=100 + episode,
        initial_open_interest_usd=1e8,
        initial_fund_usd=5e6,
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
        reward=[-0.1, -0.2, -0.3, -0.1],
        cost=[0.0, 0.0, 0.0, 0.0],
        params=(
            {"mmr": [0.03, 0.03, 0.04, 0.04], "liquidation_fee_rate": [0.015] * 4} if params else {}
        ),
        positions=[[0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.5, 0.5]] if params else [],
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
        meta=make_meta(by_policy, policies, scenarios, reference),
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
    }
    assert out["report_md"] == out_dir / "report.md"
    assert out["report_html"] == out_dir / "report.html"
    assert out["scatter"] == out_dir / "plots" / "scatter.png"
    assert out["bars"] == out_dir / "plots" / "scenario_bars.png"
    assert out["timeseries_flash_crash"] == out_dir / "plots" / "timeseries_flash_crash.png"
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
    assert "![scatter](plots/scatter.png)" in md


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
    assert page.count("data:image/png;base64,") == len(pngs) == len(uris) == 4
    # Each embedded image is one of the written PNGs, byte for byte.
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in pngs)


def test_html_has_the_same_content_escaped(full_report: tuple[Path, dict[str, Path]]) -> None:
    page = full_report[1]["report_html"].read_text()
    assert "$1,500,000 [$257,931, $2,742,069]" in page
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
    assert page.count("data:image/png;base64,") == 3


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
