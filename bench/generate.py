"""A seeded synthetic check-in database at any scale, for benchmarks.

``generate(Shape(...))`` returns a State shaped like the shipped spec's data: ``clients`` ×
``forms_per_client`` recurring series of ``weeks`` weeks, each week present with probability
``present``, ``responses_per_series`` responses per series, and each kind of mess at its own rate.
The same shape and seed give the same documents.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.model import Document, State

ASSIGNMENTS, RESPONSES = "check_in_assignments", "formResponses"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
START = datetime(2025, 1, 6, 9, 0, 0, 250000, tzinfo=UTC)
UPDATED = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    clients: int
    forms_per_client: int = 1
    weeks: int = 52
    present: float = 0.5  # share of weeks 2..N that already exist
    responses_per_series: float = 5.0
    seed: int = 7
    # anomaly rates, per series unless named otherwise
    base_missing: float = 0.01
    base_without_week: float = 0.03
    week_duplicate: float = 0.01
    due_mismatch: float = 0.02  # per existing member
    linked: float = 0.5  # per response: already linked both ways when its week exists
    response_duplicate: float = 0.03  # per response: a second response for the same week
    response_conflict: float = 0.01  # per response: names an assignment that is not its slot's

    @property
    def series(self) -> int:
        return self.clients * self.forms_per_client


def generate(shape: Shape) -> State:
    rng = random.Random(shape.seed)
    assignments: dict[str, Document] = {}
    responses: dict[str, Document] = {}

    def new_id() -> str:
        return "".join(rng.choices(ALPHABET, k=20))

    for client_number in range(shape.clients):
        client = f"client-{client_number:07d}"
        for form_number in range(shape.forms_per_client):
            form = f"form-{form_number:02d}"
            due = START + timedelta(minutes=rng.randrange(0, 60 * 24 * 28))
            base = {"clientId": client, "formId": form, "isRecurring": True, "recurringWeek": 1,
                    "totalWeeks": shape.weeks, "dueDate": due, "status": "pending", "responseId": None,
                    "coachId": f"coach-{client_number % 97}", "createdAt": UPDATED,
                    "reminders": {"email": True, "hoursBefore": [24, 2]}}
            if rng.random() < shape.base_without_week:
                del base["recurringWeek"]
            weeks: dict[int, str] = {}
            if rng.random() >= shape.base_missing:
                weeks[1] = new_id()
                assignments[weeks[1]] = Document(ASSIGNMENTS, weeks[1], base, UPDATED)
            for week in range(2, shape.weeks + 1):
                if rng.random() < shape.present:
                    fields = dict(base, recurringWeek=week, dueDate=due + timedelta(days=7 * (week - 1)))
                    fields.pop("createdAt")
                    if rng.random() < shape.due_mismatch:
                        fields["dueDate"] += timedelta(days=1)
                    weeks[week] = new_id()
                    assignments[weeks[week]] = Document(ASSIGNMENTS, weeks[week], fields, UPDATED)
                    if rng.random() < shape.week_duplicate / shape.weeks:
                        twin = new_id()
                        assignments[twin] = Document(ASSIGNMENTS, twin, dict(fields), UPDATED)
            count = int(shape.responses_per_series) + (rng.random() < shape.responses_per_series % 1)
            for week in rng.sample(range(1, shape.weeks + 1), min(count, shape.weeks)):
                for _ in range(2 if rng.random() < shape.response_duplicate else 1):
                    response_id = new_id()
                    fields = {"clientId": client, "formId": form, "recurringWeek": week,
                              "score": rng.choice([5, 6, 7, 8, 9, 7.5]),
                              "submittedAt": due + timedelta(days=7 * (week - 1),
                                                             hours=-rng.randrange(1, 48)),
                              "responses": {"energy": rng.randrange(1, 6), "notes": "ok"}}
                    target = weeks.get(week)
                    if target and rng.random() < shape.linked:
                        member = assignments[target]
                        if member.fields.get("responseId") is None:
                            fields["assignmentId"] = target
                            member.fields.update(responseId=response_id, status="completed",
                                                 score=fields["score"], completedAt=fields["submittedAt"])
                    elif rng.random() < shape.response_conflict:
                        fields["assignmentId"] = "assignment-from-elsewhere"
                    responses[response_id] = Document(RESPONSES, response_id, fields, UPDATED)
    return State(source=f"bench:{shape.clients}", read_time=UPDATED + timedelta(days=1),
                 collections={ASSIGNMENTS: assignments, RESPONSES: responses})
