"""A secure-training run (``task: mpc_training``), e.g. the two_hospitals_mpc example.

Two or three hospitals split breast-cancer records by patients (rows) or by measurements
(feature columns), train one model on secret shares (`veil.mpc.training`), each hospital in its
own process on TLS links, and release the model or only each hospital's predictions. For
comparison the same SGD runs in the clear on the pooled rows, with the exact sigmoid.
Scaling: every feature is standardised with the mean and standard deviation of the pooled
training rows. The hospitals start from raw features and compute these inside the run
(`veil.mpc.scaling`: two secure sums for a rows split, each hospital's own columns for a
features split); the plaintext comparison uses the same scaling computed in the clear.
"""

from __future__ import annotations

import time
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from veil.config import DataConfig
from veil.data import federate, load_dataset
from veil.errors import ConfigError
from veil.experiment import prepare_output_directory
from veil.mpc.beaver import TrustedDealer, plan_bytes
from veil.mpc.config import MpcConfig
from veil.mpc.nonlinear import sigmoid_error
from veil.mpc.party import OperationCost
from veil.mpc.plaintext import logits, train_plaintext
from veil.mpc.runner import run_parties
from veil.mpc.training import (
    PartyData,
    PartyOutput,
    TrainingSpec,
    mask_plan,
    secure_training_program,
    triple_plan,
)
from veil.report import ReportSection, write_json_atomic, write_report

__all__ = ["claim", "prepare_parties", "run_mpc_training", "train_securely"]


def prepare_parties(
    mpc: MpcConfig, data: DataConfig, seed: int
) -> tuple[TrainingSpec, list[PartyData], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each hospital's private data (raw features: the parties standardise them inside the run,
    `veil.mpc.scaling`), the public spec, and the pooled (train x, train y, test x, test y) in
    the parties' order, standardised in the clear, for the plaintext comparison and scoring."""
    dataset = load_dataset(data.dataset, seed=seed)
    if dataset.num_classes != 2 or len(dataset.feature_shape) != 1:
        raise ConfigError(
            f"mpc_training needs a binary data set of flat features (got {data.dataset!r}); "
            "use breast_cancer or fraud"
        )
    raw = replace(dataset, scaling="fixed", pixel_max=1.0)
    party_data, (row_counts, feature_counts, test_counts) = _split(mpc, data, raw, seed)
    pooled = _pooled(mpc.split, _split(mpc, data, dataset, seed)[0])
    spec = TrainingSpec(
        row_counts=row_counts,
        feature_counts=feature_counts,
        test_row_counts=test_counts,
        split=mpc.split,
        model=mpc.model,
        hidden=mpc.hidden,
        epochs=mpc.epochs,
        batch_size=mpc.batch_size,
        learning_rate=mpc.learning_rate,
        frac_bits=mpc.fractional_bits,
        sigmoid=mpc.sigmoid,
        seed=seed,
        release=mpc.release,
        triples=mpc.triple_source,
        paillier_bits=mpc.paillier_bits,
        standardize=True,
    )
    return spec, party_data, pooled


def _split(mpc: MpcConfig, data: DataConfig, dataset, seed: int):
    """Each hospital's `PartyData` (scaled as ``dataset`` says) and the (row, feature, test row)
    counts of the spec."""
    parties = mpc.parties
    if mpc.split == "rows":
        fed = federate(
            dataset, method="iid", num_clients=parties, test_fraction=data.test_fraction, seed=seed
        )
        clients = fed.clients
        party_data = [PartyData(c.x_train, c.x_test, c.y_train, c.y_test) for c in clients]
        counts = (
            tuple(len(c.y_train) for c in clients),
            (dataset.feature_shape[0],) * parties,
            tuple(len(c.y_test) for c in clients),
        )
        return party_data, counts
    (client,) = federate(
        dataset, method="iid", num_clients=1, test_fraction=data.test_fraction, seed=seed
    ).clients
    columns = np.array_split(np.arange(dataset.feature_shape[0]), parties)
    if min(len(c) for c in columns) < 1:
        raise ConfigError(f"{parties} hospitals need at least {parties} feature columns")
    party_data = [
        PartyData(
            client.x_train[:, cols],
            client.x_test[:, cols],
            client.y_train if i == 0 else None,
            client.y_test if i == 0 else None,
        )
        for i, cols in enumerate(columns)
    ]
    counts = (
        (len(client.y_train),) * parties,
        tuple(len(c) for c in columns),
        (len(client.y_test),) * parties,
    )
    return party_data, counts


def _pooled(split: str, parts: list[PartyData]):
    if split == "rows":
        stack = (np.vstack, np.concatenate)
        return (
            stack[0]([p.x_train for p in parts]),
            stack[1]([p.y_train for p in parts]),
            stack[0]([p.x_test for p in parts]),
            stack[1]([p.y_test for p in parts]),
        )
    return (
        np.hstack([p.x_train for p in parts]),
        parts[0].y_train,
        np.hstack([p.x_test for p in parts]),
        parts[0].y_test,
    )


def train_securely(
    spec: TrainingSpec,
    party_data: list[PartyData],
    *,
    processes: bool,
    deadline: float,
    record: bool = False,
) -> tuple[list[PartyOutput], dict[str, OperationCost], dict[str, float]]:
    """Offline phase (trusted dealer, for two parties that do not make their own triples),
    then the parties' run. Returns each party's output (with its online message shapes if
    ``record``), the costs summed over parties, and the launcher-side timings."""
    started = time.perf_counter()
    triples = [None] * spec.parties
    dealer_bytes = 0
    if spec.parties == 2 and spec.triples == "dealer":
        plan, masks = triple_plan(spec), mask_plan(spec)
        triples = list(TrustedDealer().deal(plan, masks))
        dealer_bytes = 2 * (plan_bytes(plan) + masks.bytes_per_party())
    dealer_seconds = time.perf_counter() - started
    args = [(spec, data, triples[i], record) for i, data in enumerate(party_data)]
    results = run_parties(secure_training_program, args, processes=processes, deadline=deadline)
    costs: dict[str, OperationCost] = {}
    for result in results:
        for name, cost in result.costs.items():
            total = costs.setdefault(name, OperationCost())
            total.calls = max(total.calls, cost.calls)
            total.rounds = max(total.rounds, cost.rounds)
            total.bytes_sent += cost.bytes_sent
            total.bytes_received += cost.bytes_received
    timings = {
        "dealer_seconds": dealer_seconds,
        "dealer_bytes": dealer_bytes,
        "wall_seconds": time.perf_counter() - started,
    }
    return [r.value for r in results], costs, timings


def claim(mpc: MpcConfig) -> str:
    """The run's one-sentence statement of who learns what."""
    what = "patients (rows)" if mpc.split == "rows" else "measurements (feature columns)"
    if mpc.parties == 3:
        scheme = "ABY3 replicated sharing over Z_2^64, honest majority, no outside dealer "
        scheme += "(hospital 2 deals the masks of truncations)"
    elif mpc.triple_source == "dealer":
        scheme = "SecureML additive sharing over Z_2^64, Beaver triples from a dealer that "
        scheme += "colludes with neither hospital"
    else:
        scheme = "SecureML additive sharing over Z_2^64, Beaver triples made by the two "
        scheme += f"hospitals with Paillier-{mpc.paillier_bits}, no third party"
    release = (
        "the final model's weights"
        if mpc.release == "model"
        else "only the predicted labels of their own test patients (the model stays shared)"
    )
    public = (
        "how many patients each holds and the pooled per-feature mean and standard deviation "
        "used for scaling"
        if mpc.split == "rows"
        else "how many columns each holds (hospital 0 holds the labels)"
    )
    return (
        f"Each of the {mpc.parties} hospitals sees only uniformly random shares of the others' "
        f"{what} and of every intermediate value ({scheme}; comparisons by garbled circuits); "
        f"they learn {public}, and {release}; semi-honest, non-colluding parties; the model "
        "is not differentially private."
    )


def run_mpc_training(
    mpc: MpcConfig, data: DataConfig, seed: int, name: str, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Split the data among the hospitals, train securely and in the clear; metrics and report."""
    if not isinstance(mpc, MpcConfig) or not isinstance(data, DataConfig):
        raise ConfigError("run_mpc_training needs an MpcConfig and a DataConfig")
    started = time.perf_counter()
    out = None if out_dir is None else prepare_output_directory(Path(out_dir))
    spec, party_data, (x_train, y_train, x_test, y_test) = prepare_parties(mpc, data, seed)
    outputs, costs, timings = train_securely(
        spec, party_data, processes=mpc.transport == "processes", deadline=mpc.deadline_seconds
    )
    plain_started = time.perf_counter()
    plain = train_plaintext(
        mpc.model,
        x_train,
        y_train,
        hidden=mpc.hidden,
        epochs=mpc.epochs,
        batch_size=mpc.batch_size,
        learning_rate=mpc.learning_rate,
        seed=seed,
    )
    plain_seconds = time.perf_counter() - plain_started
    secure = _secure_scores(spec, outputs, x_test, y_test)
    plain_scores = _scores(logits(plain, x_test), y_test)
    epochs = len(outputs[0].epoch_seconds)
    rounds = [
        {
            "round": e + 1,
            "accuracy": secure["accuracy"] if e == epochs - 1 else None,
            "loss": secure["loss"] if e == epochs - 1 else None,
            "epsilon": None,
            "seconds": max(o.epoch_seconds[e] for o in outputs),
            "bytes": sum(o.epoch_bytes[e] for o in outputs),
        }
        for e in range(epochs)
    ]
    paillier = outputs[0].paillier
    paillier_bytes = sum(o.paillier.bytes_sent for o in outputs if o.paillier is not None)
    final = {
        **secure,
        "epsilon": None,
        "delta": None,
        "claim": claim(mpc),
        "seconds": time.perf_counter() - started,
        "online_seconds": max(o.online_seconds for o in outputs),
        "offline_seconds": max(o.offline_seconds for o in outputs) + timings["dealer_seconds"],
        "release_seconds": max(o.inference_seconds for o in outputs),
        "bytes": sum(c.bytes_sent for c in costs.values()),
        "offline_bytes": timings["dealer_bytes"] + paillier_bytes,
        "communication_rounds": sum(c.rounds for c in costs.values()),
    }
    metrics = {
        "config": {
            "name": name,
            "seed": seed,
            "task": "mpc_training",
            "data": data.model_dump(mode="json"),
            "mpc": mpc.model_dump(mode="json"),
        },
        "rounds": rounds,
        "final": final,
        "plaintext": {**plain_scores, "seconds": plain_seconds},
        "communication": {name: cost.as_dict() for name, cost in sorted(costs.items())},
        "sigmoid_max_error_on_[-2,2]": sigmoid_error(mpc.sigmoid),
        "paillier": None if paillier is None else vars(paillier),
    }
    if out is not None:
        write_json_atomic(metrics, out / "metrics.json")
        write_report(metrics, out / "report.html", sections=report_sections(metrics))
    return metrics


def _secure_scores(spec, outputs: list[PartyOutput], x_test, y_test) -> dict[str, float | None]:
    if spec.release == "model":
        return _scores(logits(outputs[0].weights, x_test), y_test)
    predictions = [o.predictions for o in outputs if o.predictions is not None]
    labels = np.concatenate(predictions)
    return {"accuracy": float(np.mean(labels == y_test)), "loss": None}


def _scores(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    loss = np.logaddexp(0.0, z) - y * z
    return {"accuracy": float(np.mean((z > 0) == (y == 1))), "loss": float(loss.mean())}


def report_sections(metrics: dict[str, Any]) -> list[ReportSection]:
    """Secure against plaintext training, and what each operation cost on the wire."""
    final, plain = metrics["final"], metrics["plaintext"]
    loss = "—" if final["loss"] is None else f"{final['loss']:.4f}"
    summary = (
        "<table><thead><tr><th>training</th><th>test accuracy</th><th>log-loss</th>"
        "<th>seconds</th></tr></thead><tbody>"
        f"<tr><td>secure (online phase)</td><td>{final['accuracy']:.4f}</td><td>{loss}</td>"
        f"<td>{final['online_seconds']:.2f}</td></tr>"
        f"<tr><td>plaintext, exact sigmoid</td><td>{plain['accuracy']:.4f}</td>"
        f"<td>{plain['loss']:.4f}</td><td>{plain['seconds']:.4f}</td></tr></tbody></table>"
        f"<p>Offline phase {final['offline_seconds']:.2f} s "
        f"({final['offline_bytes'] / 1e6:.2f} MB); "
        f"online {final['bytes'] / 1e6:.2f} MB in {final['communication_rounds']} rounds; "
        f"release {final['release_seconds']:.2f} s.</p>"
    )
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{c['calls']}</td><td>{c['rounds']}</td>"
        f"<td>{c['bytes_sent']:,}</td></tr>"
        for name, c in metrics["communication"].items()
    )
    table = (
        "<p>Calls and rounds are per party (the most of any party); bytes are summed over "
        "parties.</p><table><thead><tr><th>operation</th><th>calls</th><th>rounds</th>"
        f"<th>bytes sent</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return [
        ReportSection("Secure training against plaintext", summary),
        ReportSection("Communication per operation", table),
    ]
