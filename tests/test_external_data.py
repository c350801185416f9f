"""Models with external data: the key, the digest cache, pins, lookup, adopt and reproduce cover
the external files (names and bytes), not only the .onnx file.

The CLI tests fail on 55eb6bf: there the model digest was the .onnx file's sha256 alone, so
changing w.bin rebuilt to `cached` under the same key (the stale engine), and a missing w.bin
passed the digest and failed later, inside TensorRT's parser.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from tests import onnx_models
from trtforge.core.onnx_reader import parse_model
from trtforge.rules.digests import DigestCache, model_digest
from trtforge.rules.keys import MODEL_DIGEST_SCHEME

RECIPE = """\
name: ext
model:
  onnx: models/ext.onnx
{pin}backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
build:
  optimization_level: 0
"""


def save_external(model: onnx.ModelProto, path: Path, location: str = "w.bin") -> Path:
    """Every initializer, however small, goes to ``location`` next to the model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


def recipe_with_external_model(folder: Path, *, seed: int = 0, pin: str | None = None) -> Path:
    save_external(onnx_models.mlp(seed), folder / "models" / "ext.onnx")
    path = folder / "ext.yaml"
    path.write_text(RECIPE.format(pin=f"  sha256: {pin}\n" if pin else ""))
    return path


def expected_digest(model: Path, locations: list[str]) -> str:
    """docs/cache-hits-and-keys.md's definition, computed independently of trtforge."""
    text = f"{MODEL_DIGEST_SCHEME}\n{hashlib.sha256(model.read_bytes()).hexdigest()}\n"
    for location in sorted(locations):
        text += f"{hashlib.sha256((model.parent / location).read_bytes()).hexdigest()}  {location}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def rewrite_weights(weights: Path) -> None:
    """Change the bytes of w.bin in place: same size, same .onnx, different weights."""
    data = bytearray(weights.read_bytes())
    values = np.frombuffer(bytes(data[:16]), dtype=np.float32) + np.float32(0.75)
    data[:16] = values.tobytes()
    weights.write_bytes(bytes(data))


def test_changed_external_weights_change_the_key_and_the_engine(cli, tmp_path: Path, store: Path) -> None:
    recipe = recipe_with_external_model(tmp_path / "r")
    first = cli("build", recipe, "--store", store, "--json")
    assert first.code == 0, first
    [built] = first.json()
    assert built["status"] == "built"
    assert cli("build", recipe, "--store", store, "--json").json()[0]["status"] == "cached"

    onnx_before = (tmp_path / "r" / "models" / "ext.onnx").read_bytes()
    rewrite_weights(tmp_path / "r" / "models" / "w.bin")
    assert (tmp_path / "r" / "models" / "ext.onnx").read_bytes() == onnx_before

    second = cli("build", recipe, "--store", store, "--json")
    assert second.code == 0, second
    [rebuilt] = second.json()
    assert rebuilt["status"] == "built", "changed external weights must not be a cache hit"
    assert rebuilt["build_key"] != built["build_key"]
    assert rebuilt["plan_sha256"] != built["plan_sha256"]  # the new weights are in the new engine

    shown = cli("show", rebuilt["artifact_id"], "--store", store, "--json").json()
    model = tmp_path / "r" / "models" / "ext.onnx"
    assert shown["model_sha256"] == expected_digest(model, ["w.bin"])
    assert cli("build", recipe, "--store", store, "--json").json()[0]["status"] == "cached"


# -- valid encodings that protobuf (onnx, TensorRT) reads one way and a hand-written reader another --


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


GRAPH, INITIALIZER, DATA_LOCATION = 7, 5, 14  # ModelProto.graph, GraphProto.initializer, TensorProto.data_location


def _without_graph(model: onnx.ModelProto) -> bytes:
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    return rest.SerializeToString()


def _graph_with(model: onnx.ModelProto, initializers: list[bytes]) -> bytes:
    """The model's graph with its initializers replaced by the given encoded TensorProtos."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.ClearField("initializer")
    return graph.SerializeToString() + b"".join(_field(INITIALIZER, t) for t in initializers)


def odd_encoding(model: onnx.ModelProto, kind: str) -> bytes:
    """``model`` (external initializers) encoded in a valid but unusual way (issue 20, item 3).

    - ``split_graph``: ``graph`` in two fields, the initializers in the first; protobuf merges
      repeated embedded messages, a reader taking the last occurrence sees no external tensor;
    - ``group_in_initializer``: an unknown group-typed field (wire types 3/4) after each
      initializer's name; protobuf skips it, a reader that stops on it sees no location;
    - ``wide_data_location``: data_location written as the varint 2**32+1, which protobuf
      truncates to int32, i.e. 1 = EXTERNAL.
    """
    tensors = list(model.graph.initializer)
    if kind == "split_graph":
        first = onnx.GraphProto()
        first.initializer.extend(tensors)
        rest = onnx.GraphProto()
        rest.CopyFrom(model.graph)
        rest.ClearField("initializer")
        split = _field(GRAPH, first.SerializeToString()) + _field(GRAPH, rest.SerializeToString())
        return _without_graph(model) + split
    if kind == "group_in_initializer":
        group = _varint(100 << 3 | 3) + _varint(1 << 3 | 0) + _varint(5) + _varint(100 << 3 | 4)
        encoded = [t.SerializeToString() + group for t in tensors]
    else:
        encoded = []
        for tensor in tensors:
            plain = TensorProto()
            plain.CopyFrom(tensor)
            plain.ClearField("data_location")
            encoded.append(plain.SerializeToString() + _varint(DATA_LOCATION << 3 | 0) + _varint(2**32 + 1))
    return _without_graph(model) + _field(GRAPH, _graph_with(model, encoded))


ODD_ENCODINGS = ["split_graph", "group_in_initializer", "wide_data_location"]


@pytest.mark.parametrize("kind", ODD_ENCODINGS)
def test_odd_encodings_name_their_external_data_as_onnx_reads_them(tmp_path: Path, kind: str) -> None:
    model = save_external(onnx_models.mlp(0), tmp_path / "ext.onnx")
    odd = tmp_path / "odd.onnx"
    odd.write_bytes(odd_encoding(onnx.load(str(model), load_external_data=False), kind))
    oracle = onnx.load(str(odd), load_external_data=False)  # protobuf's reading
    assert {t.name for t in oracle.graph.initializer if uses_external_data(t)} == {"w", "b"}
    assert external_data_locations(odd) == ("w.bin",)
    assert model_digest(odd) == expected_digest(odd, ["w.bin"])


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
@pytest.mark.parametrize("kind", ODD_ENCODINGS)
def test_odd_encodings_swapped_weights_are_not_a_stale_hit(cli, tmp_path: Path, store: Path, kind: str) -> None:
    """Fails on 843520b: core/onnx_proto.py found no external data in these encodings, so the
    digest was the .onnx file's alone and new weights in w.bin were reported `cached` (old engine)."""
    recipe = recipe_with_external_model(tmp_path / "r")
    model = tmp_path / "r" / "models" / "ext.onnx"
    model.write_bytes(odd_encoding(onnx.load(str(model), load_external_data=False), kind))
    first = cli("build", recipe, "--store", store, "--json")
    assert first.code == 0, first
    [built] = first.json()
    assert built["status"] == "built"

    rewrite_weights(tmp_path / "r" / "models" / "w.bin")  # the .onnx stays byte-identical
    second = cli("build", recipe, "--store", store, "--json")
    assert second.code == 0, second
    [rebuilt] = second.json()
    assert rebuilt["status"] == "built", "new external weights must not be a cache hit"
    assert rebuilt["build_key"] != built["build_key"]
    assert rebuilt["plan_sha256"] != built["plan_sha256"]  # TensorRT read the new weights


def test_renamed_external_file_changes_the_digest(tmp_path: Path) -> None:
    """Same bytes under another location name: a different model digest (names are covered)."""
    a = save_external(onnx_models.mlp(0), tmp_path / "a" / "m.onnx", "w.bin")
    b = save_external(onnx_models.mlp(0), tmp_path / "b" / "m.onnx", "v.bin")
    assert (a.parent / "w.bin").read_bytes() == (b.parent / "v.bin").read_bytes()
    assert model_digest(a) != model_digest(b)
    assert model_digest(a) == expected_digest(a, ["w.bin"])


def test_single_file_digest_is_the_file_sha256(tmp_path: Path) -> None:
    path = onnx_models.save(onnx_models.mlp(0), tmp_path / "m.onnx")
    assert model_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["missing", "directory", "unreadable"])
def test_missing_or_unreadable_external_file_is_exit_2_before_any_build(
    cli, tmp_path: Path, store: Path, how: str
) -> None:
    recipe = recipe_with_external_model(tmp_path / "r")
    weights = tmp_path / "r" / "models" / "w.bin"
    weights.unlink()
    if how == "directory":
        weights.mkdir()
    elif how == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode")
        weights.write_bytes(b"\0" * 160)
        weights.chmod(0)
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 2, result
    [failed] = result.json()
    assert failed["status"] == "failed" and "w.bin" in failed["error"]
    assert "external data" in failed["error"]
    assert not (store / "blobs").exists() or not any(p.is_file() for p in (store / "blobs").rglob("*"))


def test_recipe_pin_is_the_composite_digest(cli, tmp_path: Path, store: Path) -> None:
    model = save_external(onnx_models.mlp(0), tmp_path / "probe" / "models" / "ext.onnx")
    composite = expected_digest(model, ["w.bin"])
    onnx_only = hashlib.sha256(model.read_bytes()).hexdigest()

    pinned = recipe_with_external_model(tmp_path / "ok", pin=composite)
    assert cli("build", pinned, "--store", store, "--json").json()[0]["status"] == "built"

    wrong = recipe_with_external_model(tmp_path / "wrong", pin=onnx_only)
    result = cli("build", wrong, "--store", store, "--json")
    assert result.code == 2 and "pins" in result.json()[0]["error"], result

    rewrite_weights(tmp_path / "ok" / "models" / "w.bin")  # the pin now protects the weights too
    result = cli("build", pinned, "--store", store, "--json")
    assert result.code == 2 and "pins" in result.json()[0]["error"], result


def test_lookup_and_adopt_use_the_composite_digest(cli, tmp_path: Path, store: Path) -> None:
    recipe = recipe_with_external_model(tmp_path / "r")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    model = tmp_path / "r" / "models" / "ext.onnx"
    composite = expected_digest(model, ["w.bin"])
    found = cli("lookup", "--model-sha256", composite, "--flavor", "tensorrt_rtx", "--cc", "8.6", "--trt",
                "1.7.1", "--store", store, "--json")  # fmt: skip
    assert found.code == 0, found
    assert found.json()["best"]["artifact_id"] == built["artifact_id"]

    other = tmp_path / "adopt-store"
    adopted = cli("adopt", built["plan_path"], "--name", "ext-adopted", "--model", model, "--store", other, "--json")
    assert adopted.code == 0, adopted
    shown = cli("show", adopted.json()["artifact_id"], "--store", other, "--json").json()
    assert shown["model_sha256"] == composite

    (model.parent / "w.bin").unlink()
    refused = cli("adopt", built["plan_path"], "--name", "ext-adopted", "--model", model, "--store", other, "--json")
    assert refused.code == 2 and "w.bin" in refused.stdout + refused.stderr, refused


def test_reproduce_notices_changed_external_weights(cli, tmp_path: Path, store: Path) -> None:
    recipe = recipe_with_external_model(tmp_path / "r")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    same = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert same.code == 0 and same.json()["identical"], same

    rewrite_weights(tmp_path / "r" / "models" / "w.bin")
    changed = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert changed.code == 2 and "changed" in changed.stdout + changed.stderr, changed


# -- the digest cache ---------------------------------------------------------------------


def _old(*paths: Path) -> None:
    for path in paths:
        stamp = path.stat().st_mtime - 60
        os.utime(path, (stamp, stamp))


def test_digest_cache_remembers_every_file_and_forgets_on_any_change(tmp_path: Path) -> None:
    model = save_external(onnx_models.mlp(0), tmp_path / "m" / "m.onnx")
    weights = model.parent / "w.bin"
    _old(model, weights)
    (tmp_path / "store").mkdir()
    cache_file = tmp_path / "store" / "cache" / "digests.json"
    first = DigestCache(cache_file)
    digest = first.model_digest(model)
    assert digest == expected_digest(model, ["w.bin"])
    first.save()
    [entry] = json.loads(cache_file.read_text())["entries"].values()
    assert [e[0] for e in entry[6]] == ["w.bin"]

    # A planted digest proves the remembered entry is what an unchanged set of files gets ...
    data = json.loads(cache_file.read_text())
    [key] = data["entries"]
    data["entries"][key][5] = "f" * 64
    cache_file.write_text(json.dumps(data))
    assert DigestCache(cache_file).model_digest(model) == "f" * 64
    # ... and not the plain sha256 of the .onnx file, which is another question.
    assert DigestCache(cache_file).sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest()

    rewrite_weights(weights)  # only the external file changes: the entry no longer applies
    assert DigestCache(cache_file).model_digest(model) == expected_digest(model, ["w.bin"]) != digest


def test_hit_with_external_data_imports_neither_onnx_nor_tensorrt(cli, tmp_path: Path, store: Path) -> None:
    recipe = recipe_with_external_model(tmp_path / "r")
    _old(tmp_path / "r" / "models" / "ext.onnx", tmp_path / "r" / "models" / "w.bin")
    assert cli("build", recipe, "--store", store).code == 0
    probe = (
        "import sys; from trtforge.stages.build import BuildStage; s = BuildStage(sys.argv[1]); "
        "r = s.build_one(sys.argv[2]); s.close(); "
        "print(r.status, [m for m in ('onnx', 'tensorrt_rtx', 'tensorrt', 'sqlalchemy') if m in sys.modules])"
    )
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    out = subprocess.run(
        [sys.executable, "-c", probe, str(store), str(recipe)], capture_output=True, text=True, env=subprocess_env()
    )
    assert out.stdout.split(maxsplit=1) == ["cached", "[]\n"], out


# -- the reader against onnx as the oracle --------------------------------------------------


def _ext_tensor(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.zeros(4, dtype=np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def everywhere_model() -> onnx.ModelProto:
    """External tensors in every place onnx looks: initializers, a Constant's attribute, a
    subgraph's initializer, a function's node; plus one embedded tensor that must not count."""
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["sub_w"], ["then_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [4])],
        initializer=[_ext_tensor("sub_w", "sub.bin")],
    )
    const = helper.make_node("Constant", [], ["c"], value=_ext_tensor("c", "const.bin"))
    cond = helper.make_node("If", ["flag"], ["branch"], then_branch=then_graph, else_branch=then_graph)
    fn_const = helper.make_node("Constant", [], ["fc"], value=_ext_tensor("fc", "fn.bin"))
    function = helper.make_function("local", "F", [], ["fc"], [fn_const], [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [const, cond, helper.make_node("F", [], ["f"], domain="local")],
        "everywhere",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])],
        initializer=[_ext_tensor("w", "w.bin"), numpy_helper.from_array(np.ones(2, dtype=np.float32), "inline")],
    )
    return helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )


def test_external_locations_match_onnx(tmp_path: Path) -> None:
    model = everywhere_model()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    oracle = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            oracle.add({e.key: e.value for e in tensor.external_data}["location"])
    assert oracle == {"w.bin", "const.bin", "sub.bin", "fn.bin"}
    assert external_data_locations(path) == tuple(sorted(oracle))
    saved = onnx_models.save(onnx_models.mlp(0), tmp_path / "plain.onnx")
    assert external_data_locations(saved) == ()


def external_data_locations(path: Path) -> tuple[str, ...]:
    return parse_model(path.read_bytes(), path).external_locations
