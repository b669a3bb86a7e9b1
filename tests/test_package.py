"""Packaging guards: one import name, resolving to this checkout, and envs stays torch-free."""

import subprocess
import sys
import tomllib
from pathlib import Path

import fundgym
import fundgym.agents
import fundgym.envs

ROOT = Path(__file__).resolve().parent.parent


def test_packages_resolve_inside_the_repository():
    # fundgym.envs and fundgym.agents are the top-level folders, whatever the path they came by.
    assert Path(fundgym.envs.__file__).resolve().parent == ROOT / "envs"
    assert Path(fundgym.agents.__file__).resolve().parent == ROOT / "agents"
    assert Path(fundgym.__file__).resolve().parent == ROOT / "fundgym"


def test_the_wheel_lists_every_package_of_the_tree():
    # pyproject.toml lists the packages explicitly (a wheel must not depend on the checkout's
    # symlinks); a new sub-package that is not listed would be silently left out of the wheel.
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {"fundgym"} | {
        "fundgym." + ".".join(p.parent.relative_to(ROOT).parts)
        for folder in ("envs", "agents")
        for p in (ROOT / folder).rglob("__init__.py")
    }
    assert listed == on_disk


def test_envs_imports_neither_torch_nor_stable_baselines3():
    code = (
        "import sys, fundgym, fundgym.envs.mechanics, fundgym.envs.core.step, "
        "fundgym.envs.core.trading, fundgym.envs.core.fund_record, fundgym.envs.core.synthetic, "
        "fundgym.envs.exchange_env, fundgym.envs.simulator\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3') "
        "or m.startswith('fundgym.agents'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
