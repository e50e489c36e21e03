"""Live Firestore as a source: the only module that imports ``google.cloud.firestore``.

Reads every collection of a run at one consistent ``read_time`` (a point-in-time read), in pages
ordered by document name, so a long read never hits a single stream's deadline. Writes only the
groups ``guard.admit`` let through, in atomic commits of at most 500 writes:

- a create carries "must not exist", a fill the document's ``update_time`` from the plan's read
  (``WriteBatch.update`` refuses an ``exists`` option; an update already requires the document);
- ``apply`` writes only the plan's additive ops; ``undo`` (for ``reconcile rollback`` alone) writes
  the undo ops of ``rollback``: a delete or a clear, each with the ``update_time`` the undone run's
  write left as its precondition;
- a link's writes are in the same commit; a commit that fails a precondition, or that the server
  refuses as invalid, is split in halves until the failing group is alone, which is skipped with
  the server's reason, never retried blindly; the rest of the commit is applied;
- before the first commit, every group is checked against the limits Firestore enforces (document
  size, arrays in arrays): one that cannot be written is skipped with why, not sent;
- one place translates the client library's errors (``_translated``) and one helper retries
  (``_retrying``): transient failures are retried with backoff, and every call, retries included,
  ends within ``timeout`` seconds; a server that stays silent or unreachable past it is
  ``ServerLost``. The library's own retries are off, so no wait is longer than ours;
- if a retried commit then meets its own earlier write, the group is recognised as applied;
- the write rate follows the 500/50/5 ramp in production (start at 500 writes/s, +50% every
  5 minutes) unless ``max_writes_per_second`` is given; the emulator is not throttled;
- ``checkpoint`` (the lease's check) is called before every commit: a run that lost its lease
  stops there;
- up to ``parallel`` commits are in flight at once (``_Commits``): batches hold whole groups and a
  run writes each document once, so they are independent; the rate limiter is shared, and the
  first error stops every worker before its next commit.

Documents are read and writes built as Firestore's own protobufs (``_fields_from_pb``,
``_fill_value``): the client library's snapshots and batches wrap every value in an object and
copy it, which costs several times the server's work. Queries are still built by the library,
and values this tool does not model (the library's special maps) go through it both ways.

The lock collection (``lock_collection``, default ``_reconcile_locks``) holds the tool's lease
document and is never read as data: listing every collection skips it, and naming it is refused.
Its one document is read and written only by ``read_lease``, ``create_lease`` and ``update_lease``,
each write under a precondition; nothing else here can reach it, and they can reach nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from sys import intern
from typing import Any, TypeVar

from reconciler.errors import ServerLost, SourceError
from reconciler.kernel import Projection
from reconciler.model import CreateDocumentOp, Document, FillFieldsOp, Op, OpResult, State
from reconciler.progress import Progress, Silent
from reconciler.rollback import ClearFieldsOp, DeleteDocumentOp, UndoOp
from reconciler.selection import Equality
from reconciler.values import MISSING, GeoPoint, Reference, document_size, nested_array

SCHEME = "firestore://"
DEFAULT_DATABASE = "(default)"
PAGE_SIZE = 50_000  # documents per stream; the emulator rescans for each cursor, so pages are large
MAX_BATCH = 500  # Firestore's limit of writes in one commit
PROBE_DOCUMENT = "reconcile-read-time-probe"  # read, never written: its read time is the server's now
DEFAULT_TIMEOUT = 60.0  # seconds any one server call may take, retries included
LOCK_COLLECTION = "_reconcile_locks"  # the tool's own collection: the lease document, never data
MAX_DOCUMENT_BYTES = 1_048_576  # Firestore's limit on one document's size
DEFAULT_PARALLEL = 4  # commits in flight at once: the server works on some while this process builds the next
MAX_PARALLEL = 32
_PROJECT = re.compile(r"^[a-z0-9](?:[a-z0-9.:-]{0,98}[a-z0-9])?$")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # auto-IDs, in name order
_DATABASE = re.compile(r"^[a-z](?:[a-z0-9-]{2,61}[a-z0-9])$")

T = TypeVar("T")
Write = Op | UndoOp
Adder = Callable[[Any, Any], Any]  # (client, op) → that op's write, a protobuf ``Write``


def parse_source(source: str) -> tuple[str, str]:
    """``firestore://PROJECT[/DATABASE]`` → (project, database), both checked against Firestore's
    naming rules so that a wrong name is one sentence here, not an error deep in the client."""
    rest = source[len(SCHEME):]
    project, _, database = rest.partition("/")
    if not project or "/" in database:
        raise SourceError(f"{source}: expected firestore://PROJECT or firestore://PROJECT/DATABASE")
    if not _PROJECT.match(project) or ".." in project:
        raise SourceError(f"{source}: {project!r} is not a Google Cloud project ID (lower-case letters, "
                          "digits and hyphens, e.g. my-project)")
    if database and database != DEFAULT_DATABASE and not _DATABASE.match(database):
        raise SourceError(f"{source}: {database!r} is not a Firestore database ID (4 to 63 lower-case "
                          "letters, digits and hyphens, starting with a letter), nor (default)")
    return project, database or DEFAULT_DATABASE


class FirestoreStore:
    def __init__(self, source: str, *, page_size: int = PAGE_SIZE, batch_size: int = MAX_BATCH,
                 max_writes_per_second: float | None = None, progress: Progress | None = None,
                 timeout: float = DEFAULT_TIMEOUT, lock_collection: str = LOCK_COLLECTION,
                 parallel: int = 1) -> None:
        self.source = source
        self.parallel = max(1, parallel)
        self.lock_collection = lock_collection
        self.timeout = timeout
        self.project, self.database = parse_source(source)
        self.page_size = page_size
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.max_writes_per_second = max_writes_per_second
        self.progress = progress or Silent()
        self.emulator = os.environ.get("FIRESTORE_EMULATOR_HOST") or None
        self._client: Any = None

    def with_timeout(self, timeout: float) -> FirestoreStore:
        """The same store (its connection too), whose calls end within ``timeout`` seconds."""
        quick = copy.copy(self)
        quick.timeout = timeout
        return quick

    # -- connection ------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import firestore

        if self.emulator:
            host, _, port = self.emulator.rpartition(":")
            try:
                socket.create_connection((host or "localhost", int(port)), timeout=3).close()
            except (OSError, ValueError) as error:
                raise SourceError(
                    f"cannot reach the Firestore emulator at {self.emulator} "
                    f"(FIRESTORE_EMULATOR_HOST): {getattr(error, 'strerror', None) or error}; start it "
                    "with `gcloud emulators firestore start` or unset the variable") from error
        try:
            return firestore.Client(project=self.project, database=self.database)
        except DefaultCredentialsError as error:
            raise SourceError(
                f"{self.source}: no Google credentials ({str(error).splitlines()[0]}); run "
                "`gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS, or set "
                "FIRESTORE_EMULATOR_HOST to use the emulator") from error

    def _retrying(self, what: str, attempt: Callable[[float], T], *, refusals: bool = False,
                  on_retry: Callable[[], None] | None = None) -> T:
        """The one retry: ``attempt(seconds_left)`` until it succeeds, transient failures retried
        with backoff, all within ``timeout`` seconds, then ServerLost. Errors are translated."""
        backoff = _Backoff(self.source, what, self.timeout)
        while True:
            try:
                with _translated(self.source, what, refusals=refusals):
                    return attempt(backoff.left())
            except _Transient as failure:
                backoff.wait(failure)
                if on_retry is not None:
                    on_retry()

    # -- reads -----------------------------------------------------------------------------------

    def server_time(self, collection: str) -> datetime:
        """Firestore's own now: the read time of a document that is never written."""
        client = self.client()
        ref = client.collection(collection).document(PROBE_DOCUMENT)
        snapshot = self._retrying("reading the server time", lambda seconds: next(iter(
            client.get_all([ref], retry=None, timeout=seconds))))
        return _plain_datetime(snapshot.read_time)

    def read(self, collections: Iterable[str] | None = None, projection: Projection | None = None, *,
             read_time: datetime | None = None,
             where: Mapping[str, Sequence[Equality]] | None = None) -> State:
        """Every document of ``collections`` (default: all top-level ones) as of one read time;
        with a projection, only the fields it keeps (possible bases are fetched whole); with
        ``where``, only the documents of a collection that its equality filters keep."""
        where = where or {}
        client = self.client()
        if collections is not None and self.lock_collection in collections:
            raise SourceError(f"{self.source}: {self.lock_collection} is the collection of this tool's "
                              "lease (--lock-collection), never data; a spec may not name it: rename the "
                              "collection in the spec, or keep the lease elsewhere with --lock-collection")
        names = list(collections) if collections is not None else sorted(
            c.id for c in self._retrying("listing collections", lambda seconds: list(
                client.collections(retry=None, timeout=seconds))) if c.id != self.lock_collection)
        if read_time is None:
            read_time = self.server_time(names[0] if names else "reconcile")
        # One stream per collection, concurrently: the server sends one while this process
        # converts the other (a single stream leaves one of them idle at any moment).
        with ThreadPoolExecutor(max_workers=max(1, min(len(names), 4))) as pool:
            read = pool.map(lambda name: self._read_collection(name, read_time, projection,
                                                               where.get(name, ())), names)
            return State(source=self.source, read_time=read_time,
                         collections=dict(zip(names, read, strict=True)))

    def read_documents(self, paths: Sequence[str]) -> State:
        """The documents at ``paths`` that exist, whole, at one read time (in chunks of 300)."""
        if not paths:
            return State(source=self.source, read_time=None, collections={})
        read_time = self.server_time(paths[0].partition("/")[0])
        return State.of(self.source, read_time, self.documents_at(paths, read_time))

    def partitions(self, collection: str, count: int,
                   read_time: datetime) -> list[tuple[str | None, str | None]]:
        """Split ``collection`` into at most ``count`` ranges of document IDs, [start, end) (None: open),
        that cover it exactly, for reads spread over workers. Firestore's partition query gives
        split points that balance the ranges; the emulator has none, so there the IDs are split
        evenly over the characters auto-IDs are made of (every ID still falls in exactly one range)."""
        if count <= 1:
            return [(None, None)]
        if self.emulator:
            points = [_ID_ALPHABET[len(_ID_ALPHABET) * index // count] for index in range(1, count)]
        else:
            client = self.client()
            group = client.collection_group(collection)
            points = []
            for part in self._retrying(f"partitioning {collection}", lambda seconds: list(
                    group.get_partitions(count - 1, retry=None, timeout=seconds, read_time=read_time))):
                end = part.end_at
                # A collection group also holds subcollections of that name: keep top-level split points.
                if end is not None and end.path.count("/") == 1:
                    points.append(end.id)
        bounds = [None, *sorted(set(points)), None]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def read_range(self, collection: str, start: str | None, end: str | None, read_time: datetime,
                   projection: Projection | None = None) -> Iterator[Document]:
        """The documents of ``collection`` whose IDs are in [start, end), as of ``read_time`` (one
        of the ranges ``partitions`` gives), projected like ``read``."""
        yield from self._read_collection(collection, read_time, projection, bounds=(start, end)).values()

    def _read_collection(self, name: str, read_time: datetime, projection: Projection | None,
                         filters: Sequence[Equality] = (),
                         bounds: tuple[str | None, str | None] = (None, None)) -> dict[str, Document]:
        from google.cloud.firestore_v1.base_query import FieldFilter
        from google.cloud.firestore_v1.field_path import FieldPath

        query = self.client().collection(name)
        start, end = bounds
        if start is not None:
            query = query.where(filter=FieldFilter("__name__", ">=", self.client().document(name, start)))
        if end is not None:
            query = query.where(filter=FieldFilter("__name__", "<", self.client().document(name, end)))
        for equality in filters:
            operator, value = ("==", equality.values[0]) if len(equality.values) == 1 else \
                ("in", list(equality.values))
            query = query.where(filter=FieldFilter(FieldPath(equality.field).to_api_repr(), operator, value))
        needed = projection.fields.get(name) if projection else None
        if needed is not None:
            query = query.select([FieldPath(field).to_api_repr() for field in sorted(needed)])
        task = self.progress.task(f"read {name}")
        client = self.client()
        docs: dict[str, Document] = {}
        for raw in self._stream(query, read_time, f"reading {name}", task):
            doc_id = raw.name.rpartition("/")[2]
            docs[doc_id] = Document(name, doc_id, _fields_from_pb(raw.fields, client),
                                    _datetime_from_pb(raw.update_time))
        if needed is not None and projection is not None:
            bases = [doc.path for doc in docs.values() if projection.whole(name, doc.fields)]
            for start in range(0, len(bases), 300):
                docs.update((doc.id, doc) for doc in self._current_at(bases[start:start + 300], read_time))
        task.close()
        return docs

    def _stream(self, query: Any, read_time: datetime, what: str, task: Any) -> Iterator[Any]:
        """Every document of ``query`` in name order, as the server's own protobuf documents, in
        pages of ``page_size`` (each one stream), resuming after the last document received when
        a stream fails for a transient reason. A read that gets no document for ``timeout``
        seconds, retries included, is ServerLost.

        The query is sent as the client library builds it, but its answers are not turned into
        the library's snapshots: that conversion (a wrapper per value, then a deep copy) costs
        four times the read itself, and ``_fields_from_pb`` makes this tool's values directly."""
        from google.cloud.firestore_v1.types import firestore
        from google.cloud.firestore_v1.types import query as query_types

        client = self.client()
        ordered = query.order_by("__name__").limit(self.page_size)
        parent = ordered._parent._parent_info()[0]
        structured = query_types.StructuredQuery.pb(ordered._to_protobuf())
        last: str | None = None
        backoff = _Backoff(self.source, what, self.timeout)
        while True:
            page = firestore.RunQueryRequest.pb()(parent=parent, structured_query=structured,
                                                  read_time=_timestamp_pb(read_time))
            if last is not None:  # after the last document received: a cursor on its name
                page.structured_query.start_at.values.add().reference_value = last
                page.structured_query.start_at.before = False
            received = 0
            try:
                with _translated(self.source, what):
                    for response in client._firestore_api.run_query(
                            request=firestore.RunQueryRequest.wrap(page), metadata=client._rpc_metadata,
                            retry=None, timeout=backoff.left()):
                        raw = firestore.RunQueryResponse.pb(response)
                        if not raw.HasField("document"):
                            continue
                        last = raw.document.name
                        received += 1
                        if received % 1000 == 0:
                            task.advance(1000)
                        yield raw.document
            except _Transient as failure:
                task.advance(received % 1000)
                if received:
                    backoff = _Backoff(self.source, what, self.timeout)  # progress: a new deadline
                backoff.wait(failure)
                continue
            task.advance(received % 1000)
            if received < self.page_size:
                return
            backoff = _Backoff(self.source, what, self.timeout)

    # -- writes ----------------------------------------------------------------------------------

    def apply(self, groups: list[tuple[Op, ...]], now: datetime, journal: Any = None,
              current: State | None = None, checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        """Commit the groups in batches of whole groups, each batch atomic. ``current``: the fresh
        read the groups were admitted on, to check Firestore's limits before the first commit.
        ``checkpoint`` is called before each commit, after any wait for the write rate: it raises
        to stop the run there (a lost lease)."""
        results: list[OpResult] = []
        writable: list[tuple[Op, ...]] = []
        for group in groups:
            reasons = [_unwritable(op, current) for op in group]
            failed = next((reason for reason in reasons if reason), "")
            if failed:
                results.extend(_skipped(group, reasons, failed))
            else:
                writable.append(group)
        if journal and results:
            journal.not_sent(results)
        return results + self._write(writable, journal, _add_write, checkpoint)

    def undo(self, groups: list[tuple[UndoOp, ...]], now: datetime, journal: Any = None,
             checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        """Commit a rollback's undo groups (deletes, clears) like ``apply`` commits a plan's: whole
        groups per atomic commit, each write under its update-time precondition, journaled."""
        return self._write(groups, journal, _add_undo, checkpoint)

    def _write(self, groups: Sequence[tuple[Write, ...]], journal: Any, add: Adder,
               checkpoint: Callable[[], None] | None = None) -> list[OpResult]:
        """Commit the batches on up to ``parallel`` workers at once. Batches are independent: a
        document is written by one op of a run, and a group is never split, so their order does
        not matter; the results come back in batch order whatever the order of the commits."""
        batches = _batches(list(groups), self.batch_size)
        task = self.progress.task("write", total=sum(len(g) for g in groups))
        self.client()  # connect once, before the workers share the connection
        commits = _Commits(batches, _RateLimiter(None if self.emulator else "ramp",
                                                 self.max_writes_per_second))

        def commit(ops: list[Write], batch: list[tuple[Write, ...]]) -> list[OpResult]:
            if checkpoint is not None:
                checkpoint()
            number = journal.before_commit(ops) if journal else 0
            outcome = self._commit_groups(batch, retried=False, add=add)
            if journal:
                journal.after_commit(number, outcome)
            with commits.lock:
                task.advance(len(ops))
            return outcome

        results = commits.run(commit, workers=min(self.parallel, len(batches)))
        task.close()
        return results

    def _commit_groups(self, groups: Sequence[tuple[Write, ...]], retried: bool,
                       add: Adder) -> list[OpResult]:
        """Commit whole groups at once; when the server refuses the commit (a precondition, or an
        invalid write), bisect to the refused group, skip it with the server's reason, write the rest."""
        ops = [op for group in groups for op in group]
        attempts = [retried]
        try:
            written = self._retrying("committing writes", lambda seconds: self._commit(ops, seconds, add),
                                     refusals=True, on_retry=lambda: attempts.append(True))
        except _Refused as refusal:
            retried = any(attempts)
            if len(groups) > 1:
                middle = len(groups) // 2
                return (self._commit_groups(groups[:middle], retried, add)
                        + self._commit_groups(groups[middle:], retried, add))
            if refusal.invalid:
                reason = f"the database refused the write as invalid: {refusal.reason}"
                return [OpResult(op=op, applied=False, reason=reason) for op in groups[0]]
            return self._explain_refusal(groups[0], refusal.reason, retried)
        # A delete leaves no update time (the server sets none): its result has none either.
        return [OpResult(op=op, applied=True, written_at=update_time)
                for op, update_time in zip(ops, written, strict=True)]

    def _commit(self, ops: list[Write], seconds: float, add: Adder) -> list[datetime | None]:
        """One atomic commit of ``ops``; each write's update time (None for a delete). The writes
        are built as protobufs here (``_write_pb``), not through the library's batch, whose
        per-value wrappers cost more than the commit itself."""
        from google.cloud.firestore_v1.types import firestore

        client = self.client()
        request = firestore.CommitRequest.pb()(database=client._database_string,
                                               writes=[add(client, op) for op in ops])
        response = client._firestore_api.commit(request=firestore.CommitRequest.wrap(request),
                                                metadata=client._rpc_metadata, retry=None, timeout=seconds)
        return [_datetime_from_pb(result.update_time) if result.HasField("update_time") else None
                for result in firestore.CommitResponse.pb(response).write_results]

    def _explain_refusal(self, group: tuple[Write, ...], server_reason: str, retried: bool) -> list[OpResult]:
        """A lone group failed its precondition: read its documents to say which op and why, or,
        after a retried commit, to recognise that the earlier attempt did apply it."""
        current = self._current(group)
        if retried and all(op.in_effect(current[op.path]) for op in group):
            return [OpResult(op=op, applied=True, reason="confirmed after a retried commit",
                             written_at=getattr(current[op.path], "update_time", None)) for op in group]
        reasons = [op.refusal(current[op.path]) for op in group]
        failed = next((reason for reason in reasons if reason), f"precondition failed ({server_reason})")
        return _skipped(group, reasons, failed)

    def _current(self, ops: Sequence[Write]) -> dict[str, Document | None]:
        found: dict[str, Document | None] = {op.path: None for op in ops}
        found.update((doc.path, doc) for doc in self._current_at([op.path for op in ops], None))
        return found

    def documents_at(self, paths: Sequence[str], read_time: datetime | None) -> list[Document]:
        """The documents at ``paths`` that exist, whole, at ``read_time`` (a plan's read time)."""
        found: list[Document] = []
        for start in range(0, len(paths), 300):
            found += self._current_at(paths[start:start + 300], read_time)
        return found

    def _current_at(self, paths: Sequence[str], read_time: datetime | None) -> list[Document]:
        """The documents at ``paths`` that exist, whole, now or at ``read_time`` (one batched
        lookup, its answers read as ``_stream`` reads a query's)."""
        from google.cloud.firestore_v1.types import firestore

        client = self.client()
        prefix = f"{client._database_string}/documents/"
        request = firestore.BatchGetDocumentsRequest.pb()(
            database=client._database_string, documents=[prefix + path for path in paths])
        if read_time is not None:
            request.read_time.CopyFrom(_timestamp_pb(read_time))

        def lookup(seconds: float) -> list[Any]:
            found = []
            for response in client._firestore_api.batch_get_documents(
                    request=firestore.BatchGetDocumentsRequest.wrap(request),
                    metadata=client._rpc_metadata, retry=None, timeout=seconds):
                raw = firestore.BatchGetDocumentsResponse.pb(response)
                if raw.HasField("found"):
                    found.append(raw.found)
            return found

        documents = []
        for raw in self._retrying("reading documents", lookup):
            path = raw.name[len(prefix):]
            collection, _, doc_id = path.rpartition("/")
            documents.append(Document(collection, doc_id, _fields_from_pb(raw.fields, client),
                                      _datetime_from_pb(raw.update_time)))
        return documents

    # -- the lease document ----------------------------------------------------------------------

    def read_lease(self, doc_id: str) -> tuple[Document | None, datetime]:
        """The lease document ``doc_id`` of the lock collection (None when there is none), and the
        server's time of the read: expiry is judged by the server's clock, never a client's."""
        client = self.client()
        ref = client.collection(self.lock_collection).document(doc_id)
        snapshot = self._retrying("reading the lease", lambda seconds: next(iter(
            client.get_all([ref], retry=None, timeout=seconds))))
        read_time = _plain_datetime(snapshot.read_time)
        assert read_time is not None
        return (_document(self.lock_collection, snapshot) if snapshot.exists else None), read_time

    def create_lease(self, doc_id: str, fields: dict[str, Any]) -> datetime | None:
        """Create the lease document, only if it does not exist: its update time, or None when it
        exists (someone else's, or this run's own write whose reply was lost: read it to know)."""
        ref = self.client().collection(self.lock_collection).document(doc_id)
        return self._write_lease("taking the lease", lambda seconds: ref.create(
            _to_firestore(fields, self.client()), retry=None, timeout=seconds))

    def update_lease(self, doc_id: str, fields: dict[str, Any], update_time: datetime) -> datetime | None:
        """Set the lease document's fields, only if it is still at ``update_time``: its new update
        time, or None when it changed since (or is gone)."""
        from google.cloud.firestore_v1.field_path import FieldPath

        client = self.client()
        ref = client.collection(self.lock_collection).document(doc_id)
        option = client.write_option(last_update_time=update_time)
        changes = {FieldPath(name).to_api_repr(): _to_firestore(value, client)
                   for name, value in fields.items()}
        return self._write_lease("writing the lease", lambda seconds: ref.update(
            changes, option=option, retry=None, timeout=seconds))

    def _write_lease(self, what: str, write: Callable[[float], Any]) -> datetime | None:
        try:
            result = self._retrying(what, write, refusals=True)
        except _Refused as refusal:
            if refusal.invalid:
                raise SourceError(f"{self.source}: {what} failed: {refusal.reason}") from refusal
            return None
        return _plain_datetime(result.update_time)

    def create_all(self, state: State) -> None:
        """Load a state with creates only (each document must not exist): for tests and benchmarks,
        through the client library's own batches (the benchmarks' write floor)."""
        client = self.client()
        docs = [doc for docs in state.collections.values() for doc in docs.values()]
        for start in range(0, len(docs), MAX_BATCH):
            batch = client.batch()
            for doc in docs[start:start + MAX_BATCH]:
                batch.create(client.document(doc.path), _to_firestore(doc.fields, client))
            self._retrying("loading documents", lambda seconds, batch=batch: batch.commit(
                retry=None, timeout=seconds))


# -- helpers -------------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (unavailable, deadline, aborted...), its reason in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Refused(Exception):
    """The server refused a commit: a precondition failed, or a write was invalid."""

    def __init__(self, reason: str, invalid: bool) -> None:
        super().__init__(reason)
        self.reason, self.invalid = reason, invalid


@contextlib.contextmanager
def _translated(source: str, what: str, refusals: bool = False) -> Iterator[None]:
    """The one translation of the client library's errors into this tool's: transient ones to
    ``_Transient`` (for ``_retrying``), a commit's refusals to ``_Refused`` (when ``refusals``),
    every other one to a SourceError naming the source and what was being done."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted,
            gexc.ResourceExhausted, gexc.Unknown, gexc.RetryError) as error:
        raise _Transient(f"{type(error).__name__}: {_first_line(error)}") from error
    except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.InvalidArgument) as error:
        if not refusals:
            raise SourceError(f"{source}: {what} failed: {_first_line(error)}") from error
        raise _Refused(_first_line(error), invalid=isinstance(error, gexc.InvalidArgument)) from error
    except (gexc.PermissionDenied, gexc.Unauthenticated) as error:
        raise SourceError(f"{source}: permission denied while {what}: {_first_line(error)}; check the "
                          "account's Firestore role") from error
    except gexc.GoogleAPICallError as error:
        raise SourceError(f"{source}: {what} failed: {_first_line(error)}") from error


class _Backoff:
    """Waits between retries of one call, and its deadline: ``timeout`` seconds from the start."""

    def __init__(self, source: str, what: str, timeout: float) -> None:
        self.source, self.what, self.timeout = source, what, timeout
        self.deadline = time.monotonic() + timeout
        self.delay = 0.25

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.5)

    def wait(self, failure: _Transient) -> None:
        if time.monotonic() + self.delay >= self.deadline:
            raise ServerLost(f"{self.source}: no answer from the database while {self.what} for "
                             f"{self.timeout:g}s ({failure.reason}); check that it is up and reachable "
                             "(--timeout sets how long to wait)") from failure
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 4.0)


def _skipped(group: Sequence[Write], reasons: Sequence[str], failed: str) -> list[OpResult]:
    """A group is skipped whole: each op with its own reason, or its partner's."""
    return [OpResult(op=op, applied=False, reason=reason or f"its link partner was skipped: {failed}")
            for op, reason in zip(group, reasons, strict=True)]


def _unwritable(op: Op, current: State | None) -> str:
    """Why Firestore would refuse this write, known before sending it ('' when none)."""
    if isinstance(op, CreateDocumentOp):
        fields = op.fields
    else:
        existing = current.find(op.path) if current is not None else None
        fields = {**(existing.fields if existing else {}), **{f.field: f.value for f in op.fills}}
    values = op.fields.values() if isinstance(op, CreateDocumentOp) else [f.value for f in op.fills]
    if any(nested_array(value) for value in values):
        return "Firestore cannot store an array directly inside an array"
    size = document_size(op.path, fields)
    if size > MAX_DOCUMENT_BYTES:
        return (f"the document would be {size:,} bytes, more than Firestore's limit of "
                f"{MAX_DOCUMENT_BYTES:,}")
    return ""


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _batches(groups: list[tuple[Write, ...]], size: int) -> list[list[tuple[Write, ...]]]:
    """Whole groups, at most ``size`` writes a batch (a group is never split across commits)."""
    batches: list[list[tuple[Write, ...]]] = []
    current: list[tuple[Write, ...]] = []
    count = 0
    for group in groups:
        if current and count + len(group) > size:
            batches.append(current)
            current, count = [], 0
        current.append(group)
        count += len(group)
    if current:
        batches.append(current)
    return batches


def _add_write(client: Any, op: Op) -> Any:
    """An additive op's write: a create ("must not exist"), or a fill (the update time read).
    Nothing else: ``apply`` can send no other."""
    from google.cloud.firestore_v1.field_path import FieldPath
    from google.cloud.firestore_v1.types import write

    name = client.document(op.path)._document_path
    if isinstance(op, CreateDocumentOp):
        pb = write.Write.pb()(current_document={"exists": False})
        pb.update.name = name
        _fill_map(pb.update.fields, op.fields, client)
        return pb
    if not isinstance(op, FillFieldsOp):
        raise TypeError(f"apply writes creates and fills only, not {type(op).__name__}")
    if op.update_time is None:
        raise SourceError(f"{op.path}: the plan has no update time for this document; re-run plan "
                          "against the live source")
    changes = {fill.field: fill.value for fill in op.fills}
    if op.transition:
        changes[op.transition.field] = op.transition.to
    pb = write.Write.pb()()
    pb.update.name = name
    _fill_map(pb.update.fields, changes, client)
    pb.update_mask.field_paths.extend(sorted(FieldPath(field).to_api_repr() for field in changes))
    pb.current_document.update_time.CopyFrom(_timestamp_pb(op.update_time))
    return pb


def _add_undo(client: Any, op: UndoOp) -> Any:
    """A rollback's write: delete a document, or clear fields and move the status back; always under
    the update time the undone write left. Built by the library's own batch (rare writes, where
    speed does not matter), so that the one place that sends a delete reads as one."""
    from google.cloud.firestore_v1 import DELETE_FIELD
    from google.cloud.firestore_v1.field_path import FieldPath
    from google.cloud.firestore_v1.types import write

    batch = client.batch()
    ref = client.document(op.path)
    option = client.write_option(last_update_time=op.update_time)
    if isinstance(op, DeleteDocumentOp):
        batch.delete(ref, option=option)
    elif isinstance(op, ClearFieldsOp):
        changes = {FieldPath(change.field).to_api_repr(): DELETE_FIELD if change.to is MISSING
                   else _to_firestore(change.to, client) for change in op.changes}
        batch.update(ref, changes, option=option)
    else:
        raise TypeError(f"a rollback writes deletes and clears only, not {type(op).__name__}")
    [pb] = batch._write_pbs
    return write.Write.pb(pb)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp_pb(value: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def _datetime_from_pb(stamp: Any) -> datetime:
    """A protobuf Timestamp as this tool's datetime: UTC, to the microsecond, as the library's
    snapshots give it (the nanoseconds below a microsecond dropped)."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def _fields_from_pb(fields: Any, client: Any) -> dict[str, Any]:
    return {intern(key): _value_from_pb(value, client) for key, value in fields.items()}


def _value_from_pb(value: Any, client: Any) -> Any:
    """A protobuf ``Value`` as this tool's value: the same value ``_from_firestore`` makes of the
    library's decoding of it. A reference, and a map the library reads as one of its own types
    (keys ``__type__``, ``__oid__``... : vectors, BSON values), go through the library itself."""
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return value.string_value
    if kind == "integer_value":
        return value.integer_value
    if kind == "timestamp_value":
        return _datetime_from_pb(value.timestamp_value)
    if kind == "null_value":
        return None
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "double_value":
        return value.double_value
    if kind == "map_value":
        fields = value.map_value.fields
        if not any(key.startswith("__") for key in fields):
            return _fields_from_pb(fields, client)
    elif kind == "array_value":
        return [_value_from_pb(item, client) for item in value.array_value.values]
    elif kind == "bytes_value":
        return value.bytes_value
    elif kind == "geo_point_value":
        return GeoPoint(value.geo_point_value.latitude, value.geo_point_value.longitude)
    from google.cloud.firestore_v1._helpers import decode_value

    return _from_firestore(decode_value(value, client))


def _fill_map(target: Any, fields: Mapping[str, Any], client: Any) -> None:
    for key, item in fields.items():
        _fill_value(target[key], item, client)


def _fill_value(target: Any, value: Any, client: Any) -> None:
    """Set the protobuf ``Value`` ``target`` to this tool's ``value``, as the library's encoding
    of ``_to_firestore(value)`` would; a value of another type goes through the library."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.boolean_value = value
    elif kind is int and -(1 << 63) <= value < (1 << 63):
        target.integer_value = value
    elif kind is float:
        target.double_value = value
    elif value is None:
        target.null_value = 0
    elif kind is datetime and value.tzinfo is not None:
        target.timestamp_value.CopyFrom(_timestamp_pb(value))
    elif kind is dict and not any(key.startswith("__") for key in value):
        target.map_value.SetInParent()
        _fill_map(target.map_value.fields, value, client)
    elif kind is list:
        target.array_value.SetInParent()
        for item in value:
            _fill_value(target.array_value.values.add(), item, client)
    elif kind is bytes:
        target.bytes_value = value
    elif kind is GeoPoint:
        target.geo_point_value.latitude = value.latitude
        target.geo_point_value.longitude = value.longitude
    elif kind is Reference:
        target.reference_value = client.document(value.path)._document_path
    else:
        from google.cloud.firestore_v1._helpers import encode_value
        from google.cloud.firestore_v1.types import document

        target.CopyFrom(document.Value.pb(encode_value(_to_firestore(value, client))))


def _document(collection: str, snapshot: Any) -> Document:
    # The client deep-copies a document's data into the snapshot, and to_dict() copies it again;
    # the conversion below builds new containers anyway, so it reads the snapshot's own data.
    data = getattr(snapshot, "_data", None)
    if not isinstance(data, dict):
        data = snapshot.to_dict() or {}
    return Document(collection, snapshot.id, _from_firestore(data), _plain_datetime(snapshot.update_time))


def _plain_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                    value.microsecond, tzinfo=UTC)


def _from_firestore(value: Any) -> Any:
    """The client's Python values → this tool's values (plain types, Reference, GeoPoint)."""
    from google.cloud.firestore_v1 import DocumentReference
    from google.cloud.firestore_v1._helpers import GeoPoint as FirestoreGeoPoint

    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if isinstance(value, dict):
        return {intern(key): _from_firestore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_firestore(item) for item in value]
    if isinstance(value, datetime):
        return _plain_datetime(value)
    if isinstance(value, DocumentReference):
        return Reference(value.path)
    if isinstance(value, FirestoreGeoPoint):
        return GeoPoint(value.latitude, value.longitude)
    return value


def _to_firestore(value: Any, client: Any) -> Any:
    from google.cloud.firestore_v1._helpers import GeoPoint as FirestoreGeoPoint

    if isinstance(value, dict):
        return {key: _to_firestore(item, client) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_firestore(item, client) for item in value]
    if isinstance(value, Reference):
        return client.document(value.path)
    if isinstance(value, GeoPoint):
        return FirestoreGeoPoint(value.latitude, value.longitude)
    return value


class _RateLimiter:
    """Writes per second: none (emulator), a fixed cap, or the 500/50/5 ramp. One for all the
    workers of a run: each commit books its share of the rate before it is sent."""

    START, GROWTH, PERIOD = 500.0, 1.5, 300.0

    def __init__(self, mode: str | None, fixed: float | None) -> None:
        self.fixed = fixed
        self.ramp = mode == "ramp" and fixed is None
        self.started = time.monotonic()
        self.next_free = self.started
        self._lock = threading.Lock()

    def rate(self, now: float) -> float | None:
        if self.fixed:
            return self.fixed
        if self.ramp:
            return self.START * self.GROWTH ** int((now - self.started) // self.PERIOD)
        return None

    def wait(self, writes: int, stop: threading.Event) -> bool:
        """Wait for this commit's turn; False when ``stop`` was set meanwhile (send nothing)."""
        with self._lock:
            now = time.monotonic()
            rate = self.rate(now)
            if rate is None:
                return not stop.is_set()
            turn = max(self.next_free, now)
            self.next_free = turn + writes / rate
        delay = turn - time.monotonic()
        return not (stop.wait(delay) if delay > 0 else stop.is_set())


class _Commits:
    """The batches of one run, taken in order by up to N workers. The first error stops them all:
    no worker sends another commit once one has failed (a lost lease, a lost server) or the run
    was interrupted; commits already sent finish and are journaled. The error is then raised."""

    def __init__(self, batches: list[list[tuple[Write, ...]]], limiter: _RateLimiter) -> None:
        self.batches, self.limiter = batches, limiter
        self.outcomes: list[list[OpResult] | None] = [None] * len(batches)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._next = 0

    def run(self, commit: Callable[[list[Write], list[tuple[Write, ...]]], list[OpResult]],
            workers: int) -> list[OpResult]:
        if workers <= 1:
            self._work(commit)
        else:
            # Daemon threads: a second Ctrl-C ends the process without waiting for a hung commit.
            threads = [threading.Thread(target=self._work, args=(commit,), daemon=True,
                                        name=f"reconcile-commit-{n}") for n in range(workers)]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except BaseException as error:  # Ctrl-C: stop the workers, let sent commits finish
                self._fail(error)
                for thread in threads:
                    thread.join()
        if self.error is not None:
            raise self.error
        return [result for outcome in self.outcomes if outcome is not None for result in outcome]

    def _work(self, commit: Callable[[list[Write], list[tuple[Write, ...]]], list[OpResult]]) -> None:
        try:
            while True:
                with self.lock:
                    index = self._next
                    self._next += 1
                if index >= len(self.batches) or self.stop.is_set():
                    return
                batch = self.batches[index]
                ops = [op for group in batch for op in group]
                if not self.limiter.wait(len(ops), self.stop):
                    return
                self.outcomes[index] = commit(ops, batch)
        except BaseException as error:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()
