import warnings

import numpy as np
import pytest
import torch

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment
from veil.fl.links import ClientUpdates
from veil.randomness import InsecureNoiseWarning, noise_generator
from veil.secagg.encoding import choose_encoding
from veil.secagg.links import SecAggSettings, secagg_aggregator, secagg_encoder


def key(seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed)


def updates(n=6):
    torch.manual_seed(0)
    deltas = {"w": torch.randn(n, 3, 2) * 0.1, "b": torch.randn(n, 2) * 0.1}
    return ClientUpdates(deltas, torch.ones(n), torch.arange(n))


def settings(**overrides):
    base = dict(
        neighbours=5, threshold=3, min_survivors=3, encoding=choose_encoding(32, 10.0, 6, 8)
    )
    return SecAggSettings(**{**base, **overrides})


@pytest.mark.parametrize("stage", ["share keys", "masked input", "unmasking"])
def test_chain_gives_the_survivors_mean_within_quantization_error(stage):
    s = settings(simulated_dropout=0.3, dropout_stage=stage)
    batch = updates()
    encoded, _, _ = secagg_encoder(s).apply(batch, None, key(1))
    assert encoded.bytes_per_client() == encoded.ring[0].nbytes  # before the protocol runs
    mean, _, events = secagg_aggregator(s, None).apply(encoded, 0, key(1))
    # after it: keys, shares and the masked input, as counted by the protocol run
    assert encoded.bytes_per_client() > encoded.ring[0].nbytes
    assert events == []
    # Recompute which clients dropped from the same key stream to know the survivors.
    draws = torch.rand(6, generator=_after_graph_seed(key(1)), dtype=torch.float64)
    gone_before_input = stage in ("share keys", "masked input")
    kept = [c for c in range(6) if not (gone_before_input and draws[c] < 0.3)]
    for name in batch.deltas:
        expected = batch.deltas[name][kept].mean(0)
        assert torch.allclose(mean[name], expected, atol=1e-6), name


def _after_graph_seed(k):
    torch.randint(2**62, (1,), generator=k)  # the aggregator draws the graph seed first
    return k


def test_distributed_noise_and_its_event():
    s = settings(client_noise_std=1e4)
    encoded, _, _ = secagg_encoder(s).apply(updates(), None, key(2))
    total, _, events = secagg_aggregator(s, denominator=6.0).apply(encoded, 0, key(2))
    assert len(events) == 1 and events[0].rho > 0
    clean = updates().deltas["w"].sum(0) / 6
    spread = (total["w"] - clean).abs().max().item()
    assert 0 < spread < 1.0  # noise of std 1e4·√6/scale/6 ≈ 3e-3 per coordinate


def test_empty_round_returns_zero_and_still_records_the_event():
    s = settings(client_noise_std=1e4)
    empty = ClientUpdates(
        {"w": torch.zeros(0, 2)}, torch.zeros(0), torch.zeros(0, dtype=torch.long)
    )
    encoded, _, _ = secagg_encoder(s).apply(empty, None, key())
    total, _, events = secagg_aggregator(s, 6.0).apply(encoded, 0, key())
    assert torch.equal(total["w"], torch.zeros(2)) and len(events) == 1


def test_too_many_dropouts_fail_the_round():
    s = settings(simulated_dropout=0.99, dropout_stage="masked input")
    encoded, _, _ = secagg_encoder(s).apply(updates(), None, key())
    with pytest.raises(ProtocolError, match="min_survivors"):
        secagg_aggregator(s, None).apply(encoded, 0, key())


BASE = {
    "partition": {"method": "iid", "num_clients": 5},
    "federation": {"rounds": 1},
    "secure_aggregation": {"neighbors": 4, "threshold": 3, "clip_norm": 1.0},
}


def test_config_without_dp_builds_and_claims_no_dp():
    from veil.experiment import run_experiment

    metrics = run_experiment(parse_config(BASE))
    claim = metrics["final"]["claim"]
    assert claim.startswith(
        "No differential privacy: the server sees only the masked sum of at least 3"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"secure_aggregation": {"neighbors": 4}}, "secure_aggregation.clip_norm is needed"),
        ({"secure_aggregation": {"neighbors": 9, "clip_norm": 1.0}}, "neighbors must be ≤ 4"),
        (
            {"secure_aggregation": {"threshold": 3, "min_survivors": 2, "clip_norm": 1.0}},
            "threshold ≤ min_survivors",
        ),
        ({"privacy": {"noise_multiplier": 1.0}}, "set privacy.accountant: rdp"),
        (
            {"privacy": {"noise_multiplier": 1.0, "accountant": "rdp", "adaptive_clipping": True}},
            "no adaptive_clipping",
        ),
        (
            {
                "privacy": {"noise_multiplier": 1.0, "accountant": "rdp"},
                "federation": {"rounds": 1, "poisson_rate": 0.5},
            },
            "remove poisson_rate",
        ),
        (
            {"secure_aggregation": {"bits": 8, "clip_norm": 1.0}, "model": {"name": "mlp"}},
            "bits = 8 leave no room",
        ),
    ],
)
def test_bad_secure_aggregation_configs(extra, message):
    config = {**BASE, **extra}
    if "secure_aggregation" not in extra:
        config["secure_aggregation"] = {"neighbors": 4}
    with pytest.raises(ConfigError, match=message):
        build_experiment(parse_config(config))


def test_unknown_key_and_other_task_are_refused():
    with pytest.raises(ConfigError, match=r"secure_aggregation\.neigbors"):
        parse_config({**BASE, "secure_aggregation": {"neigbors": 3}})
    with pytest.raises(ConfigError, match="apply to task federated_training"):
        parse_config({"task": "frequency_estimation", "frequency": {}, "secure_aggregation": {}})


def test_ring_rows_are_in_the_ring():
    s = settings()
    encoded, _, _ = secagg_encoder(s).apply(updates(), None, key())
    assert encoded.ring.dtype == np.uint32 and encoded.ring.shape == (6, 8)
