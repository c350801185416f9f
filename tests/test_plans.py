"""A plan leaves the store only when its bytes match the catalog and it is not marked corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_maintenance import _add, _damage
from trtforge.core.errors import IntegrityError
from trtforge.stages.maintenance import execute_repair, plan_repair, scan_store
from trtforge.store import open_store
from trtforge.store.plans import read_verified_plan


def test_only_verified_plans_are_handed_out(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    try:
        good = _add(store, "good", b"good plan")
        bad = _add(store, "bad", b"bad plan")
        assert read_verified_plan(store, good) == b"good plan"
        _damage(store, bad.plan_sha256, b"evil plan")
        with pytest.raises(IntegrityError, match="corrupted"):
            read_verified_plan(store, bad)
        execute_repair(store, plan_repair(scan_store(store)))
        marked = store.catalog.get_artifact(bad.id)
        store.blobs.put_bytes(b"bad plan")  # even with intact bytes back, a marked artifact stays refused
        with pytest.raises(IntegrityError, match="marked corrupt"):
            read_verified_plan(store, marked)
    finally:
        store.close()
