"""The plan file's ops encoded where they were planned (each worker encodes its own share) give the
plan file of one core, byte for byte; a worker that lets go of the others' documents plans as if it
held them all; a worker whose encoded ops arrive short is one sentence, never a part of a plan."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import checkins
from hypothesis import HealthCheck, given, settings
from test_properties import states

from bench.generate import Shape, generate
from reconciler import workers
from reconciler.errors import ReconcileError
from reconciler.kernel import reconcile
from reconciler.model import CreateDocumentOp, Document, State
from reconciler.plan import build_plan, op_item, plan_bytes, plan_chunks

SPEC = checkins()
MESSY = {"base_missing": 0.2, "base_without_week": 0.2, "week_duplicate": 0.5, "due_mismatch": 0.1,
         "response_duplicate": 0.2, "response_conflict": 0.2}


def copy(state: State) -> State:
    """A state of its own: a released plan empties the collections it was given."""
    return replace(state, collections={name: dict(docs) for name, docs in state.collections.items()})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_ops_encoded_one_by_one_give_the_plan_file_bytes(state):
    plan = build_plan(SPEC, state)
    assert b"".join(plan_chunks(plan, [op_item(op) for op in plan.ops])) == plan_bytes(plan)


@pytest.mark.parametrize("cores", [1, 2, 3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_encoded_on_cores_and_released_gives_the_plan_file_of_one_core(cores, seed):
    state = generate(Shape(clients=40, weeks=12, present=0.6, responses_per_series=4, seed=seed, **MESSY))
    single = plan_bytes(build_plan(SPEC, state))
    given = copy(state)
    ops, findings, items = workers.plan_on_cores(SPEC, given, cores=cores, release=True)
    assert items is not None and len(items) == len(ops) > 0
    assert b"".join(plan_chunks(build_plan(SPEC, state, None, (ops, findings)), items)) == single
    if cores > 1:  # let go of, here as in the workers
        assert all(not docs for docs in given.collections.values())


def test_a_released_state_still_knows_the_new_week_ids_taken():
    state = generate(Shape(clients=12, weeks=10, present=0.5, responses_per_series=2, seed=5))
    ops, _ = reconcile(SPEC, state)
    # A document of no series standing at the ID a new week would take: the create must become a
    # finding on every core, though the document's own series is gone from the released state.
    taken = next(op for op in ops if isinstance(op, CreateDocumentOp))
    collection, _, doc_id = taken.path.partition("/")
    squatter = Document(collection, doc_id, {"note": "not a member"}, state.read_time)
    state = replace(state, collections={**state.collections,
                                        collection: {**state.collections[collection], doc_id: squatter}})
    single = plan_bytes(build_plan(SPEC, state))
    assert b"assignment.id_taken" in single and taken.path.encode() in single
    for cores in (2, 3):
        ops, findings, items = workers.plan_on_cores(SPEC, copy(state), cores=cores, release=True)
        assert b"".join(plan_chunks(build_plan(SPEC, state, None, (ops, findings)), items)) == single


class _Short(bytes):
    """Encoded bytes that say they are longer than they are: what a worker cut off sends."""

    def __len__(self) -> int:
        return super().__len__() + 1


def test_a_worker_whose_encoded_ops_arrive_short_is_one_sentence(monkeypatch):
    state = generate(Shape(clients=20, weeks=8, seed=3))
    monkeypatch.setattr(workers, "op_item", lambda op: _Short(op_item(op)))
    with pytest.raises(ReconcileError) as raised:
        workers.plan_on_cores(SPEC, state, cores=2)
    message = str(raised.value)
    assert "before sending its whole result" in message and "no plan was made" in message
    assert "\n" not in message
