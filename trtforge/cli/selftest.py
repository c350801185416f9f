"""`trtforge selftest`: the GPU paths on this machine, with generated models in a throwaway store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import DeviceOpt, JsonOpt
from trtforge.cli._output import Output, styled

if TYPE_CHECKING:
    from rich.console import Console

RESULT_STYLE = {"passed": "green", "failed": "red", "skipped": "yellow"}


def selftest(
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Keep the store, recipes and models in DIR (default: a removed temp dir).",
                     show_default=False),
    ] = None,
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Got a GPU? Run this first: every GPU path checked, a report fit for a bug report.

    Exit 0 all passed, 1 a check failed, 2 no installed runtime can run engines here.
    """
    from trtforge.stages.selftest import selftest as selftest_stage

    output = Output.of("selftest", json_output)

    def body() -> int:
        report = selftest_stage(keep=keep, device=device)
        data = report.as_json()
        error = report.failure()
        output.result(data, lambda console: _render(console, data), exit_code=report.exit_code, error=error)
        if report.exit_code == 2 and error is not None and not output.json_mode:
            output.error_of(error)
        return report.exit_code

    run(output, body)


def _render(console: Console, data: dict[str, Any]) -> None:
    from rich.table import Table

    backends = ", ".join(f"{b['flavor']} {b['version']}" for b in data["backends"]) or "none"
    gpus = ", ".join(f"{g['name']} (cc {g['compute_capability']})" for g in data["gpus"]) or "none"
    console.print(f"trtforge {data['trtforge']}, python {data['python']}; runtimes: {backends}; GPUs: {gpus}")
    table = Table(box=None, header_style="bold")
    for column in ("check", "flavor", "result", "seconds", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for check in data["checks"]:
        detail = check["error"] or check["detail"]
        table.add_row(
            check["check"],
            check["flavor"] or "-",
            styled((check["result"], RESULT_STYLE[check["result"]])),
            f"{check['seconds']:.2f}",
            detail,
        )
    console.print(table)
    if data["store"]:
        console.print(f"kept in {data['store']}")
