"""Failure modes at the write boundary, on the real emulator behind a fault-injection proxy: a reply
lost after the server applied a commit, a frozen server, a dead server, a write the server refuses
as invalid. Each must end cleanly: no double write, no half link, a bounded wait, one sentence, a
journal whose closing line is true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from builders import CHECKINS, DEMO, ROOT, reconcile
from faultproxy import FaultProxy

from reconciler.guard import admit
from reconciler.journal import Journal
from reconciler.model import Document, State
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec
from reconciler.store import FirestoreStore
from reconciler.values import is_empty

SPEC = load_spec(CHECKINS)
A, R = "check_in_assignments", "formResponses"


@pytest.fixture
def proxy(emulator):
    with FaultProxy(emulator.host) as running:
        yield running
        assert running.errors == []


def through(proxy: FaultProxy, source: str, monkeypatch, **options) -> FirestoreStore:
    """A store whose client talks to the emulator through the proxy (the client reads the
    address when it is made)."""
    with monkeypatch.context() as scoped:
        scoped.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
        store = FirestoreStore(source, **options)
        store.client()
    return store


def journal_events(directory) -> list[dict]:
    [path] = directory.glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def applied_in_results(events: list[dict]) -> int:
    return sum(r["applied"] for e in events if e["event"] == "result" for r in e["results"])


class CuttingJournal(Journal):
    """The real journal, which also loses the reply of one commit: the server applies the commit,
    the client never hears back and must recognise its own write on the retry."""

    def __init__(self, *args, proxy: FaultProxy, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.proxy, self.at = proxy, at

    def before_commit(self, ops):
        number = super().before_commit(ops)
        if number == self.at:
            self.proxy.cut_after_request(settle=0.5)
        return number


def test_a_commit_whose_reply_is_lost_is_retried_and_recognised_never_written_twice(live, proxy, monkeypatch,
                                                                                   tmp_path):
    live.load(SnapshotStore(DEMO).read())
    store = through(proxy, live.source, monkeypatch, batch_size=50, timeout=30)
    state = store.read(SPEC.collections)  # the channel is up: the cut will hit a commit, not a connect
    plan = build_plan(SPEC, state)
    admission = admit(SPEC, plan, state, plan.ops)
    journal = CuttingJournal(tmp_path, plan, state, datetime.now(UTC), proxy=proxy, at=3)
    results = store.apply(list(admission.groups), datetime.now(UTC), journal, state)
    journal.close(datetime.now(UTC))

    assert proxy.stats()["cuts"] == 1 and proxy.stats()["bytes_swallowed"] > 0
    assert all(r.applied for r in results), [r.reason for r in results if not r.applied]
    confirmed = [r for r in results if r.reason == "confirmed after a retried commit"]
    assert confirmed, "the lost reply was not recognised as this run's own write"
    after = live.read()
    assert build_plan(SPEC, after).ops == ()
    assert len(after.collections[A]) == len(state.collections[A]) + plan.summary.create
    end = journal_events(tmp_path)[-1]
    assert end == {**end, "event": "end", "outcome": "completed", "applied": len(results), "in_doubt": 0}


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_losing_the_server_mid_apply_ends_within_the_timeout_with_one_sentence_and_a_true_journal(
        live, proxy, tmp_path, fault):
    live.load(SnapshotStore(DEMO).read())
    journal_dir = tmp_path / "journal"
    timeout = 4
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", live.source,
         "--auto-approve", "--batch-size", "5", "--max-writes-per-second", "100", "--quiet",
         "--timeout", str(timeout), "--lease-ttl", "5", "--journal-dir", str(journal_dir)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "FIRESTORE_EMULATOR_HOST": proxy.host},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list(journal_dir.glob("*.jsonl"))
        if journals and journals[0].read_text().count('"event": "commit"') >= 5:
            break
        time.sleep(0.01)
    assert process.poll() is None, "apply finished before the server could be lost"
    getattr(proxy, fault)()
    lost = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    waited = time.monotonic() - lost

    assert process.returncode == 1, stderr
    assert waited < timeout + 8, f"the run went on {waited:.1f}s after losing the server"
    # One sentence; and a note when the lease could not be released either (it then expires).
    notes = [line for line in stderr.strip().splitlines() if line.startswith("note: ")]
    assert len(stderr.strip().splitlines()) == len(notes) + 1 and "Traceback" not in stderr, stderr
    assert all("could not release the lease" in note and "expires by itself" in note for note in notes)
    assert "lost the database during apply" in stderr and "Re-running apply is safe" in stderr
    events = journal_events(journal_dir)
    end = events[-1]
    assert end["event"] == "end" and end["outcome"] == "failed" and "no answer" in end["error"]
    assert end["applied"] == applied_in_results(events) > 0
    assert f"{end['applied']} of 407 writes were applied" in stderr

    proxy.close()  # drop whatever the frozen connections still hold; nothing of it may land later
    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--lock-timeout", "120", "--journal-dir", journal_dir)  # a lease left expires
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


def test_a_frozen_server_during_a_read_is_one_sentence_within_the_timeout(live, proxy, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    proxy.blackhole()
    started = time.monotonic()
    run = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--timeout", "3",
                    env={"FIRESTORE_EMULATOR_HOST": proxy.host})
    assert time.monotonic() - started < 3 + 10
    assert run.returncode == 1
    assert "no answer from the database while" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


# -- writes the server cannot take ---------------------------------------------------------------------


BIG = "x" * 600_000  # two of these in one document pass Firestore's 1 MiB limit


def oversized_link_state() -> State:
    """The demo, plus a series whose week-1 link would copy a 600 kB score into an assignment that
    already holds a 600 kB note: that one write would make a document over 1 MiB."""
    demo = SnapshotStore(DEMO).read()
    due = datetime(2025, 9, 1, 9, tzinfo=UTC)
    base = Document(A, "huge-base", {"clientId": "c-big", "formId": "f-big", "isRecurring": True,
                                     "recurringWeek": 1, "totalWeeks": 2, "dueDate": due, "status": "pending",
                                     "responseId": None, "note": BIG})
    answer = Document(R, "huge-answer", {"clientId": "c-big", "formId": "f-big", "recurringWeek": 1,
                                         "score": BIG, "submittedAt": due})
    collections = {name: dict(docs) for name, docs in demo.collections.items()}
    collections[A][base.id] = base
    collections[R][answer.id] = answer
    return State(source="", read_time=None, collections=collections)


def test_a_write_over_firestores_limits_is_skipped_before_sending_and_the_rest_applied(live, tmp_path):
    live.load(oversized_link_state())
    run = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                    "--journal-dir", tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"skipped {A}/huge-base: the document would be 1,200," in run.stdout
    assert f"skipped {R}/huge-answer: its link partner was skipped" in run.stdout
    after = live.read()
    assert is_empty(after.find(f"{A}/huge-base").get("responseId"))  # no half link
    assert is_empty(after.find(f"{R}/huge-answer").get("assignmentId"))
    pending = build_plan(SPEC, after)
    assert {op.path for op in pending.ops} == {f"{A}/huge-base", f"{R}/huge-answer"}
    end = journal_events(tmp_path)[-1]
    assert end["outcome"] == "completed" and end["skipped"] == 2


def test_a_write_the_server_refuses_as_invalid_is_skipped_with_its_reason_and_the_rest_committed(live):
    live.load(oversized_link_state())
    store = FirestoreStore(live.source)
    state = store.read(SPEC.collections)
    plan = build_plan(SPEC, state)
    # Without the fresh documents, the store cannot foresee the size: the server is the judge.
    results = store.apply(list(admit(SPEC, plan, state, plan.ops).groups), datetime.now(UTC))
    refused = {r.op.path: r.reason for r in results if not r.applied}
    assert refused == {f"{A}/huge-base": "the database refused the write as invalid: 400 maximum entity size "
                                         "is 1048576 bytes",
                       f"{R}/huge-answer": "the database refused the write as invalid: 400 maximum entity "
                                           "size is 1048576 bytes"}
    assert sum(r.applied for r in results) == len(plan.ops) - 2
    assert {op.path for op in build_plan(SPEC, live.read()).ops} == set(refused)
