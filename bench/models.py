"""Benchmark models, generated with onnx.helper from a seeded generator, and recipes for them.

Each :class:`BenchModel` knows its recipe text and the equivalent `polygraphy convert` flags,
so trtforge and polygraphy build exactly the same thing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.timing import REPO

OPSET = 17

Shapes = dict[str, tuple[list[int], list[int], list[int]]]  # input -> (min, opt, max)


@dataclass
class BenchModel:
    name: str
    path: Path
    profiles: list[Shapes]
    optimization_level: int = 3
    workspace_mib: int | None = 1024
    notes: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def recipe_text(self, name: str | None = None, description: str = "") -> str:
        lines = [
            f"name: {name or self.name}",
            f"description: {description or self.notes or self.name}",
            "model:",
            f"  onnx: {self.path.name}",
            "backend: tensorrt_rtx",
            "profiles:",
        ]
        for profile in self.profiles:
            items = ", ".join(f"{k}: {{min: {lo}, opt: {opt}, max: {hi}}}" for k, (lo, opt, hi) in profile.items())
            lines.append(f"  - {{{items}}}")
        lines += ["build:", f"  optimization_level: {self.optimization_level}"]
        if self.workspace_mib is not None:
            lines.append(f"  workspace_mib: {self.workspace_mib}")
        return "\n".join(lines) + "\n"

    def write_recipe(self, folder: Path, name: str | None = None, description: str = "") -> Path:
        """A recipe next to the model (recipes name their model relative to themselves)."""
        if self.path.parent != folder:
            raise ValueError("recipes live next to their model")
        path = folder / f"{name or self.name}.yaml"
        path.write_text(self.recipe_text(name, description))
        return path

    def polygraphy_args(self) -> list[str]:
        """`polygraphy convert` flags equivalent to the recipe (one flag set per profile)."""
        args = [str(self.path), "--convert-to", "trt"]
        for profile in self.profiles:
            for flag, index in (("--trt-min-shapes", 0), ("--trt-opt-shapes", 1), ("--trt-max-shapes", 2)):
                args += [flag, *(f"{k}:[{','.join(map(str, v[index]))}]" for k, v in profile.items())]
        args += ["--builder-optimization-level", str(self.optimization_level)]
        if self.workspace_mib is not None:
            args += ["--pool-limit", f"workspace:{self.workspace_mib}M"]
        return args


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="trtforge-bench")
    model.ir_version = 8
    return model


def mlp(name: str, *, width: int, seed: int) -> onnx.ModelProto:
    """Two MatMuls with a Relu between, on a dynamic batch: the smallest model worth a build."""
    rng = np.random.default_rng(seed)
    inits = [_init(f"w{i}", rng.standard_normal((width, width))) for i in (0, 1)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        initializer=inits,
    )
    return _model(graph)


def cnn(name: str, *, channels: int, blocks: int, resolution: int, seed: int) -> onnx.ModelProto:
    """A plain ResNet-like stack: [conv3x3 -> relu] x blocks with a stride-2 conv every 2 blocks."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current, in_ch = "images", 3
    for index in range(blocks):
        out_ch = channels * (2 ** (index // 2))
        stride = 2 if index % 2 == 1 else 1
        w, b = f"conv{index}.w", f"conv{index}.b"
        scale = (2.0 / (in_ch * 9)) ** 0.5
        inits += [_init(w, rng.normal(0, scale, (out_ch, in_ch, 3, 3))), _init(b, rng.normal(0, 0.01, (out_ch,)))]
        nodes.append(
            helper.make_node(
                "Conv", [current, w, b], [f"c{index}"], name=f"conv{index}", pads=[1, 1, 1, 1], strides=[stride] * 2
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}"))
        current, in_ch = f"r{index}", out_ch
    inits += [_init("fc.w", rng.normal(0, 0.05, (10, in_ch))), _init("fc.b", np.zeros(10))]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, resolution, resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    return _model(graph)


def transformer_block(name: str, *, d_model: int, heads: int, ffn: int, layers: int, seed: int) -> onnx.ModelProto:
    """Pre-norm encoder layers: LayerNorm -> multi-head self-attention -> LayerNorm -> MLP, with residuals.

    Input ``tokens`` is [N, S, d_model] with dynamic batch N and sequence length S.
    """
    rng = np.random.default_rng(seed)
    head_dim = d_model // heads
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array([0, 0, heads, head_dim], dtype=np.int64), "split_heads"),
        numpy_helper.from_array(np.array([0, 0, d_model], dtype=np.int64), "merge_heads"),
        _init("attn_scale", np.array(1.0 / head_dim**0.5)),
    ]
    nodes: list[onnx.NodeProto] = []
    x = "tokens"

    def linear(prefix: str, src: str, fan_in: int, fan_out: int) -> str:
        inits.extend(
            [
                _init(f"{prefix}.w", rng.normal(0, fan_in**-0.5, (fan_in, fan_out))),
                _init(f"{prefix}.b", np.zeros(fan_out)),
            ]
        )
        nodes.append(helper.make_node("MatMul", [src, f"{prefix}.w"], [f"{prefix}.mm"], name=f"{prefix}.matmul"))
        nodes.append(helper.make_node("Add", [f"{prefix}.mm", f"{prefix}.b"], [f"{prefix}.out"], name=f"{prefix}.add"))
        return f"{prefix}.out"

    def layer_norm(prefix: str, src: str) -> str:
        inits.extend([_init(f"{prefix}.g", np.ones(d_model)), _init(f"{prefix}.b", np.zeros(d_model))])
        nodes.append(
            helper.make_node(
                "LayerNormalization", [src, f"{prefix}.g", f"{prefix}.b"], [f"{prefix}.out"], name=prefix, axis=-1
            )
        )
        return f"{prefix}.out"

    for layer in range(layers):
        p = f"l{layer}"
        h = layer_norm(f"{p}.ln1", x)
        heads_of = {}
        for part in ("q", "k", "v"):
            proj = linear(f"{p}.{part}", h, d_model, d_model)
            nodes.append(helper.make_node("Reshape", [proj, "split_heads"], [f"{p}.{part}.r"], name=f"{p}.{part}.r"))
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            nodes.append(
                helper.make_node("Transpose", [f"{p}.{part}.r"], [f"{p}.{part}.t"], name=f"{p}.{part}.t", perm=perm)
            )
            heads_of[part] = f"{p}.{part}.t"
        nodes += [
            helper.make_node("MatMul", [heads_of["q"], heads_of["k"]], [f"{p}.qk"], name=f"{p}.qk"),
            helper.make_node("Mul", [f"{p}.qk", "attn_scale"], [f"{p}.qk.s"], name=f"{p}.scale"),
            helper.make_node("Softmax", [f"{p}.qk.s"], [f"{p}.attn"], name=f"{p}.softmax", axis=-1),
            helper.make_node("MatMul", [f"{p}.attn", heads_of["v"]], [f"{p}.ctx"], name=f"{p}.ctx"),
            helper.make_node("Transpose", [f"{p}.ctx"], [f"{p}.ctx.t"], name=f"{p}.ctx.t", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}.ctx.t", "merge_heads"], [f"{p}.ctx.m"], name=f"{p}.ctx.m"),
        ]
        attn_out = linear(f"{p}.o", f"{p}.ctx.m", d_model, d_model)
        nodes.append(helper.make_node("Add", [x, attn_out], [f"{p}.res1"], name=f"{p}.res1"))
        h2 = layer_norm(f"{p}.ln2", f"{p}.res1")
        up = linear(f"{p}.up", h2, d_model, ffn)
        nodes.append(helper.make_node("Relu", [up], [f"{p}.act"], name=f"{p}.act"))
        down = linear(f"{p}.down", f"{p}.act", ffn, d_model)
        nodes.append(helper.make_node("Add", [f"{p}.res1", down], [f"{p}.res2"], name=f"{p}.res2"))
        x = f"{p}.res2"
    nodes.append(helper.make_node("Identity", [x], ["hidden"], name="output"))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "S", d_model])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", "S", d_model])],
        initializer=inits,
    )
    return _model(graph)


def wide_matmul(name: str, *, megabytes: float, seed: int) -> onnx.ModelProto:
    """x[N, 1024] @ W[1024, K]: a model whose size is its weights (to measure model hashing)."""
    rng = np.random.default_rng(seed)
    columns = max(1, int(megabytes * 2**20 / 4 / 1024))
    weights = numpy_helper.from_array(rng.standard_normal((1024, columns), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", columns])],
        initializer=[weights],
    )
    return _model(graph)


def settle(path: Path, seconds: float = 60.0) -> None:
    """Date a freshly written model in the past: an unchanged model, as on a real second build.

    (trtforge does not remember digests of files modified in the last seconds; see digests.py.)
    """
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def save(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    settle(path)
    return path


def example(folder: Path) -> BenchModel:
    """The quick-start recipe's model, copied, with the recipe's settings."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "example_cnn.onnx"
    shutil.copyfile(REPO / "recipes" / "models" / "example_cnn.onnx", path)
    settle(path)
    shapes = [
        {"images": ([1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32])},
        {"images": ([9, 3, 32, 32], [16, 3, 32, 32], [32, 3, 32, 32])},
    ]
    return BenchModel("example-cnn", path, shapes, notes="recipes/example.yaml")


def cold_build_models(folder: Path, quick: bool) -> list[BenchModel]:
    """The example plus CNNs and a transformer-like block large enough that TensorRT dominates."""
    models = [example(folder / "example-cnn")]
    if quick:
        return models
    specs = [
        ("cnn-m", dict(channels=32, blocks=6, resolution=128), "6 conv blocks, 32-128 ch, 128x128"),
        ("cnn-l", dict(channels=64, blocks=8, resolution=224), "8 conv blocks, 64-512 ch, 224x224"),
    ]
    for seed, (name, spec, notes) in enumerate(specs, start=1):
        res = spec["resolution"]
        path = save(cnn(name, seed=seed, **spec), folder / name, name)
        profile = {"images": ([1, 3, res, res], [4, 3, res, res], [8, 3, res, res])}
        models.append(BenchModel(name, path, [profile], notes=notes))
    name = "transformer"
    path = save(transformer_block(name, d_model=256, heads=4, ffn=1024, layers=2, seed=7), folder / name, name)
    profile = {"tokens": ([1, 16, 256], [4, 128, 256], [8, 256, 256])}
    models.append(BenchModel(name, path, [profile], notes="2 pre-norm encoder layers, d=256, 4 heads, ffn 1024"))
    # BERT-base sized (324 MB of weights): TensorRT-RTX needs seconds here, so the fixed cost shows
    # as the small share it is for real models; hashing the model and storing the plan scale with it.
    name = "transformer-12"
    spec = dict(d_model=768, heads=12, ffn=3072, layers=12, seed=8)
    path = save(transformer_block(name, **spec), folder / name, name)  # type: ignore[arg-type]
    profile = {"tokens": ([1, 16, 768], [4, 128, 768], [8, 256, 768])}
    models.append(BenchModel(name, path, [profile], notes="12 encoder layers, d=768, 12 heads, ffn 3072"))
    return models


def mlp_family(folder: Path, count: int) -> list[BenchModel]:
    """``count`` tiny distinct models (distinct build keys), quick to build at optimization level 0."""
    models = []
    for index in range(count):
        name = f"mlp{index:03d}"
        path = save(wide_matmul(name, megabytes=1 / 32, seed=index), folder, name)
        profile = {"x": ([1, 1024], [2, 1024], [4, 1024])}
        models.append(BenchModel(name, path, [profile], optimization_level=0, workspace_mib=None))
    return models
