"""Snapshot files: the product's offline storage format, read and written exactly.

Owns the file format (``format_version`` 1.x) and the snapshot store: reading a file into a State,
and applying a plan's groups to it under the same preconditions Firestore enforces, then replacing
the file atomically (``files.write_atomically``: its mode kept), so a crash leaves the old file or
the new one; a store opened with ``create`` (a restore's target) reads a missing file as empty and
creates it at its first write, only if no other process has created it meanwhile. Must never
read a value other than the one the file holds: a repeated key or an integer Firestore cannot hold
is malformed input, never read as "the last copy" or as a float, so that rewriting a file cannot
drop or change what nobody touched. Only regular files are read.

    {"format": "reconcile-snapshot", "format_version": "1.0", "source": "...",
     "read_time": {"$timestamp": "..."},
     "collections": {"<collection>": {"<document id>": {"update_time": {...}, "fields": {...}}}}}

Field values use the exact JSON form of ``values``. Readers ignore unknown keys and refuse an
unknown major version. The writer puts one document per line, which lets the reader stream a large
file instead of holding its whole parse in memory; any other layout of the same JSON is read too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from reconciler import files
from reconciler.errors import SourceError
from reconciler.files import FileProblem, open_regular
from reconciler.formats import SNAPSHOT, check_version
from reconciler.kernel import Projection
from reconciler.model import CreateDocumentOp, Document, FillFieldsOp, Op, OpResult, SourceFile, State
from reconciler.rollback import ClearFieldsOp, DeleteDocumentOp, UndoOp
from reconciler.values import DecodeError, decode, decode_map, decode_timestamp, encode, encode_fields

_COLLECTIONS_OPEN = b'"collections":{'


def loads_json(raw: bytes | str, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise SourceError(f"{where}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from error


# -- reading -----------------------------------------------------------------------------------------
# orjson is the parser: fast, and it refuses what JSON refuses. It also reads a repeated key as its
# last copy and an integer beyond 64 bits as a float, silently; a file rewritten from that read
# would lose the other copy or change the number. So a document line is taken from orjson only when
# orjson writes its parse back to the line's own bytes, as it does for every line the writer wrote:
# a repeated key comes back once and a big integer as a float, so neither passes. (Keys come back
# in the order read, so no sorting is needed.) Any other line is parsed again by the strict parser
# below, which refuses a repeated key and reads integers exactly.


def read_snapshot(path: Path, collections: Iterable[str] | None = None,
                  projection: Projection | None = None) -> State:
    """Read a snapshot file (only ``collections`` when given, only the fields ``projection`` keeps
    when given): streamed line by line when it has the writer's layout, else parsed whole. Errors
    name the file and the line or the document."""
    where = str(path)
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: snapshot file not found") from None
    except FileProblem as problem:
        raise SourceError(f"{path}: {problem}") from problem
    wanted = None if collections is None else set(collections)
    with handle:
        first = handle.readline()
        if not first.rstrip().endswith(_COLLECTIONS_OPEN):
            return _read_whole(first + handle.read(), where, wanted, projection)
        header = _line_json(first.rstrip() + b"}}")
        if header is None:
            handle.seek(0)
            return _read_whole(handle.read(), where, wanted, projection)
        check_version(header, where, SNAPSHOT)
        try:
            header = _strict_json(first.rstrip() + b"}}")
            read_time = decode(header.get("read_time"), "read_time")
            docs = _stream_documents(handle, where, wanted, projection)
        except _RepeatedKey as repeated:
            raise SourceError(f"{where}:1: {repeated.sentence()}") from None
        except _RepeatedDocument as repeated:
            first_line = _line_of(handle, repeated.collection, repeated.doc_id)
            raise SourceError(f"{where}: {repeated.sentence(first_line)}") from None
        except ValueError as error:
            raise SourceError(f"{where}: {error}") from error
        except RecursionError:
            raise SourceError(f"{where}: {_TOO_DEEP}") from None
        except _NotStreamable:
            # Edited by hand after the writer made it: valid JSON, other lines. Read it whole.
            handle.seek(0)
            return _read_whole(handle.read(), where, wanted, projection)
    return State(source=where, read_time=read_time if isinstance(read_time, datetime) else None,
                 collections=docs)


def _read_whole(raw: bytes, where: str, wanted: set[str] | None, projection: Projection | None) -> State:
    """A snapshot in any layout: checked to be one by orjson's parse, then read by the strict one
    (nothing of a file that is not a snapshot is looked at further, or repeated in a message)."""
    try:
        parsed = loads_json(raw, where)
    except SourceError:
        _name_a_number_beyond_a_double(raw, where)
        raise
    check_version(parsed, where, SNAPSHOT)
    del parsed
    try:
        data = _strict_json(raw)
    except _RepeatedKey as repeated:
        raise SourceError(f"{where}: {repeated.sentence()}") from None
    except ValueError as error:
        raise SourceError(f"{where}: cannot be read exactly ({error})") from None
    except RecursionError:
        raise SourceError(f"{where}: {_TOO_DEEP}") from None
    return decode_snapshot(data, where, wanted, projection)


def _name_a_number_beyond_a_double(raw: bytes, where: str) -> None:
    """orjson refuses a number beyond a double as not JSON. When the strict parse reads the file,
    that number is an integer Firestore cannot hold: name its document and field instead."""
    explained = _strict_or_none(raw)
    if type(explained) is dict and explained.get("format") == SNAPSHOT.name:
        decode_snapshot(explained, where)


def decode_snapshot(data: Any, where: str, wanted: set[str] | None = None,
                    projection: Projection | None = None) -> State:
    """A whole parsed snapshot (any layout) → State."""
    check_version(data, where, SNAPSHOT)
    collections_data = data.get("collections")
    if not isinstance(collections_data, dict):
        raise SourceError(f"{where}: 'collections' must be an object of collection → documents")
    strings: dict[str, str] = {}
    last = _LastUpdate()
    try:
        read_time = decode(data.get("read_time"), "read_time")
        decoded = {
            name: {doc_id: _decode_document(name, doc_id, raw, strings, projection, last)
                   for doc_id, raw in _object(docs, f"collections.{name}").items()}
            for name, docs in collections_data.items() if wanted is None or name in wanted
        }
    except ValueError as error:
        raise SourceError(f"{where}: {error}") from error
    except RecursionError:
        raise SourceError(f"{where}: {_TOO_DEEP}") from None
    return State(source=where, read_time=read_time if isinstance(read_time, datetime) else None,
                 collections=decoded)


def _stream_documents(handle: IO[bytes], where: str, wanted: set[str] | None,
                      projection: Projection | None) -> dict[str, dict[str, Document]]:
    """The lines after the header: ``"name":{``, then ``"id":{...},`` per document, then ``},``."""
    collections: dict[str, dict[str, Document]] = {}
    opened: dict[str, int] = {}  # collection → the line that opens it
    strings: dict[str, str] = {}
    last = _LastUpdate()
    current: dict[str, Document] | None = None
    keep = True
    name = ""
    loads, dumps = orjson.loads, orjson.dumps
    for number, line in enumerate(handle, start=2):
        line = line.rstrip()
        if current is None:
            if line == b"}}":
                return collections
            if not line.endswith(b":{"):
                raise _NotStreamable
            name = _line_json(line[:-2])
            if type(name) is not str:
                raise _NotStreamable
            if name in opened:
                raise SourceError(f"{where}: collection {name} appears twice, on lines {opened[name]} "
                                  f"and {number}; {_ONE_COPY}")
            opened[name] = number
            keep = wanted is None or name in wanted
            current = {}
            if keep:
                collections[name] = current
            continue
        if line in (b"}", b"},"):
            current = None
            continue
        if keep:
            body = b"{" + (line[:-1] if line.endswith(b",") else line) + b"}"
            try:
                docs = loads(body)
                exact = dumps(docs) == body
            except orjson.JSONDecodeError:
                docs, exact = None, False
            except orjson.JSONEncodeError:  # nested deeper than orjson writes
                exact = False
            if not exact:
                docs = _reread_line(body, docs is not None, where, number, name)
            for doc_id, raw in docs.items():
                if doc_id in current:
                    raise _RepeatedDocument(name, doc_id, number)
                current[doc_id] = _decode_document(name, doc_id, raw, strings, projection, last)
    raise _NotStreamable  # ended early: the whole parse says where the JSON is cut


def _reread_line(body: bytes, orjson_read_it: bool, where: str, number: int, collection: str) -> Any:
    """A document line the writer did not write byte for byte, parsed strictly."""
    try:
        docs = _strict_json(body)
    except _RepeatedKey as repeated:
        raise SourceError(f"{where}:{number}: {repeated.sentence(f'collections.{collection}.')}") from None
    except (ValueError, RecursionError):
        raise _NotStreamable from None
    if not orjson_read_it:
        # orjson refuses a number beyond a double (the strict parse reads it): name its place if
        # that is why; otherwise the whole parse names the line and column.
        for doc_id, raw in docs.items():
            _decode_document(collection, doc_id, raw, {})
        raise _NotStreamable
    return docs


_TOO_DEEP = ("a value is nested deeper than this reader follows (Firestore itself allows 20 levels "
             "of maps and arrays)")


class _NotStreamable(Exception):
    """The file is not in the writer's one-document-per-line layout (from here on)."""


_ONE_COPY = ("a snapshot may not repeat a key, since a reader would keep only its last copy: "
             "remove one copy or export the file again")


class _RepeatedKey(Exception):
    """A JSON object repeats a key; ``path`` is that key's JSON path in the parsed text."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def sentence(self, prefix: str = "") -> str:
        return f"the key {prefix}{self.path} appears twice in one object; {_ONE_COPY}"


class _RepeatedDocument(Exception):
    """A document ID appears on two lines of one collection; the first is found only if needed."""

    def __init__(self, collection: str, doc_id: str, number: int) -> None:
        super().__init__(collection, doc_id, number)
        self.collection, self.doc_id, self.number = collection, doc_id, number

    def sentence(self, first: int | None) -> str:
        lines = f"lines {first} and {self.number}" if first else f"line {self.number} and an earlier one"
        return f"document {self.collection}/{self.doc_id} appears twice, on {lines}; {_ONE_COPY}"


def _line_of(handle: IO[bytes], collection: str, doc_id: str) -> int | None:
    """The first line that holds document ``doc_id`` of ``collection`` (for an error message)."""
    handle.seek(0)
    inside = None
    for number, line in enumerate(handle, start=1):
        line = line.rstrip()
        if number == 1:
            continue
        if inside is None:
            inside = _line_json(line[:-2]) if line.endswith(b":{") else None
        elif line in (b"}", b"},"):
            inside = None
        elif inside == collection:
            docs = _line_json(b"{" + (line[:-1] if line.endswith(b",") else line) + b"}")
            if type(docs) is dict and doc_id in docs:
                return number
    return None


def _line_json(line: bytes) -> Any:
    """orjson's parse of one line, None when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


# The strict parser: the standard library's, refusing a repeated key, reading integers exactly.
_BEYOND = 2**64  # stands for an integer too long to convert: the value check refuses it anyway


def _exact_int(text: str) -> int:
    if len(text) <= 20:  # 2**63 has 19 digits; JSON allows no leading zeros
        return int(text)
    return -_BEYOND if text[0] == "-" else _BEYOND


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number is too large for a double")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _RepeatedKey("")
    return result


class _Repeats(dict):
    """An object that repeated ``repeated`` (the second parse, which finds where)."""

    repeated = ""


def _marking_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    marked = _Repeats(result)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _repeat_path(value: Any, path: str) -> str | None:
    if isinstance(value, _Repeats):
        return f"{path}.{value.repeated}" if path else value.repeated
    children = value.items() if type(value) is dict else enumerate(value) if type(value) is list else ()
    for key, item in children:
        inner = f"{path}[{key}]" if type(value) is list else (f"{path}.{key}" if path else key)
        found = _repeat_path(item, inner)
        if found is not None:
            return found
    return None


def _strict_json(raw: bytes) -> Any:
    """Parse ``raw`` refusing a repeated key (``_RepeatedKey`` with its JSON path), reading integers
    exactly; ValueError when it is not JSON."""
    text = raw.decode("utf-8")
    options = {"parse_int": _exact_int, "parse_float": _finite_float, "parse_constant": _no_constant}
    try:
        return json.loads(text, object_pairs_hook=_unique_object, **options)
    except _RepeatedKey:
        marked = json.loads(text, object_pairs_hook=_marking_object, **options)
        raise _RepeatedKey(_repeat_path(marked, "") or "?") from None


def _strict_or_none(raw: bytes) -> Any:
    try:
        return _strict_json(raw)
    except (ValueError, RecursionError, _RepeatedKey):
        return None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


class _LastUpdate:
    """The last update time decoded, as written and as a datetime. Documents written by one commit
    share their update time and often lie together in a file: a run of equal ones is one object."""

    __slots__ = ("text", "value")

    def __init__(self) -> None:
        self.text: str | None = None
        self.value: datetime | None = None


def _decode_document(collection: str, doc_id: str, raw: Any, strings: dict[str, str],
                     projection: Projection | None = None, last: _LastUpdate | None = None) -> Document:
    """One document. Places for messages are built only when something is wrong: this runs once
    per document of a snapshot."""
    if type(raw) is not dict or not doc_id or "/" in doc_id:
        place = f"collections.{collection}.{doc_id}"
        _object(raw, place)
        raise ValueError(f"{place}: {doc_id!r} is not a valid document ID")
    update_time = raw.get("update_time")
    text = update_time.get("$timestamp") if type(update_time) is dict and len(update_time) == 1 else None
    if last is not None and text is not None and text == last.text:
        update_time = last.value
    elif update_time is not None:
        try:
            update_time = decode_timestamp(update_time)
        except DecodeError as error:
            raise error.at(f"collections.{collection}.{doc_id}.update_time") from None
        except RecursionError:
            raise ValueError(f"collections.{collection}.{doc_id}.update_time: {_TOO_DEEP}") from None
        if not isinstance(update_time, datetime):
            raise ValueError(f"collections.{collection}.{doc_id}.update_time must be a timestamp")
        if last is not None and type(text) is str:
            last.text, last.value = text, update_time
    fields = raw.get("fields", {})
    if type(fields) is not dict:
        raise ValueError(f"collections.{collection}.{doc_id}.fields must be an object")
    keep = projection.keep(collection, fields) if projection is not None else None
    try:
        return Document(collection, doc_id, decode_map(fields, strings, keep), update_time)
    except DecodeError as error:
        raise error.at(f"collections.{collection}.{doc_id}.fields") from None
    except RecursionError:
        raise ValueError(f"collections.{collection}.{doc_id}.fields: {_TOO_DEEP}") from None


# -- writing -----------------------------------------------------------------------------------------


def snapshot_bytes(state: State) -> bytes:
    """The writer's layout: a header line, then one line per collection name and per document."""
    return b"".join(_snapshot_lines(state))


def dumps_snapshot(state: State) -> str:
    return snapshot_bytes(state).decode("utf-8")


def _snapshot_lines(state: State) -> Iterator[bytes]:
    header = orjson.dumps({**SNAPSHOT.header(), "source": state.source,
                           "read_time": encode(state.read_time)}, option=orjson.OPT_SORT_KEYS)
    yield header[:-1] + b"," + _COLLECTIONS_OPEN + b"\n"
    names = sorted(state.collections)
    for index, name in enumerate(names):
        yield orjson.dumps(name) + b":{\n"
        docs = sorted(state.collections[name].values(), key=lambda d: d.id)
        for number, doc in enumerate(docs):
            line = orjson.dumps({doc.id: {"update_time": encode(doc.update_time),
                                          "fields": encode_fields(doc.fields)}},
                                option=orjson.OPT_SORT_KEYS)
            yield line[1:-1] + (b",\n" if number < len(docs) - 1 else b"\n")
        yield b"},\n" if index < len(names) - 1 else b"}\n"
    yield b"}}\n"


def write_atomically(path: str | Path, content: bytes | str) -> None:
    """``files.write_atomically`` (the mode of a replaced file kept, a new one 0600), with an OSError
    as one sentence naming the file. Kept for ``commands.snapshot``, which imports it from here."""
    try:
        files.write_atomically(path, content)
    except OSError as error:
        raise SourceError(f"{path}: cannot write the file ({error.strerror or error})") from error


# -- the snapshot store ------------------------------------------------------------------------------


class SnapshotStore:
    """A snapshot file as a source: read it, or apply groups of ops to it under preconditions."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.source = str(path)
        # The file is fixed when the store is opened: a symbolic link re-pointed during a run must
        # not make its reads and its write reach different files.
        self.path = Path(path).resolve()
        # ``create``: a missing file reads as an empty snapshot, and the first write creates it
        # (a restore into a new file); otherwise a missing file is an error, as for any source.
        self.create = create

    def read(self, collections: Iterable[str] | None = None, projection: Projection | None = None, *,
             pin: bool = False) -> State:
        """The file's documents; with ``pin``, the state also names the file by its absolute path
        and the sha256 of the bytes read, so that a saved plan applies to that file only."""
        if self.create and not os.path.lexists(self.path):
            return State(source=self.source, read_time=None, collections={})
        if not pin:
            return replace(read_snapshot(self.path, collections, projection), source=self.source)
        try:
            sha256, before = files.fingerprint(self.path)
        except FileNotFoundError:
            raise SourceError(f"{self.source}: snapshot file not found") from None
        except FileProblem as problem:
            raise SourceError(f"{self.source}: {problem}") from problem
        state = read_snapshot(self.path, collections, projection)
        try:
            unchanged = files.identity(self.path) == before
        except OSError:
            unchanged = False
        if not unchanged:
            raise SourceError(f"{self.source}: the snapshot file changed while it was being read; "
                              "run the command again")
        return replace(state, source=self.source, file=SourceFile(path=str(self.path), sha256=sha256))

    def read_documents(self, paths: Iterable[str]) -> State:
        """The collections ``paths`` name, read whole (a file is read whole anyway)."""
        return self.read(sorted({path.partition("/")[0] for path in paths}))

    def apply(self, groups: list[tuple[Op, ...]], now: datetime, journal: Any = None,
              current: State | None = None, checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        """Apply each group atomically (all its ops or none), then replace the file once: the
        whole apply is one commit. ``current`` is unused: the file is re-read here, so that the
        preconditions are checked against what it holds at this moment. The file then holds the
        data as of ``now``, its read time; a symbolic link is written through, so the file it names
        is the one replaced. ``checkpoint`` is called once, before the commit (the lease's check)."""
        return self._commit(groups, now, journal, apply_groups, checkpoint)

    def undo(self, groups: list[tuple[UndoOp, ...]], now: datetime, journal: Any = None,
             checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        """A rollback's undo groups (deletes, clears), written like ``apply`` writes a plan: one
        commit, each group whole or not at all, under the same update-time preconditions."""
        return self._commit(groups, now, journal, undo_groups, checkpoint)

    def _commit(self, groups: list[Any], now: datetime, journal: Any, write: Any,
                checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        if checkpoint is not None:
            checkpoint()
        new_file = self.create and not os.path.lexists(self.path)
        state = self.read()
        number = journal.before_commit([op for group in groups for op in group]) if journal else 0
        new_state, results = write(state, groups, now)
        if any(result.applied for result in results):
            try:
                content = snapshot_bytes(replace(new_state, read_time=now))
                if new_file:
                    _create_new(self.path, content)
                else:
                    write_atomically(self.path, content)
            except (orjson.JSONEncodeError, SourceError) as error:
                # The file is replaced whole or not at all: nothing of this commit was written.
                if journal:
                    journal.after_commit(number, [replace(r, applied=False, written_at=None,
                                                          reason="the file could not be written")
                                                  for r in results])
                if isinstance(error, SourceError):
                    raise
                raise SourceError(f"{self.path}: the snapshot cannot be written back ({error}); "
                                  "nothing was written") from error
        if journal:
            journal.after_commit(number, results)
        return results


def _create_new(path: Path, content: bytes) -> None:
    """A new snapshot file, never one another process created since this run found none."""
    try:
        files.create_new(path, content)
    except FileExistsError:
        raise SourceError(f"{path}: the file was created by another process during this run; nothing "
                          "was written to it. Run the command again to write to the file as it is "
                          "now") from None
    except OSError as error:
        raise SourceError(f"{path}: cannot create the file ({error.strerror or error})") from error


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


def _refusal(op: Op | UndoOp, collections: dict[str, dict[str, Document]]) -> str:
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


def undo_groups(state: State, groups: list[tuple[UndoOp, ...]],
                now: datetime) -> tuple[State, list[OpResult]]:
    """A rollback's writes, in memory, with the semantics of ``apply_groups``: a group whose every
    precondition holds is written whole (a delete removes its document, a clear changes only its
    fields), any other is skipped whole. Cleared documents get ``now`` as their update time."""
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    results: list[OpResult] = []
    for group in groups:
        reasons = [_refusal(op, collections) for op in group]
        failed = next((reason for reason in reasons if reason), "")
        for op, reason in zip(group, reasons, strict=True):
            if failed:
                results.append(OpResult(op=op, applied=False,
                                        reason=reason or f"its link partner was skipped: {failed}"))
                continue
            collection, _, doc_id = op.path.partition("/")
            docs = collections[collection]
            if isinstance(op, DeleteDocumentOp):
                del docs[doc_id]
                results.append(OpResult(op=op, applied=True))
                continue
            assert isinstance(op, ClearFieldsOp)
            docs[doc_id] = Document(collection, doc_id, op.cleared(docs[doc_id].fields), now)
            results.append(OpResult(op=op, applied=True, written_at=now))
    return replace(state, collections=collections), results
