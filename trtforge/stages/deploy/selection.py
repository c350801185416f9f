"""Which engines a deploy ships, the same way for `deploy triton` and `deploy epcontext`: REF is a
name (its engines chosen by lookup's rules for the target options) or one artifact by id.

A REF is an artifact id when it is a whole id (32 hex digits) of an artifact, a name when an
artifact of that name exists, else an id prefix of at least 6 hex digits (as everywhere else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtforge.core.errors import NotFoundError, TargetError
from trtforge.resolution.targets import TargetOptions, one_target
from trtforge.rules.target import RuntimeTarget, TargetRequest
from trtforge.stages.lookup import no_engine_error, rank_in_store, resolve_in_store
from trtforge.store import lookup_sql

if TYPE_CHECKING:
    from trtforge.store import Store
    from trtforge.store.catalog import Artifact

_WHOLE_ID = re.compile(r"[0-9a-f]{32}")
TargetGiven = TargetOptions | TargetRequest | RuntimeTarget | None


def target_given(target: TargetGiven) -> bool:
    """Whether any target option was given (an empty request means none)."""
    if isinstance(target, TargetOptions):
        return target.given
    if isinstance(target, TargetRequest):
        return not target.is_empty
    return target is not None


@dataclass(frozen=True)
class EngineRef:
    """A deploy's REF, read: a name, or the one artifact an id names."""

    name: str | None = None
    artifact: Artifact | None = None


def read_ref(store: Store, ref: str) -> EngineRef:
    """A name or an artifact id (see the module docstring); NotFoundError when it is neither."""
    text = ref.strip()
    if _WHOLE_ID.fullmatch(text.lower()):
        try:
            return EngineRef(artifact=store.catalog.get_artifact(text))
        except NotFoundError:
            pass
    if store.catalog.lookup_rows(lookup_sql.any_artifact(text, None, intact=False)):
        return EngineRef(name=text)
    try:
        return EngineRef(artifact=store.catalog.get_artifact(text))
    except NotFoundError:
        raise NotFoundError(
            f"no artifact named {text[:60]!r} and no artifact id starting with it", hint="see `trtforge list`"
        ) from None


def refuse_target_with_id(given: bool, model_sha256: str | None) -> None:
    """An artifact id names its engine: target options (or a model digest) with it are a mistake."""
    if given or model_sha256 is not None:
        what = "--model-sha256" if model_sha256 is not None and not given else "target options"
        raise TargetError(
            f"an artifact id names one engine; {what} choose among a name's engines",
            hint="give the name instead of the id, or leave the options out",
        )


def choose_engine(
    store: Store, name: str, target: TargetOptions | TargetRequest | RuntimeTarget, *, model_sha256: str | None,
    verified_only: bool,
) -> Artifact:  # fmt: skip
    """The engine lookup hands out for ``name`` on the target (this machine for an empty request)."""
    request = one_target(target)
    chosen = resolve_in_store(store, request, name=name, model_sha256=model_sha256)
    ranking = rank_in_store(store, chosen, name=name, model_sha256=model_sha256, verified_only=verified_only)
    if ranking.best is None:
        raise no_engine_error(ranking)
    return store.catalog.get_artifact(ranking.best.candidate.artifact_id)
