"""Schema validation reports every mistake at once, each at its line and column."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.errors import ManifestError
from pipeline.manifest import parse_manifest
from pipeline.model import Manifest
from pipeline.workspace import MemoryWorkspace

Parse = Callable[..., Manifest]


def errors_of(parse: Parse, body: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse(body)
    return [d.format(snippet=False) for d in info.value.diagnostics]


def test_minimal_manifest_parses(parse: Parse) -> None:
    """A job with a prompt is a complete manifest; defaults merge under job fields."""
    manifest = parse("""
        defaults: {model: wan2.7-image, size: 1K}
        jobs:
          a: {prompt: hi, size: 2K}
    """)
    job = manifest.jobs["a"]
    assert job.fields == {"model": "wan2.7-image", "size": "2K", "prompt": "hi"}
    assert job.field_paths["size"] == ("jobs", "a", "size")
    assert job.field_paths["model"] == ("defaults", "model")


def test_all_errors_at_once_with_positions(parse: Parse) -> None:
    """Several mistakes give several positioned errors in one report."""
    found = errors_of(parse, """
        jobs:
          a:
            prompt: hi
            n: 99
            sise: 2K
          b:
            model: wan2.6
    """)
    assert len(found) == 3
    assert found == sorted(found, key=lambda e: int(e.split(":")[1]))
    assert any(e.startswith("m.yaml:8:5: jobs.a.sise: unknown field 'sise'; did you mean 'size'")
               for e in found)
    assert any(e.startswith("m.yaml:7:8: jobs.a.n:") for e in found)
    assert any(e.startswith("m.yaml:10:12: jobs.b.model:") for e in found)


def test_missing_required_field(parse: Parse) -> None:
    """A manifest without jobs says jobs is required."""
    with pytest.raises(ManifestError, match="'jobs' is required"):
        parse_manifest("version: 1\nname: x\n", file="m.yaml", workspace=MemoryWorkspace())


def test_wrong_version(parse: Parse) -> None:
    """Only manifest version 1 is understood."""
    with pytest.raises(ManifestError, match="version"):
        parse_manifest("version: 2\nname: x\njobs: {a: {prompt: x}}\n", file="m.yaml",
                       workspace=MemoryWorkspace())


def test_non_mapping_document(parse: Parse) -> None:
    """A YAML list or scalar is not a manifest."""
    with pytest.raises(ManifestError, match="must be a mapping"):
        parse_manifest("- 1\n- 2\n", file="m.yaml", workspace=MemoryWorkspace())


def test_diagnostic_has_snippet_and_caret(parse: Parse) -> None:
    """Formatted errors show the source line and a caret under the column."""
    with pytest.raises(ManifestError) as info:
        parse("jobs:\n  a: {prompt: hi, n: 0}\n")
    text = info.value.diagnostics[0].format()
    assert "  a: {prompt: hi, n: 0}" in text
    assert text.splitlines()[-1].endswith("^")


def test_include_file_rows(parse: Parse) -> None:
    """`include:` may name a CSV file whose rows become matrix rows."""
    manifest = parse("""
        jobs:
          p:
            prompt: "{{ product }}"
            matrix: {include: rows.csv}
    """, files={"rows.csv": "product,colour\nvase,green\ncan,copper\n"})
    assert manifest.jobs["p"].matrix.include == (
        {"product": "vase", "colour": "green"}, {"product": "can", "colour": "copper"})


def test_include_file_missing(parse: Parse) -> None:
    """A missing include file is a positioned error."""
    with pytest.raises(ManifestError, match="no such file"):
        parse("jobs:\n  p: {prompt: x, matrix: {include: nope.csv}}\n")


def test_include_file_outside_folder(parse: Parse) -> None:
    """An include path that escapes the manifest's folder is refused."""
    with pytest.raises(ManifestError, match=r"'\.\.' is not allowed"):
        parse("jobs:\n  p: {prompt: x, matrix: {include: ../rows.csv}}\n")


def test_pricing_override(parse: Parse) -> None:
    """`pricing:` overrides the default price table."""
    manifest = parse("pricing: {wan2.7-image: 0.25}\njobs: {a: {prompt: x}}\n")
    assert str(manifest.pricing.price("wan2.7-image")) == "0.25"
    assert str(manifest.pricing.price("wan2.7-image-pro")) == "0.50"
