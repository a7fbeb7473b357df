"""Strict reading of a lockfile: its schema's verdict, JSON's own limits, and where.

The schema (``published.LOCKFILE_SCHEMA``, published as
``schemas/lockfile.schema.json``) is the single description of the format. A plan
reads the whole lockfile every time, so the verdict comes from a compiled
validator (jsonschema-rs; pure-Python validators take seconds to tens of seconds
over 100,000 entries, see docs/design.md). Only a refused document is walked
again here, to name its first defect in imgspec's words; ``tests/unit/test_lockfile.py``
holds the verdicts to jsonschema's. A defect is described with the file, line,
entry and field, and what to do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from typing import Any

from pipeline.core.lock.published import LOCKFILE_SCHEMA

# --- strict reading: the schema's verdict, explained ---------------------------------------

_RESTORE_FILE = ("restore it from git (git checkout -- FILE), or delete it to start afresh "
                 "(recorded work would then be redone and paid again)")
_FIX_ENTRY = ("restore the lockfile from git (git checkout -- FILE), or delete that entry "
              "(its instance is then planned afresh, and paid again)")
Where = tuple[str | int, ...]  # a path into the JSON document: keys and indexes


@dataclass(frozen=True, slots=True)
class Defect:
    """One way a document breaks the lockfile schema: where (a JSON path) and what."""

    where: Where
    what: str

    def within(self, step: str | int) -> Defect:
        """The same defect seen from the parent of ``step``."""
        return Defect((step, *self.where), self.what)


class DefectError(ValueError):
    """A lockfile entry (or journal record) breaks the schema; ``defect`` says where."""

    def __init__(self, defect: Defect) -> None:
        self.defect = defect
        super().__init__(f"{describe_where(defect.where) or 'entry'}: {defect.what}")


class JsonProblem(ValueError):
    """Text that is not JSON imgspec can read; ``pos`` is its offset when known."""

    def __init__(self, what: str, pos: int | None) -> None:
        self.what = what
        self.pos = pos
        super().__init__(what)


def check_stored_path(path: str) -> str | None:
    """Why ``path`` cannot be an output path stored in a lockfile, or ``None`` if it can.

    Stored paths are relative to the lockfile's folder with ``/`` separators, and
    start with ``..`` segments when the outputs are beside (not below) that folder
    (``../outputs/shop/gen/x/0.png`` for a manifest in ``manifests/``). Anything
    else with ``.``/``..`` segments, absolute paths, backslashes and control
    characters are never written by imgspec. This is the lockfile schema's
    ``$defs.output.properties.path.pattern`` spelt out, with reasons; a test holds
    the two together. Confining a path to the output folder is the job of its user.
    """
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute; stored paths are relative to the lockfile's folder"
    if "\\" in path:
        return "contains a backslash; stored paths use / between folders"
    if "\x00" in path:
        return "contains a NUL character"
    if any(ch < " " for ch in path):
        return "contains a control character"
    parts = path.split("/")
    leading = 0
    while leading < len(parts) and parts[leading] == "..":
        leading += 1
    if leading == len(parts):
        return "names no file, only '..' segments"
    for part in parts[leading:]:
        if part == "":
            return "has an empty segment ('//' or a trailing '/')"
        if part in (".", ".."):
            return (f"has a '{part}' segment after its start; only leading '..' segments "
                    "are written by imgspec")
    return None


Check = Callable[[Any], Defect | None]
_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "$defs", "$comment",
                          "default", "examples"})
_KEYWORDS = frozenset({"$ref", "type", "const", "enum", "minimum", "maximum", "minLength",
                       "maxLength", "pattern", "items", "properties", "required",
                       "additionalProperties", "propertyNames", "allOf", "if", "then",
                       "else"})
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties",
                              "propertyNames"})
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "object": "an object", "array": "an array", "null": "null",
               "boolean": "true or false"}


def _is_type(kind: str, value: Any) -> bool:
    """JSON Schema's type test, with jsonschema's meaning (true is no integer, 2.0 is one),
    except that NaN and infinities are no numbers (as the validator also holds)."""
    if kind == "string":
        return type(value) is str
    if kind == "integer":
        return type(value) is int or (type(value) is float and value.is_integer())
    if kind == "number":
        return type(value) is int or (type(value) is float and math.isfinite(value))
    if kind == "object":
        return type(value) is dict
    if kind == "array":
        return type(value) is list
    if kind == "null":
        return value is None
    return type(value) is bool


def compile_schema(schema: Mapping[str, Any], *, node: Mapping[str, Any] | None = None,
                   explain: Mapping[str, Callable[[str], str | None]] | None = None) -> Check:
    """One check of (a ``node`` of) a JSON Schema, returning the first defect or ``None``.

    The verdict is jsonschema-rs's (a compiled validator, Draft 2020-12, several
    times faster than pure-Python validators over a lockfile of 100,000 entries).
    Only a document it refuses is walked again, here, to say where and why in
    imgspec's words, in one fixed order (the schema's keywords, then the document's
    fields), so that a file with several defects always reports the same one.
    Only the keywords the lockfile schema uses are supported; any other keyword is a
    ``ValueError`` here, so the schema cannot gain a rule the explanation would skip.
    ``explain`` maps a ``pattern`` to a function giving the reason a string does not
    match it.
    """
    import jsonschema_rs  # on first use: a command that reads no lockfile does not load it

    target = schema if node is None else node
    _Explainer.supported(schema, target, set())
    validator = jsonschema_rs.validator_for(dict(schema) if node is None else
                                            {**_definitions(schema), **node})
    explainer = _Explainer(schema, explain or {})

    def check(value: Any) -> Defect | None:
        try:
            if validator.is_valid(value):
                return None
        except (ValueError, TypeError, OverflowError, RecursionError):
            pass  # a value the validator cannot take in: the walk below decides alone
        return explainer.first(target, value) or _reported(validator, value)

    return check


def _definitions(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``schema`` that a node of it needs to be validated alone."""
    return {key: schema[key] for key in ("$schema", "$id", "$defs") if key in schema}


def _reported(validator: Any, value: Any) -> Defect | None:
    """The validator's own first error, should the walk find none (their rules differ)."""
    import jsonschema_rs

    try:
        validator.validate(value)
    except jsonschema_rs.ValidationError as exc:
        return Defect(tuple(exc.instance_path), exc.message)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    return None


class _Explainer:
    """Walks a schema node over a refused value and names its first defect."""

    def __init__(self, schema: Mapping[str, Any],
                 explain: Mapping[str, Callable[[str], str | None]]) -> None:
        self.schema = schema
        self.explain = explain
        self.patterns: dict[str, Callable[[str], Any]] = {}
        self.validators: dict[str, Any] = {}  # by $ref: a valid part is skipped at once

    @staticmethod
    def supported(schema: Mapping[str, Any], node: Mapping[str, Any], seen: set[int]) -> None:
        """Raise ``ValueError`` for a keyword (or ``$ref``) the walk does not implement."""
        if id(node) in seen:
            return
        seen.add(id(node))
        unknown = set(node) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise ValueError(f"the lockfile reader does not support {sorted(unknown)}")
        parts: list[Any] = [*node.get("properties", {}).values(), *node.get("allOf", ())]
        parts += [node[k] for k in ("items", "propertyNames", "if", "then", "else",
                                    "additionalProperties") if k in node]
        if "$ref" in node:
            parts.append(_Explainer.target(schema, node["$ref"]))
        for part in parts:
            if isinstance(part, Mapping):
                _Explainer.supported(schema, part, seen)

    @staticmethod
    def target(schema: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        found: Mapping[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
        return found

    def first(self, node: Mapping[str, Any], v: Any) -> Defect | None:
        """The first way ``v`` breaks ``node``, its ``where`` relative to ``v``."""
        ref = node.get("$ref")
        if ref is not None and not self.accepts(ref, v) and (
                found := self.first(self.target(self.schema, ref), v)) is not None:
            return found
        types = node.get("type")
        names = [types] if isinstance(types, str) else list(types or ())
        if names and not any(_is_type(name, v) for name in names):
            wanted = " or ".join(_TYPE_NAMES[name] for name in names)
            return Defect((), f"must be {wanted} (found {show(v)})")

        def applies(kind: str) -> bool:
            """Whether a keyword for ``kind`` applies (always when the type is known)."""
            if names == [kind] or (kind == "number" and names in (["integer"], ["number"])):
                return True
            if kind == "number":
                return type(v) is int or type(v) is float
            return _is_type(kind, v)

        for keyword in ("const", "enum"):
            if keyword in node:
                allowed = [node[keyword]] if keyword == "const" else list(node[keyword])
                if not any(_same(v, a) for a in allowed):
                    listed = ", ".join(json.dumps(a, ensure_ascii=False) for a in allowed)
                    must = f"must be {listed}" if len(allowed) == 1 else \
                        f"must be one of {listed}"
                    return Defect((), f"{must} (found {show(v)})")
        for keyword, words in (("minimum", "at least"), ("maximum", "at most")):
            if keyword in node and applies("number"):
                bound = node[keyword]
                if v < bound if keyword == "minimum" else v > bound:
                    return Defect((), f"must be {words} {bound} (found {show(v)})")
        if "minLength" in node and applies("string") and len(v) < node["minLength"]:
            low = node["minLength"]
            return Defect((), "must not be empty" if low == 1 else
                          f"must be at least {low} characters")
        if "maxLength" in node and applies("string") and len(v) > node["maxLength"]:
            return Defect((), f"must be at most {node['maxLength']} characters")
        if "pattern" in node and applies("string") and not self.search(node["pattern"], v):
            return Defect((), f"{show(v)} {self.reason(node, v)}")
        if _OBJECT_KEYWORDS & set(node) and applies("object"):
            found = self.first_in_object(node, v)
            if found is not None:
                return found
        if "items" in node and applies("array"):
            for index, item in enumerate(v):
                if (found := self.first(node["items"], item)) is not None:
                    return found.within(index)
        for part in node.get("allOf", ()):
            if (found := self.first(part, v)) is not None:
                return found
        return self.first_conditional(node, v)

    def accepts(self, ref: str, v: Any) -> bool:
        """Whether the validator accepts ``v`` for the definition ``ref`` names: the walk
        then skips it (an entry among 100,000 in microseconds, not tens of them)."""
        import jsonschema_rs

        if ref not in self.validators:
            self.validators[ref] = jsonschema_rs.validator_for(
                {**_definitions(self.schema), "$ref": ref})
        try:
            return bool(self.validators[ref].is_valid(v))
        except (ValueError, TypeError, OverflowError, RecursionError):
            return False

    def first_in_object(self, node: Mapping[str, Any], v: dict[str, Any]) -> Defect | None:
        properties: Mapping[str, Any] = node.get("properties", {})
        required = set(node.get("required", ()))
        for name in sorted(required - set(properties)):  # those with a schema: below
            if name not in v:
                return Defect((name,), "is missing (it is required)")
        if "propertyNames" in node:
            for key in v:
                if (found := self.first(node["propertyNames"], key)) is not None:
                    return Defect((key,), f"is not a valid key: it {found.what}")
        extra = node.get("additionalProperties", True)
        if extra is False:
            unknown = next((key for key in v if key not in properties), None)
            if unknown is not None:
                return Defect((unknown,), "is not a field of this format (misspelt, or "
                                          "written by a newer imgspec?)")
        elif extra not in (True, {}):
            for key, item in v.items():
                if key not in properties and (found := self.first(extra, item)) is not None:
                    return found.within(key)
        for name, sub in properties.items():
            if name not in v:
                if name in required:
                    return Defect((name,), "is missing (it is required)")
                continue
            if (found := self.first(sub, v[name])) is not None:
                return found.within(name)
        return None

    def first_conditional(self, node: Mapping[str, Any], v: Any) -> Defect | None:
        if "if" not in node:
            return None
        # A conditional rule's description says why it holds: the message quotes it.
        about = str(node.get("description", "")).rstrip(".")
        why = f" ({about[0].lower()}{about[1:]})" if about else ""
        branch = "then" if self.first(node["if"], v) is None else "else"
        if branch in node and (found := self.first(node[branch], v)) is not None:
            return Defect(found.where, found.what + why)
        return None

    def search(self, pattern: str, text: str) -> bool:
        if pattern not in self.patterns:
            self.patterns[pattern] = re.compile(pattern).search  # search, as validators do
        return self.patterns[pattern](text) is not None

    def reason(self, node: Mapping[str, Any], text: str) -> str:
        """Why ``text`` does not match ``node``'s pattern, in words."""
        explained = self.explain.get(node["pattern"])
        reason = explained(text) if explained is not None else None
        if reason is not None:
            return reason
        about = str(node.get("description", "")).rstrip(".")
        return (f"does not have the expected form ({about})" if about
                else f"does not match the pattern {node['pattern']}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1 (as jsonschema's ``const``/``enum`` compare)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


@cache
def _checks() -> tuple[Check, Check, Check]:
    """The compiled lockfile schema, its entry and its retired record (compiled on first
    use)."""
    schema = LOCKFILE_SCHEMA
    explain = {schema["$defs"]["output"]["properties"]["path"]["pattern"]: check_stored_path}
    return (compile_schema(schema, explain=explain),
            compile_schema(schema, node=schema["$defs"]["entry"], explain=explain),
            compile_schema(schema, node=schema["$defs"]["retired"], explain=explain))


def lockfile_defect(data: Any) -> Defect | None:
    """The first way decoded lockfile JSON breaks the schema, or ``None`` if it is valid."""
    return _checks()[0](data)


def entry_defect(raw: Any) -> Defect | None:
    """The first way one decoded entry breaks the schema's entry definition, or ``None``."""
    return _checks()[1](raw)


def retired_defect(raw: Any) -> Defect | None:
    """The first way one decoded ``retired`` record breaks the schema, or ``None``."""
    return _checks()[2](raw)


# --- strict reading: JSON that Python reads but JSON does not allow ------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def load_json(text: str) -> tuple[Any, bool]:
    """Decode JSON text; (value, suspicious). ``JsonProblem`` if it is not JSON at all.

    Python's decoder also accepts NaN, Infinity and lone UTF-16 surrogates (and turns
    1e400 into infinity); ``suspicious`` says the text may hold such a value, and
    ``unrepresentable`` then finds where. Checked only when suspicious, so the common
    case costs nothing.
    """
    if not text.isascii():  # (a fast test) text from a file decoded strictly passes this too
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JsonProblem("holds a lone UTF-16 surrogate, which is no character",
                              exc.start) from exc
    odd: list[str] = []

    def constant(token: str) -> float:
        odd.append(token)
        return float(token)

    def number(token: str) -> float:
        value = float(token)
        if math.isinf(value):
            odd.append(token)
        return value

    try:
        data = json.loads(text, parse_float=number, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise JsonProblem(f"not valid JSON ({exc.msg})", exc.pos) from exc
    except RecursionError as exc:
        raise JsonProblem("not readable JSON (nested too deeply)", None) from exc
    except ValueError:
        # An integer too long for Python to convert (over 4,300 digits): read it as an
        # infinity, so that the field holding it is named like any other bad number.
        def integer(token: str) -> int | float:
            if len(token.lstrip("-")) > 4000:
                odd.append(token)
                return math.inf
            return int(token)

        try:
            data = json.loads(text, parse_float=number, parse_constant=constant,
                              parse_int=integer)
        except (ValueError, RecursionError) as exc:
            raise JsonProblem("not readable JSON", None) from exc
    suspicious = bool(odd) or ("\\u" in text and _SURROGATE_ESCAPE.search(text) is not None)
    return data, suspicious


def unrepresentable(value: Any) -> Defect | None:
    """Where ``value`` holds a non-finite number or a lone surrogate (not JSON), if anywhere."""
    stack: list[tuple[Where, Any]] = [((), value)]
    while stack:
        where, item = stack.pop()
        kind = type(item)
        if kind is float and not math.isfinite(item):
            return Defect(where, f"must be a finite number (found {show(item)})")
        if kind is str and _lone_surrogate(item):
            return Defect(where, f"contains a lone UTF-16 surrogate, which is no character "
                                 f"(found {show(item)})")
        if kind is dict:
            for key, sub in reversed(item.items()):
                if _lone_surrogate(key):
                    return Defect((*where, key), "is a key with a lone UTF-16 surrogate, "
                                                 "which is no character")
                stack.append(((*where, key), sub))
        elif kind is list:
            stack.extend(((*where, i), sub) for i, sub in reversed(list(enumerate(item))))
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def show(value: Any, limit: int = 60) -> str:
    """A value as it would appear in JSON, shortened, for error messages."""
    if type(value) is float and not math.isfinite(value):
        return ("NaN" if math.isnan(value) else
                "a number beyond JSON's range (Infinity, or one like 1e400)")
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- strict reading: saying where ----------------------------------------------------------


def describe_where(where: Where) -> str:
    """``("outputs", 0, "path")`` → ``outputs[0].path``."""
    out = ""
    for step in where:
        if isinstance(step, int):
            out += f"[{step}]"
            continue
        # A field name comes from the file: quote anything that is not plainly printable.
        plain = step.isprintable() and step.isascii() and step and not set(step) & set(".[]\"")
        name = step if plain else show(step)
        out += f".{name}" if out else name
    return out


def describe_defect(defect: Defect, *, source: str, text: str | None = None) -> str:
    """``FILE:LINE:COL: entry KEY: FIELD: what; what to do`` for a defect of a lockfile."""
    where = defect.where
    position = ""
    if text is not None:
        pos = locate(text, where)
        if pos is not None:
            position = f":{line_col(text, pos)}"
    name = PurePath(source).name
    if len(where) >= 2 and where[0] == "entries":
        key = show(where[1], limit=100)
        field_ = describe_where(where[2:])
        subject = f"entry {key}: {field_}" if field_ else f"entry {key}"
        hint = _FIX_ENTRY.replace("FILE", name)
    else:
        subject = describe_where(where) or "the lockfile"
        hint = restore_advice(source)
    return f"{source}{position}: {subject}: {defect.what}; {hint}"


def restore_advice(source: str) -> str:
    return _RESTORE_FILE.replace("FILE", PurePath(source).name)


def line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"{line}:{pos - text.rfind(chr(10), 0, pos)}"


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def locate(text: str, where: Where) -> int | None:
    """The offset in ``text`` of the value at ``where`` (or of its deepest existing parent).

    Only for error messages: it walks the text with the decoder, so it costs a full
    parse. Duplicate keys resolve to the last, as ``json.loads`` does.
    """
    try:
        pos = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
        for step in where:
            found = _child(text, pos, step)
            if found is None:
                return pos
            pos = found
        return pos
    except (ValueError, IndexError, RecursionError):
        return None


def _child(text: str, pos: int, step: str | int) -> int | None:
    """The offset of member ``step`` of the object or array starting at ``pos``."""
    skip = _WHITESPACE.match
    opener = text[pos]
    if opener not in "{[" or (opener == "{") != isinstance(step, str):
        return None
    closer = "}" if opener == "{" else "]"
    pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
    found, index = None, 0
    while text[pos] != closer:
        if opener == "{":
            key, pos = _DECODER.raw_decode(text, pos)
            pos = skip(text, pos).end()  # type: ignore[union-attr]
            if text[pos] != ":":
                return found
            pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
            if key == step:
                found = pos
        elif index == step:
            return pos
        _, pos = _DECODER.raw_decode(text, pos)
        index += 1
        pos = skip(text, pos).end()  # type: ignore[union-attr]
        if text[pos] == ",":
            pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
    return found
