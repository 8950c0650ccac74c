"""Small torch models for tabular data and images.

Every model is an ``nn.Sequential`` so the simulator's fused engine (`veil.runtime.fused`) can run
the Linear-only ones many clients at a time; any other ``nn.Module`` still works through the
generic ``torch.func`` engine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import nn

from veil.errors import ConfigError, check

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
MODELS = ("logistic", "mlp", "cnn")


def logistic_regression(num_features: int, num_classes: int) -> nn.Sequential:
    """Multinomial logistic regression: softmax(W x + b), one logit per class."""
    check(num_features >= 1, f"num_features must be >= 1 (got {num_features})")
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


def mlp(
    num_features: int, hidden: Sequence[int], num_classes: int, activation: str = "relu"
) -> nn.Sequential:
    """Multi-layer perceptron: Linear layers of the given widths with an activation between."""
    check(num_features >= 1, f"num_features must be >= 1 (got {num_features})")
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    check(len(hidden) >= 1, "model.hidden must list at least one layer width, e.g. [64]")
    check(all(h >= 1 for h in hidden), f"model.hidden widths must be >= 1 (got {list(hidden)})")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})"
        )
    layers: list[nn.Module] = [nn.Flatten()]
    widths = [num_features, *hidden]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def small_cnn(image_shape: Sequence[int], num_classes: int, channels: int = 16) -> nn.Sequential:
    """Two 3×3 conv + ReLU + 2×2 max-pool blocks, then a linear classifier (no batch norm)."""
    check(
        len(image_shape) == 3, f"cnn needs image data shaped (C, H, W) (got {tuple(image_shape)})"
    )
    in_channels, height, width = image_shape
    check(min(height, width) >= 4, f"cnn needs images of at least 4×4 (got {height}×{width})")
    pooled = math.floor(height / 4) * math.floor(width / 4)
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * pooled, num_classes),
    )


def build_model(
    name: str,
    feature_shape: Sequence[int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    channels: int = 16,
) -> nn.Sequential:
    """Build a model by name ("logistic", "mlp" or "cnn") for data of ``feature_shape``."""
    num_features = math.prod(feature_shape)
    if name == "logistic":
        return logistic_regression(num_features, num_classes)
    if name == "mlp":
        return mlp(num_features, hidden, num_classes, activation)
    if name == "cnn":
        return small_cnn(feature_shape, num_classes, channels)
    raise ConfigError(f"model.name must be one of {list(MODELS)} (got {name!r})")
