import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.errors import ConfigError
from veil.tee.errors import (
    KeyBindingMismatch,
    MalformedEvidence,
    NonceReuse,
    ReplayedEvidence,
    RollbackDetected,
)
from veil.tee.evidence import (
    Evidence,
    FreshNonces,
    aggregator_evidence,
    public_key_sha256,
    report_data_for,
    verify_aggregator,
)
from veil.tee.quote import parse_quote

from .conftest import MEASUREMENT, NOW

KEY = X25519PrivateKey.generate().public_key()


def fresh(backend, round_counter=0):
    nonces = FreshNonces()
    nonce = nonces.issue()
    return nonces, nonce, aggregator_evidence(backend, nonce, KEY, round_counter)


def test_evidence_binds_key_nonce_and_round_and_passes(backend, policy):
    nonces, nonce, evidence = fresh(backend, 3)
    verified = verify_aggregator(evidence, nonce, KEY, policy, last_round=3, nonces=nonces, now=NOW)
    assert verified.measurement == MEASUREMENT and verified.round_counter == 3
    assert verified.tcb_status == "UpToDate" and not verified.debug and not verified.hardware
    report_data = parse_quote(Evidence.from_bytes(evidence).quote).body.report_data
    assert report_data == report_data_for(KEY, nonce, 3)
    assert report_data[:32] == public_key_sha256(KEY)


def test_description_says_plainly_when_nothing_is_protected(backend, policy):
    _, nonce, evidence = fresh(backend)
    text = verify_aggregator(evidence, nonce, KEY, policy, now=NOW).describe()
    assert text.startswith("SIMULATED attestation, NO hardware protection")
    hardware = dataclasses.replace(policy, hardware=True)
    text = verify_aggregator(evidence, nonce, KEY, hardware, now=NOW).describe()
    assert "SIMULATED" in text  # the evidence says it comes from the simulated backend


def test_a_relay_with_its_own_key_is_refused(backend, policy):
    _, nonce, evidence = fresh(backend)
    relay_key = X25519PrivateKey.generate().public_key()
    with pytest.raises(KeyBindingMismatch, match="binds another public key"):
        verify_aggregator(evidence, nonce, relay_key, policy, now=NOW)


def test_old_evidence_is_refused_for_a_new_nonce(backend, policy):
    _, _, old = fresh(backend)
    nonces = FreshNonces()
    with pytest.raises(ReplayedEvidence, match="answers another nonce"):
        verify_aggregator(old, nonces.issue(), KEY, policy, nonces=nonces, now=NOW)


def test_envelope_relabelled_with_the_new_nonce_is_refused(backend, policy):
    _, _, old = fresh(backend)
    nonce = FreshNonces().issue()
    document = json.loads(old)
    document["nonce"] = nonce.hex()
    with pytest.raises(ReplayedEvidence, match="made for another nonce or round counter"):
        verify_aggregator(json.dumps(document).encode(), nonce, KEY, policy, now=NOW)
    _, nonce, evidence = fresh(backend, 5)
    document = json.loads(evidence)
    document["round"] = 9  # claim a later round than the quote binds
    with pytest.raises(ReplayedEvidence, match="another nonce or round counter"):
        verify_aggregator(json.dumps(document).encode(), nonce, KEY, policy, now=NOW)


def test_a_nonce_is_accepted_once_and_only_if_issued(backend, policy):
    nonces, nonce, evidence = fresh(backend)
    verify_aggregator(evidence, nonce, KEY, policy, nonces=nonces, now=NOW)
    with pytest.raises(NonceReuse, match="already used or never issued"):
        verify_aggregator(evidence, nonce, KEY, policy, nonces=nonces, now=NOW)
    with pytest.raises(NonceReuse, match="already used or never issued"):
        verify_aggregator(evidence, bytes(32), KEY, policy, nonces=nonces, now=NOW)


def test_rolled_back_aggregator_is_refused(backend, policy):
    _, nonce, evidence = fresh(backend, 2)
    with pytest.raises(RollbackDetected, match="at round 2, but this client already saw round 4"):
        verify_aggregator(evidence, nonce, KEY, policy, last_round=4, now=NOW)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json", "not a veil attestation document"),
        (json.dumps({"format": "other/1"}).encode(), "format 'other/1' is not"),
        (b"x" * (1 << 21), "larger than"),
    ],
)
def test_malformed_envelopes_are_refused(policy, data, message):
    with pytest.raises(MalformedEvidence, match=message):
        verify_aggregator(data, bytes(32), KEY, policy, now=NOW)


def test_negative_round_counter_is_malformed(backend):
    _, _, evidence = fresh(backend)
    document = json.loads(evidence)
    document["round"] = -1
    with pytest.raises(MalformedEvidence, match="round counter is not an integer"):
        Evidence.from_bytes(json.dumps(document).encode())


def test_nonce_must_be_32_bytes(backend):
    with pytest.raises(ConfigError, match="32 random bytes"):
        aggregator_evidence(backend, b"short", KEY)


def test_evidence_round_trips(backend):
    _, nonce, evidence = fresh(backend, 7)
    document = Evidence.from_bytes(evidence)
    assert document.to_bytes() == evidence
    assert (document.nonce, document.round_counter, document.backend) == (nonce, 7, "simulated")


def test_a_deployments_evidence_binds_the_channel_key_beside_the_tls_key(backend, policy):
    nonces = FreshNonces()
    nonce = nonces.issue()
    channel = X25519PrivateKey.generate().public_key().public_bytes_raw()
    evidence = aggregator_evidence(backend, nonce, KEY, 2, channel)
    verified = verify_aggregator(evidence, nonce, KEY, policy, nonces=nonces, now=NOW)
    assert verified.channel_key == channel and verified.round_counter == 2
    report_data = parse_quote(Evidence.from_bytes(evidence).quote).body.report_data
    assert report_data == report_data_for(KEY, nonce, 2, channel)
    assert report_data != report_data_for(KEY, nonce, 2)  # the channel key is bound
    document = json.loads(evidence)
    document["channel_key"] = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    with pytest.raises(ReplayedEvidence, match=r"round counter \(or channel key\)"):
        verify_aggregator(json.dumps(document).encode(), nonce, KEY, policy, now=NOW)
    document["channel_key"] = "ab" * 5
    with pytest.raises(MalformedEvidence, match="the channel key is not 32 bytes"):
        Evidence.from_bytes(json.dumps(document).encode())
