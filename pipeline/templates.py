"""Sandboxed Jinja templates: every string field of a manifest is one.

Templates come from manifests that other people write, so they run in Jinja's
immutable sandbox with ``StrictUndefined``; ``{% include %}`` reads only files in
the manifest's folder (through the ``Workspace``).

The sandbox keeps templates away from Python internals but not from spending
unbounded time or memory, so rendering is bounded too:

* every value one operation builds (a string, list, big integer, formatted field)
  is checked *before* it is built where its size can be foreseen (``center``,
  ``replace``, ``join``, ``%``/``format`` widths, ``*``, ``**``, ``~`` ...) and
  after it is built otherwise, against ``MAX_VALUE_LENGTH``;
* each render has a work meter: loop iterations, calls, includes and every
  character produced are charged to it, and it stops the render past
  ``MAX_RENDER_WORK`` -- deterministic, so a manifest that validates on one
  machine validates on every machine;
* as a backstop for work the meter cannot see (a slow builtin called in a loop),
  a render that has already spent ``CLOCK_AFTER_WORK`` units also has a deadline,
  ``RENDER_DEADLINE_SECONDS``; ordinary renders never get that far, so they never
  read the clock;
* recursion (macros, includes, nesting too deep to compile) ends in
  ``RecursionError``, caught; and a template that failed for good is refused at
  once for its other instances, so a bomb costs one render, not one per instance.

The limits are far above what a prompt needs (the API takes at most
``rules.MAX_PROMPT_CHARS`` = 5,000 characters) and far below what hurts.
"""

from __future__ import annotations

import operator
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence, Sized
from functools import wraps
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateModule
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, generate_lorem_ipsum, pass_context
from markupsafe import Markup, escape

from pipeline.document import text_problem
from pipeline.errors import ImgspecError
from pipeline.workspace import Workspace, read_text

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

# The work meter. A unit is roughly a seventh of a microsecond of interpreter work
# (one loop iteration) or one character produced; the other steps cost about as
# many units as they take time (measured on the 2-core dev box): an attribute or
# item ATTRIBUTE_COST, a call or filter CALL_COST, a macro call MACRO_CALL_COST
# and an include INCLUDE_COST. A 5,000-character prompt with loops and
# macros spends a few tens of thousands of units; the cap is hit by bombs after
# well under a second and after producing at most a few megabytes of text.
MAX_RENDER_WORK = 2_000_000
ATTRIBUTE_COST = 10
CALL_COST = 30
MACRO_CALL_COST = 100
INCLUDE_COST = 100
# The meter reads the clock only every CLOCK_AFTER_WORK units, so ordinary renders
# never do; a render that goes on past RENDER_DEADLINE_SECONDS from its first
# reading stops. The deadline is a backstop for slow single steps the meter
# charges too little (e.g. ``x in long_text`` in a long loop).
CLOCK_AFTER_WORK = 20_000
RENDER_DEADLINE_SECONDS = 1.0

_LIMIT_HINT = (
    "templates build prompts of at most 5,000 characters: keep loops, repetition, "
    "widths and recursion small"
)
# The filter wrapped around every ``{% for %}`` iterable; no template can name it.
_LOOP_FILTER = "<metered loop>"


class TemplateProblem(ImgspecError):
    """A template failed to compile or render; the caller anchors it in the manifest."""

    def __init__(self, message: str, hint: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.variable = variable


class _LimitExceeded(Exception):
    """A render went past one of the bounds; ``render`` turns it into a ``TemplateProblem``.

    Deliberately not a ``TypeError``/``LookupError``/``TemplateError``: nothing in
    Jinja catches and swallows it on the way out.
    """


class _Meter:
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
            raise _LimitExceeded(
                f"rendering needs more than {MAX_RENDER_WORK:,} steps "
                "(loop iterations, calls and characters produced)"
            )
        now = self.clock()
        if self.deadline is None:
            self.deadline = now + RENDER_DEADLINE_SECONDS
        elif now > self.deadline:
            raise _LimitExceeded(f"rendering took longer than {RENDER_DEADLINE_SECONDS:g} s")
        self.next_check = self.used + CLOCK_AFTER_WORK


class _MeteredIterator:
    """Charges ``weight`` units per item."""

    __slots__ = ("_items", "_meter", "_weight")

    def __init__(self, meter: _Meter, items: Iterable[Any], weight: int) -> None:
        self._meter = meter
        self._items = iter(items)
        self._weight = weight

    def __iter__(self) -> _MeteredIterator:
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self._meter.charge(self._weight)
        return item


class _MeteredSequence(_MeteredIterator):
    """A metered iterator over a sized value: keeps ``len()`` so ``loop.length`` stays cheap."""

    __slots__ = ("_length",)

    def __init__(self, meter: _Meter, items: Sized, weight: int) -> None:
        super().__init__(meter, items, weight)  # type: ignore[arg-type]
        self._length = len(items)

    def __len__(self) -> int:
        return self._length


def _metered(meter: _Meter, items: Any, weight: int) -> _MeteredIterator:
    if isinstance(items, Sized):
        return _MeteredSequence(meter, items, weight)
    return _MeteredIterator(meter, items, weight)


def _too_long(what: str, length: int, limit: int = MAX_VALUE_LENGTH) -> _LimitExceeded:
    return _LimitExceeded(f"{what} would be {length:,} long (the limit is {limit:,})")


def _need(what: str, length: int, limit: int = MAX_VALUE_LENGTH) -> None:
    if length > limit:
        raise _too_long(what, length, limit)


def _int_arg(value: Any, default: int = 0) -> int:
    """A size argument as a number to check (anything else: ``default``; Python refuses it)."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e300:
        return int(value)
    return default


def _text_size(value: Any, limit: int = MAX_VALUE_LENGTH, indent: int = 0) -> int:
    """An upper estimate of ``len(str(value))`` (plus ``indent`` per nesting level and line).

    Walks containers with a budget, so it costs at most about ``limit`` steps even
    for a structure that shares itself exponentially (``[l, l]`` nested 40 deep);
    raises ``_LimitExceeded`` once the estimate passes ``limit``.
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
            raise _LimitExceeded(f"the text of a value would be over {limit:,} characters")
    return total


def _check_percent_format(template: Any, args: Any) -> None:
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
                raise _LimitExceeded("'*' widths in % formatting are not allowed")
            if number:
                if len(number) > 6 or int(number) > MAX_VALUE_LENGTH:
                    raise _too_long("a % formatted field", int(number[:18]))
                total += int(number)
        if key:
            if isinstance(args, Mapping) and key[1:-1] in args:
                total += _text_size(args[key[1:-1]])
        elif conversion != "%":
            positional = True
        _need("the % formatted text", total)
    if positional:
        total += _text_size(args)
    _need("the % formatted text", total)


# One % conversion: optional (key), flags, width, .precision, length modifier, type.
_PERCENT_SPEC = re.compile(
    r"%(\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])")
_SPEC_NUMBER = re.compile(r"\d+")


class _BoundedFormatterMixin(string.Formatter):
    """``str.format`` whose fields may not ask for huge widths, conversions or totals."""

    meter: _Meter

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            _text_size(value)  # ``{!r}`` prints the value before any width applies
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _SPEC_NUMBER.findall(format_spec):
            if len(number) > 6 or int(number) > MAX_VALUE_LENGTH:
                raise _too_long("a formatted field", int(number[:18]))
        _text_size(value)
        field = super().format_field(value, format_spec)
        # Many fields of allowed width add up: charge each as it is made.
        self.meter.charge(len(field))
        return field


class _BoundedFormatter(_BoundedFormatterMixin, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatterMixin, SandboxedEscapeFormatter):
    pass


class _WorkspaceLoader(jinja2.BaseLoader):
    """Lets ``{% include "parts/x.j2" %}`` read files of the manifest's folder, nothing else."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        try:
            source = read_text(self.workspace, template)
        except ImgspecError as exc:
            raise jinja2.TemplateNotFound(f"{template} ({exc})") from exc
        return source, None, lambda: True


class _MeteredCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join, and outputs to metered ones where needed.

    Every ``{{ value }}`` goes through ``environment.finalize`` (which charges its
    text and refuses huge containers) except a string written at the top level of
    the manifest's own template: that runs once per render, its text is bounded
    where it was built, and the rendered text is capped as a whole. Skipping the
    call there keeps the common prompt (``"a {{ shop }} in {{ season }}"``) as fast
    as plain Jinja; inside loops, macros, blocks and includes every output is charged.
    """

    def _fast_output(self, frame: Frame) -> bool:
        return (self.name is None and frame.toplevel and not frame.eval_ctx.volatile
                and not frame.eval_ctx.autoescape)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if self._fast_output(frame):
            self.write("(_out if type(_out := ")
        else:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if self._fast_output(frame):
            # Numbers print short (integers are bounded where they are built).
            self.write(") is str else str(_out) if type(_out) in (int, float)"
                       " else str(environment.finalize(_out)))")
        else:
            super()._output_child_post(node, frame, finalize)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


# Values whose length says how much a filter walking them costs (not ``Sized``:
# StrictUndefined has a ``__len__`` that raises, and ``default`` must see it whole).
_WALKED_TYPES: tuple[type, ...] = (str, bytes, list, tuple, dict, range, set, frozenset,
                 type({}.keys()), type({}.values()), type({}.items()))


def _loop_weight(loop: nodes.For) -> int:
    """What one iteration costs: 1, plus the literal text its body writes each time."""
    return 1 + sum(len(data.data) for data in loop.find_all(nodes.TemplateData))


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, metered, with every value-building operation bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _MeteredCodeGenerator

    def __init__(self, meter: _Meter, **options: Any) -> None:
        super().__init__(**options)
        self.meter = meter
        self.finalize = self._finalize_output
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = self._metered_loop
        self.globals["lipsum"] = _bounded_lipsum

    # -- compile time -------------------------------------------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            weight = nodes.Const(_loop_weight(loop), lineno=loop.lineno)
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_FILTER, [weight], [], None, None, lineno=loop.lineno
            )
        return tree

    # -- the hooks the compiled template calls ----------------------------------------

    @pass_context
    def _metered_loop(self, context: Any, items: Any, weight: int) -> _MeteredIterator:
        # pass_context keeps Jinja from folding a constant loop at compile time.
        return _metered(self.meter, items, weight)

    def _finalize_output(self, value: Any) -> Any:
        """Charge every ``{{ value }}`` written, and refuse ones too long to print."""
        kind = type(value)
        if kind is str:
            # Inlined ``meter.charge``: this runs for every output of every render.
            meter = self.meter
            meter.used += len(value)
            if meter.used >= meter.next_check:
                meter.charge(0)
            return value
        if kind is int or kind is float:
            # Integers are bounded where they are built; Python prints at most 4,300 digits.
            return value
        self.meter.charge(_text_size(value))
        return value

    def bounded_concat(self, parts: Sequence[Any]) -> str:
        """``a ~ b ~ c``: checked before the text is built."""
        total = 0
        for part in parts:
            total += len(part) if type(part) is str else _text_size(part)
        _need("text joined with ~", total)
        self.meter.charge(total)
        return "".join([part if type(part) is str else str(part) for part in parts])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise _LimitExceeded(f"exponent {right} is too large (the limit is {MAX_EXPONENT})")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                _need("the power's number of bits", left.bit_length() * right, MAX_INT_BITS)
            result = operator.pow(left, right)
        elif operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
                    _need("the repeated value", len(seq) * count)
                    self.meter.charge(_text_size(seq) * max(count, 0))
            if isinstance(left, int) and isinstance(right, int):
                _need("the product's number of bits",
                      left.bit_length() + right.bit_length(), MAX_INT_BITS)
            result = operator.mul(left, right)
        elif operator_name == "+":
            if isinstance(left, str | bytes | list | tuple) and isinstance(
                right, str | bytes | list | tuple
            ):
                _need("the sum", len(left) + len(right))
                self.meter.charge(len(left) + len(right))
            result = operator.add(left, right)
        else:  # "%"
            if isinstance(left, str | bytes):
                _check_percent_format(left, right)
            result = operator.mod(left, right)
        return self._charged(result)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call: metered, with calls that would build huge values refused first."""
        __self.meter.charge(MACRO_CALL_COST if isinstance(__obj, Macro) else CALL_COST)
        if isinstance(__obj, types.BuiltinMethodType | types.MethodType):
            # Builtin methods of str, bytes and int, and Markup's (Python) wrappers of them.
            if __obj.__name__ == "join" and args and not isinstance(args[0], list | tuple | str):
                # A lazy argument: list it (its items are metered) so its size can be checked.
                args = (list(args[0]), *args[1:])
            _check_method_call(__obj, args, kwargs)
        elif isinstance(__obj, LoopContext) and args:
            # ``loop(children)`` in a recursive loop iterates a new sequence: meter it too.
            args = (_metered(__self.meter, args[0], 1), *args[1:])
        return __self._charged(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``x.name``: metered (the sandbox's safety checks make it one of the dearer steps)."""
        self.meter.charge(ATTRIBUTE_COST)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``x[key]`` and slices: metered, and a slice's copy is charged."""
        self.meter.charge(ATTRIBUTE_COST)
        item = super().getitem(obj, argument)
        return self._charged(item) if isinstance(argument, slice) else item

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through a formatter that bounds widths."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        f_self: Any = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type: type[str] = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)
        formatter.meter = self.meter
        vformat = formatter.vformat

        @wraps(value)
        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            text: str = self._charged(str_type(vformat(f_self, args, kwargs)))
            return text

        return wrapper

    def get_template(self, name: Any, parent: str | None = None,
                     globals: MutableMapping[str, Any] | None = None) -> jinja2.Template:
        """Every ``{% include %}`` is charged: includes of itself recurse, in a tree."""
        self.meter.charge(INCLUDE_COST)
        return super().get_template(name, parent, globals)

    def select_template(self, names: Any, parent: str | None = None,
                        globals: MutableMapping[str, Any] | None = None) -> jinja2.Template:
        """As ``get_template``, for ``{% include [a, b] %}``."""
        self.meter.charge(INCLUDE_COST)
        return super().select_template(names, parent, globals)

    # -- helpers ----------------------------------------------------------------------

    def _charged(self, result: Any) -> Any:
        """Check and charge what an operation built; meter what it will yield lazily."""
        if isinstance(result, str | bytes | list | tuple | dict):
            _need("the value built", len(result))
            self.meter.charge(len(result))
        elif isinstance(result, int) and not isinstance(result, bool):
            _need("the number's bits", result.bit_length(), MAX_INT_BITS)
        elif isinstance(result, types.GeneratorType | map | filter | reversed | zip):
            return _metered(self.meter, result, 1)
        return result

    def _bounded_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with its value-building arguments checked and its result charged."""
        passes_arg = hasattr(func, "jinja_pass_arg")
        check = _FILTER_CHECKS.get(name)
        stringifies = name in _STRINGIFYING_FILTERS
        meter = self.meter

        @wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            meter.charge(CALL_COST)
            if name == "join":
                args, kwargs = _materialised_join(args, kwargs)
            value_args = args[1:] if passes_arg else args
            if value_args:
                value = value_args[0]
                if isinstance(value, _WALKED_TYPES):
                    # Filters walk their value: sum, sort, unique... cost its length.
                    meter.charge(len(cast(Sized, value)))
                if stringifies and not isinstance(value, str):
                    meter.charge(_text_size(value))
                if check is not None:
                    check(*value_args, **kwargs)
            if name == "sum":
                return self._bounded_sum(func, args, kwargs)
            return self._charged(func(*args, **kwargs))

        return bounded

    def _bounded_sum(self, func: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
        """``sum`` of numbers as Jinja does it; of lists or text, one checked ``+`` at a time.

        Summing sequences copies the running total on each step, so 100,000 small
        lists would cost billions of copies; the checked ``+`` charges each copy.
        """
        env, iterable, *rest = args
        attribute = kwargs.get("attribute", rest[0] if rest else None)
        start = kwargs.get("start", rest[1] if len(rest) > 1 else 0)
        if isinstance(start, int | float) and not isinstance(start, bool):
            return self._charged(func(*args, **kwargs))
        if attribute is not None:
            getter = make_attrgetter(env, attribute)
            iterable = map(getter, iterable)
        total = start
        for item in _metered(self.meter, iterable, 1):
            total = self.call_binop(None, "+", total, item)
        return total


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """``lipsum()`` limited to what fits the value limit (about 12 characters a word)."""
    _need("the lorem ipsum", _int_arg(n) * _int_arg(max) * 12)
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
        sizes += len(part) if isinstance(part, str) else _text_size(part)
        if sizes > MAX_VALUE_LENGTH:
            break
    return sizes + len(separator) * max(len(parts) - 1, 0)


def _check_method_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse ``str``/``bytes``/``int`` method calls whose result would be huge."""
    owner = getattr(method, "__self__", None)
    name = method.__name__
    if isinstance(owner, int) and name == "to_bytes":
        _need("the bytes", _int_arg(args[0] if args else kwargs.get("length", 1), 1))
        return
    if not isinstance(owner, str | bytes | bytearray):
        return
    if name in ("center", "ljust", "rjust", "zfill"):
        _need(f"the result of {name}()", _int_arg(args[0] if args else kwargs.get("width", 0)))
    elif name == "expandtabs":
        size = _int_arg(args[0] if args else kwargs.get("tabsize", 8), 8)
        tab: Any = "\t" if isinstance(owner, str) else b"\t"
        _need("the result of expandtabs()", len(owner) + owner.count(tab) * max(size, 0))
    elif name == "replace":
        _need("the result of replace()", _replace_size(owner, *args[:3]))
    elif name == "join" and args:
        _need("the result of join()", _join_size(owner, args[0]))
    elif name == "translate" and args and isinstance(args[0], Mapping):
        widest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        _need("the result of translate()", len(owner) * widest)


def _materialised_join(args: tuple[Any, ...],
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
    _need("the centered text", _int_arg(kwargs.get("width", width)))


def _check_indent(value: Any, width: Any = 4, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    step = len(width) if isinstance(width, str) else _int_arg(width)
    text = str(value) if isinstance(value, str) else ""
    _need("the indented text", len(text) + (text.count("\n") + 1) * max(step, 0))


def _check_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True,
                    wrapstring: Any = None, *_: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", wrapstring)
    if isinstance(wrapstring, str) and isinstance(value, str):
        # At worst every character starts a new line.
        _need("the wrapped text", len(value) + (len(value) + 1) * len(wrapstring))


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None,
                   *_: Any, **kwargs: Any) -> None:
    count = kwargs.get("count", count)
    _need("the replaced text",
          _replace_size(value, old, new, -1 if count is None else count))


def _check_join(value: Any, d: Any = "", attribute: Any = None, *_: Any, **kwargs: Any) -> None:
    separator = kwargs.get("d", d)
    if isinstance(value, list | tuple | str) and isinstance(separator, str):
        _need("the joined text", _join_size(separator, value))


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_percent_format(value, kwargs or args)


def _check_batch(value: Any, linecount: Any = 1, fill_with: Any = None,
                 *_: Any, **kwargs: Any) -> None:
    if kwargs.get("fill_with", fill_with) is not None:
        # Only filling pads the last batch out to ``linecount`` items.
        _need("a filled batch", _int_arg(kwargs.get("linecount", linecount)))


def _check_slice(value: Any, slices: Any = 1, fill_with: Any = None,
                 *_: Any, **kwargs: Any) -> None:
    _need("the number of slices", _int_arg(kwargs.get("slices", slices)))


def _check_tojson(value: Any, indent: Any = None, *_: Any, **kwargs: Any) -> None:
    indent = kwargs.get("indent", indent)
    step = len(indent) if isinstance(indent, str) else _int_arg(indent)
    _text_size(value, indent=max(step, 0) + 1)


def _check_pprint(value: Any, *_: Any, **kwargs: Any) -> None:
    _text_size(value, indent=2)


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
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
_STRINGIFYING_FILTERS = frozenset({
    "string", "e", "escape", "forceescape", "upper", "lower", "title", "capitalize",
    "trim", "striptags", "urlize", "center", "indent", "wordwrap", "truncate", "replace",
    "format", "wordcount", "safe", "urlencode", "filesizeformat", "xmlattr", "join",
})


def looks_like_template(text: str) -> bool:
    """Whether ``text`` has Jinja syntax at all (most strings don't; they skip Jinja)."""
    return "{{" in text or "{%" in text or "{#" in text


class TemplateRenderer:
    """Compiles each distinct template once and renders it against a context, bounded.

    One renderer renders one template at a time (the meter is per renderer).
    """

    def __init__(self, workspace: Workspace, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._meter = _Meter(clock)
        self.env = _BoundedSandbox(
            self._meter,
            undefined=jinja2.StrictUndefined,
            loader=_WorkspaceLoader(workspace),
            autoescape=False,
            keep_trailing_newline=True,
        )
        self._compiled: dict[str, jinja2.Template] = {}
        # Templates that cannot compile or went past a bound, with message and hint:
        # refused at once from then on, so a bomb in a 100,000-instance matrix costs
        # one render, not 100,000. (The manifest is invalid either way; the error
        # names every instance.)
        self._refused: dict[str, tuple[str, str]] = {}

    def compile(self, source: str) -> jinja2.Template:
        """The compiled template for ``source`` (``TemplateProblem`` if it cannot be compiled)."""
        template = self._compiled.get(source)
        if template is None:
            if self._refused and source in self._refused:
                raise TemplateProblem(*self._refused[source])
            # Compiling folds constants through the metered hooks: start from zero.
            self._meter.used = 0
            self._meter.next_check = CLOCK_AFTER_WORK
            try:
                template = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise self._refuse(
                    source,
                    f"template syntax error: {exc.message} (template line {exc.lineno})",
                    "fix the Jinja syntax; write {{ name }} for a variable",
                ) from exc
            except (RecursionError, SyntaxError, MemoryError) as exc:
                # Jinja's parser and code generator recurse once per nesting level, and
                # Python refuses code nested past ~100 blocks: ``((((...))))``, 300 ifs.
                raise self._refuse(
                    source, "the template is nested too deeply to compile", _LIMIT_HINT
                ) from exc
            # Jinja gives a template its globals as a ChainMap over the environment's;
            # every render copies them into a fresh context, and copying a ChainMap
            # walks it in Python (a fifth of a 100,000-instance plan). The environment
            # is complete before anything compiles, so a plain dict is the same globals.
            template.globals = dict(template.globals)
            self._compiled[source] = template
        return template

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render ``source``; plain strings are returned as they are."""
        if not looks_like_template(source):
            return source
        template = self.compile(source)
        if self._refused and source in self._refused:
            raise TemplateProblem(*self._refused[source])
        # A fresh budget, set inline: this runs once per instance and field.
        meter = self._meter
        meter.used = 0
        meter.next_check = CLOCK_AFTER_WORK
        meter.deadline = None
        try:
            text = template.render(context)
            # Every piece of the text was charged as it was produced; this caps the whole.
            _need("the rendered text", len(text), MAX_OUTPUT_LENGTH)
            # Escapes in the template ("\ud800", "\x00") can make text the loader
            # never saw: refuse it here, before a fingerprint or a request needs it.
            bad = text_problem(text)
            if bad is not None:
                raise TemplateProblem(f"the rendered text is not sendable: {bad[0]}", bad[1])
            return text
        except _LimitExceeded as exc:
            raise self._refuse(source, f"the template is too costly to render: {exc}") from exc
        except jinja2.UndefinedError as exc:
            raise _undefined_problem(str(exc.message or exc), context) from exc
        except SecurityError as exc:
            raise TemplateProblem(
                f"the template did something the sandbox forbids: {exc}",
                "templates may only use variables, filters and simple expressions",
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(
                f"included template not found: {exc.message}",
                "include files by a path relative to the manifest, inside its folder",
            ) from exc
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"template error: {exc}", "fix the template") from exc
        except RecursionError as exc:
            raise self._refuse(source, "the template recurses too deeply (a macro or include "
                                       "calling itself without end?)") from exc
        except MemoryError as exc:
            # A backstop: the bounds above should stop every value before this.
            raise self._refuse(source, "the template ran out of memory") from exc
        except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise TemplateProblem(
                f"template failed: {type(exc).__name__}: {exc}",
                "check the expression's types and values",
            ) from exc

    def _refuse(self, source: str, message: str, hint: str = _LIMIT_HINT) -> TemplateProblem:
        """The problem for a template that failed for good, remembered for its other renders."""
        self._refused[source] = (message, hint)
        return TemplateProblem(message, hint)


def _undefined_problem(message: str, context: Mapping[str, Any]) -> TemplateProblem:
    """Explain an undefined name: a missing variable, or an attempt at Python internals."""
    # Jinja says "'season' is undefined" or "'str object' has no attribute '__class__'".
    name = message.split("'")[1] if message.count("'") >= 2 else None
    if "has no attribute" in message:
        attribute = message.rsplit("'", 2)[-2] if message.count("'") >= 4 else ""
        if attribute.startswith("_"):
            return TemplateProblem(
                f"templates cannot reach Python internals ({message})",
                "use only variables and Jinja filters",
            )
        return TemplateProblem(f"undefined attribute: {message}",
                               "check the variable's structure")
    known = ", ".join(sorted(k for k in context if not k.startswith("_"))) or "none"
    return TemplateProblem(
        f"undefined variable {name!r}" if name else f"undefined value: {message}",
        f"define it under vars: or as a matrix axis (defined here: {known})",
        variable=name,
    )
