"""The compiled-kernel cache key (every source a kernel can reach, and nothing else), and the
arrays handed to kernels (one numba type each)."""

from pathlib import Path

import numpy as np
import pytest

import fundgym.envs.jit as jit_module
from fundgym.envs.jit import kernel_array


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


def test_kernel_array_is_a_fresh_writable_c_array_of_the_shape():
    # A read-only view or an F-ordered array is another numba type: a second compile.
    base = np.arange(6.0).reshape(2, 3)
    view = np.broadcast_to(base, (2, 3))  # read-only, the shape already
    assert not view.flags.writeable
    out = kernel_array(view, (2, 3))
    assert out.flags.writeable and out.flags.c_contiguous and not np.shares_memory(out, base)
    np.testing.assert_array_equal(out, base)
    f_ordered = np.asfortranarray(base)
    assert kernel_array(f_ordered, (2, 3)).flags.c_contiguous
    np.testing.assert_array_equal(kernel_array([1.0, 2.0], (2, 2)), [[1.0, 2.0], [1.0, 2.0]])
    assert kernel_array(np.array([3, 4]), (2,)).dtype == np.int64  # dtype None keeps it
    assert kernel_array(5, (3,), np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="broadcast"):
        kernel_array([1.0, 2.0, 3.0], (2,))
