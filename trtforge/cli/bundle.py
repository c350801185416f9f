"""`trtforge export` and `trtforge import`: deployment bundles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output

if TYPE_CHECKING:
    from trtforge.stages.bundle import ImportReport


def export(
    artifacts: Annotated[list[str], typer.Argument(help="Artifact ids (or unique prefixes).", show_default=False)],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Bundle file to write (.tar).")],
    sign: Annotated[
        Path | None,
        typer.Option("--sign", help="Sign with this Ed25519 private key (PEM or OpenSSH).", show_default=False),
    ] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write artifacts (plans + records + manifest of sha256s) to one tar bundle."""
    output = Output.of("export", json_output)

    def body() -> None:
        from trtforge.stages.bundle import export_from_store

        report = export_from_store(store, catalog, artifacts, output_path, sign=sign)
        data = report.as_json()
        output.result(
            data,
            lambda console: console.print(
                f"exported {len(report.artifacts)} artifact(s), {report.plans} plan(s), "
                f"{report.bytes / 1024:.0f} KiB -> {report.path}"
                + (f" (signed by key {report.signed_by[:16]})" if report.signed_by else " (unsigned)")
            ),
        )

    run(output, body)


def import_(
    bundle: Annotated[Path, typer.Argument(help="Bundle written by `trtforge export`.", show_default=False)],
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust",
            help="Public key (PEM or OpenSSH) whose signature makes the bundle's verification results count. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    require_signature: Annotated[
        bool, typer.Option("--require-signature", help="Refuse a bundle not signed by a --trust key.")
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a bundle into this store, all or nothing, after checking every hash.

    Verification results in the bundle count here only when it is signed by a --trust key;
    otherwise they are kept as the exporter's claims, which lookup does not count.
    """
    output = Output.of("import", json_output)

    def body() -> None:
        from trtforge.stages.bundle import import_into_store

        report = import_into_store(store, catalog, bundle, trust=list(trust or []), require_signature=require_signature)
        output.result(report.as_json(), lambda console: console.print(_describe_import(report)))

    run(output, body)


def _describe_import(report: ImportReport) -> str:
    line = (
        f"imported {len(report.imported)} artifact(s) ({len(report.already_present)} already present), "
        f"{report.plans} plan(s)"
    )
    if report.signer is None:
        signed = "unsigned"
    else:
        signed = f"signed by key {report.signer.key_id[:16]} ({'trusted' if report.signer.trusted else 'not trusted'})"
    results = f"{report.verifications} verification result(s) counted"
    if report.claims:
        results += f", {report.claims} kept as the exporter's claims (not counted by lookup)"
    return f"{line}; {signed}; {results}"


def keygen(
    key: Annotated[Path, typer.Argument(help="Private key file to write; the public key goes to KEY.pub.")],
    json_output: JsonOpt = False,
) -> None:
    """Make an Ed25519 key pair (PEM) for `export --sign` and `import --trust`."""
    output = Output.of("keygen", json_output)

    def body() -> None:
        from trtforge.rules.signing import generate_key_pair

        public, key_id = generate_key_pair(key)
        data = {"private_key": str(key), "public_key": str(public), "key_id": key_id}
        output.result(
            data,
            lambda console: console.print(
                f"wrote {key} (private: keep it secret) and {public} (public: give it to importers); key {key_id[:16]}"
            ),
        )

    run(output, body)
