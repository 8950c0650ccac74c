import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from veil.attacks.image_metrics import SSIM_K1, SSIM_K2, psnr, score_reconstructions, ssim
from veil.errors import ConfigError


def _image(seed: int, shape=(8, 8)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_psnr_known_answers():
    truth = torch.zeros(4, 4)
    assert psnr(truth + 0.1, truth, 1.0) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(truth + 0.1, truth, 2.0) == pytest.approx(20.0 + 20 * math.log10(2))
    assert psnr(np.full((3,), 0.5), np.zeros(3), 1.0) == pytest.approx(10 * math.log10(4))
    assert psnr(truth, truth, 1.0) == math.inf


def test_psnr_rejects_bad_input():
    with pytest.raises(ConfigError, match="same shape"):
        psnr(torch.zeros(3), torch.zeros(4), 1.0)
    with pytest.raises(ConfigError, match="data_range must be > 0"):
        psnr(torch.zeros(3), torch.zeros(3), 0.0)
    with pytest.raises(ConfigError, match="empty"):
        psnr(torch.zeros(0), torch.zeros(0), 1.0)


def test_ssim_of_identical_images_is_one():
    for shape in [(8, 8), (1, 8, 8), (3, 16, 16), (28, 28)]:
        image = _image(1, shape)
        assert ssim(image, image, 1.0) == pytest.approx(1.0)


def test_ssim_of_constant_images_by_hand():
    # No variance anywhere: only the luminance term (2ab + C1) / (a² + b² + C1) remains.
    a, b = 0.2, 0.6
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(torch.full((8, 8), a), torch.full((8, 8), b), 1.0) == pytest.approx(expected)


def test_ssim_with_a_one_pixel_window_by_hand():
    # A 1×1 window has no variance: each pixel scores (2xy + C1) / (x² + y² + C1).
    x = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    y = torch.tensor([[0.5, 1.0], [0.0, 0.75]])
    c1 = SSIM_K1**2
    pairs = zip(x.flatten().tolist(), y.flatten().tolist(), strict=True)
    per_pixel = [(2 * p * q + c1) / (p * p + q * q + c1) for p, q in pairs]
    assert ssim(x, y, 1.0, window_size=1) == pytest.approx(float(np.mean(per_pixel)))


def _ssim_by_gaussian_filter(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image's algorithm on scipy's Gaussian filter: filter everywhere, drop a 5-pixel
    border (the 11×11 window's radius), average."""

    def blur(z):
        return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    full = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(full[5:-5, 5:-5].mean())


def test_ssim_matches_an_independent_gaussian_filter():
    x = _image(2, (20, 24)).numpy()
    y = np.clip(x + 0.2 * _image(3, (20, 24)).numpy() - 0.1, 0, 1)
    assert ssim(x, y, 1.0) == pytest.approx(_ssim_by_gaussian_filter(x, y, 1.0), abs=1e-9)


def test_ssim_matches_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    x = _image(4, (16, 16)).numpy()
    y = np.clip(x + 0.3 * _image(5, (16, 16)).numpy(), 0, 1)
    reference = metrics.structural_similarity(
        x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(x, y, 1.0) == pytest.approx(reference, abs=1e-6)


def test_ssim_falls_as_noise_grows():
    truth = _image(6)
    noise = _image(7) - 0.5
    scores = [ssim((truth + level * noise).clamp(0, 1), truth, 1.0) for level in (0.1, 0.5, 2.0)]
    assert scores[0] > scores[1] > scores[2]
    assert ssim(1 - truth, truth, 1.0) < 0  # inverted contrast: structure anti-correlated


def test_ssim_rejects_bad_input():
    with pytest.raises(ConfigError, match=r"ssim needs images shaped \(H, W\)"):
        ssim(torch.zeros(30), torch.zeros(30), 1.0)
    with pytest.raises(ConfigError, match="window_size must be odd"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8), 1.0, window_size=4)
    with pytest.raises(ConfigError, match="at most the image's side 8"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8), 1.0, window_size=9)
    with pytest.raises(ConfigError, match="data_range must be > 0"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8), -1.0)


def test_score_reconstructions_undoes_a_permutation():
    truth = torch.stack([_image(seed, (1, 8, 8)) for seed in range(4)]).float()
    order = [2, 0, 3, 1]
    reconstructed = truth[order] + 0.01
    scores = score_reconstructions(reconstructed, truth, 1.0)
    assert [order[j] for j in scores["match"]] == [0, 1, 2, 3]
    assert scores["psnr"] == pytest.approx([40.0] * 4, abs=1e-3)
    assert all(s > 0.99 for s in scores["ssim"])


def test_score_reconstructions_clamps_to_bounds_and_skips_ssim_for_vectors():
    truth = torch.zeros(1, 5)
    unclamped = score_reconstructions(truth - 1.0, truth, 1.0)
    clamped = score_reconstructions(truth - 1.0, truth, 1.0, bounds=(0.0, 1.0))
    assert unclamped["psnr"] == [0.0]
    assert clamped["psnr"] == [math.inf]
    assert clamped["ssim"] is None
    with pytest.raises(ConfigError, match="same shape"):
        score_reconstructions(torch.zeros(2, 5), truth, 1.0)
