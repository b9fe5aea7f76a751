"""Value kinds of the results store and the text encoding of the "general" kind.

A column whose values have no common native kind (bool, int, float, str, fixed-shape
array; see :mod:`psmpi.store`) is "general": each value is stored as the UTF-8 bytes of
one JSON document. JSON's own types stand for themselves (None, bool, str, list, and
int and float, which JSON tells apart: ``1`` vs ``1.0``; ints of any size are exact;
NaN and infinities are written ``NaN``/``Infinity`` as Python's json does). Everything
else is an object with one key naming its type:

=====================  ==================================================================
``{"__int__": hex}``        an int of more than 10,000 bits (``int(hex, 16)``)
``{"__tuple__": [..]}``     a tuple
``{"__dict__": {..}}``      a dict with str keys whose one key looks like a tag
``{"__items__": [[k, v]]}`` a dict with keys that are not all str (order kept)
``{"__complex__": [re, im]}`` a complex
``{"__bytes__": b64}``      bytes (standard base64)
``{"__datetime__": iso}``   datetime.datetime (ISO 8601, with its UTC offset if aware;
                            ``[iso, zone]`` for a named time zone, e.g. "Europe/Paris")
``{"__date__": iso}``       datetime.date
``{"__timedelta__": [d, s, us]}``  datetime.timedelta
``{"__timestamp__": iso}``  pandas.Timestamp (nanoseconds kept; ``[iso, zone]`` as above)
``{"__numpy__": {"dtype": str, "data": b64}}``  a numpy scalar: ``dtype`` is
                            ``numpy.dtype.str`` (e.g. ``"<i4"``, ``"<M8[ns]"``), ``data``
                            its bytes
``{"__ndarray__": {"dtype": str, "shape": [..], "data": b64}}``  a numpy array, C order;
                            dtype "object": ``"items"`` (the encoded elements, flat) in
                            place of ``"data"``
``{"__pickle__": b64}``     a value with no encoding above: its pickle. psmpi never
                            unpickles it unless asked (``psmpi.read(..., unpickle=True)``)
=====================  ==================================================================

Dicts with str keys are JSON objects. A stored empty byte string is a null.
"""

from __future__ import annotations

import base64
import datetime
import json
import pickle
import warnings
from typing import Any

import numpy as np

TAGS = frozenset(("__int__", "__tuple__", "__dict__", "__items__", "__complex__", "__bytes__",
                  "__datetime__", "__date__", "__timedelta__", "__timestamp__", "__numpy__",
                  "__ndarray__", "__pickle__"))
# Longest str (in UTF-8 bytes) a fixed-width "str" column holds; longer ones make the
# column general. HDF5 keeps a dataset's fill value in its object header (at most 64 KiB),
# so a fixed-width S<n> column of 64 KiB strings cannot even be created.
STR_MAX_BYTES = 4096
# Largest int magnitude a float64 holds exactly (every int up to it).
FLOAT_EXACT = 2**53
# Ints longer than this are written in hex: Python's json refuses ints of over 4300 digits.
_INT_BITS = 10_000


class Unencodable(ValueError):
    """A value that has no encoding and cannot be pickled."""


class PickleBytes(bytes):
    """The bytes of a stored pickle, read with ``unpickle="keep"`` (psmpi merge): encoded
    again as the same pickle, not as bytes, and never unpickled."""


class Pickled:
    """Marks that an encoding fell back on pickle (see :func:`encode`)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pickle(v: Any, note: Pickled | None) -> dict:
    try:
        data = pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise Unencodable(f"a {type(v).__name__} has no encoding and cannot be pickled "
                          f"({type(exc).__name__}: {exc})") from exc
    if note is not None:
        note.used = True
    return {"__pickle__": _b64(data)}


def _array(v: np.ndarray, note: Pickled | None) -> dict:
    if v.dtype.kind == "O":
        items = [tree(x, note) for x in v.reshape(-1).tolist()]
        return {"__ndarray__": {"dtype": "object", "shape": list(v.shape), "items": items}}
    if v.dtype.kind not in "biufcmMSU" or v.dtype.names is not None:
        return _pickle(v, note)
    return {"__ndarray__": {"dtype": v.dtype.str, "shape": list(v.shape),
                            "data": _b64(np.ascontiguousarray(v).tobytes())}}


def _pandas_timestamp(v: Any) -> bool:
    return type(v).__name__ == "Timestamp" and type(v).__module__.startswith("pandas")


def tree(v: Any, note: Pickled | None = None) -> Any:
    """``v`` as a tree of JSON types with the typed objects of the module docstring."""
    t = type(v)
    if t is int and v.bit_length() > _INT_BITS:
        return {"__int__": hex(v)}
    if v is None or t is bool or t is str or t is int:
        return v
    if t is float:
        return v
    if t is list:
        return [tree(x, note) for x in v]
    if t is tuple:
        return {"__tuple__": [tree(x, note) for x in v]}
    if t is dict:
        if all(type(k) is str for k in v):
            out = {k: tree(x, note) for k, x in v.items()}
            return {"__dict__": out} if len(out) == 1 and next(iter(out)) in TAGS else out
        return {"__items__": [[tree(k, note), tree(x, note)] for k, x in v.items()]}
    if t is complex:
        return {"__complex__": [v.real, v.imag]}
    if t is bytes:
        return {"__bytes__": _b64(v)}
    if t is PickleBytes:
        return {"__pickle__": _b64(v)}
    if t is np.ndarray:
        return _array(v, note)
    if isinstance(v, np.generic) and v.dtype.kind in "biufcmMSU":
        return {"__numpy__": {"dtype": v.dtype.str, "data": _b64(v.tobytes())}}
    if _pandas_timestamp(v):
        zone = getattr(v.tz, "key", None) or getattr(v.tz, "zone", None)
        return {"__timestamp__": [v.isoformat(), zone] if zone else v.isoformat()}
    if t is datetime.datetime:
        zone = getattr(v.tzinfo, "key", None)  # a zoneinfo zone: ISO keeps only the offset
        return {"__datetime__": [v.isoformat(), zone] if zone else v.isoformat()}
    if t is datetime.date:
        return {"__date__": v.isoformat()}
    if t is datetime.timedelta:
        return {"__timedelta__": [v.days, v.seconds, v.microseconds]}
    return _pickle(v, note)


def encode(v: Any, note: Pickled | None = None) -> bytes:
    """The UTF-8 JSON bytes of ``v`` (never empty); :class:`Unencodable` if impossible.

    ``note.used`` is set when a part of ``v`` was pickled.
    """
    try:
        return json.dumps(tree(v, note), separators=(",", ":")).encode("ascii")
    except RecursionError as exc:
        raise Unencodable("the value is nested too deeply to encode") from exc
    except (TypeError, ValueError) as exc:  # a circular reference
        if isinstance(exc, Unencodable):
            raise
        raise Unencodable(f"the value cannot be encoded ({exc})") from exc


def _ndarray(spec: dict, unpickle: bool | str) -> np.ndarray:
    shape = tuple(spec["shape"])
    if spec["dtype"] == "object":
        out = np.empty(len(spec["items"]), dtype=object)
        for i, x in enumerate(spec["items"]):
            out[i] = untree(x, unpickle)
        return out.reshape(shape)
    dtype = np.dtype(spec["dtype"])
    if dtype.itemsize == 0:  # "<U0", "|S0": empty strings, which frombuffer refuses
        return np.zeros(shape, dtype)
    data = base64.b64decode(spec["data"])
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _tagged(tag: str, x: Any, unpickle: bool | str) -> Any:
    if tag == "__int__":
        return int(x, 16)
    if tag == "__tuple__":
        return tuple(untree(i, unpickle) for i in x)
    if tag == "__dict__":
        return {k: untree(i, unpickle) for k, i in x.items()}
    if tag == "__items__":
        return {untree(k, unpickle): untree(i, unpickle) for k, i in x}
    if tag == "__complex__":
        return complex(*x)
    if tag == "__bytes__":
        return base64.b64decode(x)
    if tag == "__datetime__":
        if type(x) is list:
            import zoneinfo
            return datetime.datetime.fromisoformat(x[0]).astimezone(zoneinfo.ZoneInfo(x[1]))
        return datetime.datetime.fromisoformat(x)
    if tag == "__date__":
        return datetime.date.fromisoformat(x)
    if tag == "__timedelta__":
        return datetime.timedelta(days=x[0], seconds=x[1], microseconds=x[2])
    if tag == "__timestamp__":
        import pandas as pd
        return pd.Timestamp(x[0]).tz_convert(x[1]) if type(x) is list else pd.Timestamp(x)
    if tag == "__numpy__":
        dtype = np.dtype(x["dtype"])
        if dtype.itemsize == 0:  # np.str_(""), np.bytes_(b""): frombuffer refuses them
            return dtype.type()
        return np.frombuffer(base64.b64decode(x["data"]), dtype=dtype)[0]
    if tag == "__ndarray__":
        return _ndarray(x, unpickle)
    data = base64.b64decode(x)  # __pickle__
    if unpickle == "keep":
        return PickleBytes(data)
    return pickle.loads(data) if unpickle is True else data


def untree(x: Any, unpickle: bool | str = False) -> Any:
    """The value of a tree made by :func:`tree`; pickles as their bytes unless ``unpickle``
    is True (then unpickled) or "keep" (then :class:`PickleBytes`)."""
    if type(x) is list:
        return [untree(i, unpickle) for i in x]
    if type(x) is dict:
        if len(x) == 1:
            tag = next(iter(x))
            if tag in TAGS:
                return _tagged(tag, x[tag], unpickle)
        return {k: untree(i, unpickle) for k, i in x.items()}
    return x


def decode(data: bytes, unpickle: bool | str = False) -> Any:
    """The value of :func:`encode`'s bytes; empty bytes (a null) are None."""
    if not data:
        return None
    return untree(json.loads(data), unpickle)


def exact_in_float(v: Any) -> bool:
    """Whether int ``v`` converts to float64 without loss (|v| <= 2**53)."""
    return -FLOAT_EXACT <= v <= FLOAT_EXACT


# ---------------------------------------------------------------------- kinds of stored columns
# The kinds a column of the results store can have, and which values make which kind (see
# psmpi.store for the table). What is HDF5's business (the dtype of a general column, chunks,
# fill values) is psmpi.store.schema's.
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# type(value) -> kind: the fast path of admission; other types go through slow_kind.
COLUMN_KINDS: dict[type, str] = {bool: "bool", np.bool_: "bool", int: "int", float: "float",
                                 str: "str", np.str_: "str", type(None): "null",
                                 np.ndarray: "array"}
COLUMN_KINDS.update({t: "int" for t in (np.int8, np.int16, np.int32, np.int64,
                                        np.uint8, np.uint16, np.uint32)})
COLUMN_KINDS.update({t: "float" for t in (np.float16, np.float32, np.float64)})
SLOW_KINDS = (((bool, np.bool_), "bool"), ((int, np.integer), "int"),
              ((float, np.floating), "float"), (str, "str"), (np.ndarray, "array"))
PLAIN_NOT_STR = frozenset(("bool", "float"))  # kinds whose every value fits their column
SCALAR_KINDS = frozenset(("bool", "int", "float", "str"))
STR_MAX_CHARS = STR_MAX_BYTES // 4  # chars that surely fit: UTF-8 takes at most 4 bytes a char
FLOAT_TYPES = frozenset((float, type(None), np.float64, np.float32, np.float16))
# dtypes of the native kinds; an "array" column takes its values' dtype
DTYPES = {"bool": np.dtype(bool), "int": np.dtype(np.int64), "float": np.dtype(np.float64),
          "str": np.dtype("S16")}


def slow_kind(v: Any) -> str | None:
    """The kind of a value whose exact type is not in COLUMN_KINDS (subclasses, rarer numpy
    types); None: no native kind."""
    return next((kind for types, kind in SLOW_KINDS if isinstance(v, types)), None)


def utf8_encodable(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (lone surrogates it cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def str_width(nbytes: int) -> int:
    """Width of a "str" column (UTF-8 in fixed-width bytes) for strings of up to ``nbytes``:
    a power of two, so widening copies are rare."""
    return max(16, 1 << max(0, nbytes - 1).bit_length())


def exact_as_float(ints: np.ndarray) -> bool:
    """Whether every int64 of ``ints`` converts to float64 and back unchanged."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        back = ints.astype(np.float64).astype(np.int64)
    return bool(np.array_equal(back, ints)) and bool((ints != I64_MAX).all())


def plain(v: Any) -> Any:
    """A value read from a native column as the Python value a worker returns."""
    if isinstance(v, np.generic) and not isinstance(v, np.datetime64):
        return v.item()
    return v
