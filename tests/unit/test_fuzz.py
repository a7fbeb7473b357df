"""Random manifests and random bytes never produce a traceback: only ImgspecError."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.expansion.expand import expand
from pipeline.core.lock.lockfile import Lockfile, parse_lockfile
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.core.planning.plan import make_plan
from pipeline.errors import ImgspecError
from pipeline.shell.store.manifests import parse_manifest
from tests.hostile.mutations import example_files, examples, exercise, hostile_manifest
from tests.unit.conftest import png_bytes

FILES: dict[str, bytes | str] = {
    "a.png": png_bytes(300, 300), "rows.csv": "x,n\n1,2\n3,x\n", "t.j2": "{{ x }}"}
SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.sampled_from(
    ["wan2.7-image", "wan2.7-image-pro", "2K", "4K", "1K", "16:9", "999x999", "edit",
     "sequential", "text-to-image", "random", "{{ x }}", "{{ missing }}", "a.png",
     "https://x/y.png", "data:image/png;base64,AAAA", "rows.csv", "{{ ''.__class__ }}",
     "{% include 't.j2' %}", "../up.png", "#FFFFFF", "50.00%", "all"]), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["from", "where", "image", "hex", "ratio", "x", "n", "model", "size"]), inner,
        max_size=3)), max_leaves=12)
field_names = st.sampled_from(
    ["model", "mode", "prompt", "negative_prompt", "n", "size", "resolution", "seed",
     "watermark", "thinking_mode", "color_palette", "bbox_list", "image_urls", "vars",
     "needs", "matrix", "max_instances", "bogus"])
jobs = st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.dictionaries(field_names, values, max_size=6), min_size=1, max_size=3)
manifests = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2]), "name": st.sampled_from(["t", "T!", "ok-1"]),
     "jobs": jobs},
    optional={"defaults": st.dictionaries(field_names, values, max_size=3),
              "vars": st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2),
              "budget": st.fixed_dictionaries({"max_cost": st.integers(-1, 50)}),
              "pricing": st.dictionaries(st.sampled_from(["wan2.7-image", "other"]),
                                         st.integers(-1, 3), max_size=2)})


def run_core(text: str) -> None:
    workspace = MemoryWorkspace(FILES)
    try:
        manifest = parse_manifest(text, file="m.yaml", workspace=workspace)
        expansion = expand(manifest, workspace)
        make_plan(expansion, Lockfile("m.yaml"), present=lambda p: False)
    except ImgspecError:
        pass


@SETTINGS
@given(manifests)
def test_random_manifests_never_traceback(data: dict[str, Any]) -> None:
    """Structured random manifests end in a value or an ImgspecError."""
    run_core(yaml.safe_dump(data, allow_unicode=True))


EXAMPLES = examples()
EXAMPLE_FILES = MemoryWorkspace(example_files())


@SETTINGS
@given(st.data())
def test_hostile_example_manifests_never_traceback(data: st.DataObject) -> None:
    """Example manifests made hostile end in a printed plan or an ImgspecError, nothing else."""
    # Values, keys or entries swapped for surrogates, NaN, huge numbers, deep nesting,
    # YAML 1.1 scalars, bad paths...; bench/fuzz_manifests.py runs 50,000 by hand.

    def choose(n: int) -> int:
        return data.draw(st.integers(0, n - 1))

    text = hostile_manifest(choose, bases=EXAMPLES)
    with contextlib.suppress(ImgspecError):
        exercise(text, EXAMPLE_FILES)


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_never_tracebacks(text: str) -> None:
    """Arbitrary text is either a manifest or a clear error."""
    run_core(text)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_lockfile_never_traceback(data: bytes) -> None:
    """Arbitrary lockfile content is a LockfileError, never a crash."""
    with contextlib.suppress(ImgspecError):
        parse_lockfile(data.decode("utf-8", errors="replace"))
