"""The spec language: the shipped specs are valid; every bad spec gets file:line:column and a fix."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from builders import CHECKINS, SESSIONS, cadence_text

from reconciler.errors import SpecError
from reconciler.spec import load_spec, schema

SHIPPED = CHECKINS.read_text()


@pytest.mark.parametrize("path", [CHECKINS, SESSIONS])
def test_the_shipped_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.link is not None and spec.cadence.every_days in (7, 14)


def test_the_shipped_schema_is_itself_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(schema())


def test_the_shipped_spec_points_editors_at_the_schema():
    assert SHIPPED.startswith("# yaml-language-server: $schema=../reconciler/schema/spec.schema.json")
    assert (CHECKINS.parent / "../reconciler/schema/spec.schema.json").resolve().is_file()


def problems_of(tmp_path, text: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    return raised.value.problems


def edit(old: str, new: str) -> str:
    assert old in SHIPPED, old
    return SHIPPED.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "needle", "words"), [
    ("every_days: 7", "every_days: 0", "every_days: 0", "every_days must be at least 1, found 0"),
    ("kind: cadence", "kind: cadense", "kind: cadense", "did you mean 'cadence'?"),
    ("default: 52", 'default: "52"', "default:", "must be an integer, found a string"),
    ("    order_by: submittedAt", "    order_by: submittedAt\n    colour: red", "colour: red",
     "unknown key 'colour'"),
    ("    week_field: recurringWeek\n    recurring_flag", "    week_feld: recurringWeek\n    recurring_flag",
     "week_feld", "did you mean 'week_field'?"),
    ("version: 1", "version: 2", "version: 2", "version must be 1"),
])
def test_schema_errors_name_the_place_and_what_to_write(tmp_path, old, new, needle, words):
    text = edit(old, new)
    problems = problems_of(tmp_path, text)
    assert any(words in p and f"bad.yaml:{line_of(text, needle)}:" in p for p in problems), problems


@pytest.mark.parametrize(("old", "new", "words"), [
    ("omit: [score, completedAt, createdAt]", "omit: [score, completedAt, createdAt, score]",
     "field 'score' is named twice; keep one"),
    ("omit: [score, completedAt, createdAt]", "omit: [score, completedAt, createdAt, status]",
     "field 'status' is named twice: in reset and in omit"),
    ("key: [clientId, formId]\n    week_field", "key: [clientId, clientId]\n    week_field",
     "field 'clientId' is named twice"),
    ("reset: {status: pending, responseId: null}", "reset: {status: pending}",
     "a new week must start unlinked: add 'responseId' to reset"),
    ("formResponses: [assignmentId]", "formResponses: []",
     "link.response_ref fills formResponses.assignmentId, but it is not an allowed fill"),
    ("[recurringWeek, responseId, status, score, completedAt]", "[responseId, status, score, completedAt]",
     "series.fill_base_week fills check_in_assignments.recurringWeek"),
    ("to: completed, from: [pending, overdue]", "to: completed, from: [pending, completed]",
     "a transition must move the status forward"),
    ("reset: {status: pending, responseId: null}",
     "reset: {status: pending, responseId: null, dueDate: null}",
     "'dueDate' is the cadence date, set by the engine"),
    ("  - id: cadence\n", "  - id: series\n", "rule id 'series' is used twice"),
    ("reference: [clients, forms]", "reference: [clients, formResponses]",
     "reference collections are read only"),
    ("    collection: formResponses", "    collection: check_in_assignments",
     "the responses' collection must differ"),
])
def test_semantic_errors_name_the_place_and_what_to_write(tmp_path, old, new, words):
    problems = problems_of(tmp_path, edit(old, new))
    assert any(words in p and "bad.yaml:" in p for p in problems), problems


def test_a_missing_rule_kind_is_named(tmp_path):
    start = SHIPPED.index("  - id: cadence")
    end = SHIPPED.index("  # A missing week is created")
    problems = problems_of(tmp_path, SHIPPED[:start] + SHIPPED[end:])
    assert any("no 'cadence' rule" in p for p in problems)


def test_a_second_rule_of_one_kind_is_refused(tmp_path):
    extra = "  - id: cadence2\n    kind: cadence\n    field: dueDate\n    every_days: 14\n"
    problems = problems_of(tmp_path, SHIPPED + extra)
    assert any("a second 'cadence' rule" in p for p in problems)


def test_every_problem_is_reported_at_once(tmp_path):
    text = edit("every_days: 7", "every_days: 0").replace("kind: new_week", "kind: new_wek")
    assert len(problems_of(tmp_path, text)) == 2


def test_a_key_written_twice_in_yaml_is_refused(tmp_path):
    text = edit("    every_days: 7", "    every_days: 7\n    every_days: 14")
    [problem] = problems_of(tmp_path, text)
    assert f"bad.yaml:{line_of(text, 'every_days: 14')}:5: key 'every_days' is named twice" in problem


@pytest.mark.parametrize(("text", "words"), [
    ("rules: [\n", "malformed YAML"),
    ("", "the spec is empty"),
    ("- just\n- a list\n", "the spec must be an object"),
    ("version: 1\nname: x\n", "missing the key 'rules'"),
    ("\x00", "not a YAML text"),
])
def test_unreadable_specs_get_one_clear_sentence(tmp_path, text, words):
    problems = problems_of(tmp_path, text)
    assert any(words in p for p in problems), problems


def test_a_missing_spec_file_says_so(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_the_schema_accepts_exactly_what_the_loader_accepts_for_the_shipped_spec():
    data = yaml.safe_load(SHIPPED)
    jsonschema.validate(data, schema())
    assert json.loads(json.dumps(data)) == data  # plain JSON data: nothing YAML-only in a spec


def test_a_spec_with_a_thousand_problems_lists_the_first_ones_only(tmp_path):
    from reconciler.errors import SpecError
    from reconciler.spec import load_spec

    path = tmp_path / "many.yaml"
    path.write_text("version: 1\nname: x\nrules:\n" + "".join(f"  - {{id: r{n}, kind: nope}}\n"
                                                             for n in range(1000)))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert len(raised.value.problems) >= 1000
    assert message.count("\n") == SpecError.SHOWN + 1 and message.endswith("more; fix these first")


# -- the cadence's two forms ---------------------------------------------------------------------------

@pytest.mark.parametrize(("lines", "fields"), [
    ("every: {weeks: 1}\ntimezone: Europe/London",
     {"every_days": None, "unit": "weeks", "count": 1, "timezone": "Europe/London"}),
    ("every: {weeks: 2}", {"every_days": None, "unit": "weeks", "count": 2, "timezone": None}),
    ("every: {days: 3660}\ntimezone: America/New_York",
     {"every_days": None, "unit": "days", "count": 3660, "timezone": "America/New_York"}),
    ("every: {months: 120}\ntimezone: UTC",
     {"every_days": None, "unit": "months", "count": 120, "timezone": "UTC"}),
    ("every_days: 7", {"every_days": 7, "unit": None, "count": 0, "timezone": None}),
])
def test_a_cadence_is_exact_days_or_one_calendar_step(tmp_path, lines, fields):
    path = tmp_path / "good.yaml"
    path.write_text(cadence_text(lines))
    cadence = load_spec(path).cadence
    assert {name: getattr(cadence, name) for name in fields} == fields


@pytest.mark.parametrize(("lines", "needle", "words"), [
    ("every_days: 7\nevery: {weeks: 1}", "every: {weeks",
     "a cadence has every_days (exact 24-hour days in UTC) or every (calendar steps), not both; keep one"),
    ("", "- id: cadence",
     "the cadence rule needs every_days (exact 24-hour days, e.g. `every_days: 7`) or every"),
    ("timezone: Europe/London", "- id: cadence", "the cadence rule needs every_days"),
    ("every_days: 7\ntimezone: Europe/London", "timezone:",
     "timezone applies to `every` only, since every_days counts exact 24-hour days in UTC; "
     "write `every: {days: N}`"),
    ("every: {weeks: 1}\ntimezone: Europe/Londn", "timezone:",
     "timezone 'Europe/Londn' of rule 'cadence' is not a known IANA time zone; did you mean "
     "'Europe/London'?"),
    ("every: {weeks: 1}\ntimezone: Mars/Olympus_Mons", "timezone:",
     "timezone 'Mars/Olympus_Mons' of rule 'cadence' is not a known IANA time zone; write a name such "
     "as Europe/London"),
    ("every: {weeks: 1}\ntimezone: ../../etc/passwd", "timezone:", "is not a known IANA time zone"),
    ("every: {weeks: 1}\ntimezone: /usr/share/zoneinfo/UTC", "timezone:", "is not a known IANA time zone"),
    ("every: {weeks: 1}\ntimezone: right/UTC", "timezone:", "is not a known IANA time zone"),
    ("every: {weeks: 1}\ntimezone: Europe/London/", "timezone:", "is not a known IANA time zone"),
    ("every: {weeks: 1}\ntimezone: localtime", "timezone:",
     "timezone of rule 'cadence' is 'localtime', the zone of the machine that runs it"),
    ("every: {weeks: 1}\ntimezone: ''", "timezone:", "rules[1].timezone must not be empty"),
    ("every: {weeks: 1}\ntimezone: 1", "timezone:", "rules[1].timezone must be a string, found an integer"),
    ("every: {weeks: 1, days: 2}", "every:", "rules[1].every has 2 keys (weeks, days), at most 1 allowed"),
    ("every: {}", "every:", "rules[1].every must not be empty (one calendar step: days, weeks or months"),
    ("every: {week: 1}", "every:", "unknown key 'week' (did you mean 'weeks'?)"),
    ("every: 7", "every:", "rules[1].every must be an object, found an integer 7"),
    ("every: {weeks: true}", "every:", "rules[1].every.weeks must be an integer, found a boolean true"),
    ("every: {weeks: 2.0}", "every:", "rules[1].every.weeks must be an integer, found a number 2.0"),
    ("every: {weeks: 0}", "every:", "rules[1].every.weeks must be at least 1, found 0"),
    ("every: {days: 3661}", "every:", "rules[1].every.days must be at most 3660, found 3661"),
    ("every: {weeks: 521}", "every:", "rules[1].every.weeks must be at most 520, found 521"),
    ("every: {months: 121}", "every:", "rules[1].every.months must be at most 120, found 121"),
    ("every: {months: -1}", "every:", "rules[1].every.months must be at least 1, found -1"),
])
def test_a_bad_cadence_is_one_sentence_at_its_place(tmp_path, lines, needle, words):
    text = cadence_text(lines)
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}:{line_of(text, needle)}:"), problem
    assert words in problem and ". " not in problem.replace("e.g. ", "") and "\n" not in problem, problem
