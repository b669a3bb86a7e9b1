"""Packaging guards: import names resolve to this checkout, and envs stays torch-free."""

import subprocess
import sys
from pathlib import Path

import agents
import envs

ROOT = Path(__file__).resolve().parent.parent


def test_packages_resolve_inside_the_repository():
    # PyPI has unrelated distributions named `envs` and `agents`; ours must win.
    assert Path(envs.__file__).resolve().parent == ROOT / "envs"
    assert Path(agents.__file__).resolve().parent == ROOT / "agents"


def test_envs_imports_neither_torch_nor_stable_baselines3():
    code = (
        "import sys, envs, envs.mechanics, envs.core.step, envs.core.trading, "
        "envs.core.fund_record, envs.core.synthetic, envs.exchange_env, envs.simulator\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'stable_baselines3', 'agents'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
