"""Validation after apply tells what this run did apart from what other writers did meanwhile."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from builders import A, R, assignment, checkins, response, state

from reconciler.plan import build_plan
from reconciler.render import render_verification, verification_data
from reconciler.snapshot import apply_groups
from reconciler.verify import verify

SPEC = checkins()
NOW = datetime(2025, 3, 2, tzinfo=UTC)


def applied(before):
    plan = build_plan(SPEC, before)
    after, results = apply_groups(before, plan.groups(), NOW)
    return after, results


def without(current, *paths):
    collections = {name: {k: d for k, d in docs.items() if d.path not in paths}
                   for name, docs in current.collections.items()}
    return replace(current, collections=collections)


def test_responses_deleted_by_another_writer_are_its_drift_not_a_loss_by_this_run():
    before = state(assignment("a1", 1), assignment("a2", 2), assignment("a3", 3),
                   response("r1", 1), response("r2", 2), response("r9", 9))
    after, results = applied(before)
    # Meanwhile another writer deletes a response this run linked and one it never touched.
    after = without(after, f"{R}/r1", f"{R}/r9")
    verification = verify(SPEC, before, after, results, build_plan(SPEC, after))
    assert verification.nothing_lost
    assert verification.deleted_by_others == (f"{R}/r1", f"{R}/r9")
    assert verification.links_broken == ()
    text = render_verification(verification, "text")
    assert "VALUES WERE LOST" not in text
    assert ("Responses preserved ......... YES  (1 of 3; 2 deleted by another writer while this run ran)"
            in text)
    assert "Drift by another writer, not by this run: 2 document(s)" in text
    assert verification_data(verification)["deleted_by_others"] == [f"{R}/r1", f"{R}/r9"]


def test_a_value_this_run_changed_on_a_document_it_wrote_is_still_a_loss():
    before = state(assignment("a1", 1), assignment("a2", 2, score=7), assignment("a3", 3), response("r2", 2))
    after, results = applied(before)
    member = after.find(f"{A}/a2")
    # The document still carries this run's update time: the change can only be this run's.
    after = replace(after, collections={**after.collections, A: {**after.collections[A], "a2": replace(
        member, fields={**member.fields, "score": 0})}})
    verification = verify(SPEC, before, after, results, build_plan(SPEC, after))
    assert not verification.nothing_lost
    assert "VALUES WERE LOST" in render_verification(verification, "text")
