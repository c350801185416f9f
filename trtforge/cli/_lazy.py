"""A Typer group whose commands are imported only when they run (or when help lists them).

`trtforge build` on a cache hit should not import the modules of bundle, verify, adopt, ... (and
what they import). Typer stays the framework: each command is a plain Typer command function,
turned into its Click command by ``typer.main.get_command`` the first time it is asked for, so its
signature, help and completion are exactly what ``app.command()`` would give.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup


def lazy_group(commands: dict[str, str]) -> type[TyperGroup]:
    """A TyperGroup class for ``typer.Typer(cls=...)``: ``commands`` maps a command name to
    ``"module:attribute"``, a Typer command function or a ``typer.Typer`` sub-app (a group)."""

    class LazyGroup(TyperGroup):
        table = dict(commands)

        def list_commands(self, ctx: Any) -> list[str]:
            return [*self.commands, *(name for name in self.table if name not in self.commands)]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            for param in self.params:  # typer appends its completion options after __init__
                _quiet(param)
            super().format_help(ctx, formatter)

        def get_help_option(self, ctx: Any) -> Any:
            return _quiet(super().get_help_option(ctx))

        def invoke(self, ctx: Any) -> Any:
            try:
                return super().invoke(ctx)
            except typer.TyperException as exc:
                if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):  # a usage error
                    from trtforge.cli._errors import usage_error_json  # typer says it on stderr, JSON on stdout

                    usage_error_json(exc.format_message())
                raise

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            if cmd_name not in self.commands and cmd_name in self.table:
                self.commands[cmd_name] = load_command(cmd_name, self.table[cmd_name])
            return self.commands.get(cmd_name)

    return LazyGroup


def load_command(name: str, target: str) -> Any:
    """The Click command of ``target`` (``module:attribute``) under ``name``."""
    module_name, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    if isinstance(obj, typer.Typer):
        holder.add_typer(obj, name=name)  # a group even when it has one command (`denylist derive`)
    else:
        holder.command(name)(obj)
    holder.command("-")(_placeholder)  # two entries: get_command returns a group holding them
    command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
    quiet_flags(command)
    return command


def _placeholder() -> None:
    """Never registered in trtforge's group: it only makes typer build a group around the command."""


def _quiet(param: Any) -> Any:
    """An on/off flag takes no value: show no ``<bool>`` type for it in help."""
    if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


def quiet_flags(command: Any) -> None:
    """Drop the ``<bool>`` type of every flag of ``command`` (its ``--help`` included), and of
    its subcommands when it is a group."""
    for param in command.params:
        _quiet(param)
    _quiet(command.get_help_option(typer.Context(command)))
    for sub in getattr(command, "commands", {}).values():
        quiet_flags(sub)
