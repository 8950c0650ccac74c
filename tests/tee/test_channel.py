import dataclasses

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.errors import ProtocolError
from veil.fl.links import ClientUpdates
from veil.secagg.links import RingUpdates
from veil.tee.channel import ciphertext_bytes, open_updates, seal_updates

KEY = X25519PrivateKey.generate()


def test_float_updates_round_trip_and_the_host_sees_no_values(batch):
    sealed = seal_updates(batch, KEY.public_key(), 3)
    assert sealed.deltas == {} and len(sealed.ciphertexts) == 4
    raw = batch.deltas["w"][0].numpy().tobytes()
    assert all(raw not in c for c in sealed.ciphertexts)
    # weight, 8 values of float32, X25519 encapsulation, AES-GCM tag
    assert sealed.bytes_per_client() == 8 + 8 * 4 + 32 + 16
    opened = open_updates(sealed, KEY, 3)
    for name, value in batch.deltas.items():
        assert torch.equal(opened.deltas[name], value)
    assert torch.equal(opened.weights, batch.weights)


def test_ring_updates_round_trip():
    ring = np.arange(12, dtype=np.uint64).reshape(3, 4) * (2**40)
    template = {"w": torch.zeros(4)}
    updates = RingUpdates({}, torch.ones(3), torch.arange(3), ring, template)
    opened = open_updates(seal_updates(updates, KEY.public_key(), 0), KEY, 0)
    assert isinstance(opened, RingUpdates) and np.array_equal(opened.ring, ring)


def test_empty_batch_round_trips(batch):
    empty = ClientUpdates(
        {k: v[:0] for k, v in batch.deltas.items()}, torch.ones(0), torch.arange(0)
    )
    sealed = seal_updates(empty, KEY.public_key(), 0)
    assert sealed.bytes_per_client() is None
    assert open_updates(sealed, KEY, 0).deltas["w"].shape == (0, 3, 2)


def test_update_replayed_into_another_round_does_not_open(batch):
    sealed = seal_updates(batch, KEY.public_key(), 3)
    with pytest.raises(ProtocolError, match=r"client 0 does not open .* another round than 4"):
        open_updates(sealed, KEY, 4)


def test_update_relabelled_as_another_client_does_not_open(batch):
    sealed = seal_updates(batch, KEY.public_key(), 3)
    swapped = dataclasses.replace(sealed, client_ids=torch.tensor([1, 0, 2, 3]))
    with pytest.raises(ProtocolError, match="client 1 does not open"):
        open_updates(swapped, KEY, 3)


def test_update_for_another_enclave_does_not_open(batch):
    sealed = seal_updates(batch, X25519PrivateKey.generate().public_key(), 3)
    with pytest.raises(ProtocolError, match="does not open in the enclave"):
        open_updates(sealed, KEY, 3)


def test_ciphertext_bytes_is_the_length_a_relay_sees(batch):
    template = {k: v[0] for k, v in batch.deltas.items()}
    sealed = seal_updates(batch, X25519PrivateKey.generate().public_key(), 0)
    assert {len(c) for c in sealed.ciphertexts} == {ciphertext_bytes(template, sealed.dtype)}
