"""Templates are sandboxed, strict about undefined names, and confined to the manifest folder."""

from __future__ import annotations

import itertools
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.core.apimart.rules import MAX_PROMPT_CHARS
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.core.templates.bounds import (
    MAX_OUTPUT_LENGTH,
    MAX_RENDER_WORK,
    MAX_VALUE_LENGTH,
    RENDER_DEADLINE_SECONDS,
)
from pipeline.core.templates.render import TemplateProblem, TemplateRenderer

INCLUDES = {"parts/style.j2": "in the style of {{ artist }}"}


@pytest.fixture
def renderer() -> TemplateRenderer:
    """A renderer over a folder holding one include file."""
    return TemplateRenderer(MemoryWorkspace(INCLUDES))


def test_renders_variables(renderer: TemplateRenderer) -> None:
    """Variables from the context fill the template."""
    assert renderer.render("a {{ shop }}", {"shop": "bakery"}) == "a bakery"


def test_plain_strings_pass_through(renderer: TemplateRenderer) -> None:
    """A string without Jinja syntax is returned unchanged, braces and all."""
    assert renderer.render("50% {off}", {}) == "50% {off}"


def test_undefined_variable_names_the_variable(renderer: TemplateRenderer) -> None:
    """A missing variable is an error naming it and listing what is defined."""
    with pytest.raises(TemplateProblem) as info:
        renderer.render("{{ season }} light", {"shop": "x"})
    assert info.value.variable == "season"
    assert "undefined variable 'season'" in info.value.message
    assert "shop" in info.value.hint


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ self._TemplateReference__context }}",
])
def test_python_internals_are_unreachable(renderer: TemplateRenderer, source: str) -> None:
    """Attempts to reach Python internals are errors, never values."""
    with pytest.raises(TemplateProblem):
        renderer.render(source, {})


def test_mutation_is_forbidden(renderer: TemplateRenderer) -> None:
    """The immutable sandbox refuses to modify values passed in."""
    with pytest.raises(TemplateProblem, match="sandbox"):
        renderer.render("{{ items.append(1) }}", {"items": []})


@pytest.mark.parametrize("source", ["{{ 'x' * 100000000 }}", "{{ 2 ** 100000000 }}"])
def test_value_bombs_are_refused(renderer: TemplateRenderer, source: str) -> None:
    """Expressions that would build huge values fail fast."""
    with pytest.raises(TemplateProblem):
        renderer.render(source, {})


def test_include_reads_inside_the_folder(renderer: TemplateRenderer) -> None:
    """{% include %} reads files under the manifest's folder."""
    text = renderer.render('cat, {% include "parts/style.j2" %}', {"artist": "Hokusai"})
    assert text == "cat, in the style of Hokusai"


@pytest.mark.parametrize("target", ["../secret.txt", "/etc/passwd", "parts/../../x"])
def test_include_cannot_escape(renderer: TemplateRenderer, target: str) -> None:
    """Includes outside the manifest's folder are refused."""
    with pytest.raises(TemplateProblem, match="not found"):
        renderer.render(f'{{% include "{target}" %}}', {})


def test_syntax_error_is_reported(renderer: TemplateRenderer) -> None:
    """A template syntax error says so, with a hint."""
    with pytest.raises(TemplateProblem, match="syntax error"):
        renderer.render("{{ unclosed", {})


# Templates of the kind prompts are made of, with every construct the bounds touch.
ORDINARY = {
    "filters": "{{ shop|title }} {{ tags|join(', ') }} {{ missing|default('none') }} "
               "{{ shop|replace('b', 'B') }} {{ long|truncate(20) }}",
    "wordwrap-indent": "{{ long|wordwrap(20) }}\n{{ long|wordwrap(20)|indent(4, first=true) }}",
    "center-format": "[{{ shop|center(20) }}] {{ '%05.1f|%-8s|'|format(3.14159, shop) }} "
                     "{{ '{:>10}|{:.2f}'.format(shop, 2.5) }} {{ '{x}'.format_map({'x': 1}) }}",
    "percent-op": "{{ '%s has %d items' % (shop, tags|length) }}",
    "loop-vars": "{% for t in tags %}{{ loop.index }}/{{ loop.length }} {{ t }}"
                 "{{ loop.cycle(',', ';') }}{% if loop.last %}.{% endif %}{% endfor %}",
    "loop-over-lazy": "{% for t in tags|map('upper') %}{{ t }}{{ loop.length }}{% endfor %}",
    "loop-else-filter": "{% for t in tags if t != 'red' %}{{ t }} {% else %}none{% endfor %}",
    "nested-loops": "{% for a in range(20) %}{% for b in range(20) %}{{ a * b }} "
                    "{% endfor %}{% endfor %}",
    "macro": "{% macro pair(a, b='x') %}<{{ a }}:{{ b }}>{% endmacro %}{{ pair(1) }}"
             "{{ pair(shop, b=2) }}",
    "call-block": "{% macro wrap() %}[{{ caller() }}]{% endmacro %}"
                  "{% call wrap() %}in {{ shop }}{% endcall %}",
    "recursive-loop": "{% for n in tree recursive %}{{ n.name }}"
                      "{% if n.children %}({{ loop(n.children) }}){% endif %}{% endfor %}",
    "dict-items": "{% for k, v in attrs|dictsort %}{{ k }}={{ v }};{% endfor %} "
                  "{% for k, v in attrs.items() %}{{ k }}{% endfor %}",
    "namespace": "{% set ns = namespace(total=0, s='') %}{% for i in range(10) %}"
                 "{% set ns.total = ns.total + i %}{% set ns.s = ns.s ~ i %}{% endfor %}"
                 "{{ ns.total }} {{ ns.s }}",
    "operators": "{{ shop ~ '-' ~ 3 }} {{ shop + '!' }} {{ tags + ['x'] }} {{ 'ab' * 3 }} "
                 "{{ 2 ** 10 }} {{ 7 % 3 }} {{ 10 ** 100 * 10 ** 100 }}",
    "tojson-pprint": "{{ attrs|tojson }} {{ attrs|tojson(indent=2) }} {{ tags|pprint }}",
    "sum-batch-slice": "{{ [1, 2, 3]|sum }} {{ tree|sum(attribute='size') }} "
                       "{{ [[1], [2]]|sum(start=[]) }} {{ range(7)|batch(3, 0)|list }} "
                       "{{ range(7)|slice(3)|list }}",
    "map-select": "{{ tags|map('upper')|join('/') }} {{ range(10)|select('odd')|list }} "
                  "{{ tree|map(attribute='name')|join }} {{ tree|join(',', attribute='name') }} "
                  "{{ tags|unique|list }}",
    "set-block": "{% set intro %}A {{ shop }} with {{ tags|length }} tags{% endset %}"
                 "{{ intro|upper }}",
    "filter-block": "{% filter upper %}{{ shop }} and more{% endfilter %}",
    "str-methods": "{{ shop.upper() }} {{ shop.center(12, '*') }} {{ '-'.join(tags) }} "
                   "{{ '+'.join(tags|map('upper')) }} {{ shop.replace('a', 'o') }} "
                   "{{ '7'.zfill(3) }} {{ shop.split('a') }} {{ 'a\tb'.expandtabs(4) }}",
    "include": 'cat, {% include "parts/style.j2" %}',
    "lipsum": "{{ lipsum(2, false, 5, 10)|wordcount > 0 }}",
    "slices-items": "{{ shop[1:3] }} {{ tags[0] }} {{ attrs['mood'] }} {{ long[::-1]|length }}",
    "prompt-sized": "{% for i in range(50) %}{{ long }} {% endfor %}",
}
CONTEXT: dict[str, Any] = {
    "shop": "bakery", "tags": ["red", "warm", "cozy"], "artist": "Hokusai",
    "long": "a long sentence of words that goes on for a while, " * 2,
    "attrs": {"mood": "calm", "light": "soft"},
    "tree": [{"name": "a", "size": 1, "children": [{"name": "b", "size": 2, "children": []}]},
             {"name": "c", "size": 3, "children": []}],
}


@pytest.mark.parametrize("source", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_templates_render_as_stock_jinja(renderer: TemplateRenderer, source: str) -> None:
    """The bounds change nothing for realistic templates: output equals Jinja's own sandbox."""
    stock = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, loader=jinja2.DictLoader(INCLUDES),
        autoescape=False, keep_trailing_newline=True)
    assert renderer.render(source, CONTEXT) == stock.from_string(source).render(CONTEXT)


def test_limits_sit_far_above_any_prompt() -> None:
    """The caps are generous for prompts (the API's limit is 5,000 characters)."""
    assert MAX_VALUE_LENGTH >= 10 * MAX_PROMPT_CHARS
    assert MAX_OUTPUT_LENGTH >= 10 * MAX_PROMPT_CHARS
    assert MAX_RENDER_WORK >= 100 * MAX_PROMPT_CHARS


def test_output_cap_is_inclusive() -> None:
    """Rendered text may be exactly MAX_OUTPUT_LENGTH long, not one character more."""
    renderer = TemplateRenderer(MemoryWorkspace({}), clock=lambda: 0.0)
    fill = f"{{{{ 'x' * {MAX_OUTPUT_LENGTH} }}}}"
    assert len(renderer.render(fill, {})) == MAX_OUTPUT_LENGTH
    with pytest.raises(TemplateProblem, match="the rendered text would be 100,001 long"):
        renderer.render(fill + "y", {})


# 100,000 x (1 + 10) = 1.1M loop steps: more than half the work budget.
LONG_LOOP = "{% for i in range(100000) %}{% for j in ten %}{% endfor %}{% endfor %}"
TEN = {"ten": list(range(10))}


def test_work_budget_is_per_render() -> None:
    """Each render starts with a fresh budget: two renders of 1.1M steps each both succeed."""
    renderer = TemplateRenderer(MemoryWorkspace({}), clock=lambda: 0.0)
    assert renderer.render(LONG_LOOP, TEN) == ""
    assert renderer.render(LONG_LOOP, TEN) == ""


def test_deadline_stops_a_render_the_meter_allows() -> None:
    """A render still going RENDER_DEADLINE_SECONDS after the clock's first reading stops."""
    ticks = itertools.count(step=RENDER_DEADLINE_SECONDS)
    renderer = TemplateRenderer(MemoryWorkspace({}), clock=lambda: float(next(ticks)))
    with pytest.raises(TemplateProblem, match="took longer than 1 s") as info:
        renderer.render(LONG_LOOP, TEN)
    assert "keep loops" in info.value.hint


def test_short_renders_never_read_the_clock() -> None:
    """Ordinary renders stay pure: the clock is read only by long ones."""

    def clock() -> float:
        raise AssertionError("the clock was read")

    renderer = TemplateRenderer(MemoryWorkspace(INCLUDES), clock=clock)
    for source in ORDINARY.values():
        renderer.render(source, CONTEXT)


def test_a_template_past_a_bound_is_refused_at_once_afterwards() -> None:
    """Once too costly for one context, a template fails for every other without rendering."""
    renderer = TemplateRenderer(MemoryWorkspace({}), clock=lambda: 0.0)
    square = "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}done"
    assert renderer.render(square, {"n": 3}) == "done"
    with pytest.raises(TemplateProblem, match="too costly") as first:
        renderer.render(square, {"n": 100000})
    with pytest.raises(TemplateProblem) as again:
        renderer.render(square, {"n": 3})
    assert again.value.message == first.value.message
