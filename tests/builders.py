"""Small hand-built states for the pure stages: documents with sensible defaults, by keyword."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.kernel import new_week_id
from reconciler.model import Document, Spec, State
from reconciler.plan import build_plan
from reconciler.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
CHECKINS = ROOT / "specs" / "checkins.yaml"
SESSIONS = ROOT / "specs" / "sessions.yaml"
DEMO = ROOT / "snapshots" / "demo.json"
SESSIONS_DEMO = ROOT / "snapshots" / "sessions-demo.json"

DROP: Any = object()  # a field value meaning "the document has no such field"
READ = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
UPDATED = datetime(2025, 2, 1, 8, 30, 0, 42, tzinfo=UTC)
BASE_DUE = datetime(2025, 1, 6, 9, 0, 0, 123456, tzinfo=UTC)
A = "check_in_assignments"
R = "formResponses"


def checkins() -> Spec:
    return load_spec(CHECKINS)


def cadence_text(step: str) -> str:
    """The shipped spec's text with its cadence step (``every_days: 7``) replaced by ``step``, the
    rule's lines (``every: {weeks: 1}\ntimezone: Europe/London``)."""
    text = CHECKINS.read_text()
    assert "    every_days: 7\n" in text
    return text.replace("    every_days: 7\n", "".join(f"    {line}\n" for line in step.splitlines()))


def with_cadence(step: str) -> Spec:
    """The shipped spec with another cadence step (see ``cadence_text``)."""
    return parse_spec(cadence_text(step).encode("utf-8"), "calendar.yaml")


def due(week: int, start: datetime = BASE_DUE) -> datetime:
    return start + timedelta(days=7 * (week - 1))


def _fields(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **overrides}
    return {name: value for name, value in merged.items() if value is not DROP}


def assignment(doc_id: str, week: Any = 1, client: Any = "c1", form: Any = "f1", **fields: Any) -> Document:
    defaults = {"clientId": client, "formId": form, "isRecurring": True, "recurringWeek": week,
                "totalWeeks": 3, "dueDate": due(week) if isinstance(week, int) else BASE_DUE,
                "status": "pending", "responseId": None}
    return Document(A, doc_id, _fields(defaults, fields), UPDATED)


def response(doc_id: str, week: Any = 1, client: Any = "c1", form: Any = "f1", **fields: Any) -> Document:
    defaults = {"clientId": client, "formId": form, "recurringWeek": week, "score": 8,
                "submittedAt": due(week if isinstance(week, int) else 1) - timedelta(hours=3)}
    return Document(R, doc_id, _fields(defaults, fields), UPDATED)


def state(*docs: Document, source: str = "test") -> State:
    collections: dict[str, dict[str, Document]] = {A: {}, R: {}}
    for doc in docs:
        collections.setdefault(doc.collection, {})[doc.id] = doc
    return State(source=source, read_time=READ, collections=collections)


def plan_of(spec: Spec, *docs: Document):
    return build_plan(spec, state(*docs))


def week_path(spec: Spec, week: int, key: tuple[Any, ...] = ("c1", "f1")) -> str:
    return f"{A}/{new_week_id(spec, key, week)}"


WORKDIR = Path(tempfile.mkdtemp(prefix="reconcile-tests-"))  # journals land here, not in the repository


def reconcile(*args: Any, cwd: Path = WORKDIR, stdin: str | None = None,
              env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run the real command in a fresh process, as a user would."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment = {name: value for name, value in environment.items() if value is not None}
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], cwd=cwd,
                          env=environment, input=stdin, capture_output=True, text=True, timeout=300)
