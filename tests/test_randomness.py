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


def test_cpu_generator_is_the_key_itself_on_the_cpu():
    from veil.randomness import cpu_generator

    key = noise_generator()
    assert cpu_generator(key) is key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_from_a_device_key_is_seeded_from_it():
    from veil.randomness import cpu_generator

    derived = cpu_generator(noise_generator(device="cuda"))
    assert derived.device.type == "cpu"
