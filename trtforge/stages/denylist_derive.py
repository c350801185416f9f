"""Derive deny entries from an accuracy diff: which layer and tactic made the engine drift.

Input: polygraphy run results holding a TensorRT runner's and a reference runner's outputs for
the same inputs, ideally with every intermediate tensor marked as an output. Walking the
artifact's ONNX graph in topological order, the *first* tensors whose error exceeds the
threshold while their inputs are still within it are where the drift starts (later tensors
only inherit it). Each is mapped to the engine layer that produced it and the tactic that
layer ran, from the artifact's layer information (engine inspector JSON), and proposed as a
deny entry whose reason carries the measured error.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtforge.core.errors import DeriveError, ModelError
from trtforge.rules.denylist import (
    DenyEntry,
    DenySource,
    EngineLayer,
    parse_deny_file,
    parse_layer_info,
    read_deny_file,
    render_deny_file,
)
from trtforge.rules.digests import model_digest
from trtforge.rules.keys import sha256_file

DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-3
_CANDIDATE_HINTS = ("trt", "tensorrt")
_REFERENCE_HINTS = ("onnxrt", "onnx", "reference", "ref")



# -- errors per tensor ----------------------------------------------------------------------


@dataclass(frozen=True)
class TensorError:
    name: str
    max_abs: float
    max_rel: float
    exceeds: bool
    note: str | None = None


def tensor_errors(
    candidate: list[dict[str, Any]], reference: list[dict[str, Any]], *, atol: float, rtol: float
) -> dict[str, TensorError]:
    """Per tensor present in both runners: worst error over all iterations, and whether any
    element is outside ``atol + rtol * |reference|`` (numpy ``isclose`` semantics)."""
    import numpy as np

    if len(candidate) != len(reference):
        raise DeriveError(
            f"the runners have different iteration counts ({len(candidate)} vs {len(reference)})",
            hint="compare results of the same inputs",
        )
    names = [n for n in candidate[0] if all(n in it for it in reference) and all(n in it for it in candidate)]
    found: dict[str, TensorError] = {}
    for name in names:
        worst_abs, worst_rel, exceeds, note = 0.0, 0.0, False, None
        for cand_it, ref_it in zip(candidate, reference, strict=True):
            got = np.asarray(cand_it[name])
            want = np.asarray(ref_it[name])
            if got.shape != want.shape:
                worst_abs, worst_rel, exceeds = float("inf"), float("inf"), True
                note = f"shape {list(got.shape)} vs {list(want.shape)}"
                break
            if got.size == 0:
                continue
            if not (np.issubdtype(got.dtype, np.number) or got.dtype == np.bool_):
                continue
            got64 = got.astype(np.float64)
            want64 = want.astype(np.float64)
            close = np.isclose(got64, want64, rtol=rtol, atol=atol, equal_nan=True)
            diff = np.abs(got64 - want64)
            diff = np.where(np.isnan(got64) & np.isnan(want64), 0.0, diff)
            diff = np.where(np.isnan(diff), np.inf, diff)
            rel = diff / np.maximum(np.abs(want64), np.finfo(np.float64).tiny)
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float(rel.max()))
            exceeds = exceeds or not bool(close.all())
        found[name] = TensorError(name, worst_abs, worst_rel, exceeds, note)
    return found


# -- where the drift starts -----------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Graph:
    """The parts of an ONNX graph the walk needs; nodes in topological order (ONNX requires it)."""

    nodes: tuple[GraphNode, ...]
    inputs: frozenset[str]  # graph inputs and initializers

    def tensor_names(self) -> set[str]:
        return set(self.inputs) | {o for n in self.nodes for o in n.outputs}


def read_graph(path: Path) -> Graph:
    try:
        import onnx  # lazy
    except ImportError:
        from trtforge.core.errors import BackendUnavailableError

        raise BackendUnavailableError("reading the model needs onnx", hint="pip install 'trtforge[denylist]'") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    nodes = tuple(
        GraphNode(n.name or f"{n.op_type}_{i}", n.op_type, tuple(x for x in n.input if x), tuple(n.output))
        for i, n in enumerate(graph.node)
    )
    inputs = frozenset({v.name for v in graph.input} | {t.name for t in graph.initializer})
    return Graph(nodes, inputs)


@dataclass(frozen=True)
class Origin:
    """A tensor where the error starts, and the ONNX node that produced it."""

    tensor: TensorError
    node: GraphNode


def first_exceeding(graph: Graph, errors: dict[str, TensorError]) -> list[Origin]:
    """Tensors that exceed the threshold while every measured input (or, through unmeasured
    tensors, every nearest measured ancestor) is within it. Pure; graph order is topological."""
    drifted: dict[str, bool] = {name: errors[name].exceeds for name in graph.inputs if name in errors}
    origins = []
    for node in graph.nodes:
        inherited = any(drifted.get(name, False) for name in node.inputs)
        for out in node.outputs:
            measured = errors.get(out)
            if measured is None:
                drifted[out] = inherited
                continue
            if measured.exceeds and not inherited:
                origins.append(Origin(measured, node))
            drifted[out] = measured.exceeds
    return origins


# -- tensor -> engine layer -----------------------------------------------------------------


def _name_tokens(layer_name: str) -> set[str]:
    # Fused layers join ONNX node names: "a + b", "PWN(a, b)", "{ForeignNode[a...b]}".
    return set(filter(None, re.split(r"[\s+(),\[\]{}]+|\.\.\.", layer_name)))


def layer_for(origin: Origin, layers: list[EngineLayer]) -> EngineLayer | None:
    """The engine layer that produced the tensor; else the one built from its node."""
    for layer in layers:
        if origin.tensor.name in layer.outputs:
            return layer
    node = origin.node.name
    myelin = re.compile(rf"{re.escape(node)}_myl\d+_\d+")
    for layer in layers:
        if layer.name == node or myelin.fullmatch(layer.name) or node in _name_tokens(layer.name):
            return layer
    return None


# -- the proposal ---------------------------------------------------------------------------


@dataclass
class Finding:
    tensor: str
    node: str
    op_type: str
    max_abs_error: float
    max_rel_error: float
    layer: str
    tactic: str
    note: str | None = None


@dataclass
class Proposal:
    """What `denylist derive` found and proposes (and, with --write, wrote)."""

    artifact_id: str
    results: str
    results_sha256: str
    candidate: str
    reference: str
    atol: float
    rtol: float
    tensors_compared: int
    tensors_exceeding: int
    findings: list[Finding] = field(default_factory=list)
    entries: list[DenyEntry] = field(default_factory=list)
    already_denied: list[DenyEntry] = field(default_factory=list)
    deny_file: str | None = None
    written: bool = False
    diff: str | None = None
    # Which engine produced the results (the artifact's plan, or the per-layer diagnostic engine),
    # and findings whose layer the artifact's engine does not have (reported, never written).
    engine: str = "the artifact's plan"
    unmappable: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for finding in data["findings"]:  # JSON has no infinity (a shape mismatch is infinitely wrong)
            finding["max_abs_error"] = _finite(finding["max_abs_error"])
            finding["max_rel_error"] = _finite(finding["max_rel_error"])
        data["entries"] = [e.model_dump(mode="json", exclude_none=True) for e in self.entries]
        data["already_denied"] = [e.model_dump(mode="json", exclude_none=True) for e in self.already_denied]
        return data


def _pick_runner(runners: list[str], wanted: str | None, hints: tuple[str, ...], role: str, avoid: str | None) -> str:
    if wanted is not None:
        matches = [r for r in runners if r == wanted] or [r for r in runners if r.startswith(wanted)]
        if len(matches) != 1:
            found = "none" if not matches else "several"
            raise DeriveError(f"{role} runner {wanted!r} matches {found} of: {', '.join(runners)}")
        return matches[0]
    for hint in hints:
        matches = [r for r in runners if r != avoid and hint in r.lower()]
        if matches:
            return matches[0]
    raise DeriveError(
        f"the results have no {role} runner (runners: {', '.join(runners) or 'none'})",
        hint=f"they need a TensorRT runner and a reference runner; name them with --{role}",
    )


def derive(
    runners: list[tuple[str, list[dict[str, Any]]]],
    graph: Graph,
    layer_info: Any,
    *,
    artifact_id: str,
    results_path: Path,
    results_sha256: str,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    candidate: str | None = None,
    reference: str | None = None,
    existing: list[DenyEntry] | None = None,
    engine: str = "the artifact's plan",
    artifact_layer_info: Any = None,
) -> Proposal:
    """Pure core of `denylist derive`: results + graph + layer information -> proposal.

    ``layer_info`` is that of the engine that produced the results, whose layers are blamed. When
    that engine is not the artifact's (the per-layer diagnostic engine: marking every tensor
    changes fusion), ``artifact_layer_info`` is the artifact's: a blamed layer it does not have
    cannot be denied in the artifact's build, so it is reported as unmappable, not proposed.
    """
    names = [name for name, _ in runners]
    cand_name = _pick_runner(names, candidate, _CANDIDATE_HINTS, "candidate", None)
    ref_name = _pick_runner(names, reference, _REFERENCE_HINTS, "reference", cand_name)
    if cand_name == ref_name:
        raise DeriveError(f"candidate and reference are the same runner {cand_name!r}")
    by_name = dict(runners)
    cand, ref = by_name[cand_name], by_name[ref_name]
    if not cand or not ref:
        raise DeriveError("a runner in the results has no iterations")
    errors = tensor_errors(cand, ref, atol=atol, rtol=rtol)
    if not errors:
        raise DeriveError(f"runners {cand_name!r} and {ref_name!r} share no tensor")
    unknown = sorted(set(errors) - graph.tensor_names())
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise DeriveError(
            f"the results hold tensors the artifact's model does not have: {', '.join(unknown[:3])}{more}",
            hint="derive against the artifact built from the model that produced these results",
        )
    if layer_info is None:
        raise DeriveError(
            f"artifact {artifact_id[:12]} has no layer information",
            hint="layer information is recorded by builds with full TensorRT on a GPU (engine inspector)",
        )
    try:
        layers = parse_layer_info(layer_info)
    except ValueError as exc:
        raise DeriveError(f"artifact {artifact_id[:12]}: unusable layer information ({exc})") from None
    if layers and not any(layer.outputs or layer.tactic for layer in layers):
        raise DeriveError(
            f"artifact {artifact_id[:12]}: layer information has names only",
            hint="rebuild with DETAILED profiling verbosity",
        )
    artifact_layers: set[str] | None = None
    if artifact_layer_info is not None:
        try:
            artifact_layers = {layer.name for layer in parse_layer_info(artifact_layer_info)}
        except ValueError as exc:
            raise DeriveError(f"artifact {artifact_id[:12]}: unusable layer information ({exc})") from None

    proposal = Proposal(
        artifact_id=artifact_id,
        results=str(results_path),
        results_sha256=results_sha256,
        candidate=cand_name,
        reference=ref_name,
        atol=atol,
        rtol=rtol,
        tensors_compared=len(errors),
        tensors_exceeding=sum(e.exceeds for e in errors.values()),
        engine=engine,
    )
    known = {e.key() for e in existing or []}
    by_layer: dict[str, DenyEntry] = {}
    for origin in first_exceeding(graph, errors):
        layer = layer_for(origin, layers)
        if layer is None:
            raise DeriveError(
                f"tensor {origin.tensor.name!r} (node {origin.node.name!r}) comes from no layer "
                f"in artifact {artifact_id[:12]}'s layer information"
            )
        if layer.tactic is None:
            raise DeriveError(f"layer {layer.name!r} has no tactic in the layer information")
        error = origin.tensor
        if artifact_layers is not None and layer.name not in artifact_layers:
            proposal.unmappable.append(
                {
                    "tensor": error.name,
                    "node": origin.node.name,
                    "layer": layer.name,
                    "tactic": layer.tactic,
                    "max_abs_error": _finite(error.max_abs),
                    "reason": f"layer {layer.name!r} of {engine} does not exist in artifact {artifact_id[:12]}'s "
                    "engine (marking every tensor changes fusion)",
                }
            )
            continue
        proposal.findings.append(
            Finding(
                error.name,
                origin.node.name,
                origin.node.op_type,
                error.max_abs,
                error.max_rel,
                layer.name,
                layer.tactic,
                error.note,
            )
        )
        if layer.name in by_layer:
            continue
        entry = DenyEntry(
            layer=layer.name,
            tactic=layer.tactic,
            reason=(
                f"{error.name}: max abs error {error.max_abs:.3g}, max rel error {error.max_rel:.3g} "
                f"(atol {atol:g}, rtol {rtol:g}) vs {ref_name}"
            ),
            source=DenySource(
                results_sha256=results_sha256,
                tensor=error.name,
                max_abs_error=_finite(error.max_abs),
                max_rel_error=_finite(error.max_rel),
                artifact=artifact_id,
            ),
        )
        by_layer[layer.name] = entry
        if entry.key() in known:
            proposal.already_denied.append(entry)
        else:
            proposal.entries.append(entry)
    return proposal


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- the command's library function ---------------------------------------------------------


def derive_from_store(
    results_path: Path,
    artifact_ref: str,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    candidate: str | None = None,
    reference: str | None = None,
    model: Path | None = None,
    recipe: Path | None = None,
    write: bool = False,
) -> Proposal:
    """`trtforge denylist derive`: load everything, derive, optionally append to the sidecar."""
    from trtforge.backend.run_results import load_run_results
    from trtforge.rules.recipe import LoadedRecipe, load_recipe
    from trtforge.store import require_existing_store

    opened = require_existing_store(
        store, catalog=catalog, missing=f"no artifact with id {artifact_ref} (the store is empty)"
    )
    try:
        artifact = opened.catalog.get_artifact(artifact_ref)
    finally:
        opened.close()

    model_path = model or artifact.details.model_path
    if not model_path.is_file():
        raise DeriveError(
            f"artifact {artifact.id[:12]}'s model {model_path} is missing", hint="pass --model PATH to its ONNX file"
        )
    if model_digest(model_path) != artifact.model_sha256:
        raise DeriveError(
            f"{model_path} is not the model artifact {artifact.id[:12]} was built from (sha256 differs)",
            hint="pass --model PATH to the ONNX file the artifact was built from",
        )

    loaded: LoadedRecipe | None = None
    recipe_path = recipe or (Path(artifact.recipe_path) if artifact.recipe_path else None)
    if write:
        if recipe_path is None or not recipe_path.is_file():
            raise DeriveError(
                f"the recipe of artifact {artifact.id[:12]} is not at {recipe_path}", hint="pass --recipe PATH"
            )
        loaded = load_recipe(recipe_path)
        if loaded.recipe.tactics.deny_file is None:
            raise DeriveError(
                f"{recipe_path}: recipe has no tactics.deny_file to write to",
                hint="add `tactics: {deny_file: deny.yaml}` to the recipe",
            )
    # Entries the artifact was already built with (inline + sidecar, merged at build time).
    existing = [DenyEntry.model_validate(raw) for raw in artifact.recipe.get("tactics", {}).get("deny", [])]

    results_path = Path(results_path)
    runners = load_run_results(results_path)
    blamed_info, artifact_info, engine, notes = _results_engine(results_path, artifact)
    proposal = derive(
        runners,
        read_graph(model_path),
        blamed_info,
        artifact_id=artifact.id,
        results_path=results_path,
        results_sha256=sha256_file(results_path),
        atol=atol,
        rtol=rtol,
        candidate=candidate,
        reference=reference,
        existing=existing,
        engine=engine,
        artifact_layer_info=artifact_info,
    )
    proposal.notes.extend(notes)
    if loaded is not None:
        write_deny_file(loaded, proposal)
    return proposal


def _results_engine(results: Path, artifact: Any) -> tuple[Any, Any, str, list[str]]:
    """(layer information to blame, the artifact's to map onto or None, engine name, notes) for the
    engine the results name (``verify --save-results`` writes that record next to them)."""
    from trtforge.backend.run_results import DIAGNOSTIC_ENGINE, read_engine_record

    record = read_engine_record(results)
    plan = f"artifact {artifact.id[:12]}'s plan"
    if record is None:
        return artifact.details.layer_info, None, plan, [
            "the results do not name their engine (no .engine.json beside them): assumed the artifact's plan"
        ]
    if record.get("artifact_id") not in (None, artifact.id):
        raise DeriveError(
            f"{results.name} holds outputs of artifact {str(record['artifact_id'])[:12]}, not {artifact.id[:12]}",
            hint="derive against the artifact the results were saved for",
        )
    if record["engine"] == DIAGNOSTIC_ENGINE:
        engine = f"the per-layer diagnostic engine of artifact {artifact.id[:12]}"
        if record.get("layer_info") is None:
            raise DeriveError(
                f"{results.name} came from {engine}, whose layer information was not recorded",
                hint="the diagnostic engine's layers differ from the artifact's; save results without --per-layer",
            )
        if artifact.details.layer_info is None:
            raise DeriveError(
                f"artifact {artifact.id[:12]} has no layer information to map {engine}'s layers onto",
                hint="layer information is recorded by builds with full TensorRT on a GPU (engine inspector)",
            )
        return record["layer_info"], artifact.details.layer_info, engine, []
    if record.get("plan_sha256") not in (None, artifact.plan_sha256):
        raise DeriveError(f"{results.name} came from another plan than artifact {artifact.id[:12]}'s")
    return artifact.details.layer_info, None, plan, []


def write_deny_file(loaded: Any, proposal: Proposal) -> None:
    """Append the proposal's new entries to the recipe's sidecar (atomic write) and keep the diff."""
    from trtforge.core.fsutil import atomic_write
    from trtforge.rules.recipe import deny_file_path

    path = deny_file_path(loaded)
    assert path is not None  # checked by the caller
    proposal.deny_file = str(path)
    old_text = path.read_text(encoding="utf-8") if path.is_file() else ""
    current = read_deny_file(path) if old_text.strip() else []
    keys = {e.key() for e in current}
    proposal.already_denied.extend(e for e in proposal.entries if e.key() in keys)
    proposal.entries = [e for e in proposal.entries if e.key() not in keys]
    if not proposal.entries:
        proposal.diff = ""
        return
    new_text = _append(old_text, proposal.entries) if current else render_deny_file(proposal.entries)
    with atomic_write(path) as handle:
        handle.write(new_text.encode("utf-8"))
    proposal.written = True
    proposal.diff = "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{path.name} (before)",
            tofile=f"{path.name} (after)",
        )
    )


def _append(old_text: str, new: list[DenyEntry]) -> str:
    """Keep the file as written (comments, order) and add the new items at the end of its list.

    A file that is not a single top-level ``deny:`` block list is rewritten in canonical form.
    """
    import yaml

    root = yaml.compose(old_text, Loader=yaml.SafeLoader)
    deny_node = None
    if isinstance(root, yaml.MappingNode) and len(root.value) == 1:
        key, value = root.value[0]
        if isinstance(key, yaml.ScalarNode) and key.value == "deny":
            deny_node = value
    if not isinstance(deny_node, yaml.SequenceNode) or deny_node.flow_style or not deny_node.value:
        return render_deny_file([*parse_deny_file(old_text, "<deny file>"), *new])
    items = render_deny_file(new).split("deny:\n", 1)[1]
    indent = " " * deny_node.start_mark.column
    items = "".join(indent + line if line.strip() else line for line in items.splitlines(keepends=True))
    return (old_text if old_text.endswith("\n") else old_text + "\n") + items
