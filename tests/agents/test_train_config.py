"""Training configs: defaults files, overrides, and every validation error path."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fundgym.agents.cli import main
from fundgym.agents.config import (
    ConfigError,
    PPOHyper,
    SACHyper,
    apply_overrides,
    dump_config,
    load_config,
    load_yaml,
    parse_override,
    saved_config_matches,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"
SAC = ROOT / "configs" / "train" / "sac.yaml"


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_configs_validate_and_share_base():
    ppo = load_config(PPO)
    sac = load_config(SAC)
    assert ppo.algo == "ppo" and isinstance(ppo.hyperparameters, PPOHyper)
    assert sac.algo == "sac" and isinstance(sac.hyperparameters, SACHyper)
    # Both inherit the env and eval sections from base.yaml (ppo.yaml adds the allocation,
    # the next test).
    keep = ("controlled", "allocation_minutes", "allocation_turnover_frac", "allocation_buckets")
    same = dataclasses.replace(
        ppo.env,
        reward=sac.env.reward,
        **{k: getattr(sac.env, k) for k in keep},
    )
    assert same == sac.env
    assert ppo.env.n_accounts == 1024 and ppo.env.scenario == "training"
    assert ppo.eval == sac.eval
    assert ppo.n_envs == 128 and sac.n_envs == 16
    assert sac.normalize.reward is False and ppo.normalize.reward is True  # sac overrides one key


def test_the_default_is_base_plus_three_fund_buckets_and_the_fund_pnl_weight():
    # Since 2026-12-03 the default (ppo.yaml) learns the fund's allocation too (issue 21);
    # sac.yaml keeps base.yaml's five levers with the fund in stable assets.
    from fundgym.envs.controls import PARAMS

    ppo = load_config(PPO)
    sac = load_config(SAC)
    alloc = load_config(ROOT / "configs" / "train" / "ppo_allocation.yaml")
    assert alloc == ppo  # the former name, kept for scripts: the default itself
    assert sac.env.controlled == (
        "liquidation_fee_rate",
        "liquidation_fee_fund_share",
        "mmr",
        "imr_multiple",
        "trading_fee_fund_share",
    )
    held = ("alloc_stable", "alloc_yield", "alloc_hedge")
    assert ppo.env.controlled == tuple(n for n in PARAMS if n != "alloc_volatile")
    assert set(ppo.env.controlled) - set(sac.env.controlled) == set(held)
    # the volatile bucket excluded, not merely uncontrolled (its logit would keep a share)
    assert ppo.env.allocation_buckets == ("stable", "yield", "hedge")
    assert sac.env.allocation_buckets == ("stable", "yield", "volatile", "hedge")
    assert tuple(ppo.centred_levers) == held
    assert (ppo.env.allocation_minutes, ppo.env.allocation_turnover_frac) == (240.0, 0.05)
    # The reward is base.yaml's but for the extra weight on the fund's own PnL and the price
    # of locked capital, the fund's and the maintenance margin's (docs/benchmarks.md).
    assert ppo.env.reward.fund_pnl == 19.0 and sac.env.reward.fund_pnl == 0.0
    assert (ppo.env.reward.capital_cost, ppo.env.reward.margin_cost) == (10_000.0, 10_000.0)
    assert (sac.env.reward.capital_cost, sac.env.reward.margin_cost) == (1.0, 1.0)
    unpriced = dataclasses.replace(ppo.env.reward, fund_pnl=0.0, capital_cost=1.0, margin_cost=1.0)
    assert unpriced == sac.env.reward
    assert ppo.env.reward.adl_weight == 1.0


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(PPO)
    text = dump_config(cfg)
    again = load_config(write(tmp_path, yaml.safe_load(text)))
    assert again == cfg
    assert dump_config(again) == text
    # Every default is written out, so a run directory says exactly how its model was made.
    data = yaml.safe_load(text)
    assert data["hyperparameters"]["gae_lambda"] == 0.95
    assert data["env"]["reward"]["solvency"] == 20.0
    assert data["env"]["taker_fee_rate"] == 0.0005


def test_defaults_merge_deep_and_config_wins(tmp_path):
    write(tmp_path, {"env": {"n_accounts": 64, "reward": {"solvency": 5.0}}, "n_envs": 4}, "b.yaml")
    top = write(
        tmp_path,
        {
            "defaults": "b.yaml",
            "env": {"reward": {"change": 0.5}},
            "hyperparameters": {"n_steps": 8, "batch_size": 32},
        },
    )
    cfg = load_config(top)
    assert cfg.env.n_accounts == 64
    assert cfg.env.reward.solvency == 5.0 and cfg.env.reward.change == 0.5
    assert cfg.n_envs == 4


def test_yaml_anchors_work(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        "shared: &acc 77\n"
        "env: {n_accounts: *acc}\n"
        "n_envs: 2\n"
        "hyperparameters: {n_steps: 4, batch_size: 8}\n"
    )
    with pytest.raises(ConfigError, match=r"shared = 77: unknown key"):
        load_config(path)  # anchors need a home; a stray top-level key is still rejected
    path.write_text(
        "env: {n_accounts: &acc 77}\n"
        "eval: {episodes: *acc}\n"
        "n_envs: 2\n"
        "hyperparameters: {n_steps: 4, batch_size: 8}\n"
    )
    cfg = load_config(path)
    assert cfg.env.n_accounts == 77 and cfg.eval.episodes == 77


def test_overrides_parse_values_as_yaml():
    assert parse_override("n_envs=32") == (["n_envs"], 32)
    assert parse_override("hyperparameters.learning_rate=1e-4") == (
        ["hyperparameters", "learning_rate"],
        1e-4,
    )
    assert parse_override("eval.scenarios=[calm, volatile]") == (
        ["eval", "scenarios"],
        ["calm", "volatile"],
    )
    cfg = load_config(PPO, ["env.reward.solvency=40", "n_envs=64", "seed=7"])
    assert cfg.env.reward.solvency == 40.0 and cfg.n_envs == 64 and cfg.seed == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # unknown keys, at every level, with what is allowed
        (["n_env=4"], r"ppo\.yaml: n_env = 4: unknown key; allowed: \[.*'n_envs'"),
        (["env.n_acounts=4"], r"ppo\.yaml: env\.n_acounts = 4: unknown key; allowed: \["),
        (["env.reward.solvncy=1"], r"env\.reward\.solvncy = 1: unknown key"),
        (
            ["hyperparameters.n_step=4"],
            r"hyperparameters\.n_step = 4: unknown key; allowed: \[.*'n_steps'",
        ),
        (["eval.every=4"], r"eval\.every = 4: unknown key; allowed: \['deterministic', 'episodes'"),
        (["hyperparameters.policy_kwargs.net=[3]"], r"policy_kwargs\.net = \[3\]: unknown key"),
        # wrong types
        (["n_envs=many"], r"n_envs = 'many': Input should be a valid integer"),
        (["env.n_accounts=lots"], r"env\.n_accounts = 'lots': "),
        (["hyperparameters.learning_rate=fast"], r"learning_rate = 'fast': Input should be"),
        (["normalize.observation=maybe"], r"normalize\.observation = 'maybe': true or false"),
        (["eval.scenarios=calm"], r"eval\.scenarios = 'calm': Input should be a valid list"),
        # out of range
        (["n_envs=0"], r"n_envs = 0: Input should be greater than or equal to 1"),
        (["total_timesteps=-5"], r"total_timesteps = -5: Input should be greater than or equal"),
        (["hyperparameters.gamma=1.5"], r"hyperparameters\.gamma = 1\.5: Input should be less"),
        (["hyperparameters.n_epochs=0"], r"n_epochs = 0: Input should be greater than or equal"),
        (["env.decision_minutes=0"], r"env\.decision_minutes = 0: a number in \(0\.0, 10080"),
        (["env.reward.solvency=-1"], r"env\.reward\.solvency = -1: a number in \[0\.0"),
        (["eval.episodes=0"], r"eval\.episodes = 0: Input should be greater than or equal to 1"),
        (["checkpoint.freq=0"], r"checkpoint\.freq = 0: Input should be greater than or equal"),
        (
            ["hyperparameters.policy_kwargs.net_arch=[0]"],
            r"net_arch widths must lie in \[1, 4096\]",
        ),
        # enumerations
        (
            ["algo=dqn"],
            r"algo = 'dqn': Input should be 'ppo', 'sac', 'td3', 'a2c' or 'ppo_lagrangian'",
        ),
        (["device=tpu"], r"device = 'tpu': Input should be 'cpu', 'cuda' or 'auto'"),
        (["env.fallback=pray"], r"env\.fallback = 'pray': one of \['adl', 'socialize'\]"),
        # the environment's schema names a bad lever (agents does not check it twice)
        (
            ["env.controlled=[mmr, leverage]"],
            r"ppo\.yaml: env\.controlled = \['mmr', 'leverage'\]: unknown parameter 'leverage'; "
            r"allowed: "
            r"\['liquidation_fee_rate', ",
        ),
        (
            ["env.controlled=[mmr, imr]"],
            r"env\.controlled = \['mmr', 'imr'\]: 'imr' has hard bounds only, no action range; "
            r"allowed: \[",
        ),
        (
            ["env.fixed.mmr=0.9"],
            r"env\.fixed\.mmr = 0\.9: a number in \[0\.003, 0\.1\] \(the lever's action range",
        ),
        # cross-field
        (["hyperparameters.batch_size=999999"], r"batch_size = 999999: at most n_steps x n_envs"),
    ],
)
def test_every_bad_value_is_named_with_file_field_value_and_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PPO, overrides)


# A boolean where a number is expected, or anything but a boolean where one is expected, is an
# error: never 1 for true (Python's reading) nor true for yes/on (YAML 1.1's).
BAD_TYPES = [
    ("seed=true", "seed = True: a number (int), not true/false"),
    ("n_envs=false", "n_envs = False: a number (int), not true/false"),
    ("torch_threads=true", "torch_threads = True: a number (int), not true/false"),
    ("env_threads=true", "env_threads = True: a number (int), not true/false"),
    (
        "hyperparameters.learning_rate=true",
        "hyperparameters.learning_rate = True: a number (float), not true/false",
    ),
    (
        "hyperparameters.target_kl=false",
        "hyperparameters.target_kl = False: a number (float), not true/false",
    ),
    (
        "hyperparameters.policy_kwargs.net_arch=[64, true]",
        "hyperparameters.policy_kwargs.net_arch.1 = True: a number (int), not true/false",
    ),
    ("eval.deterministic=yes", "eval.deterministic = 'yes': true or false"),
    ("eval.deterministic=1", "eval.deterministic = 1: true or false"),
    ("normalize.reward=0", "normalize.reward = 0: true or false"),
    ("normalize.observation=on", "normalize.observation = 'on': true or false"),
    (
        "hyperparameters.policy_kwargs.ortho_init=1.0",
        "hyperparameters.policy_kwargs.ortho_init = 1.0: true or false",
    ),
    # the env section, through the environment's own schema
    ("env.n_accounts=true", "env.n_accounts = True: a number (int), not true/false"),
    ("env.fixed.mmr=true", "env.fixed.mmr = True: a number (float), not true/false"),
]


@pytest.mark.parametrize(("override", "message"), BAD_TYPES)
def test_a_value_of_the_wrong_kind_is_an_error_not_a_coercion(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PPO, [override])
    assert err.value.problems == [f"{PPO}: {message}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: true\n", "seed = True: a number (int), not true/false"),
        ("seed: on\n", "seed = 'on': Input should be a valid integer"),
        ("eval: {deterministic: yes}\n", "eval.deterministic = 'yes': true or false"),
        ("eval: {deterministic: 1}\n", "eval.deterministic = 1: true or false"),
        ("normalize: {reward: no}\n", "normalize.reward = 'no': true or false"),
        ("hyperparameters: {gamma: true}\n", "hyperparameters.gamma = True: a number (float)"),
    ],
)
def test_a_file_value_of_the_wrong_kind_is_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text("defaults: " + str(PPO) + "\n" + text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems[0].startswith(f"{path}: {message}")


@pytest.mark.parametrize(("override", "message"), BAD_TYPES[:4] + BAD_TYPES[6:9])
def test_train_command_refuses_a_wrong_kind_with_exit_code_2(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["train", "--set", override, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fundgym train: invalid config\n")
    assert f"ppo.yaml: {message}" in err
    assert not out.exists()  # nothing trained, nothing written


def test_train_command_reports_every_wrong_kind_without_a_traceback(tmp_path):
    last = {override.split("=")[0]: (override, message) for override, message in BAD_TYPES}
    args = [a for override, _ in last.values() for a in ("--set", override)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fundgym.agents.cli",
            "train",
            *args,
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # every training key is reported; the env section stops at its first problem
    lines = proc.stderr.splitlines()
    assert lines[0] == "fundgym train: invalid config"
    expected = [m for key, (_, m) in last.items() if not key.startswith("env.")]
    assert sorted(lines[1:]) == sorted(
        f"{PPO}: {m}" for m in [*expected, last["env.n_accounts"][1]]
    )
    assert not (tmp_path / "run").exists()


def test_config_yaml_reads_yaml_1_2_booleans_and_exponent_floats():
    # YAML 1.1 (PyYAML's default) reads yes/on as true and 3e-4 as a string
    assert yaml.safe_load("yes") is True and yaml.safe_load("3e-4") == "3e-4"
    assert [load_yaml(t) for t in ("true", "False", "yes", "on", "off", "no")] == [
        True,
        False,
        "yes",
        "on",
        "off",
        "no",
    ]
    assert [load_yaml(t) for t in ("3e-4", "2.2e8", "-1E-3", "1e+5", "1.5", "7", "1_000")] == [
        3e-4,
        2.2e8,
        -1e-3,
        1e5,
        1.5,
        7,
        1000,
    ]
    assert load_yaml("e5") == "e5" and load_yaml("3e") == "3e"  # not numbers
    cfg = load_config(PPO, ["hyperparameters.learning_rate=3e-4", "eval.freq=2.5e5"])
    assert cfg.hyperparameters.learning_rate == 3e-4 and cfg.eval.freq == 250_000


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(PPO, ["n_envs=0", "env.n_accounts=0", "hyperparameters.n_epochs=0"])
    assert len(err.value.problems) == 3


def test_algo_specific_keys(tmp_path):
    # n_steps is PPO's; SAC rejects it and lists what it accepts.
    with pytest.raises(ConfigError, match=r"hyperparameters\.n_steps = 32: unknown key.*'tau'"):
        load_config(SAC, ["hyperparameters.n_steps=32"])
    with pytest.raises(ConfigError, match=r"ent_coef must be 'auto' or > 0"):
        load_config(SAC, ["hyperparameters.ent_coef=0.0"])
    cfg = load_config(SAC, ["hyperparameters.ent_coef=0.1"])
    assert cfg.hyperparameters.ent_coef == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", r"<top> = \['a', 'b'\]: a mapping of training settings"),
        ("env: [1\n", r"not valid YAML"),
        ("defaults: 3\n", r"defaults = 3: a file name or a list of them"),
        ("defaults: missing.yaml\n", r"defaults names .missing\.yaml., which is neither a file"),
        ("hyperparameters: 5\n", r"hyperparameters = 5: a mapping of ppo settings"),
    ],
)
def test_file_level_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_defaults_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: b.yaml\n")
    (tmp_path / "b.yaml").write_text("defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="defaults form a cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_file_and_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        parse_override("n_envs")
    with pytest.raises(ConfigError, match=r"n_envs = 4 is not a mapping"):
        apply_overrides({"n_envs": 4}, ["n_envs.x=1"])


def test_validate_fills_defaults_in_a_minimal_config():
    cfg = validate(
        {"env": {}, "hyperparameters": {"n_steps": 8, "batch_size": 32}, "n_envs": 4}, "<test>"
    )
    assert cfg.hyperparameters.n_steps == 8
    assert cfg.hyperparameters.n_epochs == 10
    assert cfg.env.n_accounts == 1024  # the environment's own default
    assert cfg.algo == "ppo" and cfg.total_timesteps == 1_000_000


def test_env_threads_reach_the_training_env_and_change_no_number(monkeypatch):
    """``env_threads`` spreads the training env's exchanges over threads, bit for bit."""
    import numba
    import numpy as np

    from fundgym.agents.training.train import make_vec_env

    monkeypatch.delenv("FUNDGYM_THREADS", raising=False)
    with pytest.raises(ConfigError, match="env_threads = 0"):
        load_config(PPO, ["env_threads=0"])
    rows = []
    for threads in ("2", "null"):
        cfg = load_config(PPO, ["env.n_accounts=16", f"env_threads={threads}"])
        assert cfg.to_dict()["env_threads"] == (2 if threads == "2" else None)  # recorded
        venv = make_vec_env(cfg, 4)
        venv.seed(3)
        obs = [venv.reset()]
        rng = np.random.default_rng(0)
        for _ in range(5):
            obs.append(venv.step(rng.uniform(-1, 1, (4, venv.action_space.shape[0])))[0])
        rows.append((venv.venv.venv.core.sim.threads, np.stack(obs)))
    assert rows[0][0] == min(2, numba.config.NUMBA_NUM_THREADS) and rows[1][0] == 1
    np.testing.assert_array_equal(rows[0][1], rows[1][1])


def test_a_saved_config_matches_when_it_resolves_alike(tmp_path):
    # A run saved before a setting was added (here the reward's fund_shortfall weight, at its
    # default 0) is the same run: --resume and the demo's reuse compare resolved configs.
    cfg = load_config(PPO)
    text = dump_config(cfg)
    assert "    fund_shortfall: 0.0\n" in text
    saved = tmp_path / "config.yaml"
    saved.write_text(text.replace("    fund_shortfall: 0.0\n", ""))
    assert saved.read_text() != text and saved_config_matches(saved, cfg)
    saved.write_text(text)
    assert saved_config_matches(saved, cfg)
    # a different value, an unknown setting or a file that is not a config do not match
    saved.write_text(text.replace("    fund_shortfall: 0.0\n", "    fund_shortfall: 1.0\n"))
    assert not saved_config_matches(saved, cfg)
    saved.write_text(text.replace("algo: ppo\n", "algo: ppo\nmystery: 1\n"))
    assert not saved_config_matches(saved, cfg)
    for junk in ("[1, 2", "- a list\n", ""):
        saved.write_text(junk)
        assert not saved_config_matches(saved, cfg)
