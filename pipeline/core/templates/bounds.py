"""The sizes a template may build, checked before the value is built where they can be.

The longest value one operation may build and the largest integer are limits here,
with the checks that foresee a result's size from its arguments (``center``,
``replace``, ``join``, ``%`` and ``format`` widths, filters) so a bomb is refused
before it allocates. ``sandbox`` calls them from Jinja's hooks, and charges the
``Meter`` defined here, which bounds a render's work and time.
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Callable, Mapping
from typing import Any

from jinja2.environment import TemplateModule
from jinja2.filters import make_attrgetter
from jinja2.sandbox import (
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup, escape

# The work meter. A unit is roughly a seventh of a microsecond of interpreter work
# (one loop iteration) or one character produced; ``sandbox`` charges the other
# steps. A 5,000-character prompt with loops and macros spends a few tens of
# thousands of units; the cap is hit by bombs after well under a second and after
# producing at most a few megabytes of text.
MAX_RENDER_WORK = 2_000_000
# The meter reads the clock only every CLOCK_AFTER_WORK units, so ordinary renders
# never do; a render that goes on past RENDER_DEADLINE_SECONDS from its first
# reading stops. The deadline is a backstop for slow single steps the meter
# charges too little (e.g. ``x in long_text`` in a long loop).
CLOCK_AFTER_WORK = 20_000
RENDER_DEADLINE_SECONDS = 1.0

# The longest string, list or formatted field one operation may build, and the
# longest rendered text: 20 times the API's 5,000-character prompt limit, so no
# real prompt comes near it, while a value this size costs well under a millisecond.
MAX_VALUE_LENGTH = 100_000
MAX_OUTPUT_LENGTH = 100_000
# ``x ** n``: exponents beyond this only build huge numbers (or overflow floats).
MAX_EXPONENT = 1_000
# Integers: Python refuses to print more than 4,300 digits (about 14,300 bits) anyway;
# past this, repeated squaring in a loop would double the memory on each step.
MAX_INT_BITS = 65_536


class LimitExceeded(Exception):
    """A render went past one of the bounds; ``render`` turns it into a ``TemplateProblem``.

    Deliberately not a ``TypeError``/``LookupError``/``TemplateError``: nothing in
    Jinja catches and swallows it on the way out.
    """


class Meter:
    """Per-render work counter, with a lazily started wall-clock backstop."""

    __slots__ = ("clock", "deadline", "next_check", "used")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        # What ``TemplateRenderer.render`` sets again at the start of every render.
        self.used = 0
        self.next_check = CLOCK_AFTER_WORK
        self.deadline: float | None = None

    def charge(self, units: int) -> None:
        """Spend ``units``; raise once the render's budget or deadline is gone."""
        self.used += units
        if self.used >= self.next_check:
            self._check()

    def _check(self) -> None:
        if self.used > MAX_RENDER_WORK:
            raise LimitExceeded(
                f"rendering needs more than {MAX_RENDER_WORK:,} steps "
                "(loop iterations, calls and characters produced)"
            )
        now = self.clock()
        if self.deadline is None:
            self.deadline = now + RENDER_DEADLINE_SECONDS
        elif now > self.deadline:
            raise LimitExceeded(f"rendering took longer than {RENDER_DEADLINE_SECONDS:g} s")
        self.next_check = self.used + CLOCK_AFTER_WORK



def _too_long(what: str, length: int, limit: int = MAX_VALUE_LENGTH) -> LimitExceeded:
    return LimitExceeded(f"{what} would be {length:,} long (the limit is {limit:,})")


def need(what: str, length: int, limit: int = MAX_VALUE_LENGTH) -> None:
    if length > limit:
        raise _too_long(what, length, limit)


def _int_arg(value: Any, default: int = 0) -> int:
    """A size argument as a number to check (anything else: ``default``; Python refuses it)."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e300:
        return int(value)
    return default


def text_size(value: Any, limit: int = MAX_VALUE_LENGTH, indent: int = 0) -> int:
    """An upper estimate of ``len(str(value))`` (plus ``indent`` per nesting level and line).

    Walks containers with a budget, so it costs at most about ``limit`` steps even
    for a structure that shares itself exponentially (``[l, l]`` nested 40 deep);
    raises ``LimitExceeded`` once the estimate passes ``limit``.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        total += 2 + depth * indent
        if isinstance(item, str | bytes | bytearray):
            total += len(item) * (4 if isinstance(item, bytes | bytearray) else 1)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, float | complex):
            total += 50
        elif isinstance(item, Namespace):
            stack.append((item._Namespace__attrs, depth))
            total += 13
        elif isinstance(item, TemplateModule):
            # ``{% import ... as m %}``: ``str(m)`` is the imported template's output.
            total += sum(len(part) for part in item._body_stream)
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                stack.append((key, depth + 1))
                stack.append((sub, depth + 1))
                if total + len(stack) > limit:
                    break
        elif isinstance(
            item,
            list | tuple | set | frozenset | types.MappingProxyType | type({}.keys())
            | type({}.values()) | type({}.items()),
        ):
            for sub in item:
                stack.append((sub, depth + 1))
                if total + len(stack) > limit:
                    break
        else:
            # Other objects (ranges, loops, macros, cyclers...) print a short repr.
            total += 100
        if total + len(stack) > limit:
            # The walk stops here, so the true length is unknown, only too much.
            raise LimitExceeded(f"the text of a value would be over {limit:,} characters")
    return total


def check_percent_format(template: Any, args: Any) -> None:
    """Refuse ``'%0999999999d' % x``, ``'%*d' % (w, x)``, many wide fields, huge ``%s`` args."""
    if not isinstance(template, str | bytes):
        return
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    # The text is at most the template, plus every field's width and precision, plus
    # the text of every value a field prints: a named one may be printed many times,
    # positional ones once each (or the single value, once).
    total = len(text)
    positional = False
    for key, width, precision, conversion in _PERCENT_SPEC.findall(text):
        for number in (width, precision):
            if number == "*":
                raise LimitExceeded("'*' widths in % formatting are not allowed")
            if number:
                if len(number) > 6 or int(number) > MAX_VALUE_LENGTH:
                    raise _too_long("a % formatted field", int(number[:18]))
                total += int(number)
        if key:
            if isinstance(args, Mapping) and key[1:-1] in args:
                total += text_size(args[key[1:-1]])
        elif conversion != "%":
            positional = True
        need("the % formatted text", total)
    if positional:
        total += text_size(args)
    need("the % formatted text", total)


# One % conversion: optional (key), flags, width, .precision, length modifier, type.
_PERCENT_SPEC = re.compile(
    r"%(\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])")
_SPEC_NUMBER = re.compile(r"\d+")


class _BoundedFormatterMixin(string.Formatter):
    """``str.format`` whose fields may not ask for huge widths, conversions or totals."""

    meter: Meter

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            text_size(value)  # ``{!r}`` prints the value before any width applies
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _SPEC_NUMBER.findall(format_spec):
            if len(number) > 6 or int(number) > MAX_VALUE_LENGTH:
                raise _too_long("a formatted field", int(number[:18]))
        text_size(value)
        field = super().format_field(value, format_spec)
        # Many fields of allowed width add up: charge each as it is made.
        self.meter.charge(len(field))
        return field


class BoundedFormatter(_BoundedFormatterMixin, SandboxedFormatter):
    pass


class BoundedEscapeFormatter(_BoundedFormatterMixin, SandboxedEscapeFormatter):
    pass


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """``lipsum()`` limited to what fits the value limit (about 12 characters a word)."""
    need("the lorem ipsum", _int_arg(n) * _int_arg(max) * 12)
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# -- checks before a call builds a value --------------------------------------------------


def _replace_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if isinstance(text, Markup):
        # Markup.replace escapes its arguments first: count and size what it will use.
        old, new = escape(old), escape(new)
    if not isinstance(text, str | bytes) or not isinstance(new, str | bytes):
        return 0
    if isinstance(old, str) != isinstance(text, str) or not isinstance(old, str | bytes):
        return len(text)  # Python refuses the mix of str and bytes
    source: Any = text
    hits = source.count(old) if old else len(text) + 1
    limit = _int_arg(count, -1)
    if limit >= 0:
        hits = min(hits, limit)
    return len(text) + hits * max(len(new) - len(old), 0)


def _join_size(separator: Any, items: Any) -> int:
    """Length of ``separator.join(items)`` for a list, tuple or string of items."""
    if not isinstance(items, list | tuple | str) or not isinstance(separator, str | bytes):
        return 0
    if isinstance(items, str):
        return len(items) + len(separator) * max(len(items) - 1, 0)
    parts = items
    sizes = 0
    for part in parts:
        sizes += len(part) if isinstance(part, str) else text_size(part)
        if sizes > MAX_VALUE_LENGTH:
            break
    return sizes + len(separator) * max(len(parts) - 1, 0)


def check_method_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse ``str``/``bytes``/``int`` method calls whose result would be huge."""
    owner = getattr(method, "__self__", None)
    name = method.__name__
    if isinstance(owner, int) and name == "to_bytes":
        need("the bytes", _int_arg(args[0] if args else kwargs.get("length", 1), 1))
        return
    if not isinstance(owner, str | bytes | bytearray):
        return
    if name in ("center", "ljust", "rjust", "zfill"):
        need(f"the result of {name}()", _int_arg(args[0] if args else kwargs.get("width", 0)))
    elif name == "expandtabs":
        size = _int_arg(args[0] if args else kwargs.get("tabsize", 8), 8)
        tab: Any = "\t" if isinstance(owner, str) else b"\t"
        need("the result of expandtabs()", len(owner) + owner.count(tab) * max(size, 0))
    elif name == "replace":
        need("the result of replace()", _replace_size(owner, *args[:3]))
    elif name == "join" and args:
        need("the result of join()", _join_size(owner, args[0]))
    elif name == "translate" and args and isinstance(args[0], Mapping):
        widest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        need("the result of translate()", len(owner) * widest)


def materialised_join(args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``join``'s arguments with a lazy value turned into a list, so its size can be checked.

    Items of a lazy value are metered as they come, but the separator is repeated
    between them; ``attribute`` is applied here so the check sees the joined items.
    """
    eval_ctx, value, *rest = args
    separator = kwargs.pop("d", rest[0] if rest else "")
    attribute = kwargs.pop("attribute", rest[1] if len(rest) > 1 else None)
    items = list(value) if not isinstance(value, str | list | tuple) else value
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    return (eval_ctx, items, separator), kwargs


def _check_center(value: Any, width: Any = 80, *_: Any, **kwargs: Any) -> None:
    need("the centered text", _int_arg(kwargs.get("width", width)))


def _check_indent(value: Any, width: Any = 4, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    step = len(width) if isinstance(width, str) else _int_arg(width)
    text = str(value) if isinstance(value, str) else ""
    need("the indented text", len(text) + (text.count("\n") + 1) * max(step, 0))


def _check_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True,
                    wrapstring: Any = None, *_: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", wrapstring)
    if isinstance(wrapstring, str) and isinstance(value, str):
        # At worst every character starts a new line.
        need("the wrapped text", len(value) + (len(value) + 1) * len(wrapstring))


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None,
                   *_: Any, **kwargs: Any) -> None:
    count = kwargs.get("count", count)
    need("the replaced text",
          _replace_size(value, old, new, -1 if count is None else count))


def _check_join(value: Any, d: Any = "", attribute: Any = None, *_: Any, **kwargs: Any) -> None:
    separator = kwargs.get("d", d)
    if isinstance(value, list | tuple | str) and isinstance(separator, str):
        need("the joined text", _join_size(separator, value))


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent_format(value, kwargs or args)


def _check_batch(value: Any, linecount: Any = 1, fill_with: Any = None,
                 *_: Any, **kwargs: Any) -> None:
    if kwargs.get("fill_with", fill_with) is not None:
        # Only filling pads the last batch out to ``linecount`` items.
        need("a filled batch", _int_arg(kwargs.get("linecount", linecount)))


def _check_slice(value: Any, slices: Any = 1, fill_with: Any = None,
                 *_: Any, **kwargs: Any) -> None:
    need("the number of slices", _int_arg(kwargs.get("slices", slices)))


def _check_tojson(value: Any, indent: Any = None, *_: Any, **kwargs: Any) -> None:
    indent = kwargs.get("indent", indent)
    step = len(indent) if isinstance(indent, str) else _int_arg(indent)
    text_size(value, indent=max(step, 0) + 1)


def _check_pprint(value: Any, *_: Any, **kwargs: Any) -> None:
    text_size(value, indent=2)


FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "join": _check_join,
    "format": _check_format,
    "batch": _check_batch,
    "slice": _check_slice,
    "tojson": _check_tojson,
    "pprint": _check_pprint,
}
# Filters that turn their value into text: a list of 100,000 references to one long
# string is small in memory but huge as text.
STRINGIFYING_FILTERS = frozenset({
    "string", "e", "escape", "forceescape", "upper", "lower", "title", "capitalize",
    "trim", "striptags", "urlize", "center", "indent", "wordwrap", "truncate", "replace",
    "format", "wordcount", "safe", "urlencode", "filesizeformat", "xmlattr", "join",
})
