"""The lookup stage: catalog rows -> ranked compatible engines -> a verified local plan path.

Imports neither tensorrt nor polygraphy: the rules are pure (:mod:`trtforge.rules.compatibility`), and
the runtime's own validity check is asked only when the target is this machine and it has a
GPU, through :mod:`trtforge.backend.validity`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BadInputError, NoCompatibleEngineError, NotFoundError
from trtforge.core.fsutil import checked_copy, child_path, owner_prefix
from trtforge.resolution.targets import TargetOptions, one_target
from trtforge.rules.compatibility import Candidate, Envelope, Match, ModelChoice, Ranking, RecordView, Rejection, rank
from trtforge.rules.gpus import closest_names, known_gpu
from trtforge.rules.keys import recipe_variant
from trtforge.rules.target import RuntimeTarget, TargetRequest, resolve_target
from trtforge.store import lookup_sql, open_for_lookup

if TYPE_CHECKING:
    from trtforge.store import Store
    from trtforge.store.lookup_sql import SqliteLookup

    LookupStore = Store | SqliteLookup  # the ORM catalog, or sqlite3 on a local SQLite catalog

_SHA256 = re.compile(r"[0-9a-f]{64}")


def candidate_from_row(row: Any, verified: dict[str, str] | None = None) -> Candidate:
    """A ranking candidate; ``verified`` is the status per GPU model from the verifications table."""
    details = RecordView.of(row.details)  # not the record's pydantic models: lookup is on every service's start
    verified = verified or {}
    built_on = details.target or {}
    envelope = Envelope.from_details(details)
    runs_os, runs_arch = envelope.runs_on(_text_or_none(built_on.get("os")), _text_or_none(built_on.get("arch")))
    return Candidate(
        artifact_id=row.id,
        name=row.name,
        flavor=row.flavor,
        trt_version=row.trt_version,
        gpu_name=row.gpu_name,
        compute_capabilities=tuple(str(cc) for cc in row.compute_capabilities or ()),
        plan_sha256=row.plan_sha256,
        plan_size=row.plan_size,
        model_sha256=row.model_sha256,
        created_at=row.created_at,
        envelope=envelope,
        origin=details.origin,
        os=runs_os,
        arch=runs_arch,
        verified_on=dict(verified),
        recipe_fingerprint=row.recipe_fingerprint,
        weightless=details.needs_weights,
        plugins_needed=details.plugins_needed,
        recipe_variant=recipe_variant(row.recipe or {}),
        learned_at=row.learned_at,
        imported=row.learned_via == "import",
        build_key=row.build_key,
        cuda=_text_or_none(built_on.get("cuda")),
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def load_candidates(
    store: LookupStore, *, name: str | None, model_sha256: str | None, flavor: str | None = None
) -> list[Candidate]:
    """Rows for a name and/or model digest; ``flavor`` narrows them in SQL (indexed)."""
    latest: dict[str, dict[str, str]] = {}
    for artifact_id, gpu_name, status in store.catalog.lookup_rows(lookup_sql.statuses(name, model_sha256, flavor)):
        latest.setdefault(artifact_id, {}).setdefault(gpu_name, status)
    rows = store.catalog.lookup_rows(lookup_sql.candidates(name, model_sha256, flavor))
    return [candidate_from_row(row, latest.get(row.id)) for row in rows]


def choose_model(store: LookupStore, *, name: str | None, model_sha256: str | None) -> ModelChoice | None:
    """The model a lookup means: that of the intact artifact of the name (and digest) this store
    learned of last, on any target; None when nothing intact matches.

    A name means its newest model, so a service never keeps receiving an old model's engine
    just because that one was verified on its GPU; --model-sha256 picks an older model digest
    (with the recipe of its newest build). A model is its digest plus the recipe without target
    fields, so recipes that differ only in ``backend``/``compatibility`` are one model. An adopted
    plan (no recipe) stands for the model its digest's newest recipe build defines, if any.
    """
    found = store.catalog.lookup_rows(lookup_sql.newest_model(name, model_sha256))
    if not found:
        return None
    newest = basis = found[0]
    variant = recipe_variant(newest.recipe or {})
    if variant is None:
        built = store.catalog.lookup_rows(lookup_sql.newest_model(name, newest.model_sha256, with_recipe=True))
        if built:
            basis, variant = built[0], recipe_variant(built[0].recipe or {})
    learned = f"artifact {newest.id[:12]}, learned {newest.learned_at:%Y-%m-%d %H:%M:%S} UTC"
    if model_sha256 is not None:
        why = f"--model-sha256 {model_sha256[:12]}, with the recipe of its newest build ({learned})"
    else:
        why = f"the newest build of {newest.name!r} ({learned})"
    return ModelChoice(newest.model_sha256, basis.recipe_fingerprint, why, variant)


def new_version_warning(store: LookupStore, name: str, model_sha256: str, recipe: dict[str, Any]) -> str | None:
    """What `build` says before it records an artifact that makes ``name`` mean another model than
    it does now (another model digest, or the same model built from a recipe that differs in more
    than its target fields): lookup will answer with the new one, and how to reach the old one."""
    before = choose_model(store, name=name, model_sha256=None)
    variant = recipe_variant(recipe)
    if before is None or (before.model_sha256 == model_sha256 and before.recipe_variant in (None, variant)):
        return None
    if before.model_sha256 != model_sha256:
        previous = f"model sha256 {before.model_sha256[:12]}"
        reach = f"`trtforge lookup {name} --model-sha256 {before.model_sha256}` (or --any-model)"
    else:
        previous = f"the same model built from another recipe ({before.recipe_fingerprint[:12]})"
        reach = f"`trtforge lookup {name} --any-model`"
    return (
        f"this build adds another version of {name!r}: `trtforge lookup {name}` now answers with model sha256 "
        f"{model_sha256[:12]} of this recipe; the previous version, {previous}, stays reachable with {reach}"
    )


def stored_releases(store: LookupStore, *, name: str | None, model_sha256: str | None) -> list[tuple[str, str]]:
    """(flavor, version) of the intact artifacts of a name/digest: what ``--trt`` may mean here."""
    return [(flavor, version) for flavor, version in store.catalog.lookup_rows(lookup_sql.releases(name, model_sha256))]


def resolve_in_store(
    store: LookupStore, request: TargetRequest | RuntimeTarget, *, name: str | None, model_sha256: str | None
) -> RuntimeTarget:
    """A target for this name's engines: a ``--trt`` without ``--flavor`` means the flavor that the
    installed runtimes or the name's stored engines have that release of."""
    if not isinstance(request, TargetRequest):
        return request
    stored = stored_releases(store, name=name, model_sha256=model_sha256) if request.infers_flavor else []
    return request.resolve(stored)


def _any_artifact(store: LookupStore, name: str | None, model_sha256: str | None, *, intact: bool = False) -> bool:
    return bool(store.catalog.lookup_rows(lookup_sql.any_artifact(name, model_sha256, intact=intact)))


def _apply_runtime_check(store: LookupStore, ranking: Ranking) -> Ranking:
    """On this machine with a GPU, the runtime's validity check has the final word.

    The first match the runtime accepts wins; matches it refuses become rejections with rule
    ``runtime_validity``. Runtimes without a validity API leave the ranking unchanged.
    """
    from trtforge.backend.validity import engine_validity  # lazy: imports the runtime
    from trtforge.rules.flavors import BackendInfo

    backend = BackendInfo(ranking.target.flavor, ranking.target.trt_version)
    matches = list(ranking.matches)
    rejected = list(ranking.rejected)
    while matches:
        best = matches[0]
        verdict = engine_validity(backend, store.blobs.local_file(best.candidate.plan_sha256))
        if verdict is None or verdict.usable:
            if verdict is not None and verdict.validity != "VALID":
                matches[0] = replace(best, notes=(*best.notes, f"runtime says {verdict.describe()}"))
            break
        rejected.append(Rejection(best.candidate, "runtime_validity", f"the runtime says {verdict.describe()}"))
        matches.pop(0)
    return replace(ranking, matches=matches, rejected=rejected)


@dataclass
class LookupResult:
    """What an inference service needs: the plan's local path and what it is."""

    path: Path
    artifact_id: str
    name: str
    flavor: str
    trt_version: str
    plan_sha256: str
    target: RuntimeTarget
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    ranking: Ranking | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "artifact_id": self.artifact_id,
            "name": self.name,
            "flavor": self.flavor,
            "trt_version": self.trt_version,
            "plan_sha256": self.plan_sha256,
            "target": self.target.as_json(),
            "notes": self.notes,
            "metadata": self.metadata,
            "warnings": self.warnings,
        }


def rank_in_store(
    store: LookupStore,
    target: RuntimeTarget,
    *,
    name: str | None = None,
    model_sha256: str | None = None,
    verified_only: bool = False,
    explain: bool = False,
    runtime_check: bool = True,
    allow_weightless: bool = False,
    any_model: bool = False,
    choice: ModelChoice | None = None,
) -> Ranking:
    """Rank a store's artifacts for ``target``; raises when nothing matches the name/digest.

    Only the newest model of the name (see :func:`choose_model`) is considered unless
    ``any_model``, or ``choice`` names the model (a recipe's, for `coverage`); weight-stripped
    plans only with ``allow_weightless``.
    """
    if name is None and model_sha256 is None:
        raise BadInputError("lookup needs a name or --model-sha256")
    if model_sha256 is not None and not _SHA256.fullmatch(model_sha256):
        raise BadInputError(f"--model-sha256 {model_sha256[:80]!r} is not a lowercase hex sha256 digest")
    # Without --explain the other flavor's rows are never needed: filter in SQL on the index.
    rows = load_candidates(store, name=name, model_sha256=model_sha256, flavor=None if explain else target.flavor)
    if not rows and not _any_artifact(store, name, model_sha256):
        query = _describe_query(name, model_sha256)
        raise NotFoundError(f"no artifact {query} in the catalog", hint="see `trtforge list`")
    if not rows and not _any_artifact(store, name, model_sha256, intact=True):
        raise NoCompatibleEngineError(
            f"every artifact {_describe_query(name, model_sha256)} is marked corrupt (`fsck --repair`)",
            hint="rebuild it with `trtforge build`; `trtforge gc` then removes the corrupt records",
        )
    model = choice
    if model is None and not any_model:
        model = choose_model(store, name=name, model_sha256=model_sha256)

    def reach(digest: str) -> ModelChoice | None:  # what `--model-sha256 DIGEST` would choose
        return choose_model(store, name=name, model_sha256=digest)

    ranking = rank(
        rows, target, verified_only=verified_only, allow_weightless=allow_weightless, model=model, reach=reach
    )
    if runtime_check and target.detected and ranking.matches:
        ranking = _apply_runtime_check(store, ranking)
    return ranking


def covering_engine(
    store: LookupStore, target: RuntimeTarget, *, name: str, choice: ModelChoice | None = None
) -> Ranking:
    """The ranking whose best match is the engine that covers ``target`` for ``name``: what lookup
    returns there, else (nothing else runs there) a weight-stripped plan, as ``--allow-weightless``
    would. Used by `coverage` and by `gc --fleet`, so both mean the same engine."""
    ranking = rank_in_store(store, target, name=name, choice=choice, runtime_check=False)
    if ranking.best is None:
        ranking = rank_in_store(store, target, name=name, choice=choice, allow_weightless=True, runtime_check=False)
    return ranking


def _describe_query(name: str | None, model_sha256: str | None) -> str:
    parts = [f"named {name!r}"] if name is not None else []
    if model_sha256 is not None:
        parts.append(f"for model sha256 {model_sha256[:12]}")
    return " ".join(parts)


def materialize(store: LookupStore, plan_sha256: str, destination: Path, *, default_name: str) -> Path:
    """Put a private, hash-checked copy of the plan at ``destination`` (never a link to the blob)."""
    source = store.blobs.local_file(plan_sha256, verify=False)  # the copy is hashed before it appears
    target = child_path(destination, f"{default_name}.plan", "artifact name") if destination.is_dir() else destination
    try:
        checked_copy(source, target, plan_sha256, temp_prefix=owner_prefix())
    except OSError as exc:
        raise BadInputError(f"cannot write the plan to {target}: {exc.strerror or exc}") from None
    return target


def find_engine(
    name: str | None = None,
    target: RuntimeTarget | None = None,
    *,
    model_sha256: str | None = None,
    store: str | Path | None = None,
    catalog: str | None = None,
    verified_only: bool = False,
    output: str | Path | None = None,
    verify_hash: bool = True,
    runtime_check: bool = True,
    allow_weightless: bool = False,
    any_model: bool = False,
) -> LookupResult:
    """The best engine for ``target`` (detected when None), as a hash-checked local path."""
    chosen = target if target is not None else resolve_target()
    opened = open_for_lookup(
        store, catalog=catalog, missing=f"no artifact {_describe_query(name, model_sha256)} (the store is empty)"
    )
    try:
        ranking = rank_in_store(
            opened,
            chosen,
            name=name,
            model_sha256=model_sha256,
            verified_only=verified_only,
            runtime_check=runtime_check,
            allow_weightless=allow_weightless,
            any_model=any_model,
        )
        return result_for(opened, ranking, output=output, verify_hash=verify_hash)
    finally:
        opened.close()


def result_for(
    store: LookupStore,
    ranking: Ranking,
    *,
    output: str | Path | None = None,
    verify_hash: bool = True,
    explain: bool = False,
) -> LookupResult:
    """The best match as a LookupResult; raises NoCompatibleEngineError when there is none (its hint
    names the model that has an engine, else `--explain`, unless the caller explains already)."""
    best: Match | None = ranking.best
    if best is None:
        raise no_engine_error(ranking, explain=explain)
    candidate = best.candidate
    if output is not None:
        path = materialize(store, candidate.plan_sha256, Path(output), default_name=candidate.name)
    else:
        path = store.blobs.local_file(candidate.plan_sha256, verify=verify_hash)
    unverified = _unverified_warning(best, ranking.target)
    return LookupResult(
        path=path,
        artifact_id=candidate.artifact_id,
        name=candidate.name,
        flavor=candidate.flavor,
        trt_version=candidate.trt_version,
        plan_sha256=candidate.plan_sha256,
        target=ranking.target,
        notes=list(best.notes),
        metadata=best.as_json(),
        ranking=ranking,
        warnings=[*ranking.warnings, *([unverified] if unverified else [])],
    )


def no_engine_error(ranking: Ranking, *, explain: bool = False) -> NoCompatibleEngineError:
    """Lookup's answer when nothing runs on the target: the rules that rejected the candidates, and
    a hint naming the model that has an engine, else `--explain` (unless the caller explains)."""
    rules = sorted({r.rule for r in ranking.rejected})
    where = ranking.target.describe()
    hint = ranking.warnings[-1] if ranking.warnings else ("" if explain else None)
    if not rules:  # rows of other flavors were filtered out in SQL
        flavor = ranking.target.flavor
        return NoCompatibleEngineError(f"no engine runs on {where}: none was built for {flavor}", hint=hint)
    return NoCompatibleEngineError(
        f"no engine runs on {where}: {len(ranking.rejected)} rejected ({', '.join(rules)})", hint=hint
    )


def _unverified_warning(best: Match, target: RuntimeTarget) -> str | None:
    """Said whenever the engine handed out has not passed verification on the target's GPU model."""
    if best.verified_here:
        return None
    engine = f"engine {best.candidate.artifact_id[:12]}"
    if target.gpu_name is None:
        return (
            f"{engine} is handed out unverified: no GPU model was given (--gpu), so no verification can "
            "count; --verified-only (what CI and services use) refuses it"
        )
    return (
        f"{engine} is not verified on {target.gpu_name} (`trtforge verify` on one records it); "
        "--verified-only (what CI and services use) refuses unverified engines"
    )


def _target_warnings(target: RuntimeTarget) -> list[str]:
    """A GPU name the table does not know was taken as given (with its --cc): say so."""
    if target.detected or target.gpu_name is None or known_gpu(target.gpu_name) is not None:
        return []
    near = closest_names(target.gpu_name)
    closest = f" (closest known: {', '.join(near)})" if near else ""
    return [
        f"GPU {target.gpu_name!r} is not in trtforge's GPU table{closest}: taken as given, compute capability "
        f"{target.compute_capability}; verifications count only under exactly this name"
    ]


@dataclass
class LookupReport:
    """What `trtforge lookup` answers: the target, the model chosen, every compatible engine (and,
    explained, every rejection) and the best one; or, when none runs there, the error, since the
    rejections are then the useful part."""

    data: dict[str, Any]
    warnings: list[str]
    error: NoCompatibleEngineError | None = None


def lookup_report(
    name: str | None,
    target: RuntimeTarget | TargetRequest | TargetOptions | None,
    *,
    model_sha256: str | None = None,
    store: str | Path | None = None,
    catalog: str | None = None,
    verified_only: bool = False,
    explain: bool = False,
    output: str | Path | None = None,
    allow_weightless: bool = False,
    any_model: bool = False,
) -> LookupReport:
    """`trtforge lookup`: rank the store's engines for ``target``, hand out the best one's plan.

    The command line's target options (one target: the flags, one ``--target``, or one entry of a
    ``--fleet``) are resolved here: checked before the store is opened, and with a ``--trt`` but no
    ``--flavor`` the flavor is the one the installed runtimes and this name's stored engines have
    that release of.
    """
    request = one_target(target)
    chosen = request.resolve() if isinstance(request, TargetRequest) else request
    opened = open_for_lookup(store, catalog=catalog, missing="the store is empty: nothing to look up")
    try:
        chosen = resolve_in_store(opened, request, name=name, model_sha256=model_sha256)
        ranking = rank_in_store(
            opened,
            chosen,
            name=name,
            model_sha256=model_sha256,
            verified_only=verified_only,
            explain=explain,
            allow_weightless=allow_weightless,
            any_model=any_model,
        )
        warnings = [*_target_warnings(chosen), *ranking.warnings]
        data: dict[str, Any] = {
            "target": chosen.as_json(),
            "model": ranking.model.as_json() if ranking.model is not None else None,
            "matches": [m.as_json() for m in ranking.matches],
            "warnings": warnings,
        }
        if explain:
            data["rejected"] = [r.as_json() for r in ranking.rejected]
        try:
            result = result_for(opened, ranking, output=output, explain=explain)
        except NoCompatibleEngineError as exc:
            data.update(best=None, error=exc.message)
            return LookupReport(data, warnings, exc)
    finally:
        opened.close()
    result.warnings = [*_target_warnings(chosen), *result.warnings]
    data["best"] = result.as_json()
    data["warnings"] = result.warnings
    return LookupReport(data, result.warnings)
