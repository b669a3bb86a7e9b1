"""Training on the multi-market env from a ``markets:`` config, and ``fundgym markets --run``."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv

from fundgym.agents.action_map import CentredActions
from fundgym.agents.cli import main
from fundgym.agents.config import (
    ConfigError,
    MarketsConfig,
    check_scenarios,
    dump_config,
    load_config,
    validate,
)
from fundgym.agents.evaluate.markets_runs import score_episodes
from fundgym.agents.policies import SpecError
from fundgym.agents.policies.markets_run import MarketsRun, load_markets_run, markets_env
from fundgym.agents.training.sb3_markets_env import MarketsVecEnv
from fundgym.agents.training.train import make_vec_env, train
from fundgym.envs.market.sampler import MarketsSamplerSettings
from fundgym.envs.markets_core import MarketsControlCore
from fundgym.envs.markets_env import MarketsInsuranceFundEnv
from fundgym.envs.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "train" / "ppo_markets.yaml"


def tiny(**markets: Any) -> dict[str, Any]:
    """A markets config that trains in seconds: 2 exchanges of 24 accounts, 2 updates."""
    return {
        "algo": "ppo",
        "n_envs": 2,
        "total_timesteps": 256,
        "seed": 3,
        "markets": {"scenario": "alt_contagion", "n_accounts": 24, **markets},
        "hyperparameters": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
        "eval": {"scenarios": ["training"], "episodes": 1, "freq": 128},
        "checkpoint": {"freq": 128},
    }


def test_the_shipped_config_validates_and_names_a_multi_market_scenario() -> None:
    cfg = load_config(SHIPPED)
    assert cfg.markets is not None and cfg.markets.scenario == "alt_contagion"
    assert cfg.markets.centred and cfg.torch_threads == 1
    check_scenarios(cfg, str(SHIPPED))  # builds each scenario's env: the layouts agree
    data = yaml.safe_load(dump_config(cfg))
    assert "env" not in data and data["markets"]["n_accounts"] == 1000
    assert validate(data, "again") == cfg  # what a run directory holds reads back the same


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env": {"n_accounts": 64}}, "c: env = {'n_accounts': 64}: a multi-market config sets"),
        ({"markets": {"reward": {"solvency": -1.0}}}, "markets.reward.solvency"),
        ({"markets": {"reward": {"solvancy": 1.0}}}, "markets.reward.solvancy"),
        ({"markets": {"fund_mode": "pooled"}}, "markets.fund_mode = 'pooled'"),
        ({"markets": {"n_accounts": True}}, "markets.n_accounts = True: a number"),
        ({"markets": {"insolvency_frac": 0.0}}, "markets.insolvency_frac = 0.0"),
        ({"centred_levers": ["mmr"]}, "centred_levers = ['mmr']: none with markets"),
    ],
)
def test_bad_markets_configs_are_named(change: dict[str, Any], message: str) -> None:
    data = tiny()
    for key, value in change.items():
        if key == "markets":
            data["markets"] = {**data["markets"], **value}
        else:
            data[key] = value
    with pytest.raises(ConfigError) as err:
        validate(data, "c")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("markets", "evals", "message"),
    [
        ({"scenario": "calm"}, ["training"], "markets.scenario = 'calm': lists one market"),
        ({"scenario": "no_such"}, ["training"], "markets.scenario = 'no_such': not a library"),
        (
            {},
            ["oct_10_2025_multi"],
            "eval.scenarios.0 = 'oct_10_2025_multi': its actions (37) and observations (99) "
            "differ from markets.scenario's (16, 42)",
        ),
        ({"fund_groups": [0, 1]}, ["training"], "markets (with markets.scenario"),
    ],
)
def test_scenarios_are_checked_before_anything_is_written(
    tmp_path: Path, markets: dict[str, Any], evals: list[str], message: str
) -> None:
    data = tiny(**markets)
    data["eval"]["scenarios"] = evals
    cfg = validate(data, "c")
    with pytest.raises(ConfigError) as err:
        check_scenarios(cfg, "c")
    assert message in str(err.value)
    with pytest.raises(ConfigError):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_training_env_is_one_batch_of_the_multi_market_env_seeded_per_exchange() -> None:
    """Training steps its exchanges as one batch; exchange ``i`` is the env seeded ``seed + i``.

    ``DummyVecEnv`` of one env per exchange (what evaluation keeps, each episode to its own
    end) and the batch give the same observations, rewards and flags, bit for bit, while the
    batch's episode runs: an episode and the start of the next.
    """
    cfg = validate(tiny(), "c")
    venv = make_vec_env(cfg, 3)
    assert isinstance(venv.venv, MarketsVecEnv) and venv.venv.venv.sim.n_accounts == 24
    apart = make_vec_env(cfg, 3, whole_episodes=True)
    assert isinstance(apart.venv, DummyVecEnv)
    for v in (venv, apart):
        v.seed(11)
    obs, own = venv.reset(), apart.reset()
    np.testing.assert_array_equal(obs, own)
    twin = MarketsInsuranceFundEnv(load_scenario("alt_contagion"), n_accounts=24)
    first, _ = twin.reset(seed=12)
    np.testing.assert_array_equal(obs[1], first)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(160):  # alt_contagion: 144 decisions an episode
        action = rng.uniform(-1, 1, (3, *venv.action_space.shape)).astype(np.float32)
        a, b = venv.step(action), apart.step(action)
        for x, y in zip(a[:3], b[:3], strict=True):
            np.testing.assert_array_equal(x, y)
        ended += int(a[2].all())
        for i in np.flatnonzero(a[2]):
            np.testing.assert_array_equal(
                a[3][i]["terminal_observation"], b[3][i]["terminal_observation"]
            )
            assert a[3][i]["TimeLimit.truncated"] == b[3][i]["TimeLimit.truncated"]
    assert ended == 1


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg_path = tmp_path_factory.mktemp("cfg") / "markets.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_markets_run_trains_from_its_config_and_is_reproducible(
    run_dir: Path, tmp_path: Path
) -> None:
    for model in ("best", "final"):
        assert (run_dir / model / "policy.pt").is_file()
        assert (run_dir / model / "normalize.npz").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["markets"]["scenario"] == "alt_contagion" and "env" not in saved
    # The same config and seed train the same network, byte for byte.
    again = tmp_path / "again"
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--out", str(again),
                 "--no-progress"]) == 0  # fmt: skip
    assert _sha(again / "final" / "policy.pt") == _sha(run_dir / "final" / "policy.pt")
    run = load_markets_run(run_dir)
    env = MarketsInsuranceFundEnv(load_scenario("alt_contagion"), n_accounts=24)
    assert (run.n_obs, run.n_act) == (env.observation_space.shape[0], env.action_space.shape[0])


def test_markets_run_scores_the_model_beside_the_defaults_on_the_same_seeds(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scored"
    args = ["markets", "--run", str(run_dir), "--episodes", "2", "--seed", "5", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| trained |" in text and "| defaults |" in text and "trained over defaults" in text
    rows = list(csv.DictReader((out / "policies.csv").open()))
    assert [(r["policy"], r["seed"]) for r in rows] == [
        ("trained", "5"), ("defaults", "5"), ("trained", "6"), ("defaults", "6"),
    ]  # fmt: skip
    assert all(r["decisions"] == "144" for r in rows)  # alt_contagion's day, 10-minute decisions
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["run"] == str(run_dir) and config["markets"]["n_accounts"] == 24
    assert (out / "policies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot
    # Reproducible: the same command gives the same rows.
    again = tmp_path / "again"
    assert main([*args, "--out", str(again)]) == 0
    assert (again / "policies.csv").read_text() == (out / "policies.csv").read_text()


def test_the_two_policies_of_an_episode_share_its_seed(run_dir: Path) -> None:
    """A "trained" policy that holds the defaults scores exactly as the defaults do."""
    run = load_markets_run(run_dir)
    env = MarketsInsuranceFundEnv(load_scenario("alt_contagion"), n_accounts=24)
    held = env.default_action()
    same = MarketsRun(run.run_dir, run.markets, lambda _obs: held, run.n_obs, run.n_act)
    rows = list(score_episodes({None: same}, load_scenario("alt_contagion"), 2, 9))
    for trained, defaults in zip(rows[::2], rows[1::2], strict=True):
        assert {k: v for k, v in trained.items() if k != "policy"} == {
            k: v for k, v in defaults.items() if k != "policy"
        }
    assert [r["seed"] for r in rows] == [9, 9, 10, 10]


def test_model_chooses_which_of_a_runs_models_plays(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model final`` plays final/, the default best/ (else final/), and either is named."""
    assert load_markets_run(run_dir).model_dir == run_dir / "best"
    assert load_markets_run(run_dir, "final").model_dir == run_dir / "final"
    with pytest.raises(SpecError, match=r"model 'last': allowed: \['best', 'final'\]"):
        load_markets_run(run_dir, "last")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    args = ["markets", "--run", str(run), "--episodes", "1", "--seed", "5", "--no-progress"]
    assert main([*args, "--model", "final", "--out", str(tmp_path / "final")]) == 0
    assert "one run, final/ model" in capsys.readouterr().out
    config = yaml.safe_load((tmp_path / "final" / "config.yaml").read_text())
    assert config["model"] == "final" and config["models"] == {"None": str(run / "final")}
    assert main([*args, "--out", str(tmp_path / "best")]) == 0
    assert "one run, best/ model" in capsys.readouterr().out
    # Without best/ (no evaluation finished) the default falls back to final/ and says so.
    shutil.rmtree(run / "best")
    assert main([*args, "--out", str(tmp_path / "fallback")]) == 0
    assert "one run, final/ model" in capsys.readouterr().out
    rows = (tmp_path / "fallback" / "policies.csv").read_text()
    assert rows == (tmp_path / "final" / "policies.csv").read_text()
    # final/ missing: named, exit 2, nothing written; --model needs --run.
    shutil.rmtree(run / "final")
    shutil.copytree(run_dir / "best", run / "best")
    assert main([*args, "--model", "final", "--out", str(tmp_path / "gone")]) == 2
    assert "final: missing" in capsys.readouterr().err and not (tmp_path / "gone").exists()
    assert main(["markets", "--model", "final", "--episodes", "1", "--no-progress"]) == 2
    assert "--model final: chooses a trained run's model; give --run DIR" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fund-mode", "shared"], "--fund-mode: not with --run"),
        (["--accounts", "300", "--policy", "static:binance"], "--policy, --accounts: not with"),
        (["--scenario", "oct_10_2025_multi"], "its network takes 42 observations and gives 16"),
    ],
)
def test_markets_run_refuses_what_does_not_apply(
    run_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["markets", "--run", str(run_dir), *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_one_market_commands_refuse_a_markets_run_by_name(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate = ["evaluate", "--policy", str(run_dir), "--scenarios", "calm", "--no-progress"]
    assert main([*evaluate, "--out", str(tmp_path / "ev")]) == 2
    assert "a multi-market run (its config has markets:)" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_a_one_market_run_is_refused_by_markets_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one"
    one.mkdir()
    cfg = load_config(ROOT / "configs" / "train" / "ppo.yaml")
    (one / "config.yaml").write_text(dump_config(cfg))
    assert main(["markets", "--run", str(one), "--no-progress"]) == 2
    assert "a one-market run (no markets: section)" in capsys.readouterr().err


def test_markets_config_keys_are_the_env_arguments() -> None:
    """Every key but scenario, reward and centred is a keyword of the env (one home each)."""
    import inspect

    params = inspect.signature(MarketsControlCore.__init__).parameters
    keys = set(MarketsConfig.model_fields) - {"scenario", "reward", "centred"}
    assert keys <= set(params), keys - set(params)


def test_centred_actions_hold_the_defaults_at_zero_and_reach_every_position() -> None:
    """``markets.centred``: action 0 is the defaults' episode, bit for bit; +-1 reach the edges.

    In the training batch and in evaluation's one env per exchange alike.
    """
    cfg = validate(tiny(centred=True), "c")
    batch = make_vec_env(cfg, 1)
    apart = make_vec_env(cfg, 1, whole_episodes=True)
    wrapped = apart.venv.envs[0]
    assert isinstance(wrapped, CentredActions)
    plain = MarketsInsuranceFundEnv(load_scenario("alt_contagion"), n_accounts=24)
    zero = np.zeros(plain.action_space.shape)
    for v in (batch, apart):
        v.seed(4)
    a, c = batch.reset()[0], apart.reset()[0]
    b, _ = plain.reset(seed=4)
    for _ in range(20):
        a, ra, *_ = (x[0] for x in batch.step(zero[None]))
        c, rc, *_ = (x[0] for x in apart.step(zero[None]))
        b, rb, *_ = plain.step(plain.default_action())
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)
        assert ra == rb == rc
    assert np.all(wrapped.action(np.ones_like(zero)) == 1.0)
    assert np.all(wrapped.action(-np.ones_like(zero)) == -1.0)


@pytest.mark.parametrize(
    ("algo", "hyper"),
    [
        ("sac", {"learning_starts": 64, "buffer_size": 1000, "batch_size": 32}),
        ("ppo_lagrangian", {"n_steps": 64, "batch_size": 64, "n_epochs": 1}),
    ],
)
def test_other_algorithms_train_on_markets_and_are_scored(
    tmp_path: Path, algo: str, hyper: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Off-policy SAC and the Lagrangian (which reads ``info["cost"]``) run from YAML too."""
    data = {**tiny(centred=True), "algo": algo, "hyperparameters": hyper}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run), "--no-progress"]) == 0
    assert main(["markets", "--run", str(run), "--episodes", "1", "--no-progress"]) == 0
    assert "| trained |" in capsys.readouterr().out


def test_markets_run_of_several_seeds_reports_their_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seeds``: every seed plays the same episodes; seeds.csv's IQM is their mean (2 seeds)."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny(centred=True)))
    group = tmp_path / "seeds"
    args = ["train", "--config", str(path), "--seeds", "3,4", "--out", str(group)]
    assert main([*args, "--no-progress"]) == 0
    out = tmp_path / "scored"
    score = ["markets", "--run", str(group), "--episodes", "2", "--seed", "7", "--no-progress"]
    assert main([*score, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 training seeds (3, 4)" in text and "over 2 training seeds" in text
    rows = list(csv.DictReader((out / "policies.csv").open()))
    assert [(r["policy"], r["run_seed"], r["seed"]) for r in rows] == [
        ("trained", "3", "7"), ("trained", "4", "7"), ("defaults", "", "7"),
        ("trained", "3", "8"), ("trained", "4", "8"), ("defaults", "", "8"),
    ]  # fmt: skip
    stats = list(csv.DictReader((out / "seeds.csv").open()))
    for metric, column in (
        ("solvency_loss_usd", "user_loss_usd"),
        ("mean_capital_locked_usd", "capital_locked_usd"),
    ):
        per_seed = [
            np.mean([float(r[column]) for r in rows if r["run_seed"] == s]) for s in ("3", "4")
        ]
        (iqm,) = [
            r for r in stats
            if r["metric"] == metric and r["statistic"] == "iqm" and r["scenario"] == "ALL"
        ]  # fmt: skip
        assert float(iqm["value"]) == pytest.approx(
            np.mean(per_seed), rel=1e-5
        )  # the CSV keeps 6 digits
        ref = [
            r for r in stats
            if r["metric"] == metric and r["statistic"] == "reference_mean"
            and r["scenario"] == "ALL"
        ]  # fmt: skip
        defaults = [float(r[column]) for r in rows if r["policy"] == "defaults"]
        assert float(ref[0]["value"]) == pytest.approx(np.mean(defaults), rel=1e-5)


def test_a_sampler_trains_on_drawn_days_and_named_scenarios_run_as_written() -> None:
    """``markets.sampler``: training and the held-out ``training`` evaluation draw days around
    the scenario; a named evaluation scenario and ``fundgym markets --run`` play it as written."""
    cfg = validate(tiny(sampler={"crash_prob": 1.0}), "c")
    venv = make_vec_env(cfg, 2)
    assert venv.venv.venv.core.sampler == MarketsSamplerSettings(crash_prob=1.0)
    venv.seed(0)
    venv.reset()
    assert venv.venv.venv.sim.scenario.name == "alt_contagion~sampled"
    held_out = make_vec_env(cfg, 1, "training", whole_episodes=True)
    assert held_out.venv.envs[0].core.sampler is not None
    named = make_vec_env(cfg, 1, "alt_contagion", whole_episodes=True)
    assert named.venv.envs[0].core.sampler is None
    assert cfg.markets is not None
    run = MarketsRun(Path("r"), cfg.markets, lambda obs: obs, 42, 16)
    assert markets_env(run, load_scenario("alt_contagion")).core.sampler is None
    for bad, message in (
        ({"crash_prob": 2.0}, "markets.sampler.crash_prob = 2.0: a number in [0.0, 1.0]"),
        ({"crash": 0.5}, "markets.sampler.crash = 0.5: unknown key"),
    ):
        wrong = validate(tiny(sampler=bad), "c")
        with pytest.raises(ConfigError) as err:
            check_scenarios(wrong, "c")
        assert message in str(err.value)


def test_sampled_scoring_plays_each_episode_on_one_drawn_day_for_both_policies(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--sampled``: each episode's day is drawn from its seed, the same for every policy;
    the days are not the scenario as written, and ``--sampled`` needs ``--run``."""
    run = load_markets_run(run_dir)
    env = MarketsInsuranceFundEnv(load_scenario("alt_contagion"), n_accounts=24)
    held = env.default_action()
    same = MarketsRun(run.run_dir, run.markets, lambda _obs: held, run.n_obs, run.n_act)
    days = MarketsSamplerSettings(crash_prob=1.0, idio_prob=1.0)
    sc = load_scenario("alt_contagion")
    drawn = list(score_episodes({None: same}, sc, 2, 9, sampler=days))
    for trained, defaults in zip(drawn[::2], drawn[1::2], strict=True):
        assert {k: v for k, v in trained.items() if k != "policy"} == {
            k: v for k, v in defaults.items() if k != "policy"
        }
    written = list(score_episodes({None: same}, sc, 2, 9))
    assert [r["return"] for r in drawn] != [r["return"] for r in written]
    out = tmp_path / "sampled"
    args = ["markets", "--run", str(run_dir), "--episodes", "1", "--sampled", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    assert "(drawn days around it: --sampled)" in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["sampled"] == {"crash_prob": 0.7, "idio_prob": 0.5}  # the run has none
    assert main(["markets", "--sampled", "--no-progress"]) == 2
    assert "--sampled plays a trained run's episodes" in capsys.readouterr().err


def test_sampler_scores_a_run_on_days_drawn_with_the_settings_given(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--sampler``: the days the settings draw, whatever the run trained on, so runs of
    different training distributions can be scored on the same days."""
    args = ["markets", "--run", str(run_dir), "--episodes", "1", "--no-progress"]
    assert main([*args, "--sampled", "--out", str(tmp_path / "own")]) == 0
    same = ["--sampler", "crash_prob=0.7,idio_prob=0.5"]
    assert main([*args, *same, "--out", str(tmp_path / "given")]) == 0
    own = (tmp_path / "own" / "policies.csv").read_text()
    assert (tmp_path / "given" / "policies.csv").read_text() == own  # the run has no sampler
    assert main([*args, "--sampler", "crash_prob=1", "--out", str(tmp_path / "other")]) == 0
    config = yaml.safe_load((tmp_path / "other" / "config.yaml").read_text())
    assert config["sampled"] == {"crash_prob": 1.0, "idio_prob": 0.5}
    capsys.readouterr()
    for bad, message in (
        ("crash_prob=2", "--sampler: crash_prob = 2.0: a number in [0.0, 1.0]"),
        ("crush=1", "--sampler: unknown key 'crush'; allowed: crash_prob, idio_prob"),
        ("crash_prob", "is not KEY=VALUE"),
    ):
        assert main([*args, "--sampler", bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["markets", "--sampler", "crash_prob=1", "--no-progress"]) == 2
    assert "--sampler plays a trained run's episodes" in capsys.readouterr().err
