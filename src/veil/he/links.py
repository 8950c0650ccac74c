"""Encrypted aggregation in the FL chain: a client encoder link and a server aggregator link.

    encoder:    clip (L2) → [+ integer DP noise share] → quantize, pack → encrypt (public key)
    aggregator: check and add ciphertexts (aggregator) → decrypt the sum (key holder) → ÷ n

The aggregator link holds two separate objects — the public scheme, used to add, and the key
holder's scheme, used only through `decrypt_sum` on the finished sum — mirroring the two parties
of a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from veil.fl.links import ClientUpdates, Link
from veil.he.aggregation import EncryptedUpdate, aggregate, decrypt_sum, encrypt_update
from veil.he.packing import PackingLayout
from veil.params import Params, flatten_stacked, unflatten
from veil.randomness import cpu_generator
from veil.secagg.distributed_dp import client_noise, summed_noise_event
from veil.secagg.encoding import clip_rows


@dataclass(frozen=True)
class HeSettings:
    public: Any  # the scheme without its secret key
    layout: PackingLayout | None  # None: CKKS floats
    clip_norm: float
    min_clients: int
    client_noise_std: float = 0.0  # integer units; 0: no DP
    sensitivity: float = 0.0  # L2 bound of one client's integer vector (for the DP event)


@dataclass(frozen=True)
class EncryptedUpdates(ClientUpdates):
    """A batch of clients' encrypted updates (``deltas`` left empty)."""

    messages: tuple[EncryptedUpdate, ...]
    template: Params

    def bytes_per_client(self) -> float | None:
        """Mean size of the clients' messages: ciphertexts plus key id, length and digest."""
        if not self.messages:
            return None
        sizes = [
            sum(map(len, m.chunks)) + len(m.key_id) + len(m.digest) + 16 for m in self.messages
        ]
        return float(np.mean(sizes))


def he_encoder(settings: HeSettings) -> Link:
    """Client side: clip each update to L2 norm C, add its noise share, encrypt."""

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        n = updates.num_clients
        template = {k: v.new_zeros(v.shape[1:]) for k, v in updates.deltas.items()}
        rows = flatten_stacked(updates.deltas).double().cpu()
        rows = clip_rows(rows, settings.clip_norm).numpy()
        generator = cpu_generator(key)
        # stochastic rounding (not privacy noise) draws from numpy, seeded from the key
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        noise = None
        if settings.client_noise_std > 0 and n:
            noise = client_noise(n, rows.shape[1], settings.client_noise_std, generator).numpy()
        messages = tuple(
            encrypt_update(
                settings.public,
                int(c),
                rows[i],
                settings.layout,
                rng,
                None if noise is None else noise[i],
            )
            for i, c in enumerate(updates.client_ids.tolist())
        )
        encoded = EncryptedUpdates({}, updates.weights, updates.client_ids, messages, template)
        return encoded, state, []

    return Link(lambda params: None, apply)


def he_aggregator(settings: HeSettings, holder: Any, denominator: float | None) -> Link:
    """Server side: add the ciphertexts, have the key holder decrypt the sum, divide by
    ``denominator`` (None: the number of clients in the sum)."""

    def apply(updates: EncryptedUpdates, rounds_done: int, key: torch.Generator):
        events = []
        length = sum(v.numel() for v in updates.template.values())
        if settings.client_noise_std > 0:
            events.append(
                summed_noise_event(
                    settings.client_noise_std, settings.sensitivity, settings.min_clients, length
                )
            )
        like = next(iter(updates.template.values()))
        if not updates.messages:
            return (
                {k: torch.zeros_like(v) for k, v in updates.template.items()},
                rounds_done + 1,
                events,
            )
        total = aggregate(settings.public, list(updates.messages), settings.layout)
        plain = decrypt_sum(holder, total, settings.layout, settings.min_clients)
        divide_by = denominator if denominator is not None else total.count
        vector = torch.from_numpy(plain / divide_by).to(like.dtype)
        mean = unflatten(vector, {k: v.cpu() for k, v in updates.template.items()})
        return {k: v.to(like.device) for k, v in mean.items()}, rounds_done + 1, events

    return Link(lambda params: 0, apply)
