"""`trtforge fsck` and `trtforge gc`: check and tidy a store (plan first, then act)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import (
    ArchOpt,
    ArtifactArg,
    CatalogOpt,
    CcOpt,
    CudaOpt,
    FlavorOpt,
    FleetOpt,
    GpuOpt,
    JsonOpt,
    OsOpt,
    StoreOpt,
    TargetsOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output, printable, styled
from trtforge.core.errors import CheckFailedError

if TYPE_CHECKING:
    from rich.console import Console

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")]


def fsck(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Quarantine corrupt blobs, mark their artifacts, drop timing-cache versions and "
            "reference outputs whose blob is lost, remove stale temp files.",
        ),
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Re-hash every blob and cross-check blobs with the catalog (exit 1 if damage remains)."""
    output = Output.of("fsck", json_output)

    def body() -> int:
        from trtforge.stages.maintenance import fsck as fsck_stage  # lazy: SQLAlchemy

        data = fsck_stage(store, catalog, repair=repair)
        damage = None if data["ok"] else CheckFailedError(_damage(data), hint="run `trtforge fsck --repair`")
        output.result(data, lambda console: _render_fsck(console, data), exit_code=1 if damage else 0, error=damage)
        return 1 if damage else 0

    run(output, body)


def _damage(data: dict[str, Any]) -> str:
    """What keeps the store damaged, in one line."""
    found = [f"{len(data[problem])} {problem} blobs" for problem in ("corrupt", "missing") if data[problem]]
    return f"the store is damaged: {', '.join(found) or 'see the report'}"


def _users(item: dict[str, Any]) -> str:
    """The rows a damaged blob is behind: ``artifacts: a, b`` (``-``: none), then any cache rows."""
    said = [f"artifacts: {', '.join(item['artifact_ids']) or '-'}"]
    if item.get("timing_cache_ids"):
        said.append(f"timing-cache versions: {', '.join(i[:12] for i in item['timing_cache_ids'])}")
    if item.get("reference_keys"):
        said.append(f"reference outputs: {', '.join(k[:12] for k in item['reference_keys'])}")
    return "; ".join(said)


def _render_fsck(console: Console, data: dict[str, Any]) -> None:
    console.print(f"checked {data['blobs_checked']} blobs and {data['artifacts_checked']} artifacts")
    for problem in ("corrupt", "missing"):
        for item in data[problem]:
            console.print(styled((problem, "red"), f" blob {item['sha256'][:12]} ({_users(item)})"))
    for sha in data["orphans"]:
        console.print(styled(("orphan", "yellow"), f" blob {sha[:12]} has no catalog row (`trtforge gc` removes it)"))
    for path in data["stale_temp"]:
        console.print(styled(("stale temp file", "yellow"), f" {path}"))
    for warning in data["warnings"]:
        console.print(styled(("warning:", "yellow"), f" {warning}"))
    if "repair" in data:
        done = data["repair"]
        console.print(
            f"repaired: {len(done['marked_corrupt'])} artifacts marked corrupt, {len(done['quarantined'])} blobs "
            f"quarantined, {len(done['removed_temp'])} temp files removed"
        )
        caches, references = len(done["dropped_timing_caches"]), len(done["dropped_reference_outputs"])
        if caches or references:
            console.print(
                f"dropped {caches} timing-cache versions and {references} stored reference outputs whose blob was "
                "lost: they only save time, the next build (timing cache) or verify (references) makes them again"
            )
    console.print(
        styled(("ok", "green")) if data["ok"] else styled(("damaged", "red"), ": run `trtforge fsck --repair`")
    )


def gc(
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last",
            min=0,
            help="Keep the newest N artifacts of each model of a name for each target (GPU model or "
            "capability set, runtime release, platform, compatibility envelope).",
        ),
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            min=0,
            help="Only remove artifacts this store learned of over DAYS ago (a finite number; more days "
            "than dates reach back removes nothing by age).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Also remove the only verified artifact of a name.")] = False,
    dry_run: DryRunOpt = False,
    target: TargetsOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Remove unreferenced blobs, corrupt artifacts, and artifacts selected by policy.

    Retention counts per name, model and target: another GPU's engine never counts against this one's.
    "Newest" is the order in which this store learned of an artifact, never a bundle's created_at.
    The dry run lists every target with what it keeps and what goes.
    With --fleet FILE (or --target, or the flags): the only engine lookup returns for a fleet target
    is never removed, not even with --force.
    """
    output = Output.of("gc", json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> None:
        from trtforge.stages.maintenance import GcPolicy  # lazy: SQLAlchemy
        from trtforge.stages.maintenance import gc as gc_stage

        policy = GcPolicy(keep_last=keep_last, older_than_days=older_than, force=force)
        data = gc_stage(store, catalog, policy, dry_run=dry_run, notify=_to_stderr, targets=options)
        output.result(data, lambda console: _render_gc(console, data))

    run(output, body)


def _render_gc(console: Console, data: dict[str, Any]) -> None:
    plan = data["plan"]
    verb = "would remove" if data["dry_run"] else "removing"
    reasons = {item["artifact_id"]: item["reason"] for item in plan["artifacts"]}
    for group in plan["groups"]:
        if group["remove"] or data["dry_run"]:
            _render_group(console, group, reasons, verb)
    for item in plan["blob_files"]:
        console.print(f"{verb} blob {item['sha256'][:12]} {item['size']} bytes ({item['reason']})")
    for warning in plan["warnings"]:
        console.print(styled(("warning:", "yellow"), f" {warning}"))
    mib = plan["expected_freed_bytes"] / (1 << 20)
    if data["dry_run"]:
        counts = f"{len(plan['artifacts'])} artifacts and {len(plan['blob_files'])} blobs"
        console.print(f"dry run: would remove {counts} ({mib:.1f} MiB)")
    else:
        result = data["result"]
        console.print(
            f"removed {result['artifacts_removed']} artifacts and {result['blob_files_removed']} blobs "
            f"({result['bytes_freed'] / (1 << 20):.1f} MiB)"
        )


def _render_group(console: Console, group: dict[str, Any], reasons: dict[str, str], verb: str) -> None:
    """One retention group: its name, model and target, then what it keeps and what goes."""
    console.print(
        styled((group["name"], "bold"), f"  model {group['model_sha256'][:12]}  {group['target']['describe']}")
    )
    for artifact_id in group["keep"]:
        console.print(f"  keep          {artifact_id[:12]}")
    for artifact_id in group["remove"]:
        console.print(f"  {verb:13} {artifact_id[:12]} ({reasons.get(artifact_id, '')})")


def _to_stderr(message: str) -> None:
    """Waits (for builds recording blobs) are said on stderr, like a build's waits."""
    print(f"trtforge: {printable(message)}", file=sys.stderr, flush=True)


def _set_pin(artifact: str, pinned: bool, store: str | None, catalog: str | None, json_output: bool) -> None:
    output = Output.of("pin" if pinned else "unpin", json_output)

    def body() -> None:
        from trtforge.stages.inventory import set_pinned

        change = set_pinned(store, catalog, artifact, pinned)
        state = "pinned" if pinned else "unpinned"
        news = "" if change.changed else f" (was already {state})"
        output.result(
            change.as_json(), lambda console: console.print(f"{state} {change.artifact_id[:12]} {change.name}{news}")
        )

    run(output, body)


def pin(
    artifact: ArtifactArg, store: StoreOpt = None, catalog: CatalogOpt = None, json_output: JsonOpt = False
) -> None:
    """Pin an artifact: gc never removes it (for services that load its plan from the store)."""
    _set_pin(artifact, True, store, catalog, json_output)


def unpin(
    artifact: ArtifactArg, store: StoreOpt = None, catalog: CatalogOpt = None, json_output: JsonOpt = False
) -> None:
    """Unpin an artifact: gc may remove it again under its policy."""
    _set_pin(artifact, False, store, catalog, json_output)
