"""The plan file: deterministic, round-trips exactly, refuses unknown major versions; golden demo plans."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import orjson
import pytest
from builders import CHECKINS, DEMO, ROOT

from reconciler import plan as plan_module
from reconciler.errors import PlanFileError
from reconciler.model import CreateDocumentOp, State
from reconciler.plan import build_plan, dumps_plan, loads_plan, plan_chunks, plan_to_data
from reconciler.render import render_plan
from reconciler.snapshot import SnapshotStore
from reconciler.spec import load_spec

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def demo_plan():
    # Plans name their spec and source as given: relative to the repository, as in the README.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        spec = load_spec(CHECKINS.relative_to(ROOT))
        return build_plan(spec, SnapshotStore(DEMO.relative_to(ROOT)).read(spec.collections))


@pytest.fixture(autouse=True)
def _run_from_the_repository(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_the_plan_file_round_trips_exactly(demo_plan):
    text = dumps_plan(demo_plan)
    assert loads_plan(text, "p.json") == demo_plan
    assert dumps_plan(loads_plan(text, "p.json")) == text


@pytest.mark.parametrize("chunk", [1, 2, 5, 4096])
@pytest.mark.parametrize("part", ["whole", "no ops", "no findings", "neither"])
def test_the_plan_file_written_in_pieces_is_the_whole_plan_encoded_at_once(demo_plan, monkeypatch,
                                                                           chunk, part):
    plan = {"whole": demo_plan, "no ops": replace(demo_plan, ops=()),
            "no findings": replace(demo_plan, findings=()),
            "neither": replace(demo_plan, ops=(), findings=())}[part]
    monkeypatch.setattr(plan_module, "_CHUNK", chunk)
    whole = orjson.dumps(plan_to_data(plan), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
    pieces = list(plan_chunks(plan))
    assert b"".join(pieces) == whole
    if chunk == 1 and plan.ops:  # one piece per op at least: never the whole list at once
        assert len(pieces) > len(plan.ops)


def test_the_same_inputs_give_byte_identical_plans_whatever_the_read_order(demo_plan):
    spec = load_spec("specs/checkins.yaml")
    state = SnapshotStore("snapshots/demo.json").read(spec.collections)
    rng = random.Random(7)
    shuffled = {}
    for name, docs in state.collections.items():
        items = list(docs.items())
        rng.shuffle(items)
        shuffled[name] = dict(items)
    again = build_plan(spec, State(source=state.source, read_time=state.read_time, collections=shuffled))
    assert dumps_plan(again) == dumps_plan(demo_plan)


def test_the_plan_file_says_what_it_holds(demo_plan):
    data = json.loads(dumps_plan(demo_plan))
    assert data["format"] == "reconcile-plan" and data["format_version"] == "1.2"
    assert data["spec"]["sha256"] == load_spec("specs/checkins.yaml").sha256
    assert data["summary"] == {"create": 379, "link": 17, "fill": 2, "delete": 0, "overwrite": 0,
                               "findings": 21}
    assert {op["op"] for op in data["ops"]} == {"create_document", "fill_fields"}
    for op in data["ops"]:
        if op["op"] == "create_document":
            assert op["precondition"] == {"exists": False}
        else:
            assert "$timestamp" in op["precondition"]["update_time"]


def test_every_op_names_its_series(demo_plan):
    """For reviewers: each op carries the series it belongs to, spelled as findings spell it."""
    spec = load_spec("specs/checkins.yaml")
    for op in demo_plan.ops:
        if isinstance(op, CreateDocumentOp):  # a new week copies its series key from the base
            key = " ".join(f"{name}={op.fields[name]}" for name in spec.series.key)
            assert op.series == key
        else:
            assert op.series.startswith("clientId=") and " formId=" in op.series
    linked = {op.group: op.series for op in demo_plan.ops if op.group and op.path == op.group}
    assert all(op.series == linked[op.group] for op in demo_plan.ops if op.group)


def test_a_plan_of_an_earlier_minor_version_is_refused_with_what_to_do(demo_plan):
    data = json.loads(dumps_plan(demo_plan))
    data["format_version"] = "1.1"
    with pytest.raises(PlanFileError, match=r"p\.json: format_version '1\.1' was written by an earlier "
                                            r"version.*reads 1\.2 and later.*reconcile plan"):
        loads_plan(json.dumps(data), "p.json")


def test_unknown_fields_are_ignored(demo_plan):
    data = json.loads(dumps_plan(demo_plan))
    data["added_by_a_newer_version"] = {"x": 1}
    data["format_version"] = "1.3"
    assert loads_plan(json.dumps(data), "p.json").ops == demo_plan.ops


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda d: d.update(format_version="2.0"), "format_version '2.0' is not supported"),
    (lambda d: d.update(format="reconcile-snapshot"), "not a plan file"),
    (lambda d: d["ops"][0].update(op="delete_document"), "unknown op 'delete_document'"),
    (lambda d: d["ops"][-1]["fills"][0].update(before=3), "a fill's 'before' must be empty"),
    (lambda d: d.pop("ops"), "'ops' must be a list"),
    (lambda d: d["ops"][0].update(path="no-slash"), "is not a collection/document path"),
    (lambda d: d.pop("selection"), "'selection' must be"),
    (lambda d: d.update(selection={}), "selection must be null or name at least one series key field"),
    (lambda d: d.update(selection={"clientId": ""}), "selection.clientId must not be empty"),
    (lambda d: d.update(selection={"clientId": 7}), "selection.clientId must be a string, found 7"),
    (lambda d: d.pop("source_file"), "'source_file' must be"),
    (lambda d: d.update(source_file={"path": "snapshots/demo.json", "sha256": "0" * 64}),
     "source_file.path must be an absolute path"),
    (lambda d: d.update(source_file={"path": "/x/demo.json", "sha256": "abc"}),
     "source_file.sha256 'abc' is not a sha256"),
])
def test_a_malformed_or_dangerous_plan_is_refused(demo_plan, mutate, words):
    data = json.loads(dumps_plan(demo_plan))
    mutate(data)
    with pytest.raises(PlanFileError) as raised:
        loads_plan(json.dumps(data), "p.json")
    assert words in str(raised.value)


def test_a_plan_that_is_not_json_names_line_and_column():
    with pytest.raises(PlanFileError, match=r"p\.json:1:2: not valid JSON"):
        loads_plan("{oops", "p.json")


@pytest.mark.parametrize(("fmt", "name"), [("text", "demo.plan.txt"), ("json", "demo.plan.json"),
                                           ("markdown", "demo.plan.md")])
def test_golden_demo_plans(demo_plan, request, fmt, name):
    rendered = render_plan(demo_plan, fmt)
    path = GOLDEN / name
    if request.config.getoption("--regen-golden"):
        path.write_text(rendered)
    assert path.read_text() == rendered, f"{name} changed; if on purpose: pytest --regen-golden"


def test_markdown_stays_short_enough_for_a_pull_request_comment(demo_plan):
    many = replace(demo_plan, ops=demo_plan.ops * 5)
    assert len(render_plan(many, "markdown")) < 65536
    assert "the JSON plan (`--format json`) has all" in render_plan(many, "markdown")


def test_the_demo_snapshot_is_what_its_generator_writes(tmp_path):
    import runpy

    module = runpy.run_path(str(ROOT / "snapshots" / "make_demo.py"))
    module["main"](tmp_path)
    for name in ("demo.json", "sessions-demo.json"):
        assert (tmp_path / name).read_bytes() == (ROOT / "snapshots" / name).read_bytes(), name
    assert DEMO.exists()


def test_a_link_whose_response_already_points_to_its_new_week_has_a_whole_header():
    from builders import assignment, checkins, plan_of, response, week_path

    spec = checkins()
    week2 = week_path(spec, 2).split("/")[1]
    plan = plan_of(spec, assignment("a1", 1, totalWeeks=2), response("r2", 2, assignmentId=week2))
    [group] = [g for g in plan.groups() if g[0].group]
    assert len(group) == 1  # the response already holds the link: only the new week is written
    text = render_plan(plan, "text")
    assert not any(line.rstrip().endswith("<->") for line in text.splitlines())
    assert f"link {group[0].path} (its response already holds the link; this side only)" in text
