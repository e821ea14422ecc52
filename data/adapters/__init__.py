"""Adapters: turn public dataset layouts into contract datasets (docs/design.md §4)."""

from data.adapters.movielens import MovieLensReport, prepare_movielens

__all__ = ["MovieLensReport", "prepare_movielens"]
