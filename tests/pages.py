"""Reading the audit page back as a browser's parser does: the heat map's rows and cells, and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    classes: tuple[str, ...]
    title: str
    text: str = ""


@dataclass
class Row:
    header: str = ""
    header_title: str = ""
    cells: list[Cell] = field(default_factory=list)  # the week cells only


@dataclass
class Heatmap:
    columns: list[str] = field(default_factory=list)  # the week numbers of the header
    rows: list[Row] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.heatmap = Heatmap()
        self.text: list[str] = []
        self._in_map = self._in_head = self._in_row_header = False
        self._week_header = False
        self._cell: Cell | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        classes = tuple(found.get("class", "").split())
        if tag == "table" and found.get("id") == "heatmap":
            self._in_map = True
        if not self._in_map:
            return
        if tag == "thead":
            self._in_head = True
        elif tag == "tr" and not self._in_head:
            self.heatmap.rows.append(Row())
        elif tag == "th" and self._in_head:
            self._week_header = "week" in classes
            if self._week_header:
                self.heatmap.columns.append("")
        elif tag == "th":
            self._in_row_header = True
            self.heatmap.rows[-1].header_title = found.get("title", "")
        elif tag == "td" and "cell" in classes:
            self._cell = Cell(classes=classes, title=found.get("title", ""))
            self.heatmap.rows[-1].cells.append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if not self._in_map:
            return
        if tag == "table":
            self._in_map = False
        elif tag == "thead":
            self._in_head = False
        elif tag == "th":
            self._in_row_header = self._week_header = False
        elif tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._week_header:
            self.heatmap.columns[-1] += data
        elif self._in_row_header:
            self.heatmap.rows[-1].header += data
        elif self._cell is not None:
            self._cell.text += data


def read_page(html: str) -> tuple[Heatmap, str]:
    """The heat map, and all the page's text as a browser shows it (entities decoded)."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.heatmap, "".join(reader.text)
