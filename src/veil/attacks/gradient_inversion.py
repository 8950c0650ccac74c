"""Gradient inversion: recover a client's training inputs from the gradient it shares.

- **DLG** (Zhu, Liu, Han 2019, "Deep Leakage from Gradients"): optimise a dummy input x' and a
  dummy soft label y' = softmax(z') until their gradient matches the shared one,
  min ‖∇_θ ℓ(x', y') − g‖², by L-BFGS.
- **iDLG** (Zhao, Mopuri, Bilen 2020): the label of a one-sample cross-entropy gradient can be
  read off the last linear layer, ∂ℓ/∂W = (p − e_y) aᵀ: row y is the only row with a negative
  coefficient (`idlg_label`); DLG then only has to find x'.
- **Inverting Gradients** (Geiping, Bauermeister, Dröge, Moeller 2020): min over x' of
  1 − cos(∇_θ ℓ(x', y), g) + λ·TV(x') with known labels, by Adam on the *signed* gradient,
  the step size cut tenfold at 3/8, 5/8 and 7/8 of the steps, x' clamped to the data's box.

Threat model: whoever sees one client's update (an honest-but-curious server, or an
eavesdropper) and knows the model's architecture and the parameters it was computed at. The
update is the gradient of the mean cross-entropy over the client's batch (FedSGD). Defences
and the side-by-side comparison: `veil.attacks.gradient_inversion_experiment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from veil.attacks.image_metrics import score_reconstructions
from veil.errors import ConfigError, check
from veil.models import FunctionalModel
from veil.params import Params

METHODS = ("dlg", "idlg", "inverting_gradients")
DEFAULT_STEPS = {"dlg": 100, "idlg": 100, "inverting_gradients": 300}
"""L-BFGS iterations (DLG, iDLG) or Adam steps (Inverting Gradients) when none are given."""
DEFAULT_TV_WEIGHT = 1e-4
"""λ of the total-variation prior for images (Geiping et al.'s value); 0 for feature vectors."""
IG_LEARNING_RATE = 0.1
"""Adam's step size for Inverting Gradients, as in the paper."""

Defence = Callable[[Params], Params]


@dataclass(frozen=True)
class Reconstruction:
    """What an attack recovered: inputs ``x`` ``[B, *input_shape]``, labels ``label`` (int64
    ``[B]``: recovered by DLG, given otherwise) and the final value of the attack's loss."""

    x: Tensor
    label: Tensor
    loss: float


def cross_entropy_gradient(model: FunctionalModel, params: Params, x: Tensor, y: Tensor) -> Params:
    """The update a FedSGD client shares: ∇_θ of the mean cross-entropy of ``params`` on (x, y)."""
    leaves = _leaves(params)
    grads = _gradient(model, leaves, x, y, create_graph=False)
    return {name: g.detach() for name, g in zip(leaves, grads, strict=True)}


def last_linear_weight(params: Params) -> str:
    """The name of the last 2-D parameter: the weight of a model's final linear layer."""
    matrices = [name for name, value in params.items() if value.dim() == 2]
    check(bool(matrices), "the model has no linear layer (no 2-D parameter) to read labels from")
    return matrices[-1]


def idlg_label(gradients: Params, last_layer_weight: str) -> int:
    """The label of a one-sample cross-entropy gradient (Zhao et al. 2020).

    With softmax p and the last layer's input a, ∂ℓ/∂W = c aᵀ with c = p − e_y: c_y < 0 and every
    other c_i ≥ 0. So row y of the weight gradient points against all the others, and its inner
    product with their sum, −(1 − p_y)²‖a‖², is the most negative (row i ≠ y gets −p_i²‖a‖² and
    p_i ≤ 1 − p_y). This is Zhao et al.'s sign rule without their assumption a ≥ 0 (ReLU or
    sigmoid before the layer). With two classes the rows are ±c·aᵀ and only a known sign tells
    them apart: the bias gradient (its input is 1) if the layer has one, else the row sums
    (Zhao et al.'s a ≥ 0).
    """
    check(
        last_layer_weight in gradients,
        f"last_layer_weight {last_layer_weight!r} is not among the gradients' names "
        f"{sorted(gradients)}",
    )
    weight = gradients[last_layer_weight].detach().to(torch.float64)
    check(
        weight.dim() == 2 and weight.shape[0] >= 2,
        f"{last_layer_weight!r} must be a linear layer's weight [classes, inputs] with at least "
        f"2 classes (got shape {tuple(weight.shape)})",
    )
    bias = gradients.get(last_layer_weight.removesuffix("weight") + "bias")
    if weight.shape[0] == 2:
        signs = bias.detach() if bias is not None else weight.sum(1)
        return int(signs.argmin())
    rows = weight if bias is None else torch.cat([weight, bias.detach().to(weight)[:, None]], 1)
    gram = rows @ rows.T
    against_others = gram.sum(1) - gram.diagonal()
    return int(against_others.argmin())


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels of images ``[B, C, H, W]``."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()


def dlg(
    model: FunctionalModel,
    params: Params,
    target_gradients: Params,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    steps: int = DEFAULT_STEPS["dlg"],
    seed: int = 0,
    batch_size: int = 1,
    label: Tensor | None = None,
) -> Reconstruction:
    """Deep Leakage from Gradients: L-BFGS on ‖∇ℓ(x', softmax(z')) − g‖² over x' and z'.

    x' and z' start from N(0, 1) drawn with ``seed``. With ``label`` (int64 ``[batch_size]``,
    e.g. from `idlg_label`) the labels are fixed and only x' is optimised: that is iDLG.
    ``steps`` bounds the L-BFGS iterations (strong-Wolfe line search, which keeps the paper's
    plain L-BFGS from diverging). Returns the dummy with the lowest loss seen.
    """
    targets = _check_target(params, target_gradients)
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    _check_steps(steps)
    check(batch_size >= 1, f"batch_size must be >= 1 (got {batch_size})")
    if label is not None:
        label = _check_labels(label, num_classes, batch_size)
    generator = torch.Generator().manual_seed(seed)
    dummy_x = torch.randn((batch_size, *input_shape), generator=generator).requires_grad_(True)
    dummy_logits = torch.randn((batch_size, num_classes), generator=generator).requires_grad_(True)
    variables = [dummy_x] if label is not None else [dummy_x, dummy_logits]
    optimizer = torch.optim.LBFGS(
        variables, lr=1.0, max_iter=steps, history_size=100, line_search_fn="strong_wolfe"
    )
    leaves = _leaves(params)
    best = [math.inf, dummy_x.detach().clone(), dummy_logits.detach().clone()]

    def closure() -> Tensor:
        optimizer.zero_grad()
        soft_label = label if label is not None else dummy_logits.softmax(-1)
        grads = _gradient(model, leaves, dummy_x, soft_label, create_graph=True)
        loss = sum((g - t).pow(2).sum() for g, t in zip(grads, targets, strict=True))
        loss.backward()
        value = float(loss.detach())
        if value < best[0]:  # NaN never replaces the best
            best[:] = [value, dummy_x.detach().clone(), dummy_logits.detach().clone()]
        return loss

    optimizer.step(closure)
    recovered = label if label is not None else best[2].argmax(-1)
    return Reconstruction(best[1], recovered, best[0])


def inverting_gradients(
    model: FunctionalModel,
    params: Params,
    target_gradients: Params,
    input_shape: tuple[int, ...],
    label: int | Tensor,
    *,
    steps: int = DEFAULT_STEPS["inverting_gradients"],
    tv_weight: float = DEFAULT_TV_WEIGHT,
    seed: int = 0,
    learning_rate: float = IG_LEARNING_RATE,
    bounds: tuple[float, float] | None = None,
) -> Reconstruction:
    """Inverting Gradients: Adam on sign ∇ₓ [1 − cos(∇ℓ(x', y), g) + tv_weight·TV(x')].

    ``label`` is an int (one input) or int64 ``[B]`` (a batch of B inputs, the labels known to
    the attacker). x' starts from N(0, 1) drawn with ``seed``; with ``bounds`` = (low, high) it
    is clamped to that box after every step. TV needs images ``(C, H, W)``: use
    ``tv_weight=0`` for feature vectors. The cosine is taken over all parameters jointly.
    """
    targets = torch.cat([t.reshape(-1) for t in _check_target(params, target_gradients)])
    num_classes = target_gradients[last_linear_weight(target_gradients)].shape[0]
    labels = torch.as_tensor(label, dtype=torch.int64).reshape(-1)
    labels = _check_labels(labels, num_classes, len(labels))
    _check_steps(steps)
    check(math.isfinite(tv_weight) and tv_weight >= 0, f"tv_weight must be >= 0 (got {tv_weight})")
    check(
        tv_weight == 0 or len(input_shape) == 3,
        f"the total-variation prior needs images shaped (C, H, W) (got input_shape "
        f"{tuple(input_shape)}): pass tv_weight=0",
    )
    check(learning_rate > 0, f"learning_rate must be > 0 (got {learning_rate})")
    _check_bounds(bounds)
    generator = torch.Generator().manual_seed(seed)
    dummy_x = torch.randn((len(labels), *input_shape), generator=generator).requires_grad_(True)
    optimizer = torch.optim.Adam([dummy_x], lr=learning_rate)
    milestones = sorted({max(1, steps * k // 8) for k in (3, 5, 7)})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    leaves = _leaves(params)
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        optimizer.zero_grad()
        grads = _gradient(model, leaves, dummy_x, labels, create_graph=True)
        loss = 1 - F.cosine_similarity(torch.cat([g.reshape(-1) for g in grads]), targets, dim=0)
        if tv_weight:
            loss = loss + tv_weight * total_variation(dummy_x)
        (dummy_x.grad,) = torch.autograd.grad(loss, [dummy_x])
        dummy_x.grad.sign_()
        optimizer.step()
        schedule.step()
        if bounds is not None:
            with torch.no_grad():
                dummy_x.clamp_(*bounds)
    return Reconstruction(dummy_x.detach(), labels, float(loss.detach()))


def reconstruct(
    model: FunctionalModel,
    params: Params,
    observed: Params,
    input_shape: tuple[int, ...],
    labels: Tensor,
    *,
    method: str = "inverting_gradients",
    steps: int | None = None,
    seed: int = 0,
    tv_weight: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> Reconstruction:
    """Run ``method`` (one of `METHODS`) on the ``observed`` gradients for ``len(labels)`` inputs.

    Only Inverting Gradients reads ``labels`` (the attacker knows them, as in Geiping et al.);
    DLG optimises its own and iDLG takes `idlg_label`'s (one input only). ``steps`` defaults to
    `DEFAULT_STEPS`, ``tv_weight`` to `DEFAULT_TV_WEIGHT` for images and 0 for feature vectors;
    ``bounds`` is Inverting Gradients' box.
    """
    check(method in METHODS, f"method must be one of {METHODS} (got {method!r})")
    steps = DEFAULT_STEPS[method] if steps is None else steps
    if method == "inverting_gradients":
        if tv_weight is None:
            tv_weight = DEFAULT_TV_WEIGHT if len(input_shape) == 3 else 0.0
        return inverting_gradients(
            model,
            params,
            observed,
            input_shape,
            labels,
            steps=steps,
            tv_weight=tv_weight,
            seed=seed,
            bounds=bounds,
        )
    check(
        method == "dlg" or len(labels) == 1,
        f"idlg recovers the label of a single input (got a batch of {len(labels)}): use dlg",
    )
    weight = last_linear_weight(observed)
    fixed = torch.tensor([idlg_label(observed, weight)]) if method == "idlg" else None
    num_classes = observed[weight].shape[0]
    return dlg(
        model,
        params,
        observed,
        input_shape,
        num_classes,
        steps=steps,
        seed=seed,
        batch_size=len(labels),
        label=fixed,
    )


def gradient_attack_scores(
    model: FunctionalModel,
    params: Params,
    x: Tensor,
    y: Tensor,
    *,
    defence: Defence | None = None,
    method: str = "inverting_gradients",
    steps: int | None = None,
    seed: int = 0,
    data_range: float | None = None,
    bounds: tuple[float, float] | None = None,
    tv_weight: float | None = None,
) -> dict[str, float | bool | None]:
    """Attack the update of a client holding (x, y) and score what the attacker recovers.

    The update is `cross_entropy_gradient` at (x, y) (x: ``[B, *input_shape]``, y: ``[B]``),
    passed through ``defence(gradients) -> gradients`` when given (clipping + noise, a secure
    sum with other clients, ...); `reconstruct` then runs ``method``. Returns ``psnr`` and
    ``ssim`` (None for feature vectors) of the reconstructions, matched one-to-one to the
    inputs (`score_reconstructions`, clamped to ``bounds``: the attacker knows the valid range)
    and averaged; ``label_correct``: for one input, whether the attacker's label is right
    (DLG's own, otherwise iDLG's), None for a batch; and the attack's final ``loss``.
    ``data_range`` defaults to the span of ``bounds``, else of x.
    """
    check(x.dim() >= 2, f"x must be a batch [B, *input_shape] (got shape {tuple(x.shape)})")
    check(y.shape == x.shape[:1], f"y must have shape [{x.shape[0]}] (got shape {tuple(y.shape)})")
    _check_bounds(bounds)
    observed = cross_entropy_gradient(model, params, x, y)
    if defence is not None:
        observed = defence(observed)
    reconstruction = reconstruct(
        model,
        params,
        observed,
        tuple(x.shape[1:]),
        y,
        method=method,
        steps=steps,
        seed=seed,
        tv_weight=tv_weight,
        bounds=bounds,
    )
    label = None
    if len(y) == 1:
        own_label = method != "inverting_gradients"
        label = (
            int(reconstruction.label[0])
            if own_label
            else idlg_label(observed, last_linear_weight(observed))
        )
    if data_range is None:
        data_range = bounds[1] - bounds[0] if bounds is not None else float(x.max() - x.min())
    scores = score_reconstructions(reconstruction.x, x, data_range, bounds)
    return {
        "psnr": float(np.mean(scores["psnr"])),
        "ssim": None if scores["ssim"] is None else float(np.mean(scores["ssim"])),
        "label_correct": None if label is None else label == int(y[0]),
        "loss": reconstruction.loss,
    }


def _gradient(
    model: FunctionalModel, leaves: Params, x: Tensor, target: Tensor, *, create_graph: bool
) -> tuple[Tensor, ...]:
    """∇_θ mean cross-entropy; ``target`` holds labels (int64 [B]) or probabilities [B, C]."""
    loss = F.cross_entropy(model.apply(leaves, x), target)
    return torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph)


def _leaves(params: Params) -> Params:
    return {name: value.detach().requires_grad_(True) for name, value in params.items()}


def _check_target(params: Params, target_gradients: Params) -> list[Tensor]:
    """The target gradients in the order of ``params``, after checking names and shapes."""
    if set(target_gradients) != set(params):
        raise ConfigError(
            "target_gradients must have the same names as params: missing "
            f"{sorted(set(params) - set(target_gradients))}, unexpected "
            f"{sorted(set(target_gradients) - set(params))}"
        )
    for name, value in params.items():
        check(
            target_gradients[name].shape == value.shape,
            f"target_gradients[{name!r}] has shape {tuple(target_gradients[name].shape)}, the "
            f"parameter has {tuple(value.shape)}",
        )
    targets = [target_gradients[name].detach().to(value.dtype) for name, value in params.items()]
    check(
        all(bool(torch.isfinite(t).all()) for t in targets),
        "target_gradients contain NaN or infinite values",
    )
    return targets


def _check_labels(label: Tensor, num_classes: int, batch_size: int) -> Tensor:
    label = torch.as_tensor(label, dtype=torch.int64).reshape(-1)
    check(
        len(label) == batch_size and bool(((label >= 0) & (label < num_classes)).all()),
        f"label must hold {batch_size} class indices in 0..{num_classes - 1} (got "
        f"{label.tolist()})",
    )
    return label


def _check_steps(steps: int) -> None:
    check(steps >= 1, f"steps must be >= 1 (got {steps})")


def _check_bounds(bounds: tuple[float, float] | None) -> None:
    check(
        bounds is None or (len(bounds) == 2 and bounds[0] < bounds[1]),
        f"bounds must be (low, high) with low < high, or None (got {bounds})",
    )
