"""Build a plan from (spec, state), and the plan file format. Pure: no files, no clock.

The plan file (JSON, ``format_version`` 1.x) holds everything ``apply PLAN`` needs: the spec's text
and hash, the source and read time, every op with its rule ids, path, fields and precondition, the
findings and the summary. Encoding is deterministic: the same plan gives the same bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from reconciler.errors import PlanFileError
from reconciler.kernel import reconcile
from reconciler.model import (
    PLAN_FORMAT_VERSION,
    CreateDocumentOp,
    FieldFill,
    FillFieldsOp,
    Finding,
    Op,
    Plan,
    Spec,
    State,
    StatusTransition,
)
from reconciler.values import MISSING, decode, decode_fields, encode, encode_fields

FORMAT = "reconcile-plan"


def build_plan(spec: Spec, state: State) -> Plan:
    ops, findings = reconcile(spec, state)
    return Plan(spec_name=spec.name, spec_path=spec.source, spec_sha256=spec.sha256,
                spec_text=spec.text, source=state.source, read_time=state.read_time,
                ops=tuple(ops), findings=tuple(findings))


# -- encoding ----------------------------------------------------------------------------------------


def plan_to_data(plan: Plan) -> dict[str, Any]:
    summary = plan.summary
    return {
        "format": FORMAT,
        "format_version": plan.format_version,
        "spec": {"name": plan.spec_name, "path": plan.spec_path, "sha256": plan.spec_sha256,
                 "text": plan.spec_text},
        "source": plan.source,
        "read_time": encode(plan.read_time),
        "summary": {"create": summary.create, "link": summary.link, "fill": summary.fill,
                    "delete": 0, "overwrite": 0, "findings": summary.findings},
        "ops": [op_to_data(op) for op in plan.ops],
        "findings": [{"code": f.code, "path": f.path, "series": f.series, "message": f.message}
                     for f in plan.findings],
    }


def op_to_data(op: Op) -> dict[str, Any]:
    if isinstance(op, CreateDocumentOp):
        return {"op": "create_document", "path": op.path, "rules": list(op.rules), "group": op.group,
                "precondition": {"exists": False}, "fields": encode_fields(op.fields)}
    return {
        "op": "fill_fields", "path": op.path, "rules": list(op.rules), "group": op.group,
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


def plan_bytes(plan: Plan) -> bytes:
    """The plan file's exact bytes (UTF-8): write these, rather than text, for a large plan."""
    return orjson.dumps(plan_to_data(plan), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def dumps_plan(plan: Plan) -> str:
    return plan_bytes(plan).decode("utf-8")


# -- decoding ----------------------------------------------------------------------------------------


def loads_plan(text: str, where: str) -> Plan:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise PlanFileError(f"{where}:{error.lineno}:{error.colno}: not valid JSON ({error.msg}); "
                            "is this a file written by `reconcile plan --out`?") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanFileError(f"{where}: not a plan file (write one with `reconcile plan --out FILE`)")
    version = data.get("format_version")
    if not isinstance(version, str) or version.split(".")[0] != PLAN_FORMAT_VERSION.split(".")[0]:
        raise PlanFileError(f"{where}: plan format_version {version!r} is not supported (this build "
                            f"reads {PLAN_FORMAT_VERSION.split('.')[0]}.x); re-run `reconcile plan`")
    try:
        spec = _field(data, "spec", dict)
        read_time = decode(data.get("read_time"), "read_time")
        return Plan(
            spec_name=_field(spec, "name", str), spec_path=_field(spec, "path", str),
            spec_sha256=_field(spec, "sha256", str), spec_text=_field(spec, "text", str),
            source=_field(data, "source", str),
            read_time=read_time if isinstance(read_time, datetime) else None,
            ops=tuple(_op(raw, f"ops[{i}]") for i, raw in enumerate(_field(data, "ops", list))),
            findings=tuple(Finding(code=_field(f, "code", str), path=_field(f, "path", str),
                                   series=_field(f, "series", str), message=_field(f, "message", str))
                           for f in _field(data, "findings", list)),
            format_version=version,
        )
    except (ValueError, TypeError, KeyError) as error:
        raise PlanFileError(f"{where}: malformed plan: {error}") from error


def _field(data: Any, name: str, kind: type) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"expected an object holding {name!r}")
    value = data.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{name!r} must be a {kind.__name__}")
    return value


def _op(raw: Any, where: str) -> Op:
    kind = _field(raw, "op", str)
    path = _field(raw, "path", str)
    if path.count("/") != 1:
        raise ValueError(f"{where}: {path!r} is not a collection/document path")
    group = raw.get("group")
    if group is not None and not isinstance(group, str):
        raise ValueError(f"{where}: group must be a string or null")
    if kind == "create_document":
        return CreateDocumentOp(path=path, fields=decode_fields(raw.get("fields"), f"{where}.fields"),
                                rules=tuple(_field(raw, "rules", list)), group=group)
    if kind == "fill_fields":
        precondition = _field(raw, "precondition", dict)
        update_time = decode(precondition.get("update_time"), f"{where}.precondition.update_time")
        fills = tuple(
            FieldFill(field=_field(f, "field", str), value=decode(f.get("value"), f"{where}.fills"),
                      rule=_field(f, "rule", str), before=_decode_empty(f.get("before")))
            for f in _field(raw, "fills", list))
        transition = raw.get("transition")
        return FillFieldsOp(
            path=path, update_time=update_time, fills=fills, group=group,
            transition=None if transition is None else StatusTransition(
                field=_field(transition, "field", str), before=_field(transition, "before", str),
                to=_field(transition, "to", str), rule=_field(transition, "rule", str)))
    raise ValueError(f"{where}: unknown op {kind!r}; this build knows create_document and "
                     "fill_fields (there is no delete or overwrite op)")


def _decode_empty(value: Any) -> Any:
    if value == {"$missing": True}:
        return MISSING
    if value is None or value == "":
        return value
    raise ValueError(f"a fill's 'before' must be empty (missing, null or \"\"), found {value!r}")
