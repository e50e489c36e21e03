"""Reviewing a plan in a pull request: the comment's layout, its split into parts that each fit one
GitHub comment, and the impact of a spec change (plan --compare-spec)."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest
from builders import CHECKINS, DEMO, reconcile

from bench.generate import Shape, generate
from reconciler.compare import compare
from reconciler.markdown import COMMENT_LIMIT, PART_LIMIT, Block, Document, Table, code, one_comment, split
from reconciler.model import CreateDocumentOp
from reconciler.plan import build_plan
from reconciler.render import render_comparison, render_plan, render_plan_parts
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec, parse_spec

ALIGNMENT = re.compile(r"\|(-{3,}:?\|)+")
OP_ROW = re.compile(r"\| (?:create|fill) \| `([^`]+)` \|")  # a row of the table of every write


@cache
def big_plan():
    """A 200-client database: about 5,000 writes, far more than one comment holds."""
    return build_plan(load_spec(CHECKINS), generate(Shape(clients=200)))


def check_valid_on_its_own(part: str) -> None:
    """Every <details> closed in the part that opens it, not nested; every table starts with its
    header and alignment rows in this part."""
    depth = 0
    for tag in re.findall(r"</?details>", part):
        depth += 1 if tag == "<details>" else -1
        assert depth in (0, 1), "a <details> is nested or closed before it opens"
    assert depth == 0, "a <details> is left open at the end of the part"
    lines = part.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and (index == 0 or not lines[index - 1].startswith("|")):
            assert index + 1 < len(lines) and ALIGNMENT.fullmatch(lines[index + 1]), \
                f"a table without its header at line {index + 1}: {line[:80]}"


def test_the_parts_of_a_200_client_plan_each_fit_a_comment_and_hold_every_write_once():
    plan = big_plan()
    assert len(plan.ops) > 3000
    parts = render_plan_parts(plan)
    assert len(parts) >= 2
    for index, part in enumerate(parts, 1):
        assert len(part) <= PART_LIMIT < COMMENT_LIMIT
        assert part.startswith(f"### reconcile plan: `checkins` on `{plan.source}` (part {index} of "
                               f"{len(parts)})\n")
        check_valid_on_its_own(part)
    rows = [line for part in parts for line in part.splitlines() if OP_ROW.match(line)]
    assert sorted(rows) == sorted({row for row in rows})  # no row twice
    written = {OP_ROW.match(row).group(1) for row in rows}
    assert written == {op.path for op in plan.ops}
    finding_rows = [line for part in parts for line in part.splitlines()
                    if re.match(r"\| `[a-z]+\.[a-z_]+` \| `", line) and "docs/findings.md" in line]
    assert len(finding_rows) == len(plan.findings)
    assert "(continued)</summary>" in "".join(parts[1:])  # the changes table goes on in the next part


def test_one_comment_cuts_the_long_tables_and_says_where_to_see_every_row():
    plan = big_plan()
    comment = render_plan(plan, "markdown")
    assert len(comment) <= PART_LIMIT
    check_valid_on_its_own(comment)
    cut = re.search(r"… and (\d+) more rows; `--split DIR` writes every row", comment)
    assert cut, "the cut is said"
    shown = sum(bool(OP_ROW.match(line)) for line in comment.splitlines())
    assert shown + int(cut.group(1)) == len(plan.ops)


def test_the_summary_comes_first_with_tables_by_rule_collection_series_and_finding_code():
    plan = build_plan(load_spec(CHECKINS), SnapshotStore(DEMO).read())
    comment = render_plan(plan, "markdown")
    order = [comment.index(text) for text in (
        "**Plan: 379 to create, 17 to link, 2 to fill; 0 to delete, 0 to overwrite.**",
        "| rule | documents created | documents filled |", "| collection | documents created |",
        "<summary>By series (", "| finding (left untouched) | count | documents |",
        "<summary>Changes (407 document writes)</summary>", "<summary>Findings (21)</summary>")]
    assert order == sorted(order)
    creates = sum(isinstance(op, CreateDocumentOp) for op in plan.ops)
    assert f"| `series.new_week` | {creates} | 0 |" in comment
    # the busiest series first; its row counts what the plan holds for it
    first = re.search(r"<summary>By series.*?\n\n.*?\n.*?\n(\| .*)", comment, re.S).group(1)
    label = re.match(r"\| `([^`]+)` \| (\d+) \|", first)
    assert int(label.group(2)) == sum(isinstance(op, CreateDocumentOp) and op.series == label.group(1)
                                      for op in plan.ops)
    by_code = re.search(r"\| `response.duplicate` \| (\d+) \| (.*) \|", comment)
    assert int(by_code.group(1)) == sum(f.code == "response.duplicate" for f in plan.findings)


def test_a_table_longer_than_a_part_is_split_with_its_header_repeated():
    rows = [f"| {code(f'row {n}' + 'x' * 80)} |" for n in range(400)]
    document = Document(title=lambda part: f"# t{part}", items=[
        Block(("intro", "")), Table("Rows", ("| r |", "|---|"), rows, left_out="… and 3 more."),
        Block(("outro",))], cut_note="see all")
    parts = split(document, limit=5_000)
    assert len(parts) > 5 and all(len(part) <= 5_000 for part in parts)
    for part in parts:
        check_valid_on_its_own(part)
    joined = "".join(parts)
    assert [row for row in joined.splitlines() if row.startswith("| `")] == rows
    assert joined.count("… and 3 more.") == 1 and parts[-1].rstrip().endswith("outro")
    cut = one_comment(document, limit=5_000)
    assert len(cut) <= 5_000 and "more rows; see all" in cut


# -- the impact of a spec change ---------------------------------------------------------------------

SPEC_TEXT = CHECKINS.read_text()


def changed_spec(old: str, new: str) -> str:
    assert old in SPEC_TEXT
    return SPEC_TEXT.replace(old, new)


def comparison(new_text: str):
    old_spec, new_spec = load_spec(CHECKINS), parse_spec(new_text.encode(), "new.yaml")
    state = SnapshotStore(DEMO).read()
    return compare(build_plan(old_spec, state), build_plan(new_spec, state))


def test_a_cadence_change_flags_every_existing_due_date_that_disagrees():
    c = comparison(changed_spec("every_days: 7", "every_days: 14"))
    state = SnapshotStore(DEMO).read()
    spec = load_spec(CHECKINS)
    # Independently: the existing non-base weeks whose due date followed the 7-day cadence
    expected = set()
    bases = {}
    for doc in state.documents("check_in_assignments").values():
        if doc.fields.get("recurringWeek") == 1:
            bases.setdefault((doc.fields.get("clientId"), doc.fields.get("formId")), []).append(doc)
    for doc in state.documents("check_in_assignments").values():
        week, key = doc.fields.get("recurringWeek"), (doc.fields.get("clientId"), doc.fields.get("formId"))
        if type(week) is int and week > 1 and len(bases.get(key, ())) == 1:
            start = bases[key][0].fields["dueDate"]
            total = bases[key][0].fields.get("totalWeeks")
            if hasattr(start, "tzinfo") and (type(total) is not int or week <= total) \
                    and doc.fields.get("dueDate") == spec.cadence.due(start, week):
                expected.add(doc.path)
    decide = c.needs_decision()
    assert set(decide) == {"assignment.due_mismatch"}
    assert {f.path for f in decide["assignment.due_mismatch"]} == expected and len(expected) >= 10
    # the same weeks are still created, at other dates: changed, not added or removed
    assert not c.added and not c.removed
    created = {op.path for op in c.new.ops if isinstance(op, CreateDocumentOp)}
    assert {new.path for _, new in c.changed} >= created
    markdown = render_comparison(c, "markdown")
    first_screen = markdown[:markdown.index("#### The plan with the new spec")]
    assert f"{len(expected)} existing documents will disagree with the new spec" in first_screen
    assert "Needs a decision by a person: the tool will not change existing documents." in first_screen
    row = (f"| existing due dates disagree with the new cadence | `assignment.due_mismatch` | "
           f"{len(expected)} |")
    assert row in first_screen


def test_a_shorter_default_length_removes_writes_and_leaves_weeks_outside_the_series():
    c = comparison(changed_spec("length: {field: totalWeeks, default: 52}", "length: {default: 2}"))
    assert c.removed and not c.added
    assert all(isinstance(op, CreateDocumentOp) and op.rules == ("series.new_week",) or op.group
               for op in c.removed)
    assert "assignment.week_out_of_range" in c.needs_decision()
    text = render_comparison(c, "text")
    assert "existing weeks fall outside the series' length (assignment.week_out_of_range): " in text


def test_the_same_spec_does_nothing_and_says_so():
    c = comparison(SPEC_TEXT)
    assert not c.differs and not c.needs_decision()
    assert "This change does nothing to this data" in render_comparison(c, "markdown")


def test_compare_on_the_command_line_exit_codes_json_and_split(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text(changed_spec("every_days: 7", "every_days: 14"))
    args = ("plan", "--spec", new, "--compare-spec", CHECKINS, "--source", DEMO, "--quiet")
    run = reconcile(*args, "--detailed-exitcode", "--format", "json", "--out", tmp_path / "plan.json")
    assert run.returncode == 2, run.stderr
    data = json.loads(run.stdout)
    assert data["format"] == "reconcile-comparison" and data["format_version"] == "1.0"
    assert data["new"]["spec"]["path"] == str(new) and data["differs"] is True
    [decision] = data["needs_decision"]
    assert decision["code"] == "assignment.due_mismatch" and decision["count"] == len(decision["paths"])
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["spec"]["path"] == str(new)  # --out saves the new spec's plan
    same = reconcile("plan", "--spec", CHECKINS, "--compare-spec", CHECKINS, "--source", DEMO, "--quiet",
                     "--detailed-exitcode")
    assert same.returncode == 0, same.stderr
    parts = tmp_path / "comment"
    split_run = reconcile(*args, "--format", "markdown", "--split", parts)
    assert split_run.returncode == 0 and split_run.stdout == ""
    written = sorted(parts.iterdir())
    assert [p.name for p in written] == [f"part-{n:02d}.md" for n in range(1, len(written) + 1)]
    assert all(len(p.read_text()) <= PART_LIMIT for p in written)
    assert "Needs a decision by a person" in written[0].read_text()


@pytest.mark.parametrize(("args", "words"), [
    (("--format", "text", "--split", "{tmp}/d"), "--split writes pull-request comments: give --format"),
    (("--format", "markdown", "--split", "{tmp}/full"), "is not empty; give a new or empty directory"),
    (("--format", "markdown", "--split", "{tmp}/file"), "is a file"),
    (("--compare-spec", "{tmp}/missing.yaml"), "missing.yaml"),
])
def test_split_and_compare_refuse_bad_input_in_one_sentence(tmp_path, args, words):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "part-01.md").write_text("an earlier run")
    (tmp_path / "file").write_text("x")
    run = reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--quiet",
                    *(arg.format(tmp=tmp_path) for arg in args))
    assert run.returncode == 1 and words in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert (tmp_path / "full" / "part-01.md").read_text() == "an earlier run"


def test_show_splits_a_saved_plan_like_plan_does(tmp_path):
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--out", plan_file, "-q").returncode == 0
    shown = reconcile("show", plan_file, "--format", "markdown", "--split", tmp_path / "parts")
    planned = reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--format", "markdown", "-q",
                        "--split", tmp_path / "planned")
    assert shown.returncode == planned.returncode == 0, shown.stderr + planned.stderr
    assert [p.read_text() for p in sorted((tmp_path / "parts").iterdir())] == \
        [p.read_text() for p in sorted((tmp_path / "planned").iterdir())]


def test_a_link_rule_change_shows_which_links_move():
    c = comparison(changed_spec("order_by: submittedAt", "order_by: createdAt"))
    assert c.differs
    moved = {op.path for op in c.removed} | {f.path for f in c.findings_added}
    assert moved and all(path.startswith("formResponses/") for path in moved)
    assert {f.code for f in c.findings_added} == {"response.duplicate"}
    assert {f.code for f in c.findings_removed} == {"response.duplicate"}


def test_an_unknown_format_is_an_error_not_text():
    plan = build_plan(load_spec(CHECKINS), SnapshotStore(DEMO).read())
    with pytest.raises(KeyError):
        render_plan(plan, "html")
    with pytest.raises(KeyError):
        render_comparison(compare(plan, plan), "yaml")
    run = reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--format", "html")
    assert run.returncode == 1 and "'html' is not one of 'text', 'markdown', 'json'" in run.stderr
