"""reconcile restore: a snapshot's missing documents created at a target, nothing else touched.

The pure stage on built states; the command on the real emulator and on snapshot files: an empty
database, a partly present one, every value type, a writer racing the prompt, a killed restore,
and bad input."""

from __future__ import annotations

import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from builders import CHECKINS, DEMO, ROOT, reconcile
from test_values import VALUES

from reconciler.errors import SelectionError
from reconciler.model import CreateDocumentOp, Document, OpResult, State
from reconciler.restore import Mismatch, check_restore, plan_restore
from reconciler.restore import select as select_collections
from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.values import GeoPoint, Reference, canonical, format_timestamp

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


def doc(path: str, fields: dict, update_time: datetime | None = T0) -> Document:
    collection, _, doc_id = path.partition("/")
    return Document(collection, doc_id, fields, update_time)


def built(*docs: Document, source: str = "built", read_time: datetime | None = T0) -> State:
    collections: dict[str, dict[str, Document]] = {}
    for d in docs:
        collections.setdefault(d.collection, {})[d.id] = d
    return State(source=source, read_time=read_time, collections=collections)


def demo_state() -> State:
    return SnapshotStore(DEMO).read()


def fields_of(state: State) -> dict[str, str]:
    """Every document's fields, exactly (by type), by path."""
    return {d.path: canonical(d.fields) for docs in state.collections.values() for d in docs.values()}


def journal_lines(directory) -> list[list[dict]]:
    return [[json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted(directory.glob("*.jsonl"))]


# -- the pure stage -------------------------------------------------------------------------------------


SNAPSHOT = built(doc("a/new", {"n": 1}), doc("a/same", {"n": 1, "t": T0}), doc("a/float", {"n": 1}),
                 doc("a/other", {"n": 1}), doc("b/new", {"ref": Reference("a/new")}), source="snap.json")
TARGET = built(doc("a/same", {"t": T0, "n": 1}, T1), doc("a/float", {"n": 1.0}, T1),
               doc("a/other", {"n": 2, "extra": True}, T1), doc("a/only-here", {"n": 9}, T1),
               source="firestore://p", read_time=T2)


def test_a_restore_plan_creates_what_is_missing_and_only_counts_what_is_there():
    plan = plan_restore(SNAPSHOT, TARGET, ("a", "b"), "0" * 64)
    assert plan.creates == (CreateDocumentOp(path="a/new", fields={"n": 1}, rules=("restore",)),
                            CreateDocumentOp(path="b/new", fields={"ref": Reference("a/new")},
                                             rules=("restore",)))
    assert all(op.precondition == {"exists": False} for op in plan.creates)
    # 1 and 1.0 are different values: a document holding a double where the snapshot has an
    # integer is different, not identical. A document only at the target is not the restore's.
    assert (plan.identical, plan.different) == (("a/same",), ("a/float", "a/other"))
    assert {name: (c.create, c.identical, c.different) for name, c in plan.counts().items()} == {
        "a": (1, 1, 2), "b": (1, 0, 0)}
    assert (plan.snapshot, plan.target, plan.read_time) == ("snap.json", "firestore://p", T2)
    assert plan.line() == ("Restore: 2 to create, 1 present and identical, 2 present and different; "
                           "0 to delete, 0 to overwrite.")


def test_a_restore_plan_is_limited_to_the_collections_selected():
    plan = plan_restore(SNAPSHOT, TARGET, ("b",), "0" * 64)
    assert [op.path for op in plan.creates] == ["b/new"] and plan.identical == plan.different == ()
    assert list(plan.counts()) == ["b"]


@pytest.mark.parametrize(("wanted", "chosen"), [((), ("a", "b")), (("b",), ("b",)),
                                                (("b", "a", "b"), ("a", "b"))])
def test_the_selection_is_every_collection_of_the_snapshot_or_the_ones_named(wanted, chosen):
    assert select_collections(SNAPSHOT, wanted) == chosen


def test_a_collection_the_snapshot_does_not_hold_is_named_in_the_error():
    with pytest.raises(SelectionError, match=r"snap.json: the snapshot holds no collection A, c \(it "
                                             r"holds a, b\)"):
        select_collections(SNAPSHOT, ("a", "A", "c"))


def created(plan, written_at=T2) -> list[OpResult]:
    return [OpResult(op=op, applied=True, written_at=written_at) for op in plan.creates]


def test_the_check_after_a_clean_restore_is_complete():
    plan = plan_restore(SNAPSHOT, TARGET, ("a", "b"), "0" * 64)
    after = built(*TARGET.collections["a"].values(), doc("a/new", {"n": 1}, T2),
                  doc("b/new", {"ref": Reference("a/new")}, T2))
    check = check_restore(plan, TARGET, after, created(plan))
    assert check.complete and check.changed_by_others == () and check.missing == ()
    assert (check.expected, check.present, check.created, check.as_snapshot) == (5, 5, 2, 2)
    assert (check.present_before, check.unchanged) == (3, 3)


def test_the_check_tells_the_restores_defects_from_other_writers_changes():
    plan = plan_restore(SNAPSHOT, TARGET, ("a", "b"), "0" * 64)
    after = built(doc("a/same", {"t": T0, "n": 1}, T1),
                  doc("a/float", {"n": 1.0, "app": 1}, T2),  # another writer, while the restore ran
                  doc("a/other", {"n": 2, "extra": True}, T1),
                  doc("a/new", {"n": 1.0}, T2),  # what this restore wrote at T2, not the snapshot's value
                  # b/new: gone, deleted by another writer
                  )
    check = check_restore(plan, TARGET, after, created(plan))
    assert not check.complete
    assert check.missing == ("b/new",) and check.present == 4
    assert check.not_as_snapshot == (Mismatch(path="a/new",
                                              detail="n: 1 in the snapshot, 1.0 at the target"),)
    assert check.changed_by_others == ("a/float",) and check.unchanged == 2


def test_a_created_document_written_again_by_another_writer_is_theirs_not_a_defect():
    plan = plan_restore(SNAPSHOT, TARGET, ("b",), "0" * 64)
    after = built(doc("b/new", {"ref": "overwritten by the app"}, T2 + timedelta(seconds=1)))
    check = check_restore(plan, TARGET, after, created(plan))
    assert check.complete and check.not_as_snapshot == () and check.changed_by_others == ("b/new",)


def test_a_skipped_create_makes_the_check_incomplete():
    plan = plan_restore(SNAPSHOT, TARGET, ("b",), "0" * 64)
    skipped = [OpResult(op=plan.creates[0], applied=False, reason="the document already exists")]
    after = built(doc("b/new", {"ref": "the app's"}, T2))
    check = check_restore(plan, TARGET, after, skipped)
    assert not check.complete and check.skipped == tuple(skipped) and check.missing == ()


# -- the emulator: an empty database, a partly present one -------------------------------------------------


def restore(*args, journal_dir, **kwargs) -> subprocess.CompletedProcess:
    return reconcile("restore", *args, "--journal-dir", journal_dir, **kwargs)


def plan_json(source) -> dict:
    run = reconcile("plan", "--spec", CHECKINS, "--source", source, "--format", "json", "--quiet")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def without_update_times(ops: list[dict]) -> list[dict]:
    return [{**op, "precondition": {k: v for k, v in op["precondition"].items() if k != "update_time"}}
            for op in ops]


def test_the_demo_restored_into_an_empty_database_plans_as_the_file_does(live, tmp_path):
    run = restore(DEMO, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Restore: 109 to create, 0 present and identical, 0 present and different; 0 to delete, " \
           "0 to overwrite." in run.stdout
    assert "Snapshot documents present .. YES  (109 of 109)" in run.stdout
    assert "Restore: 109 created, 0 identical, 0 different, 0 skipped; complete" in run.stdout
    restored = live.read()
    assert fields_of(restored) == fields_of(demo_state())

    on_live, on_file = plan_json(live.source), plan_json(DEMO)
    assert on_live["summary"] == on_file["summary"] == {"create": 379, "link": 17, "fill": 2, "delete": 0,
                                                        "overwrite": 0, "findings": 21}
    assert without_update_times(on_live["ops"]) == without_update_times(on_file["ops"])
    assert on_live["findings"] == on_file["findings"]
    # A fill's precondition is the update time of the document as the restore created it.
    for op in on_live["ops"]:
        if op["op"] == "fill_fields":
            written = restored.find(op["path"]).update_time
            assert op["precondition"]["update_time"] == {"$timestamp": format_timestamp(written)}

    [lines] = journal_lines(tmp_path / "j")
    start, end = lines[0], lines[-1]
    assert (start["format"], start["operation"], start["source"], start["ops"]) == \
           ("reconcile-journal", "restore", live.source, 109)
    commits = [line for line in lines if line["event"] == "commit"]
    assert all(op["rules"] == ["restore"] and op["precondition"] == {"exists": False}
               for line in commits for op in line["ops"])
    assert all(before is None for line in commits for before in line["before"].values())
    assert (end["outcome"], end["applied"], end["skipped"]) == ("completed", 109, 0)


def test_a_restore_over_a_partly_present_database_creates_only_what_is_missing(live, tmp_path):
    snapshot = demo_state()
    clients = sorted(snapshot.collections["clients"])
    responses = sorted(snapshot.collections["formResponses"])
    present = {name: dict(docs) for name, docs in snapshot.collections.items() if name != "forms"}
    for doc_id in clients[:3]:  # changed since the backup: must be left exactly as they are now
        old = present["clients"][doc_id]
        present["clients"][doc_id] = replace(old, fields={**old.fields, "name": "changed since the backup"})
    for doc_id in responses[:5]:  # deleted by mistake: to come back
        del present["formResponses"][doc_id]
    live.load(replace(snapshot, collections=present))
    live.client.document("clients/not-in-the-backup").create({"name": "new since"})
    before = live.read()

    run = restore(DEMO, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Restore: 8 to create, 98 present and identical, 3 present and different; 0 to delete, " \
           "0 to overwrite." in run.stdout
    named = "".join(f"  ! clients/{doc_id}\n" for doc_id in clients[:3])
    assert "Present and different (3; other fields than the snapshot's; never overwritten, left as they " \
           f"are):\n{named}" in run.stdout
    assert "Present and identical (98; the snapshot's fields, left as they are):\n  = check_in_assignments/" \
           in run.stdout and "  … and 93 more\n" in run.stdout
    assert "Present before, unchanged ... YES  (101 of 101)" in run.stdout

    after = live.read()
    for d in (d for docs in before.collections.values() for d in docs.values()):
        assert after.find(d.path) == d, f"{d.path} was touched"  # fields and update time
    created = {d.path for docs in after.collections.values() for d in docs.values()} - \
              {d.path for docs in before.collections.values() for d in docs.values()}
    assert created == {*(f"formResponses/{i}" for i in responses[:5]), *(f"forms/{i}" for i in
                                                                        snapshot.collections["forms"])}
    for path in created:
        assert canonical(after.find(path).fields) == canonical(snapshot.find(path).fields)
    [lines] = journal_lines(tmp_path / "j")
    assert sorted(op["path"] for line in lines if line["event"] == "commit" for op in line["ops"]) == \
        sorted(created)

    again = restore(DEMO, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j2")
    assert again.returncode == 0 and "Restore: 0 to create, 106 present and identical" in again.stdout
    assert not (tmp_path / "j2").exists(), "a restore with nothing to create writes no journal"
    assert live.read().collections == after.collections


def test_a_dry_run_and_a_refused_confirmation_write_nothing(live, tmp_path):
    dry = restore(DEMO, "--to", live.source, "--dry-run", "--format", "json", journal_dir=tmp_path / "j")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["format"] == "reconcile-restore" and report["result"] is None
    assert report["summary"] == {"create": 109, "identical": 0, "different": 0, "delete": 0, "overwrite": 0}
    asked = restore(DEMO, "--to", live.source, journal_dir=tmp_path / "j")  # stdin is not a terminal
    assert asked.returncode == 1
    assert "refusing to restore without confirmation: standard input is not a terminal" in asked.stderr
    assert live.read().collections == {} and not (tmp_path / "j").exists()


def test_only_the_collections_named_are_restored(live, tmp_path):
    run = restore(DEMO, "--to", live.source, "--collection", "forms", "--collection", "clients",
                  "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {name: len(docs) for name, docs in live.read().collections.items()} == {"clients": 26, "forms": 3}
    wrong = restore(DEMO, "--to", live.source, "--collection", "Forms", "--auto-approve",
                    journal_dir=tmp_path / "j")
    assert wrong.returncode == 1 and "the snapshot holds no collection Forms" in wrong.stderr


# -- every value type ----------------------------------------------------------------------------------------


def _array_in_array(value, inside=False) -> bool:
    if isinstance(value, list):
        return inside or any(_array_in_array(item, True) for item in value)
    if isinstance(value, dict):
        return any(_array_in_array(item) for item in value.values())
    return False


def every_type_snapshot(tmp_path, values) -> tuple:
    """One document per value, and one holding them all in a map and an array."""
    docs = {f"v{n:02d}": Document("things", f"v{n:02d}", {"v": value}) for n, value in enumerate(values)}
    docs["all"] = Document("things", "all", {"map": {f"v{n:02d}": v for n, v in enumerate(values)},
                                             "list": [v for v in values if not isinstance(v, list)]})
    snapshot = State(source="", read_time=T0, collections={"things": docs})
    path = tmp_path / "types.json"
    path.write_bytes(snapshot_bytes(snapshot))
    return path, snapshot


TYPES = [*VALUES, math.nan, GeoPoint(0.0, 0.0), {"$map": {"$reference": "not a tag"}}]


def test_every_value_type_round_trips_through_a_restore_to_firestore(live, tmp_path):
    values = [v for v in TYPES if not _array_in_array(v)]
    assert {type(v) for v in values} >= {type(None), bool, int, float, str, bytes, datetime, Reference,
                                         GeoPoint, list, dict}
    path, snapshot = every_type_snapshot(tmp_path, values)
    run = restore(path, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    back = live.read(["things"]).collections["things"]
    assert sorted(back) == sorted(snapshot.collections["things"])
    for doc_id, d in snapshot.collections["things"].items():
        assert canonical(back[doc_id].fields) == canonical(d.fields), doc_id
        if doc_id != "all":
            assert type(back[doc_id].fields["v"]) is type(d.fields["v"]), doc_id  # 1 stays int, 1.0 float
    again = restore(path, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j")
    assert f"0 to create, {len(back)} present and identical, 0 present and different" in again.stdout


def test_every_value_type_round_trips_through_a_restore_to_a_new_snapshot_file(tmp_path):
    path, snapshot = every_type_snapshot(tmp_path, TYPES)  # a file holds arrays in arrays too
    target = tmp_path / "staging" / "copy.json"
    target.parent.mkdir()
    run = restore(path, "--to", target, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert fields_of(SnapshotStore(target).read()) == fields_of(snapshot)
    written = target.read_bytes()
    again = restore(path, "--to", target, "--auto-approve", journal_dir=tmp_path / "j")
    assert again.returncode == 0 and "0 to create" in again.stdout
    assert target.read_bytes() == written, "a restore with nothing to create rewrote the file"


def test_a_restore_into_an_existing_snapshot_file_keeps_what_it_holds(tmp_path):
    target = tmp_path / "target.json"
    own = built(doc("clients/c01", {"name": "the target's own"}), doc("other/x", {"kept": True}),
                source="", read_time=T0)
    target.write_bytes(snapshot_bytes(own))
    run = restore(DEMO, "--to", target, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Restore: 108 to create, 0 present and identical, 1 present and different" in run.stdout
    after = SnapshotStore(target).read()
    assert after.find("clients/c01").fields == {"name": "the target's own"}
    assert after.find("other/x").fields == {"kept": True}
    assert len(fields_of(after)) == 110


def test_a_document_firestore_cannot_hold_is_skipped_before_sending_and_reported(live, tmp_path):
    path = tmp_path / "nested.json"
    path.write_bytes(snapshot_bytes(built(doc("things/ok", {"v": [1, 2]}), doc("things/nested", {"v": [[1]]}),
                                          source="", read_time=T0)))
    run = restore(path, "--to", live.source, "--auto-approve", journal_dir=tmp_path / "j")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "! skipped things/nested: Firestore cannot store an array directly inside an array" in run.stdout
    assert "NOT complete: 1 not created (never forced)" in run.stdout
    assert sorted(live.read(["things"]).collections["things"]) == ["ok"]


# -- a concurrent writer, a killed restore ----------------------------------------------------------------


def test_a_document_created_by_another_writer_while_the_prompt_waits_is_skipped(live, tmp_path):
    """The operator reads the plan; meanwhile the app creates one of the documents the plan
    creates. The answer "yes" must leave the app's document as it is, and say so."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "restore", str(DEMO), "--to", live.source, "--quiet",
         "--journal-dir", str(tmp_path / "j")],
        stdin=follower, stdout=follower, stderr=follower, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    os.close(follower)
    seen = b""
    while b"Only 'yes' is accepted" not in seen:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, seen[-500:]
        seen += os.read(leader, 65536)
    assert b"Create these 109 documents at " + live.source.encode() in seen
    live.client.document("clients/c07").create({"name": "created by the app", "n": 1})
    os.write(leader, b"yes\n")
    while process.poll() is None or select.select([leader], [], [], 0.1)[0]:
        try:
            seen += os.read(leader, 65536)
        except OSError:
            break
    process.wait(timeout=120)
    out = seen.decode(errors="replace").replace("\r\n", "\n")
    assert process.returncode == 2, out[-2000:]
    assert "! skipped clients/c07: the document already exists" in out
    assert "Restore: 108 created, 0 identical, 0 different, 1 skipped; NOT complete: 1 not created" in out
    after = live.read()
    assert after.find("clients/c07").fields == {"name": "created by the app", "n": 1}
    assert len(fields_of(after)) == 109
    [lines] = journal_lines(tmp_path / "j")
    results = {r["path"]: r for line in lines if line["event"] == "result" for r in line["results"]}
    assert results["clients/c07"]["applied"] is False and lines[-1]["skipped"] == 1


def start_slow_restore(live, tmp_path, journal_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "restore", str(DEMO), "--to", live.source, "--auto-approve",
         "--batch-size", "3", "--max-writes-per-second", "20", "--quiet", "--journal-dir", str(journal_dir),
         "--lease-ttl", "5"],  # a killed run keeps its lease until it expires: keep that short
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def wait_for_commits(process, journal_dir, commits: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(journal_dir.glob("*.jsonl"))
        if journals and journals[0].read_text().count('"event": "commit"') >= commits:
            return
        time.sleep(0.01)
    raise AssertionError("the restore finished before it could be stopped; slow it down")


def test_a_killed_restore_run_again_creates_only_what_is_missing(live, tmp_path):
    journal_dir = tmp_path / "journal"
    process = start_slow_restore(live, tmp_path, journal_dir)
    wait_for_commits(process, journal_dir, 4)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    middle = live.read()
    landed = len(fields_of(middle))
    assert 0 < landed < 109, "the kill came too early or too late"

    rerun = restore(DEMO, "--to", live.source, "--auto-approve", "--lock-timeout", "120",
                    journal_dir=journal_dir)  # the killed run's lease expires first
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Restore: {109 - landed} to create, {landed} present and identical, 0 present and different" \
           in rerun.stdout
    after = live.read()
    assert fields_of(after) == fields_of(demo_state())
    for d in (d for docs in middle.collections.values() for d in docs.values()):
        assert after.find(d.path) == d  # what the killed run wrote is not written again
    first, second = journal_lines(journal_dir)
    assert first[-1]["event"] != "end"  # SIGKILL: no closing line, its commit lines say what may have landed
    assert second[0]["ops"] == 109 - landed and second[-1]["applied"] == 109 - landed


def test_a_stopped_restore_says_what_it_wrote_and_closes_its_journal(live, tmp_path):
    journal_dir = tmp_path / "journal"
    process = start_slow_restore(live, tmp_path, journal_dir)
    wait_for_commits(process, journal_dir, 2)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    [line] = stderr.strip().splitlines()
    [lines] = journal_lines(journal_dir)
    end = lines[-1]
    assert end["event"] == "end" and end["outcome"] == "failed"
    assert f"error: {live.source}: restore interrupted. {end['applied']} of 109 writes were applied" in line
    assert "Re-running the same restore is safe: it creates only the documents still missing" in line
    # The journal's count is what the results said; a commit cut short may or may not have landed.
    assert end["applied"] <= len(fields_of(live.read())) <= end["applied"] + end["in_doubt"]


# -- bad input --------------------------------------------------------------------------------------------


def one_sentence(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    return line


def test_an_unreachable_emulator_is_one_sentence_and_nothing_is_written(tmp_path):
    from emulator import free_port

    run = restore(DEMO, "--to", "firestore://demo-project", "--auto-approve", journal_dir=tmp_path / "j",
                  env={"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})
    assert "cannot reach the Firestore emulator at 127.0.0.1:" in one_sentence(run)
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize(("content", "said"), [
    (None, "snapshot file not found"),
    (b'{"format": "reconcile-plan", "format_version": "1.1"}', "not a snapshot file"),
    (b"not json at all", "not valid JSON"),
    (b'{"format": "reconcile-snapshot", "format_version": "2.0", "collections": {}}',
     "format_version '2.0' is not supported"),
])
def test_a_snapshot_that_is_missing_or_not_a_snapshot_is_one_sentence(tmp_path, content, said):
    source = tmp_path / "backup.json"
    if content is not None:
        source.write_bytes(content)
    target = tmp_path / "target.json"
    line = one_sentence(restore(source, "--to", target, "--auto-approve", journal_dir=tmp_path / "j"))
    assert f"{source}" in line and said in line
    assert not target.exists() and not (tmp_path / "j").exists()


def test_a_target_that_is_not_a_snapshot_file_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "notes.json"
    target.write_text('{"mine": true}')
    line = one_sentence(restore(DEMO, "--to", target, "--auto-approve", journal_dir=tmp_path / "j"))
    assert "not a snapshot file" in line and target.read_text() == '{"mine": true}'


def test_restoring_a_snapshot_onto_itself_is_refused(tmp_path):
    source = tmp_path / "backup.json"
    source.write_bytes(DEMO.read_bytes())
    (tmp_path / "link.json").symlink_to(source)
    for same in (source, tmp_path / "." / "backup.json", tmp_path / "link.json"):
        line = one_sentence(restore(source, "--to", same, "--auto-approve", journal_dir=tmp_path / "j"))
        assert "onto itself" in line
    assert source.read_bytes() == DEMO.read_bytes()


def test_a_live_database_is_not_a_snapshot_to_restore_from(tmp_path):
    line = one_sentence(restore("firestore://my-project", "--to", tmp_path / "t.json", journal_dir=tmp_path))
    assert "restore reads a snapshot file" in line and "reconcile snapshot" in line


def test_a_dry_run_into_a_new_file_creates_no_file_in_any_format(tmp_path):
    target = tmp_path / "staging.json"
    shown = {}
    for fmt in ("text", "markdown", "json"):
        run = restore(DEMO, "--to", target, "--dry-run", "--format", fmt, "-q", journal_dir=tmp_path / "j")
        assert run.returncode == 0 and run.stderr == "", run.stderr
        shown[fmt] = run.stdout
    assert shown["text"].startswith(f"Restore {DEMO} (sha256 ") and ", a new file\n" in shown["text"]
    assert shown["markdown"].startswith(f"### reconcile restore: `{DEMO}` to `{target}`")
    assert "| `formResponses` | 35 | 0 | 0 |" in shown["markdown"]
    assert json.loads(shown["json"])["collections"]["forms"] == {"create": 3, "identical": 0, "different": 0}
    assert not target.exists() and not (tmp_path / "j").exists()


def test_a_new_file_is_created_only_where_no_other_process_has_put_one(tmp_path):
    from reconciler.files import create_new

    path = tmp_path / "new.json"
    create_new(path, b"first")
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        create_new(path, b"second")
    assert path.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["new.json"]
