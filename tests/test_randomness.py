import pytest
import torch

from veil.randomness import InsecureNoiseWarning, noise_generator


def test_secure_generators_differ_between_calls():
    a = torch.randn(8, generator=noise_generator())
    b = torch.randn(8, generator=noise_generator())
    assert not torch.equal(a, b)


def test_testing_seed_is_reproducible_and_warns():
    with pytest.warns(InsecureNoiseWarning, match="NOT private"):
        a = torch.randn(4, generator=noise_generator(7, stream=1))
    with pytest.warns(InsecureNoiseWarning):
        b = torch.randn(4, generator=noise_generator(7, stream=1))
        c = torch.randn(4, generator=noise_generator(7, stream=2))
    assert torch.equal(a, b) and not torch.equal(a, c)
