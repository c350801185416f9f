"""One output object per command: human text (rich) or machine JSON on stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from trtforge.errors import TrtforgeError

PIPE_WIDTH = 200


class Output:
    """Prints results as JSON (``--json``) or through a human renderer; errors go to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # Piped output is read by people too: don't squeeze tables into 80 columns.
        width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
        self.out = Console(soft_wrap=True, highlight=False, width=width)
        self.err = Console(stderr=True, soft_wrap=True, highlight=False)

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching a terminal."""
        return not self.json_mode and sys.stderr.isatty()

    def result(self, data: Any, human: Callable[[Console], None]) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            sys.stdout.flush()
        else:
            human(self.out)

    def info(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(message)

    def error(self, exc: TrtforgeError) -> None:
        self.err.print(f"[bold red]error:[/] {exc.message}", markup=True, highlight=False)
        if exc.hint:
            self.err.print(f"[dim]hint:[/] {exc.hint}", markup=True, highlight=False)
        if self.json_mode:
            payload = {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
            sys.stdout.write(json.dumps(payload) + "\n")
