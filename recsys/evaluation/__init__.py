"""Metrics, scoring a split, evaluation runs and plots."""
