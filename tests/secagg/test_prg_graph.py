import numpy as np
import pytest

from veil.errors import ConfigError
from veil.secagg import prg
from veil.secagg.graph import default_neighbours, default_threshold, neighbour_graph


def test_chacha20_known_answer_rfc8439():
    # RFC 8439 §2.3.2-style vector: all-zero key and nonce, block 0 starts 76 b8 e0 ad a0 f1 3d 90.
    words = prg.expand(bytes(32), 2, 32)
    assert words.tobytes().hex() == "76b8e0ada0f13d90"


def test_expand_is_deterministic_seed_dependent_and_masks_high_bits():
    a, b = prg.expand(b"a" * 32, 1000, 32), prg.expand(b"b" * 32, 1000, 32)
    assert np.array_equal(a, prg.expand(b"a" * 32, 1000, 32)) and not np.array_equal(a, b)
    small = prg.expand(b"a" * 32, 1000, 12)
    assert small.max() < 2**12 and np.array_equal(small, a & (2**12 - 1))
    assert prg.expand(b"a" * 32, 10, 40).dtype == np.uint64


def test_expand_looks_uniform():
    words = prg.expand(b"u" * 32, 200_000, 8)
    counts = np.bincount(words, minlength=256)
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 350  # 255 degrees of freedom: p ≈ 1e-4


def test_expand_bad_input():
    with pytest.raises(ConfigError, match="32 bytes"):
        prg.expand(b"short", 4, 32)
    with pytest.raises(ConfigError, match=r"ring bits must be in \[1, 64\]"):
        prg.ring_dtype(65)


@pytest.mark.parametrize(("n", "k"), [(5, 4), (40, 16), (101, 20)])
def test_graph_is_k_regular_and_symmetric(n, k):
    graph = neighbour_graph(np.arange(n), k, seed=3)
    assert all(len(v) == k and c not in v for c, v in graph.items())
    assert all(c in graph[v] for c, vs in graph.items() for v in vs)


def test_graph_depends_on_the_seed_and_defaults_are_logarithmic():
    assert neighbour_graph(np.arange(100), 10, 1) != neighbour_graph(np.arange(100), 10, 2)
    assert default_neighbours(5) == 4 and default_neighbours(1000) == 30
    assert default_threshold(4) == 3 and default_threshold(30) == 16


@pytest.mark.parametrize(
    ("ids", "k", "message"),
    [
        ([1, 1, 2], 1, "distinct"),
        ([0, 1, 2, 3], 4, "neighbours must be in"),
        (range(10), 3, "even"),
    ],
)
def test_graph_bad_input(ids, k, message):
    with pytest.raises(ConfigError, match=message):
        neighbour_graph(np.array(list(ids)), k, 0)


def test_a_clients_own_row_matches_the_graph():
    from veil.secagg.graph import neighbours_of

    ids = np.arange(3, 103)
    graph = neighbour_graph(ids, 12, seed=5)
    assert all(neighbours_of(c, ids, 12, 5) == graph[c] for c in (3, 50, 102))
    with pytest.raises(ConfigError, match="not in this round"):
        neighbours_of(7000, ids, 12, 5)
