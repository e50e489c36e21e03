"""The plan on Apache Beam (``--runner beam``): the same kernel, spread over many workers.

One process holds about a kilobyte and a half per document; past a few tens of millions of documents
a plan needs many machines. The kernel was built for it: each document is classified on its own, and
each series is reconciled from its own documents and the IDs its new weeks would take. The pipeline:

    partitions of each collection (one read time)      the launcher: Firestore's server time, and
      │                                                 split points (partition query; by ID on
      ▼                                                 the emulator)
    read each partition at that read time, projected    _ReadPartition (a worker per partition)
      ▼
    classify each document on its own                   _Classify: kernel.classify_member /
      │  member (key, week) · response (key, week)        classify_response, or a finding
      │  · a finding · an ID that has a new week's form
      ▼
    key by the series' ID stem, CoGroupByKey of        the stem (kernel.series_stem) is what every
      members, responses, taken IDs                      new week ID of the series starts with, so a
      ▼                                                  taken ID meets its series without a lookup
    reconcile_series per series                         _PlanSeries: the local engine's own kernel
      ▼
    ops and findings → shards + manifest (sharded.py)   read back by apply, show and the renderers

A snapshot file is read by the launcher (it is one file) and its documents handed to the pipeline.
The apply of a sharded plan reads its manifest in the launcher and its shards in the workers
(``_ReadShard``), each checked there against the manifest; a shard that is not the one written
refuses the whole plan at the gate, before any commit, as an op the spec could never make does.
Imports Apache Beam: install the ``beam`` extra. Only this module does.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.runner import PipelineRunner, create_runner

from reconciler.errors import PlanFileError, ReconcileError, SourceError, UnsafePlan
from reconciler.files import make_private_directory
from reconciler.guard import examine, refusal
from reconciler.journal import Journal
from reconciler.kernel import Projection, projection, stem_of_id
from reconciler.keyed import keyed, placed, plan_stem
from reconciler.lease import HeldElsewhere
from reconciler.model import (
    CreateDocumentOp,
    Document,
    Finding,
    Op,
    OpResult,
    Plan,
    Spec,
    State,
    Summary,
    summarize,
)
from reconciler.sharded import (
    KINDS,
    MANIFEST,
    Shard,
    ShardedPlan,
    decode_line,
    finding_line,
    manifest_bytes,
    op_line,
    shard_problem,
    summary_problem,
    unreadable_plan,
    unreadable_shard,
)
from reconciler.snapshot import SnapshotStore
from reconciler.store import SCHEME, FirestoreStore
from reconciler.verify import Verification, verify

RUNNER = "beam"
DEFAULT_PARTITIONS = 16  # read partitions per collection
_COUNTERS = "reconcile"


@dataclass(frozen=True, slots=True)
class Planned:
    """What a Beam plan run leaves: the manifest written, the plan's header, and how many
    documents of each collection the pipeline read."""

    manifest: str
    header: Plan
    documents: dict[str, int]


def pipeline_options(pairs: Sequence[str]) -> PipelineOptions:
    """``KEY=VALUE`` pairs as Beam's own ``--KEY=VALUE`` options; the DirectRunner unless a runner is
    named. A pair that is not KEY=VALUE is an error naming it."""
    args = []
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip().removeprefix("--")
        if not equals or not key:
            raise SourceError(f"--pipeline-option {pair!r}: expected KEY=VALUE, e.g. runner=DataflowRunner")
        args.append(f"--{key}={value}")
    if not any(arg.startswith("--runner=") for arg in args):
        args.append("--runner=DirectRunner")
    options = PipelineOptions(args)
    parsers: list[argparse.ArgumentParser] = []
    said = io.StringIO()
    try:  # Beam's parser prints its usage and exits on a bad value, and drops a name it does not know
        with contextlib.redirect_stderr(said):
            options.get_all_options(add_extra_args_fn=parsers.append)
            _, unknown = parsers[0].parse_known_args(args)
    except SystemExit as error:
        reason = _first_line(Exception(said.getvalue())).partition(": error: ")[2] or "not a valid value"
        raise SourceError(f"--pipeline-option: {reason} (see Beam's pipeline options)") from error
    if unknown:
        raise SourceError(f"--pipeline-option {unknown[0].removeprefix('--')!r}: not an option of Beam's "
                          "pipelines (a misspelt name would be ignored, e.g. the runner's, and the job "
                          "run elsewhere than meant)")
    _require_runner(options.view_as(StandardOptions).runner)
    return options


def _require_runner(name: str | None) -> None:
    """A runner Beam has, named as Beam names it (``DataflowRunner``, ``dataflow``) or by the full
    name of a runner class; else one sentence naming the option. Beam itself would say so only
    when the pipeline is built, in a message of its own."""
    if not name:
        return
    said = f"--pipeline-option runner={name}"
    if "." not in name:
        try:
            create_runner(name)
        except ValueError:
            raise SourceError(f"{said}: Beam has no runner of that name (it has "
                              f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or the full name of a "
                              "runner class)") from None
        except ImportError as error:
            raise SourceError(f"{said}: this runner is not installed here ({_first_line(error)})") from None
        return
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise SourceError(f"{said}: no such runner class here ({_first_line(error)})") from None
    if not (isinstance(found, type) and issubclass(found, PipelineRunner)):
        raise SourceError(f"{said}: {name} is not a Beam runner (a PipelineRunner class)")


def check_options(options: Sequence[str], journal_dir: str | None = None) -> None:
    """Everything about a run's pipeline options that can be refused before it takes a lease or
    reads anything: each option (``pipeline_options``); and, for an apply (``journal_dir``: its
    journals), that the workers of a runner elsewhere can write its temporary results and journals."""
    pipeline_options(options)
    if journal_dir is not None:
        _temporary_location(options)
        _require_reachable(journal_dir, options)


# -- the pipeline's steps --------------------------------------------------------------------------------


class _ReadPartition(beam.DoFn):
    """Reads one partition of one collection at the run's read time: (collection, document). The
    read time is fixed, or given as a side input (``read_time``) when it is taken in the pipeline."""

    def __init__(self, source: str, read_time: datetime | None, fields: Projection | None, timeout: float,
                 lock_collection: str, counter: str = "documents") -> None:
        self.source, self.read_time, self.fields = source, read_time, fields
        self.timeout, self.lock_collection, self.counter = timeout, lock_collection, counter
        self.store: FirestoreStore | None = None

    def setup(self) -> None:
        self.store = FirestoreStore(self.source, timeout=self.timeout, lock_collection=self.lock_collection)

    def process(self, part: tuple[str, str | None, str | None],
                read_time: datetime | None = None) -> Iterator[tuple[str, Document]]:
        collection, start, end = part
        assert self.store is not None
        at = read_time or self.read_time
        assert at is not None
        read = Metrics.counter(_COUNTERS, f"{self.counter}:{collection}")
        for doc in self.store.read_range(collection, start, end, at, self.fields):
            read.inc()
            yield collection, doc


class _Classify(beam.DoFn):
    """The per-document step: every output keyed by the series' stem, findings apart."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def process(self, element: tuple[str, Document]) -> Iterator[Any]:
        for tag, value in keyed(self.spec, *element):
            yield TaggedOutput(tag, value)


class _PlanSeries(beam.DoFn):
    """The series of one stem (one, but for a hash collision) through the local engine's kernel."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[Any]:
        _, joined = element
        for item in plan_stem(self.spec, joined["members"], joined["responses"], joined["taken"]):
            yield TaggedOutput("ops" if not isinstance(item, Finding) else "findings", item)


class _Count(beam.DoFn):
    """Counts what a plan file's summary counts, as the pipeline's metrics; passes the op on."""

    def process(self, op: Op) -> Iterator[Op]:
        counted = summarize((op,), 0)
        for name, count in (("create", counted.create), ("fill", counted.fill),
                            ("link", int(op.group == op.path))):  # a link is counted at its assignment
            if count:
                Metrics.counter(_COUNTERS, name).inc(count)
        yield op


# -- plan ----------------------------------------------------------------------------------------------


def plan(spec: Spec, source: str, out: str | None, options: Sequence[str], *,
         partitions: int = DEFAULT_PARTITIONS, timeout: float = 60.0,
         lock_collection: str = "_reconcile_locks") -> Planned:
    """Run the plan pipeline over ``source`` and write its sharded plan to ``out`` (a new or empty
    directory, local or on a Beam filesystem such as gs://; a temporary one when None)."""
    directory = out or _temporary_directory(options)
    _require_empty(directory)
    collections = _collections(spec)
    fields = projection(spec)
    header = Plan(spec_name=spec.name, spec_path=spec.source, spec_sha256=spec.sha256, spec_text=spec.text,
                  source=source, read_time=None, ops=(), findings=())
    pipeline = beam.Pipeline(options=pipeline_options(options))
    if source.startswith(SCHEME):
        store = FirestoreStore(source, timeout=timeout, lock_collection=lock_collection)
        read_time = store.server_time(collections[0])
        header = replace(header, read_time=read_time)
        parts = [(name, start, end) for name in collections
                 for start, end in store.partitions(name, partitions, read_time)]
        docs = (pipeline | "Partitions" >> beam.Create(parts) | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadPartition(source, read_time, fields, timeout, lock_collection)))
    else:
        state = SnapshotStore(source).read(collections, fields, pin=True)
        header = replace(header, read_time=state.read_time, source=state.source, source_file=state.file)
        docs = pipeline | "Documents" >> beam.Create(_documents_of(state))
    classified = docs | "Classify" >> beam.ParDo(_Classify(spec)).with_outputs(
        "members", "responses", "taken", "findings")
    joined = ({"members": classified.members, "responses": classified.responses, "taken": classified.taken}
              | "BySeries" >> beam.CoGroupByKey())
    planned = joined | "PlanSeries" >> beam.ParDo(_PlanSeries(spec)).with_outputs("ops", "findings")
    findings = ((classified.findings, planned.findings) | "AllFindings" >> beam.Flatten())
    (planned.ops | "CountOps" >> beam.ParDo(_Count()) | "EncodeOps" >> beam.Map(op_line)
     | "WriteOps" >> _write(directory, "ops"))
    (findings | "CountFindings" >> beam.Map(_counted_finding) | "EncodeFindings" >> beam.Map(finding_line)
     | "WriteFindings" >> _write(directory, "findings"))
    counts = _run(pipeline)
    # Counted by the read workers on Firestore; a snapshot file was read here.
    documents = ({name: counts.get(f"documents:{name}", 0) for name in collections}
                 if source.startswith(SCHEME) else {name: len(state.documents(name)) for name in collections})
    summary = {name: counts.get(name, 0) for name in ("create", "link", "fill", "findings")}
    manifest = FileSystems.join(directory, MANIFEST)
    with _filesystem(directory, "write the plan's manifest to"):
        shards = _shards(directory)
    if {shard.kind for shard in shards} != set(KINDS):
        # The pipeline writes at least one shard of each kind, empty or not: none here means the
        # workers wrote somewhere this process cannot see. An empty plan read from it would say
        # "converged" about data nobody planned.
        raise SourceError(f"{directory}: the pipeline finished but no shard of its plan is there (found "
                          f"{len(shards)}); its workers must write where this process reads: give a "
                          "directory both can reach (gs://BUCKET/PREFIX on Dataflow)")
    with _filesystem(directory, "write the plan's manifest to"), FileSystems.create(manifest) as handle:
        handle.write(manifest_bytes(header, shards, RUNNER, summary))
    return Planned(manifest=manifest, header=header, documents=documents)


def read_files(path: str) -> bytes:
    """A whole file on any filesystem Beam knows (gs://…); FileNotFoundError when there is none."""
    with _filesystem(path, "read"):
        if not FileSystems.exists(path):
            raise FileNotFoundError(path)
        with FileSystems.open(path) as handle:
            return handle.read()


@contextlib.contextmanager
def _filesystem(path: str, what: str) -> Iterator[None]:
    """A filesystem's failure (no such bucket, no credentials, no network) as one sentence."""
    try:
        yield
    except (FileNotFoundError, ReconcileError):
        raise
    except Exception as error:  # the filesystems raise their clients' own errors
        raise SourceError(f"{path}: cannot {what} it ({_first_line(error)})") from error


def discard(directory: str) -> None:
    """Remove a plan directory this run made only to read back (local or on gs://); best effort."""
    try:
        if "://" in directory:
            FileSystems.delete([directory.rstrip("/") + "/"])
        else:
            shutil.rmtree(directory, ignore_errors=True)
    except Exception:  # a temporary plan left behind is harmless
        pass


def _temporary_directory(options: Sequence[str]) -> str:
    """Where a plan that is not kept (``check``) is written: under the pipeline's temp_location
    when it names one on a shared filesystem (gs://…), which remote workers can write; else a
    local temporary directory, which only the DirectRunner's workers (this machine) can."""
    temp = _temporary_location(options, "(or plan with --out gs://BUCKET/PREFIX)")
    if temp is not None:
        return FileSystems.join(temp, f"reconcile-plan-{uuid.uuid4().hex}")
    return tempfile.mkdtemp(prefix="reconcile-beam-plan-")


def _temporary_location(options: Sequence[str], otherwise: str = "") -> str | None:
    """The pipeline's temp_location on a shared filesystem (gs://…), or None for this machine's
    temporary directory, which only a local runner's workers can write (else an error, which
    ends with ``otherwise``)."""
    parsed = pipeline_options(options).get_all_options()
    temp = parsed.get("temp_location") or ""
    if "://" in temp:
        return temp.rstrip("/")
    if not _local_runner(options):
        runner = (parsed.get("runner") or "DirectRunner").rsplit(".", 1)[-1]
        raise SourceError(f"--runner beam with runner={runner}: its workers cannot write this machine's "
                          "temporary directory; give --pipeline-option temp_location=gs://BUCKET/tmp"
                          + (f" {otherwise}" if otherwise else ""))
    return None


def _local_runner(options: Sequence[str]) -> bool:
    """Whether the pipeline's workers run on this machine (and so can write its disk)."""
    runner = (pipeline_options(options).get_all_options().get("runner") or "DirectRunner").rsplit(".", 1)[-1]
    return runner in ("DirectRunner", "PrismRunner", "FnApiRunner", "BundleBasedDirectRunner")


def _documents_of(state: State) -> list[tuple[str, Document]]:
    return [(name, doc) for name, docs in state.collections.items() for doc in docs.values()]


def _counted_finding(finding: Finding) -> Finding:
    Metrics.counter(_COUNTERS, "findings").inc()
    return finding


def _write(directory: str, kind: str) -> beam.PTransform:
    return beam.io.WriteToText(FileSystems.join(directory, kind), file_name_suffix=".jsonl",
                               shard_name_template="-SSSSS-of-NNNNN", coder=beam.coders.BytesCoder(),
                               append_trailing_newlines=False)


def _run(pipeline: beam.Pipeline) -> dict[str, int]:
    """Run the pipeline to its end; its counters by name. A failure in a worker is one sentence."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:  # a worker's error arrives wrapped by the runner: find ours
        # A step that fails raises a copy of the error with " [while running 'STEP']" added to its
        # message, while handling the original: the innermost of ours is the one we raised.
        cause: BaseException | None = None
        link: BaseException | None = error
        while link is not None:
            if isinstance(link, ReconcileError):
                cause = link
            link = link.__cause__ or link.__context__
        if cause is error:
            raise
        if cause is not None:
            raise type(cause)(str(cause)) from error
        raise SourceError(f"the Beam pipeline failed: {_first_line(error)}") from error
    counters = result.metrics().query(MetricsFilter().with_namespace(_COUNTERS))["counters"]
    return {counter.key.metric.name: counter.committed or counter.attempted or 0 for counter in counters}


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _require_empty(directory: str) -> None:
    """A plan directory is new or empty: shards of an earlier plan must never mix with this one's."""
    if "://" not in directory:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise SourceError(f"{directory}: cannot create the plan directory ({error.strerror})") from error
    with _filesystem(directory, "list"):
        found = FileSystems.match([FileSystems.join(directory, "*")])[0].metadata_list
    if found:
        raise SourceError(f"{directory}: the plan directory is not empty ({len(found)} files); give a "
                          "new or empty directory, so that no shard of another plan is read as this one's")


def _shards(directory: str) -> list[Shard]:
    """Every shard the pipeline wrote, with its sha256 and number of lines (read back once)."""
    shards = []
    for kind in KINDS:
        pattern = FileSystems.join(directory, f"{kind}-*-of-*.jsonl")
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            digest, lines = hashlib.sha256(), 0
            with FileSystems.open(metadata.path) as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    lines += chunk.count(b"\n")
            shards.append(Shard(kind=kind, name=metadata.path.rsplit("/", 1)[-1], sha256=digest.hexdigest(),
                                lines=lines))
    return shards


# -- apply ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Writing:
    """How the workers write: the lease their launcher holds, and the local apply's write options."""

    lease_id: str
    lease_ttl: float
    journals: str  # this run's directory of journals (``journal_directory``)
    batch_size: int
    max_writes_per_second: float | None
    timeout: float
    lock_collection: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What an apply pipeline leaves: its validation, merged from every series', and the documents
    it read before its writes."""

    verification: Verification
    read: dict[str, int]


def apply(spec: Spec, saved: Plan | ShardedPlan, writing: Writing, options: Sequence[str], *,
          partitions: int = DEFAULT_PARTITIONS) -> Applied:
    """Apply ``saved`` to its Firestore database as a pipeline, under the lease the caller holds
    (``writing.lease_id``). A sharded plan's shards are read by the workers, each checked against
    its manifest (``_ReadShard``); a plan loaded whole is handed to them. Each series' share of the
    plan is examined against a fresh read of that series (``guard.examine``); any reason to refuse,
    anywhere (a shard that is not the one written, an op the spec could never make), stops the run
    before the first commit (the gate); the admitted groups, as the spec derives them, are committed
    by the workers under their preconditions, each commit after a check of the lease, journaled per
    bundle; then the database is read again and each series verified as the local apply verifies
    the whole."""
    header = replace(saved.header if isinstance(saved, ShardedPlan) else saved, ops=(), findings=())
    total = saved.manifest.ops if isinstance(saved, ShardedPlan) else len(saved.ops)
    source = header.source
    collections = _collections(spec)
    store = FirestoreStore(source, timeout=writing.timeout, lock_collection=writing.lock_collection)
    results = _temporary_directory(options)
    read_time = store.server_time(collections[0])
    parts = [(name, start, end) for name in collections
             for start, end in store.partitions(name, partitions, read_time)]
    pipeline = beam.Pipeline(options=pipeline_options(options))

    def read(label: str, at: datetime | None, counter: str, **side: Any) -> beam.PCollection:
        return (pipeline | f"{label}Partitions" >> beam.Create(parts) | f"{label}Spread" >> beam.Reshuffle()
                | f"{label}Read" >> beam.ParDo(_ReadPartition(source, at, None, writing.timeout,
                                                              writing.lock_collection, counter), **side))

    before = (read("Before", read_time, "documents")
              | "PlaceBefore" >> beam.ParDo(_Place(spec, after=False)).with_outputs(*_PLACED))
    if isinstance(saved, ShardedPlan):
        ops, unread = _read_shards(pipeline, saved)
    else:
        ops, unread = pipeline | "Proposed" >> beam.Create(saved.ops), ()
    proposed = ops | "ByAnchor" >> beam.Map(lambda op: (op.group or op.path, op))
    # Each op meets the document it writes as read now, and each anchor its document's series.
    located = ({"doc": before.anchors, "own": proposed | "OpsByPath" >> beam.Map(lambda anchored: (
                    anchored[1].path, anchored[1])),
                "anchored": proposed}
               | "AtPath" >> beam.CoGroupByKey() | "Locate" >> beam.ParDo(_Locate()))
    routed = (located | "AtAnchor" >> beam.GroupByKey()
              | "Route" >> beam.ParDo(_Route()).with_outputs("proposed"))
    admitted = ({"members": before.members, "responses": before.responses, "taken": before.taken,
                 "proposed": routed.proposed}
                | "BySeries" >> beam.CoGroupByKey()
                | "Admit" >> beam.ParDo(_Admit(spec, header)).with_outputs("groups", "skipped", "problems"))
    twice = (proposed | "PathOfOp" >> beam.Map(lambda anchored: (anchored[1].path, 1))
             | "OpsPerPath" >> beam.CombinePerKey(sum) | "WrittenTwice" >> beam.FlatMap(_written_twice))
    unsafe = ((admitted.problems, twice) | "Problems" >> beam.Flatten()
              | "Unsafe" >> beam.Map(lambda problem: (_UNSAFE, problem)))
    problems = (unsafe, *unread) | "Refusals" >> beam.Flatten() | "Distinct" >> beam.Distinct()
    count = problems | "CountProblems" >> beam.combiners.Count.PerKey()
    shown = problems | "ShownProblems" >> beam.combiners.Top.Smallest(3)
    gate = (pipeline | "Go" >> beam.Create([None])
            | "Gate" >> beam.ParDo(_Gate(), counts=beam.pvalue.AsDict(count),
                                   shown=beam.pvalue.AsSingleton(shown)))
    written = (admitted.groups | "SpreadGroups" >> beam.Reshuffle()
               | "Batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=writing.batch_size)
               | "Commit" >> beam.ParDo(_Commit(header, writing, total, read_time),
                                        go=beam.pvalue.AsSingleton(gate)))
    outcomes = (written, admitted.skipped) | "Outcomes" >> beam.Flatten()
    after_time = (outcomes | "Written" >> beam.combiners.Count.Globally()
                  | "ReadTimeAfter" >> beam.ParDo(_ServerTime(source, collections[0], writing.timeout)))
    after = (read("After", None, "after", read_time=beam.pvalue.AsSingleton(after_time))
             | "PlaceAfter" >> beam.ParDo(_Place(spec, after=True)).with_outputs(*_PLACED))
    verified = ({"before": before.verify, "after": after.verify, "taken": after.taken, "outcomes": outcomes}
                | "ByVerifyKey" >> beam.CoGroupByKey()
                | "Verify" >> beam.ParDo(_Verify(spec, header, read_time),
                                         after_time=beam.pvalue.AsSingleton(after_time))
                | "Merge" >> beam.CombineGlobally(_Merge()))
    created = outcomes | "Created" >> beam.FlatMap(
        lambda keyed_result: [(keyed_result[1].op.path, True)] if _created(keyed_result[1]) else [])
    gone = ({"before": before.paths, "after": after.paths, "created": created}
            | "ByPath" >> beam.CoGroupByKey() | "Gone" >> beam.ParDo(_Gone(spec)))
    ((verified | "EncodeVerification" >> beam.Map(lambda v: b"v " + base64.b64encode(pickle.dumps(v))),
      gone | "EncodeGone" >> beam.Map(lambda path: b"g " + path.encode("utf-8")))
     | "Result" >> beam.Flatten()
     | "WriteResult" >> beam.io.WriteToText(FileSystems.join(results, "result"), num_shards=1,
                                            shard_name_template="", coder=beam.coders.BytesCoder()))
    try:
        counts = _run(pipeline)
        verification = _verification(FileSystems.join(results, "result"), counts, header)
    finally:
        discard(results)
    return Applied(verification=verification,
                   read={name: counts.get(f"documents:{name}", 0) for name in collections})


_PLACED = ("members", "responses", "taken", "anchors", "verify", "paths")
# What a reason to refuse the whole plan is about, in the order the gate tells them: a shard that is
# not the one written; counts in the manifest its shards do not give (said only of intact shards: a
# shard missing or cut gives other counts too); a write its spec could never make.
_SHARD, _COUNTS, _UNSAFE = "1 shard", "2 counts", "3 spec"


def _read_shards(pipeline: beam.Pipeline,
                 saved: ShardedPlan) -> tuple[beam.PCollection, tuple[beam.PCollection, ...]]:
    """A sharded plan's ops, read by the workers one shard each; and the reasons its shards, or the
    manifest's counts the launcher showed, are not the plan written."""
    read = (pipeline | "Shards" >> beam.Create(saved.manifest.shards) | "SpreadShards" >> beam.Reshuffle()
            | "ReadShards" >> beam.ParDo(_ReadShard(saved.directory)).with_outputs("ops", "problems"))
    tally = read.ops | "Tally" >> beam.Map(_tally) | "TallyAll" >> beam.CombineGlobally(_sum_tallies)
    links = (read.ops | "Groups" >> beam.FlatMap(lambda op: [op.group] if op.group else [])
             | "EachGroup" >> beam.Distinct() | "CountLinks" >> beam.combiners.Count.Globally())
    summary = (pipeline | "Summary" >> beam.Create([None])
               | "CheckSummary" >> beam.FlatMap(_summary_problems, saved,
                                                tally=beam.pvalue.AsSingleton(tally),
                                                links=beam.pvalue.AsSingleton(links)))
    return read.ops, (read.problems, summary)


class _ReadShard(beam.DoFn):
    """One shard of a sharded plan, read where it is processed, a line at a time: its ops, each
    checked as a plan file's are; and, when the shard is not the one its manifest names (missing,
    altered, cut, malformed), the reason, in the words the launcher's reading uses. Ops go on
    before the shard's sha256 is known: nothing is committed before the gate has every shard's."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def process(self, shard: Shard) -> Iterator[Any]:
        digest, lines, malformed = hashlib.sha256(), 0, None
        try:
            with FileSystems.open(f"{self.directory}/{shard.name}") as handle:
                for line in _lines(handle, digest):
                    lines += 1
                    if malformed is not None:
                        continue  # read on: the sha256 decides which reason is given
                    try:
                        item = decode_line(shard, line, lines, self.directory)
                    except PlanFileError as error:
                        malformed = str(error)
                        continue
                    if shard.kind == "ops":
                        yield TaggedOutput("ops", item)
        except Exception as error:  # the filesystems raise their clients' own errors
            reason = getattr(error, "strerror", None) or _first_line(error)
            yield TaggedOutput("problems", (_SHARD, unreadable_shard(shard, reason, self.directory)))
            return
        problem = shard_problem(shard, digest.hexdigest(), lines, self.directory) or malformed
        if problem:
            yield TaggedOutput("problems", (_SHARD, problem))


def _lines(handle: Any, digest: Any) -> Iterator[bytes]:
    """A file's lines as ``bytes.splitlines`` gives them (what the manifest counts), read a chunk
    at a time, each chunk added to ``digest``."""
    rest = b""
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
        *whole, rest = (rest + chunk).split(b"\n")
        for line in whole:
            yield from line.splitlines() or [b""]
    yield from rest.splitlines()


def _tally(op: Op) -> tuple[int, int]:
    counted = summarize((op,), 0)
    return counted.create, counted.fill


def _sum_tallies(tallies: Iterable[tuple[int, int]]) -> tuple[int, int]:
    creates = fills = 0
    for create, fill in tallies:
        creates, fills = creates + create, fills + fill
    return creates, fills


def _summary_problems(_: None, saved: ShardedPlan, tally: tuple[int, int],
                      links: int) -> list[tuple[str, str]]:
    stated = saved.manifest.summary  # its findings were counted against the shard list at launch
    counted = Summary(create=tally[0], link=links, fill=tally[1], findings=stated.findings)
    problem = summary_problem(saved.manifest, counted, saved.directory)
    return [(_COUNTS, problem)] if problem else []


def _collections(spec: Spec) -> tuple[str, ...]:
    return tuple(name for name in (spec.series.collection, spec.link and spec.link.collection) if name)


class _Place(beam.DoFn):
    """Where one document goes: its series (members, responses, and the ID it takes), the anchor
    index that places proposed ops, its verification key, and its path (for what went missing)."""

    def __init__(self, spec: Spec, after: bool) -> None:
        self.spec, self.after = spec, after

    def process(self, element: tuple[str, Document]) -> Iterator[Any]:
        collection, doc = element
        outputs, stem, key = placed(self.spec, collection, doc)
        for tag, value in outputs:
            if tag == "taken":  # before: the document, which a create's precondition looks at
                yield TaggedOutput("taken", value if self.after else (value[0], doc))
            elif tag != "findings" and not self.after:
                yield TaggedOutput(tag, value)
        if not self.after:
            yield TaggedOutput("anchors", (doc.path, (stem, doc)))
        yield TaggedOutput("verify", (key, doc))
        yield TaggedOutput("paths", (doc.path, collection))


class _Locate(beam.DoFn):
    """At one path: each op that writes there, with the document there now (None when there is
    none), keyed by its anchor; and, when ops are anchored there, the stem of the series the
    document there belongs to now."""

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        path, joined = element
        found = list(joined["doc"])
        stem, doc = found[0] if found else (None, None)
        for op in joined["own"]:
            yield op.group or op.path, ("op", op, doc)
        if list(joined["anchored"]):
            yield path, ("anchor", stem, doc is not None)


class _Route(beam.DoFn):
    """The proposed ops of one anchor (a group's assignment, or a lone op's document), with their
    documents, to the series of the document there now; a new week's create to the series its ID
    names; ops anchored where no series is, to a share of their own ("@" and the anchor's path),
    which the guard examines as any other with no series to derive from."""

    def process(self, element: tuple[str, Iterable[tuple[Any, ...]]]) -> Iterator[Any]:
        anchor, located = element
        stem, exists, ops = None, False, []
        for entry in located:
            if entry[0] == "anchor":
                stem, exists = entry[1], entry[2]
            else:
                ops.append((entry[1], entry[2]))
        if stem is None and not exists and any(
                isinstance(op, CreateDocumentOp) and op.path == anchor for op, _ in ops):
            stem = stem_of_id(anchor.partition("/")[2])  # a new week: its ID names its series' stem
        for pair in ops:
            yield TaggedOutput("proposed", (stem or f"@{anchor}", pair))


class _Admit(beam.DoFn):
    """One stem's share of the plan through the guard, against that stem's fresh documents."""

    def __init__(self, spec: Spec, header: Plan) -> None:
        self.spec, self.header = spec, header

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[Any]:
        stem, joined = element
        pairs = list(joined["proposed"])
        if not pairs:
            return
        proposed = tuple(op for op, _ in pairs)
        members, responses, taken = list(joined["members"]), list(joined["responses"]), list(joined["taken"])
        # The series' documents, and every document the share writes, wherever it belongs now (an
        # op's document that left the series is examined as changed, not as gone).
        state = State.of(self.header.source, self.header.read_time,
                          [*(doc for _, doc in pairs if doc is not None), *(p.doc for p in members),
                           *(p.doc for p in responses), *taken])
        derived = [item for item in plan_stem(self.spec, members, responses, [doc.id for doc in taken])
                   if not isinstance(item, Finding)]
        admission, problems = examine(self.spec, replace(self.header, ops=proposed), state, derived)
        for problem in problems:
            yield TaggedOutput("problems", problem)
        for result in admission.skipped:
            yield TaggedOutput("skipped", (stem, result))
        for group in admission.groups:
            yield TaggedOutput("groups", (stem, group, {op.path: state.find(op.path) for op in group}))


def _written_twice(counted: tuple[str, int]) -> list[str]:
    path, count = counted
    # The guard's own words for it, so that the share that holds both ops says it once with this.
    return [f"{path}: written by two ops; a run writes each document once"] if count > 1 else []


_REFUSALS = ((_SHARD, PlanFileError, unreadable_plan), (_COUNTS, PlanFileError, unreadable_plan),
             (_UNSAFE, UnsafePlan, refusal))


class _Gate(beam.DoFn):
    """Before the first commit: any reason to refuse, from any shard or series, refuses the whole
    plan; a plan whose shards are not the ones written is refused as that, whatever else it holds."""

    def process(self, _: None, counts: dict[str, int], shown: list[tuple[str, str]]) -> Iterator[bool]:
        for kind, error, sentence in _REFUSALS:
            if counts.get(kind):
                texts = sorted(text for of, text in shown if of == kind)
                raise error(sentence(texts, more=counts[kind] - len(texts)))
        yield True


class _Commit(beam.DoFn):
    """Commits batches of admitted groups, as the local apply does (``FirestoreStore.apply``: whole
    groups per commit, each write with its precondition, refusals explained), after a check of the
    launcher's lease before each commit; each bundle's commits go to a journal of their own."""

    def __init__(self, header: Plan, writing: Writing, total: int, read_time: datetime) -> None:
        self.header, self.writing, self.journals, self.total = header, writing, writing.journals, total
        self.read_time = read_time
        self.store: FirestoreStore | None = None
        self.lease: HeldElsewhere | None = None
        self.journal: Journal | None = None

    def setup(self) -> None:
        w = self.writing
        self.store = FirestoreStore(self.header.source, batch_size=w.batch_size, timeout=w.timeout,
                                    max_writes_per_second=w.max_writes_per_second,
                                    lock_collection=w.lock_collection)
        self.lease = HeldElsewhere(self.store, w.lease_id, w.lease_ttl)

    def start_bundle(self) -> None:
        self.journal = None

    def process(self, batch: list[tuple[str, tuple[Op, ...], dict[str, Document | None]]],
                go: bool) -> Iterator[tuple[str, OpResult]]:
        assert self.store is not None and self.lease is not None
        if go is not True:  # the gate raises instead; never write without it
            raise UnsafePlan("refusing to write: the plan's admission did not finish")
        stems = {op.path: stem for stem, group, _ in batch for op in group}
        current = State.of(self.header.source, self.read_time,
                            [doc for _, _, befores in batch for doc in befores.values() if doc is not None])
        journal = self._journal()
        journal.before = current
        try:
            results = self.store.apply([group for _, group, _ in batch], datetime.now(UTC), journal, current,
                                       checkpoint=self.lease.check)
        except BaseException as error:
            self._close(error)
            raise
        for result in results:
            yield stems[result.op.path], result

    def finish_bundle(self) -> None:
        self._close(None)

    def _journal(self) -> Journal:
        if self.journal is None:
            remote = "://" in self.journals
            local = tempfile.mkdtemp(prefix="reconcile-journal-") if remote else self.journals
            self.journal = Journal(Path(local), _Run(self.header, self.total), State(
                source=self.header.source, read_time=self.read_time, collections={}), datetime.now(UTC),
                label=f"-{uuid.uuid4().hex[:12]}")
        return self.journal

    def _close(self, error: BaseException | None) -> None:
        journal, self.journal = self.journal, None
        if journal is None:
            return
        journal.close(datetime.now(UTC), error)
        if "://" in self.journals:  # a worker's disk goes with it: the journal goes to the bucket
            target = FileSystems.join(self.journals, journal.path.name)
            with _filesystem(target, "write the journal to"), FileSystems.create(target) as handle:
                handle.write(journal.path.read_bytes())


class _Run:
    """What a bundle's journal says of the run: the plan's header, and its number of ops."""

    def __init__(self, header: Plan, total: int) -> None:
        self.spec_name, self.spec_sha256 = header.spec_name, header.spec_sha256
        self.source, self.read_time, self.selection = header.source, header.read_time, header.selection
        self.ops = range(total)


class _ServerTime(beam.DoFn):
    """Firestore's now, once the writes are done: the read time of the verification."""

    def __init__(self, source: str, collection: str, timeout: float) -> None:
        self.source, self.collection, self.timeout = source, collection, timeout

    def process(self, _: int) -> Iterator[datetime]:
        yield FirestoreStore(self.source, timeout=self.timeout).server_time(self.collection)


class _Verify(beam.DoFn):
    """The local apply's validation for the documents of one verification key: before and after,
    what was written there, and what the spec still derives for its series."""

    def __init__(self, spec: Spec, header: Plan, read_time: datetime) -> None:
        self.spec, self.header, self.read_time = spec, header, read_time

    def process(self, element: tuple[str, dict[str, Any]], after_time: datetime) -> Iterator[Verification]:
        _, joined = element
        after_docs, outcomes = list(joined["after"]), list(joined["outcomes"])
        members, responses = [], []
        for doc in after_docs:
            for tag, value in keyed(self.spec, doc.collection, doc):
                if tag in ("members", "responses"):
                    (members if tag == "members" else responses).append(value[1])
        pending = tuple(item for item in plan_stem(self.spec, members, responses, list(joined["taken"]))
                        if not isinstance(item, Finding))
        source = self.header.source
        verification = verify(self.spec, State.of(source, self.read_time, joined["before"]),
                              State.of(source, after_time, after_docs), outcomes,
                              replace(self.header, read_time=after_time, ops=pending))
        if outcomes or pending or verification.changed_by_others:
            yield verification


class _Merge(beam.CombineFn):
    """The verifications of every key as one (counts added, lists joined)."""

    def create_accumulator(self) -> Verification | None:
        return None

    def add_input(self, merged: Verification | None, one: Verification) -> Verification:
        return one if merged is None else _merged(merged, one)

    def merge_accumulators(self, accumulators: Any) -> Verification | None:
        merged = None
        for one in accumulators:
            if one is not None:
                merged = self.add_input(merged, one)
        return merged

    def extract_output(self, merged: Verification | None) -> Verification | None:
        return merged


def _merged(a: Verification, b: Verification) -> Verification:
    return replace(a, key_values_lost=a.key_values_lost + b.key_values_lost,
                   other_values_lost=a.other_values_lost + b.other_values_lost,
                   links_made=a.links_made + b.links_made, links_broken=a.links_broken + b.links_broken,
                   created=a.created + b.created, updated=a.updated + b.updated,
                   skipped=a.skipped + b.skipped,
                   changed_by_others=a.changed_by_others + b.changed_by_others,
                   pending=replace(a.pending, ops=a.pending.ops + b.pending.ops,
                                   read_time=max(a.pending.read_time, b.pending.read_time)))


def _created(result: OpResult) -> bool:
    return result.applied and isinstance(result.op, CreateDocumentOp)


class _Gone(beam.DoFn):
    """Per path: a document read before, or created by this run, and missing after, is gone; the
    responses read before, and how many are still there, are counted."""

    def __init__(self, spec: Spec) -> None:
        self.responses = spec.link.collection if spec.link else None

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[str]:
        path, joined = element
        before, after, created = list(joined["before"]), list(joined["after"]), list(joined["created"])
        if before and before[0] == self.responses:
            Metrics.counter(_COUNTERS, "responses_before").inc()
            if after:
                Metrics.counter(_COUNTERS, "responses_kept").inc()
        if (before or created) and not after:
            yield path


def _verification(path: str, counts: dict[str, int], header: Plan) -> Verification:
    """The pipeline's merged verification, made whole with what was counted per path."""
    merged, gone = None, []
    with _filesystem(path, "read the apply's result from"), FileSystems.open(path) as handle:
        for line in handle.read().splitlines():
            if line.startswith(b"v "):
                merged = pickle.loads(base64.b64decode(line[2:]))  # written by this run's own pipeline
            elif line.startswith(b"g "):
                gone.append(line[2:].decode("utf-8"))
    if merged is None:
        merged = Verification(responses_before=0, responses_kept=0, key_values_lost=(), other_values_lost=(),
                              links_made=0, links_broken=(), created=0, updated=0, skipped=(),
                              changed_by_others=(), gone=frozenset(), pending=header)
    pending = merged.pending
    return replace(merged, responses_before=counts.get("responses_before", 0),
                   responses_kept=counts.get("responses_kept", 0), gone=frozenset(gone),
                   links_broken=tuple(sorted(merged.links_broken)),
                   skipped=tuple(sorted(merged.skipped, key=lambda result: result.op.path)),
                   changed_by_others=tuple(sorted(set(merged.changed_by_others))),
                   pending=replace(pending, ops=tuple(sorted(pending.ops, key=lambda op: op.path)),
                                   findings=()))


def journal_directory(journal_dir: str, saved: Plan, options: Sequence[str]) -> str:
    """This run's own directory of journals under ``journal_dir``: local for the DirectRunner, on a
    shared filesystem (gs://…) for workers elsewhere, whose disks go when the job ends."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{''.join(c if c.isalnum() or c in '._-' else '_' for c in saved.spec_name)[:60]}-beam"
    _require_reachable(journal_dir, options)
    if "://" in journal_dir:
        return FileSystems.join(journal_dir.rstrip("/"), name)
    directory = Path(journal_dir) / name
    try:
        make_private_directory(directory)
    except OSError as error:
        raise SourceError(f"{directory}: cannot write the apply's journals ({error.strerror}); pass "
                          "--journal-dir with a writable directory") from error
    return str(directory)


def _require_reachable(journal_dir: str, options: Sequence[str]) -> None:
    if "://" not in journal_dir and not _local_runner(options):
        raise SourceError(f"--journal-dir {journal_dir}: the workers of a remote runner cannot write this "
                          "machine's disk; give --journal-dir gs://BUCKET/PREFIX")


def journaled(directory: str) -> tuple[int, int] | None:
    """How many commits the journals in ``directory`` record as sent, and how many writes as
    applied (None when they are not on this machine's disk, so not counted here)."""
    if "://" in directory:
        return None
    sent = applied = 0
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by the crash: its commit's outcome is unknown
            sent += event.get("event") == "commit"
            if event.get("event") == "result":
                applied += sum(1 for result in event.get("results", ()) if result.get("applied"))
    return sent, applied
