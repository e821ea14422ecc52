"""The MLflow Model of a trained run: ``RUN/model/``, logged as the run's ``model`` artifact and
registered as the model version (``recsys.runs.tracking``).

Written once per run (again when the run's best checkpoint changed), in a temporary folder
inside the run directory and renamed into place: what it holds was loaded and scored before it
is kept (the input example's output gives the signature).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import polars as pl

from recsys.model.build import best_checkpoint
from recsys.serving import package as pkg
from recsys.serving.package import Package
from recsys.serving.package_build import build_package
from recsys.serving.pyfunc import PACKAGE_ARTIFACT
from recsys.serving.schema import (
    HISTORY,
    ITEM_ID,
    ITEM_PRIOR,
    PRIOR_FIELDS,
    TIMESTAMP,
    USER_ID,
    USER_PRIOR,
)

MODEL_DIR = "model"  # RUN/model: the run's MLflow Model
ENTRY = Path(__file__).with_name("mlflow_entry.py")
REPO = Path(__file__).resolve().parents[2]
CODE = ("data", "multimodal", "ranking", "recsys")  # the packages the model's code needs
# What the model imports (directly or through the recsys packages), pinned to the versions
# that packaged it. torchrec needs fbgemm; the CPU build's package has its own name.
REQUIREMENTS = ("mlflow", "torch", "torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu", "numpy", "pandas",
                "polars", "pyarrow", "safetensors", "peft", "transformers", "pillow", "tqdm")


def package_dir(model_dir: Path) -> Path:
    """The serving package inside an MLflow Model folder written here."""
    return pkg.inside(model_dir, f"artifacts/{PACKAGE_ARTIFACT}")


def is_current(run_dir: Path) -> bool:
    """Whether ``RUN/model`` exists and serves the run's present best checkpoint."""
    info = Path(run_dir) / MODEL_DIR / "artifacts" / PACKAGE_ARTIFACT / pkg.INFO
    checkpoint = best_checkpoint(Path(run_dir))
    if not info.is_file() or checkpoint is None:
        return False
    return json.loads(info.read_text())["checkpoint"]["path"] == str(checkpoint.resolve())


def ensure_mlflow_model(run_dir: str | Path, data_dir: str | Path | None = None,
                        progress: bool = False) -> Path:
    """``RUN/model``, written when missing or stale; returns its path."""
    run_dir = Path(run_dir)
    if not is_current(run_dir):
        save_mlflow_model(run_dir, data_dir, progress)
    return run_dir / MODEL_DIR


def save_mlflow_model(run_dir: str | Path, data_dir: str | Path | None = None,
                      progress: bool = False) -> Path:
    """Writes ``RUN/model``: the pyfunc model (from code), its ``package`` artifact, the
    signature and input example, ``code_paths`` and pinned requirements.

    Raises:
        UsageError: the run cannot be packaged (``recsys.serving.package_build``).
    """
    import mlflow.pyfunc

    from recsys.serving.served import ServedModel

    run_dir = Path(run_dir)
    final = run_dir / MODEL_DIR
    with tempfile.TemporaryDirectory(prefix=".tmp-model-", dir=run_dir) as tmp:
        staged = build_package(run_dir, Path(tmp) / PACKAGE_ARTIFACT, data_dir, progress)
        served = ServedModel.load(staged)  # what is kept has loaded and scored
        try:
            example = input_example(served.package)
            output = served.predict(example).to_pandas()
        finally:
            served.close()
        mlflow.pyfunc.save_model(
            Path(tmp) / MODEL_DIR, python_model=str(ENTRY),
            artifacts={PACKAGE_ARTIFACT: str(staged)}, code_paths=_stage_code(Path(tmp) / "code"),
            signature=signature(example, output, served.package),
            input_example=example, pip_requirements=pinned_requirements(),
            metadata={"recsys_run": served.package.info["run"],
                      "recsys_heads": list(served.package.heads)})
        old = Path(tmp) / "old"
        if final.exists():
            final.rename(old)
        (Path(tmp) / MODEL_DIR).rename(final)
    return final


def input_example(package: Package) -> pd.DataFrame:
    """Three request rows from the package itself: a known user sending their state, the same
    user leaving it to the snapshot, and an unknown user on an item outside the catalogue.
    Every optional column appears, so the signature names them all."""
    schema = package.schema
    user = package.users.sort("rows", descending=True).row(0, named=True)
    items = package.catalogue.items.filter(pl.col("item_id").is_not_null())
    item = items.row(0, named=True)
    unknown_user = _unused(package.users["user_id"], schema.user_ids_integer)
    unknown_item = _unused(items["item_id"], schema.item_ids_integer)
    ts = int(package.info["snapshot_ts"]) + 60
    rows = {
        USER_ID: [user["user_id"], user["user_id"], unknown_user],
        ITEM_ID: [item["item_id"], item["item_id"], unknown_item],
        TIMESTAMP: [ts, ts, ts],
    }
    for c in schema.context:
        rows[c] = [_category(package, f"ctx_{c}")] * 3
    rows[HISTORY] = [list(user["history"]), None, []]
    rows[USER_PRIOR] = [_prior(user), None, _prior({"rows": 0, "positives": 0})]
    rows[ITEM_PRIOR] = [_prior(item), None, _prior({"rows": 0, "positives": 0})]
    for c in schema.user_features:
        value = user.get(f"user_{c}")
        rows[c] = [value, None, _category(package, f"user_{c}")]
    return pd.DataFrame(rows)


def _prior(state: dict) -> dict[str, int]:
    return {f: int(state[f]) for f in PRIOR_FIELDS}


def _unused(ids: pl.Series, integer: bool) -> int | str:
    """An id that is not in ``ids``."""
    if integer:
        return int(ids.max()) + 1 if len(ids) else 1
    taken = set(ids.to_list())
    return next(f"new-{i}" for i in range(len(taken) + 1) if f"new-{i}" not in taken)


def _category(package: Package, feature: str) -> str | list[str]:
    """A value the run knows for categorical ``feature`` (a one-value bag for a bag)."""
    vocab = package.vocabs.get(feature)
    value = vocab.values[0] if vocab is not None and len(vocab.values) else "<null>"
    return [str(value)] if feature in package.layout.bags else str(value)


def signature(example: pd.DataFrame, output: pd.DataFrame, package: Package):
    """``infer_signature`` of the example and its scores, with the optional columns marked
    optional (a request may leave them out; a null means "take the snapshot's")."""
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inferred = infer_signature(example, output)
    required = set(package.schema.required)
    inputs = Schema([ColSpec(c.type, c.name, required=c.name in required)
                     for c in inferred.inputs.inputs])
    return ModelSignature(inputs, inferred.outputs)


def pinned_requirements() -> list[str]:
    """``name==version`` of every requirement installed here."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def _stage_code(dest: Path) -> list[str]:
    """Copies of the code packages without caches, for ``code_paths``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    paths = []
    for name in CODE:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
        paths.append(str(dest / name))
    return paths
