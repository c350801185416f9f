"""A read-only store serves hits, list, show, lookup and export, and refuses writes in one line.

Serving machines mount the store read-only (or run as a user who cannot write it). The tests
bind-mount the store read-only over itself in a private mount namespace (`unshare -m`) and run
the CLI there: as root, `chmod -R a-w` would not stop a single write, a read-only mount does.
Each test fails on 843520b: every command died on "unable to open database file" (SQLite could
not create the catalog's WAL index beside it).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli_server import CliServer
from tests.conftest import CliResult, subprocess_env

MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'  # "$0": the folder


def read_only_refusal(folder: Path) -> str | None:
    """Why a folder cannot be mounted read-only in a private mount namespace here, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    script = f'{MOUNT} && ! touch "$0/x" 2>/dev/null'
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", script, folder], capture_output=True, text=True)
    except OSError as exc:
        return f"unshare is not available: {exc}"
    return None if probe.returncode == 0 else f"no read-only bind mount here: {probe.stderr.strip()[:200]}"


@pytest.fixture
def read_only_cli(tmp_path: Path) -> Iterator[Callable[[Path], Callable[..., CliResult]]]:
    """Factory: the CLI forked from a server that runs in a mount namespace where ``store`` is
    mounted read-only over itself (every command of the test runs there, none outside)."""
    why = read_only_refusal(tmp_path / "probe")
    if why is not None:
        pytest.skip(why)
    servers: list[CliServer] = []

    def start(store: Path) -> Callable[..., CliResult]:
        workdir = tmp_path / f"ro-server{len(servers)}"
        workdir.mkdir()
        wrap = ["unshare", "-m", "sh", "-c", f'{MOUNT} && exec "$@"', str(store)]
        server = CliServer(subprocess_env(), workdir, wrap=wrap)
        servers.append(server)

        def run(*args: str | Path) -> CliResult:
            calls = server.calls
            argv = [str(a) for a in args]
            result = CliResult(server.run(argv, subprocess_env(), tmp_path, timeout=600), argv)
            assert server.calls == calls + 1, "ran outside the read-only mount namespace"
            return result

        return run

    yield start
    for server in servers:
        server.close()


def _digest_tree(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_read_only_store_serves_hits_list_show_lookup_and_export(
    cli, read_only_cli, mlp_recipe, store: Path, tmp_path: Path
) -> None:
    recipe = mlp_recipe("served")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    artifact = built["artifact_id"]
    before = _digest_tree(store)
    ro = read_only_cli(store)

    assert ro("list", "--store", store, "--json").json()[0]["artifact_id"] == artifact
    [hit] = ro("build", recipe, "--store", store, "--json").json()
    assert (hit["status"], hit["artifact_id"], hit["plan_path"]) == ("cached", artifact, built["plan_path"])
    shown = ro("show", artifact[:8], "--store", store, "--json")
    assert shown.code == 0 and shown.json()["plan_sha256"] == built["plan_sha256"], shown
    found = ro("lookup", "served", "--gpu", "NVIDIA RTX A4000", "--cc", "8.6", "--trt", built["target"]["trt_version"],
               "--flavor", "tensorrt_rtx", "--store", store, "--json")  # fmt: skip
    assert found.code == 0 and found.json()["best"]["artifact_id"] == artifact, found
    copied = ro("lookup", "served", "--gpu", "NVIDIA RTX A4000", "--cc", "8.6", "--trt", built["target"]["trt_version"],
                "--flavor", "tensorrt_rtx", "--store", store, "--output", tmp_path / "served.plan")  # fmt: skip
    assert copied.code == 0 and (tmp_path / "served.plan").read_bytes() == Path(built["plan_path"]).read_bytes()
    exported = ro("export", artifact, "-o", tmp_path / "served.tar", "--store", store, "--json")
    assert exported.code == 0 and (tmp_path / "served.tar").is_file(), exported
    assert ro("gc", "--dry-run", "--store", store, "--json").code == 0
    assert _digest_tree(store) == before  # nothing was written, not even a cache file


def test_a_read_only_store_refuses_writes_in_one_line(
    cli, read_only_cli, mlp_recipe, store: Path, tmp_path: Path
) -> None:
    recipe = mlp_recipe("kept")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    assert cli("export", built["artifact_id"], "-o", tmp_path / "b.tar", "--store", store).code == 0
    before = _digest_tree(store)
    ro = read_only_cli(store)
    for args in (
        ("build", recipe, "--force"),
        ("build", mlp_recipe("other")),
        ("import", tmp_path / "b.tar"),
        ("pin", built["artifact_id"]),
        ("gc", "--keep-last", "0"),
        ("verify", recipe, "--reference-only"),  # reference outputs are stored
    ):
        result = ro(*args, "--store", store)
        assert result.code == 2 and "Traceback" not in result.stderr, (args, result)
        [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert "the store is read-only" in error, (args, result)
    assert _digest_tree(store) == before
