"""`denylist derive` on real polygraphy run results produced on the CPU.

Two ONNX Runtime runners stand in for the pair a GPU verification produces: one runs the model,
the other a copy with an error injected into a known node (its weights perturbed), both with
every intermediate tensor marked as an output (polygraphy ``ModifyOutputs(MARK_ALL)``). The copy's
runner is named like polygraphy's TensorRT runner so it plays the candidate. Layer information
is written in the engine inspector's documented JSON format (TensorRT-RTX has no inspector on
a CPU); the artifact itself is a real TensorRT-RTX build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import onnx_models
from trtforge.backend.run_results import load_run_results
from trtforge.core.errors import DeriveError
from trtforge.stages.denylist_derive import derive, first_exceeding, read_graph, tensor_errors

BAD_TACTIC = "sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize64x32x64_stage4_warpsize2x1x2"

CHAIN_RECIPE = """\
name: chain
model:
  onnx: models/chain.onnx
backend: tensorrt_rtx
profiles:
  - x: {min: [2, 4], opt: [2, 4], max: [2, 4]}
build:
  optimization_level: 0
tactics:
  deny_file: deny.yaml
"""


def chain_model(perturb: str | None = None) -> onnx.ModelProto:
    """x -> fc1 (MatMul) -> act1 (Relu) -> fc2 (MatMul) -> bias2 (Add) -> act2 (Tanh) -> y.

    ``perturb`` names a weight ("w1" or "w2") to change: an injected error in fc1 or fc2.
    """
    rng = np.random.default_rng(7)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 8)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (8, 8)).astype(np.float32),
        "b2": rng.normal(0, 0.1, (8,)).astype(np.float32),
    }
    if perturb is not None:
        weights[perturb] = weights[perturb] + np.float32(0.25)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="act1"),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Add", ["h2", "b2"], ["h2b"], name="bias2"),
        helper.make_node("Tanh", ["h2b"], ["y"], name="act2"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run_results(
    tmp_path: Path,
    good: Path,
    bad: Path,
    *,
    candidate: str = "trt-runner-N0-candidate",
    reference: str = "onnxrt-runner-N0-reference",
    directory: bool = False,
) -> Path:
    """Real polygraphy RunResults: reference runs ``good``, the 'TensorRT' seat runs ``bad``."""
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, DataLoader

    def runner(path: Path, name: str) -> OnnxrtRunner:
        marked = ModifyOutputs(OnnxFromPath(str(path)), outputs=constants.MARK_ALL)
        return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(marked)), name=name)

    runners = [runner(good, reference), runner(bad, candidate)]
    if directory:  # one JSON file per iteration, as `--save-results DIR` writes them
        path = tmp_path / f"results-{candidate}"
        Comparator.run(runners, data_loader=DataLoader(iterations=2, seed=3), save_outputs_path=str(path))
        return path
    path = tmp_path / f"results-{candidate}.json"
    Comparator.run(runners, data_loader=DataLoader(iterations=2, seed=3)).save(str(path))
    return path


def layer_info() -> dict:
    """Engine inspector JSON (DETAILED) as TensorRT documents it; fc2 and bias2 are fused, so
    fc2's own output h2 is no layer output and must be found through the layer's name."""

    def tensor(name: str, dims: list[int]) -> dict:
        return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": "Row major linear FP32"}

    return {
        "Layers": [
            {
                "Name": "fc1",
                "LayerType": "MatrixMultiply",
                "Inputs": [tensor("x", [2, 4]), tensor("w1", [4, 8])],
                "Outputs": [tensor("h1", [2, 8])],
                "TacticName": "sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize32x32x64_stage3_warpsize2x1x2",
                "TacticValue": "0x000000000000001a",
                "StreamId": 0,
                "Metadata": "[ONNX Layer: fc1]",
            },
            {
                "Name": "PWN(act1)",
                "LayerType": "PointWiseV2",
                "Inputs": [tensor("h1", [2, 8])],
                "Outputs": [tensor("a1", [2, 8])],
                "TacticValue": "0x0000000000000003",
                "StreamId": 0,
                "Metadata": "[ONNX Layer: act1]",
            },
            {
                "Name": "fc2 + bias2",
                "LayerType": "MatrixMultiply",
                "Inputs": [tensor("a1", [2, 8]), tensor("w2", [8, 8])],
                "Outputs": [tensor("h2b", [2, 8])],
                "TacticName": BAD_TACTIC,
                "TacticValue": "0x00000000000003e8",
                "StreamId": 0,
                "Metadata": "[ONNX Layer: fc2]\u001e[ONNX Layer: bias2]",
            },
            {
                "Name": "act2",
                "LayerType": "Activation",
                "Inputs": [tensor("h2b", [2, 8])],
                "Outputs": [tensor("y", [2, 8])],
                "TacticValue": "0x0000000000000001",
                "StreamId": 0,
                "Metadata": "[ONNX Layer: act2]",
            },
        ],
        "Bindings": ["x", "y"],
    }


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "recipes" / "models"
    return {
        "good": onnx_models.save(chain_model(), folder / "chain.onnx"),
        "bad_fc2": onnx_models.save(chain_model("w2"), tmp_path / "bad" / "chain_fc2.onnx"),
        "bad_fc1": onnx_models.save(chain_model("w1"), tmp_path / "bad" / "chain_fc1.onnx"),
    }


def derive_for(results: Path, model: Path, info: dict | str | None = "documented", **options):
    return derive(
        load_run_results(results),
        read_graph(model),
        layer_info() if info == "documented" else info,
        artifact_id="a" * 32,
        results_path=results,
        results_sha256="0" * 64,
        **options,
    )


# -- library: real results, pure walk -----------------------------------------------------


def test_injected_error_in_fused_layer_is_found(tmp_path: Path, models: dict[str, Path]) -> None:
    results = run_results(tmp_path, models["good"], models["bad_fc2"])
    proposal = derive_for(results, models["good"])
    # h2 is where the drift starts; h2b and y only inherit it.
    assert [f.tensor for f in proposal.findings] == ["h2"]
    [finding] = proposal.findings
    assert (finding.node, finding.layer, finding.tactic) == ("fc2", "fc2 + bias2", BAD_TACTIC)
    assert finding.max_abs_error > 1e-2
    [entry] = proposal.entries
    assert (entry.layer, entry.tactic) == ("fc2 + bias2", BAD_TACTIC)
    assert "h2: max abs error" in entry.reason and "onnxrt-runner-N0-reference" in entry.reason
    assert entry.source is not None and entry.source.tensor == "h2"
    assert proposal.candidate == "trt-runner-N0-candidate"
    assert proposal.tensors_compared == 5 and proposal.tensors_exceeding >= 3


def test_results_saved_per_iteration_in_a_directory(tmp_path: Path, models: dict[str, Path]) -> None:
    results = run_results(tmp_path, models["good"], models["bad_fc2"], directory=True)
    assert results.is_dir() and len(list(results.glob("*.json"))) == 2
    proposal = derive_for(results, models["good"])
    assert [(f.tensor, f.layer) for f in proposal.findings] == [("h2", "fc2 + bias2")]


def test_injected_error_mapped_through_layer_output(tmp_path: Path, models: dict[str, Path]) -> None:
    results = run_results(tmp_path, models["good"], models["bad_fc1"])
    proposal = derive_for(results, models["good"])
    assert [(f.tensor, f.layer) for f in proposal.findings] == [("h1", "fc1")]
    assert proposal.entries[0].tactic.startswith("sm80_xmma_gemm")


def test_identical_runs_propose_nothing_and_threshold_matters(tmp_path: Path, models: dict[str, Path]) -> None:
    same = run_results(tmp_path, models["good"], models["good"])
    assert derive_for(same, models["good"]).entries == []
    drifted = run_results(tmp_path, models["good"], models["bad_fc2"])
    assert derive_for(drifted, models["good"], atol=100.0, rtol=0.0).entries == []


def test_first_exceeding_skips_inherited_and_unmeasured(tmp_path: Path, models: dict[str, Path]) -> None:
    graph = read_graph(models["good"])
    ones = np.ones((2, 8), np.float32)
    ref = [{"h1": ones, "y": ones}]  # a1, h2, h2b not marked
    cand = [{"h1": ones, "y": ones + 1}]
    errors = tensor_errors(cand, ref, atol=1e-3, rtol=1e-3)
    assert [o.tensor.name for o in first_exceeding(graph, errors)] == ["y"]
    cand = [{"h1": ones + 1, "y": ones + 1}]
    errors = tensor_errors(cand, ref, atol=1e-3, rtol=1e-3)
    assert [o.tensor.name for o in first_exceeding(graph, errors)] == ["h1"]


def test_errors_use_isclose_rule_and_shape_mismatch_is_infinite() -> None:
    want = np.array([1.0, 100.0, np.nan], np.float32)
    close = tensor_errors([{"t": want * (1 + 5e-4)}], [{"t": want}], atol=1e-3, rtol=1e-3)["t"]
    assert not close.exceeds and close.max_abs == pytest.approx(0.05, rel=1e-3)
    far = tensor_errors([{"t": want + 0.01}], [{"t": want}], atol=1e-3, rtol=1e-3)["t"]
    assert far.exceeds
    nan = tensor_errors([{"t": np.array([np.nan])}], [{"t": np.array([1.0])}], atol=1, rtol=1)["t"]
    assert nan.exceeds and nan.max_abs == float("inf")
    shape = tensor_errors([{"t": np.zeros(3)}], [{"t": np.zeros(4)}], atol=1, rtol=1)["t"]
    assert shape.exceeds and shape.max_abs == float("inf") and shape.note == "shape [3] vs [4]"


def test_bad_results_are_clear_errors(tmp_path: Path, models: dict[str, Path]) -> None:
    no_reference = run_results(tmp_path, models["good"], models["bad_fc2"], reference="trt-runner-N1-other")
    with pytest.raises(DeriveError, match="no reference runner"):
        derive_for(no_reference, models["good"])
    other_model = onnx_models.save(onnx_models.mlp(0, batch=2), tmp_path / "mlp.onnx")
    foreign = run_results(tmp_path, other_model, other_model, candidate="trt-runner-N2-mlp")
    with pytest.raises(DeriveError, match="tensors the artifact's model does not have: mm, pre"):
        derive_for(foreign, models["good"])
    good = run_results(tmp_path, models["good"], models["bad_fc2"])
    with pytest.raises(DeriveError, match="has no layer information"):
        derive_for(good, models["good"], info=None)
    with pytest.raises(DeriveError, match="names only"):
        derive_for(good, models["good"], info={"Layers": ["fc1", "fc2 + bias2"]})
    without_fc2 = {"Layers": [layer for layer in layer_info()["Layers"] if "fc2" not in layer["Name"]]}
    with pytest.raises(DeriveError, match="tensor 'h2' \\(node 'fc2'\\) comes from no layer"):
        derive_for(good, models["good"], info=without_fc2)
    # Runners named explicitly (here the roles swapped on purpose) are used as given.
    swapped = derive_for(good, models["good"], candidate="onnxrt-runner", reference="trt-runner")
    assert (swapped.candidate, swapped.reference) == ("onnxrt-runner-N0-reference", "trt-runner-N0-candidate")


# -- CLI: real artifact, derive, write, rebuild -------------------------------------------


def build_chain(cli, tmp_path: Path, store: Path) -> tuple[Path, str]:
    recipe = tmp_path / "recipes" / "chain.yaml"
    recipe.write_text(CHAIN_RECIPE)
    (recipe.parent / "deny.yaml").write_text("deny: []\n")
    built = cli("build", recipe, "--store", store, "--json")
    assert built.code == 0, built
    return recipe, built.json()[0]["artifact_id"]


def attach_layer_info(store: Path, artifact_id: str, info: dict, key: str = "layer_info") -> None:
    """What a GPU build records (engine inspector JSON); TensorRT-RTX has no inspector on CPU."""
    from trtforge.store import open_existing_store
    from trtforge.store.catalog import Artifact

    opened = open_existing_store(store)
    assert opened is not None
    with opened.catalog.writing() as session:
        artifact = session.get(Artifact, artifact_id)
        artifact.details = artifact.details.model_copy(deep=True, update={key: info})
    opened.close()


def test_cli_diff_to_sidecar_to_refused_rtx_rebuild(cli, tmp_path: Path, store: Path, models) -> None:
    recipe, artifact_id = build_chain(cli, tmp_path, store)
    results = run_results(tmp_path, models["good"], models["bad_fc2"])

    missing = cli("denylist", "derive", results, "--artifact", artifact_id, "--store", store, "--json")
    assert missing.code == 2, missing
    assert "has no layer information" in missing.json()["error"]

    attach_layer_info(store, artifact_id, layer_info())
    proposed = cli("denylist", "derive", results, "--artifact", artifact_id[:8], "--store", store, "--json")
    assert proposed.code == 0, proposed
    data = proposed.json()
    assert [(e["layer"], e["tactic"]) for e in data["entries"]] == [("fc2 + bias2", BAD_TACTIC)]
    assert data["written"] is False and (recipe.parent / "deny.yaml").read_text() == "deny: []\n"

    human = cli("denylist", "derive", results, "--artifact", artifact_id, "--store", store)
    assert human.code == 0 and "fc2 + bias2" in human.stdout and "--write" in human.stdout

    written = cli("denylist", "derive", results, "--artifact", artifact_id, "--store", store, "--write")
    assert written.code == 0, written
    assert "--- deny.yaml (before)" in written.stdout and f"+  tactic: {BAD_TACTIC}" in written.stdout
    sidecar = (recipe.parent / "deny.yaml").read_text()
    assert "fc2 + bias2" in sidecar and BAD_TACTIC in sidecar

    again = cli("denylist", "derive", results, "--artifact", artifact_id, "--store", store, "--write", "--json")
    assert again.code == 0 and again.json()["entries"] == [] and len(again.json()["already_denied"]) == 1
    assert (recipe.parent / "deny.yaml").read_text() == sidecar

    # The deny entry changes the build key; TensorRT-RTX cannot enforce it: refused before building.
    rebuilt = cli("build", recipe, "--store", store, "--json")
    assert rebuilt.code == 2, rebuilt
    [result] = rebuilt.json()
    assert result["status"] == "failed" and "cannot enforce tactics.deny" in result["error"]
    assert len(cli("list", "--store", store, "--json").json()) == 1


def test_cli_bad_inputs_exit_2(cli, tmp_path: Path, store: Path, models) -> None:
    _recipe, artifact_id = build_chain(cli, tmp_path, store)
    attach_layer_info(store, artifact_id, layer_info())
    not_results = tmp_path / "not-results.json"
    not_results.write_text(json.dumps({"a": 1}))
    for args, message in [
        ((not_results,), "not polygraphy run results"),
        ((tmp_path / "absent.json",), "results file not found"),
        ((models["good"],), "not polygraphy run results"),
    ]:
        result = cli("denylist", "derive", *args, "--artifact", artifact_id, "--store", store, "--json")
        assert result.code == 2, result
        assert message in result.json()["error"]
    results = run_results(tmp_path, models["good"], models["bad_fc2"])
    unknown = cli("denylist", "derive", results, "--artifact", "f" * 12, "--store", store)
    assert unknown.code == 2 and "no artifact with id" in unknown.stderr
    named = cli("denylist", "derive", results, "--artifact", artifact_id, "--store", store, "--reference", "nope")
    assert named.code == 2 and "reference runner 'nope' matches none" in named.stderr
    assert "Traceback" not in named.stderr


def test_show_prints_the_enforcement_report(cli, tmp_path: Path, store: Path, models) -> None:
    """The report a GPU build records (built here from the recorded autotuning log) is shown."""
    from tests.test_denylist_enforce import K32, RECORDED_LOG
    from trtforge.backend.denylist_enforce import EnforcementReport, parse_autotuning_log, plan_cache_edits
    from trtforge.rules.denylist import DenyEntry

    _recipe, artifact_id = build_chain(cli, tmp_path, store)
    entries = [DenyEntry(layer="matMul1", tactic=K32, reason="drift")]
    report = EnforcementReport("editable_timing_cache", [e.model_dump(mode="json") for e in entries])
    report.removed = [e.as_json() for e in plan_cache_edits(parse_autotuning_log(RECORDED_LOG), entries)]
    attach_layer_info(store, artifact_id, report.as_json(), key="denylist")
    shown = cli("show", artifact_id, "--store", store)
    assert shown.code == 0, shown
    assert "deny list (editable_timing_cache): 1 entries, 1 removals, 0 violations" in shown.stdout
    assert f"removed {K32} from matMul1" in shown.stdout
    assert cli("show", artifact_id, "--store", store, "--json").json()["details"]["denylist"]["removed"][0]["key"]


# -- results name their engine (issue 14): the artifact's plan or the per-layer diagnostic engine --


def diagnostic_layer_info() -> dict:
    """The per-layer diagnostic engine: every tensor marked, so fc2 and bias2 are NOT fused there;
    its fc2 layer does not exist in the artifact's engine (whose layer is "fc2 + bias2")."""
    info = layer_info()
    fused = info["Layers"][2]
    fc2 = {**fused, "Name": "fc2", "Outputs": [{**fused["Outputs"][0], "Name": "h2"}], "Metadata": "[ONNX Layer: fc2]"}
    bias2 = {**fused, "Name": "bias2", "LayerType": "ElementWise", "TacticName": "diag_bias_tactic",
             "Inputs": [{**fused["Outputs"][0], "Name": "h2"}], "Metadata": "[ONNX Layer: bias2]"}  # fmt: skip
    info["Layers"][2:3] = [fc2, bias2]
    return info


def test_diagnostic_results_blame_the_diagnostic_engines_layers(tmp_path: Path, models: dict[str, Path]) -> None:
    """Fails on 4692594 (derive mapped the diagnostic engine's differences onto the artifact's layers)."""
    # fc2 drifts: the diagnostic engine's own layer "fc2" is to blame, and the artifact has no such
    # layer (there it is fused with bias2): reported as unmappable, never proposed.
    drift_fc2 = run_results(tmp_path, models["good"], models["bad_fc2"])
    engine = "the per-layer diagnostic engine"
    proposal = derive_for(drift_fc2, models["good"], diagnostic_layer_info(), engine=engine,
                          artifact_layer_info=layer_info())  # fmt: skip
    assert proposal.entries == [] and proposal.engine == engine
    [unmappable] = proposal.unmappable
    assert (unmappable["tensor"], unmappable["layer"]) == ("h2", "fc2")
    assert "does not exist in artifact" in unmappable["reason"]
    # fc1 drifts: the diagnostic engine's fc1 exists in the artifact's engine too: a proposal.
    drift_fc1 = run_results(tmp_path / "fc1", models["good"], models["bad_fc1"])
    mapped = derive_for(drift_fc1, models["good"], diagnostic_layer_info(), engine=engine,
                        artifact_layer_info=layer_info())  # fmt: skip
    assert [(e.layer, e.tactic[:14]) for e in mapped.entries] == [("fc1", "sm80_xmma_gemm")] and not mapped.unmappable


def test_derive_reads_the_engine_record_verify_writes(cli, tmp_path: Path, store: Path, models) -> None:
    from trtforge.backend.run_results import DIAGNOSTIC_ENGINE, PLAN_ENGINE, write_engine_record

    recipe, artifact_id = build_chain(cli, tmp_path, store)
    attach_layer_info(store, artifact_id, layer_info())
    results = run_results(tmp_path, models["good"], models["bad_fc2"])
    args = ("denylist", "derive", results, "--artifact", artifact_id, "--store", store, "--json")

    unnamed = cli(*args).json()  # saved by polygraphy itself: the artifact's plan is assumed, and said
    assert unnamed["entries"] and "do not name their engine" in unnamed["notes"][0]

    write_engine_record(results, PLAN_ENGINE, artifact_id=artifact_id, plan_sha256=None)
    plan = cli(*args).json()
    assert plan["engine"].endswith("'s plan") and plan["notes"] == [] and len(plan["entries"]) == 1

    write_engine_record(results, DIAGNOSTIC_ENGINE, artifact_id=artifact_id, plan_sha256=None,
                        layer_info=diagnostic_layer_info())  # fmt: skip
    written = cli(*args, "--write")
    assert written.code == 0, written
    data = written.json()
    assert "per-layer diagnostic engine" in data["engine"] and data["entries"] == [] and not data["written"]
    assert [u["layer"] for u in data["unmappable"]] == ["fc2"]
    assert (recipe.parent / "deny.yaml").read_text() == "deny: []\n"  # nothing unmappable is written

    write_engine_record(results, DIAGNOSTIC_ENGINE, artifact_id="e" * 32, plan_sha256=None)
    other = cli(*args)
    assert other.code == 2 and "holds outputs of artifact eeeeeeeeeeee" in other.json()["error"]
