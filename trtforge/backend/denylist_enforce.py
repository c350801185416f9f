"""Enforce tactic deny entries during a TensorRT build, and report what was removed.

Two mechanisms, chosen by what the installed TensorRT offers:

* **Editable timing cache** (TensorRT >= 10.8, the only one in TensorRT 11): build once with
  ``BuilderFlag.EDITABLE_TIMING_CACHE``, ``ProfilingVerbosity.DETAILED`` and a VERBOSE logger.
  The builder's log is the only place that names each autotuned op's timing-cache key and its
  candidate tactics, so it is parsed (:func:`parse_autotuning_log`). Where the selected tactic
  of a matching op is denied, ``ITimingCache.update(key, TimingCacheValue(hash, ms))`` puts the
  fastest allowed candidate in its place; the engine is then rebuilt from that cache with
  ``ERROR_ON_TIMING_CACHE_MISS`` so nothing is re-timed behind our back.
* **IAlgorithmSelector** (TensorRT < 10.8; removed in 11): drop denied choices per layer in
  ``select_algorithms`` and record TensorRT's final choices from ``report_algorithms``.
  Algorithm choices expose tactic ids, not kernel names, so name entries need the timing cache.

TensorRT-RTX has neither (no timing cache, no algorithm selector): a recipe with deny entries
is refused before a build starts.

The decision logic (log parsing, which ops/choices an entry hits, which alternative replaces
a denied tactic) is pure and tested on the CPU; the few calls into TensorRT need a GPU.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

from trtforge.backend.plugins import plugin_runtime
from trtforge.core.errors import BuildError, UnsatisfiableDenyError, UnsupportedOptionError
from trtforge.rules.capabilities import Mechanism, check_enforceable
from trtforge.rules.denylist import (
    DenyEntry,
    entries_for_layer,
    first_hit,
    parse_layer_info,
    tactic_id_of,
    violations_in,
)
from trtforge.rules.flavors import BackendInfo

# -- editable timing cache: the builder's autotuning log ----------------------------------


@dataclass(frozen=True)
class Candidate:
    """One row of an op's "Sorted table of all evaluated tactics" (fastest first)."""

    tactic_hash: str
    cost_ms: float
    kernel_name: str | None = None
    tactic_id: str | None = None


@dataclass
class AutotunedOp:
    """An ``Autotuning op <name>(key: 0x...)`` block of the VERBOSE builder log."""

    name: str
    key: str
    candidates: list[Candidate] = field(default_factory=list)
    selected_hash: str | None = None
    selected_cost_ms: float | None = None

    @property
    def selected(self) -> Candidate | None:
        for candidate in self.candidates:
            if _same_hash(candidate.tactic_hash, self.selected_hash):
                return candidate
        if self.selected_hash is None:
            return None
        return Candidate(self.selected_hash, self.selected_cost_ms or math.nan)


# Format as documented by NVIDIA's sampleEditableTimingCache (TensorRT 10.8 README):
#   Autotuning op matMul1(key: 0x1814870c44ff0f8574df6e3dda04cbd7):
#   Sorted table of all evaluated tactics:
#   tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, kernel_name, tactic_hash, tunable_parameter
#      3, 0.0112640, 1.00000, 0.50673, sm80_xmma_gemm_..., 0x665ded9abbf88,
#   The selected tactic is (tactic hash, cost(in ms)):0x665ded9abbf88,  0.011264
# Loggers may prefix lines ("[V] ", "[11/25/2026-12:00:00] [TRT] [V] "), so patterns search.
# Newer releases append the ONNX layer after the key ("...(key: 0x...): [ONNX Layer: n]"), as
# printed in NVIDIA's TensorRT cookbook (trt-samples-for-hackathon-cn, 02-API/TimingCache).
# tests/test_denylist_enforce.py checks the parser against both texts; no GPU build here.
# That cookbook reports that its Python ILogger subclass crashed while recording this build's
# log and captures a child process's output instead; polygraphy's own ILogger subclass logs
# VERBOSE builds routinely. Untested here (no GPU): the first thing to check on one.
_OP_LINE = re.compile(r"Autotuning op (?P<name>.+?)\(key: (?P<key>0x[0-9a-fA-F]+)\)")
_TABLE_HEADER = re.compile(r"tactic_id\s*,.*tactic_hash")
_SELECTED = re.compile(
    r"The selected tactic is \(tactic hash, cost\(in ms\)\)\s*:\s*"
    r"(?P<hash>0x[0-9a-fA-F]+)\s*,\s*(?P<cost>[-+0-9.eE]+|nan|inf)"
)
_ROW_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")


def _same_hash(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and tactic_id_of(a) == tactic_id_of(b)


def _split_lines(messages: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for message in messages:
        lines.extend(message.splitlines())
    return lines


def parse_autotuning_log(messages: Iterable[str]) -> list[AutotunedOp]:
    """Autotuned ops, their keys, candidates and selection, from VERBOSE builder messages."""
    ops: list[AutotunedOp] = []
    current: AutotunedOp | None = None
    columns: list[str] | None = None
    for raw in _split_lines(messages):
        line = _ROW_PREFIX.sub("", raw.strip())
        if match := _OP_LINE.search(line):
            current = AutotunedOp(match["name"].strip(), match["key"].lower())
            ops.append(current)
            columns = None
            continue
        if current is None:
            continue
        if _TABLE_HEADER.search(line):
            columns = [c.strip() for c in line.split(",")]
            continue
        if match := _SELECTED.search(line):
            current.selected_hash = match["hash"].lower()
            current.selected_cost_ms = float(match["cost"])
            columns = None
            continue
        if columns is not None:
            row = _table_row(columns, line)
            if row is not None:
                current.candidates.append(row)
    return ops


def _table_row(columns: list[str], line: str) -> Candidate | None:
    cells = [c.strip() for c in line.split(",")]
    if len(cells) < len(columns) - 1:
        return None
    values = dict(zip(columns, cells, strict=False))
    tactic_hash = values.get("tactic_hash", "")
    if tactic_id_of(tactic_hash) is None:
        return None
    try:
        cost = float(values.get("cost(in ms)", "nan"))
    except ValueError:
        return None
    return Candidate(tactic_hash.lower(), cost, values.get("kernel_name") or None, values.get("tactic_id") or None)


def op_layer_names(op: str, engine_layers: Iterable[str] = ()) -> list[str]:
    """Names a deny entry may use for an autotuned op: the op itself and the engine layers built
    from it (Myelin names them ``<op>_myl<N>_<M>``; fused layers join names with ``" + "``)."""
    own = re.compile(rf"{re.escape(op)}_myl\d+_\d+")
    names = [op]
    for layer in engine_layers:
        if layer != op and (own.fullmatch(layer) or op in layer.split(" + ")):
            names.append(layer)
    return names


@dataclass(frozen=True)
class CacheEdit:
    """Replace the denied selection of one timing-cache key with an allowed candidate."""

    op: str
    key: str
    denied: Candidate
    replacement: Candidate
    entry_layer: str
    entry_tactic: str

    def as_json(self) -> dict[str, Any]:
        return {
            "layer": self.op,
            "key": self.key,
            "removed": asdict(self.denied),
            "replacement": asdict(self.replacement),
            "entry": {"layer": self.entry_layer, "tactic": self.entry_tactic},
        }


def _denied_by(candidate: Candidate, names: Sequence[str], entries: Sequence[DenyEntry]) -> DenyEntry | None:
    for name in names:
        hit = first_hit(entries, name, name=candidate.kernel_name, tactic_id=candidate.tactic_hash)
        if hit is not None:
            return hit
    return None


def plan_cache_edits(
    ops: Sequence[AutotunedOp], entries: Sequence[DenyEntry], engine_layers: Sequence[str] = ()
) -> list[CacheEdit]:
    """For each op whose selected tactic is denied, the fastest allowed candidate.

    Raises UnsatisfiableDenyError naming the layer when every candidate of such an op is denied.
    """
    edits = []
    for op in ops:
        names = op_layer_names(op.name, engine_layers)
        relevant = [e for e in entries if any(entries_for_layer([e], n) for n in names)]
        if not relevant:
            continue
        selected = op.selected
        if selected is None:
            continue

        entry = _denied_by(selected, names, relevant)
        if entry is None:
            continue
        allowed = [c for c in sorted(op.candidates, key=lambda c: c.cost_ms) if _denied_by(c, names, relevant) is None]
        if not allowed:
            raise UnsatisfiableDenyError(
                f"deny entries leave layer {op.name!r} without a tactic: "
                f"all {len(op.candidates)} candidates are denied",
                hint=f"narrow the entry for layer {entry.layer!r} (tactic {entry.tactic!r})",
            )
        edits.append(CacheEdit(op.name, op.key, selected, allowed[0], entry.layer, entry.tactic))
    return edits


# -- algorithm selector: which choices to keep --------------------------------------------


@dataclass
class SelectorRecord:
    """What the selector removed, and TensorRT's final choice per layer."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    chosen: list[dict[str, Any]] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)


def filter_choices(
    entries: Sequence[DenyEntry], layer: str, tactic_ids: Sequence[int]
) -> tuple[list[int], list[tuple[int, DenyEntry]]]:
    """Indices of choices to keep for ``layer`` and the removed (tactic id, entry) pairs."""
    relevant = entries_for_layer(entries, layer)
    keep: list[int] = []
    removed: list[tuple[int, DenyEntry]] = []
    for index, tactic in enumerate(tactic_ids):
        hit = first_hit(relevant, layer, tactic_id=tactic)
        if hit is None:
            keep.append(index)
        else:
            removed.append((tactic, hit))
    return keep, removed


def _make_selector(trt: ModuleType, entries: Sequence[DenyEntry], record: SelectorRecord) -> Any:
    class DenySelector(trt.IAlgorithmSelector):  # type: ignore[name-defined,misc]
        """Drops denied tactics; TensorRT then picks the fastest of what is left."""

        def __init__(self) -> None:
            trt.IAlgorithmSelector.__init__(self)

        def select_algorithms(self, context: Any, choices: Sequence[Any]) -> list[int]:
            ids = [int(c.algorithm_variant.tactic) for c in choices]
            keep, removed = filter_choices(entries, context.name, ids)
            for tactic, entry in removed:
                entry_json = {"layer": entry.layer, "tactic": entry.tactic}
                record.removed.append({"layer": context.name, "tactic": hex(tactic), "entry": entry_json})
            if not keep:
                # Returning nothing would let TensorRT choose freely; keep all and fail after the build.
                record.exhausted.append(context.name)
                return list(range(len(choices)))
            return keep

        def report_algorithms(self, contexts: Sequence[Any], choices: Sequence[Any]) -> None:
            for context, choice in zip(contexts, choices, strict=False):
                record.chosen.append({"layer": context.name, "tactic": hex(int(choice.algorithm_variant.tactic))})

    return DenySelector()


# -- the build ----------------------------------------------------------------------------


@dataclass
class EnforcementReport:
    """Recorded on the artifact (``details["denylist"]``)."""

    mechanism: Mechanism
    entries: list[dict[str, Any]]
    removed: list[dict[str, Any]] = field(default_factory=list)
    checked_layers: int | None = None  # None: no layer information on this machine
    violations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


RuntimeMaker = Callable[[], Any]  # a new IRuntime with the plugin libraries the build's plans need


def engine_layer_info(trt: ModuleType, plan: Any, *, runtime: RuntimeMaker | None = None) -> dict[str, Any] | None:
    """Inspector JSON of a built plan, or None where no engine can be deserialized (no GPU)."""
    try:
        return inspect_engine(trt, plan, runtime=runtime)
    except Exception:  # no CUDA device/driver: layer information is unavailable, not an error
        return None


def inspect_engine(trt: ModuleType, plan: Any, *, runtime: RuntimeMaker | None = None) -> dict[str, Any] | None:
    """Inspector JSON of a built plan; None when the runtime cannot deserialize it. Raises what
    TensorRT raises: deny-list enforcement must see that, not a silent "no information".

    ``runtime`` makes the runtime that deserializes it: the build's, which loads the plugin
    libraries the plan needs first (:func:`trtforge.backend.plugins.plugin_runtime`); by default
    one with TensorRT's standard plugins only."""
    if runtime is None:
        runtime = partial(plugin_runtime, trt, trt.Logger(trt.Logger.ERROR), (), [])
    engine = runtime().deserialize_cuda_engine(plan)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


_UNCONFIRMED_HINT = (
    "deny entries are enforced only where the built engine can be loaded and inspected "
    "(full TensorRT on a CUDA GPU); nothing was stored"
)


def _unconfirmed(why: str) -> BuildError:
    return BuildError(f"cannot confirm that the deny entries were enforced: {why}", hint=_UNCONFIRMED_HINT)


def check_report(report: EnforcementReport, entries: Sequence[DenyEntry], layer_info: Any) -> None:
    """After the build: no layer of the engine may run a denied tactic.

    This check is what confirms enforcement, so it fails closed: without layer information that
    names tactics, the build fails (BuildError, exit 1) rather than storing an unchecked plan.
    """
    if layer_info is None:
        raise _unconfirmed("the built engine's layer information is unavailable (engine not loadable here)")
    try:
        layers = parse_layer_info(layer_info)
    except ValueError as exc:
        raise _unconfirmed(f"the built engine's layer information is unreadable ({exc})") from None
    if not any(layer.tactic_name or layer.tactic_value for layer in layers):
        raise _unconfirmed(f"the layer information of the built engine names no tactics ({len(layers)} layers)")
    report.checked_layers = len(layers)
    report.violations = [v.as_json() for v in violations_in(entries, layers)]
    if report.violations:
        first = report.violations[0]
        raise BuildError(
            f"the built engine still runs denied tactic {first['tactic']!r} on layer {first['layer']!r}",
            hint="the deny entry was not enforceable by this TensorRT; see the build log",
        )


def build_with_denylist(
    trt: ModuleType,
    backend: BackendInfo,
    builder: Any,
    network: Any,
    config: Any,
    entries: Sequence[DenyEntry],
    verbose_log: list[str],
    *,
    runtime: RuntimeMaker | None = None,
) -> tuple[Any, EnforcementReport]:
    """Build with the deny entries enforced (GPU only); returns the plan and the report.

    ``verbose_log`` is the list the builder's logger appends VERBOSE/INFO messages to; ``runtime``
    makes the runtime that deserializes the built plans for their layer information (:func:`inspect_engine`).
    """
    mechanism = check_enforceable(backend, entries)
    assert mechanism is not None  # entries are non-empty here
    report = EnforcementReport(mechanism, [e.model_dump(mode="json", exclude_none=True) for e in entries])
    if mechanism == "editable_timing_cache" and hasattr(trt.BuilderFlag, "EDITABLE_TIMING_CACHE"):
        plan = build_timing_cache_path(trt, builder, network, config, entries, verbose_log, report, runtime=runtime)
    elif hasattr(trt, "IAlgorithmSelector"):
        report.mechanism = "algorithm_selector"
        plan = _build_selector(trt, builder, network, config, entries, report)
    else:
        raise UnsupportedOptionError(f"{backend.label} offers neither an editable timing cache nor IAlgorithmSelector")
    try:
        info = inspect_engine(trt, plan, runtime=runtime)
    except Exception as exc:  # whatever TensorRT raised: enforcement is not confirmed, nothing is stored
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise _unconfirmed(f"inspecting the built engine failed ({type(exc).__name__}: {detail})") from None
    check_report(report, entries, info)
    return plan, report


def _require_plan(plan: Any, what: str) -> Any:
    if plan is None or plan.nbytes == 0:
        raise BuildError(f"the {what} build failed; see the build log")
    return plan


def build_timing_cache_path(
    trt: ModuleType,
    builder: Any,
    network: Any,
    config: Any,
    entries: Sequence[DenyEntry],
    verbose_log: list[str],
    report: EnforcementReport,
    *,
    runtime: RuntimeMaker | None = None,
) -> Any:
    config.set_flag(trt.BuilderFlag.EDITABLE_TIMING_CACHE)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    # Empty on purpose (as in sampleEditableTimingCache): a key already cached is not autotuned,
    # so its candidates would never reach the log. trtforge.resolution.timing_cache_policy keeps this cache private.
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    del verbose_log[:]
    first = _require_plan(builder.build_serialized_network(network, config), "first (profiling)")
    ops = parse_autotuning_log(verbose_log)
    if not ops:
        report.notes.append("the builder logged no autotuned ops; only the after-build check applies")
    info = engine_layer_info(trt, first, runtime=runtime)
    engine_layers = [layer.name for layer in parse_layer_info(info)] if info is not None else []
    edits = plan_cache_edits(ops, entries, engine_layers)
    if not edits:
        return first
    apply_cache_edits(trt, cache, edits, report)
    if hasattr(trt.BuilderFlag, "ERROR_ON_TIMING_CACHE_MISS"):
        config.set_flag(trt.BuilderFlag.ERROR_ON_TIMING_CACHE_MISS)
    return _require_plan(builder.build_serialized_network(network, config), "rebuild with the edited timing cache")


def apply_cache_edits(trt: ModuleType, cache: Any, edits: Sequence[CacheEdit], report: EnforcementReport) -> None:
    """Write each replacement into the editable timing cache (``ITimingCache.update``)."""
    for edit in edits:
        key = trt.TimingCacheKey.parse(edit.key)
        value = trt.TimingCacheValue(int(edit.replacement.tactic_hash, 16), float(edit.replacement.cost_ms))
        if not cache.update(key, value):
            raise BuildError(f"TensorRT refused the timing-cache edit for layer {edit.op!r} (key {edit.key})")
        report.removed.append(edit.as_json())


def _build_selector(
    trt: ModuleType, builder: Any, network: Any, config: Any, entries: Sequence[DenyEntry], report: EnforcementReport
) -> Any:
    record = SelectorRecord()
    config.algorithm_selector = _make_selector(trt, entries, record)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    plan = _require_plan(builder.build_serialized_network(network, config), "algorithm-selector")
    if record.exhausted:
        raise UnsatisfiableDenyError(
            f"deny entries leave layer {record.exhausted[0]!r} without a tactic: every choice is denied",
            hint="narrow the deny entry for that layer",
        )
    report.removed = record.removed
    chosen = [c for c in record.chosen if first_hit(entries, c["layer"], tactic_id=c["tactic"]) is not None]
    report.violations = [{"layer": c["layer"], "tactic": c["tactic"], "entry": None} for c in chosen]
    if chosen:
        raise BuildError(f"TensorRT reported denied tactic {chosen[0]['tactic']} on layer {chosen[0]['layer']!r}")
    return plan
