"""Poisoning attacks by malicious federated clients, and the metrics that measure them.

- **Label flipping** (Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated Learning
  Systems"): malicious clients train on labels y → C − 1 − y (or a given mapping).
- **Sign flipping / scaling** (Blanchard et al. 2017; Fang et al. 2020): a malicious client sends
  −λ·Δ or λ·Δ instead of its honest update Δ.
- **Model replacement backdoor** (Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020, "How To
  Backdoor Federated Learning"): the attacker trains on its rows plus copies stamped with a pixel
  trigger and relabelled to a target class, then boosts its update by γ = n/η so that FedAvg's
  G + (η/n) Σ_c Δ_c is replaced by its backdoored model.

Metrics: main-task accuracy on clean test rows, and attack success rate (ASR) = the fraction of
test rows whose true label is not the target that the model assigns to the target once triggered.
Threat model: the attacker controls a few clients (their data and the updates they send); the
server and the other clients are honest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from veil.data import FederatedData
from veil.errors import check
from veil.fl.links import ClientUpdates, Link
from veil.models import FunctionalModel, cross_entropy_and_accuracy
from veil.params import Params

DATA_ATTACKS = ("label_flip", "backdoor")
UPDATE_ATTACKS = ("sign_flip", "scale", "model_replacement")


def flip_labels(
    y: np.ndarray, num_classes: int, mapping: Mapping[int, int] | None = None
) -> np.ndarray:
    """A copy of ``y`` with labels flipped: by ``mapping`` (labels it does not name are kept), or
    by default y → C − 1 − y for ``num_classes`` = C."""
    y = np.asarray(y)
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    check(
        y.size == 0 or (y.min() >= 0 and y.max() < num_classes),
        f"labels must be in [0, {num_classes}) (got {y.min()}..{y.max()})",
    )
    if mapping is None:
        return num_classes - 1 - y
    named = [*mapping.keys(), *mapping.values()]
    check(
        all(0 <= label < num_classes for label in named),
        f"label mapping must map classes in [0, {num_classes}) (got {dict(mapping)})",
    )
    table = np.arange(num_classes)
    table[list(mapping.keys())] = list(mapping.values())
    return table[y]


def add_pixel_trigger(x: np.ndarray, *, size: int = 2, value: float = 1.0) -> np.ndarray:
    """A copy of ``x`` with a backdoor trigger on every row.

    Images ``[N, ..., H, W]``: a ``size`` × ``size`` patch of ``value`` in the bottom-right
    corner of every channel. Tabular rows ``[N, F]``: the last ``size`` features set to ``value``
    (a fixed feature pattern).
    """
    x = np.array(x, copy=True)
    check(x.ndim >= 2, f"x must hold rows of features or images (got shape {x.shape})")
    room = min(x.shape[-2:]) if x.ndim >= 3 else x.shape[1]
    check(
        isinstance(size, int) and 1 <= size <= room,
        f"trigger size must be an integer in [1, {room}] for data of shape {x.shape[1:]} "
        f"(got {size!r})",
    )
    if x.ndim >= 3:
        x[..., -size:, -size:] = value
    else:
        x[:, -size:] = value
    return x


def poison_federation(
    data: FederatedData,
    malicious: Sequence[int],
    attack: str,
    *,
    target_label: int = 0,
    poison_fraction: float = 0.5,
    trigger_size: int = 2,
    trigger_value: float = 1.0,
    mapping: Mapping[int, int] | None = None,
    seed: int = 0,
) -> FederatedData:
    """``data`` with the training rows of the ``malicious`` clients poisoned; test rows untouched.

    ``label_flip``: their labels flipped by `flip_labels` (``mapping``). ``backdoor``: a fraction
    ``poison_fraction`` of their rows whose label is not ``target_label`` (at least one, drawn with
    ``seed``) is copied, stamped by `add_pixel_trigger` and relabelled ``target_label``; the
    copies join the clean rows, so the client still learns the main task (Bagdasaryan et al.).
    """
    check(attack in DATA_ATTACKS, f"data attack must be one of {DATA_ATTACKS} (got {attack!r})")
    malicious = check_malicious(malicious, data.num_clients)
    check(
        0 <= target_label < data.num_classes,
        f"target_label must be in [0, {data.num_classes}) (got {target_label})",
    )
    check(0 < poison_fraction <= 1, f"poison_fraction must be in (0, 1] (got {poison_fraction})")
    rng = np.random.default_rng(seed)
    clients = list(data.clients)
    for c in malicious:
        client = clients[c]
        if attack == "label_flip":
            y = flip_labels(client.y_train, data.num_classes, mapping)
            clients[c] = dataclasses.replace(client, y_train=y)
            continue
        candidates = np.flatnonzero(client.y_train != target_label)
        check(candidates.size > 0, f"client {c} has no training row outside the target class")
        count = max(1, round(poison_fraction * candidates.size))
        rows = rng.choice(candidates, size=count, replace=False)
        triggered = add_pixel_trigger(client.x_train[rows], size=trigger_size, value=trigger_value)
        x = np.concatenate([client.x_train, triggered])
        y = np.concatenate([client.y_train, np.full(count, target_label, client.y_train.dtype)])
        clients[c] = dataclasses.replace(client, x_train=x, y_train=y)
    return dataclasses.replace(data, clients=tuple(clients))


def malicious_update_link(
    malicious: Sequence[int], attack: str, factor: float | None = None, *, server_lr: float = 1.0
) -> Link:
    """Encoder link that rewrites the updates of the ``malicious`` client ids, leaving the others.

    - ``sign_flip``: Δ → −λ·Δ, λ = ``factor`` (default 1);
    - ``scale``: Δ → λ·Δ, λ = ``factor`` (required);
    - ``model_replacement``: Δ → γ·Δ with γ = ``factor`` or, by default, the boost that replaces
      a FedAvg round's model, γ = Σ_c w_c / (η Σ_{c malicious} w_c) for weights w and server rate
      η = ``server_lr`` (Bagdasaryan et al.'s n/η with equal weights and one attacker).

    Put it first in the encoder chain: the honest encoders (clipping, noise, masking) then run on
    the rewritten update, as they would on a malicious client that does not skip them.
    """
    check(
        attack in UPDATE_ATTACKS, f"update attack must be one of {UPDATE_ATTACKS} (got {attack!r})"
    )
    ids = torch.as_tensor(check_malicious(malicious), dtype=torch.int64)
    check(server_lr > 0, f"server_lr must be > 0 (got {server_lr})")
    if attack == "scale":
        check(factor is not None, "attack 'scale' needs a factor λ (the update becomes λ·Δ)")
    if factor is not None:
        check(factor > 0, f"attack factor must be > 0 (got {factor})")

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        bad = torch.isin(updates.client_ids, ids.to(updates.client_ids.device))
        if not bool(bad.any()):
            return updates, state, []
        if attack == "sign_flip":
            multiplier = -(factor or 1.0)
        elif attack == "model_replacement" and factor is None:
            multiplier = float(updates.weights.sum() / (server_lr * updates.weights[bad].sum()))
        else:
            multiplier = factor
        scale = torch.where(bad, multiplier, 1.0)
        deltas = {
            k: v * scale.to(v.dtype).reshape(-1, *([1] * (v.dim() - 1)))
            for k, v in updates.deltas.items()
        }
        return ClientUpdates(deltas, updates.weights, updates.client_ids), state, []

    return Link(lambda params: None, apply)


def attack_success_rate(
    model: FunctionalModel,
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    target_label: int,
    trigger_size: int = 2,
    trigger_value: float = 1.0,
) -> float:
    """Backdoor ASR: the fraction of rows with true label ≠ ``target_label`` that the model puts
    in ``target_label`` once stamped with the trigger (`add_pixel_trigger`)."""
    others = np.asarray(y) != target_label
    check(bool(others.any()), f"no test row has a label other than the target {target_label}")
    triggered = add_pixel_trigger(x[others], size=trigger_size, value=trigger_value)
    return _agreement(model, params, triggered, np.full(int(others.sum()), target_label))


def label_flip_success_rate(
    model: FunctionalModel,
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    mapping: Mapping[int, int] | None = None,
) -> float:
    """Label-flipping ASR: among rows whose label the flip changes, the fraction that the model
    assigns to the flipped label (`flip_labels`)."""
    flipped = flip_labels(y, num_classes, mapping)
    moved = flipped != np.asarray(y)
    check(bool(moved.any()), "the label mapping changes no test row's label")
    return _agreement(model, params, x[moved], flipped[moved])


def check_malicious(malicious: Sequence[int], num_clients: int | None = None) -> list[int]:
    """``malicious`` as a sorted list of distinct client ids (in ``[0, num_clients)`` if given)."""
    ids = [int(c) for c in malicious]
    upper = f", < {num_clients}" if num_clients is not None else ""
    check(
        len(ids) >= 1
        and len(set(ids)) == len(ids)
        and all(0 <= c < (num_clients or np.inf) for c in ids),
        f"malicious must list distinct client ids (>= 0{upper}) (got {list(malicious)})",
    )
    return sorted(ids)


def _agreement(model: FunctionalModel, params: Params, x: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows of ``x`` that the model classifies as ``labels``."""
    device = next(iter(params.values())).device
    x_t = torch.as_tensor(x, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(labels, dtype=torch.int64, device=device)
    return cross_entropy_and_accuracy(model, params, x_t, y_t)[1]
