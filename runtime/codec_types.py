"""The stored value types JSON has no type for, each written as one tagged JSON value: how to
write it and read it back, the built-in ones and those other modules register.

:mod:`runtime.codec` walks a value and asks here about each leaf it cannot store as plain JSON;
this module knows nothing of that walk. A registered type is how a layer above the codec (the
definition layer's ``Branch``) gets stored without the codec importing it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path, PosixPath, WindowsPath
from typing import Any, TypeVar

__all__ = ["BUILT_IN_KINDS", "decoder_for", "encoder_for", "int_text", "register"]

T = TypeVar("T")
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]

# the kinds runtime.codec writes itself: containers, clocks, and the types below
BUILT_IN_KINDS = frozenset(
    {"dict", "tuple", "set", "frozenset", "datetime", "time", "int", "float"}
    | {"date", "timedelta", "decimal", "bytes", "uuid", "path"}
)

# registered by other modules at import: by exact type, and by kind
_registered_encoders: dict[type, tuple[str, Encoder]] = {}
_registered_decoders: dict[str, Decoder] = {}


def register(
    kind: str, type_: type[T], to_json: Callable[[T], Any], from_json: Callable[[Any], T]
) -> None:
    """Store values of exactly *type_* (not subclasses) as ``{"__sluiceway__": kind, "value":
    to_json(v)}``, read back as ``from_json(value)``.

    What *to_json* returns is encoded in turn (it may hold any storable value) and *from_json*
    gets it decoded. A type the codec stores itself keeps its own encoding. Registering a
    kind again for the same class (a reloaded module's) replaces it.

    :raises ValueError: when *kind* is one the codec writes itself, or another type's
    """
    if kind in BUILT_IN_KINDS:
        raise ValueError(f"codec kind {kind!r} is built in and cannot be registered")
    for known in [t for t, (name, _) in _registered_encoders.items() if name == kind]:
        if known.__qualname__ != type_.__qualname__ or known.__module__ != type_.__module__:
            raise ValueError(f"codec kind {kind!r} is already registered for {known!r}")
        del _registered_encoders[known]  # the same class from a reloaded module
    _registered_encoders[type_] = (kind, to_json)
    _registered_decoders[kind] = from_json


def encoder_for(kind: type) -> tuple[str, Encoder] | None:
    """The tag and the writer for a value of exactly type *kind*, if it is stored tagged."""
    return _built_in_encoders().get(kind) or _registered_encoders.get(kind)


def decoder_for(kind: str) -> Decoder | None:
    """The reader for the tag *kind* (also large ints, NaN and infinities), if it is known."""
    return _built_in_decoders().get(kind) or _registered_decoders.get(kind)


def int_text(value: int) -> str:
    """An int of more than 64 bits, as text :func:`decoder_for` ``("int")`` reads back."""
    try:
        return str(value)
    except ValueError:  # more digits than int <-> str allows (sys.set_int_max_str_digits)
        return hex(value)


def _int_from(text: str) -> int:
    return int(text, 0)  # decimal, or 0x... for the longest


def _float_from(text: str) -> float:
    if text not in ("nan", "inf", "-inf"):
        raise ValueError("expected nan, inf or -inf")
    return float(text)


def _path_from(text: str) -> Path:
    return Path(text)


# the modules of the rarer types are imported on first use: `import runtime` stays cold-fast


@functools.cache
def _built_in_encoders() -> dict[type, tuple[str, Encoder]]:
    """Types stored as one tagged JSON value, by exact type: kind and how to write it."""
    import base64
    import uuid
    from decimal import Decimal

    return {
        date: ("date", date.isoformat),
        timedelta: ("timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
        Decimal: ("decimal", str),
        bytes: ("bytes", lambda v: base64.b64encode(v).decode("ascii")),
        uuid.UUID: ("uuid", str),
        PosixPath: ("path", str),
        WindowsPath: ("path", str),
    }


@functools.cache
def _built_in_decoders() -> dict[str, Decoder]:
    """How to read each kind :func:`_built_in_encoders` writes (and large ints, NaN,
    infinities)."""
    import base64
    import uuid
    from decimal import Decimal

    return {
        "int": _int_from,
        "float": _float_from,
        "date": date.fromisoformat,
        "timedelta": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
        "decimal": Decimal,
        "bytes": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
        "uuid": uuid.UUID,
        "path": _path_from,
    }
