"""The plan as steps a pipeline can spread over workers, pure: ``keyed`` looks at one document,
``plan_stem`` at the documents of one series. Together they give what ``kernel.reconcile`` gives for
the whole state (tests/test_beam.py holds them to it over generated states).

A series' key is hashed into its stem, the prefix of every ID its new weeks would take
(``kernel.series_stem``); keying members, responses and documents whose ID has a new week's form by
stem brings each series together with the IDs it must not create at, with no lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from reconciler.kernel import (
    Member,
    Placed,
    SeriesInput,
    classify_member,
    classify_response,
    orphan_response,
    reconcile_series,
    series_label,
    series_stem,
    stem_of_id,
)
from reconciler.model import Document, Finding, Op, Spec

TAGS = ("members", "responses", "taken", "findings")


def keyed(spec: Spec, collection: str, doc: Document) -> Iterator[tuple[str, Any]]:
    """What one document of ``collection`` brings to the plan, tagged: ("members", (stem, Placed)),
    ("responses", (stem, Placed)), ("taken", (stem, ID)) or ("findings", Finding); nothing for a
    document that is not the plan's business."""
    if collection == spec.series.collection:
        stem = stem_of_id(doc.id)
        if stem is not None:
            yield "taken", (stem, doc.id)
        placed = classify_member(spec, doc)
        if type(placed) is Finding:
            yield "findings", placed
        elif placed is not None:
            yield "members", (series_stem(spec, placed.key), placed)
    if spec.link is not None and collection == spec.link.collection:
        placed = classify_response(spec, doc)
        if type(placed) is Finding:
            yield "findings", placed
        else:
            yield "responses", (series_stem(spec, placed.key), placed)


def plan_stem(spec: Spec, members: Sequence[Placed], responses: Sequence[Placed],
              taken: Sequence[str]) -> Iterator[Op | Finding]:
    """The ops and findings of the series that share one stem, from their classified documents
    (what ``group_series`` and ``reconcile`` do for the whole state, for these series alone)."""
    series: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Member]]] = {}
    for placed in members:
        series.setdefault(placed.canon, (placed.key, []))[1].append(Member(placed.doc, placed.week))
    theirs: dict[tuple[Any, ...], list[Document]] = {}
    for placed in responses:
        if placed.canon in series:
            theirs.setdefault(placed.canon, []).append(placed.doc)
        else:
            yield orphan_response(spec, placed)
    taken_ids = frozenset(taken)
    for canon, (key, found) in series.items():
        found.sort(key=lambda member: member.doc.id)
        outcome = reconcile_series(spec, SeriesInput(
            key=key, label=series_label(spec, key), members=tuple(found),
            responses=tuple(sorted(theirs.get(canon, ()), key=lambda doc: doc.id))), taken_ids)
        yield from outcome.ops
        yield from outcome.findings




def placed(spec: Spec, collection: str, doc: Document) -> tuple[list[tuple[str, Any]], str | None, str]:
    """What an apply on many workers needs of one document: ``keyed``'s outputs; the stem of the
    series the document belongs to (None when it is no member or response of one: an op anchored
    there cannot be placed); and the one key its verification is done under (that stem, else the
    stem its ID has the form of, else its own path after "@"), so that each document is verified
    once, together with the documents of its series."""
    outputs = list(keyed(spec, collection, doc))
    stem = next((value[0] for tag, value in outputs if tag in ("members", "responses")), None)
    taken = next((value[0] for tag, value in outputs if tag == "taken"), None)
    return outputs, stem, stem or taken or f"@{doc.path}"
