"""One check's outcome and the runner that records them in order (a check returns its detail line,
raises to fail, or is skipped with the reason)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from trtforge.core.errors import SelftestFailure, TrtforgeError

Outcome = Literal["passed", "failed", "skipped"]
T = TypeVar("T")


@dataclass
class CheckResult:
    """One check: ``error`` is the one-line error (or the exception type and message of a bug)."""

    check: str
    flavor: str | None
    result: Outcome
    seconds: float
    detail: str = ""
    error: str | None = None
    trace: str | None = None  # the traceback of an unexpected exception (a trtforge bug), for the report


def since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def bug(name: str, flavor: str | None, exc: BaseException, seconds: float) -> CheckResult:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    line = " ".join(str(exc).split())[:400]
    return CheckResult(name, flavor, "failed", seconds, error=f"{type(exc).__name__}: {line}", trace=trace)


class Runner:
    """Runs checks in order; a check returns its detail line, raises to fail, or is skipped."""

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self.results: list[CheckResult] = []

    def run(self, name: str, check: Callable[[], str], *, skip: str | None = None) -> bool:
        if skip is not None:
            self.results.append(CheckResult(name, self.flavor, "skipped", 0.0, skip))
            return False
        started = time.perf_counter()
        try:
            detail = check()
        except TrtforgeError as exc:
            self.results.append(CheckResult(name, self.flavor, "failed", since(started), error=exc.message))
            return False
        except Exception as exc:
            self.results.append(bug(name, self.flavor, exc, since(started)))
            return False
        self.results.append(CheckResult(name, self.flavor, "passed", since(started), detail))
        return True


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SelftestFailure(message)




class Once(Generic[T]):
    """A result several checks share (one verification, say), computed on first use; its error is
    every sharing check's error."""

    def __init__(self, make: Callable[[], T]) -> None:
        self.make = make
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def __call__(self) -> T:
        if not self.done:
            self.done = True
            try:
                self.value = self.make()
            except Exception as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
