"""Tactic deny entries: which TensorRT tactic must not run on which layer, and why.

An entry names a layer (exact engine/network layer name, or a glob) and a tactic (its kernel
name, its numeric id/hash, or ``"*"`` for every tactic of the layer). Entries live inline in a
recipe (``tactics.deny``) and/or in a sidecar YAML file the recipe references
(``tactics.deny_file``), so CI can append entries without rewriting the recipe.

This module holds the entry model, the sidecar file, and the matching rules as pure
functions; enforcement during a build lives in :mod:`trtforge.backend.denylist_enforce` and
derivation from accuracy diffs in :mod:`trtforge.stages.denylist_derive`. Nothing here imports
TensorRT.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trtforge.core.errors import RecipeError
from trtforge.core.yamlfile import also_accepts, load_yaml, read_text_file, validate_yaml

ANY_TACTIC = "*"
MAX_SIDECAR_BYTES = 1 << 20
_HEX_ID = re.compile(r"0[xX][0-9a-fA-F]+")
_DEC_ID = re.compile(r"-?[0-9]+")
# TensorRT < 10 repeats layer and tensor names per optimization profile with this suffix.
_PROFILE_SUFFIX = re.compile(r" \[profile \d+\]\Z")



class DenySource(BaseModel):
    """Where an entry came from: the diff file, the tensor that drifted and by how much."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    results_sha256: str | None = Field(default=None, description="sha256 of the polygraphy results file.")
    tensor: str | None = Field(default=None, description="The first tensor whose error exceeded the threshold.")
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    artifact: str | None = Field(default=None, description="Artifact id whose layer information was used.")


class DenyEntry(BaseModel):
    """One banned (layer, tactic) pair."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    layer: str = Field(min_length=1, description="Exact layer name, or a glob (*, ?, [..]).")
    tactic: str = Field(min_length=1, description="Tactic name, tactic id/hash (0x.. or decimal), or '*'.")
    reason: str = Field(min_length=1, description="Why the tactic is banned (e.g. the measured error).")
    source: DenySource | None = None

    @field_validator("tactic", mode="before")
    @classmethod
    @also_accepts({"type": "integer", "description": "a tactic id YAML reads as a number (0x1f, 31)"})
    def _id_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 0x1f or 31 as an integer; it is the same tactic id.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("layer", "tactic")
    @classmethod
    def _no_surrounding_space(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        return value

    def key(self) -> tuple[str, str]:
        """What changes the engine: the layer pattern and the tactic (not reason or source)."""
        return (self.layer, normalize_tactic(self.tactic))


# -- matching (pure) ----------------------------------------------------------------------


def normalize_tactic(tactic: str) -> str:
    """Ids compare as numbers (``0x1F`` == ``31``); names stay as given."""
    tactic_id = tactic_id_of(tactic)
    return hex(tactic_id) if tactic_id is not None else tactic


def tactic_id_of(text: str | int | None) -> int | None:
    """The numeric id of ``0x..``/decimal text (or an int), else None (a tactic name)."""
    if text is None:
        return None
    if isinstance(text, int):
        return text
    text = text.strip()
    if _HEX_ID.fullmatch(text):
        return int(text, 16)
    if _DEC_ID.fullmatch(text):
        return int(text)
    return None


def strip_profile_suffix(name: str) -> str:
    return _PROFILE_SUFFIX.sub("", name)


def layer_matches(pattern: str, layer: str) -> bool:
    """Exact name first (layer names may contain glob characters, e.g. ``[profile 1]``), then glob."""
    layer = strip_profile_suffix(layer)
    return pattern == layer or fnmatch.fnmatchcase(layer, pattern)


def tactic_matches(pattern: str, *, name: str | None = None, tactic_id: str | int | None = None) -> bool:
    """Does ``pattern`` (name, id or '*') denote the tactic known by ``name`` and/or ``tactic_id``?"""
    if pattern == ANY_TACTIC:
        return True
    wanted_id = tactic_id_of(pattern)
    if wanted_id is not None:
        return wanted_id == tactic_id_of(tactic_id)
    return name is not None and pattern == name


def entry_hits(entry: DenyEntry, layer: str, *, name: str | None = None, tactic_id: str | int | None = None) -> bool:
    return layer_matches(entry.layer, layer) and tactic_matches(entry.tactic, name=name, tactic_id=tactic_id)


def entries_for_layer(entries: Iterable[DenyEntry], layer: str) -> list[DenyEntry]:
    """The entries whose layer pattern covers ``layer``."""
    return [e for e in entries if layer_matches(e.layer, layer)]


def first_hit(
    entries: Iterable[DenyEntry], layer: str, *, name: str | None = None, tactic_id: str | int | None = None
) -> DenyEntry | None:
    for entry in entries:
        if entry_hits(entry, layer, name=name, tactic_id=tactic_id):
            return entry
    return None


def deny_key(entries: Sequence[DenyEntry]) -> list[list[str]]:
    """Canonical, order-free form of the entries for the BuildKey."""
    return [list(k) for k in sorted({e.key() for e in entries})]


# -- layer information (engine inspector JSON) --------------------------------------------


@dataclass(frozen=True)
class EngineLayer:
    """One layer of an engine as the engine inspector reports it (DETAILED verbosity)."""

    name: str
    layer_type: str | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tactic_name: str | None
    tactic_value: str | None
    output_types: tuple[str, ...] = ()  # each output's data type from its "Format/Datatype" ("FP16", ...)

    @property
    def tactic(self) -> str | None:
        """How a deny entry names this layer's tactic: the kernel name if known, else its id."""
        return self.tactic_name or self.tactic_value


def _tensor_names(items: Any) -> tuple[str, ...]:
    names = []
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            names.append(strip_profile_suffix(item["Name"]))
        elif isinstance(item, str):
            names.append(strip_profile_suffix(item))
    return tuple(names)


# The data type words of the inspector's "Format/Datatype" texts ("Row major linear FP16 format",
# "Channel major FP16 format where channel % 8 == 0", "Row major linear Int32"), upper-cased.
_DATATYPE = re.compile(r"\b(FP32|FP16|BF16|FP8|FP4|INT4|INT8|UINT8|INT32|INT64|BOOL|HALF|FLOAT)\b", re.IGNORECASE)
_DATATYPE_ALIASES = {"HALF": "FP16", "FLOAT": "FP32"}


def _datatypes(items: Any) -> tuple[str, ...]:
    found = []
    for item in items or []:
        text = item.get("Format/Datatype") if isinstance(item, dict) else None
        match = _DATATYPE.search(text) if isinstance(text, str) else None
        if match is not None:
            word = match.group(1).upper()
            found.append(_DATATYPE_ALIASES.get(word, word))
    return tuple(found)


def parse_layer_info(info: Any) -> list[EngineLayer]:
    """Layers from ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    Accepts the whole document (``{"Layers": [...], "Bindings": [...]}``) or the list of layers.
    Layers given only as names (LAYER_NAMES_ONLY verbosity) carry no tactics; they are kept so
    a caller can tell "no detail" from "no layers".
    """
    layers = info.get("Layers") if isinstance(info, dict) else info
    if not isinstance(layers, list):
        raise ValueError("layer information has no 'Layers' list")
    parsed = []
    for layer in layers:
        if isinstance(layer, str):
            parsed.append(EngineLayer(strip_profile_suffix(layer), None, (), (), None, None))
            continue
        if not isinstance(layer, dict) or not isinstance(layer.get("Name"), str):
            raise ValueError("a layer in the layer information has no 'Name'")
        value = layer.get("TacticValue")
        parsed.append(
            EngineLayer(
                name=strip_profile_suffix(layer["Name"]),
                layer_type=layer.get("LayerType"),
                inputs=_tensor_names(layer.get("Inputs")),
                outputs=_tensor_names(layer.get("Outputs")),
                tactic_name=layer.get("TacticName") or None,
                tactic_value=str(value) if value not in (None, "") else None,
                output_types=_datatypes(layer.get("Outputs")),
            )
        )
    return parsed


@dataclass(frozen=True)
class Violation:
    """A layer of a built engine that still runs a denied tactic."""

    layer: str
    tactic: str | None
    entry_layer: str
    entry_tactic: str

    def as_json(self) -> dict[str, Any]:
        entry = {"layer": self.entry_layer, "tactic": self.entry_tactic}
        return {"layer": self.layer, "tactic": self.tactic, "entry": entry}


def violations_in(entries: Sequence[DenyEntry], layers: Iterable[EngineLayer]) -> list[Violation]:
    """Layers that ran a denied tactic (for the after-build check)."""
    found = []
    for layer in layers:
        hit = first_hit(entries, layer.name, name=layer.tactic_name, tactic_id=layer.tactic_value)
        if hit is not None:
            found.append(Violation(layer.name, layer.tactic, hit.layer, hit.tactic))
    return found


# -- sidecar file -------------------------------------------------------------------------


class DenyFile(BaseModel):
    """The sidecar: ``deny: [entries]`` (appendable by CI without touching the recipe)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    deny: list[DenyEntry] = Field(default_factory=list)


def parse_deny_file(text: str, shown: str) -> list[DenyEntry]:
    """Validate sidecar text; errors name ``shown``, the line and the field."""
    data = load_yaml(text, shown)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}:1: a deny file is a mapping with a 'deny' list", hint=DENY_FILE_HINT)
    return list(validate_yaml(DenyFile, data, text, shown, hint=DENY_FILE_HINT).deny)


DENY_FILE_HINT = "each entry needs layer, tactic and reason (see `trtforge schema`, tactics.deny)"


def read_deny_file(path: Path, shown: str | None = None) -> list[DenyEntry]:
    shown = shown or str(path)
    return parse_deny_file(read_deny_text(path, shown), shown)


def read_deny_text(path: Path, shown: str) -> str:
    """The sidecar's text as read (checked for size and UTF-8), before it is parsed."""
    hint = "tactics.deny_file is relative to the recipe file (or absolute, ~, ${VAR})"
    return read_text_file(path, shown, what="deny file", limit=MAX_SIDECAR_BYTES, missing_hint=hint)


def render_deny_file(entries: Sequence[DenyEntry]) -> str:
    """Sidecar text for ``entries`` (stable field order, one entry per list item)."""
    body = {"deny": [e.model_dump(mode="json", exclude_none=True) for e in entries]}
    header = "# trtforge tactic deny list (appended by `trtforge denylist derive --write`)\n"
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=1000)
