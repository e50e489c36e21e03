"""Snapshot files never lose a value, and a run's outputs never clobber its inputs.

A snapshot that repeats a key (a collection, a document, a field, a map key) or holds an integer
Firestore cannot hold is malformed input: reading it as "the last copy wins" or "a big integer is a
float" would let apply rewrite the file without the other copy. Reads open regular files only;
writes keep the mode of the file they replace and never land on one of the run's own inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, WORKDIR, assignment, checkins, reconcile, response, state

from reconciler.errors import SourceError
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore, read_snapshot, snapshot_bytes
from reconciler.values import decode_fields

A = "check_in_assignments"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identity(path: Path) -> tuple[int, ...]:
    """What a replace or a write would change about a name (not its access time)."""
    seen = os.lstat(path)
    return (seen.st_ino, seen.st_mode, seen.st_size, seen.st_mtime_ns, seen.st_nlink)


def written(tmp_path: Path, *docs, name: str = "s.json") -> Path:
    """A snapshot in the writer's layout (one document per line)."""
    path = tmp_path / name
    path.write_bytes(snapshot_bytes(state(*docs)))
    return path


def line_number(path: Path, starts: str, occurrence: int = 1) -> int:
    """The 1-based number of the ``occurrence``-th line of ``path`` that starts with ``starts``."""
    found = [number for number, line in enumerate(path.read_text().splitlines(), start=1)
             if line.startswith(starts)]
    return found[occurrence - 1]


def refusal(path: Path) -> str:
    with pytest.raises(SourceError) as raised:
        SnapshotStore(path).read()
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    return message


def one_sentence_exit_1(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.stderr


# -- 1. a repeated key is malformed, wherever it is -----------------------------------------------


def test_a_document_twice_in_the_writers_layout_names_both_lines(tmp_path):
    path = written(tmp_path, assignment("a1"), assignment("a2"), assignment("a3"))
    lines = path.read_text().splitlines(keepends=True)
    first = line_number(path, '"a1":')
    copy = lines[first - 1].replace('"status":"pending"', '"status":"completed"')
    lines.insert(line_number(path, '"a3":') - 1, copy)  # a second, different a1 further down
    path.write_text("".join(lines))
    second = line_number(path, '"a1":', occurrence=2)
    message = refusal(path)
    assert f"{A}/a1" in message and f"lines {first} and {second}" in message


def test_a_collection_twice_in_the_writers_layout_names_both_lines(tmp_path):
    one = snapshot_bytes(state(assignment("a1"))).decode().splitlines(keepends=True)
    two = snapshot_bytes(state(assignment("a2"))).decode().splitlines(keepends=True)
    opening = f'"{A}":{{\n'
    a_block = one[one.index(opening):one.index(opening) + 3]  # "name":{ , the document, },
    path = tmp_path / "s.json"
    path.write_text("".join(two[:1] + a_block + two[1:]))  # the header, A once, then A again
    first, second = line_number(path, f'"{A}":'), line_number(path, f'"{A}":', occurrence=2)
    assert first < second
    message = refusal(path)
    assert f"collection {A}" in message and f"lines {first} and {second}" in message


@pytest.mark.parametrize(("old", "new", "place"), [
    ('"status":"pending"', '"status":"completed","status":"pending"', "fields.status"),
    ('"fields":{', '"fields":{"note":{"k":1,"k":2},', "fields.note.k"),
    ('"fields":{', '"fields":{"list":[{"deep":{"x":1,"x":1}}],', "fields.list[0].deep.x"),
    ('"update_time":', '"update_time":null,"update_time":', "update_time"),
])
def test_a_key_twice_inside_one_document_line_names_the_line_and_the_path(tmp_path, old, new, place):
    path = written(tmp_path, assignment("a1"), assignment("a2"))
    number = line_number(path, '"a2":')
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    path.write_text("".join(lines))
    message = refusal(path)
    assert f"{path}:{number}:" in message and f"collections.{A}.a2.{place}" in message


def test_two_copies_of_a_document_on_one_line_are_refused(tmp_path):
    path = written(tmp_path, assignment("a1"))
    number = line_number(path, '"a1":')
    lines = path.read_text().splitlines(keepends=True)
    doc = lines[number - 1].rstrip("\n")
    lines[number - 1] = doc + "," + doc.replace('"pending"', '"overdue"') + "\n"
    path.write_text("".join(lines))
    message = refusal(path)
    assert f"{path}:{number}:" in message and f"collections.{A}.a1" in message


HAND_MADE = """{{
  "format": "reconcile-snapshot", "format_version": "1.0", "source": "t", "read_time": null,
  "collections": {{
    "things": {{
      "t1": {{"fields": {{"a": 1, "m": {{"k": 1}}}}}},
      "t2": {{"fields": {{"a": 2}}}}{extra}
    }}{more}
  }}
}}
"""


@pytest.mark.parametrize(("extra", "more", "place"), [
    (',\n      "t1": {"fields": {"a": 3}}', "", "collections.things.t1"),
    ("", ',\n    "things": {}', "collections.things"),
    (',\n      "t3": {"fields": {"a": 1, "b": 2, "a": 1}}', "", "collections.things.t3.fields.a"),
    (',\n      "t3": {"fields": {"m": {"$map": {"$k": 1, "$k": 2}}}}', "",
     "collections.things.t3.fields.m.$map.$k"),
])
def test_a_key_twice_in_a_hand_laid_out_file_names_the_json_path(tmp_path, extra, more, place):
    path = tmp_path / "s.json"
    path.write_text(HAND_MADE.format(extra=extra, more=more))
    json.loads(path.read_text())  # valid JSON, where the last copy would silently win
    assert place in refusal(path)


def test_a_repeated_header_key_is_refused_too(tmp_path):
    path = written(tmp_path, assignment("a1"))
    text = path.read_text()
    path.write_text(text.replace('"source":"test"', '"source":"test","source":"elsewhere"', 1))
    assert "key source appears twice" in refusal(path)


def test_a_hand_laid_out_file_without_repeats_still_reads(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(HAND_MADE.format(extra="", more=""))
    docs = SnapshotStore(path).read().documents("things")
    assert {doc_id: doc.fields for doc_id, doc in docs.items()} == {"t1": {"a": 1, "m": {"k": 1}},
                                                                   "t2": {"a": 2}}


def test_a_document_line_laid_out_by_hand_still_streams(tmp_path):
    path = written(tmp_path, assignment("a1"), assignment("a2"))
    expected = SnapshotStore(path).read().collections
    number = line_number(path, '"a2":')
    lines = path.read_text().splitlines(keepends=True)
    doc_id, body = lines[number - 1].rstrip("\n").split(":", 1)
    lines[number - 1] = doc_id + ": " + json.dumps(json.loads(body), indent=None) + "\n"  # spaces
    path.write_text("".join(lines))
    assert SnapshotStore(path).read().collections == expected


def test_apply_refuses_a_snapshot_with_a_repeated_document_and_leaves_it_as_it_was(tmp_path):
    source = tmp_path / "demo.json"
    lines = DEMO.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith('"') and '"fields"' in line)
    lines.insert(first + 2, lines[first].replace('"fields":{', '"fields":{"extra":"kept",', 1))
    source.write_text("".join(lines))
    before = digest(source)
    for args in (["plan"], ["apply", "--auto-approve"]):
        stderr = one_sentence_exit_1(reconcile(*args, "--spec", CHECKINS, "--source", source))
        assert f"lines {first + 1} and {first + 3}" in stderr, args
    assert digest(source) == before


# -- 2. integers Firestore cannot hold ------------------------------------------------------------


@pytest.mark.parametrize("text", [
    str(2**63), str(2**64), str(-(2**63) - 1), str(10**30), "-" + "9" * 5000,
])
@pytest.mark.parametrize(("template", "place"), [
    ('{{"score":{n}}}', "fields.score"),
    ('{{"m":{{"deep":[1,{n}]}}}}', "fields.m.deep[1]"),
    ('{{"m":{{"$map":{{"$n":{n}}}}}}}', "fields.m.$n"),
])
@pytest.mark.parametrize("layout", ["streamed", "whole"])
def test_an_integer_beyond_64_bits_is_refused_with_its_place(tmp_path, text, template, place, layout):
    path = written(tmp_path, assignment("a1"), assignment("a2"))
    number = line_number(path, '"a2":')
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].replace('"fields":{', '"fields":' + template.format(n=text)[:-1]
                                                  + ",", 1)
    text = "".join(lines)
    path.write_text(text if layout == "streamed" else "{\n" + text[1:])  # "whole": not the writer's lines
    message = refusal(path)
    assert f"collections.{A}.a2.{place}" in message and "64-bit" in message
    assert len(message) < 400  # the number itself is not echoed


def test_integers_at_the_edges_of_64_bits_are_kept_exactly(tmp_path):
    edges = {"low": -(2**63), "high": 2**63 - 1, "list": [2**63 - 1, -(2**63)]}
    path = written(tmp_path, assignment("a1", **edges))
    fields = SnapshotStore(path).read().documents(A)["a1"].fields
    assert {name: fields[name] for name in edges} == edges
    assert snapshot_bytes(replace(SnapshotStore(path).read(), source="test")) == path.read_bytes()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, [1, 2**70], {"x": {"y": 2**64}}])
def test_values_refuse_an_integer_beyond_64_bits(value):
    with pytest.raises(ValueError, match=r"fields\.v.*64-bit"):
        decode_fields({"v": value}, "fields")


def test_apply_leaves_a_snapshot_with_a_huge_integer_untouched(tmp_path):
    source = tmp_path / "demo.json"
    source.write_text(DEMO.read_text().replace('"score":', f'"big":{2**64},"score":', 1))
    before = digest(source)
    stderr = one_sentence_exit_1(reconcile("apply", "--auto-approve", "--spec", CHECKINS,
                                           "--source", source))
    assert "fields.big" in stderr and "64-bit" in stderr
    assert digest(source) == before


# -- values the decoder could not hold: one sentence, never a crash ------------------------------


@pytest.mark.parametrize(("old", "new", "words"), [
    ('"totalWeeks":3', '"totalWeeks":{"$timestamp":"9999-12-31T23:59:59-01:00"}',
     f"collections.{A}.a2.fields.totalWeeks: bad $timestamp value"),
    ('"totalWeeks":3', '"totalWeeks":{"$timestamp":"2025-13-01T09:00:00.000000Z"}',
     f"collections.{A}.a2.fields.totalWeeks: bad $timestamp value"),
    ('"update_time":{', '"update_time":{"$timestamp":"0001-01-01T00:00:00+01:00"},"old":{',
     f"collections.{A}.a2.update_time: bad $timestamp value"),
    ('"totalWeeks":3', '"totalWeeks":' + "[" * 1000 + "]" * 1000, "nested deeper"),
    ('"totalWeeks":3', '"totalWeeks":' + '{"m":' * 600 + "1" + "}" * 600, "nested deeper"),
])
@pytest.mark.parametrize("layout", ["streamed", "whole"])
def test_a_timestamp_beyond_year_9999_or_a_value_nested_too_deep_is_one_sentence(tmp_path, old, new,
                                                                                  words, layout):
    path = written(tmp_path, assignment("a1"), assignment("a2"))
    number = line_number(path, '"a2":')
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    text = "".join(lines)
    path.write_text(text if layout == "streamed" else "{\n" + text[1:])
    assert words in refusal(path)


# -- 3. a JSON file that is not a snapshot ----------------------------------------------------------


@pytest.mark.parametrize("content", [
    '{"format": "SECRET-token-123", "collections": {}}',
    '{"format": "SECRET-token-123", "format_version": "1.0", "collections":{\n}}\n',
    '{"SECRET-token-123": 1, "SECRET-token-123": 2}',
    '["SECRET-token-123"]',
    '"SECRET-token-123"',
    '{"users": {"SECRET-token-123": {"password": "hunter2"}}}',
])
def test_a_json_file_that_is_not_a_snapshot_is_not_echoed(tmp_path, content):
    path = tmp_path / "other.json"
    path.write_text(content)
    stderr = one_sentence_exit_1(reconcile("plan", "--spec", CHECKINS, "--source", path))
    assert "SECRET" not in stderr and "hunter2" not in stderr
    assert "not a snapshot file" in stderr and "reconcile snapshot" in stderr


# -- 4. regular files only, without blocking -------------------------------------------------------


def quick(*args: object) -> subprocess.CompletedProcess:
    """Like builders.reconcile, with a short deadline: a read that blocks fails the test fast."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], env=environment,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_source_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    if kind == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    elif kind == "device":
        source = Path("/dev/zero")
    else:
        source = tmp_path / "dir.json"
        source.mkdir()
    started = time.monotonic()
    stderr = one_sentence_exit_1(quick("plan", "--spec", CHECKINS, "--source", source))
    assert time.monotonic() - started < 30
    assert f"{source}: is " in stderr and {"fifo": "FIFO", "device": "device",
                                           "directory": "directory"}[kind] in stderr


# -- 5. a rewritten snapshot keeps its mode ----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_apply_keeps_the_mode_of_the_snapshot_it_rewrites(tmp_path, mode):
    source = tmp_path / "demo.json"
    shutil.copyfile(DEMO, source)
    os.chmod(source, mode)
    before = digest(source)
    run = reconcile("apply", "--auto-approve", "--spec", CHECKINS, "--source", source)
    assert run.returncode == 0, run.stdout + run.stderr
    assert digest(source) != before and stat.S_IMODE(source.stat().st_mode) == mode


def test_apply_through_a_symbolic_link_rewrites_the_file_it_names(tmp_path):
    target = tmp_path / "demo.json"
    shutil.copyfile(DEMO, target)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    before = digest(target)
    run = reconcile("apply", "--auto-approve", "--spec", CHECKINS, "--source", link)
    assert run.returncode == 0, run.stdout + run.stderr
    assert link.is_symlink() and digest(target) != before


def test_new_outputs_are_private(tmp_path):
    plan_file, copy = tmp_path / "plan.json", tmp_path / "copy.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", DEMO, "--out", plan_file).returncode == 0
    assert reconcile("snapshot", "--source", DEMO, "--out", copy).returncode == 0
    assert stat.S_IMODE(plan_file.stat().st_mode) == stat.S_IMODE(copy.stat().st_mode) == 0o600


# -- 6. --out never lands on an input, nor on something that is not a regular file -----------------


@pytest.fixture
def demo(tmp_path) -> Path:
    copy = tmp_path / "demo.json"
    shutil.copyfile(DEMO, copy)
    return copy


def inputs_of(demo: Path, tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.yaml"
    shutil.copyfile(CHECKINS, spec)
    (tmp_path / "via-link.json").symlink_to(demo)
    os.link(demo, tmp_path / "hard-link.json")
    return {"spec": spec, "source": demo, "relative": Path(os.path.relpath(demo, WORKDIR)),
            "symlink": tmp_path / "via-link.json", "hard link": tmp_path / "hard-link.json"}


OUT_COMMANDS = {"plan": ["plan"], "snapshot": ["snapshot"], "audit": ["audit", "--format", "html"]}


@pytest.mark.parametrize("which", ["spec", "source", "relative", "symlink", "hard link"])
@pytest.mark.parametrize("command", list(OUT_COMMANDS))
def test_out_onto_an_input_is_refused_and_nothing_is_written(demo, tmp_path, which, command):
    inputs = inputs_of(demo, tmp_path)
    files = [path for path in inputs.values() if path.is_absolute()]  # "relative" is from WORKDIR
    before = [(digest(path), identity(path)) for path in files]
    spec = inputs["spec"]
    args = [*OUT_COMMANDS[command], "--spec", spec, "--source", demo]
    stderr = one_sentence_exit_1(reconcile(*args, "--out", inputs[which]))
    assert "input" in stderr
    assert [(digest(path), identity(path)) for path in files] == before


@pytest.mark.parametrize("kind", ["symlink to a new path", "symlink to a file", "fifo", "directory"])
@pytest.mark.parametrize("command", list(OUT_COMMANDS))
def test_out_onto_something_not_a_regular_file_is_refused(demo, tmp_path, kind, command):
    out = tmp_path / "out.json"
    elsewhere = tmp_path / "elsewhere.json"
    if kind == "symlink to a new path":
        out.symlink_to(elsewhere)
    elif kind == "symlink to a file":
        elsewhere.write_text("keep me")
        out.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    before = identity(out)
    args = [*OUT_COMMANDS[command], *(["--spec", CHECKINS] if command != "snapshot" else [])]
    run = quick(*args, "--source", demo, "--out", out)
    one_sentence_exit_1(run)
    assert identity(out) == before
    assert not elsewhere.exists() or elsewhere.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["demo.json", "out.json"] + (["elsewhere.json"] if kind == "symlink to a file" else []))


def test_out_onto_an_earlier_plan_replaces_it_and_keeps_its_mode(demo, tmp_path):
    out = tmp_path / "plan.json"
    out.write_text("an older plan")
    os.chmod(out, 0o640)
    assert reconcile("plan", "--spec", CHECKINS, "--source", demo, "--out", out).returncode == 0
    assert json.loads(out.read_text())["format"] == "reconcile-plan"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


# -- 7. a rewritten snapshot's read time is the apply's time ----------------------------------------


def test_an_applied_snapshot_reads_as_of_the_apply(tmp_path):
    spec = checkins()
    path = written(tmp_path, assignment("a1"), response("r1"))
    before = SnapshotStore(path).read()
    plan = build_plan(spec, before)
    assert plan.ops and before.read_time is not None
    now = before.read_time + timedelta(days=30, microseconds=7)
    results = SnapshotStore(path).apply(plan.groups(), now)
    assert all(result.applied for result in results)
    after = read_snapshot(path)
    assert after.read_time == now
    assert max(doc.update_time for docs in after.collections.values() for doc in docs.values()) <= now


def test_a_snapshot_nothing_was_applied_to_is_left_as_it_was(tmp_path):
    path = written(tmp_path, assignment("a1"), response("r1"))
    plan = build_plan(checkins(), SnapshotStore(path).read())
    SnapshotStore(path).apply(plan.groups(), datetime(2030, 1, 1, tzinfo=UTC))
    before = digest(path)  # applied once: every op of the same plan is now stale
    results = SnapshotStore(path).apply(plan.groups(), datetime(2031, 1, 1, tzinfo=UTC))
    assert not any(result.applied for result in results)
    assert digest(path) == before


def test_a_value_nested_deeper_than_the_writer_goes_ends_apply_in_one_sentence_writing_nothing(tmp_path):
    path = written(tmp_path, assignment("a1", 1), assignment("x", 1, client="c9", note="DEEP"))
    # Read fine (Firestore allows 20 levels; this reader follows more), but deeper than orjson writes.
    path.write_bytes(path.read_bytes().replace(b'"DEEP"', b'{"d":' * 300 + b"1" + b"}" * 300))
    assert read_snapshot(path).find("check_in_assignments/x") is not None
    before = digest(path)
    run = reconcile("apply", "--spec", CHECKINS, "--source", path, "--auto-approve",
                    "--journal-dir", tmp_path / "j")
    assert "the snapshot cannot be written back" in one_sentence_exit_1(run)
    assert digest(path) == before
    [journal] = (tmp_path / "j").glob("*.jsonl")
    end = json.loads(journal.read_text().splitlines()[-1])
    assert end["event"] == "end" and end["applied"] == 0 and end["in_doubt"] == 0


def test_a_symlink_re_pointed_during_a_run_never_redirects_its_write(tmp_path):
    first = written(tmp_path, assignment("a1", 1), name="a.json")
    other = written(tmp_path, assignment("b1", 1, client="c2"), response("rb", 1, client="c2"), name="b.json")
    link = tmp_path / "current.json"
    link.symlink_to(first)
    store = SnapshotStore(link)
    plan = build_plan(checkins(), store.read())
    link.unlink()
    link.symlink_to(other)  # re-pointed between the read and the write
    untouched = digest(other)
    results = store.apply(plan.groups(), datetime(2025, 3, 2, tzinfo=UTC))
    assert all(r.applied for r in results)
    assert digest(other) == untouched
    assert sorted(read_snapshot(first).collections["check_in_assignments"]) == sorted(
        ["a1", *(op.path.split("/")[1] for op in plan.ops)])
