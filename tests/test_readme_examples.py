"""The README's examples run as written, and every one of them is run by a test."""

import re

import pytest

from tests.readme import BLOCKS, EXAMPLES, README

# What each Python example prints (checked by hand): 45010.0 is the bankruptcy price of a
# 0.1 BTC long from 50,000 on 499 of collateral (50,000 - 499 / 0.1); an observation has 32
# numbers and the default environment controls nine levers.
PRINTS = {
    "first": ["fund after the first 10-minute decision: $", "45010.0", "'oct_10_2025'"],
    "static_parameters": ["MMR 5.0%; users' losses", "bps of OI"],
    "markets_env": ["ALT margin x4.0; users' loss $", "; fund pots $"],
    "markets_oct_10": ["9 markets: liquidated $", ", deleveraged $"],
    "gymnasium_loop": ["return ", " bps of OI; fund $"],
    "gymnasium_vector": ["16 exchanges: observations (16, 32), mean reward"],
    "stable_baselines3": ["PPO acted on 4 exchanges: actions of shape (4, 9)"],
}
# Examples with a test of their own: the ONNX one needs an exported policy (below), the
# rl-baselines3-zoo line runs at toy size in tests/test_ecosystem.py.
RUN_ELSEWHERE = {"onnx", "rl_zoo3"}


def test_every_marked_example_is_run_by_a_test():
    names = [name for name, _, _ in BLOCKS]
    assert len(names) == len(set(names)), "two README examples share a name"
    assert set(names) == set(PRINTS) | RUN_ELSEWHERE


def test_the_first_example_is_import_fundgym():
    first_python = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert first_python and first_python.group(1) == EXAMPLES["first"]
    assert EXAMPLES["first"].startswith("import fundgym")


@pytest.mark.parametrize("name", sorted(PRINTS))
def test_readme_example_runs(name, capsys):
    exec(compile(EXAMPLES[name], f"README.md ({name})", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    for expected in PRINTS[name]:
        assert expected in out, f"{name}: {expected!r} not in {out!r}"


def test_readme_onnx_example_runs(tmp_path, monkeypatch, capsys):
    from fundgym.agents.config import load_config
    from fundgym.agents.export.onnx import export_onnx
    from fundgym.agents.training.train import train

    cfg = load_config(
        README.parent / "configs" / "train" / "ppo.yaml",
        ["n_envs=2", "env.n_accounts=16", "env.horizon_minutes=30", "total_timesteps=32",
         "hyperparameters.n_steps=16", "hyperparameters.batch_size=16", "eval.freq=32",
         "eval.episodes=1", "checkpoint.freq=32"],
    )  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    export_onnx(tmp_path / "run", tmp_path / "policy.onnx", n_check=16)
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES["onnx"], "README.md (onnx)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "'mmr'" in out and "'liquidation_fee_rate'" in out
