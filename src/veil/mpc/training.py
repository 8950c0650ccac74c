"""Secure training and inference of logistic regression and a small MLP on secret-shared data.

Each hospital secret-shares its own rows (``split="rows"``) or its own feature columns
(``split="features"``, labels at party 0) once; from then on every party holds only shares of
the joint design matrix and labels. Mini-batch SGD then runs on shares, step for step as
`veil.mpc.plaintext.train_plaintext` (same initial weights, same batches):

- logistic regression: z = X_b w;  r = (σ̃(z) − y)·η/|b|;  w ← w − X_bᵀ r
- MLP (one hidden ReLU layer): the same at the output, back-propagated through
  H = ReLU(X_b W₁) with the ReLU derivative the garbled comparison already produced.

σ̃ is by default the piecewise sigmoid clip(0.5 + z/4, 0, 1) (`veil.mpc.nonlinear`, two garbled
ReLUs per value). ``polynomial`` (a degree-5 least-squares fit, three products, no comparison)
is several times faster for logistic regression and within about a point of it on breast
cancer; the first-order ``taylor`` line costs several points (both measured in docs/mpc.md).
The batch order and initial weights come from the public seed; nothing else is revealed until
the end, when either the model is opened to every party (``release="model"``) or it stays
shared and each hospital learns only the predicted labels of its own test rows
(``release="predictions"``, secure inference).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from veil.errors import ConfigError
from veil.mpc.beaver import TripleSource
from veil.mpc.data_mask import MaskedUse, MaskPlan
from veil.mpc.nonlinear import SIGMOIDS, relu, sigmoid, sign_bit
from veil.mpc.paillier_triples import PaillierTripleCost, generate_paillier_triples
from veil.mpc.party import Party
from veil.mpc.plaintext import MODELS, batch_order, initial_weights
from veil.mpc.replicated import ReplicatedProtocol
from veil.mpc.scaling import standardize
from veil.mpc.sharing import AdditiveProtocol, ArithmeticProtocol
from veil.mpc.tensor import SharedTensor, concatenate

__all__ = [
    "MAX_TRAINING_FRACTIONAL_BITS",
    "PartyData",
    "PartyOutput",
    "TrainingSpec",
    "forward",
    "mask_plan",
    "secure_training_program",
    "sgd_step",
    "triple_plan",
]

MAX_TRAINING_FRACTIONAL_BITS = 18  # each extra bit makes a wrong truncation ~4x as likely
SPLITS, RELEASES, TRIPLE_SOURCES = (
    ("rows", "features"),
    ("model", "predictions"),
    ("dealer", "paillier"),
)


@dataclass(frozen=True)
class TrainingSpec:
    """What every party knows in public: the model, the schedule, and the data's shapes.

    ``row_counts[i]`` / ``feature_counts[i]`` are party i's training rows / feature columns
    (rows split: every party has all d features; features split: every party has all n rows).
    ``standardize``: the parties hold raw features and scale them inside the run
    (`veil.mpc.scaling`), learning only the pooled mean and standard deviation.
    """

    row_counts: tuple[int, ...]
    feature_counts: tuple[int, ...]
    test_row_counts: tuple[int, ...]
    split: str = "rows"
    model: str = "logistic"
    hidden: int = 8
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.1
    frac_bits: int = 16
    sigmoid: str = "piecewise"
    seed: int = 0
    release: str = "model"
    triples: str = "dealer"
    paillier_bits: int = 3072
    standardize: bool = False

    def __post_init__(self) -> None:
        parties = len(self.row_counts)
        choices = {
            "split": SPLITS,
            "model": MODELS,
            "sigmoid": SIGMOIDS,
            "release": RELEASES,
            "triples": TRIPLE_SOURCES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed} (got {getattr(self, key)!r})")
        if parties not in (2, 3) or {len(self.feature_counts), len(self.test_row_counts)} != {
            parties
        }:
            raise ConfigError("row, feature and test row counts must be given for 2 or 3 parties")
        if min(self.row_counts) < 1 or min(self.feature_counts) < 1:
            raise ConfigError("every party needs at least one row and one feature")
        if self.split == "features" and len(set(self.row_counts)) != 1:
            raise ConfigError("with split 'features' every party holds the same rows")
        if self.split == "rows" and len(set(self.feature_counts)) != 1:
            raise ConfigError("with split 'rows' every party holds the same features")
        for key in ("epochs", "batch_size", "hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1 (got {getattr(self, key)})")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0 (got {self.learning_rate})")
        if not 1 <= self.frac_bits <= MAX_TRAINING_FRACTIONAL_BITS:
            raise ConfigError(
                f"frac_bits must be in 1..{MAX_TRAINING_FRACTIONAL_BITS} for training (got "
                f"{self.frac_bits}): products carry twice as many in the 64-bit ring, and "
                "more make a wrong truncation likely"
            )

    @property
    def parties(self) -> int:
        """Number of parties."""
        return len(self.row_counts)

    @property
    def num_rows(self) -> int:
        """Training rows in all."""
        return sum(self.row_counts) if self.split == "rows" else self.row_counts[0]

    @property
    def num_features(self) -> int:
        """Feature columns in all."""
        return self.feature_counts[0] if self.split == "rows" else sum(self.feature_counts)

    @property
    def num_test_rows(self) -> int:
        """Test rows in all."""
        return sum(self.test_row_counts) if self.split == "rows" else self.test_row_counts[0]


@dataclass(frozen=True)
class PartyData:
    """One party's private inputs: its training and test features, and labels if it has any."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass
class PartyOutput:
    """What one party ends with: the opened model, or the predictions for its test rows."""

    weights: list[np.ndarray] | None
    predictions: np.ndarray | None
    offline_seconds: float
    online_seconds: float
    inference_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_bytes: list[int] = field(default_factory=list)
    paillier: PaillierTripleCost | None = None
    trace: list | None = None


def sgd_step(
    spec: TrainingSpec, weights: list[SharedTensor], x: SharedTensor, y: SharedTensor
) -> list[SharedTensor]:
    """One SGD step on a shared batch (``x`` with its ones column, ``y`` integer ``[b, 1]``).

    The step size η/|b| = m·2^-k (m in [0.5, 1)) is applied in two public pieces that cost no
    round: m inside the sigmoid's coefficients and on the labels, 2^-k on the gradient
    products' truncation."""
    rate, halvings = _mantissa_and_halvings(spec.learning_rate / x.shape[0])
    if spec.model == "logistic":
        (w,) = weights
        residual = sigmoid(x @ w, spec.sigmoid, scale=rate) - y * rate
        return [w - x.T.matmul(residual, halvings)]
    first, second = weights
    hidden, slope = relu(x @ first)
    hidden = _with_ones(hidden)
    residual = sigmoid(hidden @ second, spec.sigmoid, scale=rate) - y * rate
    back = (residual @ second[1:].T) * slope
    return [first - x.T.matmul(back, halvings), second - hidden.T.matmul(residual, halvings)]


def _mantissa_and_halvings(step: float) -> tuple[float, int]:
    """(m, k) with step = m · 2^-k, m in [0.5, 1) (k = 0 and m = step for steps of 0.5 or
    more)."""
    mantissa, exponent = math.frexp(step)
    return (mantissa, -exponent) if exponent < 0 else (step, 0)


def forward(spec: TrainingSpec, weights: list[SharedTensor], x: SharedTensor) -> SharedTensor:
    """Shared logits ``[n, 1]`` of the rows ``x`` (with their ones column)."""
    if spec.model == "logistic":
        return x @ weights[0]
    hidden, _ = relu(x @ weights[0])
    return _with_ones(hidden) @ weights[1]


def _with_ones(x: SharedTensor) -> SharedTensor:
    return concatenate([x.protocol.constant(np.ones((x.shape[0], 1))), x], axis=1)


def mask_plan(spec: TrainingSpec) -> MaskPlan | None:
    """The data mask and masked products of a two-party run with dealer triples (SecureML's
    one-time mask, `veil.mpc.data_mask`): each step's batch, forward and transposed back;
    ``None`` for runs that do not mask (three parties, Paillier triples)."""
    if not _masks_data(spec):
        return None
    d, width = spec.num_features + 1, 1 if spec.model == "logistic" else spec.hidden
    uses = []
    for epoch in batch_order(spec.num_rows, spec.batch_size, spec.epochs, spec.seed):
        for batch in epoch:
            rows = tuple(int(r) for r in batch)
            uses += [MaskedUse(rows, False, (d, width)), MaskedUse(rows, True, (len(rows), width))]
    return MaskPlan((spec.num_rows, d), tuple(uses))


def _masks_data(spec: TrainingSpec) -> bool:
    return spec.parties == 2 and spec.triples == "dealer"


def triple_plan(spec: TrainingSpec) -> Counter:
    """Every Beaver triple a two-party run of ``spec`` uses (training and inference), but the
    products of the masked data matrix (`mask_plan`)."""
    d, h = spec.num_features + 1, spec.hidden
    masked = _masks_data(spec)
    plan: Counter = Counter()

    def relu_triples(shape: tuple[int, ...]) -> None:
        plan[("mul", shape, shape)] += 2  # Y2A of the comparison, then x · 1[x >= 0]

    for epoch in batch_order(spec.num_rows, spec.batch_size, spec.epochs, spec.seed):
        for rows in epoch:
            b = len(rows)
            width = 1 if spec.model == "logistic" else h
            if not masked:
                plan[("matmul", (b, d), (d, width))] += 1
                plan[("matmul", (d, b), (b, width))] += 1
            if spec.model == "mlp":
                relu_triples((b, h))
                plan[("matmul", (b, h + 1), (h + 1, 1))] += 1
                plan[("matmul", (h + 1, b), (b, 1))] += 1
                plan[("matmul", (b, 1), (1, h))] += 1
                plan[("mul", (b, h), (b, h))] += 1
            if spec.sigmoid == "piecewise":
                relu_triples((2 * b, 1))
            elif spec.sigmoid == "polynomial":
                plan[("mul", (b, 1), (b, 1))] += 3  # u = z²/64, u², z·(a₁ + a₃u + a₅u²)/8
    if spec.release == "predictions":
        m = spec.num_test_rows
        if spec.model == "logistic":
            plan[("matmul", (m, d), (d, 1))] += 1
        else:
            plan[("matmul", (m, d), (d, h))] += 1
            relu_triples((m, h))
            plan[("matmul", (m, h + 1), (h + 1, 1))] += 1
        plan[("mul", (m, 1), (m, 1))] += 1  # Y2A of the label's comparison
    return plan


def _protocol(party: Party, spec: TrainingSpec, triples: TripleSource | None) -> ArithmeticProtocol:
    if party.num_parties != spec.parties:
        raise ConfigError(
            f"the spec is for {spec.parties} parties, the run has {party.num_parties}"
        )
    if spec.parties == 3:
        return ReplicatedProtocol(party, spec.frac_bits)
    return AdditiveProtocol(party, spec.frac_bits, triples)


def _share_features(
    protocol: ArithmeticProtocol, spec: TrainingSpec, x: np.ndarray, counts: tuple[int, ...]
) -> SharedTensor:
    """The joint design matrix, ones column first, from every party's rows or columns."""
    parties = range(spec.parties)
    if spec.split == "rows":
        blocks = protocol.share_each({i: (counts[i], spec.num_features) for i in parties}, x)
        joined = concatenate([blocks[i] for i in parties], axis=0)
    else:
        blocks = protocol.share_each({i: (counts[0], spec.feature_counts[i]) for i in parties}, x)
        joined = concatenate([blocks[i] for i in parties], axis=1)
    return _with_ones(joined)


def _share_labels(
    protocol: ArithmeticProtocol, spec: TrainingSpec, y: np.ndarray | None
) -> SharedTensor:
    """The joint labels as an integer sharing ``[n, 1]`` (party 0's alone, features split)."""
    column = None if y is None else np.asarray(y, np.int64).reshape(-1, 1)
    if spec.split == "features":
        return protocol.share(0, column, (spec.num_rows, 1), integer=True)
    shapes = {i: (count, 1) for i, count in enumerate(spec.row_counts)}
    labels = protocol.share_each(shapes, column, integer=True)
    return concatenate([labels[i] for i in range(spec.parties)], axis=0)


def secure_training_program(
    party: Party,
    spec: TrainingSpec,
    data: PartyData,
    triples: TripleSource | None = None,
    record: bool = False,
) -> PartyOutput:
    """What every party runs (`veil.mpc.runner.run_parties`): offline phase if the parties make
    their own triples, sharing, training, then the release (see the module docstring).
    ``record`` keeps the online phase's message shapes in the output (`veil.mpc.replay`)."""
    started, paillier = time.perf_counter(), None
    if spec.parties == 2 and spec.triples == "paillier":
        triples, paillier = generate_paillier_triples(party, triple_plan(spec), spec.paillier_bits)
    offline = time.perf_counter() - started
    protocol = _protocol(party, spec, triples)
    party.trace = [] if record else None
    online_started = time.perf_counter()
    if spec.standardize:
        data = standardize(protocol, spec.split, spec.num_rows, data)
    x = protocol.mask_data(_share_features(protocol, spec, data.x_train, spec.row_counts))
    y = _share_labels(protocol, spec, data.y_train)
    weights = [
        protocol.constant(w)
        for w in initial_weights(spec.model, spec.num_features, spec.hidden, spec.seed)
    ]
    epoch_seconds, epoch_bytes = [], []
    for epoch in batch_order(spec.num_rows, spec.batch_size, spec.epochs, spec.seed):
        epoch_started = time.perf_counter()
        for rows in epoch:
            weights = sgd_step(spec, weights, x[rows], y[rows])
        epoch_seconds.append(time.perf_counter() - epoch_started)
        epoch_bytes.append(party.total().bytes_sent)
    online = time.perf_counter() - online_started
    trace, party.trace = party.trace, None
    inference_started, opened, predictions = time.perf_counter(), None, None
    if spec.release == "model":
        opened = [w.reveal() for w in weights]
    else:
        predictions = _predict(protocol, spec, weights, data)
    inference = time.perf_counter() - inference_started
    bytes_per_epoch = np.diff([0, *epoch_bytes]).tolist()
    return PartyOutput(
        opened,
        predictions,
        offline,
        online,
        inference,
        epoch_seconds,
        bytes_per_epoch,
        paillier,
        trace,
    )


def _predict(protocol, spec: TrainingSpec, weights, data: PartyData) -> np.ndarray | None:
    """Secure inference: this party's predicted labels for its own test rows (rows split), or
    for all test rows at party 0 (features split); ``None`` elsewhere."""
    x = _share_features(protocol, spec, data.x_test, spec.test_row_counts)
    labels = 1 - sign_bit(forward(spec, weights, x))
    if spec.split == "features":
        return _flat(labels.reveal(to=0))
    mine = None
    start = 0
    for owner, count in enumerate(spec.test_row_counts):
        opened = labels[start : start + count].reveal(to=owner)
        mine = opened if owner == protocol.party.index else mine
        start += count
    return _flat(mine)


def _flat(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else values.reshape(-1)
