"""Server aggregator links that reduce a batch of client updates to one aggregate update."""

from __future__ import annotations

import torch

from veil.errors import ProtocolError
from veil.fl.links import ClientUpdates, Link
from veil.params import weighted_sum


def weighted_mean() -> Link:
    """FedAvg's aggregate (McMahan et al. 2017): Δ = Σ_c n_c Δ_c / Σ_c n_c.

    Threat model: the server sees every client's update in the clear; this link adds no privacy.
    """

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        total = updates.weights.sum()
        if updates.num_clients == 0 or total <= 0:
            raise ProtocolError("weighted_mean needs at least one update with positive weight")
        return weighted_sum(updates.deltas, updates.weights / total), state, []

    return Link(lambda params: None, apply)
