"""What the tool leaves behind and prints: private files, and data that never drives a terminal."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import replace
from datetime import UTC, datetime

from builders import CHECKINS, DEMO, R, reconcile

from reconciler.model import Document
from reconciler.snapshot import SnapshotStore, snapshot_bytes

HOSTILE = "evil\x1b[2K\rforged line\u202e\x07`<!--|\u00ad"


def hostile_snapshot(tmp_path):
    state = SnapshotStore(DEMO).read()
    hostile = Document(R, HOSTILE, {"clientId": f"c-{HOSTILE}", "formId": "f", "recurringWeek": 1,
                                    "score": 1, "submittedAt": datetime(2025, 1, 1, tzinfo=UTC)})
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    collections[R][HOSTILE] = hostile
    path = tmp_path / "hostile.json"
    path.write_bytes(snapshot_bytes(replace(state, source="", collections=collections)))
    return path


def test_control_characters_from_data_are_escaped_in_every_text_output(tmp_path):
    source = hostile_snapshot(tmp_path)
    for args in (("plan", "--spec", CHECKINS, "--source", source),
                 ("plan", "--spec", CHECKINS, "--source", source, "--format", "markdown"),
                 ("check", "--spec", CHECKINS, "--source", source),
                 ("audit", "--spec", CHECKINS, "--source", source)):
        run = reconcile(*args)
        assert run.returncode in (0, 2), run.stderr
        for text in (run.stdout, run.stderr):
            assert not any(char in text for char in "\x1b\r\x07\u202e"), (args, text[:200])
    plan = reconcile("plan", "--spec", CHECKINS, "--source", source).stdout
    assert "evil\\x1b[2K\\x0dforged line\\u202e\\x07`<!--|\\xad" in plan  # shown, escaped, on one line


def test_an_id_cannot_break_out_of_its_markdown_code_span_or_its_table_cell(tmp_path):
    markdown = reconcile("plan", "--spec", CHECKINS, "--source", hostile_snapshot(tmp_path),
                         "--format", "markdown").stdout
    lines = markdown.splitlines()
    rows = [index for index, line in enumerate(lines) if "forged line" in line]
    span = "`` formResponses/evil\\x1b[2K\\x0dforged line\\u202e\\x07`<!--\\|\\xad ``"
    # the findings by code and the table of all findings name the document; by series, its key
    assert sum(span in lines[index] for index in rows) == 2 and len(rows) == 3
    for index in rows:
        header = next(lines[i] for i in range(index, -1, -1) if lines[i - 1] == "")
        # as many cells as the table's header: the pipe in the ID is escaped, not a cell border
        assert len(cells(lines[index])) == len(cells(header)) >= 3


def cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def test_json_reports_stay_valid_json_whatever_the_data_holds(tmp_path):
    source = hostile_snapshot(tmp_path)
    for args in (("check", "--format", "json"), ("audit", "--format", "json"), ("plan", "--format", "json")):
        run = reconcile(args[0], "--spec", CHECKINS, "--source", source, *args[1:])
        assert run.returncode in (0, 2), run.stderr
        json.loads(run.stdout)


def test_journals_plans_and_exports_are_private(tmp_path):
    source = tmp_path / "demo.json"
    source.write_bytes(DEMO.read_bytes())
    plan_file = tmp_path / "plan.json"
    assert reconcile("plan", "--spec", CHECKINS, "--source", source, "--out", plan_file).returncode == 0
    journal_dir = tmp_path / "journals" / "nested"
    applied = reconcile("apply", plan_file, "--journal-dir", journal_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [journal] = journal_dir.glob("*.jsonl")
    export = tmp_path / "export.json"
    assert reconcile("snapshot", "--source", source, "--out", export).returncode == 0
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(export.stat().st_mode) == 0o600


PRIVATE = {"clientName": "Jane Private", "coachNote": "@org/coaches </details><h1>approved</h1> struggling"}


def private_snapshot(tmp_path):
    state = SnapshotStore(DEMO).read()
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    for doc_id, doc in list(collections["check_in_assignments"].items()):
        collections["check_in_assignments"][doc_id] = replace(doc, fields={**doc.fields, **PRIVATE})
    path = tmp_path / "private.json"
    path.write_bytes(snapshot_bytes(replace(state, collections=collections)))
    return path


def test_a_pull_request_comment_shows_no_document_value_unless_asked(tmp_path):
    source = private_snapshot(tmp_path)
    comment = reconcile("plan", "--spec", CHECKINS, "--source", source, "--format", "markdown").stdout
    assert "Plan: 379 to create, 17 to link, 2 to fill" in comment
    for value in ("Jane Private", "approved", "@org", "</details><h1>", "struggling"):
        assert value not in comment, value
    scores = [f"score: (missing) → {n}" for n in (6, 7, 9)]
    assert not any(score in comment for score in scores)


def test_values_shown_on_request_are_inert_inside_code_spans(tmp_path):
    source = private_snapshot(tmp_path)
    comment = reconcile("plan", "--spec", CHECKINS, "--source", source, "--format", "markdown",
                        "--show-values").stdout
    rows = [line for line in comment.splitlines() if "approved" in line]
    assert rows, "--show-values shows the values"
    for row in rows:
        values = re.split(r"(?<!\\)\|", row.strip().strip("|"))[-1].strip()
        assert values.startswith("`") and values.endswith("`"), values[:80]  # HTML and mentions inert
        assert values.count("`") == 2 * len(re.match(r"`+", values).group())


def test_a_spec_change_comment_and_its_parts_show_no_document_value(tmp_path):
    source = private_snapshot(tmp_path)
    new = tmp_path / "new.yaml"
    new.write_text(CHECKINS.read_text().replace("every_days: 7", "every_days: 14"))
    args = ("plan", "--spec", new, "--compare-spec", CHECKINS, "--source", source, "--format", "markdown")
    comment = reconcile(*args).stdout
    parts = tmp_path / "parts"
    assert reconcile(*args, "--split", parts).returncode == 0
    texts = [comment, *(part.read_text() for part in sorted(parts.iterdir()))]
    assert "Needs a decision by a person" in comment and len(texts) >= 2
    for text in texts:
        for value in ("Jane Private", "approved", "@org", "</details><h1>", "struggling"):
            assert value not in text, value


def test_colour_follows_the_conventions(tmp_path):
    """Colour only where rich says a terminal wants it (FORCE_COLOR stands in for a terminal here);
    NO_COLOR and --no-color turn it off; a pipe never gets it; data stays escaped either way."""
    source = hostile_snapshot(tmp_path)

    def plan(*options: str, **env: str):
        run = reconcile(*options, "plan", "--spec", CHECKINS, "--source", source, "-q",
                        env={"NO_COLOR": None, "FORCE_COLOR": None, **env})
        assert run.returncode == 0, run.stderr
        return run.stdout

    coloured = plan(FORCE_COLOR="1")
    assert "\x1b[32m  + create " in coloured and "\x1b[33m  ~ fill " in coloured
    assert "evil\\x1b[2K" in coloured and "\x1b[2K" not in coloured  # data escaped, styles added
    for off in (plan(FORCE_COLOR="1", NO_COLOR="1"), plan("--no-color", FORCE_COLOR="1"), plan()):
        assert "\x1b[" not in off
