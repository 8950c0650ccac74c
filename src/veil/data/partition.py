"""Split a data set's rows among federated clients: IID, label skew, quantity skew or by site.

Every partitioner is a pure function of its arguments and a `numpy.random.Generator`. It returns
one sorted int64 array of row indices per client; the arrays are disjoint and cover every row.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError, check

__all__ = [
    "PARTITION_METHODS",
    "dirichlet_partition",
    "iid_partition",
    "partition",
    "quantity_skew_partition",
    "shard_partition",
    "site_partition",
]

PARTITION_METHODS: tuple[str, ...] = ("iid", "dirichlet", "shards", "quantity", "site")

# Dirichlet draws are repeated until every client has `min_size` rows, at most this many times.
MAX_DIRICHLET_DRAWS = 100


def iid_partition(num_rows: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle the rows and deal them out: client sizes differ by at most one row."""
    _check_clients(num_clients, num_rows)
    _check_rng(rng)
    owner = np.empty(num_rows, dtype=np.int64)
    owner[rng.permutation(num_rows)] = np.arange(num_rows) % num_clients
    return _rows_by_owner(owner, num_clients)


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Label skew: each class's rows are split among the clients in proportions ``~ Dir(alpha)``.

    Small ``alpha`` (e.g. 0.1) gives each client a few dominant classes; large ``alpha`` tends
    to IID. This is the per-class form used by NIID-Bench (Li et al. 2022) of the Dirichlet
    label skew of Hsu et al. 2019. The whole draw is repeated until every client has at least
    ``min_size`` rows, up to `MAX_DIRICHLET_DRAWS` times, then a `ConfigError` is raised.
    """
    labels = _check_labels(labels)
    _check_clients(num_clients, labels.size)
    _check_positive("alpha", alpha)
    _check_min_size(min_size, num_clients, labels.size)
    _check_rng(rng)
    _, class_of_row = np.unique(labels, return_inverse=True)
    rows_of_class = _rows_by_owner(class_of_row, int(class_of_row.max()) + 1)
    for _ in range(MAX_DIRICHLET_DRAWS):
        owner = np.empty(labels.size, dtype=np.int64)
        for class_rows in rows_of_class:
            rows = rng.permutation(class_rows)
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            owner[rows] = np.repeat(np.arange(num_clients), _counts(rows.size, proportions))
        if np.bincount(owner, minlength=num_clients).min() >= min_size:
            return _rows_by_owner(owner, num_clients)
    raise _no_draw_error("alpha", alpha, min_size)


def shard_partition(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Pathological label skew (McMahan et al. 2017): each client gets a few label-sorted shards.

    The rows are sorted by label (random order within a label) and cut into
    ``num_clients * shards_per_client`` contiguous shards whose sizes differ by at most one row;
    each client receives ``shards_per_client`` shards at random. When every class has at least
    a shard's worth of rows, a shard holds at most two labels, so a client holds at most
    ``2 * shards_per_client`` labels (at most ``shards_per_client`` when shard boundaries fall on
    class boundaries, as with MNIST's 200 shards of 300).
    """
    labels = _check_labels(labels)
    _check_clients(num_clients, labels.size)
    check(shards_per_client >= 1, f"shards_per_client must be >= 1 (got {shards_per_client})")
    num_shards = num_clients * shards_per_client
    check(
        labels.size >= num_shards,
        f"shards need num_clients * shards_per_client <= number of rows, "
        f"i.e. {num_clients} * {shards_per_client} <= {labels.size} (got {num_shards})",
    )
    _check_rng(rng)
    shuffled = rng.permutation(labels.size)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard_sizes = np.full(num_shards, labels.size // num_shards)
    shard_sizes[: labels.size % num_shards] += 1
    shard_owner = np.empty(num_shards, dtype=np.int64)
    shard_owner[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    owner = np.empty(labels.size, dtype=np.int64)
    owner[by_label] = np.repeat(shard_owner, shard_sizes)
    return _rows_by_owner(owner, num_clients)


def quantity_skew_partition(
    num_rows: int,
    num_clients: int,
    beta: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Quantity skew (Li et al. 2022, NIID-Bench): client sizes ``∝ Dir(beta)``, labels IID.

    Small ``beta`` gives a few large clients and many small ones. The proportions are redrawn
    until every client has at least ``min_size`` rows, up to `MAX_DIRICHLET_DRAWS` times.
    """
    _check_clients(num_clients, num_rows)
    _check_positive("beta", beta)
    _check_min_size(min_size, num_clients, num_rows)
    _check_rng(rng)
    for _ in range(MAX_DIRICHLET_DRAWS):
        sizes = _counts(num_rows, rng.dirichlet(np.full(num_clients, beta)))
        if sizes.min() >= min_size:
            owner = np.empty(num_rows, dtype=np.int64)
            owner[rng.permutation(num_rows)] = np.repeat(np.arange(num_clients), sizes)
            return _rows_by_owner(owner, num_clients)
    raise _no_draw_error("beta", beta, min_size)


def site_partition(sites: np.ndarray) -> list[np.ndarray]:
    """One client per distinct site id (e.g. per bank or hospital), in increasing site order."""
    sites = np.asarray(sites)
    check(
        sites.ndim == 1 and sites.size >= 1 and np.issubdtype(sites.dtype, np.integer),
        f"sites must be a non-empty 1-D integer array (got {sites.dtype} {sites.shape})",
    )
    _, owner = np.unique(sites, return_inverse=True)
    return _rows_by_owner(owner.astype(np.int64), int(owner.max()) + 1)


def partition(
    method: str,
    *,
    labels: np.ndarray,
    sites: np.ndarray | None = None,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float | None = None,
    shards_per_client: int | None = None,
    beta: float | None = None,
) -> list[np.ndarray]:
    """Partition rows by one of `PARTITION_METHODS`; each method reads only its own parameter.

    ``"dirichlet"`` needs ``alpha``, ``"shards"`` needs ``shards_per_client``, ``"quantity"``
    needs ``beta``, and ``"site"`` needs ``sites`` with ``num_clients`` equal to the number of
    distinct sites.
    """
    check(
        method in PARTITION_METHODS,
        f"partition method must be one of {PARTITION_METHODS} (got {method!r})",
    )
    labels = _check_labels(labels)
    if method == "iid":
        return iid_partition(labels.size, num_clients, rng)
    if method == "dirichlet":
        check(alpha is not None, "partition method 'dirichlet' needs alpha > 0 (got None)")
        return dirichlet_partition(labels, num_clients, alpha, rng)
    if method == "shards":
        check(
            shards_per_client is not None,
            "partition method 'shards' needs shards_per_client >= 1 (got None)",
        )
        return shard_partition(labels, num_clients, shards_per_client, rng)
    if method == "quantity":
        check(beta is not None, "partition method 'quantity' needs beta > 0 (got None)")
        return quantity_skew_partition(labels.size, num_clients, beta, rng)
    check(
        sites is not None,
        "partition method 'site' needs a data set with sites (a site id per row); this one has "
        "none, so use one of 'iid', 'dirichlet', 'shards', 'quantity'",
    )
    parts = site_partition(sites)
    check(
        len(parts) == num_clients,
        f"num_clients must equal the number of sites ({len(parts)}) for partition method "
        f"'site' (got {num_clients})",
    )
    return parts


def _rows_by_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn ``owner[row] = client`` into one sorted int64 array of rows per client."""
    rows = np.argsort(owner, kind="stable").astype(np.int64)
    return np.split(rows, np.cumsum(np.bincount(owner, minlength=num_clients))[:-1])


def _counts(total: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``total`` items by ``proportions``, cutting at ``floor(total * cumsum)``."""
    cuts = np.floor(total * np.cumsum(proportions[:-1])).astype(np.int64)
    return np.diff(np.concatenate([[0], np.minimum(cuts, total), [total]]))


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    check(
        labels.ndim == 1 and labels.size >= 1 and np.issubdtype(labels.dtype, np.integer),
        f"labels must be a non-empty 1-D integer array (got {labels.dtype} {labels.shape})",
    )
    return labels


def _check_clients(num_clients: int, num_rows: int) -> None:
    check(num_clients >= 1, f"num_clients must be >= 1 (got {num_clients})")
    check(
        num_clients <= num_rows,
        f"num_clients must be <= the number of rows ({num_rows}) (got {num_clients})",
    )


def _check_positive(name: str, value: float) -> None:
    check(0 < value < np.inf, f"{name} must be > 0 and finite (got {value})")


def _check_min_size(min_size: int, num_clients: int, num_rows: int) -> None:
    check(
        0 <= min_size <= num_rows // num_clients,
        f"min_size must be in [0, num_rows // num_clients] = [0, {num_rows // num_clients}] "
        f"(got {min_size})",
    )


def _check_rng(rng: np.random.Generator) -> None:
    check(
        isinstance(rng, np.random.Generator),
        f"rng must be a numpy.random.Generator, e.g. np.random.default_rng(0) "
        f"(got {type(rng).__name__})",
    )


def _no_draw_error(name: str, value: float, min_size: int) -> ConfigError:
    return ConfigError(
        f"no Dirichlet draw with {name}={value} gave every client >= {min_size} rows in "
        f"{MAX_DIRICHLET_DRAWS} tries; increase {name}, use fewer clients or a smaller min_size"
    )
