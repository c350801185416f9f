"""Loading a plan runs native code: host code only for verified, version-compatible artifacts."""

from __future__ import annotations

import pytest

from trtforge.backend.loader import import_backend
from trtforge.backend.run import needs_host_code, runtime_for
from trtforge.flavors import find_backend
from trtforge.store.catalog import Artifact


def _artifact(compatibility: dict[str, object] | None) -> Artifact:
    details = {} if compatibility is None else {"compatibility": compatibility}
    return Artifact(id="ab" * 16, plan_sha256="cd" * 32, details=details)


@pytest.mark.parametrize(
    ("compatibility", "allowed"),
    [(None, False), ({"version_compatible": False}, False), ({"version_compatible": True}, True)],
)
def test_host_code_only_for_version_compatible_artifacts(compatibility, allowed: bool) -> None:
    trt = import_backend(find_backend("tensorrt_rtx"))
    said: list[str] = []
    artifact = _artifact(compatibility)
    runtime = runtime_for(trt, trt.Logger(), artifact, notify=said.append)  # a real IRuntime
    assert needs_host_code(artifact) is allowed
    assert runtime.engine_host_code_allowed is allowed
    assert bool(said) is allowed
    if allowed:
        assert "sha256 matches the catalog" in said[0] and artifact.id[:12] in said[0]


def test_unverified_bytes_never_get_host_code() -> None:
    trt = import_backend(find_backend("tensorrt_rtx"))
    runtime = runtime_for(trt, trt.Logger(), None, notify=pytest.fail)
    assert runtime.engine_host_code_allowed is False
