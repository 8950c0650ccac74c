"""The privacy–utility–cost trade-off table: one run config, measured under each protection.

`tradeoff_settings` derives the grid from a base config — no protection; client-level DP at
ε ∈ {1, 3, 8}; SecAgg+; encrypted aggregation (packed BFV); and DP combined with each — keeping
everything else (data, partition, model, training) equal. `measure_setting` runs one of them and
measures, on the same footing:

- accuracy of the final model on the held-out rows, and ε from the run's privacy ledger;
- membership-inference ROC AUC of RMIA (Zarifzadeh et al. 2024, `veil.attacks.membership`): the
  setting is trained on a random half of each client's rows, 16 reference runs on other halves,
  averaged over ``MIA_SEEDS`` splits. SecAgg+ and HE hide updates, not the model: their rows
  attack the same run without the secure layer (client-level DP then central, same ε);
- PSNR of an Inverting-Gradients reconstruction (Geiping et al. 2020) of one training row from
  the server's view of its client's round-1 update (`veil.audit.server_view`);
- wall time of the run and the bytes one client uploads per round.

Each setting keeps the base config's DP and secure-aggregation parameters where it has them;
otherwise defaults that hold for small federations (clip 0.1, δ = 1e-5, RDP accounting under
secure aggregation, BFV with 24-bit values).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.attacks.gradient_inversion import cross_entropy_gradient, gradient_attack_scores
from veil.attacks.membership import run_membership_attack
from veil.audit.server_view import server_view_defence
from veil.config import RunConfig, parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment, clients_per_round, execute
from veil.report import ReportSection, write_json_atomic, write_text_atomic
from veil.report.html import render_page, table_html

EPSILONS = (1.0, 3.0, 8.0)
HEADER = ("setting", "accuracy", "ε", "MIA AUC", "PSNR (dB)", "seconds", "bytes/client")
MIA_SEEDS = (0, 1, 2)  # one split's AUC scatters by about ±0.02 on breast cancer
_DP_DEFAULTS = {"level": "client", "delta": 1e-5, "clip_norm": 0.1}
VIEW_NOTE = (
    "MIA AUC: RMIA membership inference against the setting trained on half of each client's "
    "rows, mean of 3 splits (0.5 is chance; SecAgg+ and HE rows attack the released model, "
    "trained as without the secure layer). PSNR: Inverting Gradients on one training row from "
    "what the server sees of its client's round-1 update: the update itself without protection and "
    "under client-level DP (the server adds the noise after it sees the clipped update), only "
    "the round's sum under SecAgg+ and HE. Seconds: the run's wall time; bytes/client: what "
    "one client uploads per round."
)


@dataclass(frozen=True)
class TradeoffSetting:
    """One row of the grid: its label and the full run config that implements it."""

    name: str
    config: RunConfig


def tradeoff_settings(
    base: RunConfig, epsilons: tuple[float, ...] = EPSILONS
) -> list[TradeoffSetting]:
    """The grid of protections applied to ``base`` (which must be a federated training run).

    Combined rows (DP + SecAgg+, DP + HE) use the base config's target ε, or the largest of
    ``epsilons`` when it has none.
    """
    if base.task != "federated_training":
        raise ConfigError(f"veil tradeoff needs task federated_training (got {base.task})")
    if not epsilons or min(epsilons) <= 0:
        raise ConfigError(f"epsilons must be positive numbers (got {list(epsilons)})")
    plain = base.model_dump(mode="json")
    privacy = {**_DP_DEFAULTS, **(plain.pop("privacy") or {})}
    secagg = plain.pop("secure_aggregation") or {}
    encryption = plain.pop("encryption") or {"scheme": "bfv", "value_bits": 24}
    for key in ("noise_multiplier", "target_epsilon", "budget_epsilon", "ledger"):
        privacy.pop(key, None)
    combined = base.privacy.target_epsilon if base.privacy else None
    combined = combined or max(epsilons)
    clip = {"clip_norm": privacy["clip_norm"]}
    secure_dp = {**privacy, "accountant": "rdp", "target_epsilon": combined}

    def setting(name: str, **sections: Any) -> TradeoffSetting:
        return TradeoffSetting(name, parse_config({**plain, **sections}))

    rows = [setting("none")]
    rows += [setting(f"DP ε={e:g}", privacy={**privacy, "target_epsilon": e}) for e in epsilons]
    rows += [
        setting("SecAgg+", secure_aggregation={**clip, **secagg}),
        setting("HE", encryption={**clip, **encryption}),
        setting(f"DP ε={combined:g} + SecAgg+", privacy=secure_dp, secure_aggregation=secagg),
        setting(f"DP ε={combined:g} + HE", privacy=secure_dp, encryption=encryption),
    ]
    return rows


def measure_setting(
    setting: TradeoffSetting,
    *,
    attack_steps: int = 300,
    mia_cache: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run one setting and measure its row of the table (see the module docstring); the
    seconds count building the run (keys, calibration) and its rounds, not the attacks.
    ``mia_cache`` shares membership figures between settings that attack the same run."""
    started = time.perf_counter()
    experiment = build_experiment(setting.config)
    seconds = time.perf_counter() - started
    psnr = _reconstruction_psnr(experiment, attack_steps)
    started = time.perf_counter()
    metrics = execute(experiment)
    seconds += time.perf_counter() - started
    final = metrics["final"]
    return {
        "setting": setting.name,
        "accuracy": final["accuracy"],
        "epsilon": final["epsilon"],
        "mia_auc": membership_auc(setting.config, cache=mia_cache),
        "reconstruction_psnr": psnr,
        "seconds": seconds,
        "bytes_per_client": final["bytes_per_client"],
        "claim": final["claim"],
    }


def membership_auc(
    config: RunConfig,
    seeds: tuple[int, ...] = MIA_SEEDS,
    cache: dict[str, float] | None = None,
) -> float:
    """Mean RMIA ROC AUC against the model ``config`` trains (see the module docstring).

    SecAgg+ and HE settings attack the same run without the secure layer, so several settings
    share one attacked run: with ``cache`` (keyed by that run's config) it is attacked once."""
    document = config.model_dump(mode="json")
    document["secure_aggregation"] = document["encryption"] = None
    attacked = parse_config(document)
    key = attacked.model_dump_json()
    if cache is not None and key in cache:
        return cache[key]
    aucs = [
        run_membership_attack(attacked, attacks=("rmia",), seed=seed).attacks["rmia"].auc
        for seed in seeds
    ]
    auc = float(np.mean(aucs))
    if cache is not None:
        cache[key] = auc
    return auc


def _reconstruction_psnr(experiment, steps: int) -> float:
    """PSNR of the reconstruction of client 0's first row from the server's round-1 view."""
    data, model, params = experiment.data, experiment.model, experiment.state.params
    rows = [
        _first_row(c)
        for c in data.clients[: clients_per_round(experiment.config, data.num_clients)]
    ]
    others = [cross_entropy_gradient(model, params, x, y) for x, y in rows[1:]]
    x, y = rows[0]
    everything = np.concatenate([c.x_train for c in data.clients])
    scores = gradient_attack_scores(
        model,
        params,
        x,
        y,
        defence=server_view_defence(experiment, others),
        steps=steps,
        bounds=(float(everything.min()), float(everything.max())),  # the attacker knows them
    )
    return scores["psnr"]


def _first_row(client) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(client.x_train[:1]), torch.as_tensor(client.y_train[:1])


def run_tradeoff(
    base: RunConfig,
    *,
    epsilons: tuple[float, ...] = EPSILONS,
    attack_steps: int = 300,
    on_setting: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Measure every setting of the grid; ``{"rows": [...]}`` in the order of the grid.

    ``on_setting(index, total, name)`` is called before each setting (for progress bars).
    """
    settings = tradeoff_settings(base, epsilons)
    rows, mia_cache = [], {}
    for index, setting in enumerate(settings):
        if on_setting is not None:
            on_setting(index, len(settings), setting.name)
        rows.append(measure_setting(setting, attack_steps=attack_steps, mia_cache=mia_cache))
    return {"config": base.name, "rows": rows}


def write_tradeoff(result: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``tradeoff.md``, ``tradeoff.html`` and ``tradeoff.json`` into ``out_dir``."""
    out = Path(out_dir)
    rows = result["rows"]
    title = f"veil trade-off table: {result['config']}"
    note = escape(VIEW_NOTE)
    section = ReportSection("Privacy, utility and cost", f"{html_table(rows)}<p>{note}</p>")
    write_text_atomic(f"# {title}\n\n{markdown_table(rows)}\n{VIEW_NOTE}\n", out / "tradeoff.md")
    write_text_atomic(render_page(title, [section]), out / "tradeoff.html")
    write_json_atomic(result, out / "tradeoff.json")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table in GitHub Markdown: one line per setting, ``—`` for a missing value."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    return "\n".join(lines) + "\n"


def _cells(row: dict[str, Any]) -> list[str]:
    def number(value: Any, spec: str) -> str:
        if value is None:
            return "—"
        return "∞" if math.isinf(value) else format(value, spec)

    return [
        str(row["setting"]),
        number(row["accuracy"], ".3f"),
        number(row["epsilon"], ".2f"),
        number(row["mia_auc"], ".3f"),
        number(row["reconstruction_psnr"], ".1f"),
        number(row["seconds"], ".2f"),
        number(row["bytes_per_client"], ",.0f"),
    ]


def html_table(rows: list[dict[str, Any]]) -> str:
    """The same table as an HTML fragment (every string escaped)."""
    return table_html(
        [escape(h) for h in HEADER], [[escape(cell) for cell in _cells(row)] for row in rows]
    )
