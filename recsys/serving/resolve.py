"""From what a user names with ``--model`` to a serving package folder on this machine.

``--model`` is a training run directory (its MLflow Model ``RUN/model`` is written when missing
or stale), an MLflow Model folder, or an MLflow URI (``models:/NAME@champion``,
``models:/NAME/3``, ``runs:/RUN_ID/model``), which is downloaded to a temporary folder. Only the
package's data files are read: the model's packaged code is not run here (recsys reads the
package with its own code), unlike ``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.errors import UsageError
from recsys.runs import rundir
from recsys.serving import mlflow_model

MLMODEL = "MLmodel"


def is_uri(model: str) -> bool:
    return "://" in model or model.startswith(("models:/", "runs:/"))


@contextmanager
def package_of(model: str, tracking_uri: str | None = None,
               data_dir: str | Path | None = None, progress: bool = False) -> Iterator[Path]:
    """The serving package folder of ``model``, for the span of the block (a download is
    removed afterwards).

    Args:
        model: run directory, MLflow Model folder or MLflow URI.
        tracking_uri: tracking and registry store of a URI (default as ``recsys track``).
        data_dir: for a run directory whose MLflow Model must be written: the run's dataset,
            when it is no longer where ``run.json`` says.

    Raises:
        UsageError: nothing servable there, or the URI cannot be downloaded.
    """
    if is_uri(model):
        from mlflow.exceptions import MlflowException

        from recsys.runs.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
            try:
                local = _download(model, uri, tmp)
            except (MlflowException, OSError) as err:
                message = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UsageError(f"--model {model}: cannot be fetched from {uri} "
                                 f"({message})") from None
            yield _in_model_dir(Path(local), model)
        return
    path = Path(model)
    if (path / MLMODEL).is_file():
        yield _in_model_dir(path, model)
    elif (path / rundir.META_FILE).is_file():
        yield mlflow_model.package_dir(
            mlflow_model.ensure_mlflow_model(path, data_dir, progress=progress))
    else:
        raise UsageError(f"--model {model}: not a run directory (no {rundir.META_FILE}), an MLflow "
                         f"Model folder (no {MLMODEL}) or an MLflow URI (models:/NAME@ALIAS)")


def _download(model: str, uri: str, dest: str) -> str:
    """Downloads ``model`` from store ``uri`` into ``dest``; returns the local folder.

    A ``models:/`` URI is resolved to its version's files with a client of ``uri`` first:
    MLflow 3.17 resolves it with the process-wide registry URI, whatever
    ``download_artifacts`` is given, and setting that would leak into the rest of the
    process (``mlflow.set_registry_uri`` also sets ``$MLFLOW_REGISTRY_URI``).
    """
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if model.startswith("models:/"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        found = get_model_name_and_version(client, model)
        if len(found) != 2:
            raise UsageError(f"--model {model}: name a registered version (models:/NAME/VERSION "
                             "or models:/NAME@ALIAS)")
        model = client.get_model_version_download_uri(*found)
    return download_artifacts(artifact_uri=model, dst_path=dest, tracking_uri=uri)


def _in_model_dir(path: Path, model: str) -> Path:
    package = mlflow_model.package_dir(path)
    if not package.is_dir():
        raise UsageError(f"--model {model}: an MLflow Model, but not one recsys wrote (no "
                         f"artifacts/{mlflow_model.PACKAGE_ARTIFACT}); registered versions "
                         "tracked before recsys packaged models point at checkpoints only")
    return package
