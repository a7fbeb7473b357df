"""The bounded sandbox: Jinja's immutable sandbox that also bounds time and memory.

Templates come from manifests other people write. Jinja's sandbox keeps them away
from Python internals but not from spending unbounded time or memory, so here:

* every value one operation builds (a string, list, big integer, formatted field)
  is checked *before* it is built where its size can be foreseen (``center``,
  ``replace``, ``join``, ``%``/``format`` widths, ``*``, ``**``, ``~`` ...) and
  after it is built otherwise, against ``MAX_VALUE_LENGTH``;
* each render has a work meter (``bounds.Meter``): loop iterations, calls, includes and
  every character produced are charged to it, and it stops the render past
  ``MAX_RENDER_WORK`` -- deterministic, so a manifest that validates on one
  machine validates on every machine;
* as a backstop for work the meter cannot see, a render that has already spent
  ``CLOCK_AFTER_WORK`` units also has a deadline, ``RENDER_DEADLINE_SECONDS``.

``templates.TemplateRenderer`` drives it and turns ``LimitExceeded`` into a
``TemplateProblem``.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Iterable, MutableMapping, Sequence, Sized
from functools import wraps
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedFormatter,
)
from jinja2.utils import pass_context
from markupsafe import Markup

from pipeline.core.manifest.workspace import Workspace, read_text
from pipeline.core.templates.bounds import (
    FILTER_CHECKS,
    MAX_EXPONENT,
    MAX_INT_BITS,
    STRINGIFYING_FILTERS,
    BoundedEscapeFormatter,
    BoundedFormatter,
    LimitExceeded,
    Meter,
    bounded_lipsum,
    check_method_call,
    check_percent_format,
    materialised_join,
    need,
    text_size,
)
from pipeline.errors import ImgspecError

# What the steps cost on the work meter (``bounds.Meter``; a unit is one loop iteration
# or one character produced): each about as many units as it takes time (measured on
# the 2-core dev box): an attribute or item ATTRIBUTE_COST, a call or filter CALL_COST,
# a macro call MACRO_CALL_COST and an include INCLUDE_COST.
ATTRIBUTE_COST = 10
CALL_COST = 30
MACRO_CALL_COST = 100
INCLUDE_COST = 100

LIMIT_HINT = (
    "templates build prompts of at most 5,000 characters: keep loops, repetition, "
    "widths and recursion small"
)
# The filter wrapped around every ``{% for %}`` iterable; no template can name it.
_LOOP_FILTER = "<metered loop>"
class _MeteredIterator:
    """Charges ``weight`` units per item."""

    __slots__ = ("_items", "_meter", "_weight")

    def __init__(self, meter: Meter, items: Iterable[Any], weight: int) -> None:
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

    def __init__(self, meter: Meter, items: Sized, weight: int) -> None:
        super().__init__(meter, items, weight)  # type: ignore[arg-type]
        self._length = len(items)

    def __len__(self) -> int:
        return self._length


def _metered(meter: Meter, items: Any, weight: int) -> _MeteredIterator:
    if isinstance(items, Sized):
        return _MeteredSequence(meter, items, weight)
    return _MeteredIterator(meter, items, weight)


class WorkspaceLoader(jinja2.BaseLoader):
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


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, metered, with every value-building operation bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _MeteredCodeGenerator

    def __init__(self, meter: Meter, **options: Any) -> None:
        super().__init__(**options)
        self.meter = meter
        self.finalize = self._finalize_output
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = self._metered_loop
        self.globals["lipsum"] = bounded_lipsum

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
        self.meter.charge(text_size(value))
        return value

    def bounded_concat(self, parts: Sequence[Any]) -> str:
        """``a ~ b ~ c``: checked before the text is built."""
        total = 0
        for part in parts:
            total += len(part) if type(part) is str else text_size(part)
        need("text joined with ~", total)
        self.meter.charge(total)
        return "".join([part if type(part) is str else str(part) for part in parts])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise LimitExceeded(f"exponent {right} is too large (the limit is {MAX_EXPONENT})")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                need("the power's number of bits", left.bit_length() * right, MAX_INT_BITS)
            result = operator.pow(left, right)
        elif operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
                    need("the repeated value", len(seq) * count)
                    self.meter.charge(text_size(seq) * max(count, 0))
            if isinstance(left, int) and isinstance(right, int):
                need("the product's number of bits",
                      left.bit_length() + right.bit_length(), MAX_INT_BITS)
            result = operator.mul(left, right)
        elif operator_name == "+":
            if isinstance(left, str | bytes | list | tuple) and isinstance(
                right, str | bytes | list | tuple
            ):
                need("the sum", len(left) + len(right))
                self.meter.charge(len(left) + len(right))
            result = operator.add(left, right)
        else:  # "%"
            if isinstance(left, str | bytes):
                check_percent_format(left, right)
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
            check_method_call(__obj, args, kwargs)
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
            formatter = BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = BoundedFormatter(self)
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
            need("the value built", len(result))
            self.meter.charge(len(result))
        elif isinstance(result, int) and not isinstance(result, bool):
            need("the number's bits", result.bit_length(), MAX_INT_BITS)
        elif isinstance(result, types.GeneratorType | map | filter | reversed | zip):
            return _metered(self.meter, result, 1)
        return result

    def _bounded_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with its value-building arguments checked and its result charged."""
        passes_arg = hasattr(func, "jinja_pass_arg")
        check = FILTER_CHECKS.get(name)
        stringifies = name in STRINGIFYING_FILTERS
        meter = self.meter

        @wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            meter.charge(CALL_COST)
            if name == "join":
                args, kwargs = materialised_join(args, kwargs)
            value_args = args[1:] if passes_arg else args
            if value_args:
                value = value_args[0]
                if isinstance(value, _WALKED_TYPES):
                    # Filters walk their value: sum, sort, unique... cost its length.
                    meter.charge(len(cast(Sized, value)))
                if stringifies and not isinstance(value, str):
                    meter.charge(text_size(value))
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

