"""`trtforge coverage`: for every model (a recipe, or a name) and every fleet target, is there an
engine, is it verified on that GPU model, is it weight-stripped, and what is missing.

An engine covers a target when lookup returns it for that target: this stage asks lookup's own
ranking (:func:`trtforge.stages.lookup.rank_in_store`), never a rule of its own. A recipe means its
model (the model digest and the recipe without its target fields: recipes of one name that differ
only in ``backend``/``compatibility`` are one model); a name means its newest model, as lookup
does; no argument means every name in the store. Imports neither TensorRT nor (on a local SQLite
catalog) SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trtforge.core.errors import BadInputError, NoCompatibleEngineError, NotFoundError, TargetError
from trtforge.resolution.batch import UnmatchedPattern, expand_recipes
from trtforge.resolution.targets import TargetOptions, many_targets
from trtforge.rules.compatibility import ModelChoice
from trtforge.rules.target import TargetRequest
from trtforge.stages.lookup import covering_engine, no_engine_error, resolve_in_store
from trtforge.store import lookup_sql, open_for_lookup

if TYPE_CHECKING:
    from trtforge.stages.lookup import LookupStore

Status = Literal["covered", "unverified", "missing"]
_RECIPE_SUFFIXES = (".yaml", ".yml", ".onnx")


@dataclass(frozen=True)
class Subject:
    """What coverage is asked about: a name (its newest model), or a recipe's model (``recipes``:
    the files that define it; recipes differing only in target fields are one model)."""

    name: str
    recipes: tuple[str, ...] = ()
    model: ModelChoice | None = None

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        model = self.model
        return (self.name, model.model_sha256 if model else None, model.recipe_variant if model else None)


def _merged(subjects: list[Subject]) -> list[Subject]:
    """One subject per model, in order of first mention, with every recipe file that defines it."""
    merged: dict[tuple[str, str | None, str | None], Subject] = {}
    for subject in subjects:
        seen = merged.get(subject.key)
        recipes = (*seen.recipes, *subject.recipes) if seen is not None else subject.recipes
        merged[subject.key] = Subject(subject.name, tuple(dict.fromkeys(recipes)), subject.model)
    return list(merged.values())


@dataclass
class CoverageItem:
    """One model x one target; ``as_json`` is one item of `coverage --json`."""

    name: str
    recipes: list[str]
    target: dict[str, Any]
    status: Status
    model_sha256: str | None = None
    artifact_id: str | None = None
    verified: bool = False
    verification: str | None = None  # the newest counted verification on the target's GPU model
    weightless: bool = False
    missing: list[str] = field(default_factory=list)  # "engine", "verification"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def coverage(
    refs: Sequence[str],
    targets: TargetOptions | Sequence[TargetRequest] | None,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    engines_only: bool = False,
) -> list[CoverageItem]:
    """Every subject x every target, in order. Targets and recipes are checked before the store is
    read; ``engines_only`` leaves verifications out of what counts as missing."""
    requests = many_targets(targets)
    if not requests:
        raise TargetError(
            "coverage needs the targets to check: --fleet FILE, --target SPEC (repeat) or the flags for one",
            hint="e.g. trtforge coverage --fleet fleet.yaml",
        )
    subjects = _merged([subject for ref in refs for subject in _subjects(ref)])
    opened = open_for_lookup(store, catalog=catalog, missing="the store is empty: nothing covers any target")
    try:
        if not refs:
            subjects = [Subject(name) for (name,) in opened.catalog.lookup_rows(lookup_sql.names())]
        return [_item(opened, s, r, engines_only) for s in subjects for r in requests]
    finally:
        opened.close()


def _subjects(ref: str) -> list[Subject]:
    """A name, or the recipe files a path or glob names (each as its model)."""
    if not ref.lower().endswith(_RECIPE_SUFFIXES) and not set("*?[") & set(ref):
        return [Subject(ref)]
    subjects = []
    for item in expand_recipes([ref]):
        if isinstance(item, UnmatchedPattern):
            raise BadInputError(f"no recipe file matches {item.pattern!r}")
        subjects.append(recipe_subject(item))
    return subjects


def recipe_subject(path: Path) -> Subject:
    """A recipe's model as lookup tells models apart: its model digest and the recipe (effective:
    sidecar deny entries merged, named files' digests pinned) without its target fields."""
    from trtforge.resolution.resolve import load_effective, with_file_digests
    from trtforge.rules.digests import DigestCache
    from trtforge.rules.keys import recipe_fingerprint, recipe_variant
    from trtforge.rules.onnx_model import model_sha256

    digests = DigestCache(None)
    loaded = load_effective(path)
    digest = model_sha256(loaded, digests)
    loaded, _files = with_file_digests(loaded, digests)
    recipe = loaded.recipe
    variant = recipe_variant(recipe.model_dump(mode="json"))
    choice = ModelChoice(digest, recipe_fingerprint(recipe), f"recipe {path}", variant)
    return Subject(recipe.name, (str(path),), choice)


def _item(store: LookupStore, subject: Subject, request: TargetRequest, engines_only: bool) -> CoverageItem:
    target = resolve_in_store(store, request, name=subject.name, model_sha256=None)
    item = CoverageItem(subject.name, list(subject.recipes), target.as_json(), "missing")
    try:
        ranking = covering_engine(store, target, name=subject.name, choice=subject.model)
        best = ranking.best
    except (NotFoundError, NoCompatibleEngineError) as exc:
        item.missing, item.reason = ["engine"], exc.message
        item.model_sha256 = subject.model.model_sha256 if subject.model is not None else None
        return item
    item.model_sha256 = ranking.model.model_sha256 if ranking.model is not None else None
    if best is None:
        item.missing, item.reason = ["engine"], no_engine_error(ranking, explain=True).message
        return item
    candidate = best.candidate
    item.artifact_id = candidate.artifact_id
    item.verified, item.weightless, item.notes = best.verified_here, candidate.weightless, list(best.notes)
    item.verification = candidate.verified_on.get(target.gpu_name) if target.gpu_name else None
    item.status = "covered" if best.verified_here else "unverified"
    if not best.verified_here and not engines_only:
        item.missing = ["verification"]
        where = target.gpu_name or "a GPU model (the target names only a compute capability)"
        item.reason = f"engine {candidate.artifact_id[:12]} is not verified on {where}"
    return item


def exit_code(items: Sequence[CoverageItem]) -> int:
    """1 when any item misses something (a release gate), else 0."""
    return 1 if any(item.missing for item in items) else 0
