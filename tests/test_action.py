"""The CI integration as GitHub would run it: the steps of ``action.yml`` and ``drift/action.yml`` run
for real (bash, git, reconcile) in a temporary git repository with a pull request's base and head,
with only the GitHub API replaced by a recorder; the example workflows and the pre-commit hook."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from builders import CHECKINS, DEMO, ROOT, SESSIONS, reconcile

BIN = Path(sys.executable).parent  # the environment `reconcile` is installed in, as setup-python's is
BOT = "github-actions[bot]"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
MARKER = re.compile(r"<!-- checkin-reconciler plan: (\S+) on (\S+) part (\d+)/(\d+) -->")

# Stands in for `gh`: records each call (arguments and the JSON sent) and answers a GET with the
# file RECORDER_ANSWER (back-to-back JSON arrays, as `gh api --paginate` prints pages).
RECORDER = """\
import json, os, sys
args = sys.argv[1:]
sent = sys.stdin.read() if "--input" in args else None
with open(os.environ["RECORDER_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "body": json.loads(sent) if sent else None}) + "\\n")
if args[args.index("--method") + 1] == "GET":
    print(open(os.environ["RECORDER_ANSWER"]).read())
else:
    print(json.dumps({"id": 999, "number": 41}))
"""


# -- running an action's step as the runner does ----------------------------------------------------------


def resolve(text: str, context: dict) -> str:
    """``${{ a.b.c }}`` replaced from ``context``: the expressions the actions use are plain lookups."""
    def lookup(match: re.Match) -> str:
        value = context
        for name in match.group(1).split("."):
            value = value[name]
        return str(value)
    return EXPRESSION.sub(lookup, text)


@dataclass
class StepRun:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    calls: list[dict]  # what the recorder saw, in order
    context: dict


def run_step(action_file: Path, step_id: str, inputs: dict[str, str], cwd: Path, tmp: Path,
             answer: str = "[]", pull_request: dict | None = None) -> StepRun:
    """Run one step of a composite action, in ``cwd``, keeping the recorder's files in ``tmp``.
    RUNNER_TEMP is ``cwd``'s sibling, the same on every run, as on GitHub's runners."""
    action = yaml.safe_load(action_file.read_text())
    assert set(inputs) <= set(action["inputs"]), "every input given is declared"
    runner_temp = cwd.parent / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    context: dict = {"github": {"token": "t0ken", "event": {"pull_request": pull_request or {}}},
                     "runner": {"temp": str(runner_temp)}, "inputs": {}}
    for name, declared in action["inputs"].items():
        context["inputs"][name] = inputs.get(name, resolve(str(declared.get("default", "")), context))
    [step] = [step for step in action["runs"]["steps"] if step.get("id") == step_id]
    for name in ("recorder.py", "log.jsonl", "outputs", "answer.json"):
        (tmp / name).unlink(missing_ok=True)
    (tmp / "recorder.py").write_text(RECORDER)
    gh = tmp / "gh"
    gh.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp / "recorder.py"}" "$@"\n')
    gh.chmod(0o755)
    (tmp / "answer.json").write_text(answer)
    outside = {name: value for name, value in os.environ.items() if not name.startswith(("GITHUB_", "GH_"))}
    env = {**outside, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GITHUB_REPOSITORY": "octo/app",
           "GITHUB_ACTION_PATH": str(action_file.parent), "GITHUB_OUTPUT": str(tmp / "outputs"),
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "4242",
           "RECONCILE_GH": str(gh), "RECORDER_LOG": str(tmp / "log.jsonl"),
           "RECORDER_ANSWER": str(tmp / "answer.json"),
           **{name: resolve(str(value), context) for name, value in step.get("env", {}).items()}}
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    outputs_file, log = tmp / "outputs", tmp / "log.jsonl"
    outputs = dict(line.split("=", 1) for line in outputs_file.read_text().splitlines()) \
        if outputs_file.exists() else {}
    context["steps"] = {step_id: {"outputs": outputs}}
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return StepRun(run.returncode, run.stdout, run.stderr, outputs, calls, context)


def subdir(path: Path, name: str) -> Path:
    (path / name).mkdir()
    return path / name


def endpoint(call: dict) -> tuple[str, str]:
    args = call["args"]
    return args[args.index("--method") + 1], args[args.index("--method") + 2]


# -- a pull request in a temporary repository ---------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


BASE_SPEC = CHECKINS.read_text()
CADENCE_14 = BASE_SPEC.replace("every_days: 7", "every_days: 14")


@dataclass
class PullRequest:
    repo: Path
    base: str  # the base branch's commit

    def commit(self, files: dict[str, str | None], message: str = "change") -> None:
        for name, text in files.items():
            path = self.repo / name
            if text is None:
                git(self.repo, "rm", "-q", name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            git(self.repo, "add", name)
        git(self.repo, "commit", "-q", "-m", message)

    def run(self, tmp: Path, answer: str = "[]", **inputs: str) -> StepRun:
        return run_step(ROOT / "action.yml", "plan", {"source": "snapshots/demo.json", **inputs},
                        self.repo, tmp, answer, {"base": {"sha": self.base}, "number": 7})


def twin_demo() -> dict:
    """The demo data twice over (each client and link also as a "-twin"): its plan needs two comments."""
    data = json.loads(DEMO.read_text())
    for name in ("check_in_assignments", "formResponses"):
        docs = data["collections"][name]
        for doc_id, doc in list(docs.items()):
            fields = dict(doc["fields"])
            for field in ("clientId", "responseId", "assignmentId"):
                if isinstance(fields.get(field), str):
                    fields[field] += "-twin"
            docs[f"{doc_id}-twin"] = {**doc, "fields": fields}
    return data


@pytest.fixture
def pull_request(tmp_path) -> PullRequest:
    """main: the shipped spec, two snapshots, a second spec; the pull request's branch then
    changes the cadence from 7 to 14 days, adds a spec, deletes one, and touches files no pattern
    names."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    pr = PullRequest(repo, "")
    pr.commit({"specs/checkins.yaml": BASE_SPEC, "snapshots/demo.json": DEMO.read_text(),
               "snapshots/twin.json": json.dumps(twin_demo()),
               "specs/retired.yaml": SESSIONS.read_text(), "README.md": "app\n"}, "base")
    pr.base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "cadence")
    pr.commit({"specs/checkins.yaml": CADENCE_14, "specs/added.yaml": BASE_SPEC.replace(
        "name: checkins", "name: added"), "specs/retired.yaml": None, "README.md": "app, fortnightly\n",
        "specs/drafts/later.yaml": BASE_SPEC, "docs/example.yaml": BASE_SPEC})
    return pr


def comments(run: StepRun, method: str = "POST") -> dict[tuple[str, int], tuple[int, str]]:
    """(spec, part) -> (parts, body) of the comments a run sent with ``method``."""
    sent = {}
    for call in run.calls:
        if endpoint(call)[0] == method and "/comments" in endpoint(call)[1]:
            spec, _, part, parts = MARKER.match(call["body"]["body"]).groups()
            sent[spec, int(part)] = (int(parts), call["body"]["body"])
    return sent


# -- the pull-request action -----------------------------------------------------------------------------


def test_the_action_plans_each_changed_spec_against_its_base_version_and_comments(pull_request, tmp_path):
    run = pull_request.run(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert endpoint(run.calls[0]) == ("GET", "repos/octo/app/issues/7/comments?per_page=100")
    posted = comments(run)
    assert {spec for spec, _ in posted} == {"specs/added.yaml", "specs/checkins.yaml", "specs/retired.yaml"}
    for (spec, part), (parts, body) in posted.items():
        assert body.startswith(f"<!-- checkin-reconciler plan: {spec} on snapshots/demo.json "
                               f"part {part}/{parts} -->\n")
        assert len(body) <= 65_536
        assert {n for s, n in posted if s == spec} == set(range(1, parts + 1))
    assert "deletes the spec: nothing to plan" in posted["specs/retired.yaml", 1][1]
    assert run.outputs["changes"] == "true"

    work = Path(run.outputs["plans-dir"]).parent
    old = work / f"base-{pull_request.base[:12]}"
    assert (old / "specs" / "checkins.yaml").read_text() == BASE_SPEC  # OLD: the base version
    assert not (old / "specs" / "added.yaml").exists()  # new in the pull request: plain plan
    [upload] = [step for step in yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"]
                if step.get("uses", "").startswith("actions/upload-artifact@")]
    artifact = Path(resolve(upload["with"]["path"], run.context))  # where the upload step looks
    planned = json.loads((artifact / "specs" / "checkins.yaml.plan.json").read_text())
    assert "every_days: 14" in planned["spec"]["text"]  # --out saves the NEW spec's plan
    assert sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*.json")) == [
        "specs/added.yaml.plan.json", "specs/checkins.yaml.plan.json"]


def test_a_changed_spec_is_compared_with_its_base_version_and_an_added_one_planned_alone(pull_request,
                                                                                         tmp_path):
    run = pull_request.run(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    posted = comments(run)
    changed, added = posted["specs/checkins.yaml", 1][1], posted["specs/added.yaml", 1][1]
    assert changed.split("\n")[1] == "### reconcile plan: spec change to `checkins` on `snapshots/demo.json`"
    assert re.search(rf"old `{tmp_path}/runner-temp/\S+/base-{pull_request.base[:12]}/specs/checkins.yaml`",
                     changed)  # OLD is the base commit's file
    assert "new `specs/checkins.yaml`" in changed
    assert added.split("\n")[1] == "### reconcile plan: `added` on `snapshots/demo.json`"
    assert "spec change" not in added


def test_a_plan_longer_than_a_comment_is_posted_in_parts_that_later_runs_edit_or_supersede(
        pull_request, tmp_path):
    first = pull_request.run(subdir(tmp_path, "first"), source="snapshots/twin.json")
    assert first.returncode == 0, first.stdout + first.stderr
    posted = comments(first)
    assert [(part, parts) for (spec, part), (parts, _) in sorted(posted.items())
            if spec == "specs/checkins.yaml"] == [(1, 2), (2, 2)]
    assert all(len(body) <= 65_536 for _, body in posted.values())
    on_github = [{"id": 100 + n, "body": body, "user": {"login": BOT}}
                 for n, (_, body) in enumerate(sorted(posted.values()))]

    again = pull_request.run(subdir(tmp_path, "again"), answer=json.dumps(on_github),
                             source="snapshots/twin.json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [endpoint(call)[0] for call in again.calls] == ["GET"], "a comment already right is left alone"

    # A push makes the plan fit one comment: part 1 is edited, part 2 superseded, nothing is added.
    pull_request.commit({"specs/checkins.yaml": CADENCE_14.replace("default: 52", "default: 4")})
    strangers = [{"id": 7, "body": on_github[0]["body"], "user": {"login": "mallory"}},  # not ours
                 {"id": 8, "body": on_github[0]["body"].replace(" on snapshots/twin.json ", " on demo "),
                  "user": {"login": BOT}}]  # another job's source
    pages = json.dumps([*strangers, *on_github[:2]]) + "\n" + json.dumps(on_github[2:])  # two pages
    second = pull_request.run(subdir(tmp_path, "second"), answer=pages, source="snapshots/twin.json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert not comments(second, "POST")
    edits = {endpoint(call)[1].rsplit("/", 1)[1]: call["body"]["body"] for call in second.calls
             if endpoint(call)[0] == "PATCH"}
    ids = {MARKER.match(comment["body"]).group(1, 3): str(comment["id"]) for comment in on_github}
    assert set(edits) == {ids["specs/checkins.yaml", "1"], ids["specs/checkins.yaml", "2"]}
    assert edits[ids["specs/checkins.yaml", "1"]].startswith(
        "<!-- checkin-reconciler plan: specs/checkins.yaml on snapshots/twin.json part 1/1 -->\n")
    assert edits[ids["specs/checkins.yaml", "2"]] == (
        "<!-- checkin-reconciler plan: specs/checkins.yaml on snapshots/twin.json part 2/2 -->\n"
        "_Superseded: this comment is not part of the latest `reconcile plan` run._")


def test_an_invalid_spec_fails_the_step_and_its_comment_says_why(pull_request, tmp_path):
    pull_request.commit({"specs/checkins.yaml": BASE_SPEC.replace("every_days: 7", "every_days: 0")})
    run = pull_request.run(tmp_path)
    assert run.returncode == 1
    posted = comments(run)
    [(_, body)] = [value for (spec, _), value in posted.items() if spec == "specs/checkins.yaml"]
    assert "reconcile validate failed for `specs/checkins.yaml`" in body
    assert "specs/checkins.yaml:26:5: rules[1].every_days must be at least 1, found 0" in body
    assert ("specs/added.yaml", 1) in posted  # the valid ones are still planned
    assert "::error title=reconcile%3A specs/checkins.yaml::" in run.stdout


def test_a_plan_that_fails_reports_its_one_sentence_and_fails_the_step(pull_request, tmp_path):
    run = pull_request.run(tmp_path, source="snapshots/missing.json")
    assert run.returncode == 1
    body = comments(run)["specs/checkins.yaml", 1][1]
    assert "reconcile plan failed for `specs/checkins.yaml`" in body
    assert "snapshots/missing.json: snapshot file not found" in body
    assert "Traceback" not in body + run.stderr


def test_only_the_patterns_given_are_reviewed(pull_request, tmp_path):
    run = pull_request.run(tmp_path, specs="specs/**/*.yaml\ndocs/*.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {spec for spec, _ in comments(run)} == {
        "docs/example.yaml", "specs/added.yaml", "specs/checkins.yaml", "specs/drafts/later.yaml",
        "specs/retired.yaml"}


def test_when_no_spec_changes_any_more_the_earlier_comments_are_superseded(pull_request, tmp_path):
    earlier = {"id": 3, "user": {"login": BOT},
               "body": "<!-- checkin-reconciler plan: specs/x.yaml on snapshots/demo.json part 1/1 -->\nplan"}
    run = pull_request.run(tmp_path, answer=json.dumps([earlier]), specs="nothing/*.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "No spec matching nothing/*.yaml changed." in run.stdout
    assert [(endpoint(call), call["body"]) for call in run.calls[1:]] == [
        (("PATCH", "repos/octo/app/issues/comments/3"), {"body": earlier["body"].replace(
            "\nplan", "\n_Superseded: this comment is not part of the latest `reconcile plan` run._")})]


def test_a_base_commit_missing_from_the_checkout_is_one_sentence(pull_request, tmp_path):
    pull_request.base = "0" * 40
    run = pull_request.run(tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip() == (f"error: the base commit {'0' * 40} is not in this checkout: check out "
                                  "with fetch-depth: 0")
    assert not run.calls


# -- the drift check -------------------------------------------------------------------------------------

PRIVATE = "Jane Private-Value"


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A checkout holding the spec and a snapshot whose client IDs carry a private value (so every
    series key does, which the drift report's examples show)."""
    ws = tmp_path / "ws"
    (ws / "specs").mkdir(parents=True)
    (ws / "specs" / "checkins.yaml").write_text(BASE_SPEC)
    data = json.loads(DEMO.read_text())
    for name in ("check_in_assignments", "formResponses"):
        for doc in data["collections"][name].values():
            if isinstance(doc["fields"].get("clientId"), str):
                doc["fields"]["clientId"] = f"{PRIVATE} {doc['fields']['clientId']}"
    (ws / "data.json").write_text(json.dumps(data))
    return ws


def drift(workspace: Path, tmp: Path, answer: str = "[]", **inputs: str) -> StepRun:
    return run_step(ROOT / "drift" / "action.yml", "check",
                    {"spec": "specs/checkins.yaml", "source": "data.json", **inputs}, workspace, tmp, answer)


def test_drift_opens_an_issue_with_counts_and_no_document_data(workspace, tmp_path):
    check = reconcile("check", "--spec", workspace / "specs" / "checkins.yaml", "--source",
                      workspace / "data.json", "--format", "json")
    assert check.returncode == 2 and PRIVATE in check.stdout  # the check's own report holds it
    report = json.loads(check.stdout)
    ids = {example["path"].split("/")[-1] for drift in report["classes"].values() for example in
           drift["examples"]} | {finding["path"].split("/")[-1] for finding in report["findings"]["all"]}
    run = drift(workspace, tmp_path, labels="drift, data")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outputs["drift"] == "true"
    [listing, opened] = run.calls
    assert endpoint(listing) == ("GET", "repos/octo/app/issues?state=open&per_page=100")
    assert endpoint(opened) == ("POST", "repos/octo/app/issues")
    issue = opened["body"]
    assert issue["title"] == "reconcile check: drift in specs/checkins.yaml on data.json"
    assert issue["labels"] == ["drift", "data"]
    body = issue["body"]
    assert body.startswith("<!-- checkin-reconciler drift: specs/checkins.yaml on data.json -->\n")
    assert f"{report['writes_needed']} document writes would bring it back" in body
    for name, drift_class in report["classes"].items():
        row = f"| `{name}` | {drift_class['count']} {drift_class['unit']} | {drift_class['series']} |"
        assert (row in body) is (drift_class["count"] > 0), name
    assert "`series.week_duplicate` 1" in body
    assert "https://github.com/octo/app/actions/runs/4242" in body
    assert PRIVATE not in body + run.stdout + run.stderr
    assert ids and not [doc_id for doc_id in ids if doc_id in body + run.stdout]


def test_drift_comments_on_the_open_issue_it_opened_before(workspace, tmp_path):
    marker = "<!-- checkin-reconciler drift: specs/checkins.yaml on data.json -->"
    issues = [{"number": 5, "body": f"{marker}\nold", "user": {"login": "mallory"}},  # not ours
              {"number": 6, "body": f"{marker}\nold", "user": {"login": BOT}, "pull_request": {}},
              {"number": 12, "body": f"{marker}\nold", "user": {"login": BOT}}]
    run = drift(workspace, tmp_path, answer=json.dumps(issues))
    assert run.returncode == 0, run.stdout + run.stderr
    assert [endpoint(call) for call in run.calls] == [
        ("GET", "repos/octo/app/issues?state=open&per_page=100"),
        ("POST", "repos/octo/app/issues/12/comments")]
    assert PRIVATE not in run.calls[1]["body"]["body"]


def test_no_drift_is_quiet_an_error_fails_and_a_baseline_makes_new_findings_drift(workspace, tmp_path):
    applied = reconcile("apply", "--spec", workspace / "specs" / "checkins.yaml", "--source",
                        workspace / "data.json", "--auto-approve")
    assert applied.returncode == 0, applied.stdout
    quiet = drift(workspace, tmp_path)
    assert (quiet.returncode, quiet.calls, quiet.outputs["drift"]) == (0, [], "false")

    broken = drift(workspace, tmp_path, source="missing.json")
    assert broken.returncode == 1 and not broken.calls
    assert re.fullmatch(r"error: \S*missing\.json: snapshot file not found", broken.stderr.strip())
    assert "::error title=reconcile check::" in broken.stdout

    report = json.loads(reconcile("check", "--spec", workspace / "specs" / "checkins.yaml", "--source",
                                  workspace / "data.json", "--format", "json").stdout)
    findings = report["findings"]["total"]
    report["findings"] = {"total": 0, "by_code": {}, "all": []}  # a baseline from before the mess
    (workspace / "baseline.json").write_text(json.dumps(report))
    alarmed = drift(workspace, tmp_path, baseline="baseline.json")
    assert alarmed.returncode == 0, alarmed.stdout + alarmed.stderr
    body = alarmed.calls[-1]["body"]["body"]
    assert "found no write needed, but findings that are not in the baseline" in body
    assert f"| `new_findings` | {findings} findings |" in body and findings


# -- the files GitHub and pre-commit read ------------------------------------------------------------------

WORKFLOWS = sorted((ROOT / "docs" / "workflows").glob("*.yml"))
ACTIONS = {"your-org/checkin-reconciler": ROOT / "action.yml",
           "your-org/checkin-reconciler/drift": ROOT / "drift" / "action.yml"}


@pytest.mark.parametrize("action_file", ACTIONS.values(), ids=lambda path: path.parent.name)
def test_each_action_runs_scripts_that_exist_and_uses_only_what_it_declares(action_file):
    action = yaml.safe_load(action_file.read_text())
    assert action["runs"]["using"] == "composite"
    ids = {step.get("id") for step in action["runs"]["steps"]}
    text = action_file.read_text()
    for expression in EXPRESSION.findall(text):
        for name in re.findall(r"\b(inputs|steps)\.([\w-]+)", expression):
            assert name[1] in (action["inputs"] if name[0] == "inputs" else ids), expression
    scripts = [script for step in action["runs"]["steps"] if "run" in step
               for script in re.findall(r'\$GITHUB_ACTION_PATH/([^"\s]+\.py)', step["run"])]
    assert scripts
    for script in scripts:
        assert (action_file.parent / script).resolve().is_file(), script
    for step in action["runs"]["steps"]:
        assert "uses" in step or step.get("shell") == "bash"
        assert "${{" not in step.get("run", ""), "inputs reach scripts through env, never the script text"


@pytest.mark.parametrize("workflow_file", WORKFLOWS, ids=lambda path: path.name)
def test_each_example_workflow_uses_the_actions_as_they_are_declared(workflow_file):
    workflow = yaml.safe_load(workflow_file.read_text())
    used = [step for job in workflow["jobs"].values() for step in job["steps"]
            if step.get("uses", "").startswith("your-org/")]
    assert used
    for step in used:
        name = step["uses"].split("@")[0]
        inputs = yaml.safe_load(ACTIONS[name].read_text())["inputs"]
        assert set(step.get("with", {})) <= set(inputs), step
        assert {key for key, value in inputs.items() if value.get("required")} <= set(step["with"])


def test_the_review_workflow_plans_on_a_snapshot_and_on_the_live_database_through_workload_identity():
    workflow = yaml.safe_load((ROOT / "docs" / "workflows" / "pr-plan.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write", "id-token": "write"}
    sources = {}
    for job in workflow["jobs"].values():
        steps = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
        assert steps["actions/checkout"]["with"]["fetch-depth"] == 0
        sources[steps["your-org/checkin-reconciler"]["with"]["source"]] = steps
    assert set(sources) == {"snapshots/demo.json", "firestore://my-project"}
    auth = sources["firestore://my-project"]["google-github-actions/auth"]["with"]
    assert set(auth) == {"workload_identity_provider", "service_account"}


def test_the_drift_workflow_runs_on_a_schedule_with_issue_rights():
    workflow = yaml.safe_load((ROOT / "docs" / "workflows" / "drift-check.yml").read_text())
    assert workflow[True]["schedule"][0]["cron"]
    assert workflow["permissions"] == {"contents": "read", "issues": "write", "id-token": "write"}


def test_the_pre_commit_hook_validates_every_matched_spec_in_one_run(tmp_path):
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert (hook["id"], hook["language"], hook["pass_filenames"], hook["require_serial"]) == (
        "reconcile-validate", "python", True, True)
    for name, matches in (("specs/checkins.yaml", True), ("specs/team/weekly.yml", True),
                          ("snapshots/demo.json", False), ("docs/workflows/pr-plan.yml", False),
                          (".pre-commit-hooks.yaml", False), ("action.yml", False)):
        assert bool(re.search(hook["files"], name)) is matches, name
    matched = [path.relative_to(ROOT).as_posix() for path in sorted(ROOT.glob("specs/*.yaml"))]
    assert matched == ["specs/checkins.yaml", "specs/sessions.yaml"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    entry = shlex.split(hook["entry"])
    good = subprocess.run([*entry, *matched], cwd=ROOT, env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(BASE_SPEC.replace("every_days: 7", "every_days: 0"))
    bad = subprocess.run([*entry, *matched, str(broken)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"{broken}:26:5: rules[1].every_days must be at least 1, found 0" in bad.stderr
