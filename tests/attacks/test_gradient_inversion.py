import pytest
import torch
import torch.nn.functional as F
from torch import nn

from veil.attacks.gradient_inversion import (
    cross_entropy_gradient,
    dlg,
    gradient_attack_scores,
    idlg_label,
    inverting_gradients,
    last_linear_weight,
    reconstruct,
    total_variation,
)
from veil.attacks.gradient_inversion_experiment import dp_fedavg_defence
from veil.attacks.image_metrics import psnr
from veil.data import federate, load_dataset
from veil.errors import ConfigError
from veil.experiment import torch_threads
from veil.models import FunctionalModel, build_model
from veil.randomness import InsecureNoiseWarning

DIGIT_SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: torch's thread pool only adds start-up cost (and stalls on a busy host)."""
    with torch_threads(1):
        yield


def _model(name="mlp", shape=DIGIT_SHAPE, classes=10, activation="sigmoid", seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = FunctionalModel(build_model(name, shape, classes, activation=activation))
    return network, network.init_params()


@pytest.fixture(scope="module")
def digits():
    rows = federate(load_dataset("digits"), method="iid", num_clients=1, test_fraction=0.0)
    client = rows.clients[0]
    return torch.from_numpy(client.x_train[:20]), torch.from_numpy(client.y_train[:20])


def test_cross_entropy_gradient_is_the_modules_own_gradient(digits):
    x, y = digits
    network, params = _model(activation="relu")
    update = cross_entropy_gradient(network, params, x[:5], y[:5])
    F.cross_entropy(network.module(x[:5]), y[:5]).backward()
    for name, parameter in network.module.named_parameters():
        torch.testing.assert_close(update[name], parameter.grad)


def test_last_linear_weight():
    assert last_linear_weight(_model()[1]) == "3.weight"
    assert last_linear_weight(_model("cnn")[1]) == "7.weight"
    with pytest.raises(ConfigError, match="no linear layer"):
        last_linear_weight({"bias": torch.zeros(3)})


@pytest.mark.parametrize(
    ("name", "shape", "classes", "activation"),
    [
        ("mlp", DIGIT_SHAPE, 10, "relu"),
        ("mlp", DIGIT_SHAPE, 10, "tanh"),  # the last layer's input has both signs
        ("cnn", DIGIT_SHAPE, 10, "relu"),
        ("logistic", (30,), 10, "relu"),
        ("logistic", (30,), 2, "relu"),  # two classes: the bias gradient decides
        ("mlp", (30,), 2, "sigmoid"),
    ],
)
def test_idlg_recovers_every_label_of_single_sample_gradients(name, shape, classes, activation):
    generator = torch.Generator().manual_seed(1)
    for seed in range(2):
        network, params = _model(name, shape, classes, activation, seed=seed)
        weight = last_linear_weight(params)
        x = torch.randn((50, *shape), generator=generator)
        y = torch.randint(classes, (50,), generator=generator)
        for i in range(50):
            update = cross_entropy_gradient(network, params, x[[i]], y[[i]])
            assert idlg_label(update, weight) == int(y[i])


def test_idlg_without_bias_two_classes_reads_row_sums():
    # Zhao et al.'s own case: non-negative inputs to the last layer, no bias.
    weight = torch.randn(2, 4)
    module = nn.Sequential(nn.Linear(4, 2, bias=False))
    network = FunctionalModel(module)
    params = {"0.weight": weight}
    x = torch.rand(10, 4)
    for i in range(10):
        label = torch.tensor([i % 2])
        update = cross_entropy_gradient(network, params, x[[i]], label)
        assert idlg_label(update, "0.weight") == i % 2


def test_idlg_rejects_bad_input():
    with pytest.raises(ConfigError, match="'w' is not among the gradients' names"):
        idlg_label({"b": torch.zeros(3)}, "w")
    with pytest.raises(ConfigError, match="must be a linear layer's weight"):
        idlg_label({"w": torch.zeros(3)}, "w")


def test_total_variation_by_hand():
    image = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # columns differ by 1, rows agree
    assert float(total_variation(image)) == pytest.approx(1.0)


def test_dlg_and_idlg_recover_a_digit(digits):
    x, y = digits
    network, params = _model()
    update = cross_entropy_gradient(network, params, x[[0]], y[[0]])
    found = dlg(network, params, update, DIGIT_SHAPE, 10, steps=100, seed=0)
    assert psnr(found.x.clamp(0, 1), x[[0]], 1.0) > 30
    assert int(found.label[0]) == int(y[0])
    fixed = dlg(network, params, update, DIGIT_SHAPE, 10, steps=100, seed=0, label=y[[0]])
    assert psnr(fixed.x.clamp(0, 1), x[[0]], 1.0) > 30
    assert fixed.loss < 1e-6


def test_attacks_are_reproducible_from_their_seed(digits):
    x, y = digits
    network, params = _model()
    update = cross_entropy_gradient(network, params, x[[1]], y[[1]])
    runs = [dlg(network, params, update, DIGIT_SHAPE, 10, steps=3, seed=s) for s in (5, 5, 6)]
    torch.testing.assert_close(runs[0].x, runs[1].x)
    assert not torch.equal(runs[0].x, runs[2].x)


def test_inverting_gradients_recovers_a_digit_inside_the_box(digits):
    x, y = digits
    network, params = _model()
    update = cross_entropy_gradient(network, params, x[[2]], y[[2]])
    found = inverting_gradients(
        network, params, update, DIGIT_SHAPE, int(y[2]), steps=100, tv_weight=1e-4, bounds=(0, 1)
    )
    assert psnr(found.x, x[[2]], 1.0) > 30
    assert float(found.x.min()) >= 0 and float(found.x.max()) <= 1


def test_attacks_reject_bad_input(digits):
    x, y = digits
    network, params = _model()
    update = cross_entropy_gradient(network, params, x[[0]], y[[0]])
    with pytest.raises(ConfigError, match=r"missing \['3.bias'\]"):
        dlg(network, params, {k: v for k, v in update.items() if k != "3.bias"}, DIGIT_SHAPE, 10)
    with pytest.raises(ConfigError, match=r"target_gradients\['1.weight'\] has shape"):
        dlg(network, params, {**update, "1.weight": torch.zeros(3)}, DIGIT_SHAPE, 10)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        dlg(network, params, {**update, "3.bias": update["3.bias"] / 0}, DIGIT_SHAPE, 10)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        dlg(network, params, update, DIGIT_SHAPE, 10, steps=0)
    with pytest.raises(ConfigError, match="num_classes must be >= 2"):
        dlg(network, params, update, DIGIT_SHAPE, 1)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        dlg(network, params, update, DIGIT_SHAPE, 10, batch_size=0)
    with pytest.raises(ConfigError, match=r"label must hold 1 class indices in 0..9"):
        dlg(network, params, update, DIGIT_SHAPE, 10, label=torch.tensor([10]))
    with pytest.raises(ConfigError, match=r"label must hold 1 class indices in 0..9"):
        inverting_gradients(network, params, update, DIGIT_SHAPE, -1)
    with pytest.raises(ConfigError, match="tv_weight must be >= 0"):
        inverting_gradients(network, params, update, DIGIT_SHAPE, 0, tv_weight=-1.0)
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        inverting_gradients(network, params, update, DIGIT_SHAPE, 0, learning_rate=0.0)
    with pytest.raises(ConfigError, match=r"bounds must be \(low, high\)"):
        inverting_gradients(network, params, update, DIGIT_SHAPE, 0, bounds=(1.0, 0.0))
    vector_network, vector_params = _model("logistic", (30,), 2)
    vector_update = cross_entropy_gradient(
        vector_network, vector_params, torch.zeros(1, 30), torch.tensor([1])
    )
    with pytest.raises(ConfigError, match="total-variation prior needs images"):
        inverting_gradients(vector_network, vector_params, vector_update, (30,), 1)


def test_reconstruct_dispatches_and_validates(digits):
    x, y = digits
    network, params = _model()
    update = cross_entropy_gradient(network, params, x[[3]], y[[3]])
    found = reconstruct(network, params, update, DIGIT_SHAPE, y[[3]], method="idlg", steps=50)
    assert int(found.label[0]) == int(y[3])
    with pytest.raises(ConfigError, match="method must be one of"):
        reconstruct(network, params, update, DIGIT_SHAPE, y[[3]], method="gan")
    batch_update = cross_entropy_gradient(network, params, x[:2], y[:2])
    with pytest.raises(ConfigError, match="idlg recovers the label of a single input"):
        reconstruct(network, params, batch_update, DIGIT_SHAPE, y[:2], method="idlg")


@pytest.mark.parametrize("method", ["dlg", "inverting_gradients"])
def test_scores_show_leakage_without_defence_and_none_with_clip_and_noise(digits, method):
    x, y = digits
    network, params = _model()
    options = {"method": method, "steps": 100, "bounds": (0.0, 1.0)}
    open_scores = gradient_attack_scores(network, params, x[[4]], y[[4]], **options)
    assert open_scores["psnr"] > 30 and open_scores["ssim"] > 0.95
    assert open_scores["label_correct"] is True
    with pytest.warns(InsecureNoiseWarning):
        defence = dp_fedavg_defence(1.0, 1.0, noise_seed_for_testing=0)
    noised = gradient_attack_scores(network, params, x[[4]], y[[4]], defence=defence, **options)
    assert noised["psnr"] < 10 and noised["ssim"] < 0.6


def test_scores_on_tabular_data():
    rows = federate(load_dataset("breast_cancer"), method="iid", num_clients=1, test_fraction=0.0)
    x, y = torch.from_numpy(rows.clients[0].x_train), torch.from_numpy(rows.clients[0].y_train)
    network, params = _model("logistic", (30,), 2)
    data_range = float(x.max() - x.min())
    scores = gradient_attack_scores(
        network, params, x[[0]], y[[0]], steps=100, data_range=data_range
    )
    assert scores["psnr"] > 30
    assert scores["ssim"] is None
    assert scores["label_correct"] is True
    batch = gradient_attack_scores(network, params, x[:2], y[:2], method="dlg", steps=20)
    assert batch["label_correct"] is None


def test_scores_reject_bad_input(digits):
    x, y = digits
    network, params = _model()
    with pytest.raises(ConfigError, match=r"x must be a batch \[B, \*input_shape\]"):
        gradient_attack_scores(network, params, x[0, 0, 0], y[:1])
    with pytest.raises(ConfigError, match=r"y must have shape \[2\]"):
        gradient_attack_scores(network, params, x[:2], y[:3])
    with pytest.raises(ConfigError, match=r"bounds must be \(low, high\)"):
        gradient_attack_scores(network, params, x[:1], y[:1], bounds=(0.0, 0.0))
