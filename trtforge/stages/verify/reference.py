"""The reference side: ONNX Runtime outputs, stored once per model digest, inputs and shapes."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.rules.keys import canonical_json, sha256_text
from trtforge.stages.verify.inputs import ShapePoint
from trtforge.stages.verify.subject import Subject
from trtforge.store import Store
from trtforge.store.catalog import Blob, ReferenceOutput

if TYPE_CHECKING:
    import numpy as np

REFERENCE_NAME = "onnxrt-reference"
REFERENCE_KEY_SCHEMA = 1


def _feed_digest(feed: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {
        name: {
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "sha256": hashlib.sha256(memoryview(array.tobytes())).hexdigest(),
        }
        for name, array in sorted(feed.items())
    }


def reference_key(model_digest: str, feed: Mapping[str, np.ndarray], *, per_layer: bool) -> str:
    """Stored reference outputs are found by model sha256, input bytes and shapes."""
    return sha256_text(
        canonical_json(
            {
                "schema": REFERENCE_KEY_SCHEMA,
                "model_sha256": model_digest,
                "outputs": "all-layers" if per_layer else "model",
                "inputs": _feed_digest(feed),
            }
        )
    )


def _pack(outputs: Mapping[str, np.ndarray]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    arrays = {f"o{i}": np.asarray(a) for i, a in enumerate(outputs.values())}
    np.savez(buffer, names=np.array(list(outputs), dtype=np.str_), **arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        names = [str(n) for n in archive["names"]]
        return {name: archive[f"o{i}"] for i, name in enumerate(names)}


class Reference:
    """ONNX Runtime outputs for the subject's model; computed once per input set, kept in the store."""

    def __init__(self, subject: Subject, store: Store | None, *, per_layer: bool) -> None:
        self.subject = subject
        self.store = store
        self.per_layer = per_layer
        self._stack = ExitStack()
        self._runner: Any = None

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def outputs(self, feed: Mapping[str, np.ndarray], point: ShapePoint) -> tuple[dict[str, np.ndarray], bool]:
        """(outputs, reused): reused is True when they came from the store."""
        key = reference_key(self.subject.model_sha256, feed, per_layer=self.per_layer)
        if self.store is not None and (row := self.store.catalog.find_reference(key)) is not None:
            if self.store.blobs.exists(row.blob_sha256):
                return _unpack(self.store.blobs.read_verified(row.blob_sha256)), True
        outputs = self._run(feed)
        if self.store is not None:
            with self.store.recording_blobs():  # from storing the blob until its row commits, gc waits
                self._store(key, outputs, feed, point)
        return outputs, False

    def _store(
        self, key: str, outputs: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray], point: ShapePoint
    ) -> None:
        from trtforge.backend.compare import onnxruntime_version

        assert self.store is not None
        blob = self.store.blobs.put_bytes(_pack(outputs))
        row = ReferenceOutput(
            key=key,
            model_sha256=self.subject.model_sha256,
            blob_sha256=blob.sha256,
            details={
                "shapes": point.shape_map,
                "per_layer": self.per_layer,
                "onnxruntime": onnxruntime_version(),
                "inputs": _feed_digest(feed),
            },
        )
        self.store.catalog.add_reference(row, Blob(sha256=blob.sha256, size=blob.size, kind="reference"))

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from trtforge.backend.compare import onnxrt_runner, quiet

        with quiet():
            if self._runner is None:
                runner = onnxrt_runner(self.subject.model_path, name=REFERENCE_NAME, mark_all=self.per_layer)
                self._runner = self._stack.enter_context(runner)
            return _as_tensors(self._runner.infer(dict(feed)))


def _as_tensors(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Outputs as arrays: a sequence output becomes ``name[0]``, ``name[1]``, ...; an empty optional
    output is left out. (ONNX Runtime runs such models; TensorRT builds none of them.)"""
    import numpy as np

    tensors: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if isinstance(value, (list, tuple)):
            tensors.update({f"{name}[{i}]": np.array(item) for i, item in enumerate(value)})
        elif value is not None:
            tensors[name] = np.array(value)  # a copy, detached from the runner's buffers
    return tensors


class OnnxModelCandidate:
    """An ONNX model under ONNX Runtime in the candidate seat (profiles do not apply to it).

    Checks a changed model (e.g. new weights) against the subject's, and lets the verifier's
    logic run for real on machines without a GPU.
    """

    def __init__(self, model_path: Path, *, name: str = "onnxrt-candidate", per_layer: bool = False) -> None:
        self.model_path = model_path
        self.name = name
        self.per_layer = per_layer

    def runner(self, profile: int) -> AbstractContextManager[Any]:
        from trtforge.backend.compare import onnxrt_runner

        return onnxrt_runner(self.model_path, name=self.name, mark_all=self.per_layer)
