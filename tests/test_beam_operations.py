"""apply --runner beam in operation, on the emulator: a whole run rolled back from its directory of
journals, bad pipeline options refused before the lease, and the lease attacked while the
pipeline's workers commit (taken over mid-job, two operators at once)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, WORKDIR, reconcile
from emulator import free_port
from live import Live

from reconciler.lease import LEASE_DOCUMENT, read_holder, take_lease
from reconciler.snapshot import SnapshotStore
from reconciler.store import LOCK_COLLECTION
from reconciler.values import decode

pytest.importorskip("apache_beam")

# Two workers on this machine: the run's commits come from two bundles, so two journals.
TWO_WORKERS = ("--pipeline-option", "direct_num_workers=2", "--pipeline-option",
               "direct_running_mode=multi_threading", "--batch-size", "20")


def fields(live) -> dict:
    """Every document's fields, without update times (a rollback gives values back, not times)."""
    return {name: {doc_id: doc.fields for doc_id, doc in docs.items()}
            for name, docs in live.read().collections.items() if name != LOCK_COLLECTION}


def lease_of(live):
    """The lease document as it stands (a snapshot whose ``exists`` is False when there is none)."""
    return live.client.collection(LOCK_COLLECTION).document(LEASE_DOCUMENT).get()


def events(where: Path, kind: str) -> list[dict]:
    """The ``kind`` lines of a journal, or of every journal under a directory."""
    paths = [where] if where.is_file() else sorted(where.rglob("*.jsonl"))
    return [event for path in paths for line in path.read_text().splitlines()
            if (event := json.loads(line))["event"] == kind]


def applied(where: Path) -> int:
    return sum(result["applied"] for event in events(where, "result") for result in event["results"])


def one_sentence(done) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def beam_apply(live, tmp_path: Path, *extra) -> Path:
    """Plan the demo and apply it with --runner beam on two workers; the run directory."""
    out = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out).returncode == 0
    done = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--journal-dir",
                     tmp_path / "journals", "--quiet", *TWO_WORKERS, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = (tmp_path / "journals").iterdir()
    assert f"Journal: {run}" in done.stdout
    return run


@contextlib.contextmanager
def running(*args) -> Iterator[subprocess.Popen]:
    """A `reconcile` command in its own process group, its output in files (a pipe nobody reads
    would stop it once full), killed (never left stopped) on the way out."""
    logs = Path(tempfile.mkdtemp(dir=WORKDIR))
    with open(logs / "out", "w") as out, open(logs / "err", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "reconciler", *map(str, args)], cwd=WORKDIR,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=err,
                                   text=True, start_new_session=True)
    process.logs = logs  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    """The command's exit code, stdout and stderr, once it has ended by itself."""
    code = process.wait(timeout=240)
    logs = process.logs  # type: ignore[attr-defined]
    return code, (logs / "out").read_text(), (logs / "err").read_text()


def wait_for_results(process: subprocess.Popen, directory: Path, count: int) -> None:
    """Until the journals under ``directory`` hold ``count`` result lines: the run is committing."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(events(directory, "result")) >= count:
                return
        except (ValueError, OSError):
            pass  # a line being written
        time.sleep(0.02)
    raise AssertionError(f"the run ended or did not commit in time: {process.poll()}")


# -- rollback of a whole Beam run ----------------------------------------------------------------------


def test_a_beam_run_directory_is_rolled_back_as_one_rollback_with_the_per_write_checks(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    loaded = fields(live)
    run = beam_apply(live, tmp_path)
    bundles = sorted(run.glob("*.jsonl"))
    assert len(bundles) == 2 and all(applied(path) for path in bundles), bundles  # the run's two halves
    written = applied(run)
    after_apply = live.dump()

    dry = reconcile("rollback", run, "--dry-run", "--format", "json", "--source", live.source)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    listing = "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n" for path in bundles)
    assert report["journal"]["path"] == str(run)
    assert report["journal"]["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert report["summary"]["delete"] + report["summary"]["restore"] == written and report["result"] is None
    assert live.dump() == after_apply  # a dry run writes nothing

    # Another writer touches a document the second bundle created: only that one is left.
    touched = next(op["path"] for event in events(bundles[1], "commit") for op in event["ops"]
                   if op["op"] == "create_document" and op["group"] is None)
    live.client.document(touched).update({"appNote": "the app wrote here"})
    text = reconcile("rollback", run, "--dry-run")
    assert text.stdout.startswith(f"Rollback of the apply recorded in {run} (2 journals): spec checkins")

    done = reconcile("rollback", run, "--auto-approve", "--format", "json", "--journal-dir", tmp_path / "own")
    assert done.returncode == 2, done.stdout + done.stderr  # one write left as it is
    result = json.loads(done.stdout)
    assert [left["path"] for left in result["left"]] == [touched]
    assert result["left"][0]["code"] == "rollback.changed_since"
    assert result["result"]["deleted"] + result["result"]["restored"] == written - 1
    now = fields(live)
    collection, _, doc_id = touched.partition("/")
    assert now[collection].pop(doc_id)["appNote"] == "the app wrote here"
    assert now == loaded  # every other document field for field as before the apply
    [own] = (tmp_path / "own").glob("*-rollback.jsonl")  # one rollback journal for the whole run
    start = json.loads(own.read_text().splitlines()[0])
    assert start["undoes"] == {"journal": str(run), "sha256": report["journal"]["sha256"],
                               "operation": "apply"}
    holder = read_holder(live.store.read_lease(LEASE_DOCUMENT)[0], "lease")
    assert holder.operation == "rollback" and holder.state == "released"
    assert holder.plan_digest == "sha256:" + report["journal"]["sha256"]

    again = reconcile("rollback", run, "--auto-approve", "--journal-dir", tmp_path / "own")
    assert again.returncode == 2, again.stdout + again.stderr
    assert (f"Rollback: 0 to delete, 0 to restore; 1 left as they are, {written - 1} already as before."
            in again.stdout)


def test_a_killed_rollback_of_a_run_directory_run_again_finishes_it(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    loaded = fields(live)
    run = beam_apply(live, tmp_path)
    own = tmp_path / "own"
    with running("rollback", run, "--auto-approve", "--batch-size", "1", "--max-writes-per-second", "20",
                 "--lease-ttl", "5", "--journal-dir", own, "--quiet") as process:
        wait_for_results(process, own, 5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    undone = applied(own)
    assert 5 <= undone < applied(run)  # stopped part-way
    rerun = reconcile("rollback", run, "--auto-approve", "--lock-timeout", "60", "--journal-dir", own)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    already = int(rerun.stdout.split(" left as they are, ")[1].split(" already as before")[0])
    assert already >= undone  # the killed run's writes (and any in doubt) are recognised, not redone
    assert "every write of the apply is undone" in rerun.stdout
    assert fields(live) == loaded


def _copy_with(run: Path, target: Path, change=None, name: str = "") -> Path:
    """A copy of the run directory; ``change`` edits the start line of a copy of its first journal,
    added under ``name`` (a later name than the run's own journals)."""
    target.mkdir()
    for path in run.glob("*.jsonl"):
        (target / path.name).write_bytes(path.read_bytes())
    if change is not None:
        first = sorted(run.glob("*.jsonl"))[0]
        lines = first.read_text().splitlines(keepends=True)
        start = json.loads(lines[0])
        change(start)
        lines[0] = json.dumps(start, sort_keys=True) + "\n"
        (target / name).write_text("".join(lines))
    return target


def _cut(run: Path, target: Path) -> Path:
    _copy_with(run, target)
    last = sorted(target.glob("*.jsonl"))[-1]
    last.write_bytes(last.read_bytes()[:-1])  # the end line loses its newline: cut off
    return target


@pytest.fixture(scope="module")
def applied_run(emulator, tmp_path_factory) -> Iterator[tuple[Path, Live]]:
    """One Beam apply of the demo, in a project of its own, for the refusals below to copy (each
    refusal happens before the source is read, so they share its journals and its data)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
        live = Live("test-beam-operations-refusals")
        emulator.reset(live.project)
        live.load(SnapshotStore(DEMO).read())
        yield beam_apply(live, tmp_path_factory.mktemp("run")), live
        emulator.reset(live.project)


@pytest.mark.parametrize("make, said", [
    (lambda run, tmp: (tmp / "empty").mkdir() or tmp / "empty", "no journal (*.jsonl) in this directory"),
    (lambda run, tmp: _copy_with(run, tmp / "rb", lambda start: start.update(operation="rollback"),
                                 "99991231T000000000000Z-checkins-rollback.jsonl"),
     "99991231T000000000000Z-checkins-rollback.jsonl, the journal of a rollback"),
    (lambda run, tmp: _copy_with(run, tmp / "source", lambda start: start.update(source="firestore://other"),
                                 "99991231T000000000000Z-checkins-x.jsonl"),
     "its journals are not of one run"),
    (lambda run, tmp: _copy_with(run, tmp / "spec", lambda start: start.update(spec_sha256="0" * 64),
                                 "99991231T000000000000Z-checkins-x.jsonl"),
     "records spec sha256"),
    (lambda run, tmp: _copy_with(run, tmp / "plan", lambda start: start.update(
        plan_read_time={"$timestamp": "2020-01-01T00:00:00Z"}), "99991231T000000000000Z-checkins-x.jsonl"),
     "records plan read time"),
    (lambda run, tmp: _cut(run, tmp / "cut"), "the line is cut off"),
    (lambda run, tmp: "gs://bucket/journal/run-beam", "copy them here first"),
    (lambda run, tmp: "own", "into the run directory it rolls back"),  # --journal-dir names the run
], ids=["empty", "rollback-journal", "other-source", "other-spec", "other-plan", "cut-off", "gs", "own-dir"])
def test_a_directory_that_is_not_one_run_s_journals_is_refused_whole(applied_run, tmp_path, monkeypatch,
                                                                     emulator, make, said):
    run, live = applied_run
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    made = make(run, tmp_path)
    target, own = (run, run) if made == "own" else (made, tmp_path / "own")
    after_apply, lease = live.dump(), lease_of(live).update_time
    done = reconcile("rollback", target, "--auto-approve", "--journal-dir", own)
    assert said in one_sentence(done) and "nothing was written" in done.stderr.lower()
    assert live.dump() == after_apply and lease_of(live).update_time == lease  # no lease taken
    assert not (tmp_path / "own").exists() and len(list(run.glob("*.jsonl"))) == 2


# -- bad options before anything is taken -------------------------------------------------------------


@pytest.mark.parametrize("options, said", [
    (["runner=NoSuchRunner"], "--pipeline-option runner=NoSuchRunner: Beam has no runner of that name"),
    (["runner=DataflowRunnr"], "--pipeline-option runner=DataflowRunnr: Beam has no runner of that name"),
    (["runner=no.such.Runner"], "--pipeline-option runner=no.such.Runner: no such runner class"),
    (["runner=os.getcwd"], "--pipeline-option runner=os.getcwd: os.getcwd is not a Beam runner"),
    (["direct_num_workers=abc"], "invalid int value: 'abc'"),
    (["no_such_option=1"], "'no_such_option=1': not an option"),
    (["runner=DataflowRunner"], "give --pipeline-option temp_location=gs://BUCKET/tmp"),
    (["runner=DataflowRunner", "temp_location=gs://bucket/tmp"],
     "the workers of a remote runner cannot write"),
], ids=["unknown-runner", "misspelt-runner", "no-module", "not-a-runner", "bad-value", "unknown-name",
        "remote-without-temp", "remote-with-local-journals"])
def test_a_bad_pipeline_option_is_refused_before_the_lease_is_taken(live, tmp_path, options, said):
    live.load(SnapshotStore(DEMO).read())
    out = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out).returncode == 0
    before = live.dump()
    given = [arg for option in options for arg in ("--pipeline-option", option)]
    for form in ([out], ["--spec", CHECKINS, "--source", live.source]):
        done = reconcile("apply", *form, "--auto-approve", "--runner", "beam", "--journal-dir",
                         tmp_path / "journals", *given)
        assert said in one_sentence(done)
        assert not done.stdout.strip(), done.stdout  # said before any plan is shown
        assert not lease_of(live).exists  # never taken
        assert live.dump() == before and not (tmp_path / "journals").exists()


@pytest.mark.parametrize("command", ["plan", "check"])
def test_a_bad_pipeline_option_is_refused_before_the_database_is_read(tmp_path, command):
    """No emulator answers at this address: a run that read first would say so, not name the option."""
    nobody = {"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    done = reconcile(command, "--spec", CHECKINS, "--source", "firestore://nobody", "--runner", "beam",
                     "--timeout", "2", "--out" if command == "plan" else "--quiet",
                     *([tmp_path / "plan"] if command == "plan" else []),
                     "--pipeline-option", "runner=NoSuchRunner", env=nobody)
    assert "--pipeline-option runner=NoSuchRunner: Beam has no runner" in one_sentence(done)
    assert not (tmp_path / "plan").exists()


# -- the lease, attacked while the workers commit ------------------------------------------------------

SLOW = ("--batch-size", "5", "--max-writes-per-second", "40")


def test_a_lease_taken_over_mid_job_stops_the_workers_at_their_next_commit(live, tmp_path):
    """While the pipeline commits, its lease expires (the document rewritten) and a second run takes
    it over. Each worker stops at its next commit: a bundle may finish the commit it had checked
    the lease for, never another; the command says what the journals hold, and leaves the second
    run's lease alone."""
    live.load(SnapshotStore(DEMO).read())
    out, journals = tmp_path / "plan.json", tmp_path / "journals"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out).returncode == 0
    with running("apply", out, "--auto-approve", "--runner", "beam", "--journal-dir", journals, "--quiet",
                 *SLOW) as process:
        wait_for_results(process, journals, 2)
        os.killpg(process.pid, signal.SIGSTOP)  # the launcher and its workers, between two commits
        ref = live.client.collection(LOCK_COLLECTION).document(LEASE_DOCUMENT)
        first = read_holder(live.store.read_lease(LEASE_DOCUMENT)[0], "lease")
        ref.update({"expires_at": first.started_at - timedelta(seconds=1)})  # its expiry passed
        second = take_lease(live.store, operation="apply")
        taken = live.store.read_lease(LEASE_DOCUMENT)[0].update_time
        os.killpg(process.pid, signal.SIGCONT)
        code, _, stderr = finished(process)
    try:
        assert code == 1, stderr
        lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: ")]
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        sentence = lines[0]
        assert f"the run's lease {first.lease_id} is no longer safe to write under" in sentence
        assert f"another run holds the database now (lease {second.lease_id} of" in sentence
        written = applied(journals)
        assert f"{written} writes were applied (journals: {next(journals.iterdir())})" in sentence
        assert "Re-run apply once the run that holds the lease now has ended" in sentence
        assert 0 < written < 407  # stopped part-way
        for path in journals.rglob("*.jsonl"):  # per bundle: at most the commit checked before
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            after = [event["batch"] for event in lines if event["event"] == "result"
                     and any(result["applied"] and decode(result["update_time"], "t") > taken
                             for result in event["results"])]
            assert len(after) <= 1, (path, after)
        holder = read_holder(live.store.read_lease(LEASE_DOCUMENT)[0], "lease")
        assert holder.lease_id == second.lease_id and holder.state == "held"  # not released by the first
    finally:
        second.release()
    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve", "--runner",
                      "beam", "--journal-dir", tmp_path / "again")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


@pytest.mark.parametrize("holder, second", [("beam", "local"), ("local", "beam")])
def test_a_second_operator_is_refused_naming_the_holder_and_writes_nothing(live, tmp_path, holder, second):
    """One apply holds the lease and is committing (stopped between two commits, so that it holds it
    for as long as the second takes); the other, local or on Beam, is refused in one sentence
    naming the first (its process), and writes nothing: the first then finishes converged, with no
    change by another writer to report."""
    live.load(SnapshotStore(DEMO).read())
    out = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out).returncode == 0
    runner = {"beam": ("--runner", "beam"), "local": ()}
    first_journals, second_journals = tmp_path / "first", tmp_path / "second"
    with running("apply", out, "--auto-approve", "--journal-dir", first_journals, "--quiet", *SLOW,
                 *runner[holder]) as process:
        wait_for_results(process, first_journals, 1)
        os.killpg(process.pid, signal.SIGSTOP)
        try:
            refused = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                                "--journal-dir", second_journals, *runner[second])
        finally:
            os.killpg(process.pid, signal.SIGCONT)
        sentence = one_sentence(refused)
        assert f"{live.source} is locked by another run: lease " in sentence
        assert f" pid {process.pid} (apply, plan sha256:" in sentence and "nothing was written" in sentence
        assert not second_journals.exists()
        code, stdout, stderr = finished(process)
    assert code == 0, stdout + stderr
    assert "converged, nothing lost" in stdout and "by another writer" not in stdout
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
