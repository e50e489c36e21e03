"""The audit's per-week coverage (pure) and its HTML page: what it shows, what it never shows, and
that no value from the data can become markup."""

from __future__ import annotations

import re
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from builders import (
    BASE_DUE,
    CHECKINS,
    DEMO,
    DROP,
    A,
    R,
    assignment,
    checkins,
    reconcile,
    response,
    state,
)
from pages import read_page

from reconciler.audit import (
    CREATE,
    DUPLICATE,
    FINDING,
    OUT_OF_RANGE,
    PRESENT,
    SeriesCoverage,
    audit,
)
from reconciler.audit_page import SERIES_SHOWN, WEEKS_SHOWN, audit_page
from reconciler.kernel import new_week_id
from reconciler.model import CreateDocumentOp, Document
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.values import printable

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


# -- the page ------------------------------------------------------------------------------------------


def page_of(*docs: Document, show_values: bool = False) -> str:
    return audit_page(audit(checkins(), state(*docs)), show_values)


def test_the_demo_page_draws_one_row_per_series_and_one_cell_per_week(spec):
    report = audit(spec, SnapshotStore(DEMO).read(spec.collections))
    html = audit_page(report)
    heatmap, text = read_page(html)
    assert heatmap.columns == [str(week) for week in range(1, 53)]
    assert [row.header for row in heatmap.rows] == [one.label for one in report.coverage]
    for row, one in zip(heatmap.rows, report.coverage, strict=True):
        assert len(row.cells) == 52
        for week, cell in enumerate(row.cells, start=1):
            assert cell.classes == ("cell", one.state(week) or "none"), (one.label, week)
    c22 = heatmap.rows[22].cells
    assert [c.title for c in c22[:5]] == [
        "week 1, due 2025-09-02: present", "week 2, due 2025-09-09: finding (assignment.due_mismatch)",
        "week 3, due 2025-09-16: finding (assignment.due_invalid)", "week 4, due 2025-09-23: to create", ""]
    assert heatmap.rows[18].cells[1].title == "week 2: series untouched (series.base_missing)"
    assert [c.text for c in c22[:4]] == ["", "!", "!", "+"]  # a symbol per state: not colour alone
    assert ("25 series (22 usable); weeks: 29 present, 379 to create, 1 duplicate, 5 with a finding, "
            "1 out of range, 4 in a series left untouched; 21 findings.") in text
    assert html == audit_page(report)  # same report, same bytes


def test_the_page_loads_nothing_and_runs_nothing(spec):
    html = audit_page(audit(spec, SnapshotStore(DEMO).read(spec.collections)), show_values=True)
    lowered = html.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "src=", "href=", "url(",
                   "@import", "http:", "https:", "//fonts"):
        assert needle not in lowered, needle
    assert not re.search(r"<[^>]*\son\w+\s*=", lowered)  # no event handler attribute
    assert "content=\"default-src 'none'; style-src 'unsafe-inline';" in html


def test_a_large_input_draws_the_first_series_and_weeks_and_says_how_many_more():
    docs = [assignment(f"a{n:03d}", client=f"c{n:03d}", totalWeeks=150 if n == 0 else 3)
            for n in range(SERIES_SHOWN + 7)]
    heatmap, text = read_page(page_of(*docs))
    assert len(heatmap.rows) == SERIES_SHOWN and heatmap.rows[-1].header.startswith(
        f"clientId=c{SERIES_SHOWN - 1:03d} ")
    assert len(heatmap.columns) == WEEKS_SHOWN == 104
    words = " ".join(text.split())
    shown = f"Showing the first {SERIES_SHOWN} of {SERIES_SHOWN + 7} series (in series-key order)"
    assert f"{shown}, and 7 more" in words
    assert "Weeks past 104 are not drawn (46 more columns)" in words


def test_data_without_series_says_so_instead_of_an_empty_heat_map():
    heatmap, text = read_page(page_of())
    assert heatmap.rows == [] and heatmap.columns == []
    assert "No series: the data holds no recurring member." in text and "0 series (0 usable)" in text


# -- data never becomes markup, and stays private unless asked ---------------------------------------

HOSTILE = "<script>alert(1)</script></td>\"'{{ 7*7 }}&amp;\x1b[2K\r\x07\u202e\x00"
HOSTILE_ID = "<img src=x onerror=alert(1)>\"'{{ 7*7 }}\x1b\r"  # an ID cannot hold a slash
SECRET = "s3cr3t-value"


def hostile_snapshot(tmp_path, spec):
    data = SnapshotStore(DEMO).read(spec.collections)
    when = datetime(2025, 9, 1, 15, tzinfo=UTC)
    planted = [
        Document(A, HOSTILE_ID, {"clientId": HOSTILE, "formId": "f-weekly", "isRecurring": True,
                                 "recurringWeek": 1, "totalWeeks": 4, "dueDate": when,
                                 "status": f"{SECRET}-status", "coachId": f"{SECRET}-coach"}),
        Document(A, f"{HOSTILE_ID}-2", {"clientId": HOSTILE, "formId": "f-weekly", "isRecurring": True,
                                        "recurringWeek": 2, "dueDate": when, "status": HOSTILE}),
        Document(A, f"{HOSTILE_ID}-x", {"clientId": "c01", "formId": "f-weekly", "isRecurring": True,
                                        "recurringWeek": f"{SECRET}-week"}),
        Document(R, HOSTILE_ID, {"clientId": f"nobody{HOSTILE}", "formId": "f-weekly", "recurringWeek": 1,
                                 "submittedAt": when, "score": 3}),
    ]
    collections = {name: dict(docs) for name, docs in data.collections.items()}
    for doc in planted:
        collections[doc.collection][doc.id] = doc
    path = tmp_path / "hostile.json"
    path.write_bytes(snapshot_bytes(replace(data, source="", collections=collections)))
    return path


@pytest.mark.parametrize("show_values", [False, True], ids=["private", "--show-values"])
def test_no_value_from_the_data_becomes_markup(tmp_path, spec, show_values):
    out = tmp_path / "audit.html"
    run = reconcile("audit", "--spec", CHECKINS, "--source", hostile_snapshot(tmp_path, spec),
                    "--format", "html", "--out", out, *(["--show-values"] if show_values else []))
    assert run.returncode == 0, run.stderr
    html = out.read_text(encoding="utf-8")
    for raw in (HOSTILE, HOSTILE_ID, "<script", "<img", "alert(1)</", "{{", "}}", "7*7 }", "\"'",
                "\u202e"):
        assert raw not in html, raw
    assert not [char for char in html if char < " " and char != "\n"]  # no control character at all
    heatmap, text = read_page(html)
    # Shown as text, exactly: escaped for HTML, control characters spelled out
    row = next(row for row in heatmap.rows if row.header.startswith("clientId=<script>"))
    assert row.header == f"clientId={printable(HOSTILE)} formId=f-weekly"
    assert [cell.classes[1] for cell in row.cells[:5]] == [PRESENT, FINDING, CREATE, CREATE, "none"]
    assert f"check_in_assignments/{printable(HOSTILE_ID)}-2" in text
    assert f"formResponses/{printable(HOSTILE_ID)}" in text
    # every row still has one cell per column: nothing closed a cell or a row early
    assert {len(row.cells) for row in heatmap.rows} == {len(heatmap.columns)}
    if show_values:
        assert f"{SECRET}-week" in text and f"{SECRET}-status" in text and printable(HOSTILE) in text
        assert "is recurring but recurringWeek is" in text  # finding messages are shown
    else:
        assert SECRET not in html and "is recurring but" not in html
        assert "(other)" in text  # statuses the spec does not name are counted, not shown
    assert f"{SECRET}-coach" not in html  # a copied field's value is never on the page


def test_the_page_is_written_privately_and_said_where(tmp_path):
    out = tmp_path / "audit.html"
    run = reconcile("audit", "--spec", CHECKINS, "--source", DEMO, "--format", "html", "--out", out)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"Wrote the audit page to {out} (25 series); open it in a browser.\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("args, message", [
    (["--format", "html"], "error: --format html writes a page to a file: give --out FILE (see `reconcile "
                           "audit --help`)"),
    (["--out", "page.html"], "error: --out writes the HTML page: give --format html with it (text and "
                             "json print to stdout) (see `reconcile audit --help`)"),
    (["--format", "pdf", "--out", "page.html"], "error: Invalid value for '--format': 'pdf' is not one "
                                                "of 'text', 'json', 'html'. (see `reconcile audit --help`)"),
])
def test_html_without_a_file_or_a_file_without_html_is_a_usage_error(tmp_path, args, message):
    run = reconcile("audit", "--spec", CHECKINS, "--source", DEMO, *args, cwd=tmp_path)
    assert (run.returncode, run.stdout, run.stderr.strip()) == (1, "", message)
    assert list(tmp_path.iterdir()) == []
