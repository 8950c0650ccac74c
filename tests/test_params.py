import torch

from veil.params import (
    broadcast,
    global_l2_norm,
    num_parameters,
    stack,
    tree_map,
    unstack,
    weighted_sum,
)


def tree(a: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), a), "b": torch.full((3,), a)}


def test_stack_unstack_round_trip():
    stacked = stack([tree(1.0), tree(2.0)])
    assert stacked["w"].shape == (2, 2, 3)
    back = unstack(stacked)
    assert torch.equal(back[1]["b"], tree(2.0)["b"])


def test_broadcast_makes_independent_copies():
    stacked = broadcast(tree(1.0), 3)
    stacked["w"][0] += 1
    assert stacked["w"][1].eq(1).all() and stacked["w"][0].eq(2).all()


def test_weighted_sum_and_tree_map():
    stacked = stack([tree(1.0), tree(3.0)])
    out = weighted_sum(stacked, torch.tensor([0.25, 0.75]))
    assert torch.allclose(out["w"], torch.full((2, 3), 2.5))
    assert torch.equal(
        tree_map(lambda x, y: x + y, tree(1.0), tree(2.0))["b"], torch.full((3,), 3.0)
    )


def test_global_l2_norm_and_count():
    stacked = stack([tree(1.0), tree(2.0)])
    assert torch.allclose(global_l2_norm(stacked), torch.tensor([9.0, 36.0]).sqrt())
    assert num_parameters(tree(0.0)) == 9
