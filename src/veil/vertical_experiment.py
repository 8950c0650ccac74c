"""A vertical federated run (``task: vertical_training``), e.g. the fraud_vertical example.

A bank (labels and card features) and an e-commerce partner (other features about partly the
same customers) train one logistic regression without showing each other their data:

1. ECDH-PSI (`veil.he.psi`) finds the customers they share, and only those;
2. hetero logistic regression with Paillier encryption (`veil.he.vertical`) trains on the shared
   training customers, an arbiter holding the key and seeing only masked gradients;
3. the model is scored on the shared test customers (the partner sends its partial scores for
   those rows to the bank, as in FATE's prediction).

For comparison the run also trains, in plaintext on the pooled aligned features (same rows,
same split, same scaling), the same mini-batch SGD with the exact sigmoid (``centralized``:
the target to match), with the Taylor residual (``centralized_taylor``: what HE computes, up to
fixed-point rounding), scikit-learn's converged ``LogisticRegression``, and the bank alone.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from veil.config import VerticalConfig
from veil.data.vertical import make_vertical_fraud
from veil.errors import ConfigError
from veil.experiment import prepare_output_directory
from veil.he.psi import run_psi
from veil.he.vertical import minibatches, train_hetero_lr
from veil.report import ReportSection, write_json_atomic, write_report

__all__ = ["claim", "evaluate", "run_vertical_training", "sgd_logistic"]


def sgd_logistic(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    l2: float,
    seed: int,
    taylor: bool,
) -> np.ndarray:
    """Plaintext mini-batch SGD of logistic regression, the batch order of `train_hetero_lr`.

    Returns ``[intercept, *weights]``; ``taylor`` uses the residual ``0.25 z + 0.5 - y``
    instead of ``σ(z) - y``. The intercept is not penalized.
    """
    design = np.hstack([np.ones((x.shape[0], 1)), x])
    weights = np.zeros(design.shape[1])
    penalized = np.r_[0.0, np.ones(x.shape[1])]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for rows in minibatches(x.shape[0], batch_size, rng):
            z = design[rows] @ weights
            residual = 0.25 * z + 0.5 - y[rows] if taylor else _sigmoid(z) - y[rows]
            gradient = design[rows].T @ residual / len(rows) + l2 * penalized * weights
            weights = weights - learning_rate * gradient
    return weights


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def evaluate(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy (threshold 0.5), ROC AUC and mean log-loss of logits against labels."""
    loss = np.logaddexp(0.0, logits) - y * logits  # -log σ(z) for y=1, -log(1-σ(z)) for y=0
    auc = roc_auc_score(y, logits) if 0 < y.sum() < y.size else float("nan")
    return {
        "accuracy": float(np.mean((logits > 0) == (y == 1))),
        "auc": float(auc),
        "loss": float(loss.mean()),
    }


def claim(key_bits: int, intersection: int) -> str:
    """The claim sentence of a vertical run."""
    return (
        f"The bank and the partner learn only the {intersection} customers they share "
        "(ECDH-PSI over X25519) and each other's number of customers; during training each "
        f"sees only Paillier-{key_bits} ciphertexts of the other's values, and the arbiter, "
        "which holds the key and colludes with neither, sees only gradients masked by uniform "
        "random values; scoring shows the bank the partner's partial scores; semi-honest "
        "parties; the model is not differentially private."
    )


def run_vertical_training(
    config: VerticalConfig, seed: int, name: str, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Generate data, align by PSI, train hetero LR and the plaintext baselines; metrics."""
    if not isinstance(config, VerticalConfig):
        raise ConfigError(f"config must be a VerticalConfig (got {type(config).__name__})")
    started = time.perf_counter()
    out = None if out_dir is None else prepare_output_directory(Path(out_dir))
    data = make_vertical_fraud(
        num_shared=config.num_shared,
        num_bank_only=config.num_bank_only,
        num_partner_only=config.num_partner_only,
        num_partner_signals=config.num_partner_signals,
        fraud_rate=config.fraud_rate,
        test_fraction=config.test_fraction,
        seed=seed,
    )
    psi = run_psi(data.bank.ids, data.partner.ids, names=("bank", "partner"))
    bank_rows = data.bank.rows_of(psi.intersection)
    partner_rows = data.partner.rows_of(psi.intersection)
    test = data.bank.is_test[bank_rows]
    if not np.array_equal(test, data.partner.is_test[partner_rows]):
        raise ConfigError("bank and partner disagree on the train/test split of shared ids")
    if test.all() or not test.any():
        raise ConfigError("the shared customers must fall on both sides of the split")
    x_bank, x_partner = data.bank.x[bank_rows], data.partner.x[partner_rows]
    y = data.bank.y[bank_rows]
    train = ~test
    sgd = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "l2": config.l2,
        "seed": seed,
    }
    rounds: list[dict[str, Any]] = []

    def record(epoch: int, guest_w: np.ndarray, host_w: np.ndarray, seconds: float) -> None:
        logits = guest_w[0] + x_bank[test] @ guest_w[1:] + x_partner[test] @ host_w
        scores = evaluate(logits, y[test])
        rounds.append({"round": epoch + 1, **scores, "epsilon": None, "seconds": seconds})

    result = train_hetero_lr(
        x_bank[train],
        y[train],
        x_partner[train],
        key_bits=config.key_bits,
        threads=config.threads,
        on_epoch=record,
        **sgd,
    )
    hetero_weights = np.r_[result.guest_weights, result.host_weights]
    pooled = np.hstack([x_bank, x_partner])
    baselines, taylor_weights = _baselines(pooled, y, train, test, x_bank.shape[1], sgd)
    hetero = evaluate(pooled[test] @ hetero_weights[1:] + hetero_weights[0], y[test])
    final = {
        **hetero,
        "epsilon": None,
        "delta": None,
        "claim": claim(config.key_bits, len(psi.intersection)),
        "seconds": time.perf_counter() - started,
        "training_seconds": float(sum(result.epoch_seconds)),
        "bytes_exchanged": result.bytes_exchanged + psi.bytes_exchanged,
        "max_weight_gap_to_plaintext_taylor": float(np.abs(hetero_weights - taylor_weights).max()),
    }
    metrics = {
        "config": {
            "name": name,
            "seed": seed,
            "task": "vertical_training",
            "vertical": config.model_dump(mode="json"),
        },
        "rounds": rounds,
        "final": final,
        "psi": {
            "protocol": "ECDH-PSI over X25519",
            "bank_customers": psi.sizes[0],
            "partner_customers": psi.sizes[1],
            "intersection": len(psi.intersection),
            "seconds": psi.seconds,
            "bytes_exchanged": psi.bytes_exchanged,
        },
        "hetero_lr": {
            "train_rows": int(train.sum()),
            "test_rows": int(test.sum()),
            "test_frauds": int(y[test].sum()),
            "majority_accuracy": float(max(y[test].mean(), 1.0 - y[test].mean())),
            "bank_features": x_bank.shape[1],
            "partner_features": x_partner.shape[1],
            "key_bits": result.key_bits,
            "decryptions": result.decryptions,
            "bytes_exchanged": result.bytes_exchanged,
        },
        "baselines": baselines,
    }
    if out is not None:
        write_json_atomic(metrics, out / "metrics.json")
        write_report(metrics, out / "report.html", sections=[comparison_section(metrics)])
    return metrics


def _baselines(
    pooled: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    num_bank: int,
    sgd: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    """Test scores of the plaintext references on the same rows and split; Taylor weights."""
    x_train, y_train, x_test, y_test = pooled[train], y[train], pooled[test], y[test]
    exact = sgd_logistic(x_train, y_train, taylor=False, **sgd)
    taylor = sgd_logistic(x_train, y_train, taylor=True, **sgd)
    bank = sgd_logistic(x_train[:, :num_bank], y_train, taylor=False, **sgd)
    converged = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    scores = {
        "centralized": evaluate(x_test @ exact[1:] + exact[0], y_test),
        "centralized_taylor": evaluate(x_test @ taylor[1:] + taylor[0], y_test),
        "centralized_sklearn": evaluate(converged.decision_function(x_test), y_test),
        "bank_only": evaluate(x_test[:, :num_bank] @ bank[1:] + bank[0], y_test),
    }
    return scores, taylor


def comparison_section(metrics: dict[str, Any]) -> ReportSection:
    """A report section: hetero LR against the plaintext baselines, and the PSI figures."""
    labels = {
        "centralized": "centralized SGD, exact sigmoid (target)",
        "centralized_taylor": "centralized SGD, Taylor residual",
        "centralized_sklearn": "scikit-learn LogisticRegression (converged)",
        "bank_only": "bank's features only, exact sigmoid",
    }
    rows = [("hetero LR (Paillier, Taylor)", metrics["final"])]
    rows += [(labels[k], v) for k, v in metrics["baselines"].items()]
    body = "".join(
        f"<tr><td>{escape(label)}</td><td>{s['accuracy']:.4f}</td><td>{s['auc']:.4f}</td>"
        f"<td>{s['loss']:.4f}</td></tr>"
        for label, s in rows
    )
    psi, hetero = metrics["psi"], metrics["hetero_lr"]
    summary = (
        f"<p>PSI: bank {psi['bank_customers']} customers, partner "
        f"{psi['partner_customers']}, shared {psi['intersection']}, {psi['seconds']:.2f} s. "
        f"Training: {hetero['train_rows']} rows, {metrics['final']['training_seconds']:.1f} s, "
        f"{hetero['decryptions']} decryptions by the arbiter, "
        f"{metrics['final']['bytes_exchanged'] / 1e6:.1f} MB exchanged. Test: "
        f"{hetero['test_rows']} shared customers, {hetero['test_frauds']} frauds (always "
        f"predicting the majority class scores {hetero['majority_accuracy']:.4f}: with so few "
        "frauds, ROC AUC is the informative figure).</p>"
    )
    table = (
        "<table><thead><tr><th>model</th><th>accuracy</th><th>ROC AUC</th><th>log-loss</th>"
        f"</tr></thead><tbody>{body}</tbody></table>"
    )
    return ReportSection("Hetero LR against plaintext baselines", summary + table)
