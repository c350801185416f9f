"""What each command prints with `--json`: its keys, and whether it prints a list or one object.

Every result carries the same six keys besides its own (:data:`ENVELOPE`): ``exit_code``,
``error``, ``error_kind``, ``hint``, ``more_errors`` and ``error_detail``. Commands over many items
(``build``, ``plan``, ``coverage``, ``verify`` of several, ``list``, ``cache list``) print a JSON
list, one item per result, and an error that stops the whole command is one more item; the other
commands print one object with the same keys whether or not they fail. A key a command stopped
before knowing is null (a stopped item's ``status`` is ``failed``).

docs/schemas/<shape name>.json documents each shape; tests/test_json_output.py holds the two together
and checks real outputs against the schemas. This module imports nothing: a command whose module
cannot be imported (a missing extra) still prints its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENVELOPE = ("exit_code", "error", "error_kind", "hint", "more_errors", "error_detail")


@dataclass(frozen=True)
class Shape:
    """One command's `--json` output: its schema's name, its own keys, list or object."""

    name: str  # docs/schemas/<name>.json
    keys: tuple[str, ...]  # besides ENVELOPE; a few options add one (documented in the schema)
    many: bool = False  # a JSON list of items (and `--json-lines` where the command offers it)
    stopped: dict[str, Any] = field(default_factory=dict)  # a stopped command's item: these, the rest null


_FAILED = {"status": "failed"}


def _shape(name: str, keys: str, *, many: bool = False, stopped: dict[str, Any] | None = None) -> Shape:
    """A shape from its keys written as words."""
    return Shape(name, tuple(keys.split()), many=many, stopped=stopped or {})


BUILD = _shape(
    "build",
    """recipe name status artifact_id build_key target plan_path plan_sha256 seconds cost target_request
    reason notes node""",
    many=True,
    stopped=_FAILED,
)
PLAN = _shape(
    "plan",
    "recipe name target status build_key artifact_id unchecked target_request reason notes",
    many=True,
    stopped=_FAILED,
)
COVERAGE = _shape(
    "coverage",
    "name recipes target status model_sha256 artifact_id verified verification weightless missing reason notes",
    many=True,
    stopped=_FAILED,
)
VERIFY = _shape(
    "verify",
    "subject name status artifact_id runtime points perf verification_id saved_results per_layer engine",
    stopped=_FAILED,
)  # a list of them for several subjects (see the command)
CACHE_ROW = """cache_id flavor trt_version gpu_name compute_capability generation blob_sha256 size parent_id source
    artifact_id created_at"""
PIN = _shape("pin", "artifact_id name pinned changed")

SHAPES: dict[str, Shape] = {
    "build": BUILD,
    "build --reproduce": _shape(
        "reproduce",
        """artifact_id name build_key identical benign recorded_sha256 recorded_size rebuilt_sha256 rebuilt_size
        record_key_matches timing_cache difference seconds""",
    ),
    "plan": PLAN,
    "coverage": COVERAGE,
    "verify": VERIFY,
    "list": _shape(
        "list",
        """artifact_id name build_key flavor trt_version gpu_name compute_capabilities plan_sha256 plan_size
        created_at learned_at learned_via status integrity pinned""",
        many=True,
    ),
    "show": _shape(
        "show",
        """artifact_id name build_key recipe_fingerprint model_sha256 flavor trt_version gpu_name
        compute_capabilities plan_sha256 plan_size plan_path io_tensors profiles recipe recipe_path build_seconds
        build_log details created_at learned_at learned_via status statuses integrity pinned verifications""",
    ),
    "lookup": _shape("lookup", "target model matches best warnings"),  # and rejected, with --explain
    "export": _shape("export", "path artifacts plans bytes signed_by"),
    "import": _shape("import", "imported already_present plans signer verifications claims"),
    "keygen": _shape("keygen", "private_key public_key key_id"),
    "adopt": _shape(
        "adopt", "artifact_id status name flavor trt_version compute_capabilities plan_sha256 target_source"
    ),
    "doctor": _shape("doctor", "python platform backends gpus store catalog"),
    "refit": _shape("refit", "parent_id artifact_id plan_sha256 plan_path weights weights_sha256 seconds verification"),
    "denylist derive": _shape(
        "denylist-derive",
        """artifact_id results results_sha256 candidate reference atol rtol tensors_compared tensors_exceeding
        findings entries already_denied deny_file written diff engine unmappable notes""",
    ),
    "cache list": _shape("cache-list", CACHE_ROW, many=True),
    "cache export": _shape("cache-export", f"format {CACHE_ROW} path metadata_path"),
    "cache import": _shape("cache-import", CACHE_ROW),
    "cache prune": _shape("cache-prune", "rows blobs freed_bytes dry_run"),
    "fsck": _shape(
        "fsck", "ok blobs_checked artifacts_checked corrupt missing orphans stale_temp warnings"
    ),  # and repair, with --repair
    "gc": _shape("gc", "dry_run plan"),  # and result, unless --dry-run
    "pin": PIN,
    "unpin": PIN,
    "deploy triton": _shape(
        "deploy-triton",
        "repository name version model_dir version_dir config config_status trt_version files runtime model notes",
    ),
    "deploy epcontext": _shape(
        "deploy-epcontext",
        """path name artifact_id flavor trt_version source hardware_architecture embed plan_path plan_sha256 inputs
        outputs notes""",
    ),
    "selftest": _shape("selftest", "trtforge python platform backends gpus runnable reason checks store schema"),
}
# `trtforge schema` prints a JSON Schema document (the recipe's or the fleet manifest's), with or
# without --json: that document is its answer, and it has no failure to report.
NO_ENVELOPE = frozenset({"schema"})

_GROUPS = frozenset({"cache", "denylist", "deploy"})


def command_of(argv: list[str]) -> str | None:
    """The command an argument vector runs (``"cache list"``, ``"build --reproduce"``), or None."""
    words = [word for word in argv if not word.startswith("-")]
    if not words:
        return None
    command = " ".join(words[:2]) if words[0] in _GROUPS and len(words) > 1 else words[0]
    if command == "build" and any(word == "--reproduce" or word.startswith("--reproduce=") for word in argv):
        return "build --reproduce"
    return command
