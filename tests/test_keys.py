"""BuildKey: canonical, stable under cosmetic edits, sensitive to what changes the engine."""

from __future__ import annotations

from trtforge.rules.keys import build_key, canonical_json
from trtforge.rules.recipe import parse_recipe
from trtforge.rules.target import BuildTarget

BASE = """\
name: net
description: first
model:
  onnx: net.onnx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
build:
  optimization_level: 3
"""
REORDERED = """\
build: {optimization_level: 3}
profiles:
  - x: {max: [4, 4], opt: [2, 4], min: [1, 4]}
description: something else entirely
model: {onnx: elsewhere/net.onnx}
name: net
"""
TARGET = BuildTarget("tensorrt_rtx", "1.7.1.116")


def key(text: str, model: str = "a" * 64, target: BuildTarget = TARGET) -> str:
    return build_key(parse_recipe(text), model, target)


def test_canonical_json_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'


def test_key_ignores_order_description_and_model_location() -> None:
    assert key(BASE) == key(REORDERED)


def test_key_changes_with_build_fields_model_and_target() -> None:
    base = key(BASE)
    assert key(BASE.replace("optimization_level: 3", "optimization_level: 2")) != base
    assert key(BASE.replace("max: [4, 4]", "max: [8, 4]")) != base
    assert key(BASE.replace("name: net", "name: other")) != base
    assert key(BASE, model="b" * 64) != base
    assert key(BASE, target=BuildTarget("tensorrt_rtx", "1.8.0")) != base
    assert key(BASE, target=BuildTarget("tensorrt", "1.7.1.116", "NVIDIA A10G", ("8.6",))) != base
