"""SecAgg+'s communication graph: each client talks to k neighbours instead of all n − 1.

Bell, Bonawitz, Gascón, Lepoint, Raykova 2020 (SecAgg+): with a random k-regular graph and
k = O(log n), masks still cancel in the sum and no coalition of a bounded fraction of clients
plus the server can unmask an honest client, while each client's work drops from O(n) to
O(log n). We use the Harary graph — client i linked to the k/2 clients on either side of it
on a cycle — on a random cyclic order drawn from a public seed (semi-honest server: the seed
is part of the round's public parameters).
"""

from __future__ import annotations

import math

import numpy as np

from veil.errors import ConfigError


def default_neighbours(num_clients: int) -> int:
    """k: everyone (n − 1) for small federations, else the even number ≥ 3·log2(n)."""
    if num_clients <= 32:
        return num_clients - 1
    k = math.ceil(3 * math.log2(num_clients))
    return min(num_clients - 1, k + k % 2)


def default_threshold(neighbours: int) -> int:
    """t: a strict majority of a client's k neighbours (at least 2 when k ≥ 2)."""
    return neighbours // 2 + 1


def neighbour_graph(
    client_ids: np.ndarray, neighbours: int, seed: int
) -> dict[int, tuple[int, ...]]:
    """Each client's neighbours (sorted), symmetric; complete when ``neighbours ≥ n − 1``.

    ``neighbours`` must be even unless the graph is complete (a Harary cycle links k/2 on
    each side).
    """
    order = _cycle(client_ids, neighbours, seed)
    return {int(c): _around(order, i, neighbours) for i, c in enumerate(order)}


def neighbours_of(
    client: int, client_ids: np.ndarray, neighbours: int, seed: int
) -> tuple[int, ...]:
    """One client's row of `neighbour_graph`, in O(n) (what a client computes for itself)."""
    order = _cycle(client_ids, neighbours, seed)
    positions = np.flatnonzero(order == client)
    if positions.size != 1:
        raise ConfigError(f"client {client} is not in this round")
    return _around(order, int(positions[0]), neighbours)


def _cycle(client_ids: np.ndarray, neighbours: int, seed: int) -> np.ndarray:
    """The clients in the graph's random cyclic order (validating ``neighbours``)."""
    ids = np.asarray(client_ids, dtype=np.int64)
    n = ids.size
    if np.unique(ids).size != n:
        raise ConfigError("client ids of a SecAgg+ round must be distinct")
    if neighbours < 1 or (n > 1 and neighbours > n - 1):
        raise ConfigError(
            f"neighbours must be in [1, {max(n - 1, 1)}] for {n} clients (got {neighbours})"
        )
    if neighbours < n - 1 and neighbours % 2:
        raise ConfigError(f"neighbours must be even when below n − 1 = {n - 1} (got {neighbours})")
    return np.random.default_rng(seed).permutation(ids)


def _around(order: np.ndarray, position: int, neighbours: int) -> tuple[int, ...]:
    n = order.size
    if neighbours >= n - 1:
        return tuple(sorted(int(c) for c in order if c != order[position]))
    half = neighbours // 2
    steps = [s for s in range(-half, half + 1) if s]
    return tuple(sorted(int(order[(position + s) % n]) for s in steps))
