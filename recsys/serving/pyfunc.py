"""The MLflow pyfunc model of a trained run: what ``mlflow.pyfunc.load_model`` and ``mlflow
models serve`` run.

``load_context`` rebuilds the model from the ``package`` artifact (``recsys.serving.package``)
through ``ServedModel``, i.e. ``recsys.model.build.build_model``; ``predict`` takes a pandas DataFrame
of request rows (``recsys.serving.schema``) and returns one probability column per head. The
model is saved "from code" (``recsys/serving/mlflow_entry.py``), so nothing in it is a pickle.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from data.errors import DataError

PACKAGE_ARTIFACT = "package"


class RankerModel(mlflow.pyfunc.PythonModel):
    """A recsys ranking model behind MLflow's pyfunc interface."""

    def __init__(self) -> None:
        self.served = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from recsys.serving.served import ServedModel

        self.served = ServedModel.load(Path(context.artifacts[PACKAGE_ARTIFACT]))
        # Leave the process group before the interpreter shuts down (a live gloo group can
        # abort the exit; ranking.dist.process_group says why).
        atexit.register(self.close)

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """``pred_<head>`` probabilities, one row per request row.

        Raises:
            MlflowException: a bad request (INVALID_PARAMETER_VALUE: the server answers 400),
                naming the column and the first bad row.
        """
        if self.served is None:
            raise MlflowException("the model was not loaded (load_context was not called)")
        try:
            return self.served.predict(model_input).to_pandas()
        except DataError as err:
            raise MlflowException("bad request: " + "; ".join(str(p) for p in err.problems),
                                  error_code=INVALID_PARAMETER_VALUE) from None

    def close(self) -> None:
        """Leaves the process group the model opened; the model cannot score afterwards."""
        if self.served is not None:
            self.served.close()
            self.served = None
