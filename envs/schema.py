"""Validated construction of frozen dataclasses from plain dicts (parsed YAML).

``envs/`` stays free of third-party dependencies beyond numpy, so instead of pydantic the
scenario schema is a tree of frozen dataclasses whose fields carry their allowed range in
``field(metadata=...)``. :func:`build` walks a dict against that tree and rejects unknown keys,
wrong types and out-of-range values with one message that names the file, the field path, the
value and what is allowed. Nothing is coerced silently:

* a boolean is never a number (Python counts ``True`` as 1, so ``seed: true`` would be seed 1)
  and a number or a string (``yes``) is never a boolean;
* a string is never a number, even ``"3"`` or ``"2.2e8"``: :class:`ConfigLoader` reads an
  unquoted ``2.2e8`` as a float, so a string there means the file quoted it;
* ``null`` is refused where a field is not optional;
* an integer is accepted for a float, and a float with an integral value for an integer
  (YAML reads ``1e4`` as a float; ``3.5`` is refused); integers are kept exact, so the largest
  seed, ``2**63 - 1``, is not rounded through a float.

A rule that spans fields lives in the dataclass's ``__post_init__``; it raises
:class:`FieldError` to name the field it blames, and :func:`build` reports it at that path.
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
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs
    """PyYAML's safe loader with YAML 1.2's booleans, numbers and no timestamps.

    PyYAML implements YAML 1.1, which reads ``yes``, ``no``, ``on`` and ``off`` as booleans (so
    ``deterministic: yes`` or ``--set eval.deterministic=yes`` would pass as ``true``, and
    ``seed: on`` would be a boolean), ``3e-4`` as a string, ``010`` as the octal 8, ``1:30`` as
    the base-60 number 90, and ``2025-10-10T14:00:00Z`` as a datetime. Here, as in YAML 1.2,
    only ``true`` and ``false`` (lower, title or upper case) are booleans, so ``yes``/``on`` are
    strings, which a boolean field rejects; a number with an exponent is a float, with or
    without a dot or a sign; ``010`` is ten (octal is written ``0o10``); ``1:30`` and timestamps
    are strings. Underscores between digits (``1_000``) and ``0x``/``0b`` prefixes still read as
    numbers.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG, _TIMESTAMP_TAG)
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
            |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
ConfigLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
            |[-+]?0o[0-7_]+
            |[-+]?0x[0-9a-fA-F_]+
            |[-+]?[0-9][0-9_]*)$""",
        re.X,
    ),
    list("-+0123456789"),
)


def _construct_int(loader: ConfigLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 integer: decimal (leading zeros allowed), or ``0x``/``0o``/``0b`` prefixed."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    digits = text.lstrip("+-")
    base = 0 if digits[:2].lower() in ("0x", "0o", "0b") else 10
    try:
        return int(text, base)
    except ValueError:  # "0x_", or an explicit ``!!int`` tag on a word
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not an integer", node.start_mark
        ) from None


ConfigLoader.add_constructor(_INT_TAG, _construct_int)


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


class FieldError(ValueError):
    """A rule spanning several fields, broken; raised by ``__post_init__`` naming one field.

    :func:`build` does not know the rule, only where it was raised, so the dataclass names the
    field the user should change (relative to itself, e.g. ``"beta"`` or ``"price.vol_annual"``)
    and :func:`build` reports it at the full path of the file.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        """Compose ``"<field> = <value>: <allowed>"`` (the message outside :func:`build`)."""
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field} = {value!r}: {allowed}")


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


def _check_range(x: float | int, meta: typing.Mapping[str, Any]) -> bool:
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
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be numbers
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
    except FieldError as exc:  # a cross-field rule that names the field to change
        where = f"{path}.{exc.field}" if path else exc.field
        raise SchemaError(source, where, exc.value, exc.allowed) from exc
    except ValueError as exc:  # other cross-field rules raised by __post_init__
        shown = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        raise SchemaError(source, path or "<top>", shown, str(exc)) from exc


def build_trusted(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data`` already inside its schema: conversions, no checks.

    For dicts a program made field by field inside each field's range (the training sampler's
    draws): :func:`build` re-checks every value, which costs more than the draw itself. The
    values are converted as :func:`build` converts them (an integer for a float field becomes
    a float, lists become tuples, sections dataclasses), so a valid ``data`` gives a result
    equal to :func:`build`'s; the cross-field rules of ``__post_init__`` still run. Nothing
    else is checked: a dict from a user goes through :func:`build`.

    Raises:
        KeyError: A key that is not a field.
        ValueError: A cross-field rule is broken (a :class:`FieldError` among others).
    """
    plan = _trusted_plan(typing.cast(type, cls))
    return cls(**{name: plan[name](value) for name, value in data.items()})


@functools.cache
def _trusted_plan(cls: type) -> dict[str, typing.Callable[[Any], Any]]:
    """Each init field's converter for :func:`build_trusted`, made once per class."""
    hints, fields = _class_info(cls)
    return {name: _trusted_converter(hints[name]) for name in fields}


def _same(value: Any) -> Any:
    return value


def _trusted_converter(tp: Any) -> typing.Callable[[Any], Any]:
    """:func:`_convert` without its checks, for type ``tp``."""
    if tp in (float, int, bool):
        return typing.cast(typing.Callable[[Any], Any], tp)
    origin, args, is_dataclass = _type_shape(tp)
    if origin in (Union, types.UnionType):
        inner = _trusted_converter(next(a for a in args if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    if origin in (tuple, list):
        item = _trusted_converter(args[0])
        return lambda value: tuple(item(v) for v in value)
    if is_dataclass:
        return functools.partial(build_trusted, tp)
    if tp is str or origin is Literal:
        return _same
    raise TypeError(f"schema type {tp!r} is not supported")  # a programming error


@functools.cache
def _type_shape(tp: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """``(get_origin(tp), get_args(tp), is a dataclass)``, once per type (resets build often)."""
    return get_origin(tp), get_args(tp), dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _convert(tp: Any, value: Any, source: str, where: str, meta: typing.Mapping[str, Any]) -> Any:
    if tp is float:
        return _number(tp, value, source, where, meta)
    origin, args, is_dataclass = _type_shape(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise SchemaError(source, where, value, "a value is required")
        return _convert(next(a for a in args if a is not type(None)), value, source, where, meta)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):  # True is not 1
            raise SchemaError(source, where, value, f"one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise SchemaError(source, where, value, "a list")
        inner = args[0]
        return tuple(_convert(inner, v, source, f"{where}[{i}]", meta) for i, v in enumerate(value))
    if is_dataclass:
        return build(tp, value, source, where)
    if tp is bool:
        if not isinstance(value, bool | np.bool_):  # 1, 0, "yes": not silently a boolean
            raise SchemaError(source, where, value, "true or false")
        return bool(value)
    if tp in (float, int):
        return _number(tp, value, source, where, meta)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(source, where, value, "a string")
        return value
    raise TypeError(f"schema type {tp!r} at {where} is not supported")  # a programming error


def _number(
    tp: type, value: Any, source: str, where: str, meta: typing.Mapping[str, Any]
) -> float | int:
    """``value`` as a ``float`` or ``int`` field: a real number, finite, in range, not coerced.

    An ``int`` stays exact (compared with the bounds as an integer, never through a float);
    a float is accepted for an ``int`` only when it is integral.
    """
    if type(value) is float and tp is float:  # the common case, decided without the ABCs
        if not math.isfinite(value):
            raise SchemaError(source, where, value, "a finite number")
        if meta and not _check_range(value, meta):
            _out_of_range(value, source, where, meta)
        return value
    kind = f"a number ({tp.__name__})"
    if isinstance(value, bool | np.bool_):  # True is an int to Python, never to a config
        raise SchemaError(source, where, value, f"{kind}, not true/false")
    if isinstance(value, str | bytes):  # "3" or "2.2e8" in quotes: the file said text
        raise SchemaError(source, where, value, f"{kind}, not a string")
    if not isinstance(value, numbers.Real):
        raise SchemaError(source, where, value, kind)
    if isinstance(value, numbers.Integral):
        x: float | int = int(value)
    else:
        try:
            x = float(value)
        except OverflowError:  # a Fraction too large for a float
            raise SchemaError(source, where, value, "a finite number") from None
        if not math.isfinite(x):
            raise SchemaError(source, where, value, "a finite number")
        if tp is int:
            if not x.is_integer():
                raise SchemaError(source, where, value, "an integer")
            x = int(x)
    if not _check_range(x, meta):
        _out_of_range(value, source, where, meta)
    if tp is float:
        try:
            return float(x)
        except OverflowError:  # an integer beyond the float range, with no upper bound
            raise SchemaError(source, where, value, "a finite number") from None
    return x


def _out_of_range(
    value: Any, source: str, where: str, meta: typing.Mapping[str, Any]
) -> typing.NoReturn:
    """Raise the :class:`SchemaError` for a number outside its field's range."""
    rule = _range_text(meta) or "in range"
    note = meta.get("note")
    raise SchemaError(source, where, value, f"{rule} ({note})" if note else rule)


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
            many = get_origin(tp) in (tuple, list) or get_origin(sub) in (tuple, list)
            if get_origin(sub) in (tuple, list):  # an optional list: tuple[X, ...] | None
                sub = get_args(sub)[0]
            if dataclasses.is_dataclass(sub) and isinstance(sub, type):
                rows.extend(describe(sub, f"{name}[]." if many else f"{name}."))
    return rows
