"""Pull-request review of spec changes, the scripted step of ``action.yml``.

Finds the specs a pull request changes (git, between the base commit and the checked-out HEAD),
validates them all with one ``reconcile validate``, plans each changed spec against its base version
(``reconcile plan --compare-spec``; a new spec gets a plain plan, a deleted one a note), and posts each
part of each plan as its own comment, found again on the next run by a hidden marker on its first line
and edited rather than repeated. Comments this run no longer needs are edited to a one-line
"superseded" note, never deleted.

Configuration comes from the environment (set by ``action.yml`` from its inputs). It writes only
under its own directory in RECONCILE_WORK (one per source) and to GITHUB_OUTPUT; GitHub is reached
only through ``github_api.api``. Exit 1 when a spec is invalid or a plan fails (after the comments
say so), else 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import code, error_sentence, escape_data, escape_property, set_outputs, word
from github_api import GitHubError, api

MARKER = re.compile(r"<!-- checkin-reconciler plan: (\S+) on (\S+) part (\d+)/(\d+) -->")
COMMENT_LIMIT = 65_536  # GitHub refuses a longer comment body
SUPERSEDED = "_Superseded: this comment is not part of the latest `reconcile plan` run._"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    specs: list[str]  # git pathspec globs
    source: str
    base: str
    repository: str
    pull_request: str
    author: str  # only this account's comments are ever edited
    work: Path

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        required = ("RECONCILE_SOURCE", "RECONCILE_BASE", "RECONCILE_PR", "GITHUB_REPOSITORY")
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise Failure(f"{', '.join(missing)} not set: run this action on pull_request events, "
                          "with the input source")
        return cls(specs=(env.get("RECONCILE_SPECS") or "specs/*.yaml").split(),
                   source=env["RECONCILE_SOURCE"], base=env["RECONCILE_BASE"],
                   repository=env["GITHUB_REPOSITORY"], pull_request=env["RECONCILE_PR"],
                   author=env.get("RECONCILE_COMMENT_AUTHOR") or "github-actions[bot]",
                   work=Path(env.get("RECONCILE_WORK") or tempfile.gettempdir()))


class Failure(Exception):
    """The step cannot go on; the message is one sentence."""


@dataclass(frozen=True, slots=True)
class Marker:
    """The hidden first line of each comment: which spec, on which source, which part of how many.
    Spec and source are kept as their marker words (``word``), which is how comments are matched."""

    spec: str
    source: str
    part: int
    parts: int

    @classmethod
    def of(cls, spec: str, source: str, part: int, parts: int) -> Marker:
        return cls(word(spec), word(source), part, parts)

    @classmethod
    def parse(cls, body: str) -> Marker | None:
        found = MARKER.fullmatch(body.split("\n", 1)[0].strip())
        if not found:
            return None
        spec, source, part, parts = found.groups()
        return cls(spec, source, int(part), int(parts))

    def __str__(self) -> str:
        return f"<!-- checkin-reconciler plan: {self.spec} on {self.source} part {self.part}/{self.parts} -->"


# -- git -------------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    run = subprocess.run(["git", *args], capture_output=True, text=True, encoding="utf-8", errors="replace")
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        raise Failure(f"git {args[0]} failed: {reason}")
    return run.stdout


def changed_specs(base: str, patterns: list[str]) -> list[tuple[str, str]]:
    """(status, path) of every spec changed between the merge base of BASE and HEAD, and HEAD."""
    if subprocess.run(["git", "cat-file", "-e", f"{base}^{{commit}}"], capture_output=True).returncode:
        raise Failure(f"the base commit {base} is not in this checkout: check out with fetch-depth: 0")
    out = git("diff", "--name-status", "--no-renames", "-z", f"{base}...HEAD", "--",
              *(f":(glob){pattern}" for pattern in patterns))
    fields = out.split("\0")[:-1]
    return sorted(zip(fields[::2], fields[1::2], strict=True), key=lambda change: change[1])


def base_version(base: str, path: str) -> bytes | None:
    run = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True)
    return run.stdout if run.returncode == 0 else None


# -- reconcile -------------------------------------------------------------------------------------------


def validate(paths: list[str]) -> dict[str, list[str]]:
    """One ``reconcile validate`` over every path: the error lines of each invalid spec."""
    if not paths:
        return {}
    run = subprocess.run(["reconcile", "validate", *paths], capture_output=True, text=True, encoding="utf-8",
                         errors="replace")
    print(run.stdout + run.stderr, end="")
    errors: dict[str, list[str]] = {}
    if run.returncode == 0:
        return errors
    lines = [line.removeprefix("error: ") for line in run.stderr.splitlines()]
    for path in paths:
        mine = [line for line in lines if line.startswith(f"{path}:")]
        if mine:
            errors[path] = mine
    return errors or {path: [error_sentence(run.stderr)] for path in paths}


@dataclass(frozen=True, slots=True)
class Planned:
    parts: list[str]  # comment texts, in order, without markers
    failed: str | None = None  # the error sentence when the plan could not be made
    changes: bool = False


def plan(config: Config, work: Path, path: str, old: bytes | None) -> Planned:
    parts_dir, plan_file = work / "parts" / path, work / "plans" / f"{path}.plan.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    command = ["reconcile", "plan", "--spec", path, "--source", config.source, "--format", "markdown",
               "--split", str(parts_dir), "--out", str(plan_file), "--detailed-exitcode", "--quiet"]
    if old is not None:
        # The comment shows this path: named after the base commit and the file, and the same on
        # every run, so that a comment whose plan has not changed is not edited.
        old_file = work / f"base-{config.base[:12]}" / path
        old_file.parent.mkdir(parents=True, exist_ok=True)
        old_file.write_bytes(old)
        command[4:4] = ["--compare-spec", str(old_file)]
    run = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace")
    parts = sorted(parts_dir.glob("part-*.md")) if parts_dir.is_dir() else []
    if run.returncode not in (0, 2) or not parts:
        sentence = error_sentence(run.stderr)
        return Planned([failure_text("reconcile plan", path, [sentence])], failed=sentence)
    return Planned([part.read_text(encoding="utf-8") for part in parts], changes=run.returncode == 2)


# -- comments --------------------------------------------------------------------------------------------


def failure_text(command: str, path: str, lines: list[str]) -> str:
    block = "\n".join(lines)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", block)), default=0))
    return (f"### {command} failed for {code(path)}\n\n{fence}text\n{block}\n{fence}\n\n"
            "Nothing was planned for this spec; fix it and push again.\n")


def deleted_text(path: str) -> str:
    return (f"### reconcile plan: {code(path)}\n\nThis pull request deletes the spec: nothing to plan. "
            "Data it shaped stays as it is (the tool never deletes).\n")


def sync_comments(config: Config, desired: list[tuple[Marker, str]]) -> None:
    """Edit this run's comments into place, create the missing ones, supersede the rest."""
    bodies = [(marker, f"{marker}\n{text}") for marker, text in desired]
    for marker, body in bodies:  # checked before any call, so that no run posts half its comments
        if len(body) > COMMENT_LIMIT:
            raise Failure(f"the comment for {marker.spec} part {marker.part} is {len(body)} characters, "
                          f"over GitHub's {COMMENT_LIMIT}")
    issue = f"repos/{config.repository}/issues"
    ours: dict[tuple[str, int], dict] = {}
    leftovers = []
    for comment in api("GET", f"{issue}/{config.pull_request}/comments?per_page=100", paginate=True):
        marker = Marker.parse(comment.get("body") or "")
        mine = comment["user"]["login"] == config.author
        if marker is None or marker.source != word(config.source) or not mine:
            continue
        if (marker.spec, marker.part) in ours:
            leftovers.append(comment)
        else:
            ours[marker.spec, marker.part] = comment
    for marker, body in bodies:
        existing = ours.pop((marker.spec, marker.part), None)
        if existing is None:
            api("POST", f"{issue}/{config.pull_request}/comments", {"body": body})
        elif existing["body"] != body:
            api("PATCH", f"{issue}/comments/{existing['id']}", {"body": body})
    for comment in [*ours.values(), *leftovers]:
        first, _, rest = comment["body"].partition("\n")
        if rest != SUPERSEDED:
            api("PATCH", f"{issue}/comments/{comment['id']}", {"body": f"{first}\n{SUPERSEDED}"})


# -- the step --------------------------------------------------------------------------------------------


def run_step(config: Config) -> int:
    work = config.work / f"reconcile-plan-{hashlib.sha256(config.source.encode()).hexdigest()[:8]}"
    shutil.rmtree(work, ignore_errors=True)  # this source's files from an earlier run in the same job
    work.mkdir(parents=True)
    changes = changed_specs(config.base, config.specs)
    if not changes:
        print(f"No spec matching {' '.join(config.specs)} changed.")
    present = [path for status, path in changes if status != "D"]
    invalid = validate(present)
    desired: list[tuple[Marker, str]] = []
    failures, any_changes = [], False
    for status, path in changes:
        if status == "D":
            texts = [deleted_text(path)]
        elif path in invalid:
            texts = [failure_text("reconcile validate", path, invalid[path])]
            failures.append((path, invalid[path][0]))
        else:
            planned = plan(config, work, path, base_version(config.base, path))
            texts, any_changes = planned.parts, any_changes or planned.changes
            if planned.failed:
                failures.append((path, planned.failed))
        desired += [(Marker.of(path, config.source, n, len(texts)), text) for n, text in enumerate(texts, 1)]
        print(f"{path}: {len(texts)} comment part(s)")
    sync_comments(config, desired)
    set_outputs(plans_dir=work / "plans", changes="true" if any_changes else "false",
                specs=str(len(changes)))
    for path, sentence in failures:
        print(f"::error title={escape_property('reconcile: ' + path)}::{escape_data(sentence)}")
    return 1 if failures else 0


def main() -> int:
    try:
        return run_step(Config.from_env())
    except (Failure, GitHubError) as error:
        print(f"::error title=reconcile plan::{escape_data(str(error))}")
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
