"""fundgym's tooling around the simulator: training, baselines, evaluation, export, the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fundgym")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"
