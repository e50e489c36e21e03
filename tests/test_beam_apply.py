"""apply --runner beam: a plan applied by a pipeline (Beam's DirectRunner, on this machine) against
the emulator. It must write what the local apply writes, under the same guard, preconditions and
lease, and report what the local apply reports: both are run on the same data, changed the same
way by "another writer" between the plan and the apply, and their reports compared."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, A, reconcile
from faultproxy import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_beam import with_taken_ids

from bench.generate import Shape, generate
from reconciler import commands
from reconciler.errors import LeaseLost, SourceError
from reconciler.lease import HeldElsewhere, hold_lease
from reconciler.model import CreateDocumentOp, FillFieldsOp, Plan
from reconciler.render import verification_data
from reconciler.sharded import ShardedPlan
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec

pytest.importorskip("apache_beam")
from reconciler import beam  # noqa: E402  (the beam extra)


def beam_options(tmp_path: Path, **more) -> commands.Options:
    return commands.Options(runner="beam", read_partitions=3, journal_dir=str(tmp_path / "journals"), **more)


def report(applied: commands.Applied) -> dict:
    data = verification_data(applied.verification)
    data["skipped"].sort(key=lambda skipped: skipped["path"])
    return data


def another_writer(live, plan: Plan) -> list[str]:
    """Between the plan and its apply, the app writes where the plan writes: it creates a week the
    plan creates, writes another field of a document the plan fills, deletes a response the plan
    links, moves an assignment the plan fills to another client, and deletes one. Returns the paths."""
    client = live.client
    creates = [op for op in plan.ops if isinstance(op, CreateDocumentOp)]
    fills = [op for op in plan.ops if isinstance(op, FillFieldsOp) and op.path.startswith(f"{A}/")]
    responses = [op for op in plan.ops if isinstance(op, FillFieldsOp) and not op.path.startswith(f"{A}/")]
    assert creates and len(fills) >= 3 and responses, "the data must give every kind of change"
    touched = [creates[0].path, fills[0].path, responses[0].path, fills[1].path, fills[2].path]
    client.document(creates[0].path).set({"note": "made by the app"})
    client.document(fills[0].path).update({"appNote": "the app wrote here"})
    client.document(responses[0].path).delete()
    client.document(fills[1].path).update({"clientId": "moved-by-the-app"})
    client.document(fills[2].path).delete()
    return touched


def apply_both_ways(live, emulator, data, tmp_path: Path, change,
                    allow_empty: bool = False) -> tuple[dict, dict]:
    reports = []
    for runner in ("local", "beam"):
        emulator.reset(live.project)
        live.load(data)
        spec = load_spec(CHECKINS)
        saved = commands.plan(str(CHECKINS), live.source, commands.Options(allow_empty=allow_empty)).plan
        change(live, saved)
        options = (beam_options(tmp_path / runner, allow_empty=allow_empty) if runner == "beam"
                   else commands.Options(journal_dir=tmp_path / runner, allow_empty=allow_empty))
        reports.append(report(commands.apply(saved, spec, options=options)))
    return reports[0], reports[1]


@pytest.mark.parametrize("dataset", ["demo", "messy"])
def test_the_beam_apply_reports_what_the_local_apply_reports_with_another_writer_between(
        live, emulator, tmp_path, dataset):
    data = (SnapshotStore(DEMO).read() if dataset == "demo" else
            generate(Shape(clients=25, present=0.6, responses_per_series=5, seed=7, base_missing=0.1,
                           week_duplicate=0.1, due_mismatch=0.1, response_duplicate=0.1,
                           response_conflict=0.1)))
    touched: list[list[str]] = []
    local, beam = apply_both_ways(live, emulator, data, tmp_path,
                                  lambda live, plan: touched.append(another_writer(live, plan)))
    assert touched[0] == touched[1]
    assert beam == local
    reasons = {skipped["reason"] for skipped in beam["skipped"]}
    assert {"the document already exists", "the document changed since the plan was made",
            "the document no longer exists"} <= reasons, reasons
    assert beam["created"] > 0 and beam["links"]["made"] > 0 and beam["scores_and_dates_preserved"]


def test_the_beam_apply_of_an_unchanged_database_converges_and_passes_the_local_check(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    out = tmp_path / "plan"
    planned = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out)
    assert planned.returncode == 0
    done = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--read-partitions", "3",
                     "--journal-dir", tmp_path / "journals")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "converged, nothing lost" in done.stdout
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
    [run] = (tmp_path / "journals").iterdir()
    journals = sorted(run.glob("*.jsonl"))
    assert journals and f"Journal: {run}" in done.stdout
    written = sum(len(json.loads(line)["ops"]) for path in journals for line in path.read_text().splitlines()
                  if json.loads(line)["event"] == "commit")
    assert str(written) in done.stderr  # "applied N of N writes"
    again = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--journal-dir", tmp_path / "j2")
    assert again.returncode == 2 and "the document already exists" in again.stdout  # applied: all stale
    for journal in journals:  # each bundle's journal is an ordinary apply journal: rollback reads it
        undone = reconcile("rollback", journal, "--auto-approve", "--journal-dir", tmp_path / "undo")
        assert undone.returncode == 0, undone.stdout + undone.stderr
    planned_again = reconcile("plan", "--spec", CHECKINS, "--source", live.source)
    assert planned_again.stdout.splitlines()[-1] == planned.stdout.splitlines()[-1]


def test_plan_and_apply_in_one_run_with_runner_beam(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    done = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                     "--runner", "beam", "--journal-dir", tmp_path / "journals")
    assert done.returncode == 0, done.stdout + done.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


def test_a_consistently_rehashed_tampered_plan_is_refused_whole_before_any_worker_commits(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    out = tmp_path / "plan"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--runner", "beam", "--out", out,
                     "--read-partitions", "2").returncode == 0
    [ops] = out.glob("ops-*.jsonl")
    lines = ops.read_bytes().splitlines()
    fills = [n for n, line in enumerate(lines) if json.loads(line)["op"] == "fill_fields"]
    tampered = json.loads(lines[fills[-1]])
    tampered["fills"][0]["value"] = "overwritten by a hand-edited plan"
    lines[fills[-1]] = json.dumps(tampered, sort_keys=True, separators=(",", ":")).encode()
    ops.write_bytes(b"\n".join(lines) + b"\n")
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["name"] == ops.name:
            shard["sha256"] = hashlib.sha256(ops.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    done = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--journal-dir", tmp_path / "j")
    assert done.returncode == 1 and "refusing the whole plan" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert live.dump() == before
    assert not list((tmp_path / "j").rglob("*.jsonl"))  # no bundle began: no journal


def test_workers_write_nothing_under_a_lease_their_launcher_does_not_hold(live, tmp_path):
    """The launcher holds the lease; each worker checks it before each commit. Here another run
    holds it: the first commit is never sent."""
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    spec = load_spec(CHECKINS)
    saved = commands.plan(str(CHECKINS), live.source).plan
    journals = tmp_path / "journals"
    journals.mkdir()
    writing = beam.Writing(lease_id="0123456789abcdef", lease_ttl=60, journals=str(journals), batch_size=500,
                           max_writes_per_second=None, timeout=10, lock_collection="_reconcile_locks")
    with hold_lease(live.store, operation="apply"), pytest.raises(LeaseLost, match="another run holds"):
        beam.apply(spec, saved, writing, (), partitions=2)
    assert live.dump() == before
    assert beam.journaled(str(journals))[0] == 0


def test_a_lease_its_launcher_stopped_renewing_stops_the_workers_before_it_expires(live):
    with hold_lease(live.store, operation="apply", ttl=3) as lease:
        lease._stop.set()  # the launcher hangs: no more renewals
        held = HeldElsewhere(live.store, lease.lease_id, 3)
        held.check()  # fresh: workers may write
        time.sleep(3 * 0.8 + 0.3)  # past the share of its ttl a local run commits within
        with pytest.raises(LeaseLost, match="stopped renewing"):
            held.check()


def test_runner_beam_refuses_a_snapshot_file_and_a_local_journal_for_remote_workers(tmp_path):
    plan = tmp_path / "plan.json"
    copy = tmp_path / "data.json"
    copy.write_bytes(DEMO.read_bytes())
    assert reconcile("plan", "--spec", CHECKINS, "--source", copy, "--out", plan).returncode == 0
    done = reconcile("apply", plan, "--auto-approve", "--runner", "beam")
    assert done.returncode == 1 and "applies to a Firestore database" in done.stderr
    assert "Traceback" not in done.stderr
    saved, spec = commands.load_plan(str(plan))
    on_firestore = dataclasses.replace(saved, source="firestore://nobody", source_file=None)
    with pytest.raises(SourceError, match="gs://BUCKET/PREFIX"):
        beam.journal_directory(str(tmp_path), on_firestore, ("runner=DataflowRunner",))
    local = reconcile("apply", plan, "--auto-approve", "--journal-dir", "gs://bucket/journals")
    assert local.returncode != 0 and "for --runner beam" in local.stderr


def test_losing_the_server_while_the_workers_commit_is_one_sentence_with_what_the_journals_hold(
        live, emulator, tmp_path):
    """The server goes away after the workers' first commits: the run ends with one sentence that
    counts what the bundles' journals record as applied, and a re-run converges."""
    live.load(SnapshotStore(DEMO).read())
    journal_dir = tmp_path / "journal"
    with FaultProxy(emulator.host) as proxy:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--spec", str(CHECKINS), "--source", live.source,
             "--auto-approve", "--runner", "beam", "--read-partitions", "2", "--batch-size", "5",
             "--max-writes-per-second", "100", "--quiet", "--timeout", "4", "--lease-ttl", "5",
             "--journal-dir", str(journal_dir)],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "FIRESTORE_EMULATOR_HOST": proxy.host},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            text = "".join(path.read_text() for path in journal_dir.rglob("*.jsonl"))
            if text.count('"event": "result"') >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "apply finished before the server could be lost"
        proxy.blackhole()
        _, stderr = process.communicate(timeout=180)
        proxy.close()
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    applied = sum(sum(result["applied"] for result in json.loads(line)["results"])
                  for path in journal_dir.rglob("*.jsonl") for line in path.read_text().splitlines()
                  if json.loads(line)["event"] == "result")
    assert applied > 0 and f"{applied} writes were applied" in stderr and "Re-running apply is safe" in stderr
    rerun = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--auto-approve",
                      "--runner", "beam", "--lock-timeout", "120", "--journal-dir", journal_dir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


@st.composite
def messy_databases(draw):
    return generate(Shape(clients=draw(st.integers(2, 6)), weeks=draw(st.integers(3, 10)),
                          present=draw(st.sampled_from([0.2, 0.6, 0.9])), responses_per_series=3,
                          seed=draw(st.integers(0, 10_000)), base_missing=0.15, week_duplicate=0.15,
                          due_mismatch=0.15, response_duplicate=0.15, response_conflict=0.15))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(state=st.one_of(with_taken_ids(), messy_databases()), choices=st.data())
def test_the_beam_apply_reports_what_the_local_apply_reports_for_generated_states(
        live, emulator, tmp_path, state, choices):
    """Generated states (small ones with documents standing at other series' new-week IDs, and
    messy databases of several clients), and another writer that changes some of the documents the
    plan writes, chosen by hypothesis."""
    actions: list[tuple[str, str]] = []
    drawn: list[bool] = []

    def change(live, plan: Plan) -> None:
        if not drawn:  # the same choices for both runs: the plan is the same
            drawn.append(True)
            some = st.lists(st.sampled_from(plan.ops), max_size=6, unique_by=lambda op: op.path)
            for op in choices.draw(some if plan.ops else st.just([])):
                kinds = ["create"] if isinstance(op, CreateDocumentOp) else ["touch", "delete", "move"]
                actions.append((op.path, choices.draw(st.sampled_from(kinds))))
        for path, kind in actions:
            doc = live.client.document(path)
            if kind == "create":
                doc.set({"note": "made by the app"})
            elif kind == "touch":
                doc.update({"appNote": "the app wrote here"})
            elif kind == "delete":
                doc.delete()
            elif path.startswith(f"{A}/"):
                doc.update({"clientId": "moved-by-the-app"})
            else:
                doc.update({"formId": "moved-by-the-app"})

    local, beam_report = apply_both_ways(live, emulator, state, Path(tempfile.mkdtemp(dir=tmp_path)), change,
                                         allow_empty=True)
    assert beam_report == local


# -- a sharded plan: its manifest read by the launcher, its shards by the workers ----------------------


def sharded_plan(live, tmp_path: Path) -> Path:
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    commands.plan_on_beam(str(CHECKINS), live.source, beam_options(tmp_path), out=str(out))
    return out


@pytest.mark.parametrize("dataset", ["demo", "messy"])
def test_a_sharded_plan_read_by_the_workers_reports_what_the_local_apply_reports(
        live, emulator, tmp_path, dataset):
    """The plan made by the pipeline, opened by its manifest alone and its shards read by the
    workers, against the local plan applied in one process: the same data, the same other writer
    between plan and apply, the same report."""
    data = (SnapshotStore(DEMO).read() if dataset == "demo" else
            generate(Shape(clients=25, present=0.6, responses_per_series=5, seed=7, base_missing=0.1,
                           week_duplicate=0.1, due_mismatch=0.1, response_duplicate=0.1,
                           response_conflict=0.1)))
    spec = load_spec(CHECKINS)
    emulator.reset(live.project)
    live.load(data)
    saved = commands.plan(str(CHECKINS), live.source).plan
    touched = another_writer(live, saved)
    local = report(commands.apply(saved, spec, options=commands.Options(journal_dir=tmp_path / "local")))
    emulator.reset(live.project)
    live.load(data)
    out = sharded_plan(live, tmp_path)
    whole, _ = commands.load_plan(str(out))  # the other writer's choice of documents, not the apply's
    assert [op.path for op in whole.ops] == [op.path for op in saved.ops]  # loaded again: new update times
    assert another_writer(live, whole) == touched
    opened, opened_spec = commands.open_plan(str(out))
    assert isinstance(opened, ShardedPlan) and opened.manifest.ops == len(saved.ops)
    assert report(commands.apply(opened, opened_spec, options=beam_options(tmp_path / "beam"))) == local
    assert local["skipped"] and local["created"] > 0


# The real command in a process of its own, watching every file it opens: an op shard may only be
# opened by the workers' step that reads the shards (the DirectRunner runs it in this process).
WATCHED = """
import json, os, sys
from reconciler import beam
worker, opened = beam._ReadShard.process.__code__, []

def watch(event, args):
    if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]).startswith("ops-"):
        frame, inside = sys._getframe(1), False
        while frame is not None and not inside:
            inside, frame = frame.f_code is worker, frame.f_back
        opened.append([args[0], inside])

sys.addaudithook(watch)
import atexit
atexit.register(lambda: open(os.environ["OPENED"], "w").write(json.dumps(opened)))
from reconciler.cli import main
main()
"""


def test_the_launcher_never_opens_an_op_shard_only_the_workers_do(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    out = sharded_plan(live, tmp_path)
    shown = reconcile("show", out)
    record = tmp_path / "opened.json"
    done = subprocess.run(
        [sys.executable, "-c", WATCHED, "apply", str(out), "--auto-approve", "--runner", "beam",
         "--read-partitions", "2", "--journal-dir", str(tmp_path / "journals")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENED": str(record)})
    assert done.returncode == 0, done.stdout + done.stderr
    opened = json.loads(record.read_text())
    [ops] = out.glob("ops-*.jsonl")
    assert opened and {path for path, _ in opened} == {str(ops)}
    assert all(inside for _, inside in opened), opened  # no open by the launcher
    # What the launcher printed from the manifest alone is what `show` says of the whole plan.
    summary = shown.stdout.splitlines()[-1]
    count = len(commands.load_plan(str(out))[0].ops)
    assert summary.startswith("Plan: ") and summary in done.stdout.splitlines()
    assert f"Changes ({count} document writes): in 1 shard of {out}" in done.stdout
    assert "converged, nothing lost" in done.stdout
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0


def _one_byte(out: Path, kind: str, was: bytes) -> str:
    """One byte of a shard changed; it still decodes, so only its sha256 can tell."""
    [shard] = out.glob(f"{kind}-*.jsonl")
    data = shard.read_bytes()
    at = data.index(was) + len(was) - 1
    shard.write_bytes(data[:at] + data[at:at + 1].upper() + data[at + 1:])
    return f"{shard.name}: the shard's sha256 is"


def _deleted(out: Path) -> str:
    [shard] = out.glob("ops-*.jsonl")
    shard.unlink()
    return f"{shard.name}: the manifest names this shard but it cannot be read (No such file"


def _malformed_and_rehashed(out: Path) -> str:
    [shard] = out.glob("ops-*.jsonl")
    lines = shard.read_bytes().splitlines()
    lines[len(lines) // 2] = b'{"op": "delete_document"}'
    shard.write_bytes(b"\n".join(lines) + b"\n")
    manifest = json.loads((out / "manifest.json").read_text())
    for listed in manifest["shards"]:
        if listed["name"] == shard.name:
            listed["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return f"{shard.name}:{len(lines) // 2 + 1}: not an op of a plan"


def _summary_changed(out: Path, field: str) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["summary"][field] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    return "manifest.json: its summary says"


DEFECTS = {
    "an op shard with one byte changed": lambda out: _one_byte(out, "ops", b'"pending'),
    "a findings shard with one byte changed": lambda out: _one_byte(out, "findings", b'"series.b'),
    "an op shard deleted": _deleted,
    "an op shard malformed and re-hashed into the manifest": _malformed_and_rehashed,
    "the manifest's count of creates changed": lambda out: _summary_changed(out, "create"),
    "the manifest's count of findings changed": lambda out: _summary_changed(out, "findings"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_sharded_plan_that_is_not_the_one_written_is_refused_whole_by_the_pipeline(live, tmp_path, defect):
    """Every shard is checked by the worker that reads it, against the manifest; the manifest's
    counts, which the launcher shows, against the shards. One defect anywhere refuses the whole plan
    before the first commit: exit 1, one sentence naming the file, nothing written, no journal."""
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    out = sharded_plan(live, tmp_path)
    said = DEFECTS[defect](out)
    done = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--read-partitions", "2",
                     "--journal-dir", tmp_path / "j")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{out}/{said}" in lines[0] and lines[0].count(str(out)) == 1, lines[0]  # that file alone
    assert live.dump() == before
    assert not list((tmp_path / "j").rglob("*.jsonl"))
