"""apply --runner beam against hand-edited plans, another writer and bad options, on the emulator.

Each attack is made twice on the same data, once for the local apply and once for the pipeline:
both must refuse the same plans with the same sentence, skip the same writes for the same reasons,
and leave the same data. A difference is a defect of one of them."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, A, reconcile

from reconciler import commands
from reconciler.errors import ReconcileError
from reconciler.model import CreateDocumentOp, FieldFill, FillFieldsOp, Plan
from reconciler.render import verification_data
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec

pytest.importorskip("apache_beam")


def outcome(saved: Plan, runner: str, tmp: Path) -> tuple:
    options = (commands.Options(runner="beam", read_partitions=3, journal_dir=str(tmp / "journals"))
               if runner == "beam" else commands.Options(journal_dir=tmp / "journals"))
    try:
        applied = commands.apply(saved, load_spec(CHECKINS), options=options)
    except ReconcileError as error:
        return "refused", type(error).__name__, str(error)
    data = verification_data(applied.verification)
    data["skipped"].sort(key=lambda skipped: skipped["path"])
    return "applied", data


def fields(live) -> dict:
    """Every document's fields (update times differ between two runs on the same data)."""
    return {name: {doc_id: doc.fields for doc_id, doc in docs.items()}
            for name, docs in live.read().collections.items()}


def both_ways(live, emulator, tmp_path, edit=lambda plan, live: plan, change=lambda plan, live: None):
    """The local apply's and the pipeline's outcome and data after, for the same edit of a fresh
    plan of the demo and the same change of the data between the plan and the apply."""
    results = []
    for runner in ("local", "beam"):
        emulator.reset(live.project)
        live.load(SnapshotStore(DEMO).read())
        loaded = fields(live)
        saved = edit(commands.plan(str(CHECKINS), live.source).plan, live)
        change(saved, live)
        results.append((outcome(saved, runner, tmp_path / runner), fields(live), loaded))
    return results


def links(plan: Plan) -> list[tuple[FillFieldsOp, FillFieldsOp]]:
    """The plan's links to an existing assignment: (assignment's op, response's op)."""
    groups: dict[str, list] = {}
    for op in plan.ops:
        if op.group is not None and isinstance(op, FillFieldsOp):
            groups.setdefault(op.group, []).append(op)
    return [tuple(sorted(ops, key=lambda op: op.path)) for ops in groups.values() if len(ops) == 2]


def test_a_response_moved_to_another_series_since_the_plan_is_skipped_as_changed_not_as_gone(
        live, emulator, tmp_path):
    """The pipeline examined a link only against its assignment's series, where the moved response
    is no longer: it reported a document that is there as "no longer exists"."""
    def move(plan, live):
        _, response = links(plan)[0]
        live.client.document(response.path).update({"clientId": "moved-by-the-app"})

    (local, local_data, _), (beam, beam_data, _) = both_ways(live, emulator, tmp_path, change=move)
    assert beam == local and beam_data == local_data
    assert {s["reason"] for s in beam[1]["skipped"]} == {"the document changed since the plan was made"}


def test_a_link_joined_with_another_series_response_refuses_the_whole_plan(live, emulator, tmp_path):
    """A hand edit links one series' assignment with another series' response, consistently on
    both sides (and drops that response's own link). Nothing in the data explains it: the whole
    plan is refused. The pipeline used to skip it as gone and apply the rest."""
    def join(plan, live):
        pairs = links(plan)
        member, ours = pairs[0]
        other, theirs = next(pair for pair in pairs if pair[0].series != member.series)
        dropped = {member.path, ours.path, other.path, theirs.path}
        named = theirs.path.partition("/")[2]
        member = dataclasses.replace(member, fills=tuple(
            dataclasses.replace(fill, value=named) if fill.field == "responseId" else fill
            for fill in member.fills))
        theirs = dataclasses.replace(theirs, group=member.path, fills=(
            dataclasses.replace(theirs.fills[0], value=member.path.partition("/")[2]),))
        return dataclasses.replace(plan, ops=tuple(op for op in plan.ops if op.path not in dropped)
                                   + (member, theirs))

    (local, local_data, loaded), (beam, beam_data, _) = both_ways(live, emulator, tmp_path, edit=join)
    assert local[:2] == ("refused", "UnsafePlan"), local
    assert beam == local
    assert "from data that has not changed since the plan was made" in beam[2]
    assert beam_data == local_data == loaded


@pytest.mark.parametrize("client", ["c25", "c14"])  # a form of no series, and of a series
def test_a_write_to_an_unchanged_document_of_no_series_refuses_the_whole_plan(
        live, emulator, tmp_path, client):
    """A non-recurring assignment, untouched since the plan, given a week by a hand edit: it was
    no member when the plan was read, so only the file can have made the write. Both applies
    used to skip it as "its series is no longer in the data" when its key had no series; the
    pipeline did so always, and applied the rest of the plan."""
    def add(plan, live):
        doc = next(doc for doc in live.read().documents(A).values()
                   if doc.fields.get("clientId") == client and doc.fields.get("isRecurring") is False)
        fill = FillFieldsOp(path=doc.path, update_time=doc.update_time,
                            fills=(FieldFill(field="recurringWeek", value=1, rule="series.base_week"),))
        return dataclasses.replace(plan, ops=(*plan.ops, fill))

    (local, local_data, loaded), (beam, beam_data, _) = both_ways(live, emulator, tmp_path, edit=add)
    assert local[:2] == ("refused", "UnsafePlan"), local
    assert beam == local and beam_data == local_data == loaded


def _later(plan, live):
    op = next(op for op in plan.ops if isinstance(op, FillFieldsOp))
    return dataclasses.replace(plan, ops=tuple(
        dataclasses.replace(o, update_time=o.update_time + timedelta(days=1)) if o.path == op.path else o
        for o in plan.ops))


def _twice(plan, live):
    member = next(op for op in plan.ops if isinstance(op, FillFieldsOp) and op.group == op.path)
    again = FillFieldsOp(path=member.path, update_time=member.update_time,
                         fills=(FieldFill(field="recurringWeek", value=1, rule="series.base_week"),))
    return dataclasses.replace(plan, ops=(*plan.ops, again))


def _elsewhere(plan, live):
    creates = [op for op in plan.ops if isinstance(op, CreateDocumentOp) and op.group is None]
    ours = creates[0]
    theirs = next(op for op in creates if op.series != ours.series)
    moved = dataclasses.replace(ours, path=theirs.path)
    return dataclasses.replace(plan, ops=(*(op for op in plan.ops if op.path not in (ours.path, theirs.path)),
                                          moved))


@pytest.mark.parametrize("edit", [_later, _twice, _elsewhere], ids=["future-update-time",
                                                                     "one-document-twice",
                                                                     "create-at-another-series-week"])
def test_a_refused_plan_is_refused_in_the_local_apply_s_words(live, emulator, tmp_path, edit):
    """The pipeline's refusal carried Beam's " [while running 'Gate']", and a document written
    twice was named twice, in two wordings."""
    (local, local_data, loaded), (beam, beam_data, _) = both_ways(live, emulator, tmp_path, edit=edit)
    assert local[:2] == ("refused", "UnsafePlan"), local
    assert beam == local and beam_data == local_data == loaded
    assert "while running" not in beam[2]


@pytest.mark.parametrize("option, said", [
    ("direct_num_workers=abc", "invalid int value: 'abc'"),
    ("runer=DataflowRunner", "'runer=DataflowRunner': not an option"),
    ("no_such_option=1", "'no_such_option=1': not an option"),
])
def test_a_bad_pipeline_option_is_one_sentence_and_writes_nothing(live, tmp_path, option, said):
    """Beam's parser printed its whole usage and exited 2 on a bad value, and ran the job with a
    misspelt name silently dropped (a misspelt runner: on this machine)."""
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    out = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", out).returncode == 0
    done = reconcile("apply", out, "--auto-approve", "--runner", "beam", "--journal-dir", tmp_path / "j",
                     "--pipeline-option", option)
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert said in done.stderr
    assert live.dump() == before
