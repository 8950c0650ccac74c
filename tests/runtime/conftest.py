import numpy as np
import pytest

from veil.runtime import ClientPool


@pytest.fixture(scope="module")
def uneven_pool() -> ClientPool:
    """Twelve clients of 3 to 39 rows of 1×6×6 'images', 3 classes."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 40, size=12)
    xs = [rng.normal(size=(n, 1, 6, 6)).astype(np.float32) for n in sizes]
    ys = [rng.integers(0, 3, size=n) for n in sizes]
    return ClientPool.from_arrays(xs, ys)
