"""Read polygraphy run results (``polygraphy run --save-results``, ``Comparator.run(...).save``).

Polygraphy owns the file format (JSON with its own array encoding, arrays read with
``allow_pickle=False``), so its ``RunResults.load`` reads it; what leaves this module is plain
data: runner name -> iterations -> tensor name -> numpy array. Polygraphy's logger prints
to stdout, which would corrupt ``--json`` output, so its chatter is captured and dropped.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from trtforge.core.errors import BadInputError
from trtforge.core.extras import needs

Iterations = list[dict[str, Any]]


def load_run_results(path: Path) -> list[tuple[str, Iterations]]:
    """Runners in file order with their per-iteration outputs; BadInputError if unreadable.

    ``path`` is a RunResults JSON file, or a directory of per-iteration files (what
    ``--save-results`` writes for a path without an extension).
    """
    if not path.exists():
        raise BadInputError(f"{path}: results file not found")
    chatter = io.StringIO()
    with needs("denylist", "reading run results"):
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            from polygraphy.comparator import RunResults  # lazy: heavy
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            if path.is_dir():
                results = RunResults.concat(RunResults.load_streaming(str(path)))
            else:
                results = RunResults.load(str(path))
            runners = [
                (str(name), [{str(k): v for k, v in iteration.items()} for iteration in iterations])
                for name, iterations in results.items()
            ]
    except Exception as exc:  # polygraphy raises PolygraphyException, JSON and decode errors
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"{path}: not polygraphy run results ({detail[:160]})",
            hint="save them with `polygraphy run ... --save-results FILE` or `trtforge verify --save-results`",
        ) from None
    return runners


# -- which engine produced the results (written by `trtforge verify --save-results`) -----------

ENGINE_FORMAT = "trtforge-results-engine/1"
PLAN_ENGINE = "plan"  # the artifact's stored plan
DIAGNOSTIC_ENGINE = "per-layer-diagnostic"  # the recipe rebuilt with every tensor marked (other fusion)


def engine_record_path(results: Path) -> Path:
    """``results.json`` -> ``results.json.engine.json`` (next to a file or a directory of results)."""
    return results.with_name(results.name + ".engine.json")


def write_engine_record(
    results: Path, engine: str, *, artifact_id: str | None, plan_sha256: str | None, layer_info: Any = None
) -> Path:
    """Name the engine whose outputs ``results`` hold, with its own layer information where known."""
    import json

    from trtforge.core.fsutil import atomic_write

    path = engine_record_path(results)
    data = {
        "format": ENGINE_FORMAT,
        "engine": engine,
        "artifact_id": artifact_id,
        "plan_sha256": plan_sha256,
        "layer_info": layer_info,
    }
    with atomic_write(path) as handle:
        handle.write(json.dumps(data, indent=1).encode())
    return path


def read_engine_record(results: Path) -> dict[str, Any] | None:
    """The engine record next to ``results``, or None (results saved by polygraphy itself)."""
    import json

    path = engine_record_path(results)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable engine record ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT or data.get("engine") not in (
        PLAN_ENGINE,
        DIAGNOSTIC_ENGINE,
    ):
        raise BadInputError(f"{path}: not a trtforge engine record ({ENGINE_FORMAT})")
    return data
