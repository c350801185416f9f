"""Sizes and repetition counts: full runs and a tiny quick mode (for the test suite)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    quick: bool
    reps_fast: int  # repetitions of sub-second measurements
    reps_slow: int  # repetitions of multi-second measurements
    many_recipes: int
    big_model_mb: float
    lookup_sizes: tuple[int, ...]
    lookup_queries: int
    concurrency: tuple[int, ...]
    ingest_mb: int
    corpus: int | None = 140  # node-test models in figure 7 (None: the whole corpus); --corpus
    jobs: int | None = None  # figure 7's --jobs against --jobs 1 (None: the machine's cores); --jobs


FULL = Config(
    quick=False,
    reps_fast=7,
    reps_slow=3,
    many_recipes=100,
    big_model_mb=200,
    lookup_sizes=(1_000, 10_000, 100_000),
    lookup_queries=400,
    concurrency=(2, 4),
    ingest_mb=256,
)
QUICK = Config(
    quick=True,
    reps_fast=1,
    reps_slow=1,
    many_recipes=2,
    big_model_mb=2,
    lookup_sizes=(50, 200),
    lookup_queries=20,
    concurrency=(2,),
    ingest_mb=4,
    corpus=4,
)
