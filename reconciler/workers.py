"""The kernel on several cores: fork after the read, each process planning a share of the series.

``reconcile_on_cores`` gives what ``kernel.reconcile`` gives, byte for byte once encoded: the
series are grouped once in this process, then forked workers each run the per-series kernel on
every n-th series (this process takes one share itself) and send their ops and findings back
through a pipe; ``kernel.merge_outcomes`` orders them as one run would. Forked workers share the
read state with this process, page by page, instead of receiving a copy of it.

Owns the worker processes, and nothing else: a worker that dies, or exits without its whole result,
is one sentence (``ReconcileError``), never a hang or a part of a plan; a failure in this process
ends the workers it started. Where ``os.fork`` is missing, or with one core, the kernel runs here.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Sequence

from reconciler.errors import ReconcileError
from reconciler.kernel import SeriesInput, merge_outcomes, reconcile_all, select_series
from reconciler.model import Finding, Op, Spec, State
from reconciler.selection import Selection

Outcome = tuple[list[Op], list[Finding]]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def reconcile_on_cores(spec: Spec, state: State, selection: Selection | None = None,
                       cores: int | None = None) -> Outcome:
    """``kernel.reconcile(spec, state, selection)`` on ``cores`` processes (default: every core
    this process may use)."""
    cores = available_cores() if cores is None else cores
    series_list, findings = select_series(spec, state, selection)
    taken = state.documents(spec.series.collection).keys()
    if cores <= 1 or len(series_list) < 2 or not hasattr(os, "fork"):
        return merge_outcomes([reconcile_all(spec, series_list, taken), ([], findings)])
    # Every n-th series, not n runs of consecutive ones: neighbours in key order are alike in
    # size, so each share gets as much work as the others.
    shares = [series_list[index::cores] for index in range(cores)]
    pending: list[tuple[int, int, int]] = []  # started and not yet collected: pid, pipe, series
    try:
        for share in shares[1:]:
            pending.append((*_start(spec, share, taken), len(share)))
        parts = [reconcile_all(spec, shares[0], taken), ([], findings)]
        while pending:
            pid, reader, count = pending[0]
            del pending[0]  # collected, or reaped by _result whatever it finds
            parts.append(_result(pid, reader, count))
    except BaseException:
        _stop(pending)
        raise
    return merge_outcomes(parts)


def _start(spec: Spec, share: Sequence[SeriesInput], taken) -> tuple[int, int]:
    """Fork a worker planning ``share``; returns its process ID and the pipe it answers on."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: plan, send, and leave without running anything of the parent's
        code = 1
        try:
            os.close(reader)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a worker at once
            data = pickle.dumps(reconcile_all(spec, share, taken), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(writer, "wb") as out:
                out.write(len(data).to_bytes(8, "big"))
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    return pid, reader


def _result(pid: int, reader: int, series: int) -> Outcome:
    """A worker's ops and findings, once it has sent them all and exited cleanly."""
    try:
        with os.fdopen(reader, "rb") as answer:  # read to the end first: a worker blocks on a full pipe
            size = int.from_bytes(answer.read(8).rjust(8, b"\0"), "big")
            data = bytearray(size)  # read in place: the result is large, and held once
            got = answer.readinto(data) if size else 0
            whole = got == size and size > 0 and not answer.read(1)
    finally:
        _, status = _reap(pid)
    if os.waitstatus_to_exitcode(status) != 0 or not whole:
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise ReconcileError(f"a worker process planning {series} series {how} before sending its whole "
                             "result; no plan was made: run the command again")
    return pickle.loads(data)


def _reap(pid: int) -> tuple[int, int]:
    """Wait for a worker to exit; if this process is interrupted meanwhile, end the worker first."""
    try:
        return os.waitpid(pid, 0)
    except BaseException:
        _stop([(pid, -1, 0)])
        raise


def _stop(workers: list[tuple[int, int, int]]) -> None:
    """End and reap workers this process started and has not collected (a failure or Ctrl-C here)."""
    for pid, reader, _ in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if reader >= 0:
            os.close(reader)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
