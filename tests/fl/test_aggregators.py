import pytest
import torch

from veil.errors import ProtocolError
from veil.fl.aggregators import weighted_mean
from veil.fl.links import ClientUpdates


def test_weighted_mean_by_hand():
    deltas = {"w": torch.tensor([[1.0, 0.0], [3.0, 4.0]])}
    updates = ClientUpdates(deltas, torch.tensor([1.0, 3.0]), torch.tensor([0, 1]))
    link = weighted_mean()
    out, _, events = link.apply(updates, link.init({}), None)
    assert torch.allclose(out["w"], torch.tensor([2.5, 3.0])) and events == []


def test_weighted_mean_of_an_empty_round_is_zero():
    updates = ClientUpdates({"w": torch.zeros(0, 2)}, torch.zeros(0), torch.zeros(0))
    out, _, _ = weighted_mean().apply(updates, None, None)
    assert torch.equal(out["w"], torch.zeros(2))


def test_weighted_mean_refuses_weights_that_sum_to_zero():
    updates = ClientUpdates({"w": torch.ones(2, 2)}, torch.zeros(2), torch.arange(2))
    with pytest.raises(ProtocolError, match="positive sum"):
        weighted_mean().apply(updates, None, None)
