"""The apply journal: one JSON-lines file per apply, for rollback and incident review.

Before each commit it records the ops about to be written with the documents' values before them;
after, each op's outcome. Every line is flushed and fsynced before the commit it describes is
sent, so a crash mid-apply leaves a journal that says what may have been written. Owns the file
layout; must not decide what to write.

    {"event": "start", "spec": ..., "source": ..., "plan_read_time": ..., "ops": N, "at": ...}
    {"event": "commit", "batch": 1, "ops": [<op as in the plan file>], "before": {path: fields | null}}
    {"event": "result", "batch": 1, "results": [{"path", "applied", "reason", "update_time"}]}
    {"event": "end", "applied": N, "skipped": N, "at": ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import SourceError
from reconciler.model import Op, OpResult, Plan, State
from reconciler.plan import op_to_data
from reconciler.values import encode, encode_fields

DEFAULT_DIRECTORY = Path(".reconcile") / "journal"


class Journal:
    def __init__(self, directory: Path, plan: Plan, before: State, now: datetime) -> None:
        self.before = before
        self.batches = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
            self.path = directory / f"{stamp}-{plan.spec_name}.jsonl"
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as error:
            raise SourceError(f"{directory}: cannot write the apply journal ({error.strerror}); "
                              "pass --journal-dir with a writable directory") from error
        self._record({"event": "start", "spec": plan.spec_name, "spec_sha256": plan.spec_sha256,
                      "source": plan.source, "plan_read_time": encode(plan.read_time),
                      "ops": len(plan.ops), "at": encode(now)})

    def before_commit(self, ops: Sequence[Op]) -> int:
        self.batches += 1
        before: dict[str, Any] = {}
        for op in ops:
            doc = self.before.find(op.path)
            before[op.path] = None if doc is None else {
                "update_time": encode(doc.update_time), "fields": encode_fields(doc.fields)}
        self._record({"event": "commit", "batch": self.batches, "ops": [op_to_data(op) for op in ops],
                      "before": before})
        return self.batches

    def after_commit(self, batch: int, results: Sequence[OpResult]) -> None:
        self._record({"event": "result", "batch": batch, "results": [
            {"path": r.op.path, "applied": r.applied, "reason": r.reason,
             "update_time": encode(r.written_at)} for r in results]})

    def close(self, results: Sequence[OpResult], now: datetime) -> None:
        self._record({"event": "end", "applied": sum(r.applied for r in results),
                      "skipped": sum(not r.applied for r in results), "at": encode(now)})
        self._file.close()

    def _record(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
