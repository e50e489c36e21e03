"""Markdown documents for pull-request comments: escaped cells, and one document either as one
comment (long tables cut to fit) or split into parts that each fit one comment.

Pure: returns strings. A document is a title and a list of items: a ``Block`` is kept whole in one
part; a ``Table`` may be split between parts, each piece a complete table (its header repeated)
inside its own ``<details>``, so every part is valid markdown on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

from reconciler.values import printable

COMMENT_LIMIT = 65_536  # characters GitHub accepts in one comment
PART_LIMIT = 65_000  # characters of one part: leaves 536 for a marker line a workflow adds
CELL_LIMIT = 200  # characters of one table cell


def code(text: str) -> str:
    """Text from data as an inline code span in a table cell: no backtick inside can close the span
    early (the fence is longer than any run of backticks in it), no pipe can split the cell, no
    control character or line break survives; inside a code span, HTML and mentions are inert."""
    text = printable(text).replace("|", "\\|")
    if len(text) > CELL_LIMIT:
        text = text[: CELL_LIMIT - 1] + "…"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def codes(texts: Sequence[str], shown: int = 3) -> str:
    """A few code spans and how many more, for an "examples" cell."""
    more = len(texts) - shown
    return ", ".join(code(text) for text in texts[:shown]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class Block:
    """Lines kept together in one part."""

    lines: tuple[str, ...]


class Rows(Sequence[str]):
    """Table rows made when read: ``render(item)`` for each of ``items``. A comment shows a few
    hundred rows of a plan that may have hundreds of thousands; only those are ever made."""

    __slots__ = ("items", "render")

    def __init__(self, items: Sequence[Any], render: Callable[[Any], str]) -> None:
        self.items = items
        self.render = render

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self.render(item) for item in self.items[index]]
        return self.render(self.items[index])

    def __iter__(self):
        return map(self.render, self.items)


@dataclass(frozen=True, slots=True)
class Table:
    """A collapsible table: ``summary`` is its ``<details>`` line; ``total`` the count of rows the
    whole table has, when ``rows`` holds fewer (a capped table)."""

    summary: str
    header: tuple[str, str]
    rows: Sequence[str]
    left_out: str = ""  # the line after the table saying what is not in it, if anything


@dataclass(frozen=True, slots=True)
class Document:
    title: Callable[[str], str]  # the first line, given "" or " (part 2 of 3)"
    items: Sequence[Block | Table]
    cut_note: str  # said where rows are cut to fit one comment


def _size(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def _table_lines(table: Table, rows: Sequence[str], summary: str, note: str = "") -> list[str]:
    lines = [f"<details><summary>{summary}</summary>", "", *table.header, *rows]
    if note:
        lines += ["", note]
    return [*lines, "", "</details>", ""]


def one_comment(document: Document, limit: int = PART_LIMIT) -> str:
    """The whole document as one comment: the tables' rows are cut, in document order, where the
    rest would not fit, with a line saying how many were left out and where to see them all."""
    lines = [document.title(""), ""]
    cut = f"… and 9999999 more rows; {document.cut_note}"
    fixed = _size(lines) + sum(
        _size(item.lines) if isinstance(item, Block)
        else _size(_table_lines(item, (), item.summary, max(item.left_out, cut, key=len)))
        for item in document.items)
    room = limit - fixed
    tables = sum(isinstance(item, Table) for item in document.items)
    for item in document.items:
        if isinstance(item, Block):
            lines += item.lines
            continue
        share, tables = room // tables, tables - 1
        kept: list[str] = []
        for row in item.rows:
            if len(row) + 1 > share:
                break
            share -= len(row) + 1
            room -= len(row) + 1
            kept.append(row)
        note = item.left_out
        if len(kept) < len(item.rows):
            note = f"… and {len(item.rows) - len(kept)} more rows; {document.cut_note}"
        lines += _table_lines(item, kept, item.summary, note)
    return "\n".join(lines).rstrip("\n") + "\n"


def split(document: Document, limit: int = PART_LIMIT) -> list[str]:
    """The whole document, every row, in parts of at most ``limit`` characters, each valid markdown
    on its own: a table continued in the next part repeats its header in a ``<details>`` of its own."""
    reserve = len(document.title(" (part 9999 of 9999)")) + 2  # the title line each part starts with
    parts: list[list[str]] = [[]]

    def fits(lines: Sequence[str]) -> bool:
        return reserve + _size(parts[-1]) + _size(lines) <= limit

    def place(lines: list[str]) -> None:
        if not fits(lines) and parts[-1]:
            parts.append([])
        if not fits(lines):  # a block larger than a part on its own: only a bug can make one
            raise ValueError(f"a block of {_size(lines)} characters does not fit a part of {limit}")
        parts[-1] += lines

    for item in document.items:
        if isinstance(item, Block):
            place(list(item.lines))
            continue
        rows, summary = list(item.rows), item.summary
        while rows:
            taken: list[str] = []
            for row in rows:
                if not fits(_table_lines(item, [*taken, row], summary, item.left_out)):
                    break
                taken.append(row)
            if not taken and parts[-1]:  # not even one row fits here: continue in a new part
                parts.append([])
                continue
            if not taken:
                raise ValueError(f"a table row of {len(rows[0])} characters does not fit a part of {limit}")
            rows = rows[len(taken):]
            parts[-1] += _table_lines(item, taken, summary, "" if rows else item.left_out)
            if rows:
                parts.append([])
                summary = f"{item.summary} (continued)"
    total = len(parts)
    return [f"{document.title(f' (part {index} of {total})' if total > 1 else '')}\n\n"
            + "\n".join(lines).rstrip("\n") + "\n" for index, lines in enumerate(parts, 1)]
