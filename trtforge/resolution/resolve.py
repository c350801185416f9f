"""The one way from a recipe file to everything its build is decided by, ending in the build key.

``build``, ``plan`` (the build stopped before building), ``verify RECIPE`` and
``build --reproduce RECIPE`` all call :func:`resolve`; none computes a key another way, so the key
``plan`` reports is the key ``build`` stores and ``verify`` finds. Nothing here imports TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.core.errors import BadInputError, NotFoundError, RecipeError
from trtforge.rules.builder_options import NamedFile
from trtforge.rules.capabilities import check_cpu_build, check_recipe, check_runtime_target, cpu_build_fails
from trtforge.rules.digests import DigestCache
from trtforge.rules.flavors import RTX_DEFAULT_COMPUTE_CAPABILITIES, BackendInfo, find_backend, installed_backend
from trtforge.rules.keys import build_key
from trtforge.rules.onnx_model import model_sha256
from trtforge.rules.recipe import LoadedRecipe, Recipe, load_recipe, with_deny_file
from trtforge.rules.target import BuildTarget, RuntimeTarget, build_target_for, current_gpu

if TYPE_CHECKING:
    from trtforge.store import Store
    from trtforge.store.catalog import Artifact


@dataclass(frozen=True)
class Resolution:
    """A recipe resolved for one build target: the inputs of a build and its key."""

    loaded: LoadedRecipe  # the effective recipe: sidecar deny entries merged, RTX capabilities explicit
    backend: BackendInfo
    target: BuildTarget
    model_sha256: str
    build_key: str
    files: tuple[NamedFile, ...] = ()  # plugin libraries, calibration cache: keyed by their sha256

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    def check_buildable(self, runtime: RuntimeTarget | None = None) -> list[str]:
        """Refuse what the backend cannot build, or a ``runtime`` target (``plan --target``) the
        build cannot serve (exit 2, before any build); return notes to show.

        Separate from :func:`resolve` so that a refused recipe still reports the key it has.
        """
        notes = check_recipe(self.recipe, self.backend)
        if runtime is not None:
            check_runtime_target(self.target.compute_capabilities, self.backend, runtime)
        return notes

    def check_build_here(self) -> None:
        """Refuse, before any work, what a build on this machine cannot complete."""
        check_build_here(self.recipe, self.backend)


def check_build_here(recipe: Recipe, backend: BackendInfo) -> None:
    """Options a CPU-only build fails on (the capability table knows them) are refused when no GPU
    is visible here; `build`, `plan` and `build --reproduce` ask before any work."""
    if cpu_build_fails(recipe, backend) and current_gpu() is None:
        check_cpu_build(recipe, backend)


def load_effective(recipe_path: str | Path, *, name: str | None = None) -> LoadedRecipe:
    """The recipe as validated, with its sidecar deny entries merged in (they count like inline ones).

    An ``.onnx`` path stands for the two-line recipe of that model (``name``, else its stem).
    """
    return with_deny_file(load_recipe(recipe_path, name=name))


def resolve(
    recipe: str | Path | LoadedRecipe,
    *,
    target: RuntimeTarget | None = None,
    digests: DigestCache | None = None,
) -> Resolution:
    """Resolve a recipe for ``target`` (a build on this machine when None).

    A target names the backend flavor and version a build there would use; TensorRT-RTX builds
    get an explicit compute capability list (the recipe's, else the documented default) so the
    key, the builder and the record never depend on a builder's unstated default.
    """
    loaded = recipe if isinstance(recipe, LoadedRecipe) else load_effective(recipe)
    backend = _backend_for(loaded.recipe, target)
    loaded = _with_explicit_capabilities(loaded, backend)
    build_target = build_target_for(backend, loaded.recipe.compatibility.compute_capabilities, target)
    digest = model_sha256(loaded, digests)
    loaded, files = with_file_digests(loaded, digests or DigestCache(None))
    key = build_key(loaded.recipe, digest, build_target)
    return Resolution(loaded, backend, build_target, digest, key, files)


def with_file_digests(loaded: LoadedRecipe, digests: DigestCache) -> tuple[LoadedRecipe, tuple[NamedFile, ...]]:
    """The recipe with the sha256 of every file it names besides the model (plugin libraries, the
    calibration cache) written into its entry, so the key covers their bytes as it covers the model's.

    A missing file, or one that is not its pin, is bad input (exit 2) before any build.
    """
    files = []
    for loc, written, pin in loaded.named_files():
        field = _field_name(loc)
        path = loaded.resolve_path(written, *loc)
        if not path.is_file():
            raise RecipeError(
                f"{loaded.where(*loc)} {field}: {written} not found (looked at {path})",
                hint="paths in a recipe are relative to the recipe file, or absolute, ~ or ${VAR}",
            )
        digest = digests.sha256(path)
        if pin is not None and pin != digest:
            raise RecipeError(
                f"{loaded.where(*loc)} {field}: {written} has sha256 {digest}, but the recipe pins {pin}",
                hint="update the pin if the new file is intended",
            )
        files.append(NamedFile(field, path, digest))
    if not files:
        return loaded, ()
    return loaded.model_copy(update={"recipe": _pinned(loaded.recipe, files)}), tuple(files)


def _field_name(loc: tuple[str | int, ...]) -> str:
    """("plugins", 0, "library") -> "plugins[0].library"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _pinned(recipe: Recipe, files: list[NamedFile]) -> Recipe:
    digests = {f.field: f.sha256 for f in files}
    plugins = [
        plugin.model_copy(update={"sha256": digests[f"plugins[{index}].library"]})
        for index, plugin in enumerate(recipe.plugins)
    ]
    precision = recipe.precision
    if precision.calibration is not None:
        calibration = precision.calibration.model_copy(update={"sha256": digests["precision.calibration.cache"]})
        precision = precision.model_copy(update={"calibration": calibration})
    return recipe.model_copy(update={"plugins": plugins, "precision": precision})


def _backend_for(recipe: Recipe, target: RuntimeTarget | None) -> BackendInfo:
    if target is None:
        return find_backend(recipe.backend)
    if recipe.backend not in ("auto", target.flavor):
        raise BadInputError(f"recipe backend {recipe.backend} does not build for a {target.flavor} target")
    # The CUDA variant: the target's (`--cuda`, `cuda=`), else the installed backend's when it is the
    # same release, else unknown.
    installed = installed_backend(target.flavor)
    cuda = installed.cuda if installed is not None and installed.version == target.trt_version else None
    return BackendInfo(target.flavor, target.trt_version, target.cuda or cuda)


def _with_explicit_capabilities(loaded: LoadedRecipe, backend: BackendInfo) -> LoadedRecipe:
    compat = loaded.recipe.compatibility
    if backend.flavor != "tensorrt_rtx" or compat.compute_capabilities is not None:
        return loaded
    explicit = compat.model_copy(update={"compute_capabilities": list(RTX_DEFAULT_COMPUTE_CAPABILITIES)})
    return loaded.model_copy(update={"recipe": loaded.recipe.model_copy(update={"compatibility": explicit})})


def looks_like_recipe(ref: str) -> bool:
    return ref.lower().endswith((".yaml", ".yml", ".onnx")) or Path(ref).is_file()


def artifact_for(resolution: Resolution, store: Store | None) -> Artifact:
    """The artifact `build` stored for this resolved recipe (its build key), or NotFoundError."""
    hit = None if store is None else store.catalog.find_by_build_key(resolution.build_key, intact=store.plan_intact)
    if hit is None:
        raise NotFoundError(
            f"{resolution.loaded.path.name}: no engine is built for this recipe here "
            f"(build key {resolution.build_key[:12]})",
            hint=f"run `trtforge build {resolution.loaded.shown or resolution.loaded.path}` first",
        )
    return hit
