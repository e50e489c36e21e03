"""The audit's per-week coverage: each series' weeks as the plan sees them (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import (
    BASE_DUE,
    DEMO,
    DROP,
    assignment,
    checkins,
    response,
    state,
)

from reconciler.audit import (
    CREATE,
    DUPLICATE,
    FINDING,
    OUT_OF_RANGE,
    PRESENT,
    SeriesCoverage,
    audit,
)
from reconciler.kernel import new_week_id
from reconciler.model import CreateDocumentOp
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore

LABEL = "clientId=c1 formId=f1"
P, C, D, F = PRESENT, CREATE, DUPLICATE, FINDING


def coverage(**fields) -> SeriesCoverage:
    usable = fields.get("length", 3) is not None
    defaults = {"label": LABEL, "length": 3, "unusable": "", "start": BASE_DUE if usable else None,
                "weeks": (), "out_of_range": (), "untouched": (), "week_codes": {}, "codes": (),
                "responses": 0}
    return SeriesCoverage(**{**defaults, **fields})


TAKEN = new_week_id(checkins(), ("c1", "f1"), 2)


@pytest.mark.parametrize("docs, expected", [
    pytest.param([assignment("a1"), assignment("a2", 2), assignment("a3", 3)],
                 coverage(weeks=(P, P, P)), id="every week present"),
    pytest.param([assignment("a1")], coverage(weeks=(P, C, C)), id="missing weeks are to create"),
    pytest.param([assignment("a1"), assignment("a2", 2), assignment("b2", 2), response("r2", 2)],
                 coverage(weeks=(P, D, C), week_codes={2: ("series.week_duplicate",)}, responses=1,
                          codes=("response.slot_blocked", "series.week_duplicate")),
                 id="a week with two members"),
    pytest.param([assignment("a1"), assignment("a2", 2, dueDate=BASE_DUE + timedelta(days=8))],
                 coverage(weeks=(P, F, C), week_codes={2: ("assignment.due_mismatch",)},
                          codes=("assignment.due_mismatch",)), id="a member with a finding"),
    pytest.param([assignment("a1"), assignment("a9", 9), assignment("a0", 0)],
                 coverage(weeks=(P, C, C), out_of_range=(0, 9), codes=("assignment.week_out_of_range",)),
                 id="members outside 1..N"),
    pytest.param([assignment("a1"), assignment(TAKEN, DROP, isRecurring=False)],
                 coverage(weeks=(P, F, C), week_codes={2: ("assignment.id_taken",)},
                          codes=("assignment.id_taken",)), id="a missing week that cannot be created"),
    pytest.param([assignment("a1", totalWeeks="x")],
                 coverage(length=52, weeks=(F, *[C] * 51), week_codes={1: ("series.length_invalid",)},
                          codes=("series.length_invalid",)), id="the base has a finding"),
    pytest.param([assignment("a2", 2), assignment("a3", 3), response("r2", 2)],
                 coverage(length=None, unusable="series.base_missing", untouched=(2, 3), responses=1,
                          codes=("response.series_unusable", "series.base_missing")),
                 id="no base: untouched"),
    pytest.param([assignment("a1", dueDate="soon")],
                 coverage(length=None, unusable="series.base_due_invalid", untouched=(1,),
                          codes=("series.base_due_invalid",)), id="a base the cadence cannot use"),
])
def test_each_week_of_a_series_is_what_the_plan_makes_of_it(spec, docs, expected):
    report = audit(spec, state(*docs))
    assert report.coverage == (expected,)


def test_the_demo_coverage_agrees_with_the_plan_and_the_counts(spec):
    data = SnapshotStore(DEMO).read(spec.collections)
    report, plan = audit(spec, data), build_plan(spec, data)
    assert len(report.coverage) == report.series["total"] == 25
    cells = [state for one in report.coverage for state in one.weeks]
    creates = [op for op in plan.ops if isinstance(op, CreateDocumentOp)]
    assert cells.count(CREATE) == len(creates) == report.series["missing_weeks"] == 379
    assert sum(len(one.untouched) > 0 for one in report.coverage) == report.series["unusable"] == 3
    assert sum(cells.count(state) for state in (PRESENT, DUPLICATE, FINDING)) == 29 + 1 + 5
    assert {code for one in report.coverage for codes in one.week_codes.values() for code in codes} <= {
        f.code for f in plan.findings}
    assert report.details == tuple(plan.findings)
    c23 = next(one for one in report.coverage if one.label == "clientId=c23 formId=f-weekly")
    assert (c23.weeks, c23.out_of_range, c23.state(5), c23.state(6)) == ((P, C, C), (5,), OUT_OF_RANGE, "")
