"""Replayed policies: an exported schedule or state table run without the model.

The files are written by :mod:`fundgym.agents.export.schedule` and
:mod:`fundgym.agents.export.table`; this
module owns their formats' readers (kind, schema version, field checks) and the policies that
replay them (``fundgym evaluate --policy schedule:FILE`` / ``table:FILE``), so evaluation can
run an export without importing the exporters.

* :class:`SchedulePolicy` replays a schedule's raw targets by decision index (the last row
  holds after it ends): exact on the scenario and seed it was exported on, an open-loop plan
  elsewhere.
* :class:`TablePolicy` looks up the cell of a distilled state table an observation falls in
  and uses its action. Pure numpy: no model, no torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fundgym.agents.policies.base import FloatArray
from fundgym.envs import MARKETS_ENV_ID
from fundgym.envs.controls import PARAMS
from fundgym.envs.exchange_env import OBS_NAMES

IntArray = np.ndarray[Any, np.dtype[np.int64]]

SCHEDULE_SCHEMA_VERSION = "1"
SCHEDULE_KIND = "fundgym.schedule"
CSV_MARKER = "# fundgym-schedule: "
#: A schedule's ``environment`` when a multi-market run wrote it
#: (:mod:`fundgym.agents.export.markets_schedule`); a one-market schedule has none.
MARKETS_ENVIRONMENT = MARKETS_ENV_ID

TABLE_SCHEMA_VERSION = "1"
TABLE_KIND = "fundgym.state_table"


# ------------------------------------------------------------------ schedules ----


class ScheduleError(ValueError):
    """A schedule file that cannot be read or replayed (the message names file and field)."""


def read_schedule(
    path: Path, environment: str | None = None
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Metadata and rows of a schedule file (CSV or JSON, by content).

    ``environment`` is the environment the caller replays on: ``None`` the one-market
    environment (the schedule's ``controlled`` levers are checked, and each row's
    ``action_*``), :data:`MARKETS_ENVIRONMENT` a multi-market schedule (its levers are
    per market, checked where it is replayed). A schedule of the other environment is
    refused, naming both.

    Raises:
        ScheduleError: The file is missing or unreadable, not UTF-8 text, not a fundgym
            schedule (neither the CSV form, whose first line is ``# fundgym-schedule: {...}``,
            nor the JSON form), of another schema version, or a row or field is malformed
            (a torn CSV row, a value that is not a number); the message names the file and
            the line or field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScheduleError(f"{path}: no such schedule file") from None
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScheduleError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a schedule is the CSV "
            "or JSON file `fundgym export` writes"
        ) from exc
    if text.startswith(CSV_MARKER):
        meta, rows = _schedule_csv(text, path)
    else:
        meta, rows = _schedule_json(text, path)
    if meta.get("kind") != SCHEDULE_KIND:
        raise ScheduleError(f"{path}: kind = {meta.get('kind')!r}, expected {SCHEDULE_KIND!r}")
    if meta.get("schema_version") != SCHEDULE_SCHEMA_VERSION:
        raise ScheduleError(
            f"{path}: schema_version = {meta.get('schema_version')!r}; this fundgym reads "
            f"{SCHEDULE_SCHEMA_VERSION!r}"
        )
    written = meta.get("environment")
    if written != environment:
        raise ScheduleError(
            f"{path}: a schedule of {_env_label(written)}; this replays on "
            f"{_env_label(environment)}"
            + (
                ": replay it with fundgym.agents.export.markets_schedule.replay_markets_schedule"
                if written == MARKETS_ENVIRONMENT
                else ""
            )
        )
    controlled = meta.get("controlled")
    if environment is None and (
        not isinstance(controlled, list)
        or not controlled
        or not all(isinstance(n, str) and n in PARAMS for n in controlled)
        or len(set(controlled)) != len(controlled)
    ):
        raise ScheduleError(
            f"{path}: controlled = {_short(controlled)}: expected distinct names from "
            f"{list(PARAMS)}"
        )
    if not rows:
        raise ScheduleError(f"{path}: the schedule has no rows")
    if environment is not None or not isinstance(controlled, list):
        return meta, rows  # multi-market levers are checked where they are replayed
    for i, row in enumerate(rows):
        for name in controlled:
            value = row.get(f"action_{name}")
            if value is None:
                raise ScheduleError(
                    f"{path}: column 'action_{name}' is missing (needed to replay)"
                    + (f" in row {i}" if i else "")
                )
            if not math.isfinite(value):
                raise ScheduleError(
                    f"{path}: row {i}: action_{name} = {value!r}: expected a finite number"
                )
    return meta, rows


def _env_label(environment: Any) -> str:
    """How a message names a schedule's environment."""
    return "the one-market environment" if environment is None else repr(environment)


def _number(value: Any, path: Path, where: str) -> float:
    """A schedule cell as a float; :class:`ScheduleError` naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScheduleError(f"{path}: {where} = {_short(value)}: expected a number")
    try:
        return float(value)
    except ValueError:
        raise ScheduleError(f"{path}: {where} = {_short(value)}: expected a number") from None


def _schedule_csv(text: str, path: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The CSV form: the metadata line, then a header and one row per decision."""
    first, _, body = text.partition("\n")
    try:
        meta = json.loads(first[len(CSV_MARKER) :])
    except json.JSONDecodeError as exc:
        raise ScheduleError(
            f"{path}: line 1: the '{CSV_MARKER.strip()}' metadata is not valid JSON ({exc})"
        ) from exc
    if not isinstance(meta, dict):
        raise ScheduleError(f"{path}: line 1: the metadata is not a JSON object")
    reader = csv.reader(io.StringIO(body))
    header = next(reader, None)
    if not header:
        raise ScheduleError(f"{path}: line 2: the column header is missing")
    rows: list[dict[str, float]] = []
    for line, cells in enumerate(reader, start=3):
        if not cells:
            continue
        if len(cells) != len(header):
            raise ScheduleError(
                f"{path}: line {line} has {len(cells)} fields, the header {len(header)} (a "
                "truncated or edited file); export the schedule again"
            )
        rows.append(
            {k: _number(v, path, f"line {line}, {k}") for k, v in zip(header, cells, strict=True)}
        )
    return meta, rows


def _schedule_json(text: str, path: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The JSON form: one object with the metadata, ``columns`` and ``rows``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScheduleError(
            f"{path}: not a readable fundgym schedule: neither CSV starting "
            f"'{CSV_MARKER.strip()}' nor valid JSON ({exc})"
        ) from exc
    if not isinstance(data, dict):
        raise ScheduleError(f"{path}: not a fundgym schedule (top level is not a mapping)")
    meta = {k: v for k, v in data.items() if k not in ("rows", "columns")}
    if (meta.get("kind"), meta.get("schema_version")) != (SCHEDULE_KIND, SCHEDULE_SCHEMA_VERSION):
        return meta, []  # the caller names the kind or the version
    items = data.get("rows")
    if not isinstance(items, list):
        raise ScheduleError(f"{path}: rows = {_short(items)}: expected a list of row objects")
    rows: list[dict[str, float]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScheduleError(f"{path}: rows[{i}] = {_short(item)}: expected an object")
        rows.append({str(k): _number(v, path, f"rows[{i}].{k}") for k, v in item.items()})
    return meta, rows


class SchedulePolicy:
    """Replays a schedule's targets by decision index (the last row holds after it ends).

    Args:
        path: The schedule file.
        name: Display name.
        controlled: The evaluation environment's controlled parameters; must be the schedule's.
    """

    def __init__(self, path: Path, name: str, controlled: tuple[str, ...]) -> None:
        meta, rows = read_schedule(path)
        if tuple(meta["controlled"]) != tuple(controlled):
            raise ScheduleError(
                f"{path}: controls {meta['controlled']} but the environment controls "
                f"{list(controlled)}"
            )
        self.name = name
        self.actions = np.array([[r[f"action_{n}"] for n in controlled] for r in rows])
        self._t = np.zeros(0, dtype=np.int64)

    def reset(self, n_envs: int) -> None:
        """Every exchange starts at the schedule's first row."""
        self._t = np.zeros(n_envs, dtype=np.int64)

    def act(self, obs: FloatArray) -> FloatArray:
        """The row of each exchange's decision index."""
        n = obs.shape[0]
        if self._t.shape != (n,):
            self.reset(n)
        out = self.actions[np.minimum(self._t, len(self.actions) - 1)]
        self._t += 1
        return np.asarray(out, dtype=np.float64)


# ------------------------------------------------------------------ state tables ----


class TableError(ValueError):
    """A state table that cannot be built, read or applied; the message names file and field."""


@dataclass(frozen=True)
class TableGrid:
    """A validated state table as arrays: where each feature is read and each cell's action."""

    controlled: tuple[str, ...]
    obs_index: tuple[int, ...]
    inner_edges: tuple[FloatArray, ...]
    actions: FloatArray  # (*shape, n_controlled)

    @property
    def shape(self) -> tuple[int, ...]:
        """Bins per feature."""
        return tuple(len(e) + 1 for e in self.inner_edges)

    def bins_of(self, obs: FloatArray) -> tuple[IntArray, ...]:
        """Bin index of every observation along each feature."""
        return tuple(
            np.searchsorted(edges, obs[:, i], side="right").astype(np.int64)
            for i, edges in zip(self.obs_index, self.inner_edges, strict=True)
        )

    def lookup(self, obs: FloatArray) -> FloatArray:
        """The action of the cell each observation ``(n, 32)`` falls in, ``(n, n_controlled)``."""
        return np.asarray(self.actions[self.bins_of(obs)], dtype=np.float64)


def _edge_value(x: Any, source: str, where: str) -> float:
    if isinstance(x, str) and x in ("-inf", "inf"):
        return float(x)
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    raise TableError(f"{source}: {where} = {x!r}: expected a finite number, '-inf' or 'inf'")


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str) -> Any:
    if key not in data:
        raise TableError(f"{source}: field {key!r} is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TableError(f"{source}: {key} = {_short(value)}: expected a {names}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse(data: Any, source: str) -> TableGrid:
    """Check a table's structure and build its arrays; :class:`TableError` on any problem."""
    if not isinstance(data, dict):
        raise TableError(f"{source}: expected a JSON object (a fundgym state table)")
    kind = data.get("kind")
    if kind != TABLE_KIND:
        raise TableError(f"{source}: kind = {_short(kind)}: expected {TABLE_KIND!r}")
    version = data.get("schema_version")
    if version != TABLE_SCHEMA_VERSION:
        raise TableError(
            f"{source}: schema_version = {_short(version)}: this fundgym reads "
            f"{TABLE_SCHEMA_VERSION!r}; distil the table again"
        )
    controlled = _field(data, "controlled", list, source)
    bad = [n for n in controlled if n not in PARAMS]
    if not controlled or bad or len(set(controlled)) != len(controlled):
        raise TableError(
            f"{source}: controlled = {_short(controlled)}: expected distinct names from "
            f"{list(PARAMS)}"
        )
    _field(data, "env", dict, source)
    features = _field(data, "features", list, source)
    if not features:
        raise TableError(f"{source}: features: expected at least one feature")
    obs_index: list[int] = []
    inner: list[FloatArray] = []
    for i, feat in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feat, dict):
            raise TableError(f"{source}: {where}: expected an object with name and edges")
        name = feat.get("name")
        if name not in OBS_NAMES:
            raise TableError(f"{source}: {where}.name = {_short(name)}: not an observation name")
        if feat.get("obs_index") != OBS_NAMES.index(name):
            raise TableError(
                f"{source}: {where}.obs_index = {_short(feat.get('obs_index'))}: {name} is "
                f"observation {OBS_NAMES.index(name)}"
            )
        edges = feat.get("edges")
        if not isinstance(edges, list) or len(edges) < 2:
            raise TableError(f"{source}: {where}.edges: expected a list of at least 2 edges")
        e = np.array([_edge_value(x, source, f"{where}.edges[{k}]") for k, x in enumerate(edges)])
        if e[0] != -np.inf or e[-1] != np.inf or not np.all(np.diff(e) > 0):
            raise TableError(
                f"{source}: {where}.edges: expected '-inf', increasing finite edges, 'inf'"
            )
        obs_index.append(OBS_NAMES.index(name))
        inner.append(e[1:-1])
    shape = tuple(len(e) + 1 for e in inner)
    if "shape" in data and data["shape"] != list(shape):
        raise TableError(
            f"{source}: shape = {_short(data['shape'])}: the edges make {list(shape)} bins"
        )
    cells = _field(data, "cells", list, source)
    n_cells = int(np.prod(shape))
    if len(cells) != n_cells:
        raise TableError(
            f"{source}: cells: {len(cells)} cells, but the edges make {n_cells} "
            f"({' x '.join(map(str, shape))})"
        )
    k = len(controlled)
    actions = np.full((*shape, k), np.nan)
    for c, cell in enumerate(cells):
        where = f"cells[{c}]"
        if not isinstance(cell, dict):
            raise TableError(f"{source}: {where}: expected an object with bin and action")
        b = cell.get("bin")
        if (
            not isinstance(b, list)
            or len(b) != len(shape)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in b)
            or not all(0 <= x < s for x, s in zip(b, shape, strict=True))
        ):
            raise TableError(
                f"{source}: {where}.bin = {_short(b)}: expected {len(shape)} bin indices "
                f"below {list(shape)}"
            )
        n = cell.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise TableError(f"{source}: {where}.n = {_short(n)}: expected a count >= 0")
        a = cell.get("action")
        if (
            not isinstance(a, list)
            or len(a) != k
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in a)
            or not all(math.isfinite(x) and -1.0 <= x <= 1.0 for x in a)
        ):
            raise TableError(
                f"{source}: {where}.action = {_short(a)}: expected {k} numbers in [-1, 1] "
                f"({', '.join(controlled)})"
            )
        if not np.isnan(actions[tuple(b)]).all():
            raise TableError(f"{source}: {where}.bin = {b}: a second cell for the same bin")
        actions[tuple(b)] = a
    return TableGrid(tuple(controlled), tuple(obs_index), tuple(inner), actions)


def read_table(path: Path) -> dict[str, Any]:
    """Read and check a state table written by :func:`fundgym.agents.export.table.distill_table`.

    Args:
        path: The table's JSON file.

    Returns:
        The table as stored (a JSON object).

    Raises:
        TableError: The file is missing, not JSON, not a state table, of another schema
            version, or a field is malformed; the message names the file and the field.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{source}: no such table file") from None
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); a state table is "
            "the JSON file `fundgym export --format table` writes"
        ) from exc
    except OSError as exc:
        raise TableError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TableError(f"{source}: not valid JSON ({exc})") from exc
    _parse(data, source)
    return dict(data)


class TablePolicy:
    """A distilled state table run as a policy: look up the observation's cell, use its action.

    Pure numpy: no model, no torch. Implements :class:`fundgym.agents.policies.Policy`.

    Args:
        table: A table as :func:`read_table` returns it.
        name: Display name.
        controlled: The environment's controlled parameters, in action order; must equal the
            table's.
        source: Where the table came from, for error messages.

    Raises:
        TableError: The table is malformed or controls other parameters than ``controlled``.
    """

    def __init__(
        self,
        table: dict[str, Any],
        name: str,
        controlled: tuple[str, ...],
        *,
        source: str = "<table>",
    ) -> None:
        self.name = name
        self.grid = _parse(table, source)
        if tuple(controlled) != self.grid.controlled:
            raise TableError(
                f"{source}: controlled = {list(self.grid.controlled)}, but the environment "
                f"controls {list(controlled)}; a table runs only where the parameters it sets "
                "are the ones controlled, in the same order"
            )

    @classmethod
    def load(cls, path: Path, name: str, controlled: tuple[str, ...]) -> TablePolicy:
        """Read a table file (:func:`read_table`) and make it a policy."""
        return cls(read_table(Path(path)), name, controlled, source=str(path))

    def reset(self, n_envs: int) -> None:
        """A table keeps no state."""

    def act(self, obs: FloatArray) -> FloatArray:
        """The action of each observation's cell, ``(n_envs, n_controlled)`` in [-1, 1]."""
        x = np.asarray(obs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(OBS_NAMES):
            raise ValueError(f"obs must have shape (n_envs, {len(OBS_NAMES)}), got {x.shape}")
        return self.grid.lookup(x)


def replay_env(table: dict[str, Any], scenario: str) -> dict[str, Any]:
    """Environment keyword arguments to run a table on ``scenario``, as it was checked.

    The table's ``env`` with the scenario set (a library scenario runs its own horizon), as
    :func:`fundgym.agents.rollout.job_env` builds them for the run the table came from.
    """
    kw = dict(table["env"])
    kw["controlled"] = tuple(kw["controlled"])
    if "allocation_buckets" in kw:  # tables written before the field hold all four
        kw["allocation_buckets"] = tuple(kw["allocation_buckets"])
    kw["scenario"] = scenario
    if scenario != "training":
        kw["horizon_minutes"] = None
    return kw
