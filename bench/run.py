"""Run the benchmarks: ``python -m bench`` or ``python bench/run.py`` (add ``--quick`` for a smoke run).

Writes ``bench/results/latest.json`` and ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    fig_cache_hit,
    fig_cold_build,
    fig_concurrency,
    fig_daily,
    fig_ingest,
    fig_lookup,
    fig_ray,
    fig_workers,
)
from bench.config import FULL, QUICK
from bench.machine import describe
from bench.report import write
from bench.timing import REPO

FIGURES = {
    "cache_hit": fig_cache_hit.run,
    "cold_build": fig_cold_build.run,
    "lookup": fig_lookup.run,
    "concurrency": fig_concurrency.run,
    "ingest": fig_ingest.run,
    "daily": fig_daily.run,
    "workers": fig_workers.run,
}
# Figures chosen by --only alone (they need an optional extra): numbered after the others.
OPTIONAL = {
    "ray": fig_ray.run,
}
ALL = {**FIGURES, **OPTIONAL}
DEFAULT_OUT = REPO / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one or two repetitions (smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures (default: all of {','.join(FIGURES)}; also: {','.join(OPTIONAL)})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default bench/results)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir, removed)")
    parser.add_argument(
        "--corpus", type=_corpus_size, default=None, help="corpus models in figure 7: a number, or 'all' (default 140)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="figure 7's --jobs against --jobs 1 (default: cores)")
    return parser.parse_args(argv)


def _corpus_size(text: str) -> int:
    """'all' -> 0 (the whole corpus), else a positive number of models."""
    if text == "all":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a number of models, or 'all'")
    return int(text)


def precompile_trtforge() -> None:
    """Byte-compile trtforge as installing a wheel does, before anything is timed.

    An editable install has no bytecode, and where PYTHONDONTWRITEBYTECODE is set (it is on
    this machine) every trtforge run would compile its modules from source (~50 ms), which
    polygraphy, installed with its bytecode, never pays.
    """
    import compileall

    compileall.compile_dir(REPO / "trtforge", quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in ALL]
    if unknown:
        print(f"unknown figure(s): {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    cfg = QUICK if args.quick else FULL
    if args.corpus is not None:
        cfg = replace(cfg, corpus=args.corpus or None)
    if args.jobs is not None:
        cfg = replace(cfg, jobs=args.jobs)
    precompile_trtforge()
    work = args.work or Path(tempfile.mkdtemp(prefix="trtforge-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "machine": describe(),
        "figures": {},
    }
    failed = False
    try:
        for name in wanted:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            fig_started = time.perf_counter()
            try:
                figure = ALL[name](work / name, cfg)
                figure.seconds = time.perf_counter() - fig_started
                results["figures"][name] = {"number": list(ALL).index(name) + 1, **figure.as_json()}
            except Exception as exc:  # a broken figure is reported, the others still run
                failed = True
                traceback.print_exc()
                number = list(ALL).index(name) + 1
                results["figures"][name] = {"number": number, "title": name, "error": f"{type(exc).__name__}: {exc}"}
            print(f"[bench] {name} done in {time.perf_counter() - fig_started:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - started
    json_path, md_path = write(results, args.out)
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
