"""Local training on a client: the plan (K steps or E epochs of mini-batch SGD, FedProx μ) and the
mini-batch schedule every engine follows.

Each client minimises its mean cross-entropy plus FedProx's proximal term (Li et al. 2020),
``F_c(w) + μ/2 · ‖w - w_global‖²``, by plain SGD.

The batch order of client ``c`` in round ``r`` is a pure function of ``(seed, r, c)``: each epoch's
shuffle sorts the rows by a SplitMix64 hash (Steele, Lea & Flood 2014) of
``(seed, r, c, epoch, row)``. It is the same whether drawn for one client (a remote device) or
for thousands at once (the vectorized simulator, in one numpy call), so every engine visits the
same rows in the same order and reaches the same model. This is data-order randomness only,
never privacy noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veil.errors import ConfigError, check

PAD = -1  # marks an empty slot in a batch schedule
_MASK64 = 2**64 - 1


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains: exactly one of ``steps`` (K) or ``epochs`` (E) must be set."""

    lr: float
    batch_size: int
    steps: int | None = None
    epochs: int | None = None
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        check(self.lr > 0, f"client.lr must be > 0 (got {self.lr})")
        check(self.batch_size >= 1, f"client.batch_size must be >= 1 (got {self.batch_size})")
        check(self.prox_mu >= 0, f"client.prox_mu must be >= 0 (got {self.prox_mu})")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("client: set exactly one of local_steps or local_epochs")
        check(
            self.steps is None or self.steps >= 1,
            f"client.local_steps must be >= 1 (got {self.steps})",
        )
        check(
            self.epochs is None or self.epochs >= 1,
            f"client.local_epochs must be >= 1 (got {self.epochs})",
        )

    def num_steps(self, num_rows: np.ndarray | int) -> np.ndarray | int:
        """Number of SGD steps a client with ``num_rows`` rows takes (element-wise)."""
        if self.steps is not None:
            return np.zeros_like(num_rows) + self.steps
        return self.epochs * -(-np.asarray(num_rows) // self.batch_size)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on ``uint64`` arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def epoch_permutations(
    sizes: np.ndarray, client_ids: np.ndarray, round_index: int, seed: int, epochs: int
) -> np.ndarray:
    """``[C, epochs, max(sizes)]`` row orders: client c's epoch e is ``perm[c, e, :sizes[c]]``."""
    base = splitmix64(np.uint64(seed & _MASK64))
    base = splitmix64(base + np.uint64(round_index & _MASK64))
    client_keys = splitmix64(base + client_ids.astype(np.uint64))
    epoch_keys = splitmix64(client_keys[:, None] + np.arange(epochs, dtype=np.uint64))
    width = int(sizes.max())
    keys = splitmix64(epoch_keys[:, :, None] + np.arange(width, dtype=np.uint64))
    padding = np.arange(width) >= sizes[:, None, None]
    keys = np.where(padding, np.uint64(_MASK64), keys)  # padding sorts last
    return np.argsort(keys, axis=2, kind="stable")


def batch_schedules(
    sizes: Sequence[int] | np.ndarray,
    client_ids: Sequence[int] | np.ndarray,
    round_index: int,
    seed: int,
    plan: LocalTraining,
) -> np.ndarray:
    """Local row indices of every step of every client: ``int64 [C, max steps, batch]``, PAD-filled.

    Epoch mode: each epoch's shuffle cut into ``ceil(n / B)`` batches, the last one partial.
    Step mode: an endless stream of shuffled epochs cut into batches of ``min(B, n)`` rows.
    Clients with fewer steps than the longest get all-PAD steps at the end.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    client_ids = np.asarray(client_ids, dtype=np.int64)
    check(len(sizes) == len(client_ids) and len(sizes) >= 1, "need one size per client id (>= 1)")
    check(
        int(sizes.min()) >= 1, f"a client needs at least one training row (got {int(sizes.min())})"
    )
    size = plan.batch_size
    steps = plan.num_steps(sizes)  # [C]
    s = np.arange(int(steps.max()))[None, :, None]
    j = np.arange(size)[None, None, :]
    n = sizes[:, None, None]
    if plan.epochs is not None:
        per_epoch = -(-n // size)
        epoch, position = s // per_epoch, (s % per_epoch) * size + j
        valid = (position < n) & (s < steps[:, None, None])
        epochs_needed = plan.epochs
    else:
        width = np.minimum(size, n)
        stream = s * width + j
        epoch, position = stream // n, stream % n
        valid = (j < width) & (s < steps[:, None, None])
        epochs_per_client = -(-(plan.steps * np.minimum(size, sizes)) // sizes)
        epochs_needed = int(epochs_per_client.max())
    perms = epoch_permutations(sizes, client_ids, round_index, seed, epochs_needed)
    c = np.arange(len(sizes))[:, None, None]
    rows = perms[c, np.minimum(epoch, epochs_needed - 1), np.where(valid, position, 0)]
    return np.where(valid, rows, PAD)


def batch_schedule(
    num_rows: int, plan: LocalTraining, seed: int, round_index: int, client_id: int
) -> np.ndarray:
    """One client's schedule ``[steps, batch]`` (the same rows as in `batch_schedules`)."""
    schedule = batch_schedules([num_rows], [client_id], round_index, seed, plan)[0]
    return schedule[: int(plan.num_steps(num_rows))]
