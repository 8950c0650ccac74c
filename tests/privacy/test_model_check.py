import pytest
import torch
from torch import nn

from veil.errors import ConfigError
from veil.privacy.model_check import check_model, fix_model


def batch_norm_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 48),
        nn.BatchNorm1d(48, eps=1e-3),
    )


def test_check_model_names_every_offending_module_and_suggests_the_fix():
    message = (
        r"model is not per-sample private: 1 \(BatchNorm2d\), 5 \(BatchNorm1d\) mix samples .*"
        r"use GroupNorm .*model_check.fix_model\(model\)"
    )
    with pytest.raises(ConfigError, match=message):
        check_model(batch_norm_model())


def test_check_model_refuses_instance_norm_with_running_statistics():
    with pytest.raises(ConfigError, match=r"<model> \(InstanceNorm2d\)"):
        check_model(nn.InstanceNorm2d(4, track_running_stats=True))
    check_model(nn.InstanceNorm2d(4))


def test_fix_model_swaps_batch_norm_for_group_norm_in_a_copy():
    model = batch_norm_model()
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    fixed = fix_model(model)
    check_model(fixed)
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is unchanged
    assert isinstance(fixed[1], nn.GroupNorm) and isinstance(fixed[5], nn.GroupNorm)
    assert (fixed[1].num_groups, fixed[1].num_channels) == (8, 8)
    assert (fixed[5].num_groups, fixed[5].eps) == (16, 1e-3)
    assert torch.all(fixed[1].weight == 2.0)
    torch.testing.assert_close(fixed[0].weight, model[0].weight)
    assert fixed(torch.randn(2, 3, 6, 6)).shape == (2, 48)


def test_fix_model_keeps_affine_off_and_fixes_a_bare_norm_layer():
    fixed = fix_model(nn.BatchNorm2d(6, affine=False))
    assert isinstance(fixed, nn.GroupNorm) and fixed.weight is None and fixed.num_groups == 2


def test_fix_model_stops_instance_norm_tracking_statistics():
    fixed = fix_model(nn.Sequential(nn.InstanceNorm1d(4, track_running_stats=True)))
    check_model(fixed)
    assert fixed[0].running_mean is None
    assert fixed(torch.randn(2, 4, 5)).shape == (2, 4, 5)
