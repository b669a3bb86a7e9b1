"""``python -m fundgym``: the ``fundgym`` command line, with a clear word when it cannot start.

The command line lives in :mod:`fundgym.agents`, whose dependencies (stable-baselines3, torch,
pydantic, matplotlib, ...) come with the ``train`` extra; ``pip install fundgym`` alone installs
the environment only. Started without them, it says which package is missing and how to get
it (exit 2), rather than a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run the ``fundgym`` command line; exit 2 with a message if the ``train`` extra is absent."""
    try:
        from fundgym.agents.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "fundgym":
            raise  # a module of fundgym itself: a broken install or a bug, not a missing extra
        print(
            f"fundgym: the command line needs the `train` extra ({exc.name!r} is not "
            "installed): pip install 'fundgym[train]'",
            file=sys.stderr,
        )
        return 2
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
