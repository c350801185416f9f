"""The checks of one flavor, one pass/fail line each, run where polygraphy is bound to that flavor.

Builds come first (TensorRT-RTX ahead of time, also without a GPU); then the GPU checks, in this
order: load the plan; inference against ONNX Runtime, one line per profile; the
timing breakdown (trtexec's figures, each phase measured, events in order); a CUDA graph per
context and several streams on distinct profiles, each with outputs equal to the plain run's and
its figures beside the plain run's; refit (new weights in, old weights' outputs gone); a
weight-stripped plan refitted before verify; deny-list enforcement (full TensorRT); lookup of the
detected target with the runtime's validity check (TensorRT-RTX). With full TensorRT also a
timing cache shared by builds and the engine inspector's layers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trtforge.core.errors import SelftestFailure, UnsatisfiableDenyError
from trtforge.rules.flavors import Flavor, flavor_name
from trtforge.stages.selftest.models import write_mlp, write_recipe
from trtforge.stages.selftest.runner import CheckResult, Once, Runner, expect

PROFILES = (0, 1)  # the generated recipe's optimization profiles
PHASES = (
    ("h2d_latency_ms", "H2D"),
    ("gpu_compute_time_ms", "GPU Compute"),
    ("d2h_latency_ms", "D2H"),
    ("enqueue_time_ms", "Enqueue"),
)


def flavor_checks(flavor: Flavor, work: Path, cannot_run: str | None) -> list[CheckResult]:
    """Every check of ``flavor``, in this process (polygraphy bound to ``flavor``)."""
    from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES
    from trtforge.rules.target import current_gpu

    checks = Runner(flavor)
    store, recipes = work / "store", work / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    gpu = current_gpu()
    here = gpu.compute_capability if gpu is not None else None
    runs_here = flavor == "tensorrt_rtx" and cannot_run is None and here in RTX_COMPUTE_CAPABILITIES
    ccs = sorted({"8.0", "8.6", "8.9", "12.0", here}) if runs_here and here else None
    one_cc = [here] if runs_here and here else None  # TensorRT-RTX refit builds take one capability
    built: dict[str, str] = {}
    build = _builder(store)

    no_gpu_build = None
    if flavor == "tensorrt" and gpu is None:
        no_gpu_build = f"{flavor_name(flavor)} builds on a GPU, and none is visible"
    label = "build (CPU/AOT)" if flavor == "tensorrt_rtx" else "build"
    checks.run(label, lambda: _build(store, recipes, flavor, ccs, gpu is None, built), skip=no_gpu_build)
    skip = cannot_run or ("no engine was built" if "plain" not in built else None)
    if cannot_run is not None and gpu is not None and "plain" in built:
        # A GPU the runtime does not support (TensorRT-RTX on 9.0): verify must say so in one line.
        checks.run("verify refuses this GPU in one line", lambda: _refusal(store, built["plain"]))
    _gpu_checks(checks, flavor, store, recipes, built, build, one_cc, skip)
    trt_only = None if flavor == "tensorrt" else f"{flavor_name(flavor)} has no timing cache and no engine inspector"
    trt_only = trt_only or skip
    checks.run("timing cache shared by builds", lambda: _timing_cache(store, recipes, build), skip=trt_only)
    checks.run("engine inspector layer information", lambda: _layer_info(store, built["plain"]), skip=trt_only)
    return checks.results


def _gpu_checks(
    checks: Runner, flavor: str, store: Path, recipes: Path, built: dict[str, str], build: Callable[[Path], str],
    one_cc: list[str] | None, skip: str | None,
) -> None:  # fmt: skip
    from trtforge.stages.verify import verify

    plain = Once(lambda: verify(built["plain"], store=store))
    checks.run("load", lambda: _load(store, built["plain"]), skip=skip)
    for profile in PROFILES:
        checks.run(f"inference vs ONNX Runtime, profile {profile}", lambda p=profile: _inference(plain(), p), skip=skip)
    checks.run("timing breakdown", lambda: _timing(plain()), skip=skip)
    graph = "cuda_graph: true, "
    checks.run("CUDA graph (outputs equal)", lambda: _variant(store, recipes, plain(), graph, "CUDA graph"), skip=skip)
    streams = "streams: 2, "
    checks.run("streams and contexts (outputs equal)", lambda: _variant(store, recipes, plain(), streams, "2 streams"),
               skip=skip)  # fmt: skip
    checks.run("refit", lambda: _refit(store, recipes, flavor, one_cc, build), skip=skip)
    checks.run("weight-stripped refit", lambda: _strip(store, recipes, flavor, one_cc, build), skip=skip)
    no_deny = None
    if flavor != "tensorrt":
        no_deny = f"{flavor_name(flavor)} has no timing cache or algorithm selector to enforce deny entries with"
    checks.run("deny-list enforcement", lambda: _deny(store, recipes, built["plain"]), skip=no_deny or skip)
    checks.run("engine validity", lambda: _validity(store, built["plain"], flavor), skip=skip)


def _builder(store: Path) -> Callable[[Path], str]:
    def build(recipe: Path) -> str:
        result = _build_result(store, recipe)
        if not result:
            raise SelftestFailure(f"build of {recipe.name} failed: {result.error}")
        assert result.artifact_id is not None
        return result.artifact_id

    return build


def _build_result(store: Path, recipe: Path) -> Any:
    from trtforge.stages.build import BuildStage

    stage = BuildStage(store, notify=lambda _message: None)
    try:
        return stage.build_one(recipe)
    finally:
        stage.close()


def _build(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, cpu: bool, built: dict[str, str]) -> str:
    recipe = write_recipe(recipes, "selftest-mlp", flavor, ccs=ccs)
    built["plain"] = _builder(store)(recipe)
    hit = _build_result(store, recipe)
    expect(hit.status == "cached", f"rebuilding an unchanged recipe was not a cache hit ({hit.status})")
    where = "on the CPU (ahead of time)" if flavor == "tensorrt_rtx" and cpu else "here"
    return f"built {built['plain'][:12]} {where}; the rebuild was a cache hit"


def _refusal(store: Path, artifact_id: str) -> str:
    from trtforge.core.errors import VerificationUnavailableError
    from trtforge.stages.verify import verify

    try:
        verify(artifact_id, store=store)
    except VerificationUnavailableError as exc:
        expect("\n" not in exc.message and "does not support compute capability" in exc.message,
               f"the refusal does not name the reason in one line: {exc.message[:300]!r}")  # fmt: skip
        return exc.message
    raise SelftestFailure("verify ran an engine on a GPU its runtime does not support")


def _load(store: Path, artifact_id: str) -> str:
    from trtforge.stages.verify.loaded import engine_facts

    facts = engine_facts(artifact_id, store)
    expect(facts.profiles == len(PROFILES), f"the engine has {facts.profiles} profiles, not {len(PROFILES)}")
    expect(not facts.refittable, "an engine built without refit says it is refittable")
    return f"plan {artifact_id[:12]} loaded: {facts.profiles} profiles, {facts.device_memory_bytes / 2**20:.2f} MiB"


def _inference(report: Any, profile: int) -> str:
    points = [p for p in report.points if p.profile == profile]
    expect(bool(points), f"no shape point of profile {profile} was checked")
    failed = [f"{p.label} {o['name']}" for p in points for o in p.outputs if not o["passed"]]
    expect(not failed, f"profile {profile}: outputs out of tolerance at {', '.join(failed)}")
    worst = max((o["max_abs"] or 0.0) for p in points for o in p.outputs)
    return f"{', '.join(p.label for p in points)} within tolerance (max abs error {worst:.3g})"


def _timing(report: Any) -> str:
    """trtexec's figures per profile: present, each phase measured, every query's events in order,
    the timed outputs equal to the plain run's."""
    from trtforge.rules.timing import QueryTrace, StreamTrace, order_violation

    expect(len(report.perf) == len(PROFILES), f"{len(report.perf)} profiles timed, not {len(PROFILES)}")
    lines = []
    for perf in report.perf:
        for key, name in PHASES:
            expect(perf.get(key, {}).get("min", 0) > 0, f"profile {perf['profile']}: no {name} time measured")
        for stream in perf["per_stream"]:
            trace = [QueryTrace(**{k.removesuffix("_ms"): v for k, v in q.items()}) for q in stream["trace"]]
            problem = order_violation(StreamTrace(stream["stream"], stream["profile"], trace))
            expect(problem is None, f"profile {perf['profile']}: events out of order: {problem}")
        expect(perf["outputs_match_plain_run"], f"profile {perf['profile']}: timed outputs differ from the plain run")
        phases = ", ".join(f"{name} {perf[key]['median']:.4f}" for key, name in PHASES)
        lines.append(f"profile {perf['profile']}: {perf['throughput_qps']:.0f} qps; medians (ms) {phases}")
    return "; ".join(lines)


def _variant(store: Path, recipes: Path, plain: Any, setting: str, label: str) -> str:
    """The plain artifact verified again with ``setting`` (a recipe of the same name, model and build
    key with another verify section): outputs equal to the plain run's; its figures beside the plain ones."""
    from trtforge.stages.verify import verify

    source = recipes / "selftest-mlp.yaml"
    variant = recipes / f"selftest-mlp-{label.replace(' ', '-').lower()}.yaml"
    variant.write_text(source.read_text().replace("verify: {", "verify: {" + setting))
    report = verify(str(variant), store=store)
    for perf in report.perf:
        differ = [s["stream"] for s in perf["per_stream"] if not s["plain_run"]["passed"]]
        where = f"{label}, profile {perf['profile']}"
        expect(not differ, f"{where}: stream(s) {differ} computed other outputs than the plain run")
    expect(report.status == "passed", f"verification with {label} {report.status}")
    if "streams" in setting:
        profiles = [tuple(p["stream_profiles"]) for p in report.perf]
        expect(all(len(set(p)) == len(p) == 2 for p in profiles), f"streams did not take distinct profiles: {profiles}")
    compared = []
    for mine, base in zip(report.perf, plain.perf, strict=True):
        compared.append(
            f"profile {mine['profile']}: {mine['throughput_qps']:.0f} vs {base['throughput_qps']:.0f} qps, enqueue "
            f"median {mine['enqueue_time_ms']['median']:.4f} vs {base['enqueue_time_ms']['median']:.4f} ms"
        )
    return f"outputs equal to the plain run's; {label} vs plain: " + "; ".join(compared)


def _refit(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, build: Callable[[Path], str]) -> str:
    from trtforge.stages.refit import refit
    from trtforge.stages.verify.loaded import check_against, engine_facts

    parent = build(write_recipe(recipes, "selftest-refit", flavor, "refit: refittable\n", ccs))
    expect(engine_facts(parent, store).refittable, "an engine built with refit: refittable is not refittable")
    weights = write_mlp(recipes / "models" / "selftest-refit-new.onnx", seed=1)
    result = refit(parent, weights, store=store, verify=True)
    status = (result.verification or {}).get("status")
    expect(status == "passed", f"the refitted engine's verification against the new weights {status}")
    old = check_against(result.artifact_id, parent, store)
    expect(old == "failed", "the refitted engine still matches the old weights' outputs")
    return f"refitted {parent[:12]} -> {result.artifact_id[:12]}: new weights' outputs, not the old ones'"


def _strip(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, build: Callable[[Path], str]) -> str:
    from trtforge.stages.verify import verify

    artifact_id = build(write_recipe(recipes, "selftest-strip", flavor, "refit: strip_weights\n", ccs))
    report = verify(artifact_id, store=store)
    expect(report.status == "passed", f"the weight-stripped plan, refitted before verify, {report.status}")
    return f"weightless plan {artifact_id[:12]} refitted from its model and verified"


def _deny(store: Path, recipes: Path, artifact_id: str) -> str:
    """Deny the tactic a layer of the plain build chose, rebuild: the tactic is gone and the record says so."""
    import json

    from trtforge.rules.denylist import parse_layer_info
    from trtforge.store import open_store

    opened = open_store(store)
    try:
        info = opened.catalog.get_artifact(artifact_id).details.layer_info
    finally:
        opened.close()
    chosen = next((layer for layer in parse_layer_info(info or []) if layer.tactic), None)
    expect(chosen is not None, "the plain build's layer information names no tactic")
    assert chosen is not None
    source = recipes / "selftest-mlp.yaml"
    recipe = recipes / "selftest-deny.yaml"
    entry = {"layer": chosen.name, "tactic": chosen.tactic, "reason": "selftest"}
    text = source.read_text().replace("name: selftest-mlp", "name: selftest-deny")
    recipe.write_text(text + f"tactics: {{deny: [{json.dumps(entry)}]}}\n")
    result = _build_result(store, recipe)
    if not result:  # only a layer with no other tactic may refuse (exit 2); failing closed is a failure
        unsatisfiable = result.exit_code == UnsatisfiableDenyError.exit_code and "without a tactic" in str(result.error)
        expect(unsatisfiable, f"the deny-list build failed: {result.error}")
        return f"layer {chosen.name} has no tactic but {chosen.tactic}: the build refused in one line"
    return _denied(store, result.artifact_id, chosen)


def _denied(store: Path, artifact_id: str, chosen: Any) -> str:
    from trtforge.rules.denylist import parse_layer_info
    from trtforge.store import open_store

    opened = open_store(store)
    try:
        details = opened.catalog.get_artifact(artifact_id).details
    finally:
        opened.close()
    report = details.denylist or {}
    expect(report.get("violations") == [] and bool(report.get("checked_layers")), f"enforcement report: {report}")
    expect(any(r.get("layer") == chosen.name for r in report.get("removed", [])), "the report names no removed tactic")
    after = {layer.name: layer.tactic for layer in parse_layer_info(details.layer_info or [])}
    expect(after.get(chosen.name) != chosen.tactic, f"layer {chosen.name} still runs {chosen.tactic}")
    return f"denied {chosen.tactic} on {chosen.name}: rebuilt with {after.get(chosen.name)}"


def _validity(store: Path, artifact_id: str, flavor: str) -> str:
    from trtforge.rules.target import resolve_target
    from trtforge.stages.lookup import find_engine

    found = find_engine("selftest-mlp", resolve_target(flavor=flavor), store=store)
    expect(found.artifact_id == artifact_id, f"lookup found {found.artifact_id[:12]}, not {artifact_id[:12]}")
    expect(found.target.detected, "lookup did not detect this machine")
    if flavor != "tensorrt_rtx":
        return f"{found.target.describe()}; full TensorRT has no validity API: lookup's rules decide"
    verdict = next((n for n in found.notes if n.startswith("runtime says")), None)
    expect(verdict is not None, "lookup did not ask the runtime's get_engine_validity")
    return f"{found.target.describe()}; {verdict}"


def _timing_cache(store: Path, recipes: Path, build: Callable[[Path], str]) -> str:
    from trtforge.store import open_store
    from trtforge.store.timing_caches import TimingCaches

    first = build(write_recipe(recipes, "selftest-cache-a", "tensorrt", "build: {optimization_level: 1}\n"))
    second = build(write_recipe(recipes, "selftest-cache-b", "tensorrt", "build: {optimization_level: 2}\n"))
    opened = open_store(store)
    try:
        a, b = opened.catalog.get_artifact(first), opened.catalog.get_artifact(second)
        rows = TimingCaches(opened).list(all_versions=True)
    finally:
        opened.close()
    started_from = (b.details.timing_cache or {}).get("started_from")
    expect(started_from is not None, f"the second build ({b.id[:12]}) did not start from the shared timing cache")
    expect(len(rows) >= 2, f"the shared timing cache has {len(rows)} version(s) after two builds; history must grow")
    return f"builds {a.id[:12]} and {b.id[:12]}; the second started from the shared cache; {len(rows)} versions"


def _layer_info(store: Path, artifact_id: str) -> str:
    from trtforge.rules.denylist import parse_layer_info
    from trtforge.store import open_store

    opened = open_store(store)
    try:
        artifact = opened.catalog.get_artifact(artifact_id)
    finally:
        opened.close()
    expect(artifact.details.layer_info is not None, "the build recorded no engine inspector layer information")
    layers = parse_layer_info(artifact.details.layer_info)
    tactics = sum(1 for layer in layers if layer.tactic)
    expect(bool(layers), "the layer information lists no layer")
    return f"{len(layers)} layers, {tactics} with a tactic"
