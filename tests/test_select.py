"""--select on plan, apply, check and audit: a subset of the series, planned, written and verified
as that subset, on a snapshot file and on Firestore (equality queries); and a saved plan pinned to
the snapshot file it was made from."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, A, assignment, checkins, reconcile, response, state, week_path

from reconciler import commands
from reconciler.errors import SelectionError, UnsafePlan
from reconciler.guard import admit
from reconciler.kernel import reconcile as derive
from reconciler.model import CreateDocumentOp, FillFieldsOp
from reconciler.plan import build_plan, dumps_plan, loads_plan
from reconciler.selection import equality_filters, parse_selection, select_state
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec


@pytest.fixture(scope="module")
def demo():
    spec = load_spec(CHECKINS)
    return spec, SnapshotStore(DEMO).read(spec.collections)


def _clients(spec, data) -> list[str]:
    return sorted({doc.fields["clientId"] for doc in data.documents(spec.series.collection).values()
                   if type(doc.fields.get("clientId")) is str})


def _key_of(data, path: str, spec) -> str | None:
    """The clientId a finding's document holds (from the document itself, not from the engine)."""
    doc = data.find(path)
    collection = path.partition("/")[0]
    field = "clientId"
    if doc is None or collection not in (spec.series.collection, spec.link.collection):
        return None
    value = doc.fields.get(field)
    return value if type(value) is str else None


def _timeless(ops) -> list:
    """Ops without their update-time preconditions (a loaded database has its own update times)."""
    return [replace(op, update_time=None) if isinstance(op, FillFieldsOp) else op for op in ops]


def _outside(spec, data, selection) -> dict:
    """Every document outside the selection, with its fields and update time."""
    return {doc.path: doc for name in spec.collections for doc in data.documents(name).values()
            if not selection.matches_document(spec, doc)}


def _holding_week_2_of_c1(spec):
    """A document of client c2, not recurring, at the ID client c1's missing week 2 would take."""
    return replace(assignment("x", week=None, client="c2", isRecurring=False),
                   id=week_path(spec, 2).partition("/")[2])


# -- the engine --------------------------------------------------------------------------------------


def test_the_selections_of_every_client_partition_the_whole_plan(demo):
    """Planned one client at a time, the demo gives exactly the whole plan's writes, each once; and
    each client's findings are the whole plan's findings about that client's series or documents."""
    spec, data = demo
    whole_ops, whole_findings = derive(spec, data)
    seen: list = []
    for client in _clients(spec, data):
        ops, findings = derive(spec, data, parse_selection(f"clientId={client}", spec.series.key))
        assert all(op.series.startswith(f"clientId={client} ") for op in ops)
        seen += ops
        expected = [f for f in whole_findings if f.series.startswith(f"clientId={client} ")
                    or (not f.series and _key_of(data, f.path, spec) == client)]
        assert findings == expected
    assert sorted(seen, key=lambda op: op.path) == whole_ops


def test_a_selection_by_two_fields_keeps_only_the_series_with_both(demo):
    spec, data = demo
    both = derive(spec, data, parse_selection("clientId=c11,formId=f-weekly", spec.series.key))[0]
    client = derive(spec, data, parse_selection("clientId=c11", spec.series.key))[0]
    assert both and {op.series for op in both} == {"clientId=c11 formId=f-weekly"}
    assert {op.series for op in client} == {"clientId=c11 formId=f-weekly", "clientId=c11 formId=f-nutrition"}
    assert both == [op for op in client if op.series == "clientId=c11 formId=f-weekly"]


def test_an_integer_key_part_is_selected_by_its_decimal_spelling():
    spec = checkins()
    docs = [assignment("a1", client=7), assignment("b1", client="7"), assignment("c1", client=70)]
    ops, _ = derive(spec, state(*docs), parse_selection("clientId=7", spec.series.key))
    assert {op.series for op in ops} == {"clientId=7 formId=f1"}
    filters = equality_filters(spec, parse_selection("clientId=7,formId=f1", spec.series.key))
    assert [(e.field, e.values) for e in filters[A]] == [("clientId", ("7", 7)), ("formId", ("f1",))]


def test_a_new_week_whose_id_another_series_holds_is_a_finding_in_the_selection_too():
    """The selected series' week 2 ID is taken by a document of client c2: the selected plan says
    so, as the whole plan does, instead of proposing a create its precondition would refuse."""
    spec = checkins()
    taken = _holding_week_2_of_c1(spec)
    data = state(assignment("base", totalWeeks=3), taken)
    selected = parse_selection("clientId=c1", spec.series.key)
    ops, findings = derive(spec, data, selected)
    assert [f.code for f in findings] == ["assignment.id_taken"]
    assert [op.path for op in ops] == [week_path(spec, 3)]
    assert (ops, findings) == tuple(map(list, derive(spec, data)))


def test_the_audit_of_a_selection_counts_that_selection_only(demo):
    from reconciler.audit import audit

    spec, data = demo
    selection = parse_selection("clientId=c06", spec.series.key)
    report = audit(spec, data, selection)
    scoped = select_state(spec, data, selection)
    assert report.collections[A] == len(scoped.documents(A)) < len(data.documents(A))
    assert report.series["missing_weeks"] == sum(
        isinstance(op, CreateDocumentOp) for op in derive(spec, data, selection)[0])
    assert report.as_data()["selection"] == {"clientId": "c06"}


# -- the guard: a selected plan writes nothing outside its selection -----------------------------------


def test_a_selected_plan_given_a_write_outside_its_selection_is_refused_whole(demo):
    spec, data = demo
    selected = build_plan(spec, data, parse_selection("clientId=c06", spec.series.key))
    other = next(op for op in build_plan(spec, data).ops if op.series.startswith("clientId=c07 "))
    tampered = replace(selected, ops=(*selected.ops, other))
    with pytest.raises(UnsafePlan, match="spec derives no write there"):
        admit(spec, tampered, data)
    # Dropping the selection from the file widens nothing: only the file's writes are admitted.
    widened = replace(selected, selection=None)
    admitted = admit(spec, widened, data)
    assert {op.path for group in admitted.groups for op in group} == {op.path for op in selected.ops}


def test_the_plan_file_records_the_selection_and_loading_checks_it_against_the_spec(demo, tmp_path):
    spec, data = demo
    selected = build_plan(spec, data, parse_selection("formId=f-weekly,clientId=c06", spec.series.key))
    text = dumps_plan(selected)
    assert json.loads(text)["selection"] == {"clientId": "c06", "formId": "f-weekly"}
    assert dict(loads_plan(text, "p.json").selection.pairs) == dict(selected.selection.pairs)
    bad = json.loads(text)
    bad["selection"] = {"coachId": "coach-1"}
    bad["source"] = "firestore://p"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(Exception, match="not a series key field of the plan's spec"):
        commands.load_plan(str(path))


# -- the command line, on a snapshot file -----------------------------------------------------------


@pytest.fixture
def copy(tmp_path) -> Path:
    target = tmp_path / "data" / "demo.json"
    target.parent.mkdir()
    shutil.copyfile(DEMO, target)
    return target


def test_apply_of_one_client_writes_that_client_only_and_check_sees_it_converged(copy, tmp_path):
    spec = load_spec(CHECKINS)
    before = SnapshotStore(copy).read(spec.collections)
    selected = parse_selection("clientId=c06", spec.series.key)
    done = reconcile("apply", "--spec", CHECKINS, "--source", copy, "--select", "clientId=c06",
                     "--auto-approve", "--journal-dir", tmp_path / "j")
    assert done.returncode == 0, done.stderr
    assert "Selected: clientId=c06" in done.stdout
    after = SnapshotStore(copy).read(spec.collections)
    assert _outside(spec, after, selected) == _outside(spec, before, selected)
    assert derive(spec, after, selected)[0] == []
    checked = reconcile("check", "--spec", CHECKINS, "--source", copy, "--select", "clientId=c06")
    assert checked.returncode == 0, checked.stdout
    assert reconcile("check", "--spec", CHECKINS, "--source", copy).returncode == 2


def test_check_and_audit_of_a_selection_report_it(copy):
    report = reconcile("check", "--spec", CHECKINS, "--source", copy, "--select", "clientId=c06",
                       "--format", "json")
    assert report.returncode == 2
    data = json.loads(report.stdout)
    assert data["selection"] == {"clientId": "c06"}
    assert {e["series"] for c in data["classes"].values() for e in c["examples"]} == {
        "clientId=c06 formId=f-weekly"}
    audit = reconcile("audit", "--spec", CHECKINS, "--source", copy, "--select", "clientId=c06")
    assert audit.returncode == 0 and "Selected: clientId=c06" in audit.stdout


def test_every_drift_example_names_the_command_that_shows_its_series(copy):
    report = reconcile("check", "--spec", CHECKINS, "--source", copy, "--format", "json")
    examples = [e for c in json.loads(report.stdout)["classes"].values() for e in c["examples"]]
    assert examples
    for example in examples:
        shown = reconcile(*example["command"].split()[1:])
        assert shown.returncode == 0, shown.stderr
        assert example["series"] in shown.stdout
    text = reconcile("check", "--spec", CHECKINS, "--source", copy)
    assert text.stdout.splitlines()[-1].startswith("One drifting series' weeks: reconcile series ")


@pytest.mark.parametrize(("args", "words", "code"), [
    (("plan", "--select", "clientId=nobody"), "no series matches clientId=nobody", 1),
    (("apply", "--select", "clientId=C06", "--auto-approve"), "no series matches clientId=C06", 1),
    (("plan", "--select", "coachId=coach-1"), "\"coachId\" is not a series key field", 1),
    (("check", "--select", "clientId="), "clientId has an empty value", 1),
    (("audit", "--select", "clientId"), "give FIELD=VALUE", 1),
    (("plan", "--select", "clientId=c06", "--compare-spec", CHECKINS), "give one or the other", 1),
])
def test_a_selection_that_cannot_be_used_is_one_sentence(copy, args, words, code):
    before = copy.read_bytes()
    run = reconcile(*args[:1], "--spec", CHECKINS, "--source", copy, *args[1:])
    assert run.returncode == code and words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and copy.read_bytes() == before


def test_a_saved_plan_carries_its_selection_and_apply_refuses_another(copy, tmp_path):
    plan = tmp_path / "plan.json"
    made = reconcile("plan", "--spec", CHECKINS, "--source", copy, "--select", "clientId=c06", "--out", plan)
    assert made.returncode == 0, made.stderr
    refused = reconcile("apply", plan, "--select", "clientId=c07", "--auto-approve")
    assert refused.returncode == 1 and "carries its selection" in refused.stderr
    applied = reconcile("apply", plan, "--auto-approve", "--journal-dir", tmp_path / "j")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Selected: clientId=c06" in applied.stdout


# -- a saved plan applies to the snapshot file it was made from, and only while it holds that data -------


def test_a_saved_plan_applies_to_its_own_file_from_any_directory(copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    decoy = elsewhere / "data" / "demo.json"
    shutil.copyfile(DEMO, decoy)
    plan = tmp_path / "plan.json"
    made = reconcile("plan", "--spec", CHECKINS, "--source", "data/demo.json", "--out", plan,
                     cwd=copy.parent.parent)
    assert made.returncode == 0, made.stderr
    pinned = json.loads(plan.read_text())["source_file"]
    assert pinned["path"] == str(copy.resolve()) and len(pinned["sha256"]) == 64
    applied = reconcile("apply", plan, "--auto-approve", "--journal-dir", tmp_path / "j", cwd=elsewhere)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert decoy.read_bytes() == DEMO.read_bytes()
    assert copy.read_bytes() != DEMO.read_bytes()


@pytest.mark.parametrize("change", ["applied twice", "another file at its path", "app wrote since"])
def test_a_saved_plan_is_refused_when_its_file_holds_other_data(copy, tmp_path, change):
    plan = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", copy, "--out", plan).returncode == 0
    if change == "applied twice":
        assert reconcile("apply", plan, "--auto-approve", "--journal-dir", tmp_path / "j").returncode == 0
    elif change == "another file at its path":
        shutil.copyfile(CHECKINS.parent.parent / "snapshots" / "sessions-demo.json", copy)
    else:
        data = json.loads(copy.read_text())
        data["collections"][A]["added-by-the-app"] = {"fields": {"note": "hello"}}
        copy.write_text(json.dumps(data))
    before = copy.read_bytes()
    refused = reconcile("apply", plan, "--auto-approve", "--journal-dir", tmp_path / "j2")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "is not the one the plan was made from" in refused.stderr
    assert "nothing was written" in refused.stderr and "Traceback" not in refused.stderr
    assert copy.read_bytes() == before
    assert not (tmp_path / "j2").exists()


def test_a_plan_that_drops_its_pin_is_refused(copy, tmp_path):
    plan = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", copy, "--out", plan).returncode == 0
    data = json.loads(plan.read_text())
    data["source_file"] = None
    plan.write_text(json.dumps(data))
    refused = reconcile("apply", plan, "--auto-approve")
    assert refused.returncode == 1 and 'no "source_file"' in refused.stderr


# -- on Firestore: an equality query reads the selection only ------------------------------------------


def test_a_selected_read_on_firestore_plans_what_the_file_plans_from_fewer_documents(live, demo):
    spec, data = demo
    live.load(data)
    options = commands.Options()
    for select in ("clientId=c06", "clientId=c14", "clientId=c25,formId=f-weekly", "formId=f-nutrition"):
        on_firestore = commands.plan(str(CHECKINS), live.source, options, select=select)
        on_file = build_plan(spec, data, parse_selection(select, spec.series.key))
        assert _timeless(on_firestore.plan.ops) == _timeless(on_file.ops), select
        assert on_firestore.plan.findings == on_file.findings, select
        read = sum(len(on_firestore.state.documents(name)) for name in (A, spec.link.collection))
        assert read < len(data.documents(A)) + len(data.documents(spec.link.collection))


def test_on_firestore_a_new_week_id_held_by_another_series_is_looked_up(live):
    spec = checkins()
    taken = _holding_week_2_of_c1(spec)
    live.load(state(assignment("base", totalWeeks=3), taken, response("r2", week=2)))
    planned = commands.plan(str(CHECKINS), live.source, select="clientId=c1")
    assert [f.code for f in planned.plan.findings] == ["assignment.id_taken", "response.slot_blocked"]
    assert [op.path for op in planned.plan.ops] == [week_path(spec, 3)]


def test_on_firestore_integer_and_string_key_parts_are_both_read(live):
    live.load(state(assignment("a1", client=7, totalWeeks=2), assignment("b1", client="7", form="f2",
                                                                          totalWeeks=2),
                    assignment("c1", client=70, totalWeeks=2)))
    planned = commands.plan(str(CHECKINS), live.source, select="clientId=7")
    assert {op.series for op in planned.plan.ops} == {"clientId=7 formId=f1", "clientId=7 formId=f2"}


def test_apply_of_a_selection_on_firestore_touches_nothing_outside_it(live, demo, tmp_path):
    spec, data = demo
    live.load(data)
    selection = parse_selection("clientId=c06", spec.series.key)
    before = live.read(spec.collections)
    done = reconcile("apply", "--spec", CHECKINS, "--source", live.source, "--select", "clientId=c06",
                     "--auto-approve", "--journal-dir", tmp_path / "j")
    assert done.returncode == 0, done.stdout + done.stderr
    after = live.read(spec.collections)
    assert _outside(spec, after, selection) == _outside(spec, before, selection)
    assert derive(spec, after, selection)[0] == []
    assert derive(spec, after)[0]


def test_a_selection_that_names_no_key_field_is_refused_before_any_reading():
    """The source is unreachable: only a refusal made before reading can say this."""
    with pytest.raises(SelectionError, match='"coachId" is not a series key field'):
        commands.plan(str(CHECKINS), "firestore://unreachable-project", select="coachId=x")
