"""Every compatibility rule and the ranking, on explicit targets, one case per row."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from trtforge.core.errors import TargetError
from trtforge.rules.compatibility import Candidate, Envelope, ModelChoice, first_failing_rule, rank
from trtforge.rules.record import read_details
from trtforge.rules.target import RuntimeTarget, explicit_target

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def trt(
    version: str = "10.13.3",
    ccs: tuple[str, ...] = ("8.6",),
    gpu: str | None = "NVIDIA A10G",
    *,
    hardware: str = "none",
    vc: bool = False,
    lean_excluded: bool = False,
    ident: str = "t",
    minutes: int = 0,
    verified: dict[str, str] | None = None,
) -> Candidate:
    return Candidate(
        artifact_id=ident,
        name="detector",
        flavor="tensorrt",
        trt_version=version,
        compute_capabilities=ccs,
        plan_sha256="0" * 64,
        created_at=T0 + timedelta(minutes=minutes),
        gpu_name=gpu,
        envelope=Envelope(hardware, vc, lean_excluded),
        verified_on=verified or {},
    )


def rtx(version: str = "1.7.1.116", ccs: tuple[str, ...] = (), *, ident: str = "r", minutes: int = 0) -> Candidate:
    return Candidate(
        artifact_id=ident,
        name="detector",
        flavor="tensorrt_rtx",
        trt_version=version,
        compute_capabilities=ccs,
        plan_sha256="0" * 64,
        created_at=T0 + timedelta(minutes=minutes),
    )


# A GPU of each compute capability, for targets that name one (the GPU table refuses a --cc that
# disagrees with the GPU's).
GPU_OF_CC = {"7.5": "Tesla T4", "8.0": "NVIDIA A100-SXM4-80GB", "8.6": "NVIDIA A10G", "8.9": "NVIDIA L4",
             "9.0": "NVIDIA H100 80GB HBM3", "12.0": "NVIDIA GeForce RTX 5090"}  # fmt: skip
OF_CC = "a GPU of that compute capability"


def target(cc: str = "8.6", version: str = "10.13.3", gpu: str | None = OF_CC, flavor: str = "tensorrt"):
    return explicit_target(gpu=GPU_OF_CC[cc] if gpu == OF_CC else gpu, cc=cc, trt=version, flavor=flavor)


def rule_of(candidate: Candidate, tgt: RuntimeTarget) -> str | None:
    failing = first_failing_rule(candidate, tgt)
    return failing[0] if failing else None


@pytest.mark.parametrize(
    ("candidate", "tgt", "rule"),
    [
        # flavor
        (trt(), target(flavor="tensorrt_rtx", version="1.7.1"), "flavor"),
        (rtx(), target(version="1.7.1"), "flavor"),
        # TensorRT-RTX: same release only
        (rtx("1.7.1.116"), target(version="1.7.1", flavor="tensorrt_rtx"), None),
        (rtx("1.7.1.116"), target(version="1.7.1.116", flavor="tensorrt_rtx"), None),
        (rtx("1.7.1.116"), target(version="1.7.2", flavor="tensorrt_rtx"), "rtx_version"),
        (rtx("1.6.0"), target(version="1.7.1", flavor="tensorrt_rtx"), "rtx_version"),
        # TensorRT-RTX: default compute capabilities 8.0, 8.6, 8.9, 12.x; not 7.5 unless asked; never 9.0
        (rtx(), target("8.0", "1.7.1", flavor="tensorrt_rtx"), None),
        (rtx(), target("8.6", "1.7.1", flavor="tensorrt_rtx"), None),
        (rtx(), target("8.9", "1.7.1", flavor="tensorrt_rtx"), None),
        (rtx(), target("12.0", "1.7.1", flavor="tensorrt_rtx"), None),
        (rtx(), target("7.5", "1.7.1", flavor="tensorrt_rtx"), "rtx_compute_capability"),
        (rtx(), target("9.0", "1.7.1", flavor="tensorrt_rtx"), "rtx_compute_capability"),
        (rtx(ccs=("7.5",)), target("7.5", "1.7.1", flavor="tensorrt_rtx"), None),
        (rtx(ccs=("7.5",)), target("8.6", "1.7.1", flavor="tensorrt_rtx"), "rtx_compute_capability"),
        (rtx(ccs=("8.6", "8.9")), target("12.0", "1.7.1", flavor="tensorrt_rtx"), "rtx_compute_capability"),
        (rtx(ccs=("9.0",)), target("9.0", "1.7.1", flavor="tensorrt_rtx"), "rtx_compute_capability"),
        # TensorRT versions: exact by default
        (trt("10.13.3.9"), target(version="10.13.3"), None),
        (trt("10.13.3"), target(version="10.13.2"), "trt_version"),
        (trt("10.13.3.9"), target(version="10.13.3.7"), "trt_version"),
        (trt("10.13.3"), target(version="10.13"), "trt_version"),
        (trt("10.13.0.35"), target(version="10.13"), None),
        (trt("10.13.3"), target(version="10.14.1"), "trt_version"),
        # version compatible: same major, runtime not older, both >= 8.6
        (trt("10.8.0", vc=True), target(version="10.13.3"), None),
        (trt("10.13.3", vc=True), target(version="10.8.0"), "trt_version"),
        (trt("10.13.3", vc=True), target(version="11.0.0"), "trt_version"),
        (trt("8.6.1", vc=True), target(version="8.6.3"), None),
        (trt("8.5.3", vc=True), target(version="8.6.1"), "trt_version"),
        # lean runtime excluded: only the build's own runtime version can load it
        (trt("10.8.0", vc=True, lean_excluded=True), target(version="10.8.0"), None),
        (trt("10.8.0", vc=True, lean_excluded=True), target(version="10.13.3"), "lean_runtime"),
        (trt("10.8.0", vc=False, lean_excluded=True), target(version="10.13.3"), "trt_version"),
        # hardware compatibility levels
        (trt(ccs=("8.6",)), target("8.6", gpu="NVIDIA RTX A6000"), None),
        (trt(ccs=("8.6",)), target("8.9"), "hardware"),
        (trt(ccs=("8.6",), hardware="same_compute_capability"), target("8.6", gpu="NVIDIA A40"), None),
        (trt(ccs=("8.6",), hardware="same_compute_capability"), target("8.0"), "hardware"),
        (trt(ccs=("8.6",), hardware="ampere_plus"), target("8.0", gpu="NVIDIA A100-SXM4-80GB"), None),
        (trt(ccs=("8.6",), hardware="ampere_plus"), target("9.0", gpu="NVIDIA H100"), None),
        (trt(ccs=("8.6",), hardware="ampere_plus"), target("12.0"), None),
        (trt(ccs=("8.6",), hardware="ampere_plus"), target("7.5", gpu="Tesla T4"), "hardware"),
        (trt(ccs=()), target("8.6"), "hardware"),
        # hardware + version together: version is judged first
        (trt("10.8.0", ccs=("8.0",), hardware="ampere_plus", vc=True), target("8.9", "10.13.3"), None),
        (trt("10.8.0", ccs=("8.0",), hardware="ampere_plus", vc=True), target("7.5", "10.13.3"), "hardware"),
        (trt("10.8.0", ccs=("8.0",), hardware="ampere_plus"), target("7.5", "10.13.3"), "trt_version"),
        # verification on this GPU model
        (trt(verified={"NVIDIA A10G": "failed"}), target(), "verification"),
        (trt(verified={"NVIDIA A10G": "failed"}), target(gpu="NVIDIA RTX A6000"), None),
        (trt(verified={"NVIDIA A10G": "passed"}), target(), None),
    ],
)
def test_rule(candidate: Candidate, tgt: RuntimeTarget, rule: str | None) -> None:
    assert rule_of(candidate, tgt) == rule


def test_rejection_carries_one_rule_and_a_reason() -> None:
    ranking = rank([trt("10.13.3", vc=True)], target(version="10.8.0"))
    [rejection] = ranking.rejected
    assert rejection.rule == "trt_version"
    assert "newer runtimes only" in rejection.reason and "10.13.3" in rejection.reason
    assert not ranking and ranking.best is None


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (None, Envelope("none", False, False)),
        ({}, Envelope("none", False, False)),
        ({"compatibility": None}, Envelope("none", False, False)),
        ({"compatibility": "garbage"}, Envelope("none", False, False)),
        ({"compatibility": {"hardware": "everything", "version_compatible": "yes"}}, Envelope("none", False, False)),
        (
            {"compatibility": {"hardware": "ampere_plus", "version_compatible": True, "exclude_lean_runtime": True}},
            Envelope("ampere_plus", True, True),
        ),
        ({"compatibility": {"hardware": "same_compute_capability"}}, Envelope("same_compute_capability", False, False)),
    ],
)
def test_envelope_defaults_are_the_most_restrictive(details: Any, expected: Envelope) -> None:
    """Rows of any age, or damaged ones, read through the record's one (tolerant) reader."""
    assert Envelope.from_details(read_details(details)) == expected


def test_ranking_order() -> None:
    """verified here > exact version > same GPU model > narrower envelope > newer."""
    candidates = [
        trt("10.8.0", vc=True, ident="vc-old-runtime", minutes=50),
        trt("10.13.3", gpu="NVIDIA RTX A6000", ident="other-gpu", minutes=40),
        trt("10.13.3", hardware="ampere_plus", ident="wide", minutes=30),
        trt("10.13.3", ident="exact-old", minutes=10),
        trt("10.13.3", ident="exact-new", minutes=20),
        trt("10.8.0", vc=True, ident="verified", minutes=0, verified={"NVIDIA A10G": "passed"}),
    ]
    ranking = rank(candidates, target())
    assert [m.candidate.artifact_id for m in ranking.matches] == [
        "verified",
        "exact-new",
        "exact-old",
        "wide",
        "other-gpu",
        "vc-old-runtime",
    ]
    assert ranking.rejected == []
    other = next(m for m in ranking.matches if m.candidate.artifact_id == "other-gpu")
    assert any("may run slower" in note for note in other.notes)
    vc = next(m for m in ranking.matches if m.candidate.artifact_id == "vc-old-runtime")
    assert any("engine_host_code_allowed" in note for note in vc.notes)


def test_rtx_ranking_prefers_the_narrower_list_then_newer() -> None:
    candidates = [rtx(ident="default", minutes=30), rtx(ccs=("8.9",), ident="ada-only"), rtx(ident="older")]
    ranking = rank(candidates, target("8.9", "1.7.1", flavor="tensorrt_rtx"))
    assert [m.candidate.artifact_id for m in ranking.matches] == ["ada-only", "default", "older"]


def test_verified_only_rejects_unverified_and_needs_a_gpu_model() -> None:
    candidates = [trt(ident="plain"), trt(ident="ok", verified={"NVIDIA A10G": "passed"})]
    ranking = rank(candidates, target(), verified_only=True)
    assert [m.candidate.artifact_id for m in ranking.matches] == ["ok"]
    assert [(r.candidate.artifact_id, r.rule) for r in ranking.rejected] == [("plain", "verified_only")]
    no_model = rank(candidates, target(gpu=None), verified_only=True)
    assert no_model.matches == [] and {r.rule for r in no_model.rejected} == {"verified_only"}
    assert "no GPU model given" in no_model.rejected[0].reason


def _of_model(candidate: Candidate, model: str, recipe: str = "r") -> Candidate:
    """Of that model digest, built from a recipe whose model-defining fields (not its target fields) are ``recipe``."""
    return replace(candidate, model_sha256=model, recipe_fingerprint=recipe, recipe_variant=recipe)


def test_a_chosen_model_outranks_verification_of_another() -> None:
    """Verified-here ranks first only within the chosen model; the others get rule other_model."""
    old = _of_model(trt(ident="old-verified", verified={"NVIDIA A10G": "passed"}), "old")
    new = _of_model(trt(ident="new", minutes=10), "new")
    recipe_changed = _of_model(trt(ident="new-recipe", minutes=5), "new", "r2")
    choice = ModelChoice("new", "r", "the newest build", "r")
    ranking = rank([old, new, recipe_changed], target(), model=choice)
    assert [m.candidate.artifact_id for m in ranking.matches] == ["new"]
    assert [(r.candidate.artifact_id, r.rule) for r in ranking.rejected] == [
        ("old-verified", "other_model"),
        ("new-recipe", "other_model"),
    ]
    assert "the newest build" in ranking.rejected[0].reason and ranking.model == choice
    assert ranking.warnings == ("the candidates span 3 models; only the chosen one is considered: "
                                "model sha256 new with recipe r",)  # fmt: skip
    anything = rank([old, new], target())
    assert [m.candidate.artifact_id for m in anything.matches] == ["old-verified", "new"]
    assert "not of the newest" in anything.warnings[0]
    one_model = rank([new, _of_model(trt(ident="same"), "new")], target(), model=choice)
    assert one_model.warnings == () and len(one_model.matches) == 2


def test_no_engine_of_the_chosen_model_names_the_model_that_has_one() -> None:
    old = _of_model(trt(ident="old"), "o" * 64)
    new = _of_model(trt(ccs=("8.9",), ident="new", minutes=10), "n" * 64)
    choices = {sha: ModelChoice(sha, "r", "the newest build", "r") for sha in ("n" * 64, "o" * 64)}
    ranking = rank([old, new], target(), model=choices["n" * 64], reach=choices.get)
    assert ranking.matches == []
    assert f"--model-sha256 {'o' * 64} or --any-model" in ranking.warnings[0]
    # Where --model-sha256 would choose another recipe of that digest, only --any-model reaches the engine.
    elsewhere = {"o" * 64: ModelChoice("o" * 64, "r2", "x", "r2")}
    unreachable = rank([old, new], target(), model=choices["n" * 64], reach=elsewhere.get)
    assert unreachable.warnings[0].endswith("(--any-model)")


def test_weightless_plans_need_allow_weightless_and_carry_a_note() -> None:
    stripped = replace(trt(ident="stripped", minutes=10), weightless=True)
    full = trt(ident="full")
    ranking = rank([stripped, full], target())
    assert [m.candidate.artifact_id for m in ranking.matches] == ["full"]
    assert [(r.candidate.artifact_id, r.rule) for r in ranking.rejected] == [("stripped", "weightless")]
    allowed = rank([stripped, full], target(), allow_weightless=True)
    assert [m.candidate.artifact_id for m in allowed.matches] == ["stripped", "full"]
    assert any("refit" in note for note in allowed.matches[0].notes)
    incompatible = rank([replace(stripped, compute_capabilities=("7.5",))], target())
    assert [r.rule for r in incompatible.rejected] == ["hardware"]  # the compatibility rule is named first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu": "x", "cc": "86", "trt": "10.1"}, "compute capability '86'"),
        ({"gpu": "x", "cc": "8.6.1", "trt": "10.1"}, "compute capability"),
        ({"gpu": "x", "cc": "8.6", "trt": "ten"}, "TensorRT version 'ten'"),
        ({"gpu": "x", "cc": "8.6", "trt": "10"}, "TensorRT version"),
        ({"gpu": "x", "cc": None, "trt": "10.1"}, "'x' is not a GPU trtforge knows"),
        ({"gpu": None, "cc": None, "trt": "10.1"}, "needs --cc, or a --gpu trtforge knows"),
        ({"gpu": "x", "cc": "8.6", "trt": "10.1", "flavor": "onnx"}, "flavor 'onnx'"),
        ({"gpu": "", "cc": "8.6", "trt": "10.1"}, "GPU name"),
        ({"gpu": "a\nb", "cc": "8.6", "trt": "10.1"}, "GPU name"),
    ],
)
def test_malformed_targets(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TargetError, match=message) as info:
        explicit_target(**kwargs)
    assert info.value.exit_code == 2 and "--cc" in (info.value.hint or "")
