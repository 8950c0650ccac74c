import pytest
import torch
from torch import nn

from veil.errors import ConfigError
from veil.models import mlp
from veil.privacy.dpsgd import noisy_average, private_gradient
from veil.privacy.per_sample import clipped_gradient_sum
from veil.randomness import InsecureNoiseWarning, noise_generator


def seeded(stream=0):
    with pytest.warns(InsecureNoiseWarning):
        return noise_generator(seed_for_testing=11, stream=stream)


def test_noise_std_is_noise_multiplier_times_clip_norm():
    zeros = {"w": torch.zeros(200_000), "b": torch.zeros(20, 10_000)}
    noised = noisy_average(zeros, 1.3, 0.7, 1.0, seeded())
    for value in noised.values():
        assert value.mean().abs() < 0.01
        assert value.std().item() == pytest.approx(1.3 * 0.7, rel=0.01)


def test_average_divides_by_the_expected_batch_size():
    summed = {"w": torch.full((100_000,), 50.0)}
    noised = noisy_average(summed, 2.0, 1.0, 25.0, seeded())
    assert noised["w"].mean().item() == pytest.approx(2.0, abs=0.01)
    assert noised["w"].std().item() == pytest.approx(2.0 / 25.0, rel=0.02)


def test_client_stacked_trees_get_independent_noise():
    noised = noisy_average({"w": torch.zeros(3, 1000)}, 1.0, 1.0, 1.0, seeded())
    assert not torch.equal(noised["w"][0], noised["w"][1])


def test_private_gradient_is_the_clipped_sum_plus_noise_over_q_n():
    torch.manual_seed(0)
    module, x, y = mlp(5, [4], 3), torch.randn(6, 5), torch.randint(0, 3, (6,))
    params = {k: v.detach() for k, v in module.named_parameters()}
    mask = torch.ones(6)
    got, norms = private_gradient(
        module,
        params,
        x,
        y,
        mask,
        noise_multiplier=0.5,
        max_grad_norm=1.0,
        expected_batch_size=4.0,
        generator=seeded(stream=3),
    )
    summed, expected_norms = clipped_gradient_sum(module, params, x, y, mask, 1.0)
    expected = noisy_average(summed, 0.5, 1.0, 4.0, seeded(stream=3))
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])
    torch.testing.assert_close(norms, expected_norms)


def test_private_gradient_refuses_batch_norm():
    module = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    params = {k: v.detach() for k, v in module.named_parameters()}
    with pytest.raises(ConfigError, match="not per-sample private"):
        private_gradient(
            module,
            params,
            torch.randn(2, 3),
            torch.tensor([0, 1]),
            torch.ones(2),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=2.0,
            generator=noise_generator(),
        )


@pytest.mark.parametrize(
    ("sigma", "clip", "batch", "message"),
    [
        (0.0, 1.0, 1.0, r"noise_multiplier must be > 0 \(got 0.0\)"),
        (1.0, -1.0, 1.0, r"max_grad_norm must be > 0 \(got -1.0\)"),
        (1.0, 1.0, 0.0, r"expected_batch_size \(sample_rate × rows\) must be > 0 \(got 0.0\)"),
    ],
)
def test_bad_arguments(sigma, clip, batch, message):
    with pytest.raises(ConfigError, match=message):
        noisy_average({"w": torch.zeros(2)}, sigma, clip, batch, noise_generator())
