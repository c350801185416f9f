"""`trtforge verify` and `trtforge refit`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import ArtifactArg, CatalogOpt, DeviceOpt, JsonLinesOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output, styled
from trtforge.cli._shapes import VERIFY
from trtforge.core.errors import CheckFailedError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from trtforge.stages.refit import RefitResult
    from trtforge.stages.verify import VerificationReport, VerifyOutcome


STATUS_STYLE = {"passed": "green", "failed": "red", "reference-only": "cyan"}


def verify(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Artifact ids (unique prefixes), recipe files, folders or glob patterns (quoted).",
            show_default=False,
            metavar="TARGET...",
        ),
    ],
    save_results: Annotated[
        Path | None,
        typer.Option(
            "--save-results", help="Write both sides' outputs as polygraphy RunResults JSON.", show_default=False
        ),
    ] = None,
    per_layer: Annotated[
        bool, typer.Option("--per-layer", help="Mark every intermediate tensor as an output on both sides.")
    ] = False,
    reference_only: Annotated[
        bool,
        typer.Option(
            "--reference-only", help="Run only ONNX Runtime at every shape point (no GPU); store its outputs."
        ),
    ] = False,
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs", help="Inputs: .npz or polygraphy inputs JSON (overrides verify.data).", show_default=False
        ),
    ] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
    json_lines: JsonLinesOpt = False,
) -> None:
    """Check engines against ONNX Runtime at every profile's shape points, and time them.

    One subject prints one report (one JSON object); several, a folder or a glob pattern print one
    per subject (a JSON list), each with its exit code: the command exits with the worst.
    """
    from trtforge.resolution.batch import exit_code_for, names_many
    from trtforge.stages.verify import verify_all

    output = Output.of("verify", json_output, lines=json_lines, many=names_many(targets))

    def body() -> int:
        from trtforge.rules.target import select_device

        select_device(device)
        outcomes = verify_all(
            targets,
            store=store,
            catalog=catalog,
            per_layer=per_layer,
            reference_only=reference_only,
            save_results=save_results,
            data=inputs,
            on_done=lambda outcome: _done(output, outcome),
        )
        items = [_item(outcome) for outcome in outcomes]
        if output.many:
            output.result(items, lambda console: None)  # each was rendered as it finished
        else:
            output.result(items[0], lambda console: None, exit_code=items[0]["exit_code"])
        return exit_code_for([item["exit_code"] for item in items])

    run(output, body)


def _item(outcome: VerifyOutcome) -> dict[str, Any]:
    """One subject's JSON: its report (with why it failed), or the keys of one, null, and the error."""
    from trtforge.cli._output import stopped_item, with_envelope

    if outcome.report is None:
        assert outcome.error is not None
        return stopped_item(VERIFY, outcome.error, subject=outcome.subject)
    report = outcome.report
    return with_envelope(report.as_json(), 0 if report else 1, report.failure())


def _done(output: Output, outcome: VerifyOutcome) -> None:
    """A subject as soon as it is verified: a line of `--json-lines`; for people its report (errors on stderr)."""
    output.item(_item(outcome))
    if outcome.error is not None:
        output.error_of(outcome.error, outcome.subject if output.many else None)
    elif not output.json_mode:
        assert outcome.report is not None
        render_report(output.out, outcome.report)


def render_report(console: Console, report: VerificationReport) -> None:
    style = STATUS_STYLE[report.status]
    where = (
        f" on {report.runtime.gpu_name} ({report.runtime.flavor} {report.runtime.version})" if report.runtime else ""
    )
    console.print(styled((report.status, style), f" {report.name} {report.subject}{where}"))
    if report.engine is not None:
        console.print(f"engine: {report.engine}")
    if report.status == "reference-only":
        table = _reference_table(report)
    else:
        table = _check_table(console, report)
    console.print(table)
    from trtforge.stages.verify import iter_failures

    for line in iter_failures(report):
        console.print(styled(("failed:", "red"), f" {line}"))
    for perf in report.perf:
        _render_perf(console, perf)
    if report.saved_results:
        console.print(f"results saved to {report.saved_results}")


# trtexec's names for the figures (samples/common/sampleReporting.cpp), in its order.
FIGURES = (
    ("latency_ms", "Latency"),
    ("enqueue_time_ms", "Enqueue Time"),
    ("h2d_latency_ms", "H2D Latency"),
    ("gpu_compute_time_ms", "GPU Compute Time"),
    ("d2h_latency_ms", "D2H Latency"),
)


def _render_perf(console: Console, perf: dict[str, Any]) -> None:
    """One profile's timing as trtexec's performance summary (docs/verify-and-refit.md reads one)."""
    streams = perf.get("streams")
    if streams is None:
        how = [perf["method"]]
    else:
        profiles = ", ".join(map(str, perf["stream_profiles"]))
        how = [f"{streams} streams on profiles {profiles}" if streams > 1 else "1 stream"]
    if perf.get("cuda_graph"):
        how.append("CUDA graphs")
    rate = perf.get("throughput_qps")
    console.print(
        f"perf profile {perf['profile']} {perf['label']} ({', '.join(how)}): "
        + (f"Throughput {rate:.1f} qps" if rate else "Throughput -")
    )
    for key, label in FIGURES:
        if key in perf:
            f = perf[key]
            console.print(
                f"  {label + ':':<18} median {f['median']:.4f} ms, mean {f['mean']:.4f}, min {f['min']:.4f}, "
                f"max {f['max']:.4f}, p90 {f['p90']:.4f}, p99 {f['p99']:.4f}"
            )
    if "total_host_walltime_ms" in perf:
        memory = perf.get("device_memory_bytes")
        console.print(
            f"  Total Host Walltime {perf['total_host_walltime_ms']:.2f} ms, "
            f"Total GPU Compute Time {perf['total_gpu_compute_time_ms']:.2f} ms over {perf['queries']} queries"
            + (f"; device memory {memory / 2**20:.1f} MiB" if memory is not None else "")
        )
    for stream in perf.get("per_stream", []) if (streams or 1) > 1 else []:
        compute = stream["gpu_compute_time_ms"]["median"]
        console.print(
            f"  stream {stream['stream']} (profile {stream['profile']}): {stream['throughput_qps'] or 0:.1f} qps, "
            f"GPU Compute Time median {compute:.4f} ms"
        )
    if "outputs_match_plain_run" in perf:
        same = "match" if perf["outputs_match_plain_run"] else "DIFFER FROM"
        console.print(f"  timed outputs {same} the plain run's")
    if perf.get("streams_note"):
        console.print(f"  note: {perf['streams_note']}")
    for hint in perf.get("bottlenecks", []):
        console.print(f"  hint: {hint}")


def _reference_table(report: VerificationReport) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("profile", "point", "shapes", "outputs", "reference", "result"):
        table.add_column(column)
    for point in report.points:
        outputs = " ".join(f"{o['name']}{o['shape']}" for o in point.outputs)
        table.add_row(
            str(point.profile),
            point.label,
            _shapes(point.shapes),
            outputs,
            "stored earlier" if point.reference_reused else "computed, stored",
            styled((point.status, STATUS_STYLE[point.status])),  # nothing was compared: never "passed"
        )
    return table


def _check_table(console: Console, report: VerificationReport) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("profile", "point", "shapes", "output", "max abs", "max rel", "mismatches", "result"):
        table.add_column(column)
    for point in report.points:
        for out in point.outputs:
            if out["intermediate"] and out["passed"]:
                continue
            table.add_row(
                str(point.profile),
                point.label,
                _shapes(point.shapes),
                out["name"] + (" (layer)" if out["intermediate"] else ""),
                _num(out.get("max_abs")),
                _num(out.get("max_rel")),
                f"{out['mismatches']}/{out['elements']}",
                styled(("ok", "green")) if out["passed"] else styled(("FAIL", "red")),
            )
        if point.first_divergent:
            console.print(f"profile {point.profile} {point.label}: first diverging tensor {point.first_divergent}")
    return table


def _shapes(shapes: dict[str, list[int]]) -> str:
    return " ".join(f"{name}{shape}" for name, shape in shapes.items())


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def refit(
    artifact: ArtifactArg,
    weights: Annotated[Path, typer.Option("--weights", help="ONNX file with the new weights.", show_default=False)],
    verify_after: Annotated[bool, typer.Option("--verify", help="Verify the refitted engine afterwards.")] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Refit a refittable engine with new weights (GPU); the result is a new artifact."""
    from trtforge.stages.refit import refit as refit_stage

    output = Output.of("refit", json_output)

    def body() -> int:
        from trtforge.rules.target import select_device

        select_device(device)
        result = refit_stage(artifact, weights, store=store, catalog=catalog, verify=verify_after)
        failed = result.verification is not None and result.verification["status"] == "failed"
        error = CheckFailedError(f"the refitted engine {result.artifact_id[:12]} failed verification")
        code, error = (1, error) if failed else (0, None)
        output.result(result.as_json(), lambda console: _render_refit(console, result), exit_code=code, error=error)
        return code

    run(output, body)


def _render_refit(console: Console, result: RefitResult) -> None:
    console.print(f"refitted {result.parent_id[:12]} -> {result.artifact_id[:12]} with {result.weights}")
    console.print(f"plan {result.plan_path}")
    if result.verification is not None:
        console.print(f"verification: {result.verification['status']}")
