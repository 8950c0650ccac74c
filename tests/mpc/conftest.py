"""Helpers for the MPC tests: run a program at every party as threads of this process."""

import numpy as np
import pytest

from veil.mpc import AdditiveProtocol, OnDemandDealer, ReplicatedProtocol, run_parties


def protocol_for(party, dealer, frac_bits=16):
    """The two-party (dealer triples) or three-party protocol of ``party``."""
    if party.num_parties == 2:
        return AdditiveProtocol(party, frac_bits, dealer.view(party.index))
    return ReplicatedProtocol(party, frac_bits)


@pytest.fixture(scope="session")
def run_shared():
    """``run_shared(program, parties, *args)``: ``program(protocol, *args)`` at every party
    (threads, a fresh on-demand dealer), returning the values of all parties."""

    def run(program, parties, *args, deadline=20.0):
        dealer = OnDemandDealer()

        def at_party(party):
            return program(protocol_for(party, dealer), *args)

        return [r.value for r in run_parties(at_party, [()] * parties, deadline=deadline)]

    return run


@pytest.fixture
def rng():
    return np.random.default_rng(0)
