"""Reading untrusted JSON into frozen dataclasses: the one place where a payload's shape is checked.

A schema is a frozen, keyword-only dataclass whose annotations say what each field holds: ``int``,
``str``, ``bool``, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]`` (read-only),
``Literal[...]``, another schema, or ``Annotated[X, check]`` where ``check(value)`` returns a
problem in words or None.
``read(Schema, data)`` gives an instance or raises ``PayloadError`` naming the first field that
does not fit, on one line (``pull_request.head.sha: expected a string, got an integer``).

Reading is tolerant where GitHub is loose and strict where ptbot relies on a type:

- unknown keys are ignored: GitHub adds fields all the time;
- a field with a default may be absent or null and then takes its default: GitHub nulls and
  drops fields across API versions and on GitHub Enterprise Server;
- a field without a default must be present, and non-null unless its type admits None;
- nothing is coerced: ``"7"``, ``true`` and ``7.0`` are not integers, ``7`` is not a string.

Only what ptbot uses is declared, so a schema is also the list of what ptbot reads.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")
S = TypeVar("S", bound="Fields")

_JSON_TYPE = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
              str: "a string", list: "an array", dict: "an object"}


class PayloadError(ValueError):
    """A payload that does not fit its schema: ``field`` is the dotted path of the first misfit."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field or "payload", problem
        super().__init__(f"{self.field}: {problem}")


def json_type(value: Any) -> str:
    """What a decoded JSON value is, in words ("an integer", "null")."""
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _join(where: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{where}[{name}]"
    return f"{where}.{name}" if where else name


def _short(value: Any) -> str:
    text = repr(value)  # repr escapes newlines, so the reason stays on one line
    return text if len(text) <= 40 else text[:37] + "..."


def read(schema: type[T], data: Any, where: str = "") -> T:
    """``data`` (decoded JSON) as an instance of ``schema``, or PayloadError naming the misfit."""
    return _read(schema, data, where)


def _read(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *checks = get_args(tp)
        out = _read(base, value, where)
        for check in checks:
            problem = check(out)
            if problem:
                raise PayloadError(where, f"{problem}, got {_short(out)}")
        return out
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only ``X | None`` is supported
        return _read(inner, value, where)
    if origin is Literal:
        allowed = get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise PayloadError(where, f"expected one of {', '.join(map(repr, allowed))}, got {_short(value)}")
    if origin is tuple:
        item, _ = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise PayloadError(where, f"expected an array, got {json_type(value)}")
        return tuple(_read(item, v, _join(where, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        _, item = get_args(tp)
        if not isinstance(value, Mapping):
            raise PayloadError(where, f"expected an object, got {json_type(value)}")
        return types.MappingProxyType({str(k): _read(item, v, _join(where, str(k))) for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        return _read_schema(tp, value, where)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"schema type {tp!r} at {where or 'the top'} is not supported")
    if not ok:
        raise PayloadError(where, f"expected {_JSON_TYPE[tp]}, got {json_type(value)}")
    return value


def _read_schema(schema: type[T], value: Any, where: str) -> T:
    if not isinstance(value, Mapping):
        raise PayloadError(where, f"expected an object, got {json_type(value)}")
    hints = _hints(schema)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        raw = value.get(f.name)
        if raw is None and has_default:
            continue
        if f.name not in value:
            raise PayloadError(_join(where, f.name), "is required")
        kwargs[f.name] = _read(hints[f.name], raw, _join(where, f.name))
    try:
        return schema(**kwargs)
    except PayloadError as e:  # a rule across fields, checked by the schema's __post_init__
        raise PayloadError(_join(where, e.field), e.problem) from None


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema, include_extras=True)


def schema(cls: type[T]) -> type[T]:
    """Make ``cls`` a schema: a frozen, keyword-only dataclass."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


# ----- checks for Annotated fields --------------------------------------------------------------


def positive_id(value: int) -> str | None:
    """GitHub ids and numbers are positive and fit a 64-bit column."""
    return None if 0 < value < 2**63 else "expected a positive 64-bit integer"


def commit_sha(value: str) -> str | None:
    """A full commit SHA: 40 hex digits (SHA-1) or 64 (SHA-256 repositories)."""
    if len(value) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in value):
        return None
    return "expected a 40- or 64-digit hex commit SHA"


Id = Annotated[int, positive_id]
Sha = Annotated[str, commit_sha]


# ----- frozen records read like read-only dicts -------------------------------------------------


class Fields(Mapping[str, Any]):
    """A schema instance that also reads like a read-only dict (``job["owner"]``, ``job.get("force")``,
    ``dict(job)``), so code that reads jobs by key works on the typed, frozen value unchanged."""

    def __getitem__(self, key: str) -> Any:
        if key not in _names(type(self)):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_names(type(self)))

    def __len__(self) -> int:
        return len(_names(type(self)))

    def to_json(self) -> dict[str, Any]:
        """The plain JSON document (dicts, lists, scalars) that ``read`` turns back into this value."""
        return {name: _plain(getattr(self, name)) for name in self}

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes``, read through the schema again (so it is checked like any payload)."""
        return read(type(self), {**self.to_json(), **{k: _plain(v) for k, v in changes.items()}})


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    if isinstance(value, Fields):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def record(cls: type[T]) -> type[T]:
    """Make ``cls`` (a ``Fields`` subclass) a frozen, keyword-only dataclass that compares like a
    dict, key by key (the dataclass's own equality would only compare with its own class)."""
    return dataclasses.dataclass(frozen=True, kw_only=True, eq=False)(cls)
