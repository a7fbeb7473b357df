"""Templates are sandboxed, strict about undefined names, and confined to the manifest folder."""

from __future__ import annotations

import pytest

from pipeline.templates import TemplateProblem, TemplateRenderer
from pipeline.workspace import MemoryWorkspace


@pytest.fixture
def renderer() -> TemplateRenderer:
    """A renderer over a folder holding one include file."""
    return TemplateRenderer(MemoryWorkspace({"parts/style.j2": "in the style of {{ artist }}"}))


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
