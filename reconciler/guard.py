"""Apply derives; a plan file only proposes. Pure: (spec, proposed plan, fresh state) → what to write.

A saved plan is a reviewed artifact that travels through pull requests and CI; it can be wrong by
accident or on purpose. Before the first write, every source's apply passes the plan through
``admit``, which re-derives from the plan's spec and a fresh read what the spec allows now:

- an op the spec could never produce (a collection it does not write, a field it does not allow, a
  transition it does not name, a create that is not a new week's derived document, a link group
  that is not whole, a document written twice) refuses the whole plan: ``UnsafePlan``, nothing
  written;
- a group the spec derives now exactly as proposed is admitted, and what is written is the derived
  group (built from the fresh read), never the file's;
- a group that differs from what the spec derives now is skipped as stale when the data it depends
  on changed since the plan's read (its documents, or any document of its series, were written
  after the plan's read time, or no longer exist); when that data did not change, the difference
  can only come from the file, and the whole plan is refused.

So what apply writes is always a subset of what the review showed and of what the spec derives.
The stores' preconditions stay the second line of defence. Must not read files, a clock or a store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from reconciler.errors import UnsafePlan
from reconciler.kernel import (
    UNUSABLE_SERIES,
    Placed,
    classify_member,
    classify_response,
    group_series,
    key_part,
    new_week_id,
    reconcile,
    series_label,
)
from reconciler.model import (
    ACTION_BASE_WEEK,
    ACTION_HALF_LINK,
    ACTION_NEW_WEEK,
    ACTION_PAIR,
    CreateDocumentOp,
    Document,
    FillFieldsOp,
    Finding,
    Op,
    OpResult,
    Plan,
    Spec,
    State,
    group_key,
)
from reconciler.plan import op_to_data
from reconciler.values import is_timestamp, show

MAX_REASONS_SHOWN = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The groups to write (as the spec derives them now) and the proposed ops skipped as stale."""

    groups: tuple[tuple[Op, ...], ...]
    skipped: tuple[OpResult, ...]

    @property
    def ops(self) -> int:
        return sum(len(group) for group in self.groups)


def admit(spec: Spec, plan: Plan, state: State, derived: Sequence[Op] | None = None) -> Admission:
    """What of ``plan`` may be written to ``state`` (a fresh read). ``derived``: the spec's ops for
    ``state`` when the caller has them already (a plan made in this run); else computed here.
    Raises UnsafePlan when the plan holds an op the spec could never produce."""
    admission, problems = examine(spec, plan, state, derived)
    if problems:
        raise UnsafePlan(refusal(problems))
    return admission


def examine(spec: Spec, plan: Plan, state: State,
            derived: Sequence[Op] | None = None) -> tuple[Admission, list[str]]:
    """``admit`` without the raise: the admission, and every reason to refuse the whole plan (when
    there is any, the admission must not be written). A pipeline examines each series' share of a
    plan against that series' documents, and refuses the whole plan when any share has a reason."""
    # A group the spec derives now, exactly as proposed, is derivable; only the others are examined.
    findings = None
    if derived is None:
        # A selected plan is derived for its selection: a proposed write outside it is one the
        # spec does not derive here, and the data around it unchanged, the plan is refused.
        derived, findings = reconcile(spec, state, plan.selection)
    now = _groups(derived)
    proposed_groups = _groups(plan.ops)
    differing = {key: group for key, group in proposed_groups.items()
                 if key not in now or not _same_group(group, now[key])}
    problems = [problem for group in differing.values() for problem in never_derivable(spec, group)]
    problems = list(dict.fromkeys(problems + _written_twice(plan.ops) + _read_after(plan)))
    if problems:
        return Admission(groups=(), skipped=()), problems
    skipped: list[OpResult] = []
    series = _SeriesIndex(spec, state, findings)
    for key, proposed in differing.items():
        reason = _stale(proposed, state, plan.read_time, series)
        if not reason:
            current = now.get(key)
            problems.append(unchanged_difference(key.removeprefix("op:"), proposed, current))
            continue
        skipped.extend(OpResult(op=op, applied=False, reason=reason) for op in proposed)
    if problems:
        return Admission(groups=(), skipped=()), problems
    admitted = tuple(now[key] for key in proposed_groups if key not in differing)
    return Admission(groups=admitted, skipped=tuple(skipped)), []


def unchanged_difference(where: str, proposed: tuple[Op, ...], current: tuple[Op, ...] | None) -> str:
    """The reason to refuse a plan whose proposal differs from what the spec derives from data that
    did not change since the plan: only the file can have made the difference."""
    return (f"{where}: the plan proposes {_describe(proposed)}, but the spec derives "
            f"{_describe(current) if current else 'no write'} there from data that has not changed "
            "since the plan was made")


def refusal(problems: Sequence[str], more: int = 0) -> str:
    """The one sentence that refuses a whole plan; ``more``: reasons found beyond ``problems``."""
    shown = "; ".join(problems[:MAX_REASONS_SHOWN])
    hidden = len(problems) - len(problems[:MAX_REASONS_SHOWN]) + more
    beyond = f" (and {hidden} more)" if hidden else ""
    return (f"refusing the whole plan, nothing was written: it holds writes its spec could never make: "
            f"{shown}{beyond}. The plan file was edited or made by another tool; make a new one with "
            "`reconcile plan --out`")


# -- what the spec could never produce, whatever the data ------------------------------------------


def never_derivable(spec: Spec, group: tuple[Op, ...]) -> list[str]:
    """Why the ops of one group (a link, or a lone op) could not come from ``spec`` for any data."""
    problems = [f"{op.path}: {problem}" for op in group for problem in _op_problems(spec, op)]
    if problems:
        return problems
    return _group_problems(spec, group)


def _op_problems(spec: Spec, op: Op) -> Iterable[str]:
    collection, _, doc_id = op.path.partition("/")
    writable = {spec.series.collection} | ({spec.link.collection} if spec.link else set())
    if collection not in writable or not doc_id or "/" in doc_id:
        yield (f"writes to {collection!r}, a collection the spec never writes" if collection not in writable
               else "is not a collection/document path")
        return
    if isinstance(op, CreateDocumentOp):
        yield from _create_problems(spec, op, collection)
    else:
        yield from _fill_problems(spec, op, collection)


def _create_problems(spec: Spec, op: CreateDocumentOp, collection: str) -> Iterable[str]:
    rule, link = spec.series, spec.link
    if collection != rule.collection:
        yield f"creates a document in {collection!r}; the spec creates only new weeks in {rule.collection!r}"
        return
    pair = f"{link.id}.{ACTION_PAIR}" if link else None
    new_week = f"{rule.id}.{ACTION_NEW_WEEK}"
    if set(op.rules) - {new_week, pair} or new_week not in op.rules:
        yield f"a create with rules {list(op.rules)}; the spec creates a document only as {new_week}"
    if op.group not in (None, op.path) or (op.group is not None) != (pair in op.rules):
        yield "a create whose link group is not its own week"
    week = op.fields.get(rule.week_field)
    key = tuple(op.fields.get(name) for name in rule.key)
    if type(week) is not int or not 1 <= week <= rule.max_length or None in map(key_part, key):
        yield "a create that is not a week of a series (no integer week or no series key)"
    elif op.path.partition("/")[2] != new_week_id(spec, key, week):
        yield f"a create at an ID that is not the one the spec gives week {week} of its series"
    if not is_timestamp(op.fields.get(spec.cadence.field)):
        yield f"a create without a timestamp {spec.cadence.field}"
    linked = {member for member, _ in link.copy} if link and op.group is not None else set()
    present = [name for name in spec.new_week.omit if name in op.fields and name not in linked]
    if present:
        yield f"a create holding {present[0]!r}, which the spec omits from new weeks"


def _fill_problems(spec: Spec, op: FillFieldsOp, collection: str) -> Iterable[str]:
    rule, link = spec.series, spec.link
    if op.update_time is None:
        yield "a fill without the update time it was planned at (its precondition)"
    for fill in op.fills:
        if not spec.fills.allows(collection, fill.field):
            yield f"fills {collection}.{fill.field}, which is not an allowed fill of the spec"
            continue
        problem = _fill_rule_problem(spec, op, collection, fill.field, fill.value, fill.rule)
        if problem:
            yield problem
    transition = op.transition
    if transition is not None:
        status = link.status if link else None
        named = (status is not None and collection == rule.collection and transition.field == status.field
                 and transition.to == status.to and transition.before in status.from_values
                 and transition.rule == f"{link.id}.{ACTION_PAIR}")
        if not named:
            yield (f"moves {transition.field} from {show(transition.before)} to {show(transition.to)}, a "
                   "transition the spec does not name")
        elif op.group != op.path:
            yield "a status transition outside its own link"


def _fill_rule_problem(spec: Spec, op: FillFieldsOp, collection: str, field: str, value: Any,
                       rule_id: str) -> str:
    """The rule a fill names must exist in the spec and make exactly this kind of fill."""
    series, link = spec.series, spec.link
    if rule_id == f"{series.id}.{ACTION_BASE_WEEK}":
        ok = series.fill_base_week and collection == series.collection and field == series.week_field \
            and type(value) is int and value == 1
        return "" if ok else f"a {rule_id} fill of {field} with {show(value)}; the rule fills week 1 only"
    if link is not None and rule_id == f"{link.id}.{ACTION_HALF_LINK}":
        ok = collection == link.collection and field == link.response_ref and isinstance(value, str)
        return "" if ok else f"a {rule_id} fill of {field}; the rule fills {link.response_ref} only"
    if link is not None and rule_id == f"{link.id}.{ACTION_PAIR}":
        if op.group is None:
            return f"a {rule_id} fill of {field} outside a link group"
        if collection == link.collection:
            ok = field == link.response_ref and value == op.group.partition("/")[2]
            return "" if ok else f"a link fill of {field} that does not name its group's assignment"
        allowed = {link.member_ref, *(member for member, _ in link.copy)}
        if link.status is not None:
            allowed.add(link.status.field)
            if field == link.status.field and value != link.status.to:
                return f"a link fill of {field} with {show(value)}; the spec sets {show(link.status.to)}"
        if op.path != op.group:
            return f"a link fill on {op.path}, which is not its group's assignment"
        return "" if field in allowed else f"a link fill of {field}, which a link never sets"
    return f"a fill under rule {rule_id!r}, which the spec does not have"


def _group_problems(spec: Spec, group: tuple[Op, ...]) -> list[str]:
    """A link group is whole: its assignment, which names its response, and at most that response."""
    name = group[0].group
    if name is None or spec.link is None:
        return [] if len(group) == 1 else [f"{group[0].path}: several ops in one write without a link"]
    link = spec.link
    members = [op for op in group if op.path == name]
    responses = [op for op in group if op.path.partition("/")[0] == link.collection]
    if len(members) != 1 or len(members) + len(responses) != len(group) or len(responses) > 1:
        return [f"{name}: a link group that is not one assignment and at most one response"]
    named = _written(members[0], link.member_ref)
    if named is None:
        return [f"{name}: a link group whose assignment is not given a {link.member_ref}"]
    if responses and responses[0].path.partition("/")[2] != named:
        return [f"{name}: a link group whose response is not the one its assignment names"]
    return []


def _written(op: Op, field: str) -> Any:
    if isinstance(op, CreateDocumentOp):
        return op.fields.get(field)
    return next((fill.value for fill in op.fills if fill.field == field), None)


def _written_twice(ops: Sequence[Op]) -> list[str]:
    seen: set[str] = set()
    twice = []
    for op in ops:
        if op.path in seen:
            twice.append(f"{op.path}: written by two ops; a run writes each document once")
        seen.add(op.path)
    return twice


# -- what changed since the plan -------------------------------------------------------------------


def _groups(ops: Iterable[Op]) -> dict[str, tuple[Op, ...]]:
    units: dict[str, list[Op]] = {}
    for op in ops:
        units.setdefault(group_key(op), []).append(op)
    return {key: tuple(sorted(group, key=lambda op: op.path)) for key, group in units.items()}


def _same_group(left: tuple[Op, ...], right: tuple[Op, ...]) -> bool:
    """The same writes, as the plan file would spell them (a plan made in this run: the same ops)."""
    return len(left) == len(right) and all(a is b or _spelling(a) == _spelling(b)
                                           for a, b in zip(left, right, strict=True))


def _spelling(op: Op) -> bytes:
    """An op's exact plan-file form: equal bytes mean equal writes (1, 1.0 and true differ)."""
    return orjson.dumps(op_to_data(op), option=orjson.OPT_SORT_KEYS)


def _read_after(plan: Plan) -> list[str]:
    """A plan cannot have read a document version written after its own read time."""
    if plan.read_time is None:
        return []
    return [f"{op.path}: its precondition names an update time after the plan's own read time"
            for op in plan.ops if isinstance(op, FillFieldsOp)
            and op.update_time is not None and op.update_time > plan.read_time]


class _SeriesIndex:
    """The fresh documents of each series, and the series now unusable, built on first use (only a
    group that differs needs them)."""

    def __init__(self, spec: Spec, state: State, findings: Sequence[Any] | None) -> None:
        self.spec, self.state, self._findings = spec, state, findings
        self._index: dict[tuple[Any, ...], list] | None = None
        self._unusable: dict[str, str] | None = None

    def unusable(self, key: tuple[Any, ...]) -> str:
        """The finding code that makes this series unusable now ('' when it is usable)."""
        if self._unusable is None:
            findings = self._findings if self._findings is not None else reconcile(self.spec, self.state)[1]
            self._unusable = {f.series: f.code for f in findings if f.code in UNUSABLE_SERIES}
        return self._unusable.get(series_label(self.spec, key), "")

    def documents(self, key: tuple[Any, ...]) -> list | None:
        if self._index is None:
            series, _ = group_series(self.spec, self.state)
            self._index = {tuple(map(key_part, s.key)): [m.doc for m in s.members] + list(s.responses)
                           for s in series}
        return self._index.get(tuple(map(key_part, key)))

    def one_series(self, group: tuple[Op, ...]) -> bool:
        """Whether the documents a group writes, each as read now, are members or responses of one
        series (a create: of the series its fields name). Asked of a group whose documents have not
        changed since the plan: one that is no member or response now was none when the plan was
        read, and a link across two series is one the spec never makes."""
        canons = set()
        for op in group:
            if isinstance(op, CreateDocumentOp):
                canons.add(tuple(key_part(op.fields.get(name)) for name in self.spec.series.key))
                continue
            doc = self.state.find(op.path)
            placed = None if doc is None else self._classify(doc)
            if type(placed) is not Placed:
                return False
            canons.add(placed.canon)
        return len(canons) <= 1

    def _classify(self, doc: Document) -> Placed | Finding | None:
        if doc.collection == self.spec.series.collection:
            return classify_member(self.spec, doc)
        return classify_response(self.spec, doc) if self.spec.link is not None else None

    def key_of(self, op: Op) -> tuple[Any, ...] | None:
        """The series key of the document an op writes: from a create's fields, or the fresh doc."""
        spec = self.spec
        if isinstance(op, CreateDocumentOp):
            fields = op.fields
        else:
            doc = self.state.find(op.path)
            if doc is None:
                return None
            fields = doc.fields
        if op.path.partition("/")[0] == spec.series.collection:
            return tuple(fields.get(name) for name in spec.series.key)
        if spec.link is not None:
            return tuple(fields.get(name) for name, _ in spec.link.key)
        return None


def _stale(group: tuple[Op, ...], state: State, read_time: datetime | None, series: _SeriesIndex) -> str:
    """Why a proposed group no longer matches the data, when the data changed since the plan ('' when
    nothing it depends on changed, so that a difference can only come from the file)."""
    for op in group:
        current = state.find(op.path)
        if isinstance(op, CreateDocumentOp):
            if current is not None:
                return "the document already exists"
        elif current is None:
            return "the document no longer exists"
        elif current.update_time != op.update_time:
            return "the document changed since the plan was made"
    if read_time is None:
        return ""  # nothing tells a change since the plan from an edit of the file: refused
    if not series.one_series(group):
        return ""  # its documents are as the plan read them: only the file can have made the group
    for op in group:
        key = series.key_of(op)
        if key is None or None in map(key_part, key):
            continue
        documents = series.documents(key)
        if documents is None:
            return "its series is no longer in the data"
        unusable = series.unusable(key)
        if unusable:
            # The plan proposed writes for it, so it was usable when read: the data changed.
            return f"its series is no longer usable ({unusable}); it changed since the plan was made"
        if any(doc.update_time is not None and doc.update_time > read_time for doc in documents):
            return "its series changed since the plan was made"
    return ""


def _describe(group: tuple[Op, ...] | None) -> str:
    if not group:
        return "no write"
    words = []
    for op in group:
        if isinstance(op, CreateDocumentOp):
            words.append(f"to create {op.path}")
        else:
            changes = [f"{fill.field}: {show(fill.before)} -> {show(fill.value)}" for fill in op.fills]
            if op.transition:
                changes.append(f"{op.transition.field}: {show(op.transition.before)} -> "
                               f"{show(op.transition.to)}")
            words.append(f"to fill {op.path} ({', '.join(changes)})")
    return " and ".join(words)
