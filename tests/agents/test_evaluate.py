"""``fundgym evaluate``: same seeds for every policy, searches and their cache, outputs.

Also what cannot be scored (a metric not finite, an amount beyond any market) and what a
killed evaluation leaves (its workers exit; the next run removes its partial directory).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fundgym.agents import evaluate as ev
from fundgym.agents.cli import main
from fundgym.agents.evaluate import episodes, evaluation
from fundgym.agents.evaluate.metrics import EPISODE_COLUMNS
from fundgym.agents.policies import parse_spec

ROOT = Path(__file__).resolve().parents[2]
TINY_GRID = {"mmr": (0.01, 0.1)}
FAST = ["venue_flash_wick", "oracle_manipulation"]  # 3 hours and 4 hours


@pytest.fixture(scope="module")
def env_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "env.yaml"
    path.write_text(
        yaml.safe_dump({"env": {"n_accounts": 32, "decision_minutes": 10, "horizon_minutes": 60}})
    )
    return path


def kw(env_yaml, spec, scenario):
    return ev.job_env(ev.base_env(env_yaml, [spec]), spec, scenario)


def test_episode_i_of_a_batch_equals_a_run_seeded_seed_plus_i(env_yaml):
    spec = parse_spec("rule")
    batch = ev.run_episodes(spec, kw(env_yaml, spec, "venue_flash_wick"), 3, 10, "wick")
    alone = ev.run_episodes(spec, kw(env_yaml, spec, "venue_flash_wick"), 1, 12, "wick")
    assert [r.seed for r in batch] == [10, 11, 12]
    a, b = batch[2], alone[0]
    for field in ("fund_balance_usd", "mark_price", "liquidation_volume_usd", "reward"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.params["mmr"], b.params["mmr"])


def test_policies_see_the_same_market_and_records_have_the_horizon(env_yaml):
    recs = {}
    for s in ("static:dydx", "static:mmr=0.1"):
        spec = parse_spec(s)
        recs[s] = ev.run_episodes(spec, kw(env_yaml, spec, "venue_flash_wick"), 2, 0, "wick")
    a, b = recs["static:dydx"][0], recs["static:mmr=0.1"][0]
    # venue_flash_wick runs 180 minutes: 18 ten-minute decisions
    assert a.n_steps == b.n_steps == 18
    np.testing.assert_array_equal(a.time_minutes, np.arange(10.0, 181.0, 10.0))
    assert a.initial_open_interest_usd > 0 and a.seed == b.seed == 0
    np.testing.assert_allclose(a.params["mmr"], 0.03, rtol=1e-12)
    np.testing.assert_allclose(b.params["mmr"], 0.1, rtol=1e-12)
    assert a.positions.shape == (18, 9)


def test_an_insolvent_episode_ends_early_and_is_marked_terminated(env_yaml):
    spec = parse_spec("static:mmr=0.03")
    recs = ev.run_episodes(spec, kw(env_yaml, spec, "oracle_manipulation"), 4, 0, "om")
    assert sum(r.terminated for r in recs) >= 2
    for r in recs:
        # the losses that end an episode: socialised, unrecovered and what ADL cost its
        # counterparties (the environment counts each tick's positive haircut; each decision's
        # here, which nets a decision's ticks, though in this crash they all lose)
        lost = r.socialized_loss_usd + r.unrecovered_usd + np.maximum(r.adl_haircut_usd, 0.0)
        uncovered = lost.sum() / r.initial_open_interest_usd
        # insolvency (uncovered loss > 5% of open interest) cuts the 4-hour horizon short
        assert r.terminated == (r.n_steps < 24) == (uncovered > 0.05)


def test_scenarios_expand_crashes_and_reject_typos():
    assert ev.parse_scenarios(["crashes"]) == list(ev.CRASHES)
    assert ev.parse_scenarios(["luna_2022, training", "luna_2022"]) == ["luna_2022", "training"]
    with pytest.raises(ev.EvaluateError, match="unknown scenario 'luna_2021'"):
        ev.parse_scenarios(["luna_2021"])


def test_a_trained_policy_must_share_the_evaluation_mechanics(tmp_path, env_yaml):
    run = tmp_path / "run"
    run.mkdir()
    cfg = yaml.safe_load((ROOT / "configs" / "train" / "ppo.yaml").read_text())
    cfg["defaults"] = str(ROOT / "configs" / "train" / "base.yaml")
    cfg.setdefault("env", {}).update(decision_minutes=30, n_accounts=32)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "final").mkdir()
    spec = parse_spec(str(run))
    with pytest.raises(ev.EvaluateError, match=r"env\.decision_minutes = 30\.0 but the evaluation"):
        ev.job_env(ev.base_env(env_yaml, [spec]), spec, "luna_2022")


# ---- the static search ----


def test_search_is_cached_with_its_settings(tmp_path, env_yaml):
    base = ev.base_env(env_yaml, [])
    args = ("hindsight_static", base, FAST, 2, 0, 1, tmp_path, False, TINY_GRID)
    first = ev.search_static(*args)
    assert not first.cached and len(first.points) == 2
    assert first.best["mmr"] in (0.01, 0.1)
    best = max(first.points, key=lambda p: p["objective"])
    assert first.best_objective == best["objective"]
    cache_files = list(tmp_path.glob("static_search-*.json"))
    assert len(cache_files) == 1
    stored = json.loads(cache_files[0].read_text())
    assert stored["key"]["env"]["n_accounts"] == 32 and stored["key"]["scenarios"] == FAST
    again = ev.search_static(*args)
    assert again.cached and again.best == first.best and again.points == first.points
    # another seed is another search
    other = ev.search_static("hindsight_static", base, FAST, 2, 1, 1, tmp_path, False, TINY_GRID)
    assert not other.cached
    # a corrupt cache entry is recomputed, not trusted
    cache_files[0].write_text("{not json")
    redo = ev.search_static(*args)
    assert not redo.cached and redo.best == first.best


def test_objective_weighs_scenarios_equally():
    rows = [
        {"scenario": "a", "total_reward": 1.0},
        {"scenario": "a", "total_reward": 3.0},
        {"scenario": "b", "total_reward": -10.0},
    ]
    assert ev.objective(rows) == pytest.approx((2.0 - 10.0) / 2)


# ---- end to end ----


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, env_yaml):
    out = tmp_path_factory.mktemp("eval") / "out"
    result = ev.evaluate(
        ["static:dydx", "rule", "best_static", "hindsight_static"],
        FAST,
        2,
        out,
        seed=5,
        config=env_yaml,
        workers=2,
        search_episodes=2,
        cache_dir=None,
        progress=False,
        report=False,
        grid=TINY_GRID,
        argv=["fundgym", "evaluate", "--test"],
    )
    return out, result


def test_metrics_csv_has_one_row_per_policy_scenario_episode(small_run):
    out, result = small_run
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2 * 2
    for col in (
        "policy",
        "scenario",
        "episode",
        "seed",
        "socialized_loss_usd",
        "adl_volume_usd",
        "shortfall_usd",
        "fund_min_usd",
        "liquidation_volume_usd",
        "fee_revenue_usd",
        "mean_open_interest_usd",
        "mean_capital_locked_usd",
    ):
        assert col in rows[0]
    assert list(rows[0])[: len(EPISODE_COLUMNS)] == list(EPISODE_COLUMNS)
    assert {r["policy"] for r in rows} == {"static:dydx", "rule", "best_static", "hindsight_static"}
    # every policy ran the same (scenario, seed) pairs
    pairs = {p: sorted((r["scenario"], r["seed"]) for r in rows if r["policy"] == p) for p in
             ("static:dydx", "rule", "best_static")}  # fmt: skip
    assert pairs["static:dydx"] == pairs["rule"] == pairs["best_static"]
    assert sorted({r["seed"] for r in rows}) == ["5", "6"]
    # the CSV holds the same numbers as the returned rows
    first = result.rows[0]
    assert float(rows[0]["mean_capital_locked_usd"]) == first["mean_capital_locked_usd"]


def test_summary_has_gap_closure_dominance_and_searches(small_run):
    out, _ = small_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "best_static"
    assert summary["gap_closure"]["best_static"] in (0.0, None)
    if summary["gap_closure"]["best_static"] is not None:
        assert summary["gap_closure"]["hindsight_static"] == pytest.approx(1.0)
    assert set(summary["dominance"]) == {"static:dydx", "rule", "hindsight_static"}
    assert set(summary["searches"]) == {"best_static", "hindsight_static"}
    # the hindsight search scored the evaluation episodes themselves: its best objective is
    # the hindsight policy's own objective
    assert summary["searches"]["hindsight_static"]["best_objective"] == pytest.approx(
        summary["objective"]["hindsight_static"], rel=1e-12
    )
    assert summary["objective"]["hindsight_static"] >= summary["objective"]["best_static"]
    lines = {(r["policy"], r["scenario"]) for r in summary["by_scenario"]}
    assert ("rule", "oracle_manipulation") in lines
    for line in summary["by_policy"]:
        assert line["scenario"] == "ALL" and line["episodes"] == 4
        assert "bad_debt_var99_usd" in line and "p_fund_exhausted_ci_high" in line
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["seed"] == 5 and config["episodes"] == 2 and config["scenarios"] == FAST
    assert config["env"]["n_accounts"] == 32
    best = next(p for p in config["policies"] if p["name"] == "best_static")
    assert best["kind"] == "static" and 0.003 <= best["values"]["mmr"] <= 0.1
    # it runs under the engine the frontier picked it with, named in full in config.yaml
    assert best["liquidation_mode"] in ("partial", "binance", "dydx_v4", "hyperliquid", "bitmex")
    assert best["adl_policy"] and 0.0 <= best["fund_to_oi_frac"] <= 0.5
    engine = summary["searches"]["best_static"]["engine"]
    assert engine["liquidation_mode"] == best["liquidation_mode"]
    assert "fundgym evaluate --test" in (out / "command.txt").read_text()


def test_evaluation_is_reproducible(small_run, tmp_path, env_yaml):
    _, result = small_run
    again = ev.evaluate(
        ["rule"], FAST, 2, tmp_path / "again", seed=5, config=env_yaml, workers=1,
        progress=False, report=False,
    )  # fmt: skip
    mine = [r for r in result.rows if r["policy"] == "rule"]
    assert again.rows == mine


def test_an_existing_output_is_not_overwritten_and_a_failure_leaves_nothing(
    small_run, tmp_path, env_yaml, monkeypatch
):
    out, _ = small_run
    with pytest.raises(ev.EvaluateError, match="already exists and is not empty"):
        ev.evaluate(["rule"], FAST, 1, out, config=env_yaml, workers=1, progress=False)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluation, "rows_to_csv", boom)
    target = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="disk full"):
        ev.evaluate(["rule"], FAST, 1, target, config=env_yaml, workers=1, progress=False)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_an_evaluation_but_not_a_users_folder(small_run, tmp_path, env_yaml):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    kw = {"config": env_yaml, "workers": 1, "progress": False, "report": False}
    with pytest.raises(ev.EvaluateError, match=r"is not a fundgym evaluation .*--force"):
        ev.evaluate(["rule"], FAST, 1, mine, overwrite=True, **kw)
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"]
    # an evaluation is replaced with overwrite alone; a user's folder with force
    out, _ = small_run
    assert evaluation.is_evaluation_dir(out) and not evaluation.is_evaluation_dir(mine)
    ev.evaluate(["rule"], FAST, 1, mine, overwrite=True, force=True, **kw)
    assert evaluation.is_evaluation_dir(mine) and not (mine / "chapter1.tex").exists()


def test_cli_rejects_bad_input_with_exit_code_2(capsys, tmp_path):
    cases = [
        (["--policy", "static:ftx"], "unknown preset 'ftx'"),
        (["--policy", "rule", "--scenarios", "mars_2030"], "unknown scenario 'mars_2030'"),
        (["--policy", "rule", "--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--policy", "rule", "--policy", "rule"], "policy 'rule' given twice"),
    ]
    for extra, message in cases:
        code = main(["evaluate", "--out", str(tmp_path / "x"), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2, extra
        assert message in err
    assert not (tmp_path / "x").exists()


def test_cli_prints_the_table_and_writes_the_directory(capsys, tmp_path, env_yaml):
    out = tmp_path / "cli"
    code = main(
        [
            "evaluate", "--policy", "static:binance", "--policy", "rule",
            "--scenarios", "venue_flash_wick", "--episodes", "2", "--out", str(out),
            "--config", str(env_yaml), "--workers", "1", "--no-progress", "--no-report",
        ]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "static:binance" in text and "solvency loss $" in text
    assert (out / "metrics.csv").is_file() and (out / "summary.json").is_file()


def test_the_printed_table_shows_the_loss_at_insolvency():
    from fundgym.agents.cli.evaluate import format_table

    row = {
        "policy": "best_static", "solvency_loss_usd": 591_050.4, "bad_debt_usd": 0.0,
        "adl_volume_usd": 591_050.4, "p_fund_exhausted": 0.18,
        "mean_capital_locked_usd": 445_361.1, "total_reward": -20_869.2,
    }  # fmt: skip
    text = format_table([{**row, "insolvency_decision_loss_usd": 521_889.2}])
    head, _, line = text.splitlines()
    assert "at insolvency $" in head
    assert line.split()[1:3] == ["591,050", "521,889"]
    # a summary written before the column existed: n/a, not a failure
    assert format_table([row]).splitlines()[2].split()[1:3] == ["591,050", "n/a"]


# ---- numbers that cannot be scored; what a killed evaluation leaves ----


def test_a_non_finite_step_stops_the_episode_naming_it(env_yaml, monkeypatch):
    real = episodes.EpisodeRecord

    def nan_shortfall(**kwargs):
        if kwargs["episode"] == 1:
            kwargs["shortfall_usd"] = kwargs["shortfall_usd"].copy()
            kwargs["shortfall_usd"][2] = np.nan
        return real(**kwargs)

    monkeypatch.setattr(episodes, "EpisodeRecord", nan_shortfall)
    spec = parse_spec("rule")
    with pytest.raises(ev.EvaluateError) as exc:
        ev.run_episodes(spec, kw(env_yaml, spec, "venue_flash_wick"), 2, 10, "venue_flash_wick")
    assert str(exc.value) == (
        "policy 'rule' on scenario 'venue_flash_wick', episode 1 (seed 11) cannot be scored: "
        "shortfall_usd must be finite at every step, got a non-finite value at index 2: nan"
    )


def test_an_implausible_loss_stops_evaluate_before_anything_is_written(
    env_yaml, tmp_path, monkeypatch, capsys
):
    real = episodes.run_episodes

    def blown_up(spec, env_kw, n, seed, label):
        records = real(spec, env_kw, n, seed, label)
        if spec.name == "static:binance":
            records[1].socialized_loss_usd[3] = 9.4e89  # a scenario whose prices overflowed
        return records

    monkeypatch.setattr(episodes, "run_episodes", blown_up)
    out = tmp_path / "out"
    with pytest.raises(ev.EvaluateError, match=(
        r"^policy 'static:binance' on scenario 'venue_flash_wick', episode 1 \(seed 1\): "
        r"socialized_loss_usd = 9\.4e\+89 is beyond 1e\+18 USD"
    )):  # fmt: skip
        ev.evaluate(
            ["rule", "static:binance"], ["venue_flash_wick"], 2, out, config=env_yaml,
            workers=1, progress=False, report=False,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no output, no partial directory
    code = main(
        [
            "evaluate", "--policy", "static:binance", "--scenarios", "venue_flash_wick",
            "--episodes", "2", "--out", str(out), "--config", str(env_yaml), "--workers", "1",
            "--no-progress", "--no-report",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "socialized_loss_usd = 9.4e+89 is beyond" in err
    assert "Traceback" not in err and not out.exists()


def test_the_next_evaluation_removes_what_a_killed_one_left(env_yaml, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    partial = tmp_path / f".out.partial-{dead.pid}-0badc0de"
    (partial / "plots").mkdir(parents=True)
    live = tmp_path / f".out.partial-{os.getpid()}-0badc0de"  # a running writer's: kept
    live.mkdir()
    ev.evaluate(
        ["rule"], ["venue_flash_wick"], 1, out, config=env_yaml, workers=1, progress=False,
        report=False,
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "out"]
    assert f"fundgym: removed {partial}, left by process {dead.pid}" in capsys.readouterr().err


def test_a_worker_exits_when_its_parent_is_gone():
    # A process whose recorded parent is not its parent (it died and the worker was re-parented)
    # exits with 1 within a poll, even while its main thread is busy.
    code = (
        "import time\n"
        "from fundgym.agents.evaluate.episodes import exit_with_parent\n"
        "exit_with_parent(1)\n"  # init is not this process's parent
        "while True:\n"
        "    sum(range(10_000))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert proc.returncode == 1


def test_a_trained_policy_keeps_the_allocation_buckets_it_was_trained_to_hold(tmp_path):
    # A run that never held the volatile bucket, evaluated in the default env (all four held):
    # its actions must map over its own buckets, or the volatile bucket would take a share.
    from fundgym.agents.config import dump_config, load_config
    from fundgym.agents.policies import PolicySpec

    cfg = load_config(
        ROOT / "configs" / "train" / "ppo.yaml",
        # sac.yaml's clock and no turnover budget, which must match
        ["env.allocation_minutes=null", "env.allocation_turnover_frac=null"],
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg))
    # sac.yaml holds the fund in stable assets, with every bucket allowed (base.yaml's env)
    base = ev.base_env(ROOT / "configs" / "train" / "sac.yaml", [parse_spec("static:dydx")])
    assert base["allocation_buckets"] == ("stable", "yield", "volatile", "hedge")
    got = ev.job_env(base, PolicySpec("alloc", "trained", path=str(run)), "luna_2022")
    assert got["allocation_buckets"] == ("stable", "yield", "hedge")
    assert got["controlled"] == cfg.env.controlled
    # a static policy in the same evaluation keeps the base's
    assert ev.job_env(base, parse_spec("static:dydx"), "luna_2022")["allocation_buckets"] == (
        "stable", "yield", "volatile", "hedge",
    )  # fmt: skip


def test_a_trained_policy_with_another_turnover_budget_is_refused_naming_it(tmp_path):
    from fundgym.agents.config import dump_config, load_config
    from fundgym.agents.policies import PolicySpec
    from fundgym.agents.rollout import EvaluateError

    cfg = load_config(ROOT / "configs" / "train" / "ppo.yaml", ["env.allocation_minutes=null"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg))
    base = ev.base_env(ROOT / "configs" / "train" / "sac.yaml", [parse_spec("static:dydx")])
    with pytest.raises(EvaluateError) as err:
        ev.job_env(base, PolicySpec("alloc", "trained", path=str(run)), "luna_2022")
    msg = str(err.value)
    assert "env.allocation_turnover_frac = 0.05" in msg and "has None" in msg
