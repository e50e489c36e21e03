"""Snapshot files: the product's offline storage format, read and written exactly.

Owns the file format (``format_version`` 1.x) and the snapshot store: reading a file into a State,
and applying a plan's groups to it under the same preconditions Firestore enforces, then replacing
the file atomically (temporary file, fsync, rename), so a crash leaves the old file or the new one.

    {"format": "reconcile-snapshot", "format_version": "1.0", "source": "...",
     "read_time": {"$timestamp": "..."},
     "collections": {"<collection>": {"<document id>": {"update_time": {...}, "fields": {...}}}}}

Field values use the exact JSON form of ``values``. Readers ignore unknown keys and refuse an
unknown major version.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import FormatVersionError, SourceError
from reconciler.model import CreateDocumentOp, Document, FillFieldsOp, Op, OpResult, State
from reconciler.values import decode, decode_fields, encode, encode_fields

FORMAT = "reconcile-snapshot"
FORMAT_VERSION = "1.0"


def check_format_version(data: dict[str, Any], where: str, expected_format: str, supported: str) -> None:
    """Reject another kind of file or an unknown major version; accept any minor version."""
    kind = data.get("format")
    if kind != expected_format:
        raise FormatVersionError(f"{where}: not a {expected_format} file (format is {kind!r})")
    version = data.get("format_version")
    if not isinstance(version, str) or version.split(".")[0] != supported.split(".")[0]:
        raise FormatVersionError(
            f"{where}: format_version {version!r} is not supported (this build reads "
            f"{supported.split('.')[0]}.x); upgrade checkin-reconciler or re-export the file")


def read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: cannot read the {what} file ({error})") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from error


def decode_snapshot(data: Any, where: str) -> State:
    if not isinstance(data, dict):
        raise SourceError(f"{where}: a snapshot must be a JSON object")
    check_format_version(data, where, FORMAT, FORMAT_VERSION)
    collections_data = data.get("collections")
    if not isinstance(collections_data, dict):
        raise SourceError(f"{where}: 'collections' must be an object of collection → documents")
    try:
        read_time = decode(data.get("read_time"), "read_time")
        collections = {
            name: {doc_id: _decode_document(name, doc_id, raw, where)
                   for doc_id, raw in _object(docs, f"collections.{name}").items()}
            for name, docs in collections_data.items()
        }
    except ValueError as error:
        raise SourceError(f"{where}: {error}") from error
    return State(source=where, read_time=read_time if isinstance(read_time, datetime) else None,
                 collections=collections)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _decode_document(collection: str, doc_id: str, raw: Any, where: str) -> Document:
    place = f"collections.{collection}.{doc_id}"
    raw = _object(raw, place)
    if not doc_id or "/" in doc_id:
        raise ValueError(f"{place}: {doc_id!r} is not a valid document ID")
    update_time = decode(raw.get("update_time"), f"{place}.update_time")
    if update_time is not None and not isinstance(update_time, datetime):
        raise ValueError(f"{place}.update_time must be a timestamp")
    return Document(collection, doc_id, decode_fields(raw.get("fields", {}), f"{place}.fields"),
                    update_time)


def encode_snapshot(state: State) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": state.source,
        "read_time": encode(state.read_time),
        "collections": {
            name: {doc.id: {"update_time": encode(doc.update_time), "fields": encode_fields(doc.fields)}
                   for doc in sorted(docs.values(), key=lambda d: d.id)}
            for name, docs in sorted(state.collections.items())
        },
    }


def dumps_snapshot(state: State) -> str:
    return json.dumps(encode_snapshot(state), sort_keys=True, indent=1, ensure_ascii=False,
                      allow_nan=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never a part."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise SourceError(f"{path}: cannot write next to the file ({error.strerror})") from error
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# -- the snapshot store ------------------------------------------------------------------------------


class SnapshotStore:
    """A snapshot file as a source: read it, or apply groups of ops to it under preconditions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = str(path)

    def read(self, collections: Iterable[str] | None = None) -> State:
        state = decode_snapshot(read_json(self.path, "snapshot"), self.source)
        if collections is None:
            return state
        wanted = set(collections)
        return replace(state, collections={k: v for k, v in state.collections.items() if k in wanted})

    def apply(self, groups: list[tuple[Op, ...]], now: datetime, journal: Any = None) -> list[OpResult]:
        """Apply each group atomically (all its ops or none), then replace the file once: the
        whole apply is one commit."""
        state = decode_snapshot(read_json(self.path, "snapshot"), self.source)
        number = journal.before_commit([op for group in groups for op in group]) if journal else 0
        new_state, results = apply_groups(state, groups, now)
        if any(result.applied for result in results):
            write_atomically(self.path, dumps_snapshot(new_state))
        if journal:
            journal.after_commit(number, results)
        return results


def apply_groups(state: State, groups: list[tuple[Op, ...]], now: datetime) -> tuple[State, list[OpResult]]:
    """The snapshot store's write semantics, in memory: each group's preconditions are checked
    against the current documents; a group whose every precondition holds is written whole,
    any other is skipped whole. Written documents get ``now`` as their update time."""
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    results: list[OpResult] = []
    for group in groups:
        reasons = [_refusal(op, collections) for op in group]
        failed = next((reason for reason in reasons if reason), "")
        for op, reason in zip(group, reasons, strict=True):
            if failed:
                results.append(OpResult(op=op, applied=False,
                                        reason=reason or f"its link partner was skipped: {failed}"))
            else:
                _write(op, collections, now)
                results.append(OpResult(op=op, applied=True, written_at=now))
    return replace(state, collections=collections), results


def _refusal(op: Op, collections: dict[str, dict[str, Document]]) -> str:
    collection, _, doc_id = op.path.partition("/")
    return op.refusal(collections.get(collection, {}).get(doc_id))


def _write(op: Op, collections: dict[str, dict[str, Document]], now: datetime) -> None:
    collection, _, doc_id = op.path.partition("/")
    docs = collections.setdefault(collection, {})
    if isinstance(op, CreateDocumentOp):
        docs[doc_id] = Document(collection, doc_id, dict(op.fields), now)
        return
    assert isinstance(op, FillFieldsOp)
    current = docs[doc_id]
    fields = dict(current.fields)
    for fill in op.fills:
        fields[fill.field] = fill.value
    if op.transition:
        fields[op.transition.field] = op.transition.to
    docs[doc_id] = Document(collection, doc_id, fields, now)
