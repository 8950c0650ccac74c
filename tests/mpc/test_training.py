from dataclasses import replace

import numpy as np
import pytest

from veil.errors import ConfigError
from veil.mpc import OnDemandDealer, run_parties
from veil.mpc.beaver import TrustedDealer
from veil.mpc.plaintext import logits, train_plaintext
from veil.mpc.replay import replay_trace
from veil.mpc.training import (
    PartyData,
    TrainingSpec,
    mask_plan,
    secure_training_program,
    triple_plan,
)


def small_problem(parties, split, rows=36, features=4):
    """A separable toy problem split among the parties (rows or columns)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features))
    y = (x @ np.arange(1, features + 1) > 0).astype(np.int64)
    test_x, test_y = x[:6] + 0.1, y[:6]
    if split == "rows":
        cut, test_cut = (
            np.array_split(np.arange(rows), parties),
            np.array_split(np.arange(6), parties),
        )
        data = [
            PartyData(x[c], test_x[t], y[c], test_y[t]) for c, t in zip(cut, test_cut, strict=True)
        ]
        counts = ([len(c) for c in cut], [features] * parties, [len(t) for t in test_cut])
    else:
        cols = np.array_split(np.arange(features), parties)
        data = [
            PartyData(x[:, c], test_x[:, c], y if i == 0 else None, test_y if i == 0 else None)
            for i, c in enumerate(cols)
        ]
        counts = ([rows] * parties, [len(c) for c in cols], [6] * parties)
    return data, tuple(map(tuple, counts)), x, y


def run_with_on_demand_triples(spec, data):
    dealer = OnDemandDealer()
    args = [(spec, d, dealer.view(i) if spec.parties == 2 else None) for i, d in enumerate(data)]
    return [r.value for r in run_parties(secure_training_program, args)], dealer.used


@pytest.mark.parametrize(
    "model,sigmoid,release",
    [
        ("logistic", "piecewise", "model"),
        ("logistic", "taylor", "predictions"),
        ("logistic", "polynomial", "model"),
        ("mlp", "piecewise", "predictions"),
    ],
)
def test_triple_plan_is_exactly_what_training_uses(model, sigmoid, release):
    data, counts, _, _ = small_problem(2, "rows", rows=20)
    spec = TrainingSpec(
        *counts, model=model, hidden=3, sigmoid=sigmoid, epochs=1, batch_size=8, release=release
    )
    dealer = OnDemandDealer()
    args = [(spec, d, dealer.view(i)) for i, d in enumerate(data)]
    run_parties(secure_training_program, args)
    assert triple_plan(spec) == dealer.used
    assert mask_plan(spec).uses == tuple(dealer.masks.uses) and len(dealer.masks.uses) == 2 * 3


def test_a_dealer_masks_the_data_once_and_a_step_then_opens_only_the_weights_masks():
    data, counts, _, _ = small_problem(2, "rows", rows=24)
    dealt = TrainingSpec(*counts, epochs=1, batch_size=8, sigmoid="taylor")
    plan, masks = triple_plan(dealt), mask_plan(dealt)
    unmasked = replace(dealt, triples="paillier")  # no data mask: every product a triple
    assert masks.shape == (24, 5) and mask_plan(unmasked) is None
    assert sum(triple_plan(unmasked).values()) == sum(plan.values()) + len(masks.uses)
    stocks = TrustedDealer().deal(plan, masks)
    runs = {}
    for name, stock in (
        ("masked", stocks),
        ("unmasked", TrustedDealer().deal(triple_plan(unmasked))),
    ):
        args = [(dealt, d, stock[i]) for i, d in enumerate(data)]
        runs[name] = run_parties(secure_training_program, args)
    masked, plain = runs["masked"][0], runs["unmasked"][0]
    assert np.allclose(masked.value.weights[0], plain.value.weights[0], atol=1e-3)
    assert masked.costs["mask"].rounds == 1
    assert masked.costs["matmul"].bytes_sent < plain.costs["matmul"].bytes_sent / 4
    assert masks.bytes_per_party() == 8 * (24 * 5 + 3 * (5 + 8 + 8 + 5))


@pytest.mark.parametrize(
    "parties,split,sigmoid",
    [
        (2, "rows", "piecewise"),
        (3, "features", "piecewise"),
        (2, "rows", "polynomial"),
        (3, "rows", "polynomial"),
    ],
)
def test_secure_logistic_regression_follows_plaintext_step_for_step(parties, split, sigmoid):
    data, counts, x, y = small_problem(parties, split)
    spec = TrainingSpec(
        *counts, split=split, epochs=2, batch_size=8, learning_rate=0.5, sigmoid=sigmoid
    )
    outputs, _ = run_with_on_demand_triples(spec, data)
    pooled = x if split == "features" else np.vstack([d.x_train for d in data])
    labels = y if split == "features" else np.concatenate([d.y_train for d in data])
    reference = train_plaintext(
        "logistic",
        pooled,
        labels,
        hidden=0,
        epochs=2,
        batch_size=8,
        learning_rate=0.5,
        seed=0,
        sigmoid=sigmoid,
    )
    for output in outputs:
        assert np.abs(output.weights[0] - reference[0]).max() < 1e-3
        assert output.predictions is None and len(output.epoch_seconds) == 2


def test_secure_inference_tells_each_hospital_only_its_own_predictions():
    data, counts, _, _ = small_problem(2, "rows")
    spec = TrainingSpec(
        *counts,
        model="mlp",
        hidden=3,
        epochs=2,
        batch_size=8,
        learning_rate=0.5,
        release="predictions",
    )
    outputs, _ = run_with_on_demand_triples(spec, data)
    assert all(o.weights is None for o in outputs)
    assert [len(o.predictions) for o in outputs] == [3, 3]
    predicted = np.concatenate([o.predictions for o in outputs])
    assert set(np.unique(predicted)) <= {0, 1}


def test_training_spec_refuses_inconsistent_settings():
    with pytest.raises(ConfigError, match="split must be one of"):
        TrainingSpec((5, 5), (3, 3), (1, 1), split="columns")
    with pytest.raises(ConfigError, match="for 2 or 3 parties"):
        TrainingSpec((5, 5), (3,), (1, 1))
    with pytest.raises(ConfigError, match="every party holds the same rows"):
        TrainingSpec((5, 6), (3, 3), (1, 1), split="features")
    with pytest.raises(ConfigError, match="every party holds the same features"):
        TrainingSpec((5, 5), (3, 4), (1, 1))
    with pytest.raises(ConfigError, match="at least one row and one feature"):
        TrainingSpec((0, 5), (3, 3), (1, 1))
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        TrainingSpec((5, 5), (3, 3), (1, 1), epochs=0)
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        TrainingSpec((5, 5), (3, 3), (1, 1), learning_rate=0)
    with pytest.raises(ConfigError, match=r"frac_bits must be in 1\.\.18 for training"):
        TrainingSpec((5, 5), (3, 3), (1, 1), frac_bits=30)


def breast_cancer_parts(parties, split, seed=0):
    """Hospitals' shares of breast cancer, as `veil.mpc.experiment` makes them."""
    from veil.config import DataConfig
    from veil.mpc.config import MpcConfig
    from veil.mpc.experiment import prepare_parties

    return prepare_parties(MpcConfig(parties=parties, split=split), DataConfig(), seed)


@pytest.mark.slow
@pytest.mark.parametrize(
    "parties,split,model",
    [
        (2, "rows", "logistic"),
        (2, "features", "mlp"),
        (3, "rows", "logistic"),
        (3, "features", "mlp"),
        (2, "rows", "mlp"),
        (3, "rows", "mlp"),
    ],
)
def test_breast_cancer_accuracy_within_one_point_of_plaintext(parties, split, model):
    spec, data, (x, y, x_test, y_test) = breast_cancer_parts(parties, split)
    spec = replace(spec, model=model, sigmoid="piecewise")  # raw features, scaled in the run
    outputs, _ = run_with_on_demand_triples(spec, data)
    plain = train_plaintext(
        model, x, y, hidden=8, epochs=10, batch_size=32, learning_rate=0.1, seed=0
    )
    secure_accuracy = np.mean((logits(outputs[0].weights, x_test) > 0) == y_test)
    plain_accuracy = np.mean((logits(plain, x_test) > 0) == y_test)
    assert abs(secure_accuracy - plain_accuracy) <= 0.01 and secure_accuracy > 0.93


def test_two_hospitals_can_make_their_own_triples_with_paillier():
    data, counts, _, _ = small_problem(2, "rows", rows=16)
    spec = TrainingSpec(
        *counts,
        epochs=1,
        batch_size=8,
        sigmoid="taylor",
        learning_rate=0.5,
        triples="paillier",
        paillier_bits=1024,
    )
    args = [(spec, d, None) for d in data]
    outputs = [r.value for r in run_parties(secure_training_program, args)]
    reference = train_plaintext(
        "logistic",
        np.vstack([d.x_train for d in data]),
        np.concatenate([d.y_train for d in data]),
        hidden=0,
        epochs=1,
        batch_size=8,
        learning_rate=0.5,
        seed=0,
        sigmoid="taylor",
    )
    assert np.abs(outputs[0].weights[0] - reference[0]).max() < 1e-3
    assert outputs[0].paillier.triples == 4 and outputs[0].offline_seconds > 0


def test_a_recorded_run_replays_with_the_same_rounds_and_bytes():
    for parties in (2, 3):
        data, counts, _, _ = small_problem(parties, "rows")
        spec = TrainingSpec(*counts, epochs=1, batch_size=8, sigmoid="polynomial")
        dealer = OnDemandDealer()
        args = [
            (spec, d, dealer.view(i) if parties == 2 else None, True) for i, d in enumerate(data)
        ]
        run = run_parties(secure_training_program, args)
        traces = [result.value.trace for result in run]
        replay = run_parties(replay_trace, [(trace,) for trace in traces])
        for original, replayed, trace in zip(run, replay, traces, strict=True):
            assert replayed.costs["other"].rounds == len(trace) > 0
            online = set(original.costs) - {"reveal", "finish"}
            sent = sum(original.costs[name].bytes_sent for name in online)
            assert replayed.costs["other"].bytes_sent == sent - _setup_bytes(original)


def _setup_bytes(result) -> int:
    """Bytes of the three-party key set-up, which comes before the recorded online phase."""
    setup = result.costs.get("setup")
    return setup.bytes_sent if setup else 0
