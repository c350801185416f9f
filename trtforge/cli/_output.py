"""One output object per command: human text (rich) or machine JSON on stdout.

The rich consoles are created on first use: `--json` output and a cache hit never import rich.
They never read markup: messages carry paths, shapes and hints such as `trtforge[verify]`,
which rich would swallow as style tags (or fail on, for `[/...]`). Styles are applied with
:func:`styled` instead.

Text from outside (names, GPU names, paths, tensor names, messages from a catalog or a bundle
someone else wrote) may hold terminal control sequences. Every string these consoles print
passes :func:`printable` first, so an escape sequence is shown as ``\x1b[...`` instead of
being acted on; `--json` output is escaped by ``json.dumps`` already.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import TrtforgeError

PIPE_WIDTH = 200

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


# What a terminal may act on: C0 and C1 controls and DEL (Cc), invisible format characters such
# as bidirectional overrides (Cf), surrogates (Cs), and the Unicode line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with every control or format character written as its escape (``\\x1b``,
    ``\\u202e``), except those in ``keep``: the one helper for user-controlled text on a terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if ch not in keep and unicodedata.category(ch) in _UNPRINTABLE
        else ch
        for ch in text
    )


def naming(source: str, message: str) -> str:
    """``message`` prefixed with the file it is about, unless it already starts with it."""
    return message if message.startswith(source) else f"{source}: {message}"


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs; no part is parsed as markup, and
    control characters in any part are escaped (:func:`printable`)."""
    from rich.text import Text

    return Text.assemble(*(printable(p) if isinstance(p, str) else (printable(p[0]), p[1]) for p in parts))


def _printable_console(**options: Any) -> Console:
    """A rich console that escapes control characters in every string it renders (tables too)."""
    from rich.console import Console

    class PrintableConsole(Console):
        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(printable(text, keep="\n\t"), **kwargs)  # line breaks are ours

    return PrintableConsole(**options)


class Output:
    """Prints results as JSON (``--json``) or through a human renderer; errors go to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    @cached_property
    def out(self) -> Console:
        # Piped output is read by people too: don't squeeze tables into 80 columns.
        width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
        return _printable_console(soft_wrap=True, highlight=False, markup=False, width=width)

    @cached_property
    def err(self) -> Console:
        return _printable_console(stderr=True, soft_wrap=True, highlight=False, markup=False)

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

    def stopped(self, signal_name: str, exit_code: int) -> None:
        """The one line of a command stopped by a signal (what was recorded before it stays)."""
        self.error_lines(f"interrupted by {signal_name}: stopped; what was recorded before it stays in the store")
        if self.json_mode:
            sys.stdout.write(json.dumps({"error": f"interrupted by {signal_name}", "exit_code": exit_code}) + "\n")
            sys.stdout.flush()

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


def target_cell(row: dict[str, Any]) -> str:
    """A result's target in a table: the fleet entry's name, else what the key was computed for."""
    asked = row.get("target_request") or {}
    if asked.get("label"):
        return str(asked["label"])
    t = row.get("target") or asked
    return f"{t.get('flavor', '-')} {t.get('trt_version', '')} {t.get('gpu_name') or ''}".strip()
