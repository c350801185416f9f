"""Options shared by every command, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="TRTFORGE_STORE", help="Store directory (default ./cache_store).", show_default=False
    ),
]
CatalogOpt = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        envvar="TRTFORGE_CATALOG",
        help="Catalog SQLAlchemy URL (default sqlite in the store).",
        show_default=False,
    ),
]
ArtifactArg = Annotated[str, typer.Argument(help="Artifact id or a unique prefix of at least 6 characters.")]
