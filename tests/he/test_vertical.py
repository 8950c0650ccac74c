"""Hetero LR with Paillier: exact Taylor gradients, an arbiter that sees only masked values."""

from __future__ import annotations

import numpy as np
import pytest
from phe import EncodedNumber, paillier

from veil.errors import ConfigError, ProtocolError
from veil.he.vertical import (
    FEATURE_EXPONENT,
    LOGIT_EXPONENT,
    Arbiter,
    EncryptedVector,
    GuestParty,
    HostParty,
    MaskedPlaintexts,
    ciphertext_bytes,
    encode_fixed,
    encrypt_batch,
    encrypted_weighted_sums,
    minibatches,
    taylor_gradient,
    train_hetero_lr,
)

KEY_BITS = 1024  # small keys keep the tests fast; the default is 2048


@pytest.fixture(scope="module")
def arbiter():
    return Arbiter(KEY_BITS)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n = 48
    guest_x = np.hstack([np.ones((n, 1)), rng.normal(size=(n, 3))])
    host_x = rng.normal(size=(n, 4))
    y = (rng.random(n) < 0.3).astype(np.int64)
    return guest_x, host_x, y


def parties(arbiter, problem, l2=0.0):
    guest_x, host_x, y = problem
    guest = GuestParty("guest", guest_x, arbiter.public_key, l2, 1, y=y)
    host = HostParty("host", host_x, arbiter.public_key, l2, 1)
    rng = np.random.default_rng(0)
    guest.weights, host.weights = rng.normal(size=4) * 0.3, rng.normal(size=4) * 0.3
    return guest, host


def decrypt(arbiter, values):
    return np.array([arbiter._private_key.decrypt(v) for v in values])


def test_encode_fixed_uses_phe_encoding_with_a_fixed_exponent(arbiter):
    key = arbiter.public_key
    encodings = encode_fixed(key, np.array([1.5, -0.25]), -2)
    assert encodings == [384, key.n - 64]
    assert EncodedNumber(key, encodings[1], -2).decode() == -0.25
    with pytest.raises(ProtocolError, match="too large to encode at exponent 0"):
        encode_fixed(key, np.array([2.0**1023]), 0)
    with pytest.raises(ProtocolError, match="cannot encode a non-finite value at exponent -7"):
        encode_fixed(key, np.array([np.nan]), -7)


@pytest.mark.parametrize("threads", [1, 2])
def test_encrypt_batch_decrypts_and_is_randomised(arbiter, threads):
    values = np.array([0.5, -3.25, 0.5, 1e-6])
    encrypted = encrypt_batch(arbiter.public_key, values, LOGIT_EXPONENT, threads)
    np.testing.assert_allclose(decrypt(arbiter, encrypted), values, atol=1e-8)
    assert encrypted[0].ciphertext(False) != encrypted[2].ciphertext(False)
    assert all(e.exponent == LOGIT_EXPONENT for e in encrypted)


def test_encrypt_batch_needs_a_thread(arbiter):
    with pytest.raises(ConfigError, match=r"threads must be >= 1 \(got 0\)"):
        encrypt_batch(arbiter.public_key, np.zeros(1), LOGIT_EXPONENT, 0)


def test_encrypted_weighted_sums_match_plaintext(arbiter):
    rng = np.random.default_rng(1)
    d, x = rng.normal(size=10), rng.normal(size=(10, 3))
    x[2, 1] = 0.0
    sums = encrypted_weighted_sums(encrypt_batch(arbiter.public_key, d, LOGIT_EXPONENT), x)
    np.testing.assert_allclose(decrypt(arbiter, sums), x.T @ d, atol=1e-6)
    assert all(s.exponent == LOGIT_EXPONENT + FEATURE_EXPONENT for s in sums)
    with pytest.raises(ConfigError, match=r"x must be \[10, d\] for 10 residuals"):
        encrypted_weighted_sums(encrypt_batch(arbiter.public_key, d, LOGIT_EXPONENT), x[:4])


def test_taylor_gradient_known_answer():
    x = np.array([[1.0, 2.0], [1.0, -1.0]])
    y = np.array([1, 0])
    z = np.array([2.0, 0.0])
    # residuals 0.25 z + 0.5 - y = [0.0, 0.5]
    np.testing.assert_allclose(taylor_gradient(x, y, z), [0.25, -0.25])


def test_minibatches_cover_every_row_once():
    batches = list(minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches)) == list(range(10))


def test_one_step_gradients_equal_the_plaintext_taylor_gradients(arbiter, problem):
    guest_x, host_x, y = problem
    guest, host = parties(arbiter, problem, l2=0.1)
    rows = np.arange(5, 37)
    z = guest_x[rows] @ guest.weights + host_x[rows] @ host.weights
    expected_guest = taylor_gradient(guest_x[rows], y[rows], z) + 0.1 * np.r_[0, guest.weights[1:]]
    expected_host = taylor_gradient(host_x[rows], y[rows], z) + 0.1 * host.weights
    residuals = guest.residuals(host.encrypted_logits(rows, step=3), rows)
    np.testing.assert_allclose(
        decrypt(arbiter, residuals.values), 0.25 * z + 0.5 - y[rows], atol=1e-7
    )
    for party, expected in ((guest, expected_guest), (host, expected_host)):
        before = party.weights.copy()
        gradient = party.apply(arbiter.decrypt(party.masked_gradient(residuals, rows)), 0.5)
        np.testing.assert_allclose(gradient, expected, atol=1e-6)
        np.testing.assert_allclose(party.weights, before - 0.5 * expected, atol=1e-6)


def test_arbiter_only_ever_decrypts_uniformly_masked_values(problem):
    arbiter = Arbiter(KEY_BITS)
    guest, host = parties(arbiter, problem)
    rows = np.arange(16)
    residuals = guest.residuals(host.encrypted_logits(rows, 0), rows)
    for party in (guest, host):
        party.apply(arbiter.decrypt(party.masked_gradient(residuals, rows)), 0.1)
    n = arbiter.public_key.n
    assert len(arbiter.decrypted) == 8
    # An unmasked sum would be below 2^80 in absolute value (exponent -13: |sum| * 16^13);
    # a masked one is uniform on Z_n, so it is that close to 0 or n with probability ~2^-943.
    assert all(min(v, n - v) > 2**80 for v in arbiter.decrypted)


def test_host_cannot_strip_its_own_randomness_from_the_residuals(arbiter, problem):
    """[[d]] must not be [[0.25 z_H]] times a deterministic encryption of the guest's part."""
    guest, host = parties(arbiter, problem)
    rows = np.arange(4)
    logits = host.encrypted_logits(rows, 0)
    residuals = guest.residuals(logits, rows)
    own = 0.25 * guest.logits(rows) - 0.5 * (2.0 * problem[2][rows] - 1.0)
    key = arbiter.public_key
    encodings = encode_fixed(key, own, LOGIT_EXPONENT)
    for c, m, d in zip(logits.values, encodings, residuals.values, strict=True):
        deterministic = c.ciphertext(False) * key.raw_encrypt(m, 1) % key.nsquare
        assert d.ciphertext(False) != deterministic


def test_arbiter_refuses_anything_but_masked_gradients(arbiter, problem):
    _, host = parties(arbiter, problem)
    with pytest.raises(ProtocolError, match=r"decrypts only masked gradients \(got logits\)"):
        arbiter.decrypt(host.encrypted_logits(np.arange(2), 0))


def test_arbiter_refuses_mixed_exponents_and_foreign_keys(arbiter):
    key = arbiter.public_key
    mixed = (key.encrypt(1.0), key.encrypt(1))
    with pytest.raises(ProtocolError, match="masked gradient from host mixes exponents"):
        arbiter.decrypt(EncryptedVector("host", "masked_gradient", 0, mixed))
    other, _ = paillier.generate_paillier_keypair(n_length=KEY_BITS)
    foreign = (other.encrypt(1),)
    with pytest.raises(ProtocolError, match="cannot decrypt a value from host"):
        arbiter.decrypt(EncryptedVector("host", "masked_gradient", 0, foreign))


def test_arbiter_key_size_is_checked():
    with pytest.raises(
        ConfigError, match=r"key_bits must be >= 1024 and a multiple of 8 \(got 512\)"
    ):
        Arbiter(512)


def test_reply_for_a_step_never_requested(arbiter, problem):
    _, host = parties(arbiter, problem)
    with pytest.raises(ProtocolError, match="host: reply for step 4 it did not request"):
        host.apply(MaskedPlaintexts(4, (1,), -13), 0.1)


def test_residual_count_must_match_the_batch(arbiter, problem):
    guest, host = parties(arbiter, problem)
    logits = host.encrypted_logits(np.arange(3), 0)
    with pytest.raises(ProtocolError, match="guest: expected 2 encrypted host logits"):
        guest.residuals(logits, np.arange(2))
    residuals = guest.residuals(logits, np.arange(3))
    with pytest.raises(ProtocolError, match="host: 3 residuals for a batch of 2"):
        host.masked_gradient(residuals, np.arange(2))


def test_guest_checks_labels_and_intercept(arbiter):
    key = arbiter.public_key
    with pytest.raises(ConfigError, match=r"guest: y must hold 2 labels in \{0, 1\}"):
        GuestParty("guest", np.ones((2, 2)), key, y=np.array([0, 2]))
    with pytest.raises(ConfigError, match=r"guest: x\[:, 0\] must be the intercept 1"):
        GuestParty("guest", np.zeros((2, 2)), key, y=np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"l2 must be >= 0 \(got -1\)"):
        HostParty("host", np.zeros((2, 2)), key, -1)
    with pytest.raises(ConfigError, match=r"host: x must be \[rows, features\]"):
        HostParty("host", np.zeros(2), key)


def test_training_matches_plaintext_taylor_sgd(problem):
    guest_x, host_x, y = problem
    seen = []
    result = train_hetero_lr(
        guest_x[:, 1:], y, host_x, epochs=2, batch_size=16, learning_rate=0.3, l2=0.01,
        key_bits=KEY_BITS, threads=2, seed=5, on_epoch=lambda *args: seen.append(args[0]),
    )  # fmt: skip
    weights = np.zeros(8)
    design = np.hstack([guest_x, host_x])
    penalized = np.r_[0.0, np.ones(7)]
    rng = np.random.default_rng(5)
    for _ in range(2):
        for rows in minibatches(len(y), 16, rng):
            gradient = taylor_gradient(design[rows], y[rows], design[rows] @ weights)
            weights = weights - 0.3 * (gradient + 0.01 * penalized * weights)
    np.testing.assert_allclose(np.r_[result.guest_weights, result.host_weights], weights, atol=1e-6)
    assert seen == [0, 1] and len(result.epoch_seconds) == 2
    assert result.decryptions == 2 * 3 * 8  # epochs x batches x (4 guest + 4 host) coordinates
    ct = ciphertext_bytes(paillier.generate_paillier_keypair(n_length=KEY_BITS)[0])
    assert ct == 256
    assert result.bytes_exchanged == 2 * (2 * 48 * ct + 3 * 8 * (ct + 128))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, r"epochs must be >= 1 \(got 0\)"),
        ({"batch_size": 0}, r"batch_size must be >= 1 \(got 0\)"),
        ({"learning_rate": 0.0}, r"learning_rate must be > 0 \(got 0.0\)"),
    ],
)
def test_bad_training_arguments(problem, kwargs, message):
    guest_x, host_x, y = problem
    with pytest.raises(ConfigError, match=message):
        train_hetero_lr(guest_x, y, host_x, key_bits=KEY_BITS, **kwargs)


def test_guest_and_host_need_the_same_rows(problem):
    guest_x, host_x, y = problem
    with pytest.raises(ConfigError, match=r"the same rows \(got 48 and 47\)"):
        train_hetero_lr(guest_x, y, host_x[:47], key_bits=KEY_BITS)
