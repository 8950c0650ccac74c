import dataclasses

import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.secagg.client import SecAggClient
from veil.secagg.messages import MaskedInput, UnmaskRequest
from veil.secagg.server import SecAggServer
from veil.secagg.simulate import Federation, new_round_setup, run_round

BITS = 32


def make_round(
    n=6, length=50, hybrid=False, neighbours=None, threshold=None, min_survivors=None, bits=BITS
):
    k = neighbours or n - 1
    t = threshold or k // 2 + 1
    setup = new_round_setup(
        range(n),
        neighbours=k,
        threshold=t,
        min_survivors=min_survivors or t,
        bits=bits,
        length=length,
        hybrid=hybrid,
        graph_seed=1,
    )
    rng = np.random.default_rng(n)
    dtype = np.uint32 if bits <= 32 else np.uint64
    inputs = {c: rng.integers(0, 2**bits, length, dtype=dtype) for c in range(n)}
    return setup, inputs


def clear_sum(inputs, clients, bits=BITS):
    stacked = np.stack([inputs[c].astype(object) for c in clients])
    return (stacked.sum(axis=0) % 2**bits).astype(np.uint64)


@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize(
    "dropouts",
    [
        {},
        {2: "share keys"},  # after key advertisement
        {2: "masked input"},  # after sharing
        {2: "unmasking"},  # after masked input: still in the sum
        {1: "advertise keys", 3: "masked input", 5: "unmasking"},
    ],
)
def test_sum_of_survivors_is_exact(hybrid, dropouts):
    setup, inputs = make_round(n=7, hybrid=hybrid)
    report = run_round(setup, inputs, Federation(), dropouts)
    expected_survivors = [
        c
        for c in range(7)
        if dropouts.get(c) not in {"advertise keys", "share keys", "masked input"}
    ]
    assert list(report.survivors) == expected_survivors
    assert np.array_equal(report.total.astype(np.uint64), clear_sum(inputs, expected_survivors))
    assert report.rejected == {}


def test_sparse_graph_with_dropouts_and_small_ring():
    setup, inputs = make_round(n=40, length=30, neighbours=12, threshold=7, bits=20)
    drops = {c: "masked input" for c in range(0, 40, 9)} | {c: "unmasking" for c in (5, 6)}
    report = run_round(setup, inputs, Federation(), drops)
    assert np.array_equal(report.total.astype(np.uint64), clear_sum(inputs, report.survivors, 20))


def test_64_bit_ring():
    setup, inputs = make_round(n=4, bits=64)
    report = run_round(setup, inputs, Federation(), {1: "masked input"})
    assert np.array_equal(report.total, clear_sum(inputs, [0, 2, 3], 64).astype(np.uint64))


def test_below_threshold_the_round_fails_and_reveals_nothing():
    setup, inputs = make_round(n=5, neighbours=4, threshold=3)
    with pytest.raises(ProtocolError, match="fewer than the threshold 3; nothing is revealed"):
        run_round(setup, inputs, Federation(), {1: "masked input", 2: "unmasking", 3: "unmasking"})


def test_too_few_masked_inputs_fail_before_unmasking():
    setup, inputs = make_round(n=6, min_survivors=5)
    with pytest.raises(ProtocolError, match="fewer than min_survivors = 5"):
        run_round(setup, inputs, Federation(), {0: "masked input", 1: "masked input"})


def _run_to_unmasking(hybrid=False):
    setup, inputs = make_round(n=5, hybrid=hybrid)
    federation = Federation()
    for c in setup.clients:
        federation.identity(c)
    server = SecAggServer(setup, federation.public)
    clients = {
        c: SecAggClient(c, federation.identity(c), setup, federation.public) for c in setup.clients
    }
    for c in clients.values():
        server.receive(c.advertise())
    keys_for = server.neighbour_keys()
    for c in clients.values():
        server.receive(c.share_keys(keys_for[c.id]))
    shares_for = server.forwarded_shares()
    for c in clients.values():
        server.receive(c.masked_input(shares_for[c.id], inputs[c.id]))
    return setup, server, clients


def test_honest_client_refuses_to_reveal_both_kinds_of_share():
    setup, _server, clients = _run_to_unmasking()
    # The classic attack: the server claims live client 0 dropped *and* asks for its seed.
    bad = UnmaskRequest(setup.round_id, (0, 1, 2, 3, 4), (0,))
    with pytest.raises(
        ProtocolError, match=r"client 1, stage 'unmasking': refusing to reveal both"
    ):
        clients[1].unmask(bad)
    # Told that 0 dropped, a client reveals 0's mask key — and then refuses any second request
    # (which would hand over 0's self-mask seed too).
    claim = UnmaskRequest(setup.round_id, (1, 2, 3, 4), (0,))
    response = clients[2].unmask(claim)
    assert [o for o, _ in response.mask_key_shares] == [0] and not any(
        o == 0 for o, _ in response.self_mask_shares
    )
    with pytest.raises(ProtocolError, match="out of order"):
        clients[2].unmask(UnmaskRequest(setup.round_id, (0, 1, 2, 3, 4), ()))


def test_client_refuses_too_few_survivors():
    setup, _server, clients = _run_to_unmasking()
    with pytest.raises(ProtocolError, match="only 2 survivors listed"):
        clients[1].unmask(UnmaskRequest(setup.round_id, (1, 2), ()))


def _resign(message, federation, sender=None):
    from veil.secagg.messages import signed_bytes

    message = dataclasses.replace(message, signature=b"")
    key = federation.identity(sender if sender is not None else message.sender)
    return dataclasses.replace(message, signature=key.sign(signed_bytes(message)))


@pytest.mark.parametrize(
    ("name", "tamper", "error"),
    [
        (
            "wrong signature",
            lambda m, f: dataclasses.replace(m, signature=bytes(64)),
            "wrong signature",
        ),
        ("forged sender", lambda m, f: dataclasses.replace(m, sender=3), "wrong signature"),
        (
            "other round",
            lambda m, f: _resign(dataclasses.replace(m, round_id=bytes(16)), f),
            "another round",
        ),
        (
            "bad shape",
            lambda m, f: _resign(dataclasses.replace(m, vector=m.vector[:-1]), f),
            "malformed",
        ),
        (
            "bad dtype",
            lambda m, f: _resign(dataclasses.replace(m, vector=m.vector.astype(np.int64)), f),
            "malformed",
        ),
    ],
)
def test_a_bad_masked_input_drops_its_sender_and_the_round_survives(name, tamper, error):
    setup, inputs = make_round(n=6)
    federation = Federation()

    def hook(message):
        if isinstance(message, MaskedInput) and message.sender == 2:
            return tamper(message, federation)
        return message

    report = run_round(setup, inputs, federation, tamper=hook)
    culprit = 3 if name == "forged sender" else 2
    assert error in report.rejected[culprit] and "stage 'masked input'" in report.rejected[culprit]
    survivors = [c for c in range(6) if c != 2]
    assert list(report.survivors) == survivors
    assert np.array_equal(report.total.astype(np.uint64), clear_sum(inputs, survivors))


def test_server_rejects_replays_stage_order_and_strangers():
    _setup, server, clients = _run_to_unmasking()
    masked = server.received[2][1]
    with pytest.raises(ProtocolError, match=r"client 1, stage 'masked input': duplicate"):
        server.receive(masked)
    request = server.unmask_request()
    response = clients[1].unmask(request)
    server.receive(response)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.receive(response)
    with pytest.raises(ProtocolError, match="out of order"):
        server.receive(masked)
    with pytest.raises(ProtocolError, match="not a client message"):
        server.receive(request)


def test_server_cannot_swap_advertised_keys():
    setup, _inputs = make_round(n=5)
    federation = Federation()
    for c in setup.clients:
        federation.identity(c)
    server = SecAggServer(setup, federation.public)
    clients = {
        c: SecAggClient(c, federation.identity(c), setup, federation.public) for c in range(5)
    }
    for c in clients.values():
        server.receive(c.advertise())
    keys_for = server.neighbour_keys()
    impostor = SecAggClient(0, federation.identity(0), setup, federation.public).advertise()
    swapped = dataclasses.replace(impostor, cipher_public=bytes(32))  # signature no longer fits
    forged = dataclasses.replace(
        keys_for[1], advertisements=(swapped, *keys_for[1].advertisements[1:])
    )
    message = clients[1].share_keys(forged)
    assert 0 not in {e.recipient for e in message.envelopes}


@pytest.mark.parametrize("hybrid", [False, True])
def test_bytes_per_client_are_close_to_plain_for_large_vectors(hybrid):
    setup, inputs = make_round(n=6, length=100_000, hybrid=hybrid)
    report = run_round(setup, inputs, Federation())
    ratio = max(report.bytes_sent.values()) / (4 * 100_000)
    assert 1.0 < ratio < (1.05 if hybrid else 1.01)


def test_bad_setup():
    with pytest.raises(ConfigError, match="threshold must be in"):
        new_round_setup(range(5), neighbours=4, threshold=5, min_survivors=5, bits=32, length=3)
    with pytest.raises(ConfigError, match="min_survivors must be in"):
        new_round_setup(range(5), neighbours=4, threshold=3, min_survivors=2, bits=32, length=3)
    setup, inputs = make_round(n=4)
    with pytest.raises(ConfigError, match="dropout stages"):
        run_round(setup, inputs, Federation(), {0: "lunch"})
