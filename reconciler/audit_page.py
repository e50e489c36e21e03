"""The audit as one self-contained HTML page: counts, a series × weeks heat map, link health and
findings by code, for a person to look at in a browser.

Pure: (AuditReport, show_values) → a string; no files, no clock, no network. The page loads
nothing (no script, font, image or style sheet from anywhere: its Content-Security-Policy forbids
it), so it opens offline and the same report gives the same bytes. The only module that imports
Jinja2. Every value that comes from data (IDs, series keys, field values) reaches the page through
one escape (``_text``): control and format characters spelled out, HTML escaped by Jinja2's
autoescape, and braces as character references so no client-side template can read them. Private
unless ``show_values``: IDs, series keys, weeks, due dates, rules, finding codes and counts; no
other document value (finding messages quote values; a status the spec does not name is a value).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from jinja2 import Environment, StrictUndefined, Template
from markupsafe import Markup, escape

from reconciler.audit import (
    CREATE,
    DUPLICATE,
    FINDING,
    OUT_OF_RANGE,
    PRESENT,
    UNTOUCHED,
    AuditReport,
    SeriesCoverage,
)
from reconciler.values import format_timestamp, printable

# Bounds that keep the page light whatever the data: the counts always cover everything.
SERIES_SHOWN = 200  # rows of the heat map
WEEKS_SHOWN = 104  # columns of the heat map
FINDINGS_SHOWN = 100  # documents listed per finding code

# Each state's label in the legend, its words after a count, the symbol drawn in its cell (so that
# colour is never the only cue) and its meaning. Colours live in the template, one CSS class a state.
STATES = {
    PRESENT: ("present", "present", "", "one member, no finding about it"),
    CREATE: ("to create", "to create", "+", "no member: the plan creates this week"),
    DUPLICATE: ("duplicate", "duplicate", "=",
                "several members (series.week_duplicate): no links are made into it"),
    FINDING: ("finding", "with a finding", "!",
              "a member with a finding about it, or a missing week the plan cannot create"),
    OUT_OF_RANGE: ("out of range", "out of range", ">", "a member whose week is outside the series' 1..N"),
    UNTOUCHED: ("series untouched", "in a series left untouched", "x",
                "a member of a series left untouched (no single base, or a base the cadence cannot use)"),
    "": ("no week", "", "", "past the series' N, and no member there"),
}


def _text(value: Any) -> Markup:
    """Every expression of the template passes here (Jinja2's ``finalize``), before autoescape."""
    if isinstance(value, Markup):
        return value
    escaped = str(escape(printable(str(value))))
    return Markup(escaped.replace("{", "&#123;").replace("}", "&#125;"))


_ENVIRONMENT = Environment(autoescape=True, undefined=StrictUndefined, finalize=_text,
                           trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def audit_page(report: AuditReport, show_values: bool = False) -> str:
    return _template().render(page=_page(report, show_values))


@functools.cache
def _template() -> Template:
    return _ENVIRONMENT.from_string(TEMPLATE)


# -- the page's content, as plain values for the template --------------------------------------------


def _page(report: AuditReport, show_values: bool) -> dict[str, Any]:
    series = report.series
    return {
        "title": f"Audit of {report.source} with spec {report.spec_name}",
        "spec": report.spec_name,
        "source": report.source,
        "read": format_timestamp(report.read_time) if report.read_time else "unknown time",
        "show_values": show_values,
        "summary": _summary(report),
        "counts": _counts(report, show_values),
        "heatmap": _heatmap(report.coverage, report),
        "links": _rows(report.links),
        "findings": _findings(report, show_values),
        "series_total": series.get("total", 0),
    }


def _summary(report: AuditReport) -> str:
    totals: dict[str, int] = {}
    for one in report.coverage:
        for state, count in one.counts().items():
            totals[state] = totals.get(state, 0) + count
    series = report.series
    weeks = ", ".join(f"{totals[state]} {STATES[state][1]}" for state in STATES if totals.get(state))
    found = sum(report.findings.values())
    return (f"{series.get('total', 0)} series ({series.get('usable', 0)} usable); weeks: "
            f"{weeks or 'none'}; {found} finding{'' if found == 1 else 's'}.")


def _counts(report: AuditReport, show_values: bool) -> list[dict[str, Any]]:
    members = dict(report.members)
    status = members.pop("status", None)
    sections = [_section("Documents", report.collections, worded=False),
                _section("Series members", members),
                _section("Responses", report.responses),
                _section("Series", report.series)]
    if status is not None:
        sections.insert(2, _section("Member statuses", _statuses(status, report.statuses, show_values),
                                    worded=False))
    return [section for section in sections if section["rows"]]


def _statuses(counted: dict[str, int], named: Iterable[str], show_values: bool) -> dict[str, int]:
    """Statuses the spec names (and "(empty)") as they are; any other is a document's own value,
    counted as "(other)" unless values are shown."""
    if show_values:
        return counted
    shown: dict[str, int] = {}
    for label, count in counted.items():
        key = label if label in named or label == "(empty)" else "(other)"
        shown[key] = shown.get(key, 0) + count
    return dict(sorted(shown.items()))


def _section(title: str, values: dict[str, Any], worded: bool = True) -> dict[str, Any]:
    return {"title": title, "rows": _rows(values, worded)}


def _rows(values: dict[str, Any], worded: bool = True) -> list[tuple[str, Any]]:
    # Collection names and statuses are shown as they are; the report's own labels in words.
    return [(name.replace("_", " ") if worded else name, value) for name, value in values.items()]


def _heatmap(coverage: tuple[SeriesCoverage, ...], report: AuditReport) -> dict[str, Any]:
    shown = coverage[:SERIES_SHOWN]
    widest = max((_last_week(one) for one in shown), default=0)
    columns = min(max(widest, 1), WEEKS_SHOWN)
    return {
        "legend": [{"state": state or "none", "label": label, "symbol": symbol, "meaning": meaning}
                   for state, (label, _, symbol, meaning) in STATES.items()],
        "columns": list(range(1, columns + 1)),
        "rows": [_row(one, columns, report) for one in shown],
        "more_series": len(coverage) - len(shown),
        "more_weeks": widest - columns if widest > columns else 0,
        "shown": len(shown),
    }


def _last_week(one: SeriesCoverage) -> int:
    weeks = [one.length or 0, *one.out_of_range, *one.untouched]
    return max(weeks)


def _row(one: SeriesCoverage, columns: int, report: AuditReport) -> dict[str, Any]:
    cells = [_cell(one, week, report) for week in range(1, columns + 1)]
    if one.length is None:
        header = f"left untouched ({one.unusable}): members in week {_weeks(one.untouched)}"
        notes = [f"left untouched: members in week {_weeks(one.untouched)}"]
    else:
        start = format_timestamp(one.start) if one.start else "?"
        header = f"N = {one.length} weeks, week 1 due {start}"
        notes = [", ".join(f"{count} {STATES[state][1]}" for state, count in one.counts().items())]
    if one.out_of_range:
        notes.append(f"out of range: week {_weeks(one.out_of_range)}")
    hidden = [w for w in (*one.out_of_range, *one.untouched) if not 1 <= w <= columns]
    if hidden:
        notes.append(f"not drawn: week {_weeks(hidden)}")
    if one.responses:
        notes.append(f"{one.responses} response{'' if one.responses == 1 else 's'}")
    return {"label": one.label, "header": header, "length": one.length if one.length is not None else "-",
            "cells": cells, "notes": "; ".join(note for note in notes if note), "codes": one.codes}


def _cell(one: SeriesCoverage, week: int, report: AuditReport) -> tuple[str, str, str]:
    """(CSS class, symbol, title) of one week's cell."""
    state = one.state(week)
    label, _, symbol, _ = STATES[state]
    if not state:
        return "none", "", ""
    due = ""
    if one.start is not None and report.cadence is not None and state != OUT_OF_RANGE:
        when = report.cadence.due(one.start, week)
        due = f", due {format_timestamp(when)[:10]}" if when else ""
    codes = one.week_codes.get(week, ())
    if state == UNTOUCHED:
        codes = (one.unusable,)
    because = f" ({', '.join(codes)})" if codes else ""
    return state, symbol, f"week {week}{due}: {label}{because}"


def _weeks(weeks: Iterable[int]) -> str:
    listed = sorted(weeks)
    text = ", ".join(str(week) for week in listed[:10])
    return text + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")


def _findings(report: AuditReport, show_values: bool) -> list[dict[str, Any]]:
    by_code: dict[str, list[Any]] = {}
    for finding in report.details:
        by_code.setdefault(finding.code, []).append(finding)
    return [{"code": code, "count": count,
             "documents": [{"path": f.path, "series": f.series, "message": f.message if show_values else ""}
                       for f in by_code.get(code, [])[:FINDINGS_SHOWN]],
             "more": max(0, len(by_code.get(code, [])) - FINDINGS_SHOWN)}
            for code, count in report.findings.items()]


# -- the template -------------------------------------------------------------------------------------
# Inline style only (the page must open offline); no script at all. Colours: Okabe-Ito, readable by
# most colour-blind people, and each state also has its own symbol.

TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="reconcile audit --format html">
<title>{{ page.title }}</title>
<style>
:root { --present: #009e73; --create: #56b4e9; --duplicate: #e69f00; --finding: #d55e00;
        --out_of_range: #cc79a7; --untouched: #999999; --none: #f2f2f2; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
p.meta, p.note { color: #444; margin: .2em 0; }
code { font: 12px ui-monospace, monospace; }
.counts { display: flex; flex-wrap: wrap; gap: 1em; }
.counts table, table.plain { border-collapse: collapse; }
.counts caption { text-align: left; font-weight: 600; }
table.heatmap caption, table.heatmap thead th:first-child { text-align: left; }
.counts td, .counts th, table.plain td, table.plain th { padding: 1px 8px; border-bottom: 1px solid #e5e5e5;
  text-align: left; font-weight: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.legend { display: flex; flex-wrap: wrap; gap: .4em 1.2em; padding: 0; list-style: none; }
.legend li { display: flex; align-items: center; gap: .35em; }
.swatch { display: inline-block; width: 16px; height: 16px; line-height: 16px; text-align: center;
  font: bold 11px ui-monospace, monospace; border: 1px solid #fff; }
.scroll { overflow-x: auto; max-width: 100%; }
table.heatmap { border-collapse: separate; border-spacing: 1px; }
table.heatmap th { font-weight: normal; white-space: nowrap; }
table.heatmap thead th.week { font-size: 9px; color: #555; min-width: 16px; text-align: center; }
table.heatmap thead th.notes { text-align: left; padding-left: 8px; }
table.heatmap tbody th { position: sticky; left: 0; background: #fff; text-align: left; padding-right: 8px; }
table.heatmap td.cell { width: 16px; min-width: 16px; height: 16px; padding: 0; text-align: center;
  font: bold 11px ui-monospace, monospace; }
table.heatmap td.n { text-align: right; padding-right: 6px; font-variant-numeric: tabular-nums; }
table.heatmap td.notes { padding-left: 8px; white-space: nowrap; color: #444; font-size: 12px; }
.present { background: var(--present); color: #fff; }
.create { background: var(--create); color: #00304d; }
.duplicate { background: var(--duplicate); color: #3d2700; }
.finding { background: var(--finding); color: #fff; }
.out_of_range { background: var(--out_of_range); color: #3d0026; }
.untouched { background: var(--untouched); color: #fff; }
.none { background: var(--none); }
details { margin: .2em 0; } summary { cursor: pointer; }
</style>
</head>
<body>
<header>
<h1>Audit: <code>{{ page.spec }}</code> on <code>{{ page.source }}</code></h1>
<p class="meta">Read at {{ page.read }}. {{ page.summary }}</p>
{% if page.show_values %}
<p class="note">Values shown (<code>--show-values</code>): finding messages and every status value.</p>
{% else %}
<p class="note">Values hidden: this page shows IDs, series keys, weeks, due dates, rules, finding codes
and counts, and no other document value (<code>--show-values</code> adds finding messages and every
status value).</p>
{% endif %}
</header>

<main>
<section aria-labelledby="counts">
<h2 id="counts">Counts</h2>
<div class="counts">
{% for section in page.counts %}
<table>
<caption>{{ section.title }}</caption>
<tbody>
{% for name, value in section.rows %}
<tr><th scope="row">{{ name }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endfor %}
</div>
</section>

<section aria-labelledby="coverage">
<h2 id="coverage">Coverage: series × weeks</h2>
<p class="note">One row per series, one cell per week 1..N, as the plan sees it.
{% if page.heatmap.more_series %}
<strong>Showing the first {{ page.heatmap.shown }} of {{ page.series_total }} series</strong> (in series-key
order), and {{ page.heatmap.more_series }} more; the counts above cover every series.
{% endif %}
{% if page.heatmap.more_weeks %}
<strong>Weeks past {{ page.heatmap.columns | length }} are not drawn</strong> ({{ page.heatmap.more_weeks }}
more columns); each row's notes count them.
{% endif %}
</p>
<ul class="legend" aria-label="Legend">
{% for item in page.heatmap.legend %}
<li><span class="swatch {{ item.state }}" aria-hidden="true">{{ item.symbol }}</span>
<span title="{{ item.meaning }}">{{ item.label }}</span></li>
{% endfor %}
</ul>
{% if page.heatmap.rows %}
<div class="scroll">
<table class="heatmap" id="heatmap">
<caption class="note">Hover a cell for its week, due date and state; the
legend's symbols mark each state without colour.</caption>
<thead><tr><th scope="col">series</th><th scope="col" title="weeks in the series">N</th>
{%- for week in page.heatmap.columns %}<th scope="col" class="week">{{ week }}</th>{% endfor -%}
<th scope="col" class="notes">notes</th></tr></thead>
<tbody>
{% for row in page.heatmap.rows %}
<tr><th scope="row" title="{{ row.header }}"><code>{{ row.label }}</code></th>
<td class="n">{{ row.length }}</td>
{% for state, symbol, title in row.cells %}
<td class="cell {{ state }}"{% if title %} title="{{ title }}"{% endif %}>{{ symbol }}</td>
{% endfor %}
<td class="notes">{{ row.notes }}{% if row.codes %}; codes:{% endif %}
{% for code in row.codes %} <code>{{ code }}</code>{% endfor %}</td></tr>
{% endfor %}
</tbody>
</table>
</div>
{% else %}
<p>No series: the data holds no recurring member.</p>
{% endif %}
</section>

{% if page.links %}
<section aria-labelledby="links">
<h2 id="links">Link health</h2>
<table class="plain">
<tbody>
{% for name, value in page.links %}
<tr><th scope="row">{{ name }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}
</tbody>
</table>
</section>
{% endif %}

<section aria-labelledby="findings">
<h2 id="findings">Findings by code</h2>
{% if page.findings %}
<p class="note">Each is left untouched; docs/findings.md says what each code means and what to do.</p>
<table class="plain">
<thead><tr><th scope="col">code</th><th scope="col">count</th><th scope="col">documents</th></tr></thead>
<tbody>
{% for group in page.findings %}
<tr><td><code>{{ group.code }}</code></td><td class="num">{{ group.count }}</td><td>
<details><summary>{{ group.documents | length }} listed
{%- if group.more %}, and {{ group.more }} more{% endif %}</summary>
<ul>
{% for item in group.documents %}
<li><code>{{ item.path }}</code>{% if item.series %} <code>[{{ item.series }}]</code>{% endif %}
{%- if item.message %}: {{ item.message }}{% endif %}</li>
{% endfor %}
</ul>
</details>
</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No findings.</p>
{% endif %}
</section>
</main>
</body>
</html>
"""
