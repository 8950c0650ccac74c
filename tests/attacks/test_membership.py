import math
import warnings

import numpy as np
import pytest
import torch
from torch.func import grad
from torch.nn import functional as F

from veil.attacks.membership import (
    ATTACKS,
    OFFLINE_A_GRID,
    lira_scores,
    logit_confidence,
    loss_threshold_scores,
    membership_auc,
    rmia_scores,
    run_membership_attack,
    tune_offline_a,
)
from veil.attacks.membership_report import MembershipResult
from veil.attacks.roc import roc_summary
from veil.config import parse_config
from veil.data import federate, load_dataset
from veil.errors import ConfigError
from veil.models import FunctionalModel, build_model
from veil.randomness import InsecureNoiseWarning

torch.set_num_threads(1)
LOG3 = math.log(3.0)

# A small training set trained long: digits, one client holding 10% of the rows (half of them
# members), an MLP, 100 epochs. The same run with DP-SGD at ε = 1 is the defended model.
OVERFIT = {
    "name": "overfit-digits",
    "data": {"dataset": "digits", "test_fraction": 0.9},
    "partition": {"method": "iid", "num_clients": 1},
    "model": {"name": "mlp", "hidden": [64]},
    "federation": {"rounds": 1},
    "client": {"local_epochs": 100, "batch_size": 32, "lr": 0.1},
}
DP_SGD = {"level": "sample", "target_epsilon": 1.0, "clip_norm": 1.0, "noise_seed_for_testing": 0}
CLIENT_DP = {"clip_norm": 0.1, "noise_seed_for_testing": 0}  # DP-FedAvg, as hospitals.yaml


def _config(privacy=None, **sections):
    return parse_config({**OVERFIT, **sections, **({"privacy": privacy} if privacy else {})})


# --- signals and the loss attack ---------------------------------------------------------


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.randn(2, 6, 4, dtype=torch.float64)  # two models, six records, four classes
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    p = logits.softmax(-1)[..., torch.arange(6), labels]
    np.testing.assert_allclose(logit_confidence(logits, labels), torch.log(p / (1 - p)).numpy())


def test_logit_confidence_stays_finite_where_probabilities_round_to_one():
    phi = logit_confidence(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]), np.array([0, 0]))
    np.testing.assert_allclose(phi, [2000.0, -2000.0])


@pytest.mark.parametrize(
    ("logits", "labels"),
    [(np.zeros(3), np.zeros(3, int)), (np.zeros((3, 2)), np.zeros(4, int))],
)
def test_logit_confidence_rejects_mismatched_shapes(logits, labels):
    with pytest.raises(ConfigError, match=r"logits must be \[..., n, classes\]"):
        logit_confidence(logits, labels)


def _digits_rows(n: int, seed: int = 0):
    data = load_dataset("digits")
    rows = np.random.default_rng(seed).permutation(data.num_rows)[: 2 * n]
    x, y = data.x[rows] / 16.0, data.y[rows]
    return (x[:n], y[:n]), (x[n:], y[n:])


def _train(model: FunctionalModel, x, y, steps: int):
    """Full-batch gradient descent on (x, y)."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    params = model.init_params()
    loss_gradient = grad(lambda p: F.cross_entropy(model.apply(p, x), y))
    for _ in range(steps):
        params = {
            k: v - 0.5 * g
            for (k, v), g in zip(params.items(), loss_gradient(params).values(), strict=True)
        }
    return params


def test_loss_threshold_scores_are_minus_the_loss():
    torch.manual_seed(0)
    model = FunctionalModel(build_model("mlp", (1, 8, 8), 10, hidden=[16]))
    (x, y), _ = _digits_rows(20)
    params = model.init_params()
    expected = -F.cross_entropy(
        model.apply(params, torch.as_tensor(x)), torch.as_tensor(y), reduction="none"
    )
    np.testing.assert_allclose(
        loss_threshold_scores(model, params, x, y), expected.numpy(), rtol=1e-6
    )


def test_membership_auc_finds_an_overfit_model_and_not_an_untrained_one():
    torch.manual_seed(0)
    model = FunctionalModel(build_model("mlp", (1, 8, 8), 10, hidden=[64]))
    members, non_members = _digits_rows(60)
    overfit = _train(model, *members, steps=300)
    assert membership_auc(model, overfit, members, non_members).auc > 0.7
    untrained = membership_auc(model, model.init_params(), members, non_members)
    assert abs(untrained.auc - 0.5) < 0.12
    assert untrained.num_members == untrained.num_non_members == 60


# --- LiRA and RMIA on hand-made signals -----------------------------------------------------

# Two records, four shadow models (0 and 1 trained on both records, 2 and 3 on neither).
SHADOW = np.array([[1.0, 0.0], [3.0, 0.0], [-1.0, 5.0], [1.0, 5.0]])
IN_MASK = np.array([[True, True], [True, True], [False, False], [False, False]])


def test_lira_known_answers():
    target = np.array([1.0, 2.0])
    # record 0: IN ~ N(2, 1), OUT ~ N(0, 1): at φ = 1 both densities are equal
    online = lira_scores(target, SHADOW, IN_MASK, online=True, global_variance=False)
    assert online[0] == pytest.approx(0.0, abs=1e-12)
    offline = lira_scores(target, SHADOW, IN_MASK, online=False, global_variance=False)
    assert offline[0] == pytest.approx(math.log(0.8413447460685429))
    # pooled: σ² = (1 + 1 + 0 + 0) / 4 on each side; record 0 at φ = 2: 0 + (2 - 0)² / (2 · ½)
    pooled = lira_scores(np.array([2.0, 0.0]), SHADOW, IN_MASK, online=True)
    assert pooled[0] == pytest.approx(4.0)


def _synthetic_signals(effect: float, n: int = 2000, models: int = 16, seed: int = 0):
    """φ = record difficulty + effect·(trained on it) + noise, for the target and the shadows."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 2, n)
    in_mask = np.zeros((models, n), bool)
    in_mask[0::2] = rng.random((models // 2, n)) < 0.5
    in_mask[1::2] = ~in_mask[0::2]
    shadow = difficulty + effect * in_mask + rng.normal(0, 0.5, (models, n))
    is_member = rng.random(n) < 0.5
    target = difficulty + effect * is_member + rng.normal(0, 0.5, n)
    z_difficulty = rng.normal(0, 2, 500)
    target_z = z_difficulty + rng.normal(0, 0.5, 500)
    shadow_z = z_difficulty + rng.normal(0, 0.5, (models, 500))
    return target, shadow, in_mask, is_member, target_z, shadow_z


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("global_variance", [True, False])
def test_lira_finds_members_only_when_training_moves_their_confidence(online, global_variance):
    for effect, low, high in ((1.5, 0.8, 1.0), (0.0, 0.45, 0.55)):
        target, shadow, in_mask, is_member, _, _ = _synthetic_signals(effect)
        scores = lira_scores(
            target, shadow, in_mask, online=online, global_variance=global_variance
        )
        assert low < roc_summary(scores, is_member).auc < high, effect


def test_rmia_known_answers():
    # x: p_target = 0.75, an IN reference at 0.75, an OUT one at 0.25.
    # z: p_target = (0.5, 0.75); references (0.5, 0.5) and (0.5, 0.25).
    args = (
        np.array([LOG3]),
        np.array([[LOG3], [-LOG3]]),
        np.array([[True], [False]]),
        np.array([0.0, LOG3]),
        np.array([[0.0, 0.0], [0.0, -LOG3]]),
    )
    # Pr(x) = 0.5 online and 0.4375 offline (a = 0.5): ratio_x = 1.5 and 1.714...;
    # Pr(z) = (0.625, 0.53125): ratio_z = (0.8, 1.4118)
    for gamma, expected in ((1.0, 1.0), (1.5, 0.5), (2.0, 0.0)):
        online = rmia_scores(*args, online=True, offline_a=0.5, gamma=gamma)
        assert online[0] == pytest.approx(expected), gamma
    for gamma, expected in ((1.2, 1.0), (1.5, 0.5), (2.2, 0.0)):
        offline = rmia_scores(*args, online=False, offline_a=0.5, gamma=gamma)
        assert offline[0] == pytest.approx(expected), gamma


@pytest.mark.parametrize("online", [True, False])
def test_rmia_finds_members_only_when_training_moves_their_confidence(online):
    for effect, low, high in ((1.5, 0.75, 1.0), (0.0, 0.45, 0.55)):
        target, shadow, in_mask, is_member, target_z, shadow_z = _synthetic_signals(effect)
        scores = rmia_scores(target, shadow, in_mask, target_z, shadow_z, online=online)
        assert low < roc_summary(scores, is_member).auc < high, effect


def test_tune_offline_a_picks_a_grid_value_that_attacks_a_shadow_model_well():
    _, shadow, in_mask, _, _, shadow_z = _synthetic_signals(1.5, n=500)
    a = tune_offline_a(shadow, in_mask, shadow_z)
    assert a in OFFLINE_A_GRID
    assert tune_offline_a(shadow, in_mask, shadow_z, grid=(0.25,)) == 0.25


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lira_scores(np.zeros(3), SHADOW, IN_MASK, online=True), r"target signals \[n\]"),
        (lambda: lira_scores(np.zeros(2), SHADOW, IN_MASK.astype(int), online=True), "boolean"),
        (lambda: lira_scores(np.zeros(2), SHADOW, IN_MASK[:3], online=True), "in_mask must be"),
        (
            lambda: lira_scores(np.array([np.nan, 0]), SHADOW, IN_MASK, online=True),
            "must be finite",
        ),
        (lambda: lira_scores(np.zeros(2), SHADOW, ~IN_MASK | True, online=False), "no OUT model"),
        (lambda: lira_scores(np.zeros(2), SHADOW, IN_MASK & False, online=True), "no IN model"),
        (
            lambda: lira_scores(
                np.zeros(2), SHADOW[1:], IN_MASK[1:], online=True, global_variance=False
            ),
            "at least 2 IN shadow models",
        ),
        (lambda: rmia_scores(*_rmia_args(), online=True, offline_a=1.5), r"offline_a .* \[0, 1\]"),
        (lambda: rmia_scores(*_rmia_args(), online=True, gamma=0), "gamma must be > 0"),
        (lambda: rmia_scores(*_rmia_args(z_models=3), online=True), "same 4 reference models"),
        (lambda: tune_offline_a(SHADOW[:3], IN_MASK[:3], SHADOW[:3]), "at least 4 reference"),
        (lambda: tune_offline_a(SHADOW, IN_MASK, SHADOW, grid=()), "non-empty grid"),
    ],
)
def test_signal_attacks_reject_bad_input(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def _rmia_args(z_models: int = 4):
    return np.zeros(2), SHADOW, IN_MASK, np.zeros(3), np.zeros((z_models, 3))


# --- attacking a run --------------------------------------------------------------------------


def test_run_membership_attack_finds_members_of_an_overfit_run():
    result = run_membership_attack(_config(), num_shadow=8, seed=0)
    assert set(result.attacks) == set(ATTACKS)
    aucs = {name: roc.auc for name, roc in result.attacks.items()}
    assert aucs["loss"] > 0.55, aucs
    assert min(aucs[name] for name in ATTACKS[1:]) > 0.7, aucs
    assert result.epsilon is None and result.delta is None
    assert result.member_accuracy > result.non_member_accuracy
    assert 0 <= result.offline_a <= 1 and result.num_shadow == 8


@pytest.mark.slow
def test_run_membership_attack_loses_the_members_under_dp_sgd_at_epsilon_one():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        result = run_membership_attack(_config(DP_SGD), num_shadow=8, seed=0)
    assert result.epsilon <= 1.0
    aucs = {name: roc.auc for name, roc in result.attacks.items()}
    assert max(aucs.values()) <= 0.55, aucs


def test_loss_attack_loses_the_members_under_dp_sgd_at_epsilon_one():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        result = run_membership_attack(_config(DP_SGD), attacks=("loss",), seed=0)
    assert result.epsilon <= 1.0 and result.num_shadow == 0 and result.offline_a is None
    assert result.attacks["loss"].auc <= 0.55


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attacks": ("loss", "lira2")}, "attacks must be distinct names"),
        ({"attacks": ("loss", "loss")}, "attacks must be distinct names"),
        ({"attacks": ()}, "attacks must be distinct names"),
        ({"num_shadow": 5}, "num_shadow must be an even number >= 4"),
        ({"num_shadow": 2}, "num_shadow must be an even number >= 4"),
    ],
)
def test_run_membership_attack_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_membership_attack(_config(), **kwargs)


def test_run_membership_attack_rejects_secure_aggregation_and_tiny_clients():
    secure = parse_config(
        {
            "privacy": {"target_epsilon": 8.0, "clip_norm": 0.1},
            "secure_aggregation": {"protocol": "secagg+"},
        }
    )
    with pytest.raises(ConfigError, match="remove secure_aggregation"):
        run_membership_attack(secure)
    tiny = parse_config({"partition": {"method": "iid", "num_clients": 400}})
    with pytest.raises(ConfigError, match="at least 2 training rows"):
        run_membership_attack(tiny)


def test_membership_result_json_and_report_section():
    target, _, _, is_member, _, _ = _synthetic_signals(1.0, n=300)
    roc = roc_summary(target, is_member)
    result = MembershipResult(
        name="<hospitals>",
        attacks={"lira": roc, "loss": roc},
        epsilon=0.8,
        delta=1e-5,
        accuracy=0.9,
        member_accuracy=1.0,
        non_member_accuracy=0.85,
        num_shadow=16,
        offline_a=0.3,
        seconds=1.0,
    )
    record = result.to_json()
    assert set(record["attacks"]["lira"]) >= {"auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr"}
    assert record["epsilon"] == 0.8 and record["num_shadow"] == 16
    assert "fpr" not in record["attacks"]["lira"]
    assert "fpr" in result.to_json(max_points=20)["attacks"]["loss"]
    section = result.report_section()
    assert section.title == "Membership inference"
    assert "&lt;hospitals&gt;" in section.html and "<hospitals>" not in section.html
    assert "(ε = 0.8, δ = 1e-05)-DP" in section.html
    assert "LiRA online (Carlini et al. 2022)" in section.html and "<svg" in section.html


def test_federated_halves_keep_every_client():
    # five hospitals with label skew: each client keeps a stratified half of its own rows
    data = federate(load_dataset("breast_cancer"), method="dirichlet", num_clients=5, alpha=0.5)
    config = parse_config(
        {
            "partition": {"method": "dirichlet", "num_clients": 5, "alpha": 0.5},
            "federation": {"rounds": 2},
        }
    )
    result = run_membership_attack(config, attacks=("loss",))
    roc = result.attacks["loss"]
    assert roc.num_members + roc.num_non_members == data.num_train_rows
    assert abs(roc.num_members - roc.num_non_members) <= data.num_clients * 2


@pytest.mark.slow
def test_calibrated_attacks_find_members_of_federated_hospitals_and_lose_them_at_epsilon_one():
    # Five hospitals (breast cancer, Dirichlet label skew), FedAvg of an MLP: the hospitals
    # example with the model and training proposed in docs/membership-inference.md.
    hospitals = {
        "data": {"dataset": "breast_cancer", "test_fraction": 0.2},
        "partition": {"method": "dirichlet", "num_clients": 5, "alpha": 0.5},
        "model": {"name": "mlp", "hidden": [128]},
        "federation": {"rounds": 15, "clients_per_round": 5},
        "client": {"local_epochs": 3, "batch_size": 16, "lr": 0.1},
    }

    # One run's AUC varies by about ±0.025 here (~285 members); compare means over 3 splits.
    def mean_aucs(config):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureNoiseWarning)
            results = [run_membership_attack(parse_config(config), seed=s) for s in range(3)]
        return {name: np.mean([r.attacks[name].auc for r in results]) for name in ATTACKS}

    assert mean_aucs(hospitals)["rmia"] > 0.55
    private = mean_aucs({**hospitals, "privacy": {**CLIENT_DP, "target_epsilon": 1.0}})
    assert max(private.values()) <= 0.55, private
