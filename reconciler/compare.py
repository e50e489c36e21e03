"""The impact of a spec change: two plans of one read, the old spec's and the new one's, compared.

Pure. A write is identified by its document: one the new spec makes and the old did not is
*added*, the reverse *removed*, the same document written differently *changed*. A finding is
identified by its code and document. Findings the change adds are what existing data cannot follow
additively (a due date the new cadence disagrees with, a week beyond a shorter length, a link the
new rule does not recognise): the tool never changes those documents, so a person must decide.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from reconciler.formats import COMPARISON
from reconciler.model import CreateDocumentOp, Finding, Op, Plan
from reconciler.plan import op_to_data
from reconciler.values import encode

# What a finding the change adds means for existing data, in a reviewer's words.
IMPACT = {
    "assignment.due_mismatch": "existing due dates disagree with the new cadence",
    "assignment.due_invalid": "existing weeks have a due date that is not a timestamp",
    "assignment.week_out_of_range": "existing weeks fall outside the series' length",
    "assignment.id_taken": "weeks to create have their IDs taken by other documents",
    "assignment.response_foreign": "existing links point to a response the new rule places elsewhere",
    "response.link_conflict": "responses are linked to a document the new rule does not pair them with",
    "response.week_out_of_range": "responses fall outside the series' length",
    "response.duplicate": "responses lose their week to another response of the same week",
    "response.slot_blocked": "responses have no single week to link to",
    "response.series_missing": "responses belong to no series under the new key",
    "response.series_unusable": "responses belong to a series the new spec cannot plan",
    "series.length_over_limit": "series ask for more weeks than the new length limit",
    "series.dates_out_of_range": "series would be dated past year 9999",
}


def impact(code: str) -> str:
    return IMPACT.get(code, f"documents get the finding {code}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    old: Plan
    new: Plan
    added: tuple[Op, ...]
    removed: tuple[Op, ...]
    changed: tuple[tuple[Op, Op], ...]  # (old spec's write, new spec's write) of one document
    findings_added: tuple[Finding, ...]
    findings_removed: tuple[Finding, ...]

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.findings_added
                    or self.findings_removed)

    def needs_decision(self) -> dict[str, list[Finding]]:
        """The findings the change adds, by code: existing documents a person must decide about."""
        by_code: dict[str, list[Finding]] = {}
        for finding in self.findings_added:
            by_code.setdefault(finding.code, []).append(finding)
        return dict(sorted(by_code.items(), key=lambda item: (-len(item[1]), item[0])))

    def by_rule(self) -> dict[str, Counter[str]]:
        """Per rule id: writes added, removed and changed."""
        rows: dict[str, Counter[str]] = {}
        for what, ops in (("added", self.added), ("removed", self.removed),
                          ("changed", [new for _, new in self.changed])):
            for op in ops:
                for rule in op.rules:
                    rows.setdefault(rule, Counter())[what] += 1
        return dict(sorted(rows.items()))

    def by_series(self) -> dict[str, Counter[str]]:
        """Per series: writes added, removed, changed; findings added and removed."""
        rows: dict[str, Counter[str]] = {}
        for what, items in zip(_SERIES_COUNTS, (self.added, self.removed, [new for _, new in self.changed],
                                                self.findings_added, self.findings_removed), strict=True):
            for item in items:
                rows.setdefault(item.series, Counter())[what] += 1
        return dict(sorted(rows.items(), key=lambda item: (-sum(item[1].values()), item[0])))


_SERIES_COUNTS = ("added", "removed", "changed", "findings_added", "findings_removed")


def compare(old: Plan, new: Plan) -> Comparison:
    before = {op.path: op for op in old.ops}
    after = {op.path: op for op in new.ops}
    changed = tuple((before[path], op) for path, op in after.items()
                    if path in before and _write(before[path]) != _write(op))
    found_before = {(f.code, f.path) for f in old.findings}
    found_after = {(f.code, f.path) for f in new.findings}
    return Comparison(
        old=old, new=new,
        added=tuple(op for path, op in after.items() if path not in before),
        removed=tuple(op for path, op in before.items() if path not in after),
        changed=changed,
        findings_added=tuple(f for f in new.findings if (f.code, f.path) not in found_before),
        findings_removed=tuple(f for f in old.findings if (f.code, f.path) not in found_after))


def _write(op: Op) -> bytes:
    """What an op writes and under which precondition; which series it is listed under is not."""
    data = op_to_data(op)
    del data["series"]
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def comparison_data(c: Comparison) -> dict[str, Any]:
    """The JSON form: counts, and the documents concerned; no document value (the plan has them)."""
    def ops(items: tuple[Op, ...]) -> list[dict[str, Any]]:
        return [{"path": op.path, "op": "create_document" if isinstance(op, CreateDocumentOp) else
                 "fill_fields", "rules": list(op.rules), "series": op.series} for op in items]

    def findings(items: tuple[Finding, ...]) -> list[dict[str, str]]:
        return [{"code": f.code, "path": f.path, "series": f.series} for f in items]

    def side(plan: Plan) -> dict[str, Any]:
        s = plan.summary
        return {"spec": {"name": plan.spec_name, "path": plan.spec_path, "sha256": plan.spec_sha256},
                "summary": {"create": s.create, "link": s.link, "fill": s.fill, "delete": 0,
                            "overwrite": 0, "findings": s.findings}}

    return {
        **COMPARISON.header(),
        "source": c.new.source,
        "read_time": encode(c.new.read_time),
        "old": side(c.old),
        "new": side(c.new),
        "differs": c.differs,
        "writes": {"added": ops(c.added), "removed": ops(c.removed),
                   "changed": ops(tuple(new for _, new in c.changed))},
        "findings": {"added": findings(c.findings_added), "removed": findings(c.findings_removed)},
        "needs_decision": [{"code": code, "impact": impact(code), "count": len(found),
                            "paths": [f.path for f in found]}
                           for code, found in c.needs_decision().items()],
        "by_rule": {rule: {name: counts[name] for name in ("added", "removed", "changed")}
                    for rule, counts in c.by_rule().items()},
        "by_series": {label: {name: counts[name] for name in _SERIES_COUNTS}
                      for label, counts in c.by_series().items()},
    }
