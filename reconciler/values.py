"""Firestore field values as plain Python, and their exact JSON form. Pure: no I/O, no clock.

A field value is one of: None, bool, int (signed 64-bit, as Firestore's), float, str, bytes, a
timezone-aware datetime (a Firestore timestamp, kept to the microsecond), Reference, GeoPoint, a list
of values, or a dict of str → value.
The JSON form (used by snapshot and plan files) keeps every one of those exactly: JSON-native values
stay native, the others become one-key tagged objects, and a map whose keys could be mistaken for a
tag is wrapped in ``{"$map": ...}``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from sys import intern
from typing import Any


@dataclass(frozen=True, slots=True)
class Reference:
    """A Firestore document reference, by its path relative to the database (``coll/doc``)."""

    path: str


@dataclass(frozen=True, slots=True)
class GeoPoint:
    latitude: float
    longitude: float


class _Missing:
    """The value of a field a document does not have (distinct from null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # Pickled by name, so that a copy (a worker's result) is the one MISSING that ``is`` finds.
        return "MISSING"


MISSING: Any = _Missing()


def is_empty(value: Any) -> bool:
    """Empty means missing, null or the empty string: the only values a fill may replace."""
    return value is MISSING or value is None or (isinstance(value, str) and value == "")


def is_int(value: Any) -> bool:
    """A Firestore integer (bool is not an integer here, nor is 2.0)."""
    return type(value) is int


def is_timestamp(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


# -- timestamps ------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits: one spelling per instant."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _fast_timestamp(text: str) -> datetime:
    if len(text) == 27 and text[10] == "T" and text[19] == "." and text[26] == "Z":
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return parse_timestamp(text)


class TimestampRangeError(ValueError):
    """A well-formed timestamp that falls outside the years 1 to 9999 once in UTC."""


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 with any offset into UTC; refuse precision finer than a microsecond."""
    if len(text) == 27 and text[26] == "Z" and text[10] == "T" and text[19] == ".":
        try:  # the form this tool writes: the C parser, many times faster than the pattern
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    match = _TIMESTAMP.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp (e.g. 2025-01-06T09:00:00.000000Z)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fraction = fraction or ""
    if len(fraction) > 6 and fraction[6:].strip("0"):
        raise ValueError(f"{text!r} is finer than a microsecond, which this format cannot keep")
    micro = int((fraction + "000000")[:6])
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(timedelta(minutes=sign * (int(offset[1:3]) * 60 + int(offset[4:6]))))
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
                        tzinfo=tz).astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00, which is in the year 10000 in UTC
        raise TimestampRangeError(f"{text!r} is outside the years 1 to 9999 once in UTC") from None


# -- the exact JSON form ---------------------------------------------------------------------------

_TAGS = ("$timestamp", "$bytes", "$reference", "$geopoint", "$float", "$map")
# Firestore's integers are signed 64-bit. A file can spell a larger one; reading it as a float or
# as an integer Firestore cannot hold would change the value when the file is written back.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_OUT_OF_RANGE = ("an integer outside Firestore's signed 64-bit range (-2**63 to 2**63 - 1), which no "
                 "Firestore document can hold")


def encode(value: Any) -> Any:
    """A value → its exact JSON form (JSON-able, deterministic)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is datetime:
        return {"$timestamp": format_timestamp(value)}
    if isinstance(value, (bool, str, int)):  # subclasses of the plain types
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, datetime):
        return {"$timestamp": format_timestamp(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Reference):
        return {"$reference": value.path}
    if isinstance(value, GeoPoint):
        return {"$geopoint": {"latitude": value.latitude, "longitude": value.longitude}}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        encoded = {key: encode(item) for key, item in value.items()}
        if any(key.startswith("$") for key in value):
            return {"$map": encoded}
        return encoded
    raise TypeError(f"not a Firestore value: {type(value).__name__}")


def encode_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A document's fields → JSON form. Field names are never tags: no ``$map`` wrapper at top level."""
    encoded = {}
    for key, value in fields.items():
        kind = type(value)
        encoded[key] = value if kind is str or kind is int or kind is bool or value is None else encode(value)
    return encoded


class DecodeError(ValueError):
    """A decoding error. Its place is collected on the way out, so the happy path builds none."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.place: list[str] = []  # innermost first

    def at(self, where: str) -> ValueError:
        return ValueError(f"{where}{''.join(reversed(self.place))}: {self.message}")


def decode_fields(data: Any, where: str, strings: dict[str, str] | None = None) -> dict[str, Any]:
    """A document's fields from their JSON form. ``strings``: a cache that makes equal short strings
    one object, which keeps a large state small."""
    if type(data) is not dict:
        raise ValueError(f"{where}: fields must be an object, found {_json_type(data)}")
    try:
        return _decode_map(data, strings)
    except DecodeError as bad:
        raise bad.at(where) from None


def decode_map(data: dict[str, Any], strings: dict[str, str] | None = None,
               keep: frozenset[str] | None = None) -> dict[str, Any]:
    """Like ``decode_fields`` for a dict already checked, raising DecodeError: for hot loops that
    name the place themselves (``error.at(where)``), only when there is an error. ``keep``: decode
    only these keys (a projection)."""
    return _decode_map(data, strings, keep)


def decode_timestamp(data: Any) -> Any:
    """A value expected to be a timestamp, decoded (DecodeError when its form is wrong)."""
    if type(data) is dict and len(data) == 1 and type(stamp := data.get("$timestamp")) is str:
        try:
            return _fast_timestamp(stamp)
        except ValueError as error:
            raise DecodeError(f"bad $timestamp value: {error}") from error
    return _decode(data, None)


def decode(data: Any, where: str) -> Any:
    """Exact JSON form → value. ``where`` names the place for an error message."""
    try:
        return _decode(data, None)
    except DecodeError as bad:
        raise bad.at(where) from None


def _decode_map(data: dict[str, Any], strings: dict[str, str] | None,
                keep: frozenset[str] | None = None) -> dict[str, Any]:
    # The hot loop of reading a snapshot: plain values and timestamps are handled inline.
    # Field names are interned: the spec's names are too, so lookups compare identities, not text.
    result: dict[str, Any] = {}
    for key, item in data.items():
        if keep is not None and key not in keep:
            continue
        key = intern(key)
        kind = type(item)
        if kind is str:
            result[key] = strings.setdefault(item, item) if strings is not None and len(item) <= 40 else item
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                bad = DecodeError(_OUT_OF_RANGE)
                bad.place.append(f".{key}")
                raise bad
            result[key] = item
        elif kind is float or kind is bool or item is None:
            result[key] = item
        elif kind is dict and len(item) == 1 and type(stamp := item.get("$timestamp")) is str \
                and len(stamp) == 27 and stamp[26] == "Z" and stamp[19] == ".":
            try:
                result[key] = _fast_timestamp(stamp)
            except ValueError as error:  # e.g. month 13: named with its place, like any bad value
                bad = DecodeError(f"bad $timestamp value: {error}")
                bad.place.append(f".{key}")
                raise bad from error
        else:
            try:
                result[key] = _decode(item, strings)
            except DecodeError as bad:
                bad.place.append(f".{key}")
                raise
    return result


def _decode(data: Any, strings: dict[str, str] | None) -> Any:
    kind = type(data)
    if kind is int:
        if INT64_MIN <= data <= INT64_MAX:
            return data
        raise DecodeError(_OUT_OF_RANGE)
    if kind is str or kind is float or kind is bool or data is None:
        return data
    if kind is list:
        items = []
        for index, item in enumerate(data):
            try:
                items.append(_decode(item, strings))
            except DecodeError as bad:
                bad.place.append(f"[{index}]")
                raise
        return items
    if kind is not dict:
        raise DecodeError(f"unexpected JSON value {_json_type(data)}")
    if len(data) == 1:
        ((tag, payload),) = data.items()
        if tag in _TAGS:
            try:
                return _decode_tag(tag, payload, strings)
            except DecodeError:
                raise
            except (ValueError, TypeError, KeyError) as error:
                raise DecodeError(f"bad {tag} value: {error}") from error
    for key in data:
        if key in _TAGS:
            raise DecodeError(f"a tagged value {key!r} must be the only key of its object")
        if key.startswith("$"):
            raise DecodeError(f"unknown tag {key!r}; a map with keys starting with '$' is written as "
                       '{"$map": {...}}')
    return _decode_map(data, strings)


def _decode_tag(tag: str, payload: Any, strings: dict[str, str] | None) -> Any:
    if tag == "$timestamp":
        return parse_timestamp(_require(payload, str))
    if tag == "$bytes":
        return base64.b64decode(_require(payload, str), validate=True)
    if tag == "$reference":
        path = _require(payload, str)
        if not path or path.count("/") % 2 != 1:
            raise ValueError(f"{path!r} is not a document path (collection/document)")
        return Reference(path)
    if tag == "$geopoint":
        lat, lng = _require(payload, dict)["latitude"], payload["longitude"]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lat, lng)):
            raise ValueError("latitude and longitude must be numbers")
        return GeoPoint(float(lat), float(lng))
    if tag == "$float":
        names = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if payload not in names:
            raise ValueError("expected one of NaN, Infinity, -Infinity")
        return names[payload]
    if tag == "$map":
        return _decode_map(_require(payload, dict), strings)
    raise AssertionError(tag)


def _require(payload: Any, kind: type) -> Any:
    if not isinstance(payload, kind):
        raise TypeError(f"expected a JSON {kind.__name__}, found {_json_type(payload)}")
    return payload


def _json_type(data: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return names.get(type(data), type(data).__name__)


# -- comparison and display ------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """One string per value, exact by type (1, 1.0 and True differ): for equality and sorting."""
    if value is MISSING:
        return "<missing>"
    return json.dumps(encode(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def same(left: Any, right: Any) -> bool:
    """Exact equality of two field values, by Firestore type (unlike ``==``, 1 is not True)."""
    return canonical(left) == canonical(right)


def show(value: Any) -> str:
    """A short human spelling of a value, for text and markdown output."""
    if value is MISSING:
        return "(missing)"
    if is_timestamp(value):
        return format_timestamp(value)
    if isinstance(value, str):
        return printable(json.dumps(value, ensure_ascii=False))
    return printable(json.dumps(encode(value), sort_keys=True, ensure_ascii=False))


# -- Firestore's storage limits ----------------------------------------------------------------------


def document_size(path: str, fields: dict[str, Any]) -> int:
    """A document's size as Firestore counts it against its 1 MiB limit (its storage-size rules:
    name, field names, values, plus 32 bytes)."""
    return _name_size(path) + _map_size(fields) + 32


def _name_size(path: str) -> int:
    return sum(len(part.encode("utf-8")) + 1 for part in path.split("/")) + 16


def _map_size(fields: dict[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + 1 + value_size(value) for name, value in fields.items())


def value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, datetime)):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, GeoPoint):
        return 16
    if isinstance(value, Reference):
        return _name_size(value.path)
    if isinstance(value, (list, tuple)):
        return sum(value_size(item) for item in value)
    if isinstance(value, dict):
        return _map_size(value)
    return 0


def nested_array(value: Any, inside: bool = False) -> bool:
    """Whether an array sits directly inside an array somewhere in ``value`` (Firestore refuses it)."""
    if isinstance(value, (list, tuple)):
        return inside or any(nested_array(item, True) for item in value)
    if isinstance(value, dict):
        return any(nested_array(item) for item in value.values())
    return False


# -- text for a terminal ----------------------------------------------------------------------------

def printable(text: str, newlines: bool = False) -> str:
    """``text`` with every control or format character (an ESC sequence, a carriage return, a
    bidirectional override...) spelled as an escape, so data can never move a terminal's cursor or
    forge a line; ``newlines`` keeps line breaks, for multi-line messages the tool wrote itself."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char == "\n" and newlines:
            out.append(char)
        elif not char.isprintable() and char != " ":
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)
