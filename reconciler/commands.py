"""One function per CLI verb: wire the stages together and return a result object.

spec → state → plan → (apply → re-read → re-diff → verify). Does the I/O the core must not (opening
stores, reading files); does not print, prompt or choose exit codes: that is the CLI's job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

from reconciler.audit import AuditReport, audit
from reconciler.compare import Comparison, compare
from reconciler.drift import Drift, baseline_findings, drift
from reconciler.errors import (
    ApplyInterrupted,
    ApplyRefused,
    JournalError,
    LeaseLost,
    PlanFileError,
    ReconcileError,
    SelectionError,
    ServerLost,
    SourceError,
    UnsafePlan,
)
from reconciler.files import FileProblem, read_regular
from reconciler.guard import admit
from reconciler.journal import DEFAULT_DIRECTORY, Journal, read_journal, read_run
from reconciler.kernel import Projection, projection, projection_union, reconcile
from reconciler.lease import DEFAULT_TTL, AnyLease, Holder, Unlocked, hold_lease
from reconciler.lease import force_unlock as release_by_force
from reconciler.model import CreateDocumentOp, OpResult, Plan, Selection, Spec, State
from reconciler.plan import build_plan, loads_plan, parse_plan_json, plan_bytes, plan_chunks
from reconciler.progress import Progress, Silent
from reconciler.restore import RULE as RESTORE_RULE
from reconciler.restore import RestoreCheck, RestorePlan, check_restore
from reconciler.restore import plan_restore as build_restore
from reconciler.restore import select as select_collections
from reconciler.rollback import (
    PastRun,
    RollbackCheck,
    RollbackPlan,
    check_rollback,
    plan_rollback,
    undo_to_data,
)
from reconciler.selection import equality_filters, parse_selection
from reconciler.sharded import MANIFEST, Manifest, ShardedPlan, assemble, parse_manifest, unreadable_shard
from reconciler.snapshot import SnapshotStore, snapshot_bytes, write_atomically
from reconciler.spec import load_spec, parse_spec
from reconciler.store import (
    DEFAULT_PARALLEL,
    DEFAULT_TIMEOUT,
    LOCK_COLLECTION,
    MAX_BATCH,
    FirestoreStore,
    parse_source,
)
from reconciler.store import SCHEME as FIRESTORE_SCHEME
from reconciler.timeline import Timelines, timelines
from reconciler.values import printable
from reconciler.verify import Verification, verify
from reconciler.workers import plan_on_cores

Store = SnapshotStore | FirestoreStore


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """How to reach and write a source; the defaults suit an interactive run."""

    progress: Progress = field(default_factory=Silent)
    max_writes_per_second: float | None = None
    batch_size: int = MAX_BATCH
    parallel: int = DEFAULT_PARALLEL  # Firestore commits in flight at once
    journal_dir: Path | str = DEFAULT_DIRECTORY  # a str only for --runner beam (gs://…)
    timeout: float = DEFAULT_TIMEOUT
    allow_empty: bool = False  # a live database holding none of the spec's collections is expected
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock_timeout: float = 0.0  # seconds to wait for a lease another run holds
    lease_ttl: float = DEFAULT_TTL  # seconds a lease lasts unless renewed
    lock_collection: str = LOCK_COLLECTION
    notify: Callable[[str], None] = lambda message: None  # notes for the operator (waiting, takeover)
    runner: str = "local"  # "beam": plan on Apache Beam (``beam.py``)
    pipeline: tuple[str, ...] = ()  # KEY=VALUE options for Beam
    read_partitions: int | None = None  # with Beam: partitions per collection read


def open_store(source: str, options: Options | None = None, create: bool = False) -> Store:
    """A source is a snapshot file path, or ``firestore://PROJECT[/DATABASE]``. ``create``: a
    snapshot file that does not exist reads as empty and is created by the first write."""
    options = options or Options()
    if source.startswith(FIRESTORE_SCHEME):
        return FirestoreStore(source, progress=options.progress, batch_size=options.batch_size,
                              max_writes_per_second=options.max_writes_per_second, parallel=options.parallel,
                              timeout=options.timeout, lock_collection=options.lock_collection)
    if "://" in source:
        raise SourceError(f"{source}: unknown source; give a snapshot file path or "
                          "firestore://PROJECT[/DATABASE]")
    return SnapshotStore(source, create=create)


def _read(source: str | Store, options: Options | None, collections: tuple[str, ...],
          fields: Projection | None, *, spec: Spec | None = None, selection: Selection | None = None,
          pin: bool = False) -> State:
    """One read of ``collections``. With a selection (and its spec), Firestore is asked only for
    the documents that carry the selected key values, and then for the documents standing at the
    IDs the selected series' new weeks would take (a create's precondition needs to know); a
    snapshot file is read whole, and the engine keeps the selection. ``pin``: a snapshot state
    names its file and the file's sha256, for a saved plan."""
    options = options or Options()
    store = open_store(source, options) if isinstance(source, str) else source
    if isinstance(store, FirestoreStore):
        where = equality_filters(spec, selection) if spec and selection else None
        state = store.read(collections, fields, where=where)
        if spec and selection:
            state = _with_taken_ids(store, spec, state, selection)
    else:
        state = store.read(collections, fields, pin=pin)
    if spec and selection:
        _require_match(spec, state, selection)
    _refuse_empty(state, collections, options)
    return state


def _with_taken_ids(store: FirestoreStore, spec: Spec, state: State, selection: Selection) -> State:
    """A selected read holds the selected series only; a new week's ID may be taken by a document
    of another series, which the plan must see to report it rather than propose a create that its
    precondition would refuse. One lookup of those IDs, at the read's time, settles it (a found
    document is not of the selection, so it adds no create of its own)."""
    ops, _ = reconcile(spec, state, selection)
    wanted = [op.path for op in ops if isinstance(op, CreateDocumentOp)]
    found = store.documents_at(wanted, state.read_time)
    if not found:
        return state
    collections = {name: dict(docs) for name, docs in state.collections.items()}
    for doc in found:
        collections.setdefault(doc.collection, {})[doc.id] = doc
    return replace(state, collections=collections)


def _require_match(spec: Spec, state: State, selection: Selection) -> None:
    """A selection that matches no document is a typo or the wrong source far more often than an
    intended no-op: say so rather than plan nothing and report it converged."""
    if not any(selection.matches_document(spec, doc)
               for doc in state.documents(spec.series.collection).values()):
        raise SelectionError(f"no series matches {selection.text()} in {state.source}: no document of "
                             f"{spec.series.collection} has these values; values match exactly, case "
                             "included: check the spelling and the source, or drop a field to widen it")


def _selection(spec: Spec, select: str | None) -> Selection | None:
    return parse_selection(select, spec.series.key) if select else None


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


def run_audit(spec_path: str, source: str, options: Options | None = None,
              select: str | None = None) -> AuditReport:
    spec = load_spec(spec_path)
    selection = _selection(spec, select)  # a bad --select costs no reading
    state = _read(source, options, spec.collections, projection(spec), spec=spec, selection=selection)
    return audit(spec, state, selection)


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    spec: Spec
    state: State
    plan: Plan
    read: dict[str, int] | None = None  # documents read per collection, when ``state`` does not hold them
    op_items: list[bytes] | None = None  # the ops encoded already (``plan.op_item``), in plan order

    def file_chunks(self) -> Iterator[bytes]:
        """The plan file's bytes, piece by piece (``plan.plan_chunks``)."""
        return plan_chunks(self.plan, self.op_items)

    @property
    def documents(self) -> dict[str, int]:
        """How many documents of each collection the plan read."""
        if self.read is not None:
            return self.read
        return {name: len(docs) for name, docs in self.state.collections.items()}


def plan(spec_path: str, source: str, options: Options | None = None, whole: bool = False,
         select: str | None = None, pin: bool = True, encode: bool = True) -> Planned:
    """``whole``: read whole documents (apply needs them for its journal and its proof); else only
    the fields the plan reads, which gives the same plan from less I/O and memory. ``select``:
    only the series whose key matches (FIELD=VALUE[,…]), and their responses. ``pin``: a snapshot
    file is pinned by its absolute path and sha256, so that the saved plan applies to it and only it."""
    spec = load_spec(spec_path)
    return _plan(spec, source, options, whole, _selection(spec, select), pin,  # a bad --select: no read
                 encode)


def plan_on_beam(spec_path: str, source: str, options: Options | None = None,
                 out: str | None = None) -> Planned:
    """The plan made by the Beam pipeline (``--runner beam``), written as a sharded plan to ``out``
    (a temporary directory, removed after, when None) and read back like a plan file."""
    options = options or Options()
    spec = load_spec(spec_path)
    beam = _beam()
    beam.check_options(options.pipeline)  # before the plan directory is made or anything read
    done = beam.plan(spec, source, out, options.pipeline,
                     partitions=options.read_partitions or beam.DEFAULT_PARTITIONS,
                     timeout=options.timeout, lock_collection=options.lock_collection)
    directory = done.manifest.rsplit("/", 1)[0]
    try:
        saved = _read_sharded(directory, beam.read_files if "://" in directory else None)
    finally:
        if out is None:
            beam.discard(directory)
    state = State(source=saved.source, read_time=saved.read_time, collections={}, file=saved.source_file)
    if (source.startswith(FIRESTORE_SCHEME) and not options.allow_empty
            and not any(done.documents.values())):
        _refuse_empty(state, tuple(done.documents), options)
    return Planned(spec=spec, state=state, plan=saved, read=done.documents)


def _refuse_selection_on_beam(select: str | None) -> None:
    if select:
        raise SelectionError("--select plans a few series: run it with --runner local (the default); "
                             "--runner beam is for all of them")


def _beam():
    """The Beam runner's module: only there when the ``beam`` extra is installed."""
    try:
        from reconciler import beam
    except ImportError as error:
        raise SourceError("--runner beam needs Apache Beam, which is not installed ("
                          f"{error}); install it with `pip install 'checkin-reconciler[beam]'`") from None
    return beam


def _plan(spec: Spec, source: str, options: Options | None, whole: bool,
          selection: Selection | None = None, pin: bool = False, encode: bool = False) -> Planned:
    """``whole``: the state is read whole and kept in the result (apply needs it); otherwise only
    the documents' counts are kept. ``encode``: the ops are encoded for the plan file as they are
    planned (``Planned.file_chunks``)."""
    store = open_store(source, options)
    state = _read(store, options, spec.collections, None if whole else projection(spec), spec=spec,
                  selection=selection, pin=pin)
    # A snapshot file is planned on every core (fork after the read), each encoding the ops it
    # planned for the plan file; a live read is planned here.
    if not isinstance(store, SnapshotStore):
        return Planned(spec=spec, state=state, plan=build_plan(spec, state, selection))
    if whole:  # apply goes on with the state it planned
        outcome = plan_on_cores(spec, state, selection, encode=False)[:2]
        return Planned(spec=spec, state=state, plan=build_plan(spec, state, selection, outcome))
    read = {name: len(docs) for name, docs in state.collections.items()}
    ops, findings, items = plan_on_cores(spec, state, selection, encode=encode, release=True)
    return Planned(spec=spec, state=state, plan=build_plan(spec, state, selection, (ops, findings)),
                   read=read, op_items=items)


def series(spec_path: str, source: str, select: str, options: Options | None = None) -> Timelines:
    """The weeks of the series ``select`` names, from one read of the spec's collections (the same
    read, projection and empty-database refusal as ``plan``), filtered in memory."""
    spec = load_spec(spec_path)
    selection = parse_selection(select, spec.series.key)  # a bad --select costs no reading
    state = _read(source, options, spec.collections, projection(spec), spec=spec, selection=selection)
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
    path, sharded = _plan_location(path)
    if sharded:
        saved = _read_sharded(path, _beam().read_files if "://" in path else None)
    else:
        saved = _read_plan_file(path)
    return _checked(saved, path, pinned)


def open_plan(path: str, pinned: str | None = None) -> tuple[Plan | ShardedPlan, Spec]:
    """A saved plan for the pipeline's apply (``--runner beam``): a sharded plan by its manifest
    alone, checked as ``load_plan`` checks a plan but for its shards, which the workers read and
    check; a plan file, whole, as ``load_plan`` reads it."""
    path, sharded = _plan_location(path)
    if not sharded:
        return load_plan(path, pinned)
    manifest, digest = _read_manifest(path, _beam().read_files if "://" in path else None)
    header, spec = _checked(manifest.header, path, pinned)
    counted = sum(shard.lines for shard in manifest.shards if shard.kind == "findings")
    if counted != manifest.summary.findings:  # the ops' counts are checked by the workers
        raise PlanFileError(f"{path}/{MANIFEST}: its summary says {manifest.summary.findings} findings, its "
                            f"shards list {counted}: the manifest was changed after the plan was written; "
                            "make a new plan with `reconcile plan --out`")
    return ShardedPlan(directory=path, manifest=replace(manifest, header=header), sha256=digest), spec


def _plan_location(path: str) -> tuple[str, bool]:
    """Where a saved plan is, and whether it is sharded: a directory (or gs:// prefix) with a
    manifest, named by itself or by its manifest."""
    if os.path.basename(path) == MANIFEST and os.path.isfile(path):
        return os.path.dirname(path) or ".", True  # a sharded plan named by its manifest
    if "://" in path:  # a sharded plan on a Beam filesystem (gs://BUCKET/PREFIX)
        return path.rstrip("/").removesuffix(f"/{MANIFEST}"), True
    return path, os.path.isdir(path)


def _checked(saved: Plan, path: str, pinned: str | None) -> tuple[Plan, Spec]:
    """A plan's header checked: its spec against the spec's hash and the reviewed spec, its
    selection against the spec's key, its snapshot file pinned. Needs no op."""
    spec = parse_spec(saved.spec_text.encode("utf-8"), saved.spec_path)
    if spec.sha256 != saved.spec_sha256:
        raise PlanFileError(f"{path}: the spec inside the plan does not match its sha256; the plan "
                            "file was edited. Make a new one with `reconcile plan --out`")
    saved = replace(saved, selection=_selection_of(saved, spec, path))
    if saved.source_file is None and not saved.source.startswith(FIRESTORE_SCHEME):
        raise PlanFileError(f'{path}: the plan names the snapshot file {saved.source} but no "source_file" '
                            "(its absolute path and sha256); make a new plan with `reconcile plan --out`")
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


def _read_plan_file(path: str) -> Plan:
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
    return loads_plan(text, path)


def _read_sharded(directory: str, reader: Callable[[str], bytes] | None = None) -> Plan:
    """A sharded plan (``plan --runner beam --out DIR``): its manifest and every shard it names, each
    checked against its sha256, assembled into the plan a plan file would hold. ``reader``: how to
    read a file that is not local (gs://…), from the Beam extra."""
    read = reader or read_regular
    manifest, _ = _read_manifest(directory, reader)
    contents = {}
    for shard in manifest.shards:
        try:
            contents[shard.name] = read(f"{directory}/{shard.name}")
        except (FileNotFoundError, FileProblem, OSError) as problem:
            raise PlanFileError(unreadable_shard(shard, getattr(problem, "strerror", None) or str(problem),
                                                 directory)) from None
    return assemble(manifest, contents, directory)


def _read_manifest(directory: str, reader: Callable[[str], bytes] | None = None) -> tuple[Manifest, str]:
    """A sharded plan's manifest, parsed and checked, and the sha256 of its bytes."""
    read = reader or read_regular
    manifest_path = f"{directory}/{MANIFEST}"
    try:
        manifest_bytes = read(manifest_path)
        manifest_text = manifest_bytes.decode("utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{directory}: a directory without {MANIFEST}; give a plan file, or the "
                            "directory `reconcile plan --runner beam --out DIR` wrote") from None
    except (FileProblem, OSError, UnicodeDecodeError) as problem:
        raise PlanFileError(f"{manifest_path}: cannot read the manifest "
                            f"({getattr(problem, 'strerror', None) or problem})") from None
    manifest = parse_manifest(parse_plan_json(manifest_text, manifest_path), manifest_path)
    return manifest, hashlib.sha256(manifest_bytes).hexdigest()


def _selection_of(saved: Plan, spec: Spec, path: str) -> Selection | None:
    """The plan's selection, checked against its spec's series key and put in the key's order."""
    if saved.selection is None:
        return None
    order = {name: index for index, name in enumerate(spec.series.key)}
    unknown = [name for name, _ in saved.selection.pairs if name not in order]
    if unknown:
        raise PlanFileError(f'{path}: "selection" names {printable(unknown[0])!r}, which is not a series '
                            f"key field of the plan's spec ({', '.join(spec.series.key)}); make a new "
                            "plan with `reconcile plan --select … --out`")
    return Selection(pairs=tuple(sorted(saved.selection.pairs, key=lambda pair: order[pair[0]])))


def plan_target(saved: Plan) -> str:
    """Where a saved plan applies: its pinned snapshot file (whatever the working directory), or
    its database."""
    return saved.source_file.path if saved.source_file is not None else saved.source


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    plan: Plan
    results: tuple[OpResult, ...]
    verification: Verification
    journal: Path | None


def plan_digest(plan: Plan | ShardedPlan) -> str:
    """What a lease records of the plan it applies: the sha256 of the plan file `plan --out` writes
    (of a sharded plan read by its manifest alone: of the manifest, which names each shard's)."""
    if isinstance(plan, ShardedPlan):
        return f"sha256:{plan.sha256}"
    return "sha256:" + hashlib.sha256(plan_bytes(plan)).hexdigest()


def _hold(store: Store, options: Options, digest: str | None, operation: str = "apply"):
    return hold_lease(store, operation=operation, plan_digest=digest, wait=options.lock_timeout,
                      ttl=options.lease_ttl, notify=options.notify)


def apply(saved: Plan | ShardedPlan, spec: Spec, before: State | None = None, options: Options | None = None,
          lease: AnyLease | None = None) -> Applied:
    """Under the lease (``lease`` when the caller holds it, else taken here and released at the
    end), admit the plan against a fresh read, write the admitted groups under their preconditions,
    journaled, then re-read, re-diff, verify.

    ``before``: the state the plan was made from, when it was made in this run; a saved plan is
    checked against a fresh read instead, and only what its spec derives from that read is written.
    A ``ShardedPlan`` (``open_plan``) is applied by the pipeline, whose workers read its shards.
    """
    options = options or Options()
    header = saved.header if isinstance(saved, ShardedPlan) else saved
    if header.spec_sha256 != spec.sha256:
        raise ApplyRefused("the plan was made from another version of the spec; re-run plan")
    work = _apply
    if options.runner == "beam":
        _refuse_on_beam(header)
        check_beam_options(options)  # a bad option takes no lease
        work = _apply_on_beam
    elif isinstance(saved, ShardedPlan):
        raise ApplyRefused(f"{saved.directory}: a plan read by its manifest alone is applied by the "
                           "pipeline's workers (--runner beam); load it whole to apply it here")
    store = open_store(plan_target(header), options)
    if lease is not None:
        return work(saved, spec, before, options, store, lease)
    with _hold(store, options, plan_digest(saved)) as held:
        return work(saved, spec, before, options, store, held)


def plan_and_apply(spec_path: str, source: str, review: Callable[[Planned], bool],
                   options: Options | None = None, select: str | None = None) -> Applied:
    """``apply --spec --source``: take the lease, plan, let ``review`` show the plan (it returns
    True when a person took time to approve it, so that the plan is then checked against a fresh
    read; it raises to cancel), apply. The lease is held from before the plan's read to the end,
    so no other run of this tool writes between the plan shown and its writes."""
    options = options or Options()
    spec = load_spec(spec_path)  # a bad spec takes no lease
    selection = _selection(spec, select)  # nor a bad --select
    store = open_store(source, options)
    if options.runner == "beam":
        _refuse_selection_on_beam(select)
        check_beam_options(options)  # nor a bad pipeline option
    with _hold(store, options, None) as lease:
        # Planned and applied in one run: checked against the data by each write's precondition
        # (and a fresh read after a prompt), not by a pin meant for a plan saved and applied later.
        if options.runner == "beam":  # the pipeline examines every series against a fresh read anyway
            planned = plan_on_beam(spec_path, source, options)
        else:
            planned = _plan(spec, source, options, whole=True, selection=selection)
        if lease.lease_id is not None:
            lease.describe(plan_digest(planned.plan))
        fresh = review(planned) or options.runner == "beam"
        return apply(planned.plan, spec, before=None if fresh else planned.state, options=options,
                     lease=lease)


def _apply(saved: Plan, spec: Spec, before: State | None, options: Options, store: Store,
           lease: AnyLease) -> Applied:
    derived = saved.ops if before is not None else None
    if before is None:
        before = _read(store, options, spec.collections, None, spec=spec, selection=saved.selection,
                       pin=saved.source_file is not None)
        _refuse_changed_file(saved, before)
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
        after = _read(store, options, spec.collections, None, spec=spec, selection=saved.selection)
        replan = build_plan(spec, after, saved.selection)
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


def check_beam_options(options: Options) -> None:
    """An apply's pipeline options, and where its workers write, refused before its lease."""
    _beam().check_options(options.pipeline, str(options.journal_dir))


def _refuse_on_beam(saved: Plan) -> None:
    """An apply on Beam writes every series of a Firestore database; the rest is applied here."""
    if not saved.source.startswith(FIRESTORE_SCHEME):
        raise SourceError(f"{plan_target(saved)}: --runner beam applies to a Firestore database; a "
                          "snapshot file is applied on this machine: drop --runner beam")
    _refuse_selection_on_beam(",".join(f"{k}={v}" for k, v in saved.selection.pairs) if saved.selection
                              else None)


def _apply_on_beam(saved: Plan | ShardedPlan, spec: Spec, before: State | None, options: Options,
                   store: Store, lease: AnyLease) -> Applied:
    """The apply as a pipeline (``beam.apply``) under this run's lease, which the workers check
    before each of their commits. ``before`` is not used: every series is examined against a fresh
    read, as a saved plan is. A sharded plan's shards are read by the workers, never here."""
    beam = _beam()
    assert lease.lease_id is not None
    header = saved.header if isinstance(saved, ShardedPlan) else saved
    journals = beam.journal_directory(str(options.journal_dir), header, options.pipeline)
    writing = beam.Writing(lease_id=lease.lease_id, lease_ttl=options.lease_ttl,
                           journals=journals, batch_size=options.batch_size,
                           max_writes_per_second=options.max_writes_per_second, timeout=options.timeout,
                           lock_collection=options.lock_collection)
    try:
        done = beam.apply(spec, saved, writing, options.pipeline,
                          partitions=options.read_partitions or beam.DEFAULT_PARTITIONS)
    except (KeyboardInterrupt, ReconcileError) as error:
        if isinstance(error, (UnsafePlan, PlanFileError)):
            raise  # the gate: refused before the first commit
        journaled = beam.journaled(journals)
        if journaled is not None and not journaled[0]:
            raise  # no commit was journaled, so none was sent
        counted = (f"{journaled[1]} writes were applied" if journaled is not None
                   else "some writes may have been applied")
        raise ApplyInterrupted(f"{_cause(error, header.source)}. {counted} (journals: {journals}). "
                               + _rerun_apply(error)) from error
    verification = done.verification
    return Applied(plan=header, results=verification.skipped, verification=verification,
                   journal=Path(journals) if "://" not in journals else journals)


def _refuse_changed_file(saved: Plan, before: State) -> None:
    """A saved plan was reviewed against one snapshot file's content: like a stale saved plan in
    Terraform, it is refused when the file holds anything else now (another file at that path,
    the app's writes since, or this plan applied already)."""
    pinned, now = saved.source_file, before.file
    if pinned is None or now is None or now.sha256 == pinned.sha256:
        return
    raise ApplyRefused(f"{pinned.path}: the snapshot file is not the one the plan was made from (sha256 "
                       f"{pinned.sha256[:12]} in the plan, {now.sha256[:12]} now: changed since, or "
                       "applied already); nothing was written. Make a new plan with `reconcile plan "
                       "--out`, or plan and apply in one run with `reconcile apply --spec SPEC --source "
                       "FILE`")


def _cause(error: BaseException, source: str, operation: str = "apply") -> str:
    if isinstance(error, ServerLost):
        return f"lost the database during {operation}: {error}"
    if isinstance(error, KeyboardInterrupt):
        return f"{source}: {operation} interrupted"
    return str(error)


_SAFE_TO_RERUN = ("re-running apply is safe: nothing is written twice and every write keeps its "
                  "precondition; for a saved plan, make a new one with `reconcile plan` first.")


def _rerun_apply(error: BaseException) -> str:
    """What to do after an apply stopped part-way: after a lost lease, another run may hold it now,
    and a re-run is refused until that run has ended."""
    if isinstance(error, LeaseLost):
        return ("Re-run apply once the run that holds the lease now has ended (until then a new run "
                "is refused, naming it); " + _SAFE_TO_RERUN)
    return _SAFE_TO_RERUN[0].upper() + _SAFE_TO_RERUN[1:]


def _interrupted(error: BaseException, journal: Journal, total: int, source: str,
                 operation: str = "apply", rerun: str | None = None) -> BaseException:
    """A run that ended before its last commit: say what was written, from the journal."""
    if not isinstance(error, (KeyboardInterrupt, ReconcileError)):
        return error  # a bug: reported as one, with the journal already closed
    cause = _cause(error, source, operation)
    doubt = (f", {journal.in_doubt} more were being committed and may or may not be" if journal.in_doubt
             else "")
    return ApplyInterrupted(
        f"{cause}. {journal.applied} of {total} writes were applied{doubt} (journal: {journal.path}). "
        + (rerun if rerun is not None else _rerun_apply(error)))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRollback:
    past: PastRun
    read: State  # the documents the journal names, as read for the plan
    plan: RollbackPlan


def plan_undo(journal: str, source: str | None = None, options: Options | None = None) -> PlannedRollback:
    """Read a journal, and the documents it names from the source it names, and decide what of its
    run may be undone. ``journal`` may be a run directory (``apply --runner beam``: a journal per
    bundle), rolled back as one run. ``source``: a check only; the journal's own source is the one
    written."""
    if "://" in journal:
        raise JournalError(f"{journal}: rollback reads journals from this machine's disk; copy them here "
                           f"first (e.g. `gcloud storage cp --recursive {journal} .`) and roll back the "
                           "copy; nothing was written")
    if os.path.isdir(journal):
        if options is not None and Path(options.journal_dir).resolve() == Path(journal).resolve():
            raise ApplyRefused(f"--journal-dir {journal}: the rollback's own journal would go into the run "
                               "directory it rolls back, which a later rollback of that directory (to "
                               "finish this one) would then refuse; give another --journal-dir (default "
                               f"{DEFAULT_DIRECTORY}). Nothing was written")
        past = read_run(journal)
    else:
        past = read_journal(journal)
    if source is not None and not same_source(source, past.source):
        raise ApplyRefused(f"{journal}: the journal records writes to {past.source}, not to {source}; "
                           "a rollback writes only to the source its journal names. Nothing was written")
    paths = sorted({written.op.path for written in past.written})
    read = open_store(past.source, options).read_documents(paths)
    current = {path: read.find(path) for path in paths}
    return PlannedRollback(past=past, read=read, plan=plan_rollback(past, current, read.read_time))


def same_source(given: str, journaled: str) -> bool:
    """The same database (``firestore://p`` is ``firestore://p/(default)``), or the same file."""
    if given.startswith(FIRESTORE_SCHEME) or journaled.startswith(FIRESTORE_SCHEME):
        return (given.startswith(FIRESTORE_SCHEME) and journaled.startswith(FIRESTORE_SCHEME)
                and parse_source(given) == parse_source(journaled))
    return Path(given).resolve() == Path(journaled).resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class RolledBack:
    planned: PlannedRollback
    results: tuple[OpResult, ...]
    check: RollbackCheck
    journal: Path | None


def undo(planned: PlannedRollback, options: Options | None = None) -> RolledBack:
    """Write the rollback plan's undo groups under their preconditions, journaled, then re-read
    every document it wrote and check that each is gone or back to its values before the run."""
    options = options or Options()
    plan, past = planned.plan, planned.past
    store = open_store(plan.source, options)
    if not plan.ops:
        return _undo(planned, options, store, None)
    with _hold(store, options, f"sha256:{past.sha256}", "rollback") as lease:
        return _undo(planned, options, store, lease)


def _undo(planned: PlannedRollback, options: Options, store: Store, lease: AnyLease | None) -> RolledBack:
    plan, past = planned.plan, planned.past
    results: list[OpResult] = []
    journal = None
    if plan.ops:
        undoes = {"journal": past.journal, "sha256": past.sha256, "operation": past.operation}
        journal = Journal(Path(options.journal_dir), plan, planned.read, options.clock(),
                          operation="rollback", undoes=undoes, encode_op=undo_to_data)
        try:
            results = store.undo(plan.groups(), options.clock(), journal,
                                 checkpoint=lease.check if lease else None)
        except BaseException as error:
            journal.close(options.clock(), error)
            if not isinstance(error, (KeyboardInterrupt, ReconcileError)):
                raise
            raise ApplyInterrupted(
                f"{_cause(error, plan.source).replace('during apply', 'during rollback')}. "
                f"{journal.applied} of {len(plan.ops)} undo writes were applied"
                + (f", {journal.in_doubt} more were being committed and may or may not be"
                   if journal.in_doubt else "")
                + f" (journal: {journal.path}). Re-running `reconcile rollback {past.journal}` is safe: what "
                "is already undone is recognised as such") from error
        journal.close(options.clock())
    paths = [op.path for op in plan.ops]
    try:
        after = store.read_documents(paths)
    except (KeyboardInterrupt, ReconcileError) as error:
        if journal is None:
            raise
        raise ApplyInterrupted(
            f"{_cause(error, plan.source)}, after the writes: {sum(r.applied for r in results)} of "
            f"{len(plan.ops)} undo writes were applied (journal: {journal.path}), but the re-read that "
            f"checks them did not finish; run `reconcile rollback {past.journal} --dry-run` to see what "
            "is left") from error
    check = check_rollback(plan, {path: planned.read.find(path) for path in paths}, results,
                           {path: after.find(path) for path in paths})
    return RolledBack(planned=planned, results=tuple(results), check=check,
                      journal=journal.path if journal else None)


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
          baseline: str | None = None, select: str | None = None) -> Checked:
    """A drift check is a plan that is expected to be empty; with ``baseline`` (an earlier drift
    report), findings that are new since it are drift too."""
    known = load_baseline(baseline) if baseline else None  # a bad baseline costs no reading
    if options is not None and options.runner == "beam":
        _refuse_selection_on_beam(select)
        planned = plan_on_beam(spec_path, source, options)
    else:
        planned = plan(spec_path, source, options, select=select, pin=False, encode=False)  # never saved
    return Checked(planned=planned, drift=drift(planned.plan, known, baseline, planned.spec.series.key))


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


# -- restore -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePlanned:
    plan: RestorePlan
    before: State  # the target's restored collections, as the plan read them


def plan_restore(snapshot_path: str, target: str, collections: tuple[str, ...] = (),
                 options: Options | None = None) -> RestorePlanned:
    """Read the snapshot file and the target's ``collections`` (default: every collection of the
    snapshot), and decide what to create. Writes nothing; a target file that does not exist reads
    as empty."""
    if "://" in snapshot_path:
        raise SourceError(f"{snapshot_path}: restore reads a snapshot file; export the database "
                          "first with `reconcile snapshot --source SRC --out FILE`, then restore that file")
    if _same_file(snapshot_path, target):
        raise SourceError(f"refusing to restore {snapshot_path} onto itself: --to names the same file; "
                          "give another snapshot file, or firestore://PROJECT[/DATABASE]")
    snapshot_state = SnapshotStore(snapshot_path).read(pin=True)  # pinned: the digest of what is read
    names = select_collections(snapshot_state, collections)
    assert snapshot_state.file is not None
    digest = snapshot_state.file.sha256
    before = open_store(target, options, create=True).read(names)
    return RestorePlanned(plan=build_restore(snapshot_state, before, names, digest), before=before)


def _same_file(snapshot_path: str, target: str) -> bool:
    if "://" in target:
        return False
    try:
        return os.path.samefile(snapshot_path, target)
    except OSError:  # one of them does not exist (yet): the same only by name
        return Path(snapshot_path).resolve() == Path(target).resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored:
    plan: RestorePlan
    results: tuple[OpResult, ...]
    check: RestoreCheck
    journal: Path | None


_RERUN_RESTORE = ("Re-running the same restore is safe: it creates only the documents still missing "
                  "and never touches one that exists.")


def restore(planned: RestorePlanned, options: Options | None = None) -> Restored:
    """Create the plan's documents, each only where none exists, through the store's journaled
    apply (batches, rate, deadlines, retries); then re-read the target and check the result."""
    options = options or Options()
    store = open_store(planned.plan.target, options, create=True)
    if not planned.plan.creates:
        return _restore(planned, options, store, None)
    with _hold(store, options, f"sha256:{planned.plan.snapshot_sha256}", "restore") as lease:
        return _restore(planned, options, store, lease)


def _restore(planned: RestorePlanned, options: Options, store: Store, lease: AnyLease | None) -> Restored:
    plan, before = planned.plan, planned.before
    results: list[OpResult] = []
    journal = None
    if plan.creates:
        journal = Journal(Path(options.journal_dir), _journal_plan(plan), before, options.clock(),
                          operation="restore")
        try:
            results = store.apply([(op,) for op in plan.creates], options.clock(), journal, before,
                                  checkpoint=lease.check if lease else None)
        except BaseException as error:
            journal.close(options.clock(), error)
            raise _interrupted(error, journal, len(plan.creates), plan.target, "restore",
                               _RERUN_RESTORE) from error
        journal.close(options.clock())
    try:
        after = store.read(plan.collections)
    except (KeyboardInterrupt, ReconcileError) as error:
        if journal is None:
            raise
        applied = sum(r.applied for r in results)
        raise ApplyInterrupted(
            f"{_cause(error, plan.target, 'restore')}, after the writes: {applied} of "
            f"{len(plan.creates)} documents were created (journal: {journal.path}), but the re-read "
            "that checks them did not finish; run the same restore again (with --dry-run) to see "
            "what is present") from error
    return Restored(plan=plan, results=tuple(results), check=check_restore(plan, before, after, results),
                    journal=journal.path if journal else None)


def _journal_plan(plan: RestorePlan) -> Plan:
    """A restore's journal is an apply's journal: its start line names the restore where an
    apply's names its spec, and the snapshot file's sha256 where an apply's has the spec's."""
    return Plan(spec_name=RESTORE_RULE, spec_path=plan.snapshot, spec_sha256=plan.snapshot_sha256,
                spec_text="", source=plan.target, read_time=plan.read_time, ops=plan.creates,
                findings=())
