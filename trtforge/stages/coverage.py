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
from trtforge.rules.compatibility import Match, ModelChoice
from trtforge.rules.target import TargetRequest
from trtforge.stages.lookup import no_engine_error, rank_in_store, resolve_in_store
from trtforge.store import lookup_sql, open_for_lookup

if TYPE_CHECKING:
    from trtforge.stages.lookup import LookupStore

Status = Literal["covered", "unverified", "missing"]
_RECIPE_SUFFIXES = (".yaml", ".yml", ".onnx")


@dataclass(frozen=True)
class Subject:
    """What coverage is asked about: a name (its newest model), or a recipe's model."""

    name: str
    recipe: str | None = None
    model: ModelChoice | None = None


@dataclass
class CoverageItem:
    """One model x one target; ``as_json`` is one item of `coverage --json`."""

    name: str
    recipe: str | None
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
    subjects = [subject for ref in refs for subject in _subjects(ref)]
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
    return Subject(recipe.name, str(path), choice)


def _item(store: LookupStore, subject: Subject, request: TargetRequest, engines_only: bool) -> CoverageItem:
    target = resolve_in_store(store, request, name=subject.name, model_sha256=None)
    item = CoverageItem(subject.name, subject.recipe, target.as_json(), "missing")
    if subject.model is not None:
        item.model_sha256 = subject.model.model_sha256
    try:
        best, reason = _engine(store, subject, target)
    except (NotFoundError, NoCompatibleEngineError) as exc:
        best, reason = None, exc.message
    if best is None:
        item.missing, item.reason = ["engine"], reason
        return item
    candidate = best.candidate
    item.artifact_id, item.model_sha256 = candidate.artifact_id, candidate.model_sha256
    item.verified, item.weightless, item.notes = best.verified_here, candidate.weightless, list(best.notes)
    item.verification = candidate.verified_on.get(target.gpu_name) if target.gpu_name else None
    item.status = "covered" if best.verified_here else "unverified"
    if not best.verified_here and not engines_only:
        item.missing = ["verification"]
        where = target.gpu_name or "a GPU model (the target names only a compute capability)"
        item.reason = f"engine {candidate.artifact_id[:12]} is not verified on {where}"
    return item


def _engine(store: LookupStore, subject: Subject, target: Any) -> tuple[Match | None, str | None]:
    """The engine lookup returns for the target (weight-stripped plans when nothing else runs
    there, as `lookup --allow-weightless` would), or None and why not."""
    ranking = None
    for allow_weightless in (False, True):
        ranking = rank_in_store(
            store, target, name=subject.name, choice=subject.model, allow_weightless=allow_weightless,
            runtime_check=False,
        )  # fmt: skip
        if ranking.best is not None:
            return ranking.best, None
    assert ranking is not None
    return None, no_engine_error(ranking, explain=True).message


def exit_code(items: Sequence[CoverageItem]) -> int:
    """1 when any item misses something (a release gate), else 0."""
    return 1 if any(item.missing for item in items) else 0
