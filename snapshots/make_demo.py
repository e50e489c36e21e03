"""Write the shipped demo snapshots, deterministically: ``python snapshots/make_demo.py``.

``demo.json``: a coaching app's check-in data about the size of the original migration (26 clients,
~36 responses), covering the seed plan's cases 1-4 and every finding code of specs/checkins.yaml.
``sessions-demo.json``: a small database for specs/sessions.yaml (another domain, 14-day cadence).

Same seed, same bytes: the files are regenerated only on purpose, and a test checks they are current.
``python snapshots/make_demo.py DIR`` writes them to DIR instead.
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.kernel import new_week_id  # noqa: E402
from reconciler.model import Document, State  # noqa: E402
from reconciler.snapshot import dumps_snapshot  # noqa: E402
from reconciler.spec import load_spec  # noqa: E402
from reconciler.values import GeoPoint, Reference  # noqa: E402

READ_TIME = datetime(2025, 11, 3, 8, 0, 0, 123456, tzinfo=UTC)
WEEK = timedelta(days=7)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Builder:
    """Collects documents with Firestore-like random IDs and increasing update times."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.collections: dict[str, dict[str, Document]] = {}
        self.clock = datetime(2025, 8, 1, 12, 0, 0, tzinfo=UTC)

    def auto_id(self) -> str:
        return "".join(self.rng.choice(ALPHABET) for _ in range(20))

    def add(self, collection: str, fields: dict[str, Any], doc_id: str | None = None) -> str:
        doc_id = doc_id or self.auto_id()
        self.clock += timedelta(minutes=17, microseconds=self.rng.randrange(1_000_000))
        self.collections.setdefault(collection, {})[doc_id] = Document(collection, doc_id, fields,
                                                                       self.clock)
        return doc_id

    def state(self, source: str) -> State:
        return State(source=source, read_time=READ_TIME, collections=self.collections)


def checkins() -> State:
    b = Builder(seed=20251103)
    forms = {"f-weekly": "Weekly check-in", "f-nutrition": "Nutrition log", "f-mood": "Mood check"}
    for form_id, title in forms.items():
        b.add("forms", {"title": title, "questions": ["energy", "sleep", "notes"],
                        "createdAt": datetime(2025, 1, 6, 9, tzinfo=UTC)}, form_id)
    clients = [f"c{n:02d}" for n in range(1, 27)]
    for n, client in enumerate(clients, start=1):
        b.add("clients", {"name": f"Client {n}", "coachId": f"coach-{1 + n % 3}",
                          "home": GeoPoint(51.5 + n / 100, -0.12 - n / 100),
                          "avatar": bytes([n, 255 - n, 0, 7]),
                          "joinedAt": datetime(2025, 7, 1, 9, tzinfo=UTC) + timedelta(days=n)}, client)

    def due(n: int, week: int) -> datetime:
        return datetime(2025, 9, 1, 9, 0, 0, 250000, tzinfo=UTC) + timedelta(hours=n) + (week - 1) * WEEK

    def assignment(client: str, form: str, week: Any, dued: Any, **extra: Any) -> str:
        fields: dict[str, Any] = {
            "clientId": client, "formId": form, "isRecurring": True, "recurringWeek": week,
            "totalWeeks": 12, "dueDate": dued, "status": "pending", "responseId": None,
            "coachId": f"coach-{1 + len(str(client)) % 3}", "form": Reference(f"forms/{form}"),
            "reminders": {"email": True, "push": False, "hoursBefore": [24, 2]},
            "createdAt": datetime(2025, 8, 25, 10, 30, tzinfo=UTC),
        }
        fields.update(extra)
        return b.add("check_in_assignments", {k: v for k, v in fields.items() if v is not ...})

    def response(client: Any, form: Any, week: Any, submitted: Any, **extra: Any) -> str:
        fields: dict[str, Any] = {
            "clientId": client, "formId": form, "recurringWeek": week,
            "score": b.rng.choice([6, 7, 8, 9, 7.5, 8.25]), "submittedAt": submitted,
            "responses": {"energy": b.rng.randrange(1, 6), "sleep": b.rng.randrange(1, 6),
                          "notes": b.rng.choice(["good week", "tired", "", "travelled"])},
        }
        fields.update(extra)
        return b.add("formResponses", {k: v for k, v in fields.items() if v is not ...})

    def submitted(n: int, week: int, hours: int = 30) -> datetime:
        return due(n, week) - timedelta(hours=hours, microseconds=n * 1000 + week)

    # c01-c08: ordinary series, 12 weeks, weeks 1-2 exist; week 1 fully linked, week 2 answered
    # but not linked yet (case 3), week 3 answered with no assignment (case 1).
    for n in range(1, 9):
        c = clients[n - 1]
        base = assignment(c, "f-weekly", 1, due(n, 1), status="completed")
        r1 = response(c, "f-weekly", 1, submitted(n, 1), assignmentId=base)
        b.collections["check_in_assignments"][base].fields.update(
            responseId=r1, score=b.collections["formResponses"][r1].fields["score"],
            completedAt=submitted(n, 1))
        assignment(c, "f-weekly", 2, due(n, 2), status="overdue" if n % 2 else "pending")
        response(c, "f-weekly", 2, submitted(n, 2), assignmentId=None if n % 3 else "")
        if n <= 4:
            response(c, "f-weekly", 3, submitted(n, 3), **({"assignmentId": ...} if n % 2 else {}))
    # c09-c10: half links. c09: the assignment names its response, the response's side is empty.
    # c10: the response names its assignment, the assignment's side is empty.
    base = assignment("c09", "f-weekly", 1, due(9, 1))
    r = response("c09", "f-weekly", 1, submitted(9, 1), assignmentId=None)
    b.collections["check_in_assignments"][base].fields.update(responseId=r, status="completed")
    base = assignment("c10", "f-weekly", 1, due(10, 1), score=None)
    response("c10", "f-weekly", 1, submitted(10, 1), assignmentId=base)
    # c11-c14: long series with the default length (no totalWeeks), a nutrition series for c11.
    for n in range(11, 15):
        assignment(clients[n - 1], "f-weekly", 1, due(n, 1), totalWeeks=...)
    assignment("c11", "f-nutrition", 1, due(11, 1), totalWeeks=6, isRecurring=...)
    response("c11", "f-nutrition", 4, submitted(11, 4), score=None)
    # c15: case 2, a base without recurringWeek, and its week-1 response.
    assignment("c15", "f-weekly", ..., due(15, 1), totalWeeks=8)
    response("c15", "f-weekly", 1, submitted(15, 1))
    # c16: case 4, several responses for week 2; the latest wins, ties on time go to the larger ID.
    assignment("c16", "f-weekly", 1, due(16, 1), totalWeeks=6)
    response("c16", "f-weekly", 2, submitted(16, 2, hours=40))
    response("c16", "f-weekly", 2, submitted(16, 2, hours=5))
    response("c16", "f-weekly", 2, "yesterday")
    # c17: a totalWeeks that is not a positive integer: the default applies, reported.
    assignment("c17", "f-weekly", 1, due(17, 1), totalWeeks="12")
    # c18-c20: unusable series: no base; two bases; a base with a date that is not a timestamp.
    assignment("c18", "f-weekly", 2, due(18, 2))
    assignment("c18", "f-weekly", 3, due(18, 3))
    response("c18", "f-weekly", 2, submitted(18, 2))
    assignment("c19", "f-weekly", 1, due(19, 1))
    assignment("c19", "f-weekly", ..., due(19, 1))
    assignment("c20", "f-weekly", 1, "2025-09-01")
    # c21: week 3 has two members: reported, no link into it.
    assignment("c21", "f-weekly", 1, due(21, 1), totalWeeks=4)
    assignment("c21", "f-weekly", 3, due(21, 3))
    assignment("c21", "f-weekly", 3, due(21, 3), coachId="coach-9")
    response("c21", "f-weekly", 3, submitted(21, 3))
    # c22: members with a wrong date and a date that is not a timestamp; still linkable.
    assignment("c22", "f-weekly", 1, due(22, 1), totalWeeks=4)
    assignment("c22", "f-weekly", 2, due(22, 2) + timedelta(days=1))
    assignment("c22", "f-weekly", 3, None)
    response("c22", "f-weekly", 3, submitted(22, 3))
    # c23: a member and a response beyond the series' length.
    assignment("c23", "f-weekly", 1, due(23, 1), totalWeeks=3)
    assignment("c23", "f-weekly", 5, due(23, 5))
    response("c23", "f-weekly", 7, submitted(23, 7))
    # c24: a response naming an assignment that is not its slot's; an assignment naming a response
    # that is not of its slot.
    assignment("c24", "f-weekly", 1, due(24, 1), totalWeeks=3)
    assignment("c24", "f-weekly", 2, due(24, 2), responseId="deleted-response-1")
    response("c24", "f-weekly", 3, submitted(24, 3), assignmentId="old-assignment-7")
    # c25: a one-off (non-recurring) assignment and its response; malformed recurring assignments.
    assignment("c25", "f-mood", ..., due(25, 1), isRecurring=False, totalWeeks=...)
    response("c25", "f-mood", ..., submitted(25, 1))
    assignment("c25", "f-weekly", "2", due(25, 2))
    assignment(None, "f-weekly", 1, due(25, 1))
    # c26: responses that cannot be placed: no formId; a form with no series.
    response("c26", ..., 1, submitted(26, 1))
    response("c26", "f-nutrition", 1, submitted(26, 1))
    # A one-off assignment whose ID happens to be the one a missing week would get.
    spec = load_spec(ROOT / "specs" / "checkins.yaml")
    taken = new_week_id(spec, ("c14", "f-weekly"), 5)
    b.add("check_in_assignments", {"clientId": "c14", "formId": "f-weekly", "isRecurring": False,
                                   "dueDate": due(14, 5), "status": "pending", "note": "imported"},
          taken)
    return b.state("snapshots/demo.json")


def sessions() -> State:
    """Recurring coaching sessions every 14 days, and session notes, in another vocabulary."""
    b = Builder(seed=14)
    start = datetime(2025, 10, 6, 15, 0, tzinfo=UTC)
    pairs = [("coach-a", "p1"), ("coach-a", "p2"), ("coach-b", "p3"), ("coach-b", "p4")]
    for n, (coach, person) in enumerate(pairs):
        b.add("people", {"displayName": f"Person {person}", "coach": coach}, person)
        first = b.add("coaching_sessions", {
            "coach": coach, "person": person, "sessionNumber": 1, "inSeries": True,
            "sessionCount": 4 + n, "startsAt": start + timedelta(days=n), "state": "scheduled",
            "noteRef": None, "room": f"room-{n}", "rating": None})
        if n == 1:
            b.add("coaching_sessions", {
                "coach": coach, "person": person, "sessionNumber": 2, "inSeries": True,
                "startsAt": start + timedelta(days=n + 14), "state": "missed", "noteRef": None})
        b.add("session_notes", {"coachName": coach, "personId": person, "number": 1,
                                "writtenAt": start + timedelta(days=n, hours=2),
                                "rating": 4 + n % 2, "text": "Goals agreed.",
                                **({"session": first} if n == 0 else {})})
        b.add("session_notes", {"coachName": coach, "personId": person, "number": 3,
                                "writtenAt": start + timedelta(days=n + 28, hours=2),
                                "rating": 5, "text": "Progress."})
    b.add("session_notes", {"coachName": "coach-z", "personId": "p9", "number": 1,
                            "writtenAt": start, "text": "Unknown series."})
    return b.state("snapshots/sessions-demo.json")


def main(out_dir: Path = ROOT / "snapshots") -> None:
    for name, state in (("demo.json", checkins()), ("sessions-demo.json", sessions())):
        (out_dir / name).write_text(dumps_snapshot(state), "utf-8")
        print(f"wrote {out_dir / name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Write the shipped demo snapshots (demo.json, sessions-demo.json), the same bytes "
                    "every time. They are regenerated only on purpose; a test checks they are current.")
    parser.add_argument("directory", nargs="?", type=Path, default=ROOT / "snapshots",
                        help="where to write them (default: the repository's snapshots/)")
    directory = parser.parse_args().directory
    if not directory.is_dir():
        parser.error(f"{directory} is not a directory")
    main(directory)
