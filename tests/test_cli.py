"""The reconcile command end to end on snapshot files, as a user runs it (a real process each time)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import (
    CHECKINS,
    DEMO,
    SESSIONS,
    SESSIONS_DEMO,
    A,
    assignment,
    cadence_text,
    checkins,
    reconcile,
    response,
    state,
)

from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.spec import load_spec


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def demo(tmp_path) -> Path:
    copy = tmp_path / "demo.json"
    shutil.copyfile(DEMO, copy)
    return copy


def test_plan_shows_the_summary_and_writes_nothing(demo):
    before = digest(demo)
    run = reconcile("plan", "--spec", CHECKINS, "--source", demo)
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip().endswith(
        "Plan: 379 to create, 17 to link, 2 to fill; 0 to delete, 0 to overwrite.")
    assert digest(demo) == before


def test_detailed_exitcode_says_whether_there_are_changes(demo):
    assert reconcile("plan", "--spec", CHECKINS, "--source", demo, "--detailed-exitcode").returncode == 2
    assert reconcile("apply", "--spec", CHECKINS, "--source", demo, "--auto-approve").returncode == 0
    assert reconcile("plan", "--spec", CHECKINS, "--source", demo, "--detailed-exitcode").returncode == 0


def test_plan_apply_check_on_a_copy_of_the_demo_converges_with_nothing_lost(demo, tmp_path):
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", demo, "--out", plan_file).returncode == 0
    applied = reconcile("apply", plan_file)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for line in ("Responses preserved ......... YES  (35 of 35)", "Scores and dates preserved .. YES",
                 "Other values preserved ...... YES", "Links valid ................. YES  (17 made",
                 "Documents created ........... 379", "Writes still needed ......... 0",
                 "converged, nothing lost."):
        assert line in applied.stdout
    check = reconcile("check", "--spec", CHECKINS, "--source", demo)
    assert check.returncode == 0 and "No drift: converged." in check.stdout


def test_a_stale_saved_plan_is_skipped_not_forced_and_exits_2(live, tmp_path):
    """On a database (a snapshot file refuses a saved plan whose data changed: test_select.py),
    a saved plan applied a second time finds every write done, skips each, and says so briefly."""
    spec = load_spec(CHECKINS)
    live.load(SnapshotStore(DEMO).read(spec.collections))
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", plan_file).returncode == 0
    assert reconcile("apply", plan_file).returncode == 0
    again = reconcile("apply", plan_file)
    assert again.returncode == 2
    assert "nothing lost, NOT converged; 407 writes skipped: re-run plan" in again.stdout
    assert "converged, nothing lost" not in again.stdout
    skips = [line for line in again.stdout.splitlines() if "! skipped" in line]
    counted = [re.match(r"\s*! skipped (\d+) writes: ", line) for line in skips]
    assert len(skips) <= 3 and sum(int(m.group(1)) if m else 1 for m in counted) == 407
    assert any("writes: the document already exists (e.g. " in line for line in skips)
    verbose = reconcile("apply", plan_file, "--verbose")
    assert len([line for line in verbose.stdout.splitlines() if "! skipped" in line]) == 407


def test_check_reports_drift_and_names_it(demo, tmp_path):
    reconcile("apply", "--spec", CHECKINS, "--source", demo, "--auto-approve")
    data = json.loads(demo.read_text())
    created = sorted(k for k in data["collections"]["check_in_assignments"] if k.endswith("-w007"))[0]
    del data["collections"]["check_in_assignments"][created]  # deleted by hand
    demo.write_text(json.dumps(data))
    check = reconcile("check", "--spec", CHECKINS, "--source", demo)
    assert check.returncode == 2
    assert f"+ create check_in_assignments/{created}" in check.stdout
    assert "Drift: 1 week in 1 series (weeks_missing: weeks of a series are not stored" in check.stdout


def test_apply_refuses_without_a_terminal_and_writes_nothing(demo):
    before = digest(demo)
    run = reconcile("apply", "--spec", CHECKINS, "--source", demo, stdin="yes\n")
    assert run.returncode == 1
    assert run.stderr.strip() == ("error: refusing to apply without confirmation: standard input is not "
                                  "a terminal; review the plan and pass --auto-approve")
    assert digest(demo) == before


def test_json_and_markdown_plans(demo):
    as_json = reconcile("plan", "--spec", CHECKINS, "--source", demo, "--format", "json")
    assert json.loads(as_json.stdout)["summary"]["create"] == 379
    as_md = reconcile("plan", "--spec", CHECKINS, "--source", demo, "--format", "markdown")
    assert as_md.stdout.startswith("### reconcile plan: `checkins`")


def test_audit_reports_the_phase_one_counts(demo):
    run = reconcile("audit", "--spec", CHECKINS, "--source", demo, "--format", "json")
    report = json.loads(run.stdout)
    assert report["collections"] == {"check_in_assignments": 45, "formResponses": 35, "clients": 26,
                                     "forms": 3}
    assert report["series"]["missing_weeks"] == 379
    assert report["links"]["complete"] == 8
    assert len(report["findings"]) == 20


def test_validate(tmp_path):
    assert reconcile("validate", CHECKINS).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHECKINS.read_text().replace("every_days: 7", "every_days: 0"))
    run = reconcile("validate", bad)
    assert run.returncode == 1
    assert f"{bad}:" in run.stderr and "every_days must be at least 1, found 0" in run.stderr
    assert "Traceback" not in run.stderr


def test_validate_refuses_an_unknown_time_zone_in_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    cadence = "every: {weeks: 1}\n    timezone: Europe/Londn"
    bad.write_text(CHECKINS.read_text().replace("every_days: 7", cadence))
    run = reconcile("validate", bad)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].endswith(
        "timezone 'Europe/Londn' of rule 'cadence' is not a known IANA time zone; did you mean "
        "'Europe/London'?")


def test_a_weekly_london_cadence_across_the_clock_change_plans_applies_and_converges(tmp_path):
    """Monday 23 March 2026 09:00 in London is 09:00 UTC (GMT); the clocks go forward on Sunday 29
    March, so the next Mondays at 09:00 (BST) are 08:00 UTC. Week 2 gets the client's response."""
    spec = tmp_path / "london.yaml"
    spec.write_text(cadence_text("every: {weeks: 1}\ntimezone: Europe/London"))
    source = tmp_path / "data.json"
    base = datetime(2026, 3, 23, 9, tzinfo=UTC)
    source.write_bytes(snapshot_bytes(state(assignment("a1", 1, totalWeeks=3, dueDate=base),
                                            response("r2", 2))))
    plan_file = tmp_path / "plan.json"
    planned = reconcile("plan", "--spec", spec, "--source", source, "--out", plan_file)
    assert planned.returncode == 0, planned.stderr
    assert "dueDate=2026-03-30T08:00:00.000000Z" in planned.stdout
    assert "dueDate=2026-04-06T08:00:00.000000Z" in planned.stdout
    assert planned.stdout.rstrip().endswith(
        "Plan: 2 to create, 1 to link, 0 to fill; 0 to delete, 0 to overwrite.")

    applied = reconcile("apply", plan_file)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "converged, nothing lost." in applied.stdout
    after = SnapshotStore(source).read().documents(A).values()
    weeks = {doc.fields["recurringWeek"]: doc.fields for doc in after}
    assert {week: fields["dueDate"] for week, fields in weeks.items()} == {
        1: base, 2: datetime(2026, 3, 30, 8, tzinfo=UTC), 3: datetime(2026, 4, 6, 8, tzinfo=UTC)}
    assert weeks[2]["responseId"] == "r2" and weeks[3]["responseId"] is None

    check = reconcile("check", "--spec", spec, "--source", source)
    assert check.returncode == 0 and "No drift: converged." in check.stdout


def test_snapshot_exports_a_file_that_plans_the_same(demo, tmp_path):
    out = tmp_path / "copy.json"
    assert reconcile("snapshot", "--source", demo, "--out", out, "--spec", CHECKINS).returncode == 0
    one = json.loads(reconcile("plan", "--spec", CHECKINS, "--source", demo, "--format", "json").stdout)
    two = json.loads(reconcile("plan", "--spec", CHECKINS, "--source", out, "--format", "json").stdout)
    assert one["ops"] == two["ops"] and one["findings"] == two["findings"]


def test_the_second_domain_plans_and_applies_with_the_same_code(tmp_path):
    copy = tmp_path / "sessions.json"
    shutil.copyfile(SESSIONS_DEMO, copy)
    run = reconcile("apply", "--spec", SESSIONS, "--source", copy, "--auto-approve")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Plan: 17 to create, 8 to link, 0 to fill; 0 to delete, 0 to overwrite." in run.stdout
    assert reconcile("check", "--spec", SESSIONS, "--source", copy).returncode == 0


# -- bad input: one sentence, exit 1, nothing written ----------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["plan", "--spec", "nope.yaml", "--source", "{demo}"], "nope.yaml: spec file not found"),
    (["plan", "--spec", str(CHECKINS), "--source", "missing.json"], "missing.json: snapshot file not found"),
    (["plan", "--spec", str(CHECKINS), "--source", "ftp://x"], "unknown source"),
    (["plan", "--spec", str(CHECKINS)], "Missing option '--source'"),
    (["plan", "--spec", str(CHECKINS), "--source", "{demo}", "--format", "xml"], "'xml' is not one of"),
    (["apply", "missing-plan.json"], "missing-plan.json: plan file not found"),
    (["apply"], "give a saved PLAN, or both --spec and --source"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_bad_arguments_and_missing_files(demo, args, words):
    before = digest(demo)
    run = reconcile(*[a.replace("{demo}", str(demo)) for a in args])
    assert run.returncode == 1
    assert words in run.stderr and run.stderr.startswith("error: ")
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert digest(demo) == before


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d.update(format_version="9.0"), "format_version '9.0' is not supported"),
    (lambda d: d["collections"]["formResponses"][next(iter(d["collections"]["formResponses"]))]["fields"]
     .update(submittedAt={"$timestamp": "last tuesday"}), "bad $timestamp value"),
    (lambda d: d.update(collections=[]), "'collections' must be an object"),
])
def test_a_malformed_snapshot_is_refused_and_left_as_it_was(tmp_path, edit, words):
    data = json.loads(DEMO.read_text())
    edit(data)
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(data))
    before = digest(source)
    for args in (["plan"], ["check"], ["audit"], ["apply", "--auto-approve"]):
        run = reconcile(*args, "--spec", CHECKINS, "--source", source)
        assert run.returncode == 1 and words in run.stderr and "Traceback" not in run.stderr, args
    assert digest(source) == before


def test_documents_with_wrong_types_are_findings_not_failures(tmp_path):
    data = json.loads(DEMO.read_text())
    for doc in data["collections"]["check_in_assignments"].values():
        doc["fields"]["totalWeeks"] = ["not", "a", "number"]
        doc["fields"]["status"] = {"nested": True}
    source = tmp_path / "odd.json"
    source.write_text(json.dumps(data))
    run = reconcile("plan", "--spec", CHECKINS, "--source", source)
    assert run.returncode == 0 and "series.length_invalid" in run.stdout


def test_a_plan_file_that_was_edited_is_refused(demo, tmp_path):
    plan_file = tmp_path / "plan.json"
    reconcile("plan", "--spec", CHECKINS, "--source", demo, "--out", plan_file)
    data = json.loads(plan_file.read_text())
    data["spec"]["text"] = data["spec"]["text"].replace("every_days: 7", "every_days: 6")
    plan_file.write_text(json.dumps(data))
    before = digest(demo)
    run = reconcile("apply", plan_file)
    assert run.returncode == 1 and "does not match its sha256" in run.stderr
    assert digest(demo) == before


def test_debug_shows_the_traceback():
    run = reconcile("--debug", "plan", "--spec", "nope.yaml", "--source", "x.json")
    assert run.returncode == 1 and "Traceback" in run.stderr


@pytest.mark.parametrize("command", ["validate", "audit", "plan", "apply", "check", "snapshot", "restore",
                                     "rollback", "schema", "force-unlock"])
def test_every_command_explains_itself(command):
    run = reconcile(command, "--help")
    assert run.returncode == 0 and "Usage: reconcile " + command in run.stdout
    assert len(run.stdout.splitlines()) > 4


def test_apply_as_json_prints_one_document_the_validation_report(demo):
    run = reconcile("apply", "--spec", CHECKINS, "--source", demo, "--auto-approve", "--format", "json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["converged"] is True and report["created"] == 379 and report["lost"] == []


def test_a_change_made_while_the_prompt_waits_is_seen_before_anything_is_written(tmp_path):
    """The operator reads the plan for minutes; the app creates a week meanwhile. The answer "yes"
    must not create that week a second time."""
    import pty
    import select
    import subprocess
    import sys
    from dataclasses import replace
    from datetime import timedelta

    from builders import ROOT

    from reconciler.kernel import new_week_id
    from reconciler.model import Document
    from reconciler.snapshot import SnapshotStore, snapshot_bytes

    source = tmp_path / "demo.json"
    source.write_bytes(DEMO.read_bytes())
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", str(source),
         "--quiet", "--journal-dir", str(tmp_path / "j")],
        stdin=follower, stdout=follower, stderr=follower, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(follower)
    seen = b""
    while b"Only 'yes' is accepted" not in seen:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, seen[-500:]
        seen += os.read(leader, 65536)
    # The app creates week 3 of c06's series at an ID of its own, after the plan's read.
    state = SnapshotStore(source).read()
    base = next(d for d in state.collections["check_in_assignments"].values()
                if d.get("clientId") == "c06" and d.get("recurringWeek") == 1)
    week3 = Document("check_in_assignments", "app-made-week-3",
                     {**base.fields, "recurringWeek": 3, "dueDate": base.get("dueDate") + timedelta(days=14)},
                     state.read_time + timedelta(seconds=5))
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    collections["check_in_assignments"][week3.id] = week3
    source.write_bytes(snapshot_bytes(replace(state, collections=collections)))
    os.write(leader, b"yes\n")
    while process.poll() is None or select.select([leader], [], [], 0.1)[0]:
        try:
            seen += os.read(leader, 65536)
        except OSError:
            break
    process.wait(timeout=60)
    after = SnapshotStore(source).read().collections["check_in_assignments"]
    ours = new_week_id(checkins(), ("c06", "f-weekly"), 3)
    assert ours not in after, "week 3 was created a second time after the prompt"
    assert process.returncode == 2, seen[-2000:].decode(errors="replace")


@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "0.5"])
def test_a_timeout_that_could_never_bound_a_wait_is_refused(value):
    run = reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--timeout", value)
    assert run.returncode == 1 and "--timeout" in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_show_renders_a_saved_plan_exactly_as_plan_printed_it_and_writes_nothing(tmp_path, fmt):
    source = tmp_path / "demo.json"
    source.write_bytes(DEMO.read_bytes())
    plan_file = tmp_path / "plan.json"
    planned = reconcile("plan", "--spec", CHECKINS, "--source", source, "--out", plan_file, "--format", fmt,
                        "--quiet")
    assert planned.returncode == 0, planned.stderr
    assert "Saved the plan to" in planned.stderr and "Saved the plan" not in planned.stdout
    shown = reconcile("show", plan_file, "--format", fmt)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout == planned.stdout
    if fmt == "json":
        assert shown.stdout == plan_file.read_text()
    assert source.read_bytes() == DEMO.read_bytes()


def test_show_refuses_an_edited_plan_in_one_sentence(tmp_path):
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--out", plan_file).returncode == 0
    data = json.loads(plan_file.read_text())
    data["ops"][0]["rules"] = [1]
    plan_file.write_text(json.dumps(data))
    shown = reconcile("show", plan_file)
    assert shown.returncode == 1 and shown.stdout == "" and len(shown.stderr.strip().splitlines()) == 1


def test_validate_checks_every_file_it_is_given_and_fails_if_one_is_invalid(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n")
    every = reconcile("validate", CHECKINS, SESSIONS_SPEC := CHECKINS.parent / "sessions.yaml")
    assert every.returncode == 0 and every.stdout.count(": valid spec") == 2
    mixed = reconcile("validate", CHECKINS, bad, SESSIONS_SPEC)
    assert mixed.returncode == 1 and mixed.stdout.count(": valid spec") == 2
    assert f"{bad}:1:1: the spec is missing the key 'name'" in mixed.stderr
    assert mixed.stderr.strip().endswith("1 of 3 specs are invalid (see above)")
