"""Models-from-code entry of the registered ensemble: MLflow copies this file into the model
and runs it at load time, so nothing is unpickled (needs ``training``/``tuning`` importable)."""

from mlflow.models import set_model

from tuning.predict import EnsembleModel

set_model(EnsembleModel())
