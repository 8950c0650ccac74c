"""The channel from each client to the attested enclave: updates encrypted to the attested key.

In a deployment the channel is the RA-TLS connection; in the simulator each client encrypts its
update with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to the X25519
key whose hash the enclave's quote binds, with ``info`` naming the round counter and the client.
The host that relays the batch sees ciphertexts, their sizes, and the clients' weights; a
ciphertext replayed into another round or under another client's name does not open.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.errors import ProtocolError
from veil.fl.links import ClientUpdates
from veil.params import Params, flatten_stacked
from veil.secagg.links import RingUpdates

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
WEIGHT = struct.Struct(">d")
HPKE_OVERHEAD = 32 + 16  # the X25519 encapsulated key and the AES-GCM tag


@dataclass(frozen=True)
class SealedUpdates(ClientUpdates):
    """A batch whose values are encrypted to the enclave (``deltas`` left empty).

    ``shell`` is the batch without its values (to rebuild it inside the enclave); ``dtype``
    and ``template`` say how each decrypted row is laid out.
    """

    ciphertexts: tuple[bytes, ...]
    shell: ClientUpdates
    dtype: str
    template: Params
    round_counter: int

    def bytes_per_client(self) -> float | None:
        if not self.ciphertexts:
            return None
        return float(np.mean([len(c) for c in self.ciphertexts]))


def ciphertext_bytes(template: Params, dtype: str) -> int:
    """The length of one client's ciphertext for updates shaped like ``template`` (values of
    numpy ``dtype``): what a relay can check without the key."""
    values = sum(v.numel() for v in template.values())
    return HPKE_OVERHEAD + WEIGHT.size + values * np.dtype(dtype).itemsize


def _info(round_counter: int, client_id: int) -> bytes:
    return b"veil/tee/update" + struct.pack(">QQ", round_counter, client_id)


def _rows(updates: ClientUpdates) -> tuple[np.ndarray, ClientUpdates, Params]:
    """One row of values per client, the batch without them, and the per-leaf template."""
    if isinstance(updates, RingUpdates):
        shell = replace(updates, ring=updates.ring[:0])
        return updates.ring, shell, updates.template
    template = {k: v.new_zeros(v.shape[1:]) for k, v in updates.deltas.items()}
    rows = flatten_stacked(updates.deltas).detach().cpu().numpy() if updates.deltas else None
    if rows is None or updates.num_clients == 0:
        rows = np.zeros((0, sum(v.numel() for v in template.values())), np.float32)
    return rows, replace(updates, deltas={}), template


def seal_updates(
    updates: ClientUpdates, public_key: X25519PublicKey, round_counter: int
) -> SealedUpdates:
    """Each client's row (and weight) encrypted to ``public_key`` for round ``round_counter``."""
    rows, shell, template = _rows(updates)
    ids = [int(c) for c in updates.client_ids]
    weights = updates.weights.double().tolist()
    ciphertexts = tuple(
        SUITE.encrypt(WEIGHT.pack(w) + row.tobytes(), public_key, _info(round_counter, c))
        for c, w, row in zip(ids, weights, rows, strict=True)
    )
    return SealedUpdates(
        {},
        updates.weights,
        updates.client_ids,
        ciphertexts,
        shell,
        rows.dtype.str,
        template,
        round_counter,
    )


def _unflatten_rows(rows: torch.Tensor, template: Params) -> Params:
    out, start = {}, 0
    for name, like in template.items():
        size = like.numel()
        out[name] = rows[:, start : start + size].reshape(len(rows), *like.shape).to(like.device)
        start += size
    return out


def open_updates(
    updates: SealedUpdates, private_key: X25519PrivateKey, round_counter: int
) -> ClientUpdates:
    """Inside the enclave: decrypt the batch sealed for ``round_counter`` (`ProtocolError` if
    a ciphertext was altered, replayed from another round or relabelled)."""
    length = sum(v.numel() for v in updates.template.values())
    dtype = np.dtype(updates.dtype)
    rows, weights = np.zeros((len(updates.ciphertexts), length), dtype), []
    for i, (client, ciphertext) in enumerate(
        zip(updates.client_ids.tolist(), updates.ciphertexts, strict=True)
    ):
        try:
            plain = SUITE.decrypt(ciphertext, private_key, _info(round_counter, int(client)))
        except (InvalidTag, ValueError):
            raise ProtocolError(
                f"the update of client {client} does not open in the enclave: altered, or "
                f"replayed from another round than {round_counter}"
            ) from None
        if len(plain) != WEIGHT.size + length * dtype.itemsize:
            raise ProtocolError(f"the update of client {client} has the wrong length")
        weights.append(WEIGHT.unpack(plain[: WEIGHT.size])[0])
        rows[i] = np.frombuffer(plain[WEIGHT.size :], dtype)
    weight_tensor = torch.tensor(weights, dtype=updates.weights.dtype).to(updates.weights.device)
    shell = replace(updates.shell, weights=weight_tensor)
    if isinstance(shell, RingUpdates):
        return replace(shell, ring=rows)
    return replace(shell, deltas=_unflatten_rows(torch.from_numpy(rows), updates.template))
