"""`trtforge doctor`: what this machine offers (backends and their recipe options, GPUs, store)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from trtforge.core.redact import redact_url
from trtforge.rules.capabilities import capability_table
from trtforge.rules.flavors import installed_backends
from trtforge.rules.target import detect_gpus, this_platform
from trtforge.store import CATALOG_FILE, resolve_store_root


def doctor_report(store: str | Path | None, catalog: str | None) -> dict[str, Any]:
    """One document: Python, platform, installed backends with their capability tables, GPUs, store and
    catalog (its password hidden). Creates nothing."""
    root = resolve_store_root(store)
    return {
        "python": platform.python_version(),
        "platform": dict(zip(("os", "arch"), this_platform(), strict=True)),
        "backends": [
            {"flavor": b.flavor, "version": b.version, "cuda": b.cuda, "capabilities": capability_table(b)}
            for b in installed_backends()
        ],
        "gpus": [vars(g) for g in detect_gpus()],
        "store": str(root),
        "catalog": redact_url(catalog or f"sqlite:///{root / CATALOG_FILE}"),
    }
