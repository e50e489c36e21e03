"""reconcile rollback: one past run's own writes undone, and only where nobody touched the document
since. On the real emulator (and a snapshot file) end to end; the decision rule on built journals."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, reconcile
from faultproxy import FaultProxy
from test_faults import CuttingJournal, journal_events, through

from reconciler.journal import Journal, read_journal
from reconciler.model import (
    CreateDocumentOp,
    Document,
    FieldFill,
    FillFieldsOp,
    Plan,
    State,
    StatusTransition,
)
from reconciler.rollback import (
    ALREADY_AS_BEFORE,
    APPLIED,
    CHANGED_SINCE,
    DELETED_SINCE,
    IN_DOUBT,
    IN_DOUBT_CODE,
    NOT_AS_JOURNALED,
    PARTNER_LEFT,
    SKIPPED,
    ClearFieldsOp,
    DeleteDocumentOp,
    FieldClear,
    PastRun,
    StatusReturn,
    Written,
    plan_rollback,
    undo_to_data,
)
from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.values import MISSING, canonical

A, R = "check_in_assignments", "formResponses"
T0 = datetime(2025, 11, 3, 8, 0, 0, 100, tzinfo=UTC)  # read before the run
T1 = datetime(2025, 11, 3, 8, 5, 0, 200, tzinfo=UTC)  # the run's first write
T2 = datetime(2025, 11, 3, 8, 5, 1, 300, tzinfo=UTC)  # its second, or another writer's
T3 = datetime(2025, 11, 3, 9, 0, 0, 400, tzinfo=UTC)  # someone, later


# -- the rule, on built journals ----------------------------------------------------------------------


def doc(path: str, fields: dict, update_time: datetime | None) -> Document:
    collection, _, doc_id = path.partition("/")
    return Document(collection, doc_id, fields, update_time)


def create(path: str, group: str | None = None, **fields) -> CreateDocumentOp:
    return CreateDocumentOp(path=path, fields=fields or {"week": 3}, rules=("series.new_week",), group=group)


def fill(path: str, update_time: datetime, fills: dict, before=MISSING, group: str | None = None,
         transition: tuple[str, str] | None = None) -> FillFieldsOp:
    return FillFieldsOp(path=path, update_time=update_time, group=group,
                        fills=tuple(FieldFill(field=name, value=value, rule="link.pair", before=before)
                                    for name, value in fills.items()),
                        transition=None if transition is None else StatusTransition(
                            field="status", before=transition[0], to=transition[1], rule="link.pair"))


def written(op, before: Document | None = None, outcome: str = APPLIED, at: datetime | None = T1,
            batch: int = 1) -> Written:
    return Written(batch=batch, op=op, before=before, outcome=outcome,
                   update_time=at if outcome == APPLIED else None)


def run(*entries: Written) -> PastRun:
    return PastRun(journal="j.jsonl", sha256="0" * 64, operation="apply", spec_name="checkins",
                   spec_sha256="1" * 64, source="src", started=T0, ended=True, written=entries)


def decide(past: PastRun, *current: Document):
    plan = plan_rollback(past, {d.path: d for d in current}, T3)
    return plan, {op.path: op for op in plan.ops}, {u.path: u.code for u in plan.untouched}


MEMBER, RESPONSE, WEEK = f"{A}/m1", f"{R}/r1", f"{A}/w3"
MEMBER_BEFORE = {"clientId": "c1", "status": "pending", "responseId": None, "score": ""}
RESPONSE_BEFORE = {"clientId": "c1", "score": 7}


def linked_run(**outcomes) -> PastRun:
    member = fill(MEMBER, T0, {"responseId": "r1", "score": 7}, before=None, group=MEMBER,
                  transition=("pending", "completed"))
    member = FillFieldsOp(path=MEMBER, update_time=T0, group=MEMBER, transition=member.transition,
                          fills=(FieldFill(field="responseId", value="r1", rule="link.pair", before=None),
                                 FieldFill(field="score", value=7, rule="link.pair", before="")))
    response = fill(RESPONSE, T0, {"assignmentId": "m1"}, group=MEMBER)
    return run(written(member, doc(MEMBER, MEMBER_BEFORE, T0), outcomes.get("member", APPLIED)),
               written(response, doc(RESPONSE, RESPONSE_BEFORE, T0), outcomes.get("response", APPLIED)),
               written(create(WEEK), None, outcomes.get("week", APPLIED)))


MEMBER_AFTER = {**MEMBER_BEFORE, "status": "completed", "responseId": "r1", "score": 7}
RESPONSE_AFTER = {**RESPONSE_BEFORE, "assignmentId": "m1"}


def test_each_write_untouched_since_is_undone_back_to_its_exact_empty_value():
    plan, ops, untouched = decide(linked_run(), doc(MEMBER, MEMBER_AFTER, T1),
                                  doc(RESPONSE, RESPONSE_AFTER, T1), doc(WEEK, {"week": 3}, T1))
    assert untouched == {}
    assert ops[WEEK] == DeleteDocumentOp(path=WEEK, update_time=T1, fields={"week": 3})
    assert ops[MEMBER] == ClearFieldsOp(
        path=MEMBER, update_time=T1, group=MEMBER,
        clears=(FieldClear(field="responseId", value="r1", to=None),
                FieldClear(field="score", value=7, to="")),
        status=StatusReturn(field="status", value="completed", to="pending"))
    assert ops[RESPONSE].clears == (FieldClear(field="assignmentId", value="m1", to=MISSING),)
    assert ops[MEMBER].cleared(MEMBER_AFTER) == MEMBER_BEFORE
    assert ops[RESPONSE].cleared(RESPONSE_AFTER) == RESPONSE_BEFORE
    assert [len(group) for group in plan.groups()] == [2, 1]  # the link's two sides in one commit


def test_a_link_with_one_side_changed_since_is_left_whole():
    plan, ops, untouched = decide(linked_run(), doc(MEMBER, {**MEMBER_AFTER, "note": "app"}, T2),
                                  doc(RESPONSE, RESPONSE_AFTER, T1), doc(WEEK, {"week": 3}, T1))
    assert untouched == {MEMBER: CHANGED_SINCE, RESPONSE: PARTNER_LEFT}
    assert list(ops) == [WEEK]
    assert "a link is undone whole or not at all" in next(u.reason for u in plan.left if u.path == RESPONSE)


@pytest.mark.parametrize(("member", "code"), [
    (None, DELETED_SINCE),
    (doc(MEMBER, MEMBER_AFTER, T3), CHANGED_SINCE),
    (doc(MEMBER, {**MEMBER_AFTER, "score": 8}, T1), NOT_AS_JOURNALED),  # the run's time, other values
    (doc(MEMBER, MEMBER_BEFORE, T3), ALREADY_AS_BEFORE),  # undone already (by a rollback killed later)
])
def test_a_member_not_as_the_run_left_it_is_not_written(member, code):
    current = [d for d in (member, doc(RESPONSE, RESPONSE_BEFORE, T3)) if d is not None]
    plan, ops, untouched = decide(linked_run(), *current)
    assert untouched[MEMBER] == code
    assert MEMBER not in ops and RESPONSE not in ops
    assert untouched[RESPONSE] == ALREADY_AS_BEFORE
    assert untouched[WEEK] == ALREADY_AS_BEFORE  # a created week that is gone is as before the run


def test_a_write_in_doubt_is_not_undone_unless_its_document_is_as_before():
    past = linked_run(week=IN_DOUBT, member=IN_DOUBT, response=IN_DOUBT)
    _, ops, untouched = decide(past, doc(MEMBER, MEMBER_AFTER, T1), doc(RESPONSE, RESPONSE_BEFORE, T0),
                               doc(WEEK, {"week": 3}, T1))
    assert ops == {}
    assert untouched == {MEMBER: IN_DOUBT_CODE, RESPONSE: ALREADY_AS_BEFORE, WEEK: IN_DOUBT_CODE}
    _, ops, untouched = decide(past, doc(MEMBER, MEMBER_BEFORE, T0), doc(RESPONSE, RESPONSE_BEFORE, T0))
    assert ops == {} and set(untouched.values()) == {ALREADY_AS_BEFORE}  # the commit never landed


def test_writes_the_journal_records_as_skipped_are_not_undone():
    plan, ops, untouched = decide(linked_run(week=SKIPPED), doc(WEEK, {"week": 3}, T1),
                                  doc(MEMBER, MEMBER_AFTER, T1), doc(RESPONSE, RESPONSE_AFTER, T1))
    assert WEEK not in ops and WEEK not in untouched and plan.not_written == 1


def test_several_writes_to_one_document_undo_to_before_the_first_when_each_followed_the_last():
    first = fill(MEMBER, T0, {"responseId": "r1"}, before=None)
    second = fill(MEMBER, T1, {"score": 7}, before="")
    past = run(written(first, doc(MEMBER, MEMBER_BEFORE, T0), at=T1),
               written(second, doc(MEMBER, {**MEMBER_BEFORE, "responseId": "r1"}, T1), at=T2, batch=2))
    after = {**MEMBER_BEFORE, "responseId": "r1", "score": 7}
    _, ops, untouched = decide(past, doc(MEMBER, after, T2))
    assert untouched == {} and ops[MEMBER].update_time == T2  # only the last update time is the run's
    assert ops[MEMBER].cleared(after) == MEMBER_BEFORE
    _, ops, untouched = decide(past, doc(MEMBER, after, T1))  # the first write's time is not the run's now
    assert ops == {} and untouched == {MEMBER: CHANGED_SINCE}
    between = fill(MEMBER, T3, {"score": 7}, before="")  # made over another writer's write
    _, ops, untouched = decide(run(written(first, doc(MEMBER, MEMBER_BEFORE, T0), at=T1),
                                   written(between, None, at=T2, batch=2)), doc(MEMBER, after, T2))
    assert ops == {} and untouched == {MEMBER: CHANGED_SINCE}


def test_a_create_then_a_fill_of_the_same_document_is_one_delete():
    past = run(written(create(WEEK, week=3), None, at=T1),
               written(fill(WEEK, T1, {"responseId": "r9"}), doc(WEEK, {"week": 3}, T1), at=T2, batch=2))
    _, ops, untouched = decide(past, doc(WEEK, {"week": 3, "responseId": "r9"}, T2))
    assert untouched == {} and ops[WEEK] == DeleteDocumentOp(path=WEEK, update_time=T2,
                                                             fields={"week": 3, "responseId": "r9"})


@pytest.mark.parametrize("before", [
    doc(MEMBER, MEMBER_BEFORE, T2),  # not the update time the write was made over
    doc(MEMBER, {**MEMBER_BEFORE, "responseId": "x"}, T0),  # claims a value the fill replaced
    None,  # no record of the document at all
])
def test_a_journal_whose_before_record_does_not_fit_its_op_writes_nothing(before):
    op = fill(MEMBER, T0, {"responseId": "r1"}, before=None)
    now = doc(MEMBER, {**MEMBER_BEFORE, "responseId": "r1"}, T1)
    _, ops, untouched = decide(run(written(op, before)), now)
    assert ops == {} and untouched == {MEMBER: NOT_AS_JOURNALED}


# -- on the emulator ------------------------------------------------------------------------------------


def demo_state() -> State:
    return SnapshotStore(DEMO).read()


def contents(state: State) -> dict[str, dict[str, str]]:
    """Every document's every value, update times aside: equal contents mean the same database."""
    return {name: {doc_id: canonical(d.fields) for doc_id, d in docs.items()}
            for name, docs in state.collections.items() if docs}


def apply_demo(source: str, journal_dir: Path, *args) -> Path:
    applied = reconcile("apply", "--spec", CHECKINS, "--source", source, "--auto-approve", "--quiet",
                        "--journal-dir", journal_dir, *args)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [journal] = journal_dir.glob("*-checkins.jsonl")
    return journal


def journal_ops(journal: Path) -> list[dict]:
    return [op for line in journal.read_text().splitlines()
            if (event := json.loads(line))["event"] == "commit" for op in event["ops"]]


def rewrite(journal: Path, edit) -> None:
    """Edit a journal line by line, as someone with the file could: ``edit(event)`` changes it in place."""
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        edit(event)
        lines.append(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
    journal.write_text("".join(lines))


def test_apply_then_rollback_gives_back_the_database_as_it_was_field_for_field(live, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j")
    assert len(live.read().collections[A]) == len(before.collections[A]) + 379
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Rollback: 379 to delete, 28 to restore; 0 left as they are, 0 already as before." in run.stdout
    assert "Rollback: 379 deleted, 28 restored; every write of the apply is undone." in run.stdout
    assert contents(live.read()) == contents(before)
    [own] = (tmp_path / "j").glob("*-checkins-rollback.jsonl")
    start = json.loads(own.read_text().splitlines()[0])
    assert start["operation"] == "rollback" and start["format_version"] == "1.2"
    assert start["undoes"] == {"journal": str(journal), "operation": "apply",
                               "sha256": hashlib.sha256(journal.read_bytes()).hexdigest()}
    again = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert again.returncode == 0 and "Nothing to undo." in again.stdout
    assert "407 already as before" in again.stdout
    assert contents(live.read()) == contents(before)


def test_documents_the_app_wrote_since_the_apply_are_left_and_named_and_the_rest_undone(live, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j")
    ops = journal_ops(journal)
    week = next(op["path"] for op in ops if op["op"] == "create_document" and op["group"] is None)
    filled = next(op["path"] for op in ops if op["op"] == "fill_fields" and op["group"] is None)
    live.client.document(week).update({"status": "completed", "appNote": "done in the app"})
    live.client.document(filled).update({"appNote": "seen"})
    applied = live.read()

    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Left as they are (2; the apply's writes stay in them):" in run.stdout
    assert f"! rollback.changed_since  {week}" in run.stdout
    assert f"! rollback.changed_since  {filled}" in run.stdout
    assert "Rollback: 378 deleted, 27 restored, 0 skipped, 2 left as they are; NOT every write" in run.stdout
    after = live.read()
    for path in (week, filled):  # exactly as the app left them, the apply's writes included
        assert after.find(path) == applied.find(path)
    expected = contents(before)
    expected[A][week.partition("/")[2]] = canonical(applied.find(week).fields)
    expected[R][filled.partition("/")[2]] = canonical(applied.find(filled).fields)
    assert contents(after) == expected


def test_the_journal_of_a_rollback_is_refused(live, tmp_path):
    live.load(demo_state())
    journal = apply_demo(live.source, tmp_path / "j")
    first = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert first.returncode == 0, first.stdout + first.stderr
    [own] = (tmp_path / "j").glob("*-rollback.jsonl")
    dumped = live.dump()
    refused = reconcile("rollback", own, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"error: {own}: this is the journal of a rollback, which is not undone by "
                              "another rollback (to write the spec's changes again, run `reconcile apply`); "
                              "nothing was written\n")
    assert live.dump() == dumped


def test_a_killed_rollback_run_again_finishes_and_reports_nothing_wrongly(live, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j")
    own = tmp_path / "own"
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "rollback", str(journal), "--auto-approve", "--batch-size", "1",
         "--max-writes-per-second", "50", "--quiet", "--journal-dir", str(own), "--lease-ttl", "5"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(own.glob("*-rollback.jsonl"))
        if journals and '"event": "result"' in journals[0].read_text():
            break
        time.sleep(0.01)
    assert process.poll() is None, "the rollback finished before it could be killed; slow it down"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    middle = live.read()
    assert len(before.collections[A]) < len(middle.collections[A]) < len(before.collections[A]) + 379

    rerun = reconcile("rollback", journal, "--auto-approve", "--journal-dir", own,
                      "--lock-timeout", "120")  # the stopped run's lease expires first
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Left as they are (" not in rerun.stdout and "rollback.changed_since" not in rerun.stdout
    deletes, restores, already = map(int, re.search(
        r"Rollback: (\d+) to delete, (\d+) to restore; 0 left as they are, (\d+) already as before\.",
        rerun.stdout).groups())
    assert deletes + restores + already == 407 and already >= 1
    assert "every write of the apply is undone." in rerun.stdout
    assert contents(live.read()) == contents(before)


def test_a_tampered_journal_never_deletes_or_clears_a_document_the_apply_did_not_write(live, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j", "--batch-size", "100")
    ops = journal_ops(journal)
    written_paths = {op["path"] for op in ops}
    untouched = sorted(path for name in (A, R) for path in (d.path for d in before.collections[name].values())
                       if path not in written_paths)
    create_week = next(op["path"] for op in ops if op["op"] == "create_document" and op["group"] is None)
    lone_fill = next(op["path"] for op in ops if op["op"] == "fill_fields" and op["group"] is None)
    stale_week = [op["path"] for op in ops if op["op"] == "create_document" and op["group"] is None][5]
    victims = {create_week: untouched[0], lone_fill: untouched[-1]}  # a create and a fill, pointed elsewhere

    def edit(event):
        if event["event"] == "commit":
            for op in event["ops"]:
                if op["path"] in victims:
                    event["before"][victims[op["path"]]] = event["before"].pop(op["path"])
                    op["path"] = victims[op["path"]]
        if event["event"] == "result":
            for result in event["results"]:
                result["path"] = victims.get(result["path"], result["path"])
                if result["path"] == stale_week:  # an update time changed: not the one the write left
                    result["update_time"] = {"$timestamp": "2025-01-01T00:00:00.000000Z"}

    rewrite(journal, edit)
    applied = live.read()
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 2, run.stdout + run.stderr
    after = live.read()
    for path in (*victims.values(), stale_week):
        assert after.find(path) == applied.find(path), f"{path} was written"
        assert f"rollback.changed_since  {path}" in run.stdout
    # The documents the edited lines no longer name keep the apply's writes; nothing else is left.
    assert after.find(create_week) == applied.find(create_week)
    assert after.find(lone_fill) == applied.find(lone_fill)
    assert "Left as they are (3;" in run.stdout


def test_an_update_time_set_to_a_later_write_cannot_clear_the_app_s_values(live, tmp_path):
    """Edited to the update time another writer's write left, the values still do not match what the
    journal says the apply wrote: the document is left, never taken back over the app's write."""
    live.load(demo_state())
    journal = apply_demo(live.source, tmp_path / "j")
    member = next(op["path"] for op in journal_ops(journal) if op["op"] == "fill_fields" and op["transition"])
    live.client.document(member).update({"score": 99})
    app = live.read().find(member)

    def edit(event):
        for result in event.get("results", []) if event["event"] == "result" else []:
            if result["path"] == member:
                result["update_time"] = {"$timestamp": app.update_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    rewrite(journal, edit)
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"! rollback.not_as_journaled  {member}" in run.stdout
    assert live.read().find(member) == app


def test_a_commit_whose_outcome_was_never_recorded_is_in_doubt_and_left(live, tmp_path):
    """As a SIGKILL between a commit and its result line leaves it: the writes may be the tool's, but
    the journal cannot prove it."""
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j", "--batch-size", "100")
    lines = journal.read_text().splitlines(keepends=True)
    dropped = next(n for n, line in enumerate(lines) if '"batch": 2' in line and '"event": "result"' in line)
    in_doubt = [result["path"] for result in json.loads(lines[dropped])["results"]]
    journal.write_text("".join(lines[:dropped] + lines[dropped + 1:]))
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 2, run.stdout + run.stderr
    left = [line.split()[2] for line in run.stdout.splitlines() if line.startswith("  ! rollback.")]
    assert sorted(left) == sorted(in_doubt) and len(left) >= 90
    assert all(f"! rollback.in_doubt  {path}" in run.stdout for path in in_doubt)
    after = live.read()
    for path in in_doubt:
        assert after.find(path) is not None and canonical(after.find(path).fields) != canonical(
            (before.find(path) or Document("", "", {})).fields)
    assert all(after.find(op["path"]) == before.find(op["path"]) or op["path"] in in_doubt
               for op in journal_ops(journal) if op["op"] == "create_document")


def test_bad_input_is_one_sentence_exit_1_and_writes_nothing(live, tmp_path):
    live.load(demo_state())
    journal = apply_demo(live.source, tmp_path / "j")
    text = journal.read_text()
    lines = text.splitlines(keepends=True)
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", plan_file).returncode == 0
    cases = {
        "missing": (tmp_path / "nope.jsonl", "journal not found"),
        "a plan file": (plan_file, "not a journal"),
        "empty": (tmp_path / "empty.jsonl", "the file is empty, not a journal"),
        "a directory without a journal": (tmp_path / "no-journal", "no journal (*.jsonl) in this directory"),
        "last line cut": (tmp_path / "cut.jsonl", "the line is cut off (the run was stopped while writing "
                                                  "it); remove this last line"),
        "middle line cut": (tmp_path / "middle.jsonl", "not valid JSON"),
        "result not matching its commit": (tmp_path / "edited.jsonl", "does not name the ops of its "
                                                                      "commit line, in order; the journal "
                                                                      "was edited"),
        "an op no plan can hold": (tmp_path / "delete.jsonl", "unknown op 'delete_document'"),
        "another source checked": (journal, "the journal records writes to"),
    }
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "no-journal").mkdir()
    (tmp_path / "no-journal" / "notes.txt").write_text("not a journal")
    (tmp_path / "cut.jsonl").write_text(text[:-40])
    (tmp_path / "middle.jsonl").write_text("".join(lines[:2] + [lines[2][:50] + "\n"] + lines[3:]))
    commit = json.loads(lines[1])  # the commit line alone edited to name another document
    commit["before"][f"{A}/someone-elses"] = commit["before"].pop(commit["ops"][0]["path"])
    commit["ops"][0]["path"] = f"{A}/someone-elses"
    (tmp_path / "edited.jsonl").write_text(lines[0] + json.dumps(commit) + "\n" + "".join(lines[2:]))
    commit = json.loads(lines[1])
    commit["ops"][0] = {**commit["ops"][0], "op": "delete_document"}
    (tmp_path / "delete.jsonl").write_text(lines[0] + json.dumps(commit) + "\n" + "".join(lines[2:]))
    dumped = live.dump()
    for name, (path, words) in cases.items():
        extra = ["--source", "firestore://another-project"] if name == "another source checked" else []
        run = reconcile("rollback", path, "--auto-approve", "--journal-dir", tmp_path / "own", *extra)
        assert run.returncode == 1, (name, run.stdout, run.stderr)
        assert words in run.stderr, (name, run.stderr)
        assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, name
        assert "Traceback" not in run.stderr and run.stdout == "", name
    assert live.dump() == dumped
    assert not (tmp_path / "own").exists()  # no rollback journal either


def test_without_a_terminal_or_with_dry_run_nothing_is_written(live, tmp_path):
    live.load(demo_state())
    journal = apply_demo(live.source, tmp_path / "j")
    dumped = live.dump()
    asked = reconcile("rollback", journal, "--journal-dir", tmp_path / "own")
    assert asked.returncode == 1 and "refusing to roll back without confirmation" in asked.stderr
    dry = reconcile("rollback", journal, "--dry-run", "--format", "json", "--source", live.source)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["format"] == "reconcile-rollback" and report["result"] is None
    assert report["summary"] == {"delete": 379, "restore": 28, "left": 0, "already_as_before": 0,
                                 "not_written": 0}
    markdown = reconcile("rollback", journal, "--dry-run", "--format", "markdown")
    assert markdown.returncode == 0 and "| 379 | 28 | 0 | 0 |" in markdown.stdout
    assert live.dump() == dumped and not (tmp_path / "own").exists()


def test_rollback_on_a_snapshot_file_gives_back_the_file_s_data(tmp_path):
    source = tmp_path / "data.json"
    shutil.copy(DEMO, source)
    before = SnapshotStore(source).read()
    journal = apply_demo(str(source), tmp_path / "j")
    source.chmod(0o640)
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j",
                    "--source", os.path.relpath(source, tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every write of the apply is undone." in run.stdout
    assert contents(SnapshotStore(source).read()) == contents(before)
    assert source.stat().st_mode & 0o777 == 0o640  # replaced, as apply replaces it: the mode kept
    # A document the app wrote to a snapshot after the apply is left, as on Firestore.
    journal.unlink()
    journal = apply_demo(str(source), tmp_path / "j")
    week = next(op["path"] for op in journal_ops(journal) if op["op"] == "create_document")
    data = SnapshotStore(source).read()
    collection, _, doc_id = week.partition("/")
    later = data.collections[collection][doc_id]
    data.collections[collection][doc_id] = Document(collection, doc_id, {**later.fields, "x": 1},
                                                    later.update_time + timedelta(seconds=1))
    source.write_bytes(snapshot_bytes(data))
    run = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 2 and f"! rollback.changed_since  {week}" in run.stdout
    assert SnapshotStore(source).read().find(week).fields == {**later.fields, "x": 1}


def test_the_creates_a_restore_journaled_are_deleted_and_nothing_else(tmp_path):
    """A restore's journal has an apply's shape, with create ops only: its creates are undone."""
    source = tmp_path / "data.json"
    shutil.copy(DEMO, source)
    before = SnapshotStore(source).read()
    missing = [Document(R, f"restored-{n}", {"clientId": "c01", "score": n}) for n in range(3)]
    plan = Plan(spec_name="demo", spec_path="", spec_sha256="", spec_text="", source=str(source),
                read_time=None, findings=(), ops=tuple(CreateDocumentOp(path=d.path, fields=d.fields,
                                                                        rules=("restore",)) for d in missing))
    journal = Journal(tmp_path / "j", plan, before, datetime.now(UTC), operation="restore")
    results = SnapshotStore(source).apply([(op,) for op in plan.ops], datetime.now(UTC), journal)
    journal.close(datetime.now(UTC))
    assert all(r.applied for r in results) and journal.path.name.endswith("-demo-restore.jsonl")
    run = reconcile("rollback", journal.path, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Rollback of the restore recorded in" in run.stdout and "3 to delete, 0 to restore" in run.stdout
    assert contents(SnapshotStore(source).read()) == contents(before)


# -- the server fails during a rollback -----------------------------------------------------------------


@pytest.fixture
def proxy(emulator):
    with FaultProxy(emulator.host) as running:
        yield running
        assert running.errors == []


def test_a_rollback_commit_whose_reply_is_lost_is_recognised_on_the_retry(live, proxy, monkeypatch,
                                                                          tmp_path):
    live.load(demo_state())
    before = live.read()
    past = read_journal(str(apply_demo(live.source, tmp_path / "j")))
    store = through(proxy, live.source, monkeypatch, batch_size=50, timeout=30)
    paths = sorted({w.op.path for w in past.written})
    read = store.read_documents(paths)
    plan = plan_rollback(past, {path: read.find(path) for path in paths}, read.read_time)
    journal = CuttingJournal(tmp_path / "own", plan, read, datetime.now(UTC), operation="rollback",
                             encode_op=undo_to_data, proxy=proxy, at=2)  # batch 2: deletes only
    results = store.undo(plan.groups(), datetime.now(UTC), journal)
    journal.close(datetime.now(UTC))
    assert proxy.stats()["cuts"] == 1
    assert all(r.applied for r in results), [r.reason for r in results if not r.applied]
    confirmed = [r for r in results if r.reason == "confirmed after a retried commit"]
    assert confirmed and all(isinstance(r.op, DeleteDocumentOp) and r.written_at is None for r in confirmed)
    assert contents(live.read()) == contents(before)
    assert journal_events(tmp_path / "own")[-1]["applied"] == 407


def test_losing_the_server_mid_rollback_is_one_sentence_and_the_rerun_finishes(live, proxy, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal = apply_demo(live.source, tmp_path / "j")
    own = tmp_path / "own"
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "rollback", str(journal), "--auto-approve", "--batch-size", "5",
         "--max-writes-per-second", "100", "--quiet", "--timeout", "4", "--journal-dir", str(own),
         "--lease-ttl", "5"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "FIRESTORE_EMULATOR_HOST": proxy.host},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(own.glob("*.jsonl"))
        if journals and journals[0].read_text().count('"event": "result"') >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the rollback finished before the server could be lost"
    proxy.blackhole()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    # One error sentence; a note before it may say the lease could not be released (no server).
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and "could not release the lease" in lines[0]), stderr
    assert "Traceback" not in stderr and lines[-1].startswith("error: lost the database during rollback")
    assert f"Re-running `reconcile rollback {journal}` is safe" in stderr
    events = journal_events(own)
    end = events[-1]
    assert end["event"] == "end" and end["outcome"] == "failed"
    assert f"{end['applied']} of 407 undo writes were applied" in stderr and end["applied"] >= 15

    proxy.close()
    rerun = reconcile("rollback", journal, "--auto-approve", "--journal-dir", own,
                      "--lock-timeout", "120")  # the stopped run's lease expires first
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "rollback.changed_since" not in rerun.stdout
    assert contents(live.read()) == contents(before)
