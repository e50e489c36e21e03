"""One series at a glance: the weeks of the series a selection names, as the plan sees them.

Pure: no I/O, no clock. Everything comes from one read and the engine itself (``group_series``
for members and responses, ``reconcile_series`` for the ops and findings, the cadence rule for
dates): this module reads the engine's output and never re-decides a rule, so a timeline agrees
with what ``plan`` would do for the same series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.formats import SERIES
from reconciler.kernel import (
    UNUSABLE_SERIES,
    SeriesInput,
    group_series,
    new_week_id,
    reconcile_series,
    series_length,
)
from reconciler.model import ACTION_HALF_LINK, CreateDocumentOp, FillFieldsOp, Finding, Op, Spec, State
from reconciler.selection import Selection
from reconciler.values import MISSING, encode, is_empty, show

SHOWN = 50  # series shown per run; a wider selection is what audit and plan are for

# A week's state.
STORED = "stored"  # one member: the week's document
TO_CREATE = "to_create"  # no member: the plan creates it, under its deterministic ID
DUPLICATE = "duplicate"  # several members (series.week_duplicate)
ID_TAKEN = "id_taken"  # no member, and its ID is used by another document (assignment.id_taken)
OUT_OF_RANGE = "out_of_range"  # members whose week is outside 1..N
MISSING_WEEK = "missing"  # no member and no create: the engine said neither (not expected)

# How a week's response is linked.
LINKED = "linked"  # the week's member names it
TO_LINK = "to_link"  # the plan links it both ways
TO_COMPLETE = "to_complete"  # the member names it; the plan fills the response's side


@dataclass(frozen=True, slots=True, kw_only=True)
class Week:
    week: int
    due: datetime | None  # None for a week outside 1..N
    state: str
    documents: tuple[str, ...]  # document IDs: the member(s), or the ID the plan creates
    response: str | None = None  # the response's ID (or what the member names, if not an ID)
    link: str | None = None  # LINKED, TO_LINK, TO_COMPLETE, or None
    findings: tuple[Finding, ...] = ()
    rules: tuple[str, ...] = ()  # the rules of the plan's writes to this week's documents


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    label: str
    key: tuple[Any, ...]
    length: int | None  # None when the series cannot be planned
    unusable: Finding | None  # why the series cannot be planned (its weeks are not shown)
    weeks: tuple[Week, ...]
    findings: tuple[Finding, ...]  # about the series, or about documents of no shown week
    ops: tuple[Op, ...]  # the plan's writes for this series


@dataclass(frozen=True, slots=True, kw_only=True)
class Timelines:
    spec: Spec
    state: State
    selection: Selection
    matched: int  # series the selection matches
    shown: tuple[Timeline, ...]  # the first SHOWN of them, in key order


def timelines(spec: Spec, state: State, selection: Selection, shown: int = SHOWN) -> Timelines:
    """The selected series, each through the same kernel and with the same taken IDs as a plan."""
    series_list, _ = group_series(spec, state)
    selected = [s for s in series_list if selection.matches(spec, s.key)]
    taken = state.documents(spec.series.collection).keys()
    built = tuple(timeline(spec, s, taken) for s in selected[:shown])
    return Timelines(spec=spec, state=state, selection=selection, matched=len(selected), shown=built)


def timeline(spec: Spec, series: SeriesInput, taken_ids) -> Timeline:
    outcome = reconcile_series(spec, series, taken_ids)
    findings = sorted(outcome.findings, key=lambda f: f.sort_key)
    unusable = next((f for f in findings if f.code in UNUSABLE_SERIES), None)
    if unusable is not None:
        return Timeline(label=series.label, key=series.key, length=None, unusable=unusable, weeks=(),
                        findings=tuple(f for f in findings if f is not unusable), ops=outcome.ops)

    rule, link = spec.series, spec.link
    base = next(m.doc for m in series.members if m.week == 1)
    length = series_length(spec, base)
    start = base.fields[spec.cadence.field]
    ops = {op.path: op for op in outcome.ops}
    by_week: dict[int, list[str]] = {}  # week → its members' IDs
    where: dict[str, int] = {}  # document path → the week it belongs to
    for member in series.members:
        by_week.setdefault(member.week, []).append(member.doc.id)
        where[member.doc.path] = member.week
    for response in series.responses:
        where[response.path] = response.fields[link.week_field] if link else 0

    weeks: list[Week] = []
    new_paths: dict[str, int] = {}  # path → the missing week whose deterministic ID it is
    for week in sorted(set(range(1, length + 1)) | set(by_week)):
        ids = tuple(sorted(by_week.get(week, ())))
        paths = [f"{rule.collection}/{doc_id}" for doc_id in ids]
        due = spec.cadence.due(start, week) if 1 <= week <= length else None
        if not 1 <= week <= length:
            state, response, linked = OUT_OF_RANGE, None, None
        elif len(ids) > 1:
            state, response, linked = DUPLICATE, None, None
        elif ids:
            state = STORED
            response, linked = _link(spec, series, paths[0], ops)
        else:
            new_id = new_week_id(spec, series.key, week)
            path = f"{rule.collection}/{new_id}"
            ids, paths = (new_id,), [path]
            new_paths[path] = week
            if isinstance(ops.get(path), CreateDocumentOp):
                state = TO_CREATE
                response, linked = _link(spec, series, path, ops)
            else:
                taken = any(f.code == "assignment.id_taken" and f.path == path for f in findings)
                state, response, linked = (ID_TAKEN if taken else MISSING_WEEK), None, None
        week_paths = {path for path, w in where.items() if w == week} | set(paths)
        rules = sorted({r for path in week_paths if path in ops for r in ops[path].rules})
        weeks.append(Week(week=week, due=due, state=state, documents=ids, response=response,
                          link=linked, rules=tuple(rules),
                          findings=tuple(f for f in findings if _week_of(f, where, new_paths) == week)))
    shown = {w.week for w in weeks}
    rest = tuple(f for f in findings if _week_of(f, where, new_paths) not in shown)
    return Timeline(label=series.label, key=series.key, length=length, unusable=None, weeks=tuple(weeks),
                    findings=rest, ops=outcome.ops)


def _week_of(finding: Finding, where: dict[str, int], new_paths: dict[str, int]) -> int | None:
    """The week a finding is about; None for a finding about the whole series (its length)."""
    if finding.code == "assignment.id_taken":  # its path is the missing week's ID, used elsewhere
        return new_paths.get(finding.path)
    if finding.code.startswith("series.") and finding.code != "series.week_duplicate":
        return None
    return where.get(finding.path)


def _link(spec: Spec, series: SeriesInput, path: str, ops: dict[str, Op]) -> tuple[str | None, str | None]:
    """The response a week's single target is linked to, or that the plan links to it."""
    link = spec.link
    if link is None:
        return None, None
    op = ops.get(path)
    if op is not None and op.group == path:  # the plan links this week
        if isinstance(op, CreateDocumentOp):
            return _id(op.fields.get(link.member_ref)), TO_LINK
        value = next((f.value for f in op.fills if f.field == link.member_ref), MISSING)
        return _id(value), TO_LINK
    member = next((m.doc for m in series.members if m.doc.path == path), None)
    named = MISSING if member is None else member.fields.get(link.member_ref, MISSING)
    if is_empty(named):
        return None, None
    target_id = path.partition("/")[2]
    for response in series.responses:
        side = ops.get(response.path)
        if (response.id == named and isinstance(side, FillFieldsOp) and side.group is None
                and any(f.rule.endswith("." + ACTION_HALF_LINK) and f.value == target_id
                        for f in side.fills)):
            return response.id, TO_COMPLETE
    return _id(named), LINKED


def _id(value: Any) -> str | None:
    if is_empty(value):
        return None
    return value if isinstance(value, str) else show(value)


def timelines_data(t: Timelines, show_values: bool = False) -> dict[str, Any]:
    """The JSON form: document IDs, series keys, dates and codes; a finding's message (it quotes
    document values) only with ``show_values``."""
    def finding(f: Finding) -> dict[str, Any]:
        return {"code": f.code, "path": f.path, **({"message": f.message} if show_values else {})}

    return {
        **SERIES.header(),
        "spec": {"name": t.spec.name, "path": t.spec.source, "sha256": t.spec.sha256},
        "source": t.state.source,
        "read_time": encode(t.state.read_time),
        "select": dict(t.selection.pairs),
        "matched": t.matched,
        "series": [{
            "series": s.label,
            "key": {name: encode(part) for name, part in zip(t.spec.series.key, s.key, strict=True)},
            "length": s.length,
            "unusable": finding(s.unusable) if s.unusable else None,
            "weeks": [{"week": w.week, "due": encode(w.due), "state": w.state, "documents": list(w.documents),
                       "response": w.response, "link": w.link, "rules": list(w.rules),
                       "findings": [finding(f) for f in w.findings]} for w in s.weeks],
            "findings": [finding(f) for f in s.findings],
        } for s in t.shown],
    }
