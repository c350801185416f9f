"""From a recipe file to everything its build is decided by: backend, target, model digest, build key.

The one way to a key (``resolve``), the remembered resolutions that keep cache hits cheap
(``resolved_cache``), which timing cache a build starts from (``timing_cache_policy``) and the
many-recipe helpers (globs, ``--target`` specs, exit codes; ``batch``). Stages call this; it may
use the store and the rules, never a backend.
"""
