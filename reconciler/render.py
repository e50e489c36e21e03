"""Plans and reports as text (terminal), markdown (pull-request comments) and JSON (files, machines).

Pure: returns strings; never prints, never reads a clock. One renderer per op type, picked by
``functools.singledispatch``. Colour is not decided here: text lines start with a marker (``+``,
``~``, ``!``) that the CLI may colour on a terminal.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from functools import singledispatch
from typing import Any

from reconciler.audit import AuditReport
from reconciler.audit_page import audit_page
from reconciler.compare import Comparison, comparison_data, impact
from reconciler.formats import RESTORE
from reconciler.markdown import Block, Document, Rows, Table, codes, one_comment, split
from reconciler.markdown import code as _code
from reconciler.model import CreateDocumentOp, FillFieldsOp, Finding, Op, Plan, Selection, Summary
from reconciler.plan import dumps_plan
from reconciler.restore import EXAMPLES as RESTORE_EXAMPLES
from reconciler.restore import RestoreCheck, RestorePlan
from reconciler.rollback import (
    ClearFieldsOp,
    DeleteDocumentOp,
    RollbackCheck,
    RollbackPlan,
    UndoOp,
    describe_change,
    rollback_data,
)
from reconciler.sharded import ShardedPlan
from reconciler.timeline import (
    DUPLICATE,
    ID_TAKEN,
    LINKED,
    MISSING_WEEK,
    OUT_OF_RANGE,
    STORED,
    TO_COMPLETE,
    TO_CREATE,
    TO_LINK,
    Timeline,
    Timelines,
    timelines_data,
)
from reconciler.values import encode, format_timestamp, printable, show
from reconciler.verify import Verification


def render_plan(plan: Plan, fmt: str, show_values: bool = False) -> str:
    """``show_values``: markdown (a pull-request comment, seen by everyone with access to the
    repository) shows no document value unless asked: IDs, series keys, rules and counts only."""
    return PLAN_FORMATS[fmt](plan, show_values)


def render_plan_outline(plan: ShardedPlan, fmt: str) -> str:
    """A sharded plan as its manifest tells it, for a run that does not read its shards (the
    pipeline's apply: its workers do): the header, how many writes and findings, and the summary;
    ``reconcile show`` lists them. Text or markdown."""
    return OUTLINE_FORMATS[fmt](plan)


def render_plan_parts(plan: Plan, show_values: bool = False) -> list[str]:
    """The markdown of ``render_plan`` with every row, split into parts that each fit a comment."""
    return split(plan_document(plan, show_values))


def _header(plan: Plan) -> str:
    read = format_timestamp(plan.read_time) if plan.read_time else "unknown time"
    return (f"Spec {printable(plan.spec_name)} ({printable(plan.spec_path)}, sha256 "
            f"{printable(plan.spec_sha256[:12])}) against {printable(plan.source)}, read at {read}"
            + (f"\n{_selected(plan.selection)}" if plan.selection else ""))


def _selected(selection: Selection) -> str:
    return (f"Selected: {printable(selection.text())}: only the series with this key and their responses; "
            "nothing outside it is planned or written")


# -- text --------------------------------------------------------------------------------------------


def _plan_text(plan: Plan) -> str:
    lines = [_header(plan), ""]
    if plan.ops:
        lines.append(f"Changes ({len(plan.ops)} document writes):")
        for group in plan.groups():
            if len(group) > 1 or group[0].group is not None:
                member = printable(group[0].group or "")
                partners = [printable(op.path) for op in group if op.path != group[0].group]
                lines.append(f"  link {member} <-> {', '.join(partners)}" if partners else
                             f"  link {member} (its response already holds the link; this side only)")
                lines.extend("  " + line for op in group for line in op_text(op))
            else:
                lines.extend(op_text(group[0]))
        lines.append("")
    else:
        lines += [_NO_CHANGES, ""]
    if plan.findings:
        lines.extend(findings_text(plan.findings))
        lines.append("")
    lines.append(plan.summary.line())
    return "\n".join(lines) + "\n"


_NO_CHANGES = "No changes: the data already has the shape the spec declares."


def _outline_text(plan: ShardedPlan) -> str:
    s, where = plan.manifest.summary, printable(plan.directory)
    lines = [_header(plan.header), ""]
    if plan.manifest.ops:
        lines += [f"Changes ({plan.manifest.ops} document writes): {_in_shards(plan)}, read and checked by "
                  f"the pipeline's workers; `reconcile show {where}` lists them.", ""]
    else:
        lines += [_NO_CHANGES, ""]
    if s.findings:
        lines += [f"Findings ({s.findings}; left untouched, see docs/findings.md): `reconcile show {where}` "
                  "lists them.", ""]
    lines.append(s.line())
    return "\n".join(lines) + "\n"


def _in_shards(plan: ShardedPlan, name: Callable[[str], str] = printable) -> str:
    count = sum(1 for shard in plan.manifest.shards if shard.kind == "ops")
    return f"in {_count(count, 'shard')} of {name(plan.directory)}"


def findings_text(findings: tuple[Finding, ...] | list[Finding]) -> list[str]:
    lines = [f"Findings ({len(findings)}; left untouched, see docs/findings.md):"]
    for finding in findings:
        series = f"  [{printable(finding.series)}]" if finding.series else ""
        lines.append(f"  ! {finding.code}  {printable(finding.path)}{series}")
        lines.append(f"      {printable(finding.message)}")
    return lines


def _fields_line(fields: dict) -> str:
    """A document's fields on one line, sorted, each name and value escaped for a terminal."""
    return ", ".join(f"{printable(name)}={show(value)}" for name, value in sorted(fields.items()))


@singledispatch
def op_text(op: Op) -> list[str]:
    raise TypeError(f"no text renderer for {type(op).__name__}")


@op_text.register
def _(op: CreateDocumentOp) -> list[str]:
    fields = _fields_line(op.fields)
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

SERIES_SHOWN = 25  # rows of a per-series table; the rest are counted
EXAMPLES = 3  # documents named per finding code


def plan_document(plan: Plan, show_values: bool = False) -> Document:
    """A pull-request comment: the totals, then the plan by rule, collection and series, findings by
    code, then every write and finding in collapsed tables. Private unless ``show_values``: IDs,
    series keys, rules and counts, and no document value."""
    return Document(title=lambda part: f"### reconcile plan: {_code(plan.spec_name)} on "
                                       f"{_code(plan.source)}{part}",
                    items=_plan_items(plan, show_values), cut_note=_CUT)


_CUT = "`--split DIR` writes every row in parts; the JSON plan (`--format json`) has all."


def _totals(s: Summary, selection: Selection | None) -> Block:
    selected = (f"**Selected:** {_code(selection.text())}: only the series with this key and their "
                "responses; nothing outside it is planned or written.", "") if selection else ()
    return Block((
        *selected,
        f"**{s.line()}** {_count(s.findings, 'finding')} left untouched.", "",
        "| create | link | fill | delete | overwrite | findings |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {s.create} | {s.link} | {s.fill} | 0 | 0 | {s.findings} |", ""))


def _outline_markdown(plan: ShardedPlan) -> str:
    header = plan.header
    note = (f"The {plan.manifest.ops} document writes are {_in_shards(plan, _code)}, read and checked by the "
            f"pipeline's workers; {_code(f'reconcile show {plan.directory}')} lists them and the findings.")
    return one_comment(Document(
        title=lambda part: f"### reconcile plan: {_code(header.spec_name)} on {_code(header.source)}{part}",
        items=[_totals(plan.manifest.summary, header.selection), Block((note, ""))], cut_note=_CUT))


def _plan_items(plan: Plan, show_values: bool) -> list[Block | Table]:
    items: list[Block | Table] = [_totals(plan.summary, plan.selection)]
    if plan.ops:
        items.append(Block(_by_rule(plan.ops) + _by_collection(plan.ops)))
    if plan.ops or plan.findings:
        items.append(_by_series(plan))
    if plan.findings:
        items.append(Block(_findings_by_code(plan.findings)))
    if plan.ops:
        values = "values" if show_values else "fields (values hidden; `--show-values` shows them)"
        # Changes to existing documents first: they are what a reviewer must see.
        ordered = sorted(plan.ops, key=lambda op: isinstance(op, CreateDocumentOp))
        items.append(Table(f"Changes ({len(plan.ops)} document writes)",
                           (f"| op | document | series | rules | link | {values} |",
                            "|---|---|---|---|---|---|"),
                           Rows(ordered, lambda op: op_markdown(op, show_values))))
    if plan.findings:
        # A finding's message quotes the values it is about: shown only when asked.
        items.append(Table(f"Findings ({len(plan.findings)})",
                           ("| code | document | series | message |", "|---|---|---|---|"),
                           Rows(plan.findings, lambda f: _finding_row(f, show_values))))
    read = format_timestamp(plan.read_time) if plan.read_time else "unknown time"
    items.append(Block((f"<sub>spec {_code(plan.spec_path)} sha256 {_code(plan.spec_sha256[:12])}, "
                        f"read at {read}</sub>",)))
    return items


def _finding_row(f: Finding, show_values: bool) -> str:
    return (f"| {_code(f.code)} | {_code(f.path)} | {_code(f.series) if f.series else ''} | "
            f"{_code(f.message) if show_values else 'see docs/findings.md'} |")


def _count(n: int, what: str, plural: str = "") -> str:
    return f"{n} {what if n == 1 else plural or what + 's'}"


def _by_rule(ops: Sequence[Op]) -> tuple[str, ...]:
    created: Counter[str] = Counter()
    filled: Counter[str] = Counter()
    for op in ops:
        (created if isinstance(op, CreateDocumentOp) else filled).update(op.rules)
    return ("| rule | documents created | documents filled |", "|---|---:|---:|",
            *(f"| {_code(rule)} | {created[rule]} | {filled[rule]} |" for rule in sorted(created | filled)),
            "")


def _by_collection(ops: Sequence[Op]) -> tuple[str, ...]:
    created = Counter(op.path.partition("/")[0] for op in ops if isinstance(op, CreateDocumentOp))
    filled = Counter(op.path.partition("/")[0] for op in ops if not isinstance(op, CreateDocumentOp))
    return ("| collection | documents created | documents filled |", "|---|---:|---:|",
            *(f"| {_code(name)} | {created[name]} | {filled[name]} |" for name in sorted(created | filled)),
            "")


def _series_counts(plan: Plan) -> dict[str, Counter[str]]:
    """Per series: weeks to create, links, documents filled outside a link, findings."""
    counts: dict[str, Counter[str]] = {}
    for op in plan.ops:
        row = counts.setdefault(op.series, Counter())
        if isinstance(op, CreateDocumentOp):
            row["create"] += 1
        elif op.group is None:
            row["fill"] += 1
        if op.group == op.path:
            row["link"] += 1
    for finding in plan.findings:
        counts.setdefault(finding.series, Counter())["findings"] += 1
    return counts


def _by_series(plan: Plan) -> Table:
    counts = _series_counts(plan)
    ranked = sorted(counts.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    rows = [f"| {_code(label) if label else '(no series)'} | {c['create']} | {c['link']} | {c['fill']} | "
            f"{c['findings']} |" for label, c in ranked[:SERIES_SHOWN]]
    more = len(ranked) - SERIES_SHOWN
    return Table(f"By series ({_count(len(ranked), 'series', 'series')}, most changes first)",
                 ("| series | weeks to create | links | other fills | findings |",
                  "|---|---:|---:|---:|---:|"),
                 rows, left_out=f"… and {more} more series." if more > 0 else "")


def _findings_by_code(findings: Sequence[Finding]) -> tuple[str, ...]:
    paths: dict[str, list[str]] = {}
    for finding in findings:
        paths.setdefault(finding.code, []).append(finding.path)
    return ("| finding (left untouched) | count | documents |", "|---|---:|---|",
            *(f"| {_code(code)} | {len(found)} | {codes(found, EXAMPLES)} |"
              for code, found in sorted(paths.items())), "")



@singledispatch
def op_markdown(op: Op, show_values: bool = False) -> str:
    raise TypeError(f"no markdown renderer for {type(op).__name__}")


@op_markdown.register
def _(op: CreateDocumentOp, show_values: bool = False) -> str:
    if show_values:
        values = _code(", ".join(f"{name}={show(value)}" for name, value in sorted(op.fields.items())))
    else:
        values = f"{len(op.fields)} fields"
    return (f"| create | {_code(op.path)} | {_series_cell(op)} | {_code(', '.join(op.rules))} | "
            f"{'yes' if op.group else ''} | {values} |")


@op_markdown.register
def _(op: FillFieldsOp, show_values: bool = False) -> str:
    if show_values:
        changes = [f"{f.field}: {show(f.before)} → {show(f.value)}" for f in op.fills]
    else:
        changes = [f"{f.field} filled" for f in op.fills]
    if op.transition:  # a status the spec names, not a value of the data's own
        changes.append(f"{op.transition.field}: {show(op.transition.before)} → "
                       f"{show(op.transition.to)}")
    return (f"| fill | {_code(op.path)} | {_series_cell(op)} | {_code(', '.join(op.rules))} | "
            f"{'yes' if op.group else ''} | {_code('; '.join(sorted(changes)))} |")


def _series_cell(op: Op) -> str:
    return _code(op.series) if op.series else ""


# -- the impact of a spec change -------------------------------------------------------------------

_DECIDE = "Needs a decision by a person: the tool will not change existing documents."


def render_comparison(c: Comparison, fmt: str, show_values: bool = False) -> str:
    return COMPARISON_FORMATS[fmt](c, show_values)


def render_comparison_parts(c: Comparison, show_values: bool = False) -> list[str]:
    return split(comparison_document(c, show_values))


def _delta(new: int, old: int) -> str:
    return f"{new - old:+d}" if new != old else "0"


def _change_line(c: Comparison) -> str:
    decide = sum(len(found) for found in c.needs_decision().values())
    if not c.differs:
        return "This change does nothing to this data: both specs give the same plan and findings."
    return (f"This change: {_count(len(c.added), 'write')} more, {len(c.removed)} fewer, {len(c.changed)} "
            f"written differently; {_count(decide, 'existing document')} will disagree with the new spec.")


def comparison_document(c: Comparison, show_values: bool = False) -> Document:
    """Impact first (totals, what needs a person, by rule, by series), then the new spec's plan."""
    old, new = c.old.summary, c.new.summary
    items: list[Block | Table] = [Block((
        f"**{_change_line(c)}**", "",
        "| spec | create | link | fill | findings |", "|---|---:|---:|---:|---:|",
        f"| old {_code(c.old.spec_path)} {_code(c.old.spec_sha256[:12])} | {old.create} | {old.link} | "
        f"{old.fill} | {old.findings} |",
        f"| new {_code(c.new.spec_path)} {_code(c.new.spec_sha256[:12])} | {new.create} | {new.link} | "
        f"{new.fill} | {new.findings} |",
        f"| change | {_delta(new.create, old.create)} | {_delta(new.link, old.link)} | "
        f"{_delta(new.fill, old.fill)} | {_delta(new.findings, old.findings)} |", ""))]
    decide = c.needs_decision()
    if decide:
        items.append(Block((
            f"**{_DECIDE}**", "",
            "| what the change leaves | finding | documents | examples |", "|---|---|---:|---|",
            *(f"| {impact(code)} | {_code(code)} | {len(found)} | "
              f"{codes([f.path for f in found], EXAMPLES)} |" for code, found in decide.items()), "")))
    elif c.differs:
        items.append(Block(("Every existing document follows the new spec additively: nothing needs a "
                            "decision.", "")))
    if c.findings_removed:
        resolved = Counter(f.code for f in c.findings_removed)
        items.append(Block((f"The change resolves {_count(len(c.findings_removed), 'finding')}: "
                            + ", ".join(f"{_code(code)} {n}" for code, n in sorted(resolved.items())) + ".",
                            "")))
    rules = c.by_rule()
    if rules:
        items.append(Block((
            "| rule | writes added | writes removed | writes changed |", "|---|---:|---:|---:|",
            *(f"| {_code(rule)} | {n['added']} | {n['removed']} | {n['changed']} |"
              for rule, n in rules.items()), "")))
    series = list(c.by_series().items())
    if series:
        more = len(series) - SERIES_SHOWN
        items.append(Table(
            f"Impact by series ({_count(len(series), 'series', 'series')}, most affected first)",
            ("| series | writes added | removed | changed | findings added | findings resolved |",
             "|---|---:|---:|---:|---:|---:|"),
            [f"| {_code(label) if label else '(no series)'} | {n['added']} | {n['removed']} | "
             f"{n['changed']} | {n['findings_added']} | {n['findings_removed']} |"
             for label, n in series[:SERIES_SHOWN]],
            left_out=f"… and {more} more series." if more > 0 else ""))
    items.append(Block(("#### The plan with the new spec", "")))
    items += _plan_items(c.new, show_values)
    return Document(title=lambda part: f"### reconcile plan: spec change to {_code(c.new.spec_name)} on "
                                       f"{_code(c.new.source)}{part}",
                    items=items, cut_note=_CUT)


def _comparison_text(c: Comparison) -> str:
    old, new = c.old.summary, c.new.summary
    lines = [f"Spec change: {printable(c.old.spec_path)} (sha256 {c.old.spec_sha256[:12]}) -> "
             f"{printable(c.new.spec_path)} (sha256 {c.new.spec_sha256[:12]}), against "
             f"{printable(c.new.source)}", "",
             f"  old spec: {old.line()} {_count(old.findings, 'finding')}.",
             f"  new spec: {new.line()} {_count(new.findings, 'finding')}.", ""]
    for mark, what, ops in (("+", "added", c.added), ("-", "removed", c.removed),
                            ("~", "changed", [op for _, op in c.changed])):
        if ops:
            lines.append(f"Writes {what} by the change ({len(ops)}):")
            lines += [f"  {mark} {printable(op.path)}  ({printable(', '.join(op.rules))})"
                      + (f"  [{printable(op.series)}]" if op.series else "") for op in ops]
            lines.append("")
    decide = c.needs_decision()
    if decide:
        lines.append(_DECIDE)
        for code, found in decide.items():
            lines.append(f"  ! {impact(code)} ({code}): {len(found)}")
            lines += [f"      {printable(f.path)}" + (f"  [{printable(f.series)}]" if f.series else "")
                      for f in found]
        lines.append("")
    if c.findings_removed:
        lines.append(f"Findings the change resolves ({len(c.findings_removed)}):")
        lines += [f"  {f.code}  {printable(f.path)}" for f in c.findings_removed]
        lines.append("")
    lines.append(_change_line(c))
    return "\n".join(lines) + "\n"


def to_json(data: Any) -> str:
    """Deterministic JSON for reports: sorted keys, two-space indent, trailing newline; ASCII only,
    so that no character from data reaches a terminal as anything but an escape."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


# -- apply and its validation ------------------------------------------------------------------------


def render_verification(verification: Verification, fmt: str, verbose: bool = False) -> str:
    """``verbose``: every skipped write on its own line; else one line per reason."""
    return VERIFICATION_FORMATS[fmt](verification, verbose)


SKIPS_NAMED = 3  # skipped writes named one by one for a reason; more are counted (--verbose names all)


def _verification_text(v: Verification, verbose: bool = False) -> str:
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
        ("Writes skipped", str(len(v.skipped))),
        ("Writes still needed", str(len(v.pending.ops))),
    ]
    lines = ["Validation (re-read, re-diffed against the spec):"]
    lines += [f"  {name} {'.' * (28 - len(name))} {value}" for name, value in rows]
    for loss in (*v.key_values_lost, *v.other_values_lost):
        lines.append(f"  ! lost: {printable(loss.path)}: {printable(loss.detail)}")
    for path in v.links_broken:
        lines.append(f"  ! link does not hold both ways: {printable(path)}")
    by_reason: dict[str, list[str]] = {}
    for result in v.skipped:
        by_reason.setdefault(result.reason, []).append(result.op.path)
    for reason, paths in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        if verbose or len(paths) <= SKIPS_NAMED:
            lines += [f"  ! skipped {printable(path)}: {printable(reason)}" for path in paths]
        else:
            lines.append(f"  ! skipped {len(paths)} writes: {printable(reason)} (e.g. "
                         f"{', '.join(map(printable, paths[:SKIPS_NAMED]))})")
    if v.skipped:
        lines.append("  Skipped writes were not forced: the data changed since the plan. Re-run "
                     "`reconcile plan` to see what is still needed" + ("." if verbose else
                                                                       "; --verbose lists each document."))
    if v.changed_by_others:
        deleted = len(v.deleted_by_others)
        lines.append(f"  Drift by another writer, not by this run: {len(v.changed_by_others)} document(s) "
                     f"changed after this run read or wrote them ({deleted} deleted): "
                     + ", ".join(map(printable, v.changed_by_others[:5]))
                     + (" …" if len(v.changed_by_others) > 5 else ""))
    if v.pending.ops:
        lines.append(f"  Still pending: {v.pending.summary.line()}")
    # "Converged" only when the exit code is 0: all that was planned was written, nothing is pending.
    if v.converged and not v.skipped:
        verdict = "converged, nothing lost"
    elif v.nothing_lost:
        verdict = "nothing lost, NOT converged"
    else:
        verdict = "NOT converged; VALUES WERE LOST"
    if v.skipped:
        verdict += f"; {len(v.skipped)} writes skipped: re-run plan"
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


# -- audit -------------------------------------------------------------------------------------------


def render_audit(report: AuditReport, fmt: str, show_values: bool = False) -> str:
    """``show_values``: html only (a page that may be passed around): IDs, series keys, weeks, due
    dates, rules, codes and counts unless asked; text and json are the operator's own."""
    return AUDIT_FORMATS[fmt](report, show_values)


def _audit_text(report: AuditReport) -> str:
    lines = [f"Audit of {report.source} with spec {report.spec_name}", ""]
    if report.selection:
        lines[1:1] = [f"Selected: {printable(report.selection.text())}: the counts are of these series and "
                      "their documents only"]
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


# -- rollback ----------------------------------------------------------------------------------------


def render_rollback(plan: RollbackPlan, fmt: str) -> str:
    """The rollback plan: what will be deleted and restored, and what is left as it is, and why."""
    return ROLLBACK_FORMATS[fmt](plan)


ALREADY_SHOWN = 5  # documents named among those already as before; the rest are counted


def _rollback_header(plan: RollbackPlan) -> str:
    past = plan.past
    started = format_timestamp(past.started) if past.started else "an unknown time"
    ended = "" if past.ended else " (its journal has no end line: the run was stopped)"
    read = format_timestamp(plan.read_time) if plan.read_time else "unknown time"
    where = printable(past.journal) + (f" ({len(past.journals)} journals)" if past.journals else "")
    return (f"Rollback of the {printable(past.operation)} recorded in {where}: spec "
            f"{printable(past.spec_name) or '(none)'} (sha256 {printable(past.spec_sha256[:12]) or '-'}) on "
            f"{printable(past.source)}, started {started}{ended}; read at {read}")


def _rollback_text(plan: RollbackPlan) -> str:
    lines = [_rollback_header(plan), ""]
    if plan.ops:
        lines.append(f"Undo ({len(plan.ops)} document writes):")
        for group in plan.groups():
            if len(group) > 1:
                lines.append("  link " + " <-> ".join(printable(op.path) for op in group))
                lines.extend("  " + line for op in group for line in undo_text(op))
            else:
                lines.extend(undo_text(group[0]))
        lines.append("")
    else:
        lines += ["Nothing to undo.", ""]
    if plan.left:
        lines.append(f"Left as they are ({len(plan.left)}; the {printable(plan.past.operation)}'s writes "
                     "stay in them):")
        for untouched in plan.left:
            lines.append(f"  ! {untouched.code}  {printable(untouched.path)}")
            lines.append(f"      {printable(untouched.reason)}")
        lines.append("")
    if plan.already:
        paths = [printable(u.path) for u in plan.already]
        more = f" and {len(paths) - ALREADY_SHOWN} more" if len(paths) > ALREADY_SHOWN else ""
        lines += [f"Already as before the {printable(plan.past.operation)} ({len(paths)}: gone, or holding "
                  f"their values from before; undone earlier, or never written): "
                  f"{', '.join(paths[:ALREADY_SHOWN])}{more}", ""]
    if not plan.found and plan.untouched:
        lines += [f"Note: none of the {len(plan.untouched)} documents the journal's writes name exists in "
                  f"{printable(plan.source)}; if that is not expected, check the source (project, "
                  "database, FIRESTORE_EMULATOR_HOST).", ""]
    lines.append(plan.line())
    return "\n".join(lines) + "\n"


@singledispatch
def undo_text(op: UndoOp) -> list[str]:
    raise TypeError(f"no text renderer for {type(op).__name__}")


@undo_text.register
def _(op: DeleteDocumentOp) -> list[str]:
    fields = _fields_line(op.fields)
    return [f"  - delete  {printable(op.path)}  (created by the run)", f"      {fields}"]


@undo_text.register
def _(op: ClearFieldsOp) -> list[str]:
    lines = [f"  ~ restore {printable(op.path)}"]
    lines.extend(f"      {printable(field)}: {now} -> {to}"
                 for field, now, to in sorted(map(describe_change, op.changes)))
    return lines


def rollback_document(plan: RollbackPlan) -> Document:
    """A rollback plan for an incident ticket or a pull request: counts, the undo ops and the
    documents left, with IDs, field names and codes, and no document value."""
    operation = printable(plan.past.operation)
    items: list[Block | Table] = [Block((
        f"**{plan.line()}**", "",
        "| delete | restore | left as they are | already as before |", "|---:|---:|---:|---:|",
        f"| {plan.deletes} | {plan.restores} | {len(plan.left)} | {len(plan.already)} |", "",
        f"The {operation} recorded in {_code(plan.past.journal)}"
        + (f" ({len(plan.past.journals)} journals)" if plan.past.journals else "")
        + f" on {_code(plan.source)}, spec "
        f"{_code(plan.spec_name)} (sha256 {_code(plan.spec_sha256[:12])}).", ""))]
    if plan.ops:
        items.append(Table(f"Undo ({len(plan.ops)} document writes)",
                           ("| undo | document | link | fields |", "|---|---|---|---|"),
                           [undo_markdown(op) for op in plan.ops]))
    if plan.left:
        items.append(Table(f"Left as they are ({len(plan.left)})",
                           ("| code | document | why |", "|---|---|---|"),
                           [f"| {_code(u.code)} | {_code(u.path)} | {_code(u.reason)} |" for u in plan.left]))
    return Document(title=lambda part: f"### reconcile rollback: {_code(plan.past.journal)}{part}",
                    items=items, cut_note="the JSON report (`--format json`) has all.")


@singledispatch
def undo_markdown(op: UndoOp) -> str:
    raise TypeError(f"no markdown renderer for {type(op).__name__}")


@undo_markdown.register
def _(op: DeleteDocumentOp) -> str:
    return f"| delete | {_code(op.path)} | {'yes' if op.group else ''} | {len(op.fields)} fields |"


@undo_markdown.register
def _(op: ClearFieldsOp) -> str:
    changed = "; ".join(sorted(change.field for change in op.changes))
    return f"| restore | {_code(op.path)} | {'yes' if op.group else ''} | {_code(changed)} |"


def render_rollback_check(plan: RollbackPlan, check: RollbackCheck, fmt: str) -> str:
    """After the writes: JSON is the whole report (the plan and this check) as one document."""
    if fmt == "json":
        return to_json(rollback_data(plan, check))
    operation = printable(plan.past.operation)
    rows = [("Documents deleted", f"{check.deleted}  (gone)"),
            ("Documents restored", f"{check.restored}  (hold their values from before the {operation})"),
            ("Not as before", str(len(check.not_as_before))),
            ("Writes skipped", str(len(check.skipped))),
            ("Left as they are", str(len(check.left)))]
    lines = ["Validation (re-read after the rollback):"]
    lines += [f"  {name} {'.' * (28 - len(name))} {value}" for name, value in rows]
    lines += [f"  ! not as before: {printable(path)}: {printable(detail)}"
              for path, detail in check.not_as_before]
    lines += [f"  ! skipped {printable(r.op.path)}: {printable(r.reason)}" for r in check.skipped]
    if check.skipped:
        lines.append("  Skipped writes were not forced: the documents changed while the rollback ran. Run "
                     "the same rollback again to see them with why.")
    if check.changed_after:
        lines.append(f"  Written again by another writer after the rollback: {len(check.changed_after)} "
                     "document(s): " + ", ".join(map(printable, check.changed_after[:5]))
                     + (" …" if len(check.changed_after) > 5 else ""))
    done = f"Rollback: {check.deleted} deleted, {check.restored} restored"
    if check.complete:
        lines.append(f"{done}; every write of the {operation} is undone.")
    else:
        lines.append(f"{done}, {len(check.skipped)} skipped, {len(check.left)} left as they are; NOT every "
                     f"write of the {operation} is undone (see above).")
    return "\n".join(lines) + "\n"


# -- one table of formats ----------------------------------------------------------------------------
# Every command's --format choices come from these tables; an unknown name is a KeyError here and a
# usage error at the command line, never a quiet fallback to text.

PLAN_FORMATS = {
    "text": lambda plan, show_values: _plan_text(plan),
    "markdown": lambda plan, show_values: one_comment(plan_document(plan, show_values)),
    "json": lambda plan, show_values: dumps_plan(plan),
}

OUTLINE_FORMATS = {
    "text": _outline_text,
    "markdown": _outline_markdown,
}

COMPARISON_FORMATS = {
    "text": lambda c, show_values: _comparison_text(c),
    "markdown": lambda c, show_values: one_comment(comparison_document(c, show_values)),
    "json": lambda c, show_values: to_json(comparison_data(c)),
}

VERIFICATION_FORMATS = {
    "text": _verification_text,
    "json": lambda verification, verbose: to_json(verification_data(verification)),
}

ROLLBACK_FORMATS = {
    "text": _rollback_text,
    "markdown": lambda plan: one_comment(rollback_document(plan)),
    "json": lambda plan: to_json(rollback_data(plan)),
}

AUDIT_FORMATS = {
    "text": lambda report, show_values: _audit_text(report),
    "json": lambda report, show_values: to_json(report.as_data()),
    "html": audit_page,
}


# -- one series at a glance (reconcile series) ------------------------------------------------------

_STATE_WORDS = {STORED: "stored", TO_CREATE: "to be created", DUPLICATE: "duplicate", ID_TAKEN: "ID taken",
                OUT_OF_RANGE: "out of range", MISSING_WEEK: "missing"}
_LINK_WORDS = {LINKED: "", TO_LINK: " (to link)", TO_COMPLETE: " (to complete)"}


def render_series(t: Timelines, fmt: str, show_values: bool = False) -> str:
    return SERIES_FORMATS[fmt](t, show_values)


def _series_report_text(t: Timelines, show_values: bool) -> str:
    read = f", read at {format_timestamp(t.state.read_time)}" if t.state.read_time else ""
    lines = [f"Series of spec {printable(t.spec.name)} matching {printable(t.selection.text())} in "
             f"{printable(t.state.source)}{read}", ""]
    for series in t.shown:
        lines += _timeline_text(series, show_values)
        lines.append("")
    if t.matched > len(t.shown):
        lines += [f"… and {t.matched - len(t.shown)} more; narrow --select.", ""]
    creates = sum(w.state == TO_CREATE for s in t.shown for w in s.weeks)
    links = sum(w.link == TO_LINK for s in t.shown for w in s.weeks)
    lines.append(f"{len(t.shown)} of {_count(t.matched, 'matching series', 'matching series')} shown: "
                 f"{_count(creates, 'week')} to create, {_count(links, 'response')} to link.")
    return "\n".join(lines) + "\n"


def _timeline_text(s: Timeline, show_values: bool) -> list[str]:
    label = printable(s.label)
    if s.unusable is not None:
        return [f"{label}: cannot be planned, left untouched (no week is shown)",
                *_timeline_findings(((None, s.unusable), *((None, f) for f in s.findings)), show_values)]
    stored = sum(w.state == STORED for w in s.weeks)
    rows = [("week", "due (UTC)", "state", "document", "response", "finding")]
    for w in s.weeks:
        response = printable(w.response) + _LINK_WORDS[w.link or LINKED] if w.response else "-"
        rows.append((str(w.week), format_timestamp(w.due) if w.due else "-", _STATE_WORDS[w.state],
                     ", ".join(map(printable, w.documents)), response,
                     ", ".join(dict.fromkeys(f.code for f in w.findings)) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"{label}: {_count(s.length or 0, 'week')}, {stored} stored"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + row[-1] for row in rows]
    found = [(w.week, f) for w in s.weeks for f in w.findings] if show_values else []
    return lines + _timeline_findings((*found, *((None, f) for f in s.findings)), show_values)


def _timeline_findings(findings, show_values: bool) -> list[str]:
    lines = []
    for week, f in findings:
        where = f"week {week}: " if week is not None else ""
        lines.append(f"  ! {where}{f.code}  {printable(f.path)}")
        if show_values:
            lines.append(f"      {printable(f.message)}")
    return lines


SERIES_FORMATS = {
    "text": _series_report_text,
    "json": lambda t, show_values: to_json(timelines_data(t, show_values)),
}


# -- restore -----------------------------------------------------------------------------------------


def render_restore(plan: RestorePlan, fmt: str) -> str:
    """The restore plan, shown before any write (JSON: the report with a null ``"result"``)."""
    return RESTORE_FORMATS[fmt](plan)


def render_restored(plan: RestorePlan, check: RestoreCheck, fmt: str, verbose: bool = False) -> str:
    """After the writes: text, the check of the re-read (the plan was shown before); JSON, the whole
    report, plan and result, as one document. ``verbose``: every skipped write on its own line."""
    if fmt == "json":
        return to_json(restore_data(plan, check))
    return "\n".join(_restore_check_text(plan, check, verbose)) + "\n"


def _restore_header(plan: RestorePlan) -> str:
    made = f", made at {format_timestamp(plan.snapshot_read_time)}" if plan.snapshot_read_time else ""
    read = f"read at {format_timestamp(plan.read_time)}" if plan.read_time else "a new file"
    return (f"Restore {printable(plan.snapshot)} (sha256 {plan.snapshot_sha256[:12]}{made}) to "
            f"{printable(plan.target)}, {read}")


def _examples(paths: Sequence[str]) -> list[str]:
    return list(paths[:RESTORE_EXAMPLES])


def _restore_text(plan: RestorePlan) -> str:
    lines = [_restore_header(plan), ""]
    counts = plan.counts()
    if counts:
        rows = [("collection", "to create", "identical", "different")]
        rows += [(printable(name), str(c.create), str(c.identical), str(c.different))
                 for name, c in counts.items()]
        width = max(len(row[0]) for row in rows)
        lines += ["  " + row[0].ljust(width) + "".join(cell.rjust(11) for cell in row[1:]) for row in rows]
        lines.append("")
    else:
        lines += ["The snapshot holds no collection: nothing to restore.", ""]
    for kind, paths, marker, note in (
            ("identical", plan.identical, "=", "the snapshot's fields"),
            ("different", plan.different, "!", "other fields than the snapshot's; never overwritten")):
        if paths:
            lines.append(f"Present and {kind} ({len(paths)}; {note}, left as they are):")
            lines += [f"  {marker} {printable(path)}" for path in _examples(paths)]
            if len(paths) > RESTORE_EXAMPLES:
                lines.append(f"  … and {len(paths) - RESTORE_EXAMPLES} more")
            lines.append("")
    lines.append(plan.line())
    return "\n".join(lines) + "\n"


def _restore_check_text(plan: RestorePlan, c: RestoreCheck, verbose: bool) -> list[str]:
    yes = {True: "YES", False: "NO"}
    others = set(c.changed_by_others)
    changed_before = sum(path in others for path in (*plan.identical, *plan.different))
    rewritten = len(others) - changed_before
    rows = [
        ("Snapshot documents present", f"{yes[not c.missing]}  ({c.present} of {c.expected})"),
        ("Created as in the snapshot", f"{yes[not c.not_as_snapshot]}  ({c.as_snapshot} of {c.created} "
                                       "created" + (f"; {rewritten} written again by another writer since)"
                                                    if rewritten else ")")),
        ("Present before, unchanged", f"YES  ({c.unchanged} of {c.present_before}"
                                      + (f"; {changed_before} changed by another writer while the restore "
                                         "ran)" if changed_before else ")")),
        ("Writes skipped", str(len(c.skipped))),
    ]
    lines = ["Check (the target re-read after the writes):"]
    lines += [f"  {name} {'.' * (28 - len(name))} {value}" for name, value in rows]
    not_sent = {o.op.path for o in c.skipped}
    gone = [path for path in c.missing if path not in not_sent]  # the skipped are listed below
    for path in gone if verbose else gone[:SKIPS_NAMED]:
        lines.append(f"  ! missing: {printable(path)}: deleted by another writer while the restore ran")
    if len(gone) > SKIPS_NAMED and not verbose:
        lines.append(f"  ! … and {len(gone) - SKIPS_NAMED} more missing")
    for mismatch in c.not_as_snapshot:
        lines.append(f"  ! not as in the snapshot: {printable(mismatch.path)}: {printable(mismatch.detail)}")
    by_reason: dict[str, list[str]] = {}
    for result in c.skipped:
        by_reason.setdefault(result.reason, []).append(result.op.path)
    for reason, paths in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        if verbose or len(paths) <= SKIPS_NAMED:
            lines += [f"  ! skipped {printable(path)}: {printable(reason)}" for path in paths]
        else:
            lines.append(f"  ! skipped {len(paths)} writes: {printable(reason)} (e.g. "
                         f"{', '.join(map(printable, paths[:SKIPS_NAMED]))})")
    if c.skipped:
        lines.append("  Skipped writes were not forced: a document that exists is never overwritten."
                     + ("" if verbose else " --verbose lists each document."))
    if c.changed_by_others:
        lines.append(f"  Drift by another writer, not by this restore: {len(c.changed_by_others)} "
                     "document(s) changed while it ran: "
                     + ", ".join(map(printable, c.changed_by_others[:5]))
                     + (" …" if len(c.changed_by_others) > 5 else ""))
    problems = [f"{count} {text}" for count, text in ((len(c.skipped), "not created (never forced)"),
                                                      (len(gone), "deleted by another writer"),
                                                      (len(c.not_as_snapshot), "not as in the snapshot"))
                if count]
    verdict = ("complete, every document of the snapshot is present" if c.complete else
               f"NOT complete: {', '.join(problems)}; `--dry-run` shows what is still missing")
    lines.append(f"Restore: {c.created} created, {len(plan.identical)} identical, {len(plan.different)} "
                 f"different, {len(c.skipped)} skipped; {verdict}.")
    return lines


def restore_data(plan: RestorePlan, check: RestoreCheck | None = None) -> dict[str, Any]:
    """The JSON report (``formats.RESTORE``): paths and counts, no document value."""
    result = None
    if check is not None:
        result = {
            "expected": check.expected, "present": check.present, "missing": list(check.missing),
            "created": check.created, "as_snapshot": check.as_snapshot,
            "not_as_snapshot": [{"path": m.path, "detail": m.detail} for m in check.not_as_snapshot],
            "present_before": check.present_before, "unchanged": check.unchanged,
            "changed_by_others": list(check.changed_by_others),
            "skipped": [{"path": r.op.path, "reason": r.reason} for r in check.skipped],
            "complete": check.complete,
        }
    return {
        **RESTORE.header(),
        "snapshot": plan.snapshot,
        "snapshot_sha256": plan.snapshot_sha256,
        "snapshot_read_time": encode(plan.snapshot_read_time),
        "target": plan.target,
        "read_time": encode(plan.read_time),
        "collections": {name: {"create": c.create, "identical": c.identical, "different": c.different}
                        for name, c in plan.counts().items()},
        "summary": {"create": len(plan.creates), "identical": len(plan.identical),
                    "different": len(plan.different), "delete": 0, "overwrite": 0},
        "examples": {"identical": _examples(plan.identical), "different": _examples(plan.different)},
        "result": result,
    }


def _restore_markdown(plan: RestorePlan) -> str:
    rows = [f"| {_code(name)} | {c.create} | {c.identical} | {c.different} |"
            for name, c in plan.counts().items()]
    items: list[Block | Table] = [Block((f"**{plan.line()}**", ""))]
    if rows:
        items.append(Block(("| collection | to create | present, identical | present, different |",
                            "|---|---:|---:|---:|", *rows, "")))
    for kind, paths in (("identical", plan.identical), ("different", plan.different)):
        if paths:
            items.append(Block((f"Present and {kind}, left as they are: {codes(paths, RESTORE_EXAMPLES)}",
                                "")))
    read = f"read at {format_timestamp(plan.read_time)}" if plan.read_time else "a new file"
    items.append(Block((f"<sub>snapshot sha256 {_code(plan.snapshot_sha256[:12])}; target {read}</sub>",)))
    return one_comment(Document(title=lambda part: f"### reconcile restore: {_code(plan.snapshot)} to "
                                                   f"{_code(plan.target)}{part}",
                                items=items, cut_note=""))


RESTORE_FORMATS = {
    "text": _restore_text,
    "json": lambda plan: to_json(restore_data(plan)),
    "markdown": _restore_markdown,
}
