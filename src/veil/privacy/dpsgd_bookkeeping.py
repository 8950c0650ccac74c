"""Book-keeping per-sample clipping: DP-SGD's clipped gradient sum in one forward and one backward.

Bu et al. 2023 ("Differentially private optimization on large model at small cost") with the
ghost norms of Li et al. 2022. Forward hooks keep each layer's input a; a hook on the layer's
output tensor, registered when the layer runs and so before any later in-place operation
(``out += identity``, ``ReLU(inplace=True)``), receives g = ∂L/∂output with L = Σ_i ℓ_i. After
the backward pass, `veil.privacy.per_sample_layers` turns each layer's (a, g) into per-sample
squared norms; their sum over layers gives ‖∂ℓ_i/∂θ‖, the clip factors c_i, and then one weighted
reduction per parameter gives Σ_i c_i ∂ℓ_i/∂θ. There is no second backward pass and no
B × parameters tensor for the whole model.

The batch-summed weight gradients an ordinary backward pass computes are useless to DP-SGD, so
a captured forward pass runs with ``requires_grad`` off on the trainable parameters (restored
when it returns), and the backward pass computes activation gradients only, down to a zero
leaf added to the output of each first layer (a "source", whose inputs need no gradient). After
``loss.backward()`` the parameters' ``.grad`` is untouched.

Threat model: none of its own — this computes the clipped sum exactly (to float rounding); the
privacy comes from the noise added to it (`veil.privacy.dpsgd`). Requirements: every layer with
trainable parameters runs once per forward pass (no weight sharing) and treats rows independently
(`veil.privacy.model_check`); a module with this attached is for eager training, not for use
under ``torch.func`` transforms (call `BookKeeping.remove` first).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from veil.errors import ConfigError, check
from veil.params import Params
from veil.privacy.model_check import check_model
from veil.privacy.per_sample import LossFn, clip_factors, per_sample_cross_entropy
from veil.privacy.per_sample_layers import layer_rules


@dataclass
class _Capture:
    inputs: tuple
    versions: tuple[int | None, ...]
    keywords: bool
    calls: int = 1
    grad_output: Tensor | None = None


def _check_untied(module: nn.Module) -> None:
    owners: dict[int, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in owners:
            raise ConfigError(
                f"parameters {owners[id(param)]} and {name} are the same tensor (tied weights): "
                "book-keeping needs each parameter used by one layer; use "
                "veil.privacy.per_sample.clipped_gradient_sum"
            )
        owners[id(param)] = name


class BookKeeping:
    """Hooks on ``module`` that turn its next forward and backward pass into clipped sums.

    ``keeper.clipped_gradient_sum(x, y, mask, C)`` runs both passes itself; or run them yourself
    (any loss that is a sum or mean of per-row losses) and call
    ``keeper.clipped_sum(C, loss_reduction)``.
    """

    def __init__(self, module: nn.Module) -> None:
        check_model(module)
        _check_untied(module)
        self.module = module
        self._captures: dict[str, _Capture] = {}
        self._frozen: dict[int, nn.Parameter] = {}
        self._anchors: list[Tensor] = []
        self._computing = False
        self._handles = [
            module.register_forward_pre_hook(self._freeze, prepend=True),
            module.register_forward_hook(self._unfreeze, always_call=True),
        ]
        for name, layer in module.named_modules():
            if next(layer.parameters(recurse=False), None) is not None:
                capture = self._capturer(name)
                self._handles.append(layer.register_forward_hook(capture, with_kwargs=True))

    def remove(self) -> None:
        """Detach every hook: ``module`` is an ordinary module again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.reset()

    def reset(self) -> None:
        """Forget what the last forward and backward passes captured."""
        self._captures.clear()
        self._anchors = []

    def _capturing(self) -> bool:
        return torch.is_grad_enabled() and not self._computing

    def _freeze(self, module: nn.Module, inputs: tuple) -> None:
        if self._capturing() and not self._frozen:
            self._anchors = []
            self._frozen = {id(p): p for p in module.parameters() if p.requires_grad}
            for param in self._frozen.values():
                param.requires_grad_(False)

    def _unfreeze(self, module: nn.Module, inputs: tuple, output: object) -> None:
        for param in self._frozen.values():
            param.requires_grad_(True)
        self._frozen = {}

    def _anchored(self, layer: nn.Module, output: Tensor) -> Tensor:
        """``output + 0`` with the 0 a leaf that needs a gradient, for a source layer.

        A layer whose parameters are frozen for this pass and whose inputs need no gradient (a
        first layer) would leave the backward pass nothing to reach; the zero gives it a leaf
        that costs one addition, instead of the layer's own weight gradient.
        """
        if output.requires_grad or not output.is_floating_point():
            return output
        if not any(id(p) in self._frozen for p in layer.parameters(recurse=False)):
            return output
        anchor = output.new_zeros((), requires_grad=True)
        self._anchors.append(anchor)
        return output + anchor

    def _capturer(self, name: str):
        def capture(layer: nn.Module, inputs: tuple, keywords: dict, output: object) -> object:
            if not self._capturing() or not isinstance(output, Tensor):
                return None
            output = self._anchored(layer, output)
            if not output.requires_grad:
                return None
            previous = self._captures.get(name)
            record = _Capture(
                tuple(v.detach() if isinstance(v, Tensor) else v for v in inputs),
                tuple(v._version if isinstance(v, Tensor) else None for v in inputs),
                keywords=bool(keywords),
                calls=1 if previous is None else previous.calls + 1,
            )
            self._captures[name] = record
            output.register_hook(lambda g: setattr(record, "grad_output", g))
            return output

        return capture

    def clipped_gradient_sum(
        self,
        x: Tensor,
        y: Tensor,
        mask: Tensor,
        max_grad_norm: float,
        loss_fn: LossFn = per_sample_cross_entropy,
    ) -> tuple[Params, Tensor]:
        """Σ_i m_i c_i ∂ℓ_i/∂θ and ‖∂ℓ_i/∂θ‖ (0 on padding rows), one forward and one backward.

        The contract of `veil.privacy.per_sample.clipped_gradient_sum`; the padding rows of
        ``x`` must hold finite values (zeros, or copies of a real row).
        """
        self.reset()
        losses = loss_fn(self.module(x.detach()), y)
        total = (losses * mask.to(losses.dtype)).sum()
        if not self._anchors:
            raise ConfigError("the loss depends on no trainable parameter of the model")
        torch.autograd.grad(total, self._anchors, allow_unused=True)
        return self.clipped_sum(max_grad_norm)

    def clipped_sum(
        self, max_grad_norm: float, loss_reduction: str = "sum"
    ) -> tuple[Params, Tensor]:
        """From the captured passes: Σ_i c_i ∂ℓ_i/∂θ per trainable parameter and ‖∂ℓ_i/∂θ‖.

        The backward pass was of Σ_i ℓ_i (``loss_reduction="sum"``) or of its mean over the
        batch (``"mean"``). Parameters that did not take part get zeros. Resets the captures.
        """
        check(
            loss_reduction in ("sum", "mean"),
            f"loss_reduction must be 'sum' or 'mean' (got {loss_reduction!r})",
        )
        try:
            rules, batch = self._rules()
            scale = batch if loss_reduction == "mean" else 1.0
            params = {k: p for k, p in self.module.named_parameters() if p.requires_grad}
            start = torch.zeros(batch, device=next(iter(params.values())).device)
            norms = sum((r.norm_sq for r in rules.values()), start).sqrt() * scale
            weights = clip_factors(norms, max_grad_norm) * scale
            summed = {
                k: rules[k].weighted_sum(weights) if k in rules else torch.zeros_like(p)
                for k, p in params.items()
            }
            return summed, norms
        finally:
            self.reset()

    def _rules(self) -> tuple[dict, int]:
        if not self._captures:
            raise ConfigError(
                "no forward and backward pass was captured since the last step: run the model "
                "and loss.backward() (with gradients enabled) before computing the clipped sum"
            )
        rules, batch = {}, None
        with self._rule_context():
            for name, record in self._captures.items():
                if record.grad_output is None:
                    continue  # the layer ran but the loss does not depend on its output
                self._check_record(name, record)
                batch = record.grad_output.shape[0] if batch is None else batch
                if batch == 0:
                    return {}, 0
                layer = self.module.get_submodule(name)
                trainable = {n for n, p in layer.named_parameters(recurse=False) if p.requires_grad}
                if not trainable:
                    continue
                prefix = f"{name}." if name else ""
                for param_name, rule in layer_rules(
                    layer, record.inputs, record.grad_output, trainable
                ).items():
                    rules[prefix + param_name] = rule
        if batch is None:
            raise ConfigError(
                "no backward pass reached the model since its forward pass: call loss.backward() "
                "before computing the clipped sum (the loss must depend on a trainable parameter)"
            )
        return rules, batch

    @staticmethod
    def _check_record(name: str, record: _Capture) -> None:
        layer = name or "<model>"
        if record.calls > 1:
            raise ConfigError(
                f"layer {layer} ran {record.calls} times in one pass; book-keeping needs each "
                "layer once per forward pass (call optimizer.zero_grad() between steps; for a "
                "model that reuses a layer use veil.privacy.per_sample.clipped_gradient_sum)"
            )
        if record.keywords:
            raise ConfigError(
                f"layer {layer} was called with keyword arguments; book-keeping needs a layer's "
                "inputs passed positionally"
            )
        for value, version in zip(record.inputs, record.versions, strict=True):
            if isinstance(value, Tensor) and value._version != version:
                raise ConfigError(
                    f"the input of layer {layer} was modified in place after the layer ran; "
                    "book-keeping needs it unchanged (use an out-of-place operation there)"
                )

    @contextmanager
    def _rule_context(self) -> Iterator[None]:
        self._computing = True
        try:
            with torch.no_grad():
                yield
        finally:
            self._computing = False
