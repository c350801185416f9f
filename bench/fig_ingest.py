"""Figure 5: store ingest of a plan-sized blob (hash + fsync + rename) vs a plain file copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from bench.config import Config
from bench.figure import Figure
from bench.timing import Sample, Series, interleave, timed_call


def run(work: Path, cfg: Config) -> Figure:
    from trtforge.store.blobs import BlobStore

    fig = Figure("ingest", f"Store ingest of a {cfg.ingest_mb} MB plan vs a plain copy (same file system)")
    work.mkdir(parents=True, exist_ok=True)
    source = work / "plan.bin"
    data = np.random.default_rng(0).bytes(cfg.ingest_mb << 20)
    source.write_bytes(data)
    counter = iter(range(10**6))

    def target() -> Path:
        path = work / f"t-{next(counter)}"
        path.mkdir()
        return path

    def measured(action) -> Sample:  # type: ignore[no-untyped-def]
        folder = target()
        sample = timed_call(lambda: action(folder))
        shutil.rmtree(folder)
        return sample

    def copy_fsync(folder: Path) -> None:
        shutil.copyfile(source, folder / "plan.bin")
        fd = os.open(folder / "plan.bin", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    actions = {
        "BlobStore.put_file (hash + fsync + rename)": lambda f: BlobStore(f).put_file(source),
        "BlobStore.put_bytes from memory (the build path)": lambda f: BlobStore(f).put_bytes(data),
        "shutil.copyfile (no fsync)": lambda f: shutil.copyfile(source, f / "plan.bin"),
        "shutil.copyfile + fsync": copy_fsync,
    }
    steps = [(Series(label), lambda action=action: measured(action)) for label, action in actions.items()]
    for series, _ in steps:
        fig.add(series)
    interleave(cfg.reps_fast, *steps)
    size_mb = cfg.ingest_mb
    for series in fig.series:
        fig.facts[f"{series.label}: MB/s (median)"] = round(size_mb / series.median(), 1)
    put, _, copy, copy_sync = fig.series
    fig.ratios["put_file / copyfile (time)"] = put.median() / copy.median()
    fig.ratios["put_file / copyfile+fsync (time)"] = put.median() / copy_sync.median()
    source.unlink()
    return fig
