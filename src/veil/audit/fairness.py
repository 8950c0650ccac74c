"""Group fairness metrics of a classifier's predictions (Hardt, Price, Srebro 2016; Bagdasaryan,
Poursaeed, Shmatikov 2019, "Differential Privacy Has Disparate Impact on Model Accuracy").

For labels y, predictions ŷ and a group g of every row (a site, a class, a demographic):

- group accuracy: acc_g = P(ŷ = y | g), for each group with at least one row;
- worst-group gap: max_g acc_g − min_g acc_g;
- equalized-odds difference, one-vs-rest for every class k (so it covers multi-class labels):
  TPR_{g,k} = P(ŷ = k | y = k, g) and FPR_{g,k} = P(ŷ = k | y ≠ k, g), and

      EOD = max_k max( max_g TPR_{g,k} − min_g TPR_{g,k},  max_g FPR_{g,k} − min_g FPR_{g,k} ),

  where a rate enters only for the groups in which it is defined (a group without rows of class
  k has no TPR_{g,k}). For binary labels this equals fairlearn's ``equalized_odds_difference``
  (the class-0 rates are one minus the class-1 rates, so they add nothing).

These are measurements of a model, not DP releases: computed on a federation's clients' rows they
reveal those rows' statistics.
"""

from __future__ import annotations

import numpy as np

from veil.errors import check


def group_accuracy(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict:
    """``{group: accuracy}`` for every group present, in sorted group order."""
    y_true, y_pred, groups = _check(y_true, y_pred, groups)
    return {
        _plain(g): float(np.mean(y_pred[groups == g] == y_true[groups == g]))
        for g in np.unique(groups)
    }


def worst_group_gap(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    """Best group's accuracy minus the worst group's (0 with a single group)."""
    accuracies = list(group_accuracy(y_true, y_pred, groups).values())
    return max(accuracies) - min(accuracies)


def equalized_odds_difference(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    """The largest gap between groups in any class's one-vs-rest TPR or FPR (module docstring);
    0 when no rate is defined in two groups."""
    y_true, y_pred, groups = _check(y_true, y_pred, groups)
    worst = 0.0
    for k in np.union1d(y_true, y_pred):
        for condition in (y_true == k, y_true != k):  # TPR, then FPR
            rates = [
                np.mean(y_pred[(groups == g) & condition] == k)
                for g in np.unique(groups)
                if np.any((groups == g) & condition)
            ]
            if len(rates) >= 2:
                worst = max(worst, float(max(rates) - min(rates)))
    return worst


def _check(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(a) for a in (y_true, y_pred, groups)]
    for name, array in zip(("y_true", "y_pred", "groups"), arrays, strict=True):
        check(array.ndim == 1, f"{name} must be a 1-d array, one entry per row (got {array.shape})")
    lengths = {len(a) for a in arrays}
    check(
        len(lengths) == 1,
        f"y_true, y_pred and groups must have one entry per row (got lengths "
        f"{[len(a) for a in arrays]})",
    )
    check(len(arrays[0]) > 0, "need at least one row (got empty arrays)")
    return arrays[0], arrays[1], arrays[2]


def _plain(value: np.generic):
    """A numpy scalar as a plain Python value (JSON-friendly dict keys)."""
    return value.item() if isinstance(value, np.generic) else value
