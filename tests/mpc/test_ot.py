import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.mpc import run_parties
from veil.mpc.ot import ELEMENT_BYTES, receive_ot, send_ot


def test_naor_pinkas_delivers_the_chosen_message_only():
    messages = np.random.default_rng(0).integers(0, 256, (16, 2, 16), dtype=np.uint8)
    choices = np.random.default_rng(1).integers(0, 2, 16)

    def program(party):
        if party.index == 0:
            return send_ot(party, 1, messages)
        return receive_ot(party, 0, choices)

    received = run_parties(program, [(), ()])[1].value
    assert np.array_equal(received, messages[np.arange(16), choices])
    assert not np.any(np.all(received == messages[np.arange(16), 1 - choices], axis=1))


def test_invalid_group_elements_and_arguments_are_refused():
    def sender_sends_zeros(party):
        if party.index == 0:
            party.send(1, np.zeros((3, ELEMENT_BYTES), np.uint8))
            return None
        return receive_ot(party, 0, np.array([0, 1]))

    with pytest.raises(ProtocolError, match="invalid group element"):
        run_parties(sender_sends_zeros, [(), ()])
    with pytest.raises(ConfigError, match="choices must be a vector of 0/1 bits"):
        run_parties(lambda party: receive_ot(party, 0, np.array([2])), [(), ()], deadline=1)
    with pytest.raises(ConfigError, match=r"messages must be \[count, 2, 16\]"):
        run_parties(lambda party: send_ot(party, 1, np.zeros((2, 16))), [(), ()], deadline=1)
