"""A SecAgg+ client: the four stages of Bonawitz et al. 2017 on the graph of Bell et al. 2020.

    advertise keys ─► share keys ─► masked input ─► unmasking

1. Advertise two X25519 public keys (and an ML-KEM-768 key, hybrid), signed with the identity.
2. Check the neighbours' signatures; Shamir-share a fresh self-mask seed b and the mask
   private key among the neighbours and itself (threshold t), each share sealed with AES-GCM
   under an HKDF key that only the recipient can derive.
3. Send y = x + PRG(b) + Σ_v ±PRG(s_uv) in Z_{2^b} (+ towards larger ids, − towards smaller),
   masking with every neighbour whose shares arrived; the pairwise masks cancel in the sum.
4. For each neighbour the server lists as a survivor, reveal the share of its self-mask seed;
   for each one listed as dropped, the share of its mask key. Never both for the same peer in a
   round — otherwise a server claiming that a live client dropped could unmask it — and never
   when fewer than ``min_survivors`` are listed.

Threat model: honest-but-curious server and clients (the server may also lie about dropouts);
a client's input stays hidden unless t of its neighbours collude with the server.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.errors import ProtocolError
from veil.secagg import hybrid, keys, prg, shamir
from veil.secagg.graph import neighbours_of
from veil.secagg.messages import (
    EncryptedShares,
    Envelope,
    ForwardedShares,
    KeyAdvertisement,
    MaskedInput,
    NeighbourKeys,
    RoundSetup,
    UnmaskRequest,
    UnmaskResponse,
    signed_bytes,
)


def pair_mask_seed(
    mask_private: X25519PrivateKey,
    peer_mask_public: bytes,
    kem_pair_secret: bytes,
    round_id: bytes,
    a: int,
    b: int,
) -> bytes:
    """The seed of the pairwise mask between clients a and b (either side computes it)."""
    secret = keys.agree(mask_private, peer_mask_public) + kem_pair_secret
    return keys.derive(secret, b"pair mask", round_id, min(a, b), max(a, b))


def self_mask_seed(seed: bytes, round_id: bytes, client: int) -> bytes:
    return keys.derive(seed, b"self mask", round_id, client)


def holder(client: int) -> int:
    """Shamir x-coordinate of a client (ids start at 0; x must be ≥ 1)."""
    return client + 1


class SecAggClient:
    """One client's side of a round. Call the stages in order; each returns the message to send."""

    def __init__(
        self,
        client_id: int,
        identity: Ed25519PrivateKey,
        setup: RoundSetup,
        identities: dict[int, bytes],
    ):
        self.id = client_id
        self.setup = setup
        self._identity = identity
        self._identities = identities
        self._neighbours = set(
            neighbours_of(client_id, np.array(setup.clients), setup.neighbours, setup.graph_seed)
        )
        self._cipher = X25519PrivateKey.generate()
        self._mask = X25519PrivateKey.generate()
        self._kem = keys.new_kem_key() if setup.hybrid else None
        self._stage = 0
        self._peers: dict[int, KeyAdvertisement] = {}
        self._kem_sent: dict[int, bytes] = {}  # ML-KEM secrets this client encapsulated
        self._kem_ciphertext: dict[int, bytes] = {}
        self._kem_received: dict[int, bytes] = {}
        self._held: dict[int, tuple[shamir.Share, ...]] = {}  # owner → (b, mask key[, w])
        self._self_seed = b""

    def advertise(self) -> KeyAdvertisement:
        self._enter(0, "advertise keys")
        kem_public = keys.kem_public_bytes(self._kem) if self._kem else b""
        message = KeyAdvertisement(
            self.setup.round_id,
            self.id,
            keys.x25519_public_bytes(self._cipher),
            keys.x25519_public_bytes(self._mask),
            kem_public,
        )
        return self._sign(message)

    def share_keys(self, received: NeighbourKeys) -> EncryptedShares:
        self._enter(1, "share keys")
        self._check_round(received.round_id, "share keys")
        for advert in received.advertisements:
            self._accept_advertisement(advert)
        if len(self._peers) < self.setup.threshold:
            raise ProtocolError(
                f"client {self.id}, stage 'share keys': {len(self._peers)} "
                f"neighbours advertised, fewer than the threshold {self.setup.threshold}"
            )
        self._self_seed = secrets.token_bytes(prg.SEED_BYTES)
        peers = sorted(self._peers)
        secrets_to_share = [self._self_seed, keys.x25519_private_bytes(self._mask)]
        if self._kem is not None:
            for peer in peers:
                self._kem_sent[peer], self._kem_ciphertext[peer] = keys.encapsulate(
                    self._peers[peer].kem_public
                )
            recovery_key = secrets.token_bytes(keys.KEY_BYTES)
            secrets_to_share.append(recovery_key)
            recovery = hybrid.seal_recovery(
                recovery_key,
                self._kem.private_bytes_raw(),
                self._kem_sent,
                self.setup.round_id,
                self.id,
            )
        holders = [holder(p) for p in [*peers, self.id]]  # a client keeps one share itself
        shares = [
            shamir.split(secret, self.setup.threshold, holders) for secret in secrets_to_share
        ]
        by_holder = list(zip(*shares, strict=True))
        self._held[self.id] = by_holder.pop()
        envelopes = []
        for peer, peer_shares in zip(peers, by_holder, strict=True):
            key = self._envelope_key(peer, self.id, peer, self._kem_sent.get(peer, b""))
            plaintext = b"".join(share.to_bytes() for share in peer_shares)
            sealed = keys.seal(key, plaintext, self._associated(self.id, peer))
            envelopes.append(Envelope(self.id, peer, self._kem_ciphertext.get(peer, b""), sealed))
        message = EncryptedShares(
            self.setup.round_id,
            self.id,
            tuple(envelopes),
            recovery if self._kem is not None else b"",
        )
        return self._sign(message)

    def masked_input(self, received: ForwardedShares, value: np.ndarray) -> MaskedInput:
        """Mask ``value`` (length ``setup.length``, in Z_{2^bits}) with every neighbour whose
        shares arrived intact; envelopes that fail authentication are ignored (that peer is
        treated as dropped)."""
        self._enter(2, "masked input")
        self._check_round(received.round_id, "masked input")
        dtype = prg.ring_dtype(self.setup.bits)
        if value.dtype != dtype or value.shape != (self.setup.length,):
            raise ProtocolError(
                f"client {self.id}, stage 'masked input': the input must be a "
                f"{dtype} vector of length {self.setup.length}"
            )
        for envelope in received.envelopes:
            try:
                self._open_envelope(envelope)
            except ProtocolError:
                continue
        peers = sorted(set(self._held) - {self.id})
        vector = value.copy()
        scratch = np.empty_like(vector)
        vector += prg.expand(
            self_mask_seed(self._self_seed, self.setup.round_id, self.id),
            vector.size,
            self.setup.bits,
            scratch,
        )
        for peer in peers:
            seed = pair_mask_seed(
                self._mask,
                self._peers[peer].mask_public,
                self._kem_pair_secret(peer),
                self.setup.round_id,
                self.id,
                peer,
            )
            mask = prg.expand(seed, vector.size, self.setup.bits, scratch)
            if self.id < peer:
                vector += mask
            else:
                vector -= mask
        _reduce(vector, self.setup.bits)
        return self._sign(MaskedInput(self.setup.round_id, self.id, tuple(peers), vector))

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        self._enter(3, "unmasking")
        self._check_round(request.round_id, "unmasking")
        survivors, dropped = set(request.survivors), set(request.dropped)
        where = f"client {self.id}, stage 'unmasking'"
        if survivors & dropped:
            both = sorted(survivors & dropped)
            raise ProtocolError(
                f"{where}: refusing to reveal both kinds of share for clients {both}"
            )
        if len(survivors) < self.setup.min_survivors:
            raise ProtocolError(
                f"{where}: only {len(survivors)} survivors listed, fewer than "
                f"min_survivors = {self.setup.min_survivors}; revealing nothing"
            )
        if self.id not in survivors:
            raise ProtocolError(f"{where}: this client is not listed as a survivor")
        self_shares = tuple(
            (p, self._held[p][0].to_bytes()) for p in sorted(survivors & self._held.keys())
        )
        key_shares = tuple(
            (p, b"".join(share.to_bytes() for share in self._held[p][1:]))
            for p in sorted(dropped & self._held.keys())
        )
        return self._sign(UnmaskResponse(self.setup.round_id, self.id, self_shares, key_shares))

    # -- helpers -------------------------------------------------------------------------------

    def _enter(self, stage: int, name: str) -> None:
        if self._stage != stage:
            raise ProtocolError(
                f"client {self.id}, stage '{name}': out of order (the client is "
                f"at stage {self._stage}; a stage runs once per round)"
            )
        self._stage += 1

    def _check_round(self, round_id: bytes, stage: str) -> None:
        if round_id != self.setup.round_id:
            raise ProtocolError(f"client {self.id}, stage '{stage}': message from another round")

    def _sign(self, message):
        signature = self._identity.sign(signed_bytes(message))
        return type(message)(**{**message.__dict__, "signature": signature})

    def _accept_advertisement(self, advert: KeyAdvertisement) -> None:
        peer = advert.sender
        if peer not in self._neighbours or peer in self._peers:
            return  # not a neighbour, or a duplicate: ignore what the server should not have sent
        valid = (
            advert.round_id == self.setup.round_id
            and keys.verify(self._identities[peer], advert.signature, signed_bytes(advert))
            and bool(advert.kem_public) == self.setup.hybrid
        )
        if valid:
            self._peers[peer] = advert

    def _open_envelope(self, envelope: Envelope) -> None:
        peer = envelope.sender
        if envelope.recipient != self.id or peer not in self._peers or peer in self._held:
            # (own id is in _held, so a forged envelope "from" this client is refused too)
            raise ProtocolError(f"client {self.id}: unexpected envelope from {peer}")
        kem_secret = b""
        if self._kem is not None:
            kem_secret = keys.decapsulate(self._kem, envelope.kem_ciphertext)
        key = self._envelope_key(peer, peer, self.id, kem_secret)
        plaintext = keys.open_sealed(key, envelope.sealed, self._associated(peer, self.id))
        count = 3 if self._kem is not None else 2
        if len(plaintext) != count * shamir.SHARE_BYTES:
            raise ProtocolError(f"client {self.id}: malformed shares from {peer}")
        self._held[peer] = split_shares(holder(self.id), plaintext)
        if kem_secret:
            self._kem_received[peer] = kem_secret

    def _envelope_key(self, peer: int, sender: int, recipient: int, kem_secret: bytes) -> bytes:
        secret = keys.agree(self._cipher, self._peers[peer].cipher_public) + kem_secret
        return keys.derive(secret, b"share envelope", self.setup.round_id, sender, recipient)

    def _associated(self, sender: int, recipient: int) -> bytes:
        return self.setup.round_id + sender.to_bytes(8, "big") + recipient.to_bytes(8, "big")

    def _kem_pair_secret(self, peer: int) -> bytes:
        """ML-KEM half of the pair's mask seed: K_{lo→hi}, encapsulated by the smaller id."""
        if self._kem is None:
            return b""
        return self._kem_sent[peer] if self.id < peer else self._kem_received[peer]


def split_shares(x: int, data: bytes) -> tuple[shamir.Share, ...]:
    """Consecutive ``SHARE_BYTES`` chunks of ``data`` as holder ``x``'s shares."""
    size = shamir.SHARE_BYTES
    return tuple(shamir.share_from_bytes(x, data[i : i + size]) for i in range(0, len(data), size))


def _reduce(vector: np.ndarray, bits: int) -> None:
    if bits < 8 * vector.dtype.itemsize:
        vector &= vector.dtype.type((1 << bits) - 1)
