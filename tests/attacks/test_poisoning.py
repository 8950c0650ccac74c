import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from veil.attacks.poisoning import (
    add_pixel_trigger,
    attack_success_rate,
    check_malicious,
    flip_labels,
    label_flip_success_rate,
    malicious_update_link,
    poison_federation,
)
from veil.data import federate, load_dataset
from veil.errors import ConfigError
from veil.fl.aggregators import weighted_mean
from veil.fl.links import ClientUpdates
from veil.models import FunctionalModel


@pytest.fixture(scope="module")
def digits():
    return federate(load_dataset("digits"), method="iid", num_clients=6, seed=0)


def test_flip_labels_default_and_mapping():
    y = np.array([0, 1, 2, 9])
    assert flip_labels(y, 10).tolist() == [9, 8, 7, 0]
    assert flip_labels(y, 10, {1: 7, 9: 1}).tolist() == [0, 7, 2, 1]
    assert y.tolist() == [0, 1, 2, 9]  # the input is untouched


@pytest.mark.parametrize(
    ("y", "classes", "mapping", "message"),
    [
        ([0, 3], 3, None, r"labels must be in \[0, 3\) \(got 0..3\)"),
        ([0, 1], 1, None, "num_classes must be >= 2"),
        ([0, 1], 3, {1: 5}, r"label mapping must map classes in \[0, 3\)"),
    ],
)
def test_flip_labels_refuses_bad_input(y, classes, mapping, message):
    with pytest.raises(ConfigError, match=message):
        flip_labels(np.array(y), classes, mapping)


def test_pixel_trigger_stamps_the_bottom_right_corner_of_images():
    x = np.zeros((2, 1, 4, 4), dtype=np.float32)
    out = add_pixel_trigger(x, size=2, value=1.0)
    expected = np.zeros((4, 4))
    expected[2:, 2:] = 1.0
    assert np.array_equal(out[0, 0], expected) and np.array_equal(out[1, 0], expected)
    assert not x.any()  # a copy


def test_pixel_trigger_sets_the_last_features_of_tabular_rows():
    out = add_pixel_trigger(np.zeros((3, 5)), size=2, value=3.0)
    assert out.tolist() == [[0, 0, 0, 3, 3]] * 3


@pytest.mark.parametrize(
    ("shape", "size", "message"),
    [
        ((2, 1, 4, 4), 0, r"trigger size must be an integer in \[1, 4\]"),
        ((2, 1, 4, 4), 5, r"trigger size must be an integer in \[1, 4\]"),
        ((3, 5), 6, r"in \[1, 5\]"),
        ((5,), 1, "x must hold rows of features or images"),
    ],
)
def test_pixel_trigger_refuses_bad_sizes(shape, size, message):
    with pytest.raises(ConfigError, match=message):
        add_pixel_trigger(np.zeros(shape), size=size)


def test_label_flip_poisons_only_the_malicious_clients_training_rows(digits):
    poisoned = poison_federation(digits, [1, 4], "label_flip")
    for c, (before, after) in enumerate(zip(digits.clients, poisoned.clients, strict=True)):
        flipped = 9 - before.y_train if c in (1, 4) else before.y_train
        assert np.array_equal(after.y_train, flipped)
        assert np.array_equal(after.x_train, before.x_train)
        assert np.array_equal(after.y_test, before.y_test)
    assert np.array_equal(poisoned.y_test, digits.y_test)


def test_backdoor_adds_triggered_copies_relabelled_to_the_target(digits):
    poisoned = poison_federation(digits, [2], "backdoor", target_label=3, poison_fraction=0.5)
    before, after = digits.clients[2], poisoned.clients[2]
    m = len(before.y_train)
    candidates = int((before.y_train != 3).sum())
    added = len(after.y_train) - m
    assert added == round(0.5 * candidates)
    assert np.array_equal(after.x_train[:m], before.x_train)  # clean rows kept
    assert np.all(after.y_train[m:] == 3)
    copies = after.x_train[m:]
    assert np.all(copies[:, :, -2:, -2:] == 1.0)
    # every copy is one of the client's non-target rows, stamped
    stamped = add_pixel_trigger(before.x_train[before.y_train != 3])
    assert all(any(np.array_equal(c, s) for s in stamped) for c in copies)
    assert poisoned.clients[0] is digits.clients[0]


@pytest.mark.parametrize(
    ("malicious", "attack", "kwargs", "message"),
    [
        ([0], "model_replacement", {}, r"data attack must be one of \('label_flip', 'backdoor'\)"),
        ([6], "label_flip", {}, r"distinct client ids \(>= 0, < 6\) \(got \[6\]\)"),
        ([1, 1], "label_flip", {}, "distinct client ids"),
        ([], "label_flip", {}, "distinct client ids"),
        ([0], "backdoor", {"target_label": 10}, r"target_label must be in \[0, 10\)"),
        ([0], "backdoor", {"poison_fraction": 0.0}, r"poison_fraction must be in \(0, 1\]"),
    ],
)
def test_poison_federation_refuses_bad_input(digits, malicious, attack, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        poison_federation(digits, malicious, attack, **kwargs)


def test_backdoor_needs_a_row_outside_the_target_class(digits):
    only_zeros = dataclasses.replace(digits.clients[0], y_train=0 * digits.clients[0].y_train)
    data = dataclasses.replace(digits, clients=(only_zeros, *digits.clients[1:]))
    with pytest.raises(ConfigError, match="client 0 has no training row outside the target"):
        poison_federation(data, [0], "backdoor", target_label=0)


def batch(deltas, weights, ids=None) -> ClientUpdates:
    deltas = torch.as_tensor(deltas, dtype=torch.float32)
    ids = torch.arange(len(weights)) if ids is None else torch.as_tensor(ids)
    return ClientUpdates({"w": deltas}, torch.as_tensor(weights, dtype=torch.float32), ids)


def rewrite(link, updates) -> list[list[float]]:
    out, _, events = link.apply(updates, link.init({}), None)
    assert events == [] and torch.equal(out.weights, updates.weights)
    return out.deltas["w"].tolist()


def test_update_attacks_rewrite_only_the_malicious_rows():
    updates = batch([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [1, 1, 2], ids=[4, 7, 9])
    assert rewrite(malicious_update_link([7], "sign_flip"), updates) == [
        [1, 2], [-3, -4], [5, 6],
    ]  # fmt: skip
    assert rewrite(malicious_update_link([7, 9], "sign_flip", 2.0), updates) == [
        [1, 2], [-6, -8], [-10, -12],
    ]  # fmt: skip
    assert rewrite(malicious_update_link([4], "scale", 10.0), updates) == [
        [10, 20], [3, 4], [5, 6],
    ]  # fmt: skip
    assert malicious_update_link([5], "sign_flip").apply(updates, None, None)[0] is updates


def test_model_replacement_boost_replaces_the_fedavg_model():
    # Bagdasaryan et al.: honest clients near convergence send ~0; the attacker sends γ(X − G).
    target = torch.tensor([0.5, -1.5])  # X − G, the attacker's model minus the global one
    updates = batch([[0.0, 0.0], target.tolist(), [0.0, 0.0]], [1, 2, 3])
    for server_lr in (1.0, 0.5):
        link = malicious_update_link([1], "model_replacement", server_lr=server_lr)
        boosted, _, _ = link.apply(updates, None, None)
        mean, _, _ = weighted_mean().apply(boosted, None, None)
        assert torch.allclose(server_lr * mean["w"], target)  # G + η·mean = X
    fixed = malicious_update_link([1], "model_replacement", 3.0)
    assert rewrite(fixed, updates)[1] == [1.5, -4.5]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([0], "label_flip"), {}, r"update attack must be one of \('sign_flip', 'scale'"),
        (([0], "scale"), {}, "attack 'scale' needs a factor"),
        (([0], "sign_flip", -1.0), {}, "attack factor must be > 0"),
        (([0], "model_replacement"), {"server_lr": 0.0}, "server_lr must be > 0"),
        (([-1], "sign_flip"), {}, r"distinct client ids \(>= 0\)"),
    ],
)
def test_malicious_update_link_refuses_bad_input(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        malicious_update_link(*args, **kwargs)


def test_check_malicious_sorts_the_ids():
    assert check_malicious(np.array([5, 2]), 6) == [2, 5]


def linear_model(weight) -> tuple[FunctionalModel, dict]:
    """A 3-feature, 3-class linear model with the given weight (no bias)."""
    module = nn.Sequential(nn.Linear(3, 3, bias=False))
    params = {"0.weight": torch.tensor(weight, dtype=torch.float32)}
    return FunctionalModel(module), params


# Rows of class 1 are e0, of class 2 are e1; class 0 (the target) rows are zero.
X = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
Y = np.array([1, 2, 1, 0])


def test_attack_success_rate_both_ways():
    # Backdoored: the last feature (the trigger, set to 5) votes for class 0.
    model, backdoored = linear_model([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    trigger = {"target_label": 0, "trigger_size": 1, "trigger_value": 5.0}
    assert attack_success_rate(model, backdoored, X, Y, **trigger) == 1.0
    _, clean = linear_model([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert attack_success_rate(model, clean, X, Y, **trigger) == 0.0


def test_attack_success_rate_needs_a_row_outside_the_target():
    model, params = linear_model(np.eye(3))
    with pytest.raises(ConfigError, match="no test row has a label other than the target 0"):
        attack_success_rate(model, params, X[:1], np.array([0]), target_label=0)


def test_label_flip_success_rate_both_ways():
    model, honest = linear_model([[0, 0, 0], [1, 0, 0], [0, 1, 0]])  # predicts the true label
    assert label_flip_success_rate(model, honest, X, Y, num_classes=3) == 0.0  # y → 2 − y
    _, to_target = linear_model([[1, 0, 0], [0, 0, 0], [0, 1, 0]])  # class 1 rows → 0
    assert label_flip_success_rate(model, to_target, X, Y, num_classes=3, mapping={1: 0}) == 1.0
    assert label_flip_success_rate(model, honest, X, Y, num_classes=3, mapping={1: 0}) == 0.0


def test_label_flip_success_rate_needs_a_moved_label():
    model, params = linear_model(np.eye(3))
    with pytest.raises(ConfigError, match="the label mapping changes no test row's label"):
        label_flip_success_rate(model, params, X, Y, num_classes=3, mapping={0: 0})
