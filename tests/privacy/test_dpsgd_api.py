import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from veil.data import load_dataset
from veil.errors import ConfigError, PrivacyBudgetExceeded
from veil.models import mlp
from veil.privacy import dpsgd_api
from veil.privacy.accounting import dpsgd_epsilon
from veil.privacy.dpsgd_api import DPOptimizer, make_private
from veil.privacy.ledger import LedgerSettings, PrivacyLedger
from veil.randomness import InsecureNoiseWarning

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")


def toy_setup(rows=40, batch_size=8):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(rows, 5), torch.randint(0, 3, (rows,)))
    model = mlp(5, [4], 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, DataLoader(data, batch_size=batch_size)


def private(*, loader_rows=40, batch_size=8, **kwargs):
    model, optimizer, loader = toy_setup(loader_rows, batch_size)
    arguments = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5}
    return make_private(model, optimizer, loader, **{**arguments, **kwargs})


def train_epoch(model, optimizer, loader):
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_digits_reach_good_accuracy_at_a_modest_epsilon():
    digits = load_dataset("digits")
    x = torch.from_numpy(digits.x).flatten(1) / 16.0
    y = torch.from_numpy(digits.y)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    train, test = order[:1500], order[1500:]
    torch.manual_seed(0)
    model = mlp(64, [64], 10)
    loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=100)
    model, optimizer, loader = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=2.0, momentum=0.5),
        loader,
        noise_multiplier=1.4,
        max_grad_norm=1.0,
        delta=1e-5,
        noise_seed_for_testing=0,
    )
    for _ in range(8):
        train_epoch(model, optimizer, loader)
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert optimizer.steps == 8 * 15
    assert optimizer.epsilon() <= 3.0
    assert accuracy >= 0.85


def test_target_epsilon_calibrates_the_noise_for_all_epochs(monkeypatch):
    calls = []

    def calibrate(*args):
        calls.append(args)
        return 1.7

    monkeypatch.setattr(dpsgd_api, "calibrate_noise_multiplier", calibrate)
    _, optimizer, _ = private(noise_multiplier=None, target_epsilon=2.0, epochs=3, accountant="rdp")
    assert calls == [(2.0, 8 / 40, 3 * 5, 1e-5, "rdp")]  # q = b / N, epochs × len(loader) steps
    assert optimizer.noise_multiplier == 1.7


@pytest.mark.slow
def test_calibrated_noise_meets_the_target():
    _, optimizer, _ = private(noise_multiplier=None, target_epsilon=4.0, epochs=1)
    optimizer.steps = 5
    assert 3.9 <= optimizer.epsilon() <= 4.0


def test_epsilon_counts_the_steps_taken():
    model, optimizer, loader = private()
    assert optimizer.epsilon() == 0.0
    train_epoch(model, optimizer, loader)
    assert optimizer.steps == len(loader) == 5
    assert optimizer.epsilon() == pytest.approx(dpsgd_epsilon(1.0, 0.2, 5, 1e-5))
    assert optimizer.epsilon(1e-3) < optimizer.epsilon()
    assert optimizer.dp_event().count == 5


def test_a_ledger_records_each_epoch_before_it_runs_and_stops_an_overspend(tmp_path):
    settings = LedgerSettings(delta=1e-5, budget_epsilon=dpsgd_epsilon(1.0, 0.2, 5, 1e-5) * 1.01)
    ledger = PrivacyLedger.open(tmp_path / "ledger.jsonl", settings)
    model, optimizer, _ = private(ledger=ledger)
    x, y = next(iter(toy_setup()[2]))
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert ledger.releases == 1 and optimizer.epsilon() == pytest.approx(
        dpsgd_epsilon(1.0, 0.2, 5, 1e-5)
    )
    for _ in range(4):  # the rest of the reserved epoch
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(PrivacyBudgetExceeded, match="over the budget"):
        optimizer.step()  # a second epoch would overspend: refused, the model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert PrivacyLedger.load(tmp_path / "ledger.jsonl").releases == 1


def test_poisson_loader_varies_the_batch_size_and_survives_empty_batches():
    model, optimizer, loader = private(loader_rows=20, batch_size=1)
    sizes = []
    for x, y in loader:
        sizes.append(len(y))
        assert x.shape[1:] == (5,)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y, reduction="sum").backward()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.step()
        assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert len(sizes) == 20 and 0 in sizes and max(sizes) >= 2


def test_step_sets_grad_to_the_noisy_clipped_average():
    model, optimizer, loader = toy_setup()
    reference = copy.deepcopy(model)
    model, optimizer, _ = make_private(
        model, optimizer, loader, noise_multiplier=1e-9, max_grad_norm=1e3, delta=1e-5
    )
    x, y = next(iter(loader))
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is None for p in model.parameters())  # only the step writes .grad
    optimizer.step()
    # no clipping, almost no noise: .grad is the batch's summed gradient over q·N = 8
    F.cross_entropy(reference(x), y, reduction="sum").backward()
    for p, r in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, r.grad / 8, rtol=1e-4, atol=1e-6)


def test_noise_seed_for_testing_warns_and_reproduces():
    def one_step():
        model, optimizer, loader = private(noise_seed_for_testing=3)
        x, y = next(iter(loader))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    with pytest.warns(InsecureNoiseWarning):
        first = one_step()
    assert all(torch.equal(a, b) for a, b in zip(first, one_step(), strict=True))


def test_works_with_a_learning_rate_scheduler():
    model, optimizer, loader = private()
    assert isinstance(optimizer, DPOptimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train_epoch(model, optimizer, loader)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert optimizer.original_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_step_without_a_backward_pass_is_refused():
    model, optimizer, loader = private()
    x, y = next(iter(loader))
    F.cross_entropy(model(x), y).backward()
    optimizer.zero_grad()
    with pytest.raises(ConfigError, match="no forward and backward pass was captured"):
        optimizer.step()


def test_without_poisson_sampling_the_loader_is_kept_and_a_warning_says_so():
    model, optimizer, loader = toy_setup()
    with pytest.warns(UserWarning, match="not a proven guarantee"):
        _, _, same = make_private(
            model,
            optimizer,
            loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=1e-5,
            poisson_sampling=False,
        )
    assert same is loader


def test_a_ledger_needs_poisson_sampling(tmp_path):
    model, optimizer, loader = toy_setup()
    ledger = PrivacyLedger.open(tmp_path / "ledger.jsonl", LedgerSettings(1e-5, 10.0, "pld"))
    with pytest.raises(ConfigError, match="keep poisson_sampling=True"):
        make_private(
            model,
            optimizer,
            loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=1e-5,
            poisson_sampling=False,
            ledger=ledger,
        )


def test_refuses_batch_norm():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    loader = toy_setup()[2]
    with pytest.raises(ConfigError, match=r"1 \(BatchNorm1d\).*GroupNorm"):
        make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=1e-5,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"target_epsilon": 1.0, "epochs": 1},
            r"exactly one of noise_multiplier and target_epsilon \(got noise_multiplier=1.0, "
            r"target_epsilon=1.0\)",
        ),
        ({"noise_multiplier": None}, "exactly one of noise_multiplier and target_epsilon"),
        ({"noise_multiplier": 0.0}, r"noise_multiplier must be > 0 \(got 0.0\)"),
        (
            {"noise_multiplier": None, "target_epsilon": 1.0},
            r"target_epsilon needs epochs >= 1, the length of training \(got None\)",
        ),
        (
            {"noise_multiplier": None, "target_epsilon": -1.0, "epochs": 1},
            r"target_epsilon must be > 0 \(got -1.0\)",
        ),
        ({"max_grad_norm": 0.0}, r"max_grad_norm must be > 0 \(got 0.0\)"),
        ({"delta": 1.0}, r"delta must be in \(0, 1\) \(got 1.0\)"),
        ({"accountant": "gdp"}, r"accountant must be one of \('pld', 'rdp'\) \(got 'gdp'\)"),
        ({"loss_reduction": "max"}, r"loss_reduction must be 'mean' or 'sum' \(got 'max'\)"),
        ({"batch_size": 41}, r"data_loader needs a batch_size in \[1, 40\] \(got 41\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    batch_size = kwargs.pop("batch_size", 8)
    with pytest.raises(ConfigError, match=message):
        private(batch_size=batch_size, **kwargs)


def test_a_model_without_trainable_parameters_is_refused():
    model, optimizer, loader = toy_setup()
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="model has no trainable parameters"):
        make_private(model, optimizer, loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)


def test_a_loader_without_a_batch_size_is_refused():
    model, optimizer, loader = toy_setup()
    unbatched = DataLoader(loader.dataset, batch_size=None)
    with pytest.raises(ConfigError, match=r"data_loader needs a batch_size .*\(got None\)"):
        make_private(
            model, optimizer, unbatched, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5
        )
