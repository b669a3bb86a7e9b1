"""Where fundgym's packaged data lives: the scenario library and the shipped configs.

The ``configs/`` folder ships inside the installed package (package data of ``fundgym``) and is
found through :mod:`importlib.resources`, never through a path relative to a source tree, so a
wheel installed anywhere finds its scenarios and its default training config. In a checkout,
``fundgym/configs`` is a symlink to the top-level ``configs/``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The packaged ``configs/`` folder: ``scenarios/``, ``train/``, ``env/`` and ``zoo/``
#: (rl-baselines3-zoo's hyperparameter file, for ``python -m rl_zoo3.train``). An installed
#: package sits on the file system (never zipped), so this is a plain path; resolved, so that
#: messages in a checkout name configs/... rather than the fundgym/configs symlink.
CONFIG_DIR: Path = Path(str(files("fundgym").joinpath("configs"))).resolve()
#: The scenario library: every ``*.yaml`` file here is a scenario by its stem.
SCENARIO_DIR: Path = CONFIG_DIR / "scenarios"
#: The shipped training configs (``ppo.yaml`` is the default of ``fundgym train``).
TRAIN_CONFIG_DIR: Path = CONFIG_DIR / "train"
