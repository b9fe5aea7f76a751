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
_STR = frozenset((str,))


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


# numpy dtype kinds stored as their bytes (object arrays are encoded item by item)
_RAW_KINDS = frozenset("biufcmMSU")


def _array(v: np.ndarray, note: Pickled | None) -> dict:
    if v.dtype.kind == "O":
        items = [tree(x, note) for x in v.reshape(-1).tolist()]
        return {"__ndarray__": {"dtype": "object", "shape": list(v.shape), "items": items}}
    if v.dtype.kind not in _RAW_KINDS or v.dtype.names is not None:
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
        if _STR.issuperset(map(type, v)):  # every key a str, checked in C (a generator: +6 %)
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
    if type(v) is np.ndarray and v.dtype.kind in _RAW_KINDS and v.dtype.names is None:
        return _array_json(v)
    try:
        return json.dumps(tree(v, note), separators=(",", ":")).encode("ascii")
    except RecursionError as exc:
        raise Unencodable("the value is nested too deeply to encode") from exc
    except (TypeError, ValueError) as exc:  # a circular reference
        if isinstance(exc, Unencodable):
            raise
        raise Unencodable(f"the value cannot be encoded ({exc})") from exc


def _array_json(v: np.ndarray) -> bytes:
    """The bytes ``json.dumps(tree(v))`` gives for an array of plain dtype, made directly:
    json scanned the base64 text for characters to escape (it has none), which took longer
    than the base64 itself (arrays of 10-10,000 floats, store_values.py d)."""
    shape = ",".join(map(str, v.shape))
    data = base64.b64encode(np.ascontiguousarray(v).tobytes())
    return b'{"__ndarray__":{"dtype":"%s","shape":[%s],"data":"%s"}}' % (
        v.dtype.str.encode("ascii"), shape.encode("ascii"), data)


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
