"""The phase-1 audit: what the data holds before any change. Pure: (spec, state) → AuditReport.

Counts documents, statuses, series and their weeks, missing weeks and link health, and the findings
by code. Reads nothing itself and shares the kernel's grouping, so audit and plan always agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.kernel import (
    UNUSABLE_SERIES,
    Outcome,
    SeriesInput,
    group_series,
    member_week,
    new_week_id,
    reconcile_series,
    series_length,
)
from reconciler.model import CadenceRule, CreateDocumentOp, Document, Finding, Op, Selection, Spec, State
from reconciler.selection import select_state
from reconciler.values import is_empty, show

UNUSABLE_SERIES_CODES = tuple(sorted(UNUSABLE_SERIES))

# The state of one week of a series, as the plan sees it (the heat map's cells).
PRESENT = "present"  # one member, no finding about it
CREATE = "create"  # no member: the plan creates the week
DUPLICATE = "duplicate"  # several members (series.week_duplicate)
FINDING = "finding"  # one member with a finding about it, or a missing week the plan cannot create
OUT_OF_RANGE = "out_of_range"  # a member whose week is outside 1..N
UNTOUCHED = "untouched"  # a member of a series left untouched (no usable base, or unplannable)
WEEK_STATES = (PRESENT, CREATE, DUPLICATE, FINDING, OUT_OF_RANGE, UNTOUCHED)


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesCoverage:
    """One series' weeks: which of weeks 1..N are present, to create, held by several members or
    about which there is a finding, and which members lie outside 1..N. Only IDs, the series key,
    weeks, the cadence's start and finding codes: no other document value."""

    label: str  # the series key, spelled ``clientId=c01 formId=f02``
    length: int | None  # N; None when the series is left untouched (``unusable`` says why)
    unusable: str  # the finding code that leaves the whole series untouched, or ""
    start: datetime | None  # week 1's date on the cadence (the base's), when the series is usable
    weeks: tuple[str, ...]  # the state of week w at [w - 1], for w in 1..N (empty when unusable)
    out_of_range: tuple[int, ...]  # member weeks outside 1..N, each once, in order
    untouched: tuple[int, ...]  # when unusable: its members' weeks, each once, in order
    week_codes: dict[int, tuple[str, ...]]  # the finding codes about each week's members
    codes: tuple[str, ...]  # every finding code about the series (members and responses), each once
    responses: int  # the responses placed in this series

    def state(self, week: int) -> str:
        """The state of ``week`` (any integer); "" when the series has no such week and no member in it."""
        if self.length is None:
            return UNTOUCHED if week in self.untouched else ""
        if 1 <= week <= self.length:
            return self.weeks[week - 1]
        return OUT_OF_RANGE if week in self.out_of_range else ""

    def counts(self) -> dict[str, int]:
        counted = Counter(self.weeks)
        counted[OUT_OF_RANGE] = len(self.out_of_range)
        counted[UNTOUCHED] = len(self.untouched)
        return {state: counted[state] for state in WEEK_STATES if counted[state]}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    spec_name: str
    source: str
    collections: dict[str, int]
    members: dict[str, Any]
    responses: dict[str, Any]
    series: dict[str, Any]
    links: dict[str, int]
    findings: dict[str, int]
    # What a person looks at beyond the counts (not in ``as_data``: the JSON report stays counts).
    read_time: datetime | None = None
    cadence: CadenceRule | None = None  # the spec's cadence, to date each week of a series
    statuses: tuple[str, ...] = ()  # the status values the spec itself names
    coverage: tuple[SeriesCoverage, ...] = ()  # every series, in series-key order
    details: tuple[Finding, ...] = ()  # every finding, sorted
    selection: Selection | None = None  # the series the counts are restricted to

    def as_data(self) -> dict[str, Any]:
        return {"spec": self.spec_name, "source": self.source,
                "selection": None if self.selection is None else dict(self.selection.pairs),
                "collections": self.collections,
                "members": self.members, "responses": self.responses, "series": self.series,
                "links": self.links, "findings": self.findings}


def audit(spec: Spec, state: State, selection: Selection | None = None) -> AuditReport:
    """With ``selection``, every count is of the selected series and their documents; a new
    week's ID is still checked against every document read."""
    rule = spec.series
    taken = state.documents(rule.collection).keys()
    if selection is not None:
        state = select_state(spec, state, selection)
    docs = state.documents(rule.collection)
    weeks = [member_week(spec, doc) for doc in docs.values()]
    status_field = spec.link.status.field if spec.link and spec.link.status else None
    members = {
        "total": len(docs),
        "recurring": sum(1 for w in weeks if w is not None),
        "not_recurring": sum(1 for w in weeks if w is None),
        "bases": sum(1 for w in weeks if w == 1),
        "later_weeks": sum(1 for w in weeks if isinstance(w, int) and w > 1),
        "base_without_week_field": sum(1 for doc, w in zip(docs.values(), weeks, strict=True)
                                       if w == 1 and is_empty(doc.get(rule.week_field))),
    }
    if status_field:
        members["status"] = dict(sorted(Counter(
            _label(doc.get(status_field)) for doc in docs.values()).items()))
    # One pass of the kernel, series by series, as ``kernel.reconcile`` makes it: the report's
    # counts and its per-week coverage are what the plan sees.
    series_list, findings = group_series(spec, state)
    ops: list[Op] = []
    coverage = []
    for one in series_list:
        outcome = reconcile_series(spec, one, taken)
        ops.extend(outcome.ops)
        findings.extend(outcome.findings)
        coverage.append(_coverage(spec, one, outcome))
    findings.sort(key=lambda f: f.sort_key)
    codes = Counter(f.code for f in findings)
    unusable = sum(codes[code] for code in UNUSABLE_SERIES_CODES)
    series = {
        "total": len(series_list),
        "usable": len(series_list) - unusable,
        "unusable": unusable,
        "members_per_series_max": max((len(s.members) for s in series_list), default=0),
        "missing_weeks": sum(1 for op in ops if isinstance(op, CreateDocumentOp)),
    }
    responses: dict[str, Any] = {}
    links: dict[str, int] = {}
    statuses: tuple[str, ...] = ()
    if spec.link is not None:
        link = spec.link
        answers = state.documents(link.collection)
        responses = {
            "total": len(answers),
            "with_week": sum(1 for d in answers.values() if type(d.get(link.week_field)) is int),
            "with_ref": sum(1 for d in answers.values() if not is_empty(d.get(link.response_ref))),
            "with_score": sum(1 for _, rf in link.copy[:1] for d in answers.values()
                              if not is_empty(d.get(rf))),
        }
        links = _link_health(spec, state)
        if link.status is not None:
            statuses = tuple(sorted({link.status.to, *link.status.from_values}))
    return AuditReport(spec_name=spec.name, source=state.source,
                       collections={name: len(state.documents(name)) for name in spec.collections},
                       members=members, responses=responses, series=series, links=links,
                       findings=dict(sorted(codes.items())), read_time=state.read_time,
                       cadence=spec.cadence, statuses=statuses, coverage=tuple(coverage),
                       details=tuple(findings), selection=selection)


def _coverage(spec: Spec, series: SeriesInput, outcome: Outcome) -> SeriesCoverage:
    """The series' weeks as the kernel left them: members by week, the weeks its ops create, and
    the findings it reported about each member (read from the outcome, never decided again here)."""
    by_week: dict[int, list[Document]] = {}
    for member in series.members:
        by_week.setdefault(member.week, []).append(member.doc)
    about: dict[str, list[str]] = {}
    for finding in outcome.findings:
        about.setdefault(finding.path, []).append(finding.code)
    codes = tuple(sorted({f.code for f in outcome.findings}))
    unusable = next((code for code in codes if code in UNUSABLE_SERIES), "")
    if unusable:
        return SeriesCoverage(label=series.label, length=None, unusable=unusable, start=None, weeks=(),
                              out_of_range=(), untouched=tuple(sorted(by_week)), week_codes={},
                              codes=codes, responses=len(series.responses))
    base = next(m.doc for m in series.members if m.week == 1)
    length = series_length(spec, base)
    week_field = spec.series.week_field
    created = {op.fields[week_field] for op in outcome.ops if isinstance(op, CreateDocumentOp)}
    states: list[str] = []
    week_codes: dict[int, tuple[str, ...]] = {}
    for week in range(1, length + 1):
        members = by_week.get(week, ())
        found = sorted({code for doc in members for code in about.get(doc.path, ())})
        if not members and week not in created:  # a missing week not created: its ID is taken
            path = f"{spec.series.collection}/{new_week_id(spec, series.key, week)}"
            found = sorted(set(about.get(path, ())))
        states.append(_week_state(len(members), bool(found), week in created))
        if found:
            week_codes[week] = tuple(found)
    return SeriesCoverage(label=series.label, length=length, unusable="",
                          start=base.fields[spec.cadence.field], weeks=tuple(states),
                          out_of_range=tuple(sorted(w for w in by_week if not 1 <= w <= length)),
                          untouched=(), week_codes=week_codes, codes=codes,
                          responses=len(series.responses))


def _week_state(members: int, found: bool, created: bool) -> str:
    if members > 1:
        return DUPLICATE
    if members == 1:
        return FINDING if found else PRESENT
    return CREATE if created else FINDING


def _label(value: Any) -> str:
    return "(empty)" if is_empty(value) else (value if isinstance(value, str) else show(value))


def _link_health(spec: Spec, state: State) -> dict[str, int]:
    """Complete links (both sides agree), half links, and refs naming no document."""
    link = spec.link
    assert link is not None
    members = state.documents(spec.series.collection)
    answers = state.documents(link.collection)
    from_responses = _refs(answers, link.response_ref, members, link.member_ref)
    from_members = _refs(members, link.member_ref, answers, link.response_ref)
    unlinked = sum(1 for d in answers.values() if is_empty(d.get(link.response_ref)))
    return {"complete": from_responses["complete"],  # a complete link is seen from both sides
            "half": from_responses["half"] + from_members["half"],
            "dangling": from_responses["dangling"] + from_members["dangling"],
            "responses_unlinked": unlinked}


def _refs(docs: dict[str, Document], ref_field: str, others: dict[str, Document],
          back_field: str) -> Counter[str]:
    """For each document that names another: does that one exist, and name it back?"""
    outcome: Counter[str] = Counter()
    for doc in docs.values():
        ref = doc.get(ref_field)
        if is_empty(ref):
            continue
        other = others.get(ref) if isinstance(ref, str) else None
        outcome["dangling" if other is None else
                "complete" if other.get(back_field) == doc.id else "half"] += 1
    return outcome
