"""Rollback: which of one past run's writes may be undone now, and the ops that undo them. Pure.

Owns the only op types that delete a document or take a value away (``DeleteDocumentOp``,
``ClearFieldsOp``), kept apart from the plan's model on purpose: a plan cannot hold them, and only
``reconcile rollback`` builds them, from a journal (``PastRun``, what a run says it wrote) and a
fresh read of the documents it names. Must not read files, a clock or a store.

A write is undone only when it is provably still the tool's, document by document:

- the journal says it was applied and names the update time the write left, and the document's
  update time is still that one (nobody wrote it since);
- the document holds exactly what the journal says it held after the run's writes: the values
  recorded before the run with the run's fills and status move on top (a created document: the
  fields it was created with), and nothing else;
- when one journal wrote a document several times, each later write was made over the run's own
  earlier one (its precondition is the earlier write's update time): only the last update time is
  the run's, and the undo goes back to the values before the first.

Undoing a create deletes the document; undoing a fill clears each filled field back to the exact
empty value recorded before (missing, null or "") and moves the status back, each write under the
precondition "update time unchanged". A link (the ops of one group) is undone whole or not at all,
so a rollback never leaves a half link. A document already as it was before the run (a created one
gone, a filled one holding its recorded values: undone by an earlier rollback, or never written) is
recognised as such, which is what makes a killed rollback safe to run again. Everything else is
left as it is and reported with why: changed or deleted since, the journal does not describe it,
or in doubt (the run died between sending a commit and recording its outcome: the write may be the
tool's, but the journal cannot prove it, so it is not undone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.formats import ROLLBACK
from reconciler.model import CreateDocumentOp, Document, FillFieldsOp, Op, OpResult
from reconciler.values import MISSING, encode, encode_fields, format_timestamp, is_empty, same, show

# -- what a journal says a run wrote ---------------------------------------------------------------

APPLIED, SKIPPED, IN_DOUBT = "applied", "skipped", "in_doubt"
UNDOABLE = ("apply", "restore")  # the operations whose journals a rollback undoes


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """One op a journal's commit line records, and what its result line says became of it."""

    batch: int
    op: Op
    before: Document | None  # the document as read before the run (None: it did not exist)
    outcome: str  # APPLIED, SKIPPED, or IN_DOUBT (the commit line has no result line)
    update_time: datetime | None  # the update time the write left, when applied


@dataclass(frozen=True, slots=True, kw_only=True)
class PastRun:
    """What one journal says its run (an apply or a restore) wrote, in journal order; or what the
    journals of one run directory say together (a Beam apply writes one per bundle of commits)."""

    journal: str  # the file, as given
    sha256: str  # of the file's bytes
    operation: str
    spec_name: str
    spec_sha256: str
    source: str
    started: datetime | None
    ended: bool  # the journal has its closing line (a run killed with SIGKILL has none)
    written: tuple[Written, ...]
    plan_read_time: datetime | None = None  # the read time of the plan the run applied
    journals: tuple[str, ...] = ()  # a run directory's journals, read as one (``journal``: the directory)


# -- the undo ops ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteDocumentOp:
    """Delete a document the run created. Precondition: its update time is still the one the run's
    write left."""

    path: str
    update_time: datetime
    fields: dict[str, Any]  # what it holds: exactly what the run created
    group: str | None = None  # ops with the same group commit atomically (a link's undo)

    def refusal(self, current: Document | None) -> str:
        if current is None:
            return "the document no longer exists"
        if current.update_time != self.update_time:
            return "the document changed since the run wrote it"
        return ""

    def in_effect(self, current: Document | None) -> bool:
        return current is None


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldClear:
    """Take ``field`` from ``value`` (what the run filled) back to ``to``, the empty value it held."""

    field: str
    value: Any
    to: Any

    def __post_init__(self) -> None:
        if not is_empty(self.to):
            raise ValueError(f"a clear only goes back to an empty value, not {self.to!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReturn:
    """Move ``field`` from ``value`` (the status a link moved it to) back to ``to``, as it was."""

    field: str
    value: Any
    to: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearFieldsOp:
    """Clear the fields the run filled and move the status back. Precondition: the document's
    update time is still the one the run's write left."""

    path: str
    update_time: datetime
    clears: tuple[FieldClear, ...]
    status: StatusReturn | None = None
    group: str | None = None

    def refusal(self, current: Document | None) -> str:
        if current is None:
            return "the document no longer exists"
        if current.update_time != self.update_time:
            return "the document changed since the run wrote it"
        for change in self.changes:
            if not same(current.get(change.field), change.value):
                return f"{change.field} no longer holds what the run wrote"
        return ""

    def in_effect(self, current: Document | None) -> bool:
        return current is not None and all(same(current.get(change.field), change.to)
                                           for change in self.changes)

    @property
    def changes(self) -> tuple[FieldClear | StatusReturn, ...]:
        return (*self.clears, *((self.status,) if self.status else ()))

    def cleared(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with this op's changes made (a missing ``to`` removes the field)."""
        result = dict(fields)
        for change in self.changes:
            if change.to is MISSING:
                result.pop(change.field, None)
            else:
                result[change.field] = change.to
        return result


UndoOp = DeleteDocumentOp | ClearFieldsOp


# -- documents left as they are --------------------------------------------------------------------
# Codes are part of the public interface, like finding codes (docs/operations.md lists them).

CHANGED_SINCE = "rollback.changed_since"
DELETED_SINCE = "rollback.deleted_since"
IN_DOUBT_CODE = "rollback.in_doubt"
NOT_AS_JOURNALED = "rollback.not_as_journaled"
PARTNER_LEFT = "rollback.partner_left"
ALREADY_AS_BEFORE = "rollback.already_as_before"
LEFT_CODES = (CHANGED_SINCE, DELETED_SINCE, IN_DOUBT_CODE, NOT_AS_JOURNALED, PARTNER_LEFT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Untouched:
    """A document the rollback does not write, and why. ``left``: the run's write may still be in it
    (exit 2); else the document is already as it was before the run."""

    path: str
    code: str
    reason: str

    @property
    def left(self) -> bool:
        return self.code in LEFT_CODES


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackPlan:
    past: PastRun
    read_time: datetime | None
    ops: tuple[UndoOp, ...]
    untouched: tuple[Untouched, ...]
    not_written: int  # ops the journal records as skipped: nothing of them to undo
    found: int  # documents the journal's writes name that exist now (0 of many: the wrong source?)

    # What a journal's start line names (the rollback's own journal is written like an apply's).
    @property
    def spec_name(self) -> str:
        return self.past.spec_name

    @property
    def spec_sha256(self) -> str:
        return self.past.spec_sha256

    @property
    def source(self) -> str:
        return self.past.source

    @property
    def left(self) -> tuple[Untouched, ...]:
        return tuple(u for u in self.untouched if u.left)

    @property
    def already(self) -> tuple[Untouched, ...]:
        return tuple(u for u in self.untouched if not u.left)

    @property
    def deletes(self) -> int:
        return sum(isinstance(op, DeleteDocumentOp) for op in self.ops)

    @property
    def restores(self) -> int:
        return sum(isinstance(op, ClearFieldsOp) for op in self.ops)

    def groups(self) -> list[tuple[UndoOp, ...]]:
        """The atomic units: a link's undo ops together, every other op alone; in plan order."""
        units: dict[str, list[UndoOp]] = {}
        for op in self.ops:
            units.setdefault(op.group or f"op:{op.path}", []).append(op)
        return [tuple(ops) for ops in units.values()]

    def line(self) -> str:
        return (f"Rollback: {self.deletes} to delete, {self.restores} to restore; "
                f"{len(self.left)} left as they are, {len(self.already)} already as before.")


def plan_rollback(past: PastRun, current: Mapping[str, Document | None],
                  read_time: datetime | None) -> RollbackPlan:
    """What of ``past`` may be undone, given ``current`` (a fresh read of every document it names;
    a path that is absent or maps to None does not exist)."""
    chains: dict[str, list[Written]] = {}
    for written in past.written:
        if written.outcome != SKIPPED:
            chains.setdefault(written.op.path, []).append(written)
    decided = {path: _decide(chain, current.get(path), past.operation) for path, chain in chains.items()}
    ops: list[UndoOp] = []
    untouched: list[Untouched] = []
    for members in _links(past.written, chains):
        left = [decided[path] for path in members
                if isinstance(decided[path], Untouched) and decided[path].left]
        for path in members:
            outcome = decided[path]
            if isinstance(outcome, Untouched):
                untouched.append(outcome)
            elif left:  # undoing this side alone would leave a half link: the link stays whole
                first = left[0]
                assert isinstance(first, Untouched)
                untouched.append(Untouched(path=path, code=PARTNER_LEFT, reason=(
                    f"its link partner {first.path} is left as it is ({first.reason}); a link is undone "
                    "whole or not at all")))
            else:
                ops.append(outcome)
    return RollbackPlan(past=past, read_time=read_time, ops=tuple(sorted(ops, key=lambda op: op.path)),
                        untouched=tuple(sorted(untouched, key=lambda u: (u.code, u.path))),
                        not_written=sum(w.outcome == SKIPPED for w in past.written),
                        found=sum(current.get(path) is not None for path in chains))


def _links(written: Iterable[Written], chains: Mapping[str, list[Written]]) -> list[list[str]]:
    """The paths to undo together: those that share a link group (transitively), each once."""
    parent: dict[str, str] = {path: path for path in chains}

    def root(path: str) -> str:
        while parent[path] != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    by_group: dict[str, str] = {}
    for entry in written:
        if entry.op.path in parent and entry.op.group is not None:
            other = by_group.setdefault(entry.op.group, entry.op.path)
            parent[root(entry.op.path)] = root(other)
    components: dict[str, list[str]] = {}
    for path in sorted(chains):
        components.setdefault(root(path), []).append(path)
    return list(components.values())


def _decide(chain: Sequence[Written], current: Document | None, run: str) -> UndoOp | Untouched:
    """The undo of one document's writes in one journal, or why it is not undone."""
    first, last = chain[0], chain[-1]
    path = first.op.path

    def untouched(code: str, reason: str) -> Untouched:
        return Untouched(path=path, code=code, reason=reason)

    created = isinstance(first.op, CreateDocumentOp)
    if created and first.before is not None:
        return untouched(NOT_AS_JOURNALED, f"the journal records the document as existing before the "
                                           f"{run} created it; not undone")
    if not created:
        assert isinstance(first.op, FillFieldsOp)
        if first.before is None or first.before.update_time != first.op.update_time:
            return untouched(NOT_AS_JOURNALED, f"the journal's record of the document before the {run} "
                                               "is not the one its write was made over; not undone")
    before = None if created else first.before
    if current is None if before is None else current is not None and same(current.fields, before.fields):
        return untouched(ALREADY_AS_BEFORE, "already gone" if before is None else
                         f"already holds the values it had before the {run}")
    if any(w.outcome == IN_DOUBT for w in chain):
        return untouched(IN_DOUBT_CODE, f"the {run} stopped between sending this write and recording its "
                                        "outcome; the journal cannot prove the document holds the tool's "
                                        "write, so it is not undone")
    expected, problem = _expected(chain, {} if before is None else before.fields, run)
    if problem:
        return untouched(problem[0], problem[1])
    if current is None:
        return untouched(DELETED_SINCE, f"deleted since the {run} wrote it; there is nothing to restore")
    if current.update_time != last.update_time:
        return untouched(CHANGED_SINCE, f"changed since the {run} wrote it (update time "
                                        f"{_time(current.update_time)}, the {run}'s write left "
                                        f"{_time(last.update_time)})")
    if not same(current.fields, expected):
        return untouched(NOT_AS_JOURNALED, f"holds the update time of the {run}'s write but not the values "
                                           "the journal says it wrote; not undone")
    group = next((w.op.group for w in chain if w.op.group is not None), None)
    assert last.update_time is not None
    if created:
        return DeleteDocumentOp(path=path, update_time=last.update_time, fields=dict(current.fields),
                                group=group)
    assert before is not None
    return _clear(path, chain, before, current, last.update_time, group)


def _expected(chain: Sequence[Written], start: dict[str, Any],
              run: str) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The fields the document holds after the chain's writes, when each write was made over the
    run's own previous one and replaced what the journal says it replaced."""
    fields = dict(start)
    previous: Written | None = None
    for written in chain:
        op = written.op
        if previous is not None:
            if isinstance(op, CreateDocumentOp):
                return fields, (NOT_AS_JOURNALED, "the journal creates the document twice; not undone")
            if op.update_time != previous.update_time:
                return fields, (CHANGED_SINCE, f"another writer wrote it between two of the {run}'s writes "
                                               f"(a later write's precondition is not the {run}'s earlier "
                                               "update time); not undone")
        if isinstance(op, CreateDocumentOp):
            fields = dict(op.fields)
        else:
            for fill in op.fills:
                if not same(fields.get(fill.field, MISSING), fill.before):
                    return fields, (NOT_AS_JOURNALED, f"the journal's fill of {fill.field} replaced "
                                                      "another value than its record of the document "
                                                      "holds; not undone")
                fields[fill.field] = fill.value
            if op.transition:
                if not same(fields.get(op.transition.field, MISSING), op.transition.before):
                    return fields, (NOT_AS_JOURNALED, f"the journal moves {op.transition.field} from "
                                                      "another value than its record of the document "
                                                      "holds; not undone")
                fields[op.transition.field] = op.transition.to
        previous = written
    return fields, None


def _clear(path: str, chain: Sequence[Written], before: Document, current: Document,
           update_time: datetime, group: str | None) -> ClearFieldsOp | Untouched:
    filled: set[str] = set()
    moved: set[str] = set()
    for written in chain:
        assert isinstance(written.op, FillFieldsOp)
        filled.update(fill.field for fill in written.op.fills)
        if written.op.transition:
            moved.add(written.op.transition.field)
    moved -= filled  # a field the run filled first goes back to its empty value, whatever came after
    if len(moved) > 1:
        return Untouched(path=path, code=NOT_AS_JOURNALED, reason="the journal moves more than one status "
                                                                 "field of the document; not undone")
    clears = tuple(FieldClear(field=field, value=current.get(field), to=before.get(field))
                   for field in sorted(filled))
    status = None
    for field in moved:  # the value recorded before the run, which the first transition moved from
        status = StatusReturn(field=field, value=current.get(field), to=before.get(field))
    return ClearFieldsOp(path=path, update_time=update_time, clears=clears, status=status, group=group)


def _time(value: datetime | None) -> str:
    return format_timestamp(value) if value is not None else "none"


# -- after the writes: is each undone document as it was before the run? --------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackCheck:
    deleted: int
    restored: int
    skipped: tuple[OpResult, ...]  # refused at write time: changed while the rollback ran
    not_as_before: tuple[tuple[str, str], ...]  # (path, what differs): undone, yet not as before
    changed_after: tuple[str, ...]  # written again by another writer after the rollback's write
    left: tuple[Untouched, ...]

    @property
    def complete(self) -> bool:
        """Every write of the run is undone, or was already: nothing left, skipped or different."""
        return not self.left and not self.skipped and not self.not_as_before


def check_rollback(plan: RollbackPlan, read: Mapping[str, Document | None], results: Sequence[OpResult],
                   after: Mapping[str, Document | None]) -> RollbackCheck:
    """``read``: the documents as read when planning; ``after``: re-read after the writes."""
    not_as_before: list[tuple[str, str]] = []
    changed_after: list[str] = []
    for result in results:
        if not result.applied:
            continue
        op, now = result.op, after.get(result.op.path)
        if isinstance(op, DeleteDocumentOp):
            if now is not None:
                changed_after.append(op.path)  # created again after the delete
            continue
        assert isinstance(op, ClearFieldsOp)
        then = read.get(op.path)
        if now is None or (result.written_at is not None and now.update_time != result.written_at):
            changed_after.append(op.path)
        elif then is None or not same(now.fields, op.cleared(then.fields)):
            not_as_before.append((op.path, "does not hold its values from before the run"))
    applied = [r for r in results if r.applied]
    return RollbackCheck(
        deleted=sum(isinstance(r.op, DeleteDocumentOp) for r in applied),
        restored=sum(isinstance(r.op, ClearFieldsOp) for r in applied),
        skipped=tuple(r for r in results if not r.applied),
        not_as_before=tuple(not_as_before), changed_after=tuple(sorted(changed_after)), left=plan.left)


# -- the JSON forms: undo ops (journal lines) and the rollback report ------------------------------


def undo_to_data(op: UndoOp) -> dict[str, Any]:
    """An undo op as a rollback's journal records it (journal format 1.2)."""
    if isinstance(op, DeleteDocumentOp):
        return {"op": "delete_document", "path": op.path, "group": op.group,
                "precondition": {"update_time": encode(op.update_time)}, "fields": encode_fields(op.fields)}
    return {"op": "clear_fields", "path": op.path, "group": op.group,
            "precondition": {"update_time": encode(op.update_time)},
            "clears": [{"field": c.field, "value": encode(c.value), "to": _empty(c.to)} for c in op.clears],
            "status": None if op.status is None else {
                "field": op.status.field, "value": encode(op.status.value), "to": op.status.to}}


def _empty(value: Any) -> Any:
    return {"$missing": True} if value is MISSING else value


def rollback_data(plan: RollbackPlan, check: RollbackCheck | None = None) -> dict[str, Any]:
    """The rollback report (``reconcile-rollback``): the plan, and after the writes, the check."""
    past = plan.past
    return {
        **ROLLBACK.header(),
        "journal": {"path": past.journal, "sha256": past.sha256, "operation": past.operation,
                    "spec": {"name": past.spec_name, "sha256": past.spec_sha256},
                    "source": past.source, "started": encode(past.started), "ended": past.ended},
        "read_time": encode(plan.read_time),
        "summary": {"delete": plan.deletes, "restore": plan.restores, "left": len(plan.left),
                    "already_as_before": len(plan.already), "not_written": plan.not_written},
        "undo": [undo_to_data(op) for op in plan.ops],
        "left": [{"path": u.path, "code": u.code, "reason": u.reason} for u in plan.left],
        "already_as_before": [u.path for u in plan.already],
        "result": None if check is None else {
            "deleted": check.deleted, "restored": check.restored,
            "skipped": [{"path": r.op.path, "reason": r.reason} for r in check.skipped],
            "not_as_before": [{"path": path, "detail": detail} for path, detail in check.not_as_before],
            "changed_after": list(check.changed_after), "complete": check.complete},
    }


def describe_change(change: FieldClear | StatusReturn) -> tuple[str, str, str]:
    """(field, from, to) in words, for the renderers."""
    return change.field, show(change.value), show(change.to)
