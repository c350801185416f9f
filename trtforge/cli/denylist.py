"""`trtforge denylist derive`: deny entries from a polygraphy accuracy diff."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console


app = typer.Typer(help="Tactic deny lists: derive entries from accuracy diffs.", no_args_is_help=True)


@app.command("derive")
def derive(
    results: Annotated[Path, typer.Argument(help="Polygraphy run results JSON (TensorRT + reference runner).")],
    artifact: Annotated[str, typer.Option("--artifact", help="Artifact id (or unique prefix) the results came from.")],
    atol: Annotated[float, typer.Option("--atol", "--threshold", min=0.0, help="Absolute error threshold.")] = 1e-3,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative error threshold.")] = 1e-3,
    candidate: Annotated[
        str | None, typer.Option("--candidate", help="TensorRT runner name (default: the one named trt...).")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference runner name (default: the one named onnxrt...).")
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help="The artifact's ONNX model, if it moved.")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="The artifact's recipe, if it moved.")] = None,
    write: Annotated[bool, typer.Option("--write", help="Append entries to the recipe's deny_file.")] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find the first layers whose output drifts past the threshold and propose deny entries."""
    output = Output.of("denylist derive", json_output)

    def body() -> None:
        from trtforge.stages.denylist_derive import derive_from_store

        proposal = derive_from_store(
            results,
            artifact,
            store=store,
            catalog=catalog,
            atol=atol,
            rtol=rtol,
            candidate=candidate,
            reference=reference,
            model=model,
            recipe=recipe,
            write=write,
        )
        data = proposal.as_json()
        output.result(data, lambda console: _render(console, data))

    run(output, body)


def _render(console: Console, data: dict) -> None:
    from rich.table import Table

    console.print(
        f"{data['tensors_compared']} tensors compared ({data['candidate']} vs {data['reference']}), "
        f"{data['tensors_exceeding']} beyond atol {data['atol']:g} / rtol {data['rtol']:g}; "
        f"results from {data['engine']}"
    )
    for note in data["notes"]:
        console.print(f"note: {note}")
    for item in data["unmappable"]:
        console.print(f"unmappable (not written): {item['tensor']}: {item['reason']}")
    if not data["findings"]:
        console.print("no tensor exceeds the threshold: nothing to deny")
        return
    table = Table(box=None, header_style="bold")
    for column in ("tensor", "node", "max abs", "max rel", "layer", "tactic"):
        table.add_column(column)
    for f in data["findings"]:
        errors = [("inf" if v is None else f"{v:.3g}") for v in (f["max_abs_error"], f["max_rel_error"])]
        table.add_row(f["tensor"], f["node"], *errors, f["layer"], f["tactic"])
    console.print(table)
    for entry in data["already_denied"]:
        console.print(f"already denied: layer {entry['layer']} tactic {entry['tactic']}")
    if data["written"]:
        console.print(f"wrote {len(data['entries'])} entries to {data['deny_file']}:")
        console.print(data["diff"], markup=False, highlight=False)
    elif data["deny_file"] is not None:
        console.print(f"{data['deny_file']} already holds these entries")
    elif data["entries"]:
        console.print(f"{len(data['entries'])} proposed entries (run with --write to add them to the deny file):")
        from trtforge.rules.denylist import DenyEntry, render_deny_file

        text = render_deny_file([DenyEntry.model_validate(e) for e in data["entries"]])
        console.print(text, markup=False, highlight=False)
