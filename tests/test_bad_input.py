"""Bad input is bounded: a spec or plan file that is hostile or broken gets one sentence naming the
place, quickly, and never a traceback, a hang, or a value that crashes a later stage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, reconcile

from reconciler.errors import SpecError
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
