"""Model inversion (Fredrikson, Jha, Ristenpart 2015, MI-FACE): what does class y look like?

From x₀ = 0, gradient descent on the cost c(x) = 1 − f_y(x) (+ λ_TV·TV(x) + λ₂·mean(x²), small
optional priors), where f_y is the model's softmax probability of class y, with x projected on
the data's box after every step. The paper also stops early when c stalls or falls below a
threshold; here the number of steps is fixed.

Threat model: white-box access to the trained model (anyone who receives the released
parameters), no training data. What comes out is a class representative, not one person's row.
DP-SGD bounds what the model reveals about any single training row; the average look of a class
is a population statistic that DP does not promise to hide (a useful classifier must encode it).
`run_model_inversion` measures how much DP-SGD's noise blurs it: reconstructions of a model
trained without DP and with veil's DP-SGD (`veil.privacy.make_private`), each scored against
the class's mean training image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from veil.attacks.gradient_inversion import total_variation
from veil.attacks.image_metrics import ssim
from veil.attacks.inversion_report import format_score, image_grid_svg, inversion_section
from veil.data import federate, load_dataset
from veil.errors import check
from veil.models import FunctionalModel, build_model, cross_entropy_and_accuracy
from veil.params import Params
from veil.privacy import make_private
from veil.report import ReportSection

DEFAULT_EPSILON = 1.0
"""ε of the DP-SGD model when `run_model_inversion` is given none (δ = ``delta``)."""


def invert_class(
    model: FunctionalModel,
    params: Params,
    label: int,
    input_shape: tuple[int, ...],
    *,
    steps: int = 500,
    lr: float = 0.1,
    tv_weight: float = 0.0,
    l2_weight: float = 0.0,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """MI-FACE: the input ``[*input_shape]`` that gradient descent on 1 − softmax(f(x))_label
    (+ priors) reaches from zeros (clamped into ``bounds``) after ``steps`` steps of size ``lr``.

    ``tv_weight`` needs images ``(C, H, W)``.
    """
    check(steps >= 1, f"steps must be >= 1 (got {steps})")
    check(lr > 0, f"lr must be > 0 (got {lr})")
    check(tv_weight >= 0 and l2_weight >= 0, "tv_weight and l2_weight must be >= 0")
    check(
        tv_weight == 0 or len(input_shape) == 3,
        f"the total-variation prior needs images shaped (C, H, W) (got input_shape "
        f"{tuple(input_shape)}): pass tv_weight=0",
    )
    check(bounds[0] < bounds[1], f"bounds must be (low, high) with low < high (got {bounds})")
    leaves = {name: value.detach() for name, value in params.items()}
    x = torch.zeros((1, *input_shape)).clamp(*bounds).requires_grad_(True)
    num_classes = model.apply(leaves, x).shape[-1]
    check(0 <= label < num_classes, f"label must be in 0..{num_classes - 1} (got {label})")
    optimizer = torch.optim.SGD([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        cost = 1 - F.softmax(model.apply(leaves, x), dim=-1)[0, label]
        if tv_weight:
            cost = cost + tv_weight * total_variation(x)
        if l2_weight:
            cost = cost + l2_weight * x.pow(2).mean()
        cost.backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(*bounds)
    return x.detach()[0]


@dataclass(frozen=True)
class InvertedModel:
    """One target model and its per-class inversions, scored against the class means."""

    name: str
    test_accuracy: float
    epsilon: float | None
    noise_multiplier: float | None
    reconstructions: Tensor = field(repr=False)
    ssim_to_class_mean: list[float] = field(default_factory=list)
    ssim_to_other_means: list[float] = field(default_factory=list)
    mse_to_class_mean: list[float] = field(default_factory=list)
    nearest_class_mean: list[int] = field(default_factory=list)
    predicted_class: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Means over classes; ``identified``: share of classes whose reconstruction is closest
        (MSE) to its own class mean; ``classified``: share the model assigns to their class."""
        labels = list(range(len(self.nearest_class_mean)))
        return {
            "test_accuracy": self.test_accuracy,
            "epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "ssim_to_class_mean": float(np.mean(self.ssim_to_class_mean)),
            "ssim_to_other_means": float(np.mean(self.ssim_to_other_means)),
            "mse_to_class_mean": float(np.mean(self.mse_to_class_mean)),
            "identified": float(np.mean(np.array(self.nearest_class_mean) == labels)),
            "classified": float(np.mean(np.array(self.predicted_class) == labels)),
        }


@dataclass(frozen=True)
class ModelInversionResult:
    """`run_model_inversion`'s class means and the two inverted models (without / with DP)."""

    dataset: str
    model: str
    class_means: Tensor = field(repr=False)
    value_range: tuple[float, float]
    inverted: tuple[InvertedModel, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: parameters, and per model its summary and per-class scores."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "parameters": dict(self.parameters),
            "models": {
                m.name: {
                    **m.summary(),
                    "classes": [
                        {
                            "label": c,
                            "ssim_to_class_mean": m.ssim_to_class_mean[c],
                            "mse_to_class_mean": m.mse_to_class_mean[c],
                            "nearest_class_mean": m.nearest_class_mean[c],
                            "predicted_class": m.predicted_class[c],
                            "confidence": m.confidence[c],
                        }
                        for c in range(len(m.confidence))
                    ],
                }
                for m in self.inverted
            },
        }

    def report_section(self) -> ReportSection:
        """Class means vs the inversions of each model, and the scores."""
        rows = [("class mean", self.class_means)]
        rows += [(m.name, m.reconstructions) for m in self.inverted]
        titles = [f"class {c}" for c in range(len(self.class_means))]
        svg = image_grid_svg(rows, titles, self.value_range, id_salt="veil-model-inversion")
        header = ["model", "test accuracy", "ε", "σ", "SSIM to class mean", "to other means"]
        header += ["nearest mean is own", "classified as the class"]
        table = []
        for m in self.inverted:
            s = m.summary()
            table.append(
                [
                    m.name,
                    format_score(s["test_accuracy"], ".3f"),
                    format_score(s["epsilon"], ".3g"),
                    format_score(s["noise_multiplier"], ".3g"),
                    format_score(s["ssim_to_class_mean"], ".3f"),
                    format_score(s["ssim_to_other_means"], ".3f"),
                    format_score(s["identified"], ".0%"),
                    format_score(s["classified"], ".0%"),
                ]
            )
        paragraphs = [
            f"Attacker: white-box access to the trained {self.model} on {self.dataset}, no data. "
            "Each image is the input that maximises one class's probability (Fredrikson et al. "
            "2015), compared with that class's mean training image.",
            "DP-SGD protects each training row, not what a class looks like on average: "
            "reconstructions of the DP model may still resemble the class means.",
        ]
        caption = "Rows: class means, then the inversion of each model, one column per class."
        return inversion_section(
            "Model inversion (Fredrikson et al. 2015)", paragraphs, svg, caption, header, table
        )


def run_model_inversion(
    dataset: str = "digits",
    *,
    epsilon: float | None = None,
    model: str = "logistic",
    hidden: Sequence[int] = (64,),
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 0.5,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    steps: int = 500,
    lr: float = 0.1,
    tv_weight: float = 0.0,
    seed: int = 0,
    noise_seed_for_testing: int | None = None,
) -> ModelInversionResult:
    """Train ``model`` on an image data set without DP and with DP-SGD at (ε, δ), then invert
    every class of both.

    ``epsilon`` defaults to `DEFAULT_EPSILON`; σ is calibrated by `veil.privacy.make_private`
    for ``epochs`` epochs of Poisson batches of expected size ``batch_size``. Both models start
    from the same ``seed`` and train by SGD at ``learning_rate``; ``steps``, ``lr`` and
    ``tv_weight`` go to `invert_class`. Scores use the training rows (`veil.data.federate`,
    pixels in [0, 1]); accuracy the held-out 20%.
    """
    epsilon = DEFAULT_EPSILON if epsilon is None else epsilon
    check(epsilon > 0, f"epsilon must be > 0 (got {epsilon})")
    check(epochs >= 1, f"epochs must be >= 1 (got {epochs})")
    check(learning_rate > 0, f"learning_rate must be > 0 (got {learning_rate})")
    data = load_dataset(dataset, seed=seed)
    check(
        len(data.feature_shape) == 3,
        f"model inversion draws images: dataset must hold images (C, H, W), e.g. 'digits' or "
        f"'mnist' (got {dataset!r} with features {data.feature_shape})",
    )
    fed = federate(data, method="iid", num_clients=1, seed=seed)
    rows = fed.clients[0]
    x, y = torch.from_numpy(rows.x_train), torch.from_numpy(rows.y_train)
    test = (torch.from_numpy(fed.x_test), torch.from_numpy(fed.y_test))
    check(1 <= batch_size <= len(y), f"batch_size must be in [1, {len(y)}] (got {batch_size})")
    means = torch.stack([x[y == c].mean(0) for c in range(data.num_classes)])
    inverted = []
    from veil.experiment import torch_threads  # here: veil.experiment is a heavy import

    with torch_threads(1):  # tiny models: thread start-up costs more than it saves
        for private in (False, True):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = build_model(model, data.feature_shape, data.num_classes, hidden=hidden)
                optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate)
                loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
                sigma = spent = None
                if private:
                    module, optimizer, loader = make_private(
                        module,
                        optimizer,
                        loader,
                        target_epsilon=epsilon,
                        epochs=epochs,
                        max_grad_norm=max_grad_norm,
                        delta=delta,
                        noise_seed_for_testing=noise_seed_for_testing,
                    )
                for _ in range(epochs):
                    for batch_x, batch_y in loader:
                        optimizer.zero_grad()
                        F.cross_entropy(module(batch_x), batch_y).backward()
                        optimizer.step()
                if private:
                    optimizer.keeper.remove()
                    sigma, spent = optimizer.noise_multiplier, optimizer.epsilon()
            network = FunctionalModel(module)
            params = network.init_params()
            accuracy = cross_entropy_and_accuracy(network, params, *test)[1]
            name = f"DP-SGD ε={spent:.3g}" if private else "no DP"
            images = torch.stack(
                [
                    invert_class(
                        network,
                        params,
                        c,
                        data.feature_shape,
                        steps=steps,
                        lr=lr,
                        tv_weight=tv_weight,
                    )
                    for c in range(data.num_classes)
                ]
            )
            inverted.append(_score(name, network, params, images, means, accuracy, spent, sigma))
    return ModelInversionResult(
        dataset=dataset,
        model=model if model != "mlp" else f"mlp {list(hidden)}",
        class_means=means,
        value_range=(0.0, 1.0),
        inverted=tuple(inverted),
        parameters={
            "epsilon": epsilon,
            "delta": delta,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_grad_norm": max_grad_norm,
            "steps": steps,
            "lr": lr,
            "tv_weight": tv_weight,
            "seed": seed,
        },
    )


def _score(
    name: str,
    network: FunctionalModel,
    params: Params,
    images: Tensor,
    means: Tensor,
    accuracy: float,
    epsilon: float | None,
    sigma: float | None,
) -> InvertedModel:
    classes = range(len(means))
    squared = (images[:, None] - means[None]).pow(2).flatten(2).mean(-1)  # [image, mean]
    with torch.no_grad():
        probabilities = F.softmax(network.apply(params, images), dim=-1)
    similarity = [[ssim(images[c], means[k], 1.0) for k in classes] for c in classes]
    return InvertedModel(
        name=name,
        test_accuracy=accuracy,
        epsilon=epsilon,
        noise_multiplier=sigma,
        reconstructions=images,
        ssim_to_class_mean=[similarity[c][c] for c in classes],
        ssim_to_other_means=[
            float(np.mean([similarity[c][k] for k in classes if k != c])) for c in classes
        ],
        mse_to_class_mean=[float(squared[c, c]) for c in classes],
        nearest_class_mean=[int(squared[c].argmin()) for c in classes],
        predicted_class=[int(probabilities[c].argmax()) for c in classes],
        confidence=[float(probabilities[c, c]) for c in classes],
    )
