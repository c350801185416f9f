"""Loading a plan runs native code: host code only for verified, version-compatible artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtforge.backend.loader import import_backend
from trtforge.backend.run import runtime_for
from trtforge.rules.flavors import find_backend
from trtforge.store import open_store
from trtforge.store.catalog import Artifact
from trtforge.store.plans import needs_host_code, plan_for_loading


def _artifact(compatibility: dict[str, object] | None, plan_sha256: str = "cd" * 32, size: int = 0) -> Artifact:
    details = {} if compatibility is None else {"compatibility": compatibility}
    return Artifact(id="ab" * 16, plan_sha256=plan_sha256, plan_size=size, details=details, recipe={})


@pytest.mark.parametrize(
    ("compatibility", "allowed"),
    [(None, False), ({"version_compatible": False}, False), ({"version_compatible": True}, True)],
)
def test_host_code_only_for_version_compatible_artifacts(compatibility, allowed: bool, tmp_path: Path) -> None:
    trt = import_backend(find_backend("tensorrt_rtx"))
    store = open_store(tmp_path / "store")
    try:
        blob = store.blobs.put_bytes(b"plan bytes")
        artifact = _artifact(compatibility, blob.sha256, blob.size)
        verified = plan_for_loading(store, artifact)  # the hash check comes first
    finally:
        store.close()
    said: list[str] = []
    allow, why = verified.allow_host_code, verified.why
    runtime = runtime_for(trt, trt.Logger(), allow_host_code=allow, why=why, notify=said.append)
    assert needs_host_code(artifact) is allowed is verified.allow_host_code
    assert runtime.engine_host_code_allowed is allowed  # a real IRuntime
    assert bool(said) is allowed
    if allowed:
        assert "sha256 matches the catalog" in said[0] and artifact.id[:12] in said[0]


def test_unverified_bytes_never_get_host_code() -> None:
    trt = import_backend(find_backend("tensorrt_rtx"))
    runtime = runtime_for(trt, trt.Logger(), notify=pytest.fail)
    assert runtime.engine_host_code_allowed is False
