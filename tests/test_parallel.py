"""Commits in flight at once (``--parallel``): every guarantee of a one-at-a-time apply still holds
when several workers commit together, under an app writer, a refusal, a lost lease and a SIGKILL.

The emulator answers too fast for commits to overlap by chance; the fault proxy's ``delay`` holds
every chunk, so that each commit is in flight for a while and the workers' commits overlap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import CHECKINS, ROOT, reconcile
from faultproxy import FaultProxy
from test_live import SPEC, A, AppWriter, assert_nothing_lost, demo_state, members_per_week

from reconciler.errors import LeaseLost
from reconciler.journal import Journal, read_journal
from reconciler.model import CreateDocumentOp, FillFieldsOp, OpResult
from reconciler.plan import build_plan
from reconciler.rollback import APPLIED, IN_DOUBT, SKIPPED
from reconciler.store import FirestoreStore, _RateLimiter
from reconciler.values import same


@pytest.fixture
def proxy(emulator):
    with FaultProxy(emulator.host) as running:
        yield running
        assert running.errors == []


def events(path: Path) -> list[dict]:
    """The journal's complete lines (a SIGKILL may leave the last one cut off)."""
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]


def overlapped(journal: list[dict]) -> bool:
    """Some commit line was written while an earlier batch's outcome was still unknown."""
    open_batches: set[int] = set()
    for event in journal:
        if event["event"] == "commit":
            if open_batches:
                return True
            open_batches.add(event["batch"])
        elif event["event"] == "result":
            open_batches.discard(event["batch"])
    return False


def in_effect(op, doc) -> bool:
    """The database holds what ``op`` wrote (values only: an op's write or nothing)."""
    if doc is None:
        return False
    if isinstance(op, CreateDocumentOp):
        return all(same(doc.get(field), value) for field, value in op.fields.items())
    assert isinstance(op, FillFieldsOp)
    return all(same(doc.get(fill.field), fill.value) for fill in op.fills) and (
        op.transition is None or doc.get(op.transition.field) == op.transition.to)


# -- the store, several commits in flight -------------------------------------------------------------------


def planned(live):
    live.load(demo_state())
    before = live.read()
    return before, build_plan(SPEC, before)


def test_a_refusal_inside_one_of_several_concurrent_batches_skips_that_group_alone(live, proxy, monkeypatch,
                                                                                  tmp_path):
    before, plan = planned(live)
    groups = plan.groups()
    links = [group for group in groups if len(group) == 2]
    stale = [links[1], links[-2]]  # in two different batches, written by the app since the plan
    for group in stale:
        live.client.document(group[0].path).update({"note": "the app"})
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
    proxy.delay(0.2)
    store = FirestoreStore(live.source, batch_size=20, parallel=4)
    journal = Journal(tmp_path, plan, before, datetime.now(UTC))
    results = store.apply(list(groups), datetime.now(UTC), journal, before)
    journal.close(datetime.now(UTC))

    stale_paths = {op.path for group in stale for op in group}
    skipped = {r.op.path: r.reason for r in results if not r.applied}
    assert skipped.keys() == stale_paths
    assert {skipped[group[0].path] for group in stale} == {"the document changed since the plan was made"}
    assert all(skipped[group[1].path].startswith("its link partner was skipped: ") for group in stale)
    assert [r.op for r in results] == [op for group in groups for op in group]  # in the plan's order

    written = [event for event in events(journal.path) if event["event"] in ("commit", "result")]
    assert overlapped(written), "the commits did not overlap: the test proves nothing about concurrency"
    past = read_journal(str(journal.path))  # strict: every result line matches its commit line
    assert {w.op.path for w in past.written if w.outcome == SKIPPED} == stale_paths
    assert all(w.outcome == APPLIED for w in past.written if w.op.path not in stale_paths)
    after = live.read()
    for group in stale:  # the app's value kept, no half link
        member = after.find(group[0].path)
        assert member.get("note") == "the app" and same(member.fields, {
            **before.find(group[0].path).fields, "note": "the app"})
        assert same(after.find(group[1].path).fields, before.find(group[1].path).fields)
    assert_nothing_lost(before, after)
    assert len(build_plan(SPEC, after).ops) == 4  # the two stale links, and nothing else


def test_a_lost_lease_stops_every_worker_before_its_next_commit(live, proxy, monkeypatch, tmp_path):
    before, plan = planned(live)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
    proxy.delay(0.1)
    allowed, lock = [5], threading.Lock()
    passed: list[int] = []

    def checkpoint() -> None:  # as a lease does: once lost, lost for every caller
        with lock:
            if allowed[0] == 0:
                raise LeaseLost("the lease was taken over")
            allowed[0] -= 1
            passed.append(1)

    store = FirestoreStore(live.source, batch_size=10, parallel=4)
    journal = Journal(tmp_path, plan, before, datetime.now(UTC))
    with pytest.raises(LeaseLost):
        store.apply(list(plan.groups()), datetime.now(UTC), journal, before, checkpoint=checkpoint)
    journal.close(datetime.now(UTC), LeaseLost("the lease was taken over"))

    journal_events = events(journal.path)
    commits = [e for e in journal_events if e["event"] == "commit"]
    results = [e for e in journal_events if e["event"] == "result"]
    assert len(commits) == len(passed) == 5, "a commit was sent without passing the lease's check"
    assert len(results) == 5 and journal_events[-1]["in_doubt"] == 0  # sent commits finished, recorded
    assert journal_events[-1]["applied"] == sum(len(e["ops"]) for e in commits)
    after = live.read()
    assert len(after.collections[A]) - len(before.collections[A]) == sum(
        op["op"] == "create_document" for e in commits for op in e["ops"])


def test_one_rate_for_all_the_workers(monkeypatch):
    """Four workers booking at once get consecutive turns of one rate, never the same turn."""
    clock = [100.0]
    monkeypatch.setattr("reconciler.store.time.monotonic", lambda: clock[0])
    limiter = _RateLimiter(None, 50.0)
    turns: list[float] = []
    lock = threading.Lock()

    class Stop:
        @staticmethod
        def is_set() -> bool:
            return False

        @staticmethod
        def wait(delay: float) -> bool:
            with lock:
                turns.append(clock[0] + delay)
            return False

    workers = [threading.Thread(target=lambda: [limiter.wait(10, Stop()) for _ in range(5)])
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # 20 commits of 10 writes at 50 writes/s: one every 0.2 s; the first goes at once (no wait).
    assert sorted(turns) == pytest.approx([100.0 + 0.2 * n for n in range(1, 20)])


def test_the_journal_numbers_concurrent_commits_in_file_order_and_reads_back(tmp_path):
    before, plan = demo_state(), build_plan(SPEC, demo_state())
    ops = list(plan.ops)
    journal = Journal(tmp_path, plan, before, datetime.now(UTC))
    chunks = [ops[n:n + 7] for n in range(0, len(ops), 7)]

    def commit(chunk) -> None:
        number = journal.before_commit(chunk)
        time.sleep(0.001)
        journal.after_commit(number, [OpResult(op=op, applied=False, reason="test") for op in chunk])

    workers = [threading.Thread(target=lambda part=chunks[n::8]: [commit(c) for c in part]) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    journal.close(datetime.now(UTC))
    lines = events(journal.path)
    numbers = [e["batch"] for e in lines if e["event"] == "commit"]
    assert numbers == list(range(1, len(chunks) + 1))
    assert lines[-1]["skipped"] == len(ops) and lines[-1]["in_doubt"] == 0
    past = read_journal(str(journal.path))
    assert sorted(w.op.path for w in past.written) == sorted(op.path for op in ops)
    journal.after_commit(1, [])  # a late worker after the end line: dropped, the file stays whole
    assert events(journal.path) == lines


# -- the command, several commits in flight ---------------------------------------------------------------


def test_a_concurrent_app_writer_during_a_parallel_apply_is_never_overwritten(live, emulator, tmp_path):
    live.load(demo_state())
    before = live.read()
    app = AppWriter(live.project, emulator.host, before, seconds=3)
    app.start()
    first = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--parallel", "8", "--batch-size", "5", "--journal-dir", tmp_path)
    app.join()
    assert not app.errors, app.errors
    assert first.returncode in (0, 2), first.stdout + first.stderr
    assert "Scores and dates preserved .. YES" in first.stdout and "Other values preserved ...... YES" \
        in first.stdout
    for _ in range(3):
        if reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0:
            break
        reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--parallel", "8",
                  "--journal-dir", tmp_path)
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
    after = live.read()
    assert_nothing_lost(before, after, app.written)
    assert all(count == 1 for key, count in members_per_week(after).items()
               if members_per_week(before).get(key, 0) <= 1)


def test_a_parallel_apply_killed_with_commits_in_flight_leaves_a_true_journal_and_the_rerun_converges(
        live, proxy, tmp_path):
    live.load(demo_state())
    before = live.read()
    journal_dir = tmp_path / "journal"
    proxy.delay(0.3)  # each commit in flight for over half a second: the workers' commits overlap
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FIRESTORE_EMULATOR_HOST": proxy.host}
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", live.source,
         "--auto-approve", "--batch-size", "5", "--parallel", "4", "--quiet", "--lease-ttl", "5",
         "--journal-dir", str(journal_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(journal_dir.glob("*.jsonl"))
        if journals and journals[0].read_text().count('"event": "commit"') >= 6:
            break
        time.sleep(0.01)
    assert process.poll() is None, "apply finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    proxy.forward()

    [path] = journal_dir.glob("*.jsonl")
    killed = events(path)
    assert killed[-1]["event"] != "end"
    assert overlapped(killed), "no two commits were in flight together: the kill proves nothing"
    past = read_journal(str(path)) if path.read_bytes().endswith(b"\n") else None
    middle = live.read()
    commits = {e["batch"]: e for e in killed if e["event"] == "commit"}
    outcomes = {e["batch"]: e["results"] for e in killed if e["event"] == "result"}
    in_doubt = [batch for batch in commits if batch not in outcomes]
    assert in_doubt, "the kill came after every outcome was recorded"
    ops_of = {w.op.path: w.op for w in past.written} if past else None
    for batch, commit in commits.items():
        landed = [in_effect(ops_of[op["path"]] if ops_of else _decoded(op), middle.find(op["path"]))
                  for op in commit["ops"]]
        if batch in outcomes:  # a recorded outcome is the database's
            assert landed == [r["applied"] for r in outcomes[batch]], batch
        else:  # in doubt: one atomic commit, so all of it landed or none of it
            assert all(landed) or not any(landed), batch
    if past is not None:
        assert {w.batch for w in past.written if w.outcome == IN_DOUBT} == set(in_doubt)

    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--parallel", "4", "--lock-timeout", "120", "--journal-dir", journal_dir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = live.read()
    assert len(after.collections[A]) == len(before.collections[A]) + 379
    assert all(count == 1 for key, count in members_per_week(after).items()
               if members_per_week(before).get(key, 0) <= 1)
    assert_nothing_lost(before, after)
    assert build_plan(SPEC, after).ops == ()


def _decoded(raw: dict):
    from reconciler.plan import decode_op

    return decode_op(raw, 0)
