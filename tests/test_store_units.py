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
