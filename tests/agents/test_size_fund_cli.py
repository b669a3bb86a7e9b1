"""``fundgym size-fund`` end to end: a short run, the 99.9% refusal, bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fundgym.agents.cli import main

#: A short run: 64 accounts, six training-sampler episodes of a day, in this process.
SHORT = ["--episodes", "6", "--accounts", "64", "--workers", "1", "--no-progress"]


def test_a_short_run_writes_every_output_and_says_the_flag_was_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sizing"
    argv = ["size-fund", "--policy", "static:binance", "--out", str(out), *SHORT]
    assert main([*argv, "--allow-few-episodes", "--target-prob", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "--allow-few-episodes was used" in printed and "6 episodes per scenario" in printed
    for name in ("sizing.json", "sizing.md", "sizing.html", "episodes.csv", "config.yaml"):
        assert (out / name).is_file(), name
    for name in ("loss_histogram.png", "tail.png", "exhaustion_curve.png"):
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG")
    data = json.loads((out / "sizing.json").read_text(encoding="utf-8"))
    assert data["kind"] == "fundgym.sizing"
    assert data["allow_few_episodes"] is True
    assert data["scenarios"] == ["training"] and data["episodes_total"] == 6
    tail = {r["level"]: r for r in data["overall"]["tail"]["fund_needed_frac_oi"]}
    assert tail[0.999]["few_episodes"] is True and tail[0.95]["few_episodes"] is False
    assert tail[0.999]["episodes"] == 6
    target = data["overall"]["fund_for_target"]
    assert target["target_prob"] == 0.2 and target["episodes"] == 6
    assert target["p_exceed_frac_oi"] <= 0.2
    assert len((out / "episodes.csv").read_text(encoding="utf-8").splitlines()) == 7
    md = (out / "sizing.md").read_text(encoding="utf-8")
    assert "**--allow-few-episodes was used**" in md and "†" in md
    assert "data:image/png;base64," in (out / "sizing.html").read_text(encoding="utf-8")
    # A second run replaces its own earlier sizing without --force.
    assert main([*argv, "--allow-few-episodes", "--seed", "6"]) == 0
    assert json.loads((out / "sizing.json").read_text(encoding="utf-8"))["seed"] == 6


def test_a_999_figure_from_too_few_episodes_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sizing"
    assert main(["size-fund", "--policy", "static:binance", "--out", str(out), *SHORT]) == 2
    err = capsys.readouterr().err
    assert "--episodes 6" in err and "10,000" in err and "--allow-few-episodes" in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-prob", "1.5"], "--target-prob must lie strictly between 0 and 1"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--address", "ray://x:1"], "--address 'ray://x:1' needs --backend ray"),
        (["--scenarios", "no_such_crash"], "--scenarios"),
        (["--policy", "best_static"], "searched baseline"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "sizing"
    argv = ["size-fund", "--policy", "static:binance", "--out", str(out), *SHORT]
    assert main([*argv, "--allow-few-episodes", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_existing_directory_that_is_not_a_sizing_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    argv = ["size-fund", "--policy", "rule", "--out", str(out), *SHORT, "--allow-few-episodes"]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["size-fund", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--policy",
        "--scenarios",
        "--episodes",
        "--out",
        "--seed",
        "--workers",
        "--backend",
        "--address",
        "--target-prob",
        "--allow-few-episodes",
        "--force",
        "--no-progress",
        "--accounts",
        "--config",
    ):
        assert option in text, option
