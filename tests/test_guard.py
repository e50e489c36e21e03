"""The guard at the write boundary: a plan file only proposes, apply writes what the spec derives.

Every op kind × every field of an op is tampered with, on data that did not change since the plan:
the guard must refuse the whole plan (or the reader refuse the file), never admit a write the
spec does not derive. On data that did change, the affected groups are skipped as stale and the
others admitted."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from builders import CHECKINS, DEMO, A, R, assignment, checkins, reconcile, state, with_cadence

from reconciler.errors import PlanFileError, UnsafePlan
from reconciler.guard import admit
from reconciler.kernel import new_week_id
from reconciler.model import Document, Plan, State
from reconciler.plan import build_plan, dumps_plan, loads_plan, op_to_data, plan_to_data
from reconciler.snapshot import SnapshotStore
from reconciler.spec import parse_spec
from reconciler.values import canonical

SPEC = checkins()
STATE = SnapshotStore(DEMO).read(SPEC.collections)
PLAN = build_plan(SPEC, STATE)
LATER = STATE.read_time + timedelta(minutes=5)


def data_of(plan: Plan) -> dict:
    return json.loads(json.dumps(plan_to_data(plan)))


def reload(data: dict) -> Plan:
    return loads_plan(json.dumps(data), "tampered.json")


def canon_ops(ops) -> set[str]:
    return {canonical(op_to_data(op)) for op in ops}


def admitted_ops(admission) -> list:
    return [op for group in admission.groups for op in group]


def first(kind: str, *, grouped: bool | None = None, collection: str | None = None,
          rule: str | None = None) -> int:
    """The index of the first op of the demo plan of this shape."""
    for index, op in enumerate(data_of(PLAN)["ops"]):
        if op["op"] != kind or (grouped is not None and (op["group"] is not None) != grouped):
            continue
        if collection and not op["path"].startswith(collection + "/"):
            continue
        if rule and rule not in op["rules"]:
            continue
        if kind == "fill_fields" and grouped and collection == A and op["transition"] is None:
            continue
        return index
    raise AssertionError(f"the demo plan has no {kind} {grouped} {collection} {rule}")


SHAPES = {
    "create": first("create_document", grouped=False),
    "linked create": first("create_document", grouped=True),
    "link member fill": first("fill_fields", grouped=True, collection=A),
    "link response fill": first("fill_fields", grouped=True, collection=R),
    "base week fill in a link": first("fill_fields", grouped=True, collection=A, rule="series.base_week"),
    "half link fill": first("fill_fields", grouped=False, collection=R),
}


def _set(key, value):
    def mutate(op):
        op[key] = value
    return mutate


def _fields(change):
    def mutate(op):
        change(op["fields"] if "fields" in op else op["fills"][0])
    return mutate


# Every field of an op, each changed in a way the spec could never produce from unchanged data.
MUTATIONS = {
    "path to a reference collection": lambda op: op.update(path="clients/" + op["path"].split("/")[1]),
    "path to an unknown collection": lambda op: op.update(path="secrets/" + op["path"].split("/")[1]),
    "path to another document": lambda op: op.update(path=op["path"].split("/")[0] + "/someone-else"),
    "rules replaced": _set("rules", ["fills.anything"]),
    "rules extended": lambda op: op.update(rules=[*op["rules"], "series.new_week"]),
    "group removed": _set("group", None),
    "group moved": _set("group", f"{A}/another-group"),
    "value changed": _fields(lambda f: f.update(value=0) if "value" in f else f.update(clientId="c99")),
    "field renamed": _fields(lambda f: f.update(field="coachNote") if "field" in f
                             else f.update(coachNote="x")),
    "field dropped": lambda op: op["fills"].pop() if "fills" in op else op["fields"].pop("status", None),
    "field added": lambda op: op["fills"].append({"field": "score", "value": 0, "before": None,
                                                  "rule": "link.pair"}) if "fills" in op
    else op["fields"].update(score=0),
    "transition added": lambda op: op.update(transition={"field": "status", "before": "pending",
                                                         "to": "completed", "rule": "link.pair"}),
    "transition to a value the spec never names": lambda op: op.update(
        transition={"field": "status", "before": "pending", "to": "archived", "rule": "link.pair"}),
    "precondition dropped": lambda op: op.update(precondition={"update_time": None}) if "fills" in op
    else op.update(precondition={}),
}


def _changes(shape: str, mutation: str) -> bool:
    op = data_of(PLAN)["ops"][SHAPES[shape]]
    before = copy.deepcopy(op)
    MUTATIONS[mutation](op)
    return op != before  # e.g. adding a transition to an op that has one changes nothing


@pytest.mark.parametrize(("mutation", "shape"), [(m, s) for m in MUTATIONS for s in SHAPES if _changes(s, m)])
def test_a_tampered_op_on_unchanged_data_is_never_admitted(shape, mutation):
    data = data_of(PLAN)
    op = data["ops"][SHAPES[shape]]
    MUTATIONS[mutation](op)
    try:
        tampered = reload(data)
    except PlanFileError:
        return  # the reader refuses it: nothing is written either
    if canon_ops(tampered.ops) == canon_ops(PLAN.ops):
        # A key that has no meaning for this kind of op (a create's transition) is ignored by the
        # reader, as unknown keys are: the plan shown and applied is the untampered one.
        assert mutation.startswith("transition") and op["op"] == "create_document"
        return
    if mutation == "path to another document" and op["op"] == "fill_fields" and op["group"] is None:
        # A fill of a document that is not in the data cannot be told from one deleted since the
        # plan: it is skipped as stale, and nothing else changes.
        admission = admit(SPEC, tampered, STATE)
        assert {(r.op.path, r.reason) for r in admission.skipped if r.op.path == op["path"]} == {
            (op["path"], "the document no longer exists")}
        assert canon_ops(admitted_ops(admission)) < canon_ops(PLAN.ops)
        return
    with pytest.raises(UnsafePlan, match="refusing the whole plan, nothing was written"):
        admit(SPEC, tampered, STATE)


def test_an_untampered_plan_is_admitted_whole_and_exactly_as_derived():
    admission = admit(SPEC, reload(data_of(PLAN)), STATE)
    assert admission.skipped == ()
    assert canon_ops(admitted_ops(admission)) == canon_ops(PLAN.ops)


def test_a_group_with_one_side_removed_is_refused_as_a_half_link():
    data = data_of(PLAN)
    response = SHAPES["link response fill"]
    del data["ops"][response]
    with pytest.raises(UnsafePlan, match="spec derives"):
        admit(SPEC, reload(data), STATE)


def test_a_fill_over_a_value_with_the_documents_real_update_time_is_refused():
    data = data_of(PLAN)
    op = data["ops"][SHAPES["link member fill"]]
    path = op["path"]
    scored = STATE.find(path)
    assert scored is not None
    # The data says score 8 at the very update time the plan names; the file says "before: null".
    state = _with(STATE, replace(scored, fields={**scored.fields, "score": 8}))
    op["fills"] = [f for f in op["fills"] if f["field"] != "score"] + [
        {"field": "score", "value": 0, "before": None, "rule": "link.pair"}]
    with pytest.raises(UnsafePlan, match=f"{path}: the plan proposes"):
        admit(SPEC, reload(data), state)


def test_a_second_write_to_one_document_is_refused():
    data = data_of(PLAN)
    data["ops"].append(copy.deepcopy(data["ops"][SHAPES["create"]]))
    with pytest.raises(PlanFileError, match="a plan writes each document once"):
        reload(data)  # the reader refuses it; the guard would too, for a plan built in memory
    twice = replace(PLAN, ops=(*PLAN.ops, PLAN.ops[SHAPES["create"]]))
    with pytest.raises(UnsafePlan, match="written by two ops"):
        admit(SPEC, twice, STATE)


# -- stale, not tampered: the data changed since the plan ---------------------------------------------


def _with(state: State, *docs: Document) -> State:
    collections = {name: dict(found) for name, found in state.collections.items()}
    for doc in docs:
        collections.setdefault(doc.collection, {})[doc.id] = doc
    return replace(state, collections=collections)


def _op(index: int):
    return PLAN.ops[index]


def test_a_document_written_since_the_plan_skips_its_group_and_admits_the_rest():
    member = _op(SHAPES["link member fill"])
    doc = STATE.find(member.path)
    state = _with(STATE, replace(doc, fields={**doc.fields, "appTouch": 1}, update_time=LATER))
    admission = admit(SPEC, PLAN, state)
    skipped = {r.op.path: r.reason for r in admission.skipped}
    group = [op.path for op in PLAN.ops if op.group == member.group]
    assert len(group) == 2
    assert skipped == {path: "the document changed since the plan was made" for path in group}
    assert canon_ops(admitted_ops(admission)) == canon_ops(op for op in PLAN.ops if op.path not in group)


def test_a_week_the_app_created_since_the_plan_is_skipped_not_refused():
    create = _op(SHAPES["create"])
    taken = Document(A, create.path.split("/")[1], dict(create.fields), LATER)
    admission = admit(SPEC, PLAN, _with(STATE, taken))
    assert [(r.op.path, r.reason) for r in admission.skipped] == [
        (create.path, "the document already exists")]


def test_a_new_response_in_a_series_makes_its_changed_groups_stale_not_refused():
    member = _op(SHAPES["link member fill"])
    key = (STATE.find(member.path).get("clientId"), STATE.find(member.path).get("formId"))
    week = STATE.find(member.path).get("recurringWeek") or 1
    later = Document(R, "zz-late", {"clientId": key[0], "formId": key[1], "recurringWeek": week, "score": 1,
                                     "submittedAt": datetime(2030, 1, 1, tzinfo=UTC)}, LATER)
    admission = admit(SPEC, PLAN, _with(STATE, later))
    assert {r.reason for r in admission.skipped} == {"its series changed since the plan was made"}
    assert member.path in {r.op.path for r in admission.skipped}


def test_a_base_deleted_since_the_plan_skips_its_series_as_stale_not_as_an_edit():
    create = _op(SHAPES["create"])
    key = tuple(create.fields[name] for name in SPEC.series.key)
    base = next(doc for doc in STATE.collections[A].values()
                if tuple(doc.get(name) for name in SPEC.series.key) == key
                and doc.get("recurringWeek") in (1, None) and doc.get("isRecurring") is True)
    collections = {name: dict(docs) for name, docs in STATE.collections.items()}
    del collections[A][base.id]  # deleted by another writer: no update time tells of it
    admission = admit(SPEC, PLAN, replace(STATE, collections=collections))
    reasons = {r.op.path: r.reason for r in admission.skipped}
    assert reasons[create.path].startswith("its series is no longer usable (series.base_missing)")


def test_a_read_time_moved_before_the_plans_own_reads_is_refused():
    data = data_of(PLAN)
    data["read_time"] = {"$timestamp": "2020-01-01T00:00:00.000000Z"}
    with pytest.raises(UnsafePlan, match="update time after the plan's own read time"):
        admit(SPEC, reload(data), STATE)


def test_without_a_read_time_a_difference_cannot_pass_for_a_change_and_is_refused():
    data = data_of(PLAN)
    data["read_time"] = None
    member = data["ops"][SHAPES["link member fill"]]
    next(f for f in member["fills"] if f["field"] == "score")["value"] = 0  # passes every static check
    with pytest.raises(UnsafePlan, match="the plan proposes .*score: .* -> 0"):
        admit(SPEC, reload(data), STATE)


# -- end to end, on a snapshot file and on the emulator ------------------------------------------------


TAMPERS = {
    "score 8 -> 0 over a value": "score",
    "a status the spec never names": "status",
    "a field that is not an allowed fill": "field",
    "a create in a reference collection": "clients",
    "a create in a collection the spec never mentions": "secrets",
    "one side of a link removed": "half",
    "a last op without the update time it was planned at": "no-update-time",
}


def tamper(plan_file, how: str, current: State) -> None:
    data = json.loads(plan_file.read_text())
    ops = data["ops"]
    member = next(op for op in ops if op["op"] == "fill_fields" and op["group"] == op["path"]
                  and op["transition"] is not None)
    if how == "score":
        path = next(p for p, doc in current.collections[A].items() if doc.get("score") not in (None, "")
                    and doc.update_time is not None)
        doc = current.collections[A][path]
        ops.append({"op": "fill_fields", "path": f"{A}/{path}", "rules": ["link.pair"],
                    "group": f"{A}/{path}", "series": "",
                    "precondition": {"update_time": {"$timestamp": doc.update_time.isoformat().replace(
                        "+00:00", "Z")}},
                    "fills": [{"field": "score", "value": 0, "before": None, "rule": "link.pair"}],
                    "transition": None})
    elif how == "status":
        member["transition"]["to"] = "archived"
    elif how == "field":
        member["fills"].append({"field": "coachNote", "value": "hi", "before": None, "rule": "link.pair"})
    elif how in ("clients", "secrets"):
        ops.append({"op": "create_document", "path": f"{how}/planted", "rules": ["series.new_week"],
                    "group": None, "series": "", "precondition": {"exists": False}, "fields": {"x": 1}})
    elif how == "no-update-time":
        last = next(op for op in reversed(ops) if op["op"] == "fill_fields")
        ops.remove(last)
        ops.append({**last, "precondition": {"update_time": None}})
    elif how == "half":
        data["ops"] = [op for op in ops
                       if not (op["group"] == member["group"] and op["path"] != member["path"])]
    plan_file.write_text(json.dumps(data))


@pytest.mark.parametrize("how", TAMPERS)
def test_a_tampered_plan_writes_nothing_to_a_snapshot_file(tmp_path, how):
    source = tmp_path / "data.json"
    source.write_bytes(DEMO.read_bytes())
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", source, "--out", plan_file).returncode == 0
    tamper(plan_file, TAMPERS[how], SnapshotStore(source).read())
    run = reconcile("apply", plan_file, "--journal-dir", tmp_path / "j")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "refusing the whole plan, nothing was written" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == DEMO.read_bytes()
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("how", TAMPERS)
def test_a_tampered_plan_writes_nothing_to_firestore(live, tmp_path, how):
    live.load(SnapshotStore(DEMO).read())
    before = live.dump()
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", live.source, "--out", plan_file).returncode == 0
    tamper(plan_file, TAMPERS[how], live.read())
    run = reconcile("apply", plan_file, "--journal-dir", tmp_path / "j")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "refusing the whole plan, nothing was written" in run.stderr
    assert live.dump() == before


# -- a plan may not bring a spec of its own ------------------------------------------------------------


def evil_plan(tmp_path):
    """A plan made with a spec that 'moves' coachId from coach-1 to coach-evil, then relabelled as
    made with the shipped spec (the path is not covered by the hash: only the text is)."""
    evil = tmp_path / "evil.yaml"
    evil.write_text(CHECKINS.read_text()
                    .replace("status: {field: status, to: completed, from: [pending, overdue]}",
                             "status: {field: coachId, to: coach-evil, from: [coach-1]}")
                    .replace("reset: {status: pending, responseId: null}",
                             "reset: {status: pending, responseId: null, coachId: coach-1}")
                    .replace("check_in_assignments: [recurringWeek, responseId, status, score, completedAt]",
                             "check_in_assignments: [recurringWeek, responseId, status, score, completedAt, "
                             "coachId]"))
    source = tmp_path / "data.json"
    source.write_bytes(DEMO.read_bytes())
    plan_file = tmp_path / "plan.json"
    made = reconcile("plan", "--spec", evil, "--source", source, "--out", plan_file)
    assert made.returncode == 0, made.stderr
    data = json.loads(plan_file.read_text())
    assert any(op.get("transition") and op["transition"]["field"] == "coachId" for op in data["ops"])
    data["spec"]["path"] = str(CHECKINS)
    plan_file.write_text(json.dumps(data))
    return plan_file, source


def test_a_plan_carrying_another_spec_than_the_file_it_names_is_refused(tmp_path):
    plan_file, source = evil_plan(tmp_path)
    run = reconcile("apply", plan_file, "--journal-dir", tmp_path / "j")
    assert run.returncode == 1 and f"the plan carries a spec that is not {CHECKINS}" in run.stderr
    assert source.read_bytes() == DEMO.read_bytes()


def test_a_pinned_spec_must_be_the_one_the_plan_carries(tmp_path):
    plan_file, source = evil_plan(tmp_path)
    data = json.loads(plan_file.read_text())
    data["spec"]["path"] = "nowhere/evil.yaml"  # a path that does not exist here: nothing to compare
    plan_file.write_text(json.dumps(data))
    pinned = reconcile("apply", plan_file, "--spec", CHECKINS, "--journal-dir", tmp_path / "j")
    assert pinned.returncode == 1 and "the plan carries a spec that is not" in pinned.stderr
    assert source.read_bytes() == DEMO.read_bytes()
    honest = tmp_path / "honest.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", source, "--out", honest).returncode == 0
    assert reconcile("apply", honest, "--spec", CHECKINS, "--journal-dir", tmp_path / "j").returncode == 0


# -- a calendar cadence through the plan file --------------------------------------------------------

LONDON = with_cadence("every: {weeks: 1}\ntimezone: Europe/London")
# Monday 23 March 2026 09:00 GMT; once the clocks go forward on the 29th, Mondays 09:00 BST are
# 08:00 UTC.
LONDON_STATE = state(assignment("a1", 1, totalWeeks=3, dueDate=datetime(2026, 3, 23, 9, tzinfo=UTC)))
LONDON_PLAN = build_plan(LONDON, LONDON_STATE)


def test_a_plan_with_a_calendar_cadence_round_trips_and_apply_admits_it_whole():
    text = dumps_plan(LONDON_PLAN)
    saved = loads_plan(text, "london.json")
    assert saved == LONDON_PLAN and dumps_plan(saved) == text
    carried = parse_spec(saved.spec_text.encode("utf-8"), saved.spec_path)  # what apply PLAN reads
    assert carried.sha256 == saved.spec_sha256 and carried.cadence == LONDON.cadence
    admission = admit(carried, saved, LONDON_STATE)
    assert admission.skipped == ()
    assert [(op.path, op.fields["dueDate"]) for op in admitted_ops(admission)] == [
        (f"{A}/{new_week_id(LONDON, ('c1', 'f1'), 2)}", datetime(2026, 3, 30, 8, tzinfo=UTC)),
        (f"{A}/{new_week_id(LONDON, ('c1', 'f1'), 3)}", datetime(2026, 4, 6, 8, tzinfo=UTC))]


def test_a_calendar_date_moved_in_the_plan_file_is_refused():
    """09:00 UTC is what exact 7-day steps would give: not what this spec derives."""
    data = data_of(LONDON_PLAN)
    data["ops"][0]["fields"]["dueDate"] = {"$timestamp": "2026-03-30T09:00:00.000000Z"}
    with pytest.raises(UnsafePlan, match="refusing the whole plan"):
        admit(LONDON, reload(data), LONDON_STATE)
