"""The drift report of `reconcile check`: classes that point at the app's likely fault, a baseline
so that only new findings alert, and Prometheus metrics."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import timedelta

import pytest
from builders import CHECKINS, DEMO, A, R, assignment, checkins, due, plan_of, reconcile, response
from prometheus_client.parser import text_string_to_metric_families

from reconciler.drift import CLASSES, drift, drift_data, select_text
from reconciler.model import Document
from reconciler.plan import build_plan
from reconciler.snapshot import SnapshotStore, snapshot_bytes
from reconciler.spec import load_spec


def classes(*docs: Document) -> dict[str, int]:
    return {name: len(members) for name, members in drift(plan_of(checkins(), *docs)).members.items()}


def only(**counts: int) -> dict[str, int]:
    return {c.name: counts.get(c.name, 0) for c in CLASSES}


def test_each_kind_of_drift_lands_in_its_own_class():
    spec = checkins()
    complete = [assignment(f"a{w}", w, dueDate=due(w), totalWeeks=3) for w in (1, 2, 3)]
    assert classes(*complete) == only()
    assert classes(*complete[:2]) == only(weeks_missing=1)  # the app did not pre-create week 3
    submitted = due(2) - timedelta(hours=1)
    assert classes(*complete, response("r2", 2, submittedAt=submitted)) == only(responses_unlinked=1)
    half = [*complete[:1], replace(complete[1], fields={**complete[1].fields, "responseId": "r2",
                                                         "status": "completed"}), complete[2]]
    assert classes(*half, response("r2", 2, submittedAt=submitted)) == only(half_links=1)
    base = assignment("a1", None, isRecurring=True, totalWeeks=3)
    assert classes(base, *complete[1:]) == only(fills_pending=1)
    assert spec.series.fill_base_week


def test_on_the_demo_the_classes_add_up_to_the_plans_summary():
    plan = build_plan(load_spec(CHECKINS), SnapshotStore(DEMO).read())
    counts = {name: len(members) for name, members in drift(plan).members.items()}
    s = plan.summary
    assert counts["weeks_missing"] == s.create and counts["responses_unlinked"] == s.link
    assert counts["half_links"] + counts["fills_pending"] == s.fill
    assert counts["new_findings"] == 0  # no baseline: findings are not drift


def converged_copy(tmp_path):
    """The demo after an apply: in the shape the spec declares, its findings left as they are."""
    source = tmp_path / "data.json"
    source.write_bytes(DEMO.read_bytes())
    applied = reconcile("apply", "--spec", CHECKINS, "--source", source, "--auto-approve", "-q",
                        "--journal-dir", tmp_path / "journal")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return source


def add_document(source, doc: Document) -> None:
    state = SnapshotStore(source).read()
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    collections[doc.collection][doc.id] = doc
    source.write_bytes(snapshot_bytes(replace(state, collections=collections)))


def test_a_baseline_turns_only_new_findings_into_drift(tmp_path):
    source = converged_copy(tmp_path)
    first = reconcile("check", "--spec", CHECKINS, "--source", source, "--format", "json", "-q")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["format"] == "reconcile-drift" and report["converged"] is True
    assert report["findings"]["total"] == len(report["findings"]["all"]) > 0
    baseline = tmp_path / "last.json"
    baseline.write_text(first.stdout)
    assert len(first.stdout) < 20_000  # a report, not the plan (the plan of this data is 300 KB)

    again = reconcile("check", "--spec", CHECKINS, "--source", source, "--format", "json", "-q",
                      "--baseline", baseline)
    assert again.returncode == 0 and json.loads(again.stdout)["baseline"]["findings_new"] == 0

    add_document(source, Document(R, "mess", {"clientId": "c01", "formId": "f-weekly", "recurringWeek": "2"}))
    without = reconcile("check", "--spec", CHECKINS, "--source", source, "-q")
    assert without.returncode == 0 and "No drift: converged." in without.stdout  # findings alone
    new = reconcile("check", "--spec", CHECKINS, "--source", source, "--format", "json", "-q",
                    "--baseline", baseline)
    assert new.returncode == 2, new.stderr
    data = json.loads(new.stdout)
    assert data["converged"] is False and data["classes"]["new_findings"]["count"] == 1
    assert data["classes"]["new_findings"]["examples"] == [
        {"path": f"{R}/mess", "series": "", "select": None, "command": None}]
    assert data["baseline"] == {"path": str(baseline), "findings_new": 1, "findings_gone": 0}


def test_metrics_say_what_the_report_says_and_hold_no_data_value(tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(DEMO.read_bytes())
    metrics = tmp_path / "reconcile.prom"
    run = reconcile("check", "--spec", CHECKINS, "--source", source, "--format", "json", "-q",
                    "--metrics", metrics)
    assert run.returncode == 2, run.stderr
    report = json.loads(run.stdout)
    text = metrics.read_text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("reconcile_converged", (("spec", "checkins"),))] == 0
    assert samples[("reconcile_writes_needed", (("spec", "checkins"),))] == report["writes_needed"]
    for name, data in report["classes"].items():
        assert samples[("reconcile_drift", (("class", name), ("spec", "checkins")))] == data["count"]
        assert samples[("reconcile_drift_series", (("class", name), ("spec", "checkins")))] == data["series"]
    for code, count in report["findings"]["by_code"].items():
        assert samples[("reconcile_findings", (("code", code), ("spec", "checkins")))] == count
    assert "c01" not in text and "clientId" not in text and "check_in_assignments/" not in text
    assert stat.S_IMODE(metrics.stat().st_mode) & 0o044  # readable by a node exporter's user


@pytest.mark.parametrize(("content", "words"), [
    (None, "baseline not found"),
    ("{oops", "the baseline is not valid JSON"),
    (DEMO.read_text(), "not a drift report"),
    ('{"format": "reconcile-drift", "format_version": "1.0", "findings": {"all": [1]}}',
     "findings.all must be a list"),
])
def test_a_bad_baseline_is_one_sentence_and_nothing_is_written(tmp_path, content, words):
    baseline = tmp_path / "last.json"
    if content is not None:
        baseline.write_text(content)
    metrics = tmp_path / "m.prom"
    run = reconcile("check", "--spec", CHECKINS, "--source", DEMO, "--baseline", baseline,
                    "--metrics", metrics)
    assert run.returncode == 1 and words in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not metrics.exists()


def test_the_report_is_the_same_from_the_cli_and_the_library(tmp_path):
    run = reconcile("check", "--spec", CHECKINS, "--source", DEMO, "--format", "json", "-q")
    spec = load_spec(CHECKINS)
    plan = build_plan(spec, SnapshotStore(DEMO).read())
    expected = drift_data(drift(plan, key_fields=spec.series.key))
    assert json.loads(run.stdout) == json.loads(json.dumps(expected))
    examples = expected["classes"]["weeks_missing"]["examples"]
    assert examples and {example["path"].split("/")[0] for example in examples} == {A}


@pytest.mark.parametrize(("label", "select"), [
    ("clientId=c01 formId=f-weekly", "clientId=c01,formId=f-weekly"),
    ("clientId=7 formId=f1", "clientId=7,formId=f1"),
    ("clientId=a b formId=f1", "clientId=a b,formId=f1"),
    ("clientId=a,b formId=f1", None),  # --select cannot take a comma
    ("clientId=x formId=y formId=f1", None),  # which " formId=" starts the field is not known
    ("formId=f1 clientId=c01", None),
    ("", None),
])
def test_a_series_label_is_read_back_as_its_select_only_when_unambiguous(label, select):
    assert select_text(label, ("clientId", "formId")) == select
