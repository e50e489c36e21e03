"""The kernel on several cores: fork after the read, each process planning a share of the series.

``reconcile_on_cores`` gives what ``kernel.reconcile`` gives, byte for byte once encoded: the
series are grouped once in this process, then forked workers each run the per-series kernel on
every n-th series (this process takes one share itself) and send their ops and findings back
through a pipe; ``kernel.merge_outcomes`` orders them as one run would. Forked workers share the
read state with this process, page by page, instead of receiving a copy of it. ``plan_on_cores``
also has each process encode the ops it planned for the plan file (sent as raw bytes after the
pickle of the rest) and, for a caller done with the state, each process let go of the documents
outside its own share, so that their memory holds the results.

Owns the worker processes, and nothing else: a worker that dies, or exits without its whole result,
is one sentence (``ReconcileError``), never a hang or a part of a plan; a failure in this process
ends the workers it started. Where ``os.fork`` is missing, or with one core, the kernel runs here.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Callable, Container, Sequence

from reconciler.errors import ReconcileError
from reconciler.kernel import SeriesInput, merge_outcomes, reconcile_all, select_series, stem_of_id
from reconciler.model import Finding, Op, Spec, State
from reconciler.plan import op_item
from reconciler.selection import Selection

Outcome = tuple[list[Op], list[Finding]]
Encoded = tuple[list[Op], list[Finding], list[bytes] | None]  # with each op's item of the plan file


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
    ops, findings, _ = plan_on_cores(spec, state, selection, cores, encode=False)
    return ops, findings


def plan_on_cores(spec: Spec, state: State, selection: Selection | None = None, cores: int | None = None,
                  encode: bool = True, release: bool = False) -> Encoded:
    """``reconcile_on_cores``, and with ``encode`` each op as the plan file holds it
    (``plan.op_item``, in the order of the ops), encoded by the process that planned it: encoding
    is as much work as planning, and a worker's bytes cost little to send back. ``release``: for a
    caller that needs ``state``'s documents no more, its collections are emptied once the workers
    have started, so that each process holds the documents of its own share only and the memory
    of the others' is reused for the ops."""
    cores = available_cores() if cores is None else cores
    series_list, findings = select_series(spec, state, selection)
    taken: Container[str] = state.documents(spec.series.collection).keys()
    if cores <= 1 or len(series_list) < 2 or not hasattr(os, "fork"):
        return _merge([_share(spec, series_list, taken, encode), ([], findings, [])], encode)
    if release:  # the IDs a new week's ID can be (kernel.stem_of_id), kept apart from the state
        taken = frozenset(doc_id for doc_id in taken if len(doc_id) >= 25 and stem_of_id(doc_id))
    # Every n-th series, not n runs of consecutive ones: neighbours in key order are alike in
    # size, so each share gets as much work as the others.
    shares = [series_list[index::cores] for index in range(cores)]
    del series_list
    pending: list[tuple[int, int, int]] = []  # started and not yet collected: pid, pipe, series
    try:
        for index in range(1, cores):
            forget = (lambda keep=index: _forget(state, shares, keep)) if release else None
            pending.append((*_start(spec, shares[index], taken, encode, forget), len(shares[index])))
        if release:
            _forget(state, shares, 0)
        parts = [_share(spec, shares[0], taken, encode), ([], findings, [])]
        if release:  # planned: the memory of its documents is reused for the workers' results
            shares[0].clear()
        while pending:
            pid, reader, count = pending[0]
            del pending[0]  # collected, or reaped by _result whatever it finds
            parts.append(_result(pid, reader, count))
    except BaseException:
        _stop(pending)
        raise
    return _merge(parts, encode)


Part = tuple[list[Op], list[Finding], list[bytes]]


def _share(spec: Spec, share: Sequence[SeriesInput], taken, encode: bool) -> Part:
    """One share of the series through the kernel; with ``encode``, its ops sorted by path and
    encoded."""
    ops, findings = reconcile_all(spec, share, taken)
    if not encode:
        return ops, findings, []
    ops.sort(key=_path)
    return ops, findings, [op_item(op) for op in ops]


def _path(op: Op) -> str:
    return op.path


def _merge(parts: list[Part], encode: bool) -> Encoded:
    """The shares as one plan's ops and findings (``kernel.merge_outcomes``' order), the encoded
    ops following their ops."""
    if not encode:
        return (*merge_outcomes([(part_ops, part_findings) for part_ops, part_findings, _ in parts]), None)
    _, findings = merge_outcomes([([], part_findings) for _, part_findings, _ in parts])
    # Paths are unique in a plan, so the order by path is total and the items follow their ops.
    paired = [pair for part_ops, _, items in parts for pair in zip(part_ops, items, strict=True)]
    paired.sort(key=lambda pair: pair[0].path)
    return [op for op, _ in paired], findings, [item for _, item in paired]


def _forget(state: State, shares: list[list[SeriesInput]], keep: int) -> None:
    """Let go of every document outside share ``keep`` that this process holds through ``state``
    and ``shares`` (a forked process has its own copy of both)."""
    for docs in state.collections.values():
        docs.clear()
    for index, share in enumerate(shares):
        if index != keep:
            share.clear()


def _start(spec: Spec, share: list[SeriesInput], taken, encode: bool,
           forget: Callable[[], None] | None = None) -> tuple[int, int]:
    """Fork a worker planning ``share`` (``forget``: what it lets go of first); returns its
    process ID and the pipe it answers on."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: plan, send, and leave without running anything of the parent's
        code = 1
        try:
            os.close(reader)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a worker at once
            if forget is not None:
                forget()
            ops, findings, items = _share(spec, share, taken, encode)
            if forget is not None:
                share.clear()  # planned: its memory is reused below
            # The encoded ops go as they are, after the pickle of the rest: a pickle would copy them
            # once more on each side.
            data = pickle.dumps((ops, findings, [len(item) for item in items]),
                                protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(writer, "wb") as out:
                out.write(len(data).to_bytes(8, "big") + sum(map(len, items)).to_bytes(8, "big"))
                out.write(data)
                del data
                for item in items:
                    out.write(item)
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    return pid, reader


def _result(pid: int, reader: int, series: int) -> Part:
    """A worker's ops and findings, once it has sent them all and exited cleanly."""
    try:
        with os.fdopen(reader, "rb") as answer:  # read to the end first: a worker blocks on a full pipe
            head = answer.read(16).rjust(16, b"\0")
            size, raw = int.from_bytes(head[:8], "big"), int.from_bytes(head[8:], "big")
            data = bytearray(size)  # read in place: the result is large, and held once
            encoded = bytearray(raw)
            got = answer.readinto(data) if size else 0
            got_raw = answer.readinto(encoded) if raw else 0
            whole = got == size and size > 0 and got_raw == raw and not answer.read(1)
    finally:
        _, status = _reap(pid)
    if os.waitstatus_to_exitcode(status) != 0 or not whole:
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise ReconcileError(f"a worker process planning {series} series {how} before sending its whole "
                             "result; no plan was made: run the command again")
    ops, findings, lengths = pickle.loads(data)
    del data
    view, items, start = memoryview(encoded), [], 0
    for length in lengths:  # each op's item, a view of the bytes received: not copied again
        items.append(view[start:start + length])
        start += length
    return ops, findings, items


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
