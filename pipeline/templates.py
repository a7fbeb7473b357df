"""Sandboxed Jinja templates: every string field of a manifest is one.

Templates come from manifests that other people write, so they run in Jinja's
immutable sandbox with ``StrictUndefined``; ``{% include %}`` reads only files in
the manifest's folder (through the ``Workspace``), and the operators that can
build huge values are bounded.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import ImgspecError
from pipeline.workspace import Workspace, read_text

# Bounds on what one expression may build: generous for prompts, fatal for bombs.
MAX_SEQUENCE_LENGTH = 100_000
MAX_EXPONENT = 1_000


class TemplateProblem(ImgspecError):
    """A template failed to compile or render; the caller anchors it in the manifest."""

    def __init__(self, message: str, hint: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.variable = variable


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


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` refusing to build huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > MAX_SEQUENCE_LENGTH
            ):
                raise SecurityError("the repeated value would be too long")
        return operator.mul(left, right)


def looks_like_template(text: str) -> bool:
    """Whether ``text`` has Jinja syntax at all (most strings don't; they skip Jinja)."""
    return "{{" in text or "{%" in text or "{#" in text


class TemplateRenderer:
    """Compiles each distinct template once and renders it against a context."""

    def __init__(self, workspace: Workspace) -> None:
        self.env = _BoundedSandbox(
            undefined=jinja2.StrictUndefined,
            loader=_WorkspaceLoader(workspace),
            autoescape=False,
            keep_trailing_newline=True,
        )
        self._compiled: dict[str, jinja2.Template] = {}

    def compile(self, source: str) -> jinja2.Template:
        """The compiled template for ``source`` (``TemplateProblem`` on a syntax error)."""
        template = self._compiled.get(source)
        if template is None:
            try:
                template = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateProblem(
                    f"template syntax error: {exc.message} (template line {exc.lineno})",
                    "fix the Jinja syntax; write {{ name }} for a variable",
                ) from exc
            self._compiled[source] = template
        return template

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render ``source``; plain strings are returned as they are."""
        if not looks_like_template(source):
            return source
        template = self.compile(source)
        try:
            return template.render(context)
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
        except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
            raise TemplateProblem(
                f"template failed: {type(exc).__name__}: {exc}",
                "check the expression's types and values",
            ) from exc


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
