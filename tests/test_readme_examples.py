"""The README's environment examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- readme-example -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_both_rollout_examples():
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("code", BLOCKS, ids=["random_policy", "static_parameters"])
def test_readme_example_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bps of OI" in out


def test_readme_onnx_example_runs(tmp_path, monkeypatch, capsys):
    from fundgym.agents.config import load_config
    from fundgym.agents.export.onnx import export_onnx
    from fundgym.agents.training.train import train

    block = re.search(r"```python\n(import json\nimport numpy as np\nimport onnxruntime.*?)```",
                      README.read_text(), re.S)  # fmt: skip
    assert block, "the README's onnxruntime example is missing"
    cfg = load_config(
        README.parent / "configs" / "train" / "ppo.yaml",
        ["n_envs=2", "env.n_accounts=16", "env.horizon_minutes=30", "total_timesteps=32",
         "hyperparameters.n_steps=16", "hyperparameters.batch_size=16", "eval.freq=32",
         "eval.episodes=1", "checkpoint.freq=32"],
    )  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    export_onnx(tmp_path / "run", tmp_path / "policy.onnx", n_check=16)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'mmr'" in out and "'liquidation_fee_rate'" in out
