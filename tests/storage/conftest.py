"""Fixtures for outputs in object storage: moto's S3 server on 127.0.0.1, a bucket per
test, a project whose manifest writes to it, and the real command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import images_charged, loopback_fixtures

KEY = "sk-storage-7d1e0b"
# A secret of the environment's credential chain: it must appear nowhere imgspec writes.
SECRET = "s3cr3t-STORAGE-9f27c4e1"
ACCESS = "AKIASTORAGETEST0001"
ROOT = Path(__file__).resolve().parents[2]

MANIFEST = """\
version: 1
name: shop
output_dir: {url}
defaults: {{model: wan2.7-image, size: 1K}}
jobs:
  gen:
    prompt: "A {{{{ shop }}}} in {{{{ season }}}}"
    n: 2
    matrix:
      shop: [bakery, florist, grocer]
      season: [spring, winter]
  night:
    prompt: "The same {{{{ shop }}}} at night"
    image_urls: [{{from: gen, where: {{season: winter}}, image: 1}}]
"""
IMAGES = 6 * 2 + 3  # gen: 6 instances of 2 images; night: 3 of 1


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    """A boto3 S3 client of the server: the tests' own view of the bucket."""
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1")


@dataclass
class Bucket:
    """A fresh bucket on the server, read by the tests with boto3 (not through imgspec)."""

    name: str
    endpoint: str

    def listing(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``."""
        found: list[str] = []
        for page in client(self.endpoint).get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    def images(self, prefix: str = "runs/shop/") -> list[str]:
        """The image objects under ``prefix``."""
        return [k for k in self.listing(prefix) if k.endswith(".png")]

    def get(self, key: str) -> bytes:
        """An object's bytes."""
        data: bytes = client(self.endpoint).get_object(Bucket=self.name, Key=key)["Body"].read()
        return data

    def metadata(self, key: str) -> dict[str, str]:
        """An object's user metadata (``x-amz-meta-*``)."""
        found: dict[str, str] = client(self.endpoint).head_object(
            Bucket=self.name, Key=key)["Metadata"]
        return found

    def put(self, key: str, data: bytes) -> None:
        """Write an object (as someone else would)."""
        client(self.endpoint).put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        """Delete an object."""
        client(self.endpoint).delete_object(Bucket=self.name, Key=key)


@pytest.fixture
def bucket(s3_endpoint: str) -> Bucket:
    """A new, empty bucket."""
    name = f"imgspec-{uuid.uuid4().hex[:12]}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return Bucket(name, s3_endpoint)


@dataclass
class StoreProject:
    """A project whose manifest writes to ``s3://<bucket>/runs/shop``."""

    root: Path
    bucket: Bucket
    env: dict[str, str]

    @property
    def manifest(self) -> Path:
        return self.root / "manifests" / "shop.yaml"

    @property
    def lockfile(self) -> Path:
        return self.root / "manifests" / "shop.lock.json"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket.name}/runs/shop"

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``imgspec ARGS`` in a subprocess from the project's root."""
        return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=self.root,
                              env={**self.env, **env}, text=True, capture_output=True,
                              timeout=240, check=False)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """``imgspec ARGS`` started in a subprocess (to be killed)."""
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=self.root,
                                env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def run(self, sim: RunningSimulator, *extra: str) -> subprocess.CompletedProcess[str]:
        """``imgspec run`` of the manifest against ``sim``; it must succeed."""
        done = self.cli("run", "manifests/shop.yaml", "--base-url", sim.base_url, "--yes",
                        "--concurrency", "4", *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        return done


def store_env(endpoint: str, tmp: Path) -> dict[str, str]:
    """The environment of a user with credentials in the standard AWS variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT),
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS,
            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
            "IMGSPEC_CACHE_DIR": str(tmp / "cache")}


@pytest.fixture
def project(tmp_path: Path, bucket: Bucket) -> StoreProject:
    """A project writing to a fresh bucket through the server at AWS_ENDPOINT_URL."""
    (tmp_path / "manifests").mkdir()
    made = StoreProject(tmp_path, bucket, store_env(bucket.endpoint, tmp_path))
    made.manifest.write_text(MANIFEST.format(url=made.url))
    return made


start_sim, sim = loopback_fixtures(seed=23, api_key=KEY)


charged = images_charged
