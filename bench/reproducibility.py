"""How reproducible TensorRT-RTX builds are here: `build --reproduce` over real models (issue 23).

``python -m bench.reproducibility [--count N] [--repeats R]`` writes N models of the ONNX node-test
corpus (tests/corpus.py, seeded), builds them with one `trtforge build` (one process), then
rebuilds each built artifact R times with the reproduce stage (``build --reproduce``, in this
process) and counts: identical bytes, known benign differences (trtforge.core.plan_diff), other
differences. It prints one JSON object; docs/timing-caches.md quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from bench.timing import trtforge_argv


def measure(work: Path, count: int, repeats: int) -> dict[str, Any]:
    from tests.corpus import corpus_cases, pick, write_corpus
    from trtforge.stages.reproduce import reproduce

    models = write_corpus(pick(corpus_cases(), count), work / "corpus")
    store = work / "store"
    argv = trtforge_argv("build", *[m.recipe for m in models], "--store", store, "--json")
    built = [r for r in json.loads(subprocess.run(argv, capture_output=True, text=True).stdout) if r["artifact_id"]]
    started = time.perf_counter()
    outcomes: Counter[str] = Counter()
    varies: dict[str, list[str]] = {}
    for result in built:
        for _ in range(repeats):
            rebuilt = reproduce(result["artifact_id"], store)
            outcome = "identical" if rebuilt.identical else ("benign" if rebuilt.benign else "other")
            outcomes[outcome] += 1
            if rebuilt.difference is not None:
                known = sorted({r.known or "unknown" for r in rebuilt.difference.regions})
                varies.setdefault(result["name"], known)
    return {
        "machine": describe(),
        "models": len(models),
        "built": len(built),
        "repeats": repeats,
        "rebuilds": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "models_that_differed": varies,
        "rebuild_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reproducibility", description=__doc__)
    parser.add_argument("--count", type=int, default=120, help="corpus models to write (default 120)")
    parser.add_argument("--repeats", type=int, default=2, help="rebuilds per built artifact (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trtforge-repro-") as work:
        print(json.dumps(measure(Path(work), args.count, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
