"""Build a plan from (spec, state), and the plan file format. Pure: no files, no clock.

The plan file (JSON, ``formats.PLAN``) holds everything ``apply PLAN`` needs: the spec's text
and hash, the source and read time, every op with its rule ids, path, fields and precondition, the
findings and the summary. Encoding is deterministic: the same plan gives the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from reconciler.errors import PlanFileError
from reconciler.formats import PLAN, check_version
from reconciler.kernel import reconcile
from reconciler.model import (
    CreateDocumentOp,
    FieldFill,
    FillFieldsOp,
    Finding,
    Op,
    Plan,
    Selection,
    SourceFile,
    Spec,
    State,
    StatusTransition,
)
from reconciler.values import (
    MISSING,
    TimestampRangeError,
    decode,
    decode_fields,
    encode,
    encode_fields,
    is_empty,
    parse_timestamp,
)


def build_plan(spec: Spec, state: State, selection: Selection | None = None,
               outcome: tuple[list[Op], list[Finding]] | None = None) -> Plan:
    """``outcome``: what ``reconcile(spec, state, selection)`` gives, when it was computed already
    (on several cores: ``workers.reconcile_on_cores``)."""
    ops, findings = reconcile(spec, state, selection) if outcome is None else outcome
    return Plan(spec_name=spec.name, spec_path=spec.source, spec_sha256=spec.sha256,
                spec_text=spec.text, source=state.source, read_time=state.read_time,
                ops=tuple(ops), findings=tuple(findings), selection=selection, source_file=state.file)


# -- encoding ----------------------------------------------------------------------------------------


def plan_to_data(plan: Plan, ops: list[Any] | None = None,
                 findings: list[Any] | None = None) -> dict[str, Any]:
    """The plan file's data; ``ops`` and ``findings``, when given, stand for the encoded lists."""
    summary = plan.summary
    return {
        "format": PLAN.name,
        "format_version": plan.format_version,
        "spec": {"name": plan.spec_name, "path": plan.spec_path, "sha256": plan.spec_sha256,
                 "text": plan.spec_text},
        "source": plan.source,
        "source_file": None if plan.source_file is None else {
            "path": plan.source_file.path, "sha256": plan.source_file.sha256},
        "selection": None if plan.selection is None else dict(plan.selection.pairs),
        "read_time": encode(plan.read_time),
        "summary": {"create": summary.create, "link": summary.link, "fill": summary.fill,
                    "delete": 0, "overwrite": 0, "findings": summary.findings},
        "ops": [op_to_data(op) for op in plan.ops] if ops is None else ops,
        "findings": [finding_to_data(f) for f in plan.findings] if findings is None else findings,
    }


def op_to_data(op: Op) -> dict[str, Any]:
    if isinstance(op, CreateDocumentOp):
        return {"op": "create_document", "path": op.path, "rules": list(op.rules), "group": op.group,
                "series": op.series, "precondition": {"exists": False}, "fields": encode_fields(op.fields)}
    return {
        "op": "fill_fields", "path": op.path, "rules": list(op.rules), "group": op.group,
        "series": op.series,
        "precondition": {"update_time": encode(op.update_time)},
        "fills": [{"field": f.field, "value": encode(f.value), "before": _encode_empty(f.before),
                   "rule": f.rule} for f in op.fills],
        "transition": None if op.transition is None else {
            "field": op.transition.field, "before": op.transition.before, "to": op.transition.to,
            "rule": op.transition.rule},
    }


def _encode_empty(value: Any) -> Any:
    """The empty value a fill replaces: "missing", null or ""."""
    return {"$missing": True} if value is MISSING else value


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
_CHUNK = 2048  # ops or findings encoded at a time: the plan file is never held whole in memory
_HOLE = "\x00items"  # stands for a list in the frame: no other value there is a lone string in a list


def plan_bytes(plan: Plan) -> bytes:
    """The plan file's exact bytes (UTF-8); ``plan_chunks`` gives the same bytes piece by piece."""
    return b"".join(plan_chunks(plan))


def plan_chunks(plan: Plan, op_items: Sequence[bytes] | None = None) -> Iterator[bytes]:
    """The plan file's bytes in pieces of a few thousand ops, in order: what
    ``orjson.dumps(plan_to_data(plan), OPT_SORT_KEYS | OPT_INDENT_2) + b"\\n"`` gives, without the
    whole plan's data or bytes in memory at once. The frame (every member but the two lists) is
    encoded with a placeholder in each list, which is then replaced by the list's items; the two
    lists are the top object's members, so their items sit at an indent of four spaces.
    ``op_items``: each op's ``op_item``, in plan order, when they were encoded already (by the
    processes that planned them)."""
    data = plan_to_data(plan, ops=[_HOLE] if plan.ops else [],
                        findings=[_HOLE] if plan.findings else [])
    frame = orjson.dumps(data, option=_JSON_OPTIONS) + b"\n"
    hole = b"    " + orjson.dumps(_HOLE)
    lists = {"findings": (plan.findings, finding_to_data), "ops": (plan.ops, op_to_data)}
    for name in sorted(lists):  # the order of the frame's sorted keys
        items, to_data = lists[name]
        if not items:
            continue
        before, _, frame = frame.partition(hole)
        yield before
        for start in range(0, len(items), _CHUNK):
            if name == "ops" and op_items is not None:
                yield (b",\n" if start else b"") + b"    " + b",\n    ".join(op_items[start:start + _CHUNK])
                continue
            chunk = orjson.dumps([to_data(item) for item in items[start:start + _CHUNK]],
                                 option=_JSON_OPTIONS)
            # "[\n  {...},\n  {...}\n]" → its items, indented one level deeper
            yield (b",\n" if start else b"") + b"    " + chunk[4:-2].replace(b"\n", b"\n  ")
    yield frame


def op_item(op: Op) -> bytes:
    """One op as an item of the plan file's list of ops (without the four spaces before its first
    line): what ``plan_chunks`` writes for it. Encoded where the op was planned, on any core."""
    return orjson.dumps(op_to_data(op), option=_JSON_OPTIONS).replace(b"\n", b"\n    ")


def dumps_plan(plan: Plan) -> str:
    return plan_bytes(plan).decode("utf-8")


# -- decoding ----------------------------------------------------------------------------------------
# A plan file is a reviewed artifact that may have been edited by hand, or by anyone. Every field
# is checked for its full type before any op is built, so that a malformed plan is one sentence
# naming the place (``plan.json: ops[3].rules[0] must be a string, found 1``), never an exception
# from a later stage. What is shown of the file's content is quoted and shortened.

MAX_VALUE_DEPTH = 64  # levels of lists and maps in one field value; Firestore allows 20 maps
_INT64 = (-(2**63), 2**63 - 1)
_TAGS = ("$timestamp", "$bytes", "$reference", "$geopoint", "$float", "$map")  # values' JSON form
_FLOAT_NAMES = ("NaN", "Infinity", "-Infinity")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_PLAIN_KEY = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]{0,39}\Z")
_OPS = ("create_document", "fill_fields")
_TIMESTAMP_OR_NULL = 'a timestamp or null (e.g. {"$timestamp": "2025-01-06T09:00:00.000000Z"})'
_EMPTY = 'empty ({"$missing": true}, null or "")'
_SOURCE_FILE = 'null or {"path": ABSOLUTE_PATH, "sha256": HEX}'
_SELECTION = 'null or {"FIELD": "VALUE", …}'

Place = tuple[Any, ...]  # keys and list indexes from the top of the file


class _Malformed(Exception):
    """What is wrong and where; ``loads_plan`` adds the file's name. The message continues the
    place (``ops[3].path must be ...``), or with ``sentence`` follows it (``ops[3].fields.x: ...``)."""

    def __init__(self, place: Place, message: str, sentence: bool = False) -> None:
        super().__init__(message)
        self.place = place
        self.message = message
        self.sentence = sentence

    def __str__(self) -> str:
        return f"{_spelled(self.place)}{':' if self.sentence else ''} {self.message}"


class _NotExact(ValueError):
    """JSON this format does not hold exactly: a repeated key, an integer past 64 bits, NaN."""


def loads_plan(text: str, where: str) -> Plan:
    return plan_from_data(_parse_json(text, where), where)


def parse_plan_json(text: str, where: str) -> Any:
    """A plan file's (or a sharded plan's manifest's) strict JSON, or PlanFileError naming ``where``."""
    return _parse_json(text, where)


def strict_json(text: str) -> Any:
    """Strict JSON, as the files this tool reads back are written: each key once per object,
    integers exact within 64 bits, no NaN or Infinity. Raises json.JSONDecodeError, a ValueError
    sentence for what JSON allows and this does not, or RecursionError."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_int64,
                      parse_float=_finite_float, parse_constant=_no_constant)


def decode_op(raw: Any, index: int) -> Op:
    """One op in the plan file's form (a journal's commit line holds them as ``ops``), checked as
    strictly as a plan's; ValueError naming its place (``ops[3].path must be ...``) otherwise."""
    try:
        return _op(raw, ("ops", index))
    except _Malformed as bad:
        raise ValueError(str(bad)) from None


def _parse_json(text: str, where: str) -> Any:
    """Strict JSON: each key once per object, integers exact within 64 bits, no NaN or Infinity."""
    try:
        return strict_json(text)
    except json.JSONDecodeError as error:
        raise PlanFileError(f"{where}:{error.lineno}:{error.colno}: not valid JSON ({error.msg}); "
                            "is this a file written by `reconcile plan --out`?") from error
    except _NotExact as error:
        raise PlanFileError(f"{where}: {error}; is this a file written by `reconcile plan --out`?") \
            from None
    except RecursionError:
        raise PlanFileError(f"{where}: nested too deeply to be a plan file (a value nests at most "
                            f"{MAX_VALUE_DEPTH} levels)") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotExact(f"key {_quote(key)} is written twice in one object, which leaves its "
                                "meaning to the reader")
            seen.add(key)
    return result


def _int64(text: str) -> int:
    if len(text) <= 20:
        value = int(text)
        if _INT64[0] <= value <= _INT64[1]:
            return value
    raise _NotExact(f"integer {_shorten(text)} is outside the signed 64-bit range a value may have")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotExact(f"number {_shorten(text)} is too large for a 64-bit float")
    return value


def _no_constant(text: str) -> Any:
    raise _NotExact(f'{text} is not JSON (a plan writes it as {{"$float": "{text}"}})')


def _plan(data: dict[str, Any], version: str) -> Plan:
    top = _At(data, ())
    spec = top.object("spec")
    sha256 = spec.string("sha256")
    if not _SHA256.match(sha256):
        raise _Malformed(("spec", "sha256"), f"{_quote(sha256)} is not a sha256 (64 hexadecimal digits)")
    ops = tuple(_op(raw, ("ops", index)) for index, raw in enumerate(top.list("ops")))
    _each_document_once(ops)
    findings = tuple(_finding(raw, ("findings", index)) for index, raw in enumerate(top.list("findings")))
    # "summary" is not read: it is recomputed from the ops and findings.
    return Plan(spec_name=spec.string("name"), spec_path=spec.string("path"), spec_sha256=sha256,
                spec_text=spec.string("text"), source=top.string("source", empty=False),
                source_file=_source_file(top.get("source_file", _SOURCE_FILE), ("source_file",)),
                selection=_selection(top.get("selection", _SELECTION), ("selection",)),
                read_time=_timestamp_or_null(top.get("read_time", _TIMESTAMP_OR_NULL), ("read_time",)),
                ops=ops, findings=findings, format_version=version)


def _source_file(raw: Any, place: Place) -> SourceFile | None:
    if raw is None:
        return None
    pinned = _At(_object(raw, place), place)
    path, sha256 = pinned.string("path", empty=False), pinned.string("sha256")
    if not path.startswith("/"):
        raise _Malformed((*place, "path"), f"must be an absolute path, found {_quote(path)}")
    if not _SHA256.match(sha256):
        raise _Malformed((*place, "sha256"), f"{_quote(sha256)} is not a sha256 (64 hexadecimal digits)")
    return SourceFile(path=path, sha256=sha256)


def _selection(raw: Any, place: Place) -> Selection | None:
    """The pairs in key order of the file; the plan's spec orders and checks them on loading."""
    if raw is None:
        return None
    pairs = _object(raw, place)
    if not pairs:
        raise _Malformed(place, "must be null or name at least one series key field")
    return Selection(pairs=tuple((name, _string(value, (*place, name), empty=False))
                                 for name, value in pairs.items()))


def _op(raw: Any, place: Place) -> Op:
    op = _At(_object(raw, place), place)
    kind = op.string("op")
    if kind not in _OPS:
        raise _Malformed((*place, "op"), f"unknown op {_quote(kind)}; this build knows "
                         f"{' and '.join(_OPS)} (there is no delete or overwrite op)", sentence=True)
    path = _document_path(op.get("path", "a collection/document path"), (*place, "path"))
    group = op.data.get("group")
    if group is not None:
        group = _string(group, (*place, "group"), what="a string or null", empty=False)
    rules = tuple(_string(rule, (*place, "rules", index), empty=False)
                  for index, rule in enumerate(op.list("rules", empty=False)))
    series = op.string("series")
    precondition = op.object("precondition")
    if kind == "create_document":
        if set(precondition.data) != {"exists"} or precondition.data["exists"] is not False:
            raise _Malformed(precondition.place, 'must be {"exists": false}: a create is made only '
                             "where no document exists")
        fields = _fields(op.get("fields", "an object"), (*place, "fields"))
        return CreateDocumentOp(path=path, fields=fields, rules=rules, group=group, series=series)
    update_time = _timestamp_or_null(precondition.get("update_time", _TIMESTAMP_OR_NULL),
                                     (*place, "precondition", "update_time"))
    fills = tuple(_fill(fill, (*place, "fills", index))
                  for index, fill in enumerate(op.list("fills", empty=False)))
    seen: set[str] = set()
    for index, fill in enumerate(fills):
        if fill.field in seen:
            raise _Malformed((*place, "fills", index, "field"), f"{_quote(fill.field)} is filled twice "
                             "in one op")
        seen.add(fill.field)
    transition = _transition(op.data.get("transition"), (*place, "transition"))
    if transition is not None and group is None:
        raise _Malformed((*place, "transition"), "is only made together with a link, but group is null")
    try:
        built = FillFieldsOp(path=path, update_time=update_time, fills=fills, transition=transition,
                             group=group, series=series)
    except ValueError as error:  # the model's own checks; the ones above come first
        raise _Malformed(place, _printable(_shorten(str(error), 120)), sentence=True) from None
    if rules != built.rules:
        # A fill's rules are those of its fills and transition; a file that says otherwise would
        # show a reviewer rules that are not the ones applied.
        raise _Malformed((*place, "rules"), f"must be {list(built.rules)}, the rules of its fills and "
                         "transition")
    return built


def plan_from_data(data: Any, where: str) -> Plan:
    """A plan from a plan file's parsed JSON (``loads_plan`` without the parsing)."""
    version = check_version(data, where, PLAN, PlanFileError)
    try:
        return _plan(data, version)
    except _Malformed as bad:
        raise PlanFileError(f"{where}: {bad}; make a new plan with `reconcile plan --out`") from None


def decode_finding(raw: Any, index: int) -> Finding:
    """One finding in the plan file's form; ValueError naming its place otherwise."""
    try:
        return _finding(raw, ("findings", index))
    except _Malformed as bad:
        raise ValueError(str(bad)) from None


def each_document_once(ops: tuple[Op, ...]) -> None:
    """ValueError when two ops write one document (see ``_each_document_once``)."""
    try:
        _each_document_once(ops)
    except _Malformed as bad:
        raise ValueError(str(bad)) from None


def finding_to_data(finding: Finding) -> dict[str, str]:
    return {"code": finding.code, "path": finding.path, "series": finding.series, "message": finding.message}


def _each_document_once(ops: tuple[Op, ...]) -> None:
    """A run writes each document once (all its changes in one write): two ops on one path would
    break each other's precondition, or be merged into one commit nobody reviewed as one."""
    first: dict[str, int] = {}
    for index, op in enumerate(ops):
        if op.path in first:
            raise _Malformed(("ops", index, "path"), f"{_quote(op.path)} is also the path of "
                             f"ops[{first[op.path]}]; a plan writes each document once")
        first[op.path] = index


def _fill(raw: Any, place: Place) -> FieldFill:
    fill = _At(_object(raw, place), place)
    field = fill.string("field", empty=False)
    raw_value = fill.get("value", "a value")
    value = _value(raw_value, (*place, "value"))
    if is_empty(value):
        raise _Malformed((*place, "value"), f"must not be empty (found {_found(raw_value)}): a fill "
                         "sets an empty field to a value")
    before = _empty_before(fill.get("before", _EMPTY), (*place, "before"))
    return FieldFill(field=field, value=value, rule=fill.string("rule", empty=False), before=before)


def _transition(raw: Any, place: Place) -> StatusTransition | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise _Malformed(place, f"must be null or an object, found {_found(raw)}")
    transition = _At(raw, place)
    return StatusTransition(**{name: transition.string(name, empty=False)
                               for name in ("field", "before", "to", "rule")})


def _finding(raw: Any, place: Place) -> Finding:
    finding = _At(_object(raw, place), place)
    return Finding(**{name: finding.string(name) for name in ("code", "path", "series", "message")})


def _empty_before(raw: Any, place: Place) -> Any:
    """The empty value a fill replaces: {"$missing": true}, null or ""."""
    if type(raw) is dict and len(raw) == 1 and raw.get("$missing") is True:
        return MISSING
    if raw is None or raw == "":
        return raw
    raise _Malformed(place, f"a fill's 'before' must be {_EMPTY}, found {_found(raw)}; a fill never "
                     "replaces a value", sentence=True)


def _document_path(raw: Any, place: Place) -> str:
    path = _string(raw, place)
    collection, slash, document = path.partition("/")
    if not slash or not collection or not document or "/" in document:
        raise _Malformed(place, f"{_quote(path)} is not a collection/document path")
    return path


def _timestamp_or_null(raw: Any, place: Place) -> datetime | None:
    if raw is None:
        return None
    if type(raw) is not dict or list(raw) != ["$timestamp"]:
        raise _Malformed(place, f"must be a timestamp or null, found {_found(raw)} (a timestamp is "
                         'written {"$timestamp": "2025-01-06T09:00:00.000000Z"})')
    return _value(raw, place)


def _fields(raw: Any, place: Place) -> dict[str, Any]:
    raw = _object(raw, place)
    for key, item in raw.items():
        _text(key, (*place, key))
        _check_value(item, (*place, key))
    return _decoded(lambda: decode_fields(raw, _spelled(place)), place)


def _value(raw: Any, place: Place) -> Any:
    _check_value(raw, place)
    return _decoded(lambda: decode(raw, _spelled(place)), place)


def _decoded(decoder: Any, place: Place) -> Any:
    """Decode a value already checked; an error here would be a gap in ``_check_value``, and is
    still reported as one sentence, never raised as something else."""
    try:
        return decoder()
    except (ValueError, TypeError, KeyError, ArithmeticError, RecursionError) as error:
        raise _Malformed(place, _printable(_shorten(str(error), 160)), sentence=True) from None


def _check_value(data: Any, place: Place) -> None:
    """Check a field value's exact JSON form (see ``values``) without recursion, to any depth, so
    that decoding it cannot fail and the error names the place and quotes what it found."""
    stack: list[tuple[Any, Place, int]] = [(data, place, 1)]
    while stack:
        item, at, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise _Malformed(place, f"is nested too deeply (more than {MAX_VALUE_DEPTH} levels of "
                             "lists and maps in one value)")
        kind = type(item)
        if kind is str:
            _text(item, at)
        elif kind is list:
            stack.extend((value, (*at, index), depth + 1) for index, value in enumerate(item))
        elif kind is dict:
            if len(item) == 1:
                ((tag, payload),) = item.items()
                if tag in _TAGS:
                    stack.extend(_tagged(tag, payload, (*at, tag), depth))
                    continue
            for key, value in item.items():
                _text(key, (*at, key))
                if key in _TAGS:
                    raise _Malformed(at, f"a tagged value {_quote(key)} must be the only key of its "
                                     "object", sentence=True)
                if key.startswith("$"):
                    raise _Malformed(at, f"unknown tag {_quote(key)}; a map with keys starting with "
                                     "'$' is written as {\"$map\": {...}}", sentence=True)
                stack.append((value, (*at, key), depth + 1))
        elif kind not in (int, float, bool) and item is not None:  # json gives no other type
            raise _Malformed(at, f"is not a value: {_found(item)}")


def _tagged(tag: str, payload: Any, at: Place, depth: int) -> list[tuple[Any, Place, int]]:
    """Check one tagged value; returns what is left to check inside it (a $map's values)."""
    if tag == "$map":
        return [(value, (*at, _text(key, (*at, key))), depth + 1)
                for key, value in _object(payload, at).items()]
    if tag == "$geopoint":
        if type(payload) is not dict or not all(type(payload.get(name)) in (int, float)
                                                for name in ("latitude", "longitude")):
            raise _Malformed(at, 'must be {"latitude": number, "longitude": number}, found '
                             f"{_found(payload)}")
        return []
    if tag == "$float":
        if payload not in _FLOAT_NAMES or type(payload) is not str:
            raise _Malformed(at, f"must be one of {', '.join(_FLOAT_NAMES)}, found {_found(payload)}")
        return []
    text = _string(payload, at)
    if tag == "$timestamp":
        try:
            parse_timestamp(text)
        except TimestampRangeError:
            raise _Malformed(at, f"{_quote(text)} is out of range once in UTC") from None
        except ValueError:
            raise _Malformed(at, f"{_quote(text)} is not an RFC 3339 timestamp to the microsecond "
                             "(e.g. 2025-01-06T09:00:00.000000Z)") from None
    elif tag == "$bytes":
        try:
            base64.b64decode(text, validate=True)
        except binascii.Error:
            raise _Malformed(at, f"{_quote(text)} is not base64") from None
    elif tag == "$reference" and (not text or text.count("/") % 2 != 1):
        raise _Malformed(at, f"{_quote(text)} is not a document path (collection/document)")
    return []


# -- checks of one JSON value, naming its place --------------------------------------------------------


class _At:
    """An object of the plan file and its place: its members, checked and named on failure."""

    __slots__ = ("data", "place")

    def __init__(self, data: dict[str, Any], place: Place) -> None:
        self.data = data
        self.place = place

    def get(self, key: str, what: str) -> Any:
        if key not in self.data:
            raise _Malformed((*self.place, key), f"is missing: {_quote(key)} must be {what}")
        return self.data[key]

    def string(self, key: str, empty: bool = True) -> str:
        what = "a string" if empty else "a non-empty string"
        return _string(self.get(key, what), (*self.place, key), empty=empty)

    def list(self, key: str, empty: bool = True) -> list[Any]:
        return _list(self.get(key, "a list" if empty else "a non-empty list"), (*self.place, key),
                     empty=empty)

    def object(self, key: str) -> _At:
        return _At(_object(self.get(key, "an object"), (*self.place, key)), (*self.place, key))


def _object(raw: Any, place: Place) -> dict[str, Any]:
    if type(raw) is not dict:
        raise _Malformed(place, f"must be an object, found {_found(raw)}")
    return raw


def _list(raw: Any, place: Place, empty: bool = True) -> list[Any]:
    if type(raw) is not list:
        raise _Malformed(place, f"must be a list, found {_found(raw)}")
    if not empty and not raw:
        raise _Malformed(place, "must not be empty")
    return raw


def _string(raw: Any, place: Place, what: str = "a string", empty: bool = True) -> str:
    if type(raw) is not str:
        raise _Malformed(place, f"must be {what}, found {_found(raw)}")
    if not empty and not raw:
        raise _Malformed(place, "must not be empty")
    return _text(raw, place)


def _text(raw: str, place: Place) -> str:
    """JSON's \\u escapes can spell a lone surrogate, which no UTF-8 output can hold: refuse it here
    rather than let it fail a later write."""
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise _Malformed(place, f"holds {_quote(raw)}, which is not valid UTF-8 text (a lone "
                             "surrogate)") from None
    return raw


def _found(raw: Any) -> str:
    if raw is None:
        return "null"
    if type(raw) is bool:
        return "true" if raw else "false"
    if type(raw) in (int, float):
        return _shorten(repr(raw))
    if type(raw) is str:
        return f"a string {_quote(raw)}"
    return {list: "a list", dict: "an object"}.get(type(raw), type(raw).__name__)


def _spelled(place: Place) -> str:
    """``ops[3].fills[0].value``: the spelling a reader can find in the file; a key that is not a
    plain name is quoted (``fields['a b']``)."""
    text = ""
    for part in place:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_quote(part)}]"
    return _shorten(text, 120) or "the plan"


def _quote(value: Any) -> str:
    """Content of the file, quoted and escaped like a Python literal (so a control character never
    reaches a terminal raw), shortened past 40 characters."""
    return _shorten(repr(value[:40] if isinstance(value, str) else value))


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
