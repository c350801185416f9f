"""The ONNX model side of a recipe: hash it, read its inputs, check the profiles against them.

These checks run before any build starts, on a cache miss only; the model is parsed by protobuf
through onnx's classes (``core/onnx_reader.py``), without loading external weights. A build reads
its model once (:func:`read_for_build`) and hands the builder a private copy of exactly the bytes
that were parsed and hashed (:func:`private_copy`), so a model replaced while a build runs can
never be recorded under the digest of the model it replaced. Whatever else hands a model to
TensorRT (a refit's new weights, `build --reproduce`, the per-layer engine, a weight-stripped plan's
weights) reads such a copy too (:func:`copy_for_reading`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from trtforge.core.errors import ModelError
from trtforge.core.fsutil import copy_hashed
from trtforge.core.onnx_reader import ModelFile, parse_model, read_model_bytes
from trtforge.rules.digests import DigestCache
from trtforge.rules.keys import composite_model_digest
from trtforge.rules.recipe import LoadedRecipe
from trtforge.rules.record import ModelRecord

Dim = int | str | None  # a fixed size, a named dynamic dim, or an unnamed dynamic dim


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def is_dynamic(self) -> bool:
        # 0 is a fixed (empty) size; -1 and named or unnamed dims are dynamic
        return any(not isinstance(d, int) or d < 0 for d in self.shape)

    def dynamic_axes(self) -> list[int]:
        return [axis for axis, d in enumerate(self.shape) if not isinstance(d, int) or d < 0]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def record(self) -> ModelRecord:
        """What an artifact records of its model (``details.model``); refit checks new weights against it."""
        return ModelRecord(
            path=str(self.path.absolute()),
            inputs=[t.as_json() for t in self.inputs],
            outputs=[t.as_json() for t in self.outputs],
        )


def model_sha256(loaded: LoadedRecipe, digests: DigestCache | None = None) -> str:
    """The recipe's model digest (through ``digests`` when given), enforcing its existence and pin.

    The digest is the .onnx file's sha256, or with external data the composite digest over it
    and its external files (keys.composite_model_digest); a missing external file is a ModelError.
    """
    path = loaded.model_path
    if not path.is_file():
        raise ModelError(
            f"{loaded.path}: model file {loaded.recipe.model.onnx} not found (looked at {path})",
            hint="model.onnx is relative to the recipe file, or absolute, ~ or ${VAR}",
        )
    digest = (digests or DigestCache(None)).model_digest(path)
    pin = loaded.recipe.model.sha256
    if pin is not None and pin != digest:
        raise ModelError(
            f"{loaded.path}: model {loaded.recipe.model.onnx} has digest {digest}, but the recipe pins {pin}",
            hint="update model.sha256 if the new model is intended (with external data it is the composite "
            "digest: see docs/cache-hits-and-keys.md, Model digest)",
        )
    return digest


def read_model(path: Path, sha256: str) -> ModelInfo:
    """Inputs and outputs of an ONNX file, parsed by protobuf without loading the weights."""
    return _model_info(path, sha256, parse_model(read_model_bytes(path), path))


def _model_info(path: Path, sha256: str, parsed: ModelFile) -> ModelInfo:
    if not parsed.has_graph or not parsed.outputs:
        raise ModelError(f"{path}: not an ONNX model (no graph outputs)")
    return ModelInfo(
        path,
        sha256,
        tuple(TensorInfo(v.name, v.dtype, v.shape) for v in parsed.inputs),
        tuple(TensorInfo(v.name, v.dtype, v.shape) for v in parsed.outputs),
    )


@dataclass(frozen=True)
class BuildModel:
    """A model read once for a build: the .onnx bytes, what protobuf reads in them, their I/O."""

    data: bytes
    parsed: ModelFile
    info: ModelInfo  # ``info.sha256``: the digest the build key was computed from


def read_for_build(path: Path, sha256: str) -> BuildModel:
    """Read the model file once; the profiles are checked and the builder is fed from these bytes."""
    data = read_model_bytes(path)
    parsed = parse_model(data, path)
    return BuildModel(data, parsed, _model_info(path, sha256, parsed))


def private_copy(model: BuildModel, folder: Path, purpose: str = "the build") -> Path:
    """Put the model in ``folder`` (private to one build) and return the .onnx path to build from.

    The .onnx file is written from the bytes that were parsed; each external data file is copied
    and the copy hashed. The digest of what was written must be the digest the build key was
    computed from, else the model changed since (ModelError, nothing built): the builder reads
    only these copies, so what it builds is what the key names. ``purpose`` names the work in
    that refusal ("the refit").
    """
    source = model.info.path
    target = folder / source.name
    target.write_bytes(model.data)
    digests: dict[str, str] = {}
    for location in model.parsed.external_locations:
        file = source.parent / location
        try:
            digests[location] = copy_hashed(file, folder / location)
        except OSError as exc:
            raise ModelError(
                f"{source}: cannot read external data file {location!r} ({file}: {exc.strerror or exc})"
            ) from None
    digest = composite_model_digest(hashlib.sha256(model.data).hexdigest(), digests)
    if digest != model.info.sha256:
        raise ModelError(
            f"{source}: the model changed while it was being read for {purpose} "
            f"(its digest was {model.info.sha256[:12]}, its files now give {digest[:12]}); "
            + ("nothing was built" if purpose == "the build" else f"{purpose} did not run"),
            hint="run it again once the model and its external data files stay unchanged",
        )
    return target


def copy_for_reading(path: Path, sha256: str, folder: Path, purpose: str) -> tuple[Path, ModelInfo]:
    """The model at ``path``, read once and copied into ``folder`` (private to one piece of work), for
    TensorRT to read instead of the user's file: the copy holds the bytes whose digest is ``sha256``
    (the digest recorded), else ModelError naming ``purpose``. Returns the copy's .onnx path and the
    model's inputs and outputs, read from the same bytes."""
    model = read_for_build(path, sha256)
    return private_copy(model, folder, purpose), model.info


def check_profiles(loaded: LoadedRecipe, model: ModelInfo) -> None:
    """Profiles must name real inputs with the right rank and fixed dims, and cover dynamic ones."""
    by_name = {t.name: t for t in model.inputs}
    known = ", ".join(by_name) or "none"
    if not loaded.recipe.profiles:
        _check_static(loaded, model)
        return
    for index, profile in enumerate(loaded.recipe.profiles):
        for name, shapes in profile.items():
            where = f"{loaded.where('profiles', index, name)} profiles[{index}].{name}"
            tensor = by_name.get(name)
            if tensor is None:
                raise ModelError(f"{where}: the model has no input {name!r} (inputs: {known})")
            if len(shapes.min) != len(tensor.shape):
                raise ModelError(
                    f"{where}: rank {len(shapes.min)} does not match the model input's rank "
                    f"{len(tensor.shape)} {_fmt(tensor.shape)}"
                )
            for axis, fixed in enumerate(tensor.shape):
                if isinstance(fixed, int) and fixed >= 0:
                    for point in ("min", "opt", "max"):
                        if getattr(shapes, point)[axis] != fixed:
                            raise ModelError(
                                f"{loaded.where('profiles', index, name, point)} profiles[{index}].{name}.{point}: "
                                f"dimension {axis} is fixed to {fixed} in the model {_fmt(tensor.shape)}"
                            )
        for tensor in model.inputs:
            if tensor.is_dynamic and tensor.name not in profile:
                raise ModelError(
                    f"{loaded.where('profiles', index)} profiles[{index}]: "
                    f"dynamic input {tensor.name!r} {_fmt(tensor.shape)} has no shapes",
                    hint="every optimization profile must give min/opt/max for every dynamic input",
                )


def _check_static(loaded: LoadedRecipe, model: ModelInfo) -> None:
    """Without profiles every input must be static; else name the dynamic ones and suggest a profile."""
    dynamic = [t for t in model.inputs if t.is_dynamic]
    if not dynamic:
        return
    described = "; ".join(
        f"{t.name!r} {_fmt(t.shape)} (dynamic dimension{'s' if len(t.dynamic_axes()) > 1 else ''} "
        f"{', '.join(_axis_text(t, axis) for axis in t.dynamic_axes())})"
        for t in dynamic
    )
    noun = "input" if len(dynamic) == 1 else "inputs"
    where = loaded.shown or str(loaded.path)
    recipe_hint = (
        "write a recipe (name, model, profiles) for this model"
        if loaded.path.name.lower().endswith(".onnx")
        else "add to the recipe"
    )
    raise ModelError(
        f"{where}: dynamic {noun} {described} and no optimization profile covers them",
        hint=f"{recipe_hint}, e.g. `profiles: [{suggest_profile(dynamic)}]` "
        "(the 1s stand for the dynamic dimensions: use the sizes you need, min <= opt <= max)",
    )


def _axis_text(tensor: TensorInfo, axis: int) -> str:
    dim = tensor.shape[axis]
    return f"{axis} ({dim})" if isinstance(dim, str) else str(axis)


def suggest_profile(inputs: list[TensorInfo]) -> str:
    """A one-line YAML profile for ``inputs``: fixed dimensions from the model, 1 for dynamic ones."""

    def shape(tensor: TensorInfo) -> str:
        dims = [d if isinstance(d, int) and d >= 0 else 1 for d in tensor.shape]
        return "[" + ", ".join(str(d) for d in dims) + "]"

    entries = [f"{json.dumps(t.name)}: {{min: {shape(t)}, opt: {shape(t)}, max: {shape(t)}}}" for t in inputs]
    return "{" + ", ".join(entries) + "}"


def _fmt(shape: tuple[Dim, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
