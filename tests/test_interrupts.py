"""Ctrl-C (SIGINT) and a CI runner's cancel (SIGTERM) stop a build promptly (issue 29).

Signals come from outside, as on a user's machine: at a crash point inside TensorRT's build, at
seeded random moments of a real batch, twice in a row. Each asserts the exit code (130, 143) and how
soon it came, that the build's worker is gone, one line on stderr with no traceback, the JSON
(every recipe, in order), that nothing interrupted is recorded as built, no lock or temp file left,
and a clean ``fsck``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import CrashPoint, assert_store_clean, start, start_build, trtforge_argv, wait_gone
from trtforge.store.blobs import INLINE_DIGEST_BYTES, ParallelDigest

pytestmark = pytest.mark.slow  # signals at seeded moments of real builds (.ci/run: pytest -m slow)

STOP_LIMIT_S = 2.0  # the bound: a signalled build is stopped, and trtforge gone, within it


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` now (its build workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _signal_and_wait(proc: subprocess.Popen[str], signum: int) -> tuple[int, str, str, float, list[int]]:
    """Send ``signum``; (exit code, stdout, stderr, seconds until it exited, its workers at the time)."""
    workers = _children(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err, time.monotonic() - sent, workers


def _artifact_ids(store: Path) -> set[str]:
    if not (store / "catalog.sqlite").exists():
        return set()
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return {row[0] for row in conn.execute("SELECT id FROM artifacts")}


def _check_stopped(code: int, err: str, signum: int, seconds: float, workers: list[int]) -> None:
    assert code == 128 + signum, (code, err)
    assert seconds < STOP_LIMIT_S, f"exited {seconds:.2f} s after {signal.Signals(signum).name}"
    assert all(wait_gone(pid, STOP_LIMIT_S) for pid in workers), workers
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {signal.Signals(signum).name}"), err


IGNORING_SIGINT = ["bash", "-c", 'trap "" INT; exec "$@"', "bash"]  # as `trtforge build ... &` in a script


@pytest.mark.parametrize(
    ("signum", "ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGINT", "SIGTERM", "SIGINT-ignored-at-start"],
)
def test_a_signal_inside_tensorrts_build_stops_it_and_records_nothing(
    signum: int, ignored: bool, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """The signal arrives while the worker is inside TensorRT's build. Fails on c1e1ac4: SIGTERM
    killed trtforge outright (exit -15, its build lock file left behind) and SIGINT from a shell
    that started it in the background was ignored (the build finished and was recorded, exit 0);
    a plain SIGINT printed no error line."""
    recipe = mlp_recipe("stopped", seed=5)
    point = CrashPoint(tmp_path / "cp", "trt-building")
    argv = trtforge_argv("build", recipe, "--store", store, "--json")
    proc = start(IGNORING_SIGINT + argv if ignored else argv, point.env)
    worker = point.wait_reached(proc)
    go_on = threading.Timer(3.0, point.resume)  # were the signal ignored, the build would go on
    go_on.daemon = True
    if ignored:
        go_on.start()
    code, out, err, seconds, workers = _signal_and_wait(proc, signum)
    go_on.cancel()
    point.close()
    assert worker in workers
    _check_stopped(code, err, signum, seconds, workers)
    [result] = json.loads(out)
    assert result["status"] == "failed" and result["error_kind"] == "interrupted", result
    assert result["name"] == "stopped" and result["artifact_id"] is None
    assert _artifact_ids(store) == set()
    assert_store_clean(store, cli, recorded=False)
    again = cli("build", recipe, "--store", store, "--json")
    assert again.code == 0 and again.json()[0]["status"] == "built", again


@pytest.mark.parametrize("how", [("--jobs", "1"), ("--jobs", "2"), ("--fail-fast",)], ids=" ".join)
def test_an_interrupted_batch_streams_every_recipe_once(
    how: tuple[str, ...], mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path
) -> None:
    """`--json-lines` of a batch stopped mid-build: one line per recipe, none twice, those not
    recorded `interrupted`. Threads still finishing a recipe after the stop are not heard again;
    one at a time (--fail-fast), the recipes after the stopped one are heard only as the stop
    settles them."""
    recipes = [mlp_recipe(f"streamed{i}", seed=80 + i) for i in range(3)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    proc = start_build(*recipes, "--store", store, *how, "--json-lines", env=point.env)
    point.wait_reached(proc)
    code, out, err, _, _ = _signal_and_wait(proc, signal.SIGTERM)
    point.close()
    assert code == 143 and "Traceback" not in err, (code, err)
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["recipe"] for r in lines) == sorted(str(r) for r in recipes), out
    assert {r["error_kind"] for r in lines if r["status"] != "built"} == {"interrupted"}, out


def test_a_second_ctrl_c_never_waits(mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli) -> None:
    """Two SIGINTs in a row, as an impatient user sends them: trtforge is gone at once, and what it
    leaves behind is at most a temp file the next writer removes; nothing is recorded half-way."""
    recipes = [mlp_recipe(f"twice{i}", seed=50 + i) for i in range(2)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    proc = start_build(*recipes, "--store", store, "--json", env=point.env)
    point.wait_reached(proc)
    workers = _children(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    point.close()
    assert proc.returncode == 130 and time.monotonic() - sent < STOP_LIMIT_S
    assert all(wait_gone(pid, STOP_LIMIT_S) for pid in workers)
    assert _artifact_ids(store) == set()
    again = cli("build", *recipes, "--store", store, "--json")
    assert again.code == 0 and [r["status"] for r in again.json()] == ["built", "built"], again
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["ok"] and check.json()["missing"] == [], check


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_random_points_of_a_batch(
    signum: int, jobs: str, mlp_recipe: Callable[..., Path], tmp_path: Path, cli
) -> None:
    """A three-recipe batch is signalled at seeded random moments (before, during and between its
    builds). Whenever it lands: exit 128 + signal within 2 s, workers gone, one line on stderr, the
    JSON names every recipe in order, every recipe reported built is in the catalog and nothing else
    is, no lock or temp file is left, fsck is clean, and the same command then finishes the batch."""
    recipes = [mlp_recipe(f"random{i}", seed=60 + i) for i in range(3)]
    rng = random.Random(f"issue29-{signum}-{jobs}")
    for point in range(3):
        store = tmp_path / f"store{point}"
        delay = rng.uniform(0.5, 3.0)
        proc = start_build(*recipes, "--store", store, "--jobs", jobs, "--json")
        time.sleep(delay)
        if proc.poll() is not None:  # finished before the moment came: nothing to stop
            assert proc.wait() == 0
            continue
        code, out, err, seconds, workers = _signal_and_wait(proc, signum)
        if code == -signum and not out:
            # It landed while the interpreter was still starting (a loaded machine), before `python -m
            # trtforge` installed its handlers: nothing had begun, so nothing may be recorded.
            assert workers == [] and _artifact_ids(store) == set(), (workers, err)
            continue
        # It had finished: the signal met the interpreter's own exit, or came after the answer was
        # printed (then the process ends at once with the signal's code, and says nothing more).
        if code in (0, -signum) or (code == 128 + signum and "error:" not in err):
            assert [r["status"] for r in json.loads(out)] == ["built"] * 3, (code, out, err)
            continue
        _check_stopped(code, err, signum, seconds, workers)
        results = json.loads(out)
        if results[-1]["recipe"] is None:  # stopped before the batch began: only the stopped item
            assert len(results) == 1 and results[0]["exit_code"] == code, results
            assert results[0]["error_kind"] == "interrupted" and _artifact_ids(store) == set(), results
        else:
            assert [r["recipe"] for r in results] == [str(r) for r in recipes], results
            assert {r["status"] for r in results} <= {"built", "failed"}, results
            assert all(r["error_kind"] == "interrupted" for r in results if r["status"] == "failed"), results
            assert _artifact_ids(store) == {r["artifact_id"] for r in results if r["status"] == "built"}
        assert_store_clean(store, cli, recorded=False)
        finished = cli("build", *recipes, "--store", store, "--jobs", jobs, "--json")
        assert finished.code == 0 and {r["status"] for r in finished.json()} <= {"built", "cached"}, finished


# -- the parallel digest a blob write hashes on ------------------------------------------------------


def _finishes(work: Callable[[], None], seconds: float) -> list[BaseException | None]:
    """Run ``work`` on a thread; [its exception or None] if it finished within ``seconds``, else []."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # the outcome is what the test looks at
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome


def test_a_digest_whose_helper_stopped_raises_instead_of_waiting() -> None:
    """The helper thread stops (here: a chunk it cannot hash); the writer goes on writing. Fails on
    c1e1ac4: the queue filled up and the writer waited forever for a consumer that was gone."""
    digest = ParallelDigest()
    digest.update(b"x" * (INLINE_DIGEST_BYTES + 1))  # past what is hashed inline: the helper takes over
    gone = memoryview(bytearray(b"plan" * 16))
    gone.release()  # hashing it raises in the helper, which stops
    outcome = _finishes(lambda: [digest.update(x) for x in [gone] + [b"x" * 1024] * 64] and None, 10)
    assert outcome and isinstance(outcome[0], RuntimeError), outcome
    with pytest.raises(RuntimeError):
        digest.hexdigest()
    digest.close()


def test_closing_a_digest_never_waits_for_its_queue() -> None:
    """A write that failed (or was interrupted) closes its digest while the queue's lock is taken, as
    a signal that landed between taking it and the code that releases it leaves it. Fails on
    c1e1ac4: close put an end marker on the queue and so waited for that lock forever (the Ctrl-C
    hang seen about once in a hundred tries)."""
    digest = ParallelDigest()
    digest.update(b"some bytes")
    digest._chunks.mutex.acquire()  # the lock a signal can leave held
    try:
        assert _finishes(digest.close, 2.0) == [None]
    finally:
        digest._chunks.mutex.release()


# -- the signal handler itself ----------------------------------------------------------------------

HANGING_CLEANUP = """
import sys, time
from trtforge.core.interrupts import stop_on_signals
stop_on_signals()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    print("cleaning up", flush=True)
    time.sleep(60)  # a cleanup that never ends
"""


@pytest.mark.parametrize("second", [True, False], ids=["second-signal", "watchdog"])
def test_a_command_whose_cleanup_hangs_still_ends(second: bool) -> None:
    """After the first signal a command unwinds; a second signal ends it at once, and with no second
    one it ends HARD_STOP_S later (the exit code names the signal either way)."""
    from trtforge.core.interrupts import HARD_STOP_S

    proc = start([sys.executable, "-c", HANGING_CLEANUP])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "cleaning up\n"
    sent = time.monotonic()
    if second:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    waited = time.monotonic() - sent
    if second:
        assert proc.returncode == 130 and waited < 1.0 and "SIGINT again while stopping" in err, err
    else:
        assert proc.returncode == 143 and HARD_STOP_S - 0.5 < waited < HARD_STOP_S + 2, (waited, err)
        assert f"still stopping {HARD_STOP_S:g} s after SIGTERM" in err, err
