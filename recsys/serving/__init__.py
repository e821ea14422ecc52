"""Serving a trained run: one MLflow Model per run (a pyfunc whose ``load_context`` rebuilds the
model through ``recsys.model.build.build_model``), the request schema and its validation, batch
scoring (``recsys predict``) and the export of item embeddings (``recsys export-embeddings``).
docs/serving.md describes what a user sees.
"""
