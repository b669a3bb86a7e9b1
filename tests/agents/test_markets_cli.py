"""``fundgym markets``: the fund modes and collateral prices compared, files and bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from fundgym.agents.cli import main


def test_markets_writes_tables_csvs_and_the_resolved_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    code = main(
        ["markets", "--episodes", "2", "--accounts", "300", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| shared |" in text and "| segmented |" in text and "| segmented | ALT |" in text
    rows = list(csv.DictReader((out / "markets.csv").open()))
    assert [r["config"] for r in rows] == ["shared", "shared", "segmented", "segmented"]
    assert [int(r["seed"]) for r in rows] == [17, 18, 17, 18]
    per_market = list(csv.DictReader((out / "per_market.csv").open()))
    assert len(per_market) == 2 * 2 * 3
    assert {r["market"] for r in per_market} == {"BTC", "ETH", "ALT"}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["scenario"] == "alt_contagion" and config["fund_modes"] == [
        "shared",
        "segmented",
    ]
    assert (out / "markets.md").read_text().startswith("fundgym markets: alt_contagion")
    assert (out / "command.txt").is_file()
    assert (out / "markets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot
    # every pot's payments toward a market add up to the episode's shortfall paid
    for r in rows:
        paid = sum(
            float(m["fund_paid_usd"])
            for m in per_market
            if m["config"] == r["config"] and m["seed"] == r["seed"]
        )
        assert paid == pytest.approx(float(r["fund_paid_usd"]), rel=1e-5, abs=1e-3)


def test_collateral_prices_are_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "markets",
            "--scenario",
            "oct_10_2025_multi",
            "--fund-mode",
            "shared",
            "--collateral-price",
            "book,index",
            "--episodes",
            "1",
            "--accounts",
            "300",
            "--no-progress",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| shared, book |" in text and "| shared, index |" in text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--fund-mode", "pooled"], "--fund-mode: 'pooled' is not one of"),
        (["--collateral-price", "oracle"], "--collateral-price: 'oracle' is not one of"),
        (["--fund-groups", "0,1"], "one segment index per market (3: BTC, ETH, ALT)"),
        (["--fund-groups", "0,x,1"], "comma-separated integers"),
        (["--fund-mode", "shared", "--fund-groups", "0,0,1"], "applies to --fund-mode segmented"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--market-mmr-mult", "1,1"], "one finite multiple > 0 per market (3: BTC, ETH, ALT)"),
        (["--market-mmr-mult", "1,0,1"], "one finite multiple > 0 per market"),
        (["--market-mmr-mult", "1,a,1"], "comma-separated numbers"),
        (["--fund-cap-usd", "1e6,1e6"], "one number >= 0 (or inf) for each of 3: BTC, ETH, ALT"),
        (["--fund-cap-usd", "1e6,-1,inf"], "each cap must be >= 0"),
        (["--collateral-haircut", "0.1"], "has no collateral assets"),
        (["--fund-frac", "-1"], "--fund-frac must lie in [0, 10]"),
        (["--scenario", "no_such_scenario"], "no_such_scenario"),
        (["--fund-allocation", "0.5,0.5,0.5,0"], "--fund-allocation must be four shares"),
        (["--fund-allocation", "1,0,0"], "--fund-allocation must be four shares"),
        (
            ["--fund-mode", "segmented", "--fund-allocation", "1,0,0,0"],
            "--fund-allocation applies to --fund-mode shared",
        ),
        (["--fund-asset", "DOGE"], "--fund-asset: 'DOGE' is not a market of"),
        (["--segment-transfer-cap-usd", "-1"], "--segment-transfer-cap-usd must be >= 0"),
        (["--segment-transfer-cap-usd", "nan"], "--segment-transfer-cap-usd must be >= 0"),
        (
            ["--fund-mode", "shared", "--segment-transfer-cap-usd", "100"],
            "--segment-transfer-cap-usd applies to --fund-mode segmented",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    out = tmp_path / "never"
    code = main(["markets", *args, "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not out.exists()


def test_bench_env_markets_times_each_market_count(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "env",
            "--markets",
            "1,3",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--accounts",
            "50",
            "--envs",
            "3",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["markets_env"]["rows"]
    assert [r["markets"] for r in rows] == [1, 3]
    assert all(r["median"] > 0 and r["ms_per_decision"] > 0 for r in rows)
    for r in rows:  # the batch of --envs exchanges beside one env, per exchange-decision
        b = r["batch"]
        assert b["n_envs"] == 3 and b["median"] > 0
        assert b["ms_per_decision"] == pytest.approx(1e3 / b["median"])
        assert b["speedup"] == pytest.approx(r["ms_per_decision"] / b["ms_per_decision"])


def test_a_venue_presets_levers_and_adl_rule_run_under_the_partial_engine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """static:hyperliquid with the partial engine and no vault: its levers, HL ADL, no fund."""
    spec = "static:hyperliquid,liquidation_mode=partial,vault_to_oi_frac=0"
    code = main(
        ["markets", "--policy", spec, "--fund-mode", "shared", "--episodes", "1",
         "--accounts", "300", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "fund 0.00% of OI" in out and "Hyperliquid-like" in out
    assert "liquidation_mode partial" in out


def test_hyperliquids_engine_and_vault_run_across_markets_and_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """static:hyperliquid whole: its engine and HLP vault, reported in a table and the CSV."""
    out = tmp_path / "hl"
    code = main(
        ["markets", "--policy", "static:hyperliquid", "--fund-mode", "shared", "--episodes",
         "1", "--accounts", "300", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "backstop vault 2.20% of open interest" in text
    assert "| configuration | vault capital | vault PnL | of capital |" in text
    with (out / "markets.csv").open() as f:
        row = next(csv.DictReader(f))
    capital = float(row["vault_capital_usd"])
    assert capital == pytest.approx(0.022 * float(row["open_interest_start_usd"]), rel=1e-5)
    assert math.isfinite(float(row["vault_pnl_usd"])) and float(row["vault_takeovers"]) >= 0.0
    # The vault's own ADL (its loss limit) is part of the ADL notional.
    assert 0.0 <= float(row["vault_adl_usd"]) <= float(row["adl_volume_usd"]) + 1e-6
    assert "| vault deleveraged |" in text


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("static:hyperliquid,liquidation_mode=partial", "add ',vault_to_oi_frac=0'"),
        ("rule", "a static:... set is needed"),
        ("static:nowhere", "unknown preset"),
    ],
)
def test_policies_not_built_across_markets_are_refused(
    capsys: pytest.CaptureFixture[str], spec: str, fragment: str
) -> None:
    assert main(["markets", "--policy", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_dydx_with_lending_between_segments_is_refused_before_any_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "never"
    args = ["markets", "--policy", "static:dydx", "--fund-mode", "segmented",
            "--segment-transfer-cap-usd", "5", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--segment-transfer-cap-usd 5 with policy 'static:dydx'" in err
    assert "allowed: 0" in err and "Traceback" not in err
    assert not out.exists()


def test_caps_and_haircuts_reach_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "caps"
    args = ["markets", "--fund-mode", "shared", "--fund-cap-usd", "inf,inf,0", "--episodes",
            "1", "--accounts", "400", "--fund-cap-period", "episode", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    rows = [r for r in csv.DictReader((out / "per_market.csv").open()) if r["market"] == "ALT"]
    assert float(rows[0]["fund_paid_usd"]) == 0.0  # a $0 cap: the fund never pays the alt
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["fund_cap_usd"] == [float("inf"), float("inf"), 0.0]
    assert config["fund_cap_period"] == "episode"
    out2 = tmp_path / "cuts"
    args = ["markets", "--scenario", "oct_10_2025_multi", "--fund-mode", "shared",
            "--collateral-haircut", "0.5,0.5,0.5", "--episodes", "1", "--accounts", "300",
            "--out", str(out2), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert yaml.safe_load((out2 / "config.yaml").read_text())["collateral_haircut"] == [0.5] * 3


def test_allocation_and_transfers_reach_the_simulator(tmp_path: Path) -> None:
    """Half the fund in the crashing alt ends lower than all stable; pooled segments lend."""
    ends = {}
    for label, extra in (("stable", []), ("alt", ["--fund-allocation", "0.5,0,0.5,0"])):
        out = tmp_path / label
        args = ["markets", "--fund-mode", "shared", "--fund-asset", "ALT", "--episodes", "1",
                "--accounts", "400", "--out", str(out), "--no-progress", *extra]  # fmt: skip
        assert main(args) == 0
        row = next(csv.DictReader((out / "markets.csv").open()))
        ends[label] = float(row["fund_end_usd"])
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["fund_asset"] == "ALT"
    assert ends["alt"] < 0.8 * ends["stable"]  # the alt fell 80%: wrong-way risk
    assert config["fund_allocation"] == [0.5, 0.0, 0.5, 0.0]
    out = tmp_path / "pooled"
    args = ["markets", "--fund-mode", "segmented", "--segment-transfer-cap-usd", "inf",
            "--fund-frac", "0.01", "--episodes", "1", "--accounts", "2000", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    row = next(csv.DictReader((out / "markets.csv").open()))
    assert float(row["fund_transfer_usd"]) > 0.0  # BTC's and ETH's segments lent the alt's
    assert yaml.safe_load((out / "config.yaml").read_text())["segment_transfer_cap_usd"] == float(
        "inf"
    )


def test_outside_liquidators_take_flow_across_markets_when_paid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half the liquidation fee to the liquidators: under partial they take flow at the
    # oracles (the lever's default capacity) on 10 Oct's slide, where some accounts are still
    # solvent when liquidated; with --liquidator-capacity-mult 0 none. (On alt_contagion's
    # -16% ticks every liquidated account is already bankrupt: it pays them nothing.)
    absorbed = {}
    for mult in ("1", "0"):
        out = tmp_path / f"k{mult}"
        args = ["markets", "--policy", "static:liquidation_fee_fund_share=0.5",
                "--scenario", "oct_10_2025_multi", "--collateral-price", "book",
                "--fund-mode", "shared", "--episodes", "1", "--accounts", "300",
                "--liquidator-capacity-mult", mult, "--out", str(out), "--no-progress"]  # fmt: skip
        assert main(args) == 0
        rows = list(csv.DictReader((out / "markets.csv").open()))
        absorbed[mult] = sum(float(r["liquidator_absorbed_usd"]) for r in rows)
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["liquidator_capacity_mult"] == float(mult)
        text = capsys.readouterr().out
        assert ("Outside liquidators took, at the oracles" in text) == (mult == "1")
    assert absorbed["1"] > 0.0 and absorbed["0"] == 0.0


def test_a_basket_fund_asset_is_held_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "basket"
    args = ["markets", "--fund-mode", "shared", "--fund-asset", "BTC:0.5,ALT:0.5",
            "--fund-allocation", "0.5,0,0.5,0", "--episodes", "1", "--accounts", "200",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["fund_asset"] == {"BTC": 0.5, "ALT": 0.5}


def test_a_fund_cap_as_a_share_of_the_pot_reaches_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "share"
    args = ["markets", "--fund-mode", "segmented", "--market-fund-cap-frac", "inf,inf,0",
            "--episodes", "1", "--accounts", "400", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    rows = [r for r in csv.DictReader((out / "per_market.csv").open()) if r["market"] == "ALT"]
    assert float(rows[0]["fund_paid_usd"]) == 0.0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["market_fund_cap_frac"] == [float("inf"), float("inf"), 0.0]


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--liquidator-capacity-mult", "-1", "--liquidator-capacity-mult must lie in [0, 100]"),
        ("--liquidator-capacity-mult", "nan", "--liquidator-capacity-mult must lie in [0, 100]"),
        ("--fund-asset", "DOGE", "'DOGE' is not a market of 'alt_contagion'"),
        ("--fund-asset", "BTC:0.5,DOGE:0.5", "'DOGE:0.5' is not MARKET:WEIGHT with a market"),
        ("--fund-asset", "BTC:0.5,BTC:0.5", "'BTC' is named twice"),
        ("--fund-asset", "BTC:0.5,ALT:x", "the weight of 'ALT' must be a number > 0, got 'x'"),
        ("--fund-asset", "BTC:0.5,ALT:0", "the weight of 'ALT' must be a number > 0, got '0'"),
        ("--fund-asset", "BTC:0.5,ALT:0.6", "the weights must sum to 1, got 1.1"),
        ("--market-fund-cap-frac", "1,1,-1", "--market-fund-cap-frac: each share must be >= 0"),
        ("--market-fund-cap-frac", "1,1", "must give one number >= 0 (or inf) for each of 3"),
        ("--market-fund-cap-frac", "1,x,1", "--market-fund-cap-frac must be comma-separated"),
    ],
)
def test_a_bad_new_option_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, fragment: str
) -> None:
    out = tmp_path / "never"
    assert main(["markets", option, value, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not out.exists()


def test_a_policys_fund_top_ups_run_across_markets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "topped"
    spec = "static:fund_to_oi_frac=0,fund_injection_frac=0.01,fund_injection_max=2"  # empty
    args = ["markets", "--policy", spec, "--episodes", "1",
            "--accounts", "1000", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "The venue topped up the exhausted fund" in capsys.readouterr().out
    rows = {r["config"]: r for r in csv.DictReader((out / "markets.csv").open())}
    shared = rows["shared"]
    assert 1.0 <= float(shared["fund_injections"]) <= 2.0
    assert float(shared["fund_injected_usd"]) == pytest.approx(
        0.01 * float(shared["open_interest_start_usd"]) * float(shared["fund_injections"]),
        rel=1e-5,
    )
    assert float(rows["segmented"]["fund_injections"]) >= 1.0  # the segments' own top-ups
