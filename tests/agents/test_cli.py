"""The fundgym command line: help texts, the demo summary, the core benchmark, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_top_level_help_lists_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout and "bench" in out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("demo", "--help"), ["--seed", "--accounts", "--drawdown", "--fund-usd"]),
        (("bench", "--help"), ["core"]),
        (("bench", "core", "--help"), ["--accounts", "--envs", "--regimes", "--repeats", "--json"]),
    ],
)
def test_each_subcommand_has_help(args, expected):
    out = run_cli(*args)
    assert out.returncode == 0
    for option in expected:
        assert option in out.stdout


def test_demo_prints_the_crash_summary(capsys):
    assert main(["demo", "--accounts", "2000", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    for row in (
        "liquidation orders",
        "shortfall paid by the fund",
        "deleveraged notional (ADL)",
        "socialised loss",
        "fund minimum",
        "the books balance",
    ):
        assert row in text
    assert "fallback=adl" in text and "fallback=socialize" in text


def test_demo_is_reproducible(capsys):
    main(["demo", "--accounts", "1000", "--seed", "5"])
    first = capsys.readouterr().out
    main(["demo", "--accounts", "1000", "--seed", "5"])
    assert capsys.readouterr().out == first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--drawdown", "1.5"), "--drawdown must lie in (0, 0.95], got 1.5"),
        (("demo", "--accounts", "0"), "--accounts must be >= 1, got 0"),
        (("demo", "--fund-usd", "-1"), "--fund-usd must be finite and >= 0, got -1.0"),
        (("bench", "core", "--regimes", "calm"), "unknown regime 'calm'; allowed: quiet, crash"),
        (("bench", "core", "--accounts", "ten"), "expected comma-separated integers, got 'ten'"),
    ],
)
def test_bad_options_are_named(args, message):
    out = run_cli(*args)
    assert out.returncode != 0
    assert message in out.stderr


def test_bench_core_writes_json(tmp_path):
    target = tmp_path / "bench.json"
    out = run_cli(
        "bench",
        "core",
        "--accounts",
        "500",
        "--envs",
        "1,2",
        "--steps",
        "5",
        "--repeats",
        "2",
        "--json",
        str(target),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(target.read_text())
    assert len(data["rows"]) == 4  # 2 regimes x 2 batch sizes x 1 size
    for row in data["rows"]:
        assert row["median_account_steps_per_s"] > 0
        assert row["n_accounts"] == 500
    assert not list(tmp_path.glob("*.tmp"))
