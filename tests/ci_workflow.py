"""Runs a GitHub Actions workflow's jobs here, as a runner would, for tests/test_ci_workflow.py.

What a runner does and this does too: jobs in the order ``needs`` gives (file order otherwise), each
in a fresh checkout of the repository (a copy of its files), each ``run:`` step in a fresh
``bash`` process (``bash -e {0}``; with ``shell: bash``, here or in ``defaults.run``,
``bash --noprofile --norc -eo pipefail {0}``) in that checkout, with the workflow's, the job's
and the step's ``env``; files cross from one job to another only through
``actions/upload-artifact`` and ``actions/download-artifact``; a failing step fails its job.
``${{ secrets.X }}``, ``${{ vars.X }}`` and ``${{ matrix.X }}`` are replaced by the values the test
gives (a matrix job runs once per combination).

What it does not: ``pip install`` steps are not run (this checkout's trtforge is on the PATH as
``trtforge`` already); instead each extra they name must be one of pyproject.toml's, and the
optional modules of the extras a job does not install are hidden from its steps (they fail to
import as absent ones do), so a step that needs an extra its job lacks fails here too. Other ``uses:``
steps (setup-python, caches) are skipped. An expression or ``if:`` it does not know fails the run,
so a workflow cannot silently step outside what is tested.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PIP_INSTALL = re.compile(r"^\s*(?:python3?\s+-m\s+)?pip3?\s+install\b(?P<args>.*)$", re.DOTALL)
_EXTRAS = re.compile(r"\.\[(?P<extras>[^\]]*)\]")
_ARTIFACT_ACTIONS = ("actions/upload-artifact", "actions/download-artifact")
_CHECKOUT = "actions/checkout"
# Optional modules that trtforge's own dependencies install anyway (onnx requires numpy).
_BROUGHT_BY_BASE = frozenset({"numpy"})


class WorkflowError(AssertionError):
    """The workflow does not run as written (a step failed, or it uses what this runner does not know)."""


def load(path: Path) -> dict[str, Any]:
    """A workflow file, read by YAML 1.1 as GitHub reads it (`on:` is the boolean True key there)."""
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(workflow, dict) or not isinstance(workflow.get("jobs"), dict):
        raise WorkflowError(f"{path}: not a workflow (no jobs)")
    if "on" not in workflow and True not in workflow:
        raise WorkflowError(f"{path}: no `on:` trigger")
    return workflow


def job_order(workflow: dict[str, Any]) -> list[str]:
    """Job names in an order ``needs`` allows (file order among the ready ones)."""
    jobs = workflow["jobs"]
    needs = {name: _as_list(job.get("needs")) for name, job in jobs.items()}
    for name, wanted in needs.items():
        unknown = [w for w in wanted if w not in jobs]
        if unknown:
            raise WorkflowError(f"job {name} needs unknown jobs {unknown}")
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [name for name in jobs if name not in order and all(w in order for w in needs[name])]
        if not ready:
            raise WorkflowError(f"jobs wait on each other: {sorted(set(jobs) - set(order))}")
        order.append(ready[0])
    return order


def run_commands(workflow: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(job, command) of every `run:` step, in file order."""
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                yield name, str(step["run"])


def pip_extras(command: str) -> set[str] | None:
    """The extras a `pip install` step names (``.[rtx,postgres]``), or None when it is no pip install."""
    match = _PIP_INSTALL.match(command)
    if match is None:
        return None
    return {e.strip() for m in _EXTRAS.finditer(match["args"]) for e in m["extras"].split(",") if e.strip()}


def declared_extras() -> set[str]:
    import tomllib  # Python >= 3.11

    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@dataclass
class StepRun:
    job: str
    step: str
    command: str
    code: int
    stdout: str
    stderr: str


@dataclass
class Runner:
    """Runs a workflow's jobs under ``root``: one folder per job run, one for the uploaded artifacts."""

    root: Path
    values: dict[str, str]  # "secrets.X", "vars.X" -> the test's value
    files: dict[str, Path] = field(default_factory=dict)  # what the user's repository adds: path -> source
    steps: list[StepRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # `uses:` steps not run, as "job: action"
    installed: dict[str, set[str]] = field(default_factory=dict)  # job run -> the extras it pip-installed

    def __post_init__(self) -> None:
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True)
        self.bin = self.root / "bin"
        self.bin.mkdir()
        shim = self.bin / "trtforge"  # what `pip install -e .` puts on a runner's PATH
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m trtforge "$@"\n')
        shim.chmod(0o755)
        (self.bin / "python").symlink_to(sys.executable)

    def run(self, workflow: dict[str, Any], jobs: list[str] | None = None) -> None:
        """Every job (or those named, in their order), each matrix combination."""
        for name in job_order(workflow):
            if jobs is not None and name not in jobs:
                continue
            job = workflow["jobs"][name]
            for matrix in _matrix_combinations(job):
                self.run_job(workflow, name, job, matrix)

    def run_job(self, workflow: dict[str, Any], name: str, job: dict[str, Any], matrix: dict[str, str]) -> None:
        label = name + "".join(f"-{v}" for v in matrix.values())
        workdir = self.root / "jobs" / label
        workdir.mkdir(parents=True)
        if "if" in job:
            raise WorkflowError(f"job {name}: `if:` is not run by this test")
        shell = (job.get("defaults") or workflow.get("defaults") or {}).get("run", {}).get("shell")
        env = {**self._env(workflow.get("env"), matrix), **self._env(job.get("env"), matrix)}
        for index, step in enumerate(job.get("steps", [])):
            where = f"job {label}, step {index + 1}"
            condition = step.get("if")
            if condition is not None and condition != "always()":
                raise WorkflowError(f"{where}: `if: {condition}` is not run by this test")
            if "uses" in step:
                self._uses(where, step, workdir, matrix)
            elif "run" in step:
                step_env = {**env, **self._env(step.get("env"), matrix)}
                self._run(label, where, step, workdir, step_env, step.get("shell", shell), matrix)
            else:
                raise WorkflowError(f"{where}: neither `run:` nor `uses:`")

    def _uses(self, where: str, step: dict[str, Any], workdir: Path, matrix: dict[str, str]) -> None:
        action = str(step["uses"]).split("@")[0]
        options = {k: self._expand(str(v), matrix) for k, v in (step.get("with") or {}).items()}
        if action == _CHECKOUT:
            checkout(workdir)
            for name, source in self.files.items():
                shutil.copy2(source, workdir / name)
        elif action == "actions/upload-artifact":
            self._upload(where, workdir, options)
        elif action == "actions/download-artifact":
            self._download(where, workdir, options)
        else:
            self.skipped.append(f"{where}: {action}")

    def _run(
        self,
        label: str,
        where: str,
        step: dict[str, Any],
        workdir: Path,
        env: dict[str, str],
        shell: str | None,
        matrix: dict[str, str],
    ) -> None:
        command = self._expand(str(step["run"]), matrix)
        extras = pip_extras(command)
        if extras is not None:
            unknown = extras - declared_extras()
            if unknown:
                lacking = sorted(unknown)
                raise WorkflowError(f"{where}: `{command.strip()}` names extras pyproject.toml lacks: {lacking}")
            self.installed.setdefault(label, set()).update(extras)
            return
        if shell not in (None, "bash"):
            raise WorkflowError(f"{where}: shell {shell!r} is not run by this test")
        script = workdir.parent / f".{label}-step.sh"
        script.write_text(command)
        # GitHub's `bash -e {0}` when no shell is named; `shell: bash` adds pipefail (a failing
        # command piped into `tee` fails the step only then).
        argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail"] if shell else ["bash", "-e"]
        env = self._process_env(env, self._hidden(label, workdir))
        proc = subprocess.run([*argv, str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
        self.steps.append(StepRun(label, where, command, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            raise WorkflowError(
                f"{where} failed (exit {proc.returncode}): {command.strip()}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )

    def _upload(self, where: str, workdir: Path, options: dict[str, str]) -> None:
        name, paths = options.get("name", "artifact"), options.get("path", "")
        target = self.artifacts / name
        if target.exists():
            raise WorkflowError(f"{where}: artifact {name!r} was uploaded before")
        found = False
        for entry in filter(None, (line.strip() for line in paths.splitlines())):
            source = workdir / entry
            if source.is_dir():
                shutil.copytree(source, target / entry)
                found = True
            elif source.is_file():
                (target / entry).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / entry)
                found = True
        if not found:
            raise WorkflowError(f"{where}: nothing to upload at {paths!r} (artifact {name!r})")

    def _download(self, where: str, workdir: Path, options: dict[str, str]) -> None:
        name = options.get("name")
        source = self.artifacts / str(name)
        if name is None or not source.is_dir():
            raise WorkflowError(f"{where}: no artifact {name!r} was uploaded before this job")
        shutil.copytree(source, workdir / options.get("path", "."), dirs_exist_ok=True)

    def _env(self, env: dict[str, Any] | None, matrix: dict[str, str]) -> dict[str, str]:
        return {str(k): self._expand(str(v), matrix) for k, v in (env or {}).items()}

    def _expand(self, text: str, matrix: dict[str, str]) -> str:
        def value(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("matrix.") and expression[7:] in matrix:
                return matrix[expression[7:]]
            if expression in self.values:
                return self.values[expression]
            raise WorkflowError(f"the workflow uses ${{{{ {expression} }}}}, which this test gives no value")

        return _EXPRESSION.sub(value, text)

    def _hidden(self, label: str, workdir: Path) -> Path:
        """A folder whose sitecustomize makes the optional modules this job did not install absent."""
        from trtforge.core.extras import EXTRAS

        installed = {m for extra in self.installed.get(label, set()) for m in EXTRAS.get(extra, ())}
        modules = sorted({m for ms in EXTRAS.values() for m in ms} - installed - _BROUGHT_BY_BASE)
        folder = workdir.parent / f".{label}-site"
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\n")
        return folder

    def _process_env(self, env: dict[str, str], site: Path) -> dict[str, str]:
        """A runner's environment: this one without TRTFORGE_* settings, trtforge on the PATH, only the
        optional modules the job installed, the step's env."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRTFORGE_")}
        base["PATH"] = os.pathsep.join([str(self.bin), base.get("PATH", "")])
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(REPO), base.get("PYTHONPATH")]))
        base.update(CI="true", GITHUB_ACTIONS="true", COLUMNS="200", PYTHONUNBUFFERED="")  # as on a runner
        return {**base, **env}


def checkout(workdir: Path) -> None:
    """What actions/checkout gives a job: the repository's files (those git tracks, where it can say)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, timeout=60)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            source = REPO / name
            if name and source.is_file():
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, workdir / name)
        return
    ignore = shutil.ignore_patterns(".git", "cache_store", "__pycache__", "*.egg-info", ".*_cache")
    shutil.copytree(REPO, workdir, ignore=ignore, dirs_exist_ok=True)


def _matrix_combinations(job: dict[str, Any]) -> list[dict[str, str]]:
    matrix = (job.get("strategy") or {}).get("matrix")
    if not matrix:
        return [{}]
    keys = [k for k in matrix if k not in ("include", "exclude")]
    if "include" in matrix or "exclude" in matrix:
        raise WorkflowError("matrix include/exclude is not run by this test")
    return [dict(zip(keys, map(str, combo), strict=True)) for combo in itertools.product(*(matrix[k] for k in keys))]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
