"""Figure 3: lookup latency (p50/p99) in catalogs of 1k, 10k and 100k artifacts, and CLI wall time.

Catalogs are filled through the catalog ORM (bulk inserts). The lookup being timed is chosen
here, in ONE place: :func:`lookup_query` for the in-process latency and :data:`LOOKUP_CLI` for
the command line.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.figure import Figure
from bench.timing import Series, interleave, percentile, run_timed, timed_call, trtforge_argv

P50_GOAL_MS = 5.0
CLI_GOAL_S = 0.25
ARTIFACTS_PER_NAME = 10
FLAVORS = (("tensorrt", "10.13.0"), ("tensorrt", "11.0.0"), ("tensorrt_rtx", "1.7.1"))
PROFILE = {"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [32, 3, 224, 224]}
GPUS = (("NVIDIA A100-SXM4-80GB", "8.0"), ("NVIDIA GeForce RTX 4090", "8.9"), ("NVIDIA L4", "8.9"))


# A target every recipe name has engines for (TensorRT-RTX rows carry the default capabilities).
TARGET = {"flavor": "tensorrt_rtx", "trt": "1.7.1", "cc": "8.9", "gpu": "NVIDIA L4"}


def lookup_query(store: Any, name: str) -> int:
    """THE in-process lookup being timed: trtforge's ranking of one name's artifacts for a target.

    Indexed query + verification statuses + compatibility rules + ranking (what
    ``trtforge.lookup`` does before it hash-checks the chosen plan), over every model of the name.
    ``store`` is an open :class:`trtforge.store.Store`.
    """
    from trtforge.rules.target import explicit_target
    from trtforge.stages.lookup import rank_in_store

    ranking = rank_in_store(store, explicit_target(**TARGET), name=name, runtime_check=False, any_model=True)
    return len(ranking.matches)


def lookup_cli(store: Path, name: str) -> list[str | Path]:
    """THE command-line lookup being timed."""
    flags = [f"--{key}={value}" for key, value in TARGET.items()]
    # --any-model: every row of a name has its own random model digest, so the newest model alone
    # (lookup's default) often has no engine for the target and the CLI would exit 1.
    return trtforge_argv("lookup", name, *flags, "--any-model", "--store", store, "--json")


LOOKUP_CLI = lookup_cli


def name_of(index: int) -> str:
    return f"model-{index:06d}"


def populate(store: Path, artifacts: int, seed: int) -> None:
    """A catalog of ``artifacts`` rows, ARTIFACTS_PER_NAME per recipe name, via the ORM."""
    from sqlalchemy import insert

    from trtforge.store import open_store
    from trtforge.store.catalog import Artifact, Blob

    rng = random.Random(seed)
    opened = open_store(store)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    try:
        # One real 1 MiB plan shared by every row: lookup hash-checks the plan it hands out.
        plan = opened.blobs.put_bytes(rng.randbytes(1 << 20)).sha256
        with opened.catalog.writing() as session:
            session.add(Blob(sha256=plan, size=1 << 20, kind="plan"))
        batch: list[dict[str, Any]] = []
        for index in range(artifacts):
            flavor, version = FLAVORS[index % len(FLAVORS)]
            gpu, cc = GPUS[rng.randrange(len(GPUS))]
            batch.append(
                {
                    "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "name": name_of(index // ARTIFACTS_PER_NAME),
                    "build_key": f"{rng.getrandbits(256):064x}",
                    # One model per name (a name means its newest model: lookup filters by it).
                    "recipe_fingerprint": hashlib.sha256(f"recipe {index // ARTIFACTS_PER_NAME}".encode()).hexdigest(),
                    "model_sha256": hashlib.sha256(f"model {index // ARTIFACTS_PER_NAME}".encode()).hexdigest(),
                    "flavor": flavor,
                    "trt_version": version,
                    "gpu_name": None if flavor == "tensorrt_rtx" else gpu,
                    "compute_capabilities": [] if flavor == "tensorrt_rtx" else [cc],
                    "plan_sha256": plan,
                    "plan_size": 1 << 20,
                    "io_tensors": [{"name": "images", "mode": "input", "dtype": "float", "shape": [-1, 3, 224, 224]}],
                    "profiles": [{"images": PROFILE}],
                    "recipe": {"name": name_of(index // ARTIFACTS_PER_NAME), "backend": flavor},
                    "recipe_path": None,
                    "build_seconds": 12.5,
                    "build_log": [],
                    "details": {},
                    "created_at": start + timedelta(seconds=index),
                    "learned_at": start + timedelta(seconds=index),  # a bulk insert is not stamped by the catalog
                    "status": "unverified",
                }
            )
            if len(batch) == 10_000:
                with opened.catalog.writing() as session:
                    session.execute(insert(Artifact), batch)
                batch = []
        if batch:
            with opened.catalog.writing() as session:
                session.execute(insert(Artifact), batch)
    finally:
        opened.close()


def run(work: Path, cfg: Config) -> Figure:
    from trtforge.store import open_existing_store

    fig = Figure("lookup", "Lookup latency by catalog size (in process, p50/p99) and CLI wall time")
    fig.notes.append(f"in process: {(lookup_query.__doc__ or '').splitlines()[0]}")
    fig.notes.append(f"{ARTIFACTS_PER_NAME} artifacts per recipe name; random names, seeded")
    p50s: dict[int, float] = {}
    stores: dict[int, Path] = {}
    for size in cfg.lookup_sizes:
        store = work / f"catalog-{size}"
        timed = timed_call(lambda store=store, size=size: populate(store, size, seed=size))
        fig.facts[f"{size} artifacts: populate via ORM bulk insert, s"] = round(timed.wall, 2)
        stores[size] = store
        opened = open_existing_store(store)
        assert opened is not None
        rng = random.Random(1)
        names = max(1, size // ARTIFACTS_PER_NAME)
        lookup_query(opened, name_of(0))  # warm-up: statement compilation, connection
        series = fig.add(Series(f"{size} artifacts: in-process lookup", unit="ms"))
        for _ in range(cfg.lookup_queries):
            name = name_of(rng.randrange(names))
            sample = timed_call(lambda name=name, opened=opened: lookup_query(opened, name))
            sample.wall *= 1000
            sample.cpu = sample.cpu * 1000 if sample.cpu is not None else None
            series.add(sample)
        opened.close()
        ordered = sorted(series.walls)
        p50s[size] = percentile(ordered, 50)
        fig.facts[f"{size} artifacts: p50 / p99 ms"] = f"{p50s[size]:.3f} / {percentile(ordered, 99):.3f}"

    cli_series = {size: fig.add(Series(f"{size} artifacts: CLI `trtforge lookup`")) for size in cfg.lookup_sizes}

    def cli_step(size: int):  # type: ignore[no-untyped-def]
        def step():  # type: ignore[no-untyped-def]
            sample, _ = run_timed(LOOKUP_CLI(stores[size], name_of(0)))
            return sample

        return step

    interleave(cfg.reps_fast, *((cli_series[s], cli_step(s)) for s in cfg.lookup_sizes))
    biggest = max(cfg.lookup_sizes)
    if biggest >= 100_000:
        wall = cli_series[biggest].median()
        fig.goal(f"CLI `trtforge lookup`, {biggest} artifacts, wall", f"<= {CLI_GOAL_S} s", wall, wall <= CLI_GOAL_S)

    largest, smallest = max(p50s), min(p50s)
    growth = p50s[largest] / p50s[smallest]
    log_growth = math.log(largest) / math.log(smallest) if smallest > 1 else float("inf")
    fig.ratios[f"p50 {largest} / p50 {smallest}"] = growth
    fig.ratios[f"log({largest}) / log({smallest}) (logarithmic growth)"] = log_growth
    if largest >= 100_000:
        fig.goal(f"p50 at {largest} artifacts", f"< {P50_GOAL_MS} ms", p50s[largest], p50s[largest] < P50_GOAL_MS)
    fig.goal("p50 growth no worse than logarithmic", f"<= {log_growth:.2f}", growth, growth <= log_growth)
    return fig
