"""reconcile series: one series' weeks, as the plan sees them. Expectations are computed from the
builders' own dates and IDs, and checked against the plan itself, never copied from output."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from builders import (
    BASE_DUE,
    CHECKINS,
    DEMO,
    A,
    R,
    assignment,
    checkins,
    due,
    plan_of,
    reconcile,
    response,
    state,
    week_path,
    with_cadence,
)

from reconciler.errors import SelectionError
from reconciler.model import CreateDocumentOp
from reconciler.plan import build_plan
from reconciler.render import render_series
from reconciler.selection import Selection, parse_selection
from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.timeline import (
    DUPLICATE,
    ID_TAKEN,
    LINKED,
    OUT_OF_RANGE,
    STORED,
    TO_COMPLETE,
    TO_CREATE,
    TO_LINK,
    timelines,
)

LABEL = "clientId=c1 formId=f1"


def one(spec, *docs, select: str = "clientId=c1"):
    found = timelines(spec, state(*docs), parse_selection(select, spec.series.key))
    assert found.matched == 1 and len(found.shown) == 1
    return found.shown[0]


def states(series) -> dict[int, str]:
    return {w.week: w.state for w in series.weeks}


def test_a_complete_series_is_every_week_stored_with_the_cadence_dates():
    series = one(checkins(), assignment("a1", 1), assignment("a2", 2), assignment("a3", 3))
    assert series.label == LABEL and series.length == 3 and series.unusable is None
    assert [(w.week, w.due, w.state, w.documents, w.response, w.findings) for w in series.weeks] == [
        (1, BASE_DUE, STORED, ("a1",), None, ()),
        (2, datetime(2025, 1, 13, 9, 0, 0, 123456, tzinfo=UTC), STORED, ("a2",), None, ()),
        (3, datetime(2025, 1, 20, 9, 0, 0, 123456, tzinfo=UTC), STORED, ("a3",), None, ())]
    assert series.ops == ()


def test_missing_weeks_are_to_be_created_under_the_ids_the_plan_creates():
    spec = checkins()
    docs = (assignment("a1", 1, totalWeeks=5), assignment("a3", 3, totalWeeks=5))
    series = one(spec, *docs)
    assert states(series) == {1: STORED, 2: TO_CREATE, 3: STORED, 4: TO_CREATE, 5: TO_CREATE}
    to_create = {f"{A}/{w.documents[0]}" for w in series.weeks if w.state == TO_CREATE}
    assert to_create == {week_path(spec, 2), week_path(spec, 4), week_path(spec, 5)}
    creates = {op.path for op in plan_of(spec, *docs).ops if isinstance(op, CreateDocumentOp)}
    assert to_create == creates
    assert [w.due for w in series.weeks] == [due(week) for week in range(1, 6)]


def test_a_week_with_two_members_is_a_duplicate_with_its_finding():
    series = one(checkins(), assignment("a1", 1), assignment("b2", 2), assignment("a2", 2),
                 response("r2", 2))
    week = series.weeks[1]
    assert (week.state, week.documents, week.response) == (DUPLICATE, ("a2", "b2"), None)
    assert sorted(f.code for f in week.findings) == ["response.slot_blocked", "series.week_duplicate"]


def test_a_member_outside_1_to_n_is_a_row_of_its_own_without_a_date():
    series = one(checkins(), assignment("a1", 1), assignment("a2", 2), assignment("a3", 3),
                 assignment("a9", 9), assignment("a0", 0))
    assert states(series) == {0: OUT_OF_RANGE, 1: STORED, 2: STORED, 3: STORED, 9: OUT_OF_RANGE}
    for week in (series.weeks[0], series.weeks[-1]):
        assert week.due is None
        assert [f.code for f in week.findings] == ["assignment.week_out_of_range"]


def test_a_missing_week_whose_id_is_taken_says_so():
    spec = checkins()
    taken = week_path(spec, 2).partition("/")[2]
    series = one(spec, assignment("a1", 1), assignment("a3", 3), assignment(taken, 1, client="c2"))
    week = series.weeks[1]
    assert (week.state, week.documents) == (ID_TAKEN, (taken,))
    assert [f.code for f in week.findings] == ["assignment.id_taken"]


@pytest.mark.parametrize("docs, code", [
    ((assignment("a2", 2),), "series.base_missing"),
    ((assignment("a1", 1), assignment("b1", 1)), "series.base_ambiguous"),
    ((assignment("a1", 1, dueDate="soon"),), "series.base_due_invalid"),
])
def test_a_series_the_engine_cannot_plan_shows_its_finding_instead_of_weeks(docs, code):
    series = one(checkins(), *docs, response("r1", 1))
    assert series.weeks == () and series.length is None
    assert series.unusable.code == code
    assert [f.code for f in series.findings] == ["response.series_unusable"]


def test_linked_responses_and_the_ones_the_plan_links():
    spec = checkins()
    docs = (assignment("a1", 1, responseId="r1", totalWeeks=5), response("r1", 1, assignmentId="a1"),
            assignment("a2", 2), response("r2", 2),  # an existing week to link
            response("r3", 3),  # a week to create, created linked
            assignment("a4", 4, responseId="r4"), response("r4", 4))  # a half link to complete
    series = one(spec, *docs)
    links = {w.week: (w.response, w.link) for w in series.weeks}
    assert links == {1: ("r1", LINKED), 2: ("r2", TO_LINK), 3: ("r3", TO_LINK), 4: ("r4", TO_COMPLETE),
                     5: (None, None)}
    plan = plan_of(spec, *docs)
    linked = {op.path: op for op in plan.ops if op.group == op.path}
    assert {f"{A}/{w.documents[0]}" for w in series.weeks if w.link == TO_LINK} == set(linked)
    half = [op.path for op in plan.ops if op.group is None and op.path.startswith(R)]
    assert half == [f"{R}/r4"]


def linked_response(op) -> str:
    if isinstance(op, CreateDocumentOp):
        return op.fields["responseId"]
    return next(fill.value for fill in op.fills if fill.field == "responseId")


def test_on_the_demo_every_series_agrees_with_the_plan():
    """The parity check: for every series, the weeks to create are the plan's creates for it, and
    the links are the plan's links (member and response), nothing more, nothing less."""
    spec = checkins()
    data = SnapshotStore(DEMO).read(spec.collections)
    plan = build_plan(spec, data)
    found = timelines(spec, data, Selection(pairs=()), shown=10_000)
    assert found.matched == len(found.shown) > 20
    for series in found.shown:
        ops = [op for op in plan.ops if op.series == series.label]
        creates = {op.path for op in ops if isinstance(op, CreateDocumentOp)}
        assert {f"{A}/{w.documents[0]}" for w in series.weeks if w.state == TO_CREATE} == creates
        # A link's member op names its response (a response already naming the member has no op).
        plan_links = {(op.path, linked_response(op)) for op in ops if op.group == op.path}
        assert {(f"{A}/{w.documents[0]}", w.response) for w in series.weeks
                if w.link == TO_LINK} == plan_links
        partners = {o.path for o in ops if o.group is not None and o.path.startswith(R)}
        assert partners <= {f"{R}/{w.response}" for w in series.weeks if w.link == TO_LINK}
        findings = {(f.code, f.path) for f in plan.findings if f.series == series.label}
        shown = {(f.code, f.path) for f in (*series.findings, *(f for w in series.weeks for f in w.findings),
                                            *([series.unusable] if series.unusable else []))}
        assert shown == findings


def test_dates_come_from_the_cadence_rule_a_calendar_one_too():
    spec = with_cadence("every: {months: 1}\ntimezone: Europe/London")
    series = one(spec, assignment("a1", 1))
    # BASE_DUE is 2025-01-06 09:00 UTC, 09:00 GMT in London: the 6th of each month at 09:00 local.
    assert [w.due for w in series.weeks] == [BASE_DUE, BASE_DUE.replace(month=2), BASE_DUE.replace(month=3)]


def test_an_integer_key_part_matches_its_decimal_spelling():
    spec = checkins()
    docs = (assignment("a1", 1, client=7), assignment("b1", 1, client="7"), assignment("c1", 1, client="07"))
    found = timelines(spec, state(*docs), parse_selection("clientId=7", spec.series.key))
    assert found.matched == 2 and {s.key for s in found.shown} == {(7, "f1"), ("7", "f1")}
    def matched(select: str) -> int:
        return timelines(spec, state(*docs), parse_selection(select, spec.series.key)).matched

    assert [matched(s) for s in ("clientId=07,formId=f1", "clientId=7,formId=f2", "clientId=+7")] == [1, 0, 0]


@pytest.mark.parametrize("select, says", [
    ("coachId=x", '"coachId" is not a series key field'),
    ("clientId", "give FIELD=VALUE"),
    ("clientId=", "clientId has an empty value"),
    ("clientId=a,clientId=b", "clientId is given twice"),
    ("clientId=a,", "give FIELD=VALUE"),
])
def test_a_bad_selection_is_one_sentence(select, says):
    with pytest.raises(SelectionError, match=says):
        parse_selection(select, checkins().series.key)


def test_more_than_fifty_series_are_cut_with_a_note():
    spec = checkins()
    docs = [assignment(f"a{i}", 1, client=f"c{i:02d}") for i in range(53)]
    found = timelines(spec, state(*docs), parse_selection("formId=f1", spec.series.key))
    assert (found.matched, len(found.shown)) == (53, 50)
    assert "… and 3 more; narrow --select." in render_series(found, "text")


# -- the command ---------------------------------------------------------------------------------------


def write(tmp_path, *docs):
    path = tmp_path / "data.json"
    path.write_bytes(snapshot_bytes(state(*docs, source=str(path))))
    return path


def test_the_help_example_works_on_the_demo():
    result = reconcile("series", "--spec", CHECKINS, "--source", DEMO, "--select", "clientId=c01", "-q")
    assert result.returncode == 0, result.stderr
    example = "reconcile series --spec specs/checkins.yaml --source snapshots/demo.json --select clientId=c01"
    assert example in reconcile("series", "--help").stdout
    assert "clientId=c01 formId=f-weekly" in result.stdout and result.stderr == ""


@pytest.mark.parametrize("select", ["coachId=x", "clientId", "clientId=", "clientId=a,clientId=b"])
def test_a_bad_select_exits_1_with_one_sentence_and_reads_nothing(select, tmp_path):
    result = reconcile("series", "--spec", CHECKINS, "--source", tmp_path / "absent.json", "--select", select)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: --select") and result.stderr.count("\n") == 1


def test_select_is_required():
    result = reconcile("series", "--spec", CHECKINS, "--source", DEMO)
    assert result.returncode == 1 and "--select" in result.stderr and "Traceback" not in result.stderr


def test_no_matching_series_exits_1(tmp_path):
    result = reconcile("series", "--spec", CHECKINS, "--source", DEMO, "--select", "clientId=c99", "-q")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: no series matches clientId=c99 ")
    assert result.stderr.count("\n") == 1


def test_a_hostile_id_is_escaped_in_text_and_exact_in_json(tmp_path):
    hostile = "r\x1b[2J`rm -rf`\r\u202e"
    source = write(tmp_path, assignment("a1", 1, client="c\x07`x`"), response(hostile, 2, client="c\x07`x`"))
    text = reconcile("series", "--spec", CHECKINS, "--source", source, "--select", "clientId=c\x07`x`", "-q")
    assert text.returncode == 0, text.stderr
    assert not any(char in text.stdout for char in "\x1b\r\x07\u202e")
    assert "r\\x1b[2J`rm -rf`\\x0d\\u202e (to link)" in text.stdout
    assert "clientId=c\\x07`x` formId=f1" in text.stdout
    data = json.loads(reconcile("series", "--spec", CHECKINS, "--source", source, "--select",
                                "clientId=c\x07`x`", "--format", "json", "-q").stdout)
    assert data["format"] == "reconcile-series" and data["matched"] == 1
    week = data["series"][0]["weeks"][1]
    assert (week["state"], week["response"], week["link"]) == (TO_CREATE, hostile, TO_LINK)
    assert data["series"][0]["key"] == {"clientId": "c\x07`x`", "formId": "f1"}
