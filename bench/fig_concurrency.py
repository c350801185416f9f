"""Figure 4: N processes building the same key, and N processes building different keys.

All processes start together on one empty store; total wall time is compared with one build.
The statuses say how many processes built and how many found another's engine.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.config import Config
from bench.fig_cache_hit import build
from bench.figure import Figure
from bench.models import BenchModel, example
from bench.timing import Sample, Series, child_env, interleave, trtforge_argv


def variants(base: BenchModel, count: int) -> list[BenchModel]:
    """``count`` recipes of one model with distinct build keys (the opt batch differs) and equal cost."""
    out = []
    for index in range(count):
        profiles = [
            {name: (lo, [lo[0] + index % (hi[0] - lo[0] + 1), *opt[1:]], hi) for name, (lo, opt, hi) in profile.items()}
            for profile in base.profiles
        ]
        name = f"{base.name}-v{index}"
        out.append(BenchModel(name, base.path, profiles, base.optimization_level, base.workspace_mib))
    return out


def run_together(recipes: list[Path], store: Path) -> tuple[Sample, Counter[str]]:
    """Start one `trtforge build` per recipe at once; wall time until the last one finishes."""
    env = child_env()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [str(a) for a in trtforge_argv("build", recipe, "--store", store, "--json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for recipe in recipes
    ]
    statuses: Counter[str] = Counter()
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"concurrent build failed ({proc.returncode}): {err[-2000:]}")
        statuses.update(r["status"] for r in json.loads(out))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Sample(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime), statuses


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("concurrency", "N processes on one empty store: same key, different keys (example model)")
    base = example(work / "model")
    single_recipe = base.write_recipe(base.path.parent)
    counter = iter(range(10**6))

    def fresh() -> Path:
        return work / f"store-{next(counter)}"

    single = fig.add(Series("1 process, 1 build"))

    def one() -> Sample:
        store = fresh()
        sample, [result] = build([single_recipe], store)
        assert result["status"] == "built", result
        shutil.rmtree(store)
        return sample

    steps = [(single, one)]
    for n in cfg.concurrency:
        recipes_diff = [m.write_recipe(base.path.parent) for m in variants(base, n)]
        same = fig.add(Series(f"{n} processes, same key"))
        diff = fig.add(Series(f"{n} processes, {n} different keys"))

        def same_key(n: int = n, series: Series = same) -> Sample:
            store = fresh()
            sample, statuses = run_together([single_recipe] * n, store)
            fig.facts[f"{series.label}: statuses (last run)"] = dict(statuses)
            shutil.rmtree(store)
            return sample

        def diff_keys(recipes: list[Path] = recipes_diff, series: Series = diff) -> Sample:
            store = fresh()
            sample, statuses = run_together(recipes, store)
            fig.facts[f"{series.label}: statuses (last run)"] = dict(statuses)
            shutil.rmtree(store)
            return sample

        steps += [(same, same_key), (diff, diff_keys)]
    interleave(cfg.reps_slow, *steps)
    for series in fig.series[1:]:
        fig.ratios[f"{series.label} / 1 build"] = series.median() / single.median()
    return fig
