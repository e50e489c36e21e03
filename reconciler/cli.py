"""The ``reconcile`` command line: parse arguments, call one function of ``commands``, render, exit.

Exit codes: 0 success (and, for plan --detailed-exitcode, apply and check: nothing left to do);
2 changes pending, drift, or ops skipped; 1 any error, reported as one sentence on stderr (the
traceback only with ``--debug``). Nothing here computes a plan or touches a store directly.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time
import traceback
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from reconciler import __version__, commands, progress
from reconciler.drift import drift_data, first_look, summary_line
from reconciler.errors import ApplyRefused, LeaseError, ReconcileError, SelectionError, SourceError, SpecError
from reconciler.files import FileProblem, output_problem, write_atomically, write_parts
from reconciler.journal import DEFAULT_DIRECTORY
from reconciler.lease import DEFAULT_TTL, Holder
from reconciler.markdown import PART_LIMIT
from reconciler.metrics import metrics_text
from reconciler.model import Plan
from reconciler.plan import plan_chunks
from reconciler.render import (
    AUDIT_FORMATS,
    PLAN_FORMATS,
    ROLLBACK_FORMATS,
    SERIES_FORMATS,
    render_audit,
    render_comparison,
    render_comparison_parts,
    render_plan,
    render_plan_outline,
    render_plan_parts,
    render_restore,
    render_restored,
    render_rollback,
    render_rollback_check,
    render_series,
    render_verification,
    to_json,
)
from reconciler.sharded import ShardedPlan
from reconciler.store import DEFAULT_PARALLEL, DEFAULT_TIMEOUT, LOCK_COLLECTION, MAX_BATCH, MAX_PARALLEL
from reconciler.values import printable

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
FORMATS = click.Choice(list(PLAN_FORMATS))
_COLOURS = {"+": "green", "~": "yellow", "!": "red", "-": "red"}

spec_option = click.option("--spec", "spec_path", required=True, metavar="SPEC",
                           help="The YAML spec, e.g. specs/checkins.yaml.")
source_option = click.option("--source", required=True, metavar="SRC",
                             help="A snapshot file, e.g. snapshots/demo.json, or "
                                  "firestore://PROJECT[/DATABASE] (the emulator when "
                                  "FIRESTORE_EMULATOR_HOST is set, else Application Default "
                                  "Credentials).")
show_values_option = click.option(
    "--show-values", is_flag=True,
    help="Markdown only: show document values (copied fields, filled values, finding messages). By "
         "default a pull-request comment shows IDs, series keys, rules and counts, and no value.")
allow_empty_option = click.option(
    "--allow-empty", is_flag=True,
    help="Accept a live database that holds none of the spec's collections (by default an error: it "
         "is most often a wrong project or database ID).")
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="No progress output and no timing line on stderr.")
def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value != value:  # NaN passes every range check
        raise click.BadParameter("must be a number of seconds, not NaN", ctx=ctx, param=param)
    return value


timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=1, max=3600), default=DEFAULT_TIMEOUT, show_default=True,
    metavar="SECONDS", callback=_seconds,
    help="How long any one call to Firestore may take, retries included, before the run stops with "
         "one sentence (for apply: what was written so far, and that re-running is safe).")


def _lock_collection(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Firestore's rules for a collection ID, so that a wrong name is one sentence before any call."""
    if (not value or "/" in value or value in (".", "..") or len(value.encode("utf-8")) > 1500
            or (value.startswith("__") and value.endswith("__"))):
        raise click.BadParameter(f"{printable(value)!r} is not a Firestore collection ID (no '/', not '.' or "
                                 "'..', not __NAME__, at most 1,500 bytes)", ctx=ctx, param=param)
    ctx.meta["reconcile.lock_collection"] = value
    return value


# Every command that reads Firestore takes it, so that each skips (or refuses) the same collection;
# the value reaches the run through the context (``_Run``), not each command's parameters.
lock_collection_option = click.option(
    "--lock-collection", metavar="NAME", default=LOCK_COLLECTION, show_default=True,
    envvar="RECONCILE_LOCK_COLLECTION", show_envvar=True, expose_value=False, callback=_lock_collection,
    help="The collection that holds this tool's lease document (one writer at a time), never read as "
         "data: snapshot skips it, a spec may not name it. Give every run on a database the same NAME.")


def _runner(ctx: click.Context, param: click.Parameter, value: object) -> object:
    ctx.meta[f"reconcile.{param.name}"] = value
    return value


def runner_options(command):
    """--runner, --pipeline-option and --read-partitions, for plan, apply and check; their values
    reach the run through the context (``_Run``)."""
    command = click.option(
        "--read-partitions", type=click.IntRange(1, 100_000), metavar="N", expose_value=False,
        callback=_runner, help="With --runner beam: split each collection's read into N partitions read "
                               "in parallel (default 16; on Dataflow, a few per worker).")(command)
    command = click.option(
        "--pipeline-option", "pipeline", multiple=True, metavar="KEY=VALUE", expose_value=False,
        callback=_runner,
        help="With --runner beam: passed to Apache Beam as --KEY=VALUE (repeatable), e.g. "
             "runner=DataflowRunner, project=P, region=R, temp_location=gs://B/tmp; Beam's "
             "DirectRunner (this machine) unless a runner is named; a name Beam does not know is "
             "refused. See docs/scale.md.")(command)
    return click.option(
        "--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True,
        expose_value=False, callback=_runner,
        help="local: run in this process. beam: run on Apache Beam (the beam extra: pip install "
             "'checkin-reconciler[beam]'), the same kernel and guard over many workers, for data past "
             "one machine; the plan is the same. See docs/scale.md.")(command)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Run:
    """Per-command options for reaching a source, and the closing timing line on stderr."""

    def __init__(self, quiet: bool, **store: object) -> None:
        self.quiet = quiet
        self.started = time.monotonic()
        self.progress = progress.choose(quiet, color=_color_allowed())
        ctx = click.get_current_context(silent=True)
        lock_collection = (ctx.meta.get("reconcile.lock_collection") if ctx else None) or LOCK_COLLECTION
        meta = ctx.meta if ctx else {}
        self.options = commands.Options(progress=self.progress, notify=self.note,  # type: ignore[arg-type]
                                        lock_collection=lock_collection,
                                        runner=meta.get("reconcile.runner") or "local",
                                        pipeline=tuple(meta.get("reconcile.pipeline") or ()),
                                        read_partitions=meta.get("reconcile.read_partitions"), **store)

    def note(self, message: str) -> None:
        """A note for the operator on stderr (waiting for a lease, taking over an expired one),
        shown even with --quiet, above the progress bars when they are on."""
        line = f"note: {printable(message)}"
        bars = getattr(self.progress, "bars", None)
        if bars is not None:
            bars.console.print(Text(line), highlight=False)
        else:
            click.echo(line, err=True)

    def finish(self, what: str) -> None:
        stop = getattr(self.progress, "stop", None)
        if stop:
            stop()
        if not self.quiet:
            click.echo(f"reconcile: {what} in {time.monotonic() - self.started:.1f}s", err=True)


def _color_allowed() -> bool:
    """False after --no-color; NO_COLOR and FORCE_COLOR are rich's to honour."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return not (root and isinstance(root.obj, dict) and root.obj.get("no_color"))


def _echo(text: str, err: bool = False, fmt: str = "text") -> None:
    """Print, colouring marked lines where rich says colour is wanted (a terminal, no NO_COLOR, no
    --no-color; or FORCE_COLOR). JSON is printed as it is (its own escapes keep it valid; an escape
    added here would make it unreadable to a machine)."""
    if fmt == "json":
        click.echo(text, nl=False, err=err)
        return
    text = printable(text, newlines=True)  # the last line of defence: data never drives the terminal
    console = Console(file=sys.stderr if err else sys.stdout, highlight=False, markup=False, emoji=False,
                      soft_wrap=True, color_system="auto" if _color_allowed() else None)
    if not console.is_terminal or console.no_color or console.color_system is None:
        click.echo(text, nl=False, err=err)
        return
    for line in text.splitlines(keepends=True):
        marker = line.lstrip()[:1]
        console.print(Text(line, style=_COLOURS.get(marker, "")), end="")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconcile")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.option("--no-color", is_flag=True,
              help="No colour in the output, on a terminal too (NO_COLOR=1 in the environment does the "
                   "same).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_color: bool) -> None:
    """Keep Firestore check-in data in the shape a YAML spec declares, with additive patches only.

    A run reads the source once, computes the desired state, and diffs it into a plan that can only
    create documents and fill empty fields; apply writes it under preconditions, then re-reads and
    re-diffs to prove it converged and that nothing was lost.

    \b
    Typical use (on a copy: apply rewrites the snapshot file it applies to):
      cp snapshots/demo.json /tmp/demo.json
      reconcile validate specs/checkins.yaml
      reconcile audit --spec specs/checkins.yaml --source /tmp/demo.json
      reconcile plan  --spec specs/checkins.yaml --source /tmp/demo.json --out /tmp/plan.json
      reconcile apply /tmp/plan.json
      reconcile check --spec specs/checkins.yaml --source /tmp/demo.json

    Exit codes: 0 success, 1 error (one sentence on stderr), 2 changes pending or drift.
    Docs: docs/spec.md (spec language), docs/plan-format.md, docs/operations.md.
    """
    ctx.obj = {"debug": debug, "no_color": no_color}


@cli.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True)
def validate(spec_paths: tuple[str, ...]) -> None:
    """Check each SPEC against the spec schema and its own rules (a pre-commit hook may pass many).

    Every problem is listed as file:line:column with what to write instead. Exit 0 when every spec
    is valid, 1 when one is not (each file is checked and reported).
    """
    invalid = 0
    for spec_path in spec_paths:
        try:
            spec = commands.validate(spec_path)
        except SpecError as error:
            if len(spec_paths) == 1:
                raise
            invalid += 1
            click.echo(f"error: {printable(str(error), newlines=True)}", err=True)
            continue
        link = f", link {spec.link.collection}" if spec.link else ""
        click.echo(printable(f"{spec_path}: valid spec {spec.name!r} "
                             f"(series {spec.series.collection}{link})."))
    if invalid:
        raise SpecError([f"{invalid} of {len(spec_paths)} specs are invalid (see above)"])


def lease_options(command):
    """--lock-timeout and --lease-ttl, for every command that writes (it holds the source's lease)."""
    command = click.option(
        "--lease-ttl", type=click.FloatRange(min=5, max=3600), default=DEFAULT_TTL, show_default=True,
        metavar="SECONDS", callback=_seconds,
        help="How long the lease lasts unless renewed (this run renews it every third of that): "
             "how long a killed run keeps others waiting.")(command)
    return click.option(
        "--lock-timeout", type=click.FloatRange(min=0, max=86400), default=0, show_default=True,
        metavar="SECONDS", callback=_seconds,
        help="While another run holds the lease on the source, wait up to SECONDS for it, then "
             "take it (by default: exit 1 at once, naming the holder).")(command)


parallel_option = click.option(
    "--parallel", type=click.IntRange(1, MAX_PARALLEL), default=DEFAULT_PARALLEL, show_default=True,
    metavar="N",
    help="Firestore: up to N commits in flight at once (each whole, atomic and under its "
         "preconditions; the write rate cap and the 500/50/5 ramp count all of them together). "
         "--parallel 1 sends one commit at a time. E.g. --parallel 8 on a database far away.")


select_option = click.option(
    "--select", "select", metavar="FIELD=VALUE[,FIELD=VALUE…]",
    help="Only the series whose key matches (every FIELD one of the spec's series key fields, equal to "
         "VALUE exactly, case included; an integer key part matches its decimal spelling), and their "
         "responses. On Firestore only those documents are read. A selection that matches no series "
         "is an error (exit 1).")


@cli.command()
@spec_option
@source_option
@click.option("--format", "fmt", type=click.Choice(list(AUDIT_FORMATS)), default="text",
              show_default=True, help="text for a terminal, json for machines, html for a page to look "
                                      "at in a browser (written to --out).")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --format html: the file to write the page to (replaced atomically, created "
                   "0600; never one of the run's inputs).")
@click.option("--show-values", is_flag=True,
              help="HTML only: also show finding messages and every status value. By default the page "
                   "shows IDs, series keys, weeks, due dates, rules, finding codes and counts, and no "
                   "other document value.")
@select_option
@allow_empty_option
@quiet_option
@timeout_option
@lock_collection_option
def audit(spec_path: str, source: str, fmt: str, out: str | None, show_values: bool, select: str | None,
          allow_empty: bool, quiet: bool, timeout: float) -> None:
    """Report what the data holds before any change.

    Counts documents, series members and their statuses, series and their missing weeks, link
    health (complete, half, dangling) and findings by code. Writes nothing to the source.

    --format html --out FILE writes one self-contained page (it loads nothing from anywhere, so it
    opens offline): the counts, a series x weeks heat map (one row per series, one cell per week
    1..N: present, to create, duplicate, with a finding, out of range; the first 200 series and
    104 weeks are drawn, and the page says how many more there are), link health, and the findings
    by code with their documents.

    \b
    Example:
      reconcile audit --spec specs/checkins.yaml --source snapshots/demo.json \\
        --format html --out audit.html
    """
    if fmt == "html" and not out:
        raise click.UsageError("--format html writes a page to a file: give --out FILE")
    if out and fmt != "html":
        raise click.UsageError("--out writes the HTML page: give --format html with it (text and json "
                               "print to stdout)")
    inputs = _inputs(spec_path, source)
    if out:
        _refuse_output(out, inputs)  # before the run: a refused --out costs no reading
    run = _Run(quiet, timeout=timeout, allow_empty=allow_empty)
    report = commands.run_audit(spec_path, source, run.options, select=select)
    run.finish(f"audited {sum(report.collections.values())} documents")
    if out:
        _write_output(out, render_audit(report, fmt, show_values).encode("utf-8"), inputs)
        click.echo(printable(f"Wrote the audit page to {out} ({report.series.get('total', 0)} series); "
                             "open it in a browser."))
        return
    _echo(render_audit(report, fmt), fmt=fmt)


split_option = click.option(
    "--split", "split_dir", metavar="DIR", type=click.Path(file_okay=False),
    help="Markdown only: write the document, every row of it, as DIR/part-01.md, part-02.md, … "
         f"(each at most {PART_LIMIT:,} characters, valid markdown on its own: one pull-request "
         "comment each) instead of printing it cut to one comment. DIR is created, or must be empty.")


@cli.command()
@spec_option
@source_option
@click.option("--compare-spec", "old_spec_path", metavar="OLD",
              help="Also plan OLD (e.g. the spec on the base branch) on the same read, and report what "
                   "the change from OLD to SPEC does: writes added, removed and changed, per rule and per "
                   "series, and the existing documents that will disagree with SPEC (a person decides "
                   "those; the tool never changes them).")
@click.option("--out", type=click.Path(), help="Also save the plan (JSON) to this file, for "
              "`reconcile apply FILE` (with --compare-spec: SPEC's plan). With --runner beam, a new or "
              "empty directory (or gs://BUCKET/PREFIX) for the sharded plan: manifest.json and its shards, "
              "which apply and show read like a plan file.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text for a terminal, markdown for a pull-request comment, json for machines (the "
                   "plan file; with --compare-spec, the comparison).")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there are no changes, 2 when there are, 1 on error; with --compare-spec, "
                   "2 when the change does something to the data (writes or findings differ).")
@show_values_option
@split_option
@select_option
@allow_empty_option
@quiet_option
@timeout_option
@lock_collection_option
@runner_options
def plan(spec_path: str, source: str, old_spec_path: str | None, out: str | None, fmt: str,
         detailed_exitcode: bool, show_values: bool, split_dir: str | None, select: str | None,
         allow_empty: bool, quiet: bool, timeout: float) -> None:
    """Compute the additive patch that brings SRC to the shape SPEC declares.

    Reads each collection once and writes nothing to the source. The same spec and data give a
    byte-identical plan. The last line is the summary, e.g. "Plan: 691 to create, 36 to link, 1 to
    fill; 0 to delete, 0 to overwrite." Only the document goes to stdout; notes go to stderr.

    \b
    Review a spec change in a pull request (OLD: the spec on the base branch):
      git show origin/main:specs/checkins.yaml > /tmp/old.yaml
      reconcile plan --spec specs/checkins.yaml --compare-spec /tmp/old.yaml \\
        --source snapshots/demo.json --format markdown --split comment/ --out plan.json
    """
    _split_needs_markdown(split_dir, fmt)
    if select and old_spec_path:
        raise click.UsageError("--select plans a subset of the series; a spec change is compared on "
                               "all of them: give one or the other")
    inputs = _inputs(spec_path, source) + _inputs(old_spec_path, "")
    beam = click.get_current_context().meta.get("reconcile.runner") == "beam"
    if out and not beam:  # a Beam plan's directory is checked by the pipeline: new or empty
        _refuse_output(out, inputs)  # before the run: a refused --out costs no reading
    run = _Run(quiet, timeout=timeout, allow_empty=allow_empty)
    if beam and (select or old_spec_path):
        raise click.UsageError("--runner beam plans every series of one spec: --select and --compare-spec "
                               "run with --runner local (the default)")
    if old_spec_path:
        compared = commands.compare_specs(spec_path, old_spec_path, source, run.options)
        planned, changed = compared.new, compared.comparison.differs
    elif beam:
        planned = commands.plan_on_beam(spec_path, source, run.options, out=out)
        changed = bool(planned.plan.summary.changes)
    else:
        planned = commands.plan(spec_path, source, run.options, select=select)
        changed = bool(planned.plan.summary.changes)
    if out and not beam:  # in pieces: a large plan file is never held whole in memory
        _write_output(out, planned.file_chunks(), inputs)
    run.finish(f"planned {sum(planned.documents.values())} documents")
    if old_spec_path and split_dir:
        _write_split(split_dir, render_comparison_parts(compared.comparison, show_values))
    elif old_spec_path:
        _echo(render_comparison(compared.comparison, fmt, show_values), fmt=fmt)
    elif split_dir:
        _write_split(split_dir, render_plan_parts(planned.plan, show_values))
    elif fmt == "json":  # the plan file itself, as bytes: a large plan is not copied into text
        _write_bytes(planned.file_chunks())
    else:
        _echo(render_plan(planned.plan, fmt, show_values))
    if out:  # on stderr: stdout is the document alone (a PR comment, a JSON plan)
        click.echo(printable(f"Saved the plan to {out}; apply it with: reconcile apply {out}"), err=True)
    if detailed_exitcode and changed:
        raise _Exit(EXIT_CHANGES)


def _split_needs_markdown(split_dir: str | None, fmt: str) -> None:
    if split_dir and fmt != "markdown":
        raise click.UsageError("--split writes pull-request comments: give --format markdown with it")


def _write_split(directory: str, parts: list[str]) -> None:
    try:
        paths = write_parts(directory, parts)
    except FileProblem as problem:
        raise SourceError(f"{directory}: {problem}") from None
    except OSError as error:
        raise SourceError(f"{directory}: cannot write the parts ({error.strerror or error})") from error
    names = paths[0].name if len(paths) == 1 else f"{paths[0].name} … {paths[-1].name}"
    click.echo(printable(f"Wrote {len(paths)} part(s) to {directory} ({names}), each at most "
                         f"{PART_LIMIT:,} characters: one pull-request comment each."), err=True)


def _write_bytes(content: Iterable[bytes]) -> None:
    sys.stdout.flush()
    for piece in content:
        sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()


@cli.command()
@click.argument("plan_file", metavar="[PLAN]", required=False)
@click.option("--spec", "spec_path", metavar="SPEC",
              help="Plan from this spec now (with --source); with a saved PLAN, the spec the plan must "
                   "carry, byte for byte (default: the spec file the plan names, when it exists).")
@click.option("--source", metavar="SRC", help="The data to plan and apply to (with --spec).")
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="Format of the plan shown and of the validation report; json prints the "
                   "validation report only, as one JSON document.")
@click.option("--journal-dir", metavar="DIR", default=str(DEFAULT_DIRECTORY), show_default=True,
              help="Where the apply journal (JSON lines: ops, before-values, outcomes) is written. With "
                   "--runner beam, the run's journals (one per bundle of commits) go to a new directory "
                   "inside it, which must be gs://BUCKET/PREFIX when the workers run elsewhere; `reconcile "
                   "rollback` takes that directory to undo the whole run.")
@click.option("--max-writes-per-second", type=click.FloatRange(min=1), metavar="N",
              help="Cap the write rate. Default: the 500/50/5 ramp on Firestore (start at 500/s, "
                   "+50% every 5 minutes); no cap on the emulator or a snapshot file.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH, show_default=True,
              help="Writes per commit (a link is never split across commits).")
@parallel_option
@click.option("--verbose", "-v", is_flag=True,
              help="List every skipped write with its reason (by default: one line per reason).")
@select_option
@lease_options
@allow_empty_option
@quiet_option
@timeout_option
@lock_collection_option
@runner_options
def apply(plan_file: str | None, spec_path: str | None, source: str | None, auto_approve: bool,
          fmt: str, journal_dir: str, max_writes_per_second: float | None, batch_size: int,
          parallel: int, verbose: bool, select: str | None, lock_timeout: float, lease_ttl: float,
          allow_empty: bool, quiet: bool, timeout: float) -> None:
    """Apply a saved PLAN, or plan from --spec/--source and apply after confirmation.

    A saved PLAN only proposes: before the first write, apply reads the source afresh and writes
    only what the plan's own spec derives from that read. A plan holding a write its spec could
    never make is refused whole (exit 1, nothing written); a group made stale by a change since
    the plan is skipped. Each write carries a precondition: a create requires that the document
    does not exist, a fill that the document is unchanged since it was read. A link's two sides
    are written together or not at all. Writes Firestore would refuse (over 1 MiB) are skipped
    before sending. If the database stops answering for --timeout seconds, the run ends saying how
    many writes were applied; re-running is safe. Afterwards the source is re-read and re-diffed,
    and the report says whether anything was lost, and what other writers changed meanwhile.

    One writer at a time: apply holds a lease on the source (on Firestore a lock document in
    --lock-collection, on a snapshot file an OS lock on FILE.lock) from before its read to its end,
    renewed while it runs and released on every way out. While another run holds it, apply exits 1
    at once, naming the holder (user@host pid N, operation, since when, expiry, lease ID), or waits
    --lock-timeout seconds for it; an expired lease is taken over. A run that loses its lease
    (force-unlock) stops before its next commit. See `reconcile force-unlock --help`.

    With --runner beam, a plan directory (`plan --runner beam --out DIR`) is read here by its
    manifest alone: the workers read its shards, each checked against the manifest, and a shard
    missing or altered refuses the whole plan before any commit. What is shown first is then the
    manifest's header and counts; `reconcile show DIR` lists the writes.

    Exit 0 when converged, 2 when ops were skipped or are still pending, 1 on error.

    \b
    Examples:
      reconcile apply plan.json --spec specs/checkins.yaml
      # a scheduled run: wait up to 10 minutes for another run's lease; a killed run's lease
      # keeps others out for 2 minutes at most
      reconcile apply --spec specs/checkins.yaml --source firestore://my-project --auto-approve \\
        --lock-timeout 600 --lease-ttl 120
      # the lease kept in another collection (every run on the database must name the same)
      reconcile apply plan.json --lock-collection ops_locks
      # as an Apache Beam pipeline on Dataflow (docs/scale.md); the workers read the plan's
      # shards, the journals go to the bucket
      reconcile apply gs://B/plans/1 --runner beam --journal-dir gs://B/journal \\
        --pipeline-option runner=DataflowRunner --pipeline-option temp_location=gs://B/tmp
    """
    beam = click.get_current_context().meta.get("reconcile.runner") == "beam"
    if "://" in journal_dir and not beam:
        raise click.UsageError(f"--journal-dir {journal_dir}: a journal on a remote filesystem is for "
                               "--runner beam; this apply writes its journal to a local directory")
    run = _Run(quiet, journal_dir=journal_dir if beam else Path(journal_dir),
               max_writes_per_second=max_writes_per_second, batch_size=batch_size, parallel=parallel,
               timeout=timeout, allow_empty=allow_empty, lock_timeout=lock_timeout, lease_ttl=lease_ttl)
    if plan_file:
        if source:
            raise click.UsageError("a saved PLAN names its source; give either PLAN (with --spec to pin "
                                   "the spec you reviewed) or --spec and --source")
        if select:
            raise click.UsageError("a saved PLAN carries its selection (`plan --select … --out`); "
                                   "--select goes with --spec and --source")
        # The pipeline's workers read a sharded plan's shards: here, only its manifest is read.
        saved, spec = (commands.open_plan if beam else commands.load_plan)(plan_file, pinned=spec_path)
        if beam:  # a bad pipeline option is said before the plan is shown
            commands.check_beam_options(run.options)
        if fmt != "json":  # JSON output is one document: the validation report below
            _echo(render_plan_outline(saved, fmt) if isinstance(saved, ShardedPlan)
                  else render_plan(saved, fmt))
        applied = commands.apply(saved, spec, options=run.options)
    else:
        if not (spec_path and source):
            raise click.UsageError("give a saved PLAN, or both --spec and --source")

        def review(planned: commands.Planned) -> bool:
            if fmt != "json":
                _echo(render_plan(planned.plan, fmt))
            if not planned.plan.ops and fmt != "json":
                click.echo("Nothing to apply.")
            asked = bool(planned.plan.ops) and not auto_approve
            if asked:
                _confirm(planned.plan, source)
            # After a prompt, the data may have changed while the operator read: apply then checks
            # the plan against a fresh read, as it does a saved plan.
            return asked

        applied = commands.plan_and_apply(spec_path, source, review, run.options, select=select)
    verification = applied.verification
    written = verification.created + verification.updated
    run.finish(f"applied {written} of {written + len(verification.skipped)} writes")
    if applied.journal and fmt != "json":
        click.echo(f"Journal: {printable(str(applied.journal))}")
    _echo(render_verification(applied.verification, "json" if fmt == "json" else "text", verbose),
          fmt="json" if fmt == "json" else "text")
    # Skipped ops mean what was reviewed is not what happened: the plan was stale; say so by exit 2.
    if not applied.verification.converged or applied.verification.skipped:
        raise _Exit(EXIT_CHANGES)


def _inputs(spec_path: str | None, source: str) -> list[str]:
    """The files a run reads, which its --out may never replace."""
    return [path for path in (spec_path, source) if path and "://" not in path]


def _refuse_output(out: str, inputs: list[str]) -> None:
    problem = output_problem(out, inputs)
    if problem:
        raise SourceError(f"refusing to write {out}: it {problem}")


def _write_output(out: str, content: bytes | Iterable[bytes], inputs: list[str],
                  private: bool = True) -> None:
    _refuse_output(out, inputs)  # again: the run took time, and the path may have changed since
    try:
        write_atomically(out, content, private=private)
    except OSError as error:
        raise SourceError(f"{out}: cannot write the file ({error.strerror or error})") from error


def _documents(state) -> int:
    return sum(len(docs) for docs in state.collections.values())


def _confirm(planned: Plan, source: str) -> None:
    s = planned.summary
    _ask("apply", f"Apply these {len(planned.ops)} document writes ({s.create} to create, {s.link} to "
                  f"link, {s.fill} to fill) to {source}?")


def _ask(verb: str, question: str, err: bool = False) -> None:
    """Go on only when the operator types "yes" on a terminal; with no terminal, refuse (exit 1).
    ``err``: ask and answer on stderr, when stdout is one JSON document."""
    if not sys.stdin.isatty():
        raise ApplyRefused(f"refusing to {verb} without confirmation: standard input is not a "
                           "terminal; review the plan and pass --auto-approve")
    answer = click.prompt(printable(f"{question} Only 'yes' is accepted"), default="", show_default=False,
                          err=err)
    if answer.strip() != "yes":
        click.echo(f"{verb.capitalize()} cancelled; nothing was written.", err=err)
        raise _Exit(EXIT_OK)


@cli.command()
@click.argument("plan_file", metavar="PLAN")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text for a terminal, markdown for a pull-request comment, json for the plan file's "
                   "exact bytes.")
@show_values_option
@split_option
def show(plan_file: str, fmt: str, show_values: bool, split_dir: str | None) -> None:
    """Render a saved PLAN without applying it, as `plan` printed it.

    The plan is read as `apply` reads it: strictly, with its embedded spec checked against its hash
    and against the spec file it names (when that file exists here). Reads no source, writes nothing.
    """
    _split_needs_markdown(split_dir, fmt)
    saved, _ = commands.load_plan(plan_file)
    if split_dir:
        _write_split(split_dir, render_plan_parts(saved, show_values))
    elif fmt == "json":
        _write_bytes(plan_chunks(saved))
    else:
        _echo(render_plan(saved, fmt, show_values))


@cli.command()
@spec_option
@source_option
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text: the writes that would bring the data back, and the drift by class; json: a "
                   "compact drift report for monitors (docs/plan-format.md); markdown: the plan as a "
                   "comment.")
@click.option("--baseline", metavar="PREVIOUS.json",
              help="An earlier `check --format json` report: findings not in it are drift too (exit 2), "
                   "so a monitor alerts on new mess, not on what was there at rollout.")
@click.option("--metrics", "metrics_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write Prometheus metrics (text format) to FILE, e.g. for a node-exporter "
                   "textfile collector (*.prom) or `curl --data-binary @FILE` to a Pushgateway.")
@select_option
@allow_empty_option
@quiet_option
@timeout_option
@lock_collection_option
@runner_options
def check(spec_path: str, source: str, fmt: str, baseline: str | None, metrics_file: str | None,
          select: str | None, allow_empty: bool, quiet: bool, timeout: float) -> None:
    """Drift check for schedules and CI: is SRC still in the shape SPEC declares?

    Sorts what is off into drift classes that point at the likely cause in the app: weeks_missing
    (the create path is not pre-creating weeks), responses_unlinked (the submit path is not linking),
    half_links, fills_pending, and, with --baseline, new_findings. Findings alone are not drift.
    Exit 0 when converged, 2 on drift, 1 on error. Writes nothing to the source.

    \b
    A scheduled job:
      reconcile check --spec specs/checkins.yaml --source firestore://my-project \\
        --format json --baseline last.json --metrics /var/lib/node_exporter/reconcile.prom > now.json
    """
    inputs = _inputs(spec_path, source) + _inputs(baseline, "")
    if metrics_file:
        _refuse_output(metrics_file, inputs)
    run = _Run(quiet, timeout=timeout, allow_empty=allow_empty)
    checked = commands.check(spec_path, source, run.options, baseline=baseline, select=select)
    planned, drift = checked.planned, checked.drift
    run.finish(f"checked {sum(planned.documents.values())} documents")
    if metrics_file:
        _write_output(metrics_file, metrics_text(drift, planned.documents), inputs, private=False)
    if fmt == "json":
        _echo(to_json(drift_data(drift)), fmt=fmt)
    else:
        _echo(render_plan(planned.plan, fmt), fmt=fmt)
    if fmt == "text":
        click.echo(printable(summary_line(drift)))
        look = first_look(drift)
        if look:
            click.echo(printable(look))
    if not drift.converged:
        raise _Exit(EXIT_CHANGES)


@cli.command()
@spec_option
@source_option
@click.option("--select", "select", required=True, metavar="FIELD=VALUE[,FIELD=VALUE…]",
              help="The series to show: every FIELD (one of the spec's series key fields) must equal "
                   "VALUE, exactly, case included (a VALUE cannot hold a comma). An integer key part "
                   "matches its decimal spelling: FIELD=7 matches 7 and \"7\".")
@click.option("--format", "fmt", type=click.Choice(list(SERIES_FORMATS)), default="text",
              show_default=True, help="text: a table per series; json: the series report "
                                      "(docs/plan-format.md).")
@click.option("--show-values", is_flag=True,
              help="Also show each finding's message (messages quote document values).")
@allow_empty_option
@quiet_option
@timeout_option
@lock_collection_option
def series(spec_path: str, source: str, select: str, fmt: str, show_values: bool, allow_empty: bool,
           quiet: bool, timeout: float) -> None:
    """Show the weeks of the series --select names, as a plan would leave them.

    For each matching series: every week 1..N with its due date (from the spec's cadence), its
    state (stored, to be created with the ID the plan uses, duplicate, ID taken, out of range), its
    document, its response (linked, or "to link" when the plan links it) and the codes of the
    findings about it. A series the engine cannot plan shows its finding instead. The weeks are the
    plan's own, from one read: what the app will show once it reads stored weeks. At most 50 series
    are shown. Exit 0 when --select matches a series, 1 when it matches none. Writes nothing.

    \b
    One client's weeks in the demo data:
      reconcile series --spec specs/checkins.yaml --source snapshots/demo.json --select clientId=c01
    """
    run = _Run(quiet, timeout=timeout, allow_empty=allow_empty)
    found = commands.series(spec_path, source, select, run.options)
    run.finish(f"read {_documents(found.state)} documents")
    if not found.matched:
        raise SelectionError(f"no series matches {found.selection.text()} in {source}; values match "
                             "exactly, case included: check the spelling, or drop a field to widen it")
    _echo(render_series(found, fmt, show_values), fmt=fmt)


@cli.command()
@source_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The snapshot file to write.")
@click.option("--spec", "spec_path", metavar="SPEC", help="Export only the collections SPEC reads.")
@quiet_option
@timeout_option
@lock_collection_option
def snapshot(source: str, out: str, spec_path: str | None, quiet: bool, timeout: float) -> None:
    """Export SRC's collections to a snapshot file (a backup, or offline planning input).

    Every Firestore type is kept exactly: timestamps to the microsecond, null, integer vs double,
    bytes, references, geo points, nested maps and arrays. The file is replaced atomically. The
    tool's own lock collection (--lock-collection) is not data and is never exported.

    \b
    Example:
      reconcile snapshot --source firestore://my-project --out backup.json
    """
    _refuse_output(out, _inputs(spec_path, source))
    run = _Run(quiet, timeout=timeout)
    state = commands.snapshot(source, out, spec_path, run.options)
    run.finish(f"exported {_documents(state)} documents")
    counts = ", ".join(f"{name} {len(docs)}" for name, docs in sorted(state.collections.items()))
    click.echo(f"Wrote {out}: {counts}.")


@cli.command("force-unlock")
@click.argument("lease_id", metavar="LEASE_ID")
@click.option("--source", required=True, metavar="SRC",
              help="The database whose lease to release: firestore://PROJECT[/DATABASE].")
@click.option("--auto-approve", is_flag=True, help="Release without asking for confirmation.")
@timeout_option
@lock_collection_option
def force_unlock(lease_id: str, source: str, auto_approve: bool, timeout: float) -> None:
    """Release the lease LEASE_ID that another run holds on SRC.

    For a run that is gone (killed with SIGKILL, its machine or network lost) whose lease you will
    not wait for: it expires by itself --lease-ttl seconds (default 60) after its last renewal. The
    lease is released only if the database's lease has exactly this ID (the one a refused run
    named); it is marked released, with who released it and when, never deleted. Asks for
    confirmation (the holder, its operation, since when) unless --auto-approve.

    Safe when the holder is gone. If the holder still runs, it stops before its next commit (exit 1,
    its journal saying it lost the lease): what it wrote stays, every write under its precondition,
    and re-running apply completes the rest. A snapshot file's lock is the operating system's: it
    ends with its process, and has nothing to force-unlock.

    \b
    Example (the ID from "... locked by another run: lease 3f9c2a7be1d04a65 of ..."):
      reconcile force-unlock 3f9c2a7be1d04a65 --source firestore://my-project
    """
    run = _Run(True, timeout=timeout)

    def confirm(holder: Holder, now: datetime) -> None:
        if auto_approve:
            return
        if not sys.stdin.isatty():
            raise LeaseError("refusing to force-unlock without confirmation: standard input is not a "
                             "terminal; pass --auto-approve")
        answer = click.prompt(printable(f"Release the {holder.describe(now)} on {source}? Only 'yes' is "
                                        "accepted"), default="", show_default=False)
        if answer.strip() != "yes":
            click.echo("Cancelled; the lease is still held.")
            raise _Exit(EXIT_OK)

    unlocked = commands.force_unlock(lease_id, source, confirm, run.options)
    if unlocked.already_released:
        click.echo(printable(f"Nothing to do: the {unlocked.holder.describe(unlocked.at)} on {source}."))
        return
    click.echo(printable(f"Released the {unlocked.holder.who(unlocked.at)} on {source}. The next run can "
                         "take the lease; if that run still goes on, it stops before its next commit."))


@cli.command()
@click.argument("snapshot_path", metavar="SNAPSHOT")
@click.option("--to", "target", required=True, metavar="TARGET",
              help="Where to create the documents: firestore://PROJECT[/DATABASE] (the emulator when "
                   "FIRESTORE_EMULATOR_HOST is set, else Application Default Credentials), or a snapshot "
                   "file, created when it does not exist. Never SNAPSHOT itself.")
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              help="Restore only this collection of the snapshot (repeat for more; default: every "
                   "collection the snapshot holds). A name the snapshot does not hold is an error.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text for a terminal, markdown for a comment (the plan), json for machines (one "
                   "document: the plan, and the result once written; docs/plan-format.md).")
@click.option("--dry-run", is_flag=True,
              help="Show the plan and stop: read the snapshot and the target, write nothing, ask nothing.")
@click.option("--auto-approve", is_flag=True, help="Restore without asking for confirmation.")
@click.option("--journal-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DIRECTORY, show_default=True,
              help="Where the journal of the writes is written (an apply's format, its start line "
                   "saying \"operation\": \"restore\").")
@click.option("--max-writes-per-second", type=click.FloatRange(min=1), metavar="N",
              help="Cap the write rate. Default: the 500/50/5 ramp on Firestore (start at 500/s, "
                   "+50% every 5 minutes); no cap on the emulator or a snapshot file.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH, show_default=True,
              help="Documents per commit.")
@parallel_option
@click.option("--verbose", "-v", is_flag=True,
              help="List every skipped write with its reason (by default: one line per reason).")
@lease_options
@lock_collection_option
@quiet_option
@timeout_option
def restore(snapshot_path: str, target: str, collections: tuple[str, ...], fmt: str, dry_run: bool,
            auto_approve: bool, journal_dir: Path, max_writes_per_second: float | None, batch_size: int,
            parallel: int, verbose: bool, lock_timeout: float, lease_ttl: float, quiet: bool,
            timeout: float) -> None:
    """Create the documents of SNAPSHOT that are missing at --to; never touch one that exists.

    Create-only: each document of the snapshot that does not exist at the target is created with
    the snapshot's exact values (every type: timestamps, references, bytes, geo points, maps,
    arrays, integers and doubles); each write requires that its document does not exist. A
    document already there is left as it is, and counted as identical (the same fields) or
    different. Nothing is ever deleted or overwritten. For a staging copy, recovering documents
    deleted by mistake from a backup, or loading the demo data into an empty emulator.

    The plan is shown first, then confirmed ("yes"; refused without a terminal unless
    --auto-approve). The writes are journaled like an apply's, in batches, under --timeout. Then
    the target is re-read: every snapshot document present, those created equal to the snapshot,
    those present before unchanged. A document created by someone else between the plan and the
    write is skipped and reported, never forced; a killed restore run again creates only what is
    still missing.

    Exit 0 when every missing document was created, 2 when some were not (skipped) or the check
    found a difference, 1 on error (nothing written).

    \b
    Load the demo data into an empty emulator:
      export FIRESTORE_EMULATOR_HOST=127.0.0.1:8080
      reconcile restore snapshots/demo.json --to firestore://demo-project --auto-approve
    Bring back assignments deleted by mistake, from a backup `reconcile snapshot` wrote:
      reconcile restore backup.json --to firestore://my-project --collection check_in_assignments
    See what a staging copy in a new snapshot file would hold, writing nothing:
      reconcile restore snapshots/demo.json --to /tmp/staging.json --dry-run
    """
    run = _Run(quiet, journal_dir=journal_dir, max_writes_per_second=max_writes_per_second,
               batch_size=batch_size, parallel=parallel, timeout=timeout, lock_timeout=lock_timeout,
               lease_ttl=lease_ttl)
    planned = commands.plan_restore(snapshot_path, target, collections, run.options)
    plan = planned.plan
    if dry_run:
        run.finish(f"planned the restore of {plan.documents} documents")
        _echo(render_restore(plan, fmt), fmt=fmt)
        return
    if fmt != "json":  # JSON output is one document: the report once written, plan included
        _echo(render_restore(plan, fmt))
    if plan.creates and not auto_approve:
        _ask("restore", f"Create these {len(plan.creates)} documents at {target} ({len(plan.identical)} "
                        f"present and identical, {len(plan.different)} present and different, left as "
                        "they are)?", err=fmt == "json")
    restored = commands.restore(planned, run.options)
    run.finish(f"restored {restored.check.created} of {len(plan.creates)} documents")
    if restored.journal and fmt != "json":
        click.echo(f"Journal: {printable(str(restored.journal))}")
    shown = "json" if fmt == "json" else "text"
    _echo(render_restored(plan, restored.check, shown, verbose), fmt=shown)
    if not restored.check.complete:
        raise _Exit(EXIT_CHANGES)


@cli.command()
@click.argument("journal_file", metavar="JOURNAL|RUN_DIR")
@click.option("--source", metavar="SRC",
              help="A check: refuse (exit 1, nothing written) unless the journal's source is SRC. The "
                   "rollback always writes to the source the journal names.")
@click.option("--auto-approve", is_flag=True, help="Roll back without asking for confirmation.")
@click.option("--dry-run", is_flag=True,
              help="Show the rollback plan and stop; writes nothing (exit 0, or 2 when some writes "
                   "would be left as they are).")
@click.option("--format", "fmt", type=click.Choice(list(ROLLBACK_FORMATS)), default="text",
              show_default=True,
              help="text for a terminal, markdown for a ticket or a comment (no document value), json "
                   "for machines: one document, the rollback report (docs/plan-format.md).")
@click.option("--journal-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DIRECTORY, show_default=True,
              help="Where the rollback's own journal (its deletes, clears, before-values, outcomes) is "
                   "written; never the RUN_DIR being rolled back.")
@click.option("--max-writes-per-second", type=click.FloatRange(min=1), metavar="N",
              help="Cap the write rate. Default: the 500/50/5 ramp on Firestore; no cap on the "
                   "emulator or a snapshot file.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH, show_default=True,
              help="Writes per commit (a link's undo is never split across commits).")
@parallel_option
@lease_options
@lock_collection_option
@quiet_option
@timeout_option
def rollback(journal_file: str, source: str | None, auto_approve: bool, dry_run: bool, fmt: str,
             journal_dir: Path, max_writes_per_second: float | None, batch_size: int, parallel: int,
             lock_timeout: float, lease_ttl: float, quiet: bool, timeout: float) -> None:
    """Undo the writes one past apply (or restore) recorded in JOURNAL, where nobody has touched
    the documents since; or in RUN_DIR, the directory of journals `apply --runner beam` printed
    after "Journal:" (one journal per bundle of commits), undone as one rollback.

    Writes to the source the journal names (--source only checks it). A document the run created
    is deleted, and a document it filled gets exactly its empty values back (a missing field
    removed, null, or "") and its status moved back; each write only if the document's update time
    is still the one the run's write left, and it holds exactly what the journal says the run
    wrote. A link is undone whole or not at all. Everything else is left as it is and listed with
    why: changed or deleted since, in doubt (the run died before recording a commit's outcome), or
    not what the journal describes. Documents already as they were before the run are recognised,
    so a rollback that was stopped can be run again to finish. The only command that deletes.

    Shows the rollback plan, asks (unless --auto-approve; refuses without a terminal), writes its
    own journal, then re-reads every document it wrote. Exit 0 when every write of the run is
    undone, 2 when some were left as they are or skipped, 1 on bad input (nothing written). The
    journal of a rollback is refused: a rollback is not undone by another.

    RUN_DIR: every journal in it (*.jsonl) is read as strictly as one, and their writes are undone
    together, with one plan, one confirmation and one rollback journal (in --journal-dir, which may
    not be RUN_DIR). Refused (exit 1, nothing written) when it holds no journal, a rollback's
    journal, or journals of different sources, specs or plans. Journals are read from this
    machine's disk: copy a run directory on gs:// here first (gcloud storage cp --recursive).

    \b
    Undo the apply whose journal the apply printed:
      reconcile rollback .reconcile/journal/20251103T080000123456Z-checkins.jsonl \\
        --source firestore://my-project --dry-run
      reconcile rollback .reconcile/journal/20251103T080000123456Z-checkins.jsonl
    \b
    Undo a whole `apply --runner beam` (its run directory):
      reconcile rollback .reconcile/journal/20251103T080000123456Z-checkins-beam --dry-run
      reconcile rollback .reconcile/journal/20251103T080000123456Z-checkins-beam
    """
    run = _Run(quiet, journal_dir=journal_dir, max_writes_per_second=max_writes_per_second,
               batch_size=batch_size, parallel=parallel, timeout=timeout, lock_timeout=lock_timeout,
               lease_ttl=lease_ttl)
    planned = commands.plan_undo(journal_file, source, run.options)
    plan = planned.plan
    writes = bool(plan.ops) and not dry_run
    if fmt != "json" or not writes:  # JSON is one document: with writes, the report at the end
        _echo(render_rollback(plan, fmt), fmt=fmt)
    if not writes:
        run.finish(f"planned the rollback of {len(planned.past.written)} journaled writes")
        if plan.left:
            raise _Exit(EXIT_CHANGES)
        return
    if not auto_approve:
        _ask("roll back", f"Undo these {len(plan.ops)} document writes ({plan.deletes} to delete, "
                          f"{plan.restores} to restore) in {plan.source}?", err=fmt == "json")
    rolled = commands.undo(planned, run.options)
    run.finish(f"undid {sum(r.applied for r in rolled.results)} of {len(rolled.results)} writes")
    if rolled.journal and fmt != "json":
        click.echo(f"Journal: {printable(str(rolled.journal))}")
    _echo(render_rollback_check(plan, rolled.check, "json" if fmt == "json" else "text"),
          fmt="json" if fmt == "json" else "text")
    if not rolled.check.complete:
        raise _Exit(EXIT_CHANGES)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (for editors and CI linters)."""
    import json

    from reconciler.spec import schema as spec_schema

    click.echo(json.dumps(spec_schema(), indent=2))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run, and turn every failure into one sentence and exit code 1."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    # A run is a batch job that builds millions of long-lived objects with no reference cycles;
    # the cyclic collector would traverse them again and again (a third of a million-document
    # plan). Reference counting still frees everything; the process ends with the run.
    gc.disable()
    if not debug:  # a pipeline's worker logs its error with a traceback; the run says it in one sentence
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    # A stop request ends the run the way Ctrl-C does, so an apply closes its journal truthfully.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cli.main(args=args, prog_name="reconcile", standalone_mode=False)
    except _Exit as stop:
        sys.exit(stop.code)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.Abort:
        click.echo("Aborted; nothing was written.", err=True)
        sys.exit(EXIT_ERROR)
    except MemoryError:
        click.echo("error: not enough memory for this run; an input is larger than this machine can "
                   "hold (a plan or snapshot file of that size is not one this tool wrote?)", err=True)
        sys.exit(EXIT_ERROR)
    except click.UsageError as error:
        hint = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
        click.echo(f"error: {error.format_message()}{hint}", err=True)
        sys.exit(EXIT_ERROR)
    except ReconcileError as error:
        if debug:
            traceback.print_exc()
        # Only a spec's list of problems spans lines; any other line break came from data.
        click.echo(f"error: {printable(str(error), newlines=isinstance(error, SpecError))}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as error:  # a bug: still one sentence unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"error: internal error ({type(error).__name__}: {printable(str(error))}); re-run with "
                   "--debug for the traceback and report it", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK)
