"""The training loop and its performance helpers."""
