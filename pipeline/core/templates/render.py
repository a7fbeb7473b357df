"""Sandboxed Jinja templates: every string field of a manifest is one.

Templates come from manifests that other people write, so they run in the bounded
sandbox (``sandbox.py``: Jinja's immutable sandbox, plus caps on every value and a
work meter and deadline per render) with ``StrictUndefined``; ``{% include %}``
reads only files in the manifest's folder (through the ``Workspace``).

Recursion (macros, includes, nesting too deep to compile) ends in
``RecursionError``, caught; and a template that failed for good is refused at once
for its other instances, so a bomb costs one render, not one per instance. The
limits are far above what a prompt needs (the API takes at most
``rules.MAX_PROMPT_CHARS`` = 5,000 characters) and far below what hurts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from pipeline.core.manifest.document import text_problem
from pipeline.core.manifest.workspace import Workspace
from pipeline.core.templates.bounds import (
    CLOCK_AFTER_WORK,
    MAX_OUTPUT_LENGTH,
    LimitExceeded,
    Meter,
    need,
)
from pipeline.core.templates.sandbox import LIMIT_HINT, BoundedSandbox, WorkspaceLoader
from pipeline.errors import ImgspecError


class TemplateProblem(ImgspecError):
    """A template failed to compile or render; the caller anchors it in the manifest."""

    def __init__(self, message: str, hint: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.variable = variable


def looks_like_template(text: str) -> bool:
    """Whether ``text`` has Jinja syntax at all (most strings don't; they skip Jinja)."""
    return "{{" in text or "{%" in text or "{#" in text


class TemplateRenderer:
    """Compiles each distinct template once and renders it against a context, bounded.

    One renderer renders one template at a time (the meter is per renderer).
    """

    def __init__(self, workspace: Workspace, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._meter = Meter(clock)
        self.env = BoundedSandbox(
            self._meter,
            undefined=jinja2.StrictUndefined,
            loader=WorkspaceLoader(workspace),
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
                    source, "the template is nested too deeply to compile", LIMIT_HINT
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
            need("the rendered text", len(text), MAX_OUTPUT_LENGTH)
            # Escapes in the template ("\ud800", "\x00") can make text the loader
            # never saw: refuse it here, before a fingerprint or a request needs it.
            bad = text_problem(text)
            if bad is not None:
                raise TemplateProblem(f"the rendered text is not sendable: {bad[0]}", bad[1])
            return text
        except LimitExceeded as exc:
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

    def _refuse(self, source: str, message: str, hint: str = LIMIT_HINT) -> TemplateProblem:
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
