import numpy as np
import pytest
import torch

from veil.errors import ConfigError
from veil.fl.local import LocalTraining
from veil.runtime import ClientPool


def test_sizes_and_offsets(uneven_pool):
    assert uneven_pool.num_clients == 12
    assert uneven_pool.offsets[-1] == len(uneven_pool.x) == uneven_pool.sizes.sum()


def test_chunk_carries_the_table_and_schedules(uneven_pool):
    plan = LocalTraining(lr=0.1, batch_size=4, steps=2)
    chunk = uneven_pool.chunk([3, 5], round_index=2, seed=1, plan=plan)
    index, mask = uneven_pool.schedules([3, 5], round_index=2, seed=1, plan=plan)
    assert chunk.x is uneven_pool.x and chunk.y is uneven_pool.y
    assert torch.equal(chunk.index, index) and torch.equal(chunk.mask, mask)


def test_schedules_point_into_each_clients_own_rows(uneven_pool):
    plan = LocalTraining(lr=0.1, batch_size=8, epochs=1)
    ids = np.array([2, 7, 9])
    index, mask = uneven_pool.schedules(ids, round_index=1, seed=0, plan=plan)
    assert index.shape[0] == 3 and index.shape[2] == 8
    for i, c in enumerate(ids):
        start, stop = uneven_pool.offsets[c], uneven_pool.offsets[c + 1]
        real = index[i][mask[i].bool()]
        assert sorted(real.tolist()) == list(range(start, stop))  # one epoch: every row once
    assert torch.equal(index[mask == 0], torch.zeros_like(index[mask == 0]))


def test_pool_refuses_empty_clients():
    with pytest.raises(ConfigError, match="at least one training row"):
        ClientPool.from_arrays([np.zeros((0, 2))], [np.zeros(0)])
    with pytest.raises(ConfigError, match="same number"):
        ClientPool.from_arrays([np.zeros((1, 2))], [])
