"""The values every stage passes along: the spec, documents and state, ops, findings and the plan.

Pure data (frozen dataclasses and tuples); no I/O. The op types are the additive guarantee in the
type system: a document can be created (must not exist), or have empty fields filled and its status
moved forward together with a link (the document must be unchanged since it was read). There is no
type for a delete or for overwriting a value, so no plan can hold one.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from reconciler.formats import PLAN
from reconciler.values import MISSING, canonical, is_empty

# -- the spec ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesRule:
    """Rules 1-3: which documents form a series, which is its base, how many weeks it has."""

    id: str
    collection: str
    key: tuple[str, ...]
    week_field: str
    recurring_flag: str | None
    length_field: str | None
    default_length: int
    max_length: int  # a longer series is a finding, never thousands of creates
    fill_base_week: bool


CALENDAR_UNITS = ("days", "weeks", "months")


@dataclass(frozen=True, slots=True, kw_only=True)
class CadenceRule:
    """Rule 4: the date of each week, from the base's date. ``due`` is the one place it is computed.

    Two forms, exactly one of which is set:

    - ``every_days``: ``base + (week - 1) × every_days`` exact 24-hour days, in UTC;
    - ``unit`` and ``count`` (``every: {weeks: 2}``): ``(week - 1) × count`` calendar days, weeks or
      months added to the base's wall-clock time in ``timezone`` (UTC when None), then taken back to
      UTC. Months keep the base's day, or the month's last day when it is shorter, and are counted
      from the base every time (Jan 31, Feb 28, Mar 31), never stepped from the week before. A
      wall-clock time that occurs twice (clocks going back) is its first occurrence; one that does
      not occur (clocks going forward) is read with the offset in force before the change, so it
      lands as much later as the clocks jumped (PEP 495's ``fold=0``).
    """

    id: str
    field: str
    every_days: int | None = None
    unit: str | None = None  # one of CALENDAR_UNITS when the cadence is a calendar step
    count: int = 0
    timezone: str | None = None  # an IANA name, checked when the spec is read

    def __post_init__(self) -> None:
        if (self.every_days is None) == (self.unit is None):
            raise ValueError("a cadence has either every_days or a calendar unit, not both or neither")
        if self.unit is not None and self.unit not in CALENDAR_UNITS:
            raise ValueError(f"unknown calendar unit {self.unit!r}")
        if self.every_days is not None and self.timezone is not None:
            raise ValueError("every_days counts exact days in UTC; a time zone applies to a calendar unit")

    def due(self, start: datetime, week: int) -> datetime | None:
        """The date of ``week`` in a series starting at ``start`` (week 1 is ``start``); None when
        it falls outside the dates a timestamp can hold (years 1 to 9999), in UTC or, with a time
        zone, in local time."""
        every_days = self.every_days
        if every_days is not None:  # the fast path: one addition, as before calendar units existed
            try:
                return start + timedelta(days=every_days * (week - 1))
            except OverflowError:
                return None
        if week == 1:
            return start
        zone = _zone(self.timezone)
        try:
            local = start.astimezone(zone)
            steps = self.count * (week - 1)
            # Arithmetic on an aware datetime moves its wall-clock fields and sets fold=0, which
            # astimezone then reads as the first of two equal times, or, in a gap, with the offset
            # in force before it.
            if self.unit == "months":
                months = local.month - 1 + steps
                year, month = local.year + months // 12, months % 12 + 1
                local = local.replace(year=year, month=month, fold=0,
                                      day=min(local.day, calendar.monthrange(year, month)[1]))
            else:
                local += timedelta(days=steps * 7 if self.unit == "weeks" else steps)
            return local.astimezone(UTC)
        except (OverflowError, ValueError):
            return None

    def describe(self) -> str:
        """The cadence in words, for messages: "every 7 days", "every 2 weeks at local time in
        Europe/London", "every month in UTC"."""
        if self.every_days is not None:
            return "every day" if self.every_days == 1 else f"every {self.every_days} days"
        step = (self.unit or "")[:-1] if self.count == 1 else f"{self.count} {self.unit}"
        where = f"at local time in {self.timezone}" if self.timezone else "in UTC"
        return f"every {step} {where}"


@functools.lru_cache(maxsize=64)
def _zone(name: str | None) -> tzinfo:
    """A time zone by its IANA name (UTC for None); loaded once per process, not once per date."""
    return UTC if name is None else ZoneInfo(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewWeekRule:
    """Rule 5: a missing week is a copy of the base with these fields reset and these omitted."""

    id: str
    reset: tuple[tuple[str, Any], ...]
    omit: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRule:
    field: str
    to: str
    from_values: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkRule:
    """Rule 7: how responses are placed in slots and linked both ways to their target member."""

    id: str
    collection: str
    key: tuple[tuple[str, str], ...]  # (response field, series key field), in series key order
    week_field: str
    order_by: str
    member_ref: str  # field of a member naming its response
    response_ref: str  # field of a response naming its member
    copy: tuple[tuple[str, str], ...]  # (member field, response field)
    status: StatusRule | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FillsRule:
    """Rule 8: the only fields a run may fill, per collection (when empty)."""

    id: str
    fields: tuple[tuple[str, tuple[str, ...]], ...]

    def allows(self, collection: str, name: str) -> bool:
        return (collection, name) in self._allowed

    @property
    def _allowed(self) -> frozenset[tuple[str, str]]:
        return _allowed_pairs(self.fields)


@functools.lru_cache(maxsize=16)
def _allowed_pairs(fields: tuple[tuple[str, tuple[str, ...]], ...]) -> frozenset[tuple[str, str]]:
    return frozenset((collection, name) for collection, names in fields for name in names)


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    name: str
    source: str  # the file it was read from, for messages
    sha256: str  # of the file's bytes: a plan names the exact spec it was made from
    text: str  # the file itself: a saved plan carries it, so that apply can re-diff with it
    reference: tuple[str, ...]
    series: SeriesRule
    cadence: CadenceRule
    new_week: NewWeekRule
    link: LinkRule | None
    fills: FillsRule

    @property
    def collections(self) -> tuple[str, ...]:
        """Every collection a run reads, in a fixed order: series, responses, then reference."""
        names = [self.series.collection]
        if self.link:
            names.append(self.link.collection)
        names.extend(name for name in self.reference if name not in names)
        return tuple(names)


# -- state -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    collection: str
    id: str
    fields: dict[str, Any]
    update_time: datetime | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.id}"

    def get(self, name: str) -> Any:
        return self.fields.get(name, MISSING)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    """The snapshot file a state was read from: its absolute path, and the sha256 of its bytes."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Every document of the collections a run reads, as of one read time."""

    source: str
    read_time: datetime | None
    collections: dict[str, dict[str, Document]]
    file: SourceFile | None = None  # when read from a snapshot file, and asked to pin it

    @classmethod
    def of(cls, source: str, read_time: datetime | None, docs: Iterable[Document]) -> State:
        """The state that holds ``docs``, each under its own collection."""
        collections: dict[str, dict[str, Document]] = {}
        for doc in docs:
            collections.setdefault(doc.collection, {})[doc.id] = doc
        return cls(source=source, read_time=read_time, collections=collections)

    def documents(self, collection: str) -> dict[str, Document]:
        return self.collections.get(collection, {})

    def find(self, path: str) -> Document | None:
        collection, _, doc_id = path.partition("/")
        return self.collections.get(collection, {}).get(doc_id)


# -- findings ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """Something the spec cannot make right additively. ``code`` is part of the public interface."""

    code: str
    path: str  # the document concerned, or the series' first document
    series: str  # the series key, spelled ``clientId=c01 formId=f02``, or "" when none applies
    message: str

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.code, self.series, self.path, self.message)


# -- ops ---------------------------------------------------------------------------------------------
# An op's rule id is ``<spec rule id>.<action>``; the actions are the engine's, listed here.
ACTION_NEW_WEEK = "new_week"  # create a missing week
ACTION_BASE_WEEK = "base_week"  # give a base without a week field its week (seed plan, case 2)
ACTION_PAIR = "pair"  # link a response and its target both ways
ACTION_HALF_LINK = "complete_half_link"  # fill a response's side of a link its target already has



@dataclass(frozen=True, slots=True, kw_only=True)
class FieldFill:
    """Set ``field`` to ``value`` where it is empty (``before`` is the empty value that was read)."""

    field: str
    value: Any
    rule: str
    before: Any = MISSING

    def __post_init__(self) -> None:
        if not is_empty(self.before):
            raise ValueError(f"a fill may only replace an empty value, not {self.before!r}")
        if is_empty(self.value):
            raise ValueError(f"filling {self.field} with an empty value changes nothing")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusTransition:
    """Move ``field`` from ``before`` (one of the spec's from-values) to ``to``, with a link only."""

    field: str
    before: str
    to: str
    rule: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateDocumentOp:
    """Create a document. Precondition: it does not exist."""

    path: str
    fields: dict[str, Any]
    rules: tuple[str, ...]
    group: str | None = None  # ops with the same group commit atomically (a link)
    series: str = ""  # the series the op belongs to (spelled as a finding's); for reviewers only

    @property
    def precondition(self) -> dict[str, Any]:
        return {"exists": False}

    def refusal(self, current: Document | None) -> str:
        """Why this op may not be written over ``current`` ('' when its precondition holds)."""
        return "the document already exists" if current is not None else ""

    def in_effect(self, current: Document | None) -> bool:
        """Whether ``current`` already holds exactly what this op writes."""
        return current is not None and _same_fields(current.fields, self.fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class FillFieldsOp:
    """Fill empty fields of one document, and with a link move its status forward.

    Precondition: the document's ``update_time`` is still the one read when planning.
    """

    path: str
    update_time: datetime | None
    fills: tuple[FieldFill, ...]
    transition: StatusTransition | None = None
    group: str | None = None
    series: str = ""

    def __post_init__(self) -> None:
        if not self.fills:
            raise ValueError("a fill op needs at least one fill")
        if self.transition and self.group is None:
            raise ValueError("a status transition is only made together with a link")

    @property
    def rules(self) -> tuple[str, ...]:
        names = {fill.rule for fill in self.fills}
        if self.transition:
            names.add(self.transition.rule)
        return tuple(sorted(names))

    @property
    def precondition(self) -> dict[str, Any]:
        return {"update_time": self.update_time}

    def refusal(self, current: Document | None) -> str:
        if current is None:
            return "the document no longer exists"
        if self.update_time is None:
            return "the plan has no update time for this document; re-run plan"
        if current.update_time != self.update_time:
            return "the document changed since the plan was made"
        for fill in self.fills:
            if not is_empty(current.get(fill.field)):
                return f"{fill.field} is no longer empty"
        if self.transition and current.get(self.transition.field) != self.transition.before:
            return f"{self.transition.field} is no longer {self.transition.before!r}"
        return ""

    def in_effect(self, current: Document | None) -> bool:
        if current is None:
            return False
        wanted = {fill.field: fill.value for fill in self.fills}
        if self.transition:
            wanted[self.transition.field] = self.transition.to
        return all(_same_fields({k: current.get(k)}, {k: v}) for k, v in wanted.items())


Op = CreateDocumentOp | FillFieldsOp


def _same_fields(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return canonical(left) == canonical(right)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult:
    """What became of one op at apply time: applied, or skipped and why (never forced)."""

    op: Any  # an Op; in a rollback's results, the undo op (reconciler.rollback) it wrote
    applied: bool
    reason: str = ""
    written_at: datetime | None = None  # the document's update time as this write left it


# -- the plan ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    create: int
    link: int
    fill: int
    findings: int

    def line(self) -> str:
        return (f"Plan: {self.create} to create, {self.link} to link, {self.fill} to fill; "
                "0 to delete, 0 to overwrite.")

    @property
    def changes(self) -> int:
        return self.create + self.link + self.fill


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    spec_name: str
    spec_path: str
    spec_sha256: str
    spec_text: str
    source: str
    read_time: datetime | None
    ops: tuple[Op, ...]
    findings: tuple[Finding, ...]
    selection: Selection | None = None  # the series the plan is restricted to (None: every one)
    source_file: SourceFile | None = None  # the snapshot file planned, pinned by path and content
    format_version: str = PLAN.version

    @property
    def summary(self) -> Summary:
        return summarize(self.ops, len(self.findings))

    def groups(self) -> list[tuple[Op, ...]]:
        """The atomic units of the plan: a link's ops together, every other op alone; in plan order."""
        units: dict[str, list[Op]] = {}
        for op in self.ops:
            units.setdefault(group_key(op), []).append(op)
        return [tuple(ops) for ops in units.values()]


def summarize(ops: Iterable[Op], findings: int) -> Summary:
    """What a plan's summary counts: documents created, links made (one per link group), fields
    filled outside a new link."""
    creates = links = fills = 0
    groups: set[str] = set()
    for op in ops:
        if isinstance(op, CreateDocumentOp):
            creates += 1
        elif isinstance(op, FillFieldsOp):
            fills += sum(1 for fill in op.fills if not _is_new_link_fill(op, fill))
        if op.group is not None and op.group not in groups:
            groups.add(op.group)
            links += 1
    return Summary(create=creates, link=links, fill=fills, findings=findings)


def group_key(op: Op) -> str:
    """The atomic unit an op belongs to: its link (the member's path), or the op alone."""
    return op.group or f"op:{op.path}"


def _is_new_link_fill(op: FillFieldsOp, fill: FieldFill) -> bool:
    """Fills made by a new link are counted as the link, not again as fills."""
    return op.group is not None and fill.rule.endswith("." + ACTION_PAIR)


# -- a subset of the series ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """FIELD=VALUE pairs, in the order given; every field is one of the spec's series key fields."""

    pairs: tuple[tuple[str, str], ...]

    def matches(self, spec: Spec, key: Iterable[Any]) -> bool:
        """A string key part matches its value exactly; an integer key part matches its decimal
        spelling (``week=7`` matches 7), since a value on the command line is always a string."""
        parts = dict(zip(spec.series.key, key, strict=True))
        return all(spelled(parts[name]) == value for name, value in self.pairs)

    def matches_document(self, spec: Spec, doc: Document) -> bool:
        """Whether a document of the series or the response collection carries the selected key
        values (a response by the fields its link maps to the series key). Other collections are
        not selected from."""
        fields = document_fields(spec, doc.collection)
        if fields is None:
            return False
        return all(spelled(doc.fields.get(fields[name])) == value for name, value in self.pairs)

    def text(self) -> str:
        return ",".join(f"{name}={value}" for name, value in self.pairs)


def spelled(part: Any) -> str | None:
    """How a key part is written on the command line: a string as itself, an integer in decimal."""
    if type(part) is str:
        return part
    if type(part) is int:
        return str(part)
    return None


def document_fields(spec: Spec, collection: str) -> dict[str, str] | None:
    """Series key field → the field holding it in ``collection``; None for a collection that has
    no series key (reference collections)."""
    if collection == spec.series.collection:
        return {name: name for name in spec.series.key}
    if spec.link is not None and collection == spec.link.collection:
        return {series_field: response_field for response_field, series_field in spec.link.key}
    return None
