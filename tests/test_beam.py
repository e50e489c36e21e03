"""--runner beam: the plan made by the Beam pipeline (DirectRunner, this machine) is the local
engine's plan, on snapshot files and on the emulator, for the demo, the second domain and generated
messy data; a sharded plan is read by apply and show like a plan file, and refused when altered."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, SESSIONS, SESSIONS_DEMO, A, reconcile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import SPEC, states

from bench.generate import Shape, generate
from reconciler import commands
from reconciler.errors import PlanFileError, SelectionError
from reconciler.kernel import new_week_id
from reconciler.kernel import reconcile as engine
from reconciler.keyed import keyed, plan_stem
from reconciler.model import Document, State
from reconciler.plan import build_plan, plan_bytes, plan_to_data
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec

pytest.importorskip("apache_beam")


def comparable(plan) -> dict:
    """A plan's ops and findings as its file spells them (read times differ between two reads)."""
    data = plan_to_data(plan)
    return {"ops": data["ops"], "findings": data["findings"], "summary": data["summary"]}


# -- the pipeline's steps, in process, over generated states ------------------------------------------


def by_steps(spec, state: State):
    """What the pipeline computes, with its shuffle done by a dictionary: each document keyed on its
    own, the outputs grouped by stem, each stem planned on its own."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: {"members": [], "responses": [], "taken": []})
    ops, findings = [], []
    for name, docs in state.collections.items():
        for doc in docs.values():
            for tag, value in keyed(spec, name, doc):
                if tag == "findings":
                    findings.append(value)
                else:
                    groups[value[0]][tag].append(value[1])
    for joined in groups.values():
        for item in plan_stem(spec, joined["members"], joined["responses"], joined["taken"]):
            (findings if type(item).__name__ == "Finding" else ops).append(item)
    return sorted(ops, key=lambda op: op.path), sorted(findings, key=lambda f: f.sort_key)


@st.composite
def with_taken_ids(draw) -> State:
    """A generated state where some assignments stand at IDs that a series' new week would take
    (their own series' or another's), the case only the stem join can see."""
    state = draw(states())
    docs = dict(state.documents(A))
    for doc_id in draw(st.lists(st.sampled_from(sorted(docs)), max_size=3, unique=True)) if docs else []:
        key = draw(st.sampled_from([("c1", "f1"), ("c2", "f1"), ("c1", "f2"), (3, "f2")]))
        new_id = new_week_id(SPEC, key, draw(st.integers(1, 6)))
        moved = docs.pop(doc_id)
        docs[new_id] = Document(A, new_id, moved.fields, moved.update_time)
    return State(source=state.source, read_time=state.read_time, collections={**state.collections, A: docs})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(with_taken_ids())
def test_the_pipeline_steps_give_the_engine_plan_for_any_state(state):
    ops, findings = engine(SPEC, state)
    assert by_steps(SPEC, state) == (ops, findings)


def test_a_document_at_another_series_new_week_id_is_reported_by_the_steps():
    """The stem join carries taken IDs: a week whose ID another document holds is not created."""
    state = SnapshotStore(DEMO).read()
    spec = load_spec(CHECKINS)
    created = next(op for op in engine(spec, state)[0] if op.path.startswith(f"{A}/"))
    squatter = created.path.partition("/")[2]
    docs = {**state.documents(A), squatter: Document(A, squatter, {"note": "not a week"}, None)}
    taken = State(source="x", read_time=state.read_time, collections={**state.collections, A: docs})
    ops, findings = by_steps(spec, taken)
    assert f"{A}/{squatter}" not in {op.path for op in ops}
    assert any(f.code == "assignment.id_taken" and f.path == f"{A}/{squatter}" for f in findings)
    assert (ops, findings) == engine(spec, taken)


# -- the pipeline on the DirectRunner ----------------------------------------------------------------


def beam_plan(spec_path, source, tmp_path: Path, partitions: int | None = None):
    out = Path(tempfile.mkdtemp(dir=tmp_path))  # new and empty (hypothesis seeds `random`)
    options = commands.Options(runner="beam", read_partitions=partitions)
    return commands.plan_on_beam(str(spec_path), source, options, out=str(out)), out


@pytest.mark.parametrize(("spec_path", "snapshot"), [(CHECKINS, DEMO), (SESSIONS, SESSIONS_DEMO)])
def test_the_beam_plan_of_a_snapshot_file_is_the_local_plan_byte_for_byte(spec_path, snapshot, tmp_path):
    local = commands.plan(str(spec_path), str(snapshot))
    beam, out = beam_plan(spec_path, str(snapshot), tmp_path)
    assert plan_bytes(beam.plan) == plan_bytes(local.plan)
    names = {path.name for path in out.iterdir()}
    assert "manifest.json" in names and {name.split("-")[0] for name in names - {"manifest.json"}} == {
        "ops", "findings"}
    saved, _ = commands.load_plan(str(out))
    assert plan_bytes(saved) == plan_bytes(local.plan)


@pytest.mark.parametrize(("spec_path", "snapshot"), [(CHECKINS, DEMO), (SESSIONS, SESSIONS_DEMO)])
def test_the_beam_plan_on_firestore_is_the_local_plan(live, spec_path, snapshot, tmp_path):
    live.load(SnapshotStore(snapshot).read())
    local = commands.plan(str(spec_path), live.source)
    beam, _ = beam_plan(spec_path, live.source, tmp_path, partitions=7)
    assert comparable(beam.plan) == comparable(local.plan)
    assert beam.plan.ops and beam.plan.findings
    assert beam.documents == {name: len(local.state.documents(name)) for name in beam.documents}


def test_the_beam_plan_of_a_generated_messy_database_is_the_local_plan(live, tmp_path):
    data = generate(Shape(clients=30, present=0.6, responses_per_series=6, seed=11, base_missing=0.1,
                          base_without_week=0.1, week_duplicate=0.1, due_mismatch=0.1,
                          response_duplicate=0.1, response_conflict=0.1))
    live.load(data)
    local = commands.plan(str(CHECKINS), live.source)
    beam, _ = beam_plan(CHECKINS, live.source, tmp_path, partitions=5)
    codes = {finding.code for finding in local.plan.findings}
    assert len(codes) >= 5, codes  # the data is messy: the sameness covers many kinds of findings
    assert comparable(beam.plan) == comparable(local.plan)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(state=with_taken_ids())
def test_the_beam_plan_on_firestore_is_the_local_plan_for_generated_states(live, emulator, state, tmp_path):
    emulator.reset(live.project)
    live.load(state)
    local = commands.plan(str(CHECKINS), live.source, commands.Options(allow_empty=True))
    options = commands.Options(runner="beam", read_partitions=3, allow_empty=True)
    out = tempfile.mkdtemp(dir=tmp_path)
    beam = commands.plan_on_beam(str(CHECKINS), live.source, options, out=str(out))
    assert comparable(beam.plan) == comparable(local.plan)


def test_every_partition_split_covers_each_document_once(live):
    data = generate(Shape(clients=12, present=0.7, responses_per_series=3, seed=5))
    live.load(data)
    store = live.store
    read_time = store.server_time(A)
    for count in (1, 2, 9, 62, 200):
        parts = store.partitions(A, count, read_time)
        ids = [doc.id for start, end in parts for doc in store.read_range(A, start, end, read_time)]
        assert sorted(ids) == sorted(data.documents(A)), count


# -- the command line ------------------------------------------------------------------------------


def test_plan_with_runner_beam_writes_a_sharded_plan_that_show_and_apply_read(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    out = tmp_path / "plan"
    done = reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--runner", "beam", "--out", out,
                     "--read-partitions", "4", "--pipeline-option", "direct_num_workers=1")
    assert done.returncode == 0, done.stderr
    local = reconcile("plan", "--spec", CHECKINS, "--source", live.source)
    assert done.stdout.splitlines()[-1] == local.stdout.splitlines()[-1]
    assert "apply it with: reconcile apply" in done.stderr
    shown = reconcile("show", out)
    assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == local.stdout.splitlines()[-1]
    applied = reconcile("apply", out, "--auto-approve", "--journal-dir", tmp_path / "journals")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source).returncode == 0
    assert reconcile("check", "--spec", CHECKINS, "--source", live.source, "--runner", "beam").returncode == 0


def test_check_with_runner_beam_exits_2_on_drift_with_the_local_report(live):
    live.load(SnapshotStore(DEMO).read())
    local = reconcile("check", "--spec", CHECKINS, "--source", live.source, "--format", "json")
    beam = reconcile("check", "--spec", CHECKINS, "--source", live.source, "--format", "json",
                     "--runner", "beam")
    assert (local.returncode, beam.returncode) == (2, 2)
    reports = [json.loads(done.stdout) for done in (beam, local)]
    for report in reports:
        del report["read_time"]  # two reads
    assert reports[0] == reports[1] and reports[0]["classes"]


def test_a_sharded_plan_altered_after_it_was_written_is_refused_and_nothing_is_written(live, tmp_path):
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    _, out = beam_plan(CHECKINS, live.source, tmp_path)
    [ops] = out.glob("ops-*.jsonl")
    lines = ops.read_bytes().splitlines(keepends=True)
    ops.write_bytes(b"".join(lines[:-1]))  # one op dropped: the count and the sha256 no longer match
    done = reconcile("apply", out, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert done.returncode == 1 and "changed after the plan was written" in done.stderr
    assert live.dump() == before and not (tmp_path / "j").exists()


def test_a_manifest_that_names_a_shard_outside_its_directory_or_misses_one_is_refused(tmp_path):
    _, out = beam_plan(CHECKINS, str(DEMO), tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    outside = dict(manifest, shards=[dict(manifest["shards"][0], name="../ops-00000-of-00001.jsonl")])
    (out / "manifest.json").write_text(json.dumps(outside))
    with pytest.raises(PlanFileError, match="shard's file name in the plan's directory"):
        commands.load_plan(str(out))
    (out / "manifest.json").write_text(json.dumps(manifest))
    [findings] = out.glob("findings-*.jsonl")
    findings.unlink()
    with pytest.raises(PlanFileError, match="names this shard but it cannot be read"):
        commands.load_plan(str(out / "manifest.json"))


@pytest.mark.parametrize(("summary", "said"), [
    ({"create": 380}, "its summary says 380 to create, 17 to link, 2 to fill and 21 findings; its "
                      "shards hold 379, 17, 2 and 21"),
    ({"findings": 20}, "its shards hold 379, 17, 2 and 21"),
    ({"link": -1}, '"summary" must hold "create", "link", "fill" and "findings" as whole numbers'),
    ({"fill": "2"}, '"summary" must hold'),
])
def test_a_manifest_whose_counts_its_shards_do_not_give_is_refused(tmp_path, summary, said):
    """`apply --runner beam` shows the manifest's counts before its workers read the shards, so the
    counts are part of the plan: every reader refuses a manifest whose shards give other counts."""
    _, out = beam_plan(CHECKINS, str(DEMO), tmp_path)
    assert commands.load_plan(str(out))[0].summary.create == 379  # the demo's plan, as written
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["summary"].update(summary)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PlanFileError, match=re.escape(said)):
        commands.load_plan(str(out))
    shown = reconcile("show", out)
    assert shown.returncode == 1 and said in shown.stderr and "Traceback" not in shown.stderr


def test_a_sharded_plan_whose_op_is_rewritten_consistently_is_still_refused_by_the_guard(live, tmp_path):
    """The shards' hashes stop accidents; the guard stops intent: an op re-hashed into the manifest
    that the spec would not derive refuses the whole plan, nothing written."""
    import hashlib

    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    _, out = beam_plan(CHECKINS, live.source, tmp_path)
    [ops] = out.glob("ops-*.jsonl")
    lines = ops.read_bytes().splitlines()
    # A shard's lines come in the workers' order: take a create wherever it is.
    index = next(n for n, line in enumerate(lines) if json.loads(line)["op"] == "create_document")
    create = json.loads(lines[index])
    create["fields"]["clientId"] = "someone-else"  # a create that is not its series' week
    lines[index] = json.dumps(create, sort_keys=True, separators=(",", ":")).encode()
    ops.write_bytes(b"\n".join(lines) + b"\n")
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["name"] == ops.name:
            shard["sha256"] = hashlib.sha256(ops.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    done = reconcile("apply", out, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert done.returncode == 1 and "refusing the whole plan" in done.stderr
    assert live.dump() == before


def test_beam_refuses_a_selection_and_a_plan_directory_that_is_not_empty(tmp_path):
    with pytest.raises(SelectionError, match="--runner local"):
        commands.check(str(CHECKINS), str(DEMO), commands.Options(runner="beam"), select="clientId=c01")
    beam = ("plan", "--spec", CHECKINS, "--source", DEMO, "--runner", "beam")
    done = reconcile(*beam, "--select", "clientId=c01")
    assert done.returncode == 1 and "--runner local" in done.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "old.jsonl").write_text("{}\n")
    done = reconcile(*beam, "--out", tmp_path / "busy")
    assert done.returncode == 1 and "not empty" in done.stderr and "Traceback" not in done.stderr
    bad = reconcile(*beam, "--pipeline-option", "oops")
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr


def test_an_unreachable_emulator_is_one_sentence_with_runner_beam(monkeypatch, tmp_path):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    done = reconcile("plan", "--spec", CHECKINS, "--source", "firestore://nobody", "--runner", "beam",
                     "--timeout", "2")
    assert done.returncode == 1 and "cannot reach the Firestore emulator" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_plan_file_of_a_beam_plan_round_trips_through_a_snapshot(tmp_path):
    """A plan made by Beam from a snapshot file is pinned to that file like a local one."""
    copy = tmp_path / "data.json"
    shutil.copy(DEMO, copy)
    beam, out = beam_plan(CHECKINS, str(copy), tmp_path)
    assert beam.plan.source_file is not None and beam.plan.source_file.path == str(copy.resolve())
    done = reconcile("apply", out, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert done.returncode == 0, done.stderr
    assert build_plan(load_spec(CHECKINS), SnapshotStore(str(copy)).read()).ops == ()


def test_check_on_a_remote_runner_without_a_shared_temp_location_is_refused_before_reading(tmp_path):
    """Remote workers cannot write this machine's temporary directory; a check that read back an
    empty plan from it would report "converged" about data it never planned."""
    done = reconcile("check", "--spec", CHECKINS, "--source", DEMO, "--runner", "beam",
                     "--pipeline-option", "runner=DataflowRunner")
    assert done.returncode == 1 and "temp_location=gs://" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
