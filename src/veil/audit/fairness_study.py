"""Does DP cost some sites or classes more than others? A run config trained four ways (Bagdasaryan,
Poursaeed, Shmatikov 2019, "Differential Privacy Has Disparate Impact on Model Accuracy").

The config's federation is trained with IID and with non-IID (Dirichlet label skew, α from the
config or ``DEFAULT_ALPHA``) partitions, each without and with DP (the config's privacy section,
or client-level DP at ``DEFAULT_EPSILON``). Each final model is scored on every client's test
rows: accuracy per site, per class (the group of Bagdasaryan et al.: DP's clipping and noise
hurt the under-represented most), the worst-group gaps and the equalized-odds difference across
sites (`veil.audit.fairness`). These figures describe the clients' test rows and are not DP
releases: the study is for whoever designs the federation, not for publication.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from html import escape
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from veil.audit.fairness import equalized_odds_difference, group_accuracy, worst_group_gap
from veil.config import PartitionConfig, PrivacyConfig, RunConfig
from veil.errors import check
from veil.experiment import build_experiment, execute
from veil.report import ReportSection, figure_to_svg

DEFAULT_ALPHA = 0.5
"""Dirichlet α of the non-IID variant when the config's partition is not Dirichlet."""
DEFAULT_EPSILON = 8.0
"""Client-level target ε of the DP variants when the config has no privacy section."""


@dataclass(frozen=True)
class VariantFairness:
    """One trained variant: its global accuracy and ε, and accuracy by site and by class."""

    name: str
    partition: str
    private: bool
    epsilon: float | None
    accuracy: float
    site_accuracy: dict[str, float]
    class_accuracy: dict[int, float]
    worst_site_gap: float
    worst_class_gap: float
    equalized_odds_difference: float


@dataclass(frozen=True)
class FairnessResult:
    """The four variants of a fairness study (IID / non-IID × without / with DP)."""

    dataset: str
    alpha: float
    variants: tuple[VariantFairness, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"dataset", "alpha", "variants": [{"name", "accuracy", "class_accuracy", ...}]}``
        (class labels become string keys, as JSON requires)."""
        variants = []
        for variant in self.variants:
            data = asdict(variant)
            data["class_accuracy"] = {str(k): v for k, v in variant.class_accuracy.items()}
            variants.append(data)
        return {"dataset": self.dataset, "alpha": self.alpha, "variants": variants}

    def report_section(self) -> ReportSection:
        """A table of the variants' headline figures and a grouped bar plot of per-class
        accuracy (one group per class, one bar per variant)."""
        header = (
            "<tr><th>variant</th><th>accuracy</th><th>ε</th><th>worst-class gap</th>"
            "<th>worst-site gap</th><th>equalized-odds diff. (sites)</th></tr>"
        )
        rows = "".join(
            f"<tr><td>{escape(v.name)}</td><td>{v.accuracy:.3f}</td>"
            f"<td>{'—' if v.epsilon is None else f'{v.epsilon:.3g}'}</td>"
            f"<td>{v.worst_class_gap:.3f}</td><td>{v.worst_site_gap:.3f}</td>"
            f"<td>{v.equalized_odds_difference:.3f}</td></tr>"
            for v in self.variants
        )
        table = f"<table><thead>{header}</thead><tbody>{rows}</tbody></table>"
        figure = (
            f"<figure>{self._class_accuracy_svg()}<figcaption>Accuracy per class on the "
            f"clients' test rows ({escape(self.dataset)}; non-IID: Dirichlet α = "
            f"{self.alpha:g}).</figcaption></figure>"
        )
        return ReportSection(
            "Fairness: accuracy by site and class, with and without DP", table + figure
        )

    def _class_accuracy_svg(self) -> str:
        classes = sorted({k for v in self.variants for k in v.class_accuracy})
        figure = Figure(figsize=(8, 3), layout="constrained")
        axes = figure.subplots()
        width = 0.8 / len(self.variants)
        for index, variant in enumerate(self.variants):
            heights = [variant.class_accuracy.get(k, np.nan) for k in classes]
            positions = np.arange(len(classes)) + (index - (len(self.variants) - 1) / 2) * width
            axes.bar(positions, heights, width=width, label=variant.name)
        axes.set_xticks(range(len(classes)), [str(k) for k in classes])
        axes.set(xlabel="class", ylabel="accuracy", ylim=(0, 1))
        axes.legend(fontsize="small", ncols=2)
        return figure_to_svg(figure, id_salt="veil-fairness-classes")


def fairness_variants(config: RunConfig, seed: int = 0) -> list[tuple[str, RunConfig]]:
    """The four configs of the study, named ``"IID"``, ``"IID + DP"``, ``"non-IID"``,
    ``"non-IID + DP"``; ``seed`` replaces the config's seed (data split and model)."""
    check(
        config.task == "federated_training",
        f"the fairness study trains task federated_training (got {config.task})",
    )
    p = config.partition
    alpha = p.alpha if p.method == "dirichlet" else DEFAULT_ALPHA
    privacy = config.privacy or PrivacyConfig(target_epsilon=DEFAULT_EPSILON)
    partitions = {
        "IID": PartitionConfig(method="iid", num_clients=p.num_clients),
        "non-IID": PartitionConfig(method="dirichlet", num_clients=p.num_clients, alpha=alpha),
    }
    return [
        (
            name + (" + DP" if dp else ""),
            config.model_copy(
                update={"seed": seed, "partition": part, "privacy": privacy if dp else None}
            ),
        )
        for name, part in partitions.items()
        for dp in (False, True)
    ]


def run_fairness_study(config: RunConfig, *, seed: int = 0) -> FairnessResult:
    """Train the four `fairness_variants` of ``config`` and measure each final model."""
    variants = fairness_variants(config, seed)
    results = tuple(_measure(name, variant) for name, variant in variants)
    alpha = variants[-1][1].partition.alpha
    return FairnessResult(config.data.dataset, float(alpha), results)


def _measure(name: str, config: RunConfig) -> VariantFairness:
    experiment = build_experiment(config)
    final = execute(experiment)["final"]
    params = experiment.state.params
    device = next(iter(params.values())).device
    clients = experiment.data.clients
    y_true = np.concatenate([c.y_test for c in clients])
    sites = np.concatenate([np.full(len(c.y_test), c.name) for c in clients])
    with torch.no_grad():
        logits = experiment.model.apply(
            params, torch.as_tensor(experiment.data.x_test, device=device)
        )
    y_pred = logits.argmax(1).cpu().numpy()
    return VariantFairness(
        name=name,
        partition=config.partition.method,
        private=config.privacy is not None,
        epsilon=final["epsilon"],
        accuracy=float(final["accuracy"]),
        site_accuracy=group_accuracy(y_true, y_pred, sites),
        class_accuracy=group_accuracy(y_true, y_pred, y_true),
        worst_site_gap=worst_group_gap(y_true, y_pred, sites),
        worst_class_gap=worst_group_gap(y_true, y_pred, y_true),
        equalized_odds_difference=equalized_odds_difference(y_true, y_pred, sites),
    )
