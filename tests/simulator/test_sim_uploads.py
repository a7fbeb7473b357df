"""Uploads to the simulator: each gets a URL of its own that serves its own bytes."""

from __future__ import annotations

import hashlib
import hmac
import io

import httpx
from PIL import Image

from pipeline.simulator import RunningSimulator
from pipeline.simulator.responses import UploadSigner
from tests.simulator.simkit import AUTH


def png(colour: tuple[int, int, int]) -> bytes:
    """A 64x64 PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")
    return out.getvalue()


def test_two_uploads_of_one_size_in_one_second_get_urls_of_their_own(
        sim: RunningSimulator) -> None:
    """The clock stands still: two different 64x64 images still get two URLs, and each
    URL serves the image uploaded to it (a name from size and second alone was shared,
    the second upload's bytes served for both)."""
    first, second = png((200, 30, 30)), png((30, 30, 200))
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        urls = []
        for data in (first, second):
            reply = client.post("/v1/uploads/images",
                                files={"file": ("mark.png", data, "image/png")})
            assert reply.status_code == 200, reply.text
            urls.append(reply.json()["url"])
        assert urls[0] != urls[1]
        assert client.get(urls[0]).content == first
        assert client.get(urls[1]).content == second


def test_upload_names_made_before_serials_still_verify() -> None:
    """A name without ``-n{serial}`` (recorded in a lockfile by an earlier simulator
    with the same seed) is still the simulator's own; a forged one is not."""
    signer = UploadSigner(seed=0)
    secret = hashlib.sha256(b"0:uploads").digest()
    sig = hmac.new(secret, b"64x64/1763088289/png", hashlib.sha256).hexdigest()[:16]
    assert signer.parse(f"u64x64-1763088289-{sig}.png") == (64, 64, 1763088289)
    assert signer.parse(f"u64x64-1763088290-{sig}.png") is None
    named = signer.name(64, 64, 1763088289, "png", serial=3)
    assert signer.parse(named) == (64, 64, 1763088289)
    assert signer.parse(named.replace("-n3-", "-n4-")) is None
