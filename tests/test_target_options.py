"""One way to name a target in every command (issue 22, item 1).

Every command that takes a target has the same target options (``--target``, the shorthand flags
``--gpu --cc --flavor --trt --cuda --os --arch``, ``--fleet``), shown the same in its help, and
checks each the same way: the same bad value gives the same one-line error (exit 2) everywhere,
before any store is created. On 760f324 `deploy triton` had no --gpu/--flavor, `deploy epcontext`
and `gc` no target at all, `plan` only --target, and no command knew --cuda or --fleet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main

from trtforge.cli import app

pytestmark = pytest.mark.slow  # every command x every target option (.ci/run: pytest -m slow)

SHORTHAND = ("--gpu", "--cc", "--flavor", "--trt", "--cuda", "--os", "--arch")
TARGET_OPTIONS = ("--target", *SHORTHAND, "--fleet")
# Every command that takes a target, with the arguments it needs to get as far as its targets.
COMMANDS: dict[str, tuple[str, ...]] = {
    "plan": ("recipe.yaml",),
    "build": ("recipe.yaml",),
    "lookup": ("detector",),
    "coverage": ("detector",),
    "gc": (),
    "adopt": ("engine.plan", "--name", "detector", "--model", "model.onnx"),
    "deploy triton": ("detector", "-o", "repo"),
    "deploy epcontext": ("detector", "-o", "out.onnx"),
}
# (option, a bad value, what every command says about it)
BAD_VALUES = (
    ("--gpu", "Tesla Z9", "'Tesla Z9' is not a GPU trtforge knows"),
    ("--cc", "86", "compute capability '86' is not of the form MAJOR.MINOR"),
    ("--flavor", "tensorrt_llm", "flavor 'tensorrt_llm' is not one of tensorrt, tensorrt_rtx"),
    ("--trt", "ten", "TensorRT version 'ten' is not of the form MAJOR.MINOR"),
    ("--cuda", "cuda12", "CUDA variant 'cuda12' is not of the form cuNN"),
    ("--os", "Win 95", "OS 'Win 95' is not a platform name"),
    ("--arch", "x86 64", "architecture 'x86 64' is not a platform name"),
    ("--target", "gpu=L4,trt=10.13.3,driver=580", "is not of the form gpu=NAME,cc=X.Y"),
    ("--fleet", "no-such-fleet.yaml", "no-such-fleet.yaml: fleet manifest not found"),
)


def _commands() -> dict[str, Any]:
    """Every command of the real app (Click commands, as typer builds them), by its full name ("deploy triton")."""
    root: Any = typer.main.get_command(app)
    found: dict[str, Any] = {}
    context = typer.Context(root, info_name="trtforge")
    for name in root.list_commands(context):
        command = root.get_command(context, name)
        if hasattr(command, "commands"):  # a group
            sub = typer.Context(command, info_name=name)
            for child in command.list_commands(sub):
                found[f"{name} {child}"] = command.get_command(sub, child)
        else:
            found[name] = command
    return found


def _options(command: Any) -> dict[str, Any]:
    return {flag: p for p in command.params if p.param_type_name == "option" for flag in p.opts}


def test_every_command_that_takes_a_target_takes_all_the_target_options_with_one_help() -> None:
    commands = _commands()
    taking = {name for name, command in commands.items() if set(_options(command)) & {"--target", *SHORTHAND}}
    assert taking == set(COMMANDS), "a command with one target option has them all, and the test knows it"
    helps: dict[str, set[str]] = {flag: set() for flag in TARGET_OPTIONS}
    for name in COMMANDS:
        options = _options(commands[name])
        for flag in TARGET_OPTIONS:
            assert flag in options, f"{name} lacks {flag}"
            option = options[flag]
            assert option.multiple == (flag != "--fleet"), (name, flag)  # a repeated flag is seen (and refused)
            helps[flag].add(option.help or "")
    for flag, texts in helps.items():
        if flag == "--target":  # "repeatable" where several targets are taken, "one only" where one is
            assert len(texts) == 2 and sum("repeatable" in t for t in texts) == 1, texts
        else:
            assert len(texts) == 1, (flag, texts)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_commands_help_shows_the_target_options(cli: Callable[..., Any], name: str) -> None:
    shown = cli(*name.split(), "--help", env={"COLUMNS": "200"})
    assert shown.code == 0, shown
    assert "Target (--target SPEC, or the flags for one target, or --fleet FILE)" in shown.stdout
    for flag in TARGET_OPTIONS:
        assert f" {flag} " in shown.stdout, (name, flag)


@pytest.mark.parametrize(("flag", "value", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_every_command_checks_each_target_option_the_same_way(
    cli: Callable[..., Any], tmp_path: Path, flag: str, value: str, message: str
) -> None:
    """The option exists on every command (no usage error) and its value is checked by the one
    shared rule: the same error line everywhere, exit 2, and no store is created."""
    store = tmp_path / "store"
    errors = {}
    for name, args in COMMANDS.items():
        result = cli(*name.split(), *args, flag, value, "--store", store)
        assert result.code == 2, (name, result)
        assert "No such option" not in result.stderr, (name, result)
        errors[name] = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert all(message in line for line in errors.values()), errors
    assert len(set(errors.values())) == 1, errors
    assert not store.exists()


def test_the_flags_and_target_or_fleet_are_one_target_or_the_other(cli: Callable[..., Any], tmp_path: Path) -> None:
    for extra in (("--target", "gpu=L4,trt=10.13.3"), ("--fleet", tmp_path / "fleet.yaml")):
        result = cli("lookup", "detector", "--gpu", "L4", *extra, "--store", tmp_path / "store")
        assert result.code == 2 and "name one target, and" in result.stderr, result


def test_a_command_taking_one_target_refuses_several(cli: Callable[..., Any], tmp_path: Path) -> None:
    specs = ("--target", "gpu=L4,trt=10.13.3", "--target", "gpu=A10G,trt=10.13.3")
    for name in ("lookup", "deploy epcontext", "adopt"):
        result = cli(*name.split(), *COMMANDS[name], *specs, "--store", tmp_path / "store")
        assert result.code == 2 and "this command takes one target; 2 were given" in result.stderr, (name, result)


def test_a_flag_given_twice_is_refused_not_read_as_its_last_value(cli: Callable[..., Any], tmp_path: Path) -> None:
    """`deploy triton NAME --cc 8.6 --cc 8.9` served two capabilities before; the flags now name one
    target, and Click alone would quietly keep 8.9: every command refuses it instead."""
    for name, args in COMMANDS.items():
        result = cli(*name.split(), *args, "--cc", "8.6", "--cc", "8.9", "--store", tmp_path / "store")
        assert result.code == 2 and "--cc given more than once" in result.stderr, (name, result)
        assert "--target SPEC each" in result.stderr
