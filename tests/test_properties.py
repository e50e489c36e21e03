"""Property tests over generated messy states: the guarantees hold for any data, not just examples."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from builders import READ, A, R, checkins
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.kernel import new_week_id, projection
from reconciler.model import CreateDocumentOp, Document, FillFieldsOp, State
from reconciler.plan import build_plan, dumps_plan
from reconciler.snapshot import apply_groups
from reconciler.values import MISSING, canonical, is_empty

SPEC = checkins()
LINK = SPEC.link
T0 = datetime(2025, 1, 6, 9, 0, 0, 500, tzinfo=UTC)
BEFORE = datetime(2025, 2, 1, tzinfo=UTC)
APPLIED = datetime(2025, 3, 2, tzinfo=UTC)
ABSENT = "<absent>"  # a generated field value meaning "leave the field out"

clients = st.sampled_from(["c1", "c2", 3, None, ABSENT])
forms = st.sampled_from(["f1", "f2"])
weeks = st.sampled_from([1, 1, 1, 2, 3, 4, 6, 0, None, ABSENT, "2", 1.0])
stamps = st.sampled_from([T0 + timedelta(days=7 * k, hours=h) for k in range(4) for h in (0, 5)])
dues = st.one_of(stamps, st.sampled_from([None, "2025-01-06", ABSENT]))
statuses = st.sampled_from(["pending", "overdue", "completed", "cancelled", None, "", ABSENT])
scores = st.sampled_from([ABSENT, None, 0, 7, 7.5, ""])
empties = st.sampled_from([ABSENT, None, ""])


def pick_ref(prefix: str):
    return st.one_of(empties, st.sampled_from([f"{prefix}{n}" for n in range(6)] + ["ghost"]))


def clean(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if not (isinstance(v, str) and v == ABSENT)}


assignments = st.fixed_dictionaries({
    "clientId": clients, "formId": forms, "recurringWeek": weeks,
    "isRecurring": st.sampled_from([True, True, False, ABSENT, "yes"]),
    "totalWeeks": st.sampled_from([ABSENT, 1, 2, 3, 5, 0, "3", None]),
    "dueDate": dues, "status": statuses, "responseId": pick_ref("r"), "score": scores,
    "completedAt": st.one_of(empties, stamps), "note": st.sampled_from([ABSENT, "x", {"m": [1, 2.0]}]),
})
responses = st.fixed_dictionaries({
    "clientId": clients, "formId": forms,
    "recurringWeek": st.sampled_from([1, 1, 2, 3, 4, 6, 0, ABSENT, "1"]),
    "assignmentId": st.one_of(pick_ref("a"), st.sampled_from(["new:1", "new:2"])),
    "score": scores, "submittedAt": st.one_of(stamps, st.sampled_from(["yesterday", ABSENT])),
})


def resolve(value, fields):
    """``new:W`` stands for the deterministic ID of week W of the response's own series."""
    if isinstance(value, str) and value.startswith("new:"):
        return new_week_id(SPEC, (fields.get("clientId"), fields.get("formId")), int(value[4:]))
    return value


@st.composite
def states(draw) -> State:
    members = draw(st.lists(assignments, max_size=6))
    answers = draw(st.lists(responses, max_size=6))
    docs_a = {f"a{n}": Document(A, f"a{n}", clean(f), BEFORE) for n, f in enumerate(members)}
    docs_r = {}
    for n, fields in enumerate(answers):
        fields = clean(fields)
        if "assignmentId" in fields:
            fields["assignmentId"] = resolve(fields["assignmentId"], fields)
        docs_r[f"r{n}"] = Document(R, f"r{n}", fields, BEFORE)
    return State(source="generated", read_time=READ, collections={A: docs_a, R: docs_r})


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(states())
def test_a_plan_never_deletes_nor_overwrites(state):
    plan = build_plan(SPEC, state)
    paths = [op.path for op in plan.ops]
    assert len(paths) == len(set(paths)), "one write per document"
    for op in plan.ops:
        current = state.find(op.path)
        if isinstance(op, CreateDocumentOp):
            assert current is None
            continue
        assert isinstance(op, FillFieldsOp) and current is not None
        assert op.update_time == current.update_time
        for fill in op.fills:
            assert is_empty(current.get(fill.field)) and not is_empty(fill.value)
            assert SPEC.fills.allows(current.collection, fill.field)
        if op.transition:
            assert op.group is not None
            assert current.get(op.transition.field) == op.transition.before
            assert op.transition.before in LINK.status.from_values


@PROPERTY
@given(states())
def test_apply_then_plan_again_gives_an_empty_plan(state):
    after, results = apply_groups(state, build_plan(SPEC, state).groups(), APPLIED)
    assert all(r.applied for r in results)
    assert build_plan(SPEC, after).ops == ()


@PROPERTY
@given(states())
def test_applying_the_same_plan_twice_changes_nothing_the_second_time(state):
    plan = build_plan(SPEC, state)
    once, _ = apply_groups(state, plan.groups(), APPLIED)
    twice, results = apply_groups(once, plan.groups(), APPLIED + timedelta(days=1))
    assert not any(r.applied for r in results)
    assert canonical_state(twice) == canonical_state(once)


@PROPERTY
@given(states(), st.randoms(use_true_random=False))
def test_the_plan_is_a_pure_function_of_its_inputs(state, rng: random.Random):
    shuffled = {}
    for name, docs in state.collections.items():
        items = list(docs.items())
        rng.shuffle(items)
        shuffled[name] = dict(items)
    again = State(source=state.source, read_time=state.read_time, collections=shuffled)
    assert dumps_plan(build_plan(SPEC, again)) == dumps_plan(build_plan(SPEC, state))


@PROPERTY
@given(states())
def test_every_existing_document_keeps_every_value_but_allowed_fills(state):
    after, _ = apply_groups(state, build_plan(SPEC, state).groups(), APPLIED)
    for name, docs in state.collections.items():
        for doc_id, old in docs.items():
            new = after.collections[name][doc_id]
            for field in set(old.fields) | set(new.fields):
                before, now = old.get(field), new.get(field)
                if canonical(before) == canonical(now):
                    continue
                moved_status = (name == A and field == LINK.status.field
                                and before in LINK.status.from_values and now == LINK.status.to)
                filled = is_empty(before) and SPEC.fills.allows(name, field)
                assert moved_status or filled, (old.path, field, before, now)


@PROPERTY
@given(states(), st.data())
def test_a_stale_plan_skips_whole_links_and_never_overwrites(state, data):
    """Between plan and apply another writer changes some documents: their groups are skipped whole
    (no half link is written), and nothing the other writer wrote is overwritten."""
    plan = build_plan(SPEC, state)
    everything = [doc for docs in state.collections.values() for doc in docs.values()]
    touched = data.draw(st.lists(st.sampled_from(everything), unique_by=lambda d: d.path)) \
        if everything else []
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    app_time = BEFORE + timedelta(days=3)
    for doc in touched:  # the app fills every empty link field with its own value
        fields = dict(doc.fields)
        for field in (LINK.member_ref, LINK.response_ref, "score"):
            if is_empty(fields.get(field, MISSING)):
                fields[field] = f"app-{doc.id}"
        collections[doc.collection][doc.id] = Document(doc.collection, doc.id, fields, app_time)
    changed = State(source=state.source, read_time=state.read_time, collections=collections)
    after, results = apply_groups(changed, plan.groups(), APPLIED)
    for group in plan.groups():
        outcomes = {r.applied for r in results if r.op in group}
        assert len(outcomes) == 1, "a group is applied whole or skipped whole"
    for doc in touched:
        new = after.collections[doc.collection][doc.id]
        assert canonical(new.fields) == canonical(collections[doc.collection][doc.id].fields)


def canonical_state(state: State) -> str:
    return canonical({name: {d.id: {"f": d.fields, "t": d.update_time} for d in docs.values()}
                      for name, docs in state.collections.items()})


@PROPERTY
@given(states())
def test_a_plan_from_projected_documents_is_the_plan_from_whole_ones(state):
    """plan and check read only the fields the rules need (possible bases whole): same plan."""
    lens = projection(SPEC)

    def select(name: str, fields: dict) -> dict:
        keep = lens.keep(name, fields)
        return fields if keep is None else {k: v for k, v in fields.items() if k in keep}

    projected = State(source=state.source, read_time=state.read_time, collections={
        name: {doc_id: Document(name, doc_id, select(name, doc.fields), doc.update_time)
               for doc_id, doc in docs.items()}
        for name, docs in state.collections.items()})
    assert dumps_plan(build_plan(SPEC, projected)) == dumps_plan(build_plan(SPEC, state))
