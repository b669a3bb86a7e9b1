"""The compiled-kernel cache key (every source a kernel can reach, and nothing else), and the
arrays handed to kernels (one numba type each)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fundgym
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


# The package as installed: fundgym/ with its envs, agents and configs (links followed).
PACKAGE = Path(fundgym.__file__).parent
IGNORED = shutil.ignore_patterns("__pycache__")

KERNEL_CALL = """
from fundgym.envs.fund.kernels import black_scholes_put as f
import fundgym.envs.fund.kernels as k
print(f(100.0, 90.0, 0.1, 0.8))
print(k.__file__)
print(f.stats.cache_path)
print(sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
"""


def _kernel_call(cache: Path, pythonpath: Path | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["FUNDGYM_NUMBA_CACHE_DIR"] = str(cache)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", KERNEL_CALL], env=env, cwd=Path(__file__).parent,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_the_cache_holds_for_the_same_sources_wherever_they_sit(tmp_path):
    # numba's own locators name a cache folder after the file's absolute path: a second clone
    # or the installed wheel compiled everything again. fundgym's keys on the place below envs/.
    cache = tmp_path / "cache"
    first = _kernel_call(cache)
    folder = jit_module.cache_dir().name  # this checkout's digest (and numba's version)
    assert first[2] == str(cache / folder / "envs" / "fund")
    assert first[3] == "0 1"  # compiled
    copy = tmp_path / "elsewhere"
    shutil.copytree(PACKAGE, copy / "fundgym", ignore=IGNORED)
    moved = _kernel_call(cache, pythonpath=copy)
    assert moved[1] == str(copy / "fundgym" / "envs" / "fund" / "kernels.py")  # the copy ran
    assert moved[2] == first[2] and moved[3] == "1 0"  # loaded, not compiled
    assert moved[0] == first[0]


def test_the_copy_of_edited_sources_gets_a_fresh_cache(tmp_path):
    cache = tmp_path / "cache"
    copy = tmp_path / "elsewhere"
    shutil.copytree(PACKAGE, copy / "fundgym", ignore=IGNORED)
    kernels = copy / "fundgym" / "envs" / "fund" / "kernels.py"
    kernels.write_text(kernels.read_text() + "\n# edited\n")
    _kernel_call(cache)
    edited = _kernel_call(cache, pythonpath=copy)
    assert Path(edited[2]).parent.parent != cache / jit_module.cache_dir().name
    assert edited[3] == "0 1"


def test_kernels_run_without_a_writable_cache(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = _kernel_call(blocker / "cache")  # cannot be made: compiled, not cached
    assert float(out[0]) > 0
    assert out[2] == "None"  # numba's NullCache: nothing read or written
