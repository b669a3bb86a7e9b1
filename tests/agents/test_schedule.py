"""Exported schedules: self-describing files, exact replay, dYdX naming, the export command."""

import json
from pathlib import Path

import numpy as np
import pytest

from fundgym.agents import evaluate as ev
from fundgym.agents.cli import main
from fundgym.agents.config import load_config
from fundgym.agents.export.schedule import export_schedule
from fundgym.agents.policies import ScheduleError, SchedulePolicy, parse_spec, read_schedule
from fundgym.agents.training.train import train
from fundgym.envs.controls import PARAMS
from tests.tiny_runs import ALL_NINE, TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
TINY = [*TINY_TRAIN, "total_timesteps=128", "hyperparameters.n_epochs=1", *ALL_NINE]
SCENARIO = "venue_flash_wick"  # 180 minutes: 18 decisions


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sched") / "run"
    train(load_config(ROOT / "configs" / "train" / "ppo.yaml", TINY), out, progress=False)
    return out


@pytest.fixture(scope="module")
def csv_file(run_dir):
    path = run_dir.parent / "oct.csv"
    export_schedule(run_dir, path, scenario=SCENARIO, seed=3, fmt="csv", naming="dydx")
    return path


def records(spec_text, seed=3, episodes=1):
    spec = parse_spec(spec_text)
    base = ev.base_env(None, [spec])
    return ev.run_episodes(spec, ev.job_env(base, spec, SCENARIO), episodes, seed, SCENARIO)


def test_schedule_is_self_describing(csv_file, run_dir):
    meta, rows = read_schedule(csv_file)
    assert meta["schema_version"] == "1" and meta["kind"] == "fundgym.schedule"
    assert meta["scenario"] == SCENARIO and meta["seed"] == 3
    assert meta["run_dir"] == str(run_dir.resolve()) and meta["model_file"] == "best/policy.pt"
    assert meta["config"] == (run_dir / "config.yaml").read_text()
    assert len(rows) == 18
    assert [r["time_minutes"] for r in rows] == [10.0 * (i + 1) for i in range(18)]
    assert set(rows[0]) == set(meta["units"])  # every column has its unit
    for name in PARAMS:
        assert name in rows[0] and f"action_{name}" in rows[0]
    assert {"vol_1h_annual", "depth_rel", "fund_coverage_frac", "mark_price"} <= set(rows[0])
    w = sum(rows[5][f"alloc_{b}"] for b in ("stable", "yield", "volatile", "hedge"))
    assert w == pytest.approx(1.0, abs=1e-12)


def test_dydx_names_map_onto_a_real_config(csv_file):
    meta, rows = read_schedule(csv_file)
    for r in rows:
        assert r["max_liquidation_fee_ppm"] == round(r["liquidation_fee_rate"] * 1e6)
        assert r["initial_margin_ppm"] == round(r["imr"] * 1e6)
        assert r["maintenance_fraction_ppm"] == round(r["mmr"] / r["imr"] * 1e6)
    # ppm fields are integers in the file, as dYdX stores them
    header = csv_file.read_text().splitlines()[1].split(",")
    first = dict(zip(header, csv_file.read_text().splitlines()[2].split(","), strict=True))
    assert first["max_liquidation_fee_ppm"].isdigit()
    assert "dYdX v4 x/clob LiquidationsConfig" in meta["units"]["max_liquidation_fee_ppm"]
    assert "(mmr / imr) x 1e6, rounded" in meta["units"]["maintenance_fraction_ppm"]


# Each venue's columns as its own configuration states them, worked from fundgym's columns.
VENUE_COLUMNS = {
    "drift": {
        "margin_ratio_maintenance": lambda r: r["mmr"] * 1e4,  # MARGIN_PRECISION
        "margin_ratio_initial": lambda r: r["imr"] * 1e4,
    },
    "binance": {
        "liquidationFee": lambda r: r["liquidation_fee_rate"],
        "maintMarginRatio": lambda r: r["mmr"],
        "initialLeverage": lambda r: 1.0 / r["imr"],
    },
    "hyperliquid": {"maxLeverage": lambda r: 1.0 / r["imr"]},
}


@pytest.mark.parametrize("venue", list(VENUE_COLUMNS))
def test_every_venue_the_registry_knows_names_columns(run_dir, csv_file, tmp_path, venue):
    path = tmp_path / f"{venue}.json"
    export_schedule(run_dir, path, scenario=SCENARIO, seed=3, fmt="json", naming=venue)
    meta, rows = read_schedule(path)
    assert meta["naming"] == venue
    dydx = {"max_liquidation_fee_ppm", "initial_margin_ppm", "maintenance_fraction_ppm"}
    fundgym = set(read_schedule(csv_file)[1][0]) - dydx
    assert set(rows[0]) - fundgym == set(VENUE_COLUMNS[venue])
    for r in rows:
        for column, formula in VENUE_COLUMNS[venue].items():
            assert r[column] == pytest.approx(formula(r), rel=1e-12), column
    assert all(meta["units"][c] for c in VENUE_COLUMNS[venue])


def test_an_unknown_naming_lists_the_venues(run_dir, tmp_path):
    with pytest.raises(ScheduleError, match="naming 'ftx': allowed fundgym, dydx, drift, binance"):
        export_schedule(run_dir, tmp_path / "x.csv", scenario=SCENARIO, naming="ftx")


def test_replaying_a_schedule_reproduces_the_policy_exactly(csv_file, run_dir):
    model = records(str(run_dir))[0]
    replay = records(f"schedule:{csv_file}")[0]
    assert replay.n_steps == model.n_steps
    for name, values in model.params.items():
        np.testing.assert_array_equal(replay.params[name], values, err_msg=name)
    np.testing.assert_array_equal(replay.fund_balance_usd, model.fund_balance_usd)
    # and the file holds what the model set
    _, rows = read_schedule(csv_file)
    np.testing.assert_array_equal([r["mmr"] for r in rows], model.params["mmr"])


def test_json_and_csv_hold_the_same_schedule(csv_file, run_dir, tmp_path):
    path = tmp_path / "s.json"
    export_schedule(run_dir, path, scenario=SCENARIO, seed=3, fmt="json", naming="dydx")
    meta_j, rows_j = read_schedule(path)
    meta_c, rows_c = read_schedule(csv_file)
    assert rows_j == rows_c
    assert meta_j["units"] == meta_c["units"]
    assert json.loads(path.read_text())["columns"] == list(rows_c[0])


def test_replay_on_another_seed_holds_the_plan_open_loop(csv_file, run_dir):
    # the schedule is time-indexed: on other seeds it sets the same parameters, the model not
    _, rows = read_schedule(csv_file)
    replay = records(f"schedule:{csv_file}", seed=11)[0]
    np.testing.assert_array_equal(replay.params["mmr"], [r["mmr"] for r in rows])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a schedule\n", "not a readable fundgym schedule"),
        ('{"kind": "other", "schema_version": "1"}', "kind = 'other'"),
        ('{"kind": "fundgym.schedule", "schema_version": "9"}', "schema_version = '9'"),
        (
            '{"kind": "fundgym.schedule", "schema_version": "1", "controlled": ["mmr"], '
            '"rows": []}',
            "has no rows",
        ),
        ('{"kind": "fundgym.schedule", "schema_version": "1", "rows": []}', "controlled = None"),
    ],
)
def test_bad_schedule_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ScheduleError, match=message) as err:
        read_schedule(path)
    assert str(path) in str(err.value)


def test_a_schedule_for_other_levers_is_refused(csv_file):
    with pytest.raises(ScheduleError, match="but the environment controls"):
        SchedulePolicy(csv_file, "s", ("mmr",))


def test_export_command(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    code = main(
        ["export", "--policy", str(run_dir), "--format", "csv", "--scenario", SCENARIO,
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and out.is_file()
    assert "18 decisions of venue_flash_wick" in capsys.readouterr().out
    assert main(["export", "--policy", str(run_dir), "--format", "json", "--out", "x"]) == 2
    assert "needs --scenario" in capsys.readouterr().err
    assert main(["export", "--policy", str(tmp_path), "--format", "onnx", "--out", "x"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    onnx_out = tmp_path / "p.onnx"
    assert (
        main(["export", "--policy", str(run_dir), "--format", "onnx", "--out", str(onnx_out)]) == 0
    )
    text = capsys.readouterr().out
    assert "max |onnx - SB3|" in text and onnx_out.is_file()


def test_export_refuses_to_replace_an_unrelated_file_without_force(run_dir, tmp_path, capsys):
    target = tmp_path / "plan.csv"
    target.write_text("a risk team's own plan\n")
    argv = ["export", "--policy", str(run_dir), "--format", "csv", "--scenario", SCENARIO,
            "--out", str(target)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {target}: an existing file that is not a fundgym schedule file" in err
    assert "--force" in err and "Traceback" not in err
    assert target.read_text() == "a risk team's own plan\n"
    assert main([*argv, "--force"]) == 0
    assert read_schedule(target)[0]["scenario"] == SCENARIO
    # now a fundgym schedule: a new export (JSON this time) replaces it without --force
    assert main([*argv[:4], "json", *argv[5:]]) == 0
    assert target.read_text().startswith("{")
