"""The benchmark suite: ``python -m bench`` prints a table of figures and ratios and writes it,
with the machine's description, to docs/benchmarks.md.

    python -m bench                  # everything (about 17 minutes on 2 cores)
    python -m bench --quick          # small scales, for a smoke test (about a minute)
    python -m bench --no-live        # offline only (no emulator)

Every figure is measured in this run, side by side; ratios compare figures of the same run.
Commands are run as users run them (``reconcile ...`` in a fresh process) and their peak memory is
the process's own maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the emulator harness is shared with the test suite

from bench.generate import Shape, generate  # noqa: E402

SPEC = ROOT / "specs" / "checkins.yaml"


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # measure, figure, target, verdict
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, figure: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((measure, figure, target, verdict))
        print(f"  {measure}: {figure}" + (f"   [target {target}: {verdict}]" if target else ""), flush=True)

    def markdown(self, machine: str, command: str) -> str:
        lines = ["# Benchmarks", "", f"Measured by `{command}` on {machine}.", "",
                 "| measure | figure | target | |", "|---|---|---|---|"]
        lines += [f"| {m} | {f} | {t} | {v} |" for m, f, t, v in self.rows]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def run_cli(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> tuple[float, float, str]:
    """Run ``reconcile`` in a fresh process: wall seconds, its peak memory in MiB, its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=cwd or ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                   stdout=out, stderr=err)
        # wait4 gives this child's own peak memory, not the largest of all children so far.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode not in (0, 2):
            raise RuntimeError(f"reconcile {' '.join(args)} failed:\n{err.read().decode()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def shape_for(assignments: int, responses_share: float = 0.2, present: float = 0.9) -> Shape:
    """A shape with about ``assignments`` assignments and ``responses_share`` as many responses."""
    per_series = 1 + 51 * present
    clients = max(1, round(assignments / per_series))
    return Shape(clients=clients, present=present,
                 responses_per_series=responses_share * assignments / clients)


# -- offline ---------------------------------------------------------------------------------------------


def offline(report: Report, scales: list[int], work: Path) -> None:
    print("Offline plan on snapshot files (reconcile plan --out plan.json --format markdown)", flush=True)
    startup = min(run_cli("--version")[0] for _ in range(3))
    report.add("process start-up (reconcile --version, best of 3)", f"{startup:.2f} s")
    per_doc: list[float] = []
    for scale in scales:
        # Made and measured in processes of their own (bench/offline_steps.py): a command started
        # from a process that holds a large state would count that state in its peak memory.
        path = work / f"offline-{scale}.json"
        shape = shape_for(scale)
        counts = json.loads(_step("generate", path, shape.clients, shape.present,
                                  shape.responses_per_series))
        docs = sum(counts.values())
        os.sync()  # the file's write-back must not overlap the timed read
        seconds, peak, _ = run_cli("plan", "--spec", str(SPEC), "--source", str(path), "--out",
                                   str(work / "plan.json"), "--format", "markdown", "--quiet")
        per_doc.append(max(seconds - startup, 1e-9) / docs)
        label = f"{counts['check_in_assignments']:,} assignments, {counts['formResponses']:,} responses"
        is_target = counts["check_in_assignments"] >= 1_000_000
        report.add(f"offline plan, {label}: wall", f"{seconds:.1f} s",
                   "≤ 10 s" if is_target else "", seconds <= 10 if is_target else None)
        report.add(f"offline plan, {label}: peak memory", f"{peak:,.0f} MiB",
                   "≤ 1,024 MiB" if is_target else "", peak <= 1024 if is_target else None)
        report.add(f"offline plan, {label}: memory per document", f"{peak * 1024 / docs:.2f} KB")
        report.add(f"offline plan, {label}: time per document, net of start-up",
                   f"{per_doc[-1] * 1e6:.1f} µs (×{per_doc[-1] / per_doc[0]:.2f} the smallest scale's)")
        kernel = float(_step("kernel", path))
        report.add(f"pure kernel alone (one core), {label}", f"{docs / kernel:,.0f} documents/s per core",
                   "≥ 300,000 documents/s per core" if is_target else "",
                   docs / kernel >= 300_000 if is_target else None)
        path.unlink()


# -- Beam ------------------------------------------------------------------------------------------------


def beam(report: Report, scales: list[int], work: Path) -> None:
    """The Beam pipeline on Beam's DirectRunner (this machine), beside the local engine on the same
    snapshot file: the same plan, made by the pipeline that spreads over Dataflow's workers."""
    print("Beam DirectRunner plan on snapshot files (reconcile plan --runner beam --out DIR)", flush=True)
    for scale in scales:
        path = work / f"beam-{scale}.json"
        shape = shape_for(scale)
        counts = json.loads(_step("generate", path, shape.clients, shape.present, shape.responses_per_series))
        docs = sum(counts.values())
        assignments = counts["check_in_assignments"]
        os.sync()
        local, local_peak, _ = run_cli("plan", "--spec", str(SPEC), "--source", str(path), "--out",
                                       str(work / "plan.json"), "--quiet")
        seconds, peak, _ = run_cli("plan", "--spec", str(SPEC), "--source", str(path), "--runner", "beam",
                                   "--out", str(work / f"beam-plan-{scale}"), "--quiet")
        label = f"{assignments:,} assignments, {docs:,} documents"
        report.add(f"Beam DirectRunner plan, {label}: wall",
                   f"{seconds:.1f} s = ×{seconds / local:.1f} the local plan's {local:.1f} s")
        report.add(f"Beam DirectRunner plan, {label}: peak memory",
                   f"{peak:,.0f} MiB ({peak * 1024 / docs:.1f} KB per document; local "
                   f"{local_peak:,.0f} MiB, {local_peak * 1024 / docs:.1f} KB per document)")
        shutil.rmtree(work / f"beam-plan-{scale}", ignore_errors=True)
        path.unlink()


def _step(*args: object) -> str:
    """Run one step of bench/offline_steps.py in a fresh process; its standard output."""
    return subprocess.run([sys.executable, "-m", "bench.offline_steps", *map(str, args)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True,
                          text=True).stdout


# -- live ------------------------------------------------------------------------------------------------


def live(report: Report, assignments: int, baseline_clients: int, baseline_sample: int, work: Path,
         beam_assignments: int) -> None:
    from emulator import Emulator

    from reconciler.store import FirestoreStore

    print("Live Firestore on the emulator", flush=True)
    emulator = Emulator()
    env = {"FIRESTORE_EMULATOR_HOST": emulator.host}
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        # Half the weeks present: the plan creates about as many assignments as exist.
        state = generate(shape_for(assignments, present=0.5))
        counts = {name: len(docs) for name, docs in state.collections.items()}
        docs = sum(counts.values())
        store = FirestoreStore("firestore://bench-live")
        started = time.perf_counter()
        store.create_all(state)  # 500-write batches of creates: the batched-write floor
        write_floor = docs / (time.perf_counter() - started)
        report.add(f"write floor: {docs:,} new documents in 500-write batches",
                   f"{write_floor:,.0f} writes/s")
        del state

        client = store.client()
        started = time.perf_counter()
        for name in counts:
            for _ in client.collection(name).stream():
                pass
        read_floor = time.perf_counter() - started
        report.add(f"read floor: stream {docs:,} documents once", f"{read_floor:.1f} s")

        label = f"{counts['check_in_assignments']:,} assignments, {counts['formResponses']:,} responses"
        seconds, _, _ = run_cli("plan", "--spec", str(SPEC), "--source", "firestore://bench-live",
                                "--out", str(work / "live-plan.json"), "--format", "markdown",
                                "--quiet", env=env)
        report.add(f"live plan, {label}", f"{seconds:.1f} s = ×{seconds / read_floor:.2f} the read floor",
                   "≤ ×1.15", seconds / read_floor <= 1.15)

        journal = work / "journal"
        seconds, _, _ = run_cli("apply", str(work / "live-plan.json"), "--quiet", "--journal-dir",
                                str(journal), env=env)
        writes, creates, elapsed = _journal_figures(journal)
        throughput = writes / elapsed
        report.add(f"live apply: {creates:,} creates, {writes:,} writes in all",
                   f"{throughput:,.0f} writes/s = ×{throughput / write_floor:.2f} the write floor "
                   f"(whole command {seconds:.1f} s, with its reads and validation)",
                   "≥ ×0.7", throughput / write_floor >= 0.7)
        emulator.reset("bench-live")

        _beam_apply(report, emulator, env, beam_assignments, work)
        _baseline(report, emulator, env, baseline_clients, baseline_sample, work)
    finally:
        emulator.stop()


def _beam_apply(report: Report, emulator, env: dict[str, str], assignments: int, work: Path) -> None:
    """The same plan applied twice to the same data, once in one process and once as a Beam
    pipeline on the DirectRunner: whole commands, reads, writes and validation included."""
    from reconciler.store import FirestoreStore

    state = generate(shape_for(assignments, present=0.5))
    label = (f"{len(state.documents('check_in_assignments')):,} assignments, "
             f"{len(state.documents('formResponses')):,} responses")
    seconds = {}
    for runner in ("local", "beam"):
        emulator.reset("bench-beam")
        FirestoreStore("firestore://bench-beam").create_all(state)
        plan = work / f"beam-apply-{runner}.json"
        run_cli("plan", "--spec", str(SPEC), "--source", "firestore://bench-beam", "--out", str(plan),
                "--quiet", env=env)
        seconds[runner], _, _ = run_cli("apply", str(plan), "--quiet", "--format", "json", "--runner", runner,
                                        "--journal-dir", str(work / f"beam-journal-{runner}"), env=env)
    emulator.reset("bench-beam")
    report.add(f"Beam DirectRunner apply, {label}: whole command",
               f"{seconds['beam']:.1f} s = ×{seconds['beam'] / seconds['local']:.1f} the local apply's "
               f"{seconds['local']:.1f} s")


def _journal_figures(directory: Path) -> tuple[int, int, float]:
    import json

    [path] = directory.glob("*.jsonl")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    start = datetime.fromisoformat(events[0]["at"]["$timestamp"])
    end = datetime.fromisoformat(events[-1]["at"]["$timestamp"])
    ops = [op for e in events if e["event"] == "commit" for op in e["ops"]]
    return len(ops), sum(op["op"] == "create_document" for op in ops), (end - start).total_seconds()


def _baseline(report: Report, emulator, env: dict[str, str], clients: int, sample: int, work: Path) -> None:
    """``reconcile apply --spec --source`` end to end (a fresh process: start-up, lease, read, plan,
    writes, validation re-read) against the seed-style script on the same database, each on its
    own copy. The script runs every series when ``sample`` covers them all, else a sample of
    series against the full database, extrapolated by the number of series."""
    from bench.baseline import migrate_series, series_of
    from reconciler.store import FirestoreStore

    shape = Shape(clients=clients, present=0.5, responses_per_series=5, base_missing=0,
                  base_without_week=0, week_duplicate=0)
    state = generate(shape)
    counts = {name: len(docs) for name, docs in state.collections.items()}
    ours = FirestoreStore("firestore://bench-ours")
    ours.create_all(state)
    seconds_ours, _, _ = run_cli("apply", "--spec", str(SPEC), "--source", "firestore://bench-ours",
                                 "--auto-approve", "--quiet", "--journal-dir", str(work / "journal-ours"),
                                 env=env)
    writes, _, _ = _journal_figures(work / "journal-ours")
    seed = FirestoreStore("firestore://bench-seed")
    seed.create_all(state)
    chosen = series_of(state)
    if sample < len(chosen):
        chosen = random.Random(1).sample(chosen, sample)
    started = time.perf_counter()
    for base, responses in chosen:
        migrate_series(seed.client(), base, responses)
    per_series = (time.perf_counter() - started) / len(chosen)
    seconds_seed = per_series * len(series_of(state))
    how = ("measured, every series" if sample >= clients else
           f"extrapolated from {len(chosen)} of {clients} series run against the full database")
    label = (f"{clients} clients ({counts['check_in_assignments']:,} assignments, "
             f"{counts['formResponses']:,} responses)")
    report.add(f"seed-style baseline, {label}", f"{seconds_seed:,.1f} s ({how})")
    report.add(f"reconcile apply --spec --source end to end, {label}, {writes:,} writes",
               f"{seconds_ours:.1f} s = ×{seconds_seed / seconds_ours:,.1f} faster than the baseline",
               "≥ ×25", seconds_seed / seconds_ours >= 25)
    emulator.reset("bench-ours")
    emulator.reset("bench-seed")


# -- the run ---------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB memory, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scales: a smoke test of the runner")
    parser.add_argument("--no-live", action="store_true", help="skip the emulator measurements")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="where to write the table (default: docs/benchmarks.md)")
    args = parser.parse_args()
    scales = [2_000, 20_000, 200_000] if args.quick else [10_000, 100_000, 1_000_000]
    live_assignments = 10_000 if args.quick else 104_000
    baseline_clients, baseline_sample = (40, 2) if args.quick else (120, 120)  # 120: about 2 minutes

    report = Report()
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    try:
        offline(report, scales, work)
        beam(report, [2_000] if args.quick else [10_000, 100_000], work)
        if not args.no_live:
            live(report, live_assignments, baseline_clients, baseline_sample, work,
                 beam_assignments=2_000 if args.quick else 10_000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python -m bench" + (" --quick" if args.quick else "") + (" --no-live" if args.no_live else "")
    args.out.write_text(report.markdown(machine(), command) + _notes_file())
    print(f"wrote {args.out}")


def _notes_file() -> str:
    notes = ROOT / "bench" / "NOTES.md"
    return "\n" + notes.read_text() if notes.exists() else ""


if __name__ == "__main__":
    main()
