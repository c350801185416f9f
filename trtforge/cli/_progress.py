"""A rich progress bar fed by TensorRT's IProgressMonitor phases."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from trtforge.cli._output import printable


class BuildProgress:
    """Top-level phases drive the bar; the innermost running phase is shown as text."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[recipe]}", style="bold", markup=False),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._top: str | None = None
        self._recipe = ""
        self._lock = threading.Lock()  # recipes start on several threads with --jobs

    def __enter__(self) -> BuildProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_recipe(self, label: str) -> None:
        label = printable(label)  # a file name: the bar's columns do not go through the console's render_str
        with self._lock:
            self._top = None
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._recipe = label
            self._task = self._progress.add_task("starting", total=None, recipe=label)

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        if self._task is None:
            return
        if parent is None:
            self._top = name
            self._progress.reset(self._task, total=max(steps, 1), description=name, recipe=self._recipe)
        else:
            self._progress.update(self._task, description=name)

    def step(self, name: str, step: int) -> None:
        if self._task is not None and name == self._top:
            self._progress.update(self._task, completed=step + 1)

    def phase_finish(self, name: str) -> None:
        if self._task is not None and name == self._top:
            self._progress.update(self._task, completed=self._progress.tasks[0].total or 0)
