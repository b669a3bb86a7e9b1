"""What every subcommand checks before it does any work or writes anything.

A user's mistake must stop a command before it trains, simulates or writes, with one message
naming the option or file, the value and what is allowed (exit code 2, no traceback). This
module is the one home of the checks the subcommands share:

* **Numbers.** :func:`at_least` and :func:`check_seed`: counts of at least 1 (or 0), seeds in
  ``[0, 2**63 - 1]``.
* **Scenarios.** :func:`load_scenario_checked` loads a library name or YAML path and turns
  every way that can fail (unknown name, missing or unreadable file, not UTF-8, not YAML, a
  schema violation) into a :class:`UsageError` naming the option and the file.
* **Outputs.** :func:`check_output` refuses an output path that cannot be written (a file
  where a directory is needed or the reverse, a path inside a file, a folder that is not
  writable) and an existing output that fundgym did not write, unless ``--force``. Each kind
  of output (:data:`OUTPUT_KINDS`) says how fundgym recognises its own files, and that text is
  what ``--help`` prints beside ``--force``.
* **Names.** :func:`safe_name` turns a scenario's or policy's name into a file name, and
  :func:`inside` checks that a derived path stays inside ``--out``.
* **Help text.** :func:`plain_text` strips reStructuredText and Markdown markup from the
  docstrings and descriptions ``--help`` reuses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fundgym.agents.evaluate.backends import BACKENDS
from fundgym.agents.evaluate.evaluation import EVALUATION_FILES, is_evaluation_dir
from fundgym.envs.scenarios import Scenario, load_scenario
from fundgym.envs.schema import SchemaError

#: The largest seed any command accepts (the scenario schema's own upper bound).
MAX_SEED = 2**63 - 1
#: How much of an existing file is read to recognise it as a fundgym output.
_HEAD_BYTES = 8192
#: Larger files are not read whole to recognise them (a fundgym ONNX graph is far smaller).
_MAX_SCAN_BYTES = 64 * 2**20


class UsageError(ValueError):
    """A command-line value that is not allowed; the message names option, value and rule."""


# ---------------------------------------------------------------- numbers ----


def at_least(option: str, value: int, minimum: int) -> None:
    """Refuse ``value`` of ``option`` below ``minimum`` (``--episodes must be >= 1, got 0``)."""
    if value < minimum:
        raise UsageError(f"{option} must be >= {minimum}, got {value}")


def check_seed(option: str, value: int | None) -> None:
    """Refuse a seed outside ``[0, MAX_SEED]`` (``None``: the default seed, always allowed)."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise UsageError(f"{option} must be an integer in [0, 2**63 - 1], got {value}")


# ---------------------------------------------------------------- scenarios ----


def load_scenario_checked(name_or_path: str, option: str = "--scenario") -> Scenario:
    """Load a scenario by library name or YAML path; :class:`UsageError` on any problem.

    Raises:
        UsageError: An unknown name, a missing, unreadable or non-UTF-8 file, a file that is
            not YAML, or a value the schema refuses; the message names ``option`` and the file.
    """
    try:
        return load_scenario(name_or_path)
    except SchemaError as exc:
        raise UsageError(f"{option}: {exc}") from exc
    except FileNotFoundError as exc:
        raise UsageError(f"{option}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{option} {name_or_path!r}: the file is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}); a scenario is a YAML file"
        ) from exc
    except OSError as exc:
        raise UsageError(f"{option} {name_or_path!r}: cannot be read ({exc.strerror})") from exc


# ---------------------------------------------------------------- outputs ----


@dataclass(frozen=True)
class OutputKind:
    """One kind of output a subcommand writes, and how fundgym recognises its own.

    Attributes:
        what: What the output is, for messages (``"schedule file"``).
        directory: Whether the output is a directory (else a file).
        recognised: Says whether an existing path is a fundgym output of this kind, which the
            command may replace (or add to) without ``--force``.
        how: How it is recognised, as ``--help`` states it.
    """

    what: str
    directory: bool
    recognised: Callable[[Path], bool]
    how: str

    def force_help(self) -> str:
        """The ``--force`` help line: what is replaced without it, and how that is told."""
        existing = "an existing non-empty directory" if self.directory else "an existing file"
        return (
            f"allow --out to be {existing} that fundgym does not recognise as its own "
            f"{self.what} ({self.how}); without it such an --out is refused, untouched"
        )


def _head(path: Path, size: int = _HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a regular file (empty if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _json_kind_is(path: Path, kind: str) -> bool:
    """A JSON object whose ``kind`` (among its first keys) is ``kind``."""
    head = _head(path)
    return head.lstrip().startswith(b"{") and f'"kind": "{kind}"'.encode() in head


def _is_schedule(path: Path) -> bool:
    return _head(path).startswith(b"# fundgym-schedule: ") or _json_kind_is(
        path, "fundgym.schedule"
    )


def _is_table(path: Path) -> bool:
    return _json_kind_is(path, "fundgym.state_table")


def _is_table_view(path: Path) -> bool:
    first = _head(path).split(b"\n", 1)[0]
    return b",n,filled_from" in first


def _is_onnx(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_SCAN_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return b"fundgym_version" in data and b"obs_names" in data and b"param_names" in data


def _is_scenario_csv(path: Path) -> bool:
    first = _head(path).split(b"\n", 1)[0].strip()
    return first.startswith(b"step,time_min,mark_price,")


def _is_matplotlib_png(path: Path) -> bool:
    head = _head(path, 512)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00Matplotlib" in head


def _is_bench_json(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_SCAN_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "machine" in data


def _entries(path: Path) -> list[Path]:
    """A directory's entries but hidden ones (lock files, temporary siblings)."""
    return [p for p in path.iterdir() if not p.name.startswith(".")]


def _is_run(path: Path) -> bool:
    names = {p.name for p in _entries(path)}
    if "config.yaml" in names and names & {"command.txt", "final", "best", "checkpoints"}:
        return True
    # a --seeds base: one run per seed
    return bool(names) and all(re.fullmatch(r"seed_\d+", n) for n in names)


def _is_simulation(path: Path) -> bool:
    return b"command: fundgym simulate" in _head(path / "config.yaml", 256)


def _is_demo(path: Path) -> bool:
    return {p.name for p in _entries(path)} <= {
        "ppo",
        "evaluate",
        "evaluate_stress",
        "export",
        "cache",
    }


#: Every kind of output, by the subcommand that writes it.
OUTPUT_KINDS: dict[str, OutputKind] = {
    "run": OutputKind(
        "training run directory",
        True,
        _is_run,
        "config.yaml with command.txt, final/, best/ or checkpoints/, or only seed_<S>/ folders",
    ),
    "evaluation": OutputKind(
        "evaluation directory",
        True,
        is_evaluation_dir,
        ", ".join(EVALUATION_FILES),
    ),
    "cache": OutputKind(
        "search cache",
        True,
        lambda _path: True,
        "any folder: fundgym only adds static_search-*.json files (the hindsight grid) and "
        "frontier-*.db files (best_static's Optuna study) to it",
    ),
    "simulation": OutputKind(
        "simulation directory", True, _is_simulation, "a config.yaml from fundgym simulate"
    ),
    "demo": OutputKind(
        "demo directory",
        True,
        _is_demo,
        "nothing but ppo/, evaluate/, evaluate_stress/, export/ and cache/",
    ),
    "schedule": OutputKind(
        "schedule file",
        False,
        _is_schedule,
        "a CSV starting '# fundgym-schedule:', or JSON of kind fundgym.schedule",
    ),
    "table": OutputKind(
        "state table",
        False,
        _is_table,
        "JSON of kind fundgym.state_table; its CSV view beside it by its header's "
        "n,filled_from columns",
    ),
    "table_view": OutputKind(
        "state table CSV view", False, _is_table_view, "a header with n,filled_from columns"
    ),
    "onnx": OutputKind("ONNX policy", False, _is_onnx, "an ONNX graph carrying fundgym's metadata"),
    "scenario_csv": OutputKind(
        "sampled path",
        False,
        _is_scenario_csv,
        "a CSV whose header starts step,time_min,mark_price",
    ),
    "plot": OutputKind("plot", False, _is_matplotlib_png, "a PNG written by matplotlib"),
    "bench": OutputKind("benchmark file", False, _is_bench_json, "JSON with a machine entry"),
}


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (symbolic links followed)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def check_output(
    path: Path, kind: OutputKind, *, force: bool = False, option: str = "--out"
) -> None:
    """Refuse an output path this command cannot or may not write, before anything is written.

    Args:
        path: The output (a directory or a file, as ``kind`` says).
        kind: What the command writes there.
        force: Allow replacing (or adding to) an existing output fundgym does not recognise.
        option: The option that named ``path``, for messages.

    Raises:
        UsageError: ``path`` is a file where a directory is needed or the reverse, lies inside
            a file, cannot be created or written (its folder is read-only), is not a regular
            file or directory, or is an existing output of another kind and ``force`` is off.
    """
    resolved = path.resolve()
    if resolved == resolved.parent:
        raise UsageError(f"{option} {path}: not an output path; choose a folder below it")
    existing = _first_existing(path)
    if existing != path:
        if not existing.is_dir():
            raise UsageError(
                f"{option} {path}: {existing} is a file, so nothing can be created inside it"
            )
        if not _writable(existing):
            raise UsageError(f"{option} {path}: {existing} is not writable")
        return
    mode = path.stat().st_mode
    if kind.directory:
        if not stat.S_ISDIR(mode):
            raise UsageError(
                f"{option} {path}: is a file; expected a directory (for the {kind.what})"
            )
        for folder in (path, path.parent):
            if not _writable(folder):
                raise UsageError(f"{option} {path}: {folder} is not writable")
        if _entries(path) and not kind.recognised(path) and not force:
            raise UsageError(
                f"{option} {path}: an existing directory that is not a fundgym {kind.what} "
                f"(recognised by {kind.how}); choose another {option}, or pass --force to "
                "write into it"
            )
        return
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"{option} {path}: is a directory; expected the path of the {kind.what} to write"
        )
    if not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path}: not a regular file; expected a {kind.what} path")
    if not _writable(path.parent):
        raise UsageError(f"{option} {path}: {path.parent} is not writable")
    if not kind.recognised(path) and not force:
        raise UsageError(
            f"{option} {path}: an existing file that is not a fundgym {kind.what} (recognised "
            f"by {kind.how}); choose another {option}, or pass --force to replace it"
        )


# ---------------------------------------------------------------- names ----

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, fallback: str = "output") -> str:
    """``name`` as one file name: letters, digits, ``.``, ``_``, ``-``, no leading dot.

    A scenario's ``name`` field or a policy's name is text a user wrote; made into a file name
    it could hold ``/``, ``..`` or an absolute path and land outside ``--out``.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:100]
    return cleaned if cleaned.strip("_") else fallback


def inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it lies inside ``root`` (both resolved).

    Raises:
        UsageError: ``path`` would be written outside ``root``.
    """
    if not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{path}: outside the output directory {root}; not written")
    return path


# ---------------------------------------------------------------- help text ----

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?(?:[^`<]*<)?([^`>]+)>?`")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*", re.S)
_HEADING = re.compile(r"^#{1,6} +", re.M)
_LITERAL_BLOCK = re.compile(r"::$", re.M)


def plain_text(text: str) -> str:
    """``text`` without reStructuredText or Markdown markup, for ``--help``.

    Roles (``:func:`x```, ``:class:`~a.B```) become their target (``x``, ``B``), literals and
    code spans their content, strong emphasis its words, headings lose their ``#`` and a
    literal-block ``::`` becomes ``:``. Line breaks and alignment are kept.
    """

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        return target.rsplit(".", 1)[-1] if match.group(0).count("~") else target

    out = _ROLE.sub(role, text)
    out = _LITERAL.sub(r"\1", out)
    out = _CODE.sub(r"\1", out)
    out = _STRONG.sub(r"\1", out)
    out = _HEADING.sub("", out)
    return _LITERAL_BLOCK.sub(":", out)


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--address``: worded once for every command that runs episodes."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where episodes run: local worker processes (default) or Ray tasks (pip install "
        "fundgym[ray])",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster to join (ray://HOST:10001 or HOST:6379; --backend ray "
        "only; default: start a local instance)",
    )
