import torch

from veil.fl.links import ClientUpdates, Link, chain, identity


def counting_link(tag: str, scale: float) -> Link:
    """Multiplies the value, counts its calls in its state, emits one event named ``tag``."""
    return Link(lambda params: 0, lambda value, state, key: (value * scale, state + 1, [tag]))


def test_chain_threads_value_states_and_events_in_order():
    link = chain(counting_link("a", 2.0), identity(), counting_link("b", 3.0))
    state = link.init({})
    assert state == (0, None, 0)
    value, state, events = link.apply(torch.tensor(1.0), state, torch.Generator())
    assert value.item() == 6.0 and state == (1, None, 1) and events == ["a", "b"]


def test_empty_chain_is_identity():
    value, state, events = chain().apply(5, chain().init({}), None)
    assert (value, state, events) == (5, (), [])


def test_client_updates_count_clients():
    assert ClientUpdates({"w": torch.zeros(3, 2)}, torch.ones(3), torch.arange(3)).num_clients == 3
    assert ClientUpdates({"w": torch.zeros(0, 2)}, torch.ones(0), torch.arange(0)).num_clients == 0


def test_bytes_per_client_counts_one_clients_update_in_the_clear():
    deltas = {"w": torch.zeros(3, 4, 5), "b": torch.zeros(3, 5, dtype=torch.float64)}
    assert ClientUpdates(deltas, torch.ones(3), torch.arange(3)).bytes_per_client() == 80 + 40
    empty = ClientUpdates({"w": torch.zeros(0, 2)}, torch.ones(0), torch.arange(0))
    assert empty.bytes_per_client() is None
