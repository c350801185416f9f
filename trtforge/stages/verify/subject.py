"""What is verified: an artifact with its recorded recipe, or a recipe resolved to its key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trtforge.core.errors import ModelError, NotFoundError
from trtforge.resolution.resolve import Resolution, artifact_for, looks_like_recipe, resolve
from trtforge.rules.digests import DigestCache
from trtforge.rules.onnx_model import check_profiles, read_model
from trtforge.rules.recipe import VerifySpec
from trtforge.stages.verify.inputs import normalized_profiles
from trtforge.store.catalog import Artifact
from trtforge.store.handle import StoreHandle


@dataclass
class Subject:
    """What is verified: an artifact (with its recorded recipe) or a recipe file not built yet."""

    label: str
    name: str
    model_path: Path
    model_sha256: str
    profiles: list[dict[str, dict[str, list[int]]]]
    spec: VerifySpec
    base_dir: Path  # spec.data is relative to this
    artifact: Artifact | None = None


def subject_from_recipe(resolution: Resolution, artifact: Artifact | None = None) -> Subject:
    loaded = resolution.loaded
    return Subject(
        label=str(loaded.path),
        name=loaded.recipe.name,
        model_path=loaded.model_path,
        model_sha256=resolution.model_sha256,
        profiles=normalized_profiles(loaded.recipe),
        spec=loaded.recipe.verify,
        base_dir=loaded.path.parent,
        artifact=artifact,
    )


def subject_from_artifact(artifact: Artifact, digests: DigestCache | None = None) -> Subject:
    """The artifact's recorded recipe and model; the model file must still hold the same bytes
    (its digest through ``digests``, the store's digest cache, as a build's hit takes it)."""
    model_path = artifact.details.model_path
    if not model_path.is_file():
        raise ModelError(
            f"artifact {artifact.id[:12]}: its model {model_path} is gone",
            hint="verify the recipe instead: trtforge verify RECIPE.yaml",
        )
    if (digests or DigestCache(None)).model_digest(model_path) != artifact.model_sha256:
        raise ModelError(
            f"artifact {artifact.id[:12]}: {model_path} changed since the engine was built",
            hint="rebuild, or restore the model the engine was built from",
        )
    recipe_path = Path(artifact.recipe_path) if artifact.recipe_path else model_path
    return Subject(
        label=artifact.id,
        name=artifact.name,
        model_path=model_path,
        model_sha256=artifact.model_sha256,
        profiles=list(artifact.profiles),
        spec=VerifySpec.model_validate(artifact.recipe.get("verify", {}), strict=False),
        base_dir=recipe_path.parent,
        artifact=artifact,
    )


def resolve_subject(ref: str, store: StoreHandle, *, need_artifact: bool) -> Subject:
    """An artifact id (prefix) or a recipe path; a recipe maps to its built artifact via the build key.

    The key comes from :func:`trtforge.resolution.resolve.resolve`, the same path `build` and `plan` take.
    """
    opened = store.existing()
    if not looks_like_recipe(ref):
        if opened is None:
            raise NotFoundError(f"no artifact with id {ref} (the store is empty)")
        return subject_from_artifact(opened.catalog.get_artifact(ref), store.digests())
    resolution = resolve(ref, digests=store.digests())
    artifact = None
    if need_artifact:
        artifact = artifact_for(resolution, opened)
    else:
        check_profiles(resolution.loaded, read_model(resolution.loaded.model_path, resolution.model_sha256))
    return subject_from_recipe(resolution, artifact)
