"""The API's inputs, normalised once at its edge: a manifest, its place, the API, a selection.

A manifest is a path (``str`` or ``os.PathLike``) or a mapping built in code. A
mapping has no file: it is given a folder (``root=``, the current directory by
default) and the name it would have there (``<root>/<name>.yaml``), which places its
lockfile, outputs and review file as a file of that name would have them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeAlias

from pipeline.core.planning.selection import Selection, parse_shard, parse_where
from pipeline.errors import UsageError
from pipeline.operations.context import Api, Context, context

ManifestSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any]"
"""A manifest: the path of its YAML file, or its content as a mapping built in code."""

DEFAULT_BASE_URL = "https://api.apimart.ai"
KEY_VARIABLE = "APIMART_API_KEY"


def place_of(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
          simulate: bool = False, lockfile: str | os.PathLike[str] | None = None,
          api: Api | None = None, output_dir: str | os.PathLike[str] | None = None
          ) -> Context:
    """The ``Context`` of ``manifest``: its files on the real or the simulated side.

    ``root`` is the folder of a manifest given as a mapping (default: the current
    directory); it is refused with a path, whose folder is its own. ``output_dir``:
    a folder or a store URL (``s3://bucket/prefix``) instead of the manifest's.
    """
    where = None if output_dir is None else os.fspath(output_dir)
    lock = None if lockfile is None else Path(os.fspath(lockfile))
    if isinstance(manifest, Mapping):
        folder = Path.cwd() if root is None else Path(os.fspath(root))
        name = manifest.get("name")
        stem = name if isinstance(name, str) and name and "/" not in name else "manifest"
        return context(folder / f"{stem}.yaml", simulate=simulate, lockfile=lock, api=api,
                       text=_yaml_text(manifest), output_dir=where)
    if root is not None:
        raise UsageError("root= is the folder of a manifest given as a mapping; a manifest "
                         "file's folder is its own")
    try:
        path = Path(os.fspath(manifest))
    except TypeError:
        raise UsageError(f"a manifest is a path or a mapping, not {type(manifest).__name__}"
                         ) from None
    if not path.is_file():
        raise UsageError(f"no manifest file at {path}")
    return context(path, simulate=simulate, lockfile=lock, api=api, output_dir=where)


def _yaml_text(manifest: Mapping[str, Any]) -> str:
    """A mapping as the YAML text its diagnostics point into."""
    import yaml

    try:
        return yaml.safe_dump(_plain(manifest), sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise UsageError(f"the manifest mapping holds a value YAML cannot write: {exc}") from exc


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so YAML writes them without tags."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def checked_base_url(value: str | None, *, source: str = "base_url") -> str:
    """``value`` (default APIMart's origin) checked and in its normal form; ``UsageError``
    naming ``source`` (where the value came from) when it cannot be an API's origin."""
    from pipeline.shell.http.endpoint import parse_base_url

    return parse_base_url(value or DEFAULT_BASE_URL, source=source).url


def real_api(*, base_url: str | None = None, api_key: str | None = None,
             balance_unit: str | None = None, advice: str = " (or try --simulate)") -> Api:
    """The real API: ``base_url`` checked (default APIMart's), the key given or taken from
    ``APIMART_API_KEY``; ``UsageError`` when there is none (``advice`` ends its message)."""
    url = checked_base_url(base_url)
    if api_key is not None and not api_key:
        raise UsageError(f"api_key is empty: give your APIMart key (or set {KEY_VARIABLE})")
    key = api_key if api_key is not None else environment_key(advice=advice)
    return Api(base_url=url, api_key=key, balance_unit=balance_unit)


def environment_key(*, advice: str = " (or try --simulate)") -> str:
    """The key in ``APIMART_API_KEY``; ``UsageError`` when it is unset or empty."""
    key = os.environ.get(KEY_VARIABLE, "")
    if not key:
        raise UsageError(f"set {KEY_VARIABLE} to your APIMart key{advice}")
    return key


def simulated_api() -> Api:
    """An in-process simulator, started by the run under its guard (no key, no cost)."""
    return Api.simulated(_serve_simulator)


@contextmanager
def _serve_simulator(lockfile: Path) -> Iterator[str]:
    """The simulator of ``run --simulate``, its state beside ``lockfile``; yields its URL."""
    from pipeline.simulator import run_in_thread
    from pipeline.simulator.config import for_simulate_run

    with run_in_thread(for_simulate_run(lockfile)) as sim:
        yield sim.base_url


def selection(*, jobs: Iterable[str] = (), where: Iterable[str] = (),
              only_failed: bool = False, shard: str | None = None) -> Selection:
    """A selection from the options' values: ``where`` as ``AXIS=VALUE``, ``shard`` ``K/N``."""
    if isinstance(jobs, str) or isinstance(where, str):
        raise UsageError("jobs= and where= take a list of strings, not one string")
    return Selection(jobs=tuple(dict.fromkeys(jobs)), where=parse_where(where),
                     only_failed=only_failed,
                     shard=None if shard is None else parse_shard(shard))


def amount(value: Decimal | int | str | None, *, name: str) -> Decimal | None:
    """A money option (``max_cost``): a number of at least 0, or None."""
    if value is None or (isinstance(value, Decimal) and value.is_finite() and value >= 0):
        return value
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise UsageError(f"{name} is a number (Decimal, int or str), not "
                         f"{type(value).__name__}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{name} {value!r} is not a number; write e.g. {name} 12.5") from None
    if not number.is_finite() or number < 0:
        raise UsageError(f"{name} must be a number of at least 0")
    return number

