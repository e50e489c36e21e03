"""The drift report of ``reconcile check``: is the data still in the shape the spec declares, and
if not, which kind of drift, pointing at the part of the app that likely caused it.

Pure. A plan's writes are sorted into drift classes by the engine action that makes them; findings
are compared with a baseline (an earlier report) when one is given, so a monitor alerts on what is
new rather than on mess that was there at rollout.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.errors import SourceError
from reconciler.formats import DRIFT, check_version
from reconciler.model import (
    ACTION_BASE_WEEK,
    ACTION_HALF_LINK,
    ACTION_PAIR,
    CreateDocumentOp,
    Op,
    Plan,
)
from reconciler.values import encode

EXAMPLES = 5  # documents named per class


@dataclass(frozen=True, slots=True)
class DriftClass:
    name: str
    cause: str  # the likely cause, in the app's terms
    unit: str  # what ``count`` counts
    one: str  # the unit, singular


CLASSES = (
    DriftClass("weeks_missing", "weeks of a series are not stored: the app's create path is not "
               "pre-creating them", "weeks", "week"),
    DriftClass("responses_unlinked", "responses are not linked to their week: the app's submit path is "
               "not linking them", "links", "link"),
    DriftClass("half_links", "links recorded on one side only: the app's submit path writes one side",
               "links", "link"),
    DriftClass("fills_pending", "week-1 assignments without their week number", "documents", "document"),
    DriftClass("new_findings", "documents the tool cannot fix additively, new since the baseline",
               "findings", "finding"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Drift:
    plan: Plan
    members: dict[str, list[tuple[str, str]]]  # class → (path, series) of what it counts
    baseline: str | None  # where the baseline came from
    findings_gone: int  # findings of the baseline no longer found
    key_fields: tuple[str, ...] = ()  # the spec's series key, to name a series as a --select

    @property
    def converged(self) -> bool:
        return not any(self.members.values())


def _op_classes(op: Op) -> list[str]:
    """The classes an op's writes belong to; they add up to the plan's summary (create, link, fill)."""
    actions = {rule.rpartition(".")[2] for rule in op.rules}
    classes = []
    if isinstance(op, CreateDocumentOp):
        classes.append("weeks_missing")
    if ACTION_PAIR in actions and op.group == op.path:  # a link is counted once, at its member
        classes.append("responses_unlinked")
    if ACTION_HALF_LINK in actions:
        classes.append("half_links")
    if ACTION_BASE_WEEK in actions:
        classes.append("fills_pending")
    return classes


def drift(plan: Plan, baseline: frozenset[tuple[str, str]] | None = None,
          baseline_name: str | None = None, key_fields: tuple[str, ...] = ()) -> Drift:
    members: dict[str, list[tuple[str, str]]] = {c.name: [] for c in CLASSES}
    for op in plan.ops:
        for name in _op_classes(op):
            members[name].append((op.path, op.series))
    found = {(f.code, f.path) for f in plan.findings}
    if baseline is not None:
        members["new_findings"] = [(f.path, f.series) for f in plan.findings
                                   if (f.code, f.path) not in baseline]
    return Drift(plan=plan, members=members, baseline=baseline_name, key_fields=key_fields,
                 findings_gone=len(baseline - found) if baseline is not None else 0)


def drift_data(d: Drift) -> dict[str, Any]:
    """The report's JSON form: compact (counts, a few examples per class), no document value."""
    plan = d.plan
    codes: dict[str, int] = {}
    for finding in plan.findings:
        codes[finding.code] = codes.get(finding.code, 0) + 1
    classes = {}
    for c in CLASSES:
        members = d.members[c.name]
        classes[c.name] = {
            "count": len(members), "unit": c.unit, "cause": c.cause,
            "series": len({series for _, series in members}),
            "examples": [{"path": path, "series": series, **_look(d, series)}
                         for path, series in members[:EXAMPLES]],
        }
    if d.baseline is None:
        classes["new_findings"]["cause"] = "no --baseline given: findings are not compared"
    return {
        **DRIFT.header(),
        "spec": {"name": plan.spec_name, "path": plan.spec_path, "sha256": plan.spec_sha256},
        "source": plan.source,
        "selection": None if plan.selection is None else dict(plan.selection.pairs),
        "read_time": encode(plan.read_time),
        "converged": d.converged,
        "writes_needed": len(plan.ops),
        "classes": classes,
        "findings": {"total": len(plan.findings), "by_code": dict(sorted(codes.items())),
                     "all": [{"code": f.code, "path": f.path} for f in plan.findings]},
        "baseline": None if d.baseline is None else {
            "path": d.baseline, "findings_new": len(d.members["new_findings"]),
            "findings_gone": d.findings_gone},
    }


def select_text(label: str, key_fields: Sequence[str]) -> str | None:
    """The ``--select`` value that names the series labelled ``label`` ("clientId=c01 formId=f1" →
    "clientId=c01,formId=f1"); None when the label cannot be read back unambiguously (a value
    holding a comma, which --select cannot take, or the next field's name)."""
    if not key_fields or not label.startswith(f"{key_fields[0]}="):
        return None
    values, rest = [], label[len(key_fields[0]) + 1:]
    for name in key_fields[1:]:
        value, marker, rest = rest.partition(f" {name}=")
        if not marker or f" {name}=" in rest:
            return None
        values.append(value)
    values.append(rest)
    if any("," in value or not value for value in values):
        return None
    return ",".join(f"{name}={value}" for name, value in zip(key_fields, values, strict=True))


def _look(d: Drift, series: str) -> dict[str, str | None]:
    """Where a person looks next: the series' weeks, as ``reconcile series`` shows them."""
    select = select_text(series, d.key_fields) if series else None
    command = None if select is None else (
        f"reconcile series --spec {shlex.quote(d.plan.spec_path)} --source {shlex.quote(d.plan.source)} "
        f"--select {shlex.quote(select)}")
    return {"select": select, "command": command}


def baseline_findings(data: Any, where: str) -> frozenset[tuple[str, str]]:
    """The findings of an earlier drift report (``check --format json``), as (code, path)."""
    check_version(data, where, DRIFT)
    findings = data.get("findings")
    listed = findings.get("all") if isinstance(findings, dict) else None
    if not isinstance(listed, list) or not all(
            isinstance(f, dict) and isinstance(f.get("code"), str) and isinstance(f.get("path"), str)
            for f in listed):
        raise SourceError(f"{where}: findings.all must be a list of {{\"code\", \"path\"}} objects, as "
                         "`reconcile check --format json` writes it")
    return frozenset((f["code"], f["path"]) for f in listed)


def summary_line(d: Drift) -> str:
    """One line for people: each class with something in it, and its likely cause."""
    parts = []
    for c in CLASSES:
        members = d.members[c.name]
        if members:
            series = len({s for _, s in members})
            unit = c.one if len(members) == 1 else c.unit
            parts.append(f"{len(members)} {unit} in {series} series ({c.name}: {c.cause})")
    if not parts:
        return "No drift: converged."
    return f"Drift: {'; '.join(parts)}. Run `reconcile apply` to fix what can be fixed additively."


def first_look(d: Drift) -> str | None:
    """The command that shows the weeks of the first drifting series, for a person to start from."""
    first = next((series for c in CLASSES for _, series in d.members[c.name] if series), "")
    command = _look(d, first)["command"] if first else None
    return f"One drifting series' weeks: {command}" if command else None

