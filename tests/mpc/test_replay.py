"""Replaying a run's recorded message pattern with no computation."""

import numpy as np

from veil.mpc import run_parties
from veil.mpc.replay import replay_seconds, replay_trace


def test_a_party_records_the_shapes_of_each_round_only_while_asked():
    def program(party):
        array = np.arange(6, dtype=np.uint64).reshape(2, 3)
        party.exchange({1 - party.index: array}, {1 - party.index: ((2, 3), np.uint64)})
        party.trace = []
        party.exchange({1 - party.index: array[0]}, {1 - party.index: ((3,), np.uint64)})
        trace, party.trace = party.trace, None
        return trace

    for index, trace in enumerate(r.value for r in run_parties(program, [(), ()])):
        peer = 1 - index
        assert trace == [({peer: ((3,), "<u8")}, {peer: ((3,), "<u8")})]


def test_a_replay_sends_the_recorded_shapes_in_as_many_rounds():
    trace = [({1: ((2, 3), "<u8")}, {1: ((4,), "|u1")}), ({}, {1: ((1,), "<u8")})]
    mirrored = [({0: ((4,), "|u1")}, {0: ((2, 3), "<u8")}), ({0: ((1,), "<u8")}, {})]
    replay = run_parties(replay_trace, [(trace,), (mirrored,)])
    assert [r.costs["other"].rounds for r in replay] == [2, 2]
    assert replay[0].costs["other"].bytes_received == replay[1].costs["other"].bytes_sent
    assert replay_seconds([trace, mirrored], processes=False) > 0
