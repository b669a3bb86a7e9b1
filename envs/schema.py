"""Validated construction of frozen dataclasses from plain dicts (parsed YAML).

``envs/`` stays free of third-party dependencies beyond numpy, so instead of pydantic the
scenario schema is a tree of frozen dataclasses whose fields carry their allowed range in
``field(metadata=...)``. :func:`build` walks a dict against that tree and rejects unknown keys,
wrong types and out-of-range values with one message that names the file, the field path, the
value and what is allowed. Nothing is coerced silently: a boolean is never a number (YAML 1.1
reads ``yes`` and ``on`` as ``true``, and Python counts ``True`` as 1) and a number or string
is never a boolean. An integer is accepted for a float, a float with an integral value for an
integer, and a numeric string (YAML 1.1 reads ``2.2e8`` as a string) for either.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np
import yaml

T = TypeVar("T")

# ---- YAML: every file fundgym reads (configs, scenarios) goes through one loader ----

_BOOL_TAG = "tag:yaml.org,2002:bool"


class ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs
    """PyYAML's safe loader with YAML 1.2's booleans and exponent floats.

    PyYAML implements YAML 1.1, which reads ``yes``, ``no``, ``on`` and ``off`` as booleans (so
    ``deterministic: yes`` or ``--set eval.deterministic=yes`` would pass as ``true``, and
    ``seed: on`` would be a boolean) and ``3e-4`` as a string. Here only ``true`` and ``false``
    (lower, title or upper case) are booleans; ``yes``/``on`` are strings, which a boolean
    field rejects; and a number with an exponent is a float, with or without a dot or a sign.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse config text with :class:`ConfigLoader` (YAML 1.2 booleans and floats)."""
    return yaml.load(text, Loader=ConfigLoader)


@functools.cache
def _class_info(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """``get_type_hints(cls)`` and its init fields, computed once per class.

    Both re-walk the class on every call, and the training sampler builds and validates a
    scenario at every episode reset.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    return get_type_hints(cls), fields


class SchemaError(ValueError):
    """A config value is not allowed; the message names file, field, value and the rule."""

    def __init__(self, source: str, path: str, value: Any, allowed: str) -> None:
        """Compose ``"<source>: <path> = <value>: <allowed>"``."""
        self.source, self.path, self.value, self.allowed = source, path, value, allowed
        super().__init__(f"{source}: {path} = {value!r}: {allowed}")


def spec(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    note: str = "",
) -> Any:
    """A dataclass field with an allowed range and a one-line description.

    ``note`` says why the range is what it is; it follows the range in error messages.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "note": note}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _range_text(meta: typing.Mapping[str, Any]) -> str | None:
    lo = f"[{meta['ge']}" if meta.get("ge") is not None else None
    lo = f"({meta['gt']}" if meta.get("gt") is not None else lo
    hi = f"{meta['le']}]" if meta.get("le") is not None else None
    hi = f"{meta['lt']})" if meta.get("lt") is not None else hi
    if lo is None and hi is None:
        return None
    return f"a number in {lo or '(-inf'}, {hi or 'inf)'}"


def _check_range(x: float, meta: typing.Mapping[str, Any]) -> bool:
    return not (
        (meta.get("ge") is not None and x < meta["ge"])
        or (meta.get("gt") is not None and x <= meta["gt"])
        or (meta.get("le") is not None and x > meta["le"])
        or (meta.get("lt") is not None and x >= meta["lt"])
    )


def build(cls: type[T], data: Any, source: str, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (a mapping), validating every field."""
    if not isinstance(data, dict):
        raise SchemaError(source, path or "<top>", data, f"a mapping of {cls.__name__} fields")
    hints, fields = _class_info(typing.cast(type, cls))
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise SchemaError(
            source, where, data[unknown[0]], f"unknown key; allowed: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(source, where, None, "required field is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], source, where, f.metadata)
    try:
        return cls(**kwargs)
    except SchemaError:
        raise
    except ValueError as exc:  # cross-field rules raised by __post_init__
        shown = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        raise SchemaError(source, path or "<top>", shown, str(exc)) from exc


def _convert(tp: Any, value: Any, source: str, where: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in get_args(tp):
                return None
            raise SchemaError(source, where, value, "a value is required")
        return _convert(args[0], value, source, where, meta)
    if origin is Literal:
        allowed = get_args(tp)
        if not any(type(value) is type(a) and value == a for a in allowed):  # True is not 1
            raise SchemaError(source, where, value, f"one of {list(allowed)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise SchemaError(source, where, value, "a list")
        inner = get_args(tp)[0]
        return tuple(_convert(inner, v, source, f"{where}[{i}]", meta) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, source, where)
    if tp is bool:
        if not isinstance(value, bool | np.bool_):  # 1, 0, "yes": not silently a boolean
            raise SchemaError(source, where, value, "true or false")
        return bool(value)
    if tp in (float, int):
        if isinstance(value, bool | np.bool_):  # True is an int to Python, never to a config
            raise SchemaError(source, where, value, f"a number ({tp.__name__}), not true/false")
        if isinstance(value, str):  # YAML 1.1 reads "2.2e8" (no sign) as a string
            try:
                value = float(value)
            except ValueError:
                raise SchemaError(source, where, value, f"a number ({tp.__name__})") from None
        if not isinstance(value, numbers.Real):
            raise SchemaError(source, where, value, f"a number ({tp.__name__})")
        x = float(value)
        if not math.isfinite(x):
            raise SchemaError(source, where, value, "a finite number")
        if tp is int and not x.is_integer():
            raise SchemaError(source, where, value, "an integer")
        if not _check_range(x, meta):
            rule = _range_text(meta) or "in range"
            note = meta.get("note")
            raise SchemaError(source, where, value, f"{rule} ({note})" if note else rule)
        return int(x) if tp is int else x
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(source, where, value, "a string")
        return value
    raise TypeError(f"schema type {tp!r} at {where} is not supported")  # a programming error


def _type_text(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return f"{_type_text(inner[0])} or null"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_text(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return str(getattr(tp, "__name__", tp))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows ``(field path, type, default, description)`` for documenting a schema."""
    rows: list[tuple[str, str, str, str]] = []
    hints = _class_info(cls)[0]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if f.default is not dataclasses.MISSING:
            default = "none" if f.default is None else repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = "(section defaults)"
        else:
            default = "required"
        rng = _range_text(f.metadata) or ""
        doc = f"{f.metadata.get('doc', '')}; {rng}" if rng else str(f.metadata.get("doc", ""))
        rows.append((name, _type_text(tp), default, doc))
        candidates = get_args(tp) or (tp,)
        for sub in candidates:
            if get_origin(sub) in (tuple, list):
                sub = get_args(sub)[0]
            if dataclasses.is_dataclass(sub) and isinstance(sub, type):
                rows.extend(
                    describe(sub, f"{name}[]." if get_origin(tp) in (tuple, list) else f"{name}.")
                )
    return rows
