"""Turns TrtforgeError into one line, a hint and an exit code; other exceptions are bugs.

A missing optional dependency (a ModuleNotFoundError of a module an extra installs) is not a bug:
it becomes the same one line naming the extra (core/extras.py), wherever it was imported. Neither
is SIGINT or SIGTERM (core/interrupts.py): one line, exit 130 or 143.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from trtforge.cli._output import Output
from trtforge.cli._shapes import NO_ENVELOPE, SHAPES, command_of
from trtforge.core.errors import BadInputError, TrtforgeError
from trtforge.core.extras import as_missing_extra
from trtforge.core.interrupts import Interrupted, answered

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
        answered()
        raise typer.Exit(exc.exit_code) from None
    except ModuleNotFoundError as exc:
        missing = as_missing_extra(exc)
        if missing is None or os.environ.get(DEBUG_ENV):
            raise
        output.error(missing)
        answered()
        raise typer.Exit(missing.exit_code) from None
    except Interrupted as stop:
        output.stopped(stop.name, stop.exit_code)
        answered()
        raise typer.Exit(stop.exit_code) from None


def missing_extra_exit(exc: ModuleNotFoundError) -> int:
    """For a command whose module could not even be imported: the one line, and its exit code;
    any other missing module is re-raised (a bug, with its traceback)."""
    missing = as_missing_extra(exc)
    if missing is None or os.environ.get(DEBUG_ENV):
        raise exc
    json_mode, lines = json_modes(sys.argv[1:])
    Output.of(command_of(sys.argv[1:]) or "", json_mode, lines=lines).error(missing)
    return missing.exit_code


def usage_error_json(message: str) -> None:
    """A command line Click refuses (an unknown option, a missing argument): with ``--json`` or
    ``--json-lines``, the command's result for an error that stopped it, on stdout (the usage
    message itself goes to stderr as Click prints it)."""
    argv = sys.argv[1:]
    json_mode, lines = json_modes(argv)
    if not (json_mode or lines):
        return
    command = command_of(argv)
    output = Output.of(command or "", json_mode, lines=lines)
    known = command in SHAPES or command in NO_ENVELOPE
    hint = f"run `trtforge {command} --help` for its options" if known else "run `trtforge --help` for the commands"
    output.error(BadInputError(message, hint=hint), say=False)


def json_modes(argv: list[str]) -> tuple[bool, bool]:
    """(``--json``, ``--json-lines``) as an argument vector gives them, for output before parsing."""
    return "--json" in argv, "--json-lines" in argv


def run(output: Output, body: Callable[[], int | None]) -> None:
    with reported(output):
        code = body()
    answered()  # printed: a signal now ends the process at once, with the signal's exit code
    if code:
        raise typer.Exit(code)
