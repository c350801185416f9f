"""The benchmark suite runs end to end in its tiny quick mode and writes its reports.

No timing is asserted: figures depend on the machine. This only keeps `python -m bench` working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

pytestmark = pytest.mark.slow  # the benchmark's quick mode: a minute of builds (.ci/run: pytest -m slow)

FIGURES = {"cache_hit", "cold_build", "lookup", "concurrency", "ingest", "daily", "workers"}


def test_bench_quick_mode_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "latest.json").read_text())
    assert results["quick"] is True and set(results["figures"]) == FIGURES
    assert results["machine"]["cores"] and results["machine"]["tensorrt_rtx"]
    for figure in results["figures"].values():
        assert "error" not in figure, figure
        assert figure["series"] and all(s["wall"]["n"] >= 1 for s in figure["series"])
    assert results["figures"]["cache_hit"]["facts"]["modules imported on the hit path"] == []
    # what --jobs can gain on the corpus is reported with the speed-up (the longest raw build bounds it)
    workers = results["figures"]["workers"]["ratios"]
    assert any(name.startswith("speed-up ceiling") and value >= 1 for name, value in workers.items()), workers
    report = (out / "latest.md").read_text()
    assert report.startswith("# trtforge benchmark results") and report.count("\n## ") == len(FIGURES)


def test_bench_rejects_unknown_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--only", "nonsense", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown figure" in proc.stderr
    assert not (tmp_path / "latest.json").exists()
