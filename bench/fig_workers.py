"""Figure 7: builds in worker processes (issue 24): `--jobs`, what the worker costs, the daily paths.

- The node-test corpus (tests/corpus.py; ``--corpus N`` or ``all``) built into an empty store with
  ``--jobs`` = cores (``--jobs J`` to choose) against ``--jobs 1``: the speed-up (goal: at least
  0.6 x the jobs), and ``--jobs 1`` against a raw TensorRT-RTX loop over the same models in one
  process (goal: at most 1.10x): what the worker, the store and the catalog cost.
- A cache hit and a `lookup` against the empty two-command Typer app (bench/typer_floor.py: `build`
  and `lookup` with trtforge's parameter types): trtforge's own work (goal: at most 0.05 s above
  it), and where that goes: the trtforge modules each path imports (``-X importtime``, the least
  of several runs) and trtforge's functions by cumulative time (cProfile, one run).

Every set of measurements runs interleaved; CPU time (user + system of the child and the workers
it waited for) is recorded next to wall time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.fig_cache_hit import build, cache_hit_step
from bench.figure import Figure
from bench.models import example
from bench.timing import Sample, Series, child_env, interleave, run_timed, trtforge_argv

OWN_WORK_GOAL_S = 0.05
SPEEDUP_PER_JOB_GOAL = 0.6
JOBS1_OVER_RAW_GOAL = 1.10
FLOOR = Path(__file__).with_name("typer_floor.py")
IMPORT_RUNS = 5

PROFILE = """\
import cProfile, json, pstats, sys
sys.argv = ["trtforge", *sys.argv[1:]]
profile = cProfile.Profile()
profile.enable()
from trtforge.cli import app
try:
    app()
except SystemExit:
    pass
profile.disable()
body, rows = 0.0, []
for (file, _line, func), (_cc, _nc, _own, cumulative, _callers) in pstats.Stats(profile).stats.items():
    if "/trtforge/cli/" in file and func == "body":
        body = cumulative  # the command's work, once Typer has parsed its options
    elif "/trtforge/" in file and "/trtforge/cli/" not in file and func != "<module>":
        rows.append((cumulative, file.rsplit("/trtforge/", 1)[1] + ":" + func))
top = []
for cumulative, name in sorted(rows, reverse=True):
    if top and top[-1][0] - cumulative < 5e-5:
        top[-1] = (cumulative, name)  # a caller that only passes through: name the callee
    elif len(top) < 7:
        top.append((cumulative, name))
sys.stderr.write("PROFILE=" + json.dumps([round(body * 1000, 1), [[round(c * 1000, 1), n] for c, n in top]]) + "\\n")
"""


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("workers", "Builds in worker processes: --jobs, the worker's cost, hit and lookup vs Typer")
    _daily(fig, work, cfg)
    _corpus(fig, work, cfg)
    return fig


def _cpu(series: Series) -> float:
    return statistics.median(series.cpus)


def _daily(fig: Figure, work: Path, cfg: Config) -> None:
    model = example(work / "example")
    recipe = model.write_recipe(model.path.parent)
    store = work / "store"
    _, [first] = build([recipe], store)
    assert first["status"] in ("built", "cached"), first  # cached: a --work folder used before
    target = ["--flavor", first["target"]["flavor"], "--trt", first["target"]["trt_version"], "--cc", "8.6"]
    lookup_args = ["lookup", first["name"], *target, "--store", str(store), "--json"]
    floor_build = [sys.executable, FLOOR, "build", str(recipe), "--store", str(store), "--json"]
    floor_lookup = [sys.executable, FLOOR, *lookup_args]

    fb = fig.add(Series("empty Typer app: build (build's parameter types)"))
    hit = fig.add(Series("trtforge build example.yaml --json, cache hit"))
    fl = fig.add(Series("empty Typer app: lookup (lookup's parameter types)"))
    lookup = fig.add(Series("trtforge lookup NAME --flavor --trt --cc --json, one artifact"))

    def looked_up() -> Sample:
        sample, proc = run_timed(trtforge_argv(*lookup_args))
        assert json.loads(proc.stdout)["best"]["artifact_id"] == first["artifact_id"], proc.stdout
        return sample

    interleave(
        cfg.reps_fast * 2,
        (fb, lambda: run_timed(floor_build)[0]),
        (hit, cache_hit_step(recipe, store)),
        (fl, lambda: run_timed(floor_lookup)[0]),
        (lookup, looked_up),
    )
    for label, ours, floor in (("cache hit", hit, fb), ("lookup", lookup, fl)):
        cpu, wall = _cpu(ours) - _cpu(floor), ours.median() - floor.median()
        fig.ratios[f"{label} - empty Typer app, s (CPU)"] = cpu
        fig.ratios[f"{label} - empty Typer app, s (wall)"] = wall
        fig.goal(f"{label}: trtforge's own work, CPU", f"<= {OWN_WORK_GOAL_S} s", cpu, cpu <= OWN_WORK_GOAL_S)
        fig.goal(f"{label}: trtforge's own work, wall", f"<= {OWN_WORK_GOAL_S} s", wall, wall <= OWN_WORK_GOAL_S)

    runs = 1 if cfg.quick else IMPORT_RUNS
    for label, argv, floor_argv in (
        ("cache hit", ["-m", "trtforge", "build", str(recipe), "--store", str(store), "--json"], floor_build[1:]),
        ("lookup", ["-m", "trtforge", *lookup_args], floor_lookup[1:]),
    ):
        ours_ms, floor_ms = _import_ms(argv, runs), _import_ms(floor_argv, runs)
        extra = {name: ms for name, ms in ours_ms.items() if name not in floor_ms}
        top = sorted(extra.items(), key=lambda item: -item[1])[:6]
        fig.facts[f"{label}: imports beyond the Typer app, ms (-X importtime, least of {runs})"] = (
            f"{sum(extra.values()):.1f} in all; " + ", ".join(f"{name} {ms:.1f}" for name, ms in top)
        )
        fig.facts[f"{label}: the command's body and trtforge's functions in it, cumulative ms (cProfile, one run)"] = (
            _profile(argv[2:], work)
        )


def _import_ms(argv: list[Any], runs: int) -> dict[str, float]:
    """Each module's own import time (ms), the least of ``runs`` runs of ``python -X importtime ARGV``."""
    best: dict[str, float] = {}
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *map(str, argv)], capture_output=True, text=True, env=child_env()
        )
        for line in proc.stderr.splitlines():
            found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if found:
                name, ms = found.group(2), int(found.group(1)) / 1000
                best[name] = min(best.get(name, ms), ms)
    return best


def _profile(argv: list[str], work: Path) -> str:
    script = work / "profile_cli.py"
    script.write_text(PROFILE)
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=child_env())
    lines = [x for x in proc.stderr.splitlines() if x.startswith("PROFILE=")]
    if not lines:
        return f"no profile ({proc.stderr[-300:]})"
    body, top = json.loads(lines[0].removeprefix("PROFILE="))
    return f"body {body}; within it: " + ", ".join(f"{name} {ms}" for ms, name in top)


def _corpus(fig: Figure, work: Path, cfg: Config) -> None:
    try:
        from tests.corpus import corpus_cases, pick, write_corpus, write_manifest
    except ImportError as exc:  # an installed trtforge without its tests: no corpus rows
        fig.notes.append(f"corpus rows skipped: {exc}")
        return
    jobs = cfg.jobs or os.cpu_count() or 1
    models = write_corpus(pick(corpus_cases(), cfg.corpus), work / "corpus")
    manifest = write_manifest(models, work / "corpus.json")
    recipes = [m.recipe for m in models]
    one = fig.add(Series(f"{len(models)} corpus models, trtforge build --jobs 1 (empty store)"))
    many = fig.add(Series(f"{len(models)} corpus models, trtforge build --jobs {jobs} (empty store)"))
    raw = fig.add(Series(f"{len(models)} corpus models, raw TensorRT-RTX loop in one process"))
    outcomes: dict[str, Any] = {}
    counter = iter(range(10**6))

    def forged(j: int) -> Sample:
        fresh = work / f"corpus-store-{next(counter)}"
        argv = trtforge_argv("build", "--json", "--store", fresh, "--jobs", str(j), *recipes)
        sample, proc = run_timed(argv, check=False)
        results = json.loads(proc.stdout)
        assert [r["recipe"] for r in results] == recipes, "results out of recipe order"
        outcomes[f"--jobs {j}"] = _tally(results)
        shutil.rmtree(fresh, ignore_errors=True)
        return sample

    ceilings: list[float] = []
    longest: list[tuple[float, str]] = []

    def raw_loop() -> Sample:
        out = work / "raw.json"
        sample, _ = run_timed([sys.executable, "-m", "tests.corpus", "raw", manifest, out], check=False)
        if out.is_file():
            raw_results = json.loads(out.read_text())
            outcomes["raw"] = sum(r["built"] for r in raw_results)
            ceiling, slowest = _ceiling(raw_results)
            ceilings.append(ceiling)
            longest.append(slowest)
        else:
            outcomes["raw"] = "the raw loop died (a crash in TensorRT ends its process)"
        return sample

    interleave(cfg.reps_slow, (one, lambda: forged(1)), (many, lambda: forged(jobs)), (raw, raw_loop))
    speedup = one.median() / many.median()
    fig.ratios[f"--jobs 1 / --jobs {jobs} (speed-up), wall"] = speedup
    goal = SPEEDUP_PER_JOB_GOAL * jobs
    fig.goal(f"speed-up with --jobs {jobs}", f">= {goal:.1f} (0.6 x {jobs})", speedup, speedup >= goal)
    if ceilings:
        _report_ceiling(fig, jobs, speedup, goal, ceilings, longest)
    over = one.median() / raw.median()
    fig.ratios["--jobs 1 / raw loop, wall"] = over
    fig.ratios["--jobs 1 / raw loop, CPU"] = _cpu(one) / _cpu(raw)
    fig.ratios["--jobs 1 - raw loop, ms per model (wall)"] = (one.median() - raw.median()) / len(models) * 1000
    fig.goal("--jobs 1 / raw loop, wall", f"<= {JOBS1_OVER_RAW_GOAL}", over, over <= JOBS1_OVER_RAW_GOAL)
    fig.facts["corpus outcomes (built / failed / crashed; raw: built)"] = outcomes
    fig.facts["cores seen (os.cpu_count)"] = os.cpu_count()


def _ceiling(raw_results: list[dict[str, Any]]) -> tuple[float, tuple[float, str]]:
    """What any number of jobs can gain on this corpus (Amdahl): the raw builds' total over the
    longest one, which no number of workers shortens; and that build (seconds, model)."""
    times = [(r["seconds"], r["name"]) for r in raw_results]
    slowest = max(times)
    return sum(t for t, _ in times) / slowest[0], slowest


def _report_ceiling(
    fig: Figure, jobs: int, speedup: float, goal: float, ceilings: list[float], longest: list[tuple[float, str]]
) -> None:
    ceiling = statistics.median(ceilings)
    seconds = statistics.median(t for t, _ in longest)
    fig.ratios["speed-up ceiling: raw builds' total / the longest build (median of the raw runs)"] = ceiling
    fig.ratios[f"--jobs {jobs} speed-up / that ceiling"] = speedup / ceiling
    name = Counter(model for _, model in longest).most_common(1)[0][0]
    fig.facts["longest raw build (in most raw runs; its seconds: the runs' median)"] = f"{name}, {seconds:.2f} s"
    if goal > ceiling:
        fig.facts["speed-up goal vs this corpus"] = (
            f"the goal ({goal:.1f}) is above the ceiling ({ceiling:.2f}): the longest build alone is "
            f"1/{ceiling:.2f} of the raw loop's build time, so no number of jobs reaches the goal on these models"
        )


def _tally(results: list[dict[str, Any]]) -> str:
    built = sum(r["status"] == "built" for r in results)
    crashed = [r["name"] for r in results if r.get("error_kind") == "crashed"]
    return f"{built} / {len(results) - built} / {len(crashed)}" + (f" ({', '.join(crashed)})" if crashed else "")
