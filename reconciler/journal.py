"""The journal: one JSON-lines file per run that writes, for rollback and incident review.

Before each commit it records the ops about to be written with the documents' values before them;
after, each op's outcome. Every line is flushed and fsynced before the commit it describes is
sent, so a crash mid-apply leaves a journal that says what may have been written. The closing
line is written on every way out of an apply the process can see (success, an error, a lost
server, an interrupt) and counts only what the result lines say. The file is created 0600 in a
0700 directory: it holds the data's values. Owns the file layout; must not decide what to write.

Several commits may be in flight at once (``apply --parallel``): every method may be called from
any thread. Batch numbers follow the order of the commit lines in the file; a result line may come
after the commit lines of later batches, and names its batch. A line a worker writes after the
closing line (a commit still in flight when a second Ctrl-C ended the wait) is dropped: the closing
line already counts that commit as in doubt.

    {"format": "reconcile-journal", "format_version": "1.1", "event": "start",
     "operation": "apply", "spec": ..., "source": ..., "plan_read_time": ..., "ops": N, "at": ...}
    {"event": "not_sent", "results": [{"path", "applied": false, "reason", "update_time": null}]}
    {"event": "commit", "batch": 1, "ops": [<op as in the plan file>], "before": {path: fields | null}}
    {"event": "result", "batch": 1, "results": [{"path", "applied", "reason", "update_time"}]}
    {"event": "end", "outcome": "completed" | "failed", "error": str | null,
     "applied": N, "skipped": N, "in_doubt": N, "at": ...}

A rollback's journal (format 1.2) has the same lines: its start line says ``"operation":
"rollback"`` and names the journal it undoes (``"undoes": {"journal", "sha256", "operation"}``),
and its commit lines hold undo ops (``delete_document``, ``clear_fields``: ``rollback.undo_to_data``).
``read_journal`` reads an apply's or a restore's journal back, strictly, for a rollback; ``read_run``
reads the journals of one run directory (a Beam apply's, one journal per bundle) as one run, whose
``undoes`` names the directory and the sha256 of its list of journals.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from reconciler.errors import JournalError, SourceError
from reconciler.files import PRIVATE_FILE, FileProblem, make_private_directory, open_regular
from reconciler.formats import JOURNAL, check_version
from reconciler.model import Document, OpResult, State
from reconciler.plan import decode_op, op_to_data, strict_json
from reconciler.rollback import APPLIED, IN_DOUBT, SKIPPED, UNDOABLE, PastRun, Written
from reconciler.values import decode, decode_fields, encode, encode_fields, format_timestamp, printable

DEFAULT_DIRECTORY = Path(".reconcile") / "journal"


class Run(Protocol):
    """What a journal's start line names: a plan, or a rollback plan."""

    @property
    def spec_name(self) -> str: ...
    @property
    def spec_sha256(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def read_time(self) -> datetime | None: ...
    @property
    def ops(self) -> Sequence[Any]: ...


class Journal:
    def __init__(self, directory: Path, plan: Run, before: State, now: datetime,
                 operation: str = "apply", undoes: dict[str, Any] | None = None,
                 encode_op: Callable[[Any], dict[str, Any]] = op_to_data, label: str = "") -> None:
        """``undoes``: for a rollback, the journal it undoes; ``encode_op``: how its ops are written;
        ``label``: ends the file's name (one journal of the many a pipeline's workers write)."""
        self.before = before
        self.encode_op = encode_op
        self.batches = 0
        self.applied = self.skipped = 0
        self.open_batches: dict[int, int] = {}  # batch → ops sent, whose outcome is not yet known
        self._lock = threading.RLock()  # one line at a time, and the counts with it
        self._closed = False
        try:
            make_private_directory(directory)
            stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.spec_name)[:60] or "spec"
            kind = "" if operation == "apply" else f"-{operation}"
            self.path = directory / f"{stamp}-{name}{kind}{label}.jsonl"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                         PRIVATE_FILE)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as error:
            raise SourceError(f"{directory}: cannot write the {operation} journal ({error.strerror}); "
                              "pass --journal-dir with a writable directory") from error
        self._record({**JOURNAL.header(), "event": "start", "operation": operation, "spec": plan.spec_name,
                      "spec_sha256": plan.spec_sha256,
                      "source": plan.source, "plan_read_time": encode(plan.read_time),
                      "selection": _selection(plan),
                      "ops": len(plan.ops), "at": encode(now),
                      **({"undoes": undoes} if undoes is not None else {})})

    def not_sent(self, results: Sequence[OpResult]) -> None:
        """Ops skipped without being sent: stale since the plan, or beyond what Firestore accepts."""
        with self._lock:
            if self._record({"event": "not_sent", "results": _results(results)}):
                self.skipped += len(results)

    def before_commit(self, ops: Sequence[Any]) -> int:
        """Record a commit about to be sent (on disk before this returns); its batch number."""
        before: dict[str, Any] = {}
        for op in ops:
            doc = self.before.find(op.path)
            before[op.path] = None if doc is None else {
                "update_time": encode(doc.update_time), "fields": encode_fields(doc.fields)}
        encoded = [self.encode_op(op) for op in ops]
        with self._lock:  # numbered and written together: the file holds the batches in order
            if self._closed:
                raise JournalError(f"{self.path}: the journal is closed; a commit after its end "
                                   "line would be unrecorded, so it is not sent")
            self.batches += 1
            self._record({"event": "commit", "batch": self.batches, "ops": encoded, "before": before})
            self.open_batches[self.batches] = len(ops)
            return self.batches

    def after_commit(self, batch: int, results: Sequence[OpResult]) -> None:
        with self._lock:
            if not self._record({"event": "result", "batch": batch, "results": _results(results)}):
                return
            self.open_batches.pop(batch, None)
            self.applied += sum(r.applied for r in results)
            self.skipped += sum(not r.applied for r in results)

    @property
    def in_doubt(self) -> int:
        """Writes sent in a commit whose outcome never came back: applied or not, nobody knows."""
        with self._lock:
            return sum(self.open_batches.values())

    def close(self, now: datetime, error: BaseException | None = None) -> None:
        """The closing line, true to the result lines whatever ended the apply."""
        with self._lock:
            self._record({"event": "end", "outcome": "completed" if error is None else "failed",
                          "error": None if error is None else (str(error) or type(error).__name__),
                          "applied": self.applied, "skipped": self.skipped, "in_doubt": self.in_doubt,
                          "at": encode(now)})
            self._closed = True
            self._file.close()

    def _record(self, event: dict[str, Any]) -> bool:
        """Write one line, flushed and fsynced; False (nothing written) once the journal is closed."""
        if self._closed:
            return False
        self._file.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return True


def _results(results: Sequence[OpResult]) -> list[dict[str, Any]]:
    return [{"path": r.op.path, "applied": r.applied, "reason": r.reason,
             "update_time": encode(r.written_at)} for r in results]


# -- reading a journal back, for a rollback --------------------------------------------------------
# A journal is the record a rollback trusts to decide what it may delete, so it is read as strictly
# as a plan file: every line whole and of a known shape, each result line matching its commit line
# op for op. Anything else refuses the whole journal before anything is read from the source.


def read_journal(path: str, within: str | None = None) -> PastRun:
    """The writes an apply's or a restore's journal records. JournalError, one sentence naming the
    file and line, for anything else (a rollback's own journal included). ``within``: the run
    directory being read (``read_run``), which a refusal names."""
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        raise JournalError(f"{path}: journal not found; give the file `reconcile apply` printed after "
                           "\"Journal:\" (under .reconcile/journal/ unless --journal-dir said "
                           "otherwise)") from None
    except FileProblem as problem:
        raise JournalError(f"{path}: {problem}; give a journal file") from None
    digest = hashlib.sha256()
    with handle:
        try:
            lines = []
            for line in handle:
                digest.update(line)
                lines.append(line)
        except OSError as error:
            raise JournalError(f"{path}: cannot read the journal ({error.strerror})") from error
    return _Reader(path, lines, digest.hexdigest(), within).read()


def read_run(directory: str) -> PastRun:
    """The journals of one run directory (``apply --runner beam`` writes one per bundle of commits
    into ``<time>-<spec>-beam/``), read as one run: each as strictly as ``read_journal``, in the
    order of their names (each begins with its start time), their writes joined. JournalError,
    one sentence, for a directory with no journal, one holding a rollback's journal, or journals
    of different sources, specs, operations or plans: nothing to roll back as one."""
    try:
        paths = sorted(entry for entry in Path(directory).iterdir()
                       if entry.name.endswith(".jsonl") and not entry.is_dir())
    except OSError as error:
        raise JournalError(f"{directory}: cannot list the directory ({error.strerror}); nothing was "
                           "written") from error
    if not paths:
        raise JournalError(f"{directory}: no journal (*.jsonl) in this directory; give the run directory "
                           "`reconcile apply --runner beam` printed after \"Journal:\", or one journal "
                           "file; nothing was written")
    runs = [read_journal(str(path), within=directory) for path in paths]
    first = runs[0]
    for run in runs[1:]:
        for what, mine, theirs in (("source", first.source, run.source),
                                   ("spec sha256", first.spec_sha256, run.spec_sha256),
                                   ("operation", first.operation, run.operation),
                                   ("plan read time", _when(first.plan_read_time),
                                    _when(run.plan_read_time))):
            if mine != theirs:
                raise JournalError(
                    f"{directory}: its journals are not of one run: {Path(first.journal).name} records "
                    f"{what} {printable(mine)[:80]}, {Path(run.journal).name} {printable(theirs)[:80]}; roll "
                    "back each journal on its own (`reconcile rollback FILE`); nothing was written")
    # The digest of the set: each journal's sha256 and name, one line each, as sha256sum prints them.
    listing = "".join(f"{run.sha256}  {Path(run.journal).name}\n" for run in runs)
    started = [run.started for run in runs if run.started is not None]
    return PastRun(journal=directory, sha256=hashlib.sha256(listing.encode("utf-8")).hexdigest(),
                   operation=first.operation, spec_name=first.spec_name, spec_sha256=first.spec_sha256,
                   source=first.source, started=min(started) if started else None,
                   ended=all(run.ended for run in runs),
                   written=tuple(written for run in runs for written in run.written),
                   plan_read_time=first.plan_read_time, journals=tuple(run.journal for run in runs))


def _when(moment: datetime | None) -> str:
    return format_timestamp(moment) if moment is not None else "none"


class _Reader:
    def __init__(self, where: str, lines: list[bytes], sha256: str, within: str | None = None) -> None:
        self.where, self.lines, self.sha256, self.within = where, lines, sha256, within

    def fail(self, number: int, problem: str) -> JournalError:
        return JournalError(f"{self.where}:{number}: {problem}; nothing was written")

    def parse(self, number: int) -> dict[str, Any]:
        raw = self.lines[number - 1]
        if not raw.endswith(b"\n"):
            last = number == len(self.lines)
            raise self.fail(number, "the line is cut off (the run was stopped while writing it)" + (
                "; remove this last line to roll back what the complete lines record (a commit line "
                "cut off was never sent; a result line cut off leaves its commit in doubt, which the "
                "rollback reports)" if last and number > 1 else ""))
        try:
            data = strict_json(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise self.fail(number, f"not UTF-8 text (byte {error.start})") from None
        except json.JSONDecodeError as error:
            raise self.fail(number, f"not valid JSON ({error.msg}, column {error.colno})") from None
        except ValueError as error:
            raise self.fail(number, printable(str(error))) from None
        except RecursionError:
            raise self.fail(number, "nested too deeply to be a journal line") from None
        if type(data) is not dict or type(data.get("event")) is not str:
            raise self.fail(number, 'not a journal line (a JSON object with an "event")')
        return data

    def read(self) -> PastRun:
        if not self.lines:
            raise JournalError(f"{self.where}: the file is empty, not a journal; give the file "
                               "`reconcile apply` printed after \"Journal:\"")
        try:
            start = self.parse(1)
        except JournalError:  # say what the file is not, and nothing of what it holds
            start = None
        version = check_version(start, self.where, JOURNAL, JournalError)
        assert start is not None
        if start.get("event") != "start":
            raise self.fail(1, "the first line of a journal is its start line")
        operation = start.get("operation", "apply" if version == "1.0" else None)
        if operation == "rollback" and self.within is not None:
            raise JournalError(f"{self.within}: holds {Path(self.where).name}, the journal of a rollback; a "
                               "directory is rolled back as one run when it holds only that run's journals "
                               "(the directory `reconcile apply --runner beam` printed after \"Journal:\"); "
                               "nothing was written")
        if operation == "rollback":
            raise JournalError(f"{self.where}: this is the journal of a rollback, which is not undone by "
                               "another rollback (to write the spec's changes again, run `reconcile "
                               "apply`); nothing was written")
        if operation not in UNDOABLE:
            raise self.fail(1, f"operation {printable(repr(operation))[:40]} is not one a rollback undoes "
                               f"({' or '.join(UNDOABLE)})")
        source = start.get("source")
        if type(source) is not str or not source:
            raise self.fail(1, "the start line names no source")
        commits: list[list[tuple[Any, Document | None]]] = []  # per batch: (op, before) in order
        outcomes: dict[int, list[tuple[str, datetime | None]]] = {}  # batch → its result line's
        ended = False
        for number in range(2, len(self.lines) + 1):
            data = self.parse(number)
            if ended:
                raise self.fail(number, "a line after the journal's end line")
            event = data["event"]
            if event == "commit":
                if data.get("batch") != len(commits) + 1:
                    raise self.fail(number, f"commit line for batch {len(commits) + 1} expected")
                commits.append(self.commit(data, number))
            elif event == "result":
                batch = data.get("batch")
                if type(batch) is not int or not 1 <= batch <= len(commits) or batch in outcomes:
                    raise self.fail(number, "a result line for a batch with no commit line awaiting it")
                outcomes[batch] = self.result(data, number, commits[batch - 1])
            elif event == "not_sent":
                self.results(data, number)
            elif event == "end":
                ended = True
            # Another event is one a later minor version added: readers ignore what they do not know.
        written = [Written(batch=batch, op=op, before=before, outcome=outcome, update_time=update_time)
                   for batch, entries in enumerate(commits, start=1)
                   for (op, before), (outcome, update_time)
                   in zip(entries, outcomes.get(batch, [(IN_DOUBT, None)] * len(entries)), strict=True)]
        return PastRun(journal=self.where, sha256=self.sha256, operation=operation,
                       spec_name=self.text(start.get("spec"), 1, "spec"),
                       spec_sha256=self.text(start.get("spec_sha256"), 1, "spec_sha256"),
                       source=source, started=self.timestamp(start.get("at"), 1, "at"), ended=ended,
                       written=tuple(written),
                       plan_read_time=self.timestamp(start.get("plan_read_time"), 1, "plan_read_time"))

    def commit(self, data: dict[str, Any], number: int) -> list[tuple[Any, Document | None]]:
        raw_ops, before = data.get("ops"), data.get("before")
        if type(raw_ops) is not list or type(before) is not dict:
            raise self.fail(number, 'a commit line holds "ops" (a list) and "before" (an object)')
        entries = []
        for index, raw in enumerate(raw_ops):
            try:
                op = decode_op(raw, index)
            except ValueError as error:
                raise self.fail(number, printable(str(error))) from None
            if op.path not in before:
                raise self.fail(number, f"before holds no record of {printable(op.path)}")
            entries.append((op, self.document(before[op.path], op.path, number)))
        if set(before) != {op.path for op, _ in entries}:
            raise self.fail(number, "before records a document the commit line has no op for")
        return entries

    def document(self, raw: Any, path: str, number: int) -> Document | None:
        if raw is None:
            return None
        if type(raw) is not dict or type(raw.get("fields")) is not dict:
            raise self.fail(number, f"before.{printable(path)} must be null or an object with fields")
        collection, _, doc_id = path.partition("/")
        try:
            fields = decode_fields(raw["fields"], f"before.{path}.fields")
        except ValueError as error:
            raise self.fail(number, printable(str(error))) from None
        return Document(collection, doc_id, fields, self.timestamp(raw.get("update_time"), number,
                                                                   f"before.{path}.update_time"))

    def result(self, data: dict[str, Any], number: int,
               entries: list[tuple[Any, Document | None]]) -> list[tuple[str, datetime | None]]:
        results = self.results(data, number)
        if [r["path"] for r in results] != [op.path for op, _ in entries]:
            raise self.fail(number, f"the result line of batch {data['batch']} does not name the ops of "
                                    "its commit line, in order; the journal was edited")
        outcomes: list[tuple[str, datetime | None]] = []
        for index, result in enumerate(results):
            update_time = self.timestamp(result.get("update_time"), number, f"results[{index}].update_time")
            if result["applied"] and update_time is None:
                raise self.fail(number, f"results[{index}] is applied without the update time it left")
            outcomes.append((APPLIED, update_time) if result["applied"] else (SKIPPED, None))
        return outcomes

    def results(self, data: dict[str, Any], number: int) -> list[dict[str, Any]]:
        results = data.get("results")
        if type(results) is not list or not all(
                type(r) is dict and type(r.get("path")) is str and type(r.get("applied")) is bool
                for r in results):
            raise self.fail(number, 'a result line holds "results": objects with "path" and "applied"')
        return results

    def timestamp(self, raw: Any, number: int, what: str) -> datetime | None:
        if raw is None:
            return None
        try:
            value = decode(raw, what)
        except ValueError as error:
            raise self.fail(number, printable(str(error))) from None
        if not isinstance(value, datetime):
            raise self.fail(number, f"{what} must be a timestamp or null")
        return value

    def text(self, raw: Any, number: int, what: str) -> str:
        if raw is None:
            return ""
        if type(raw) is not str:
            raise self.fail(number, f"{what} must be a string")
        return raw


def _selection(plan: Any) -> dict[str, str] | None:
    """The --select a plan was made with; a rollback's plan has none (it undoes a whole run)."""
    selection = getattr(plan, "selection", None)
    return None if selection is None else dict(selection.pairs)
