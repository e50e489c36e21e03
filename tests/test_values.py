"""The snapshot format keeps every Firestore type exactly, through a file and back."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.errors import FormatVersionError, SourceError
from reconciler.model import Document, State
from reconciler.snapshot import SnapshotStore, dumps_snapshot
from reconciler.values import GeoPoint, Reference, canonical, decode, encode, is_empty, parse_timestamp, same

VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 0.0, -0.0, 1.0, 2.5, 1e-300, 1.7976931348623157e308,
    "", "plain", "ünïcödé ✓", "$timestamp", "line\nbreak",
    b"", b"\x00\xff\x10binary",
    datetime(2025, 1, 6, 9, 0, 0, 123456, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    Reference("forms/f1"), Reference("clients/c1/notes/n1"),
    GeoPoint(51.5, -0.12), GeoPoint(-90.0, 180.0),
    [], [1, "a", None, [2.0, {"x": b"\x01"}]],
    {}, {"nested": {"deeper": {"when": datetime(2025, 5, 5, tzinfo=UTC), "list": [GeoPoint(0.0, 0.0)]}}},
    {"$timestamp": "not a tag", "$map": 1, "plain": 2},
    math.inf, -math.inf,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + ":" + repr(v)[:30])
def test_every_type_survives_a_snapshot_file_exactly(tmp_path, value):
    path = tmp_path / "s.json"
    doc = Document("things", "t1", {"v": value}, datetime(2025, 2, 3, 4, 5, 6, 7, tzinfo=UTC))
    path.write_text(dumps_snapshot(State(source="x", read_time=None, collections={"things": {"t1": doc}})))
    back = SnapshotStore(path).read().documents("things")["t1"]
    assert same(back.get("v"), value)
    assert type(back.get("v")) is type(value)
    assert back.update_time == doc.update_time


def test_nan_survives_too():
    assert math.isnan(decode(encode(math.nan), "v"))


def test_int_float_and_bool_are_different_values():
    assert not same(1, 1.0) and not same(1, True) and not same(0, False)
    assert canonical(1) != canonical(1.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-01-06T09:00:00Z", datetime(2025, 1, 6, 9, tzinfo=UTC)),
    ("2025-01-06T11:00:00.5+02:00", datetime(2025, 1, 6, 9, 0, 0, 500000, tzinfo=UTC)),
    ("2025-01-06T09:00:00.123456000Z", datetime(2025, 1, 6, 9, 0, 0, 123456, tzinfo=UTC)),
    ("2025-01-05T23:30:00-09:30", datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
])
def test_timestamps_keep_their_instant_whatever_the_offset(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo == UTC


def test_a_timestamp_is_written_in_utc_with_six_digits():
    local = datetime(2025, 1, 6, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert encode(local) == {"$timestamp": "2025-01-06T09:00:00.000000Z"}


@pytest.mark.parametrize("text", ["2025-01-06T09:00:00.1234567Z", "2025-01-06 09:00", "yesterday",
                                  "2025-01-06T09:00:00"])
def test_timestamps_that_cannot_be_kept_exactly_are_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize("value", [None, "", ...])
def test_empty_means_missing_null_or_empty_string(value):
    from reconciler.values import MISSING
    assert is_empty(MISSING if value is ... else value)


@pytest.mark.parametrize("value", [0, False, [], {}, " ", 0.0, b""])
def test_falsy_values_are_not_empty(value):
    assert not is_empty(value)


def snapshot_text(**overrides) -> str:
    data = {"format": "reconcile-snapshot", "format_version": "1.0", "source": "t", "read_time": None,
            "collections": {"things": {"t1": {"update_time": None, "fields": {"a": 1}}}}}
    data.update(overrides)
    return json.dumps(data)


def test_unknown_fields_are_ignored_and_minor_versions_accepted(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(snapshot_text(format_version="1.7", comment="from the future"))
    assert SnapshotStore(path).read().documents("things")["t1"].fields == {"a": 1}


@pytest.mark.parametrize(("overrides", "error", "words"), [
    ({"format_version": "2.0"}, FormatVersionError, "format_version '2.0' is not supported"),
    ({"format_version": None}, FormatVersionError, "not supported"),
    ({"format": "something-else"}, FormatVersionError, "not a snapshot file"),
    ({"collections": []}, SourceError, "'collections' must be an object"),
    ({"collections": {"things": {"t1": {"fields": {"d": {"$timestamp": "soon"}}}}}}, SourceError,
     "collections.things.t1.fields.d: bad $timestamp value"),
    ({"collections": {"things": {"t1": {"fields": {"d": {"$oops": 1}}}}}}, SourceError,
     "unknown tag '$oops'"),
    ({"collections": {"things": {"t1": {"fields": {"d": {"$bytes": "!!"}}}}}}, SourceError, "bad $bytes"),
    ({"collections": {"things": {"t1": {"fields": {"r": {"$reference": "only-a-collection"}}}}}},
     SourceError, "not a document path"),
])
def test_malformed_snapshots_are_refused_with_the_place(tmp_path, overrides, error, words):
    path = tmp_path / "s.json"
    path.write_text(snapshot_text(**overrides))
    with pytest.raises(error) as raised:
        SnapshotStore(path).read()
    assert words in str(raised.value) and str(path) in str(raised.value)


def test_a_file_that_is_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"format": "reconcile-snapshot",\n  oops}')
    with pytest.raises(SourceError, match=r"s\.json:2:3: not valid JSON"):
        SnapshotStore(path).read()


def test_a_missing_file_is_one_clear_sentence(tmp_path):
    with pytest.raises(SourceError, match="snapshot file not found"):
        SnapshotStore(tmp_path / "nope.json").read()


def test_a_snapshot_edited_by_hand_still_reads_the_same(tmp_path):
    from builders import DEMO

    canonical_state = SnapshotStore(DEMO).read()
    edited = tmp_path / "edited.json"
    data = json.loads(DEMO.read_text())
    edited.write_text(json.dumps(data, indent=2))  # valid JSON, another layout
    assert SnapshotStore(edited).read().collections == canonical_state.collections
    first, rest = DEMO.read_text().split("\n", 1)  # the writer's header, then hand-made lines
    edited.write_text(first + "\n" + json.dumps(data["collections"], indent=1)[1:] + "}\n")
    assert SnapshotStore(edited).read().collections == canonical_state.collections


def test_a_truncated_snapshot_names_where_it_is_cut(tmp_path):
    from builders import DEMO

    cut = tmp_path / "cut.json"
    cut.write_bytes(DEMO.read_bytes()[:20_000])
    with pytest.raises(SourceError, match=r"cut\.json:\d+:\d+: not valid JSON"):
        SnapshotStore(cut).read()
