import dataclasses

import numpy as np
import pytest
import torch
from phe import paillier

from veil.errors import ProtocolError
from veil.he.aggregation import encrypt_update
from veil.he.links import HeSettings
from veil.he.packing import choose_layout
from veil.he.schemes import PaillierScheme, generate
from veil.runtime.grpc import codec
from veil.runtime.grpc import veil_pb2 as pb
from veil.secagg import keys
from veil.secagg.messages import STAGES, RoundSetup, signed_bytes
from veil.secagg.simulate import Federation, InProcessParties, drive_round, new_round_setup


def test_tensors_round_trip_exactly():
    for value in (np.arange(6, dtype=np.uint32).reshape(2, 3), torch.randn(3, 1, 2)):
        back = codec.tensor_from_proto(codec.tensor_to_proto("x", value))
        expected = value.numpy() if isinstance(value, torch.Tensor) else value
        assert back.dtype == expected.dtype and np.array_equal(back, expected)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (pb.Tensor(name="t", dtype="|O", shape=[1], data=b"x"), "unsupported dtype '|O'"),
        (pb.Tensor(name="t", dtype=">f4", shape=[1], data=b"abcd"), "unsupported dtype"),
        (pb.Tensor(name="t", dtype="<f4", shape=[3], data=b"abcd"), "do not hold shape"),
        (pb.Tensor(name="t", dtype="<f4", shape=[-1], data=b""), "invalid shape"),
        (pb.Tensor(name="t", dtype="<f4", shape=[1] * 9, data=b"abcd"), "invalid shape"),
    ],
)
def test_bad_tensors_are_refused(tensor, message):
    with pytest.raises(ProtocolError, match=message):
        codec.tensor_from_proto(tensor)


def test_a_tensor_of_an_unsupported_dtype_cannot_be_sent():
    with pytest.raises(ProtocolError, match="cannot travel"):
        codec.tensor_to_proto("t", np.array(["a"]))


LIKE = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}


def test_params_round_trip_in_the_expected_order():
    params = {"b": torch.tensor([1.0, 2.0]), "w": torch.eye(2)}
    back = codec.params_from_proto(codec.params_to_proto(params), LIKE)
    assert list(back) == ["w", "b"] and torch.equal(back["w"], torch.eye(2))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"w": torch.zeros(2, 2)}, r"missing tensors \['b'\]"),
        ({**LIKE, "extra": torch.zeros(1)}, "unexpected or repeated tensor 'extra'"),
        ({"w": torch.zeros(3), "b": torch.zeros(2)}, r"shape \(3,\) .* expected \(2, 2\)"),
        ({"w": torch.zeros(2, 2, dtype=torch.float64), "b": torch.zeros(2)}, "dtype float64"),
        ({"w": torch.full((2, 2), float("nan")), "b": torch.zeros(2)}, "NaN or infinite"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ProtocolError, match=message):
        codec.params_from_proto(codec.params_to_proto(params), LIKE)


def test_repeated_tensors_are_refused():
    tensors = codec.params_to_proto(LIKE) + codec.params_to_proto({"b": torch.zeros(2)})
    with pytest.raises(ProtocolError, match="unexpected or repeated tensor 'b'"):
        codec.params_from_proto(tensors, LIKE)


class Recorder:
    """In-process parties that pass every request and message through the codec, both ways."""

    def __init__(self, parties, identities):
        self.parties, self.identities, self.seen = parties, identities, []

    def exchange(self, stage, requests):
        decoded = {}
        for c, request in requests.items():
            got_stage, got, identities = codec.request_from_proto(
                codec.request_to_proto(request, self.identities)
            )
            assert got_stage == stage and got == request
            assert identities == (dict(self.identities) if stage == STAGES[0] else {})
            decoded[c] = got
        out = {}
        for c, message in self.parties.exchange(stage, decoded).items():
            got_stage, back = codec.message_from_proto(codec.message_to_proto(message))
            assert got_stage == stage and type(back) is type(message)
            self.seen.append((message, back))
            out[c] = back
        return out


@pytest.mark.parametrize("hybrid", [False, True])
def test_secagg_messages_survive_the_codec_with_valid_signatures(hybrid):
    clients = range(4)
    setup = new_round_setup(
        clients, neighbours=3, threshold=2, min_survivors=2, bits=32, length=5, hybrid=hybrid
    )
    inputs = {c: np.full(5, c + 1, dtype=np.uint32) for c in clients}
    federation = Federation()
    parties = InProcessParties(setup, inputs, federation, {3: STAGES[2]})  # 3 drops: recovery
    recorder = Recorder(parties, federation.public)
    total, survivors, rejected, _ = drive_round(setup, federation.public, recorder)
    assert survivors == (0, 1, 2) and rejected == {}
    assert np.array_equal(total, np.full(5, 6, dtype=np.uint32))
    for original, back in recorder.seen:
        assert keys.verify(federation.public[back.sender], back.signature, signed_bytes(back))
        assert signed_bytes(back) == signed_bytes(original)
    assert {type(m).__name__ for m, _ in recorder.seen} == {
        "KeyAdvertisement",
        "EncryptedShares",
        "MaskedInput",
        "UnmaskResponse",
    }


def test_a_setup_round_trips_through_its_message():
    setup = RoundSetup(b"r" * 16, (0, 2), 1, 1, 1, 32, 7, True, 2**62 - 1)
    assert codec.setup_from_proto(codec.setup_to_proto(setup)) == setup


def test_empty_secagg_messages_are_refused():
    with pytest.raises(ProtocolError, match="SecAgg\\+ request without a stage"):
        codec.request_from_proto(pb.SecAggRequest())
    with pytest.raises(ProtocolError, match="SecAgg\\+ message without a kind"):
        codec.message_from_proto(pb.SecAggMessage())


def _he_round_trip(scheme, layout):
    settings = HeSettings(scheme.public(), layout, 1.0, 2, 0.5, 3.0)
    back = codec.encryption_key_from_proto(codec.encryption_key_to_proto(settings))
    assert back.public.key == scheme.key and back.layout == layout
    assert (back.clip_norm, back.min_clients, back.client_noise_std, back.sensitivity) == (
        1.0,
        2,
        0.5,
        3.0,
    )
    update = encrypt_update(
        back.public, 1, np.array([0.5, -0.25]), layout, np.random.default_rng(0)
    )
    same = codec.encrypted_update_from_proto(codec.encrypted_update_to_proto(update))
    assert same == update
    return back


def test_a_bfv_public_key_reaches_the_site_without_its_secret():
    scheme = generate("bfv")
    back = _he_round_trip(scheme, choose_layout(scheme.slot_bits, 2, 1.0))
    assert not back.public.context.has_secret_key()


def test_a_paillier_public_key_reaches_the_site():
    public, private = paillier.generate_paillier_keypair(n_length=1024)  # small: codec only
    scheme = PaillierScheme(public, private)
    back = _he_round_trip(scheme, choose_layout(scheme.slot_bits, 2, 1.0))
    assert back.public.private_key is None


def test_an_unknown_encryption_scheme_is_refused():
    with pytest.raises(ProtocolError, match="unknown encryption scheme 'rot13'"):
        codec.encryption_key_from_proto(pb.EncryptionKey(scheme="rot13"))


def test_ckks_has_no_packing():
    scheme = generate("ckks")
    settings = HeSettings(scheme.public(), None, 1.0, 2)
    message = codec.encryption_key_to_proto(settings)
    assert not message.HasField("packing")
    assert codec.encryption_key_from_proto(message).layout is None


def test_signed_fields_keep_their_python_types():
    """Signatures cover canonical bytes that tag each value's type: ints stay ints."""
    advert = codec.message_from_proto(
        pb.SecAggMessage(advertisement=pb.KeyAdvertisement(round_id=b"r", sender=3))
    )[1]
    assert type(advert.sender) is int and type(advert.round_id) is bytes
    response = dataclasses.asdict(
        codec.message_from_proto(
            pb.SecAggMessage(
                unmask_response=pb.UnmaskResponse(
                    self_mask_shares=[pb.OwnedShare(owner=1, data=b"s")]
                )
            )
        )[1]
    )
    assert response["self_mask_shares"] == ((1, b"s"),)
