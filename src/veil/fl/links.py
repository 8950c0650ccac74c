"""Composable links of the client encoder chain and the server aggregator chain.

A `Link` is a pair of pure functions, in the shape of optax's ``GradientTransformation``:

- ``init(params) -> state`` builds the link's state from the model's parameter shapes;
- ``apply(value, state, key) -> (value, state, events)`` transforms the value (a batch of client
  updates, or an aggregate), returns the new state and the list of dp-accounting ``DpEvent``\\ s
  describing any privacy-relevant randomness it applied.

``chain(a, b, c)`` is itself a link: states are a tuple, values thread through, events concatenate.
``key`` is the ``torch.Generator`` for the link's noise, seeded from the OS's cryptographic source
by the caller (never from the user's reproducibility seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from veil.params import Params

State = Any
Events = list[Any]  # dp_accounting.DpEvent instances


@dataclass(frozen=True)
class ClientUpdates:
    """A batch of client updates, stacked on a leading client axis.

    ``deltas[k][c]`` is client ``c``'s local model minus the global model it started from;
    ``weights[c]`` its aggregation weight (by default its number of training rows).
    """

    deltas: Params
    weights: Tensor
    client_ids: Tensor

    @property
    def num_clients(self) -> int:
        return int(self.weights.shape[0])

    def bytes_per_client(self) -> float | None:
        """Mean bytes one client sent for this batch (``None`` for an empty batch): here the
        update in the clear, ``numel × itemsize``; encoders that change the wire format override
        it."""
        if self.num_clients == 0:
            return None
        return float(sum(v[0].numel() * v.element_size() for v in self.deltas.values()))


class Link(NamedTuple):
    """One step of an encoder or aggregator chain: ``(init, apply)``."""

    init: Callable[[Params], State]
    apply: Callable[[Any, State, torch.Generator], tuple[Any, State, Events]]


def chain(*links: Link) -> Link:
    """Compose links left to right; the state is the tuple of the links' states."""

    def init(params: Params) -> tuple[State, ...]:
        return tuple(link.init(params) for link in links)

    def apply(value: Any, state: tuple[State, ...], key: torch.Generator):
        events: Events = []
        new_states = []
        for link, link_state in zip(links, state, strict=True):
            value, link_state, link_events = link.apply(value, link_state, key)
            new_states.append(link_state)
            events.extend(link_events)
        return value, tuple(new_states), events

    return Link(init, apply)


def identity() -> Link:
    """The link that changes nothing (an empty encoder chain)."""
    return Link(lambda params: None, lambda value, state, key: (value, state, []))
