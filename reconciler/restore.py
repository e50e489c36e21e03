"""Restore: a snapshot's documents created at a target where they are missing. Pure.

Owns the restore plan, (snapshot, target as read) → the documents to create, and those the target
holds already, identical or different; and the check after the writes, (plan, target before,
target after, outcomes) → what is now present, as the snapshot has it, and what another writer
changed meanwhile. Must not read files, stores or a clock, and must build no op but a create:
a restore never touches a document that exists, so an existing document is only counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from reconciler.errors import SelectionError
from reconciler.model import CreateDocumentOp, OpResult, State
from reconciler.values import MISSING, canonical, printable, show

RULE = "restore"  # the rule id of every op a restore writes
EXAMPLES = 5  # paths named per kind of existing document; the rest are counted


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    create: int = 0
    identical: int = 0
    different: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePlan:
    snapshot: str  # the snapshot file, as given
    snapshot_sha256: str  # of its bytes: names exactly which backup was restored
    snapshot_read_time: datetime | None
    target: str
    read_time: datetime | None  # the target's, when it was read for this plan
    collections: tuple[str, ...]  # restored, in name order
    creates: tuple[CreateDocumentOp, ...]  # by path
    identical: tuple[str, ...]  # present at the target with the snapshot's fields, by path
    different: tuple[str, ...]  # present at the target with other fields, by path

    def counts(self) -> dict[str, Counts]:
        """Per restored collection (every one, even with nothing in it)."""
        tally: dict[str, dict[str, int]] = {name: {} for name in self.collections}
        for kind, paths in (("create", [op.path for op in self.creates]), ("identical", self.identical),
                            ("different", self.different)):
            for path in paths:
                row = tally[path.partition("/")[0]]
                row[kind] = row.get(kind, 0) + 1
        return {name: Counts(**row) for name, row in tally.items()}

    @property
    def documents(self) -> int:
        return len(self.creates) + len(self.identical) + len(self.different)

    def line(self) -> str:
        return (f"Restore: {len(self.creates)} to create, {len(self.identical)} present and identical, "
                f"{len(self.different)} present and different; 0 to delete, 0 to overwrite.")


def select(snapshot: State, wanted: Sequence[str]) -> tuple[str, ...]:
    """The collections to restore: ``wanted`` (every one must be in the snapshot), or all of them."""
    held = sorted(snapshot.collections)
    if not wanted:
        return tuple(held)
    unknown = [name for name in dict.fromkeys(wanted) if name not in snapshot.collections]
    if unknown:
        holds = ", ".join(map(printable, held)) or "no collection"
        raise SelectionError(f"{printable(snapshot.source)}: the snapshot holds no collection "
                             f"{', '.join(map(printable, unknown))} (it holds {holds}); --collection "
                             "names a collection of the snapshot, exactly, case included")
    return tuple(sorted(set(wanted)))


def plan_restore(snapshot: State, target: State, collections: Iterable[str],
                 snapshot_sha256: str) -> RestorePlan:
    """Every document of ``collections`` in the snapshot: a create where the target has none at its
    path, else counted as identical (the same fields, exactly by type) or different."""
    creates: list[CreateDocumentOp] = []
    identical: list[str] = []
    different: list[str] = []
    names = tuple(sorted(set(collections)))
    for name in names:
        present = target.documents(name)
        for doc_id in sorted(snapshot.documents(name)):
            doc = snapshot.documents(name)[doc_id]
            there = present.get(doc_id)
            if there is None:
                creates.append(CreateDocumentOp(path=doc.path, fields=doc.fields, rules=(RULE,)))
            elif _same(there.fields, doc.fields):
                identical.append(doc.path)
            else:
                different.append(doc.path)
    return RestorePlan(snapshot=snapshot.source, snapshot_sha256=snapshot_sha256,
                       snapshot_read_time=snapshot.read_time, target=target.source,
                       read_time=target.read_time, collections=names, creates=tuple(creates),
                       identical=tuple(identical), different=tuple(different))


# -- the check after the writes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Mismatch:
    path: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreCheck:
    expected: int  # documents of the restored collections in the snapshot
    present: int  # of them, at the target after the restore
    missing: tuple[str, ...]  # of them, not at the target after the restore
    created: int  # by this restore
    as_snapshot: int  # created by this restore and holding exactly the snapshot's fields
    not_as_snapshot: tuple[Mismatch, ...]  # created by this restore and not holding them (a defect)
    present_before: int  # existed at the target when the restore read it
    unchanged: int  # of them, with the same fields and update time after the restore
    changed_by_others: tuple[str, ...]  # existing ones changed, or created ones rewritten since
    skipped: tuple[OpResult, ...]  # creates not written: the document exists now, or cannot be stored

    @property
    def complete(self) -> bool:
        """Every create written and holding the snapshot's values; every document present."""
        return not self.skipped and not self.missing and not self.not_as_snapshot


def check_restore(plan: RestorePlan, before: State, after: State,
                  outcomes: Sequence[OpResult]) -> RestoreCheck:
    """Compare the target re-read after the writes with the plan and with the read it was made on.
    A document this restore did not create can only have been changed by someone else: every
    write of a restore requires that its document does not exist."""
    written = {o.op.path: o for o in outcomes if o.applied and isinstance(o.op, CreateDocumentOp)}
    expected = [op.path for op in plan.creates] + list(plan.identical) + list(plan.different)
    missing = sorted(path for path in expected if after.find(path) is None)
    not_as_snapshot: list[Mismatch] = []
    others: list[str] = []
    as_snapshot = 0
    for path, outcome in written.items():
        now = after.find(path)
        if now is None:
            continue  # gone: deleted by another writer; counted as missing
        if outcome.written_at is not None and now.update_time != outcome.written_at:
            others.append(path)  # written again after this restore wrote it: not this restore's
        elif _same(now.fields, outcome.op.fields):
            as_snapshot += 1
        else:
            not_as_snapshot.append(Mismatch(path=path, detail=_first_difference(outcome.op.fields,
                                                                                now.fields)))
    existing = [*plan.identical, *plan.different]
    unchanged = 0
    for path in existing:
        old, now = before.find(path), after.find(path)
        if old is not None and now is not None and now.update_time == old.update_time \
                and _same(now.fields, old.fields):
            unchanged += 1
        elif now is not None:
            others.append(path)
    return RestoreCheck(expected=len(expected), present=len(expected) - len(missing), missing=tuple(missing),
                        created=len(written), as_snapshot=as_snapshot,
                        not_as_snapshot=tuple(not_as_snapshot), present_before=len(existing),
                        unchanged=unchanged, changed_by_others=tuple(sorted(others)),
                        skipped=tuple(o for o in outcomes if not o.applied))


def _same(left: dict, right: dict) -> bool:
    return canonical(left) == canonical(right)


def _first_difference(wanted: dict, found: dict) -> str:
    """The first field (by name) whose value differs, in words: what the snapshot has, what is there."""
    for name in sorted(set(wanted) | set(found)):
        old, new = wanted.get(name, MISSING), found.get(name, MISSING)
        if canonical(old) != canonical(new):
            return f"{printable(name)}: {show(old)} in the snapshot, {show(new)} at the target"
    return "the fields differ"

