"""Turns TrtforgeError into one line, a hint and an exit code; other exceptions are bugs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from trtforge.cli._output import Output
from trtforge.core.errors import TrtforgeError

DEBUG_ENV = "TRTFORGE_DEBUG"


@contextmanager
def reported(output: Output) -> Iterator[None]:
    """Run a command body; user errors print cleanly and exit with their code."""
    try:
        yield
    except TrtforgeError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        output.error(exc)
        raise typer.Exit(exc.exit_code) from None


def run(output: Output, body: Callable[[], int | None]) -> None:
    with reported(output):
        code = body()
    if code:
        raise typer.Exit(code)
