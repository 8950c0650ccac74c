"""What the server sees of one client's update, through the run's own chains."""

import warnings

import torch

from veil.attacks.gradient_inversion import cross_entropy_gradient
from veil.audit.server_view import server_view_defence
from veil.config import parse_config
from veil.experiment import build_experiment
from veil.params import flatten
from veil.randomness import InsecureNoiseWarning


def gradients(experiment, count):
    model, params = experiment.model, experiment.state.params
    rows = [(torch.as_tensor(c.x_train[:1]), torch.as_tensor(c.y_train[:1])) for c in
            experiment.data.clients[:count]]  # fmt: skip
    return [cross_entropy_gradient(model, params, x, y) for x, y in rows]


def test_without_protection_the_server_sees_the_update_itself():
    experiment = build_experiment(parse_config({}))
    target, *others = gradients(experiment, 5)
    view = server_view_defence(experiment, others)(target)
    torch.testing.assert_close(flatten(view), flatten(target))


def test_under_secagg_the_server_sees_only_the_mean():
    experiment = build_experiment(parse_config({"secure_aggregation": {"clip_norm": 100.0}}))
    grads = gradients(experiment, 5)
    view = server_view_defence(experiment, grads[1:])(grads[0])
    mean = torch.stack([flatten(g) for g in grads]).mean(0)
    torch.testing.assert_close(flatten(view), mean, atol=1e-4, rtol=0)


def test_under_dpsgd_the_server_sees_one_clipped_and_noised_step():
    privacy = {"level": "sample", "noise_multiplier": 1e-6, "clip_norm": 0.01,
               "noise_seed_for_testing": 0}  # fmt: skip
    experiment = build_experiment(parse_config({"privacy": privacy}))
    target, *others = gradients(experiment, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        view = flatten(server_view_defence(experiment, others)(target))
    expected = flatten(target) * 0.01 / flatten(target).norm() / experiment.plan.local.batch_size
    torch.testing.assert_close(view, expected, atol=1e-6, rtol=1e-3)
