"""The attack × defence experiment: poisoning attacks (`veil.attacks.poisoning`) against robust
aggregators (`veil.fl.robust`), run through veil's own simulator.

`run_poisoning` builds the run from a config (`veil.experiment.build_experiment`), poisons the
malicious clients' rows, puts the malicious update link first in the client encoder chain and
the robust aggregator in place of the plan's aggregator, runs every round with
`veil.experiment.execute`, and measures main-task accuracy on the clean test rows and the attack
success rate. Attacks (a data attack, an update attack, or both):

=====================  ======================================  ===============================
attack                 malicious clients ...                   success rate
=====================  ======================================  ===============================
``none``               (no attack: the baseline)               trigger → target on a clean model
``label_flip``         train on flipped labels                 flipped-label rate
``backdoor``           train on rows + triggered copies        backdoor ASR
``sign_flip``          send −λ·Δ (λ = factor, default 10)      none (untargeted: see accuracy)
``scale``              flip labels and send λ·Δ (default 10)   flipped-label rate
``model_replacement``  backdoor and boost by γ = n/η           backdoor ASR
=====================  ======================================  ===============================
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from veil.attacks.poisoning import (
    attack_success_rate,
    label_flip_success_rate,
    malicious_update_link,
    poison_federation,
)
from veil.config import RunConfig, parse_config
from veil.data import FederatedData
from veil.errors import check
from veil.experiment import Experiment, build_experiment, execute
from veil.fl import chain, init_server_state
from veil.fl.server_optimizers import SERVER_OPTIMIZERS
from veil.report import ReportSection, figure_to_svg
from veil.runtime import ClientPool

ATTACKS: dict[str, tuple[str | None, str | None]] = {
    "none": (None, None),
    "label_flip": ("label_flip", None),
    "backdoor": ("backdoor", None),
    "sign_flip": (None, "sign_flip"),
    "scale": ("label_flip", "scale"),
    "model_replacement": ("backdoor", "model_replacement"),
}
"""Each attack as ``(data attack, update attack)``: what the malicious clients do."""

DEFAULT_FACTORS = {"sign_flip": 10.0, "scale": 10.0}
"""λ of the update attacks when ``factor`` is not given (model replacement computes its boost)."""


@dataclass(frozen=True)
class PoisoningResult:
    """One run: the attack, the defence (a robust aggregator and its parameters, or ``"none"``
    for the config's own aggregator), which clients were malicious, and what the attack achieved."""

    attack: str
    defence: str
    defence_params: dict[str, Any]
    malicious: tuple[int, ...]
    accuracy: float
    attack_success_rate: float | None  # None for sign_flip (untargeted)
    rounds: int
    epsilon: float | None = None  # the run's ε under `privacy:` (from its ledger), else None

    @property
    def defence_label(self) -> str:
        """The defence with its parameters, e.g. ``krum (num_byzantine=2)``."""
        params = ", ".join(f"{k}={v:g}" for k, v in self.defence_params.items())
        return f"{self.defence} ({params})" if params else self.defence

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {**dataclasses.asdict(self), "malicious": list(self.malicious)}


@dataclass(frozen=True)
class PoisoningGrid:
    """Results of every (attack, defence) pair of `run_poisoning_grid`, attack-major."""

    results: tuple[PoisoningResult, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"results": [...]}``, one entry per run (see `PoisoningResult.to_json`)."""
        return {"results": [result.to_json() for result in self.results]}

    def report_section(self) -> ReportSection:
        """A report section: the table of accuracy and ASR, and a grouped bar chart of both."""
        rows = "".join(
            f"<tr><td>{html.escape(r.attack)}</td><td>{html.escape(r.defence_label)}</td>"
            f"<td>{len(r.malicious)}</td><td>{r.accuracy:.3f}</td>"
            f"<td>{_rate(r.attack_success_rate)}</td></tr>"
            for r in self.results
        )
        table = (
            "<table><thead><tr><th>attack</th><th>defence</th><th>malicious clients</th>"
            "<th>accuracy</th><th>attack success rate</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        return ReportSection("Poisoning attacks and robust aggregation", table + self._figure())

    def _figure(self) -> str:
        attacks = list(dict.fromkeys(r.attack for r in self.results))
        defences = list(dict.fromkeys(r.defence_label for r in self.results))
        found = {(r.attack, r.defence_label): r for r in self.results}
        figure = Figure(figsize=(9, 3.2), layout="constrained")
        width = 0.8 / len(defences)
        for axes, metric in zip(
            figure.subplots(1, 2), ("accuracy", "attack success rate"), strict=True
        ):
            for d, defence in enumerate(defences):
                values = [_metric(found.get((a, defence)), metric) for a in attacks]
                x = [i + (d - (len(defences) - 1) / 2) * width for i in range(len(attacks))]
                axes.bar(x, values, width, label=defence)
            axes.set_xticks(range(len(attacks)), attacks, rotation=20, parse_math=False)
            axes.set(ylabel=metric, ylim=(0, 1), title=metric)
        axes.legend(title="defence", fontsize="small")
        return f"<figure>{figure_to_svg(figure, id_salt='veil-poisoning')}</figure>"


def run_poisoning(
    config: RunConfig,
    *,
    attack: str,
    num_malicious: int,
    robust: str | None = None,
    robust_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    factor: float | None = None,
    target_label: int = 0,
    poison_fraction: float = 0.5,
    trigger_size: int = 2,
    trigger_value: float = 1.0,
) -> PoisoningResult:
    """Run ``config`` with ``num_malicious`` clients (drawn with ``seed``) mounting ``attack`` (a
    key of `ATTACKS`) against the ``robust`` aggregator (a key of
    `veil.fl.robust.ROBUST_AGGREGATORS` with ``robust_params``; None keeps the config's own).

    ``factor`` is λ of sign_flip / scale, or γ of model_replacement (default n/η);
    ``target_label``, ``poison_fraction``, ``trigger_size``, ``trigger_value`` shape the backdoor
    (`veil.attacks.poisoning.poison_federation`). Under SecAgg+ or HE only ``norm_bounding``
    runs (clipping on the clients); with central client-level DP none does (DP-FedAvg already
    clips and adds calibrated noise: use ``robust=None``).
    """
    check(attack in ATTACKS, f"attack must be one of {list(ATTACKS)} (got {attack!r})")
    check(
        (attack == "none") == (num_malicious == 0),
        f"attack {attack!r} needs num_malicious "
        + ("= 0" if attack == "none" else f">= 1 (got {num_malicious})"),
    )
    robust_params = dict(robust_params or {})
    if robust is not None:
        config = with_robust_aggregation(config, robust, robust_params)
    experiment = build_experiment(config)
    n = experiment.data.num_clients
    check(num_malicious < n, f"num_malicious must be < the {n} clients (got {num_malicious})")
    malicious = tuple(
        int(c) for c in np.sort(np.random.default_rng(seed).choice(n, num_malicious, False))
    )
    data_attack, update_attack = ATTACKS[attack]
    trigger = {
        "target_label": target_label,
        "trigger_size": trigger_size,
        "trigger_value": trigger_value,
    }
    if data_attack is not None:
        poisoned = poison_federation(
            experiment.data,
            malicious,
            data_attack,
            poison_fraction=poison_fraction,
            seed=seed,
            **trigger,
        )
        _swap_data(experiment, poisoned)
    if update_attack is not None:
        lam = factor if factor is not None else DEFAULT_FACTORS.get(update_attack)
        lr = config.server.lr or _default_server_lr(config.server.optimizer)
        attacker = malicious_update_link(malicious, update_attack, lam, server_lr=lr)
        experiment.plan = dataclasses.replace(
            experiment.plan, encoder=chain(attacker, experiment.plan.encoder)
        )
        experiment.state = init_server_state(experiment.state.params, experiment.plan)
    final = execute(experiment)["final"]
    rate = _success_rate(experiment, attack, trigger)
    own = config.aggregation.robust  # the config's robust aggregator, or the one set here
    defence = own.method if own else "none"
    defence_params = own.parameters() if own else {}
    return PoisoningResult(
        attack,
        defence,
        defence_params,
        malicious,
        final["accuracy"],
        rate,
        final["rounds"],
        final["epsilon"],
    )


def run_poisoning_grid(
    config: RunConfig,
    attacks: Sequence[str],
    defences: Sequence[str | None],
    *,
    num_malicious: int,
    robust_params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    **attack_options: Any,
) -> PoisoningGrid:
    """`run_poisoning` for every attack × defence (``None`` or ``"none"``: the config's own
    aggregator), with ``robust_params[defence]`` as each defence's parameters and
    ``attack_options`` passed on; the ``none`` attack runs with no malicious client."""
    params = robust_params or {}
    results = []
    for attack in attacks:
        for defence in defences:
            robust = None if defence in (None, "none") else defence
            results.append(
                run_poisoning(
                    config,
                    attack=attack,
                    num_malicious=0 if attack == "none" else num_malicious,
                    robust=robust,
                    robust_params=params.get(robust, {}) if robust else None,
                    seed=seed,
                    **attack_options,
                )
            )
    return PoisoningGrid(tuple(results))


def _swap_data(experiment: Experiment, data: FederatedData) -> None:
    """Give the experiment (and its simulator's client pool) the poisoned clients' rows."""
    transport = experiment.transport
    pool = ClientPool.from_arrays(
        [c.x_train for c in data.clients],
        [c.y_train for c in data.clients],
        transport.pool.x.device,
    )
    experiment.data = data
    experiment.transport = dataclasses.replace(transport, pool=pool)


def with_robust_aggregation(config: RunConfig, robust: str, params: Mapping[str, Any]) -> RunConfig:
    """``config`` with ``aggregation.robust`` set to ``robust`` and its parameters (validated
    like the YAML: `build_experiment` then refuses what cannot work)."""
    document = config.model_dump(mode="json")
    document["aggregation"] = {**document["aggregation"], "robust": {"method": robust, **params}}
    return parse_config(document)


def _success_rate(experiment: Experiment, attack: str, trigger: dict[str, Any]) -> float | None:
    """The attack's success rate on the global test rows (None for sign_flip: untargeted);
    ``trigger`` holds the backdoor's target label, trigger size and value."""
    model, params, data = experiment.model, experiment.state.params, experiment.data
    if attack == "sign_flip":
        return None
    if ATTACKS[attack][0] == "label_flip":
        return label_flip_success_rate(
            model, params, data.x_test, data.y_test, num_classes=data.num_classes
        )
    return attack_success_rate(model, params, data.x_test, data.y_test, **trigger)


def _default_server_lr(optimizer: str) -> float:
    """The server rate η that ``optimizer`` uses when ``server.lr`` is not set."""
    return inspect.signature(SERVER_OPTIMIZERS[optimizer]).parameters["lr"].default


def _metric(result: PoisoningResult | None, metric: str) -> float:
    if result is None:
        return math.nan
    value = result.accuracy if metric == "accuracy" else result.attack_success_rate
    return math.nan if value is None else value


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def run_poisoning_on_config(
    config: RunConfig, *, num_malicious: int = 1, seed: int = 0
) -> PoisoningGrid:
    """``veil attack poisoning``: every attack of `ATTACKS` by ``num_malicious`` clients against
    the run as ``config`` describes it (its own aggregator: the mean, DP-FedAvg, SecAgg+, HE, or
    ``aggregation.robust``), next to the clean run."""
    attacks = [a for a in ATTACKS if a != "none"]
    clean = run_poisoning(config, attack="none", num_malicious=0, seed=seed)
    grid = run_poisoning_grid(config, attacks, [None], num_malicious=num_malicious, seed=seed)
    return PoisoningGrid((clean, *grid.results))
