"""Turn a `Dataset` into a federation: clients with their own train and test rows, scaled.

The order of operations follows LEAF (Caldas et al. 2018): rows are first partitioned among the
clients, then each client splits its own rows into train and test, so the global test set is the
union of the clients' test sets. Scaling is fitted on training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.data.dataset import Dataset
from veil.data.partition import partition
from veil.errors import check

__all__ = ["STD_FLOOR", "ClientData", "FederatedData", "federate"]

# Standard deviations below this are replaced by it, so constant features scale to 0, not NaN.
STD_FLOOR = 1e-8


@dataclass(frozen=True)
class ClientData:
    """One client's rows: scaled float32 features and int64 labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class FederatedData:
    """The clients of a federation and the global test set (the clients' test rows, in order)."""

    dataset: str
    clients: tuple[ClientData, ...]
    num_classes: int
    feature_shape: tuple[int, ...]
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)

    @property
    def train_sizes(self) -> np.ndarray:
        """int64 ``[num_clients]``: training rows per client (the FedAvg weights)."""
        return np.array([c.y_train.size for c in self.clients], dtype=np.int64)

    @property
    def num_train_rows(self) -> int:
        """Training rows over all clients."""
        return int(self.train_sizes.sum())


def federate(
    dataset: Dataset,
    *,
    method: str,
    num_clients: int,
    test_fraction: float = 0.2,
    seed: int = 0,
    alpha: float | None = None,
    shards_per_client: int | None = None,
    beta: float | None = None,
) -> FederatedData:
    """Partition ``dataset`` among clients, split each client's rows, then scale the features.

    1. Rows go to clients by `veil.data.partition` (``method``, ``alpha``, ``shards_per_client``,
       ``beta`` as documented there). Clients are named after the sites for ``method="site"``,
       else ``"client_0"``, ``"client_1"``, ...
    2. A client with ``m`` rows puts ``min(ceil(test_fraction * m), m - 1)`` of them in its test
       set, so it keeps at least one training row; a client with a single row has an empty test
       set. The test rows are drawn by stratified systematic sampling (rows ordered by label,
       random order within a label, every ``m / t``-th row from a random start), so each class
       of ``m_c`` rows gives ``floor`` or ``ceil`` of ``m_c * t / m`` test rows, and every row is
       a test row with the same probability.
    3. The scaling is fitted on the union of the clients' training rows and applied to train and
       test rows alike. ``"standard"``: ``(x - mean) / max(std, 1e-8)`` per feature, with
       ``mean = S1 / n`` and ``std^2 = S2 / n - mean^2`` from the count ``n``, sum ``S1`` and sum
       of squares ``S2`` of the training rows; these are exactly what a federation obtains from
       a secure sum of each client's count, sum and sum of squares. ``"fixed"``:
       ``x / pixel_max``, which needs no statistics at all.

    The result depends only on the arguments: the same ``seed`` gives the same federation.
    """
    check(0 <= test_fraction < 1, f"test_fraction must be in [0, 1) (got {test_fraction})")
    rng = np.random.default_rng(seed)
    parts = partition(
        method,
        labels=dataset.y,
        sites=dataset.sites,
        num_clients=num_clients,
        rng=rng,
        alpha=alpha,
        shards_per_client=shards_per_client,
        beta=beta,
    )
    owner = np.empty(dataset.num_rows, dtype=np.int64)
    owner[np.concatenate(parts)] = np.repeat(np.arange(len(parts)), [p.size for p in parts])
    is_test = _test_rows(owner, dataset.y, test_fraction, rng)

    train = _grouped_by_owner(np.flatnonzero(~is_test), owner)
    test = _grouped_by_owner(np.flatnonzero(is_test), owner)
    x_train = dataset.x[train]
    shift, scale = _fit_scaling(dataset, x_train)
    x_train, x_test = (x_train - shift) / scale, (dataset.x[test] - shift) / scale
    y_train, y_test = dataset.y[train], dataset.y[test]
    train_cuts = np.cumsum(np.bincount(owner[train], minlength=len(parts)))[:-1]
    test_cuts = np.cumsum(np.bincount(owner[test], minlength=len(parts)))[:-1]

    if method == "site" and dataset.site_names is not None:
        names = [dataset.site_names[s] for s in np.unique(dataset.sites)]
    else:
        names = [f"client_{k}" for k in range(len(parts))]
    clients = tuple(
        ClientData(name, *arrays)
        for name, *arrays in zip(
            names,
            np.split(x_train, train_cuts),
            np.split(y_train, train_cuts),
            np.split(x_test, test_cuts),
            np.split(y_test, test_cuts),
            strict=True,
        )
    )
    return FederatedData(
        dataset=dataset.name,
        clients=clients,
        num_classes=dataset.num_classes,
        feature_shape=tuple(dataset.feature_shape),
        x_test=x_test,
        y_test=y_test,
    )


def _test_rows(
    owner: np.ndarray, labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of test rows: stratified systematic sampling within each client."""
    sizes = np.bincount(owner)
    # Round first so that e.g. 0.1 * 30 = 3.0000000000000004 counts as 3, not 4.
    num_test = np.minimum(np.ceil(np.round(test_fraction * sizes, 9)), sizes - 1).astype(np.int64)
    order = np.lexsort((rng.random(owner.size), labels, owner))  # by client, label, at random
    client = owner[order]
    position = np.arange(owner.size) - (np.cumsum(sizes) - sizes)[client]
    size, count, start = sizes[client], num_test[client], rng.random(sizes.size)[client]
    # Row p of a client with m rows and t test rows is taken iff an integer j has
    # p <= (j + start) * m / t < p + 1; the counts telescope to exactly t per client.
    before = np.ceil(position * count / size - start)
    after = np.ceil((position + 1) * count / size - start)
    is_test = np.empty(owner.size, dtype=bool)
    is_test[order] = after > before
    return is_test


def _grouped_by_owner(rows: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """``rows`` ordered by client, keeping increasing row order within a client."""
    return rows[np.argsort(owner[rows], kind="stable")]


def _fit_scaling(dataset: Dataset, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` so that the scaled features are ``(x - shift) / scale``."""
    if dataset.scaling == "fixed":
        return np.float32(0.0), np.float32(dataset.pixel_max)
    n = x_train.shape[0]
    mean = x_train.sum(axis=0, dtype=np.float64) / n
    mean_of_squares = np.square(x_train).sum(axis=0, dtype=np.float64) / n
    std = np.sqrt(np.maximum(mean_of_squares - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, STD_FLOOR).astype(np.float32)
