"""Strict reading of a lockfile: its schema compiled to Python, JSON's own limits, and where.

``schemas/lockfile.schema.json`` is the single description of the format. It is
compiled once into plain Python checks (``compile_schema``) because jsonschema
takes about 35 s over 100,000 entries and a plan reads the lockfile every time;
``tests/unit/test_lockfile.py`` holds the compiled checks to jsonschema's verdicts.
A defect is described with the file, line, entry and field, and what to do.
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

# --- strict reading: the schema, compiled ------------------------------------------------

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
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "object": "an object", "array": "an array", "null": "null",
               "boolean": "true or false"}
# The test each JSON Schema type makes of a decoded value (``{v}``), with jsonschema's
# meaning (true is no integer, 2.0 is one), except that NaN and infinities are no numbers.
_TYPE_TESTS = {
    "string": "type({v}) is str",
    "integer": "(type({v}) is int or (type({v}) is float and {v}.is_integer()))",
    "number": "(type({v}) is int or (type({v}) is float and _isfinite({v})))",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
    "null": "{v} is None",
    "boolean": "type({v}) is bool",
}
_NUMBER = "(type({v}) is int or type({v}) is float)"


def compile_schema(schema: Mapping[str, Any], *, node: Mapping[str, Any] | None = None,
                   explain: Mapping[str, Callable[[str], str | None]] | None = None) -> Check:
    """Compile (a ``node`` of) a JSON Schema into one fast check returning the first defect.

    The schema is translated into Python source once (as fastjsonschema does) and
    executed: about 1 µs per field, where jsonschema takes 20 times as long. Only
    the keywords the lockfile schema uses are supported, with Draft 2020-12's
    meaning; any other keyword is a ``ValueError`` here, so the schema cannot gain
    a rule the reader would silently skip. ``explain`` maps a ``pattern`` to a
    function giving the reason a string does not match it.
    """
    return _Compiler(schema, explain or {}).compile(schema if node is None else node)


class _Compiler:
    """Generates one Python function per schema node that needs one (``$ref``, ``if``)."""

    def __init__(self, schema: Mapping[str, Any],
                 explain: Mapping[str, Callable[[str], str | None]]) -> None:
        self.schema = schema
        self.explain = explain
        self.names: dict[str, Any] = {
            "Defect": Defect, "_isfinite": math.isfinite, "_same": _same, "_MISSING": _MISSING,
            "_type_defect": _type_defect, "_unknown_field": _unknown_field, "show": show,
        }
        self.source: list[str] = []
        self.functions: dict[int, str] = {}  # id(node) -> generated function name
        self.counter = 0

    def compile(self, node: Mapping[str, Any]) -> Check:
        name = self.function(node)
        code = "\n".join(self.source)
        exec(compile(code, "<lockfile schema>", "exec"), self.names)
        check: Check = self.names[name]
        return check

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any) -> str:
        name = self.fresh("_c")
        self.names[name] = value
        return name

    def function(self, node: Mapping[str, Any]) -> str:
        """The name of a generated ``def f(v) -> Defect | None`` checking ``node``."""
        if id(node) in self.functions:
            return self.functions[id(node)]
        name = self.fresh("_check")
        self.functions[id(node)] = name
        body: list[str] = []
        self.emit(node, "v", (), body, 1)
        self.source += [f"def {name}(v):", *body, "    return None", ""]
        return name

    def emit(self, node: Mapping[str, Any], var: str, where: tuple[str, ...],
             out: list[str], depth: int) -> None:
        """Append statements returning a ``Defect`` when ``var`` breaks ``node``.

        ``where`` holds Python expressions for the path from the function's input.
        """
        unknown = set(node) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise ValueError(f"the lockfile reader does not support {sorted(unknown)}")
        pad = "    " * depth
        at = "(" + "".join(f"{w}, " for w in where) + ")"

        def fail(condition: str, what: str) -> None:
            out.append(f"{pad}if {condition}:")
            out.append(f"{pad}    return Defect({at}, {what})")

        if "$ref" in node:
            target = node["$ref"]
            if not target.startswith("#/$defs/"):
                raise ValueError(f"unsupported $ref {target!r}")
            called = self.function(self.schema["$defs"][target.removeprefix("#/$defs/")])
            self.delegate(f"{called}({var})", at, out, pad)
        types = node.get("type")
        names = [types] if isinstance(types, str) else list(types or ())
        if names:
            test = " or ".join(_TYPE_TESTS[n].format(v=var) for n in names)
            wanted = " or ".join(_TYPE_NAMES[n] for n in names)
            out.append(f"{pad}if not ({test}):")
            out.append(f"{pad}    return _type_defect({at}, {var}, {wanted!r})")

        def guard(kind: str) -> str:
            """The condition under which a keyword applies (none when the type is known)."""
            if names == [kind] or (kind == "number" and names in (["integer"], ["number"])):
                return "True"
            return _NUMBER.format(v=var) if kind == "number" else _TYPE_TESTS[kind].format(v=var)

        for keyword in ("const", "enum"):
            if keyword in node:
                allowed = [node[keyword]] if keyword == "const" else list(node[keyword])
                listed = ", ".join(json.dumps(a, ensure_ascii=False) for a in allowed)
                message = f"must be {listed}" if len(allowed) == 1 else f"must be one of {listed}"
                if all(type(a) is str for a in allowed):
                    test = f"type({var}) is not str or {var} not in {self.const(set(allowed))}"
                else:
                    test = f"not any(_same({var}, a) for a in {self.const(allowed)})"
                fail(test, f"{message!r} + ' (found ' + show({var}) + ')'")
        for keyword, compare, words in (("minimum", "<", "at least"),
                                        ("maximum", ">", "at most")):
            if keyword in node:
                bound = node[keyword]
                fail(f"{guard('number')} and {var} {compare} {bound!r}",
                     f"'must be {words} {bound}' + ' (found ' + show({var}) + ')'")
        if "minLength" in node:
            low = node["minLength"]
            fail(f"{guard('string')} and len({var}) < {low}",
                 repr("must not be empty" if low == 1 else f"must be at least {low} characters"))
        if "maxLength" in node:
            fail(f"{guard('string')} and len({var}) > {node['maxLength']}",
                 repr(f"must be at most {node['maxLength']} characters"))
        if "pattern" in node:
            pattern = node["pattern"]
            search = self.const(re.compile(pattern).search)  # search, as jsonschema does
            about = str(node.get("description", "")).rstrip(".")
            fallback = (f"does not have the expected form ({about})" if about
                        else f"does not match the pattern {pattern}")
            reason = self.const(self.explain.get(pattern) or (lambda _: fallback))
            fail(f"{guard('string')} and not {search}({var})",
                 f"show({var}) + ' ' + {reason}({var})")
        if {"properties", "required", "additionalProperties", "propertyNames"} & set(node):
            self.emit_object(node, var, where, out, depth, guard("object"))
        if "items" in node:
            index, item = self.fresh("i"), self.fresh("x")
            out.append(f"{pad}if {guard('array')}:")
            out.append(f"{pad}    for {index}, {item} in enumerate({var}):")
            self.emit(node["items"], item, (*where, index), out, depth + 2)
        for part in node.get("allOf", ()):
            self.emit(part, var, where, out, depth)
        if "if" in node:
            # A conditional rule's description says why it holds: the message quotes it.
            about = str(node.get("description", "")).rstrip(".")
            why = f" ({about[0].lower()}{about[1:]})" if about else ""
            test = self.function(node["if"])
            out.append(f"{pad}if {test}({var}) is None:")
            if "then" in node:
                self.delegate(f"{self.function(node['then'])}({var})", at, out, pad + "    ",
                              why)
            out.append(f"{pad}    pass")
            if "else" in node:
                out.append(f"{pad}else:")
                self.delegate(f"{self.function(node['else'])}({var})", at, out, pad + "    ",
                              why)

    def delegate(self, call: str, at: str, out: list[str], pad: str, why: str = "") -> None:
        """Call a generated function and return its defect, seen from here (``why`` added)."""
        defect = self.fresh("d")
        out.append(f"{pad}{defect} = {call}")
        out.append(f"{pad}if {defect} is not None:")
        out.append(f"{pad}    return Defect({at} + {defect}.where, {defect}.what + {why!r})")

    def emit_object(self, node: Mapping[str, Any], var: str, where: tuple[str, ...],
                    out: list[str], depth: int, condition: str) -> None:
        pad = "    " * (depth + 1)
        out.append(f"{'    ' * depth}if {condition}:")
        out.append(f"{pad}pass")
        properties: Mapping[str, Any] = node.get("properties", {})
        at = "(" + "".join(f"{w}, " for w in where)
        required = set(node.get("required", ()))
        for name in sorted(required - set(properties)):  # those with a schema: below
            out.append(f"{pad}if {name!r} not in {var}:")
            out.append(f"{pad}    return Defect({at}{name!r},), 'is missing (it is required)')")
        if "propertyNames" in node:
            key = self.fresh("k")
            checked = self.function(node["propertyNames"])
            defect = self.fresh("d")
            out.append(f"{pad}for {key} in {var}:")
            out.append(f"{pad}    {defect} = {checked}({key})")
            out.append(f"{pad}    if {defect} is not None:")
            out.append(f"{pad}        return Defect({at}{key},), "
                       f"'is not a valid key: it ' + {defect}.what)")
        extra = node.get("additionalProperties", True)
        if extra is False:
            known = self.const(frozenset(properties))
            out.append(f"{pad}if not {var}.keys() <= {known}:")
            out.append(f"{pad}    return _unknown_field({at}), {var}, {known})")
        elif extra not in (True, {}):
            key, item = self.fresh("k"), self.fresh("x")
            out.append(f"{pad}for {key}, {item} in {var}.items():")
            inner = depth + 2
            if properties:
                out.append(f"{pad}    if {key} in {self.const(frozenset(properties))}:")
                out.append(f"{pad}        continue")
            self.emit(extra, item, (*where, key), out, inner)
        for name, sub in properties.items():
            value = self.fresh("p")
            out.append(f"{pad}{value} = {var}.get({name!r}, _MISSING)")
            if name in required:  # one lookup serves both the presence and the value check
                out.append(f"{pad}if {value} is _MISSING:")
                out.append(f"{pad}    return Defect({at}{name!r},), "
                           "'is missing (it is required)')")
                self.emit(sub, value, (*where, repr(name)), out, depth + 1)
            else:
                out.append(f"{pad}if {value} is not _MISSING:")
                out.append(f"{pad}    pass")
                self.emit(sub, value, (*where, repr(name)), out, depth + 2)


_MISSING = object()


def _type_defect(where: Where, value: Any, wanted: str) -> Defect:
    return Defect(where, f"must be {wanted} (found {show(value)})")


def _unknown_field(where: Where, value: Mapping[str, Any], known: frozenset[str]) -> Defect:
    name = next(k for k in value if k not in known)
    return Defect((*where, name), "is not a field of this format (misspelt, or written by a "
                                  "newer imgspec?)")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1 (as jsonschema's ``const``/``enum`` compare)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)



@cache
def _checks() -> tuple[Check, Check, Check]:
    """The compiled lockfile schema, its entry and its retired record (compiled on first
    use)."""
    from pipeline.shell.store.schemas import load_schema

    schema = load_schema("lockfile.schema.json")
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
