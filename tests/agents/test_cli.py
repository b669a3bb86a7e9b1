"""The fundgym command line: help texts, the crash simulation summary, the benchmark, bad input."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fundgym.agents.cli import build_parser, main
from fundgym.agents.cli.guards import plain_text
from fundgym.envs.levers import LEVERS

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fundgym.agents.cli", *args],
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
        (("simulate", "--help"), ["--scenario", "--seed", "--accounts", "--fund-frac", "--out"]),
        (("demo", "--help"), ["--quick", "--out", "--episodes", "--workers"]),
        (("evaluate", "--help"), ["--policy", "--scenarios", "--episodes", "--seed", "--out"]),
        (
            ("export", "--help"),
            [
                *("--policy", "--format", "--out", "--scenario", "--naming"),
                *("{fundgym,dydx,drift,binance,hyperliquid}", "initial_margin_ppm", "maxLeverage"),
            ],
        ),
        (("scenarios", "--help"), ["list", "sample", "plot"]),
        (("scenarios", "sample", "--help"), ["NAME_OR_PATH", "--seed", "--out"]),
        (("scenarios", "plot", "--help"), ["NAME_OR_PATH", "--seed", "--out"]),
        (("bench", "--help"), ["core"]),
        (("bench", "core", "--help"), ["--accounts", "--envs", "--regimes", "--repeats", "--json"]),
    ],
)
def test_each_subcommand_has_help(args, expected):
    out = run_cli(*args)
    assert out.returncode == 0
    for option in expected:
        assert option in out.stdout


def test_levers_lists_every_lever_from_the_registry(capsys):
    assert main(["levers"]) == 0
    text = capsys.readouterr().out
    blocks = text.strip().split("\n\n")
    assert [b.split(":")[0] for b in blocks] == list(LEVERS)
    mmr = blocks[list(LEVERS).index("mmr")].splitlines()
    assert mmr == [
        "mmr: maintenance margin ratio (dYdX large cap 3%); scales a tier table when set",
        "    unit          fraction of notional",
        "    hard bounds   (0.0, 1.0)",
        "    action range  [0.003, 0.1] (log)",
        "    default       0.03",
        "    venue names   dydx maintenance_fraction_ppm, drift margin_ratio_maintenance, "
        "binance maintMarginRatio",
    ]
    assert "    action range  -" in blocks[list(LEVERS).index("taker_fee_rate")]


def _help_rows(text: str) -> dict[str, list[str]]:
    """Rows of the lever table in a help text: name -> the other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["lever", "action"])
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or not line.strip():
            break
        name, *cells = line.split("  ")[1:]
        rows[name.strip()] = [c.strip() for c in cells if c.strip()]
    return rows


def test_train_and_evaluate_help_show_the_levers():
    train = _help_rows(run_cli("train", "--help").stdout)
    assert list(train) == list(LEVERS)
    assert train["mmr"] == ["[0.003, 0.1] (log)", "0.03", "fraction of notional"]
    assert train["taker_fee_rate"] == ["-", "0.0005", "fraction of traded notional"]
    evaluate = _help_rows(run_cli("evaluate", "--help").stdout)  # what static:name=value takes
    assert list(evaluate) == [
        "liquidation_fee_rate",
        "liquidation_fee_fund_share",
        "mmr",
        "imr_multiple",
        "trading_fee_fund_share",
    ]
    assert evaluate["liquidation_fee_rate"][0] == "[0.001, 0.03] (log)"


def test_simulate_prints_the_crash_summary_and_writes_plot_and_config(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["simulate", "--accounts", "300", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in (
        "oct_10_2025",
        "liquidation orders",
        "shortfall paid by the fund",
        "deleveraged notional (ADL)",
        "socialised loss",
        "fund minimum",
        "the books balance",
    ):
        assert row in text
    assert "defaults, ADL" in text and "lean fee, socialise" in text
    png = out / "oct_10_2025.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (out / "config.yaml").read_text()
    assert "seed: 2025" in config and "accounts: 300" in config
    assert not list(out.glob(".*tmp"))


def test_simulate_is_reproducible(capsys, tmp_path):
    args = ["simulate", "--accounts", "200", "--scenario", "venue_flash_wick", "--seed", "5"]
    main([*args, "--out", str(tmp_path / "a")])
    first = capsys.readouterr().out
    main([*args, "--out", str(tmp_path / "a")])
    assert capsys.readouterr().out.split("wrote")[0] == first.split("wrote")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("simulate", "--fund-frac", "-1"), "--fund-frac must lie in [0, 10], got -1.0"),
        (("simulate", "--accounts", "0"), "--accounts must be >= 1, got 0"),
        (("simulate", "--scenario", "nowhere_2031"), "unknown scenario 'nowhere_2031'"),
        (("scenarios", "plot", "nowhere_2031", "--out", "x.png"), "unknown scenario"),
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


def test_bench_env_ppo_share_runs_the_env_on_the_threads_asked(tmp_path, capsys):
    """The PPO share's env is built at SB3's first reset: ``--threads`` must reach it there.

    (Set only around the adapter's constructor, it never did, and two-thread PPO shares were
    one-thread ones.)
    """
    import numba
    import torch

    torch_threads = torch.get_num_threads()
    target = tmp_path / "bench.json"
    code = main(
        ["bench", "env", "--envs", "2", "--accounts", "8", "--steps", "2", "--repeats", "1",
         "--ppo-steps", "64", "--threads", "2", "--json", str(target)]
    )  # fmt: skip
    assert code == 0
    data = json.loads(target.read_text())
    ppo = data["ppo"]
    assert ppo["threads"] == min(2, numba.config.NUMBA_NUM_THREADS)
    assert data["env"]["threads"] == ppo["threads"]  # the batched rate's env too
    assert f"env on {ppo['threads']} thread" in capsys.readouterr().out
    assert torch.get_num_threads() == torch_threads  # the measurement's one thread undone
    assert 0.0 < ppo["env_s"] < ppo["wall_s"]
    # 64 steps of 2 exchanges: one rollout of 32 decisions, within the first one-day episode.
    assert ppo["decisions"] == 32 and ppo["episodes_ended"] == 0


def test_ppo_share_counts_the_restarts_its_env_settings_cause():
    """``time_ppo``'s env settings reach the env, and every episode that ends is counted.

    100 steps of 2 exchanges are two whole rollouts (64 decisions); 30-minute episodes of
    3 decisions, none ending on insolvency, end 21 times an exchange (decisions 3, 6, ..., 63).
    """
    from benchmarks.bench_env import time_ppo

    r = time_ppo(2, 8, 100, env_kwargs={"horizon_minutes": 30.0, "insolvency_frac": 10.0})
    assert r["decisions"] == 64
    assert r["episodes_ended"] == 2 * 21


def test_share_without_restarts_runs_every_decision_in_one_episode():
    """The bound's env holds every decision of ``learn``'s whole rollouts in one episode.

    100 steps of 2 exchanges round up to 64 decisions: a horizon sized for 50 would end both
    exchanges' episodes inside the run, and the bound would count restarts it means to remove.
    """
    from benchmarks.share_without_restarts import AS_BUILT, NO_END, measure

    runs = measure(envs=2, accounts=8, steps=100, threads=1, repeats=1)
    assert [r["decisions"] for r in runs[AS_BUILT] + runs[NO_END]] == [64, 64]
    assert runs[NO_END][0]["episodes_ended"] == 0


def test_scenarios_list_names_every_library_scenario():
    out = run_cli("scenarios", "list")
    assert out.returncode == 0
    for name in ("calm", "volatile", "black_thursday_2020", "oct_10_2025", "oracle_manipulation"):
        assert name in out.stdout


def test_scenarios_sample_writes_the_documented_columns(tmp_path):
    target = tmp_path / "path.csv"
    out = run_cli("scenarios", "sample", "may_19_2021", "--seed", "4", "--out", str(target))
    assert out.returncode == 0, out.stderr
    rows = target.read_text().splitlines()
    header = rows[0].split(",")
    for col in (
        "step",
        "time_min",
        "mark_price",
        "index_price",
        "oracle_price",
        "depth_usd",
        "funding_rate",
    ):
        assert col in header
    assert len(rows) == 1 + 1440
    first = dict(zip(header, rows[1].split(","), strict=True))
    assert float(first["index_price"]) == 43000.0


def test_scenarios_plot_writes_a_png(tmp_path):
    target = tmp_path / "wick.png"
    out = run_cli("scenarios", "plot", "venue_flash_wick", "--out", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_scenarios_reject_a_bad_file_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndescription: y\nprice: {initial: -5}\ndepth: {normal_usd_per_pct: 1e6}\n"
    )
    out = run_cli("scenarios", "sample", str(bad), "--out", str(tmp_path / "x.csv"))
    assert out.returncode == 2
    assert f"{bad}: price.initial = -5" in out.stderr
    assert not (tmp_path / "x.csv").exists()


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subparser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


MARKUP = ("``", "`", "**", ":func:", ":mod:", ":class:", ":meth:", ":data:", ":attr:", "## ")


def test_every_help_text_is_plain_text():
    parsers = _parsers(build_parser())
    progs = {p.prog for p in parsers}
    assert len(parsers) == 20  # fundgym, 12 subcommands, 4 scenarios actions, 3 bench targets
    assert {"fundgym demo", "fundgym scenarios sample", "fundgym bench env"} <= progs
    for p in parsers:
        text = p.format_help()
        assert not [m for m in MARKUP if m in text], (p.prog, [m for m in MARKUP if m in text])
    demo = next(p for p in parsers if p.prog == "fundgym demo").format_help()
    assert "1. Train the default config (configs/train/ppo.yaml: PPO" in demo  # kept, unmarked


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        (":func:`fundgym.envs.levers.describe` reads it", "fundgym.envs.levers.describe reads it"),
        ("see :class:`~fundgym.envs.config.EnvConfig`", "see EnvConfig"),
        (
            "``--quick`` runs **Train** and `fundgym levers`",
            "--quick runs Train and fundgym levers",
        ),
        ("## Episode End\nA list::\n", "Episode End\nA list:\n"),
        ("  aligned  columns *.yaml  x * y", "  aligned  columns *.yaml  x * y"),
    ],
)
def test_plain_text_strips_rst_and_markdown_markup(text, plain):
    assert plain_text(text) == plain


def test_every_option_that_replaces_an_output_documents_force():
    for p in _parsers(build_parser()):
        options = {o for a in p._actions for o in a.option_strings}
        if "--out" in options or "--json" in options:
            assert "--force" in options, p.prog
            force = next(a for a in p._actions if "--force" in a.option_strings)
            assert "recognise" in (force.help or ""), p.prog
