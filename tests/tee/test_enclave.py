import dp_accounting
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import ec

from veil.errors import ProtocolError
from veil.fl.aggregators import weighted_mean
from veil.privacy.client_dp import adaptive_clipped_gaussian_sum, gaussian_sum
from veil.tee.channel import seal_updates
from veil.tee.enclave import AttestedAggregator
from veil.tee.errors import RollbackDetected
from veil.tee.evidence import Evidence, FreshNonces, verify_aggregator

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")
PARAMS = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}


def one_round(enclave, batch, state):
    sealed = seal_updates(batch, enclave.channel_public_key, enclave.round_counter)
    return enclave.aggregate(sealed, state)


def test_enclave_aggregates_what_the_inner_link_would(backend, batch, test_key):
    enclave = AttestedAggregator(backend, weighted_mean())
    state = enclave.init(PARAMS)
    mean, state, events = one_round(enclave, batch, state)
    expected, _, _ = weighted_mean().apply(batch, None, test_key())
    for name in expected:
        assert torch.allclose(mean[name], expected[name])
    assert enclave.round_counter == 1 and events == []
    assert b"state" not in state and isinstance(state, bytes)  # the host holds a sealed blob


def test_evidence_needs_state_first(backend):
    enclave = AttestedAggregator(backend, weighted_mean())
    with pytest.raises(ProtocolError, match="no state yet: call init"):
        enclave.evidence(bytes(32))


def test_evidence_carries_the_round_counter(backend, batch):
    enclave = AttestedAggregator(backend, weighted_mean())
    state = enclave.init(PARAMS)
    _, state, _ = one_round(enclave, batch, state)
    assert Evidence.from_bytes(enclave.evidence(bytes(32))).round_counter == 1


def test_enclave_refuses_older_state_than_it_reached(backend, batch):
    enclave = AttestedAggregator(backend, weighted_mean())
    first = enclave.init(PARAMS)
    one_round(enclave, batch, first)
    with pytest.raises(RollbackDetected, match="older than round 1"):
        enclave.aggregate(seal_updates(batch, enclave.channel_public_key, 1), first)


def test_restarted_enclave_resumes_and_refuses_a_swapped_state(backend, batch):
    enclave = AttestedAggregator(backend, weighted_mean())
    states = [enclave.init(PARAMS)]
    for _ in range(2):
        states.append(one_round(enclave, batch, states[-1])[1])
    restarted = AttestedAggregator(backend, weighted_mean())  # same code, same CPU
    assert restarted.resume(states[1]) == 1
    with pytest.raises(ProtocolError, match="at round 2, the enclave attested round 1"):
        restarted.aggregate(seal_updates(batch, restarted.channel_public_key, 1), states[2])


def test_noise_is_the_enclaves_own_not_the_hosts(backend, batch, test_key):
    results = []
    for host_seed in (1, 2):
        enclave = AttestedAggregator(
            backend, gaussian_sum(1.0, 1.0, 4.0, lambda event: event), noise_seed_for_testing=0
        )
        sealed = seal_updates(batch, enclave.channel_public_key, 0)
        mean, _, events = enclave_aggregate_with_host_key(enclave, sealed, test_key(host_seed))
        results.append(mean)
        assert events == [dp_accounting.GaussianDpEvent(1.0)]
    assert torch.equal(results[0]["w"], results[1]["w"])  # the host's key changes nothing
    plain = batch.deltas["w"].sum(0) / 4
    assert not torch.allclose(results[0]["w"], plain, atol=0.05)  # but noise was added


def enclave_aggregate_with_host_key(enclave, sealed, host_key):
    from veil.tee.links import enclave_aggregator

    link = enclave_aggregator(enclave)
    return link.apply(sealed, link.init(PARAMS), host_key)


def test_tuple_state_survives_sealing(backend, batch):
    inner = adaptive_clipped_gaussian_sum(1.0, 0.5, 0.5, 0.2, 4.0, lambda e: e)
    enclave = AttestedAggregator(backend, inner, noise_seed_for_testing=0)
    state = enclave.init(PARAMS)
    _, state, _ = one_round(enclave, batch, state)
    _, state, _ = one_round(enclave, batch, state)
    assert enclave.round_counter == 2


def test_evidence_for_a_tls_key_binds_the_channel_key_too(backend, policy):
    enclave = AttestedAggregator(backend, weighted_mean())
    enclave.init(PARAMS)
    tls_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    nonces = FreshNonces()
    nonce = nonces.issue()
    verified = verify_aggregator(enclave.evidence(nonce, tls_key), nonce, tls_key, policy)
    assert verified.channel_key == enclave.channel_public_key.public_bytes_raw()
    assert Evidence.from_bytes(enclave.evidence(bytes(32))).channel_key == b""  # simulator
