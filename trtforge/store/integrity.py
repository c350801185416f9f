"""Integrity of an artifact's plan, a fact apart from its verification results.

``artifacts.integrity`` is "corrupt" once `fsck --repair` quarantined the plan (or a cache hit found
its blob with another size than recorded): never a cache hit,
never handed out, whatever verifications say later; every other artifact is "ok". (A leaf module,
so the hit path and the catalog read the same words without importing each other.)
"""

from __future__ import annotations

CORRUPT_STATUS = "corrupt"
INTEGRITY_OK = "ok"
