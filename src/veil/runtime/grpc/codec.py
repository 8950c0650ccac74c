"""Protocol buffers ⇄ veil objects: tensors, model parameters, SecAgg+ and HE messages.

Decoding is where untrusted bytes from the network become veil objects, so every decoder checks
what it builds (known dtype, sizes that add up, the names and shapes the receiver expects) and
raises `ProtocolError` with a message that says what was wrong; the server answers it as
INVALID_ARGUMENT. SecAgg+ messages decode to exactly the types they were signed as (ints,
bytes, tuples, arrays), so a decoded message verifies against its sender's signature.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from phe import paillier

from veil.errors import ProtocolError
from veil.he.aggregation import EncryptedUpdate
from veil.he.context import load_public_context
from veil.he.links import HeSettings
from veil.he.packing import PackingLayout
from veil.he.schemes import PaillierScheme, TensealScheme
from veil.params import Params
from veil.runtime.grpc import veil_pb2 as pb
from veil.secagg import messages as sa

# Little-endian numeric types only: no objects, no byte-order surprises.
DTYPES = frozenset(
    np.dtype(t).str
    for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint32, np.uint64)
)
MAX_DIMENSIONS = 8


# -- tensors and parameters ------------------------------------------------------------------


def tensor_to_proto(name: str, value: np.ndarray | torch.Tensor) -> pb.Tensor:
    """A tensor or array as a ``Tensor`` message (C-order bytes)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.ascontiguousarray(value)
    if array.dtype.str not in DTYPES:
        raise ProtocolError(f"tensor {name!r}: dtype {array.dtype} cannot travel")
    return pb.Tensor(name=name, dtype=array.dtype.str, shape=array.shape, data=array.tobytes())


def tensor_from_proto(message: pb.Tensor) -> np.ndarray:
    """The array of a ``Tensor`` message; refuses unknown dtypes and sizes that do not add up."""
    where = f"tensor {message.name!r}"
    if message.dtype not in DTYPES:
        raise ProtocolError(f"{where}: unsupported dtype {message.dtype!r}")
    shape = tuple(int(n) for n in message.shape)
    if len(shape) > MAX_DIMENSIONS or any(n < 0 for n in shape):
        raise ProtocolError(f"{where}: invalid shape {shape}")
    dtype = np.dtype(message.dtype)
    if math.prod(shape) * dtype.itemsize != len(message.data):
        raise ProtocolError(
            f"{where}: {len(message.data)} bytes do not hold shape {shape} of {dtype}"
        )
    return np.frombuffer(message.data, dtype=dtype).reshape(shape).copy()


def params_to_proto(params: Params) -> list[pb.Tensor]:
    return [tensor_to_proto(name, value) for name, value in params.items()]


def params_from_proto(tensors: Iterable[pb.Tensor], like: Params) -> Params:
    """Parameters with exactly the names, shapes and dtypes of ``like`` (on ``like``'s device),
    all finite."""
    out: Params = {}
    for message in tensors:
        if message.name not in like or message.name in out:
            raise ProtocolError(f"unexpected or repeated tensor {message.name!r}")
        array = tensor_from_proto(message)
        expected = like[message.name]
        if array.shape != tuple(expected.shape) or array.dtype != _numpy_dtype(expected):
            raise ProtocolError(
                f"tensor {message.name!r} has shape {array.shape} and dtype {array.dtype}; "
                f"expected {tuple(expected.shape)} and {_numpy_dtype(expected)}"
            )
        if not np.isfinite(array).all():
            raise ProtocolError(f"tensor {message.name!r} holds NaN or infinite values")
        out[message.name] = torch.from_numpy(array).to(expected.device)
    missing = sorted(set(like) - set(out))
    if missing:
        raise ProtocolError(f"missing tensors {missing}")
    return {name: out[name] for name in like}


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


# -- SecAgg+ ---------------------------------------------------------------------------------


def setup_to_proto(setup: sa.RoundSetup) -> pb.RoundSetup:
    return pb.RoundSetup(
        round_id=setup.round_id,
        clients=setup.clients,
        neighbours=setup.neighbours,
        threshold=setup.threshold,
        min_survivors=setup.min_survivors,
        bits=setup.bits,
        length=setup.length,
        hybrid=setup.hybrid,
        graph_seed=setup.graph_seed,
    )


def setup_from_proto(message: pb.RoundSetup) -> sa.RoundSetup:
    return sa.RoundSetup(
        bytes(message.round_id),
        _ints(message.clients),
        int(message.neighbours),
        int(message.threshold),
        int(message.min_survivors),
        int(message.bits),
        int(message.length),
        bool(message.hybrid),
        int(message.graph_seed),
    )


def request_to_proto(
    request: Any, identities: Mapping[int, bytes] | None = None
) -> pb.SecAggRequest:
    """A server → client SecAgg+ request; the round's first (a `RoundSetup`) carries the
    identity keys of its clients."""
    if isinstance(request, sa.RoundSetup):
        start = pb.SecAggStart(setup=setup_to_proto(request), identities=dict(identities or {}))
        return pb.SecAggRequest(start=start)
    if isinstance(request, sa.NeighbourKeys):
        adverts = [_advert_to_proto(a) for a in request.advertisements]
        keys = pb.NeighbourKeys(round_id=request.round_id, advertisements=adverts)
        return pb.SecAggRequest(neighbour_keys=keys)
    if isinstance(request, sa.ForwardedShares):
        envelopes = [_envelope_to_proto(e) for e in request.envelopes]
        shares = pb.ForwardedShares(round_id=request.round_id, envelopes=envelopes)
        return pb.SecAggRequest(forwarded_shares=shares)
    return pb.SecAggRequest(
        unmask_request=pb.UnmaskRequest(
            round_id=request.round_id, survivors=request.survivors, dropped=request.dropped
        )
    )


def request_from_proto(message: pb.SecAggRequest) -> tuple[str, Any, dict[int, bytes]]:
    """(stage, request, identities) of a server → client SecAgg+ request."""
    kind = message.WhichOneof("stage")
    if kind == "start":
        identities = {int(c): bytes(key) for c, key in message.start.identities.items()}
        return sa.STAGES[0], setup_from_proto(message.start.setup), identities
    if kind == "neighbour_keys":
        m = message.neighbour_keys
        adverts = tuple(_advert_from_proto(a) for a in m.advertisements)
        return sa.STAGES[1], sa.NeighbourKeys(bytes(m.round_id), adverts), {}
    if kind == "forwarded_shares":
        m = message.forwarded_shares
        envelopes = tuple(_envelope_from_proto(e) for e in m.envelopes)
        return sa.STAGES[2], sa.ForwardedShares(bytes(m.round_id), envelopes), {}
    if kind == "unmask_request":
        m = message.unmask_request
        request = sa.UnmaskRequest(bytes(m.round_id), _ints(m.survivors), _ints(m.dropped))
        return sa.STAGES[3], request, {}
    raise ProtocolError("SecAgg+ request without a stage")


def message_to_proto(message: sa.ClientMessage) -> pb.SecAggMessage:
    """A client → server SecAgg+ message."""
    if isinstance(message, sa.KeyAdvertisement):
        return pb.SecAggMessage(advertisement=_advert_to_proto(message))
    if isinstance(message, sa.EncryptedShares):
        shares = pb.EncryptedShares(
            round_id=message.round_id,
            sender=message.sender,
            envelopes=[_envelope_to_proto(e) for e in message.envelopes],
            recovery=message.recovery,
            signature=message.signature,
        )
        return pb.SecAggMessage(shares=shares)
    if isinstance(message, sa.MaskedInput):
        masked = pb.MaskedInput(
            round_id=message.round_id,
            sender=message.sender,
            masked_with=message.masked_with,
            vector=tensor_to_proto("masked input", message.vector),
            signature=message.signature,
        )
        return pb.SecAggMessage(masked_input=masked)
    response = pb.UnmaskResponse(
        round_id=message.round_id,
        sender=message.sender,
        self_mask_shares=[pb.OwnedShare(owner=o, data=d) for o, d in message.self_mask_shares],
        mask_key_shares=[pb.OwnedShare(owner=o, data=d) for o, d in message.mask_key_shares],
        signature=message.signature,
    )
    return pb.SecAggMessage(unmask_response=response)


def message_from_proto(message: pb.SecAggMessage) -> tuple[str, sa.ClientMessage]:
    """(stage, message) of a client → server SecAgg+ message, typed as it was signed."""
    kind = message.WhichOneof("message")
    if kind == "advertisement":
        return sa.STAGES[0], _advert_from_proto(message.advertisement)
    if kind == "shares":
        m = message.shares
        envelopes = tuple(_envelope_from_proto(e) for e in m.envelopes)
        shares = sa.EncryptedShares(
            bytes(m.round_id), int(m.sender), envelopes, bytes(m.recovery), bytes(m.signature)
        )
        return sa.STAGES[1], shares
    if kind == "masked_input":
        m = message.masked_input
        vector = tensor_from_proto(m.vector)
        masked = sa.MaskedInput(
            bytes(m.round_id), int(m.sender), _ints(m.masked_with), vector, bytes(m.signature)
        )
        return sa.STAGES[2], masked
    if kind == "unmask_response":
        m = message.unmask_response
        response = sa.UnmaskResponse(
            bytes(m.round_id),
            int(m.sender),
            tuple((int(s.owner), bytes(s.data)) for s in m.self_mask_shares),
            tuple((int(s.owner), bytes(s.data)) for s in m.mask_key_shares),
            bytes(m.signature),
        )
        return sa.STAGES[3], response
    raise ProtocolError("SecAgg+ message without a kind")


def _advert_to_proto(a: sa.KeyAdvertisement) -> pb.KeyAdvertisement:
    return pb.KeyAdvertisement(
        round_id=a.round_id,
        sender=a.sender,
        cipher_public=a.cipher_public,
        mask_public=a.mask_public,
        kem_public=a.kem_public,
        signature=a.signature,
    )


def _advert_from_proto(m: pb.KeyAdvertisement) -> sa.KeyAdvertisement:
    return sa.KeyAdvertisement(
        bytes(m.round_id),
        int(m.sender),
        bytes(m.cipher_public),
        bytes(m.mask_public),
        bytes(m.kem_public),
        bytes(m.signature),
    )


def _envelope_to_proto(e: sa.Envelope) -> pb.Envelope:
    return pb.Envelope(
        sender=e.sender, recipient=e.recipient, kem_ciphertext=e.kem_ciphertext, sealed=e.sealed
    )


def _envelope_from_proto(m: pb.Envelope) -> sa.Envelope:
    return sa.Envelope(int(m.sender), int(m.recipient), bytes(m.kem_ciphertext), bytes(m.sealed))


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


# -- homomorphic encryption ------------------------------------------------------------------


def encrypted_update_to_proto(update: EncryptedUpdate) -> pb.EncryptedUpdate:
    return pb.EncryptedUpdate(
        sender=update.sender,
        key_id=update.key_id,
        length=update.length,
        chunks=update.chunks,
        digest=update.digest,
    )


def encrypted_update_from_proto(message: pb.EncryptedUpdate) -> EncryptedUpdate:
    return EncryptedUpdate(
        int(message.sender),
        bytes(message.key_id),
        int(message.length),
        tuple(bytes(c) for c in message.chunks),
        bytes(message.digest),
    )


def encryption_key_to_proto(settings: HeSettings) -> pb.EncryptionKey:
    """What a site needs to encrypt its update: the public key, packing, clip and noise."""
    public = settings.public
    if public.name == "paillier":
        n = public.public_key.n
        key = n.to_bytes((n.bit_length() + 7) // 8, "big")
    else:
        key = public.published
    layout = settings.layout
    packing = None
    if layout is not None:
        packing = pb.Packing(
            value_bits=layout.value_bits,
            lane_bits=layout.lane_bits,
            lanes=layout.lanes,
            max_clients=layout.max_clients,
            clip=layout.clip,
            scale=layout.scale,
        )
    return pb.EncryptionKey(
        scheme=public.name,
        public_key=key,
        packing=packing,
        clip_norm=settings.clip_norm,
        min_clients=settings.min_clients,
        client_noise_std=settings.client_noise_std,
        sensitivity=settings.sensitivity,
    )


def encryption_key_from_proto(message: pb.EncryptionKey) -> HeSettings:
    """The site's `HeSettings` from the key holder's public key (no secret in it)."""
    if message.scheme == "paillier":
        n = int.from_bytes(message.public_key, "big")
        public: Any = PaillierScheme(paillier.PaillierPublicKey(n))
    elif message.scheme in ("bfv", "ckks"):
        context = load_public_context(bytes(message.public_key))
        public = TensealScheme(message.scheme, context, bytes(message.public_key))
    else:
        raise ProtocolError(f"unknown encryption scheme {message.scheme!r}")
    layout = None
    if message.HasField("packing"):
        p = message.packing
        layout = PackingLayout(
            p.value_bits, p.lane_bits, p.lanes, p.max_clients, float(p.clip), float(p.scale)
        )
    return HeSettings(
        public,
        layout,
        float(message.clip_norm),
        int(message.min_clients),
        float(message.client_noise_std),
        float(message.sensitivity),
    )
