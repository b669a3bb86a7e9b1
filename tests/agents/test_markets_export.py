"""``fundgym export`` of a multi-market run: its schedule per market, and its ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.agents.cli import main
from fundgym.agents.export.markets_schedule import replay_markets_schedule
from fundgym.agents.policies.replay import MARKETS_ENVIRONMENT, ScheduleError, read_schedule
from fundgym.envs.core.params import RiskParams
from fundgym.envs.levers import MARKET_LEVERS
from tests.agents.test_markets_training import tiny

MARKETS = ("BTC", "ETH", "ALT")  # alt_contagion's


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A move limit, so the schedule's in-force levers lag its targets as the env has them.
    cfg_path = tmp_path_factory.mktemp("cfg") / "markets.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(max_step=0.5)))
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    return out


def _export(run_dir: Path, out: Path, *extra: str) -> int:
    args = ["export", "--policy", str(run_dir), "--scenario", "alt_contagion", "--seed", "4"]
    return main([*args, "--out", str(out), "--no-progress", *extra])


def test_a_markets_schedule_holds_every_lever_per_market_and_replays_exactly(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schedule.csv"
    assert _export(run_dir, out, "--format", "csv") == 0
    assert "144 decisions of alt_contagion (seed 4)" in capsys.readouterr().out
    meta, rows = read_schedule(out, environment=MARKETS_ENVIRONMENT)
    assert meta["markets"] == list(MARKETS) and meta["seed"] == 4
    assert meta["environment"] == MARKETS_ENVIRONMENT
    assert len(rows) == 144 and [r["step"] for r in rows[:3]] == [0.0, 1.0, 2.0]
    assert rows[-1]["time_minutes"] == 1440.0
    columns = list(rows[0])
    assert set(meta["units"]) == set(columns)  # every column has its unit
    for lever in MARKET_LEVERS:
        assert [f"{lever}[{m}]" for m in MARKETS] == [c for c in columns if c.startswith(lever)]
    # Each market's margins: the exchange's (the levers' default engine) x its multiple.
    engine = RiskParams()
    for row in rows[::20]:
        for m in MARKETS:
            assert row[f"mmr[{m}]"] == engine.mmr * row[f"market_mmr_mult[{m}]"]
            assert row[f"imr[{m}]"] == engine.imr * row[f"market_mmr_mult[{m}]"]
        assert sum(row[f"fund_weight_{b}"] for b in ("stable", "yield", "volatile", "hedge")) == (
            pytest.approx(1.0)
        )
    # The levers moved (the run's policy is not the defaults).
    assert len({r["market_mmr_mult[ALT]"] for r in rows}) > 1
    # Played back from its action columns, the environment puts the same levers in force.
    replayed = replay_markets_schedule(out)
    assert len(replayed) == len(rows)
    for got, row in zip(replayed, rows, strict=True):
        assert got == {name: row[name] for name in got}
    # The one-market replay refuses it by name.
    with pytest.raises(ScheduleError, match="a schedule of 'fundgym/MarketsInsuranceFund-v0'"):
        read_schedule(out)


def test_the_json_form_and_a_venues_naming_per_market(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "schedule.json"
    assert _export(run_dir, out, "--format", "json", "--naming", "hyperliquid") == 0
    data = json.loads(out.read_text())
    assert data["naming"] == "hyperliquid" and data["kind"] == "fundgym.schedule"
    for row in data["rows"][::30]:
        for m in MARKETS:  # Hyperliquid sets leverage per market: 1 / the market's IMR
            assert row[f"maxLeverage[{m}]"] == pytest.approx(1.0 / row[f"imr[{m}]"], rel=1e-12)
    assert "maxLeverage" in data["units"]["maxLeverage[ALT]"]
    csv_out = tmp_path / "schedule.csv"
    assert _export(run_dir, csv_out, "--format", "csv") == 0
    _, rows = read_schedule(csv_out, environment=MARKETS_ENVIRONMENT)
    for row, same in zip(rows, data["rows"], strict=True):  # the same episode either way
        assert row["market_mmr_mult[BTC]"] == same["market_mmr_mult[BTC]"]


def test_the_onnx_graph_takes_the_markets_observation_and_gives_every_lever(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    import onnxruntime as ort

    graph = tmp_path / "policy.onnx"
    assert main(["export", "--policy", str(run_dir), "--format", "onnx", "--out", str(graph)]) == 0
    assert "(batch, 42) float32" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(graph).metadata_props}
    assert props["environment"] == MARKETS_ENVIRONMENT
    names = json.loads(props["param_names"])
    assert names[7:10] == [f"market_mmr_mult[{m}]" for m in MARKETS]
    # On the observations a schedule records, the graph gives the schedule's actions, and
    # in natural units its targets (the allocation columns: the buckets' weights).
    sched = tmp_path / "schedule.csv"
    assert _export(run_dir, sched, "--format", "csv") == 0
    meta, rows = read_schedule(sched, environment=MARKETS_ENVIRONMENT)
    obs = np.array([[r[f"obs_{n}"] for n in meta["observation_names"]] for r in rows])
    session = ort.InferenceSession(graph.read_bytes(), providers=["CPUExecutionProvider"])
    action, params = session.run(["action", "params"], {"observation": obs.astype(np.float32)})
    want = np.array([[r[f"action_{n}"] for n in names] for r in rows])
    np.testing.assert_allclose(action, want, atol=1e-5)
    levers = [j for j, n in enumerate(names) if not n.startswith("alloc_")]
    targets = np.array([[r[f"target_{names[j]}"] for j in levers] for r in rows])
    np.testing.assert_allclose(params[:, levers], targets, rtol=1e-4)
    weights = params[:, [names.index(f"alloc_{b}") for b in ("stable", "yield", "volatile")]]
    assert (weights >= 0.0).all() and (weights.sum(axis=1) <= 1.0 + 1e-5).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "table"], "is a multi-market run; the state table distils one market"),
        (["--format", "csv", "--scenario", "calm"], "its network takes 42 observations"),
        (["--format", "csv", "--scenario", "training"], "follows one named scenario"),
        (["--format", "csv", "--scenario", "no_such"], "--scenario: unknown scenario 'no_such'"),
    ],
)
def test_what_a_markets_run_cannot_export_is_refused_by_name(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "out.json"
    command = ["export", "--policy", str(run_dir), "--out", str(out), "--no-progress", *args]
    if "--scenario" not in args:
        command += ["--scenario", "alt_contagion"]
    assert main(command) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_segmented_run_with_collateral_exports_its_haircuts_and_transfer_cap(
    tmp_path: Path,
) -> None:
    """No allocation (segments are cash): no weights in the schedule or the graph's params;
    each collateral asset's haircut and the segments' transfer cap are levers like the rest."""
    import onnx

    cfg_path = tmp_path / "segmented.yaml"
    cfg = tiny(scenario="oct_10_2025_multi", fund_mode="segmented", n_accounts=40)
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "schedule.csv"
    args = ["export", "--policy", str(run), "--scenario", "oct_10_2025_multi", "--out", str(out)]
    assert main([*args, "--format", "csv"]) == 0
    meta, rows = read_schedule(out, environment=MARKETS_ENVIRONMENT)
    assets = meta["collateral_assets"]
    assert assets and "segment_transfer_cap_frac" in rows[0]
    assert all(f"collateral_haircut_frac[{a}]" in rows[0] for a in assets)
    assert not any(c.startswith(("fund_weight_", "alloc_")) for c in rows[0])
    replayed = replay_markets_schedule(out)
    assert all(got == {k: row[k] for k in got} for got, row in zip(replayed, rows, strict=True))
    graph = tmp_path / "policy.onnx"
    assert main(["export", "--policy", str(run), "--format", "onnx", "--out", str(graph)]) == 0
    props = {p.key: p.value for p in onnx.load(graph).metadata_props}
    assert json.loads(props["allocation_buckets"]) == []
    assert json.loads(props["param_names"]) == meta["controlled"]
