"""What the server sees of one client's update, through a run's own encoder and aggregator chains.

The gradient-inversion column of the trade-off table attacks this view. Every client of the
round takes one SGD step on one training row (the setting of DLG and Inverting Gradients, and the
worst case for the client); their updates go through the run's real client encoder chain. Then:

- a plain update (no protection, or client-level DP, whose clipped updates reach the server
  before it adds the noise) is seen row by row: the view is the target client's encoded update;
- under DP-SGD (``privacy.level: sample``) the update is one noised DP-SGD step;
- under SecAgg+ or encryption the server (or the key holder) learns only the aggregate, so the
  view is the aggregator chain's output: the mean of the round's updates.

The view is returned on the gradient's scale (update ÷ −lr), the shape gradient-inversion
attacks expect.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from veil.fl.links import ClientUpdates
from veil.params import Params, flatten, stack
from veil.privacy.dpsgd import noisy_average
from veil.privacy.per_sample import clip_factors
from veil.randomness import noise_generator


def server_view_defence(experiment, others: list[Params]) -> Callable[[Params], Params]:
    """``defence(gradient) -> view`` for a target client whose single-row gradient is the
    argument, in a round with the other clients' single-row gradients ``others``."""
    plan, config = experiment.plan, experiment.config
    lr = plan.local.lr
    noise_seed = config.privacy.noise_seed_for_testing if config.privacy else None

    def defence(gradient: Params) -> Params:
        key = noise_generator(noise_seed)
        if plan.local.dp is not None:
            return _dpsgd_step_view(experiment, gradient, key)
        grads = [gradient, *others]
        deltas = stack([{k: -lr * v for k, v in g.items()} for g in grads])
        n = len(grads)
        updates = ClientUpdates(deltas, torch.ones(n), torch.arange(n))
        params = experiment.state.params
        encoded, _, _ = plan.encoder.apply(updates, plan.encoder.init(params), key)
        if type(encoded) is ClientUpdates:  # the server sees each encoded update
            view = {k: v[0] for k, v in encoded.deltas.items()}
        else:  # it sees only what the aggregator chain releases
            view, _, _ = plan.aggregator.apply(encoded, plan.aggregator.init(params), key)
        return {k: -v / lr for k, v in view.items()}

    return defence


def _dpsgd_step_view(experiment, gradient: Params, key: torch.Generator) -> Params:
    """One DP-SGD step on a batch whose only row has ``gradient``: veil's per-sample clipping
    (`clip_factors`) and `noisy_average`."""
    dp = experiment.plan.local.dp
    factor = clip_factors(flatten(gradient).norm(), dp.max_grad_norm)
    clipped = {k: v * factor for k, v in gradient.items()}
    batch = float(experiment.plan.local.batch_size)
    return noisy_average(clipped, dp.noise_multiplier, dp.max_grad_norm, batch, key)
