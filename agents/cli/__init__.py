"""The fundgym command line: one subcommand per job, each with its own --help.

One module per subcommand (demo, simulate, scenarios, markets, levers, train, evaluate, calibrate,
size-fund, frontier, export, bench); this one builds the parser, dispatches, and turns a user's
mistake into one message. The subcommands import the heavy parts (stable-baselines3, torch, onnx,
matplotlib) only when they run, so ``fundgym --help`` stays fast.

**Errors.** A subcommand checks everything it was given before it does any work or writes
anything (:mod:`fundgym.agents.cli.guards`) and raises on the first problem; :func:`main` maps
every expected error (invalid configs, scenarios, policy specs, run directories, schedule and
table files, output paths, locked outputs, missing or unreadable files, a full disk) to one
line on stderr naming the file or option, the value and what is allowed, and exit code 2.
Ctrl-C exits with 130. Anything else is a bug and keeps its traceback; ``--debug`` prints the
traceback of an expected error too.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from fundgym.agents.cli import (
    bench,
    calibrate,
    demo,
    evaluate,
    export,
    frontier,
    levers,
    markets,
    scenarios,
    simulate,
    size_fund,
    train,
)
from fundgym.agents.cli.guards import UsageError, plain_text
from fundgym.agents.config import ConfigError
from fundgym.agents.export.onnx import ExportError
from fundgym.agents.outputs import OutputLockError
from fundgym.agents.policies import ScheduleError, SpecError, TableError
from fundgym.agents.rollout import EvaluateError
from fundgym.envs.levers import LeverError
from fundgym.envs.schema import SchemaError

#: Errors that report a user's mistake; their message already names file or option and value.
USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    ConfigError,
    SchemaError,
    SpecError,
    EvaluateError,
    ScheduleError,
    TableError,
    ExportError,
    OutputLockError,
    LeverError,
)
#: The same, from modules only imported when a subcommand needs them (stable-baselines3).
_LAZY_USER_ERRORS = (("fundgym.agents.training.train", "RunDirError"),)
#: OS errors about a path the user gave, even when raised with a message and no file name.
_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
#: OS errors that are the machine's state, not a bug, even without a file name.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand (help texts as plain text)."""
    parser = argparse.ArgumentParser(
        prog="fundgym",
        description=(
            "Simulate a perpetual-futures exchange's margin, liquidation, insurance-fund and "
            "deleveraging mechanics, and tune its risk parameters."
        ),
        epilog="Exit codes: 0 done, 2 a bad argument or input (one message names it), "
        "130 interrupted; any other code with a traceback is a bug.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an expected error too (for a bug report)",
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
    markets.add_parser(sub)
    levers.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    calibrate.add_parser(sub)
    size_fund.add_parser(sub)
    frontier.add_parser(sub)
    export.add_parser(sub)
    bench.add_parser(sub)
    _finish(parser, top=True)
    return parser


class _PlainText(argparse.HelpFormatter):
    """Strips reStructuredText and Markdown markup from descriptions and option help."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def _finish(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Give ``parser`` and every subparser plain-text help and the ``--debug`` option."""
    base = parser.formatter_class
    if isinstance(base, type) and not issubclass(base, _PlainText):
        plain: Any = type(f"Plain{base.__name__}", (_PlainText, base), {})
        parser.formatter_class = plain
    if not top:
        parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the traceback of an expected error too (for a bug report)",
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _finish(child)


def _user_errors() -> tuple[type[Exception], ...]:
    """:data:`USER_ERRORS` and the lazily imported ones that are loaded."""
    lazy = [
        getattr(sys.modules[module], name)
        for module, name in _LAZY_USER_ERRORS
        if module in sys.modules
    ]
    return (*USER_ERRORS, *lazy)


def error_message(exc: BaseException) -> str | None:
    """The one message for an expected error, or ``None`` for a bug (keep its traceback)."""
    if isinstance(exc, ConfigError):
        return f"invalid config\n{exc}"
    if isinstance(exc, _user_errors()):
        return str(exc)
    if isinstance(exc, OSError) and (
        exc.filename is not None
        or isinstance(exc, _FILE_ERRORS)
        or exc.errno in _ENVIRONMENT_ERRNOS
    ):
        hint = ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "; free some space (files written before this one are intact)"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "; choose a path you may write, or fix its permissions"
        if exc.filename is None:
            return f"{exc}{hint}"
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror or exc}{hint}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"a file is not valid JSON ({exc})"
    if isinstance(exc, yaml.YAMLError):
        return f"a file is not valid YAML ({exc})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fundgym`` console script: the subcommand's exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"fundgym {args.command}"
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prog}: {message}", file=sys.stderr)
        return 2


__all__ = ["USER_ERRORS", "build_parser", "error_message", "main"]
