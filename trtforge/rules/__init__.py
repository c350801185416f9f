"""Rules and validated data: what a recipe, a target and a build key are, and which engine may run where.

Pure functions and Pydantic models (recipe format, flavors and versions, targets, the capability
table, the compatibility envelope and lookup's rules, canonical JSON and keys, artifact records,
signatures). They read files a user points at (recipes, models) but never the store or a backend.
"""
