"""Rules 1-8 of the design: group documents into series, then one pure kernel per series.

``group_series`` reads the state once and hands each series its own documents; ``reconcile_series``
turns one series into ops and findings and looks at nothing else (but the set of taken document IDs),
so series can be reconciled in any order, or spread over workers. No I/O, no clock.

Every collection and field name comes from the spec: this module knows rule kinds, not an app.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from reconciler.model import (
    ACTION_BASE_WEEK,
    ACTION_HALF_LINK,
    ACTION_NEW_WEEK,
    ACTION_PAIR,
    CadenceRule,
    CreateDocumentOp,
    Document,
    FieldFill,
    FillFieldsOp,
    Finding,
    Op,
    Spec,
    State,
    StatusTransition,
)
from reconciler.selection import Selection
from reconciler.values import MISSING, canonical, is_empty, is_int, is_timestamp, show

# -- grouping ----------------------------------------------------------------------------------------


class Member(NamedTuple):
    """A member of a series and its week. A named tuple: one is made per document."""

    doc: Document
    week: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesInput:
    """One series' documents: its members (with their weeks) and the responses keyed to it."""

    key: tuple[Any, ...]
    label: str
    members: tuple[Member, ...]
    responses: tuple[Document, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    ops: tuple[Op, ...]
    findings: tuple[Finding, ...]


def key_part(value: Any) -> tuple[bool, Any] | None:
    """A series key part is a non-empty string or an integer. Returns a hashable, type-exact form
    (so 7 and "7" are different series), or None when the value cannot be a key part."""
    kind = type(value)
    if kind is str:
        return (False, value) if value else None
    if kind is int:
        return (True, value)
    return None


def member_week(spec: Spec, doc: Document) -> int | None | str:
    """Rule 1: the member's week; None when the document is not recurring; "invalid" when it says it
    is recurring but its week field holds something that is not an integer."""
    rule = spec.series
    week = doc.fields.get(rule.week_field, MISSING)
    if type(week) is int:
        return week
    if rule.recurring_flag is not None and doc.fields.get(rule.recurring_flag) is True:
        return 1 if is_empty(week) else "invalid"
    return None


def series_label(spec: Spec, key: Iterable[Any]) -> str:
    return " ".join(f"{name}={_plain(value)}" for name, value in zip(spec.series.key, key, strict=True))


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else show(value)


# What one document is to the plan: decided from that document alone, so that it can be done on
# any worker before the documents of a series meet (``group_series`` does it on one machine).


class Placed(NamedTuple):
    """A document placed in a series: its type-exact key (``canon``), its key as read, its week
    (a member's, from ``member_week``; a response's, from its own week field). A named tuple: one
    is made per document, and it is the cheapest immutable record to make."""

    canon: tuple[Any, ...]
    key: tuple[Any, ...]
    week: int
    doc: Document


def classify_member(spec: Spec, doc: Document) -> Placed | Finding | None:
    """A document of the series collection: a member of a series, a finding (it says it is
    recurring but cannot be placed), or None (not recurring: not the plan's business)."""
    rule = spec.series
    fields = doc.fields
    week = fields.get(rule.week_field, MISSING)
    if type(week) is not int:  # the common case inline; member_week() says the rest
        week = member_week(spec, doc)
        if week is None:
            return None
    key = tuple([fields.get(name, MISSING) for name in rule.key])
    if week == "invalid":
        return Finding(code="assignment.week_invalid", path=doc.path, series="",
                       message=f"is recurring but {rule.week_field} is {show(doc.get(rule.week_field))}, "
                               "not an integer week; left untouched")
    canon = tuple([key_part(part) for part in key])
    if None in canon:
        return Finding(code="assignment.key_invalid", path=doc.path, series="",
                       message=f"is recurring but its series key ({_key_text(rule.key, key)}) is not "
                               "made of non-empty strings or integers; left untouched")
    return Placed(canon, key, week, doc)


def classify_response(spec: Spec, doc: Document) -> Placed | Finding:
    """A document of the link's collection: placed by its series key and week, or a finding. Whether
    its series exists is known only when the series' documents meet: see ``orphan_response``."""
    link = spec.link
    assert link is not None
    fields = doc.fields
    week = fields.get(link.week_field)
    if type(week) is not int:
        return Finding(code="response.week_invalid", path=doc.path, series="",
                       message=f"has no integer {link.week_field} "
                               f"({show(doc.get(link.week_field))}); cannot be placed, left untouched")
    key = tuple([fields.get(name, MISSING) for name, _ in link.key])
    canon = tuple([key_part(part) for part in key])
    if None in canon:
        return Finding(code="response.key_invalid", path=doc.path, series="",
                       message=f"its series key ({_key_text([name for name, _ in link.key], key)}) is "
                               "not made of non-empty strings or integers; left untouched")
    return Placed(canon, key, week, doc)


def orphan_response(spec: Spec, placed: Placed) -> Finding:
    """A placed response whose key no recurring series has."""
    return Finding(code="response.series_missing", path=placed.doc.path,
                   series=series_label(spec, placed.key),
                   message="no recurring series has this key; left untouched")


def group_series(spec: Spec, state: State) -> tuple[list[SeriesInput], list[Finding]]:
    """Read each collection once and split it by series key. Returns the series and the findings
    about documents that belong to no series. Order inside a series is not meaningful."""
    # Documents are grouped by their key as read. That is the grouping by type-exact key
    # (``key_part``) as long as every part is a non-empty string or an integer, which is checked
    # here for the common case (a week, a key of strings or integers) and left to
    # ``classify_member`` and ``classify_response`` for every other document: 7 and "7" are
    # different dictionary keys, and True or 7.0, equal to an integer key, never get this far.
    findings: list[Finding] = []
    members: dict[tuple[Any, ...], list[Member]] = {}
    rule = spec.series
    week_field, key_names = rule.week_field, rule.key
    for doc in state.documents(rule.collection).values():
        fields = doc.fields
        week = fields.get(week_field)
        if type(week) is int:
            key = tuple([fields.get(name, MISSING) for name in key_names])
            if _plain_key(key):
                found = members.get(key)
                if found is None:
                    members[key] = [Member(doc, week)]
                else:
                    found.append(Member(doc, week))
                continue
        placed = classify_member(spec, doc)
        if placed is None:
            continue
        if isinstance(placed, Finding):
            findings.append(placed)
            continue
        found = members.get(placed.key)
        if found is None:
            members[placed.key] = [Member(doc, placed.week)]
        else:
            found.append(Member(doc, placed.week))

    responses: dict[tuple[Any, ...], list[Document]] = {}
    if spec.link is not None:
        link_week = spec.link.week_field
        link_names = [name for name, _ in spec.link.key]
        for doc in state.documents(spec.link.collection).values():
            fields = doc.fields
            if type(fields.get(link_week)) is int:
                key = tuple([fields.get(name, MISSING) for name in link_names])
                if _plain_key(key) and key in members:
                    answers = responses.get(key)
                    if answers is None:
                        responses[key] = [doc]
                    else:
                        answers.append(doc)
                    continue
                # any other key (none a series has, or not plain): classified whole below
            answer = classify_response(spec, doc)
            if isinstance(answer, Finding):
                findings.append(answer)
            elif answer.key not in members:
                findings.append(orphan_response(spec, answer))
            else:
                responses.setdefault(answer.key, []).append(doc)

    ordered = sorted((tuple([key_part(part) for part in key]), key) for key in members)
    series = [
        SeriesInput(key=key, label=series_label(spec, key), members=tuple(members[key]),
                    responses=tuple(responses.get(key, ())))
        for _, key in ordered
    ]
    return series, findings


def _plain_key(key: tuple[Any, ...]) -> bool:
    """Every part a non-empty string or an integer (not a bool): ``key_part`` accepts it as is."""
    for part in key:
        kind = type(part)
        if not ((kind is str and part) or kind is int):
            return False
    return True


def _key_text(names: Iterable[str], key: Iterable[Any]) -> str:
    return ", ".join(f"{name}={show(value)}" for name, value in zip(names, key, strict=True))


def new_week_id(spec: Spec, key: Iterable[Any], week: int) -> str:
    """The deterministic ID of a series' week: a re-run or a concurrent run computes the same one,
    so the create precondition ("must not exist") makes a duplicate impossible."""
    return f"{series_stem(spec, key)}-w{week:03d}"


def series_stem(spec: Spec, key: Iterable[Any]) -> str:
    """What every new week ID of a series starts with: a hash of its collection and type-exact key."""
    material = json.dumps([spec.series.collection, [[name, canonical(value)] for name, value in
                                                     zip(spec.series.key, key, strict=True)]],
                          separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()[:20]


_WEEK_ID = re.compile(r"([0-9a-f]{20})-w[0-9]{3,}")


def stem_of_id(doc_id: str) -> str | None:
    """The stem of a document ID that has the form of a new week's ID (None for any other ID): such
    a document takes the ID that week of the series with that stem would be created at."""
    match = _WEEK_ID.fullmatch(doc_id)
    return match[1] if match else None


# -- what a plan needs to read ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    """The fields a plan reads, per collection. A document that may be a base is needed whole (its
    fields are copied into new weeks); every other document only for these fields. A collection
    absent here is needed whole; an empty set means its documents are only counted."""

    fields: dict[str, frozenset[str]]
    week_field: str
    recurring_flag: str | None
    series_collection: str

    def whole(self, collection: str, fields: dict[str, Any]) -> bool:
        if collection != self.series_collection:
            return False
        week = fields.get(self.week_field)
        if type(week) is int:
            return week == 1
        return self.recurring_flag is not None and fields.get(self.recurring_flag) is True

    def keep(self, collection: str, fields: dict[str, Any]) -> frozenset[str] | None:
        """The names of the fields a plan needs of this document, or None for all of them. Works
        on a document's values or on their JSON form alike (only plain values are looked at)."""
        needed = self.fields.get(collection)
        return None if needed is None or self.whole(collection, fields) else needed


def projection(spec: Spec) -> Projection:
    series, cadence, link = spec.series, spec.cadence, spec.link
    fills = dict(spec.fills.fields)
    members = {*series.key, series.week_field, cadence.field, *fills.get(series.collection, ())}
    members |= {name for name in (series.recurring_flag, series.length_field) if name}
    needed: dict[str, frozenset[str]] = {name: frozenset() for name in spec.reference}
    if link is not None:
        members |= {link.member_ref, *(member for member, _ in link.copy)}
        if link.status is not None:
            members.add(link.status.field)
        needed[link.collection] = frozenset({
            *(name for name, _ in link.key), link.week_field, link.order_by, link.response_ref,
            *(source for _, source in link.copy), *fills.get(link.collection, ())})
    needed[series.collection] = frozenset(members)
    return Projection(fields=needed, week_field=series.week_field, recurring_flag=series.recurring_flag,
                      series_collection=series.collection)


def projection_union(specs: Sequence[Spec]) -> Projection | None:
    """One read that serves several specs (a spec change compared on one read): the fields any of
    them reads; None (whole documents) when they disagree on what makes a document a possible base."""
    projections = [projection(spec) for spec in specs]
    first = projections[0]
    if any((p.week_field, p.recurring_flag, p.series_collection)
           != (first.week_field, first.recurring_flag, first.series_collection) for p in projections):
        return None
    fields: dict[str, frozenset[str]] = {}
    for collection in {name for spec in specs for name in spec.collections}:
        needed = [p.fields.get(collection) for p, spec in zip(projections, specs, strict=True)
                  if collection in spec.collections]
        if None not in needed:  # a spec that reads the collection whole makes the union whole
            fields[collection] = frozenset().union(*(names for names in needed if names is not None))
    return Projection(fields=fields, week_field=first.week_field, recurring_flag=first.recurring_flag,
                      series_collection=first.series_collection)


# Findings that leave a whole series untouched: the series cannot be planned at all.
UNUSABLE_SERIES = frozenset({"series.base_missing", "series.base_ambiguous", "series.base_due_invalid",
                             "series.length_over_limit", "series.dates_out_of_range"})


# -- the per-series kernel ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """The changes one document gets in this run, merged so that the run writes it once."""

    spec: Spec
    path: str
    existing: Document | None  # None: the document is created
    fields: dict[str, Any] = field(default_factory=dict)  # for a create: every field
    fills: list[FieldFill] = field(default_factory=list)
    transition: StatusTransition | None = None
    rules: set[str] = field(default_factory=set)
    group: str | None = None
    series: str = ""

    def current(self, name: str) -> Any:
        if self.existing is None:
            return self.fields.get(name, MISSING)
        for fill in self.fills:
            if fill.field == name:
                return fill.value
        if self.transition and self.transition.field == name:
            return self.transition.to
        return self.existing.get(name)

    def fill(self, name: str, value: Any, rule: str) -> None:
        self.rules.add(rule)
        if self.existing is None:
            self.fields[name] = value
            return
        collection = self.path.partition("/")[0]
        if not self.spec.fills.allows(collection, name):  # guarded by spec validation
            raise AssertionError(f"spec does not allow filling {collection}.{name}")
        self.fills.append(FieldFill(field=name, value=value, rule=rule, before=self.existing.get(name)))

    def advance(self, name: str, before: str, to: str, rule: str) -> None:
        self.rules.add(rule)
        if self.existing is None:
            self.fields[name] = to
        else:
            self.transition = StatusTransition(field=name, before=before, to=to, rule=rule)

    def op(self) -> Op | None:
        if self.existing is None:
            return CreateDocumentOp(path=self.path, fields=self.fields, rules=tuple(sorted(self.rules)),
                                    group=self.group, series=self.series)
        if not self.fills:
            return None
        return FillFieldsOp(path=self.path, update_time=self.existing.update_time,
                            fills=tuple(sorted(self.fills, key=lambda f: f.field)),
                            transition=self.transition, group=self.group, series=self.series)


def reconcile_series(spec: Spec, series: SeriesInput, taken_ids: Container[str]) -> Outcome:
    """Rules 2-7 for one series. ``taken_ids``: IDs already used in the series collection."""
    rule, cadence = spec.series, spec.cadence
    findings: list[Finding] = []
    label = series.label

    def report(code: str, path: str, message: str) -> None:
        findings.append(Finding(code=code, path=path, series=label, message=message))

    bases = [doc for doc, week in series.members if week == 1]
    unusable = _unusable_base(spec, series, bases)
    if unusable is None:
        base = bases[0]
        length = _length(spec, base, report)
        start: datetime = base.fields[cadence.field]
        unplannable = _unplannable(spec, base, start, length)
        if unplannable is not None:
            unusable = (unplannable[0], base.path, unplannable[1])
    if unusable is not None:
        code, path, message = unusable
        report(code, path, message)
        for response in series.responses:
            report("response.series_unusable", response.path,
                   f"its series is left untouched ({code}); not linked")
        return Outcome((), tuple(findings))

    # One pass over the members: each week's one member, or its several (a duplicate week).
    single: dict[int, Document] = {}
    several: dict[int, list[Document]] = {}
    for doc, week in series.members:
        if 1 <= week <= length:
            if week in single:
                several.setdefault(week, [single[week]]).append(doc)
            else:
                single[week] = doc
        else:
            report("assignment.week_out_of_range", doc.path,
                   f"week {week} is outside 1..{length}; left untouched")
    due_field = cadence.field
    due = _due_dates(cadence, start, length)
    for week, doc in single.items():
        value = doc.fields.get(due_field, MISSING)
        if type(value) is not datetime or value != due[week]:  # _check_due says which finding
            _check_due(spec, doc, week, due[week], report)
    for week, docs in several.items():
        del single[week]
        for doc in docs[1:]:  # the first was checked above
            _check_due(spec, doc, week, due[week], report)
        docs.sort(key=lambda d: d.id)
        report("series.week_duplicate", docs[0].path,
               f"week {week} has {len(docs)} members ({', '.join(d.path for d in docs)}); "
               "no links are made into it")

    drafts: dict[str, _Draft] = {}
    if rule.fill_base_week and is_empty(base.get(rule.week_field)):
        drafts[base.path] = _Draft(spec, base.path, base, series=label)
        drafts[base.path].fill(rule.week_field, 1, f"{rule.id}.{ACTION_BASE_WEEK}")

    # A week's target: its one member (a draft is made only if it changes), a new week's draft,
    # or None when the week has no single target.
    targets: dict[int, Document | _Draft | None] = dict.fromkeys(several)
    targets.update(single)
    if len(targets) < length:
        stem = series_stem(spec, series.key)  # the same for every week of the series: made once
        template = _new_week_template(spec, base)
        new_week = {f"{rule.id}.{ACTION_NEW_WEEK}"}
        for week in range(1, length + 1):
            if week in targets:
                continue
            doc_id = f"{stem}-w{week:03d}"  # new_week_id(spec, series.key, week)
            path = f"{rule.collection}/{doc_id}"
            if doc_id in taken_ids:
                report("assignment.id_taken", path,
                       f"week {week} is missing but its ID is used by a document that is not this "
                       "week's member; not created")
                targets[week] = None
                continue
            fields = _new_week_fields(spec, template, week, due[week])
            targets[week] = drafts[path] = _Draft(spec, path, None, fields=fields, series=label,
                                                  rules=set(new_week))

    if spec.link is not None:
        _Links(spec, drafts, report, label).series(series, length, targets)

    ops = tuple(op for op in (d.op() for d in drafts.values()) if op is not None)
    return Outcome(ops, tuple(findings))


def _due_dates(cadence: CadenceRule, start: datetime, length: int) -> list[datetime]:
    """Rule 4: each week's date (index = week; index 0 unused), all within range (``_unplannable``
    checked the last one, and the dates grow with the week)."""
    if cadence.every_days is not None:
        return [start, *(start + step for step in _day_steps(cadence.every_days, length))]
    return [start, *(cadence.due(start, week) for week in range(1, length + 1))]  # type: ignore[misc]


@functools.lru_cache(maxsize=64)
def _day_steps(every_days: int, length: int) -> tuple[timedelta, ...]:
    """The offset of weeks 1..length from the base's date: computed once per run, not per series."""
    return tuple(timedelta(days=every_days * (week - 1)) for week in range(1, length + 1))


def _unusable_base(spec: Spec, series: SeriesInput, bases: list[Document]) -> tuple[str, str, str] | None:
    """Rule 2: exactly one base with a timestamp in the cadence field, or why the series is unusable."""
    if not bases:
        first = min(m.doc.path for m in series.members)
        return ("series.base_missing", first,
                f"has {len(series.members)} member(s) but no week-1 base; series left untouched")
    if len(bases) > 1:
        bases = sorted(bases, key=lambda d: d.id)
        return ("series.base_ambiguous", bases[0].path,
                f"has {len(bases)} week-1 bases ({', '.join(d.path for d in bases)}); "
                "series left untouched")
    value = bases[0].get(spec.cadence.field)
    if not is_timestamp(value):
        return ("series.base_due_invalid", bases[0].path,
                f"the base's {spec.cadence.field} is {show(value)}, not a timestamp; "
                "series left untouched")
    return None


def _unplannable(spec: Spec, base: Document, start: datetime, length: int) -> tuple[str, str] | None:
    """A usable base whose series still cannot be planned: longer than the spec's bound, or with
    dates past what a timestamp can hold. Such data is a finding for its series, never a crash."""
    rule, cadence = spec.series, spec.cadence
    if length > rule.max_length:
        return ("series.length_over_limit",
                f"the base's {rule.length_field} asks for {length} weeks, more than the spec's "
                f"length.max of {rule.max_length}; series left untouched")
    if cadence.due(start, length) is None:
        return ("series.dates_out_of_range",
                f"week {length} would be due outside the years 1 to 9999 a timestamp can hold (base "
                f"{cadence.field} {show(start)}, {cadence.describe()}); series left untouched")
    return None


def series_length(spec: Spec, base: Document) -> int:
    """Rule 3 for a usable series' base: N, the number of weeks it has (its findings aside)."""
    return _length(spec, base, lambda *finding: None)


def _length(spec: Spec, base: Document, report) -> int:
    """Rule 3: the base's length field when a positive integer, else the spec default."""
    rule = spec.series
    if rule.length_field is None:
        return rule.default_length
    value = base.get(rule.length_field)
    if is_int(value) and value > 0:
        return value
    if not is_empty(value):
        report("series.length_invalid", base.path,
               f"the base's {rule.length_field} is {show(value)}, not a positive integer; "
               f"using the default of {rule.default_length} weeks")
    return rule.default_length


def _check_due(spec: Spec, doc: Document, week: int, expected: datetime, report) -> None:
    """Rule 6: a member's date is checked, never corrected."""
    name = spec.cadence.field
    value = doc.fields.get(name, MISSING)
    if value == expected and is_timestamp(value):
        return
    if not is_timestamp(value):
        report("assignment.due_invalid", doc.path,
               f"week {week}'s {name} is {show(value)}, not a timestamp; left as it is")
    else:
        report("assignment.due_mismatch", doc.path,
               f"week {week}'s {name} is {show(value)}, the cadence says {show(expected)}; "
               "left as it is")


def _new_week_template(spec: Spec, base: Document) -> dict[str, Any]:
    """Rule 5's copy of the base: its fields, less the omitted ones."""
    omit = set(spec.new_week.omit)
    return {name: value for name, value in base.fields.items() if name not in omit}


def _new_week_fields(spec: Spec, template: dict[str, Any], week: int, due: datetime) -> dict[str, Any]:
    """Rule 5: the base's fields less the omitted ones (``template``), with the week, its date and
    the resets."""
    fields = dict(template)
    fields[spec.series.week_field] = week
    fields[spec.cadence.field] = due
    fields.update(spec.new_week.reset)
    return fields


# -- links -------------------------------------------------------------------------------------------

_OLDEST = datetime.min.replace(tzinfo=UTC)


class _Links:
    """Rule 7 for one series, slot by slot. Reads targets through the run's drafts, so a change
    made earlier in the run (a base's week) is seen, and every document is written once."""

    def __init__(self, spec: Spec, drafts: dict[str, _Draft], report, label: str) -> None:
        assert spec.link is not None
        self.spec, self.link, self.drafts, self.report = spec, spec.link, drafts, report
        self.label = label

    def read(self, target: Document | _Draft, name: str) -> Any:
        if isinstance(target, _Draft):
            return target.current(name)
        draft = self.drafts.get(target.path)
        return draft.current(name) if draft else target.fields.get(name, MISSING)

    def draft(self, target: Document | _Draft) -> _Draft:
        if isinstance(target, _Draft):
            return target
        draft = self.drafts.get(target.path)
        if draft is None:
            draft = self.drafts[target.path] = _Draft(self.spec, target.path, target, series=self.label)
        return draft

    def series(self, series: SeriesInput, length: int, targets: dict[int, Document | _Draft | None]) -> None:
        """``targets``: every week of the series. Slots are independent of each other (each has
        its own target and responses), so they are taken in any order."""
        slots: dict[int, list[Document]] = {}
        week_field = self.link.week_field
        for response in series.responses:
            week = response.fields[week_field]
            if 1 <= week <= length:
                found = slots.get(week)
                if found is None:
                    slots[week] = [response]
                else:
                    found.append(response)
            else:
                self.report("response.week_out_of_range", response.path,
                            f"week {week} is outside the series' 1..{length}; left untouched")
        for week, responses in slots.items():
            target = targets[week]
            if target is None:
                for response in responses:
                    self.report("response.slot_blocked", response.path,
                                f"week {week} has no single assignment to link to; left untouched")
            else:
                self.slot(week, target, responses)
        member_ref = self.link.member_ref
        for week, target in targets.items():
            if type(target) is Document and week not in slots:
                linked = target.fields.get(member_ref)
                if linked is not None and not is_empty(linked):
                    # A week without responses only needs its link checked. Before its own slot,
                    # no draft of this run changes an existing member's link: its fields are current.
                    self.slot(week, target, ())

    def slot(self, week: int, target: Document | _Draft, responses) -> None:
        link, report = self.link, self.report
        target_id = target.path.partition("/")[2]
        usable: list[Document] = []
        for response in responses:
            ref = response.fields.get(link.response_ref, MISSING)
            if is_empty(ref) or ref == target_id:
                usable.append(response)
            else:
                report("response.link_conflict", response.path,
                       f"its {link.response_ref} names {show(ref)}, not week {week}'s assignment "
                       f"{target.path}; left untouched")

        linked = self.read(target, link.member_ref)
        if not is_empty(linked):
            partner = next((r for r in responses if r.id == linked), None)
            if partner is None:
                report("assignment.response_foreign", target.path,
                       f"its {link.member_ref} names {show(linked)}, which is not a response of week "
                       f"{week} of this series; left as it is")
            elif is_empty(partner.get(link.response_ref)):
                self.draft(partner).fill(link.response_ref, target_id, f"{link.id}.{ACTION_HALF_LINK}")
            for response in usable:
                if response is not partner:
                    report("response.duplicate", response.path,
                           f"week {week}'s assignment {target.path} is already linked to "
                           f"{show(linked)}; left untouched")
            return

        if not usable:
            return

        def rank(response: Document) -> tuple[bool, bool, datetime, str]:
            submitted = response.fields.get(link.order_by, MISSING)
            stamped = is_timestamp(submitted)
            return (response.fields.get(link.response_ref) == target_id, stamped,
                    submitted if stamped else _OLDEST, response.id)

        winner = max(usable, key=rank)
        for response in usable:
            if response is not winner:
                report("response.duplicate", response.path,
                       f"week {week} has several responses; {winner.path} is linked (most recent), "
                       "this one is left untouched")
        self.pair(self.draft(target), winner)

    def pair(self, target: _Draft, response: Document) -> None:
        """Link both ways: the target's ref, status, copies; the response's ref. One atomic group."""
        link = self.link
        rule = f"{link.id}.{ACTION_PAIR}"
        target.group = target.path
        target.fill(link.member_ref, response.id, rule)
        if link.status is not None:
            status = target.current(link.status.field)
            if is_empty(status):
                target.fill(link.status.field, link.status.to, rule)
            elif isinstance(status, str) and status in link.status.from_values:
                target.advance(link.status.field, status, link.status.to, rule)
        for member_field, response_field in link.copy:
            value = response.get(response_field)
            if is_empty(target.current(member_field)) and not is_empty(value):
                target.fill(member_field, value, rule)
        if is_empty(response.get(link.response_ref)):
            side = self.draft(response)
            side.group = target.path
            side.fill(link.response_ref, target.path.partition("/")[2], rule)


# -- the whole state ---------------------------------------------------------------------------------


def reconcile(spec: Spec, state: State, selection: Selection | None = None) -> tuple[list[Op], list[Finding]]:
    """Every series through the kernel (with ``selection``, the series it matches, and the findings
    about documents that carry its key values). Ops sorted by path, findings by code: deterministic."""
    series_list, findings = select_series(spec, state, selection)
    ops, found = reconcile_all(spec, series_list, state.documents(spec.series.collection).keys())
    return merge_outcomes([(ops, findings), ([], found)])


def select_series(spec: Spec, state: State,
                  selection: Selection | None = None) -> tuple[list[SeriesInput], list[Finding]]:
    """``group_series``, kept to the series ``selection`` matches and the findings about documents
    that carry its key values."""
    series_list, findings = group_series(spec, state)
    if selection is not None:
        series_list = [series for series in series_list if selection.matches(spec, series.key)]
        findings = [finding for finding in findings if _selected(spec, state, selection, finding)]
    return series_list, findings


def reconcile_all(spec: Spec, series_list: Iterable[SeriesInput],
                  taken_ids: Container[str]) -> tuple[list[Op], list[Finding]]:
    """Each series through the kernel, in any order; the results are not sorted yet."""
    ops: list[Op] = []
    findings: list[Finding] = []
    for series in series_list:
        outcome = reconcile_series(spec, series, taken_ids)
        ops.extend(outcome.ops)
        findings.extend(outcome.findings)
    return ops, findings


def merge_outcomes(parts: Sequence[tuple[list[Op], list[Finding]]]) -> tuple[list[Op], list[Finding]]:
    """The ops and findings of several shares of the series as one plan's: ops by path (a run
    writes each document once, so paths are unique), findings by their whole content. Both are
    total orders, so the result does not depend on how the series were shared out."""
    ops = [op for part_ops, _ in parts for op in part_ops]
    findings = [finding for _, part_findings in parts for finding in part_findings]
    ops.sort(key=lambda op: op.path)
    findings.sort(key=lambda f: f.sort_key)
    return ops, findings


def _selected(spec: Spec, state: State, selection: Selection, finding: Finding) -> bool:
    """A finding about a document of no series is in a selection when its document carries the
    selected key values (it was not planned, so nothing else ties it to a series)."""
    doc = state.find(finding.path)
    return doc is not None and selection.matches_document(spec, doc)
