"""The migration as the seed plan's pseudo-code reads, for comparison only (never used by the tool).

For each series, for each week 2..N: query whether the week's assignment exists, create it if not.
For each response: query its assignment, then update the assignment and the response, one
document at a time. No batching, no consistent read, no preconditions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

ASSIGNMENTS, RESPONSES = "check_in_assignments", "formResponses"


def migrate_series(client: Any, base: dict[str, Any], responses: list[tuple[str, dict[str, Any]]]) -> int:
    """One series, seed style. Returns the number of writes it made."""
    from google.cloud.firestore_v1 import FieldFilter

    writes = 0
    assignments = client.collection(ASSIGNMENTS)

    def find(week: int) -> list[Any]:
        query = (assignments.where(filter=FieldFilter("clientId", "==", base["clientId"]))
                 .where(filter=FieldFilter("formId", "==", base["formId"]))
                 .where(filter=FieldFilter("recurringWeek", "==", week)).limit(1))
        return list(query.stream())

    for week in range(2, int(base.get("totalWeeks") or 52) + 1):
        if not find(week):
            fields = {k: v for k, v in base.items() if k not in ("score", "completedAt", "createdAt")}
            fields.update(recurringWeek=week, dueDate=base["dueDate"] + timedelta(days=7 * (week - 1)),
                          status="pending", responseId=None)
            assignments.add(fields)
            writes += 1
    for response_id, response in responses:
        found = find(response["recurringWeek"])
        if found:
            found[0].reference.update({"responseId": response_id, "status": "completed",
                                       "score": response.get("score"),
                                       "completedAt": response.get("submittedAt")})
            client.collection(RESPONSES).document(response_id).update({"assignmentId": found[0].id})
            writes += 2
    return writes


def series_of(state: Any) -> list[tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]]:
    """Each series' base and responses: the seed script's ``findAllRecurringSeries()``, handed to
    the baseline for free (not timed)."""
    bases = {(d.fields["clientId"], d.fields["formId"]): d.fields
             for d in state.collections[ASSIGNMENTS].values() if d.fields.get("recurringWeek", 1) == 1}
    answers: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for doc in state.collections[RESPONSES].values():
        answers.setdefault((doc.fields["clientId"], doc.fields["formId"]), []).append((doc.id, doc.fields))
    return [(base, answers.get(key, [])) for key, base in sorted(bases.items())]
