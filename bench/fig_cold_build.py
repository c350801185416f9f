"""Figure 2: cold `trtforge build` (empty store) / `polygraphy convert`, same models and settings."""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

from bench.config import Config
from bench.fig_cache_hit import POLYGRAPHY_ENV, build, polygraphy_argv
from bench.figure import Figure
from bench.models import BenchModel, cold_build_models
from bench.timing import Sample, Series, child_env, interleave, run_timed, top_imports, trtforge_argv

OVERHEAD_GOAL = 1.10


def build_forced(recipe: Path, store: Path) -> tuple[Sample, list[dict]]:
    import json

    sample, proc = run_timed(trtforge_argv("build", recipe, "--store", store, "--json", "--force"))
    return sample, json.loads(proc.stdout)


# Top-level packages whose import time explains a cold build's fixed cost.
IMPORTS = (
    "typer",
    "pydantic",
    "yaml",
    "sqlalchemy",
    "alembic",
    "onnx",
    "tensorrt_rtx_libs",
    "tensorrt_rtx_bindings",
    "polygraphy",
    "rich",
)


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("cold_build", "Cold build: trtforge (empty store) vs polygraphy convert, TensorRT-RTX on the CPU")
    models = cold_build_models(work / "models", cfg.quick)
    for model in models:
        _compare(fig, model, work, cfg)
    _all_in_one(fig, models, work, cfg)
    _import_profile(fig, models[0], work)
    return fig


def _all_in_one(fig: Figure, models: list[BenchModel], work: Path, cfg: Config) -> None:
    """Every model in one `trtforge build` (as a CI job does) vs one `polygraphy convert` per model."""
    recipes = [m.write_recipe(m.path.parent) for m in models]
    ours = fig.add(Series(f"all {len(models)} models: one trtforge build invocation (cold)"))
    theirs = fig.add(Series(f"all {len(models)} models: {len(models)} polygraphy converts"))
    counter = iter(range(10**6))

    def trtforge_all() -> Sample:
        store = work / f"all-{next(counter)}"
        sample, results = build(recipes, store)
        assert {r["status"] for r in results} == {"built"}, results
        shutil.rmtree(store)
        return sample

    def polygraphy_all() -> Sample:
        total = Sample(0.0, 0.0)
        for model in models:
            out = work / f"{model.name}.plan"
            sample, _ = run_timed(polygraphy_argv(model, out), env=child_env(**POLYGRAPHY_ENV))
            out.unlink()
            total.wall += sample.wall
            total.cpu = (total.cpu or 0.0) + (sample.cpu or 0.0)
        return total

    interleave(cfg.reps_slow, (ours, trtforge_all), (theirs, polygraphy_all))
    fig.ratios[f"all {len(models)} models in one invocation: trtforge / polygraphy (wall)"] = (
        ours.median() / theirs.median()
    )


def _import_profile(fig: Figure, model: BenchModel, work: Path) -> None:
    """Where a cold build's fixed cost goes: cumulative import time of the big packages (-X importtime)."""
    recipe = model.write_recipe(model.path.parent)
    store = work / "importtime-store"
    for label, args in (("new store", []), ("existing store, --force", ["--force"])):
        _, proc = run_timed(
            [sys.executable, "-X", "importtime", "-m", "trtforge", "build", recipe, "--store", store, "--json", *args]
        )
        fig.facts[f"cold build import time, {label} (ms, cumulative)"] = top_imports(proc.stderr, IMPORTS)
    shutil.rmtree(store)


def _compare(fig: Figure, model: BenchModel, work: Path, cfg: Config) -> None:
    recipe = model.write_recipe(model.path.parent)
    ours = fig.add(Series(f"{model.name}: trtforge build (cold)"))
    theirs = fig.add(Series(f"{model.name}: polygraphy convert"))
    forced = fig.add(Series(f"{model.name}: trtforge build --force (existing store)"))
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

    warm_store = work / f"warm-{model.name}"
    build([recipe], warm_store)

    def trtforge_forced() -> Sample:
        sample, [result] = build_forced(recipe, warm_store)
        assert result["status"] == "built", result
        return sample

    interleave(cfg.reps_slow, (ours, trtforge_cold), (theirs, polygraphy), (forced, trtforge_forced))
    shutil.rmtree(warm_store)
    fig.ratios[f"{model.name}: trtforge --force, existing store / polygraphy (wall)"] = (
        forced.median() / theirs.median()
    )
    value = ours.median() / theirs.median()
    fig.ratios[f"{model.name}: trtforge / polygraphy (wall)"] = value
    fig.ratios[f"{model.name}: trtforge / polygraphy (cpu)"] = statistics.median(ours.cpus) / statistics.median(
        theirs.cpus
    )
    fig.facts[f"{model.name}: plan bytes trtforge / polygraphy"] = f"{sizes['trtforge']} / {sizes['polygraphy']}"
    fig.facts[f"{model.name}: model"] = model.notes
    fig.goal(f"{model.name}: cold overhead (wall ratio)", f"<= {OVERHEAD_GOAL}", value, value <= OVERHEAD_GOAL)
