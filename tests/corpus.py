"""A corpus of real models nobody here wrote: ONNX's own backend node tests.

The installed ``onnx`` wheel carries them as code (``collect_testcases``): about 1,900
single-operator models written by ONNX's authors, each with input data. They are generated at
run time (nothing downloaded, nothing committed) and written as the plainest recipes a user
would write: ``name`` and ``model``, ``profiles`` only where an input is dynamic (at the shapes of
the case's own inputs), and the case's inputs as ``verify.data``.

Each model is also built by raw TensorRT-RTX (``OnnxParser`` + ``build_serialized_network``) with
the flags trtforge uses for such a recipe, in a helper process (``python -m tests.corpus raw``),
so the test can check that trtforge agrees with TensorRT on every model.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtforge.rules.flavors import RTX_DEFAULT_COMPUTE_CAPABILITIES

CORPUS_SEED = 13


@dataclass(frozen=True)
class CorpusModel:
    name: str
    recipe: str
    model: str
    profiles: list[dict[str, dict[str, list[int]]]]
    data: str | None  # .npz of the case's inputs; None where they are not all arrays


def corpus_cases() -> list[Any]:
    """Every node test case of the installed onnx wheel, by name (deterministic order)."""
    import numpy as np
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = collect_testcases(None)
    return sorted(cases, key=lambda case: case.name)


def pick(cases: list[Any], count: int | None, seed: int = CORPUS_SEED) -> list[Any]:
    """A fixed, seeded sample of ``count`` cases (all of them when count is None or too large)."""
    if count is None or count >= len(cases):
        return list(cases)
    return sorted(random.Random(seed).sample(cases, count), key=lambda case: case.name)


def _runtime_inputs(model: Any) -> list[Any]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _profiles(model: Any, feed: list[Any] | None) -> list[dict[str, dict[str, list[int]]]]:
    """One profile at the case's input shapes, only when an input has a dynamic dimension."""
    import numpy as np

    profile: dict[str, dict[str, list[int]]] = {}
    inputs = _runtime_inputs(model)
    for index, value in enumerate(inputs):
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor is None or not tensor.HasField("shape"):
            continue
        if all(dim.HasField("dim_value") for dim in tensor.shape.dim):
            continue
        if feed is None or index >= len(feed) or not isinstance(feed[index], np.ndarray):
            continue  # no shape to take: left to TensorRT (and trtforge) to refuse
        shape = [int(d) for d in feed[index].shape]
        profile[value.name] = {"min": shape, "opt": shape, "max": shape}
    return [profile] if profile else []


def write_corpus(cases: list[Any], folder: Path) -> list[CorpusModel]:
    """Each case as ``<name>.onnx`` + ``<name>.yaml`` (+ ``<name>.npz`` of its inputs) in ``folder``."""
    import numpy as np
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases:
        model_path = folder / f"{case.name}.onnx"
        onnx.save(case.model, str(model_path))
        feed = list(case.data_sets[0][0]) if case.data_sets else None
        profiles = _profiles(case.model, feed)
        data = None
        inputs = _runtime_inputs(case.model)
        if feed is not None and len(feed) == len(inputs):
            arrays = {value.name: item for value, item in zip(inputs, feed, strict=True)}
            if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays.values()):
                data = f"{case.name}.npz"
                np.savez(folder / data, **{n: np.asarray(a) for n, a in arrays.items()})
        lines = [f"name: {json.dumps(case.name)}", f"model: {{onnx: {json.dumps(model_path.name)}}}"]
        if profiles:
            lines.append(f"profiles: {json.dumps(profiles)}")
        if data is not None:
            lines.append(f"verify: {{data: {json.dumps(data)}}}")
        recipe = folder / f"{case.name}.yaml"
        recipe.write_text("\n".join(lines) + "\n")
        written.append(CorpusModel(case.name, str(recipe), str(model_path), profiles, data))
    return written


def raw_build(trt: Any, model: CorpusModel) -> dict[str, Any]:
    """Build one model with raw TensorRT-RTX and the settings trtforge gives a default recipe:
    no network flags, builder optimization level 3, the recipe's profiles (if any), and the
    compute capability list trtforge always sets (the builder's own unstated default differs:
    it builds fp8 models, which the listed Ampere targets cannot run)."""
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(model.model):
        return {"name": model.name, "built": False, "stage": "parse"}
    config = builder.create_builder_config()
    config.builder_optimization_level = 3
    targets = [getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")) for cc in RTX_DEFAULT_COMPUTE_CAPABILITIES]
    config.num_compute_capabilities = len(targets)
    for index, target in enumerate(targets):
        config.set_compute_capability(target, index)
    for spec in model.profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in spec.items():
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    built = plan is not None and plan.nbytes > 0
    return {"name": model.name, "built": built, "stage": "built" if built else "build"}


def timed_raw_build(trt: Any, model: CorpusModel) -> dict[str, Any]:
    """:func:`raw_build` and its wall time (``seconds``): the benchmark's bound on what ``--jobs``
    can gain is the corpus's longest single build."""
    started = time.perf_counter()
    result = raw_build(trt, model)
    result["seconds"] = round(time.perf_counter() - started, 6)
    return result


def _raw_main(manifest: Path, out: Path) -> None:
    """Build every model of the manifest; ``out`` gets the results. Each model's name is written to
    ``out``.progress before its build starts (and its result after), so that when TensorRT kills
    this process (an abort on some GPUs), :func:`raw_outcomes` knows which model did it."""
    import tensorrt_rtx as trt

    models = [CorpusModel(**item) for item in json.loads(manifest.read_text())]
    results = []
    with open(f"{out}.progress", "w") as progress:
        for model in models:
            progress.write(json.dumps({"name": model.name}) + "\n")
            progress.flush()
            results.append(timed_raw_build(trt, model))
            progress.write(json.dumps(results[-1]) + "\n")
            progress.flush()
    out.write_text(json.dumps(results))


def raw_outcomes(models: list[CorpusModel], folder: Path, env: dict[str, str]) -> dict[str, str]:
    """Raw TensorRT-RTX's outcome per model: built, failed, or crashed (the model whose build killed
    the helper process; a fresh helper then takes the models after it)."""
    import subprocess

    outcomes: dict[str, str] = {}
    remaining = list(models)
    for attempt in range(len(models) + 1):
        if not remaining:
            break
        manifest = write_manifest(remaining, folder / f"raw-{attempt}.json")
        out = folder / f"raw-{attempt}.out.json"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.corpus", "raw", str(manifest), str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # the parser prints unsupported types straight to stderr
        )
        lines = [json.loads(line) for line in Path(f"{out}.progress").read_text().splitlines()]
        for line in lines:
            if "built" in line:
                outcomes[line["name"]] = "built" if line["built"] else "failed"
        if proc.returncode == 0:
            break
        if not lines or "built" in lines[-1]:
            raise RuntimeError(f"the raw TensorRT-RTX helper died ({proc.returncode}) outside a build")
        outcomes[lines[-1]["name"]] = "crashed"
        remaining = [m for m in remaining if m.name not in outcomes]
    return outcomes


def write_manifest(models: list[CorpusModel], path: Path) -> Path:
    path.write_text(json.dumps([asdict(m) for m in models]))
    return path


def failure_reason(error: str) -> str:
    """A failure message reduced to its kind, for the top-5 table in docs/corpus.md."""
    text = re.sub(r"node '[^']*' \(", "node (", error)
    text = re.sub(r"'[^']*'( \[[0-9, ]*\])?", "X", text)  # input names and shapes
    text = re.sub(r"X(, X)+", "X", text)
    text = text.replace("inputs X are shape tensors", "input X is a shape tensor").replace("needs their", "needs its")
    text = re.sub(r"element type \w+", "element type T", text)
    text = re.sub(r" \(and \d+ more\)$", "", text)
    return text[:160]


def outcome(result: dict[str, Any]) -> str:
    """A `build --json` result as raw_outcomes words it: built, failed, or crashed."""
    if result["status"] == "built":
        return "built"
    return "crashed" if result.get("error_kind") == "crashed" else "failed"


def summarize(results: list[dict[str, Any]], raw: dict[str, str]) -> dict[str, Any]:
    """Counts (built / failed / crashed / agree) and the five most common failure reasons."""
    built = sum(r["status"] == "built" for r in results)
    agree = sum(outcome(r) == raw[r["name"]] for r in results)
    reasons = Counter(failure_reason(r["error"]) for r in results if r["status"] == "failed" and r["error"])
    return {
        "models": len(results),
        "built": built,
        "failed": len(results) - built,
        "crashed": sorted(r["name"] for r in results if outcome(r) == "crashed"),
        "agree": agree,
        "top_failures": reasons.most_common(5),
    }


if __name__ == "__main__":  # python -m tests.corpus raw MANIFEST OUT
    if len(sys.argv) != 4 or sys.argv[1] != "raw":
        raise SystemExit("usage: python -m tests.corpus raw MANIFEST.json OUT.json")
    _raw_main(Path(sys.argv[2]), Path(sys.argv[3]))
