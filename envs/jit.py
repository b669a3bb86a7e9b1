"""The one way fundgym compiles a kernel: ``@jit`` = numba's ``njit(cache=True)``, cached safely.

numba keys a cached kernel on its own source file only. A kernel that calls a kernel from
another file (the compiled tick calls the population's and the margin engine's), or reads a
constant numba froze from another module (the packed parameters' ``P_*`` columns), would keep
running the old code after that file changed, silently. So every fundgym kernel is cached in a
directory named after a digest of the sources kernels can reach: every module of ``envs/`` that
declares kernels (imports this module) and every ``envs`` module those import, transitively.
Any change to any of them starts a fresh cache, and a stale kernel can never run; a change to a
module no kernel can reach (the Gymnasium env, the scenario loader) keeps the cache.

Where: ``$FUNDGYM_NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fundgym/numba`` (by default
``~/.cache/fundgym/numba``), then ``numba-<version>-<digest>/``, then the kernel's folder below
``envs`` (``core/`` for ``envs/core/step.py``). numba's own locators name a file's cache folder
after a hash of its absolute path, so a second clone, or the same sources installed from the
wheel into a virtual environment, compiled every kernel again (a minute or more) although the
digest said the sources were the same; fundgym's locator (:class:`_EnvsCacheLocator`) drops the
absolute path, and numba still checks each file's content hash and each function's bytecode
before it loads. Only fundgym's kernels use it: other numba code in the same process keeps
numba's locators and ``CACHE_DIR``. ``fundgym`` never needs the cache: without it (no writable
directory) kernels compile on first call, which takes seconds.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator

_ENVS_DIR = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The file of ``fundgym.envs`` module ``name`` (dotted, below ``envs``), if it is one."""
    base = _ENVS_DIR.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _envs_imports(path: Path) -> set[Path]:
    """The ``envs`` modules a file imports, and the packages above them, which run first.

    Both ``import fundgym.envs.x`` and ``from fundgym.envs.x import y`` count, where ``y`` may
    itself be a module.
    """
    prefix = "fundgym.envs."
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{a.name}" for a in node.names)
    found: set[Path] = set()
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split(".")
        for k in range(1, len(parts) + 1):
            module = _module_file(".".join(parts[:k]))
            if module is not None:
                found.add(module)
    return found


def _kernel_sources() -> set[Path]:
    """The files kernels can reach: kernel modules, jit.py and what they import, transitively."""
    todo = [p for p in _ENVS_DIR.rglob("*.py") if b"fundgym.envs.jit import" in p.read_bytes()]
    reach: set[Path] = {_ENVS_DIR / "jit.py", *todo}
    while todo:
        for dep in _envs_imports(todo.pop()):
            if dep not in reach:
                reach.add(dep)
                todo.append(dep)
    return reach


def _source_digest() -> str:
    """SHA-256 (16 hex digits) of the sources kernels can reach (see the module docstring)."""
    h = hashlib.sha256()
    for path in sorted(_kernel_sources()):
        h.update(str(path.relative_to(_ENVS_DIR)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """The directory fundgym's compiled kernels are cached in (see the module docstring)."""
    root = os.environ.get("FUNDGYM_NUMBA_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "fundgym" / "numba")
    return Path(root) / f"numba-{numba.__version__}-{_DIGEST}"


_DIGEST = _source_digest()


class _EnvsCacheLocator(UserProvidedCacheLocator):
    """numba's cache locator for a kernel under ``envs/``: :func:`cache_dir`, then its folder.

    The folder is the kernel file's, relative to ``envs/``: the same wherever the sources sit
    (see the module docstring). numba's source stamp (the file's SHA-256) and its index key
    (the function's bytecode, the CPU, numba's version) are unchanged.
    """

    def __init__(self, py_func: Callable[..., Any], py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        folder = Path(py_file).resolve().parent.relative_to(_ENVS_DIR)
        self._cache_path = str(cache_dir().joinpath("envs", *folder.parts))

    @classmethod
    def from_function(cls, py_func: Callable[..., Any], py_file: str) -> Any:
        """The locator, or None where the file is not under ``envs/`` or the folder not writable."""
        if not Path(py_file).resolve().is_relative_to(_ENVS_DIR):
            return None
        # numba's source-file mixin: the file exists, and the folder is made and writable
        return super(UserProvidedCacheLocator, cls).from_function(  # type: ignore[no-untyped-call]
            py_func, py_file
        )


class _EnvsCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_EnvsCacheLocator]  # noqa: RUF012 (numba's class attribute)


class _EnvsFunctionCache(FunctionCache):
    _impl_class = _EnvsCacheImpl


def jit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)``, cached under :func:`cache_dir`.

    Use as ``@jit`` or ``@jit(inline="always", error_model="numpy")``.
    """

    def wrap(f: Callable[..., Any]) -> Any:
        dispatcher = numba.njit(**options)(f)
        # What njit(cache=True) does (Dispatcher.enable_caching), with fundgym's locator. No
        # locator (no writable cache folder) raises: then numba's NullCache stays, and the
        # kernel compiles on each process's first call.
        with contextlib.suppress(RuntimeError):
            dispatcher._cache = _EnvsFunctionCache(f)  # type: ignore[no-untyped-call]
        return dispatcher

    return wrap if fn is None else wrap(fn)


def kernel_array(
    value: Any, shape: int | tuple[int, ...], dtype: Any = None
) -> np.ndarray[Any, np.dtype[Any]]:
    """``value`` broadcast to ``shape`` as a fresh, writable, C-ordered array for a kernel.

    numba compiles a kernel once per argument type, and a read-only array and an F-ordered
    one are types of their own: ``np.ascontiguousarray(np.broadcast_to(v, shape))`` returns
    the read-only broadcast view itself when ``v`` already has ``shape``, so the same call
    compiled a second copy of every kernel it reached (the book statistics, the cross-margin
    scan and waterfall: seconds each on a first call). ``dtype`` ``None`` keeps ``value``'s.

    Raises:
        ValueError: ``value`` does not broadcast to ``shape`` (numpy's message).
    """
    src = np.asarray(value, dtype=dtype)
    out = np.empty(shape, dtype=src.dtype)
    out[...] = src
    return out
