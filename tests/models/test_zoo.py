import pytest
import torch

from veil.errors import ConfigError
from veil.models import build_model, logistic_regression, mlp, small_cnn


def test_shapes_of_each_model():
    assert logistic_regression(30, 2)(torch.zeros(4, 30)).shape == (4, 2)
    assert mlp(64, [32, 16], 10, "tanh")(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    assert small_cnn((1, 28, 28), 10)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert small_cnn((1, 8, 8), 10)(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_build_model_by_name():
    assert isinstance(build_model("mlp", (30,), 2, hidden=[8])[1], torch.nn.Linear)
    assert build_model("cnn", (1, 8, 8), 10)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_model("resnet", (3,), 2), r"model.name must be one of .*'resnet'"),
        (lambda: mlp(3, [], 2), "at least one layer width"),
        (lambda: mlp(3, [0], 2), r"widths must be >= 1 \(got \[0\]\)"),
        (lambda: mlp(3, [4], 2, "gelu"), "model.activation must be one of"),
        (lambda: logistic_regression(3, 1), r"num_classes must be >= 2 \(got 1\)"),
        (lambda: small_cnn((30,), 2), r"cnn needs image data shaped \(C, H, W\)"),
        (lambda: small_cnn((1, 2, 2), 2), "at least 4×4"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
