"""Canonical JSON and the hashes built from it: recipe fingerprint and BuildKey.

Keys hash validated data in a canonical form (sorted keys, fixed separators), so YAML key
order and free-text fields never change them, while anything that changes the engine does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: hashing files must stay import-light (store, lookup)
    from trtforge.rules.recipe import Recipe
    from trtforge.rules.target import BuildTarget

# Bump when the meaning of a key changes, so old artifacts are not mistaken for new ones.
# 2: the model digest covers external data files; the target names OS, CPU architecture and
#    the CUDA variant of the backend package (artifacts built before are cache misses).
KEY_SCHEMA = 2
# First line of the text a composite model digest hashes (docs/cache-hits-and-keys.md: "Model digest").
MODEL_DIGEST_SCHEME = "trtforge-model-digest/1"
_CHUNK = 1 << 20


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_stream(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def composite_model_digest(onnx_sha256: str, external: Mapping[str, str]) -> str:
    """The model digest: the .onnx file's sha256, or with external data a hash over all files.

    With external data files ({location as written in the model: sha256 of that file}) it is the
    sha256 of the UTF-8 text ``trtforge-model-digest/1\n<onnx sha256>\n`` followed by one line
    ``<file sha256>  <location>\n`` per file, sorted by location: the names and bytes of every
    file TensorRT reads, computable with ``sha256sum`` (see docs/cache-hits-and-keys.md, "Model digest").
    """
    if not external:
        return onnx_sha256
    lines = [MODEL_DIGEST_SCHEME, onnx_sha256, *(f"{external[loc]}  {loc}" for loc in sorted(external))]
    return sha256_text("".join(line + "\n" for line in lines))


# Recipe fields that choose the target an engine is built for, not the model it computes: recipes
# of one name and one model differing only here are one model with an engine per target.
RECIPE_TARGET_FIELDS = ("backend", "compatibility")
# Fields that change nothing an engine computes, nor where it runs (recipe.build_fields drops them too).
_NOT_MODEL_FIELDS = ("name", "description", "verify", "model")
# The recipe fingerprint of an adopted plan (no recipe: nothing to fingerprint).
ADOPTED_FINGERPRINT = "0" * 64


def recipe_variant(recipe: Mapping[str, Any]) -> str | None:
    """What, beside the model digest, makes a build another model: the recorded recipe (an
    artifact's ``recipe`` column) without its target fields and the fields that change nothing
    (name, description, verification, where the model file is). None for no recipe (an adopted
    plan), which belongs to whichever recipe built its model.

    Two recipes of a name that differ only in ``backend`` or ``compatibility`` give the same
    variant; another precision, other profiles or other build options give another.
    """
    if not recipe:
        return None
    fields = {k: v for k, v in recipe.items() if k not in (*RECIPE_TARGET_FIELDS, *_NOT_MODEL_FIELDS)}
    return sha256_text(canonical_json(fields))


def recipe_fingerprint(recipe: Recipe) -> str:
    """Hash of the build-relevant recipe fields alone."""
    return sha256_text(canonical_json(recipe.build_fields()))


def build_key(recipe: Recipe, model_sha256: str, target: BuildTarget) -> str:
    """Same key => same engine: recipe fields + model bytes + backend flavor/version + target."""
    return build_key_from(recipe_fingerprint(recipe), model_sha256, target.key_fields())


def build_key_from(fingerprint: str, model_sha256: str, target_fields: Mapping[str, Any]) -> str:
    """The build key from its parts (a remembered resolution has no Recipe object: resolution/resolved_cache)."""
    return sha256_text(
        canonical_json(
            {"key_schema": KEY_SCHEMA, "recipe": fingerprint, "model_sha256": model_sha256, "target": target_fields}
        )
    )


def refit_key(parent_build_key: str, weights_sha256: str) -> str:
    """A refitted engine's key: never equal to a recipe build's (another shape of input)."""
    return sha256_text(canonical_json({"refit_of": parent_build_key, "weights_sha256": weights_sha256}))


def adopted_key(plan_sha256: str, model_sha256: str, target: dict[str, Any], compatibility: dict[str, Any]) -> str:
    """An adopted plan's key: the plan, its model, the target and envelope it was adopted for."""
    return sha256_text(
        canonical_json(
            {"adopted_plan": plan_sha256, "model_sha256": model_sha256, "target": target, "compat": compatibility}
        )
    )


def recorded_build_key(recipe: Mapping[str, Any], model_sha256: str, target: Mapping[str, Any]) -> str:
    """The build key a stored record's own fields give: its recipe, model digest and target.

    ``target`` is the record's ``details.target`` (``BuildTarget.key_fields()``). A record whose
    fields do not give its key was not built from what it says. Raises ValueError (pydantic's
    ValidationError is one), KeyError or TypeError when the fields are malformed.
    """
    from trtforge.rules.recipe import Recipe
    from trtforge.rules.target import BuildTarget

    return build_key(Recipe.model_validate(recipe), model_sha256, BuildTarget.from_key_fields(dict(target)))
