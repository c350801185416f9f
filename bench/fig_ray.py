"""Figure 8 (issue 27; not in the default run, as it needs the `ray` extra): `build --executor ray`
against local builds.

- ``many_recipes`` (100) TensorRT-RTX recipes of distinct small models built into an empty store by
  a local Ray instance of N CPUs (``--executor ray --jobs N``) against ``--jobs N`` here (N: ``--jobs``,
  default the cores). Goal: at most 1.2x.
- One recipe both ways: the fixed cost of a Ray run (the driver process, Ray's start and stop, the
  first task's worker) against a local build.
- The same batch on a Ray instance started beforehand (``ray start --head --num-cpus N``, then
  ``--ray-address auto``), as on a team's running cluster: Ray's start and stop are out of the run.
  Same goal. ``ray stop --force`` ends it, and with it any other Ray instance of this user here.
- Ray alone, both ways: a fresh driver that runs as many tasks as there are recipes, each doing
  nothing (:mod:`bench.ray_alone`). No Ray executor can be faster than that: where it alone takes
  more than the goal allows the whole batch, the figure says that the goal is out of Ray's reach.

Run: ``python -m bench --only ray [--jobs N]``. Interleaved, as every figure; CPU time (user +
system of the children waited for) next to wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from itertools import count
from pathlib import Path

from bench.config import Config
from bench.figure import Figure
from bench.models import mlp
from bench.ray_alone import alone_argv
from bench.timing import Sample, Series, interleave, run_timed, trtforge_argv

RATIO_GOAL = 1.2
WIDTH = 64
RECIPE = """\
name: {name}
model:
  onnx: {name}.onnx
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, {width}], opt: [4, {width}], max: [8, {width}]}}
"""


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("ray", "build --executor ray (a local Ray instance) against local builds")
    if find_spec("ray") is None:
        fig.notes.append("ray is not installed (pip install 'trtforge[ray]'): nothing measured")
        return fig
    jobs = cfg.jobs or os.cpu_count() or 1
    recipes = _recipes(work / "recipes", cfg.many_recipes)
    runs = count()

    def build(chosen: list[Path], *executor: str) -> Sample:
        store = work / f"store-{next(runs)}"
        argv = trtforge_argv("build", *chosen, "--store", store, "--jobs", str(jobs), *executor, "--json")
        sample, proc = run_timed(argv)
        statuses = {r["status"] for r in json.loads(proc.stdout)}
        assert statuses == {"built"}, proc.stdout[-2000:]
        shutil.rmtree(store, ignore_errors=True)
        return sample

    n = len(recipes)
    here = fig.add(Series(f"{n} recipes, trtforge build --jobs {jobs} (empty store)"))
    on_ray = fig.add(Series(f"{n} recipes, trtforge build --executor ray --jobs {jobs} (local Ray, empty store)"))
    one_here = fig.add(Series("1 recipe, trtforge build (empty store)"))
    one_ray = fig.add(Series("1 recipe, trtforge build --executor ray (local Ray, empty store)"))
    alone = fig.add(Series(f"Ray alone: {n} tasks that do nothing (local Ray started and stopped)"))
    interleave(
        cfg.reps_slow,
        (here, lambda: build(recipes)),
        (on_ray, lambda: build(recipes, "--executor", "ray")),
        (one_here, lambda: build(recipes[:1])),
        (one_ray, lambda: build(recipes[:1], "--executor", "ray")),
        (alone, lambda: run_timed(alone_argv(n, jobs, None))[0]),
    )
    ratio = on_ray.median() / here.median()
    fig.ratios[f"Ray / --jobs {jobs}, {n} recipes, wall"] = ratio
    fig.ratios[f"Ray / --jobs {jobs}, {n} recipes, CPU"] = _cpu(on_ray) / _cpu(here)
    fig.ratios["fixed cost of a Ray run (1 recipe: Ray - local), s"] = one_ray.median() - one_here.median()
    fig.goal(f"{n} recipes: Ray with {jobs} CPUs / --jobs {jobs}", f"<= {RATIO_GOAL}", ratio, ratio <= RATIO_GOAL)
    _report_floor(fig, "local Ray started and stopped", alone, here)
    _against_a_started_cluster(fig, cfg, jobs, recipes, build)
    import ray

    fig.facts["ray"] = ray.__version__
    fig.facts["jobs"] = jobs
    return fig


def _against_a_started_cluster(
    fig: Figure, cfg: Config, jobs: int, recipes: list[Path], build: Callable[..., Sample]
) -> None:
    """The same batch on a Ray instance started beforehand (`ray start --head`, then
    `--ray-address auto`), as a team's running cluster would be: Ray's own start and stop are not
    in the run. Local builds are measured again beside it, interleaved."""
    n = len(recipes)
    with _ray_head(jobs) as started:
        if started is not None:
            fig.notes.append(f"no Ray instance started beforehand: {started}")
            return
        here = fig.add(Series(f"{n} recipes, trtforge build --jobs {jobs}, beside an idle Ray instance"))
        on_ray = fig.add(Series(f"{n} recipes, trtforge build --executor ray --ray-address auto (started beforehand)"))
        alone = fig.add(Series(f"Ray alone: {n} tasks that do nothing (--ray-address auto, started beforehand)"))
        interleave(
            cfg.reps_slow,
            (here, lambda: build(recipes)),
            (on_ray, lambda: build(recipes, "--executor", "ray", "--ray-address", "auto")),
            (alone, lambda: run_timed(alone_argv(n, jobs, "auto"))[0]),
        )
    ratio = on_ray.median() / here.median()
    fig.ratios[f"Ray started beforehand / --jobs {jobs}, {n} recipes, wall"] = ratio
    fig.goal(f"{n} recipes: Ray started beforehand / --jobs {jobs}", f"<= {RATIO_GOAL}", ratio, ratio <= RATIO_GOAL)
    _report_floor(fig, "Ray started beforehand", alone, here)


def _report_floor(fig: Figure, how: str, alone: Series, here: Series) -> None:
    """Ray's own floor (a driver whose tasks do nothing) against the local batch: where the floor alone
    exceeds the goal's share, no Ray executor meets the goal on this batch."""
    floor = alone.median() / here.median()
    fig.ratios[f"Ray alone ({how}) / the local batch"] = floor
    if floor > RATIO_GOAL:
        fig.facts[f"goal vs Ray's floor ({how})"] = (
            f"Ray alone, building nothing, took {alone.median():.2f} s: {floor:.2f}x the local batch "
            f"({here.median():.2f} s), above the goal ({RATIO_GOAL}x) before any build"
        )


@contextmanager
def _ray_head(cpus: int) -> Iterator[str | None]:
    """A local Ray head node for the block (None), or why it could not start."""
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    proc = subprocess.run(
        [*ray_cli, "start", "--head", "--num-cpus", str(cpus), "--disable-usage-stats"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        yield None if proc.returncode == 0 else (proc.stderr or proc.stdout)[-500:]
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], capture_output=True, check=False)


def _cpu(series: Series) -> float:
    return sorted(series.cpus)[len(series.cpus) // 2]


def _recipes(folder: Path, number: int) -> list[Path]:
    """``number`` recipes of distinct small MLPs (distinct weights: distinct build keys)."""
    from onnx import save

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(number):
        name = f"mlp{index:03d}"
        save(mlp(name, width=WIDTH, seed=index), folder / f"{name}.onnx")
        path = folder / f"{name}.yaml"
        path.write_text(RECIPE.format(name=name, width=WIDTH))
        paths.append(path)
    return paths
