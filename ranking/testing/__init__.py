"""Helpers for the tests and benchmarks of ``ranking`` (as TorchRec's ``test_utils``).

Production code never imports this package: the toolkit trains through ``recsys``.

Modules: ``toy_data`` (random and planted-signal batches in the ``Batch`` contract),
``train`` (``train_step``, ``predict``: the ID-only model's loop without ``recsys``),
``tower`` (switches of a built model's dense tower for one block: float32 under a bf16
config, ATen's PReLU; same-weight A/B comparisons in tests and ``benchmarks/train_step.py``).
Imports ``data`` and ``ranking`` only.
"""
