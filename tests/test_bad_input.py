"""Bad input is bounded: a spec or plan file that is hostile or broken gets one sentence naming the
place, quickly, and never a traceback, a hang, or a value that crashes a later stage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, reconcile

from reconciler.errors import PlanFileError, SpecError
from reconciler.plan import build_plan, dumps_plan, loads_plan
from reconciler.render import render_plan
from reconciler.snapshot import SnapshotStore
from reconciler.spec import MAX_SPEC_BYTES, load_spec, parse_spec

SHIPPED = CHECKINS.read_text()


class TooSlow(Exception):
    """Raised by an alarm in a test that would otherwise hang."""


@contextlib.contextmanager
def within(seconds: float):
    """Fail (rather than hang the suite) when the body runs longer than ``seconds``."""
    def ring(signum, frame):
        raise TooSlow(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def billion_laughs(levels: int = 9) -> str:
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"lol"'] * 9) + "]"]
    for name, previous in zip(names[1:], names, strict=False):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def spec_problem(tmp_path: Path, content: str | bytes, name: str = "bad.yaml", seconds: float = 5) -> str:
    """The one problem a spec file gets (a test fails on several, on none, or past ``seconds``)."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with within(seconds), pytest.raises(SpecError) as raised:
        load_spec(path)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    assert_printable(problems[0])
    return problems[0]


def assert_printable(message: str) -> None:
    """A message shows no raw control character of a file's content, and stays short."""
    assert all(ch.isprintable() for ch in message), repr(message)
    assert len(message) < 400, message


# -- specs -------------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly_naming_where(tmp_path):
    text = billion_laughs()
    assert len(text.encode()) < 500
    started = time.monotonic()
    problem = spec_problem(tmp_path, text)
    assert time.monotonic() - started < 1
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}:")
    assert "aliases" in problem and "10,000" in problem


def test_a_few_aliases_are_still_fine(tmp_path):
    # An anchor reused a few times is ordinary YAML: only expansion past the limit is refused.
    text = SHIPPED.replace("key: [clientId, formId]\n", "key: &key [clientId, formId]\n", 1)
    text = text.replace("key: [clientId, formId]", "key: *key")
    assert text.count("*key") == 1
    spec = load_spec(write(tmp_path, text))
    assert spec.link is not None and spec.link.key == (("clientId", "clientId"), ("formId", "formId"))


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("depth", [65, 5_000, 200_000])
def test_deep_nesting_is_refused_naming_where(tmp_path, depth):
    problem = spec_problem(tmp_path, "rules: " + "[" * depth + "]" * depth + "\n")
    assert "nested too deeply" in problem
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}:1:")


def test_nesting_of_a_real_depth_is_fine(tmp_path):
    text = SHIPPED.replace("description: Weekly", "description: " + "[" * 60 + "]" * 60 + " #")
    problem = spec_problem(tmp_path, text)
    assert "description must be a string, found a list" in problem


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "a: &x {b: *x}\n", "a: &x {b: [1, {c: *x}]}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path, text):
    problem = spec_problem(tmp_path, text)
    assert "refers to a node that contains it" in problem
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}:1:")


def test_a_fifo_as_the_spec_is_refused_at_once(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with within(5), pytest.raises(SpecError) as raised:
        load_spec(fifo)
    assert str(raised.value) == f"{fifo}: is a FIFO (named pipe), not a regular file"


def test_a_device_as_the_spec_is_refused_at_once():
    with within(5), pytest.raises(SpecError) as raised:
        load_spec("/dev/zero")
    assert str(raised.value) == "/dev/zero: is a device, not a regular file"


def test_a_directory_as_the_spec_is_refused(tmp_path):
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)


def test_a_spec_over_the_size_limit_is_refused_without_parsing_it(tmp_path):
    problem = spec_problem(tmp_path, "# " + "x" * MAX_SPEC_BYTES + "\n")
    assert f"more than the {MAX_SPEC_BYTES:,}" in problem


def test_a_spec_text_over_the_size_limit_is_refused_wherever_it_comes_from():
    # parse_spec also reads the spec a plan file carries, which no file-size check has seen.
    with pytest.raises(SpecError, match=f"more than the {MAX_SPEC_BYTES:,} bytes"):
        parse_spec(b"#" * (MAX_SPEC_BYTES + 1), "plan.json (its spec)")


def test_a_spec_with_many_nodes_is_refused_quickly(tmp_path):
    # Under the size limit but far more nodes than any spec has: refused before it is all read.
    count = MAX_SPEC_BYTES // 3
    started = time.monotonic()
    problem = spec_problem(tmp_path, "rules: [" + "1," * count + "1]\n")
    assert time.monotonic() - started < 2
    assert "10,000" in problem


def test_a_long_scalar_is_reported_shortened(tmp_path):
    problem = spec_problem(tmp_path, SHIPPED.replace("name: checkins", "name: " + "x" * 500_000 + "!"))
    assert "xxxxxxxx..." in problem and "name" in problem


@pytest.mark.parametrize(("text", "words"), [
    ("? {a: 1}\n: 2\n", "keys must be strings, found a mapping"),
    ("? [a, b]\n: 2\n", "keys must be strings, found a list"),
    ("1: 2\n", "keys must be strings, found an integer"),
    ("a: !!python/object:os.system {}\n", "the tag '!!python/object:os.system' is not allowed"),
    ("a: !!python/object/apply:os.system [ls]\n", "the tag '!!python/object/apply:os.system' is not"),
    ("a: !!python/name:os.system\n", "the tag '!!python/name:os.system' is not allowed"),
    ("a: !foo bar\n", "the tag '!foo' is not allowed"),
    ("a: !!binary aGVsbG8=\n", "the tag '!!binary' is not allowed"),
    ("a: !!set {x}\n", "the tag '!!set' is not allowed"),
    ("a: !!omap [x: 1]\n", "the tag '!!omap' is not allowed"),
    ("a: 2025-01-06\n", "'2025-01-06' is read as a date"),
    ("a: 2025-01-06 09:00:00\n", "is read as a date"),
    ("a: " + "1" * 5000 + "\n", "a number of 5000 characters"),
    ("a: " + ":".join(["1"] * 200_000) + "\n", "a number of 399999 characters"),
    ("a: 9223372036854775808\n", "outside the 64-bit range"),
    ("a: b\x00c\n", "not a YAML text"),
    ("a: \x1b[2J\n", "not a YAML text"),
    ("rules: [\n", "malformed YAML"),
])
def test_odd_yaml_gets_one_clear_sentence(tmp_path, text, words):
    problem = spec_problem(tmp_path, text)
    assert words in problem
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}")


def test_non_utf8_is_refused(tmp_path):
    assert spec_problem(tmp_path, b"name: \xff\xfe\n").endswith("not UTF-8 text (byte 6)")


def test_a_byte_order_mark_is_accepted(tmp_path):
    spec = load_spec(write(tmp_path, "\ufeff" + SHIPPED))
    assert spec.name == "checkins"


@pytest.mark.parametrize("key", ["\x1b[2J", "a\u202eb", "x" * 500])
def test_keys_from_the_file_are_quoted_and_shortened(tmp_path, key):
    text = SHIPPED.replace("    fields:\n", f"    fields:\n      {json.dumps(key)}: 5\n", 1)
    problem = spec_problem(tmp_path, text)
    assert "must be an array" in problem


def test_a_file_name_with_control_characters_is_quoted():
    with pytest.raises(SpecError) as raised:
        parse_spec(b"rules: [", "evil\x1b[2J.yaml")
    assert_printable(str(raised.value))
    assert "evil\\x1b[2J.yaml" in str(raised.value)


# -- plans -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_data():
    spec = load_spec(CHECKINS)
    plan = build_plan(spec, SnapshotStore(DEMO).read(spec.collections))
    return json.loads(dumps_plan(plan))


def first(data, kind):
    return next(op for op in data["ops"] if op["op"] == kind)


def first_linked_fill(data):
    return next(op for op in data["ops"] if op["op"] == "fill_fields" and op["transition"])


def plan_problem(data_or_text) -> str:
    text = data_or_text if isinstance(data_or_text, str) else json.dumps(data_or_text)
    with within(5), pytest.raises(PlanFileError) as raised:
        loads_plan(text, "plan.json")
    message = str(raised.value)
    assert_printable(message)
    assert message.startswith("plan.json"), message
    return message


def index_of(data, op) -> int:
    return data["ops"].index(op)


def edit(data, change):
    data = json.loads(json.dumps(data))
    return change(data) or data


CREATE = lambda d: first(d, "create_document")  # noqa: E731
FILL = first_linked_fill


def at(kind, path: str, value):
    """Set ``path`` (dotted, with list indexes) inside the first op of ``kind`` to ``value``."""
    def change(data):
        target = kind(data)
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return change


DELETE = object()


@pytest.mark.parametrize(("kind", "path", "value", "words"), [
    (CREATE, "rules", [1, 2], "ops[{i}].rules[0] must be a string, found 1"),
    (CREATE, "rules", [], "ops[{i}].rules must not be empty"),
    (CREATE, "rules", "series.new_week", "ops[{i}].rules must be a list, found a string"),
    (CREATE, "rules", [""], "ops[{i}].rules[0] must not be empty"),
    (FILL, "rules", [None], "ops[{i}].rules[0] must be a string, found null"),
    (CREATE, "rules", DELETE, "ops[{i}].rules is missing"),
    (CREATE, "group", 5, "ops[{i}].group must be a string or null, found 5"),
    (CREATE, "path", "a/", "ops[{i}].path 'a/' is not a collection/document path"),
    (CREATE, "path", "/b", "ops[{i}].path '/b' is not a collection/document path"),
    (CREATE, "path", "a/b/c", "ops[{i}].path 'a/b/c' is not a collection/document path"),
    (CREATE, "path", 7, "ops[{i}].path must be a string, found 7"),
    (CREATE, "op", "delete_document", "ops[{i}].op: unknown op 'delete_document'; this build knows"),
    (CREATE, "op", ["x"], "ops[{i}].op must be a string, found a list"),
    (CREATE, "precondition", {"exists": True}, "ops[{i}].precondition must be {{\"exists\": false}}"),
    (CREATE, "precondition", None, "ops[{i}].precondition must be an object, found null"),
    (CREATE, "fields", "x", "ops[{i}].fields must be an object, found a string"),
    (CREATE, "fields", {"\udc00x": 1},
     "ops[{i}].fields['\\udc00x'] holds '\\udc00x', which is not valid UTF-8"),
    (FILL, "fills.0.value", "a\ud800", "ops[{i}].fills[0].value holds 'a\\ud800', which is not valid UTF-8"),
    (CREATE, "fields.clientId", {"$bogus": 1}, "ops[{i}].fields.clientId: unknown tag '$bogus'"),
    (CREATE, "fields.dueDate", {"$timestamp": "nope"}, "ops[{i}].fields.dueDate.$timestamp 'nope' is not"),
    (CREATE, "fields.dueDate", {"$timestamp": "0001-01-01T00:00:00+01:00"},
     "ops[{i}].fields.dueDate.$timestamp '0001-01-01T00:00:00+01:00' is out of range"),
    (CREATE, "fields.dueDate", {"$timestamp": 5}, "ops[{i}].fields.dueDate.$timestamp must be a string"),
    (CREATE, "fields.x", {"$bytes": "!!"}, "ops[{i}].fields.x.$bytes '!!' is not base64"),
    (CREATE, "fields.x", {"$reference": "a"}, "ops[{i}].fields.x.$reference 'a' is not a document path"),
    (CREATE, "fields.x", {"$geopoint": {"latitude": True, "longitude": 1}},
     "ops[{i}].fields.x.$geopoint must be {{\"latitude\": number, \"longitude\": number}}"),
    (CREATE, "fields.x", {"$float": "nan"}, "ops[{i}].fields.x.$float must be one of"),
    (CREATE, "fields.x", {"$map": 3}, "ops[{i}].fields.x.$map must be an object, found 3"),
    (CREATE, "fields.x", {"$timestamp": "2025-01-01T00:00:00Z", "y": 1},
     "ops[{i}].fields.x: a tagged value '$timestamp' must be the only key of its object"),
    (CREATE, "fields.x", [{"$m": 1}], "ops[{i}].fields.x[0]: unknown tag '$m'"),
    (FILL, "fills", [], "ops[{i}].fills must not be empty"),
    (FILL, "fills", {"a": 1}, "ops[{i}].fills must be a list, found an object"),
    (FILL, "fills.0", 5, "ops[{i}].fills[0] must be an object, found 5"),
    (FILL, "fills.0.field", "", "ops[{i}].fills[0].field must not be empty"),
    (FILL, "fills.0.field", 3, "ops[{i}].fills[0].field must be a string, found 3"),
    (FILL, "fills.0.value", DELETE, "ops[{i}].fills[0].value is missing"),
    (FILL, "fills.0.value", None, "ops[{i}].fills[0].value must not be empty"),
    (FILL, "fills.0.value", {"$what": 1}, "ops[{i}].fills[0].value: unknown tag '$what'"),
    (FILL, "fills.0.before", 3, "ops[{i}].fills[0].before: a fill's 'before' must be empty"),
    (FILL, "fills.0.before", DELETE, "ops[{i}].fills[0].before is missing"),
    (FILL, "fills.0.rule", ["link.pair"], "ops[{i}].fills[0].rule must be a string, found a list"),
    (FILL, "fills.1.field", "completedAt", "ops[{i}].fills[1].field 'completedAt' is filled twice"),
    (FILL, "transition", "x", "ops[{i}].transition must be null or an object, found a string"),
    (FILL, "transition.to", 5, "ops[{i}].transition.to must be a string, found 5"),
    (FILL, "transition.before", DELETE, "ops[{i}].transition.before is missing"),
    (FILL, "group", None, "ops[{i}].transition is only made together with a link, but group is null"),
    (FILL, "precondition", [], "ops[{i}].precondition must be an object, found a list"),
    (FILL, "precondition.update_time", 5, "ops[{i}].precondition.update_time must be a timestamp or null"),
    (FILL, "precondition.update_time", DELETE, "ops[{i}].precondition.update_time is missing"),
])
def test_every_malformed_op_field_is_named(plan_data, kind, path, value, words):
    index = index_of(plan_data, kind(plan_data))
    assert words.format(i=index) in plan_problem(edit(plan_data, at(kind, path, value)))


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.update(ops={}), "plan.json: ops must be a list, found an object"),
    (lambda d: d["ops"].insert(0, []), "plan.json: ops[0] must be an object, found a list"),
    (lambda d: d["ops"].insert(0, "x" * 100), "ops[0] must be an object, found a string"),
    (lambda d: d.update(findings=[5]), "plan.json: findings[0] must be an object, found 5"),
    (lambda d: d["findings"][2].update(code=None), "plan.json: findings[2].code must be a string"),
    (lambda d: d["findings"][0].pop("message") and None, "plan.json: findings[0].message is missing"),
    (lambda d: d.update(read_time=5), "plan.json: read_time must be a timestamp or null, found 5"),
    (lambda d: d.update(read_time="2025-01-01"), "plan.json: read_time must be a timestamp or null"),
    (lambda d: d.update(spec=[]), "plan.json: spec must be an object, found a list"),
    (lambda d: d["spec"].update(text=5), "plan.json: spec.text must be a string, found 5"),
    (lambda d: d["spec"].update(sha256="abc"), "plan.json: spec.sha256 'abc' is not a sha256"),
    (lambda d: d["spec"].pop("name") and None, "plan.json: spec.name is missing"),
    (lambda d: d.update(source=""), "plan.json: source must not be empty"),
    (lambda d: d.update(source={"a": 1}), "plan.json: source must be a string, found an object"),
    (lambda d: d.update(format_version=1), "plan.json: format_version 1 is not supported"),
    (lambda d: d.update(format_version="9" * 100), "plan.json: format_version '99999999"),
    (lambda d: d.update(format=None), "plan.json: not a plan file"),
])
def test_every_malformed_plan_field_is_named(plan_data, change, words):
    assert words in plan_problem(edit(plan_data, change))


def test_the_summary_is_ignored_as_it_is_recomputed(plan_data):
    plan = loads_plan(json.dumps(edit(plan_data, lambda d: d.update(summary="nonsense"))), "p.json")
    assert plan.summary.create == plan_data["summary"]["create"]


def test_a_plan_whose_rules_are_not_strings_never_reaches_a_renderer(plan_data):
    # Before: accepted, then `', '.join(op.rules)` crashed the text renderer.
    problem = plan_problem(edit(plan_data, at(CREATE, "rules", [1, 2])))
    assert problem.startswith(f"plan.json: ops[{index_of(plan_data, CREATE(plan_data))}].rules[0] must "
                              "be a string, found 1;")


def test_a_valid_plan_renders(plan_data):
    plan = loads_plan(json.dumps(plan_data), "p.json")
    for fmt in ("text", "json", "markdown"):
        assert render_plan(plan, fmt)


@pytest.mark.parametrize(("text", "words"), [
    ('{"format": "reconcile-plan", "format": "reconcile-plan"}', "key 'format' is written twice"),
    ('{"a": {"b": 1, "b": 2}}', "key 'b' is written twice"),
    ('[1, NaN]', "NaN is not JSON"),
    ('[1, -Infinity]', "-Infinity is not JSON"),
    ('[1e999]', "number 1e999 is too large"),
    ('[9223372036854775808]', "integer 9223372036854775808 is outside the signed 64-bit range"),
    ('[-9223372036854775809]', "integer -9223372036854775809 is outside the signed 64-bit range"),
    ("[" + "7" * 5000 + "]", "integer " + "7" * 37 + "... is outside"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{oops", "plan.json:1:2: not valid JSON"),
    ('{"a": "\x01"}', "plan.json:1:8: not valid JSON (Invalid control character"),
    ("", "plan.json:1:1: not valid JSON"),
])
def test_json_that_is_not_exact_is_refused(text, words):
    assert words in plan_problem(text)


def test_a_duplicate_key_inside_an_op_is_refused(plan_data):
    text = json.dumps(plan_data).replace('"op": "create_document",', '"op": "create_document", '
                                         '"op": "fill_fields",', 1)
    assert "key 'op' is written twice" in plan_problem(text)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_integers_at_the_64_bit_limits_are_kept_exactly(plan_data, value):
    data = edit(plan_data, at(CREATE, "fields.score", value))
    plan = loads_plan(json.dumps(data), "p.json")
    [create] = [op for op in plan.ops if op.path == CREATE(data)["path"]]
    assert create.fields["score"] == value and type(create.fields["score"]) is int


@pytest.mark.parametrize("depth", [65, 900, 100_000])
def test_a_deeply_nested_value_is_refused(plan_data, depth):
    text = json.dumps(edit(plan_data, at(CREATE, "fields.x", "HOLE"))).replace(
        '"HOLE"', "[" * depth + "]" * depth, 1)
    assert "nested too deeply" in plan_problem(text)


def test_a_value_of_a_real_depth_is_fine(plan_data):
    nested: object = 1
    for _ in range(30):
        nested = {"m": [nested]}
    data = edit(plan_data, at(CREATE, "fields.x", nested))
    loads_plan(json.dumps(data), "p.json")


@pytest.mark.parametrize(("kind", "path", "value"), [
    (CREATE, "op", "\x1b[2J\x1b]0;owned\x07" + "A" * 200),
    (CREATE, "path", "\x1b[31mred/\n/x"),
    (CREATE, "fields", {"\x1b[2J": {"$bogus\x07": 1}}),
    (CREATE, "fields", {"k": {"$reference": "\u202e" + "x" * 1000}}),
    (CREATE, "fields", {"k": {"$timestamp": "\x00" * 1000}}),
    (FILL, "fills.0.before", "\x1b" * 100),
])
def test_content_of_the_file_is_quoted_and_shortened_in_errors(plan_data, kind, path, value):
    problem = plan_problem(edit(plan_data, at(kind, path, value)))
    assert "\x1b" not in problem and "\x07" not in problem and "\u202e" not in problem
    assert len(problem) < 250, problem


# -- end to end: one line, exit 1, no traceback, never a hang ---------------------------------------


def assert_one_sentence(result, *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def run(*args):
    started = time.monotonic()
    result = reconcile(*args)
    return result, time.monotonic() - started


@pytest.mark.parametrize(("content", "words"), [
    (billion_laughs(), ("aliases",)),
    ("rules: " + "[" * 5000 + "]" * 5000 + "\n", ("nested too deeply",)),
    ("a: !!python/object/apply:os.system [echo pwned]\n", ("is not allowed",)),
])
def test_cli_refuses_a_hostile_spec_in_one_line(tmp_path, content, words):
    path = write(tmp_path, content, "hostile.yaml")
    for args in (("validate", path), ("plan", "--spec", path, "--source", DEMO)):
        result, seconds = run(*args)
        assert_one_sentence(result, f"{path}:", *words)
        assert "pwned" not in result.stdout
        assert seconds < 20


def test_cli_refuses_a_fifo_as_the_spec_at_once(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    result, seconds = run("validate", fifo)
    assert_one_sentence(result, "FIFO")
    assert seconds < 20


def test_cli_refuses_dev_zero_as_the_spec_at_once():
    result, seconds = run("plan", "--spec", "/dev/zero", "--source", DEMO)
    assert_one_sentence(result, "/dev/zero: is a device")
    assert seconds < 20


def test_cli_refuses_a_plan_whose_rules_are_not_strings(tmp_path):
    source = tmp_path / "demo.json"
    shutil.copy(DEMO, source)
    out = tmp_path / "p.json"
    made = reconcile("plan", "--spec", CHECKINS, "--source", source, "--out", out)
    assert made.returncode == 0, made.stderr
    data = json.loads(out.read_text())
    index = index_of(data, CREATE(data))
    data["ops"][index]["rules"] = [1, 2]
    out.write_text(json.dumps(data))
    before = source.read_bytes()
    result, _ = run("apply", out)
    assert_one_sentence(result, f"{out}: ops[{index}].rules[0] must be a string, found 1")
    assert source.read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_cli_refuses_a_plan_file_that_is_not_a_regular_file_at_once(tmp_path, kind):
    path = {"fifo": tmp_path / "plan.json", "device": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    result, seconds = run("apply", path)
    if kind == "directory":  # a directory may be a sharded plan (plan --runner beam): not this one
        assert_one_sentence(result, f"{path}: a directory without manifest.json")
    else:
        assert_one_sentence(result, f"{path}: is a", "not a regular file")
    assert seconds < 20
