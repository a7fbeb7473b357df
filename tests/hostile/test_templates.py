"""Template bombs: each one ends in a clean, positioned manifest error, soon and small.

Every case is a template written to hang the renderer or exhaust memory (issue 9,
item 4, plus the ones found hunting around it). Each is put in a job's field and
expanded: the result must be a ``ManifestError`` whose diagnostic names the job,
the field and the bound that stopped it. ``pytest.mark.timeout`` only guards
against a hang; the address-space limit keeps a regression from taking the machine
with it (and shows up as a failure, since the message then says "out of memory").
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.expansion.expand import expand
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.errors import ManifestError
from pipeline.shell.store.manifests import parse_manifest

ROOT = Path(__file__).resolve().parents[2]
# Headroom above what the test process already maps: far more than any bounded
# render needs (a few MB), far less than any of the bombs asks for.
ADDRESS_SPACE_HEADROOM = 1 << 30

INCLUDES = {
    "self.j2": "{% include 'self.j2' %}",
    "twice.j2": "x{% include 'twice.j2' %}{% include 'twice.j2' %}",
    "importer.j2": "{% import 'importer.j2' as m %}{% set x = 1 %}",
    "extender.j2": "{% extends 'extender.j2' %}",
    "module.j2": "{{ 'x' * 90000 }}",
}

BOMBS = [
    pytest.param(
        '{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}',
        'too costly to render',
        id='nested-for-range',
    ),
    pytest.param(
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}"
        '{% endfor %}',
        'too costly to render',
        id='nested-for-string',
    ),
    pytest.param(
        '{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}'
        '{{ f(60) }}',
        'too costly to render',
        id='exponential-macro',
    ),
    pytest.param(
        "{{ 'x'|center(2**40) }}",
        'the centered text would be 1,099,511,627,776 long',
        id='center-2-40',
    ),
    pytest.param(
        "{{ 'x'|center(10**9) }}",
        'the centered text would be 1,000,000,000 long',
        id='center-1e9',
    ),
    pytest.param(
        "{{ 'x'.center(10**9) }}",
        'the result of center() would be',
        id='str-center-method',
    ),
    pytest.param(
        "{{ 'x'.ljust(10**9) }}",
        'the result of ljust() would be',
        id='ljust',
    ),
    pytest.param(
        "{{ 'x'.rjust(10**9) }}",
        'the result of rjust() would be',
        id='rjust',
    ),
    pytest.param(
        "{{ '1'.zfill(10**9) }}",
        'the result of zfill() would be',
        id='zfill',
    ),
    pytest.param(
        "{{ ('\t' * 1000).expandtabs(10**6) }}",
        'the result of expandtabs() would be',
        id='expandtabs',
    ),
    pytest.param(
        "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
        'the replaced text would be',
        id='replace-filter',
    ),
    pytest.param(
        "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
        'the result of replace() would be',
        id='replace-method',
    ),
    pytest.param(
        "{{ ('x' * 100000).replace('', 'y' * 1000) }}",
        'the result of replace() would be',
        id='replace-empty-old',
    ),
    pytest.param(
        "{{ range(100000)|join('x' * 100000) }}",
        'the text of a value would be',
        id='join-filter-separator',
    ),
    pytest.param(
        "{{ range(100000)|map('string')|join('x' * 100000) }}",
        'too costly to render',
        id='join-lazy-separator',
    ),
    pytest.param(
        "{{ ('x' * 100000).join(range(100000)|map('string')|list) }}",
        'too costly to render',
        id='join-method',
    ),
    pytest.param(
        "{{ ('x' * 100000).join(range(100000)|map('string')) }}",
        'too costly to render',
        id='join-method-lazy',
    ),
    pytest.param(
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        '{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}',
        'text joined with ~ would be 131,072 long',
        id='namespace-doubling',
    ),
    pytest.param(
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        '{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}',
        'the sum would be 131,072 long',
        id='namespace-plus-doubling',
    ),
    pytest.param(
        '{% set ns = namespace(l=[0]) %}{% for i in range(64) %}'
        '{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}',
        'the sum would be 131,072 long',
        id='namespace-list-doubling',
    ),
    pytest.param(
        "{% set ns = namespace(l=['x']) %}{% for i in range(64) %}"
        '{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}',
        'the text of a value would be',
        id='namespace-nested-sharing',
    ),
    pytest.param(
        '{% set ns = namespace(n=3) %}{% for i in range(64) %}'
        '{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}',
        "the product's number of bits would be",
        id='namespace-int-squaring',
    ),
    pytest.param(
        '{% set ns = namespace(n=10 ** 1000) %}{% for i in range(20) %}'
        '{% set ns.n = ns.n ** 1000 %}{% endfor %}{{ ns.n > 0 }}',
        "the power's number of bits would be",
        id='power-of-big-base',
    ),
    pytest.param(
        "{{ 'x' * 10**9 }}",
        'the repeated value would be 1,000,000,000 long',
        id='star-string',
    ),
    pytest.param(
        '{{ [0] * 10**9 }}',
        'the repeated value would be 1,000,000,000 long',
        id='star-list',
    ),
    pytest.param(
        "{{ 'x'.encode() * 10**9 }}",
        'the repeated value would be 1,000,000,000 long',
        id='star-bytes',
    ),
    pytest.param(
        '{{ 2 ** 100000000 }}',
        'exponent 100000000 is too large',
        id='power',
    ),
    pytest.param(
        "{{ '%0999999999d' % 1 }}",
        'a % formatted field would be 999,999,999 long',
        id='percent-width',
    ),
    pytest.param(
        "{{ '%*d' % (999999999, 1) }}",
        "'*' widths in % formatting are not allowed",
        id='percent-star-width',
    ),
    pytest.param(
        "{{ '%.999999999f' % 1.0 }}",
        'a % formatted field would be 999,999,999 long',
        id='percent-precision',
    ),
    pytest.param(
        "{{ '%0999999999d'|format(1) }}",
        'a % formatted field would be 999,999,999 long',
        id='format-filter-width',
    ),
    pytest.param(
        "{{ '{:>999999999}'.format(1) }}",
        'a formatted field would be 999,999,999 long',
        id='str-format-width',
    ),
    pytest.param(
        "{{ '{:>{}}'.format(1, 999999999) }}",
        'a formatted field would be 999,999,999 long',
        id='str-format-nested-width',
    ),
    pytest.param(
        "{{ '{:.999999999f}'.format(1.0) }}",
        'a formatted field would be 999,999,999 long',
        id='str-format-precision',
    ),
    pytest.param(
        "{{ '{x:>999999999}'.format_map({'x': 1}) }}",
        'a formatted field would be 999,999,999 long',
        id='format-map-width',
    ),
    pytest.param(
        "{{ ('x ' * 50000)|wordwrap(1, wrapstring='y' * 100000) }}",
        'the wrapped text would be',
        id='wordwrap-wrapstring',
    ),
    pytest.param(
        "{{ ('x\n' * 1000)|indent(10**8) }}",
        'the indented text would be',
        id='indent-width',
    ),
    pytest.param(
        "{{ ('x\n' * 50000)|indent('y' * 100000) }}",
        'the indented text would be',
        id='indent-string-width',
    ),
    pytest.param(
        '{% for i in range(100000) %}{% for j in range(100) %}'
        "{{ 'x'|truncate(1, end='') }}{% endfor %}{% endfor %}",
        'too costly to render',
        id='truncate-end',
    ),
    pytest.param(
        "{{ ['x' * 100000] * 100000 }}",
        'the text of a value would be',
        id='list-of-big-refs-printed',
    ),
    pytest.param(
        "{{ (['x' * 100000] * 100000)|join }}",
        'the text of a value would be',
        id='list-of-big-refs-joined',
    ),
    pytest.param(
        "{{ (['x' * 100000] * 100000)|string|length }}",
        'the text of a value would be',
        id='list-of-big-refs-string',
    ),
    pytest.param(
        "{{ (['x' * 100000] * 100000) ~ '' }}",
        'the text of a value would be',
        id='list-of-big-refs-concat',
    ),
    pytest.param(
        "{{ range(100000)|map('center', 100000)|list|length }}",
        'too costly to render',
        id='map-center',
    ),
    pytest.param(
        '{% for i in range(100000) %}{{ range(100000)|list|length }}{% endfor %}',
        'too costly to render',
        id='range-list-in-loop',
    ),
    pytest.param(
        '{{ range(10**9)|list|length }}',
        'Range too big',
        id='range-too-big',
    ),
    pytest.param(
        '{{ range(0, 10**12, 10)|list|length }}',
        'Range too big',
        id='range-huge-step-count',
    ),
    pytest.param(
        '{% for x in [[1, 2], [3, 4]] recursive %}'
        '{{ loop([x, x]) if x is iterable else x }}{% endfor %}',
        'recurses too deeply',
        id='loop-recursive',
    ),
    pytest.param(
        '{% set ns = namespace(l=[]) %}{% for i in range(100000) %}'
        '{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l|length }}',
        'too costly to render',
        id='set-builds-list-in-loop',
    ),
    pytest.param(
        "{{ [1]|batch(10**9, 'x')|list|length }}",
        'a filled batch would be 1,000,000,000 long',
        id='batch-fill',
    ),
    pytest.param(
        '{{ [1]|slice(10**9)|list|length }}',
        'the number of slices would be 1,000,000,000',
        id='slice-count',
    ),
    pytest.param(
        '{% for i in range(100000) %}{% for j in range(100000) %}{{ range(100000)|sum }}'
        '{% endfor %}{% endfor %}',
        'too costly to render',
        id='sum-range-in-loop',
    ),
    pytest.param(
        '{{ ([[1]] * 100000)|sum(start=[])|length }}',
        'too costly to render',
        id='sum-of-lists',
    ),
    pytest.param(
        "{% for i in range(100000) %}{{ range(100000)|map('string')|join|length }}"
        '{% endfor %}',
        'too costly to render',
        id='map-over-ranges',
    ),
    pytest.param(
        "{% set ns = namespace(s='') %}{% for i in range(100000) %}"
        "{% set ns.s = ns.s ~ 'xxxxxxxxxx' %}{% endfor %}{{ ns.s|length }}",
        'too costly to render',
        id='tilde-in-loop',
    ),
    pytest.param(
        '{% set ns = namespace(l=[]) %}{% for i in range(100000) %}'
        '{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l|tojson }}',
        'too costly to render',
        id='tojson-deep',
    ),
    pytest.param(
        '{{ [[[[[[1]]]]]]|tojson(indent=10**8) }}',
        'the text of a value would be',
        id='tojson-indent',
    ),
    pytest.param(
        '{% set ns = namespace(l=[]) %}{% for i in range(100000) %}'
        '{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l|pprint }}',
        'too costly to render',
        id='pprint-deep',
    ),
    pytest.param(
        '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
        'recurses too deeply',
        id='deep-macro-recursion',
    ),
    pytest.param(
        "{% include 'self.j2' %}",
        'recurses too deeply',
        id='include-self',
    ),
    pytest.param(
        "{% include 'twice.j2' %}",
        'recurses too deeply',
        id='include-self-twice',
    ),
    pytest.param(
        '{{ lipsum(10**6) }}',
        'the lorem ipsum would be',
        id='lipsum',
    ),
    pytest.param(
        '{{ lipsum(1, false, 10**8, 10**8) }}',
        'the lorem ipsum would be',
        id='lipsum-words',
    ),
    pytest.param(
        "{{ (1).to_bytes(10**9, 'big') }}",
        'the bytes would be 1,000,000,000 long',
        id='to-bytes',
    ),
    pytest.param(
        "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}",
        'the result of translate() would be',
        id='translate',
    ),
    pytest.param(
        '{% for i in range(100000) %}{% for j in range(100000) %}'
        'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}',
        'too costly to render',
        id='literal-text-in-loop',
    ),
    pytest.param(
        "{% set big = 'x' * 100000 %}{% set s %}{% for i in range(100000) %}{{ big }}"
        '{% endfor %}{% endset %}{{ s|length }}',
        'too costly to render',
        id='set-block-buffer',
    ),
    pytest.param(
        "{% set big = 'x' * 100000 %}{% macro m() %}{% for i in range(100000) %}{{ big }}"
        '{% endfor %}{% endmacro %}{{ m()|length }}',
        'too costly to render',
        id='macro-buffer',
    ),
    pytest.param(
        '{% filter upper %}{% for i in range(100000) %}{% for j in range(1000) %}'
        'xxxxxxxxxx{% endfor %}{% endfor %}{% endfilter %}',
        'too costly to render',
        id='filter-block',
    ),
    pytest.param(
        "{% for i in range(2000) %}{{ 'x' * 100 }}{% endfor %}",
        'the rendered text would be 200,000 long',
        id='output-cap',
    ),
    pytest.param(
        "{{ dict.fromkeys(range(100000), 'x' * 100000).items()|list }}",
        'too costly to render',
        id='dict-items-printed',
    ),
    pytest.param(
        '{% set l = range(100000)|list %}{% for i in range(100000) %}'
        '{{ l|unique|list|length }}{% endfor %}',
        'too costly to render',
        id='unique-in-loop',
    ),
    pytest.param(
        '{% set l = range(100000)|list %}{% for i in range(100000) %}{{ l|sort|first }}'
        '{% endfor %}',
        'too costly to render',
        id='sort-in-loop',
    ),
    pytest.param(
        "{% set s = 'x' * 100000 %}{% for i in range(100000) %}"
        "{% for j in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}{% endfor %}",
        'too costly to render',
        id='in-operator-in-loop',
    ),
    pytest.param(
        '{% macro m() %}{{ caller() }}{{ caller() }}{% endmacro %}{% macro f(n) %}'
        '{% if n %}{% call m() %}{{ f(n - 1) }}{% endcall %}{% endif %}{% endmacro %}'
        '{{ f(50) }}',
        'too costly to render',
        id='call-block-recursion',
    ),
    pytest.param(
        '{% set c = cycler(*range(100000)) %}{% for i in range(100000) %}'
        '{% for j in range(100000) %}{{ c.next() }}{% endfor %}{% endfor %}',
        'too costly to render',
        id='cycler-loop',
    ),
    pytest.param(
        '{% for i in range(100000) %}'
        '{{ range(100000)|select|select|select|select|select|select|select|select|list|le'
        'ngth }}{% endfor %}',
        'too costly to render',
        id='selectattr-chain',
    ),
    pytest.param(
        '{{ (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) }}',
        'Exceeds the limit (4300 digits)',
        id='int-str-huge',
    ),
    pytest.param(
        "{% set s = 'x ' * 50000 %}{% for i in range(100000) %}{{ s|wordcount }}"
        '{% endfor %}',
        'too costly to render',
        id='wordcount-in-loop',
    ),
    pytest.param(
        "{{ '{!r}'.format(dict.fromkeys(range(100000), 'x' * 100000)) }}",
        'the text of a value would be',
        id='str-format-repr-conversion',
    ),
    pytest.param(
        "{{ ('{:99999}' * 12000).format(*range(12000)) }}",
        'too costly to render',
        id='str-format-many-wide-fields',
    ),
    pytest.param(
        "{{ ('%(a)99999d' * 9000) % {'a': 1} }}",
        'the % formatted text would be',
        id='percent-many-wide-fields',
    ),
    pytest.param(
        "{% import 'importer.j2' as m %}{{ m.x }}",
        'recurses too deeply',
        id='import-self',
    ),
    pytest.param(
        "{% extends 'extender.j2' %}",
        'recurses too deeply',
        id='extends-self',
    ),
    pytest.param(
        "{% block a %}{{ self.a() }}{{ self.a() }}{% endblock %}",
        'recurses too deeply',
        id='block-self-recursion',
    ),
    pytest.param(
        "{% for i in range(1000) %}{{ ('x' * 50000)|wordwrap(1)|length }}{% endfor %}",
        'too costly to render',
        id='wordwrap-long-word-in-loop',
    ),
    pytest.param(
        "{{ ('<' * 100000)|e }}",
        'the value built would be 400,000 long',
        id='escape-amplifies',
    ),
    pytest.param(
        "{{ ('<' * 100000)|urlencode }}",
        'the value built would be 300,000 long',
        id='urlencode-amplifies',
    ),
    pytest.param(
        "{{ ('x'|e).center(10**9) }}",
        'the result of center() would be 1,000,000,000 long',
        id='markup-center',
    ),
    pytest.param(
        "{{ (('x' * 100000)|e).replace('x', 'y' * 100000) }}",
        'the result of replace() would be 10,000,000,000 long',
        id='markup-replace',
    ),
    pytest.param(
        "{{ (('<' * 25000)|e).replace('<', 'y' * 100000) }}",
        'the result of replace() would be 2,500,000,000 long',
        id='markup-replace-escaped-old',
    ),
    pytest.param(
        "{{ (('x' * 100000)|e).join(range(100000)|map('string')|list) }}",
        'too costly to render',
        id='markup-join',
    ),
    pytest.param(
        "{{ ('{:>999999999}'|e).format(1) }}",
        'a formatted field would be 999,999,999 long',
        id='markup-format-width',
    ),
    pytest.param(
        "{{ ('%0999999999d'|e) % 1 }}",
        'a % formatted field would be 999,999,999 long',
        id='markup-percent-width',
    ),
    pytest.param(
        "{{ ('x'|e) * 10**9 }}",
        'the repeated value would be 1,000,000,000 long',
        id='markup-repeat',
    ),
    pytest.param(
        "{% set j = joiner('x' * 100000) %}{% for i in range(100000) %}{{ j() }}"
        "{% endfor %}",
        'too costly to render',
        id='joiner-returns-long-text',
    ),
    pytest.param(
        "{{ '%s' % dict.fromkeys(range(100000), 'x' * 100000) }}",
        'the text of a value would be',
        id='percent-prints-a-mapping',
    ),
    pytest.param(
        "{% import 'module.j2' as m %}{{ ('%s' * 1000) % ((m,) * 1000) }}",
        'too costly to render',
        id='imported-module-printed-many-times',
    ),
    pytest.param(
        "{{ ('x' * 100000)|join('y' * 100000) }}",
        'the joined text would be 10,000,000,000 long',
        id='join-text-with-long-separator',
    ),
    pytest.param(
        "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}",
        'nested too deeply to compile',
        id='nested-parentheses',
    ),
    pytest.param(
        "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
        'nested too deeply to compile',
        id='nested-lists',
    ),
    pytest.param(
        "{% if 1 %}" * 300 + "x" + "{% endif %}" * 300,
        'nested too deeply to compile',
        id='nested-ifs',
    ),
    pytest.param(
        "".join(f"{{% for a{i} in [1] %}}" for i in range(100)) + "x" + "{% endfor %}" * 100,
        'nested too deeply to compile',
        id='nested-fors',
    ),
    pytest.param(
        "{{ " + " + ".join(["1"] * 5000) + " }}",
        'nested too deeply to compile',
        id='long-chain-of-additions',
    ),
    pytest.param(
        "{{ 'a'" + "|upper" * 3000 + " }}",
        'nested too deeply to compile',
        id='long-chain-of-filters',
    ),
]


@pytest.fixture
def address_space_cap() -> Iterator[None]:
    """Caps this process's address space for one test, then restores the old limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
    cap = mapped + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def manifest(field: str, template: str) -> str:
    """A one-job manifest with ``template`` in ``field`` (a JSON string is a YAML scalar)."""
    prompt = '"a cat"' if field != "prompt" else json.dumps(template)
    text = f"version: 1\nname: bombs\njobs:\n  poster:\n    prompt: {prompt}\n"
    if field != "prompt":
        text += f"    {field}: {json.dumps(template)}\n"
    return text


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("address_space_cap")
@pytest.mark.parametrize(("template", "stopped_by"), BOMBS)
def test_template_bomb_is_a_clean_error(template: str, stopped_by: str) -> None:
    """A template bomb in a prompt is a ManifestError naming job, field and the bound hit."""
    workspace = MemoryWorkspace(INCLUDES)
    parsed = parse_manifest(manifest("prompt", template), file="m.yaml", workspace=workspace)
    with pytest.raises(ManifestError) as info:
        expand(parsed, workspace)
    message = str(info.value)
    assert "m.yaml:5:13: error: jobs.poster.prompt:" in message
    assert "(instance poster)" in message
    assert stopped_by in message
    assert "out of memory" not in message


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("address_space_cap")
@pytest.mark.parametrize("field", ["negative_prompt", "size", "model"])
def test_bombs_in_other_fields_name_that_field(field: str) -> None:
    """Every templated field is bounded, and the error names the field it came from."""
    workspace = MemoryWorkspace({})
    template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    parsed = parse_manifest(manifest(field, template), file="m.yaml", workspace=workspace)
    with pytest.raises(ManifestError) as info:
        expand(parsed, workspace)
    assert f"m.yaml:6:{len(field) + 7}: error: jobs.poster.{field}:" in str(info.value)
    assert "too costly to render" in str(info.value)


@pytest.mark.timeout(120)
def test_validate_reports_bombs_with_positions_and_no_traceback(tmp_path: Path) -> None:
    """`imgspec validate` on bombs exits 1 (not 70), one positioned error each, in a matrix too."""
    path = tmp_path / "bombs.yaml"
    values = ", ".join(str(v) for v in range(500))
    path.write_text(
        "version: 1\nname: bombs\njobs:\n"
        "  slow:\n    prompt: \"{% for a in range(100000) %}{% for b in range(100000) %}"
        f"{{% endfor %}}{{% endfor %}}{{{{ v }}}}\"\n    matrix: {{v: [{values}]}}\n"
        "  wide:\n    prompt: \"{{ 'x'|center(10**9) }}\"\n"
        "  deep:\n    prompt: \"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\"\n"
        f"  nested:\n    prompt: \"{{{{ {'(' * 500}1{')' * 500} }}}}\"\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)],
        capture_output=True, text=True, env=env, timeout=100, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{path}:5:13: error: jobs.slow.prompt: the template is too costly to render" in output
    assert "(in 500 instances, e.g. slow@v=0)" in output
    assert f"{path}:8:13: error: jobs.wide.prompt: the template is too costly to render" in output
    assert f"{path}:10:13: error: jobs.deep.prompt: the template recurses too deeply" in output
    assert f"{path}:12:13: error: jobs.nested.prompt: the template is nested too deeply" in output
    assert "Traceback" not in output
