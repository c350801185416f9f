"""Figure 2: cold `trtforge build` (empty store) / `polygraphy convert`, same models and settings."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from bench.config import Config
from bench.fig_cache_hit import POLYGRAPHY_ENV, build, polygraphy_argv
from bench.figure import Figure
from bench.models import BenchModel, cold_build_models
from bench.timing import Sample, Series, child_env, interleave, run_timed

OVERHEAD_GOAL = 1.10


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("cold_build", "Cold build: trtforge (empty store) vs polygraphy convert, TensorRT-RTX on the CPU")
    for model in cold_build_models(work / "models", cfg.quick):
        _compare(fig, model, work, cfg)
    return fig


def _compare(fig: Figure, model: BenchModel, work: Path, cfg: Config) -> None:
    recipe = model.write_recipe(model.path.parent)
    ours = fig.add(Series(f"{model.name}: trtforge build (cold)"))
    theirs = fig.add(Series(f"{model.name}: polygraphy convert"))
    sizes: dict[str, int] = {}
    counter = iter(range(10**6))

    def trtforge_cold() -> Sample:
        store = work / f"store-{next(counter)}"
        sample, [result] = build([recipe], store)
        assert result["status"] == "built", result
        sizes["trtforge"] = Path(result["plan_path"]).stat().st_size
        shutil.rmtree(store)
        return sample

    def polygraphy() -> Sample:
        out = work / f"{model.name}.plan"
        sample, _ = run_timed(polygraphy_argv(model, out), env=child_env(**POLYGRAPHY_ENV))
        sizes["polygraphy"] = out.stat().st_size
        out.unlink()
        return sample

    interleave(cfg.reps_slow, (ours, trtforge_cold), (theirs, polygraphy))
    value = ours.median() / theirs.median()
    fig.ratios[f"{model.name}: trtforge / polygraphy (wall)"] = value
    fig.ratios[f"{model.name}: trtforge / polygraphy (cpu)"] = statistics.median(ours.cpus) / statistics.median(
        theirs.cpus
    )
    fig.facts[f"{model.name}: plan bytes trtforge / polygraphy"] = f"{sizes['trtforge']} / {sizes['polygraphy']}"
    fig.facts[f"{model.name}: model"] = model.notes
    fig.goal(f"{model.name}: cold overhead (wall ratio)", f"<= {OVERHEAD_GOAL}", value, value <= OVERHEAD_GOAL)
