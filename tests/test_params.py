import torch

from veil.params import broadcast, stack, tree_map, weighted_sum


def tree(a: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), a), "b": torch.full((3,), a)}


def test_stack_puts_clients_on_a_leading_axis():
    stacked = stack([tree(1.0), tree(2.0)])
    assert stacked["w"].shape == (2, 2, 3)
    assert torch.equal(stacked["b"][1], tree(2.0)["b"])


def test_broadcast_makes_independent_copies():
    stacked = broadcast(tree(1.0), 3)
    stacked["w"][0] += 1
    assert stacked["w"][1].eq(1).all() and stacked["w"][0].eq(2).all()


def test_weighted_sum_and_tree_map():
    stacked = stack([tree(1.0), tree(3.0)])
    out = weighted_sum(stacked, torch.tensor([0.25, 0.75]))
    assert torch.allclose(out["w"], torch.full((2, 3), 2.5))
    summed = tree_map(lambda x, y: x + y, tree(1.0), tree(2.0))
    assert torch.equal(summed["b"], torch.full((3,), 3.0))


def test_flatten_stacked_gives_one_row_per_client_in_key_order():
    from veil.params import flatten, flatten_stacked

    stacked = {"w": torch.arange(12.0).reshape(2, 3, 2), "b": torch.tensor([[7.0], [8.0]])}
    rows = flatten_stacked(stacked)
    assert rows.shape == (2, 7)
    for c in range(2):
        assert torch.equal(rows[c], flatten({k: v[c] for k, v in stacked.items()}))
    empty = flatten_stacked({"w": torch.zeros(0, 3, 2)})
    assert empty.shape == (0, 6)
