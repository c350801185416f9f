"""Shape points of every profile and the input feeds for them (generated, seeded, or the user's)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BadInputError, ModelError
from trtforge.rules.onnx_model import TensorInfo
from trtforge.rules.recipe import InputShapes, Recipe, VerifySpec, shape_point_fits

if TYPE_CHECKING:
    import numpy as np


# ONNX element types the input generator can make (name as trtforge.rules.onnx_model reports it).
_NUMPY_DTYPES = {
    "float": "float32",
    "float16": "float16",
    "double": "float64",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}


@dataclass(frozen=True)
class ShapePoint:
    profile: int
    label: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def shape_map(self) -> dict[str, list[int]]:
        return {name: list(shape) for name, shape in self.shapes}


@dataclass
class Case:
    """One shape point in one profile, with its input feed."""

    point: ShapePoint
    feed: dict[str, np.ndarray]


def normalized_profiles(recipe: Recipe) -> list[dict[str, dict[str, list[int]]]]:
    """Profiles as plain data, the form artifacts record them in."""
    return [{name: shapes.model_dump() for name, shapes in profile.items()} for profile in recipe.profiles]


def _as_point_profile(profile: Mapping[str, Mapping[str, list[int]]]) -> dict[str, InputShapes]:
    return {name: InputShapes.model_validate(shapes) for name, shapes in profile.items()}


def shape_points(profiles: Sequence[Mapping[str, Mapping[str, list[int]]]], spec: VerifySpec) -> list[ShapePoint]:
    """Every (profile, point) pair the spec names; explicit points go to each profile containing them."""
    points = []
    for index, profile in enumerate(profiles):
        for number, point in enumerate(spec.shapes):
            if isinstance(point, str):
                shapes = {name: list(bounds[point]) for name, bounds in profile.items()}
                label = point
            elif shape_point_fits(point, _as_point_profile(profile)):
                shapes, label = point, f"shapes[{number}]"
            else:
                continue
            points.append(ShapePoint(index, label, tuple((n, tuple(s)) for n, s in sorted(shapes.items()))))
    return points


def _numpy_dtype(tensor: TensorInfo) -> Any:
    import numpy as np

    name = _NUMPY_DTYPES.get(tensor.dtype)
    if name is None:
        raise ModelError(f"input {tensor.name!r} has type {tensor.dtype}, which verification cannot generate")
    return np.dtype(name)


def _full_shape(tensor: TensorInfo, point: ShapePoint) -> tuple[int, ...]:
    shapes = dict(point.shapes)
    if tensor.name in shapes:
        return shapes[tensor.name]
    if tensor.is_dynamic:
        raise ModelError(f"input {tensor.name!r} {list(tensor.shape)} is dynamic and has no shape in the profile")
    return tuple(int(d) for d in tensor.shape)  # type: ignore[arg-type]


def generate_feed(inputs: Sequence[TensorInfo], point: ShapePoint, spec: VerifySpec) -> dict[str, np.ndarray]:
    """Seeded inputs for one shape point. The stream depends on seed, input name and shape only,
    so the same shapes in two profiles get the same data (and share stored reference outputs)."""
    import numpy as np

    feed = {}
    for tensor in inputs:
        shape = _full_shape(tensor, point)
        dtype = _numpy_dtype(tensor)
        rng = np.random.default_rng([spec.seed, zlib.crc32(tensor.name.encode()), *shape])
        data = spec.inputs.get(tensor.name)
        low, high = (data.low, data.high) if data is not None else (0.0, 1.0)
        if dtype == np.bool_:
            values = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            values = rng.integers(int(np.ceil(low)), int(np.floor(high)), size=shape, endpoint=True)
        elif data is not None and data.distribution == "normal":
            values = rng.normal(data.mean, data.std, size=shape)
        else:
            values = rng.uniform(low, high, size=shape)
        feed[tensor.name] = np.ascontiguousarray(values.astype(dtype))
    return feed


def load_user_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """User inputs: an ``.npz`` (one feed) or polygraphy inputs JSON (a list of feeds)."""
    import numpy as np

    if not path.is_file():
        raise BadInputError(f"input data file {path} not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return [{name: archive[name] for name in archive.files}]
        if path.suffix == ".json":
            from trtforge.backend.compare import load_inputs_json

            return load_inputs_json(path)
    except Exception as exc:  # numpy/zipfile/json raise many types for bad files
        expected = "an .npz archive of arrays" if path.suffix == ".npz" else "polygraphy inputs JSON"
        detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"{path}: not readable as {expected} ({detail})",
            hint="write inputs with numpy.savez (arrays only, no pickled objects) or polygraphy's --save-inputs",
        ) from None
    raise BadInputError(f"{path}: input data must be .npz or polygraphy inputs .json")


def user_cases(
    feeds: Sequence[Mapping[str, np.ndarray]],
    inputs: Sequence[TensorInfo],
    profiles: Sequence[Mapping[str, Mapping[str, list[int]]]],
    source: Path,
) -> list[Case]:
    """Each user feed, checked against the model's inputs, in every profile its shapes fit."""
    names = {t.name for t in inputs}
    cases = []
    for number, feed in enumerate(feeds):
        where = f"{source.name} feed {number}"
        missing, unknown = sorted(names - set(feed)), sorted(set(feed) - names)
        if missing:
            raise BadInputError(f"{where}: no data for input(s) {', '.join(missing)}")
        if unknown:
            raise BadInputError(f"{where}: the model has no input(s) {', '.join(unknown)}")
        placed = False
        for index, profile in enumerate(profiles):
            dynamic = {name: list(feed[name].shape) for name in profile}
            if shape_point_fits(dynamic, _as_point_profile(profile)):
                shapes = tuple((n, tuple(s)) for n, s in sorted(dynamic.items()))
                point = ShapePoint(index, f"data[{number}]", shapes)
                cases.append(Case(point, {t.name: feed[t.name] for t in inputs}))
                placed = True
        if not placed:
            shown = ", ".join(f"{n}: {list(feed[n].shape)}" for n in sorted(feed))
            raise BadInputError(f"{where}: shapes {{{shown}}} are inside no optimization profile")
    return cases
