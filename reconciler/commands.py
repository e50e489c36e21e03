"""One function per CLI verb: wire the stages together and return a result object.

spec → state → plan → (apply → re-read → re-diff → verify). Does the I/O the core must not (opening
stores, reading files); does not print, prompt or choose exit codes: that is the CLI's job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from reconciler.audit import AuditReport, audit
from reconciler.compare import Comparison, compare
from reconciler.drift import Drift, baseline_findings, drift
from reconciler.errors import (
    ApplyInterrupted,
    ApplyRefused,
    PlanFileError,
    ReconcileError,
    ServerLost,
    SourceError,
    UnsafePlan,
)
from reconciler.files import FileProblem, read_regular
from reconciler.guard import admit
from reconciler.journal import DEFAULT_DIRECTORY, Journal
from reconciler.kernel import Projection, projection, projection_union
from reconciler.lease import DEFAULT_TTL, AnyLease, Holder, Unlocked, hold_lease
from reconciler.lease import force_unlock as release_by_force
from reconciler.model import OpResult, Plan, Spec, State
from reconciler.plan import build_plan, loads_plan, plan_bytes
from reconciler.progress import Progress, Silent
from reconciler.snapshot import SnapshotStore, snapshot_bytes, write_atomically
from reconciler.spec import load_spec, parse_spec
from reconciler.store import DEFAULT_TIMEOUT, LOCK_COLLECTION, MAX_BATCH, FirestoreStore
from reconciler.store import SCHEME as FIRESTORE_SCHEME
from reconciler.timeline import Timelines, parse_selection, timelines
from reconciler.verify import Verification, verify

Store = SnapshotStore | FirestoreStore


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """How to reach and write a source; the defaults suit an interactive run."""

    progress: Progress = field(default_factory=Silent)
    max_writes_per_second: float | None = None
    batch_size: int = MAX_BATCH
    journal_dir: Path = DEFAULT_DIRECTORY
    timeout: float = DEFAULT_TIMEOUT
    allow_empty: bool = False  # a live database holding none of the spec's collections is expected
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock_timeout: float = 0.0  # seconds to wait for a lease another run holds
    lease_ttl: float = DEFAULT_TTL  # seconds a lease lasts unless renewed
    lock_collection: str = LOCK_COLLECTION
    notify: Callable[[str], None] = lambda message: None  # notes for the operator (waiting, takeover)


def open_store(source: str, options: Options | None = None) -> Store:
    """A source is a snapshot file path, or ``firestore://PROJECT[/DATABASE]``."""
    options = options or Options()
    if source.startswith(FIRESTORE_SCHEME):
        return FirestoreStore(source, progress=options.progress, batch_size=options.batch_size,
                              max_writes_per_second=options.max_writes_per_second,
                              timeout=options.timeout, lock_collection=options.lock_collection)
    if "://" in source:
        raise SourceError(f"{source}: unknown source; give a snapshot file path or "
                          "firestore://PROJECT[/DATABASE]")
    return SnapshotStore(source)


def _read(source: str, options: Options | None, collections: tuple[str, ...],
          fields: Projection | None) -> State:
    options = options or Options()
    state = open_store(source, options).read(collections, fields)
    _refuse_empty(state, collections, options)
    return state


def _refuse_empty(state: State, collections: tuple[str, ...], options: Options) -> None:
    """A live database that holds none of the spec's collections is most likely the wrong project or
    database: planning it would say "no changes, converged" about data it never saw."""
    if options.allow_empty or not state.source.startswith(FIRESTORE_SCHEME):
        return
    if not any(state.documents(name) for name in collections):
        raise SourceError(f"{state.source}: none of the spec's collections ({', '.join(collections)}) "
                          "holds a document; check the project and database ID, or pass --allow-empty "
                          "if an empty database is what you expect")


def validate(spec_path: str) -> Spec:
    return load_spec(spec_path)


def run_audit(spec_path: str, source: str, options: Options | None = None) -> AuditReport:
    spec = load_spec(spec_path)
    return audit(spec, _read(source, options, spec.collections, projection(spec)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    spec: Spec
    state: State
    plan: Plan


def plan(spec_path: str, source: str, options: Options | None = None, whole: bool = False) -> Planned:
    """``whole``: read whole documents (apply needs them for its journal and its proof); else only
    the fields the plan reads, which gives the same plan from less I/O and memory."""
    return _plan(load_spec(spec_path), source, options, whole)


def _plan(spec: Spec, source: str, options: Options | None, whole: bool) -> Planned:
    state = _read(source, options, spec.collections, None if whole else projection(spec))
    return Planned(spec=spec, state=state, plan=build_plan(spec, state))


def series(spec_path: str, source: str, select: str, options: Options | None = None) -> Timelines:
    """The weeks of the series ``select`` names, from one read of the spec's collections (the same
    read, projection and empty-database refusal as ``plan``), filtered in memory."""
    spec = load_spec(spec_path)
    selection = parse_selection(select, spec.series.key)  # a bad --select costs no reading
    state = _read(source, options, spec.collections, projection(spec))
    return timelines(spec, state, selection)


@dataclass(frozen=True, slots=True, kw_only=True)
class Compared:
    old: Planned
    new: Planned
    comparison: Comparison


def compare_specs(spec_path: str, old_spec_path: str, source: str,
                  options: Options | None = None) -> Compared:
    """Plan the new and the old spec on one read of the source, and compare the two plans."""
    new_spec, old_spec = load_spec(spec_path), load_spec(old_spec_path)
    collections = tuple(dict.fromkeys((*new_spec.collections, *old_spec.collections)))
    state = _read(source, options, collections, projection_union([new_spec, old_spec]))
    old = Planned(spec=old_spec, state=state, plan=build_plan(old_spec, state))
    new = Planned(spec=new_spec, state=state, plan=build_plan(new_spec, state))
    return Compared(old=old, new=new, comparison=compare(old.plan, new.plan))


def load_plan(path: str, pinned: str | None = None) -> tuple[Plan, Spec]:
    """A saved plan and the spec it carries, checked against the hash it was made with, and against
    the spec the operator reviewed: ``pinned`` when given, else the file the plan names, when it
    exists. The spec decides what apply may write, so a plan may not bring a spec of its own."""
    try:
        text = read_regular(path).decode("utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: plan file not found; write one with "
                            "`reconcile plan --spec SPEC --source SRC --out FILE`") from None
    except FileProblem as problem:
        raise PlanFileError(f"{path}: {problem}; give the plan file `reconcile plan --out` wrote") from None
    except UnicodeDecodeError as error:
        raise PlanFileError(f"{path}: not a plan file: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise PlanFileError(f"{path}: cannot read the plan file ({error.strerror})") from error
    saved = loads_plan(text, path)
    spec = parse_spec(saved.spec_text.encode("utf-8"), saved.spec_path)
    if spec.sha256 != saved.spec_sha256:
        raise PlanFileError(f"{path}: the spec inside the plan does not match its sha256; the plan "
                            "file was edited. Make a new one with `reconcile plan --out`")
    reference = pinned or saved.spec_path
    try:
        expected = hashlib.sha256(read_regular(reference)).hexdigest()
    except (OSError, FileProblem) as error:
        if pinned:
            raise PlanFileError(f"{pinned}: cannot read the spec to check the plan against "
                                f"({getattr(error, 'strerror', None) or error})") from None
        return saved, spec  # the plan is applied where its spec file is not: nothing to compare
    if expected != saved.spec_sha256:
        raise UnsafePlan(f"{path}: the plan carries a spec that is not {reference} (sha256 "
                         f"{saved.spec_sha256[:12]} in the plan, {expected[:12]} in the file); refusing "
                         "it, nothing was written. Re-run `reconcile plan` with the spec you mean, or "
                         "pass --spec with the spec the plan was reviewed with")
    return saved, spec


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    plan: Plan
    results: tuple[OpResult, ...]
    verification: Verification
    journal: Path | None


def plan_digest(plan: Plan) -> str:
    """What a lease records of the plan it applies: the sha256 of the plan file `plan --out` writes."""
    return "sha256:" + hashlib.sha256(plan_bytes(plan)).hexdigest()


def _hold(store: Store, options: Options, digest: str | None):
    return hold_lease(store, operation="apply", plan_digest=digest, wait=options.lock_timeout,
                      ttl=options.lease_ttl, notify=options.notify)


def apply(saved: Plan, spec: Spec, before: State | None = None, options: Options | None = None,
          lease: AnyLease | None = None) -> Applied:
    """Under the lease (``lease`` when the caller holds it, else taken here and released at the
    end), admit the plan against a fresh read, write the admitted groups under their preconditions,
    journaled, then re-read, re-diff, verify.

    ``before``: the state the plan was made from, when it was made in this run; a saved plan is
    checked against a fresh read instead, and only what its spec derives from that read is written.
    """
    options = options or Options()
    if saved.spec_sha256 != spec.sha256:
        raise ApplyRefused("the plan was made from another version of the spec; re-run plan")
    store = open_store(saved.source, options)
    if lease is not None:
        return _apply(saved, spec, before, options, store, lease)
    with _hold(store, options, plan_digest(saved)) as held:
        return _apply(saved, spec, before, options, store, held)


def plan_and_apply(spec_path: str, source: str, review: Callable[[Planned], bool],
                   options: Options | None = None) -> Applied:
    """``apply --spec --source``: take the lease, plan, let ``review`` show the plan (it returns
    True when a person took time to approve it, so that the plan is then checked against a fresh
    read; it raises to cancel), apply. The lease is held from before the plan's read to the end,
    so no other run of this tool writes between the plan shown and its writes."""
    options = options or Options()
    spec = load_spec(spec_path)  # a bad spec takes no lease
    store = open_store(source, options)
    with _hold(store, options, None) as lease:
        planned = _plan(spec, source, options, whole=True)
        if lease.lease_id is not None:
            lease.describe(plan_digest(planned.plan))
        fresh = review(planned)
        return apply(planned.plan, spec, before=None if fresh else planned.state, options=options,
                     lease=lease)


def _apply(saved: Plan, spec: Spec, before: State | None, options: Options, store: Store,
           lease: AnyLease) -> Applied:
    derived = saved.ops if before is not None else None
    if before is None:
        before = store.read(spec.collections)
        _refuse_empty(before, spec.collections, options)
    admission = admit(spec, saved, before, derived)
    results: list[OpResult] = list(admission.skipped)
    journal = None
    if saved.ops:
        journal = Journal(Path(options.journal_dir), saved, before, options.clock())
        try:
            if admission.skipped:
                journal.not_sent(admission.skipped)
            results += store.apply(list(admission.groups), options.clock(), journal, before,
                                   checkpoint=lease.check)
        except BaseException as error:
            journal.close(options.clock(), error)
            raise _interrupted(error, journal, admission.ops, saved.source) from error
        journal.close(options.clock())
    try:
        after = store.read(spec.collections)
        replan = build_plan(spec, after)
        verification = verify(spec, before, after, results, replan)
    except (KeyboardInterrupt, ReconcileError) as error:
        if journal is None:
            raise
        # The writes are done and journaled; only the proof is missing. Say so, not "nothing written".
        applied = sum(r.applied for r in results)
        raise ApplyInterrupted(
            f"{_cause(error, saved.source)}, after the writes: {applied} of {admission.ops} writes were "
            f"applied (journal: {journal.path}), but the validation re-read did not finish; run "
            "`reconcile check` to see whether the data has converged") from error
    return Applied(plan=saved, results=tuple(results), journal=journal.path if journal else None,
                   verification=verification)


def _cause(error: BaseException, source: str) -> str:
    if isinstance(error, ServerLost):
        return f"lost the database during apply: {error}"
    if isinstance(error, KeyboardInterrupt):
        return f"{source}: apply interrupted"
    return str(error)


def _interrupted(error: BaseException, journal: Journal, total: int, source: str) -> BaseException:
    """An apply that ended before its last commit: say what was written, from the journal."""
    if not isinstance(error, (KeyboardInterrupt, ReconcileError)):
        return error  # a bug: reported as one, with the journal already closed
    cause = _cause(error, source)
    doubt = (f", {journal.in_doubt} more were being committed and may or may not be" if journal.in_doubt
             else "")
    return ApplyInterrupted(
        f"{cause}. {journal.applied} of {total} writes were applied{doubt} (journal: {journal.path}). "
        "Re-running apply is safe: nothing is written twice and every write keeps its precondition; "
        "for a saved plan, make a new one with `reconcile plan` first.")


def force_unlock(lease_id: str, source: str, confirm: Callable[[Holder, datetime], None],
                 options: Options | None = None) -> Unlocked:
    """Release the lease ``lease_id`` another run holds on ``source`` (only that one); ``confirm``
    raises to cancel."""
    return release_by_force(open_store(source, options or Options()), lease_id, confirm)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    planned: Planned
    drift: Drift


def check(spec_path: str, source: str, options: Options | None = None,
          baseline: str | None = None) -> Checked:
    """A drift check is a plan that is expected to be empty; with ``baseline`` (an earlier drift
    report), findings that are new since it are drift too."""
    known = load_baseline(baseline) if baseline else None  # a bad baseline costs no reading
    planned = plan(spec_path, source, options)
    return Checked(planned=planned, drift=drift(planned.plan, known, baseline))


def load_baseline(path: str) -> frozenset[tuple[str, str]]:
    try:
        raw = read_regular(path, limit=BASELINE_LIMIT)
    except FileNotFoundError:
        raise SourceError(f"{path}: baseline not found; give a drift report an earlier "
                          "`reconcile check --format json` wrote") from None
    except (FileProblem, OSError) as problem:
        raise SourceError(f"{path}: cannot read the baseline: it "
                          f"{getattr(problem, 'strerror', None) or problem}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise SourceError(f"{path}: the baseline is not valid JSON ({error.msg}, line "
                          f"{error.lineno})") from None
    return baseline_findings(data, path)


BASELINE_LIMIT = 1 << 30  # bytes: a drift report lists each finding in a few dozen bytes


def snapshot(source: str, out: str, spec_path: str | None = None, options: Options | None = None) -> State:
    """Export a source's collections (the spec's, or all) to a snapshot file."""
    collections = load_spec(spec_path).collections if spec_path else None
    state = open_store(source, options).read(collections)
    write_atomically(Path(out), snapshot_bytes(state))
    return state
