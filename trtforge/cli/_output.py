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

from trtforge.cli._shapes import SHAPES, Shape
from trtforge.core.errors import TrtforgeError, kind_of

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
    """Prints results as JSON (``--json``), JSON lines (``--json-lines``) or through a human renderer.

    With a :class:`~trtforge.cli._shapes.Shape`, every JSON result carries the envelope
    (``exit_code``, ``error``, ``error_kind``, ``hint``, ``more_errors``, ``error_detail``), and an error
    that stops the command prints a result of the same shape: one more item of a list, or the one
    object with its keys null. Errors also go to stderr as ``error:``/``hint:`` lines, for people.
    """

    def __init__(self, json_mode: bool, shape: Shape | None = None, *, lines: bool = False, many: bool | None = None):
        self.lines = lines
        self.json_mode = json_mode or lines
        self.shape = shape
        self.many = shape.many if many is None and shape is not None else bool(many)
        self._items: list[dict[str, Any]] = []  # results given so far (item), for a stopped command

    @classmethod
    def of(cls, command: str, json_mode: bool, *, lines: bool = False, many: bool | None = None) -> Output:
        """The output of ``command`` (its shape from :data:`~trtforge.cli._shapes.SHAPES`)."""
        return cls(json_mode, SHAPES.get(command), lines=lines, many=many)

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

    def item(self, data: dict[str, Any]) -> None:
        """One result of a command over many items, as soon as it is ready: with ``--json-lines`` it is
        printed now (one line, flushed); the list is printed by :meth:`result`."""
        data = with_envelope(data) if self.shape is not None else data
        self._items.append(data)
        if self.lines:
            _write_line(data)

    def result(
        self,
        data: Any,
        human: Callable[[Console], None],
        *,
        exit_code: int = 0,
        error: TrtforgeError | None = None,
    ) -> None:
        """The command's answer: a list of items (each carrying its own exit code) or one object,
        which ``exit_code`` and ``error`` (why a result is a failure: a lookup's rejections, a
        verification out of tolerance) complete. Without JSON, ``human`` renders it (and says why);
        with JSON, ``error`` is said on stderr too."""
        if not self.json_mode:
            human(self.out)
            return
        if error is not None:
            self.error_of(error)
        if self.shape is None:
            _write_json(data)
            return
        items = [with_envelope(item) for item in data] if isinstance(data, list) else None
        if self.lines:
            if not self._items:  # nothing was streamed: every result now
                for item in items if items is not None else [with_envelope(data, exit_code, error)]:
                    _write_line(item)
        else:
            _write_json(items if items is not None else with_envelope(data, exit_code, error))

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
        """A command stopped by SIGINT / SIGTERM outside a batch: one line, and with JSON the
        command's result for an error that stopped it (``error_kind: interrupted``)."""
        from trtforge.core.errors import StoppedBySignalError

        self.error(StoppedBySignalError(signal_name, exit_code))

    def error_of(self, exc: TrtforgeError, source: str | None = None) -> None:
        """An error's lines on stderr (passwords hidden), its message named by ``source`` (a recipe file)."""
        message, hint, more = _error_lines(exc)
        self.error_lines(naming(source, message) if source else message, hint, more)

    def error(self, exc: TrtforgeError, *, say: bool = True) -> None:
        """An error that stops the command: on stderr (unless ``say`` is false: said already), and with
        JSON as a result of the command's shape."""
        if say:
            self.error_of(exc)
        if not self.json_mode:
            return
        if self.shape is None:  # a command without an envelope (`schema`): the error alone
            _write_json(envelope(exc), indent=None)
            return
        stopped = stopped_item(self.shape, exc)
        if self.lines:
            _write_line(stopped)
        elif self.many:
            _write_json([*self._items, stopped])
        else:
            _write_json(stopped)


def envelope(exc: TrtforgeError | None = None, exit_code: int = 0) -> dict[str, Any]:
    """The keys every JSON result has: its exit code and, when it failed, the error (passwords hidden)."""
    if exc is None:
        return {
            "exit_code": exit_code,
            "error": None,
            "error_kind": None,
            "hint": None,
            "more_errors": [],
            "error_detail": None,
        }
    message, hint, more = _error_lines(exc)
    return {
        "exit_code": exc.exit_code,
        "error": message,
        "error_kind": kind_of(exc),
        "hint": hint,
        "more_errors": list(more),
        "error_detail": exc.detail or None,
    }


def stopped_item(shape: Shape, exc: TrtforgeError, **known: Any) -> dict[str, Any]:
    """The result of ``shape`` for an error that left no result: its keys null (but those ``known``
    and the shape's ``stopped`` values), and the error."""
    return {key: None for key in shape.keys} | shape.stopped | known | envelope(exc)


def with_envelope(data: dict[str, Any], exit_code: int = 0, error: TrtforgeError | None = None) -> dict[str, Any]:
    """``data`` with the envelope's keys it lacks (from ``error`` when one is given)."""
    return {**data, **{k: v for k, v in envelope(error, exit_code).items() if error is not None or k not in data}}


def _error_lines(exc: TrtforgeError) -> tuple[str, str | None, tuple[str, ...]]:
    from trtforge.core.redact import redact  # belt: no password of an opened catalog is printed

    hint = redact(exc.hint) if exc.hint else exc.hint
    return redact(exc.message), hint, tuple(redact(line) for line in exc.more)


def _write_json(data: Any, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")
    sys.stdout.flush()


def _write_line(data: Any) -> None:
    """One JSON value on one line (NDJSON), flushed: a pipeline reads each result as it comes."""
    sys.stdout.write(json.dumps(data, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def target_cell(row: dict[str, Any]) -> str:
    """A result's target in a table: the fleet entry's name, else what the key was computed for."""
    asked = row.get("target_request") or {}
    if asked.get("label"):
        return str(asked["label"])
    t = row.get("target") or asked
    return f"{t.get('flavor', '-')} {t.get('trt_version', '')} {t.get('gpu_name') or ''}".strip()
