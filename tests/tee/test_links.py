import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.errors import ProtocolError
from veil.fl.aggregators import weighted_mean
from veil.fl.links import identity
from veil.tee.enclave import AttestedAggregator
from veil.tee.links import AttestingClients, attested_encoder, enclave_aggregator
from veil.tee.simulated import SimulatedBackend

PARAMS = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}


def chain_for(backend, policy):
    enclave = AttestedAggregator(backend, weighted_mean())
    clients = AttestingClients(policy)
    return (
        enclave,
        clients,
        attested_encoder(enclave, clients, identity()),
        enclave_aggregator(enclave),
    )


def test_attested_round_gives_the_weighted_mean(backend, policy, batch, test_key):
    enclave, clients, encoder, aggregator = chain_for(backend, policy)
    state = aggregator.init(PARAMS)
    for round_index in (1, 2):
        sealed, _, _ = encoder.apply(batch, encoder.init(PARAMS), test_key())
        mean, state, _ = aggregator.apply(sealed, state, test_key())
        assert enclave.round_counter == round_index
    expected, _, _ = weighted_mean().apply(batch, None, test_key())
    assert torch.allclose(mean["w"], expected["w"])
    assert clients.last_round == {0: 1, 1: 1, 2: 1, 3: 1}  # what each saw before round 2


def test_clients_refuse_an_aggregator_that_is_not_the_published_code(
    platform, policy, batch, test_key
):
    impostor = SimulatedBackend(platform, bytes(32))  # other code, same genuine platform
    _, _, encoder, aggregator = chain_for(impostor, policy)
    aggregator.init(PARAMS)
    with pytest.raises(
        ProtocolError, match="client 0 refused to send its update: MeasurementNotAllowed"
    ):
        encoder.apply(batch, None, test_key())


def test_clients_accept_the_published_code(backend, policy, batch, test_key):
    _, _, encoder, aggregator = chain_for(backend, policy)
    aggregator.init(PARAMS)
    sealed, _, _ = encoder.apply(batch, None, test_key())
    assert len(sealed.ciphertexts) == 4


def test_clients_refuse_a_relay_that_swaps_the_key(backend, policy, batch, test_key):
    enclave, _, encoder, aggregator = chain_for(backend, policy)
    aggregator.init(PARAMS)
    relay = X25519PrivateKey.generate().public_key()
    enclave.evidence = lambda nonce, key=None, real=enclave.evidence: real(nonce, relay)
    with pytest.raises(ProtocolError, match="KeyBindingMismatch"):
        encoder.apply(batch, None, test_key())


def test_clients_refuse_an_aggregator_restarted_from_old_sealed_state(
    backend, policy, batch, test_key
):
    _, clients, encoder, aggregator = chain_for(backend, policy)
    states = [aggregator.init(PARAMS)]
    for _ in range(2):
        sealed, _, _ = encoder.apply(batch, None, test_key())
        states.append(aggregator.apply(sealed, states[-1], test_key())[1])
    sealed, _, _ = encoder.apply(batch, None, test_key())  # the clients saw round 2
    restarted = AttestedAggregator(backend, weighted_mean())
    restarted.resume(states[1])  # the host hands back round 1's state
    encoder = attested_encoder(restarted, clients, identity())
    with pytest.raises(ProtocolError, match="RollbackDetected: the aggregator is at round 1"):
        encoder.apply(batch, None, test_key())
