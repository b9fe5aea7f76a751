"""Value kinds of the results store and the text encoding of the "general" kind; at the
end, in a section of its own, what a pset may hold and how its values hash.

A column whose values have no common native kind (bool, int, float, str, fixed-shape
array, ragged array: numeric arrays of one dtype and ndim whose shape varies; see
:mod:`psmpi.store`) is "general": each value is stored as the UTF-8 bytes of one JSON
document. JSON's own types stand for themselves (None, bool, str, list, and
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
import orjson

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
    if t is datetime.datetime:
        zone = getattr(v.tzinfo, "key", None)  # a zoneinfo zone: ISO keeps only the offset
        return {"__datetime__": [v.isoformat(), zone] if zone else v.isoformat()}
    if t is datetime.date:
        return {"__date__": v.isoformat()}
    if t is datetime.timedelta:
        return {"__timedelta__": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, np.generic) and v.dtype.kind in "biufcmMSU":
        return {"__numpy__": {"dtype": v.dtype.str, "data": _b64(v.tobytes())}}
    if _pandas_timestamp(v):
        zone = getattr(v.tz, "key", None) or getattr(v.tz, "zone", None)
        # a named zone: the instant in UTC (a zone's old local offsets may hold seconds,
        # "+09:18:59", which pandas cannot parse back)
        return {"__timestamp__": [v.tz_convert("UTC").isoformat(), zone] if zone
                else v.isoformat()}
    return _pickle(v, note)


def encode(v: Any, note: Pickled | None = None) -> bytes:
    """The UTF-8 JSON bytes of ``v`` (never empty); :class:`Unencodable` if impossible.

    ``note.used`` is set when a part of ``v`` was pickled.
    """
    t = type(v)
    if t is np.ndarray and v.dtype.kind in _RAW_KINDS and v.dtype.names is None:
        return _array_json(v)
    if t is dict or t is list:
        fast = _plain_json(v)
        if fast is not None:
            return fast
    try:
        return json.dumps(tree(v, note), separators=(",", ":")).encode("ascii")
    except RecursionError as exc:
        raise Unencodable("the value is nested too deeply to encode") from exc
    except (TypeError, ValueError) as exc:  # a circular reference
        if isinstance(exc, Unencodable):
            raise
        raise Unencodable(f"the value cannot be encoded ({exc})") from exc


# Exact types json.dumps writes as tree() does; bool, NoneType: json tests them by identity.
_JSON_LEAVES = frozenset((str, int, float, bool, type(None)))
# Types orjson hands to its ``default`` (tree()) with the options below and tree() encodes
# without a pickle (an object array may still hold one: then the slow path takes it).
_TREE_LEAVES = frozenset({datetime.datetime, datetime.date, datetime.timedelta, complex, bytes,
                          np.ndarray} | {t for t in np.sctypeDict.values()
                                         if np.dtype(t).kind in _RAW_KINDS})
_PLAIN_READY = _JSON_LEAVES | _TREE_LEAVES | {dict, list}
# orjson's own ways that differ from tree()'s are turned off: datetimes, dataclasses and
# subclasses of str, int, dict and list go to ``default``.
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)
_NONE = type(None)


def _plain_json(v: dict | list) -> bytes | None:
    """``encode(v)`` made by orjson straight from ``v`` (tree() only for the parts JSON has
    no type for), or None when it could differ from the slow path ``json.dumps(tree(v))``
    in what it decodes to: ``v`` holds a tuple, a subclass of a JSON type, a type tree()
    would pickle, a dict with a key not a str or with one tag-like key, an int beyond 64
    bits, a NaN or infinity (orjson writes null), or a pickle (which the caller notes).

    The bytes may differ from the slow path's (``1e-9`` for ``1e-09``, UTF-8 for ``\\u``
    escapes), never the value they decode to. tree() walking every value, then json's float
    formatting, were most of the time of committing dicts of 20 entries (store_values.py e):
    orjson writes such a dict in under a microsecond, json in ten.
    """
    try:
        nones = _plain_ready(v)
        if nones < 0:
            return None
        out = orjson.dumps(v, default=tree, option=_ORJSON_OPTIONS)
    except Exception:  # noqa: BLE001 (too deep, an int beyond 64 bits, ...: the slow path says how)
        return None
    if out.count(b"null") != nones:  # a NaN or infinity became null (or a str holds "null")
        return None
    if b'"__pickle__"' in out:
        return None  # perhaps a pickle, which the slow path notes (rare: not worth a hook)
    return out


def _plain_ready(v: dict | list) -> int:
    """How many None values ``v`` (an exact dict or list) holds, or -1 when orjson may write
    it unlike tree() (see _plain_json). Checks types a container at a time, in C; a value
    that contains itself ends in RecursionError."""
    if type(v) is dict:
        if not _STR.issuperset(map(type, v)) or len(v) == 1 and next(iter(v)) in TAGS:
            return -1
        v = list(v.values())
    kinds = set(map(type, v))
    nones = 0
    if _NONE in kinds:  # list.count compares with ==, which an array answers elementwise
        nones = v.count(None) if np.ndarray not in kinds else sum(x is None for x in v)
    if _JSON_LEAVES.issuperset(kinds):
        return nones
    if not _PLAIN_READY.issuperset(kinds):
        return -1
    if dict in kinds or list in kinds:
        for x in v:
            if type(x) is dict or type(x) is list:
                n = _plain_ready(x)
                if n < 0:
                    return -1
                nones += n
    return nones


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


def _zoned_datetime(iso: str, zone: str) -> datetime.datetime:
    """The datetime with ``iso``'s wall time in ``zone``, in the fold whose UTC offset is
    iso's: equal (==) to the datetime written, also at a wall time that a change of
    clocks repeats or skips (astimezone() would move a skipped 02:00 to 03:00)."""
    import zoneinfo
    written = datetime.datetime.fromisoformat(iso)
    wall = written.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    for fold in (0, 1):
        candidate = wall.replace(fold=fold)
        if candidate.utcoffset() == written.utcoffset():
            return candidate
    return written.astimezone(wall.tzinfo)  # the zone's rules changed since: the instant


def _timestamp(iso: str) -> Any:
    """The pandas.Timestamp of ISO text, also with a UTC offset in seconds ("+00:09:21",
    as local mean times have), which pandas cannot parse itself."""
    import pandas as pd
    try:
        return pd.Timestamp(iso)
    except ValueError:
        local, sign, offset = iso[:-9], iso[-9], iso[-8:]  # "+HH:MM:SS"
        if sign not in "+-" or offset[2::3] != "::":
            raise
        hours, minutes, seconds = map(int, offset.split(":"))
        delta = datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)
        return pd.Timestamp(local).tz_localize(datetime.timezone(-delta if sign == "-" else delta))


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
        return _zoned_datetime(*x) if type(x) is list else datetime.datetime.fromisoformat(x)
    if tag == "__date__":
        return datetime.date.fromisoformat(x)
    if tag == "__timedelta__":
        return datetime.timedelta(days=x[0], seconds=x[1], microseconds=x[2])
    if tag == "__timestamp__":
        return _timestamp(x[0]).tz_convert(x[1]) if type(x) is list else _timestamp(x)
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
# Exact types of the values a scalar column holds (arrays aside): psmpi.worker.task ships a group's
# results as columns when every value is one of these.
SCALAR_COLUMN_TYPES = frozenset(t for t, kind in COLUMN_KINDS.items() if kind != "array")
SLOW_KINDS = (((bool, np.bool_), "bool"), ((int, np.integer), "int"),
              ((float, np.floating), "float"), (str, "str"), (np.ndarray, "array"))
PLAIN_NOT_STR = frozenset(("bool", "float"))  # kinds whose every value fits their column
SCALAR_KINDS = frozenset(("bool", "int", "float", "str"))
STR_MAX_CHARS = STR_MAX_BYTES // 4  # chars that surely fit: UTF-8 takes at most 4 bytes a char
FLOAT_TYPES = frozenset((float, type(None), np.float64, np.float32, np.float16))
# dtypes of the native kinds; an "array" column takes its values' dtype
DTYPES = {"bool": np.dtype(bool), "int": np.dtype(np.int64), "float": np.dtype(np.float64),
          "str": np.dtype("S16")}


_CONTAINER_TYPES = frozenset((dict, list, tuple))


def slow_kind(v: Any) -> str | None:
    """The kind of a value whose exact type is not in COLUMN_KINDS (subclasses, rarer numpy
    types); None: no native kind."""
    if type(v) in _CONTAINER_TYPES:  # the usual general values: no isinstance chain (5 %)
        return None
    if isinstance(v, np.timedelta64):  # a numpy integer to isinstance, but a duration: general
        return None
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


# ================================================================ pset values
# What a pset may hold, how its values hash (psmpi.params.pset_hash) and when a value a
# worker returns is the pset's own. Kept apart from the store's column kinds above.

_NONE = type(None)
# Exact types valid at the top of a pset without a further look (a str must also be
# UTF-8-encodable, checked by the caller); every one is stored without a pickle.
PSET_SCALAR_TYPES = frozenset({_NONE, bool, int, float, complex, str, bytes} | {
    t for t in np.sctypeDict.values() if np.dtype(t).kind in "biufcSU"})
# Exact types that may appear anywhere in a pset value, containers aside.
_PSET_LEAF_TYPES = PSET_SCALAR_TYPES | {datetime.datetime, datetime.date, datetime.timedelta}
# numpy dtype kinds psets may hold: as :func:`tree` encodes them without a pickle.
_PSET_DTYPE_KINDS = "biufcmMSU"
PSET_KINDS_TEXT = ("None, bool, int, float, complex, str, bytes, numpy scalars and arrays, "
                   "datetime, date, timedelta, numpy.datetime64, pandas.Timestamp, and lists, "
                   "tuples and dicts with str keys of these")


def pset_value_problem(key: Any, v: Any) -> str | None:
    """Why ``v`` cannot be the value of pset key ``key``, with the fix; None if it can.

    The caller has let exact :data:`PSET_SCALAR_TYPES` through already. At the top level a
    subclass of int, float or str (an IntEnum, say) is fine: its column keeps its value.
    Inside a container every part must be of a type :func:`tree` encodes exactly, so that
    the value reads back as given and hashes alike after the round trip.
    """
    if isinstance(v, str):
        if not utf8_encodable(v):
            return (f"value of key {key!r} is a str that UTF-8 cannot encode (a lone "
                    f"surrogate, as left by errors='surrogateescape'); pass "
                    f"s.encode('utf-8', 'replace').decode() instead")
        return None
    if isinstance(v, (int, float)) or isinstance(v, np.generic) and \
            v.dtype.kind in _PSET_DTYPE_KINDS:
        return None  # at the top, subclasses too: the store takes them by their base kind
    try:
        part = _unencodable_part(v)
    except RecursionError:
        part = "a value nested too deeply (or containing itself)"
    if part is None:
        return None
    return (f"value of key {key!r} is or holds {part}, which psmpi cannot store exactly or "
            f"hash; a pset may hold {PSET_KINDS_TEXT}: pass the parameters it is built from "
            f"(or a str naming it) and build the object in the worker")


def _unencodable_part(v: Any) -> str | None:
    """A description of the first part of ``v`` with no exact encoding, or None."""
    t = type(v)
    if t in _PSET_LEAF_TYPES or _pandas_timestamp(v):
        return None
    if t is list or t is tuple:
        return next(filter(None, map(_unencodable_part, v)), None)
    if t is dict:
        for k, x in v.items():
            if type(k) is not str:
                return f"a dict with a key of type {type(k).__name__} (pset dicts need str keys)"
            part = _unencodable_part(x)
            if part is not None:
                return part
        return None
    if t is np.ndarray:
        if v.dtype.kind == "O":
            return next(filter(None, map(_unencodable_part, v.reshape(-1).tolist())), None)
        if v.dtype.kind in _PSET_DTYPE_KINDS and v.dtype.names is None:
            return None
        return f"a numpy array of dtype {v.dtype}"
    if isinstance(v, np.generic) and v.dtype.kind in _PSET_DTYPE_KINDS:
        return None
    name = t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return f"a value of type {name}"


# ---- hash tokens. A pset's canonical text (psmpi.params._encoded) is its keys, sorted, each
# as "<len>:<key>=" followed by the token of its value and ";". The scalar tokens are those of
# psmpi 1 and must never change: stored _pset_hash columns are matched against them.
#   None "N"   True "T"   False "F"   NaN (any) "n"   int, or integral float "i<decimal>"
#   other float "f<repr>"   str "s<len>:<text>"
# Tokens added for rich values start with a letter of their own and are self-delimiting
# (counts and lengths up front), so no two unequal values share a text:
#   complex "c<re>,<im>" (imaginary part 0: the token of the real part, as 1+0j == 1)
#   bytes "b<len>:<hex>"   date "a<ISO date>"
#   datetime (naive), numpy.datetime64 "w<ns since 1970-01-01>"; aware "z<ns since the epoch,
#   UTC>" (the instant: aware datetimes equal as instants hash alike); NaT "x"
#   timedelta, numpy.timedelta64 "e<ns>"; numpy.timedelta64 in months or years "E<months>"
#   list "L<n>[" items "]"   tuple "U<n>(" items ")"   dict "D<n>{" "<len>:<key>=" items "}"
#   (keys sorted; each item is its token and ";")   array "A<ndim>:<d0>,<d1>..[" items "]"
#   (elements in C order as the scalars they hold; a 0-d array is the token of its scalar)

_BIG_INT_BITS = 14_000  # str() of a longer int may exceed Python's digit limit (4300)
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NS = {"W": 7 * 86400 * 10**9, "D": 86400 * 10**9, "h": 3600 * 10**9, "m": 60 * 10**9,
       "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_SUB_NS = {"ps": 10**3, "fs": 10**6, "as": 10**9}  # units finer than a nanosecond


def int_text(v: int) -> str:
    """The decimal digits of ``v``, whatever Python's int digit limit is set to."""
    if v.bit_length() <= _BIG_INT_BITS:
        return str(v)
    import decimal
    return str(decimal.Decimal(v))  # exact, and not subject to the limit


def _float_token(v: float) -> str:
    if v.is_integer():
        return "i" + int_text(int(v))  # 1.0 == 1 in Python, so they must hash alike
    return "f" + repr(v) if v == v else "n"  # all NaNs alike; repr round-trips exactly


def hash_token(v: Any) -> str:
    """The canonical text of one pset value; TypeError naming the type if it has none."""
    t = type(v)  # exact types first: the common ones cost one comparison
    if t is str:
        return f"s{len(v)}:{v}"
    if t is int and v.bit_length() <= _BIG_INT_BITS:
        return f"i{v}"
    if t is float:
        return _float_token(v)
    if t is list:
        return f"L{len(v)}[{''.join([hash_token(x) + ';' for x in v])}]"
    if v is None:
        return "N"
    if isinstance(v, (bool, np.bool_)):  # before int: bool subclasses int but must differ
        return "T" if v else "F"
    if isinstance(v, (int, np.integer)):
        if isinstance(v, np.timedelta64):  # a numpy integer too, but a duration
            return _numpy_time_token(v)
        return "i" + int_text(int(v))
    if isinstance(v, (float, np.floating)):
        return _float_token(float(v))
    if isinstance(v, str):  # numpy.str_ and other str subclasses
        v = str(v)
        return f"s{len(v)}:{v}"
    return _rich_token(v)


def _rich_token(v: Any) -> str:
    if isinstance(v, (complex, np.complexfloating)):
        v = complex(v)
        if v.imag == 0:
            return _float_token(v.real)
        return f"c{_float_token(v.real)},{_float_token(v.imag)}"
    if isinstance(v, bytes):  # numpy.bytes_ too
        return f"b{len(v)}:{bytes(v).hex()}"
    if isinstance(v, datetime.datetime):  # pandas.Timestamp too; before date, its base
        return _datetime_token(v)
    if isinstance(v, datetime.date):
        return "a" + v.isoformat()
    if isinstance(v, datetime.timedelta):
        ns = ((v.days * 86400 + v.seconds) * 10**6 + v.microseconds) * 1000
        return f"e{ns + getattr(v, 'nanoseconds', 0)}"
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return _numpy_time_token(v)
    t = type(v)
    if isinstance(v, list):
        return f"L{len(v)}[{''.join([hash_token(x) + ';' for x in v])}]"
    if isinstance(v, tuple):
        return f"U{len(v)}({''.join([hash_token(x) + ';' for x in v])})"
    if isinstance(v, dict):
        if not all(type(k) is str for k in v):
            raise TypeError("a dict with keys that are not all str")
        items = "".join([f"{len(k)}:{k}={hash_token(v[k])};" for k in sorted(v)])
        return f"D{len(v)}{{{items}}}"
    if t is np.ndarray:
        return _array_token(v)
    raise TypeError(f"a {t.__name__}")


def _datetime_token(v: datetime.datetime) -> str:
    offset = v.utcoffset()
    seconds = (v.toordinal() - _EPOCH_ORDINAL) * 86400 + v.hour * 3600 + v.minute * 60 + v.second
    ns = (seconds * 10**6 + v.microsecond) * 1000 + getattr(v, "nanosecond", 0)
    if offset is None:
        return f"w{ns}"
    return f"z{ns - ((offset.days * 86400 + offset.seconds) * 10**6 + offset.microseconds) * 1000}"


def _numpy_time_token(v: np.datetime64 | np.timedelta64) -> str:
    if np.isnat(v):
        return "x"
    unit, step = np.datetime_data(v.dtype)
    count = int(v.astype(np.int64)) * step
    is_date = isinstance(v, np.datetime64)
    if unit in ("Y", "M"):
        if not is_date:
            return f"E{count * 12 if unit == 'Y' else count}"
        unit, count = "D", int(v.astype("M8[D]").astype(np.int64))
    if unit in _SUB_NS:
        ns, rest = divmod(count, _SUB_NS[unit])
        text = str(ns) if not rest else f"{count}/{_SUB_NS[unit]}"  # not a whole ns: exact
    else:
        text = str(count * _NS[unit])
    return ("w" if is_date else "e") + text


def _array_token(v: np.ndarray) -> str:
    if v.ndim == 0:  # the store keeps a 0-d array as its scalar
        return hash_token(v[()])
    items = v.reshape(-1)
    elements = items if v.dtype.kind in "mM" else items.tolist()  # tolist: ns -> int
    shape = ",".join(map(str, v.shape))
    return f"A{v.ndim}:{shape}[{''.join([hash_token(x) + ';' for x in elements])}]"


# ---- equality of a value a worker returns with the pset's own


def value_family(value: Any) -> str | type:
    """The type family :func:`same_value` compares: Python and numpy scalars of one kind
    are one family (``1`` and ``numpy.int64(1)``), ``1`` and ``1.0`` or ``True`` are not."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):  # before int: bool subclasses int
        return "bool"
    if isinstance(value, np.timedelta64):  # a numpy integer to isinstance, but a duration
        return np.timedelta64
    for types_, family in _FAMILIES:
        if isinstance(value, types_):
            return family
    return type(value)


_FAMILIES = (((int, np.integer), "int"), ((float, np.floating), "float"),
             ((complex, np.complexfloating), "complex"), ((str, np.str_), "str"),
             ((bytes, np.bytes_), "bytes"), (np.ndarray, "array"), (list, "list"),
             (tuple, "tuple"), (dict, "dict"))
# dtype kinds of one family for arrays: signed and unsigned ints are both ints
_ARRAY_KIND = {"u": "i"}


def same_value(given: Any, returned: Any) -> bool:
    """Whether ``returned`` is the value ``given``: the same type family and equal, NaN equal
    to NaN, arrays of one dtype kind and shape with equal elements, containers item by item."""
    if given is returned:
        return True
    family = value_family(given)
    if family != value_family(returned):
        return False
    if family == "none":
        return True
    if family in ("float", "complex"):
        return bool(given == returned) or (given != given and returned != returned)
    if family == "array":
        kinds = [_ARRAY_KIND.get(a.dtype.kind, a.dtype.kind) for a in (given, returned)]
        if kinds[0] != kinds[1] or given.shape != returned.shape:
            return False
        if kinds[0] == "O":
            return all(map(same_value, given.ravel().tolist(), returned.ravel().tolist()))
        return bool(np.array_equal(given, returned, equal_nan=kinds[0] in "fc"))
    if family in ("list", "tuple"):
        return len(given) == len(returned) and all(map(same_value, given, returned))
    if family == "dict":
        return given.keys() == returned.keys() and all(
            same_value(value, returned[key]) for key, value in given.items())
    if isinstance(given, (np.datetime64, np.timedelta64)) and np.isnat(given):
        return bool(np.isnat(returned))  # NaT like NaN: equal to itself here
    try:
        return bool(given == returned)
    except Exception:  # an object whose == raises or is ambiguous is not known equal
        return False
