"""Lookup latency over a large catalog (not a test: numbers, not assertions).

    PYTHONPATH=. python bench/bench_lookup.py [--artifacts 100000] [--names 1000] [--repeat 200]

Fills a fresh SQLite catalog with synthetic rows (TensorRT and TensorRT-RTX, several versions,
GPUs and compatibility envelopes; one placeholder blob shared by all) and times the in-process
lookup path the Python API uses: indexed query + rules + ranking, for explicit targets.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from trtforge.lookup_stage import rank_in_store
from trtforge.store import open_store
from trtforge.store.catalog import Artifact, Blob
from trtforge.target import explicit_target

GPUS = [
    ("NVIDIA A10G", "8.6"),
    ("NVIDIA A100", "8.0"),
    ("NVIDIA L4", "8.9"),
    ("Tesla T4", "7.5"),
    ("NVIDIA H100", "9.0"),
]
TRT_VERSIONS = ["10.8.0", "10.11.0", "10.13.3"]
HARDWARE = ["none", "none", "ampere_plus", "same_compute_capability"]


def fill(store_dir: Path, artifacts: int, names: int) -> None:
    store = open_store(store_dir)
    blob = store.blobs.put_bytes(b"placeholder plan")
    rng = random.Random(0)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with store.catalog.writing() as session:
        session.add(Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
    rows = []
    for index in range(artifacts):
        rtx = rng.random() < 0.3
        gpu, cc = rng.choice(GPUS)
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "name": f"model-{index % names}",
                "build_key": uuid.uuid4().hex * 2,
                "recipe_fingerprint": "f" * 64,
                "model_sha256": f"{index % names:064x}",
                "flavor": "tensorrt_rtx" if rtx else "tensorrt",
                "trt_version": "1.7.1.116" if rtx else rng.choice(TRT_VERSIONS),
                "gpu_name": None if rtx else gpu,
                "compute_capabilities": [] if rtx else [cc],
                "plan_sha256": blob.sha256,
                "plan_size": blob.size,
                "io_tensors": [],
                "profiles": [],
                "recipe": {},
                "recipe_path": None,
                "build_seconds": 1.0,
                "build_log": [],
                "details": {
                    "compatibility": {"hardware": rng.choice(HARDWARE), "version_compatible": rng.random() < 0.2}
                },
                "created_at": base + timedelta(seconds=index),
                "status": "unverified",
            }
        )
        if len(rows) == 10_000:
            with store.catalog.writing() as session:
                session.execute(insert(Artifact), rows)
            rows = []
    if rows:
        with store.catalog.writing() as session:
            session.execute(insert(Artifact), rows)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fill(Path(tmp), args.artifacts, args.names)
        print(f"filled {args.artifacts} artifacts over {args.names} names in {time.perf_counter() - started:.1f} s")
        store = open_store(Path(tmp))
        targets = {
            "tensorrt A10G 10.13.3": explicit_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3"),
            "tensorrt_rtx RTX 4090": explicit_target(gpu="RTX 4090", cc="8.9", trt="1.7.1", flavor="tensorrt_rtx"),
        }
        rng = random.Random(1)
        for label, target in targets.items():
            for explain in (False, True):
                times = []
                for _ in range(args.repeat):
                    name = f"model-{rng.randrange(args.names)}"
                    t0 = time.perf_counter()
                    ranking = rank_in_store(store, target, name=name, explain=explain)
                    times.append((time.perf_counter() - t0) * 1000)
                times.sort()
                print(
                    f"{label:24} explain={explain!s:5} rows/name~{args.artifacts // args.names:<5} "
                    f"median {statistics.median(times):.2f} ms  p95 {times[int(len(times) * 0.95)]:.2f} ms  "
                    f"(last: {len(ranking.matches)} matches, {len(ranking.rejected)} rejected)"
                )
        store.close()


if __name__ == "__main__":
    main()
