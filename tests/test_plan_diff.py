"""What differs between two TensorRT-RTX plans of one recipe (issue 23, item 6).

Measured here (bench/reproducibility.py, docs/timing-caches.md): TensorRT-RTX 1.7.1 CPU builds are
byte-identical from build to build, except that a plan with several outputs may list its I/O
tensors in another order. The model used is one where that happens: ONNX's own node test
``test_attention_local_window_with_past_expanded`` (outputs Y, present_key, present_value), built
for real until two builds differ. `build --reproduce` reporting it: tests/test_reproduce_report.py.
"""

from __future__ import annotations

import pytest

from tests.corpus import CorpusModel, corpus_cases, write_corpus
from trtforge.core.plan_diff import IO_TENSOR_ORDER, compare_plans

CASE = "test_attention_local_window_with_past_expanded"
TRIES = 16  # measured: 5 different plans in 10 builds of this model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> CorpusModel:
    [case] = [c for c in corpus_cases() if c.name == CASE]
    [written] = write_corpus([case], tmp_path_factory.mktemp("corpus"))
    return written


def io_names(model: CorpusModel) -> list[str]:
    import onnx

    graph = onnx.load(model.model, load_external_data=False).graph
    return [v.name for v in graph.input] + [v.name for v in graph.output]


@pytest.fixture(scope="module")
def two_plans(model: CorpusModel) -> tuple[bytes, bytes]:
    """Two real builds of one recipe whose bytes differ (skipped if TRIES builds all agree)."""
    from trtforge.backend.build import build_plan
    from trtforge.resolution.resolve import resolve

    resolution = resolve(model.recipe)
    seen: dict[bytes, None] = {}
    for _ in range(TRIES):
        output = build_plan(resolution.backend, resolution.recipe, resolution.loaded.model_path)
        seen[output.plan_view.tobytes()] = None
        if len(seen) == 2:
            first, second = seen
            return first, second
    pytest.skip(f"{TRIES} TensorRT-RTX builds of {CASE} gave the same bytes: no difference to classify")


def test_the_output_order_is_a_known_benign_difference(two_plans: tuple[bytes, bytes], model: CorpusModel) -> None:
    first, second = two_plans
    difference = compare_plans(first, second, io_names(model))
    assert difference is not None and difference.benign, difference
    assert difference.regions and {r.known for r in difference.regions} == {IO_TENSOR_ORDER}
    assert difference.differing_bytes == sum(a != b for a, b in zip(first, second, strict=True))
    assert "known benign" in difference.describe() and "I/O tensors listed as" in difference.describe()
    assert compare_plans(first, first, io_names(model)) is None


def test_other_differences_are_not_benign(two_plans: tuple[bytes, bytes], model: CorpusModel) -> None:
    first, second = two_plans
    changed = bytearray(second)
    middle = len(changed) // 2  # inside the kernels, far from either I/O table
    changed[middle] ^= 0xFF
    difference = compare_plans(first, bytes(changed), io_names(model))
    assert difference is not None and not difference.benign
    [flipped] = [r for r in difference.regions if r.offset <= middle < r.offset + r.length]
    assert flipped.known is None and (flipped.offset, flipped.differing) == (middle, 1)
    # Without the tensor names nothing is proved, so nothing is called benign.
    assert not compare_plans(first, second, ["not-a-tensor"]).benign  # type: ignore[union-attr]
    assert not compare_plans(first, first + b"\0", io_names(model)).benign  # type: ignore[union-attr]
