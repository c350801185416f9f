"""One output object per command: human text (rich) or machine JSON on stdout.

The rich consoles are created on first use: `--json` output and a cache hit never import rich.
They never read markup: messages carry paths, shapes and hints such as `trtforge[verify]`,
which rich would swallow as style tags (or fail on, for `[/...]`). Styles are applied with
:func:`styled` instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import TrtforgeError

PIPE_WIDTH = 200

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


def naming(source: str, message: str) -> str:
    """``message`` prefixed with the file it is about, unless it already starts with it."""
    return message if message.startswith(source) else f"{source}: {message}"


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs; no part is parsed as markup."""
    from rich.text import Text

    return Text.assemble(*parts)


class Output:
    """Prints results as JSON (``--json``) or through a human renderer; errors go to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        # Piped output is read by people too: don't squeeze tables into 80 columns.
        width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
        return Console(soft_wrap=True, highlight=False, markup=False, width=width)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, soft_wrap=True, highlight=False, markup=False)

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

    def error_lines(self, message: str, hint: str | None = None, more: tuple[str, ...] | list[str] = ()) -> None:
        """``error: message`` (and one line per further problem), then ``hint: ...``, on stderr as given."""
        for line in (message, *more):
            self.err.print(styled(("error:", "bold red"), " ", line))
        if hint:
            self.err.print(styled(("hint:", "dim"), " ", hint))

    def error(self, exc: TrtforgeError) -> None:
        from trtforge.core.redact import redact  # belt: no password of an opened catalog is printed

        message, more = redact(exc.message), tuple(redact(line) for line in exc.more)
        hint = redact(exc.hint) if exc.hint else exc.hint
        self.error_lines(message, hint, more)
        if self.json_mode:
            payload = {"error": message, "hint": hint, "exit_code": exc.exit_code}
            if more:
                payload["more_errors"] = list(more)
            if exc.detail:
                payload["error_detail"] = exc.detail
            sys.stdout.write(json.dumps(payload) + "\n")
