"""The phase-1 audit: what the data holds before any change. Pure: (spec, state) → AuditReport.

Counts documents, statuses, series and their weeks, missing weeks and link health, and the findings
by code. Reads nothing itself and shares the kernel's grouping, so audit and plan always agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from reconciler.kernel import UNUSABLE_SERIES, group_series, member_week, reconcile
from reconciler.model import CreateDocumentOp, Document, Spec, State
from reconciler.values import is_empty, show

UNUSABLE_SERIES_CODES = tuple(sorted(UNUSABLE_SERIES))


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

    def as_data(self) -> dict[str, Any]:
        return {"spec": self.spec_name, "source": self.source, "collections": self.collections,
                "members": self.members, "responses": self.responses, "series": self.series,
                "links": self.links, "findings": self.findings}


def audit(spec: Spec, state: State) -> AuditReport:
    rule = spec.series
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
    series_list, _ = group_series(spec, state)
    ops, findings = reconcile(spec, state)
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
    return AuditReport(spec_name=spec.name, source=state.source,
                       collections={name: len(state.documents(name)) for name in spec.collections},
                       members=members, responses=responses, series=series, links=links,
                       findings=dict(sorted(codes.items())))


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
