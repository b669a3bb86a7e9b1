"""``fundgym calibrate``: the check registry, the measures worked by hand, the command line."""

import dataclasses
import errno
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.agents.cli import main
from fundgym.agents.evaluate import calibration as cal
from fundgym.agents.evaluate.calibration import (
    CALIBRATION_FILES,
    CHECKS,
    CalibrationError,
    Check,
    EpisodeOutcome,
    Measurement,
    Target,
    below_bankruptcy_share,
    format_table,
    fund_drawdown,
    fund_drawdown_from_start_frac,
    liquidated_share_of_oi,
    open_interest_end_over_start,
    peak_tick_liquidated_share_of_oi,
    select_checks,
    vault_drawdown,
    vault_pnl,
)
from fundgym.agents.outputs import write_text_atomic
from fundgym.agents.policies import PRESETS, parse_spec
from fundgym.agents.rollout import CRASHES, base_env, job_env
from fundgym.envs.scenarios import library, load_scenario

#: Small enough for CI: one episode on 64 accounts.
TINY = ["--seeds", "1", "--accounts", "64", "--no-progress"]


def outcome(fund0: float = 100.0, vault0: float = 0.0, **steps: list[float]) -> EpisodeOutcome:
    """An episode record built by hand: ``steps`` are per-decision values."""
    return EpisodeOutcome(
        policy="static:hyperliquid",
        scenario="oct_10_2025",
        episode=0,
        seed=0,
        initial_open_interest_usd=1_000.0,
        initial_fund_usd=fund0,
        initial_vault_usd=vault0,
        steps={k: np.asarray(v, dtype=np.float64) for k, v in steps.items()},
        terminated=False,
    )


# ---- the registry ----


def test_every_check_names_a_library_scenario_and_a_static_policy() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    for c in CHECKS:
        assert c.scenario in library(), c.name
        spec = parse_spec(c.policy)  # raises on a policy that does not parse
        assert spec.kind == "static", c.name
        assert c.source and c.measures, c.name


def test_the_registry_holds_the_bankruptcy_check_and_every_drawdown_line() -> None:
    check = next(c for c in CHECKS if c.name == "hyperliquid_below_bankruptcy")
    assert (check.policy, check.scenario) == ("static:hyperliquid", "oct_10_2025")
    assert check.target == Target(high=0.02) and "302 of 63,637" in check.source
    assert {p for p in PRESETS} == {"binance", "dydx", "hyperliquid", "bitmex"}
    fund = [c for c in CHECKS if c.name.startswith("fund_drawdown_")]
    per_preset = [f"fund_drawdown_{p}_{s}" for s in CRASHES for p in PRESETS]
    assert [c.name for c in fund] == [
        *per_preset,
        "fund_drawdown_binance_2020_black_thursday_2020",
        "fund_drawdown_binance_oct_10_2025_multi",
    ]
    # the calibrated-world issue's four fund targets; every other fund line is info. Black
    # Thursday's "Binance-sized" fund is the one Binance had then, 1% of open interest [E].
    targeted = {c.name: c.target for c in fund if c.target is not None}
    assert targeted == {
        "fund_drawdown_binance_oct_10_2025": Target(low=0.05, high=0.35),
        "fund_drawdown_binance_may_19_2021": Target(high=0.10),
        "fund_drawdown_bitmex_black_thursday_2020": Target(high=0.15),
        "fund_drawdown_binance_2020_black_thursday_2020": Target(low=0.25, high=0.80),
        "fund_drawdown_binance_oct_10_2025_multi": Target(low=0.05, high=0.35),
    }
    assert fund[-2].policy == "static:binance,fund_to_oi_frac=0.01"


def test_the_registry_holds_the_calibrated_worlds_liquidation_and_oi_lines() -> None:
    prefixes = ("liquidated_oi_", "oi_change_", "peak_minute_")
    lines = {c.name: c for c in CHECKS if c.name.startswith(prefixes)}
    assert {n: (c.policy, c.scenario, c.target) for n, c in lines.items()} == {
        "liquidated_oi_binance_oct_10_2025": (
            "static:binance", "oct_10_2025", Target(low=0.04, high=0.18)
        ),
        "oi_change_binance_oct_10_2025": ("static:binance", "oct_10_2025", Target(0.5, 0.9)),
        "peak_minute_liquidated_oi_binance_oct_10_2025": (
            "static:binance", "oct_10_2025", Target(low=0.005, high=0.04)
        ),
        "liquidated_oi_binance_may_19_2021": (
            "static:binance", "may_19_2021", Target(low=0.10, high=0.50)
        ),
        "oi_change_bitmex_black_thursday_2020": (
            "static:bitmex", "black_thursday_2020", Target(0.4, 0.85)
        ),
        "liquidated_oi_binance_ftx_2022": ("static:binance", "ftx_2022", Target(high=0.20)),
    }  # fmt: skip
    assert "8.8%" in lines["liquidated_oi_binance_oct_10_2025"].source
    assert "48%" in lines["oi_change_bitmex_black_thursday_2020"].source
    assert not lines["oi_change_binance_oct_10_2025"].percent  # a ratio, printed as one


def test_the_vault_lines_are_the_presets_that_run_a_vault_on_every_crash() -> None:
    # only static:hyperliquid runs a vault (HLP, 2.2% of open interest); the one-market info
    # lines (the 10 Oct line across markets has a target: tested with the other 10 Oct lines)
    vault = [c for c in CHECKS if c.name.startswith("vault_") and c.scenario in CRASHES]
    assert [c.name for c in vault] == [
        f"vault_{what}_hyperliquid_{s}" for s in CRASHES for what in ("pnl", "drawdown")
    ]
    assert all(c.target is None and c.policy == "static:hyperliquid" for c in vault)
    oct10 = next(c for c in vault if c.name == "vault_pnl_hyperliquid_oct_10_2025")
    assert "+10-13%" in oct10.source and "market making included" in oct10.source
    assert "upper reference [E]" in oct10.source
    luna = next(c for c in vault if c.name == "vault_pnl_hyperliquid_luna_2022")
    assert "no backstop-vault figure" in luna.source


# ---- measures, by hand ----


def test_below_bankruptcy_share_pools_liquidations_over_episodes() -> None:
    # episode 0: 3 + 0 + 5 = 8 orders, 1 past bankruptcy; episode 1: 2 orders, both past it
    a = outcome(n_liquidations=[3, 0, 5], n_liquidations_below_bankruptcy=[1, 0, 0])
    b = outcome(n_liquidations=[2], n_liquidations_below_bankruptcy=[2])
    m = below_bankruptcy_share([a, b])
    assert m.value == pytest.approx(3 / 10, rel=1e-15)  # pooled, not (1/8 + 2/2) / 2
    assert m.per_episode == pytest.approx((1 / 8, 1.0), rel=1e-15)
    assert m.detail == "3 of 10 liquidation orders over 2 episodes"


def test_liquidated_share_and_oi_change_by_hand() -> None:
    # starting OI 1,000 (the helper's): episode a liquidates 100 + 50 = 150 and ends at 600
    # OI; episode b liquidates 20 and ends at 1,100
    a = outcome(liquidation_volume_usd=[100.0, 50.0], open_interest_usd=[900.0, 600.0])
    b = outcome(liquidation_volume_usd=[20.0], open_interest_usd=[1_100.0])
    liq = liquidated_share_of_oi([a, b])
    assert liq.per_episode == pytest.approx((0.15, 0.02), rel=1e-15)
    assert liq.value == pytest.approx(0.085, rel=1e-15)
    oi = open_interest_end_over_start([a, b])
    assert oi.per_episode == pytest.approx((0.6, 1.1), rel=1e-15)
    assert oi.value == pytest.approx(0.85, rel=1e-15)
    assert Target(0.5, 0.9).passes(oi.value) and not Target(0.04, 0.18).passes(0.2)
    # the peak tick: each decision reports its largest tick; the episode's is their largest
    c = outcome(peak_tick_liquidation_volume_usd=[5.0, 30.0, 12.0])
    d = outcome(peak_tick_liquidation_volume_usd=[10.0])
    peak = peak_tick_liquidated_share_of_oi([c, d])
    assert peak.per_episode == pytest.approx((0.03, 0.01), rel=1e-15)
    assert peak.value == pytest.approx(0.02, rel=1e-15)


def test_below_bankruptcy_share_without_liquidations_is_not_a_number_and_fails() -> None:
    m = below_bankruptcy_share(
        [outcome(n_liquidations=[0, 0], n_liquidations_below_bankruptcy=[0, 0])]
    )
    assert math.isnan(m.value) and math.isnan(m.per_episode[0])
    assert not Target(high=0.02).passes(m.value)


def test_fund_drawdown_is_measured_from_the_start_not_from_the_peak() -> None:
    # 100 -> 110 -> 80 -> 120: 1 - 80/100 = 20% (peak to trough would be 1 - 80/110 = 27%)
    assert fund_drawdown_from_start_frac(100.0, np.array([110.0, 80.0, 120.0])) == pytest.approx(
        0.2, rel=1e-15
    )
    assert fund_drawdown_from_start_frac(100.0, np.array([100.0, 130.0])) == 0.0  # only grew
    assert fund_drawdown_from_start_frac(100.0, np.array([0.0])) == 1.0  # emptied
    assert math.isnan(fund_drawdown_from_start_frac(0.0, np.array([0.0])))  # no fund
    m = fund_drawdown(
        [outcome(fund_balance_usd=[90.0, 95.0]), outcome(fund_balance_usd=[70.0, 140.0])]
    )
    assert m.value == pytest.approx((0.1 + 0.3) / 2, rel=1e-15)
    assert m.per_episode == pytest.approx((0.1, 0.3), rel=1e-15)
    assert m.detail == "mean of 2 episodes, 10.00% to 30.00%"


def test_a_fund_that_starts_at_zero_prints_n_a_no_fund_never_nan() -> None:
    # Hyperliquid has no insurance fund: every episode starts with 0, nothing to fall from
    m = fund_drawdown(
        [outcome(0.0, fund_balance_usd=[0.0, 5.0]), outcome(0.0, fund_balance_usd=[0.0])]
    )
    assert math.isnan(m.value) and m.missing == "no fund"
    assert all(math.isnan(v) for v in m.per_episode)
    assert m.detail == "nothing to measure: all 2 episodes started with a fund of 0"
    check = next(c for c in CHECKS if c.name == "fund_drawdown_hyperliquid_oct_10_2025")
    assert check.format(m.value, m.missing) == "n/a (no fund)"
    run = cal.CalibrationRun((cal.CheckResult(check, m, None),), 2, 0, {"n_accounts": 64}, {}, 0.0)
    assert "| n/a (no fund) | -" in format_table(run)
    data = cal.to_json(run, "fundgym calibrate", "2026-01-01T00:00:00Z")
    assert data["checks"][0]["missing"] == "no fund"
    # one episode with a fund and one without: the mean of the one that had one
    mixed = fund_drawdown(
        [outcome(100.0, fund_balance_usd=[75.0]), outcome(0.0, fund_balance_usd=[0.0])]
    )
    assert mixed.value == 0.25 and mixed.missing == ""
    assert mixed.detail == (
        "mean of 1 episode, 25.00% to 25.00%; 1 left out (episodes started with a fund of 0)"
    )


def vault_outcome(
    capital: float,
    pnl: list[float],
    drawdown: list[float],
    takeovers: list[float] | None = None,
    takeover_usd: list[float] | None = None,
) -> EpisodeOutcome:
    """An episode with a vault of ``capital`` (0: none) reported decision by decision."""
    zeros = [0.0] * len(pnl)
    return outcome(
        0.0,
        capital,
        vault_pnl_usd=pnl,
        vault_drawdown_frac=drawdown,
        vault_takeovers=takeovers or zeros,
        vault_takeover_usd=takeover_usd or zeros,
        vault_adl_usd=zeros,
        fund_balance_usd=zeros,
    )


def test_vault_pnl_is_the_last_pnl_over_the_starting_capital() -> None:
    # capital 200. Episode 0: equity 200 -> 190 -> 230, PnL +30 at the end = +15%; episode 1:
    # 200 -> 150, -50 = -25%. Mean (15 - 25) / 2 = -5%.
    # takeovers: 1 ($40) then 2 ($60, $20) -> 3 takeovers, $120
    a = vault_outcome(200.0, [-10.0, 30.0], [0.05, 0.05], [1.0, 0.0], [40.0, 0.0])
    b = vault_outcome(200.0, [-50.0], [0.25], [2.0], [80.0])
    m = vault_pnl([a, b])
    assert m.value == pytest.approx(-0.05, rel=1e-12)
    assert m.per_episode == pytest.approx((0.15, -0.25), rel=1e-12)
    assert m.detail == "mean of 2 episodes, -25.00% to 15.00%; 3 takeovers, $120, over the episodes"
    # drawdown: the largest of the running values, 5% and 25% -> 15%
    d = vault_drawdown([a, b])
    assert d.value == pytest.approx(0.15, rel=1e-12) and d.per_episode == (0.05, 0.25)
    # no vault: capital 0 -> n/a (no vault)
    none = vault_outcome(0.0, [0.0, 0.0], [0.0, 0.0])
    for measure in (vault_pnl, vault_drawdown):
        got = measure([none])
        assert math.isnan(got.value) and got.missing == "no vault"


def test_targets_pass_inside_their_range_and_print_it() -> None:
    at_most = Target(high=0.02)
    assert at_most.passes(0.02) and not at_most.passes(0.0201) and not at_most.passes(math.nan)
    assert at_most.text(percent=True) == "<= 2%"
    band = Target(low=0.04, high=0.18)
    assert band.passes(0.04) and band.passes(0.18) and not band.passes(0.03)
    assert band.text(percent=True) == "4% to 18%" and band.text(percent=False) == "0.04 to 0.18"
    assert Target(low=0.5).text(percent=False) == ">= 0.5"
    with pytest.raises(ValueError, match="an info line has no Target"):
        Target()
    with pytest.raises(ValueError, match="above high"):
        Target(low=0.5, high=0.1)


def test_select_checks_by_name_pattern_and_scenario() -> None:
    assert [c.name for c in select_checks(["hyperliquid_below_bankruptcy"])] == [
        "hyperliquid_below_bankruptcy"
    ]
    bitmex = select_checks(["fund_drawdown_bitmex_*"])
    assert [c.scenario for c in bitmex] == list(CRASHES)
    oct10 = select_checks(None, ["oct_10_2025"])
    # the bankruptcy check, the liquidated, peak-minute and OI lines, the liquidation flow's
    # two, a fund line per preset, the hyperliquid vault's two lines
    assert len(oct10) == 1 + 3 + 2 + len(PRESETS) + 2
    assert {c.scenario for c in oct10} == {"oct_10_2025"}
    first_two = "hyperliquid_below_bankruptcy, liquidated_oi_binance_oct_10_2025"
    with pytest.raises(CalibrationError, match=rf"--check 'nope': no such check; .*{first_two}"):
        select_checks(["nope"])
    with pytest.raises(CalibrationError, match=r"--scenarios 'calm': no check runs on it"):
        select_checks(None, ["calm"])
    with pytest.raises(CalibrationError, match="select none in common"):
        select_checks(["hyperliquid_below_bankruptcy"], ["luna_2022"])


# ---- episodes through evaluation's machinery ----


def test_a_preset_runs_under_its_venues_fund_size() -> None:
    spec = parse_spec("static:bitmex")
    env_kw = job_env({**base_env(None, [spec]), "n_accounts": 64}, spec, "venue_flash_wick")
    (ep,) = cal.record_episodes(spec, env_kw, 1, 5)
    assert ep.initial_fund_usd / ep.initial_open_interest_usd == pytest.approx(0.275, rel=1e-12)
    assert ep.initial_vault_usd == 0.0  # BitMEX runs no vault
    spec = parse_spec("static:hyperliquid")
    env_kw = job_env({**base_env(None, [spec]), "n_accounts": 64}, spec, "venue_flash_wick")
    (hl,) = cal.record_episodes(spec, env_kw, 1, 5)
    assert hl.initial_vault_usd / hl.initial_open_interest_usd == pytest.approx(0.022, rel=1e-12)
    assert hl.initial_fund_usd == 0.0  # HLP, and no insurance fund
    assert ep.seed == 5 and len(ep.steps["fund_balance_usd"]) == 18  # 180 min, 10-min decisions
    assert {"n_liquidations", "n_liquidations_below_bankruptcy"} <= ep.steps.keys()


# ---- the command line ----


def test_help_documents_every_option_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--check", "--scenarios", "--seeds", "--seed", "--accounts", "--out",
                   "--force", "--strict", "--no-progress", "--pass-rate-seeds"):  # fmt: skip
        assert option in text
    assert "hyperliquid_below_bankruptcy" in text and "fund_drawdown_<preset>_<crash>" in text
    assert "1 with --strict when a check\nfailed" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "nope"], "--check 'nope': no such check; allowed"),
        (["--scenarios", "mars_2030"], "--scenarios 'mars_2030': no check runs on it; allowed"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--accounts", "0"], "--accounts must be >= 1, got 0"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**63 - 1], got -1"),
        (["--accounts", "20000000"], "--accounts must be <= 10,000,000 (env.n_accounts), got"),
    ],
)
def test_bad_input_exits_2_naming_it_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "cal"
    code = main(["calibrate", "--out", str(out), "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no output, no lock file


def test_an_output_that_is_not_a_calibration_needs_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    code = main(["calibrate", "--check", "hyperliquid_below_bankruptcy", "--out", str(mine), *TINY])
    assert code == 2
    assert "not a fundgym calibration directory" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_tiny_real_run_prints_the_table_and_writes_the_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "cal"
    code = main(["calibrate", "--check", "hyperliquid_below_bankruptcy", "--out", str(out), *TINY])
    assert code == 0  # without --strict, whatever the pass mark
    text = capsys.readouterr().out
    assert "check" in text and "| measured | target | pass" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(CALIBRATION_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal"]  # no temporaries left
    data = json.loads((out / "calibration.json").read_text())
    assert data["kind"] == "fundgym.calibration" and (data["seeds"], data["accounts"]) == (1, 64)
    (line,) = data["checks"]
    below, total = (float(x.replace(",", "")) for x in line["detail"].split()[0:3:2])
    assert total > 0 and line["measured"] == pytest.approx(below / total, rel=1e-12)
    assert line["per_episode"] == [line["measured"]]
    assert line["passed"] == (line["measured"] <= 0.02)
    mark = "PASS" if line["passed"] else "FAIL"
    assert "hyperliquid_below_bankruptcy | oct_10_2025 | static:hyperliquid |" in text
    assert text.splitlines()[2].endswith(f"<= 2%  | {mark}")
    assert (
        "| `hyperliquid_below_bankruptcy` | oct_10_2025 |" in (out / "calibration.md").read_text()
    )
    config = (out / "config.yaml").read_text()
    assert "fund_to_oi_frac: 0.0\n" in config and "vault_to_oi_frac: 0.022\n" in config


def test_a_tiny_real_run_of_hyperliquids_vault_and_fund_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    checks = [
        "--check",
        "vault_*_hyperliquid_oct_10_2025",
        "--check",
        "fund_drawdown_hyperliquid_*",
    ]
    assert main(["calibrate", *checks, "--scenarios", "oct_10_2025", *TINY]) == 0
    lines = {line.split(" | ")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    # Hyperliquid starts with no fund: its drawdown line says so instead of a number
    fund = lines["fund_drawdown_hyperliquid_oct_10_2025"]
    assert "| n/a (no fund) | -      | info" in fund
    # the vault started with HLP's 2.2%: its lines are numbers (a percentage each)
    for name in ("vault_pnl_hyperliquid_oct_10_2025", "vault_drawdown_hyperliquid_oct_10_2025"):
        measured = lines[name].split(" | ")[3].strip()
        assert re.fullmatch(r"-?\d+\.\d\d%", measured), lines[name]


def fixed_check(value: float, target: Target | None) -> Check:
    """A check on a short crash whose measure returns ``value`` whatever the episodes."""
    return Check(
        name="fixed",
        scenario="venue_flash_wick",
        policy="static:dydx",
        measures="a fixed value",
        target=target,
        source="a test",
        measure=lambda episodes: Measurement(value, (value,) * len(episodes), "fixed"),
    )


@pytest.mark.parametrize(
    ("value", "strict", "code"),
    [(0.5, True, 1), (0.5, False, 0), (0.01, True, 0)],
)
def test_strict_exits_1_only_when_a_check_fails(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: float,
    strict: bool,
    code: int,
) -> None:
    monkeypatch.setattr(cal, "CHECKS", (fixed_check(value, Target(high=0.02)),))
    args = ["calibrate", "--check", "fixed", *TINY, *(["--strict"] if strict else [])]
    assert main(args) == code
    err = capsys.readouterr().err
    assert ("--strict: failed: fixed" in err) == (code == 1)


def test_info_lines_never_fail_a_strict_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cal, "CHECKS", (fixed_check(0.9, None),))
    assert main(["calibrate", "--check", "fixed", "--strict", *TINY]) == 0
    assert "| info" in capsys.readouterr().out


def test_a_failed_write_leaves_the_previous_calibration_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cal, "CHECKS", (fixed_check(0.01, Target(high=0.02)),))
    out = tmp_path / "cal"
    assert main(["calibrate", "--check", "fixed", "--out", str(out), *TINY]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(path: Path, text: str) -> None:
        if path.name == "calibration.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_text_atomic(path, text)

    monkeypatch.setattr(cal, "write_text_atomic", full_disk)
    monkeypatch.setattr(cal, "CHECKS", (fixed_check(0.5, Target(high=0.02)),))
    assert main(["calibrate", "--check", "fixed", "--out", str(out), *TINY]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal"]  # no temporaries left
    monkeypatch.setattr(
        cal, "write_text_atomic", write_text_atomic
    )  # a recognised calibration: replaced
    assert main(["calibrate", "--check", "fixed", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "calibration.json").read_text())["failed"] == 1


# ---- the calibrated world's mechanism lines (issue 16) ----


def twin(index: list[float], twin_index: list[float]) -> EpisodeOutcome:
    """An episode and its no-impact twin (same seed), each with a path of index prices."""
    base = outcome(index_price=index)
    return dataclasses.replace(base, counterfactual=outcome(index_price=twin_index))


def test_the_registry_holds_a_flow_pair_per_major_crash_and_the_luna_and_mango_lines() -> None:
    flow = [c for c in CHECKS if c.name.startswith("liquidation_flow_drawdown_")]
    assert [c.name for c in flow] == [
        f"liquidation_flow_drawdown_{what}_binance_{s}"
        for s in ("oct_10_2025", "black_thursday_2020", "may_19_2021")
        for what in ("pp", "share")
    ]
    assert all(c.counterfactual == "no_impact" and c.policy == "static:binance" for c in flow)
    assert {c.target for c in flow} == {Target(low=0.005), Target(high=1.0 / 3.0)}
    luna = next(c for c in CHECKS if c.name == "floored_short_fund_income_binance_luna_2022")
    assert luna.target == Target(high=0.0) and "Venus" in luna.source
    mango = next(c for c in CHECKS if c.name.startswith("attacker_borrowed_over_margin_"))
    assert mango.target is None and "$116M" in mango.source and not mango.percent
    # the counterfactual is built in code: impact off, nothing else changed
    sc = load_scenario("oct_10_2025")
    changed = cal.COUNTERFACTUALS["no_impact"][1](sc)
    assert changed.depth.impact_coef == 0.0
    assert dataclasses.replace(changed, depth=sc.depth) == sc


def test_liquidation_flow_contribution_by_hand() -> None:
    # With impact 100 -> 80 (20% down), its twin 100 -> 90 -> 85 (15%): 5 pp, a quarter.
    # A second episode: 100 -> 50 (50%) against 100 -> 60 (40%): 10 pp, a fifth.
    a = twin([100.0, 90.0, 80.0, 95.0], [100.0, 90.0, 85.0, 99.0])
    b = twin([100.0, 50.0], [100.0, 60.0])
    assert cal.index_drawdown_frac(np.array([100.0, 120.0, 60.0, 130.0])) == 0.5
    pp = cal.liquidation_flow_drawdown_pp([a, b])
    assert pp.per_episode == pytest.approx((0.05, 0.10), rel=1e-12)
    assert pp.value == pytest.approx(0.075, rel=1e-12) and " pp" in pp.detail
    share = cal.liquidation_flow_drawdown_share([a, b])
    assert share.per_episode == pytest.approx((0.25, 0.2), rel=1e-12)
    assert share.value == pytest.approx(0.225, rel=1e-12)
    flat = twin([100.0, 101.0], [100.0, 101.0])  # never fell: nothing to share
    assert math.isnan(cal.liquidation_flow_drawdown_share([flat]).value)


def test_luna_and_mango_lines_by_hand_and_n_a_naming_the_missing_info_key() -> None:
    # LUNA: $30 of floored-short fee income against a $100 fund, then none: 30% and 0%.
    a = outcome(floored_fund_fee_income_usd=[10.0, 20.0], floored_short_liquidation_usd=[1e3, 0])
    b = outcome(floored_fund_fee_income_usd=[0.0], floored_short_liquidation_usd=[0.0])
    m = cal.floored_short_fund_income([a, b])
    assert m.per_episode == (0.3, 0.0) and m.value == pytest.approx(0.15)
    assert "$1,000 of shorts" in m.detail
    # Mango: $116 withdrawn over three decisions against $5 of margin: 23.2x.
    mango = outcome(
        attacker_withdrawn_usd=[16.0, 60.0, 40.0],
        attacker_margin_usd=[5.0, 5.0, 5.0],
        bad_debt_usd=[0.0, 0.0, 50.0],
        unrecovered_usd=[0.0, 0.0, 20.0],
        socialized_loss_usd=[0.0, 0.0, 0.0],
    )
    m = cal.attacker_borrowed_over_margin([mango])
    assert m.value == pytest.approx(23.2) and "bad debt $50" in m.detail
    # Before the environment reports them, both lines say which key they need.
    bare = outcome(fund_balance_usd=[100.0])
    for measure, key in (
        (cal.floored_short_fund_income, "floored_fund_fee_income_usd"),
        (cal.attacker_borrowed_over_margin, "attacker_withdrawn_usd"),
    ):
        got = measure([bare])
        assert math.isnan(got.value) and got.missing == f"no info {key}"


def test_pass_rate_and_default_seed_verdict_per_line() -> None:
    # Runs of 2 episodes from seeds 0, 2, 4: values (0.01, 0.01), (0.5, 0.01), (0.01, 0.01)
    # have means 0.01, 0.255, 0.01 against <= 2%: the default run (seed 0) and run 2 pass
    # (2/3); alone, 5 of the 6 episodes pass.
    check = Check(
        name="per_episode",
        scenario="venue_flash_wick",
        policy="static:dydx",
        measures="the episode's own value",
        target=Target(high=0.02),
        source="a test",
        measure=lambda eps: Measurement(
            float(np.mean([e.initial_fund_usd for e in eps])),
            tuple(e.initial_fund_usd for e in eps),
            "mean",
        ),
    )
    episodes = [outcome(fund0=v) for v in (0.01, 0.01, 0.5, 0.01, 0.01, 0.01)]
    r = cal._judge(check, episodes, seeds=2, pass_rate_seeds=3)
    assert r.measurement.value == pytest.approx(0.01) and r.passed is True
    assert (r.run_passes, r.pass_rate) == ((True, False, True), 2 / 3)
    assert r.episode_passes == (True, True, False, True, True, True)
    assert r.episode_pass_rate == pytest.approx(5 / 6)
    alone = cal._judge(check, episodes[2:], seeds=2, pass_rate_seeds=None)
    assert alone.passed is False and alone.run_passes is None and alone.episode_passes is None


def test_a_short_calibrate_through_the_cli_reports_pass_rates_and_exit_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The short version of the full run: a line of each kind (a target, a counterfactual
    # pair, the two mechanism lines), 1 episode, 64 accounts, a pass rate over 2 seeds.
    out = tmp_path / "cal"
    checks = [
        "hyperliquid_below_bankruptcy",
        "liquidation_flow_drawdown_*_binance_oct_10_2025",
        "floored_short_fund_income_binance_luna_2022",
        "attacker_borrowed_over_margin_mango_oracle_manipulation",
    ]
    args = [x for c in checks for x in ("--check", c)]
    code = main(["calibrate", *args, *TINY, "--pass-rate-seeds", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in text[0].split("|")]
    assert header == [*cal.COLUMNS, "pass rate (2 seeds)", "episodes alone (2)"]
    assert set(text[1]) == {"-", "+"}
    rows = {line.split(" | ")[0].strip(): line.split(" | ") for line in text[2:7]}
    assert len(rows) == 5 and all(len(cells) == 8 for cells in rows.values())
    for name, cells in rows.items():
        mark, rate, alone = (c.strip() for c in cells[5:])
        if mark == "info":
            assert (rate, alone) == ("-", "-"), name
        else:
            assert mark in ("PASS", "FAIL"), name
            # one episode a seed: the run and the episode are the same judgement
            assert re.fullmatch(r"[012]/2", rate) and alone == rate, name
    assert any(line.startswith("on the default seed (0, episodes 0 .. 0): ") for line in text)
    assert any(line.startswith("pass rate over 2 seeds (1 episode each") for line in text)
    data = json.loads((out / "calibration.json").read_text())
    assert data["pass_rate_seeds"] == 2 and data["default_seed"]["seed"] == 0
    flow = next(c for c in data["checks"] if c["name"].startswith("liquidation_flow_drawdown_pp"))
    assert flow["counterfactual"].startswith("depth.impact_coef = 0")
    assert flow["pass_rate"]["seeds"] == 2 and len(flow["pass_rate"]["per_seed"]) == 2
    assert flow["episode_pass_rate"]["episodes"] == 2
    assert "| pass rate (2 seeds) | episodes alone (2) |" in (out / "calibration.md").read_text()
    # --strict fails when a line with a target fails, and bad counts exit 2.
    strict = main(["calibrate", *args, *TINY, "--pass-rate-seeds", "2", "--strict"])
    assert strict == (1 if data["failed"] else 0)
    capsys.readouterr()
    assert main(["calibrate", *args, *TINY, "--pass-rate-seeds", "0"]) == 2
    assert "--pass-rate-seeds must be >= 1, got 0" in capsys.readouterr().err


# ---- the 10 Oct lines across markets (issue 17) ----


def test_the_registry_holds_the_10_oct_lines_across_markets() -> None:
    multi = {c.name: c for c in CHECKS if c.scenario == "oct_10_2025_multi"}
    assert {n: (c.policy, c.target, c.counterfactual) for n, c in multi.items()} == {
        "adl_share_hyperliquid_oct_10_2025_multi": (
            "static:hyperliquid", Target(low=0.05, high=0.30), None
        ),
        "vault_pnl_hyperliquid_oct_10_2025_multi": ("static:hyperliquid", Target(low=0.0), None),
        "below_bankruptcy_hyperliquid_oct_10_2025_multi": (
            "static:hyperliquid", Target(high=0.02), None
        ),
        "vault_adl_share_hyperliquid_oct_10_2025_multi": ("static:hyperliquid", None, None),
        "fund_drawdown_binance_oct_10_2025_multi": (
            "static:binance", Target(low=0.05, high=0.35), None
        ),
        "collateral_depeg_loss_binance_oct_10_2025_multi": ("static:binance", None, None),
        "collateral_depeg_book_over_index_binance_oct_10_2025_multi": (
            "static:binance", Target(low=1.0), "index_collateral"
        ),
    }  # fmt: skip
    binance = [c for c in multi.values() if c.policy == "static:binance"]
    assert all("$0.6567" in c.source and "-15%" in c.source for c in binance)
    hyperliquid = [c for c in multi.values() if c.policy == "static:hyperliquid" and c.target]
    assert len(hyperliquid) == 3
    assert all("$2.10B" in c.source and "$40M" in c.source for c in hyperliquid)
    assert "95.1%" in multi["vault_adl_share_hyperliquid_oct_10_2025_multi"].source
    assert cal.MARKET_COUNTERFACTUALS["index_collateral"][1] == {"collateral_price": "index"}


def test_the_vaults_share_of_adl_pools_the_episodes_by_hand() -> None:
    # The vault's own inventory: 90 of 100 deleveraged, then 0 of 0 (nothing deleveraged):
    # pooled 90 / 100 = 90%, per episode 90% and n/a.
    episodes = [
        outcome(vault_adl_usd=v, adl_volume_usd=t)
        for v, t in (([40.0, 50.0], [50.0, 50.0]), ([0.0], [0.0]))
    ]
    got = cal.vault_adl_share(episodes)
    assert got.value == pytest.approx(0.9, rel=1e-15)
    assert got.per_episode[0] == pytest.approx(0.9) and math.isnan(got.per_episode[1])


def test_the_json_names_a_multi_market_counterfactual() -> None:
    # calibration.json of a run holding the depeg ratio (its twin marks collateral at the
    # index): it raised KeyError before 2026-12-02, so `fundgym calibrate --out` died there.
    check = next(c for c in CHECKS if c.counterfactual == "index_collateral")
    m = cal.Measurement(value=2.0, per_episode=(2.0,), detail="by hand")
    run = cal.CalibrationRun((cal.CheckResult(check, m, True),), 1, 0, {"n_accounts": 64}, {}, 0.0)
    data = cal.to_json(run, "fundgym calibrate", "2026-01-01T00:00:00Z")
    assert data["checks"][0]["counterfactual"] == cal.MARKET_COUNTERFACTUALS["index_collateral"][0]
    assert cal.counterfactual_text("no_impact") == cal.COUNTERFACTUALS["no_impact"][0]


def test_depeg_book_over_index_pools_the_twins_by_hand() -> None:
    # book losses 30 and 10 against index losses 2 and 0: pooled 40 / 2 = 20, per episode 15
    # and n/a (nothing lost on the index)
    pairs = [([10.0, 20.0], [2.0]), ([10.0], [0.0])]
    episodes = [
        dataclasses.replace(
            outcome(collateral_depeg_loss_usd=book),
            counterfactual=outcome(collateral_depeg_loss_usd=index),
        )
        for book, index in pairs
    ]
    m = cal.collateral_depeg_book_over_index(episodes)
    assert m.value == pytest.approx(20.0, rel=1e-15)
    assert m.per_episode[0] == pytest.approx(15.0) and math.isnan(m.per_episode[1])
    assert m.detail == "book $40 over index $2, summed over 2 episodes"
    nothing = cal.collateral_depeg_book_over_index([episodes[1]])
    assert math.isnan(nothing.value) and nothing.missing == "no depeg loss on the index"
    share = cal.collateral_depeg_loss_share(episodes)  # (30 + 10) / 2 over 1,000 of OI
    assert share.value == pytest.approx(0.02, rel=1e-15)


def test_a_tiny_real_run_of_lines_across_markets(tmp_path: Path) -> None:
    """run_checks runs a multi-market scenario on the multi-market simulator, twins included.

    The 10 Oct lines' checks on a two-hour multi-market scenario (``alt_contagion`` cut short,
    with a USDe-like asset whose book falls to 0.5 while its index holds), so the run is quick;
    the values themselves are the library run's, in docs/calibration.md.
    """
    from tests.multi_market import library_dict

    data = library_dict("alt_contagion")
    data["horizon_minutes"] = 120
    data["markets"][2]["idio_crash"]["start_minute"] = 30
    data["markets"][2]["depth_collapses"][0]["start_minute"] = 30
    data["collateral"] = [
        {
            "name": "USDx",
            "kind": "yield_stable",
            "haircut_frac": 0.05,
            "book_depeg": [{"minute": 20, "level": 1.0}, {"minute": 25, "level": 0.5}],
        }
    ]
    path = tmp_path / "short_multi.yaml"
    path.write_text(yaml.safe_dump(data))
    checks = [
        dataclasses.replace(c, scenario=str(path)) for c in select_checks(["*oct_10_2025_multi"])
    ]
    run = cal.run_checks(checks, seeds=2, accounts=400)
    by_name = {r.check.name: r for r in run.results}
    fund = by_name["fund_drawdown_binance_oct_10_2025_multi"].measurement
    assert 0.0 <= fund.value < 1.0 and len(fund.per_episode) == 2
    # the twins ran with the index price: book and index losses both reported
    ratio = by_name["collateral_depeg_book_over_index_binance_oct_10_2025_multi"].measurement
    assert "over index $" in ratio.detail and len(ratio.per_episode) == 2
    loss = by_name["collateral_depeg_loss_binance_oct_10_2025_multi"].measurement
    assert loss.value >= 0.0 and len(loss.per_episode) == 2
    assert run.policies["static:binance"]["note"]
    # Hyperliquid's engine and vault across markets: the vault ran (its capital is 2.2% of OI)
    vault = by_name["vault_pnl_hyperliquid_oct_10_2025_multi"].measurement
    assert len(vault.per_episode) == 2 and all(math.isfinite(v) for v in vault.per_episode)
    adl = by_name["adl_share_hyperliquid_oct_10_2025_multi"].measurement
    assert adl.value >= 0.0 and len(adl.per_episode) == 2
    below = by_name["below_bankruptcy_hyperliquid_oct_10_2025_multi"].measurement
    assert 0.0 <= below.value <= 1.0
