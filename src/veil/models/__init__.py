"""Models: small torch networks and their functional (parameters-as-dict) view."""

from veil.models.functional import FunctionalModel, cross_entropy_and_accuracy
from veil.models.resnet import resnet18
from veil.models.zoo import MODELS, build_model, logistic_regression, mlp, small_cnn

__all__ = [
    "MODELS",
    "FunctionalModel",
    "build_model",
    "cross_entropy_and_accuracy",
    "logistic_regression",
    "mlp",
    "resnet18",
    "small_cnn",
]
