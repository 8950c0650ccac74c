"""Statistical lower bounds on ε from a membership test (Jagielski, Ullman, Oprea 2020; Nasr et al.
2021, 2023).

If a mechanism M is (ε, δ)-DP, then for neighbouring D (with a canary) and D' (without) and any
test "guess *in* when the score is ≥ t", its false-positive rate FPR = P[score(M(D')) ≥ t] and
false-negative rate FNR = P[score(M(D)) < t] satisfy both

    1 − FNR ≤ e^ε · FPR + δ        and        1 − FPR ≤ e^ε · FNR + δ,

so ε ≥ log((1 − δ − FNR) / FPR) and ε ≥ log((1 − δ − FPR) / FNR). An audit observes the scores of
many independent runs with and without the canary and replaces FPR and FNR by one-sided
Clopper–Pearson upper bounds; the result is a lower bound on the true ε that holds with
probability at least ``confidence`` (each rate's bound at 1 − (1 − confidence)/2: union bound).

Threshold selection (must not peek at the data it is evaluated on): the runs of each arm are
split in two halves by a seeded permutation; the threshold and the inequality are chosen on the
first half (the largest bound there) and the bound is computed on the second half only, where
that choice is a fixed, data-independent test. Higher scores must mean "canary in".
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

from veil.errors import ConfigError, check

MIN_RUNS_PER_ARM = 4
"""Each arm needs this many runs: two per half of the split."""


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on a binomial rate p from k successes in n trials.

    The p with P[Binomial(n, p) ≤ k] = 1 − confidence: the ``confidence`` quantile of
    Beta(k + 1, n − k); 1 when k = n. P[p ≤ bound] ≥ confidence whatever p is.
    """
    _check_count(k, n)
    _check_probability("confidence", confidence)
    return float(_upper(np.asarray(k), n, confidence))


def clopper_pearson_lower(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound: the (1 − confidence) quantile of Beta(k, n − k + 1);
    0 when k = 0. P[p ≥ bound] ≥ confidence whatever p is."""
    _check_count(k, n)
    _check_probability("confidence", confidence)
    if k == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, k, n - k + 1))


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on ε and the test that gave it.

    ``epsilon`` holds with probability ≥ ``confidence``; ``threshold`` is the test's cut ("in"
    when score ≥ threshold), ``inequality`` the DP inequality used (``"tpr"``: 1 − FNR ≤
    e^ε FPR + δ, ``"tnr"``: 1 − FPR ≤ e^ε FNR + δ). Rates and counts are those of the evaluation
    half of the runs.
    """

    epsilon: float
    threshold: float
    inequality: str
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float
    num_in: int
    num_out: int
    delta: float
    confidence: float

    def to_json(self) -> dict[str, float | int | str]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def epsilon_lower_bound(
    scores_in: np.ndarray,
    scores_out: np.ndarray,
    delta: float,
    confidence: float = 0.95,
    *,
    split_seed: int = 0,
) -> EpsilonBound:
    """A lower bound on ε, valid with probability ≥ ``confidence``, from the scores of runs with
    (``scores_in``) and without (``scores_out``) the canary; higher scores mean "in".

    Threshold and inequality are chosen on a random half of each arm (``split_seed``: the runs
    are i.i.d., so any split independent of the scores is valid) and evaluated on the other
    half. ``epsilon`` is 0 when no test beats chance there.
    """
    scores_in = _check_scores("scores_in", scores_in)
    scores_out = _check_scores("scores_out", scores_out)
    _check_probability("delta", delta)
    _check_probability("confidence", confidence)
    rate_confidence = 1 - (1 - confidence) / 2  # FPR and FNR bounds hold together (union bound)
    rng = np.random.default_rng(split_seed)
    choose_in, test_in = _halves(scores_in, rng)
    choose_out, test_out = _halves(scores_out, rng)
    candidates = np.unique(np.concatenate([choose_in, choose_out]))
    bounds = _bounds(choose_in, choose_out, candidates, delta, rate_confidence)
    side, best = np.unravel_index(np.argmax(bounds), bounds.shape)
    threshold = float(candidates[best])
    thresholds = np.array([threshold])
    epsilon = float(_bounds(test_in, test_out, thresholds, delta, rate_confidence)[side, 0])
    false_pos, false_neg = _errors(test_in, test_out, thresholds)
    return EpsilonBound(
        epsilon=max(epsilon, 0.0),
        threshold=threshold,
        inequality=("tpr", "tnr")[side],
        fpr=float(false_pos[0]) / len(test_out),
        fnr=float(false_neg[0]) / len(test_in),
        fpr_upper=float(_upper(false_pos, len(test_out), rate_confidence)[0]),
        fnr_upper=float(_upper(false_neg, len(test_in), rate_confidence)[0]),
        num_in=len(test_in),
        num_out=len(test_out),
        delta=float(delta),
        confidence=float(confidence),
    )


def _bounds(
    scores_in: np.ndarray,
    scores_out: np.ndarray,
    thresholds: np.ndarray,
    delta: float,
    rate_confidence: float,
) -> np.ndarray:
    """``[2, len(thresholds)]``: the "tpr" and "tnr" bounds of every threshold (−inf if none)."""
    false_pos, false_neg = _errors(scores_in, scores_out, thresholds)
    fpr = _upper(false_pos, len(scores_out), rate_confidence)
    fnr = _upper(false_neg, len(scores_in), rate_confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr_side = np.log(np.clip(1 - delta - fnr, 0, None)) - np.log(fpr)
        tnr_side = np.log(np.clip(1 - delta - fpr, 0, None)) - np.log(fnr)
    return np.nan_to_num(np.stack([tpr_side, tnr_side]), nan=-np.inf)


def _errors(
    scores_in: np.ndarray, scores_out: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """False positives (#out ≥ t) and false negatives (#in < t) of each threshold t."""
    out_sorted, in_sorted = np.sort(scores_out), np.sort(scores_in)
    false_pos = len(out_sorted) - np.searchsorted(out_sorted, thresholds, side="left")
    false_neg = np.searchsorted(in_sorted, thresholds, side="left")
    return false_pos, false_neg


def _upper(k: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """Vectorized `clopper_pearson_upper` (no checks)."""
    k = np.asarray(k)
    safe = np.minimum(k, n - 1)  # Beta(k + 1, 0) is undefined: k = n is handled below
    return np.where(k >= n, 1.0, beta.ppf(confidence, safe + 1, n - safe))


def _halves(scores: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shuffled = scores[rng.permutation(len(scores))]
    middle = len(scores) // 2
    return shuffled[:middle], shuffled[middle:]


def _check_scores(name: str, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    check(scores.ndim == 1, f"{name} must be a 1-d array of scores (got shape {scores.shape})")
    check(
        len(scores) >= MIN_RUNS_PER_ARM,
        f"{name} needs at least {MIN_RUNS_PER_ARM} runs (got {len(scores)}): the runs are split "
        "in half to choose the threshold; train more runs",
    )
    check(bool(np.isfinite(scores).all()), f"{name} must be finite (got NaN or infinity)")
    return scores


def _check_count(k: int, n: int) -> None:
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer (got {value!r})")
    check(n >= 1, f"n must be >= 1 trials (got {n})")
    check(0 <= k <= n, f"k must be in [0, n={n}] (got {k})")


def _check_probability(name: str, value: float) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1
    check(ok, f"{name} must be in (0, 1) (got {value!r})")
