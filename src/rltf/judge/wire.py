"""Framing and value encoding for the pipes between judge, sandbox server and program runner.

Values cross the sandbox boundary as tagged JSON that can only describe builtin data (numbers,
strings, bytes, lists, tuples, dicts, sets). Whatever a program returns is rebuilt on the trusted
side from this description, so a custom ``__eq__`` or a lying ``__class__`` cannot survive the
trip: the comparison with an expected value always runs between genuine builtins. Objects with no
builtin description travel as opaque references (``["R", id, type name]``) that equal nothing
but themselves. Builtin functions and classes (``int``, ``len``) travel by name.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import struct
import sys
from typing import Any

HEADER = struct.Struct("<I")
MAX_MESSAGE = 256 * 1024 * 1024
MAX_DEPTH = 200


class WireError(Exception):
    """A peer sent something that is not a valid message (or closed the channel)."""


def send(fd: int, obj: Any) -> None:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    if len(payload) > MAX_MESSAGE:
        raise WireError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE} byte limit")
    data = HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise WireError("channel closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv(fd: int) -> Any:
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size))
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes exceeds the limit")
    try:
        return json.loads(_read_exact(fd, size))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"undecodable message: {exc}") from None


class Unencodable(TypeError):
    """Raised by :func:`encode` when a value has no builtin description and no reference table."""


def encode(value: Any, refs: dict[int, Any] | None = None, depth: int = 0) -> Any:
    """Describe ``value`` with builtin data only.

    Subclasses of builtins are read through the base type's own methods (``int.__index__``,
    ``list.__iter__``...), so overridden dunders of the subclass are never consulted. With
    ``refs`` given, values without a builtin description are stored there and sent as references;
    without it they raise :class:`Unencodable`.
    """
    if depth > MAX_DEPTH:
        raise Unencodable("value nested too deeply")
    cls = type(value)
    if value is None or cls is bool or cls is str:
        return value
    if cls is int:
        return value
    if cls is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else ["f", repr(value)]
    if cls is list:
        return ["L", *(encode(v, refs, depth + 1) for v in value)]
    if cls is tuple:
        return ["T", *(encode(v, refs, depth + 1) for v in value)]
    if cls is dict:
        return ["D", *([encode(k, refs, depth + 1), encode(v, refs, depth + 1)] for k, v in value.items())]
    if isinstance(value, Remote):
        return ["R", object.__getattribute__(value, "_rid"), ""]
    return _encode_other(value, cls, refs, depth)


def _encode_other(value: Any, cls: type, refs: dict[int, Any] | None, depth: int) -> Any:
    if issubclass(cls, bool):
        return bool(value)
    if issubclass(cls, int):
        return int.__index__(value)
    if issubclass(cls, float):
        return encode(float.__float__(value), refs, depth)
    if issubclass(cls, str):
        return str.__str__(value)
    if issubclass(cls, (bytes, bytearray)):
        return ["B", base64.b64encode(bytes(memoryview(value))).decode()]
    if issubclass(cls, complex):
        c = complex.__complex__(value)
        return ["C", encode(c.real), encode(c.imag)]
    if issubclass(cls, tuple):
        return ["T", *(encode(v, refs, depth + 1) for v in tuple.__iter__(value))]
    if issubclass(cls, list):
        return ["L", *(encode(v, refs, depth + 1) for v in list.__iter__(value))]
    if issubclass(cls, dict):
        return ["D", *([encode(k, refs, depth + 1), encode(v, refs, depth + 1)] for k, v in dict.items(value))]
    if issubclass(cls, (set, frozenset)):
        tag = "S" if issubclass(cls, set) else "F"
        base = set if tag == "S" else frozenset
        return [tag, *(encode(v, refs, depth + 1) for v in base.__iter__(value))]
    name = getattr(value, "__name__", None)
    if isinstance(name, str) and getattr(builtins, name, None) is value:  # int, len, ValueError...
        return ["N", name]
    numpy = sys.modules.get("numpy")
    if numpy is not None and issubclass(cls, numpy.generic):
        return encode(numpy.generic.item(value), refs, depth)
    if refs is None:
        raise Unencodable(f"cannot pass a value of type {cls.__name__!r} to the program")
    rid = len(refs) + 1
    refs[rid] = value
    return ["R", rid, cls.__name__]


class Remote:
    """A program-side object seen from the trusted side; every operation is a call into the runner.

    ``connection`` is any object with ``request(message) -> value``. The proxy defines identity
    equality only, so it can never compare equal to a builtin expected value.
    """

    __slots__ = ("_conn", "_rid", "_type")

    def __init__(self, connection: Any, rid: int | str, type_name: str = "") -> None:
        object.__setattr__(self, "_conn", connection)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **fields: Any) -> Any:
        conn = object.__getattribute__(self, "_conn")
        return conn.request({"op": op, "target": object.__getattribute__(self, "_rid"), **fields})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=encode(list(args)), kwargs=encode(kwargs))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name=name, value=encode(value))

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key=encode(key))

    def __iter__(self):
        return iter(self._ask("list"))

    def __len__(self) -> int:
        return self._ask("len")

    def __bool__(self) -> bool:
        return self._ask("bool")

    def __repr__(self) -> str:
        return f"<program object {object.__getattribute__(self, '_type') or object.__getattribute__(self, '_rid')}>"

    __hash__ = object.__hash__


def decode(data: Any, resolve: Any = None, depth: int = 0) -> Any:
    """Rebuild builtins from :func:`encode`'s description; ``resolve(id, type_name)`` maps references."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if not isinstance(data, list):
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        raise WireError(f"bad value {type(data).__name__}")
    if not data:
        raise WireError("empty tagged value")
    tag, items = data[0], data[1:]
    if tag == "L":
        return [decode(v, resolve, depth + 1) for v in items]
    if tag == "T":
        return tuple(decode(v, resolve, depth + 1) for v in items)
    if tag == "D":
        return {decode(k, resolve, depth + 1): decode(v, resolve, depth + 1) for k, v in items}
    if tag == "S":
        return {decode(v, resolve, depth + 1) for v in items}
    if tag == "F":
        return frozenset(decode(v, resolve, depth + 1) for v in items)
    if tag == "f":
        return float(items[0])
    if tag == "B":
        return base64.b64decode(items[0])
    if tag == "C":
        return complex(decode(items[0]), decode(items[1]))
    if tag == "N" and isinstance(items[0], str) and not items[0].startswith("_") and hasattr(builtins, items[0]):
        return getattr(builtins, items[0])
    if tag == "R" and resolve is not None:
        return resolve(items[0], items[1] if len(items) > 1 else "")
    raise WireError(f"unknown tag {tag!r}")
