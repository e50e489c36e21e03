"""One writer at a time: the lease on a database (the real emulator) and the lock on a snapshot file.

Two runs started together, a holder that expires or is killed, force-unlock with the wrong and the
right ID, a lease taken away mid-run, Ctrl-C and error paths, and the lock collection kept out of
every read of data. Each run is the real command in its own process; each wait is for an event
(a journal line, a lease document, a line on stderr), never for a length of time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, reconcile
from filelock import FileLock

from reconciler.errors import LeaseError, LeaseHeld, LeaseLost
from reconciler.lease import (
    LEASE_DOCUMENT,
    Holder,
    Owner,
    force_unlock,
    hold_lease,
    read_holder,
    take_lease,
)
from reconciler.model import Document
from reconciler.snapshot import SnapshotStore
from reconciler.store import LOCK_COLLECTION, FirestoreStore

ME = Owner.this_process()
DIGEST = "sha256:" + "ab" * 32


def lease_document(source: str, collection: str = LOCK_COLLECTION) -> Document | None:
    return FirestoreStore(source, lock_collection=collection).read_lease(LEASE_DOCUMENT)[0]


def holder(source: str) -> Holder:
    doc = lease_document(source)
    assert doc is not None, "there is no lease document"
    return read_holder(doc, source)


def loaded(live) -> str:
    live.load(SnapshotStore(DEMO).read())
    return live.dump()


def start_apply(live, journal_dir: Path, *options: str) -> subprocess.Popen:
    """An apply in its own process group (so a signal reaches it alone), stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", live.source,
         "--auto-approve", "--batch-size", "5", "--quiet", "--journal-dir", str(journal_dir), *options],
        cwd=journal_dir.parent, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def commits(journal_dir: Path) -> int:
    journals = list(journal_dir.glob("*.jsonl"))
    return journals[0].read_text().count('"event": "commit"') if journals else 0


def wait_until(condition, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process is None or process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def journal_events(journal_dir: Path) -> list[dict]:
    [path] = journal_dir.glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- a second run --------------------------------------------------------------------------------------


@pytest.mark.parametrize("saved_plan", [True, False], ids=["saved-plan", "spec-and-source"])
def test_a_second_apply_while_the_lease_is_held_names_its_holder_and_writes_nothing(live, tmp_path,
                                                                                    saved_plan):
    before = loaded(live)
    plan = tmp_path / "plan.json"
    made = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", plan, "--quiet")
    assert made.returncode == 0, made.stderr
    command = ([plan] if saved_plan else ["--spec", CHECKINS, "--source", live.source, "--auto-approve"])
    with hold_lease(FirestoreStore(live.source), operation="apply", plan_digest=DIGEST) as lease:
        second = reconcile("apply", *command, "--journal-dir", tmp_path / "journal")
        assert holder(live.source).lease_id == lease.lease_id and holder(live.source).state == "held"

    assert second.returncode == 1, second.stdout + second.stderr
    sentence = one_sentence(second.stderr)
    assert f"{live.source} is locked by another run: lease {lease.lease_id} of {ME} (apply, plan " \
           f"{DIGEST[:19]}) since " in sentence
    assert ", expires " in sentence and "nothing was written" in sentence
    assert f"`reconcile force-unlock {lease.lease_id} --source {live.source}`" in sentence
    assert live.dump() == before
    assert not (tmp_path / "journal").exists(), "the refused run started a journal"
    assert holder(live.source).state == "released"  # by the test's own hold, on leaving the block


def test_two_applies_started_together_one_writes_the_other_names_it_and_ctrl_c_releases(live, tmp_path):
    loaded(live)
    first_journal, second_journal = tmp_path / "first", tmp_path / "second"
    first = start_apply(live, first_journal, "--max-writes-per-second", "2")  # 407 writes: minutes
    wait_until(lambda: commits(first_journal) >= 1, "the first run's first commit", first)
    lease = holder(live.source)
    assert (lease.owner.pid, lease.operation, lease.state) == (first.pid, "apply", "held")
    assert lease.plan_digest and lease.plan_digest.startswith("sha256:")

    second = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                       "--journal-dir", second_journal)
    assert second.returncode == 1, second.stdout + second.stderr
    sentence = one_sentence(second.stderr)
    assert f"lease {lease.lease_id} of {lease.owner} (apply" in sentence and f" pid {first.pid} " in sentence
    assert not second_journal.exists(), "the second run wrote"

    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1 and "apply interrupted" in one_sentence(stderr), stderr
    released = holder(live.source)
    assert (released.lease_id, released.state) == (lease.lease_id, "released")
    assert released.released_by == f"{lease.owner} (its holder, at the end of its apply)"
    assert journal_events(first_journal)[-1]["outcome"] == "failed"

    third = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--journal-dir", tmp_path / "third")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "note:" not in third.stderr, "a released lease is free: nothing to wait for or take over"
    assert holder(live.source).lease_id != lease.lease_id
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


def test_lock_timeout_waits_for_the_holder_to_release_then_takes_the_lease(live, tmp_path):
    loaded(live)
    held = take_lease(FirestoreStore(live.source), operation="restore")
    waiting = start_apply(live, tmp_path / "journal", "--lock-timeout", "300")
    assert waiting.stderr is not None
    line = waiting.stderr.readline()  # the run says it waits, and for whom, before it waits
    assert f"is locked by another run: lease {held.lease_id} of {ME} (restore) since " in line
    assert "waiting up to 300s for it (--lock-timeout)" in line
    assert waiting.poll() is None and commits(tmp_path / "journal") == 0
    held.release()
    _, rest = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, rest
    assert holder(live.source).lease_id != held.lease_id
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


def test_a_lease_held_past_the_lock_timeout_is_still_refused_saying_how_long_it_waited(live, tmp_path):
    before = loaded(live)
    with hold_lease(FirestoreStore(live.source), operation="rollback") as lease:
        run = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                        "--lock-timeout", "2", "--journal-dir", tmp_path / "journal")
    assert run.returncode == 1
    notes, error = run.stderr.strip().splitlines()[:-1], run.stderr.strip().splitlines()[-1]
    assert len(notes) == 1 and "waiting up to 2s" in notes[0], run.stderr
    assert f"lease {lease.lease_id} of {ME} (rollback)" in error
    assert "(waited 2s); nothing was written" in error
    assert live.dump() == before


# -- expiry and takeover -------------------------------------------------------------------------------


def test_an_expired_lease_is_taken_over_and_the_takeover_is_said(live, tmp_path):
    loaded(live)
    stale = take_lease(FirestoreStore(live.source), operation="apply", ttl=1, renew=False)  # never released
    run = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--quiet",
                    "--lock-timeout", "120", "--journal-dir", tmp_path / "journal")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"note: {live.source}: took over an expired lease (lease {stale.lease_id} of {ME} (apply) " \
           "since " in run.stderr and ", expired " in run.stderr
    doc = lease_document(live.source)
    assert doc is not None and doc.fields["taken_over_from"] == stale.lease_id
    assert doc.fields["state"] == "released" and doc.fields["lease_id"] != stale.lease_id
    with pytest.raises(LeaseLost, match="lost its lease|could not be renewed"):
        stale.check()
    stale.release()  # the old holder, back: it must not release the lease another run took
    assert lease_document(live.source) == doc


def test_a_killed_apply_keeps_its_lease_until_it_expires_then_the_next_run_takes_it_over(live, tmp_path):
    loaded(live)
    killed = start_apply(live, tmp_path / "killed", "--max-writes-per-second", "5", "--lease-ttl", "5")
    wait_until(lambda: commits(tmp_path / "killed") >= 2, "two commits", killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    left = holder(live.source)
    assert (left.state, left.owner.pid) == ("held", killed.pid), "a killed run cannot release its lease"

    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--quiet",
                      "--lock-timeout", "120", "--journal-dir", tmp_path / "rerun")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"took over an expired lease (lease {left.lease_id} of {left.owner} (apply" in rerun.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


# -- force-unlock -------------------------------------------------------------------------------------


def test_force_unlock_refuses_a_wrong_id_and_releases_the_right_one(live, tmp_path):
    loaded(live)
    nothing = reconcile("force-unlock", "0123456789abcdef", "--source", live.source, "--auto-approve")
    assert nothing.returncode == 1 and "there is no lease on this database" in one_sentence(nothing.stderr)

    held = take_lease(FirestoreStore(live.source), operation="apply", ttl=3600, renew=False)
    untouched = lease_document(live.source)
    wrong = reconcile("force-unlock", "0123456789abcdef", "--source", live.source, "--auto-approve")
    assert wrong.returncode == 1
    sentence = one_sentence(wrong.stderr)
    assert f"the lease on this database is not 0123456789abcdef but lease {held.lease_id} of {ME}" in sentence
    assert "nothing was changed" in sentence
    unasked = reconcile("force-unlock", held.lease_id, "--source", live.source, stdin="yes\n")
    assert unasked.returncode == 1 and "standard input is not a terminal" in one_sentence(unasked.stderr)
    assert lease_document(live.source) == untouched

    right = reconcile("force-unlock", held.lease_id, "--source", live.source, "--auto-approve")
    assert right.returncode == 0, right.stderr
    assert right.stdout.startswith(f"Released the lease {held.lease_id} of {ME} (apply) since ")
    released = holder(live.source)
    assert (released.lease_id, released.state) == (held.lease_id, "released")
    assert released.released_by is not None and released.released_by.endswith("(force-unlock)")
    with pytest.raises(LeaseLost, match=f"lost its lease {held.lease_id}: it was released at .*force-unlock"):
        held.check()

    again = reconcile("force-unlock", held.lease_id, "--source", live.source, "--auto-approve")
    assert again.returncode == 0 and again.stdout.startswith("Nothing to do: the lease")
    free = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                     "--journal-dir", tmp_path / "journal")
    assert free.returncode == 0, free.stdout + free.stderr


def test_force_unlock_of_a_snapshot_file_says_its_lock_is_the_operating_systems(tmp_path):
    run = reconcile("force-unlock", "0123456789abcdef", "--source", DEMO, "--auto-approve")
    assert run.returncode == 1 and "operating-system lock" in one_sentence(run.stderr)


def test_a_run_whose_lease_is_taken_away_stops_before_its_next_commit(live, tmp_path):
    loaded(live)
    journal = tmp_path / "journal"
    run = start_apply(live, journal, "--max-writes-per-second", "10")
    wait_until(lambda: commits(journal) >= 2, "two commits", run)
    lease = holder(live.source)
    force_unlock(FirestoreStore(live.source), lease.lease_id, lambda holder, now: None)
    sent = commits(journal)  # at most one more may have passed its check before the release

    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1
    sentence = one_sentence(stderr)
    assert f"this run lost its lease {lease.lease_id}: it was released at " in sentence
    assert "(force-unlock); stopped before the next commit" in sentence and "writes were applied" in sentence
    assert "Re-run apply once the run that holds the lease now has ended" in sentence
    events = journal_events(journal)
    assert sent <= commits(journal) <= sent + 1
    end = events[-1]
    assert end["event"] == "end" and end["outcome"] == "failed" and "lost its lease" in end["error"]
    applied = sum(r["applied"] for e in events if e["event"] == "result" for r in e["results"])
    assert end["applied"] == applied < 407 and end["in_doubt"] == 0
    after = holder(live.source)
    assert after.state == "released" and after.released_by and after.released_by.endswith("(force-unlock)")

    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 2
    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--journal-dir", tmp_path / "rerun")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


# -- every way out releases ----------------------------------------------------------------------------


def test_an_apply_that_fails_releases_its_lease_and_bad_input_takes_none(live, tmp_path):
    # An empty database is refused after the lease is taken (it is found by the read under it).
    empty = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--quiet",
                      "--journal-dir", tmp_path / "journal")
    assert empty.returncode == 1 and "none of the spec's collections" in one_sentence(empty.stderr)
    failed = holder(live.source)
    assert failed.state == "released"
    assert failed.released_by == f"{failed.owner} (its holder, at the end of its apply)"

    other = f"firestore://{live.project}-bad-input"
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("name: [")
    for command in (["--spec", bad_spec, "--source", other, "--auto-approve"], [tmp_path / "missing.json"]):
        run = reconcile("apply", *command, "--journal-dir", tmp_path / "journal")
        assert run.returncode == 1
        one_sentence(run.stderr)
    assert lease_document(other) is None, "bad input took a lease"


# -- the lock collection is never data ------------------------------------------------------------------


def test_the_lock_collection_never_appears_in_a_snapshot_a_read_or_a_plan(live, tmp_path):
    loaded(live)
    with hold_lease(FirestoreStore(live.source), operation="apply"):
        pass
    with hold_lease(FirestoreStore(live.source, lock_collection="ops_locks"), operation="apply"):
        pass
    assert lease_document(live.source) is not None and lease_document(live.source, "ops_locks") is not None

    def exported(*options: str, env: dict | None = None) -> set[str]:
        out = tmp_path / "snapshot.json"
        run = reconcile("snapshot", "--source", live.source, "--out", out, *options, env=env)
        assert run.returncode == 0, run.stderr
        return set(json.loads(out.read_text())["collections"])

    data = {"check_in_assignments", "formResponses", "clients", "forms"}
    assert exported() == data | {"ops_locks"}
    assert exported("--lock-collection", "ops_locks") == data | {LOCK_COLLECTION}
    assert exported(env={"RECONCILE_LOCK_COLLECTION": "ops_locks"}) == data | {LOCK_COLLECTION}
    assert set(FirestoreStore(live.source).read().collections) == data | {"ops_locks"}

    plan = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--format", "json", "--quiet")
    assert plan.returncode == 0 and LOCK_COLLECTION not in plan.stdout

    naming = tmp_path / "naming.yaml"
    naming.write_text(CHECKINS.read_text().replace("reference: [clients, forms]",
                                                   f"reference: [clients, forms, {LOCK_COLLECTION}]"))
    for verb in ("plan", "audit", "check"):
        run = reconcile(verb, "--spec", naming, "--source", live.source)
        assert run.returncode == 1
        assert f"{LOCK_COLLECTION} is the collection of this tool's lease" in one_sentence(run.stderr)
    bad_name = reconcile("snapshot", "--source", live.source, "--out", tmp_path / "x.json",
                         "--lock-collection", "a/b")
    assert bad_name.returncode == 1 and "is not a Firestore collection ID" in one_sentence(bad_name.stderr)


# -- snapshot files ------------------------------------------------------------------------------------


def test_a_second_apply_on_a_locked_snapshot_file_exits_1_and_writes_nothing(tmp_path):
    copy = tmp_path / "demo.json"
    copy.write_bytes(DEMO.read_bytes())
    apply = ("apply", "--spec", CHECKINS, "--source", copy, "--auto-approve", "--journal-dir", tmp_path / "j")
    with FileLock(str(copy) + ".lock"):  # another run, applying to the same file
        refused = reconcile(*apply)
        waited = reconcile(*apply, "--lock-timeout", "1")
    for run in (refused, waited):
        assert run.returncode == 1, run.stdout + run.stderr
        assert f"{copy} is locked by another run: its lock file {copy}.lock is held" in run.stderr
        assert "nothing was written" in run.stderr
    assert "waiting up to 1s" in waited.stderr and "(waited 1s)" in waited.stderr
    assert copy.read_bytes() == DEMO.read_bytes() and not (tmp_path / "j").exists()

    free = reconcile(*apply)
    assert free.returncode == 0, free.stdout + free.stderr
    assert copy.read_bytes() != DEMO.read_bytes()
    with FileLock(str(copy) + ".lock").acquire(timeout=0):
        pass  # released at the end of the run


def test_no_lock_file_is_left_beside_a_mistyped_snapshot_path(tmp_path):
    run = reconcile("apply", "--spec", CHECKINS, "--source", tmp_path / "typo.json", "--auto-approve")
    assert run.returncode == 1 and "snapshot file not found" in one_sentence(run.stderr)
    assert list(tmp_path.iterdir()) == []


# -- the lease document, read strictly ---------------------------------------------------------------------


NOW = datetime(2025, 11, 3, 8, 0, tzinfo=UTC)


def lease_fields(**changes) -> dict:
    fields = {"format": "reconcile-lease", "format_version": "1.0", "lease_id": "3f9c2a7be1d04a65",
              "state": "held", "operation": "apply", "plan_digest": DIGEST,
              "owner": {"user": "alice", "host": "laptop", "pid": 4242},
              "started_at": NOW - timedelta(minutes=3, seconds=12), "renewed_at": NOW,
              "expires_at": NOW + timedelta(seconds=48), "ttl_seconds": 60.0, "released_at": None,
              "released_by": None, "taken_over_from": None}
    return {**fields, **changes}


def test_a_holder_is_described_by_the_servers_clock():
    holder = read_holder(Document(LOCK_COLLECTION, LEASE_DOCUMENT, lease_fields()), "here")
    assert holder.describe(NOW) == ("lease 3f9c2a7be1d04a65 of alice@laptop pid 4242 (apply, plan "
                                    "sha256:abababababab) since 2025-11-03T07:56:48Z (3m12s ago), "
                                    "expires 2025-11-03T08:00:48Z (in 48s)")
    later = NOW + timedelta(minutes=2)
    assert holder.expired(later)
    assert holder.describe(later).endswith("expired 2025-11-03T08:00:48Z (1m12s ago)")
    assert not holder.expired(NOW) and not holder.free(NOW)


@pytest.mark.parametrize("changes, says", [
    ({"format": None}, "not a lease document this tool wrote"),
    ({"format_version": "2.0"}, "format_version '2.0', which this build does not read (it reads 1.x)"),
    ({"owner": "alice"}, "malformed (owner is not a map)"),
    ({"owner": {"user": "alice", "host": "laptop", "pid": "4242"}}, "malformed (pid is not an integer)"),
    ({"expires_at": "soon"}, "malformed (expires_at is not a timestamp)"),
    ({"state": "gone"}, "malformed (state is neither 'held' nor 'released')"),
    ({"lease_id": None}, "malformed (lease_id is not a string)"),
])
def test_a_lease_document_this_build_cannot_read_is_refused_not_taken(changes, says):
    with pytest.raises(LeaseError, match=r"^here: .*" + says.replace("(", r"\(").replace(")", r"\)")):
        read_holder(Document(LOCK_COLLECTION, LEASE_DOCUMENT, lease_fields(**changes)), "here")


def test_a_lease_document_this_build_cannot_read_blocks_every_apply(live, tmp_path):
    before = loaded(live)
    live.client.collection(LOCK_COLLECTION).document(LEASE_DOCUMENT).create(
        lease_fields(format_version="2.0"))
    run = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve")
    assert run.returncode == 1 and "upgrade to take the lease" in one_sentence(run.stderr)
    assert live.dump() == before
    with pytest.raises(LeaseError, match="upgrade") as refused:
        take_lease(FirestoreStore(live.source), operation="apply")
    assert not isinstance(refused.value, LeaseHeld)


# -- restore and rollback hold the same lease ------------------------------------------------------------


def test_restore_and_rollback_while_the_lease_is_held_name_the_holder_and_write_nothing(live, tmp_path):
    """A rollback of an apply, and a restore onto a database, each wait for the one writer there
    is: held by another run, both exit 1 naming it, with no write and no journal."""
    loaded(live)
    applied = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--quiet",
                        "--journal-dir", tmp_path / "journal")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [journal] = (tmp_path / "journal").glob("*.jsonl")
    FirestoreStore(live.source).client().document("check_in_assignments/00f0jzsRs13ybXRloeaw").delete()
    before = live.dump()
    with hold_lease(FirestoreStore(live.source), operation="apply", plan_digest=DIGEST) as lease:
        undo = reconcile("rollback", journal, "--auto-approve", "--quiet", "--journal-dir", tmp_path / "undo")
        restore = reconcile("restore", DEMO, "--to", live.source, "--auto-approve", "--quiet",
                            "--journal-dir", tmp_path / "restore")
    for run in (undo, restore):
        assert run.returncode == 1, run.stdout + run.stderr
        assert f"is locked by another run: lease {lease.lease_id} of {ME} (apply" in one_sentence(run.stderr)
    assert live.dump() == before
    assert not (tmp_path / "undo").exists() and not (tmp_path / "restore").exists()
    # Free again: the restore brings the deleted document back, under a lease of its own.
    again = reconcile("restore", DEMO, "--to", live.source, "--auto-approve",
                      "--journal-dir", tmp_path / "r2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert holder(live.source).operation == "restore" and holder(live.source).state == "released"
