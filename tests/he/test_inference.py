"""Encrypted inference (`veil.he.inference`): agreement with plaintext, and every refusal."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil.errors import ConfigError, ProtocolError
from veil.he.context import MAX_LOG_Q_128, ckks_context
from veil.he.inference import (
    EncryptedQuery,
    EncryptedScore,
    InferenceClient,
    InferenceServer,
    breast_cancer_split,
    measure_encrypted_inference,
    parameters_for,
)
from veil.he.quadratic_models import compile_model, plaintext_scores, train_model

TOLERANCE = 1e-3  # the bound on |encrypted score − plaintext score|


@pytest.fixture(scope="module")
def split():
    return breast_cancer_split(seed=0)


@pytest.fixture(scope="module")
def networks(split):
    x_train, y_train, _, _ = split
    return {name: train_model(name, x_train, y_train, seed=0) for name in ("logistic", "mlp")}


@pytest.fixture(scope="module")
def clients():
    """One key holder per depth, with Galois keys, so it serves both packings."""
    return {depth: InferenceClient(parameters_for(depth, "sample")) for depth in (1, 2)}


def served(networks, clients, name):
    score = compile_model(networks[name])
    client = clients[score.depth]
    return client, InferenceServer(score, client.public_context)


def test_breast_cancer_is_scaled_on_training_rows_only(split):
    x_train, _, x_test, _ = split
    assert x_train.shape == (455, 30) and x_test.shape == (114, 30)
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(x_test.mean(axis=0)).max() > 0.01  # test rows did not shape the scaling


@pytest.mark.parametrize(("name", "minimum_accuracy"), [("logistic", 0.95), ("mlp", 0.93)])
def test_models_learn_and_compile_exactly(split, networks, name, minimum_accuracy):
    """Known answer: the compiled form xᵀ(Ax + g) + k equals the network's own forward pass."""
    _, _, x_test, y_test = split
    plain = plaintext_scores(networks[name], x_test)
    score = compile_model(networks[name])
    np.testing.assert_allclose(score.plain(x_test), plain, atol=1e-9)
    assert np.mean((plain > 0) == y_test) >= minimum_accuracy
    assert score.depth == (1 if name == "logistic" else 2)


def test_parameters_are_the_smallest_128_bit_secure_for_the_depth():
    for depth, primes in [(1, [60, 40, 60]), (2, [60, 40, 40, 60])]:
        parameters = parameters_for(depth, "batch")
        assert parameters.poly_modulus_degree == 8192 and parameters.depth == depth
        assert list(parameters.coeff_mod_bit_sizes) == primes
        assert MAX_LOG_Q_128[4096] < sum(primes) <= MAX_LOG_Q_128[8192]
        assert parameters_for(depth, "sample").galois_keys and not parameters.galois_keys
    with pytest.raises(ConfigError, match=r"depth must be one of \[1, 2\] \(got 3\)"):
        parameters_for(3, "sample")


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_one_sample_per_ciphertext_matches_plaintext(split, networks, clients, name):
    _, _, x_test, _ = split
    client, server = served(networks, clients, name)
    rows = x_test[[0, 57, 113]]
    scores = [client.decrypt(server.evaluate(client.encrypt(row)))[0] for row in rows]
    plain = plaintext_scores(networks[name], rows)
    assert np.max(np.abs(np.array(scores) - plain)) <= TOLERANCE


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_batch_matches_plaintext_on_the_whole_test_set(split, networks, clients, name):
    _, _, x_test, _ = split
    client, server = served(networks, clients, name)
    scores = client.decrypt(server.evaluate(client.encrypt_batch(x_test)))
    assert scores.shape == (114,)
    assert np.max(np.abs(scores - plaintext_scores(networks[name], x_test))) <= TOLERANCE


@settings(max_examples=8, deadline=None)
@given(x=arrays(np.float64, 30, elements=st.floats(-12, 12)))
def test_logistic_agrees_on_any_features_in_range(networks, clients, x):
    client, server = served(networks, clients, "logistic")
    score = client.decrypt(server.evaluate(client.encrypt(x)))[0]
    assert abs(score - plaintext_scores(networks["logistic"], x[None])[0]) <= TOLERANCE


def test_query_under_another_key_is_refused(networks, clients):
    score = compile_model(networks["logistic"])
    server = InferenceServer(score, clients[1].public_context)
    stranger = clients[2]  # another key holder
    with pytest.raises(ProtocolError, match="client: ciphertext made under another key"):
        server.evaluate(stranger.encrypt(np.zeros(30)))
    # relabelled with the right id, a ciphertext under other parameters does not even parse:
    relabelled = dataclasses.replace(stranger.encrypt(np.zeros(30)), key_id=server.key_id)
    with pytest.raises(ProtocolError, match="malformed CKKS"):
        server.evaluate(relabelled)
    response = server.evaluate(clients[1].encrypt(np.zeros(30)))
    with pytest.raises(ProtocolError, match="server: ciphertext made under another key"):
        stranger.decrypt(response)


@pytest.mark.parametrize(
    ("packing", "message"),
    [("sample", "client: malformed CKKS ciphertext"), ("batch", "client: malformed CKKS tensor")],
)
def test_malformed_bytes_are_refused(networks, clients, packing, message):
    client, server = served(networks, clients, "mlp")
    with pytest.raises(ProtocolError, match=message):
        server.evaluate(EncryptedQuery(client.key_id, b"\x00not a ciphertext", packing))
    with pytest.raises(ProtocolError, match=message.replace("client", "server")):
        client.decrypt(EncryptedScore(client.key_id, b"\x00not a ciphertext", packing))


def test_unknown_packing_and_wrong_feature_count_are_refused(networks, clients):
    client, server = served(networks, clients, "logistic")
    query = client.encrypt(np.zeros(30))
    with pytest.raises(ProtocolError, match="client: unknown packing 'rows'"):
        server.evaluate(dataclasses.replace(query, packing="rows"))
    with pytest.raises(ProtocolError, match=r"query has shape \[29\], the model takes \[30\]"):
        server.evaluate(client.encrypt(np.zeros(29)))
    with pytest.raises(ProtocolError, match=r"query has shape \[29\], the model takes \[30\]"):
        server.evaluate(client.encrypt_batch(np.zeros((4, 29))))


def test_context_with_the_secret_key_is_refused(networks):
    secret = ckks_context(8192, [60, 40, 60], 40).serialize(save_secret_key=True)
    with pytest.raises(ProtocolError, match="must not hold the secret key"):
        InferenceServer(compile_model(networks["logistic"]), secret)
    with pytest.raises(ProtocolError, match="not a TenSEAL context"):
        InferenceServer(compile_model(networks["logistic"]), b"garbage")


def test_context_too_shallow_or_without_galois_keys_is_refused(networks, clients):
    with pytest.raises(ProtocolError, match=r"allows 1 rescaling\(s\), the model needs 2"):
        InferenceServer(compile_model(networks["mlp"]), clients[1].public_context)
    batch_only = InferenceClient(parameters_for(1, "batch"))
    server = InferenceServer(compile_model(networks["logistic"]), batch_only.public_context)
    with pytest.raises(ProtocolError, match="sample packing needs Galois keys"):
        server.evaluate(batch_only.encrypt(np.zeros(30)))


def test_server_state_holds_no_secret(networks, clients):
    _, server = served(networks, clients, "mlp")
    assert not server._context.has_secret_key() and server._context.is_public()


def test_bad_features_are_refused_on_the_client(clients):
    with pytest.raises(ConfigError, match=r"features must have shape \[d\] \(got \(2, 30\)\)"):
        clients[1].encrypt(np.zeros((2, 30)))
    with pytest.raises(ConfigError, match="features must be finite"):
        clients[1].encrypt(np.full(30, np.nan))
    with pytest.raises(ConfigError, match=r"a batch holds 1..4096 samples \(got 4097\)"):
        clients[1].encrypt_batch(np.zeros((4097, 30)))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"samples": 0}, r"samples must be in 1..114, the breast cancer test rows \(got 0\)"),
        ({"samples": 115}, r"samples must be in 1..114"),
        ({"model": "tree"}, r"model must be one of \('logistic', 'mlp'\) \(got 'tree'\)"),
        ({"packing": "rows"}, r"packing must be one of \('sample', 'batch'\)"),
    ],
)
def test_measure_refuses_bad_arguments(arguments, message):
    with pytest.raises(ConfigError, match=message):
        measure_encrypted_inference(**arguments)
