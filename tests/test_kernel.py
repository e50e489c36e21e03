"""Rules 1-8 of DESIGN.md on small hand-built states, each checked against the whole expected plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from builders import (
    BASE_DUE,
    DROP,
    UPDATED,
    A,
    R,
    assignment,
    due,
    plan_of,
    response,
    week_path,
    with_cadence,
)

from reconciler.model import CreateDocumentOp, FieldFill, FillFieldsOp, StatusTransition
from reconciler.values import MISSING, GeoPoint, Reference, show


def codes(plan) -> list[tuple[str, str]]:
    return [(f.code, f.path) for f in plan.findings]


def new_week(spec, week: int, key=("c1", "f1"), total=3, group=False, **extra) -> CreateDocumentOp:
    """The create op rule 5 prescribes for the default base built by ``assignment``."""
    fields = {"clientId": key[0], "formId": key[1], "isRecurring": True, "recurringWeek": week,
              "totalWeeks": total, "dueDate": due(week), "status": "pending", "responseId": None}
    fields.update(extra)
    path = week_path(spec, week, key)
    rules = ("link.pair", "series.new_week") if group else ("series.new_week",)
    return CreateDocumentOp(path=path, fields=fields, rules=rules, group=path if group else None,
                            series=f"clientId={key[0]} formId={key[1]}")


S1 = "clientId=c1 formId=f1"  # the series of the default base built by ``assignment``


# -- rules 1-3: series, base, length -----------------------------------------------------------------


def test_a_complete_series_needs_nothing(spec):
    plan = plan_of(spec, assignment("a1", 1), assignment("a2", 2), assignment("a3", 3))
    assert plan.ops == () and plan.findings == ()


def test_missing_weeks_are_created_up_to_total_weeks(spec):
    plan = plan_of(spec, assignment("a1", 1))
    assert plan.ops == tuple(sorted((new_week(spec, 2), new_week(spec, 3)), key=lambda o: o.path))
    assert plan.summary.line() == "Plan: 2 to create, 0 to link, 0 to fill; 0 to delete, 0 to overwrite."


def test_length_defaults_to_the_spec_when_total_weeks_is_missing(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=DROP))
    assert len(plan.ops) == 51
    assert {op.fields["recurringWeek"] for op in plan.ops} == set(range(2, 53))
    assert plan.findings == ()


@pytest.mark.parametrize("total", ["3", 0, -2, 2.0, True])
def test_a_total_weeks_that_is_not_a_positive_integer_uses_the_default_and_is_reported(spec, total):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=total))
    assert len(plan.ops) == 51
    assert codes(plan) == [("series.length_invalid", f"{A}/a1")]


def test_is_recurring_without_a_week_is_week_one_and_gets_the_week_filled(spec):
    plan = plan_of(spec, assignment("a1", DROP, totalWeeks=1))
    assert plan.ops == (FillFieldsOp(path=f"{A}/a1", update_time=UPDATED, series=S1, fills=(
        FieldFill(field="recurringWeek", value=1, rule="series.base_week", before=MISSING),)),)
    assert plan.summary.fill == 1


def test_a_null_week_on_a_recurring_base_is_empty_and_filled(spec):
    plan = plan_of(spec, assignment("a1", None, totalWeeks=1))
    assert plan.ops[0].fills == (FieldFill(field="recurringWeek", value=1, rule="series.base_week",
                                           before=None),)


def test_an_integer_week_makes_a_member_even_without_the_flag(spec):
    plan = plan_of(spec, assignment("a1", 1, isRecurring=DROP, totalWeeks=2))
    assert plan.ops == (CreateDocumentOp(
        path=week_path(spec, 2), rules=("series.new_week",), series=S1,
        fields={"clientId": "c1", "formId": "f1", "recurringWeek": 2, "totalWeeks": 2,
                "dueDate": due(2), "status": "pending", "responseId": None}),)


def test_non_recurring_assignments_are_ignored(spec):
    plan = plan_of(spec, assignment("a1", DROP, isRecurring=False), assignment("a2", DROP, isRecurring=DROP))
    assert plan.ops == () and plan.findings == ()


@pytest.mark.parametrize("week", ["2", 1.0, [1], {"w": 1}])
def test_a_recurring_assignment_with_a_week_that_is_not_an_integer_is_reported(spec, week):
    plan = plan_of(spec, assignment("a1", week))
    assert plan.ops == ()
    assert codes(plan) == [("assignment.week_invalid", f"{A}/a1")]


@pytest.mark.parametrize("client", [None, "", DROP, True, 1.5])
def test_a_recurring_assignment_without_a_usable_key_is_reported(spec, client):
    plan = plan_of(spec, assignment("a1", 1, client=client))
    assert plan.ops == ()
    assert codes(plan) == [("assignment.key_invalid", f"{A}/a1")]


def test_integer_keys_form_their_own_series(spec):
    plan = plan_of(spec, assignment("a1", 1, client=7, totalWeeks=2),
                   assignment("a2", 1, client="7", totalWeeks=2))
    assert sorted(repr(op.fields["clientId"]) for op in plan.ops) == ["'7'", "7"]
    assert len({op.path for op in plan.ops}) == 2


def test_a_series_without_a_base_is_reported_and_left_untouched(spec):
    plan = plan_of(spec, assignment("a2", 2), response("r2", 2))
    assert plan.ops == ()
    assert codes(plan) == [("response.series_unusable", f"{R}/r2"), ("series.base_missing", f"{A}/a2")]


def test_a_series_with_two_bases_is_reported_and_left_untouched(spec):
    plan = plan_of(spec, assignment("a1", 1), assignment("b1", DROP), response("r1", 1))
    assert plan.ops == ()
    assert codes(plan) == [("response.series_unusable", f"{R}/r1"), ("series.base_ambiguous", f"{A}/a1")]


@pytest.mark.parametrize("value", ["2025-01-06", None, DROP, 1736150400])
def test_a_base_whose_date_is_not_a_timestamp_leaves_the_series_untouched(spec, value):
    plan = plan_of(spec, assignment("a1", 1, dueDate=value))
    assert plan.ops == ()
    assert codes(plan) == [("series.base_due_invalid", f"{A}/a1")]


@pytest.mark.parametrize("total", [521, 10**6, 2**62])
def test_a_series_longer_than_the_spec_allows_is_a_finding_and_the_others_are_planned(spec, total):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=total), response("r1", 1),
                   assignment("b1", 1, client="c2"))
    assert codes(plan) == [("response.series_unusable", f"{R}/r1"),
                           ("series.length_over_limit", f"{A}/a1")]
    assert [op.path for op in plan.ops] == sorted(week_path(spec, w, ("c2", "f1")) for w in (2, 3))


@pytest.mark.parametrize(("start", "total"), [
    (datetime(9999, 12, 20, tzinfo=UTC), 3),  # week 3 is in year 10000
    (datetime(9999, 1, 1, tzinfo=UTC), 520),
])
def test_dates_past_what_a_timestamp_holds_are_a_finding_and_the_others_are_planned(spec, start, total):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=total, dueDate=start),
                   assignment("a2", 2, dueDate=start), assignment("b1", 1, client="c2"))
    assert codes(plan) == [("series.dates_out_of_range", f"{A}/a1")]
    assert [op.path for op in plan.ops] == sorted(week_path(spec, w, ("c2", "f1")) for w in (2, 3))


def test_the_last_representable_week_is_planned(spec):
    start = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - timedelta(days=14)
    plan = plan_of(spec, assignment("a1", 1, dueDate=start))
    assert plan.findings == ()
    assert max(op.fields["dueDate"] for op in plan.ops) == datetime(9999, 12, 31, 23, 59, 59, 999999,
                                                                    tzinfo=UTC)


# -- rules 4-6: cadence, new weeks, existing members ----------------------------------------------------


def test_due_dates_follow_the_cadence_exactly_to_the_microsecond(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=30))
    dues = {op.fields["recurringWeek"]: op.fields["dueDate"] for op in plan.ops}
    assert dues[2] == BASE_DUE + timedelta(days=7)
    assert dues[30] == BASE_DUE + timedelta(days=203)
    # 24-hour days in UTC: a daylight-saving change elsewhere never moves the hour.
    assert {d.hour for d in dues.values()} == {9} and {d.microsecond for d in dues.values()} == {123456}


LONDON_WEEKLY = with_cadence("every: {weeks: 1}\ntimezone: Europe/London")


def test_a_calendar_cadence_dates_new_weeks_and_checks_members_in_local_time():
    # Monday 23 March 2026 09:00 GMT; London's clocks go forward on Sunday 29 March, so Mondays
    # 09:00 are 08:00 UTC from the 30th.
    base = assignment("a1", 1, totalWeeks=4, dueDate=datetime(2026, 3, 23, 9, tzinfo=UTC))
    on_time = assignment("a3", 3, dueDate=datetime(2026, 4, 6, 8, tzinfo=UTC))
    exact_days = assignment("a4", 4, dueDate=datetime(2026, 4, 13, 9, tzinfo=UTC))
    plan = plan_of(LONDON_WEEKLY, base, on_time, exact_days)
    [created] = plan.ops
    assert (created.path, created.fields["recurringWeek"], created.fields["dueDate"]) == (
        week_path(LONDON_WEEKLY, 2), 2, datetime(2026, 3, 30, 8, tzinfo=UTC))
    [finding] = plan.findings
    assert (finding.code, finding.path, finding.message) == (
        "assignment.due_mismatch", f"{A}/a4", "week 4's dueDate is 2026-04-13T09:00:00.000000Z, the "
        "cadence says 2026-04-13T08:00:00.000000Z; left as it is")


@pytest.mark.parametrize(("step", "start", "total", "words"), [
    ("every: {months: 1}\ntimezone: Europe/London", datetime(9999, 6, 30, tzinfo=UTC), 12,
     "every month at local time in Europe/London"),
    ("every: {weeks: 2}", datetime(9999, 12, 1, tzinfo=UTC), 4, "every 2 weeks in UTC"),  # 6 weeks on
    # 02:00 UTC on 1 January of year 1 is still year 0 in New York: no later week has a local date.
    ("every: {weeks: 1}\ntimezone: America/New_York", datetime(1, 1, 1, 2, tzinfo=UTC), 2,
     "every week at local time in America/New_York"),
])
def test_a_calendar_cadence_past_what_a_timestamp_holds_is_a_finding_in_its_words(step, start, total, words):
    plan = plan_of(with_cadence(step), assignment("a1", 1, totalWeeks=total, dueDate=start))
    [finding] = plan.findings
    assert plan.ops == () and (finding.code, finding.message) == (
        "series.dates_out_of_range", f"week {total} would be due outside the years 1 to 9999 a timestamp "
        f"can hold (base dueDate {show(start)}, {words}); series left untouched")


def test_a_new_week_copies_the_base_except_resets_and_omitted_fields(spec):
    base = assignment("a1", 1, totalWeeks=2, status="completed", responseId="gone", score=9,
                      completedAt=due(1), createdAt=due(1), coachId="k9", formRef=Reference("forms/f1"),
                      place=GeoPoint(1.5, 2.5), meta={"tags": ["a", 1, 2.0]}, blob=b"\x00\x01")
    plan = plan_of(spec, base)
    create = next(op for op in plan.ops if isinstance(op, CreateDocumentOp))
    assert create == new_week(spec, 2, total=2, coachId="k9", formRef=Reference("forms/f1"),
                              place=GeoPoint(1.5, 2.5), meta={"tags": ["a", 1, 2.0]}, blob=b"\x00\x01")


def test_new_week_ids_are_deterministic_and_distinct_per_series_and_week(spec):
    first = plan_of(spec, assignment("a1", 1), assignment("b1", 1, client="c2"))
    second = plan_of(spec, assignment("b1", 1, client="c2"), assignment("a1", 1))
    assert [op.path for op in first.ops] == [op.path for op in second.ops]
    assert len({op.path for op in first.ops}) == 4


def test_an_id_already_used_by_another_document_is_not_created_and_blocks_its_slot(spec):
    taken = assignment(week_path(spec, 2).split("/")[1], DROP, isRecurring=False)
    plan = plan_of(spec, assignment("a1", 1), taken, response("r2", 2))
    assert [op.path for op in plan.ops] == [week_path(spec, 3)]
    assert codes(plan) == [("assignment.id_taken", week_path(spec, 2)), ("response.slot_blocked", f"{R}/r2")]


def test_a_wrong_due_date_is_reported_never_corrected(spec):
    plan = plan_of(spec, assignment("a1", 1), assignment("a2", 2, dueDate=due(2) + timedelta(seconds=1)),
                   assignment("a3", 3))
    assert plan.ops == ()
    assert codes(plan) == [("assignment.due_mismatch", f"{A}/a2")]


def test_a_member_with_a_bad_date_still_holds_its_week_and_can_be_linked(spec):
    plan = plan_of(spec, assignment("a1", 1), assignment("a2", 2, dueDate="soon"), assignment("a3", 3),
                   response("r2", 2, assignmentId=None))
    assert codes(plan) == [("assignment.due_invalid", f"{A}/a2")]
    assert [op.path for op in plan.ops] == [f"{A}/a2", f"{R}/r2"]


def test_a_week_with_two_members_is_present_reported_and_never_linked(spec):
    plan = plan_of(spec, assignment("a1", 1), assignment("a2", 2), assignment("b2", 2), assignment("a3", 3),
                   response("r2", 2))
    assert plan.ops == ()
    assert codes(plan) == [("response.slot_blocked", f"{R}/r2"), ("series.week_duplicate", f"{A}/a2")]


def test_members_and_responses_outside_the_series_length_are_reported(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), assignment("a9", 9), assignment("a0", 0),
                   response("r4", 4), response("r0", -1))
    assert plan.ops == ()
    assert codes(plan) == [("assignment.week_out_of_range", f"{A}/a0"),
                           ("assignment.week_out_of_range", f"{A}/a9"),
                           ("response.week_out_of_range", f"{R}/r0"),
                           ("response.week_out_of_range", f"{R}/r4")]


# -- rule 7: links -------------------------------------------------------------------------------------


def link_fills(response_id: str, score=8, submitted=None, status_before="pending"):
    fills = [FieldFill(field="responseId", value=response_id, rule="link.pair", before=None),
             FieldFill(field="score", value=score, rule="link.pair", before=MISSING),
             FieldFill(field="completedAt", value=submitted, rule="link.pair", before=MISSING)]
    return tuple(sorted(fills, key=lambda f: f.field))


def test_case_3_an_existing_assignment_and_its_response_are_linked_both_ways(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), response("r1", 1))
    submitted = due(1) - timedelta(hours=3)
    assert plan.ops == (
        FillFieldsOp(path=f"{A}/a1", update_time=UPDATED, group=f"{A}/a1", series=S1,
                     fills=link_fills("r1", submitted=submitted),
                     transition=StatusTransition(field="status", before="pending", to="completed",
                                                 rule="link.pair")),
        FillFieldsOp(path=f"{R}/r1", update_time=UPDATED, group=f"{A}/a1", series=S1,
                     fills=(FieldFill(field="assignmentId", value="a1", rule="link.pair", before=MISSING),)),
    )
    assert plan.summary.line() == "Plan: 0 to create, 1 to link, 0 to fill; 0 to delete, 0 to overwrite."


def test_case_1_a_response_for_a_missing_week_gets_its_week_created_already_linked(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=2), response("r2", 2, score=6.5))
    path = week_path(spec, 2)
    assert plan.ops == (
        new_week(spec, 2, total=2, group=True, responseId="r2", status="completed", score=6.5,
                 completedAt=due(2) - timedelta(hours=3)),
        FillFieldsOp(path=f"{R}/r2", update_time=UPDATED, group=path, series=S1,
                     fills=(FieldFill(field="assignmentId", value=path.split("/")[1], rule="link.pair",
                                      before=MISSING),)),
    )


def test_case_2_a_base_without_week_gets_the_week_and_its_link_in_one_write(spec):
    plan = plan_of(spec, assignment("a1", DROP, totalWeeks=1), response("r1", 1, score=None))
    base_op = plan.ops[0]
    assert base_op.path == f"{A}/a1" and base_op.group == f"{A}/a1"
    assert [(f.field, f.value, f.rule) for f in base_op.fills] == [
        ("completedAt", due(1) - timedelta(hours=3), "link.pair"), ("recurringWeek", 1, "series.base_week"),
        ("responseId", "r1", "link.pair")]
    assert plan.summary.line() == "Plan: 0 to create, 1 to link, 1 to fill; 0 to delete, 0 to overwrite."


def test_case_4_several_responses_link_the_latest_and_report_the_others(spec):
    early = response("r-early", 1, submittedAt=due(1) - timedelta(days=2))
    late = response("r-late", 1, submittedAt=due(1) - timedelta(hours=1))
    junk = response("r-junk", 1, submittedAt="yesterday")
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), early, late, junk)
    assert plan.ops[0].fills[1] == FieldFill(field="responseId", value="r-late", rule="link.pair",
                                             before=None)
    assert [op.path for op in plan.ops] == [f"{A}/a1", f"{R}/r-late"]
    assert codes(plan) == [("response.duplicate", f"{R}/r-early"), ("response.duplicate", f"{R}/r-junk")]


def test_case_4_equal_times_go_to_the_larger_document_id(spec):
    same = due(1) - timedelta(hours=1)
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), response("rA", 1, submittedAt=same),
                   response("rB", 1, submittedAt=same))
    assert plan.ops[1].path == f"{R}/rB"


def test_a_response_already_naming_the_assignment_is_preferred_over_a_later_one(spec):
    named = response("r-named", 1, assignmentId="a1", submittedAt=due(1) - timedelta(days=3))
    later = response("r-later", 1)
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), named, later)
    assert [op.path for op in plan.ops] == [f"{A}/a1"]  # the response's side is already there
    assert plan.ops[0].group == f"{A}/a1"
    assert codes(plan) == [("response.duplicate", f"{R}/r-later")]


def test_a_half_link_from_the_assignment_is_completed_on_the_response(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, responseId="r1", status="completed"),
                   response("r1", 1, assignmentId=""), response("r1b", 1))
    assert plan.ops == (FillFieldsOp(path=f"{R}/r1", update_time=UPDATED, series=S1, fills=(
        FieldFill(field="assignmentId", value="a1", rule="link.complete_half_link", before=""),)),)
    assert codes(plan) == [("response.duplicate", f"{R}/r1b")]
    assert plan.summary.line() == "Plan: 0 to create, 0 to link, 1 to fill; 0 to delete, 0 to overwrite."


def test_an_assignment_linked_to_a_response_outside_its_slot_is_reported(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, responseId="elsewhere"), response("r1", 1))
    assert plan.ops == ()
    assert codes(plan) == [("assignment.response_foreign", f"{A}/a1"), ("response.duplicate", f"{R}/r1")]


@pytest.mark.parametrize("ref", ["other-assignment", 42])
def test_a_response_naming_another_document_is_a_conflict_and_untouched(spec, ref):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), response("r1", 1, assignmentId=ref))
    assert plan.ops == ()
    assert codes(plan) == [("response.link_conflict", f"{R}/r1")]


def test_a_fully_linked_pair_needs_nothing(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, responseId="r1", status="completed"),
                   response("r1", 1, assignmentId="a1"))
    assert plan.ops == () and plan.findings == ()


@pytest.mark.parametrize(("status", "fill", "transition"), [
    ("pending", None, ("pending", "completed")),
    ("overdue", None, ("overdue", "completed")),
    (DROP, (MISSING, "completed"), None),
    (None, (None, "completed"), None),
    ("", ("", "completed"), None),
    ("completed", None, None),
    ("cancelled", None, None),
])
def test_status_moves_to_completed_only_from_pending_overdue_or_empty(spec, status, fill, transition):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, status=status), response("r1", 1))
    op = plan.ops[0]
    status_fills = [(f.before, f.value) for f in op.fills if f.field == "status"]
    assert status_fills == ([fill] if fill else [])
    assert (op.transition and (op.transition.before, op.transition.to)) == (transition or None)


@pytest.mark.parametrize(("member_score", "response_score", "filled"), [
    (DROP, 7, 7), (None, 0, 0), ("", 7.5, 7.5), (5, 9, None), (DROP, None, None), (DROP, DROP, None),
])
def test_score_is_copied_only_into_an_empty_score_from_a_non_null_one(spec, member_score, response_score,
                                                                        filled):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, score=member_score),
                   response("r1", 1, score=response_score))
    scores = [f.value for f in plan.ops[0].fills if f.field == "score"]
    assert scores == ([] if filled is None else [filled])


def test_completed_at_is_never_overwritten(spec):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1, completedAt=due(1)), response("r1", 1))
    assert "completedAt" not in [f.field for f in plan.ops[0].fills]


@pytest.mark.parametrize(("changes", "code"), [
    ({"week": "1"}, "response.week_invalid"),
    ({"week": DROP}, "response.week_invalid"),
    ({"week": 1.0}, "response.week_invalid"),
    ({"client": None}, "response.key_invalid"),
    ({"form": "other"}, "response.series_missing"),
])
def test_responses_that_cannot_be_placed_are_reported_and_untouched(spec, changes, code):
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=1), response("r1", **changes))
    assert plan.ops == ()
    assert codes(plan) == [(code, f"{R}/r1")]


# -- rule 8: the shape of every op ---------------------------------------------------------------------


def test_no_op_can_hold_a_non_empty_before_value():
    with pytest.raises(ValueError, match="empty"):
        FieldFill(field="score", value=1, rule="x", before=3)


def test_a_status_transition_cannot_be_made_without_a_link():
    with pytest.raises(ValueError, match="link"):
        FillFieldsOp(path=f"{A}/a", update_time=UPDATED,
                     fills=(FieldFill(field="score", value=1, rule="x"),),
                     transition=StatusTransition(field="status", before="pending", to="completed", rule="x"))
