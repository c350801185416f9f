"""`trtforge build`.

Rich and the build stage are imported inside the command, so `--help` and cache hits stay light.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import reported, run
from trtforge.cli._options import (
    ArchOpt,
    CatalogOpt,
    CcOpt,
    CudaOpt,
    DeviceOpt,
    FlavorOpt,
    FleetOpt,
    GpuOpt,
    JsonLinesOpt,
    JsonOpt,
    OsOpt,
    StoreOpt,
    TargetsOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output, naming, styled, target_cell
from trtforge.core.errors import BadInputError
from trtforge.core.interrupts import Interrupted, deferred

if TYPE_CHECKING:
    from rich.console import Console

    from trtforge.cli._progress import BuildProgress
    from trtforge.stages.build import BuildResult, BuildStage, Executor
    from trtforge.stages.reproduce import ReproduceResult

STATUS_STYLE = {"built": "green", "cached": "cyan", "skipped": "dim", "failed": "red"}


class ExecutorName(str, Enum):
    """Where misses are built (`--executor`)."""

    local = "local"
    ray = "ray"


def exit_code_for(results: list[BuildResult]) -> int:
    """2 if any recipe was bad input, else 1 if any build failed, else 0."""
    codes = {r.exit_code for r in results if not r}
    if 2 in codes:
        return 2
    return 1 if codes else 0


def build(
    recipes: Annotated[
        list[str] | None,
        typer.Argument(
            help="Recipe YAML files, folders (their *.yaml and *.yml files, not subfolders) or glob patterns "
            "(quoted); an .onnx file builds that model with defaults.",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the build key is cached.")] = False,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail-fast", help="Stop at the first failure; builds one at a time, in order."),
    ] = False,
    reproduce_id: Annotated[
        str | None,
        typer.Option(
            "--reproduce",
            help="Rebuild this artifact (an id, or a recipe: the artifact its build key names) from its "
            "recorded recipe, model and timing cache; exit 0 if the plan bytes match, 1 if not.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Artifact name for a model file given instead of a recipe (default: its stem)."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Recipes built at once, each in its own worker process (default: one per core, "
            "as far as available memory gives each 2 GiB; 1: one at a time). Results keep recipe order.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Stop a build that runs longer than this: that recipe fails (error_kind timed_out), "
            "the others go on. Not part of the build key.",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        ExecutorName,
        typer.Option(
            "--executor",
            help="Where misses are built: local (worker processes on this machine) or ray (a Ray task "
            "per recipe and target, on a node that fits it; hits are answered here first). See docs/ray.md.",
        ),
    ] = ExecutorName.local,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help="With --executor ray: the cluster (ray://HOST:10001, HOST:6379, auto); default $RAY_ADDRESS, "
            "else a local Ray instance, started and stopped here.",
            show_default=False,
        ),
    ] = None,
    ray_pin_gpu: Annotated[
        bool,
        typer.Option(
            "--ray-pin-gpu",
            help="With --executor ray: TensorRT-RTX tasks run on a node of the target's GPU type "
            "(accelerator_type:L4), e.g. near where the engines are verified; default: any node's CPUs.",
        ),
    ] = False,
    device: DeviceOpt = None,
    target: TargetsOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    json_output: JsonOpt = False,
    json_lines: JsonLinesOpt = False,
) -> None:
    """Build engines from recipes (or ONNX files); unchanged recipes are cache hits.

    By default for this machine. With --target SPEC (repeat), the flags for one target, or --fleet
    FILE, each recipe is built for each target this machine can build: TensorRT-RTX for any compute
    capability with the installed release; full TensorRT for targets whose GPU is this machine's.
    The others are reported skipped, with the reason (exit 0). With --executor ray, each miss is
    built by a Ray task on a node that fits its target (full TensorRT: a node of its GPU type).
    """
    output = Output.of("build" if reproduce_id is None else "build --reproduce", json_output, lines=json_lines)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )
    if reproduce_id is not None:
        given = {
            "--force": force, "--fail-fast": fail_fast, "--name": name, "--jobs": jobs, "--timeout": timeout,
            "--executor": executor is not ExecutorName.local, "--ray-address": ray_address,
            "--ray-pin-gpu": ray_pin_gpu, "--target": target, "--fleet": fleet, "--gpu": gpu, "--cc": cc,
            "--flavor": flavor, "--trt": trt, "--cuda": cuda, "--os": os_name, "--arch": arch,
        }  # fmt: skip
        refused = [flag for flag, value in given.items() if value is not None and value is not False]
        _reproduce(output, reproduce_id, recipes, store, catalog, device, refused)
        return
    recipes = recipes or []
    if not recipes:
        with reported(output):
            raise BadInputError(
                "give one or more recipe files, or --reproduce ID",
                hint="e.g. trtforge build recipes/example.yaml, 'recipes/*.yaml' or recipes/ (its *.yaml files)",
            )

    def body() -> int:
        from trtforge.rules.target import select_device

        select_device(device)
        from trtforge.resolution.batch import expand_recipes
        from trtforge.stages.build import BuildStage, explicit_targets

        targets = explicit_targets(options)
        items = expand_recipes(recipes)
        if name is not None and (len(items) != 1 or not str(items[0]).lower().endswith(".onnx")):
            raise BadInputError("--name names the artifact of one ONNX file; recipes carry their own name")

        chosen = _executor(executor, ray_address, ray_pin_gpu)
        progress = None
        if output.interactive and executor is ExecutorName.local:
            from trtforge.cli._progress import BuildProgress  # rich: only for a person at a terminal

            progress = BuildProgress(output.err)
        stage = BuildStage(
            store,
            catalog=catalog,
            force=force,
            progress=progress,
            name=name,
            jobs=jobs,
            timeout=timeout,
            targets=targets,
            executor=chosen,
        )
        results, stopped = _build_all(stage, items, fail_fast, progress, lambda result: _done(output, result))
        return _report(output, stage, results, stopped)

    run(output, body)


def _done(output: Output, result: BuildResult) -> None:
    """A result as soon as it is ready: a line of `--json-lines`; with JSON, its error on stderr too
    (the text output lists errors under its table; an interrupted one is said by the batch's one
    `interrupted by` line)."""
    output.item(result.as_json())
    if output.json_mode and result.error and result.error_kind != "interrupted":
        output.error_lines(naming(result.recipe, result.error), result.hint, result.more_errors)


def _report(
    output: Output,
    stage: BuildStage,
    results: list[BuildResult],
    stopped: Interrupted | None,
) -> int:
    """Print the batch's results whole (a signal meanwhile is raised after them) and give the exit
    code: the worst result's, or 130 / 143 when a signal stopped the batch or came while printing."""
    late = None
    try:
        with deferred():
            stage.close()
            for note in stage.notes:
                output.info(f"note: {note}")
            output.result([r.as_json() for r in results], lambda console: _render(console, output, results))
    except Interrupted as after:
        late = after
    signal = stopped or late
    if signal is not None:
        kept = sum(1 for r in results if r)
        output.error_lines(f"interrupted by {signal.name}: {kept} of {len(results)} result(s) kept")
        return signal.exit_code
    return exit_code_for(results)


def _build_all(
    stage: BuildStage,
    items: list[Any],
    fail_fast: bool,
    progress: BuildProgress | None,
    on_done: Callable[[BuildResult], None],
) -> tuple[list[BuildResult], Interrupted | None]:
    """The batch's results, and the signal that stopped it (SIGINT/SIGTERM: every recipe still has
    its result, those not recorded ``interrupted``; the command exits 130 / 143 after printing them)."""
    from trtforge.stages.build import BatchInterrupted

    try:
        with progress if progress is not None else nullcontext():
            results = stage.build_all(
                items,
                fail_fast=fail_fast,
                on_start=progress.start_recipe if progress is not None else None,
                on_done=on_done,
            )
    except BatchInterrupted as interrupted:
        return interrupted.results, interrupted
    except BaseException:
        stage.close()
        raise
    return results, None


def _executor(name: ExecutorName, address: str | None, pin_gpu: bool) -> Executor:
    """The --executor's executor (local: this machine, a build process per build when several run at
    once); Ray's options only with Ray."""
    if name is ExecutorName.local:
        given = [flag for flag, value in (("--ray-address", address), ("--ray-pin-gpu", pin_gpu)) if value]
        if given:
            raise BadInputError(f"{' and '.join(given)} go with --executor ray", hint="add --executor ray")
        from trtforge.stages.build_processes import LocalProcesses

        return LocalProcesses()
    from trtforge.stages.ray_builds import RayExecutor, RaySettings

    return RayExecutor(RaySettings(address=address, pin_gpu=pin_gpu))


def _reproduce(
    output: Output,
    ref: str,
    recipes: list[str] | None,
    store: str | None,
    catalog: str | None,
    device: int | None,
    refused: list[str],
) -> None:
    """Rebuild as recorded: the build's own options (``refused``, as given) would change nothing, so
    they are refused rather than silently ignored; the store, catalog and device are honoured."""

    def body() -> int:
        if recipes:
            raise BadInputError("--reproduce takes one artifact id or recipe file, not recipe arguments")
        if refused:
            raise BadInputError(
                f"{', '.join(refused)}: not an option of build --reproduce (it rebuilds as the artifact was recorded)",
                hint=f"drop {' and '.join(refused)}",
            )
        from trtforge.rules.target import select_device
        from trtforge.stages.reproduce import reproduce

        select_device(device)

        result = reproduce(ref, store, catalog=catalog)
        code = 0 if result else 1
        output.result(
            result.as_json(), lambda console: _render_reproduce(console, result), exit_code=code, error=result.failure()
        )
        return code

    run(output, body)


def _render_reproduce(console: Console, result: ReproduceResult) -> None:
    if result.identical:
        console.print(
            styled(
                ("identical", "green"), f" {result.name} {result.artifact_id[:12]}: plan {result.rebuilt_sha256[:12]}"
            )
        )
    else:
        console.print(
            styled(
                ("differs", "yellow" if result.benign else "red"),
                f" {result.name} {result.artifact_id[:12]}: recorded {result.recorded_sha256[:12]} "
                f"({result.recorded_size} bytes), rebuilt {result.rebuilt_sha256[:12]} ({result.rebuilt_size} bytes)",
            )
        )
        if result.difference is not None:
            console.print(f"  {result.difference.describe()}")


def _render(console: Console, output: Output, results: list[BuildResult]) -> None:
    from rich.table import Table

    with_targets = any(r.target_request is not None for r in results)
    table = Table(box=None, show_header=True, header_style="bold")
    for column in ("status", "name", *(("target",) if with_targets else ()), "artifact", "seconds", "plan"):
        table.add_column(column)
    for r in results:
        style = STATUS_STYLE[r.status]
        where = (target_cell(r.as_json()),) if with_targets else ()
        table.add_row(
            styled((r.status, style)),
            r.name or "-",
            *where,
            (r.artifact_id or "-")[:12],
            f"{r.seconds:.2f}",
            r.plan_path or "-",
        )
    console.print(table)
    for r in results:
        if r.reason:
            output.info(f"{r.status}: {r.name or r.recipe} for {target_cell(r.as_json())}: {r.reason}")
            if r.hint and not r.error:
                output.info(f"hint: {r.hint}")
        if r.error:
            output.error_lines(naming(r.recipe, r.error), r.hint, r.more_errors)
