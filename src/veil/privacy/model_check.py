"""Refuse models whose layers mix samples, and swap BatchNorm for GroupNorm.

DP-SGD bounds each sample's influence by clipping its own gradient, which presumes that sample
``i``'s loss depends on sample ``i`` alone. BatchNorm breaks this in training mode (every output
is normalised with the whole batch's mean and variance, so one sample moves every other sample's
gradient), and its running statistics are written from the data without noise and released with
the model. InstanceNorm with ``track_running_stats=True`` leaks the same way through its buffers.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from veil.errors import ConfigError
from veil.models.resnet import norm_groups


def _mixing_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
        or (isinstance(module, _InstanceNorm) and module.track_running_stats)
    ]


def check_model(model: nn.Module) -> None:
    """Raise `ConfigError` naming every module that is not per-sample private (BatchNorm, ...)."""
    offending = _mixing_modules(model)
    if offending:
        names = ", ".join(f"{name or '<model>'} ({type(m).__name__})" for name, m in offending)
        raise ConfigError(
            f"model is not per-sample private: {names} mix samples or keep running statistics of "
            "the data; use GroupNorm (or InstanceNorm with track_running_stats=False), e.g. "
            "model = veil.privacy.model_check.fix_model(model)"
        )


def _replacement(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm):
        channels = module.num_features
        norm = nn.GroupNorm(norm_groups(channels), channels, module.eps, module.affine)
        if module.affine:
            norm.weight.data.copy_(module.weight.detach())
            norm.bias.data.copy_(module.bias.detach())
        return norm
    fixed = copy.deepcopy(module)
    fixed.track_running_stats = False
    fixed.running_mean = fixed.running_var = fixed.num_batches_tracked = None
    return fixed


def fix_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm replaced by GroupNorm; ``model`` is unchanged.

    ``BatchNorm{1,2,3}d(C)`` becomes ``GroupNorm(gcd(C, 32), C)`` (Wu & He 2018's 32 groups
    where they divide C) with the same ``eps`` and affine parameters; running statistics are
    dropped. InstanceNorm layers stop tracking running statistics.
    """
    fixed = copy.deepcopy(model)
    if isinstance(fixed, _BatchNorm | _InstanceNorm) and _mixing_modules(fixed):
        return _replacement(fixed)
    for name, module in _mixing_modules(fixed):
        parent_name, _, child = name.rpartition(".")
        setattr(fixed.get_submodule(parent_name), child, _replacement(module))
    return fixed
