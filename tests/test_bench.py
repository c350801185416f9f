"""The benchmark suite runs end to end in its tiny quick mode and writes its reports.

No timing is asserted: figures depend on the machine. This only keeps `python -m bench` working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

pytestmark = pytest.mark.slow  # the benchmark's quick mode: a minute of builds (.ci/run: pytest -m slow)

FIGURES = {"cache_hit", "cold_build", "lookup", "concurrency", "ingest", "daily", "workers"}


def quick_bench(tmp_path: Path, *options: str) -> Path:
    """``python -m bench --quick OPTIONS`` run to its end; the folder of its reports."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *options, "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_bench_quick_mode_writes_json_and_markdown(tmp_path: Path) -> None:
    out = quick_bench(tmp_path)
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


@pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed (the 'ray' extra; .ci/run installs it)")
def test_bench_ray_figure_reports_rays_own_floor(tmp_path: Path) -> None:
    """Figure 8 times Ray alone (tasks that do nothing) both ways, and says the goal is out of Ray's
    reach exactly when that floor alone is above it."""
    out = quick_bench(tmp_path, "--only", "ray", "--jobs", "2")
    figure = json.loads((out / "latest.json").read_text())["figures"]["ray"]
    assert "error" not in figure, figure
    for how in ("local Ray started and stopped", "Ray started beforehand"):
        floor = figure["ratios"][f"Ray alone ({how}) / the local batch"]
        assert floor > 0
        assert (f"goal vs Ray's floor ({how})" in figure["facts"]) == (floor > 1.2), figure["facts"]


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
