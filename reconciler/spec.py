"""Read a spec file: YAML → JSON Schema check → semantic checks → ``model.Spec``.

The only module that imports ``yaml``. Every problem is reported as ``file:line:column: what; what
to write instead``, all problems at once, and nothing is guessed: a spec either loads whole or not.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reconciler.errors import SpecError
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


def schema() -> dict[str, Any]:
    """The JSON Schema of the spec language, as shipped in the package."""
    text = resources.files("reconciler").joinpath("schema/spec.schema.json").read_text("utf-8")
    return json.loads(text)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found; pass the path of a YAML spec such as "
                         "specs/checkins.yaml"]) from None
    except OSError as error:
        raise SpecError([f"{path}: cannot read the spec file ({error.strerror})"]) from error
    return parse_spec(raw, str(path))


def parse_spec(raw: bytes, filename: str) -> Spec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([f"{filename}: not UTF-8 text (byte {error.start})"]) from error
    document = _Document(filename, text)
    data = document.load()
    document.check_schema(data)
    checker = _Semantics(document, data)
    spec = checker.build(hashlib.sha256(raw).hexdigest(), text)
    if checker.problems:
        raise SpecError(checker.problems)
    return spec


# -- YAML with positions -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Document:
    filename: str
    text: str
    marks: dict[Where, tuple[int, int]] = None  # type: ignore[assignment]

    def where(self, path: Where) -> str:
        """``file:line:col`` of the deepest node along ``path`` that exists."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark:
                return f"{self.filename}:{mark[0]}:{mark[1]}"
        return self.filename

    def load(self) -> Any:
        self.marks = {}
        loader = None
        try:
            loader = yaml.SafeLoader(self.text)
            node = loader.get_single_node()
            if node is None:
                raise SpecError([f"{self.filename}: the spec is empty; start from specs/checkins.yaml"])
            return self._build(loader, node, ())
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            place = f"{self.filename}:{mark.line + 1}:{mark.column + 1}" if mark else self.filename
            raise SpecError([f"{place}: malformed YAML: {error.problem or error.context}"]) from error
        except yaml.reader.ReaderError as error:
            raise SpecError([f"{self.filename}: not a YAML text: character {error.character!r} at "
                             f"offset {error.position} is not allowed"]) from error
        except yaml.YAMLError as error:
            raise SpecError([f"{self.filename}: malformed YAML: {error}"]) from error
        finally:
            if loader is not None:
                loader.dispose()

    def _build(self, loader: yaml.SafeLoader, node: yaml.Node, path: Where) -> Any:
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise SpecError([f"{self._at(key_node)}: keys must be strings, found {key!r}"])
                if key in result:
                    raise SpecError([f"{self._at(key_node)}: key {key!r} is named twice in this "
                                     "mapping; keep one"])
                # A key's place is where its name is written, which is where a reader looks.
                self.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[sys.intern(key)] = self._build(loader, value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._build(loader, item, (*path, index)) for index, item in enumerate(node.value)]
        value = loader.construct_object(node, deep=True)
        # Names are interned, as documents' field names are: lookups then compare identities.
        return sys.intern(value) if isinstance(value, str) else value

    def _at(self, node: yaml.Node) -> str:
        return f"{self.filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def check_schema(self, data: Any) -> None:
        validator = jsonschema.Draft202012Validator(schema())
        errors = sorted(validator.iter_errors(data),
                        key=lambda e: (list(map(str, e.absolute_path)), e.message))
        problems = [f"{self.where(_place(e))}: {_explain(e)}" for e in _leaves(errors)]
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
            words.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
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
    if keyword == "minItems":
        return f"{path} must have at least {sub['minItems']} item(s)"
    if keyword == "minLength":
        return f"{path} must not be empty"
    if keyword == "pattern":
        return f"{path} {_yaml_value(error.instance)} does not match {sub['pattern']}"
    return f"{path}: {error.message}"


def _dotted(path) -> str:
    """``rules[1].every_days``: the spelling a reader can find in the file."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the spec"


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


# -- semantics ---------------------------------------------------------------------------------------


class _Semantics:
    """Checks the schema cannot express; collects every problem, then builds the Spec."""

    def __init__(self, document: _Document, data: dict[str, Any]) -> None:
        self.document = document
        self.data = data
        self.problems: list[str] = []

    def problem(self, path: Where, message: str) -> None:
        self.problems.append(f"{self.document.where(path)}: {message}")

    def build(self, sha256: str, text: str) -> Spec:
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
        return Spec(name=self.data["name"], source=self.document.filename, sha256=sha256, text=text,
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
                self.problem((*where, "kind"), f"unknown rule kind {kind!r}"
                             + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" Known kinds: {', '.join(RULE_KINDS)}")
                continue
            if kind in found:
                self.problem((*where, "kind"), f"a second {kind!r} rule; a spec has at most one "
                             f"(the first is at {self.document.where(found[kind][1])})")
            if rule["id"] in ids:
                self.problem((*where, "id"), f"rule id {rule['id']!r} is used twice; ids must be unique")
            ids.setdefault(rule["id"], where)
            found.setdefault(kind, (rule, where))
        for kind in REQUIRED_KINDS:
            if kind not in found:
                self.problem(("rules",), f"no {kind!r} rule; add one (see docs/spec.md)")
        return found

    def _distinct(self, where: Where, names: list[str], what: str) -> None:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                self.problem((*where, index), f"{what}: field {name!r} is named twice; keep one")
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
            self.problem((*where, "week_field"), f"week_field {rule['week_field']!r} is also part of "
                         "the series key; a series' weeks must share one key")
        return SeriesRule(id=rule["id"], collection=rule["collection"], key=tuple(key),
                          week_field=rule["week_field"], recurring_flag=rule.get("recurring_flag"),
                          length_field=rule["length"].get("field"),
                          default_length=rule["length"]["default"],
                          max_length=rule["length"].get("max", DEFAULT_MAX_LENGTH),
                          fill_base_week=rule.get("fill_base_week", False))

    def _cadence(self, rule: dict[str, Any], where: Where) -> CadenceRule:
        return CadenceRule(id=rule["id"], field=rule["field"], every_days=rule["every_days"])

    def _new_week(self, rule: dict[str, Any], where: Where) -> NewWeekRule:
        reset = rule.get("reset", {})
        omit = rule.get("omit", [])
        self._distinct((*where, "omit"), omit, "omit")
        for index, name in enumerate(omit):
            if name in reset:
                self.problem((*where, "omit", index), f"field {name!r} is named twice: in reset and "
                             "in omit; keep it in one of them")
        return NewWeekRule(id=rule["id"], reset=tuple(reset.items()), omit=tuple(omit))

    def _link(self, rule: dict[str, Any], where: Where, series: SeriesRule) -> LinkRule:
        key = rule["key"]
        pairs = [(name, name) for name in key] if isinstance(key, list) else list(key.items())
        self._distinct((*where, "key"), [response for response, _ in pairs], "link key")
        targets = [target for _, target in pairs]
        if sorted(targets) != sorted(series.key) or len(set(targets)) != len(targets):
            self.problem((*where, "key"), f"the link key must name each series key field once "
                         f"({', '.join(series.key)}), found {', '.join(targets)}")
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
                self.problem((*where, "status", "to"), f"status 'to' ({raw['to']!r}) is also in "
                             "'from'; a transition must move the status forward")
            if raw["field"] in copy:
                self.problem((*where, "status", "field"), f"field {raw['field']!r} is named twice: "
                             "as the status field and in copy; keep one")
            status = StatusRule(field=raw["field"], to=raw["to"], from_values=tuple(from_values))
        if rule["member_ref"] in copy:
            self.problem((*where, "copy", rule["member_ref"]), f"field {rule['member_ref']!r} is named "
                         "twice: as member_ref and in copy; keep one")
        return LinkRule(id=rule["id"], collection=rule["collection"], key=tuple(pairs),
                        week_field=rule["week_field"], order_by=rule["order_by"],
                        member_ref=rule["member_ref"], response_ref=rule["response_ref"],
                        copy=tuple(copy.items()), status=status)

    def _fills(self, rule: dict[str, Any], where: Where) -> FillsRule:
        fields = rule["fields"]
        for collection, names in fields.items():
            self._distinct((*where, "fields", collection), names, f"allowed fills of {collection}")
        return FillsRule(id=rule["id"], fields=tuple((c, tuple(n)) for c, n in fields.items()))

    def _cross_checks(self, series: SeriesRule, cadence: CadenceRule, new_week: NewWeekRule,
                      link: LinkRule | None, fills: FillsRule, reference: tuple[str, ...],
                      rules: dict[str, tuple[dict[str, Any], Where]]) -> None:
        nw_where = rules["new_week"][1]
        engine_set = {series.week_field: "the week", cadence.field: "the cadence date",
                      **{name: "the series key" for name in series.key}}
        for name, _ in new_week.reset:
            if name in engine_set:
                self.problem((*nw_where, "reset", name), f"field {name!r} is {engine_set[name]}, set "
                             "by the engine on every new week; remove it from reset")
        for index, name in enumerate(new_week.omit):
            if name in engine_set:
                self.problem((*nw_where, "omit", index), f"field {name!r} is {engine_set[name]}, set by "
                             "the engine on every new week; remove it from omit")
        if cadence.field in (series.week_field, *series.key):
            self.problem((*rules["cadence"][1], "field"), f"the cadence field {cadence.field!r} is "
                         "also the week field or part of the series key")

        fills_where = (*rules["allowed_fills"][1], "fields")
        needed: list[tuple[str, str, str]] = []
        if series.fill_base_week:
            needed.append((series.collection, series.week_field, "series.fill_base_week"))
        if link is not None:
            link_where = rules["link"][1]
            if link.collection == series.collection:
                self.problem((*link_where, "collection"), "the responses' collection must differ "
                             f"from the series collection {series.collection!r}")
            reset_or_omit = {name for name, _ in new_week.reset} | set(new_week.omit)
            if link.member_ref not in reset_or_omit:
                self.problem((*nw_where,), f"a new week must start unlinked: add {link.member_ref!r} "
                             f"to reset (e.g. `{link.member_ref}: null`) or to omit")
            needed.append((series.collection, link.member_ref, "link.member_ref"))
            needed.extend((series.collection, member, f"link.copy.{member}") for member, _ in link.copy)
            if link.status is not None:
                needed.append((series.collection, link.status.field, "link.status.field"))
            needed.append((link.collection, link.response_ref, "link.response_ref"))
        for collection, name, reason in needed:
            if not fills.allows(collection, name):
                self.problem(fills_where, f"{reason} fills {collection}.{name}, but it is not an "
                             f"allowed fill; add {name!r} to `{collection}:` in allowed_fills")
        writable = {series.collection} | ({link.collection} if link else set())
        for collection, _ in fills.fields:
            if collection not in writable:
                self.problem((*fills_where, collection), f"{collection!r} is not a collection this "
                             f"spec writes ({', '.join(sorted(writable))}); remove it")
        for index, name in enumerate(reference):
            if name in writable:
                self.problem(("reference", index), f"{name!r} is written by a rule; reference "
                             "collections are read only")
