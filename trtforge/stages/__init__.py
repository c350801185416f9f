"""The stages: each composes the rules, the store and a backend into one thing a user asks for.

build (and plan, its dry run), verify, refit, reproduce, adopt, lookup, bundle (export/import),
maintenance (fsck, gc), denylist_derive, and above them deploy and selftest, which use the others.
The CLI calls exactly one of these per command; so does the public API in ``trtforge/__init__.py``.
"""
