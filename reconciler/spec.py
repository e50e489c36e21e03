"""Read a spec file: YAML → JSON Schema check → semantic checks → ``model.Spec``.

The only module that imports ``yaml``. Every problem is reported as ``file:line:column: what; what
to write instead``, all problems at once, and nothing is guessed: a spec either loads whole or not.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import sys
import zoneinfo
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reconciler.errors import SpecError
from reconciler.files import FileProblem, read_regular
from reconciler.model import (
    CadenceRule,
    FillsRule,
    LinkRule,
    NewWeekRule,
    SeriesRule,
    Spec,
    StatusRule,
)

RULE_KINDS = ("series", "cadence", "new_week", "link", "allowed_fills")
REQUIRED_KINDS = ("series", "cadence", "new_week", "allowed_fills")
DEFAULT_MAX_LENGTH = 520  # ten years of weekly weeks; a base asking for more is a finding

Where = tuple[Any, ...]  # a path into the spec document: keys and list indexes

MAX_SPEC_BYTES = 1024 * 1024  # a real spec is a few kilobytes
MAX_NODES = 10_000  # values in a spec, counting each use of an alias; a real spec has ~100
MAX_DEPTH = 64  # levels of nesting; a real spec has 5
MAX_NUMBER_CHARACTERS = 100


def schema() -> dict[str, Any]:
    """The JSON Schema of the spec language, as shipped in the package."""
    text = resources.files("reconciler").joinpath("schema/spec.schema.json").read_text("utf-8")
    return json.loads(text)


def load_spec(path: str | Path) -> Spec:
    shown = _printable(str(path))
    try:
        raw = read_regular(path, limit=MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise SpecError([f"{shown}: spec file not found; pass the path of a YAML spec such as "
                         "specs/checkins.yaml"]) from None
    except FileProblem as problem:
        raise SpecError([f"{shown}: {problem}"]) from problem
    except OSError as error:
        raise SpecError([f"{shown}: cannot read the spec file ({error.strerror})"]) from error
    return parse_spec(raw, str(path))


def parse_spec(raw: bytes, filename: str) -> Spec:
    """A spec from its bytes; ``filename`` names it in messages (and in plans made from it)."""
    shown = _printable(filename)
    if len(raw) > MAX_SPEC_BYTES:  # also the spec a plan file carries, which no file check has seen
        raise SpecError([f"{shown}: is {len(raw):,} bytes, more than the {MAX_SPEC_BYTES:,} bytes a "
                         "spec may have"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([f"{shown}: not UTF-8 text (byte {error.start})"]) from error
    document = _Document(shown, text)
    data = document.load()
    document.check_schema(data)
    checker = _Semantics(document, data)
    spec = checker.build(filename, hashlib.sha256(raw).hexdigest(), text)
    if checker.problems:
        raise SpecError(checker.problems)
    return spec


# -- YAML with positions, bounded ---------------------------------------------------------------------
# A spec is a few hundred values at most. The limits below keep a hostile file (a "billion laughs"
# of nested aliases, thousands of nested brackets, a number of a million digits) to one sentence in
# milliseconds, where an unbounded reader would run for minutes or overflow the stack.

_YAML = "tag:yaml.org,2002:"
_PLAIN_SCALARS = {_YAML + "str": "a string", _YAML + "int": "an integer", _YAML + "float": "a number",
                  _YAML + "bool": "a boolean", _YAML + "null": "null"}
_INT64 = (-(2**63), 2**63 - 1)


class _Refused(Exception):
    """A limit reached while composing, at a YAML mark; becomes a SpecError naming file:line."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer, refusing more than MAX_NODES nodes or MAX_DEPTH levels as it reads, so
    a large or deep file is refused before it is all parsed (and before the composer's recursion
    could exhaust the stack). It records where each alias is written, for messages."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.composed = 0
        self.depth = 0
        self.alias_marks: dict[tuple[int, Any], yaml.Mark] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        self.composed += 1
        if self.composed > MAX_NODES:
            raise _Refused(event.start_mark, f"more than {MAX_NODES:,} values; a spec has a few "
                           "hundred at most")
        if self.depth >= MAX_DEPTH:
            raise _Refused(event.start_mark, f"nested too deeply (more than {MAX_DEPTH} levels); a "
                           "spec needs a few")
        if isinstance(event, yaml.AliasEvent) and parent is not None:
            # Mapping values are indexed by their key node, list items by position.
            key = id(index) if isinstance(index, yaml.Node) else index
            self.alias_marks[(id(parent), key)] = event.start_mark
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@dataclass(slots=True)
class _Document:
    filename: str  # as shown in messages: control characters escaped
    text: str
    marks: dict[Where, tuple[int, int]] = None  # type: ignore[assignment]
    built: int = 0  # nodes built, counting each visit through an alias
    building: set[int] = None  # type: ignore[assignment]  # ids of the nodes on the current path

    def where(self, path: Where) -> str:
        """``file:line:col`` of the deepest node along ``path`` that exists."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark:
                return f"{self.filename}:{mark[0]}:{mark[1]}"
        return self.filename

    def load(self) -> Any:
        self.marks = {}
        self.built = 0
        self.building = set()
        loader = None
        try:
            loader = _BoundedLoader(self.text)
            node = loader.get_single_node()
            if node is None:
                raise SpecError([f"{self.filename}: the spec is empty; start from specs/checkins.yaml"])
            return self._build(loader, node, (), None)
        except _Refused as refused:
            raise SpecError([f"{self._place(refused.mark)}: {refused.message}"]) from None
        except RecursionError:  # a safety net: the limits above stop long before the stack does
            raise SpecError([f"{self.filename}: nested too deeply to read; a spec needs a few levels"]) \
                from None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            place = self._place(mark) if mark else self.filename
            words = _shorten(_printable(str(error.problem or error.context)), 120)
            raise SpecError([f"{place}: malformed YAML: {words}"]) from error
        except yaml.reader.ReaderError as error:
            character = error.character if isinstance(error.character, int) else ord(error.character)
            raise SpecError([f"{self.filename}: not a YAML text: character U+{character:04X} at "
                             f"offset {error.position} is not allowed"]) from error
        except yaml.YAMLError as error:
            words = _shorten(_printable(str(error)), 120)
            raise SpecError([f"{self.filename}: malformed YAML: {words}"]) from error
        finally:
            if loader is not None:
                loader.dispose()

    def _build(self, loader: _BoundedLoader, node: yaml.Node, path: Where, via: yaml.Mark | None) -> Any:
        """Plain data from ``node``. ``via``: where the alias that led here is written, if any (the
        place a reader can act on, rather than the anchor it names)."""
        at = via or node.start_mark
        self.built += 1
        if self.built > MAX_NODES:
            raise SpecError([f"{self._place(at)}: the aliases here expand to more than {MAX_NODES:,} "
                             "values; a spec has a few hundred at most: write them out, or use fewer "
                             "aliases"])
        if len(path) >= MAX_DEPTH:
            raise SpecError([f"{self._place(at)}: nested too deeply (more than {MAX_DEPTH} levels, "
                             "through aliases); a spec needs a few"])
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(loader, node, at)
        wanted = _YAML + ("map" if isinstance(node, yaml.MappingNode) else "seq")
        if node.tag != wanted:
            raise SpecError([f"{self._place(node.start_mark)}: {_tag_problem(node.tag)}"])
        if id(node) in self.building:
            raise SpecError([f"{self._place(at)}: this alias refers to a node that contains it, which "
                             "never ends; write the values out"])
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(loader, node, path, via)
            aliases = loader.alias_marks
            return [self._build(loader, item, (*path, index), via or aliases.get((id(node), index)))
                    for index, item in enumerate(node.value)]
        finally:
            self.building.discard(id(node))

    def _mapping(self, loader: _BoundedLoader, node: yaml.MappingNode, path: Where,
                 via: yaml.Mark | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML + "merge":
                raise SpecError([f"{self._place(key_node.start_mark)}: merge keys (<<) are not "
                                 "supported in a spec; write the keys out"])
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "a mapping" if isinstance(key_node, yaml.MappingNode) else "a list"
                raise SpecError([f"{self._place(key_node.start_mark)}: keys must be strings, found "
                                 f"{kind}"])
            key = self._scalar(loader, key_node, via or key_node.start_mark)
            if not isinstance(key, str):
                raise SpecError([f"{self._place(key_node.start_mark)}: keys must be strings, found "
                                 f"{_yaml_type(key)} {_yaml_value(key)}"])
            if key in result:
                raise SpecError([f"{self._place(key_node.start_mark)}: key {_quote(key)} is named "
                                 "twice in this mapping; keep one"])
            # A key's place is where its name is written, which is where a reader looks.
            self.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            alias = loader.alias_marks.get((id(node), id(key_node)))
            result[sys.intern(key)] = self._build(loader, value_node, (*path, key), via or alias)
        return result

    def _scalar(self, loader: _BoundedLoader, node: yaml.ScalarNode, at: yaml.Mark) -> Any:
        kind = _PLAIN_SCALARS.get(node.tag)
        if kind is None:
            if node.tag == _YAML + "timestamp":
                raise SpecError([f"{self._place(at)}: {_quote(node.value)} is read as a date by "
                                 "YAML, which a spec cannot hold; quote it"])
            raise SpecError([f"{self._place(at)}: {_tag_problem(node.tag)}"])
        if kind in ("an integer", "a number") and len(node.value) > MAX_NUMBER_CHARACTERS:
            # int() of thousands of digits is refused by Python, and of a long 1:2:3 (base 60)
            # takes quadratic time: refuse before constructing.
            raise SpecError([f"{self._place(at)}: a number of {len(node.value)} characters; a spec's "
                             f"numbers have at most {MAX_NUMBER_CHARACTERS}"])
        try:
            value = loader.construct_object(node, deep=True)
        except (ValueError, KeyError, TypeError, ArithmeticError) as error:  # e.g. `!!int abc`
            raise SpecError([f"{self._place(at)}: {_quote(node.value)} is not {kind}"]) from error
        if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
            raise SpecError([f"{self._place(at)}: {_shorten(node.value, 40)} is outside the 64-bit "
                             "range of an integer"])
        # Names are interned, as documents' field names are: lookups then compare identities.
        return sys.intern(value) if isinstance(value, str) else value

    def _place(self, mark: yaml.Mark) -> str:
        return f"{self.filename}:{mark.line + 1}:{mark.column + 1}"

    def check_schema(self, data: Any) -> None:
        validator = jsonschema.Draft202012Validator(schema())
        errors = sorted(validator.iter_errors(data),
                        key=lambda e: (list(map(str, e.absolute_path)), e.message))
        problems = [f"{self.where(_place(e))}: {_printable(_explain(e))}" for e in _leaves(errors)]
        if problems:
            raise SpecError(_unique(problems))


def _leaves(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """For a oneOf or if/then failure, report the specific inner errors, not the wrapper."""
    result = []
    for error in errors:
        if error.context:
            best = jsonschema.exceptions.best_match(error.context)
            result.append(best)
        else:
            result.append(error)
    return result


def _place(error: jsonschema.ValidationError) -> Where:
    """Where to point: at the first unknown key itself, else at the failing value."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed)
        if extra:
            return (*path, extra[0])
    return path


def _explain(error: jsonschema.ValidationError) -> str:
    """A schema error in words, with what to write instead."""
    keyword, sub = error.validator, error.schema
    path = _dotted(error.absolute_path)
    if keyword == "required":
        missing = error.message.split("'")[1]
        hint = sub.get("properties", {}).get(missing, {}).get("description", "")
        return f"{path} is missing the key {missing!r}" + (f" ({hint})" if hint else "")
    if keyword == "additionalProperties" and sub.get("additionalProperties") is False:
        allowed = sorted(sub.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        words = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            words.append(f"unknown key {_quote(key)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if len(words) > 3:
            words = [*words[:3], f"and {len(words) - 3} more"]
        return f"{path}: " + "; ".join(words) + f"; allowed keys: {', '.join(allowed)}"
    if keyword == "enum":
        options = [str(option) for option in sub["enum"]]
        close = difflib.get_close_matches(str(error.instance), options, n=1)
        return (f"{path} is {_yaml_value(error.instance)}, not one of {', '.join(options)}"
                + (f"; did you mean {close[0]!r}?" if close else ""))
    if keyword == "const":
        return f"{path} must be {json.dumps(sub['const'])}, found {_yaml_value(error.instance)}"
    if keyword == "type":
        wanted = sub["type"] if isinstance(sub["type"], str) else " or ".join(sub["type"])
        found = f"{_yaml_type(error.instance)} {_yaml_value(error.instance)}"
        return f"{path} must be {_article(wanted)}, found {found}"
    if keyword in ("minimum", "maximum"):
        bound = "at least" if keyword == "minimum" else "at most"
        return f"{path} must be {bound} {sub[keyword]}, found {error.instance}"
    if keyword in ("minProperties", "maxProperties"):
        hint = sub.get("description", "")
        if keyword == "minProperties":
            return f"{path} must not be empty" + (f" ({hint})" if hint else "")
        return (f"{path} has {len(error.instance)} keys ({_names(error.instance)}), at most "
                f"{sub['maxProperties']} allowed" + (f" ({hint})" if hint else ""))
    if keyword == "minItems":
        return f"{path} must have at least {sub['minItems']} item(s)"
    if keyword == "minLength":
        return f"{path} must not be empty"
    if keyword == "maxLength":
        return (f"{path} is {len(error.instance):,} characters long, more than the "
                f"{sub['maxLength']:,} allowed")
    if keyword == "pattern":
        return f"{path} {_yaml_value(error.instance)} does not match {sub['pattern']}"
    return f"{path}: {_shorten(error.message, 120)}"


def _dotted(path) -> str:
    """``rules[1].every_days``: the spelling a reader can find in the file (a key that is not a plain
    name is quoted: ``fields['my coll']``)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            text += f"[{_quote(part)}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the spec"


_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_.-]{0,39}\Z")


def _printable(text: str) -> str:
    """``text`` with every character that is not printable escaped as Python would (``\\x1b``): a
    file's content never reaches a terminal raw."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _quote(value: Any) -> str:
    """A value from the file, quoted and escaped like a Python literal, shortened past 40 characters."""
    return _shorten(repr(value[:40] if isinstance(value, str) else value), 40)


def _names(names: Any) -> str:
    """Names from the file, as a short list: each shortened, at most five."""
    names = list(names)
    shown = ", ".join(_shorten(str(name), 40) for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _tag_problem(tag: str) -> str:
    shown = "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag
    return (f"the tag {_quote(_printable(shown))} is not allowed in a spec, which holds only strings, "
            "numbers, booleans, null, lists and mappings; remove it")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _yaml_type(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _yaml_value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# -- semantics ---------------------------------------------------------------------------------------


class _Semantics:
    """Checks the schema cannot express; collects every problem, then builds the Spec."""

    def __init__(self, document: _Document, data: dict[str, Any]) -> None:
        self.document = document
        self.data = data
        self.problems: list[str] = []

    def problem(self, path: Where, message: str) -> None:
        self.problems.append(f"{self.document.where(path)}: {_printable(message)}")

    def build(self, source: str, sha256: str, text: str) -> Spec:
        rules = self._rules_by_kind()
        if self.problems:
            raise SpecError(self.problems)
        series = self._series(*rules["series"])
        cadence = self._cadence(*rules["cadence"])
        new_week = self._new_week(*rules["new_week"])
        link = self._link(*rules["link"], series) if "link" in rules else None
        fills = self._fills(*rules["allowed_fills"])
        reference = tuple(self.data.get("reference", ()))
        self._cross_checks(series, cadence, new_week, link, fills, reference, rules)
        return Spec(name=self.data["name"], source=source, sha256=sha256, text=text,
                    reference=reference, series=series, cadence=cadence, new_week=new_week,
                    link=link, fills=fills)

    def _rules_by_kind(self) -> dict[str, tuple[dict[str, Any], Where]]:
        found: dict[str, tuple[dict[str, Any], Where]] = {}
        ids: dict[str, Where] = {}
        for index, rule in enumerate(self.data["rules"]):
            where = ("rules", index)
            kind = rule["kind"]
            if kind not in RULE_KINDS:
                close = difflib.get_close_matches(kind, RULE_KINDS, n=1)
                self.problem((*where, "kind"), f"unknown rule kind {_quote(kind)}"
                             + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" Known kinds: {', '.join(RULE_KINDS)}")
                continue
            if kind in found:
                self.problem((*where, "kind"), f"a second {_quote(kind)} rule; a spec has at most one "
                             f"(the first is at {self.document.where(found[kind][1])})")
            if rule["id"] in ids:
                self.problem((*where, "id"), f"rule id {_quote(rule['id'])} is used twice; ids must be "
                             "unique")
            ids.setdefault(rule["id"], where)
            found.setdefault(kind, (rule, where))
        for kind in REQUIRED_KINDS:
            if kind not in found:
                self.problem(("rules",), f"no {_quote(kind)} rule; add one (see docs/spec.md)")
        return found

    def _distinct(self, where: Where, names: list[str], what: str) -> None:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                self.problem((*where, index), f"{what}: field {_quote(name)} is named twice; keep one")
            seen.add(name)

    def _series(self, rule: dict[str, Any], where: Where) -> SeriesRule:
        key = rule["key"]
        self._distinct((*where, "key"), key, "series key")
        length = rule["length"]
        if length["default"] > length.get("max", DEFAULT_MAX_LENGTH):
            self.problem((*where, "length", "default"), f"length.default ({length['default']}) is "
                         f"more than length.max ({length.get('max', DEFAULT_MAX_LENGTH)}); raise max "
                         "or lower the default")
        if rule["week_field"] in key:
            self.problem((*where, "week_field"), f"week_field {_quote(rule['week_field'])} is also part of "
                         "the series key; a series' weeks must share one key")
        return SeriesRule(id=rule["id"], collection=rule["collection"], key=tuple(key),
                          week_field=rule["week_field"], recurring_flag=rule.get("recurring_flag"),
                          length_field=rule["length"].get("field"),
                          default_length=rule["length"]["default"],
                          max_length=rule["length"].get("max", DEFAULT_MAX_LENGTH),
                          fill_base_week=rule.get("fill_base_week", False))

    def _cadence(self, rule: dict[str, Any], where: Where) -> CadenceRule:
        every_days, every, zone = rule.get("every_days"), rule.get("every"), rule.get("timezone")
        before = len(self.problems)
        if every_days is not None and every is not None:
            self.problem((*where, "every"), "a cadence has every_days (exact 24-hour days in UTC) or "
                         "every (calendar steps), not both; keep one")
        elif every_days is None and every is None:
            self.problem(where, "the cadence rule needs every_days (exact 24-hour days, e.g. "
                         "`every_days: 7`) or every (calendar steps, e.g. `every: {weeks: 1}`)")
        elif zone is not None and every is None:
            self.problem((*where, "timezone"), "timezone applies to `every` only, since every_days "
                         "counts exact 24-hour days in UTC; write `every: {days: N}` to keep the "
                         "local time of day")
        unit, count = next(iter((every or {"days": 1}).items()))  # the schema allows one unit only
        if type(count) is not int:  # JSON Schema takes 2.0 for an integer; a count is written 2
            self.problem((*where, "every", unit), f"{_dotted((*where, 'every', unit))} must be an "
                         f"integer, found a number {_yaml_value(count)}")
        if zone is not None:
            self._timezone(zone, (*where, "timezone"), rule["id"])
        if len(self.problems) > before:  # the spec is refused; a placeholder keeps the other checks going
            return CadenceRule(id=rule["id"], field=rule["field"], every_days=1)
        if every is None:
            return CadenceRule(id=rule["id"], field=rule["field"], every_days=every_days)
        return CadenceRule(id=rule["id"], field=rule["field"], unit=unit, count=count, timezone=zone)

    def _timezone(self, name: str, where: Where, rule_id: str) -> None:
        """An IANA time zone name that this machine's time zone database holds (as ``zoneinfo``
        lists them: not the ``right/`` or ``posix/`` copies some systems add)."""
        if name == "localtime":  # a machine's own zone: the same spec would date weeks differently
            self.problem(where, f"timezone of rule {_quote(rule_id)} is 'localtime', the zone of the "
                         "machine that runs it; write an IANA name such as Europe/London")
        elif name not in _time_zones():
            close = difflib.get_close_matches(name, sorted(_time_zones()), n=1)
            self.problem(where, f"timezone {_quote(name)} of rule {_quote(rule_id)} is not a known IANA "
                         "time zone; " + (f"did you mean {close[0]!r}?" if close else
                                          "write a name such as Europe/London"))

    def _new_week(self, rule: dict[str, Any], where: Where) -> NewWeekRule:
        reset = rule.get("reset", {})
        omit = rule.get("omit", [])
        self._distinct((*where, "omit"), omit, "omit")
        for index, name in enumerate(omit):
            if name in reset:
                self.problem((*where, "omit", index), f"field {_quote(name)} is named twice: in reset and "
                             "in omit; keep it in one of them")
        return NewWeekRule(id=rule["id"], reset=tuple(reset.items()), omit=tuple(omit))

    def _link(self, rule: dict[str, Any], where: Where, series: SeriesRule) -> LinkRule:
        key = rule["key"]
        pairs = [(name, name) for name in key] if isinstance(key, list) else list(key.items())
        self._distinct((*where, "key"), [response for response, _ in pairs], "link key")
        targets = [target for _, target in pairs]
        if sorted(targets) != sorted(series.key) or len(set(targets)) != len(targets):
            self.problem((*where, "key"), f"the link key must name each series key field once "
                         f"({_names(series.key)}), found {_names(targets)}")
        order = {name: index for index, name in enumerate(series.key)}
        pairs.sort(key=lambda pair: order.get(pair[1], len(order)))
        if rule["member_ref"] == rule["response_ref"] and rule["collection"] == series.collection:
            self.problem((*where, "response_ref"), "member_ref and response_ref name the same field")
        copy = rule.get("copy", {})
        status = None
        if "status" in rule:
            raw = rule["status"]
            from_values = raw.get("from", [])
            self._distinct((*where, "status", "from"), from_values, "status from")
            if raw["to"] in from_values:
                self.problem((*where, "status", "to"), f"status 'to' ({_quote(raw['to'])}) is also in "
                             "'from'; a transition must move the status forward")
            if raw["field"] in copy:
                self.problem((*where, "status", "field"), f"field {_quote(raw['field'])} is named twice: "
                             "as the status field and in copy; keep one")
            status = StatusRule(field=raw["field"], to=raw["to"], from_values=tuple(from_values))
        if rule["member_ref"] in copy:
            self.problem((*where, "copy", rule["member_ref"]), f"field {_quote(rule['member_ref'])} is named "
                         "twice: as member_ref and in copy; keep one")
        return LinkRule(id=rule["id"], collection=rule["collection"], key=tuple(pairs),
                        week_field=rule["week_field"], order_by=rule["order_by"],
                        member_ref=rule["member_ref"], response_ref=rule["response_ref"],
                        copy=tuple(copy.items()), status=status)

    def _fills(self, rule: dict[str, Any], where: Where) -> FillsRule:
        fields = rule["fields"]
        for collection, names in fields.items():
            self._distinct((*where, "fields", collection), names, f"allowed fills of {_quote(collection)}")
        return FillsRule(id=rule["id"], fields=tuple((c, tuple(n)) for c, n in fields.items()))

    def _cross_checks(self, series: SeriesRule, cadence: CadenceRule, new_week: NewWeekRule,
                      link: LinkRule | None, fills: FillsRule, reference: tuple[str, ...],
                      rules: dict[str, tuple[dict[str, Any], Where]]) -> None:
        nw_where = rules["new_week"][1]
        engine_set = {series.week_field: "the week", cadence.field: "the cadence date",
                      **{name: "the series key" for name in series.key}}
        for name, _ in new_week.reset:
            if name in engine_set:
                self.problem((*nw_where, "reset", name), f"field {_quote(name)} is {engine_set[name]}, set "
                             "by the engine on every new week; remove it from reset")
        for index, name in enumerate(new_week.omit):
            if name in engine_set:
                self.problem((*nw_where, "omit", index), f"field {_quote(name)} is {engine_set[name]}, "
                             "set by the engine on every new week; remove it from omit")
        if cadence.field in (series.week_field, *series.key):
            self.problem((*rules["cadence"][1], "field"), f"the cadence field {_quote(cadence.field)} is "
                         "also the week field or part of the series key")

        fills_where = (*rules["allowed_fills"][1], "fields")
        needed: list[tuple[str, str, str]] = []
        if series.fill_base_week:
            needed.append((series.collection, series.week_field, "series.fill_base_week"))
        if link is not None:
            link_where = rules["link"][1]
            if link.collection == series.collection:
                self.problem((*link_where, "collection"), "the responses' collection must differ "
                             f"from the series collection {_quote(series.collection)}")
            reset_or_omit = {name for name, _ in new_week.reset} | set(new_week.omit)
            if link.member_ref not in reset_or_omit:
                self.problem((*nw_where,), f"a new week must start unlinked: add {_quote(link.member_ref)} "
                             f"to reset (e.g. `{link.member_ref}: null`) or to omit")
            needed.append((series.collection, link.member_ref, "link.member_ref"))
            needed.extend((series.collection, member, f"link.copy.{member}") for member, _ in link.copy)
            if link.status is not None:
                needed.append((series.collection, link.status.field, "link.status.field"))
            needed.append((link.collection, link.response_ref, "link.response_ref"))
        for collection, name, reason in needed:
            if not fills.allows(collection, name):
                self.problem(fills_where, f"{reason} fills {_shorten(collection, 40)}.{_shorten(name, 40)}, "
                             f"but it is not an allowed fill; add {_quote(name)} to "
                             f"`{_shorten(collection, 40)}:` in allowed_fills")
        writable = {series.collection} | ({link.collection} if link else set())
        for collection, _ in fills.fields:
            if collection not in writable:
                self.problem((*fills_where, collection), f"{_quote(collection)} is not a collection this "
                             f"spec writes ({_names(sorted(writable))}); remove it")
        for index, name in enumerate(reference):
            if name in writable:
                self.problem(("reference", index), f"{_quote(name)} is written by a rule; reference "
                             "collections are read only")
