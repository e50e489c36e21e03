"""One function per CLI verb: wire the stages together and return a result object.

spec → state → plan → (apply → re-read → re-diff → verify). Does the I/O the core must not (opening
stores, reading files); does not print, prompt or choose exit codes: that is the CLI's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler.audit import AuditReport, audit
from reconciler.errors import ApplyRefused, PlanFileError, SourceError
from reconciler.model import OpResult, Plan, Spec, State
from reconciler.plan import build_plan, loads_plan
from reconciler.snapshot import SnapshotStore, dumps_snapshot, write_atomically
from reconciler.spec import load_spec, parse_spec
from reconciler.verify import Verification, verify

FIRESTORE_SCHEME = "firestore://"


def open_store(source: str) -> SnapshotStore:
    """A source is a snapshot file path, or ``firestore://PROJECT[/DATABASE]``."""
    if source.startswith(FIRESTORE_SCHEME):
        raise SourceError(f"{source}: live Firestore sources are not supported by this build yet; "
                          "export the data with the app's tooling into a snapshot file")
    if "://" in source:
        raise SourceError(f"{source}: unknown source; give a snapshot file path or "
                          "firestore://PROJECT[/DATABASE]")
    return SnapshotStore(source)


def validate(spec_path: str) -> Spec:
    return load_spec(spec_path)


def run_audit(spec_path: str, source: str) -> AuditReport:
    spec = load_spec(spec_path)
    return audit(spec, open_store(source).read(spec.collections))


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    spec: Spec
    state: State
    plan: Plan


def plan(spec_path: str, source: str) -> Planned:
    spec = load_spec(spec_path)
    state = open_store(source).read(spec.collections)
    return Planned(spec=spec, state=state, plan=build_plan(spec, state))


def load_plan(path: str) -> tuple[Plan, Spec]:
    """A saved plan and the spec it carries, checked against the hash it was made with."""
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: plan file not found; write one with "
                            "`reconcile plan --spec SPEC --source SRC --out FILE`") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlanFileError(f"{path}: cannot read the plan file ({error})") from error
    saved = loads_plan(text, path)
    spec = parse_spec(saved.spec_text.encode("utf-8"), saved.spec_path)
    if spec.sha256 != saved.spec_sha256:
        raise PlanFileError(f"{path}: the spec inside the plan does not match its sha256; the plan "
                            "file was edited. Make a new one with `reconcile plan --out`")
    return saved, spec


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    plan: Plan
    results: tuple[OpResult, ...]
    verification: Verification


def apply(saved: Plan, spec: Spec, now: datetime, before: State | None = None) -> Applied:
    """Write the plan's groups under their preconditions, then re-read, re-diff and verify.

    ``before``: the state the plan was made from, when it was made in this run; a saved plan is
    checked against a fresh read instead, so the report compares with what was there at apply time.
    """
    if saved.spec_sha256 != spec.sha256:
        raise ApplyRefused("the plan was made from another version of the spec; re-run plan")
    store = open_store(saved.source)
    if before is None:
        before = store.read(spec.collections)
    results = store.apply(saved.groups(), now) if saved.ops else []
    after = store.read(spec.collections)
    replan = build_plan(spec, after)
    return Applied(plan=saved, results=tuple(results),
                   verification=verify(spec, before, after, results, replan))


def check(spec_path: str, source: str) -> Planned:
    """A drift check is a plan that is expected to be empty."""
    return plan(spec_path, source)


def snapshot(source: str, out: str, spec_path: str | None = None) -> State:
    """Export a source's collections (the spec's, or all) to a snapshot file."""
    collections = load_spec(spec_path).collections if spec_path else None
    state = open_store(source).read(collections)
    write_atomically(Path(out), dumps_snapshot(state))
    return state
