"""``fundgym demo --quick``: every stage of the main job end to end (train, evaluate, export)."""

import json

import onnx

from fundgym.agents.cli import demo, main
from fundgym.agents.cli.demo import _evaluated_timesteps, _train_runs
from fundgym.agents.config import dump_config, load_config
from fundgym.agents.policies import read_schedule


def test_quick_demo_trains_evaluates_and_exports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for stage in (
        "== 1/4 train",
        "== 2/4 evaluate 7 policies",
        "== 3/4 evaluate the trained policy and best_static on 4 fresh stress draws",
        "== 4/4 export",
    ):
        assert stage in text
    assert "on the crashes, " in text and "on the stress draws, " in text
    for policy in ("ppo", "static:binance", "static:dydx", "static:hyperliquid", "rule"):
        assert f"\n{policy} " in text
    assert "best_static" in text and "hindsight_static" in text
    assert "trained policy " in text and "took train " in text and "total " in text
    for path in (
        "ppo/best/policy.pt",
        "ppo/config.yaml",
        "evaluate/metrics.csv",
        "evaluate/summary.json",
        "evaluate/report.md",
        "evaluate/report.html",
        "evaluate/plots/scatter.png",
        "evaluate_stress/report.html",
        "export/schedule_oct_10_2025.csv",
        "export/policy.onnx",
    ):
        assert (out / path).is_file(), path
        if path != "ppo/config.yaml":
            assert str(out / path) in text
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    assert summary["policies"][0] == "ppo" and "ppo" in summary["dominance"]
    stress = json.loads((out / "evaluate_stress" / "summary.json").read_text())
    assert stress["policies"] == ["ppo", "best_static"]
    assert stress["scenarios"] == ["training"] and stress["episodes"] == 4
    meta, rows = read_schedule(out / "export" / "schedule_oct_10_2025.csv")
    assert meta["scenario"] == "oct_10_2025" and len(rows) == 204  # 2,040 minutes / 10
    assert "max_liquidation_fee_ppm" in rows[0]
    onnx.checker.check_model(onnx.load(str(out / "export" / "policy.onnx")))

    # A second run reuses the finished training instead of training again.
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    assert "reused the finished run" in capsys.readouterr().out


def test_demo_rejects_bad_episodes(tmp_path, capsys):
    assert main(["demo", "--episodes", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--episodes must be >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--train-workers", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--train-workers must be >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--stress-episodes", "-1", "--out", str(tmp_path / "d")]) == 2
    assert "--stress-episodes must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_quick_demo_with_seeds_judges_the_interquartile_mean(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--seeds", "2", "--seed", "5", "--out", str(out), "--no-progress"]
    more = ["--workers", "1", "--train-workers", "2", "--stress-episodes", "0"]
    assert main([*args, *more]) == 0
    text = capsys.readouterr().out
    assert "seeds 5 .. 6, 2 at a time" in text and "== 3/3 export" in text
    assert "== 2/3 evaluate 2 seeds and 6 baselines x 2 crashes x 2 episodes" in text
    assert not (out / "evaluate_stress").exists()
    for seed in (5, 6):
        assert (out / "ppo" / f"seed_{seed}" / "best" / "policy.pt").is_file()
        assert f"\nppo@seed_{seed} " in text
    assert "trained policy over 2 seeds (interquartile mean)" in text
    assert "P(improvement over best_static)" in text and "worst seed" in text
    assert (out / "evaluate" / "seeds.csv").is_file()
    assert (out / "export" / "policy.onnx").is_file()  # the first seed's

    # Trained two at a time in spawned processes, seed 6 is the run it is trained alone.
    cfg = load_config(out / "ppo" / "seed_6" / "config.yaml")
    assert cfg.seed == 6 and cfg.torch_threads == 1
    _train_runs([(tmp_path / "alone", cfg)], 1, progress=False, argv=["fundgym", "demo"])
    alone = (tmp_path / "alone" / "evaluations.csv").read_text()
    assert alone == (out / "ppo" / "seed_6" / "evaluations.csv").read_text()


def test_demo_seeds_refuses_a_single_seed_run_in_place(tmp_path, capsys):
    (tmp_path / "d" / "ppo").mkdir(parents=True)
    (tmp_path / "d" / "ppo" / "config.yaml").write_text("algo: ppo\n")
    assert main(["demo", "--seeds", "3", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--seeds 3:" in err and "holds a single-seed run" in err and "Traceback" not in err
    assert (tmp_path / "d" / "ppo" / "config.yaml").is_file()  # refused: nothing touched
    (tmp_path / "f" / "ppo" / "seed_0").mkdir(parents=True)
    assert main(["demo", "--seeds", "1", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "--seeds 1:" in err and "runs of several seeds (seed_0)" in err
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path / "e")]) == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err


def test_demo_force_replaces_the_other_layouts_runs(tmp_path, monkeypatch):
    """--force: the single-seed run goes before several seeds train (and is kept without it)."""
    seen = []
    monkeypatch.setattr(demo, "_demo", lambda args, cfgs: seen.append(len(cfgs)) or 0)
    run = tmp_path / "d" / "ppo"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("algo: ppo\n")
    (tmp_path / "d" / "evaluate").mkdir()
    assert main(["demo", "--seeds", "3", "--force", "--out", str(tmp_path / "d")]) == 0
    assert seen == [3] and not run.exists() and (tmp_path / "d" / "evaluate").is_dir()
    (run / "seed_0").mkdir(parents=True)
    assert main(["demo", "--seeds", "2", "--out", str(tmp_path / "d")]) == 0  # same layout
    assert seen == [3, 2] and (run / "seed_0").is_dir()


def test_evaluated_timesteps_reads_a_runs_last_evaluation(tmp_path):
    assert _evaluated_timesteps(tmp_path) == 0  # no evaluations.csv yet
    csv = tmp_path / "evaluations.csv"
    csv.write_text("timesteps,scenario,mean_reward,mean_cost\n")
    assert _evaluated_timesteps(tmp_path) == 0
    csv.write_text(
        "timesteps,scenario,mean_reward,mean_cost\n250112,training,-1.0,2.0\n500224,training,-1"
    )
    assert _evaluated_timesteps(tmp_path) == 250112  # the last row is being written
    csv.write_text(
        "timesteps,scenario,mean_reward,mean_cost\n250112,training,-1.0,2.0\n"
        "500224,training,-3.0,4.0\n"
    )
    assert _evaluated_timesteps(tmp_path) == 500224
    csv.write_text("")
    assert _evaluated_timesteps(tmp_path) == 0


def test_demo_refuses_runs_of_another_config_and_force_trains_them_afresh(
    tmp_path, capsys, monkeypatch
):
    """After the default config changes, a saved run is neither reused nor resumed: the demo
    refuses before any work (exit 2, the run named, nothing touched); --force removes it."""
    seen = []
    monkeypatch.setattr(demo, "_demo", lambda args, cfgs: seen.append(len(cfgs)) or 0)
    out = tmp_path / "d"
    cfg = load_config(demo.DEFAULT_TRAIN_CONFIG, ["torch_threads=1", "seed=1"])
    same, other = out / "ppo" / "seed_1", out / "ppo" / "seed_0"
    for run, text in ((same, dump_config(cfg)), (other, "algo: ppo\n")):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(text)
    assert main(["demo", "--seeds", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other} was trained with another config than" in err and "--force" in err
    assert "Traceback" not in err and str(same) not in err
    assert other.is_dir() and same.is_dir() and seen == []
    assert main(["demo", "--seeds", "2", "--force", "--out", str(out)]) == 0
    assert seen == [2] and not other.exists() and (same / "config.yaml").is_file()
    assert demo._outdated_runs(out / "ppo", [cfg]) == []  # one seed: OUT/ppo itself
