"""How close a reconstruction is to the truth: PSNR and SSIM (Wang, Bovik, Sheikh, Simoncelli 2004).

PSNR = 10 log10(L² / MSE) in dB, with L the data range (1 for pixels in [0, 1]); +inf when the two
agree exactly. Around 10 dB is "any digit-shaped blob", above 20–25 dB the image is recognisable,
and above 40 dB it is exact to the eye.

SSIM compares local means μ, variances σ² and the covariance σ_xy under a Gaussian window:

    SSIM(x, y) = mean over windows of  (2 μ_x μ_y + C1)(2 σ_xy + C2)
                                        / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2))

with C1 = (K1 L)², C2 = (K2 L)², K1 = 0.01, K2 = 0.03 and a Gaussian window of σ = 1.5, as in the
paper. The window is 11×11, or for images smaller than that (digits are 8×8) the largest odd size
that fits (7×7 for 8×8; its weights are the same σ = 1.5 Gaussian cut to that size and
renormalised). Only windows fully inside the image count (no padding), which for 11×11 windows
is exactly scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``. Multi-channel images are averaged over channels. 1 means equal;
values near 0 mean no shared structure.

An attack on a batch returns its reconstructions in any order: `score_reconstructions` matches
them one-to-one to the true inputs (Hungarian algorithm on PSNR) before scoring.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from veil.errors import check

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11


ArrayLike = Tensor | np.ndarray


def psnr(reconstruction: ArrayLike, truth: ArrayLike, data_range: float) -> float:
    """Peak signal-to-noise ratio 10 log10(data_range² / MSE) in dB (inf if the two are equal)."""
    x, y = _pair(reconstruction, truth)
    _check_range(data_range)
    mse = float((x - y).pow(2).mean())
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)


def ssim(
    reconstruction: ArrayLike,
    truth: ArrayLike,
    data_range: float,
    *,
    window_size: int | None = None,
) -> float:
    """Mean structural similarity of two images shaped ``(H, W)`` or ``(C, H, W)``.

    ``window_size`` (odd) defaults to 11, or the largest odd size that fits the image.
    """
    x, y = _pair(reconstruction, truth)
    _check_range(data_range)
    check(
        x.dim() in (2, 3),
        f"ssim needs images shaped (H, W) or (C, H, W) (got shape {tuple(x.shape)}); "
        "for feature vectors use psnr",
    )
    if x.dim() == 2:
        x, y = x[None], y[None]
    height, width = x.shape[-2:]
    if window_size is None:
        largest_odd = min(height, width) - (1 - min(height, width) % 2)
        window_size = min(SSIM_WINDOW, largest_odd)
    check(
        window_size >= 1 and window_size % 2 == 1 and window_size <= min(height, width),
        f"window_size must be odd and at most the image's side {min(height, width)} "
        f"(got {window_size})",
    )
    window = _gaussian_window(window_size, SSIM_SIGMA)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def local_mean(z: Tensor) -> Tensor:
        return F.conv2d(z[:, None], window)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def score_reconstructions(
    reconstructed: Tensor,
    truth: Tensor,
    data_range: float,
    bounds: tuple[float, float] | None = None,
) -> dict[str, list[float] | list[int] | None]:
    """PSNR and SSIM of each true input against the reconstruction matched to it.

    A batch's reconstructions come in any order: they are matched one-to-one to the inputs to
    maximise the total PSNR (Hungarian algorithm). Returns ``match`` (``match[i]`` is the
    reconstruction matched to input i), ``psnr`` and ``ssim`` (None unless the inputs are
    images ``(C, H, W)``), each a list over the inputs. Reconstructions are clamped to
    ``bounds`` first when given.
    """
    check(
        reconstructed.shape == truth.shape,
        f"reconstructed and truth must have the same shape (got {tuple(reconstructed.shape)} "
        f"and {tuple(truth.shape)})",
    )
    if bounds is not None:
        reconstructed = reconstructed.clamp(*bounds)
    table = np.array([[psnr(r, t, data_range) for r in reconstructed] for t in truth])
    _, match = linear_sum_assignment(np.nan_to_num(table, nan=-1e9, posinf=1e9), maximize=True)
    images = truth.dim() == 4
    return {
        "match": [int(j) for j in match],
        "psnr": [float(table[i, j]) for i, j in enumerate(match)],
        "ssim": [ssim(reconstructed[j], truth[i], data_range) for i, j in enumerate(match)]
        if images
        else None,
    }


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """A normalised ``size``×``size`` Gaussian of std ``sigma``, shaped for conv2d."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    window = torch.outer(profile, profile)
    return (window / window.sum())[None, None]


def _pair(reconstruction: ArrayLike, truth: ArrayLike) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(reconstruction).detach().to("cpu", torch.float64)
    y = torch.as_tensor(truth).detach().to("cpu", torch.float64)
    check(
        x.shape == y.shape,
        f"reconstruction and truth must have the same shape (got {tuple(x.shape)} and "
        f"{tuple(y.shape)})",
    )
    check(x.numel() > 0, "reconstruction and truth are empty")
    return x, y


def _check_range(data_range: float) -> None:
    check(
        math.isfinite(data_range) and data_range > 0,
        f"data_range must be > 0, the span of valid values, e.g. 1.0 for pixels in [0, 1] "
        f"(got {data_range})",
    )
