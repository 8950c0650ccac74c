"""The SecAgg+ server: routes messages between neighbours and recovers the survivors' sum.

It learns Σ_{u ∈ U3} x_u mod 2^b, where U3 are the clients whose masked inputs arrived, and
nothing else about any x_u (Bonawitz et al. 2017, Bell et al. 2020). Every client message is
checked — round id, stage, sender, duplicate, Ed25519 signature, shape — and a bad one raises
`ProtocolError` naming the client and stage, after which that client is treated as dropped:
the round goes on without it. Unmasking fails, revealing nothing, when a survivor's self-mask
seed or a dropped client's mask key has fewer than t shares, or fewer than ``min_survivors``
inputs arrived.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ProtocolError
from veil.secagg import hybrid, keys, prg, shamir
from veil.secagg.client import holder, pair_mask_seed, self_mask_seed, split_shares
from veil.secagg.graph import neighbour_graph
from veil.secagg.messages import (
    STAGES,
    ClientMessage,
    EncryptedShares,
    ForwardedShares,
    KeyAdvertisement,
    MaskedInput,
    NeighbourKeys,
    RoundSetup,
    UnmaskRequest,
    UnmaskResponse,
    signed_bytes,
)

_STAGE_OF = {KeyAdvertisement: 0, EncryptedShares: 1, MaskedInput: 2, UnmaskResponse: 3}


class SecAggServer:
    """The server's side of one round: `receive` client messages, then call the next stage."""

    def __init__(self, setup: RoundSetup, identities: dict[int, bytes]):
        self.setup = setup
        self._identities = identities
        self.graph = neighbour_graph(np.array(setup.clients), setup.neighbours, setup.graph_seed)
        self.stage = 0
        self.received: list[dict[int, ClientMessage]] = [{}, {}, {}, {}]
        self.rejected: dict[int, str] = {}  # first rejection per claimed sender
        self.misbehaving: set[int] = set()
        self._sum: np.ndarray | None = None

    # -- input --------------------------------------------------------------------------------

    def receive(self, message: ClientMessage) -> None:
        """Accept one client message of the current stage, or raise `ProtocolError`.

        A rejected message is ignored (and logged in ``rejected``); a client whose message of
        a stage is never accepted has dropped. A correctly signed but malformed message is the
        sender's own doing, so it is also excluded from the rest of the round (``misbehaving``).
        Unsigned faults (replays, forgeries) do not exclude anyone: a network attacker could
        otherwise evict honest clients.
        """
        sender = getattr(message, "sender", None)
        stage = _STAGE_OF.get(type(message))
        where = f"client {sender}, stage '{STAGES[stage] if stage is not None else '?'}'"
        try:
            if stage is None:
                raise ProtocolError(f"{where}: not a client message")
            self._check_authentic(message, sender, stage, where)
            allowed = set(self.graph[sender])
            if stage > 0:  # peers must have reached the previous stage (unmasking: sharing)
                allowed &= set(self.received[stage - 1 if stage < 3 else 1])
            if stage == 3:
                allowed.add(sender)  # a client holds a share of its own secrets
            try:
                _check_shape(message, self.setup, allowed, where)
            except ProtocolError:
                self.misbehaving.add(sender)
                raise
        except ProtocolError as error:
            if isinstance(sender, int):
                self.rejected.setdefault(sender, str(error))
            raise
        self.received[stage][sender] = message
        if stage == 2:
            self._add_masked_input(message.vector)

    def _check_authentic(self, message, sender, stage, where) -> None:
        if message.round_id != self.setup.round_id:
            raise ProtocolError(f"{where}: message from another round (replayed or out of round)")
        if stage != self.stage:
            raise ProtocolError(f"{where}: out of order (the server is at '{STAGES[self.stage]}')")
        if sender in self.received[stage]:
            raise ProtocolError(f"{where}: duplicate message (replayed)")
        if sender in self.misbehaving or sender not in self._expected(stage):
            raise ProtocolError(f"{where}: this client is not in the round at this stage")
        if not keys.verify(self._identities[sender], message.signature, signed_bytes(message)):
            raise ProtocolError(f"{where}: wrong signature")

    def _expected(self, stage: int) -> set[int]:
        if stage == 0:
            return set(self.setup.clients)
        return set(self.received[stage - 1])

    def _add_masked_input(self, vector: np.ndarray) -> None:
        if self._sum is None:
            self._sum = vector.copy()
        else:
            self._sum += vector

    # -- stage transitions: what the server sends ------------------------------------------------

    def neighbour_keys(self) -> dict[int, NeighbourKeys]:
        """End stage 0: each advertiser gets its advertised neighbours' signed keys."""
        adverts = self._close_stage(0)
        return {
            u: NeighbourKeys(
                self.setup.round_id, tuple(adverts[v] for v in self.graph[u] if v in adverts)
            )
            for u in adverts
        }

    def forwarded_shares(self) -> dict[int, ForwardedShares]:
        """End stage 1: each sharer gets the envelopes its sharing neighbours sealed for it."""
        shared = self._close_stage(1)
        inbox: dict[int, list] = {u: [] for u in shared}
        for message in shared.values():
            for envelope in message.envelopes:
                if envelope.recipient in inbox:
                    inbox[envelope.recipient].append(envelope)
        return {u: ForwardedShares(self.setup.round_id, tuple(e)) for u, e in inbox.items()}

    def unmask_request(self) -> UnmaskRequest:
        """End stage 2: the survivors (inputs received) and the clients that dropped after
        sharing. Fails, revealing nothing, below ``min_survivors``."""
        masked = self._close_stage(2)
        dropped = set(self.received[1]) - set(masked)
        return UnmaskRequest(self.setup.round_id, tuple(sorted(masked)), tuple(sorted(dropped)))

    def result(self) -> np.ndarray:
        """End stage 3: Σ_{u ∈ U3} x_u in Z_{2^b}."""
        responses = self._close_stage(3, need=0)
        masked: dict[int, MaskedInput] = self.received[2]
        total = self._sum
        scratch = np.empty_like(total)
        survivors = set(masked)
        self._check_pairs(masked)
        self_shares, key_shares = _collate(responses)
        for u in sorted(survivors):
            seed = self._recover(u, self_shares, "self-mask seed", 0)
            total -= prg.expand(
                self_mask_seed(seed, self.setup.round_id, u), total.size, self.setup.bits, scratch
            )
        for u in sorted(set(self.received[1]) - survivors):
            mask_key, kem_secret = self._dropped_keys(u, key_shares)
            for v in sorted(v for v in survivors if u in masked[v].masked_with):
                seed = pair_mask_seed(
                    mask_key,
                    self.received[0][v].mask_public,
                    kem_secret(v),
                    self.setup.round_id,
                    u,
                    v,
                )
                mask = prg.expand(seed, total.size, self.setup.bits, scratch)
                if v < u:  # v added +PRG(s_vu); remove it
                    total -= mask
                else:
                    total += mask
        if self.setup.bits < 8 * total.dtype.itemsize:
            total &= total.dtype.type((1 << self.setup.bits) - 1)
        return total

    # -- helpers ---------------------------------------------------------------------------------

    def _close_stage(self, stage: int, need: int | None = None) -> dict:
        if self.stage != stage:
            raise ProtocolError(f"server: cannot end '{STAGES[stage]}' at '{STAGES[self.stage]}'")
        arrived = self.received[stage]
        need = self.setup.min_survivors if need is None else need
        if len(arrived) < need:
            raise ProtocolError(
                f"round fails at stage '{STAGES[stage]}': {len(arrived)} clients "
                f"responded, fewer than min_survivors = {need}; nothing is revealed"
            )
        self.stage += 1
        return arrived

    def _check_pairs(self, masked: dict[int, MaskedInput]) -> None:
        for v, message in masked.items():
            for u in message.masked_with:
                if u in masked and v not in masked[u].masked_with:
                    raise ProtocolError(
                        f"round fails: clients {u} and {v} disagree on their "
                        "pairwise mask (an envelope was lost or tampered with)"
                    )

    def _dropped_keys(self, u: int, key_shares: dict[int, list]):
        """A dropped client's X25519 mask key and, hybrid, v ↦ K_{lo→hi} of the pair (u, v)."""
        mask_key = keys.x25519_private(self._recover(u, key_shares, "mask key", 0))
        if keys.x25519_public_bytes(mask_key) != self.received[0][u].mask_public:
            raise ProtocolError(
                f"round fails: client {u}'s recovered mask key does not match "
                "its advertised key (a wrong share)"
            )
        if not self.setup.hybrid:
            return mask_key, lambda v: b""
        w = self._recover(u, key_shares, "recovery key", 1)
        kem_private, sent = hybrid.open_recovery(
            w, self.received[1][u].recovery, self.setup.round_id, u
        )

        def kem_secret(v: int) -> bytes:
            if u < v:
                return sent[v]
            sent_to_u = [e for e in self.received[1][v].envelopes if e.recipient == u]
            if not sent_to_u:
                raise ProtocolError(
                    f"round fails: client {v} masked with {u} but sent it no shares"
                )
            return keys.decapsulate(kem_private, sent_to_u[0].kem_ciphertext)

        return mask_key, kem_secret

    def _recover(self, owner: int, shares: dict[int, list], what: str, part: int) -> bytes:
        available = [holder_shares[part] for holder_shares in shares.get(owner, [])]
        if len(available) < self.setup.threshold:
            raise ProtocolError(
                f"round fails: client {owner}'s {what} has {len(available)} shares, "
                f"fewer than the threshold {self.setup.threshold}; nothing is revealed"
            )
        return shamir.combine(available, self.setup.threshold)


def _collate(responses: dict[int, UnmaskResponse]):
    """{owner: [each responder's tuple of shares]} for self-mask seeds and for mask keys."""
    self_shares: dict[int, list] = {}
    key_shares: dict[int, list] = {}
    for sender, response in sorted(responses.items()):
        for owner, data in response.self_mask_shares:
            self_shares.setdefault(owner, []).append(split_shares(holder(sender), data))
        for owner, data in response.mask_key_shares:
            key_shares.setdefault(owner, []).append(split_shares(holder(sender), data))
    return self_shares, key_shares


def _check_shape(message, setup: RoundSetup, allowed: set[int], where: str) -> None:
    """Refuse malformed content (or peers outside ``allowed``) before it can disturb the round."""
    if isinstance(message, KeyAdvertisement):
        ok = len(message.cipher_public) == len(message.mask_public) == keys.KEY_BYTES and len(
            message.kem_public
        ) == (keys.KEM_PUBLIC_BYTES if setup.hybrid else 0)
    elif isinstance(message, EncryptedShares):
        recipients = [e.recipient for e in message.envelopes]
        kem_bytes = keys.KEM_CIPHERTEXT_BYTES if setup.hybrid else 0
        ok = (
            set(recipients) <= allowed
            and len(set(recipients)) == len(recipients)
            and all(
                e.sender == message.sender and len(e.kem_ciphertext) == kem_bytes
                for e in message.envelopes
            )
            and bool(message.recovery) == setup.hybrid
        )
    elif isinstance(message, MaskedInput):
        ok = (
            isinstance(message.vector, np.ndarray)
            and message.vector.dtype == prg.ring_dtype(setup.bits)
            and message.vector.shape == (setup.length,)
            and set(message.masked_with) <= allowed
        )
    else:
        key_share_bytes = (2 if setup.hybrid else 1) * shamir.SHARE_BYTES  # mask key [+ w]
        owners = [o for o, _ in message.self_mask_shares + message.mask_key_shares]
        ok = (
            set(owners) <= allowed
            and all(len(d) == shamir.SHARE_BYTES for _, d in message.self_mask_shares)
            and all(len(d) == key_share_bytes for _, d in message.mask_key_shares)
        )
    if not ok:
        raise ProtocolError(f"{where}: malformed message")
