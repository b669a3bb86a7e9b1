"""``fundgym levers``: every risk lever with its unit, ranges, default and venue names.

The text comes from :func:`fundgym.envs.levers.describe`, the registry every other part of fundgym
reads, so what ``--help`` says about a lever is what validation, the action mapping and the
exports do. :func:`lever_table` is the short form ``fundgym train --help`` and ``fundgym
evaluate --help`` print.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from fundgym.envs.levers import describe

DESCRIPTION = """\
Every risk parameter of the simulated exchange, as the one registry (envs/levers.py) declares
it: its unit, its hard bounds (what the mechanics accept), its action range (what an action in
[-1, 1] maps onto, and where a configured start value must lie; "-" for a lever no action
sets), its default, and what real venues call it.
"""


def lever_table(names: Iterable[str] | None = None, indent: str = "  ") -> str:
    """A plain-text table of levers: name, action range, default, unit (``names``: a subset)."""
    wanted = None if names is None else set(names)
    rows = [
        (name, action, default, unit)
        for name, unit, _, action, default, _, _ in describe()
        if wanted is None or name in wanted
    ]
    header = ("lever", "action range", "default", "unit")
    widths = [max(len(r[k]) for r in (header, *rows)) for k in range(3)]
    lines = [
        indent
        + "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True))
        + "  "
        + r[3]
        for r in (header, *rows)
    ]
    return "\n".join(lines)


def lever_listing() -> str:
    """Every lever in full: a name line with its doc, then one line per attribute."""
    blocks = []
    for name, unit, bounds, action, default, venues, doc in describe():
        blocks.append(
            f"{name}: {doc}\n"
            f"    unit          {unit}\n"
            f"    hard bounds   {bounds}\n"
            f"    action range  {action}\n"
            f"    default       {default}\n"
            f"    venue names   {venues}"
        )
    return "\n\n".join(blocks)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym levers``."""
    p = sub.add_parser(
        "levers",
        help="list the risk levers: unit, hard bounds, action range, default, venue names",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Print every lever."""
    print(lever_listing())
    return 0
