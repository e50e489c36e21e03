"""Plans and reports as text (terminal), markdown (pull-request comments) and JSON (files, machines).

Pure: returns strings; never prints, never reads a clock. One renderer per op type, picked by
``functools.singledispatch``. Colour is not decided here: text lines start with a marker (``+``,
``~``, ``!``) that the CLI may colour on a terminal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import singledispatch
from typing import Any

from reconciler.audit import AuditReport
from reconciler.model import CreateDocumentOp, FillFieldsOp, Finding, Op, Plan
from reconciler.plan import dumps_plan
from reconciler.values import format_timestamp, printable, show
from reconciler.verify import Verification

# A pull-request comment must stay readable, and GitHub refuses one over 65,536 characters.
MARKDOWN_BUDGET = 50_000  # characters of table rows, all tables together
MARKDOWN_CELL = 200  # characters of one cell


def render_plan(plan: Plan, fmt: str, show_values: bool = False) -> str:
    """``show_values``: markdown (a pull-request comment, seen by everyone with access to the
    repository) shows no document value unless asked: IDs, series keys, rules and counts only."""
    if fmt == "json":
        return dumps_plan(plan)
    if fmt == "markdown":
        return _plan_markdown(plan, show_values)
    return _plan_text(plan)


def _header(plan: Plan) -> str:
    read = format_timestamp(plan.read_time) if plan.read_time else "unknown time"
    return (f"Spec {printable(plan.spec_name)} ({printable(plan.spec_path)}, sha256 "
            f"{printable(plan.spec_sha256[:12])}) against {printable(plan.source)}, read at {read}")


# -- text --------------------------------------------------------------------------------------------


def _plan_text(plan: Plan) -> str:
    lines = [_header(plan), ""]
    if plan.ops:
        lines.append(f"Changes ({len(plan.ops)} document writes):")
        for group in plan.groups():
            if len(group) > 1 or group[0].group is not None:
                lines.append(f"  link {printable(group[0].group or '')} <-> "
                             + ", ".join(printable(op.path) for op in group if op.path != group[0].group))
                lines.extend("  " + line for op in group for line in op_text(op))
            else:
                lines.extend(op_text(group[0]))
        lines.append("")
    else:
        lines += ["No changes: the data already has the shape the spec declares.", ""]
    if plan.findings:
        lines.extend(findings_text(plan.findings))
        lines.append("")
    lines.append(plan.summary.line())
    return "\n".join(lines) + "\n"


def findings_text(findings: tuple[Finding, ...] | list[Finding]) -> list[str]:
    lines = [f"Findings ({len(findings)}; left untouched, see docs/findings.md):"]
    for finding in findings:
        series = f"  [{printable(finding.series)}]" if finding.series else ""
        lines.append(f"  ! {finding.code}  {printable(finding.path)}{series}")
        lines.append(f"      {printable(finding.message)}")
    return lines


@singledispatch
def op_text(op: Op) -> list[str]:
    raise TypeError(f"no text renderer for {type(op).__name__}")


@op_text.register
def _(op: CreateDocumentOp) -> list[str]:
    fields = ", ".join(f"{printable(name)}={show(value)}" for name, value in sorted(op.fields.items()))
    return [f"  + create {printable(op.path)}  ({printable(', '.join(op.rules))})", f"      {fields}"]


@op_text.register
def _(op: FillFieldsOp) -> list[str]:
    lines = [f"  ~ fill   {printable(op.path)}  ({printable(', '.join(op.rules))})"]
    changes = [(f.field, show(f.before), show(f.value)) for f in op.fills]
    if op.transition:
        changes.append((op.transition.field, show(op.transition.before), show(op.transition.to)))
    lines.extend(f"      {printable(name)}: {before} -> {after}" for name, before, after in sorted(changes))
    return lines


# -- markdown ----------------------------------------------------------------------------------------


def _plan_markdown(plan: Plan, show_values: bool) -> str:
    s = plan.summary
    lines = [
        f"### reconcile plan: {_code(plan.spec_name)} on {_code(plan.source)}", "",
        f"**{s.line()}**", "",
        "| create | link | fill | delete | overwrite | findings |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {s.create} | {s.link} | {s.fill} | 0 | 0 | {s.findings} |", "",
    ]
    budget = [MARKDOWN_BUDGET // 2 if plan.findings else MARKDOWN_BUDGET]
    if plan.ops:
        values = "values" if show_values else "fields (values hidden; `--show-values` shows them)"
        lines += [f"<details><summary>Changes ({len(plan.ops)} document writes)</summary>", "",
                  f"| op | document | rules | link | {values} |", "|---|---|---|---|---|"]
        # Changes to existing documents first: they are what a reviewer must see.
        ordered = sorted(plan.ops, key=lambda op: isinstance(op, CreateDocumentOp))
        lines += _rows((op_markdown(op, show_values) for op in ordered), len(plan.ops), budget)
        lines += ["", "</details>", ""]
    if plan.findings:
        budget = [MARKDOWN_BUDGET - MARKDOWN_BUDGET // 2 if plan.ops else MARKDOWN_BUDGET]
        counts = Counter(f.code for f in plan.findings)
        lines += ["| finding | count |", "|---|---:|"]
        lines += [f"| {_code(code)} | {count} |" for code, count in sorted(counts.items())]
        lines += ["", f"<details><summary>Findings ({len(plan.findings)})</summary>", "",
                  "| code | document | series | message |", "|---|---|---|---|"]
        # A finding's message quotes the values it is about: shown only when asked.
        lines += _rows((f"| {_code(f.code)} | {_code(f.path)} | {_code(f.series) if f.series else ''} | "
                        f"{_code(f.message) if show_values else 'see docs/findings.md'} |"
                        for f in plan.findings), len(plan.findings), budget)
        lines += ["", "</details>", ""]
    lines.append(f"<sub>spec {_code(plan.spec_path)} sha256 {_code(plan.spec_sha256[:12])}, read at "
                 f"{format_timestamp(plan.read_time) if plan.read_time else 'unknown time'}</sub>")
    return "\n".join(lines) + "\n"


def _rows(rows, total: int, budget: list[int]) -> list[str]:
    """Table rows until the budget is spent, then one line saying how many were left out."""
    kept: list[str] = []
    for row in rows:
        if len(row) + 1 > budget[0]:
            kept += ["", f"… and {total - len(kept)} more; the JSON plan (`--format json`) has all."]
            break
        budget[0] -= len(row) + 1
        kept.append(row)
    return kept


def _code(text: str) -> str:
    """Text from data as an inline code span in a table cell: no backtick inside can close the span
    early (the fence is longer than any run of backticks in it), no pipe can split the cell, no
    control character or line break survives; inside a code span, HTML and mentions are inert."""
    text = printable(text).replace("|", "\\|")
    if len(text) > MARKDOWN_CELL:
        text = text[: MARKDOWN_CELL - 1] + "…"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


@singledispatch
def op_markdown(op: Op, show_values: bool = False) -> str:
    raise TypeError(f"no markdown renderer for {type(op).__name__}")


@op_markdown.register
def _(op: CreateDocumentOp, show_values: bool = False) -> str:
    if show_values:
        values = _code(", ".join(f"{name}={show(value)}" for name, value in sorted(op.fields.items())))
    else:
        values = f"{len(op.fields)} fields"
    return (f"| create | {_code(op.path)} | {_code(', '.join(op.rules))} | {'yes' if op.group else ''} | "
            f"{values} |")


@op_markdown.register
def _(op: FillFieldsOp, show_values: bool = False) -> str:
    if show_values:
        changes = [f"{f.field}: {show(f.before)} → {show(f.value)}" for f in op.fills]
    else:
        changes = [f"{f.field} filled" for f in op.fills]
    if op.transition:  # a status the spec names, not a value of the data's own
        changes.append(f"{op.transition.field}: {show(op.transition.before)} → "
                       f"{show(op.transition.to)}")
    return (f"| fill | {_code(op.path)} | {_code(', '.join(op.rules))} | {'yes' if op.group else ''} | "
            f"{_code('; '.join(sorted(changes)))} |")


def to_json(data: Any) -> str:
    """Deterministic JSON for reports: sorted keys, two-space indent, trailing newline; ASCII only,
    so that no character from data reaches a terminal as anything but an escape."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


# -- apply and validation (phase 3) ------------------------------------------------------------------


def render_verification(verification: Verification, fmt: str) -> str:
    if fmt == "json":
        return to_json(verification_data(verification))
    v = verification
    yes = {True: "YES", False: "NO"}
    rows = [
        ("Responses preserved", f"YES  ({v.responses_kept} of {v.responses_before}"
                                + (f"; {v.responses_before - v.responses_kept} deleted by another writer "
                                   "while this run ran)" if v.responses_kept < v.responses_before else ")")),
        ("Scores and dates preserved", yes[not v.key_values_lost]),
        ("Other values preserved", yes[not v.other_values_lost]),
        ("Links valid", f"{yes[not v.links_broken]}  ({v.links_made} made, "
                        f"{v.links_made - len(v.links_broken)} hold both ways)"),
        ("Documents created", str(v.created)),
        ("Documents updated", str(v.updated)),
        ("Ops skipped", str(len(v.skipped))),
        ("Pending ops left", str(len(v.pending.ops))),
    ]
    lines = ["Validation (re-read, re-diffed against the spec):"]
    lines += [f"  {name} {'.' * (28 - len(name))} {value}" for name, value in rows]
    for loss in (*v.key_values_lost, *v.other_values_lost):
        lines.append(f"  ! lost: {printable(loss.path)}: {printable(loss.detail)}")
    for path in v.links_broken:
        lines.append(f"  ! link does not hold both ways: {printable(path)}")
    for result in v.skipped:
        lines.append(f"  ! skipped {printable(result.op.path)}: {printable(result.reason)}")
    if v.skipped:
        lines.append("  Skipped ops were not forced: the data changed since the plan. Re-run "
                     "`reconcile plan` to see what is still needed.")
    if v.changed_by_others:
        deleted = len(v.deleted_by_others)
        lines.append(f"  Drift by another writer, not by this run: {len(v.changed_by_others)} document(s) "
                     f"changed after this run read or wrote them ({deleted} deleted): "
                     + ", ".join(map(printable, v.changed_by_others[:5]))
                     + (" …" if len(v.changed_by_others) > 5 else ""))
    if v.pending.ops:
        lines.append(f"  Still pending: {v.pending.summary.line()}")
    verdict = ("converged, nothing lost" if v.converged else
               "NOT converged" + ("" if v.nothing_lost else "; VALUES WERE LOST"))
    if v.skipped:
        verdict += f"; {len(v.skipped)} op(s) skipped as stale: re-run plan"
    lines.append(f"Apply: {v.created} created, {v.updated} updated, {len(v.skipped)} skipped; {verdict}.")
    return "\n".join(lines) + "\n"


def verification_data(v: Verification) -> dict[str, Any]:
    return {
        "responses_preserved": {"before": v.responses_before, "kept": v.responses_kept,
                                "deleted_by_others": v.responses_before - v.responses_kept},
        "scores_and_dates_preserved": not v.key_values_lost,
        "other_values_preserved": not v.other_values_lost,
        "lost": [{"path": loss.path, "detail": loss.detail}
                 for loss in (*v.key_values_lost, *v.other_values_lost)],
        "links": {"made": v.links_made, "broken": list(v.links_broken)},
        "created": v.created, "updated": v.updated,
        "skipped": [{"path": r.op.path, "reason": r.reason} for r in v.skipped],
        "changed_by_others": list(v.changed_by_others),
        "deleted_by_others": list(v.deleted_by_others),
        "pending": v.pending.summary.changes,
        "converged": v.converged,
    }


# -- audit (phase 1) ---------------------------------------------------------------------------------


def render_audit(report: AuditReport, fmt: str) -> str:
    if fmt == "json":
        return to_json(report.as_data())
    lines = [f"Audit of {report.source} with spec {report.spec_name}", ""]
    # Collection names and finding codes are shown as they are; the report's own labels in words.
    sections = [("Documents", report.collections, False), ("Series members", report.members, True),
                ("Responses", report.responses, True), ("Series", report.series, True),
                ("Link health", report.links, True), ("Findings", report.findings, False)]
    for title, values, worded in sections:
        if not values:
            continue
        lines.append(f"{title}:")
        for name, value in values.items():
            label = name.replace("_", " ") if worded else name
            if isinstance(value, dict):
                lines.append(f"  {label}: " + ", ".join(f"{k} {n}" for k, n in value.items()))
            else:
                lines.append(f"  {label}: {value}")
        lines.append("")
    return "\n".join(lines)
