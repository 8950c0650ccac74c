"""Gradient inversion side by side: no defence, clipping + noise, and secure aggregation.

Each target is one client's training row; its update is the FedSGD gradient on that row at the
model's initial parameters (round one). Three views of it are attacked with DLG and Inverting
Gradients (`veil.attacks.gradient_inversion`):

- ``none``: the update itself, as a server without SecAgg sees it.
- ``clip+noise``: the update as DP-FedAvg releases it (McMahan et al. 2018), through veil's own
  links: `veil.privacy.client_dp.clip_l2` (L2 norm ≤ C), then `gaussian_sum` (+ N(0, σ²C² I)).
  This is what anyone downstream of the noise sees (or the server, when the noise is added
  before it sees the update, as with distributed DP).
- ``secagg``: the mean of the target's update and k − 1 other clients' updates, computed by a
  real SecAgg+ round (`veil.secagg.links`, Bell et al. 2020): all the server learns. The
  attacker knows k and reconstructs k inputs at once (the papers' batch attacks, Inverting
  Gradients with all k labels known); the target's score is that of the reconstruction matched
  to it.

Scores: PSNR / SSIM of the target's reconstruction (`veil.attacks.image_metrics`), and iDLG's
label recovery rate on each view. Baseline: the training set's mean input scored as if it were
the reconstruction, what an attacker gets without looking at the update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dp_accounting
import numpy as np
import torch
from torch import Tensor

from veil.attacks.gradient_inversion import (
    DEFAULT_STEPS,
    Defence,
    cross_entropy_gradient,
    idlg_label,
    last_linear_weight,
    reconstruct,
)
from veil.attacks.image_metrics import psnr, score_reconstructions, ssim
from veil.attacks.inversion_report import format_score, image_grid_svg, inversion_section
from veil.data import federate, load_dataset
from veil.errors import check
from veil.fl.links import ClientUpdates, chain
from veil.models import FunctionalModel, build_model
from veil.params import Params, leading_axis_l2_norms, stack
from veil.privacy.accounting import epsilon
from veil.privacy.client_dp import clip_l2, gaussian_sum, poisson_sampling
from veil.randomness import noise_generator
from veil.report import ReportSection
from veil.secagg.encoding import choose_encoding
from veil.secagg.graph import default_neighbours, default_threshold
from veil.secagg.links import SecAggSettings, secagg_aggregator, secagg_encoder

SETTINGS = ("none", "clip+noise", "secagg")
ATTACKS = ("dlg", "inverting_gradients")
SECAGG_BITS = 32
SHORT_NAMES = {"dlg": "DLG", "inverting_gradients": "IG"}
SHOWN_TARGETS = 8
"""At most this many targets appear in the report's image grid."""


def dp_fedavg_defence(
    clip_norm: float, noise_multiplier: float, *, noise_seed_for_testing: int | None = None
) -> Defence:
    """One client's update as DP-FedAvg releases it: clipped to L2 norm C, plus N(0, σ²C² I).

    Runs veil's own links (`clip_l2`, then `gaussian_sum` over this one client, denominator 1).
    The noise comes from `veil.randomness.noise_generator`.
    """
    link = chain(
        clip_l2(clip_norm),
        gaussian_sum(noise_multiplier, clip_norm, 1.0, poisson_sampling(1.0)),
    )
    key = noise_generator(noise_seed_for_testing)

    def defend(gradients: Params) -> Params:
        one_client = ClientUpdates(
            {k: v[None] for k, v in gradients.items()},
            torch.ones(1),
            torch.zeros(1, dtype=torch.int64),
        )
        released, _, _ = link.apply(one_client, link.init(gradients), key)
        return released

    return defend


def secure_aggregation_defence(
    other_updates: Sequence[Params], *, noise_seed_for_testing: int | None = None
) -> Defence:
    """What the server learns under SecAgg+: the mean of this update and ``other_updates``.

    Runs a SecAgg+ round among all of them (`veil.secagg.links`, 32-bit ring, neighbours and
    threshold by `veil.secagg.graph`'s defaults). The quantization clip is set just above the
    largest update norm, so nothing is clipped; stochastic rounding uses
    `veil.randomness.noise_generator`.
    """
    check(len(other_updates) >= 1, "secure aggregation needs at least one other client's update")
    key = noise_generator(noise_seed_for_testing)

    def defend(gradients: Params) -> Params:
        updates = stack([gradients, *other_updates])
        clients = len(other_updates) + 1
        length = sum(v[0].numel() for v in updates.values())
        clip = float(leading_axis_l2_norms(updates).max()) * (1 + 1e-6) + 1e-12
        neighbours = default_neighbours(clients)
        threshold = default_threshold(neighbours)
        settings = SecAggSettings(
            neighbours, threshold, threshold, choose_encoding(SECAGG_BITS, clip, clients, length)
        )
        link = chain(secagg_encoder(settings), secagg_aggregator(settings, None))
        batch = ClientUpdates(updates, torch.ones(clients), torch.arange(clients))
        mean, _, _ = link.apply(batch, link.init(gradients), key)
        return mean

    return defend


@dataclass(frozen=True)
class GradientInversionResult:
    """Scores and images of `run_gradient_inversion`.

    ``scores[setting][method]`` holds ``psnr`` and ``ssim`` lists over the targets (``ssim``
    None for feature vectors); ``label_recovery[setting]`` iDLG's hit list; ``reconstructions``
    the target-matched reconstructions ``[T, *shape]`` by (setting, method); ``baselines`` the
    scores of guesses made without the update (the mean input, the target's class mean).
    """

    dataset: str
    model: str
    truth: Tensor
    labels: Tensor
    value_range: tuple[float, float]
    scores: dict[str, dict[str, dict[str, list[float] | None]]]
    label_recovery: dict[str, list[bool]]
    baselines: dict[str, dict[str, list[float] | None]]
    reconstructions: dict[tuple[str, str], Tensor] = field(repr=False)
    parameters: dict[str, Any] = field(default_factory=dict)

    def summary(self, setting: str, method: str) -> dict[str, float | None]:
        """Mean PSNR and SSIM of ``method`` under ``setting``."""
        scores = self.scores[setting][method]
        return {"psnr": _mean(scores["psnr"]), "ssim": _mean(scores["ssim"])}

    def label_recovery_rate(self, setting: str) -> float:
        """Fraction of targets whose label iDLG reads off the view ``setting``."""
        return float(np.mean(self.label_recovery[setting]))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: parameters, baseline, and per setting the label recovery rate and each
        method's mean and per-target PSNR / SSIM (null: not defined, or +inf for an exact copy)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "targets": len(self.labels),
            "parameters": dict(self.parameters),
            "baselines": {
                name: {k: _finite(_mean(v)) for k, v in scores.items()}
                for name, scores in self.baselines.items()
            },
            "settings": {
                setting: {
                    "label_recovery_rate": self.label_recovery_rate(setting),
                    "methods": {
                        method: {
                            **{k: _finite(v) for k, v in self.summary(setting, method).items()},
                            "psnr_per_target": [_finite(v) for v in scores["psnr"]],
                        }
                        for method, scores in methods.items()
                    },
                }
                for setting, methods in self.scores.items()
            },
        }

    def report_section(self) -> ReportSection:
        """Truth vs each method's reconstruction under each setting, and the scores."""
        shown = min(len(self.labels), SHOWN_TARGETS)
        rows = [("truth", self.truth[:shown])] + [
            (f"{SHORT_NAMES[method]} · {setting}", images[:shown])
            for (setting, method), images in self.reconstructions.items()
        ]
        titles = [f"label {int(y)}" for y in self.labels[:shown]]
        svg = image_grid_svg(rows, titles, self.value_range, id_salt="veil-gradient-inversion")
        methods = list(next(iter(self.scores.values())))
        header = ["view", "iDLG label recovery"]
        header += [f"{m} {k}" for m in methods for k in ("PSNR (dB)", "SSIM")]
        table = [
            [setting, format_score(self.label_recovery_rate(setting), ".0%")]
            + [
                format_score(self.summary(setting, m)[k], spec)
                for m in methods
                for k, spec in (("psnr", ".1f"), ("ssim", ".3f"))
            ]
            for setting in self.scores
        ]
        for name, scores in self.baselines.items():
            guess = [
                format_score(_mean(scores["psnr"])),
                format_score(_mean(scores["ssim"]), ".3f"),
            ]
            table.append([f"baseline: {name}", "—"] + guess * len(methods))
        p = self.parameters
        paragraphs = [
            f"Attacker: sees one client's shared gradient ({self.model} on {self.dataset}, "
            "first round) and knows the model. none: the update itself. clip+noise: clipped to "
            f"C = {p['clip_norm']:g} and noised at σ = {p['noise_multiplier']:g} by veil's "
            f"DP-FedAvg links (one release: ε = {p['epsilon']:.3g} at δ = {p['delta']:g}). "
            f"secagg: only the SecAgg+ mean of {p['secagg_clients']} clients' updates, "
            f"attacked as a batch of {p['secagg_clients']}.",
            "PSNR above about 20 dB is a recognisable copy. The baseline rows score a guess "
            "made without the update: the mean training input, and the mean input of the "
            "target's class (what knowing the label alone gives).",
        ]
        caption = "Rows: the targets, then each method's reconstruction under each view."
        return inversion_section(
            "Gradient inversion (DLG, Inverting Gradients)", paragraphs, svg, caption, header, table
        )


def run_gradient_inversion(
    dataset: str = "digits",
    *,
    model: str = "mlp",
    hidden: Sequence[int] = (64,),
    activation: str = "sigmoid",
    num_targets: int = 8,
    methods: Sequence[str] = ATTACKS,
    steps: int | None = None,
    clip_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    delta: float = 1e-5,
    secagg_clients: int = 100,
    seed: int = 0,
    noise_seed_for_testing: int | None = None,
) -> GradientInversionResult:
    """Attack ``num_targets`` clients' one-row updates under each of `SETTINGS`.

    The model (`veil.models.build_model`: ``model``, ``hidden``, ``activation``; sigmoid as in
    Zhu et al.) is initialised from ``seed``, which also picks the targets and the other SecAgg
    clients. Features are scaled by `veil.data.federate`; pixels lie in [0, 1], which bounds
    the reconstructions. ``steps`` overrides every method's `DEFAULT_STEPS`. ``clip_norm`` and
    ``noise_multiplier`` set the DP defence, ``secagg_clients`` (k ≥ 2) the size of the sum.
    """
    check(num_targets >= 1, f"num_targets must be >= 1 (got {num_targets})")
    check(
        len(methods) >= 1 and set(methods) <= set(ATTACKS),
        f"methods must be a non-empty subset of {ATTACKS} (got {list(methods)}); iDLG's "
        "reconstruction of single updates is in gradient_attack_scores(method='idlg')",
    )
    check(secagg_clients >= 2, f"secagg_clients must be >= 2 (got {secagg_clients})")
    data = load_dataset(dataset, seed=seed)
    rows = federate(data, method="iid", num_clients=1, test_fraction=0.0, seed=seed).clients[0]
    x, y = torch.from_numpy(rows.x_train), torch.from_numpy(rows.y_train)
    check(
        num_targets + secagg_clients - 1 <= len(y),
        f"num_targets + secagg_clients - 1 must be at most the {len(y)} rows of {dataset!r} "
        f"(got {num_targets} + {secagg_clients} - 1)",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_model(
            model, data.feature_shape, data.num_classes, hidden=hidden, activation=activation
        )
    network = FunctionalModel(module)
    params = network.init_params()
    bounds = (0.0, 1.0) if data.scaling == "fixed" else None
    value_range = bounds or (float(x.min()), float(x.max()))
    data_range = value_range[1] - value_range[0]
    rng = np.random.default_rng(seed)
    targets = rng.choice(len(y), num_targets, replace=False)
    noised = dp_fedavg_defence(
        clip_norm, noise_multiplier, noise_seed_for_testing=noise_seed_for_testing
    )
    scores = {s: {m: {"psnr": [], "ssim": []} for m in methods} for s in SETTINGS}
    label_recovery: dict[str, list[bool]] = {s: [] for s in SETTINGS}
    images: dict[tuple[str, str], list[Tensor]] = {(s, m): [] for s in SETTINGS for m in methods}
    from veil.experiment import torch_threads  # here: veil.experiment is a heavy import

    with torch_threads(1):  # tiny models: thread start-up costs more than it saves
        for target in targets:
            others = rng.choice(
                np.setdiff1d(np.arange(len(y)), [target]), secagg_clients - 1, False
            )
            clients = np.concatenate([[target], others])
            updates = [cross_entropy_gradient(network, params, x[[i]], y[[i]]) for i in clients]
            secure = secure_aggregation_defence(
                updates[1:], noise_seed_for_testing=noise_seed_for_testing
            )
            views = {
                "none": (updates[0], [target]),
                "clip+noise": (noised(updates[0]), [target]),
                "secagg": (secure(updates[0]), clients),
            }
            for setting, (observed, attacked) in views.items():
                label = idlg_label(observed, last_linear_weight(observed))
                label_recovery[setting].append(label == int(y[target]))
                for method in methods:
                    reconstruction = reconstruct(
                        network,
                        params,
                        observed,
                        data.feature_shape,
                        y[attacked],
                        method=method,
                        steps=steps,
                        seed=seed,
                        bounds=bounds,
                    )
                    matched = score_reconstructions(
                        reconstruction.x, x[attacked], data_range, bounds
                    )
                    _append(scores[setting][method], matched, 0)
                    best = reconstruction.x[matched["match"][0]]
                    images[setting, method].append(best.clamp(*bounds) if bounds else best)
    class_means = torch.stack([x[y == c].mean(0) for c in range(data.num_classes)])
    guesses = {"mean input": x.mean(0).expand_as(x[targets]), "class mean": class_means[y[targets]]}
    baselines = {}
    for name, guess in guesses.items():
        pairs = list(zip(guess, x[targets], strict=True))
        baselines[name] = {
            "psnr": [psnr(g, t, data_range) for g, t in pairs],
            "ssim": [ssim(g, t, data_range) for g, t in pairs] if x.dim() == 4 else None,
        }
    release = dp_accounting.GaussianDpEvent(noise_multiplier)
    return GradientInversionResult(
        dataset=dataset,
        model=_describe(model, hidden, activation),
        truth=x[targets],
        labels=y[targets],
        value_range=value_range,
        scores={s: {m: _lists(v) for m, v in ms.items()} for s, ms in scores.items()},
        label_recovery=label_recovery,
        baselines=baselines,
        reconstructions={key: torch.stack(v) for key, v in images.items()},
        parameters={
            "clip_norm": clip_norm,
            "noise_multiplier": noise_multiplier,
            "epsilon": epsilon(release, delta),
            "delta": delta,
            "secagg_clients": secagg_clients,
            "steps": {m: steps or DEFAULT_STEPS[m] for m in methods},
            "seed": seed,
        },
    )


def _append(into: dict[str, list], matched: dict[str, Any], index: int) -> None:
    into["psnr"].append(matched["psnr"][index])
    if matched["ssim"] is not None:
        into["ssim"].append(matched["ssim"][index])


def _lists(scores: dict[str, list[float]]) -> dict[str, list[float] | None]:
    return {"psnr": scores["psnr"], "ssim": scores["ssim"] or None}


def _mean(values: list[float] | None) -> float | None:
    return None if values is None else float(np.mean(values))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _describe(model: str, hidden: Sequence[int], activation: str) -> str:
    if model == "mlp":
        return f"mlp {list(hidden)} {activation}"
    return model
