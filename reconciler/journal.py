"""The journal: one JSON-lines file per run that writes, for rollback and incident review.

Before each commit it records the ops about to be written with the documents' values before them;
after, each op's outcome. Every line is flushed and fsynced before the commit it describes is
sent, so a crash mid-apply leaves a journal that says what may have been written. The closing
line is written on every way out of an apply the process can see (success, an error, a lost
server, an interrupt) and counts only what the result lines say. The file is created 0600 in a
0700 directory: it holds the data's values. Owns the file layout; must not decide what to write.

    {"format": "reconcile-journal", "format_version": "1.1", "event": "start",
     "operation": "apply", "spec": ..., "source": ..., "plan_read_time": ..., "ops": N, "at": ...}
    {"event": "not_sent", "results": [{"path", "applied": false, "reason", "update_time": null}]}
    {"event": "commit", "batch": 1, "ops": [<op as in the plan file>], "before": {path: fields | null}}
    {"event": "result", "batch": 1, "results": [{"path", "applied", "reason", "update_time"}]}
    {"event": "end", "outcome": "completed" | "failed", "error": str | null,
     "applied": N, "skipped": N, "in_doubt": N, "at": ...}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import SourceError
from reconciler.files import PRIVATE_FILE, make_private_directory
from reconciler.formats import JOURNAL
from reconciler.model import Op, OpResult, Plan, State
from reconciler.plan import op_to_data
from reconciler.values import encode, encode_fields

DEFAULT_DIRECTORY = Path(".reconcile") / "journal"


class Journal:
    def __init__(self, directory: Path, plan: Plan, before: State, now: datetime,
                 operation: str = "apply") -> None:
        self.before = before
        self.batches = 0
        self.applied = self.skipped = 0
        self.open_batches: dict[int, int] = {}  # batch → ops sent, whose outcome is not yet known
        try:
            make_private_directory(directory)
            stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.spec_name)[:60] or "spec"
            self.path = directory / f"{stamp}-{name}.jsonl"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                         PRIVATE_FILE)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as error:
            raise SourceError(f"{directory}: cannot write the apply journal ({error.strerror}); "
                              "pass --journal-dir with a writable directory") from error
        self._record({**JOURNAL.header(), "event": "start", "operation": operation, "spec": plan.spec_name,
                      "spec_sha256": plan.spec_sha256,
                      "source": plan.source, "plan_read_time": encode(plan.read_time),
                      "selection": None if plan.selection is None else dict(plan.selection.pairs),
                      "ops": len(plan.ops), "at": encode(now)})

    def not_sent(self, results: Sequence[OpResult]) -> None:
        """Ops skipped without being sent: stale since the plan, or beyond what Firestore accepts."""
        self.skipped += len(results)
        self._record({"event": "not_sent", "results": _results(results)})

    def before_commit(self, ops: Sequence[Op]) -> int:
        self.batches += 1
        before: dict[str, Any] = {}
        for op in ops:
            doc = self.before.find(op.path)
            before[op.path] = None if doc is None else {
                "update_time": encode(doc.update_time), "fields": encode_fields(doc.fields)}
        self._record({"event": "commit", "batch": self.batches, "ops": [op_to_data(op) for op in ops],
                      "before": before})
        self.open_batches[self.batches] = len(ops)
        return self.batches

    def after_commit(self, batch: int, results: Sequence[OpResult]) -> None:
        self._record({"event": "result", "batch": batch, "results": _results(results)})
        self.open_batches.pop(batch, None)
        self.applied += sum(r.applied for r in results)
        self.skipped += sum(not r.applied for r in results)

    @property
    def in_doubt(self) -> int:
        """Writes sent in a commit whose outcome never came back: applied or not, nobody knows."""
        return sum(self.open_batches.values())

    def close(self, now: datetime, error: BaseException | None = None) -> None:
        """The closing line, true to the result lines whatever ended the apply."""
        self._record({"event": "end", "outcome": "completed" if error is None else "failed",
                      "error": None if error is None else (str(error) or type(error).__name__),
                      "applied": self.applied, "skipped": self.skipped, "in_doubt": self.in_doubt,
                      "at": encode(now)})
        self._file.close()

    def _record(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


def _results(results: Sequence[OpResult]) -> list[dict[str, Any]]:
    return [{"path": r.op.path, "applied": r.applied, "reason": r.reason,
             "update_time": encode(r.written_at)} for r in results]
