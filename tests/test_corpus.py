"""trtforge against a corpus of real models (ONNX's own node tests, see tests/corpus.py).

Every model is built through `trtforge build` from the plainest recipe (name + model; profiles
only where an input is dynamic), all in one invocation, and by raw TensorRT-RTX with the same
settings in a helper process running alongside. trtforge must agree with TensorRT on every
model, fail in one line, and never with a traceback. On 55eb6bf (before issue 13) every recipe
without profiles was refused (`profiles: field required`), so agreement was 0 on built models.

TRTFORGE_CORPUS picks the size: a number (a fixed, seeded sample; default 60, so that README's test
command stays within its budget) or `all` (the whole corpus, 2-6 minutes on 2 cores; `.ci/run`
sets it, so CI keeps every model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, subprocess_env
from tests.corpus import CorpusModel, corpus_cases, outcome, pick, raw_outcomes, summarize, write_corpus

pytestmark = pytest.mark.filterwarnings("ignore")


VERIFY_SAMPLE = 400  # ONNX Runtime runs are the slow part; a fixed, seeded sample of the corpus
DEFAULT_SAMPLE = "60"


def corpus_size() -> int | None:
    wanted = os.environ.get("TRTFORGE_CORPUS", DEFAULT_SAMPLE)
    return None if wanted == "all" else int(wanted)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[CorpusModel], Path]:
    folder = tmp_path_factory.mktemp("corpus")
    return write_corpus(pick(corpus_cases(), corpus_size()), folder / "models"), folder


@pytest.fixture(scope="module")
def outcomes(corpus: tuple[list[CorpusModel], Path]) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """(the `trtforge build --json` run over every recipe, raw TensorRT-RTX's outcome per model).

    The raw helper runs alongside; where TensorRT kills it (an abort on a GPU TensorRT-RTX does not
    support, such as the H200 on three roialign models), the model in flight is `crashed` and a
    fresh helper takes the rest, as trtforge's workers do."""
    models, folder = corpus
    env = subprocess_env()
    raw: dict[str, str] = {}
    helper = threading.Thread(target=lambda: raw.update(raw_outcomes(models, folder, env)))
    helper.start()
    recipes = [m.recipe for m in models]
    try:
        forged = subprocess.run(
            [sys.executable, "-m", "trtforge", "build", "--json", "--store", str(folder / "store"), *recipes],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        helper.join(timeout=1800)
    assert len(raw) == len(models), "the raw TensorRT-RTX helper did not get through the corpus"
    return forged, raw


def test_trtforge_agrees_with_raw_tensorrt_rtx_on_every_model(
    corpus: tuple[list[CorpusModel], Path], outcomes: tuple[subprocess.CompletedProcess[str], dict[str, str]]
) -> None:
    models, _ = corpus
    forged, raw = outcomes
    assert "Traceback" not in forged.stderr, forged.stderr[-4000:]
    results: list[dict[str, Any]] = json.loads(forged.stdout)
    assert [r["name"] for r in results] == [m.name for m in models]
    assert forged.returncode in (1, 2)  # the corpus has models TensorRT cannot build
    disagree = [
        f"{r['name']}: trtforge {outcome(r)} ({r['error']}), raw {raw[r['name']]}"
        for r in results
        if outcome(r) != raw[r["name"]]
    ]
    assert not disagree, "\n".join(disagree)
    for r in results:
        if r["status"] == "failed":
            assert r["error"] and "\n" not in r["error"], r
    summary = summarize(results, raw)
    print(json.dumps(summary, indent=1))  # docs/corpus.md's figures (pytest -s)
    assert summary["agree"] == summary["models"] and summary["built"] > 0


def test_reference_only_verify_runs_every_model_onnx_runtime_runs(corpus: tuple[list[CorpusModel], Path]) -> None:
    """`verify RECIPE --reference-only`, fed the case's own inputs through verify.data, succeeds on
    every model ONNX Runtime itself runs with those inputs (checked here first), over a fixed,
    seeded sample of the corpus. Sequence outputs crashed it before issue 13 (test_if_seq)."""
    import numpy as np
    import onnxruntime as ort

    from trtforge.stages.verify import verify

    models, folder = corpus
    ort.set_default_logger_severity(4)
    ran = failed = 0
    problems = []
    for model in pick(models, VERIFY_SAMPLE):
        if model.data is None:
            continue  # inputs that are not all arrays (sequences, optionals): no .npz to feed
        try:
            with warnings.catch_warnings(), np.load(Path(model.model).parent / model.data) as archive:
                session = ort.InferenceSession(model.model, providers=["CPUExecutionProvider"])
                session.run(None, {name: archive[name] for name in archive.files})
        except Exception:
            failed += 1
            continue
        ran += 1
        try:
            report = verify(model.recipe, store=folder / "verify-store", reference_only=True)
        except Exception as exc:
            problems.append(f"{model.name}: {type(exc).__name__}: {exc}")
            continue
        if report.status != "reference-only" or not report.points:
            problems.append(f"{model.name}: {report.status} with {len(report.points)} points")
    assert not problems, f"{len(problems)} of {ran} models ONNX Runtime runs:\n" + "\n".join(problems)
    assert ran > 0
    print(f"verify --reference-only: {ran} run, {failed} ONNX Runtime cannot run")
