"""Server aggregator links that reduce a batch of client updates to one aggregate update."""

from __future__ import annotations

import torch

from veil.errors import ProtocolError
from veil.fl.links import ClientUpdates, Link
from veil.params import weighted_sum


def weighted_mean() -> Link:
    """FedAvg's aggregate (McMahan et al. 2017): Δ = Σ_c n_c Δ_c / Σ_c n_c; an empty round gives 0.

    Threat model: the server sees every client's update in the clear; this link adds no privacy.
    """

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        if updates.num_clients == 0:
            return {k: v.new_zeros(v.shape[1:]) for k, v in updates.deltas.items()}, state, []
        total = updates.weights.sum()
        if total <= 0:
            raise ProtocolError("weighted_mean needs client weights with a positive sum")
        return weighted_sum(updates.deltas, updates.weights / total), state, []

    return Link(lambda params: None, apply)
