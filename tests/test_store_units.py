"""The store's pure helpers: batches never split a link, and the write-rate ramp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import SourceError
from reconciler.model import CreateDocumentOp
from reconciler.store import _batches, _RateLimiter, parse_source


def group(n: int, size: int) -> tuple:
    return tuple(CreateDocumentOp(path=f"c/g{n}-{i}", fields={}, rules=("t",)) for i in range(size))


@given(st.lists(st.integers(1, 3), max_size=60), st.integers(3, 500))
def test_batches_hold_whole_groups_within_the_limit_in_order(sizes, limit):
    groups = [group(n, size) for n, size in enumerate(sizes)]
    batches = _batches(groups, limit)
    assert [g for batch in batches for g in batch] == groups
    assert all(sum(len(g) for g in batch) <= limit for batch in batches)
    assert all(batch for batch in batches)


def test_the_ramp_starts_at_500_and_grows_half_every_five_minutes():
    ramp = _RateLimiter("ramp", None)
    start = ramp.started
    assert [ramp.rate(start + minutes * 60) for minutes in (0, 4.9, 5.1, 10.1, 15.1)] == [
        500, 500, 750, 1125, 1687.5]


def test_a_fixed_cap_wins_and_the_emulator_is_not_throttled():
    assert _RateLimiter("ramp", 20).rate(0) == 20
    assert _RateLimiter(None, None).rate(0) is None


@pytest.mark.parametrize(("source", "expected"), [
    ("firestore://p", ("p", "(default)")), ("firestore://p/db-2", ("p", "db-2"))])
def test_sources_name_a_project_and_a_database(source, expected):
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["firestore://", "firestore:///db", "firestore://p/db/extra"])
def test_malformed_firestore_sources_are_refused(source):
    with pytest.raises(SourceError, match="expected firestore://PROJECT"):
        parse_source(source)


@pytest.mark.parametrize(("source", "words"), [
    ("firestore://p/..", "is not a Firestore database ID"),
    ("firestore://../x", "is not a Google Cloud project ID"),
    ("firestore://My Project", "is not a Google Cloud project ID"),
    ("firestore://a..b", "is not a Google Cloud project ID"),
    ("firestore://proj-/db", "is not a Google Cloud project ID"),
    ("firestore://proj/DB", "is not a Firestore database ID"),
    ("firestore://proj/\x1b[2K", "is not a Firestore database ID"),
])
def test_project_and_database_ids_are_checked_before_anything_is_contacted(source, words):
    with pytest.raises(SourceError, match=words):
        parse_source(source)


def test_the_write_limits_firestore_enforces_are_known_before_sending():
    from datetime import UTC, datetime

    from reconciler.model import FieldFill, FillFieldsOp
    from reconciler.store import MAX_DOCUMENT_BYTES, _unwritable
    from reconciler.values import document_size

    assert document_size("c/d", {"s": "x" * 10}) == (2 + 2 + 16) + (2 + 11) + 32
    fits = CreateDocumentOp(path="c/d", fields={"s": "x" * (MAX_DOCUMENT_BYTES - 100)}, rules=("t",))
    assert _unwritable(fits, None) == ""
    over = CreateDocumentOp(path="c/d", fields={"s": "x" * MAX_DOCUMENT_BYTES}, rules=("t",))
    assert "more than Firestore's limit" in _unwritable(over, None)
    nested = FillFieldsOp(path="c/d", update_time=datetime(2025, 1, 1, tzinfo=UTC),
                          fills=(FieldFill(field="a", value=[[1]], rule="t"),))
    assert "array directly inside an array" in _unwritable(nested, None)
