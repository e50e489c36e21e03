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
Imports Apache Beam: install the ``beam`` extra. Only this module does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput

from reconciler.errors import ReconcileError, SourceError
from reconciler.kernel import Projection, projection
from reconciler.keyed import keyed, plan_stem
from reconciler.model import Document, Finding, Op, Plan, Spec, State, summarize
from reconciler.sharded import KINDS, MANIFEST, Shard, finding_line, manifest_bytes, op_line
from reconciler.snapshot import SnapshotStore
from reconciler.store import SCHEME, FirestoreStore

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
    return PipelineOptions(args)


# -- the pipeline's steps --------------------------------------------------------------------------------


class _ReadPartition(beam.DoFn):
    """Reads one partition of one collection at the run's read time: (collection, document)."""

    def __init__(self, source: str, read_time: datetime, fields: Projection, timeout: float,
                 lock_collection: str) -> None:
        self.source, self.read_time, self.fields = source, read_time, fields
        self.timeout, self.lock_collection = timeout, lock_collection
        self.store: FirestoreStore | None = None

    def setup(self) -> None:
        self.store = FirestoreStore(self.source, timeout=self.timeout, lock_collection=self.lock_collection)

    def process(self, part: tuple[str, str | None, str | None]) -> Iterator[tuple[str, Document]]:
        collection, start, end = part
        assert self.store is not None
        read = Metrics.counter(_COUNTERS, f"documents:{collection}")
        for doc in self.store.read_range(collection, start, end, self.read_time, self.fields):
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
    collections = tuple(name for name in (spec.series.collection, spec.link and spec.link.collection) if name)
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
    parsed = pipeline_options(options).get_all_options()
    temp = parsed.get("temp_location") or ""
    if "://" in temp:
        return FileSystems.join(temp.rstrip("/"), f"reconcile-plan-{uuid.uuid4().hex}")
    runner = (parsed.get("runner") or "DirectRunner").rsplit(".", 1)[-1]
    if runner not in ("DirectRunner", "PrismRunner", "FnApiRunner", "BundleBasedDirectRunner"):
        raise SourceError(f"--runner beam with runner={runner}: its workers cannot write this machine's "
                          "temporary directory; give --pipeline-option temp_location=gs://BUCKET/tmp "
                          "(or plan with --out gs://BUCKET/PREFIX)")
    return tempfile.mkdtemp(prefix="reconcile-beam-plan-")


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
    except ReconcileError:
        raise
    except Exception as error:  # a worker's error arrives wrapped by the runner: find ours
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ReconcileError):
            cause = cause.__cause__ or cause.__context__
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
