"""Which output_dir values name a store, and which storage_options a manifest may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.operations.context import context
from pipeline.shell.store.objectstore import ObjectStore
from pipeline.shell.store.store import StoreURL, check_storage_options, parse_output_dir


@pytest.mark.parametrize(("value", "protocol", "path"), [
    ("s3://bucket/imgspec/shop", "s3", "bucket/imgspec/shop"),
    ("s3://bucket/", "s3", "bucket"),
    ("S3A://bucket/x", "s3", "bucket/x"),
    ("gs://b/p", "gs", "b/p"),
    ("gcs://b/p", "gs", "b/p"),
    ("az://container/p", "az", "container/p"),
    ("file:///srv/images", "file", "srv/images"),
])
def test_store_urls_are_parsed(value: str, protocol: str, path: str) -> None:
    """Each supported scheme maps to fsspec's protocol, the bucket and prefix kept."""
    assert parse_output_dir(value) == StoreURL(protocol, path)


@pytest.mark.parametrize("value", ["outputs/shop", "../build/images", "/abs/folder",
                                   "C:\\images", "s3:/bucket"])
def test_folders_are_not_urls(value: str) -> None:
    """A folder (relative, absolute, a Windows path, a mistyped scheme) is no store."""
    assert parse_output_dir(value) is None


@pytest.mark.parametrize(("value", "said"), [
    ("ftp://host/x", "not ftp://"),
    ("s3://AKIA:secretvalue@bucket/x", "no credentials"),
    ("s3://bucket/x?versionId=1", "no query"),
    ("s3://bucket/../other", "plain segments"),
    ("s3://bucket//x", "plain segments"),
    ("s3://", "plain segments"),
    ("file://relative/path", "absolute"),
])
def test_bad_urls_are_refused_without_echoing_credentials(value: str, said: str) -> None:
    """Unusable URLs are usage errors saying why; credentials in one are never shown."""
    with pytest.raises(UsageError, match=said) as caught:
        parse_output_dir(value)
    assert "secretvalue" not in str(caught.value)


def test_storage_options_take_plain_settings_and_refuse_credentials() -> None:
    """Region, endpoint and nested client settings pass; anything named like a credential
    (at any level) is refused."""
    plain = {"endpoint_url": "http://minio:9000", "client_kwargs": {"region_name": "eu"},
             "anon": False}
    assert check_storage_options(plain) == plain
    assert check_storage_options(None) == {}
    for bad in ({"secret": "x"}, {"key": "x"}, {"token": "x"},
                {"client_kwargs": {"aws_secret_access_key": "x"}}, {"sas_token": "x"},
                {"endpoint_url": ["a", "b"]}):
        with pytest.raises(UsageError):
            check_storage_options(bad)


@pytest.mark.parametrize("stored", ["../x.png", "a/../../x.png", "/etc/passwd", "s3://b/x",
                                    "", ".", "a\\b.png", "a\0b"])
def test_stored_paths_outside_the_prefix_are_refused(stored: str) -> None:
    """A lockfile path is confined to the prefix lexically: no climbing, no absolute path,
    no other URL."""
    store = ObjectStore(StoreURL("s3", "bucket/prefix"))
    assert store.confined(stored) is None


def test_stored_paths_inside_the_prefix_are_normalised() -> None:
    """A path that stays inside the prefix names its object, normalised."""
    store = ObjectStore(StoreURL("s3", "bucket/prefix"))
    assert store.confined("gen/x/./0.png") == "gen/x/0.png"
    assert store.confined("gen/x/../y/0.png") == "gen/y/0.png"


def test_an_output_dir_folder_outside_the_project_is_refused(tmp_path: Path) -> None:
    """--output-dir names a folder inside the project (or a URL); one outside is a usage
    error that says how to name it, before anything is read."""
    (tmp_path / "proj" / "manifests").mkdir(parents=True)
    manifest = tmp_path / "proj" / "manifests" / "shop.yaml"
    manifest.write_text("version: 1\nname: shop\njobs: {}\n")
    header = context(manifest).header()
    with pytest.raises(UsageError, match=r"outside the project .*file:///"):
        context(manifest, output_dir=str(tmp_path / "elsewhere")).locate(header)
    inside = context(manifest, output_dir=str(tmp_path / "proj" / "build")).locate(header)
    assert inside.outputs == tmp_path / "proj" / "build"
    assert context(manifest, output_dir="s3://b/p").locate(header).shown == "s3://b/p"
