"""Figure 6: the daily paths next to their floors (issue 16), measured side by side.

- a cache hit of the example recipe and a `lookup` in a one-artifact store, against the floor of
  any Python tool that reads YAML and asks SQLite (``python -c 'import yaml, sqlite3, hashlib'``);
- N real models of the ONNX node-test corpus (tests/corpus.py) in one `trtforge build` against
  a raw TensorRT-RTX build loop over the same models in one Python process: the per-model overhead;
- a cold build of the example against `polygraphy convert`: the difference in seconds.

Every pair or triple runs interleaved; CPU time (user + system of the child) is recorded next to
wall time, since the machine is shared.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench.config import Config
from bench.fig_cache_hit import build, cache_hit_step, cold_build_step, polygraphy_step
from bench.figure import Figure
from bench.models import example
from bench.timing import Sample, Series, interleave, run_timed, trtforge_argv

HIT_GOAL = 0.15
LOOKUP_GOAL = 0.20
PER_MODEL_GOAL_MS = 4.0
COLD_OVER_POLYGRAPHY_GOAL = 0.15
FLOOR = [sys.executable, "-c", "import yaml, sqlite3, hashlib"]
TYPER_FLOOR = [sys.executable, str(Path(__file__).with_name("typer_floor.py")), "build", "example.yaml", "--json"]
CORPUS_MODELS = 140  # as measured in the issue (4.72 s vs 3.20 s before)


def run(work: Path, cfg: Config) -> Figure:
    fig = Figure("daily", "Daily paths vs their floors: cache hit, lookup, many models, cold build")
    model = example(work / "example")
    recipe = model.write_recipe(model.path.parent)
    store = work / "store"
    _, [first] = build([recipe], store)
    assert first["status"] == "built", first
    lookup_argv = trtforge_argv(
        "lookup", first["name"], "--flavor", first["target"]["flavor"], "--trt", first["target"]["trt_version"],
        "--cc", "8.6", "--store", store, "--json",
    )  # fmt: skip

    floor = fig.add(Series("floor: python -c 'import yaml, sqlite3, hashlib'"))
    typer_floor = fig.add(Series("floor + Typer: bench/typer_floor.py, build's option types, no work"))
    hit = fig.add(Series("trtforge build example.yaml --json, cache hit"))
    lookup = fig.add(Series("trtforge lookup NAME --flavor --trt --cc --json, one artifact"))

    def looked_up() -> Sample:
        sample, proc = run_timed(lookup_argv)
        assert json.loads(proc.stdout)["best"]["artifact_id"] == first["artifact_id"], proc.stdout
        return sample

    interleave(
        cfg.reps_fast * 2,
        (floor, lambda: run_timed(FLOOR)[0]),
        (typer_floor, lambda: run_timed(TYPER_FLOOR)[0]),
        (hit, cache_hit_step(recipe, store)),
        (lookup, looked_up),
    )
    fig.goal("cache hit, wall", f"<= {HIT_GOAL} s", hit.median(), hit.median() <= HIT_GOAL)
    fig.goal("cache hit, CPU", f"<= {HIT_GOAL} s", _cpu(hit), _cpu(hit) <= HIT_GOAL)
    fig.goal("lookup, one artifact, wall", f"<= {LOOKUP_GOAL} s", lookup.median(), lookup.median() <= LOOKUP_GOAL)
    fig.goal("lookup, one artifact, CPU", f"<= {LOOKUP_GOAL} s", _cpu(lookup), _cpu(lookup) <= LOOKUP_GOAL)
    fig.ratios["hit - floor, s (wall)"] = hit.median() - floor.median()
    fig.ratios["lookup - floor, s (wall)"] = lookup.median() - floor.median()
    fig.ratios["floor + Typer - floor, s (wall)"] = typer_floor.median() - floor.median()
    fig.ratios["hit - (floor + Typer), s (CPU)"] = _cpu(hit) - _cpu(typer_floor)
    fig.ratios["lookup - (floor + Typer), s (CPU)"] = _cpu(lookup) - _cpu(typer_floor)

    _cold_vs_polygraphy(fig, model, recipe, work, cfg)
    _corpus(fig, work, cfg)
    return fig


def _cpu(series: Series) -> float:
    ordered = sorted(series.cpus)
    return ordered[len(ordered) // 2]


def _cold_vs_polygraphy(fig: Figure, model, recipe: Path, work: Path, cfg: Config) -> None:
    cold = fig.add(Series("trtforge build example.yaml, cold (empty store)"))
    poly = fig.add(Series("polygraphy convert, example model, same settings"))
    interleave(cfg.reps_fast, (cold, cold_build_step(recipe, work)), (poly, polygraphy_step(model, work)))
    over = cold.median() - poly.median()
    fig.ratios["cold build / polygraphy convert"] = cold.median() / poly.median()
    fig.goal(
        "cold build - polygraphy convert, wall", f"<= +{COLD_OVER_POLYGRAPHY_GOAL} s", over,
        over <= COLD_OVER_POLYGRAPHY_GOAL,
    )  # fmt: skip


def _corpus(fig: Figure, work: Path, cfg: Config) -> None:
    """The issue-11 corpus: N node-test models, one trtforge build vs one raw TensorRT-RTX loop."""
    try:
        from tests.corpus import corpus_cases, pick, write_corpus, write_manifest
    except ImportError as exc:  # an installed trtforge without its tests: no corpus row
        fig.notes.append(f"corpus row skipped: {exc}")
        return
    count = 4 if cfg.quick else CORPUS_MODELS
    folder = work / "corpus"
    models = write_corpus(pick(corpus_cases(), count), folder)
    manifest = write_manifest(models, work / "corpus.json")
    recipes = [m.recipe for m in models]
    ours = fig.add(Series(f"{len(models)} corpus models, one trtforge build (empty store)"))
    raw = fig.add(Series(f"{len(models)} corpus models, raw TensorRT-RTX loop in one process"))
    counter = iter(range(10**6))
    outcomes: dict[str, int] = {}

    def forged() -> Sample:
        fresh = work / f"corpus-store-{next(counter)}"
        sample, proc = run_timed(trtforge_argv("build", "--json", "--store", fresh, *recipes), check=False)
        results = json.loads(proc.stdout)
        outcomes["trtforge built"] = sum(r["status"] == "built" for r in results)
        shutil.rmtree(fresh, ignore_errors=True)
        return sample

    def raw_loop() -> Sample:
        out = work / "raw.json"
        sample, _ = run_timed([sys.executable, "-m", "tests.corpus", "raw", manifest, out])
        outcomes["raw built"] = sum(r["built"] for r in json.loads(out.read_text()))
        return sample

    interleave(cfg.reps_slow, (ours, forged), (raw, raw_loop))
    per_model_ms = (ours.median() - raw.median()) / len(models) * 1000
    per_model_cpu_ms = (_cpu(ours) - _cpu(raw)) / len(models) * 1000
    fig.facts["corpus models built: trtforge / raw"] = f"{outcomes.get('trtforge built')} / {outcomes.get('raw built')}"
    fig.ratios["corpus overhead per model, ms (wall)"] = per_model_ms
    fig.ratios["corpus overhead per model, ms (CPU)"] = per_model_cpu_ms
    met = per_model_ms <= PER_MODEL_GOAL_MS
    fig.goal("corpus overhead per model, wall", f"<= {PER_MODEL_GOAL_MS} ms", per_model_ms, met)
