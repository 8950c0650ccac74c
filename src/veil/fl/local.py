"""Local training on a client: the plan (K steps or E epochs of mini-batch SGD, FedProx μ) and the
mini-batch schedule every engine follows.

Each client minimises its mean cross-entropy plus FedProx's proximal term (Li et al. 2020),
``F_c(w) + μ/2 · ‖w - w_global‖²``, by plain SGD.

The batch order of client ``c`` in round ``r`` is a pure function of ``(seed, r, c)``: each epoch's
shuffle sorts the rows by a SplitMix64 hash (Steele, Lea & Flood 2014) of
``(seed, r, c, epoch, row)``. It is the same whether drawn for one client (a remote device) or
for thousands at once (the vectorized simulator, in a few tensor operations on its device), so
every engine visits the same rows in the same order and reaches the same model. This is
data-order randomness only, never privacy noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from veil.errors import ConfigError, check

PAD = -1  # marks an empty slot in a batch schedule
_MASK64 = 2**64 - 1


@dataclass(frozen=True)
class SampleLevelDP:
    """DP-SGD inside each client: noise multiplier σ and per-sample clip norm C."""

    noise_multiplier: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        check(
            self.noise_multiplier > 0,
            f"privacy.noise_multiplier must be > 0 (got {self.noise_multiplier})",
        )
        check(self.max_grad_norm > 0, f"privacy.clip_norm must be > 0 (got {self.max_grad_norm})")


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains: exactly one of ``steps`` (K) or ``epochs`` (E) must be set; with
    ``dp``, each step is a DP-SGD step (Poisson batches of expected size ``batch_size``)."""

    lr: float
    batch_size: int
    steps: int | None = None
    epochs: int | None = None
    prox_mu: float = 0.0
    dp: SampleLevelDP | None = None

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

    def num_steps(self, num_rows: Tensor | int) -> Tensor | int:
        """Number of SGD steps a client with ``num_rows`` rows takes (element-wise on tensors)."""
        if self.steps is not None:
            return num_rows * 0 + self.steps
        return self.epochs * -(-num_rows // self.batch_size)


def int64_bits(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - 2**64 if value >= 2**63 else value


_GOLDEN = int64_bits(0x9E3779B97F4A7C15)
_MIX1 = int64_bits(0xBF58476D1CE4E5B9)
_MIX2 = int64_bits(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """The SplitMix64 output function on int64 tensors holding 64-bit patterns.

    ``x + γ`` then two xor-shift-multiply rounds; products wrap modulo 2⁶⁴ (checked against the
    reference outputs in the tests).
    """
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def epoch_permutations(
    sizes: Tensor, client_ids: Tensor, round_index: int, seed: int, epochs: int
) -> Tensor:
    """``[C, epochs, max(sizes)]`` row orders: client c's epoch e is ``perm[c, e, :sizes[c]]``."""
    device = sizes.device
    base = splitmix64(torch.tensor(int64_bits(seed), device=device))
    base = splitmix64(base + int64_bits(round_index))
    client_keys = splitmix64(base + client_ids)
    epoch_keys = splitmix64(client_keys[:, None] + torch.arange(epochs, device=device))
    width = int(sizes.max())
    keys = splitmix64(epoch_keys[:, :, None] + torch.arange(width, device=device))
    keys = _shift_right(keys, 1)  # non-negative: signed order = unsigned order of the top 63 bits
    keys.masked_fill_(torch.arange(width, device=device) >= sizes[:, None, None], 2**63 - 1)
    return torch.argsort(keys, dim=2, stable=True)


def batch_schedules(
    sizes: Sequence[int] | Tensor,
    client_ids: Sequence[int] | Tensor,
    round_index: int,
    seed: int,
    plan: LocalTraining,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Local row indices of every step of every client: ``int64 [C, max steps, slots]``, PAD-filled,
    with ``slots = min(batch size, largest client)``.

    Epoch mode: each epoch's shuffle cut into ``ceil(n / B)`` batches, the last one partial.
    Step mode: an endless stream of shuffled epochs cut into batches of ``min(B, n)`` rows.
    Clients with fewer steps than the longest get all-PAD steps at the end. Computed on ``device``.
    """
    sizes = torch.as_tensor(sizes, dtype=torch.int64, device=device)
    client_ids = torch.as_tensor(client_ids, dtype=torch.int64, device=device)
    check(len(sizes) == len(client_ids) and len(sizes) >= 1, "need one size per client id (>= 1)")
    smallest = int(sizes.min())
    check(smallest >= 1, f"a client needs at least one training row (got {smallest})")
    size = plan.batch_size
    steps = plan.num_steps(sizes)  # [C]
    slots = min(size, int(sizes.max()))  # no batch holds more rows than the largest client has
    s = torch.arange(int(steps.max()), device=device)[None, :, None]
    j = torch.arange(slots, device=device)[None, None, :]
    n = sizes[:, None, None]
    if plan.epochs is not None:
        per_epoch = -(-n // size)
        stream = (s // per_epoch) * n + (s % per_epoch) * size + j  # epoch · n + position
        valid = ((s % per_epoch) * size + j < n) & (s < steps[:, None, None])
        epochs_needed = plan.epochs
    else:
        width = n.clamp_max(size)
        stream = s * width + j
        valid = (j < width) & (s < steps[:, None, None])
        epochs_needed = int((-(-(plan.steps * sizes.clamp_max(size)) // sizes)).max())
    perms = epoch_permutations(sizes, client_ids, round_index, seed, epochs_needed)
    epoch = (stream // n).clamp_max(epochs_needed - 1)
    flat = torch.where(valid, epoch * perms.shape[2] + stream % n, 0).reshape(len(sizes), -1)
    rows = torch.gather(perms.reshape(len(sizes), -1), 1, flat).view_as(stream)
    return torch.where(valid, rows, PAD)


def batch_schedule(
    num_rows: int, plan: LocalTraining, seed: int, round_index: int, client_id: int
) -> Tensor:
    """One client's schedule ``[steps, batch]`` (the same rows as in `batch_schedules`)."""
    schedule = batch_schedules([num_rows], [client_id], round_index, seed, plan)[0]
    return schedule[: int(plan.num_steps(num_rows))]
