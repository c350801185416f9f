"""The everyday CLI basics: --version, shell completion, help without type noise, NO_COLOR, and
commands whose modules load only when they run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import REPO, subprocess_env
from trtforge.cli import COMMANDS, app
from trtforge.rules.flavors import installed_backends

# SGR color parameters (foreground/background, 8/16/256/true color), not bold or dim.
COLOR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9]+)*m")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trtforge", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**subprocess_env(), "COLUMNS": "120", **env},
        timeout=120,
    )


def test_version_names_trtforge_python_and_each_installed_backend() -> None:
    proc = _run("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("trtforge ") and lines[1].startswith(f"Python {sys.version.split()[0]}")
    for backend in installed_backends():
        assert backend.label in proc.stdout


def test_help_lists_every_command_in_order_and_shows_no_bool_type() -> None:
    top = _run("--help")
    assert top.returncode == 0, top.stderr
    shown = [name for name in COMMANDS if re.search(rf"│ {re.escape(name)} ", top.stdout)]
    assert shown == list(COMMANDS)
    assert "--version" in top.stdout and "--install-completion" in top.stdout
    for args in (("--help",), ("build", "--help"), ("lookup", "--help"), ("denylist", "derive", "--help")):
        proc = _run(*args)
        assert proc.returncode == 0, proc.stderr
        assert "<bool>" not in proc.stdout, (args, proc.stdout)
    assert "<str>" in _run("build", "--help").stdout  # options that take a value still say what


def test_shell_completion_script_and_completions() -> None:
    # The shell is named, not detected: detection looks for a shell among the process's ancestors,
    # and a suite started from a detached job has none (it then failed with "Shell  not supported").
    proc = _run("--show-completion", "bash", SHELL="/bin/bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert proc.returncode == 0, proc.stderr
    assert "complete -o default" in proc.stdout and "trtforge" in proc.stdout
    for words, cword, expected in (("trtforge bu", "1", "build"), ("trtforge build --fo", "2", "--force")):
        completed = subprocess.run(
            [sys.executable, "-c", "from trtforge.cli import app; app(prog_name='trtforge')"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**subprocess_env(), "_TRTFORGE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword},
        )
        assert completed.stdout.split() == [expected], completed


def test_no_color_is_respected_even_when_color_is_forced() -> None:
    colored = _run("build", "missing.yaml", FORCE_COLOR="1")
    assert colored.returncode == 2 and COLOR.search(colored.stderr), colored.stderr
    plain = _run("build", "missing.yaml", FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == 2 and "missing.yaml" in plain.stderr
    assert not COLOR.search(plain.stderr), plain.stderr
    assert not COLOR.search(_run("--help", FORCE_COLOR="1", NO_COLOR="1").stdout)


def test_a_command_module_is_imported_only_when_its_command_runs() -> None:
    probe = (
        "import json, sys\n"
        "import trtforge.cli\n"
        "def commands():\n"
        "    return sorted(m for m in sys.modules if m.startswith('trtforge.cli.') and '._' not in m)\n"
        "before = commands()\n"
        "sys.argv = ['trtforge', 'schema']\n"
        "try:\n    trtforge.cli.main()\nexcept SystemExit:\n    pass\n"
        "after = commands()\n"
        "sys.stderr.write('MODULES=' + json.dumps([before, after]) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=subprocess_env())
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    before, after = json.loads(line.removeprefix("MODULES="))
    assert before == [] and after == ["trtforge.cli.info"]


def test_every_registered_command_loads_with_its_signature() -> None:
    """Each COMMANDS entry resolves to a Click command whose options are the function's."""
    import typer.main

    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.params or getattr(command, "commands", None), name
    build = group.get_command(ctx, "build")
    assert {"--store", "--catalog", "--force", "--json", "--reproduce"} <= {o for p in build.params for o in p.opts}
