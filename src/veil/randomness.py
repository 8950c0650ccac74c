"""Where randomness comes from.

Two kinds, never mixed: *data/model* randomness (initialisation, partitioning, batch order, and
client sampling in non-private runs) follows the user's seed for reproducibility; *privacy
noise* and private sampling decisions (client sampling under DP) come from a generator
seeded from the operating system's cryptographic source (``os.urandom`` via ``secrets``), so that
knowing the config never reveals the noise. Fixing the noise seed is for tests only and must be
asked for by name (``noise_seed_for_testing``).

Threat model of the generator: torch's CPU generator is a Mersenne Twister (mt19937). Its seed
is secret, but it is not a cryptographic generator: its internal state can be reconstructed from
enough of its raw outputs. Noise samples are not raw outputs (they are transformed and added to
data), but mechanisms that must resist an adversary who sees many exact draws should sample from
`secrets` / the OS directly.
"""

from __future__ import annotations

import secrets
import warnings

import numpy as np
import torch


class InsecureNoiseWarning(UserWarning):
    """Privacy noise was seeded deterministically: the DP guarantee does not hold."""


def noise_generator(
    seed_for_testing: int | None = None, stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for privacy noise, seeded with 63 bits from ``secrets``.

    ``seed_for_testing`` makes it reproducible (stream ``stream`` of that seed) and warns loudly:
    anyone who knows the seed can subtract the noise.
    """
    generator = torch.Generator(device=device)
    if seed_for_testing is None:
        generator.manual_seed(secrets.randbits(63))
        return generator
    warnings.warn(
        "privacy noise is seeded from noise_seed_for_testing: reproducible but NOT private",
        InsecureNoiseWarning,
        stacklevel=2,
    )
    state = np.random.SeedSequence([seed_for_testing, stream]).generate_state(1, np.uint64)[0]
    generator.manual_seed(int(state) >> 1)
    return generator


def sampling_generator(seed_for_testing: int | None = None, stream: int = 0) -> np.random.Generator:
    """A numpy generator for *private* sampling decisions (which clients take part in a DP
    round), seeded with 128 bits from ``secrets``: subsampling amplifies privacy only if nobody
    can predict the sample, so it must not follow the published run seed. ``seed_for_testing``
    makes it reproducible and warns, as for `noise_generator`.
    """
    if seed_for_testing is None:
        return np.random.default_rng(secrets.randbits(128))
    warnings.warn(
        "private sampling is seeded from noise_seed_for_testing: reproducible but NOT private",
        InsecureNoiseWarning,
        stacklevel=2,
    )
    return np.random.default_rng([seed_for_testing, stream, 0x5A4D])


def cpu_generator(key: torch.Generator) -> torch.Generator:
    """``key`` itself on the CPU; otherwise a CPU generator seeded with 62 bits drawn from it
    (for samplers that only run on the CPU)."""
    if key.device.type == "cpu":
        return key
    return torch.Generator().manual_seed(
        int(torch.randint(2**62, (1,), generator=key, device=key.device))
    )
