"""Expansion: matrix values, fan-out from upstream jobs, joins, keys, seeds, modes and rules."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping

import pytest

from pipeline.core.expansion.expand import expand
from pipeline.core.expansion.identity import basis_seed
from pipeline.core.expansion.instances import Expansion, FileInput, UpstreamInput
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.core.planning.plan import resolved_request
from pipeline.errors import ManifestError
from pipeline.shell.store.manifests import parse_manifest
from tests.unit.conftest import Build, manifest_text, png_bytes


@pytest.fixture
def build(build: Build) -> Build:
    """The conftest's build, with `defaults: {model: ...}` appended when a manifest has none.

    The model is required; appending (not prepending) keeps every line number as written.
    """

    def _build(body: str, files: Mapping[str, bytes | str] | None = None) -> Expansion:
        text = textwrap.dedent(body)
        if "defaults:" not in text:
            text += "defaults: {model: wan2.7-image}\n"
        return build(text, files)

    return _build


def error_text(build: Build, body: str, files: dict[str, bytes | str] | None = None) -> str:
    with pytest.raises(ManifestError) as info:
        build(body, files)
    return str(info.value)


def test_matrix_axes_set_fields_and_variables(build: Build) -> None:
    """An axis named after a request field sets it; any other axis is a template variable."""
    exp = build("""
        jobs:
          s:
            prompt: "a {{ shop }}"
            matrix: {shop: [bakery, florist], model: [wan2.7-image, wan2.7-image-pro]}
    """)
    keys = [i.key for i in exp.instances]
    assert keys == [
        "s@shop=bakery,model=wan2.7-image", "s@shop=bakery,model=wan2.7-image-pro",
        "s@shop=florist,model=wan2.7-image", "s@shop=florist,model=wan2.7-image-pro"]
    assert exp.instances[1].request["model"] == "wan2.7-image-pro"
    assert exp.instances[2].request["prompt"] == "a florist"


def test_context_precedence(build: Build) -> None:
    """Manifest vars < job vars < matrix values < the job id."""
    exp = build("""
        vars: {a: manifest, b: manifest, c: manifest}
        jobs:
          j:
            vars: {b: job, c: job}
            prompt: "{{ a }} {{ b }} {{ c }} {{ job }}"
            matrix: {c: [matrix]}
    """)
    assert exp.instances[0].request["prompt"] == "manifest job matrix j"


def test_fan_out_one_instance_per_matching_upstream(build: Build) -> None:
    """An edit job gets one instance per upstream instance matching `where`, inheriting values."""
    exp = build("""
        jobs:
          gen:
            prompt: "{{ shop }} in {{ season }}"
            n: 2
            matrix: {shop: [a, b], season: [spring, winter]}
          night:
            prompt: "{{ shop }} at night"
            image_urls: [{from: gen, where: {season: winter}, image: 1}]
    """)
    night = [i for i in exp.instances if i.job == "night"]
    assert [i.key for i in night] == ["night@shop=a,season=winter", "night@shop=b,season=winter"]
    assert night[0].upstream == ("gen@shop=a,season=winter",)
    assert night[0].inputs == (UpstreamInput("gen@shop=a,season=winter", 1),)
    assert night[0].request["prompt"] == "a at night"
    assert night[0].request["image_urls"] == ["upstream:gen@shop=a,season=winter#1"]


def test_image_all_takes_every_upstream_image(build: Build) -> None:
    """`image: all` feeds every image of the upstream instance."""
    exp = build("""
        jobs:
          gen: {prompt: x, n: 3}
          fuse: {prompt: y, image_urls: [{from: gen, image: all}]}
    """)
    fuse = exp.instances[-1]
    assert [i.index for i in fuse.inputs if isinstance(i, UpstreamInput)] == [0, 1, 2]


def test_join_on_shared_axes(build: Build) -> None:
    """Several `from` entries join on the axes their upstreams share; own matrix crosses on top."""
    exp = build("""
        jobs:
          car:
            prompt: "{{ colour }} car"
            matrix: {colour: [red, blue], make: [x, y]}
          paint:
            prompt: "{{ colour }} paint"
            matrix: {colour: [red, blue]}
          fuse:
            prompt: "{{ colour }} {{ make }} {{ style }}"
            image_urls: [{from: car}, {from: paint}]
            matrix: {style: [matte, gloss]}
    """)
    fuse = [i for i in exp.instances if i.job == "fuse"]
    assert len(fuse) == 4 * 2
    first = fuse[0]
    assert first.key == "fuse@colour=red,make=x,style=matte"
    assert first.upstream == ("car@colour=red,make=x", "paint@colour=red")
    assert all(dict(i.matrix)["colour"] in i.upstream[1] for i in fuse)


def test_join_with_no_shared_axes_is_a_cross_product(build: Build) -> None:
    """Upstreams without shared axes combine every pair."""
    exp = build("""
        jobs:
          a: {prompt: x, matrix: {p: [1, 2]}}
          b: {prompt: x, matrix: {q: [1, 2, 3]}}
          c: {prompt: x, image_urls: [{from: a}, {from: b}]}
    """)
    assert len([i for i in exp.instances if i.job == "c"]) == 6


def test_inherited_request_axis_sets_field_unless_job_sets_it(build: Build) -> None:
    """An upstream's model axis carries into the edit, unless the edit job sets model itself."""
    exp = build("""
        jobs:
          gen: {prompt: x, matrix: {model: [wan2.7-image, wan2.7-image-pro]}}
          inherit: {prompt: y, image_urls: [{from: gen}]}
          own: {prompt: y, model: wan2.7-image, image_urls: [{from: gen}]}
    """)
    by_job: dict[str, list[str]] = {}
    for inst in exp.instances:
        by_job.setdefault(inst.job, []).append(inst.model)
    assert by_job["inherit"] == ["wan2.7-image", "wan2.7-image-pro"]
    assert by_job["own"] == ["wan2.7-image", "wan2.7-image"]


@pytest.mark.parametrize(("body", "message"), [
    ("jobs:\n  a: {prompt: x, image_urls: [{from: nope}]}\n", "unknown job 'nope'"),
    ("jobs:\n  a: {prompt: x, needs: [nope]}\n", "unknown job 'nope'"),
    ("jobs:\n  a: {prompt: x, image_urls: [{from: a}]}\n", "cannot use its own images"),
    ("jobs:\n  a: {prompt: x, needs: [b]}\n  b: {prompt: x, needs: [a]}\n",
     "jobs form a cycle"),
    ("jobs:\n  a: {prompt: x, matrix: {s: [1]}}\n"
     "  b: {prompt: x, image_urls: [{from: a, where: {t: 1}}]}\n", "'t' is not an axis"),
    ("jobs:\n  a: {prompt: x, matrix: {s: [1]}}\n"
     "  b: {prompt: x, image_urls: [{from: a, where: {s: 2}}]}\n", "no instance of job 'a'"),
    ("jobs:\n  a: {prompt: x, n: 2}\n  b: {prompt: x, image_urls: [{from: a, image: 2}]}\n",
     "image 2 does not exist"),
])
def test_graph_errors(build: Build, body: str, message: str) -> None:
    """Unknown jobs, self-references, cycles and bad where/image references are errors."""
    assert message in error_text(build, body)


def test_needs_orders_without_images(build: Build) -> None:
    """`needs:` puts the job after its dependency and records the edge."""
    exp = build("jobs:\n  b: {prompt: x, needs: [a]}\n  a: {prompt: y}\n")
    assert exp.job_order == ("a", "b")
    assert exp.instances[-1].needs == ("a",)


def test_undefined_variable_error_names_everything(build: Build) -> None:
    """A missing variable names the variable, the job, the matrix values and the position."""
    text = error_text(build, """
        jobs:
          s:
            prompt: "{{ shop }} in {{ season }}"
            matrix: {shop: [bakery]}
    """)
    assert "m.yaml:6:13: error: jobs.s.prompt: undefined variable 'season'" in text
    assert "s@shop=bakery" in text


def test_same_error_in_many_instances_is_reported_once(build: Build) -> None:
    """One mistake broken by many instances is one error with a count."""
    text = error_text(build, """
        jobs:
          s:
            prompt: "{{ missing }}"
            matrix: {i: [1, 2, 3, 4, 5]}
    """)
    assert text.count("undefined variable") == 1
    assert "in 5 instances" in text


def test_seeds_derived_explicit_and_random(build: Build) -> None:
    """No seed → derived from the matrix values; an int is kept; `random` sends none."""
    exp = build("""
        jobs:
          a: {prompt: x}
          b: {prompt: x, seed: 42}
          c: {prompt: x, seed: random}
    """)
    a, b, c = exp.instances
    assert a.seed == a.request["seed"] == basis_seed(a.key)
    assert a.derived_seed
    assert not b.derived_seed
    assert b.request["seed"] == 42
    assert c.seed is None
    assert "seed" not in c.request


def test_modes(build: Build) -> None:
    """Sequential sends enable_sequential; images imply edit; contradictions are errors."""
    exp = build("jobs:\n  s: {prompt: x, mode: sequential, n: 8}\n")
    assert exp.instances[0].request["enable_sequential"] is True
    assert "mode edit needs image_urls" in error_text(
        build, "jobs:\n  e: {prompt: x, mode: edit}\n")
    assert "mode is text-to-image" in error_text(
        build, "jobs:\n  e: {prompt: x, mode: text-to-image, image_urls: [https://x/a.png]}\n")


def test_api_rule_errors_point_at_the_field(build: Build) -> None:
    """An API rule broken by a rendered request points at the field's line."""
    text = error_text(build, "jobs:\n  a:\n    prompt: x\n    n: 6\n")
    assert "m.yaml:6:8: error: jobs.a.n:" in text


def test_api_rule_errors_point_at_the_matrix_axis(build: Build) -> None:
    """A value set by a matrix axis is blamed on that axis."""
    text = error_text(build, """
        jobs:
          a:
            prompt: x
            mode: edit
            image_urls: [https://example.com/a.png]
            matrix: {size: [2K, 4K]}
    """)
    assert "jobs.a.matrix.size" in text
    assert "a@size=4K" in text


def test_warnings_for_ignored_fields(build: Build) -> None:
    """Fields the API ignores in a mode are warnings, not errors."""
    exp = build("jobs:\n  s: {prompt: x, mode: sequential, thinking_mode: true}\n")
    assert exp.warnings
    assert exp.warnings[0].severity == "warning"
    assert "thinking_mode" in exp.warnings[0].format()


def test_local_images_are_read_checked_and_hashed(build: Build) -> None:
    """Local inputs are read from the workspace, checked against the API's limits, hashed."""
    exp = build("jobs:\n  e: {prompt: x, image_urls: [a.png]}\n", {"a.png": png_bytes(300, 400)})
    (item,) = exp.instances[0].inputs
    assert isinstance(item, FileInput)
    assert (item.width, item.height) == (300, 400)
    assert exp.instances[0].request["image_urls"] == [f"file:a.png#sha256={item.sha256}"]
    text = error_text(build, "jobs:\n  e: {prompt: x, image_urls: [b.png]}\n",
                      {"b.png": png_bytes(100, 100)})
    assert "b.png" in text
    assert "jobs.e.image_urls" in text


def test_missing_local_image(build: Build) -> None:
    """A missing local image is an error at the image_urls field."""
    assert "no such file" in error_text(build, "jobs:\n  e: {prompt: x, image_urls: [a.png]}\n")


def test_csv_values_get_field_types(build: Build) -> None:
    """CSV text in numeric and boolean fields becomes int and bool."""
    exp = build("jobs:\n  p: {prompt: '{{ item }}', matrix: {include: r.csv}}\n",
                {"r.csv": "item,n,watermark\nvase,2,true\ncan,1,no\n"})
    assert [(i.request["n"], i.request["watermark"]) for i in exp.instances] == [
        (2, True), (1, False)]


def test_instance_cap(build: Build) -> None:
    """More instances than max_instances fails loudly."""
    text = error_text(
        build, "max_instances: 3\njobs:\n  a: {prompt: x, matrix: {i: [1, 2, 3, 4]}}\n")
    assert "cap of 3" in text


def test_keys_and_fingerprints_survive_reordering(build: Build) -> None:
    """Reordering jobs and fields changes neither keys nor fingerprints."""
    one = build("""
        jobs:
          a: {prompt: "{{ x }}", size: 1K, matrix: {x: [p, q]}}
          b: {prompt: y, image_urls: [{from: a}]}
    """)
    two = build("""
        jobs:
          b: {image_urls: [{from: a}], prompt: y}
          a: {matrix: {x: [p, q]}, size: 1K, prompt: "{{ x }}"}
    """)
    def ids(exp: object) -> set[tuple[str, str]]:
        return {(i.key, str(resolved_request(i, {}))) for i in exp.instances}  # type: ignore[attr-defined]
    assert ids(one) == ids(two)


def test_keys_stable_when_other_rows_change(build: Build) -> None:
    """Adding a row or a job leaves existing keys and requests untouched."""
    before = build("jobs:\n  a: {prompt: '{{ x }}', matrix: {x: [p, q]}}\n")
    after = build("jobs:\n  a: {prompt: '{{ x }}', matrix: {x: [p, q, r]}}\n  z: {prompt: z}\n")
    old = {i.key: i.request for i in before.instances}
    new = {i.key: i.request for i in after.instances}
    assert all(new[k] == v for k, v in old.items())


def bare(body: str, files: Mapping[str, bytes | str] | None = None) -> Expansion:
    """Expand a manifest exactly as written (no default model appended)."""
    workspace = MemoryWorkspace(files or {})
    return expand(parse_manifest(manifest_text(body), file="m.yaml", workspace=workspace),
                  workspace)


def bare_error(body: str, files: Mapping[str, bytes | str] | None = None) -> str:
    with pytest.raises(ManifestError) as info:
        bare(body, files)
    return str(info.value)


def test_duplicate_axis_value_is_refused_with_both_positions(build: Build) -> None:
    """`a: [x, x, y]` makes two instances with one key: an error at the second value
    naming the first one's position (issue 8.2)."""
    text = error_text(build, "jobs:\n  m: {prompt: x, matrix: {a: [x, x, y]}}\n")
    assert ("m.yaml:4:34: error: jobs.m.matrix.a[1]: this makes a second instance with the key of "
            "'m@a=x', which jobs.m.matrix.a[0] (m.yaml:4:31) already makes") in text
    assert "1 error:" in text


@pytest.mark.parametrize("values", ['[1, "1"]', '[true, "true"]', '[null, "null"]',
                                    '[x, "x"]'])
def test_values_rendering_to_one_key_are_refused(build: Build, values: str) -> None:
    """Different YAML values whose keys render alike (1 and "1") are duplicates too."""
    text = error_text(build, f"jobs:\n  m: {{prompt: x, matrix: {{a: {values}}}}}\n")
    assert "jobs.m.matrix.a[1]: this makes a second instance with the key" in text
    assert "jobs.m.matrix.a[0] (m.yaml:4:" in text


def test_duplicate_include_rows_are_refused(build: Build) -> None:
    """Two identical inline include rows are both appended: refused at the second row."""
    text = error_text(build, """
        jobs:
          m:
            prompt: x
            matrix:
              include:
                - {p: vase}
                - {p: vase}
    """)
    assert ("m.yaml:10:11: error: jobs.m.matrix.include[1]: this makes a second instance with the "
            "key of 'm@p=vase', which jobs.m.matrix.include[0] (m.yaml:9:11)") in text


def test_duplicate_csv_rows_are_refused_at_their_lines(build: Build) -> None:
    """A catalogue with the same row twice points into the CSV at both lines."""
    text = error_text(build, "jobs:\n  c: {prompt: '{{ p }}', matrix: {include: r.csv}}\n",
                      {"r.csv": "p,q\nvase,1\ncan,2\nvase,1\n"})
    assert ("r.csv:4:1: error: [2]: this makes a second instance with the key of 'c@p=vase,q=1', "
            "which [0] (r.csv:2:1) already makes") in text


def test_shared_output_folder_is_refused(build: Build) -> None:
    """Two keys that sanitise to one output folder are refused like one key."""
    from pipeline.core.expansion.identity import folder_name

    first = folder_name("m@a=x y")  # the space is sanitised and a hash appended
    second = first.removeprefix("a=")
    text = error_text(build, f"jobs:\n  m: {{prompt: x, matrix: {{a: ['x y', '{second}']}}}}\n")
    assert f"output folder {first!r}" in text
    assert "jobs.m.matrix.a[1]" in text


def test_shared_output_folder_is_refused_whichever_comes_first(build: Build) -> None:
    """A key whose values spell another key's sanitised folder clashes in either order."""
    from pipeline.core.expansion.identity import folder_name

    folder = folder_name("m@a=x y")
    plain = folder.removeprefix("a=")
    text = error_text(build, f"jobs:\n  m: {{prompt: x, matrix: {{a: ['{plain}', 'x y']}}}}\n")
    assert f"output folder {folder!r}" in text
    assert "jobs.m.matrix.a[1]" in text
    assert "of 'm@a=x y', which jobs.m.matrix.a[0]" in text  # the second one is blamed


def test_missing_model_is_an_error_with_position_and_advice() -> None:
    """Without model anywhere the job is refused at its key, with the fix (issue 8.7)."""
    text = bare_error("jobs:\n  a: {prompt: '{{ s }}', matrix: {s: [1, 2]}}\n")
    assert ("m.yaml:4:3: error: jobs.a: no model: the API needs one in every request (in 2 "
            "instances, e.g. a@s=1); set model in defaults: or in the job, e.g. model: "
            "wan2.7-image") in text


def test_model_from_axis_include_or_upstream_is_enough() -> None:
    """A model from a matrix axis, an include row or an upstream instance satisfies it."""
    exp = bare("""
        jobs:
          axis: {prompt: x, matrix: {model: [wan2.7-image-pro]}}
          row: {prompt: x, matrix: {include: [{model: wan2.7-image}]}}
          edit: {prompt: y, image_urls: [{from: axis}]}
    """)
    assert [i.model for i in exp.instances] == ["wan2.7-image-pro", "wan2.7-image",
                                                "wan2.7-image-pro"]


def test_appended_row_without_model_is_blamed_on_the_row() -> None:
    """An include row appended without a model is reported at that row."""
    text = bare_error("""
        jobs:
          a:
            prompt: x
            matrix:
              s: [p]
              include: [{s: q, style: new}]
    """)
    assert "m.yaml:9:17: error: jobs.a.matrix.include[0]: no model" in text
    assert "jobs.a: no model" in text  # the product row has none either, blamed on the job


def test_huge_max_instances_still_fails_by_counting() -> None:
    """A huge `max_instances` with a 400**3 matrix is a positioned error, not a MemoryError.

    (1e20 itself is now refused by the loader as out of range; 1e18 still reaches the count.)
    """
    axis = "[" + ", ".join(str(i) for i in range(400)) + "]"
    text = bare_error(
        f"max_instances: 1000000000000000000\ndefaults: {{model: wan2.7-image}}\n"
        f"jobs:\n  a:\n    prompt: x\n    matrix: {{x: {axis}, y: {axis}, z: {axis}}}\n")
    assert "m.yaml:8:13: error: jobs.a.matrix: the axes multiply to 64,000,000 combinations" in text
    assert "whatever max_instances says" in text


def test_manifest_wide_ceiling(build: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs each under their cap cannot together pass the ceiling."""
    monkeypatch.setattr(sys.modules["pipeline.core.expansion.expand"], "MAX_INSTANCES_CEILING", 5)
    text = error_text(build, "jobs:\n  a: {prompt: x, matrix: {i: [1, 2, 3]}}\n"
                             "  b: {prompt: x, matrix: {i: [1, 2, 3]}}\n")
    assert "m.yaml:5:3: error: jobs.b: with this job's 3 instances the manifest expands" in text


def test_upstream_join_is_counted_before_it_is_built(build: Build) -> None:
    """Joining two large upstream jobs fails on the count, at the reference."""
    axis = "[" + ", ".join(str(i) for i in range(100)) + "]"
    text = error_text(build, f"""
        jobs:
          a: {{prompt: x, matrix: {{p: {axis}}}}}
          b: {{prompt: x, matrix: {{q: {axis}}}}}
          c: {{prompt: x, max_instances: 5000, image_urls: [{{from: a}}, {{from: b}}]}}
    """)
    assert ("jobs.c.image_urls[1]: the upstream images join to 10,000 combinations, more "
            "than the cap of 5,000") in text


def test_matrix_warnings_reach_the_expansion(build: Build) -> None:
    """Matrix warnings ride in Expansion.warnings with their positions."""
    exp = build("""
        jobs:
          a:
            prompt: x
            matrix:
              os: [linux]
              exclude: [{os: macos}]
    """)
    assert [w.format(snippet=False) for w in exp.warnings] == [
        "m.yaml:9:17: warning: jobs.a.matrix.exclude[0]: this exclude entry matches no "
        "combination; check its values against the axes (a typo?), or remove it"]


def test_csv_row_merges_into_a_numeric_axis(build: Build) -> None:
    """CSV cells are text, yet `16,6` merges into `node: [12, 16]` as on GitHub."""
    exp = build("jobs:\n  j: {prompt: '{{ node }}', matrix: {node: [12, 16], include: r.csv}}\n",
                {"r.csv": "node,npm\n16,6\n"})
    assert [i.key for i in exp.instances] == ["j@node=12", "j@node=16,npm=6"]


def test_include_value_origin_is_the_row_that_set_it(build: Build) -> None:
    """A rule broken by a value an include row added is blamed on that row, not a later one
    that set the same key for other combinations."""
    text = error_text(build, """
        jobs:
          a:
            prompt: x
            matrix:
              animal: [cat, dog]
              include:
                - {n: 7}
                - {animal: cat, n: 1}
    """)
    assert "jobs.a.matrix.include[0].n" in text
    assert "include[1].n" not in text
