"""Scheduled drift check, the scripted step of ``drift/action.yml``.

Runs ``reconcile check --format json`` (with ``--baseline`` when one is given) on one spec and
source. Exit 0 (converged): nothing else happens. Exit 2 (drift): opens an issue, or comments on the
open one this script opened before for the same spec and source (found by the hidden marker on its
first line), and the step succeeds: the issue is the alarm. Any other exit: the step fails with the
tool's one error sentence.

An issue may be read more widely than the data, so its text holds the drift classes with their
counts and likely causes, finding codes, the spec's hash and the run's address, and never a document
ID, series key or value (the report's examples are left out); the check's output is not printed.
Configuration comes from the environment (set by ``drift/action.yml``); GitHub is reached only through
``github_api.api``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from common import code, error_sentence, escape_data, set_outputs, word
from github_api import GitHubError, api

REPORT = ("reconcile-drift", "1")  # the drift report format and major version this script reads


def marker(spec: str, source: str) -> str:
    return f"<!-- checkin-reconciler drift: {word(spec)} on {word(source)} -->"


def report(spec: str, source: str, check: dict) -> str:
    """The issue text from ``check --format json``: each drift class's counts and likely cause, the
    finding codes and where to look. The report's example documents and findings are left out."""
    if (check.get("format"), str(check.get("format_version", "")).split(".")[0]) != REPORT:
        raise ValueError(f"reconcile check printed a {check.get('format')} report, version "
                         f"{check.get('format_version')}; this action reads {REPORT[0]} {REPORT[1]}.x")
    read_at = (check.get("read_time") or {}).get("$timestamp", "an unknown time")
    writes = int(check.get("writes_needed", 0))
    found = (f"data that no longer has the shape the spec declares: {writes} document writes would bring "
             "it back" if writes else "no write needed, but findings that are not in the baseline")
    lines = [f"### Drift: {code(spec)} on {code(source)}", "",
             f"`reconcile check` read the source at {code(read_at)} and found {found}.", "",
             "| drift class | count | series | likely cause |", "|---|---:|---:|---|"]
    for name, drift in sorted(check.get("classes", {}).items()):
        if drift.get("count"):
            cause = str(drift.get("cause", "")).replace("|", "\\|")
            lines.append(f"| {code(name)} | {int(drift['count'])} {drift.get('unit', '')} | "
                         f"{int(drift.get('series', 0))} | {cause} |")
    by_code = (check.get("findings") or {}).get("by_code") or {}
    if by_code:
        counts = ", ".join(f"{code(name)} {int(count)}" for name, count in sorted(by_code.items()))
        lines += ["", f"Findings by code (left untouched; checkin-reconciler's docs/findings.md explains "
                      f"each): {counts}"]
    spec_hash = str((check.get("spec") or {}).get("sha256", ""))[:12]
    lines += ["", f"Spec sha256 {code(spec_hash)}. To see the documents, run "
              f"{code(f'reconcile check --spec {spec} --source {source}')} where you may see the data; "
              "`reconcile apply` makes the writes.", ""]
    server, repository, run_id = (os.environ.get(name) for name in
                                  ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repository and run_id:
        lines.append(f"Found by {server}/{repository}/actions/runs/{run_id}.")
    return "\n".join(lines) + "\n"


def raise_alarm(repository: str, author: str, labels: list[str], spec: str, source: str, text: str) -> None:
    """Comment on this spec and source's open drift issue, or open one."""
    first_line = marker(spec, source)
    for issue in api("GET", f"repos/{repository}/issues?state=open&per_page=100", paginate=True):
        if ("pull_request" not in issue and issue["user"]["login"] == author
                and (issue.get("body") or "").split("\n", 1)[0].strip() == first_line):
            api("POST", f"repos/{repository}/issues/{issue['number']}/comments", {"body": text})
            print(f"Drift: commented on issue #{issue['number']}.")
            return
    created = api("POST", f"repos/{repository}/issues", {
        "title": f"reconcile check: drift in {spec} on {source}", "body": f"{first_line}\n{text}",
        **({"labels": labels} if labels else {})})
    print(f"Drift: opened issue #{created.get('number', '?')}.")


def main() -> int:
    env = os.environ
    spec, source = env.get("RECONCILE_SPEC"), env.get("RECONCILE_SOURCE")
    repository = env.get("GITHUB_REPOSITORY")
    if not (spec and source and repository):
        print("error: RECONCILE_SPEC, RECONCILE_SOURCE and GITHUB_REPOSITORY must be set", file=sys.stderr)
        return 1
    command = ["reconcile", "check", "--spec", spec, "--source", source, "--format", "json", "--quiet"]
    if env.get("RECONCILE_BASELINE"):
        command += ["--baseline", env["RECONCILE_BASELINE"]]
    check = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace")
    set_outputs(drift="true" if check.returncode == 2 else "false")
    if check.returncode == 0:
        print(f"No drift: {spec} on {source} is converged.")
        return 0
    if check.returncode != 2:
        sentence = error_sentence(check.stderr)
        print(f"::error title=reconcile check::{escape_data(sentence)}")
        print(f"error: {sentence}", file=sys.stderr)
        return 1
    try:
        text = report(spec, source, json.loads(check.stdout))
        labels = [label.strip() for label in (env.get("RECONCILE_LABELS") or "").split(",") if label.strip()]
        raise_alarm(repository, env.get("RECONCILE_ISSUE_AUTHOR") or "github-actions[bot]", labels,
                    spec, source, text)
    except (GitHubError, ValueError) as error:
        print(f"::error title=reconcile check::{escape_data(str(error))}")
        print(f"error: drift found, but the issue could not be filed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
