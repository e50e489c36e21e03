"""A subset of the series: ``--select FIELD=VALUE[,FIELD=VALUE…]`` over the spec's series key.

Pure: parsing, matching a series key or a document, and the equality filters a store may use to
read less. A selection keeps the series whose key matches and their responses; what a selected run
plans, writes, verifies or reports about is that subset only. Must not read or decide anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from reconciler.errors import SelectionError
from reconciler.model import Selection, Spec, State, document_fields
from reconciler.values import show


def parse_selection(text: str, key_fields: Iterable[str]) -> Selection:
    """``FIELD=VALUE[,FIELD=VALUE…]``; one sentence naming the fault when it cannot be used."""
    fields = tuple(key_fields)
    allowed = ", ".join(fields)
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals:
            raise SelectionError(f"--select {show(item)}: give FIELD=VALUE, e.g. {fields[0]}=c01 "
                                 f"(fields: {allowed})")
        if name not in fields:
            raise SelectionError(f"--select: {show(name)} is not a series key field of the spec; "
                                 f"select by {allowed}")
        if value == "":
            raise SelectionError(f"--select: {name} has an empty value; give {name}=VALUE")
        if any(name == seen for seen, _ in pairs):
            raise SelectionError(f"--select: {name} is given twice; give each field once")
        pairs.append((name, value))
    return Selection(pairs=tuple(pairs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Equality:
    """Documents whose ``field`` holds one of ``values``: a filter a store may push to the server.
    It may keep more than the selection (the engine filters again), never fewer."""

    field: str
    values: tuple[str | int, ...]


def equality_filters(spec: Spec, selection: Selection) -> dict[str, tuple[Equality, ...]]:
    """Per selected collection, equality filters a query can use: one per pair, where a decimal
    value is also looked for as an integer. At most one filter has two values (Firestore allows
    one disjunction per query without a composite index); other decimal pairs stay in memory."""
    result: dict[str, tuple[Equality, ...]] = {}
    for collection in (spec.series.collection, spec.link.collection if spec.link else None):
        if collection is None:
            continue
        fields = document_fields(spec, collection)
        assert fields is not None
        filters: list[Equality] = []
        disjunction = False
        for name, value in selection.pairs:
            values: tuple[str | int, ...] = (value,)
            if _decimal(value):
                if disjunction:
                    continue
                values, disjunction = (value, int(value)), True
            filters.append(Equality(field=fields[name], values=values))
        result[collection] = tuple(filters)
    return result


def _decimal(value: str) -> bool:
    """A value an integer key part is spelled as (``str(int)``: no sign but '-', no leading zero)."""
    try:
        return str(int(value)) == value
    except ValueError:
        return False


def select_state(spec: Spec, state: State, selection: Selection) -> State:
    """The documents of the series and response collections that carry the selected key values;
    other collections as they are. For reports that count documents; a plan selects series."""
    keep = {spec.series.collection, *([spec.link.collection] if spec.link else [])}
    return replace(state, collections={
        name: {doc_id: doc for doc_id, doc in docs.items() if selection.matches_document(spec, doc)}
        if name in keep else docs for name, docs in state.collections.items()})
