"""The simulator's client data: every client's training rows in one flat table on the device.

Client ``c`` owns rows ``offsets[c]:offsets[c+1]``. A round's mini-batches become one index tensor
``[clients, steps, batch]`` into the table plus a 0/1 mask, so clients of unequal size and unequal
step counts train in lock-step: padded slots point at row 0 and are masked out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from veil.errors import check
from veil.fl.local import PAD, LocalTraining, batch_schedules


@dataclass(frozen=True)
class TrainingChunk:
    """What an engine trains: clients ``c`` take SGD steps ``s`` on rows ``x[index[c, s]]``
    (``y`` their labels), where ``mask[c, s]`` is 1 for real batch slots and 0 for padding."""

    x: Tensor
    y: Tensor
    index: Tensor
    mask: Tensor


@dataclass(frozen=True)
class ClientPool:
    """Training rows of all clients, concatenated: ``x[offsets[c]:offsets[c+1]]`` is client c's."""

    x: Tensor
    y: Tensor
    offsets: np.ndarray

    @classmethod
    def from_arrays(
        cls, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], device: torch.device | str = "cpu"
    ) -> ClientPool:
        """Concatenate per-client arrays (float features, integer labels) onto ``device``."""
        check(len(xs) == len(ys) and len(xs) >= 1, "need the same number (>= 1) of x and y arrays")
        sizes = [len(y) for y in ys]
        check(min(sizes) >= 1, f"every client needs at least one training row (sizes {sizes})")
        x = torch.as_tensor(np.concatenate(xs), dtype=torch.float32, device=device)
        y = torch.as_tensor(np.concatenate(ys), dtype=torch.int64, device=device)
        return cls(x, y, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    @property
    def num_clients(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def chunk(
        self, client_ids: Sequence[int], round_index: int, seed: int, plan: LocalTraining
    ) -> TrainingChunk:
        """The clients' training inputs for a round: the table and their batch schedules."""
        index, mask = self.schedules(client_ids, round_index, seed, plan)
        return TrainingChunk(self.x, self.y, index, mask)

    def schedules(
        self, client_ids: Sequence[int], round_index: int, seed: int, plan: LocalTraining
    ) -> tuple[Tensor, Tensor]:
        """Global row indices ``[C, S, B]`` (padding → row 0) and the float mask of real slots."""
        device = self.x.device
        client_ids = np.asarray(client_ids, dtype=np.int64)
        sizes, offsets = self.sizes[client_ids], self.offsets[client_ids]
        local = batch_schedules(sizes, client_ids, round_index, seed, plan, device)
        mask = local != PAD
        index = torch.where(mask, local + torch.as_tensor(offsets, device=device)[:, None, None], 0)
        return index, mask.to(torch.float32)
