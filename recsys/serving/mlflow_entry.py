"""The file MLflow executes to load a recsys model ("models from code"): the model object is
built here from the packaged code instead of being unpickled."""

from mlflow.models import set_model

from recsys.serving.pyfunc import RankerModel

set_model(RankerModel())
