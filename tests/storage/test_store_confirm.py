"""An upload is confirmed by the bytes the store holds, not their count: on GCS and Azure
by the MD5 the store keeps of the object, in a ``file://`` folder by reading it back.

No GCS or Azure server runs here, so these drive the real ``ObjectStore`` over a stand-in
filesystem that answers ``info`` as gcsfs and adlfs do; S3 and ``file://`` run for real in
``test_store_run.py``."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import StoreError
from pipeline.shell.store.objectstore import ObjectStore, store_md5
from pipeline.shell.store.store import StoreURL

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Bucket:
    """A filesystem as fsspec's, keeping objects in memory; ``flip`` damages each object
    as it lands (same size, one byte changed), as a broken proxy or disk would."""

    def __init__(self, protocol: str, *, flip: bool = False) -> None:
        self.protocol = protocol
        self.flip = flip
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def pipe_file(self, path: str, data: bytes, **_: Any) -> None:
        self.puts += 1
        self.objects[path] = bytes([data[0] ^ 1]) + data[1:] if self.flip else data

    def cat_file(self, path: str) -> bytes:
        return self.objects[path]

    def info(self, path: str) -> dict[str, Any]:
        data = self.objects[path]
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        if self.protocol == "gs":
            return {"size": len(data), "md5Hash": base64.b64encode(md5).decode()}
        if self.protocol == "az":
            return {"size": len(data), "content_settings": {"content_md5": bytearray(md5)}}
        return {"size": len(data)}


def store(tmp_path: Path, bucket: Bucket) -> ObjectStore:
    """A store of ``bucket``'s protocol over the stand-in, retrying at once."""
    made = ObjectStore(StoreURL(bucket.protocol, "bucket/shop"), cache=tmp_path / "cache",
                       attempts=3, backoff=0.0)
    made._fs, made._base = bucket, "bucket/shop"
    return made


def staged(tmp_path: Path) -> Path:
    """A verified download waiting to be installed."""
    temp = tmp_path / ".0.part"
    temp.write_bytes(PNG)
    return temp


@pytest.mark.parametrize("protocol", ["gs", "az", "file"])
def test_an_upload_whose_bytes_arrived_is_confirmed(tmp_path: Path, protocol: str) -> None:
    """The object holds what was written: install returns its path after one PUT."""
    bucket = Bucket(protocol)
    final = store(tmp_path, bucket).install(staged(tmp_path), "hero", "hero@a=1", 0, "png",
                                            sha256=hashlib.sha256(PNG).hexdigest())
    assert bucket.objects == {f"bucket/shop/{final.as_posix()}": PNG}
    assert bucket.puts == 1


@pytest.mark.parametrize("protocol", ["gs", "az", "file"])
def test_an_upload_damaged_on_the_way_is_not_confirmed(tmp_path: Path, protocol: str) -> None:
    """An object of the right size but other bytes: every attempt is refused, and the
    install fails with a StoreError (the run leaves the image unfinished, never recorded)."""
    bucket = Bucket(protocol, flip=True)
    with pytest.raises(StoreError, match="not the one written"):
        store(tmp_path, bucket).install(staged(tmp_path), "hero", "hero@a=1", 0, "png",
                                        sha256=hashlib.sha256(PNG).hexdigest())
    assert bucket.puts == 3


def test_the_md5_a_store_keeps_is_read_as_gcsfs_and_adlfs_give_it() -> None:
    """GCS's base64 ``md5Hash``, Azure's ``content_md5`` (in a mapping or an object);
    nothing when the store keeps none or it is not base64."""
    md5 = hashlib.md5(PNG, usedforsecurity=False).digest()

    class Settings:
        content_md5 = bytearray(md5)

    assert store_md5({"md5Hash": base64.b64encode(md5).decode()}) == md5
    assert store_md5({"content_settings": {"content_md5": bytearray(md5)}}) == md5
    assert store_md5({"content_settings": Settings()}) == md5
    assert store_md5({"size": 3}) is None
    assert store_md5({"md5Hash": "not base64!"}) is None
    assert store_md5({"content_settings": {"content_md5": None}}) is None
