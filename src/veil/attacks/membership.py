"""Membership inference: can an attacker tell whether a record was in a model's training data?

Each attack scores candidate records (higher: more likely a member):

- **loss threshold** (Yeom et al. 2018): −ℓ(f_θ(x), y); training records tend to have low loss.
- **LiRA** (Carlini et al. 2022): the target's logit-scaled confidence φ = log(p_y / (1 − p_y))
  on x against Gaussians fitted to the φ of shadow models trained with x (IN) and without it
  (OUT). Online: log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²). Offline (OUT models only):
  log Pr[Z ≤ φ] for Z ~ N(μ_out, σ_out²), the paper's one-sided test.
- **RMIA** (Zarifzadeh et al. 2024): with p_θ(x) = sigmoid(φ) the target's probability of the
  true label, LR(x, z) = (p_θ(x) / Pr(x)) / (p_θ(z) / Pr(z)) against population records z that no
  model trained on, and score(x) = the fraction of z with LR(x, z) ≥ γ. Pr(·) is the mean of p
  over reference (shadow) models: online ½(Pr_IN(x) + Pr_OUT(x)); offline, and always for z
  (OUT of every reference model), ½((1 + a)·Pr_OUT + (1 − a)), with a tuned on a shadow model.

Threat model: the attacker queries the released model's outputs on chosen records, knows the
training recipe (the run config) and holds data from the same distribution, on which it trains
its own shadow models. Under (ε, δ)-DP every attack has TPR ≤ e^ε·FPR + δ at every FPR, so for
small ε its ROC stays near the diagonal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import log_ndtr, logsumexp
from torch import Tensor
from torch.nn import functional as F

from veil.attacks.membership_report import MembershipResult
from veil.attacks.roc import RocSummary, roc_summary
from veil.attacks.shadow_models import (
    paired_halves,
    stacked_logits,
    train_federations,
    train_target_run,
)
from veil.config import RunConfig
from veil.errors import ConfigError
from veil.experiment import build_experiment
from veil.models import FunctionalModel
from veil.params import Params

ATTACKS = ("loss", "lira", "lira_offline", "rmia", "rmia_offline")
OFFLINE_A_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
MIN_STD = 1e-6  # floor on LiRA's standard deviations (shadow models that all agree)


def logit_confidence(logits: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) = z_y − logsumexp_{j≠y} z_j for logits ``[..., n, classes]``
    and labels ``[n]``: finite even where p_y rounds to 0 or 1 (Carlini et al. 2022, §VI.A)."""
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).to("cpu", torch.int64)
    if z.dim() < 2 or z.shape[-2] != y.shape[0] or y.dim() != 1:
        raise ConfigError(
            f"logits must be [..., n, classes] with labels [n] (got {tuple(z.shape)} and "
            f"{tuple(y.shape)})"
        )
    true = F.one_hot(y, z.shape[-1]).bool().expand_as(z)
    correct = z.masked_select(true).reshape(z.shape[:-1])
    others = z.masked_fill(true, -torch.inf).logsumexp(-1)
    return (correct - others).numpy()


def loss_threshold_scores(
    model: FunctionalModel, params: Params, x: Tensor | np.ndarray, y: Tensor | np.ndarray
) -> np.ndarray:
    """Yeom et al. 2018: the score of (x, y) is minus its cross-entropy loss under ``params``."""
    device = next(iter(params.values())).device
    with torch.no_grad():
        logits = model.apply(params, torch.as_tensor(x, device=device))
        target = torch.as_tensor(y, device=device)
        return -F.cross_entropy(logits.double(), target, reduction="none").cpu().numpy()


def membership_auc(
    model: FunctionalModel,
    params: Params,
    members: tuple[np.ndarray, np.ndarray],
    non_members: tuple[np.ndarray, np.ndarray],
) -> RocSummary:
    """A quick loss-threshold audit of a trained model: ``members`` are its training rows
    ``(x, y)``, ``non_members`` rows it never saw."""
    scores = [loss_threshold_scores(model, params, x, y) for x, y in (members, non_members)]
    truth = np.r_[np.ones(len(scores[0]), bool), np.zeros(len(scores[1]), bool)]
    return roc_summary(np.concatenate(scores), truth)


def lira_scores(
    target: np.ndarray,
    shadow: np.ndarray,
    in_mask: np.ndarray,
    *,
    online: bool,
    global_variance: bool = True,
) -> np.ndarray:
    """LiRA scores from φ of the target ``[n]`` and of shadow models ``[N, n]``, where
    ``in_mask[i, j]`` says whether shadow i trained on record j.

    ``global_variance`` pools one σ over all records (per side), as Carlini et al. advise for
    fewer than 64 shadow models; otherwise each record gets its own σ (then it needs at least
    two shadow models per side). Online needs IN and OUT models for every record, offline OUT.
    """
    target, shadow, in_mask = _check_reference_signals(target, shadow, in_mask, "shadow")
    sides = {"OUT": ~in_mask, "IN": in_mask} if online else {"OUT": ~in_mask}
    fits = [_gaussian_fit(shadow, mask, side, global_variance) for side, mask in sides.items()]
    if not online:
        mean_out, std_out = fits[0]
        return log_ndtr((target - mean_out) / std_out)
    (mean_out, std_out), (mean_in, std_in) = fits
    return _normal_log_density(target, mean_in, std_in) - _normal_log_density(
        target, mean_out, std_out
    )


def rmia_scores(
    target_x: np.ndarray,
    reference_x: np.ndarray,
    in_mask: np.ndarray,
    target_z: np.ndarray,
    reference_z: np.ndarray,
    *,
    online: bool,
    offline_a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA scores of candidates x from φ of the target ``[n]`` and of reference models
    ``[N, n]`` (``in_mask`` as for `lira_scores`), against population records z with φ of the
    target ``[m]`` and of the reference models ``[N, m]``, none of which trained on any z."""
    target_x, reference_x, in_mask = _check_reference_signals(
        target_x, reference_x, in_mask, "reference"
    )
    target_z, reference_z, _ = _check_reference_signals(
        target_z, reference_z, np.zeros(np.shape(reference_z), bool), "reference"
    )
    if reference_z.shape[0] != reference_x.shape[0]:
        raise ConfigError(
            f"reference_x and reference_z must come from the same {reference_x.shape[0]} "
            f"reference models (got {reference_z.shape[0]} rows of reference_z)"
        )
    if not 0 <= offline_a <= 1:
        raise ConfigError(f"offline_a must be in [0, 1] (got {offline_a})")
    if not gamma > 0:
        raise ConfigError(f"gamma must be > 0 (got {gamma})")
    # in log space: probabilities of confident models underflow to 0
    log_p_x, log_p_z = _log_sigmoid(reference_x), _log_sigmoid(reference_z)
    log_out_x = _log_masked_mean(log_p_x, ~in_mask, "OUT")
    if online:
        log_in_x = _log_masked_mean(log_p_x, in_mask, "IN")
        log_prior_x = np.logaddexp(log_in_x, log_out_x) - np.log(2)
    else:
        log_prior_x = _log_offline_prior(log_out_x, offline_a)
    log_out_z = logsumexp(log_p_z, axis=0) - np.log(len(log_p_z))
    log_ratio_x = _log_sigmoid(target_x) - log_prior_x
    log_ratio_z = np.sort(_log_sigmoid(target_z) - _log_offline_prior(log_out_z, offline_a))
    # LR(x, z) = ratio_x / ratio_z ≥ γ  ⇔  log ratio_z ≤ log ratio_x - log γ
    below = np.searchsorted(log_ratio_z, log_ratio_x - np.log(gamma), side="right")
    return below / len(log_ratio_z)


def tune_offline_a(
    reference_x: np.ndarray,
    in_mask: np.ndarray,
    reference_z: np.ndarray,
    grid: Sequence[float] = OFFLINE_A_GRID,
) -> float:
    """RMIA's offline ``a`` from the attacker's own models, as Zarifzadeh et al. do: attack
    reference model 0 with models 2, 3, ... (model 1, its pair from `paired_halves`, trained on
    exactly its complement) and keep the ``a`` of ``grid`` with the highest AUC (first on ties)."""
    if np.shape(reference_x)[0] < 4:
        raise ConfigError(
            f"tuning offline_a needs at least 4 reference models (got {np.shape(reference_x)[0]})"
        )
    if not grid:
        raise ConfigError("tune_offline_a needs a non-empty grid of candidate a values")
    in_mask = np.asarray(in_mask, bool)
    aucs = [
        roc_summary(
            rmia_scores(
                reference_x[0],
                reference_x[2:],
                in_mask[2:],
                reference_z[0],
                reference_z[2:],
                online=False,
                offline_a=a,
            ),
            in_mask[0],
        ).auc
        for a in grid
    ]
    return float(grid[int(np.argmax(aucs))])


def run_membership_attack(
    config: RunConfig,
    *,
    attacks: Sequence[str] = ATTACKS,
    num_shadow: int = 16,
    seed: int = 0,
) -> MembershipResult:
    """Attack the run ``config`` describes, as `veil run` would train it.

    The candidates are the clients' training rows; each client trains the target on a random
    half of its rows (the members; ``seed`` draws the halves) through the run's full pipeline,
    DP included. ``num_shadow`` shadow runs (even, ≥ 4) repeat the same federated training on
    paired random halves (`paired_halves`: each candidate is IN exactly half of them), all at
    once (`veil.attacks.shadow_models.train_federations`). RMIA's population records are the
    run's test rows, which no model trains on. ``attacks`` is any of `ATTACKS`.
    """
    attacks = _check_attacks(attacks)
    shadows_needed = attacks != ("loss",)
    if shadows_needed and (num_shadow < 4 or num_shadow % 2):
        raise ConfigError(
            f"num_shadow must be an even number >= 4 (got {num_shadow}); 16 or more is typical"
        )
    if config.secure_aggregation or config.encryption:
        raise ConfigError(
            "run_membership_attack trains plain or DP runs; remove secure_aggregation / "
            "encryption from the config (they hide updates from the server, not the model)"
        )
    started = time.perf_counter()
    experiment = build_experiment(config.model_copy(update={"privacy": None}))  # data, model
    clients = experiment.data.clients
    labels = [c.y_train for c in clients]
    rng = np.random.default_rng(seed)
    is_member = paired_halves(rng, labels, 2)[0]
    target, metrics = train_target_run(experiment, config, _kept_rows(clients, is_member))
    params = target.state.params
    device = next(iter(params.values())).device
    x = torch.as_tensor(np.concatenate([c.x_train for c in clients]), device=device)
    y = np.concatenate([c.y_train for c in clients])
    with torch.no_grad():
        logits = target.model.apply(params, x)
    correct = logits.argmax(1).cpu().numpy() == y
    scores = {}
    if "loss" in attacks:
        scores["loss"] = loss_threshold_scores(target.model, params, x, y)
    offline_a = None
    if shadows_needed:
        in_mask = paired_halves(rng, labels, num_shadow)
        federations = [_kept_rows(clients, row) for row in in_mask]
        shadow_params = train_federations(
            target.model.module,
            experiment.model.init_params(),
            federations,
            target.plan,
            target.state.round_index,
            device=device,
            chunk_size=config.runtime.chunk_size,
        )
        z = torch.as_tensor(experiment.data.x_test, device=device)
        z_y = experiment.data.y_test
        phi = logit_confidence(logits, y)
        phi_shadow = logit_confidence(stacked_logits(target.model.module, shadow_params, x), y)
        phi_z = logit_confidence(target.model.apply(params, z), z_y)
        phi_shadow_z = logit_confidence(stacked_logits(target.model.module, shadow_params, z), z_y)
        for name in ("lira", "lira_offline"):
            if name in attacks:
                scores[name] = lira_scores(phi, phi_shadow, in_mask, online=name == "lira")
        if {"rmia", "rmia_offline"} & set(attacks):
            offline_a = tune_offline_a(phi_shadow, in_mask, phi_shadow_z)
        for name in ("rmia", "rmia_offline"):
            if name in attacks:
                scores[name] = rmia_scores(
                    phi,
                    phi_shadow,
                    in_mask,
                    phi_z,
                    phi_shadow_z,
                    online=name == "rmia",
                    offline_a=offline_a,
                )
    final = metrics["final"]
    return MembershipResult(
        name=config.name,
        attacks={name: roc_summary(scores[name], is_member) for name in attacks},
        epsilon=final["epsilon"],
        delta=final["delta"],
        accuracy=final["accuracy"],
        member_accuracy=float(correct[is_member].mean()),
        non_member_accuracy=float(correct[~is_member].mean()),
        num_shadow=num_shadow if shadows_needed else 0,
        offline_a=offline_a,
        seconds=time.perf_counter() - started,
    )


def _kept_rows(clients, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each client's training rows ``(x, y)`` that ``mask`` (over all clients' rows, in client
    order) keeps."""
    cuts = np.cumsum([len(c.y_train) for c in clients])[:-1]
    return [
        (c.x_train[k], c.y_train[k]) for c, k in zip(clients, np.split(mask, cuts), strict=True)
    ]


def _check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    attacks = tuple(attacks)
    unknown = [a for a in attacks if a not in ATTACKS]
    if not attacks or unknown or len(set(attacks)) != len(attacks):
        raise ConfigError(
            f"attacks must be distinct names from {list(ATTACKS)} (got {list(attacks)})"
        )
    return attacks


def _check_reference_signals(
    target: np.ndarray, reference: np.ndarray, in_mask: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = np.asarray(target, np.float64)
    reference = np.asarray(reference, np.float64)
    in_mask = np.asarray(in_mask)
    if target.ndim != 1 or reference.ndim != 2 or reference.shape[1:] != target.shape:
        raise ConfigError(
            f"expected target signals [n] and {kind} signals [models, n] (got shapes "
            f"{target.shape} and {reference.shape})"
        )
    if in_mask.shape != reference.shape or in_mask.dtype != bool:
        raise ConfigError(
            f"in_mask must be a boolean array shaped like the {kind} signals {reference.shape} "
            f"(got {in_mask.dtype} {in_mask.shape})"
        )
    if not (np.isfinite(target).all() and np.isfinite(reference).all()):
        raise ConfigError("signals must be finite; compute them with logit_confidence")
    return target, reference, in_mask


def _side_counts(mask: np.ndarray, side: str) -> np.ndarray:
    """How many models ``mask`` selects for each record (each record needs one)."""
    counts = mask.sum(0)
    if counts.min() == 0:
        raise ConfigError(
            f"record {int(np.argmin(counts))} has no {side} model; train more shadow models, "
            "each on a random half of the data (see paired_halves)"
        )
    return counts


def _masked_mean(values: np.ndarray, mask: np.ndarray, side: str) -> np.ndarray:
    """Per-record mean over the models that ``mask`` selects."""
    return (values * mask).sum(0) / _side_counts(mask, side)


def _log_masked_mean(log_values: np.ndarray, mask: np.ndarray, side: str) -> np.ndarray:
    """log of the per-record mean of exp(``log_values``) over the models ``mask`` selects."""
    counts = _side_counts(mask, side)
    return logsumexp(np.where(mask, log_values, -np.inf), axis=0) - np.log(counts)


def _log_offline_prior(log_mean_out: np.ndarray, a: float) -> np.ndarray:
    """log ½((1 + a)·Pr_OUT + (1 − a)) from log Pr_OUT (Zarifzadeh et al.'s offline Pr(x))."""
    terms = np.log1p(a) + log_mean_out
    if a < 1:
        terms = np.logaddexp(terms, np.log1p(-a))
    return terms - np.log(2)


def _log_sigmoid(phi: np.ndarray) -> np.ndarray:
    """log p from the logit-scaled confidence φ = log(p / (1 − p))."""
    return -np.logaddexp(0.0, -phi)


def _gaussian_fit(
    values: np.ndarray, mask: np.ndarray, side: str, global_variance: bool
) -> tuple[np.ndarray, np.ndarray | float]:
    """Per-record mean of the selected models' values and their standard deviation, per record
    or pooled over all records (the root mean square of the deviations from each mean)."""
    mean = _masked_mean(values, mask, side)
    squares = ((values - mean) ** 2) * mask
    counts = mask.sum(0)
    if global_variance:
        return mean, max(float(np.sqrt(squares.sum() / counts.sum())), MIN_STD)
    if counts.min() < 2:
        raise ConfigError(
            f"per-record variances need at least 2 {side} shadow models for every record; "
            "train more shadow models or use global_variance=True"
        )
    return mean, np.maximum(np.sqrt(squares.sum(0) / counts), MIN_STD)


def _normal_log_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray | float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
