"""The compiled-kernel cache key: every source a kernel can reach, and nothing else."""

from pathlib import Path

import pytest

import fundgym.envs.jit as jit_module


def _tree(root: Path) -> None:
    (root / "core").mkdir()
    (root / "core" / "__init__.py").write_text("")
    # a kernel module, a constant module it reads through another module, and a bystander
    (root / "kernels.py").write_text(
        "from fundgym.envs.jit import jit\nfrom fundgym.envs.core import params\n"
    )
    (root / "core" / "params.py").write_text("from fundgym.envs.core.events import EV_X\nP = 1\n")
    (root / "core" / "events.py").write_text("EV_X = 0\n")
    (root / "env.py").write_text("from fundgym.envs.kernels import thing\n")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.setattr(jit_module, "_ENVS_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize("reached", ["kernels.py", "core/params.py", "core/events.py"])
def test_a_change_a_kernel_can_reach_changes_the_key(tree, reached):
    before = jit_module._source_digest()
    (tree / reached).write_text((tree / reached).read_text() + "# edited\n")
    assert jit_module._source_digest() != before


def test_a_module_no_kernel_reaches_keeps_the_key(tree):
    before = jit_module._source_digest()
    (tree / "env.py").write_text("# the env changed\n")
    (tree / "new_module.py").write_text("X = 2\n")
    assert jit_module._source_digest() == before


def test_the_shipped_tick_reaches_the_constants_it_folds():
    reached = {p.relative_to(jit_module._ENVS_DIR).as_posix() for p in jit_module._kernel_sources()}
    assert {"core/params.py", "core/events.py", "tick_kernels.py", "jit.py"} <= reached
    assert "exchange_env.py" not in reached
