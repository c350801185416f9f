"""Figure 1: a cache-hit `trtforge build` against the cold build and `polygraphy convert`.

Also: 100 cached recipes in one invocation, which heavy modules the hit imports, and what
re-hashing a 200 MB model on every hit would cost (the stat-keyed digest cache avoids it).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.config import Config
from bench.figure import Figure
from bench.models import BenchModel, example, mlp_family, save, wide_matmul
from bench.timing import (
    Sample,
    Series,
    child_env,
    interleave,
    run_timed,
    timed_call,
    top_imports,
    trtforge_argv,
)

HEAVY = ("tensorrt", "tensorrt_rtx", "polygraphy", "alembic", "onnx", "onnxruntime")
REPORTED = (*HEAVY, "sqlalchemy", "rich")
HIT_IMPORTS = (
    "site", "typer", "pydantic", "yaml", "trtforge.rules.recipe", "trtforge.stages.build", "sqlalchemy", "rich", "onnx"
)
ONE_HIT_GOAL = 0.35
MANY_HIT_GOAL = 2.5

PROBE = """\
import json, sys
from trtforge.cli import app
sys.argv = ["trtforge", "build", *sys.argv[1:]]
try:
    app()
except SystemExit:
    pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
sys.stderr.write("MODULES=" + json.dumps(loaded) + "\\n")
"""


def polygraphy_argv(model: BenchModel, output: Path) -> list[str | Path]:
    """`polygraphy convert`, run by this Python directly (a pyenv-style shim would add its own start-up)."""
    script = Path(sys.executable).with_name("polygraphy")
    if not script.is_file():
        found = shutil.which("polygraphy")
        if found is None:
            raise RuntimeError("polygraphy is not installed (pip install polygraphy)")
        script = Path(found)
    return [sys.executable, script, "convert", *model.polygraphy_args(), "-o", output]


POLYGRAPHY_ENV = {"POLYGRAPHY_USE_TENSORRT_RTX": "1"}


def build(recipes: list[Path], store: Path) -> tuple[Sample, list[dict]]:
    sample, proc = run_timed(trtforge_argv("build", *recipes, "--store", store, "--json"))
    return sample, json.loads(proc.stdout)


def cache_hit_step(recipe: Path, store: Path) -> Callable[[], Sample]:
    """One timed `trtforge build` of an already-built ``recipe`` (it must be a cache hit)."""

    def cached() -> Sample:
        sample, [result] = build([recipe], store)
        assert result["status"] == "cached", result
        return sample

    return cached


def cold_build_step(recipe: Path, work: Path) -> Callable[[], Sample]:
    """One timed cold build of ``recipe`` into a new empty store (removed afterwards)."""
    counter = iter(range(10**6))

    def cold_build() -> Sample:
        fresh = work / f"cold-{next(counter)}"
        sample, [result] = build([recipe], fresh)
        assert result["status"] == "built", result
        shutil.rmtree(fresh)
        return sample

    return cold_build


def polygraphy_step(model: BenchModel, work: Path) -> Callable[[], Sample]:
    """One timed `polygraphy convert` of ``model`` with the recipe's settings (it always rebuilds)."""

    def polygraphy() -> Sample:
        out = work / "polygraphy.plan"
        sample, _ = run_timed(polygraphy_argv(model, out), env=child_env(**POLYGRAPHY_ENV))
        out.unlink()
        return sample

    return polygraphy


def modules_on_hit(recipe: Path, store: Path, work: Path) -> list[str]:
    probe = work / "probe_hit.py"
    probe.write_text(PROBE % (REPORTED,))
    _, proc = run_timed([sys.executable, probe, recipe, "--store", store, "--json"])
    assert json.loads(proc.stdout)[0]["status"] == "cached", proc.stdout
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    return json.loads(line.removeprefix("MODULES="))


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("cache_hit", "Cache-hit rebuild vs cold build vs polygraphy convert (example recipe)")
    model = example(work / "example")
    recipe = model.write_recipe(model.path.parent)
    store = work / "store"
    _, [first] = build([recipe], store)
    assert first["status"] == "built", first

    hit = fig.add(Series("trtforge build, cache hit"))
    cold = fig.add(Series("trtforge build, cold (empty store)"))
    poly = fig.add(Series("polygraphy convert (always rebuilds)"))

    steps = (cold, cold_build_step(recipe, work)), (poly, polygraphy_step(model, work))
    interleave(cfg.reps_fast, (hit, cache_hit_step(recipe, store)), *steps)
    fig.ratios["hit / cold build"] = hit.median() / cold.median()
    fig.ratios["hit / polygraphy convert"] = hit.median() / poly.median()
    fig.goal("one cached recipe, wall", f"< {ONE_HIT_GOAL} s", hit.median(), hit.median() < ONE_HIT_GOAL)

    argv = [sys.executable, "-X", "importtime", "-m", "trtforge", "build", recipe, "--store", store, "--json"]
    _, proc = run_timed(argv)
    fig.facts["cache hit import time (ms, cumulative)"] = top_imports(proc.stderr, HIT_IMPORTS)
    loaded = modules_on_hit(recipe, store, work)
    fig.facts["modules imported on the hit path"] = loaded
    heavy = [m for m in loaded if m in HEAVY]
    fig.goal("tensorrt/polygraphy/alembic/onnx imported on a hit", "none", len(heavy), not heavy)

    # Many recipes (distinct keys) in one invocation.
    family = mlp_family(work / "many", cfg.many_recipes)
    recipes = [m.write_recipe(m.path.parent) for m in family]
    many_store = work / "many-store"
    cold_many, results = build(recipes, many_store)
    assert {r["status"] for r in results} == {"built"}, results
    fig.facts[f"{len(recipes)} recipes built cold in one invocation, s"] = round(cold_many.wall, 3)
    many = fig.add(Series(f"trtforge build, {len(recipes)} cached recipes in one invocation"))

    def cached_many() -> Sample:
        sample, found = build(recipes, many_store)
        assert {r["status"] for r in found} == {"cached"}, found
        return sample

    interleave(cfg.reps_slow, (many, cached_many))
    if len(recipes) >= 100:
        value = many.median()
        fig.goal("100 cached recipes, one invocation, wall", f"< {MANY_HIT_GOAL} s", value, value < MANY_HIT_GOAL)

    # A large model: the hit with the digest cache vs re-hashing the model (no digest cache).
    big_dir = work / "big"
    big_model = BenchModel(
        "big-matmul",
        save(wide_matmul("big-matmul", megabytes=cfg.big_model_mb, seed=3), big_dir, "big-matmul"),
        [{"x": ([1, 1024], [1, 1024], [4, 1024])}],
        optimization_level=0,
        workspace_mib=None,
    )
    size_mb = big_model.path.stat().st_size / 2**20
    big_recipe = big_model.write_recipe(big_dir)
    big_store = work / "big-store"
    started = time.perf_counter()
    _, [built] = build([big_recipe], big_store)
    assert built["status"] == "built", built
    fig.facts[f"{size_mb:.0f} MB model: cold build, s"] = round(time.perf_counter() - started, 3)
    assert (big_store / "cache" / "digests.json").is_file(), "the cold build remembers the model digest"
    digests = big_store / "cache" / "digests.json"
    with_cache = fig.add(Series(f"cache hit, {size_mb:.0f} MB model, digest cached"))
    rehash = fig.add(Series(f"cache hit, {size_mb:.0f} MB model, re-hashed (no digest cache)"))

    def hit_cached_digest() -> Sample:
        sample, [result] = build([big_recipe], big_store)
        assert result["status"] == "cached", result
        return sample

    def hit_rehash() -> Sample:
        digests.unlink(missing_ok=True)
        sample, [result] = build([big_recipe], big_store)
        assert result["status"] == "cached", result
        return sample

    interleave(cfg.reps_fast, (with_cache, hit_cached_digest), (rehash, hit_rehash))
    fig.ratios[f"{size_mb:.0f} MB model hit: digest cached / re-hashed"] = with_cache.median() / rehash.median()

    from trtforge.rules.keys import sha256_file

    hashing = fig.add(Series(f"sha256 of the {size_mb:.0f} MB model, in process"))
    interleave(cfg.reps_fast, (hashing, lambda: timed_call(lambda: sha256_file(big_model.path))))
    fig.facts["sha256 throughput, MB/s"] = round(size_mb / hashing.median(), 1)
    return fig
