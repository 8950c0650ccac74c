import pytest
import torch
from torch import nn
from torch.nn import functional as F

from veil.errors import ConfigError
from veil.models.resnet import BasicBlock, norm_groups, resnet18
from veil.privacy.dpsgd_api import make_private
from veil.privacy.dpsgd_bookkeeping import BookKeeping
from veil.privacy.model_check import check_model
from veil.privacy.per_sample import clipped_gradient_sum


def test_shapes_for_grey_and_colour_images():
    assert resnet18(10, 1, width=8)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert resnet18(5, 3, width=8)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_resnet18_layout_and_parameter_count():
    model = resnet18()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 17  # stem + 16 in the blocks: ResNet-18's 17 conv layers + 1 Linear
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    check_model(model)


def test_blocks_use_in_place_operations():
    block = BasicBlock(4, 4, 1)
    assert block.relu.inplace
    x = torch.randn(2, 4, 5, 5)
    out = block.relu(block.norm2(block.conv2(block.relu(block.norm1(block.conv1(x))))) + x)
    torch.testing.assert_close(block(x), out)


def test_projection_shortcut_when_the_shape_changes():
    assert BasicBlock(4, 8, 2).shortcut is not None
    assert BasicBlock(4, 4, 1).shortcut is None
    assert BasicBlock(4, 8, 2)(torch.zeros(1, 4, 6, 6)).shape == (1, 8, 3, 3)


@pytest.mark.parametrize(("channels", "groups"), [(64, 32), (16, 16), (24, 8), (3, 1)])
def test_norm_groups(channels, groups):
    assert norm_groups(channels) == groups


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be >= 2 \(got 1\)"),
        ({"in_channels": 0}, r"in_channels must be >= 1 \(got 0\)"),
        ({"width": 0}, r"width must be >= 1 \(got 0\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnet18(**kwargs)


def test_fast_path_norms_equal_the_generic_path_on_the_resnet():
    # float64: in float32, torch's own batched backward of this deep GroupNorm network differs
    # from a one-sample backward by up to ~1e-3 relative on some samples (ill-conditioned
    # normalisation backward), whichever way per-sample gradients are then formed.
    torch.manual_seed(0)
    model = resnet18(10, 1, width=8).double()
    x, y = torch.randn(6, 1, 16, 16, dtype=torch.float64), torch.randint(0, 10, (6,))
    mask = torch.tensor([1.0, 1, 0, 1, 1, 1], dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    expected_sum, expected = clipped_gradient_sum(model, params, x, y, mask, 1.0)
    summed, norms = BookKeeping(model).clipped_gradient_sum(x, y, mask, 1.0)
    torch.testing.assert_close(norms, expected, rtol=1e-10, atol=0)
    for k in expected_sum:
        torch.testing.assert_close(summed[k], expected_sum[k], rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")
def test_dp_sgd_trains_the_unchanged_resnet():
    torch.manual_seed(0)
    model = resnet18(4, 3, width=8)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model, optimizer, _ = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=0.05,  # noise norm σC√d/B ≈ 0.65 (d = 176k)
        max_grad_norm=1.0,
        delta=1e-5,
        noise_seed_for_testing=0,
    )
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    for _ in range(6):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < before - 0.25
