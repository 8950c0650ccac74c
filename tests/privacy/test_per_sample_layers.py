import pytest
import torch
from torch import nn

from veil.privacy import per_sample_layers
from veil.privacy.per_sample_layers import generic_rules, layer_rules, unfolded_gram

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


@pytest.fixture(autouse=True)
def float64():
    """This module compares maths, not float32 rounding."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class Scaled(nn.Module):
    """A layer no rule knows: y = a ⊙ s + t."""

    def __init__(self, width):
        super().__init__()
        self.s = nn.Parameter(torch.randn(width))
        self.t = nn.Parameter(torch.randn(width))

    def forward(self, a):
        return a * self.s + self.t


class MyLinear(nn.Linear):
    """A subclass that changes forward: must not take the Linear rule."""

    def forward(self, a):
        return super().forward(a) ** 2


def loop_reference(layer, a, g):
    """Per-sample gradients of Σ ⟨g_i, layer(a_i)⟩, one backward pass per sample."""
    grads = []
    for i in range(a.shape[0]):
        layer.zero_grad()
        (layer(a[i : i + 1]) * g[i : i + 1]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad})
    return {n: torch.stack([gr[n] for gr in grads]) for n in grads[0]}


def trainable(layer):
    return {n for n, p in layer.named_parameters() if p.requires_grad}


def check_rules(layer, a, rules_fn=layer_rules):
    with torch.no_grad():
        g = torch.randn_like(layer(a))
    expected = loop_reference(layer, a, g)
    with torch.no_grad():
        rules = rules_fn(layer, (a,), g, trainable(layer))
    assert rules.keys() == expected.keys()
    weights = torch.rand(a.shape[0])
    for name, rule in rules.items():
        torch.testing.assert_close(rule.norm_sq, expected[name].flatten(1).pow(2).sum(1))
        torch.testing.assert_close(
            rule.weighted_sum(weights), torch.tensordot(weights, expected[name], dims=1)
        )


CASES = {
    "linear": (lambda: nn.Linear(7, 4), (5, 7)),
    "linear sequence, ghost": (lambda: nn.Linear(7, 4), (5, 3, 7)),
    "linear sequence, per-sample": (lambda: nn.Linear(2, 2), (5, 2, 3, 2)),
    "conv2d, grouped": (lambda: nn.Conv2d(2, 3, 3, padding=1), (4, 2, 6, 6)),
    "conv2d, ghost by im2col": (lambda: nn.Conv2d(4, 6, 3, padding=1), (4, 4, 2, 2)),
    "conv2d, ghost by pixel gram": (
        lambda: nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        (3, 16, 6, 6),
    ),
    "conv2d, stride, dilation, groups": (
        lambda: nn.Conv2d(4, 6, 3, stride=2, dilation=2, groups=2, bias=False),
        (3, 4, 9, 9),
    ),
    "conv2d, reflect padding": (
        lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
        (3, 2, 5, 5),
    ),
    "conv2d, same padding, even kernel": (lambda: nn.Conv2d(2, 3, 2, padding="same"), (3, 2, 5, 5)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=2, stride=2), (4, 3, 9)),
    "conv3d": (lambda: nn.Conv3d(2, 2, 2), (3, 2, 3, 4, 3)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (3, 4, 3, 3)),
    "layernorm": (lambda: nn.LayerNorm(5), (3, 5)),
    "layernorm, positions and 2-d shape": (lambda: nn.LayerNorm((2, 3)), (3, 4, 2, 3)),
    "layernorm, no bias": (lambda: nn.LayerNorm(5, bias=False), (3, 2, 5)),
    "unknown layer": (lambda: Scaled(4), (3, 2, 4)),
    "subclass of a known layer": (lambda: MyLinear(3, 2), (4, 3)),
}


@pytest.mark.parametrize("case", CASES)
def test_rule_equals_a_loop_of_per_sample_gradients(case):
    torch.manual_seed(0)
    make, shape = CASES[case]
    check_rules(make(), torch.randn(shape))


@pytest.mark.parametrize("case", ["linear sequence, per-sample", "conv2d, grouped"])
def test_per_sample_gradients_above_the_keep_limit_are_recomputed(case, monkeypatch):
    monkeypatch.setattr(per_sample_layers, "KEEP_LIMIT", 0)
    torch.manual_seed(0)
    make, shape = CASES[case]
    check_rules(make(), torch.randn(shape))


def test_frozen_parameters_get_no_rule():
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 3, 3)
    layer.weight.requires_grad_(False)
    check_rules(layer, torch.randn(3, 2, 4, 4))


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_embedding_with_repeated_ids(padding_idx, scale_grad_by_freq):
    torch.manual_seed(0)
    layer = nn.Embedding(6, 3, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)
    ids = torch.tensor([[0, 1, 1, 2], [3, 3, 3, 0], [5, 4, 0, 0]])
    check_rules(layer, ids)


def test_the_generic_rule_agrees_with_a_specialised_one():
    torch.manual_seed(0)
    check_rules(nn.Conv2d(2, 3, 3, padding=1), torch.randn(3, 2, 4, 4), generic_rules)


def test_generic_rule_shares_inputs_without_a_batch_dimension():
    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3))

        def forward(self, a, shared):
            return a * self.w * shared

    torch.manual_seed(0)
    layer, a, shared = Bilinear(), torch.randn(4, 3), torch.randn(3)
    g = torch.randn(4, 3)
    rules = generic_rules(layer, (a, shared), g, {"w"})
    torch.testing.assert_close(rules["w"].norm_sq, (g * a * shared).pow(2).sum(1))


@pytest.mark.parametrize(
    ("kernel", "dilation", "stride", "size"),
    [
        ((3, 3), (1, 1), (1, 1), (6, 6)),
        ((3, 2), (2, 1), (1, 2), (7, 6)),
        ((5, 5), (1, 1), (2, 3), (9, 11)),
    ],
)
def test_unfolded_gram_from_pixels_equals_im2col(kernel, dilation, stride, size):
    torch.manual_seed(0)
    padded = torch.randn(2, 3, *size)
    unfolded = torch.nn.functional.unfold(padded, kernel, dilation, 0, stride)
    expected = unfolded.transpose(1, 2) @ unfolded
    torch.testing.assert_close(unfolded_gram(padded, kernel, dilation, stride), expected)
