"""Snapshot files never lose a value, and a run's outputs never clobber its inputs.

A snapshot that repeats a key (a collection, a document, a field, a map key) or holds an integer
Firestore cannot hold is malformed input: reading it as "the last copy wins" or "a big integer is a
float" would let apply rewrite the file without the other copy. Reads open regular files only;
writes keep the mode of the file they replace and never land on one of the run's own inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, ROOT, WORKDIR, reconcile, state

from reconciler.errors import SourceError
from reconciler.snapshot import SnapshotStore, snapshot_bytes
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


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, [1, 2**70], {"x": {"y": 2**64}}])
def test_values_refuse_an_integer_beyond_64_bits(value):
    with pytest.raises(ValueError, match=r"fields\.v.*64-bit"):
        decode_fields({"v": value}, "fields")


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
    assert "not a reconcile-snapshot file" in stderr and "reconcile snapshot" in stderr


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
