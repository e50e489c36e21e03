"""Validation after apply (the seed plan's phase 3): compare before and after, prove nothing was lost.

Pure: takes the state read before the writes, the state re-read after, what was applied, and the
re-plan of the after state. A document this run wrote may differ from before only by its own fills
and status transition; any other difference on it is a loss and fails the run. Differences on
documents this run did not write, documents written again after this run's commit, and documents
that are gone (this tool never deletes) are another writer's: reported as drift by another writer,
never counted against the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import CreateDocumentOp, FillFieldsOp, Op, OpResult, Plan, Spec, State
from reconciler.values import MISSING, canonical, encode_fields, is_empty


@dataclass(frozen=True, slots=True, kw_only=True)
class Loss:
    path: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    responses_before: int
    responses_kept: int  # the others were deleted by another writer: this run deletes nothing
    key_values_lost: tuple[Loss, ...]  # scores and dates: copied, cadence and ordering fields
    other_values_lost: tuple[Loss, ...]
    links_made: int
    links_broken: tuple[str, ...]  # links this run made that do not hold both ways, by this run's writes
    created: int
    updated: int
    skipped: tuple[OpResult, ...]
    changed_by_others: tuple[str, ...]
    gone: frozenset[str]  # documents read before and missing after
    pending: Plan

    @property
    def nothing_lost(self) -> bool:
        """Nothing this run wrote lost a value. Deletions and later writes are another writer's."""
        return not self.key_values_lost and not self.other_values_lost

    @property
    def deleted_by_others(self) -> tuple[str, ...]:
        return tuple(path for path in self.changed_by_others if path in self.gone)

    @property
    def converged(self) -> bool:
        return not self.pending.ops and self.nothing_lost and not self.links_broken


def verify(spec: Spec, before: State, after: State, outcomes: list[OpResult], replan: Plan) -> Verification:
    written = {o.op.path: o.op for o in outcomes if o.applied}
    written_at = {o.op.path: o.written_at for o in outcomes if o.applied}
    key_fields = _key_fields(spec)
    key_lost: list[Loss] = []
    other_lost: list[Loss] = []
    others: list[str] = []
    for name in spec.collections:
        after_docs = after.documents(name)
        for doc_id, old in before.documents(name).items():
            new = after_docs.get(doc_id)
            op = written.get(old.path)
            if op is None:
                if new is None or new.update_time != old.update_time or _differs(old.fields, new.fields):
                    others.append(old.path)
                continue
            if new is None:
                others.append(old.path)  # deleted after this run wrote it: not by this run
                continue
            if written_at.get(old.path) is not None and new.update_time != written_at[old.path]:
                others.append(old.path)  # written again after this run: that change is not ours
                continue
            for field, value in old.fields.items():
                if is_empty(value) or _allowed_change(op, field, value, new.get(field)):
                    continue
                if canonical(new.get(field)) != canonical(value):
                    loss = Loss(path=old.path, detail=f"{field} changed: {_diff(value, new.get(field))}")
                    (key_lost if field in key_fields else other_lost).append(loss)

    for outcome in outcomes:  # documents this run created, then deleted or rewritten by another writer
        if outcome.applied and isinstance(outcome.op, CreateDocumentOp):
            new = after.find(outcome.op.path)
            if new is None or (outcome.written_at is not None and new.update_time != outcome.written_at):
                others.append(outcome.op.path)

    responses_before = responses_kept = 0
    if spec.link is not None:
        before_responses = before.documents(spec.link.collection)
        after_responses = after.documents(spec.link.collection)
        responses_before = len(before_responses)
        responses_kept = sum(1 for doc_id in before_responses if doc_id in after_responses)

    links_made, broken = _links(spec, after, outcomes, set(others))
    applied = [o for o in outcomes if o.applied]
    return Verification(
        responses_before=responses_before, responses_kept=responses_kept,
        key_values_lost=tuple(key_lost), other_values_lost=tuple(other_lost),
        links_made=links_made, links_broken=tuple(broken),
        created=sum(isinstance(o.op, CreateDocumentOp) for o in applied),
        updated=sum(isinstance(o.op, FillFieldsOp) for o in applied),
        skipped=tuple(o for o in outcomes if not o.applied),
        changed_by_others=tuple(sorted(others)), pending=replan,
        gone=frozenset([*(doc.path for name in spec.collections for doc in before.documents(name).values()
                          if doc.id not in after.documents(name)),
                        *(o.op.path for o in applied if isinstance(o.op, CreateDocumentOp)
                          and after.find(o.op.path) is None)]))


def _key_fields(spec: Spec) -> set[str]:
    """Scores and dates: the fields the seed plan promises to keep above all."""
    names = {spec.cadence.field}
    if spec.link is not None:
        names.add(spec.link.order_by)
        for member_field, response_field in spec.link.copy:
            names.update((member_field, response_field))
    return names


def _allowed_change(op: Op, field: str, old, new) -> bool:
    """The one non-empty value a run may change: the status it moved along with a link."""
    return (isinstance(op, FillFieldsOp) and op.transition is not None
            and op.transition.field == field and canonical(old) == canonical(op.transition.before)
            and canonical(new) == canonical(op.transition.to))


def _differs(old: dict, new: dict) -> bool:
    return canonical(old) != canonical(new)


def _diff(old, new) -> str:
    if new is MISSING:
        return "removed"
    from deepdiff import DeepDiff  # only when a value was lost: not on every run's start-up

    delta = DeepDiff(encode_fields({"v": old}), encode_fields({"v": new}), verbose_level=2)
    return delta.pretty().replace("root['v']", "value") or f"{canonical(old)} -> {canonical(new)}"


def _links(spec: Spec, after: State, outcomes: list[OpResult], others: set[str]) -> tuple[int, list[str]]:
    """Links this run made (groups applied) and those of them that do not hold both ways, unless
    another writer changed or deleted one of their documents since (that is its drift, not ours)."""
    link = spec.link
    if link is None:
        return 0, []
    groups: dict[str, list[Op]] = {}
    for outcome in outcomes:
        if outcome.applied and outcome.op.group is not None:
            groups.setdefault(outcome.op.group, []).append(outcome.op)
    broken = []
    for member_path, ops in groups.items():
        if any(op.path in others for op in ops):
            continue
        member = after.find(member_path)
        response_id = member.get(link.member_ref) if member else MISSING
        response = after.documents(link.collection).get(response_id) if isinstance(response_id, str) else None
        if member is None or response is None or response.get(link.response_ref) != member.id:
            broken.append(member_path)
    return len(groups), sorted(broken)
