"""Schema validation reports every mistake at once, each at its line and column."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.manifest.graph import job_order
from pipeline.core.manifest.model import Manifest
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.errors import ManifestError
from pipeline.shell.store.manifests import parse_manifest

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
    assert any(e.startswith("m.yaml:8:5: error: jobs.a.sise: unknown field 'sise'; "
                            "did you mean 'size'") for e in found)
    assert any(e.startswith("m.yaml:7:8: error: jobs.a.n:") for e in found)
    assert any(e.startswith("m.yaml:10:12: error: jobs.b.model:") for e in found)


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


# -- hostile amounts and YAML 1.2 in included rows (issues 8.7, 9.5) -------------------


@pytest.mark.parametrize("body", [
    "budget: {max_cost: 1.0e+300}\njobs: {a: {prompt: x}}\n",
    "pricing: {wan2.7-image: 1000000001}\njobs: {a: {prompt: x}}\n",
])
def test_huge_price_or_budget_is_refused_at_its_position(parse: Parse, body: str) -> None:
    """Amounts past a billion CNY are refused where written (they broke money formatting)."""
    (error,) = errors_of(parse, body)
    assert error.startswith("m.yaml:3:")
    assert "more than imgspec can count; use an amount from 0 to 1,000,000,000 CNY" in error


def test_largest_amount_is_fine(parse: Parse) -> None:
    """A billion CNY is still an amount."""
    manifest = parse("budget: {max_cost: 1000000000}\njobs: {a: {prompt: x}}\n")
    assert manifest.budget == 1_000_000_000


def test_included_yaml_rows_read_as_yaml12_with_warnings(parse: Parse) -> None:
    """Rows in an included YAML file keep `NO` as text and warn at the row file's line."""
    manifest = parse("""
        jobs:
          p:
            prompt: "flag of {{ country }}"
            matrix: {include: rows.yaml}
    """, files={"rows.yaml": "- {country: SE}\n- {country: NO}\n"})
    assert manifest.jobs["p"].matrix.include == ({"country": "SE"}, {"country": "NO"})
    (warning,) = manifest.document.warnings
    assert warning.format(snippet=False).startswith("rows.yaml:2:13: warning: [1].country: NO")


def test_included_rows_with_a_lone_surrogate_are_refused(parse: Parse) -> None:
    """A JSON include file's `"\\ud800"` is an error in that file, not a crash later."""
    with pytest.raises(ManifestError, match="lone surrogate") as info:
        parse("jobs:\n  p: {prompt: x, matrix: {include: rows.json}}\n",
              files={"rows.json": '[{"a": "\\ud800"}]'})
    assert info.value.diagnostics[0].file == "rows.json"


# -- job order (issue 9.7) -------------------------------------------------------------


def rounds_order(deps: dict[str, set[str]]) -> list[str] | str:
    """What job_order gave before it became linear: its order, or its cycle's text.

    The old code verbatim: rescan every job each round; on a cycle, walk the
    remaining jobs from the first, always to the first (by name) remaining upstream.
    """
    order: list[str] = []
    remaining = dict(deps)
    while remaining:
        ready = [j for j in deps if j in remaining and not (remaining[j] & set(remaining))]
        if not ready:
            path: list[str] = []
            node = next(iter(remaining))
            while node not in path:
                path.append(node)
                node = sorted(d for d in remaining[node] if d in remaining)[0]
            cycle = list(reversed(path[path.index(node):]))
            return " -> ".join([*cycle, cycle[0]])
        for job_id in ready:
            order.append(job_id)
            del remaining[job_id]
    return order


def manifest_of(needs: dict[str, list[str]]) -> str:
    """A manifest with one job per key, each needing the listed jobs."""
    lines = ["version: 1", "name: t", "defaults: {model: wan2.7-image}", "jobs:"]
    for job_id, wanted in needs.items():
        lines.append(f"  {job_id}: {{prompt: x, needs: [{', '.join(wanted)}]}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), max_size=4), min_size=1, max_size=12))
def test_job_order_is_the_same_as_before(edges: list[list[int]]) -> None:
    """On random graphs (cycles included) the linear order equals the old round-by-round one."""
    names = [f"j{(i * 7) % 12}-{i}" for i in range(len(edges))]  # not in sorted order
    needs = {name: sorted({names[e] for e in wanted if e < len(names)} - {name})
             for name, wanted in zip(names, edges, strict=True)}
    manifest = parse_manifest(manifest_of(needs), file="m.yaml", workspace=MemoryWorkspace())
    expected = rounds_order({k: set(v) for k, v in needs.items()})
    if isinstance(expected, str):
        with pytest.raises(ManifestError) as info:
            job_order(manifest)
        assert info.value.diagnostics[0].message == f"jobs form a cycle: {expected}"
    else:
        assert job_order(manifest) == expected


def test_long_needs_chain_is_ordered() -> None:
    """A 2,000-job chain written backwards comes out upstream first."""
    needs = {f"j{i}": [f"j{i + 1}"] if i < 1999 else [] for i in range(2000)}
    manifest = parse_manifest(manifest_of(needs), file="m.yaml", workspace=MemoryWorkspace())
    assert job_order(manifest) == [f"j{i}" for i in reversed(range(2000))]


def test_cycle_through_a_long_chain_is_reported_as_before() -> None:
    """The cycle message names the same jobs, in the same order, as the old algorithm."""
    needs = {f"j{i}": [f"j{i - 1}"] if i else ["j1999"] for i in range(2000)}
    needs["k"] = ["j5"]
    manifest = parse_manifest(manifest_of(needs), file="m.yaml", workspace=MemoryWorkspace())
    with pytest.raises(ManifestError) as info:
        job_order(manifest)
    (diag,) = info.value.diagnostics
    expected = rounds_order({k: set(v) for k, v in needs.items()})
    assert diag.message == f"jobs form a cycle: {expected}"
    assert diag.message.startswith("jobs form a cycle: j1 -> j2 -> j3")
    assert diag.message.endswith("j1999 -> j0 -> j1")
    assert (diag.line, diag.where) == (6, "jobs.j1")
