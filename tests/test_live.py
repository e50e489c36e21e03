"""Live Firestore on the real emulator: the same plans as on snapshots, and every guarantee of the
design under stale plans, a concurrent writer and crashes mid-apply."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from builders import (
    CHECKINS,
    DEMO,
    ROOT,
    SESSIONS,
    SESSIONS_DEMO,
    assignment,
    cadence_text,
    reconcile,
    response,
    state,
)
from test_values import VALUES

from reconciler.kernel import new_week_id
from reconciler.model import CreateDocumentOp, Document, FieldFill, FillFieldsOp, State
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec
from reconciler.store import FirestoreStore
from reconciler.values import canonical, is_empty, same

SPEC = load_spec(CHECKINS)
A, R = "check_in_assignments", "formResponses"


def demo_state() -> State:
    return SnapshotStore(DEMO).read()


def messy_state(seed: int, series: int = 40) -> State:
    """A previously unseen messy database: random series, gaps, duplicates, bad types, half links."""
    rng = random.Random(seed)
    start = datetime(2025, 6, 2, 8, 30, 0, 250000, tzinfo=UTC)
    members: dict[str, Document] = {}
    answers: dict[str, Document] = {}
    for n in range(series):
        client, form = f"client-{n % 13}", rng.choice(["weekly", "mood", "habits"])
        total = rng.choice([3, 4, 6, 8, None, "6", 0])
        base_due = start + timedelta(hours=n)
        for week in sorted(rng.sample(range(1, 9), rng.randint(0, 4)) + ([1] if rng.random() < 0.85 else [])):
            fields = {"clientId": client, "formId": form, "isRecurring": True, "recurringWeek": week,
                      "dueDate": base_due + timedelta(days=7 * (week - 1) + rng.choice([0, 0, 0, 1])),
                      "status": rng.choice(["pending", "overdue", "completed", None]), "responseId": None,
                      "extra": {"n": n, "tags": ["x", rng.random()]}}
            if total is not None:
                fields["totalWeeks"] = total
            if week == 1 and rng.random() < 0.2:
                del fields["recurringWeek"]
            if rng.random() < 0.05:
                fields["dueDate"] = "not a date"
            members[f"m{n}-{week}-{rng.randrange(10**6)}"] = Document(A, "", fields)
        for _ in range(rng.randint(0, 5)):
            week = rng.choice([1, 2, 3, 4, 5, 9, "2"])
            fields = {"clientId": client, "formId": form, "recurringWeek": week,
                      "score": rng.choice([None, 3, 4.5, 9]),
                      "submittedAt": start + timedelta(days=rng.randint(0, 60), seconds=rng.randint(0, 99))}
            if rng.random() < 0.15:
                fields["assignmentId"] = rng.choice(["gone", ""])
            answers[f"r{n}-{rng.randrange(10**6)}"] = Document(R, "", fields)
    return State(source="generated", read_time=None, collections={
        A: {k: Document(A, k, d.fields) for k, d in members.items()},
        R: {k: Document(R, k, d.fields) for k, d in answers.items()}})


def plan_json(source: str, spec=CHECKINS) -> dict:
    run = reconcile("plan", "--spec", spec, "--source", source, "--format", "json", "--quiet")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assert_nothing_lost(before: State, after: State, app_values: dict | None = None) -> None:
    """Every pre-existing document is still there with every non-empty value, but the one status
    move a link makes; and every value another writer wrote is still what it wrote."""
    for name, docs in before.collections.items():
        for doc_id, old in docs.items():
            new = after.collections[name].get(doc_id)
            assert new is not None, f"{old.path} was deleted"
            for field, value in old.fields.items():
                if is_empty(value) or (app_values or {}).get((old.path, field)) is not None:
                    continue
                if field == "status" and value in ("pending", "overdue") and new.get(field) == "completed":
                    continue
                assert same(new.get(field), value), (old.path, field, value, new.get(field))
    for (path, field), value in (app_values or {}).items():
        now = after.find(path).get(field)
        # A later run, reading the app's "pending" afresh, may link the assignment: rule 7's move.
        linked_later = field == "status" and value in ("pending", "overdue") and now == "completed" \
            and not is_empty(after.find(path).get("responseId"))
        assert same(now, value) or linked_later, f"{path}.{field} written by the app was overwritten"


def members_per_week(state: State) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for doc in state.collections[A].values():
        week = doc.get("recurringWeek")
        if type(week) is int:
            key = (canonical(doc.get("clientId")), canonical(doc.get("formId")), week)
            counts[key] = counts.get(key, 0) + 1
    return counts


# -- end to end ----------------------------------------------------------------------------------------


def test_the_demo_plans_the_same_live_as_from_its_snapshot_then_converges(live, tmp_path):
    live.load(demo_state())
    exported = tmp_path / "export.json"
    run = reconcile("snapshot", "--source", live.source, "--out", exported, "--spec", CHECKINS)
    assert run.returncode == 0, run.stderr
    on_live, on_file = plan_json(live.source), plan_json(str(exported))
    assert on_live["ops"] == on_file["ops"] and on_live["findings"] == on_file["findings"]
    assert on_live["summary"] == {"create": 379, "link": 17, "fill": 2, "delete": 0, "overwrite": 0,
                                  "findings": 21}
    before = live.read()
    applied = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                        "--journal-dir", tmp_path / "journal")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "converged, nothing lost." in applied.stdout
    assert "Responses preserved ......... YES  (35 of 35)" in applied.stdout
    after = live.read()
    assert_nothing_lost(before, after)
    assert len(after.collections[A]) == len(before.collections[A]) + 379
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
    again = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--journal-dir", tmp_path / "journal")
    assert again.returncode == 0 and "Nothing to apply." in again.stdout
    assert live.read().collections == after.collections  # a re-apply writes nothing


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_previously_unseen_messy_database_converges_in_one_apply(live, tmp_path, seed):
    live.load(messy_state(seed))
    before = live.read()
    applied = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                        "--journal-dir", tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = live.read()
    assert_nothing_lost(before, after)
    assert build_plan(SPEC, after).ops == ()
    assert all(count == 1 for key, count in members_per_week(after).items()
               if members_per_week(before).get(key, 0) <= 1)


def test_the_second_domain_converges_live(live, tmp_path):
    live.load(SnapshotStore(SESSIONS_DEMO).read())
    run = reconcile("apply", "--spec", SESSIONS, "--source", live.source, "--auto-approve",
                    "--journal-dir", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Plan: 17 to create, 8 to link, 0 to fill" in run.stdout
    assert reconcile("check", "--spec", SESSIONS, "--source", live.source).returncode == 0


# -- stale plans, concurrent writers, crashes -------------------------------------------------------------


def test_a_weekly_london_cadence_converges_live_across_the_clock_change(live, tmp_path):
    """Monday 23 March 2026 09:00 GMT; the Mondays 09:00 after London's clocks go forward on the
    29th are BST, 08:00 UTC."""
    spec = tmp_path / "london.yaml"
    spec.write_text(cadence_text("every: {weeks: 1}\ntimezone: Europe/London"))
    base = datetime(2026, 3, 23, 9, tzinfo=UTC)
    live.load(state(assignment("a1", 1, totalWeeks=3, dueDate=base), response("r3", 3)))
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", spec, "--source", live.source, "--out", plan_file).returncode == 0
    applied = reconcile("apply", plan_file, "--journal-dir", tmp_path / "j")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    weeks = {doc.fields["recurringWeek"]: doc.fields for doc in live.read([A]).documents(A).values()}
    assert {week: fields["dueDate"] for week, fields in weeks.items()} == {
        1: base, 2: datetime(2026, 3, 30, 8, tzinfo=UTC), 3: datetime(2026, 4, 6, 8, tzinfo=UTC)}
    assert weeks[3]["responseId"] == "r3"
    assert reconcile("check", "--spec", spec, "--source", live.source).returncode == 0


def test_a_stale_plan_overwrites_nothing_writes_no_half_link_and_reports_the_skips(live, tmp_path):
    live.load(demo_state())
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", plan_file).returncode == 0
    links = {}
    for op in json.loads(plan_file.read_text())["ops"]:
        if op["group"] and op["op"] == "fill_fields":
            links.setdefault(op["group"], []).append(op["path"])
    pairs = [paths for paths in links.values() if len(paths) == 2]
    (member_1, response_1), (member_2, response_2) = sorted(pairs)[:2]
    # Meanwhile the app links response_1 elsewhere and member_2 to another response.
    live.client.document(response_1).update({"assignmentId": "linked-by-the-app"})
    live.client.document(member_2).update({"responseId": "another-response", "status": "completed"})

    stale = reconcile("apply", plan_file, "--journal-dir", tmp_path / "journal")
    assert stale.returncode == 2, stale.stdout + stale.stderr
    assert "4 writes skipped: re-run plan" in stale.stdout
    state = live.read()
    assert state.find(response_1).get("assignmentId") == "linked-by-the-app"
    assert state.find(member_2).get("responseId") == "another-response"
    assert is_empty(state.find(member_1).get("responseId")), "half link written on member_1"
    assert is_empty(state.find(response_2).get("assignmentId")), "half link written on response_2"

    fresh = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--journal-dir", tmp_path / "journal")
    assert fresh.returncode == 0, fresh.stdout
    assert live.read().find(response_1).get("assignmentId") == "linked-by-the-app"
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


class AppWriter(threading.Thread):
    """Writes as the app does while an apply runs: status changes, new fields, filled links, new
    responses. Remembers the last value it wrote to each field."""

    def __init__(self, project: str, host: str, state: State, seconds: float) -> None:
        super().__init__(daemon=True)
        from google.cloud import firestore

        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        self.client = firestore.Client(project=project)
        self.docs = sorted(d.path for docs in state.collections.values() for d in docs.values())
        self.seconds = seconds
        self.written: dict[tuple[str, str], object] = {}
        self.rng = random.Random(42)
        self.errors: list[Exception] = []

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        n = 0
        try:
            while time.monotonic() < end:
                n += 1
                path = self.rng.choice(self.docs)
                changes = {"appTouch": n}
                if path.startswith(A):
                    changes["status"] = self.rng.choice(["overdue", "pending", "completed"])
                    if n % 7 == 0:
                        changes["responseId"] = f"app-response-{n}"
                elif n % 5 == 0:
                    changes["assignmentId"] = f"app-assignment-{n}"
                self.client.document(path).update(changes)
                for field, value in changes.items():
                    self.written[(path, field)] = value
                if n % 11 == 0:
                    new = f"{R}/app-new-{n}"
                    fields = {"clientId": "c01", "formId": "f-weekly", "recurringWeek": 12, "score": 5,
                              "submittedAt": datetime(2025, 11, 20, tzinfo=UTC)}
                    self.client.document(new).create(fields)
                    for field, value in fields.items():
                        self.written[(new, field)] = value
                time.sleep(0.005)
        except Exception as error:  # reported by the test
            self.errors.append(error)


def test_a_concurrent_writer_is_never_overwritten_and_the_result_converges(live, emulator, tmp_path):
    live.load(demo_state())
    before = live.read()
    app = AppWriter(live.project, emulator.host, before, seconds=4)
    app.start()
    first = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--batch-size", "20", "--max-writes-per-second", "150",
                      "--journal-dir", tmp_path)
    app.join()
    assert not app.errors, app.errors
    assert first.returncode in (0, 2), first.stdout + first.stderr
    for _ in range(3):
        if reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0:
            break
        reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                  "--journal-dir", tmp_path)
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
    assert_nothing_lost(before, live.read(), app.written)


@pytest.mark.parametrize("commits_before_kill", [1, 12, 40])
def test_a_crash_mid_apply_then_a_rerun_converges_with_no_duplicate_and_no_loss(live, tmp_path,
                                                                                commits_before_kill):
    live.load(demo_state())
    before = live.read()
    journal_dir = tmp_path / "journal"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", live.source,
         "--auto-approve", "--batch-size", "5", "--max-writes-per-second", "150", "--quiet",
         "--lease-ttl", "5", "--journal-dir", str(journal_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(journal_dir.glob("*.jsonl"))
        if journals and journals[0].read_text().count('"event": "commit"') >= commits_before_kill:
            break
        time.sleep(0.01)
    assert process.poll() is None, "apply finished before it could be killed; slow it down"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    middle = live.read()
    assert len(middle.collections[A]) < len(before.collections[A]) + 379, "the kill came too late"

    # The killed run's lease outlives it until it expires; the rerun waits for that, then takes it.
    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--lock-timeout", "120", "--journal-dir", journal_dir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = live.read()
    assert len(after.collections[A]) == len(before.collections[A]) + 379
    assert members_per_week(after) == {**{k: 1 for k in members_per_week(after)},
                                       **{k: v for k, v in members_per_week(before).items() if v > 1}}
    assert_nothing_lost(before, after)
    assert build_plan(SPEC, after).ops == ()
    for doc in after.collections[R].values():  # every link this tool made holds both ways
        ref = doc.get("assignmentId")
        member = after.collections[A].get(ref) if isinstance(ref, str) else None
        if member is not None and before.find(doc.path).get("assignmentId") != ref:
            assert member.get("responseId") == doc.id


# -- drift, dry runs ----------------------------------------------------------------------------------------


def test_check_names_a_created_assignment_deleted_by_hand(live, tmp_path):
    live.load(demo_state())
    reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
              "--journal-dir", tmp_path)
    victim = f"{A}/{new_week_id(SPEC, ('c03', 'f-weekly'), 9)}"
    assert live.read().find(victim) is not None
    live.client.document(victim).delete()
    check = reconcile("check", "--spec", CHECKINS, "--source", live.source)
    assert check.returncode == 2
    assert f"+ create {victim}" in check.stdout


def test_plan_and_check_leave_the_database_byte_identical(live, tmp_path):
    live.load(demo_state())
    before = live.dump()
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", tmp_path / "p.json",
                     "--detailed-exitcode").returncode == 2
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 2
    assert reconcile("audit", "--spec", CHECKINS, "--source", live.source).returncode == 0
    assert live.dump() == before


# -- the store ---------------------------------------------------------------------------------------------


def _array_in_array(value, inside=False) -> bool:
    if isinstance(value, list):
        return inside or any(_array_in_array(item, True) for item in value)
    if isinstance(value, dict):
        return any(_array_in_array(item, False) for item in value.values())
    return False


def test_every_type_survives_firestore_exactly(live):
    # Firestore itself refuses an array directly inside an array; every other value must survive.
    fields = {f"v{n}": value for n, value in enumerate(VALUES) if not _array_in_array(value)}
    assert len(fields) == len(VALUES) - 1
    things = {"t": Document("things", "t", fields)}
    live.load(State(source="", read_time=None, collections={"things": things}))
    back = live.read(["things"]).collections["things"]["t"]
    assert canonical(back.fields) == canonical(fields)


def test_paged_reads_at_one_read_time_see_every_document_once(live):
    docs = {f"d{n:03d}": Document("many", f"d{n:03d}", {"n": n}) for n in range(53)}
    live.load(State(source="", read_time=None, collections={"many": docs}))
    store = FirestoreStore(live.source, page_size=7)
    read_time = store.server_time("many")
    live.client.document("many/late").create({"n": -1})  # written after the read time
    paged = store.read(["many"], read_time=read_time).collections["many"]
    assert sorted(paged) == sorted(docs)
    assert FirestoreStore(live.source).read(["many"]).collections["many"].keys() == set(docs) | {"late"}


def test_a_named_database_is_its_own_source(live):
    other = FirestoreStore(f"{live.source}/second")
    other.create_all(State(source="", read_time=None, collections={"x": {"a": Document("x", "a", {"v": 1})}}))
    assert other.read(["x"]).collections["x"]["a"].fields == {"v": 1}
    assert live.read(["x"]).collections["x"] == {}


def test_a_stale_group_is_isolated_and_the_rest_of_its_commit_applied(live):
    docs = {f"d{n}": Document("c", f"d{n}", {"n": n, "x": None}) for n in range(10)}
    docs["taken"] = Document("c", "taken", {"mine": True})
    live.load(State(source="", read_time=None, collections={"c": docs}))
    state = live.read(["c"])
    ops = [FillFieldsOp(path=f"c/d{n}", update_time=state.find(f"c/d{n}").update_time,
                        fills=(FieldFill(field="x", value=n, rule="t", before=None),)) for n in range(10)]
    ops.insert(3, CreateDocumentOp(path="c/taken", fields={"dup": True}, rules=("t",)))  # exists
    live.client.document("c/d6").update({"other": "app"})  # d6 is now stale
    results = FirestoreStore(live.source).apply([(op,) for op in ops], datetime.now(UTC))
    skipped = {r.op.path: r.reason for r in results if not r.applied}
    assert skipped == {"c/d6": "the document changed since the plan was made",
                       "c/taken": "the document already exists"}
    after = live.read(["c"])
    assert [after.find(f"c/d{n}").get("x") for n in range(10)] == [0, 1, 2, 3, 4, 5, None, 7, 8, 9]
    assert after.find("c/d6").get("other") == "app"
    assert after.find("c/taken").fields == {"mine": True}


def test_the_journal_records_ops_before_values_and_outcomes(live, tmp_path):
    live.load(demo_state())
    run = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                    "--journal-dir", tmp_path / "j", "--batch-size", "100")
    assert run.returncode == 0
    [journal] = (tmp_path / "j").glob("*-checkins.jsonl")
    assert f"Journal: {tmp_path / 'j'}" in run.stdout
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("commit") == kinds.count("result") >= 5
    commits = [e for e in events if e["event"] == "commit"]
    assert sum(len(e["ops"]) for e in commits) == 407
    fill = next(op for e in commits for op in e["ops"] if op["op"] == "fill_fields")
    before = next(e["before"][fill["path"]] for e in commits if fill["path"] in e["before"])
    assert before["update_time"] == fill["precondition"]["update_time"]
    assert events[-1]["applied"] == 407 and events[-1]["skipped"] == 0


# -- bad input ----------------------------------------------------------------------------------------------


def test_an_unreachable_emulator_is_one_sentence_within_seconds(tmp_path):
    from emulator import free_port

    started = time.monotonic()
    run = reconcile("plan", "--spec", CHECKINS, "--source", "firestore://nobody",
                    env={"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})
    assert time.monotonic() - started < 20
    assert run.returncode == 1
    assert "cannot reach the Firestore emulator at 127.0.0.1:" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_missing_credentials_are_one_sentence(tmp_path):
    run = reconcile("plan", "--spec", CHECKINS, "--source", "firestore://nobody",
                    env={"FIRESTORE_EMULATOR_HOST": None,
                         "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")})
    assert run.returncode == 1
    assert "no Google credentials" in run.stderr and "Traceback" not in run.stderr


def test_bad_specs_and_plans_write_nothing_to_a_live_database(live, tmp_path):
    live.load(demo_state())
    before = live.dump()
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text(CHECKINS.read_text().replace("every_days: 7", "every_days: 0"))
    run = reconcile("apply", "--spec", bad_spec, "--source", live.source, "--auto-approve")
    assert run.returncode == 1 and "every_days must be at least 1" in run.stderr
    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text('{"format": "reconcile-plan", "format_version": "1.0", "ops": [}')
    run = reconcile("apply", bad_plan)
    assert run.returncode == 1 and "not valid JSON" in run.stderr
    assert reconcile("plan", "--spec", CHECKINS, "--source", "firestore://").returncode == 1
    assert live.dump() == before


def test_progress_is_plain_lines_on_stderr_when_piped_and_silent_with_quiet(live):
    live.load(demo_state())
    piped = reconcile("plan", "--spec", CHECKINS, "--source", live.source)
    assert "read check_in_assignments: 45 in " in piped.stderr
    assert "reconcile: planned 109 documents in " in piped.stderr
    assert "Plan: 379 to create" in piped.stdout and "read check_in_assignments" not in piped.stdout
    quiet = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--quiet")
    assert quiet.stderr == "" and quiet.stdout == piped.stdout.replace(piped.stdout.splitlines()[0],
                                                                        quiet.stdout.splitlines()[0])


def test_a_database_with_none_of_the_specs_collections_is_an_error_unless_allowed(live):
    """A wrong project ID reads as an empty database: it must not pass for "no changes, converged"."""
    for command in ("plan", "check", "audit"):
        run = reconcile(command, "--spec", CHECKINS, "--source", live.source, "-q")
        assert run.returncode == 1, (command, run.stdout, run.stderr)
        assert "none of the spec's collections (check_in_assignments, formResponses, clients, forms) " \
               "holds a document" in run.stderr and "--allow-empty" in run.stderr
        allowed = reconcile(command, "--spec", CHECKINS, "--source", live.source, "-q", "--allow-empty")
        assert allowed.returncode == 0, (command, allowed.stderr)
    refused = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve")
    assert refused.returncode == 1 and "--allow-empty" in refused.stderr
