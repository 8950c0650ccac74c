"""Standardising features inside the secure run (`veil.mpc.scaling`)."""

import numpy as np
import pytest

from veil.config import DataConfig
from veil.errors import ConfigError
from veil.mpc import ReplicatedProtocol, run_parties
from veil.mpc.config import MpcConfig
from veil.mpc.experiment import prepare_parties
from veil.mpc.scaling import secure_sum, standardize
from veil.mpc.sharing import AdditiveProtocol
from veil.mpc.training import PartyData


def protocol_of(party):
    if party.num_parties == 3:
        return ReplicatedProtocol(party, 16)
    return AdditiveProtocol(party, 16, None)


@pytest.mark.parametrize("parties,split", [(2, "rows"), (3, "rows"), (2, "features")])
def test_hospitals_scale_raw_features_as_the_pooled_statistics_would(parties, split):
    spec, raw, (x_train, _, x_test, _) = prepare_parties(
        MpcConfig(parties=parties, split=split), DataConfig(), 0
    )
    assert spec.standardize and np.abs(raw[0].x_train).max() > 100  # raw, e.g. tumour areas

    def program(party, data):
        protocol = protocol_of(party)
        return standardize(protocol, split, spec.num_rows, data), party.total().rounds

    results = [r.value for r in run_parties(program, [(d,) for d in raw])]
    joined = np.concatenate if split == "rows" else np.hstack
    train = joined([data.x_train for data, _ in results])
    test = joined([data.x_test for data, _ in results])
    assert np.allclose(train, x_train, atol=2e-5) and np.allclose(test, x_test, atol=2e-5)
    assert results[0][0].x_train.dtype == raw[0].x_train.dtype
    rounds = results[0][1]
    assert rounds == (0 if split == "features" else 4 + (parties == 3))  # 3 parties: key set-up


def test_a_secure_sum_opens_only_the_total_tiny_or_large():
    values = [
        np.array([1.5, -2.0, 1e-6, 3e9]),
        np.array([0.25, 4.0, 2e-6, -1e9]),
        np.array([3.0, 0.5, 4e-7, 5e8]),
    ]

    def program(party):
        protocol = protocol_of(party)
        total = secure_sum(protocol, values[party.index])
        return total, protocol.party.costs["reveal"]

    for total, reveal in (r.value for r in run_parties(program, [(), (), ()])):
        assert np.allclose(total, sum(values), rtol=1e-12, atol=1e-7)
        assert reveal.rounds == 1 and reveal.bytes_received < 100  # one number per feature


def test_a_secure_sum_refuses_values_it_cannot_hold():
    def program(party):
        return secure_sum(protocol_of(party), np.array([1e11 if party.index == 1 else 0.0]))

    with pytest.raises(ConfigError, match=r"a secure sum takes values below 9\.16e\+10"):
        run_parties(program, [(), (), ()])


def test_integer_features_are_scaled_to_floats():
    ages = np.array([[30], [40], [50], [60]], np.int64)
    data = PartyData(ages, ages[:1])

    def program(party):
        return standardize(protocol_of(party), "features", 4, data)

    scaled = run_parties(program, [(), ()])[0].value
    assert np.issubdtype(scaled.x_train.dtype, np.floating)
    assert np.allclose(scaled.x_train.ravel(), [-1.342, -0.447, 0.447, 1.342], atol=1e-3)
