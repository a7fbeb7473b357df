"""Benchmark: a run into an S3 store against the same run into a local folder.

Run by hand (not a test):

    python bench/store_vs_folder.py [--instances 2000] [--concurrency 64]
                                    [--latency 0.05] [--runs 3]

Each run starts a fresh simulator subprocess and moto's S3 server (in this process, on
127.0.0.1), writes a one-job manifest of N instances, and runs the real command,
``python -m pipeline run M --yes``, twice: into ``outputs/`` on disk and into
``s3://bench/<run>`` (``AWS_ENDPOINT_URL`` the moto server). Prints, per target and as
min/median/max over the runs: wall seconds, and client CPU per task (user + system of
the imgspec process, start-up included) in milliseconds. Each run checks the money:
the simulator's ledger equals the images written, in the folder and in the bucket.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchkit import (
    ENV,
    compile_bytecode,
    free_port,
    ledger,
    print_spread,
    start_simulator,
    timed,
    write_manifest,
)


def main() -> None:
    """Parse the options, run both targets ``--runs`` times, print the spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", default="0.05")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    compile_bytecode()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    ENV.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"})
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                      aws_secret_access_key="bench-secret", region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    figures: dict[str, list[dict[str, Any]]] = {"folder": [], "s3": []}
    try:
        for number in range(args.runs):
            for target in ("folder", "s3"):
                with tempfile.TemporaryDirectory() as tmp:
                    got = one(Path(tmp), target, number, args, s3)
                figures[target].append(got)
                print(f"run {number + 1} {target}: {got}", flush=True)
    finally:
        server.stop()
    for target, runs in figures.items():
        print(f"{target}: {args.instances} instances, concurrency {args.concurrency}, "
              f"latency {args.latency} s")
        print_spread(runs, ("wall_s", "cpu_ms_per_task"))


def one(folder: Path, target: str, number: int, args: argparse.Namespace,
        s3: Any) -> dict[str, Any]:
    """One run of ``target`` in ``folder``; its figures, after checking the money."""
    manifest = write_manifest(folder, args.instances)
    prefix = f"run-{number}"
    ENV["IMGSPEC_CACHE_DIR"] = str(folder / "cache")
    if target == "s3":
        manifest.write_text(manifest.read_text().replace(
            "name: throughput\n", f"name: throughput\noutput_dir: s3://bench/{prefix}\n"))
    sim_port = free_port()
    sim = start_simulator(sim_port, args.latency)
    try:
        child = timed([sys.executable, "-m", "pipeline", "run", str(manifest), "--yes",
                       "--base-url", f"http://127.0.0.1:{sim_port}",
                       "--concurrency", str(args.concurrency)], cwd=folder)
        paid = ledger(f"http://127.0.0.1:{sim_port}")["images_charged"]
    finally:
        sim.kill()
        sim.wait()
    if target == "s3":
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix)
        images = sum(1 for page in pages for item in page.get("Contents", [])
                     if item["Key"].endswith(".png"))
    else:
        images = len(list((folder / "outputs" / "throughput").rglob("*.png")))
    if images != paid or paid != args.instances:
        raise SystemExit(f"{target}: {images} images written, {paid} paid")
    return {"wall_s": round(child.wall, 2),
            "cpu_ms_per_task": round(child.cpu * 1000 / args.instances, 3),
            "peak_mb": round(child.peak_mb, 1)}


if __name__ == "__main__":
    main()
