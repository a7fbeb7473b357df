"""Expand a ``Manifest`` into instances: matrix, upstream fan-out and joins, templates, rules.

Pure: the only input besides the manifest is a ``Workspace`` to read local
images and template includes. Every problem in every job is collected and
raised together in one ``ManifestError``; warnings ride along in the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.apimart.images import check_image, decode_data_uri
from pipeline.core.apimart.rules import REQUEST_FIELDS, Problem, check_request, output_dimensions
from pipeline.core.expansion.fanout import Row, join_upstream
from pipeline.core.expansion.identity import (
    basis_seed,
    canonical_json,
    folder_name,
    format_value,
    make_key,
)
from pipeline.core.expansion.instances import (
    DataInput,
    Expansion,
    FileInput,
    ImageInput,
    Instance,
    UpstreamInput,
    UrlInput,
)
from pipeline.core.expansion.matrix import (
    MAX_INSTANCES_CEILING,
    Combination,
    expand_matrix,
    fold_case,
    key_order,
)
from pipeline.core.manifest.diagnostics import Diagnostic, Severity, collapse
from pipeline.core.manifest.document import DocPath, Document, format_path
from pipeline.core.manifest.graph import job_order
from pipeline.core.manifest.model import FIELD_KEYS, MODES, Job, Manifest, UpstreamRef
from pipeline.core.manifest.workspace import Workspace
from pipeline.core.templates.render import TemplateProblem, TemplateRenderer
from pipeline.errors import ImgspecError, ManifestError


def expand(manifest: Manifest, workspace: Workspace) -> Expansion:
    """Expand every job; raise ``ManifestError`` with all errors if there are any."""
    stream = Expanding(manifest, workspace)
    instances = tuple(stream)
    return Expansion(manifest, instances, stream.job_order, stream.finish())


class Expanding:
    """An expansion made one instance at a time, for a caller that cannot hold them all.

    Iterate it once: the instances come in the order ``expand`` lists them. Only then
    does ``finish`` tell whether the manifest is valid: it raises ``ManifestError``
    with every error (as ``expand`` does), so whatever was made of the instances
    before must be thrown away if it raises. Only the instances of jobs that other
    jobs take images from are held (the joins need them); the rest pass through.
    """

    def __init__(self, manifest: Manifest, workspace: Workspace) -> None:
        self.manifest = manifest
        self.job_order = tuple(job_order(manifest))
        self._state = _Expander(manifest, workspace)
        self._iterated = False

    def __iter__(self) -> Iterator[Instance]:
        if self._iterated:
            raise RuntimeError("an Expanding is iterated once")  # a bug in the caller
        self._iterated = True
        for job_id in self.job_order:
            yield from self._state.expand_job(self.manifest.jobs[job_id])

    def finish(self) -> tuple[Diagnostic, ...]:
        """The warnings, once every instance has passed; ``ManifestError`` on any error."""
        state = self._state
        errors = [d for d in state.diagnostics if d.severity == "error"]
        if errors:
            raise ManifestError(collapse(errors))
        return tuple(collapse([*self.manifest.document.warnings,
                               *(d for d in state.diagnostics if d.severity == "warning")]))


class _Expander:
    def __init__(self, manifest: Manifest, workspace: Workspace) -> None:
        self.manifest = manifest
        self.doc = manifest.document
        self.workspace = workspace
        self.renderer = TemplateRenderer(workspace)
        self.diagnostics: list[Diagnostic] = []
        # Instances of the jobs whose images other jobs take (the joins read them).
        self.by_job: dict[str, list[Instance]] = {}
        self.sources = frozenset(ref.job for job in manifest.jobs.values()
                                 for _, ref in job.upstream_refs)
        self.failed_jobs: set[str] = set()
        self.total = 0  # instances (to be) made so far, for the manifest-wide ceiling
        self._files: dict[str, FileInput | str] = {}
        self._rules: dict[str, list[Problem]] = {}
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self._origins: dict[str, dict[str, Origin]] = {}
        self._constants: dict[str, dict[str, Any]] = {}  # per job: see _constant_fields

    # -- diagnostics -------------------------------------------------------------------

    def error(self, path: DocPath, message: str, hint: str, *, instance: str | None = None,
              key: bool = False, doc: Document | None = None,
              severity: Severity = "error") -> None:
        self.diagnostics.append((doc or self.doc).diagnostic(
            path, message, hint, key=key, instance=instance, severity=severity))

    # -- jobs --------------------------------------------------------------------------

    def expand_job(self, job: Job) -> Iterator[Instance]:
        """The job's instances, one by one; problems go to ``diagnostics``."""
        if any(up in self.failed_jobs for up in job.depends_on):
            self.failed_jobs.add(job.id)  # its own errors show once the upstream is fixed
            return
        before = len([d for d in self.diagnostics if d.severity == "error"])
        limit, hint = _limit(job)
        combos = self._combinations(job, limit, hint)
        rows = self._upstream_rows(job, limit, hint)
        if combos is None or rows is None:
            self.failed_jobs.add(job.id)
            return
        total = len(rows) * len(combos)
        if total > limit:
            self.error((*job.path, "matrix") if job.matrix.axes else job.path,
                       f"job expands to {total:,} instances, more than the cap of {limit:,}",
                       hint)
            self.failed_jobs.add(job.id)
            return
        if self.total + total > MAX_INSTANCES_CEILING:
            # Each job may be under its cap while all of them together exhaust memory.
            self.error(job.path, f"with this job's {total:,} instances the manifest expands "
                                 f"to more than {MAX_INSTANCES_CEILING:,}, the most imgspec "
                                 "holds in memory", "split the manifest, or narrow matrices",
                       key=True)
            self.failed_jobs.add(job.id)
            return
        self.total += total
        out: list[Instance] | None = [] if job.id in self.sources else None
        axes = [name for name, _ in job.matrix.axes]
        own_order = key_order(combos, axes)
        context = {**self.manifest.vars, **job.vars}  # each instance adds its values

        # Each axis value as it reads in a key, formatted once (not once per instance).
        parts = [[f"{name}={format_value(v)}" for v in values] for name, values in job.matrix.axes]
        prefix = f"{job.id}@"

        def plain(combo: Combination) -> bool:
            """Whether ``combo`` has just the axes, in their order (nothing included)."""
            return len(combo.values) == len(axes) and combo.source[0] == "product"

        def values_of(inherited: Mapping[str, Any], combo: Combination) -> list[tuple[str, Any]]:
            own = combo.values
            mine = list(own.items()) if plain(combo) else [(k, own[k]) for k in own_order
                                                           if k in own]
            return [*inherited.items(), *mine] if inherited else mine

        first: dict[str, tuple[Combination, int]] = {}

        def maker(key: str) -> tuple[Combination, int]:
            """The (combination, row) that made ``key`` first. Remembering every
            instance's origin is not cheap, and a duplicate is rare: at the first one,
            one pass indexes them all (a catalogue of repeated rows stays linear)."""
            if not first:
                for row, (inherited, _) in enumerate(rows):
                    for combo in combos:
                        first.setdefault(make_key(job.id, values_of(inherited, combo)),
                                         (combo, row))
            return first[key]

        # Every key once: a second instance with the same key would be paid for and
        # overwrite the first one's folder and lock entry. Likewise every folder; but a
        # folder that is just its key's values is as unique as the key is, so only the
        # others (cleaned up, hashed) are remembered, by folder.
        made: set[str] = set()
        odd: dict[str, str] = {}
        for row, (inherited, chosen) in enumerate(rows):
            for combo in combos:
                clash = [k for k in combo.values if k in inherited] if inherited else None
                if clash:
                    self.error((*job.path, "matrix"),
                               f"matrix key {clash[0]!r} is also inherited from upstream "
                               f"{chosen[0][1].job!r}", "rename the axis")
                    self.failed_jobs.add(job.id)
                    return
                values = values_of(inherited, combo)
                if not inherited and axes and plain(combo):
                    # make_key's text, from the parts made above
                    key = prefix + ",".join([parts[a][i] for a, i in
                                             enumerate(combo.axis_indexes)])
                else:
                    key = make_key(job.id, values)
                if key in made:
                    self._duplicate(job, key, maker(key), (combo, row), "key")
                    continue
                made.add(key)
                folder = folder_name(key)
                other = odd.get(folder, key)
                job_part, _, spelled = key.partition("@")
                if folder != spelled and other == key:
                    twin = f"{job_part}@{folder}"  # the key whose values spell this folder
                    if twin in made and folder_name(twin) == folder:
                        other = twin
                    else:
                        odd[folder] = key
                if other != key:
                    self._duplicate(job, key, maker(other), (combo, row), "folder")
                    continue
                inst = self._instance(job, key, tuple(values), combo, inherited, chosen,
                                      context)
                if inst is not None:
                    if out is not None:
                        out.append(inst)
                    yield inst
        if len([d for d in self.diagnostics if d.severity == "error"]) > before:
            self.failed_jobs.add(job.id)
        if out is not None:
            self.by_job[job.id] = out

    def _duplicate(self, job: Job, key: str, first: tuple[Combination, int],
                   second: tuple[Combination, int], what: Literal["key", "folder"]) -> None:
        """Report two instances of one job sharing a key (or folder), at both places."""
        here, here_doc = self._instance_origin(job, second, first)
        there, there_doc = self._instance_origin(job, first, second)
        at = (there_doc or self.doc).position(there, key=False)
        elsewhere = f"{(there_doc or self.doc).file}:{at.line}:{at.column}"
        thing = "key" if what == "key" else f"output folder {folder_name(key)!r}"
        self.error(here, f"this makes a second instance with the {thing} of {key!r}, "
                         f"which {format_path(there)} ({elsewhere}) already makes",
                   "two instances with one key would be paid for twice and keep one "
                   "result: remove the duplicate value or row, or make the values differ",
                   doc=here_doc)

    def _instance_origin(self, job: Job, made: tuple[Combination, int],
                         other: tuple[Combination, int]) -> tuple[DocPath, Document | None]:
        """Where an instance comes from, as precisely as tells it apart from ``other``."""
        spec = job.matrix
        combo = made[0]
        if combo.source == other[0].source:
            # Same combination, different upstream rows: the upstream references decide.
            refs = job.upstream_refs
            return (refs[0][1].path if refs else job.path), None
        kind, index = combo.source
        if kind == "include":
            return (*spec.include_base, index), spec.include_doc
        other_idx = other[0].axis_indexes
        for axis, value_index in enumerate(combo.axis_indexes):
            if axis >= len(other_idx) or other_idx[axis] != value_index:
                return (*job.path, "matrix", spec.axes[axis][0], value_index), None
        return (*job.path, "matrix"), None

    def _combinations(self, job: Job, limit: int, hint: str) -> Sequence[Combination] | None:
        spec = job.matrix
        combos, problems = expand_matrix(spec.axes, spec.exclude, spec.include,
                                         limit=limit, over_limit_hint=hint)
        for p in problems:
            doc: Document | None = None
            if p.section == "exclude":
                path: DocPath = (*job.path, "matrix", "exclude", p.entry or 0)
            elif p.section == "include":
                path = (*spec.include_base, p.entry or 0)
                doc = spec.include_doc
            else:
                path = (*job.path, "matrix")
            if p.key is not None:
                path = (*path, p.key)
            self.error(path, p.message, p.hint, key=p.key is not None, doc=doc,
                       severity=p.severity)
        if any(p.severity == "error" for p in problems):
            return None
        if not combos:
            if spec.axes or spec.include:
                self.error((*job.path, "matrix"), "the matrix expands to no combinations",
                           "check exclude: it removes every combination")
                return None
            combos = [Combination({}, ("product", 0))]
        return combos

    # -- upstream fan-out and joins ------------------------------------------------------

    def _upstream_rows(
        self, job: Job, limit: int, hint: str
    ) -> list[Row] | None:
        """One row per joined combination of upstream instances: (inherited values, choices)."""
        rows: list[Row] = [({}, [])]
        for position, ref in job.upstream_refs:
            candidates = self.by_job.get(ref.job, [])
            keys: set[str] = set()
            for inst in candidates:
                keys.update(k for k, _ in inst.matrix)
            bad = [k for k, _ in ref.where if k not in keys]
            for k in bad:
                self.error((*ref.path, "where", k), f"{k!r} is not an axis of job {ref.job!r}",
                           f"use one of: {', '.join(sorted(keys)) or '(it has no axes)'}",
                           key=True)
            if bad:
                return None
            wanted = [(k, canonical_json(v)) for k, v in ref.where]
            matching = [
                inst for inst in candidates
                if all(canonical_json(dict(inst.matrix).get(k)) == v for k, v in wanted)
            ]
            joined = join_upstream(rows, position, ref, matching, limit)
            if isinstance(joined, int):
                self.error(ref.path, f"the upstream images join to {joined:,} combinations, "
                                     f"more than the cap of {limit:,}", hint)
                return None
            rows = joined
            if not rows:
                self.error(ref.path, f"no instance of job {ref.job!r} matches",
                           "check the where: values against the upstream matrix")
                return None
        return rows

    # -- one instance ------------------------------------------------------------------

    def _instance(
        self,
        job: Job,
        key: str,
        values: tuple[tuple[str, Any], ...],
        combo: Combination,
        inherited: Mapping[str, Any],
        chosen: Sequence[tuple[int, UpstreamRef, Instance]],
        job_context: Mapping[str, Any],
    ) -> Instance | None:
        """One instance, in named steps: fields, render, mode, inputs, body, rules.

        Each step reports its problems at the manifest position the value came from
        and returns None when the instance cannot be made.
        """
        draft = _Draft(self, job, key, self._fields(job, combo, inherited), combo, inherited)
        context = dict(job_context)
        context.update(values)
        context["job"] = job.id
        rendered = self._rendered(draft, context)
        if rendered is None:
            return None
        mode = self._mode(draft, rendered)
        if mode is None:
            return None
        urls = rendered.pop("image_urls", None)
        got = self._gathered(draft, urls, chosen) if urls else ([], [])
        if got is None:
            return None
        inputs, sizes = got
        seed_value = rendered.pop("seed", None)
        derived = seed_value is None
        # From the matrix values, not the job's name: a renamed or moved job asks the same.
        seed = basis_seed(key) if derived else None if seed_value == "random" else seed_value
        body = _body(rendered, mode, inputs, seed)
        if "model" not in body:
            self._no_model(job, key, combo)
            return None
        if not self._obeys_rules(draft, body, sizes, derived):
            return None
        upstream = tuple(dict.fromkeys(inst.key for _, _, inst in chosen)) if chosen else ()
        return Instance(key, job.id, values, body, tuple(inputs), seed, upstream, job.needs,
                        derived)

    def _fields(self, job: Job, combo: Combination, inherited: Mapping[str, Any]
                ) -> Mapping[str, Any]:
        """The job's fields with inherited and matrix values applied.

        An upstream's value replaces only what the job takes from ``defaults``; the
        instance's own matrix values replace anything. (``_field_origins`` says where each
        is from, when a problem needs it.)
        """
        fields: Mapping[str, Any] = job.fields
        changed: dict[str, Any] | None = None
        if inherited:
            origins = self._job_origins(job)
            for name, value in inherited.items():
                if name in FIELD_KEYS and origins.get(name, (("defaults",),))[0][0] == "defaults":
                    changed = changed if changed is not None else dict(fields)
                    changed[name] = value
        for name, value in combo.values.items():
            if name in FIELD_KEYS:
                changed = changed if changed is not None else dict(fields)
                changed[name] = value
        return fields if changed is None else changed

    def _field_origins(self, job: Job, combo: Combination, inherited: Mapping[str, Any]
                 ) -> dict[str, Origin]:
        """Where each of ``_fields`` was written."""
        origins = dict(self._job_origins(job))
        for name in inherited:
            if name in FIELD_KEYS and origins.get(name, (("defaults",),))[0][0] == "defaults":
                origins[name] = (job.path, None)
        for name in combo.values:
            if name in FIELD_KEYS:
                origins[name] = self._combo_origin(job, combo, name)
        return origins

    def _rendered(self, draft: _Draft, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """Every field rendered as a template and coerced to its type."""
        rendered: dict[str, Any] = {}
        constants = self._constant_fields(draft.job)
        own = draft.job.fields
        for name, value in draft.fields.items():
            if name in constants and own.get(name) is value:
                # The job's own value, not a template: the same for every instance.
                rendered[name] = constants[name]
                continue
            try:
                rendered[name] = _coerce(name, self._render(value, context))
            except TemplateProblem as exc:
                draft.fail(name, exc.message, exc.hint)
                return None
        return rendered

    @staticmethod
    def _mode(draft: _Draft, rendered: dict[str, Any]) -> str | None:
        """The instance's mode (``mode:``, else implied by ``image_urls``), checked."""
        mode = rendered.pop("mode", None)
        urls = rendered.get("image_urls")
        if mode is None:
            mode = "edit" if urls else "text-to-image"
        if mode not in MODES:
            draft.fail("mode", f"unknown mode {mode!r}", f"use one of: {', '.join(MODES)}")
            return None
        if mode == "edit" and not urls:
            draft.fail("mode", "mode edit needs image_urls",
                       "add image_urls, or use text-to-image")
            return None
        if mode == "text-to-image" and urls:
            draft.fail("image_urls", "image_urls make this an edit, but mode is text-to-image",
                       "set mode: edit, or remove image_urls")
            return None
        return str(mode)

    def _gathered(self, draft: _Draft, urls: Sequence[Any] | None,
                  chosen: Sequence[tuple[int, UpstreamRef, Instance]]
                  ) -> tuple[list[ImageInput], list[tuple[int, int] | None]] | None:
        """The image inputs (and their pixel sizes, where known) of ``image_urls``."""
        inputs: list[ImageInput] = []
        sizes: list[tuple[int, int] | None] = []
        refs = {pos: inst for pos, _, inst in chosen}

        def fail(message: str, hint: str) -> None:
            draft.fail("image_urls", message, hint)

        for pos, entry in enumerate(urls or ()):
            got = self._inputs(entry, refs.get(pos), fail)
            if got is None:
                return None
            for item, size in got:
                inputs.append(item)
                sizes.append(size)
        return inputs, sizes

    def _no_model(self, job: Job, key: str, combo: Combination) -> None:
        """The API requires a model; guessing one would pick the price silently."""
        path, doc = ((*job.matrix.include_base, combo.source[1]), job.matrix.include_doc) \
            if combo.source[0] == "include" else (job.path, None)
        self.error(path, "no model: the API needs one in every request",
                   "set model in defaults: or in the job, e.g. model: wan2.7-image",
                   instance=key, key=doc is None, doc=doc)

    def _obeys_rules(self, draft: _Draft, body: Mapping[str, Any],
                     sizes: Sequence[tuple[int, int] | None], derived_seed: bool) -> bool:
        """The API's rules on the body: each problem reported where its field came from."""
        problems = self._check(body, sizes, derived_seed)
        for problem in problems:
            name = problem.field if problem.field in draft.origins else (
                "mode" if problem.field == "enable_sequential" and "mode" in draft.origins
                else "")
            draft.fail(name, problem.message, problem.hint, problem.severity,
                       index=problem.index)
        return not any(p.severity == "error" for p in problems)

    def _constant_fields(self, job: Job) -> dict[str, Any]:
        """The job's fields that render the same for every instance, already coerced:
        immutable values (text, numbers, booleans) without a template in them."""
        found = self._constants.get(job.id)
        if found is None:
            found = {name: _coerce(name, value) for name, value in job.fields.items()
                     if isinstance(value, str | int | float | bool | None)
                     and not (isinstance(value, str) and "{" in value)}
            self._constants[job.id] = found
        return found

    def _job_origins(self, job: Job) -> dict[str, Origin]:
        found = self._origins.get(job.id)
        if found is None:
            found = {k: (p, None) for k, p in job.field_paths.items()}
            self._origins[job.id] = found
        return found

    def _combo_origin(self, job: Job, combo: Combination, name: str) -> Origin:
        spec = job.matrix
        setter = combo.setters.get(name)
        if setter is not None:
            entry = spec.include[setter]
            # The entry may spell the key in another case (keys are case-insensitive).
            written = next((k for k in entry if fold_case(k) == fold_case(name)), name)
            return (*spec.include_base, setter, written), spec.include_doc
        axis = [i for i, (axis, _) in enumerate(spec.axes) if axis == name]
        if axis and combo.axis_indexes:
            return (*job.path, "matrix", name, combo.axis_indexes[axis[0]]), None
        return (*job.path, "matrix", name), None

    def _render(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return self.renderer.render(value, context) if "{" in value else value
        if isinstance(value, list | tuple):
            return [self._render(v, context) for v in value]
        if isinstance(value, dict):
            return {k: self._render(v, context) for k, v in value.items()}
        return value

    def _check(self, body: Mapping[str, Any], sizes: Sequence[tuple[int, int] | None],
               derived_seed: bool) -> list[Problem]:
        """API rules, cached on everything but prompt text and derived seeds.

        The rules look at a prompt's length, not its words, and a derived seed is in
        range by construction; caching on the rest makes 100,000 instances cheap.
        """
        probe = dict(body)
        for name in ("prompt", "negative_prompt"):
            if isinstance(probe.get(name), str):
                probe[name] = len(probe[name])
        if derived_seed:
            probe["seed"] = 0
        # repr, not canonical JSON: bodies are built in one fixed field order, and this
        # runs once per instance.
        ident = repr((probe, sizes))
        found = self._rules.get(ident)
        if found is None:
            found = check_request(body, input_sizes=sizes, check_urls=False)
            self._rules[ident] = found
        return found

    # -- inputs ------------------------------------------------------------------------

    def _inputs(
        self, entry: Any, upstream: Instance | None, fail: Fail
    ) -> list[tuple[ImageInput, tuple[int, int] | None]] | None:
        if isinstance(entry, UpstreamRef):
            assert upstream is not None
            count = upstream.n
            if entry.image == "all":
                indexes = list(range(count))
            elif entry.image >= count:
                fail(f"image {entry.image} does not exist: {upstream.key} makes {count}",
                     f"use an index from 0 to {count - 1}, or image: all")
                return None
            else:
                indexes = [entry.image]
            size = self._output_size(upstream)
            return [(UpstreamInput(upstream.key, i), size) for i in indexes]
        if not isinstance(entry, str):
            fail(f"{entry!r} is not an image reference",
                 "use a URL, a data: URI, a file path, or {from: JOB}")
            return None
        if entry.startswith(("http://", "https://")):
            return [(UrlInput(entry), None)]
        if entry.startswith("data:"):
            try:
                mime, data = decode_data_uri(entry)
            except ValueError as exc:
                fail(f"invalid data URI: {exc}", "use data:image/png;base64,...")
                return None
            info = self._image_info(data, entry[:40], fail)
            if info is None:
                return None
            digest = hashlib.sha256(data).hexdigest()
            return [(DataInput(entry, mime, digest, *info), info)]
        found = self._files.get(entry)
        if found is None:
            found = self._load_file(entry)
            self._files[entry] = found
        if isinstance(found, str):
            fail(found, "give a path relative to the manifest, inside its folder")
            return None
        return [(found, (found.width, found.height))]

    def _load_file(self, relpath: str) -> FileInput | str:
        try:
            data = self.workspace.read_bytes(relpath)
        except ImgspecError as exc:
            return str(exc)
        info, problems = check_image(data)
        errors = [p for p in problems if p.severity == "error"]
        if info is None or errors:
            return f"{relpath}: " + "; ".join(p.message for p in errors or problems)
        mime = f"image/{info.format.lower()}"
        return FileInput(relpath, mime, hashlib.sha256(data).hexdigest(), info.width,
                         info.height)

    def _image_info(self, data: bytes, label: str, fail: Fail) -> tuple[int, int] | None:
        info, problems = check_image(data)
        errors = [p for p in problems if p.severity == "error"]
        if info is None or errors:
            fail(f"{label}...: " + "; ".join(p.message for p in errors or problems),
                 "use a JPEG, PNG, WEBP or BMP image within the API's limits")
            return None
        return info.width, info.height

    def _output_size(self, inst: Instance) -> tuple[int, int] | None:
        if inst.key not in self._sizes:
            try:
                self._sizes[inst.key] = output_dimensions(inst.request)
            except (ValueError, KeyError, TypeError):
                self._sizes[inst.key] = None
        return self._sizes[inst.key]


Origin = tuple[DocPath, "Document | None"]  # where a value was written (document, path)
Fail = Callable[[str, str], None]  # report (message, hint) at the value being checked


@dataclass(slots=True)
class _Draft:
    """One instance while it is being made: its fields, and how to fail."""

    expander: _Expander
    job: Job
    key: str
    fields: Mapping[str, Any]
    combo: Combination
    inherited: Mapping[str, Any]
    known_origins: dict[str, Origin] | None = None

    @property
    def origins(self) -> dict[str, Origin]:
        """Where each field's value was written; worked out only when a problem asks."""
        if self.known_origins is None:
            self.known_origins = self.expander._field_origins(self.job, self.combo, self.inherited)
        return self.known_origins

    def fail(self, name: str, message: str, hint: str, severity: Severity = "error", *,
             index: int | None = None) -> None:
        """Report a problem with field ``name`` where that field's value was written (with
        ``index``, at that entry of a list written there)."""
        path, doc = self.origins.get(name, (self.job.path, None))
        if index is not None and name:
            path = (*path, index)
        self.expander.error(path, message, hint, instance=self.key, doc=doc, severity=severity)


def _body(rendered: Mapping[str, Any], mode: str, inputs: Sequence[ImageInput],
          seed: int | None) -> dict[str, Any]:
    """The wire body, in the API's field order; inputs appear by their ``ref``."""
    body: dict[str, Any] = {}
    for name in REQUEST_FIELDS:
        if name == "image_urls" and inputs:
            body[name] = [i.ref for i in inputs]
        elif name == "seed" and seed is not None:
            body[name] = seed
        elif name == "enable_sequential" and mode == "sequential":
            body[name] = True
        elif name in rendered:
            body[name] = rendered[name]
    return body


def _limit(job: Job) -> tuple[int, str]:
    """The job's instance cap and the advice for exceeding it."""
    if job.max_instances > MAX_INSTANCES_CEILING:
        return MAX_INSTANCES_CEILING, (
            f"imgspec holds at most {MAX_INSTANCES_CEILING:,} instances of one job in "
            "memory, whatever max_instances says: narrow the matrix or the upstream "
            "where:, or split the job")
    return job.max_instances, ("narrow the matrix or the upstream where:, or raise "
                               "max_instances if you really mean it")


_TRUE = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _coerce(name: str, value: Any) -> Any:
    """Values from CSV rows and templates are text; give numeric and boolean fields their type."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name in ("n", "seed") and text.isdigit():
        return int(text)
    if name in ("watermark", "thinking_mode") and text.lower() in _TRUE:
        return _TRUE[text.lower()]
    return value
