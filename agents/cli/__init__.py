"""The ``fundgym`` command line: one subcommand per job, each with its own ``--help``.

One module per subcommand (:mod:`fundgym.agents.cli.demo`, ``simulate``, ``scenarios``, ``levers``,
``train``, ``evaluate``, ``export``, ``bench``); this one builds the parser and dispatches. The
subcommands import the heavy parts (stable-baselines3, torch, onnx, matplotlib) only when
they run, so ``fundgym --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from fundgym.agents.cli import bench, demo, evaluate, export, levers, scenarios, simulate, train


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fundgym",
        description=(
            "Simulate a perpetual-futures exchange's margin, liquidation, insurance-fund and "
            "deleveraging mechanics, and tune its risk parameters."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_demo = sub.add_parser(
        "demo",
        help="the main job: train the default config, evaluate it against baselines on the "
        "crash suite, export its schedule and ONNX graph",
        description=demo.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.main)

    p_sim = sub.add_parser(
        "simulate",
        help="simulate a crash with fixed parameters and print the fund's flows",
        description=simulate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_arguments(p_sim)
    p_sim.set_defaults(func=simulate.main)

    scenarios.add_parser(sub)
    levers.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fundgym`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "regimes", None) is not None:
        bad = [r for r in args.regimes if r not in ("quiet", "crash")]
        if bad:
            parser.error(f"--regimes: unknown regime {bad[0]!r}; allowed: quiet, crash")
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
