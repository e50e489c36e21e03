"""A sharded plan: the plan a pipeline writes (``reconcile plan --runner beam --out DIR``). Pure.

A plan too large for one file, or written by many workers at once, is a directory: ``manifest.json``
holds what a plan file holds but its ops and findings (the spec and its sha256, the source, the read
time, the summary), and names each shard with its sha256 and number of lines; each shard holds one
op, or one finding, per line, in the plan file's form. ``assemble`` turns the manifest and the
shards' bytes into the same ``Plan`` a plan file gives, so ``apply``, ``show`` and the renderers read
either alike. A shard that is missing, altered, renamed out of the directory or holds an op twice,
or a summary its shards do not give, makes the whole plan unreadable: nothing is applied from a
plan that is not the one written.

A pipeline's apply reads the plan by its manifest alone (``ShardedPlan``) and each shard where it is
processed, one line at a time: ``decode_line``, ``shard_problem`` and ``summary_problem`` are the
same checks ``assemble`` makes, in the same words, for a reader that never holds the whole plan.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from reconciler.errors import PlanFileError
from reconciler.formats import PLAN, PLAN_MANIFEST, check_version
from reconciler.model import Finding, Op, Plan, Summary, summarize
from reconciler.plan import (
    decode_finding,
    decode_op,
    each_document_once,
    finding_to_data,
    op_to_data,
    plan_from_data,
    plan_to_data,
    strict_json,
)

MANIFEST = "manifest.json"
KINDS = ("ops", "findings")
_SHARD = re.compile(r"(ops|findings)-[0-9]{5}-of-[0-9]{5}\.jsonl\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class Shard:
    kind: str  # "ops" or "findings"
    name: str  # a file name in the plan's directory
    sha256: str
    lines: int


@dataclass(frozen=True, slots=True)
class Manifest:
    header: Plan  # the plan without its ops and findings
    shards: tuple[Shard, ...]
    runner: str
    summary: Summary  # the counts the manifest states; its shards must give the same

    @property
    def ops(self) -> int:
        """How many ops the shards hold (each shard's line count is checked when it is read)."""
        return sum(shard.lines for shard in self.shards if shard.kind == "ops")


@dataclass(frozen=True, slots=True)
class ShardedPlan:
    """A sharded plan known by its manifest alone, for a reader that reads the shards elsewhere (a
    pipeline's workers): where it is, the manifest, and the sha256 of the manifest's bytes, which
    names the whole plan (the manifest names each shard by its sha256)."""

    directory: str
    manifest: Manifest
    sha256: str

    @property
    def header(self) -> Plan:
        return self.manifest.header


def shard_name(kind: str, index: int, count: int) -> str:
    return f"{kind}-{index:05d}-of-{count:05d}.jsonl"


def op_line(op: Op) -> bytes:
    return orjson.dumps(op_to_data(op), option=orjson.OPT_SORT_KEYS) + b"\n"


def finding_line(finding: Finding) -> bytes:
    return orjson.dumps(finding_to_data(finding), option=orjson.OPT_SORT_KEYS) + b"\n"


def manifest_bytes(header: Plan, shards: Iterable[Shard], runner: str,
                   summary: Mapping[str, int]) -> bytes:
    """The manifest of a plan whose ops and findings are in ``shards``; ``summary`` counts them
    as a plan file's summary does (the reader recomputes it from the shards)."""
    data = plan_to_data(replace(header, ops=(), findings=()))
    del data["ops"], data["findings"]
    data.update(format=PLAN_MANIFEST.name, format_version=PLAN_MANIFEST.version, runner=runner,
                summary={**data["summary"], **summary},
                shards=[{"kind": s.kind, "name": s.name, "sha256": s.sha256, "lines": s.lines}
                        for s in sorted(shards, key=lambda s: (s.kind, s.name))])
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def parse_manifest(data: Any, where: str) -> Manifest:
    """The manifest's header and shard list, every field checked; PlanFileError naming ``where``."""
    check_version(data, where, PLAN_MANIFEST, PlanFileError)
    shards_raw, runner = data.get("shards"), data.get("runner")
    if not isinstance(runner, str) or not runner:
        raise PlanFileError(f'{where}: "runner" must be a non-empty string')
    if type(shards_raw) is not list:
        raise PlanFileError(f'{where}: "shards" must be a list of {{"kind", "name", "sha256", "lines"}}')
    shards = tuple(_shard(raw, index, where) for index, raw in enumerate(shards_raw))
    names = [shard.name for shard in shards]
    if len(set(names)) != len(names):
        raise PlanFileError(f"{where}: a shard is listed twice; make a new plan with `reconcile plan --out`")
    summary = _summary(data.get("summary"), where)
    header_data = {key: value for key, value in data.items() if key not in ("shards", "runner")}
    header_data.update(format=PLAN.name, format_version=PLAN.version, ops=[], findings=[])
    return Manifest(header=plan_from_data(header_data, where), shards=shards, runner=runner,
                    summary=summary)


def _summary(raw: Any, where: str) -> Summary:
    names = ("create", "link", "fill", "findings")
    if type(raw) is not dict or any(type(raw.get(name)) is not int or raw[name] < 0 for name in names):
        raise PlanFileError(f'{where}: "summary" must hold "create", "link", "fill" and "findings" as whole '
                            "numbers; make a new plan with `reconcile plan --out`")
    return Summary(**{name: raw[name] for name in names})


def _shard(raw: Any, index: int, where: str) -> Shard:
    place = f"{where}: shards[{index}]"
    if type(raw) is not dict or set(raw) != {"kind", "name", "sha256", "lines"}:
        raise PlanFileError(f'{place} must be an object with "kind", "name", "sha256" and "lines"')
    name, sha256, lines = raw["name"], raw["sha256"], raw["lines"]
    # A plain file name of the form the pipeline writes: never a path out of the plan's directory.
    if not isinstance(name, str) or not _SHARD.match(name) or not name.startswith(f"{raw['kind']}-"):
        raise PlanFileError(f"{place}.name must be a shard's file name in the plan's directory "
                            "(ops-00000-of-00004.jsonl, findings-…)")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise PlanFileError(f"{place}.sha256 must be 64 hexadecimal digits")
    if type(lines) is not int or lines < 0:
        raise PlanFileError(f"{place}.lines must be a whole number")
    return Shard(kind=raw["kind"], name=name, sha256=sha256, lines=lines)


def assemble(manifest: Manifest, contents: Mapping[str, bytes], where: str) -> Plan:
    """The plan: the manifest's header with the ops and findings of ``contents`` (each shard's
    bytes by name), each shard checked against its sha256 and line count first. Ops are sorted by
    path and findings by their sort key, as a plan file holds them."""
    ops: list[Op] = []
    findings: list[Finding] = []
    for shard in manifest.shards:
        data = contents[shard.name]
        lines = data.splitlines()
        problem = shard_problem(shard, hashlib.sha256(data).hexdigest(), len(lines), where)
        if problem:
            raise PlanFileError(problem)
        for number, line in enumerate(lines, 1):
            item = decode_line(shard, line, number, where)
            if isinstance(item, Finding):
                findings.append(item)
            else:
                ops.append(item)
    ops.sort(key=lambda op: op.path)
    findings.sort(key=lambda f: f.sort_key)
    try:
        each_document_once(tuple(ops))
    except ValueError as error:
        raise PlanFileError(f"{where}: {error}; make a new plan with `reconcile plan --out`") from None
    problem = summary_problem(manifest, summarize(ops, len(findings)), where)
    if problem:
        raise PlanFileError(problem)
    return replace(manifest.header, ops=tuple(ops), findings=tuple(findings))


def shard_problem(shard: Shard, sha256: str, lines: int, where: str) -> str | None:
    """Why a shard read as ``sha256`` with ``lines`` lines is not the one the manifest names."""
    if sha256 != shard.sha256:
        return (f"{where}/{shard.name}: the shard's sha256 is {sha256[:12]}, the manifest says "
                f"{shard.sha256[:12]}: it was changed after the plan was written; make a new plan with "
                "`reconcile plan --out`")
    if lines != shard.lines:
        return f"{where}/{shard.name}: {lines} lines, the manifest says {shard.lines}"
    return None


def unreadable_shard(shard: Shard, reason: str, where: str) -> str:
    return (f"{where}/{shard.name}: the manifest names this shard but it cannot be read ({reason}); the "
            "plan is incomplete, make a new one")


def decode_line(shard: Shard, line: bytes, number: int, where: str) -> Op | Finding:
    """Line ``number`` of ``shard``: an op or a finding in the plan file's form; PlanFileError naming
    the shard and the line otherwise."""
    try:
        raw = strict_json(line.decode("utf-8"))
        return decode_op(raw, number - 1) if shard.kind == "ops" else decode_finding(raw, number - 1)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        what = "an op" if shard.kind == "ops" else "a finding"
        raise PlanFileError(f"{where}/{shard.name}:{number}: not {what} of a plan ({error})") from None


def summary_problem(manifest: Manifest, counted: Summary, where: str) -> str | None:
    """Why the manifest's summary is not what its shards hold (``counted``), if it is not: a
    reader that shows the manifest's counts before it reads the shards relies on them."""
    stated = manifest.summary
    if counted == stated:
        return None
    return (f"{where}/{MANIFEST}: its summary says {stated.create} to create, {stated.link} to link, "
            f"{stated.fill} to fill and {stated.findings} findings; its shards hold {counted.create}, "
            f"{counted.link}, {counted.fill} and {counted.findings}: the manifest was changed after the "
            "plan was written; make a new plan with `reconcile plan --out`")


def unreadable_plan(problems: Sequence[str], more: int = 0) -> str:
    """The one sentence that refuses a sharded plan whose shards are not the ones written."""
    beyond = f" (and {more} more)" if more else ""
    return f"refusing the whole plan, nothing was written: {'; '.join(problems)}{beyond}"
